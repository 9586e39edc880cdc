//! A real Kubernetes API server for operator and chart tests, envtest-style: its own
//! etcd, `kube-apiserver` (and on request `kube-controller-manager`) on 127.0.0.1,
//! no nodes, so nothing is ever scheduled or run.
//!
//! The binaries are built from the Go modules pinned in `e2e/k8s/` by
//! `e2e/k8s/build` (which `.ci/setup test` runs) into
//! `${FERRY_K8S_BIN:-$HOME/.cache/ferry/k8s-<version>}`. A missing binary or a server
//! that does not start fails the test with the command to run; it never skips.
//!
//! Two identities authenticate with static bearer tokens: the admin (group
//! `system:masters`) that the kubeconfig uses by default, and a user with no
//! permissions beyond discovery (context [`USER_CONTEXT`]) for RBAC tests. The admin
//! may also impersonate anyone, e.g. `kubectl --as=system:serviceaccount:ns:name`.

use std::ffi::OsStr;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::etcd::EtcdServer;
use crate::process::{self, Supervised};

/// The kubeconfig context of the admin identity (group `system:masters`), the default.
pub const ADMIN_CONTEXT: &str = "ferry-e2e-admin";
/// The kubeconfig context of the unprivileged identity.
pub const USER_CONTEXT: &str = "ferry-e2e-user";
/// The unprivileged identity's user name, for RBAC bindings in tests.
pub const USER_NAME: &str = "ferry-e2e-user";
/// The unprivileged identity's group.
pub const USER_GROUP: &str = "ferry-e2e:users";

/// How long kube-apiserver may take to answer `/readyz` (it compiles every built-in
/// schema at start, which takes several seconds of both cores).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long kube-controller-manager may take to run its controllers.
const CONTROLLERS_TIMEOUT: Duration = Duration::from_secs(90);
/// How often readiness is probed (each probe runs kubectl).
const READY_POLL: Duration = Duration::from_millis(250);
/// Ports tried before giving up, in case another process takes a free port between
/// our probe and the server's bind.
const START_ATTEMPTS: usize = 3;
/// Longest a kubectl command may run before `timeout` ends it.
const TOOL_TIMEOUT_S: &str = "120";
/// Longest a helm command may run: above the longest `--wait --timeout` a test gives
/// it (4 minutes), so helm reports its own timeout instead of being cut off at 120 s
/// while pods are still starting on a loaded machine ("context canceled").
const HELM_TIMEOUT_S: &str = "300";
/// How much of a server's log a failure message quotes.
const LOG_TAIL_BYTES: usize = 4000;

