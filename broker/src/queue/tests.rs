//! State-machine tests with an explicit clock, a replay property test, and on-disk
//! recovery of a whole queue.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;

use crate::config::Limits;
use crate::queue::codec::{Snapshot, StoredMessage};
use crate::queue::instance::{DeliveredMessage, OutgoingMessage, Queue, ReceiveOptions, Settle};
use crate::queue::receipt::decode_receipt;
use crate::queue::settings::{QueueRecord, QueueSettings};
use crate::queue::state::{
    Delivery, Event, MessageState, NewMessage, QueueState, ReceiptError, StateConfig,
};
use crate::topic::ReplicaSets;

const T0: i64 = 1_000_000;

fn standard() -> StateConfig {
    StateConfig {
        fifo: false,
        max_receive_count: 0,
        dedup_window_ms: 300_000,
    }
}

fn message(at: i64) -> NewMessage {
    NewMessage {
        sent_at_ms: at,
        visible_at_ms: at,
        group: None,
        dedup_id: None,
    }
}

fn in_group(at: i64, group: &str) -> NewMessage {
    NewMessage {
        group: Some(Arc::from(group)),
        ..message(at)
    }
}

/// A state with `messages` added at offsets 0.. and promoted.
fn with_messages(config: StateConfig, messages: Vec<NewMessage>) -> QueueState {
    let mut state = QueueState::new(config);
    let count = messages.len() as u64;
    for (offset, m) in messages.into_iter().enumerate() {
        state.add(offset as u64, m);
    }
    state.promote(count, T0);
    state.check_invariants();
    state
}

fn receive(state: &mut QueueState, max: usize, visibility: u64, now: i64) -> Vec<Delivery> {
    let mut next_token = 100 + now as u64;
    let mut events = Vec::new();
    let delivered = state.receive(
        max,
        visibility,
        false,
        now,
        || {
            next_token += 1;
            next_token
        },
        &mut events,
    );
    state.check_invariants();
    delivered
}

fn offsets(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.offset).collect()
}

#[test]
fn unacked_message_comes_back_after_its_visibility_timeout() {
    let mut state = with_messages(standard(), vec![message(T0), message(T0)]);
    let first = receive(&mut state, 10, 1_000, T0);
    assert_eq!(offsets(&first), vec![0, 1]);
    assert!(receive(&mut state, 10, 1_000, T0 + 999).is_empty());
    assert_eq!(state.depth().in_flight, 2);
    state.ack(0, first[0].token).expect("ack");
    let again = receive(&mut state, 10, 1_000, T0 + 1_000);
    assert_eq!(offsets(&again), vec![1]);
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(state.transitions().redelivered, 1);
}

#[test]
fn stale_receipts_change_nothing() {
    let mut state = with_messages(standard(), vec![message(T0)]);
    let first = receive(&mut state, 1, 1_000, T0)[0];
    let second = receive(&mut state, 1, 1_000, T0 + 1_000)[0];
    assert_eq!(state.ack(0, first.token), Err(ReceiptError::Superseded));
    assert_eq!(
        state.change_visibility(0, first.token, 0, T0 + 1_001),
        Err(ReceiptError::Superseded)
    );
    assert_eq!(state.depth().in_flight, 1);
    state.ack(0, second.token).expect("current receipt acks");
    assert_eq!(state.ack(0, second.token), Err(ReceiptError::Gone));
    assert_eq!(state.ack(42, 1), Err(ReceiptError::Gone));
    assert!(state.is_empty());
}

#[test]
fn an_expired_but_not_redelivered_receipt_still_acks() {
    let mut state = with_messages(standard(), vec![message(T0)]);
    let d = receive(&mut state, 1, 1_000, T0)[0];
    state.advance(T0 + 5_000);
    assert_eq!(state.depth().visible, 1);
    assert_eq!(
        state.change_visibility(0, d.token, 10, T0 + 5_000),
        Err(ReceiptError::NotInFlight)
    );
    state
        .ack(0, d.token)
        .expect("ack after expiry, before redelivery");
    assert!(state.is_empty());
    state.check_invariants();
}

