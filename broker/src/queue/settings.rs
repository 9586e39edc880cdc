//! A queue's settings as stored in metadata, with defaults and validation.

use ferry_storage::{Durability, LogConfig};
use serde::{Deserialize, Serialize};

use crate::config::Limits;
use crate::error::BrokerError;
use crate::topic::{DurabilitySetting, ReplicationSetting};

const SECOND_MS: u64 = 1000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

/// Every setting of a queue, with the values in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// FIFO: per-group order, one message in flight per group. Default false.
    pub fifo: bool,
    /// Durability of sends and of state changes (acks, receives). Default fsync.
    pub durability: DurabilitySetting,
    /// Flush period for interval durability. Default 1,000 ms.
    pub flush_interval_ms: u32,
    /// Default visibility timeout. Default 30 s.
    pub visibility_timeout_ms: u64,
    /// Default delay of a sent message. Default 0.
    pub delay_ms: u64,
    /// Long-poll wait of receives that name none. Default 20 s.
    pub receive_wait_ms: u32,
    /// Messages older than this are dropped; 0 keeps them. Default 4 days.
    pub retention_ms: u64,
    /// Largest message (body + attributes). Default 256 KiB.
    pub max_message_bytes: u32,
    /// Receives before dead-lettering; 0 never. Default 0.
    pub max_receive_count: u32,
    /// Where messages go after `max_receive_count` receives.
    pub dead_letter_queue: Option<String>,
    /// How long a dedup id is remembered. Default 5 minutes.
    pub dedup_window_ms: u64,
    /// Derive a dedup id from the body's SHA-256 when a send has none. Default false.
    pub content_based_dedup: bool,
    /// Most messages held. Default 10,000,000.
    pub max_messages: u64,
    /// Replicas; 1 on a standalone host.
    pub replication_factor: u32,
    /// Replication mode. Default sync.
    pub replication: ReplicationSetting,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            fifo: false,
            durability: DurabilitySetting::Fsync,
            flush_interval_ms: 1000,
            visibility_timeout_ms: 30 * SECOND_MS,
            delay_ms: 0,
            receive_wait_ms: 20_000,
            retention_ms: 4 * DAY_MS,
            max_message_bytes: 256 * 1024,
            max_receive_count: 0,
            dead_letter_queue: None,
            dedup_window_ms: 5 * MINUTE_MS,
            content_based_dedup: false,
            max_messages: 10_000_000,
            replication_factor: 1,
            replication: ReplicationSetting::Sync,
        }
    }
}

