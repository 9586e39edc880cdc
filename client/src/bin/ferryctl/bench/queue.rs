//! `ferryctl bench queue`: producers send batches to a fresh queue while consumers
//! receive and ack, measuring each RPC, the end-to-end latency (send time embedded in
//! the body → ack) and whether every sent message was acked.
//!
//! Consumers stop once every message the producers sent has been acked (counted by
//! unique message id) or at `--timeout-s`. At the end, sent ids are checked against
//! acked ids: `lost` must be 0.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::{BufMut, BytesMut};
use clap::Args;
use ferry_client::{
    Client, ClientError, Durability, ErrorCode, OutgoingMessage, QueueSettings, ReceiveOptions,
    ReplicationMode,
};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::report::{self, latency_json, latency_text, round};
use super::unix_nanos;
use crate::Context;
use crate::output::{self, OutputFormat};

/// How long a consumer's receive waits for messages.
const RECEIVE_WAIT: Duration = Duration::from_secs(1);

/// Pause after a retriable error before the next request.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Settings of `bench queue`.
#[derive(Debug, Clone, Args)]
pub struct QueueBenchArgs {
    /// Queue to create for the run (it must not exist yet).
    #[arg(long, default_value = "bench-queue")]
    pub queue: String,
    /// Durability of the queue: fsync, interval or none.
    #[arg(long, default_value = "fsync", value_parser = super::parse_durability)]
    pub durability: Durability,
    /// Replicas of the queue (more than 1 needs a cluster).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: u32,
    /// Replication mode of the queue: sync (acknowledged once the in-sync replicas
    /// have it) or async (once the leader has it).
    #[arg(long, value_parser = super::parse_replication, default_value = "sync")]
    pub replication: ReplicationMode,
    /// Make the queue FIFO; messages are dealt round-robin over --groups groups.
    #[arg(long)]
    pub fifo: bool,
    /// Message groups of a FIFO queue (each has at most one message in flight).
    #[arg(long, default_value_t = 64, requires = "fifo")]
    pub groups: u32,
    /// Concurrent send tasks, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Concurrent receive+ack tasks, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Messages per send request, and most messages per receive.
    #[arg(long, default_value_t = 100)]
    pub batch: u32,
    /// Body size in bytes (at least 8: the first 8 carry the send time).
    #[arg(long, default_value_t = 100)]
    pub message_size: usize,
    /// Messages to send in total.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Most messages per second sent, across producers (default: unlimited).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Stop waiting for acks (and sending) after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Keep the queue after the run instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Send everything first, then start the consumers: receive latency is then
    /// measured on a queue that is never empty, and throughput is the drain rate.
    #[arg(long)]
    pub drain: bool,
}

impl QueueBenchArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.message_size < 8 {
            bail!("--message-size must be at least 8 (the send time is embedded)");
        }
        if self.replication_factor == 0 {
            bail!("--replication-factor must be positive");
        }
        if self.producers == 0 || self.consumers == 0 || self.batch == 0 || self.groups == 0 {
            bail!("--producers, --consumers, --batch and --groups must be positive");
        }
        if self.messages == 0 || self.rate == Some(0) || self.timeout_s == 0 {
            bail!("--messages, --rate and --timeout-s must be positive");
        }
        Ok(())
    }

    fn config_json(&self) -> serde_json::Value {
        json!({
            "queue": self.queue,
            "durability": self.durability.to_string(),
            "replication_factor": self.replication_factor,
            "replication": format!("{:?}", self.replication).to_lowercase(),
            "fifo": self.fifo,
            "groups": self.fifo.then_some(self.groups),
            "producers": self.producers,
            "consumers": self.consumers,
            "batch": self.batch,
            "message_size": self.message_size,
            "messages": self.messages,
            "rate": self.rate,
            "timeout_s": self.timeout_s,
            "drain": self.drain,
        })
    }
}

/// Waits until the queue's leader serves it (in a cluster it is placed, elected and
/// its state rebuilt after the create returns).
async fn wait_until_served(client: &Client, queue: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + super::PLACEMENT_TIMEOUT;
    loop {
        match client.describe_queue(queue).await {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() < deadline && err.is_retriable() => {
                tokio::time::sleep(super::PLACEMENT_POLL).await;
            }
            Err(err) => {
                return Err(anyhow::Error::from(err)
                    .context(format!("waiting for queue '{queue}' to be served")));
            }
        }
    }
}

