//! One partition of a topic: a storage log plus the notification that wakes long polls.

use std::path::Path;
use std::sync::Arc;

use ferry_storage::{AppendOutcome, DiskHooks, Log, LogConfig, ReadResult, StorageError};
use tokio::sync::watch;

use crate::error::{BrokerError, BrokerResult};
use crate::topic::DurabilitySetting;

/// Leader epoch stamped on batches by a standalone host (it is always the leader).
pub const STANDALONE_LEADER_EPOCH: u64 = 0;

/// A partition log and its readers' wake-up channel.
pub struct Partition {
    topic: Arc<str>,
    index: u32,
    log: Arc<Log>,
    durability: DurabilitySetting,
    visible_end: watch::Sender<u64>,
}

impl Partition {
    /// Opens (recovering if needed) the log in `dir`. Blocking: call from a blocking thread.
    pub fn open(
        topic: Arc<str>,
        index: u32,
        dir: &Path,
        config: LogConfig,
        durability: DurabilitySetting,
        hooks: DiskHooks,
    ) -> BrokerResult<Self> {
        let log = Log::open_with_hooks(dir, config, hooks)
            .map_err(|err| BrokerError::storage(&topic, index, err))?;
        let (visible_end, _) = watch::channel(log.visible_end_offset());
        Ok(Self {
            topic,
            index,
            log: Arc::new(log),
            durability,
            visible_end,
        })
    }

    /// Partition index within its topic.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The underlying log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    fn error(&self, err: StorageError) -> BrokerError {
        BrokerError::storage(&self.topic, self.index, err)
    }

    /// Appends one encoded batch and, with fsync durability, waits until it is on disk
    /// (sharing the fsync with concurrent appends).
    pub async fn append(&self, batch: Vec<u8>, now_ms: i64) -> BrokerResult<AppendOutcome> {
        let log = Arc::clone(&self.log);
        let wait_for_disk = self.durability == DurabilitySetting::Fsync;
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = log.append(batch, STANDALONE_LEADER_EPOCH, now_ms)?;
            if wait_for_disk {
                log.wait_durable(outcome.last_offset + 1)?;
            }
            Ok::<_, StorageError>(outcome)
        })
        .await
        .map_err(|err| BrokerError::Internal(format!("append task failed: {err}")))?
        .map_err(|err| self.error(err))?;
        self.publish_visible_end();
        Ok(outcome)
    }

    /// Flushes written data to disk (interval durability and shutdown).
    pub async fn flush(&self) -> BrokerResult<u64> {
        let log = Arc::clone(&self.log);
        let durable = tokio::task::spawn_blocking(move || log.flush())
            .await
            .map_err(|err| BrokerError::Internal(format!("flush task failed: {err}")))?
            .map_err(|err| self.error(err))?;
        self.publish_visible_end();
        Ok(durable)
    }

    fn publish_visible_end(&self) {
        let visible = self.log.visible_end_offset();
        self.visible_end.send_if_modified(|current| {
            let advanced = visible > *current;
            if advanced {
                *current = visible;
            }
            advanced
        });
    }

    /// Reads whole batches from `offset` below the visible end.
    ///
    /// An offset at or past the visible end (but not past the log end) reads nothing:
    /// the data is not acknowledged yet. Past the end or before the start is an error.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> BrokerResult<ReadResult> {
        let visible = self.log.visible_end_offset();
        let end = self.log.end_offset();
        if offset >= visible && offset <= end {
            return Ok(ReadResult {
                bytes: Vec::new(),
                batches: 0,
                next_offset: offset,
            });
        }
        let log = Arc::clone(&self.log);
        tokio::task::spawn_blocking(move || log.read(offset, max_bytes, visible))
            .await
            .map_err(|err| BrokerError::Internal(format!("read task failed: {err}")))?
            .map_err(|err| self.error(err))
    }

    /// First offset whose record timestamp is at least `timestamp_ms`, if it is visible.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> BrokerResult<Option<(u64, i64)>> {
        let log = Arc::clone(&self.log);
        let visible = self.log.visible_end_offset();
        let found = tokio::task::spawn_blocking(move || log.offset_for_timestamp(timestamp_ms))
            .await
            .map_err(|err| BrokerError::Internal(format!("time index task failed: {err}")))?
            .map_err(|err| self.error(err))?;
        Ok(found.filter(|(offset, _)| *offset < visible))
    }

    /// One past the last offset consumers may read.
    pub fn high_watermark(&self) -> u64 {
        self.log.visible_end_offset()
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        self.log.start_offset()
    }

    /// A receiver that changes whenever the visible end advances.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.visible_end.subscribe()
    }

    /// Flushes and closes the log. Blocking.
    pub fn close(&self) -> BrokerResult<()> {
        self.log.close().map_err(|err| self.error(err))
    }
}
