//! One segment: a `.log` file of concatenated batches and its in-memory index.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_records::BatchHeader;

use crate::StorageError;
use crate::disk::{read_optional, remove_if_exists, sync_dir, write_atomically};
use crate::error::IoContext;
use crate::index::{IndexEntry, SegmentIndex};
use crate::scan::{ScanEnd, ScanMode, ScanStart, scan_segment};

/// Extension of segment data files.
pub(crate) const LOG_EXT: &str = "log";
/// Extension of sparse offset index files.
pub(crate) const INDEX_EXT: &str = "index";
/// Extension of time index files.
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";

/// `{base_offset:020}.{ext}`: zero-padded so names sort by offset.
pub(crate) fn file_name(base_offset: u64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Parses a segment data file name back into its base offset.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// One segment of a log. The last segment of a log is the active one, appended to;
/// the others are sealed and never change except by deletion.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first batch; also the file name.
    pub(crate) base_offset: u64,
    /// The `.log` file's path.
    pub(crate) path: PathBuf,
    /// Shared with readers, which pread outside the log's lock.
    pub(crate) file: Arc<File>,
    /// Bytes of whole, written batches. Readers never look past it.
    pub(crate) size: u64,
    /// Offset after the last batch.
    pub(crate) next_offset: u64,
    /// Largest record timestamp, `i64::MIN` while empty.
    pub(crate) max_timestamp_ms: i64,
    /// When the segment started, for `segment_ms` rolling: the wall clock at the first
    /// append, or after recovery the first batch's max timestamp (the best clock on disk).
    pub(crate) roll_clock_ms: Option<i64>,
    /// Sparse offset and time index.
    pub(crate) index: SegmentIndex,
    /// Bytes appended since the last index entry.
    bytes_since_index: u64,
    /// Relative offset and position of the last batch, indexed when the segment is sealed.
    last_batch: Option<(u32, u32)>,
    /// Leader epoch of the last batch (0 while empty): a lost range put after it takes it.
    pub(crate) last_epoch: u64,
    /// Bytes from the start already dropped from the OS page cache (`page_cache`).
    pub(crate) cache_released_to: u64,
}

impl Segment {
    fn empty(dir: &Path, base_offset: u64, file: File) -> Self {
        Self {
            base_offset,
            path: dir.join(file_name(base_offset, LOG_EXT)),
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            max_timestamp_ms: i64::MIN,
            roll_clock_ms: None,
            index: SegmentIndex::default(),
            bytes_since_index: 0,
            last_batch: None,
            last_epoch: 0,
            cache_released_to: 0,
        }
    }

    /// Creates a new empty segment file and makes its name durable.
    pub(crate) fn create(dir: &Path, base_offset: u64) -> Result<Self, StorageError> {
        let path = dir.join(file_name(base_offset, LOG_EXT));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .context(|| format!("creating segment {}", path.display()))?;
        sync_dir(dir)?;
        Ok(Self::empty(dir, base_offset, file))
    }

    /// Opens an existing segment file without reading it; call a `load_*` method next.
    pub(crate) fn open_existing(dir: &Path, base_offset: u64) -> Result<Self, StorageError> {
        let path = dir.join(file_name(base_offset, LOG_EXT));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .context(|| format!("opening segment {}", path.display()))?;
        Ok(Self::empty(dir, base_offset, file))
    }

    /// Path of one of the segment's index files.
    pub(crate) fn sibling(&self, ext: &str) -> PathBuf {
        self.path.with_extension(ext)
    }

    /// Whether the segment holds no batch.
    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Records a batch written at `position`, adding an index entry every `interval` bytes.
    pub(crate) fn track_batch(&mut self, header: &BatchHeader, position: u64, interval: u32) {
        // Callers checked that offsets and positions fit in u32 (roll rules, scan checks).
        let relative = u32::try_from(header.base_offset - self.base_offset).unwrap_or(u32::MAX);
        let position32 = u32::try_from(position).unwrap_or(u32::MAX);
        self.max_timestamp_ms = self.max_timestamp_ms.max(header.max_timestamp_ms);
        if self.bytes_since_index >= u64::from(interval) {
            self.index.push(IndexEntry {
                relative_offset: relative,
                position: position32,
                max_timestamp_ms: self.max_timestamp_ms,
            });
            self.bytes_since_index = 0;
        }
        let len = header.total_len() as u64;
        self.bytes_since_index += len;
        self.size = position + len;
        self.next_offset = header.next_offset();
        self.last_batch = Some((relative, position32));
        self.last_epoch = header.leader_epoch;
        if self.roll_clock_ms.is_none() {
            self.roll_clock_ms = Some(header.max_timestamp_ms);
        }
    }

    /// Rebuilds everything in memory by scanning the file from the start; stops at the
    /// first bad batch and reports it in the returned [`ScanEnd`] (the file is not cut).
    pub(crate) fn load_by_scan(
        &mut self,
        mode: ScanMode,
        interval: u32,
    ) -> Result<ScanEnd, StorageError> {
        self.reset();
        let start = ScanStart {
            position: 0,
            offset: self.base_offset,
        };
        let (file, path) = (Arc::clone(&self.file), self.path.clone());
        scan_segment(
            &file,
            &path,
            self.base_offset,
            start,
            mode,
            |header, position| {
                self.track_batch(header, position, interval);
            },
        )
    }

