//! A topic's settings as stored in metadata, and how they map onto a storage log.

use ferry_storage::{Durability, LogConfig};
use serde::{Deserialize, Serialize};

use crate::config::Limits;
use crate::error::BrokerError;

/// How appended data is made durable before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    /// fsync before acknowledging, with group commit.
    Fsync,
    /// Acknowledge after the write; flush every `flush_interval_ms`.
    Interval,
    /// Leave flushing to the operating system.
    None,
}

/// How a partition leader replicates before acknowledging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationSetting {
    /// After a quorum persisted the batch.
    Sync,
    /// After the leader persisted the batch.
    Async,
}

/// Every setting of a topic, with the values in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSettings {
    /// Partition count.
    pub partitions: u32,
    /// Replicas per partition; 1 on a standalone host.
    pub replication_factor: u32,
    /// Durability mode. Default fsync.
    pub durability: DurabilitySetting,
    /// Flush period for interval durability. Default 1,000 ms.
    pub flush_interval_ms: u32,
    /// Age after which whole segments are deleted; 0 keeps forever. Default 7 days.
    pub retention_ms: u64,
    /// Per-partition size above which oldest segments are deleted; 0 means no limit.
    pub retention_bytes: u64,
    /// Segment roll size. Default 128 MiB.
    pub segment_bytes: u64,
    /// Segment roll age. Default 7 days.
    pub segment_ms: u64,
    /// Largest record. Default 1 MiB.
    pub max_message_bytes: u32,
    /// Replication mode. Default sync.
    pub replication: ReplicationSetting,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// Smallest segment the broker accepts: tiny segments waste file handles.
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Shortest interval flush period.
pub const MIN_FLUSH_INTERVAL_MS: u32 = 1;

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            partitions: 1,
            replication_factor: 1,
            durability: DurabilitySetting::Fsync,
            flush_interval_ms: 1000,
            retention_ms: 7 * DAY_MS,
            retention_bytes: 0,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * DAY_MS,
            max_message_bytes: 1024 * 1024,
            replication: ReplicationSetting::Sync,
        }
    }
}

impl TopicSettings {
    /// Checks the settings against the broker's limits; `max_replicas` is 1 on a
    /// standalone host.
    pub fn validate(&self, limits: &Limits, max_replicas: u32) -> Result<(), BrokerError> {
        let invalid = |msg: String| Err(BrokerError::InvalidArgument(msg));
        if self.partitions == 0 || self.partitions > limits.max_partitions_per_topic {
            return invalid(format!(
                "partitions must be between 1 and {}, got {}",
                limits.max_partitions_per_topic, self.partitions
            ));
        }
        if max_replicas == 1 && self.replication_factor != 1 {
            return invalid(format!(
                "replication factor must be 1 on a standalone host, got {}",
                self.replication_factor
            ));
        }
        if self.replication_factor == 0 || self.replication_factor > max_replicas {
            return invalid(format!(
                "replication factor must be between 1 and {max_replicas}, got {}",
                self.replication_factor
            ));
        }
        if self.flush_interval_ms < MIN_FLUSH_INTERVAL_MS {
            return invalid("flush_interval_ms must be at least 1".into());
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES || self.segment_bytes > u64::from(u32::MAX) {
            return invalid(format!(
                "segment_bytes must be between {MIN_SEGMENT_BYTES} and {}, got {}",
                u32::MAX,
                self.segment_bytes
            ));
        }
        if self.segment_ms == 0 {
            return invalid("segment_ms must be greater than 0".into());
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > limits.max_message_bytes {
            return invalid(format!(
                "max_message_bytes must be between 1 and {}, got {}",
                limits.max_message_bytes, self.max_message_bytes
            ));
        }
        Ok(())
    }

    /// The storage configuration of one partition log of this topic.
    pub fn log_config(&self, limits: &Limits) -> LogConfig {
        LogConfig {
            durability: match self.durability {
                DurabilitySetting::Fsync => Durability::Fsync,
                DurabilitySetting::Interval => Durability::Interval,
                DurabilitySetting::None => Durability::None,
            },
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_bytes: (self.retention_bytes > 0).then_some(self.retention_bytes),
            retention_ms: (self.retention_ms > 0).then_some(self.retention_ms),
            max_record_bytes: self.max_message_bytes as usize,
            max_batch_bytes: limits.max_batch_bytes as usize,
            page_cache_window_bytes: limits.page_cache_window(),
            ..LogConfig::default()
        }
    }
}

/// Fields a create request may set; the rest come from the broker's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicOverrides {
    /// Partition count.
    pub partitions: Option<u32>,
    /// Replicas per partition.
    pub replication_factor: Option<u32>,
    /// Durability mode.
    pub durability: Option<DurabilitySetting>,
    /// Interval flush period.
    pub flush_interval_ms: Option<u32>,
    /// Retention age (0 = forever).
    pub retention_ms: Option<u64>,
    /// Retention size (0 = unlimited).
    pub retention_bytes: Option<u64>,
    /// Segment roll size.
    pub segment_bytes: Option<u64>,
    /// Segment roll age.
    pub segment_ms: Option<u64>,
    /// Largest record.
    pub max_message_bytes: Option<u32>,
    /// Replication mode.
    pub replication: Option<ReplicationSetting>,
}

impl TopicOverrides {
    /// Fills unset fields from `defaults`.
    pub fn resolve(&self, defaults: &TopicSettings) -> TopicSettings {
        TopicSettings {
            partitions: self.partitions.unwrap_or(defaults.partitions),
            replication_factor: self
                .replication_factor
                .unwrap_or(defaults.replication_factor),
            durability: self.durability.unwrap_or(defaults.durability),
            flush_interval_ms: self.flush_interval_ms.unwrap_or(defaults.flush_interval_ms),
            retention_ms: self.retention_ms.unwrap_or(defaults.retention_ms),
            retention_bytes: self.retention_bytes.unwrap_or(defaults.retention_bytes),
            segment_bytes: self.segment_bytes.unwrap_or(defaults.segment_bytes),
            segment_ms: self.segment_ms.unwrap_or(defaults.segment_ms),
            max_message_bytes: self.max_message_bytes.unwrap_or(defaults.max_message_bytes),
            replication: self.replication.unwrap_or(defaults.replication),
        }
    }
}

/// What the metadata store keeps for each topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Topic name.
    pub name: String,
    /// Settings in force.
    pub settings: TopicSettings,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Unique per incarnation: a topic deleted and created again gets a new id,
    /// so a stale directory is never mistaken for the new topic's data.
    pub incarnation: u64,
    /// The broker cluster that owns it (the external cluster manager's mapping);
    /// `None` on a standalone host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueSettings;

    #[test]
    fn the_page_cache_window_reaches_topic_and_queue_logs() {
        let limits = Limits::default();
        let window = Some(ferry_storage::PAGE_CACHE_WINDOW_BYTES_DEFAULT);
        let topic = TopicSettings::default();
        let queue = QueueSettings::default();
        assert_eq!(topic.log_config(&limits).page_cache_window_bytes, window);
        assert_eq!(queue.log_config(&limits).page_cache_window_bytes, window);
        // 0 leaves caching to the OS.
        let off = Limits {
            page_cache_window_bytes: 0,
            ..Limits::default()
        };
        assert_eq!(topic.log_config(&off).page_cache_window_bytes, None);
        assert_eq!(queue.log_config(&off).page_cache_window_bytes, None);
    }
}
