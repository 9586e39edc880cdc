//! Log lines as operators read them: off a terminal (a pod, a file, a pipe) one JSON
//! object per line by default, with the event's fields written plainly (addresses,
//! not `Some(…)`); `--log-format text` gives text lines without colour codes.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Runs a standalone broker until it is ready, stops it with SIGTERM, and returns
/// what it wrote to stderr.
fn logs_of_a_run(dir: &std::path::Path, extra: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-broker"))
        .arg("standalone")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(extra)
        .env("FERRY_LOG", "info")
        .env_remove("FERRY_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry-broker");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("ferry-broker ready") {
                let _ = tx.send(());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(30));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let _ = child.wait();
    assert!(ready.is_ok(), "the broker never became ready: {stderr}");
    stderr
}

#[test]
fn off_a_terminal_every_line_is_json_with_plain_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = logs_of_a_run(dir.path(), &[]);
    let events: Vec<Value> = logs
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect();
    for event in &events {
        for field in ["timestamp", "level", "target"] {
            assert!(event[field].is_string(), "{field} missing: {event}");
        }
        assert!(event["fields"]["message"].is_string(), "{event}");
    }
    let ready = events
        .iter()
        .find(|e| e["fields"]["message"] == "ferry broker ready")
        .unwrap_or_else(|| panic!("no ready event in {logs}"));
    for field in ["grpc", "metrics"] {
        let address = ready["fields"][field].as_str().expect("an address");
        assert!(
            address.parse::<std::net::SocketAddr>().is_ok(),
            "{field} = {address:?}"
        );
    }
    assert!(!logs.contains('\u{1b}'), "no colour codes: {logs}");
}

#[test]
fn text_lines_carry_no_colour_codes_off_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = logs_of_a_run(dir.path(), &["--log-format", "text"]);
    assert!(logs.contains("ferry broker ready"), "{logs}");
    assert!(!logs.trim_start().starts_with('{'), "{logs}");
    assert!(!logs.contains('\u{1b}'), "no colour codes: {logs}");
    assert!(!logs.contains("Some("), "options written plainly: {logs}");
}

#[test]
fn a_data_directory_short_of_space_is_warned_about_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Every file system has less than 100 % free: the warning comes at the first check.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-broker"))
        .arg("standalone")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .args(["--disk-warn-free-percent", "100"])
        .args(["--retention-check-interval-ms", "50"])
        .env("FERRY_LOG", "info")
        .env("FERRY_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry-broker");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut warnings = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Several checks go by (one each 50 ms) while we wait: one warning only.
    while std::time::Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) else {
            if !warnings.is_empty() {
                break;
            }
            continue;
        };
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if event["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("data directory nearly full"))
        {
            warnings.push(event);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let event = &warnings[0];
    assert_eq!(event["level"], "WARN");
    assert_eq!(event["fields"]["threshold_percent"], 100);
    assert!(event["fields"]["free_bytes"].as_u64().is_some(), "{event}");
}
