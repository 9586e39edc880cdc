//! Leader fencing against real processes: a leader frozen (SIGSTOP) for longer than
//! its lease loses its partition — etcd shows it without a leader, one epoch up, and
//! the other hosts refuse it without a hint — and once it thaws it acknowledges
//! nothing for that partition until etcd shows it leading again in a newer epoch.
//!
//! After the thaw the scenario repeatedly reads the partition's state from etcd
//! (S1), sends one produce to the thawed host (S1 < send < S2) and reads the state
//! again (S2). Every produce the host acknowledged must have S2 naming it leader in
//! an epoch above the one before the pause: an acknowledgement while etcd still
//! shows no leader, or the old epoch, is a fencing violation.
//!
//! Every send is recorded in a [`History`] (refusals as failed sends, timeouts as
//! unknown), the partitions are read back from their leaders at the end, and the
//! checker decides whether what was read is allowed. A sampler checks throughout
//! that no epoch goes down and no epoch has two leaders.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::rpc::{self, channels, not_leader_detail, read_partition, show, within};
use common::timeline::EpochSampler;
use common::{ClusterView, PartitionId, PartitionState, read_partition_state, wait_for_view};
use ferry_e2e::{CheckOptions, Cluster, ClusterOptions, History, check};
use tokio::time::Instant;
use tonic::transport::Channel;

