//! Queue replication against real processes: a queue with three replicas, `sync`.
//!
//! Producers send and consumers receive and ack through a gateway while the
//! queue's leader is SIGKILLed. A new leader serves within 10 s; no acknowledged
//! send is lost (every one is delivered); no message is delivered again by a
//! receive that began after its ack was acknowledged; nothing is delivered that was
//! never sent. The killed host then comes back and rejoins the in-sync set. Its disk
//! is then wiped: it copies the leader's snapshot (the leader compacts often here)
//! and the logs after it, and rejoins; once the other two are gone it leads alone
//! and holds exactly the messages not acked (acks came through the replicated
//! journal and snapshot, and it rebuilt the state from them).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::rpc::{self, show};
use common::{FORM_DEADLINE, PartitionId, read_view, start_formed, wait_for_view};
use ferry_e2e::ClusterOptions;
use ferry_e2e::gateway::Gateway;
use ferry_proto::v1 as pb;
use ferry_proto::v1::queue_service_client::QueueServiceClient;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

const LEASE_TTL_MS: u64 = 2_000;
/// The killed host's replica stays where it is: it must come back to it.
const HOST_GRACE_MS: u64 = 600_000;
/// A dead follower leaves the in-sync set this soon, so `sync` writes go on.
const MAX_LAG_MS: u64 = 3_000;
const QUEUE: &str = "payments";
const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;
/// Sends acknowledged before the kill, and after a new leader serves.
const SENDS_PER_PHASE: u64 = 200;
/// Short, so messages in flight on the killed leader come back soon.
const VISIBILITY_TIMEOUT_MS: u64 = 3_000;
/// The promise: a new leader serves within 10 s of the kill.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(10);
const PHASE_DEADLINE: Duration = Duration::from_secs(60);
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);
const RPC_TIMEOUT: Duration = Duration::from_secs(8);
/// Messages left unacked (and as many acked) before the returned host is left alone.
const KEPT: usize = 20;

/// What the clients saw, for the verdict.
#[derive(Default)]
struct Record {
    /// Bodies whose send was invoked.
    invoked: BTreeSet<String>,
    /// Bodies whose send was acknowledged, and when that send was invoked.
    sent: BTreeMap<String, Instant>,
    /// Every delivery: body, when its receive was invoked.
    deliveries: Vec<(String, Instant)>,
    /// Bodies whose ack was acknowledged, and when.
    acked: BTreeMap<String, Instant>,
}

struct Clients {
    channel: Channel,
    record: Mutex<Record>,
    stop_sending: AtomicBool,
    stop_receiving: AtomicBool,
    acked_sends: AtomicU64,
}

