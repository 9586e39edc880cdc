//! Conversions between protobuf messages and broker domain types.

use ferry_proto::v1 as pb;

use crate::error::BrokerError;
use crate::queue::{
    DeliveredMessage, OutgoingMessage, Queue, QueueOverrides, QueueSettings, QueueStats,
};
use crate::topic::{DurabilitySetting, ReplicationSetting, Topic, TopicOverrides, TopicSettings};

/// The records of `batches` at or after `from`, decoded for clients that do not read
/// the batch format, and the offset to fetch next: past the last batch (a range the
/// broker lost to disk damage is skipped), or `from` when there was none.
pub fn decoded_messages(
    batches: &bytes::Bytes,
    from: u64,
) -> Result<(Vec<pb::FetchedMessage>, u64), ferry_records::RecordError> {
    let mut messages = Vec::new();
    let mut next_offset = from;
    for batch in ferry_records::Batches::new(batches) {
        let batch = batch?;
        next_offset = next_offset.max(batch.header.next_offset());
        if batch.header.is_lost_range() {
            continue;
        }
        for record in batch.records() {
            let record = record?;
            if record.offset < from {
                continue;
            }
            messages.push(pb::FetchedMessage {
                offset: record.offset,
                key: record.key.map(|key| batches.slice_ref(key)),
                value: batches.slice_ref(record.value),
                headers: record
                    .headers
                    .iter()
                    .map(|header| pb::Header {
                        key: header.key.to_owned(),
                        value: batches.slice_ref(header.value),
                    })
                    .collect(),
                timestamp_ms: record.timestamp_ms,
            });
        }
    }
    Ok((messages, next_offset))
}

fn durability_from(value: i32) -> Result<Option<DurabilitySetting>, BrokerError> {
    match pb::Durability::try_from(value) {
        Ok(pb::Durability::Unspecified) => Ok(None),
        Ok(pb::Durability::Fsync) => Ok(Some(DurabilitySetting::Fsync)),
        Ok(pb::Durability::Interval) => Ok(Some(DurabilitySetting::Interval)),
        Ok(pb::Durability::None) => Ok(Some(DurabilitySetting::None)),
        Err(_) => Err(BrokerError::InvalidArgument(format!(
            "unknown durability {value}"
        ))),
    }
}

fn replication_from(value: i32) -> Result<Option<ReplicationSetting>, BrokerError> {
    match pb::ReplicationMode::try_from(value) {
        Ok(pb::ReplicationMode::Unspecified) => Ok(None),
        Ok(pb::ReplicationMode::Sync) => Ok(Some(ReplicationSetting::Sync)),
        Ok(pb::ReplicationMode::Async) => Ok(Some(ReplicationSetting::Async)),
        Err(_) => Err(BrokerError::InvalidArgument(format!(
            "unknown replication mode {value}"
        ))),
    }
}

fn durability_to(setting: DurabilitySetting) -> i32 {
    let mode = match setting {
        DurabilitySetting::Fsync => pb::Durability::Fsync,
        DurabilitySetting::Interval => pb::Durability::Interval,
        DurabilitySetting::None => pb::Durability::None,
    };
    mode as i32
}

fn replication_to(setting: ReplicationSetting) -> i32 {
    let mode = match setting {
        ReplicationSetting::Sync => pb::ReplicationMode::Sync,
        ReplicationSetting::Async => pb::ReplicationMode::Async,
    };
    mode as i32
}

/// Reads the optional fields of a create request.
pub fn topic_overrides(config: Option<pb::TopicConfig>) -> Result<TopicOverrides, BrokerError> {
    let Some(config) = config else {
        return Ok(TopicOverrides::default());
    };
    let durability = durability_from(config.durability)?;
    let replication = replication_from(config.replication)?;
    Ok(TopicOverrides {
        partitions: (config.partitions > 0).then_some(config.partitions),
        replication_factor: (config.replication_factor > 0).then_some(config.replication_factor),
        durability,
        flush_interval_ms: config.flush_interval_ms,
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        max_message_bytes: config.max_message_bytes,
        replication,
    })
}

/// The settings in force, every field filled.
pub fn topic_config(settings: &TopicSettings) -> pb::TopicConfig {
    pb::TopicConfig {
        partitions: settings.partitions,
        replication_factor: settings.replication_factor,
        durability: durability_to(settings.durability),
        flush_interval_ms: Some(settings.flush_interval_ms),
        retention_ms: Some(settings.retention_ms),
        retention_bytes: Some(settings.retention_bytes),
        segment_bytes: Some(settings.segment_bytes),
        segment_ms: Some(settings.segment_ms),
        max_message_bytes: Some(settings.max_message_bytes),
        replication: replication_to(settings.replication),
    }
}