/// A short lease so a frozen leader is noticed in seconds.
const LEASE_TTL_MS: u64 = 2_000;
/// Far beyond the scenario's length: the frozen host's replicas must stay where
/// they are, so that it can lead them again.
const HOST_GRACE_MS: u64 = 600_000;
const TOPIC: &str = "fenced";
const PARTITIONS: u32 = 3;
/// How long the leader stays frozen: three lease TTLs, and at least until etcd
/// shows its partitions leaderless and the other hosts refuse them without a hint.
const PAUSE: Duration = Duration::from_secs(6);
/// Acknowledged stream sends before the freeze.
const STREAM_ACKS_BEFORE_PAUSE: usize = 20;
/// A short client deadline for sends to the host that is (or was) frozen: a frozen
/// host never answers, and the send's outcome is then unknown.
const SEND_DEADLINE: Duration = Duration::from_secs(1);
/// Consecutive acknowledged probes after the thawed host first serves again.
const PROBES_AFTER_SERVING: usize = 5;
/// Generous deadlines: these are correctness checks, not timing checks.
const FORM_DEADLINE: Duration = Duration::from_secs(30);
const PLACEMENT_DEADLINE: Duration = Duration::from_secs(30);
/// How long hosts may take to act on what etcd says.
const ROUTING_DEADLINE: Duration = Duration::from_secs(15);
const STREAM_DEADLINE: Duration = Duration::from_secs(30);
const LEADER_LOSS_DEADLINE: Duration = Duration::from_millis(LEASE_TTL_MS + 15_000);
/// From the thaw until the host leads again and serves.
const RELEAD_DEADLINE: Duration = Duration::from_secs(15);
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
const POLL: Duration = Duration::from_millis(100);
/// Producers in the history: order is checked per producer and partition.
const OTHERS: u32 = 0;
const STREAM: u32 = 1;
const PROBES: u32 = 2;
const ELSEWHERE: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_acknowledges_nothing_until_it_leads_again_in_a_new_epoch() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        extra_args: vec!["--host-grace-ms".to_owned(), HOST_GRACE_MS.to_string()],
        ..ClusterOptions::default()
    });
    let name = cluster.name().to_owned();
    let mut etcd = etcd_client::Client::connect([cluster.etcd_endpoint()], None)
        .await
        .expect("connect to etcd");
    let sampler = EpochSampler::start(cluster.etcd_endpoint(), name.clone(), SAMPLE_EVERY);
    let history = History::new();
    let channels = channels(&cluster);
    let ids: Vec<PartitionId> = (0..PARTITIONS)
        .map(|p| PartitionId::topic(TOPIC, p))
        .collect();

    // 1. A topic whose partitions are spread over the three hosts.
    wait_for_view(
        &mut etcd,
        &name,
        FORM_DEADLINE,
        "all three hosts registered and one of them controller",
        |view| view.hosts.len() == 3 && view.live_controller().is_some(),
    )
    .await;
    rpc::create_topic(&channels["h0"], TOPIC, PARTITIONS).await;
    let placed = wait_for_view(
        &mut etcd,
        &name,
        PLACEMENT_DEADLINE,
        &format!("every partition of {TOPIC} led by a registered host"),
        |view| {
            ids.iter()
                .all(|id| view.leader(id).is_some_and(|leader| view.has_host(leader)))
        },
    )
    .await;
    await_leaders_serve(&channels, &placed, &ids).await;

    // The partition to freeze: one led by a host that is not the controller (so the
    // controller's own failover does not mix in), else partition 0.
    let controller = placed.live_controller().expect("a controller").to_owned();
    let x = ids
        .iter()
        .find(|id| placed.leader(id) != Some(controller.as_str()))
        .unwrap_or(&ids[0])
        .clone();
    let h = placed.leader(&x).expect("led").to_owned();
    let before = placed.partition(&x).expect("placed").clone();
    let orphaned: Vec<PartitionId> = ids
        .iter()
        .filter(|id| placed.leader(id) == Some(h.as_str()))
        .cloned()
        .collect();
    eprintln!(
        "freezing {h} (controller: {controller}), leader of {orphaned:?}; watching {x:?} at epoch {}",
        before.leader_epoch
    );

    // 2. A stream of sends to X through H, and sends to the other partitions.
    let mut sent = 0u64;
    produce_to_others(&channels, &placed, &ids, &h, &history, &mut sent, "before").await;
    let stream = Stream::start(channels[&h].clone(), x.partition, history.clone());
    stream.wait_for_acks(STREAM_ACKS_BEFORE_PAUSE).await;

    sampler
        .wait_for(
            ROUTING_DEADLINE,
            "every partition sampled with the leader it has now",
            |states| {
                ids.iter().all(|id| {
                    states
                        .get(id)
                        .is_some_and(|sampled| sampled.leader.as_deref() == placed.leader(id))
                })
            },
        )
        .await;

    // 3. Freeze H for longer than its lease.
    let pausing = Instant::now();
    tokio::task::block_in_place(|| cluster.host_mut(&h).pause());
    let paused = Instant::now();
    let lost = wait_for_view(
        &mut etcd,
        &name,
        LEADER_LOSS_DEADLINE,
        &format!("frozen {h} gone and its partitions {orphaned:?} without a leader"),
        |view| {
            !view.has_host(&h)
                && orphaned.iter().all(|id| {
                    view.partition(id).is_some_and(|state| {
                        state.leader.is_none()
                            && state.leader_epoch
                                > placed.partition(id).expect("placed").leader_epoch
                    })
                })
        },
    )
    .await;
    eprintln!(
        "etcd shows {orphaned:?} leaderless {:.1?} after the freeze",
        paused.elapsed()
    );
    for id in &ids {
        let was = placed.partition(id).expect("placed");
        let expected = if orphaned.contains(id) {
            // No other in-sync replica: no leader, and an epoch that fences the old one.
            PartitionState {
                leader: None,
                leader_epoch: was.leader_epoch + 1,
                ..was.clone()
            }
        } else {
            was.clone()
        };
        assert_eq!(
            lost.partition(id),
            Some(&expected),
            "{id:?} while {h} is frozen"
        );
    }
    let fenced_epoch = lost.partition(&x).expect("placed").leader_epoch;

    // The other hosts refuse X without a hint; the other partitions keep working.
    refused_elsewhere(&channels, &x, &h, &history, &mut sent).await;
    produce_to_others(&channels, &lost, &ids, &h, &history, &mut sent, "frozen").await;

    if let Some(rest) = PAUSE.checked_sub(paused.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let stream = stream.stop().await;
    stream.assert_around_pause(pausing, paused);
    eprintln!(
        "thawing {h} after {:.1?}; stream: {} sends, {} acknowledged before the freeze, {} unknown",
        paused.elapsed(),
        stream.events.len(),
        stream.acked(),
        stream.unknown()
    );

    // 4. Thaw H and probe it: S1, one produce, S2, until it leads again and serves.
    tokio::task::block_in_place(|| cluster.host_mut(&h).resume());
    let thawed = Instant::now();
    let h_channel = channels[&h].clone();
    let mut probes: Vec<Probe> = Vec::new();
    let mut served_since: Option<usize> = None;
    loop {
        let s1 = state_of(&mut etcd, &name, &x).await;
        sent += 1;
        let value = format!("{TOPIC}/p{}/probe/{sent}", x.partition);
        let op = history.record_send_invoke(PROBES, x.partition, &value);
        let answer = within(
            SEND_DEADLINE,
            rpc::produce(&h_channel, TOPIC, x.partition, None, &value),
        )
        .await;
        rpc::record_outcome(&history, op, &answer);
        let s2 = state_of(&mut etcd, &name, &x).await;
        let probe = Probe {
            at: thawed.elapsed(),
            s1,
            answer: answer.map_err(|status| show(&status)),
            s2,
        };
        let fenced_ok = probe.leads_in_new_epoch(&h, before.leader_epoch);
        let acked = probe.answer.is_ok();
        probes.push(probe);
        if acked && fenced_ok {
            let since = *served_since.get_or_insert(probes.len() - 1);
            if probes.len() - since > PROBES_AFTER_SERVING {
                break;
            }
        } else if served_since.is_some() {
            // Once it serves again it must go on serving: nothing else changes.
            panic!(
                "{h} served {x:?} again, then did not:\n{}",
                render_probes(&probes)
            );
        }
        assert!(
            thawed.elapsed() < RELEAD_DEADLINE,
            "{h} did not lead {x:?} again and serve within {RELEAD_DEADLINE:?} of the thaw:\n{}",
            render_probes(&probes)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let violations: Vec<String> = probes
        .iter()
        .filter(|probe| probe.answer.is_ok() && !probe.leads_in_new_epoch(&h, before.leader_epoch))
        .map(|probe| probe.to_string())
        .collect();
    assert!(
        violations.is_empty(),
        "FENCING VIOLATED: {h} acknowledged produces to {x:?} while etcd did not show it \
         leading in an epoch above {} (the one before the freeze):\n{}\nall probes:\n{}",
        before.leader_epoch,
        violations.join("\n"),
        render_probes(&probes)
    );
    eprintln!("probes after the thaw:\n{}", render_probes(&probes));

    // H leads X again one epoch above the fencing one: it is the only in-sync replica.
    let back = wait_for_view(
        &mut etcd,
        &name,
        ROUTING_DEADLINE,
        &format!("{h} registered again and leading {orphaned:?}"),
        |view| {
            view.has_host(&h)
                && ids
                    .iter()
                    .all(|id| view.leader(id).is_some_and(|leader| view.has_host(leader)))
        },
    )
    .await;
    assert_eq!(
        back.partition(&x),
        Some(&PartitionState {
            leader: Some(h.clone()),
            leader_epoch: fenced_epoch + 1,
            ..before.clone()
        }),
        "{x:?} after {h} came back"
    );

    // 5. Everything acknowledged is there once; nothing refused is.
    await_leaders_serve(&channels, &back, &ids).await;
    for id in &ids {
        let leader = back.leader(id).expect("led");
        let reads = read_partition(&channels[leader], TOPIC, id.partition)
            .await
            .unwrap_or_else(|status| {
                panic!("final read of {id:?} from {leader}: {}", show(&status))
            });
        for read in reads {
            history.record_read(read.partition, read.offset, &read.value);
        }
    }
    let verdict = check(&history, &CheckOptions::default());
    let timeline = sampler.stop().await;
    let epoch_violations = timeline.violations();
    assert!(
        verdict.is_valid() && epoch_violations.is_empty(),
        "verdict: {}\nepoch violations: {epoch_violations:#?}\nepoch timeline:\n{}",
        verdict.to_json(),
        timeline.render()
    );
    eprintln!("epoch timeline:\n{}", timeline.render());
    eprintln!("final verdict: {verdict}");
}

/// Polls every partition's leader with a read-only request until it serves: hosts
/// follow etcd a little behind.
async fn await_leaders_serve(
    channels: &BTreeMap<String, Channel>,
    view: &ClusterView,
    ids: &[PartitionId],
) {
    let until = Instant::now() + ROUTING_DEADLINE;
    for id in ids {
        let leader = view.leader(id).expect("led");
        loop {
            match within(rpc::RPC_TIMEOUT, rpc::probe(&channels[leader], id)).await {
                Ok(()) => break,
                Err(status) => assert!(
                    Instant::now() < until,
                    "{leader} does not serve {id:?}, which etcd says it leads: {}",
                    show(&status)
                ),
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// One acknowledged send to every partition except those `frozen` led in `view`,
/// through its leader.
async fn produce_to_others(
    channels: &BTreeMap<String, Channel>,
    view: &ClusterView,
    ids: &[PartitionId],
    frozen: &str,
    history: &History,
    sent: &mut u64,
    phase: &str,
) {
    for id in ids {
        let Some(leader) = view.leader(id).filter(|leader| *leader != frozen) else {
            continue;
        };
        *sent += 1;
        let value = format!("{TOPIC}/p{}/{phase}/{sent}/via-{leader}", id.partition);
        let op = history.record_send_invoke(OTHERS, id.partition, &value);
        let answer = within(
            rpc::RPC_TIMEOUT,
            rpc::produce(&channels[leader], TOPIC, id.partition, None, &value),
        )
        .await;
        rpc::record_outcome(history, op, &answer);
        if let Err(status) = answer {
            panic!(
                "{leader} leads {id:?} ({phase}, {frozen} frozen or not involved) but did not acknowledge: {}",
                show(&status)
            );
        }
    }
}

/// Sends to `x` through every host but `frozen` until each refuses it with
/// NOT_LEADER and no hint (the partition has no leader); each refusal is a failed
/// send. A host that has not caught up may still name `frozen` as the leader; no
/// host may take the send.
async fn refused_elsewhere(
    channels: &BTreeMap<String, Channel>,
    x: &PartitionId,
    frozen: &str,
    history: &History,
    sent: &mut u64,
) {
    let until = Instant::now() + ROUTING_DEADLINE;
    for (host, channel) in channels.iter().filter(|(host, _)| *host != frozen) {
        loop {
            *sent += 1;
            let value = format!("{TOPIC}/p{}/elsewhere/{sent}/via-{host}", x.partition);
            let op = history.record_send_invoke(ELSEWHERE, x.partition, &value);
            let answer = within(
                rpc::RPC_TIMEOUT,
                rpc::produce(channel, TOPIC, x.partition, None, &value),
            )
            .await;
            rpc::record_outcome(history, op, &answer);
            let detail = match &answer {
                Ok(offset) => {
                    panic!(
                        "{host} acknowledged a produce to {x:?} at {offset}, which it does not lead"
                    )
                }
                Err(status) => {
                    not_leader_detail(status).unwrap_or_else(|why| panic!("{host} on {x:?}: {why}"))
                }
            };
            match detail.leader_hint {
                None => break,
                Some(hint) => assert_eq!(
                    hint.host_id, frozen,
                    "{host} points at a leader of {x:?} that etcd never named: {hint:?}"
                ),
            }
            assert!(
                Instant::now() < until,
                "{host} still names {frozen} as the leader of {x:?} {ROUTING_DEADLINE:?} after etcd showed none"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The state of `id` in etcd, or why it could not be read.
async fn state_of(etcd: &mut etcd_client::Client, cluster: &str, id: &PartitionId) -> StateRead {
    match tokio::time::timeout(ETCD_TIMEOUT, read_partition_state(etcd, cluster, id)).await {
        Ok(Ok(Some((state, revision)))) => StateRead::State(state, revision),
        Ok(Ok(None)) => StateRead::Error("no state".to_owned()),
        Ok(Err(err)) => StateRead::Error(err),
        Err(_) => StateRead::Error(format!("no answer within {ETCD_TIMEOUT:?}")),
    }
}

/// A partition state read from etcd, with the revision that wrote it.
#[derive(Debug, Clone)]
enum StateRead {
    State(PartitionState, i64),
    Error(String),
}

impl std::fmt::Display for StateRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::State(state, revision) => write!(
                f,
                "{}@{} (rev {revision})",
                state.leader.as_deref().unwrap_or("null"),
                state.leader_epoch
            ),
            Self::Error(err) => write!(f, "unread ({err})"),
        }
    }
}

/// One probe after the thaw: etcd before, the produce's answer, etcd after.
struct Probe {
    at: Duration,
    s1: StateRead,
    answer: Result<u64, String>,
    s2: StateRead,
}

impl Probe {
    /// Whether S2 shows `host` leading in an epoch above `old_epoch`.
    fn leads_in_new_epoch(&self, host: &str, old_epoch: u64) -> bool {
        matches!(&self.s2, StateRead::State(state, _)
            if state.leader.as_deref() == Some(host) && state.leader_epoch > old_epoch)
    }
}

impl Probe {
    /// What the probe saw, without its time and offset.
    fn signature(&self) -> String {
        let answer = match &self.answer {
            Ok(_) => "ACKNOWLEDGED",
            Err(status) => status.as_str(),
        };
        format!("S1 {} | {answer} | S2 {}", self.s1, self.s2)
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let answer = match &self.answer {
            Ok(offset) => format!("ACKNOWLEDGED at offset {offset}"),
            Err(status) => format!("not acknowledged: {status}"),
        };
        write!(
            f,
            "+{:.3?} after the thaw: S1 {} | {answer} | S2 {}",
            self.at, self.s1, self.s2
        )
    }
}

/// The probes, runs of alike ones (same states, same kind of answer) as one line.
fn render_probes(probes: &[Probe]) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut run: Vec<&Probe> = Vec::new();
    for probe in probes {
        if run
            .last()
            .is_some_and(|last| last.signature() != probe.signature())
        {
            lines.push(render_run(&run));
            run.clear();
        }
        run.push(probe);
    }
    if !run.is_empty() {
        lines.push(render_run(&run));
    }
    lines.join("\n")
}

fn render_run(run: &[&Probe]) -> String {
    match run {
        [one] => one.to_string(),
        [first, .., last] => format!(
            "+{:.3?}..+{:.3?} after the thaw, {} probes: {}",
            first.at,
            last.at,
            run.len(),
            first.signature()
        ),
        [] => String::new(),
    }
}

/// Sends to one partition through one host, one after another, each with a short
/// deadline, until stopped.
struct Stream {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<StreamEvent>>,
}

/// One stream send: when it was sent and answered, and how.
struct StreamEvent {
    invoked: Instant,
    completed: Instant,
    answer: Result<u64, String>,
    /// Whether the client gave up waiting (the outcome is unknown).
    timed_out: bool,
}

/// What the stream did.
struct StreamLog {
    events: Vec<StreamEvent>,
}

impl Stream {
    fn start(channel: Channel, partition: u32, history: History) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            let acked = Arc::clone(&acked);
            async move {
                let mut events = Vec::new();
                for n in 0u64.. {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let value = format!("{TOPIC}/p{partition}/stream/{n}");
                    let op = history.record_send_invoke(STREAM, partition, &value);
                    let invoked = Instant::now();
                    let answer = within(
                        SEND_DEADLINE,
                        rpc::produce(&channel, TOPIC, partition, None, &value),
                    )
                    .await;
                    rpc::record_outcome(&history, op, &answer);
                    if answer.is_ok() {
                        acked.fetch_add(1, Ordering::AcqRel);
                    }
                    let timed_out = answer
                        .as_ref()
                        .is_err_and(|status| status.code() == tonic::Code::DeadlineExceeded);
                    events.push(StreamEvent {
                        invoked,
                        completed: Instant::now(),
                        answer: answer.map_err(|status| show(&status)),
                        timed_out,
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                events
            }
        });
        Self { stop, acked, task }
    }

    async fn wait_for_acks(&self, count: usize) {
        let until = Instant::now() + STREAM_DEADLINE;
        while self.acked.load(Ordering::Acquire) < count {
            assert!(
                !self.task.is_finished(),
                "the stream ended before {count} acknowledgements"
            );
            assert!(
                Instant::now() < until,
                "fewer than {count} stream sends acknowledged within {STREAM_DEADLINE:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn stop(self) -> StreamLog {
        self.stop.store(true, Ordering::Release);
        StreamLog {
            events: self.task.await.expect("the stream task does not panic"),
        }
    }
}

impl StreamLog {
    fn acked(&self) -> usize {
        self.events.iter().filter(|e| e.answer.is_ok()).count()
    }

    fn unknown(&self) -> usize {
        self.events.iter().filter(|e| e.timed_out).count()
    }

    /// Every send answered before the freeze began was acknowledged; every send
    /// made after the host was frozen timed out (a frozen process answers nothing).
    fn assert_around_pause(&self, pausing: Instant, paused: Instant) {
        for event in &self.events {
            if event.completed < pausing {
                assert!(
                    event.answer.is_ok(),
                    "stream send refused before the freeze: {:?}",
                    event.answer
                );
            }
            if event.invoked > paused {
                assert!(
                    event.timed_out,
                    "a frozen host answered a stream send: {:?}",
                    event.answer
                );
            }
        }
    }
}
