//! `ferryctl` habits against a real host. `group reset-offsets`: a dry run shows the plan and
//! moves nothing; `--execute` commits it (to the earliest offset, shifted back,
//! clamped to what is stored) and the next reader starts there; a group with a
//! member reading is refused, saying why. Benches delete the topic they created
//! unless `--keep`. Ctrl-C (SIGINT) on `topic consume --group` commits what was
//! printed and leaves the group.

mod common;

use std::process::Output;
use std::time::Duration;

use common::start_formed;
use ferry_e2e::{ClusterOptions, ferryctl_binary};
use serde_json::Value;

/// Longest one ferryctl command may run.
const FERRYCTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A ferryctl process that must not outlive the test, even when it fails.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ferryctl(server: &str, args: &[&str], stdin: &str) -> Output {
    let mut all = vec!["--server".to_owned(), server.to_owned()];
    all.extend(args.iter().map(|&a| a.to_owned()));
    ferry_e2e::run_bounded(&ferryctl_binary(), &all, stdin, FERRYCTL_TIMEOUT)
}

fn ok(server: &str, args: &[&str], stdin: &str) -> String {
    let output = ferryctl(server, args, stdin);
    assert!(
        output.status.success(),
        "ferryctl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The group's committed offset per partition of `topic`, from `group describe`.
fn committed(server: &str, group: &str) -> Vec<u64> {
    let described: Value = serde_json::from_str(&ok(
        server,
        &["--output", "json", "group", "describe", group],
        "",
    ))
    .expect("JSON");
    described["lag"]
        .as_array()
        .expect("lag")
        .iter()
        .map(|p| p["committed_offset"].as_u64().expect("an offset"))
        .collect()
}

#[tokio::test]
async fn reset_offsets_plans_then_commits_and_refuses_while_members_read() {
    let (cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 1,
        ..ClusterOptions::default()
    })
    .await;
    let server = cluster.hosts()[0].addr().to_string();
    ok(
        &server,
        &["topic", "create", "ledger", "--partitions", "1"],
        "",
    );
    let lines: String = (0..10).map(|n| format!("entry-{n}\n")).collect();
    ok(&server, &["topic", "produce", "ledger"], &lines);
    ok(
        &server,
        &[
            "topic",
            "consume",
            "ledger",
            "--group",
            "audit",
            "--from-beginning",
            "--max",
            "10",
        ],
        "",
    );
    assert_eq!(committed(&server, "audit"), vec![10]);

    let plan = ok(
        &server,
        &[
            "group",
            "reset-offsets",
            "audit",
            "--topic",
            "ledger",
            "--to-earliest",
        ],
        "",
    );
    assert!(plan.contains("dry run"), "{plan}");
    assert_eq!(
        committed(&server, "audit"),
        vec![10],
        "a dry run moves nothing"
    );

    let base = ["group", "reset-offsets", "audit", "--topic", "ledger"];
    for (target, expected) in [
        (vec!["--to-earliest"], 0),
        (vec!["--to-latest"], 10),
        (vec!["--shift-by", "-4"], 6),
        (vec!["--to-offset", "99"], 10),
    ] {
        let mut args = base.to_vec();
        args.extend(target.iter().copied());
        args.push("--execute");
        ok(&server, &args, "");
        assert_eq!(committed(&server, "audit"), vec![expected], "{target:?}");
    }

    // The next reader starts where the reset put the group.
    ok(
        &server,
        &[&base[..], &["--to-offset", "7", "--execute"]].concat(),
        "",
    );
    let read = ok(
        &server,
        &[
            "topic", "consume", "ledger", "--group", "audit", "--max", "3",
        ],
        "",
    );
    assert!(
        read.contains("entry-7") && !read.contains("entry-6"),
        "{read}"
    );

    // A member reading: the offsets stay, and the refusal says why.
    let member = Running(
        std::process::Command::new(ferryctl_binary())
            .args([
                "--server", &server, "topic", "consume", "ledger", "--group", "audit",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a consumer"),
    );
    let deadline = std::time::Instant::now() + FERRYCTL_TIMEOUT;
    loop {
        let described: Value = serde_json::from_str(&ok(
            &server,
            &["--output", "json", "group", "describe", "audit"],
            "",
        ))
        .expect("JSON");
        if described["members"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the consumer never joined"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = ferryctl(
        &server,
        &[&base[..], &["--to-earliest", "--execute"]].concat(),
        "",
    );
    drop(member);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("has members"), "{said}");
}

#[tokio::test]
async fn benches_remove_the_topic_they_created_unless_kept() {
    let (cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 1,
        ..ClusterOptions::default()
    })
    .await;
    let server = cluster.hosts()[0].addr().to_string();
    let topics = |server: &str| -> Vec<String> {
        let listed: Value =
            serde_json::from_str(&ok(server, &["--output", "json", "topic", "list"], ""))
                .expect("JSON");
        listed["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .map(|t| t["name"].as_str().expect("a name").to_owned())
            .collect()
    };
    let bench = [
        "bench",
        "produce",
        "--messages",
        "2000",
        "--partitions",
        "1",
    ];
    ok(&server, &bench, "");
    assert!(topics(&server).is_empty(), "{:?}", topics(&server));
    ok(&server, &[&bench[..], &["--keep"]].concat(), "");
    let kept = topics(&server);
    assert!(kept.len() == 1 && kept[0].starts_with("bench-"), "{kept:?}");
    // A topic that existed before is never deleted.
    ok(&server, &[&bench[..], &["--topic", &kept[0]]].concat(), "");
    assert_eq!(topics(&server), kept);
}

#[tokio::test]
async fn ctrl_c_on_a_group_consumer_commits_what_was_printed_and_leaves() {
    use std::io::{BufRead, BufReader};
    let (cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 1,
        ..ClusterOptions::default()
    })
    .await;
    let server = cluster.hosts()[0].addr().to_string();
    ok(
        &server,
        &["topic", "create", "tail", "--partitions", "1"],
        "",
    );
    let mut reader = Running(
        std::process::Command::new(ferryctl_binary())
            .args([
                "--server", &server, "topic", "consume", "tail", "--group", "tailers",
            ])
            .args(["--from-beginning", "--timeout-ms", "600000"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a consumer"),
    );
    let lines: String = (0..7).map(|n| format!("line-{n}\n")).collect();
    ok(&server, &["topic", "produce", "tail"], &lines);
    let mut printed = BufReader::new(reader.0.stdout.take().expect("stdout")).lines();
    for n in 0..7 {
        let line = printed
            .next()
            .expect("a printed line")
            .expect("readable output");
        assert_eq!(line, format!("line-{n}"));
    }
    let pid = reader.0.id().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(signalled.success());
    let exited = reader.0.wait().expect("the consumer exits");
    assert!(exited.success(), "Ctrl-C is a normal end: {exited}");
    assert_eq!(committed(&server, "tailers"), vec![7]);
    let described: Value = serde_json::from_str(&ok(
        &server,
        &["--output", "json", "group", "describe", "tailers"],
        "",
    ))
    .expect("JSON");
    assert_eq!(
        described["members"],
        serde_json::json!([]),
        "left the group"
    );
}
