//! `ferryctl bench …`: produce, consume and end-to-end throughput and latency of
//! topics, and send→receive→ack of queues.
//!
//! Each mode prints one report (one JSON document with `--output json`). Benchmarks
//! are programs that print figures, not timed tests.

mod consume;
mod produce;
mod queue;
mod report;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{ArgAction, Args, Subcommand};
use ferry_client::{Client, Durability, ErrorCode, TopicDescription, TopicSettings};
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
    /// Target messages per second across producers (e2e default 50 000; otherwise
    /// unlimited).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Idempotent producer: true or false.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub idempotent: bool,
}

fn parse_durability(text: &str) -> Result<Durability, String> {
    text.parse()
        .map_err(|err: ferry_client::ClientError| err.to_string())
}

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
        {
            bail!("--batch-size, --producers, --consumers and --partitions must be positive");
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
    let topic = prepare_topic(&client, &args).await?;
    let report = match mode {
        "produce" => {
            let amount = args.amount(1_000_000);
            let outcome = produce::run(context, &topic, &args, amount, args.rate).await?;
            outcome.into_report(args.config_json(&topic, args.rate))
        }
        "consume" => consume::run_consume(context, &client, &topic, &args).await?,
        _ => {
            let rate = args.rate.unwrap_or(50_000);
            consume::run_e2e(context, &topic, &args, rate).await?
        }
    };
    report.print(context.output)
}

/// Uses the named topic when it exists, or creates it (fresh name by default).
async fn prepare_topic(client: &Client, args: &BenchArgs) -> anyhow::Result<TopicDescription> {
    let name = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench-{}", unix_nanos() / 1_000_000));
    match client.describe_topic(&name).await {
        Ok(topic) => {
            if args.durability.is_some() && args.durability != topic.settings.durability {
                eprintln!("note: topic '{name}' exists; keeping its durability");
            }
            Ok(topic)
        }
        Err(err) if err.is(ErrorCode::TopicNotFound) => {
            let settings = TopicSettings {
                partitions: args.partitions,
                durability: args.durability,
                ..TopicSettings::default()
            };
            client
                .create_topic(&name, &settings)
                .await
                .with_context(|| format!("creating bench topic '{name}'"))
        }
        Err(err) => Err(err.into()),
    }
}

/// Nanoseconds since the Unix epoch: the send time embedded in bench values.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}
