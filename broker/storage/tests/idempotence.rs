//! Idempotent producers: retries are answered with the original offsets.

mod common;

use common::*;
use ferry_storage::{Durability, Log, LogConfig, StorageError};

#[test]
fn retry_returns_original_offsets() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, LogConfig::default()).expect("open");
    log.append(batch(3, 5, 1), 1, 0).expect("plain batch");
    let b0 = stamped_batch(2, 5, 10, producer(42, 0, 0));
    let b1 = stamped_batch(3, 5, 20, producer(42, 0, 2));
    let first = log.append(b0.clone(), 1, 0).expect("first");
    let second = log.append(b1.clone(), 1, 0).expect("second");
    assert_eq!(
        (first.base_offset, first.last_offset, first.duplicate),
        (3, 4, false)
    );
    assert_eq!((second.base_offset, second.last_offset), (5, 7));

    let retry = log.append(b0, 2, 0).expect("retry");
    assert_eq!(
        (retry.base_offset, retry.last_offset, retry.duplicate),
        (3, 4, true)
    );
    assert_eq!(retry.max_timestamp_ms, first.max_timestamp_ms);
    assert_eq!(log.end_offset(), 8, "nothing written for a duplicate");
    assert!(log.append(b1, 1, 0).expect("retry").duplicate);
}

#[test]
fn out_of_order_and_fenced_batches_are_refused() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, LogConfig::default()).expect("open");
    log.append(stamped_batch(2, 5, 1, producer(7, 3, 100)), 1, 0)
        .expect("unknown producer, any sequence");
    let err = log
        .append(stamped_batch(1, 5, 1, producer(7, 3, 105)), 1, 0)
        .expect_err("gap");
    assert!(matches!(
        err,
        StorageError::OutOfOrderSequence {
            producer_id: 7,
            expected: 102,
            received: 105
        }
    ));
    let err = log
        .append(stamped_batch(1, 5, 1, producer(7, 2, 102)), 1, 0)
        .expect_err("old epoch");
    assert!(matches!(
        err,
        StorageError::ProducerFenced {
            epoch: 2,
            current_epoch: 3,
            ..
        }
    ));
    log.append(stamped_batch(1, 5, 1, producer(7, 3, 102)), 1, 0)
        .expect("in order");
    log.append(stamped_batch(1, 5, 1, producer(7, 4, 0)), 1, 0)
        .expect("new epoch resets");
    let err = log
        .append(stamped_batch(1, 5, 1, producer(7, 3, 103)), 1, 0)
        .expect_err("fenced now");
    assert!(matches!(
        err,
        StorageError::ProducerFenced {
            current_epoch: 4,
            ..
        }
    ));
    assert_eq!(log.end_offset(), 4);
}

#[test]
fn only_the_last_five_batches_are_remembered() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, LogConfig::default()).expect("open");
    let batches: Vec<Vec<u8>> = (0..7)
        .map(|i| stamped_batch(1, 5, i, producer(1, 0, i as i32)))
        .collect();
    for b in &batches {
        log.append(b.clone(), 1, 0).expect("append");
    }
    assert!(
        log.append(batches[2].clone(), 1, 0)
            .expect("cached")
            .duplicate
    );
    let err = log
        .append(batches[1].clone(), 1, 0)
        .expect_err("too old to recognise");
    assert!(matches!(
        err,
        StorageError::OutOfOrderSequence {
            expected: 7,
            received: 1,
            ..
        }
    ));
}

#[test]
fn duplicates_are_detected_after_close_and_after_crash() {
    for crash in [false, true] {
        let (_tmp, dir) = temp_log_dir();
        let config = small_config(Durability::Fsync);
        let log = Log::open(&dir, config.clone()).expect("open");
        let mut sent = Vec::new();
        for i in 0..12 {
            let b = stamped_batch(2, 50, i, producer(9, 1, (i * 2) as i32));
            let outcome = log.append(b.clone(), 1, 0).expect("append");
            sent.push((b, outcome));
        }
        if crash {
            drop(log);
        } else {
            log.close().expect("close");
        }
        let log = Log::open(&dir, config).expect("reopen");
        let (last, original) = sent.last().expect("sent").clone();
        let retry = log.append(last, 1, 0).expect("retry");
        assert!(retry.duplicate, "crash={crash}");
        assert_eq!(retry.base_offset, original.base_offset);
        let next = log
            .append(stamped_batch(1, 5, 99, producer(9, 1, 24)), 1, 0)
            .expect("next in sequence");
        assert!(!next.duplicate);
        let err = log
            .append(stamped_batch(1, 5, 99, producer(9, 0, 25)), 1, 0)
            .expect_err("fenced");
        assert!(matches!(err, StorageError::ProducerFenced { .. }));
    }
}

#[test]
fn producer_table_is_bounded() {
    let (_tmp, dir) = temp_log_dir();
    let config = LogConfig {
        max_producers: 3,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config).expect("open");
    for id in 0..5 {
        log.append(stamped_batch(1, 5, 1, producer(id, 0, 0)), 1, 0)
            .expect("append");
    }
    // Producer 0 was evicted, so its retry is accepted as new data.
    assert!(
        !log.append(stamped_batch(1, 5, 1, producer(0, 0, 0)), 1, 0)
            .expect("evicted")
            .duplicate
    );
    assert!(
        log.append(stamped_batch(1, 5, 1, producer(4, 0, 0)), 1, 0)
            .expect("kept")
            .duplicate
    );
}

#[test]
fn truncation_forgets_removed_batches() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, LogConfig::default()).expect("open");
    let b0 = stamped_batch(1, 5, 1, producer(5, 0, 0));
    let b1 = stamped_batch(1, 5, 1, producer(5, 0, 1));
    log.append(b0.clone(), 1, 0).expect("append");
    log.append(b1.clone(), 1, 0).expect("append");
    assert_eq!(log.truncate_to(1).expect("truncate"), 1);
    let again = log.append(b1, 2, 0).expect("re-append after truncation");
    assert!(!again.duplicate);
    assert_eq!(again.base_offset, 1);
    assert!(log.append(b0, 2, 0).expect("still cached").duplicate);
}
