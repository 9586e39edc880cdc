//! Confining damage: the damaged bytes of a segment are copied aside, then replaced by a
//! lost-range batch that stands for exactly the offsets they held, so every intact batch
//! before and after them stays where it is and keeps its offsets.
//!
//! Used by recovery (a bad batch found while scanning a sealed segment, or below the
//! recovery point) and, through the same rescan, by reads (a CRC mismatch in a segment
//! recovery trusted without scanning). A torn tail above the recovery point with nothing
//! intact after it is not damage: recovery cuts it.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ferry_records::{BatchHeader, HEADER_LEN, LostRange, lost_range_batch, validate_batch};
use tracing::error;

use crate::StorageError;
use crate::disk::{TMP_SUFFIX, read_optional, remove_if_exists, sync_dir, write_atomically};
use crate::error::IoContext;

/// Extension of the files holding damaged bytes copied aside (kept for inspection;
/// nothing reads them).
pub(crate) const DAMAGED_EXT: &str = "damaged";
/// Bytes read at a time while looking for the first intact batch after damage.
const RESUME_WINDOW_BYTES: usize = 1 << 20;

/// Offsets whose records were lost to damage on disk, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRecords {
    /// The segment file that held them.
    pub segment: PathBuf,
    /// Byte position of the damage in it.
    pub position: u64,
    /// First lost offset.
    pub from_offset: u64,
    /// Offset after the last lost one.
    pub to_offset: u64,
    /// What was wrong with the bytes.
    pub reason: String,
    /// Where the damaged bytes were copied, if there were any.
    pub copied_to: Option<PathBuf>,
}

/// One damaged place in a segment and what is known around it.
#[derive(Debug, Clone)]
pub(crate) struct Damage<'a> {
    /// The segment file and its path.
    pub(crate) file: &'a File,
    /// Its path.
    pub(crate) path: &'a Path,
    /// The segment's base offset (batches must fit its u32 relative range).
    pub(crate) segment_base: u64,
    /// Where the first bad batch starts.
    pub(crate) position: u64,
    /// The offset it should have started at.
    pub(crate) offset: u64,
    /// Bytes of the segment that count (the file length in recovery, the committed
    /// size in a read).
    pub(crate) len: u64,
    /// What was wrong.
    pub(crate) reason: String,
    /// Leader epoch of the batch before the damage.
    pub(crate) epoch: u64,
    /// Largest timestamp before the damage (0 if none).
    pub(crate) timestamp_ms: i64,
}

/// The first intact batch after damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    /// Its byte position.
    pub(crate) position: u64,
    /// Its base offset.
    pub(crate) offset: u64,
}

/// Finds the first position after `damage.position` (at least a header's length on,
/// since the damaged batch was at least that long) holding an intact batch that could
/// follow: a base offset above the damaged one, below `bound_offset`, within the
/// segment's relative offset range, a valid CRC and valid records.
pub(crate) fn find_resume(
    damage: &Damage<'_>,
    bound_offset: u64,
) -> Result<Option<Resume>, StorageError> {
    let relative_max = damage.segment_base.saturating_add(u64::from(u32::MAX));
    let bound = bound_offset.min(relative_max);
    let mut window = vec![0u8; RESUME_WINDOW_BYTES + HEADER_LEN];
    let mut start = damage.position + HEADER_LEN as u64;
    while start + HEADER_LEN as u64 <= damage.len {
        let want = usize::try_from(damage.len - start)
            .unwrap_or(usize::MAX)
            .min(window.len());
        let buf = &mut window[..want];
        damage
            .file
            .read_exact_at(buf, start)
            .context(|| format!("reading {} at {start}", damage.path.display()))?;
        let candidates = want.saturating_sub(HEADER_LEN) + 1;
        for at in 0..candidates.min(RESUME_WINDOW_BYTES) {
            let Ok(header) = BatchHeader::parse(&buf[at..]) else {
                continue;
            };
            let position = start + at as u64;
            let fits = header.base_offset > damage.offset
                && header.next_offset() <= bound
                && position + header.total_len() as u64 <= damage.len;
            if fits && intact_at(damage, position, &header)? {
                return Ok(Some(Resume {
                    position,
                    offset: header.base_offset,
                }));
            }
        }
        start += RESUME_WINDOW_BYTES as u64;
    }
    Ok(None)
}

/// Whether the whole batch at `position` validates.
fn intact_at(
    damage: &Damage<'_>,
    position: u64,
    header: &BatchHeader,
) -> Result<bool, StorageError> {
    let mut bytes = vec![0u8; header.total_len()];
    damage
        .file
        .read_exact_at(&mut bytes, position)
        .context(|| format!("reading {} at {position}", damage.path.display()))?;
    Ok(validate_batch(&bytes, usize::MAX).is_ok())
}

