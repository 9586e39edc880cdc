//! The `Topic` resource: a publish–subscribe topic on a broker cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, Durability, PartitionCounts, Replication};
use super::rules::{CLUSTER_NAME_MAX_LEN, CLUSTER_NAME_PATTERN, NAME_MAX_LEN, NAME_PATTERN};
use super::rules::{MAX_PARTITIONS, MAX_REPLICATION_FACTOR, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};

/// The desired state of a topic. Settings left out take the owning cluster's defaults
/// (the broker's defaults unless the BrokerCluster's `config` changes them).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    derive = "PartialEq",
    shortname = "ft",
    category = "ferry",
    doc = "A Ferry topic: partitioned, replicated, ordered per partition; consumers read from offsets in consumer groups.",
    selectable = ".spec.clusterRef",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".status.cluster",
        description = "The broker cluster that owns the topic"
    ),
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".spec.partitions",
        description = "Partitions asked for"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicationFactor",
        description = "Replicas per partition"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every partition has a live leader"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the topic is or is not ready"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Led",
        type_ = "integer",
        json_path = ".status.partitions.ready",
        description = "Partitions with a live leader",
        priority = 1
    ),
    validation = Rule::new("has(self.spec.topicName) || size(self.metadata.name) <= 249")
        .message("metadata.name is longer than the broker's 249 characters: set spec.topicName")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = crate::crd::rules::presence_immutable("topicName"),
    validation = crate::crd::rules::never_unset("clusterRef")
)]
pub struct TopicSpec {
    /// The topic's name on the broker, which clients use. Defaults to
    /// `metadata.name`. 1–249 of `A-Z a-z 0-9 . _ -`, not `.` or `..`. Broker names
    /// are global to the etcd the clusters share, across namespaces. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = NAME_MAX_LEN), regex(pattern = NAME_PATTERN))]
    #[x_kube(
        validation = crate::crd::rules::not_dot_or_dot_dot("topicName"),
        validation = crate::crd::rules::immutable("topicName")
    )]
    pub topic_name: Option<String>,

    /// The BrokerCluster in this namespace that owns the topic. Left out, the operator
    /// places the topic (the least-loaded cluster, else a default cluster) and reports
    /// its choice in `status.cluster`. May be set later, but not changed or removed
    /// once set: moving a topic between clusters is not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = CLUSTER_NAME_MAX_LEN), regex(pattern = CLUSTER_NAME_PATTERN))]
    #[x_kube(validation = crate::crd::rules::immutable("clusterRef"))]
    pub cluster_ref: Option<String>,

    /// What happens to the topic and its data when this resource is deleted: `Retain`
    /// (the default) keeps them, `Delete` removes them, `DeleteIfEmpty` removes them
    /// only when no partition holds records.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Partition count, 1–1024. May grow, never shrink: records are placed by key
    /// hash, so fewer partitions would lose data and reorder keys.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = MAX_PARTITIONS))]
    #[x_kube(validation = crate::crd::rules::never_decreases("partitions"))]
    pub partitions: u32,

    /// Replicas of each partition, 1–7; the cluster is scaled up to at least this
    /// many hosts. Default 1: set 3 for a topic that survives the loss of a host.
    /// Immutable for now: changing it needs a replica reassignment the operator does
    /// not do yet.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = MAX_REPLICATION_FACTOR))]
    #[x_kube(validation = crate::crd::rules::immutable("replicationFactor"))]
    pub replication_factor: u32,

    /// When a partition leader acknowledges a write: `sync` after a quorum of replicas
    /// persisted it, `async` after the leader did. Default `sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,

    /// How a write is made durable before it is acknowledged: `fsync` (default) on
    /// every write with group commit, `interval` every `flushIntervalMs`, or `none`
    /// (left to the operating system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,

    /// Flush period of `interval` durability, in ms. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub flush_interval_ms: Option<u32>,

    /// Age after which whole segments are deleted, in ms; 0 keeps records forever.
    /// Default 604800000 (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,

    /// Size of a partition above which its oldest segments are deleted, in bytes; 0
    /// means no limit (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,

    /// Size at which a partition starts a new segment, in bytes, 4096–4294967295.
    /// Default 134217728 (128 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_SEGMENT_BYTES, max = MAX_SEGMENT_BYTES))]
    pub segment_bytes: Option<u64>,

    /// Age at which a partition starts a new segment, in ms. Default 604800000
    /// (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub segment_ms: Option<u64>,

    /// Largest record, in bytes; at most the cluster's `config.maxMessageBytes`.
    /// Default: that limit (1048576, 1 MiB, unless the cluster changes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_message_bytes: Option<u32>,
}

/// What the operator observed of a topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// `Ready`: every partition has a live leader. `Synced`: the topic's mapping and
    /// settings in etcd match this spec. Both start `Unknown`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The BrokerCluster that owns the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,

    /// The gRPC address (`host:port`) clients connect to for this topic: the owning
    /// cluster's client Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,

    /// The topic's name on the broker, which clients use: `spec.topicName`, else
    /// `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_name: Option<String>,

    /// The incarnation of the broker's topic this resource created (its etcd record's
    /// `incarnation`). A record of the same name with another incarnation belongs to
    /// someone else and is never overwritten. The operator claims it here before it
    /// writes the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,

    /// A digest of the etcd record exactly as the operator last wrote it. A record
    /// that no longer matches it was changed by someone else and is put back; one
    /// that matches it but not the spec means the spec changed, which a live topic
    /// cannot follow, so it is reported instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_digest: Option<String>,

    /// Partitions on the cluster, and how many have a live leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<PartitionCounts>,
}

fn default_partitions() -> u32 {
    1
}

fn default_replication_factor() -> u32 {
    1
}
