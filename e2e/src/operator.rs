//! The Kubernetes operator (`ferry-operator`) as a separate process for the tests
//! against a real kube-apiserver ([`crate::kube`]): started with a kubeconfig (the
//! admin's, or one impersonating the chart's ServiceAccount) and an etcd, killed on
//! drop, its `/health` and `/metrics` on a port of 127.0.0.1 the test can scrape.
//!
//! Its output (logs on stdout, panics on stderr) is copied into the test's output
//! with an `[identity]` prefix, so it shows when the test fails. Set `FERRY_LOG` to change its log filter (default
//! `info`: leadership changes and reconciles are what a failed test needs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::process::{self, POLL_INTERVAL, Supervised};

/// How long the operator may take to answer `/health` (it connects to etcd and the
/// API server first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Ports tried before giving up, in case another process takes a free port between
/// our probe and the operator's bind.
const START_ATTEMPTS: usize = 3;
/// Longest one HTTP request to the operator may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGTERM'd operator may take to release its lease and exit.
const TERMINATE_GRACE: Duration = Duration::from_secs(20);

/// What an operator is started with.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Its identity in the leader Lease and in events (`--identity`), also the prefix
    /// of its log lines.
    pub identity: String,
    /// The kubeconfig it reads (`KUBECONFIG`).
    pub kubeconfig: PathBuf,
    /// Its other flags, `--etcd …` at least; the harness adds `--listen` and
    /// `--identity`, so these must not hold them.
    pub args: Vec<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
}

/// The operator binary: `FERRY_OPERATOR_BIN`, else the one built beside this test
/// binary, else `$CARGO_TARGET_DIR/debug`, else the workspace's `target/debug`.
pub fn operator_binary() -> PathBuf {
    crate::broker::workspace_binary("ferry-operator", "FERRY_OPERATOR_BIN", "ferry-operator")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// An operator process.
pub struct OperatorProcess {
    config: OperatorConfig,
    process: Option<Supervised>,
    addr: SocketAddr,
}

impl OperatorProcess {
    /// Starts the operator and waits until it answers `/health`.
    pub fn start(config: OperatorConfig) -> Self {
        for flag in ["--listen", "--identity"] {
            assert!(
                !config.args.iter().any(|arg| arg.starts_with(flag)),
                "the harness sets {flag}: leave it out of {:?}",
                config.args
            );
        }
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut process = spawn(&config, addr);
            match wait_healthy(&mut process, addr) {
                Ok(()) => {
                    return Self {
                        config,
                        process: Some(process),
                        addr,
                    };
                }
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "operator {} did not start (its output is above): {failures:?}",
            config.identity
        );
    }

    /// Its identity.
    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// The address of its `/health` and `/metrics`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether its process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| !p.has_exited())
    }

    /// SIGKILL: no lease release, no cleanup, as when its node dies.
    pub fn kill(&mut self) {
        // Dropping the handle SIGKILLs the program and reaps it.
        self.process = None;
    }

    /// SIGTERM and wait for it to exit (it releases its lease first); returns
    /// whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        self.process
            .take()
            .and_then(|process| process.terminate(TERMINATE_GRACE))
            .is_some_and(|status| status.success())
    }

    /// The text of `/metrics`, or why it could not be read.
    pub fn metrics(&self) -> Result<String, String> {
        http_get(self.addr, "/metrics")
    }

    /// The value of the sample named `series` exactly as exported, labels included
    /// (e.g. `ferry_operator_reconciles_total{kind="Queue"}`); `Ok(None)` when the
    /// operator exports no such sample (yet).
    pub fn metric(&self, series: &str) -> Result<Option<f64>, String> {
        let text = self.metrics()?;
        Ok(sample(&text, series))
    }
}

/// The value of `series` in Prometheus / OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

/// Spawns `ferry-operator` for `config`, listening on `listen`.
fn spawn(config: &OperatorConfig, listen: SocketAddr) -> Supervised {
    let mut command = process::command(&operator_binary());
    command
        .args(&config.args)
        .args(["--listen", &listen.to_string()])
        .args(["--identity", &config.identity])
        .env("KUBECONFIG", &config.kubeconfig)
        // Plain logs: they end up in test output, not on a terminal.
        .env("NO_COLOR", "1")
        .envs(config.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if std::env::var_os("FERRY_LOG").is_none() && !config.env.iter().any(|(k, _)| k == "FERRY_LOG")
    {
        command.env("FERRY_LOG", "info");
    }
    if std::env::var_os("FERRY_LOG_FORMAT").is_none() {
        command.env("FERRY_LOG_FORMAT", "text");
    }
    let mut process = Supervised::spawn(&format!("operator {}", config.identity), &mut command);
    // Its logs and panics go to stderr, and stdout is copied too.
    let child = process.child_mut();
    let outputs: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().expect("stdout is piped")),
        Box::new(child.stderr.take().expect("stderr is piped")),
    ];
    for output in outputs {
        let prefix = format!("[{}]", config.identity);
        std::thread::spawn(move || {
            // The test harness captures this thread's output with the test's.
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                eprintln!("{prefix} {line}");
            }
        });
    }
    process
}

/// Waits until `/health` answers `ok`, or the process exits.
fn wait_healthy(process: &mut Supervised, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if process.has_exited() {
            return Err(format!("exited before /health answered on {addr}"));
        }
        let last = match http_get(addr, "/health") {
            Ok(body) if body == "ok" => return Ok(()),
            Ok(body) => format!("answered {body:?}"),
            Err(err) => err,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "/health on {addr} not ok within {START_TIMEOUT:?}: {last}"
            ));
        }
        std::thread::sleep(POLL_INTERVAL * 5);
    }
}

/// A plain HTTP/1.0 GET (the server then closes the connection after one response
/// with no chunked encoding, so reading to the end is the whole body); the body of
/// a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let failed = |err: std::io::Error| format!("GET {path} on {addr}: {err}");
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(failed)?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .map_err(failed)?;
    stream
        .set_write_timeout(Some(HTTP_TIMEOUT))
        .map_err(failed)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(failed)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(failed)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path} on {addr}: no header end in {response:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {path} on {addr}: {status}"));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_their_exact_series() {
        let text = "# HELP ferry_operator_leading 1 while leading.\n\
                    # TYPE ferry_operator_leading gauge\n\
                    ferry_operator_leading 1\n\
                    ferry_operator_reconciles_total{kind=\"Queue\"} 7\n\
                    ferry_operator_reconciles_total{kind=\"Topic\"} 2\n\
                    # EOF\n";
        assert_eq!(sample(text, "ferry_operator_leading"), Some(1.0));
        assert_eq!(
            sample(text, "ferry_operator_reconciles_total{kind=\"Topic\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(
                text,
                "ferry_operator_reconciles_total{kind=\"BrokerCluster\"}"
            ),
            None
        );
        assert_eq!(sample(text, "ferry_operator_reconciles_total"), None);
    }
}
