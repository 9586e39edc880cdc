//! Read limits, timestamp lookup, retention and truncation.

mod common;

use common::*;
use ferry_records::Batches;
use ferry_storage::{Durability, Log, LogConfig, StorageError};

fn offsets(bytes: &[u8]) -> Vec<u64> {
    Batches::new(bytes)
        .map(|b| b.expect("batch").header.base_offset)
        .collect()
}

#[test]
fn read_respects_limits() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, LogConfig::default()).expect("open");
    let len = batch(2, 100, 1).len();
    for i in 0..10 {
        log.append(batch(2, 100, i), 1, 0).expect("append");
    }
    // Whole batches within max_bytes.
    let r = log.read(0, len * 3 + 10, 20).expect("read");
    assert_eq!((r.batches, r.next_offset), (3, 6));
    assert_eq!(offsets(&r.bytes), vec![0, 2, 4]);
    // At least one batch even if max_bytes is tiny.
    let r = log.read(4, 1, 20).expect("read");
    assert_eq!((r.batches, r.next_offset, r.bytes.len()), (1, 6, len));
    // An offset inside a batch returns the batch holding it.
    let r = log.read(5, 1, 20).expect("read");
    assert_eq!(offsets(&r.bytes), vec![4]);
    // Never a batch reaching max_offset.
    let r = log.read(0, 1 << 20, 7).expect("read");
    assert_eq!((r.batches, r.next_offset), (3, 6));
    let r = log.read(6, 1 << 20, 7).expect("read");
    assert_eq!((r.batches, r.next_offset), (0, 6));
    // offset == bound and offset == end are empty; beyond end is an error.
    assert_eq!(log.read(20, 100, 20).expect("end").batches, 0);
    assert_eq!(log.read(8, 100, 8).expect("bound").batches, 0);
    assert!(matches!(
        log.read(21, 100, 30),
        Err(StorageError::OffsetOutOfRange {
            requested: 21,
            start: 0,
            end: 20
        })
    ));
}

#[test]
fn reads_continue_across_segments() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, small_config(Durability::None)).expect("open");
    for i in 0..50 {
        log.append(batch(1 + i % 4, 30, i as i64), 1, 0)
            .expect("append");
    }
    assert!(log.segment_count() > 5);
    let all = read_all(&log);
    assert_eq!(all.len(), 50);
    // Reading from any offset finds the batch holding it.
    for offset in 0..log.end_offset() {
        let r = log.read(offset, 1, u64::MAX).expect("read");
        let batch = Batches::new(&r.bytes).next().expect("one").expect("whole");
        assert!(batch.header.base_offset <= offset && offset < batch.header.next_offset());
    }
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, small_config(Durability::None)).expect("open");
    // Batches of 3 records with timestamps t, t+1, t+2 at t = 0, 10, 20, ...
    for i in 0..40 {
        log.append(batch(3, 20, i * 10), 1, 0).expect("append");
    }
    assert!(log.segment_count() > 3);
    assert_eq!(log.offset_for_timestamp(-5).expect("ts"), Some((0, 0)));
    assert_eq!(log.offset_for_timestamp(0).expect("ts"), Some((0, 0)));
    assert_eq!(log.offset_for_timestamp(1).expect("ts"), Some((1, 1)));
    assert_eq!(log.offset_for_timestamp(5).expect("ts"), Some((3, 10)));
    assert_eq!(log.offset_for_timestamp(252).expect("ts"), Some((77, 252)));
    assert_eq!(log.offset_for_timestamp(392).expect("ts"), Some((119, 392)));
    assert_eq!(log.offset_for_timestamp(393).expect("ts"), None);
    log.close().expect("close");
    let log = Log::open(&dir, small_config(Durability::None)).expect("reopen");
    assert_eq!(log.offset_for_timestamp(252).expect("ts"), Some((77, 252)));
}

