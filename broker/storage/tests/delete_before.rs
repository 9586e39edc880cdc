//! `Log::delete_before`: dropping whole sealed segments below an offset (for queues).

mod common;

use std::sync::Arc;

use common::*;
use ferry_storage::{Durability, Log, LogConfig, RetentionOutcome, StorageError};

/// A log with tiny segments holding `batches` one-record batches; returns the sent batches.
fn filled(dir: &std::path::Path, config: &LogConfig, batches: usize) -> (Log, Vec<Vec<u8>>) {
    let log = Log::open(dir, config.clone()).expect("open");
    let sent: Vec<Vec<u8>> = (0..batches)
        .map(|i| {
            let b = batch(1, 100, i as i64);
            log.append(b.clone(), 1, 0).expect("append");
            b
        })
        .collect();
    (log, sent)
}

/// The batches the log holds, unstamped, from its start to its end.
fn stored(log: &Log) -> Vec<Vec<u8>> {
    read_all(log).iter().map(|b| unstamped(b)).collect()
}

fn assert_below_start_is_out_of_range(log: &Log) {
    let (start, end) = (log.start_offset(), log.end_offset());
    assert!(start > 0);
    for offset in [0, start - 1] {
        match log.read(offset, 1000, u64::MAX) {
            Err(StorageError::OffsetOutOfRange {
                requested,
                start: s,
                end: e,
            }) => assert_eq!((requested, s, e), (offset, start, end)),
            other => panic!("read at {offset} below start {start}: {other:?}"),
        }
    }
}

#[test]
fn deletes_only_segments_entirely_below_the_offset() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let (log, sent) = filled(&dir, &config, 60);
    let bases = segment_bases(&dir);
    assert!(bases.len() >= 5, "{bases:?}");
    let size = log.size_bytes();

    // Inside segment 2: segments 0 and 1 go, segment 2 stays.
    let outcome = log.delete_before(bases[2] + 1).expect("delete");
    assert_eq!(outcome.segments_deleted, 2);
    assert_eq!(outcome.records_deleted, bases[2]);
    assert_eq!(outcome.bytes_deleted, size - log.size_bytes());
    assert_eq!(log.start_offset(), bases[2]);
    assert_eq!(segment_bases(&dir), bases[2..]);

    // Exactly at segment 3's base: segment 2 is entirely below it.
    let outcome = log.delete_before(bases[3]).expect("delete");
    assert_eq!(outcome.segments_deleted, 1);
    assert_eq!(outcome.records_deleted, bases[3] - bases[2]);
    assert_eq!(log.start_offset(), bases[3]);

    // Inside the active segment: every sealed segment goes, the active one stays.
    let active = *bases.last().expect("active");
    assert!(
        log.end_offset() > active + 1,
        "active segment holds two batches"
    );
    let outcome = log.delete_before(log.end_offset() - 1).expect("delete");
    assert_eq!(outcome.segments_deleted, bases.len() - 4);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(segment_bases(&dir), vec![active]);
    assert_eq!(log.start_offset(), active);
    assert_eq!(stored(&log), sent[active as usize..]);
    assert_below_start_is_out_of_range(&log);
}

#[test]
fn offset_at_or_below_the_start_deletes_nothing() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Interval);
    let (log, sent) = filled(&dir, &config, 30);
    let segments = log.segment_count();
    assert!(segments > 2);
    assert_eq!(
        log.delete_before(0).expect("delete"),
        RetentionOutcome::default()
    );
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.start_offset(), 0);
    assert_eq!(stored(&log), sent);

    // Offset 1 is inside the first segment, so nothing is entirely below it either.
    assert_eq!(log.delete_before(1).expect("delete").segments_deleted, 0);
    let bases = segment_bases(&dir);
    log.delete_before(bases[1]).expect("delete");
    assert_eq!(
        log.delete_before(bases[1]).expect("again"),
        RetentionOutcome::default()
    );
    assert_eq!(
        log.delete_before(0).expect("below start").segments_deleted,
        0
    );
    assert_eq!(log.start_offset(), bases[1]);
}

#[test]
fn offset_beyond_the_end_keeps_the_active_segment() {
    for durability in [Durability::Fsync, Durability::Interval, Durability::None] {
        let (_tmp, dir) = temp_log_dir();
        let config = small_config(durability);
        let (log, sent) = filled(&dir, &config, 40);
        let active = *segment_bases(&dir).last().expect("active");
        let end = log.end_offset();
        let outcome = log.delete_before(u64::MAX).expect("delete");
        assert_eq!(outcome.records_deleted, active, "{durability:?}");
        assert_eq!(log.segment_count(), 1);
        assert_eq!((log.start_offset(), log.end_offset()), (active, end));
        assert_eq!(stored(&log), sent[active as usize..]);
        assert_eq!(
            log.delete_before(end + 100).expect("again"),
            RetentionOutcome::default()
        );
        assert_below_start_is_out_of_range(&log);
        let next = log.append(batch(2, 10, 99), 2, 0).expect("append");
        assert_eq!(next.base_offset, end);
    }
}