#[test]
fn nack_and_visibility_changes_move_the_deadline() {
    let mut state = with_messages(standard(), vec![message(T0), message(T0)]);
    let d = receive(&mut state, 2, 30_000, T0);
    state
        .change_visibility(0, d[0].token, 0, T0 + 10)
        .expect("nack now");
    state
        .change_visibility(1, d[1].token, 100_000, T0 + 10)
        .expect("extend");
    state.check_invariants();
    assert_eq!(offsets(&receive(&mut state, 2, 200_000, T0 + 10)), vec![0]);
    assert!(receive(&mut state, 2, 30_000, T0 + 50_000).is_empty());
    assert_eq!(
        offsets(&receive(&mut state, 2, 30_000, T0 + 100_010)),
        vec![1]
    );
}

#[test]
fn delayed_message_is_invisible_until_its_time() {
    let mut state = QueueState::new(standard());
    state.add(
        0,
        NewMessage {
            visible_at_ms: T0 + 5_000,
            ..message(T0)
        },
    );
    state.add(1, message(T0));
    state.promote(2, T0);
    assert_eq!(state.depth().delayed, 1);
    assert_eq!(state.next_due_ms(), Some(T0 + 5_000));
    assert_eq!(offsets(&receive(&mut state, 10, 60_000, T0)), vec![1]);
    assert!(receive(&mut state, 10, 60_000, T0 + 4_999).is_empty());
    assert_eq!(
        offsets(&receive(&mut state, 10, 60_000, T0 + 5_000)),
        vec![0]
    );
}

#[test]
fn pending_messages_are_invisible_until_promoted() {
    let mut state = QueueState::new(standard());
    state.add(0, message(T0));
    state.add(1, message(T0));
    assert!(receive(&mut state, 10, 1_000, T0).is_empty());
    state.promote(1, T0);
    assert_eq!(offsets(&receive(&mut state, 10, 1_000, T0)), vec![0]);
}

#[test]
fn a_message_due_for_the_dead_letter_queue_no_longer_acks() {
    let config = StateConfig {
        max_receive_count: 1,
        ..standard()
    };
    let mut state = with_messages(config, vec![message(T0)]);
    let d = receive(&mut state, 1, 1_000, T0)[0];
    state.advance(T0 + 1_000);
    assert_eq!(state.dead_letter_candidates(10), vec![0]);
    // The dead-letter copy is made outside the lock; an ack now must not win too.
    assert_eq!(state.ack(0, d.token), Err(ReceiptError::NotInFlight));
    assert_eq!(
        state.dead_lettered(0),
        Some(Event::DeadLettered { offset: 0 })
    );
    state.check_invariants();
}

#[test]
fn dead_letter_after_exactly_max_receive_count() {
    let config = StateConfig {
        max_receive_count: 3,
        ..standard()
    };
    let mut state = with_messages(config, vec![message(T0)]);
    for round in 0..3 {
        let d = receive(&mut state, 1, 1_000, T0 + round * 1_000);
        assert_eq!(d.len(), 1, "receive {round}");
        assert_eq!(d[0].receive_count as i64, round + 1);
    }
    assert!(receive(&mut state, 1, 1_000, T0 + 3_000).is_empty());
    assert_eq!(state.depth().dead_letter, 1);
    assert_eq!(state.dead_letter_candidates(10), vec![0]);
    assert_eq!(
        state.dead_lettered(0),
        Some(Event::DeadLettered { offset: 0 })
    );
    assert!(state.is_empty());
    state.check_invariants();
}

#[test]
fn fifo_keeps_group_order_with_one_in_flight_per_group() {
    let config = StateConfig {
        fifo: true,
        ..standard()
    };
    let mut state = with_messages(
        config,
        vec![
            in_group(T0, "a"),
            in_group(T0, "b"),
            in_group(T0, "a"),
            in_group(T0, "b"),
            in_group(T0, "a"),
        ],
    );
    let first = receive(&mut state, 10, 1_000, T0);
    assert_eq!(offsets(&first), vec![0, 1], "one head per group");
    assert!(receive(&mut state, 10, 1_000, T0).is_empty());
    state.ack(1, first[1].token).expect("ack b0");
    assert_eq!(offsets(&receive(&mut state, 10, 1_000, T0)), vec![3]);
    // a0 times out: it, not a1, is delivered again.
    let again = receive(&mut state, 10, 1_000, T0 + 1_000);
    assert_eq!(offsets(&again), vec![0, 3]);
    state.ack(0, again[0].token).expect("ack a0");
    assert_eq!(
        offsets(&receive(&mut state, 10, 1_000, T0 + 1_000)),
        vec![2]
    );
}

