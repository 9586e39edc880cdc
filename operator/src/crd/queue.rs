//! The `Queue` resource: a point-to-point queue on a broker cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, Durability, Replication};
use super::rules::{CLUSTER_NAME_MAX_LEN, CLUSTER_NAME_PATTERN};
use super::rules::{MAX_DEDUP_WINDOW_MS, MAX_DELAY_MS, MAX_QUEUE_MESSAGES, MAX_RECEIVE_WAIT_MS};
use super::rules::{MAX_REPLICATION_FACTOR, MAX_VISIBILITY_TIMEOUT_MS, NAME_MAX_LEN, NAME_PATTERN};

/// The desired state of a queue. Settings left out take the owning cluster's defaults
/// (the broker's defaults unless the BrokerCluster's `config` changes them).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Queue",
    namespaced,
    status = "QueueStatus",
    derive = "PartialEq",
    shortname = "fq",
    category = "ferry",
    doc = "A Ferry queue: each message goes to one consumer, with visibility timeouts, retries, dead letters and optional FIFO order.",
    selectable = ".spec.clusterRef",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".status.cluster",
        description = "The broker cluster that owns the queue"
    ),
    printcolumn(
        name = "FIFO",
        type_ = "boolean",
        json_path = ".spec.fifo",
        description = "Whether the queue keeps per-group order"
    ),
    printcolumn(
        name = "Depth",
        type_ = "integer",
        json_path = ".status.depth",
        description = "Messages held (visible, delayed and in flight), where known"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the queue has a live leader"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the queue is or is not ready"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("has(self.spec.queueName) || size(self.metadata.name) <= 249")
        .message("metadata.name is longer than the broker's 249 characters: set spec.queueName"),
    validation = Rule::new(
        "!has(self.spec.deadLetterQueue) || self.spec.deadLetterQueue != (has(self.spec.queueName) ? self.spec.queueName : self.metadata.name)"
    )
    .message("a queue cannot be its own dead-letter queue")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = crate::crd::rules::presence_immutable("queueName"),
    validation = crate::crd::rules::never_unset("clusterRef"),
    validation = Rule::new(
        "!has(self.maxReceiveCount) || self.maxReceiveCount == 0 || has(self.deadLetterQueue)"
    )
    .message("deadLetterQueue is required when maxReceiveCount is above 0")
    .field_path(".deadLetterQueue")
    .reason(Reason::FieldValueRequired),
    validation = Rule::new(
        "!has(self.deadLetterQueue) || (has(self.maxReceiveCount) && self.maxReceiveCount > 0)"
    )
    .message("deadLetterQueue needs maxReceiveCount of at least 1")
    .field_path(".maxReceiveCount")
)]
pub struct QueueSpec {
    /// The queue's name on the broker, which clients use. Defaults to
    /// `metadata.name`. 1–249 of `A-Z a-z 0-9 . _ -`, not `.` or `..`. Broker names
    /// are global to the etcd the clusters share, across namespaces. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = NAME_MAX_LEN), regex(pattern = NAME_PATTERN))]
    #[x_kube(
        validation = crate::crd::rules::not_dot_or_dot_dot("queueName"),
        validation = crate::crd::rules::immutable("queueName")
    )]
    pub queue_name: Option<String>,

    /// The BrokerCluster in this namespace that owns the queue. Left out, the operator
    /// places the queue (the least-loaded cluster, else a default cluster) and reports
    /// its choice in `status.cluster`. May be set later, but not changed or removed
    /// once set: moving a queue between clusters is not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = CLUSTER_NAME_MAX_LEN), regex(pattern = CLUSTER_NAME_PATTERN))]
    #[x_kube(validation = crate::crd::rules::immutable("clusterRef"))]
    pub cluster_ref: Option<String>,

    /// What happens to the queue and its messages when this resource is deleted:
    /// `Retain` (the default) keeps them, `Delete` removes them, `DeleteIfEmpty`
    /// removes them only when the queue holds no messages.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// A FIFO queue keeps order within each message group and has one message of a
    /// group in flight at a time. Default false. Immutable: the ordering promise
    /// cannot change under messages already sent.
    #[serde(default)]
    #[x_kube(validation = crate::crd::rules::immutable("fifo"))]
    pub fifo: bool,

    /// Replicas of the queue, 1–7; the cluster is scaled up to at least this many
    /// hosts. Default 1: set 3 for a queue that survives the loss of a host.
    /// Immutable for now: changing it needs a replica reassignment the operator does
    /// not do yet.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = MAX_REPLICATION_FACTOR))]
    #[x_kube(validation = crate::crd::rules::immutable("replicationFactor"))]
    pub replication_factor: u32,

    /// When the leader acknowledges a send or a state change: `sync` after a quorum
    /// of replicas persisted it, `async` after the leader did. Default `sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,

    /// How sends and state changes (receives, acks) are made durable: `fsync`
    /// (default) with group commit, `interval` every `flushIntervalMs`, or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,

    /// Flush period of `interval` durability, in ms. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub flush_interval_ms: Option<u32>,

    /// How long a received message stays invisible to other consumers before it is
    /// delivered again, unless acked, in ms; at most 43200000 (12 hours). Default
    /// 30000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_VISIBILITY_TIMEOUT_MS))]
    pub visibility_timeout_ms: Option<u64>,

    /// Delay before a sent message becomes visible, when the send names none, in ms;
    /// at most 900000 (15 minutes). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_DELAY_MS))]
    pub delay_ms: Option<u64>,

    /// Long-poll wait of receives that name none, in ms; at most 20000. Default 20000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_RECEIVE_WAIT_MS))]
    pub receive_wait_ms: Option<u32>,

    /// Age after which messages are dropped, in ms; 0 keeps them. Default 345600000
    /// (4 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,

    /// Largest message (body and attributes), in bytes; at most the cluster's
    /// `config.maxMessageBytes`. Default 262144 (256 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_message_bytes: Option<u32>,

    /// Receives after which a message moves to `deadLetterQueue`; 0 (the default)
    /// never dead-letters. Above 0 it needs `deadLetterQueue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_receive_count: Option<u32>,

    /// The broker name of the queue that receives messages received `maxReceiveCount`
    /// times: a queue on the same cluster, FIFO if this one is, taking messages at
    /// least as large, and not this queue. Needs `maxReceiveCount` above 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = NAME_MAX_LEN), regex(pattern = NAME_PATTERN))]
    #[x_kube(validation = crate::crd::rules::not_dot_or_dot_dot("deadLetterQueue"))]
    pub dead_letter_queue: Option<String>,

    /// How long a dedup id is remembered, in ms; a send repeating one within the
    /// window is dropped. At most 86400000 (1 day). Default 300000 (5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_DEDUP_WINDOW_MS))]
    pub dedup_window_ms: Option<u64>,

    /// Derive a dedup id from the SHA-256 of the body when a send has none. Default
    /// false.
    #[serde(default)]
    pub content_based_dedup: bool,

    /// Most messages the queue holds; sends beyond it are refused. 1–100000000.
    /// Default 10000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_QUEUE_MESSAGES))]
    pub max_messages: Option<u64>,
}

/// What the operator observed of a queue.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// `Ready`: the queue has a live leader. `Synced`: the queue's mapping and
    /// settings in etcd match this spec. Both start `Unknown`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The BrokerCluster that owns the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,

    /// The gRPC address (`host:port`) clients connect to for this queue: the owning
    /// cluster's client Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,

    /// The queue's name on the broker, which clients use: `spec.queueName`, else
    /// `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_name: Option<String>,

    /// The incarnation of the broker's queue this resource created (its etcd record's
    /// `incarnation`). A record of the same name with another incarnation belongs to
    /// someone else and is never overwritten. The operator claims it here before it
    /// writes the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,

    /// A digest of the etcd record exactly as the operator last wrote it. A record
    /// that no longer matches it was changed by someone else and is put back; one
    /// that matches it but not the spec means the spec changed, which a live queue
    /// cannot follow, so it is reported instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_digest: Option<String>,

    /// Messages held (visible, delayed and in flight), when the cluster publishes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,
}

fn default_replication_factor() -> u32 {
    1
}
