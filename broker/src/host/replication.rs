//! Replication of topic partitions between the hosts of a cluster
//! (`docs/replication.md`): leader-based and pull-driven.
//!
//! - [`serve_fetch`] is the leader's side: it checks the follower's epoch, finds where
//!   the follower's log diverged (by the epoch histories), records how far the
//!   follower is durable (which moves the high watermark), and returns batches.
//! - [`Replicator`] runs on every host: it gives each local partition its role from
//!   the cluster view (leader, or follower with a fetcher pulling from the leader)
//!   and, for the partitions it leads, proposes in-sync set changes to etcd with
//!   compare-and-swap on the partition state.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::internal::v1 as pb;
use ferry_proto::internal::v1::replica_service_client::ReplicaServiceClient;
use ferry_records::Batches;
use ferry_storage::{BatchRange, StorageError};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::tls::HostDialing;

use ferry_replication::election;
use ferry_replication::follower::{self, Serve, Step};
use ferry_replication::{LogId, LogKind};

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::cluster::placement::PartitionKey;
use crate::cluster::records::PartitionState;
use crate::cluster::routing::Routing;
use crate::cluster::view::ClusterView;
use crate::config::{Http2Settings, ReplicaTransport, ReplicationConfig};
use crate::error::{BrokerError, BrokerResult};
use crate::http2;
use crate::meta::{Compare, MetadataStore, MetadataStoreExt, Op, Revision, encode_json, keys};
use crate::queue::{Queue, SnapshotChunk, SnapshotId};
use crate::replica_stream::{StreamError, StreamFetcher, StreamTimeouts};
use crate::topic::{
    DurabilitySetting, QUEUE_JOURNAL_LOG, QUEUE_MESSAGES_LOG, ReplicaSets, ReplicatedLog,
};

/// The first pause after a failed replica fetch; it doubles up to the retry pause.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How often a follower pings its leader's connection while fetching.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Times a snapshot copy starts over because the leader took a newer snapshot,
/// before the copy fails its fetch round.
const MAX_SNAPSHOT_RESTARTS: u32 = 3;
/// How long a ping may go unanswered before the connection counts as lost.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A follower's fetch, as the leader receives it.
#[derive(Debug, Clone)]
pub struct ReplicaFetch {
    /// Topic or queue.
    pub kind: LogKind,
    /// Topic (or queue) name.
    pub topic: String,
    /// Partition index; for a queue, which of its logs.
    pub partition: u32,
    /// The epoch the follower believes current.
    pub leader_epoch: u64,
    /// The follower's host id.
    pub follower_id: String,
    /// Everything below it is durable on the follower.
    pub fetch_offset: u64,
    /// The newest epoch in the follower's history, if its log holds any batch.
    pub last_fetched_epoch: Option<u64>,
    /// The lost ranges in the follower's log.
    pub follower_lost: Vec<Range<u64>>,
    /// Most bytes of batches to return.
    pub max_bytes: usize,
    /// How long to wait at the log end for new batches.
    pub max_wait: Duration,
}

/// How a leader takes the batches it answers a [`ReplicaFetch`] with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaReading {
    /// Read and check each batch (a CRC that fails confines the damage to a lost range).
    Read,
    /// Locate the batches in the segment file where it can (the cached tail), for a
    /// sender that passes them on unread; the follower checks each CRC.
    Locate,
}

/// The batches of a leader's answer.
#[derive(Debug, Clone)]
pub enum ReplicaRecords {
    /// Read and checked.
    Read(Vec<u8>),
    /// Located in a segment file, unread and unchecked.
    Located(BatchRange),
}

impl Default for ReplicaRecords {
    fn default() -> Self {
        Self::Read(Vec::new())
    }
}

