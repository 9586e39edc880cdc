//! `bench_disk`: how close produce comes to the disk's own speed, in one run on one
//! machine (issue 16's figures). It measures the disk first, then a standalone host
//! (and a three-host cluster) against it, and prints one JSON document:
//!
//! - `disk`: sequential write of `--disk-bytes` (1 MiB writes, then one
//!   `fdatasync`, timed together), the same with `O_DIRECT`, synchronous 4 KiB
//!   writes per second (`write` + `fdatasync` each), and the latency of a small
//!   `write` + `fdatasync` once a millisecond while another thread writes a bulk file
//!   (the disk's own floor under `latency_under_bulk`), in the directory the brokers
//!   use, before the standalone runs and after them (a shared machine's disk drifts;
//!   ratios use the means: `ratio_to_disk` the buffered figure the issue names,
//!   `ratio_to_direct_disk` the device's own);
//! - `produce_1k_fsync` / `produce_1k_interval`: `--bytes` of 1 KiB messages with
//!   `fsync` / `interval` durability, MB/s and the ratio to the sequential write,
//!   with per-quarter rates and the broker's resident memory (start, max, end);
//! - `produce_100b_fsync`: `--small-messages` 100-byte messages with `fsync`, the
//!   rate of each quarter and the last quarter's over the first's;
//! - `latency_under_bulk`: send→ack latency of 100-byte messages offered at
//!   `--latency-rate` (no linger) on one topic while a bulk 1 KiB producer writes
//!   another;
//! - `large`: 64 KiB and 1 MiB messages (`--large-bytes` each), ratio to the disk;
//! - `replicated_1k_fsync`: 1 KiB messages on a three-host cluster (RF=3, `sync`,
//!   every replica on this one disk), ratio to the standalone figure.
//!
//! Every produce run also reports `cpu`: the brokers' and the load generator's CPU
//! seconds, CPU milliseconds per MB produced, how busy the machine's cores were, and
//! how long the brokers' threads waited for a core; the replicated case compares its
//! CPU per MB with the standalone 1 KiB `fsync` run's.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo build --release \
//!     -p ferry-broker -p ferry-client -p ferry-e2e
//! /work/target-bench/release/bench_disk                 # the issue's amounts
//! /work/target-bench/release/bench_disk --bytes 1000000000 --small-messages 5000000 \
//!     --large-bytes 500000000 --cluster-bytes 500000000   # a quicker look
//! ```
//!
//! Each case writes a fresh topic that the bench deletes afterwards; the disk test
//! file is deleted too. Goals are printed beside the figures; nothing here asserts
//! them. Binaries and logs are found as `bench_cluster` finds them.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use ferry_e2e::bench::{
    CpuSnapshot, LIFETIME_S, Standalone, bench, bench_with_cpu, binaries_for_harness, load_average,
    resident_bytes, round,
};
use ferry_e2e::{Cluster, ClusterOptions};
use serde_json::{Value, json};

/// Largest message the standalone host takes in this bench (the 1 MiB case plus
/// its record's framing).
const MAX_MESSAGE_BYTES: u64 = 2 << 20;
/// Largest batch it takes.
const MAX_BATCH_BYTES: u64 = 64 << 20;
/// How often the broker's resident memory is sampled.
const MEMORY_SAMPLE: Duration = Duration::from_millis(200);
/// Hosts of the replicated case.
const CLUSTER_HOSTS: usize = 3;
/// The disk's small-fsync latency beside a bulk writer: what one small write holds
/// (a millisecond of the latency probe's 50 k messages of 100 B)...
const SMALL_SYNC_BYTES: usize = 5_000;
/// ...how often it is written and fsynced...
const SMALL_SYNC_EVERY: Duration = Duration::from_millis(1);
/// ...and the bulk writer beside it: 1 MiB writes, an `fdatasync` every 10 MiB, and
/// what lies more than 64 MiB behind the end dropped from the page cache (as a
/// broker's log does).
const BULK_SYNC_BYTES: u64 = 10 << 20;
const BULK_CACHE_WINDOW: u64 = 64 << 20;

