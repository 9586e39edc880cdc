//! `ferry-broker metadata rebuild`: puts the metadata store's records back from what a
//! host holds on disk, after the store lost them (a wiped or replaced etcd, a lost
//! embedded store). Run it on every host of a cluster while every host is stopped, then
//! start them (docs/cluster.md, "When etcd loses the cluster").
//!
//! From each topic or queue directory's record copy (`crate::retained`) it creates the
//! record if absent (never over another incarnation, never for a recorded deletion).
//! On a cluster it also puts back the cluster's identity and every partition's state:
//! each host reports, per replicated log, its latest leader epoch and end offsets; the
//! replicas are the hosts that reported, and the in-sync set is those holding the best
//! log (highest latest epoch, then longest), with no leader and an epoch above every
//! epoch the logs name — so the controller elects only a replica that holds everything
//! any replica acknowledged. The producer-id counter is raised above every id the logs
//! remember.

use std::path::{Path, PathBuf};

use ferry_storage::{Log, LogConfig};
use serde::{Deserialize, Serialize};

use ferry_replication::LogKind;
use ferry_replication::election::{ReplicaReport, rebuilt_state};

use crate::cluster::records::{ClusterIdentity, PartitionState};
use crate::error::{BrokerError, BrokerResult};
use crate::meta::{Compare, MetadataStore, MetadataStoreExt, Op, decode_json, encode_json, keys};
use crate::retained::{RECORD_FILE, is_deleted, parse_dir_name};

/// Attempts of one compare-and-swap before giving up (another host rebuilding at the
/// same moment keeps winning).
const MAX_ATTEMPTS: usize = 32;

/// Which host's data is rebuilt from, and for which cluster.
#[derive(Debug, Clone)]
pub struct ClusterHost {
    /// The broker cluster.
    pub cluster: String,
    /// This host's id in it.
    pub host_id: String,
}

/// What a rebuild did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RebuildReport {
    /// Records created from record copies (`topics/orders`, …).
    pub restored: Vec<String>,
    /// Records the store already held, with the same incarnation.
    pub present: Vec<String>,
    /// Directories left alone, and why (another incarnation holds the name, a recorded
    /// deletion, an unreadable record copy).
    pub skipped: Vec<String>,
    /// Partition states written or updated from this host's logs.
    pub partitions: Vec<String>,
}

/// The fields of a record copy a rebuild needs.
#[derive(Debug, Deserialize)]
struct RecordCopy {
    name: String,
    incarnation: u64,
    #[serde(default)]
    cluster: Option<String>,
}

/// Where the records go.
#[derive(Debug, Clone)]
pub enum RebuildTarget {
    /// The standalone host's embedded store in its data directory.
    Standalone,
    /// etcd, for one host of a cluster.
    Cluster {
        /// The host.
        host: ClusterHost,
        /// How to reach etcd (boxed: it carries TLS material).
        etcd: Box<crate::meta::EtcdConfig>,
    },
}

/// Locks `data_dir` (no broker may run on it meanwhile), opens the metadata store and
/// rebuilds into it.
pub async fn run(data_dir: &Path, target: RebuildTarget) -> anyhow::Result<RebuildReport> {
    let _lock = crate::standalone::lock_data_dir(data_dir)?;
    match target {
        RebuildTarget::Standalone => {
            let meta = crate::meta::EmbeddedStore::open(&crate::meta::EmbeddedConfig {
                path: crate::meta::EmbeddedStore::default_path(data_dir),
                watch_buffer: 16,
            })?;
            Ok(rebuild(&meta, data_dir, None).await?)
        }
        RebuildTarget::Cluster { host, etcd } => {
            let meta = crate::meta::EtcdStore::connect(*etcd).await?;
            Ok(rebuild(&meta, data_dir, Some(&host)).await?)
        }
    }
}

/// Rebuilds the records of the resources in `data_dir` into `meta`.
pub async fn rebuild(
    meta: &dyn MetadataStore,
    data_dir: &Path,
    host: Option<&ClusterHost>,
) -> BrokerResult<RebuildReport> {
    let mut report = RebuildReport::default();
    if let Some(host) = host {
        restore_identity(meta, &host.cluster, data_dir).await?;
    }
    let mut max_producer_id = None;
    for kind in [LogKind::Topic, LogKind::Queue] {
        for dir in resource_dirs(&data_dir.join(kind.as_str())) {
            let Some(name) = restore_record(meta, kind, &dir, host, &mut report).await? else {
                continue;
            };
            // A standalone store needs only the producer ids, which only topics hold.
            if host.is_none() && kind != LogKind::Topic {
                continue;
            }
            for (partition, logs) in replicated_logs(kind, &dir) {
                let (replica, producers) = read_logs(&logs)?;
                max_producer_id = max_producer_id.max(producers);
                if let Some(host) = host {
                    restore_partition(meta, host, kind, &name, partition, replica).await?;
                    report.partitions.push(format!("{kind}/{name}/{partition}"));
                }
            }
        }
    }
    if let Some(max) = max_producer_id {
        raise_producer_ids(meta, max + 1).await?;
    }
    Ok(report)
}