#[test]
fn acking_a_fifo_head_counts_its_successor_as_readied() {
    let config = StateConfig {
        fifo: true,
        ..standard()
    };
    let mut state = with_messages(config, vec![in_group(T0, "g"), in_group(T0, "g")]);
    let head = receive(&mut state, 10, 60_000, T0);
    assert_eq!(offsets(&head), vec![0]);
    let before = state.readied();
    state.ack(0, head[0].token).expect("ack");
    // The queue wakes waiting receivers on this: message 1 is receivable now.
    assert_eq!(state.readied(), before + 1);
    assert_eq!(offsets(&receive(&mut state, 10, 60_000, T0)), vec![1]);
}

#[test]
fn dedup_inside_the_window_and_not_outside() {
    let mut state = QueueState::new(StateConfig {
        dedup_window_ms: 1_000,
        ..standard()
    });
    state.add(
        0,
        NewMessage {
            dedup_id: Some("d".into()),
            ..message(T0)
        },
    );
    assert_eq!(state.find_duplicate("d", T0 + 999), Some(0));
    assert_eq!(state.find_duplicate("e", T0 + 999), None);
    assert_eq!(state.find_duplicate("d", T0 + 1_000), None);
}

#[test]
fn purge_and_retention_remove_messages() {
    let mut state = with_messages(
        standard(),
        vec![message(T0), message(T0 + 10), message(T0 + 20)],
    );
    receive(&mut state, 1, 1_000, T0 + 20);
    let mut events = Vec::new();
    assert_eq!(state.expire(T0 + 15, 10, &mut events), 2);
    assert_eq!(
        events,
        vec![Event::Expired { offset: 0 }, Event::Expired { offset: 1 }]
    );
    state.add(3, message(T0 + 30));
    let (purged, event) = state.purge(4);
    assert_eq!(purged, 2, "one held and one pending");
    assert_eq!(event, Event::Purged { below: 4 });
    assert_eq!(state.promote(4, T0 + 30), 0);
    assert!(state.is_empty());
    state.check_invariants();
}

/// One step of the replay property test.
#[derive(Debug, Clone)]
enum Op {
    Send {
        group: u8,
        delay: u16,
        dedup: Option<u8>,
    },
    Promote,
    Receive {
        max: u8,
        visibility: u16,
    },
    Ack {
        pick: u8,
        stale: bool,
    },
    Visibility {
        pick: u8,
        timeout: u16,
    },
    Advance {
        ms: u16,
    },
    DeadLetter,
    Expire {
        age: u16,
    },
    Purge,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, prop_oneof![Just(0u16), 1u16..3000], proptest::option::of(0u8..6))
            .prop_map(|(group, delay, dedup)| Op::Send { group, delay, dedup }),
        2 => Just(Op::Promote),
        3 => (1u8..5, 1u16..3000).prop_map(|(max, visibility)| Op::Receive { max, visibility }),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(pick, stale)| Op::Ack { pick, stale }),
        1 => (any::<u8>(), 0u16..3000).prop_map(|(pick, timeout)| Op::Visibility { pick, timeout }),
        2 => (1u16..2000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::DeadLetter),
        1 => (1000u16..5000).prop_map(|age| Op::Expire { age }),
        1 => Just(Op::Purge),
    ]
}

/// Comparable view of a state: every message with everything but derived indexes.
fn view(state: &QueueState) -> Vec<(u64, MessageState)> {
    state.messages().map(|(o, m)| (o, m.clone())).collect()
}

