//! The chart's dashboards and alert rules name only metrics Ferry exports: a cluster
//! of three hosts with TLS on the client and peer listeners gets a replicated topic
//! that a consumer group reads and commits, and a queue that dead-letters a message;
//! then every host's `/metrics` is scraped, and every metric the dashboards
//! (`charts/ferry/dashboards/*.json`) and the PrometheusRule
//! (`charts/ferry/templates/prometheusrule.yaml`) name must be in it, with the type
//! its suffix implies (`_total` a counter; `_bucket`, `_sum`, `_count` a histogram).
//!
//! The operator's metrics (`ferry_operator_*`) are checked against the operator's
//! table in docs/operations.md, not a running operator: that needs a Kubernetes API
//! server, and `operator/tests` keeps the operator's exposition to that table. The
//! gateway is not scraped: it exports nothing the hosts do not (RPC, process and
//! certificate metrics).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::start_formed;
use ferry_e2e::gateway::Gateway;
use ferry_e2e::pki::{Pki, arg as path};
use ferry_e2e::{ClusterOptions, ferryctl_binary, http_get};

const TOPIC: &str = "watched";
const GROUP: &str = "billing";
const QUEUE: &str = "work";
const DEAD_LETTERS: &str = "work-dlq";
const FERRYCTL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a received, never acked message to reach the dead-letter queue.
const DEAD_LETTER_DEADLINE: Duration = Duration::from_secs(30);

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Runs `ferryctl --server <server> args…` with `stdin`; its stdout, or a panic
/// saying what failed.
fn ferryctl(server: &str, args: &[&str], stdin: &str) -> String {
    let mut all = vec!["--server".to_owned(), server.to_owned()];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    let output: Output = ferry_e2e::run_bounded(&ferryctl_binary(), &all, stdin, FERRYCTL_TIMEOUT);
    assert!(
        output.status.success(),
        "ferryctl {all:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The PromQL of every panel and variable of every dashboard: the strings under
/// `expr`, `query` and `definition`.
fn dashboard_queries() -> Vec<(String, String)> {
    let dir = repo_path("charts/ferry/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read charts/ferry/dashboards")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|file| file.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "dashboards: {files:?}");
    let mut queries = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a dashboard");
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{} is not JSON: {err}", file.display()));
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        collect_queries(&json, &mut |query| {
            queries.push((name.clone().unwrap_or_default(), query.to_owned()));
        });
    }
    queries
}

fn collect_queries(value: &serde_json::Value, found: &mut impl FnMut(&str)) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", serde_json::Value::String(query)) => {
                        found(query)
                    }
                    _ => collect_queries(value, found),
                }
            }
        }
        serde_json::Value::Array(items) => {
            items.iter().for_each(|item| collect_queries(item, found))
        }
        _ => {}
    }
}

/// The `expr:` of every alert in the chart's PrometheusRule template (PromQL with
/// Helm's `{{ … }}` for thresholds, which hold no metric names).
fn rule_expressions() -> Vec<(String, String)> {
    let file = repo_path("charts/ferry/templates/prometheusrule.yaml");
    let text = std::fs::read_to_string(&file).expect("read the PrometheusRule template");
    let exprs: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .map(|expr| ("prometheusrule.yaml".to_owned(), expr.trim().to_owned()))
        .collect();
    assert!(exprs.len() >= 13, "alert expressions: {exprs:?}");
    exprs
}

/// The metric names a PromQL expression (or a Grafana `label_values(…)` query)
/// reads: its identifiers starting `ferry_` or `process_`, leaving out label names
/// (inside `{…}`, in `by`/`without`/`on`/`ignoring`/`group_*` lists, the label of
/// `label_values`), string literals, ranges `[…]` and `$variables`. Rough, as PromQL
/// goes, but enough for what the chart writes.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut braces, mut brackets) = (0usize, 0usize);
    // Paren depth at which a label list (after `by` and the like) closes.
    let mut label_list: Option<usize> = None;
    let mut parens = 0usize;
    let mut skip_next_list = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                continue;
            }
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            '(' => {
                parens += 1;
                if skip_next_list {
                    label_list = Some(parens);
                    skip_next_list = false;
                }
            }
            ')' => {
                if label_list == Some(parens) {
                    label_list = None;
                }
                parens = parens.saturating_sub(1);
            }
            _ => {}
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let variable = start > 0 && chars[start - 1] == '$';
            let rest: String = chars[i..].iter().collect();
            let rest = rest.trim_start();
            if matches!(
                word.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                skip_next_list = rest.starts_with('(');
            } else if !variable
                && braces == 0
                && brackets == 0
                && label_list.is_none()
                // The label argument of `label_values(metric, label)`.
                && !(rest.starts_with(')') && expr.trim_start().starts_with("label_values(")
                    && chars[..start].iter().rev().find(|c| !c.is_whitespace()) == Some(&','))
                && (word.starts_with("ferry_") || word.starts_with("process_"))
            {
                names.insert(word);
            }
            continue;
        }
        i += 1;
    }
    names
}

