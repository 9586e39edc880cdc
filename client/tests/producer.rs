//! The producer against the in-memory mock broker: batching, partitioning,
//! idempotent retries, failures and timeouts.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_client::{
    Client, ClientError, ErrorCode, Partitioner, Producer, ProducerConfig, Record, RecordRef,
    TopicSettings,
};
use support::MockBroker;

async fn setup(partitions: u32) -> (MockBroker, Client) {
    let broker = MockBroker::start().await;
    let client = Client::connect(&broker.addr()).await.unwrap();
    client
        .create_topic("t", &TopicSettings::new(partitions))
        .await
        .unwrap();
    (broker, client)
}

#[tokio::test]
async fn every_record_gets_a_unique_offset_and_keys_pick_partitions() {
    let (broker, client) = setup(3).await;
    let producer = Producer::new(&client, "t", ProducerConfig::default())
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..2_000u32 {
        let record = if i % 2 == 0 {
            Record::new(format!("v{i}")).with_key(format!("k{}", i % 10))
        } else {
            Record::new(format!("v{i}"))
        };
        deliveries.push((record.key.clone(), producer.send(record).await.unwrap()));
    }
    producer.flush().await.unwrap();
    let mut seen = HashSet::new();
    for (key, delivery) in deliveries {
        let stored = delivery.await.unwrap();
        assert!(seen.insert((stored.partition, stored.offset)));
        if let Some(key) = key {
            assert_eq!(stored.partition, ferry_records::partition_for_key(&key, 3));
        }
    }
    let total: u64 = (0..3).map(|p| broker.stored("t", p)).sum();
    assert_eq!(total, 2_000);
    producer.close().await.unwrap();
}

#[tokio::test]
async fn send_batch_reports_positions_in_input_order() {
    let (_broker, client) = setup(2).await;
    let config = ProducerConfig {
        partitioner: Partitioner::RoundRobin,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&client, "t", config).await.unwrap();
    let values: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10]).collect();
    let records: Vec<RecordRef<'_>> = values.iter().map(|v| RecordRef::new(v)).collect();
    let positions = producer.send_batch(&records).await.unwrap().await.unwrap();
    let partitions: Vec<u32> = positions.iter().map(|p| p.partition).collect();
    let first = partitions[0];
    let expected: Vec<u32> = (0..10).map(|i| (first + i) % 2).collect();
    assert_eq!(partitions, expected);
    let offsets: Vec<u64> = positions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
}

#[tokio::test]
async fn lost_responses_are_retried_without_duplicates() {
    let (broker, client) = setup(2).await;
    broker.faults.lose_responses.store(3, Ordering::SeqCst);
    broker.faults.unavailable.store(2, Ordering::SeqCst);
    let config = ProducerConfig {
        max_batch_records: 100,
        retry_backoff: Duration::from_millis(5),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&client, "t", config).await.unwrap();
    let values: Vec<Vec<u8>> = (0..1_000u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let records: Vec<RecordRef<'_>> = values.iter().map(|v| RecordRef::new(v)).collect();
    let positions = producer.send_batch(&records).await.unwrap().await.unwrap();
    assert_eq!(positions.len(), 1_000);
    let unique: HashSet<_> = positions.iter().map(|p| (p.partition, p.offset)).collect();
    assert_eq!(unique.len(), 1_000);
    assert_eq!(broker.stored("t", 0) + broker.stored("t", 1), 1_000);
}

#[tokio::test]
async fn a_rejected_batch_fails_its_records_and_later_batches_still_land() {
    let (broker, client) = setup(1).await;
    broker.faults.reject_batches.store(1, Ordering::SeqCst);
    let producer = Producer::new(&client, "t", ProducerConfig::default())
        .await
        .unwrap();
    let rejected = producer.send(Record::new("big")).await.unwrap();
    producer.flush().await.unwrap();
    let err = rejected.await.unwrap_err();
    assert!(err.is(ErrorCode::MessageTooLarge), "{err}");
    // The sequence did not advance, so the next batch is in order for the broker.
    let next = producer.send(Record::new("ok")).await.unwrap();
    assert_eq!(next.await.unwrap().offset, 0);
    assert_eq!(broker.stored("t", 0), 1);
}

#[tokio::test]
async fn a_broker_that_stays_down_times_deliveries_out() {
    let (broker, client) = setup(1).await;
    broker
        .faults
        .always_unavailable
        .store(true, Ordering::SeqCst);
    let config = ProducerConfig {
        delivery_timeout: Duration::from_millis(300),
        retry_backoff: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(50),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&client, "t", config).await.unwrap();
    let delivery = producer.send(Record::new("x")).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), delivery)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ClientError::DeliveryTimeout { .. }), "{err}");
    // Once the broker is back the producer recovers with a fresh producer id.
    broker
        .faults
        .always_unavailable
        .store(false, Ordering::SeqCst);
    let delivery = producer.send(Record::new("y")).await.unwrap();
    assert_eq!(delivery.await.unwrap().offset, 0);
}

#[tokio::test]
async fn backpressure_bounds_buffered_records() {
    let (broker, client) = setup(1).await;
    broker.faults.unavailable.store(5, Ordering::SeqCst);
    let config = ProducerConfig {
        max_batch_records: 10,
        max_buffered_records: 10,
        retry_backoff: Duration::from_millis(20),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&client, "t", config).await.unwrap();
    for i in 0..10u8 {
        drop(producer.send(Record::new(vec![i])).await.unwrap());
    }
    // The buffer is full until the retried batch is acknowledged.
    let blocked = tokio::time::timeout(Duration::from_millis(30), producer.send(Record::new("x")));
    assert!(blocked.await.is_err());
    let eventually = tokio::time::timeout(Duration::from_secs(5), producer.send(Record::new("x")));
    assert!(eventually.await.unwrap().is_ok());
    producer.close().await.unwrap();
    assert_eq!(broker.stored("t", 0), 11);
    assert!(matches!(
        producer.send(Record::new("late")).await,
        Err(ClientError::Closed(_))
    ));
}

#[tokio::test]
async fn a_missing_topic_is_reported_by_code() {
    let broker = MockBroker::start().await;
    let client = Client::connect(&broker.addr()).await.unwrap();
    let err = Producer::new(&client, "nope", ProducerConfig::default())
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::TopicNotFound));
    assert_eq!(err.to_string(), "topic 'nope' not found");
}