/// Every directory under `root`, sorted.
fn resource_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Creates the record of `dir` from its copy if the store lacks it. Returns the name
/// when the store now holds this incarnation's record.
async fn restore_record(
    meta: &dyn MetadataStore,
    kind: LogKind,
    dir: &Path,
    host: Option<&ClusterHost>,
    report: &mut RebuildReport,
) -> BrokerResult<Option<String>> {
    let shown = dir.display().to_string();
    let Ok(bytes) = std::fs::read(dir.join(RECORD_FILE)) else {
        report.skipped.push(format!("{shown}: no record copy"));
        return Ok(None);
    };
    let Ok(copy) = serde_json::from_slice::<RecordCopy>(&bytes) else {
        report
            .skipped
            .push(format!("{shown}: unreadable record copy"));
        return Ok(None);
    };
    let named = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_dir_name);
    if named != Some((copy.name.as_str(), copy.incarnation)) {
        report
            .skipped
            .push(format!("{shown}: the record copy names another directory"));
        return Ok(None);
    }
    if copy.cluster.as_deref() != host.map(|h| h.cluster.as_str()) {
        report
            .skipped
            .push(format!("{shown}: belongs to another cluster"));
        return Ok(None);
    }
    if is_deleted(meta, kind, &copy.name, copy.incarnation).await? {
        report
            .skipped
            .push(format!("{shown}: its deletion was recorded"));
        return Ok(None);
    }
    let key = format!("/ferry/{kind}/{}", copy.name);
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|err| BrokerError::Internal(format!("{shown}: {err}")))?;
    if meta.create(&key, encode_json(&value)).await? {
        report.restored.push(format!("{kind}/{}", copy.name));
        return Ok(Some(copy.name));
    }
    let held = meta.get(&key).await?;
    let held_incarnation = held
        .as_ref()
        .and_then(|kv| serde_json::from_slice::<RecordCopy>(&kv.value).ok())
        .map(|r| r.incarnation);
    if held_incarnation == Some(copy.incarnation) {
        report.present.push(format!("{kind}/{}", copy.name));
        Ok(Some(copy.name))
    } else {
        report.skipped.push(format!(
            "{shown}: the store holds another incarnation of {kind}/{}",
            copy.name
        ));
        Ok(None)
    }
}

/// The replicated logs of a resource directory: a topic's partitions, a queue's one
/// (messages then journal).
fn replicated_logs(kind: LogKind, dir: &Path) -> Vec<(u32, Vec<PathBuf>)> {
    if kind == LogKind::Queue {
        return vec![(0, vec![dir.join("messages"), dir.join("journal")])];
    }
    let mut partitions: Vec<(u32, Vec<PathBuf>)> = resource_dirs(dir)
        .into_iter()
        .filter_map(|path| {
            let index = path.file_name()?.to_str()?.parse().ok()?;
            Some((index, vec![path]))
        })
        .collect();
    partitions.sort();
    partitions
}

/// Opens (recovers) and closes each log, returning the report and the largest
/// producer id they remember.
fn read_logs(logs: &[PathBuf]) -> BrokerResult<(ReplicaReport, Option<i64>)> {
    let mut opened = Vec::new();
    let mut producers = None;
    for dir in logs {
        let log = Log::open(dir, LogConfig::default()).map_err(|err| unreadable(dir, err))?;
        producers = producers.max(log.max_producer_id().map_err(|err| unreadable(dir, err))?);
        opened.push(log);
    }
    let report = report_on(&opened.iter().collect::<Vec<_>>(), 0)
        .map_err(|err| BrokerError::Internal(format!("reading the logs {logs:?}: {err}")))?;
    for (log, dir) in opened.iter().zip(logs) {
        log.close().map_err(|err| unreadable(dir, err))?;
    }
    Ok((report, producers))
}

fn unreadable(dir: &Path, err: ferry_storage::StorageError) -> BrokerError {
    BrokerError::Internal(format!("reading the log in {}: {err}", dir.display()))
}

