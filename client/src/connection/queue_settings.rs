//! Queue administration types: the settings a queue is created with and what a
//! describe reports (settings in force and current state).

use std::time::Duration;

use ferry_proto::v1 as pb;

use super::admin::{Durability, ReplicationMode};

/// Settings of a queue, fixed at creation. `None` (or `false`) fields take the
/// broker's defaults on create; a describe returns every field the broker filled in.
///
/// Times are in milliseconds, as the broker reports them; the `with_*` builders take
/// [`Duration`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSettings {
    /// FIFO: messages of one group are delivered in send order, one at a time.
    pub fifo: bool,
    /// When a stored message counts as durable.
    pub durability: Option<Durability>,
    /// Flush period for [`Durability::Interval`].
    pub flush_interval_ms: Option<u32>,
    /// How long a received message stays invisible unless acked (broker default 30 s).
    pub visibility_timeout_ms: Option<u64>,
    /// Delay for messages sent without their own (broker default 0).
    pub delay_ms: Option<u64>,
    /// Long-poll wait for receives that do not name one (broker default 20 s).
    pub receive_wait_ms: Option<u32>,
    /// Messages older than this are dropped; 0 keeps them forever (default 4 days).
    pub retention_ms: Option<u64>,
    /// Largest message: body plus attribute names and values (default 256 KiB).
    pub max_message_bytes: Option<u32>,
    /// Receives without an ack before a message moves to the dead-letter queue; 0 never.
    pub max_receive_count: Option<u32>,
    /// Dead-letter queue: an existing queue of the same kind (FIFO or standard).
    pub dead_letter_queue: Option<String>,
    /// Sends with one dedup id within this window are stored once (default 5 minutes).
    pub dedup_window_ms: Option<u64>,
    /// Use the SHA-256 of the body as dedup id for messages sent without one.
    pub content_based_dedup: bool,
    /// Most messages the queue holds; sends beyond it are refused (default 10 000 000).
    pub max_messages: Option<u64>,
    /// Replicas (1 on a standalone broker).
    pub replication_factor: Option<u32>,
    /// Replication mode (clusters only).
    pub replication: Option<ReplicationMode>,
}

/// Milliseconds of a duration, saturating: the broker rejects values over its limits.
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds of a duration for a 32-bit field, saturating like [`millis`].
pub(super) fn millis_u32(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

impl QueueSettings {
    /// Broker defaults for a standard (not FIFO) queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the queue FIFO.
    pub fn fifo(mut self) -> Self {
        self.fifo = true;
        self
    }

    /// Sets the durability.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }

    /// Sets the flush period for [`Durability::Interval`].
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval_ms = Some(millis_u32(interval));
        self
    }

    /// Sets how long received messages stay invisible unless acked.
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout_ms = Some(millis(timeout));
        self
    }

    /// Sets the delay of messages sent without their own.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(millis(delay));
        self
    }

    /// Sets the long-poll wait of receives that do not name one.
    pub fn with_receive_wait(mut self, wait: Duration) -> Self {
        self.receive_wait_ms = Some(millis_u32(wait));
        self
    }

    /// Sets the retention (`Duration::ZERO` keeps messages forever).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention_ms = Some(millis(retention));
        self
    }

    /// Sets the largest accepted message (body plus attributes).
    pub fn with_max_message_bytes(mut self, bytes: u32) -> Self {
        self.max_message_bytes = Some(bytes);
        self
    }

    /// Moves messages to `queue` after `max_receive_count` receives without an ack.
    pub fn with_dead_letter(mut self, queue: impl Into<String>, max_receive_count: u32) -> Self {
        self.dead_letter_queue = Some(queue.into());
        self.max_receive_count = Some(max_receive_count);
        self
    }

    /// Sets the deduplication window.
    pub fn with_dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window_ms = Some(millis(window));
        self
    }

    /// Deduplicates messages sent without a dedup id by the SHA-256 of their body.
    pub fn content_based_dedup(mut self) -> Self {
        self.content_based_dedup = true;
        self
    }

    /// Sets the most messages the queue holds.
    pub fn with_max_messages(mut self, messages: u64) -> Self {
        self.max_messages = Some(messages);
        self
    }

    /// Sets the replica count (clusters only).
    pub fn with_replication_factor(mut self, replicas: u32) -> Self {
        self.replication_factor = Some(replicas);
        self
    }

    /// Sets the replication mode (clusters only).
    pub fn with_replication(mut self, mode: ReplicationMode) -> Self {
        self.replication = Some(mode);
        self
    }

    pub(super) fn to_proto(&self) -> pb::QueueConfig {
        pb::QueueConfig {
            fifo: self.fifo,
            durability: self
                .durability
                .map_or(pb::Durability::Unspecified, Durability::to_proto)
                as i32,
            flush_interval_ms: self.flush_interval_ms,
            visibility_timeout_ms: self.visibility_timeout_ms,
            delay_ms: self.delay_ms,
            receive_wait_ms: self.receive_wait_ms,
            retention_ms: self.retention_ms,
            max_message_bytes: self.max_message_bytes,
            max_receive_count: self.max_receive_count,
            dead_letter_queue: self.dead_letter_queue.clone(),
            dedup_window_ms: self.dedup_window_ms,
            content_based_dedup: self.content_based_dedup,
            max_messages: self.max_messages,
            replication_factor: self.replication_factor.unwrap_or(0),
            replication: self
                .replication
                .map_or(pb::ReplicationMode::Unspecified, ReplicationMode::to_proto)
                as i32,
        }
    }

    pub(super) fn from_proto(config: pb::QueueConfig) -> Self {
        Self {
            fifo: config.fifo,
            durability: Durability::from_proto(config.durability),
            flush_interval_ms: config.flush_interval_ms,
            visibility_timeout_ms: config.visibility_timeout_ms,
            delay_ms: config.delay_ms,
            receive_wait_ms: config.receive_wait_ms,
            retention_ms: config.retention_ms,
            max_message_bytes: config.max_message_bytes,
            max_receive_count: config.max_receive_count,
            // The broker may send an empty name for "no dead-letter queue".
            dead_letter_queue: config.dead_letter_queue.filter(|name| !name.is_empty()),
            dedup_window_ms: config.dedup_window_ms,
            content_based_dedup: config.content_based_dedup,
            max_messages: config.max_messages,
            replication_factor: Some(config.replication_factor).filter(|&n| n > 0),
            replication: ReplicationMode::from_proto(config.replication),
        }
    }
}

