//! `bench_cluster`: produce throughput and latency of a three-host cluster (RF=3,
//! `sync` replication) next to one standalone host, measured in one run on one
//! machine, so the ratio between them means something on a busy box; and the same
//! for a queue (send, receive and ack, `ferryctl bench queue`, RF=3 in the cluster).
//!
//! It starts `ferry-broker standalone` on 127.0.0.100 with its own temporary data
//! directory and runs `ferryctl bench produce` against it for each message size;
//! stops it; then starts etcd and three `ferry-broker serve` hosts
//! ([`ferry_e2e::Cluster`]) and runs the same bench against one host with
//! `--replication-factor 3 --replication sync`. Every case uses the same partitions,
//! producers, batch size, linger and amount, with `fsync` durability, on a fresh
//! topic. It prints one JSON document: per size, both cases' throughput (msg/s,
//! MB/s) and send→ack latency (p50, p99, p99.9, max), which host acknowledged what,
//! and `ratio_to_standalone` (cluster msg/s ÷ standalone msg/s).
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo build --release \
//!     -p ferry-broker -p ferry-client -p ferry-e2e
//! /work/target-bench/release/bench_cluster            # defaults: about 2 minutes
//! /work/target-bench/release/bench_cluster --duration-s 30 --partitions 6 \
//!     --producers 2 --batch-size 1000 --sizes 100,1024
//! /work/target-bench/release/bench_cluster --rate 20000 # latency below saturation
//! ```
//!
//! `ferry-broker` and `ferryctl` are taken from beside this binary unless
//! `FERRY_BROKER_BIN` / `FERRYCTL_BIN` name them; etcd as the e2e harness finds it.
//! Every process runs under `timeout 600`, so the cluster phase must end within ten
//! minutes. Broker logs (level `FERRY_LOG`, default `warn`) go to stderr; only the
//! JSON goes to stdout.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use ferry_e2e::bench::{LIFETIME_S, Standalone, bench, binaries_for_harness, load_average, round};
use ferry_e2e::{Cluster, ClusterOptions};
use serde_json::{Value, json};

/// Time a cluster case needs beyond its produce duration: topic creation, leader
/// election, flushing what is in flight.
const CASE_OVERHEAD_S: u64 = 30;
/// Hosts in the cluster.
const CLUSTER_HOSTS: usize = 3;
/// Replicas per partition in the cluster.
const REPLICATION_FACTOR: u32 = 3;
/// Longest the queue case may take in each phase, in seconds.
const QUEUE_CASE_S: u64 = 120;