/// The Kubernetes version pinned in `e2e/k8s/go.mod`, which names the cache dir.
fn pinned_version() -> &'static str {
    const GO_MOD: &str = include_str!("../k8s/go.mod");
    // `require k8s.io/kubernetes v1.33.13 // indirect`: the word after the path.
    GO_MOD
        .lines()
        .find_map(|line| line.trim().strip_prefix("require k8s.io/kubernetes "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("e2e/k8s/go.mod requires k8s.io/kubernetes on one line")
}

/// The directory of binaries `e2e/k8s/build` made, and the tools in it.
#[derive(Debug, Clone)]
pub struct KubeTools {
    dir: PathBuf,
}

impl KubeTools {
    /// Finds the built tools: `FERRY_K8S_BIN`, else `$HOME/.cache/ferry/k8s-<version>`;
    /// panics with the command that builds them when one is missing or stale.
    pub fn locate() -> Self {
        let dir = std::env::var_os("FERRY_K8S_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").expect("HOME is set");
                PathBuf::from(home)
                    .join(".cache/ferry")
                    .join(format!("k8s-{}", pinned_version()))
            });
        let tools = Self { dir };
        for tool in [
            "kube-apiserver",
            "kubectl",
            "helm",
            "kube-controller-manager",
        ] {
            let path = tools.dir.join(tool);
            assert!(
                path.is_file(),
                "{} is missing: run e2e/k8s/build (or ./.ci/setup test), which builds the \
                 Kubernetes test tools from e2e/k8s/go.mod (needs Go; ~15 min the first time)",
                path.display()
            );
        }
        let stamp =
            std::fs::read_to_string(tools.dir.join("kube-apiserver.version")).unwrap_or_default();
        assert_eq!(
            stamp.trim(),
            pinned_version(),
            "{} holds kube-apiserver {}, not the pinned {}: run e2e/k8s/build",
            tools.dir.display(),
            stamp.trim(),
            pinned_version()
        );
        tools
    }

    /// The directory holding the binaries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one tool, e.g. `kubectl`.
    pub fn path(&self, tool: &str) -> PathBuf {
        self.dir.join(tool)
    }

    /// A `helm` command under `timeout`, with helm's cache, config and data
    /// directories in `home` so tests leave nothing in the user's.
    pub fn helm_command(&self, home: &Path) -> Command {
        let mut command = Command::new("timeout");
        command
            .arg(HELM_TIMEOUT_S)
            .arg(self.path("helm"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        command
    }
}

/// What the generated credentials are, for the kubeconfig and the token file.
struct Credentials {
    admin_token: String,
    user_token: String,
}

impl Credentials {
    fn generate() -> Self {
        Self {
            admin_token: random_token(),
            user_token: random_token(),
        }
    }
}

/// 32 hex digits from the kernel's random source.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    let mut random = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut random, &mut bytes).expect("read /dev/urandom");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A kube-apiserver with its own etcd; everything stops and is deleted on drop.
pub struct KubeApiServer {
    // Fields drop in order: the controller manager before the API server before
    // etcd, all before their directory.
    controller_manager: Option<Supervised>,
    apiserver: Supervised,
    etcd: EtcdServer,
    tools: KubeTools,
    address: Ipv4Addr,
    port: u16,
    dir: TempDir,
}

impl KubeApiServer {
    /// Starts etcd and kube-apiserver on 127.0.0.1, waits until `/readyz` answers
    /// `ok`, and writes the kubeconfig.
    pub fn start() -> Self {
        Self::start_on(Ipv4Addr::LOCALHOST)
    }

    /// As [`Self::start`], with the API server listening on and advertising
    /// `address`: pods reach it there (through the `kubernetes` Service, whose
    /// endpoint it is), so it must be an address of this machine outside 127/8.
    pub fn start_on(address: Ipv4Addr) -> Self {
        let tools = KubeTools::locate();
        let dir = tempfile::Builder::new()
            .prefix("ferry-kube-")
            .tempdir()
            .expect("tempdir");
        let etcd = EtcdServer::start(&dir.path().join("etcd"));
        let credentials = Credentials::generate();
        write_service_account_key(dir.path());
        write_token_file(dir.path(), &credentials);

        let mut failures = Vec::new();
        for attempt in 0..START_ATTEMPTS {
            let port = free_port(address);
            let log = dir.path().join(format!("kube-apiserver-{attempt}.log"));
            let mut apiserver = spawn_apiserver(&tools, dir.path(), &etcd, (address, port), &log);
            write_kubeconfig(dir.path(), (address, port), &credentials);
            match wait_ready(&tools, dir.path(), &mut apiserver, (address, port)) {
                Ok(()) => {
                    return Self {
                        controller_manager: None,
                        apiserver,
                        etcd,
                        tools,
                        address,
                        port,
                        dir,
                    };
                }
                Err(failure) => {
                    drop(apiserver);
                    failures.push(format!("{failure}\n--- log tail ---\n{}", tail(&log)));
                }
            }
        }
        panic!(
            "kube-apiserver did not start:\n{}",
            failures.join("\n=====\n")
        );
    }

    /// One server shared by the tests of a test binary that run at the same time
    /// (tests isolate themselves in namespaces); it stops when the last of them
    /// drops its handle, and a later test starts a fresh one.
    pub fn shared() -> Arc<Self> {
        static SHARED: Mutex<Weak<KubeApiServer>> = Mutex::new(Weak::new());
        // A test that panicked while starting the server poisons the lock; the next
        // one simply tries again.
        let mut shared = SHARED.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(Self::start());
        *shared = Arc::downgrade(&server);
        server
    }

    /// Starts kube-controller-manager (garbage collection of owned objects,
    /// namespace deletion, StatefulSet and other workload controllers, the default
    /// ServiceAccount of each namespace) and waits until its controllers run.
    pub fn start_controller_manager(&mut self) {
        assert!(
            self.controller_manager.is_none(),
            "kube-controller-manager already runs"
        );
        let log = self.dir.path().join("kube-controller-manager.log");
        let certs = self.dir.path().join("certs");
        let mut command = process::command(&self.tools.path("kube-controller-manager"));
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig_path().display()))
            // No serving port: nothing here scrapes it, and it would need its own certs.
            .arg("--secure-port=0")
            .arg("--leader-elect=false")
            .arg(format!(
                "--service-account-private-key-file={}",
                self.dir.path().join("sa.key").display()
            ))
            .arg(format!(
                "--root-ca-file={}",
                certs.join("apiserver.crt").display()
            ))
            .stdout(Stdio::null())
            .stderr(log_file(&log));
        let mut manager = Supervised::spawn("kube-controller-manager", &mut command);
        // The ServiceAccount controller creates `default` in every namespace; once it
        // exists in `default`, the controllers are running.
        let deadline = Instant::now() + CONTROLLERS_TIMEOUT;
        loop {
            let probe = self.kubectl(["get", "serviceaccount", "default", "-n", "default"]);
            if probe.status.success() {
                break;
            }
            assert!(
                !manager.has_exited(),
                "kube-controller-manager exited:\n{}",
                tail(&log)
            );
            assert!(
                Instant::now() < deadline,
                "kube-controller-manager did not run its controllers in \
                 {CONTROLLERS_TIMEOUT:?}:\n{}",
                tail(&log)
            );
            std::thread::sleep(READY_POLL);
        }
        self.controller_manager = Some(manager);
    }

    /// Whether kube-apiserver, and kube-controller-manager if started, still run.
    pub fn is_running(&mut self) -> bool {
        let manager_runs = self
            .controller_manager
            .as_mut()
            .is_none_or(|manager| !manager.has_exited());
        manager_runs && !self.apiserver.has_exited()
    }

    /// The API server's URL, `https://<address>:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.address, self.port)
    }

    /// The kubeconfig: contexts [`ADMIN_CONTEXT`] (current) and [`USER_CONTEXT`], the
    /// server's self-signed certificate as the CA. Give it to a process as
    /// `KUBECONFIG` (kube-rs reads it too).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Writes a kubeconfig in which the admin impersonates `user` in `groups`
    /// (`as`/`as-groups`), and returns its path: run the operator with it to test
    /// it under the RBAC the chart grants, e.g. as
    /// `system:serviceaccount:<namespace>:<name>` in `system:serviceaccounts` and
    /// `system:serviceaccounts:<namespace>` (list `system:authenticated` too, as a
    /// real token would carry it).
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str]) -> PathBuf {
        let text = std::fs::read_to_string(self.kubeconfig_path()).expect("read kubeconfig");
        let mut config: serde_json::Value = serde_json::from_str(&text).expect("kubeconfig JSON");
        let users = config["users"].as_array_mut().expect("kubeconfig users");
        let admin = users
            .iter_mut()
            .find(|entry| entry["name"] == "admin")
            .expect("the admin user");
        admin["user"]["as"] = user.into();
        admin["user"]["as-groups"] = groups.into();
        // One file per identity; the name only has to be unique and a file name.
        let file: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = self.dir.path().join(format!("kubeconfig-as-{file}"));
        let text = serde_json::to_string_pretty(&config).expect("kubeconfig JSON");
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// The certificate kube-apiserver serves (and the CA that signed it).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.path().join("certs/apiserver.crt")
    }

    /// The etcd behind the API server, which tests may also use for Ferry's keys.
    pub fn etcd(&self) -> &EtcdServer {
        &self.etcd
    }

    /// The built tools.
    pub fn tools(&self) -> &KubeTools {
        &self.tools
    }

    /// A scratch directory that lives as long as the server.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs kubectl as the admin with `args`, and returns what it did.
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(self.kubectl_command(args), None)
    }

    /// Runs kubectl as the admin with `args`, feeding it `stdin` (e.g. `-f -`).
    pub fn kubectl_stdin<I, S>(&self, args: I, stdin: &str) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(self.kubectl_command(args), Some(stdin))
    }

    /// Runs kubectl as the admin and returns its stdout; panics with its stderr if it
    /// fails.
    pub fn kubectl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let output = self.kubectl(&args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
    }

    /// Runs kubectl as the unprivileged user ([`USER_NAME`]).
    pub fn kubectl_as_user<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.kubectl_command(["--context", USER_CONTEXT]);
        command.args(args);
        run(command, None)
    }

    /// A kubectl command with this server's kubeconfig, under `timeout`.
    pub fn kubectl_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = kubectl_command(&self.tools, self.dir.path());
        command.args(args);
        command
    }

    /// A helm command with this server's kubeconfig, under `timeout`.
    pub fn helm_command(&self) -> Command {
        let mut command = self.tools.helm_command(&self.dir.path().join("helm"));
        command.env("KUBECONFIG", self.kubeconfig_path());
        command
    }

    /// Applies the CustomResourceDefinitions in `dir` (every `*.yaml`) and waits
    /// until each is Established and served in discovery, so their resources can be
    /// created, and named by short name or category, at once.
    pub fn install_crds(&self, dir: &Path) {
        self.kubectl_ok([
            OsStr::new("apply"),
            OsStr::new("--server-side"),
            OsStr::new("-f"),
            dir.as_os_str(),
        ]);
        self.kubectl_ok([
            OsStr::new("wait"),
            OsStr::new("--for=condition=Established"),
            OsStr::new("--timeout=60s"),
            OsStr::new("-f"),
            dir.as_os_str(),
        ]);
        let names = self.kubectl_ok([
            OsStr::new("get"),
            OsStr::new("-f"),
            dir.as_os_str(),
            OsStr::new("-o"),
            OsStr::new("jsonpath={.items[*].metadata.name}"),
        ]);
        // Discovery lags Established by a moment, and kubectl caches it; `api-resources`
        // refetches it, so once it lists every CRD the cache knows them too.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let served = self.kubectl_ok(["api-resources", "-o", "name"]);
            let served: Vec<&str> = served.lines().collect();
            let missing: Vec<&str> = names
                .split_whitespace()
                .filter(|name| !served.contains(name))
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "discovery does not serve {missing:?} 30 s after they were Established"
            );
            std::thread::sleep(READY_POLL);
        }
    }

    /// Creates a namespace (a test's own, so tests sharing a server do not meet).
    pub fn create_namespace(&self, name: &str) {
        self.kubectl_ok(["create", "namespace", name]);
    }
}

