//! The records ferry-operator writes to etcd (`operator/tests/fixtures/records/`,
//! checked against the operator's serializer by `operator/tests/records_contract.rs`)
//! read with the broker's own record types: every field is understood, none is lost,
//! and settings the operator fills in for an empty resource equal the broker's
//! defaults.

use std::path::PathBuf;

use ferry_broker::queue::{QueueRecord, QueueSettings};
use ferry_broker::topic::{TopicRecord, TopicSettings};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn read<R: DeserializeOwned + Serialize>(name: &str) -> R {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../operator/tests/fixtures/records")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture present");
    let record: R = serde_json::from_str(&text).expect("the broker reads the operator's record");
    let original: Value = serde_json::from_str(&text).expect("JSON");
    let round_trip = serde_json::to_value(&record).expect("serializes");
    assert_eq!(
        round_trip, original,
        "{name}: a field the broker does not keep"
    );
    record
}

#[test]
fn operator_topic_records_are_broker_topic_records() {
    let defaults: TopicRecord = read("topic-defaults.json");
    assert_eq!(defaults.settings, TopicSettings::default());
    assert_eq!(defaults.cluster.as_deref(), Some("prod.main"));
    let full: TopicRecord = read("topic-full.json");
    assert_eq!(full.settings.partitions, 12);
    assert_ne!(full.settings, TopicSettings::default());
}

#[test]
fn operator_queue_records_are_broker_queue_records() {
    let defaults: QueueRecord = read("queue-defaults.json");
    assert_eq!(defaults.settings, QueueSettings::default());
    let full: QueueRecord = read("queue-full.json");
    assert!(full.settings.fifo);
    assert_eq!(
        full.settings.dead_letter_queue.as_deref(),
        Some("payments-dlq")
    );
}

#[test]
fn operator_access_rules_are_valid_broker_rules() {
    use ferry_broker::access::{AccessRule, Operation, ResourceKind};
    let topic: AccessRule = read("access-rule-topic.json");
    let queue: AccessRule = read("access-rule-queue.json");
    let groups: AccessRule = read("access-rule-groups.json");
    for rule in [&topic, &queue, &groups] {
        rule.validate()
            .expect("the broker accepts the operator's rule");
        assert_eq!(rule.principal, "group:system:serviceaccounts:shop");
    }
    assert_eq!(topic.resource.kind, ResourceKind::Topic);
    assert_eq!(topic.resource.name, "orders.v1");
    assert!(topic.operations.contains(&Operation::Produce));
    assert!(queue.operations.contains(&Operation::Receive));
    assert!(!queue.operations.contains(&Operation::Purge));
    assert_eq!(groups.resource.name, "shop.");
}
