//! The BrokerCluster reconciler: server-side applies the cluster's ServiceAccount,
//! ConfigMap, Services, StatefulSet and PodDisruptionBudget (all owned by the
//! BrokerCluster, so Kubernetes deletes them with it), refuses a scale-down while
//! the leaving hosts still hold partition replicas, and reports hosts ready and
//! registered in etcd.
//!
//! No finalizer: owner references clean up everything the cluster owns, and a
//! finalizer here could only hold a namespace in Terminating.

pub mod resources;

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, instrument};

use crate::conditions::{self, Observation, READY, SYNCED, Status};
use crate::context::{Context, MANAGER};
use crate::crd::{BrokerCluster, BrokerClusterStatus};
use crate::error::Error;
use crate::metadata::MetadataClient;
use crate::records::{PartitionState, cluster_etcd_name, keys};
use resources::ClusterNames;

/// The kind label of this reconciler's metrics.
pub const KIND: &str = "BrokerCluster";

/// Condition reason: a scale-down waits for the leaving hosts to hold no replicas.
pub const SCALE_DOWN_BLOCKED: &str = "ScaleDownBlocked";

/// Reconciles one BrokerCluster.
#[instrument(skip_all, fields(kind = KIND, namespace = cluster.namespace(), name = cluster.name_any()))]
pub async fn reconcile<M: MetadataClient>(
    cluster: Arc<BrokerCluster>,
    ctx: Arc<Context<M>>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(KIND);
    if cluster.meta().deletion_timestamp.is_some() {
        // The garbage collector removes what the cluster owns.
        return Ok(Action::await_change());
    }
    if conditions::is_paused(cluster.meta()) {
        report_paused(&cluster, &ctx).await?;
        return Ok(Action::await_change());
    }
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("uid"))?;
    let names = ClusterNames {
        name: cluster.name_any(),
        etcd_name: cluster_etcd_name(&namespace, &cluster.name_any()),
        namespace,
    };
    let settings = &ctx.settings;
    let client = ctx.client.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &names.namespace);
    let existing = sets.get_opt(&names.name).await?;
    let current_hosts = existing
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(0);

    let wanted_hosts = cluster.spec.hosts;
    let shared_etcd = uses_operator_etcd(&cluster, settings);
    let leaving_with_replicas = if wanted_hosts >= current_hosts {
        BTreeSet::new()
    } else if shared_etcd {
        leaving_hosts_with_replicas(&ctx.metadata, &names, wanted_hosts, current_hosts).await?
    } else {
        // The operator cannot read an etcd of the cluster's own, so it cannot tell
        // whether the leaving hosts are drained: it keeps them.
        (wanted_hosts.max(0)..current_hosts)
            .map(|o| names.pod(o))
            .collect()
    };
    let hosts = if leaving_with_replicas.is_empty() {
        wanted_hosts
    } else {
        current_hosts
    };

    apply(&client, &names, &resources::service_account(&names, &owner)).await?;
    let config_map = resources::config_map(&names, &owner, &cluster);
    apply::<ConfigMap>(&client, &names, &config_map).await?;
    apply::<Service>(
        &client,
        &names,
        &resources::headless_service(&names, &owner, settings),
    )
    .await?;
    apply::<Service>(
        &client,
        &names,
        &resources::client_service(&names, &owner, settings),
    )
    .await?;
    let mut set = resources::stateful_set(&names, &owner, &cluster, settings, hosts);
    let resized = keep_volume_templates(&mut set, existing.as_ref(), &cluster.spec.storage.size);
    let applied: StatefulSet = apply(&client, &names, &set).await?;
    apply::<PodDisruptionBudget>(
        &client,
        &names,
        &resources::pod_disruption_budget(&names, &owner, &cluster),
    )
    .await?;
    if resized {
        expand_volumes(&client, &names, current_hosts, &cluster.spec.storage.size).await?;
    }

    let set_status = applied.status.unwrap_or_default();
    let registered = if shared_etcd {
        registered_hosts(&ctx.metadata, &names.etcd_name).await?
    } else {
        // Registrations live in the cluster's own etcd; readiness is the pods'.
        set_status.ready_replicas.unwrap_or(0)
    };
    let status = cluster_status(
        &cluster,
        &names,
        ctx.settings.broker_port,
        set_status.replicas,
        set_status.ready_replicas.unwrap_or(0),
        registered,
        &leaving_with_replicas,
    );
    let before = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let api: Api<BrokerCluster> = Api::namespaced(client, &names.namespace);
    let patch = json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "BrokerCluster",
        "status": status,
    });
    api.patch_status(&names.name, &apply_params(), &Patch::Apply(&patch))
        .await?;
    ctx.condition_events(&cluster.object_ref(&()), &before, &status.conditions)
        .await;
    info!(hosts, registered, "reconciled");
    Ok(Action::requeue(ctx.settings.resync_interval))
}

/// Marks a paused cluster `Synced=False` (reason `Paused`), leaving the rest of its
/// status and everything it owns as they are.
async fn report_paused<M: MetadataClient>(
    cluster: &BrokerCluster,
    ctx: &Context<M>,
) -> Result<(), Error> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let mut status = cluster.status.clone().unwrap_or_default();
    let before = status.conditions.clone();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    conditions::set(
        &mut status.conditions,
        conditions::paused(cluster.meta().generation),
        &now,
    );
    let api: Api<BrokerCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "BrokerCluster",
        "status": status,
    });
    api.patch_status(&cluster.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await?;
    ctx.condition_events(&cluster.object_ref(&()), &before, &status.conditions)
        .await;
    info!("paused: nothing reconciled");
    Ok(())
}

