//! Quotas against a real standalone broker: a principal over its produce quota is
//! refused with RESOURCE_EXHAUSTED, the retry delay in the error detail and nothing
//! written; the Rust producer, which waits that delay and sends again, is held to the
//! quota's rate (within 10 %) with every record stored once; other principals are not
//! held back; a consumer over its quota is refused the next read; the metrics show
//! each principal's bytes and the refusals.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::BrokerProcess;
use ferry_client::{
    BearerToken, Client, ClientConfig, FetchOptions, FetchTarget, Producer, ProducerConfig, Quota,
    Record, TopicPartition, TopicSettings,
};
use ferry_proto::v1 as pb;

/// The quota under test: half a MiB a second.
const RATE: u64 = 512 * 1024;
/// Payload per record.
const RECORD_BYTES: usize = 1024;
/// Records the rate test sends: about eleven seconds' worth at the quota (the issue asks
/// for the rate over 10 s).
const RECORDS: usize = 6_000;

fn path(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

async fn connect(broker: &BrokerProcess, token: &str) -> Client {
    Client::connect_with(
        &broker.url(),
        ClientConfig {
            token: Some(BearerToken::new(token).expect("a token")),
            ..ClientConfig::default()
        },
    )
    .await
    .expect("connect")
}

/// A produce request of `bytes` in one plain message, with `token`.
async fn produce_raw(
    broker: &BrokerProcess,
    token: &str,
    topic: &str,
    bytes: usize,
) -> Result<pb::ProduceResponse, tonic::Status> {
    let channel = common::channel(&broker.url()).await;
    let mut request = tonic::Request::new(pb::ProduceRequest {
        topic: topic.to_owned(),
        batches: Vec::new(),
        messages: vec![pb::Message {
            value: vec![7u8; bytes].into(),
            ..pb::Message::default()
        }],
        ..pb::ProduceRequest::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ASCII"),
    );
    common::topics(&channel)
        .produce(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Sends `token`'s producer a second and a half's worth to `topic` (a full bucket
/// takes it, and it is stored), then a small request, until that one is refused (the
/// quota reaches the broker through its watch: until then nothing refuses); the
/// refusal.
async fn refused_after_a_large_request(
    broker: &BrokerProcess,
    token: &str,
    topic: &str,
) -> tonic::Status {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let large = produce_raw(broker, token, topic, 3 * RATE as usize / 2)
            .await
            .expect("a full bucket takes one large request");
        assert!(
            large.message_batches.iter().all(|b| b.error.is_none()),
            "the large message was stored: {:?}",
            large.message_batches
        );
        match produce_raw(broker, token, topic, 1024).await {
            Err(status) => return status,
            Ok(_) => assert!(Instant::now() < deadline, "the quota never applied"),
        }
    }
}

#[tokio::test]
async fn a_principal_over_its_produce_quota_waits_and_is_held_to_the_rate() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tokens = dir.path().join("tokens");
    let admin = common::add_token(&tokens, "admin", "");
    let loader = common::add_token(&tokens, "loader", "");
    let broker = BrokerProcess::start_with(
        &dir.path().join("data"),
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--auth-tokens-file",
            &path(&tokens),
        ],
    );
    let admin_client = connect(&broker, &admin).await;
    for topic in ["bulk", "probe"] {
        admin_client
            .create_topic(topic, &TopicSettings::new(1))
            .await
            .expect("create a topic");
    }
    admin_client
        .put_quota(&Quota {
            principal: "loader".into(),
            produce_bytes_per_second: Some(RATE),
            ..Quota::default()
        })
        .await
        .expect("set the quota");
    let listed = admin_client.list_quotas().await.expect("list quotas");
    assert_eq!(listed.len(), 1, "{listed:?}");

    // One request larger than a second's worth (1.5 s) passes on a full bucket; the
    // next is refused with the wait (the half second of debt), and writes nothing.
    let status = refused_after_a_large_request(&broker, &loader, "probe").await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let detail = common::detail(&status);
    assert_eq!(detail.code, pb::ErrorCode::Throttled as i32, "{detail:?}");
    assert!(
        (200..=1_000).contains(&detail.retry_after_ms),
        "half a second's worth of debt: {detail:?}"
    );
    assert!(
        detail
            .message
            .contains("loader is over its produce_bytes_per_second quota")
    );
    let probe = admin_client
        .describe_topic("probe")
        .await
        .expect("describe");
    let stored = probe.partitions[0].high_watermark;
    // Every accepted request stored one record, the refused one none: the last round
    // stored only its large record (earlier rounds, before the quota applied, two).
    assert!(stored % 2 == 1, "{stored} records stored");
    // Another principal is not held back by loader's debt.
    produce_raw(&broker, &admin, "probe", 1024)
        .await
        .expect("another principal produces");
    // Wait out the debt, so the rate test starts from a full bucket.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let loader_client = connect(&broker, &loader).await;
    let producer = Producer::new(
        &loader_client,
        "bulk",
        ProducerConfig {
            max_batch_bytes: 64 * 1024,
            delivery_timeout: Duration::from_secs(120),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("a producer");
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(RECORDS);
    for n in 0..RECORDS {
        let mut value = vec![b'x'; RECORD_BYTES];
        value[..8].copy_from_slice(&(n as u64).to_be_bytes());
        deliveries.push(producer.send(Record::new(value)).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("every record is acknowledged");
    }
    let elapsed = started.elapsed().as_secs_f64();
    producer.close().await.expect("close");
    // A full bucket holds a second's worth; the rest went at the quota's rate.
    let sent = (RECORDS * RECORD_BYTES) as f64;
    let rate = (sent - RATE as f64) / elapsed;
    let ratio = rate / RATE as f64;
    println!("held to {rate:.0} B/s against {RATE} B/s ({ratio:.3}) over {elapsed:.1} s");
    assert!(
        (0.9..=1.1).contains(&ratio),
        "held to {rate:.0} B/s against a quota of {RATE} B/s ({ratio:.3}) over {elapsed:.1} s"
    );
    let bulk = admin_client.describe_topic("bulk").await.expect("describe");
    assert_eq!(
        bulk.partitions[0].high_watermark, RECORDS as u64,
        "each record stored once though requests were refused and sent again"
    );

    // Consumption: a read is served while the bucket is not in debt and charged after;
    // the read that follows a second's worth and more is refused.
    admin_client
        .put_quota(&Quota {
            principal: "loader".into(),
            consume_bytes_per_second: Some(RATE),
            ..Quota::default()
        })
        .await
        .expect("set a consume quota");
    let target = FetchTarget {
        partition: TopicPartition::new("bulk", 0),
        offset: 0,
        max_bytes: 4 << 20,
    };
    let options = FetchOptions {
        max_bytes: 4 << 20,
        ..FetchOptions::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        match loader_client
            .fetch(std::slice::from_ref(&target), options)
            .await
        {
            Err(err) => break err,
            Ok(fetched) => {
                assert!(fetched[0].error.is_none(), "{:?}", fetched[0].error);
                assert!(Instant::now() < deadline, "the consume quota never applied");
            }
        }
    };
    assert_eq!(
        refused.code(),
        Some(ferry_client::ErrorCode::Throttled),
        "{refused}"
    );
    assert!(refused.retry_after_ms() > 0, "{refused}");

    let metrics = common::scrape(broker.metrics_addr.expect("a metrics address"));
    let throttled = metrics.lines().find(|line| {
        line.starts_with("ferry_quota_throttled_total{")
            && line.contains("principal=\"loader\"")
            && line.contains("quota=\"produce_bytes_per_second\"")
    });
    let count: f64 = throttled
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(count >= 1.0, "throttling counted: {throttled:?}");
    let produced = metrics.lines().find(|line| {
        line.starts_with("ferry_principal_produce_bytes_total{") && line.contains("loader")
    });
    let produced: f64 = produced
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(produced >= sent, "loader's bytes counted: {produced}");
    assert!(
        metrics.contains("ferry_principal_requests_total{principal=\"admin\"}"),
        "admin's requests counted"
    );
}

/// A quota on one topic, for every principal (`*`): a producer over it there is
/// refused (the error names the topic), on another topic it is not, and another
/// principal on the same topic has a bucket of its own; `quota list` shows where it
/// applies and `quota remove --topic` lifts it.
#[tokio::test]
async fn a_topic_quota_holds_each_principal_on_that_topic_only() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tokens = dir.path().join("tokens");
    let admin = common::add_token(&tokens, "admin", "");
    let loader = common::add_token(&tokens, "loader", "");
    let broker = BrokerProcess::start_with(
        &dir.path().join("data"),
        &["--auth-tokens-file", &path(&tokens)],
    );
    let admin_client = connect(&broker, &admin).await;
    for topic in ["limited", "free"] {
        admin_client
            .create_topic(topic, &TopicSettings::new(1))
            .await
            .expect("create a topic");
    }
    admin_client
        .put_quota(&Quota {
            principal: "*".into(),
            topic: Some("limited".into()),
            produce_bytes_per_second: Some(RATE),
            ..Quota::default()
        })
        .await
        .expect("set the topic's quota");
    let listed = admin_client.list_quotas().await.expect("list quotas");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].topic.as_deref(), Some("limited"), "{listed:?}");

    // Over a second's worth on `limited`, then the next request there is refused.
    let status = refused_after_a_large_request(&broker, &loader, "limited").await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let detail = common::detail(&status);
    assert!(
        detail
            .message
            .contains("loader is over its produce_bytes_per_second quota on topic \"limited\""),
        "{detail:?}"
    );
    // The debt is loader's on `limited` only.
    for _ in 0..3 {
        produce_raw(&broker, &loader, "free", 3 * RATE as usize / 2)
            .await
            .expect("another topic is not limited");
    }
    produce_raw(&broker, &admin, "limited", 1024)
        .await
        .expect("another principal has a bucket of its own there");

    assert!(
        admin_client
            .delete_quota("*", Some("limited"), None)
            .await
            .expect("remove the topic's quota"),
        "the quota existed"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while produce_raw(&broker, &loader, "limited", 1024)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the quota was never lifted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
