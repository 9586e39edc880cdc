//! The leader-epoch history of a log: for every leader epoch that appended, the offset
//! of its first batch. Replication compares histories to find where a returning
//! replica's log diverged from the leader's (`docs/replication.md`).
//!
//! Kept in the file `leader-epochs`, rewritten atomically whenever an epoch begins or
//! a truncation removes one; an epoch begins rarely (a leader change), so appends pay
//! nothing for it.

use std::path::Path;

use crate::StorageError;
use crate::disk::{read_optional, write_atomically};

/// File holding the epoch history.
pub(crate) const EPOCH_FILE: &str = "leader-epochs";
/// First bytes of the file: name and format version.
const EPOCH_MAGIC: &[u8; 8] = b"FRYEPH01";

/// One epoch's start: the first offset a leader of that epoch appended at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    /// The leader epoch.
    pub epoch: u64,
    /// The offset of its first batch.
    pub start_offset: u64,
}

/// Epoch starts, epochs and offsets both increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochHistory {
    entries: Vec<EpochStart>,
}

impl EpochHistory {
    /// Reads the history of a log holding `[start, end)`. Entries past the end (their
    /// batches were cut by recovery) are dropped. A log written before histories were
    /// kept has no file: its batches all carry epoch 0 (standalone hosts stamp 0).
    pub(crate) fn load(dir: &Path, start: u64, end: u64) -> Result<Self, StorageError> {
        let path = dir.join(EPOCH_FILE);
        let mut history = match read_optional(&path)? {
            Some(bytes) => decode(&bytes).ok_or_else(|| StorageError::Corrupt {
                path: path.clone(),
                position: 0,
                reason: "unreadable leader-epoch history".into(),
            })?,
            None if end > start => EpochHistory {
                entries: vec![EpochStart {
                    epoch: 0,
                    start_offset: start,
                }],
            },
            None => EpochHistory::default(),
        };
        if history.truncate(end) {
            history.persist(dir)?;
        }
        Ok(history)
    }

    /// The newest epoch that appended, if any did.
    pub(crate) fn latest(&self) -> Option<u64> {
        self.entries.last().map(|e| e.epoch)
    }

    /// The epoch that appended the batch at `offset`: the newest epoch starting at or
    /// below it.
    pub(crate) fn epoch_at(&self, offset: u64) -> Option<u64> {
        let after = self.entries.partition_point(|e| e.start_offset <= offset);
        after.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// All entries, oldest first.
    pub(crate) fn entries(&self) -> &[EpochStart] {
        &self.entries
    }

    /// Records that `epoch` appends from `offset` (the log end). Returns whether the
    /// history changed; an epoch older than the newest is refused.
    pub(crate) fn begin(&mut self, epoch: u64, offset: u64) -> Result<bool, StorageError> {
        match self.latest() {
            Some(latest) if latest == epoch => return Ok(false),
            Some(latest) if latest > epoch => {
                return Err(StorageError::StaleLeaderEpoch { epoch, latest });
            }
            _ => {}
        }
        // Epochs that began at or after the log end appended nothing.
        self.entries.retain(|e| e.start_offset < offset);
        self.entries.push(EpochStart {
            epoch,
            start_offset: offset,
        });
        Ok(true)
    }

    /// The newest epoch at or below `epoch` and the offset where it ended (the next
    /// epoch's start, or `log_end` for the newest). An epoch older than every entry
    /// answers `(epoch, first start)`: nothing of it is known here.
    pub(crate) fn end_offset_for(&self, epoch: u64, log_end: u64) -> (u64, u64) {
        let found = self.entries.partition_point(|e| e.epoch <= epoch);
        match found.checked_sub(1) {
            None => (
                epoch,
                self.entries.first().map_or(log_end, |e| e.start_offset),
            ),
            Some(index) => {
                let end = self
                    .entries
                    .get(index + 1)
                    .map_or(log_end, |next| next.start_offset);
                (self.entries[index].epoch, end)
            }
        }
    }

    /// Drops epochs that start at or after `end` (their batches were removed).
    /// Returns whether anything changed.
    pub(crate) fn truncate(&mut self, end: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end);
        self.entries.len() != before
    }

    /// Forgets everything (the log was emptied).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Writes the history atomically.
    pub(crate) fn persist(&self, dir: &Path) -> Result<(), StorageError> {
        write_atomically(dir, EPOCH_FILE, &encode(self))
    }
}

