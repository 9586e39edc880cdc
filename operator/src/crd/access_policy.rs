//! The `AccessPolicy` resource: who besides the namespace's own ServiceAccounts may
//! use the namespace's Topics and Queues, and how.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rules::{NAME_MAX_LEN, NAME_PATTERN};

/// Grants on the Topics and Queues of this namespace. A policy reaches only its own
/// namespace's resources (named by their resource names), so a namespace's owners
/// decide who uses them; the operator writes each grant as a broker access rule.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    namespaced,
    status = "AccessPolicyStatus",
    derive = "PartialEq",
    shortname = "fap",
    category = "ferry",
    doc = "Grants on the Topics and Queues of this namespace to ServiceAccounts of other namespaces, users and groups.",
    printcolumn(
        name = "Rules",
        type_ = "integer",
        json_path = ".status.rules",
        description = "Broker access rules written"
    ),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status",
        description = "Whether the rules in etcd match the spec"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63")
        .message("an AccessPolicy's name has at most 63 characters (its rules' names carry it)")
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// The grants, 1–64 of them.
    #[schemars(length(min = 1, max = 64))]
    pub grants: Vec<Grant>,
}

/// Who may do what on which of the namespace's Topics and Queues.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "size(self.serviceAccounts) + size(self.users) + size(self.groups) > 0"
)
.message("a grant names at least one ServiceAccount, user or group"))]
#[x_kube(validation = kube::core::Rule::new(
    "size(self.topics) + size(self.queues) + size(self.consumerGroups) > 0"
)
.message("a grant names at least one topic, queue or consumer group"))]
pub struct Grant {
    /// ServiceAccounts as `namespace/name`, or `name` for this namespace's.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 317), regex(pattern = SERVICE_ACCOUNT_PATTERN)))]
    pub service_accounts: Vec<String>,
    /// Principals authenticated by client certificate or static token.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    pub users: Vec<String>,
    /// Groups of principals (certificate organizations, token groups,
    /// `system:serviceaccounts:NS`).
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    pub groups: Vec<String>,
    /// Topic resources of this namespace, by `metadata.name`.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = NAME_MAX_LEN), regex(pattern = NAME_PATTERN)))]
    pub topics: Vec<String>,
    /// Queue resources of this namespace, by `metadata.name`.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = NAME_MAX_LEN), regex(pattern = NAME_PATTERN)))]
    pub queues: Vec<String>,
    /// Consumer groups, named without this namespace's prefix: `readers` grants the
    /// group `{namespace}.readers`.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 200), regex(pattern = NAME_PATTERN)))]
    pub consumer_groups: Vec<String>,
    /// What they may do: `produce`, `consume` (topics); `send`, `receive`, `ack`,
    /// `purge`, `redrive` (queues); `join`, `commit` (consumer groups); `describe`
    /// (all). Each applies to the kinds it means something on.
    #[schemars(length(min = 1, max = 12))]
    pub operations: Vec<GrantedOperation>,
}

/// A `namespace/name` or `name` of a ServiceAccount.
pub const SERVICE_ACCOUNT_PATTERN: &str =
    "^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$";

/// An operation an AccessPolicy may grant (administration stays with the resources).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GrantedOperation {
    /// Append to a topic.
    Produce,
    /// Read a topic.
    Consume,
    /// See a topic, queue or group.
    Describe,
    /// Send to a queue.
    Send,
    /// Receive from a queue.
    Receive,
    /// Acknowledge, reject or extend received messages.
    Ack,
    /// Remove every message of a queue.
    Purge,
    /// Move a dead-letter queue's messages back.
    Redrive,
    /// Join a consumer group.
    Join,
    /// Commit a consumer group's offsets.
    Commit,
}

/// What the operator wrote for a policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// `Synced`: the broker access rules match this spec (`False` names a resource
    /// that does not exist in the namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Broker access rules written for this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<u32>,
}