impl ReplicaRecords {
    /// How many bytes of batches.
    pub fn len(&self) -> u64 {
        match self {
            Self::Read(bytes) => bytes.len() as u64,
            Self::Located(range) => range.len,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The leader's answer to a [`ReplicaFetch`].
#[derive(Debug, Clone, Default)]
pub struct ReplicaData {
    /// The leader's epoch.
    pub leader_epoch: u64,
    /// What consumers may read below, on the leader.
    pub high_watermark: u64,
    /// The leader's first stored offset.
    pub log_start_offset: u64,
    /// The leader's log end.
    pub log_end_offset: u64,
    /// `(epoch, end offset)` when the follower's log diverged from the leader's.
    pub diverging: Option<(u64, u64)>,
    /// Whole batches from the fetch offset.
    pub records: ReplicaRecords,
    /// Queues: the snapshot the leader holds.
    pub snapshot: Option<SnapshotId>,
    /// Truncate to this offset and fetch again: the follower lost records this leader
    /// holds and is out of the in-sync set.
    pub repair_below: Option<u64>,
}

/// The leader's side of a replica fetch, taking its batches as `reading` says.
pub async fn serve_fetch(
    broker: &Broker,
    fetch: ReplicaFetch,
    reading: ReplicaReading,
) -> BrokerResult<ReplicaData> {
    let resource_partition = if fetch.kind == LogKind::Queue {
        0
    } else {
        fetch.partition
    };
    let epoch = broker.check_leader(fetch.kind, &fetch.topic, resource_partition)?;
    if fetch.leader_epoch < epoch {
        return Err(BrokerError::FencedLeaderEpoch {
            topic: fetch.topic,
            partition: fetch.partition,
            epoch: fetch.leader_epoch,
            current: epoch,
        });
    }
    let partition = broker.replicated_log(fetch.kind, &fetch.topic, fetch.partition)?;
    let snapshot = if fetch.kind == LogKind::Queue {
        broker.queues.get(&fetch.topic)?.snapshot_id()
    } else {
        None
    };
    if fetch.leader_epoch > epoch || partition.leader_epoch() != Some(epoch) {
        // This host's view (or the partition's role) is behind: not yet the leader
        // the follower is looking for.
        return Err(BrokerError::NotLeader {
            kind: fetch.kind,
            name: fetch.topic,
            partition: fetch.partition,
            leader: None,
        });
    }
    let log = partition.log();
    let storage = |err| BrokerError::storage(&fetch.topic, fetch.partition, err);
    let mut answer = ReplicaData {
        leader_epoch: epoch,
        snapshot,
        log_start_offset: log.start_offset(),
        log_end_offset: log.end_offset(),
        ..ReplicaData::default()
    };
    let leader_log = follower::LeaderLog {
        start: answer.log_start_offset,
        end: answer.log_end_offset,
        latest_epoch: log.latest_epoch().map_err(storage)?,
        end_for_follower_epoch: fetch
            .last_fetched_epoch
            .map(|last| log.end_offset_for_epoch(last))
            .transpose()
            .map_err(storage)?,
    };
    let request = follower::FetchRequest {
        fetch_offset: fetch.fetch_offset,
        last_fetched_epoch: fetch.last_fetched_epoch,
    };
    let served = follower::serve(request, leader_log, epoch);
    if let Serve::Diverging { epoch, end_offset } = served {
        answer.diverging = Some((epoch, end_offset));
        answer.high_watermark = partition.high_watermark();
        return Ok(answer);
    }
    // Recorded when starting over too, so a replica that lost its disk is not judged
    // by what it held before.
    let follower_damaged = !fetch.follower_lost.is_empty();
    partition.record_fetch(
        &fetch.follower_id,
        epoch,
        fetch.fetch_offset,
        fetch.follower_lost,
    )?;
    // Only a follower with lost ranges repairs: no need to look at this log's otherwise.
    let repair_below = follower_damaged
        .then(|| partition.repair_for(&fetch.follower_id))
        .flatten();
    if served == Serve::StartOver || repair_below.is_some() {
        // Too far behind (it starts over at the log start), or it repairs first.
        answer.repair_below = repair_below;
        answer.high_watermark = partition.high_watermark();
        return Ok(answer);
    }
    let mut log_end = partition.subscribe_log_end();
    if *log_end.borrow_and_update() <= fetch.fetch_offset && !fetch.max_wait.is_zero() {
        let mut stopping = broker.stopping();
        tokio::select! {
            _ = tokio::time::timeout(fetch.max_wait, log_end.changed()) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }
    let located = match reading {
        ReplicaReading::Locate => {
            partition
                .locate(fetch.fetch_offset, fetch.max_bytes)
                .await?
        }
        ReplicaReading::Read => None,
    };
    answer.records = match located {
        Some(range) => ReplicaRecords::Located(range),
        None => {
            let read = partition
                .read_below(fetch.fetch_offset, fetch.max_bytes, u64::MAX)
                .await?;
            ReplicaRecords::Read(read.bytes)
        }
    };
    answer.log_start_offset = log.start_offset();
    answer.log_end_offset = log.end_offset();
    answer.high_watermark = partition.high_watermark();
    Ok(answer)
}

/// A follower's request for a piece of a queue's snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotFetch {
    /// The queue.
    pub queue: String,
    /// The epoch the follower believes current.
    pub leader_epoch: u64,
    /// Byte offset in the snapshot file.
    pub offset: u64,
    /// Most bytes to return.
    pub max_bytes: usize,
}

/// The leader's side of a snapshot copy: the epoch and the piece.
pub async fn serve_snapshot(
    broker: &Broker,
    fetch: SnapshotFetch,
) -> BrokerResult<(u64, SnapshotChunk)> {
    let epoch = broker.check_leader(LogKind::Queue, &fetch.queue, 0)?;
    if fetch.leader_epoch != epoch {
        return Err(BrokerError::FencedLeaderEpoch {
            topic: fetch.queue,
            partition: 0,
            epoch: fetch.leader_epoch,
            current: epoch,
        });
    }
    let queue = broker.queues.get(&fetch.queue)?;
    let chunk = tokio::task::spawn_blocking(move || {
        queue.read_snapshot_chunk(fetch.offset, fetch.max_bytes)
    })
    .await
    .map_err(|err| BrokerError::Internal(format!("snapshot read task failed: {err}")))??;
    Ok((epoch, chunk))
}

/// Gives every local partition its replication role and runs the followers'
/// fetchers, until dropped.
#[derive(Debug)]
pub struct Replicator {
    task: JoinHandle<()>,
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Replicator {
    /// Starts following `routing`'s view for `broker`.
    pub fn start(
        broker: Arc<Broker>,
        routing: Routing,
        meta: Arc<dyn MetadataStore>,
        retry_pause: Duration,
        dialing: HostDialing,
    ) -> Self {
        let config = broker.config.replication.clone();
        let task = tokio::spawn(run(broker, routing, meta, config, retry_pause, dialing));
        Self { task }
    }
}

/// A running fetcher and what it follows.
struct Fetcher {
    target: FetchTarget,
    task: JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The replicator's state between passes.
struct Replication {
    broker: Arc<Broker>,
    routing: Routing,
    meta: Arc<dyn MetadataStore>,
    config: ReplicationConfig,
    retry_pause: Duration,
    /// How leaders are dialled.
    dialing: HostDialing,
    fetchers: HashMap<FetcherKey, Fetcher>,
    /// Queues being taken over (state rebuilt on a blocking thread), by name, with
    /// the epoch.
    taking_over: HashMap<String, (u64, JoinHandle<()>)>,
    /// The partition-state revision each pending in-sync proposal was made against,
    /// so a proposal is not repeated before the view shows its outcome.
    proposed: HashMap<PartitionKey, Revision>,
    /// The epoch of each leaderless partition this host has reported its log for.
    reported: HashMap<PartitionKey, u64>,
}

async fn run(
    broker: Arc<Broker>,
    routing: Routing,
    meta: Arc<dyn MetadataStore>,
    config: ReplicationConfig,
    retry_pause: Duration,
    dialing: HostDialing,
) {
    let mut changes = routing.watch_view();
    let mut tick = tokio::time::interval(Duration::from_millis(config.in_sync_check_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut replication = Replication {
        broker,
        routing,
        meta,
        config,
        retry_pause,
        dialing,
        fetchers: HashMap::new(),
        taking_over: HashMap::new(),
        proposed: HashMap::new(),
        reported: HashMap::new(),
    };
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {}
        }
        let view = replication.routing.view();
        let lease_live = replication.routing.lease_live();
        replication.assign_roles(&view, lease_live);
        if lease_live {
            replication.review_in_sync(&view).await;
            replication.report_if_leaderless(&view).await;
        }
    }
}

impl Replication {
    /// Leader, follower (with a fetcher) or neither, for every local partition.
    fn assign_roles(&mut self, view: &ClusterView, lease_live: bool) {
        let me = self.routing.host_id().to_owned();
        let mut wanted: HashSet<FetcherKey> = HashSet::new();
        for topic in self.broker.topics.list() {
            for partition in &topic.partitions {
                let id = LogId {
                    kind: LogKind::Topic,
                    name: topic.name().to_owned(),
                    index: partition.index(),
                };
                let Some((state, revision)) =
                    view.partition_at(LogKind::Topic, topic.name(), partition.index())
                else {
                    partition.follow();
                    continue;
                };
                match state.leader.as_deref() {
                    Some(leader) if leader == me && lease_live => {
                        partition.lead_per(state, revision, &me);
                    }
                    Some(leader) if leader != me && state.has_replica(&me) => {
                        partition.follow();
                        self.follow(view, state, id, partition, None, &mut wanted);
                    }
                    _ => partition.follow(),
                }
            }
        }
        self.assign_queue_roles(view, lease_live, &me, &mut wanted);
        self.fetchers.retain(|id, _| wanted.contains(id));
    }

    /// Queues: the leader rebuilds its state once per epoch (on a blocking thread)
    /// before it serves; followers fetch both logs.
    fn assign_queue_roles(
        &mut self,
        view: &ClusterView,
        lease_live: bool,
        me: &str,
        wanted: &mut HashSet<FetcherKey>,
    ) {
        self.taking_over.retain(|_, (_, task)| !task.is_finished());
        for queue in self.broker.queues.list() {
            let name = queue.name().to_owned();
            let Some((state, revision)) = view.partition_at(LogKind::Queue, &name, 0) else {
                queue.step_down();
                continue;
            };
            match state.leader.as_deref() {
                Some(leader) if leader == me && lease_live => {
                    let epoch = state.leader_epoch;
                    let replicas = ReplicaSets::from_state(state, revision, me);
                    if queue.serving_epoch() == Some(epoch) {
                        // Same epoch: only the replica sets change; nothing blocks.
                        if let Err(err) = queue.take_leadership(epoch, &replicas, now_ms()) {
                            tracing::warn!(queue = %name, %err, "updating the queue's replicas failed");
                        }
                        continue;
                    }
                    if self
                        .taking_over
                        .get(&name)
                        .is_some_and(|(taking, _)| *taking == epoch)
                    {
                        continue;
                    }
                    let task = tokio::task::spawn_blocking(move || {
                        if let Err(err) = queue.take_leadership(epoch, &replicas, now_ms()) {
                            tracing::error!(queue = queue.name(), epoch, %err, "cannot take up the queue's leadership");
                            queue.step_down();
                        }
                    });
                    self.taking_over.insert(name, (epoch, task));
                }
                Some(leader) if leader != me && state.has_replica(me) => {
                    queue.step_down();
                    for index in [QUEUE_MESSAGES_LOG, QUEUE_JOURNAL_LOG] {
                        let Ok(log) = queue.replicated_log(index) else {
                            continue;
                        };
                        self.follow(
                            view,
                            state,
                            LogId {
                                kind: LogKind::Queue,
                                name: name.clone(),
                                index,
                            },
                            &log,
                            Some(Arc::clone(&queue)),
                            wanted,
                        );
                    }
                }
                _ => queue.step_down(),
            }
        }
    }

    /// Keeps a fetcher pulling `log` (the replicated log `id`) from the leader `state`
    /// names.
    fn follow(
        &mut self,
        view: &ClusterView,
        state: &PartitionState,
        id: FetcherKey,
        log: &Arc<ReplicatedLog>,
        queue: Option<Arc<Queue>>,
        wanted: &mut HashSet<FetcherKey>,
    ) {
        let Some(leader) = state.leader.as_deref() else {
            return;
        };
        let Some(host) = view.hosts.get(leader) else {
            return;
        };
        wanted.insert(id.clone());
        let target = FetchTarget {
            leader: leader.to_owned(),
            address: host.peer_address().to_owned(),
            epoch: state.leader_epoch,
            me: self.routing.host_id().to_owned(),
        };
        if self.fetchers.get(&id).is_none_or(|f| f.target != target) {
            let task = tokio::spawn(fetch_loop(
                Arc::clone(log),
                queue,
                target.clone(),
                self.config.clone(),
                self.broker.config.http2,
                self.retry_pause,
                self.dialing.clone(),
            ));
            self.fetchers.insert(id, Fetcher { target, task });
        }
    }

    /// For each partition led here, writes the in-sync set the leader wants when it
    /// differs from etcd's, compare-and-swap on the state's revision (a controller or
    /// newer leader that wrote in between wins, and the view then tells the outcome).
    async fn review_in_sync(&mut self, view: &ClusterView) {
        let me = self.routing.host_id().to_owned();
        let max_lag = Duration::from_millis(self.config.max_lag_ms);
        self.proposed.retain(|key, revision| {
            view.partitions
                .get(key)
                .is_some_and(|(_, current)| current == revision)
        });
        for topic in self.broker.topics.list() {
            for partition in &topic.partitions {
                let key = PartitionKey {
                    kind: LogKind::Topic,
                    name: topic.name().to_owned(),
                    partition: partition.index(),
                };
                let Some((state, revision)) = view.partitions.get(&key) else {
                    continue;
                };
                if state.leader.as_deref() != Some(me.as_str())
                    || partition.leader_epoch() != Some(state.leader_epoch)
                    || self.proposed.contains_key(&key)
                {
                    continue;
                }
                let damaged = has_lost_ranges(partition);
                if let Some(next) =
                    stepping_down(state, &me, damaged, partition.in_sync_holds_what_i_lost())
                {
                    self.propose(key, state, *revision, next).await;
                    continue;
                }
                // Judge against the in-sync set this proposal replaces: the role may
                // still hold an older one (a host that left it itself, with a wiped
                // disk, would be put back).
                partition.lead_per(state, *revision, &me);
                let Some(next) = partition
                    .wanted_in_sync(&me, max_lag)
                    .and_then(|wanted| election::propose_in_sync(state, &wanted))
                else {
                    continue;
                };
                // Those joining count toward the high watermark from now: once etcd
                // takes this, they are electable before this host sees it.
                partition.propose_in_sync(&next.isr, *revision);
                self.propose(key, state, *revision, next).await;
            }
        }
        for queue in self.broker.queues.list() {
            let key = PartitionKey {
                kind: LogKind::Queue,
                name: queue.name().to_owned(),
                partition: 0,
            };
            let Some((state, revision)) = view.partitions.get(&key) else {
                continue;
            };
            if state.leader.as_deref() != Some(me.as_str())
                || queue.serving_epoch() != Some(state.leader_epoch)
                || self.proposed.contains_key(&key)
            {
                continue;
            }
            let damaged = [QUEUE_MESSAGES_LOG, QUEUE_JOURNAL_LOG]
                .into_iter()
                .filter_map(|index| queue.replicated_log(index).ok())
                .any(|log| has_lost_ranges(&log));
            let holder = [QUEUE_MESSAGES_LOG, QUEUE_JOURNAL_LOG]
                .into_iter()
                .filter_map(|index| queue.replicated_log(index).ok())
                .any(|log| log.in_sync_holds_what_i_lost());
            if let Some(next) = stepping_down(state, &me, damaged, holder) {
                self.propose(key, state, *revision, next).await;
                continue;
            }
            // Judged against the in-sync set this proposal replaces (as for topics).
            let replicas = ReplicaSets::from_state(state, *revision, &me);
            if let Err(err) = queue.take_leadership(state.leader_epoch, &replicas, now_ms()) {
                tracing::warn!(queue = queue.name(), %err, "updating the queue's replicas failed");
                continue;
            }
            // A replica is in sync only when it keeps up with both logs.
            let judged: Option<Vec<Vec<String>>> = [QUEUE_MESSAGES_LOG, QUEUE_JOURNAL_LOG]
                .into_iter()
                .map(|index| {
                    queue
                        .replicated_log(index)
                        .ok()
                        .and_then(|log| log.in_sync_now(&me, max_lag))
                })
                .collect();
            let Some(judged) = judged else {
                continue;
            };
            let wanted: Vec<String> = state
                .replicas
                .iter()
                .filter(|h| judged.iter().all(|wanted| wanted.contains(h)))
                .cloned()
                .collect();
            let Some(next) = election::propose_in_sync(state, &wanted) else {
                continue;
            };
            for index in [QUEUE_MESSAGES_LOG, QUEUE_JOURNAL_LOG] {
                if let Ok(log) = queue.replicated_log(index) {
                    log.propose_in_sync(&next.isr, *revision);
                }
            }
            self.propose(key, state, *revision, next).await;
        }
    }

    /// For each local replica of a partition left with no leader and no in-sync
    /// replica, writes this host's report on its log once per epoch: the controller
    /// elects again when every replica has reported.
    async fn report_if_leaderless(&mut self, view: &ClusterView) {
        let me = self.routing.host_id().to_owned();
        self.reported
            .retain(|key, _| view.partitions.contains_key(key));
        for (key, (state, _)) in &view.partitions {
            let leaderless = state.leader.is_none() && state.isr.is_empty();
            if !leaderless
                || !state.has_replica(&me)
                || self.reported.get(key) == Some(&state.leader_epoch)
            {
                continue;
            }
            // A topic partition is one log; a queue's state governs both of its logs.
            let indexes = match key.kind {
                LogKind::Topic => vec![key.partition],
                LogKind::Queue => vec![QUEUE_MESSAGES_LOG, QUEUE_JOURNAL_LOG],
            };
            let Ok(replica) = indexes
                .into_iter()
                .map(|index| self.broker.replicated_log(key.kind, &key.name, index))
                .collect::<BrokerResult<Vec<_>>>()
            else {
                // Not open here yet: the materializer opens it, and a later pass reports.
                continue;
            };
            let opened: Vec<&ferry_storage::Log> =
                replica.iter().map(|p| p.log().as_ref()).collect();
            let report = match crate::rebuild::report_on(&opened, state.leader_epoch) {
                Ok(report) => report,
                Err(err) => {
                    tracing::warn!(partition = %key, %err, "cannot read the log to report it");
                    continue;
                }
            };
            let cluster = self.routing.cluster();
            let path = keys::replica_report(cluster, key.kind, &key.name, key.partition, &me);
            match self.meta.put(&path, encode_json(&report)).await {
                Ok(_) => {
                    tracing::warn!(
                        partition = %key,
                        ?report,
                        "no in-sync replica left: reported this replica's log for a new election"
                    );
                    self.reported.insert(key.clone(), state.leader_epoch);
                }
                Err(err) => {
                    tracing::warn!(partition = %key, %err, "cannot write the replica report")
                }
            }
        }
    }

    /// Writes `next` over `state` if etcd still holds it at `revision`.
    async fn propose(
        &mut self,
        key: PartitionKey,
        state: &PartitionState,
        revision: Revision,
        next: PartitionState,
    ) {
        let path =
            keys::partition_state(self.routing.cluster(), key.kind, &key.name, key.partition);
        let compares = vec![Compare::ModRevision {
            key: path.clone(),
            revision: Some(revision),
        }];
        let ops = vec![Op::Put {
            key: path,
            value: encode_json(&next),
        }];
        match self.meta.txn(compares, ops).await {
            Ok(outcome) => {
                if outcome.succeeded {
                    self.broker.metrics.count_in_sync_change(
                        key.kind.as_str(),
                        &state.isr,
                        &next.isr,
                    );
                    tracing::info!(
                        topic = %key.name,
                        partition = key.partition,
                        from = %state.isr.join(","),
                        to = %next.isr.join(","),
                        "in-sync replicas changed"
                    );
                } else {
                    tracing::debug!(
                        topic = %key.name,
                        partition = key.partition,
                        "in-sync change lost a race; the view will tell"
                    );
                }
                self.proposed.insert(key, revision);
            }
            Err(err) => {
                tracing::warn!(
                    %err,
                    topic = %key.name,
                    partition = key.partition,
                    "cannot write the in-sync replicas"
                );
            }
        }
    }
}

/// Whether a replicated log here lost records to damage (a lost range still in it).
fn has_lost_ranges(partition: &ReplicatedLog) -> bool {
    partition
        .log()
        .lost_ranges()
        .map_or(true, |ranges| !ranges.is_empty())
}

/// The state a leader whose log lost records proposes, if an in-sync replica holds a
/// whole copy: `me` out of the in-sync set and no longer leading (a new epoch fences
/// it).
fn stepping_down(
    state: &PartitionState,
    me: &str,
    damaged: bool,
    whole_copy_in_sync: bool,
) -> Option<PartitionState> {
    let next = election::step_down_if_damaged(state, me, damaged, whole_copy_in_sync)?;
    tracing::error!(
        replicas = %state.isr.join(","),
        "this leader's log lost records to damage on disk: leaving the in-sync set so a \
         whole copy leads"
    );
    Some(next)
}

/// A snapshot's name as the leader sent it.
fn snapshot_id(wire: pb::SnapshotId) -> SnapshotId {
    SnapshotId {
        messages_end: wire.messages_end,
        journal_end: wire.journal_end,
    }
}

/// A fetcher is kept per replicated log.
type FetcherKey = LogId;

/// Whom a fetcher pulls from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FetchTarget {
    leader: String,
    address: String,
    epoch: u64,
    me: String,
}

/// Pulls batches from the leader into `partition` until aborted (the replicator
/// replaces it when the leader or epoch changes).
async fn fetch_loop(
    partition: Arc<ReplicatedLog>,
    queue: Option<Arc<Queue>>,
    target: FetchTarget,
    config: ReplicationConfig,
    http2: Http2Settings,
    retry_pause: Duration,
    dialing: HostDialing,
) {
    let dial =
        |dialing: &HostDialing| leader_client(dialing, &target, &config, &http2, retry_pause);
    let Some((grpc, mut generation)) = dial(&dialing) else {
        return;
    };
    let stream = (config.transport == ReplicaTransport::Stream && !dialing.is_tls()).then(|| {
        let timeouts = StreamTimeouts {
            connect: connect_timeout(retry_pause),
            opening: Duration::from_millis(config.stream_opening_timeout_ms),
            retry: Duration::from_millis(config.stream_retry_ms),
        };
        StreamFetcher::new(
            target.address.clone(),
            timeouts,
            max_fetch_response_bytes(&config),
        )
    });
    let mut client = LeaderClient { grpc, stream };
    // Failures right after a leader change are usually the leader's view catching
    // up: retry soon, then back off to `retry_pause`.
    let mut pause = FIRST_RETRY_PAUSE.min(retry_pause);
    loop {
        match fetch_once(&partition, queue.as_ref(), &mut client, &target, &config).await {
            Ok(()) => pause = FIRST_RETRY_PAUSE.min(retry_pause),
            Err(err) => {
                // Whatever failed, the next answer is read and checked by the leader:
                // a batch this replica refused (its CRC failed) is confined there
                // rather than sent again unread.
                if let Some(stream) = &mut client.stream {
                    stream.verify_next();
                }
                // Renewed certificates: the old channel would reconnect with the old
                // ones, which the leader may refuse once they expire.
                if dialing.generation() != generation {
                    match dial(&dialing) {
                        Some((renewed, made_under)) => {
                            (client.grpc, generation) = (renewed, made_under);
                        }
                        None => return,
                    }
                }
                tracing::debug!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    leader = %target.leader,
                    %err,
                    "replica fetch failed; retrying"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(retry_pause);
            }
        }
    }
}

/// A replica-service client of `target`'s leader, dialled as `dialing` says now, and
/// the dialing generation it was made under; `None` when the address is unusable.
fn leader_client(
    dialing: &HostDialing,
    target: &FetchTarget,
    config: &ReplicationConfig,
    settings: &Http2Settings,
    retry_pause: Duration,
) -> Option<(ReplicaServiceClient<Channel>, u64)> {
    let channel = match dialing.endpoint(&target.address) {
        // Fetch responses are the follower's large messages (`Http2Settings`).
        Ok(endpoint) => http2::dial(endpoint, settings)
            .connect_timeout(connect_timeout(retry_pause))
            .tcp_nodelay(true)
            // A leader that vanished (a cut link, a frozen host) is noticed by
            // keep-alive pings, not after TCP's retransmission backoff.
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy(),
        Err(err) => {
            tracing::warn!(address = %target.address, %err, "leader address unusable");
            return None;
        }
    };
    let client = ReplicaServiceClient::new(channel)
        .max_decoding_message_size(max_fetch_response_bytes(config) as usize);
    Some((client, dialing.generation()))
}

/// How long dialling a leader may take.
fn connect_timeout(retry_pause: Duration) -> Duration {
    retry_pause.max(Duration::from_secs(1))
}

/// The largest answer a follower takes: a fetch returns at least one whole batch, which
/// may be larger than the fetch's `fetch_max_bytes`.
fn max_fetch_response_bytes(config: &ReplicationConfig) -> u64 {
    u64::from(config.fetch_max_bytes) * 2 + 1024 * 1024
}

/// A follower's ways to its leader: gRPC, and the replica stream where it is used.
struct LeaderClient {
    grpc: ReplicaServiceClient<Channel>,
    stream: Option<StreamFetcher>,
}

impl LeaderClient {
    /// `request` over the stream where it is usable, else over gRPC.
    async fn fetch(
        &mut self,
        request: pb::ReplicaFetchRequest,
        deadline: Duration,
    ) -> Result<pb::ReplicaFetchResponse, FetchError> {
        if let Some(stream) = self.stream.as_mut().filter(|stream| stream.usable()) {
            match stream.fetch(&request, deadline).await {
                Ok(answer) => return Ok(answer),
                Err(StreamError::Refused(status)) => return Err(status.into()),
                // An older leader: this fetch goes over gRPC.
                Err(StreamError::Unsupported(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        let mut request = tonic::Request::new(request);
        request.set_timeout(deadline);
        Ok(self.grpc.replica_fetch(request).await?.into_inner())
    }
}

/// How long a fetch (or snapshot piece) may take: the leader answers within its
/// wait; longer means the answer is lost.
fn fetch_deadline(config: &ReplicationConfig) -> Duration {
    Duration::from_millis(u64::from(config.fetch_max_wait_ms))
        + Duration::from_millis(config.fetch_timeout_slack_ms)
}

/// Why a replica fetch round failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("leader refused or unreachable: {0}")]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("corrupt batch from the leader: {0}")]
    Records(#[from] ferry_records::RecordError),
    #[error("blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the leader's snapshot copy made no progress at byte {0}")]
    SnapshotStalled(u64),
    #[error("the leader replaced its snapshot {0} times during one copy")]
    SnapshotMoving(u32),
}

/// Copies the leader's snapshot `wanted` of `queue` unless this replica holds it
/// already, and installs it (unless the replica stopped following meanwhile).
async fn copy_snapshot(
    partition: &Arc<ReplicatedLog>,
    queue: &Arc<Queue>,
    client: &mut ReplicaServiceClient<Channel>,
    target: &FetchTarget,
    config: &ReplicationConfig,
    wanted: Option<SnapshotId>,
) -> Result<(), FetchError> {
    if wanted.is_none() || queue.snapshot_id() == wanted {
        return Ok(());
    }
    let mut bytes: Vec<u8> = Vec::new();
    let mut copying: Option<SnapshotId> = None;
    let mut restarts = 0;
    loop {
        let mut request = tonic::Request::new(pb::ReplicaSnapshotRequest {
            queue: queue.name().to_owned(),
            leader_epoch: target.epoch,
            follower_id: target.me.clone(),
            offset: bytes.len() as u64,
            max_bytes: config.fetch_max_bytes,
        });
        request.set_timeout(fetch_deadline(config));
        let answer = client.replica_snapshot(request).await?.into_inner();
        let Some(id) = answer.snapshot.map(snapshot_id) else {
            return Ok(());
        };
        if copying.is_some_and(|copying| copying != id) {
            // The leader took a newer snapshot mid-copy: start over (a few times;
            // then the fetch round fails and is retried after a pause).
            restarts += 1;
            if restarts > MAX_SNAPSHOT_RESTARTS {
                return Err(FetchError::SnapshotMoving(restarts));
            }
            bytes.clear();
            copying = None;
            continue;
        }
        copying = Some(id);
        if answer.data.is_empty() && (bytes.len() as u64) < answer.total_bytes {
            return Err(FetchError::SnapshotStalled(bytes.len() as u64));
        }
        bytes.extend_from_slice(&answer.data);
        if bytes.len() as u64 >= answer.total_bytes {
            break;
        }
    }
    let (installing, queue) = (Arc::clone(partition), Arc::clone(queue));
    tokio::task::spawn_blocking(move || {
        installing.while_following(|| queue.install_snapshot(&bytes))
    })
    .await?
    .transpose()?;
    Ok(())
}

/// A follower whose log lost records the leader holds truncates below them when the
/// leader says so (it is out of the in-sync set then), and fetches what it lacks like
/// any replica behind.
async fn repair_lost(partition: &Arc<ReplicatedLog>, first_lost: u64) -> Result<(), FetchError> {
    let truncating = Arc::clone(partition);
    let from = partition.log().end_offset();
    let new_end = tokio::task::spawn_blocking(move || {
        truncating.while_following(|| truncating.log().truncate_to(first_lost))
    })
    .await?
    .transpose()?;
    if let Some(new_end) = new_end {
        tracing::warn!(
            topic = partition.topic(),
            partition = partition.index(),
            from,
            to = new_end,
            "repairing records lost to damage: truncated below them to fetch them from the leader"
        );
        partition.after_log_rewrite();
    }
    Ok(())
}

/// One fetch and what follows from its answer: truncate, start over, or append.
async fn fetch_once(
    partition: &Arc<ReplicatedLog>,
    queue: Option<&Arc<Queue>>,
    client: &mut LeaderClient,
    target: &FetchTarget,
    config: &ReplicationConfig,
) -> Result<(), FetchError> {
    let log = Arc::clone(partition.log());
    let lost = log.lost_ranges()?;
    let fetch_offset = log.end_offset();
    let request = pb::ReplicaFetchRequest {
        kind: partition.kind().as_str().to_owned(),
        topic: partition.topic().to_owned(),
        partition: partition.index(),
        leader_epoch: target.epoch,
        follower_id: target.me.clone(),
        fetch_offset,
        last_fetched_epoch: log.latest_epoch()?,
        max_bytes: config.fetch_max_bytes,
        max_wait_ms: config.fetch_max_wait_ms,
        lost_ranges: lost
            .iter()
            .map(|range| pb::OffsetRange {
                start: range.start,
                end: range.end,
            })
            .collect(),
    };
    let answer = client.fetch(request, fetch_deadline(config)).await?;
    if let Some(offset) = answer.repair_below {
        repair_lost(partition, offset).await?;
        return Ok(());
    }
    let diverging = answer.diverging.map(|d| (d.epoch, d.end_offset));
    let mut own_end_failure = None;
    let next = follower::step(
        diverging,
        |epoch| match log.end_offset_for_epoch(epoch) {
            Ok((_, end)) => end,
            Err(err) => {
                own_end_failure = Some(err);
                0
            }
        },
        answer.log_start_offset,
        fetch_offset,
    );
    if let Some(err) = own_end_failure {
        return Err(err.into());
    }
    if let Step::Truncate { offset: cut, epoch } = next {
        let truncating = Arc::clone(partition);
        let Some(new_end) = tokio::task::spawn_blocking(move || {
            truncating.while_following(|| truncating.log().truncate_to(cut))
        })
        .await?
        .transpose()?
        else {
            return Ok(());
        };
        tracing::info!(
            topic = partition.topic(),
            partition = partition.index(),
            from = fetch_offset,
            to = new_end,
            epoch,
            "truncated to where the leader's log diverges"
        );
        partition.after_log_rewrite();
        return Ok(());
    }
    if let Some(queue) = queue
        && answer.log_start_offset > log.start_offset()
    {
        // The leader compacted past what this replica keeps: its snapshot must be
        // here before the logs start over or drop what it covers.
        let leader_snapshot = answer.snapshot.map(snapshot_id);
        copy_snapshot(
            partition,
            queue,
            &mut client.grpc,
            target,
            config,
            leader_snapshot,
        )
        .await?;
        if fetch_offset >= answer.log_start_offset {
            let (deleting, queue) = (Arc::clone(partition), Arc::clone(queue));
            let (index, start) = (partition.index(), answer.log_start_offset);
            tokio::task::spawn_blocking(move || {
                deleting.while_following(|| queue.delete_covered_prefix(index, start))
            })
            .await?
            .transpose()?;
        }
    }
    if let Step::ResetTo { offset: start } = next {
        let resetting = Arc::clone(partition);
        let reset = tokio::task::spawn_blocking(move || {
            resetting.while_following(|| resetting.log().reset_to(start))
        })
        .await?
        .transpose()?;
        if reset.is_none() {
            return Ok(());
        }
        tracing::info!(
            topic = partition.topic(),
            partition = partition.index(),
            from = fetch_offset,
            to = start,
            "too far behind the leader: starting over at its log start"
        );
        partition.after_log_rewrite();
        return Ok(());
    }
    if !answer.records.is_empty() {
        let records = answer.records;
        // A span per fetch that brought records (not per poll: most bring none),
        // when traces are exported.
        let span = if !ferry_telemetry::traces::exporting() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                target: "ferry::replica",
                "replica fetch",
                otel.kind = "consumer",
                kind = partition.kind().as_str(),
                topic = partition.topic(),
                partition = partition.index(),
                follower = %target.me,
                leader = %target.address,
                offset = fetch_offset,
                bytes = records.len(),
            )
        };
        let appending = Arc::clone(partition);
        let wait_for_disk = partition.durability() == DurabilitySetting::Fsync;
        let appended = span.clone();
        tokio::task::spawn_blocking(move || {
            let _in_span = appended.enter();
            let log = appending.log();
            appending
                .while_following(|| {
                    let now = now_ms();
                    for batch in Batches::new(&records) {
                        log.append_replicated(batch?.bytes, now)?;
                    }
                    Ok::<_, FetchError>(())
                })
                .transpose()?;
            // Outside the lock: the fsync may take a while and is harmless after a
            // role change.
            if wait_for_disk {
                log.wait_durable(log.end_offset())?;
            }
            Ok::<_, FetchError>(())
        })
        .instrument(span)
        .await??;
        partition.publish_log_end();
    }
    partition.learn_high_watermark(answer.high_watermark);
    Ok(())
}
