//! A network cut against real processes: three hosts, each in its own network
//! namespace, serve a `sync` topic with three replicas per partition while
//! producers write all the time; the host leading the most partitions is cut off
//! from etcd and the other two hosts for 30 s, then the cut heals.
//!
//! - **The minority acknowledges nothing.** A client on the cut host's side (over
//!   the side door, which the cut leaves open) keeps producing to the partitions it
//!   led: nothing it sends later than a lease TTL after the cut is acknowledged,
//!   and the host does answer it (with refusals), so that is not mere silence. No
//!   producer send addressed to the cut host after the cut is ever acknowledged,
//!   and no value sent to the cut host after the cut — by either — is in the final
//!   log: it could only be stored by the cut host alone, which must truncate it.
//! - **The majority keeps serving.** etcd drops the cut host's registration, every
//!   partition it led gets a new leader, and the new leaders acknowledge sends in
//!   both halves of the rest of the cut.
//! - **All converge after the heal.** The cut host registers again and rejoins every
//!   in-sync set. Then the other two hosts are killed, so it leads every partition
//!   alone: its log — what it kept of its own writes plus what it caught up on —
//!   must extend what the majority's leaders served, and the history checker judges
//!   that log against every send (nothing acknowledged lost, nothing duplicated,
//!   no refused send visible, order kept).
//! - Throughout, a sampler reads partition states: no epoch goes down, no epoch has
//!   two leaders, and the cut host never leads again (no election needs it).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::load::{self, Load, LoadSpec};
use common::rpc::{self, error_detail, record_outcome, show, within};
use common::timeline::EpochSampler;
use common::{FORM_DEADLINE, PartitionId, read_view, start_formed, wait_for_view};
use ferry_e2e::history::{ReadOp, SendOutcome};
use ferry_e2e::{CheckOptions, ClusterOptions, History, Network, check, netns};
use ferry_proto::v1 as pb;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

const LEASE_TTL_MS: u64 = 2_000;
/// The deadline: a host cut off acknowledges nothing once its lease is gone.
const LEASE_TTL: Duration = Duration::from_millis(LEASE_TTL_MS);
/// The cut host's replicas stay where they are: it must come back to them.
const HOST_GRACE_MS: u64 = 600_000;
/// The cut host leaves the in-sync sets it follows in this long, so `sync` writes
/// to the partitions it does not lead go on with the other two replicas.
const MAX_LAG_MS: u64 = 3_000;
/// How long the cut lasts (the 30 s).
const CUT: Duration = Duration::from_secs(30);
const TOPIC: &str = "ledger";
/// Four partitions on three hosts: one host leads two, and is the one cut off.
const PARTITIONS: u32 = 4;
const PRODUCERS: u32 = 4;
/// The side-door client's producer id in the history.
const SIDE_PRODUCER: u32 = PRODUCERS;
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
const LOAD: LoadSpec = LoadSpec {
    topic: TOPIC,
    partitions: PARTITIONS,
    producers: PRODUCERS,
    send_timeout: SEND_TIMEOUT,
};
/// Acknowledged sends before the cut, and after the heal.
const SENDS_PER_PHASE: u64 = 200;
/// Pause between the starts of side-door sends: short, so some land between the cut
/// and the cut host's lease deadline (≥ 0.9 s apart with a 2 s TTL), which it
/// stores alone and must later truncate.
const SIDE_PAUSE: Duration = Duration::from_millis(50);
/// Generous deadlines: these are correctness checks, not timing checks.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(20);
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);
const PHASE_DEADLINE: Duration = Duration::from_secs(60);
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