#[test]
fn an_empty_active_segment_can_be_all_that_is_left() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let (log, _) = filled(&dir, &config, 30);
    let bases = segment_bases(&dir);
    // Truncating at a segment's base leaves it empty and active.
    assert_eq!(log.truncate_to(bases[2]).expect("truncate"), bases[2]);
    let outcome = log.delete_before(u64::MAX).expect("delete");
    assert_eq!(outcome.segments_deleted, 2);
    assert_eq!((log.start_offset(), log.end_offset()), (bases[2], bases[2]));
    assert_eq!(
        log.read(bases[2], 100, u64::MAX).expect("at start").batches,
        0
    );
    assert_below_start_is_out_of_range(&log);
    log.close().expect("close");

    let log = Log::open(&dir, config).expect("reopen");
    assert_eq!((log.start_offset(), log.end_offset()), (bases[2], bases[2]));
    assert_below_start_is_out_of_range(&log);
    let outcome = log.append(batch(2, 10, 1), 1, 0).expect("append");
    assert_eq!(outcome.base_offset, bases[2]);
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn reopen_keeps_the_new_start_and_appends_continue() {
    for clean in [true, false] {
        let (_tmp, dir) = temp_log_dir();
        let config = small_config(Durability::Fsync);
        let (log, mut sent) = filled(&dir, &config, 50);
        let bases = segment_bases(&dir);
        log.delete_before(bases[3] + 2).expect("delete");
        let (start, end) = (log.start_offset(), log.end_offset());
        assert_eq!(start, bases[3]);
        log.flush().expect("flush");
        if clean {
            log.close().expect("close");
        }
        // Without close this is a process crash: no checkpoint at the end, no snapshot.
        drop(log);

        let log = Log::open(&dir, config.clone()).expect("reopen");
        assert_eq!(
            (log.start_offset(), log.end_offset()),
            (start, end),
            "clean {clean}"
        );
        assert_below_start_is_out_of_range(&log);
        assert_eq!(stored(&log), sent[start as usize..]);
        let next = batch(3, 10, 500);
        let outcome = log.append(next.clone(), 2, 0).expect("append");
        assert_eq!(outcome.base_offset, end);
        log.wait_durable(outcome.last_offset + 1).expect("durable");
        sent.push(next);
        // Deleting again after the reopen works on what recovery loaded.
        log.delete_before(bases[5]).expect("delete");
        assert_eq!(log.start_offset(), bases[5]);
        log.close().expect("close");

        let log = Log::open(&dir, config.clone()).expect("reopen again");
        assert_eq!(log.start_offset(), bases[5]);
        assert_eq!(log.end_offset(), end + 3);
        assert_eq!(stored(&log), sent[bases[5] as usize..]);
    }
}

#[test]
fn a_failed_removal_is_finished_before_anything_newer_is_removed() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let (log, sent) = filled(&dir, &config, 50);
    let bases = segment_bases(&dir);
    assert!(bases.len() > 4);
    // A directory in place of the oldest segment file cannot be unlinked, even as root.
    let first = segment_files(&dir)[0].clone();
    let aside = dir.with_file_name("aside.log");
    std::fs::rename(&first, &aside).expect("move segment aside");
    std::fs::create_dir(&first).expect("dir in its place");
    std::fs::write(first.join("keep"), b"x").expect("make it non-empty");

    let err = log.delete_before(bases[2]).expect_err("removal fails");
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    // The log no longer serves the segments, but leaves the later one's files alone...
    assert_eq!(log.start_offset(), bases[2]);
    assert_eq!(segment_bases(&dir), bases);
    // ...and a later call removes nothing newer while the oldest is still there.
    assert!(log.delete_before(bases[4]).is_err());
    assert_eq!(log.start_offset(), bases[4]);
    assert_eq!(segment_bases(&dir), bases);
    assert_eq!(read_all(&log).len() as u64, log.end_offset() - bases[4]);

    std::fs::remove_dir_all(&first).expect("remove the obstacle");
    std::fs::rename(&aside, &first).expect("put the segment back");
    let outcome = log.delete_before(0).expect("finishes the queued removals");
    assert_eq!(outcome.segments_deleted, 4);
    assert_eq!(outcome.records_deleted, bases[4]);
    assert_eq!(segment_bases(&dir), bases[4..]);
    log.close().expect("close");
    let log = Log::open(&dir, config).expect("reopen");
    assert_eq!(log.start_offset(), bases[4]);
    assert_eq!(stored(&log), sent[bases[4] as usize..]);
}

#[test]
fn concurrent_deletions_and_appends_leave_a_contiguous_log() {
    let (_tmp, dir) = temp_log_dir();
    let config = LogConfig {
        retention_bytes: Some(4000),
        ..small_config(Durability::Interval)
    };
    let log = Arc::new(Log::open(&dir, config.clone()).expect("open"));
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for i in 0..400 {
                log.append(batch(1, 100, i), 1, 0).expect("append");
            }
        })
    };
    let deleters: Vec<_> = (0..2)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut deleted = 0;
                while log.end_offset() < 400 {
                    let behind = log.end_offset().saturating_sub(50);
                    deleted += log.delete_before(behind).expect("delete").records_deleted;
                    deleted += log.enforce_retention(0).expect("retention").records_deleted;
                }
                deleted
            })
        })
        .collect();
    writer.join().expect("writer");
    let deleted: u64 = deleters
        .into_iter()
        .map(|d| d.join().expect("deleter"))
        .sum();
    let start = log.start_offset();
    assert_eq!(deleted, start, "every deleted record counted once");
    assert_eq!(segment_bases(&dir)[0], start);
    assert_eq!(read_all(&log).len() as u64, 400 - start);
    drop(log);
    let log = Log::open(&dir, config).expect("reopen after crash");
    assert_eq!((log.start_offset(), log.end_offset()), (start, 400));
}
