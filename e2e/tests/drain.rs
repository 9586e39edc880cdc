//! Draining a host against real processes: four hosts, a topic with three replicas
//! per partition (`sync`) under a running producer, and a queue with three replicas
//! holding messages.
//!
//! The host leading the most is asked to leave (its key under
//! `/ferry/clusters/{cluster}/draining/`, what the operator writes before a
//! scale-down). Every partition it held gains a copy on a staying host, its
//! leaderships move, and once the copies are in sync it holds no replica at all. It
//! is then killed, as a scale-down would: writes go on, nothing acknowledged is lost
//! or duplicated (history checked), and every queue message is still there.
//!
//! The hosts are in three zones (two in `a`): every partition spans all three, and
//! still spans every zone left after the drain.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::load::{self, Load, LoadSpec};
use common::rpc::{self, show};
use common::{ClusterView, FORM_DEADLINE, PartitionId, read_view, start_formed, wait_for_view};
use ferry_e2e::gateway::Gateway;
use ferry_e2e::{CheckOptions, ClusterOptions, History, check};
use ferry_proto::v1 as pb;
use ferry_proto::v1::queue_service_client::QueueServiceClient;
use tonic::transport::{Channel, Endpoint};

const LEASE_TTL_MS: u64 = 2_000;
/// Replicas move because the host is draining, not because it is gone.
const HOST_GRACE_MS: u64 = 600_000;
const MAX_LAG_MS: u64 = 3_000;
const TOPIC: &str = "ledger";
const QUEUE: &str = "orders";
const PARTITIONS: u32 = 2;
const MESSAGES: usize = 100;
/// Acknowledged sends between the test's steps.
const SENDS_PER_PHASE: u64 = 300;
const PHASE_DEADLINE: Duration = Duration::from_secs(60);
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
const RPC_TIMEOUT: Duration = Duration::from_secs(8);
const LOAD: LoadSpec = LoadSpec {
    topic: TOPIC,
    partitions: PARTITIONS,
    producers: 3,
    send_timeout: Duration::from_secs(5),
};

/// Every topic partition and the queue.
fn everything() -> Vec<PartitionId> {
    let mut ids = LOAD.partitions();
    ids.push(PartitionId::queue(QUEUE));
    ids
}

