//! Every host's cached view of its cluster — live hosts, the controller, partition
//! states — kept current by a watch on the cluster's prefix and re-read in full
//! whenever the watch lagged or lost history.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ferry_replication::LogKind;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::placement::PartitionKey;
use super::records::ObservedPartition;
use super::records::{ClusterIdentity, ControllerRecord, HostRecord, PartitionState};
use crate::meta::{KeyValue, MetadataStore, Revision, WatchEvent, decode_json, keys};

/// A consistent picture of one cluster's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Live hosts by id.
    pub hosts: BTreeMap<String, HostRecord>,
    /// The elected controller and the revision of its election (its epoch).
    pub controller: Option<(ControllerRecord, Revision)>,
    /// Partition states and the revision each was last written at.
    pub partitions: BTreeMap<PartitionKey, (PartitionState, Revision)>,
    /// What the leaders of topic partitions last published.
    pub observed: BTreeMap<(String, u32), ObservedPartition>,
    /// The cluster's identity (`None` if etcd does not hold it: etcd lost the cluster).
    pub identity: Option<u64>,
    /// Hosts asked to leave: their replicas move to the others.
    pub draining: BTreeSet<String>,
}

impl ClusterView {
    /// What the current leader of a topic partition last published, if the view has
    /// it from that leader in its current epoch.
    pub fn observed_topic(&self, topic: &str, partition: u32) -> Option<&ObservedPartition> {
        let state = self.partition(LogKind::Topic, topic, partition)?;
        self.observed
            .get(&(topic.to_owned(), partition))
            .filter(|o| {
                state.leader.as_deref() == Some(o.leader.as_str())
                    && state.leader_epoch == o.leader_epoch
            })
    }

    /// The state of one partition.
    pub fn partition(&self, kind: LogKind, name: &str, partition: u32) -> Option<&PartitionState> {
        self.partition_at(kind, name, partition)
            .map(|(state, _)| state)
    }

    /// One partition's state and the revision it was written at.
    pub fn partition_at(
        &self,
        kind: LogKind,
        name: &str,
        partition: u32,
    ) -> Option<(&PartitionState, Revision)> {
        self.partitions
            .get(&PartitionKey {
                kind,
                name: name.to_owned(),
                partition,
            })
            .map(|(state, revision)| (state, *revision))
    }

    /// Applies one stored key (or its removal) to the view; keys it does not know
    /// are ignored (the answer is false), and unreadable values are logged and
    /// skipped.
    pub(crate) fn apply(&mut self, cluster: &str, key: &str, value: Option<&KeyValue>) -> bool {
        let hosts = keys::cluster_hosts(cluster);
        if let Some(host) = key.strip_prefix(&hosts) {
            match value.map(|kv| decode_json::<HostRecord>(key, &kv.value)) {
                Some(Ok(record)) => {
                    self.hosts.insert(host.to_owned(), record);
                }
                Some(Err(err)) => tracing::warn!(%err, "skipping a host record"),
                None => {
                    self.hosts.remove(host);
                }
            }
        } else if let Some(host) = key.strip_prefix(&keys::cluster_draining(cluster)) {
            if value.is_some() {
                self.draining.insert(host.to_owned());
            } else {
                self.draining.remove(host);
            }
        } else if key == keys::cluster_identity(cluster) {
            self.identity =
                value.and_then(|kv| match decode_json::<ClusterIdentity>(key, &kv.value) {
                    Ok(identity) => Some(identity.cluster_id),
                    Err(err) => {
                        tracing::warn!(%err, "skipping the cluster identity");
                        None
                    }
                });
        } else if key == keys::cluster_controller(cluster) {
            self.controller = match value.map(|kv| (decode_json(key, &kv.value), kv.mod_revision)) {
                Some((Ok(record), revision)) => Some((record, revision)),
                Some((Err(err), _)) => {
                    tracing::warn!(%err, "skipping a controller record");
                    None
                }
                None => None,
            };
        } else if let Some((kind, name, partition)) = keys::parse_partition_state(cluster, key)
            && let Ok(kind) = kind.parse::<LogKind>()
        {
            let id = PartitionKey {
                kind,
                name: name.to_owned(),
                partition,
            };
            match value.map(|kv| (decode_json(key, &kv.value), kv.mod_revision)) {
                Some((Ok(state), revision)) => {
                    self.partitions.insert(id, (state, revision));
                }
                Some((Err(err), _)) => tracing::warn!(%err, "skipping a partition state"),
                None => {
                    self.partitions.remove(&id);
                }
            }
        } else if let Some((topic, partition)) = keys::parse_observed_topic(cluster, key) {
            let id = (topic.to_owned(), partition);
            match value.map(|kv| decode_json::<ObservedPartition>(key, &kv.value)) {
                Some(Ok(observed)) => {
                    self.observed.insert(id, observed);
                }
                Some(Err(err)) => tracing::warn!(%err, "skipping an observed state"),
                None => {
                    self.observed.remove(&id);
                }
            }
        } else {
            return false;
        }
        true
    }
}

