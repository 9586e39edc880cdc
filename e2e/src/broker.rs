//! One broker host in cluster mode (`ferry-broker serve`) as a separate process on
//! its own loopback address, or in a network namespace of its own (see
//! [`crate::netns`]), which a test can kill, pause, restart and wipe.
//!
//! The host prints `ferry-broker ready grpc=ADDR metrics=…` on stdout once it
//! listens; its stderr is copied into the test's output with a `[host id]` prefix,
//! so it shows when the test fails. Set `FERRY_LOG` to change the broker's log
//! filter (default `warn`).

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::netns::HOST_PORT;
use crate::process::{self, Supervised};

/// How long a host may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd host may take to shut down before it is killed.
const TERMINATE_GRACE: Duration = Duration::from_secs(30);
/// The line a host prints once it listens, followed by `ADDR metrics=…`.
const READY_PREFIX: &str = "ferry-broker ready grpc=";

/// What a host is started with.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The cluster it joins.
    pub cluster: String,
    /// Its host id, stable across restarts.
    pub host_id: String,
    /// etcd client URLs.
    pub etcd_endpoints: Vec<String>,
    /// The address it listens on and advertises: 127.0.0.2, 127.0.0.3, … on
    /// loopback, or its cluster-link address in its namespace.
    pub ip: Ipv4Addr,
    /// The network namespace it runs in, if not the test's own.
    pub netns: Option<String>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its etcd lease TTL, if not the broker's default.
    pub lease_ttl_ms: Option<u64>,
    /// More `ferry-broker serve` arguments.
    pub extra_args: Vec<String>,
    /// More environment variables for the process.
    pub env: Vec<(String, String)>,
}

/// The broker binary: `FERRY_BROKER_BIN`, else the one built beside this test
/// binary, else `$CARGO_TARGET_DIR/debug`, else the workspace's `target/debug`.
pub fn broker_binary() -> PathBuf {
    workspace_binary("ferry-broker", "FERRY_BROKER_BIN", "ferry-broker")
}

/// The `ferryctl` binary, found like [`broker_binary`] (`FERRY_CTL_BIN`).
pub fn ferryctl_binary() -> PathBuf {
    workspace_binary("ferryctl", "FERRY_CTL_BIN", "ferry-client")
}

/// A binary of this workspace: `$variable`, else the one built beside this test
/// binary, else `$CARGO_TARGET_DIR/debug`, else the workspace's `target/debug`.
pub(crate) fn workspace_binary(name: &str, variable: &str, package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{variable}={} is not a file",
            path.display()
        );
        return path;
    }
    // Test binaries live in <target>/<profile>/deps/.
    let beside_tests = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(name)));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let candidates: Vec<PathBuf> = beside_tests
        .into_iter()
        .chain([target_dir.join("debug").join(name)])
        .collect();
    match candidates.iter().find(|path| path.is_file()) {
        Some(found) => found.clone(),
        None => panic!(
            "no {name} binary at {candidates:?}: build it: cargo build -p {package} \
             (or set {variable})"
        ),
    }
}

/// A broker host process.
pub struct BrokerHost {
    config: HostConfig,
    process: Option<Supervised>,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    paused: bool,
}

/// A host spawned but not yet ready.
struct Launch {
    process: Supervised,
    ready: mpsc::Receiver<String>,
}

impl BrokerHost {
    /// Starts a host on a free port of `config.ip`, waiting until it is ready.
    pub fn start(config: HostConfig) -> Self {
        Self::start_all(vec![config]).remove(0)
    }

    /// Starts several hosts at once, then waits for each to be ready: a host in
    /// cluster mode may wait for its peers before it reports ready.
    pub fn start_all(configs: Vec<HostConfig>) -> Vec<Self> {
        let launches: Vec<Launch> = configs
            .iter()
            .map(|config| spawn(config, SocketAddrV4::new(config.ip, 0)))
            .collect();
        configs
            .into_iter()
            .zip(launches)
            .map(|(config, launch)| match wait_ready(launch) {
                Ok((process, addr, metrics)) => Self {
                    addr: reachable(&config, addr),
                    metrics,
                    config,
                    process: Some(process),
                    paused: false,
                },
                Err(failure) => panic!("host {} did not start: {failure}", config.host_id),
            })
            .collect()
    }

