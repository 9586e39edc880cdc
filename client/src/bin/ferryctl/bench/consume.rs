//! Consumer workers for `bench consume` and `bench e2e`: group-less readers of a
//! share of the partitions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_client::{Client, Consumer, ConsumerConfig, TopicDescription, TopicPartition};
use hdrhistogram::Histogram;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::report::{self, Report};
use super::{BenchArgs, produce, unix_nanos};
use crate::Context;

/// Give up when no message arrived for this long although more were expected.
const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// What a worker measures as latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// Duration of each poll that returned records.
    Poll,
    /// Send time embedded in the value → receive time, per message.
    EndToEnd,
}

/// When a worker stops.
#[derive(Debug, Clone)]
enum Stop {
    /// After this many messages of its own.
    Count(u64),
    /// When the shared total reaches the expected total (known once producers end).
    Shared {
        total: Arc<AtomicU64>,
        expected: watch::Receiver<Option<u64>>,
    },
}

#[derive(Debug)]
struct ConsumeOutcome {
    records: u64,
    bytes: u64,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    latency: Histogram<u64>,
}

impl ConsumeOutcome {
    fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        self.records += other.records;
        self.bytes += other.bytes;
        self.first_at = [self.first_at, other.first_at].into_iter().flatten().min();
        self.last_at = [self.last_at, other.last_at].into_iter().flatten().max();
        self.latency.add(&other.latency)?;
        Ok(())
    }
}

/// Spreads partitions over consumers round-robin; consumers without one are dropped.
fn split(topic: &TopicDescription, consumers: usize) -> Vec<Vec<u32>> {
    let count = consumers.max(1);
    let mut shares = vec![Vec::new(); count];
    for partition in 0..topic.partition_count() {
        shares[partition as usize % count].push(partition);
    }
    shares.retain(|share| !share.is_empty());
    shares
}

/// `bench consume`: reads what the topic holds, filling it first when empty.
pub async fn run_consume(
    context: &Context,
    client: &Client,
    topic: &TopicDescription,
    args: &BenchArgs,
) -> anyhow::Result<Report> {
    let mut topic = topic.clone();
    if topic.stored_records() == 0 {
        let amount = args.amount(1_000_000);
        eprintln!("topic '{}' is empty; filling it first", topic.name);
        let filled = produce::run(context, &topic, args, amount, args.rate).await?;
        if let Some(err) = filled.first_error {
            anyhow::bail!("filling the topic failed: {err}");
        }
        topic = client.describe_topic(&topic.name).await?;
    }
    let mut workers = JoinSet::new();
    let start = Instant::now();
    for share in split(&topic, args.consumers) {
        let target: u64 = topic
            .partitions
            .iter()
            .filter(|p| share.contains(&p.partition))
            .map(|p| p.high_watermark.saturating_sub(p.log_start_offset))
            .sum();
        let context = context.clone();
        let name = topic.name.clone();
        workers.spawn(async move {
            worker(
                &context,
                &name,
                share,
                Measure::Poll,
                Stop::Count(target),
                None,
            )
            .await
        });
    }
    let outcome = join(workers).await?;
    Ok(Report {
        mode: "consume",
        messages: outcome.records,
        bytes: outcome.bytes,
        failed: 0,
        elapsed: outcome.last_at.map_or(Duration::ZERO, |last| last - start),
        latency: outcome.latency,
        latency_label: "poll",
        config: args.config_json(&topic, None),
        by_leader: None,
        quarters: None,
    })
}

/// `bench e2e`: consumers wait at the end of the log while producers send at `rate`.
pub async fn run_e2e(
    context: &Context,
    topic: &TopicDescription,
    args: &BenchArgs,
    rate: u64,
) -> anyhow::Result<Report> {
    let total = Arc::new(AtomicU64::new(0));
    let (expected_tx, expected) = watch::channel(None);
    let mut workers = JoinSet::new();
    let mut ready = Vec::new();
    for share in split(topic, args.consumers) {
        let (ready_tx, ready_rx) = oneshot::channel();
        ready.push(ready_rx);
        let stop = Stop::Shared {
            total: Arc::clone(&total),
            expected: expected.clone(),
        };
        let context = context.clone();
        let name = topic.name.clone();
        workers.spawn(async move {
            worker(
                &context,
                &name,
                share,
                Measure::EndToEnd,
                stop,
                Some(ready_tx),
            )
            .await
        });
    }
    for ready_rx in ready {
        // A worker that failed before it was ready reports its error from `join`.
        let _ = ready_rx.await;
    }
    let start = Instant::now();
    let amount = args.amount(rate * 10);
    let produced = produce::run(context, topic, args, amount, Some(rate)).await?;
    let _ = expected_tx.send(Some(produced.acked));
    let outcome = join(workers).await?;
    if outcome.records < produced.acked {
        eprintln!(
            "warning: received {} of {} acknowledged messages",
            outcome.records, produced.acked
        );
    }
    Ok(Report {
        mode: "e2e",
        messages: outcome.records,
        bytes: outcome.bytes,
        failed: produced.failed,
        elapsed: outcome.last_at.map_or(Duration::ZERO, |last| last - start),
        latency: outcome.latency,
        latency_label: "end-to-end",
        config: args.config_json(topic, Some(rate)),
        by_leader: None,
        quarters: None,
    })
}

