//! Group commit, durability modes and poisoning after a failed write or fsync.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use common::*;
use ferry_storage::{Durability, FaultInjector, FaultPoint, Log, LogConfig, StorageError};

#[test]
fn concurrent_appends_share_fsyncs() {
    let (_tmp, dir) = temp_log_dir();
    let log = Arc::new(Log::open(&dir, LogConfig::default()).expect("open"));
    let threads = 16;
    let per_thread = 25;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (log, barrier) = (Arc::clone(&log), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    let outcome = log
                        .append(batch(2, 100, (t * 1000 + i) as i64), 1, 0)
                        .expect("append");
                    log.wait_durable(outcome.last_offset + 1).expect("durable");
                    assert!(log.durable_end_offset() > outcome.last_offset);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread");
    }
    let appends = (threads * per_thread) as u64;
    assert_eq!(log.end_offset(), appends * 2);
    assert_eq!(log.durable_end_offset(), appends * 2);
    assert_eq!(log.visible_end_offset(), appends * 2);
    assert!(
        log.fsync_count() < appends,
        "{} fsyncs for {appends} appends",
        log.fsync_count()
    );
    assert_eq!(read_all(&log).len() as u64, appends);
}

#[test]
fn visibility_follows_the_durability_mode() {
    for (durability, visible_before_flush) in [
        (Durability::Fsync, false),
        (Durability::Interval, true),
        (Durability::None, true),
    ] {
        let (_tmp, dir) = temp_log_dir();
        let log = Log::open(&dir, small_config(durability)).expect("open");
        log.append(batch(3, 10, 1), 1, 0).expect("append");
        assert_eq!(log.end_offset(), 3);
        assert_eq!(log.durable_end_offset(), 0);
        assert_eq!(
            log.visible_end_offset() == 3,
            visible_before_flush,
            "{durability:?}"
        );
        assert_eq!(log.flush().expect("flush"), 3);
        assert_eq!(log.visible_end_offset(), 3);
        assert!(matches!(
            log.wait_durable(4),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
    }
}

#[test]
fn rolling_in_fsync_mode_makes_the_old_segment_durable() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, small_config(Durability::Fsync)).expect("open");
    while log.segment_count() < 3 {
        log.append(batch(1, 200, 1), 1, 0).expect("append");
    }
    assert!(
        log.durable_end_offset() > 0,
        "the roll fsynced the sealed segments"
    );
    assert!(log.durable_end_offset() < log.end_offset());
}

/// Fails every operation at `point` once armed.
#[derive(Debug, Default)]
struct FailAfterArmed {
    point: Option<FaultPoint>,
    armed: AtomicBool,
    hits: AtomicUsize,
    /// Fail as a full disk does (ENOSPC) rather than with another I/O error.
    full: bool,
}

impl FaultInjector for FailAfterArmed {
    fn check(&self, point: FaultPoint, _path: &Path) -> std::io::Result<()> {
        if self.armed.load(Ordering::SeqCst) && Some(point) == self.point {
            self.hits.fetch_add(1, Ordering::SeqCst);
            if self.full {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            return Err(std::io::Error::other("injected failure"));
        }
        Ok(())
    }
}

#[test]
fn a_full_disk_refuses_a_write_without_poisoning_and_writes_resume_once_space_is_back() {
    let (_tmp, dir) = temp_log_dir();
    let faults = Arc::new(FailAfterArmed {
        point: Some(FaultPoint::SegmentWrite),
        full: true,
        ..FailAfterArmed::default()
    });
    let config = small_config(Durability::Fsync);
    let log = Log::open_with_faults(&dir, config.clone(), faults.clone()).expect("open");
    let kept = batch(2, 10, 1);
    log.append(kept.clone(), 1, 0).expect("append");
    log.wait_durable(2).expect("durable");
    faults.armed.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(matches!(
            log.append(batch(1, 1, 2), 1, 0),
            Err(StorageError::DiskFull { .. })
        ));
    }
    assert_eq!(
        (log.end_offset(), log.failure()),
        (2, None),
        "nothing written, not poisoned"
    );
    faults.armed.store(false, Ordering::SeqCst);
    let next = batch(1, 1, 3);
    let outcome = log.append(next.clone(), 1, 0).expect("space is back");
    assert_eq!(outcome.base_offset, 2);
    log.wait_durable(3).expect("durable");
    drop(log);
    let log = Log::open(&dir, config).expect("reopen");
    let stored: Vec<Vec<u8>> = read_all(&log).iter().map(|b| unstamped(b)).collect();
    assert_eq!(stored, vec![kept, next]);
}