/// Whether the cluster's hosts use the operator's etcd (`spec.etcd` unset or the
/// same endpoints). Topic and queue records can only be written, and registrations
/// and placements only read, in that etcd.
pub fn uses_operator_etcd(cluster: &BrokerCluster, settings: &crate::context::Settings) -> bool {
    cluster
        .spec
        .etcd
        .as_ref()
        .is_none_or(|etcd| etcd.endpoints == settings.etcd_endpoints)
}

/// Server-side apply as `ferry-operator`, taking over fields others set: the
/// operator is the only intended writer of what it owns.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

async fn apply<K>(client: &kube::Client, names: &ClusterNames, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), &names.namespace);
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("name"))?;
    Ok(api
        .patch(&name, &apply_params(), &Patch::Apply(object))
        .await?)
}

/// Volume claim templates of a StatefulSet cannot change: keep the existing ones in
/// `set`. Returns whether the spec asks for a different size, so the existing claims
/// are expanded instead.
fn keep_volume_templates(
    set: &mut StatefulSet,
    existing: Option<&StatefulSet>,
    size: &str,
) -> bool {
    let Some(templates) = existing
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.volume_claim_templates.clone())
    else {
        return false;
    };
    let old_size = templates
        .iter()
        .find(|t| t.metadata.name.as_deref() == Some(resources::DATA_VOLUME))
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    let templates = templates
        .into_iter()
        .map(|mut t| {
            // The server's bookkeeping is not part of what the operator applies.
            t.status = None;
            t
        })
        .collect();
    if let Some(spec) = set.spec.as_mut() {
        spec.volume_claim_templates = Some(templates);
    }
    old_size.is_some_and(|old| old != size)
}

/// Asks for `size` on each existing host's claim (the StorageClass must allow
/// expansion; the API server refuses otherwise).
async fn expand_volumes(
    client: &kube::Client,
    names: &ClusterNames,
    hosts: i32,
    size: &str,
) -> Result<(), Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &names.namespace);
    let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
    for ordinal in 0..hosts {
        let claim = format!("{}-{}", resources::DATA_VOLUME, names.pod(ordinal));
        match claims
            .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Hosts with an ordinal in `wanted..current` that still appear as a replica of any
/// partition of the cluster.
pub async fn leaving_hosts_with_replicas<M: MetadataClient>(
    metadata: &M,
    names: &ClusterNames,
    wanted: i32,
    current: i32,
) -> Result<BTreeSet<String>, Error> {
    let leaving: BTreeSet<String> = (wanted.max(0)..current).map(|o| names.pod(o)).collect();
    let mut holding = BTreeSet::new();
    for entry in metadata
        .list_prefix(&keys::partitions(&names.etcd_name))
        .await?
    {
        let state: PartitionState = serde_json::from_slice(&entry.value)?;
        for replica in state.replicas {
            if leaving.contains(&replica) {
                holding.insert(replica);
            }
        }
    }
    Ok(holding)
}

/// How many hosts of the cluster are registered in etcd (live host keys).
async fn registered_hosts<M: MetadataClient>(metadata: &M, etcd_name: &str) -> Result<i32, Error> {
    let hosts = metadata.list_prefix(&keys::hosts(etcd_name)).await?;
    Ok(i32::try_from(hosts.len()).unwrap_or(i32::MAX))
}

fn cluster_status(
    cluster: &BrokerCluster,
    names: &ClusterNames,
    port: i32,
    pods: i32,
    ready_pods: i32,
    registered: i32,
    leaving_with_replicas: &BTreeSet<String>,
) -> BrokerClusterStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = cluster.metadata.generation;
    let mut conditions = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let wanted = cluster.spec.hosts;
    let ready_hosts = ready_pods.min(registered);
    let synced = if leaving_with_replicas.is_empty() {
        Observation {
            type_: SYNCED,
            status: Status::True,
            reason: "Applied",
            message: format!(
                "The StatefulSet, Services, PodDisruptionBudget and ConfigMap match the spec ({wanted} hosts)."
            ),
            observed_generation: generation,
        }
    } else {
        let hosts: Vec<_> = leaving_with_replicas.iter().map(String::as_str).collect();
        Observation {
            type_: SYNCED,
            status: Status::False,
            reason: SCALE_DOWN_BLOCKED,
            message: format!(
                "Scaling down to {wanted} hosts waits: {} still hold partition replicas.",
                hosts.join(", ")
            ),
            observed_generation: generation,
        }
    };
    let ready = if ready_hosts >= wanted {
        Observation {
            type_: READY,
            status: Status::True,
            reason: "HostsReady",
            message: format!("{ready_hosts} of {wanted} hosts are ready and registered in etcd."),
            observed_generation: generation,
        }
    } else {
        Observation {
            type_: READY,
            status: Status::False,
            reason: "HostsNotReady",
            message: format!(
                "{ready_pods} of {wanted} hosts are ready, {registered} registered in etcd."
            ),
            observed_generation: generation,
        }
    };
    conditions::set(&mut conditions, ready, &now);
    conditions::set(&mut conditions, synced, &now);
    BrokerClusterStatus {
        conditions,
        observed_generation: generation,
        hosts: pods,
        ready_hosts,
        registered_hosts: registered,
        selector: Some(resources::selector_string(&names.name)),
        etcd_registered: registered > 0,
        etcd_name: Some(names.etcd_name.clone()),
        address: Some(names.client_address(port)),
    }
}

#[cfg(test)]
mod tests;
