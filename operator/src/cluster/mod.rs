//! The BrokerCluster reconciler: server-side applies the cluster's ServiceAccount,
//! ConfigMap, Services, StatefulSet and PodDisruptionBudget (all owned by the
//! BrokerCluster, so Kubernetes deletes them with it), drains the hosts a
//! scale-down removes before the StatefulSet shrinks, and reports hosts ready and
//! registered in etcd.
//!
//! No finalizer: owner references clean up everything the cluster owns, and a
//! finalizer here could only hold a namespace in Terminating.

mod certificates;
mod issuer;
mod mounts;
mod network;
mod pki;
mod resources;

pub use certificates::Validity;

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
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
use crate::records::{Kind, PartitionState, cluster_etcd_name, keys};
use resources::ClusterNames;

/// The kind label of this reconciler's metrics.
pub const KIND: &str = "BrokerCluster";

/// Condition reason: a scale-down waits while the leaving hosts hand their replicas
/// over to the staying ones.
pub const DRAINING: &str = "Draining";
/// Condition reason: a scale-down below the replication factor of a topic or queue
/// the cluster serves is refused.
pub const SCALE_DOWN_REFUSED: &str = "ScaleDownRefused";
/// Condition reason: a scale-down of a cluster with an etcd of its own waits for
/// good: the operator cannot see whether its leaving hosts hold replicas.
pub const SCALE_DOWN_BLOCKED: &str = "ScaleDownBlocked";

/// The value of the drain keys the operator writes (brokers ignore it).
const DRAIN_VALUE: &[u8] = br#"{"reason":"scale-down"}"#;

