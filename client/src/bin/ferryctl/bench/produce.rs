//! Producer workers: each connects, sends `send_batch` chunks (at a rate when asked)
//! and measures send→ack latency per chunk.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_client::{Producer, ProducerConfig, RecordMetadata, RecordRef, TopicDescription};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::task::JoinSet;

use super::report::{self, Report};
use super::{Amount, BenchArgs, unix_nanos};
use crate::Context;

/// What the producers achieved together.
#[derive(Debug)]
pub struct ProduceOutcome {
    /// Messages acknowledged.
    pub acked: u64,
    /// Messages that failed.
    pub failed: u64,
    /// Payload bytes acknowledged.
    pub bytes: u64,
    /// From the first send to the last acknowledgement.
    pub elapsed: Duration,
    /// Send→ack latency, one sample per message.
    pub latency: Histogram<u64>,
    /// The first delivery error seen.
    pub first_error: Option<String>,
    /// Messages acknowledged per partition: shows whether the load reached every
    /// partition (and so every leader).
    pub acked_by_partition: BTreeMap<u32, u64>,
    /// When acknowledgements came (since the producers started) and how many
    /// messages each covered: whether a long run holds its rate.
    pub ack_times: Vec<(Duration, u64)>,
}

/// What one acknowledgement task reports: when the chunk was sent (since the
/// producers started), its latency, records sent, the error or the acknowledged
/// records per partition.
type Acked = (Duration, Duration, u64, Result<BTreeMap<u32, u64>, String>);

