//! Consumer group coordination: membership, cooperative partition assignment and
//! commit checks, as a pure state machine.
//!
//! # Protocol
//!
//! Assignment is server-side and cooperative (in the spirit of Kafka's KIP-848):
//! there is no stop-the-world rebalance. The coordinator keeps, per member, three
//! sets of partitions:
//!
//! - `target`: what the assignor wants the member to have. Recomputed on join,
//!   leave, expiry and topic changes; the group's generation is bumped whenever
//!   any member's target changes.
//! - `owned`: what the member last reported consuming in a heartbeat.
//! - `assigned`: what the coordinator last told the member it may consume.
//!
//! A member *holds* `owned ∪ assigned`: everything it might be consuming right
//! now. A heartbeat answers with
//! `assigned = target ∩ (held by this member ∪ held by nobody)`, so a partition
//! moving from A to B reaches B only after A has seen it missing from its own
//! `assigned`, stopped consuming it and left it out of a later heartbeat (or
//! after A left or expired).
//!
//! Invariant: the held sets of the members of a group are pairwise disjoint, so
//! no two members are ever told they may consume the same partition.
//!
//! # Boundaries
//!
//! Invariant: this module knows nothing of gRPC, protobuf, tokio, files or wall
//! clocks. Time is injected as `now: Instant`, topic metadata as a
//! `partitions_of` closure; committed offsets are persisted by the caller, which
//! asks [`GroupCoordinator::check_commit`] before writing them.

mod assignor;
mod coordinator;
#[cfg(test)]
mod tests;

use std::fmt;

pub use coordinator::GroupCoordinator;

/// One partition of one topic; ordered by topic, then partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: String,
    /// The partition index within the topic.
    pub partition: u32,
}

impl TopicPartition {
    /// Builds a topic partition from its parts.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Limits and timings of the group coordinator; see [`GroupConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Smallest session timeout a member may ask for. Default 1_000 ms.
    pub session_timeout_ms_min: u32,
    /// Largest session timeout a member may ask for. Default 300_000 ms.
    pub session_timeout_ms_max: u32,
    /// Session timeout used when a member asks for 0 (unset). Default 10_000 ms.
    pub session_timeout_ms_default: u32,
    /// Floor of the heartbeat interval (otherwise a third of the session
    /// timeout). Default 100 ms.
    pub heartbeat_interval_ms_min: u32,
    /// Most members one group may have. Default 1_000.
    pub members_per_group_max: usize,
    /// Most groups (with at least one member) the coordinator tracks. Default 10_000.
    pub groups_max: usize,
    /// Most topics one member may subscribe to. Default 1_000.
    pub topics_per_member_max: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms_min: 1_000,
            session_timeout_ms_max: 300_000,
            session_timeout_ms_default: 10_000,
            heartbeat_interval_ms_min: 100,
            members_per_group_max: 1_000,
            groups_max: 10_000,
            topics_per_member_max: 1_000,
        }
    }
}

impl GroupConfig {
    /// Checks that the limits are positive and the timeouts consistent.
    pub fn validate(&self) -> Result<(), GroupConfigError> {
        let fail = |field: &'static str, reason: String| Err(GroupConfigError { field, reason });
        if self.session_timeout_ms_min == 0 {
            return fail("session_timeout_ms_min", "must be positive".into());
        }
        if self.session_timeout_ms_min > self.session_timeout_ms_max {
            return fail(
                "session_timeout_ms_min",
                format!(
                    "{} exceeds session_timeout_ms_max {}",
                    self.session_timeout_ms_min, self.session_timeout_ms_max
                ),
            );
        }
        let range = self.session_timeout_ms_min..=self.session_timeout_ms_max;
        if !range.contains(&self.session_timeout_ms_default) {
            return fail(
                "session_timeout_ms_default",
                format!("{} is outside {range:?}", self.session_timeout_ms_default),
            );
        }
        if self.heartbeat_interval_ms_min == 0 {
            return fail("heartbeat_interval_ms_min", "must be positive".into());
        }
        // A member must be able to heartbeat more often than its session expires.
        if self.heartbeat_interval_ms_min >= self.session_timeout_ms_min {
            return fail(
                "heartbeat_interval_ms_min",
                format!(
                    "{} must be below session_timeout_ms_min {}",
                    self.heartbeat_interval_ms_min, self.session_timeout_ms_min
                ),
            );
        }
        if self.members_per_group_max == 0 {
            return fail("members_per_group_max", "must be positive".into());
        }
        if self.groups_max == 0 {
            return fail("groups_max", "must be positive".into());
        }
        if self.topics_per_member_max == 0 {
            return fail("topics_per_member_max", "must be positive".into());
        }
        Ok(())
    }
}