/// Keeps a [`ClusterView`] current in the background.
#[derive(Debug)]
pub struct ViewKeeper {
    view: watch::Receiver<Arc<ClusterView>>,
    task: JoinHandle<()>,
}

impl Drop for ViewKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ViewKeeper {
    /// Starts following `cluster` in `meta`; the first view arrives after a full read.
    pub fn start(meta: Arc<dyn MetadataStore>, cluster: String, retry_pause: Duration) -> Self {
        let (sender, view) = watch::channel(Arc::new(ClusterView::default()));
        let task = tokio::spawn(follow(meta, cluster, sender, retry_pause));
        Self { view, task }
    }

    /// The current view, and changes to come.
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }
}

async fn follow(
    meta: Arc<dyn MetadataStore>,
    cluster: String,
    sender: watch::Sender<Arc<ClusterView>>,
    retry_pause: Duration,
) {
    let prefix = keys::cluster(&cluster);
    follow_prefix(
        meta,
        prefix,
        sender,
        retry_pause,
        move |view, key, value| {
            view.apply(&cluster, key, value);
            true
        },
    )
    .await;
}

/// Keeps `sender`'s value — built by `apply` from every key under `prefix` — current:
/// a full read, then watch events, re-reading in full after a gap. Events older than
/// what the full read showed for a key are skipped, so the value never goes back.
/// `apply` answers whether the key mattered; only then is a new value published.
pub(crate) async fn follow_prefix<T: Clone + Default>(
    meta: Arc<dyn MetadataStore>,
    prefix: String,
    sender: watch::Sender<Arc<T>>,
    retry_pause: Duration,
    apply: impl Fn(&mut T, &str, Option<&KeyValue>) -> bool,
) {
    loop {
        // Subscribe before reading, so nothing between the read and the watch is lost;
        // events already covered by the read are applied again, which is harmless.
        let mut changes = meta.watch(&prefix);
        let listed = match meta.list(&prefix).await {
            Ok(listed) => listed,
            Err(err) => {
                tracing::warn!(%err, %prefix, "cannot read the metadata; retrying");
                tokio::time::sleep(retry_pause).await;
                continue;
            }
        };
        let mut state = T::default();
        // The revision each key was last seen at: events the full read already covers
        // arrive after it (the watch started first) and must not roll the state back.
        let mut seen: HashMap<String, Revision> = HashMap::new();
        for kv in &listed {
            apply(&mut state, &kv.key, Some(kv));
            seen.insert(kv.key.clone(), kv.mod_revision);
        }
        sender.send_replace(Arc::new(state.clone()));
        loop {
            match changes.next().await {
                Ok(event) => {
                    let revision = match &event {
                        WatchEvent::Put(kv) => kv.mod_revision,
                        WatchEvent::Delete { revision, .. } => *revision,
                    };
                    let key = event.key().to_owned();
                    if seen.get(&key).is_some_and(|known| *known >= revision) {
                        continue;
                    }
                    let mattered = match &event {
                        WatchEvent::Put(kv) => apply(&mut state, &key, Some(kv)),
                        WatchEvent::Delete { .. } => apply(&mut state, &key, None),
                    };
                    seen.insert(key, revision);
                    if mattered {
                        sender.send_replace(Arc::new(state.clone()));
                    }
                }
                Err(
                    broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed,
                ) => {
                    tracing::info!(%prefix, "metadata re-read after a watch gap");
                    break;
                }
            }
        }
    }
}
