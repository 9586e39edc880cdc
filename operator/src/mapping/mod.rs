//! The Topic and Queue reconciler (one generic reconciler over [`Mapped`]): places the
//! resource on a BrokerCluster, writes its record to etcd in the brokers' format,
//! repairs drift, reports status from what the cluster publishes, and honours
//! `deletionPolicy` through a finalizer.
//!
//! Broker names are global (one etcd keyspace for every cluster and namespace). A
//! record belongs to the resource whose `status.incarnation` it carries; the operator
//! claims an incarnation in status *before* it creates the record, so a crash between
//! the two never leaves a record it would later refuse as someone else's.

pub(crate) mod access;
pub mod kinds;
pub mod placement;
mod sync;

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalize, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value, json};
use tracing::{info, instrument};

use crate::cluster::apply_params;
use crate::conditions::{self, Observation, READY, SYNCED, Status};
use crate::context::Context;
use crate::crd::{BrokerCluster, DeletionPolicy};
use crate::error::Error;
use crate::metadata::MetadataClient;
use crate::records::{cluster_etcd_name, keys};
pub use kinds::{Mapped, Observed, StatusView};
use sync::{SyncOutcome, observe, owned_record};

/// The finalizer on every Topic and Queue.
pub const FINALIZER: &str = "ferry.dev/cleanup";

/// Reconciles one Topic or Queue.
#[instrument(skip_all, fields(kind = K::KIND_NAME, namespace = object.namespace(), name = object.name_any()))]
pub async fn reconcile<K: Mapped, M: MetadataClient>(
    object: Arc<K>,
    ctx: Arc<Context<M>>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(K::KIND_NAME);
    let namespace = object.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let outcome = finalizer(&api, FINALIZER, object, |event| async {
        match event {
            Finalize::Apply(object) => apply(object.as_ref(), &namespace, &ctx).await,
            Finalize::Cleanup(object) => cleanup(object.as_ref(), &namespace, &ctx).await,
        }
    })
    .await;
    Ok(outcome?)
}

/// What a status write says beyond the conditions.
#[derive(Debug, Default)]
struct StatusFields {
    cluster: Option<String>,
    address: Option<String>,
    incarnation: Option<u64>,
    record_digest: Option<String>,
    observed: Option<Observed>,
}

impl StatusFields {
    /// What a status write that changes nothing keeps of `view`: the mapping made
    /// before (cluster, incarnation, record digest).
    fn kept(view: &StatusView) -> Self {
        Self {
            cluster: view.cluster.clone(),
            incarnation: view.incarnation,
            record_digest: view.record_digest.clone(),
            ..Self::default()
        }
    }
}

async fn apply<K: Mapped, M: MetadataClient>(
    object: &K,
    namespace: &str,
    ctx: &Context<M>,
) -> Result<Action, Error> {
    let view = object.status_view();
    let mut conditions = view.conditions.clone();
    let generation = object.meta().generation;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    if conditions::is_paused(object.meta()) {
        // Nothing is placed or written; what was mapped stays in the status.
        conditions::set(&mut conditions, conditions::paused(generation), &now);
        let fields = StatusFields::kept(&view);
        write_status(object, namespace, ctx, &view.conditions, conditions, fields).await?;
        return Ok(Action::await_change());
    }
    let cluster = match placement::choose(object, namespace, ctx).await? {
        Ok(cluster) => cluster,
        Err(unplaced) => {
            for type_ in [SYNCED, READY] {
                conditions::set(
                    &mut conditions,
                    Observation {
                        type_,
                        status: Status::False,
                        reason: unplaced.reason,
                        message: unplaced.message.clone(),
                        observed_generation: generation,
                    },
                    &now,
                );
            }
            let fields = StatusFields::kept(&view);
            write_status(object, namespace, ctx, &view.conditions, conditions, fields).await?;
            return Ok(Action::requeue(ctx.settings.resync_interval));
        }
    };
    placement::ensure_hosts(object, &cluster, ctx).await?;
    let cluster_name = cluster.name_any();
    let etcd_cluster = cluster_etcd_name(namespace, &cluster_name);

    let outcome = sync::sync_record(object, &cluster, &etcd_cluster, namespace, ctx).await?;
    let (synced, incarnation, digest) = match &outcome {
        SyncOutcome::Written {
            incarnation,
            digest,
            observation,
        }
        | SyncOutcome::InSync {
            incarnation,
            digest,
            observation,
        } => (
            observation.clone(),
            Some(*incarnation),
            Some(digest.clone()),
        ),
        SyncOutcome::Refused {
            observation,
            incarnation,
            digest,
        } => (observation.clone(), *incarnation, digest.clone()),
        SyncOutcome::Raced => return Ok(Action::requeue(std::time::Duration::ZERO)),
    };
    let owned = !matches!(outcome, SyncOutcome::Refused { .. });
    if owned {
        access::ensure_namespace_rules(object, namespace, ctx).await?;
    }
    let observed = if owned {
        Some(observe(object, &etcd_cluster, &ctx.metadata).await?)
    } else {
        None
    };
    conditions::set(&mut conditions, synced.observation(generation), &now);
    conditions::set(
        &mut conditions,
        ready(object, observed.as_ref(), generation),
        &now,
    );
    let fields = StatusFields {
        address: Some(format!(
            "{cluster_name}-client.{namespace}.svc:{}",
            ctx.settings.broker_port
        )),
        cluster: Some(cluster_name),
        incarnation,
        record_digest: digest,
        observed,
    };
    write_status(object, namespace, ctx, &view.conditions, conditions, fields).await?;
    info!(broker_name = object.broker_name(), "reconciled");
    Ok(Action::requeue(ctx.settings.resync_interval))
}

