//! The controller's decisions as a pure function: given what should exist, what the
//! partition states say now and which hosts are live, the changes to write.
//!
//! - A partition with no state gets `replication_factor` replicas on the least-loaded
//!   live hosts (fewest replicas, then fewest leaders, then host id rotated by the
//!   partition number so equal hosts share the work), leader = its first replica,
//!   epoch 1. It waits while fewer hosts are live than its replication factor. Where
//!   hosts know their zone, each replica goes to a zone holding the fewest of the
//!   partition's replicas so far, so copies span as many zones as there are (hosts
//!   without a zone count as one zone of their own).
//! - A partition whose leader is not live gets a new leader from its in-sync replicas
//!   that are live (fewest leaderships first) and the epoch goes up by one; if none is
//!   live it is left without a leader — with the epoch bumped, so the old leader is
//!   fenced even if it comes back — rather than elect a replica that may miss data.
//!   With a new leader, the in-sync set keeps only its live members; without one it
//!   stays as it was, so any of them can lead when it returns.
//! - A replica on a host gone longer than the grace period is replaced by a live host
//!   not yet holding one; the newcomer is not in sync until it has caught up.
//! - A host asked to leave (draining) gets no new replicas, and keeps those it holds
//!   until they are copied: each of its partitions first gains a replica on a staying
//!   host, its leadership moves to a staying in-sync replica (a new epoch; the in-sync
//!   set is unchanged, as every member holds what is committed), and only once the
//!   staying replicas are as many as the replication factor and all in sync does the
//!   draining host leave the replicas. At no point do fewer in-sync copies exist than
//!   before the drain began.
//! - A queue with a dead-letter queue is placed on the dead-letter queue's replicas,
//!   and its leadership follows the dead-letter queue's leader whenever that host is
//!   live, staying and in the queue's in-sync set (a new epoch): dead-lettering copies
//!   between the two on the host that leads both.
//! - States of partitions that should not exist (deleted topics and queues, shrunk
//!   counts never happen: partitions only grow) are deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ferry_replication::LogKind;

use super::records::PartitionState;
use crate::meta::Revision;

/// A topic or a queue the cluster should serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Topic or queue.
    pub kind: LogKind,
    /// Its name.
    pub name: String,
    /// Partitions (1 for a queue).
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// The queue whose leader this one's should share (a queue's dead-letter queue).
    pub leads_with: Option<String>,
}

/// Identifies one partition of a topic or queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    /// Topic or queue.
    pub kind: LogKind,
    /// Topic or queue name.
    pub name: String,
    /// Partition number.
    pub partition: u32,
}

impl std::fmt::Display for PartitionKey {
    /// `topic orders/3`, `queue jobs`: how logs name a partition.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            LogKind::Queue => write!(f, "queue {}", self.name),
            kind => write!(f, "{} {}/{}", kind.as_str(), self.name, self.partition),
        }
    }
}

/// What the controller knows of the hosts.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    /// Hosts registered now (their lease is alive).
    pub live: BTreeSet<String>,
    /// Hosts that hold replicas but have been gone longer than the grace period.
    pub departed: BTreeSet<String>,
    /// Hosts asked to leave: they get no new replicas and hand over those they hold.
    pub draining: BTreeSet<String>,
    /// The zone of each live host that knows its zone.
    pub zones: BTreeMap<String, String>,
}

impl Hosts {
    /// Whether `host` may receive replicas: live and not leaving.
    fn can_take(&self, host: &str) -> bool {
        self.live.contains(host) && !self.draining.contains(host)
    }

    /// How many of `replicas` share `host`'s zone (hosts without a zone share one).
    fn zone_share(&self, host: &str, replicas: &[String]) -> usize {
        let zone = self.zones.get(host);
        replicas
            .iter()
            .filter(|other| self.zones.get(*other) == zone)
            .count()
    }
}

