//! Sample manifests, as a user would write them, read into the Rust types with their
//! defaults; and the schema's defaults agree with the types' serde defaults, so what
//! the API server stores is what the operator reads.

use ferry_operator::crd::{BrokerCluster, DeletionPolicy, Durability, Queue, Replication, Topic};
use kube::core::cel::apply_defaults;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::schema;

const QUEUE: &str = r#"
apiVersion: ferry.dev/v1alpha1
kind: Queue
metadata:
  name: orders
  namespace: shop
spec:
  clusterRef: main
  fifo: true
  replicationFactor: 3
  visibilityTimeoutMs: 60000
  maxReceiveCount: 5
  deadLetterQueue: orders-dlq
"#;

const TOPIC: &str = r#"
apiVersion: ferry.dev/v1alpha1
kind: Topic
metadata:
  name: clicks
spec:
  partitions: 12
  replicationFactor: 3
  replication: async
  durability: interval
  flushIntervalMs: 50
  retentionMs: 86400000
"#;

const CLUSTER: &str = r#"
apiVersion: ferry.dev/v1alpha1
kind: BrokerCluster
metadata:
  name: main
spec:
  hosts: 5
  resources:
    requests: {cpu: "1", memory: 2Gi}
  storage:
    size: 50Gi
    storageClassName: fast-ssd
  config:
    defaultDurability: fsync
    leaseTtlMs: 10000
  podTemplate:
    tolerations:
    - {key: dedicated, operator: Equal, value: ferry, effect: NoSchedule}
    topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: DoNotSchedule
      labelSelector: {matchLabels: {app.kubernetes.io/instance: main}}
"#;

fn parse<T: DeserializeOwned>(yaml: &str) -> T {
    serde_saphyr::from_str(yaml).expect("sample parses")
}

#[test]
fn queue_sample_reads_with_defaults() {
    let queue: Queue = parse(QUEUE);
    let spec = &queue.spec;
    assert!(spec.fifo);
    assert_eq!(spec.replication_factor, 3);
    assert_eq!(spec.cluster_ref.as_deref(), Some("main"));
    assert_eq!(spec.visibility_timeout_ms, Some(60_000));
    assert_eq!(spec.dead_letter_queue.as_deref(), Some("orders-dlq"));
    // Left out: the fixed defaults, or None for "the cluster's default".
    assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
    assert!(!spec.content_based_dedup);
    assert_eq!(spec.durability, None);
    assert_eq!(spec.queue_name, None);
    assert!(queue.status.is_none());
}

#[test]
fn topic_sample_reads_with_defaults() {
    let topic: Topic = parse(TOPIC);
    let spec = &topic.spec;
    assert_eq!(spec.partitions, 12);
    assert_eq!(spec.replication, Some(Replication::Async));
    assert_eq!(spec.durability, Some(Durability::Interval));
    assert_eq!(spec.flush_interval_ms, Some(50));
    assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
    assert_eq!(spec.cluster_ref, None);
    assert_eq!(spec.segment_bytes, None);
}

#[test]
fn cluster_sample_reads_with_defaults() {
    let cluster: BrokerCluster = parse(CLUSTER);
    let spec = &cluster.spec;
    assert_eq!(spec.hosts, 5);
    assert_eq!(spec.storage.size, "50Gi");
    assert_eq!(spec.storage.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(spec.config.default_durability, Some(Durability::Fsync));
    assert_eq!(spec.config.lease_ttl_ms, Some(10_000));
    assert_eq!(spec.config.max_message_bytes, None);
    assert_eq!(spec.pod_template.tolerations.len(), 1);
    assert_eq!(spec.pod_template.topology_spread_constraints.len(), 1);
    assert_eq!(spec.pdb.max_unavailable, 1);
    assert_eq!(spec.image, None);
    assert!(spec.etcd.is_none());
    let requests = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests.get("memory").map(|q| q.0.as_str()), Some("2Gi"));
}

#[test]
fn empty_specs_take_the_documented_defaults() {
    let cluster: BrokerCluster = parse("metadata: {name: c}\nspec: {}\n");
    assert_eq!(cluster.spec.hosts, 3);
    assert_eq!(cluster.spec.storage.size, "10Gi");
    assert_eq!(cluster.spec.pdb.max_unavailable, 1);
    let topic: Topic = parse("metadata: {name: t}\nspec: {}\n");
    assert_eq!(
        (topic.spec.partitions, topic.spec.replication_factor),
        (1, 1)
    );
    let queue: Queue = parse("metadata: {name: q}\nspec: {}\n");
    assert_eq!((queue.spec.fifo, queue.spec.replication_factor), (false, 1));
}

/// Applies the schema's defaults the way the API server does, then reads the result.
fn defaulted<T: DeserializeOwned>(plural: &str, object: Value) -> T {
    serde_json::from_value(apply_defaults(&schema(plural), &object)).expect("defaulted reads")
}

#[test]
fn schema_defaults_match_serde_defaults() {
    let bare = |kind: &str| json!({"apiVersion": "ferry.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": {}});
    let by_schema: Queue = defaulted("queues", bare("Queue"));
    let by_serde: Queue = serde_json::from_value(bare("Queue")).expect("reads");
    assert_eq!(by_schema.spec, by_serde.spec);
    let by_schema: Topic = defaulted("topics", bare("Topic"));
    let by_serde: Topic = serde_json::from_value(bare("Topic")).expect("reads");
    assert_eq!(by_schema.spec, by_serde.spec);
    let by_schema: BrokerCluster = defaulted("brokerclusters", bare("BrokerCluster"));
    let by_serde: BrokerCluster = serde_json::from_value(bare("BrokerCluster")).expect("reads");
    assert_eq!(by_schema.spec, by_serde.spec);
    // And the API server stores them: the defaulted object carries the values.
    let stored = apply_defaults(&schema("topics"), &bare("Topic"));
    assert_eq!(stored["spec"]["partitions"], 1);
    assert_eq!(stored["spec"]["deletionPolicy"], "Retain");
}

#[test]
fn a_spec_round_trips_through_json() {
    let queue: Queue = parse(QUEUE);
    let json = serde_json::to_value(&queue).expect("serializes");
    assert_eq!(json["spec"]["visibilityTimeoutMs"], 60000);
    assert!(
        json["spec"].get("durability").is_none(),
        "unset fields are left out"
    );
    let back: Queue = serde_json::from_value(json).expect("reads back");
    assert_eq!(back, queue);
}
