//! The etcd records the operator writes and reads, in exactly the brokers' JSON
//! format (`broker/src/topic/settings.rs`, `broker/src/queue/settings.rs`,
//! `docs/etcd-keyspace.md`), and the resolution of a resource's settings against the
//! broker's defaults.
//!
//! The operator does not depend on the broker crate (it would pull the storage engine
//! and gRPC stack into the operator image); instead the fixtures in
//! `operator/tests/fixtures/records/` are checked here against this serializer and in
//! `broker/tests/operator_records.rs` against the broker's own types.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::crd::{BrokerSettings, Durability, QueueSpec, Replication, TopicSpec};

const SECOND_MS: u64 = 1000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

/// The broker's default topic durability and queue durability.
pub const DEFAULT_DURABILITY: Durability = Durability::Fsync;
/// The broker's default replication mode.
pub const DEFAULT_REPLICATION: Replication = Replication::Sync;
/// The broker's default interval flush period.
pub const DEFAULT_FLUSH_INTERVAL_MS: u32 = 1000;
/// The broker's default topic retention age: 7 days.
pub const DEFAULT_TOPIC_RETENTION_MS: u64 = 7 * DAY_MS;
/// The broker's default segment roll size: 128 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
/// The broker's default segment roll age: 7 days.
pub const DEFAULT_SEGMENT_MS: u64 = 7 * DAY_MS;
/// The broker's default largest record (`Limits::max_message_bytes`): 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 1024 * 1024;
/// The broker's default largest queue message: 256 KiB.
pub const DEFAULT_QUEUE_MAX_MESSAGE_BYTES: u32 = 256 * 1024;
/// The broker's default visibility timeout: 30 s.
pub const DEFAULT_VISIBILITY_TIMEOUT_MS: u64 = 30 * SECOND_MS;
/// The broker's default receive long-poll wait: 20 s.
pub const DEFAULT_RECEIVE_WAIT_MS: u32 = 20_000;
/// The broker's default queue retention: 4 days.
pub const DEFAULT_QUEUE_RETENTION_MS: u64 = 4 * DAY_MS;
/// The broker's default dedup window: 5 minutes.
pub const DEFAULT_DEDUP_WINDOW_MS: u64 = 5 * MINUTE_MS;
/// The broker's default most messages a queue holds.
pub const DEFAULT_MAX_MESSAGES: u64 = 10_000_000;

/// A topic's settings as the broker stores them (`TopicSettings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSettings {
    /// Partition count.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Durability mode.
    pub durability: Durability,
    /// Flush period of interval durability, ms.
    pub flush_interval_ms: u32,
    /// Retention age, ms; 0 keeps forever.
    pub retention_ms: u64,
    /// Retention size per partition; 0 means no limit.
    pub retention_bytes: u64,
    /// Segment roll size.
    pub segment_bytes: u64,
    /// Segment roll age, ms.
    pub segment_ms: u64,
    /// Largest record.
    pub max_message_bytes: u32,
    /// Replication mode.
    pub replication: Replication,
}

/// A queue's settings as the broker stores them (`QueueSettings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// FIFO order per message group.
    pub fifo: bool,
    /// Durability mode.
    pub durability: Durability,
    /// Flush period of interval durability, ms.
    pub flush_interval_ms: u32,
    /// Default visibility timeout, ms.
    pub visibility_timeout_ms: u64,
    /// Default delay of a sent message, ms.
    pub delay_ms: u64,
    /// Default receive long-poll wait, ms.
    pub receive_wait_ms: u32,
    /// Retention age, ms; 0 keeps forever.
    pub retention_ms: u64,
    /// Largest message.
    pub max_message_bytes: u32,
    /// Receives before dead-lettering; 0 never.
    pub max_receive_count: u32,
    /// The dead-letter queue's broker name (serialized as `null` when unset, as the
    /// broker does).
    pub dead_letter_queue: Option<String>,
    /// Dedup window, ms.
    pub dedup_window_ms: u64,
    /// Dedup id from the body's SHA-256 when a send has none.
    pub content_based_dedup: bool,
    /// Most messages held.
    pub max_messages: u64,
    /// Replicas.
    pub replication_factor: u32,
    /// Replication mode.
    pub replication: Replication,
}

/// A topic's or queue's record at `/ferry/topics/{name}` or `/ferry/queues/{name}`
/// (`TopicRecord` / `QueueRecord` in the broker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<S> {
    /// The broker name.
    pub name: String,
    /// The settings in force.
    pub settings: S,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Unique per creation of the name.
    pub incarnation: u64,
    /// The etcd name of the owning broker cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// A topic record.
pub type TopicRecord = Record<TopicSettings>;
/// A queue record.
pub type QueueRecord = Record<QueueSettings>;

