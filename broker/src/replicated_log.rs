//! One replicated log — a topic partition, or one of a queue's two logs: a storage log,
//! the high watermark readers stay below, and, in cluster mode, its part in replication
//! (leader or follower), driving `ferry_replication::LeaderCore`.
//!
//! On a leader the high watermark is the lowest durable end among the in-sync
//! replicas (itself included); a `sync` write is acknowledged once the high watermark
//! passes it (`docs/replication.md`).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ferry_replication::LogKind;
use ferry_replication::{Commit, LeaderCore, PartitionState};
use ferry_storage::{
    AppendOutcome, BatchRange, CheckedBatch, DiskHooks, Log, LogConfig, ReadResult, StorageError,
};
use tokio::sync::watch;

use crate::clock::monotonic_ms;
use crate::error::{BrokerError, BrokerResult};
use crate::topic::DurabilitySetting;

/// Leader epoch stamped on batches by a standalone host (it is always the leader).
pub const STANDALONE_LEADER_EPOCH: u64 = 0;

/// How often a write waiting for its replicas re-checks that this host still leads.
const LEADERSHIP_RECHECK: Duration = Duration::from_millis(50);

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Once the leader stored it under its durability: standalone hosts and `async`
    /// replication.
    Leader,
    /// Once every in-sync replica stored it (the high watermark passed it), with at
    /// least `min_in_sync` replicas in sync: `sync` replication.
    InSync {
        /// Replicas (the leader included) that must be in sync to accept a write.
        min_in_sync: usize,
        /// How long to wait for the replicas before answering "incomplete".
        timeout: Duration,
    },
}

impl Ack {
    /// The ack for a resource with these settings: `sync` replication with more than
    /// one replica in a cluster waits for a majority in sync; anything else is done
    /// once the leader stored it.
    pub fn for_settings(
        cluster: bool,
        replication_factor: u32,
        replication: crate::topic::ReplicationSetting,
        timeout: Duration,
    ) -> Ack {
        if cluster
            && replication_factor > 1
            && replication == crate::topic::ReplicationSetting::Sync
        {
            Ack::InSync {
                min_in_sync: replication_factor as usize / 2 + 1,
                timeout,
            }
        } else {
            Ack::Leader
        }
    }
}

/// A partition's part in replication, as this host's view of the cluster has it.
#[derive(Debug, Clone)]
enum Role {
    /// Serves alone: a standalone host. The high watermark is the log's visible end.
    Alone,
    /// Leads in an epoch.
    Leader(LeaderCore),
    /// Follows a leader, or waits for one: serves nothing.
    Follower,
}

/// A replicated log, its high watermark and its replication role: a topic partition,
/// or a queue's message log or journal ([`LogKind::Queue`], index
/// [`QUEUE_MESSAGES_LOG`] or [`QUEUE_JOURNAL_LOG`]).
pub struct ReplicatedLog {
    /// `topics` or `queues` (routing's kinds): names the resource in errors and fetches.
    kind: LogKind,
    topic: Arc<str>,
    index: u32,
    log: Arc<Log>,
    durability: DurabilitySetting,
    /// Consumers read below it; long polls wake when it moves.
    high_watermark: watch::Sender<u64>,
    /// The log end; replica fetches waiting at the end wake when it moves.
    log_end: watch::Sender<u64>,
    // A std mutex: never held across an await.
    role: Mutex<Role>,
    /// Held while a follower appends what it fetched, so a host taking up leadership
    /// knows no fetched batch lands after it (checked under this lock).
    replica_writes: Mutex<()>,
}

/// The other replicas of a partition as a leader takes them from its state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaSets {
    /// The other replicas, in placement order.
    pub followers: Vec<String>,
    /// Those of them in the committed in-sync set.
    pub in_sync: Vec<String>,
    /// The revision of the partition state they come from.
    pub revision: u64,
}

impl ReplicaSets {
    /// The replicas other than `me` in `state` (read at `revision`), and those of
    /// them in its in-sync set.
    pub fn from_state(state: &PartitionState, revision: u64, me: &str) -> Self {
        let (followers, in_sync) = state.others(me);
        Self {
            followers,
            in_sync,
            revision,
        }
    }
}