fn ids() -> Vec<PartitionId> {
    LOAD.partitions()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_acknowledges_nothing_while_the_majority_serves_and_all_converge() {
    if !netns::available_or_skip("network_cut") {
        return;
    }
    let (mut cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        extra_args: vec![
            "--host-grace-ms".to_owned(),
            HOST_GRACE_MS.to_string(),
            "--replica-max-lag-ms".to_owned(),
            MAX_LAG_MS.to_string(),
        ],
        network: Network::Namespaces,
        ..ClusterOptions::default()
    })
    .await;
    let name = cluster.name().to_owned();
    let channels = rpc::channels(&cluster);
    rpc::create_replicated_topic(
        &channels["h0"],
        TOPIC,
        PARTITIONS,
        3,
        pb::ReplicationMode::Sync,
    )
    .await;
    wait_for_view(
        &mut etcd,
        &name,
        FORM_DEADLINE,
        "every partition led with three in-sync replicas",
        |v| v.all_led_in_sync(&ids(), 3),
    )
    .await;
    let sampler = EpochSampler::start(cluster.etcd_endpoint(), name.clone(), SAMPLE_EVERY);
    let history = History::new();
    let load = Load::start(
        &LOAD,
        cluster.etcd_endpoint(),
        name.clone(),
        history.clone(),
    );
    load.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE, "before the cut")
        .await;

    // 1. The cut. A client on the cut host's side has been producing to what it
    //    leads, and was acknowledged, before.
    let view = read_view(&mut etcd, &name).await.expect("view");
    let victim = view.busiest_leader(&ids()).expect("some leader");
    let led = view.led_by(&ids(), &victim);
    // What it leads at the cut it keeps in etcd until it is replaced; leading again
    // would take a newer epoch.
    let epochs_at_cut: BTreeMap<PartitionId, u64> = view
        .partitions
        .iter()
        .map(|(id, state)| (id.clone(), state.leader_epoch))
        .collect();
    eprintln!("cutting {victim}, which leads {led:?}");
    let side = SideClient::start(&cluster.side_door_url(&victim), &led, history.clone());
    side.wait_for_an_ack().await;
    let acked_before = load.acked_by().await;
    let cut_sampled_at = sampler.elapsed();
    cluster.cut(&victim);
    let cut_at = Instant::now();
    // Wall-clock times, to line the test up with the hosts' logs.
    eprintln!("cut {victim} at {} ms since the epoch", rpc::now_ms());
    // Every send invoked from here on was invoked after the cut.
    let first_op_after_cut = history.snapshot().sends.len() as u64;

    // 2. The majority: the cut host's lease expires, its partitions move, and the
    //    new leaders acknowledge sends for the rest of the cut.
    let failed_over = wait_for_view(
        &mut etcd,
        &name,
        FAILOVER_DEADLINE,
        "the cut host unregistered and its partitions led by others",
        |v| {
            !v.has_host(&victim)
                && led
                    .iter()
                    .all(|id| v.leader(id).is_some_and(|leader| leader != victim))
        },
    )
    .await;
    let failover = cut_at.elapsed();
    let new_leaders: BTreeSet<String> = led
        .iter()
        .filter_map(|id| failed_over.leader(id).map(str::to_owned))
        .collect();
    let rest_of_cut = CUT.saturating_sub(cut_at.elapsed());
    let mut acks_in_halves = Vec::new();
    for _ in 0..2 {
        let before = load.acked_by().await;
        tokio::time::sleep(rest_of_cut / 2).await;
        let after = load.acked_by().await;
        acks_in_halves.push(acks_by_others(&after, &victim) - acks_by_others(&before, &victim));
    }
    let acked_during = load.acked_by().await;
    for leader in &new_leaders {
        let gained = count(&acked_during, leader) - count(&acked_before, leader);
        assert!(
            gained > 0,
            "new leader {leader} acknowledged nothing during the cut of {victim}"
        );
    }
    assert!(
        acks_in_halves.iter().all(|acks| *acks > 0),
        "the majority stopped acknowledging during the cut: {acks_in_halves:?} \
         acknowledged in each half of the cut after the failover"
    );

    // 3. The heal: the cut host registers again and rejoins every in-sync set; the
    //    producers go on.
    let side_sends = side.stop().await;
    cluster.heal(&victim);
    let healed_at = Instant::now();
    eprintln!("healed {victim} at {} ms since the epoch", rpc::now_ms());
    wait_for_view(
        &mut etcd,
        &name,
        CATCH_UP_DEADLINE,
        "the healed host registered and back in every in-sync set",
        |v| v.has_host(&victim) && v.all_led_in_sync(&ids(), 3),
    )
    .await;
    let rejoined = healed_at.elapsed();
    load.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE, "after the heal")
        .await;
    let targets = load.targets();
    let history = load.stop().await;
    let majority_reads = load::read_back(&mut etcd, &name, &LOAD).await;

    // 4. The healed host alone: the others are killed, it leads everything.
    let others_killed_sampled_at = sampler.elapsed();
    for host in ["h0", "h1", "h2"] {
        if host != victim {
            cluster.host_mut(host).kill();
        }
    }
    wait_for_view(
        &mut etcd,
        &name,
        CATCH_UP_DEADLINE,
        "the healed host leading every partition alone",
        |v| {
            ids().iter().all(|id| {
                v.partition(id).is_some_and(|s| {
                    s.leader.as_deref() == Some(victim.as_str()) && s.isr == [victim.clone()]
                })
            })
        },
    )
    .await;
    let timeline = sampler.stop().await;
    let channel = rpc::channel(cluster.host(&victim));
    let mut own_reads = BTreeMap::new();
    for p in 0..PARTITIONS {
        own_reads.insert(p, load::read_settled(&channel, TOPIC, p, &victim).await);
    }

    // The minority acknowledged nothing.
    let deadline = cut_at + LEASE_TTL;
    let late_acks: Vec<&SideSend> = side_sends
        .iter()
        .filter(|send| send.invoked >= deadline && send.answer.is_ack())
        .collect();
    assert!(
        late_acks.is_empty(),
        "{victim}, cut off, acknowledged side-door sends invoked more than a lease TTL \
         ({LEASE_TTL:?}) after the cut: {late_acks:?}"
    );
    let refused_late = side_sends
        .iter()
        .filter(|send| send.invoked >= deadline && matches!(send.answer, SideAnswer::Refused(_)))
        .count();
    assert!(
        refused_late > 0,
        "{victim} answered none of the side-door sends after its lease deadline (all: \
         {side_sends:?}), so its acknowledging nothing shows nothing"
    );
    // It did store some alone: answered "not confirmed by the replicas" (after the
    // append), sent after the cut, so no other replica can have them.
    let stored_alone_sent = side_sends
        .iter()
        .filter(|send| send.invoked >= cut_at)
        .filter(|send| matches!(&send.answer, SideAnswer::Refused(codes) if codes.ends_with("ReplicationIncomplete")))
        .count();
    assert!(
        stored_alone_sent > 0,
        "no side-door send after the cut was stored by {victim} alone (none answered \
         REPLICATION_INCOMPLETE), so truncation was not exercised: {}",
        serde_json::to_string(&tally(&side_sends, deadline)).expect("answers as JSON")
    );
    let log = history.snapshot();
    let to_victim_after_cut: BTreeSet<u64> = targets
        .iter()
        .filter(|(op, host)| **op >= first_op_after_cut && **host == victim)
        .map(|(op, _)| *op)
        .chain(
            side_sends
                .iter()
                .filter(|send| send.invoked >= cut_at)
                .map(|send| send.op),
        )
        .collect();
    let acked_after_cut: Vec<_> = to_victim_after_cut
        .iter()
        .map(|op| &log.sends[usize::try_from(*op).expect("an op id")])
        .filter(|send| send.producer != SIDE_PRODUCER)
        .filter(|send| matches!(send.outcome, SendOutcome::Ok { .. }))
        .collect();
    assert!(
        acked_after_cut.is_empty(),
        "producer sends addressed to {victim} after the cut were acknowledged: {acked_after_cut:?}"
    );
    // Only the cut host could have stored these, alone; so they are truncated
    // unless it led again — which the timeline rules out below.
    let stored_alone: Vec<&ReadOp> = own_reads
        .values()
        .flatten()
        .filter(|read| {
            to_victim_after_cut
                .iter()
                .any(|op| log.sends[usize::try_from(*op).expect("an op id")].value == read.value)
        })
        .collect();
    assert!(
        stored_alone.is_empty(),
        "values sent to {victim} after it was cut off are in the final log: {stored_alone:?}"
    );
    let violations = timeline.violations();
    assert!(
        violations.is_empty(),
        "epoch violations: {violations:?}\n{}",
        timeline.render()
    );
    let led_again: Vec<String> = timeline
        .samples
        .iter()
        .filter(|sample| sample.at > cut_sampled_at && sample.at < others_killed_sampled_at)
        .filter_map(|sample| sample.states.as_ref().ok())
        .flat_map(|states| states.iter())
        .filter(|(id, leadership)| {
            leadership.leader.as_deref() == Some(victim.as_str())
                && leadership.epoch > epochs_at_cut.get(*id).copied().unwrap_or(0)
        })
        .map(|(id, leadership)| format!("{} {leadership}", common::timeline::name(id)))
        .collect();
    assert!(
        led_again.is_empty(),
        "{victim} led again (in a newer epoch) after the cut, before the others were \
         killed: {led_again:?}"
    );

    // All converged: the healed host's log extends what the majority served.
    for (p, served) in &majority_reads {
        let own = &own_reads[p];
        assert!(
            own.len() >= served.len() && own[..served.len()] == served[..],
            "{TOPIC}/{p}: {victim}'s log ({} records) does not extend the majority's ({})",
            own.len(),
            served.len()
        );
    }
    load::record_reads(&history, &own_reads);
    let verdict = check(
        &history,
        &CheckOptions {
            idempotent_producer: true,
            ..CheckOptions::default()
        },
    );
    let side_answers = tally(&side_sends, deadline);
    println!(
        "{{\"scenario\":\"network-cut\",\"cut\":\"{victim}\",\"failover_ms\":{},\
         \"rejoined_ms\":{},\"acks_during_cut\":{acks_in_halves:?},\"side_answers\":{},\
         \"counts\":{}}}",
        failover.as_millis(),
        rejoined.as_millis(),
        serde_json::to_string(&side_answers).expect("answers as JSON"),
        serde_json::to_string(&verdict.counts).expect("counts as JSON"),
    );
    assert!(verdict.valid, "network cut: {}", verdict.to_json());
}

