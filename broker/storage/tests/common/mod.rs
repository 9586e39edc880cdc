//! Helpers shared by the integration tests.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};

use ferry_records::{BatchBuilder, BatchHeader, Batches, ProducerStamp};
use ferry_storage::{Durability, Log, LogConfig};

/// A batch of `count` records with `value_len`-byte values, timestamps from `ts`.
pub fn batch(count: usize, value_len: usize, ts: i64) -> Vec<u8> {
    stamped_batch(count, value_len, ts, None)
}

/// Like [`batch`], with idempotent-producer fields.
pub fn stamped_batch(
    count: usize,
    value_len: usize,
    ts: i64,
    producer: Option<ProducerStamp>,
) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.set_producer(producer);
    for i in 0..count {
        let value = vec![(i % 251) as u8; value_len];
        let key = format!("k{i}");
        builder.push(Some(key.as_bytes()), &value, &[("h", b"v")], ts + i as i64);
    }
    builder.finish().expect("non-empty batch")
}

/// Producer fields.
pub fn producer(id: i64, epoch: i32, seq: i32) -> Option<ProducerStamp> {
    Some(ProducerStamp {
        producer_id: id,
        producer_epoch: epoch,
        base_sequence: seq,
    })
}

/// A config with tiny segments so tests roll often.
pub fn small_config(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

/// A fresh temp directory holding a log directory path.
pub fn temp_log_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    (tmp, dir)
}

/// Reads every batch from start to end, in order, checking offsets are contiguous.
pub fn read_all(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.start_offset();
    let end = log.end_offset();
    while offset < end {
        let result = log.read(offset, 1000, end).expect("read");
        assert!(result.batches > 0, "no progress at {offset}");
        let mut seen = 0;
        for batch in Batches::new(&result.bytes) {
            let batch = batch.expect("whole batch");
            batch.verify_crc().expect("crc");
            assert_eq!(batch.header.base_offset, offset, "contiguous offsets");
            offset = batch.header.next_offset();
            out.push(batch.bytes.to_vec());
            seen += 1;
        }
        assert_eq!(seen, result.batches);
        assert_eq!(offset, result.next_offset);
    }
    out
}

/// A batch with its stamped base offset and leader epoch zeroed, to compare with what was sent.
pub fn unstamped(bytes: &[u8]) -> Vec<u8> {
    let mut copy = bytes.to_vec();
    BatchHeader::set_base_offset(&mut copy, 0);
    BatchHeader::set_leader_epoch(&mut copy, 0);
    copy
}

/// Segment data files in `dir`, sorted.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// The base offset a segment file is named by.
pub fn base_of(segment: &Path) -> u64 {
    segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("a segment file named by its base offset")
}

/// Appends bytes to a file by hand, as a crash mid-write would leave them.
pub fn append_raw(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open segment");
    file.write_all(bytes).expect("append raw");
}

/// Base offsets of the segment data files in `dir`, in order.
pub fn segment_bases(dir: &Path) -> Vec<u64> {
    segment_files(dir)
        .iter()
        .map(|p| {
            let stem = p.file_stem().expect("stem").to_string_lossy();
            stem.parse().expect("segment name is a base offset")
        })
        .collect()
}
