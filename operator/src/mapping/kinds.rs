//! What the Topic and Queue resources tell the shared reconciler.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::crd::{BrokerSettings, DeletionPolicy, Queue, Topic};
use crate::records::{self, Kind, QueueSettings, TopicSettings};

/// The status fields the reconciler reads back from a resource.
#[derive(Debug, Clone, Default)]
pub struct StatusView {
    /// Current conditions.
    pub conditions: Vec<Condition>,
    /// The BrokerCluster chosen before.
    pub cluster: Option<String>,
    /// The incarnation claimed before.
    pub incarnation: Option<u64>,
    /// The digest of the record last written.
    pub record_digest: Option<String>,
}

/// What the cluster publishes about a topic's or queue's partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// Partitions with a leader.
    pub led: u32,
    /// Partitions expected.
    pub total: u32,
    /// A queue's depth, when published.
    pub depth: Option<u64>,
    /// Whether it holds no messages, when every partition's state is published.
    pub empty: Option<bool>,
}

/// A resource the operator maps onto a broker topic or queue record.
pub trait Mapped:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Which kind of broker object it is.
    const KIND: Kind;
    /// The resource kind, for metrics and messages.
    const KIND_NAME: &'static str;
    /// The broker's settings type of the record.
    type Settings: Serialize + DeserializeOwned + PartialEq + Clone + Debug + Send + Sync;

    /// The broker name: `spec.topicName`/`spec.queueName`, else `metadata.name`.
    fn broker_name(&self) -> String;
    /// `spec.clusterRef`.
    fn cluster_ref(&self) -> Option<&str>;
    /// `spec.deletionPolicy`.
    fn deletion_policy(&self) -> DeletionPolicy;
    /// `spec.replicationFactor`.
    fn replication_factor(&self) -> u32;
    /// Partitions the broker object has (1 for a queue).
    fn partitions(&self) -> u32;
    /// The settings to write, resolved against the owning cluster's configuration.
    fn settings(&self, cluster: &BrokerSettings) -> Self::Settings;
    /// What the status says so far.
    fn status_view(&self) -> StatusView;
    /// The kind's own status fields from what the cluster publishes.
    fn observed_status(observed: &Observed) -> Map<String, Value>;
}

impl Mapped for Topic {
    const KIND: Kind = Kind::Topic;
    const KIND_NAME: &'static str = "Topic";
    type Settings = TopicSettings;

    fn broker_name(&self) -> String {
        self.spec
            .topic_name
            .clone()
            .unwrap_or_else(|| self.name_any())
    }
    fn cluster_ref(&self) -> Option<&str> {
        self.spec.cluster_ref.as_deref()
    }
    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }
    fn replication_factor(&self) -> u32 {
        self.spec.replication_factor
    }
    fn partitions(&self) -> u32 {
        self.spec.partitions
    }
    fn settings(&self, cluster: &BrokerSettings) -> TopicSettings {
        records::topic_settings(&self.spec, cluster)
    }
    fn status_view(&self) -> StatusView {
        self.status
            .as_ref()
            .map_or_else(StatusView::default, |s| StatusView {
                conditions: s.conditions.clone(),
                cluster: s.cluster.clone(),
                incarnation: s.incarnation,
                record_digest: s.record_digest.clone(),
            })
    }
    fn observed_status(observed: &Observed) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert(
            "partitions".to_owned(),
            json!({"ready": observed.led, "total": observed.total}),
        );
        map
    }
}

impl Mapped for Queue {
    const KIND: Kind = Kind::Queue;
    const KIND_NAME: &'static str = "Queue";
    type Settings = QueueSettings;

    fn broker_name(&self) -> String {
        self.spec
            .queue_name
            .clone()
            .unwrap_or_else(|| self.name_any())
    }
    fn cluster_ref(&self) -> Option<&str> {
        self.spec.cluster_ref.as_deref()
    }
    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }
    fn replication_factor(&self) -> u32 {
        self.spec.replication_factor
    }
    fn partitions(&self) -> u32 {
        1
    }
    fn settings(&self, cluster: &BrokerSettings) -> QueueSettings {
        records::queue_settings(&self.spec, cluster)
    }
    fn status_view(&self) -> StatusView {
        self.status
            .as_ref()
            .map_or_else(StatusView::default, |s| StatusView {
                conditions: s.conditions.clone(),
                cluster: s.cluster.clone(),
                incarnation: s.incarnation,
                record_digest: s.record_digest.clone(),
            })
    }
    fn observed_status(observed: &Observed) -> Map<String, Value> {
        let mut map = Map::new();
        if let Some(depth) = observed.depth {
            map.insert("depth".to_owned(), json!(depth));
        }
        map
    }
}
