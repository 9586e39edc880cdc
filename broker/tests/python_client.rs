//! The Python client (`clients/python`) against a standalone broker: its unit tests,
//! its checked-in stubs matching the protos, and the whole scenario (produce,
//! group consume and commit, queue send/receive/ack, dead-lettering, a missing
//! queue's error) in one go. `e2e/tests/python_client.rs` runs the scenario against
//! a three-host cluster with a host killed halfway.

mod common;

use std::ffi::OsStr;

use common::{BrokerProcess, python};

fn run(args: &[&str]) -> String {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let (ok, printed) = python(&args);
    assert!(
        ok,
        "python3 {args:?} failed (./.ci/setup test installs grpcio): {printed}"
    );
    printed
}

#[test]
fn the_stubs_are_current_and_the_unit_tests_pass() {
    let printed = run(&["clients/python/generate.py", "--check"]);
    assert!(printed.contains("stubs up to date"), "{printed}");
    let printed = run(&["-m", "unittest", "discover", "-s", "clients/python/tests"]);
    assert!(printed.contains("OK"), "{printed}");
}

#[test]
fn the_python_client_produces_consumes_and_uses_queues_on_a_standalone_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path());
    let server = broker.addr.to_string();
    let printed = run(&[
        "clients/python/tests/scenario.py",
        "--servers",
        &server,
        "--phase",
        "all",
    ]);
    for line in [
        "consumed the 30 before messages as group readers",
        "dead-lettered poison after 1 receive",
        "missing queue: QUEUE_NOT_FOUND",
        "a produce whose answer was lost: stored once (idempotent), twice (plain)",
        "consumed the 30 after messages as group readers",
        "received and acked 5 jobs",
        "ok all",
    ] {
        assert!(printed.contains(line), "{line:?} missing: {printed}");
    }
}

#[test]
fn the_readmes_python_example_runs_as_written() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split_once("## From Python")
        .expect("README.md has a \"From Python\" section")
        .1;
    let code = section
        .split_once("python3 - <<'PY'\n")
        .and_then(|(_, rest)| rest.split_once("\nPY\n"))
        .expect("the section holds a python3 heredoc")
        .0;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path());
    // The example talks to the standalone default address; this broker has its own.
    let code = code.replace("127.0.0.1:7070", &broker.addr.to_string());
    let printed = run(&["-c", &code]);
    let lines: Vec<&str> = printed.lines().filter(|l| l.contains("hello")).collect();
    assert_eq!(lines.len(), 10, "{printed}");
}
