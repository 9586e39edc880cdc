//! Which BrokerCluster owns a topic or queue: the one it names, else the one chosen
//! before, else the least-loaded cluster of its namespace, else a default cluster the
//! operator creates.

use std::collections::BTreeMap;

use kube::api::{Api, ListParams, Patch};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use serde_json::json;

use super::kinds::Mapped;
use crate::cluster::{apply_params, uses_operator_etcd};
use crate::context::Context;
use crate::crd::BrokerCluster;
use crate::error::Error;
use crate::metadata::MetadataClient;
use crate::records::{Kind, cluster_etcd_name, keys};

/// Why no cluster could be used (a condition reason and message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// The condition reason.
    pub reason: &'static str,
    /// The condition message.
    pub message: String,
}

/// The owning cluster of `object`, or why there is none.
pub async fn choose<K: Mapped, M: MetadataClient>(
    object: &K,
    namespace: &str,
    ctx: &Context<M>,
) -> Result<Result<BrokerCluster, Unplaced>, Error> {
    let clusters: Api<BrokerCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let chosen = object.status_view().cluster;
    if let (Some(reference), Some(chosen)) = (object.cluster_ref(), chosen.as_deref())
        && reference != chosen
    {
        return Ok(Err(Unplaced {
            reason: "ClusterRefMismatch",
            message: format!(
                "clusterRef {reference} differs from cluster {chosen} the {} was placed on; moving between clusters is not supported.",
                K::KIND_NAME
            ),
        }));
    }
    if let Some(name) = object.cluster_ref().or(chosen.as_deref()) {
        return Ok(match clusters.get_opt(name).await? {
            Some(cluster) if !uses_operator_etcd(&cluster, &ctx.settings) => Err(Unplaced {
                reason: "SeparateEtcdUnsupported",
                message: format!(
                    "BrokerCluster {name} uses an etcd of its own; the operator writes topic and queue records only to its own etcd."
                ),
            }),
            Some(cluster) if cluster.meta().deletion_timestamp.is_none() => Ok(cluster),
            Some(_) => Err(Unplaced {
                reason: "ClusterDeleting",
                message: format!("BrokerCluster {name} is being deleted."),
            }),
            None => Err(Unplaced {
                reason: "ClusterNotFound",
                message: format!("BrokerCluster {name} does not exist in namespace {namespace}."),
            }),
        });
    }
    let candidates: Vec<BrokerCluster> = clusters
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| c.meta().deletion_timestamp.is_none() && uses_operator_etcd(c, &ctx.settings))
        .collect();
    if candidates.is_empty() {
        return create_default(object, namespace, ctx).await.map(Ok);
    }
    let load = load_by_cluster(&ctx.metadata).await?;
    let least_loaded = candidates.into_iter().min_by_key(|c| {
        let etcd_name = cluster_etcd_name(namespace, &c.name_any());
        (load.get(&etcd_name).copied().unwrap_or(0), c.name_any())
    });
    Ok(least_loaded.ok_or_else(|| Unplaced {
        reason: "ClusterNotFound",
        message: format!("No BrokerCluster in namespace {namespace}."),
    }))
}

/// Topic and queue records per cluster (etcd name).
async fn load_by_cluster<M: MetadataClient>(
    metadata: &M,
) -> Result<BTreeMap<String, usize>, Error> {
    #[derive(Deserialize)]
    struct Owner {
        #[serde(default)]
        cluster: Option<String>,
    }
    let mut load = BTreeMap::new();
    for kind in [Kind::Topic, Kind::Queue] {
        for entry in metadata.list_prefix(&keys::records(kind)).await? {
            // A record that does not parse is not ours to judge; it counts for no one.
            if let Ok(Owner {
                cluster: Some(cluster),
            }) = serde_json::from_slice(&entry.value)
            {
                *load.entry(cluster).or_insert(0) += 1;
            }
        }
    }
    Ok(load)
}

/// Creates the operator's default cluster in `namespace` (server-side apply, so
/// concurrent reconciles agree) with enough hosts for `object`.
async fn create_default<K: Mapped, M: MetadataClient>(
    object: &K,
    namespace: &str,
    ctx: &Context<M>,
) -> Result<BrokerCluster, Error> {
    let defaults = &ctx.settings.default_cluster;
    let hosts = defaults
        .hosts
        .max(i32::try_from(object.replication_factor()).unwrap_or(i32::MAX));
    let mut spec = json!({
        "hosts": hosts,
        "tls": {"enabled": defaults.tls},
        "auth": {"serviceAccountTokens": defaults.auth, "authorization": defaults.auth},
    });
    if let Some(image) = &defaults.image {
        spec["image"] = json!(image);
    }
    let body = json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "BrokerCluster",
        "metadata": {"name": defaults.name, "namespace": namespace},
        "spec": spec,
    });
    let clusters: Api<BrokerCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let cluster = clusters
        .patch(&defaults.name, &apply_params(), &Patch::Apply(&body))
        .await?;
    ctx.event(
        &object.object_ref(&()),
        EventType::Normal,
        "DefaultClusterCreated",
        "Place",
        format!(
            "No BrokerCluster in namespace {namespace}: created {} with {hosts} hosts.",
            defaults.name
        ),
    )
    .await;
    Ok(cluster)
}

/// Raises the cluster's hosts to the replication factor when it has fewer. Returns
/// whether it did.
pub async fn ensure_hosts<K: Mapped, M: MetadataClient>(
    object: &K,
    cluster: &BrokerCluster,
    ctx: &Context<M>,
) -> Result<bool, Error> {
    let needed = i32::try_from(object.replication_factor()).unwrap_or(i32::MAX);
    if cluster.spec.hosts >= needed {
        return Ok(false);
    }
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let clusters: Api<BrokerCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({"spec": {"hosts": needed}});
    clusters
        .patch(
            &cluster.name_any(),
            &Default::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    ctx.event(
        &object.object_ref(&()),
        EventType::Normal,
        "ClusterScaledUp",
        "Place",
        format!(
            "BrokerCluster {} scaled from {} to {needed} hosts for replication factor {needed}.",
            cluster.name_any(),
            cluster.spec.hosts
        ),
    )
    .await;
    Ok(true)
}
