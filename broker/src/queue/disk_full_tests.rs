//! A queue whose journal cannot be written for a full disk: receives and acks fail
//! retriably, change nothing, and work again once space is back.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_storage::{DiskHooks, FaultInjector, FaultPoint};

use crate::config::Limits;
use crate::error::BrokerError;
use crate::queue::instance::{OutgoingMessage, Queue, ReceiveOptions, Settle};
use crate::queue::receipt::decode_receipt;
use crate::queue::settings::{QueueRecord, QueueSettings};

/// Fails journal segment writes with ENOSPC while armed.
#[derive(Debug, Default)]
struct FullJournal {
    armed: AtomicBool,
}

impl FaultInjector for FullJournal {
    fn check(&self, point: FaultPoint, path: &Path) -> std::io::Result<()> {
        let journal = path.components().any(|c| c.as_os_str() == "journal");
        if self.armed.load(Ordering::SeqCst) && point == FaultPoint::SegmentWrite && journal {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        Ok(())
    }
}

fn open(dir: &Path, fifo: bool, faults: Arc<FullJournal>, now: i64) -> Queue {
    let record = QueueRecord {
        name: "jobs".into(),
        settings: QueueSettings {
            fifo,
            ..QueueSettings::default()
        },
        created_at_ms: now,
        incarnation: 7,
        cluster: None,
    };
    let hooks = DiskHooks {
        faults: Some(faults),
        sync_observer: None,
    };
    Queue::open(record, dir, &Limits::default(), hooks, now).expect("queue opens")
}

fn message(body: &str, group: Option<&str>) -> OutgoingMessage {
    OutgoingMessage {
        body: body.as_bytes().to_vec(),
        group: group.map(Into::into),
        ..OutgoingMessage::default()
    }
}

fn options(max: usize) -> ReceiveOptions {
    ReceiveOptions {
        max_messages: max,
        visibility_timeout_ms: 60_000,
        at_most_once: false,
    }
}

fn is_disk_full<T: std::fmt::Debug>(result: &Result<T, BrokerError>) -> bool {
    matches!(result, Err(BrokerError::QueueStorage { source, .. }) if source.is_disk_full())
}

#[tokio::test]
async fn receive_and_ack_on_a_full_journal_change_nothing_and_work_once_space_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = crate::clock::now_ms();
    let faults = Arc::new(FullJournal::default());
    let queue = open(dir.path(), false, Arc::clone(&faults), now);
    let batch = ["m0", "m1", "m2"].map(|b| message(b, None)).to_vec();
    queue.send(batch, now).await.expect("send");
    let got = queue.receive(options(1), now).await.expect("receive");
    let receipt = decode_receipt(&got[0].receipt, 7).expect("receipt");
    let depth = queue.stats(now).depth;

    faults.armed.store(true, Ordering::SeqCst);
    let refused = queue.receive(options(10), now).await;
    assert!(is_disk_full(&refused), "{refused:?}");
    let refused = queue.settle(&[receipt], Settle::Ack, now).await;
    assert!(is_disk_full(&refused), "{refused:?}");
    assert_eq!(
        queue.stats(now).depth,
        depth,
        "refused requests change nothing"
    );
    queue.check_invariants();

    faults.armed.store(false, Ordering::SeqCst);
    let acked = queue
        .settle(&[receipt], Settle::Ack, now)
        .await
        .expect("ack once space is back");
    assert_eq!(acked, vec![Ok(())]);
    let rest = queue.receive(options(10), now).await.expect("receive");
    let bodies: Vec<_> = rest.iter().map(|m| m.message.body.clone()).collect();
    assert_eq!(bodies, vec![b"m1".to_vec(), b"m2".to_vec()]);
    assert!(rest.iter().all(|m| m.receive_count == 1), "{rest:?}");
    queue.check_invariants();
    let depth = queue.stats(now).depth;
    queue.close().expect("close");
    drop(queue);

    // The journal replays to the same state: nothing refused was half-recorded.
    let queue = open(dir.path(), false, faults, now);
    assert_eq!(queue.stats(now).depth, depth);
}

#[tokio::test]
async fn a_refused_ack_of_a_fifo_head_keeps_the_group_blocked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = crate::clock::now_ms();
    let faults = Arc::new(FullJournal::default());
    let queue = open(dir.path(), true, Arc::clone(&faults), now);
    let batch = ["a0", "a1"].map(|b| message(b, Some("a"))).to_vec();
    queue.send(batch, now).await.expect("send");
    let head = queue.receive(options(10), now).await.expect("receive");
    assert_eq!(head.len(), 1);
    let receipt = decode_receipt(&head[0].receipt, 7).expect("receipt");

    faults.armed.store(true, Ordering::SeqCst);
    let refused = queue.settle(&[receipt], Settle::Ack, now).await;
    assert!(is_disk_full(&refused), "{refused:?}");
    // a1 stays behind its unacked head (a receive of nothing writes nothing).
    let none = queue.receive(options(10), now).await.expect("receive");
    assert!(none.is_empty(), "{none:?}");
    queue.check_invariants();

    faults.armed.store(false, Ordering::SeqCst);
    queue
        .settle(&[receipt], Settle::Ack, now)
        .await
        .expect("ack");
    let next = queue.receive(options(10), now).await.expect("receive");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].message.body, b"a1".to_vec());
}

#[tokio::test]
async fn a_refused_at_most_once_receive_keeps_its_messages_in_fifo_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = crate::clock::now_ms();
    let faults = Arc::new(FullJournal::default());
    let queue = open(dir.path(), true, Arc::clone(&faults), now);
    let batch = ["a0", "a1", "b0"]
        .map(|b| message(b, Some(&b[..1])))
        .to_vec();
    queue.send(batch, now).await.expect("send");
    let at_most_once = ReceiveOptions {
        at_most_once: true,
        ..options(10)
    };

    faults.armed.store(true, Ordering::SeqCst);
    let refused = queue.receive(at_most_once, now).await;
    assert!(is_disk_full(&refused), "{refused:?}");
    queue.check_invariants();

    faults.armed.store(false, Ordering::SeqCst);
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let got = queue.receive(at_most_once, now).await.expect("receive");
        assert!(got.iter().all(|m| m.receive_count == 1), "{got:?}");
        bodies.extend(got.into_iter().map(|m| m.message.body));
    }
    // Each once, a1 after its group's head: nothing was lost to the refused receive.
    assert_eq!(bodies, vec![b"a0".to_vec(), b"a1".to_vec(), b"b0".to_vec()]);
    queue.check_invariants();
}
