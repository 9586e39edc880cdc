//! etcd loses the cluster (issue 11, defect 3): three hosts hold a replicated topic
//! and a replicated queue with acknowledged data; etcd is stopped, its data deleted,
//! and it starts empty. The hosts notice (etcd's revision went backwards, the
//! cluster's identity is gone) and stop, acknowledging nothing more and deleting
//! nothing; started again they refuse, naming the repair. `ferry-broker metadata
//! rebuild` on each host puts the records, the cluster's identity and the partition
//! states back; started again, the hosts serve every acknowledged message.

mod common;

use std::time::Duration;

use common::rpc;
use common::{FORM_DEADLINE, PartitionId, read_view, start_formed, wait_for_view};
use ferry_e2e::ClusterOptions;
use ferry_proto::v1 as pb;
use ferry_proto::v1::queue_service_client::QueueServiceClient;
use tokio::time::Instant;

const LEASE_TTL_MS: u64 = 2_000;
const TOPIC: &str = "ledger";
const QUEUE: &str = "jobs";
const MESSAGES: usize = 300;
const QUEUED: usize = 60;
const DEADLINE: Duration = Duration::from_secs(60);
const HOSTS: [&str; 3] = ["h0", "h1", "h2"];

fn ids() -> [PartitionId; 2] {
    [PartitionId::topic(TOPIC, 0), PartitionId::queue(QUEUE)]
}

fn options() -> ClusterOptions {
    ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        extra_args: vec!["--host-grace-ms".to_owned(), "600000".to_owned()],
        ..ClusterOptions::default()
    }
}

fn all_in_sync(view: &common::ClusterView) -> bool {
    view.all_led_in_sync(&ids(), 3)
}

/// Polls `attempt` until it succeeds or the deadline passes.
async fn eventually<T>(what: &str, mut attempt: impl AsyncFnMut() -> Result<T, String>) -> T {
    let until = Instant::now() + DEADLINE;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(why) if Instant::now() < until => {
                let _ = why;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(why) => panic!("not within {DEADLINE:?}: {what}: {why}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_etcd_loses_nothing_and_the_cluster_is_rebuilt_from_the_hosts() {
    let (mut cluster, mut etcd) = start_formed(options()).await;
    let name = cluster.name().to_owned();
    let channels = rpc::channels(&cluster);
    rpc::create_replicated_topic(&channels["h0"], TOPIC, 1, 3, pb::ReplicationMode::Sync).await;
    QueueServiceClient::new(channels["h0"].clone())
        .create_queue(pb::CreateQueueRequest {
            name: QUEUE.to_owned(),
            config: Some(pb::QueueConfig {
                replication_factor: 3,
                durability: pb::Durability::Fsync as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|status| panic!("create queue: {}", rpc::show(&status)));
    let view = wait_for_view(&mut etcd, &name, FORM_DEADLINE, "all in sync", all_in_sync).await;
    let topic_leader = view.leader(&ids()[0]).expect("leader").to_owned();
    let queue_leader = view.leader(&ids()[1]).expect("leader").to_owned();
    for i in 0..MESSAGES {
        let value = format!("m{i}");
        rpc::until_led(DEADLINE, || {
            rpc::produce(&channels[&topic_leader], TOPIC, 0, None, &value)
        })
        .await
        .unwrap_or_else(|status| panic!("produce {i}: {}", rpc::show(&status)));
    }
    for i in 0..QUEUED {
        let body = format!("q{i}");
        rpc::until_led(DEADLINE, || {
            rpc::send(&channels[&queue_leader], QUEUE, &body)
        })
        .await
        .unwrap_or_else(|status| panic!("send {i}: {}", rpc::show(&status)));
    }

    cluster.etcd_mut().wipe_and_restart();

    // Every host notices and stops.
    eventually(
        "every host stopped after etcd lost the cluster",
        async || {
            let running: Vec<&str> = HOSTS
                .iter()
                .copied()
                .filter(|h| cluster.host_mut(h).is_running())
                .collect();
            if running.is_empty() {
                Ok(())
            } else {
                Err(format!("still running: {running:?}"))
            }
        },
    )
    .await;
    // Nothing was deleted: every host still holds the topic's and the queue's data.
    for host in HOSTS {
        let data = cluster.host(host).config().data_dir.clone();
        for (kind, prefix) in [("topics", TOPIC), ("queues", QUEUE)] {
            let kept = std::fs::read_dir(data.join(kind))
                .map(|dir| {
                    dir.flatten().any(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{prefix}-"))
                    })
                })
                .unwrap_or(false);
            assert!(kept, "{host} deleted its {kind} data");
        }
    }
    // Started on the empty etcd, a host refuses.
    assert!(
        cluster.host_mut("h0").try_restart().is_err(),
        "a host started on an etcd that lost its cluster"
    );

    // The way back: rebuild from every host, then start them.
    for host in HOSTS {
        let report = cluster
            .host(host)
            .rebuild_metadata()
            .unwrap_or_else(|why| panic!("rebuild on {host}: {why}"));
        assert!(
            report.contains("topics/ledger") && report.contains("queues/jobs"),
            "{report}"
        );
    }
    for host in HOSTS {
        cluster.host_mut(host).restart();
    }
    let view = wait_for_view(&mut etcd, &name, DEADLINE, "all in sync again", all_in_sync).await;
    let topic_leader = view.leader(&ids()[0]).expect("leader").to_owned();
    let leader_channel = rpc::channel(cluster.host(&topic_leader));
    let reads = rpc::until_led(DEADLINE, || rpc::read_partition(&leader_channel, TOPIC, 0))
        .await
        .unwrap_or_else(|status| panic!("read: {}", rpc::show(&status)));
    let values: Vec<String> = reads.into_iter().map(|r| r.value).collect();
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("m{i}")).collect();
    assert_eq!(values, expected, "every acknowledged message, in order");
    let received = eventually("every queued message received", async || {
        let view = read_view(&mut etcd, &name).await?;
        let leader = view.leader(&ids()[1]).ok_or("no queue leader")?.to_owned();
        let channel = rpc::channel(cluster.host(&leader));
        rpc::receive_all(&channel, QUEUE)
            .await
            .map_err(|status| rpc::show(&status))
    })
    .await;
    let mut received: Vec<String> = received;
    received.sort_by_key(|body| body[1..].parse::<usize>().unwrap_or(usize::MAX));
    let expected: Vec<String> = (0..QUEUED).map(|i| format!("q{i}")).collect();
    assert_eq!(received, expected, "every acknowledged queue message");
}
