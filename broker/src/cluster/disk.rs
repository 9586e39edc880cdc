//! A host's claim on its data directory, and what a replaced or damaged disk means.
//!
//! The in-sync set in etcd says which replicas hold everything committed. A host
//! that comes back with an empty data directory (a replaced disk, a wiped volume)
//! holds nothing, yet etcd may still list it as in sync until its leader notices;
//! were the others to die in that window, it could be elected and serve an empty
//! log. So before it registers, a host whose data directory carries no claim
//! removes itself from every in-sync set (and gives up any leadership it still
//! holds), then writes the claim. It rejoins the sets the normal way, by catching up.
//!
//! A host whose logs lost records to damage (recovery confined it to lost ranges,
//! now or on an earlier start) does the same before it registers, except where it is
//! the last in-sync replica: then no other replica is known to hold what it lost, and
//! it stays the best copy. As a follower it repairs by truncating below its first lost
//! range and fetching again (`replication.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};

use ferry_replication::election;
use ferry_replication::identity::{self, IdentityCheck};
use ferry_storage::{Log, LogConfig, StorageError};

use super::records::{ClusterIdentity, PartitionState};
use crate::error::{BrokerError, BrokerResult};
use crate::meta::{Compare, MetadataStore, MetadataStoreExt, Op, decode_json, encode_json, keys};

/// The claim file in a host's data directory: `{cluster}/{host}`.
const CLAIM_FILE: &str = "cluster-host";
/// Compare-and-swap attempts per partition state before giving up (another writer
/// keeps winning: the start fails and is retried by the supervisor).
const MAX_ATTEMPTS: usize = 20;

/// Makes sure the data directory belongs to this host; if it carries no claim yet
/// (a new or wiped disk), first leaves every in-sync set in etcd.
pub async fn claim(
    meta: &dyn MetadataStore,
    cluster: &str,
    host_id: &str,
    data_dir: &Path,
) -> BrokerResult<()> {
    let owner = format!("{cluster}/{host_id}");
    let path = data_dir.join(CLAIM_FILE);
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == owner => return Ok(()),
        Ok(found) => {
            return Err(BrokerError::Internal(format!(
                "data directory {} belongs to {:?}, not {owner:?}: refusing to serve another \
                 host's data",
                data_dir.display(),
                found.trim()
            )));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(BrokerError::Internal(format!(
                "cannot read {}: {err}",
                path.display()
            )));
        }
    }
    let left = rewrite_states(meta, cluster, |state| election::leave(state, host_id)).await?;
    if left > 0 {
        tracing::warn!(
            host = host_id,
            partitions = left,
            "new data directory: left the in-sync sets this host was in; it rejoins by catching up"
        );
    }
    write_file(data_dir, &path, &owner)
}

/// The file in a host's data directory holding its cluster's identity.
const IDENTITY_FILE: &str = "cluster-id";

/// Makes sure etcd still holds the cluster this data directory belongs to, and returns
/// the cluster's identity. A new cluster gets one (the first host creates it); a host
/// that joins learns it. A host whose data directory remembers an identity that etcd
/// does not hold refuses to start: etcd lost the cluster (wiped, or replaced), and
/// serving on would hand out the cluster's topics and queues as if they did not exist.
/// `ferry-broker metadata rebuild` puts the cluster's records back from the hosts' data.
pub async fn check_identity(
    meta: &dyn MetadataStore,
    cluster: &str,
    data_dir: &Path,
) -> BrokerResult<u64> {
    let path = data_dir.join(IDENTITY_FILE);
    let local = read_identity(data_dir)?;
    let key = keys::cluster_identity(cluster);
    let stored = match meta.get(&key).await? {
        Some(kv) => Some(decode_json::<ClusterIdentity>(&kv.key, &kv.value)?.cluster_id),
        None => None,
    };
    let identity = match identity::check(local, stored) {
        IdentityCheck::Serve(local) => return Ok(local),
        IdentityCheck::Refuse { local, stored } => {
            return Err(BrokerError::Internal(format!(
                "etcd does not hold the cluster {cluster:?} this host's data belongs to \
                 (identity {local}; etcd has {}): etcd lost the cluster's metadata. Nothing was \
                 deleted. Stop every host, run `ferry-broker metadata rebuild` on each with the \
                 same --cluster, --host-id, --etcd and --data-dir, then start them \
                 (docs/cluster.md, \"When etcd loses the cluster\")",
                stored.map_or_else(|| "none".to_owned(), |s| s.to_string())
            )));
        }
        IdentityCheck::Join(stored) => stored,
        IdentityCheck::Create => create_identity(meta, &key).await?,
    };
    write_file(data_dir, &path, &identity.to_string())?;
    Ok(identity)
}

