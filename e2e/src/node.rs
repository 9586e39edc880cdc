//! A one-node Kubernetes from real parts, for the tests that run Ferry in pods:
//! containerd with runc and the CNI plugins (Debian's `containerd`, `runc`,
//! `containernetworking-plugins`), and kubelet, kube-scheduler, kube-proxy and
//! CoreDNS built by `e2e/k8s/build`, beside a [`KubeApiServer`] started with
//! [`KubeApiServer::start_on`]`(`[`NODE_IP`]`)`. Kind's recipe without Docker: the
//! node is this machine.
//!
//! - The node's address, [`NODE_IP`], is added to `lo`: the API server, the kubelet
//!   and cluster DNS listen there, and pods reach it through the bridge's gateway.
//! - Pods get addresses in [`POD_SUBNET`] on the bridge [`BRIDGE`] (no masquerading:
//!   nothing leaves the machine); kube-proxy (iptables) routes Service addresses.
//! - CoreDNS runs as a process on the node, serving `cluster.local` from the API
//!   server on [`NODE_IP`]:53, which the kubelet gives pods as their DNS server.
//! - Nothing can be pulled: images are docker-archive tarballs (`e2e/k8s/image`)
//!   imported into containerd, the pod sandbox included (`ferry.local/pause:e2e`).
//! - Persistent volumes: [`STATIC_VOLUMES`] local volumes in the default
//!   StorageClass [`STORAGE_CLASS`] (WaitForFirstConsumer), directories on the node.
//!
//! Every component authenticates as the API server's admin (a test node needs no
//! node authorizer); the kubelet lets the API server in anonymously for logs and
//! exec. What this machine needs is in `shared/notes` and `.ci/setup`: containerd
//! may not lower OOM scores here (`restrict_oom_score_adj`), cgroups are v1 without
//! systemd (`cgroupfs`), swap is not refused.
//!
//! Dropping the node kills every container it started, removes their mounts and
//! network namespaces, kube-proxy's rules, the bridge and the node address. It
//! leaves two machine settings on: IPv4 forwarding and iptables for bridged traffic
//! (pods on one bridge reach each other's Services only through it).

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::kube::{KubeApiServer, KubeTools, log_file, tail};
use crate::process::{self, Supervised};

/// The node's address, on `lo`: outside 127/8, so it can be an endpoint.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 111, 0, 1);
/// The node's name.
pub const NODE_NAME: &str = "ferry-node";
/// The node's zone (`topology.kubernetes.io/zone`), which the API server copies onto
/// the pods bound to it (PodTopologyLabelsAdmission), and the brokers read.
pub const NODE_ZONE: &str = "zone-a";
/// Pod addresses, on the bridge.
pub const POD_SUBNET: &str = "10.112.0.0/24";
/// The pods' bridge.
pub const BRIDGE: &str = "ferry-cni0";
/// The default StorageClass: local volumes bound when a pod is scheduled.
pub const STORAGE_CLASS: &str = "ferry-local";
/// How many persistent volumes the node offers.
pub const STATIC_VOLUMES: usize = 8;
/// Each volume's declared size (local volumes are not size-limited).
const VOLUME_SIZE: &str = "20Gi";
/// The sandbox image every pod starts with.
const PAUSE_IMAGE: &str = "ferry.local/pause:e2e";
/// How often a killed container's task is asked to be deleted, 100 ms apart.
const TASK_DELETE_ATTEMPTS: usize = 50;
/// How long the node may take to report Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The node's processes; they stop, and everything they made is removed, on drop.
pub struct KubeNode {
    coredns: Option<Supervised>,
    proxy: Option<Supervised>,
    scheduler: Option<Supervised>,
    kubelet: Option<Supervised>,
    containerd: Option<Supervised>,
    tools: KubeTools,
    dir: TempDir,
}

impl KubeNode {
    /// Adds [`NODE_IP`] to this machine and starts an API server there, for
    /// [`Self::start`].
    pub fn start_api_server() -> KubeApiServer {
        add_node_address();
        KubeApiServer::start_on(NODE_IP)
    }

