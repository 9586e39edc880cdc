//! An etcd outage against real processes: etcd is stopped for 30 s under a cluster
//! of three hosts serving a topic and a queue.
//!
//! - While etcd is down, every host stops serving what it leads within its lease
//!   (a TTL plus slack after the stop), refusing with a retriable error (UNAVAILABLE,
//!   NOT_LEADER or METADATA_UNAVAILABLE), and from then on nothing acknowledges a
//!   write; no write sent later than a lease TTL after etcd was gone is acknowledged.
//! - Once etcd is back (same data), every partition has one leader again and is
//!   served within 15 s.
//! - Throughout, a sampler reads the partition states every 200 ms: no epoch goes
//!   down, and no epoch has two different leaders.
//!
//! Every send is recorded (refusals as failed sends, timeouts as unknown), the topic
//! is read back from its leaders and judged by the history checker, and the queue is
//! received whole: every acknowledged message once, no refused one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::rpc::{self, channels, client_would_retry, error_detail, read_partition, show, within};
use common::timeline::{self, EpochSampler};
use common::{ClusterView, PartitionId, wait_for_view};
use ferry_e2e::{CheckOptions, Cluster, ClusterOptions, History, check};
use ferry_proto::v1 as pb;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A short lease so hosts notice the outage in seconds.
const LEASE_TTL_MS: u64 = 2_000;
const LEASE_TTL: Duration = Duration::from_millis(LEASE_TTL_MS);
/// Far beyond the scenario's length, so no replica moves.
const HOST_GRACE_MS: u64 = 600_000;
const TOPIC: &str = "outage";
const PARTITIONS: u32 = 3;
const QUEUE: &str = "outage-jobs";
/// How long etcd stays down.
const OUTAGE: Duration = Duration::from_secs(30);
/// Acknowledged sends to each partition and the queue before the outage.
const SENDS_BEFORE: usize = 5;
/// From the stop until every host refuses everything it leads: its lease runs out
/// at most a TTL after etcd is gone; the rest is slack for a loaded machine.
const REFUSAL_DEADLINE: Duration = Duration::from_millis(LEASE_TTL_MS + 5_000);
/// From the restart until every partition is led and served again.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(15);
/// Generous deadlines: these are correctness checks, not timing checks.
const FORM_DEADLINE: Duration = Duration::from_secs(30);
const PLACEMENT_DEADLINE: Duration = Duration::from_secs(30);
const ROUTING_DEADLINE: Duration = Duration::from_secs(15);
/// A client deadline for each data request: hosts run throughout, so one that
/// does not answer in this long is worth reporting (its outcome is unknown).
const SEND_DEADLINE: Duration = Duration::from_secs(3);
const ETCD_TIMEOUT: Duration = Duration::from_secs(2);
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
const POLL: Duration = Duration::from_millis(100);
/// Pause between rounds of sends to every host while etcd is down.
const OUTAGE_ROUND_PAUSE: Duration = Duration::from_millis(500);
/// All topic sends come from the test task, one at a time.
const PRODUCER: u32 = 0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_refuse_while_etcd_is_down_and_serve_again_when_it_returns() {
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
    let ids: Vec<PartitionId> = (0..PARTITIONS)
        .map(|p| PartitionId::topic(TOPIC, p))
        .chain([PartitionId::queue(QUEUE)])
        .collect();
    let mut writer = Writer {
        channels: channels(&cluster),
        history: History::new(),
        queue: QueueLog::default(),
        sent: 0,
    };

    // 1. A topic and a queue, placed and served.
    wait_for_view(
        &mut etcd,
        &name,
        FORM_DEADLINE,
        "all three hosts registered and one of them controller",
        |view| view.hosts.len() == 3 && view.live_controller().is_some(),
    )
    .await;
    rpc::create_topic(&writer.channels["h0"], TOPIC, PARTITIONS).await;
    rpc::create_queue(&writer.channels["h0"], QUEUE).await;
    let placed = wait_for_view(
        &mut etcd,
        &name,
        PLACEMENT_DEADLINE,
        "every partition of the topic and the queue led by a registered host",
        |view| all_led(view, &ids),
    )
    .await;
    await_leaders_serve(&writer.channels, &placed, &ids).await;
    for id in &ids {
        let leader = placed.leader(id).expect("led");
        for _ in 0..SENDS_BEFORE {
            if let Err(status) = writer.write(leader, id, "before").await {
                panic!(
                    "{leader} leads {id:?} but did not acknowledge: {}",
                    show(&status)
                );
            }
        }
    }
    let led: BTreeMap<&str, Vec<&PartitionId>> = ids.iter().fold(BTreeMap::new(), |mut led, id| {
        led.entry(placed.leader(id).expect("led"))
            .or_default()
            .push(id);
        led
    });
    let shown: Vec<String> = led
        .iter()
        .map(|(host, ids)| {
            let names: Vec<String> = ids.iter().map(|id| timeline::name(id)).collect();
            format!("{host} leads {}", names.join(", "))
        })
        .collect();
    eprintln!("before the outage: {}", shown.join("; "));

    sampler
        .wait_for(
            ROUTING_DEADLINE,
            "every partition sampled with the leader it has now",
            |states| {
                ids.iter().all(|id| {
                    states.get(id).is_some_and(|sampled| {
                        sampled.leader.as_deref() == placed.leader(id)
                            && placed.partition(id).map(|state| state.leader_epoch)
                                == Some(sampled.epoch)
                    })
                })
            },
        )
        .await;

    // 2. Stop etcd.
    let stopping = Instant::now();
    tokio::task::block_in_place(|| cluster.etcd_mut().stop());
    let stopped = Instant::now();
    eprintln!(
        "etcd stopped (SIGTERM; exited in {:.1?})",
        stopped - stopping
    );

    // (a) Within a lease TTL (plus slack) every host refuses everything it leads,
    //     reads and writes, with an error a client retries. Until a host first
    //     refuses, it may still serve: its lease may still hold. No write sent more
    //     than a TTL after etcd was gone may be acknowledged: the lease a host
    //     renewed last before that has run out by then, by the host's own clock.
    let mut pending: BTreeSet<(&str, &PartitionId)> = led
        .iter()
        .flat_map(|(host, ids)| ids.iter().map(move |id| (*host, *id)))
        .collect();
    // Per host and partition: writes acknowledged, the last one's send time after
    // the stop, and when the first refusal was sent.
    let mut served_during: BTreeMap<(&str, &PartitionId), (usize, Duration)> = BTreeMap::new();
    let mut refused_at: BTreeMap<(&str, &PartitionId), Duration> = BTreeMap::new();
    let mut last_answer: BTreeMap<(&str, &PartitionId), String> = BTreeMap::new();
    while !pending.is_empty() {
        for (host, id) in pending.clone() {
            let invoked = Instant::now();
            let answer = writer.write(host, id, "outage-a").await;
            match &answer {
                Ok(()) => {
                    assert!(
                        invoked < stopped + LEASE_TTL,
                        "{host} acknowledged a write to {id:?} sent {:.1?} after etcd was gone: \
                         its lease cannot hold that long",
                        invoked - stopped
                    );
                    let served = served_during.entry((host, id)).or_default();
                    *served = (served.0 + 1, invoked - stopped);
                }
                Err(status) if status.code() == Code::DeadlineExceeded => {}
                Err(status) => {
                    retriable_refusal(status, host)
                        .unwrap_or_else(|why| panic!("{host} on a write to {id:?}: {why}"));
                    let read = within(SEND_DEADLINE, rpc::probe(&writer.channels[host], id)).await;
                    match read {
                        Ok(()) => panic!(
                            "{host} refused a write to {id:?} but then served a read of it, \
                             with etcd down"
                        ),
                        Err(status) => retriable_refusal(&status, host)
                            .unwrap_or_else(|why| panic!("{host} on a read of {id:?}: {why}")),
                    };
                    refused_at.insert((host, id), invoked - stopped);
                    pending.remove(&(host, id));
                }
            }
            last_answer.insert(
                (host, id),
                answer.map_or_else(|status| show(&status), |()| "acknowledged".to_owned()),
            );
        }
        assert!(
            pending.is_empty() || stopping.elapsed() < REFUSAL_DEADLINE,
            "{REFUSAL_DEADLINE:?} after etcd stopped, hosts still do not refuse what they lead: \
             {pending:?}; last answers: {last_answer:#?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let report: Vec<String> = refused_at
        .iter()
        .map(|(key, refused)| {
            let (host, id) = key;
            let served = served_during.get(key).map_or_else(
                || "none acknowledged".to_owned(),
                |(count, last)| format!("{count} acknowledged, the last sent +{last:.2?}"),
            );
            let id = timeline::name(id);
            format!("{host} {id}: {served}; refused from +{refused:.2?}")
        })
        .collect();
    eprintln!(
        "(a) every host refuses what it leads (times after etcd exited):\n{}",
        report.join("\n")
    );

    // (b) For the rest of the outage nothing acknowledges a write, on any host, for
    //     any partition; every answer is one a client retries.
    let mut outage_answers: BTreeMap<String, usize> = BTreeMap::new();
    while stopping.elapsed() < OUTAGE {
        for host in writer.channels.keys().cloned().collect::<Vec<_>>() {
            for id in &ids {
                let answer = writer.write(&host, id, "outage-b").await;
                let kind = match &answer {
                    Ok(()) => panic!(
                        "{host} acknowledged a write to {id:?} {:.1?} into the etcd outage, \
                         after every host had refused what it leads",
                        stopped.elapsed()
                    ),
                    Err(status) if status.code() == Code::DeadlineExceeded => {
                        format!("{host}: no answer within {SEND_DEADLINE:?}")
                    }
                    Err(status) => {
                        let detail = retriable_refusal(status, &host)
                            .unwrap_or_else(|why| panic!("{host} on a write to {id:?}: {why}"));
                        let code = pb::ErrorCode::try_from(detail.code)
                            .map_or("unknown code", |code| code.as_str_name());
                        format!("{host}: {:?} {code}", status.code())
                    }
                };
                *outage_answers.entry(kind).or_default() += 1;
            }
        }
        tokio::time::sleep(OUTAGE_ROUND_PAUSE).await;
    }
    eprintln!("(b) answers during the outage: {outage_answers:#?}");

    // 3. etcd comes back with its data.
    tokio::task::block_in_place(|| cluster.etcd_mut().restart());
    let restarted = Instant::now();
    eprintln!("etcd restarted after {:.1?} down", restarted - stopped);
    let mut etcd = etcd_client::Client::connect([cluster.etcd_endpoint()], None)
        .await
        .expect("connect to etcd again");

    // (c) Within 15 s every partition is led by a registered host, which serves it.
    let (recovered, served) = await_served(
        &mut writer,
        &mut etcd,
        &name,
        &ids,
        (restarted, "the restart"),
        "after",
    )
    .await;
    eprintln!("(c) served again after the restart:\n{}", served.join("\n"));

    // The controller seat was held on a lease from before the outage, which no host
    // renews any more: it expires and a controller is elected on a current lease.
    // Sampling goes on meanwhile, and every partition is still served after it.
    let reseated = wait_for_view(
        &mut etcd,
        &name,
        RECOVERY_DEADLINE,
        "a controller elected on the lease its host holds now",
        |view| {
            view.controller.as_ref().is_some_and(|controller| {
                view.hosts
                    .get(&controller.host_id)
                    .is_some_and(|host| host.lease == controller.lease)
            })
        },
    )
    .await;
    let reseated_at = Instant::now();
    eprintln!(
        "controller {} seated on its current lease {:.1?} after the restart",
        reseated.live_controller().unwrap_or("?"),
        restarted.elapsed()
    );
    let (recovered_again, served) = await_served(
        &mut writer,
        &mut etcd,
        &name,
        &ids,
        (reseated_at, "the new controller"),
        "settled",
    )
    .await;
    eprintln!("served after the controller change:\n{}", served.join("\n"));
    for id in &ids {
        let state = |view: &ClusterView| {
            view.partition(id).map(|s| {
                format!(
                    "{}@{}",
                    s.leader.as_deref().unwrap_or("null"),
                    s.leader_epoch
                )
            })
        };
        eprintln!(
            "{}: {:?} before the outage, {:?} after, {:?} settled",
            timeline::name(id),
            state(&placed),
            state(&recovered),
            state(&recovered_again)
        );
    }
    let recovered = recovered_again;

    // Every partition still has its one replica, in sync.
    for id in &ids {
        let (before, after) = (placed.partition(id), recovered.partition(id));
        let (before, after) = (before.expect("placed"), after.expect("placed"));
        assert_eq!(
            (&after.replicas, &after.isr),
            (&before.replicas, &before.isr),
            "{id:?}: placement changed across the outage"
        );
    }

    // 4. The sampled epochs, and everything read back.
    let timeline = sampler.stop().await;
    let epoch_violations = timeline.violations();
    for id in &ids {
        let leader = recovered.leader(id).expect("led");
        if id.kind == "queues" {
            continue;
        }
        let reads = read_partition(&writer.channels[leader], TOPIC, id.partition)
            .await
            .unwrap_or_else(|status| {
                panic!("final read of {id:?} from {leader}: {}", show(&status))
            });
        for read in reads {
            writer
                .history
                .record_read(read.partition, read.offset, &read.value);
        }
    }
    let verdict = check(&writer.history, &CheckOptions::default());
    assert!(
        verdict.is_valid() && epoch_violations.is_empty(),
        "verdict: {}\nepoch violations: {epoch_violations:#?}\nepoch timeline:\n{}",
        verdict.to_json(),
        timeline.render()
    );
    let queue_leader = recovered.leader(&PartitionId::queue(QUEUE)).expect("led");
    let bodies = rpc::receive_all(&writer.channels[queue_leader], QUEUE)
        .await
        .unwrap_or_else(|status| panic!("receive {QUEUE} from {queue_leader}: {}", show(&status)));
    writer.queue.check(&bodies);
    eprintln!("epoch timeline:\n{}", timeline.render());
    eprintln!("final verdict: {verdict}");
    eprintln!(
        "queue: {} acknowledged, {} refused, {} unknown, {} received",
        writer.queue.acked.len(),
        writer.queue.refused.len(),
        writer.queue.unknown.len(),
        bodies.len()
    );
}

/// Every partition in `ids` led by a registered host.
fn all_led(view: &ClusterView, ids: &[PartitionId]) -> bool {
    ids.iter()
        .all(|id| view.leader(id).is_some_and(|leader| view.has_host(leader)))
}

/// Reads etcd until it shows three hosts and every partition led by one of them,
/// then writes to each partition through its leader until each acknowledged one
/// (re-reading etcd between rounds), within [`RECOVERY_DEADLINE`] of `since` (an
/// instant and what happened then). The last view read, and for each partition
/// who served it when.
async fn await_served(
    writer: &mut Writer,
    etcd: &mut etcd_client::Client,
    cluster: &str,
    ids: &[PartitionId],
    (since, event): (Instant, &str),
    phase: &str,
) -> (ClusterView, Vec<String>) {
    let mut served: BTreeMap<&PartitionId, String> = BTreeMap::new();
    let mut last_seen = String::from("nothing read yet");
    loop {
        match tokio::time::timeout(ETCD_TIMEOUT, common::read_view(etcd, cluster)).await {
            Ok(Ok(view)) if view.hosts.len() == 3 && all_led(&view, ids) => {
                for id in ids {
                    if served.contains_key(id) {
                        continue;
                    }
                    let leader = view.leader(id).expect("led");
                    let epoch = view.partition(id).expect("led").leader_epoch;
                    match writer.write(leader, id, phase).await {
                        Ok(()) => {
                            let line = format!(
                                "{}: {leader}@{epoch} served {:.1?} after {event}",
                                timeline::name(id),
                                since.elapsed()
                            );
                            served.insert(id, line);
                        }
                        Err(status) => {
                            last_seen = format!("{leader} on {id:?}: {}", show(&status));
                        }
                    }
                }
                if served.len() == ids.len() {
                    return (view, served.into_values().collect());
                }
            }
            Ok(Ok(view)) => last_seen = format!("{view:#?}"),
            Ok(Err(err)) => last_seen = err,
            Err(_) => last_seen = format!("etcd did not answer within {ETCD_TIMEOUT:?}"),
        }
        assert!(
            since.elapsed() < RECOVERY_DEADLINE,
            "{RECOVERY_DEADLINE:?} after {event}, not every partition is led and served \
             ({phase}); served: {served:#?}; last seen: {last_seen}"
        );
        tokio::time::sleep(POLL).await;
    }
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
            match within(SEND_DEADLINE, rpc::probe(&channels[leader], id)).await {
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

/// The detail of a refusal a client retries, from `host`: UNAVAILABLE with
/// NOT_LEADER or METADATA_UNAVAILABLE, which ferry-client's retry rule accepts, and
/// no hint sending the client back to `host` itself.
fn retriable_refusal(status: &Status, host: &str) -> Result<pb::ErrorDetail, String> {
    let detail =
        error_detail(status).ok_or_else(|| format!("no ErrorDetail in {}", show(status)))?;
    let code = pb::ErrorCode::try_from(detail.code).unwrap_or(pb::ErrorCode::Unspecified);
    if status.code() != Code::Unavailable
        || !matches!(
            code,
            pb::ErrorCode::NotLeader | pb::ErrorCode::MetadataUnavailable
        )
    {
        return Err(format!(
            "expected UNAVAILABLE with NOT_LEADER or METADATA_UNAVAILABLE, got {}",
            show(status)
        ));
    }
    if !client_would_retry(status) {
        return Err(format!("a client would not retry {}", show(status)));
    }
    if let Some(hint) = &detail.leader_hint
        && hint.host_id == host
    {
        return Err(format!("refused with a hint to itself: {}", show(status)));
    }
    Ok(detail)
}

/// Sends to the topic and the queue, each recorded.
struct Writer {
    channels: BTreeMap<String, Channel>,
    /// Topic sends and, at the end, reads.
    history: History,
    queue: QueueLog,
    /// Sends so far, to keep values unique.
    sent: u64,
}

impl Writer {
    /// One produce (to a topic partition) or send (to the queue) through `host`,
    /// recorded: acknowledged, refused with NOT_LEADER (nothing written), or unknown
    /// (a timeout, or any other error, METADATA_UNAVAILABLE included).
    async fn write(&mut self, host: &str, id: &PartitionId, phase: &str) -> Result<(), Status> {
        self.sent += 1;
        let channel = &self.channels[host];
        if id.kind == "queues" {
            let body = format!("{QUEUE}/{phase}/{}/via-{host}", self.sent);
            let answer = within(SEND_DEADLINE, rpc::send(channel, QUEUE, &body)).await;
            match &answer {
                Ok(()) => self.queue.acked.push(body),
                Err(status) if rpc::not_leader_detail(status).is_ok() => {
                    self.queue.refused.push(body);
                }
                Err(_) => self.queue.unknown.push(body),
            }
            answer
        } else {
            let value = format!("{TOPIC}/p{}/{phase}/{}/via-{host}", id.partition, self.sent);
            let op = self
                .history
                .record_send_invoke(PRODUCER, id.partition, &value);
            let answer = within(
                SEND_DEADLINE,
                rpc::produce(channel, TOPIC, id.partition, None, &value),
            )
            .await;
            rpc::record_outcome(&self.history, op, &answer);
            answer.map(drop)
        }
    }
}

/// Queue bodies by what their send was told.
#[derive(Default)]
struct QueueLog {
    acked: Vec<String>,
    refused: Vec<String>,
    unknown: Vec<String>,
}

impl QueueLog {
    /// `received` (the whole queue) holds every acknowledged body once, no refused
    /// one, and nothing never sent; unknown ones may or may not be there.
    fn check(&self, received: &[String]) {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for body in received {
            *counts.entry(body.as_str()).or_default() += 1;
        }
        let twice: Vec<&&str> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(b, _)| b)
            .collect();
        let missing: Vec<&String> = self
            .acked
            .iter()
            .filter(|body| !counts.contains_key(body.as_str()))
            .collect();
        let refused: Vec<&String> = self
            .refused
            .iter()
            .filter(|body| counts.contains_key(body.as_str()))
            .collect();
        let phantoms: Vec<&&str> = counts
            .keys()
            .filter(|body| {
                !self.acked.iter().any(|b| b == *body) && !self.unknown.iter().any(|b| b == *body)
            })
            .collect();
        assert!(
            twice.is_empty() && missing.is_empty() && refused.is_empty() && phantoms.is_empty(),
            "{QUEUE}: delivered twice {twice:?}; acknowledged but missing {missing:?}; \
             refused but delivered {refused:?}; never sent {phantoms:?}"
        );
    }
}