/// The cluster identity this data directory remembers, if it belongs to a cluster yet.
pub fn read_identity(data_dir: &Path) -> BrokerResult<Option<u64>> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            BrokerError::Internal(format!("{} holds no cluster identity", path.display()))
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(BrokerError::Internal(format!(
            "cannot read {}: {err}",
            path.display()
        ))),
    }
}

/// Creates the cluster's identity, or reads the one another host created first.
async fn create_identity(meta: &dyn MetadataStore, key: &str) -> BrokerResult<u64> {
    let identity = ClusterIdentity {
        cluster_id: crate::clock::unique_id(),
        created_at_ms: crate::clock::now_ms(),
    };
    if meta.create(key, encode_json(&identity)).await? {
        return Ok(identity.cluster_id);
    }
    let kv = meta
        .get(key)
        .await?
        .ok_or_else(|| BrokerError::Internal(format!("{key} vanished while it was created")))?;
    Ok(decode_json::<ClusterIdentity>(&kv.key, &kv.value)?.cluster_id)
}

/// Recovers every log under `data_dir` (confining any damage to lost ranges) and, if
/// any still holds a lost range or had a torn tail cut (which may have been synced and
/// acknowledged: a flipped bit in the last batch looks like a torn write), leaves every
/// in-sync set before the host registers — the last member too, leaving the partition
/// leaderless until every replica has reported its log (`docs/replication.md`).
/// Returns the damaged log directories.
pub async fn leave_if_damaged(
    meta: &dyn MetadataStore,
    cluster: &str,
    host_id: &str,
    data_dir: &Path,
) -> BrokerResult<Vec<PathBuf>> {
    let root = data_dir.to_path_buf();
    let damaged = tokio::task::spawn_blocking(move || damaged_logs(&root))
        .await
        .map_err(|err| BrokerError::Internal(format!("checking the logs failed: {err}")))?
        .map_err(|err| BrokerError::Internal(format!("checking the logs failed: {err}")))?;
    if damaged.is_empty() {
        return Ok(damaged);
    }
    let left = rewrite_states(meta, cluster, |state| election::leave(state, host_id)).await?;
    // Left: a torn tail recovery cut has done its harm to the in-sync sets, and the
    // next start need not leave them again for it.
    let forgetting = damaged.clone();
    tokio::task::spawn_blocking(move || forget_torn_tails(&forgetting))
        .await
        .map_err(|err| BrokerError::Internal(format!("forgetting torn tails failed: {err}")))?
        .map_err(|err| BrokerError::Internal(format!("forgetting torn tails failed: {err}")))?;
    tracing::error!(
        host = host_id,
        logs = ?damaged,
        partitions_left = left,
        "logs hold records lost to damage on disk (or recovery cut a tail): left the in-sync \
         sets; each damaged replica repairs from its leader, and a partition left without \
         in-sync replicas elects again once every replica has reported its log"
    );
    Ok(damaged)
}

/// How deep log directories sit under the data directory (`topics/{t}/{p}`,
/// `queues/{q}/{log}`), bounding the walk.
const MAX_LOG_DEPTH: usize = 4;

/// Opens and closes every log directory under `root` (recovery confines damage and
/// records it), returning those that hold lost ranges.
fn damaged_logs(root: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let mut damaged = Vec::new();
    let mut pending = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut is_log = false;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if depth < MAX_LOG_DEPTH {
                    pending.push((path, depth + 1));
                }
            } else if is_segment_file(&path) {
                is_log = true;
            }
        }
        if is_log {
            let log = Log::open(&dir, LogConfig::default())?;
            let lost = log.lost_ranges()?;
            let torn = log.torn_tail()?;
            log.close()?;
            if !lost.is_empty() || torn.is_some() {
                damaged.push(dir);
            }
        }
    }
    Ok(damaged)
}

/// Forgets the torn tails recorded in `dirs` (their host has left the in-sync sets).
fn forget_torn_tails(dirs: &[PathBuf]) -> Result<(), StorageError> {
    dirs.iter()
        .try_for_each(|dir| ferry_storage::forget_torn_tail(dir))
}

/// Whether `path` names a segment file (`{base_offset:020}.log`), as storage writes them.
fn is_segment_file(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "log")
        && path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .is_some_and(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
}

/// Makes a host starting up resign every leadership it held ([`election::resign`]):
/// it may have lost writes past its last fsync that followers copied, so it must not
/// write at those offsets again in the same epoch. Returns how many it resigned.
pub async fn resign_leaderships(
    meta: &dyn MetadataStore,
    cluster: &str,
    host_id: &str,
) -> BrokerResult<usize> {
    rewrite_states(meta, cluster, |state| election::resign(state, host_id)).await
}