/// The disk, then produce against it.
#[derive(Debug, Parser)]
#[command(name = "bench_disk")]
struct Args {
    /// Directory on the disk to measure; the brokers' data goes here too (default:
    /// the system's temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Bytes of the disk's sequential write.
    #[arg(long, default_value_t = 2 << 30)]
    disk_bytes: u64,
    /// Seconds of synchronous 4 KiB writes.
    #[arg(long, default_value_t = 3)]
    sync_write_s: u64,
    /// Bytes of each 1 KiB produce run (fsync and interval).
    #[arg(long, default_value_t = 4_000_000_000)]
    bytes: u64,
    /// Messages of the 100-byte fsync run.
    #[arg(long, default_value_t = 20_000_000)]
    small_messages: u64,
    /// Bytes of each large-message run (64 KiB and 1 MiB).
    #[arg(long, default_value_t = 2_000_000_000)]
    large_bytes: u64,
    /// Messages per second offered by the latency probe.
    #[arg(long, default_value_t = 50_000)]
    latency_rate: u64,
    /// Seconds the latency probe runs (the bulk producer runs 4 s longer).
    #[arg(long, default_value_t = 15)]
    latency_s: u64,
    /// Bytes of the replicated 1 KiB run (default: --bytes, as long as the standalone
    /// run it is compared with: the first gigabyte or so of a run, on fresh pages, is
    /// its slowest); 0 skips the cluster.
    #[arg(long)]
    cluster_bytes: Option<u64>,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Concurrent producers of each run.
    #[arg(long, default_value_t = 2)]
    producers: u32,
    /// Passed on to every broker (standalone and cluster hosts), to compare tuning
    /// knobs: `--broker-arg=--page-cache-window-bytes=0`.
    #[arg(long, allow_hyphen_values = true)]
    broker_arg: Vec<String>,
}

impl Args {
    /// Bytes of the replicated run: as given, else as long as the standalone runs.
    fn cluster_bytes(&self) -> u64 {
        self.cluster_bytes.unwrap_or(self.bytes)
    }