impl QueueSettings {
    /// Checks the settings against the broker's limits (the dead-letter queue's
    /// existence is checked by the registry).
    pub fn validate(&self, limits: &Limits, max_replicas: u32) -> Result<(), BrokerError> {
        let invalid = |msg: String| Err(BrokerError::InvalidArgument(msg));
        let in_range = |name: &str, value: u64, max: u64| {
            if value > max {
                return invalid(format!("{name} must be at most {max}, got {value}"));
            }
            Ok(())
        };
        in_range(
            "visibility_timeout_ms",
            self.visibility_timeout_ms,
            limits.max_visibility_timeout_ms,
        )?;
        in_range("delay_ms", self.delay_ms, limits.max_delay_ms)?;
        in_range(
            "receive_wait_ms",
            u64::from(self.receive_wait_ms),
            u64::from(limits.max_receive_wait_ms),
        )?;
        in_range(
            "dedup_window_ms",
            self.dedup_window_ms,
            limits.max_dedup_window_ms,
        )?;
        in_range("max_messages", self.max_messages, limits.max_queue_messages)?;
        if self.max_messages == 0 {
            return invalid("max_messages must be at least 1".into());
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > limits.max_message_bytes {
            return invalid(format!(
                "max_message_bytes must be between 1 and {}, got {}",
                limits.max_message_bytes, self.max_message_bytes
            ));
        }
        if self.flush_interval_ms == 0 {
            return invalid("flush_interval_ms must be at least 1".into());
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
        match (&self.dead_letter_queue, self.max_receive_count) {
            (Some(_), 0) => {
                invalid("a dead-letter queue needs max_receive_count of at least 1".into())
            }
            (None, n) if n > 0 => invalid(format!(
                "max_receive_count {n} needs a dead_letter_queue to move messages to"
            )),
            _ => Ok(()),
        }
    }

    /// Storage configuration of the queue's message log and journal. Retention is
    /// the queue's own business (messages are dropped by the state machine and
    /// segments below the oldest live message deleted), so the log keeps everything.
    pub fn log_config(&self, limits: &Limits) -> LogConfig {
        LogConfig {
            durability: match self.durability {
                DurabilitySetting::Fsync => Durability::Fsync,
                DurabilitySetting::Interval => Durability::Interval,
                DurabilitySetting::None => Durability::None,
            },
            segment_bytes: limits.queue_segment_bytes,
            max_record_bytes: (self.max_message_bytes as usize)
                .saturating_add(QUEUE_HEADER_ALLOWANCE),
            max_batch_bytes: limits.max_batch_bytes as usize,
            page_cache_window_bytes: limits.page_cache_window(),
            ..LogConfig::default()
        }
    }
}

/// Room for the system headers a stored message carries beside the user's bytes.
pub const QUEUE_HEADER_ALLOWANCE: usize = 4096;

/// Fields a create request may set; the rest come from defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueOverrides {
    /// FIFO queue.
    pub fifo: bool,
    /// Durability mode.
    pub durability: Option<DurabilitySetting>,
    /// Interval flush period.
    pub flush_interval_ms: Option<u32>,
    /// Default visibility timeout.
    pub visibility_timeout_ms: Option<u64>,
    /// Default delay.
    pub delay_ms: Option<u64>,
    /// Default long-poll wait.
    pub receive_wait_ms: Option<u32>,
    /// Retention (0 = forever).
    pub retention_ms: Option<u64>,
    /// Largest message.
    pub max_message_bytes: Option<u32>,
    /// Receives before dead-lettering.
    pub max_receive_count: Option<u32>,
    /// Dead-letter queue.
    pub dead_letter_queue: Option<String>,
    /// Dedup window.
    pub dedup_window_ms: Option<u64>,
    /// Content-based dedup.
    pub content_based_dedup: bool,
    /// Most messages held.
    pub max_messages: Option<u64>,
    /// Replicas.
    pub replication_factor: Option<u32>,
    /// Replication mode.
    pub replication: Option<ReplicationSetting>,
}

impl QueueOverrides {
    /// Fills unset fields from `defaults`.
    pub fn resolve(&self, defaults: &QueueSettings) -> QueueSettings {
        QueueSettings {
            fifo: self.fifo,
            durability: self.durability.unwrap_or(defaults.durability),
            flush_interval_ms: self.flush_interval_ms.unwrap_or(defaults.flush_interval_ms),
            visibility_timeout_ms: self
                .visibility_timeout_ms
                .unwrap_or(defaults.visibility_timeout_ms),
            delay_ms: self.delay_ms.unwrap_or(defaults.delay_ms),
            receive_wait_ms: self.receive_wait_ms.unwrap_or(defaults.receive_wait_ms),
            retention_ms: self.retention_ms.unwrap_or(defaults.retention_ms),
            max_message_bytes: self.max_message_bytes.unwrap_or(defaults.max_message_bytes),
            max_receive_count: self.max_receive_count.unwrap_or(defaults.max_receive_count),
            dead_letter_queue: self
                .dead_letter_queue
                .clone()
                .or_else(|| defaults.dead_letter_queue.clone()),
            dedup_window_ms: self.dedup_window_ms.unwrap_or(defaults.dedup_window_ms),
            content_based_dedup: self.content_based_dedup,
            max_messages: self.max_messages.unwrap_or(defaults.max_messages),
            replication_factor: self
                .replication_factor
                .unwrap_or(defaults.replication_factor),
            replication: self.replication.unwrap_or(defaults.replication),
        }
    }
}

/// What the metadata store keeps for each queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    /// Queue name.
    pub name: String,
    /// Settings in force.
    pub settings: QueueSettings,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Unique per incarnation (see `TopicRecord::incarnation`); also part of every
    /// receipt handle, so a receipt from a deleted queue never matches a new one.
    pub incarnation: u64,
    /// The broker cluster that owns it (the external cluster manager's mapping);
    /// `None` on a standalone host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_checked() {
        let limits = Limits::default();
        QueueSettings::default()
            .validate(&limits, 1)
            .expect("defaults valid");
        let too_long = QueueSettings {
            visibility_timeout_ms: limits.max_visibility_timeout_ms + 1,
            ..QueueSettings::default()
        };
        assert!(too_long.validate(&limits, 1).is_err());
        let dlq_without_count = QueueSettings {
            dead_letter_queue: Some("dlq".into()),
            ..QueueSettings::default()
        };
        assert!(dlq_without_count.validate(&limits, 1).is_err());
        let count_without_dlq = QueueSettings {
            max_receive_count: 3,
            ..QueueSettings::default()
        };
        assert!(count_without_dlq.validate(&limits, 1).is_err());
    }
}
