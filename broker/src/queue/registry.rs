//! The set of queues on this host: creation and deletion through the metadata store,
//! recovery at start-up, long-poll receives, and each queue's housekeeping task
//! (visibility deadlines, dead-lettering, retention, interval flushes, compaction).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ferry_replication::LogKind;
use ferry_storage::DiskHooks;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::cluster::routing::Routing;
use crate::config::Limits;
use crate::error::{BrokerError, BrokerResult};
use crate::meta::{MetadataStore, MetadataStoreExt, Op, decode_json, encode_json, keys};
use crate::names::validate_queue_name;
use crate::queue::codec::{DeadLetterOrigin, StoredMessage};
use crate::queue::instance::{
    DeliveredMessage, OutgoingMessage, Queue, QueueMode, ReceiveOptions, SendOutcome, Settle,
};
use crate::queue::receipt::decode_receipt;
use crate::queue::settings::{QueueOverrides, QueueRecord, QueueSettings};
use crate::retained::{
    Disposal, disposal_of, read_record, remove_dir, remove_strays, resource_dir, tombstone_op,
    write_record,
};
use crate::topic::DurabilitySetting;

/// Messages moved per dead-letter or redrive round.
const MOVE_BATCH: usize = 1000;
/// Visibility timeout redrive takes on the messages it moves.
const REDRIVE_VISIBILITY_MS: u64 = 60_000;
/// Messages dropped by retention per housekeeping round.
const EXPIRE_BATCH: usize = 100_000;

/// How queues keep house; from the broker configuration.
#[derive(Debug, Clone, Copy)]
pub struct Housekeeping {
    /// Longest sleep between rounds.
    pub interval_ms: u64,
    /// Journal growth that triggers a snapshot.
    pub snapshot_bytes: u64,
    /// Longest time between snapshots while the journal grows.
    pub snapshot_interval_ms: u64,
}

/// What queues need of cluster mode.
#[derive(Debug, Clone)]
pub struct QueueCluster {
    /// Which queues this host leads.
    pub routing: Routing,
    /// How long a `sync` write waits for the in-sync replicas.
    pub ack_timeout: Duration,
}

/// A receive request after defaults are applied.
#[derive(Debug, Clone)]
pub struct ReceiveRequest {
    /// Most messages, visibility timeout and mode.
    pub options: ReceiveOptions,
    /// Long-poll wait.
    pub wait: Duration,
    /// Who is receiving, for the consumer count.
    pub consumer: String,
}

type QueueMap = Arc<RwLock<HashMap<String, Arc<Queue>>>>;

/// All queues on this host.
pub struct Queues {
    root: PathBuf,
    hooks: DiskHooks,
    limits: Limits,
    defaults: QueueSettings,
    housekeeping: Housekeeping,
    meta: Arc<dyn MetadataStore>,
    /// The cluster this host belongs to, stamped on the records it creates.
    cluster: Option<String>,
    /// Cluster mode: which queues this host leads (it moves dead letters only between
    /// queues it leads, and redrives only into them).
    routing: Option<Routing>,
    /// Standalone, or cluster mode with replicated logs.
    mode: QueueMode,
    queues: QueueMap,
    tasks: Mutex<HashMap<String, JoinHandle<()>>>,
    // Serializes create and delete so directories and metadata change together.
    admin: tokio::sync::Mutex<()>,
}

fn queue_dir(root: &Path, record: &QueueRecord) -> PathBuf {
    resource_dir(root, &record.name, record.incarnation)
}

fn join_error(what: &str, err: tokio::task::JoinError) -> BrokerError {
    BrokerError::Internal(format!("{what} task failed: {err}"))
}

/// Runs blocking queue work off the async threads.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> BrokerResult<T> + Send + 'static,
) -> BrokerResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| join_error(what, err))?
}