    /// Starts the node against `server` (started on [`NODE_IP`]), imports `images`
    /// (docker-archive tarballs) and waits until the Node is Ready, with the
    /// StorageClass and volumes in place.
    pub fn start(server: &KubeApiServer, images: &[PathBuf]) -> Self {
        assert!(
            server.url().contains(&NODE_IP.to_string()),
            "the API server must listen on {NODE_IP} (KubeNode::start_api_server)"
        );
        let tools = server.tools().clone();
        for tool in [
            "kubelet",
            "kube-scheduler",
            "kube-proxy",
            "coredns",
            "pause",
        ] {
            assert!(
                tools.path(tool).is_file(),
                "{} is missing: run e2e/k8s/build (or ./.ci/setup test)",
                tools.path(tool).display()
            );
        }
        for program in ["containerd", "runc", "ctr", "iptables", "ip"] {
            assert!(
                which(program).is_some(),
                "{program} is missing: ./.ci/setup test installs containerd, runc, \
                 containernetworking-plugins, iptables and iproute2 (Debian)"
            );
        }
        assert!(
            Path::new("/usr/lib/cni/bridge").is_file(),
            "/usr/lib/cni/bridge is missing: install Debian's containernetworking-plugins \
             (./.ci/setup test)"
        );
        let dir = tempfile::Builder::new()
            .prefix("ferry-node-")
            .tempdir()
            .expect("tempdir");
        add_node_address();
        let mut node = Self {
            coredns: None,
            proxy: None,
            scheduler: None,
            kubelet: None,
            containerd: None,
            tools,
            dir,
        };
        node.start_containerd();
        let pause = node.pause_image();
        for image in images.iter().chain([&pause]) {
            node.ctr(&[
                OsStr::new("images"),
                OsStr::new("import"),
                image.as_os_str(),
            ]);
        }
        let kubeconfig = server.kubeconfig_path();
        node.start_kubelet(&kubeconfig);
        node.scheduler = Some(node.spawn_logged(
            "kube-scheduler",
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                "--leader-elect=false".to_owned(),
                "--secure-port=0".to_owned(),
            ],
        ));
        node.start_proxy(&kubeconfig);
        node.start_coredns(&kubeconfig);
        node.wait_ready(server);
        // Kubernetes 1.33's PodTopologyLabelsAdmission copies the zone from this key
        // (fixed to topology.kubernetes.io/zone in 1.34), and the kubelet may not set
        // a k8s.io label on its own node: the administrator does.
        server.kubectl_ok([
            "label",
            "node",
            NODE_NAME,
            &format!("topology.k8s.io/zone={NODE_ZONE}"),
        ]);
        create_storage(server, node.dir.path());
        node
    }

    /// A file in the node's directory.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The tail of a component's log (`kubelet`, `containerd`, …), for failures.
    pub fn log_tail(&self, component: &str) -> String {
        tail(&self.path(&format!("{component}.log")))
    }

    /// Writes `value` as JSON to `name` in the node's directory; returns the path.
    fn write_json(&self, name: &str, value: &serde_json::Value) -> PathBuf {
        let path = self.path(name);
        let text = serde_json::to_string_pretty(value).expect("JSON");
        std::fs::write(&path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        path
    }

    /// Spawns a node tool with `args`, its output in `<name>.log`.
    fn spawn_logged(&self, name: &str, args: &[String]) -> Supervised {
        self.spawn_program(name, &self.tools.path(name), args)
    }

    fn spawn_program(&self, name: &str, program: &Path, args: &[String]) -> Supervised {
        let log = log_file(&self.path(&format!("{name}.log")));
        let mut command = process::command(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file"))
            .stderr(log);
        Supervised::spawn(name, &mut command)
    }

    fn socket(&self) -> PathBuf {
        self.path("containerd/containerd.sock")
    }

    /// containerd with its root, state and socket here, CNI from Debian's plugins
    /// with this node's bridge, and this node's sandbox image.
    fn start_containerd(&mut self) {
        let cni_conf = self.path("cni");
        std::fs::create_dir_all(&cni_conf).expect("create the CNI config dir");
        // containerd reads every conflist in the directory.
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "ferry-e2e",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": self.path("cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        self.write_json("cni/10-ferry-e2e.conflist", &conflist);
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            root = self.path("containerd/root").display(),
            state = self.path("containerd/state").display(),
            socket = self.socket().display(),
            cni = cni_conf.display(),
        );
        let config_path = self.path("containerd.toml");
        std::fs::write(&config_path, config).expect("write containerd.toml");
        let containerd = which("containerd").expect("containerd");
        let mut process = self.spawn_program(
            "containerd",
            &containerd,
            &[format!("--config={}", config_path.display())],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.socket().exists() {
            assert!(
                !process.has_exited() && Instant::now() < deadline,
                "containerd did not start:\n{}",
                self.log_tail("containerd")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.containerd = Some(process);
    }

    /// Packs the sandbox image with `e2e/k8s/image --pause` (`--out` only names the
    /// directory: Ferry's own image is the caller's).
    fn pause_image(&self) -> PathBuf {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/image");
        let out = self.path("images/unused.tar");
        let output = Command::new(&script)
            .args(["--no-ferry", "--out"])
            .arg(&out)
            .arg("--pause")
            .arg(self.tools.path("pause"))
            .output()
            .unwrap_or_else(|err| panic!("run {}: {err}", script.display()));
        assert!(
            output.status.success(),
            "{} --pause failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        self.path("images/pause-image.tar")
    }

    /// `ctr` in the Kubernetes namespace against this node's containerd.
    fn ctr_command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "k8s.io"])
            .args(args);
        command
    }

    /// Runs `ctr` with `args` and returns its stdout; panics if it fails.
    fn ctr(&self, args: &[&OsStr]) -> String {
        let output = self.ctr_command(args).output().expect("run ctr");
        assert!(
            output.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn start_kubelet(&mut self, kubeconfig: &Path) {
        let resolv = self.path("resolv.conf");
        // Pods resolve only cluster names; nothing outside can be reached.
        std::fs::write(&resolv, format!("nameserver {NODE_IP}\n")).expect("write resolv.conf");
        let config = serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP.to_string(),
            "port": 10250,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": false,
            "failSwapOn": false,
            "containerRuntimeEndpoint": format!("unix://{}", self.socket().display()),
            "authentication": {
                "anonymous": {"enabled": true},
                "webhook": {"enabled": false},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDNS": [NODE_IP.to_string()],
            "clusterDomain": "cluster.local",
            "resolvConf": resolv,
            "podLogsDir": self.path("pod-logs"),
            // This machine's disk may be fuller than kubelet's defaults allow; the
            // tests' pods are small, and evicting them would only confuse a test.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": false,
            "maxPods": 30,
        });
        let config_path = self.write_json("kubelet.json", &config);
        self.kubelet = Some(self.spawn_logged(
            "kubelet",
            &[
                format!("--config={}", config_path.display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--root-dir={}", self.path("kubelet").display()),
                format!("--cert-dir={}", self.path("kubelet-pki").display()),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                format!("--node-labels=topology.kubernetes.io/zone={NODE_ZONE}"),
                "--v=1".to_owned(),
            ],
        ));
    }

    fn start_proxy(&mut self, kubeconfig: &Path) {
        // Pods on one bridge reach each other's Services only if bridged traffic
        // passes iptables.
        let _ = std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1");
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
        let config = serde_json::json!({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": kubeconfig},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": POD_SUBNET,
            "bindAddress": NODE_IP.to_string(),
            "healthzBindAddress": format!("{NODE_IP}:10256"),
            "metricsBindAddress": format!("{NODE_IP}:10249"),
            // Zero leaves the machine's conntrack settings alone (they may not be
            // writable here).
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        });
        let config_path = self.write_json("kube-proxy.json", &config);
        self.proxy = Some(self.spawn_logged(
            "kube-proxy",
            &[format!("--config={}", config_path.display())],
        ));
    }

    fn start_coredns(&mut self, kubeconfig: &Path) {
        let corefile = format!(
            "cluster.local:53 in-addr.arpa:53 {{\n  bind {NODE_IP}\n  errors\n  \
             kubernetes cluster.local in-addr.arpa {{\n    kubeconfig {} \n    \
             pods insecure\n    ttl 5\n  }}\n}}\n.:53 {{\n  bind {NODE_IP}\n  errors\n  \
             template ANY ANY {{\n    rcode NXDOMAIN\n  }}\n}}\n",
            kubeconfig.display()
        );
        let path = self.path("Corefile");
        std::fs::write(&path, corefile).expect("write the Corefile");
        self.coredns = Some(self.spawn_logged("coredns", &[format!("-conf={}", path.display())]));
    }

    /// Waits until the Node reports Ready (the runtime, its network and the kubelet
    /// all work) and every node process still runs.
    fn wait_ready(&mut self, server: &KubeApiServer) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = server.kubectl([
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            if ready.status.success() && ready.stdout == b"True" {
                return;
            }
            for (name, process) in [
                ("containerd", &mut self.containerd),
                ("kubelet", &mut self.kubelet),
                ("kube-scheduler", &mut self.scheduler),
                ("kube-proxy", &mut self.proxy),
                ("coredns", &mut self.coredns),
            ] {
                if process.as_mut().is_some_and(Supervised::has_exited) {
                    panic!(
                        "{name} exited:\n{}",
                        tail(&self.dir.path().join(format!("{name}.log")))
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {NODE_NAME} was not Ready in {READY_TIMEOUT:?}; kubelet log:\n{}",
                self.log_tail("kubelet")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Kills every container this node's containerd runs and removes them, so no
    /// process, mount or network namespace outlives the node.
    fn remove_containers(&self) {
        // Best effort: a failure here must not hide the test's own.
        let run = |args: &[&str]| {
            self.ctr_command(args)
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let tasks = run(&["tasks", "ls", "-q"]);
        for task in tasks.lines().filter(|t| !t.is_empty()) {
            run(&["tasks", "kill", "--signal", "SIGKILL", task]);
        }
        for task in tasks.lines().filter(|t| !t.is_empty()) {
            // Deleting (once the kill took) unmounts the container's rootfs.
            for _ in 0..TASK_DELETE_ATTEMPTS {
                run(&["tasks", "delete", task]);
                if !run(&["tasks", "ls", "-q"]).contains(task) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for container in run(&["containers", "ls", "-q"])
            .lines()
            .filter(|c| !c.is_empty())
        {
            run(&["containers", "delete", container]);
        }
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        // The kubelet first, so it restarts nothing; then the containers, while
        // containerd still runs to remove them.
        drop(self.kubelet.take());
        drop(self.scheduler.take());
        if self.containerd.is_some() {
            self.remove_containers();
        }
        drop(self.containerd.take());
        drop(self.coredns.take());
        drop(self.proxy.take());
        // Shims outlive containerd; theirs are marked by this node's socket.
        let socket = self.socket().display().to_string();
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &format!("containerd-shim.*{socket}")])
            .status();
        let _ = Command::new(self.tools.path("kube-proxy"))
            .arg("--cleanup")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        remove_kube_chains();
        unmount_under(self.dir.path());
        remove_pod_namespaces();
        let _ = Command::new("ip")
            .args(["link", "delete", BRIDGE])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["addr", "delete", &format!("{NODE_IP}/32"), "dev", "lo"])
            .stderr(Stdio::null())
            .status();
    }
}

/// Adds [`NODE_IP`] to `lo` (again is fine).
fn add_node_address() {
    let output = Command::new("ip")
        .args(["addr", "replace", &format!("{NODE_IP}/32"), "dev", "lo"])
        .output()
        .expect("run ip");
    assert!(
        output.status.success(),
        "ip addr replace {NODE_IP}/32 dev lo (the tests run as root): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The default StorageClass and [`STATIC_VOLUMES`] local volumes in `dir`.
fn create_storage(server: &KubeApiServer, dir: &Path) {
    let mut objects = vec![serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    })];
    for index in 0..STATIC_VOLUMES {
        let path = dir.join(format!("volumes/pv-{index}"));
        std::fs::create_dir_all(&path).expect("create a volume directory");
        objects.push(serde_json::json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": format!("ferry-node-pv-{index}")},
            "spec": {
                "capacity": {"storage": VOLUME_SIZE},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": STORAGE_CLASS,
                "local": {"path": path},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{
                    "matchExpressions": [{
                        "key": "kubernetes.io/hostname",
                        "operator": "In",
                        "values": [NODE_NAME],
                    }],
                }]}},
            },
        }));
    }
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let output = server.kubectl_stdin(["apply", "-f", "-"], &list.to_string());
    assert!(
        output.status.success(),
        "create the StorageClass and volumes: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Unmounts whatever is still mounted below `dir` (deepest first).
fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let _ = Command::new("umount")
            .args(["-l", point])
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes the `KUBE-*` chains the kubelet leaves (its canaries and marks), and
/// the rules that jump to them.
fn remove_kube_chains() {
    for program in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle"] {
            let Ok(listed) = Command::new(program).args(["-t", table, "-S"]).output() else {
                continue;
            };
            let rules = String::from_utf8_lossy(&listed.stdout).into_owned();
            let iptables = |args: &[&str]| {
                let _ = Command::new(program)
                    .args(["-t", table])
                    .args(args)
                    .stderr(Stdio::null())
                    .status();
            };
            for rule in rules
                .lines()
                .filter(|r| r.starts_with("-A ") && r.contains("-j KUBE-"))
            {
                let mut args: Vec<&str> = rule.split_whitespace().collect();
                args[0] = "-D";
                iptables(&args);
            }
            for chain in rules.lines().filter_map(|r| r.strip_prefix("-N KUBE-")) {
                let chain = format!("KUBE-{chain}");
                iptables(&["-F", &chain]);
                iptables(&["-X", &chain]);
            }
        }
    }
}

/// Removes the network namespaces containerd made for pods (`cni-<id>`).
fn remove_pod_namespaces() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("cni-") {
            let _ = Command::new("ip")
                .args(["netns", "delete", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}