/// The state of a queue when it was described. Counters count since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages a receive could return now (FIFO: including those queued behind an
    /// earlier message of their group).
    pub visible: u64,
    /// Received and neither acked nor timed out.
    pub in_flight: u64,
    /// Waiting for their delay to end.
    pub delayed: u64,
    /// Age of the oldest message; 0 when the queue is empty.
    pub oldest_age_ms: u64,
    /// Distinct consumers that received in the last minute or are waiting now.
    pub consumers: u32,
    /// Messages stored.
    pub sent: u64,
    /// Messages delivered (each redelivery counts).
    pub received: u64,
    /// Messages acked.
    pub acked: u64,
    /// Deliveries after the first of a message.
    pub redelivered: u64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Messages dropped by retention.
    pub expired: u64,
    /// Sends not stored because of a dedup id seen within the window.
    pub deduplicated: u64,
}

impl QueueStats {
    /// Messages in the queue in any state (visible, in flight or delayed).
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }

    fn from_proto(stats: pb::QueueStats) -> Self {
        Self {
            visible: stats.visible,
            in_flight: stats.in_flight,
            delayed: stats.delayed,
            oldest_age_ms: stats.oldest_age_ms,
            consumers: stats.consumers,
            sent: stats.sent,
            received: stats.received,
            acked: stats.acked,
            redelivered: stats.redelivered,
            dead_lettered: stats.dead_lettered,
            expired: stats.expired,
            deduplicated: stats.deduplicated,
        }
    }
}

/// A queue with the settings in force and its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDescription {
    /// Queue name.
    pub name: String,
    /// Settings in force.
    pub settings: QueueSettings,
    /// Message counts and counters.
    pub stats: QueueStats,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Queues whose dead-letter queue this one is.
    pub dead_letter_sources: Vec<String>,
}

impl QueueDescription {
    pub(super) fn from_proto(info: pb::QueueInfo) -> Self {
        let mut dead_letter_sources = info.dead_letter_sources;
        dead_letter_sources.sort();
        Self {
            name: info.name,
            settings: QueueSettings::from_proto(info.config.unwrap_or_default()),
            stats: QueueStats::from_proto(info.stats.unwrap_or_default()),
            created_at_ms: info.created_at_ms,
            dead_letter_sources,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_proto() {
        let settings = QueueSettings::new()
            .fifo()
            .with_durability(Durability::Interval)
            .with_flush_interval(Duration::from_millis(200))
            .with_visibility_timeout(Duration::from_millis(1500))
            .with_delay(Duration::from_secs(2))
            .with_receive_wait(Duration::from_secs(5))
            .with_retention(Duration::ZERO)
            .with_max_message_bytes(1024)
            .with_dead_letter("dlq", 3)
            .with_dedup_window(Duration::from_secs(60))
            .content_based_dedup()
            .with_max_messages(1000)
            .with_replication_factor(3)
            .with_replication(ReplicationMode::Async);
        assert_eq!(settings.visibility_timeout_ms, Some(1500));
        assert_eq!(settings.retention_ms, Some(0));
        assert_eq!(QueueSettings::from_proto(settings.to_proto()), settings);
    }

    #[test]
    fn defaults_leave_every_field_to_the_broker() {
        let config = QueueSettings::new().to_proto();
        assert_eq!(config, pb::QueueConfig::default());
        assert_eq!(QueueSettings::from_proto(config), QueueSettings::new());
    }

    #[test]
    fn huge_durations_saturate() {
        let settings = QueueSettings::new().with_receive_wait(Duration::from_secs(u64::MAX));
        assert_eq!(settings.receive_wait_ms, Some(u32::MAX));
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