impl Queues {
    /// Opens every queue recorded in metadata and removes directories no queue owns.
    pub async fn open(
        data_dir: &Path,
        hooks: DiskHooks,
        limits: Limits,
        defaults: QueueSettings,
        housekeeping: Housekeeping,
        meta: Arc<dyn MetadataStore>,
        cluster: Option<QueueCluster>,
    ) -> BrokerResult<Self> {
        let (routing, mode) = match cluster {
            Some(QueueCluster {
                routing,
                ack_timeout,
            }) => (Some(routing), QueueMode::Cluster { ack_timeout }),
            None => (None, QueueMode::Standalone),
        };
        let root = data_dir.join(LogKind::Queue.as_str());
        std::fs::create_dir_all(&root).map_err(|err| {
            BrokerError::Internal(format!("cannot create {}: {err}", root.display()))
        })?;
        let queues = Self {
            root,
            hooks,
            limits,
            defaults,
            housekeeping,
            meta,
            cluster: routing.as_ref().map(|r| r.cluster().to_owned()),
            mode,
            routing,
            queues: Arc::new(RwLock::new(HashMap::new())),
            tasks: Mutex::new(HashMap::new()),
            admin: tokio::sync::Mutex::new(()),
        };
        let mut known = Vec::new();
        let mut opened = Vec::new();
        for kv in queues.meta.list(keys::QUEUES).await? {
            let record: QueueRecord = decode_json(&kv.key, &kv.value)?;
            if record.cluster != queues.cluster {
                continue;
            }
            known.push(queue_dir(&queues.root, &record));
            let queue = queues.open_queue(record).await?;
            if read_record::<QueueRecord>(queue.dir()).is_none() {
                write_record(queue.dir(), &queue.record)?;
            }
            queues
                .write_map()
                .insert(queue.name().to_owned(), Arc::clone(&queue));
            opened.push(queue);
        }
        // Housekeeping starts once every queue is in the map: a queue's dead-lettering
        // looks its dead-letter queue up there, and that may recover after it.
        for queue in opened {
            queues.start_housekeeping(queue);
        }
        remove_strays(queues.meta.as_ref(), LogKind::Queue, &queues.root, &known).await?;
        Ok(queues)
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Queue>>> {
        // A poisoned lock only means a panic elsewhere; the map itself is still whole.
        self.queues.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Queue>>> {
        self.queues.write().unwrap_or_else(|e| e.into_inner())
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, queue: Arc<Queue>) {
        self.write_map()
            .insert(queue.name().to_owned(), Arc::clone(&queue));
        self.start_housekeeping(queue);
    }

    fn start_housekeeping(&self, queue: Arc<Queue>) {
        let name = queue.name().to_owned();
        let task = tokio::spawn(housekeep(
            Arc::clone(&queue),
            Arc::clone(&self.queues),
            self.housekeeping,
            self.routing.clone(),
        ));
        if let Some(old) = self.tasks().insert(name, task) {
            old.abort();
        }
    }

    async fn open_queue(&self, record: QueueRecord) -> BrokerResult<Arc<Queue>> {
        let dir = queue_dir(&self.root, &record);
        let limits = self.limits.clone();
        let hooks = self.hooks.clone();
        let mode = self.mode;
        blocking("open queue", move || {
            Queue::open_in(record, &dir, &limits, hooks, now_ms(), mode).map(Arc::new)
        })
        .await
    }

    /// A queue by name.
    pub fn get(&self, name: &str) -> BrokerResult<Arc<Queue>> {
        self.read_map()
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::QueueNotFound(name.to_owned()))
    }

    /// Every queue, sorted by name.
    pub fn list(&self) -> Vec<Arc<Queue>> {
        let mut all: Vec<_> = self.read_map().values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Queues whose dead-letter queue is `name`.
    pub fn dead_letter_sources(&self, name: &str) -> Vec<String> {
        let mut sources: Vec<String> = self
            .read_map()
            .values()
            .filter(|q| q.record.settings.dead_letter_queue.as_deref() == Some(name))
            .map(|q| q.name().to_owned())
            .collect();
        sources.sort();
        sources
    }

    /// Creates a queue: directory first, then the metadata record (see `Topics::create`).
    pub async fn create(&self, name: &str, overrides: &QueueOverrides) -> BrokerResult<Arc<Queue>> {
        validate_queue_name(name)?;
        let settings = overrides.resolve(&self.defaults);
        let max_replicas = if self.cluster.is_some() {
            self.limits.max_replication_factor
        } else {
            1
        };
        settings.validate(&self.limits, max_replicas)?;
        let _admin = self.admin.lock().await;
        if self.read_map().contains_key(name) {
            return Err(BrokerError::QueueExists(name.to_owned()));
        }
        if let Some(dlq) = &settings.dead_letter_queue {
            self.check_dead_letter_target(name, &settings, dlq).await?;
        }
        if self.read_map().len() >= self.limits.max_queues as usize {
            return Err(BrokerError::LimitExceeded {
                what: "queues on this host",
                limit: u64::from(self.limits.max_queues),
            });
        }
        let record = QueueRecord {
            name: name.to_owned(),
            settings,
            created_at_ms: now_ms(),
            incarnation: crate::clock::unique_id(),
            cluster: self.cluster.clone(),
        };
        let queue = self.open_queue(record.clone()).await?;
        let outcome = self
            .meta
            .create(&keys::queue(name), encode_json(&record))
            .await;
        if !matches!(outcome, Ok(true)) {
            let dir = queue.dir().to_owned();
            blocking("remove queue", move || {
                queue.close()?;
                remove_dir(&dir);
                Ok(())
            })
            .await?;
            outcome?;
            return Err(BrokerError::QueueExists(name.to_owned()));
        }
        write_record(queue.dir(), &record)?;
        tracing::info!(queue = name, fifo = record.settings.fifo, "queue created");
        self.insert(Arc::clone(&queue));
        Ok(queue)
    }

    async fn check_dead_letter_target(
        &self,
        name: &str,
        settings: &QueueSettings,
        dlq: &str,
    ) -> BrokerResult<()> {
        if dlq == name {
            return Err(BrokerError::InvalidArgument(
                "a queue cannot be its own dead-letter queue".into(),
            ));
        }
        // The queues open here follow the metadata store a moment behind (in a
        // cluster, a dead-letter queue just created on another host may not be open
        // here yet): the store's record decides.
        let target = match self.get(dlq) {
            Ok(open) => open.record.clone(),
            Err(_) => match self.meta.get(&keys::queue(dlq)).await? {
                Some(kv) => decode_json::<QueueRecord>(&kv.key, &kv.value)?,
                None => {
                    return Err(BrokerError::InvalidArgument(format!(
                        "dead-letter queue {dlq:?} does not exist"
                    )));
                }
            },
        };
        if target.cluster != self.cluster {
            return Err(BrokerError::InvalidArgument(format!(
                "dead-letter queue {dlq:?} belongs to another broker cluster"
            )));
        }
        let target = &target.settings;
        if target.fifo != settings.fifo {
            return Err(BrokerError::InvalidArgument(format!(
                "dead-letter queue {dlq:?} must be {} like the queue",
                if settings.fifo { "FIFO" } else { "standard" }
            )));
        }
        if target.max_message_bytes < settings.max_message_bytes {
            return Err(BrokerError::InvalidArgument(format!(
                "dead-letter queue {dlq:?} accepts messages up to {} bytes, fewer than this queue's {}",
                target.max_message_bytes, settings.max_message_bytes
            )));
        }
        Ok(())
    }

    /// Deletes a queue and its data. Refused while another queue dead-letters into it.
    pub async fn delete(&self, name: &str) -> BrokerResult<()> {
        validate_queue_name(name)?;
        let _admin = self.admin.lock().await;
        let queue = self.get(name)?;
        if let Some(used_by) = self.dead_letter_sources(name).into_iter().next() {
            return Err(BrokerError::QueueInUse {
                queue: name.to_owned(),
                used_by,
            });
        }
        let ops = vec![
            Op::Delete {
                key: keys::queue(name),
            },
            tombstone_op(LogKind::Queue, name, queue.record.incarnation),
        ];
        self.meta.txn(Vec::new(), ops).await?;
        drop(queue);
        self.close_local(name, Disposal::Remove).await?;
        tracing::info!(queue = name, "queue deleted");
        Ok(())
    }

    /// Cluster mode: opens a queue another host created (seen in the metadata store),
    /// replacing an older incarnation; nothing happens if it is already open.
    pub async fn adopt(&self, record: QueueRecord) -> BrokerResult<()> {
        if record.cluster != self.cluster {
            return Ok(());
        }
        let _admin = self.admin.lock().await;
        if let Some(open) = self.read_map().get(&record.name)
            && open.record.incarnation == record.incarnation
        {
            return Ok(());
        }
        let disposal = self.disposal_of_open(&record.name).await?;
        self.close_local(&record.name, disposal).await?;
        let queue = self.open_queue(record).await?;
        write_record(queue.dir(), &queue.record)?;
        tracing::info!(queue = queue.name(), "queue adopted");
        self.insert(queue);
        Ok(())
    }

    /// Cluster mode: closes a queue whose record went, and removes its local data if
    /// its deletion was recorded (else keeps it: the metadata store may have lost it).
    pub async fn forget(&self, name: &str) -> BrokerResult<()> {
        let _admin = self.admin.lock().await;
        let disposal = self.disposal_of_open(name).await?;
        self.close_local(name, disposal).await
    }

    /// Whether the open incarnation of `name`, once closed, may be removed.
    async fn disposal_of_open(&self, name: &str) -> BrokerResult<Disposal> {
        let incarnation = self.read_map().get(name).map(|q| q.record.incarnation);
        disposal_of(self.meta.as_ref(), LogKind::Queue, name, incarnation).await
    }

    /// Takes a queue out of the map, stops its housekeeping, ends its long polls and
    /// closes it, removing its directory if `disposal` says so (the caller holds the
    /// admin lock).
    async fn close_local(&self, name: &str, disposal: Disposal) -> BrokerResult<()> {
        let Some(queue) = self.write_map().remove(name) else {
            return Ok(());
        };
        if let Some(task) = self.tasks().remove(name) {
            task.abort();
        }
        queue.wake_all();
        let dir = queue.dir().to_owned();
        blocking("delete queue", move || {
            if let Err(err) = queue.close() {
                tracing::warn!(%err, "closing a deleted queue failed");
            }
            if disposal == Disposal::Remove {
                remove_dir(&dir);
            } else {
                tracing::error!(
                    dir = %dir.display(),
                    "queue record gone without a recorded deletion: closed, its data kept \
                     (`ferry-broker metadata rebuild` puts the record back)"
                );
            }
            Ok(())
        })
        .await
    }

    /// Removes every message in a queue.
    pub async fn purge(&self, name: &str) -> BrokerResult<u64> {
        let queue = self.get(name)?;
        let purged = queue.purge(now_ms()).await?;
        tracing::info!(queue = name, purged, "queue purged");
        Ok(purged)
    }

    /// Sends messages: validates the whole request, then stores it.
    pub async fn send(
        &self,
        name: &str,
        messages: Vec<OutgoingMessage>,
    ) -> BrokerResult<(Arc<Queue>, Vec<SendOutcome>)> {
        let queue = self.get(name)?;
        queue.validate_send(&messages)?;
        let outcomes = queue.send(messages, now_ms()).await?;
        Ok((queue, outcomes))
    }

    /// Receives, waiting up to `request.wait` for at least one message.
    pub async fn receive(
        &self,
        name: &str,
        request: ReceiveRequest,
        mut stopping: watch::Receiver<bool>,
    ) -> BrokerResult<(Arc<Queue>, Vec<DeliveredMessage>)> {
        let queue = self.get(name)?;
        queue.saw_consumer(&request.consumer);
        let deadline = tokio::time::Instant::now() + request.wait;
        loop {
            // Registered before looking, so a send in between still wakes us.
            let changed = queue.changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // A long poll outlives checks made when it started: in a cluster, deliver
            // only while this host still leads the queue.
            if let Some(routing) = &self.routing {
                routing.check(LogKind::Queue, name, 0)?;
            }
            // Runs on this async thread: handing a receive to a blocking thread would
            // cost more in context switches than its work (see Queue::receive).
            let delivered = queue.receive(request.options, now_ms()).await?;
            let now = tokio::time::Instant::now();
            if !delivered.is_empty() || now >= deadline || *stopping.borrow() {
                return Ok((Arc::clone(&queue), delivered));
            }
            // Deleted (and maybe re-created): this poll belongs to the old queue.
            if !self
                .read_map()
                .get(name)
                .is_some_and(|current| Arc::ptr_eq(current, &queue))
            {
                return Err(BrokerError::QueueNotFound(name.to_owned()));
            }
            let wake = match queue.next_due_ms() {
                Some(due) => {
                    let in_ms = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
                    deadline.min(now + Duration::from_millis(in_ms))
                }
                None => deadline,
            };
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(wake) => {}
                _ = stopping.changed() => {}
            }
        }
    }

    /// Acks or changes visibility by receipt handle; per-receipt outcomes.
    pub async fn settle(
        &self,
        name: &str,
        receipts: &[String],
        action: Settle,
    ) -> BrokerResult<Vec<BrokerResult<()>>> {
        let queue = self.get(name)?;
        if receipts.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "the request names no receipt handle".into(),
            ));
        }
        if receipts.len() > self.limits.max_receipts_per_request as usize {
            return Err(BrokerError::LimitExceeded {
                what: "receipt handles per request",
                limit: u64::from(self.limits.max_receipts_per_request),
            });
        }
        if let Settle::Visibility(ms) = action
            && ms > self.limits.max_visibility_timeout_ms
        {
            return Err(BrokerError::InvalidArgument(format!(
                "visibility timeout of {ms} ms exceeds the maximum of {} ms",
                self.limits.max_visibility_timeout_ms
            )));
        }
        let incarnation = queue.record.incarnation;
        let decoded: Vec<BrokerResult<_>> = receipts
            .iter()
            .map(|r| decode_receipt(r, incarnation))
            .collect();
        let valid: Vec<_> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .copied()
            .collect();
        let outcomes = queue.settle(&valid, action, now_ms()).await?;
        let mut outcomes = outcomes.into_iter();
        Ok(decoded
            .into_iter()
            .map(|d| match d {
                Ok(_) => match outcomes.next() {
                    Some(Ok(())) => Ok(()),
                    Some(Err(err)) => Err(BrokerError::ReceiptStale(err)),
                    None => Err(BrokerError::Internal("missing receipt outcome".into())),
                },
                Err(err) => Err(err),
            })
            .collect())
    }

    /// Moves messages from a dead-letter queue to their source queues (or `to`).
    pub async fn redrive(&self, name: &str, to: Option<&str>, max: u64) -> BrokerResult<u64> {
        let dlq = self.get(name)?;
        if to == Some(name) {
            // Each moved message would be visible here again at once: with no limit
            // the redrive would never end.
            return Err(BrokerError::InvalidArgument(format!(
                "cannot redrive queue {name:?} into itself"
            )));
        }
        let fixed = to.map(|to| self.get(to)).transpose()?;
        let mut moved = 0u64;
        let mut skipped = std::collections::HashSet::new();
        loop {
            let remaining = if max == 0 { u64::MAX } else { max - moved };
            if remaining == 0 {
                break;
            }
            let options = ReceiveOptions {
                max_messages: usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(MOVE_BATCH),
                visibility_timeout_ms: REDRIVE_VISIBILITY_MS,
                at_most_once: false,
            };
            let batch = dlq.receive(options, now_ms()).await?;
            if batch.is_empty() || batch.iter().all(|m| skipped.contains(&m.offset)) {
                self.release(&dlq, batch.iter().map(|m| m.receipt.clone()).collect())
                    .await?;
                break;
            }
            let mut by_target: HashMap<String, (Arc<Queue>, Vec<DeliveredMessage>)> =
                HashMap::new();
            let mut unmovable = Vec::new();
            for delivered in batch {
                let target = match (&fixed, &delivered.message.dead_letter) {
                    (Some(q), _) => Some(Arc::clone(q)),
                    (None, Some(origin)) => self.get(&origin.source_queue).ok(),
                    (None, None) => None,
                };
                match target {
                    Some(q) if !q.record.settings.fifo || delivered.message.group.is_some() => {
                        by_target
                            .entry(q.name().to_owned())
                            .or_insert_with(|| (q, Vec::new()))
                            .1
                            .push(delivered);
                    }
                    _ => {
                        skipped.insert(delivered.offset);
                        unmovable.push(delivered.receipt);
                    }
                }
            }
            self.release(&dlq, unmovable).await?;
            for (_, (target, messages)) in by_target {
                let receipts: Vec<String> = messages.iter().map(|m| m.receipt.clone()).collect();
                let stored: Vec<StoredMessage> = messages
                    .into_iter()
                    .map(|m| StoredMessage {
                        dead_letter: None,
                        dedup_id: None,
                        visible_at_ms: None,
                        ..m.message
                    })
                    .collect();
                let count = stored.len() as u64;
                if let Some(routing) = &self.routing {
                    routing.check(LogKind::Queue, target.name(), 0)?;
                }
                target.store(stored, now_ms()).await?;
                self.settle(name, &receipts, Settle::Ack).await?;
                moved += count;
            }
        }
        tracing::info!(queue = name, moved, "redrive finished");
        Ok(moved)
    }

    /// Makes messages visible again at once.
    async fn release(&self, queue: &Arc<Queue>, receipts: Vec<String>) -> BrokerResult<()> {
        if receipts.is_empty() {
            return Ok(());
        }
        self.settle(queue.name(), &receipts, Settle::Visibility(0))
            .await
            .map(|_| ())
    }

    /// Flushes and closes every queue (shutdown).
    pub async fn close_all(&self) {
        for (_, task) in self.tasks().drain() {
            task.abort();
        }
        let queues: Vec<_> = self.write_map().drain().map(|(_, q)| q).collect();
        for queue in &queues {
            queue.wake_all();
        }
        let closed = tokio::task::spawn_blocking(move || {
            for queue in queues {
                if let Err(err) = queue.close() {
                    tracing::warn!(queue = queue.name(), %err, "closing queue failed");
                }
            }
        })
        .await;
        if let Err(err) = closed {
            tracing::warn!(%err, "closing queues failed");
        }
    }
}

