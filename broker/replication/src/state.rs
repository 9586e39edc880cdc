//! A partition's placement and leadership as the metadata store holds it.

use serde::{Deserialize, Serialize};

/// One partition's placement and leadership, under
/// `/ferry/clusters/{cluster}/partitions/{topics|queues}/{name}/{partition}`, written
/// only by the controller with compare-and-swap on the key's revision (and by the
/// exceptions `docs/cluster.md` lists: in-sync changes by the leader, hosts leaving).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Hosts holding a replica, preferred leader first.
    pub replicas: Vec<String>,
    /// The host leading it now, if any.
    pub leader: Option<String>,
    /// Bumped on every leader change (and when a leader is removed): replicas refuse
    /// writes carrying an older epoch.
    pub leader_epoch: u64,
    /// Replicas known to hold everything committed; leaders are elected only from these.
    pub isr: Vec<String>,
}

impl PartitionState {
    /// Whether `host` holds a replica.
    pub fn has_replica(&self, host: &str) -> bool {
        self.replicas.iter().any(|r| r == host)
    }

    /// The replicas other than `me`, and those of them in the in-sync set: what a
    /// leader on `me` follows and counts.
    pub fn others(&self, me: &str) -> (Vec<String>, Vec<String>) {
        let others = |hosts: &[String]| hosts.iter().filter(|h| *h != me).cloned().collect();
        (others(&self.replicas), others(&self.isr))
    }
}
