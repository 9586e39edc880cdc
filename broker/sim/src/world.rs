//! The simulated world: hosts, the metadata store, the network and the client, moved
//! one event at a time in simulated time by a seeded random schedule of faults.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::Path;

use ferry_e2e::history::{HistoryLog, ReadOp, SendOp, SendOutcome};
use ferry_records::Batches;
use ferry_replication::election::{ReplicaReport, rebuilt_state};
use ferry_replication::identity::{self, IdentityCheck};
use ferry_storage::Log;

use crate::disk::flip_bit;
use crate::host::{Host, HostError, Phase, host_id};
use crate::meta::Meta;
use crate::net::{Msg, Node, Out};
use crate::{Faults, Options};

/// How often each host ticks.
const TICK_MS: u64 = 10;
/// How often the controller runs a pass.
const CONTROL_EVERY_MS: u64 = 50;
/// How often the client looks for idle producers.
const CLIENT_EVERY_MS: u64 = 7;
/// How long a client waits for an answer before calling the outcome unknown.
const CLIENT_TIMEOUT_MS: u64 = 1_500;
/// Producers, each with at most one send in flight (so their order is checked).
const PRODUCERS: u32 = 3;
/// How long the healed cluster runs before the final read.
const SETTLE_MS: u64 = 4_000;
/// Final reads that may find a lost range on a leader with whole copies in sync (it
/// then steps down, as the broker's read path makes it, and the read is tried again).
const READ_RETRIES: u32 = 3;

#[derive(Debug)]
enum Event {
    Deliver {
        from: Node,
        to: Node,
        /// For a host recipient: the process it was sent to.
        incarnation: u64,
        msg: Msg,
    },
    Tick(usize),
    Sync {
        host: usize,
        incarnation: u64,
    },
    Control,
    Client,
    Fault,
    Restart(usize),
    Heal {
        a: Node,
        b: Node,
    },
    MetaBack,
    Rebuild,
    ClientTimeout(u64),
    EndChaos,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Findings {
    /// The client's history and the final read.
    pub history: HistoryLog,
    /// Invariants broken outside the history (two leaders in an epoch, replicas that
    /// diverge below the high watermark, no leader once healed, a storage failure).
    pub violations: Vec<String>,
    /// The faults applied, in order, with their times.
    pub faults: Vec<String>,
    /// Events processed.
    pub events: u64,
    /// The cluster at the end: the partition state and each host's log.
    pub end_state: Vec<String>,
    /// What the hosts did, in order.
    pub trace: Vec<String>,
}

/// The world of one run.
pub struct World {
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Event>>,
    rng: fastrand::Rng,
    options: Options,
    hosts: Vec<Host>,
    paused_until: Vec<u64>,
    meta: Meta,
    identity: u64,
    cut: BTreeSet<(Node, Node)>,
    chaos: bool,
    wiped: bool,
    flips: u32,
    damage_host: usize,
    leaders: BTreeMap<u64, String>,
    client_leader: Option<usize>,
    in_flight: BTreeMap<u32, u64>,
    next_value: u64,
    findings: Findings,
}

impl World {
    /// A world for `seed`, its hosts' data under `root`.
    pub fn new(seed: u64, options: Options, root: &Path) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let identity = rng.u64(1..u64::MAX);
        let hosts = (0..options.hosts)
            .map(|i| Host::new(host_id(i), root.join(host_id(i)), identity))
            .collect::<Vec<_>>();
        let damage_host = rng.usize(0..options.hosts);
        Self {
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            rng,
            paused_until: vec![0; hosts.len()],
            hosts,
            meta: Meta::new(identity),
            identity,
            cut: BTreeSet::new(),
            chaos: true,
            wiped: false,
            flips: 0,
            damage_host,
            leaders: BTreeMap::new(),
            client_leader: None,
            in_flight: BTreeMap::new(),
            next_value: 0,
            options,
            findings: Findings::default(),
        }
    }

    fn at(&mut self, time_ms: u64, event: Event) {
        self.seq += 1;
        self.events.push(Some(event));
        self.queue
            .push(Reverse((time_ms, self.seq, self.events.len() - 1)));
    }

