//! Reading batches with pread, outside the log's lock.
//!
//! A reader takes a [`SegmentView`] under the lock (the shared file handle, the
//! committed size and an index position) and does all I/O after releasing it. Bytes
//! below the committed size are never rewritten, so the reader cannot see a batch
//! being written; a concurrent `truncate_to` or retention may make the read fail or
//! return batches that were just removed, which callers must tolerate.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_records::{Batch, BatchHeader, Batches, HEADER_LEN};

use crate::StorageError;
use crate::error::IoContext;

/// What a reader needs of a segment, taken under the lock.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    /// The segment file, kept open even if the segment is deleted meanwhile.
    pub(crate) file: Arc<File>,
    /// Its path, for error messages.
    pub(crate) path: PathBuf,
    /// Committed bytes: whole batches only.
    pub(crate) size: u64,
    /// A batch boundary at or before the batch sought (from the sparse index).
    pub(crate) start_position: u64,
}

/// Batches read from a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole encoded batches, concatenated, as stored (with stamped offsets and epochs).
    pub bytes: Vec<u8>,
    /// Number of batches in `bytes`.
    pub batches: usize,
    /// Offset after the last returned batch, or the requested offset if none was returned.
    pub next_offset: u64,
}

/// Whole stored batches as a byte range of a segment file, found without reading their
/// bodies, for a caller that sends them on unread (`sendfile`). Unlike a [`ReadResult`]
/// their CRCs are unchecked: the receiver must check them.
#[derive(Debug, Clone)]
pub struct BatchRange {
    /// The segment file, kept open even if the segment is deleted meanwhile.
    pub file: Arc<File>,
    /// Where the first batch starts in `file`.
    pub position: u64,
    /// Bytes of whole batches from `position` (0: nothing to send yet).
    pub len: u64,
    /// Number of batches in the range.
    pub batches: usize,
    /// Offset after the last batch, or the requested offset if the range is empty.
    pub next_offset: u64,
}

/// The most batch headers one [`SegmentView::locate_from`] reads: each is a system
/// call, so a range of many small batches is read and copied instead.
pub(crate) const MAX_LOCATED_BATCHES: usize = 128;

/// A located batch's header fields the log compares with its epoch history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocatedBatch {
    pub(crate) base_offset: u64,
    pub(crate) leader_epoch: u64,
}

