//! Group membership: the state shared between the consumer's poll loop and its
//! heartbeat task, and the task itself.
//!
//! Ownership protocol (cooperative): the heartbeat reports `owned`; the coordinator
//! answers with `assigned`. Only the poll loop changes `owned`, and it removes a
//! partition only after it stopped fetching it and committed its position, so the
//! coordinator never hands a partition to another member while we still read it.
//! The heartbeat task only replaces `assigned`, or, when the coordinator forgot us
//! (`UNKNOWN_MEMBER`), empties both sets, bumps `incarnation` and joins again.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferry_proto::v1::ErrorCode;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::connection::{Assignment, Client};
use crate::error::ClientError;
use crate::types::TopicPartition;

/// What the poll loop and the heartbeat task both see.
#[derive(Debug)]
pub(crate) struct GroupState {
    /// Empty while (re)joining.
    pub member_id: String,
    /// Generation of the latest assignment.
    pub generation: u64,
    /// What the coordinator lets us consume now.
    pub assigned: BTreeSet<TopicPartition>,
    /// What the poll loop holds (reported in every heartbeat).
    pub owned: BTreeSet<TopicPartition>,
    /// Bumped each time membership was lost: the poll loop then drops everything.
    pub incarnation: u64,
    /// A non-retriable heartbeat or join failure, reported by the next poll.
    pub error: Option<ClientError>,
    interval: Duration,
}

/// The shared half of a group session.
#[derive(Debug)]
pub(crate) struct Membership {
    // A std mutex: both sides hold it only to copy or update sets, never across an
    // await.
    state: Mutex<GroupState>,
    /// Asks the heartbeat task to heartbeat now (after releasing partitions).
    pub heartbeat_now: Notify,
    /// Tells an idle poll that the assignment changed.
    pub assignment_changed: Notify,
}

impl Membership {
    pub(crate) fn lock(&self) -> MutexGuard<'_, GroupState> {
        // Every critical section leaves the sets consistent, so poison is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// What the heartbeat task needs to (re)join.
#[derive(Debug, Clone)]
pub(crate) struct GroupParams {
    pub group: String,
    pub topics: Vec<String>,
    pub session_timeout_ms: u32,
    pub client_id: String,
}

/// A joined group: shared state plus the heartbeat task.
#[derive(Debug)]
pub(crate) struct GroupSession {
    pub params: GroupParams,
    pub membership: Arc<Membership>,
    task: JoinHandle<()>,
}

impl GroupSession {
    /// Joins the group and starts heartbeating.
    pub(crate) async fn join(client: &Client, params: GroupParams) -> Result<Self, ClientError> {
        let joined = client
            .join_group(
                &params.group,
                &params.topics,
                params.session_timeout_ms,
                &params.client_id,
            )
            .await?;
        let membership = Arc::new(Membership {
            state: Mutex::new(GroupState {
                member_id: joined.member_id,
                generation: joined.assignment.generation,
                assigned: joined.assignment.assigned.into_iter().collect(),
                owned: BTreeSet::new(),
                incarnation: 0,
                error: None,
                interval: joined.assignment.heartbeat_interval,
            }),
            heartbeat_now: Notify::new(),
            assignment_changed: Notify::new(),
        });
        let task = tokio::spawn(heartbeat_loop(
            client.clone(),
            params.clone(),
            Arc::clone(&membership),
        ));
        Ok(Self {
            params,
            membership,
            task,
        })
    }

    /// Stops heartbeating and leaves the group (so partitions move at once rather than
    /// after the session timeout).
    pub(crate) async fn leave(self, client: &Client) -> Result<(), ClientError> {
        self.task.abort();
        let member_id = std::mem::take(&mut self.membership.lock().member_id);
        if member_id.is_empty() {
            return Ok(());
        }
        client.leave_group(&self.params.group, &member_id).await
    }
}

impl Drop for GroupSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn heartbeat_loop(client: Client, params: GroupParams, membership: Arc<Membership>) {
    loop {
        let interval = membership.lock().interval;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = membership.heartbeat_now.notified() => {}
        }
        let (member_id, owned) = {
            let state = membership.lock();
            (
                state.member_id.clone(),
                state.owned.iter().cloned().collect::<Vec<_>>(),
            )
        };
        if member_id.is_empty() {
            rejoin(&client, &params, &membership).await;
            continue;
        }
        let result = client
            .heartbeat(&params.group, &member_id, &owned, params.session_timeout_ms)
            .await;
        match result {
            Ok(assignment) => apply(&membership, assignment),
            Err(err) if err.is(ErrorCode::UnknownMember) => {
                tracing::warn!(group = %params.group, "membership lost; rejoining");
                {
                    let mut state = membership.lock();
                    state.member_id.clear();
                    state.assigned.clear();
                    state.owned.clear();
                    state.incarnation += 1;
                }
                membership.assignment_changed.notify_one();
                rejoin(&client, &params, &membership).await;
            }
            Err(err) if err.is_retriable() => {
                tracing::debug!(group = %params.group, error = %err, "heartbeat failed; retrying");
            }
            Err(err) => {
                tracing::warn!(group = %params.group, error = %err, "heartbeat refused");
                membership.lock().error = Some(err);
                membership.assignment_changed.notify_one();
            }
        }
    }
}

fn apply(membership: &Membership, assignment: Assignment) {
    let assigned: BTreeSet<TopicPartition> = assignment.assigned.into_iter().collect();
    let changed = {
        let mut state = membership.lock();
        state.generation = assignment.generation;
        state.interval = assignment.heartbeat_interval;
        let changed = state.assigned != assigned;
        state.assigned = assigned;
        changed
    };
    if changed {
        membership.assignment_changed.notify_one();
    }
}

async fn rejoin(client: &Client, params: &GroupParams, membership: &Membership) {
    let joined = client
        .join_group(
            &params.group,
            &params.topics,
            params.session_timeout_ms,
            &params.client_id,
        )
        .await;
    match joined {
        Ok(joined) => {
            membership.lock().member_id = joined.member_id;
            apply(membership, joined.assignment);
            membership.assignment_changed.notify_one();
        }
        Err(err) => {
            tracing::warn!(group = %params.group, error = %err, "rejoin failed; retrying");
            if !err.is_retriable() {
                membership.lock().error = Some(err);
            }
        }
    }
}
