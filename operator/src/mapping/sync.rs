//! Bringing a topic's or queue's etcd record to what its resource asks for, and
//! reading what the cluster publishes about it.

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use serde_json::Value;

use super::kinds::{Mapped, Observed};
use super::{Decided, claim};
use crate::conditions::Status;
use crate::context::Context;
use crate::crd::BrokerCluster;
use crate::error::Error;
use crate::metadata::{Entry, MetadataClient};
use crate::records::{
    Kind, ObservedPartition, ObservedQueue, PartitionState, Record, digest, keys, new_incarnation,
    now_ms,
};

/// What the sync did.
#[derive(Debug)]
pub enum SyncOutcome {
    /// The record was created or put back.
    Written {
        /// The record's incarnation.
        incarnation: u64,
        /// The digest of what was written.
        digest: String,
        /// The `Synced` condition.
        observation: Decided,
    },
    /// The record is this resource's and unchanged since written.
    InSync {
        /// The record's incarnation.
        incarnation: u64,
        /// Its digest.
        digest: String,
        /// The `Synced` condition (false when the spec changed in a way a live topic or
        /// queue cannot follow).
        observation: Decided,
    },
    /// The name belongs to another record; nothing was written.
    Refused {
        /// This resource's own claim, as the API server has it.
        incarnation: Option<u64>,
        /// The digest of what this resource last wrote, as the API server has it.
        digest: Option<String>,
        /// The `Synced` condition.
        observation: Decided,
    },
    /// Another writer created the record between the read and the write; reconcile
    /// again at once.
    Raced,
}

/// The incarnation of a record, if it parses that far.
pub fn owned_record(value: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(value)
        .ok()?
        .get("incarnation")?
        .as_u64()
}