/// Copies the damaged bytes aside, then puts a lost-range batch in their place: exactly
/// over them when an intact batch resumes after them, else at a cut of the file where
/// they start, standing for the offsets up to `end_offset` (the next segment's base, the
/// recovery point, or the segment's known end). fsyncs the file. Returns what was lost;
/// the caller rescans the segment.
pub(crate) fn confine(
    damage: &Damage<'_>,
    resume: Option<Resume>,
    end_offset: u64,
) -> Result<LostRecords, StorageError> {
    let (region_end, end_offset) = match resume {
        Some(resume) => (resume.position, resume.offset),
        None => (damage.len, end_offset),
    };
    let copied_to = copy_aside(damage, region_end)?;
    let lost = |count: u32| LostRange {
        base_offset: damage.offset,
        count,
        leader_epoch: damage.epoch,
        timestamp_ms: damage.timestamp_ms,
    };
    let total = end_offset.saturating_sub(damage.offset);
    if resume.is_none() {
        // One 64-byte lost-range batch per u32 of offsets (in practice one).
        let mut bytes = Vec::new();
        let mut from = damage.offset;
        while from < end_offset {
            let count = u32::try_from(end_offset - from).unwrap_or(u32::MAX);
            let range = LostRange {
                base_offset: from,
                ..lost(count)
            };
            bytes.extend(lost_range_batch(range, HEADER_LEN).unwrap_or_default());
            from += u64::from(count);
        }
        damage
            .file
            .set_len(damage.position)
            .and_then(|()| damage.file.write_all_at(&bytes, damage.position))
            .context(|| format!("replacing the damaged tail of {}", damage.path.display()))?;
    } else if total > 0 {
        let count = u32::try_from(total).map_err(|_| StorageError::Corrupt {
            path: damage.path.to_path_buf(),
            position: damage.position,
            reason: format!("{total} offsets lost inside one segment"),
        })?;
        let len = usize::try_from(region_end - damage.position).unwrap_or(usize::MAX);
        let bytes = lost_range_batch(lost(count), len).ok_or_else(|| StorageError::Corrupt {
            path: damage.path.to_path_buf(),
            position: damage.position,
            reason: format!("damaged region of {len} bytes is shorter than a batch header"),
        })?;
        damage
            .file
            .write_all_at(&bytes, damage.position)
            .context(|| format!("replacing damaged bytes of {}", damage.path.display()))?;
    }
    damage
        .file
        .sync_all()
        .context(|| format!("fsync of {}", damage.path.display()))?;
    let report = LostRecords {
        segment: damage.path.to_path_buf(),
        position: damage.position,
        from_offset: damage.offset,
        to_offset: end_offset.max(damage.offset),
        reason: damage.reason.clone(),
        copied_to,
    };
    error!(
        segment = %report.segment.display(),
        position = report.position,
        from_offset = report.from_offset,
        to_offset = report.to_offset,
        reason = %report.reason,
        copied_to = ?report.copied_to,
        "records lost to damage on disk; every intact batch is kept and the lost offsets are marked"
    );
    Ok(report)
}

