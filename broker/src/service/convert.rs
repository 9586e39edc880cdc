//! Conversions between protobuf messages and broker domain types.

use ferry_proto::v1 as pb;

use crate::error::BrokerError;
use crate::topic::{DurabilitySetting, ReplicationSetting, Topic, TopicOverrides, TopicSettings};

/// Reads the optional fields of a create request.
pub fn topic_overrides(config: Option<pb::TopicConfig>) -> Result<TopicOverrides, BrokerError> {
    let Some(config) = config else {
        return Ok(TopicOverrides::default());
    };
    let durability = match pb::Durability::try_from(config.durability) {
        Ok(pb::Durability::Unspecified) => None,
        Ok(pb::Durability::Fsync) => Some(DurabilitySetting::Fsync),
        Ok(pb::Durability::Interval) => Some(DurabilitySetting::Interval),
        Ok(pb::Durability::None) => Some(DurabilitySetting::None),
        Err(_) => {
            return Err(BrokerError::InvalidArgument(format!(
                "unknown durability {}",
                config.durability
            )));
        }
    };
    let replication = match pb::ReplicationMode::try_from(config.replication) {
        Ok(pb::ReplicationMode::Unspecified) => None,
        Ok(pb::ReplicationMode::Sync) => Some(ReplicationSetting::Sync),
        Ok(pb::ReplicationMode::Async) => Some(ReplicationSetting::Async),
        Err(_) => {
            return Err(BrokerError::InvalidArgument(format!(
                "unknown replication mode {}",
                config.replication
            )));
        }
    };
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
        durability: match settings.durability {
            DurabilitySetting::Fsync => pb::Durability::Fsync,
            DurabilitySetting::Interval => pb::Durability::Interval,
            DurabilitySetting::None => pb::Durability::None,
        } as i32,
        flush_interval_ms: Some(settings.flush_interval_ms),
        retention_ms: Some(settings.retention_ms),
        retention_bytes: Some(settings.retention_bytes),
        segment_bytes: Some(settings.segment_bytes),
        segment_ms: Some(settings.segment_ms),
        max_message_bytes: Some(settings.max_message_bytes),
        replication: match settings.replication {
            ReplicationSetting::Sync => pb::ReplicationMode::Sync,
            ReplicationSetting::Async => pb::ReplicationMode::Async,
        } as i32,
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
