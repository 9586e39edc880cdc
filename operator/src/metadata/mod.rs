//! Access to the metadata store the brokers share (etcd), behind a small trait so
//! reconcilers are tested against an in-memory fake and run against etcd.
//!
//! Writes are compare-and-swap: a create succeeds only on an absent key, a replace or
//! delete only while the key still has the revision the caller read. The brokers write
//! the same keyspace, so a blind write could undo theirs.

mod etcd;
mod memory;

use std::future::Future;

pub use etcd::{EtcdMetadata, EtcdSettings, EtcdTls};
pub use memory::MemoryMetadata;

/// One key and its value as read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full key.
    pub key: String,
    /// The value bytes (JSON for every Ferry key).
    pub value: Vec<u8>,
    /// The store revision that last wrote the key; the token of a compare-and-swap.
    pub mod_revision: i64,
}

/// A failure to talk to the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The store could not be reached or refused the request.
    #[error("metadata store request failed: {0}")]
    Store(String),
    /// The request did not finish within the configured timeout.
    #[error("metadata store request timed out after {timeout_ms} ms")]
    Timeout {
        /// The timeout that passed.
        timeout_ms: u64,
    },
    /// A prefix holds more keys than the configured list limit.
    #[error("more than {limit} keys under {prefix}; raise --etcd-list-limit")]
    TooManyKeys {
        /// The prefix listed.
        prefix: String,
        /// The limit in force.
        limit: usize,
    },
}

/// What the operator needs of the metadata store.
pub trait MetadataClient: Send + Sync + 'static {
    /// The entry at `key`, if present.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Entry>, MetaError>> + Send;

    /// Every entry whose key starts with `prefix`, in key order; fails when there are
    /// more than the client's list limit.
    fn list_prefix(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<Entry>, MetaError>> + Send;

    /// Writes `value` at `key` only if the key is absent (`create_revision == 0`).
    /// Returns whether it was written.
    fn create(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<bool, MetaError>> + Send;

    /// Replaces the value at `key` only if its revision is still `mod_revision`.
    /// Returns whether it was written.
    fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        mod_revision: i64,
    ) -> impl Future<Output = Result<bool, MetaError>> + Send;

    /// Deletes `key` only if its revision is still `mod_revision`, recording nothing:
    /// for keys other than topic and queue records. Returns whether it was deleted.
    fn delete_key(
        &self,
        key: &str,
        mod_revision: i64,
    ) -> impl Future<Output = Result<bool, MetaError>> + Send;

    /// Deletes `key` only if its revision is still `mod_revision`, writing `tombstone`
    /// (key, value) in the same transaction: the brokers remove a resource's data only
    /// when its deletion is recorded. Returns whether it was deleted.
    fn delete(
        &self,
        key: &str,
        mod_revision: i64,
        tombstone: (String, Vec<u8>),
    ) -> impl Future<Output = Result<bool, MetaError>> + Send;
}
