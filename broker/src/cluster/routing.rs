//! Which requests this host may serve in cluster mode: those for partitions it leads
//! while its lease holds. Everything else is refused with `NotLeader`, carrying where
//! the leader is (when there is one) so the client can go there.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::membership::LeaseStatus;
use super::view::ClusterView;
use crate::error::{BrokerError, BrokerResult, LeaderLocation};

/// The resource kinds partition states are kept for.
pub use ferry_replication::LogKind;

/// Leadership checks against this host's view of the cluster.
#[derive(Debug, Clone)]
pub struct Routing {
    cluster: String,
    host_id: String,
    view: watch::Receiver<Arc<ClusterView>>,
    lease: watch::Receiver<LeaseStatus>,
}

impl Routing {
    /// Checks for `host_id` of `cluster` against the followed view and the host's lease.
    pub fn new(
        cluster: String,
        host_id: String,
        view: watch::Receiver<Arc<ClusterView>>,
        lease: watch::Receiver<LeaseStatus>,
    ) -> Self {
        Self {
            cluster,
            host_id,
            view,
            lease,
        }
    }

    /// The cluster as this host sees it now.
    pub fn view(&self) -> Arc<ClusterView> {
        Arc::clone(&self.view.borrow())
    }

    /// The view, and its changes to come.
    pub fn watch_view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// This host's id.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// Whether this host's lease holds now (by its own conservative deadline).
    pub fn lease_live(&self) -> bool {
        self.lease.borrow().is_live(Instant::now())
    }

    /// The cluster this host belongs to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The leader epoch when this host leads the partition now; `NotLeader` (with
    /// the leader, if one is known) otherwise.
    pub fn check(&self, kind: LogKind, name: &str, partition: u32) -> BrokerResult<u64> {
        let view = self.view.borrow();
        let state = view.partition(kind, name, partition);
        let leader = state.and_then(|s| s.leader.as_deref());
        if let Some(state) = state
            && leader == Some(self.host_id.as_str())
            && self.lease.borrow().is_live(Instant::now())
        {
            return Ok(state.leader_epoch);
        }
        let location = match (state, leader) {
            (Some(state), Some(host)) if host != self.host_id => {
                view.hosts.get(host).map(|record| LeaderLocation {
                    host_id: host.to_owned(),
                    address: record.advertise.clone(),
                    leader_epoch: state.leader_epoch,
                })
            }
            _ => None,
        };
        Err(BrokerError::NotLeader {
            kind,
            name: name.to_owned(),
            partition,
            leader: location,
        })
    }

    /// Whether the controller has placed the partition (its state exists), led or not.
    pub fn is_placed(&self, kind: LogKind, name: &str, partition: u32) -> bool {
        self.view
            .borrow()
            .partition(kind, name, partition)
            .is_some()
    }

    /// The partitions of a `partitions`-partition resource this host leads now.
    pub fn led(&self, kind: LogKind, name: &str, partitions: u32) -> Vec<u32> {
        (0..partitions)
            .filter(|p| self.check(kind, name, *p).is_ok())
            .collect()
    }
}

/// The host coordinating consumer group `group` among `live` hosts (sorted by id):
/// chosen by a hash of the name that every host and gateway computes alike, so a
/// group's members meet on one host whichever host they connect to.
pub fn coordinator_index(group: &str, live: usize) -> Option<usize> {
    // FNV-1a: stable across processes and versions, unlike std's SipHash seed.
    let hash = group.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let live = u64::try_from(live).ok().filter(|n| *n > 0)?;
    usize::try_from(hash % live).ok()
}

impl Routing {
    /// Cluster mode: the id and address of the live host coordinating `group`.
    /// (The address is the coordinator's peer listener: groups are passed on there.)
    pub fn group_coordinator(&self, group: &str) -> Option<(String, String)> {
        let view = self.view.borrow();
        let index = coordinator_index(group, view.hosts.len())?;
        view.hosts
            .iter()
            .nth(index)
            .map(|(id, host)| (id.clone(), host.peer_address().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::coordinator_index;

    #[test]
    fn a_group_always_maps_to_the_same_host_and_groups_spread() {
        assert_eq!(coordinator_index("orders", 0), None);
        assert_eq!(
            coordinator_index("orders", 3),
            coordinator_index("orders", 3)
        );
        let hosts: std::collections::BTreeSet<usize> = (0..30)
            .filter_map(|n| coordinator_index(&format!("group-{n}"), 3))
            .collect();
        assert_eq!(hosts.len(), 3, "thirty groups use every one of three hosts");
    }
}