/// A condition decided by the sync, its generation filled in later.
#[derive(Debug, Clone)]
pub struct Decided {
    status: Status,
    reason: &'static str,
    message: String,
}

impl Decided {
    fn observation(&self, generation: Option<i64>) -> Observation<'static> {
        Observation {
            type_: SYNCED,
            status: self.status,
            reason: self.reason,
            message: self.message.clone(),
            observed_generation: generation,
        }
    }
}

fn ready<K: Mapped>(
    object: &K,
    observed: Option<&Observed>,
    generation: Option<i64>,
) -> Observation<'static> {
    let (status, reason, message) = match observed {
        None => (
            Status::False,
            "NotMapped",
            format!("The {} has no record of its own in etcd.", K::KIND_NAME),
        ),
        Some(o) if o.total > 0 && o.led == o.total => (
            Status::True,
            "LeadersElected",
            format!("Every partition ({}) has a leader.", o.total),
        ),
        Some(o) => (
            Status::False,
            "LeadersMissing",
            format!(
                "{} of {} partitions have a leader on the cluster.",
                o.led, o.total
            ),
        ),
    };
    let _ = object;
    Observation {
        type_: READY,
        status,
        reason,
        message,
        observed_generation: generation,
    }
}

/// Writes the whole status the operator owns (server-side apply), then publishes an
/// event for every condition that changed.
async fn write_status<K: Mapped, M: MetadataClient>(
    object: &K,
    namespace: &str,
    ctx: &Context<M>,
    before: &[Condition],
    conditions: Vec<Condition>,
    fields: StatusFields,
) -> Result<(), Error> {
    let mut status = Map::new();
    status.insert("conditions".to_owned(), serde_json::to_value(&conditions)?);
    if let Some(generation) = object.meta().generation {
        status.insert("observedGeneration".to_owned(), json!(generation));
    }
    status.insert("brokerName".to_owned(), json!(object.broker_name()));
    let optional = [
        ("cluster", fields.cluster.map(Value::from)),
        ("address", fields.address.map(Value::from)),
        ("incarnation", fields.incarnation.map(Value::from)),
        ("recordDigest", fields.record_digest.map(Value::from)),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            status.insert(key.to_owned(), value);
        }
    }
    if let Some(observed) = &fields.observed {
        status.extend(K::observed_status(observed));
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch_status(&object.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await?;
    ctx.condition_events(&object.object_ref(&()), before, &conditions)
        .await;
    Ok(())
}

/// Claims `incarnation` in status before the record is created (see the module
/// docs). Keeps the conditions as they are.
pub(crate) async fn claim<K: Mapped, M: MetadataClient>(
    object: &K,
    namespace: &str,
    ctx: &Context<M>,
    cluster: &str,
    incarnation: u64,
) -> Result<(), Error> {
    let view = object.status_view();
    let fields = StatusFields {
        cluster: Some(cluster.to_owned()),
        incarnation: Some(incarnation),
        ..StatusFields::default()
    };
    write_status(
        object,
        namespace,
        ctx,
        &view.conditions,
        view.conditions.clone(),
        fields,
    )
    .await
}

async fn cleanup<K: Mapped, M: MetadataClient>(
    object: &K,
    namespace: &str,
    ctx: &Context<M>,
) -> Result<Action, Error> {
    let view = object.status_view();
    let reference = object.object_ref(&());
    let name = object.broker_name();
    let kind = K::KIND_NAME.to_lowercase();
    // The namespace's access goes with the resource, whatever becomes of the data.
    access::remove_namespace_rule(object, namespace, ctx).await?;
    let (Some(incarnation), Some(cluster)) = (view.incarnation, view.cluster.clone()) else {
        // Never mapped: nothing in etcd is this resource's.
        return Ok(Action::await_change());
    };
    let policy = object.deletion_policy();
    if policy == DeletionPolicy::Retain {
        ctx.event(
            &reference,
            EventType::Normal,
            "Retained",
            "Delete",
            format!(
                "Kept {kind} {name} and its data on cluster {cluster} (deletionPolicy Retain)."
            ),
        )
        .await;
        return Ok(Action::await_change());
    }
    let clusters: Api<BrokerCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let cluster_gone = clusters
        .get_opt(&cluster)
        .await?
        .is_none_or(|c| c.meta().deletion_timestamp.is_some());
    if cluster_gone {
        // Nothing can delete the data any more; drop a Delete record so no dead
        // mapping lingers, and let the resource go so its namespace never hangs.
        if policy == DeletionPolicy::Delete {
            delete_owned::<K, M>(&name, incarnation, ctx).await?;
        }
        ctx.event(&reference, EventType::Warning, "ClusterGone", "Delete",
            format!("BrokerCluster {cluster} is gone or being deleted: released {kind} {name} without deleting data.")).await;
        return Ok(Action::await_change());
    }
    if policy == DeletionPolicy::DeleteIfEmpty {
        let etcd_cluster = cluster_etcd_name(namespace, &cluster);
        let observed = observe(object, &etcd_cluster, &ctx.metadata).await?;
        if observed.empty != Some(true) {
            let message = match observed.empty {
                Some(_) => format!(
                    "deletionPolicy DeleteIfEmpty: {kind} {name} still holds messages; deletion waits until it is empty."
                ),
                None => format!(
                    "deletionPolicy DeleteIfEmpty: the cluster has not published whether {kind} {name} is empty; deletion waits."
                ),
            };
            let mut conditions = view.conditions.clone();
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            conditions::set(
                &mut conditions,
                Observation {
                    type_: SYNCED,
                    status: Status::False,
                    reason: "DeletionBlocked",
                    message: message.clone(),
                    observed_generation: object.meta().generation,
                },
                &now,
            );
            let fields = StatusFields {
                cluster: Some(cluster),
                incarnation: Some(incarnation),
                record_digest: view.record_digest.clone(),
                observed: Some(observed),
                ..StatusFields::default()
            };
            write_status(object, namespace, ctx, &view.conditions, conditions, fields).await?;
            return Err(Error::NotEmpty(format!("{kind} {name}")));
        }
    }
    delete_owned::<K, M>(&name, incarnation, ctx).await?;
    ctx.event(
        &reference,
        EventType::Normal,
        "Deleted",
        "Delete",
        format!("Deleted {kind} {name} from cluster {cluster}; its hosts delete the data."),
    )
    .await;
    Ok(Action::await_change())
}

/// Deletes the record of `name` if it is this resource's incarnation, recording the
/// deletion (a tombstone) in the same transaction so the hosts remove the data.
async fn delete_owned<K: Mapped, M: MetadataClient>(
    name: &str,
    incarnation: u64,
    ctx: &Context<M>,
) -> Result<(), Error> {
    let key = &keys::record(K::KIND, name);
    let Some(entry) = ctx.metadata.get(key).await? else {
        return Ok(());
    };
    if owned_record(&entry.value) != Some(incarnation) {
        return Ok(());
    }
    let tombstone = (
        keys::tombstone(K::KIND, name, incarnation),
        serde_json::to_vec(&json!({ "deleted_at_ms": crate::records::now_ms() }))
            .unwrap_or_default(),
    );
    if ctx
        .metadata
        .delete(key, entry.mod_revision, tombstone)
        .await?
    {
        Ok(())
    } else {
        Err(Error::Finalizer(format!(
            "{key} changed while it was being deleted"
        )))
    }
}

#[cfg(test)]
mod tests;
