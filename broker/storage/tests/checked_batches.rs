//! Batches checked once by the caller (`check_batch`) and appended without a copy.

mod common;

use common::*;
use ferry_records::{BatchHeader, RecordError};
use ferry_storage::{Durability, Log, LogConfig, StorageError, check_batch};

#[test]
fn a_checked_batch_is_stored_stamped_and_the_callers_bytes_stay_as_they_were() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, small_config(Durability::Fsync)).expect("open");
    log.append(batch(3, 10, 1), 1, 0).expect("first");
    let sent = batch(2, 10, 5);
    let checked = check_batch(sent.as_slice(), 1 << 20, 1 << 20).expect("a good batch");
    assert_eq!(checked.header().record_count, 2);
    let appended = log.append_checked(checked, 7, 0).expect("append");
    assert_eq!((appended.base_offset, appended.last_offset), (3, 4));
    // The caller's buffer was only read: its offset and epoch are still unstamped.
    let header = BatchHeader::parse(&sent).expect("header");
    assert_eq!((header.base_offset, header.leader_epoch), (0, 0));
    // The stored copy carries both, and is otherwise the same bytes.
    let stored = read_all(&log);
    let header = BatchHeader::parse(&stored[1]).expect("stored header");
    assert_eq!((header.base_offset, header.leader_epoch), (3, 7));
    assert_eq!(unstamped(&stored[1]), sent);
}

#[test]
fn a_batch_checked_against_larger_limits_than_the_logs_is_checked_again() {
    let (_tmp, dir) = temp_log_dir();
    let config = LogConfig {
        max_record_bytes: 64,
        ..small_config(Durability::None)
    };
    let log = Log::open(&dir, config).expect("open");
    let large = batch(1, 200, 1);
    let checked = check_batch(large, 1 << 20, 1 << 20).expect("fine for its limits");
    let refused = log.append_checked(checked, 1, 0);
    assert!(
        matches!(
            refused,
            Err(StorageError::InvalidBatch(
                RecordError::RecordTooLarge { .. }
            ))
        ),
        "{refused:?}"
    );
    assert_eq!(log.end_offset(), 0, "nothing was written");
}

#[test]
fn check_batch_refuses_what_append_refuses() {
    let mut damaged = batch(2, 10, 1);
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    assert!(matches!(
        check_batch(damaged, 1 << 20, 1 << 20),
        Err(StorageError::InvalidBatch(RecordError::CrcMismatch { .. }))
    ));
    assert!(matches!(
        check_batch(batch(2, 10, 1), 16, 1 << 20),
        Err(StorageError::BatchTooLarge { limit: 16, .. })
    ));
}