/// Where a change of `spec.hosts` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scale {
    /// The StatefulSet has the hosts the spec asks for.
    Applied,
    /// The StatefulSet keeps its hosts: `hosts` still hold replicas (`reason` says
    /// whether they are draining or the operator cannot tell).
    Waiting {
        /// [`DRAINING`] or [`SCALE_DOWN_BLOCKED`].
        reason: &'static str,
        /// The leaving hosts still holding replicas.
        hosts: BTreeSet<String>,
    },
    /// The StatefulSet keeps its hosts: a topic or queue needs `needed` replicas.
    Refused {
        /// The largest replication factor among the cluster's topics and queues.
        needed: u32,
    },
}

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
    let scale = plan_scale(
        &ctx.metadata,
        &names,
        shared_etcd,
        wanted_hosts,
        current_hosts,
    )
    .await?;
    let hosts = if scale == Scale::Applied {
        wanted_hosts
    } else {
        current_hosts
    };

    apply(&client, &names, &resources::service_account(&names, &owner)).await?;
    // With ServiceAccount tokens, the API server's issuer and keys, published to the
    // hosts (read again every reconcile, so key rotation reaches them).
    let issuer = if cluster.spec.auth.service_account_tokens {
        let keys = issuer::fetch(&client).await?;
        apply::<ConfigMap>(
            &client,
            &names,
            &resources::token_keys_config_map(&names, &owner, &keys.jwks),
        )
        .await?;
        Some(keys.issuer)
    } else {
        None
    };
    // With TLS, the cluster's CA and the hosts' certificates (renewed when due).
    if cluster.spec.tls.enabled {
        certificates::reconcile(&ctx, &names, &owner, &cluster.object_ref(&())).await?;
    }
    // On the operator's TLS etcd, the hosts reach it with the operator's files.
    if let Some(files) = mounts::etcd_client_files(&cluster, settings) {
        certificates::copy_etcd_client(&client, &names, &owner, files).await?;
    }
    let config_map = resources::config_map(&names, &owner, &cluster, issuer.as_deref());
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
    let mut set =
        resources::stateful_set(&names, &owner, &cluster, settings, hosts, issuer.as_deref());
    let resized = keep_volume_templates(&mut set, existing.as_ref(), &cluster.spec.storage.size);
    let applied: StatefulSet = apply(&client, &names, &set).await?;
    apply::<PodDisruptionBudget>(
        &client,
        &names,
        &resources::pod_disruption_budget(&names, &owner, &cluster),
    )
    .await?;
    if cluster.spec.network_policy.enabled {
        apply::<NetworkPolicy>(
            &client,
            &names,
            &network::network_policy(&names, &owner, &cluster, settings),
        )
        .await?;
    } else {
        // Turned off: the policy made before goes.
        let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &names.namespace);
        match policies
            .delete(&names.network_policy(), &Default::default())
            .await
        {
            Ok(_) => info!(policy = names.network_policy(), "network policy removed"),
            Err(kube::Error::Api(response)) if response.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
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
        &scale,
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
    // A drain ends without any Kubernetes change to wake the reconciler: look again soon.
    let draining = matches!(scale, Scale::Waiting { reason, .. } if reason == DRAINING);
    Ok(Action::requeue(if draining {
        ctx.settings.drain_check_interval
    } else {
        ctx.settings.resync_interval
    }))
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

/// Whether the StatefulSet may go from `current` to `wanted` hosts now. In the
/// operator's etcd, the hosts a scale-down removes are first asked to leave (a key
/// under `/ferry/clusters/{cluster}/draining/` each, which makes the controller
/// move their replicas to the staying hosts) and the StatefulSet shrinks once they
/// hold none; hosts the cluster keeps lose their drain keys. A scale-down below the
/// replication factor of a topic or queue of the cluster is refused (nowhere to
/// move the copies), and so is draining anything for it.
pub async fn plan_scale<M: MetadataClient>(
    metadata: &M,
    names: &ClusterNames,
    shared_etcd: bool,
    wanted: i32,
    current: i32,
) -> Result<Scale, Error> {
    if !shared_etcd {
        // The operator cannot read an etcd of the cluster's own, so it cannot tell
        // whether the leaving hosts are drained: it keeps them.
        if wanted >= current {
            return Ok(Scale::Applied);
        }
        let hosts = (wanted.max(0)..current).map(|o| names.pod(o)).collect();
        return Ok(Scale::Waiting {
            reason: SCALE_DOWN_BLOCKED,
            hosts,
        });
    }
    let needed = if wanted < current {
        largest_replication_factor(metadata, &names.etcd_name).await?
    } else {
        0
    };
    let refused = wanted < current && i64::from(wanted) < i64::from(needed);
    let kept = if refused { current } else { wanted };
    sync_drain_keys(metadata, names, kept, current).await?;
    if refused {
        return Ok(Scale::Refused { needed });
    }
    if wanted >= current {
        return Ok(Scale::Applied);
    }
    let hosts = leaving_hosts_with_replicas(metadata, names, wanted, current).await?;
    Ok(if hosts.is_empty() {
        Scale::Applied
    } else {
        Scale::Waiting {
            reason: DRAINING,
            hosts,
        }
    })
}

/// Asks the hosts with an ordinal in `kept..current` to leave, and takes the drain
/// keys of hosts with an ordinal below `kept` away. Keys of hosts that are not this
/// cluster's pods (an administrator's) are left alone.
async fn sync_drain_keys<M: MetadataClient>(
    metadata: &M,
    names: &ClusterNames,
    kept: i32,
    current: i32,
) -> Result<(), Error> {
    let prefix = keys::draining(&names.etcd_name);
    for entry in metadata.list_prefix(&prefix).await? {
        let host = &entry.key[prefix.len()..];
        let ordinal = host
            .strip_prefix(names.name.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|ordinal| ordinal.parse::<i32>().ok())
            .filter(|ordinal| names.pod(*ordinal) == host);
        if ordinal.is_some_and(|ordinal| ordinal < kept) {
            metadata.delete_key(&entry.key, entry.mod_revision).await?;
            info!(host, "drain key removed: the cluster keeps the host");
        }
    }
    for ordinal in kept.max(0)..current {
        let host = names.pod(ordinal);
        if metadata
            .create(&format!("{prefix}{host}"), DRAIN_VALUE.to_vec())
            .await?
        {
            info!(host, "asked the host to hand over its replicas");
        }
    }
    Ok(())
}

/// The largest replication factor among the topic and queue records placed on
/// `etcd_name` (0 without any). Unreadable records are skipped: the brokers skip
/// them too.
async fn largest_replication_factor<M: MetadataClient>(
    metadata: &M,
    etcd_name: &str,
) -> Result<u32, Error> {
    /// The two fields of a topic or queue record that matter here.
    #[derive(serde::Deserialize)]
    struct Placed {
        cluster: Option<String>,
        settings: Factor,
    }
    #[derive(serde::Deserialize)]
    struct Factor {
        replication_factor: u32,
    }
    let mut largest = 0;
    for kind in [Kind::Topic, Kind::Queue] {
        for entry in metadata.list_prefix(&keys::records(kind)).await? {
            match serde_json::from_slice::<Placed>(&entry.value) {
                Ok(placed) if placed.cluster.as_deref() == Some(etcd_name) => {
                    largest = largest.max(placed.settings.replication_factor);
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(key = entry.key, %err, "skipping an unreadable record"),
            }
        }
    }
    Ok(largest)
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
    scale: &Scale,
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
    let (status, reason, message) = match scale {
        Scale::Applied => (
            Status::True,
            "Applied",
            format!(
                "The StatefulSet, Services, PodDisruptionBudget and ConfigMap match the spec ({wanted} hosts)."
            ),
        ),
        Scale::Waiting { reason, hosts } => {
            let hosts: Vec<_> = hosts.iter().map(String::as_str).collect();
            let why = if *reason == DRAINING {
                "are handing their partition replicas over to the staying hosts"
            } else {
                "may hold partition replicas in the cluster's own etcd, which the operator cannot read"
            };
            (
                Status::False,
                *reason,
                format!(
                    "Scaling down to {wanted} hosts waits: {} {why}.",
                    hosts.join(", ")
                ),
            )
        }
        Scale::Refused { needed } => (
            Status::False,
            SCALE_DOWN_REFUSED,
            format!(
                "Scaling down to {wanted} hosts is refused: a topic or queue of this cluster keeps {needed} replicas, each on its own host. Lower its replicationFactor first, or keep at least {needed} hosts."
            ),
        ),
    };
    let synced = Observation {
        type_: SYNCED,
        status,
        reason,
        message,
        observed_generation: generation,
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
        ca_config_map: cluster.spec.tls.enabled.then(|| names.ca_config_map()),
    }
}

#[cfg(test)]
mod tests;
