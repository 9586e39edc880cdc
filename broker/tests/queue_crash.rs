//! SIGKILL the broker again and again in the middle of a queue workload (sends,
//! receives, acks, dead-lettering), restarting it on the same data directory. Then
//! drain everything and check what every client was told:
//! - a message whose ack succeeded is never delivered again afterwards;
//! - every message whose send succeeded is acked exactly once or dead-lettered;
//! - a message whose send outcome is unknown is acked at most once;
//! - every dead-lettered message carries its origin, and none is also acked.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::queue::{
    QueueClient, ack, body_text, create_queue, depth, message, queues, receipt_error, receipts,
    receive, stats,
};
use common::{BrokerProcess, channel};
use ferry_proto::v1 as pb;

const KILLS: usize = 4;
const WORK: &str = "work";
const POISON: &str = "poison";
const POISON_DLQ: &str = "poison-dlq";
const WORK_PRODUCERS: usize = 2;
const WORK_CONSUMERS: usize = 2;
const SEND_BATCH: u64 = 20;
/// Visibility timeout of the work consumers: long enough that acks normally win.
const WORK_VISIBILITY_MS: u64 = 5000;
/// Visibility timeout of the poison consumer, which never acks.
const POISON_VISIBILITY_MS: u64 = 300;
/// How long the drain may take before the test gives up (a failure guard).
const DRAIN_LIMIT: Duration = Duration::from_secs(40);

/// Where the broker currently listens; replaced at every restart.
type Url = Arc<Mutex<String>>;

/// A logical clock over client events, to order "ack returned" before "receive asked".
static CLOCK: AtomicU64 = AtomicU64::new(0);

fn tick() -> u64 {
    CLOCK.fetch_add(1, Ordering::SeqCst)
}

/// What the clients were told.
#[derive(Default)]
struct Ledger {
    /// Body → message id, for sends that returned OK.
    sent_ok: BTreeMap<String, String>,
    /// Bodies of sends that failed (the broker died): stored or not, unknown.
    sent_unknown: BTreeSet<String>,
    /// Body → logical time of every delivery request that returned it.
    delivered: HashMap<String, Vec<u64>>,
    /// Body → logical times at which an ack of it returned OK.
    acked: HashMap<String, Vec<u64>>,
    /// Bodies named by an ack whose call failed (the broker died): it may or may not
    /// have deleted them.
    ack_unknown: BTreeSet<String>,
}

type Shared = Arc<Mutex<Ledger>>;

fn ledger(shared: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    shared.lock().expect("ledger lock")
}

