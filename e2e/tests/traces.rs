//! Traces across real processes: `ferryctl` produces through a gateway to a topic
//! replicated on three hosts, every process exporting spans over OTLP/gRPC to a
//! collector this test serves with the OpenTelemetry protobuf definitions. The
//! collector must receive one connected trace — ferryctl's command, its Produce
//! call, the gateway's server and client spans, the leader's server span — and the
//! followers' replica fetch spans for the topic; then `ferryctl topic consume`
//! exports a processing span per message that links to the producer's span, carried
//! across the broker in the messages' `traceparent` header. A queue's messages
//! carry it in their attributes the same way. A collector serving TLS receives
//! spans from a process trusting its CA through `OTEL_EXPORTER_OTLP_CERTIFICATE`.

mod common;

use std::time::Duration;

use common::otlp::{Collector, Received, otel_env};
use common::start_formed;
use ferry_e2e::ClusterOptions;
use ferry_e2e::gateway::Gateway;
use ferry_e2e::pki::Pki;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const TOPIC: &str = "traced";
const QUEUE: &str = "traced-jobs";
/// Longest a `ferryctl` command may run.
const FERRYCTL_TIMEOUT: Duration = Duration::from_secs(60);
/// This test's gateway and collector address (its IP is this test's alone).
const IP: &str = "127.0.0.65";