proptest! {
    /// Replaying the stored messages and the journal (directly, or through a snapshot
    /// taken midway) rebuilds exactly the live state; FIFO groups never have two in
    /// flight and are delivered in order; receive counts only grow.
    #[test]
    fn journal_replay_rebuilds_the_state(
        fifo: bool,
        max_receive_count in 0u32..4,
        ops in proptest::collection::vec(op(), 1..120),
        snapshot_at in 0usize..120,
    ) {
        let config = StateConfig { fifo, max_receive_count, dedup_window_ms: 2_000 };
        let mut live = QueueState::new(config);
        let mut now = T0;
        let mut next_offset = 0u64;
        let mut durable = 0u64;
        let mut sent: Vec<(u64, NewMessage)> = Vec::new();
        let mut journal: Vec<Event> = Vec::new();
        let mut receipts: Vec<Delivery> = Vec::new();
        let mut token = 0u64;
        let mut delivered_in_group: HashMap<Arc<str>, u64> = HashMap::new();
        let mut snapshot: Option<(Snapshot, usize, usize)> = None;
        for (step, op) in ops.iter().enumerate() {
            match op {
                Op::Send { group, delay, dedup } => {
                    let dedup_id = dedup.map(|d| format!("d{d}"));
                    if let Some(id) = &dedup_id && live.find_duplicate(id, now).is_some() {
                        continue;
                    }
                    let m = NewMessage {
                        sent_at_ms: now,
                        visible_at_ms: now + i64::from(*delay),
                        group: (fifo || *group > 0).then(|| Arc::from(format!("g{group}").as_str())),
                        dedup_id,
                    };
                    live.add(next_offset, m.clone());
                    sent.push((next_offset, m));
                    next_offset += 1;
                }
                Op::Promote => {
                    durable = next_offset;
                    live.promote(durable, now);
                }
                Op::Receive { max, visibility } => {
                    let got = live.receive(usize::from(*max), u64::from(*visibility), false, now, || { token += 1; token }, &mut journal);
                    if fifo {
                        let mut groups = HashSet::new();
                        for d in &got {
                            let group = live.message(d.offset).and_then(|m| m.group.clone());
                            let group = group.expect("FIFO messages have groups");
                            prop_assert!(groups.insert(Arc::clone(&group)), "two of one group in one receive");
                            let last = delivered_in_group.insert(group, d.offset);
                            prop_assert!(last.is_none_or(|l| l <= d.offset), "group order broken");
                        }
                    }
                    receipts.extend(got);
                }
                Op::Ack { pick, stale } => {
                    if receipts.is_empty() { continue; }
                    let d = receipts[usize::from(*pick) % receipts.len()];
                    let token = if *stale { d.token ^ 1 } else { d.token };
                    if let Ok(event) = live.ack(d.offset, token) {
                        prop_assert!(!stale || d.token ^ 1 == token);
                        journal.push(event);
                    }
                }
                Op::Visibility { pick, timeout } => {
                    if receipts.is_empty() { continue; }
                    let d = receipts[usize::from(*pick) % receipts.len()];
                    if let Ok(event) = live.change_visibility(d.offset, d.token, u64::from(*timeout), now) {
                        journal.push(event);
                    }
                }
                Op::Advance { ms } => {
                    now += i64::from(*ms);
                    live.advance(now);
                }
                Op::DeadLetter => {
                    for offset in live.dead_letter_candidates(3) {
                        if let Some(event) = live.dead_lettered(offset) {
                            journal.push(event);
                        }
                    }
                }
                Op::Expire { age } => {
                    live.expire(now - i64::from(*age), 5, &mut journal);
                }
                Op::Purge => {
                    let (_, event) = live.purge(next_offset);
                    journal.push(event);
                }
            }
            live.check_invariants();
            if step == snapshot_at && snapshot.is_none() && durable == next_offset {
                snapshot = Some((
                    Snapshot {
                        messages_end: durable,
                        journal_end: journal.len() as u64,
                        messages: view(&live),
                        dedup: live.dedup_entries().map(|(i, o, a)| (i.to_owned(), o, a)).collect(),
                    },
                    sent.len(),
                    journal.len(),
                ));
            }
        }
        // A restart sees only durable messages: pending ones are lost with their send,
        // and the live state holds them apart from `messages`, so compare those.
        live.advance(now);
        let expected = view(&live);

        let replay = |from_snapshot: bool| {
            let mut rebuilt = QueueState::new(config);
            let (messages_from, journal_from) = match (&snapshot, from_snapshot) {
                (Some((s, sent_len, journal_len)), true) => {
                    for (offset, m) in &s.messages {
                        rebuilt.restore_snapshot_message(*offset, m.clone(), now);
                    }
                    (*sent_len, *journal_len)
                }
                _ => (0, 0),
            };
            for (offset, m) in &sent[messages_from..] {
                if *offset < durable {
                    rebuilt.restore_message(*offset, m.clone(), now);
                }
            }
            for event in &journal[journal_from..] {
                rebuilt.apply(event, now);
            }
            rebuilt.advance(now);
            rebuilt.check_invariants();
            rebuilt
        };
        for from_snapshot in [false, true] {
            prop_assert_eq!(&view(&replay(from_snapshot)), &expected, "from snapshot: {}", from_snapshot);
        }
    }
}

