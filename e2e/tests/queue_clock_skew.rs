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
    // A receive is answered before its journal event reaches the followers (a lost
    // event only lowers the receive count, docs/queues.md); this scenario is about a
    // deadline the new leader holds, so the event must be there first.
    let replicated = Instant::now();
    while ["h1", "h2"]
        .iter()
        .any(|host| journal_bytes(&cluster.dir().join(host), &queue) == 0)
    {
        assert!(
            replicated.elapsed() < DEADLINE,
            "the receive's journal event did not reach both followers within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cluster.host_mut("h0").kill();
    let killed = Instant::now();
    let id = PartitionId::queue(&queue);
    wait_for_view(&mut etcd, &name, DEADLINE, "another leader", |v| {
        v.leader(&id).is_some_and(|l| l != "h0")
    })
    .await;
    // What the last attempt saw, for the failure message.
    let mut last = String::from("no leader in the view");
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
            last = match &answer {
                Ok(answer) => format!(
                    "{leader} answered {} messages",
                    answer.get_ref().messages.len()
                ),
                Err(status) => format!("{leader} answered {}", rpc::show(status)),
            };
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
             {DEADLINE:?} of its death (last attempt: {last})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Bytes in a host's copy of the queue's journal (empty until the first event: the
/// queue had none before the receive). A queue's directory is `<name>-<incarnation>`.
fn journal_bytes(host_dir: &Path, queue: &str) -> u64 {
    let prefix = format!("{queue}-");
    let is_queue_dir = |name: &str| {
        name.strip_prefix(&prefix)
            .is_some_and(|incarnation| incarnation.bytes().all(|b| b.is_ascii_digit()))
    };
    let files = |dir: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    files(&host_dir.join("queues"))
        .into_iter()
        .filter(|dir| {
            dir.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_queue_dir)
        })
        .flat_map(|dir| files(&dir.join("journal")))
        .filter(|file| file.extension().is_some_and(|e| e == "log"))
        .filter_map(|file| file.metadata().ok())
        .map(|meta| meta.len())
        .sum()
}