fn free_port(address: Ipv4Addr) -> u16 {
    TcpListener::bind((address, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|err| panic!("a free port on {address}: {err}"))
}

/// The key pair that signs and verifies service-account tokens, made by openssl.
fn write_service_account_key(dir: &Path) {
    let key = dir.join("sa.key");
    let public = dir.join("sa.pub");
    let openssl = |args: &[&OsStr]| crate::pki::openssl(dir, args);
    openssl(&[
        "genrsa".as_ref(),
        "-out".as_ref(),
        key.as_os_str(),
        "2048".as_ref(),
    ]);
    openssl(&[
        "rsa".as_ref(),
        "-in".as_ref(),
        key.as_os_str(),
        "-pubout".as_ref(),
        "-out".as_ref(),
        public.as_os_str(),
    ]);
}

/// kube-apiserver's static token file: `token,user,uid,"group,…"` per line.
fn write_token_file(dir: &Path, credentials: &Credentials) {
    let lines = format!(
        "{},ferry-e2e-admin,ferry-e2e-admin,\"system:masters\"\n{},{USER_NAME},{USER_NAME},\"{USER_GROUP}\"\n",
        credentials.admin_token, credentials.user_token
    );
    std::fs::write(dir.join("tokens.csv"), lines).expect("write tokens.csv");
}

/// The kubeconfig, as JSON (a subset of YAML, so kubectl, helm and kube-rs read it).
fn write_kubeconfig(dir: &Path, (address, port): (Ipv4Addr, u16), credentials: &Credentials) {
    let context = |name: &str, user: &str| serde_json::json!({"name": name, "context": {"cluster": "ferry-e2e", "user": user}});
    let user =
        |name: &str, token: &str| serde_json::json!({"name": name, "user": {"token": token}});
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "ferry-e2e",
            "cluster": {
                "server": format!("https://{address}:{port}"),
                "certificate-authority": dir.join("certs/apiserver.crt"),
            },
        }],
        "users": [
            user("admin", &credentials.admin_token),
            user("user", &credentials.user_token),
        ],
        "contexts": [context(ADMIN_CONTEXT, "admin"), context(USER_CONTEXT, "user")],
        "current-context": ADMIN_CONTEXT,
    });
    let text = serde_json::to_string_pretty(&config).expect("kubeconfig JSON");
    std::fs::write(dir.join("kubeconfig"), text).expect("write kubeconfig");
}

