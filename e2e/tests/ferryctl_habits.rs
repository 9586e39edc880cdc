//! `ferryctl` habits against a real host. `group reset-offsets`: a dry run shows the plan and
//! moves nothing; `--execute` commits it (to the earliest offset, shifted back,
//! clamped to what is stored) and the next reader starts there; a group with a
//! member reading is refused, saying why. Benches delete the topic they created
//! unless `--keep`, and show a progress line on a terminal only. Ctrl-C (SIGINT) on `topic consume --group` commits what was
//! printed and leaves the group; `group delete` refuses while a member reads, then
//! removes the group and its offsets. A port that answers HTTP (the metrics port) or a
//! stopped broker is named as such within seconds. `topic create` and `queue
//! create` on a cluster return once every partition is led, so a produce right
//! after finds its leader. `topic consume` reads chosen partitions from an offset
//! or a time, prints a kcat-style format, and keeps binary values exact in JSON.
//! Named contexts in a config file (`ferryctl config …`) choose the server; flags
//! override them. Keyless lines produced spread over the partitions, one each in
//! turn.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{PartitionId, read_view, start_formed};
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

/// A one-host cluster and its address.
async fn one_host() -> (ferry_e2e::Cluster, String) {
    let (cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 1,
        ..ClusterOptions::default()
    })
    .await;
    let server = cluster.hosts()[0].addr().to_string();
    (cluster, server)
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
    let (_cluster, server) = one_host().await;
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
    let (_cluster, server) = one_host().await;
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

    // Off a terminal there is no progress line; on one (a pseudo-terminal from
    // `script`), a run of a few seconds redraws one with the counts and the rate.
    let quiet = ferryctl(&server, &bench, "");
    let said = String::from_utf8_lossy(&quiet.stderr);
    assert!(!said.contains("sent "), "{said}");
    let command = format!(
        "'{}' --server {server} bench produce --duration-s 3 --partitions 1 --rate 20000",
        ferryctl_binary().display()
    );
    let on_a_terminal = ferry_e2e::run_bounded(
        std::path::Path::new("script"),
        &["-qec".to_owned(), command, "/dev/null".to_owned()],
        "",
        FERRYCTL_TIMEOUT,
    );
    let shown = String::from_utf8_lossy(&on_a_terminal.stdout);
    assert!(on_a_terminal.status.success(), "{shown}");
    assert!(
        shown.contains("s: sent ") && shown.contains("/s)"),
        "a progress line: {shown:?}"
    );
}

#[tokio::test]
async fn ctrl_c_on_a_group_consumer_commits_and_leaves_then_the_group_can_be_deleted() {
    use std::io::{BufRead, BufReader};
    let (_cluster, server) = one_host().await;
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
    // A group with a member reading is not deleted, and the refusal says why.
    let refused = ferryctl(&server, &["group", "delete", "tailers"], "");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("has members"), "{said}");

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

    // Nobody reads now: the group and its offsets go, and a new member starts from
    // its reset policy.
    let deleted = ok(&server, &["group", "delete", "tailers"], "");
    assert!(deleted.contains("deleted"), "{deleted}");
    let gone = ferryctl(&server, &["group", "describe", "tailers"], "");
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    assert!(!ok(&server, &["group", "list"], "").contains("tailers"));
    let again = ferryctl(&server, &["group", "delete", "tailers"], "");
    assert!(!again.status.success(), "a second delete finds nothing");
    let reread = ok(
        &server,
        &[
            "topic",
            "consume",
            "tail",
            "--group",
            "tailers",
            "--from-beginning",
            "--max",
            "7",
        ],
        "",
    );
    assert!(
        reread.contains("line-0"),
        "read from the start again: {reread}"
    );
}

#[test]
fn a_metrics_port_or_a_stopped_broker_is_named_within_seconds() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut broker = Running(
        std::process::Command::new(ferry_e2e::broker_binary())
            .arg("standalone")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a standalone broker"),
    );
    // "ferry-broker ready grpc=ADDR metrics=ADDR"
    let ready = BufReader::new(broker.0.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with("ferry-broker ready"))
        .expect("the broker's ready line");
    let field = |name: &str| {
        ready
            .split_whitespace()
            .find_map(|part| part.strip_prefix(name))
            .expect("an address")
            .to_owned()
    };
    let (grpc, metrics) = (field("grpc="), field("metrics="));

    let wrong = ferryctl(&metrics, &["topic", "list"], "");
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(said.contains("is it the metrics port?"), "{said}");
    assert!(
        !said.contains("https://"),
        "no TLS hint for an HTTP port: {said}"
    );

    ok(&grpc, &["topic", "list"], "");
    let pid = broker.0.id().to_string();
    let stop = |signal: &str| {
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success());
    };
    stop("-STOP");
    let silent = ferryctl(&grpc, &["topic", "list"], "");
    stop("-CONT");
    let said = String::from_utf8_lossy(&silent.stderr);
    assert!(!silent.status.success());
    assert!(said.contains("no answer from"), "{said}");
}

#[tokio::test]
async fn creates_on_a_cluster_return_once_every_partition_is_led() {
    let (cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 3,
        ..ClusterOptions::default()
    })
    .await;
    let server = cluster.hosts()[0].addr().to_string();
    let other = cluster.hosts()[2].addr().to_string();
    ok(
        &server,
        &[
            "topic",
            "create",
            "fresh",
            "--partitions",
            "6",
            "--replication-factor",
            "3",
        ],
        "",
    );
    ok(
        &server,
        &["queue", "create", "fresh-jobs", "--replication-factor", "3"],
        "",
    );
    // Read at once: the creates waited for the leaders.
    let view = read_view(&mut etcd, cluster.name())
        .await
        .expect("the view");
    for partition in 0..6 {
        let id = PartitionId::topic("fresh", partition);
        assert!(view.leader(&id).is_some(), "{id:?} has no leader yet");
    }
    assert!(view.leader(&PartitionId::queue("fresh-jobs")).is_some());
    ok(&other, &["topic", "produce", "fresh"], "right away\n");
    ok(&other, &["queue", "send", "fresh-jobs"], "right away\n");
}

