//! The simulator in `cargo test`: a fixed sample of seeds must run clean, and a seed
//! must replay exactly. `ferry-sim --seeds N` runs any number (docs/simulation.md).

use ferry_sim::{Options, default_scratch, run_seed};

/// Seeds every `cargo test` runs: a fixed sample, the same on every machine, in two
/// halves that run in parallel.
const SAMPLE: [std::ops::Range<u64>; 2] = [0..1_000, 1_000..2_000];

#[test]
fn the_first_half_of_the_fixed_sample_runs_clean() {
    run_clean(SAMPLE[0].clone());
}

#[test]
fn the_second_half_of_the_fixed_sample_runs_clean() {
    run_clean(SAMPLE[1].clone());
}

fn run_clean(seeds: std::ops::Range<u64>) {
    let scratch = default_scratch();
    let mut failed = Vec::new();
    for seed in seeds {
        let outcome = run_seed(seed, Options::default(), &scratch).expect("scratch directory");
        if !outcome.valid {
            failed.push(serde_json::to_string(&outcome).unwrap_or_default());
        }
    }
    assert!(
        failed.is_empty(),
        "{} seeds failed (replay one with `cargo run --release -p ferry-sim -- --seed N --verbose`):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn a_seed_replays_exactly() {
    let scratch = default_scratch();
    // A seed whose schedule has crashes, power loss, bit flips and a lost store.
    let seed = 11_885;
    let first = run_seed(seed, Options::default(), &scratch).expect("scratch directory");
    let again = run_seed(seed, Options::default(), &scratch).expect("scratch directory");
    assert_eq!(first.faults, again.faults);
    assert_eq!(first.trace, again.trace);
    assert_eq!(first.history, again.history);
    assert_eq!(first.events, again.events);
    assert!(
        first.faults.iter().any(|f| f.contains("flipped"))
            && first.faults.iter().any(|f| f.contains("lost everything")),
        "the seed exercises damage and a lost store: {:?}",
        first.faults
    );
}
