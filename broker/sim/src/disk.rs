//! The simulated disk under the real storage engine: it remembers how much of each
//! segment file an fsync covered, so a power loss can drop (or tear) exactly what was
//! never synced, and it damages a stopped host's files on purpose.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ferry_storage::{FaultInjector, FaultPoint};

/// Records the length of each segment file at its last fsync. Storage consults it
/// before each fsync; the simulator is single-threaded, so the length seen then is
/// what the fsync makes durable.
#[derive(Debug, Default)]
pub struct SyncLedger {
    synced: Mutex<BTreeMap<PathBuf, u64>>,
}

impl FaultInjector for SyncLedger {
    fn check(&self, point: FaultPoint, path: &Path) -> std::io::Result<()> {
        if point == FaultPoint::SegmentSync {
            let len = std::fs::metadata(path).map_or(0, |m| m.len());
            self.lock().insert(path.to_path_buf(), len);
        }
        Ok(())
    }
}

impl SyncLedger {
    /// A ledger to hand to storage as its fault hook.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, u64>> {
        // Plain data updated in one step: a panic elsewhere cannot leave it torn.
        self.synced.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Power loss: every segment file under `dir` loses a random part of what was
    /// written after its last fsync (all of it, some of it — a torn write — or none).
    /// Returns the bytes dropped.
    pub fn lose_unsynced(&self, dir: &Path, rng: &mut fastrand::Rng) -> std::io::Result<u64> {
        let synced = self.lock().clone();
        let mut dropped = 0;
        for path in segment_files(dir)? {
            let len = std::fs::metadata(&path)?.len();
            // A file never synced (a new segment) may lose everything.
            let durable = synced.get(&path).copied().unwrap_or(0).min(len);
            if len == durable {
                continue;
            }
            let keep = match rng.u8(0..3) {
                0 => durable,
                1 => len,
                _ => rng.u64(durable..=len),
            };
            if keep < len {
                OpenOptions::new().write(true).open(&path)?.set_len(keep)?;
                dropped += len - keep;
            }
        }
        // What survived is what the disk holds now: the next power loss starts there.
        let mut ledger = self.lock();
        ledger.clear();
        for path in segment_files(dir)? {
            let len = std::fs::metadata(&path)?.len();
            ledger.insert(path, len);
        }
        Ok(dropped)
    }
}

/// Flips one random bit in one of the segment files under `dir` (a sealed one when
/// there is one), and sometimes removes the recovery-point file so recovery scans the
/// damage. Returns what it did, or `None` when there is nothing to damage.
pub fn flip_bit(dir: &Path, rng: &mut fastrand::Rng) -> std::io::Result<Option<String>> {
    let files = segment_files(dir)?;
    let nonempty: Vec<&PathBuf> = files
        .iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    // Prefer sealed segments (all but the last): the damage the issue describes.
    let candidates = if nonempty.len() > 1 {
        &nonempty[..nonempty.len() - 1]
    } else {
        &nonempty[..]
    };
    if candidates.is_empty() {
        return Ok(None);
    }
    let path = candidates[rng.usize(0..candidates.len())];
    let mut bytes = std::fs::read(path)?;
    let at = rng.usize(0..bytes.len());
    bytes[at] ^= 1 << rng.u8(0..8);
    std::fs::write(path, &bytes)?;
    let scan = rng.bool();
    if scan {
        let point = dir.join("recovery-point");
        if point.exists() {
            std::fs::remove_file(point)?;
        }
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    Ok(Some(format!(
        "flipped a bit at byte {at} of {}{}",
        name.unwrap_or_default(),
        if scan { ", recovery point removed" } else { "" }
    )))
}

/// The segment files (`*.log`) under `dir`, in name (offset) order.
fn segment_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    Ok(files)
}