/// What a metric name needs of the exposition's families (`# TYPE family type`):
/// `Err` saying why it is not exported.
fn check_name(name: &str, families: &BTreeMap<String, String>) -> Result<(), String> {
    let typed = |family: &str, wanted: &[&str]| -> Result<(), String> {
        match families.get(family) {
            Some(kind) if wanted.contains(&kind.as_str()) => Ok(()),
            Some(kind) => Err(format!(
                "{name}: family {family} is a {kind}, not {wanted:?}"
            )),
            None => Err(format!("{name}: no family {family} is exported")),
        }
    };
    if let Some(family) = name.strip_suffix("_total") {
        return typed(family, &["counter"]);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(family) = name.strip_suffix(suffix)
            && families.contains_key(family)
        {
            return typed(family, &["histogram", "summary"]);
        }
    }
    typed(name, &["gauge", "unknown", "info", "stateset"])
}

/// `# TYPE` lines of an exposition: family name → type.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Host metrics with no series until something goes wrong (a request fails, a
/// quota throttles a caller): checked against docs/operations.md's table, which
/// `broker/tests/observability.rs` holds to what hosts export.
const ONLY_AFTER_AN_EVENT: &[&str] = &["ferry_request_errors", "ferry_quota_throttled"];

/// The metrics docs/operations.md's tables list whose name starts with `prefix`:
/// family → type.
fn documented_families(prefix: &str) -> BTreeMap<String, String> {
    let docs = std::fs::read_to_string(repo_path("docs/operations.md")).expect("read the docs");
    docs.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter(|rest| rest.starts_with(prefix))
        .filter_map(|rest| {
            let (name, rest) = rest.split_once("` | ")?;
            let kind = rest.split_whitespace().next()?;
            Some((name.to_owned(), kind.to_owned()))
        })
        .collect()
}

/// Every sample line of `exposition` whose name is `name` and that holds `labels`.
fn samples<'a>(exposition: &'a str, name: &str, labels: &[&str]) -> Vec<&'a str> {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels.iter().all(|label| line.contains(label))
        })
        .collect()
}

fn sample_value(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no value in {line:?}"))
}

#[test]
fn the_name_check_knows_a_misspelled_metric() {
    let families = families(
        "# TYPE ferry_queue_messages gauge\n# TYPE ferry_fsync_seconds histogram\n\
         # TYPE ferry_queue_events counter\n",
    );
    let names = metric_names(
        r#"sum by (queue, ferry_cluster) (ferry_queue_mesages{namespace=~"$ns", kind="dead_letter"}) + ferry_queue_events_total"#,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "ferry_queue_events_total".to_owned(),
            "ferry_queue_mesages".to_owned()
        ])
    );
    assert!(check_name("ferry_queue_mesages", &families).is_err());
    assert!(check_name("ferry_queue_events_total", &families).is_ok());
    assert!(
        check_name("ferry_queue_events", &families).is_err(),
        "a counter without _total"
    );
    assert!(check_name("ferry_fsync_seconds_bucket", &families).is_ok());
    assert!(check_name("ferry_queue_messages_total", &families).is_err());
    assert_eq!(
        metric_names(
            r#"label_values(ferry_log_end_offset{ferry_cluster=~"$cluster"}, ferry_cluster)"#
        ),
        BTreeSet::from(["ferry_log_end_offset".to_owned()])
    );
}

