//! The consumer: a consumer-group member (or a group-less reader of chosen
//! partitions) that fetches, decodes and tracks positions.
//!
//! The poll loop owns positions and the record buffer; the heartbeat task (see
//! `membership.rs`) only learns what the coordinator assigns. Each poll first applies
//! assignment changes (release: stop fetching, commit, stop reporting; acquire: start
//! from the committed offset or `auto_offset_reset`), then returns buffered records or
//! fetches more.

mod decode;
mod membership;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1::ErrorCode;

use crate::connection::{Client, FetchOptions, FetchTarget};
use crate::error::ClientError;
use crate::types::{ConsumedRecord, OffsetSpec, TopicPartition};
use membership::{GroupParams, GroupSession};

/// Where to start in a partition without a committed offset (or whose committed
/// offset is no longer stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// The first stored record.
    Earliest,
    /// Only records produced from now on.
    #[default]
    Latest,
    /// Fail the poll instead.
    None,
}

/// Consumer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Consumer group; may be empty for a group-less [`Consumer::assign`] reader that
    /// never commits.
    pub group: String,
    /// Topics to subscribe to (group mode).
    pub topics: Vec<String>,
    /// How this member names itself to the coordinator (default `ferry-client`).
    pub client_id: String,
    /// The coordinator drops a member silent for this long (default 10 000 ms).
    pub session_timeout_ms: u32,
    /// Start position without a committed offset (default latest).
    pub auto_offset_reset: AutoOffsetReset,
    /// Long-poll wait of one fetch (default 500 ms).
    pub fetch_max_wait_ms: u32,
    /// A fetch answers as soon as this many bytes are available (default 1).
    pub fetch_min_bytes: u32,
    /// Byte limit of one fetch response (default 16 MiB).
    pub fetch_max_bytes: u32,
    /// Byte limit per partition in one fetch (default 4 MiB).
    pub max_partition_fetch_bytes: u32,
    /// Records one `poll` returns at most (default 10 000).
    pub max_poll_records: usize,
    /// Commit positions periodically from `poll` (default true).
    pub auto_commit: bool,
    /// Period of automatic commits (default 5 s).
    pub auto_commit_interval: Duration,
}

impl ConsumerConfig {
    /// Defaults for a member of `group` subscribed to `topics`.
    pub fn new(group: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            group: group.into(),
            topics,
            ..Self::default()
        }
    }

    /// Checks that every bound is usable.
    pub fn validate(&self) -> Result<(), ClientError> {
        let fail = |reason: &str| Err(ClientError::InvalidArgument(reason.to_owned()));
        if self.max_poll_records == 0 {
            return fail("max_poll_records must be at least 1");
        }
        if self.fetch_max_bytes == 0 || self.max_partition_fetch_bytes == 0 {
            return fail("fetch byte limits must be positive");
        }
        if self.session_timeout_ms < 100 {
            return fail("session_timeout_ms must be at least 100");
        }
        if self.auto_commit && self.auto_commit_interval.is_zero() {
            return fail("auto_commit_interval must be positive");
        }
        Ok(())
    }
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            group: String::new(),
            topics: Vec::new(),
            client_id: "ferry-client".to_owned(),
            session_timeout_ms: 10_000,
            auto_offset_reset: AutoOffsetReset::Latest,
            fetch_max_wait_ms: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 16 << 20,
            max_partition_fetch_bytes: 4 << 20,
            max_poll_records: 10_000,
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
        }
    }
}

/// Per-partition read state.
#[derive(Debug)]
struct Cursor {
    topic: Arc<str>,
    /// Next offset to fetch; `None` until looked up.
    fetch_offset: Option<u64>,
    /// Offset after the last record `poll` returned: what `commit` commits.
    consumed: Option<u64>,
    /// Last committed offset, to skip needless commits.
    committed: Option<u64>,
}

/// Reads records from topic partitions, as a group member or on its own.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    session: Option<GroupSession>,
    incarnation: u64,
    cursors: HashMap<TopicPartition, Cursor>,
    buffer: VecDeque<ConsumedRecord>,
    last_commit: Instant,
    fetch_round: usize,
}