    /// Fails on settings that cannot make a run.
    fn validate(&self) -> anyhow::Result<()> {
        if self.partitions == 0 || self.producers == 0 {
            bail!("--partitions and --producers must be positive");
        }
        if self.disk_bytes == 0 || self.bytes < 1024 || self.small_messages == 0 {
            bail!("--disk-bytes, --bytes and --small-messages must make a run");
        }
        if self.latency_rate == 0 || self.latency_s == 0 {
            bail!("--latency-rate and --latency-s must be positive");
        }
        Ok(())
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
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("ferry-bench-disk-")
        .tempdir_in(&base)
        .with_context(|| format!("a directory under {}", base.display()))?;

    eprintln!("bench_disk: the disk ({} bytes written)", args.disk_bytes);
    let disk = measure_disk(scratch.path(), args.disk_bytes, args.sync_write_s)?;

    let data = scratch.path().join("standalone");
    std::fs::create_dir_all(&data)?;
    let mut broker_args = vec![
        format!("--max-message-bytes={MAX_MESSAGE_BYTES}"),
        format!("--max-batch-bytes={MAX_BATCH_BYTES}"),
    ];
    broker_args.extend(args.broker_arg.iter().cloned());
    let host = Standalone::start(&binaries.broker, &data, &broker_args, 4 * LIFETIME_S)?;
    let pid = host
        .broker_pid()
        .context("the standalone broker's process id")?;
    let runner = Runner {
        ferryctl: &binaries.ferryctl,
        url: host.url(),
        args: &args,
        pid: Some(pid),
        brokers: vec![pid],
    };

    let kib = 1024;
    let fsync_1k = runner.produce("1 KiB, fsync", kib, args.bytes / kib as u64, "fsync", &[])?;
    let interval_1k = runner.produce(
        "1 KiB, interval",
        kib,
        args.bytes / kib as u64,
        "interval",
        &[],
    )?;
    let small = runner.produce("100 B, fsync", 100, args.small_messages, "fsync", &[])?;
    let mut latency = runner.latency_under_bulk()?;
    let mut large = serde_json::Map::new();
    for (size, batch) in [(64 * kib, 128u32), (1024 * kib, 8)] {
        let messages = (args.large_bytes / size as u64).max(1);
        let report = runner.produce(
            &format!("{size}-byte messages, fsync"),
            size,
            messages,
            "fsync",
            &["--batch-size".to_owned(), batch.to_string()],
        )?;
        large.insert(size.to_string(), report);
    }
    drop(host);
    // The disk again: on a shared machine its speed drifts; both measurements are
    // printed and the ratios use their mean.
    eprintln!("bench_disk: the disk again");
    let disk_after = measure_disk(scratch.path(), args.disk_bytes, args.sync_write_s)?;
    let means = DiskMeans {
        buffered_mb_per_sec: (disk.sequential_mb_per_sec + disk_after.sequential_mb_per_sec) / 2.0,
        direct_mb_per_sec: (disk.direct_mb_per_sec + disk_after.direct_mb_per_sec) / 2.0,
    };
    if let Some(latency) = latency.as_object_mut() {
        let floor = (disk.fsync_beside_bulk.p99_ms + disk_after.fsync_beside_bulk.p99_ms) / 2.0;
        latency.insert(
            "disk_fsync_p99_ms_beside_bulk".to_owned(),
            json!(round(floor, 2)),
        );
    }
    let standalone_cpu_ms_per_mb = fsync_1k["cpu"]["cpu_ms_per_mb"].as_f64();
    let fsync_1k = with_ratio(fsync_1k, means, 0.5);
    let interval_1k = with_ratio(interval_1k, means, 0.6);
    let large: serde_json::Map<String, Value> = large
        .into_iter()
        .map(|(size, report)| (size, with_ratio(report, means, 0.8)))
        .collect();

    let replicated = if args.cluster_bytes() > 0 {
        let standalone_mb = mb_per_sec(&fsync_1k["report"]);
        Some(replicated(
            &binaries.ferryctl,
            &args,
            standalone_mb,
            standalone_cpu_ms_per_mb,
        )?)
    } else {
        None
    };

    let small_quarters = quarter_rates(&small);
    let last_to_first = match (small_quarters.first(), small_quarters.last()) {
        (Some(first), Some(last)) if *first > 0.0 => Some(round(last / first, 3)),
        _ => None,
    };
    let document = json!({
        "benchmark": "disk",
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "dir": base.display().to_string(),
        "settings": {
            "partitions": args.partitions,
            "producers": args.producers,
            "bytes": args.bytes,
            "small_messages": args.small_messages,
            "large_bytes": args.large_bytes,
            "latency_rate": args.latency_rate,
            "cluster_bytes": args.cluster_bytes(),
        },
        "disk": {
            "before": disk.to_json(),
            "after": disk_after.to_json(),
            "sequential_write_mb_per_sec_mean": round(means.buffered_mb_per_sec, 1),
            "direct_write_mb_per_sec_mean": round(means.direct_mb_per_sec, 1),
        },
        "produce_1k_fsync": fsync_1k,
        "produce_1k_interval": interval_1k,
        "produce_100b_fsync": {
            "report": small,
            "last_quarter_to_first": last_to_first,
            "goal_last_quarter_to_first_at_least": 0.9,
        },
        "latency_under_bulk": latency,
        "large": large,
        "replicated_1k_fsync": replicated,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&document).context("encoding the report")?
    );
    Ok(())
}

/// What the disk does on its own.
struct Disk {
    sequential_bytes: u64,
    sequential_seconds: f64,
    sequential_mb_per_sec: f64,
    direct_mb_per_sec: f64,
    sync_writes_per_sec: f64,
    fsync_beside_bulk: Latencies,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Latencies {
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latencies {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            let index = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
            samples.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        Self {
            samples: samples.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }

    fn to_json(self) -> Value {
        json!({
            "samples": self.samples,
            "p50": round(self.p50_ms, 2),
            "p99": round(self.p99_ms, 2),
            "max": round(self.max_ms, 2),
        })
    }
}

impl Disk {
    fn to_json(&self) -> Value {
        json!({
            "sequential_write_bytes": self.sequential_bytes,
            "sequential_write_seconds": round(self.sequential_seconds, 3),
            "sequential_write_mb_per_sec": round(self.sequential_mb_per_sec, 1),
            "direct_write_mb_per_sec": round(self.direct_mb_per_sec, 1),
            "sync_4k_writes_per_sec": round(self.sync_writes_per_sec, 0),
            "small_fsync_ms_beside_bulk": self.fsync_beside_bulk.to_json(),
        })
    }
}

/// Writes `bytes` to a file in `dir` in 1 MiB writes and fdatasyncs it (timed
/// together), the same with `O_DIRECT` (the device without the page cache's copy),
/// then counts synchronous 4 KiB writes for `sync_s` seconds, then times small
/// synchronous writes beside a bulk writer for as long.
fn measure_disk(dir: &Path, bytes: u64, sync_s: u64) -> anyhow::Result<Disk> {
    let direct_mb_per_sec = measure_direct_write(dir, bytes)?;
    let path = dir.join("disk-test");
    let chunk = vec![0x5a_u8; 1 << 20];
    let started = Instant::now();
    {
        let mut file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let mut written = 0u64;
        while written < bytes {
            let n = chunk.len().min((bytes - written) as usize);
            file.write_all(&chunk[..n])?;
            written += n as u64;
        }
        file.sync_data()?;
    }
    let sequential_seconds = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;

    let page = [0xa5_u8; 4096];
    let mut file = File::create(&path)?;
    let mut writes = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(sync_s) {
        file.write_all(&page)?;
        file.sync_data()?;
        writes += 1;
    }
    let sync_seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    let fsync_beside_bulk = measure_fsync_beside_bulk(dir, Duration::from_secs(sync_s))?;
    Ok(Disk {
        sequential_bytes: bytes,
        sequential_seconds,
        sequential_mb_per_sec: bytes as f64 / 1e6 / sequential_seconds.max(1e-9),
        direct_mb_per_sec,
        sync_writes_per_sec: writes as f64 / sync_seconds.max(1e-9),
        fsync_beside_bulk,
    })
}

/// For `duration`: a small `write` + `fdatasync` of one file every millisecond,
/// each timed, while a thread writes another file in bulk as a busy log does. A
/// broker's fsync of a small batch beside a bulk producer cannot be faster than this.
fn measure_fsync_beside_bulk(dir: &Path, duration: Duration) -> anyhow::Result<Latencies> {
    let bulk_path = dir.join("disk-test-bulk");
    let small_path = dir.join("disk-test-small");
    let stop = Arc::new(AtomicBool::new(false));
    let bulk_file = File::create(&bulk_path)?;
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || -> std::io::Result<()> {
            let chunk = vec![0x77_u8; 1 << 20];
            let (mut written, mut unsynced) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                bulk_file.write_all_at(&chunk, written)?;
                written += chunk.len() as u64;
                unsynced += chunk.len() as u64;
                if unsynced >= BULK_SYNC_BYTES {
                    bulk_file.sync_data()?;
                    unsynced = 0;
                    let behind = written.saturating_sub(BULK_CACHE_WINDOW);
                    if let Some(len) = std::num::NonZeroU64::new(behind) {
                        rustix::fs::fadvise(
                            &bulk_file,
                            0,
                            Some(len),
                            rustix::fs::Advice::DontNeed,
                        )?;
                    }
                }
            }
            Ok(())
        })
    };
    // Let the bulk writer get going first.
    std::thread::sleep(Duration::from_millis(500));
    let measured = (|| -> anyhow::Result<Vec<Duration>> {
        let small = File::create(&small_path)?;
        let record = [0x11_u8; SMALL_SYNC_BYTES];
        let mut samples = Vec::new();
        let (started, mut position) = (Instant::now(), 0u64);
        while started.elapsed() < duration {
            let due = started + SMALL_SYNC_EVERY * samples.len() as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let begun = Instant::now();
            small.write_all_at(&record, position)?;
            small.sync_data()?;
            samples.push(begun.elapsed());
            position += record.len() as u64;
        }
        Ok(samples)
    })();
    stop.store(true, Ordering::Relaxed);
    let bulk = writer.join();
    let _ = std::fs::remove_file(&bulk_path);
    let _ = std::fs::remove_file(&small_path);
    match bulk {
        Ok(result) => result.context("the bulk writer")?,
        Err(_) => bail!("the bulk writer panicked"),
    }
    Ok(Latencies::of(measured?))
}