/// This host's report on a replicated log (a topic partition's log; a queue's messages
/// then journal), answering the partition state of `answering_epoch` (0 for a rebuild).
pub fn report_on(
    logs: &[&Log],
    answering_epoch: u64,
) -> Result<ReplicaReport, ferry_storage::StorageError> {
    let mut report = ReplicaReport {
        whole: true,
        epoch: 0,
        ends: Vec::new(),
        answering_epoch,
    };
    for (i, log) in logs.iter().enumerate() {
        if i == 0 {
            report.epoch = log.latest_epoch()?.unwrap_or(0);
        }
        report.ends.push(log.end_offset());
        report.whole &= log.lost_ranges()?.is_empty();
    }
    Ok(report)
}

/// Puts the cluster's identity back from this host's data directory.
async fn restore_identity(
    meta: &dyn MetadataStore,
    cluster: &str,
    data_dir: &Path,
) -> BrokerResult<()> {
    let local = crate::cluster::disk::read_identity(data_dir)?.ok_or_else(|| {
        BrokerError::Internal(format!(
            "{} holds no cluster identity: this is not a host of a cluster",
            data_dir.display()
        ))
    })?;
    let key = keys::cluster_identity(cluster);
    let identity = ClusterIdentity {
        cluster_id: local,
        created_at_ms: crate::clock::now_ms(),
    };
    if meta.create(&key, encode_json(&identity)).await? {
        return Ok(());
    }
    let held = meta
        .get(&key)
        .await?
        .map(|kv| decode_json::<ClusterIdentity>(&kv.key, &kv.value))
        .transpose()?;
    match held {
        Some(held) if held.cluster_id == local => Ok(()),
        _ => Err(BrokerError::Internal(format!(
            "etcd holds another identity for cluster {cluster:?} than this host's data \
             ({local}): a different cluster of that name exists; not rebuilding into it"
        ))),
    }
}

/// Records this host's report on one partition, then recomputes the partition state
/// from every host's report (compare-and-swap, so hosts may rebuild at once).
async fn restore_partition(
    meta: &dyn MetadataStore,
    host: &ClusterHost,
    kind: LogKind,
    name: &str,
    partition: u32,
    replica: ReplicaReport,
) -> BrokerResult<()> {
    let prefix = keys::replica_reports(&host.cluster, kind, name, partition);
    let own = keys::replica_report(&host.cluster, kind, name, partition, &host.host_id);
    meta.put(&own, encode_json(&replica)).await?;
    let state_key = keys::partition_state(&host.cluster, kind, name, partition);
    for _ in 0..MAX_ATTEMPTS {
        let mut reports = Vec::new();
        for kv in meta.list(&prefix).await? {
            let reporter = kv.key[prefix.len()..].to_owned();
            reports.push((reporter, decode_json::<ReplicaReport>(&kv.key, &kv.value)?));
        }
        let current = meta.get(&state_key).await?;
        let existing = current
            .as_ref()
            .map(|kv| decode_json::<PartitionState>(&kv.key, &kv.value))
            .transpose()?;
        let next = rebuilt_state(existing.as_ref(), &reports);
        let outcome = meta
            .txn(
                vec![Compare::ModRevision {
                    key: state_key.clone(),
                    revision: current.as_ref().map(|kv| kv.mod_revision),
                }],
                vec![Op::Put {
                    key: state_key.clone(),
                    value: encode_json(&next),
                }],
            )
            .await?;
        if outcome.succeeded {
            return Ok(());
        }
    }
    Err(BrokerError::Internal(format!(
        "{state_key} kept changing while it was rebuilt"
    )))
}

/// Makes the producer-id counter hand out nothing below `floor`.
async fn raise_producer_ids(meta: &dyn MetadataStore, floor: i64) -> BrokerResult<()> {
    for _ in 0..MAX_ATTEMPTS {
        let current = meta.get(keys::NEXT_PRODUCER_ID).await?;
        let next = match &current {
            Some(kv) => decode_json::<i64>(&kv.key, &kv.value)?,
            None => 0,
        };
        if next >= floor {
            return Ok(());
        }
        let outcome = meta
            .txn(
                vec![Compare::ModRevision {
                    key: keys::NEXT_PRODUCER_ID.to_owned(),
                    revision: current.as_ref().map(|kv| kv.mod_revision),
                }],
                vec![Op::Put {
                    key: keys::NEXT_PRODUCER_ID.to_owned(),
                    value: encode_json(&floor),
                }],
            )
            .await?;
        if outcome.succeeded {
            return Ok(());
        }
    }
    Err(BrokerError::Internal(
        "the producer-id counter kept changing while it was raised".into(),
    ))
}