/// One write the controller makes, compare-and-swap on the revision it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create a state that does not exist yet.
    Create {
        /// The partition.
        key: PartitionKey,
        /// Its first state.
        state: PartitionState,
    },
    /// Replace a state last written at `revision`.
    Update {
        /// The partition.
        key: PartitionKey,
        /// The new state.
        state: PartitionState,
        /// The revision it was read at.
        revision: Revision,
    },
    /// Remove a state last written at `revision`.
    Delete {
        /// The partition.
        key: PartitionKey,
        /// The revision it was read at.
        revision: Revision,
    },
}

/// Replica and leader counts per host, kept current while planning.
#[derive(Debug, Default)]
struct Load {
    replicas: HashMap<String, u32>,
    leaders: HashMap<String, u32>,
}

impl Load {
    fn add(&mut self, state: &PartitionState, sign: i64) {
        for replica in &state.replicas {
            bump(&mut self.replicas, replica, sign);
        }
        if let Some(leader) = &state.leader {
            bump(&mut self.leaders, leader, sign);
        }
    }

    fn replicas(&self, host: &str) -> u32 {
        self.replicas.get(host).copied().unwrap_or(0)
    }

    fn leaders(&self, host: &str) -> u32 {
        self.leaders.get(host).copied().unwrap_or(0)
    }
}

fn bump(counts: &mut HashMap<String, u32>, host: &str, sign: i64) {
    let count = counts.entry(host.to_owned()).or_default();
    *count = if sign > 0 {
        count.saturating_add(1)
    } else {
        count.saturating_sub(1)
    };
}

/// The changes that bring `current` to what `desired` and the live hosts call for.
pub fn plan(
    desired: &[Desired],
    current: &BTreeMap<PartitionKey, (PartitionState, Revision)>,
    hosts: &Hosts,
) -> Vec<Change> {
    let mut load = Load::default();
    for (state, _) in current.values() {
        load.add(state, 1);
    }
    let mut wanted = BTreeSet::new();
    let mut changes = Vec::new();
    // States as this pass leaves them, for queues placed with their dead-letter queue.
    let mut planned: BTreeMap<PartitionKey, PartitionState> = current
        .iter()
        .map(|(key, (state, _))| (key.clone(), state.clone()))
        .collect();
    for resource in desired {
        let partner = resource
            .leads_with
            .as_ref()
            .and_then(|name| {
                planned.get(&PartitionKey {
                    kind: LogKind::Queue,
                    name: name.clone(),
                    partition: 0,
                })
            })
            .cloned();
        for partition in 0..resource.partitions {
            let key = PartitionKey {
                kind: resource.kind,
                name: resource.name.clone(),
                partition,
            };
            wanted.insert(key.clone());
            let next = match current.get(&key) {
                None => place(resource, partition, hosts, &load, partner.as_ref()),
                Some((state, _)) => repair(state, resource, hosts, &load, partner.as_ref()),
            };
            let Some(next) = next else { continue };
            planned.insert(key.clone(), next.clone());
            match current.get(&key) {
                None => {
                    load.add(&next, 1);
                    changes.push(Change::Create { key, state: next });
                }
                Some((state, revision)) => {
                    load.add(state, -1);
                    load.add(&next, 1);
                    changes.push(Change::Update {
                        key,
                        state: next,
                        revision: *revision,
                    });
                }
            }
        }
    }
    for (key, (_, revision)) in current {
        if !wanted.contains(key) {
            changes.push(Change::Delete {
                key: key.clone(),
                revision: *revision,
            });
        }
    }
    changes
}

