//! Group commit for async callers.
//!
//! [`Log::wait_durable`] parks a thread per waiter, so every send or ack that waits for
//! an fsync costs a blocking-pool thread and two thread wake-ups. [`GroupCommit`] keeps
//! the waiting on the async side: at most one fsync round per log runs on a blocking
//! thread, and everyone waiting for it awaits a watch of the durable end offset.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_storage::{Log, StorageError};
use tokio::sync::watch;

/// What the last fsync round left behind.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// Everything below this offset is on disk.
    end: u64,
    /// The log failed; nothing will become durable any more.
    failure: Option<String>,
}

/// Async group commit over one log: callers append, then await [`GroupCommit::wait`].
#[derive(Debug)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: Arc<Log>,
    /// A round is running (or about to start) on a blocking thread.
    syncing: AtomicBool,
    durable: watch::Sender<Durable>,
}

impl GroupCommit {
    /// Commits for `log`, starting from what it already holds durably.
    pub fn new(log: Arc<Log>) -> Self {
        let durable = watch::Sender::new(Durable {
            end: log.durable_end_offset(),
            failure: None,
        });
        Self {
            inner: Arc::new(Inner {
                log,
                syncing: AtomicBool::new(false),
                durable,
            }),
        }
    }

    /// The log this commits.
    pub fn log(&self) -> &Arc<Log> {
        &self.inner.log
    }

    /// Returns once everything below `end_offset` is on disk, sharing fsync rounds with
    /// every concurrent caller. Dropping the future leaves a running round unharmed.
    pub async fn wait(&self, end_offset: u64) -> Result<(), StorageError> {
        let inner = &self.inner;
        let mut durable = inner.durable.subscribe();
        loop {
            {
                let now = durable.borrow_and_update();
                if let Some(reason) = &now.failure {
                    return Err(StorageError::Poisoned {
                        reason: reason.clone(),
                    });
                }
                if now.end >= end_offset || inner.log.durable_end_offset() >= end_offset {
                    return Ok(());
                }
            }
            let written = inner.log.end_offset();
            if end_offset > written {
                // No round could ever reach it.
                return Err(StorageError::OffsetOutOfRange {
                    requested: end_offset,
                    start: inner.log.start_offset(),
                    end: written,
                });
            }
            if !inner.syncing.swap(true, Ordering::AcqRel) {
                // The round owns its bookkeeping, so a caller that goes away mid-round
                // cannot leave `syncing` set with nobody to clear it.
                let round = Arc::clone(inner);
                tokio::task::spawn_blocking(move || round.sync_round());
            }
            if durable.changed().await.is_err() {
                return Err(StorageError::Poisoned {
                    reason: "the log was closed".into(),
                });
            }
        }
    }
}

impl Inner {
    /// One fsync of everything written so far, then the news to every waiter.
    fn sync_round(&self) {
        let outcome = self.log.flush();
        // Cleared before publishing: a waiter woken by this round and still short of
        // its offset must be able to start the next round, or it would wait forever.
        self.syncing.store(false, Ordering::Release);
        self.durable.send_modify(|durable| match outcome {
            Ok(end) => durable.end = durable.end.max(end),
            Err(err) => durable.failure = Some(err.to_string()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_records::BatchBuilder;
    use ferry_storage::{Durability, LogConfig};

    fn append(log: &Log, count: u32) -> u64 {
        let mut builder = BatchBuilder::new();
        for _ in 0..count {
            builder.push(None, b"payload", &[], 1);
        }
        let Some(batch) = builder.finish() else {
            panic!("empty batch");
        };
        let appended = log.append(batch, 0, 1).expect("append");
        appended.last_offset + 1
    }

    fn open(dir: &std::path::Path) -> Arc<Log> {
        let config = LogConfig {
            durability: Durability::Fsync,
            ..LogConfig::default()
        };
        Arc::new(Log::open(dir, config).expect("open log"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_waiters_all_become_durable_with_shared_rounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path());
        let commit = Arc::new(GroupCommit::new(Arc::clone(&log)));
        // Everything is written before anyone waits, so one round covers all of it.
        let ends: Vec<u64> = (0..64).map(|_| append(&log, 3)).collect();
        let fsyncs = log.fsync_count();
        let mut tasks = tokio::task::JoinSet::new();
        for end in ends {
            let commit = Arc::clone(&commit);
            tasks.spawn(async move { commit.wait(end).await.map(|()| end) });
        }
        let mut highest = 0;
        while let Some(joined) = tasks.join_next().await {
            let end = joined.expect("task").expect("durable");
            assert!(log.durable_end_offset() >= end);
            highest = highest.max(end);
        }
        assert_eq!(highest, log.end_offset());
        assert_eq!(
            log.fsync_count() - fsyncs,
            1,
            "64 waiters share one fsync round"
        );
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_stall_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path());
        let commit = GroupCommit::new(Arc::clone(&log));
        let end = append(&log, 1);
        // Start a round, then drop the waiter before it finishes.
        let abandoned = tokio::time::timeout(std::time::Duration::ZERO, commit.wait(end)).await;
        drop(abandoned);
        let later = append(&log, 1);
        commit.wait(later).await.expect("durable");
        assert!(log.durable_end_offset() >= later);
    }

    #[tokio::test]
    async fn an_offset_never_written_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path());
        let end = append(&log, 1);
        let commit = GroupCommit::new(Arc::clone(&log));
        let refused = commit.wait(end + 1).await;
        assert!(matches!(
            refused,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
    }

    #[tokio::test]
    async fn an_offset_already_durable_needs_no_round() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path());
        let end = append(&log, 2);
        log.flush().expect("flush");
        let fsyncs = log.fsync_count();
        let commit = GroupCommit::new(Arc::clone(&log));
        commit.wait(end).await.expect("durable");
        assert_eq!(log.fsync_count(), fsyncs);
    }
}