fn count(acked: &HashMap<String, u64>, host: &str) -> u64 {
    acked.get(host).copied().unwrap_or(0)
}

fn acks_by_others(acked: &HashMap<String, u64>, victim: &str) -> u64 {
    acked
        .iter()
        .filter(|(host, _)| *host != victim)
        .map(|(_, acks)| acks)
        .sum()
}

/// What a side-door send got.
#[derive(Debug, Clone)]
enum SideAnswer {
    /// Acknowledged.
    Acked,
    /// The host answered with an error it explained (an `ErrorDetail`): the gRPC
    /// code and the error code.
    Refused(String),
    /// No answer from the host: a deadline or a transport error.
    NoAnswer(String),
}

impl SideAnswer {
    fn is_ack(&self) -> bool {
        matches!(self, Self::Acked)
    }

    /// What kind of answer it was, to tally them.
    fn kind(&self) -> String {
        match self {
            Self::Acked => "acknowledged".to_owned(),
            Self::Refused(codes) => codes.clone(),
            Self::NoAnswer(why) if why.contains("deadline") => "no answer in time".to_owned(),
            Self::NoAnswer(why) => format!("transport: {why}"),
        }
    }
}

/// How many side-door sends got each kind of answer, invoked before and after the
/// cut host's lease deadline.
fn tally(sends: &[SideSend], deadline: Instant) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for send in sends {
        let when = if send.invoked < deadline {
            "before"
        } else {
            "after"
        };
        *kinds
            .entry(format!("{when} deadline: {}", send.answer.kind()))
            .or_default() += 1;
    }
    kinds
}

