//! The records this operator writes to etcd, checked against fixture files that
//! `broker/tests/operator_records.rs` reads with the broker's own types: together
//! they prove the operator writes exactly what the brokers read.
//!
//! `FERRY_UPDATE_FIXTURES=1 cargo test -p ferry-operator --test records_contract`
//! rewrites the fixtures after a deliberate format change.

use std::path::PathBuf;

use ferry_operator::crd::{BrokerSettings, QueueSpec, TopicSpec};
use ferry_operator::records::{
    Kind, Record, namespace_groups_rule, namespace_rule, queue_settings, topic_settings,
};
use serde::Serialize;
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/records")
        .join(name)
}

fn check<S: Serialize>(name: &str, record: &S) {
    let mut produced = serde_json::to_string_pretty(record).expect("serializes");
    produced.push('\n');
    let path = fixture(name);
    if std::env::var_os("FERRY_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, &produced).expect("fixture written");
    }
    let expected = std::fs::read_to_string(&path).expect("fixture present");
    assert_eq!(
        produced, expected,
        "{name} differs from what the operator writes"
    );
}

fn record<S>(name: &str, settings: S) -> Record<S> {
    Record {
        name: name.to_owned(),
        settings,
        created_at_ms: 1_767_225_600_000,
        incarnation: 1_767_225_600_000_000_001,
        cluster: Some("prod.main".to_owned()),
    }
}

#[test]
fn a_topic_with_every_setting_left_out_takes_the_broker_defaults() {
    let spec: TopicSpec = serde_json::from_value(json!({})).expect("spec");
    let settings = topic_settings(&spec, &BrokerSettings::default());
    check("topic-defaults.json", &record("events", settings));
}

#[test]
fn a_topic_with_every_setting_given_keeps_them() {
    let spec: TopicSpec = serde_json::from_value(json!({
        "partitions": 12, "replicationFactor": 3, "replication": "async",
        "durability": "interval", "flushIntervalMs": 250, "retentionMs": 0,
        "retentionBytes": 1_073_741_824u64, "segmentBytes": 67_108_864,
        "segmentMs": 3_600_000, "maxMessageBytes": 524_288,
    }))
    .expect("spec");
    let settings = topic_settings(&spec, &BrokerSettings::default());
    check("topic-full.json", &record("clicks", settings));
}

#[test]
fn a_queue_with_every_setting_left_out_takes_the_broker_defaults() {
    let spec: QueueSpec = serde_json::from_value(json!({})).expect("spec");
    let settings = queue_settings(&spec, &BrokerSettings::default());
    check("queue-defaults.json", &record("orders", settings));
}

#[test]
fn a_queue_with_every_setting_given_keeps_them() {
    let spec: QueueSpec = serde_json::from_value(json!({
        "fifo": true, "replicationFactor": 3, "replication": "async", "durability": "none",
        "flushIntervalMs": 10, "visibilityTimeoutMs": 60_000, "delayMs": 1000,
        "receiveWaitMs": 5000, "retentionMs": 0, "maxMessageBytes": 65_536,
        "maxReceiveCount": 4, "deadLetterQueue": "payments-dlq", "dedupWindowMs": 600_000,
        "contentBasedDedup": true, "maxMessages": 1000,
    }))
    .expect("spec");
    let settings = queue_settings(&spec, &BrokerSettings::default());
    check("queue-full.json", &record("payments", settings));
}

#[test]
fn cluster_limits_lower_queue_defaults_as_the_broker_does() {
    let spec: QueueSpec = serde_json::from_value(json!({})).expect("spec");
    let cluster: BrokerSettings = serde_json::from_value(json!({
        "maxMessageBytes": 1000, "maxReceiveWaitMs": 100, "maxVisibilityTimeoutMs": 2000,
        "defaultDurability": "none",
    }))
    .expect("config");
    let settings = queue_settings(&spec, &cluster);
    assert_eq!(
        (
            settings.max_message_bytes,
            settings.receive_wait_ms,
            settings.visibility_timeout_ms
        ),
        (1000, 100, 2000)
    );
    assert_eq!(
        serde_json::to_value(settings.durability).expect("json"),
        "none"
    );
    let topic: TopicSpec = serde_json::from_value(json!({})).expect("spec");
    assert_eq!(topic_settings(&topic, &cluster).max_message_bytes, 1000);
}

#[test]
fn the_access_rules_that_come_with_a_namespace_s_topics_and_queues() {
    check(
        "access-rule-topic.json",
        &namespace_rule(Kind::Topic, "shop", "orders", "orders.v1"),
    );
    check(
        "access-rule-queue.json",
        &namespace_rule(Kind::Queue, "shop", "jobs", "jobs"),
    );
    check("access-rule-groups.json", &namespace_groups_rule("shop"));
}
