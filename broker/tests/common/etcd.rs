//! A real etcd server for tests: Debian's `etcd-server` (installed by `./.ci/test`),
//! on 127.0.0.1 with its own data directory, stopped when the handle drops and in any
//! case by `timeout` after ten minutes, so a killed test leaves nothing running.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest an etcd test server lives, even if the test that started it is killed.
const LIFETIME: &str = "600";
/// How long etcd may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the etcd binary is: `FERRY_ETCD`, else `etcd` on the path, else Debian's.
fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FERRY_ETCD") {
        return PathBuf::from(path);
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// One single-member etcd cluster.
pub struct EtcdProcess {
    child: Option<Child>,
    data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl EtcdProcess {
    /// Starts etcd with its data in `data_dir`, waiting until it accepts connections.
    pub fn start(data_dir: &Path) -> Self {
        let mut etcd = Self {
            child: None,
            data_dir: data_dir.to_owned(),
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.restart();
        etcd
    }

    /// The client URL brokers and stores connect to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts it again (after [`EtcdProcess::kill`]) on the same ports and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("timeout")
            .arg(LIFETIME)
            .arg(etcd_binary())
            .args(["--name", "ferry-test"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("ferry-test={peer}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it: SIGTERM to `timeout`, which passes it on to etcd.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `timeout` forwards SIGTERM to etcd; wait so the ports are free again.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