    fn after(&mut self, delay_ms: u64, event: Event) {
        self.at(self.now_ms + delay_ms, event);
    }

    fn fault(&mut self, what: String) {
        self.findings
            .faults
            .push(format!("{} ms: {what}", self.now_ms));
    }

    /// Runs the schedule to its end and returns what it found.
    pub fn run(mut self) -> Findings {
        for host in 0..self.hosts.len() {
            self.restart(host);
        }
        self.at(0, Event::Control);
        self.at(0, Event::Client);
        self.at(self.options.warmup_ms, Event::Fault);
        self.at(self.options.chaos_ms, Event::EndChaos);
        let mut end_ms = self.options.chaos_ms + SETTLE_MS;
        for attempt in 0..=READ_RETRIES {
            self.run_until(end_ms);
            if self.finish(attempt == READ_RETRIES) {
                break;
            }
            end_ms += SETTLE_MS;
        }
        self.findings
    }

    fn run_until(&mut self, end_ms: u64) {
        while let Some(Reverse((time_ms, _, index))) = self.queue.peek().copied() {
            if time_ms > end_ms {
                break;
            }
            self.queue.pop();
            self.now_ms = time_ms;
            let Some(event) = self.events[index].take() else {
                continue;
            };
            self.findings.events += 1;
            self.handle(event);
            for line in std::mem::take(&mut self.meta.trace) {
                self.findings.trace.push(format!("{time_ms} ms {line}"));
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver {
                from,
                to,
                incarnation,
                msg,
            } => self.deliver(from, to, incarnation, msg),
            Event::Tick(host) => {
                if self.hosts[host].phase == Phase::Down {
                    return;
                }
                if self.paused_until[host] > self.now_ms {
                    let resume = self.paused_until[host];
                    self.at(resume, Event::Tick(host));
                    return;
                }
                let mut out = Vec::new();
                let result = self.hosts[host].tick(self.now_ms, &mut out);
                self.apply(host, out, result);
                self.after(TICK_MS, Event::Tick(host));
            }
            Event::Sync { host, incarnation } => {
                if self.hosts[host].incarnation != incarnation {
                    return;
                }
                if self.paused_until[host] > self.now_ms {
                    let resume = self.paused_until[host];
                    self.at(resume, Event::Sync { host, incarnation });
                    return;
                }
                let mut out = Vec::new();
                let result = self.hosts[host].synced(self.now_ms, &mut out);
                self.apply(host, out, result);
            }
            Event::Control => {
                if self.meta.available {
                    let ids: Vec<String> = self.hosts.iter().map(|h| h.id.clone()).collect();
                    self.meta.control(&ids, self.identity, self.now_ms);
                    self.client_leader = self.meta.state.as_ref().and_then(|(s, _)| {
                        s.leader
                            .as_deref()
                            .and_then(|l| l.strip_prefix('h')?.parse().ok())
                    });
                }
                self.after(CONTROL_EVERY_MS, Event::Control);
            }
            Event::Client => {
                self.client_sends();
                self.after(CLIENT_EVERY_MS, Event::Client);
            }
            Event::ClientTimeout(op) => self.complete(op, SendOutcome::Unknown),
            Event::Fault => {
                if self.chaos {
                    self.inject();
                    let pause = self
                        .rng
                        .u64(self.options.fault_every_ms..=self.options.fault_every_ms * 4);
                    self.after(pause, Event::Fault);
                }
            }
            Event::Restart(host) => {
                if self.hosts[host].phase == Phase::Down {
                    self.restart(host);
                }
            }
            Event::Heal { a, b } => {
                self.cut.remove(&(a, b));
            }
            Event::MetaBack => self.meta.available = true,
            Event::Rebuild => self.rebuild(),
            Event::EndChaos => self.heal(),
        }
    }

    fn deliver(&mut self, from: Node, to: Node, incarnation: u64, msg: Msg) {
        match to {
            Node::Host(host) => {
                let target = &self.hosts[host];
                if target.phase == Phase::Down || target.incarnation != incarnation {
                    return;
                }
                if self.paused_until[host] > self.now_ms {
                    let resume = self.paused_until[host];
                    self.at(
                        resume,
                        Event::Deliver {
                            from,
                            to,
                            incarnation,
                            msg,
                        },
                    );
                    return;
                }
                let mut out = Vec::new();
                let result = self.hosts[host].receive(from, msg, self.now_ms, &mut out);
                self.apply(host, out, result);
            }
            Node::Meta => self.meta_receive(from, msg),
            Node::Client => {
                if let Msg::Produced { op, outcome } = msg {
                    self.complete(op, outcome);
                }
            }
        }
    }

    fn meta_receive(&mut self, from: Node, msg: Msg) {
        let Node::Host(host) = from else { return };
        if !self.meta.available {
            return;
        }
        let id = self.hosts[host].id.clone();
        let reply = match msg {
            // The host checks the identity before it leaves in-sync sets or registers
            // (the store answers, the host decides): modelled here in one step.
            Msg::Join { damaged } => {
                if self.serves_here() {
                    self.meta.join(&id, damaged);
                }
                Msg::Joined {
                    identity: self.meta.identity,
                }
            }
            Msg::Renew { sent_at_ms } => {
                if !self.serves_here() {
                    return;
                }
                self.meta.renew(&id, self.now_ms);
                Msg::Renewed { sent_at_ms }
            }
            Msg::Poll => self.view(),
            Msg::Report { report } => {
                self.meta.report(&id, report);
                return;
            }
            Msg::Propose { revision, state } => {
                if self.meta.compare_and_swap(revision, state) {
                    self.findings
                        .trace
                        .push(format!("{} ms {id}: in-sync proposal taken", self.now_ms));
                }
                self.view()
            }
            _ => return,
        };
        self.send(Node::Meta, Node::Host(host), reply);
    }

    /// Whether a host of this cluster works on the store as it is now.
    fn serves_here(&self) -> bool {
        !matches!(
            identity::check(Some(self.identity), self.meta.identity),
            IdentityCheck::Refuse { .. }
        )
    }

    fn view(&self) -> Msg {
        Msg::View {
            state: self.meta.state.clone(),
            identity: self.meta.identity,
        }
    }

    /// Carries out what a host asked for; a host error is a finding.
    fn apply(&mut self, host: usize, out: Vec<Out>, result: Result<(), HostError>) {
        self.drain_trace(host);
        for item in out {
            match item {
                Out::Send { to, msg } => self.send(Node::Host(host), to, msg),
                Out::SyncLater { after_ms } => {
                    let incarnation = self.hosts[host].incarnation;
                    self.after(after_ms, Event::Sync { host, incarnation });
                }
                Out::Led { epoch } => {
                    let id = self.hosts[host].id.clone();
                    if let Some(other) = self.leaders.insert(epoch, id.clone())
                        && other != id
                    {
                        self.findings.violations.push(format!(
                            "{} ms: epoch {epoch} led by both {other} and {id}",
                            self.now_ms
                        ));
                    }
                }
            }
        }
        if let Err(HostError(err)) = result {
            self.findings.violations.push(format!(
                "{} ms: {}: {err}",
                self.now_ms, self.hosts[host].id
            ));
            self.hosts[host].crash();
            self.after(100, Event::Restart(host));
        }
    }

    /// Puts a message on the network: dropped on a cut link, else delayed.
    fn send(&mut self, from: Node, to: Node, msg: Msg) {
        if self.cut.contains(&link(from, to)) {
            return;
        }
        let delay = if self.rng.u8(0..20) == 0 {
            self.rng.u64(30..150)
        } else {
            self.rng.u64(1..8)
        };
        let incarnation = match to {
            Node::Host(host) => self.hosts[host].incarnation,
            Node::Meta | Node::Client => 0,
        };
        self.after(
            delay,
            Event::Deliver {
                from,
                to,
                incarnation,
                msg,
            },
        );
    }

    fn drain_trace(&mut self, host: usize) {
        let id = self.hosts[host].id.clone();
        for line in std::mem::take(&mut self.hosts[host].trace) {
            self.findings
                .trace
                .push(format!("{} ms {id}: {line}", self.now_ms));
        }
    }

    fn restart(&mut self, host: usize) {
        let started = self.hosts[host].start();
        self.drain_trace(host);
        match started {
            Ok(()) => {
                let tick = self.rng.u64(0..TICK_MS);
                self.after(tick, Event::Tick(host));
            }
            Err(HostError(err)) => {
                self.findings.violations.push(format!(
                    "{} ms: {} cannot start: {err}",
                    self.now_ms, self.hosts[host].id
                ));
            }
        }
    }

    fn down_count(&self) -> usize {
        self.hosts.iter().filter(|h| h.phase == Phase::Down).count()
    }

    /// One random fault.
    fn inject(&mut self) {
        let host = self.rng.usize(0..self.hosts.len());
        let faults = self.options.faults;
        match self.rng.u8(0..8) {
            0 | 1
                if faults.crashes
                    && self.down_count() < 2
                    && self.hosts[host].phase != Phase::Down =>
            {
                let power = faults.power_loss && self.rng.bool();
                self.crash(host, power);
            }
            2 if faults.bit_flips && self.flips < self.options.max_flips => self.damage(),
            3 if faults.network => {
                let nodes = self.nodes();
                let a = nodes[self.rng.usize(0..nodes.len())];
                let b = nodes[self.rng.usize(0..nodes.len())];
                if a != b {
                    let duration = self.rng.u64(100..1_000);
                    self.fault(format!("cut {a:?} from {b:?} for {duration} ms"));
                    self.cut.insert(link(a, b));
                    let (a, b) = link(a, b);
                    self.after(duration, Event::Heal { a, b });
                }
            }
            4 if faults.pauses => {
                let duration = self.rng.u64(100..1_500);
                self.fault(format!("pause {} for {duration} ms", self.hosts[host].id));
                self.paused_until[host] = self.paused_until[host].max(self.now_ms + duration);
            }
            5 if faults.meta_outage && self.meta.available => {
                let duration = self.rng.u64(100..1_500);
                self.fault(format!("metadata store unavailable for {duration} ms"));
                self.meta.available = false;
                self.after(duration, Event::MetaBack);
            }
            6 if faults.meta_loss && !self.wiped && self.rng.u8(0..4) == 0 => {
                self.fault("metadata store lost everything".into());
                self.meta.wipe();
                self.wiped = true;
                let delay = self.rng.u64(200..1_000);
                self.after(delay, Event::Rebuild);
            }
            _ => {}
        }
    }

    fn nodes(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = (0..self.hosts.len()).map(Node::Host).collect();
        nodes.push(Node::Meta);
        nodes
    }

    /// Kills a host's process (with `power` its unsynced writes are lost too) and
    /// schedules its restart.
    fn crash(&mut self, host: usize, power: bool) {
        self.hosts[host].crash();
        let mut what = format!("kill {}", self.hosts[host].id);
        if power {
            let dir = self.hosts[host].dir().to_path_buf();
            match self.hosts[host].ledger().lose_unsynced(&dir, &mut self.rng) {
                Ok(bytes) => {
                    what.push_str(&format!(" with power loss ({bytes} unsynced bytes lost)"))
                }
                Err(err) => what.push_str(&format!(" with power loss (failed: {err})")),
            }
        }
        self.fault(what);
        let delay = self.rng.u64(50..800);
        self.after(delay, Event::Restart(host));
    }

    /// Damages one replica's disk (always the same host in a run, so a good copy
    /// remains): stopped first, a bit flipped, restarted later.
    fn damage(&mut self) {
        let host = self.damage_host;
        if self.hosts[host].phase != Phase::Down {
            if self.down_count() >= 2 {
                return;
            }
            self.crash(host, false);
        }
        let dir = self.hosts[host].dir().to_path_buf();
        match flip_bit(&dir, &mut self.rng) {
            Ok(Some(what)) => {
                self.flips += 1;
                self.fault(format!("{}: {what}", self.hosts[host].id));
            }
            Ok(None) => {}
            Err(err) => self.fault(format!("bit flip failed: {err}")),
        }
    }

    /// `ferry-broker metadata rebuild`, as the operator runs it: every host stopped,
    /// each reports its log, the state and identity go back, the hosts start again.
    fn rebuild(&mut self) {
        self.meta.available = true;
        let mut reports = Vec::new();
        for host in 0..self.hosts.len() {
            self.hosts[host].crash();
            let dir = self.hosts[host].dir().to_path_buf();
            match Log::open(&dir, ferry_storage::LogConfig::default()) {
                Ok(log) => {
                    let epoch = log.latest_epoch().ok().flatten().unwrap_or(0);
                    reports.push((
                        self.hosts[host].id.clone(),
                        ReplicaReport {
                            epoch,
                            ends: vec![log.end_offset()],
                            whole: log.lost_ranges().is_ok_and(|lost| lost.is_empty()),
                            answering_epoch: 0,
                        },
                    ));
                    let _ = log.close();
                }
                Err(err) => self.findings.violations.push(format!(
                    "{} ms: rebuild cannot read {}: {err}",
                    self.now_ms,
                    dir.display()
                )),
            }
        }
        // Leaders before the loss are all stopped now; epochs restart above every epoch
        // the logs hold.
        self.leaders.clear();
        let state = rebuilt_state(None, &reports);
        self.fault(format!("metadata rebuilt from the hosts: {state:?}"));
        self.meta.rebuild(self.identity, state);
        for host in 0..self.hosts.len() {
            self.after(10, Event::Restart(host));
        }
    }

    /// The end of the faults: links, the store and paused hosts come back, stopped
    /// hosts start; the cluster settles before the final read.
    fn heal(&mut self) {
        self.chaos = false;
        self.fault("heal everything".into());
        self.cut.clear();
        self.meta.available = true;
        for until in &mut self.paused_until {
            *until = (*until).min(self.now_ms);
        }
        if self.wiped && self.meta.identity.is_none() {
            self.rebuild();
        }
        for host in 0..self.hosts.len() {
            if self.hosts[host].phase == Phase::Down {
                self.after(1, Event::Restart(host));
            }
        }
    }

    fn client_sends(&mut self) {
        if !self.chaos {
            return;
        }
        for producer in 0..PRODUCERS {
            if self.in_flight.contains_key(&producer) {
                continue;
            }
            let host = self
                .client_leader
                .unwrap_or_else(|| self.rng.usize(0..self.hosts.len()));
            let op = self.findings.history.sends.len() as u64;
            let value = format!("v{}", self.next_value);
            self.next_value += 1;
            self.findings.history.sends.push(SendOp {
                id: op,
                producer,
                partition: 0,
                value: value.clone(),
                invoke_us: self.now_ms * 1_000,
                complete_us: None,
                outcome: SendOutcome::Pending,
            });
            self.in_flight.insert(producer, op);
            self.send(Node::Client, Node::Host(host), Msg::Produce { op, value });
            self.after(CLIENT_TIMEOUT_MS, Event::ClientTimeout(op));
        }
    }

    /// Records the first outcome of `op`; later answers change nothing.
    fn complete(&mut self, op: u64, outcome: SendOutcome) {
        let Some(send) = usize::try_from(op)
            .ok()
            .and_then(|i| self.findings.history.sends.get_mut(i))
        else {
            return;
        };
        if send.outcome != SendOutcome::Pending {
            return;
        }
        send.outcome = outcome;
        send.complete_us = Some(self.now_ms * 1_000);
        self.in_flight.remove(&send.producer);
        if !matches!(outcome, SendOutcome::Ok { .. }) {
            // Refused or unknown: look the leader up again.
            self.client_leader = None;
        }
    }

    /// The final read from the leader, below its high watermark, and the replicas'
    /// agreement below it. `false` when the read should be tried again later: it met
    /// a lost range on a leader with whole copies in sync, which steps down (unless
    /// this is the `last` try).
    fn finish(&mut self, last: bool) -> bool {
        self.findings.end_state.clear();
        self.findings
            .end_state
            .push(format!("state: {:?}", self.meta.state));
        for host in &self.hosts {
            let log = host.log.as_ref().map(|log| {
                format!(
                    "log {}..{} lost {:?} epochs {:?}",
                    log.start_offset(),
                    log.end_offset(),
                    log.lost_ranges().unwrap_or_default(),
                    log.epoch_history().unwrap_or_default()
                )
            });
            self.findings.end_state.push(format!(
                "{}: {:?} leading {:?} hw {} {}",
                host.id,
                host.phase,
                host.leading(),
                host.high_watermark(),
                log.unwrap_or_default()
            ));
        }
        let leader = self
            .meta
            .state
            .as_ref()
            .and_then(|(s, _)| s.leader.clone().map(|l| (l, s.leader_epoch, s.isr.clone())));
        let Some((leader, epoch, isr)) = leader else {
            if last {
                self.findings
                    .violations
                    .push("no leader once every fault healed".into());
            }
            return last;
        };
        let Some(index) = self.hosts.iter().position(|h| h.id == leader) else {
            return true;
        };
        if self.hosts[index].leading() != Some(epoch) {
            if last {
                self.findings.violations.push(format!(
                    "{leader} is the leader of epoch {epoch} but does not lead once healed"
                ));
            }
            return last;
        }
        let high_watermark = self.hosts[index].high_watermark();
        let Some((reads, met_lost)) = self.read(index, high_watermark) else {
            return true;
        };
        self.findings.trace.push(format!(
            "{} ms final read from {leader} below {high_watermark}: {} records, met a lost range: {met_lost}, lost ranges now {:?}",
            self.now_ms,
            reads.len(),
            self.hosts[index].log.as_ref().map(|l| l.lost_ranges().unwrap_or_default())
        ));
        if met_lost && !last && self.hosts[index].leads_with_what_it_lost_in_sync() {
            return false;
        }
        for member in &isr {
            let Some(other) = self.hosts.iter().position(|h| h.id == *member) else {
                continue;
            };
            if other == index {
                continue;
            }
            let Some((theirs, _)) = self.read(other, high_watermark) else {
                continue;
            };
            // A lost range (damage confined by a read) holds no record: a replica with
            // one repairs it from the leader. A different record at the same offset is
            // divergence.
            let ours: BTreeMap<u64, &str> =
                reads.iter().map(|r| (r.offset, r.value.as_str())).collect();
            if let Some(conflict) = theirs
                .iter()
                .find(|r| ours.get(&r.offset).is_some_and(|v| *v != r.value))
            {
                self.findings.violations.push(format!(
                    "in-sync replica {member} holds {:?} at offset {} where leader {leader} holds {:?} (high watermark {high_watermark})",
                    conflict.value,
                    conflict.offset,
                    ours.get(&conflict.offset)
                ));
            }
        }
        self.findings.history.reads = reads;
        true
    }

    /// Every record of `host`'s log below `limit` (lost ranges hold none), and whether
    /// it met a lost range.
    fn read(&mut self, host: usize, limit: u64) -> Option<(Vec<ReadOp>, bool)> {
        let mut met_lost = false;
        let log = self.hosts[host].log.as_ref()?;
        let mut reads = Vec::new();
        let mut offset = log.start_offset();
        let mut rounds = 0;
        while offset < limit && rounds < 1_000_000 {
            rounds += 1;
            let read = match log.read(offset, 1 << 20, limit) {
                Ok(read) => read,
                Err(err) => {
                    self.findings.violations.push(format!(
                        "final read of {} at {offset}: {err}",
                        self.hosts[host].id
                    ));
                    return None;
                }
            };
            for batch in Batches::new(&read.bytes).flatten() {
                met_lost |= batch.header.is_lost_range();
                for record in batch.records().flatten() {
                    reads.push(ReadOp {
                        partition: 0,
                        offset: record.offset,
                        value: String::from_utf8_lossy(record.value).into_owned(),
                    });
                }
            }
            if read.next_offset <= offset {
                break;
            }
            offset = read.next_offset;
        }
        Some((reads, met_lost))
    }
}

/// A link as an unordered pair.
fn link(a: Node, b: Node) -> (Node, Node) {
    if a <= b { (a, b) } else { (b, a) }
}

/// The faults a run may inject.
impl Faults {
    /// Every kind of fault.
    pub fn all() -> Self {
        Self {
            crashes: true,
            power_loss: true,
            bit_flips: true,
            network: true,
            pauses: true,
            meta_outage: true,
            meta_loss: true,
        }
    }
}
