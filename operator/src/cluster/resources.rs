//! The Kubernetes objects a BrokerCluster owns, built from its spec. Pure functions:
//! the reconciler applies what these return.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, TopologySpreadConstraint, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::certificates::{CA_CERT_KEY, CERT_KEY, KEY_KEY};
use super::mounts::{self, PEER_TLS_DIR, TLS_DIR, TOKEN_KEYS_DIR, TOKEN_KEYS_FILE};
use crate::context::{BROKER_COMMAND, Settings};
use crate::crd::{BrokerCluster, BrokerSettings, Durability};

/// Where each host's volume is mounted.
pub const DATA_DIR: &str = "/var/lib/ferry";
/// The volume claim template's name; PVCs are `data-{cluster}-{ordinal}`.
pub const DATA_VOLUME: &str = "data";
/// The pod-template annotation carrying the broker config's digest, so a config
/// change rolls the hosts (environment from a ConfigMap is read only at start).
pub const CONFIG_DIGEST_ANNOTATION: &str = "ferry.dev/config-digest";
/// The user and group the broker runs as (the image's non-root user).
pub const BROKER_UID: i64 = 65532;
/// Seconds a stopping host gets beyond the broker's own shutdown grace.
const TERMINATION_MARGIN_S: i64 = 10;
/// The broker's default shutdown grace, ms.
const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;

/// Names and shared values of one cluster's objects.
#[derive(Debug, Clone)]
pub struct ClusterNames {
    /// The BrokerCluster's name (also the StatefulSet's and the PDB's).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The cluster's name in etcd.
    pub etcd_name: String,
}

impl ClusterNames {
    /// The headless Service that gives each host a stable DNS name.
    pub fn headless_service(&self) -> String {
        format!("{}-hosts", self.name)
    }

    /// The client Service.
    pub fn client_service(&self) -> String {
        format!("{}-client", self.name)
    }

    /// The ConfigMap of broker settings.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.name)
    }

    /// The ConfigMap of the API server's ServiceAccount token keys, mounted into the
    /// hosts (a volume: key rotation reaches them without a restart).
    pub fn token_keys_config_map(&self) -> String {
        format!("{}-token-keys", self.name)
    }

    /// The Secret of the cluster's certificate authority (certificate and key).
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.name)
    }

    /// The ConfigMap of the CA certificate alone, for clients to trust.
    pub fn ca_config_map(&self) -> String {
        format!("{}-ca-cert", self.name)
    }

    /// The Secret of the hosts' client listener certificate.
    pub fn tls_secret(&self) -> String {
        format!("{}-tls", self.name)
    }

    /// The Secret of the hosts' peer certificate.
    pub fn peer_secret(&self) -> String {
        format!("{}-peer", self.name)
    }

    /// The DNS names clients and peers reach the hosts by, in the cluster domain
    /// `domain`: the client Service's short and long names, and every host's
    /// name under the headless Service (one wildcard: hosts come and go).
    pub fn dns_names(&self, domain: &str) -> Vec<String> {
        let (ns, client, hosts) = (
            &self.namespace,
            self.client_service(),
            self.headless_service(),
        );
        vec![
            client.clone(),
            format!("{client}.{ns}"),
            format!("{client}.{ns}.svc"),
            format!("{client}.{ns}.svc.{domain}"),
            format!("*.{hosts}.{ns}.svc"),
            format!("*.{hosts}.{ns}.svc.{domain}"),
        ]
    }

    /// The Secret with a copy of the operator's etcd client files.
    pub fn etcd_client_secret(&self) -> String {
        format!("{}-etcd-client", self.name)
    }

    /// The broker pods' NetworkPolicy.
    pub fn network_policy(&self) -> String {
        format!("{}-brokers", self.name)
    }

    /// The brokers' ServiceAccount.
    pub fn service_account(&self) -> String {
        format!("{}-broker", self.name)
    }

    /// The pod (and host id) of an ordinal.
    pub fn pod(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.name)
    }

    /// The address clients use: the client Service.
    pub fn client_address(&self, port: i32) -> String {
        format!("{}.{}.svc:{port}", self.client_service(), self.namespace)
    }
}

