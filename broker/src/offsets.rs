//! Committed consumer-group offsets: cached in memory, persisted in the metadata store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::error::BrokerResult;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::meta::{MetadataStore, Op, Revision, Watch, WatchEvent, decode_json, encode_json, keys};

/// One committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// Next offset to consume.
    pub offset: u64,
    /// Free-form text from the committer.
    pub metadata: String,
    /// When it was committed, ms since the Unix epoch.
    pub committed_at_ms: i64,
}

/// (group, topic, partition).
pub type OffsetKey = (String, String, u32);

/// The cached offsets, each with the store revision it was written at, and the
/// revision each deleted group was deleted at: a change delivered late (a watch
/// event older than a local commit or delete) never undoes a newer one.
#[derive(Default)]
struct Cached {
    offsets: BTreeMap<OffsetKey, (CommittedOffset, Revision)>,
    deleted: BTreeMap<String, Revision>,
}

impl Cached {
    fn put(&mut self, key: OffsetKey, committed: CommittedOffset, revision: Revision) {
        if self.deleted.get(&key.0).is_some_and(|at| *at >= revision) {
            return;
        }
        match self.offsets.get(&key) {
            Some((_, held)) if *held >= revision => {}
            _ => {
                self.offsets.insert(key, (committed, revision));
            }
        }
    }

    fn remove(&mut self, key: &OffsetKey, revision: Revision) {
        if self
            .offsets
            .get(key)
            .is_some_and(|(_, held)| *held < revision)
        {
            self.offsets.remove(key);
        }
    }

    fn remove_group(&mut self, group: &str, revision: Revision) {
        self.offsets
            .retain(|(g, _, _), (_, held)| g != group || *held > revision);
        let at = self.deleted.entry(group.to_owned()).or_insert(revision);
        *at = (*at).max(revision);
    }
}

/// Every group's committed offsets. Commits and deletions on any host reach every
/// host's cache through a watch on the store, so the host that coordinates a group
/// after another one did serves the offsets committed there.
pub struct OffsetStore {
    meta: Arc<dyn MetadataStore>,
    // A std mutex: only map reads and writes happen under it, never an await.
    cache: Arc<Mutex<Cached>>,
    follower: JoinHandle<()>,
}

impl Drop for OffsetStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

fn lock(cache: &Mutex<Cached>) -> std::sync::MutexGuard<'_, Cached> {
    // A poisoned lock only means a panic elsewhere; the map is still consistent.
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads every committed offset from the store into `cache`.
async fn read_all(meta: &dyn MetadataStore, cache: &Mutex<Cached>) -> BrokerResult<()> {
    let listed = meta.list(keys::GROUPS).await?;
    let mut cached = lock(cache);
    for kv in listed {
        if let Some((group, topic, partition)) = keys::parse_group_offset(&kv.key) {
            let committed: CommittedOffset = decode_json(&kv.key, &kv.value)?;
            let key = (group.to_owned(), topic.to_owned(), partition);
            cached.put(key, committed, kv.mod_revision);
        }
    }
    Ok(())
}

/// Pause before watching again after the store closed a subscription.
const RESUBSCRIBE_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Applies the store's offset changes to `cache` for as long as the store runs;
/// after a gap in the changes (lagged, or history compacted) it reads everything
/// again. Offsets deleted during such a gap stay cached until the host restarts.
async fn follow(meta: Arc<dyn MetadataStore>, cache: Arc<Mutex<Cached>>, mut watch: Watch) {
    loop {
        match watch.next().await {
            Ok(WatchEvent::Put(kv)) => {
                let Some((group, topic, partition)) = keys::parse_group_offset(&kv.key) else {
                    continue;
                };
                match decode_json::<CommittedOffset>(&kv.key, &kv.value) {
                    Ok(committed) => lock(&cache).put(
                        (group.to_owned(), topic.to_owned(), partition),
                        committed,
                        kv.mod_revision,
                    ),
                    Err(err) => tracing::warn!(%err, "skipping an unreadable committed offset"),
                }
            }
            Ok(WatchEvent::Delete { key, revision }) => {
                if let Some((group, topic, partition)) = keys::parse_group_offset(&key) {
                    let key = (group.to_owned(), topic.to_owned(), partition);
                    lock(&cache).remove(&key, revision);
                }
            }
            Err(gap) => {
                if matches!(gap, broadcast::error::RecvError::Closed) {
                    // A closed subscription is renewed, but not in a busy loop.
                    tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
                }
                watch = meta.watch(keys::GROUPS);
                if let Err(err) = read_all(meta.as_ref(), &cache).await {
                    tracing::warn!(%err, "cannot re-read committed offsets; following changes only");
                }
            }
        }
    }
}

