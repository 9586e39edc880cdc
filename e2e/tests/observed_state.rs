//! Observed state in etcd: the leaders of a replicated topic and of a queue publish
//! their high watermarks, log ends, follower lag and queue depth under
//! `/ferry/clusters/{cluster}/observed/`, so etcd alone tells how things stand; a
//! deleted topic's observed keys go with it. Every host's metadata answers carry
//! what the leaders published (what `ferryctl cluster status` shows as HW and LAG).

mod common;

use std::time::Duration;

use common::rpc::{self, show};
use common::{PartitionId, start_formed, wait_for_view};
use ferry_e2e::ClusterOptions;
use ferry_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::metadata_service_client::MetadataServiceClient;
use serde_json::Value;
use tokio::time::Instant;

const TOPIC: &str = "observed";
const PARTITIONS: u32 = 2;
const QUEUE: &str = "observed-jobs";
const PER_PARTITION: u64 = 25;
const QUEUED: u64 = 7;
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `key` in etcd until `done` holds for its JSON value.
async fn wait_for_key(
    etcd: &mut etcd_client::Client,
    key: &str,
    what: &str,
    done: impl Fn(Option<&Value>) -> bool,
) -> Option<Value> {
    let until = Instant::now() + DEADLINE;
    loop {
        let response = etcd.get(key, None).await.expect("etcd get");
        let value: Option<Value> = response
            .kvs()
            .first()
            .map(|kv| serde_json::from_slice(kv.value()).expect("JSON"));
        if done(value.as_ref()) {
            return value;
        }
        assert!(
            Instant::now() < until,
            "not within {DEADLINE:?}: {what}; {key} holds {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn leaders_publish_watermarks_lag_and_depth_to_etcd() {
    let (cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 3,
        extra_args: vec!["--observed-interval-ms".to_owned(), "300".to_owned()],
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
    rpc::create_queue(&channels["h0"], QUEUE).await;
    let view = wait_for_view(
        &mut etcd,
        &name,
        DEADLINE,
        "everything led and in sync",
        |v| {
            (0..PARTITIONS).all(|p| {
                v.partition(&PartitionId::topic(TOPIC, p))
                    .is_some_and(|s| s.leader.is_some() && s.isr.len() == 3)
            }) && v.leader(&PartitionId::queue(QUEUE)).is_some()
        },
    )
    .await;

    for p in 0..PARTITIONS {
        let leader = view.leader(&PartitionId::topic(TOPIC, p)).expect("leader");
        for n in 0..PER_PARTITION {
            let value = format!("{p}-{n}");
            rpc::until_led(DEADLINE, || {
                rpc::produce(&channels[leader], TOPIC, p, None, &value)
            })
            .await
            .unwrap_or_else(|s| panic!("produce: {}", show(&s)));
        }
    }
    let queue_leader = view.leader(&PartitionId::queue(QUEUE)).expect("leader");
    for n in 0..QUEUED {
        let body = format!("job-{n}");
        rpc::until_led(DEADLINE, || {
            rpc::send(&channels[queue_leader], QUEUE, &body)
        })
        .await
        .unwrap_or_else(|s| panic!("send: {}", show(&s)));
    }

    for p in 0..PARTITIONS {
        let leader = view.leader(&PartitionId::topic(TOPIC, p)).expect("leader");
        let key = format!("/ferry/clusters/{name}/observed/topics/{TOPIC}/{p}");
        let observed = wait_for_key(&mut etcd, &key, "all committed, no lag", |v| {
            v.is_some_and(|v| {
                v["high_watermark"] == PER_PARTITION
                    && v["log_end"] == PER_PARTITION
                    && v["follower_lag"]
                        .as_object()
                        .is_some_and(|lag| lag.len() == 2 && lag.values().all(|l| *l == 0))
            })
        })
        .await
        .expect("a value");
        assert_eq!(observed["leader"], leader, "{observed}");
        assert_eq!(observed["log_start"], 0, "{observed}");
    }
    // Every host answers metadata with what the leaders published.
    for host in ["h0", "h1", "h2"] {
        let metadata = MetadataServiceClient::new(channels[host].clone())
            .get_metadata(pb::GetMetadataRequest {
                topics: vec![TOPIC.to_owned()],
            })
            .await
            .unwrap_or_else(|s| panic!("metadata from {host}: {}", show(&s)))
            .into_inner();
        for partition in &metadata.topics[0].partitions {
            assert_eq!(
                partition.high_watermark,
                Some(PER_PARTITION),
                "{partition:?}"
            );
            assert_eq!(
                partition.log_end_offset,
                Some(PER_PARTITION),
                "{partition:?}"
            );
            assert_eq!(partition.follower_lag.len(), 2, "{partition:?}");
            assert!(
                partition.follower_lag.values().all(|lag| *lag == 0),
                "{partition:?}"
            );
        }
    }
    let key = format!("/ferry/clusters/{name}/observed/queues/{QUEUE}");
    let observed = wait_for_key(&mut etcd, &key, "the queue's depth", |v| {
        v.is_some_and(|v| v["depth"] == QUEUED && v["visible"] == QUEUED)
    })
    .await
    .expect("a value");
    assert_eq!(observed["leader"], queue_leader, "{observed}");
    assert_eq!(observed["in_flight"], 0, "{observed}");

    AdminServiceClient::new(channels["h0"].clone())
        .delete_topic(pb::DeleteTopicRequest {
            name: TOPIC.to_owned(),
        })
        .await
        .unwrap_or_else(|s| panic!("delete: {}", show(&s)));
    for p in 0..PARTITIONS {
        let key = format!("/ferry/clusters/{name}/observed/topics/{TOPIC}/{p}");
        wait_for_key(&mut etcd, &key, "gone with the topic", |v| v.is_none()).await;
    }
    // Once nothing is placed for it, every host says the topic is gone (not
    // NOT_LEADER, which would send a client after a leader that never comes).
    for host in ["h0", "h1", "h2"] {
        let until = Instant::now() + DEADLINE;
        loop {
            let probe = rpc::probe(&channels[host], &PartitionId::topic(TOPIC, 0)).await;
            match probe {
                Err(status) if status.code() == tonic::Code::NotFound => break,
                other => assert!(
                    Instant::now() < until,
                    "{host} still answers {:?} for the deleted topic",
                    other.map_err(|s| show(&s))
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
