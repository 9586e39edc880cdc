//! Queue calls against the in-memory mock broker: field mapping, per-receipt errors,
//! long-poll deadlines, dead-lettering and redrive.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_client::{
    Client, ClientConfig, ClientError, Durability, ErrorCode, OutgoingMessage, QueueSettings,
    ReceiveOptions,
};
use support::MockBroker;

async fn setup() -> (MockBroker, Client) {
    let broker = MockBroker::start().await;
    let client = Client::connect(&broker.addr()).await.unwrap();
    (broker, client)
}

/// Receives without waiting.
fn now(max: u32) -> ReceiveOptions {
    ReceiveOptions::new(max).with_wait(Duration::ZERO)
}

#[tokio::test]
async fn send_receive_ack_round_trip_maps_every_field() {
    let (_broker, client) = setup().await;
    let settings = QueueSettings::new()
        .with_durability(Durability::Interval)
        .with_visibility_timeout(Duration::from_millis(1500));
    let created = client.create_queue("jobs", &settings).await.unwrap();
    assert_eq!(created.name, "jobs");
    assert_eq!(created.settings.durability, Some(Durability::Interval));
    assert_eq!(created.settings.visibility_timeout_ms, Some(1500));
    // Unset fields come back filled with what the broker applies.
    assert_eq!(created.settings.receive_wait_ms, Some(20_000));
    assert!(!created.settings.fifo);

    let messages = vec![
        OutgoingMessage::new("first")
            .with_attribute("kind", "a")
            .with_attribute("n", "1")
            .with_group("g1")
            .with_dedup_id("d1"),
        OutgoingMessage::new(vec![0u8, 255]),
    ];
    let sent = client.send("jobs", messages).await.unwrap();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|receipt| !receipt.duplicate));
    assert_ne!(sent[0].message_id, sent[1].message_id);

    let received = client.receive("jobs", &now(10)).await.unwrap();
    assert_eq!(received.len(), 2);
    let first = &received[0];
    assert_eq!(first.id, sent[0].message_id);
    assert_eq!(&first.body[..], b"first");
    assert_eq!(
        first.attributes.iter().collect::<Vec<_>>(),
        vec![
            (&"kind".to_owned(), &"a".to_owned()),
            (&"n".into(), &"1".into())
        ]
    );
    assert_eq!(first.receive_count, 1);
    assert!(first.sent_at_ms > 1_600_000_000_000);
    assert_eq!(first.group_id.as_deref(), Some("g1"));
    assert_eq!(first.dedup_id.as_deref(), Some("d1"));
    assert_eq!(first.dead_letter, None);
    assert!(!first.receipt.is_empty());
    let second = &received[1];
    assert_eq!(second.id, sent[1].message_id);
    assert_eq!(&second.body[..], &[0u8, 255]);
    assert!(second.attributes.is_empty());
    assert_eq!(second.group_id, None);
    assert_eq!(second.dedup_id, None);

    let described = client.describe_queue("jobs").await.unwrap();
    assert_eq!(described.stats.in_flight, 2);
    assert_eq!(described.stats.visible, 0);

    let results = client
        .ack("jobs", received.iter().map(|m| &m.receipt))
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(Result::is_ok));
    let stats = client.describe_queue("jobs").await.unwrap().stats;
    assert_eq!((stats.total(), stats.acked, stats.received), (0, 2, 2));

    // A second send with the same dedup id is reported as the original.
    let again = client
        .send(
            "jobs",
            vec![OutgoingMessage::new("first").with_dedup_id("d1")],
        )
        .await
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].message_id, sent[0].message_id);
    assert!(client.receive("jobs", &now(10)).await.unwrap().is_empty());
}

#[tokio::test]
async fn per_receipt_errors_tell_stale_from_invalid() {
    let (_broker, client) = setup().await;
    client
        .create_queue("q", &QueueSettings::new())
        .await
        .unwrap();
    client
        .send("q", vec![OutgoingMessage::new("x")])
        .await
        .unwrap();
    let short = now(1).with_visibility_timeout(Duration::from_millis(30));
    let old = client.receive("q", &short).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_millis(60)).await;
    // The visibility timeout ran out: the message comes again with a new receipt.
    let new = client.receive("q", &now(1)).await.unwrap().remove(0);
    assert_eq!(new.id, old.id);
    assert_eq!(new.receive_count, 2);

    let results = client
        .ack("q", [old.receipt.as_str(), &new.receipt, "not-a-receipt"])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    let stale = results[0].as_ref().unwrap_err();
    assert!(stale.is(ErrorCode::ReceiptStale), "{stale:?}");
    assert!(!stale.is_retriable());
    assert!(results[1].is_ok());
    let invalid = results[2].as_ref().unwrap_err();
    assert!(invalid.is(ErrorCode::ReceiptInvalid), "{invalid:?}");
    assert!(!invalid.is_retriable());
    assert!(matches!(invalid, ClientError::Broker { status: None, .. }));

    // Acking twice: the second is stale, for nack and change-visibility alike.
    let twice = client.ack("q", [&new.receipt]).await.unwrap();
    assert!(
        twice[0]
            .as_ref()
            .is_err_and(|e| e.is(ErrorCode::ReceiptStale))
    );
    let nacked = client
        .nack("q", [&new.receipt], Duration::ZERO)
        .await
        .unwrap();
    assert!(
        nacked[0]
            .as_ref()
            .is_err_and(|e| e.is(ErrorCode::ReceiptStale))
    );
    assert!(
        client
            .ack("q", Vec::<String>::new())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn long_poll_receive_outlives_the_request_timeout() {
    let broker = MockBroker::start().await;
    let config = ClientConfig {
        request_timeout: Duration::from_millis(150),
        ..ClientConfig::default()
    };
    let client = Client::connect_with(&broker.addr(), config).await.unwrap();
    client
        .create_queue("q", &QueueSettings::new())
        .await
        .unwrap();

    let start = Instant::now();
    let wait = Duration::from_millis(500);
    let options = ReceiveOptions::new(1).with_wait(wait);
    let received = client.receive("q", &options).await.unwrap();
    assert!(received.is_empty());
    assert!(
        start.elapsed() >= wait,
        "returned after {:?}",
        start.elapsed()
    );
    // The deadline sent is the wait plus the request timeout.
    let deadline = broker.queues.lock().unwrap().last_receive_deadline;
    assert_eq!(deadline, Some(Duration::from_millis(650)));

    // Without a wait of its own, the deadline covers the queue's (unknown) wait.
    client
        .receive("q", &ReceiveOptions::new(1).with_wait(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        broker.queues.lock().unwrap().last_receive_deadline,
        Some(Duration::from_millis(150))
    );

    // A message sent during the wait ends it early.
    let sender = client.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sender
            .send("q", vec![OutgoingMessage::new("late")])
            .await
            .unwrap();
    });
    let options = ReceiveOptions::new(1).with_wait(Duration::from_secs(5));
    let received = client.receive("q", &options).await.unwrap();
    assert_eq!(received.len(), 1);
}

