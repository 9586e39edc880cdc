//! A queue leader whose clock runs ahead dies (issue 11, defect 6): real etcd, three
//! `ferry-broker serve` hosts, one of them ten minutes ahead (libfaketime). A message
//! received on that host's queue with a 5 s visibility timeout must come back soon
//! after another host takes the queue over — not when the dead leader's clock said,
//! ten minutes later. Queue deadlines are re-armed from the new leader's clock
//! (docs/queues.md, "Clocks").

mod common;

use std::path::Path;
use std::time::Duration;

use common::rpc;
use common::{FORM_DEADLINE, PartitionId, read_view, start_formed, wait_for_view};
use ferry_e2e::ClusterOptions;
use ferry_proto::v1 as pb;
use ferry_proto::v1::queue_service_client::QueueServiceClient;
use tokio::time::Instant;

/// Debian's libfaketime (package `faketime`, installed by `.ci/setup test`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// How far the skewed host's wall clock runs ahead.
const SKEW: &str = "+600s";
const LEASE_TTL_MS: u64 = 2_000;
const QUEUES: usize = 6;
const VISIBILITY_MS: u64 = 5_000;
/// Liveness bound for the redelivery: far below the skew, far above the expected
/// failover plus visibility timeout.
const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_received_on_a_leader_ahead_in_time_returns_soon_after_its_death() {
    assert!(
        Path::new(LIBFAKETIME).is_file(),
        "{LIBFAKETIME} is missing: install Debian's faketime (./.ci/setup test)"
    );
    let (mut cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        extra_args: vec!["--host-grace-ms".to_owned(), "600000".to_owned()],
        host_env: vec![
            (0, "LD_PRELOAD".to_owned(), LIBFAKETIME.to_owned()),
            (0, "FAKETIME".to_owned(), SKEW.to_owned()),
            // Only the wall clock: leases and timers run on the monotonic one.
            (0, "FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
        ],
        ..ClusterOptions::default()
    })
    .await;
    let name = cluster.name().to_owned();
    let channels = rpc::channels(&cluster);
    for q in 0..QUEUES {
        QueueServiceClient::new(channels["h1"].clone())
            .create_queue(pb::CreateQueueRequest {
                name: format!("skew-{q}"),
                config: Some(pb::QueueConfig {
                    replication_factor: 3,
                    durability: pb::Durability::Fsync as i32,
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|status| panic!("create queue: {}", rpc::show(&status)));
    }
    let ids: Vec<PartitionId> = (0..QUEUES)
        .map(|q| PartitionId::queue(&format!("skew-{q}")))
        .collect();
    let view = wait_for_view(
        &mut etcd,
        &name,
        FORM_DEADLINE,
        "every queue in sync",
        |v| v.all_led_in_sync(&ids, 3),
    )
    .await;
    let queue = ids
        .iter()
        .find(|id| view.leader(id) == Some("h0"))
        .map(|id| id.name.clone())
        .expect("the skewed host leads one of the queues (leaders are spread)");

    let skewed = &channels["h0"];
    rpc::until_led(DEADLINE, || rpc::send(skewed, &queue, "job"))
        .await
        .unwrap_or_else(|status| panic!("send: {}", rpc::show(&status)));
    let received = QueueServiceClient::new(skewed.clone())
        .receive(pb::ReceiveRequest {
            queue: queue.clone(),
            max_messages: 1,
            wait_ms: Some(5_000),
            visibility_timeout_ms: Some(VISIBILITY_MS),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("receive: {}", rpc::show(&status)))
        .into_inner();
    assert_eq!(received.messages.len(), 1, "the job is in flight");

    cluster.host_mut("h0").kill();
    let killed = Instant::now();
    let id = PartitionId::queue(&queue);
    wait_for_view(&mut etcd, &name, DEADLINE, "another leader", |v| {
        v.leader(&id).is_some_and(|l| l != "h0")
    })
    .await;
    loop {
        let view = read_view(&mut etcd, &name).await.expect("view");
        if let Some(leader) = view.leader(&id) {
            let answer = QueueServiceClient::new(channels[leader].clone())
                .receive(pb::ReceiveRequest {
                    queue: queue.clone(),
                    max_messages: 1,
                    wait_ms: Some(1_000),
                    visibility_timeout_ms: Some(60_000),
                    ..Default::default()
                })
                .await;
            if let Ok(answer) = answer
                && let Some(message) = answer.into_inner().messages.first()
            {
                assert_eq!(message.body.as_ref(), b"job");
                assert_eq!(message.receive_count, 2);
                println!(
                    "{{\"scenario\":\"queue-clock-skew\",\"skew\":\"{SKEW}\",\"redelivered_after_kill_ms\":{}}}",
                    killed.elapsed().as_millis()
                );
                return;
            }
        }
        assert!(
            killed.elapsed() < DEADLINE,
            "the message received on the leader {SKEW} ahead did not come back within \
             {DEADLINE:?} of its death"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
