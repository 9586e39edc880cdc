//! The embedded metadata store for standalone mode: one redb file under the data
//! directory, with etcd-like revisions, transactions and in-process watches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use super::{
    BoxFuture, Compare, KeyValue, MetaError, MetadataStore, Op, Revision, TxnOutcome, Watch,
    WatchEvent,
};

/// Key → (mod revision, value) as `[u64 LE revision][value bytes]`.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Store-wide counters; holds the current revision.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const REVISION: &str = "revision";
const REVISION_LEN: usize = 8;

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The database file.
    pub path: PathBuf,
    /// Watch events buffered per watcher before it is told it lagged.
    pub watch_buffer: usize,
}

/// The embedded, single-machine metadata store.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    events: broadcast::Sender<WatchEvent>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store file.
    pub fn open(config: &EmbeddedConfig) -> Result<Self, MetaError> {
        if let Some(parent) = config.path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| backend("create directory", err))?;
        }
        let db = Database::create(&config.path).map_err(|err| backend("open", err))?;
        let write = db.begin_write().map_err(|err| backend("open", err))?;
        write.open_table(KV).map_err(|err| backend("open", err))?;
        write
            .open_table(COUNTERS)
            .map_err(|err| backend("open", err))?;
        write.commit().map_err(|err| backend("open", err))?;
        let (events, _) = broadcast::channel(config.watch_buffer.max(1));
        Ok(Self {
            db: Arc::new(db),
            events,
        })
    }

    /// Path of the database file inside a data directory.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        data_dir.join("metadata.redb")
    }

    async fn blocking<T, F>(&self, operation: &'static str, work: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, MetaError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|err| backend(operation, err))?
    }
}

fn backend(operation: &'static str, err: impl std::fmt::Display) -> MetaError {
    MetaError::Backend {
        operation,
        reason: err.to_string(),
    }
}

fn decode_entry(key: &str, raw: &[u8]) -> Result<KeyValue, MetaError> {
    if raw.len() < REVISION_LEN {
        return Err(MetaError::Decode {
            key: key.to_owned(),
            reason: "entry shorter than its revision".into(),
        });
    }
    let (revision, value) = raw.split_at(REVISION_LEN);
    let mut bytes = [0u8; REVISION_LEN];
    bytes.copy_from_slice(revision);
    Ok(KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        mod_revision: u64::from_le_bytes(bytes),
    })
}

fn encode_entry(revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(REVISION_LEN + value.len());
    raw.extend_from_slice(&revision.to_le_bytes());
    raw.extend_from_slice(value);
    raw
}

fn list_in(db: &Database, prefix: &str) -> Result<Vec<KeyValue>, MetaError> {
    let read = db.begin_read().map_err(|err| backend("list", err))?;
    let table = read.open_table(KV).map_err(|err| backend("list", err))?;
    let mut found = Vec::new();
    for entry in table.range(prefix..).map_err(|err| backend("list", err))? {
        let (key, value) = entry.map_err(|err| backend("list", err))?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        found.push(decode_entry(key, value.value())?);
    }
    Ok(found)
}

/// Applies a transaction; returns the outcome and the events it produced.
fn apply_txn(
    db: &Database,
    compares: &[Compare],
    ops: Vec<Op>,
) -> Result<(TxnOutcome, Vec<WatchEvent>), MetaError> {
    let write = db
        .begin_write()
        .map_err(|err| backend("transaction", err))?;
    let mut events = Vec::new();
    let outcome = {
        let mut kv = write
            .open_table(KV)
            .map_err(|err| backend("transaction", err))?;
        let mut counters = write
            .open_table(COUNTERS)
            .map_err(|err| backend("transaction", err))?;
        let current = counters
            .get(REVISION)
            .map_err(|err| backend("transaction", err))?
            .map_or(0, |guard| guard.value());
        for compare in compares {
            let Compare::ModRevision { key, revision } = compare;
            let found = match kv
                .get(key.as_str())
                .map_err(|err| backend("transaction", err))?
            {
                Some(raw) => Some(decode_entry(key, raw.value())?.mod_revision),
                None => None,
            };
            if found != *revision {
                return Ok((
                    TxnOutcome {
                        succeeded: false,
                        revision: current,
                    },
                    events,
                ));
            }
        }
        let revision = if ops.is_empty() { current } else { current + 1 };
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    kv.insert(key.as_str(), encode_entry(revision, &value).as_slice())
                        .map_err(|err| backend("transaction", err))?;
                    events.push(WatchEvent::Put(KeyValue {
                        key,
                        value,
                        mod_revision: revision,
                    }));
                }
                Op::Delete { key } => {
                    let removed = kv
                        .remove(key.as_str())
                        .map_err(|err| backend("transaction", err))?
                        .is_some();
                    if removed {
                        events.push(WatchEvent::Delete { key, revision });
                    }
                }
                Op::DeletePrefix { prefix } => {
                    let mut removed = Vec::new();
                    kv.retain_in(prefix.as_str().., |key, _| {
                        let matches = key.starts_with(prefix.as_str());
                        if matches {
                            removed.push(key.to_owned());
                        }
                        !matches
                    })
                    .map_err(|err| backend("transaction", err))?;
                    events.extend(
                        removed
                            .into_iter()
                            .map(|key| WatchEvent::Delete { key, revision }),
                    );
                }
            }
        }
        counters
            .insert(REVISION, revision)
            .map_err(|err| backend("transaction", err))?;
        TxnOutcome {
            succeeded: true,
            revision,
        }
    };
    write.commit().map_err(|err| backend("commit", err))?;
    Ok((outcome, events))
}

