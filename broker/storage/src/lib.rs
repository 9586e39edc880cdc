//! Ferry's storage engine: one append-only, segmented log per partition replica.
//!
//! A [`Log`] is a directory of segment files holding record batches in the
//! `ferry-records` format, with a sparse offset index and a time index per segment,
//! explicit [`Durability`], group commit, crash recovery that cuts a torn tail, and
//! idempotent-producer deduplication. The byte-level format and the recovery rules
//! are in `docs/storage-format.md`.
//!
//! Invariant: storage knows nothing of gRPC, protobuf, async runtimes, etcd or
//! Kubernetes. Everything here is synchronous std I/O; the broker calls it from
//! blocking tasks. Storage has no threads or timers: the caller drives `Interval`
//! flushing and retention.

mod checked;
mod config;
mod disk;
mod epochs;
mod error;
mod index;
mod log;
mod page_cache;
mod producer_state;
mod read;
mod recovery;
mod repair;
mod scan;
mod segment;

pub use checked::{CheckedBatch, check_batch};
pub use config::{
    Durability, INDEX_INTERVAL_BYTES_MAX, LogConfig, MAX_BATCH_BYTES_MAX, MAX_PRODUCERS_MAX,
    PAGE_CACHE_WINDOW_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use disk::{DiskHooks, FaultInjector, FaultPoint, SyncObserver};
pub use epochs::EpochStart;
pub use error::StorageError;
pub use log::{AppendOutcome, Log, RetentionOutcome};
pub use read::{BatchRange, ReadResult};
pub use repair::{LostRecords, forget_torn_tail};
