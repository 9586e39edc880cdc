//! When a cluster host is ready for traffic, in the sense of a Kubernetes readiness
//! probe: once its lease holds and it is back in the in-sync set of every partition
//! it replicates that has a leader, or once a bounded wait has passed. Until then a
//! rolling restart must not take another replica of those partitions down: that
//! host may be the only in-sync copy left besides the leader.
//!
//! Ready stays ready: a host that later falls behind keeps serving (it forwards
//! requests, and its partitions' leaders judge it out of sync on their own).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::placement::PartitionKey;
use crate::cluster::routing::Routing;
use crate::cluster::view::ClusterView;

/// How often readiness is looked at again without a view change (the lease may
/// have come alive meanwhile).
const RECHECK: Duration = Duration::from_secs(1);

/// The partitions `me` replicates, that have a leader, whose in-sync set does not
/// hold it: what it still has to catch up with. Empty until the view is loaded and
/// lists this host, so an empty view never counts as caught up.
pub fn catching_up(view: &ClusterView, me: &str) -> Option<Vec<PartitionKey>> {
    if view.identity.is_none() || !view.hosts.contains_key(me) {
        return None;
    }
    Some(
        view.partitions
            .iter()
            .filter(|(_, (state, _))| {
                state.has_replica(me)
                    && state.leader.is_some()
                    && !state.isr.iter().any(|host| host == me)
            })
            .map(|(key, _)| key.clone())
            .collect(),
    )
}

/// Sets `ready` once this host has caught up (or `max_wait` has passed), then ends.
pub async fn become_ready(routing: Routing, max_wait: Duration, ready: watch::Sender<bool>) {
    let started = Instant::now();
    let mut view = routing.watch_view();
    loop {
        let lagging = catching_up(&view.borrow_and_update(), routing.host_id());
        match lagging {
            Some(lagging) if lagging.is_empty() && routing.lease_live() => {
                tracing::info!("ready: in sync with every partition this host replicates");
                break;
            }
            lagging if started.elapsed() >= max_wait => {
                let behind = lagging.map_or(0, |l| l.len());
                tracing::warn!(
                    partitions_behind = behind,
                    ?max_wait,
                    "ready after the longest wait, still catching up"
                );
                break;
            }
            _ => {}
        }
        tokio::select! {
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(RECHECK) => {}
        }
    }
    let _ = ready.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::{HostRecord, PartitionState};
    use ferry_replication::LogKind;

    /// A topic partition: name, replicas, leader, in-sync set.
    type Partition<'a> = (&'a str, &'a [&'a str], Option<&'a str>, &'a [&'a str]);

    fn view_with(partitions: &[Partition<'_>]) -> ClusterView {
        let mut view = ClusterView {
            identity: Some(1),
            ..ClusterView::default()
        };
        let host = HostRecord {
            host_id: "h1".to_owned(),
            advertise: "127.0.0.1:7070".to_owned(),
            registered_at_ms: 0,
            zone: None,
            peer_advertise: None,
        };
        view.hosts.insert("h1".to_owned(), host);
        for (name, replicas, leader, isr) in partitions {
            let state = PartitionState {
                replicas: replicas.iter().map(|h| (*h).to_owned()).collect(),
                leader: leader.map(str::to_owned),
                leader_epoch: 1,
                isr: isr.iter().map(|h| (*h).to_owned()).collect(),
            };
            view.partitions.insert(
                PartitionKey {
                    kind: LogKind::Topic,
                    name: (*name).to_owned(),
                    partition: 0,
                },
                (state, 1),
            );
        }
        view
    }

    #[test]
    fn a_host_catches_up_with_led_partitions_it_replicates_outside_the_in_sync_set() {
        let view = view_with(&[
            ("in-sync", &["h0", "h1"], Some("h0"), &["h0", "h1"]),
            ("behind", &["h0", "h1"], Some("h0"), &["h0"]),
            ("elsewhere", &["h0", "h2"], Some("h0"), &["h0"]),
            ("leaderless", &["h0", "h1"], None, &[]),
        ]);
        let lagging = catching_up(&view, "h1").expect("loaded");
        let names: Vec<&str> = lagging.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["behind"]);
    }

    #[test]
    fn an_unloaded_view_or_an_unregistered_host_is_never_caught_up() {
        let mut view = view_with(&[]);
        assert_eq!(catching_up(&view, "h1"), Some(Vec::new()));
        assert_eq!(catching_up(&view, "h9"), None);
        view.identity = None;
        assert_eq!(catching_up(&view, "h1"), None);
    }
}
