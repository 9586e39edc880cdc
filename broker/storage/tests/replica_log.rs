//! What replication needs of a log: epoch stamping and fencing, appending a leader's
//! batches unchanged, the epoch history across truncation and reopening, and starting
//! over at a later offset.

mod common;

use common::*;
use ferry_records::BatchHeader;
use ferry_storage::{Durability, EpochStart, Log, StorageError};

fn epoch_of(batch: &[u8]) -> u64 {
    BatchHeader::parse(batch).expect("header").leader_epoch
}

fn starts(entries: &[(u64, u64)]) -> Vec<EpochStart> {
    entries
        .iter()
        .map(|&(epoch, start_offset)| EpochStart {
            epoch,
            start_offset,
        })
        .collect()
}

#[test]
fn appends_stamp_the_epoch_and_a_deposed_epoch_is_refused() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, small_config(Durability::Fsync)).expect("open");
    log.append(batch(2, 10, 0), 3, 0).expect("epoch 3");
    log.append(batch(1, 10, 0), 3, 0).expect("epoch 3 again");
    log.append(batch(1, 10, 0), 5, 0).expect("epoch 5");
    match log.append(batch(1, 10, 0), 4, 0) {
        Err(StorageError::StaleLeaderEpoch {
            epoch: 4,
            latest: 5,
        }) => {}
        other => panic!("epoch 4 after 5 must be refused: {other:?}"),
    }
    assert_eq!(log.end_offset(), 4, "the refused batch wrote nothing");
    let stored = read_all(&log);
    assert_eq!(
        stored.iter().map(|b| epoch_of(b)).collect::<Vec<_>>(),
        [3, 3, 5]
    );
    assert_eq!(
        log.epoch_history().expect("history"),
        starts(&[(3, 0), (5, 3)])
    );
    assert_eq!(log.end_offset_for_epoch(3).expect("end"), (3, 3));
    assert_eq!(log.end_offset_for_epoch(4).expect("end"), (3, 3));
    assert_eq!(log.end_offset_for_epoch(5).expect("end"), (5, 4));
}

#[test]
fn a_follower_log_holds_the_leaders_batches_byte_for_byte() {
    let (_tmp, leader_dir) = temp_log_dir();
    let (_tmp2, follower_dir) = temp_log_dir();
    let leader = Log::open(&leader_dir, small_config(Durability::Fsync)).expect("open");
    let follower = Log::open(&follower_dir, small_config(Durability::Fsync)).expect("open");
    for i in 0..20 {
        let epoch = if i < 12 { 1 } else { 2 };
        leader
            .append(
                stamped_batch(3, 40, i, producer(7, 0, (i * 3) as i32)),
                epoch,
                0,
            )
            .expect("leader append");
    }
    for stored in read_all(&leader) {
        follower
            .append_replicated(stored, 0)
            .expect("follower append");
    }
    assert_eq!(read_all(&follower), read_all(&leader));
    assert_eq!(
        follower.epoch_history().expect("history"),
        leader.epoch_history().expect("history")
    );
    // The follower learned the producer's sequence: as a new leader it recognises the
    // retry of the last batch and refuses a gap.
    let retry = stamped_batch(3, 40, 19, producer(7, 0, 57));
    let outcome = follower.append(retry, 3, 0).expect("retry");
    assert!(outcome.duplicate);
    assert!(matches!(
        follower.append(stamped_batch(1, 40, 0, producer(7, 0, 99)), 3, 0),
        Err(StorageError::OutOfOrderSequence { .. })
    ));
}

#[test]
fn a_replicated_batch_must_start_at_the_log_end() {
    let (_tmp, leader_dir) = temp_log_dir();
    let (_tmp2, follower_dir) = temp_log_dir();
    let leader = Log::open(&leader_dir, small_config(Durability::Fsync)).expect("open");
    let follower = Log::open(&follower_dir, small_config(Durability::Fsync)).expect("open");
    leader.append(batch(2, 10, 0), 1, 0).expect("append");
    leader.append(batch(2, 10, 0), 1, 0).expect("append");
    let stored = read_all(&leader);
    match follower.append_replicated(stored[1].clone(), 0) {
        Err(StorageError::ReplicaOffsetMismatch {
            expected: 0,
            received: 2,
        }) => {}
        other => panic!("a gap must be refused: {other:?}"),
    }
    assert_eq!(follower.end_offset(), 0);
}

#[test]
fn a_copy_damaged_on_the_way_is_refused_whole() {
    let (_tmp, leader_dir) = temp_log_dir();
    let (_tmp2, follower_dir) = temp_log_dir();
    let leader = Log::open(&leader_dir, small_config(Durability::Fsync)).expect("open");
    let follower = Log::open(&follower_dir, small_config(Durability::Fsync)).expect("open");
    leader.append(batch(3, 40, 0), 1, 0).expect("append");
    let stored = read_all(&leader).remove(0);
    // Replicas check the CRC, not each record: a flipped bit in a record's body (or
    // a cut copy) is still refused, and nothing is written.
    let mut flipped = stored.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x10;
    match follower.append_replicated(flipped, 0) {
        Err(StorageError::InvalidBatch(ferry_records::RecordError::CrcMismatch { .. })) => {}
        other => panic!("a damaged copy must be refused: {other:?}"),
    }
    match follower.append_replicated(&stored[..stored.len() - 1], 0) {
        Err(StorageError::InvalidBatch(ferry_records::RecordError::Truncated { .. })) => {}
        other => panic!("a cut copy must be refused: {other:?}"),
    }
    assert_eq!(follower.end_offset(), 0, "nothing written");
    follower
        .append_replicated(stored, 0)
        .expect("the intact copy");
    assert_eq!(read_all(&follower), read_all(&leader));
}