/// A [`GroupConfig`] field with an unusable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid group config: {field}: {reason}")]
pub struct GroupConfigError {
    /// The offending field.
    pub field: &'static str,
    /// Why the value is rejected.
    pub reason: String,
}

/// Why a group operation was refused; every variant is the caller's to handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The member is not (or no longer) in the group; the client must join again.
    #[error("member {member_id:?} is not in group {group:?}; join the group again")]
    UnknownMember {
        /// The group named in the request.
        group: String,
        /// The member id named in the request.
        member_id: String,
    },
    /// A subscribed topic does not exist.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The requested session timeout is outside the configured range.
    #[error("session timeout {value} ms is outside the allowed range {min}..={max} ms")]
    InvalidSessionTimeout {
        /// The requested timeout in milliseconds.
        value: u32,
        /// The configured minimum in milliseconds.
        min: u32,
        /// The configured maximum in milliseconds.
        max: u32,
    },
    /// A member tried to commit an offset for a partition it does not hold.
    #[error("partition {topic}/{partition} is not owned by member {member_id:?}")]
    PartitionNotOwned {
        /// The topic of the partition.
        topic: String,
        /// The partition index.
        partition: u32,
        /// The committing member.
        member_id: String,
    },
    /// A standalone (member-less) commit to a group that has active members.
    #[error("group {group:?} has active members; commit with a member id instead")]
    GroupHasMembers {
        /// The group named in the request.
        group: String,
    },
    /// A configured bound would be exceeded.
    #[error("too many {what}: the limit is {limit}")]
    LimitExceeded {
        /// What is counted: "groups", "members per group" or "topics per member".
        what: &'static str,
        /// The configured bound.
        limit: usize,
    },
}

/// The answer to a successful join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    /// The new member's id, unique within this coordinator's lifetime and incarnation.
    pub member_id: String,
    /// The group's generation after the join.
    pub generation: u64,
    /// How often the member should heartbeat.
    pub heartbeat_interval_ms: u32,
    /// Partitions the member may consume now (sorted).
    pub assigned: Vec<TopicPartition>,
}

/// The answer to a successful heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// The group's current generation.
    pub generation: u64,
    /// Partitions the member may consume now (sorted); owned ones missing here
    /// must be released.
    pub assigned: Vec<TopicPartition>,
    /// How often the member should heartbeat.
    pub heartbeat_interval_ms: u32,
}

/// A point-in-time view of one group, for describe and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// The group's current generation.
    pub generation: u64,
    /// Members sorted by member id.
    pub members: Vec<MemberSnapshot>,
}

/// A point-in-time view of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    /// The member id handed out at join.
    pub member_id: String,
    /// The client id given at join.
    pub client_id: String,
    /// Subscribed topics (sorted).
    pub topics: Vec<String>,
    /// Partitions the member was last told it may consume (sorted).
    pub assigned: Vec<TopicPartition>,
    /// Partitions the member last reported consuming (sorted).
    pub owned: Vec<TopicPartition>,
    /// Partitions the assignor wants the member to end up with (sorted).
    pub target: Vec<TopicPartition>,
}