impl OffsetStore {
    /// Loads every committed offset from the metadata store and follows its changes.
    pub async fn load(meta: Arc<dyn MetadataStore>) -> BrokerResult<Self> {
        // Subscribed before the read, so no change made after it is missed.
        let watch = meta.watch(keys::GROUPS);
        let cache = Arc::new(Mutex::new(Cached::default()));
        read_all(meta.as_ref(), &cache).await?;
        let follower = tokio::spawn(follow(Arc::clone(&meta), Arc::clone(&cache), watch));
        Ok(Self {
            meta,
            cache,
            follower,
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cached> {
        lock(&self.cache)
    }

    /// Persists offsets for one group atomically, then updates the cache.
    pub async fn commit(
        &self,
        group: &str,
        offsets: Vec<(String, u32, u64, String)>,
    ) -> BrokerResult<()> {
        let now = now_ms();
        let mut ops = Vec::with_capacity(offsets.len());
        let mut entries = Vec::with_capacity(offsets.len());
        for (topic, partition, offset, metadata) in offsets {
            let committed = CommittedOffset {
                offset,
                metadata,
                committed_at_ms: now,
            };
            ops.push(Op::Put {
                key: keys::group_offset(group, &topic, partition),
                value: encode_json(&committed),
            });
            entries.push(((group.to_owned(), topic, partition), committed));
        }
        let outcome = self.meta.txn(Vec::new(), ops).await?;
        let mut cache = self.cache();
        for (key, committed) in entries {
            cache.put(key, committed, outcome.revision);
        }
        Ok(())
    }

    /// Removes every committed offset of `group` from the store and the cache.
    pub async fn delete_group(&self, group: &str) -> BrokerResult<()> {
        let ops = vec![Op::DeletePrefix {
            prefix: keys::group_offsets(group),
        }];
        let outcome = self.meta.txn(Vec::new(), ops).await?;
        self.cache().remove_group(group, outcome.revision);
        Ok(())
    }

    /// Committed offsets of a group, optionally only for the given partitions.
    pub fn fetch(
        &self,
        group: &str,
        only: &[(String, u32)],
    ) -> Vec<(String, u32, CommittedOffset)> {
        let cache = self.cache();
        let in_group = cache
            .offsets
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, t, p), (c, _))| (t.clone(), *p, c.clone()));
        if only.is_empty() {
            in_group.collect()
        } else {
            in_group
                .filter(|(t, p, _)| only.iter().any(|(ot, op)| ot == t && op == p))
                .collect()
        }
    }

    /// Names of every group with committed offsets.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self
            .cache()
            .offsets
            .keys()
            .map(|(g, _, _)| g.clone())
            .collect();
        groups.dedup();
        groups
    }

    /// Every committed offset (for lag metrics).
    pub fn all(&self) -> Vec<(OffsetKey, u64)> {
        self.cache()
            .offsets
            .iter()
            .map(|(key, (committed, _))| (key.clone(), committed.offset))
            .collect()
    }

    /// Forgets a deleted topic's offsets (the metadata keys are removed with the topic).
    pub fn forget_topic(&self, topic: &str) {
        self.cache().offsets.retain(|(_, t, _), _| t != topic);
    }
}

/// Hands out idempotent producer ids from a counter in the metadata store.
pub async fn allocate_producer_id(meta: &dyn MetadataStore) -> BrokerResult<i64> {
    use crate::meta::{Compare, MetaError};
    const ATTEMPTS: u32 = 16;
    for _ in 0..ATTEMPTS {
        let current = meta.get(keys::NEXT_PRODUCER_ID).await?;
        let (next, revision) = match &current {
            Some(kv) => (
                decode_json::<i64>(&kv.key, &kv.value)?,
                Some(kv.mod_revision),
            ),
            None => (0, None),
        };
        let outcome = meta
            .txn(
                vec![Compare::ModRevision {
                    key: keys::NEXT_PRODUCER_ID.to_owned(),
                    revision,
                }],
                vec![Op::Put {
                    key: keys::NEXT_PRODUCER_ID.to_owned(),
                    value: encode_json(&(next + 1)),
                }],
            )
            .await?;
        if outcome.succeeded {
            return Ok(next);
        }
    }
    Err(MetaError::Contended {
        key: keys::NEXT_PRODUCER_ID.to_owned(),
        attempts: ATTEMPTS,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::meta::{EmbeddedConfig, EmbeddedStore};

    fn committed(offset: u64) -> CommittedOffset {
        CommittedOffset {
            offset,
            metadata: String::new(),
            committed_at_ms: 0,
        }
    }

    fn key(group: &str) -> OffsetKey {
        (group.to_owned(), "t".to_owned(), 0)
    }

    #[test]
    fn a_late_change_never_undoes_a_newer_one() {
        let mut cached = Cached::default();
        cached.put(key("g"), committed(5), 11);
        cached.put(key("g"), committed(3), 10); // an older commit, delivered late
        assert_eq!(cached.offsets[&key("g")].0.offset, 5);
        cached.remove(&key("g"), 9); // an older delete
        assert!(cached.offsets.contains_key(&key("g")));

        cached.remove_group("g", 12);
        assert!(cached.offsets.is_empty());
        cached.put(key("g"), committed(5), 11); // the commit before the delete, late
        assert!(cached.offsets.is_empty());
        cached.put(key("g"), committed(1), 13); // a commit after it
        assert_eq!(cached.offsets[&key("g")].0.offset, 1);
    }

    /// Waits until `check` holds for `store`'s cache (the watch delivers changes soon
    /// after they are made).
    async fn eventually(store: &OffsetStore, check: impl Fn(&OffsetStore) -> bool) {
        for _ in 0..200 {
            if check(store) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the other store never saw the change");
    }

    #[tokio::test]
    async fn commits_and_deletions_on_one_host_reach_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta: Arc<dyn MetadataStore> = Arc::new(
            EmbeddedStore::open(&EmbeddedConfig {
                path: EmbeddedStore::default_path(dir.path()),
                watch_buffer: 16,
            })
            .expect("open store"),
        );
        // Two hosts' caches over one store; `later` loads before anything is committed.
        let first = OffsetStore::load(Arc::clone(&meta)).await.expect("load");
        let later = OffsetStore::load(Arc::clone(&meta)).await.expect("load");
        first
            .commit("g", vec![("t".into(), 0, 7, String::new())])
            .await
            .expect("commit");
        eventually(&later, |s| {
            s.fetch("g", &[]).first().map(|(_, _, c)| c.offset) == Some(7)
        })
        .await;

        later.delete_group("g").await.expect("delete");
        assert!(later.fetch("g", &[]).is_empty());
        eventually(&first, |s| s.groups().is_empty()).await;
    }
}