/// Runs the bench: create the queue, measure, delete it (unless `--keep`), report.
pub async fn run(context: &Context, args: &QueueBenchArgs) -> anyhow::Result<()> {
    args.validate()?;
    let client = context.connect().await?;
    let mut settings = QueueSettings::new()
        .with_durability(args.durability)
        .with_replication_factor(args.replication_factor)
        .with_replication(args.replication);
    settings.fifo = args.fifo;
    client
        .create_queue(&args.queue, &settings)
        .await
        .map_err(|err| {
            if err.is(ErrorCode::QueueAlreadyExists) {
                anyhow::anyhow!(
                    "queue '{}' already exists; delete it (ferryctl queue delete {}) or pass \
                     --queue",
                    args.queue,
                    args.queue
                )
            } else {
                anyhow::Error::from(err).context(format!("creating queue '{}'", args.queue))
            }
        })?;
    wait_until_served(&client, &args.queue).await?;
    let progress = super::progress::Progress::start();
    let measured = measure(context, args).await;
    drop(progress);
    if !args.keep
        && let Err(err) = client.delete_queue(&args.queue).await
    {
        eprintln!("warning: could not delete queue '{}': {err}", args.queue);
    }
    let outcome = measured?;
    outcome.print(context.output, args.config_json())?;
    if outcome.lost > 0 {
        bail!(
            "{} sent messages were not acked within {} s",
            outcome.lost,
            args.timeout_s
        );
    }
    Ok(())
}

/// Message ids, hashed with a fast non-cryptographic hasher: the bench keeps millions
/// of them, and SipHash would take a visible share of the CPU it measures.
type IdSet = HashSet<String, foldhash::fast::RandomState>;

/// State the consumers share: which ids were acked, and when to stop.
#[derive(Debug)]
struct Shared {
    /// Every id acked at least once. A std mutex: held for a batch's inserts, no await.
    acked_ids: Mutex<IdSet>,
    /// `acked_ids.len()`, readable without the lock.
    unique_acked: AtomicU64,
    /// Messages the producers sent in total, once they are done.
    expected: watch::Receiver<Option<u64>>,
    /// Give up at this instant.
    deadline: Instant,
}

impl Shared {
    fn finished(&self) -> bool {
        Instant::now() >= self.deadline
            || (*self.expected.borrow())
                .is_some_and(|sent| self.unique_acked.load(Ordering::Relaxed) >= sent)
    }
}

async fn measure(context: &Context, args: &QueueBenchArgs) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let (expected_tx, expected) = watch::channel(None);
    let shared = Arc::new(Shared {
        acked_ids: Mutex::new(IdSet::with_capacity_and_hasher(
            usize::try_from(args.messages).unwrap_or(0),
            foldhash::fast::RandomState::default(),
        )),
        unique_acked: AtomicU64::new(0),
        expected,
        deadline: start + Duration::from_secs(args.timeout_s),
    });
    let mut consumers = JoinSet::new();
    let mut consumer_clients = Vec::with_capacity(args.consumers);
    for _ in 0..args.consumers {
        consumer_clients.push(context.connect().await?);
    }
    let start_consumers = |consumers: &mut JoinSet<_>, clients: Vec<Client>| {
        for (index, client) in clients.into_iter().enumerate() {
            let (args, shared) = (args.clone(), Arc::clone(&shared));
            consumers.spawn(async move { consume(&client, &args, index, &shared).await });
        }
    };
    if !args.drain {
        start_consumers(&mut consumers, std::mem::take(&mut consumer_clients));
    }
    let mut producers = JoinSet::new();
    let count = args.producers as u64;
    for index in 0..count {
        let client = context.connect().await?;
        let share = args.messages / count + u64::from(index < args.messages % count);
        let rate = args.rate.map(|rate| (rate / count).max(1));
        let (args, deadline) = (args.clone(), shared.deadline);
        producers.spawn(async move {
            let plan = Plan {
                index,
                share,
                rate,
                deadline,
            };
            produce(&client, &args, plan).await
        });
    }
    let mut sent = Sent::empty()?;
    let mut producer_error = None;
    while let Some(joined) = producers.join_next().await {
        match joined.context("producer task failed")? {
            Ok(part) => sent.merge(part)?,
            Err(err) => {
                producer_error.get_or_insert(err);
            }
        }
    }
    // Consumers stop once this many unique ids were acked.
    let _ = expected_tx.send(Some(sent.ids.len() as u64));
    let drain_started = Instant::now();
    if args.drain {
        start_consumers(&mut consumers, consumer_clients);
    }
    let mut received = Received::empty()?;
    while let Some(joined) = consumers.join_next().await {
        received.merge(joined.context("consumer task failed")??)?;
    }
    if let Some(err) = producer_error {
        return Err(err.context("a producer stopped"));
    }
    let acked_ids = std::mem::take(&mut *lock(&shared.acked_ids));
    let mut outcome = Outcome::new(sent, received, &acked_ids);
    if args.drain {
        outcome.drain_started = Some(drain_started);
    }
    Ok(outcome)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicked consumer already fails the run; its half-updated set is still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One producer's part of the run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    index: u64,
    share: u64,
    rate: Option<u64>,
    deadline: Instant,
}