    /// Calls `visit(header, position)` for every good batch header, from the start.
    pub(crate) fn scan_headers(
        &self,
        visit: impl FnMut(&BatchHeader, u64),
    ) -> Result<ScanEnd, StorageError> {
        let start = ScanStart {
            position: 0,
            offset: self.base_offset,
        };
        scan_segment(
            &self.file,
            &self.path,
            self.base_offset,
            start,
            ScanMode::HeadersOnly,
            visit,
        )
    }

    /// Loads the index files and checks them against the file by walking the headers
    /// after the last entry. Returns why they cannot be trusted, if they cannot.
    pub(crate) fn load_from_index(&mut self) -> Result<Result<(), String>, StorageError> {
        self.reset();
        let len = self
            .file
            .metadata()
            .context(|| format!("reading metadata of {}", self.path.display()))?
            .len();
        let (Some(offsets), Some(times)) = (
            read_optional(&self.sibling(INDEX_EXT))?,
            read_optional(&self.sibling(TIME_INDEX_EXT))?,
        ) else {
            return Ok(Err("index files missing".into()));
        };
        let index = match SegmentIndex::decode(&offsets, &times, len) {
            Ok(index) => index,
            Err(why) => return Ok(Err(why)),
        };
        let Some(last) = index.last().copied() else {
            return Ok(Err("index is empty".into()));
        };
        let start = ScanStart {
            position: u64::from(last.position),
            offset: self.base_offset + u64::from(last.relative_offset),
        };
        let mut max_timestamp_ms = last.max_timestamp_ms;
        let mut last_batch = None;
        let mut first_max_ts = None;
        let mut last_epoch = 0;
        let end = scan_segment(
            &self.file,
            &self.path,
            self.base_offset,
            start,
            ScanMode::HeadersOnly,
            |h, pos| {
                max_timestamp_ms = max_timestamp_ms.max(h.max_timestamp_ms);
                let relative = u32::try_from(h.base_offset - start.offset).unwrap_or(u32::MAX);
                last_batch = Some((last.relative_offset.saturating_add(relative), pos as u32));
                first_max_ts.get_or_insert(h.max_timestamp_ms);
                last_epoch = h.leader_epoch;
            },
        )?;
        if let Some(problem) = end.problem {
            return Ok(Err(problem));
        }
        if end.valid_len == start.position {
            return Ok(Err("no batch at the last index entry".into()));
        }
        self.index = index;
        self.size = end.valid_len;
        self.next_offset = end.next_offset;
        self.max_timestamp_ms = max_timestamp_ms;
        self.last_batch = last_batch;
        self.last_epoch = last_epoch;
        self.bytes_since_index = end.valid_len - start.position;
        // The first batch's timestamp is not in the index; the segment is sealed, so the
        // roll clock only matters if it becomes active again, which rescans it.
        self.roll_clock_ms = first_max_ts;
        Ok(Ok(()))
    }

    fn reset(&mut self) {
        self.size = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp_ms = i64::MIN;
        self.roll_clock_ms = None;
        self.index = SegmentIndex::default();
        self.bytes_since_index = 0;
        self.last_batch = None;
        self.last_epoch = 0;
    }

    /// Writes the index files, first indexing the last batch so that recovery can find
    /// the segment's end and max timestamp from the files alone.
    pub(crate) fn write_index_files(&mut self, dir: &Path) -> Result<(), StorageError> {
        if let Some((relative, position)) = self.last_batch {
            let indexed = self
                .index
                .last()
                .is_some_and(|e| e.relative_offset == relative);
            if !indexed {
                self.index.push(IndexEntry {
                    relative_offset: relative,
                    position,
                    max_timestamp_ms: self.max_timestamp_ms,
                });
                self.bytes_since_index = self.size - u64::from(position);
            }
        }
        let index_name = file_name(self.base_offset, INDEX_EXT);
        let time_name = file_name(self.base_offset, TIME_INDEX_EXT);
        write_atomically(dir, &index_name, &self.index.encode_offsets())?;
        write_atomically(dir, &time_name, &self.index.encode_times())
    }

    /// Removes the index files (they go stale when the segment is cut).
    pub(crate) fn remove_index_files(&self) -> Result<(), StorageError> {
        remove_if_exists(&self.sibling(INDEX_EXT))?;
        remove_if_exists(&self.sibling(TIME_INDEX_EXT))
    }

    /// Removes the segment's files; the caller fsyncs the directory.
    pub(crate) fn remove_files(&self) -> Result<(), StorageError> {
        remove_if_exists(&self.path)?;
        self.remove_index_files()
    }

    /// Cuts the file to `len` bytes and fsyncs it, so the cut survives a crash.
    pub(crate) fn cut_file(&self, len: u64) -> Result<(), StorageError> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .context(|| format!("truncating {} to {len} bytes", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(42, LOG_EXT), "00000000000000000042.log");
        assert_eq!(parse_log_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_name("42.log"), None);
        assert_eq!(parse_log_name("00000000000000000042.index"), None);
        assert_eq!(parse_log_name("99999999999999999999.log"), None);
    }
}
