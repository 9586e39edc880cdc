//! The custom resources of group `ferry.dev`, version `v1alpha1`.
//!
//! Field names are camelCase on the wire and mirror the broker's settings
//! (`broker/src/topic/settings.rs`, `broker/src/queue/settings.rs`); durations are
//! whole milliseconds in fields ending in `Ms`, like the broker's flags and its etcd
//! records. What the API server can check on its own (ranges, name formats, immutable
//! fields, partitions that only grow) is in the schema as OpenAPI keywords and CEL
//! rules (`x-kubernetes-validations`); see `rules` and `operator/README.md`.

mod access_policy;
mod broker_cluster;
mod common;
mod queue;
pub mod rules;
mod tidy;
mod topic;

pub use access_policy::{
    AccessPolicy, AccessPolicySpec, AccessPolicyStatus, Grant, GrantedOperation,
};
pub use broker_cluster::{
    AuthSpec, BrokerCluster, BrokerClusterSpec, BrokerClusterStatus, BrokerSettings, EtcdSpec,
    NetworkPolicySpec, PodDisruptionBudgetSpec, PodOverrides, StorageSpec, TlsSpec,
};
pub use common::{DeletionPolicy, Durability, PartitionCounts, Replication};
pub use queue::{Queue, QueueSpec, QueueStatus};
pub use topic::{Topic, TopicSpec, TopicStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::CustomResourceExt;

/// The API group of every Ferry custom resource.
pub const GROUP: &str = "ferry.dev";
/// The API version this crate defines.
pub const VERSION: &str = "v1alpha1";
/// The `kubectl get` category that lists every kind (`kubectl get ferry`).
pub const CATEGORY: &str = "ferry";

/// Every CustomResourceDefinition of the operator, as it is installed: derived from the
/// types, then tidied (see `tidy`). The order is fixed.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    [
        BrokerCluster::crd(),
        Topic::crd(),
        Queue::crd(),
        AccessPolicy::crd(),
    ]
    .into_iter()
    .map(tidy::tidy)
    .collect()
}