/// What the producers sent.
#[derive(Debug)]
struct Sent {
    ids: Vec<String>,
    failed: u64,
    duplicates: u64,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    latency: Histogram<u64>,
    first_error: Option<String>,
}

impl Sent {
    fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            ids: Vec::new(),
            failed: 0,
            duplicates: 0,
            first_at: None,
            last_at: None,
            latency: report::histogram()?,
            first_error: None,
        })
    }

    fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        self.ids.extend(other.ids);
        self.failed += other.failed;
        self.duplicates += other.duplicates;
        self.first_at = [self.first_at, other.first_at].into_iter().flatten().min();
        self.last_at = [self.last_at, other.last_at].into_iter().flatten().max();
        self.latency.add(&other.latency)?;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

/// One batch of bodies, each starting with the send time in nanoseconds.
fn batch(args: &QueueBenchArgs, plan: &Plan, first: u64, count: u64) -> Vec<OutgoingMessage> {
    let size = args.message_size;
    let mut buffer = BytesMut::with_capacity(count as usize * size);
    let stamp = unix_nanos().to_le_bytes();
    for _ in 0..count {
        buffer.put_slice(&stamp);
        buffer.put_bytes(b'x', size - stamp.len());
    }
    let bodies = buffer.freeze();
    (0..count)
        .map(|i| {
            let offset = i as usize * size;
            let message = OutgoingMessage::new(bodies.slice(offset..offset + size));
            if args.fifo {
                let group = (plan.index + first + i) % u64::from(args.groups);
                message.with_group(format!("g{group}"))
            } else {
                message
            }
        })
        .collect()
}

