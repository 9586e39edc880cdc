//! Consumer groups through the client library against a real broker: members split
//! partitions and never both receive a message; a silent member loses its
//! partitions; committed offsets survive a broker restart.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{BrokerProcess, channel};
use ferry_client::{
    AutoOffsetReset, Client, ConsumedRecord, Consumer, ConsumerConfig, Producer, ProducerConfig,
    Record, TopicPartition, TopicSettings,
};

const PARTITIONS: u32 = 4;
/// Upper bound on how long a scenario may take before it is declared stuck.
const SCENARIO_LIMIT: Duration = Duration::from_secs(60);

async fn produce(client: &Client, topic: &str, count: usize) {
    let producer = Producer::new(client, topic, ProducerConfig::default())
        .await
        .expect("producer");
    let mut deliveries = Vec::with_capacity(count);
    for i in 0..count {
        let record = Record::new(format!("message-{i:06}")).with_key(format!("key-{}", i % 97));
        deliveries.push(producer.send(record).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("acknowledged");
    }
    producer.close().await.expect("close producer");
}

fn member(group: &str, topic: &str, session_timeout_ms: u32) -> ConsumerConfig {
    ConsumerConfig {
        session_timeout_ms,
        auto_offset_reset: AutoOffsetReset::Earliest,
        auto_commit: false,
        fetch_max_wait_ms: 100,
        max_poll_records: 50,
        ..ConsumerConfig::new(group, vec![topic.to_owned()])
    }
}

/// Polls once and commits what the poll returned, as an at-least-once app would.
async fn poll_and_commit(consumer: &mut Consumer) -> Vec<ConsumedRecord> {
    let records = consumer
        .poll(Duration::from_millis(100))
        .await
        .expect("poll");
    consumer.commit().await.expect("commit");
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_partitions_and_never_share_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path());
    let _ = channel(&broker.url()).await;
    let client = Client::connect(&broker.url()).await.expect("connect");
    client
        .create_topic("events", &TopicSettings::new(PARTITIONS))
        .await
        .expect("create topic");
    let total = 4000;
    produce(&client, "events", total).await;

    let mut a = Consumer::subscribe(&client, member("split", "events", 10_000))
        .await
        .expect("a joins");
    let mut received: BTreeMap<(u32, u64), Vec<&str>> = BTreeMap::new();
    // A alone for a moment, then B joins and both consume concurrently-ish.
    for record in poll_and_commit(&mut a).await {
        received
            .entry((record.partition, record.offset))
            .or_default()
            .push("a");
    }
    let mut b = Consumer::subscribe(&client, member("split", "events", 10_000))
        .await
        .expect("b joins");
    let started = Instant::now();
    while received.len() < total {
        assert!(
            started.elapsed() < SCENARIO_LIMIT,
            "stuck at {} of {total}",
            received.len()
        );
        for record in poll_and_commit(&mut a).await {
            received
                .entry((record.partition, record.offset))
                .or_default()
                .push("a");
        }
        for record in poll_and_commit(&mut b).await {
            received
                .entry((record.partition, record.offset))
                .or_default()
                .push("b");
        }
    }
    for ((partition, offset), by) in &received {
        assert_eq!(by.len(), 1, "{partition}/{offset} delivered to {by:?}");
    }
    for name in ["a", "b"] {
        assert!(
            received.values().any(|by| by[0] == name),
            "member {name} consumed nothing: the split was never exercised"
        );
    }
    // Keep heartbeating until the split settles: 2 partitions each, disjoint.
    let started = Instant::now();
    loop {
        poll_and_commit(&mut a).await;
        poll_and_commit(&mut b).await;
        let (held_a, held_b) = (a.assignment(), b.assignment());
        let overlap: HashSet<_> = held_a.iter().filter(|tp| held_b.contains(tp)).collect();
        assert!(overlap.is_empty(), "both hold {overlap:?}");
        if held_a.len() == 2 && held_b.len() == 2 {
            break;
        }
        assert!(
            started.elapsed() < SCENARIO_LIMIT,
            "no 2/2 split: {held_a:?} {held_b:?}"
        );
    }
    a.close().await.expect("close a");
    b.close().await.expect("close b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_heartbeating_loses_its_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path());
    let client = Client::connect(&broker.url()).await.expect("connect");
    client
        .create_topic("jobs", &TopicSettings::new(PARTITIONS))
        .await
        .expect("create topic");
    produce(&client, "jobs", 400).await;

    let mut silent = Consumer::subscribe(&client, member("workers", "jobs", 1_500))
        .await
        .expect("join");
    let mut survivor = Consumer::subscribe(&client, member("workers", "jobs", 10_000))
        .await
        .expect("join");
    let started = Instant::now();
    while silent.assignment().len() + survivor.assignment().len() < PARTITIONS as usize
        || silent.assignment().is_empty()
    {
        assert!(started.elapsed() < SCENARIO_LIMIT, "never split");
        poll_and_commit(&mut silent).await;
        poll_and_commit(&mut survivor).await;
    }
    let held_by_silent = silent.assignment();
    // The process hangs: no more heartbeats, no leave.
    drop(silent);
    let started = Instant::now();
    while survivor.assignment().len() < PARTITIONS as usize {
        assert!(
            started.elapsed() < SCENARIO_LIMIT,
            "partitions never moved: {:?}",
            survivor.assignment()
        );
        poll_and_commit(&mut survivor).await;
    }
    for tp in held_by_silent {
        assert!(survivor.assignment().contains(&tp), "{tp:?} did not move");
    }
    survivor.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(dir.path());
    let client = Client::connect(&broker.url()).await.expect("connect");
    client
        .create_topic("ledger", &TopicSettings::new(1))
        .await
        .expect("create topic");
    produce(&client, "ledger", 100).await;

    let mut consumer = Consumer::assign(
        &client,
        member("audit", "ledger", 10_000),
        vec![TopicPartition::new("ledger", 0)],
    )
    .expect("assign");
    let mut consumed = 0;
    let started = Instant::now();
    while consumed < 60 {
        assert!(started.elapsed() < SCENARIO_LIMIT, "stuck");
        consumed += consumer
            .poll_up_to(Duration::from_millis(100), 60 - consumed)
            .await
            .expect("poll")
            .len();
    }
    consumer.commit().await.expect("commit");
    drop(consumer);
    broker.kill9();

    let broker = BrokerProcess::start(dir.path());
    let client = Client::connect(&broker.url()).await.expect("reconnect");
    let mut resumed = Consumer::subscribe(&client, member("audit", "ledger", 10_000))
        .await
        .expect("join");
    let mut rest = Vec::new();
    let started = Instant::now();
    while rest.len() < 40 {
        assert!(
            started.elapsed() < SCENARIO_LIMIT,
            "stuck at {}",
            rest.len()
        );
        rest.extend(poll_and_commit(&mut resumed).await);
    }
    assert_eq!(
        rest.first().map(|r| r.offset),
        Some(60),
        "resumed at the committed offset"
    );
    assert_eq!(
        rest.len(),
        40,
        "nothing before the committed offset came back"
    );
    resumed.close().await.expect("close");
}
