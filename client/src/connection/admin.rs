//! Topic and group administration: create, delete, list and describe.

use std::fmt;
use std::str::FromStr;

use ferry_proto::v1 as pb;

use super::Client;
use crate::error::ClientError;
use crate::types::TopicPartition;

/// How a topic makes appended data durable before acknowledging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before acknowledging (concurrent appends share one fsync).
    Fsync,
    /// Acknowledge after the write; flush every `flush_interval_ms`.
    Interval,
    /// Acknowledge after the write; leave flushing to the operating system.
    None,
}

impl Durability {
    pub(super) fn to_proto(self) -> pb::Durability {
        match self {
            Self::Fsync => pb::Durability::Fsync,
            Self::Interval => pb::Durability::Interval,
            Self::None => pb::Durability::None,
        }
    }

    pub(super) fn from_proto(value: i32) -> Option<Self> {
        match pb::Durability::try_from(value).ok()? {
            pb::Durability::Fsync => Some(Self::Fsync),
            pb::Durability::Interval => Some(Self::Interval),
            pb::Durability::None => Some(Self::None),
            pb::Durability::Unspecified => None,
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fsync => "fsync",
            Self::Interval => "interval",
            Self::None => "none",
        })
    }
}

impl FromStr for Durability {
    type Err = ClientError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "fsync" => Ok(Self::Fsync),
            "interval" => Ok(Self::Interval),
            "none" => Ok(Self::None),
            other => Err(ClientError::InvalidArgument(format!(
                "unknown durability '{other}' (expected fsync, interval or none)"
            ))),
        }
    }
}

/// How a partition leader replicates before acknowledging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMode {
    /// After a quorum of replicas persisted the batch.
    Sync,
    /// After the leader persisted the batch.
    Async,
}

impl ReplicationMode {
    pub(super) fn to_proto(self) -> pb::ReplicationMode {
        match self {
            Self::Sync => pb::ReplicationMode::Sync,
            Self::Async => pb::ReplicationMode::Async,
        }
    }

    pub(super) fn from_proto(value: i32) -> Option<Self> {
        match pb::ReplicationMode::try_from(value).ok()? {
            pb::ReplicationMode::Sync => Some(Self::Sync),
            pb::ReplicationMode::Async => Some(Self::Async),
            pb::ReplicationMode::Unspecified => None,
        }
    }
}

impl fmt::Display for ReplicationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sync => "sync",
            Self::Async => "async",
        })
    }
}

/// Settings of a topic. `None` fields take the broker's defaults on create; a
/// describe returns every field the broker filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSettings {
    /// Number of partitions (at least 1).
    pub partitions: u32,
    /// Replicas per partition (1 on a standalone broker).
    pub replication_factor: Option<u32>,
    /// When an append counts as durable.
    pub durability: Option<Durability>,
    /// Flush period for [`Durability::Interval`].
    pub flush_interval_ms: Option<u32>,
    /// Delete segments whose newest record is older than this; 0 keeps forever.
    pub retention_ms: Option<u64>,
    /// Per partition: delete the oldest segments while the log is larger; 0: no limit.
    pub retention_bytes: Option<u64>,
    /// Roll the active segment at this size.
    pub segment_bytes: Option<u64>,
    /// Roll the active segment when its first record is this old.
    pub segment_ms: Option<u64>,
    /// Largest accepted record (key + value + headers).
    pub max_message_bytes: Option<u32>,
    /// Replication mode (clusters only).
    pub replication: Option<ReplicationMode>,
}

impl TopicSettings {
    /// Broker defaults with the given partition count.
    pub fn new(partitions: u32) -> Self {
        Self {
            partitions,
            ..Self::default()
        }
    }

    /// Sets the durability.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }

    fn to_proto(&self) -> pb::TopicConfig {
        pb::TopicConfig {
            partitions: self.partitions,
            replication_factor: self.replication_factor.unwrap_or(0),
            durability: self
                .durability
                .map_or(pb::Durability::Unspecified, Durability::to_proto)
                as i32,
            flush_interval_ms: self.flush_interval_ms,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            max_message_bytes: self.max_message_bytes,
            replication: self
                .replication
                .map_or(pb::ReplicationMode::Unspecified, ReplicationMode::to_proto)
                as i32,
        }
    }

    fn from_proto(config: pb::TopicConfig) -> Self {
        Self {
            partitions: config.partitions,
            replication_factor: Some(config.replication_factor).filter(|&n| n > 0),
            durability: Durability::from_proto(config.durability),
            flush_interval_ms: config.flush_interval_ms,
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            segment_bytes: config.segment_bytes,
            segment_ms: config.segment_ms,
            max_message_bytes: config.max_message_bytes,
            replication: ReplicationMode::from_proto(config.replication),
        }
    }
}

/// A topic with the settings in force and the state of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Settings in force.
    pub settings: TopicSettings,
    /// Partitions in partition order.
    pub partitions: Vec<PartitionState>,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
}