fn record(settings: QueueSettings) -> QueueRecord {
    QueueRecord {
        name: "q".into(),
        settings,
        created_at_ms: T0,
        incarnation: 7,
        cluster: None,
    }
}

fn open(dir: &std::path::Path, settings: QueueSettings, now: i64) -> Queue {
    Queue::open(
        record(settings),
        dir,
        &Limits::default(),
        ferry_storage::DiskHooks::default(),
        now,
    )
    .expect("queue opens")
}

fn text(body: &str) -> OutgoingMessage {
    OutgoingMessage {
        body: body.as_bytes().to_vec(),
        ..OutgoingMessage::default()
    }
}

fn options(max: usize, visibility: u64) -> ReceiveOptions {
    ReceiveOptions {
        max_messages: max,
        visibility_timeout_ms: visibility,
        at_most_once: false,
    }
}

#[tokio::test]
async fn queue_state_survives_reopen_with_and_without_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = QueueSettings {
        dedup_window_ms: 60_000,
        ..QueueSettings::default()
    };
    let now = crate::clock::now_ms();
    {
        let queue = open(dir.path(), settings.clone(), now);
        let mut batch: Vec<OutgoingMessage> = (0..5).map(|i| text(&format!("m{i}"))).collect();
        batch[4].dedup_id = Some("once".into());
        batch[1].attributes = vec![("k".into(), "v".into())];
        let sent = queue.send(batch, now).await.expect("send");
        assert_eq!(sent.len(), 5);
        let got = queue
            .receive(options(2, 60_000), now)
            .await
            .expect("receive");
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1].message.attributes,
            vec![("k".to_owned(), "v".to_owned())]
        );
        let receipt = decode_receipt(&got[0].receipt, 7).expect("receipt");
        let acked = queue
            .settle(&[receipt], Settle::Ack, now)
            .await
            .expect("ack");
        assert_eq!(acked, vec![Ok(())]);
        queue.check_invariants();
        // Crash-like: no close, no snapshot.
    }
    async fn check(queue: &Queue, now: i64) -> Vec<DeliveredMessage> {
        queue.check_invariants();
        let stats = queue.stats(now);
        assert_eq!(stats.depth.in_flight, 1, "m1 stays in flight");
        assert_eq!(stats.depth.visible, 3);
        let again = queue
            .send(
                vec![OutgoingMessage {
                    dedup_id: Some("once".into()),
                    ..text("dup")
                }],
                now,
            )
            .await
            .expect("send");
        assert!(again[0].duplicate, "dedup id remembered across restarts");
        let got = queue
            .receive(options(10, 60_000), now)
            .await
            .expect("receive");
        let bodies: Vec<&[u8]> = got.iter().map(|m| m.message.body.as_slice()).collect();
        assert_eq!(bodies, vec![&b"m2"[..], b"m3", b"m4"]);
        got
    }
    {
        let queue = open(dir.path(), settings.clone(), now + 1);
        let got = check(&queue, now + 1).await;
        // Put them back, then snapshot and compact.
        let receipts: Vec<_> = got
            .iter()
            .map(|m| decode_receipt(&m.receipt, 7).expect("receipt"))
            .collect();
        queue
            .settle(&receipts, Settle::Visibility(0), now + 1)
            .await
            .expect("nack");
        queue.compact().expect("compact");
        queue.close().expect("close");
    }
    let queue = open(dir.path(), settings, now + 2);
    check(&queue, now + 2).await;
}

