//! One queue on disk: its message log, its journal of state changes, its snapshot,
//! and the state machine they rebuild.
//!
//! Every state change happens under the state lock together with its journal append,
//! so the journal's order is the state's order. Waiting for fsync and reading message
//! bodies happen outside the lock. Sent messages become receivable only once durable
//! (with fsync durability), exactly as topic records become fetchable.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ferry_records::{BatchBuilder, Batches};
use ferry_replication::LogKind;
use ferry_storage::{DiskHooks, Log, StorageError};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::commit::GroupCommit;
use crate::config::Limits;
use crate::error::{BrokerError, BrokerResult};
use crate::queue::codec::{RESERVED_PREFIX, Snapshot, StoredMessage, decode_event, encode_event};
use crate::queue::receipt::{Receipt, encode_receipt, message_id};
use crate::queue::settings::QueueRecord;
use crate::queue::state::{Depth, Event, MessageState, QueueState, ReceiptError, StateConfig};
use crate::topic::{
    Ack, DurabilitySetting, QUEUE_JOURNAL_LOG, QUEUE_MESSAGES_LOG, ReplicaSets, ReplicatedLog,
    STANDALONE_LEADER_EPOCH,
};

/// Longest FIFO group id or dedup id.
pub const MAX_ID_LEN: usize = 128;
/// Bytes read from the message log per read call when delivering. Small: a receive
/// usually wants a few neighbouring batches, and a read returns at least one whole batch.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Bytes read per call when replaying a log at start-up.
const REPLAY_CHUNK_BYTES: usize = 4 << 20;
/// A send's user bytes may fill at most 1/N of `max_batch_bytes`: record framing and
/// system headers (group, dedup id, delay) must still fit in the stored batch.
const SEND_BATCH_HEADROOM: usize = 2;
/// Snapshot file name inside the queue directory.
const SNAPSHOT_FILE: &str = "snapshot";

/// A message to send, already converted from the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Payload.
    pub body: Vec<u8>,
    /// String attributes.
    pub attributes: Vec<(String, String)>,
    /// Delay; the queue's default when `None`.
    pub delay_ms: Option<u64>,
    /// FIFO message group.
    pub group: Option<String>,
    /// Dedup id.
    pub dedup_id: Option<String>,
}

/// The outcome of one sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOutcome {
    /// Offset of the stored message (the original one for a duplicate).
    pub offset: u64,
    /// It was a duplicate within the dedup window and was not stored again.
    pub duplicate: bool,
}

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredMessage {
    /// Offset in the message log.
    pub offset: u64,
    /// Receipt handle for this delivery.
    pub receipt: String,
    /// Receives including this one.
    pub receive_count: u32,
    /// When it was stored.
    pub sent_at_ms: i64,
    /// Its content.
    pub message: StoredMessage,
}

/// How a receive behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Most messages to return.
    pub max_messages: usize,
    /// Invisibility after delivery.
    pub visibility_timeout_ms: u64,
    /// Delete on delivery.
    pub at_most_once: bool,
}

/// Counters since the broker started.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Messages stored.
    pub sent: AtomicU64,
    /// Deliveries.
    pub received: AtomicU64,
    /// Acks (at-most-once deliveries included).
    pub acked: AtomicU64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Messages dropped by retention.
    pub expired: AtomicU64,
    /// Sends not stored because of dedup.
    pub deduplicated: AtomicU64,
}

/// Depth and counters, for describe and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Counts by status.
    pub depth: Depth,
    /// Age of the oldest message.
    pub oldest_age_ms: u64,
    /// Distinct recent consumers.
    pub consumers: u32,
    /// Messages stored.
    pub sent: u64,
    /// Deliveries.
    pub received: u64,
    /// Acks.
    pub acked: u64,
    /// Deadlines that passed without an ack.
    pub redelivered: u64,
    /// Moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Dropped by retention.
    pub expired: u64,
    /// Sends not stored because of dedup.
    pub deduplicated: u64,
}

/// Bookkeeping for compaction.
#[derive(Debug, Clone, Copy)]
struct SnapshotMark {
    /// Message log offset the last snapshot covers.
    messages_end: u64,
    /// Journal size when it was taken.
    journal_bytes: u64,
    /// When it was taken.
    at: Instant,
}

/// One open queue.
pub struct Queue {
    /// What the metadata store holds for it.
    pub record: QueueRecord,
    dir: PathBuf,
    limits: Limits,
    messages: Arc<Log>,
    journal: Arc<Log>,
    /// Async fsync waits for `messages` (blocking callers use the log directly).
    messages_commit: GroupCommit,
    /// Async fsync waits for `journal`.
    journal_commit: GroupCommit,
    /// `messages` as a replicated log: its role and high watermark.
    messages_replica: Arc<ReplicatedLog>,
    /// `journal` as a replicated log.
    journal_replica: Arc<ReplicatedLog>,
    /// Cluster mode: the logs are replicated and the state is served only while
    /// this host leads.
    replicated: bool,
    /// When a write counts as done.
    ack: Ack,
    /// How long compaction waits for the replicas to confirm what a snapshot covers.
    commit_timeout: std::time::Duration,
    /// The leader epoch the state was rebuilt for and is served in (always the
    /// standalone epoch outside a cluster); `None` while following.
    serving: Mutex<Option<u64>>,
    // A std mutex: nothing awaits under it; it covers a state change and its journal write.
    state: Mutex<QueueState>,
    /// Wakes long polls when messages may have become receivable.
    changed: Notify,
    /// Wakes the housekeeping task early (dead letters waiting).
    housekeeping: Notify,
    /// Counters since start.
    pub counters: QueueCounters,
    consumers: Mutex<HashMap<String, Instant>>,
    snapshot: Mutex<SnapshotMark>,
    /// Which snapshot the snapshot file holds; held while the file is written or
    /// read for a follower, so a copy never mixes two snapshots.
    snapshot_file: Mutex<Option<SnapshotId>>,
}

/// Names a snapshot by the log ends it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotId {
    /// Message log offset the snapshot covers up to.
    pub messages_end: u64,
    /// Journal offset the snapshot covers up to.
    pub journal_end: u64,
}

impl SnapshotId {
    /// Where replay of the replicated log `index` starts after this snapshot.
    pub fn end_of(&self, index: u32) -> u64 {
        if index == QUEUE_JOURNAL_LOG {
            self.journal_end
        } else {
            self.messages_end
        }
    }
}