fn channel(url: String) -> Channel {
    Endpoint::from_shared(url)
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// The zone of each host, by index (`FERRY_ZONE`).
const ZONES: [&str; 4] = ["a", "a", "b", "c"];

/// Whether every partition has a replica in each zone of a live host.
fn spans_the_zones(view: &ClusterView) -> bool {
    let live: BTreeSet<&str> = view
        .hosts
        .values()
        .filter_map(|h| h.zone.as_deref())
        .collect();
    everything().iter().all(|id| {
        view.partition(id).is_some_and(|s| {
            let zones: BTreeSet<&str> = s
                .replicas
                .iter()
                .filter_map(|h| view.hosts.get(h).and_then(|r| r.zone.as_deref()))
                .collect();
            zones == live
        })
    })
}

/// Whether `host` holds no replica and everything is led with three in-sync copies.
fn drained(view: &ClusterView, host: &str) -> bool {
    view.all_led_in_sync(&everything(), 3)
        && everything().iter().all(|id| {
            view.partition(id)
                .is_some_and(|s| !s.replicas.iter().any(|h| h == host) && s.replicas.len() == 3)
        })
}

async fn send_messages(via: &Channel) -> BTreeSet<String> {
    let mut client = QueueServiceClient::new(via.clone());
    let bodies: BTreeSet<String> = (0..MESSAGES).map(|n| format!("order-{n}")).collect();
    for body in &bodies {
        let request = pb::SendRequest {
            queue: QUEUE.to_owned(),
            messages: vec![pb::SendMessage {
                body: body.clone().into_bytes().into(),
                ..Default::default()
            }],
        };
        tokio::time::timeout(RPC_TIMEOUT, client.send(request))
            .await
            .unwrap_or_else(|_| panic!("send {body}: no answer within {RPC_TIMEOUT:?}"))
            .unwrap_or_else(|status| panic!("send {body}: {}", show(&status)));
    }
    bodies
}

/// Receives (and acks) until `MESSAGES` distinct bodies arrived or the deadline.
async fn receive_all(via: &Channel) -> BTreeSet<String> {
    let mut client = QueueServiceClient::new(via.clone());
    let mut bodies = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + PHASE_DEADLINE;
    while bodies.len() < MESSAGES && tokio::time::Instant::now() < deadline {
        let request = pb::ReceiveRequest {
            queue: QUEUE.to_owned(),
            max_messages: 10,
            wait_ms: Some(500),
            ..Default::default()
        };
        let Ok(Ok(response)) = tokio::time::timeout(RPC_TIMEOUT, client.receive(request)).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let messages = response.into_inner().messages;
        for message in &messages {
            bodies.insert(String::from_utf8(message.body.to_vec()).expect("UTF-8 bodies"));
        }
        let request = pb::AckRequest {
            queue: QUEUE.to_owned(),
            receipts: messages.iter().map(|m| m.receipt.clone()).collect(),
        };
        if !messages.is_empty() {
            let _ = tokio::time::timeout(RPC_TIMEOUT, client.ack(request)).await;
        }
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_host_hands_over_every_replica_and_leaves_without_losing_anything() {
    let (mut cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 4,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        extra_args: vec![
            "--host-grace-ms".to_owned(),
            HOST_GRACE_MS.to_string(),
            "--replica-max-lag-ms".to_owned(),
            MAX_LAG_MS.to_string(),
        ],
        host_env: ZONES
            .iter()
            .enumerate()
            .map(|(host, zone)| (host, "FERRY_ZONE".to_owned(), (*zone).to_owned()))
            .collect(),
        ..ClusterOptions::default()
    })
    .await;
    let name = cluster.name().to_owned();
    let gateway = Gateway::start(&cluster.etcd_endpoint(), "127.0.0.63", &[]);
    let via = channel(gateway.url());
    rpc::create_replicated_topic(
        &rpc::channel(cluster.host("h0")),
        TOPIC,
        PARTITIONS,
        3,
        pb::ReplicationMode::Sync,
    )
    .await;
    rpc::create_replicated_queue(&via, QUEUE, pb::QueueConfig::default()).await;
    wait_for_view(
        &mut etcd,
        &name,
        FORM_DEADLINE,
        "the topic and the queue led with three in-sync replicas",
        |v| v.all_led_in_sync(&everything(), 3),
    )
    .await;
    let placed = read_view(&mut etcd, &name).await.expect("view");
    assert!(
        spans_the_zones(&placed),
        "every partition spans zones a, b and c: {placed:#?}"
    );
    let sent = send_messages(&via).await;
    let load = Load::start(&LOAD, cluster.etcd_endpoint(), name.clone(), History::new());
    load.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE, "before the drain")
        .await;

    // 1. The busiest leader is asked to leave.
    let view = read_view(&mut etcd, &name).await.expect("view");
    let leaving = view.busiest_leader(&everything()).expect("some leader");
    let held: Vec<PartitionId> = everything()
        .into_iter()
        .filter(|id| {
            view.partition(id)
                .is_some_and(|s| s.replicas.contains(&leaving))
        })
        .collect();
    eprintln!("draining {leaving}, which holds {held:?}");
    etcd.put(
        format!("/ferry/clusters/{name}/draining/{leaving}"),
        r#"{"reason":"test"}"#,
        None,
    )
    .await
    .expect("write the drain key");

    // 2. Its replicas move: it holds none, and everything has three in-sync copies.
    let after = wait_for_view(
        &mut etcd,
        &name,
        DRAIN_DEADLINE,
        "the draining host holding no replica, everything else in sync",
        |v| drained(v, &leaving),
    )
    .await;
    for id in everything() {
        let (before, now) = (view.partition(&id), after.partition(&id));
        let (Some(before), Some(now)) = (before, now) else {
            panic!("{id:?} has no state");
        };
        if before.leader.as_deref() == Some(leaving.as_str()) {
            assert!(
                now.leader_epoch > before.leader_epoch,
                "{id:?}: its leadership moved with a new epoch"
            );
        }
    }
    let staying = ClusterView {
        hosts: after
            .hosts
            .iter()
            .filter(|(id, _)| **id != leaving)
            .map(|(id, record)| (id.clone(), record.clone()))
            .collect(),
        ..after.clone()
    };
    assert!(
        spans_the_zones(&staying),
        "every partition spans the zones left: {after:#?}"
    );
    load.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE, "after the drain")
        .await;

    // 3. It goes away, as a scale-down takes its pod: nothing waits for it.
    cluster.host_mut(&leaving).kill();
    load.wait_for_acks(
        SENDS_PER_PHASE,
        PHASE_DEADLINE,
        "with the drained host gone",
    )
    .await;
    let history = load.stop().await;
    load::record_reads(&history, &load::read_back(&mut etcd, &name, &LOAD).await);
    let verdict = check(
        &history,
        &CheckOptions {
            idempotent_producer: true,
            ..CheckOptions::default()
        },
    );
    eprintln!("drain verdict: {}", verdict.to_json());
    assert!(verdict.valid, "{}", verdict.to_json());
    assert!(verdict.counts.acked >= SENDS_PER_PHASE * 3);

    let received = receive_all(&via).await;
    let missing: Vec<&String> = sent.difference(&received).collect();
    assert!(
        missing.is_empty(),
        "queue messages missing after the drain: {missing:?}"
    );
    assert_eq!(received, sent, "nothing but what was sent is delivered");
}