#[tokio::test]
async fn compaction_deletes_consumed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        queue_segment_bytes: 4096,
        ..Limits::default()
    };
    let now = crate::clock::now_ms();
    let queue = Queue::open(
        record(QueueSettings::default()),
        dir.path(),
        &limits,
        ferry_storage::DiskHooks::default(),
        now,
    )
    .expect("opens");
    for round in 0..50 {
        let batch = (0..20)
            .map(|i| text(&format!("{round}-{i}-{}", "x".repeat(50))))
            .collect();
        queue.send(batch, now).await.expect("send");
        let got = queue
            .receive(options(20, 60_000), now)
            .await
            .expect("receive");
        let receipts: Vec<_> = got
            .iter()
            .map(|m| decode_receipt(&m.receipt, 7).expect("receipt"))
            .collect();
        queue
            .settle(&receipts, Settle::Ack, now)
            .await
            .expect("ack");
    }
    let journal_before = std::fs::read_dir(dir.path().join("journal"))
        .expect("dir")
        .count();
    queue.compact().expect("compact");
    let journal_after = std::fs::read_dir(dir.path().join("journal"))
        .expect("dir")
        .count();
    let messages_after = std::fs::read_dir(dir.path().join("messages"))
        .expect("dir")
        .count();
    assert!(
        journal_after < journal_before,
        "{journal_after} < {journal_before}"
    );
    assert!(
        messages_after <= 4,
        "only the active segment's files remain: {messages_after}"
    );
    queue.close().expect("close");
    let reopened = open(dir.path(), QueueSettings::default(), now);
    assert_eq!(reopened.stats(now).depth, Default::default());
}

#[test]
fn stored_message_keeps_system_fields_out_of_attributes() {
    let m = StoredMessage {
        body: b"x".to_vec(),
        attributes: vec![("a".into(), "1".into())],
        group: Some("g".into()),
        ..StoredMessage::default()
    };
    let headers = m.headers();
    assert!(headers.iter().any(|(k, _)| *k == "ferry.group"));
}

#[tokio::test]
async fn dedup_ids_restored_from_a_snapshot_expire_on_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = QueueSettings {
        dedup_window_ms: 1_000,
        ..QueueSettings::default()
    };
    let now = crate::clock::now_ms();
    let with_id = |i: i64| OutgoingMessage {
        dedup_id: Some(format!("id-{i}")),
        ..text(&format!("m{i}"))
    };
    {
        let queue = open(dir.path(), settings.clone(), now);
        for i in 0..50 {
            let sent = queue
                .send(vec![with_id(i)], now + i * 10)
                .await
                .expect("send");
            assert!(!sent[0].duplicate);
        }
        queue.compact().expect("compact");
        queue.close().expect("close");
    }
    // Half the windows have ended: those ids must be accepted again, the rest not.
    let at = now + 1_000 + 245;
    let queue = open(dir.path(), settings, at);
    for i in 0..50 {
        let sent = queue.send(vec![with_id(i)], at).await.expect("send");
        assert_eq!(sent[0].duplicate, i * 10 + 1_000 > 245 + 1_000, "id-{i}");
    }
}

