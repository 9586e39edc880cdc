//! The Python client (`clients/python`) against a three-host cluster: the scenario's
//! first half (topic and queues with three replicas, produce, group consume and
//! commit, queue send, dead-lettering) runs, then, while the same client waits, the
//! host leading the queue is killed; the second half (produce, the group resumes
//! from its commit, the queued messages are received and acked) runs on with that
//! client, which follows the new leaders by itself.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::start_formed;
use ferry_e2e::ClusterOptions;

/// Where `.ci/setup test` installs grpcio, grpcio-tools and grpcio-status.
fn python_deps() -> PathBuf {
    std::env::var_os("FERRY_PYTHON_DEPS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/ferry/python")
        },
        PathBuf::from,
    )
}

/// How long the scenario may run.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(600);

/// The scenario, started against `servers`: it pauses after its first half.
struct Scenario {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    printed: Vec<String>,
}

impl Scenario {
    fn start(servers: &str) -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = std::env::join_paths([repo.join("clients/python"), python_deps()])
            .expect("a PYTHONPATH");
        let mut child = Command::new("timeout")
            .args([
                "-s",
                "KILL",
                &SCENARIO_TIMEOUT.as_secs().to_string(),
                "python3",
            ])
            .arg(repo.join("clients/python/tests/scenario.py"))
            .args([
                "--servers",
                servers,
                "--phase",
                "all",
                "--replicas",
                "3",
                "--pause",
            ])
            .env("PYTHONPATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("run python3: {err}"));
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        Self {
            child,
            lines,
            printed: Vec::new(),
        }
    }

    /// Waits for a line containing `wanted`; panics with everything printed if the
    /// scenario ends or times out first.
    fn wait_for(&mut self, wanted: &str) {
        loop {
            match self.lines.recv_timeout(SCENARIO_TIMEOUT) {
                Ok(line) => {
                    let found = line.contains(wanted);
                    self.printed.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "the Python scenario never printed {wanted:?} (./.ci/setup test installs \
                     grpcio): {:#?}",
                    self.printed
                ),
            }
        }
    }

    fn resume(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("resume the scenario");
        stdin.flush().expect("resume the scenario");
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_python_client_follows_leaders_through_a_host_kill() {
    let (mut cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 3,
        ..ClusterOptions::default()
    })
    .await;
    let servers: Vec<String> = cluster
        .hosts()
        .iter()
        .map(|host| host.addr().to_string())
        .collect();
    let servers = servers.join(",");
    let mut scenario = Scenario::start(&servers);
    scenario.wait_for("consumed the 30 before messages as group readers");
    scenario.wait_for("paused");

    common::kill_queue_leader(&mut cluster, &mut etcd, "py-jobs", "py-events", 3).await;

    // The same client, whose remembered leaders include the dead host, goes on.
    scenario.resume();
    scenario.wait_for("consumed the 30 after messages as group readers");
    scenario.wait_for("received and acked 5 jobs");
    scenario.wait_for("ok all");
}
