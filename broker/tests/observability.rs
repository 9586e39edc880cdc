//! What operators and standard tools see: Prometheus metrics, gRPC health checking
//! and server reflection.

mod common;

use common::{BrokerProcess, batch, channel, create_topic, topics};
use ferry_proto::v1 as pb;
use ferry_proto::v1::group_service_client::GroupServiceClient;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// The value of the first sample line starting with `prefix`.
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_reflection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start_with(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let ch = channel(&broker.url()).await;
    create_topic(&ch, "watched", 2, pb::Durability::Fsync).await;
    for _ in 0..3 {
        topics(&ch)
            .produce(pb::ProduceRequest {
                topic: "watched".into(),
                batches: vec![pb::PartitionBatch {
                    partition: Some(1),
                    records: batch(&[b"one".to_vec(), b"two".to_vec()], None).into(),
                }],
                messages: vec![],
                ..pb::ProduceRequest::default()
            })
            .await
            .expect("produce");
    }
    GroupServiceClient::new(ch.clone())
        .commit_offsets(pb::CommitOffsetsRequest {
            group: "readers".into(),
            member_id: String::new(),
            offsets: vec![pb::OffsetCommit {
                topic: "watched".into(),
                partition: 1,
                offset: 2,
                metadata: String::new(),
            }],
        })
        .await
        .expect("commit");
    let _ = topics(&ch)
        .produce(pb::ProduceRequest {
            topic: "missing".into(),
            batches: vec![],
            messages: vec![pb::Message {
                value: b"x".to_vec().into(),
                ..Default::default()
            }],
            ..pb::ProduceRequest::default()
        })
        .await;

    let metrics = common::scrape(broker.metrics_addr.expect("metrics enabled"));
    assert_eq!(
        sample(&metrics, "ferry_produce_messages_total{topic=\"watched\"}"),
        6.0
    );
    assert!(sample(&metrics, "ferry_produce_bytes_total{topic=\"watched\"}") > 0.0);
    assert_eq!(
        sample(
            &metrics,
            "ferry_log_end_offset{topic=\"watched\",partition=\"1\"}"
        ),
        6.0
    );
    assert_eq!(
        sample(
            &metrics,
            "ferry_consumer_group_lag{group=\"readers\",topic=\"watched\",partition=\"1\"}"
        ),
        4.0
    );
    assert!(
        sample(&metrics, "ferry_fsync_seconds_count") >= 3.0,
        "fsyncs are timed"
    );
    assert!(sample(&metrics, "ferry_produce_latency_seconds_count") >= 3.0);
    assert_eq!(
        sample(
            &metrics,
            "ferry_request_errors_total{method=\"Produce\",code=\"NotFound\"}"
        ),
        1.0
    );

    // Every call by method and code, in the gRPC conventions: the missing topic's
    // produce is NOT_FOUND, the others OK, and each call is timed.
    let produce = "grpc_service=\"ferry.v1.TopicService\",grpc_method=\"Produce\"";
    assert_eq!(
        sample(
            &metrics,
            &format!("ferry_grpc_server_handled_total{{{produce},grpc_code=\"NOT_FOUND\"}}")
        ),
        1.0
    );
    assert!(
        sample(
            &metrics,
            &format!("ferry_grpc_server_handled_total{{{produce},grpc_code=\"OK\"}}")
        ) >= 3.0
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("ferry_grpc_server_handling_seconds_count{{{produce}}}")
        ),
        sample(
            &metrics,
            &format!("ferry_grpc_server_started_total{{{produce}}}")
        )
    );

    // The standard process metrics, without Ferry's prefix.
    assert!(sample(&metrics, "process_resident_memory_bytes ") > 0.0);
    assert!(sample(&metrics, "process_open_fds ") > 0.0);
    assert!(sample(&metrics, "process_max_fds ") >= sample(&metrics, "process_open_fds "));
    // CPU time counts in clock ticks: a young process may not have used one yet.
    assert!(sample(&metrics, "process_cpu_seconds_total ") >= 0.0);
    assert!(sample(&metrics, "process_start_time_seconds ") > 1.6e9);

    // docs/operations.md lists every metric a host exports.
    let documented = include_str!("../../docs/operations.md");
    for family in metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
    {
        assert!(
            documented.contains(&format!("| `{family}` |")),
            "{family} is exported but not in docs/operations.md"
        );
    }

    // The kubelet's HTTP probes (Kubernetes' gRPC probes cannot speak TLS).
    let metrics_addr = broker.metrics_addr.expect("metrics enabled");
    for (path, answer) in [("/health", "ok"), ("/ready", "ready")] {
        let response = common::http_get(metrics_addr, path);
        assert!(
            response.starts_with("HTTP/1.1 200") && response.ends_with(answer),
            "GET {path}: {response}"
        );
    }

    let health = HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "ferry.v1.TopicService".into(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("stream")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "ferry.v1.TopicService",
        "ferry.v1.AdminService",
        "ferry.v1.GroupService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} not in {names:?}"
        );
    }
}
