//! The Go client (`clients/go`) against a three-host cluster: the scenario's first
//! half runs (topic and queues with three replicas, produce, group consume and
//! commit, queue send, dead-lettering), the test kills the host leading the queue
//! while the Go test waits, then lets it go on with the same client, which follows
//! the new leaders by itself.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::start_formed;
use ferry_e2e::ClusterOptions;

/// How long the Go test may run, compiling included.
const GO_TEST_TIMEOUT: Duration = Duration::from_secs(900);

/// `go` from PATH, else where the Go tarball installs it.
fn go() -> PathBuf {
    let installed = Path::new("/usr/local/go/bin/go");
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("go").is_file()));
    if !on_path && installed.is_file() {
        installed.to_owned()
    } else {
        PathBuf::from("go")
    }
}

#[tokio::test]
async fn the_go_client_follows_leaders_through_a_host_kill() {
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
    let resume = cluster.dir().join("go-resume");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new("timeout")
        .args(["-s", "KILL", &GO_TEST_TIMEOUT.as_secs().to_string()])
        .arg(go())
        .args(["test", "-count=1", "-v", "-run", "TestScenario", "."])
        .current_dir(repo.join("clients/go"))
        .env("FERRY_SERVERS", servers.join(","))
        .env("FERRY_REPLICAS", "3")
        .env("FERRY_RESUME_FILE", &resume)
        .env("CI", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("run go test: {err}"));
    let (sender, lines) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
    }
    drop(sender);
    let mut printed = Vec::new();
    let mut wait_for = |wanted: &str| loop {
        match lines.recv_timeout(GO_TEST_TIMEOUT) {
            Ok(line) => {
                let found = line.contains(wanted);
                printed.push(line);
                if found {
                    return;
                }
            }
            Err(_) => panic!("the Go test never printed {wanted:?}: {printed:#?}"),
        }
    };
    wait_for("consumed the 30 before messages as group readers");
    wait_for("paused");

    common::kill_queue_leader(&mut cluster, &mut etcd, "go-jobs", "go-events", 3).await;
    std::fs::write(&resume, b"go").expect("resume the Go test");
    wait_for("consumed the 30 after messages as group readers");
    wait_for("--- PASS: TestScenario");
    let status = child.wait().expect("the Go test ends");
    assert!(status.success(), "go test failed: {printed:#?}");
}