/// The labels of every object of a cluster; the first two select its pods.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "ferry-broker".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), cluster.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            crate::context::MANAGER.to_owned(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            "broker".to_owned(),
        ),
        // What the chart's NetworkPolicy of its bundled etcd admits.
        ("app.kubernetes.io/part-of".to_owned(), "ferry".to_owned()),
    ])
}

/// The labels selecting a cluster's pods.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "ferry-broker".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), cluster.to_owned()),
    ])
}

/// The selector as a string, for the scale subresource's `status.selector`.
pub fn selector_string(cluster: &str) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn meta(names: &ClusterNames, name: String, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels(&names.name)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The brokers' ServiceAccount: they need no Kubernetes API access, so no token.
pub fn service_account(names: &ClusterNames, owner: &OwnerReference) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(names, names.service_account(), owner),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// The broker settings as `ferry-broker serve` environment variables.
pub fn broker_environment(config: &BrokerSettings) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            env.insert(key.to_owned(), value);
        }
    };
    put(
        "FERRY_DEFAULT_DURABILITY",
        config.default_durability.map(|d| {
            match d {
                Durability::Fsync => "fsync",
                Durability::Interval => "interval",
                Durability::None => "none",
            }
            .to_owned()
        }),
    );
    let text = |v: Option<u64>| v.map(|v| v.to_string());
    let text32 = |v: Option<u32>| v.map(|v| v.to_string());
    put(
        "FERRY_DEFAULT_PARTITIONS",
        text32(config.default_partitions),
    );
    put("FERRY_MAX_MESSAGE_BYTES", text32(config.max_message_bytes));
    put("FERRY_MAX_BATCH_BYTES", text32(config.max_batch_bytes));
    put("FERRY_MAX_FETCH_BYTES", text32(config.max_fetch_bytes));
    put(
        "FERRY_MAX_RECEIVE_WAIT_MS",
        text32(config.max_receive_wait_ms),
    );
    put(
        "FERRY_MAX_VISIBILITY_TIMEOUT_MS",
        text(config.max_visibility_timeout_ms),
    );
    put("FERRY_MAX_DELAY_MS", text(config.max_delay_ms));
    put(
        "FERRY_QUEUE_HOUSEKEEPING_INTERVAL_MS",
        text(config.queue_housekeeping_interval_ms),
    );
    put(
        "FERRY_RETENTION_CHECK_INTERVAL_MS",
        text(config.retention_check_interval_ms),
    );
    put("FERRY_SHUTDOWN_GRACE_MS", text(config.shutdown_grace_ms));
    put("FERRY_LEASE_TTL_MS", text(config.lease_ttl_ms));
    put("FERRY_HOST_GRACE_MS", text(config.host_grace_ms));
    put("FERRY_ETCD_TIMEOUT_MS", text(config.etcd_timeout_ms));
    env
}

/// The hosts' environment: the broker settings and, with ServiceAccount tokens, how
/// they are checked (`issuer`: the API server's, from its discovery document) and
/// whether access rules are enforced.
pub fn host_environment(cluster: &BrokerCluster, issuer: Option<&str>) -> BTreeMap<String, String> {
    let mut env = broker_environment(&cluster.spec.config);
    if cluster.spec.tls.enabled {
        for (name, dir, file) in [
            ("FERRY_TLS_CERT_FILE", TLS_DIR, CERT_KEY),
            ("FERRY_TLS_KEY_FILE", TLS_DIR, KEY_KEY),
            ("FERRY_PEER_TLS_CERT_FILE", PEER_TLS_DIR, CERT_KEY),
            ("FERRY_PEER_TLS_KEY_FILE", PEER_TLS_DIR, KEY_KEY),
            ("FERRY_PEER_TLS_CA_FILE", PEER_TLS_DIR, CA_CERT_KEY),
        ] {
            env.insert(name.to_owned(), format!("{dir}/{file}"));
        }
    }
    if let Some(endpoint) = &cluster.spec.tracing.otlp_endpoint {
        // The standard OpenTelemetry variables (docs/operations.md, "Traces").
        let ratio = cluster.spec.tracing.sampling_ratio.unwrap_or(1.0);
        let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
        let name = cluster.metadata.name.as_deref().unwrap_or_default();
        for (key, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
            ("OTEL_TRACES_SAMPLER_ARG", ratio.to_string()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("k8s.namespace.name={namespace},ferry.cluster={name}"),
            ),
        ] {
            env.insert(key.to_owned(), value);
        }
    }
    let auth = &cluster.spec.auth;
    if let (true, Some(issuer)) = (auth.service_account_tokens, issuer) {
        env.insert(
            "FERRY_AUTH_JWKS_FILE".to_owned(),
            format!("{TOKEN_KEYS_DIR}/{TOKEN_KEYS_FILE}"),
        );
        env.insert("FERRY_AUTH_TOKEN_ISSUER".to_owned(), issuer.to_owned());
        if auth.authorization {
            env.insert("FERRY_AUTHORIZATION".to_owned(), "true".to_owned());
            let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
            let superusers: Vec<String> = auth
                .admin_service_accounts
                .iter()
                .map(|account| format!("system:serviceaccount:{namespace}:{account}"))
                .chain(auth.superusers.iter().cloned())
                .collect();
            if !superusers.is_empty() {
                env.insert("FERRY_SUPERUSERS".to_owned(), superusers.join(","));
            }
        }
    }
    env
}