/// Connects to wherever the broker is now; `None` while it is down or `stop` is set.
async fn connect(url: &Url, stop: &AtomicBool) -> Option<QueueClient> {
    while !stop.load(Ordering::Relaxed) {
        let current = url.lock().expect("url lock").clone();
        if let Ok(endpoint) = tonic::transport::Channel::from_shared(current)
            && let Ok(ch) = endpoint
                .connect_timeout(Duration::from_millis(500))
                .connect()
                .await
        {
            return Some(queues(&ch));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Sends numbered batches until stopped; a failed send is recorded as unknown and
/// not retried, so each body is sent at most once.
async fn produce(
    queue: &'static str,
    prefix: String,
    url: Url,
    stop: Arc<AtomicBool>,
    shared: Shared,
) {
    let mut next = 0u64;
    let mut client = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = connect(&url, &stop).await;
        }
        let Some(c) = client.as_mut() else { return };
        let bodies: Vec<String> = (next..next + SEND_BATCH)
            .map(|n| format!("{prefix}-{n:07}"))
            .collect();
        next += SEND_BATCH;
        let request = pb::SendRequest {
            queue: queue.to_owned(),
            messages: bodies.iter().map(|b| message(b.clone())).collect(),
        };
        match c.send(request).await {
            Ok(response) => {
                let results = response.into_inner().results;
                assert_eq!(results.len(), bodies.len());
                let mut l = ledger(&shared);
                for (body, result) in bodies.into_iter().zip(results) {
                    assert!(!result.duplicate, "{body} reported as a duplicate");
                    l.sent_ok.insert(body, result.message_id);
                }
            }
            Err(_) => {
                ledger(&shared).sent_unknown.extend(bodies);
                client = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Receives from `queue` and records each delivery with the logical time the
/// request started; acks (when `acks`) and records the acks that returned OK.
async fn consume(queue: &'static str, acks: bool, url: Url, stop: Arc<AtomicBool>, shared: Shared) {
    let visibility = if acks {
        WORK_VISIBILITY_MS
    } else {
        POISON_VISIBILITY_MS
    };
    let mut client = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = connect(&url, &stop).await;
        }
        let Some(c) = client.as_mut() else { return };
        let asked_at = tick();
        let request = common::queue::receive_request(queue, 50, 500, visibility);
        let got = match c.receive(request).await {
            Ok(response) => response.into_inner().messages,
            Err(_) => {
                client = None;
                continue;
            }
        };
        {
            let mut l = ledger(&shared);
            for m in &got {
                let body = body_text(m);
                l.delivered.entry(body).or_default().push(asked_at);
            }
        }
        if !acks || got.is_empty() {
            continue;
        }
        let request = pb::AckRequest {
            queue: queue.to_owned(),
            receipts: receipts(&got),
        };
        match c.ack(request).await {
            Ok(response) => record_acks(&shared, &got, &response.into_inner().results),
            Err(_) => {
                let mut l = ledger(&shared);
                for m in &got {
                    let body = body_text(m);
                    l.ack_unknown.insert(body);
                }
                client = None;
            }
        }
    }
}

/// Records the acks that returned OK; a refused one must be stale, never invalid.
fn record_acks(shared: &Shared, got: &[pb::ReceivedMessage], results: &[pb::ReceiptResult]) {
    assert_eq!(results.len(), got.len());
    let acked_at = tick();
    let mut l = ledger(shared);
    for (m, result) in got.iter().zip(results) {
        match receipt_error(result) {
            None => {
                let body = body_text(m);
                l.acked.entry(body).or_default().push(acked_at);
            }
            Some(pb::ErrorCode::ReceiptStale) => {}
            Some(other) => panic!("ack refused with {other:?}: {result:?}"),
        }
    }
}

/// Receives and acks everything left in the work queue, waiting out the visibility
/// timeouts of deliveries lost to the kills.
async fn drain_work(c: &mut QueueClient, shared: &Shared) {
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        assert!(Instant::now() < deadline, "the work queue never drained");
        let asked_at = tick();
        let got = receive(c, WORK, 1000, 2000, 60_000).await;
        if got.is_empty() {
            let left = stats(c, WORK).await;
            if depth(&left) == 0 {
                return;
            }
            continue;
        }
        {
            let mut l = ledger(shared);
            for m in &got {
                let body = body_text(m);
                l.delivered.entry(body).or_default().push(asked_at);
            }
        }
        let results = ack(c, WORK, receipts(&got)).await;
        record_acks(shared, &got, &results);
    }
}

/// Receives (never acking) until the poison queue is empty and every message whose
/// send succeeded has reached the dead-letter queue; returns the dead letters.
async fn drain_poison(
    c: &mut QueueClient,
    sent_ok: &BTreeMap<String, String>,
) -> Vec<pb::ReceivedMessage> {
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut dead = Vec::new();
    let mut seen = BTreeSet::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "poison messages never all reached the dead-letter queue: {} of {} sent",
            seen.len(),
            sent_ok.len()
        );
        // Each receive makes a message's one allowed delivery; it then dead-letters.
        receive(c, POISON, 1000, 0, 50).await;
        // Held for ten minutes so each dead letter is read once.
        let got = receive(c, POISON_DLQ, 1000, 500, 600_000).await;
        for m in got {
            seen.insert(body_text(&m));
            dead.push(m);
        }
        let left = stats(c, POISON).await;
        if depth(&left) == 0 && sent_ok.keys().all(|body| seen.contains(body)) {
            return dead;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_survives_repeated_sigkill_without_losing_or_repeating_acked_messages() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(dir.path());
    let mut c = queues(&channel(&broker.url()).await);
    create_queue(&mut c, WORK, pb::QueueConfig::default()).await;
    create_queue(&mut c, POISON_DLQ, pb::QueueConfig::default()).await;
    let poison = pb::QueueConfig {
        max_receive_count: Some(1),
        dead_letter_queue: Some(POISON_DLQ.into()),
        ..Default::default()
    };
    create_queue(&mut c, POISON, poison).await;

    let url: Url = Arc::new(Mutex::new(broker.url()));
    let stop = Arc::new(AtomicBool::new(false));
    let work = Shared::default();
    let poisoned = Shared::default();
    let mut tasks = Vec::new();
    for p in 0..WORK_PRODUCERS {
        let prefix = format!("w{p}");
        let args = (Arc::clone(&url), Arc::clone(&stop), Arc::clone(&work));
        tasks.push(tokio::spawn(produce(WORK, prefix, args.0, args.1, args.2)));
    }
    for _ in 0..WORK_CONSUMERS {
        let args = (Arc::clone(&url), Arc::clone(&stop), Arc::clone(&work));
        tasks.push(tokio::spawn(consume(WORK, true, args.0, args.1, args.2)));
    }
    let args = (Arc::clone(&url), Arc::clone(&stop), Arc::clone(&poisoned));
    tasks.push(tokio::spawn(produce(
        POISON,
        "p".into(),
        args.0,
        args.1,
        args.2,
    )));
    let args = (Arc::clone(&url), Arc::clone(&stop), Arc::clone(&poisoned));
    tasks.push(tokio::spawn(consume(POISON, false, args.0, args.1, args.2)));

    for round in 0..KILLS {
        // Let work accumulate, then kill mid-stream at a different point each time.
        tokio::time::sleep(Duration::from_millis(1200 + 350 * round as u64)).await;
        broker.kill9();
        broker = BrokerProcess::start(dir.path());
        *url.lock().expect("url lock") = broker.url();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("workload task");
    }

    let workload_done = started.elapsed();
    let mut c = queues(&channel(&broker.url()).await);
    drain_work(&mut c, &work).await;
    let sent_poison = ledger(&poisoned).sent_ok.clone();
    let dead = drain_poison(&mut c, &sent_poison).await;
    eprintln!(
        "queue crash test: workload {workload_done:?}, drained at {:?}",
        started.elapsed()
    );
    check_work(&ledger(&work));
    check_dead_letters(&ledger(&poisoned), &dead);
    eprintln!(
        "queue crash test: {KILLS} kills, {:?} in all",
        started.elapsed()
    );
}

/// (a), (b) and (c) for the work queue.
fn check_work(l: &Ledger) {
    assert!(
        l.sent_ok.len() >= 500,
        "the run sent too little to mean anything: {}",
        l.sent_ok.len()
    );
    for (body, acks) in &l.acked {
        assert_eq!(acks.len(), 1, "{body} acked {} times", acks.len());
        assert!(
            l.sent_ok.contains_key(body) || l.sent_unknown.contains(body),
            "{body} was acked but never sent"
        );
        let acked_at = acks[0];
        if let Some(later) = l.delivered[body].iter().find(|asked| **asked > acked_at) {
            panic!("{body} delivered (asked at {later}) after its ack returned OK at {acked_at}");
        }
    }
    // An ack cut short by the kill may have deleted its messages before the answer
    // was lost; only those may be missing.
    let missing: Vec<&String> = l
        .sent_ok
        .keys()
        .filter(|body| !l.acked.contains_key(*body) && !l.ack_unknown.contains(*body))
        .collect();
    let examples: Vec<(&String, &String, Option<&Vec<u64>>)> = missing
        .iter()
        .take(5)
        .map(|body| (*body, &l.sent_ok[*body], l.delivered.get(*body)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged sends were never acked; (body, id, deliveries asked at): {examples:?}",
        missing.len(),
    );
    let unknown_stored = l
        .sent_unknown
        .iter()
        .filter(|body| l.acked.contains_key(*body))
        .count();
    let redelivered = l.delivered.values().filter(|d| d.len() > 1).count();
    let deleted_by_unknown_ack = l
        .sent_ok
        .keys()
        .filter(|body| !l.acked.contains_key(*body))
        .count();
    eprintln!(
        "work: {} sent OK, {} unknown ({} of them stored), {} delivered more than once, \
         {} in acks cut short ({} of them deleted by it)",
        l.sent_ok.len(),
        l.sent_unknown.len(),
        unknown_stored,
        redelivered,
        l.ack_unknown.len(),
        deleted_by_unknown_ack
    );
}

/// (d): every poison message whose send succeeded is in the dead-letter queue with
/// its origin, and none was acked.
fn check_dead_letters(l: &Ledger, dead: &[pb::ReceivedMessage]) {
    assert!(!l.sent_ok.is_empty(), "no poison message was sent");
    assert!(l.acked.is_empty(), "the poison consumer never acks");
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for m in dead {
        let body = body_text(m);
        let origin = m.dead_letter.as_ref().expect("a dead letter has an origin");
        assert_eq!(origin.source_queue, POISON);
        assert_eq!(origin.receive_count, 1, "{body}: {origin:?}");
        match l.sent_ok.get(&body) {
            Some(id) => assert_eq!(&origin.source_message_id, id, "{body}"),
            None => assert!(l.sent_unknown.contains(&body), "{body} was never sent"),
        }
        *copies.entry(body).or_default() += 1;
    }
    let duplicated = copies.values().filter(|n| **n > 1).count();
    eprintln!(
        "poison: {} sent OK, {} unknown, {} dead letters ({} bodies copied twice)",
        l.sent_ok.len(),
        l.sent_unknown.len(),
        dead.len(),
        duplicated
    );
}