/// Runs `ferryctl --server <gateway> args…` exporting to the collector.
fn ferryctl(gateway: &Gateway, env: &[(String, String)], args: &[&str], stdin: &str) -> String {
    let mut all = vec!["--server", gateway.url().trim_start_matches("http://")]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    let output = ferry_e2e::run_bounded_with_env(
        &ferry_e2e::ferryctl_binary(),
        &all,
        env,
        stdin,
        FERRYCTL_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "ferryctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The chain of spans from `span` up to its trace's root, following parents.
fn ancestry<'a>(spans: &'a [Received], span: &'a Received) -> Vec<&'a Received> {
    let mut chain = vec![span];
    let mut current = span;
    while !current.span.parent_span_id.is_empty() {
        let Some(parent) = spans.iter().find(|candidate| {
            candidate.span.trace_id == current.span.trace_id
                && candidate.span.span_id == current.span.parent_span_id
        }) else {
            break;
        };
        chain.push(parent);
        current = parent;
    }
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_through_the_gateway_is_one_trace_and_its_consumer_links_to_it() {
    let collector = Collector::default();
    let collector_addr = collector.start(IP);
    let env = otel_env(collector_addr);
    let host_env = (0..3)
        .flat_map(|host| {
            env.iter()
                .map(move |(name, value)| (host, name.clone(), value.clone()))
        })
        .collect();
    let (cluster, _etcd) = start_formed(ClusterOptions {
        name: "traces".to_owned(),
        host_env,
        ..ClusterOptions::default()
    })
    .await;
    let gateway = Gateway::start_with_env(&cluster.etcd_endpoint(), IP, &[], &env);

    ferryctl(
        &gateway,
        &[],
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "1",
            "--replication-factor",
            "3",
        ],
        "",
    );
    ferryctl(
        &gateway,
        &env,
        &["topic", "produce", TOPIC],
        "one\ntwo\nthree\n",
    );

    // One trace from ferryctl through the gateway to the leader.
    let (root, leader_span) = collector
        .wait_for(
            "the leader's Produce span under ferryctl's trace",
            |spans| {
                spans
                    .iter()
                    .filter(|r| {
                        r.is(
                            "ferry-broker",
                            "ferry.v1.TopicService/Produce",
                            SpanKind::Server,
                        )
                    })
                    .find_map(|leader| {
                        let chain = ancestry(spans, leader);
                        let root = *chain.last()?;
                        (root.service == "ferryctl" && root.span.name == "ferryctl topic produce")
                            .then(|| {
                                (
                                    root.clone(),
                                    chain
                                        .iter()
                                        .map(|r| (*r).clone())
                                        .collect::<Vec<Received>>(),
                                )
                            })
                    })
            },
        )
        .await;
    let path: Vec<(String, String, i32)> = leader_span
        .iter()
        .map(|r: &Received| (r.service.clone(), r.span.name.clone(), r.span.kind))
        .collect();
    let produce = "ferry.v1.TopicService/Produce".to_owned();
    assert_eq!(
        path,
        vec![
            (
                "ferry-broker".to_owned(),
                produce.clone(),
                SpanKind::Server as i32
            ),
            (
                "ferry-gateway".to_owned(),
                produce.clone(),
                SpanKind::Client as i32
            ),
            (
                "ferry-gateway".to_owned(),
                produce.clone(),
                SpanKind::Server as i32
            ),
            ("ferryctl".to_owned(), produce, SpanKind::Client as i32),
            (
                "ferryctl".to_owned(),
                "ferryctl topic produce".to_owned(),
                SpanKind::Internal as i32
            ),
        ],
        "the produce's path, leader first"
    );
    assert_eq!(
        leader_span[0].attribute("rpc.grpc.status_code").as_deref(),
        Some("0")
    );

    // The followers copied the records: each one's replica fetch spans name the
    // topic.
    collector
        .wait_for(
            "replica fetch spans of the topic from both followers",
            |spans| {
                let mut followers: Vec<String> = spans
                    .iter()
                    .filter(|r| {
                        r.service == "ferry-broker"
                            && r.span.name == "replica fetch"
                            && r.attribute("topic").as_deref() == Some(TOPIC)
                    })
                    .filter_map(|r| r.attribute("follower"))
                    .collect();
                followers.sort();
                followers.dedup();
                (followers.len() == 2).then_some(())
            },
        )
        .await;

    // The consumer's processing spans link to the producer's span.
    let consumed = ferryctl(
        &gateway,
        &env,
        &["topic", "consume", TOPIC, "--from-beginning", "--max", "3"],
        "",
    );
    assert_eq!(
        consumed.lines().collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    let links = collector
        .wait_for("three processing spans linked to the producer", |spans| {
            let linked: Vec<&Received> = spans
                .iter()
                .filter(|r| r.is("ferryctl", &format!("process {TOPIC}"), SpanKind::Consumer))
                .filter(|r| {
                    r.span.links.iter().any(|link| {
                        link.trace_id == root.span.trace_id && link.span_id == root.span.span_id
                    })
                })
                .collect();
            (linked.len() == 3).then_some(linked.len())
        })
        .await;
    assert_eq!(links, 3);

    // A queue's messages carry the sender's context in their attributes.
    ferryctl(&gateway, &[], &["queue", "create", QUEUE], "");
    ferryctl(&gateway, &env, &["queue", "send", QUEUE], "job\n");
    let sent_root = collector
        .wait_for("ferryctl queue send's trace", |spans| {
            spans
                .iter()
                .find(|r| r.service == "ferryctl" && r.span.name == "ferryctl queue send")
                .cloned()
        })
        .await;
    let received = ferryctl(
        &gateway,
        &env,
        &["queue", "receive", QUEUE, "--ack", "--max", "1"],
        "",
    );
    assert_eq!(received.trim(), "job");
    collector
        .wait_for("a queue processing span linked to the send", |spans| {
            spans
                .iter()
                .find(|r| {
                    r.is("ferryctl", &format!("process {QUEUE}"), SpanKind::Consumer)
                        && r.span.links.iter().any(|link| {
                            link.trace_id == sent_root.span.trace_id
                                && link.span_id == sent_root.span.span_id
                        })
                })
                .cloned()
        })
        .await;

    // A collector serving TLS: ferryctl trusts it through the standard CA variable.
    let dir = tempfile::tempdir().expect("a directory for the collector's CA");
    let ca = Pki::new(dir.path(), "collector-ca");
    let served = ca.issue("collector", "collector", &[&format!("IP:{IP}")]);
    let secure = Collector::default();
    let secure_addr = secure.start_tls(IP, &served.cert, &served.key);
    let secure_env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            format!("https://{secure_addr}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE".to_owned(),
            ca.ca().display().to_string(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ];
    ferryctl(&gateway, &secure_env, &["topic", "describe", TOPIC], "");
    secure
        .wait_for("ferryctl's span over TLS", |spans| {
            spans
                .iter()
                .find(|r| r.service == "ferryctl" && r.span.name == "ferryctl topic describe")
                .cloned()
        })
        .await;
    drop(gateway);
    drop(cluster);
}