#[tokio::test]
async fn dashboards_and_alerts_name_only_metrics_a_running_cluster_exports() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // The client listeners' CA and the peer listeners' CA, as a deployment has them.
    let ca = Pki::new(dir.path(), "ferry-ca");
    let peer_ca = Pki::new(dir.path(), "peer-ca");
    let hosts_cert = ca.issue_for_loopback("hosts");
    let peers_cert = peer_ca.issue_for_loopback("peers");
    let mut extra_args = hosts_cert.listener_args(None);
    extra_args.extend(peers_cert.peer_listener_args(&peer_ca.ca()));
    let (cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 3,
        extra_args,
        ..ClusterOptions::default()
    })
    .await;
    // ferryctl reaches the TLS hosts through a plaintext gateway that dials them over
    // TLS, as the TLS scenarios do.
    let ca_file = path(&ca.ca());
    let gateway = Gateway::start(
        &cluster.etcd_endpoint(),
        "127.0.0.1",
        &["--host-tls-ca-file", &ca_file],
    );
    let server = gateway.url();

    ferryctl(
        &server,
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "2",
            "--replication-factor",
            "3",
            "--durability",
            "fsync",
        ],
        "",
    );
    let lines: String = (0..20).map(|n| format!("message {n}\n")).collect();
    ferryctl(&server, &["topic", "produce", TOPIC], &lines);
    let consumed = ferryctl(
        &server,
        &[
            "topic",
            "consume",
            TOPIC,
            "--group",
            GROUP,
            "--from-beginning",
            "--max",
            "20",
            "--timeout-ms",
            "5000",
        ],
        "",
    );
    assert_eq!(consumed.lines().count(), 20, "consumed: {consumed}");
    // More than the group read: a lag to show.
    ferryctl(&server, &["topic", "produce", TOPIC], "late 1\nlate 2\n");

    ferryctl(
        &server,
        &["queue", "create", DEAD_LETTERS, "--replication-factor", "3"],
        "",
    );
    ferryctl(
        &server,
        &[
            "queue",
            "create",
            QUEUE,
            "--replication-factor",
            "3",
            "--dead-letter",
            DEAD_LETTERS,
            "--max-receive-count",
            "1",
            "--visibility-timeout",
            "0.5s",
        ],
        "",
    );
    ferryctl(
        &server,
        &["queue", "send", QUEUE, "--body", "never acked"],
        "",
    );
    let received = ferryctl(&server, &["queue", "receive", QUEUE, "--wait", "5s"], "");
    assert!(received.contains("never acked"), "received: {received}");

    // Scrape until the message was dead-lettered (the queue's housekeeping moves it
    // once its visibility timeout passed on its only allowed receive).
    let until = Instant::now() + DEAD_LETTER_DEADLINE;
    let expositions = loop {
        let expositions: Vec<(String, String)> = cluster
            .hosts()
            .iter()
            .map(|host| {
                let addr = host.metrics_addr().expect("hosts serve metrics");
                let text = http_get(addr, "/metrics")
                    .unwrap_or_else(|err| panic!("scrape {}: {err}", host.host_id()));
                (host.host_id().to_owned(), text)
            })
            .collect();
        let dead_lettered: f64 = expositions
            .iter()
            .flat_map(|(_, text)| {
                samples(
                    text,
                    "ferry_queue_events_total",
                    &[&format!("queue=\"{QUEUE}\""), "kind=\"dead_lettered\""],
                )
            })
            .map(sample_value)
            .fold(0.0, f64::max);
        if dead_lettered >= 1.0 {
            break expositions;
        }
        assert!(
            Instant::now() < until,
            "the message was not dead-lettered within {DEAD_LETTER_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let mut exported = BTreeMap::new();
    for (_, text) in &expositions {
        exported.extend(families(text));
    }
    let operator = documented_families("ferry_operator_");
    assert!(
        operator.len() >= 4,
        "the docs' operator table: {operator:?}"
    );
    let documented = documented_families("ferry_");
    for family in ONLY_AFTER_AN_EVENT {
        if let Some(kind) = documented.get(*family) {
            exported
                .entry((*family).to_owned())
                .or_insert_with(|| kind.clone());
        }
    }

    let mut missing = Vec::new();
    let mut checked = BTreeSet::new();
    for (file, query) in dashboard_queries().into_iter().chain(rule_expressions()) {
        for name in metric_names(&query) {
            let families = if name.starts_with("ferry_operator_") {
                &operator
            } else {
                &exported
            };
            if let Err(why) = check_name(&name, families) {
                missing.push(format!("{file}: {why}\n    in {query}"));
            }
            checked.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "metrics named but not exported:\n{}",
        missing.join("\n")
    );
    assert!(checked.len() >= 40, "checked only {checked:?}");

    // What the traffic above must have produced, not only declared: the series the
    // dashboards and alerts are about.
    let all: String = expositions.iter().map(|(_, text)| text.as_str()).collect();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs_f64();
    for listener in ["client", "peer"] {
        let label = format!("listener=\"{listener}\"");
        let expiry = samples(
            &all,
            "ferry_tls_certificate_expiry_timestamp_seconds",
            &[&label],
        );
        assert_eq!(
            expiry.len(),
            3,
            "one {listener} certificate per host: {expiry:?}"
        );
        for line in expiry {
            assert!(sample_value(line) > now_s, "expired already: {line}");
        }
    }
    let topic = format!("topic=\"{TOPIC}\"");
    for (name, labels) in [
        ("ferry_log_poisoned", vec![topic.as_str()]),
        ("ferry_log_lost_records", vec![topic.as_str()]),
        (
            "ferry_consumer_group_lag",
            vec![topic.as_str(), "group=\"billing\""],
        ),
        ("ferry_queue_log_poisoned", vec!["queue=\"work\""]),
        (
            "ferry_queue_messages",
            vec!["queue=\"work-dlq\"", "kind=\"visible\""],
        ),
    ] {
        assert!(
            !samples(&all, name, &labels).is_empty(),
            "no {name} sample with {labels:?}"
        );
    }
    let poisoned: f64 = samples(&all, "ferry_log_poisoned", &[&topic])
        .into_iter()
        .map(sample_value)
        .sum();
    assert_eq!(poisoned, 0.0, "no log of a healthy cluster is poisoned");
    let lag: f64 = samples(
        &all,
        "ferry_consumer_group_lag",
        &[&topic, "group=\"billing\""],
    )
    .into_iter()
    .map(sample_value)
    .fold(0.0, f64::max);
    assert!(
        lag >= 1.0,
        "the group is behind the two late messages: {lag}"
    );
}