/// Index of a queue's message log among its replicated logs.
pub const QUEUE_MESSAGES_LOG: u32 = 0;
/// Index of a queue's journal among its replicated logs.
pub const QUEUE_JOURNAL_LOG: u32 = 1;

impl ReplicatedLog {
    /// Opens (recovering if needed) the log in `dir`. A `replicated` partition (cluster
    /// mode) serves nothing until told it leads. Blocking: call from a blocking thread.
    pub fn open(
        topic: Arc<str>,
        index: u32,
        dir: &Path,
        config: LogConfig,
        durability: DurabilitySetting,
        hooks: DiskHooks,
        replicated: bool,
    ) -> BrokerResult<Self> {
        let log = Log::open_with_hooks(dir, config, hooks)
            .map_err(|err| BrokerError::storage(&topic, index, err))?;
        Ok(Self::over(
            LogKind::Topic,
            topic,
            index,
            Arc::new(log),
            durability,
            replicated,
        ))
    }

    /// Wraps an open log of a `kind` resource (a queue's logs are opened by the queue).
    pub fn over(
        kind: LogKind,
        name: Arc<str>,
        index: u32,
        log: Arc<Log>,
        durability: DurabilitySetting,
        replicated: bool,
    ) -> Self {
        let (role, high_watermark) = if replicated {
            (Role::Follower, 0)
        } else {
            (Role::Alone, log.visible_end_offset())
        };
        let (log_end, _) = watch::channel(log.end_offset());
        Self {
            kind,
            topic: name,
            index,
            log,
            durability,
            high_watermark: watch::channel(high_watermark).0,
            log_end,
            role: Mutex::new(role),
            replica_writes: Mutex::new(()),
        }
    }

    /// `topics` or `queues`.
    pub fn kind(&self) -> LogKind {
        self.kind
    }

    /// Partition index within its topic.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The underlying log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The durability the topic asks for.
    pub fn durability(&self) -> DurabilitySetting {
        self.durability
    }

    fn error(&self, err: StorageError) -> BrokerError {
        BrokerError::storage(&self.topic, self.index, err)
    }