/// The ConfigMap of broker settings, read by the hosts as environment.
pub fn config_map(
    names: &ClusterNames,
    owner: &OwnerReference,
    cluster: &BrokerCluster,
    issuer: Option<&str>,
) -> ConfigMap {
    ConfigMap {
        metadata: meta(names, names.config_map(), owner),
        data: Some(host_environment(cluster, issuer)),
        ..ConfigMap::default()
    }
}

/// The ConfigMap holding the API server's ServiceAccount token keys (its JWKS).
pub fn token_keys_config_map(
    names: &ClusterNames,
    owner: &OwnerReference,
    jwks: &str,
) -> ConfigMap {
    let mut data = BTreeMap::new();
    data.insert(TOKEN_KEYS_FILE.to_owned(), jwks.to_owned());
    ConfigMap {
        metadata: meta(names, names.token_keys_config_map(), owner),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// A stable digest of the broker environment (see [`crate::records::digest`]), so an
/// operator upgrade rolls no hosts.
pub fn config_digest(env: &BTreeMap<String, String>) -> String {
    let mut bytes = Vec::new();
    for (key, value) in env {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    crate::records::digest(&bytes)
}

fn grpc_port(settings: &Settings) -> ServicePort {
    ServicePort {
        name: Some("grpc".to_owned()),
        port: settings.broker_port,
        target_port: Some(IntOrString::String("grpc".to_owned())),
        app_protocol: Some("grpc".to_owned()),
        ..ServicePort::default()
    }
}

/// The headless Service: stable per-host DNS names, published before the hosts are
/// ready because hosts find each other through it while starting.
pub fn headless_service(
    names: &ClusterNames,
    owner: &OwnerReference,
    settings: &Settings,
) -> Service {
    Service {
        metadata: meta(names, names.headless_service(), owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&names.name)),
            ports: Some(vec![
                grpc_port(settings),
                ServicePort {
                    name: Some("metrics".to_owned()),
                    port: settings.broker_metrics_port,
                    target_port: Some(IntOrString::String("metrics".to_owned())),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("peer".to_owned()),
                    port: settings.broker_peer_port,
                    target_port: Some(IntOrString::String("peer".to_owned())),
                    app_protocol: Some("grpc".to_owned()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client Service: one address for every host (any host forwards to leaders).
pub fn client_service(
    names: &ClusterNames,
    owner: &OwnerReference,
    settings: &Settings,
) -> Service {
    Service {
        metadata: meta(names, names.client_service(), owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(&names.name)),
            ports: Some(vec![grpc_port(settings)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The PodDisruptionBudget limiting voluntary evictions of hosts.
pub fn pod_disruption_budget(
    names: &ClusterNames,
    owner: &OwnerReference,
    cluster: &BrokerCluster,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(names, names.name.clone(), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(cluster.spec.pdb.max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&names.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The path on a broker's metrics port that answers 200 once the host has caught
/// up with the partitions it replicates, so a rolling update waits for each host to
/// be back in sync before it restarts the next.
pub const READY_PATH: &str = "/ready";
/// The path on a broker's metrics port that answers 200 while the process runs.
pub const HEALTH_PATH: &str = "/health";

/// An HTTP probe of `path` on the metrics port: the kubelet's gRPC probes cannot
/// speak TLS, which the gRPC port may require.
fn http_probe(settings: &Settings, path: &str, period_s: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            port: IntOrString::Int(settings.broker_metrics_port),
            path: Some(path.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_s),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The downward-API volume with the pod's labels, and where the broker finds it.
pub const PODINFO_VOLUME: &str = "podinfo";
/// Where [`PODINFO_VOLUME`] is mounted.
pub const PODINFO_DIR: &str = "/etc/ferry/podinfo";

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Whether the hosts' listeners are secured as a broker requires for listening
/// beyond loopback without `--insecure`: TLS, and a way to authenticate callers.
pub fn secured(cluster: &BrokerCluster) -> bool {
    cluster.spec.tls.enabled && cluster.spec.auth.service_account_tokens
}

/// The broker container: `ferry-broker serve` in cluster mode, the host id from the
/// pod's name (so from its ordinal), advertised under its stable DNS name.
fn broker_container(
    names: &ClusterNames,
    cluster: &BrokerCluster,
    settings: &Settings,
    etcd: &[String],
) -> Container {
    let advertise = format!(
        "$(FERRY_HOST_ID).{}.{}.svc.{}:{}",
        names.headless_service(),
        names.namespace,
        settings.cluster_domain,
        settings.broker_port
    );
    Container {
        name: "broker".to_owned(),
        image: Some(
            cluster
                .spec
                .image
                .clone()
                .unwrap_or_else(|| settings.broker_image.clone()),
        ),
        image_pull_policy: settings.broker_image_pull_policy.clone(),
        command: Some(vec![BROKER_COMMAND.to_owned()]),
        args: Some(
            [
                "serve".to_owned(),
                "--cluster".to_owned(),
                names.etcd_name.clone(),
                "--data-dir".to_owned(),
                DATA_DIR.to_owned(),
                "--listen".to_owned(),
                format!("0.0.0.0:{}", settings.broker_port),
                "--metrics-listen".to_owned(),
                format!("0.0.0.0:{}", settings.broker_metrics_port),
                // Peers dial the pod's headless name (the --advertise host) on this port.
                "--peer-listen".to_owned(),
                format!("0.0.0.0:{}", settings.broker_peer_port),
                "--advertise".to_owned(),
                advertise,
            ]
            .into_iter()
            // The pod network reaches these listeners: without TLS and authenticated
            // callers the brokers must be told that this is meant (docs/security.md).
            .chain((!secured(cluster)).then(|| "--insecure".to_owned()))
            .collect(),
        ),
        env: Some(
            [
                field_env("FERRY_HOST_ID", "metadata.name"),
                // The broker reads its zone from the pod's labels, where Kubernetes
                // copies the node's zone when it binds the pod
                // (PodTopologyLabelsAdmission: on by default from 1.35, a feature gate
                // before); without it the hosts have no zone.
                EnvVar {
                    name: "FERRY_POD_LABELS_FILE".to_owned(),
                    value: Some(format!("{PODINFO_DIR}/labels")),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "FERRY_ETCD".to_owned(),
                    value: Some(etcd.join(",")),
                    ..EnvVar::default()
                },
            ]
            .into_iter()
            .chain(mounts::etcd_client_environment(cluster, settings))
            .collect(),
        ),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names.config_map(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".to_owned()),
                container_port: settings.broker_port,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".to_owned()),
                container_port: settings.broker_metrics_port,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("peer".to_owned()),
                container_port: settings.broker_peer_port,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(http_probe(settings, READY_PATH, 5, 3)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..http_probe(settings, HEALTH_PATH, 10, 6)
        }),
        resources: cluster.spec.resources.clone(),
        volume_mounts: Some(
            vec![
                VolumeMount {
                    name: DATA_VOLUME.to_owned(),
                    mount_path: DATA_DIR.to_owned(),
                    ..VolumeMount::default()
                },
                VolumeMount {
                    name: PODINFO_VOLUME.to_owned(),
                    mount_path: PODINFO_DIR.to_owned(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
            ]
            .into_iter()
            .chain(mounts::volume_mounts(cluster, settings))
            .collect(),
        ),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The well-known node label of a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The well-known node label of a node's name.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The default affinity (when `podTemplate.affinity` is unset): prefer nodes that do
/// not run another host of this cluster, so losing one node loses one replica. Only
/// preferred: a cluster with more hosts than nodes still schedules.
fn spread_over_nodes(names: &ClusterNames) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(&names.name)),
                            ..LabelSelector::default()
                        }),
                        topology_key: HOSTNAME_LABEL.to_owned(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// The default spread (when `podTemplate.topologySpreadConstraints` is empty): hosts
/// spread evenly over zones where nodes carry the zone label; never blocks
/// scheduling (`ScheduleAnyway`), and nodes without the label are one domain.
fn spread_over_zones(names: &ClusterNames) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: ZONE_LABEL.to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(&names.name)),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }]
}

/// The StatefulSet of hosts with `replicas` pods (the reconciler decides the count:
/// a refused scale-down keeps the current one). Rolling updates replace one host at
/// a time, in order (`OrderedReady`, `RollingUpdate`).
pub fn stateful_set(
    names: &ClusterNames,
    owner: &OwnerReference,
    cluster: &BrokerCluster,
    settings: &Settings,
    replicas: i32,
    issuer: Option<&str>,
) -> StatefulSet {
    let etcd = cluster
        .spec
        .etcd
        .as_ref()
        .map_or_else(|| settings.etcd_endpoints.clone(), |e| e.endpoints.clone());
    let overrides = &cluster.spec.pod_template;
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(labels(&names.name));
    let mut annotations = overrides.annotations.clone();
    annotations.insert(
        CONFIG_DIGEST_ANNOTATION.to_owned(),
        config_digest(&host_environment(cluster, issuer)),
    );
    let shutdown_grace_ms = cluster
        .spec
        .config
        .shutdown_grace_ms
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS);
    let grace_s = i64::try_from(shutdown_grace_ms.div_ceil(1000)).unwrap_or(i64::MAX / 2);
    let mut requests = BTreeMap::new();
    requests.insert(
        "storage".to_owned(),
        Quantity(cluster.spec.storage.size.clone()),
    );
    StatefulSet {
        metadata: meta(names, names.name.clone(), owner),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(names.headless_service()),
            pod_management_policy: Some("OrderedReady".to_owned()),
            // A host leaves a scale-down only once drained, so its claim holds no
            // replica anyone needs: it goes with the pod. Deleting the cluster keeps
            // the claims (the data may still be wanted).
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_scaled: Some("Delete".to_owned()),
                    when_deleted: Some("Retain".to_owned()),
                },
            ),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&names.name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names.service_account()),
                    automount_service_account_token: Some(false),
                    containers: vec![broker_container(names, cluster, settings, &etcd)],
                    affinity: Some(
                        overrides
                            .affinity
                            .clone()
                            .unwrap_or_else(|| spread_over_nodes(names)),
                    ),
                    tolerations: (!overrides.tolerations.is_empty())
                        .then(|| overrides.tolerations.clone()),
                    topology_spread_constraints: Some(
                        if overrides.topology_spread_constraints.is_empty() {
                            spread_over_zones(names)
                        } else {
                            overrides.topology_spread_constraints.clone()
                        },
                    ),
                    node_selector: (!overrides.node_selector.is_empty())
                        .then(|| overrides.node_selector.clone()),
                    priority_class_name: overrides.priority_class_name.clone(),
                    termination_grace_period_seconds: Some(grace_s + TERMINATION_MARGIN_S),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(BROKER_UID),
                        run_as_group: Some(BROKER_UID),
                        fs_group: Some(BROKER_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(mounts::pod_volumes(names, cluster, settings)),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(DATA_VOLUME.to_owned()),
                    labels: Some(labels(&names.name)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                    storage_class_name: cluster.spec.storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(requests),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}