impl ProduceOutcome {
    fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            acked: 0,
            failed: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            latency: report::histogram()?,
            first_error: None,
            acked_by_partition: BTreeMap::new(),
            ack_times: Vec::new(),
        })
    }

    fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        self.acked += other.acked;
        self.failed += other.failed;
        self.bytes += other.bytes;
        self.elapsed = self.elapsed.max(other.elapsed);
        self.latency.add(&other.latency)?;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        for (partition, count) in other.acked_by_partition {
            *self.acked_by_partition.entry(partition).or_default() += count;
        }
        self.ack_times.extend(other.ack_times);
        Ok(())
    }

    /// The rate of each quarter of the acknowledged messages (by count): the time
    /// from the end of the previous quarter (the start, first) to the acknowledgement
    /// that completed this one. Empty without acknowledgements.
    pub fn quarters(&self) -> Vec<Duration> {
        let mut times = self.ack_times.clone();
        times.sort();
        let total: u64 = times.iter().map(|(_, count)| count).sum();
        if total == 0 {
            return Vec::new();
        }
        let mut ends = Vec::with_capacity(4);
        let mut acked = 0u64;
        for (at, count) in times {
            acked += count;
            // A chunk completing several quarters at once ends each of them.
            while ends.len() < 4 && acked * 4 >= total * (ends.len() as u64 + 1) {
                ends.push(at);
            }
        }
        let mut previous = Duration::ZERO;
        ends.into_iter()
            .map(|end| {
                let length = end.saturating_sub(previous);
                previous = end;
                length
            })
            .collect()
    }

    /// The produce report; `leaders` maps partitions to the hosts leading them.
    pub fn into_report(self, config: serde_json::Value, leaders: &BTreeMap<u32, String>) -> Report {
        let by_leader = self.by_leader(leaders);
        if let Some(err) = &self.first_error {
            eprintln!(
                "warning: {} messages failed; first error: {err}",
                self.failed
            );
        }
        let quarters = self.quarters();
        Report {
            mode: "produce",
            messages: self.acked,
            bytes: self.bytes,
            failed: self.failed,
            elapsed: self.elapsed,
            latency: self.latency,
            latency_label: "send→ack",
            config,
            by_leader: Some(by_leader),
            quarters: Some(quarters),
        }
    }

    /// Per leading host: the partitions it leads and the messages it acknowledged.
    fn by_leader(&self, leaders: &BTreeMap<u32, String>) -> serde_json::Value {
        let mut hosts: BTreeMap<&str, (Vec<u32>, u64)> = BTreeMap::new();
        for (partition, host) in leaders {
            let entry = hosts.entry(host.as_str()).or_default();
            entry.0.push(*partition);
            entry.1 += self.acked_by_partition.get(partition).copied().unwrap_or(0);
        }
        hosts
            .into_iter()
            .map(|(host, (partitions, acked))| {
                let value = json!({ "partitions": partitions, "acked": acked });
                (host.to_owned(), value)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Runs `args.producers` producers in parallel, splitting `amount` and `rate`.
pub async fn run(
    context: &Context,
    topic: &TopicDescription,
    args: &BenchArgs,
    amount: Amount,
    rate: Option<u64>,
) -> anyhow::Result<ProduceOutcome> {
    let producers = args.producers as u64;
    let partitions = topic.partition_count();
    let mut workers = JoinSet::new();
    let started = Instant::now();
    for index in 0..producers {
        let share = match amount {
            Amount::Messages(total) => {
                Amount::Messages(total / producers + u64::from(index < total % producers))
            }
            Amount::Duration(duration) => Amount::Duration(duration),
        };
        let rate_share = rate.map(|r| (r / producers).max(1));
        let context = context.clone();
        let topic = topic.name.clone();
        let config = producer_config(args, partitions);
        let (message_size, batch_size) = (args.message_size, args.batch_size);
        workers.spawn(async move {
            let shape = Shape {
                message_size,
                batch_size,
            };
            worker(&context, &topic, config, shape, share, rate_share, started).await
        });
    }
    let mut total = ProduceOutcome::empty()?;
    while let Some(joined) = workers.join_next().await {
        total.merge(joined.context("producer task failed")??)?;
    }
    Ok(total)
}

/// What each message and chunk look like.
#[derive(Debug, Clone, Copy)]
struct Shape {
    message_size: usize,
    batch_size: u32,
}

fn producer_config(args: &BenchArgs, partitions: u32) -> ProducerConfig {
    // Let --batch-size, not the byte limit, decide how many records share a batch.
    let batch_bytes = (args.batch_size as usize * (args.message_size + 32) + 64).max(1 << 20);
    // Two batches per partition (one in flight, one filling) keep every partition
    // busy; buffering more only adds queueing delay to the measured latency.
    let buffered = args
        .batch_size
        .saturating_mul(2)
        .saturating_mul(partitions.max(1));
    ProducerConfig {
        linger: Duration::from_millis(args.linger_ms),
        max_batch_records: args.batch_size,
        max_batch_bytes: batch_bytes,
        max_request_bytes: batch_bytes.max(16 << 20),
        idempotent: args.idempotent,
        max_buffered_records: buffered,
        ..ProducerConfig::default()
    }
}

async fn worker(
    context: &Context,
    topic: &str,
    config: ProducerConfig,
    shape: Shape,
    amount: Amount,
    rate: Option<u64>,
    started: Instant,
) -> anyhow::Result<ProduceOutcome> {
    let client = context.connect().await?;
    let producer = Producer::new(&client, topic, config).await?;
    let size = shape.message_size;
    // Under a rate, send about once a millisecond so latency is not made of bursts.
    let chunk = match rate {
        Some(rate) => (rate / 1000).clamp(1, u64::from(shape.batch_size)),
        None => u64::from(shape.batch_size),
    } as usize;
    let mut values = vec![b'x'; chunk * size];
    let mut acks: JoinSet<Acked> = JoinSet::new();
    let mut outcome = ProduceOutcome::empty()?;
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        let count = match amount {
            Amount::Messages(total) => (total - sent).min(chunk as u64) as usize,
            Amount::Duration(limit) if start.elapsed() < limit => chunk,
            Amount::Duration(_) => 0,
        };
        if count == 0 {
            break;
        }
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let stamp = unix_nanos().to_le_bytes();
        for value in values.chunks_exact_mut(size).take(count) {
            value[..8].copy_from_slice(&stamp);
        }
        let records: Vec<RecordRef<'_>> = values
            .chunks_exact(size)
            .take(count)
            .map(RecordRef::new)
            .collect();
        let sent_at = Instant::now();
        let delivery = producer.send_batch(&records).await?;
        acks.spawn(async move {
            let result = delivery.await;
            let latency = sent_at.elapsed();
            let result = result
                .map(|acked| per_partition(&acked))
                .map_err(|err| err.to_string());
            let sent_since_start = sent_at.duration_since(started);
            (sent_since_start, latency, count as u64, result)
        });
        sent += count as u64;
        super::progress::sent(count as u64);
        while let Some(done) = acks.try_join_next() {
            account(&mut outcome, done, size)?;
        }
    }
    producer.flush().await?;
    while let Some(done) = acks.join_next().await {
        account(&mut outcome, done, size)?;
    }
    outcome.elapsed = start.elapsed();
    producer.close().await?;
    Ok(outcome)
}

/// Acknowledged records counted per partition.
fn per_partition(acked: &[RecordMetadata]) -> BTreeMap<u32, u64> {
    let mut counts = BTreeMap::new();
    for record in acked {
        *counts.entry(record.partition).or_default() += 1;
    }
    counts
}

fn account(
    outcome: &mut ProduceOutcome,
    done: Result<Acked, tokio::task::JoinError>,
    size: usize,
) -> anyhow::Result<()> {
    let (sent, latency, count, result) = done.context("delivery task failed")?;
    match result {
        Ok(partitions) => {
            outcome.acked += count;
            outcome.ack_times.push((sent + latency, count));
            outcome.bytes += count * size as u64;
            report::record(&mut outcome.latency, latency, count);
            for (partition, acked) in partitions {
                *outcome.acked_by_partition.entry(partition).or_default() += acked;
            }
        }
        Err(err) => {
            outcome.failed += count;
            outcome.first_error.get_or_insert(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarters_split_the_acknowledged_messages_by_count() -> anyhow::Result<()> {
        let mut outcome = ProduceOutcome::empty()?;
        let s = Duration::from_secs;
        // 100 messages: 25 by 1 s, 50 by 2 s, 75 by 4 s, 100 by 8 s.
        outcome.ack_times = vec![(s(8), 25), (s(1), 25), (s(2), 25), (s(4), 25)];
        assert_eq!(outcome.quarters(), vec![s(1), s(1), s(2), s(4)]);
        // A chunk completing two quarters ends both: 70 of 100 by 3 s, all by 5 s.
        outcome.ack_times = vec![(s(1), 10), (s(3), 60), (s(5), 30)];
        assert_eq!(outcome.quarters(), vec![s(3), s(0), s(2), s(0)]);
        outcome.ack_times.clear();
        assert!(outcome.quarters().is_empty());
        Ok(())
    }
}