async fn produce(client: &Client, args: &QueueBenchArgs, plan: Plan) -> anyhow::Result<Sent> {
    let mut sent = Sent::empty()?;
    let start = Instant::now();
    let mut done = 0u64;
    while done < plan.share && Instant::now() < plan.deadline {
        if let Some(rate) = plan.rate {
            let due = start + Duration::from_secs_f64(done as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let count = (plan.share - done).min(u64::from(args.batch));
        let messages = batch(args, &plan, done, count);
        let before = Instant::now();
        sent.first_at.get_or_insert(before);
        match client.send(&args.queue, messages).await {
            Ok(receipts) => {
                let now = Instant::now();
                report::record(&mut sent.latency, now - before, 1);
                sent.last_at = Some(now);
                sent.duplicates += receipts.iter().filter(|r| r.duplicate).count() as u64;
                sent.ids
                    .extend(receipts.into_iter().map(|receipt| receipt.message_id));
            }
            Err(err) => {
                // Not resent: without dedup ids a resend could store a second copy.
                sent.failed += count;
                let retriable = err.is_retriable();
                sent.first_error.get_or_insert_with(|| err.to_string());
                if !retriable {
                    return Err(anyhow::Error::from(err).context("sending"));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        done += count;
        super::progress::sent(count);
    }
    Ok(sent)
}

/// What the consumers received and acked.
#[derive(Debug)]
struct Received {
    received: u64,
    redelivered: u64,
    duplicates: u64,
    acked: u64,
    acked_bytes: u64,
    ack_failed: u64,
    last_ack_at: Option<Instant>,
    receive_latency: Histogram<u64>,
    ack_latency: Histogram<u64>,
    end_to_end: Histogram<u64>,
    first_error: Option<String>,
}

impl Received {
    fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            received: 0,
            redelivered: 0,
            duplicates: 0,
            acked: 0,
            acked_bytes: 0,
            ack_failed: 0,
            last_ack_at: None,
            receive_latency: report::histogram()?,
            ack_latency: report::histogram()?,
            end_to_end: report::histogram()?,
            first_error: None,
        })
    }

    fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        self.received += other.received;
        self.redelivered += other.redelivered;
        self.duplicates += other.duplicates;
        self.acked += other.acked;
        self.acked_bytes += other.acked_bytes;
        self.ack_failed += other.ack_failed;
        self.last_ack_at = [self.last_ack_at, other.last_ack_at]
            .into_iter()
            .flatten()
            .max();
        self.receive_latency.add(&other.receive_latency)?;
        self.ack_latency.add(&other.ack_latency)?;
        self.end_to_end.add(&other.end_to_end)?;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

/// Whether a failed request is worth repeating (and the first such error noted).
fn tolerate(err: ClientError, first_error: &mut Option<String>) -> anyhow::Result<()> {
    if !err.is_retriable() {
        return Err(err.into());
    }
    first_error.get_or_insert_with(|| err.to_string());
    Ok(())
}

async fn consume(
    client: &Client,
    args: &QueueBenchArgs,
    index: usize,
    shared: &Shared,
) -> anyhow::Result<Received> {
    let options = ReceiveOptions::new(args.batch)
        .with_wait(RECEIVE_WAIT)
        .with_consumer_id(format!("bench-{index}"));
    let mut out = Received::empty()?;
    while !shared.finished() {
        let before = Instant::now();
        let messages = match client.receive(&args.queue, &options).await {
            Ok(messages) => messages,
            Err(err) => {
                tolerate(err, &mut out.first_error).context("receiving")?;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        report::record(&mut out.receive_latency, before.elapsed(), 1);
        out.received += messages.len() as u64;
        out.redelivered += messages.iter().filter(|m| m.receive_count > 1).count() as u64;
        let before = Instant::now();
        let results = match client
            .ack(&args.queue, messages.iter().map(|m| &m.receipt))
            .await
        {
            Ok(results) => results,
            Err(err) => {
                // The messages come back after their visibility timeout.
                out.ack_failed += messages.len() as u64;
                tolerate(err, &mut out.first_error).context("acking")?;
                continue;
            }
        };
        let now = Instant::now();
        let acked_ns = unix_nanos();
        report::record(&mut out.ack_latency, now - before, 1);
        out.last_ack_at = Some(now);
        let mut acked = lock(&shared.acked_ids);
        for (message, result) in messages.into_iter().zip(results) {
            if let Err(err) = result {
                out.ack_failed += 1;
                out.first_error.get_or_insert_with(|| err.to_string());
                continue;
            }
            out.acked += 1;
            super::progress::received(1);
            out.acked_bytes += message.body.len() as u64;
            let mut stamp = [0u8; 8];
            if let Some(head) = message.body.get(..8) {
                stamp.copy_from_slice(head);
            }
            let latency = acked_ns.saturating_sub(u64::from_le_bytes(stamp));
            report::record(&mut out.end_to_end, Duration::from_nanos(latency), 1);
            if acked.insert(message.id) {
                shared.unique_acked.fetch_add(1, Ordering::Relaxed);
            } else {
                // Delivered again after it was acked: the broker broke its promise.
                out.duplicates += 1;
            }
        }
    }
    Ok(out)
}

/// The run's figures.
#[derive(Debug)]
struct Outcome {
    sent: Sent,
    received: Received,
    unique_acked: u64,
    lost: u64,
    unexpected: u64,
    /// When consumers started, in `--drain` runs.
    drain_started: Option<Instant>,
}

impl Outcome {
    fn new(sent: Sent, received: Received, acked_ids: &IdSet) -> Self {
        let lost = sent
            .ids
            .iter()
            .filter(|id| !acked_ids.contains(*id))
            .count() as u64;
        let sent_and_acked = sent.ids.len() as u64 - lost;
        let unique_acked = acked_ids.len() as u64;
        Self {
            unexpected: unique_acked.saturating_sub(sent_and_acked),
            unique_acked,
            lost,
            sent,
            received,
            drain_started: None,
        }
    }

    /// First send → last ack: the span over which messages went all the way through;
    /// in `--drain` runs, first receive → last ack.
    fn end_to_end_seconds(&self) -> f64 {
        match (
            self.drain_started.or(self.sent.first_at),
            self.received.last_ack_at,
        ) {
            (Some(first), Some(last)) if last > first => (last - first).as_secs_f64(),
            _ => 1e-9,
        }
    }

    fn send_seconds(&self) -> f64 {
        match (self.sent.first_at, self.sent.last_at) {
            (Some(first), Some(last)) if last > first => (last - first).as_secs_f64(),
            _ => 1e-9,
        }
    }

    fn to_json(&self, config: serde_json::Value) -> serde_json::Value {
        let seconds = self.end_to_end_seconds();
        let sent = self.sent.ids.len() as u64;
        json!({
            "mode": "queue",
            "sent": sent,
            "send_failed": self.sent.failed,
            "send_duplicates": self.sent.duplicates,
            "received": self.received.received,
            "redelivered": self.received.redelivered,
            "duplicates": self.received.duplicates,
            "acked": self.received.acked,
            "ack_failed": self.received.ack_failed,
            "unique_acked": self.unique_acked,
            "lost": self.lost,
            "unexpected": self.unexpected,
            "seconds": round(seconds, 3),
            "msgs_per_sec": round(self.unique_acked as f64 / seconds, 1),
            "mb_per_sec": round(self.received.acked_bytes as f64 / 1e6 / seconds, 2),
            "send_seconds": round(self.send_seconds(), 3),
            "send_msgs_per_sec": round(sent as f64 / self.send_seconds(), 1),
            "latency_ms": {
                "send": latency_json(&self.sent.latency),
                "receive": latency_json(&self.received.receive_latency),
                "ack": latency_json(&self.received.ack_latency),
                "end_to_end": latency_json(&self.received.end_to_end),
            },
            "first_error": self.sent.first_error.as_ref().or(self.received.first_error.as_ref()),
            "config": config,
        })
    }

    fn to_text(&self) -> String {
        let seconds = self.end_to_end_seconds();
        let sent = self.sent.ids.len() as u64;
        let mut text = format!(
            "queue: sent {sent}, received {}, acked {} ({} unique) in {seconds:.2} s\n",
            self.received.received, self.received.acked, self.unique_acked
        );
        text.push_str(&format!(
            "throughput: {:.0} msgs/s end to end ({}), {:.0} msgs/s sent\n",
            self.unique_acked as f64 / seconds,
            output::bytes(self.received.acked_bytes),
            sent as f64 / self.send_seconds()
        ));
        text.push_str(&format!(
            "lost {}, redelivered {}, duplicates {}, send failures {}, ack failures {}\n",
            self.lost,
            self.received.redelivered,
            self.received.duplicates,
            self.sent.failed,
            self.received.ack_failed
        ));
        let rows = [
            ("send", &self.sent.latency),
            ("receive", &self.received.receive_latency),
            ("ack", &self.received.ack_latency),
            ("end-to-end", &self.received.end_to_end),
        ];
        for (label, histogram) in rows {
            text.push_str(&format!(
                "{label:<11} latency (ms): {}\n",
                latency_text(histogram)
            ));
        }
        if let Some(err) = self
            .sent
            .first_error
            .as_ref()
            .or(self.received.first_error.as_ref())
        {
            text.push_str(&format!("first error: {err}\n"));
        }
        text
    }

    fn print(&self, format: OutputFormat, config: serde_json::Value) -> anyhow::Result<()> {
        match format {
            OutputFormat::Text => print!("{}", self.to_text()),
            OutputFormat::Json => output::print_json(&self.to_json(config))?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> QueueBenchArgs {
        QueueBenchArgs {
            queue: "q".into(),
            durability: Durability::Fsync,
            replication_factor: 1,
            replication: ReplicationMode::Sync,
            fifo: true,
            groups: 3,
            producers: 2,
            consumers: 1,
            batch: 4,
            message_size: 16,
            messages: 10,
            rate: None,
            timeout_s: 1,
            keep: false,
            drain: false,
        }
    }

    #[test]
    fn batches_carry_the_send_time_and_spread_groups() {
        let plan = Plan {
            index: 1,
            share: 4,
            rate: None,
            deadline: Instant::now(),
        };
        let before = unix_nanos();
        let messages = batch(&args(), &plan, 0, 4);
        assert_eq!(messages.len(), 4);
        let groups: Vec<_> = messages.iter().filter_map(|m| m.group_id.clone()).collect();
        assert_eq!(groups, ["g1", "g2", "g0", "g1"]);
        for message in &messages {
            assert_eq!(message.body.len(), 16);
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&message.body[..8]);
            assert!(u64::from_le_bytes(stamp) >= before);
        }
    }

    #[test]
    fn lost_and_unexpected_compare_sent_with_acked_ids() -> anyhow::Result<()> {
        let mut sent = Sent::empty()?;
        sent.ids = vec!["a".into(), "b".into(), "c".into()];
        let acked: IdSet = ["a".into(), "c".into(), "z".into()].into_iter().collect();
        let outcome = Outcome::new(sent, Received::empty()?, &acked);
        assert_eq!((outcome.lost, outcome.unexpected), (1, 1));
        let value = outcome.to_json(json!({}));
        assert_eq!(value["sent"], 3);
        assert_eq!(value["lost"], 1);
        assert!(value["latency_ms"]["end_to_end"]["p99"].is_number());
        assert!(outcome.to_text().contains("lost 1"));
        Ok(())
    }
}