fn channel(url: String) -> Channel {
    Endpoint::from_shared(url)
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

async fn produce(clients: Arc<Clients>, producer: usize) {
    let mut client = QueueServiceClient::new(clients.channel.clone());
    let mut n = 0u64;
    while !clients.stop_sending.load(Ordering::Acquire) {
        let body = format!("p{producer}-{n}");
        n += 1;
        clients.record.lock().await.invoked.insert(body.clone());
        let invoked_at = Instant::now();
        let request = pb::SendRequest {
            queue: QUEUE.to_owned(),
            messages: vec![pb::SendMessage {
                body: body.clone().into_bytes().into(),
                ..Default::default()
            }],
        };
        let answer = tokio::time::timeout(RPC_TIMEOUT, client.send(request)).await;
        match answer {
            Ok(Ok(_)) => {
                clients.record.lock().await.sent.insert(body, invoked_at);
                clients.acked_sends.fetch_add(1, Ordering::AcqRel);
            }
            // Outcome unknown or refused: the body may or may not be delivered.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn consume(clients: Arc<Clients>) {
    let mut client = QueueServiceClient::new(clients.channel.clone());
    while !clients.stop_receiving.load(Ordering::Acquire) {
        let invoked_at = Instant::now();
        let request = pb::ReceiveRequest {
            queue: QUEUE.to_owned(),
            max_messages: 10,
            wait_ms: Some(200),
            visibility_timeout_ms: Some(VISIBILITY_TIMEOUT_MS),
            ..Default::default()
        };
        let messages = match tokio::time::timeout(RPC_TIMEOUT, client.receive(request)).await {
            Ok(Ok(response)) => response.into_inner().messages,
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let bodies: Vec<String> = messages
            .iter()
            .map(|m| String::from_utf8(m.body.to_vec()).expect("UTF-8 bodies"))
            .collect();
        {
            let mut record = clients.record.lock().await;
            for body in &bodies {
                record.deliveries.push((body.clone(), invoked_at));
            }
        }
        let request = pb::AckRequest {
            queue: QUEUE.to_owned(),
            receipts: messages.iter().map(|m| m.receipt.clone()).collect(),
        };
        if let Ok(Ok(response)) = tokio::time::timeout(RPC_TIMEOUT, client.ack(request)).await {
            let now = Instant::now();
            let mut record = clients.record.lock().await;
            for (body, result) in bodies.into_iter().zip(response.into_inner().results) {
                if result.error.is_none() {
                    record.acked.entry(body).or_insert(now);
                }
            }
        }
    }
}

async fn wait_for_acked_sends(clients: &Clients, at_least: u64, what: &str) {
    let deadline = Instant::now() + PHASE_DEADLINE;
    while clients.acked_sends.load(Ordering::Acquire) < at_least {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} sends acknowledged within {PHASE_DEADLINE:?}",
            clients.acked_sends.load(Ordering::Acquire)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_queue_survives_its_leader_kill_without_losing_or_redelivering_acked_messages()
{
    let (mut cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        extra_args: vec![
            "--host-grace-ms".to_owned(),
            HOST_GRACE_MS.to_string(),
            "--replica-max-lag-ms".to_owned(),
            MAX_LAG_MS.to_string(),
            // Small segments and frequent snapshots: the leader compacts (and
            // deletes segments) during the test, so a wiped replica must copy its
            // snapshot.
            "--queue-segment-bytes".to_owned(),
            "4096".to_owned(),
            "--queue-snapshot-bytes".to_owned(),
            "4096".to_owned(),
            "--queue-snapshot-interval-ms".to_owned(),
            "200".to_owned(),
            "--queue-housekeeping-interval-ms".to_owned(),
            "100".to_owned(),
        ],
        ..ClusterOptions::default()
    })
    .await;
    let name = cluster.name().to_owned();
    let gateway = Gateway::start(&cluster.etcd_endpoint(), "127.0.0.61", &[]);
    let via = channel(gateway.url());
    let id = PartitionId::queue(QUEUE);

    // 1. A queue with three replicas, `sync`.
    rpc::create_replicated_queue(&via, QUEUE, pb::QueueConfig::default()).await;
    wait_for_view(
        &mut etcd,
        &name,
        FORM_DEADLINE,
        "the queue led with three in-sync replicas",
        |v| v.all_led_in_sync(std::slice::from_ref(&id), 3),
    )
    .await;

    // 2. Load through the gateway.
    let clients = Arc::new(Clients {
        channel: via.clone(),
        record: Mutex::new(Record::default()),
        stop_sending: AtomicBool::new(false),
        stop_receiving: AtomicBool::new(false),
        acked_sends: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    for producer in 0..PRODUCERS {
        tasks.push(tokio::spawn(produce(Arc::clone(&clients), producer)));
    }
    for _ in 0..CONSUMERS {
        tasks.push(tokio::spawn(consume(Arc::clone(&clients))));
    }
    let started = Instant::now();
    wait_for_acked_sends(&clients, SENDS_PER_PHASE, "before the kill").await;
    eprintln!("phase: {SENDS_PER_PHASE} sends in {:?}", started.elapsed());

    // 3. Kill the leader; a new one must serve within the deadline.
    let view = read_view(&mut etcd, &name).await.expect("view");
    let victim = view.leader(&id).expect("a leader").to_owned();
    let before = clients.acked_sends.load(Ordering::Acquire);
    cluster.host_mut(&victim).kill();
    let killed_at = Instant::now();
    let deadline = killed_at + FAILOVER_DEADLINE;
    // Served again: a send invoked after the kill is acknowledged.
    while !clients
        .record
        .lock()
        .await
        .sent
        .values()
        .any(|invoked_at| *invoked_at > killed_at)
    {
        assert!(
            Instant::now() < deadline,
            "no send acknowledged within {FAILOVER_DEADLINE:?} of killing {victim}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failover = killed_at.elapsed();
    wait_for_acked_sends(&clients, before + SENDS_PER_PHASE, "after the kill").await;
    eprintln!(
        "phase: failover {failover:?}, then {SENDS_PER_PHASE} sends at {:?}",
        killed_at.elapsed()
    );

    // 4. The killed host returns and rejoins the in-sync set (it truncates what it
    //    had beyond the new leader and copies the rest).
    cluster.host_mut(&victim).restart();
    let rejoined = wait_for_view(
        &mut etcd,
        &name,
        CATCH_UP_DEADLINE,
        "the restarted host back in the queue's in-sync set",
        |v| {
            v.partition(&id)
                .is_some_and(|s| s.isr.len() == 3 && s.isr.contains(&victim))
        },
    )
    .await;
    assert_ne!(rejoined.leader(&id), Some(victim.as_str()));
    eprintln!("phase: rejoined at {:?}", killed_at.elapsed());

    // 5. Stop sending; drain until every acknowledged send was delivered.
    clients.stop_sending.store(true, Ordering::Release);
    let drain_deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        let missing = {
            let record = clients.record.lock().await;
            let delivered: BTreeSet<&String> = record.deliveries.iter().map(|(b, _)| b).collect();
            record
                .sent
                .keys()
                .filter(|b| !delivered.contains(b))
                .count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < drain_deadline,
            "{missing} acknowledged sends never delivered within {DRAIN_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("phase: drained at {:?}", killed_at.elapsed());
    // Long enough for anything wrongly kept in flight to come back.
    tokio::time::sleep(Duration::from_millis(VISIBILITY_TIMEOUT_MS * 2)).await;
    clients.stop_receiving.store(true, Ordering::Release);
    for task in tasks {
        task.await.expect("client task");
    }

    // 6. The verdict.
    let record = clients.record.lock().await;
    let phantoms: Vec<&String> = record
        .deliveries
        .iter()
        .map(|(b, _)| b)
        .filter(|b| !record.invoked.contains(*b))
        .collect();
    let redelivered_after_ack: Vec<&String> = record
        .deliveries
        .iter()
        .filter(|(body, invoked_at)| record.acked.get(body).is_some_and(|at| invoked_at > at))
        .map(|(b, _)| b)
        .collect();
    let distinct: BTreeSet<&String> = record.deliveries.iter().map(|(b, _)| b).collect();
    println!(
        "{{\"scenario\":\"queue-leader-kill\",\"failover_ms\":{},\"sends_acked\":{},\"delivered\":{},\"deliveries\":{},\"acks_acked\":{},\"redelivered_after_ack\":{},\"phantoms\":{}}}",
        failover.as_millis(),
        record.sent.len(),
        distinct.len(),
        record.deliveries.len(),
        record.acked.len(),
        redelivered_after_ack.len(),
        phantoms.len()
    );
    assert!(
        phantoms.is_empty(),
        "delivered but never sent: {phantoms:?}"
    );
    assert!(
        redelivered_after_ack.is_empty(),
        "delivered by a receive that began after the ack was acknowledged: {redelivered_after_ack:?}"
    );
    assert!(
        record.sent.len() as u64 >= 2 * SENDS_PER_PHASE,
        "acknowledged sends: {}",
        record.sent.len()
    );
    drop(record);

    // 7. The queue state (acks included) is on the returned replica: with the other
    //    two hosts gone it leads alone and holds exactly what was not acked.
    let mut client = QueueServiceClient::new(via.clone());
    let kept: Vec<String> = (0..KEPT).map(|n| format!("kept-{n}")).collect();
    let settled: Vec<String> = (0..KEPT).map(|n| format!("settled-{n}")).collect();
    for body in kept.iter().chain(&settled) {
        rpc::send(&via, QUEUE, body)
            .await
            .unwrap_or_else(|s| panic!("send {body}: {}", show(&s)));
    }
    let mut to_settle = settled.iter().cloned().collect::<BTreeSet<_>>();
    let drain_deadline = Instant::now() + DRAIN_DEADLINE;
    while !to_settle.is_empty() {
        assert!(
            Instant::now() < drain_deadline,
            "not received: {to_settle:?}"
        );
        let messages = client
            .receive(pb::ReceiveRequest {
                queue: QUEUE.to_owned(),
                max_messages: 100,
                wait_ms: Some(200),
                visibility_timeout_ms: Some(VISIBILITY_TIMEOUT_MS),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("receive: {}", show(&s)))
            .into_inner()
            .messages;
        let receipts: Vec<String> = messages
            .iter()
            .filter(|m| to_settle.remove(std::str::from_utf8(&m.body).unwrap_or_default()))
            .map(|m| m.receipt.clone())
            .collect();
        if !receipts.is_empty() {
            let results = client
                .ack(pb::AckRequest {
                    queue: QUEUE.to_owned(),
                    receipts,
                })
                .await
                .unwrap_or_else(|s| panic!("ack: {}", show(&s)))
                .into_inner()
                .results;
            assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
        }
    }
    // Its disk is replaced: it copies the leader's snapshot and the logs after it.
    cluster.host_mut(&victim).kill();
    cluster.host_mut(&victim).wipe_data();
    cluster.host_mut(&victim).restart();
    let view = wait_for_view(
        &mut etcd,
        &name,
        CATCH_UP_DEADLINE,
        "the wiped host back in sync before the others go",
        |v| {
            v.partition(&id)
                .is_some_and(|s| s.isr.len() == 3 && s.isr.contains(&victim))
        },
    )
    .await;
    let others: Vec<String> = view
        .partition(&id)
        .expect("placed")
        .replicas
        .iter()
        .filter(|h| **h != victim)
        .cloned()
        .collect();
    for host in &others {
        cluster.host_mut(host).kill();
    }
    let snapshots: Vec<std::path::PathBuf> =
        std::fs::read_dir(cluster.host(&victim).config().data_dir.join("queues"))
            .expect("the wiped host's queue directory")
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("snapshot"))
            .filter(|path| path.is_file())
            .collect();
    assert_eq!(
        snapshots.len(),
        1,
        "the wiped host copied the leader's snapshot of {QUEUE}: {:?}",
        walk(&cluster.host(&victim).config().data_dir)
    );
    wait_for_view(
        &mut etcd,
        &name,
        CATCH_UP_DEADLINE,
        "the returned host leading the queue alone",
        |v| v.leader(&id) == Some(victim.as_str()),
    )
    .await;
    // The kept messages were received (left in flight) while the settled ones were
    // picked out: they come back once their visibility timeout passes.
    let mut alone = QueueServiceClient::new(rpc::channel(cluster.host(&victim)));
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    let mut left: BTreeSet<String> = BTreeSet::new();
    while left.len() < kept.len() && Instant::now() < deadline {
        let answer = alone
            .receive(pb::ReceiveRequest {
                queue: QUEUE.to_owned(),
                max_messages: 100,
                wait_ms: Some(500),
                visibility_timeout_ms: Some(600_000),
                ..Default::default()
            })
            .await;
        match answer {
            Ok(response) => left.extend(
                response
                    .into_inner()
                    .messages
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
            ),
            Err(status) => {
                eprintln!("waiting for {victim} to serve: {}", show(&status));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let left: Vec<String> = left.into_iter().collect();
    let mut expected = kept.clone();
    expected.sort();
    assert_eq!(
        left, expected,
        "{victim}, alone, holds exactly the messages not acked"
    );
}

/// Every file under `dir` (for failure messages).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