impl TopicDescription {
    fn from_proto(info: pb::TopicInfo) -> Self {
        let mut partitions: Vec<PartitionState> = info
            .partitions
            .into_iter()
            .map(|p| PartitionState {
                partition: p.partition,
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                size_bytes: p.size_bytes,
                segments: p.segments,
                leader_host_id: p.leader_host_id,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas,
                in_sync_replicas: p.in_sync_replicas,
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Self {
            name: info.name,
            settings: TopicSettings::from_proto(info.config.unwrap_or_default()),
            partitions,
            created_at_ms: info.created_at_ms,
        }
    }

    /// Partition count: the configured one, or the partitions listed when unset.
    pub fn partition_count(&self) -> u32 {
        if self.settings.partitions > 0 {
            self.settings.partitions
        } else {
            self.partitions.len() as u32
        }
    }

    /// Records currently stored across partitions (high watermark − log start).
    pub fn stored_records(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.high_watermark.saturating_sub(p.log_start_offset))
            .sum()
    }
}

/// The state of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// Partition number.
    pub partition: u32,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// One past the last offset consumers may read.
    pub high_watermark: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Number of log segments.
    pub segments: u32,
    /// Host that leads the partition.
    pub leader_host_id: String,
    /// Leader epoch.
    pub leader_epoch: u64,
    /// Hosts holding a replica.
    pub replicas: Vec<String>,
    /// Replicas caught up with the leader.
    pub in_sync_replicas: Vec<String>,
}

/// A consumer group: members, their partitions and the lag of its committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group name.
    pub group: String,
    /// Current generation (bumped by each assignment change).
    pub generation: u64,
    /// Current members.
    pub members: Vec<GroupMember>,
    /// Committed offset and lag per partition.
    pub lag: Vec<PartitionLag>,
}

/// One member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Id the coordinator gave the member.
    pub member_id: String,
    /// Id the member gave itself.
    pub client_id: String,
    /// Partitions the coordinator assigns to it.
    pub assigned: Vec<TopicPartition>,
    /// Partitions it reports as consuming.
    pub owned: Vec<TopicPartition>,
}

/// Lag of a group on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic and partition.
    pub partition: TopicPartition,
    /// Next offset the group will consume.
    pub committed_offset: u64,
    /// End of the partition.
    pub high_watermark: u64,
    /// Records not yet consumed.
    pub lag: u64,
}

fn partitions(list: Vec<pb::TopicPartition>) -> Vec<TopicPartition> {
    list.into_iter().map(TopicPartition::from).collect()
}

impl Client {
    /// Creates a topic and returns it as the broker made it.
    pub async fn create_topic(
        &self,
        name: &str,
        settings: &TopicSettings,
    ) -> Result<TopicDescription, ClientError> {
        if settings.partitions == 0 {
            return Err(ClientError::InvalidArgument(
                "a topic needs at least one partition".into(),
            ));
        }
        let request = pb::CreateTopicRequest {
            name: name.to_owned(),
            config: Some(settings.to_proto()),
        };
        let response = self
            .admin_service()
            .create_topic(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        let info = response
            .topic
            .ok_or_else(|| ClientError::Protocol("CreateTopic returned no topic".into()))?;
        Ok(TopicDescription::from_proto(info))
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = pb::DeleteTopicRequest {
            name: name.to_owned(),
        };
        self.admin_service()
            .delete_topic(request)
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    /// Lists every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>, ClientError> {
        let response = self
            .admin_service()
            .list_topics(pb::ListTopicsRequest {})
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        let mut topics: Vec<_> = response
            .topics
            .into_iter()
            .map(TopicDescription::from_proto)
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// Describes one topic: settings and per-partition offsets and sizes.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let request = pb::DescribeTopicRequest {
            name: name.to_owned(),
        };
        let response = self
            .admin_service()
            .describe_topic(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        let info = response
            .topic
            .ok_or_else(|| ClientError::Protocol("DescribeTopic returned no topic".into()))?;
        Ok(TopicDescription::from_proto(info))
    }

    /// Lists the names of every consumer group, sorted.
    pub async fn list_groups(&self) -> Result<Vec<String>, ClientError> {
        let mut groups = self
            .group_service()
            .list_groups(pb::ListGroupsRequest {})
            .await
            .map_err(|status| self.error(&status))?
            .into_inner()
            .groups;
        groups.sort();
        Ok(groups)
    }

    /// Deletes a consumer group with no members, and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let request = pb::DeleteGroupRequest {
            group: group.to_owned(),
        };
        self.group_service()
            .delete_group(request)
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    /// Describes a consumer group: members, assignment and lag per partition.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let request = pb::DescribeGroupRequest {
            group: group.to_owned(),
        };
        let response = self
            .group_service()
            .describe_group(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        let mut lag: Vec<PartitionLag> = response
            .lag
            .into_iter()
            .map(|l| PartitionLag {
                partition: TopicPartition::new(l.topic, l.partition),
                committed_offset: l.committed_offset,
                high_watermark: l.high_watermark,
                lag: l.lag,
            })
            .collect();
        lag.sort_by(|a, b| a.partition.cmp(&b.partition));
        Ok(GroupDescription {
            group: response.group,
            generation: response.generation,
            members: response
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    assigned: partitions(m.assigned),
                    owned: partitions(m.owned),
                })
                .collect(),
            lag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_proto() {
        let settings = TopicSettings {
            partitions: 3,
            durability: Some(Durability::Interval),
            flush_interval_ms: Some(200),
            retention_ms: Some(86_400_000),
            ..TopicSettings::default()
        };
        let back = TopicSettings::from_proto(settings.to_proto());
        assert_eq!(back, settings);
    }

    #[test]
    fn durability_parses_case_insensitively() {
        assert_eq!("FSYNC".parse::<Durability>().ok(), Some(Durability::Fsync));
        assert!("sometimes".parse::<Durability>().is_err());
    }
}
