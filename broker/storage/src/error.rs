//! The storage layer's one error type.

use std::path::PathBuf;

use ferry_records::RecordError;

/// Everything that can go wrong in the storage engine, with enough context
/// (paths, offsets) to act on it without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system I/O call failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the engine was doing, including the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The disk (or the quota) is full: the write was refused and undone, the log is
    /// as it was, and writes succeed again once space is freed.
    #[error("no space left while {context}: {reason}; nothing was written")]
    DiskFull {
        /// What the engine was doing, including the path.
        context: String,
        /// The operating system's words.
        reason: String,
    },
    /// A write or fsync failed earlier; the log accepts nothing more until reopened.
    #[error("log is poisoned: {reason}")]
    Poisoned {
        /// The failure that poisoned the log.
        reason: String,
    },
    /// The batch failed validation.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] RecordError),
    /// The batch is larger than `max_batch_bytes`.
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Encoded size of the batch.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The requested offset is not stored.
    #[error("offset {requested} is out of range: log holds [{start}, {end})")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// First offset still stored.
        start: u64,
        /// Next offset to be assigned.
        end: u64,
    },
    /// An idempotent producer skipped or repeated sequence numbers.
    #[error(
        "out of order sequence from producer {producer_id}: expected {expected}, received {received}"
    )]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The base sequence that would have been accepted.
        expected: i32,
        /// The base sequence that arrived.
        received: i32,
    },
    /// A producer with an older epoch tried to write after a newer one did.
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current_epoch}")]
    ProducerFenced {
        /// The producer.
        producer_id: i64,
        /// The epoch in the batch.
        epoch: i32,
        /// The newest epoch seen.
        current_epoch: i32,
    },
    /// A file holds bytes that cannot be what the engine wrote.
    #[error("corrupt file {} at position {position}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte position of the problem.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// A read found a batch whose bytes changed since they were written (its CRC fails).
    /// [`crate::Log::read`] confines it to a lost range and reads again; callers see this
    /// only if that failed.
    #[error("damaged batch at offset {offset} in {} at position {position}: {reason}", path.display())]
    DamagedBatch {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the batch.
        position: u64,
        /// The offset the batch holds.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is outside its bounds.
    #[error("invalid storage config: {0}")]
    InvalidConfig(String),
    /// The log was closed.
    #[error("log is closed")]
    Closed,
    /// An append carried a leader epoch older than one that already appended: its
    /// writer is a deposed leader.
    #[error("leader epoch {epoch} is older than epoch {latest}, which already appended")]
    StaleLeaderEpoch {
        /// The epoch of the refused append.
        epoch: u64,
        /// The newest epoch in the log's history.
        latest: u64,
    },
    /// A replicated batch does not start at the log end.
    #[error("replicated batch starts at offset {received}, the log ends at {expected}")]
    ReplicaOffsetMismatch {
        /// The log end.
        expected: u64,
        /// The batch's base offset.
        received: u64,
    },
}

impl StorageError {
    /// Whether the write was refused for a full disk (nothing written; retriable once
    /// space is freed).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::DiskFull { .. })
    }
}

/// Attaches a context message to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    /// Converts the error into [`StorageError::Io`] with the context `what()`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::Io {
            context: what(),
            source,
        })
    }
}