/// A piece of a queue's snapshot file, as a follower copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The snapshot the file holds (`None`: the queue has none).
    pub id: Option<SnapshotId>,
    /// The file's size.
    pub total_bytes: u64,
    /// Bytes from the requested offset.
    pub data: Vec<u8>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic mid-update elsewhere; the state machine keeps its
    // own invariants per call, so carrying on is the least harmful choice.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a queue takes part in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueMode {
    /// A standalone host: serves at once, writes in the standalone epoch.
    Standalone,
    /// Cluster mode: replicated logs, served once this host leads.
    Cluster {
        /// How long a `sync` write waits for the in-sync replicas.
        ack_timeout: std::time::Duration,
    },
}

impl Queue {
    /// Opens (creating if missing) and recovers the queue in `dir`. Blocking.
    pub fn open(
        record: QueueRecord,
        dir: &Path,
        limits: &Limits,
        hooks: DiskHooks,
        now_ms: i64,
    ) -> BrokerResult<Queue> {
        Self::open_in(record, dir, limits, hooks, now_ms, QueueMode::Standalone)
    }

    /// Opens the queue in `dir` for `mode`. Blocking.
    pub fn open_in(
        record: QueueRecord,
        dir: &Path,
        limits: &Limits,
        hooks: DiskHooks,
        now_ms: i64,
        mode: QueueMode,
    ) -> BrokerResult<Queue> {
        let name = record.name.clone();
        let fail = |err: StorageError| BrokerError::queue_storage(&name, err);
        let config = record.settings.log_config(limits);
        let messages = Log::open_with_hooks(&dir.join("messages"), config.clone(), hooks.clone())
            .map_err(fail)?;
        let journal = Log::open_with_hooks(
            &dir.join("journal"),
            ferry_storage::LogConfig {
                max_record_bytes: 64,
                ..config
            },
            hooks,
        )
        .map_err(fail)?;
        let (state, messages_from, snapshot_id) =
            recover(&record, dir, &messages, &journal, now_ms, None)?;
        let journal_bytes = journal.size_bytes();
        let (messages, journal) = (Arc::new(messages), Arc::new(journal));
        let settings = &record.settings;
        let (replicated, ack, commit_timeout) = match mode {
            QueueMode::Standalone => (false, Ack::Leader, std::time::Duration::ZERO),
            QueueMode::Cluster { ack_timeout } => (
                true,
                Ack::for_settings(
                    true,
                    settings.replication_factor,
                    settings.replication,
                    ack_timeout,
                ),
                ack_timeout,
            ),
        };
        let replica = |log: &Arc<Log>, index| {
            Arc::new(ReplicatedLog::over(
                LogKind::Queue,
                Arc::from(name.as_str()),
                index,
                Arc::clone(log),
                settings.durability,
                replicated,
            ))
        };
        let messages_replica = replica(&messages, QUEUE_MESSAGES_LOG);
        let journal_replica = replica(&journal, QUEUE_JOURNAL_LOG);
        Ok(Queue {
            messages_replica,
            journal_replica,
            replicated,
            ack,
            commit_timeout,
            serving: Mutex::new((!replicated).then_some(STANDALONE_LEADER_EPOCH)),
            record,
            dir: dir.to_owned(),
            limits: limits.clone(),
            messages_commit: GroupCommit::new(Arc::clone(&messages)),
            journal_commit: GroupCommit::new(Arc::clone(&journal)),
            messages,
            journal,
            state: Mutex::new(state),
            changed: Notify::new(),
            housekeeping: Notify::new(),
            counters: QueueCounters::default(),
            consumers: Mutex::new(HashMap::new()),
            snapshot: Mutex::new(SnapshotMark {
                messages_end: messages_from,
                journal_bytes,
                at: Instant::now(),
            }),
            snapshot_file: Mutex::new(snapshot_id),
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// The directory holding its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id clients see for the message at `offset`.
    pub fn message_id(&self, offset: u64) -> String {
        message_id(self.record.incarnation, offset)
    }

    fn storage_error(&self, err: StorageError) -> BrokerError {
        BrokerError::queue_storage(&self.record.name, err)
    }

    fn waits_for_disk(&self) -> bool {
        self.record.settings.durability == DurabilitySetting::Fsync
    }

    /// Checks a send request before anything is stored.
    pub fn validate_send(&self, messages: &[OutgoingMessage]) -> BrokerResult<()> {
        let settings = &self.record.settings;
        let limits = &self.limits;
        if messages.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "a send needs at least one message".into(),
            ));
        }
        if messages.len() > limits.max_send_messages as usize {
            return Err(BrokerError::LimitExceeded {
                what: "messages per send request",
                limit: u64::from(limits.max_send_messages),
            });
        }
        let mut total = 0usize;
        for message in messages {
            let size = message.body.len()
                + message
                    .attributes
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>();
            if size > settings.max_message_bytes as usize {
                return Err(BrokerError::MessageTooLarge {
                    size,
                    limit: settings.max_message_bytes as usize,
                });
            }
            total += size;
            if message.attributes.len() > limits.max_message_attributes as usize {
                return Err(BrokerError::LimitExceeded {
                    what: "attributes per message",
                    limit: u64::from(limits.max_message_attributes),
                });
            }
            for (key, _) in &message.attributes {
                if key.is_empty() || key.starts_with(RESERVED_PREFIX) {
                    return Err(BrokerError::InvalidArgument(format!(
                        "attribute name {key:?} is empty or uses the reserved prefix {RESERVED_PREFIX:?}"
                    )));
                }
            }
            if let Some(delay) = message.delay_ms
                && delay > limits.max_delay_ms
            {
                return Err(BrokerError::InvalidArgument(format!(
                    "delay of {delay} ms exceeds the maximum of {} ms",
                    limits.max_delay_ms
                )));
            }
            for (what, id) in [
                ("group id", &message.group),
                ("dedup id", &message.dedup_id),
            ] {
                if let Some(id) = id
                    && (id.is_empty() || id.len() > MAX_ID_LEN)
                {
                    return Err(BrokerError::InvalidArgument(format!(
                        "{what} must be 1 to {MAX_ID_LEN} bytes, got {}",
                        id.len()
                    )));
                }
            }
            if settings.fifo && message.group.is_none() {
                return Err(BrokerError::InvalidArgument(format!(
                    "queue {:?} is FIFO: every message needs a group id",
                    self.record.name
                )));
            }
        }
        let limit = limits.max_batch_bytes as usize / SEND_BATCH_HEADROOM;
        if total > limit {
            return Err(BrokerError::BatchTooLarge { size: total, limit });
        }
        Ok(())
    }

