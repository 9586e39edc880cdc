//! The set of topics on this host: creation, deletion, recovery at start-up, and the
//! background work each topic needs (interval flushes, retention).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferry_replication::LogKind;
use ferry_storage::DiskHooks;
use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::config::Limits;
use crate::error::{BrokerError, BrokerResult};
use crate::meta::{MetadataStore, MetadataStoreExt, Op, decode_json, encode_json, keys};
use crate::names::validate_topic_name;
use crate::retained::{
    Disposal, disposal_of, read_record, remove_dir, remove_strays, resource_dir, tombstone_op,
    write_record,
};
use crate::topic::{DurabilitySetting, ReplicatedLog, TopicOverrides, TopicRecord, TopicSettings};

/// One topic: its record and its open partitions.
pub struct Topic {
    /// What the metadata store holds for it.
    pub record: TopicRecord,
    /// Partitions, indexed by partition number.
    pub partitions: Vec<Arc<ReplicatedLog>>,
    /// Next partition for keyless records without an explicit partition.
    round_robin: AtomicU32,
    dir: PathBuf,
    flusher: Option<JoinHandle<()>>,
}

impl Topic {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// A partition by index.
    pub fn partition(&self, index: u32) -> BrokerResult<&Arc<ReplicatedLog>> {
        self.partitions
            .get(index as usize)
            .ok_or_else(|| BrokerError::PartitionNotFound {
                topic: self.record.name.clone(),
                partition: index,
                partitions: self.record.settings.partitions,
            })
    }

    /// The next partition in round-robin order.
    pub fn next_round_robin(&self) -> u32 {
        self.round_robin.fetch_add(1, Ordering::Relaxed) % self.record.settings.partitions
    }

    fn close(&self) {
        if let Some(flusher) = &self.flusher {
            flusher.abort();
        }
        for partition in &self.partitions {
            if let Err(err) = partition.close() {
                tracing::warn!(topic = %self.record.name, partition = partition.index(), %err, "closing partition failed");
            }
        }
    }
}

/// All topics on this host.
pub struct Topics {
    root: PathBuf,
    hooks: DiskHooks,
    limits: Limits,
    defaults: TopicSettings,
    meta: Arc<dyn MetadataStore>,
    /// The cluster this host belongs to, stamped on the records it creates.
    cluster: Option<String>,
    // A std lock: lookups are short and nothing awaits while holding it.
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    // Serializes create and delete so directories and metadata change together.
    admin: tokio::sync::Mutex<()>,
}

fn topic_dir(root: &Path, record: &TopicRecord) -> PathBuf {
    resource_dir(root, &record.name, record.incarnation)
}

impl Topics {
    /// Opens every topic recorded in metadata, and removes the directories no topic owns
    /// whose deletion was recorded (see `crate::retained`).
    pub async fn open(
        data_dir: &Path,
        hooks: DiskHooks,
        limits: Limits,
        defaults: TopicSettings,
        meta: Arc<dyn MetadataStore>,
        cluster: Option<String>,
    ) -> BrokerResult<Self> {
        let root = data_dir.join(LogKind::Topic.as_str());
        std::fs::create_dir_all(&root).map_err(|err| {
            BrokerError::Internal(format!("cannot create {}: {err}", root.display()))
        })?;
        let topics = Self {
            root,
            hooks,
            limits,
            defaults,
            meta,
            cluster,
            topics: RwLock::new(HashMap::new()),
            admin: tokio::sync::Mutex::new(()),
        };
        let mut known = Vec::new();
        for kv in topics.meta.list(keys::TOPICS).await? {
            let record: TopicRecord = decode_json(&kv.key, &kv.value)?;
            if record.cluster != topics.cluster {
                continue;
            }
            known.push(topic_dir(&topics.root, &record));
            let topic = topics.open_topic(record).await?;
            if read_record::<TopicRecord>(&topic.dir).is_none() {
                write_record(&topic.dir, &topic.record)?;
            }
            topics.insert(topic);
        }
        remove_strays(topics.meta.as_ref(), LogKind::Topic, &topics.root, &known).await?;
        Ok(topics)
    }