    fn lock_role(&self) -> MutexGuard<'_, Role> {
        // The role is plain data updated in one step; a panic elsewhere cannot leave
        // it half-written.
        self.role.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one checked batch as the leader of `leader_epoch` and answers per `ack`.
    /// With fsync durability it first waits until the batch is on the local disk
    /// (sharing the fsync with concurrent appends).
    pub async fn append(
        &self,
        batch: CheckedBatch<Bytes>,
        leader_epoch: u64,
        now_ms: i64,
        ack: Ack,
    ) -> BrokerResult<AppendOutcome> {
        let min_in_sync = match ack {
            Ack::InSync { min_in_sync, .. } => min_in_sync,
            Ack::Leader => 1,
        };
        self.check_writable(leader_epoch, min_in_sync)?;
        let log = Arc::clone(&self.log);
        let log_end = self.log_end.clone();
        let fsync = self.durability == DurabilitySetting::Fsync;
        // Append and fsync in one blocking task: each hand-off between threads is a
        // wake-up that waits for a free core, which on a busy host costs more than
        // the fsync itself.
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = log.append_checked(batch, leader_epoch, now_ms)?;
            // Followers may fetch the batch now, so their fsyncs overlap this one; the
            // high watermark still waits for this host's own durable end.
            log_end.send_replace(log.end_offset());
            if fsync {
                log.wait_durable(outcome.last_offset + 1)?;
            }
            Ok(outcome)
        })
        .await
        .map_err(|err| BrokerError::Internal(format!("append task failed: {err}")))?
        .map_err(|err| self.error(err))?;
        self.advance_high_watermark();
        if let Ack::InSync { timeout, .. } = ack {
            self.wait_committed(outcome.last_offset + 1, leader_epoch, min_in_sync, timeout)
                .await?;
        }
        Ok(outcome)
    }

    /// Refuses a write up front unless this host leads in `leader_epoch` (or stands
    /// alone) with at least `min_in_sync` replicas in sync. A write taken while the
    /// role still says follower would never become visible until the role caught up.
    pub fn check_writable(&self, leader_epoch: u64, min_in_sync: usize) -> BrokerResult<()> {
        let role = self.lock_role();
        match &*role {
            Role::Alone => Ok(()),
            Role::Leader(leader) if leader.epoch() == leader_epoch => {
                let in_sync = leader.in_sync_count();
                if in_sync < min_in_sync {
                    return Err(BrokerError::NotEnoughReplicas {
                        topic: self.topic.to_string(),
                        partition: self.index,
                        in_sync,
                        required: min_in_sync,
                    });
                }
                Ok(())
            }
            // The view moved between the routing check and here, or this host has not
            // taken up the leadership yet: nothing was written, try the leader again.
            _ => Err(self.not_leading()),
        }
    }

    /// Waits until a write ending at `end` is committed while this host leads in
    /// `leader_epoch`: the high watermark passed it with at least `min_in_sync`
    /// replicas in sync ([`LeaderCore::commit`]). `ReplicationIncomplete` on timeout or
    /// lost leadership.
    pub async fn wait_committed(
        &self,
        end: u64,
        leader_epoch: u64,
        min_in_sync: usize,
        timeout: Duration,
    ) -> BrokerResult<()> {
        let mut high_watermark = self.high_watermark.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.leader_epoch() != Some(leader_epoch) && !self.is_alone() {
                return Err(self.incomplete("leadership moved before the replicas confirmed"));
            }
            let reached = *high_watermark.borrow_and_update();
            if self.commit(end, reached, min_in_sync) == Commit::Done {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(self.incomplete("timed out waiting for the in-sync replicas"));
            }
            let pause = (deadline - now).min(LEADERSHIP_RECHECK);
            // Either the high watermark moved or it is time to re-check leadership.
            let _ = tokio::time::timeout(pause, high_watermark.changed()).await;
        }
    }

    /// Where a write ending at `end` stands: done once alone, or by the leader's rule.
    fn commit(&self, end: u64, high_watermark: u64, min_in_sync: usize) -> Commit {
        match &*self.lock_role() {
            Role::Alone if high_watermark >= end => Commit::Done,
            Role::Leader(leader) => leader.commit(end, high_watermark, min_in_sync),
            Role::Alone | Role::Follower => Commit::Waiting,
        }
    }

    fn incomplete(&self, reason: &'static str) -> BrokerError {
        BrokerError::ReplicationIncomplete {
            topic: self.topic.to_string(),
            partition: self.index,
            reason,
        }
    }

    /// Flushes written data to disk (interval durability and shutdown).
    pub async fn flush(&self) -> BrokerResult<u64> {
        let log = Arc::clone(&self.log);
        let durable = tokio::task::spawn_blocking(move || log.flush())
            .await
            .map_err(|err| BrokerError::Internal(format!("flush task failed: {err}")))?
            .map_err(|err| self.error(err))?;
        self.advance_high_watermark();
        Ok(durable)
    }

    /// Tells replica fetches waiting at the old end that the log grew (or shrank).
    pub fn publish_log_end(&self) {
        self.log_end.send_replace(self.log.end_offset());
    }

    /// A receiver that changes whenever the log end moves.
    pub fn subscribe_log_end(&self) -> watch::Receiver<u64> {
        self.log_end.subscribe()
    }

    /// Moves the high watermark up to what the role allows now: the visible end when
    /// alone, the lowest durable end of the in-sync replicas when leading.
    pub fn advance_high_watermark(&self) {
        let local = self.log.visible_end_offset();
        let candidate = match &*self.lock_role() {
            Role::Alone => local,
            Role::Leader(leader) => leader.high_watermark(local),
            Role::Follower => return,
        };
        self.high_watermark.send_if_modified(|current| {
            let advanced = candidate > *current;
            if advanced {
                *current = candidate;
            }
            advanced
        });
    }

    /// Reads whole batches from `offset` below the high watermark.
    ///
    /// An offset at or past the high watermark (but not past the log end) reads
    /// nothing: the data is not committed yet. Past the end or before the start is
    /// an error.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> BrokerResult<ReadResult> {
        let read = self
            .read_below(offset, max_bytes, self.high_watermark())
            .await?;
        if holds_lost_range(&read.bytes) && self.in_sync_holds_what_i_lost() {
            // This copy lost records that an in-sync replica still holds: refuse
            // (clients retry) rather than hand out the gap; the replicator steps this
            // host down so the whole copy leads.
            return Err(BrokerError::NotLeader {
                kind: self.kind(),
                name: self.topic().to_owned(),
                partition: self.index(),
                leader: None,
            });
        }
        Ok(read)
    }

    /// Whether this host leads with a follower in the committed in-sync set that holds
    /// records this host's log lost: the one a damaged leader gives way to.
    pub fn in_sync_holds_what_i_lost(&self) -> bool {
        let lost = self.own_lost();
        match &mut *self.lock_role() {
            Role::Leader(leader) => {
                leader.set_own_lost(lost);
                leader.in_sync_holds_what_i_lost()
            }
            Role::Alone | Role::Follower => false,
        }
    }

    /// Where `follower` must truncate to fetch again the records it lost that this
    /// leader holds, once it is out of the in-sync set ([`LeaderCore::repair_for`]).
    pub fn repair_for(&self, follower: &str) -> Option<u64> {
        let lost = self.own_lost();
        match &mut *self.lock_role() {
            Role::Leader(leader) => {
                leader.set_own_lost(lost);
                leader.repair_for(follower)
            }
            Role::Alone | Role::Follower => None,
        }
    }

    /// Records this leader proposes the in-sync set `wanted` against the partition
    /// state at `revision` ([`LeaderCore::propose_in_sync`]).
    pub fn propose_in_sync(&self, wanted: &[String], revision: u64) {
        if let Role::Leader(leader) = &mut *self.lock_role() {
            leader.propose_in_sync(wanted, revision);
        }
        self.advance_high_watermark();
    }

    /// The lost ranges in this log (an unreadable list counts as the whole log).
    fn own_lost(&self) -> Vec<std::ops::Range<u64>> {
        self.log.lost_ranges().unwrap_or_else(|_| {
            std::iter::once(self.log.start_offset()..self.log.end_offset()).collect()
        })
    }

    /// Reads whole batches from `offset` below `limit` (a replica fetch reads up to
    /// the log end).
    pub async fn read_below(
        &self,
        offset: u64,
        max_bytes: usize,
        limit: u64,
    ) -> BrokerResult<ReadResult> {
        let end = self.log.end_offset();
        if offset >= limit && offset <= end {
            return Ok(ReadResult {
                bytes: Vec::new(),
                batches: 0,
                next_offset: offset,
            });
        }
        let log = Arc::clone(&self.log);
        tokio::task::spawn_blocking(move || log.read(offset, max_bytes, limit))
            .await
            .map_err(|err| BrokerError::Internal(format!("read task failed: {err}")))?
            .map_err(|err| self.error(err))
    }

    /// Locates whole batches from `offset` to the log end for sending unread
    /// ([`Log::locate`]); `None` when [`Self::read_below`] must serve them.
    pub async fn locate(&self, offset: u64, max_bytes: usize) -> BrokerResult<Option<BatchRange>> {
        let log = Arc::clone(&self.log);
        // Header reads: usually cached, but they may wait for the disk.
        tokio::task::spawn_blocking(move || log.locate(offset, max_bytes, u64::MAX))
            .await
            .map_err(|err| BrokerError::Internal(format!("locate task failed: {err}")))?
            .map_err(|err| self.error(err))
    }

    /// First offset whose record timestamp is at least `timestamp_ms`, if committed.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> BrokerResult<Option<(u64, i64)>> {
        let log = Arc::clone(&self.log);
        let visible = self.high_watermark();
        let found = tokio::task::spawn_blocking(move || log.offset_for_timestamp(timestamp_ms))
            .await
            .map_err(|err| BrokerError::Internal(format!("time index task failed: {err}")))?
            .map_err(|err| self.error(err))?;
        Ok(found.filter(|(offset, _)| *offset < visible))
    }

    /// One past the last offset consumers may read.
    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        self.log.start_offset()
    }

    /// A receiver that changes whenever the high watermark advances.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    /// The epoch this host leads the partition in, if it leads it.
    pub fn leader_epoch(&self) -> Option<u64> {
        match &*self.lock_role() {
            Role::Leader(leader) => Some(leader.epoch()),
            Role::Alone | Role::Follower => None,
        }
    }

    /// On a leader: each follower's durable end as its last fetch reported it
    /// (`None` before its first fetch in this epoch). Empty elsewhere.
    pub fn follower_offsets(&self) -> Vec<(String, Option<u64>)> {
        match &*self.lock_role() {
            Role::Leader(leader) => leader.follower_offsets(),
            Role::Alone | Role::Follower => Vec::new(),
        }
    }

    /// On a leader: each follower's progress (for lag metrics). Empty elsewhere.
    pub fn follower_lag(&self) -> Vec<ferry_replication::FollowerLag> {
        match &*self.lock_role() {
            Role::Leader(leader) => leader.follower_lag(),
            Role::Alone | Role::Follower => Vec::new(),
        }
    }

    /// Runs `append` (a follower storing fetched batches) unless this host stopped
    /// following meanwhile: a host taking up leadership changes the role under the
    /// same lock, so nothing fetched lands after that. `None` when skipped. Blocking.
    pub fn while_following<T>(&self, append: impl FnOnce() -> T) -> Option<T> {
        let _writes = self
            .replica_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !matches!(&*self.lock_role(), Role::Follower) {
            return None;
        }
        Some(append())
    }

    /// Like [`ReplicatedLog::lead`], but first waits for a follower append in flight to
    /// finish, so none lands after this returns. Blocking.
    pub fn lead_exclusively(&self, epoch: u64, replicas: &ReplicaSets) {
        let _writes = self
            .replica_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.lead(epoch, replicas);
    }

    fn is_alone(&self) -> bool {
        matches!(&*self.lock_role(), Role::Alone)
    }

    /// Makes this host the leader in `epoch` with the other replicas as `replicas`
    /// says. Within the same epoch only the sets are updated; a new epoch starts with
    /// every follower given a full lag allowance from now.
    pub fn lead(&self, epoch: u64, replicas: &ReplicaSets) {
        let now = monotonic_ms();
        let lost = self.own_lost();
        {
            let mut role = self.lock_role();
            let mut leader = match &*role {
                Role::Leader(current) if current.epoch() == epoch => current.clone(),
                _ => LeaderCore::new(epoch, self.log.end_offset()),
            };
            leader.set_own_lost(lost);
            leader.set_replicas(
                &replicas.followers,
                &replicas.in_sync,
                replicas.revision,
                now,
            );
            *role = Role::Leader(leader);
        }
        self.advance_high_watermark();
    }

    /// Leads as `state` (read at `revision`, naming `me` leader) says: its epoch, the
    /// other replicas as followers, its in-sync set.
    pub fn lead_per(&self, state: &PartitionState, revision: u64, me: &str) {
        self.lead(
            state.leader_epoch,
            &ReplicaSets::from_state(state, revision, me),
        );
    }

    /// Stops leading (or never starts): the partition serves nothing here.
    pub fn follow(&self) {
        *self.lock_role() = Role::Follower;
    }

    /// Records a follower's fetch from `fetch_offset` (its durable end; `lost` the lost
    /// ranges in its log) and advances the high watermark. Fails unless this host
    /// leads in `leader_epoch` and `follower` holds a replica.
    pub fn record_fetch(
        &self,
        follower: &str,
        leader_epoch: u64,
        fetch_offset: u64,
        lost: Vec<std::ops::Range<u64>>,
    ) -> BrokerResult<()> {
        let now = monotonic_ms();
        let log_end = self.log.end_offset();
        {
            let mut role = self.lock_role();
            let Role::Leader(leader) = &mut *role else {
                return Err(self.not_leading());
            };
            if leader.epoch() != leader_epoch {
                return Err(self.not_leading());
            }
            leader
                .record_fetch(follower, fetch_offset, log_end, lost, now)
                .map_err(|unknown| {
                    BrokerError::InvalidArgument(format!(
                        "{unknown} of {} partition {}",
                        self.topic, self.index
                    ))
                })?;
        }
        self.advance_high_watermark();
        Ok(())
    }

    fn not_leading(&self) -> BrokerError {
        BrokerError::NotLeader {
            kind: self.kind,
            name: self.topic.to_string(),
            partition: self.index,
            leader: None,
        }
    }

    /// The in-sync set this leader wants, if it differs from the committed one: those
    /// that fell behind for longer than `max_lag` leave; those that caught up (at or
    /// above the high watermark and this epoch's start, recently) come back. The
    /// leader itself always stays. `None` when nothing changes or not leading.
    pub fn wanted_in_sync(&self, me: &str, max_lag: Duration) -> Option<Vec<String>> {
        let high_watermark = self.high_watermark();
        match &*self.lock_role() {
            Role::Leader(leader) => {
                leader.wanted_in_sync(me, high_watermark, lag_ms(max_lag), monotonic_ms())
            }
            Role::Alone | Role::Follower => None,
        }
    }

    /// The in-sync set as this leader judges it now (itself first), changed or not;
    /// `None` when not leading.
    pub fn in_sync_now(&self, me: &str, max_lag: Duration) -> Option<Vec<String>> {
        let high_watermark = self.high_watermark();
        match &*self.lock_role() {
            Role::Leader(leader) => {
                Some(leader.judge_in_sync(me, high_watermark, lag_ms(max_lag), monotonic_ms()))
            }
            Role::Alone | Role::Follower => None,
        }
    }

    /// A follower learned the leader's high watermark: it keeps the lower of that and
    /// its own end (it serves nothing; this is what it starts from if elected).
    pub fn learn_high_watermark(&self, leader_high_watermark: u64) {
        let value = ferry_replication::follower::learned_high_watermark(
            leader_high_watermark,
            self.log.end_offset(),
        );
        self.high_watermark.send_if_modified(|current| {
            let changed = value != *current;
            *current = value;
            changed
        });
    }

    /// After the log was truncated or reset: the high watermark cannot be above the
    /// end, and waiting replica fetches must see the new end.
    pub fn after_log_rewrite(&self) {
        let end = self.log.end_offset();
        self.high_watermark.send_if_modified(|current| {
            let lowered = *current > end;
            if lowered {
                *current = end;
            }
            lowered
        });
        self.publish_log_end();
    }

    /// Flushes and closes the log. Blocking.
    pub fn close(&self) -> BrokerResult<()> {
        self.log.close().map_err(|err| self.error(err))
    }
}