impl SegmentView {
    fn corrupt(&self, position: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            position,
            reason: reason.into(),
        }
    }

    fn read_exact(&self, buf: &mut [u8], position: u64) -> Result<(), StorageError> {
        self.file.read_exact_at(buf, position).context(|| {
            format!(
                "reading {} bytes at {position} of {}",
                buf.len(),
                self.path.display()
            )
        })
    }

    /// Reads `len` bytes at `position` into a new buffer without zeroing it first: a
    /// replica fetch reads megabytes at a time, and zeroing them cost about half as
    /// much as reading them.
    fn read_new(&self, len: usize, position: u64) -> Result<Vec<u8>, StorageError> {
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let at = position + bytes.len() as u64;
            let failure = match rustix::io::pread(
                &*self.file,
                rustix::buffer::spare_capacity(&mut bytes),
                at,
            ) {
                Ok(0) => std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                Ok(_) | Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => errno.into(),
            };
            return Err(failure).context(|| {
                format!(
                    "reading {len} bytes at {position} of {} (stopped at {at})",
                    self.path.display()
                )
            });
        }
        // A read may fill more than asked when the allocation has room to spare.
        bytes.truncate(len);
        Ok(bytes)
    }

    /// Walks batch headers from the start position to the first batch satisfying `found`.
    /// The walk is bounded by the committed size (and in practice by the index interval).
    pub(crate) fn find_batch(
        &self,
        found: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let mut position = self.start_position;
        let mut buf = [0u8; HEADER_LEN];
        while position + HEADER_LEN as u64 <= self.size {
            self.read_exact(&mut buf, position)?;
            let header = BatchHeader::parse(&buf)
                .map_err(|err| self.corrupt(position, format!("bad batch header: {err}")))?;
            if found(&header) {
                return Ok(Some((position, header)));
            }
            position += header.total_len() as u64;
        }
        Ok(None)
    }

    /// Reads the whole batch at `position`.
    pub(crate) fn read_batch(
        &self,
        position: u64,
        header: &BatchHeader,
    ) -> Result<Vec<u8>, StorageError> {
        let len = header.total_len();
        if position + len as u64 > self.size {
            return Err(self.corrupt(position, "batch runs past the segment's end"));
        }
        self.read_new(len, position)
    }

    /// Whole batches from the one holding `offset`: at most `max_bytes` but at least one,
    /// none reaching `max_offset`.
    pub(crate) fn read_from(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<ReadResult, StorageError> {
        let empty = ReadResult {
            bytes: Vec::new(),
            batches: 0,
            next_offset: offset,
        };
        let Some((position, first)) = self.find_batch(|h| next_offset(h) > offset)? else {
            // The log holds `offset` in this segment (the caller checked), so a damaged
            // length field skipped the batch holding it: confine the damage rather than
            // answer "nothing yet" forever.
            let reason = format!("no batch holds offset {offset}");
            return Err(self.corrupt(self.size, reason));
        };
        if first.base_offset > offset {
            // `base_offset` is outside the CRC: a damaged one (or a missing batch) must
            // not leave readers stuck before the offset they asked for.
            let reason = format!("batch at {} skips offset {offset}", first.base_offset);
            return Err(self.corrupt(position, reason));
        }
        let available = usize::try_from(self.size - position).unwrap_or(usize::MAX);
        if next_offset(&first) > max_offset {
            // Not readable yet, unless its record count is damaged: then it never will be.
            if first.total_len() <= available {
                let bytes = self.read_new(first.total_len(), position)?;
                if let Some(Err(err)) = Batches::new(&bytes)
                    .next()
                    .map(|b| b.and_then(|b| b.verify_crc()))
                {
                    return Err(StorageError::DamagedBatch {
                        path: self.path.clone(),
                        position,
                        offset: first.base_offset,
                        reason: err.to_string(),
                    });
                }
            }
            return Ok(empty);
        }
        if first.total_len() > available {
            // A length field (outside the CRC) that runs past the committed bytes.
            return Err(StorageError::DamagedBatch {
                path: self.path.clone(),
                position,
                offset: first.base_offset,
                reason: format!(
                    "batch declares {} bytes, {available} remain in the segment",
                    first.total_len()
                ),
            });
        }
        let want = max_bytes.min(available).max(first.total_len());
        let mut bytes = self.read_new(want, position)?;
        let mut kept = 0usize;
        let mut result = empty;
        let mut expected = first.base_offset;
        for batch in Batches::new(&bytes) {
            // A torn batch at the end of the buffer is simply not returned.
            let Ok(batch @ Batch { header, .. }) = batch else {
                break;
            };
            let len = header.total_len();
            // `base_offset` is outside the CRC; a damaged one must not reach a consumer.
            if header.base_offset != expected {
                break;
            }
            // Recovery trusts sealed segments without reading them, so damage that
            // happened since is found here; what came before it is returned first.
            if let Err(err) = batch.verify_crc() {
                if result.batches > 0 {
                    break;
                }
                return Err(StorageError::DamagedBatch {
                    path: self.path.clone(),
                    position: position + kept as u64,
                    offset: expected,
                    reason: err.to_string(),
                });
            }
            if next_offset(&header) > max_offset || (result.batches > 0 && kept + len > max_bytes) {
                break;
            }
            expected = next_offset(&header);
            kept += len;
            result.batches += 1;
            result.next_offset = next_offset(&header);
        }
        bytes.truncate(kept);
        result.bytes = bytes;
        Ok(result)
    }

    /// Locates whole batches from the one holding `offset` like [`Self::read_from`]
    /// (at most `max_bytes` but at least one, none reaching `max_offset`) by their
    /// headers alone. `None` when a read must decide instead: anything that looks
    /// damaged (the read confines it), or more than [`MAX_LOCATED_BATCHES`] batches
    /// filling less than half of `max_bytes` (small batches are cheaper to copy).
    pub(crate) fn locate_from(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<Option<(BatchRange, Vec<LocatedBatch>)>, StorageError> {
        let Some((position, first)) = self.find_batch(|h| next_offset(h) > offset)? else {
            return Ok(None);
        };
        if first.base_offset > offset || next_offset(&first) > max_offset {
            return Ok(None);
        }
        let max_bytes = max_bytes as u64;
        let mut range = BatchRange {
            file: Arc::clone(&self.file),
            position,
            len: 0,
            batches: 0,
            next_offset: first.base_offset,
        };
        let mut located = Vec::new();
        let mut header = first;
        let mut buf = [0u8; HEADER_LEN];
        loop {
            let len = header.total_len() as u64;
            if header.base_offset != range.next_offset
                || position + range.len + len > self.size
                || next_offset(&header) > max_offset
                || (range.batches > 0 && range.len + len > max_bytes)
            {
                break;
            }
            located.push(LocatedBatch {
                base_offset: header.base_offset,
                leader_epoch: header.leader_epoch,
            });
            range.len += len;
            range.batches += 1;
            range.next_offset = next_offset(&header);
            let at = position + range.len;
            if range.batches == MAX_LOCATED_BATCHES || at + HEADER_LEN as u64 > self.size {
                break;
            }
            self.read_exact(&mut buf, at)?;
            match BatchHeader::parse(&buf) {
                Ok(next) => header = next,
                Err(_) => break,
            }
        }
        if range.batches == 0
            || (range.batches == MAX_LOCATED_BATCHES
                && position + range.len < self.size
                && range.len < max_bytes / 2)
        {
            return Ok(None);
        }
        Ok(Some((range, located)))
    }
}

/// Offset after a batch read back from disk; saturating, as the bytes could be damaged.
pub(crate) fn next_offset(header: &BatchHeader) -> u64 {
    header
        .base_offset
        .saturating_add(u64::from(header.record_count))
}
