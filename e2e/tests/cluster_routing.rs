//! Cluster routing against real processes: every host serves only the partitions it
//! leads and refuses the others with NOT_LEADER and a hint naming the leader; when a
//! leader is killed its partitions lose their leader (refused without a hint) while
//! the partitions other hosts lead keep working; restarted with its data, the host
//! leads its partitions again and serves everything it acknowledged before it died.
//!
//! Every send the cluster answers is recorded in a [`History`] (refusals as failed
//! sends, which must never be read); the partitions are read back from their
//! leaders and the checker decides whether what was read is allowed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::rpc::{self, channels, not_leader_detail, probe, read_partition, show};
use common::{ClusterView, PartitionId, PartitionState, read_view, wait_for_view};
use ferry_e2e::history::{HistoryLog, SendOutcome, check_log};
use ferry_e2e::{CheckOptions, Cluster, ClusterOptions, History, Verdict, check};
use ferry_proto::v1 as pb;
use pb::queue_service_client::QueueServiceClient;
use tonic::Status;
use tonic::transport::Channel;

/// A short lease so a dead leader is noticed in seconds.
const LEASE_TTL_MS: u64 = 2_000;
/// Far beyond the scenario's length: the killed host's replicas must stay where
/// they are (not move to a survivor) so that it can lead them again.
const HOST_GRACE_MS: u64 = 600_000;
const TOPIC: &str = "orders";
const PARTITIONS: u32 = 3;
const QUEUE: &str = "jobs";
/// Sends to each leader per phase, besides the one through every host.
const LEADER_SENDS: usize = 4;
/// Generous deadlines: these are correctness checks, not timing checks.
const FORM_DEADLINE: Duration = Duration::from_secs(30);
const PLACEMENT_DEADLINE: Duration = Duration::from_secs(30);
/// How long hosts may take to act on what etcd says.
const ROUTING_DEADLINE: Duration = Duration::from_secs(15);
const LEADER_LOSS_DEADLINE: Duration = Duration::from_millis(LEASE_TTL_MS + 15_000);
const RELEAD_DEADLINE: Duration = Duration::from_secs(15);
const ROUTING_POLL: Duration = Duration::from_millis(100);
/// All sends come from the test task, one at a time: one producer in the history.
const PRODUCER: u32 = 0;

