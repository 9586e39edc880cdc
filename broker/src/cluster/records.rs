//! The JSON values cluster mode keeps in etcd (see `docs/etcd-keyspace.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A live host, under `/ferry/clusters/{cluster}/hosts/{host}`, attached to its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The host's id.
    pub host_id: String,
    /// Where its gRPC service is reached.
    pub advertise: String,
    /// When it registered (this lease), ms since the Unix epoch.
    pub registered_at_ms: i64,
    /// The failure domain it runs in, if it knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Where other hosts reach its peer listener (replication, requests passed on);
    /// hosts from before the peer listener served both on `advertise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_advertise: Option<String>,
}

impl HostRecord {
    /// The address other hosts dial: its peer listener, else its client port.
    pub fn peer_address(&self) -> &str {
        self.peer_advertise.as_deref().unwrap_or(&self.advertise)
    }
}

/// The elected controller, under `/ferry/clusters/{cluster}/controller`, attached to
/// the controller host's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRecord {
    /// The controller host's id.
    pub host_id: String,
    /// When it was elected, ms since the Unix epoch.
    pub elected_at_ms: i64,
}

/// The cluster's identity, under `/ferry/clusters/{cluster}/identity`: created once by
/// the first host to start, and kept by every host in its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// Unique per creation of the cluster.
    pub cluster_id: u64,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: i64,
}

/// One partition's placement and leadership: the replication crate's type, kept in
/// etcd as JSON.
pub use ferry_replication::PartitionState;

/// What the leader of a topic partition publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedPartition {
    /// The leader that wrote it.
    pub leader: String,
    /// Its epoch.
    pub leader_epoch: u64,
    /// First offset stored.
    pub log_start: u64,
    /// Consumers read below it.
    pub high_watermark: u64,
    /// Next offset to assign.
    pub log_end: u64,
    /// Each follower's lag behind the log end, in records (`null` before it fetched).
    pub follower_lag: BTreeMap<String, Option<u64>>,
    /// When it was written, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// What the leader of a queue publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedQueue {
    /// The leader that wrote it.
    pub leader: String,
    /// Its epoch.
    pub leader_epoch: u64,
    /// Messages stored and not yet acked: visible, in flight, delayed, dead-lettering.
    pub depth: u64,
    /// Visible now.
    pub visible: u64,
    /// Received, not acked.
    pub in_flight: u64,
    /// Waiting for their delay.
    pub delayed: u64,
    /// Age of the oldest message.
    pub oldest_age_ms: u64,
    /// When it was written, ms since the Unix epoch.
    pub updated_at_ms: i64,
}
