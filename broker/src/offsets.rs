//! Committed consumer-group offsets: cached in memory, persisted in the metadata store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::error::BrokerResult;
use crate::meta::{MetadataStore, Op, decode_json, encode_json, keys};

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

/// Every group's committed offsets.
pub struct OffsetStore {
    meta: Arc<dyn MetadataStore>,
    // A std mutex: only map reads and writes happen under it, never an await.
    cache: Mutex<BTreeMap<OffsetKey, CommittedOffset>>,
}

impl OffsetStore {
    /// Loads every committed offset from the metadata store.
    pub async fn load(meta: Arc<dyn MetadataStore>) -> BrokerResult<Self> {
        let mut cache = BTreeMap::new();
        for kv in meta.list(keys::GROUPS).await? {
            if let Some((group, topic, partition)) = keys::parse_group_offset(&kv.key) {
                let committed: CommittedOffset = decode_json(&kv.key, &kv.value)?;
                cache.insert((group.to_owned(), topic.to_owned(), partition), committed);
            }
        }
        Ok(Self {
            meta,
            cache: Mutex::new(cache),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, BTreeMap<OffsetKey, CommittedOffset>> {
        // A poisoned lock only means a panic elsewhere; the map is still consistent.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
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
        self.meta.txn(Vec::new(), ops).await?;
        self.cache().extend(entries);
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
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, t, p), c)| (t.clone(), *p, c.clone()));
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
        let mut groups: Vec<String> = self.cache().keys().map(|(g, _, _)| g.clone()).collect();
        groups.dedup();
        groups
    }

    /// Every committed offset (for lag metrics).
    pub fn all(&self) -> Vec<(OffsetKey, u64)> {
        self.cache()
            .iter()
            .map(|(key, committed)| (key.clone(), committed.offset))
            .collect()
    }

    /// Forgets a deleted topic's offsets (the metadata keys are removed with the topic).
    pub fn forget_topic(&self, topic: &str) {
        self.cache().retain(|(_, t, _), _| t != topic);
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