/// MB/s of `bytes` written in 1 MiB `O_DIRECT` writes from an aligned buffer, then
/// one `fdatasync`.
fn measure_direct_write(dir: &Path, bytes: u64) -> anyhow::Result<f64> {
    const CHUNK: usize = 1 << 20;
    /// Direct I/O wants buffers, offsets and lengths aligned to the logical block.
    const ALIGN: usize = 4096;
    let path = dir.join("disk-test-direct");
    let buffer = vec![0x3c_u8; CHUNK + ALIGN];
    let skip = buffer.as_ptr().align_offset(ALIGN);
    let chunk = &buffer[skip..skip + CHUNK];
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(&path)
        .with_context(|| format!("open {} with O_DIRECT", path.display()))?;
    let chunks = bytes.div_ceil(CHUNK as u64);
    let started = Instant::now();
    for i in 0..chunks {
        file.write_all_at(chunk, i * CHUNK as u64)?;
    }
    file.sync_data()?;
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok((chunks * CHUNK as u64) as f64 / 1e6 / seconds.max(1e-9))
}

/// Runs `ferryctl bench` cases against one broker.
struct Runner<'a> {
    ferryctl: &'a Path,
    url: String,
    args: &'a Args,
    /// The broker process whose memory is sampled.
    pid: Option<u32>,
    /// The broker processes whose CPU use is reported.
    brokers: Vec<u32>,
}