    /// Stores messages (validated with [`Queue::validate_send`]), answering once they
    /// are durable.
    pub async fn send(
        &self,
        outgoing: Vec<OutgoingMessage>,
        now_ms: i64,
    ) -> BrokerResult<Vec<SendOutcome>> {
        self.store(self.to_stored(outgoing, now_ms), now_ms).await
    }

    /// The stored form of messages to send: dedup ids and delays resolved.
    fn to_stored(&self, outgoing: Vec<OutgoingMessage>, now_ms: i64) -> Vec<StoredMessage> {
        let settings = &self.record.settings;
        outgoing
            .into_iter()
            .map(|m| {
                let dedup_id = m.dedup_id.or_else(|| {
                    settings
                        .content_based_dedup
                        .then(|| content_dedup_id(&m.body))
                });
                let delay = m.delay_ms.unwrap_or(settings.delay_ms);
                StoredMessage {
                    body: m.body,
                    attributes: m.attributes,
                    visible_at_ms: (delay > 0)
                        .then(|| now_ms.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX))),
                    group: m.group,
                    dedup_id,
                    dead_letter: None,
                }
            })
            .collect()
    }

    /// Stores messages (sent, dead-lettered or redriven here), waits for them to be
    /// durable and makes them receivable.
    pub async fn store(
        &self,
        stored: Vec<StoredMessage>,
        now_ms: i64,
    ) -> BrokerResult<Vec<SendOutcome>> {
        let epoch = self.check_writable()?;
        let (outcomes, end) = self.append_messages(stored, now_ms)?;
        if let Some(end) = end {
            if self.waits_for_disk() {
                self.messages_commit
                    .wait(end)
                    .await
                    .map_err(|err| self.storage_error(err))?;
            }
            self.wait_replicated(&self.messages_replica, end, epoch)
                .await?;
        }
        self.promote(now_ms);
        Ok(outcomes)
    }

    /// The epoch writes are stamped with now; `NotLeader` unless this host serves
    /// the queue. For `sync` replication also refuses (`NotEnoughReplicas`, nothing
    /// written) while too few replicas are in sync.
    fn check_writable(&self) -> BrokerResult<u64> {
        let epoch = self.write_epoch()?;
        if let Ack::InSync { min_in_sync, .. } = self.ack {
            self.messages_replica.check_writable(epoch, min_in_sync)?;
        }
        Ok(epoch)
    }

    /// The epoch this host serves the queue in; `NotLeader` (nothing written) while
    /// it follows or is still rebuilding the state.
    fn write_epoch(&self) -> BrokerResult<u64> {
        lock(&self.serving).ok_or_else(|| BrokerError::NotLeader {
            kind: LogKind::Queue,
            name: self.record.name.clone(),
            partition: 0,
            leader: None,
        })
    }

    /// Moves `log`'s high watermark past what is durable here and, for `sync`
    /// replication, waits until the in-sync replicas hold everything below `end`.
    async fn wait_replicated(&self, log: &ReplicatedLog, end: u64, epoch: u64) -> BrokerResult<()> {
        if !self.replicated {
            return Ok(());
        }
        log.advance_high_watermark();
        if let Ack::InSync {
            timeout,
            min_in_sync,
        } = self.ack
        {
            log.wait_committed(end, epoch, min_in_sync, timeout).await?;
        }
        Ok(())
    }

    /// Where receivable messages end: what is durable here, or in a cluster what the
    /// in-sync replicas hold (a new leader never takes back a delivered message).
    fn deliverable_end(&self) -> u64 {
        if self.replicated {
            self.messages_replica.high_watermark()
        } else {
            self.messages.visible_end_offset()
        }
    }

    /// Makes what became durable (and, in a cluster, committed) receivable and wakes
    /// long polls for it.
    pub fn promote(&self, now_ms: i64) {
        let visible = lock(&self.state).promote(self.deliverable_end(), now_ms);
        if visible > 0 {
            self.changed.notify_waiters();
        }
    }

    /// Appends messages under the state lock (dedup checked, entries added as pending).
    /// Returns each message's outcome and the log end to wait for, if anything was
    /// written. Writes to the page cache only; never waits for an fsync.
    fn append_messages(
        &self,
        stored: Vec<StoredMessage>,
        now_ms: i64,
    ) -> BrokerResult<(Vec<SendOutcome>, Option<u64>)> {
        let mut outcomes = Vec::with_capacity(stored.len());
        let end = {
            let mut state = lock(&self.state);
            if state.len() + stored.len() > self.record.settings.max_messages as usize {
                return Err(BrokerError::LimitExceeded {
                    what: "messages held by the queue",
                    limit: self.record.settings.max_messages,
                });
            }
            let base = self.messages.end_offset();
            let mut builder = BatchBuilder::new();
            let mut batch_ids: HashMap<&str, u64> = HashMap::new();
            let mut added = Vec::new();
            for message in &stored {
                let offset = base + u64::from(builder.record_count());
                if let Some(id) = message.dedup_id.as_deref() {
                    let original = batch_ids
                        .get(id)
                        .copied()
                        .or_else(|| state.find_duplicate(id, now_ms));
                    if let Some(original) = original {
                        outcomes.push(SendOutcome {
                            offset: original,
                            duplicate: true,
                        });
                        continue;
                    }
                    batch_ids.insert(id, offset);
                }
                let headers = message.headers();
                let refs: Vec<(&str, &[u8])> =
                    headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
                builder.push(None, &message.body, &refs, now_ms);
                added.push((offset, message.state_entry(now_ms)));
                outcomes.push(SendOutcome {
                    offset,
                    duplicate: false,
                });
            }
            let duplicates = (stored.len() - added.len()) as u64;
            self.counters
                .deduplicated
                .fetch_add(duplicates, Ordering::Relaxed);
            let Some(batch) = builder.finish() else {
                return Ok((outcomes, None));
            };
            let appended = self
                .messages
                .append(batch, self.write_epoch()?, now_ms)
                .map_err(|err| self.storage_error(err))?;
            if appended.base_offset != base {
                return Err(BrokerError::Internal(format!(
                    "queue {:?}: append landed at {} instead of {base}",
                    self.record.name, appended.base_offset
                )));
            }
            self.counters
                .sent
                .fetch_add(added.len() as u64, Ordering::Relaxed);
            for (offset, entry) in added {
                state.add(offset, entry);
            }
            if self.replicated {
                // Followers waiting at the end fetch it now; their fsyncs overlap ours.
                self.messages_replica.publish_log_end();
            }
            appended.last_offset + 1
        };
        Ok((outcomes, Some(end)))
    }

    /// Appends events to the journal (under the state lock: the caller holds it).
    fn journal_events(&self, events: &[Event], now_ms: i64) -> BrokerResult<Option<u64>> {
        if events.is_empty() {
            return Ok(None);
        }
        let mut builder = BatchBuilder::with_capacity(events.len() * 24 + 128);
        let mut value = Vec::with_capacity(32);
        for event in events {
            value.clear();
            encode_event(event, &mut value);
            builder.push(None, &value, &[], now_ms);
        }
        let Some(batch) = builder.finish() else {
            return Ok(None);
        };
        let appended = self
            .journal
            .append(batch, self.write_epoch()?, now_ms)
            .map_err(|err| self.storage_error(err))?;
        if self.replicated {
            self.journal_replica.publish_log_end();
        }
        Ok(Some(appended.last_offset + 1))
    }

    /// Journals the events of a receive or settle (the caller holds the state lock).
    /// If the journal refuses them for a full disk, the messages go back to their
    /// `before` states, so the refused request changed nothing and the state stays
    /// what the journal replays to; the client retries once space is freed.
    fn journal_or_undo(
        &self,
        state: &mut QueueState,
        events: &[Event],
        before: Vec<(u64, MessageState)>,
        now_ms: i64,
    ) -> BrokerResult<Option<u64>> {
        let journaled = self.journal_events(events, now_ms);
        if let Err(BrokerError::QueueStorage { source, .. }) = &journaled
            && source.is_disk_full()
        {
            for (offset, message) in before.into_iter().rev() {
                state.put_back(offset, message);
            }
        }
        journaled
    }

    /// Waits for journal events to be durable (fsync durability only).
    async fn journal_durable(&self, end: Option<u64>) -> BrokerResult<()> {
        if let Some(end) = end
            && self.waits_for_disk()
        {
            self.journal_commit
                .wait(end)
                .await
                .map_err(|err| self.storage_error(err))?;
        }
        Ok(())
    }

    fn wait_journal(&self, end: Option<u64>) -> BrokerResult<()> {
        if let Some(end) = end
            && self.waits_for_disk()
        {
            self.journal
                .wait_durable(end)
                .map_err(|err| self.storage_error(err))?;
        }
        Ok(())
    }

    /// Delivers up to `max_messages` messages without waiting for new ones. Nothing
    /// here blocks for long (a state change, a buffered journal write, page-cache
    /// reads) unless an at-most-once receive waits for its fsync, which it awaits.
    pub async fn receive(
        &self,
        options: ReceiveOptions,
        now_ms: i64,
    ) -> BrokerResult<Vec<DeliveredMessage>> {
        // Taken before anything is written: a leadership lost after the journal write
        // makes the wait below answer "incomplete", not "not leader".
        let epoch = self.write_epoch()?;
        let mut events = Vec::new();
        let mut before = Vec::new();
        let (deliveries, journal_end) = {
            let mut state = lock(&self.state);
            let dead_letters = state.depth().dead_letter;
            let deliveries = state.receive_undoable(
                (
                    options.max_messages,
                    options.visibility_timeout_ms,
                    options.at_most_once,
                ),
                now_ms,
                new_token,
                &mut events,
                Some(&mut before),
            );
            if state.depth().dead_letter > dead_letters {
                self.housekeeping.notify_one();
            }
            let end = self.journal_or_undo(&mut state, &events, before, now_ms)?;
            (deliveries, end)
        };
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        // At-most-once deletes on delivery: the deletion must be on disk before the
        // message leaves, or a power loss could deliver it twice. A `Received` event
        // is written (so it survives a process crash) but not waited for: the next
        // fsync of this journal covers it, and losing it to a power cut only means
        // the message comes back with a lower receive count, which at-least-once
        // delivery allows. Waiting would put a second fsync on every consumer cycle.
        if options.at_most_once {
            self.journal_durable(journal_end).await?;
            if let Some(end) = journal_end {
                self.wait_replicated(&self.journal_replica, end, epoch)
                    .await?;
            }
        }
        let count = deliveries.len() as u64;
        self.counters.received.fetch_add(count, Ordering::Relaxed);
        if options.at_most_once {
            self.counters.acked.fetch_add(count, Ordering::Relaxed);
        }
        let mut offsets: Vec<u64> = deliveries.iter().map(|d| d.offset).collect();
        offsets.sort_unstable();
        let mut bodies = self.read_messages(&offsets)?;
        let incarnation = self.record.incarnation;
        Ok(deliveries
            .into_iter()
            .filter_map(|delivery| {
                let Some((message, sent_at_ms)) = bodies.remove(&delivery.offset) else {
                    tracing::warn!(queue = %self.record.name, offset = delivery.offset, "delivered message missing from the log");
                    return None;
                };
                Some(DeliveredMessage {
                    offset: delivery.offset,
                    receipt: encode_receipt(incarnation, delivery.offset, delivery.token),
                    receive_count: delivery.receive_count,
                    sent_at_ms,
                    message,
                })
            })
            .collect())
    }

    /// Reads the stored messages at `offsets` (sorted). Blocking.
    fn read_messages(&self, offsets: &[u64]) -> BrokerResult<HashMap<u64, (StoredMessage, i64)>> {
        let mut found = HashMap::with_capacity(offsets.len());
        let end = self.messages.end_offset();
        let mut next = 0;
        while let Some(&offset) = offsets.get(next) {
            let read = self
                .messages
                .read(offset, READ_CHUNK_BYTES, end)
                .map_err(|err| self.storage_error(err))?;
            for batch in Batches::new(&read.bytes) {
                let batch = batch.map_err(|err| self.corrupt(err))?;
                for record in batch.records() {
                    let record = record.map_err(|err| self.corrupt(err))?;
                    if offsets.binary_search(&record.offset).is_ok() {
                        let message =
                            StoredMessage::from_record(&record).map_err(|err| self.corrupt(err))?;
                        found.insert(record.offset, (message, record.timestamp_ms));
                    }
                }
            }
            let resume = read.next_offset.max(offset + 1);
            next += offsets[next..].partition_point(|o| *o < resume);
        }
        Ok(found)
    }

    fn corrupt(&self, err: ferry_records::RecordError) -> BrokerError {
        BrokerError::Internal(format!(
            "queue {:?}: unreadable stored message: {err}",
            self.record.name
        ))
    }

    /// Acks, nacks or changes visibility for a batch of receipts; per-receipt results.
    pub async fn settle(
        &self,
        receipts: &[Receipt],
        action: Settle,
        now_ms: i64,
    ) -> BrokerResult<Vec<Result<(), ReceiptError>>> {
        let epoch = self.check_writable()?;
        let mut events = Vec::with_capacity(receipts.len());
        let mut before = Vec::with_capacity(receipts.len());
        let (results, journal_end, readied) = {
            let mut state = lock(&self.state);
            let readied = state.readied();
            let results: Vec<Result<(), ReceiptError>> = receipts
                .iter()
                .map(|r| {
                    if let Some(message) = state.message(r.offset) {
                        before.push((r.offset, message.clone()));
                    }
                    let event = match action {
                        Settle::Ack => state.ack(r.offset, r.token),
                        Settle::Visibility(timeout_ms) => {
                            state.change_visibility(r.offset, r.token, timeout_ms, now_ms)
                        }
                    }?;
                    events.push(event);
                    Ok(())
                })
                .collect();
            let readied = state.readied() > readied;
            let end = self.journal_or_undo(&mut state, &events, before, now_ms)?;
            (results, end, readied)
        };
        self.journal_durable(journal_end).await?;
        if let Some(end) = journal_end {
            self.wait_replicated(&self.journal_replica, end, epoch)
                .await?;
        }
        if let Settle::Ack = action {
            let settled = events.len() as u64;
            self.counters.acked.fetch_add(settled, Ordering::Relaxed);
        }
        // A nack makes its messages receivable; in a FIFO queue so does an ack of a
        // group's head, for the group's next message.
        if readied {
            self.changed.notify_waiters();
        }
        Ok(results)
    }

    /// Removes every message stored so far; under `sync` replication, answered once the
    /// in-sync replicas hold the purge.
    pub async fn purge(&self, now_ms: i64) -> BrokerResult<u64> {
        let epoch = self.check_writable()?;
        let (purged, journal_end) = {
            let mut state = lock(&self.state);
            let (purged, event) = state.purge(self.messages.end_offset());
            (purged, self.journal_events(&[event], now_ms)?)
        };
        self.journal_durable(journal_end).await?;
        if let Some(end) = journal_end {
            self.wait_replicated(&self.journal_replica, end, epoch)
                .await?;
        }
        Ok(purged as u64)
    }

    /// Applies time: wakes receivers for messages whose delay or deadline ended.
    pub fn tick(&self, now_ms: i64) {
        let visible = lock(&self.state).advance(now_ms);
        if visible > 0 {
            self.changed.notify_waiters();
        }
    }

    /// The earliest time something changes by itself.
    pub fn next_due_ms(&self) -> Option<i64> {
        lock(&self.state).next_due_ms()
    }

    /// Dead-letter candidates with their content. Blocking.
    pub fn dead_letter_batch(
        &self,
        max: usize,
        now_ms: i64,
    ) -> BrokerResult<Vec<(u64, StoredMessage, u32)>> {
        let candidates: Vec<(u64, u32)> = {
            let mut state = lock(&self.state);
            state.advance(now_ms);
            state
                .dead_letter_candidates(max)
                .into_iter()
                .filter_map(|o| state.message(o).map(|m| (o, m.receive_count)))
                .collect()
        };
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let offsets: Vec<u64> = candidates.iter().map(|(o, _)| *o).collect();
        let mut bodies = self.read_messages(&offsets)?;
        Ok(candidates
            .into_iter()
            .filter_map(|(offset, count)| {
                bodies
                    .remove(&offset)
                    .map(|(message, _)| (offset, message, count))
            })
            .collect())
    }

    /// Removes messages that were copied to the dead-letter queue. Blocking.
    pub fn finish_dead_letters(&self, offsets: &[u64], now_ms: i64) -> BrokerResult<u64> {
        let (moved, journal_end, readied) = {
            let mut state = lock(&self.state);
            let readied = state.readied();
            let events: Vec<Event> = offsets
                .iter()
                .filter_map(|o| state.dead_lettered(*o))
                .collect();
            let readied = state.readied() > readied;
            (events.len(), self.journal_events(&events, now_ms)?, readied)
        };
        self.wait_journal(journal_end)?;
        // Moving a FIFO group's head lets the group's next message through.
        if readied {
            self.changed.notify_waiters();
        }
        self.counters
            .dead_lettered
            .fetch_add(moved as u64, Ordering::Relaxed);
        Ok(moved as u64)
    }

    /// Drops messages older than the retention period. Blocking.
    pub fn expire_blocking(&self, now_ms: i64, max: usize) -> BrokerResult<usize> {
        let retention = self.record.settings.retention_ms;
        if retention == 0 {
            return Ok(0);
        }
        let cutoff = now_ms.saturating_sub(i64::try_from(retention).unwrap_or(i64::MAX));
        let mut events = Vec::new();
        let (expired, journal_end, readied) = {
            let mut state = lock(&self.state);
            let readied = state.readied();
            let expired = state.expire(cutoff, max, &mut events);
            let readied = state.readied() > readied;
            (expired, self.journal_events(&events, now_ms)?, readied)
        };
        self.wait_journal(journal_end)?;
        // Dropping a FIFO group's head lets the group's next message through.
        if readied {
            self.changed.notify_waiters();
        }
        if expired > 0 {
            self.counters
                .expired
                .fetch_add(expired as u64, Ordering::Relaxed);
            tracing::info!(queue = %self.record.name, expired, "retention dropped messages");
        }
        Ok(expired)
    }

    /// Flushes both logs (interval durability and shutdown). Blocking.
    pub fn flush_blocking(&self) -> BrokerResult<()> {
        self.messages
            .flush()
            .map_err(|err| self.storage_error(err))?;
        self.journal
            .flush()
            .map_err(|err| self.storage_error(err))?;
        if self.replicated {
            self.messages_replica.advance_high_watermark();
            self.journal_replica.advance_high_watermark();
        }
        self.promote(crate::clock::now_ms());
        Ok(())
    }

    /// Snapshots the state and deletes the journal and message segments it makes
    /// unnecessary, when the journal grew enough or long enough ago. Blocking.
    pub fn compact_if_due(&self, every_bytes: u64, every_ms: u64) -> BrokerResult<bool> {
        let mark = *lock(&self.snapshot);
        let grown = self.journal.size_bytes().saturating_sub(mark.journal_bytes);
        let due = grown >= every_bytes
            || (grown > 0 && mark.at.elapsed().as_millis() >= u128::from(every_ms));
        if due {
            self.compact()?;
        } else {
            self.delete_consumed_messages(mark.messages_end)?;
        }
        Ok(due)
    }

    /// Takes a snapshot now and compacts. Blocking.
    pub fn compact(&self) -> BrokerResult<()> {
        let snapshot = {
            let state = lock(&self.state);
            Snapshot {
                messages_end: self.messages.end_offset(),
                journal_end: self.journal.end_offset(),
                messages: state
                    .messages()
                    .map(|(o, m)| (o, m.clone()))
                    .chain(state.pending().map(|(o, m)| {
                        (
                            o,
                            crate::queue::state::MessageState {
                                sent_at_ms: m.sent_at_ms,
                                visible_at_ms: m.visible_at_ms,
                                receive_count: 0,
                                token: 0,
                                group: m.group.clone(),
                                status: crate::queue::state::Status::Delayed,
                            },
                        )
                    }))
                    .collect(),
                dedup: state
                    .dedup_entries()
                    .map(|(id, o, at)| (id.to_owned(), o, at))
                    .collect(),
            }
        };
        // Everything the snapshot covers must be on disk before the snapshot exists.
        self.messages
            .flush()
            .map_err(|err| self.storage_error(err))?;
        self.journal
            .flush()
            .map_err(|err| self.storage_error(err))?;
        if self.replicated {
            self.wait_snapshot_committed(&snapshot)?;
        }
        self.write_snapshot_file(&snapshot.encode(), snapshot_id_of(&snapshot))?;
        self.journal
            .delete_before(snapshot.journal_end)
            .map_err(|err| self.storage_error(err))?;
        *lock(&self.snapshot) = SnapshotMark {
            messages_end: snapshot.messages_end,
            journal_bytes: self.journal.size_bytes(),
            at: Instant::now(),
        };
        self.delete_consumed_messages(snapshot.messages_end)
    }

    /// Replaces the snapshot file (atomically) and records which snapshot it holds.
    fn write_snapshot_file(&self, bytes: &[u8], id: SnapshotId) -> BrokerResult<()> {
        let mut current = lock(&self.snapshot_file);
        let path = self.dir.join(SNAPSHOT_FILE);
        write_snapshot(&path, bytes).map_err(|err| {
            self.storage_error(StorageError::Io {
                context: format!("writing {}", path.display()),
                source: err,
            })
        })?;
        *current = Some(id);
        Ok(())
    }

    /// The snapshot the snapshot file holds, if any.
    pub fn snapshot_id(&self) -> Option<SnapshotId> {
        *lock(&self.snapshot_file)
    }

    /// Up to `max_bytes` of the snapshot file from `offset`, for a follower copying
    /// it. Blocking.
    pub fn read_snapshot_chunk(
        &self,
        offset: u64,
        max_bytes: usize,
    ) -> BrokerResult<SnapshotChunk> {
        use std::io::{Read, Seek, SeekFrom};
        let current = lock(&self.snapshot_file);
        let Some(id) = *current else {
            return Ok(SnapshotChunk {
                id: None,
                total_bytes: 0,
                data: Vec::new(),
            });
        };
        let path = self.dir.join(SNAPSHOT_FILE);
        let io = |err: std::io::Error| {
            self.storage_error(StorageError::Io {
                context: format!("reading {}", path.display()),
                source: err,
            })
        };
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let total_bytes = file.metadata().map_err(io)?.len();
        if offset > total_bytes {
            return Err(BrokerError::InvalidArgument(format!(
                "snapshot offset {offset} is past its end {total_bytes}"
            )));
        }
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let want = usize::try_from(total_bytes - offset)
            .unwrap_or(usize::MAX)
            .min(max_bytes);
        let mut data = vec![0; want];
        file.read_exact(&mut data).map_err(io)?;
        Ok(SnapshotChunk {
            id: Some(id),
            total_bytes,
            data,
        })
    }

    /// A follower installs the leader's snapshot (checked whole before it replaces
    /// the file). Blocking.
    pub fn install_snapshot(&self, bytes: &[u8]) -> BrokerResult<SnapshotId> {
        let snapshot = Snapshot::decode(bytes).map_err(|err| {
            BrokerError::Internal(format!(
                "queue {:?}: the leader's snapshot is unreadable: {err}",
                self.record.name
            ))
        })?;
        let id = snapshot_id_of(&snapshot);
        if self.snapshot_id() == Some(id) {
            // The other log's fetcher installed it first.
            return Ok(id);
        }
        self.write_snapshot_file(bytes, id)?;
        tracing::info!(queue = %self.record.name, ?id, "installed the leader's snapshot");
        Ok(id)
    }

    /// A follower drops what its snapshot covers and the leader no longer keeps:
    /// segments of log `index` below both. Nothing without a snapshot. Blocking.
    pub fn delete_covered_prefix(&self, index: u32, leader_start: u64) -> BrokerResult<()> {
        let Some(id) = self.snapshot_id() else {
            return Ok(());
        };
        self.replicated_log(index)?
            .log()
            .delete_before(leader_start.min(id.end_of(index)))
            .map_err(|err| self.storage_error(err))?;
        Ok(())
    }

    /// In a cluster a snapshot is kept only once the in-sync replicas hold all it
    /// covers: a snapshot holding a write a later leader never saw would outlive
    /// that write's truncation (followers copy the leader's snapshots). Blocking:
    /// called from a blocking thread of the runtime.
    fn wait_snapshot_committed(&self, snapshot: &Snapshot) -> BrokerResult<()> {
        let epoch = self.write_epoch()?;
        self.messages_replica.advance_high_watermark();
        self.journal_replica.advance_high_watermark();
        let runtime = tokio::runtime::Handle::try_current().map_err(|err| {
            BrokerError::Internal(format!("compaction outside the runtime: {err}"))
        })?;
        runtime.block_on(async {
            self.messages_replica
                .wait_committed(snapshot.messages_end, epoch, 1, self.commit_timeout)
                .await?;
            self.journal_replica
                .wait_committed(snapshot.journal_end, epoch, 1, self.commit_timeout)
                .await
        })
    }

    /// Deletes message segments below both the oldest held message and the last
    /// snapshot (replay starts there).
    fn delete_consumed_messages(&self, snapshot_end: u64) -> BrokerResult<()> {
        let lowest = lock(&self.state)
            .lowest_offset()
            .unwrap_or_else(|| self.messages.end_offset());
        self.messages
            .delete_before(lowest.min(snapshot_end))
            .map_err(|err| self.storage_error(err))?;
        Ok(())
    }

    /// Depth, age and counters.
    pub fn stats(&self, now_ms: i64) -> QueueStats {
        let (depth, oldest, redelivered) = {
            let mut state = lock(&self.state);
            state.advance(now_ms);
            (
                state.depth(),
                state.oldest_sent_at_ms(),
                state.transitions().redelivered,
            )
        };
        let c = &self.counters;
        QueueStats {
            depth,
            oldest_age_ms: oldest.map_or(0, |at| u64::try_from(now_ms - at).unwrap_or(0)),
            consumers: self.consumer_count(),
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            redelivered,
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            deduplicated: c.deduplicated.load(Ordering::Relaxed),
        }
    }

    /// Notes that `consumer` is receiving.
    pub fn saw_consumer(&self, consumer: &str) {
        let mut consumers = lock(&self.consumers);
        if let Some(seen) = consumers.get_mut(consumer) {
            *seen = Instant::now();
        } else if consumers.len() < MAX_TRACKED_CONSUMERS {
            consumers.insert(consumer.to_owned(), Instant::now());
        }
    }

    fn consumer_count(&self) -> u32 {
        let mut consumers = lock(&self.consumers);
        consumers.retain(|_, seen| seen.elapsed() < CONSUMER_WINDOW);
        u32::try_from(consumers.len()).unwrap_or(u32::MAX)
    }

    /// Resolves when messages may have become receivable; create it before trying.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Resolves when dead letters are waiting.
    pub fn housekeeping(&self) -> &Notify {
        &self.housekeeping
    }

    /// Wakes every long poll (shutdown, deletion).
    pub fn wake_all(&self) {
        self.changed.notify_waiters();
    }

    /// Whether this host serves the queue now (always outside a cluster).
    pub fn serving_epoch(&self) -> Option<u64> {
        *lock(&self.serving)
    }

    /// The replicated log at `index` ([`QUEUE_MESSAGES_LOG`] or [`QUEUE_JOURNAL_LOG`]).
    pub fn replicated_log(&self, index: u32) -> BrokerResult<Arc<ReplicatedLog>> {
        match index {
            QUEUE_MESSAGES_LOG => Ok(Arc::clone(&self.messages_replica)),
            QUEUE_JOURNAL_LOG => Ok(Arc::clone(&self.journal_replica)),
            other => Err(BrokerError::InvalidArgument(format!(
                "a queue has logs {QUEUE_MESSAGES_LOG} (messages) and {QUEUE_JOURNAL_LOG} \
                 (journal), not {other}"
            ))),
        }
    }

    /// Leads the queue in `epoch` with these other replicas and in-sync set. On a new
    /// epoch the logs stop taking fetched batches first, then the state is rebuilt
    /// from the snapshot and logs (a follower's state is stale), and only then does
    /// the queue serve. Within the serving epoch only the sets change. Blocking.
    pub fn take_leadership(
        &self,
        epoch: u64,
        replicas: &ReplicaSets,
        now_ms: i64,
    ) -> BrokerResult<()> {
        if self.serving_epoch() == Some(epoch) {
            self.messages_replica.lead(epoch, replicas);
            self.journal_replica.lead(epoch, replicas);
            return Ok(());
        }
        *lock(&self.serving) = None;
        self.messages_replica.lead_exclusively(epoch, replicas);
        self.journal_replica.lead_exclusively(epoch, replicas);
        {
            let mut state = lock(&self.state);
            let (fresh, messages_from, _) = recover(
                &self.record,
                &self.dir,
                &self.messages,
                &self.journal,
                now_ms,
                Some(self.messages_replica.high_watermark()),
            )?;
            *state = fresh;
            *lock(&self.snapshot) = SnapshotMark {
                messages_end: messages_from,
                journal_bytes: self.journal.size_bytes(),
                at: Instant::now(),
            };
            *lock(&self.serving) = Some(epoch);
        }
        tracing::info!(queue = %self.record.name, epoch, "leading the queue");
        // The high watermark may have moved while the state was rebuilt, and nothing
        // promoted what it passed (the queue was not serving): with no further write
        // those messages would stay pending for good.
        self.promote(now_ms);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Stops serving: the logs follow a leader (or wait for one).
    pub fn step_down(&self) {
        let was = lock(&self.serving).take();
        self.messages_replica.follow();
        self.journal_replica.follow();
        if let Some(epoch) = was {
            tracing::info!(queue = %self.record.name, epoch, "no longer leading the queue");
            // Long polls answer (empty) instead of waiting on a state nobody updates.
            self.changed.notify_waiters();
        }
    }

    /// A receiver that changes when the message log's high watermark moves.
    pub fn subscribe_committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.messages_replica.subscribe()
    }

    /// Flushes and closes both logs. Blocking.
    pub fn close(&self) -> BrokerResult<()> {
        self.messages
            .close()
            .map_err(|err| self.storage_error(err))?;
        self.journal.close().map_err(|err| self.storage_error(err))
    }

    /// Checks the state machine's indexes (tests).
    #[cfg(test)]
    pub fn check_invariants(&self) {
        lock(&self.state).check_invariants();
    }
}

