//! Opening a log directory: checkpoint files, trusting or scanning segments, cutting a
//! torn tail, and rebuilding the producer table.

use std::path::Path;

use tracing::{error, info, warn};

use crate::StorageError;
use crate::config::LogConfig;
use crate::disk::{TMP_SUFFIX, read_optional, remove_if_exists, sync_dir, write_atomically};
use crate::error::IoContext;
use crate::producer_state::{CACHED_BATCHES, ProducerTable};
use crate::repair::{DAMAGED_EXT, Damage, LostRecords, confine, find_resume};
use crate::scan::ScanMode;
use crate::segment::{INDEX_EXT, LOG_EXT, Segment, TIME_INDEX_EXT, file_name, parse_log_name};
use ferry_records::BatchHeader;

/// File holding the recovery point: every segment ending at or below it is trusted.
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";
/// File holding the producer table written by a clean close.
pub(crate) const PRODUCER_SNAPSHOT_FILE: &str = "producer-snapshot";
/// First bytes of the recovery-point file: name and format version.
const RECOVERY_POINT_MAGIC: &[u8; 8] = b"FRYRCP01";
/// Bytes of the recovery-point file: magic, u64 offset, u32 CRC32C.
const RECOVERY_POINT_LEN: usize = 20;

/// Encodes the recovery-point file.
pub(crate) fn encode_recovery_point(offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECOVERY_POINT_LEN);
    out.extend_from_slice(RECOVERY_POINT_MAGIC);
    out.extend_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the recovery-point file; `None` if it is not one.
pub(crate) fn decode_recovery_point(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != RECOVERY_POINT_LEN || &bytes[..8] != RECOVERY_POINT_MAGIC {
        return None;
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[16..20]);
    if crc32c::crc32c(&bytes[..16]) != u32::from_le_bytes(crc) {
        return None;
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&bytes[8..16]);
    Some(u64::from_le_bytes(offset))
}

/// Writes the recovery point atomically.
pub(crate) fn write_recovery_point(dir: &Path, offset: u64) -> Result<(), StorageError> {
    write_atomically(dir, RECOVERY_POINT_FILE, &encode_recovery_point(offset))
}

/// What recovery found.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Contiguous segments, at least one; the last is active.
    pub(crate) segments: Vec<Segment>,
    /// The rebuilt producer table.
    pub(crate) producers: ProducerTable,
    /// The recovery point in force after recovery.
    pub(crate) recovery_point: u64,
    /// Records lost to damage, each now a lost range in the log.
    pub(crate) lost: Vec<LostRecords>,
}

/// Recovers the log in `dir` (created if missing). See `docs/storage-format.md`.
pub(crate) fn recover(dir: &Path, config: &LogConfig) -> Result<Recovered, StorageError> {
    std::fs::create_dir_all(dir).context(|| format!("creating log directory {}", dir.display()))?;
    let bases = list_segments(dir)?;
    let recovery_point = read_optional(&dir.join(RECOVERY_POINT_FILE))?
        .and_then(|bytes| {
            let decoded = decode_recovery_point(&bytes);
            if decoded.is_none() {
                warn!(dir = %dir.display(), "unreadable recovery point; scanning every segment");
            }
            decoded
        })
        .unwrap_or(0);
    let snapshot = take_producer_snapshot(dir, config.max_producers)?;
    let (mut segments, lost) =
        load_segments(dir, &bases, recovery_point, config.index_interval_bytes)?;
    if segments.is_empty() {
        segments.push(Segment::create(dir, 0)?);
    }
    let mut lost = lost;
    let before = before_last(&segments);
    if let Some(last) = segments.last_mut()
        && last.next_offset < recovery_point
    {
        // Segments the checkpoint vouched for are gone from the end: mark the offsets lost
        // rather than hand them out again.
        lost.extend(fill_gap(
            last,
            recovery_point,
            before,
            config.index_interval_bytes,
        )?);
    }
    let end_offset = segments.last().map_or(0, |s| s.next_offset);
    // Everything recovery saw may still be only in the page cache (a process crash in
    // `None` mode); fsync it so that reporting it as durable is true.
    for segment in segments.iter().filter(|s| s.next_offset > recovery_point) {
        segment
            .file
            .sync_data()
            .context(|| format!("fsync of {}", segment.path.display()))?;
    }
    if recovery_point > end_offset {
        // Data the checkpoint vouched for is gone (cut or deleted). Lower it now, or later
        // segments written past the cut could be trusted without ever having been scanned.
        write_recovery_point(dir, end_offset)?;
    }
    let producers = match snapshot {
        Some((snapshot_end, table))
            if snapshot_end == end_offset && recovery_point == end_offset =>
        {
            table
        }
        _ => rebuild_producers(&segments, config.max_producers)?,
    };
    Ok(Recovered {
        segments,
        producers,
        recovery_point: recovery_point.min(end_offset),
        lost,
    })
}