/// One queue's background work, until the task is aborted.
async fn housekeep(
    queue: Arc<Queue>,
    queues: QueueMap,
    config: Housekeeping,
    routing: Option<Routing>,
) {
    let settings = queue.record.settings.clone();
    let interval = Duration::from_millis(config.interval_ms);
    let flush_every = (settings.durability == DurabilitySetting::Interval)
        .then(|| Duration::from_millis(u64::from(settings.flush_interval_ms)));
    let mut last_flush = tokio::time::Instant::now();
    let mut last_full_round = tokio::time::Instant::now();
    let mut committed = queue.subscribe_committed();
    loop {
        let now = now_ms();
        // A follower keeps its logs (flushing them below) but changes no state: the
        // leader's journal says what happened, and its state is rebuilt on taking
        // over.
        let serving = queue.serving_epoch().is_some();
        if serving {
            queue.tick(now);
        }
        if serving
            && settings.dead_letter_queue.is_some()
            && let Err(err) = move_dead_letters(&queue, &queues, routing.as_ref()).await
        {
            tracing::warn!(queue = queue.name(), %err, "dead-lettering failed; will retry");
        }
        if let Some(every) = flush_every
            && last_flush.elapsed() >= every
        {
            last_flush = tokio::time::Instant::now();
            let worker = Arc::clone(&queue);
            if let Err(err) = blocking("flush", move || worker.flush_blocking()).await {
                tracing::warn!(queue = queue.name(), %err, "interval flush failed");
            }
        }
        if serving && last_full_round.elapsed() >= interval {
            last_full_round = tokio::time::Instant::now();
            let worker = Arc::clone(&queue);
            let result = blocking("housekeeping", move || {
                worker.expire_blocking(now_ms(), EXPIRE_BATCH)?;
                worker.compact_if_due(config.snapshot_bytes, config.snapshot_interval_ms)
            })
            .await;
            if let Err(err) = result {
                tracing::warn!(queue = queue.name(), %err, "queue housekeeping failed");
            }
        }
        let mut wake = interval;
        if let Some(every) = flush_every {
            wake = wake.min(every);
        }
        if let Some(due) = queue.next_due_ms() {
            let in_ms = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
            wake = wake.min(Duration::from_millis(in_ms.max(1)));
        }
        let sleep = tokio::time::sleep(wake);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                () = queue.housekeeping().notified() => break,
                // In a cluster, sent messages become receivable as the replicas
                // confirm them (an `async` send was answered before that).
                changed = committed.changed() => {
                    if changed.is_err() {
                        (&mut sleep).await;
                        break;
                    }
                    if queue.serving_epoch().is_some() {
                        queue.promote(now_ms());
                    }
                }
            }
        }
    }
}