/// Consumers counted in describe: those seen receiving within this window.
const CONSUMER_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Consumers tracked per queue; beyond it new ones are not counted.
const MAX_TRACKED_CONSUMERS: usize = 10_000;

/// What to do with the messages named by receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Delete them.
    Ack,
    /// Make them visible after this many ms (0: now).
    Visibility(u64),
}

/// A nonzero random receipt token (0 means "never received").
fn new_token() -> u64 {
    fastrand::u64(1..)
}

/// The dedup id content-based dedup derives from a body.
fn content_dedup_id(body: &[u8]) -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(64);
    for byte in Sha256::digest(body) {
        // Writing to a String cannot fail.
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// Rebuilds the state machine from the snapshot in `dir` and the logs after it.
/// Returns the state and the message offset replay started from. Blocking.
///
/// `committed` (a new leader in a cluster: its message log's high watermark) keeps
/// messages that may not be committed pending, receivable once the replicas confirm
/// them: those at or above both it and every offset the journal names (a journaled
/// message was delivered, so it and all below it were committed; an event naming a
/// pending message makes it and those below it present before it applies).
fn recover(
    record: &QueueRecord,
    dir: &Path,
    messages: &Log,
    journal: &Log,
    now_ms: i64,
    committed: Option<u64>,
) -> BrokerResult<(QueueState, u64, Option<SnapshotId>)> {
    let name = &record.name;
    let settings = &record.settings;
    let mut state = QueueState::new(StateConfig {
        fifo: settings.fifo,
        max_receive_count: settings.max_receive_count,
        dedup_window_ms: settings.dedup_window_ms,
    });
    let snapshot = read_snapshot(&dir.join(SNAPSHOT_FILE)).map_err(|reason| {
        BrokerError::Internal(format!("queue {name:?}: unreadable snapshot: {reason}"))
    })?;
    let snapshot_id = snapshot.as_ref().map(snapshot_id_of);
    let (messages_from, journal_from) = match snapshot {
        Some(snapshot) => {
            for (offset, message) in snapshot.messages {
                state.restore_snapshot_message(offset, message, now_ms);
            }
            let mut dedup = snapshot.dedup;
            // Expiry walks dedup ids oldest first; a snapshot lists them in hash
            // order, which would keep every id behind a younger one too long.
            dedup.sort_by_key(|(_, _, sent_at)| *sent_at);
            for (id, offset, sent_at) in dedup {
                state.restore_dedup(id, offset, sent_at);
            }
            (snapshot.messages_end, snapshot.journal_end)
        }
        None => (messages.start_offset(), journal.start_offset()),
    };
    let messages_from = messages_from.max(messages.start_offset());
    let journal_from = journal_from.max(journal.start_offset());
    let mut pending_from = committed.unwrap_or(u64::MAX);
    for_each_record(messages, messages_from, |offset, record| {
        let message = StoredMessage::from_record(record)?;
        let entry = message.state_entry(record.timestamp_ms);
        if offset < pending_from {
            state.restore_message(offset, entry, now_ms);
        } else {
            state.add(offset, entry);
        }
        Ok(())
    })
    .map_err(|err| replay_error(name, "message log", err))?;
    // How long each journaled deadline was set for, by the clock that set it.
    let mut spans: HashMap<u64, i64> = HashMap::new();
    for_each_record(journal, journal_from, |_, record| {
        let event = decode_event(record.value)?;
        if let Event::Received {
            offset,
            visible_at_ms,
            ..
        }
        | Event::VisibilityChanged {
            offset,
            visible_at_ms,
        } = event
        {
            spans.insert(offset, visible_at_ms.saturating_sub(record.timestamp_ms));
        }
        if let Some(offset) = named_offset(&event)
            && offset >= pending_from
        {
            pending_from = offset + 1;
            state.promote(pending_from, now_ms);
        }
        state.apply(&event, now_ms);
        Ok(())
    })
    .map_err(|err| replay_error(name, "journal", err))?;
    state.advance(now_ms);
    // Deadlines are absolute times of the clock that set them; this host's clock may
    // disagree (docs/queues.md, "Clocks"). Nothing stays in flight longer than its
    // visibility timeout (the queue's, if the event that set it was compacted away),
    // or delayed longer than its delay, counted from now.
    let visibility = i64::try_from(settings.visibility_timeout_ms).unwrap_or(i64::MAX);
    state.cap_deadlines(now_ms, |offset, message| {
        let span = if message.receive_count > 0 {
            spans.get(&offset).copied().unwrap_or(visibility)
        } else {
            message.visible_at_ms.saturating_sub(message.sent_at_ms)
        };
        now_ms.saturating_add(span.max(0))
    });
    tracing::info!(queue = %name, messages = state.len(), "queue recovered");
    Ok((state, messages_from, snapshot_id))
}

/// The message a journal event is about (a purge names none).
fn named_offset(event: &Event) -> Option<u64> {
    match *event {
        Event::Received { offset, .. }
        | Event::Acked { offset }
        | Event::VisibilityChanged { offset, .. }
        | Event::DeadLettered { offset }
        | Event::Expired { offset } => Some(offset),
        Event::Purged { .. } => None,
    }
}

fn replay_error(queue: &str, what: &str, err: ReplayError) -> BrokerError {
    match err {
        ReplayError::Storage(err) => BrokerError::queue_storage(queue, err),
        ReplayError::Record(err) => {
            BrokerError::Internal(format!("queue {queue:?}: unreadable {what} record: {err}"))
        }
    }
}

/// Why replaying a log failed.
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Record(#[from] ferry_records::RecordError),
}

/// Calls `visit` for every record of `log` from `from` to its end.
fn for_each_record(
    log: &Log,
    from: u64,
    mut visit: impl FnMut(u64, &ferry_records::Record<'_>) -> Result<(), ferry_records::RecordError>,
) -> Result<(), ReplayError> {
    let end = log.end_offset();
    let mut offset = from;
    while offset < end {
        let read = log.read(offset, REPLAY_CHUNK_BYTES, end)?;
        for batch in Batches::new(&read.bytes) {
            let batch = batch?;
            for record in batch.records() {
                let record = record?;
                if record.offset >= from {
                    visit(record.offset, &record)?;
                }
            }
        }
        if read.next_offset <= offset {
            break;
        }
        offset = read.next_offset;
    }
    Ok(())
}

fn snapshot_id_of(snapshot: &Snapshot) -> SnapshotId {
    SnapshotId {
        messages_end: snapshot.messages_end,
        journal_end: snapshot.journal_end,
    }
}

fn read_snapshot(path: &Path) -> Result<Option<Snapshot>, String> {
    match std::fs::read(path) {
        Ok(bytes) => Snapshot::decode(&bytes)
            .map(Some)
            .map_err(|err| err.to_string()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.to_string()),
    }
}

/// Writes the snapshot atomically: a temporary file, fsync, rename, fsync the directory.
fn write_snapshot(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
