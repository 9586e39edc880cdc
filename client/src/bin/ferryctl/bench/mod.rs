//! `ferryctl bench …`: produce, consume and end-to-end throughput and latency of
//! topics, and send→receive→ack of queues.
//!
//! Each mode prints one report (one JSON document with `--output json`). Benchmarks
//! are programs that print figures, not timed tests.

mod consume;
mod produce;
mod progress;
mod queue;
mod report;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{ArgAction, Args, Subcommand};
use ferry_client::{
    Client, Durability, ErrorCode, ReplicationMode, TopicDescription, TopicSettings,
};
use serde_json::json;

use crate::Context;

/// Bench modes.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce as fast as possible (or at --rate); latency is send→ack per batch.
    Produce(BenchArgs),
    /// Read a topic from the beginning (filling it first when empty); latency is the
    /// duration of each poll that returned records.
    Consume(BenchArgs),
    /// Produce at --rate while consuming; latency is produce time (first 8 bytes of
    /// each value) → consumer receive time.
    E2e(BenchArgs),
    /// Send to a fresh queue while consumers receive and ack; latency per RPC and send
    /// time (first 8 bytes of each body) → ack; checks that every message was acked.
    Queue(queue::QueueBenchArgs),
}

/// Settings shared by every bench mode.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Topic to use; created when missing (default: a fresh `bench-<ms>` topic).
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of a topic the bench creates.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Value size in bytes (at least 8: the first 8 carry the send time).
    #[arg(long, default_value_t = 100)]
    pub message_size: usize,
    /// Records per batch (and per `send_batch` call).
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: u32,
    /// Producer linger in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Concurrent producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Concurrent consumers, each with its own connection and share of partitions.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Messages to produce (default 1 000 000, or --rate × 10 s for e2e).
    #[arg(long, conflicts_with = "duration_s")]
    pub messages: Option<u64>,
    /// Produce for this many seconds instead of a message count.
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Durability of a topic the bench creates: fsync, interval or none.
    #[arg(long, value_parser = parse_durability)]
    pub durability: Option<Durability>,
    /// Replicas per partition of a topic the bench creates (more than 1 needs a
    /// cluster).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: u32,
    /// Replication mode of a topic the bench creates: sync (acknowledged once the
    /// in-sync replicas have it) or async (once the leader has it).
    #[arg(long, value_parser = parse_replication, default_value = "sync")]
    pub replication: ReplicationMode,
    /// Target messages per second across producers (e2e default 50 000; otherwise
    /// unlimited).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Idempotent producer: true or false.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub idempotent: bool,
    /// Keep a topic the bench created (by default it is deleted after the run; a
    /// topic that existed before is always kept).
    #[arg(long)]
    pub keep: bool,
}

fn parse_durability(text: &str) -> Result<Durability, String> {
    text.parse()
        .map_err(|err: ferry_client::ClientError| err.to_string())
}

fn parse_replication(text: &str) -> Result<ReplicationMode, String> {
    match text.to_ascii_lowercase().as_str() {
        "sync" => Ok(ReplicationMode::Sync),
        "async" => Ok(ReplicationMode::Async),
        other => Err(format!(
            "unknown replication '{other}' (expected sync or async)"
        )),
    }
}

/// How long the bench waits for a topic's partitions to have leaders and in-sync
/// replicas before it starts.
const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between placement checks.
const PLACEMENT_POLL: Duration = Duration::from_millis(100);

/// How much to produce.
#[derive(Debug, Clone, Copy)]
pub enum Amount {
    /// Exactly this many messages in total.
    Messages(u64),
    /// For this long.
    Duration(Duration),
}

impl BenchArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.message_size < 8 {
            bail!("--message-size must be at least 8 (the send time is embedded)");
        }
        if self.batch_size == 0
            || self.producers == 0
            || self.consumers == 0
            || self.partitions == 0
            || self.replication_factor == 0
        {
            bail!(
                "--batch-size, --producers, --consumers, --partitions and \
                 --replication-factor must be positive"
            );
        }
        if self.rate == Some(0) {
            bail!("--rate must be positive");
        }
        Ok(())
    }

    fn amount(&self, default_messages: u64) -> Amount {
        match (self.messages, self.duration_s) {
            (Some(messages), _) => Amount::Messages(messages),
            (None, Some(seconds)) => Amount::Duration(Duration::from_secs(seconds)),
            (None, None) => Amount::Messages(default_messages),
        }
    }

    fn config_json(&self, topic: &TopicDescription, rate: Option<u64>) -> serde_json::Value {
        json!({
            "topic": topic.name,
            "partitions": topic.partition_count(),
            "message_size": self.message_size,
            "batch_size": self.batch_size,
            "linger_ms": self.linger_ms,
            "producers": self.producers,
            "consumers": self.consumers,
            "messages": self.messages,
            "duration_s": self.duration_s,
            "durability": topic.settings.durability.map(|d| d.to_string()),
            "replication_factor": topic.settings.replication_factor,
            "replication": topic.settings.replication.map(|r| r.to_string()),
            "rate": rate,
            "idempotent": self.idempotent,
        })
    }
}