/// Creates, repairs or checks the record of `object`.
pub async fn sync_record<K: Mapped, M: MetadataClient>(
    object: &K,
    cluster: &BrokerCluster,
    etcd_cluster: &str,
    namespace: &str,
    ctx: &Context<M>,
) -> Result<SyncOutcome, Error> {
    let view = object.status_view();
    let name = object.broker_name();
    let key = keys::record(K::KIND, &name);
    let settings = object.settings(&cluster.spec.config);
    let kind = K::KIND_NAME.to_lowercase();
    let reference = object.object_ref(&());
    let cluster_name = cluster.name_any();

    let Some(entry) = ctx.metadata.get(&key).await? else {
        // Claimed but never written (a crash between the two): reuse the claim.
        // Written before and now gone: removed out of band, so a new incarnation.
        let restored = view.record_digest.is_some();
        let incarnation = match view.incarnation {
            Some(claimed) if !restored => claimed,
            _ => {
                let fresh = new_incarnation();
                claim(object, namespace, ctx, &cluster_name, fresh).await?;
                fresh
            }
        };
        let record = Record {
            name: name.clone(),
            settings,
            created_at_ms: now_ms(),
            incarnation,
            cluster: Some(etcd_cluster.to_owned()),
        };
        let bytes = serde_json::to_vec(&record)?;
        if !ctx.metadata.create(&key, bytes.clone()).await? {
            return Ok(SyncOutcome::Raced);
        }
        let (reason, note) = if restored {
            (
                "RecordRestored",
                format!(
                    "The etcd record of {kind} {name} was removed out of band; wrote it again (incarnation {incarnation})."
                ),
            )
        } else {
            (
                "RecordCreated",
                format!(
                    "Mapped {kind} {name} to cluster {cluster_name} in etcd (incarnation {incarnation})."
                ),
            )
        };
        let type_ = if restored {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(&reference, type_, reason, "Sync", note.clone())
            .await;
        return Ok(SyncOutcome::Written {
            incarnation,
            digest: digest(&bytes),
            observation: Decided {
                status: Status::True,
                reason: "Mapped",
                message: note,
            },
        });
    };

    let incarnation = owned_record(&entry.value);
    let mut view = view;
    if incarnation.is_some() && incarnation != view.incarnation {
        // The cached object may predate this operator's own claim (the watch lags the
        // status write): ask the API server before calling the record someone else's.
        let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
        view = api.get(&object.name_any()).await?.status_view();
    }
    if incarnation.is_none() || incarnation != view.incarnation {
        return Ok(SyncOutcome::Refused {
            incarnation: view.incarnation,
            digest: view.record_digest.clone(),
            observation: Decided {
                status: Status::False,
                reason: "NameTaken",
                message: format!(
                    "{key} holds a {kind} this resource did not create; it is never overwritten. Set spec.{kind}Name to another name."
                ),
            },
        });
    }
    let incarnation = incarnation.unwrap_or_default();
    let current: Option<Record<K::Settings>> = serde_json::from_slice(&entry.value).ok();
    let desired = |created_at_ms: i64, settings: K::Settings| Record {
        name: name.clone(),
        settings,
        created_at_ms,
        incarnation,
        cluster: Some(etcd_cluster.to_owned()),
    };
    let matches_written = view.record_digest.as_deref() == Some(digest(&entry.value).as_str());
    let in_sync = |record: &Record<K::Settings>| {
        record.settings == settings
            && record.cluster.as_deref() == Some(etcd_cluster)
            && record.name == name
    };
    match current {
        Some(record) if in_sync(&record) => Ok(SyncOutcome::InSync {
            incarnation,
            digest: digest(&entry.value),
            observation: Decided {
                status: Status::True,
                reason: "Mapped",
                message: format!("The etcd record of {kind} {name} matches the spec."),
            },
        }),
        Some(record) if matches_written => Ok(SyncOutcome::InSync {
            incarnation,
            digest: digest(&entry.value),
            observation: Decided {
                status: Status::False,
                reason: "SpecChangeNotApplied",
                message: format!(
                    "The spec changed settings of {kind} {name} that a live {kind} cannot change; the record keeps {}.",
                    changed_fields(&record.settings, &settings)
                ),
            },
        }),
        other => {
            // Changed by someone else (or unreadable): put the spec's settings back,
            // keeping the incarnation and creation time so the data stays its own.
            let created_at_ms = other.map_or_else(now_ms, |r| r.created_at_ms);
            let bytes = serde_json::to_vec(&desired(created_at_ms, settings.clone()))?;
            if !put_back(&entry, &key, bytes.clone(), ctx).await? {
                return Ok(SyncOutcome::Raced);
            }
            let note = format!(
                "The etcd record of {kind} {name} was changed out of band; put the spec's settings back."
            );
            ctx.event(
                &reference,
                EventType::Warning,
                "RecordRepaired",
                "Sync",
                note.clone(),
            )
            .await;
            Ok(SyncOutcome::Written {
                incarnation,
                digest: digest(&bytes),
                observation: Decided {
                    status: Status::True,
                    reason: "Mapped",
                    message: note,
                },
            })
        }
    }
}

async fn put_back<M: MetadataClient>(
    entry: &Entry,
    key: &str,
    bytes: Vec<u8>,
    ctx: &Context<M>,
) -> Result<bool, Error> {
    Ok(ctx.metadata.put(key, bytes, entry.mod_revision).await?)
}

/// The settings fields whose values differ, with the record's value, for messages.
fn changed_fields<S: serde::Serialize>(record: &S, spec: &S) -> String {
    let (Ok(Value::Object(record)), Ok(Value::Object(spec))) =
        (serde_json::to_value(record), serde_json::to_value(spec))
    else {
        return "its settings".to_owned();
    };
    let changed: Vec<String> = record
        .iter()
        .filter(|(field, value)| spec.get(*field) != Some(value))
        .map(|(field, value)| format!("{field}={value}"))
        .collect();
    changed.join(", ")
}

/// Leaders and contents of `object`'s partitions as the cluster publishes them.
pub async fn observe<K: Mapped, M: MetadataClient>(
    object: &K,
    etcd_cluster: &str,
    metadata: &M,
) -> Result<Observed, Error> {
    let name = object.broker_name();
    let total = object.partitions();
    let prefix = keys::partitions_of(etcd_cluster, K::KIND, &name);
    let mut led = 0;
    for entry in metadata.list_prefix(&prefix).await? {
        let in_range = partition_index(&entry.key, &prefix).is_some_and(|p| p < total);
        let state: PartitionState = serde_json::from_slice(&entry.value)?;
        if in_range && state.leader.is_some() {
            led += 1;
        }
    }
    let (depth, empty) = match K::KIND {
        Kind::Queue => {
            let observed = metadata
                .get(&keys::observed_queue(etcd_cluster, &name))
                .await?;
            match observed {
                Some(entry) => {
                    let queue: ObservedQueue = serde_json::from_slice(&entry.value)?;
                    (Some(queue.depth), Some(queue.depth == 0))
                }
                None => (None, None),
            }
        }
        Kind::Topic => {
            let prefix = keys::observed_topic(etcd_cluster, &name);
            let mut seen = 0;
            let mut all_empty = true;
            for entry in metadata.list_prefix(&prefix).await? {
                if partition_index(&entry.key, &prefix).is_none_or(|p| p >= total) {
                    continue;
                }
                let partition: ObservedPartition = serde_json::from_slice(&entry.value)?;
                seen += 1;
                all_empty &= partition.log_start == partition.high_watermark;
            }
            (None, (seen == total).then_some(all_empty))
        }
    };
    Ok(Observed {
        led,
        total,
        depth,
        empty,
    })
}

fn partition_index(key: &str, prefix: &str) -> Option<u32> {
    key.strip_prefix(prefix)?.parse().ok()
}