impl Runner<'_> {
    /// The `ferryctl bench produce` arguments of a run of `amount` of `size`-byte
    /// messages from `producers` producers.
    fn produce_args(
        &self,
        size: usize,
        amount: Amount,
        durability: &str,
        producers: u32,
    ) -> Vec<String> {
        let mut args: Vec<String> = [
            "bench",
            "produce",
            "--durability",
            durability,
            "--message-size",
            &size.to_string(),
            "--partitions",
            &self.args.partitions.to_string(),
            "--producers",
            &producers.to_string(),
        ]
        .map(String::from)
        .into();
        match amount {
            Amount::Messages(messages) => {
                args.extend(["--messages".to_owned(), messages.to_string()]);
            }
            Amount::Seconds(seconds) => {
                args.extend(["--duration-s".to_owned(), seconds.to_string()]);
            }
        }
        args
    }

    /// One produce case: its report, with the broker's memory while it ran.
    fn produce(
        &self,
        what: &str,
        size: usize,
        messages: u64,
        durability: &str,
        more: &[String],
    ) -> anyhow::Result<Value> {
        eprintln!("bench_disk: {what}: {messages} messages");
        let mut args = self.produce_args(
            size,
            Amount::Messages(messages),
            durability,
            self.args.producers,
        );
        args.extend_from_slice(more);
        let load = load_average();
        let memory = self.pid.map(MemorySampler::start);
        let before = CpuSnapshot::take(&self.brokers);
        let (mut report, load_generator_cpu_s) = bench_with_cpu(self.ferryctl, &self.url, &args)?;
        let cpu = CpuSnapshot::take(&self.brokers).since(&before);
        let produced_mb = report["bytes"].as_f64().unwrap_or(0.0) / 1e6;
        if let Some(object) = report.as_object_mut() {
            let total_cpu_s = load_generator_cpu_s.map(|client| cpu.cpu_s + client);
            object.insert(
                "cpu".to_owned(),
                json!({
                    "brokers_cpu_s": round(cpu.cpu_s, 2),
                    "load_generator_cpu_s": load_generator_cpu_s.map(|s| round(s, 2)),
                    "cpu_ms_per_mb": total_cpu_s
                        .filter(|_| produced_mb > 0.0)
                        .map(|s| round(s * 1e3 / produced_mb, 3)),
                    "brokers_cpu_ms_per_mb": (produced_mb > 0.0)
                        .then(|| round(cpu.cpu_s * 1e3 / produced_mb, 3)),
                    "machine_busy_fraction": cpu.machine_busy.map(|f| round(f, 3)),
                    "brokers_waiting_for_cpu_s": round(cpu.waiting_for_cpu_s, 2),
                }),
            );
            object.insert("load_average_1m_before".to_owned(), json!(load));
            if let Some(memory) = memory {
                object.insert("broker_rss_mb".to_owned(), memory.finish());
            }
        }
        Ok(report)
    }

    /// Latency of a paced 100-byte producer while a bulk 1 KiB producer runs on
    /// another topic.
    fn latency_under_bulk(&self) -> anyhow::Result<Value> {
        eprintln!(
            "bench_disk: {} msg/s of 100 B beside a bulk 1 KiB producer",
            self.args.latency_rate
        );
        let bulk_args = self.produce_args(
            1024,
            Amount::Seconds(self.args.latency_s + 4),
            "fsync",
            self.args.producers,
        );
        let bulk = Command::new(self.ferryctl)
            .args(["--server", &self.url, "--output", "json"])
            .args(&bulk_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the bulk producer")?;
        std::thread::sleep(Duration::from_secs(2));
        let mut probe_args =
            self.produce_args(100, Amount::Seconds(self.args.latency_s), "fsync", 1);
        // No linger: the goal is the broker's send->ack, not the client's batching
        // (a 5 ms linger alone puts the probe's p50 at 4 ms).
        probe_args.extend([
            "--rate".to_owned(),
            self.args.latency_rate.to_string(),
            "--linger-ms".to_owned(),
            "0".to_owned(),
        ]);
        let probe = bench(self.ferryctl, &self.url, &probe_args);
        let bulk = bulk.wait_with_output().context("the bulk producer")?;
        let probe = probe?;
        let bulk: Value = serde_json::from_slice(&bulk.stdout).unwrap_or(Value::Null);
        Ok(json!({
            "probe": {
                "rate": self.args.latency_rate,
                "msgs_per_sec": probe["msgs_per_sec"],
                "latency_ms": probe["latency_ms"],
            },
            "bulk": {
                "mb_per_sec": bulk["mb_per_sec"],
                "latency_ms": bulk["latency_ms"],
            },
            "goal_p99_ms_below": 2.0,
        }))
    }
}