impl Consumer {
    /// Joins `config.group` subscribed to `config.topics`; partitions arrive through
    /// the group's assignment as `poll` is called.
    pub async fn subscribe(client: &Client, config: ConsumerConfig) -> Result<Self, ClientError> {
        config.validate()?;
        if config.group.is_empty() || config.topics.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a group consumer needs a group and at least one topic".into(),
            ));
        }
        let params = GroupParams {
            group: config.group.clone(),
            topics: config.topics.clone(),
            session_timeout_ms: config.session_timeout_ms,
            client_id: config.client_id.clone(),
        };
        let session = GroupSession::join(client, params).await?;
        Ok(Self::build(client, config, Some(session)))
    }

    /// Reads exactly `partitions`, without group membership. With a non-empty
    /// `config.group` it starts from and commits to that group's offsets (allowed only
    /// while the group has no members); otherwise it never commits.
    pub fn assign(
        client: &Client,
        config: ConsumerConfig,
        partitions: Vec<TopicPartition>,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        let mut consumer = Self::build(client, config, None);
        for tp in partitions {
            consumer.add_cursor(tp);
        }
        Ok(consumer)
    }

    fn build(client: &Client, config: ConsumerConfig, session: Option<GroupSession>) -> Self {
        Self {
            client: client.clone(),
            config,
            session,
            incarnation: 0,
            cursors: HashMap::new(),
            buffer: VecDeque::new(),
            last_commit: Instant::now(),
            fetch_round: 0,
        }
    }

    fn add_cursor(&mut self, tp: TopicPartition) {
        let topic = self
            .cursors
            .values()
            .find(|c| *c.topic == *tp.topic)
            .map_or_else(|| Arc::from(tp.topic.as_str()), |c| Arc::clone(&c.topic));
        self.cursors.entry(tp).or_insert(Cursor {
            topic,
            fetch_offset: None,
            consumed: None,
            committed: None,
        });
    }

    /// The partitions this consumer currently reads, sorted.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        let mut partitions: Vec<_> = self.cursors.keys().cloned().collect();
        partitions.sort();
        partitions
    }

    /// The offset after the last record `poll` returned for a partition (what `commit`
    /// would commit), or where reading will start.
    pub fn position(&self, tp: &TopicPartition) -> Option<u64> {
        self.cursors
            .get(tp)
            .and_then(|c| c.consumed.or(c.fetch_offset))
    }

    /// The member id the group coordinator gave this consumer (empty without a group
    /// or while rejoining).
    pub fn member_id(&self) -> String {
        self.session
            .as_ref()
            .map(|s| s.membership.lock().member_id.clone())
            .unwrap_or_default()
    }

    /// Returns up to `max_poll_records` records, waiting up to `timeout` for some.
    ///
    /// Records returned by a poll count as processed once `poll`, `commit` or `close`
    /// is called again: that is what gets committed.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumedRecord>, ClientError> {
        self.poll_up_to(timeout, self.config.max_poll_records).await
    }

    /// Like [`Consumer::poll`] with an explicit record limit.
    pub async fn poll_up_to(
        &mut self,
        timeout: Duration,
        max_records: usize,
    ) -> Result<Vec<ConsumedRecord>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.sync_assignment().await?;
            if !self.buffer.is_empty() {
                return Ok(self.take_buffered(max_records.max(1)));
            }
            self.maybe_auto_commit().await;
            self.resolve_positions().await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.fetch_once(remaining).await?;
            if !self.buffer.is_empty() {
                return Ok(self.take_buffered(max_records.max(1)));
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    fn take_buffered(&mut self, max_records: usize) -> Vec<ConsumedRecord> {
        let count = max_records.min(self.buffer.len());
        let records: Vec<ConsumedRecord> = self.buffer.drain(..count).collect();
        // Walk backwards so each partition's position is set once, from its last
        // record, without building a key per record.
        let mut done: Vec<(&str, u32)> = Vec::new();
        for record in records.iter().rev() {
            let key = (record.topic.as_ref(), record.partition);
            if done.contains(&key) {
                continue;
            }
            done.push(key);
            let tp = TopicPartition::new(key.0, key.1);
            if let Some(cursor) = self.cursors.get_mut(&tp) {
                cursor.consumed = Some(record.offset + 1);
            }
        }
        records
    }

    /// Applies what the heartbeat task learned: drop everything after a lost
    /// membership, release revoked partitions, take on newly assigned ones.
    async fn sync_assignment(&mut self) -> Result<(), ClientError> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let membership = Arc::clone(&session.membership);
        let (assigned, incarnation) = {
            let mut state = membership.lock();
            if let Some(err) = state.error.take() {
                return Err(err);
            }
            (state.assigned.clone(), state.incarnation)
        };
        if incarnation != self.incarnation {
            // The coordinator already gave our partitions away: commits would be
            // refused, so just forget them.
            self.incarnation = incarnation;
            self.cursors.clear();
            self.buffer.clear();
        }
        let revoked: Vec<TopicPartition> = self
            .cursors
            .keys()
            .filter(|tp| !assigned.contains(*tp))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            if let Err(err) = self.commit_partitions(&revoked).await {
                tracing::warn!(error = %err, "commit of released partitions failed");
            }
            for tp in &revoked {
                self.cursors.remove(tp);
            }
            self.buffer.retain(|r| {
                !revoked
                    .iter()
                    .any(|tp| tp.partition == r.partition && *tp.topic == *r.topic)
            });
        }
        let acquired: Vec<TopicPartition> = assigned
            .iter()
            .filter(|tp| !self.cursors.contains_key(*tp))
            .cloned()
            .collect();
        for tp in &acquired {
            self.add_cursor(tp.clone());
        }
        if !revoked.is_empty() || !acquired.is_empty() {
            {
                let mut state = membership.lock();
                if state.incarnation == self.incarnation {
                    state.owned = self.cursors.keys().cloned().collect::<BTreeSet<_>>();
                }
            }
            // Tell the coordinator at once, so released partitions move quickly.
            membership.heartbeat_now.notify_one();
        }
        Ok(())
    }

    /// Looks up start offsets for partitions that have none: committed, else reset.
    async fn resolve_positions(&mut self) -> Result<(), ClientError> {
        let pending: Vec<TopicPartition> = self
            .cursors
            .iter()
            .filter(|(_, c)| c.fetch_offset.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if !self.config.group.is_empty() {
            let committed = self
                .client
                .committed_offsets(&self.config.group, &pending)
                .await?;
            for (tp, offset) in committed {
                if let Some(cursor) = self.cursors.get_mut(&tp) {
                    cursor.fetch_offset = Some(offset);
                    cursor.committed = Some(offset);
                }
            }
        }
        let unresolved: Vec<TopicPartition> = pending
            .into_iter()
            .filter(|tp| {
                self.cursors
                    .get(tp)
                    .is_some_and(|c| c.fetch_offset.is_none())
            })
            .collect();
        self.reset_offsets(&unresolved).await
    }

    /// Moves partitions to `auto_offset_reset`'s end of the log.
    async fn reset_offsets(&mut self, partitions: &[TopicPartition]) -> Result<(), ClientError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let spec = match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => OffsetSpec::Earliest,
            AutoOffsetReset::Latest => OffsetSpec::Latest,
            AutoOffsetReset::None => {
                return Err(ClientError::InvalidArgument(format!(
                    "no valid offset for {} and auto_offset_reset is none",
                    partitions[0]
                )));
            }
        };
        self.seek_partitions(partitions, spec).await
    }

    /// Resolves `spec` for each partition and seeks there.
    async fn seek_partitions(
        &mut self,
        partitions: &[TopicPartition],
        spec: OffsetSpec,
    ) -> Result<(), ClientError> {
        let mut by_topic: HashMap<&str, Vec<(u32, OffsetSpec)>> = HashMap::new();
        for tp in partitions {
            by_topic
                .entry(tp.topic.as_str())
                .or_default()
                .push((tp.partition, spec));
        }
        let mut found = Vec::new();
        for (topic, queries) in by_topic {
            for offset in self.client.list_offsets(topic, &queries).await? {
                found.push((TopicPartition::new(topic, offset.partition), offset.offset));
            }
        }
        for (tp, offset) in found {
            self.seek(&tp, offset);
        }
        Ok(())
    }

    /// One fetch for every partition with a known position.
    async fn fetch_once(&mut self, remaining: Duration) -> Result<(), ClientError> {
        let mut targets: Vec<FetchTarget> = self
            .cursors
            .iter()
            .filter_map(|(tp, c)| {
                c.fetch_offset.map(|offset| FetchTarget {
                    partition: tp.clone(),
                    offset,
                    max_bytes: self.config.max_partition_fetch_bytes,
                })
            })
            .collect();
        // The response byte limit is filled in request order: rotate the order so no
        // partition is starved by busier ones listed before it.
        targets.sort_by(|a, b| a.partition.cmp(&b.partition));
        if !targets.is_empty() {
            let shift = self.fetch_round % targets.len();
            targets.rotate_left(shift);
            self.fetch_round = self.fetch_round.wrapping_add(1);
        }
        if targets.is_empty() {
            self.wait_for_assignment(remaining).await;
            return Ok(());
        }
        let options = FetchOptions {
            max_wait_ms: (remaining.as_millis() as u32).min(self.config.fetch_max_wait_ms),
            min_bytes: self.config.fetch_min_bytes,
            max_bytes: self.config.fetch_max_bytes,
        };
        let fetched = match self.client.fetch(&targets, options).await {
            Ok(fetched) => fetched,
            Err(err) if err.is_retriable() => {
                tracing::debug!(error = %err, "fetch failed; retrying");
                tokio::time::sleep(remaining.min(Duration::from_millis(100))).await;
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        if self.membership_lost() {
            return Ok(());
        }
        let mut out_of_range = Vec::new();
        for partition in fetched {
            let tp = partition.partition;
            let Some(cursor) = self.cursors.get_mut(&tp) else {
                continue;
            };
            let Some(position) = cursor.fetch_offset else {
                continue;
            };
            if let Some(err) = partition.error {
                if err.is(ErrorCode::OffsetOutOfRange) {
                    out_of_range.push(tp);
                } else if !err.is_retriable() {
                    return Err(err);
                }
                continue;
            }
            let topic = Arc::clone(&cursor.topic);
            let next = decode::decode_records(
                &topic,
                tp.partition,
                &partition.records,
                position,
                &mut self.buffer,
            )?;
            if let (Some(next), Some(cursor)) = (next, self.cursors.get_mut(&tp)) {
                cursor.fetch_offset = Some(next);
            }
        }
        if !out_of_range.is_empty() {
            tracing::info!(
                partitions = out_of_range.len(),
                "offset out of range; resetting"
            );
            self.reset_offsets(&out_of_range).await?;
        }
        Ok(())
    }

    fn membership_lost(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.membership.lock().incarnation != self.incarnation)
    }

    /// Waits (up to `remaining`) for the heartbeat task to report a new assignment.
    async fn wait_for_assignment(&self, remaining: Duration) {
        let wait = remaining.min(Duration::from_millis(u64::from(
            self.config.fetch_max_wait_ms,
        )));
        match &self.session {
            Some(session) => {
                let _ =
                    tokio::time::timeout(wait, session.membership.assignment_changed.notified())
                        .await;
            }
            None => tokio::time::sleep(wait).await,
        }
    }

    async fn maybe_auto_commit(&mut self) {
        if !self.config.auto_commit || self.config.group.is_empty() {
            return;
        }
        if self.last_commit.elapsed() < self.config.auto_commit_interval {
            return;
        }
        if let Err(err) = self.commit().await {
            tracing::warn!(error = %err, "automatic commit failed");
        }
    }

    /// Commits the position after the records returned by `poll`, per partition.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let partitions: Vec<TopicPartition> = self.cursors.keys().cloned().collect();
        self.commit_partitions(&partitions).await
    }

    async fn commit_partitions(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<(), ClientError> {
        self.last_commit = Instant::now();
        if self.config.group.is_empty() {
            return Err(ClientError::InvalidArgument(
                "commit needs a consumer group".into(),
            ));
        }
        let offsets: Vec<(TopicPartition, u64)> = partitions
            .iter()
            .filter_map(|tp| {
                let cursor = self.cursors.get(tp)?;
                let consumed = cursor.consumed?;
                (cursor.committed != Some(consumed)).then(|| (tp.clone(), consumed))
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        let member_id = self.member_id();
        self.client
            .commit_offsets(&self.config.group, &member_id, &offsets)
            .await?;
        for (tp, offset) in offsets {
            if let Some(cursor) = self.cursors.get_mut(&tp) {
                cursor.committed = Some(offset);
            }
        }
        Ok(())
    }

    /// Reads `tp` from `offset` next; drops its buffered records. Ignored for a
    /// partition this consumer does not hold.
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) {
        if let Some(cursor) = self.cursors.get_mut(tp) {
            cursor.fetch_offset = Some(offset);
            cursor.consumed = Some(offset);
            self.buffer
                .retain(|r| !(r.partition == tp.partition && *r.topic == *tp.topic));
        }
    }

    /// Moves every held partition to its first record at or after `timestamp_ms`.
    pub async fn seek_to_timestamp(&mut self, timestamp_ms: i64) -> Result<(), ClientError> {
        let partitions = self.assignment();
        self.seek_partitions(&partitions, OffsetSpec::Timestamp(timestamp_ms))
            .await
    }

    /// Moves every held partition to its first stored record.
    pub async fn seek_to_beginning(&mut self) -> Result<(), ClientError> {
        let partitions = self.assignment();
        self.seek_partitions(&partitions, OffsetSpec::Earliest)
            .await
    }

    /// Moves every held partition to its end (only new records will be read).
    pub async fn seek_to_end(&mut self) -> Result<(), ClientError> {
        let partitions = self.assignment();
        self.seek_partitions(&partitions, OffsetSpec::Latest).await
    }

    /// Commits positions (when in a group) and leaves the group.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let committed = if self.config.group.is_empty() {
            Ok(())
        } else {
            self.commit().await
        };
        let left = match self.session.take() {
            Some(session) => session.leave(&self.client).await,
            None => Ok(()),
        };
        committed.and(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let config = ConsumerConfig::new("g", vec!["t".into()]);
        assert!(config.validate().is_ok());
        let config = ConsumerConfig {
            max_poll_records: 0,
            ..config
        };
        assert!(config.validate().is_err());
    }
}
