//! The `BrokerCluster` resource: a group of broker hosts run as a StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::Durability;
use super::rules::{ETCD_ENDPOINT_PATTERN, MAX_PARTITIONS, QUANTITY_PATTERN};

/// The desired state of a broker cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "BrokerCluster",
    namespaced,
    status = "BrokerClusterStatus",
    derive = "PartialEq",
    shortname = "fbc",
    category = "ferry",
    doc = "A Ferry broker cluster: broker hosts in a StatefulSet that register in etcd and serve the topics and queues placed on them.",
    scale(
        spec_replicas_path = ".spec.hosts",
        status_replicas_path = ".status.hosts",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Hosts",
        type_ = "integer",
        json_path = ".spec.hosts",
        description = "Hosts asked for"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyHosts",
        description = "Hosts running, ready and registered in etcd"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the cluster is or is not ready"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = crate::crd::rules::cluster_name()
)]
#[serde(rename_all = "camelCase")]
pub struct BrokerClusterSpec {
    /// Broker hosts (StatefulSet replicas), at least 1. Default 3. `kubectl scale`
    /// changes it. Scaling down first drains the leaving hosts (their replicas move
    /// to the staying ones), and is refused below a topic's or queue's replication
    /// factor.
    #[serde(default = "default_hosts")]
    #[schemars(range(min = 1))]
    pub hosts: i32,

    /// The broker container image. Default: the image the operator was built with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// CPU and memory requests and limits of each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Each host's persistent volume.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Broker settings, mirroring `ferry-broker serve` flags. Unset fields keep the
    /// broker's defaults.
    #[serde(default)]
    pub config: BrokerSettings,

    /// Scheduling and metadata overrides of the broker pods.
    #[serde(default)]
    pub pod_template: PodOverrides,

    /// The PodDisruptionBudget that limits voluntary evictions of hosts.
    #[serde(default)]
    pub pdb: PodDisruptionBudgetSpec,

    /// The etcd the hosts register in. Default: the operator's own etcd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdSpec>,

    /// TLS of the brokers' client and peer listeners (docs/security.md).
    #[serde(default)]
    pub tls: TlsSpec,

    /// Who may open connections to the broker pods: a NetworkPolicy, enforced where
    /// the cluster's network plugin enforces NetworkPolicies.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// Who may call the brokers, and what they may do (docs/security.md).
    #[serde(default)]
    pub auth: AuthSpec,

    /// OpenTelemetry traces of the hosts (docs/operations.md, "Traces").
    #[serde(default, skip_serializing_if = "TracingSpec::is_off")]
    pub tracing: TracingSpec,
}

/// Where the hosts send their spans, and how many traces they start.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// The OTLP/gRPC collector, e.g. `http://otel-collector.monitoring:4317`
    /// (`https://` for TLS). Unset: no traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^https?://"))]
    pub otlp_endpoint: Option<String>,

    /// The share of new traces sampled, 0 to 1. Default 1. A request that is part
    /// of a sampled trace (its caller sampled it) is always traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling_ratio: Option<f64>,
}

impl TracingSpec {
    /// Whether nothing is set (the field is then left out).
    pub fn is_off(&self) -> bool {
        self == &TracingSpec::default()
    }
}

/// The broker pods' NetworkPolicy: the client port from the allowed namespaces, the
/// peer port from the cluster's own hosts and gateways only, the metrics port from
/// anywhere (Prometheus; the kubelet's probes are never subject to it).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy `{name}-brokers`. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Namespaces whose pods may reach the client port, by name, at most 64. Empty
    /// (the default): every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)))]
    pub client_namespaces: Vec<String>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            client_namespaces: Vec::new(),
        }
    }
}

/// TLS of the brokers' listeners, with certificates the operator issues.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Serve clients and peers over TLS only. The operator keeps a certificate
    /// authority of the cluster's own (Secret `{name}-ca`), issues the hosts' client
    /// listener certificate (Secret `{name}-tls`) and peer certificate (Secret
    /// `{name}-peer`, the only kind the peer listener accepts) and renews them before
    /// they expire; hosts pick renewed files up without a restart. Clients trust the
    /// CA certificate in ConfigMap `{name}-ca-cert` (key `ca.crt`). Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Authentication and authorization of the brokers' clients.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.authorization || self.serviceAccountTokens")
    .message("authorization needs serviceAccountTokens: a way to tell callers apart"))]
pub struct AuthSpec {
    /// Authenticate callers with Kubernetes ServiceAccount tokens for the audience
    /// `ferry` (a projected token volume), checked against this cluster's API server
    /// keys, which the operator publishes to the broker pods. Default true.
    #[serde(default = "default_true")]
    pub service_account_tokens: bool,

    /// Enforce access rules: deny every operation no rule grants. A namespace's
    /// ServiceAccounts may use its Topics and Queues by default. Default true.
    #[serde(default = "default_true")]
    pub authorization: bool,

    /// ServiceAccounts of the cluster's own namespace allowed everything (creating
    /// and deleting topics and queues through the API, access rules, quotas), by
    /// name, at most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub admin_service_accounts: Vec<String>,

    /// Principals allowed everything (e.g.
    /// `system:serviceaccount:ferry-system:admin`), at most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    pub superusers: Vec<String>,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            service_account_tokens: true,
            authorization: true,
            admin_service_accounts: Vec::new(),
            superusers: Vec::new(),
        }
    }
}

