//! Sequential scans over the batches of a segment file, used by recovery,
//! index rebuilds and producer-state rebuilds.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use ferry_records::{BatchHeader, HEADER_LEN, validate_batch};

use crate::StorageError;
use crate::error::IoContext;

/// Read-ahead of a scan: large enough that header-only scans issue few syscalls.
const SCAN_BUFFER_BYTES: usize = 1 << 20;

/// How much of each batch a scan checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanMode {
    /// Parse headers and check offsets and lengths; skip record bytes.
    HeadersOnly,
    /// Also read every batch and check its CRC and records.
    Full,
}

/// Where a scan starts: a batch boundary and the offset expected there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanStart {
    /// Byte position of a batch in the file.
    pub(crate) position: u64,
    /// Base offset the batch at `position` must have.
    pub(crate) offset: u64,
}

/// How a scan ended.
#[derive(Debug, Clone)]
pub(crate) struct ScanEnd {
    /// Position after the last good batch.
    pub(crate) valid_len: u64,
    /// Offset after the last good batch.
    pub(crate) next_offset: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub(crate) problem: Option<String>,
}

/// Scans the batches of `file` (a segment with base offset `segment_base`) from `start`
/// to the end, calling `visit(header, position)` for each good one, and stops at the
/// first torn, corrupt or out-of-sequence batch. I/O errors are errors; bad bytes are
/// reported in [`ScanEnd::problem`], never a panic.
pub(crate) fn scan_segment(
    file: &File,
    path: &Path,
    segment_base: u64,
    start: ScanStart,
    mode: ScanMode,
    mut visit: impl FnMut(&BatchHeader, u64),
) -> Result<ScanEnd, StorageError> {
    let file_len = file
        .metadata()
        .context(|| format!("reading metadata of {}", path.display()))?
        .len();
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, file);
    reader
        .seek(SeekFrom::Start(start.position))
        .context(|| format!("seeking to {} in {}", start.position, path.display()))?;
    let mut end = ScanEnd {
        valid_len: start.position,
        next_offset: start.offset,
        problem: None,
    };
    let mut batch = Vec::new();
    while end.valid_len < file_len {
        let position = end.valid_len;
        let checked = next_batch(&mut reader, &mut batch, file_len, position, mode)
            .context(|| format!("reading {} at {position}", path.display()))?
            .and_then(|header| check_sequence(&header, segment_base, end.next_offset, position));
        match checked {
            Ok(header) => {
                visit(&header, position);
                end.valid_len = position + header.total_len() as u64;
                end.next_offset = header.next_offset();
            }
            Err(problem) => {
                end.problem = Some(problem);
                break;
            }
        }
    }
    Ok(end)
}

/// Reads the batch at the reader's position. `Ok(Err(problem))` for bad bytes.
fn next_batch(
    reader: &mut BufReader<&File>,
    batch: &mut Vec<u8>,
    file_len: u64,
    position: u64,
    mode: ScanMode,
) -> std::io::Result<Result<BatchHeader, String>> {
    if file_len - position < HEADER_LEN as u64 {
        return Ok(Err(format!(
            "torn batch header: {} bytes",
            file_len - position
        )));
    }
    batch.resize(HEADER_LEN, 0);
    reader.read_exact(batch)?;
    let header = match BatchHeader::parse(batch) {
        Ok(header) => header,
        Err(err) => return Ok(Err(format!("bad batch header: {err}"))),
    };
    let total = header.total_len() as u64;
    if file_len - position < total {
        return Ok(Err(format!(
            "torn batch: declares {total} bytes, {} remain",
            file_len - position
        )));
    }
    let body_len = total - HEADER_LEN as u64;
    match mode {
        ScanMode::HeadersOnly => {
            let skip = i64::try_from(body_len).map_err(std::io::Error::other)?;
            reader.seek_relative(skip)?;
        }
        ScanMode::Full => {
            batch.resize(header.total_len(), 0);
            reader.read_exact(&mut batch[HEADER_LEN..])?;
            // Records were size-checked when appended; the limit may since have changed.
            if let Err(err) = validate_batch(batch, usize::MAX) {
                return Ok(Err(format!(
                    "batch at offset {} fails validation: {err}",
                    header.base_offset
                )));
            }
        }
    }
    Ok(Ok(header))
}

/// Checks that a batch continues the segment: the expected base offset, and offsets
/// and positions that fit the index's u32 fields.
fn check_sequence(
    header: &BatchHeader,
    segment_base: u64,
    expected_offset: u64,
    position: u64,
) -> Result<BatchHeader, String> {
    if header.base_offset != expected_offset {
        return Err(format!(
            "batch base offset {} where {expected_offset} was expected",
            header.base_offset
        ));
    }
    let fits = header
        .base_offset
        .checked_add(u64::from(header.record_count))
        .is_some_and(|next| next - segment_base <= u64::from(u32::MAX))
        && position <= u64::from(u32::MAX);
    if !fits {
        return Err("batch does not fit the segment's u32 offset or position range".into());
    }
    Ok(*header)
}
