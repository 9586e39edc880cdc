//! A `ferry-broker gateway` process for the scenarios that go through one, under
//! `timeout` like every harness process, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const READY_PREFIX: &str = "ferry-gateway ready grpc=";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running gateway.
pub struct Gateway {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts a gateway on `ip` (any port) following the etcd at `etcd_endpoint`.
    pub fn start(etcd_endpoint: &str, ip: &str, extra_args: &[&str]) -> Self {
        let mut command = Command::new("timeout");
        command
            .arg("600")
            .arg(broker_binary())
            .arg("gateway")
            .args(["--etcd", etcd_endpoint])
            .args(["--listen", &format!("{ip}:0")])
            .args(extra_args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("FERRY_LOG").is_none() {
            command.env("FERRY_LOG", "warn");
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start the gateway: {err}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(READY_PREFIX) {
                    let _ = tx.send(rest.to_owned());
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[gateway] {line}");
            }
        });
        let line = ready
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|err| panic!("the gateway printed no ready line: {err}"));
        let addr = line
            .trim()
            .parse()
            .unwrap_or_else(|err| panic!("ready line {line:?}: {err}"));
        Self { child, addr }
    }

    /// Where clients reach it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The broker binary the harness uses (`FERRY_BROKER_BIN`, else the one built
/// beside the test binaries).
fn broker_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FERRY_BROKER_BIN") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("ferry-broker")))
        .filter(|path| path.is_file())
        .expect("a ferry-broker binary beside the test binaries: cargo build -p ferry-broker")
}