/// A topic's settings: the resource's values, else the cluster's configured defaults,
/// else the broker's (mirroring how `ferry-broker serve` derives its defaults from its
/// flags).
pub fn topic_settings(spec: &TopicSpec, cluster: &BrokerSettings) -> TopicSettings {
    TopicSettings {
        partitions: spec.partitions,
        replication_factor: spec.replication_factor,
        durability: spec
            .durability
            .or(cluster.default_durability)
            .unwrap_or(DEFAULT_DURABILITY),
        flush_interval_ms: spec.flush_interval_ms.unwrap_or(DEFAULT_FLUSH_INTERVAL_MS),
        retention_ms: spec.retention_ms.unwrap_or(DEFAULT_TOPIC_RETENTION_MS),
        retention_bytes: spec.retention_bytes.unwrap_or(0),
        segment_bytes: spec.segment_bytes.unwrap_or(DEFAULT_SEGMENT_BYTES),
        segment_ms: spec.segment_ms.unwrap_or(DEFAULT_SEGMENT_MS),
        max_message_bytes: spec
            .max_message_bytes
            .or(cluster.max_message_bytes)
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
        replication: spec.replication.unwrap_or(DEFAULT_REPLICATION),
    }
}

/// A queue's settings, resolved like [`topic_settings`]. The broker caps some queue
/// defaults by the cluster's limits (a smaller `maxMessageBytes`, `maxReceiveWaitMs`
/// or `maxVisibilityTimeoutMs` lowers the default), and so does this.
pub fn queue_settings(spec: &QueueSpec, cluster: &BrokerSettings) -> QueueSettings {
    let capped_u32 = |default: u32, cap: Option<u32>| cap.map_or(default, |c| default.min(c));
    let capped_u64 = |default: u64, cap: Option<u64>| cap.map_or(default, |c| default.min(c));
    QueueSettings {
        fifo: spec.fifo,
        durability: spec
            .durability
            .or(cluster.default_durability)
            .unwrap_or(DEFAULT_DURABILITY),
        flush_interval_ms: spec.flush_interval_ms.unwrap_or(DEFAULT_FLUSH_INTERVAL_MS),
        visibility_timeout_ms: spec.visibility_timeout_ms.unwrap_or(capped_u64(
            DEFAULT_VISIBILITY_TIMEOUT_MS,
            cluster.max_visibility_timeout_ms,
        )),
        delay_ms: spec.delay_ms.unwrap_or(0),
        receive_wait_ms: spec.receive_wait_ms.unwrap_or(capped_u32(
            DEFAULT_RECEIVE_WAIT_MS,
            cluster.max_receive_wait_ms,
        )),
        retention_ms: spec.retention_ms.unwrap_or(DEFAULT_QUEUE_RETENTION_MS),
        max_message_bytes: spec.max_message_bytes.unwrap_or(capped_u32(
            DEFAULT_QUEUE_MAX_MESSAGE_BYTES,
            cluster.max_message_bytes,
        )),
        max_receive_count: spec.max_receive_count.unwrap_or(0),
        dead_letter_queue: spec.dead_letter_queue.clone(),
        dedup_window_ms: spec.dedup_window_ms.unwrap_or(DEFAULT_DEDUP_WINDOW_MS),
        content_based_dedup: spec.content_based_dedup,
        max_messages: spec.max_messages.unwrap_or(DEFAULT_MAX_MESSAGES),
        replication_factor: spec.replication_factor,
        replication: spec.replication.unwrap_or(DEFAULT_REPLICATION),
    }
}

/// A partition's state, written by the cluster's controller host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PartitionState {
    /// Hosts holding a replica.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// The leading host, if any.
    #[serde(default)]
    pub leader: Option<String>,
    /// Goes up on every leader change.
    #[serde(default)]
    pub leader_epoch: u64,
    /// Replicas known to hold everything committed.
    #[serde(default)]
    pub isr: Vec<String>,
}

/// What a queue's leader publishes of it (absent until the brokers publish it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ObservedQueue {
    /// Messages held: visible, delayed and in flight.
    pub depth: u64,
    /// Messages received and not yet settled.
    pub in_flight: u64,
    /// When it was published, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// What a topic partition's leader publishes of it (absent until published).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ObservedPartition {
    /// The first offset still held.
    pub log_start: u64,
    /// One past the last committed offset.
    pub high_watermark: u64,
    /// When it was published, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// The kind of a broker object, as it appears in keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A topic.
    Topic,
    /// A queue.
    Queue,
}

impl Kind {
    /// The plural used in keys: `topics` or `queues`.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Topic => "topics",
            Self::Queue => "queues",
        }
    }
}

/// An access rule as the brokers read it (`broker/src/access/rules.rs`): the
/// operator writes the defaults that let a namespace's ServiceAccounts use its
/// Topics and Queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRuleRecord {
    /// The rule's name, its key: `k8s.{namespace}.{kind}.{object}` for the operator's.
    pub name: String,
    /// Who: here `group:system:serviceaccounts:{namespace}`.
    pub principal: String,
    /// On what.
    pub resource: RuleResource,
    /// What.
    pub operations: Vec<String>,
}