impl MetadataStore for EmbeddedStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, MetaError>> {
        let key = key.to_owned();
        Box::pin(self.blocking("get", move |db| {
            let read = db.begin_read().map_err(|err| backend("get", err))?;
            let table = read.open_table(KV).map_err(|err| backend("get", err))?;
            match table.get(key.as_str()).map_err(|err| backend("get", err))? {
                Some(raw) => Ok(Some(decode_entry(&key, raw.value())?)),
                None => Ok(None),
            }
        }))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, MetaError>> {
        let prefix = prefix.to_owned();
        Box::pin(self.blocking("list", move |db| list_in(db, &prefix)))
    }

    fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> BoxFuture<'_, Result<TxnOutcome, MetaError>> {
        Box::pin(async move {
            let (outcome, events) = self
                .blocking("transaction", move |db| apply_txn(db, &compares, ops))
                .await?;
            for event in events {
                // No receivers is fine: nobody watches right now.
                let _ = self.events.send(event);
            }
            Ok(outcome)
        })
    }

    fn watch(&self, prefix: &str) -> Watch {
        Watch {
            prefix: prefix.to_owned(),
            events: self.events.subscribe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MetadataStoreExt;

    fn open(dir: &Path) -> EmbeddedStore {
        EmbeddedStore::open(&EmbeddedConfig {
            path: EmbeddedStore::default_path(dir),
            watch_buffer: 16,
        })
        .expect("open store")
    }

    #[tokio::test]
    async fn put_get_list_delete_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.put("/a/1", b"one".to_vec()).await.expect("put");
        store.put("/a/2", b"two".to_vec()).await.expect("put");
        store.put("/b/1", b"other".to_vec()).await.expect("put");
        let listed = store.list("/a/").await.expect("list");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].value, b"two");
        store.delete("/a/1").await.expect("delete");
        drop(store);

        let store = open(dir.path());
        assert!(store.get("/a/1").await.expect("get").is_none());
        let two = store.get("/a/2").await.expect("get").expect("present");
        assert_eq!(two.value, b"two");
        assert_eq!(two.mod_revision, 2);
    }

    #[tokio::test]
    async fn compare_and_swap_on_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let create = |value: &str| Op::Put {
            key: "/k".into(),
            value: value.as_bytes().to_vec(),
        };
        let absent = Compare::ModRevision {
            key: "/k".into(),
            revision: None,
        };
        let first = store
            .txn(vec![absent.clone()], vec![create("a")])
            .await
            .expect("txn");
        assert!(first.succeeded);
        let again = store
            .txn(vec![absent], vec![create("b")])
            .await
            .expect("txn");
        assert!(!again.succeeded);
        let at_first = Compare::ModRevision {
            key: "/k".into(),
            revision: Some(first.revision),
        };
        assert!(
            store
                .txn(vec![at_first], vec![create("c")])
                .await
                .expect("txn")
                .succeeded
        );
        assert_eq!(
            store.get("/k").await.expect("get").expect("set").value,
            b"c"
        );
    }

    #[tokio::test]
    async fn watch_sees_changes_under_its_prefix_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let mut watch = store.watch("/a/");
        store.put("/b/x", b"ignored".to_vec()).await.expect("put");
        store.put("/a/x", b"seen".to_vec()).await.expect("put");
        store
            .txn(
                Vec::new(),
                vec![Op::DeletePrefix {
                    prefix: "/a/".into(),
                }],
            )
            .await
            .expect("txn");
        match watch.next().await.expect("event") {
            WatchEvent::Put(kv) => assert_eq!(kv.key, "/a/x"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            watch.next().await.expect("event"),
            WatchEvent::Delete { key, .. } if key == "/a/x"
        ));
    }
}
