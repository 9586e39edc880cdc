//! The Go client (`clients/go`) against a standalone broker: its stubs match the
//! protos, its unit tests pass, and its scenario (produce, group consume and
//! commit, queue send/receive/ack, dead-lettering, a missing queue's error) runs.
//! `e2e/tests/go_client.rs` runs the scenario against three hosts with a leader
//! killed halfway.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::BrokerProcess;

fn clients_go() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/go")
}

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

/// Runs `program args…` in clients/go with `env`; panics with its output on failure.
fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new("timeout")
        .args(["-s", "KILL", "900"])
        .arg(program)
        .args(args)
        .current_dir(clients_go())
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|err| panic!("run {}: {err}", program.display()));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{} {args:?} failed: {printed}",
        program.display()
    );
    printed
}

#[test]
fn the_go_stubs_are_current_and_the_go_client_works_against_a_standalone_broker() {
    let printed = run(&clients_go().join("generate.sh"), &["--check"], &[]);
    assert!(printed.contains("stubs up to date"), "{printed}");
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path());
    let server = broker.addr.to_string();
    let printed = run(
        &go(),
        &["test", "-count=1", "-v", "./..."],
        &[("FERRY_SERVERS", &server), ("CI", "true")],
    );
    for line in [
        "--- PASS: TestKeysMapToPartitionsAsTheBrokerMapsThem",
        "--- PASS: TestErrorsAreReadFromTheStandardDetails",
        "a produce whose answer was lost: stored once (idempotent), twice (plain)",
        "consumed the 30 after messages as group readers",
        "scenario: ok",
        "--- PASS: TestScenario",
    ] {
        assert!(printed.contains(line), "{line:?} missing: {printed}");
    }
}
