//! The JSON values cluster mode keeps in etcd (see `docs/etcd-keyspace.md`).

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