/// A lag allowance in the state machine's milliseconds.
fn lag_ms(max_lag: Duration) -> u64 {
    u64::try_from(max_lag.as_millis()).unwrap_or(u64::MAX)
}

/// Whether `bytes` (whole batches) hold a lost-range batch.
fn holds_lost_range(bytes: &[u8]) -> bool {
    ferry_records::Batches::new(bytes)
        .filter_map(Result::ok)
        .any(|batch| batch.header.is_lost_range())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_records::BatchBuilder;

    fn batch() -> CheckedBatch<Bytes> {
        let mut builder = BatchBuilder::new();
        builder.push(None, b"payload", &[], 1);
        let bytes = Bytes::from(builder.finish().expect("one record"));
        ferry_storage::check_batch(bytes, 1 << 20, 1 << 20).expect("a good batch")
    }

    fn open_replicated(dir: &Path) -> ReplicatedLog {
        ReplicatedLog::open(
            Arc::from("orders"),
            0,
            dir,
            LogConfig::default(),
            DurabilitySetting::Fsync,
            DiskHooks::default(),
            true,
        )
        .expect("open partition")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replicated_partition_takes_no_write_until_it_leads_and_then_serves_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partition = open_replicated(dir.path());

        let refused = partition.append(batch(), 1, 1, Ack::Leader).await;
        assert!(
            matches!(refused, Err(BrokerError::NotLeader { .. })),
            "a follower refuses: {refused:?}"
        );
        assert_eq!(partition.log.end_offset(), 0, "nothing was written");

        partition.lead(1, &ReplicaSets::default());
        let stale = partition.append(batch(), 0, 1, Ack::Leader).await;
        assert!(
            matches!(stale, Err(BrokerError::NotLeader { .. })),
            "an older epoch is refused: {stale:?}"
        );
        let written = partition
            .append(batch(), 1, 1, Ack::Leader)
            .await
            .expect("the leader writes");
        assert_eq!(
            partition.high_watermark(),
            written.last_offset + 1,
            "a single replica's acknowledged write is readable at once"
        );
        let read = partition.read(0, 1 << 20).await.expect("read");
        assert_eq!(read.batches, 1);
    }
}
