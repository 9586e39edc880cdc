//! The gateway's picture of every broker cluster: which cluster owns each topic and
//! queue (the records' `cluster`), and each cluster's hosts and partition leaders.
//! Kept current by one watch on etcd, like a host's cluster view.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_replication::LogKind;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::view::{ClusterView, follow_prefix};
use crate::error::{BrokerError, BrokerResult, LeaderLocation};
use crate::meta::{KeyValue, MetadataStore, decode_json, keys};
use crate::queue::QueueRecord;
use crate::topic::TopicRecord;

/// Topic and queue records and the views of the clusters that own them.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Topic records by name.
    pub topics: BTreeMap<String, TopicRecord>,
    /// Queue records by name.
    pub queues: BTreeMap<String, QueueRecord>,
    /// Each cluster's hosts, controller and partition states.
    pub clusters: BTreeMap<String, ClusterView>,
}

/// Where a request for one partition goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The leader's host id.
    pub host_id: String,
    /// Its advertised client address.
    pub address: String,
    /// Its peer listener's address (a gateway that forwards identities goes there).
    pub peer_address: String,
}

impl Directory {
    /// Applies one key (or its removal); whether it is one the directory keeps.
    fn apply(&mut self, key: &str, value: Option<&KeyValue>) -> bool {
        if let Some(name) = key.strip_prefix(keys::TOPICS) {
            apply_record(&mut self.topics, name, key, value);
            true
        } else if let Some(name) = key.strip_prefix(keys::QUEUES) {
            apply_record(&mut self.queues, name, key, value);
            true
        } else if let Some(rest) = key.strip_prefix(keys::CLUSTERS) {
            let Some((cluster, _)) = rest.split_once('/') else {
                return false;
            };
            let view = self.clusters.entry(cluster.to_owned()).or_default();
            view.apply(cluster, key, value)
        } else {
            false
        }
    }

    /// The cluster owning a topic, and the record.
    pub fn topic(&self, name: &str) -> BrokerResult<(&TopicRecord, &ClusterView)> {
        let record = self
            .topics
            .get(name)
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_owned()))?;
        Ok((record, self.view_of(record.cluster.as_deref())))
    }

    /// The cluster owning a queue.
    pub fn queue(&self, name: &str) -> BrokerResult<&ClusterView> {
        let record = self
            .queues
            .get(name)
            .ok_or_else(|| BrokerError::QueueNotFound(name.to_owned()))?;
        Ok(self.view_of(record.cluster.as_deref()))
    }

    fn view_of(&self, cluster: Option<&str>) -> &ClusterView {
        static EMPTY: std::sync::OnceLock<ClusterView> = std::sync::OnceLock::new();
        cluster
            .and_then(|c| self.clusters.get(c))
            .unwrap_or_else(|| EMPTY.get_or_init(ClusterView::default))
    }

    /// The live leader of a partition of a topic or queue, or `NotLeader` without a
    /// hint while it has none.
    pub fn leader(&self, kind: LogKind, name: &str, partition: u32) -> BrokerResult<Target> {
        let view = if kind == LogKind::Queue {
            self.queue(name)?
        } else {
            self.topic(name)?.1
        };
        leader_in(view, kind, name, partition)
    }

    /// The cluster a request that names no topic or queue goes to: `preferred` if
    /// given, else the only cluster there is.
    pub fn default_cluster(&self, preferred: Option<&str>) -> BrokerResult<String> {
        if let Some(name) = preferred {
            return Ok(name.to_owned());
        }
        let live: Vec<&String> = self
            .clusters
            .iter()
            .filter(|(_, view)| !view.hosts.is_empty())
            .map(|(name, _)| name)
            .collect();
        match live.as_slice() {
            [only] => Ok((*only).clone()),
            [] => Err(BrokerError::Meta(crate::meta::MetaError::Unavailable(
                "no broker cluster has live hosts".into(),
            ))),
            _ => Err(BrokerError::InvalidArgument(
                "several broker clusters: start the gateway with --default-cluster".into(),
            )),
        }
    }

    /// The live hosts of a cluster, by id.
    pub fn hosts_of(&self, cluster: &str) -> Vec<Target> {
        self.clusters
            .get(cluster)
            .map(|view| {
                view.hosts
                    .iter()
                    .map(|(id, host)| Target {
                        host_id: id.clone(),
                        address: host.advertise.clone(),
                        peer_address: host.peer_address().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn apply_record<T: serde::de::DeserializeOwned>(
    map: &mut BTreeMap<String, T>,
    name: &str,
    key: &str,
    value: Option<&KeyValue>,
) {
    match value.map(|kv| decode_json::<T>(key, &kv.value)) {
        Some(Ok(record)) => {
            map.insert(name.to_owned(), record);
        }
        Some(Err(err)) => tracing::warn!(%err, "skipping an unreadable record"),
        None => {
            map.remove(name);
        }
    }
}

/// The live leader of a partition in `view`.
fn leader_in(
    view: &ClusterView,
    kind: LogKind,
    name: &str,
    partition: u32,
) -> BrokerResult<Target> {
    let not_leader = |leader: Option<LeaderLocation>| BrokerError::NotLeader {
        kind,
        name: name.to_owned(),
        partition,
        leader,
    };
    let state = view
        .partition(kind, name, partition)
        .ok_or_else(|| not_leader(None))?;
    let host_id = state.leader.as_deref().ok_or_else(|| not_leader(None))?;
    let host = view.hosts.get(host_id).ok_or_else(|| not_leader(None))?;
    Ok(Target {
        host_id: host_id.to_owned(),
        address: host.advertise.clone(),
        peer_address: host.peer_address().to_owned(),
    })
}

/// Follows etcd in the background until dropped.
#[derive(Debug)]
pub struct DirectoryKeeper {
    directory: watch::Receiver<Arc<Directory>>,
    task: JoinHandle<()>,
}

impl Drop for DirectoryKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DirectoryKeeper {
    /// Starts following `meta`; the first directory arrives after a full read.
    pub fn start(meta: Arc<dyn MetadataStore>, retry_pause: Duration) -> Self {
        let (sender, directory) = watch::channel(Arc::new(Directory::default()));
        let task = tokio::spawn(follow_prefix(
            meta,
            keys::ROOT.to_owned(),
            sender,
            retry_pause,
            |directory: &mut Directory, key, value| directory.apply(key, value),
        ));
        Self { directory, task }
    }

    /// The current directory, and changes to come.
    pub fn directory(&self) -> watch::Receiver<Arc<Directory>> {
        self.directory.clone()
    }
}
