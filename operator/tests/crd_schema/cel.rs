//! The CEL rules at work: objects the API server must accept and reject, judged by
//! kube's client-side CEL engine (kube-cel) against the tidied schema, with schema
//! defaults applied first as the API server does. The e2e tests repeat the important
//! cases against a real kube-apiserver.

use kube::core::cel::{ScopeContext, Validator, analyze_rule, compile_schema};
use serde_json::{Value, json};

use super::{rules, schema};

/// The messages of the rules `object` breaks (an update when `old` is given).
fn broken(plural: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(plural), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn accepts(plural: &str, object: &Value, old: Option<&Value>) {
    let broken = broken(plural, object, old);
    assert!(
        broken.is_empty(),
        "{plural}: expected accepted, broke {broken:?}"
    );
}

fn rejects(plural: &str, object: &Value, old: Option<&Value>, message: &str) {
    let broken = broken(plural, object, old);
    assert!(
        broken.iter().any(|m| m == message),
        "{plural}: expected {message:?}, broke {broken:?}"
    );
}

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

fn queue(spec: Value) -> Value {
    object("Queue", "orders", spec)
}

fn topic(spec: Value) -> Value {
    object("Topic", "events", spec)
}

fn cluster(spec: Value) -> Value {
    object("BrokerCluster", "main", spec)
}

/// Every rule node in a schema, with its rule strings.
fn all_rules(node: &Value, out: &mut Vec<String>) {
    out.extend(rules(node));
    match node {
        Value::Object(map) => {
            for (key, child) in map {
                if key != "x-kubernetes-validations" && key != "default" {
                    all_rules(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|child| all_rules(child, out)),
        _ => {}
    }
}

#[test]
fn every_rule_compiles_and_is_cheap() {
    for plural in ["brokerclusters", "topics", "queues"] {
        let schema = schema(plural);
        let compiled = compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{plural}: {:?}",
            compiled.compilation_errors()
        );
        let mut found = Vec::new();
        all_rules(&schema, &mut found);
        assert!(!found.is_empty());
        for rule in found {
            let warnings = analyze_rule(&rule, &compiled, ScopeContext::CrdValidation);
            assert!(warnings.is_empty(), "{plural}: {rule}: {warnings:?}");
        }
    }
}

#[test]
fn minimal_resources_are_accepted() {
    accepts("queues", &queue(json!({})), None);
    accepts("topics", &topic(json!({})), None);
    accepts("brokerclusters", &cluster(json!({})), None);
    // And an update that changes nothing.
    accepts("queues", &queue(json!({})), Some(&queue(json!({}))));
    accepts("topics", &topic(json!({})), Some(&topic(json!({}))));
    accepts(
        "brokerclusters",
        &cluster(json!({})),
        Some(&cluster(json!({}))),
    );
}

#[test]
fn fifo_is_immutable() {
    let old = queue(json!({"fifo": false}));
    rejects(
        "queues",
        &queue(json!({"fifo": true})),
        Some(&old),
        "fifo is immutable",
    );
    // Leaving it out means the default, false: no change.
    accepts("queues", &queue(json!({})), Some(&old));
    // Setting it at creation is fine.
    accepts("queues", &queue(json!({"fifo": true})), None);
}

#[test]
fn replication_factor_is_immutable() {
    let message = "replicationFactor is immutable";
    let old = queue(json!({"replicationFactor": 3}));
    rejects(
        "queues",
        &queue(json!({"replicationFactor": 1})),
        Some(&old),
        message,
    );
    rejects("queues", &queue(json!({})), Some(&old), message);
    let old = topic(json!({"replicationFactor": 3}));
    rejects(
        "topics",
        &topic(json!({"replicationFactor": 5})),
        Some(&old),
        message,
    );
    accepts(
        "topics",
        &topic(json!({"replicationFactor": 3})),
        Some(&old),
    );
}

#[test]
fn partitions_never_decrease() {
    let old = topic(json!({"partitions": 6}));
    rejects(
        "topics",
        &topic(json!({"partitions": 5})),
        Some(&old),
        "partitions cannot decrease",
    );
    // Dropping the field means the default, 1: a decrease too.
    rejects(
        "topics",
        &topic(json!({})),
        Some(&old),
        "partitions cannot decrease",
    );
    accepts("topics", &topic(json!({"partitions": 6})), Some(&old));
    accepts("topics", &topic(json!({"partitions": 12})), Some(&old));
}

#[test]
fn cluster_ref_may_be_set_once() {
    for (plural, make) in [("topics", topic as fn(Value) -> Value), ("queues", queue)] {
        let unset = make(json!({}));
        let c1 = make(json!({"clusterRef": "c1"}));
        let c2 = make(json!({"clusterRef": "c2"}));
        accepts(plural, &c1, Some(&unset));
        accepts(plural, &c1, Some(&c1));
        rejects(plural, &c2, Some(&c1), "clusterRef is immutable");
        rejects(
            plural,
            &unset,
            Some(&c1),
            "clusterRef cannot be removed once set",
        );
    }
}

#[test]
fn broker_names_are_fixed_at_creation() {
    let named = queue(json!({"queueName": "Orders_v2"}));
    let renamed = queue(json!({"queueName": "Orders_v3"}));
    let unnamed = queue(json!({}));
    accepts("queues", &named, None);
    rejects("queues", &renamed, Some(&named), "queueName is immutable");
    let added_or_removed = "queueName cannot be added or removed after creation";
    rejects("queues", &named, Some(&unnamed), added_or_removed);
    rejects("queues", &unnamed, Some(&named), added_or_removed);

    let named = topic(json!({"topicName": "Events"}));
    rejects(
        "topics",
        &topic(json!({"topicName": "Other"})),
        Some(&named),
        "topicName is immutable",
    );
    rejects(
        "topics",
        &topic(json!({})),
        Some(&named),
        "topicName cannot be added or removed after creation",
    );
}

#[test]
fn dot_names_are_refused() {
    rejects(
        "queues",
        &queue(json!({"queueName": "."})),
        None,
        "queueName must not be '.' or '..'",
    );
    rejects(
        "topics",
        &topic(json!({"topicName": ".."})),
        None,
        "topicName must not be '.' or '..'",
    );
    rejects(
        "queues",
        &queue(json!({"maxReceiveCount": 3, "deadLetterQueue": ".."})),
        None,
        "deadLetterQueue must not be '.' or '..'",
    );
    accepts("queues", &queue(json!({"queueName": ".hidden"})), None);
}

#[test]
fn long_resource_names_need_a_broker_name() {
    let long = "q".repeat(250);
    let message = "metadata.name is longer than the broker's 249 characters: set spec.queueName";
    rejects("queues", &object("Queue", &long, json!({})), None, message);
    accepts(
        "queues",
        &object("Queue", &long, json!({"queueName": "short"})),
        None,
    );
    accepts(
        "queues",
        &object("Queue", &"q".repeat(249), json!({})),
        None,
    );
}

#[test]
fn dead_letter_queue_and_max_receive_count_go_together() {
    rejects(
        "queues",
        &queue(json!({"maxReceiveCount": 5})),
        None,
        "deadLetterQueue is required when maxReceiveCount is above 0",
    );
    rejects(
        "queues",
        &queue(json!({"deadLetterQueue": "orders-dlq"})),
        None,
        "deadLetterQueue needs maxReceiveCount of at least 1",
    );
    rejects(
        "queues",
        &queue(json!({"deadLetterQueue": "orders-dlq", "maxReceiveCount": 0})),
        None,
        "deadLetterQueue needs maxReceiveCount of at least 1",
    );
    accepts("queues", &queue(json!({"maxReceiveCount": 0})), None);
    accepts(
        "queues",
        &queue(json!({"deadLetterQueue": "orders-dlq", "maxReceiveCount": 5})),
        None,
    );
}

#[test]
fn a_queue_is_not_its_own_dead_letter_queue() {
    let message = "a queue cannot be its own dead-letter queue";
    rejects(
        "queues",
        &queue(json!({"deadLetterQueue": "orders", "maxReceiveCount": 5})),
        None,
        message,
    );
    rejects(
        "queues",
        &queue(json!({"queueName": "Orders", "deadLetterQueue": "Orders", "maxReceiveCount": 5})),
        None,
        message,
    );
    // The resource's name does not matter once the broker name differs.
    accepts(
        "queues",
        &queue(json!({"queueName": "Orders", "deadLetterQueue": "orders", "maxReceiveCount": 5})),
        None,
    );
}

#[test]
fn broker_cluster_names_fit_statefulset_and_services() {
    let message = "metadata.name must be a DNS label of at most 45 characters: \
                   it names the StatefulSet, its pods and Services";
    accepts(
        "brokerclusters",
        &object("BrokerCluster", "c1", json!({})),
        None,
    );
    accepts(
        "brokerclusters",
        &object("BrokerCluster", &"c".repeat(45), json!({})),
        None,
    );
    for name in [
        "c".repeat(46),
        "1cluster".into(),
        "a.b".into(),
        "main-".into(),
    ] {
        rejects(
            "brokerclusters",
            &object("BrokerCluster", &name, json!({})),
            None,
            message,
        );
    }
}

#[test]
fn storage_grows_but_never_shrinks_or_changes_class() {
    let old = cluster(json!({"storage": {"size": "10Gi", "storageClassName": "fast"}}));
    let with = |size: &str, class: Option<&str>| {
        let mut storage = json!({"size": size});
        if let Some(class) = class {
            storage["storageClassName"] = json!(class);
        }
        cluster(json!({"storage": storage}))
    };
    accepts("brokerclusters", &with("20Gi", Some("fast")), Some(&old));
    accepts("brokerclusters", &with("10240Mi", Some("fast")), Some(&old));
    rejects(
        "brokerclusters",
        &with("5Gi", Some("fast")),
        Some(&old),
        "storage.size cannot shrink",
    );
    rejects(
        "brokerclusters",
        &with("10Gi", Some("slow")),
        Some(&old),
        "storage.storageClassName is immutable",
    );
    rejects(
        "brokerclusters",
        &with("10Gi", None),
        Some(&old),
        "storageClassName cannot be added or removed after creation",
    );
    // The default size is 10Gi, so leaving `storage` out keeps it.
    accepts(
        "brokerclusters",
        &cluster(json!({})),
        Some(&with("10Gi", None)),
    );
}

#[test]
fn message_size_fits_in_a_batch() {
    rejects(
        "brokerclusters",
        &cluster(json!({"config": {"maxMessageBytes": 2048, "maxBatchBytes": 1024}})),
        None,
        "maxMessageBytes must not exceed maxBatchBytes",
    );
    accepts(
        "brokerclusters",
        &cluster(json!({"config": {"maxMessageBytes": 1024, "maxBatchBytes": 2048}})),
        None,
    );
}

#[test]
fn authorization_needs_service_account_tokens() {
    rejects(
        "brokerclusters",
        &cluster(json!({"auth": {"serviceAccountTokens": false, "authorization": true}})),
        None,
        "authorization needs serviceAccountTokens: a way to tell callers apart",
    );
    accepts(
        "brokerclusters",
        &cluster(json!({"auth": {"serviceAccountTokens": false, "authorization": false}})),
        None,
    );
    accepts(
        "brokerclusters",
        &cluster(json!({"auth": {"serviceAccountTokens": true, "authorization": true}})),
        None,
    );
    accepts("brokerclusters", &cluster(json!({"auth": {}})), None);
}

fn policy(name: &str, grants: Value) -> Value {
    object("AccessPolicy", name, json!({"grants": grants}))
}

#[test]
fn an_access_policy_grant_names_someone_and_something() {
    let full = json!([{"serviceAccounts": ["analytics/reader"], "topics": ["clicks"],
                       "operations": ["consume"]}]);
    accepts("accesspolicies", &policy("readers", full), None);
    rejects(
        "accesspolicies",
        &policy(
            "readers",
            json!([{"topics": ["clicks"], "operations": ["consume"]}]),
        ),
        None,
        "a grant names at least one ServiceAccount, user or group",
    );
    rejects(
        "accesspolicies",
        &policy(
            "readers",
            json!([{"users": ["alice"], "operations": ["consume"]}]),
        ),
        None,
        "a grant names at least one topic, queue or consumer group",
    );
    let long = "p".repeat(64);
    rejects(
        "accesspolicies",
        &policy(
            &long,
            json!([{"users": ["alice"], "queues": ["jobs"], "operations": ["send"]}]),
        ),
        None,
        "an AccessPolicy's name has at most 63 characters (its rules' names carry it)",
    );
}