#[tokio::test]
async fn a_snapshot_copied_in_pieces_installs_whole_on_another_replica() {
    let (leader_dir, follower_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let now = crate::clock::now_ms();
    let leader = open(leader_dir.path(), QueueSettings::default(), now);
    assert_eq!(
        leader.read_snapshot_chunk(0, 64).expect("read").id,
        None,
        "no snapshot yet"
    );
    let batch = (0..50)
        .map(|i| text(&format!("{i}-{}", "x".repeat(40))))
        .collect();
    leader.send(batch, now).await.expect("send");
    leader.compact().expect("compact");
    let id = leader.snapshot_id().expect("a snapshot");
    assert_eq!(id.messages_end, 50);

    let mut copied = Vec::new();
    loop {
        let chunk = leader
            .read_snapshot_chunk(copied.len() as u64, 100)
            .expect("read");
        assert_eq!(chunk.id, Some(id));
        assert!(chunk.data.len() <= 100);
        copied.extend_from_slice(&chunk.data);
        if copied.len() as u64 >= chunk.total_bytes {
            break;
        }
    }
    assert!(
        leader
            .read_snapshot_chunk(copied.len() as u64 + 1, 100)
            .is_err(),
        "past the end is refused"
    );

    let follower = open(follower_dir.path(), QueueSettings::default(), now);
    let mut torn = copied.clone();
    torn.truncate(copied.len() / 2);
    assert!(
        follower.install_snapshot(&torn).is_err(),
        "a torn copy fails its checksum"
    );
    assert_eq!(follower.snapshot_id(), None, "and installs nothing");
    assert_eq!(follower.install_snapshot(&copied).expect("install"), id);
    assert_eq!(follower.snapshot_id(), Some(id));
    assert_eq!(
        std::fs::read(follower_dir.path().join("snapshot")).expect("the installed file"),
        copied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_serves_only_what_the_replicas_confirmed_and_keeps_acks() {
    use crate::queue::instance::QueueMode;
    use crate::topic::QUEUE_MESSAGES_LOG;

    let dir = tempfile::tempdir().expect("tempdir");
    let now = crate::clock::now_ms();
    let queue = Queue::open_in(
        record(QueueSettings::default()),
        dir.path(),
        &Limits::default(),
        ferry_storage::DiskHooks::default(),
        now,
        QueueMode::Cluster {
            ack_timeout: std::time::Duration::from_secs(5),
        },
    )
    .expect("queue opens");
    let refused = queue.send(vec![text("too early")], now).await;
    assert!(
        matches!(refused, Err(crate::error::BrokerError::NotLeader { .. })),
        "a replica that does not lead takes no write: {refused:?}"
    );

    // Epoch 1, alone: six messages; the first two are received and acked.
    queue
        .take_leadership(1, &ReplicaSets::default(), now)
        .expect("lead");
    let batch = (0..6).map(|i| text(&format!("m{i}"))).collect();
    queue.send(batch, now).await.expect("send");
    let got = queue
        .receive(options(2, 60_000), now)
        .await
        .expect("receive");
    let receipts: Vec<_> = got
        .iter()
        .map(|m| decode_receipt(&m.receipt, 7).expect("receipt"))
        .collect();
    queue
        .settle(&receipts, Settle::Ack, now)
        .await
        .expect("ack");

    // It follows for a while and learns that only offsets below 3 are committed.
    queue.step_down();
    let messages = queue.replicated_log(QUEUE_MESSAGES_LOG).expect("log");
    messages.learn_high_watermark(3);

    // Epoch 2 with a follower in sync that has not fetched yet: m2 (committed) is
    // served at once; m3..m5 wait for the follower; the acked m0, m1 never return.
    queue
        .take_leadership(2, &one_follower_in_sync(), now)
        .expect("lead again");
    let first: Vec<String> = queue
        .receive(options(10, 60_000), now)
        .await
        .expect("receive")
        .into_iter()
        .map(|m| String::from_utf8(m.message.body).expect("UTF-8"))
        .collect();
    assert_eq!(first, vec!["m2".to_owned()]);
    messages
        .record_fetch("h1", 2, 6, Vec::new())
        .expect("the follower fetched");
    queue.promote(now);
    let rest: Vec<String> = queue
        .receive(options(10, 60_000), now)
        .await
        .expect("receive")
        .into_iter()
        .map(|m| String::from_utf8(m.message.body).expect("UTF-8"))
        .collect();
    assert_eq!(
        rest,
        vec!["m3".to_owned(), "m4".to_owned(), "m5".to_owned()]
    );
    queue.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acked_message_above_the_learned_high_watermark_stays_acked_on_a_new_leader() {
    use crate::queue::instance::QueueMode;
    use crate::topic::QUEUE_MESSAGES_LOG;

    let dir = tempfile::tempdir().expect("tempdir");
    let now = crate::clock::now_ms();
    let queue = Queue::open_in(
        record(QueueSettings::default()),
        dir.path(),
        &Limits::default(),
        ferry_storage::DiskHooks::default(),
        now,
        QueueMode::Cluster {
            ack_timeout: std::time::Duration::from_secs(5),
        },
    )
    .expect("queue opens");
    queue
        .take_leadership(1, &ReplicaSets::default(), now)
        .expect("lead");
    let batch = (0..4).map(|i| text(&format!("m{i}"))).collect();
    queue.send(batch, now).await.expect("send");
    let got = queue
        .receive(options(2, 60_000), now)
        .await
        .expect("receive");
    let receipts: Vec<_> = got
        .iter()
        .map(|m| decode_receipt(&m.receipt, 7).expect("receipt"))
        .collect();
    queue
        .settle(&receipts, Settle::Ack, now)
        .await
        .expect("ack");

    // What it learned as a follower lags: only offset 0 known committed, yet its
    // journal says m1 was delivered and acked (so m1 was committed too).
    queue.step_down();
    let messages = queue.replicated_log(QUEUE_MESSAGES_LOG).expect("log");
    messages.learn_high_watermark(1);
    queue
        .take_leadership(2, &one_follower_in_sync(), now)
        .expect("lead again");
    let early = queue
        .receive(options(10, 60_000), now)
        .await
        .expect("receive");
    assert!(
        early.is_empty(),
        "m0 and m1 were acked, m2 and m3 await the follower: {early:?}"
    );
    messages
        .record_fetch("h1", 2, 4, Vec::new())
        .expect("the follower fetched");
    queue.promote(now);
    let rest: Vec<String> = queue
        .receive(options(10, 60_000), now)
        .await
        .expect("receive")
        .into_iter()
        .map(|m| String::from_utf8(m.message.body).expect("UTF-8"))
        .collect();
    assert_eq!(rest, vec!["m2".to_owned(), "m3".to_owned()]);
    queue.check_invariants();
}

#[tokio::test]
async fn a_leader_whose_clock_is_behind_re_arms_deadlines_from_its_own_clock() {
    // Issue 11, defect 6: the old leader's clock ran 30 s ahead of the new one's.
    let dir = tempfile::tempdir().expect("tempdir");
    let now = crate::clock::now_ms();
    let ahead = now + 30_000;
    {
        let queue = open(dir.path(), QueueSettings::default(), ahead);
        let delayed = OutgoingMessage {
            delay_ms: Some(10_000),
            ..text("later")
        };
        queue
            .send(vec![text("job"), delayed], ahead)
            .await
            .expect("send");
        let got = queue
            .receive(options(1, 5_000), ahead)
            .await
            .expect("receive");
        assert_eq!(
            got.len(),
            1,
            "the job is in flight for 5 s of the old clock"
        );
        // Crash-like: no close, no snapshot.
    }
    let queue = open(dir.path(), QueueSettings::default(), now);
    queue.check_invariants();
    let stats = queue.stats(now);
    assert_eq!((stats.depth.in_flight, stats.depth.delayed), (1, 1));
    // Within its visibility timeout and its delay counted from the take-over (not 30 s
    // later, when the old clock's deadlines come), both are delivered.
    let got = queue
        .receive(options(10, 60_000), now + 10_001)
        .await
        .expect("receive");
    let bodies: Vec<&[u8]> = got.iter().map(|m| m.message.body.as_slice()).collect();
    assert_eq!(bodies, vec![&b"job"[..], b"later"]);
    assert_eq!(got[0].receive_count, 2);
    queue.check_invariants();
}

/// Replica sets with one follower, `h1`, in sync.
fn one_follower_in_sync() -> ReplicaSets {
    ReplicaSets {
        followers: vec!["h1".to_owned()],
        in_sync: vec!["h1".to_owned()],
        revision: 1,
    }
}
