//! Message data is removed only on a recorded deletion, never because the metadata
//! store does not mention it.
//!
//! Each topic or queue directory (`{kind}/{name}-{incarnation}/`) holds a copy of the
//! record that created it (`record.json`, written once the record is committed). A
//! deletion writes a tombstone (`/ferry/tombstones/{kind}/{name}/{incarnation}`) in the
//! same transaction that deletes the record. A directory is removed only if its
//! incarnation has a tombstone, or if it has no `record.json` (a create that never
//! committed, so nothing in it was ever acknowledged). A directory that no record
//! names and no tombstone explains — the metadata store lost it (a wiped etcd, a lost
//! embedded store) — is kept, reported, and can be put back with
//! `ferry-broker metadata rebuild` (`docs/etcd-keyspace.md`).

use std::path::{Path, PathBuf};

use ferry_replication::LogKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{BrokerError, BrokerResult};
use crate::meta::{MetadataStore, Op, encode_json, keys};

/// The copy of its record in a topic or queue directory.
pub const RECORD_FILE: &str = "record.json";

/// What may happen to a directory no open topic or queue uses any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposal {
    /// Its deletion was recorded (or it never held acknowledged data): remove it.
    Remove,
    /// Nothing records its deletion: keep it.
    Keep,
}

/// The directory of one incarnation of a topic or queue under `root`.
pub fn resource_dir(root: &Path, name: &str, incarnation: u64) -> PathBuf {
    root.join(format!("{name}-{incarnation}"))
}

/// Splits a directory name `{name}-{incarnation}` (names may contain `-`).
pub fn parse_dir_name(file_name: &str) -> Option<(&str, u64)> {
    let (name, incarnation) = file_name.rsplit_once('-')?;
    Some((name, incarnation.parse().ok()?))
}

/// Writes `record` into `dir` as its record copy (atomically), so the data can be
/// matched to its record, and the record rebuilt, whatever the metadata store holds.
pub fn write_record(dir: &Path, record: &impl Serialize) -> BrokerResult<()> {
    let bytes = serde_json::to_vec_pretty(record)
        .map_err(|err| BrokerError::Internal(format!("encoding a record copy: {err}")))?;
    let target = dir.join(RECORD_FILE);
    let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
    let io = |err: std::io::Error| {
        BrokerError::Internal(format!("cannot write {}: {err}", target.display()))
    };
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, &target).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Reads the record copy in `dir`, if it has one that parses.
pub fn read_record<T: DeserializeOwned>(dir: &Path) -> Option<T> {
    let bytes = std::fs::read(dir.join(RECORD_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The tombstone write that goes with deleting a record.
pub fn tombstone_op(kind: LogKind, name: &str, incarnation: u64) -> Op {
    Op::Put {
        key: keys::tombstone(kind, name, incarnation),
        value: encode_json(&serde_json::json!({ "deleted_at_ms": crate::clock::now_ms() })),
    }
}

/// Whether the deletion of this incarnation was recorded.
pub async fn is_deleted(
    meta: &dyn MetadataStore,
    kind: LogKind,
    name: &str,
    incarnation: u64,
) -> BrokerResult<bool> {
    Ok(meta
        .get(&keys::tombstone(kind, name, incarnation))
        .await?
        .is_some())
}

/// What to do with the open incarnation (if any) of `name` once its record is gone or
/// replaced: remove it only if its deletion was recorded.
pub async fn disposal_of(
    meta: &dyn MetadataStore,
    kind: LogKind,
    name: &str,
    incarnation: Option<u64>,
) -> BrokerResult<Disposal> {
    let Some(incarnation) = incarnation else {
        return Ok(Disposal::Keep);
    };
    Ok(if is_deleted(meta, kind, name, incarnation).await? {
        Disposal::Remove
    } else {
        Disposal::Keep
    })
}

/// What to do with `dir` (an incarnation of `kind` no record names any more).
pub async fn disposal(
    meta: &dyn MetadataStore,
    kind: LogKind,
    dir: &Path,
) -> BrokerResult<Disposal> {
    let Some((name, incarnation)) = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_dir_name)
    else {
        return Ok(Disposal::Keep);
    };
    if !dir.join(RECORD_FILE).exists() || is_deleted(meta, kind, name, incarnation).await? {
        return Ok(Disposal::Remove);
    }
    Ok(Disposal::Keep)
}

/// Removes the directories under `root` (of `kind`) that no record in `known` names,
/// where a deletion was recorded or the create never committed; keeps and reports the
/// rest.
pub async fn remove_strays(
    meta: &dyn MetadataStore,
    kind: LogKind,
    root: &Path,
    known: &[PathBuf],
) -> BrokerResult<()> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if known.contains(&path) {
            continue;
        }
        match disposal(meta, kind, &path).await? {
            Disposal::Remove => {
                tracing::info!(dir = %path.display(), "removing the directory of a deleted or unfinished {kind} entry");
                remove_dir(&path);
            }
            Disposal::Keep => tracing::error!(
                dir = %path.display(),
                "no record names this directory and no deletion was recorded: keeping its data \
                 (if the metadata store lost the record, `ferry-broker metadata rebuild` puts it back)"
            ),
        }
    }
    Ok(())
}

/// Removes a directory tree, logging (not failing) if that is impossible.
pub fn remove_dir(dir: &Path) {
    if let Err(err) = std::fs::remove_dir_all(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), %err, "could not remove directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_split_at_the_last_dash() {
        assert_eq!(parse_dir_name("orders-42"), Some(("orders", 42)));
        assert_eq!(parse_dir_name("a-b-c-7"), Some(("a-b-c", 7)));
        assert_eq!(parse_dir_name("orders"), None);
        assert_eq!(parse_dir_name("orders-x"), None);
    }
}