/// Runs a bench mode and prints its report.
pub async fn run(context: &Context, command: BenchCommand) -> anyhow::Result<()> {
    let (mode, args) = match command {
        BenchCommand::Produce(args) => ("produce", args),
        BenchCommand::Consume(args) => ("consume", args),
        BenchCommand::E2e(args) => ("e2e", args),
        BenchCommand::Queue(args) => return queue::run(context, &args).await,
    };
    args.validate()?;
    let client = context.connect().await?;
    let (topic, created) = prepare_topic(&client, &args).await?;
    let progress = progress::Progress::start();
    let result = measure(context, &client, mode, &topic, &args).await;
    drop(progress);
    if created
        && !args.keep
        && let Err(err) = client.delete_topic(&topic.name).await
    {
        eprintln!("note: could not delete bench topic '{}': {err}", topic.name);
    }
    result?.print(context.output)
}

/// Runs one topic bench mode on `topic` once its partitions are led.
async fn measure(
    context: &Context,
    client: &Client,
    mode: &str,
    topic: &TopicDescription,
    args: &BenchArgs,
) -> anyhow::Result<report::Report> {
    let leaders = wait_for_leaders(client, topic).await?;
    let report = match mode {
        "produce" => {
            let amount = args.amount(1_000_000);
            let outcome = produce::run(context, topic, args, amount, args.rate).await?;
            outcome.into_report(args.config_json(topic, args.rate), &leaders)
        }
        "consume" => consume::run_consume(context, client, topic, args).await?,
        _ => {
            let rate = args.rate.unwrap_or(50_000);
            consume::run_e2e(context, topic, args, rate).await?
        }
    };
    Ok(report)
}

/// Uses the named topic when it exists, or creates it (fresh name by default);
/// whether it was created here.
async fn prepare_topic(
    client: &Client,
    args: &BenchArgs,
) -> anyhow::Result<(TopicDescription, bool)> {
    let name = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench-{}", unix_nanos() / 1_000_000));
    match client.describe_topic(&name).await {
        Ok(topic) => {
            if args.durability.is_some() && args.durability != topic.settings.durability {
                eprintln!("note: topic '{name}' exists; keeping its durability");
            }
            let replication = (
                topic.settings.replication_factor.unwrap_or(1),
                topic.settings.replication,
            );
            if replication != (args.replication_factor, Some(args.replication)) {
                eprintln!("note: topic '{name}' exists; keeping its replication");
            }
            Ok((topic, false))
        }
        Err(err) if err.is(ErrorCode::TopicNotFound) => {
            let settings = TopicSettings {
                partitions: args.partitions,
                durability: args.durability,
                replication_factor: Some(args.replication_factor),
                replication: Some(args.replication),
                ..TopicSettings::default()
            };
            client
                .create_topic(&name, &settings)
                .await
                .map(|topic| (topic, true))
                .with_context(|| format!("creating bench topic '{name}'"))
        }
        Err(err) => Err(err.into()),
    }
}

/// Waits until every partition of `topic` has a leader and all its replicas in sync,
/// and returns each partition's leader host id.
///
/// A cluster places a new topic's partitions and elects their leaders shortly after
/// the create returns; producing before that would measure retries, not the broker.
async fn wait_for_leaders(
    client: &Client,
    topic: &TopicDescription,
) -> anyhow::Result<BTreeMap<u32, String>> {
    let deadline = Instant::now() + PLACEMENT_TIMEOUT;
    loop {
        let metadata = client
            .cluster_metadata(&[&topic.name])
            .await
            .with_context(|| format!("reading the placement of '{}'", topic.name))?;
        let partitions = metadata
            .topics
            .iter()
            .find(|placed| placed.name == topic.name)
            .map(|placed| placed.partitions.as_slice())
            .unwrap_or_default();
        let led = partitions.len() == topic.partition_count() as usize
            && partitions.iter().all(|p| p.leader.is_some());
        let in_sync = partitions
            .iter()
            .all(|p| p.in_sync_replicas.len() == p.replicas.len());
        let leaders = || {
            partitions
                .iter()
                .filter_map(|p| Some((p.partition, p.leader.clone()?)))
                .collect()
        };
        if led && in_sync {
            return Ok(leaders());
        }
        if Instant::now() >= deadline {
            // A cluster missing a replica can still be measured; one missing a
            // leader would only measure retries.
            if led {
                eprintln!("note: not every replica of '{}' is in sync", topic.name);
                return Ok(leaders());
            }
            bail!(
                "some partitions of '{}' had no leader after {PLACEMENT_TIMEOUT:?}",
                topic.name
            );
        }
        tokio::time::sleep(PLACEMENT_POLL).await;
    }
}

/// Nanoseconds since the Unix epoch: the send time embedded in bench values.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}
