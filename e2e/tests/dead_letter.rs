//! Dead-lettering and redrive in a cluster, against real processes: a queue and its
//! dead-letter queue, three replicas each. The controller places the queue with its
//! dead-letter queue and keeps one host leading both, so a message received too
//! often moves to the dead-letter queue — also after the shared leader is killed and
//! each queue elected a leader of its own. Redrive brings the messages back.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::rpc::{self, show};
use common::{FORM_DEADLINE, PartitionId, start_formed, wait_for_view};
use ferry_e2e::ClusterOptions;
use ferry_e2e::gateway::Gateway;
use ferry_proto::v1 as pb;
use ferry_proto::v1::queue_service_client::QueueServiceClient;
use tonic::transport::{Channel, Endpoint};

const LEASE_TTL_MS: u64 = 2_000;
const QUEUE: &str = "work";
const DEAD_LETTERS: &str = "work-dlq";
const MAX_RECEIVE_COUNT: u32 = 2;
/// Short, so a received message is soon visible (or dead-lettered) again.
const VISIBILITY_TIMEOUT_MS: u64 = 300;
const DEADLINE: Duration = Duration::from_secs(30);
const RPC_TIMEOUT: Duration = Duration::from_secs(8);

fn channel(url: String) -> Channel {
    Endpoint::from_shared(url)
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

fn queues() -> [PartitionId; 2] {
    [PartitionId::queue(QUEUE), PartitionId::queue(DEAD_LETTERS)]
}

async fn create(via: &Channel, name: &str, dead_letter: Option<&str>) {
    let more = pb::QueueConfig {
        visibility_timeout_ms: Some(VISIBILITY_TIMEOUT_MS),
        max_receive_count: dead_letter.map(|_| MAX_RECEIVE_COUNT),
        dead_letter_queue: dead_letter.map(str::to_owned),
        ..Default::default()
    };
    rpc::create_replicated_queue(via, name, more).await;
}

/// One receive from `queue` (no ack), answered or not.
async fn receive_once(
    client: &mut QueueServiceClient<Channel>,
    queue: &str,
) -> Vec<pb::ReceivedMessage> {
    let request = pb::ReceiveRequest {
        queue: queue.to_owned(),
        max_messages: 10,
        wait_ms: Some(500),
        ..Default::default()
    };
    match tokio::time::timeout(RPC_TIMEOUT, client.receive(request)).await {
        Ok(Ok(response)) => response.into_inner().messages,
        _ => Vec::new(),
    }
}

async fn send(client: &mut QueueServiceClient<Channel>, body: &str) {
    let request = pb::SendRequest {
        queue: QUEUE.to_owned(),
        messages: vec![pb::SendMessage {
            body: body.as_bytes().to_vec().into(),
            ..Default::default()
        }],
    };
    client
        .send(request)
        .await
        .unwrap_or_else(|status| panic!("send {body}: {}", show(&status)));
}

/// Receives `body` from the queue without acking until it shows up in the
/// dead-letter queue; returns how often the queue delivered it.
async fn dead_letter(client: &mut QueueServiceClient<Channel>, body: &str) -> u32 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut deliveries = 0;
    loop {
        for message in receive_once(client, QUEUE).await {
            assert_eq!(message.body, body.as_bytes(), "only {body} is in the queue");
            deliveries += 1;
        }
        let dead = receive_once(client, DEAD_LETTERS).await;
        if let Some(message) = dead.iter().find(|m| m.body == body.as_bytes()) {
            let origin = message.dead_letter.as_ref().expect("a dead-letter origin");
            assert_eq!(origin.source_queue, QUEUE);
            return deliveries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{body} never reached {DEAD_LETTERS} ({deliveries} deliveries from {QUEUE})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_dead_letters_and_redrives_across_a_failover_of_their_leader() {
    let (mut cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        ..ClusterOptions::default()
    })
    .await;
    let name = cluster.name().to_owned();
    let gateway = Gateway::start(&cluster.etcd_endpoint(), "127.0.0.64", &[]);
    let via = channel(gateway.url());
    let mut client = QueueServiceClient::new(via.clone());
    create(&via, DEAD_LETTERS, None).await;
    create(&via, QUEUE, Some(DEAD_LETTERS)).await;
    let shared = |v: &common::ClusterView| {
        v.all_led_in_sync(&queues(), 3) && v.leader(&queues()[0]) == v.leader(&queues()[1])
    };
    let view = wait_for_view(
        &mut etcd,
        &name,
        FORM_DEADLINE,
        "both queues led by one host with three in-sync replicas",
        shared,
    )
    .await;

    send(&mut client, "first").await;
    let deliveries = dead_letter(&mut client, "first").await;
    assert_eq!(
        deliveries, MAX_RECEIVE_COUNT,
        "delivered exactly max_receive_count times"
    );

    // The shared leader dies; each queue elects on its own, and the queue's leader
    // then follows the dead-letter queue's.
    let leader = view.leader(&queues()[0]).expect("a leader").to_owned();
    cluster.host_mut(&leader).kill();
    wait_for_view(
        &mut etcd,
        &name,
        DEADLINE,
        "both queues led again by one live host",
        |v| {
            v.leader(&queues()[0])
                .is_some_and(|l| l != leader && v.leader(&queues()[1]) == Some(l))
        },
    )
    .await;
    send(&mut client, "second").await;
    dead_letter(&mut client, "second").await;

    // Redrive: once visible again, both go back to the queue they came from.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut moved = 0;
    while moved < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redrive moved {moved} of 2"
        );
        tokio::time::sleep(Duration::from_millis(VISIBILITY_TIMEOUT_MS)).await;
        let answer = client
            .redrive(pb::RedriveRequest {
                queue: DEAD_LETTERS.to_owned(),
                to_queue: None,
                max_messages: 0,
            })
            .await
            .unwrap_or_else(|status| panic!("redrive: {}", show(&status)));
        moved += answer.into_inner().moved;
    }
    let mut back = BTreeSet::new();
    while back.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {back:?} came back"
        );
        for message in receive_once(&mut client, QUEUE).await {
            back.insert(String::from_utf8(message.body.to_vec()).expect("UTF-8"));
            client
                .ack(pb::AckRequest {
                    queue: QUEUE.to_owned(),
                    receipts: vec![message.receipt],
                })
                .await
                .unwrap_or_else(|status| panic!("ack: {}", show(&status)));
        }
    }
    assert_eq!(
        back,
        BTreeSet::from(["first".to_owned(), "second".to_owned()])
    );
}