/// A topic with its partitions' state.
pub fn topic_info(topic: &Topic, host_id: &str) -> pb::TopicInfo {
    pb::TopicInfo {
        name: topic.name().to_owned(),
        config: Some(topic_config(&topic.record.settings)),
        partitions: topic
            .partitions
            .iter()
            .map(|p| {
                let log = p.log();
                pb::PartitionInfo {
                    partition: p.index(),
                    log_start_offset: log.start_offset(),
                    high_watermark: p.high_watermark(),
                    size_bytes: log.size_bytes(),
                    segments: u32::try_from(log.segment_count()).unwrap_or(u32::MAX),
                    leader_host_id: host_id.to_owned(),
                    leader_epoch: crate::topic::STANDALONE_LEADER_EPOCH,
                    replicas: vec![host_id.to_owned()],
                    in_sync_replicas: vec![host_id.to_owned()],
                }
            })
            .collect(),
        created_at_ms: topic.record.created_at_ms,
    }
}

/// Reads the optional fields of a create-queue request.
pub fn queue_overrides(config: Option<pb::QueueConfig>) -> Result<QueueOverrides, BrokerError> {
    let Some(config) = config else {
        return Ok(QueueOverrides::default());
    };
    Ok(QueueOverrides {
        fifo: config.fifo,
        durability: durability_from(config.durability)?,
        flush_interval_ms: config.flush_interval_ms,
        visibility_timeout_ms: config.visibility_timeout_ms,
        delay_ms: config.delay_ms,
        receive_wait_ms: config.receive_wait_ms,
        retention_ms: config.retention_ms,
        max_message_bytes: config.max_message_bytes,
        max_receive_count: config.max_receive_count,
        dead_letter_queue: config.dead_letter_queue.filter(|q| !q.is_empty()),
        dedup_window_ms: config.dedup_window_ms,
        content_based_dedup: config.content_based_dedup,
        max_messages: config.max_messages,
        replication_factor: (config.replication_factor > 0).then_some(config.replication_factor),
        replication: replication_from(config.replication)?,
    })
}

/// A queue's settings in force, every field filled.
pub fn queue_config(settings: &QueueSettings) -> pb::QueueConfig {
    pb::QueueConfig {
        fifo: settings.fifo,
        durability: durability_to(settings.durability),
        flush_interval_ms: Some(settings.flush_interval_ms),
        visibility_timeout_ms: Some(settings.visibility_timeout_ms),
        delay_ms: Some(settings.delay_ms),
        receive_wait_ms: Some(settings.receive_wait_ms),
        retention_ms: Some(settings.retention_ms),
        max_message_bytes: Some(settings.max_message_bytes),
        max_receive_count: Some(settings.max_receive_count),
        dead_letter_queue: settings.dead_letter_queue.clone(),
        dedup_window_ms: Some(settings.dedup_window_ms),
        content_based_dedup: settings.content_based_dedup,
        max_messages: Some(settings.max_messages),
        replication_factor: settings.replication_factor,
        replication: replication_to(settings.replication),
    }
}

/// A queue with its settings and current state.
pub fn queue_info(
    queue: &Queue,
    stats: &QueueStats,
    dead_letter_sources: Vec<String>,
) -> pb::QueueInfo {
    pb::QueueInfo {
        name: queue.name().to_owned(),
        config: Some(queue_config(&queue.record.settings)),
        stats: Some(pb::QueueStats {
            visible: stats.depth.visible,
            in_flight: stats.depth.in_flight,
            delayed: stats.depth.delayed,
            oldest_age_ms: stats.oldest_age_ms,
            consumers: stats.consumers,
            sent: stats.sent,
            received: stats.received,
            acked: stats.acked,
            redelivered: stats.redelivered,
            dead_lettered: stats.dead_lettered,
            expired: stats.expired,
            deduplicated: stats.deduplicated,
        }),
        created_at_ms: queue.record.created_at_ms,
        dead_letter_sources,
    }
}

/// A message to send, from the wire.
pub fn outgoing_message(message: pb::SendMessage) -> OutgoingMessage {
    let mut attributes: Vec<(String, String)> = message.attributes.into_iter().collect();
    // Protobuf maps have no order; a stable one keeps stored bytes deterministic.
    attributes.sort();
    OutgoingMessage {
        body: message.body.to_vec(),
        attributes,
        delay_ms: message.delay_ms,
        group: (!message.group_id.is_empty()).then_some(message.group_id),
        dedup_id: (!message.dedup_id.is_empty()).then_some(message.dedup_id),
    }
}

/// A delivered message, for the wire.
pub fn received_message(queue: &Queue, delivered: DeliveredMessage) -> pb::ReceivedMessage {
    let message = delivered.message;
    pb::ReceivedMessage {
        message_id: queue.message_id(delivered.offset),
        receipt: delivered.receipt,
        body: message.body.into(),
        attributes: message.attributes.into_iter().collect(),
        receive_count: delivered.receive_count,
        sent_at_ms: delivered.sent_at_ms,
        group_id: message.group.unwrap_or_default(),
        dedup_id: message.dedup_id.unwrap_or_default(),
        dead_letter: message.dead_letter.map(|origin| pb::DeadLetterOrigin {
            source_queue: origin.source_queue,
            source_message_id: origin.source_message_id,
            reason: origin.reason,
            receive_count: origin.receive_count,
            dead_lettered_at_ms: origin.at_ms,
        }),
    }
}
