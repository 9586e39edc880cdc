//! An in-memory [`MetadataClient`] with etcd's revision semantics, for tests and for
//! trying the operator without etcd.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Entry, MetaError, MetadataClient};

/// A shared in-memory key-value store; clones see the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryMetadata {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    revision: i64,
    entries: BTreeMap<String, (Vec<u8>, i64)>,
}

impl MemoryMetadata {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` at `key` unconditionally, as another writer (a broker, an
    /// operator of the store) would.
    pub fn set(&self, key: &str, value: impl Into<Vec<u8>>) {
        let mut inner = self.lock();
        inner.revision += 1;
        let revision = inner.revision;
        inner
            .entries
            .insert(key.to_owned(), (value.into(), revision));
    }

    /// Removes `key` unconditionally.
    pub fn remove(&self, key: &str) {
        let mut inner = self.lock();
        inner.revision += 1;
        inner.entries.remove(key);
    }

    /// The value at `key`, if any.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().entries.get(key).map(|(value, _)| value.clone())
    }

    /// Every key, in order.
    pub fn keys(&self) -> Vec<String> {
        self.lock().entries.keys().cloned().collect()
    }

    // A std mutex: nothing awaits while it is held.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry(&self, key: &str) -> Option<Entry> {
        self.lock().entries.get(key).map(|(value, rev)| Entry {
            key: key.to_owned(),
            value: value.clone(),
            mod_revision: *rev,
        })
    }
}

impl MetadataClient for MemoryMetadata {
    async fn get(&self, key: &str) -> Result<Option<Entry>, MetaError> {
        Ok(self.entry(key))
    }

    async fn list_prefix(&self, prefix: &str) -> Result<Vec<Entry>, MetaError> {
        let inner = self.lock();
        Ok(inner
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, (value, rev))| Entry {
                key: key.clone(),
                value: value.clone(),
                mod_revision: *rev,
            })
            .collect())
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<bool, MetaError> {
        let mut inner = self.lock();
        if inner.entries.contains_key(key) {
            return Ok(false);
        }
        inner.revision += 1;
        let revision = inner.revision;
        inner.entries.insert(key.to_owned(), (value, revision));
        Ok(true)
    }

    async fn put(&self, key: &str, value: Vec<u8>, mod_revision: i64) -> Result<bool, MetaError> {
        let mut inner = self.lock();
        if inner.entries.get(key).map(|(_, rev)| *rev) != Some(mod_revision) {
            return Ok(false);
        }
        inner.revision += 1;
        let revision = inner.revision;
        inner.entries.insert(key.to_owned(), (value, revision));
        Ok(true)
    }

    async fn delete_key(&self, key: &str, mod_revision: i64) -> Result<bool, MetaError> {
        let mut inner = self.lock();
        if inner.entries.get(key).map(|(_, rev)| *rev) != Some(mod_revision) {
            return Ok(false);
        }
        inner.revision += 1;
        inner.entries.remove(key);
        Ok(true)
    }

    async fn delete(
        &self,
        key: &str,
        mod_revision: i64,
        tombstone: (String, Vec<u8>),
    ) -> Result<bool, MetaError> {
        let mut inner = self.lock();
        if inner.entries.get(key).map(|(_, rev)| *rev) != Some(mod_revision) {
            return Ok(false);
        }
        inner.revision += 1;
        let revision = inner.revision;
        inner.entries.remove(key);
        inner.entries.insert(tombstone.0, (tombstone.1, revision));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_compare_revisions() {
        let store = MemoryMetadata::new();
        assert!(store.create("/a", b"1".to_vec()).await.expect("create"));
        assert!(!store.create("/a", b"2".to_vec()).await.expect("create"));
        let entry = store.get("/a").await.expect("get").expect("present");
        assert!(
            !store
                .put("/a", b"3".to_vec(), entry.mod_revision + 1)
                .await
                .expect("put")
        );
        assert!(
            store
                .put("/a", b"3".to_vec(), entry.mod_revision)
                .await
                .expect("put")
        );
        assert_eq!(store.value("/a"), Some(b"3".to_vec()));
        assert!(
            !store
                .delete("/a", entry.mod_revision, ("/t".to_owned(), b"{}".to_vec()))
                .await
                .expect("delete")
        );
        store.set("/ab", "x");
        store.set("/b", "y");
        let listed = store.list_prefix("/a").await.expect("list");
        let keys: Vec<_> = listed.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["/a", "/ab"]);
    }
}
