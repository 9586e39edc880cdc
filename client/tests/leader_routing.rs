//! Following partition leaders: a host that leads nothing answers NOT_LEADER with the
//! leader's address, and the client sends there (and keeps sending there) by itself.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use ferry_client::{
    Client, ClientError, ErrorCode, FetchOptions, FetchTarget, OutgoingMessage, Producer,
    ProducerConfig, QueueSettings, ReceiveOptions, Record, TopicPartition, TopicSettings,
};
use support::MockBroker;

/// A "follower" host that points every data request at the "leader" host.
async fn two_hosts() -> (MockBroker, MockBroker) {
    let leader = MockBroker::start().await;
    let follower = MockBroker::start().await;
    *follower.faults.leader_elsewhere.lock().unwrap() = Some(leader.addr());
    (leader, follower)
}

#[tokio::test]
async fn queue_calls_follow_the_leader_hint() {
    let (leader, follower) = two_hosts().await;
    Client::connect(&leader.addr())
        .await
        .unwrap()
        .create_queue("jobs", &QueueSettings::new())
        .await
        .unwrap();
    let client = Client::connect(&follower.addr()).await.unwrap();
    let sent = client
        .send(
            "jobs",
            vec![OutgoingMessage::new("a"), OutgoingMessage::new("b")],
        )
        .await
        .unwrap();
    assert_eq!(sent.len(), 2);
    let received = client
        .receive("jobs", &ReceiveOptions::new(10).with_wait(Duration::ZERO))
        .await
        .unwrap();
    let bodies: Vec<&[u8]> = received.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"a"[..], b"b"]);
}

#[tokio::test]
async fn a_hint_to_an_unreachable_host_fails_retriably() {
    let follower = MockBroker::start().await;
    *follower.faults.leader_elsewhere.lock().unwrap() = Some("127.0.0.1:1".into());
    let client = Client::connect(&follower.addr()).await.unwrap();
    let err = client
        .send("jobs", vec![OutgoingMessage::new("a")])
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn produce_and_fetch_go_to_the_leader() {
    let (leader, follower) = two_hosts().await;
    // Every host of a cluster knows every topic; only the leader serves its data.
    for host in [&leader, &follower] {
        Client::connect(&host.addr())
            .await
            .unwrap()
            .create_topic("t", &TopicSettings::new(2))
            .await
            .unwrap();
    }
    let client = Client::connect(&follower.addr()).await.unwrap();
    let producer = Producer::new(&client, "t", ProducerConfig::default())
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..20 {
        deliveries.push(producer.send(Record::new(format!("v{i}"))).await.unwrap());
    }
    producer.flush().await.unwrap();
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    assert_eq!(leader.stored("t", 0) + leader.stored("t", 1), 20);
    assert_eq!(follower.stored("t", 0) + follower.stored("t", 1), 0);
    let targets = [0, 1].map(|partition| FetchTarget {
        partition: TopicPartition::new("t", partition),
        offset: 0,
        max_bytes: 1 << 20,
    });
    let fetched = client
        .fetch(&targets, FetchOptions::default())
        .await
        .unwrap();
    assert!(fetched.iter().all(|p| p.error.is_none()));
    assert!(fetched.iter().any(|p| !p.records.is_empty()));
}

#[tokio::test]
async fn without_a_hint_the_not_leader_error_comes_back() {
    let follower = MockBroker::start().await;
    // A NOT_LEADER for the queue, but pointing back at the same host: the client
    // gives up after a few redirects with the broker's error.
    *follower.faults.leader_elsewhere.lock().unwrap() = Some(follower.addr());
    let client = Client::connect(&follower.addr()).await.unwrap();
    let err = client
        .send("jobs", vec![OutgoingMessage::new("a")])
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::NotLeader), "{err:?}");
    assert!(err.is_retriable());
}

#[tokio::test]
async fn a_leader_that_cannot_be_reached_is_forgotten() {
    let host = MockBroker::start().await;
    let client = Client::connect(&host.addr()).await.unwrap();
    client
        .create_topic("t", &TopicSettings::new(1))
        .await
        .unwrap();
    let mut builder = ferry_records::BatchBuilder::new();
    builder.push(None, b"v", &[], 1);
    let batch = bytes::Bytes::from(builder.finish().unwrap());
    // The host names a leader nobody can reach: the produce fails retriably…
    *host.faults.leader_elsewhere.lock().unwrap() = Some("127.0.0.1:1".into());
    let failed = client.produce_batches("t", &[(0, batch.clone())]).await;
    // After a redirect the failure is reported per batch.
    let err = match failed {
        Ok(mut results) => results.remove(0).unwrap_err(),
        Err(err) => err,
    };
    assert!(err.is_retriable(), "{err:?}");
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    // …and once the host leads again, the next produce goes to it, not to the
    // unreachable address the client had been told about.
    *host.faults.leader_elsewhere.lock().unwrap() = None;
    let acks = client.produce_batches("t", &[(0, batch)]).await.unwrap();
    assert!(acks[0].is_ok(), "{acks:?}");
    assert_eq!(host.stored("t", 0), 1);
}
