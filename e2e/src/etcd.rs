//! A real single-member etcd for cluster tests: Debian's `etcd-server` on
//! 127.0.0.1 (and, for hosts in network namespaces, on a test network's bridge
//! address too) with its own data directory, which a test can stop, restart, pause
//! and resume. It runs under `timeout 600`, so a killed test leaves nothing running.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::process::{self, POLL_INTERVAL, Supervised};

/// How long etcd may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd etcd may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Port pairs tried before giving up, in case another process takes a free port
/// between our probe and etcd's bind.
const START_ATTEMPTS: usize = 3;

/// Where the etcd binary is: `FERRY_ETCD`, else `etcd` on the path, else Debian's.
fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FERRY_ETCD") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "FERRY_ETCD={} is not a file",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file());
    let found = on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        found.is_file(),
        "etcd is not installed: run ./.ci/test, which installs Debian's etcd-server \
         (or set FERRY_ETCD to an etcd binary)"
    );
    found
}

/// A port free on 127.0.0.1 now and never handed out before in this process: two
/// tests starting etcd at once could otherwise be given the same just-released port,
/// and one test's client would talk to the other test's etcd.
fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port on 127.0.0.1");
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port)
        {
            return port;
        }
    }
}

/// What an etcd serving TLS is started with.
#[derive(Debug, Clone)]
pub struct EtcdServerTls {
    /// Its certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA its clients' certificates must chain to: clients without one are refused
    /// (`--client-cert-auth`).
    pub client_ca: PathBuf,
}

/// One single-member etcd cluster.
pub struct EtcdServer {
    process: Option<Supervised>,
    data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Another address clients reach it on, beside 127.0.0.1.
    also_on: Option<Ipv4Addr>,
    /// TLS on its client URLs, requiring client certificates.
    tls: Option<EtcdServerTls>,
    paused: bool,
}

impl EtcdServer {
    /// Starts etcd with its data in `data_dir`, waiting until it accepts connections.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_also_on(data_dir, None)
    }

    /// Starts etcd like [`Self::start`], taking client connections on `also_on`
    /// (an address of the test's namespace) as well as on 127.0.0.1.
    pub fn start_also_on(data_dir: &Path, also_on: Option<Ipv4Addr>) -> Self {
        Self::start_with(data_dir, also_on, None)
    }

    /// Starts etcd like [`Self::start_also_on`], serving its clients over TLS when
    /// `tls` is given (`https://` endpoints, client certificates required).
    pub fn start_with(
        data_dir: &Path,
        also_on: Option<Ipv4Addr>,
        tls: Option<EtcdServerTls>,
    ) -> Self {
        let mut etcd = Self {
            process: None,
            data_dir: data_dir.to_owned(),
            client_port: 0,
            peer_port: 0,
            also_on,
            tls,
            paused: false,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            etcd.client_port = free_port();
            etcd.peer_port = free_port();
            match etcd.launch() {
                Ok(()) => return etcd,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("etcd did not start: {failures:?}");
    }

    /// The client URL brokers connect to.
    pub fn endpoint(&self) -> String {
        self.endpoint_on(Ipv4Addr::LOCALHOST)
    }

    /// The client URL on `ip` (127.0.0.1, or the address it was started `also_on`).
    pub fn endpoint_on(&self, ip: Ipv4Addr) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{ip}:{}", self.client_port)
    }

    /// Whether etcd is running (a paused etcd is running).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| !p.has_exited())
    }

    /// Makes etcd trust client certificates of the CA at `client_ca` only, from its
    /// next start: the old clients' certificates are refused then.
    pub fn set_client_ca(&mut self, client_ca: &Path) {
        let tls = self.tls.as_mut().expect("etcd serves TLS");
        tls.client_ca = client_ca.to_owned();
    }

    /// Stops etcd with SIGTERM and waits for it to exit, so its ports are free.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            // `timeout` passes SIGTERM on and then SIGCONTs, so a paused etcd stops too;
            // dropping the handle kills whatever is left after the grace period.
            let _ = process.terminate(STOP_GRACE);
        }
        self.paused = false;
    }

    /// Stops etcd if it runs, then starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(failure) = self.launch() {
            panic!("etcd did not restart: {failure}");
        }
    }

    /// Stops etcd, deletes its data and starts it again, empty, on the same ports: an
    /// etcd that lost everything (a wiped volume, a replaced cluster).
    pub fn wipe_and_restart(&mut self) {
        self.stop();
        if self.data_dir.exists() {
            std::fs::remove_dir_all(&self.data_dir)
                .unwrap_or_else(|err| panic!("wipe {}: {err}", self.data_dir.display()));
        }
        if let Err(failure) = self.launch() {
            panic!("etcd did not start again after the wipe: {failure}");
        }
    }

    /// Freezes etcd with SIGSTOP: connections stay open, nothing is answered.
    pub fn pause(&mut self) {
        assert!(!self.paused, "etcd is already paused");
        self.running().signal_program("STOP");
        self.paused = true;
    }

    /// Lets a paused etcd continue with SIGCONT.
    pub fn resume(&mut self) {
        assert!(self.paused, "etcd is not paused");
        self.running().signal_program("CONT");
        self.paused = false;
    }

    fn running(&mut self) -> &mut Supervised {
        let process = self.process.as_mut().expect("etcd is not running");
        assert!(!process.has_exited(), "etcd has exited");
        process
    }

    /// Spawns etcd on the current ports and waits until its client port accepts.
    fn launch(&mut self) -> Result<(), String> {
        assert!(self.process.is_none(), "etcd is already running");
        let client = self.endpoint();
        let clients = match self.also_on {
            Some(ip) => format!("{client},{}", self.endpoint_on(ip)),
            None => client.clone(),
        };
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = process::command(&etcd_binary());
        command
            .args(["--name", "ferry-e2e"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &clients])
            .args(["--advertise-client-urls", &clients])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("ferry-e2e={peer}")])
            .args(["--log-level", "error"]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca)
                .arg("--client-cert-auth");
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut process = Supervised::spawn("etcd", &mut command);
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            if process.has_exited() {
                let status = process.wait_exit(Duration::ZERO);
                let status = status.map_or_else(String::new, |status| status.to_string());
                return Err(format!("etcd on {client} exited: {status}"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "etcd on {client} did not listen in {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        // Something answered on the client port; if it was not this etcd (another
        // process bound the port first), this one exits on its failed bind.
        std::thread::sleep(Duration::from_millis(100));
        if process.has_exited() {
            return Err(format!("etcd on {client} exited after its port answered"));
        }
        self.process = Some(process);
        Ok(())
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