/// Each host's persistent volume (one PersistentVolumeClaim per host).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = crate::crd::rules::presence_immutable("storageClassName"))]
pub struct StorageSpec {
    /// Volume size, a quantity such as `10Gi`. Default `10Gi`. May grow (when the
    /// StorageClass allows volume expansion), never shrink.
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = 64), regex(pattern = QUANTITY_PATTERN))]
    #[x_kube(validation = crate::crd::rules::quantity_never_shrinks("storage.size"))]
    pub size: String,

    /// The StorageClass of the volumes. Default: the cluster's default StorageClass.
    /// Immutable: existing volumes cannot change class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = crate::crd::rules::immutable("storage.storageClassName"))]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// Broker settings; each maps onto a `ferry-broker serve` flag. Unset fields keep the
/// broker's defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.maxMessageBytes) || !has(self.maxBatchBytes) || self.maxMessageBytes <= self.maxBatchBytes"
)
.message("maxMessageBytes must not exceed maxBatchBytes"))]
pub struct BrokerSettings {
    /// Durability of topics and queues that set none: `fsync`, `interval` or
    /// `none`. Default `fsync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_durability: Option<Durability>,

    /// Partitions of topics created through the admin API without a count, 1–1024.
    /// Default 1. (Topic resources always carry their own count.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_PARTITIONS))]
    pub default_partitions: Option<u32>,

    /// Largest record or message the cluster accepts, in bytes; also the default of
    /// topics. Default 1048576 (1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_message_bytes: Option<u32>,

    /// Largest record batch, in bytes. Default 16777216 (16 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_batch_bytes: Option<u32>,

    /// Largest fetch response, in bytes. Default 33554432 (32 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_fetch_bytes: Option<u32>,

    /// Longest queue receive long-poll wait, in ms. Default 20000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_receive_wait_ms: Option<u32>,

    /// Longest queue visibility timeout, in ms. Default 43200000 (12 hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_visibility_timeout_ms: Option<u64>,

    /// Longest queue message delay, in ms. Default 900000 (15 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,

    /// How often queues look for expired messages, dead letters and compaction, in
    /// ms. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub queue_housekeeping_interval_ms: Option<u64>,

    /// How often topic retention runs, in ms. Default 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retention_check_interval_ms: Option<u64>,

    /// How long a stopping host waits for requests in flight, in ms. Default 30000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_ms: Option<u64>,

    /// Time to live of each host's etcd lease, in ms (rounded up to whole seconds);
    /// a host that cannot renew it for this long is taken for gone. Default 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000))]
    pub lease_ttl_ms: Option<u64>,

    /// How long a host may be gone before its replicas move to other hosts, in ms.
    /// Default 30000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_grace_ms: Option<u64>,

    /// Longest wait for one etcd request, in ms. Default 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub etcd_timeout_ms: Option<u64>,
}

/// Overrides of the broker pods' scheduling and metadata. The operator's own labels,
/// containers and volumes always win.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Node and pod (anti-)affinity of the broker pods. Default: a preferred pod
    /// anti-affinity on `kubernetes.io/hostname`, so hosts land on different nodes
    /// when there are enough of them (losing a node then loses one replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Taints the broker pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// How broker pods spread over zones and nodes. Default: at most one host more
    /// in any zone (`topology.kubernetes.io/zone`) than in another, as a preference
    /// (`ScheduleAnyway`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// Labels a node must have to run a broker pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// The PriorityClass of the broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// Extra labels on the broker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations on the broker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The PodDisruptionBudget of the broker pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Hosts that voluntary disruptions (node drains) may take down at once. Default
    /// 1; 0 blocks drains of nodes running a broker host.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 0))]
    pub max_unavailable: i32,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            max_unavailable: default_max_unavailable(),
        }
    }
}

/// An etcd of the cluster's own.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSpec {
    /// etcd client URLs such as `http://etcd-0.etcd:2379`, 1–16 of them.
    #[schemars(length(min = 1, max = 16), inner(length(max = 512), regex(pattern = ETCD_ENDPOINT_PATTERN)))]
    pub endpoints: Vec<String>,
}

/// What the operator observed of a broker cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerClusterStatus {
    /// `Ready`: every host is running, ready and registered. `Synced`: the
    /// StatefulSet, Services, PodDisruptionBudget and ConfigMap match this spec.
    /// Both start `Unknown`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Hosts (pods) that exist; the scale subresource's replica count.
    #[serde(default)]
    pub hosts: i32,

    /// Hosts running, ready and registered in etcd.
    #[serde(default)]
    pub ready_hosts: i32,

    /// Hosts registered in etcd (live host keys of the cluster).
    #[serde(default)]
    pub registered_hosts: i32,

    /// The cluster's name in etcd, `{namespace}.{name}`: etcd cluster names are
    /// global, resource names only unique per namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_name: Option<String>,

    /// The gRPC address (`host:port`) clients connect to: the client Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,

    /// The label selector of the broker pods, for the scale subresource (and so for
    /// HorizontalPodAutoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Whether the cluster is registered in etcd, so topics and queues can be mapped
    /// to it.
    #[serde(default)]
    pub etcd_registered: bool,

    /// With TLS, the ConfigMap (key `ca.crt`) holding the CA certificate clients
    /// check the brokers against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_hosts() -> i32 {
    3
}

fn default_storage_size() -> String {
    "10Gi".to_owned()
}

fn default_max_unavailable() -> i32 {
    1
}