/// Applies `change` to every partition state of `cluster`, each by compare-and-swap
/// (read again and retried when another writer got there first). Returns how many
/// states changed.
async fn rewrite_states(
    meta: &dyn MetadataStore,
    cluster: &str,
    change: impl Fn(&PartitionState) -> Option<PartitionState>,
) -> BrokerResult<usize> {
    let mut changed = 0;
    for kv in meta.list(&keys::cluster_partitions(cluster)).await? {
        let mut current = kv;
        for attempt in 0.. {
            let state: PartitionState = decode_json(&current.key, &current.value)?;
            let Some(next) = change(&state) else {
                break;
            };
            let outcome = meta
                .txn(
                    vec![Compare::ModRevision {
                        key: current.key.clone(),
                        revision: Some(current.mod_revision),
                    }],
                    vec![Op::Put {
                        key: current.key.clone(),
                        value: encode_json(&next),
                    }],
                )
                .await?;
            if outcome.succeeded {
                changed += 1;
                break;
            }
            if attempt + 1 >= MAX_ATTEMPTS {
                return Err(BrokerError::Internal(format!(
                    "{}: the partition state kept changing while this host rewrote it",
                    current.key
                )));
            }
            match meta.get(&current.key).await? {
                Some(fresh) => current = fresh,
                // Deleted meanwhile: nothing to leave.
                None => break,
            }
        }
    }
    Ok(changed)
}

/// Writes `contents` to `path` in `data_dir` atomically and durably.
fn write_file(data_dir: &Path, path: &Path, contents: &str) -> BrokerResult<()> {
    let io = |err: std::io::Error| {
        BrokerError::Internal(format!("cannot write {}: {err}", path.display()))
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{EmbeddedConfig, EmbeddedStore, MetadataStoreExt};
    use ferry_replication::LogKind;

    fn state(leader: &str, isr: &[&str]) -> PartitionState {
        PartitionState {
            replicas: vec!["h0".into(), "h1".into(), "h2".into()],
            leader: Some(leader.to_owned()),
            leader_epoch: 4,
            isr: isr.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    async fn read(store: &EmbeddedStore, key: &str) -> PartitionState {
        let kv = store.get(key).await.expect("get").expect("present");
        decode_json(&kv.key, &kv.value).expect("a partition state")
    }

    #[tokio::test]
    async fn a_new_disk_leaves_every_in_sync_set_once_and_a_claimed_disk_is_kept() {
        let meta_dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&EmbeddedConfig {
            path: EmbeddedStore::default_path(meta_dir.path()),
            watch_buffer: 16,
        })
        .expect("open store");
        let led = keys::partition_state("c", LogKind::Topic, "orders", 0);
        let followed = keys::partition_state("c", LogKind::Queue, "jobs", 0);
        let elsewhere = keys::partition_state("c", LogKind::Topic, "orders", 1);
        store
            .put(&led, encode_json(&state("h0", &["h0", "h1"])))
            .await
            .expect("put");
        store
            .put(&followed, encode_json(&state("h1", &["h1", "h0", "h2"])))
            .await
            .expect("put");
        store
            .put(&elsewhere, encode_json(&state("h2", &["h2", "h1"])))
            .await
            .expect("put");
        let data = tempfile::tempdir().expect("tempdir");

        claim(&store, "c", "h0", data.path()).await.expect("claim");

        let deposed = read(&store, &led).await;
        assert_eq!(
            (deposed.leader, deposed.leader_epoch, deposed.isr),
            (None, 5, vec!["h1".to_owned()]),
            "a leader with a new disk is deposed and leaves the set"
        );
        let followed_now = read(&store, &followed).await;
        assert_eq!(
            (followed_now.leader.as_deref(), followed_now.leader_epoch),
            (Some("h1"), 4)
        );
        assert_eq!(followed_now.isr, vec!["h1".to_owned(), "h2".to_owned()]);
        assert_eq!(read(&store, &elsewhere).await, state("h2", &["h2", "h1"]));

        // Claimed now: a restart with the same disk changes nothing.
        store
            .put(&followed, encode_json(&state("h1", &["h1", "h0", "h2"])))
            .await
            .expect("put");
        claim(&store, "c", "h0", data.path())
            .await
            .expect("claim again");
        assert_eq!(
            read(&store, &followed).await.isr,
            vec!["h1".to_owned(), "h0".to_owned(), "h2".to_owned()]
        );

        // Another host's disk is refused.
        let refused = claim(&store, "c", "h1", data.path()).await;
        assert!(refused.is_err(), "{refused:?}");
    }
}
