//! The metadata store: topics, their settings, committed group offsets, producer ids.
//!
//! One trait, [`MetadataStore`], with the semantics of etcd's key-value API (revisions,
//! compare-and-swap transactions, prefix watches) so the same broker code runs on
//! the embedded store (standalone) and on etcd (clusters). The keyspace is in
//! `docs/etcd-keyspace.md`.

mod embedded;
mod etcd;
pub mod keys;

use std::future::Future;
use std::pin::Pin;

pub use embedded::{EmbeddedConfig, EmbeddedStore};
pub use etcd::{EtcdConfig, EtcdConnection, EtcdStore, EtcdTls, EtcdUser};
use tokio::sync::broadcast;

/// A boxed future, so the trait stays usable as `dyn MetadataStore`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store-wide, strictly increasing version number; each committed write gets a new one.
pub type Revision = u64;

/// One stored key with its value and the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes (JSON for Ferry's own records).
    pub value: Vec<u8>,
    /// Revision of the write that produced this value.
    pub mod_revision: Revision,
}

/// A condition a transaction checks before applying its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key was last written at exactly this revision; `None` means the key is absent.
    ModRevision {
        /// Key to check.
        key: String,
        /// Expected revision, or `None` for "does not exist".
        revision: Option<Revision>,
    },
}

/// One write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set a key.
    Put {
        /// Key to set.
        key: String,
        /// New value.
        value: Vec<u8>,
    },
    /// Remove a key (no error if absent).
    Delete {
        /// Key to remove.
        key: String,
    },
    /// Remove every key starting with the prefix.
    DeletePrefix {
        /// Prefix of the keys to remove.
        prefix: String,
    },
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every comparison held and the operations were applied.
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: Revision,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was set.
    Put(KeyValue),
    /// A key was removed.
    Delete {
        /// The removed key.
        key: String,
        /// Revision of the removal.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The store could not be opened, read or written.
    #[error("metadata store {operation} failed: {reason}")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// The underlying error, as text.
        reason: String,
    },
    /// A stored value could not be decoded.
    #[error("metadata key {key} holds an unreadable value: {reason}")]
    Decode {
        /// The key whose value is bad.
        key: String,
        /// Why it could not be decoded.
        reason: String,
    },
    /// A transaction kept losing compare-and-swap races.
    #[error("metadata key {key} is contended; gave up after {attempts} attempts")]
    Contended {
        /// Key being updated.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The store is not reachable now; retry later.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
}

/// The metadata store contract shared by the embedded store and etcd.
pub trait MetadataStore: Send + Sync + 'static {
    /// Reads one key.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, MetaError>>;

    /// Reads every key starting with `prefix`, in key order.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, MetaError>>;

    /// Applies `ops` atomically if every comparison holds.
    fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> BoxFuture<'_, Result<TxnOutcome, MetaError>>;

    /// Subscribes to every later change of keys under `prefix`. A receiver that falls
    /// behind gets `RecvError::Lagged`, and one whose store lost the change history
    /// (etcd compaction) gets `RecvError::Closed`: either should re-read with
    /// [`MetadataStore::list`] and watch again.
    fn watch(&self, prefix: &str) -> Watch;
}

/// Changes under one prefix, as delivered to a watcher.
pub struct Watch {
    prefix: String,
    events: broadcast::Receiver<WatchEvent>,
}

impl Watch {
    /// Waits for the next change under the prefix.
    pub async fn next(&mut self) -> Result<WatchEvent, broadcast::error::RecvError> {
        loop {
            let event = self.events.recv().await?;
            if event.key().starts_with(&self.prefix) {
                return Ok(event);
            }
        }
    }
}

/// Convenience operations built on the trait.
pub trait MetadataStoreExt: MetadataStore {
    /// Sets one key unconditionally.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<Revision, MetaError>> {
        Box::pin(async move {
            let ops = vec![Op::Put {
                key: key.to_owned(),
                value,
            }];
            Ok(self.txn(Vec::new(), ops).await?.revision)
        })
    }

    /// Sets `key` only if it does not exist; `Ok(false)` when it does.
    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<bool, MetaError>> {
        Box::pin(async move {
            let compare = vec![Compare::ModRevision {
                key: key.to_owned(),
                revision: None,
            }];
            let ops = vec![Op::Put {
                key: key.to_owned(),
                value,
            }];
            Ok(self.txn(compare, ops).await?.succeeded)
        })
    }

    /// Removes one key unconditionally.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Revision, MetaError>> {
        Box::pin(async move {
            let ops = vec![Op::Delete {
                key: key.to_owned(),
            }];
            Ok(self.txn(Vec::new(), ops).await?.revision)
        })
    }
}

impl<T: MetadataStore + ?Sized> MetadataStoreExt for T {}

/// Decodes a JSON value read from `key`.
pub fn decode_json<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &[u8],
) -> Result<T, MetaError> {
    serde_json::from_slice(value).map_err(|err| MetaError::Decode {
        key: key.to_owned(),
        reason: err.to_string(),
    })
}

/// Encodes a value as JSON for storing.
pub fn encode_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}
