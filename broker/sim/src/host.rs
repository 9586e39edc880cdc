//! One simulated broker host: the real storage engine under a thin driver of the
//! replication state machines, doing what `Partition` and the replicator do in the
//! broker, one event at a time.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_e2e::history::SendOutcome;
use ferry_records::{BatchBuilder, Batches};
use ferry_replication::election::{self, ReplicaReport};
use ferry_replication::follower::{self, FetchRequest, LeaderLog, Serve, Step};
use ferry_replication::identity::{self, IdentityCheck};
use ferry_replication::{Commit, LeaderCore, PartitionState};
use ferry_storage::{DiskHooks, Durability, Log, LogConfig, StorageError};

use crate::disk::SyncLedger;
use crate::meta::LEASE_TTL_MS;
use crate::net::{FetchAnswer, Msg, Node, Out};

/// Replicas (the leader included) that must be in sync for a write (`sync`, RF 3).
pub const MIN_IN_SYNC: usize = 2;
/// A follower that has not caught up for this long leaves the in-sync set.
const MAX_LAG_MS: u64 = 400;
/// How long before its lease runs out a host stops acting on it.
const LEASE_MARGIN_MS: u64 = 200;
/// How often a host renews its lease, and reads the store.
const RENEW_EVERY_MS: u64 = 250;
const POLL_EVERY_MS: u64 = 100;
/// How long a produce may wait for its replicas before answering "unknown".
const COMMIT_TIMEOUT_MS: u64 = 800;
/// How long an in-sync proposal may go unanswered before it is made again.
const PROPOSAL_TIMEOUT_MS: u64 = 500;
/// How long a fetch may go unanswered before it is sent again.
const FETCH_TIMEOUT_MS: u64 = 300;
/// Most bytes of batches a fetch returns.
const FETCH_MAX_BYTES: usize = 2_048;
/// Segment size: small, so a run spans many segments and damage hits sealed ones.
const SEGMENT_BYTES: u64 = 1_024;

/// Where a host is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its process is not running.
    Down,
    /// Recovered; telling the store (leaving in-sync sets if damaged) before it serves.
    Joining,
    /// Serving.
    Running,
    /// The store lacks this cluster's identity: it serves nothing and waits.
    Refused,
}

/// What the host's partition does.
#[derive(Debug)]
enum Role {
    Follower,
    Leader(LeaderCore),
}

/// A produce waiting for its replicas.
#[derive(Debug)]
struct Pending {
    op: u64,
    offset: u64,
    epoch: u64,
    deadline_ms: u64,
}

/// A storage failure the simulation did not expect: a finding, not a fault.
#[derive(Debug)]
pub struct HostError(pub String);

/// One host.
#[derive(Debug)]
pub struct Host {
    /// Its id in partition states.
    pub id: String,
    dir: PathBuf,
    ledger: Arc<SyncLedger>,
    /// Its log while the process runs.
    pub log: Option<Log>,
    /// Bumped on every start: messages to an earlier process are dropped.
    pub incarnation: u64,
    /// Where it is in its life.
    pub phase: Phase,
    identity: u64,
    view: Option<(PartitionState, u64)>,
    lease_until_ms: u64,
    next_renew_ms: u64,
    next_poll_ms: u64,
    role: Role,
    high_watermark: u64,
    fetch_deadline_ms: Option<u64>,
    syncing: bool,
    /// The revision of the last proposal and until when its answer is awaited (an
    /// unanswered proposal, like a failed etcd transaction, is made again).
    proposed_at: Option<(u64, u64)>,
    pending: Vec<Pending>,
    /// What it did that matters to a failing seed's reader (drained by the world).
    pub trace: Vec<String>,
}

impl Host {
    /// A host that has not started, with its data directory and the cluster identity
    /// it keeps there.
    pub fn new(id: String, dir: PathBuf, identity: u64) -> Self {
        Self {
            id,
            dir,
            ledger: SyncLedger::new(),
            log: None,
            incarnation: 0,
            phase: Phase::Down,
            identity,
            view: None,
            lease_until_ms: 0,
            next_renew_ms: 0,
            next_poll_ms: 0,
            role: Role::Follower,
            high_watermark: 0,
            fetch_deadline_ms: None,
            syncing: false,
            proposed_at: None,
            pending: Vec::new(),
            trace: Vec::new(),
        }
    }