/// Lists segment base offsets in order, removing temp files and orphaned index files.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut bases = Vec::new();
    let mut others = Vec::new();
    let entries = std::fs::read_dir(dir).context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(base) = parse_log_name(&name) {
            bases.push(base);
        } else if name.ends_with(TMP_SUFFIX) {
            info!(file = %entry.path().display(), "removing leftover temp file");
            remove_if_exists(&entry.path())?;
        } else {
            others.push(name);
        }
    }
    bases.sort_unstable();
    for name in others {
        let orphan = [INDEX_EXT, TIME_INDEX_EXT].iter().any(|ext| {
            name.strip_suffix(ext)
                .and_then(|stem| stem.strip_suffix('.'))
                .and_then(|stem| parse_log_name(&format!("{stem}.{LOG_EXT}")))
                .is_some_and(|base| bases.binary_search(&base).is_err())
        });
        if orphan {
            remove_if_exists(&dir.join(&name))?;
        }
    }
    Ok(bases)
}

/// Bound on the damaged places confined in one segment: each repair lets the rescan go
/// on past it, so this only stops on a file that is damage from end to end.
const MAX_REPAIRS_PER_SEGMENT: usize = 4096;

/// Loads every segment, trusting those below the recovery point whose index files check
/// out and fully scanning the rest. Damage never removes an intact batch: a bad batch in
/// a sealed segment, or below the recovery point, is confined to a lost range (see
/// `repair.rs`); only a torn tail of the last segment above the recovery point, with no
/// intact batch after it, is cut.
fn load_segments(
    dir: &Path,
    bases: &[u64],
    recovery_point: u64,
    interval: u32,
) -> Result<(Vec<Segment>, Vec<LostRecords>), StorageError> {
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    let mut scanned = Vec::with_capacity(bases.len());
    let mut lost = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        let before = before_last(&segments);
        if let Some(prev) = segments.last_mut() {
            if prev.next_offset > base {
                // Overlapping offsets cannot be what the engine wrote: keep the file aside.
                set_aside(dir, base)?;
                continue;
            }
            if prev.next_offset < base {
                lost.extend(fill_gap(prev, base, before, interval)?);
                if let Some(last) = scanned.last_mut() {
                    *last = true;
                }
            }
        }
        let mut segment = Segment::open_existing(dir, base)?;
        if base < recovery_point && try_trust(&mut segment, recovery_point)? {
            segments.push(segment);
            scanned.push(false);
            continue;
        }
        let before = segments
            .last()
            .map_or((0, 0), |s| (s.last_epoch, s.max_timestamp_ms.max(0)));
        let limit = match bases.get(i + 1) {
            Some(&next) => Limit::NextSegment(next),
            None => Limit::RecoveryPoint(recovery_point),
        };
        lost.extend(scan_confining(&mut segment, limit, before, interval)?);
        segments.push(segment);
        scanned.push(true);
    }
    // Sealed segments whose index was rebuilt get fresh index files, so the next open
    // can trust them without scanning. The active segment's are written at close.
    let sealed = segments.len().saturating_sub(1);
    for (segment, _) in segments[..sealed]
        .iter_mut()
        .zip(&scanned)
        .filter(|(_, s)| **s)
    {
        segment.write_index_files(dir)?;
    }
    Ok((segments, lost))
}

/// What is known of the offsets a scanned segment held.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    /// A later segment starts here: this one held every offset below it.
    NextSegment(u64),
    /// The last segment: everything below the recovery point was durable.
    RecoveryPoint(u64),
}