    /// Its gRPC address (the last one it listened on).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it serves Prometheus metrics (not in a network namespace: there the
    /// listener is off).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Its gRPC URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The broker's own process id, while it runs.
    pub fn pid(&mut self) -> Option<u32> {
        self.process.as_mut()?.program_pid()
    }

    /// Its host id.
    pub fn host_id(&self) -> &str {
        &self.config.host_id
    }

    /// What it was started with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Whether its process is running (a paused host is running).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| !p.has_exited())
    }

    /// Whether it is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// SIGKILL to the broker itself: no shutdown, no flush.
    pub fn kill(&mut self) {
        // Dropping the handle SIGKILLs the broker (stopped or not) and reaps it.
        self.process = None;
        self.paused = false;
    }

    /// SIGTERM and wait for a graceful shutdown; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        self.paused = false;
        self.process
            .take()
            .and_then(|process| process.terminate(TERMINATE_GRACE))
            .is_some_and(|status| status.success())
    }

    /// Freezes it with SIGSTOP: its sockets stay open, nothing is answered, and
    /// its etcd lease is no longer kept alive.
    pub fn pause(&mut self) {
        assert!(!self.paused, "host {} is already paused", self.host_id());
        self.running().signal_program("STOP");
        self.paused = true;
    }

    /// Lets a paused host continue with SIGCONT.
    pub fn resume(&mut self) {
        assert!(self.paused, "host {} is not paused", self.host_id());
        self.running().signal_program("CONT");
        self.paused = false;
    }

    /// Starts it again like [`Self::restart`], returning why it did not become ready
    /// (it refused to start, say) instead of panicking.
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.kill();
        let any_port = SocketAddrV4::new(self.config.ip, 0);
        let (process, addr, metrics) = wait_ready(spawn(&self.config, any_port))?;
        self.process = Some(process);
        self.metrics = metrics;
        self.addr = reachable(&self.config, addr);
        Ok(())
    }

    /// Runs `ferry-broker metadata rebuild` for this host (which must be stopped) and
    /// returns its standard output (a JSON report), or why it failed.
    pub fn rebuild_metadata(&self) -> Result<String, String> {
        let config = &self.config;
        let output = process::command_in(config.netns.as_deref(), &broker_binary())
            .args(["metadata", "rebuild"])
            .args(["--cluster", &config.cluster])
            .args(["--host-id", &config.host_id])
            .args(["--etcd", &config.etcd_endpoints.join(",")])
            .arg("--data-dir")
            .arg(&config.data_dir)
            .env("NO_COLOR", "1")
            .output()
            .map_err(|err| format!("cannot run ferry-broker metadata rebuild: {err}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{}: {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Kills it if it runs, then starts it again with the same host id and data
    /// directory, on the same address if that port is still free.
    pub fn restart(&mut self) {
        self.kill();
        let same = match self.addr {
            SocketAddr::V4(addr) => addr,
            SocketAddr::V6(_) => SocketAddrV4::new(self.config.ip, 0),
        };
        let started = wait_ready(spawn(&self.config, same)).or_else(|first| {
            let any_port = SocketAddrV4::new(self.config.ip, 0);
            wait_ready(spawn(&self.config, any_port))
                .map_err(|second| format!("on {same}: {first}; on a new port: {second}"))
        });
        match started {
            Ok((process, addr, metrics)) => {
                self.process = Some(process);
                self.metrics = metrics;
                self.addr = reachable(&self.config, addr);
            }
            Err(failure) => panic!("host {} did not restart: {failure}", self.host_id()),
        }
    }

    /// Removes its data directory: a disk replaced while the host was down.
    pub fn wipe_data(&mut self) {
        assert!(
            !self.is_running(),
            "host {} must be stopped before its data is wiped",
            self.host_id()
        );
        let dir = &self.config.data_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .unwrap_or_else(|err| panic!("wipe {}: {err}", dir.display()));
        }
    }

    fn running(&mut self) -> &mut Supervised {
        let id = &self.config.host_id;
        let process = self
            .process
            .as_mut()
            .unwrap_or_else(|| panic!("host {id} is not running"));
        assert!(!process.has_exited(), "host {id} has exited");
        process
    }
}

/// Spawns `ferry-broker serve` for `config` listening on `listen`.
///
/// In a namespace the host listens on every address of it — its cluster link and
/// its side door — on a fixed port, since the namespace's ports are its own, and
/// advertises its cluster-link address: the side door is for the test alone.
fn spawn(config: &HostConfig, listen: SocketAddrV4) -> Launch {
    std::fs::create_dir_all(&config.data_dir)
        .unwrap_or_else(|err| panic!("create {}: {err}", config.data_dir.display()));
    let mut command = process::command_in(config.netns.as_deref(), &broker_binary());
    command
        .arg("serve")
        .args(["--cluster", &config.cluster])
        .args(["--host-id", &config.host_id])
        .args(["--etcd", &config.etcd_endpoints.join(",")]);
    if config.netns.is_some() {
        command
            .args(["--listen", &format!("0.0.0.0:{HOST_PORT}")])
            .args(["--advertise", &format!("{}:{HOST_PORT}", config.ip)])
            // Reachable from the test network, in plaintext: on purpose.
            .arg("--insecure");
        command.args(["--metrics-listen", "off"]);
    } else {
        command
            .args(["--listen", &listen.to_string()])
            .args(["--metrics-listen", &format!("{}:0", config.ip)]);
    }
    command.arg("--data-dir").arg(&config.data_dir);
    if let Some(ttl_ms) = config.lease_ttl_ms {
        command.args(["--lease-ttl-ms", &ttl_ms.to_string()]);
    }
    command
        .args(&config.extra_args)
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if std::env::var_os("FERRY_LOG").is_none() {
        command.env("FERRY_LOG", "warn");
    }
    // Readable lines in a failed test's output (JSON is the default off a terminal).
    if std::env::var_os("FERRY_LOG_FORMAT").is_none() {
        command.env("FERRY_LOG_FORMAT", "text");
    }
    // Plain logs: they end up in test output, not on a terminal.
    command.env("NO_COLOR", "1");
    let mut process = Supervised::spawn(&format!("host {}", config.host_id), &mut command);
    let child = process.child_mut();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, ready) = mpsc::channel();
    std::thread::spawn(move || watch_stdout(stdout, &tx));
    let prefix = format!("[{}]", config.host_id);
    std::thread::spawn(move || {
        // The test harness captures this thread's output with the test's.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{prefix} {line}");
        }
    });
    Launch { process, ready }
}

