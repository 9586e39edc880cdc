//! Point-to-point queues against a real broker process: competing consumers, real
//! visibility timeouts, dead-lettering and redrive, FIFO order under many consumers,
//! dedup, delay, at-most-once, bad input, and the admin calls.
//!
//! No test asserts that something happened fast. Timeouts are failure guards only;
//! where a check depends on "too early" (a message must not come back before its
//! visibility timeout), the test measures time and asserts only the causal bound.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::queue::{
    INVALID, NOT_FOUND, PATIENCE, QueueClient, ack, assert_refused, body_text, change_visibility,
    codes, create_queue, depth, describe, message, nack, queues, receipt_error, receipts, receive,
    receive_eventually, receive_request, redrive, send, start, stats,
};
use common::{BrokerProcess, channel};
use ferry_proto::v1 as pb;

const COMPETING_MESSAGES: u64 = 100_000;
const COMPETING_BATCH: u64 = 1000;
const COMPETING_CONSUMERS: usize = 8;

/// One consumer of the competing-consumers scenario: receives and acks until every
/// message was acked by someone, recording which bodies it got.
async fn compete(
    url: String,
    consumer: usize,
    taken: Arc<Mutex<HashMap<u64, usize>>>,
    acked: Arc<AtomicU64>,
) {
    let mut client = queues(&channel(&url).await);
    let deadline = Instant::now() + Duration::from_secs(180);
    while acked.load(Ordering::Acquire) < COMPETING_MESSAGES {
        assert!(Instant::now() < deadline, "consumer {consumer} is stuck");
        // A 60 s visibility timeout: nothing may time out and be redelivered.
        let got = receive(&mut client, "work", 100, 1000, 60_000).await;
        if got.is_empty() {
            continue;
        }
        {
            let mut taken = taken.lock().expect("taken lock");
            for m in &got {
                assert_eq!(m.receive_count, 1, "redelivered: {m:?}");
                let body: u64 = body_text(m).parse().expect("numeric body");
                if let Some(other) = taken.insert(body, consumer) {
                    panic!("body {body} delivered to consumers {other} and {consumer}");
                }
            }
        }
        let results = ack(&mut client, "work", receipts(&got)).await;
        assert_eq!(results.len(), got.len(), "one ack result per receipt");
        for result in &results {
            assert_eq!(receipt_error(result), None, "ack failed: {result:?}");
        }
        acked.fetch_add(got.len() as u64, Ordering::AcqRel);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_ack_every_message_exactly_once() {
    let (_dir, broker, mut client) = start().await;
    create_queue(&mut client, "work", pb::QueueConfig::default()).await;

    let started = Instant::now();
    let taken = Arc::new(Mutex::new(HashMap::new()));
    let acked = Arc::new(AtomicU64::new(0));
    let consumers: Vec<_> = (0..COMPETING_CONSUMERS)
        .map(|c| {
            tokio::spawn(compete(
                broker.url(),
                c,
                Arc::clone(&taken),
                Arc::clone(&acked),
            ))
        })
        .collect();
    for batch in 0..COMPETING_MESSAGES / COMPETING_BATCH {
        let first = batch * COMPETING_BATCH;
        let messages = (first..first + COMPETING_BATCH)
            .map(|n| message(n.to_string()))
            .collect();
        let results = send(&mut client, "work", messages).await;
        assert_eq!(results.len() as u64, COMPETING_BATCH);
        assert!(results.iter().all(|r| !r.duplicate));
    }
    for consumer in consumers {
        consumer.await.expect("consumer task");
    }
    eprintln!(
        "competing consumers: {COMPETING_MESSAGES} messages in {:?}",
        started.elapsed()
    );

    {
        let taken = taken.lock().expect("taken lock");
        assert_eq!(
            taken.len() as u64,
            COMPETING_MESSAGES,
            "distinct bodies acked"
        );
        assert!(taken.keys().all(|body| *body < COMPETING_MESSAGES));
        let mut per_consumer = [0usize; COMPETING_CONSUMERS];
        for consumer in taken.values() {
            per_consumer[*consumer] += 1;
        }
        eprintln!("messages per consumer: {per_consumer:?}");
    }
    assert_eq!(acked.load(Ordering::Acquire), COMPETING_MESSAGES);
    let end = stats(&mut client, "work").await;
    assert_eq!(
        (end.visible, end.in_flight, end.delayed),
        (0, 0, 0),
        "{end:?}"
    );
    assert_eq!(end.sent, COMPETING_MESSAGES);
    assert_eq!(end.acked, COMPETING_MESSAGES);
    assert_eq!(end.redelivered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_timeout_redelivers_and_stale_receipts_change_nothing() {
    let (_dir, _broker, mut c) = start().await;
    let config = pb::QueueConfig {
        visibility_timeout_ms: Some(300),
        ..Default::default()
    };
    create_queue(&mut c, "vis", config).await;
    let id = send(&mut c, "vis", vec![message("v")]).await[0]
        .message_id
        .clone();

    let received_at = Instant::now();
    let first = receive(&mut c, "vis", 1, 2000, 300).await;
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].receive_count, &first[0].message_id), (1, &id));
    // Asked again at once, with a minute's visibility so a late answer holds still.
    let again = receive(&mut c, "vis", 1, 0, 60_000).await;
    if !again.is_empty() {
        // Only legitimate when this machine was too slow to ask within 300 ms.
        assert!(
            received_at.elapsed() >= Duration::from_millis(300),
            "redelivered before its visibility timeout"
        );
    }
    let second = if again.is_empty() {
        receive_eventually(&mut c, "vis", 1, 60_000).await
    } else {
        again
    };
    assert_eq!((second[0].receive_count, &second[0].message_id), (2, &id));
    assert_ne!(second[0].receipt, first[0].receipt);
    let stale = ack(&mut c, "vis", receipts(&first)).await;
    assert_eq!(receipt_error(&stale[0]), Some(pb::ErrorCode::ReceiptStale));
    let after_stale = stats(&mut c, "vis").await;
    assert_eq!(after_stale.acked, 0, "a stale ack deleted the message");
    assert_eq!(
        (after_stale.in_flight, depth(&after_stale)),
        (1, 1),
        "{after_stale:?}"
    );

    // Nack with a delay: invisible for the delay, then delivered again.
    let nacked_at = Instant::now();
    let nacked = nack(&mut c, "vis", receipts(&second), 800).await;
    assert_eq!(receipt_error(&nacked[0]), None, "{nacked:?}");
    // Taken before asking: time measured from here is never less than from delivery.
    let mut delivered_at = Instant::now();
    let early = receive(&mut c, "vis", 1, 0, 300).await;
    if !early.is_empty() {
        assert!(
            nacked_at.elapsed() >= Duration::from_millis(800),
            "a nacked message came back before its delay"
        );
    }
    let third = if early.is_empty() {
        receive_eventually(&mut c, "vis", 1, 300).await
    } else {
        early
    };
    assert_eq!(third[0].receive_count, 3);

    // Extend the visibility timeout: it then stays away well past the original 300 ms.
    let mut current = third;
    let mut extended = false;
    for _ in 0..5 {
        let results = change_visibility(&mut c, "vis", receipts(&current), 60_000).await;
        match receipt_error(&results[0]) {
            None => {
                extended = true;
                break;
            }
            Some(pb::ErrorCode::ReceiptStale) => {
                // Only legitimate when the 300 ms ran out before the change arrived.
                assert!(delivered_at.elapsed() >= Duration::from_millis(300));
                delivered_at = Instant::now();
                current = receive_eventually(&mut c, "vis", 1, 300).await;
            }
            other => panic!("change visibility failed: {other:?}"),
        }
    }
    assert!(
        extended,
        "could not extend the visibility timeout in 5 tries"
    );
    let while_extended = receive(&mut c, "vis", 1, 1500, 300).await;
    assert!(
        while_extended.is_empty(),
        "an extended message was redelivered: {while_extended:?}"
    );
    assert_eq!(stats(&mut c, "vis").await.in_flight, 1);
    let acked = ack(&mut c, "vis", receipts(&current)).await;
    assert_eq!(receipt_error(&acked[0]), None, "{acked:?}");
    let end = stats(&mut c, "vis").await;
    assert_eq!(depth(&end), 0, "{end:?}");
    assert!(end.redelivered >= 1, "{end:?}");
}

/// Receives `queue`'s one message once per expected count, never acking it.
async fn receive_without_ack(c: &mut QueueClient, queue: &str, id: &str, counts: &[u32]) {
    for &count in counts {
        let got = receive_eventually(c, queue, 10, 200).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].receive_count, got[0].message_id.as_str()),
            (count, id)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_after_exactly_max_receive_count_and_redrives() {
    let (_dir, _broker, mut c) = start().await;
    create_queue(&mut c, "dlq", pb::QueueConfig::default()).await;
    create_queue(&mut c, "third", pb::QueueConfig::default()).await;
    let config = pb::QueueConfig {
        visibility_timeout_ms: Some(200),
        max_receive_count: Some(3),
        dead_letter_queue: Some("dlq".into()),
        ..Default::default()
    };
    create_queue(&mut c, "src", config).await;
    let attributes: HashMap<String, String> = [("kind".to_owned(), "poison".to_owned())].into();
    let sent = pb::SendMessage {
        attributes: attributes.clone(),
        ..message("poison-body")
    };
    let id = send(&mut c, "src", vec![sent]).await[0].message_id.clone();

    receive_without_ack(&mut c, "src", &id, &[1, 2, 3]).await;
    let dead = receive_eventually(&mut c, "dlq", 10, 60_000).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].body.as_ref(), b"poison-body");
    assert_eq!(dead[0].attributes, attributes);
    let origin = dead[0].dead_letter.as_ref().expect("dead-letter origin");
    assert_eq!(origin.source_queue, "src");
    assert_eq!(origin.source_message_id, id);
    assert_eq!(origin.receive_count, 3);
    assert!(origin.dead_lettered_at_ms > 0);
    let fourth = receive(&mut c, "src", 10, 1000, 200).await;
    assert!(fourth.is_empty(), "received a 4th time: {fourth:?}");
    let source = stats(&mut c, "src").await;
    assert_eq!(depth(&source), 0, "{source:?}");
    assert_eq!(describe(&mut c, "dlq").await.dead_letter_sources, ["src"]);

    // Redrive to where it came from: it starts over there.
    let released = nack(&mut c, "dlq", receipts(&dead), 0).await;
    assert_eq!(receipt_error(&released[0]), None);
    assert_eq!(redrive(&mut c, "dlq", None).await, 1);
    assert_eq!(depth(&stats(&mut c, "dlq").await), 0);
    let back = receive_eventually(&mut c, "src", 10, 200).await;
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].body.as_ref(), b"poison-body");
    assert_eq!(back[0].attributes, attributes);
    assert_eq!(back[0].receive_count, 1);
    assert!(back[0].dead_letter.is_none());

    // Dead-letter it again, then redrive it somewhere else.
    let id = back[0].message_id.clone();
    receive_without_ack(&mut c, "src", &id, &[2, 3]).await;
    let dead = receive_eventually(&mut c, "dlq", 10, 60_000).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0]
            .dead_letter
            .as_ref()
            .map(|o| o.source_message_id.as_str()),
        Some(id.as_str())
    );
    nack(&mut c, "dlq", receipts(&dead), 0).await;
    // Into itself would move the same messages round and round.
    let onto_itself = c
        .redrive(pb::RedriveRequest {
            queue: "dlq".into(),
            to_queue: Some("dlq".into()),
            max_messages: 0,
        })
        .await;
    assert_refused("redrive into itself", onto_itself, INVALID);
    assert_eq!(depth(&stats(&mut c, "dlq").await), 1);
    assert_eq!(redrive(&mut c, "dlq", Some("third")).await, 1);
    let moved = receive_eventually(&mut c, "third", 10, 60_000).await;
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].body.as_ref(), b"poison-body");
    assert_eq!(moved[0].receive_count, 1);
    assert!(moved[0].dead_letter.is_none());
    assert_eq!(depth(&stats(&mut c, "dlq").await), 0);
    assert_eq!(depth(&stats(&mut c, "src").await), 0);
    // The counter moves once the source's removal is journaled, just after the copy.
    let deadline = Instant::now() + PATIENCE;
    while stats(&mut c, "src").await.dead_lettered != 2 {
        assert!(
            Instant::now() < deadline,
            "dead-lettered count never reached 2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const FIFO_GROUPS: u32 = 20;
const FIFO_PER_GROUP: u32 = 200;
const FIFO_CONSUMERS: usize = 6;

/// What the FIFO consumers share: the one outstanding receipt per group, and per
/// group the sequence numbers acked so far, in ack order.
#[derive(Default)]
struct FifoLedger {
    outstanding: HashMap<String, String>,
    acked: BTreeMap<String, Vec<u32>>,
    total_acked: u32,
}

fn fifo_body(message: &pb::ReceivedMessage) -> (String, u32) {
    let text = body_text(message);
    let (group, seq) = text.split_once(':').expect("group:seq body");
    (group.to_owned(), seq.parse().expect("numeric sequence"))
}

async fn fifo_consume(url: String, ledger: Arc<Mutex<FifoLedger>>) {
    let mut c = queues(&channel(&url).await);
    let deadline = Instant::now() + Duration::from_secs(120);
    let total = FIFO_GROUPS * FIFO_PER_GROUP;
    while ledger.lock().expect("ledger").total_acked < total {
        assert!(Instant::now() < deadline, "FIFO consumer is stuck");
        let got = receive(&mut c, "fifo", 10, 1000, 30_000).await;
        let mut to_ack = Vec::new();
        let mut to_nack = Vec::new();
        {
            let mut ledger = ledger.lock().expect("ledger");
            for m in &got {
                let (group, seq) = fifo_body(m);
                assert_eq!(m.group_id, group);
                if let Some(other) = ledger.outstanding.get(&group) {
                    panic!("{group}: {seq} delivered while {other} is in flight");
                }
                let next = ledger.acked.get(&group).map_or(0, Vec::len);
                assert_eq!(seq as usize, next, "{group} delivered out of order");
                ledger.outstanding.insert(group, m.receipt.clone());
                if seq % 7 == 0 && m.receive_count == 1 {
                    to_nack.push(m);
                } else {
                    to_ack.push(m);
                }
            }
            // Cleared before the ack is sent: once the broker has it, the group's next
            // message may go to another consumer before this one hears back.
            for m in to_ack.iter().chain(&to_nack) {
                ledger.outstanding.remove(&m.group_id);
            }
            for m in &to_ack {
                let (group, seq) = fifo_body(m);
                ledger.acked.entry(group).or_default().push(seq);
                ledger.total_acked += 1;
            }
        }
        if !to_ack.is_empty() {
            let receipts = to_ack.iter().map(|m| m.receipt.clone()).collect();
            for result in ack(&mut c, "fifo", receipts).await {
                assert_eq!(receipt_error(&result), None, "FIFO ack failed: {result:?}");
            }
        }
        if !to_nack.is_empty() {
            let receipts = to_nack.iter().map(|m| m.receipt.clone()).collect();
            for result in nack(&mut c, "fifo", receipts, 0).await {
                assert_eq!(receipt_error(&result), None, "FIFO nack failed: {result:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_keeps_group_order_and_one_in_flight_per_group_under_many_consumers() {
    let (_dir, broker, mut c) = start().await;
    let config = pb::QueueConfig {
        fifo: true,
        ..Default::default()
    };
    create_queue(&mut c, "fifo", config).await;
    // Each send interleaves every group; order within a group is send order.
    for first in (0..FIFO_PER_GROUP).step_by(10) {
        let mut messages = Vec::new();
        for seq in first..first + 10 {
            for group in 0..FIFO_GROUPS {
                let group = format!("g{group:02}");
                messages.push(pb::SendMessage {
                    group_id: group.clone(),
                    ..message(format!("{group}:{seq}"))
                });
            }
        }
        send(&mut c, "fifo", messages).await;
    }

    let ledger = Arc::new(Mutex::new(FifoLedger::default()));
    let consumers: Vec<_> = (0..FIFO_CONSUMERS)
        .map(|_| tokio::spawn(fifo_consume(broker.url(), Arc::clone(&ledger))))
        .collect();
    for consumer in consumers {
        consumer.await.expect("FIFO consumer");
    }
    {
        let ledger = ledger.lock().expect("ledger");
        assert_eq!(ledger.acked.len(), FIFO_GROUPS as usize);
        let expected: Vec<u32> = (0..FIFO_PER_GROUP).collect();
        for (group, acked) in &ledger.acked {
            assert_eq!(acked, &expected, "{group} acked out of order");
        }
    }
    let end = stats(&mut c, "fifo").await;
    assert_eq!(depth(&end), 0, "{end:?}");
    assert_eq!(end.acked, u64::from(FIFO_GROUPS * FIFO_PER_GROUP));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_inside_the_window_and_not_outside() {
    let (_dir, _broker, mut c) = start().await;
    let config = pb::QueueConfig {
        dedup_window_ms: Some(1000),
        ..Default::default()
    };
    create_queue(&mut c, "dedup", config).await;
    let with_id = || pb::SendMessage {
        dedup_id: "x".into(),
        ..message("once")
    };
    let first = send(&mut c, "dedup", vec![with_id()]).await.remove(0);
    assert!(!first.duplicate);
    let again = send(&mut c, "dedup", vec![with_id()]).await.remove(0);
    assert!(again.duplicate);
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(depth(&stats(&mut c, "dedup").await), 1);

    // Resend until the window has passed; every resend inside it is a duplicate.
    let deadline = Instant::now() + PATIENCE;
    let stored_again = loop {
        let result = send(&mut c, "dedup", vec![with_id()]).await.remove(0);
        if !result.duplicate {
            break result;
        }
        assert_eq!(result.message_id, first.message_id);
        assert!(Instant::now() < deadline, "the dedup window never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(stored_again.message_id, first.message_id);
    let after = stats(&mut c, "dedup").await;
    assert_eq!(depth(&after), 2, "{after:?}");
    assert!(after.deduplicated >= 1);

    let config = pb::QueueConfig {
        content_based_dedup: true,
        ..Default::default()
    };
    create_queue(&mut c, "content", config).await;
    let one = send(&mut c, "content", vec![message("same")])
        .await
        .remove(0);
    let two = send(&mut c, "content", vec![message("same")])
        .await
        .remove(0);
    let other = send(&mut c, "content", vec![message("different")])
        .await
        .remove(0);
    assert!(!one.duplicate && two.duplicate && !other.duplicate);
    assert_eq!(two.message_id, one.message_id);
    assert_eq!(depth(&stats(&mut c, "content").await), 2);
}

/// Sends one message and checks it stays delayed until a long poll gets it.
async fn check_delayed(c: &mut QueueClient, queue: &str, sent: pb::SendMessage, delay: Duration) {
    let sent_at = Instant::now();
    send(c, queue, vec![sent]).await;
    let early = receive(c, queue, 1, 0, 30_000).await;
    let delayed = stats(c, queue).await.delayed;
    if !early.is_empty() || delayed == 0 {
        assert!(
            sent_at.elapsed() >= delay,
            "{queue}: delivered or undelayed before its delay"
        );
    }
    if early.is_empty() {
        let got = receive_eventually(c, queue, 1, 30_000).await;
        assert!(sent_at.elapsed() >= delay, "{queue}: delivered early");
        ack(c, queue, receipts(&got)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_wait_for_their_delay() {
    let (_dir, _broker, mut c) = start().await;
    create_queue(&mut c, "plain", pb::QueueConfig::default()).await;
    let config = pb::QueueConfig {
        delay_ms: Some(1500),
        ..Default::default()
    };
    create_queue(&mut c, "slow", config).await;
    let own_delay = pb::SendMessage {
        delay_ms: Some(1500),
        ..message("own")
    };
    check_delayed(&mut c, "plain", own_delay, Duration::from_millis(1500)).await;
    check_delayed(
        &mut c,
        "slow",
        message("default"),
        Duration::from_millis(1500),
    )
    .await;

    let too_long = pb::SendMessage {
        delay_ms: Some(15 * 60 * 1000 + 1),
        ..message("never")
    };
    let refused = c
        .send(pb::SendRequest {
            queue: "plain".into(),
            messages: vec![message("fine"), too_long],
        })
        .await;
    assert_eq!(
        codes(refused),
        (tonic::Code::InvalidArgument, pb::ErrorCode::InvalidArgument)
    );
    let plain = stats(&mut c, "plain").await;
    assert_eq!(depth(&plain), 0, "{plain:?}");
    assert_eq!(plain.sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_receive_deletes_on_delivery() {
    let (_dir, _broker, mut c) = start().await;
    create_queue(&mut c, "amo", pb::QueueConfig::default()).await;
    send(&mut c, "amo", vec![message("gone")]).await;
    let got = c
        .receive(pb::ReceiveRequest {
            mode: pb::ReceiveMode::AtMostOnce as i32,
            ..receive_request("amo", 10, 2000, 30_000)
        })
        .await
        .expect("receive")
        .into_inner()
        .messages;
    assert_eq!(got.len(), 1);
    let after = stats(&mut c, "amo").await;
    assert_eq!(depth(&after), 0, "{after:?}");
    let late = ack(&mut c, "amo", receipts(&got)).await;
    assert_eq!(receipt_error(&late[0]), Some(pb::ErrorCode::ReceiptStale));
}

/// Sends, receives and acks on an unknown queue.
async fn check_unknown_queue(c: &mut QueueClient) {
    let send = c
        .send(pb::SendRequest {
            queue: "missing".into(),
            messages: vec![message("x")],
        })
        .await;
    assert_refused("send to an unknown queue", send, NOT_FOUND);
    let received = c.receive(receive_request("missing", 1, 0, 1000)).await;
    assert_refused("receive from an unknown queue", received, NOT_FOUND);
    let acked = c
        .ack(pb::AckRequest {
            queue: "missing".into(),
            receipts: vec!["garbage".into()],
        })
        .await;
    assert_refused("ack on an unknown queue", acked, NOT_FOUND);
}

/// Forged receipts get a per-receipt RECEIPT_INVALID from ack, nack and visibility
/// changes, and change nothing.
async fn check_forged_receipts(c: &mut QueueClient, real: &str, foreign: &str) {
    let forged = vec![
        "garbage".to_owned(),
        // Valid base64 of 24 bytes, one short of a receipt.
        "A".repeat(32),
        format!("{real}AAAA"),
        foreign.to_owned(),
    ];
    let results = ack(c, "good", forged.clone()).await;
    let nacked = nack(c, "good", forged.clone(), 0).await;
    let changed = change_visibility(c, "good", forged.clone(), 1000).await;
    for outcome in [results, nacked, changed] {
        assert_eq!(outcome.len(), forged.len());
        for (result, receipt) in outcome.iter().zip(&forged) {
            assert_eq!(result.receipt, *receipt);
            assert_eq!(
                receipt_error(result),
                Some(pb::ErrorCode::ReceiptInvalid),
                "{receipt:?}"
            );
        }
    }
}

/// A send that must be refused: what it tests, the queue, the messages, the codes.
type RefusedSend = (
    &'static str,
    &'static str,
    Vec<pb::SendMessage>,
    (tonic::Code, pb::ErrorCode),
);

/// Requests over a limit or against a rule, each refused whole.
async fn check_limits(c: &mut QueueClient) {
    let over_visibility = 12 * 60 * 60 * 1000 + 1;
    let received = c
        .receive(receive_request("good", 1, 0, over_visibility))
        .await;
    assert_refused("receive visibility over the max", received, INVALID);
    let received = c.receive(receive_request("good", 10_001, 0, 1000)).await;
    assert_refused("receive max_messages over the limit", received, INVALID);
    let changed = c
        .change_visibility(pb::ChangeVisibilityRequest {
            queue: "good".into(),
            receipts: vec!["garbage".into()],
            visibility_timeout_ms: over_visibility,
        })
        .await;
    assert_refused("change visibility over the max", changed, INVALID);

    let refused_sends: Vec<RefusedSend> = vec![
        (
            "delay over the max",
            "good",
            vec![
                message("fine"),
                pb::SendMessage {
                    delay_ms: Some(15 * 60 * 1000 + 1),
                    ..message("late")
                },
            ],
            INVALID,
        ),
        (
            "reserved attribute name",
            "good",
            vec![pb::SendMessage {
                attributes: [("ferry.x".to_owned(), "y".to_owned())].into(),
                ..message("reserved")
            }],
            INVALID,
        ),
        (
            "message over max_message_bytes",
            "good",
            vec![message("fine"), message(vec![7u8; 1025])],
            (tonic::Code::InvalidArgument, pb::ErrorCode::MessageTooLarge),
        ),
        (
            "FIFO message without a group",
            "fifo",
            vec![
                pb::SendMessage {
                    group_id: "g".into(),
                    ..message("first")
                },
                pb::SendMessage {
                    group_id: "g".into(),
                    ..message("second")
                },
                message("no group"),
            ],
            INVALID,
        ),
    ];
    for (what, queue, messages, expected) in refused_sends {
        let result = c
            .send(pb::SendRequest {
                queue: queue.into(),
                messages,
            })
            .await;
        assert_refused(what, result, expected);
    }
    let fifo = stats(c, "fifo").await;
    assert_eq!((depth(&fifo), fifo.sent), (0, 0), "{fifo:?}");
}

/// Admin calls that break a rule.
async fn check_admin_rules(c: &mut QueueClient) {
    create_queue(c, "dlq", pb::QueueConfig::default()).await;
    let uses_dlq = pb::QueueConfig {
        max_receive_count: Some(2),
        dead_letter_queue: Some("dlq".into()),
        ..Default::default()
    };
    create_queue(c, "uses-dlq", uses_dlq).await;
    let deleted = c
        .delete_queue(pb::DeleteQueueRequest { name: "dlq".into() })
        .await;
    assert_refused(
        "deleting a dead-letter queue in use",
        deleted,
        (tonic::Code::FailedPrecondition, pb::ErrorCode::QueueInUse),
    );
    let missing_dlq = pb::QueueConfig {
        max_receive_count: Some(2),
        dead_letter_queue: Some("nowhere".into()),
        ..Default::default()
    };
    let created = c
        .create_queue(pb::CreateQueueRequest {
            name: "orphan".into(),
            config: Some(missing_dlq),
        })
        .await;
    assert_refused("a dead-letter queue that does not exist", created, INVALID);
    let created = c
        .create_queue(pb::CreateQueueRequest {
            name: "good".into(),
            config: None,
        })
        .await;
    assert_refused(
        "duplicate create",
        created,
        (
            tonic::Code::AlreadyExists,
            pb::ErrorCode::QueueAlreadyExists,
        ),
    );
    let names: Vec<String> = c
        .list_queues(pb::ListQueuesRequest {})
        .await
        .expect("list")
        .into_inner()
        .queues
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert!(!names.contains(&"orphan".to_owned()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_loses_nothing() {
    let (_dir, mut broker, mut c) = start().await;
    let small = pb::QueueConfig {
        max_message_bytes: Some(1024),
        ..Default::default()
    };
    create_queue(&mut c, "good", small).await;
    create_queue(&mut c, "other", pb::QueueConfig::default()).await;
    let fifo = pb::QueueConfig {
        fifo: true,
        ..Default::default()
    };
    create_queue(&mut c, "fifo", fifo).await;
    let kept: Vec<_> = (0..3).map(|i| message(format!("keep-{i}"))).collect();
    send(&mut c, "good", kept).await;
    send(&mut c, "other", vec![message("elsewhere")]).await;
    let held = receive(&mut c, "good", 1, 2000, 60_000).await;
    let foreign = receive(&mut c, "other", 1, 2000, 60_000).await;
    assert_eq!((held.len(), foreign.len()), (1, 1));
    let before = stats(&mut c, "good").await;
    assert_eq!((before.visible, before.in_flight), (2, 1), "{before:?}");

    check_unknown_queue(&mut c).await;
    check_forged_receipts(&mut c, &held[0].receipt, &foreign[0].receipt).await;
    check_limits(&mut c).await;
    check_admin_rules(&mut c).await;
    let after = stats(&mut c, "good").await;
    assert_eq!(
        (after.visible, after.in_flight, after.delayed, after.sent),
        (2, 1, 0, 3),
        "bad input changed the queue: {after:?}"
    );

    // The held receipt still works, and only once.
    let acked = ack(&mut c, "good", receipts(&held)).await;
    assert_eq!(receipt_error(&acked[0]), None, "{acked:?}");
    let again = ack(&mut c, "good", receipts(&held)).await;
    assert_eq!(receipt_error(&again[0]), Some(pb::ErrorCode::ReceiptStale));

    // Still serving after all of it.
    send(&mut c, "good", vec![message("after")]).await;
    let rest = receive(&mut c, "good", 10, 2000, 60_000).await;
    let mut bodies: Vec<String> = rest.iter().map(body_text).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        ["after", "keep-1", "keep-2"].map(str::to_owned).to_vec()
    );

    // SIGTERM with a long poll waiting: a clean exit, and the poll is answered.
    let mut waiter = queues(&channel(&broker.url()).await);
    let polling = tokio::spawn(async move {
        waiter
            .receive(receive_request("good", 1, 20_000, 1000))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exited_cleanly = tokio::task::spawn_blocking(move || broker.terminate())
        .await
        .expect("terminate task");
    assert!(exited_cleanly, "the broker did not exit cleanly on SIGTERM");
    let outcome = tokio::time::timeout(PATIENCE, polling)
        .await
        .expect("the long poll outlived the broker")
        .expect("poll task");
    if let Ok(response) = outcome {
        assert!(response.into_inner().messages.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_list_describe_and_delete() {
    // Long polls may wait ten minutes here, so one that hangs on a deleted queue
    // cannot be mistaken for one whose wait ran out.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start_with(dir.path(), &["--max-receive-wait-ms", "600000"]);
    let mut c = queues(&channel(&broker.url()).await);
    for name in ["c-queue", "a-queue", "b-queue"] {
        create_queue(&mut c, name, pb::QueueConfig::default()).await;
    }
    let mut messages: Vec<_> = (0..9).map(|i| message(format!("m{i}"))).collect();
    messages.push(pb::SendMessage {
        delay_ms: Some(60_000),
        ..message("later")
    });
    send(&mut c, "a-queue", messages).await;
    let taken = receive(&mut c, "a-queue", 3, 2000, 60_000).await;
    assert_eq!(taken.len(), 3);
    let before = stats(&mut c, "a-queue").await;
    assert_eq!(
        (
            before.visible,
            before.in_flight,
            before.delayed,
            before.sent
        ),
        (6, 3, 1, 10),
        "{before:?}"
    );

    let purged = c
        .purge_queue(pb::PurgeQueueRequest {
            name: "a-queue".into(),
        })
        .await
        .expect("purge")
        .into_inner()
        .purged;
    assert_eq!(purged, 10);
    let after = stats(&mut c, "a-queue").await;
    assert_eq!(depth(&after), 0, "{after:?}");
    let late = ack(&mut c, "a-queue", receipts(&taken)).await;
    assert!(
        late.iter()
            .all(|r| receipt_error(r) == Some(pb::ErrorCode::ReceiptStale))
    );
    assert!(receive(&mut c, "a-queue", 10, 0, 1000).await.is_empty());

    let listed = c
        .list_queues(pb::ListQueuesRequest {})
        .await
        .expect("list")
        .into_inner()
        .queues;
    let names: Vec<&str> = listed.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["a-queue", "b-queue", "c-queue"]);
    // Smart clients learn queue leaders from metadata: a standalone host leads all.
    let metadata = ferry_client::Client::connect(&broker.url())
        .await
        .expect("connect")
        .cluster_metadata(&[])
        .await
        .expect("metadata");
    let mut led: Vec<(&str, Option<&str>)> = metadata
        .queues
        .iter()
        .map(|q| (q.name.as_str(), q.partitions[0].leader.as_deref()))
        .collect();
    led.sort_unstable();
    assert_eq!(
        led,
        [
            ("a-queue", Some("standalone")),
            ("b-queue", Some("standalone")),
            ("c-queue", Some("standalone"))
        ]
    );
    let config = describe(&mut c, "b-queue")
        .await
        .config
        .expect("describe returns the config");
    assert_eq!(config.visibility_timeout_ms, Some(30_000));
    assert_eq!(config.receive_wait_ms, Some(20_000));
    assert_eq!(config.max_receive_count, Some(0));
    assert!(!config.fifo);

    c.delete_queue(pb::DeleteQueueRequest {
        name: "b-queue".into(),
    })
    .await
    .expect("delete");
    let received = c.receive(receive_request("b-queue", 1, 0, 1000)).await;
    assert_refused("receive from a deleted queue", received, NOT_FOUND);
    let described = c
        .describe_queue(pb::DescribeQueueRequest {
            name: "b-queue".into(),
        })
        .await;
    assert_refused("describe a deleted queue", described, NOT_FOUND);

    // A long poll waiting on a queue that is deleted returns instead of hanging.
    let mut waiter = queues(&channel(&broker.url()).await);
    let polling = tokio::spawn(async move {
        waiter
            .receive(receive_request("c-queue", 1, 600_000, 1000))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.delete_queue(pb::DeleteQueueRequest {
        name: "c-queue".into(),
    })
    .await
    .expect("delete");
    let outcome = tokio::time::timeout(PATIENCE, polling)
        .await
        .expect("the long poll hung after its queue was deleted")
        .expect("poll task");
    match outcome {
        Ok(response) => assert!(response.into_inner().messages.is_empty()),
        Err(status) => assert_eq!(codes::<()>(Err(status)), NOT_FOUND),
    }
    let listed = c
        .list_queues(pb::ListQueuesRequest {})
        .await
        .expect("list")
        .into_inner()
        .queues;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "a-queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_acks_racing_dead_lettering_never_leave_a_message_in_both_places() {
    let (_dir, _broker, mut c) = start().await;
    create_queue(&mut c, "late-dlq", pb::QueueConfig::default()).await;
    let config = pb::QueueConfig {
        max_receive_count: Some(1),
        dead_letter_queue: Some("late-dlq".into()),
        ..Default::default()
    };
    create_queue(&mut c, "late", config).await;
    let total = 2000u32;
    for first in (0..total).step_by(500) {
        let messages = (first..first + 500)
            .map(|n| message(n.to_string()))
            .collect();
        send(&mut c, "late", messages).await;
    }

    // Ack each batch right around its visibility deadline, when dead-lettering of
    // the same messages may be under way.
    let mut acked = HashSet::new();
    let mut stale = HashSet::new();
    let mut round = 0u64;
    loop {
        let got = receive(&mut c, "late", 100, 0, 300).await;
        if got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(285 + (round % 30))).await;
        round += 1;
        let results = ack(&mut c, "late", receipts(&got)).await;
        for (m, result) in got.iter().zip(&results) {
            let body: u32 = body_text(m).parse().expect("numeric body");
            match receipt_error(result) {
                None => acked.insert(body),
                Some(pb::ErrorCode::ReceiptStale) => stale.insert(body),
                other => panic!("unexpected ack outcome {other:?}"),
            };
        }
    }
    let deadline = Instant::now() + PATIENCE;
    let mut dead = HashSet::new();
    while dead.len() + acked.len() < total as usize {
        assert!(
            Instant::now() < deadline,
            "{} acked + {} dead-lettered of {total}",
            acked.len(),
            dead.len()
        );
        for m in receive(&mut c, "late-dlq", 100, 1000, 600_000).await {
            let body: u32 = body_text(&m).parse().expect("numeric body");
            assert!(dead.insert(body), "{body} dead-lettered twice");
        }
    }
    let both: Vec<_> = acked.intersection(&dead).collect();
    assert!(
        both.is_empty(),
        "{} messages were acked and also dead-lettered, e.g. {:?}",
        both.len(),
        both.iter().take(5).collect::<Vec<_>>()
    );
    assert!(stale.is_subset(&dead), "a refused ack lost its message");
    eprintln!(
        "late acks: {} acked, {} dead-lettered",
        acked.len(),
        dead.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_ack_wakes_a_receiver_waiting_for_the_group() {
    // Long polls may wait ten minutes here, so a receiver nobody wakes cannot be
    // mistaken for one whose wait ran out.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start_with(dir.path(), &["--max-receive-wait-ms", "600000"]);
    let mut c = queues(&channel(&broker.url()).await);
    let config = pb::QueueConfig {
        fifo: true,
        ..Default::default()
    };
    create_queue(&mut c, "fifo-wake", config).await;
    let messages = (0..2)
        .map(|i| pb::SendMessage {
            group_id: "g".into(),
            ..message(format!("m{i}"))
        })
        .collect();
    send(&mut c, "fifo-wake", messages).await;
    let head = receive(&mut c, "fifo-wake", 10, 2000, 600_000).await;
    assert_eq!(head.len(), 1, "only the group's head is receivable");

    let mut waiter = queues(&channel(&broker.url()).await);
    let waiting = tokio::spawn(async move {
        waiter
            .receive(receive_request("fifo-wake", 10, 600_000, 600_000))
            .await
            .expect("receive")
            .into_inner()
            .messages
    });
    // Give the receiver time to start waiting; the outcome does not depend on it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = ack(&mut c, "fifo-wake", receipts(&head)).await;
    assert_eq!(receipt_error(&acked[0]), None);
    let next = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the waiting receiver was not woken when the group's head was acked")
        .expect("receiver task");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].body.as_ref(), b"m1");
}