    fn insert(&self, topic: Topic) {
        let name = topic.record.name.clone();
        self.write_map().insert(name, Arc::new(topic));
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        // A poisoned lock only means a panic elsewhere; the map itself is still whole.
        self.topics.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    async fn open_topic(&self, record: TopicRecord) -> BrokerResult<Topic> {
        let dir = topic_dir(&self.root, &record);
        let log_config = record.settings.log_config(&self.limits);
        let name: Arc<str> = Arc::from(record.name.as_str());
        let durability = record.settings.durability;
        let partition_count = record.settings.partitions;
        let open_dir = dir.clone();
        let hooks = self.hooks.clone();
        let replicated = self.cluster.is_some();
        let partitions = tokio::task::spawn_blocking(move || {
            (0..partition_count)
                .map(|index| {
                    ReplicatedLog::open(
                        Arc::clone(&name),
                        index,
                        &open_dir.join(index.to_string()),
                        log_config.clone(),
                        durability,
                        hooks.clone(),
                        replicated,
                    )
                    .map(Arc::new)
                })
                .collect::<BrokerResult<Vec<_>>>()
        })
        .await
        .map_err(|err| BrokerError::Internal(format!("open task failed: {err}")))??;
        let flusher = (durability == DurabilitySetting::Interval).then(|| {
            spawn_interval_flusher(
                partitions.clone(),
                Duration::from_millis(u64::from(record.settings.flush_interval_ms)),
            )
        });
        Ok(Topic {
            record,
            partitions,
            round_robin: AtomicU32::new(0),
            dir,
            flusher,
        })
    }

    /// A topic by name.
    pub fn get(&self, name: &str) -> BrokerResult<Arc<Topic>> {
        self.read_map()
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_owned()))
    }

    /// Every topic, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.read_map().values().cloned().collect();
        all.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        all
    }

    /// Partition count of a topic, if it exists.
    pub fn partition_count(&self, name: &str) -> Option<u32> {
        self.read_map()
            .get(name)
            .map(|topic| topic.record.settings.partitions)
    }

    /// Creates a topic: directories first, then the metadata record, then the record's
    /// copy in the directory, so a crash before the record leaves only a directory
    /// without a copy, which the next start removes.
    pub async fn create(&self, name: &str, overrides: &TopicOverrides) -> BrokerResult<Arc<Topic>> {
        validate_topic_name(name)?;
        let settings = overrides.resolve(&self.defaults);
        let max_replicas = if self.cluster.is_some() {
            self.limits.max_replication_factor
        } else {
            1
        };
        settings.validate(&self.limits, max_replicas)?;
        let _admin = self.admin.lock().await;
        if self.read_map().contains_key(name) {
            return Err(BrokerError::TopicExists(name.to_owned()));
        }
        if self.read_map().len() >= self.limits.max_topics as usize {
            return Err(BrokerError::LimitExceeded {
                what: "topics on this host",
                limit: u64::from(self.limits.max_topics),
            });
        }
        let created_at_ms = now_ms();
        let record = TopicRecord {
            name: name.to_owned(),
            settings,
            created_at_ms,
            incarnation: crate::clock::unique_id(),
            cluster: self.cluster.clone(),
        };
        let topic = self.open_topic(record.clone()).await?;
        let outcome = self
            .meta
            .create(&keys::topic(name), encode_json(&record))
            .await;
        let committed = matches!(outcome, Ok(true));
        if !committed {
            topic.close();
            remove_dir(&topic.dir);
            outcome?;
            return Err(BrokerError::TopicExists(name.to_owned()));
        }
        write_record(&topic.dir, &record)?;
        tracing::info!(
            topic = name,
            partitions = record.settings.partitions,
            "topic created"
        );
        let topic = Arc::new(topic);
        self.write_map().insert(name.to_owned(), Arc::clone(&topic));
        Ok(topic)
    }

    /// Deletes a topic, its data and every group's committed offsets for it.
    pub async fn delete(&self, name: &str) -> BrokerResult<()> {
        validate_topic_name(name)?;
        let _admin = self.admin.lock().await;
        let topic = self.get(name)?;
        let mut ops = vec![
            Op::Delete {
                key: keys::topic(name),
            },
            tombstone_op(LogKind::Topic, name, topic.record.incarnation),
        ];
        for kv in self.meta.list(keys::GROUPS).await? {
            if matches!(keys::parse_group_offset(&kv.key), Some((_, t, _)) if t == name) {
                ops.push(Op::Delete { key: kv.key });
            }
        }
        self.meta.txn(Vec::new(), ops).await?;
        drop(topic);
        self.close_local(name, Disposal::Remove).await?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Cluster mode: opens a topic another host created (seen in the metadata store),
    /// replacing an older incarnation; nothing happens if it is already open.
    pub async fn adopt(&self, record: TopicRecord) -> BrokerResult<()> {
        if record.cluster != self.cluster {
            return Ok(());
        }
        let _admin = self.admin.lock().await;
        if let Some(open) = self.read_map().get(&record.name)
            && open.record.incarnation == record.incarnation
        {
            return Ok(());
        }
        let disposal = self.disposal_of_open(&record.name).await?;
        self.close_local(&record.name, disposal).await?;
        let topic = self.open_topic(record).await?;
        write_record(&topic.dir, &topic.record)?;
        tracing::info!(topic = %topic.record.name, "topic adopted");
        self.insert(topic);
        Ok(())
    }

    /// Cluster mode: closes a topic whose record went, and removes its local data if
    /// its deletion was recorded (else keeps it: the metadata store may have lost it).
    pub async fn forget(&self, name: &str) -> BrokerResult<()> {
        let _admin = self.admin.lock().await;
        let disposal = self.disposal_of_open(name).await?;
        self.close_local(name, disposal).await
    }

    /// Whether the open incarnation of `name`, once closed, may be removed.
    async fn disposal_of_open(&self, name: &str) -> BrokerResult<Disposal> {
        let incarnation = self.read_map().get(name).map(|t| t.record.incarnation);
        disposal_of(self.meta.as_ref(), LogKind::Topic, name, incarnation).await
    }

    /// Takes a topic out of the map and closes it, removing its directory if
    /// `disposal` says so (the caller holds the admin lock).
    async fn close_local(&self, name: &str, disposal: Disposal) -> BrokerResult<()> {
        let Some(topic) = self.write_map().remove(name) else {
            return Ok(());
        };
        let dir = topic.dir.clone();
        let removing = dir.clone();
        tokio::task::spawn_blocking(move || {
            topic.close();
            if disposal == Disposal::Remove {
                remove_dir(&removing);
            }
        })
        .await
        .map_err(|err| BrokerError::Internal(format!("delete task failed: {err}")))?;
        match disposal {
            Disposal::Remove => tracing::info!(topic = name, "topic closed and its data removed"),
            Disposal::Keep => tracing::error!(
                topic = name,
                dir = %dir.display(),
                "topic record gone without a recorded deletion: closed, its data kept \
                 (`ferry-broker metadata rebuild` puts the record back)"
            ),
        }
        Ok(())
    }

    /// Applies retention to every partition.
    pub async fn enforce_retention(&self) {
        for topic in self.list() {
            let partitions = topic.partitions.clone();
            let name = topic.record.name.clone();
            let now = now_ms();
            let result = tokio::task::spawn_blocking(move || {
                for partition in partitions {
                    match partition.log().enforce_retention(now) {
                        Ok(outcome) if outcome.segments_deleted > 0 => tracing::info!(
                            topic = %name,
                            partition = partition.index(),
                            segments = outcome.segments_deleted,
                            bytes = outcome.bytes_deleted,
                            "retention deleted segments"
                        ),
                        Ok(_) => {}
                        Err(err) => tracing::warn!(topic = %name, partition = partition.index(), %err, "retention failed"),
                    }
                }
            })
            .await;
            if let Err(err) = result {
                tracing::warn!(%err, "retention task failed");
            }
        }
    }

    /// Flushes and closes every log (shutdown).
    pub async fn close_all(&self) {
        let topics: Vec<_> = self.write_map().drain().map(|(_, topic)| topic).collect();
        let closed = tokio::task::spawn_blocking(move || {
            for topic in topics {
                topic.close();
            }
        })
        .await;
        if let Err(err) = closed {
            tracing::warn!(%err, "closing topics failed");
        }
    }
}

fn spawn_interval_flusher(partitions: Vec<Arc<ReplicatedLog>>, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            for partition in &partitions {
                if let Err(err) = partition.flush().await {
                    tracing::warn!(partition = partition.index(), %err, "interval flush failed");
                }
            }
        }
    })
}