    /// The log's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// What power loss may drop.
    pub fn ledger(&self) -> &SyncLedger {
        &self.ledger
    }

    /// Starts the process: recovery, then joining.
    pub fn start(&mut self) -> Result<(), HostError> {
        let config = LogConfig {
            durability: Durability::Fsync,
            segment_bytes: SEGMENT_BYTES,
            ..LogConfig::default()
        };
        let hooks = DiskHooks {
            faults: Some(self.ledger.clone()),
            sync_observer: None,
        };
        let log = Log::open_with_hooks(&self.dir, config, hooks).map_err(storage("open"))?;
        // Recovery's own fsyncs made what it kept durable.
        self.high_watermark = 0;
        self.trace.push(format!(
            "started: log {}..{} lost {:?}",
            log.start_offset(),
            log.end_offset(),
            log.lost_ranges().unwrap_or_default()
        ));
        self.log = Some(log);
        self.incarnation += 1;
        self.phase = Phase::Joining;
        self.view = None;
        self.lease_until_ms = 0;
        self.next_renew_ms = 0;
        self.next_poll_ms = 0;
        self.role = Role::Follower;
        self.fetch_deadline_ms = None;
        self.syncing = false;
        self.proposed_at = None;
        Ok(())
    }

    /// Kills the process (what it wrote stays in the page cache: a process crash).
    /// Produces waiting for replicas never get an answer.
    pub fn crash(&mut self) {
        self.log = None;
        self.phase = Phase::Down;
        self.role = Role::Follower;
        self.pending.clear();
    }

    /// Whether this host leads (with its epoch) right now.
    pub fn leading(&self) -> Option<u64> {
        match &self.role {
            Role::Leader(core) if self.phase == Phase::Running => Some(core.epoch()),
            _ => None,
        }
    }

    /// Whether this host leads with a whole copy in the in-sync set.
    pub fn leads_with_what_it_lost_in_sync(&mut self) -> bool {
        let lost = self
            .log
            .as_ref()
            .and_then(|log| log.lost_ranges().ok())
            .unwrap_or_default();
        let Role::Leader(core) = &mut self.role else {
            return false;
        };
        // What a read just confined counts at once, as in the broker's read path.
        core.set_own_lost(lost);
        core.in_sync_holds_what_i_lost()
    }