#[test]
fn retention_by_size_deletes_oldest_sealed_segments() {
    let (_tmp, dir) = temp_log_dir();
    let config = LogConfig {
        retention_bytes: Some(3000),
        ..small_config(Durability::Fsync)
    };
    let log = Log::open(&dir, config).expect("open");
    for i in 0..60 {
        log.append(batch(1, 100, i), 1, 0).expect("append");
    }
    let (size, segments, start) = (log.size_bytes(), log.segment_count(), log.start_offset());
    let outcome = log.enforce_retention(0).expect("retention");
    assert!(outcome.segments_deleted > 0);
    assert_eq!(log.segment_count(), segments - outcome.segments_deleted);
    assert_eq!(log.size_bytes(), size - outcome.bytes_deleted);
    assert!(log.size_bytes() >= 3000, "never below the limit");
    assert_eq!(log.start_offset(), start + outcome.records_deleted);
    assert_eq!(segment_files(&dir).len(), log.segment_count());
    assert!(matches!(
        log.read(0, 10, 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        read_all(&log).len() as u64,
        log.end_offset() - log.start_offset()
    );
    assert_eq!(log.enforce_retention(0).expect("again").segments_deleted, 0);
}

#[test]
fn retention_by_age_uses_the_newest_record() {
    let (_tmp, dir) = temp_log_dir();
    let config = LogConfig {
        retention_ms: Some(1000),
        ..small_config(Durability::Fsync)
    };
    let log = Log::open(&dir, config.clone()).expect("open");
    for i in 0..30 {
        log.append(batch(1, 200, i * 100), 1, 0).expect("append");
    }
    let segments = log.segment_count();
    assert_eq!(log.enforce_retention(0).expect("young").segments_deleted, 0);
    let outcome = log.enforce_retention(10_000).expect("old");
    assert_eq!(
        outcome.segments_deleted,
        segments - 1,
        "the active segment stays"
    );
    assert_eq!(
        log.start_offset(),
        log.end_offset() - outcome_active_records(&log)
    );
    log.close().expect("close");
    let log = Log::open(&dir, config).expect("reopen");
    assert_eq!(log.segment_count(), 1);
}

fn outcome_active_records(log: &Log) -> u64 {
    read_all(log).len() as u64
}

#[test]
fn truncate_to_rounds_down_and_appends_continue() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let log = Log::open(&dir, config.clone()).expect("open");
    for i in 0..30 {
        log.append(batch(3, 40, i), 1, 0).expect("append");
    }
    log.flush().expect("flush");
    let before = log.segment_count();
    assert_eq!(
        log.truncate_to(40).expect("truncate"),
        39,
        "rounded down to a batch"
    );
    assert!(log.segment_count() < before);
    assert_eq!(log.durable_end_offset(), 39);
    assert_eq!(
        log.append(batch(1, 1, 1), 2, 0)
            .expect("append")
            .base_offset,
        39
    );
    assert_eq!(log.truncate_to(1000).expect("beyond end"), 40);
    drop(log);
    let log = Log::open(&dir, config.clone()).expect("reopen after crash");
    assert_eq!(log.end_offset(), 40);
    assert_eq!(read_all(&log).len(), 14);
    assert_eq!(log.truncate_to(0).expect("everything"), 0);
    assert_eq!(log.segment_count(), 1);
    log.close().expect("close");
    let log = Log::open(&dir, config).expect("reopen");
    assert_eq!(log.end_offset(), 0);
}

#[test]
fn segments_roll_by_age() {
    let (_tmp, dir) = temp_log_dir();
    let config = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config).expect("open");
    log.append(batch(1, 1, 1), 1, 10_000).expect("append");
    log.append(batch(1, 1, 1), 1, 10_999)
        .expect("young segment");
    assert_eq!(log.segment_count(), 1);
    log.append(batch(1, 1, 1), 1, 11_000)
        .expect("old segment rolls");
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn bad_batches_are_refused_without_writing() {
    let (_tmp, dir) = temp_log_dir();
    let config = LogConfig {
        max_batch_bytes: 1000,
        max_record_bytes: 200,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config).expect("open");
    assert!(matches!(
        log.append(batch(20, 100, 1), 1, 0),
        Err(StorageError::BatchTooLarge { limit: 1000, .. })
    ));
    assert!(matches!(
        log.append(batch(1, 300, 1), 1, 0),
        Err(StorageError::InvalidBatch(_))
    ));
    let mut corrupt = batch(2, 10, 1);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        log.append(corrupt, 1, 0),
        Err(StorageError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append(vec![0; 10], 1, 0),
        Err(StorageError::InvalidBatch(_))
    ));
    assert_eq!(log.end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn invalid_config_is_refused() {
    let (_tmp, dir) = temp_log_dir();
    let config = LogConfig {
        segment_bytes: 1,
        ..LogConfig::default()
    };
    assert!(matches!(
        Log::open(&dir, config),
        Err(StorageError::InvalidConfig(_))
    ));
}