#[tokio::test]
async fn hosts_serve_only_partitions_they_lead_and_a_restarted_leader_keeps_its_data() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        extra_args: vec!["--host-grace-ms".to_owned(), HOST_GRACE_MS.to_string()],
        ..ClusterOptions::default()
    });
    let name = cluster.name().to_owned();
    let etcd = etcd_client::Client::connect([cluster.etcd_endpoint()], None)
        .await
        .expect("connect to etcd");
    let mut scenario = Scenario {
        etcd,
        cluster: name.clone(),
        channels: channels(&cluster),
        history: History::new(),
        queue_acked: Vec::new(),
        queue_refused: Vec::new(),
        sent: 0,
    };
    wait_for_view(
        &mut scenario.etcd,
        &name,
        FORM_DEADLINE,
        "all three hosts registered and one of them controller",
        |view| view.hosts.len() == 3 && view.live_controller().is_some(),
    )
    .await;
    let ids = partition_ids();

    // 1. A topic and a queue created through one host belong to the cluster.
    rpc::create_topic(&scenario.channels["h1"], TOPIC, PARTITIONS).await;
    rpc::create_queue(&scenario.channels["h1"], QUEUE).await;
    for key in [
        format!("/ferry/topics/{TOPIC}"),
        format!("/ferry/queues/{QUEUE}"),
    ] {
        assert_eq!(
            record_cluster(&mut scenario.etcd, &key).await.as_deref(),
            Some(name.as_str()),
            "{key} should name the cluster it was created in"
        );
    }

    // 2. Each partition gets one leader; exactly that host serves it, the others
    //    point at it.
    let placed = wait_for_view(
        &mut scenario.etcd,
        &name,
        PLACEMENT_DEADLINE,
        "every partition of orders and jobs led by a registered host",
        |view| all_led_by_live_hosts(view, &ids),
    )
    .await;
    for id in &ids {
        let state = placed.partition(id).expect("placed");
        let leader = state.leader.as_deref().expect("led");
        assert_eq!(
            (state.replicas.as_slice(), state.isr.as_slice()),
            (
                [leader.to_owned()].as_slice(),
                [leader.to_owned()].as_slice()
            ),
            "replication factor 1: the leader is the one replica and in sync; {id:?}: {state:?}"
        );
        assert_eq!(
            placed.hosts[leader].advertise,
            cluster.host(leader).addr().to_string(),
            "{leader} advertises where it listens"
        );
    }
    scenario.await_routing(&placed, &ids).await;
    scenario.produce_everywhere(&placed, "placed").await;
    scenario.fetch_everywhere(&placed).await;
    scenario.send_everywhere(&placed, "placed").await;
    let verdict = scenario.check_with_reads(&placed).await;
    assert!(
        verdict.is_valid(),
        "before any failure: {}",
        verdict.to_json()
    );

    // 3. Kill the host leading the queue (and, with balanced placement, a topic
    //    partition; else the leader of partition 0).
    let queue_leader = placed
        .leader(&PartitionId::queue(QUEUE))
        .expect("led")
        .to_owned();
    let victim = if (0..PARTITIONS)
        .any(|p| placed.leader(&PartitionId::topic(TOPIC, p)) == Some(queue_leader.as_str()))
    {
        queue_leader
    } else {
        placed
            .leader(&PartitionId::topic(TOPIC, 0))
            .expect("led")
            .to_owned()
    };
    let orphaned: Vec<PartitionId> = ids
        .iter()
        .filter(|id| placed.leader(id) == Some(victim.as_str()))
        .cloned()
        .collect();
    eprintln!("killing {victim}, leader of {orphaned:?}");
    cluster.host_mut(&victim).kill();
    scenario.channels.remove(&victim);
    let lost = wait_for_view(
        &mut scenario.etcd,
        &name,
        LEADER_LOSS_DEADLINE,
        &format!("{victim} gone and its partitions {orphaned:?} without a leader"),
        |view| {
            !view.has_host(&victim)
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
    for id in &ids {
        let before = placed.partition(id).expect("placed");
        let now = lost.partition(id).expect("still placed");
        let expected = if orphaned.contains(id) {
            // No other in-sync replica to elect: no leader, the epoch fences the old
            // one, and the replica stays in sync (it holds everything acknowledged).
            PartitionState {
                leader: None,
                leader_epoch: before.leader_epoch + 1,
                ..before.clone()
            }
        } else {
            before.clone()
        };
        assert_eq!(now, &expected, "{id:?} after {victim} died");
    }
    scenario.await_routing(&lost, &ids).await;
    scenario.produce_everywhere(&lost, "leaderless").await;
    scenario.fetch_everywhere(&lost).await;
    scenario.send_everywhere(&lost, "leaderless").await;

    // 4. The host comes back with its data and leads its partitions again.
    cluster.host_mut(&victim).restart();
    scenario.channels = channels(&cluster);
    let back = wait_for_view(
        &mut scenario.etcd,
        &name,
        RELEAD_DEADLINE,
        &format!("{victim} registered again and {orphaned:?} led again"),
        |view| view.has_host(&victim) && all_led_by_live_hosts(view, &ids),
    )
    .await;
    for id in &ids {
        let before = lost.partition(id).expect("placed");
        let now = back.partition(id).expect("still placed");
        let expected = if orphaned.contains(id) {
            // The only in-sync replica is live again: elected, one epoch up.
            PartitionState {
                leader: Some(victim.clone()),
                leader_epoch: before.leader_epoch + 1,
                ..before.clone()
            }
        } else {
            before.clone()
        };
        assert_eq!(now, &expected, "{id:?} after {victim} came back");
    }
    scenario.await_routing(&back, &ids).await;
    scenario.produce_everywhere(&back, "restarted").await;
    scenario.fetch_everywhere(&back).await;
    scenario.send_everywhere(&back, "restarted").await;

    // 5. Everything acknowledged, before the kill and since, is there exactly once.
    scenario.receive_queue(&back).await;
    for partition in 0..PARTITIONS {
        let leader = &scenario.channels[back
            .leader(&PartitionId::topic(TOPIC, partition))
            .expect("led")];
        let reads = read_partition(leader, TOPIC, partition)
            .await
            .unwrap_or_else(|status| {
                panic!("final read of partition {partition}: {}", show(&status))
            });
        for read in reads {
            scenario
                .history
                .record_read(read.partition, read.offset, &read.value);
        }
    }
    let verdict = check(&scenario.history, &CheckOptions::default());
    assert!(verdict.is_valid(), "final: {}", verdict.to_json());
    let counts = &verdict.counts;
    assert_eq!(
        counts.sends,
        counts.acked + counts.failed,
        "every send answered definitely: {}",
        verdict.to_json()
    );
    eprintln!("final verdict: {verdict}");
}

/// What the scenario has done so far.
struct Scenario {
    /// etcd, to read what the cluster decided.
    etcd: etcd_client::Client,
    /// The cluster's name.
    cluster: String,
    /// One channel per running host, by host id.
    channels: BTreeMap<String, Channel>,
    /// Topic sends (refusals as failed sends) and, at the end, reads.
    history: History,
    /// Queue bodies acknowledged, in send order.
    queue_acked: Vec<String>,
    /// Queue bodies refused.
    queue_refused: Vec<String>,
    /// Sends so far, to keep values unique.
    sent: u64,
}

impl Scenario {
    fn next_value(&mut self, what: &str, phase: &str, host: &str) -> String {
        self.sent += 1;
        format!("{what}/{phase}/{}/via-{host}", self.sent)
    }

    /// What changed in etcd since `expected` was read, if anything did: every
    /// change the scenario expects is awaited before it acts, so any other change
    /// (a host that lost its lease under load, a leader moved) explains a failure.
    async fn unplanned_change(&mut self, expected: &ClusterView) -> Option<String> {
        match read_view(&mut self.etcd, &self.cluster).await {
            Ok(now) if now.hosts == expected.hosts && now.partitions == expected.partitions => None,
            Ok(now) => Some(format!(
                "etcd changed under the scenario (a host lost its lease?): expected {expected:#?}, now {now:#?}"
            )),
            Err(err) => Some(format!("cannot read etcd: {err}")),
        }
    }

    /// Fails the scenario with `why`, and with any unplanned change in etcd.
    async fn fail(&mut self, expected: &ClusterView, why: &str) -> ! {
        let change = self.unplanned_change(expected).await;
        panic!(
            "{why}\n{}",
            change
                .as_deref()
                .unwrap_or("etcd still shows what the step expects")
        );
    }

    /// Polls every host with a read-only request for every partition until each
    /// answers as `view` says it should: hosts follow etcd, a little behind.
    async fn await_routing(&mut self, view: &ClusterView, ids: &[PartitionId]) {
        let until = tokio::time::Instant::now() + ROUTING_DEADLINE;
        loop {
            let mut wrong = Vec::new();
            for (host, channel) in &self.channels {
                for id in ids {
                    let answer = probe(channel, id).await;
                    if let Err(why) = judge(&answer, host, id, view) {
                        wrong.push(why);
                    }
                }
            }
            if wrong.is_empty() {
                return;
            }
            if let Some(change) = self.unplanned_change(view).await {
                panic!(
                    "while waiting for hosts to route as etcd says:\n{}\n{change}",
                    wrong.join("\n")
                );
            }
            if tokio::time::Instant::now() >= until {
                panic!(
                    "hosts did not route as etcd says within {ROUTING_DEADLINE:?}:\n{}\netcd: {view:#?}",
                    wrong.join("\n")
                );
            }
            tokio::time::sleep(ROUTING_POLL).await;
        }
    }

    /// Produces to every partition through every host, once naming the partition
    /// and once by key (only the leader may take either), then more through each
    /// leader.
    async fn produce_everywhere(&mut self, view: &ClusterView, phase: &str) {
        for partition in 0..PARTITIONS {
            let id = PartitionId::topic(TOPIC, partition);
            for (host, channel) in self.channels.clone() {
                for target in [Target::Partition, Target::Key] {
                    let answer = self
                        .produce(&channel, partition, target, phase, &host)
                        .await;
                    if let Err(why) = judge(&answer, &host, &id, view) {
                        self.fail(view, &format!("produce by {target:?}: {why}"))
                            .await;
                    }
                }
            }
            if let Some(leader) = view.leader(&id) {
                let channel = self.channels[leader].clone();
                for _ in 0..LEADER_SENDS {
                    let answer = self
                        .produce(&channel, partition, Target::Partition, phase, leader)
                        .await;
                    if let Err(status) = answer {
                        let why = format!(
                            "produce to {id:?} through its leader {leader}: {}",
                            show(&status)
                        );
                        self.fail(view, &why).await;
                    }
                }
            }
        }
    }

    /// One batch of one record for `partition` through `host`, recorded in the
    /// history.
    async fn produce(
        &mut self,
        channel: &Channel,
        partition: u32,
        target: Target,
        phase: &str,
        host: &str,
    ) -> Result<u64, Status> {
        let value = self.next_value(&format!("{TOPIC}/p{partition}"), phase, host);
        let op = self.history.record_send_invoke(PRODUCER, partition, &value);
        let key = match target {
            Target::Partition => None,
            Target::Key => Some(rpc::key_for(partition, PARTITIONS)),
        };
        let answer = rpc::produce(channel, TOPIC, partition, key.as_deref(), &value).await;
        rpc::record_outcome(&self.history, op, &answer);
        answer
    }

    /// Fetches every partition through every host: the leader returns exactly what
    /// it acknowledged, the others refuse.
    async fn fetch_everywhere(&mut self, view: &ClusterView) {
        for partition in 0..PARTITIONS {
            let id = PartitionId::topic(TOPIC, partition);
            for (host, channel) in self.channels.clone() {
                let answer = read_partition(&channel, TOPIC, partition).await;
                if let Err(why) = judge(&answer, &host, &id, view) {
                    self.fail(view, &format!("fetch: {why}")).await;
                }
                if let Ok(reads) = answer {
                    let read: Vec<(u64, String)> =
                        reads.into_iter().map(|r| (r.offset, r.value)).collect();
                    assert_eq!(
                        read,
                        self.acked(partition),
                        "{host} leads {id:?}: it returns every acknowledged record, nothing else"
                    );
                }
            }
        }
    }

    /// The acknowledged sends to `partition` as (offset, value), by offset.
    fn acked(&self, partition: u32) -> Vec<(u64, String)> {
        let mut acked: Vec<(u64, String)> = self
            .history
            .snapshot()
            .sends
            .into_iter()
            .filter(|send| send.partition == partition)
            .filter_map(|send| match send.outcome {
                SendOutcome::Ok { offset } => Some((offset, send.value)),
                _ => None,
            })
            .collect();
        acked.sort();
        acked
    }

    /// Sends one message to the queue through every host (only its leader may take
    /// it; the others also refuse receives, acks and purges), then more through
    /// the leader, whose count of visible messages must then
    /// match every acknowledged send.
    async fn send_everywhere(&mut self, view: &ClusterView, phase: &str) {
        let id = PartitionId::queue(QUEUE);
        for (host, channel) in self.channels.clone() {
            let answer = self.send(&channel, phase, &host).await;
            if let Err(why) = judge(&answer, &host, &id, view) {
                self.fail(view, &format!("queue send: {why}")).await;
            }
            // The other queue calls, only where they must be refused: on the
            // leader they would take or drop messages.
            if view.leader(&id) != Some(host.as_str()) {
                for call in [QueueCall::Receive, QueueCall::Ack, QueueCall::Purge] {
                    let answer = call.run(&channel).await;
                    if let Err(why) = judge(&answer, &host, &id, view) {
                        self.fail(view, &format!("queue {call:?}: {why}")).await;
                    }
                }
            }
        }
        let Some(leader) = view.leader(&id) else {
            return;
        };
        let channel = self.channels[leader].clone();
        for _ in 0..LEADER_SENDS {
            if let Err(status) = self.send(&channel, phase, leader).await {
                let why = format!(
                    "send to {QUEUE} through its leader {leader}: {}",
                    show(&status)
                );
                self.fail(view, &why).await;
            }
        }
        let visible = rpc::describe_queue(&channel, QUEUE)
            .await
            .unwrap_or_else(|status| panic!("describe {QUEUE} on {leader}: {}", show(&status)))
            .stats
            .map_or(0, |stats| stats.visible);
        assert_eq!(
            visible,
            self.queue_acked.len() as u64,
            "{QUEUE} on its leader {leader} holds every acknowledged message"
        );
    }

    /// One message to the queue through `host`.
    async fn send(&mut self, channel: &Channel, phase: &str, host: &str) -> Result<(), Status> {
        let body = self.next_value(QUEUE, phase, host);
        let answer = rpc::send(channel, QUEUE, &body).await;
        match &answer {
            Ok(()) => self.queue_acked.push(body),
            Err(status) if not_leader_detail(status).is_ok() => self.queue_refused.push(body),
            // Neither acknowledged nor refused: the caller fails the scenario.
            Err(_) => {}
        }
        answer
    }

    /// Receives the whole queue from its leader: every acknowledged message once,
    /// no refused one.
    async fn receive_queue(&self, view: &ClusterView) {
        let leader = view.leader(&PartitionId::queue(QUEUE)).expect("led");
        let mut bodies = rpc::receive_all(&self.channels[leader], QUEUE)
            .await
            .unwrap_or_else(|status| panic!("receive {QUEUE} from {leader}: {}", show(&status)));
        bodies.sort();
        let mut expected = self.queue_acked.clone();
        expected.sort();
        let refused_seen: Vec<&String> = bodies
            .iter()
            .filter(|body| self.queue_refused.contains(body))
            .collect();
        assert!(
            refused_seen.is_empty(),
            "refused messages were delivered: {refused_seen:?}"
        );
        assert_eq!(
            bodies, expected,
            "{QUEUE} delivers every acknowledged message exactly once"
        );
    }

    /// Checks the history with every partition read from its leader now, without
    /// recording those reads (the final read is recorded).
    async fn check_with_reads(&self, view: &ClusterView) -> Verdict {
        let mut log: HistoryLog = self.history.snapshot();
        for partition in 0..PARTITIONS {
            let leader = view
                .leader(&PartitionId::topic(TOPIC, partition))
                .expect("led");
            let reads = read_partition(&self.channels[leader], TOPIC, partition)
                .await
                .unwrap_or_else(|status| {
                    panic!(
                        "read partition {partition} from {leader}: {}",
                        show(&status)
                    )
                });
            log.reads.extend(reads);
        }
        check_log(&log, &CheckOptions::default())
    }
}

/// Every partition of the topic and the queue.
fn partition_ids() -> Vec<PartitionId> {
    (0..PARTITIONS)
        .map(|p| PartitionId::topic(TOPIC, p))
        .chain([PartitionId::queue(QUEUE)])
        .collect()
}

fn all_led_by_live_hosts(view: &ClusterView, ids: &[PartitionId]) -> bool {
    ids.iter()
        .all(|id| view.leader(id).is_some_and(|leader| view.has_host(leader)))
}

/// The `cluster` field of the topic or queue record at `key`.
async fn record_cluster(etcd: &mut etcd_client::Client, key: &str) -> Option<String> {
    let response = etcd.get(key, None).await.expect("read etcd");
    let kv = response.kvs().first()?;
    let record: serde_json::Value = serde_json::from_slice(kv.value())
        .unwrap_or_else(|err| panic!("{key} does not hold JSON: {err}"));
    record.get("cluster")?.as_str().map(str::to_owned)
}

/// Whether `answer` from `host` for `id` is what `view` calls for: served by the
/// leader; refused by everyone else as NOT_LEADER, with a hint naming the leader and
/// its epoch when there is one, without a hint when there is none.
fn judge<T>(
    answer: &Result<T, Status>,
    host: &str,
    id: &PartitionId,
    view: &ClusterView,
) -> Result<(), String> {
    let leader = view.leader(id);
    match answer {
        Ok(_) if leader == Some(host) => Ok(()),
        Ok(_) => Err(format!("{host} served {id:?}, which {leader:?} leads")),
        Err(status) if leader == Some(host) => {
            Err(format!("{host} leads {id:?} but refused: {}", show(status)))
        }
        Err(status) => {
            let detail = not_leader_detail(status)?;
            let expected = expected_hint(view, id);
            if detail.leader_hint == expected {
                Ok(())
            } else {
                Err(format!(
                    "{host} refused {id:?} with hint {:?}; expected {expected:?}",
                    detail.leader_hint
                ))
            }
        }
    }
}

/// The hint a non-leader must give for `id`: the leader's address and epoch as etcd
/// has them, or none while it has no leader.
fn expected_hint(view: &ClusterView, id: &PartitionId) -> Option<pb::LeaderHint> {
    let state = view.partition(id)?;
    let leader = state.leader.as_deref()?;
    let record = view.hosts.get(leader)?;
    Some(pb::LeaderHint {
        topic: id.name.clone(),
        partition: id.partition,
        host_id: leader.to_owned(),
        address: record.advertise.clone(),
        leader_epoch: state.leader_epoch,
    })
}

/// How a produce picks its partition.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The request names it.
    Partition,
    /// The broker hashes the batch's one key, chosen to land on it.
    Key,
}

/// Queue calls besides sends that only the queue's leader may serve.
#[derive(Debug, Clone, Copy)]
enum QueueCall {
    Receive,
    Ack,
    Purge,
}

impl QueueCall {
    async fn run(self, channel: &Channel) -> Result<(), Status> {
        let mut client = QueueServiceClient::new(channel.clone());
        let queue = QUEUE.to_owned();
        match self {
            Self::Receive => client
                .receive(pb::ReceiveRequest {
                    queue,
                    wait_ms: Some(0),
                    ..Default::default()
                })
                .await
                .map(drop),
            Self::Ack => client
                .ack(pb::AckRequest {
                    queue,
                    receipts: vec!["not-a-receipt".to_owned()],
                })
                .await
                .map(drop),
            Self::Purge => client
                .purge_queue(pb::PurgeQueueRequest { name: queue })
                .await
                .map(drop),
        }
    }
}