/// Magic, u32 count, (u64 epoch, u64 start) per entry, u32 CRC32C of all before it.
fn encode(history: &EpochHistory) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + history.entries.len() * 16);
    out.extend_from_slice(EPOCH_MAGIC);
    let count = u32::try_from(history.entries.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for entry in &history.entries {
        out.extend_from_slice(&entry.epoch.to_le_bytes());
        out.extend_from_slice(&entry.start_offset.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<EpochHistory> {
    let body_len = bytes.len().checked_sub(4)?;
    let (body, crc) = bytes.split_at(body_len);
    if body.len() < 12 || &body[..8] != EPOCH_MAGIC {
        return None;
    }
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let count = u32::from_le_bytes(body[8..12].try_into().ok()?) as usize;
    let entries_bytes = &body[12..];
    if entries_bytes.len() != count.checked_mul(16)? {
        return None;
    }
    let entries = entries_bytes
        .chunks_exact(16)
        .map(|chunk| {
            let (epoch, start) = chunk.split_at(8);
            Some(EpochStart {
                epoch: u64::from_le_bytes(epoch.try_into().ok()?),
                start_offset: u64::from_le_bytes(start.try_into().ok()?),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let ordered = entries
        .windows(2)
        .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset <= w[1].start_offset);
    ordered.then_some(EpochHistory { entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(u64, u64)]) -> EpochHistory {
        EpochHistory {
            entries: entries
                .iter()
                .map(|&(epoch, start_offset)| EpochStart {
                    epoch,
                    start_offset,
                })
                .collect(),
        }
    }

    #[test]
    fn end_offsets_come_from_the_next_epochs_start() {
        let h = history(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(h.end_offset_for(1, 40), (1, 10));
        assert_eq!(
            h.end_offset_for(2, 40),
            (1, 10),
            "2 never appended: 1 is newest below"
        );
        assert_eq!(h.end_offset_for(3, 40), (3, 25));
        assert_eq!(h.end_offset_for(4, 40), (4, 40));
        assert_eq!(h.end_offset_for(9, 40), (4, 40));
        assert_eq!(
            h.end_offset_for(0, 40),
            (0, 0),
            "older than all: nothing known"
        );
        assert_eq!(EpochHistory::default().end_offset_for(5, 7), (5, 7));
    }

    #[test]
    fn begin_refuses_older_epochs_and_drops_epochs_that_appended_nothing() {
        let mut h = history(&[(1, 0), (2, 5)]);
        assert!(!h.begin(2, 9).expect("same epoch"));
        assert!(matches!(
            h.begin(1, 9),
            Err(StorageError::StaleLeaderEpoch {
                epoch: 1,
                latest: 2
            })
        ));
        assert!(
            h.begin(4, 5).expect("newer"),
            "epoch 2 began at 5 and wrote nothing"
        );
        assert_eq!(h, history(&[(1, 0), (4, 5)]));
    }

    #[test]
    fn truncation_drops_epochs_starting_at_or_after_the_cut() {
        let mut h = history(&[(1, 0), (2, 5), (3, 9)]);
        assert!(h.truncate(6));
        assert_eq!(h, history(&[(1, 0), (2, 5)]));
        assert!(!h.truncate(6));
        assert!(h.truncate(5));
        assert_eq!(h.latest(), Some(1));
    }

    #[test]
    fn the_file_round_trips_and_corruption_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = history(&[(1, 0), (7, 100)]);
        h.persist(dir.path()).expect("persist");
        assert_eq!(EpochHistory::load(dir.path(), 0, 200).expect("load"), h);
        // Recovery cut the log below epoch 7's start: the entry goes, on disk too.
        let cut = EpochHistory::load(dir.path(), 0, 100).expect("load");
        assert_eq!(cut, history(&[(1, 0)]));
        assert_eq!(EpochHistory::load(dir.path(), 0, 200).expect("load"), cut);

        let path = dir.path().join(EPOCH_FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[12] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        assert!(matches!(
            EpochHistory::load(dir.path(), 0, 200),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_log_from_before_histories_is_all_epoch_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = EpochHistory::load(dir.path(), 3, 10).expect("load");
        assert_eq!(h, history(&[(0, 3)]));
        let empty = EpochHistory::load(dir.path(), 0, 0).expect("load");
        assert_eq!(empty.latest(), None);
    }
}
