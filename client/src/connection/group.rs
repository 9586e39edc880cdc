//! Group membership calls used by the consumer's heartbeat task.

use std::time::Duration;

use ferry_proto::v1 as pb;

use super::Client;
use crate::error::ClientError;
use crate::types::TopicPartition;

/// The result of joining a group.
#[derive(Debug, Clone)]
pub(crate) struct JoinedMember {
    /// Id the coordinator gave us.
    pub member_id: String,
    /// What we may consume now, and how often to heartbeat.
    pub assignment: Assignment,
}

/// The coordinator's current view of what a member may consume.
#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    /// Group generation.
    pub generation: u64,
    /// Partitions this member may consume.
    pub assigned: Vec<TopicPartition>,
    /// How often to heartbeat.
    pub heartbeat_interval: Duration,
}

impl Client {
    pub(crate) async fn join_group(
        &self,
        group: &str,
        topics: &[String],
        session_timeout_ms: u32,
        client_id: &str,
    ) -> Result<JoinedMember, ClientError> {
        let request = pb::JoinGroupRequest {
            group: group.to_owned(),
            topics: topics.to_vec(),
            session_timeout_ms,
            client_id: client_id.to_owned(),
        };
        let response = self
            .group_service()
            .join_group(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(JoinedMember {
            member_id: response.member_id,
            assignment: Assignment {
                generation: response.generation,
                assigned: response.assigned.into_iter().map(Into::into).collect(),
                heartbeat_interval: interval(response.heartbeat_interval_ms, session_timeout_ms),
            },
        })
    }

    pub(crate) async fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        owned: &[TopicPartition],
        session_timeout_ms: u32,
    ) -> Result<Assignment, ClientError> {
        let request = pb::HeartbeatRequest {
            group: group.to_owned(),
            member_id: member_id.to_owned(),
            owned: owned.iter().map(pb::TopicPartition::from).collect(),
        };
        let response = self
            .group_service()
            .heartbeat(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(Assignment {
            generation: response.generation,
            assigned: response.assigned.into_iter().map(Into::into).collect(),
            heartbeat_interval: interval(response.heartbeat_interval_ms, session_timeout_ms),
        })
    }

    pub(crate) async fn leave_group(
        &self,
        group: &str,
        member_id: &str,
    ) -> Result<(), ClientError> {
        let request = pb::LeaveGroupRequest {
            group: group.to_owned(),
            member_id: member_id.to_owned(),
        };
        self.group_service()
            .leave_group(request)
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }
}

/// The broker's heartbeat interval, or a third of the session timeout when it sent
/// none, so a missed heartbeat or two never expires the session.
fn interval(heartbeat_interval_ms: u32, session_timeout_ms: u32) -> Duration {
    let ms = if heartbeat_interval_ms > 0 {
        heartbeat_interval_ms
    } else {
        (session_timeout_ms / 3).max(100)
    };
    Duration::from_millis(u64::from(ms))
}