#[test]
fn failed_fsync_poisons_the_log() {
    let (_tmp, dir) = temp_log_dir();
    let faults = Arc::new(FailAfterArmed {
        point: Some(FaultPoint::SegmentSync),
        ..FailAfterArmed::default()
    });
    let log = Log::open_with_faults(&dir, LogConfig::default(), faults.clone()).expect("open");
    let first = log.append(batch(2, 10, 1), 1, 0).expect("append");
    log.wait_durable(first.last_offset + 1).expect("durable");
    let durable = log.durable_end_offset();

    faults.armed.store(true, Ordering::SeqCst);
    let second = log.append(batch(2, 10, 2), 1, 0).expect("write succeeds");
    let err = log
        .wait_durable(second.last_offset + 1)
        .expect_err("fsync fails");
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert!(log.failure().is_some());
    faults.armed.store(false, Ordering::SeqCst);

    assert!(matches!(
        log.append(batch(1, 1, 3), 1, 0),
        Err(StorageError::Poisoned { .. })
    ));
    assert!(matches!(
        log.wait_durable(second.last_offset + 1),
        Err(StorageError::Poisoned { .. })
    ));
    assert!(matches!(log.flush(), Err(StorageError::Poisoned { .. })));
    assert!(matches!(
        log.truncate_to(0),
        Err(StorageError::Poisoned { .. })
    ));
    assert!(matches!(
        log.delete_before(u64::MAX),
        Err(StorageError::Poisoned { .. })
    ));
    assert_eq!(log.durable_end_offset(), durable);
    assert_eq!(log.visible_end_offset(), durable);
    assert!(log.close().is_err());
    assert_eq!(faults.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn failed_write_poisons_the_log_and_reopen_recovers() {
    let (_tmp, dir) = temp_log_dir();
    let faults = Arc::new(FailAfterArmed {
        point: Some(FaultPoint::SegmentWrite),
        ..FailAfterArmed::default()
    });
    let config = small_config(Durability::Interval);
    let log = Log::open_with_faults(&dir, config.clone(), faults.clone()).expect("open");
    let kept = batch(2, 10, 1);
    log.append(kept.clone(), 1, 0).expect("append");
    faults.armed.store(true, Ordering::SeqCst);
    assert!(matches!(
        log.append(batch(1, 1, 2), 1, 0),
        Err(StorageError::Io { .. })
    ));
    faults.armed.store(false, Ordering::SeqCst);
    assert!(matches!(
        log.append(batch(1, 1, 3), 1, 0),
        Err(StorageError::Poisoned { .. })
    ));
    assert_eq!(log.end_offset(), 2);
    drop(log);

    let log = Log::open(&dir, config).expect("reopen");
    assert_eq!(log.failure(), None);
    assert_eq!(
        read_all(&log)
            .iter()
            .map(|b| unstamped(b))
            .collect::<Vec<_>>(),
        vec![kept]
    );
    assert_eq!(
        log.append(batch(1, 1, 4), 1, 0)
            .expect("append")
            .base_offset,
        2
    );
}

#[test]
fn fsync_failure_during_roll_poisons() {
    let (_tmp, dir) = temp_log_dir();
    let faults = Arc::new(FailAfterArmed {
        point: Some(FaultPoint::SegmentSync),
        ..FailAfterArmed::default()
    });
    let log = Log::open_with_faults(&dir, small_config(Durability::Interval), faults.clone())
        .expect("open");
    log.append(batch(1, 900, 1), 1, 0).expect("append");
    faults.armed.store(true, Ordering::SeqCst);
    assert!(
        log.append(batch(1, 900, 2), 1, 0).is_err(),
        "roll fsync fails"
    );
    assert!(log.failure().is_some());
    assert_eq!(log.durable_end_offset(), 0);
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn closed_log_refuses_work() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, LogConfig::default()).expect("open");
    log.append(batch(1, 1, 1), 1, 0).expect("append");
    log.close().expect("close");
    log.close().expect("close is idempotent");
    assert_eq!(log.durable_end_offset(), 1);
    assert!(matches!(
        log.append(batch(1, 1, 1), 1, 0),
        Err(StorageError::Closed)
    ));
    assert!(matches!(log.read(0, 10, 1), Err(StorageError::Closed)));
    assert!(matches!(log.flush(), Err(StorageError::Closed)));
    assert!(matches!(
        log.delete_before(u64::MAX),
        Err(StorageError::Closed)
    ));
}

#[test]
fn log_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Log>();
}

#[test]
fn readers_never_see_partial_batches() {
    let (_tmp, dir) = temp_log_dir();
    let log = Arc::new(Log::open(&dir, small_config(Durability::None)).expect("open"));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (log, done) = (Arc::clone(&log), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::SeqCst) || reads == 0 {
                    let end = log.end_offset();
                    let mut offset = log.start_offset();
                    while offset < end {
                        let r = log.read(offset, 700, end).expect("read");
                        for b in ferry_records::Batches::new(&r.bytes) {
                            let b = b.expect("whole batch");
                            b.verify_crc().expect("crc");
                            assert_eq!(b.header.base_offset, offset);
                            offset = b.header.next_offset();
                        }
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    for i in 0..400 {
        log.append(batch(1 + i % 5, 64, i as i64), 1, 0)
            .expect("append");
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        assert!(reader.join().expect("reader") > 0);
    }
}
