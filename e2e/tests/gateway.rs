//! The gateway against real processes: a client that knows only the gateway's
//! address creates, produces, fetches and uses a queue on a three-host cluster; one
//! produce request spanning partitions led by different hosts is split and put back
//! together; the gateway answers metadata as the leader of everything, while
//! `ferryctl cluster status` through it shows the real hosts and leaders; and when a
//! leader is killed, sends through the gateway keep being acknowledged (it retries
//! while the leader moves) with nothing acknowledged lost.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::rpc::{self, record_outcome, show, within};
use common::{FORM_DEADLINE, PartitionId, read_view, start_formed, wait_for_view};
use ferry_e2e::gateway::Gateway;
use ferry_e2e::{CheckOptions, ClusterOptions, History, check};
use ferry_proto::v1 as pb;
use ferry_records::BatchBuilder;
use pb::metadata_service_client::MetadataServiceClient;
use pb::topic_service_client::TopicServiceClient;
use tonic::transport::{Channel, Endpoint};

const LEASE_TTL_MS: u64 = 2_000;
const TOPIC: &str = "through-gateway";
const PARTITIONS: u32 = 3;
const QUEUE: &str = "gateway-jobs";
const SEND_TIMEOUT: Duration = Duration::from_secs(15);
const PRODUCER: u32 = 0;
/// The gateway's metrics address (its IP is this test's alone).
const GATEWAY_METRICS: &str = "127.0.0.60:9464";

