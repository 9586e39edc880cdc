//! Types the Topic and Queue resources share.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How appended data is made durable before it is acknowledged (the broker's
/// `DurabilitySetting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
// No schema description: kube's `OptionalEnum` transform would put it over the
// description of every optional field of this type.
#[schemars(description = "")]
pub enum Durability {
    /// fsync before acknowledging, shared by concurrent writes (group commit).
    Fsync,
    /// Acknowledge after the write and flush every `flushIntervalMs`.
    Interval,
    /// Leave flushing to the operating system.
    None,
}

/// When a leader acknowledges a write (the broker's `ReplicationSetting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
// No schema description, as for `Durability`.
#[schemars(description = "")]
pub enum Replication {
    /// After a quorum of replicas persisted it.
    Sync,
    /// After the leader persisted it.
    Async,
}

/// What happens to the broker's topic or queue, and its data, when the resource is
/// deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the broker's topic or queue and its data; only the resource goes.
    #[default]
    Retain,
    /// Delete the broker's topic or queue and all its data.
    Delete,
    /// Delete it only when it holds no messages; otherwise keep it, like `Retain`.
    DeleteIfEmpty,
}

/// Partitions of a topic, and how many of them have a live leader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionCounts {
    /// Partitions whose leader is live and serving.
    pub ready: u32,
    /// Partitions the topic has on its cluster.
    pub total: u32,
}