/// Scans a segment in full, confining each damaged place to a lost range, until the
/// scan is clean or a torn tail is cut. `before` is the epoch and timestamp of the
/// batch before the segment.
pub(crate) fn scan_confining(
    segment: &mut Segment,
    limit: Limit,
    before: (u64, i64),
    interval: u32,
) -> Result<Vec<LostRecords>, StorageError> {
    let mut lost = Vec::new();
    for _ in 0..MAX_REPAIRS_PER_SEGMENT {
        let end = segment.load_by_scan(ScanMode::Full, interval)?;
        let Some(problem) = end.problem else {
            return Ok(lost);
        };
        let file_len = segment
            .file
            .metadata()
            .context(|| format!("reading metadata of {}", segment.path.display()))?
            .len();
        let damage = Damage {
            file: &segment.file,
            path: &segment.path,
            segment_base: segment.base_offset,
            position: end.valid_len,
            offset: end.next_offset,
            len: file_len,
            reason: problem.clone(),
            epoch: if segment.is_empty() {
                before.0
            } else {
                segment.last_epoch
            },
            timestamp_ms: if segment.is_empty() {
                before.1
            } else {
                segment.max_timestamp_ms
            },
        };
        let resume_bound = match limit {
            Limit::NextSegment(next) => next,
            Limit::RecoveryPoint(_) => u64::MAX,
        };
        let resume = find_resume(&damage, resume_bound)?;
        let end_offset = match (resume, limit) {
            (Some(_), _) => end.next_offset,
            (None, Limit::NextSegment(next)) => next,
            (None, Limit::RecoveryPoint(point)) if end.next_offset < point => point,
            (None, Limit::RecoveryPoint(_)) => {
                // A torn tail: written after the last fsync, never acknowledged as durable.
                warn!(
                    segment = %segment.path.display(),
                    position = end.valid_len,
                    offset = end.next_offset,
                    %problem,
                    "cutting a torn tail"
                );
                segment.cut_file(end.valid_len)?;
                segment.remove_index_files()?;
                // Recovery cannot tell a torn write from a flipped bit in a synced last
                // batch: the host decides whether the cut may have cost acknowledged data.
                if let Some(dir) = segment.path.parent() {
                    crate::repair::record_torn_tail(dir, end.next_offset)?;
                }
                return Ok(lost);
            }
        };
        lost.push(confine(&damage, resume, end_offset)?);
        segment.remove_index_files()?;
    }
    Err(StorageError::Corrupt {
        path: segment.path.clone(),
        position: 0,
        reason: format!("more than {MAX_REPAIRS_PER_SEGMENT} damaged places in one segment"),
    })
}

/// The epoch and timestamp of the batch before the last segment (what a lost range at
/// its very start is stamped with).
fn before_last(segments: &[Segment]) -> (u64, i64) {
    segments.len().checked_sub(2).map_or((0, 0), |i| {
        (segments[i].last_epoch, segments[i].max_timestamp_ms.max(0))
    })
}

/// Fills the offsets between a segment and the next one (segment files are missing)
/// with a lost range appended to the earlier segment. `before` is the epoch and
/// timestamp of the batch before that segment.
fn fill_gap(
    prev: &mut Segment,
    next_base: u64,
    before: (u64, i64),
    interval: u32,
) -> Result<Vec<LostRecords>, StorageError> {
    let file_len = prev
        .file
        .metadata()
        .context(|| format!("reading metadata of {}", prev.path.display()))?
        .len();
    let damage = Damage {
        file: &prev.file,
        path: &prev.path,
        segment_base: prev.base_offset,
        position: prev.size,
        offset: prev.next_offset,
        len: file_len,
        reason: format!(
            "offsets {}..{next_base} are missing between segments",
            prev.next_offset
        ),
        epoch: prev.last_epoch,
        timestamp_ms: prev.max_timestamp_ms.max(0),
    };
    let mut lost = vec![confine(&damage, None, next_base)?];
    prev.remove_index_files()?;
    let end = prev.load_by_scan(ScanMode::HeadersOnly, interval)?;
    if end.problem.is_some() {
        // The segment was trusted, but it is damaged too (its index files outlived the
        // damage): scan it whole and confine what is damaged in it.
        lost.extend(scan_confining(
            prev,
            Limit::NextSegment(next_base),
            before,
            interval,
        )?);
    }
    Ok(lost)
}