#[tokio::test]
async fn consume_reads_chosen_partitions_from_an_offset_or_a_time_in_any_format() {
    use ferry_proto::v1 as pb;
    let (cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 1,
        ..ClusterOptions::default()
    })
    .await;
    let host = &cluster.hosts()[0];
    let server = host.addr().to_string();
    ok(
        &server,
        &["topic", "create", "bytes", "--partitions", "2"],
        "",
    );
    // Three messages with their own times, and a value that is not UTF-8, all on
    // the partition of key "k".
    let partition = ferry_records::partition_for_key(b"k", 2);
    let message = |value: &[u8], timestamp_ms: i64| pb::Message {
        key: Some(b"k".to_vec().into()),
        value: value.to_vec().into(),
        headers: vec![pb::Header {
            key: "h".to_owned(),
            value: b"v".to_vec().into(),
        }],
        timestamp_ms: Some(timestamp_ms),
    };
    let channel = tonic::transport::Endpoint::from_shared(host.url())
        .expect("a URL")
        .connect_lazy();
    pb::topic_service_client::TopicServiceClient::new(channel)
        .produce(pb::ProduceRequest {
            topic: "bytes".to_owned(),
            batches: vec![],
            messages: vec![
                message(b"first", 1_000),
                message(b"second", 2_000),
                message(&[0xff, 0x00, b'A'], 3_000),
            ],
            ..pb::ProduceRequest::default()
        })
        .await
        .expect("produce");
    let p = partition.to_string();
    let formatted = ok(
        &server,
        &[
            "topic",
            "consume",
            "bytes",
            "--partition",
            &p,
            "--offset",
            "1",
            "--max",
            "1",
            "--format",
            "%t/%p@%o %k=%s [%h] %T\\n",
        ],
        "",
    );
    assert_eq!(formatted, format!("bytes/{p}@1 k=second [h=v] 2000\n"));
    let from_time = ok(
        &server,
        &[
            "--output",
            "json",
            "topic",
            "consume",
            "bytes",
            "--from-timestamp",
            "2500",
            "--max",
            "1",
        ],
        "",
    );
    let record: Value = serde_json::from_str(from_time.trim()).expect("one JSON line");
    assert_eq!(record["offset"], 2, "{record}");
    assert_eq!(record["value_base64"], "/wBB", "the exact bytes: {record}");
    assert_eq!(record["headers"][0]["key"], "h", "{record}");
    let other = (1 - partition).to_string();
    let empty = ferryctl(
        &server,
        &[
            "topic",
            "consume",
            "bytes",
            "--partition",
            &other,
            "--from-beginning",
            "--timeout-ms",
            "500",
        ],
        "",
    );
    assert!(
        empty.status.success() && empty.stdout.is_empty(),
        "{empty:?}"
    );
}

#[tokio::test]
async fn named_contexts_choose_the_server_and_flags_override_them() {
    let (_cluster, server) = one_host().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("ferry/config.toml");
    let run = |args: &[&str]| {
        let output = std::process::Command::new("timeout")
            .args(["-s", "KILL", "60"])
            .arg(ferryctl_binary())
            .args(args)
            .env("FERRY_CONFIG", &config)
            .env_remove("FERRY_SERVER")
            .output()
            .expect("run ferryctl");
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    };
    let (set, said) = run(&["--server", &server, "config", "set-context", "here"]);
    assert!(set, "{said}");
    let (set, said) = run(&[
        "--server",
        "127.0.0.1:1",
        "config",
        "set-context",
        "nowhere",
    ]);
    assert!(set, "{said}");
    // The first context set became the current one: no --server needed.
    let (listed, said) = run(&["topic", "list"]);
    assert!(listed, "{said}");
    let (used, said) = run(&["config", "use-context", "nowhere"]);
    assert!(used, "{said}");
    let (listed, _) = run(&["topic", "list"]);
    assert!(!listed, "the current context points nowhere");
    let (listed, said) = run(&["--context", "here", "topic", "list"]);
    assert!(listed, "{said}");
    let (listed, said) = run(&["--server", &server, "topic", "list"]);
    assert!(listed, "a flag overrides the context: {said}");
    let (missing, said) = run(&["--context", "elsewhere", "topic", "list"]);
    assert!(
        !missing && said.contains("no context 'elsewhere'"),
        "{said}"
    );
    let (got, said) = run(&["config", "get-contexts"]);
    assert!(got && said.contains("*        nowhere"), "{said}");
    let stored = std::fs::read_to_string(&config).expect("the config file");
    assert!(stored.contains("current-context = \"nowhere\""), "{stored}");
}

#[tokio::test]
async fn keyless_lines_spread_over_the_partitions() {
    let (_cluster, server) = one_host().await;
    ok(
        &server,
        &["topic", "create", "spread", "--partitions", "3"],
        "",
    );
    ok(
        &server,
        &["topic", "produce", "spread"],
        "a\nb\nc\nd\ne\nf\n",
    );
    let read = ok(
        &server,
        &[
            "topic",
            "consume",
            "spread",
            "--from-beginning",
            "--max",
            "6",
            "--format",
            "%p\\n",
        ],
        "",
    );
    let mut per_partition = [0; 3];
    for line in read.lines() {
        per_partition[line.parse::<usize>().expect("a partition")] += 1;
    }
    assert_eq!(per_partition, [2, 2, 2], "{read}");
}