pub(crate) fn log_file(path: &Path) -> std::fs::File {
    std::fs::File::create(path).unwrap_or_else(|err| panic!("create {}: {err}", path.display()))
}

/// The last [`LOG_TAIL_BYTES`] of a log file.
pub(crate) fn tail(path: &Path) -> String {
    let log = std::fs::read(path).unwrap_or_default();
    let start = log.len().saturating_sub(LOG_TAIL_BYTES);
    String::from_utf8_lossy(&log[start..]).into_owned()
}

fn spawn_apiserver(
    tools: &KubeTools,
    dir: &Path,
    etcd: &EtcdServer,
    (address, port): (Ipv4Addr, u16),
    log: &Path,
) -> Supervised {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut command = process::command(&tools.path("kube-apiserver"));
    command
        .arg(format!("--etcd-servers={}", etcd.endpoint()))
        .arg(format!("--bind-address={address}"))
        .arg(format!("--advertise-address={address}"))
        .arg(format!("--secure-port={port}"))
        // Without --tls-cert-file the server writes a self-signed certificate here,
        // valid for its advertise address; the kubeconfig trusts exactly that.
        .arg(format!("--cert-dir={}", path("certs")))
        .arg(format!("--token-auth-file={}", path("tokens.csv")))
        .arg("--authorization-mode=RBAC")
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg(format!("--service-account-issuer=https://{address}:{port}"))
        .arg(format!("--service-account-key-file={}", path("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            path("sa.key")
        ))
        // On 127.0.0.1 the `kubernetes` Service's endpoint would be a loopback
        // address, which endpoint validation refuses, and no pod would use it.
        .arg(if address.is_loopback() {
            "--endpoint-reconciler-type=none"
        } else {
            "--endpoint-reconciler-type=lease"
        })
        // Logs and exec reach a kubelet at its node's address (no DNS names nodes).
        .arg("--kubelet-preferred-address-types=InternalIP")
        .arg("--allow-privileged=true")
        // A pod bound to a node gets the node's zone label (beta and on by default
        // from 1.35): the brokers learn their zone from it.
        .arg("--feature-gates=PodTopologyLabelsAdmission=true")
        .stdout(Stdio::null())
        .stderr(log_file(log));
    Supervised::spawn("kube-apiserver", &mut command)
}

/// Waits until the server answers `/readyz` with `ok` through kubectl, which also
/// proves the kubeconfig (certificate, token) right.
fn wait_ready(
    tools: &KubeTools,
    dir: &Path,
    apiserver: &mut Supervised,
    (address, port): (Ipv4Addr, u16),
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::new();
    loop {
        if apiserver.has_exited() {
            return Err(format!("kube-apiserver on port {port} exited"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "kube-apiserver on port {port} was not ready in {START_TIMEOUT:?}; \
                 last /readyz answer: {last}"
            ));
        }
        // kubectl only once the port listens and the certificate exists.
        if TcpStream::connect((address, port)).is_ok() && dir.join("certs/apiserver.crt").is_file()
        {
            let mut command = kubectl_command(tools, dir);
            command.args(["get", "--raw", "/readyz"]);
            let output = run(command, None);
            if output.status.success() && output.stdout == b"ok" {
                return Ok(());
            }
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(READY_POLL);
    }
}

/// kubectl with the kubeconfig in `dir` and its discovery cache there too, so tests
/// on different servers never read each other's.
fn kubectl_command(tools: &KubeTools, dir: &Path) -> Command {
    let mut command = Command::new("timeout");
    command
        .arg(TOOL_TIMEOUT_S)
        .arg(tools.path("kubectl"))
        .arg(format!("--kubeconfig={}", dir.join("kubeconfig").display()))
        .arg(format!("--cache-dir={}", dir.join("kube-cache").display()));
    command
}

/// Runs `command` to completion, with `stdin` piped in if given.
fn run(mut command: Command, stdin: Option<&str>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {command:?}: {err}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        // A tool that exits early closes its end; its output says why.
        let _ = pipe.write_all(input.as_bytes());
    }
    child
        .wait_with_output()
        .unwrap_or_else(|err| panic!("wait for {command:?}: {err}"))
}