/// Renames a segment whose offsets overlap the one before it (and its index files)
/// out of the log, keeping its bytes for inspection.
fn set_aside(dir: &Path, base: u64) -> Result<(), StorageError> {
    let name = file_name(base, LOG_EXT);
    let target = format!("{name}.overlapping.{DAMAGED_EXT}");
    error!(
        segment = name,
        kept_as = target,
        "segment overlaps the one before it; set aside"
    );
    std::fs::rename(dir.join(&name), dir.join(&target))
        .context(|| format!("setting {name} aside"))?;
    for ext in [INDEX_EXT, TIME_INDEX_EXT] {
        remove_if_exists(&dir.join(file_name(base, ext)))?;
    }
    sync_dir(dir)
}

/// Loads a segment from its index files if they are consistent and it ends at or below
/// the recovery point; otherwise leaves it to a full scan.
fn try_trust(segment: &mut Segment, recovery_point: u64) -> Result<bool, StorageError> {
    match segment.load_from_index()? {
        Ok(()) if segment.next_offset <= recovery_point => Ok(true),
        Ok(()) => Ok(false),
        Err(why) => {
            info!(segment = %segment.path.display(), %why, "rebuilding index");
            Ok(false)
        }
    }
}

/// Reads and removes the producer snapshot: it describes the log only as it was at the
/// close that wrote it, so it must never be read again after the log changes.
fn take_producer_snapshot(
    dir: &Path,
    max_producers: usize,
) -> Result<Option<(u64, ProducerTable)>, StorageError> {
    let Some(bytes) = read_optional(&dir.join(PRODUCER_SNAPSHOT_FILE))? else {
        return Ok(None);
    };
    remove_if_exists(&dir.join(PRODUCER_SNAPSHOT_FILE))?;
    sync_dir(dir)?;
    match ProducerTable::decode(&bytes, max_producers) {
        Ok(snapshot) => Ok(Some(snapshot)),
        Err(why) => {
            warn!(dir = %dir.display(), %why, "ignoring unreadable producer snapshot");
            Ok(None)
        }
    }
}

/// Rebuilds the producer table from every batch header of the log.
fn rebuild_producers(
    segments: &[Segment],
    max_producers: usize,
) -> Result<ProducerTable, StorageError> {
    let mut table = ProducerTable::new(max_producers);
    for segment in segments {
        segment.scan_headers(|header, _| table.record(header))?;
    }
    Ok(table)
}

/// Reloads the producers in `affected` after a truncation: walks segment headers from
/// the newest segment backwards until each has its last [`CACHED_BATCHES`] batches or
/// the log's start is reached. Usually one or two segments; at worst the whole log.
pub(crate) fn reload_producers(
    segments: &[Segment],
    affected: &[i64],
    table: &mut ProducerTable,
) -> Result<(), StorageError> {
    if affected.is_empty() {
        return Ok(());
    }
    // Newest segment first; within a segment, headers in log order.
    let mut found: Vec<Vec<BatchHeader>> = Vec::new();
    let mut counts = vec![0usize; affected.len()];
    for segment in segments.iter().rev() {
        let mut headers = Vec::new();
        segment.scan_headers(|header, _| {
            if let Some(i) = affected.iter().position(|id| *id == header.producer_id) {
                counts[i] += 1;
                headers.push(*header);
            }
        })?;
        found.push(headers);
        if counts.iter().all(|c| *c >= CACHED_BATCHES) {
            break;
        }
    }
    for headers in found.iter().rev() {
        table.restore(headers);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_point_round_trips_and_rejects_garbage() {
        let bytes = encode_recovery_point(1234);
        assert_eq!(decode_recovery_point(&bytes), Some(1234));
        let mut flipped = bytes.clone();
        flipped[9] ^= 0x10;
        assert_eq!(decode_recovery_point(&flipped), None);
        assert_eq!(decode_recovery_point(&bytes[..19]), None);
    }
}