async fn join(
    mut workers: JoinSet<anyhow::Result<ConsumeOutcome>>,
) -> anyhow::Result<ConsumeOutcome> {
    let mut total = ConsumeOutcome {
        records: 0,
        bytes: 0,
        first_at: None,
        last_at: None,
        latency: report::histogram()?,
    };
    while let Some(joined) = workers.join_next().await {
        total.merge(joined.context("consumer task failed")??)?;
    }
    Ok(total)
}

async fn worker(
    context: &Context,
    topic: &str,
    partitions: Vec<u32>,
    measure: Measure,
    stop: Stop,
    ready: Option<oneshot::Sender<()>>,
) -> anyhow::Result<ConsumeOutcome> {
    let client = context.connect().await?;
    let config = ConsumerConfig {
        auto_commit: false,
        fetch_max_wait_ms: 100,
        max_poll_records: 50_000,
        ..ConsumerConfig::default()
    };
    let partitions = partitions
        .into_iter()
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let mut consumer = Consumer::assign(&client, config, partitions)?;
    match measure {
        Measure::Poll => consumer.seek_to_beginning().await?,
        Measure::EndToEnd => consumer.seek_to_end().await?,
    }
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let mut outcome = ConsumeOutcome {
        records: 0,
        bytes: 0,
        first_at: None,
        last_at: None,
        latency: report::histogram()?,
    };
    let mut last_progress = Instant::now();
    while !finished(&stop, outcome.records) {
        let polled_at = Instant::now();
        let records = consumer.poll(Duration::from_millis(200)).await?;
        let now = Instant::now();
        if records.is_empty() {
            if now - last_progress > IDLE_LIMIT && idle_is_final(&stop) {
                eprintln!("warning: no message for {IDLE_LIMIT:?}; stopping a consumer early");
                break;
            }
            continue;
        }
        last_progress = now;
        outcome.first_at.get_or_insert(now);
        outcome.last_at = Some(now);
        match measure {
            Measure::Poll => report::record(&mut outcome.latency, now - polled_at, 1),
            Measure::EndToEnd => {
                let received_ns = unix_nanos();
                for record in &records {
                    let mut stamp = [0u8; 8];
                    if let Some(head) = record.value.get(..8) {
                        stamp.copy_from_slice(head);
                    }
                    let sent_ns = u64::from_le_bytes(stamp);
                    let latency = Duration::from_nanos(received_ns.saturating_sub(sent_ns));
                    report::record(&mut outcome.latency, latency, 1);
                }
            }
        }
        outcome.records += records.len() as u64;
        super::progress::received(records.len() as u64);
        outcome.bytes += records.iter().map(|r| r.value.len() as u64).sum::<u64>();
        if let Stop::Shared { total, .. } = &stop {
            total.fetch_add(records.len() as u64, Ordering::Relaxed);
        }
    }
    consumer.close().await?;
    Ok(outcome)
}

fn finished(stop: &Stop, own_records: u64) -> bool {
    match stop {
        Stop::Count(target) => own_records >= *target,
        Stop::Shared { total, expected } => {
            (*expected.borrow()).is_some_and(|expected| total.load(Ordering::Relaxed) >= expected)
        }
    }
}

/// Whether running out of messages means the end: always for a count, and for e2e
/// only once the producers are done (before that, a quiet spell is just the rate).
fn idle_is_final(stop: &Stop) -> bool {
    match stop {
        Stop::Count(_) => true,
        Stop::Shared { expected, .. } => expected.borrow().is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_client::TopicSettings;

    #[test]
    fn partitions_are_dealt_round_robin() {
        let topic = TopicDescription {
            name: "t".into(),
            settings: TopicSettings::new(5),
            partitions: Vec::new(),
            created_at_ms: 0,
        };
        assert_eq!(split(&topic, 2), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(split(&topic, 7).len(), 5);
    }
}