    /// The high watermark as this host knows it.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// A periodic tick: lease, view, role, the leader's and the follower's duties.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Out>) -> Result<(), HostError> {
        match self.phase {
            Phase::Down => {}
            Phase::Joining => {
                let log = self.log()?;
                let damaged = !log
                    .lost_ranges()
                    .map_err(storage("lost ranges"))?
                    .is_empty()
                    || log.torn_tail().map_err(storage("torn tail"))?.is_some();
                send(out, Node::Meta, Msg::Join { damaged });
            }
            Phase::Refused => {
                if now_ms >= self.next_poll_ms {
                    self.next_poll_ms = now_ms + POLL_EVERY_MS;
                    send(out, Node::Meta, Msg::Poll);
                }
            }
            Phase::Running => {
                if now_ms >= self.next_renew_ms {
                    self.next_renew_ms = now_ms + RENEW_EVERY_MS;
                    send(out, Node::Meta, Msg::Renew { sent_at_ms: now_ms });
                }
                if now_ms >= self.next_poll_ms {
                    self.next_poll_ms = now_ms + POLL_EVERY_MS;
                    send(out, Node::Meta, Msg::Poll);
                }
                let polled = self.next_poll_ms == now_ms + POLL_EVERY_MS;
                self.assign_role(now_ms, out);
                self.lead(now_ms, out)?;
                self.follow(now_ms, out)?;
                if polled {
                    self.report_if_leaderless(out)?;
                }
            }
        }
        Ok(())
    }

    fn log(&self) -> Result<&Log, HostError> {
        self.log.as_ref().ok_or_else(|| no_log(&self.id))
    }

    /// Handles a message.
    pub fn receive(
        &mut self,
        from: Node,
        msg: Msg,
        now_ms: u64,
        out: &mut Vec<Out>,
    ) -> Result<(), HostError> {
        match msg {
            Msg::Joined { identity } if self.phase == Phase::Joining => {
                if !refused(self.identity, identity) {
                    // The store has taken this host out of the in-sync set if it had to.
                    self.log()?
                        .forget_torn_tail()
                        .map_err(storage("forget torn tail"))?;
                    self.phase = Phase::Running;
                } else {
                    self.phase = Phase::Refused;
                }
            }
            Msg::Renewed { sent_at_ms } => {
                self.lease_until_ms = (sent_at_ms + LEASE_TTL_MS).saturating_sub(LEASE_MARGIN_MS);
            }
            Msg::View { state, identity } => self.learn_view(state, identity, now_ms, out),
            Msg::Fetch {
                epoch,
                fetch_offset,
                last_epoch,
                lost,
            } => {
                if let Node::Host(_) = from {
                    let request = FetchRequest {
                        fetch_offset,
                        last_fetched_epoch: last_epoch,
                    };
                    let answer =
                        self.serve_fetch(&from_id(from), epoch, request, &lost, now_ms, out)?;
                    send(
                        out,
                        from,
                        Msg::Fetched {
                            answer,
                            fetch_offset,
                        },
                    );
                }
            }
            Msg::Fetched {
                answer,
                fetch_offset,
            } => self.fetched(answer, fetch_offset, now_ms, out)?,
            Msg::Produce { op, value } => self.produce(op, &value, now_ms, out)?,
            _ => {}
        }
        Ok(())
    }

    fn learn_view(
        &mut self,
        state: Option<(PartitionState, u64)>,
        identity: Option<u64>,
        now_ms: u64,
        out: &mut Vec<Out>,
    ) {
        match self.phase {
            Phase::Running if refused(self.identity, identity) => {
                // The store lost the cluster (or is another one): stop acknowledging
                // anything until the cluster's records are rebuilt.
                // The broker stops here (`serve::guard_identity`) and is started again
                // after the rebuild: nothing it remembers about the store survives.
                self.step_down(out);
                self.phase = Phase::Refused;
                self.view = None;
                self.proposed_at = None;
            }
            Phase::Refused if !refused(self.identity, identity) => {
                self.phase = Phase::Joining;
            }
            Phase::Running => {
                let newer = match (&self.view, &state) {
                    (Some((_, seen)), Some((_, revision))) => revision >= seen,
                    _ => true,
                };
                if newer {
                    self.view = state;
                    self.assign_role(now_ms, out);
                }
            }
            _ => {}
        }
    }

    /// Leader, follower, or neither, as the view and the lease say.
    fn assign_role(&mut self, now_ms: u64, out: &mut Vec<Out>) {
        let Some((state, revision)) = &self.view else {
            self.step_down(out);
            return;
        };
        let leads =
            state.leader.as_deref() == Some(self.id.as_str()) && now_ms < self.lease_until_ms;
        if !leads {
            self.step_down(out);
            return;
        }
        let (followers, in_sync) = state.others(&self.id);
        let (epoch, revision) = (state.leader_epoch, *revision);
        match &mut self.role {
            Role::Leader(core) if core.epoch() == epoch => {
                core.set_replicas(&followers, &in_sync, revision, now_ms);
            }
            _ => {
                self.fail_pending(out);
                let end = self.log.as_ref().map_or(0, Log::end_offset);
                let mut core = LeaderCore::new(epoch, end);
                core.set_replicas(&followers, &in_sync, revision, now_ms);
                self.role = Role::Leader(core);
                self.trace.push(format!(
                    "leads epoch {epoch} from end {end}, in sync {in_sync:?}"
                ));
                self.fetch_deadline_ms = None;
                out.push(Out::Led { epoch });
            }
        }
    }

    fn step_down(&mut self, out: &mut Vec<Out>) {
        if matches!(self.role, Role::Leader(_)) {
            self.fail_pending(out);
            self.role = Role::Follower;
        }
    }

    /// Produces waiting for replicas when leadership moves: the outcome is unknown.
    fn fail_pending(&mut self, out: &mut Vec<Out>) {
        for pending in self.pending.drain(..) {
            send(
                out,
                Node::Client,
                Msg::Produced {
                    op: pending.op,
                    outcome: SendOutcome::Unknown,
                },
            );
        }
    }

    /// The leader's duties: the high watermark, acknowledgements, in-sync proposals.
    fn lead(&mut self, now_ms: u64, out: &mut Vec<Out>) -> Result<(), HostError> {
        let Some(log) = self.log.as_ref() else {
            return Ok(());
        };
        let own_lost = log.lost_ranges().map_err(storage("lost ranges"))?;
        let Role::Leader(core) = &mut self.role else {
            return Ok(());
        };
        core.set_own_lost(own_lost);
        let core = &*core;
        let Some((state, revision)) = self.view.clone() else {
            return Ok(());
        };
        let log = self.log.as_ref().ok_or_else(|| no_log(&self.id))?;
        let local = log.durable_end_offset();
        self.high_watermark = self.high_watermark.max(core.high_watermark(local));
        let hw = self.high_watermark;
        let mut answered = Vec::new();
        let trace = &mut self.trace;
        self.pending.retain(|p| {
            let done = p.epoch == core.epoch()
                && core.commit(p.offset + 1, hw, MIN_IN_SYNC) == Commit::Done;
            if done {
                trace.push(format!(
                    "acked offset {} (hw {hw}, in sync {})",
                    p.offset,
                    core.in_sync_count()
                ));
                answered.push((p.op, SendOutcome::Ok { offset: p.offset }));
            } else if now_ms >= p.deadline_ms {
                answered.push((p.op, SendOutcome::Unknown));
            }
            !done && now_ms < p.deadline_ms
        });
        for (op, outcome) in answered {
            send(out, Node::Client, Msg::Produced { op, outcome });
        }
        if self
            .proposed_at
            .is_some_and(|(at, until)| at == revision && now_ms < until)
        {
            return Ok(());
        }
        let damaged = !log
            .lost_ranges()
            .map_err(storage("lost ranges"))?
            .is_empty();
        let holder = core.in_sync_holds_what_i_lost();
        let next =
            election::step_down_if_damaged(&state, &self.id, damaged, holder).or_else(|| {
                core.wanted_in_sync(&self.id, hw, MAX_LAG_MS, now_ms)
                    .and_then(|wanted| election::propose_in_sync(&state, &wanted))
            });
        if let Some(next) = next {
            if let Role::Leader(core) = &mut self.role {
                core.propose_in_sync(&next.isr, revision);
            }
            self.proposed_at = Some((revision, now_ms + PROPOSAL_TIMEOUT_MS));
            send(
                out,
                Node::Meta,
                Msg::Propose {
                    revision,
                    state: next,
                },
            );
        }
        Ok(())
    }

    /// The follower's duty: keep one fetch in flight to the leader.
    fn follow(&mut self, now_ms: u64, out: &mut Vec<Out>) -> Result<(), HostError> {
        if !matches!(self.role, Role::Follower) || self.syncing {
            return Ok(());
        }
        let Some((state, _)) = &self.view else {
            return Ok(());
        };
        let Some(leader) = state.leader.as_deref().and_then(host_index) else {
            return Ok(());
        };
        if state.leader.as_deref() == Some(self.id.as_str()) || !state.has_replica(&self.id) {
            return Ok(());
        }
        if self
            .fetch_deadline_ms
            .is_some_and(|deadline| now_ms < deadline)
        {
            return Ok(());
        }
        let epoch = state.leader_epoch;
        let log = self.log()?;
        let request = Msg::Fetch {
            epoch,
            fetch_offset: log.end_offset(),
            last_epoch: log.latest_epoch().map_err(storage("latest epoch"))?,
            lost: log.lost_ranges().map_err(storage("lost ranges"))?,
        };
        self.fetch_deadline_ms = Some(now_ms + FETCH_TIMEOUT_MS);
        send(out, Node::Host(leader), request);
        Ok(())
    }

    /// A partition with no leader and no in-sync replica waits for every replica's
    /// report on its log; this host sends its own with each poll.
    fn report_if_leaderless(&mut self, out: &mut Vec<Out>) -> Result<(), HostError> {
        let Some((state, _)) = &self.view else {
            return Ok(());
        };
        if state.leader.is_some() || !state.isr.is_empty() || !state.has_replica(&self.id) {
            return Ok(());
        }
        let log = self.log()?;
        let report = ReplicaReport {
            epoch: log
                .latest_epoch()
                .map_err(storage("latest epoch"))?
                .unwrap_or(0),
            ends: vec![log.end_offset()],
            whole: log
                .lost_ranges()
                .map_err(storage("lost ranges"))?
                .is_empty(),
            answering_epoch: state.leader_epoch,
        };
        send(out, Node::Meta, Msg::Report { report });
        Ok(())
    }

    fn after_rewrite(&mut self) {
        let end = self.log.as_ref().map_or(0, Log::end_offset);
        self.high_watermark = self.high_watermark.min(end);
    }

    /// The leader's side of a fetch.
    fn serve_fetch(
        &mut self,
        follower_id: &str,
        epoch: u64,
        request: FetchRequest,
        follower_lost: &[Range<u64>],
        now_ms: u64,
        out: &mut Vec<Out>,
    ) -> Result<Option<FetchAnswer>, HostError> {
        let FetchRequest {
            fetch_offset,
            last_fetched_epoch: last_epoch,
        } = request;
        if self.phase != Phase::Running || now_ms >= self.lease_until_ms {
            return Ok(None);
        }
        let log = self.log.as_ref().ok_or_else(|| no_log(&self.id))?;
        let Role::Leader(core) = &mut self.role else {
            return Ok(None);
        };
        if core.epoch() != epoch {
            return Ok(None);
        }
        let leader_log = LeaderLog {
            start: log.start_offset(),
            end: log.end_offset(),
            latest_epoch: log.latest_epoch().map_err(storage("latest epoch"))?,
            end_for_follower_epoch: last_epoch
                .map(|e| log.end_offset_for_epoch(e))
                .transpose()
                .map_err(storage("epoch lookup"))?,
        };
        let mut answer = FetchAnswer {
            diverging: None,
            log_start: leader_log.start,
            high_watermark: self.high_watermark,
            records: Vec::new(),
            repair_below: None,
        };
        core.set_own_lost(log.lost_ranges().map_err(storage("lost ranges"))?);
        let lost = follower_lost.to_vec();
        match follower::serve(request, leader_log, epoch) {
            Serve::Diverging { epoch, end_offset } => {
                answer.diverging = Some((epoch, end_offset));
                return Ok(Some(answer));
            }
            Serve::StartOver => {
                let _ = core.record_fetch(follower_id, fetch_offset, leader_log.end, lost, now_ms);
            }
            Serve::Records => {
                let _ = core.record_fetch(follower_id, fetch_offset, leader_log.end, lost, now_ms);
                if let Some(offset) = core.repair_for(follower_id) {
                    answer.repair_below = Some(offset);
                } else if fetch_offset < leader_log.end {
                    let read = log
                        .read(fetch_offset, FETCH_MAX_BYTES, u64::MAX)
                        .map_err(storage("replica read"))?;
                    answer.records = read.bytes;
                }
            }
        }
        self.lead(now_ms, out)?;
        answer.high_watermark = self.high_watermark;
        Ok(Some(answer))
    }

    /// The follower's side of a fetch answer.
    fn fetched(
        &mut self,
        answer: Option<FetchAnswer>,
        fetch_offset: u64,
        now_ms: u64,
        out: &mut Vec<Out>,
    ) -> Result<(), HostError> {
        self.fetch_deadline_ms = None;
        if self.phase != Phase::Running || !matches!(self.role, Role::Follower) {
            return Ok(());
        }
        let Some(answer) = answer else {
            self.trace
                .push(format!("fetch from {fetch_offset} refused"));
            // Refused: not (yet) the leader of that epoch. Ask again a little later.
            self.fetch_deadline_ms = Some(now_ms + 20);
            return Ok(());
        };
        let log = self.log.as_ref().ok_or_else(|| no_log(&self.id))?;
        if log.end_offset() != fetch_offset {
            // The log changed since the fetch (a repair): this answer is stale.
            return Ok(());
        }
        let mut lookup = Ok(0);
        let step = follower::step(
            answer.diverging,
            |epoch| match log.end_offset_for_epoch(epoch) {
                Ok((_, end)) => end,
                Err(err) => {
                    lookup = Err(err);
                    0
                }
            },
            answer.log_start,
            fetch_offset,
        );
        lookup.map_err(storage("epoch lookup"))?;
        if let Some(offset) = answer.repair_below {
            log.truncate_to(offset)
                .map_err(storage("repair truncate"))?;
            self.trace
                .push(format!("repair: truncated {fetch_offset} to {offset}"));
            self.after_rewrite();
            return Ok(());
        }
        match step {
            Step::Truncate { offset, epoch } => {
                log.truncate_to(offset).map_err(storage("truncate"))?;
                self.trace.push(format!(
                    "diverged at epoch {epoch}: truncated {fetch_offset} to {offset}"
                ));
                self.after_rewrite();
            }
            Step::ResetTo { offset } => {
                log.reset_to(offset).map_err(storage("reset"))?;
                self.trace.push(format!("reset {fetch_offset} to {offset}"));
                self.after_rewrite();
            }
            Step::Append => {
                for batch in Batches::new(&answer.records) {
                    let batch = batch.map_err(|err| {
                        HostError(format!("{}: bad batch from leader: {err}", self.id))
                    })?;
                    if batch.header.is_lost_range() {
                        let gap = batch.header.base_offset..batch.header.next_offset();
                        self.trace.push(format!("copied the leader's gap {gap:?}"));
                    }
                    log.append_replicated(batch.bytes, now_ms as i64)
                        .map_err(storage("replicated append"))?;
                }
                let end = log.end_offset();
                self.high_watermark = follower::learned_high_watermark(answer.high_watermark, end);
                if !answer.records.is_empty() {
                    // The next fetch (which reports this as durable) waits for the fsync.
                    self.syncing = true;
                    out.push(Out::SyncLater { after_ms: 2 });
                }
            }
        }
        Ok(())
    }

    /// A group-commit fsync round finished: everything written so far is durable.
    pub fn synced(&mut self, now_ms: u64, out: &mut Vec<Out>) -> Result<(), HostError> {
        if self.phase == Phase::Down {
            return Ok(());
        }
        let log = self.log()?;
        log.wait_durable(log.end_offset())
            .map_err(storage("fsync"))?;
        self.syncing = false;
        self.lead(now_ms, out)?;
        self.follow(now_ms, out)
    }

    /// A produce of one value.
    fn produce(
        &mut self,
        op: u64,
        value: &str,
        now_ms: u64,
        out: &mut Vec<Out>,
    ) -> Result<(), HostError> {
        let refuse = |out: &mut Vec<Out>| {
            send(
                out,
                Node::Client,
                Msg::Produced {
                    op,
                    outcome: SendOutcome::Failed,
                },
            );
        };
        if self.phase != Phase::Running || now_ms >= self.lease_until_ms {
            refuse(out);
            return Ok(());
        }
        let Role::Leader(core) = &self.role else {
            refuse(out);
            return Ok(());
        };
        if core.in_sync_count() < MIN_IN_SYNC {
            refuse(out);
            return Ok(());
        }
        let epoch = core.epoch();
        let mut builder = BatchBuilder::new();
        builder.push(None, value.as_bytes(), &[], now_ms as i64);
        let batch = builder
            .finish()
            .ok_or_else(|| HostError("empty batch".into()))?;
        match self.log()?.append(batch, epoch, now_ms as i64) {
            Ok(outcome) => {
                self.pending.push(Pending {
                    op,
                    offset: outcome.last_offset,
                    epoch,
                    deadline_ms: now_ms + COMMIT_TIMEOUT_MS,
                });
                if !self.syncing {
                    self.syncing = true;
                    out.push(Out::SyncLater { after_ms: 3 });
                }
            }
            // A refused append wrote nothing.
            Err(StorageError::StaleLeaderEpoch { .. }) => refuse(out),
            Err(err) => return Err(storage("append")(err)),
        }
        Ok(())
    }
}

/// Whether a host whose data remembers `local` refuses a store holding `stored`.
fn refused(local: u64, stored: Option<u64>) -> bool {
    matches!(
        identity::check(Some(local), stored),
        IdentityCheck::Refuse { .. }
    )
}

fn no_log(id: &str) -> HostError {
    HostError(format!("{id}: no log while running"))
}

fn send(out: &mut Vec<Out>, to: Node, msg: Msg) {
    out.push(Out::Send { to, msg });
}

fn storage(what: &'static str) -> impl Fn(StorageError) -> HostError {
    move |err| HostError(format!("storage failed ({what}): {err}"))
}

/// Host ids are `h{index}`.
pub fn host_id(index: usize) -> String {
    format!("h{index}")
}

fn host_index(id: &str) -> Option<usize> {
    id.strip_prefix('h')?.parse().ok()
}

fn from_id(node: Node) -> String {
    match node {
        Node::Host(index) => host_id(index),
        Node::Meta | Node::Client => String::new(),
    }
}
