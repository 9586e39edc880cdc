//! The consumer against the in-memory mock broker: reading back, commits, seeks,
//! cooperative rebalance and rejoining after a lost membership.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_client::{
    AutoOffsetReset, Client, ConsumedRecord, Consumer, ConsumerConfig, Producer, ProducerConfig,
    Record, TopicPartition, TopicSettings,
};
use support::MockBroker;

async fn filled(partitions: u32, records: u32) -> (MockBroker, Client) {
    let broker = MockBroker::start().await;
    let client = Client::connect(&broker.addr()).await.unwrap();
    client
        .create_topic("t", &TopicSettings::new(partitions))
        .await
        .unwrap();
    let config = ProducerConfig {
        max_batch_records: 7,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&client, "t", config).await.unwrap();
    for i in 0..records {
        let record = Record::new(format!("v{i}")).with_key(format!("k{i}"));
        drop(producer.send(record).await.unwrap());
    }
    producer.close().await.unwrap();
    (broker, client)
}

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig {
        auto_offset_reset: AutoOffsetReset::Earliest,
        max_poll_records: 25,
        fetch_max_wait_ms: 50,
        ..ConsumerConfig::new(group, vec!["t".into()])
    }
}

async fn drain(consumer: &mut Consumer, want: usize) -> Vec<ConsumedRecord> {
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while records.len() < want && Instant::now() < deadline {
        records.extend(consumer.poll(Duration::from_millis(100)).await.unwrap());
    }
    records
}

#[tokio::test]
async fn an_assigned_reader_reads_everything_once_in_partition_order() {
    let (_broker, client) = filled(3, 200).await;
    let partitions = (0..3).map(|p| TopicPartition::new("t", p)).collect();
    let mut consumer = Consumer::assign(&client, config(""), partitions).unwrap();
    let records = drain(&mut consumer, 200).await;
    assert_eq!(records.len(), 200);
    let values: HashSet<_> = records.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values.len(), 200);
    for p in 0..3 {
        let offsets: Vec<u64> = records
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .collect();
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, expected, "partition {p} in order from 0");
    }
    for record in &records {
        let key = record.key.as_deref().unwrap();
        assert_eq!(record.partition, ferry_records::partition_for_key(key, 3));
    }
    assert!(consumer.commit().await.is_err(), "no group, no commit");
}

#[tokio::test]
async fn commit_and_seek_move_the_position() {
    let (broker, client) = filled(1, 50).await;
    let tp = TopicPartition::new("t", 0);
    let mut consumer = Consumer::assign(&client, config("g"), vec![tp.clone()]).unwrap();
    let first = consumer
        .poll_up_to(Duration::from_secs(2), 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 10);
    consumer.commit().await.unwrap();
    assert_eq!(broker.committed("g", "t", 0), Some(10));
    consumer.seek(&tp, 45);
    let tail = drain(&mut consumer, 5).await;
    assert_eq!(tail.first().map(|r| r.offset), Some(45));
    assert_eq!(consumer.position(&tp), Some(50));
    consumer.close().await.unwrap();
    assert_eq!(broker.committed("g", "t", 0), Some(50));

    // A new reader of the group starts from the committed offset.
    let mut again = Consumer::assign(&client, config("g"), vec![tp.clone()]).unwrap();
    let none = again.poll(Duration::from_millis(200)).await.unwrap();
    assert!(none.is_empty());
    again.seek_to_beginning().await.unwrap();
    assert_eq!(drain(&mut again, 50).await.len(), 50);
}

#[tokio::test]
async fn a_second_member_takes_half_the_partitions_without_overlap() {
    let (broker, client) = filled(4, 400).await;
    let mut first = Consumer::subscribe(&client, config("g")).await.unwrap();
    let early = drain(&mut first, 100).await;
    assert_eq!(first.assignment().len(), 4);
    let mut second = Consumer::subscribe(&client, config("g")).await.unwrap();
    let mut seen: Vec<ConsumedRecord> = early;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && (first.assignment().len() != 2 || second.assignment().len() != 2)
    {
        seen.extend(first.poll(Duration::from_millis(20)).await.unwrap());
        seen.extend(second.poll(Duration::from_millis(20)).await.unwrap());
    }
    assert_eq!(first.assignment().len(), 2);
    assert_eq!(second.assignment().len(), 2);
    let a: HashSet<_> = first.assignment().into_iter().collect();
    assert!(second.assignment().iter().all(|tp| !a.contains(tp)));
    while seen.len() < 400 && Instant::now() < deadline {
        seen.extend(first.poll(Duration::from_millis(20)).await.unwrap());
        seen.extend(second.poll(Duration::from_millis(20)).await.unwrap());
    }
    // Released partitions were committed, so the new owner resumed there: nothing
    // was read twice.
    let unique: HashSet<_> = seen.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(unique.len(), 400);
    assert_eq!(seen.len(), 400);
    assert!(!broker.faults.double_ownership.load(Ordering::SeqCst));
    first.close().await.unwrap();
    second.close().await.unwrap();
}

#[tokio::test]
async fn a_forgotten_member_rejoins_and_continues() {
    let (broker, client) = filled(2, 100).await;
    let mut consumer = Consumer::subscribe(&client, config("g")).await.unwrap();
    let before = drain(&mut consumer, 30).await;
    consumer.commit().await.unwrap();
    let old_member = consumer.member_id();
    broker.expire_members("g");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = Vec::new();
    while Instant::now() < deadline && (consumer.member_id() == old_member || after.len() < 70) {
        after.extend(consumer.poll(Duration::from_millis(50)).await.unwrap());
    }
    assert_ne!(consumer.member_id(), old_member);
    assert_eq!(consumer.assignment().len(), 2);
    let all: HashSet<_> = before
        .iter()
        .chain(&after)
        .map(|r| (r.partition, r.offset))
        .collect();
    assert_eq!(all.len(), 100, "everything read at least once");
}
