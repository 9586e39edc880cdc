//! A `ferry-broker gateway` process for the scenarios that go through one, under
//! `timeout` like every harness process; dropping it SIGKILLs the gateway itself (a
//! SIGKILL to `timeout` alone would leave the gateway running, orphaned).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::broker::broker_binary;
use crate::process::{self, Supervised};

const READY_PREFIX: &str = "ferry-gateway ready grpc=";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running gateway.
pub struct Gateway {
    process: Supervised,
    addr: SocketAddr,
}

impl Gateway {
    /// Starts a gateway on `ip` (any port) following the etcd at `etcd_endpoint`.
    pub fn start(etcd_endpoint: &str, ip: &str, extra_args: &[&str]) -> Self {
        Self::start_with_env(etcd_endpoint, ip, extra_args, &[])
    }

    /// Like [`Gateway::start`], with more environment variables (e.g. `OTEL_*`).
    pub fn start_with_env(
        etcd_endpoint: &str,
        ip: &str,
        extra_args: &[&str],
        env: &[(String, String)],
    ) -> Self {
        let mut command = process::command(&broker_binary());
        command
            .arg("gateway")
            .args(["--etcd", etcd_endpoint])
            .args(["--listen", &format!("{ip}:0")])
            .args(extra_args)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("FERRY_LOG").is_none() {
            command.env("FERRY_LOG", "warn");
        }
        if std::env::var_os("FERRY_LOG_FORMAT").is_none() {
            command.env("FERRY_LOG_FORMAT", "text");
        }
        let mut process = Supervised::spawn("gateway", &mut command);
        let child = process.child_mut();
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
        Self { process, addr }
    }

    /// Where clients reach it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the gateway process still runs.
    pub fn is_running(&mut self) -> bool {
        !self.process.has_exited()
    }
}