/// The resources an access rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleResource {
    /// `topic`, `queue` or `group`.
    pub kind: String,
    /// The name, or prefix.
    pub name: String,
    /// `literal` or `prefix`.
    pub pattern: String,
}

/// The prefix of every rule name the operator owns.
pub const OPERATOR_RULE_PREFIX: &str = "k8s.";

/// The group Kubernetes puts every ServiceAccount of `namespace` in.
fn namespace_accounts(namespace: &str) -> String {
    format!("group:system:serviceaccounts:{namespace}")
}

/// The rule letting `namespace`'s ServiceAccounts use its Topic or Queue `object`
/// (broker name `broker_name`): produce and consume a topic; send, receive and ack on
/// a queue. Administration (purge, redrive, create, delete) is not in it.
pub fn namespace_rule(
    kind: Kind,
    namespace: &str,
    object: &str,
    broker_name: &str,
) -> AccessRuleRecord {
    let (kind_name, operations): (&str, &[&str]) = match kind {
        Kind::Topic => ("topic", &["produce", "consume", "describe"]),
        Kind::Queue => ("queue", &["send", "receive", "ack", "describe"]),
    };
    AccessRuleRecord {
        name: format!("{OPERATOR_RULE_PREFIX}{namespace}.{kind_name}.{object}"),
        principal: namespace_accounts(namespace),
        resource: RuleResource {
            kind: kind_name.to_owned(),
            name: broker_name.to_owned(),
            pattern: "literal".to_owned(),
        },
        operations: operations.iter().map(|op| (*op).to_owned()).collect(),
    }
}

/// The rule letting `namespace`'s ServiceAccounts use consumer groups named
/// `{namespace}.…` (join, commit, describe): group names are global, so each
/// namespace gets its own prefix.
pub fn namespace_groups_rule(namespace: &str) -> AccessRuleRecord {
    AccessRuleRecord {
        name: format!("{OPERATOR_RULE_PREFIX}{namespace}.groups"),
        principal: namespace_accounts(namespace),
        resource: RuleResource {
            kind: "group".to_owned(),
            name: format!("{namespace}."),
            pattern: "prefix".to_owned(),
        },
        operations: ["join", "commit", "describe"]
            .iter()
            .map(|op| (*op).to_owned())
            .collect(),
    }
}

/// The keys the operator reads and writes (`broker/src/meta/keys.rs`).
pub mod keys {
    use super::Kind;

    /// One access rule.
    pub fn access_rule(name: &str) -> String {
        format!("/ferry/access/rules/{name}")
    }

    /// The record of a topic or queue.
    pub fn record(kind: Kind, name: &str) -> String {
        format!("/ferry/{}/{name}", kind.plural())
    }

    /// Prefix of every record of a kind.
    pub fn records(kind: Kind) -> String {
        format!("/ferry/{}/", kind.plural())
    }

    /// The deletion record of one incarnation of a topic or queue: brokers remove its
    /// data only once it exists.
    pub fn tombstone(kind: Kind, name: &str, incarnation: u64) -> String {
        format!("/ferry/tombstones/{}/{name}/{incarnation}", kind.plural())
    }

    /// Prefix of a cluster's live hosts.
    pub fn hosts(cluster: &str) -> String {
        format!("/ferry/clusters/{cluster}/hosts/")
    }

    /// Prefix of a cluster's hosts asked to leave (their replicas move elsewhere).
    pub fn draining(cluster: &str) -> String {
        format!("/ferry/clusters/{cluster}/draining/")
    }

    /// Prefix of a cluster's partition states of every topic and queue.
    pub fn partitions(cluster: &str) -> String {
        format!("/ferry/clusters/{cluster}/partitions/")
    }

    /// Prefix of the partition states of one topic or queue (`…/{name}/`).
    pub fn partitions_of(cluster: &str, kind: Kind, name: &str) -> String {
        format!(
            "/ferry/clusters/{cluster}/partitions/{}/{name}/",
            kind.plural()
        )
    }

    /// The observed state of a queue.
    pub fn observed_queue(cluster: &str, queue: &str) -> String {
        format!("/ferry/clusters/{cluster}/observed/queues/{queue}")
    }

    /// Prefix of the observed states of a topic's partitions.
    pub fn observed_topic(cluster: &str, topic: &str) -> String {
        format!("/ferry/clusters/{cluster}/observed/topics/{topic}/")
    }
}

/// The etcd name of a BrokerCluster: etcd cluster names are global, resource names
/// only unique per namespace.
pub fn cluster_etcd_name(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A new incarnation: nanoseconds since the Unix epoch, strictly increasing within
/// the process, like the broker's `clock::unique_id`, so incarnations of both never
/// meet in practice.
pub fn new_incarnation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// A stable 64-bit FNV-1a digest of `bytes`, in hex: the same in every operator
/// build (unlike `std`'s hasher), because it is stored in resource status.
pub fn digest(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}
