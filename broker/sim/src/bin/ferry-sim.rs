//! `ferry-sim`: runs seeds of the replication simulator and prints JSON.
//!
//! `ferry-sim --seeds 100000` runs seeds 0..100000 on every core and prints one line
//! per failing seed and a summary (seeds, failures, seeds per second);
//! `ferry-sim --seed 42 --verbose` replays one seed and prints its faults and verdict.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use ferry_sim::{Options, default_scratch, run_seed};

/// Runs the replication simulator.
#[derive(Debug, Parser)]
#[command(
    name = "ferry-sim",
    about = "Runs seeds of Ferry's replication simulator"
)]
struct Args {
    /// Replay this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// How many seeds to run.
    #[arg(long, default_value_t = 1_000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Worker threads (each runs whole seeds); default: every core.
    #[arg(long)]
    jobs: Option<usize>,
    /// Where the hosts' data goes (default /dev/shm, else the temp directory).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Print every outcome, not only failures.
    #[arg(long)]
    verbose: bool,
    /// Print only the summary.
    #[arg(long, conflicts_with = "verbose")]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let scratch = args.scratch.clone().unwrap_or_else(default_scratch);
    let options = Options::default();
    let (from, count) = match args.seed {
        Some(seed) => (seed, 1),
        None => (args.from, args.seeds),
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = Arc::new(AtomicU64::new(from));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (next, failures, events, scratch) = (
                next.clone(),
                failures.clone(),
                events.clone(),
                scratch.clone(),
            );
            let (verbose, quiet) = (args.verbose, args.quiet);
            std::thread::spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= from + count {
                        return;
                    }
                    let outcome = match run_seed(seed, options, &scratch) {
                        Ok(outcome) => outcome,
                        Err(err) => {
                            eprintln!("seed {seed}: cannot make its scratch directory: {err}");
                            failures
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(seed);
                            continue;
                        }
                    };
                    events.fetch_add(outcome.events, Ordering::Relaxed);
                    if (!outcome.valid && !quiet) || verbose {
                        let line = if verbose {
                            serde_json::to_string_pretty(&outcome)
                        } else {
                            serde_json::to_string(&outcome)
                        };
                        println!("{}", line.unwrap_or_default());
                    }
                    if !outcome.valid {
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(seed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut failed = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    failed.sort_unstable();
    let summary = serde_json::json!({
        "seeds": count,
        "from": from,
        "failed": failed.len(),
        "failing_seeds": failed.iter().take(50).collect::<Vec<_>>(),
        "events": events.load(Ordering::Relaxed),
        "jobs": jobs,
        "seconds": (elapsed * 10.0).round() / 10.0,
        "seeds_per_second": ((count as f64 / elapsed.max(1e-9)) * 10.0).round() / 10.0,
    });
    println!("{summary}");
    if failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