/// The broker's resident memory sampled in the background.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    first: Option<u64>,
    pid: u32,
    thread: std::thread::JoinHandle<()>,
}

impl MemorySampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let first = resident_bytes(pid);
        let thread = {
            let (stop, max) = (Arc::clone(&stop), Arc::clone(&max));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(bytes) = resident_bytes(pid) {
                        max.fetch_max(bytes, Ordering::Relaxed);
                    }
                    std::thread::sleep(MEMORY_SAMPLE);
                }
            })
        };
        Self {
            stop,
            max,
            first,
            pid,
            thread,
        }
    }

    /// Start, highest and last resident memory, in MB.
    fn finish(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let mb = |bytes: u64| round(bytes as f64 / 1e6, 1);
        let end = resident_bytes(self.pid);
        let max = [self.first, end]
            .into_iter()
            .flatten()
            .fold(self.max.load(Ordering::Relaxed), u64::max);
        json!({
            "start": self.first.map(mb),
            "max": mb(max),
            "end": end.map(mb),
        })
    }
}

/// The 1 KiB fsync case on a three-host cluster, RF=3, `sync`.
fn replicated(
    ferryctl: &Path,
    args: &Args,
    standalone_mb: f64,
    standalone_cpu_ms_per_mb: Option<f64>,
) -> anyhow::Result<Value> {
    eprintln!("bench_disk: starting etcd and {CLUSTER_HOSTS} hosts");
    let mut cluster = Cluster::start_with(ClusterOptions {
        name: "bench-disk".to_owned(),
        hosts: CLUSTER_HOSTS,
        extra_args: args.broker_arg.clone(),
        ..ClusterOptions::default()
    });
    let brokers = cluster
        .hosts_mut()
        .iter_mut()
        .filter_map(|host| host.pid())
        .collect();
    let runner = Runner {
        ferryctl,
        url: cluster.hosts()[0].url(),
        args,
        pid: None,
        brokers,
    };
    let report = runner.produce(
        "1 KiB, fsync, RF=3 sync",
        1024,
        args.cluster_bytes() / 1024,
        "fsync",
        &[
            "--replication-factor".to_owned(),
            CLUSTER_HOSTS.to_string(),
            "--replication".to_owned(),
            "sync".to_owned(),
        ],
    )?;
    drop(cluster);
    let ratio = mb_per_sec(&report) / standalone_mb.max(1e-9);
    // Both runs have the same two cores: if CPU is what limits them, throughput
    // goes as the inverse of the CPU each MB costs.
    let cpu_ratio = match (
        standalone_cpu_ms_per_mb,
        report["cpu"]["cpu_ms_per_mb"].as_f64(),
    ) {
        (Some(standalone), Some(replicated)) if replicated > 0.0 => {
            Some(round(standalone / replicated, 3))
        }
        _ => None,
    };
    Ok(json!({
        "report": report,
        "ratio_to_standalone": round(ratio, 3),
        "goal_ratio_at_least": 0.5,
        "standalone_cpu_ms_per_mb": standalone_cpu_ms_per_mb,
        "standalone_to_replicated_cpu_per_mb": cpu_ratio,
    }))
}

