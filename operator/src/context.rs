//! What every reconciler shares: the API client, the metadata store, the event
//! recorder, the operator's settings and metrics.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

use crate::cluster::Validity;
use crate::metrics::Metrics;

/// The field manager of every server-side apply and the events' reporting controller.
pub const MANAGER: &str = "ferry-operator";

/// The cluster the operator creates when a Topic or Queue has no `clusterRef` and
/// its namespace has no BrokerCluster.
#[derive(Debug, Clone)]
pub struct DefaultCluster {
    /// Its name.
    pub name: String,
    /// Its hosts (raised to the replication factor asked for).
    pub hosts: i32,
    /// Its broker image; `None` uses [`Settings::broker_image`].
    pub image: Option<String>,
    /// Whether it serves TLS.
    pub tls: bool,
    /// Whether it authenticates callers and enforces access rules.
    pub auth: bool,
}

/// The image of this operator's release: both binaries are in it (see the
/// Dockerfile), so brokers default to the operator's own version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/ferry-dev/ferry:", env!("CARGO_PKG_VERSION"));

/// Where the broker binary is in the image (the Dockerfile and `e2e/k8s/image` put
/// it there); the image's entrypoint is the operator, so broker pods name it.
pub const BROKER_COMMAND: &str = "/usr/local/bin/ferry-broker";

/// The operator's settings (from its flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The broker image of clusters that name none.
    pub broker_image: String,
    /// When the kubelet pulls the broker image (`Always`, `IfNotPresent`, `Never`);
    /// `None` leaves Kubernetes' default (`Always` for `:latest`, else `IfNotPresent`).
    pub broker_image_pull_policy: Option<String>,
    /// The etcd endpoints brokers use when their cluster names none; also the
    /// operator's own.
    pub etcd_endpoints: Vec<String>,
    /// The cluster created when none exists.
    pub default_cluster: DefaultCluster,
    /// How often a resource is reconciled without a change (drift repair, status
    /// from etcd).
    pub resync_interval: Duration,
    /// How often a cluster whose scale-down drains hosts is checked again.
    pub drain_check_interval: Duration,
    /// How long after a failed reconcile it is retried.
    pub error_requeue: Duration,
    /// The Kubernetes cluster's DNS domain, for the hosts' advertised names.
    pub cluster_domain: String,
    /// The brokers' gRPC port.
    pub broker_port: i32,
    /// The brokers' metrics port.
    pub broker_metrics_port: i32,
    /// The brokers' peer port: replica fetches and requests passed on between hosts.
    pub broker_peer_port: i32,
    /// Lifetimes of the certificates the operator issues to TLS clusters.
    pub certificate_validity: Validity,
    /// The operator's own etcd TLS files (`https://` endpoints), copied to the hosts
    /// of clusters on its etcd.
    pub etcd_client_files: Option<EtcdClientFiles>,
}

/// TLS files for reaching etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdClientFiles {
    /// The CA etcd's certificate chains to (`None`: the system's roots).
    pub ca: Option<std::path::PathBuf>,
    /// The client certificate and its key, for an etcd that requires one.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            broker_image: DEFAULT_IMAGE.to_owned(),
            broker_image_pull_policy: None,
            etcd_endpoints: vec!["http://etcd:2379".to_owned()],
            default_cluster: DefaultCluster {
                name: "ferry".to_owned(),
                hosts: 3,
                image: None,
                tls: true,
                auth: true,
            },
            resync_interval: Duration::from_secs(30),
            drain_check_interval: Duration::from_secs(2),
            error_requeue: Duration::from_secs(5),
            cluster_domain: "cluster.local".to_owned(),
            broker_port: 7070,
            broker_metrics_port: 7071,
            broker_peer_port: 7072,
            certificate_validity: Validity {
                ca: Duration::from_secs(3650 * 86_400),
                host: Duration::from_secs(90 * 86_400),
            },
            etcd_client_files: None,
        }
    }
}

/// Shared by every reconcile.
pub struct Context<M> {
    /// The Kubernetes API client.
    pub client: Client,
    /// The metadata store the brokers share.
    pub metadata: M,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// The operator's settings.
    pub settings: Settings,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
}

impl<M> Context<M> {
    /// A context; `instance` names this operator replica in events.
    pub fn new(
        client: Client,
        metadata: M,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metadata,
            settings,
            metrics,
        }
    }

    /// Publishes an event about `regarding`. A failed publish is logged, not
    /// returned: an event is a report, and the reconcile's work stands without it.
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, regarding).await {
            warn!(%err, reason, "could not publish an event");
        }
    }

    /// Publishes one event per condition whose status or reason changed between
    /// `before` and `after`: `Normal` when it became `True`, else `Warning`.
    pub async fn condition_events(
        &self,
        regarding: &ObjectReference,
        before: &[Condition],
        after: &[Condition],
    ) {
        for condition in after {
            let old = before.iter().find(|c| c.type_ == condition.type_);
            let changed =
                old.is_none_or(|o| o.status != condition.status || o.reason != condition.reason);
            if !changed || condition.reason == crate::conditions::PENDING {
                continue;
            }
            let type_ = if condition.status == "True" {
                EventType::Normal
            } else {
                EventType::Warning
            };
            let action = format!("{}{}", condition.type_, condition.status);
            self.event(
                regarding,
                type_,
                &condition.reason,
                &action,
                condition.message.clone(),
            )
            .await;
        }
    }
}