/// Copies bytes `[damage.position, region_end)` to `{segment}.{offset}.damaged` beside
/// the segment (written atomically, directory fsynced). `None` if there are none.
fn copy_aside(damage: &Damage<'_>, region_end: u64) -> Result<Option<PathBuf>, StorageError> {
    if region_end <= damage.position {
        return Ok(None);
    }
    let dir = damage.path.parent().unwrap_or_else(|| Path::new("."));
    let stem = damage
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = format!("{stem}.{:020}.{DAMAGED_EXT}", damage.offset);
    let target = dir.join(&name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let context = || format!("copying damaged bytes of {} aside", damage.path.display());
    let mut out = File::create(&tmp).context(context)?;
    let mut chunk = vec![0u8; RESUME_WINDOW_BYTES];
    let mut at = damage.position;
    while at < region_end {
        let len = usize::try_from(region_end - at)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        // Positional reads: the segment's file offset may be shared with a scan.
        damage
            .file
            .read_exact_at(&mut chunk[..len], at)
            .and_then(|()| out.write_all(&chunk[..len]))
            .context(context)?;
        at += len as u64;
    }
    out.sync_all().context(context)?;
    std::fs::rename(&tmp, &target).context(context)?;
    sync_dir(dir)?;
    Ok(Some(target))
}

/// File listing the log's lost ranges that are still in it (not yet truncated away or
/// deleted by retention), so a restart knows the log is damaged after recovery stopped
/// finding anything: `b"FRYLST01"`, u32 count, per range u64 from and u64 to, CRC32C
/// of everything before it.
pub(crate) const LOST_FILE: &str = "lost-ranges";
/// First bytes of the lost-ranges file: name and format version.
const LOST_MAGIC: &[u8; 8] = b"FRYLST01";

/// Encodes the lost-ranges file.
pub(crate) fn encode_lost(ranges: &[Range<u64>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + ranges.len() * 16);
    out.extend_from_slice(LOST_MAGIC);
    out.extend_from_slice(
        &u32::try_from(ranges.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for range in ranges.iter().take(u32::MAX as usize) {
        out.extend_from_slice(&range.start.to_le_bytes());
        out.extend_from_slice(&range.end.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the lost-ranges file; `None` if it is not one.
pub(crate) fn decode_lost(bytes: &[u8]) -> Option<Vec<Range<u64>>> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c::crc32c(body).to_le_bytes() != crc || !body.starts_with(LOST_MAGIC) {
        return None;
    }
    let count = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?) as usize;
    let entries = body.get(12..)?;
    if entries.len() != count.checked_mul(16)? {
        return None;
    }
    let word = |chunk: &[u8]| chunk.try_into().ok().map(u64::from_le_bytes);
    entries
        .chunks_exact(16)
        .map(|e| Some(word(&e[..8])?..word(&e[8..])?))
        .collect()
}

/// Reads the lost ranges recorded for the log in `dir` that still fall inside
/// `[start, end)`. An unreadable file means the log's damage is unknown: the whole log
/// counts as lost until it is repaired.
pub(crate) fn load_lost(dir: &Path, start: u64, end: u64) -> Result<Vec<Range<u64>>, StorageError> {
    let Some(bytes) = read_optional(&dir.join(LOST_FILE))? else {
        return Ok(Vec::new());
    };
    let ranges = decode_lost(&bytes).unwrap_or_else(|| {
        error!(dir = %dir.display(), "unreadable lost-ranges file: the whole log counts as damaged");
        std::iter::once(start..end).collect()
    });
    Ok(clip(ranges, start, end))
}

/// Keeps the parts of `ranges` inside `[start, end)`, dropping empty ones.
pub(crate) fn clip(ranges: Vec<Range<u64>>, start: u64, end: u64) -> Vec<Range<u64>> {
    ranges
        .into_iter()
        .map(|r| r.start.max(start)..r.end.min(end))
        .filter(|r| r.start < r.end)
        .collect()
}

/// Writes the lost-ranges file atomically (removes it when there are none).
pub(crate) fn persist_lost(dir: &Path, ranges: &[Range<u64>]) -> Result<(), StorageError> {
    if ranges.is_empty() {
        if dir.join(LOST_FILE).exists() {
            remove_if_exists(&dir.join(LOST_FILE))?;
            sync_dir(dir)?;
        }
        return Ok(());
    }
    write_atomically(dir, LOST_FILE, &encode_lost(ranges))
}

/// File naming the offset where recovery cut a torn tail, kept until the host has
/// acted on it ([`crate::Log::forget_torn_tail`]).
pub(crate) const TORN_FILE: &str = "torn-tail";
/// First bytes of the torn-tail file: name and format version.
const TORN_MAGIC: &[u8; 8] = b"FRYTRN01";

/// Records that recovery cut the log's tail at `offset` (atomically and durably, so a
/// crash before the host acts on it does not forget it). An earlier, lower cut stays.
pub(crate) fn record_torn_tail(dir: &Path, offset: u64) -> Result<(), StorageError> {
    let offset = load_torn_tail(dir)?.map_or(offset, |earlier| earlier.min(offset));
    let mut bytes = TORN_MAGIC.to_vec();
    bytes.extend_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    write_atomically(dir, TORN_FILE, &bytes)
}

/// The offset of the torn tail recovery cut, if one is recorded. An unreadable file
/// counts as a cut at offset 0 (everything may be lost).
pub(crate) fn load_torn_tail(dir: &Path) -> Result<Option<u64>, StorageError> {
    let Some(bytes) = read_optional(&dir.join(TORN_FILE))? else {
        return Ok(None);
    };
    let decoded = (bytes.len() == 20 && bytes.starts_with(TORN_MAGIC))
        .then(|| {
            let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
            (crc32c::crc32c(&bytes[..16]) == crc)
                .then(|| bytes[8..16].try_into().ok().map(u64::from_le_bytes))
                .flatten()
        })
        .flatten();
    Ok(Some(decoded.unwrap_or(0)))
}

/// Removes the torn-tail record of the log in `dir` (open or not: nothing else in the
/// log depends on it), once its host has acted on it.
pub fn forget_torn_tail(dir: &Path) -> Result<(), StorageError> {
    if dir.join(TORN_FILE).exists() {
        remove_if_exists(&dir.join(TORN_FILE))?;
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lost_ranges_file_is_the_documented_bytes() {
        // docs/storage-format.md: magic, u32 count, u64 from, u64 to, CRC32C, little-endian.
        let bytes = encode_lost(std::slice::from_ref(&(3..9)));
        let mut expected = b"FRYLST01".to_vec();
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(&9u64.to_le_bytes());
        let crc = crc32c::crc32c(&expected);
        expected.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(bytes, expected);
    }

    #[test]
    fn the_lost_ranges_file_round_trips_and_rejects_damage() {
        let ranges = [3..9, 20..21].into_iter().collect::<Vec<_>>();
        let bytes = encode_lost(&ranges);
        assert_eq!(decode_lost(&bytes), Some(ranges));
        let mut flipped = bytes.clone();
        flipped[14] ^= 1;
        assert_eq!(decode_lost(&flipped), None);
        assert_eq!(decode_lost(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_lost(&encode_lost(&[])), Some(Vec::new()));
        assert_eq!(clip(vec![0..5, 7..12, 15..16], 3, 10), vec![3..5, 7..10]);
    }
}