/// A report's MB/s.
fn mb_per_sec(report: &Value) -> f64 {
    report["mb_per_sec"].as_f64().unwrap_or(0.0)
}

/// A report's per-quarter message rates.
fn quarter_rates(report: &Value) -> Vec<f64> {
    report["quarters"]
        .as_array()
        .map(|quarters| {
            quarters
                .iter()
                .filter_map(|quarter| quarter["msgs_per_sec"].as_f64())
                .collect()
        })
        .unwrap_or_default()
}

/// `report` with its ratio to the disk's sequential write and the goal for it.
fn with_ratio(report: Value, disk: DiskMeans, goal: f64) -> Value {
    let produced = mb_per_sec(&report);
    json!({
        "report": report,
        "ratio_to_disk": round(produced / disk.buffered_mb_per_sec.max(1e-9), 3),
        "ratio_to_direct_disk": round(produced / disk.direct_mb_per_sec.max(1e-9), 3),
        "goal_ratio_at_least": goal,
    })
}

/// The disk's speed as the ratios use it: the mean of the measurements before and
/// after the standalone runs.
#[derive(Debug, Clone, Copy)]
struct DiskMeans {
    /// Buffered writes + one fdatasync (the issue's definition of the disk's limit).
    buffered_mb_per_sec: f64,
    /// `O_DIRECT` writes + one fdatasync (the device without the page cache).
    direct_mb_per_sec: f64,
}

/// How much a run produces.
#[derive(Debug, Clone, Copy)]
enum Amount {
    Messages(u64),
    Seconds(u64),
}