/// Produce throughput and p99 latency: a three-host RF=3 sync cluster against a
/// standalone host, on this machine, in one run.
#[derive(Debug, Parser)]
#[command(name = "bench_cluster")]
struct Args {
    /// Produce for this many seconds per case.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Produce this many messages per case instead of for a duration.
    #[arg(long, conflicts_with = "duration_s")]
    messages: Option<u64>,
    /// Message sizes in bytes, comma-separated (at least 8 each).
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    sizes: Vec<usize>,
    /// Partitions of each bench topic (a multiple of 3 gives every host as many
    /// leaders).
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// Concurrent producers, each with its own connection.
    #[arg(long, default_value_t = 2)]
    producers: u32,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    batch_size: u32,
    /// Producer linger in milliseconds.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Replication of the cluster's topics: sync or async.
    #[arg(long, default_value = "sync")]
    replication: String,
    /// Offer this many messages per second in every case instead of as many as the
    /// host takes: latency then shows the commit path rather than the client's
    /// queue, which at saturation holds `2 × batch size × partitions` records per
    /// producer.
    #[arg(long)]
    rate: Option<u64>,
    /// One more `ferry-broker serve` argument for every cluster host (repeatable;
    /// `--host-arg=--replica-fetch-max-wait-ms=50`), to see what a setting changes.
    #[arg(long = "host-arg", allow_hyphen_values = true)]
    host_args: Vec<String>,
    /// Messages of the queue case (send, receive, ack: `ferryctl bench queue`, 100-byte
    /// bodies) in each phase; 0 skips it.
    #[arg(long, default_value_t = 200_000)]
    queue_messages: u64,
    /// Messages per send and most per receive in the queue case.
    #[arg(long, default_value_t = 200)]
    queue_batch: u32,
    /// Sending tasks of the queue case.
    #[arg(long, default_value_t = 4)]
    queue_producers: u32,
    /// Receiving (and acking) tasks of the queue case.
    #[arg(long, default_value_t = 8)]
    queue_consumers: u32,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        if self.sizes.is_empty() || self.sizes.iter().any(|&size| size < 8) {
            bail!("--sizes must list sizes of at least 8 bytes");
        }
        if self.rate == Some(0) {
            bail!("--rate must be positive");
        }
        if !["sync", "async"].contains(&self.replication.as_str()) {
            bail!("--replication must be sync or async");
        }
        let cases = self.sizes.len() as u64;
        let queue_case = if self.queue_messages > 0 {
            QUEUE_CASE_S
        } else {
            0
        };
        if self.messages.is_none()
            && cases * (self.duration_s + CASE_OVERHEAD_S) + queue_case > LIFETIME_S
        {
            bail!(
                "{cases} cases of --duration-s {} do not fit the {LIFETIME_S} s the \
                 harness lets a cluster live",
                self.duration_s
            );
        }
        Ok(())
    }

    /// The `ferryctl bench produce` arguments every case shares.
    fn bench_args(&self, size: usize) -> Vec<String> {
        let mut args: Vec<String> = [
            "bench",
            "produce",
            "--durability",
            "fsync",
            "--message-size",
            &size.to_string(),
            "--partitions",
            &self.partitions.to_string(),
            "--producers",
            &self.producers.to_string(),
            "--batch-size",
            &self.batch_size.to_string(),
            "--linger-ms",
            &self.linger_ms.to_string(),
        ]
        .map(String::from)
        .into();
        match self.messages {
            Some(messages) => args.extend(["--messages".to_owned(), messages.to_string()]),
            None => args.extend(["--duration-s".to_owned(), self.duration_s.to_string()]),
        }
        if let Some(rate) = self.rate {
            args.extend(["--rate".to_owned(), rate.to_string()]);
        }
        args
    }

    /// The `ferryctl bench queue` arguments of the queue case.
    fn queue_args(&self, queue: &str) -> Vec<String> {
        [
            "bench",
            "queue",
            "--queue",
            queue,
            "--durability",
            "fsync",
            "--message-size",
            "100",
            "--messages",
            &self.queue_messages.to_string(),
            "--batch",
            &self.queue_batch.to_string(),
            "--producers",
            &self.queue_producers.to_string(),
            "--consumers",
            &self.queue_consumers.to_string(),
            "--timeout-s",
            &QUEUE_CASE_S.to_string(),
        ]
        .map(String::from)
        .into()
    }

    fn settings_json(&self) -> Value {
        json!({
            "partitions": self.partitions,
            "producers": self.producers,
            "batch_size": self.batch_size,
            "linger_ms": self.linger_ms,
            "duration_s": self.messages.is_none().then_some(self.duration_s),
            "messages": self.messages,
            "rate": self.rate,
            "durability": "fsync",
            "cluster_hosts": CLUSTER_HOSTS,
            "replication_factor": REPLICATION_FACTOR,
            "replication": self.replication,
            "host_args": self.host_args,
            "queue": (self.queue_messages > 0).then(|| json!({
                "messages": self.queue_messages,
                "batch": self.queue_batch,
                "producers": self.queue_producers,
                "consumers": self.queue_consumers,
                "message_size": 100,
            })),
        })
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate()?;
    let binaries = binaries_for_harness()?;
    let mut standalone = Vec::new();
    let mut standalone_queue = None;
    {
        let data = tempfile::Builder::new()
            .prefix("ferry-bench-standalone-")
            .tempdir()
            .context("creating the standalone data directory")?;
        let host = Standalone::start(&binaries.broker, data.path(), &[], LIFETIME_S)?;
        for &size in &args.sizes {
            eprintln!("bench_cluster: standalone, {size}-byte messages");
            let load = load_average();
            let report = bench(&binaries.ferryctl, &host.url(), &args.bench_args(size))?;
            standalone.push(summary(&report, load));
        }
        if args.queue_messages > 0 {
            eprintln!("bench_cluster: standalone, queue");
            let load = load_average();
            let report = bench(
                &binaries.ferryctl,
                &host.url(),
                &args.queue_args("bench-queue"),
            )?;
            standalone_queue = Some(queue_summary(&report, load));
        }
    }
    eprintln!("bench_cluster: starting etcd and {CLUSTER_HOSTS} hosts");
    let cluster = Cluster::start_with(ClusterOptions {
        name: "bench".to_owned(),
        hosts: CLUSTER_HOSTS,
        extra_args: args.host_args.clone(),
        ..ClusterOptions::default()
    });
    let mut clustered = Vec::new();
    for &size in &args.sizes {
        eprintln!("bench_cluster: cluster, {size}-byte messages");
        let mut bench_args = args.bench_args(size);
        bench_args.extend([
            "--replication-factor".to_owned(),
            REPLICATION_FACTOR.to_string(),
            "--replication".to_owned(),
            args.replication.clone(),
        ]);
        let load = load_average();
        let report = bench(&binaries.ferryctl, &cluster.hosts()[0].url(), &bench_args)?;
        clustered.push(summary(&report, load));
    }
    let mut clustered_queue = None;
    if args.queue_messages > 0 {
        eprintln!("bench_cluster: cluster, queue");
        let mut queue_args = args.queue_args("bench-queue");
        queue_args.extend([
            "--replication-factor".to_owned(),
            REPLICATION_FACTOR.to_string(),
            "--replication".to_owned(),
            args.replication.clone(),
        ]);
        let load = load_average();
        let report = bench(&binaries.ferryctl, &cluster.hosts()[0].url(), &queue_args)?;
        clustered_queue = Some(queue_summary(&report, load));
    }
    drop(cluster);
    let cases: Vec<Value> = args
        .sizes
        .iter()
        .zip(standalone.iter().zip(&clustered))
        .map(|(size, (alone, together))| {
            let ratio = together["msgs_per_sec"].as_f64().unwrap_or(0.0)
                / alone["msgs_per_sec"].as_f64().unwrap_or(0.0).max(1e-9);
            json!({
                "message_size": size,
                "standalone": alone,
                "cluster": together,
                "ratio_to_standalone": round(ratio, 3),
            })
        })
        .collect();
    let queue = match (standalone_queue, clustered_queue) {
        (Some(alone), Some(together)) => {
            let ratio = together["msgs_per_sec"].as_f64().unwrap_or(0.0)
                / alone["msgs_per_sec"].as_f64().unwrap_or(0.0).max(1e-9);
            json!({
                "standalone": alone,
                "cluster": together,
                "ratio_to_standalone": round(ratio, 3),
            })
        }
        _ => Value::Null,
    };
    let document = json!({
        "benchmark": "produce",
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "settings": args.settings_json(),
        "cases": cases,
        "queue": queue,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&document).context("encoding the report")?
    );
    Ok(())
}

/// The figures of one case, from a `ferryctl bench produce` report.
fn summary(report: &Value, load_average_1m: Option<f64>) -> Value {
    json!({
        "messages": report["messages"],
        "failed": report["failed"],
        "seconds": report["seconds"],
        "msgs_per_sec": report["msgs_per_sec"],
        "mb_per_sec": report["mb_per_sec"],
        "latency_ms": report["latency_ms"],
        "by_leader": report["by_leader"],
        "load_average_1m_before": load_average_1m,
    })
}

/// The figures of a queue case, from a `ferryctl bench queue` report: throughput is
/// messages sent, received and acked per second end to end.
fn queue_summary(report: &Value, load_average_1m: Option<f64>) -> Value {
    json!({
        "sent": report["sent"],
        "unique_acked": report["unique_acked"],
        "lost": report["lost"],
        "redelivered": report["redelivered"],
        "seconds": report["seconds"],
        "msgs_per_sec": report["msgs_per_sec"],
        "latency_ms": report["latency_ms"],
        "load_average_1m_before": load_average_1m,
    })
}