/// Copies dead-letter candidates to the dead-letter queue, then removes them here.
/// A crash in between may copy a message twice (at-least-once), never lose it.
async fn move_dead_letters(
    queue: &Arc<Queue>,
    queues: &QueueMap,
    routing: Option<&Routing>,
) -> BrokerResult<()> {
    let settings = &queue.record.settings;
    let Some(dlq_name) = settings.dead_letter_queue.clone() else {
        return Ok(());
    };
    // In a cluster, both queues must be led here: a copy into a local replica that
    // does not lead the dead-letter queue would never be seen. The controller keeps
    // one host leading both (`cluster/placement.rs`); while none can, dead letters
    // wait, counted as such.
    if let Some(routing) = routing
        && (routing.check(LogKind::Queue, queue.name(), 0).is_err()
            || routing.check(LogKind::Queue, &dlq_name, 0).is_err())
    {
        return Ok(());
    }
    loop {
        let worker = Arc::clone(queue);
        let batch = blocking("dead letters", move || {
            worker.dead_letter_batch(MOVE_BATCH, now_ms())
        })
        .await?;
        if batch.is_empty() {
            return Ok(());
        }
        let dlq = queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dlq_name)
            .cloned()
            .ok_or_else(|| BrokerError::QueueNotFound(dlq_name.clone()))?;
        let now = now_ms();
        let offsets: Vec<u64> = batch.iter().map(|(offset, _, _)| *offset).collect();
        let moved: Vec<StoredMessage> = batch
            .into_iter()
            .map(|(offset, message, count)| StoredMessage {
                dead_letter: Some(DeadLetterOrigin {
                    source_queue: queue.name().to_owned(),
                    source_message_id: queue.message_id(offset),
                    reason: format!(
                        "received {count} times without an ack (max_receive_count {})",
                        settings.max_receive_count
                    ),
                    receive_count: count,
                    at_ms: now,
                }),
                dedup_id: None,
                visible_at_ms: None,
                ..message
            })
            .collect();
        let count = moved.len();
        dlq.store(moved, now).await?;
        let worker = Arc::clone(queue);
        blocking("dead letters", move || {
            worker.finish_dead_letters(&offsets, now)
        })
        .await?;
        tracing::debug!(queue = queue.name(), dlq = %dlq_name, count, "dead-lettered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{EmbeddedConfig, EmbeddedStore};

    async fn registry(dir: &Path, meta: Arc<dyn MetadataStore>) -> BrokerResult<Queues> {
        Queues::open(
            dir,
            DiskHooks::default(),
            Limits::default(),
            QueueSettings::default(),
            Housekeeping {
                interval_ms: 1_000,
                snapshot_bytes: 1 << 20,
                snapshot_interval_ms: 60_000,
            },
            meta,
            None,
        )
        .await
    }

    /// A dead-letter queue another registry created (another host, whose queues this
    /// one has not opened yet) is found in the metadata store, not only among the
    /// queues open here.
    #[tokio::test]
    async fn a_dead_letter_queue_is_checked_in_the_metadata_store() -> BrokerResult<()> {
        let dir = tempfile::tempdir().map_err(|err| BrokerError::Internal(err.to_string()))?;
        let meta: Arc<dyn MetadataStore> = Arc::new(EmbeddedStore::open(&EmbeddedConfig {
            path: dir.path().join("meta.redb"),
            watch_buffer: 16,
        })?);
        let first = registry(&dir.path().join("a"), Arc::clone(&meta)).await?;
        let second = registry(&dir.path().join("b"), Arc::clone(&meta)).await?;
        first.create("dlq", &QueueOverrides::default()).await?;
        let work = QueueOverrides {
            dead_letter_queue: Some("dlq".into()),
            max_receive_count: Some(3),
            ..QueueOverrides::default()
        };
        second.create("work", &work).await?;
        let missing = QueueOverrides {
            dead_letter_queue: Some("nowhere".into()),
            max_receive_count: Some(3),
            ..QueueOverrides::default()
        };
        match second.create("other", &missing).await {
            Err(BrokerError::InvalidArgument(why)) => {
                assert!(why.contains("does not exist"), "{why}")
            }
            Err(other) => panic!("refused for another reason: {other}"),
            Ok(_) => panic!("a queue whose dead-letter queue does not exist was created"),
        }
        Ok(())
    }
}