fn channel(url: String) -> Channel {
    Endpoint::from_shared(url)
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// `ferryctl --output json cluster status` through `gateway`.
fn cluster_status(gateway: &Gateway) -> serde_json::Value {
    let args = [
        "--server",
        gateway.url().trim_start_matches("http://"),
        "--output",
        "json",
        "cluster",
        "status",
    ]
    .map(str::to_owned);
    let output = ferry_e2e::run_bounded(
        &ferry_e2e::ferryctl_binary(),
        &args,
        "",
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "cluster status: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// The first `cluster status` through `gateway` that satisfies `wanted` (the hosts
/// learn placement changes from etcd a moment after they are made).
async fn cluster_status_when(
    gateway: &Gateway,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + FORM_DEADLINE;
    loop {
        let status = cluster_status(gateway);
        if wanted(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cluster status through the gateway never showed it: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The leader `status` names for partition `p` of the topic.
fn partition_leader(status: &serde_json::Value, p: u32) -> Option<&str> {
    status["topics"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == TOPIC)?["partitions"]
        .as_array()?
        .iter()
        .find(|q| q["partition"] == p)?["leader"]
        .as_str()
}

#[tokio::test]
async fn a_client_that_knows_only_the_gateway_is_served_by_the_whole_cluster() {
    let (mut cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        extra_args: vec!["--host-grace-ms".to_owned(), "600000".to_owned()],
        ..ClusterOptions::default()
    })
    .await;
    let name = cluster.name().to_owned();
    let gateway = Gateway::start(
        &cluster.etcd_endpoint(),
        "127.0.0.60",
        &["--metrics-listen", GATEWAY_METRICS],
    );
    let via = channel(gateway.url());

    // 1. Create through the gateway; the cluster places the partitions on its hosts.
    rpc::create_replicated_topic(&via, TOPIC, PARTITIONS, 3, pb::ReplicationMode::Sync).await;
    rpc::create_queue(&via, QUEUE).await;
    let placed = wait_for_view(
        &mut etcd,
        &name,
        FORM_DEADLINE,
        "every partition led",
        |v| {
            (0..PARTITIONS).all(|p| {
                v.partition(&PartitionId::topic(TOPIC, p))
                    .is_some_and(|s| s.leader.is_some() && s.isr.len() == 3)
            }) && v.leader(&PartitionId::queue(QUEUE)).is_some()
        },
    )
    .await;
    let leaders: BTreeSet<&str> = (0..PARTITIONS)
        .filter_map(|p| placed.leader(&PartitionId::topic(TOPIC, p)))
        .collect();
    assert!(
        leaders.len() > 1,
        "partitions spread over hosts: {leaders:?}"
    );

    // 2. Metadata: the gateway leads every partition, so clients send it everything.
    let metadata = MetadataServiceClient::new(via.clone())
        .get_metadata(pb::GetMetadataRequest {
            topics: vec![TOPIC.to_owned()],
        })
        .await
        .unwrap_or_else(|s| panic!("metadata: {}", show(&s)))
        .into_inner();
    assert_eq!(metadata.hosts.len(), 1, "{metadata:?}");
    assert_eq!(
        metadata.hosts[0].address,
        gateway.url().trim_start_matches("http://")
    );
    let topic = &metadata.topics[0];
    assert_eq!(topic.partitions.len(), PARTITIONS as usize);
    for partition in &topic.partitions {
        assert_eq!(partition.leader_host_id, "gateway", "{partition:?}");
        assert_eq!(partition.in_sync_replicas.len(), 3, "{partition:?}");
    }

    //    `ferryctl cluster status` through the gateway shows the cluster behind it:
    //    its hosts and each partition's real leader.
    let status = cluster_status_when(&gateway, |status| {
        (0..PARTITIONS)
            .all(|p| partition_leader(status, p) == placed.leader(&PartitionId::topic(TOPIC, p)))
    })
    .await;
    let hosts: BTreeSet<&str> = status["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(|h| h["host_id"].as_str())
        .collect();
    assert_eq!(hosts, BTreeSet::from(["h0", "h1", "h2"]), "{status}");
    assert_eq!(status["cluster"], name.as_str(), "{status}");

    // 3. One produce request for every partition, led by different hosts: split,
    //    sent, and answered in the request's order.
    let history = History::new();
    let mut batches = Vec::new();
    let mut ops = Vec::new();
    for p in 0..PARTITIONS {
        let value = format!("spread-{p}");
        ops.push((history.record_send_invoke(PRODUCER, p, &value), p));
        let mut builder = BatchBuilder::new();
        builder.push(None, value.as_bytes(), &[], rpc::now_ms());
        batches.push(pb::PartitionBatch {
            partition: Some(p),
            records: builder.finish().expect("one record").into(),
        });
    }
    let spread = TopicServiceClient::new(via.clone())
        .produce(pb::ProduceRequest {
            topic: TOPIC.to_owned(),
            batches,
            messages: Vec::new(),
            ..pb::ProduceRequest::default()
        })
        .await
        .unwrap_or_else(|s| panic!("produce over every partition: {}", show(&s)))
        .into_inner();
    assert_eq!(spread.batches.len(), PARTITIONS as usize);
    for ((op, p), result) in ops.iter().zip(&spread.batches) {
        assert_eq!(result.partition, *p, "{result:?}");
        assert!(result.error.is_none(), "{result:?}");
        history.record_send_ok(*op, result.base_offset);
    }

    // 4. The queue through the gateway.
    for n in 0..5 {
        rpc::send(&via, QUEUE, &format!("job-{n}"))
            .await
            .unwrap_or_else(|s| panic!("send: {}", show(&s)));
    }
    let mut bodies = rpc::receive_all(&via, QUEUE)
        .await
        .unwrap_or_else(|s| panic!("receive: {}", show(&s)));
    bodies.sort();
    assert_eq!(
        bodies,
        (0..5).map(|n| format!("job-{n}")).collect::<Vec<_>>()
    );

    // 5. Kill the leader of partition 0 while sending to it through the gateway:
    //    the gateway waits for the new leader; nothing acknowledged is lost.
    let victim = placed
        .leader(&PartitionId::topic(TOPIC, 0))
        .expect("a leader")
        .to_owned();
    let mut acked_after_kill = 0;
    for n in 0..60 {
        if n == 20 {
            cluster.host_mut(&victim).kill();
        }
        let p = n % PARTITIONS;
        let value = format!("steady-{n}");
        let op = history.record_send_invoke(PRODUCER, p, &value);
        let answer = within(SEND_TIMEOUT, rpc::produce(&via, TOPIC, p, None, &value)).await;
        record_outcome(&history, op, &answer);
        if n >= 20 && answer.is_ok() {
            acked_after_kill += 1;
        }
    }
    assert!(
        acked_after_kill >= 30,
        "sends after the kill should mostly succeed through the gateway: {acked_after_kill} of 40"
    );

    // The gateway counts what it answered, by method and code.
    let metrics = ferry_e2e::http_get(GATEWAY_METRICS.parse().expect("an address"), "/metrics")
        .unwrap_or_else(|err| panic!("gateway metrics: {err}"));
    let produced_ok = "ferry_grpc_server_handled_total{grpc_service=\"ferry.v1.TopicService\",\
                       grpc_method=\"Produce\",grpc_code=\"OK\"} ";
    let count: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(produced_ok))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {produced_ok} in {metrics}"));
    assert!(count >= 33.0, "{count} produces counted");

    // 6. Read everything back through the gateway and judge it.
    let view = read_view(&mut etcd, &name).await.expect("view");
    assert_ne!(
        view.leader(&PartitionId::topic(TOPIC, 0)),
        Some(victim.as_str())
    );
    // The status through the gateway shows the killed host gone and the new leader.
    cluster_status_when(&gateway, |status| {
        let victim_gone = status["hosts"].as_array().is_some_and(|hosts| {
            hosts
                .iter()
                .any(|h| h["host_id"] == victim.as_str() && h["alive"] == false)
        });
        victim_gone && partition_leader(status, 0) == view.leader(&PartitionId::topic(TOPIC, 0))
    })
    .await;
    for p in 0..PARTITIONS {
        for read in rpc::read_partition(&via, TOPIC, p)
            .await
            .unwrap_or_else(|s| panic!("read {p}: {}", show(&s)))
        {
            history.record_read(read.partition, read.offset, &read.value);
        }
    }
    let verdict = check(
        &history,
        &CheckOptions {
            idempotent_producer: true,
            ..CheckOptions::default()
        },
    );
    assert!(verdict.valid, "{}", verdict.to_json());
    assert!(verdict.counts.acked >= 33, "{:?}", verdict.counts);
}

/// Issue 11, defect 5: a produce through the gateway right after the topic is created
/// (before its partitions have leaders) is retried while leaders are elected; the
/// messages of one request for one partition must be stored in the request's order,
/// at the offsets the answer names, and a success answer must never name a
/// placeholder position.
#[tokio::test]
async fn a_produce_right_after_a_create_keeps_its_order_and_names_real_offsets() {
    const ROUNDS: usize = 8;
    const MESSAGES: usize = 5;
    let (cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        ..ClusterOptions::default()
    })
    .await;
    let gateway = Gateway::start(&cluster.etcd_endpoint(), "127.0.0.62", &[]);
    let via = channel(gateway.url());
    for round in 0..ROUNDS {
        let topic = format!("ordered-{round}");
        rpc::create_replicated_topic(&via, &topic, 3, 3, pb::ReplicationMode::Sync).await;
        let messages: Vec<pb::Message> = (0..MESSAGES)
            .map(|i| pb::Message {
                key: Some(b"one-key".to_vec().into()),
                value: i.to_string().into_bytes().into(),
                ..Default::default()
            })
            .collect();
        let answer = TopicServiceClient::new(via.clone())
            .produce(pb::ProduceRequest {
                topic: topic.clone(),
                batches: Vec::new(),
                messages,
                ..pb::ProduceRequest::default()
            })
            .await
            .unwrap_or_else(|s| panic!("round {round}: produce: {}", show(&s)))
            .into_inner();
        assert!(
            answer.message_batches.iter().all(|b| b.error.is_none()),
            "round {round}: a success answer with failed batches: {answer:?}"
        );
        let partition = answer.messages[0].partition;
        let offsets: Vec<u64> = answer.messages.iter().map(|m| m.offset).collect();
        assert!(
            answer.messages.iter().all(|m| m.partition == partition)
                && offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "round {round}: one partition, offsets in request order: {answer:?}"
        );
        let stored = rpc::read_partition(&via, &topic, partition)
            .await
            .unwrap_or_else(|s| panic!("round {round}: read: {}", show(&s)));
        let values: Vec<(u64, String)> = stored.into_iter().map(|r| (r.offset, r.value)).collect();
        let expected: Vec<(u64, String)> = offsets
            .iter()
            .enumerate()
            .map(|(i, offset)| (*offset, i.to_string()))
            .collect();
        assert_eq!(values, expected, "round {round}: stored in request order");
    }
}