/// One side-door send.
#[derive(Debug, Clone)]
struct SideSend {
    invoked: Instant,
    op: u64,
    answer: SideAnswer,
}

/// A client that reaches only the cut host (its side door): sends to the partitions
/// it led, recorded in the history and with when they were invoked.
struct SideClient {
    stop: Arc<AtomicBool>,
    sends: Arc<Mutex<Vec<SideSend>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SideClient {
    fn start(url: &str, partitions: &[PartitionId], history: History) -> Self {
        let channel = Endpoint::from_shared(url.to_owned())
            .expect("a valid URL")
            .connect_timeout(SEND_TIMEOUT)
            .connect_lazy();
        let stop = Arc::new(AtomicBool::new(false));
        let sends = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(side_sends(
            channel,
            partitions.iter().map(|id| id.partition).collect(),
            history,
            Arc::clone(&stop),
            Arc::clone(&sends),
        ));
        Self { stop, sends, task }
    }

    fn sends(&self) -> Vec<SideSend> {
        self.sends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the host acknowledged a side-door send: the door is open.
    async fn wait_for_an_ack(&self) {
        let until = Instant::now() + PHASE_DEADLINE;
        while !self.sends().iter().any(|send| send.answer.is_ack()) {
            assert!(
                Instant::now() < until,
                "no side-door send acknowledged within {PHASE_DEADLINE:?}: {:?}",
                self.sends()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> Vec<SideSend> {
        self.stop.store(true, Ordering::Release);
        let sends = Arc::clone(&self.sends);
        self.task.await.expect("side-door task");
        let sends = sends.lock().unwrap_or_else(PoisonError::into_inner);
        sends.clone()
    }
}

/// Starts a send every [`SIDE_PAUSE`] without waiting for the ones in flight: a
/// send waiting for replicas that the cut keeps away must not hold back the next,
/// or nothing would be sent between the cut and the host's lease deadline.
async fn side_sends(
    channel: Channel,
    partitions: Vec<u32>,
    history: History,
    stop: Arc<AtomicBool>,
    sends: Arc<Mutex<Vec<SideSend>>>,
) {
    let mut in_flight = tokio::task::JoinSet::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Acquire) {
        let p = partitions[n % partitions.len()];
        n += 1;
        in_flight.spawn(side_send(
            channel.clone(),
            p,
            format!("side-{n}"),
            history.clone(),
            Arc::clone(&sends),
        ));
        // Finished sends are reaped as they go, so the set stays at most
        // SEND_TIMEOUT / SIDE_PAUSE long.
        while let Some(done) = in_flight.try_join_next() {
            done.expect("side-door send");
        }
        tokio::time::sleep(SIDE_PAUSE).await;
    }
    while let Some(done) = in_flight.join_next().await {
        done.expect("side-door send");
    }
}

/// One side-door send of `value` to partition `p`, recorded.
async fn side_send(
    channel: Channel,
    p: u32,
    value: String,
    history: History,
    sends: Arc<Mutex<Vec<SideSend>>>,
) {
    let invoked = Instant::now();
    let op = history.record_send_invoke(SIDE_PRODUCER, p, &value);
    let answer = within(SEND_TIMEOUT, rpc::produce(&channel, TOPIC, p, None, &value)).await;
    record_outcome(&history, op, &answer);
    let answer = match answer {
        Ok(_) => SideAnswer::Acked,
        Err(status) => match error_detail(&status) {
            Some(detail) => {
                let code =
                    pb::ErrorCode::try_from(detail.code).unwrap_or(pb::ErrorCode::Unspecified);
                SideAnswer::Refused(format!("{:?} {code:?}", status.code()))
            }
            None => SideAnswer::NoAnswer(show(&status)),
        },
    };
    sends
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(SideSend {
            invoked,
            op,
            answer,
        });
}