#[test]
fn truncation_and_reopening_keep_the_history_true() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, small_config(Durability::Fsync)).expect("open");
    log.append(batch(2, 10, 0), 1, 0).expect("append");
    log.append(batch(2, 10, 0), 2, 0).expect("append");
    log.append(batch(2, 10, 0), 4, 0).expect("append");
    assert_eq!(log.truncate_to(4).expect("truncate"), 4);
    assert_eq!(
        log.epoch_history().expect("history"),
        starts(&[(1, 0), (2, 2)])
    );
    // The next leader's epoch may be older than the removed one.
    log.append(batch(1, 10, 0), 3, 0)
        .expect("epoch 3 after the cut");
    log.close().expect("close");
    drop(log);
    let reopened = Log::open(&dir, small_config(Durability::Fsync)).expect("reopen");
    assert_eq!(
        reopened.epoch_history().expect("history"),
        starts(&[(1, 0), (2, 2), (3, 4)])
    );
    assert_eq!(reopened.latest_epoch().expect("latest"), Some(3));
}

#[test]
fn reset_starts_over_empty_at_a_later_offset_and_survives_a_reopen() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, small_config(Durability::Fsync)).expect("open");
    for _ in 0..30 {
        log.append(batch(1, 100, 0), 1, 0).expect("append");
    }
    assert!(log.segment_count() > 1);
    assert!(matches!(
        log.reset_to(30),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    log.reset_to(500).expect("reset");
    assert_eq!(
        (
            log.start_offset(),
            log.end_offset(),
            log.durable_end_offset()
        ),
        (500, 500, 500)
    );
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.latest_epoch().expect("latest"), None);

    let (_tmp2, leader_dir) = temp_log_dir();
    let leader = Log::open(&leader_dir, small_config(Durability::Fsync)).expect("open");
    leader.reset_to(500).expect("leader starts at 500 too");
    leader.append(batch(2, 10, 0), 6, 0).expect("append");
    for stored in read_all(&leader) {
        log.append_replicated(stored, 0).expect("replicated");
    }
    log.wait_durable(502).expect("durable");
    drop(log);
    let reopened = Log::open(&dir, small_config(Durability::Fsync)).expect("reopen");
    assert_eq!((reopened.start_offset(), reopened.end_offset()), (500, 502));
    assert_eq!(read_all(&reopened), read_all(&leader));
    assert_eq!(
        reopened.epoch_history().expect("history"),
        starts(&[(6, 500)])
    );
}

#[test]
fn a_lost_range_copied_from_the_leader_is_a_lost_range_here_too() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let follower = Log::open(&dir, config.clone()).expect("open");
    let lost = ferry_records::LostRange {
        base_offset: 0,
        count: 3,
        leader_epoch: 1,
        timestamp_ms: 0,
    };
    let gap = ferry_records::lost_range_batch(lost, ferry_records::HEADER_LEN).expect("batch");
    follower
        .append_replicated(gap, 0)
        .expect("append the leader's gap");
    assert_eq!(follower.lost_ranges().expect("lost"), vec![0..3_u64]);
    follower.close().expect("close");
    let follower = Log::open(&dir, config).expect("reopen");
    assert_eq!(
        follower.lost_ranges().expect("lost"),
        vec![0..3_u64],
        "persisted"
    );
}

#[test]
fn a_lost_range_starting_below_the_end_keeps_what_the_follower_holds() {
    // Found by ferry-sim: a leader whose damage was confined to offsets 3..5 sent that
    // lost range to a follower holding 0..4, which refused it and fetched again forever.
    let (_tmp, dir) = temp_log_dir();
    let follower = Log::open(&dir, small_config(Durability::Fsync)).expect("open");
    for _ in 0..4 {
        follower.append(batch(1, 10, 0), 1, 0).expect("append");
    }
    let gap = |base_offset, count| {
        let lost = ferry_records::LostRange {
            base_offset,
            count,
            leader_epoch: 1,
            timestamp_ms: 0,
        };
        ferry_records::lost_range_batch(lost, ferry_records::HEADER_LEN).expect("batch")
    };
    let held = follower.append_replicated(gap(1, 2), 0).expect("all held");
    assert!(held.duplicate);
    assert_eq!(follower.end_offset(), 4);
    follower
        .append_replicated(gap(3, 2), 0)
        .expect("the rest of the gap");
    assert_eq!(follower.end_offset(), 5);
    assert_eq!(follower.lost_ranges().expect("lost"), vec![4..5_u64]);
    let kept = read_all(&follower);
    assert_eq!(kept.len(), 5, "four records and the gap");
}
