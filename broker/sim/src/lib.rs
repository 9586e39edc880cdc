//! A deterministic simulator of Ferry's replication (`docs/simulation.md`).
//!
//! One run is one seed: three hosts of one `sync` partition (RF 3, two in sync to
//! write), each the real storage engine (`ferry-storage`) under a thin driver of the
//! replication state machines (`ferry-replication`), a metadata store with the
//! controller, a network and a producing client, all moved one event at a time in
//! simulated time. The seed decides everything random: delays, the client's timing and
//! the faults — crashes, power loss (unsynced writes dropped or torn), bit flips on one
//! replica's disk, cut links, paused hosts, metadata-store outages and the store losing
//! everything (followed by `metadata rebuild`). When the faults stop and the cluster has
//! settled, the leader's log is read back and the history checker judges the run (no
//! acknowledged write lost, nothing duplicated, reordered or invented), along with the
//! invariants it cannot see: at most one leader per epoch, in-sync replicas identical
//! below the high watermark, a leader once everything healed.
//!
//! Nothing in a run reads the wall clock or iterates a hash map, and it is
//! single-threaded, so a seed replays exactly: `ferry-sim --seed N --verbose`.

mod disk;
mod host;
mod meta;
mod net;
mod world;

use ferry_e2e::history::{CheckOptions, HistoryLog, Verdict, check_log};
use serde::Serialize;

/// Which faults a run may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// Host processes killed and restarted.
    pub crashes: bool,
    /// Some kills are power losses: unsynced writes dropped or torn.
    pub power_loss: bool,
    /// Bits flipped in one replica's segment files while it is stopped.
    pub bit_flips: bool,
    /// Links between hosts, and to the store, cut for a while.
    pub network: bool,
    /// Hosts paused (as by SIGSTOP) for a while.
    pub pauses: bool,
    /// The metadata store unavailable for a while.
    pub meta_outage: bool,
    /// The metadata store losing everything, then rebuilt from the hosts.
    pub meta_loss: bool,
}

/// The shape of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Options {
    /// Hosts (all replicas of the one partition).
    pub hosts: usize,
    /// Simulated time before the first fault.
    pub warmup_ms: u64,
    /// Simulated time when the faults stop and everything heals.
    pub chaos_ms: u64,
    /// Shortest pause between faults (the longest is four times it).
    pub fault_every_ms: u64,
    /// Most bit flips in one run.
    pub max_flips: u32,
    /// The faults to inject.
    pub faults: Faults,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            hosts: 3,
            warmup_ms: 300,
            chaos_ms: 3_000,
            fault_every_ms: 60,
            max_flips: 2,
            faults: Faults::all(),
        }
    }
}

/// What one seed's run came to.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// No anomaly in the history and no invariant broken.
    pub valid: bool,
    /// What the hosts did, in order (with `--verbose`).
    pub trace: Vec<String>,
    /// The history checker's verdict.
    pub verdict: Verdict,
    /// Invariants broken outside the history.
    pub violations: Vec<String>,
    /// The faults applied, in order.
    pub faults: Vec<String>,
    /// Events processed.
    pub events: u64,
    /// The cluster at the end: the partition state and each host's log.
    pub end_state: Vec<String>,
    /// The history, for a closer look at a failing seed.
    #[serde(skip)]
    pub history: HistoryLog,
}

/// Runs one seed with its hosts' data in a fresh directory under `scratch` (removed
/// afterwards).
pub fn run_seed(
    seed: u64,
    options: Options,
    scratch: &std::path::Path,
) -> std::io::Result<Outcome> {
    let root = tempfile::Builder::new()
        .prefix(&format!("seed-{seed}-"))
        .tempdir_in(scratch)?;
    let findings = world::World::new(seed, options, root.path()).run();
    let check = CheckOptions {
        // The simulated client never resends, so no value may appear twice.
        idempotent_producer: true,
        max_anomalies: 20,
    };
    let verdict = check_log(&findings.history, &check);
    Ok(Outcome {
        seed,
        valid: verdict.is_valid() && findings.violations.is_empty(),
        verdict,
        violations: findings.violations,
        faults: findings.faults,
        events: findings.events,
        end_state: findings.end_state,
        trace: findings.trace,
        history: findings.history,
    })
}

/// Where runs keep their hosts' data: memory-backed `/dev/shm` when there is one.
pub fn default_scratch() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