#[tokio::test]
async fn other_queue_calls_keep_the_request_timeout() {
    let broker = MockBroker::start().await;
    let config = ClientConfig {
        request_timeout: Duration::from_millis(100),
        ..ClientConfig::default()
    };
    let client = Client::connect_with(&broker.addr(), config).await.unwrap();
    client
        .create_queue("q", &QueueSettings::new())
        .await
        .unwrap();
    broker
        .faults
        .stall_queue_admin_ms
        .store(2_000, Ordering::SeqCst);
    let start = Instant::now();
    let err = client.describe_queue("q").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(1_000), "{err}");
}

#[tokio::test]
async fn nack_change_visibility_dead_letter_and_redrive() {
    let (_broker, client) = setup().await;
    client
        .create_queue("dlq", &QueueSettings::new())
        .await
        .unwrap();
    client
        .create_queue("q", &QueueSettings::new().with_dead_letter("dlq", 2))
        .await
        .unwrap();
    let dlq = client.describe_queue("dlq").await.unwrap();
    assert_eq!(dlq.dead_letter_sources, vec!["q".to_owned()]);
    client
        .send("q", vec![OutgoingMessage::new("poison")])
        .await
        .unwrap();

    // Nack: visible again at once, with a fresh receipt.
    let first = client.receive("q", &now(1)).await.unwrap().remove(0);
    let nacked = client
        .nack("q", [&first.receipt], Duration::ZERO)
        .await
        .unwrap();
    assert!(nacked[0].is_ok());
    // Change visibility to zero: visible again too.
    let second = client.receive("q", &now(1)).await.unwrap().remove(0);
    assert_eq!(second.receive_count, 2);
    let changed = client
        .change_visibility("q", [&second.receipt], Duration::ZERO)
        .await
        .unwrap();
    assert!(changed[0].is_ok());

    // Past max_receive_count the message goes to the dead-letter queue.
    assert!(client.receive("q", &now(1)).await.unwrap().is_empty());
    let dead = client.receive("dlq", &now(1)).await.unwrap().remove(0);
    let origin = dead.dead_letter.clone().unwrap();
    assert_eq!(origin.source_queue, "q");
    assert_eq!(origin.source_message_id, first.id);
    assert_eq!(origin.receive_count, 2);
    assert!(!origin.reason.is_empty());
    client
        .nack("dlq", [&dead.receipt], Duration::ZERO)
        .await
        .unwrap();

    assert_eq!(client.redrive("dlq", None, Some(0)).await.unwrap(), 0);
    assert_eq!(client.redrive("dlq", None, None).await.unwrap(), 1);
    let back = client.receive("q", &now(1)).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(&back[0].body[..], b"poison");
}

#[tokio::test]
async fn admin_calls_and_missing_queues() {
    let (_broker, client) = setup().await;
    for name in ["b", "a", "c"] {
        client
            .create_queue(name, &QueueSettings::new().fifo())
            .await
            .unwrap();
    }
    let exists = client
        .create_queue("a", &QueueSettings::new())
        .await
        .unwrap_err();
    assert!(exists.is(ErrorCode::QueueAlreadyExists));
    let names: Vec<String> = client
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);

    let batch = (0..3)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    client.send("a", batch).await.unwrap();
    assert_eq!(client.purge_queue("a").await.unwrap(), 3);
    assert_eq!(client.purge_queue("a").await.unwrap(), 0);

    client.delete_queue("a").await.unwrap();
    let missing = client.describe_queue("a").await.unwrap_err();
    assert!(missing.is(ErrorCode::QueueNotFound));
    assert!(!missing.is_retriable());
    let missing = client.receive("a", &now(1)).await.unwrap_err();
    assert!(missing.is(ErrorCode::QueueNotFound));
    let missing = client.ack("a", ["a:0:1"]).await.unwrap_err();
    assert!(missing.is(ErrorCode::QueueNotFound));
    assert!(client.send("a", Vec::new()).await.unwrap().is_empty());
}