/// A first placement, or `None` while too few hosts are live. With a `partner` (the
/// dead-letter queue's state), its leader and replicas come first, its leader
/// leading.
fn place(
    resource: &Desired,
    partition: u32,
    hosts: &Hosts,
    load: &Load,
    partner: Option<&PartitionState>,
) -> Option<PartitionState> {
    let count = wanted_replicas(resource);
    let live: Vec<&String> = hosts.live.iter().filter(|h| hosts.can_take(h)).collect();
    if live.len() < count {
        return None;
    }
    if let Some(partner) = partner {
        let mut replicas: Vec<String> = Vec::new();
        for host in partner.leader.iter().chain(partner.replicas.iter()) {
            if hosts.can_take(host) && !replicas.contains(host) {
                replicas.push(host.clone());
            }
        }
        let mut others: Vec<&String> = live
            .iter()
            .copied()
            .filter(|h| !replicas.contains(h))
            .collect();
        others.sort_by_key(|h| (load.replicas(h), load.leaders(h)));
        replicas.extend(others.into_iter().cloned());
        replicas.truncate(count);
        return Some(PartitionState {
            leader: replicas.first().cloned(),
            leader_epoch: 1,
            isr: replicas.clone(),
            replicas,
        });
    }
    let rotation = usize::try_from(partition).unwrap_or(0) % live.len();
    let mut candidates: Vec<(usize, &String)> = live
        .iter()
        .enumerate()
        .map(|(i, host)| ((i + live.len() - rotation) % live.len(), *host))
        .collect();
    candidates.sort_by_key(|(turn, host)| (load.replicas(host), load.leaders(host), *turn));
    // Greedy over the load order: each next replica from the least-used zone.
    let mut replicas: Vec<String> = Vec::with_capacity(count);
    while replicas.len() < count {
        let Some(at) = (0..candidates.len())
            .min_by_key(|&i| (hosts.zone_share(candidates[i].1, &replicas), i))
        else {
            break;
        };
        replicas.push(candidates.remove(at).1.clone());
    }
    // The least-leading replica leads; it goes first as the preferred leader.
    let leader_at = (0..replicas.len())
        .min_by_key(|&i| load.leaders(&replicas[i]))
        .unwrap_or(0);
    replicas.swap(0, leader_at);
    Some(PartitionState {
        leader: replicas.first().cloned(),
        leader_epoch: 1,
        isr: replicas.clone(),
        replicas,
    })
}