/// Where the test reaches a host that printed `bound`: in a namespace it listens on
/// 0.0.0.0, and the test reaches it at its cluster-link address.
fn reachable(config: &HostConfig, bound: SocketAddr) -> SocketAddr {
    if config.netns.is_some() {
        SocketAddr::new(config.ip.into(), bound.port())
    } else {
        bound
    }
}

/// Sends the ready line's rest to `tx`, then keeps reading so the broker never
/// blocks on a full pipe.
fn watch_stdout(stdout: impl Read, tx: &mpsc::Sender<String>) {
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix(READY_PREFIX) {
            let _ = tx.send(rest.to_owned());
        }
    }
}

/// Waits for the ready line and parses the gRPC address from it.
/// A started host: its process, gRPC address and metrics address (if served).
type Started = (Supervised, SocketAddr, Option<SocketAddr>);

fn wait_ready(mut launch: Launch) -> Result<Started, String> {
    match launch.ready.recv_timeout(START_TIMEOUT) {
        Ok(rest) => {
            let mut words = rest.split_whitespace();
            let addr = words
                .next()
                .and_then(|addr| addr.parse().ok())
                .ok_or_else(|| format!("ready line without an address: {rest:?}"))?;
            let metrics = words
                .next()
                .and_then(|word| word.strip_prefix("metrics="))
                .and_then(|addr| addr.parse().ok());
            Ok((launch.process, addr, metrics))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // stdout closed without a ready line: the broker exited.
            let status = launch
                .process
                .wait_exit(Duration::from_secs(5))
                .map_or_else(|| "still running".to_owned(), |status| status.to_string());
            Err(format!(
                "stdout closed before the ready line ({status}); its stderr is above"
            ))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(format!("printed no ready line within {START_TIMEOUT:?}"))
        }
    }
}