/// Replicas a partition of `resource` should have.
fn wanted_replicas(resource: &Desired) -> usize {
    usize::try_from(resource.replication_factor)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// The host that may take a replica of `state` and holds none yet: in the zone with
/// the fewest of its replicas (counting those that stay), then the least loaded.
fn newcomer(state: &PartitionState, hosts: &Hosts, load: &Load) -> Option<String> {
    let staying: Vec<String> = state
        .replicas
        .iter()
        .filter(|h| !hosts.departed.contains(*h) && !hosts.draining.contains(*h))
        .cloned()
        .collect();
    hosts
        .live
        .iter()
        .filter(|host| hosts.can_take(host) && !state.has_replica(host))
        .min_by_key(|host| {
            (
                hosts.zone_share(host, &staying),
                load.replicas(host),
                load.leaders(host),
            )
        })
        .cloned()
}

/// A repaired state, or `None` when nothing needs to change.
fn repair(
    state: &PartitionState,
    resource: &Desired,
    hosts: &Hosts,
    load: &Load,
    partner: Option<&PartitionState>,
) -> Option<PartitionState> {
    let mut next = state.clone();
    // Replace replicas on departed hosts with live hosts that hold none.
    for slot in 0..next.replicas.len() {
        if !hosts.departed.contains(&next.replicas[slot]) {
            continue;
        }
        if let Some(host) = newcomer(&next, hosts, load) {
            let gone = std::mem::replace(&mut next.replicas[slot], host);
            next.isr.retain(|h| *h != gone);
        }
    }
    let draining = |host: &String| hosts.draining.contains(host);
    let drains = next.replicas.iter().any(draining);
    // Copies first: staying hosts join until they alone reach the replication factor.
    while drains
        && next.replicas.iter().filter(|h| !draining(h)).count() < wanted_replicas(resource)
    {
        let Some(host) = newcomer(&next, hosts, load) else {
            break;
        };
        next.replicas.push(host);
    }
    // A live draining leader hands over to a live staying member of the in-sync set.
    if let Some(leader) = &next.leader
        && draining(leader)
        && hosts.live.contains(leader)
        && let Some(successor) = next
            .isr
            .iter()
            .filter(|h| hosts.can_take(h))
            .min_by_key(|h| load.leaders(h))
            .cloned()
    {
        next.leader = Some(successor);
        next.leader_epoch += 1;
    }
    let mut next = ferry_replication::election::elect(next, &hosts.live, |h| load.leaders(h));
    // Lead where the dead-letter queue leads, when that host may: live, staying, and
    // holding everything committed here.
    if let Some(wanted) = partner.and_then(|p| p.leader.as_ref())
        && next.leader.as_ref().is_some_and(|leader| leader != wanted)
        && next.isr.contains(wanted)
        && hosts.can_take(wanted)
    {
        next.leader = Some(wanted.clone());
        next.leader_epoch += 1;
    }
    // The draining hosts leave once the staying replicas hold everything committed.
    let staying: Vec<&String> = next.replicas.iter().filter(|h| !draining(h)).collect();
    let handed_over = drains
        && staying.len() >= wanted_replicas(resource)
        && staying.iter().all(|h| next.isr.contains(h))
        && next.leader.as_ref().is_some_and(|l| !draining(l));
    if handed_over {
        next.replicas.retain(|h| !draining(h));
        next.isr.retain(|h| !draining(h));
    }
    (next != *state).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(live: &[&str]) -> Hosts {
        Hosts {
            live: live.iter().map(|h| (*h).to_owned()).collect(),
            departed: BTreeSet::new(),
            draining: BTreeSet::new(),
            zones: BTreeMap::new(),
        }
    }

    fn topic(name: &str, partitions: u32, rf: u32) -> Desired {
        Desired {
            kind: LogKind::Topic,
            name: name.into(),
            partitions,
            replication_factor: rf,
            leads_with: None,
        }
    }

    fn apply(
        current: &mut BTreeMap<PartitionKey, (PartitionState, Revision)>,
        changes: Vec<Change>,
    ) {
        for change in changes {
            match change {
                Change::Create { key, state } => {
                    current.insert(key, (state, 1));
                }
                Change::Update {
                    key,
                    state,
                    revision,
                } => {
                    current.insert(key, (state, revision + 1));
                }
                Change::Delete { key, .. } => {
                    current.remove(&key);
                }
            }
        }
    }

    fn step(
        current: &mut BTreeMap<PartitionKey, (PartitionState, Revision)>,
        desired: &[Desired],
        hosts: &Hosts,
    ) {
        let changes = plan(desired, current, hosts);
        apply(current, changes);
    }

    #[test]
    fn new_partitions_spread_replicas_and_leaders_evenly() {
        let mut current = BTreeMap::new();
        let live = hosts(&["h0", "h1", "h2"]);
        step(&mut current, &[topic("t", 6, 3)], &live);
        assert_eq!(current.len(), 6);
        let mut leaders: HashMap<String, u32> = HashMap::new();
        for (state, _) in current.values() {
            assert_eq!(state.replicas.len(), 3);
            assert_eq!(state.isr, state.replicas);
            assert_eq!(state.leader_epoch, 1);
            let leader = state.leader.clone().expect("leader");
            assert_eq!(Some(&leader), state.replicas.first());
            *leaders.entry(leader).or_default() += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
        // Nothing left to do.
        assert!(plan(&[topic("t", 6, 3)], &current, &live).is_empty());
    }

    #[test]
    fn replication_factor_one_spreads_partitions_over_hosts() {
        let mut current = BTreeMap::new();
        step(&mut current, &[topic("t", 4, 1)], &hosts(&["a", "b"]));
        let per_host: BTreeSet<_> = current.values().map(|(s, _)| s.replicas.clone()).collect();
        assert_eq!(per_host.len(), 2);
    }

    #[test]
    fn placement_waits_for_enough_live_hosts() {
        let current = BTreeMap::new();
        assert!(plan(&[topic("t", 1, 3)], &current, &hosts(&["h0", "h1"])).is_empty());
    }

    #[test]
    fn a_dead_leader_is_replaced_from_live_in_sync_replicas_with_a_new_epoch() {
        let mut current = BTreeMap::new();
        step(
            &mut current,
            &[topic("t", 1, 3)],
            &hosts(&["h0", "h1", "h2"]),
        );
        let (before, _) = current.values().next().cloned().expect("state");
        let old = before.leader.clone().expect("leader");
        let survivors: Vec<&str> = ["h0", "h1", "h2"]
            .into_iter()
            .filter(|h| *h != old)
            .collect();
        let changes = plan(&[topic("t", 1, 3)], &current, &hosts(&survivors));
        let [Change::Update { state, .. }] = changes.as_slice() else {
            panic!("one update expected: {changes:?}");
        };
        assert_eq!(state.leader_epoch, before.leader_epoch + 1);
        let new = state.leader.clone().expect("new leader");
        assert_ne!(new, old);
        assert!(state.isr.contains(&new));
        assert!(
            !state.isr.contains(&old),
            "the dead leader leaves the in-sync set: {state:?}"
        );
        assert_eq!(state.isr.len(), 2);
        assert_eq!(
            state.replicas, before.replicas,
            "replicas stay during the grace period"
        );
    }

    #[test]
    fn no_live_in_sync_replica_means_no_leader_but_a_fencing_epoch() {
        let mut current = BTreeMap::new();
        let key = PartitionKey {
            kind: LogKind::Topic,
            name: "t".into(),
            partition: 0,
        };
        current.insert(
            key,
            (
                PartitionState {
                    replicas: vec!["h0".into(), "h1".into()],
                    leader: Some("h0".into()),
                    leader_epoch: 4,
                    isr: vec!["h0".into()],
                },
                9,
            ),
        );
        let changes = plan(&[topic("t", 1, 2)], &current, &hosts(&["h1"]));
        let [
            Change::Update {
                state, revision, ..
            },
        ] = changes.as_slice()
        else {
            panic!("one update expected: {changes:?}");
        };
        assert_eq!(*revision, 9);
        assert_eq!(state.leader, None, "h1 is not in sync: no unclean election");
        assert_eq!(state.leader_epoch, 5);
        apply(&mut current, changes);
        // Stable afterwards: no epoch churn while nobody can lead.
        assert!(plan(&[topic("t", 1, 2)], &current, &hosts(&["h1"])).is_empty());
    }

    #[test]
    fn departed_hosts_lose_their_replicas_to_live_hosts() {
        let mut current = BTreeMap::new();
        step(&mut current, &[topic("t", 2, 2)], &hosts(&["h0", "h1"]));
        let mut later = hosts(&["h1", "h2"]);
        later.departed.insert("h0".into());
        step(&mut current, &[topic("t", 2, 2)], &later);
        for (state, _) in current.values() {
            assert!(!state.has_replica("h0"));
            assert!(state.has_replica("h2"));
            assert!(
                !state.isr.contains(&"h2".to_owned()),
                "newcomers start out of sync"
            );
            assert_eq!(state.leader.as_deref(), Some("h1"));
        }
    }

    #[test]
    fn states_of_deleted_resources_are_removed() {
        let mut current = BTreeMap::new();
        let live = hosts(&["h0"]);
        step(&mut current, &[topic("t", 2, 1)], &live);
        let changes = plan(&[], &current, &live);
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| matches!(c, Change::Delete { .. })));
    }

    /// Marks every staying replica of every partition in sync, as their leaders would
    /// once the newcomers caught up.
    fn catch_up(current: &mut BTreeMap<PartitionKey, (PartitionState, Revision)>) {
        for (state, revision) in current.values_mut() {
            state.isr = state.replicas.clone();
            *revision += 1;
        }
    }

    #[test]
    fn a_draining_host_hands_over_only_once_its_replacement_is_in_sync() {
        let resources = [topic("t", 4, 3)];
        let mut current = BTreeMap::new();
        let mut four = hosts(&["h0", "h1", "h2", "h3"]);
        step(&mut current, &resources, &four);
        let before = current.clone();
        four.draining.insert("h3".into());
        step(&mut current, &resources, &four);
        for (key, (state, _)) in &current {
            let (old, _) = &before[key];
            if !old.has_replica("h3") {
                assert_eq!(state, old, "{key:?} does not involve h3 and stays");
                continue;
            }
            assert_eq!(state.replicas.len(), 4, "{key:?}: a copy is added first");
            assert!(
                state.has_replica("h3"),
                "{key:?}: h3 keeps its copy for now"
            );
            assert_eq!(state.isr, old.isr, "{key:?}: the in-sync set is unchanged");
            assert_ne!(
                state.leader.as_deref(),
                Some("h3"),
                "{key:?}: h3 leads no more"
            );
            let moved = old.leader.as_deref() == Some("h3");
            assert_eq!(state.leader_epoch, old.leader_epoch + u64::from(moved));
        }
        // Nothing more happens while the newcomers catch up.
        assert!(plan(&resources, &current, &four).is_empty());
        catch_up(&mut current);
        step(&mut current, &resources, &four);
        for (key, (state, _)) in &current {
            assert_eq!(state.replicas.len(), 3, "{key:?}");
            assert!(!state.has_replica("h3"), "{key:?}: h3 left");
            assert_eq!(state.isr.len(), 3, "{key:?}");
        }
        assert!(plan(&resources, &current, &four).is_empty());
    }

    #[test]
    fn a_draining_host_gets_no_new_replicas() {
        let mut live = hosts(&["h0", "h1", "h2", "h3"]);
        live.draining.insert("h0".into());
        let mut current = BTreeMap::new();
        step(&mut current, &[topic("t", 8, 3)], &live);
        assert_eq!(current.len(), 8);
        assert!(current.values().all(|(state, _)| !state.has_replica("h0")));
    }

    #[test]
    fn a_drain_with_nowhere_to_go_keeps_the_replicas() {
        let resources = [topic("t", 2, 3)];
        let mut live = hosts(&["h0", "h1", "h2"]);
        let mut current = BTreeMap::new();
        step(&mut current, &resources, &live);
        live.draining.insert("h2".into());
        step(&mut current, &resources, &live);
        catch_up(&mut current);
        step(&mut current, &resources, &live);
        for (state, _) in current.values() {
            assert!(
                state.has_replica("h2"),
                "no staying host could take its copy"
            );
            assert_eq!(state.isr.len(), 3);
            assert_ne!(state.leader.as_deref(), Some("h2"));
        }
    }

    #[test]
    fn a_dead_draining_leader_is_replaced_as_any_dead_leader() {
        let resources = [topic("t", 1, 3)];
        let mut live = hosts(&["h0", "h1", "h2", "h3"]);
        let mut current = BTreeMap::new();
        step(&mut current, &resources, &live);
        let leader = current.values().next().and_then(|(s, _)| s.leader.clone());
        let leader = leader.expect("a leader");
        live.draining.insert(leader.clone());
        live.live.remove(&leader);
        step(&mut current, &resources, &live);
        let (state, _) = current.values().next().expect("state");
        let new_leader = state.leader.clone().expect("a live in-sync replica leads");
        assert_ne!(new_leader, leader);
        assert!(!state.isr.contains(&leader), "a dead member leaves the set");
        assert!(state.has_replica(&leader), "its copy stays until replaced");
    }

    fn queue(name: &str, rf: u32, dead_letter: Option<&str>) -> Desired {
        Desired {
            kind: LogKind::Queue,
            name: name.into(),
            partitions: 1,
            replication_factor: rf,
            leads_with: dead_letter.map(str::to_owned),
        }
    }

    fn state_of<'a>(
        current: &'a BTreeMap<PartitionKey, (PartitionState, Revision)>,
        name: &str,
    ) -> &'a PartitionState {
        &current
            .iter()
            .find(|(key, _)| key.name == name)
            .expect("a state")
            .1
            .0
    }

    #[test]
    fn a_queue_is_placed_and_led_where_its_dead_letter_queue_is() {
        let live = hosts(&["h0", "h1", "h2", "h3", "h4"]);
        let mut current = BTreeMap::new();
        // Load the hosts unevenly, so the least-loaded choice would differ.
        step(&mut current, &[topic("t", 3, 2)], &live);
        let resources = [
            topic("t", 3, 2),
            queue("dlq", 2, None),
            queue("work", 3, Some("dlq")),
        ];
        step(&mut current, &resources, &live);
        let (dlq, work) = (state_of(&current, "dlq"), state_of(&current, "work"));
        assert_eq!(work.leader, dlq.leader);
        assert!(
            dlq.replicas.iter().all(|h| work.has_replica(h)),
            "{dlq:?} {work:?}"
        );
        assert_eq!(work.replicas.len(), 3);
    }

    #[test]
    fn a_queue_leadership_follows_its_dead_letter_queue_leader() {
        let resources = [queue("dlq", 3, None), queue("work", 3, Some("dlq"))];
        let mut live = hosts(&["h0", "h1", "h2"]);
        let mut current = BTreeMap::new();
        step(&mut current, &resources, &live);
        let first = state_of(&current, "dlq").leader.clone().expect("a leader");
        assert_eq!(state_of(&current, "work").leader.as_ref(), Some(&first));
        // The shared leader dies: each queue elects on its own, then the queue moves
        // to wherever the dead-letter queue went.
        live.live.remove(&first);
        for _ in 0..2 {
            step(&mut current, &resources, &live);
        }
        let (dlq, work) = (state_of(&current, "dlq"), state_of(&current, "work"));
        assert!(dlq.leader.is_some() && dlq.leader.as_ref() != Some(&first));
        assert_eq!(work.leader, dlq.leader);
        assert!(plan(&resources, &current, &live).is_empty(), "and stays");
    }

    fn zoned(layout: &[(&str, &str)]) -> Hosts {
        let mut zoned = hosts(&layout.iter().map(|(h, _)| *h).collect::<Vec<_>>());
        zoned.zones = layout
            .iter()
            .map(|(h, z)| ((*h).to_owned(), (*z).to_owned()))
            .collect();
        zoned
    }

    fn zones_of(hosts: &Hosts, state: &PartitionState) -> BTreeSet<String> {
        state
            .replicas
            .iter()
            .filter_map(|h| hosts.zones.get(h).cloned())
            .collect()
    }

    #[test]
    fn replicas_span_the_zones() {
        // Zone a has most hosts: least-loaded alone would often pick two of them.
        let live = zoned(&[
            ("h0", "a"),
            ("h1", "a"),
            ("h2", "a"),
            ("h3", "a"),
            ("h4", "b"),
            ("h5", "c"),
        ]);
        let mut current = BTreeMap::new();
        step(&mut current, &[topic("t", 12, 3)], &live);
        for (key, (state, _)) in &current {
            assert_eq!(zones_of(&live, state).len(), 3, "{key:?}: {state:?}");
        }
        // Two zones for three replicas: both used, one twice.
        let two = zoned(&[("h0", "a"), ("h1", "a"), ("h2", "b"), ("h3", "b")]);
        let mut current = BTreeMap::new();
        step(&mut current, &[topic("t", 8, 3)], &two);
        for (state, _) in current.values() {
            assert_eq!(zones_of(&two, state).len(), 2, "{state:?}");
        }
    }

    #[test]
    fn a_replacement_comes_from_the_zone_the_partition_lost() {
        let resources = [topic("t", 6, 3)];
        let mut live = zoned(&[
            ("h0", "a"),
            ("h1", "b"),
            ("h2", "c"),
            ("h3", "a"),
            ("h4", "b"),
            ("h5", "c"),
        ]);
        let mut current = BTreeMap::new();
        step(&mut current, &resources, &live);
        let held_h2: Vec<PartitionKey> = current
            .iter()
            .filter(|(_, (state, _))| state.has_replica("h2"))
            .map(|(key, _)| key.clone())
            .collect();
        assert!(!held_h2.is_empty());
        // h2 departs: zone a and b hosts are less loaded, but c is what is missing.
        live.live.remove("h2");
        live.zones.remove("h2");
        live.departed.insert("h2".into());
        step(&mut current, &resources, &live);
        for key in &held_h2 {
            let (state, _) = &current[key];
            assert!(state.has_replica("h5"), "{key:?}: {state:?}");
        }
        // h5 drains too: zone c is gone, so its copies go to a and b.
        live.draining.insert("h5".into());
        step(&mut current, &resources, &live);
        catch_up(&mut current);
        step(&mut current, &resources, &live);
        for (state, _) in current.values() {
            assert!(!state.has_replica("h5"), "{state:?}");
            assert_eq!(state.replicas.len(), 3, "{state:?}");
            assert_eq!(zones_of(&live, state).len(), 2, "{state:?}");
        }
    }
}
