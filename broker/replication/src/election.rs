//! Who may lead a partition, who leaves its in-sync set, and the state rebuilt from
//! the replicas after the metadata store lost it.
//!
//! The rule behind all of them: only a replica in the in-sync set holds everything
//! committed, so only such a replica is elected; a replica that may lack committed
//! data (a new disk, a log with lost ranges) leaves the set before it serves; and a
//! partition with no live in-sync replica stays leaderless rather than elect a
//! shorter log.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::PartitionState;

/// `state` with a live leader: kept when its leader is live and in sync; otherwise a
/// live in-sync replica (`leaderships` picks the least loaded) with the epoch bumped,
/// or no leader (epoch bumped too, fencing the old one) when none is live. With a new
/// leader the in-sync set keeps only live members: dead ones would hold the high
/// watermark (and every `sync` write) until dropped for lagging. Without one it stays
/// as it was, so any member can lead when it returns.
pub fn elect(
    mut state: PartitionState,
    live: &BTreeSet<String>,
    leaderships: impl Fn(&str) -> u32,
) -> PartitionState {
    let leader_live = state
        .leader
        .as_ref()
        .is_some_and(|leader| live.contains(leader) && state.isr.contains(leader));
    if leader_live {
        return state;
    }
    let candidate = state
        .isr
        .iter()
        .filter(|host| live.contains(*host))
        .min_by_key(|host| leaderships(host))
        .cloned();
    if candidate.is_some() || state.leader.is_some() {
        if candidate.is_some() {
            state.isr.retain(|host| live.contains(host));
        }
        state.leader = candidate;
        state.leader_epoch += 1;
    }
    state
}

/// `state` without `host` in its in-sync set (and deposed if it leads: leader cleared,
/// epoch bumped, so the controller elects another), or `None` when nothing changes.
/// A host leaves when its disk is new, or its recovery found damage or cut a tail: it
/// may lack acknowledged records. If it was the last member, the partition is left
/// leaderless until every replica has reported its log ([`recover_leaderless`]).
pub fn leave(state: &PartitionState, host: &str) -> Option<PartitionState> {
    let member = state.isr.iter().any(|h| h == host);
    let leads = state.leader.as_deref() == Some(host);
    if !member && !leads {
        return None;
    }
    Some(PartitionState {
        isr: state.isr.iter().filter(|h| *h != host).cloned().collect(),
        leader: if leads { None } else { state.leader.clone() },
        leader_epoch: state.leader_epoch + u64::from(leads),
        ..state.clone()
    })
}

/// `state` with `host` no longer leading (epoch bumped), or `None` if it does not lead.
/// A host starting up resigns every leadership first: a power loss may have cost it
/// writes past its last fsync that followers already copied, and writing new records
/// at those offsets in the same epoch would make logs differ where their epoch
/// histories agree. A new epoch marks the point where they may differ.
pub fn resign(state: &PartitionState, host: &str) -> Option<PartitionState> {
    (state.leader.as_deref() == Some(host)).then(|| PartitionState {
        leader: None,
        leader_epoch: state.leader_epoch + 1,
        ..state.clone()
    })
}

/// What a leader whose log lost records to damage proposes once a follower with a
/// whole copy is in sync: leave the set and stop leading, so a whole copy leads. (A
/// follower that copied the same gap is no better.)
pub fn step_down_if_damaged(
    state: &PartitionState,
    me: &str,
    holds_lost_ranges: bool,
    whole_copy_in_sync: bool,
) -> Option<PartitionState> {
    if !holds_lost_ranges || !whole_copy_in_sync {
        return None;
    }
    Some(PartitionState {
        isr: state.isr.iter().filter(|h| *h != me).cloned().collect(),
        leader: None,
        leader_epoch: state.leader_epoch + 1,
        ..state.clone()
    })
}

/// The in-sync set `wanted` (as a leader judged it) in placement order, as the state
/// to propose, or `None` when it is the set `state` already holds.
pub fn propose_in_sync(state: &PartitionState, wanted: &[String]) -> Option<PartitionState> {
    let isr: Vec<String> = state
        .replicas
        .iter()
        .filter(|h| wanted.contains(h))
        .cloned()
        .collect();
    let same = isr.len() == state.isr.len() && isr.iter().all(|h| state.isr.contains(h));
    (!same).then(|| PartitionState {
        isr,
        ..state.clone()
    })
}

/// One host's report on one replicated log, for a rebuild or for a partition left
/// without any in-sync replica: whether it is whole, the newest leader epoch that
/// appended to it, and its end offsets (a topic partition's log; a queue's messages
/// then journal). Ordered: a whole log is better than a damaged one (every
/// acknowledged record is on several replicas, so whole logs hold all of them between
/// them), then a newer epoch, then a longer log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaReport {
    /// No lost range in the logs.
    #[serde(default = "whole_by_default")]
    pub whole: bool,
    /// The newest leader epoch in the log (the messages log for a queue).
    pub epoch: u64,
    /// End offsets.
    pub ends: Vec<u64>,
    /// The partition state's epoch this report answers (0 for a rebuild): a report
    /// made for an earlier leaderless spell says nothing of the log now.
    #[serde(default)]
    pub answering_epoch: u64,
}

fn whole_by_default() -> bool {
    true
}

/// For a partition with no leader and no in-sync replica (its last member left because
/// its log was damaged): the state that lets the controller elect again, once every
/// replica has reported for this epoch — the best logs in sync ([`rebuilt_state`]).
/// `None` while a replica has not reported: it may hold acknowledged records the
/// others lack.
pub fn recover_leaderless(
    state: &PartitionState,
    reports: &[(String, ReplicaReport)],
) -> Option<PartitionState> {
    if state.leader.is_some() || !state.isr.is_empty() {
        return None;
    }
    let current: Vec<(String, ReplicaReport)> = reports
        .iter()
        .filter(|(host, report)| {
            state.has_replica(host) && report.answering_epoch == state.leader_epoch
        })
        .cloned()
        .collect();
    let all = state
        .replicas
        .iter()
        .all(|replica| current.iter().any(|(host, _)| host == replica));
    all.then(|| rebuilt_state(Some(state), &current))
}

/// The partition state the reports call for: the reporters (after any replicas the
/// state already names) as replicas, those with the best log in sync, no leader, and
/// an epoch above every epoch the logs or the state name, so the controller elects
/// only a replica that holds everything any replica acknowledged.
pub fn rebuilt_state(
    existing: Option<&PartitionState>,
    reports: &[(String, ReplicaReport)],
) -> PartitionState {
    let mut replicas: Vec<String> = existing.map(|s| s.replicas.clone()).unwrap_or_default();
    for (host, _) in reports {
        if !replicas.contains(host) {
            replicas.push(host.clone());
        }
    }
    let best = reports.iter().map(|(_, r)| r).max();
    let isr = replicas
        .iter()
        .filter(|h| {
            reports
                .iter()
                .any(|(host, r)| host == *h && Some(r) == best)
        })
        .cloned()
        .collect();
    let epoch = existing
        .map_or(0, |s| s.leader_epoch)
        .max(best.map_or(0, |r| r.epoch));
    PartitionState {
        replicas,
        leader: None,
        leader_epoch: epoch + 1,
        isr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader: Option<&str>, isr: &[&str]) -> PartitionState {
        PartitionState {
            replicas: vec!["a".into(), "b".into(), "c".into()],
            leader: leader.map(str::to_owned),
            leader_epoch: 4,
            isr: isr.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    fn live(hosts: &[&str]) -> BTreeSet<String> {
        hosts.iter().map(|h| (*h).to_owned()).collect()
    }

    #[test]
    fn only_a_live_in_sync_replica_is_elected() {
        let kept = elect(state(Some("a"), &["a", "b"]), &live(&["a", "b"]), |_| 0);
        assert_eq!(kept, state(Some("a"), &["a", "b"]));
        let moved = elect(state(Some("a"), &["a", "b"]), &live(&["b", "c"]), |_| 0);
        assert_eq!(moved.leader.as_deref(), Some("b"));
        assert_eq!(moved.leader_epoch, 5);
        assert_eq!(moved.isr, ["b"]);
        let none = elect(state(Some("a"), &["a", "b"]), &live(&["c"]), |_| 0);
        assert_eq!(none.leader, None, "c may miss data: no leader");
        assert_eq!(none.isr, ["a", "b"], "either may lead when it returns");
        assert_eq!(none.leader_epoch, 5, "the old leader is fenced");
        let still_none = elect(none.clone(), &live(&["c"]), |_| 0);
        assert_eq!(still_none, none, "nothing changes while none is live");
    }

    #[test]
    fn a_damaged_host_leaves_even_as_the_last_member() {
        let left = leave(&state(Some("a"), &["a", "b"]), "a").expect("a leaves");
        assert_eq!((left.leader, left.leader_epoch), (None, 5));
        assert_eq!(left.isr, ["b"]);
        let last = leave(&state(Some("a"), &["a"]), "a").expect("leaves");
        assert!(last.isr.is_empty(), "leaderless rather than a shorter log");
        assert_eq!(leave(&state(Some("a"), &["a"]), "c"), None);
        assert_eq!(
            step_down_if_damaged(&state(Some("a"), &["a", "b"]), "a", true, true)
                .map(|s| (s.leader, s.isr)),
            Some((None, vec!["b".to_owned()]))
        );
        assert_eq!(
            step_down_if_damaged(&state(Some("a"), &["a", "b"]), "a", true, false),
            None,
            "no whole copy to give way to"
        );
    }

    #[test]
    fn a_restarting_leader_resigns_and_keeps_its_place_in_the_set() {
        let resigned = resign(&state(Some("a"), &["a", "b"]), "a").expect("a leads");
        assert_eq!((resigned.leader, resigned.leader_epoch), (None, 5));
        assert_eq!(resigned.isr, ["a", "b"]);
        assert_eq!(resign(&state(Some("a"), &["a", "b"]), "b"), None);
    }

    #[test]
    fn a_leaderless_partition_waits_for_every_replica_then_elects_the_best_log() {
        let mut empty = state(None, &[]);
        empty.leader_epoch = 6;
        let answer = |epoch, end, whole, answering_epoch| ReplicaReport {
            epoch,
            ends: vec![end],
            whole,
            answering_epoch,
        };
        let mut reports = vec![
            ("a".to_owned(), answer(3, 120, false, 6)),
            ("b".to_owned(), answer(3, 100, true, 6)),
        ];
        assert_eq!(
            recover_leaderless(&empty, &reports),
            None,
            "c may hold more"
        );
        reports.push(("c".to_owned(), answer(3, 100, true, 5)));
        assert_eq!(
            recover_leaderless(&empty, &reports),
            None,
            "c's report is stale"
        );
        reports.push(("c".to_owned(), answer(3, 100, true, 6)));
        let next = recover_leaderless(&empty, &reports).expect("all reported");
        assert_eq!(next.isr, ["b", "c"], "a's damaged log is not a candidate");
        assert_eq!((next.leader.clone(), next.leader_epoch), (None, 7));
        assert_eq!(recover_leaderless(&next, &reports), None, "it has members");
    }

    #[test]
    fn a_proposal_keeps_placement_order_and_is_none_when_unchanged() {
        let current = state(Some("a"), &["a", "b"]);
        assert_eq!(propose_in_sync(&current, &["a".into(), "b".into()]), None);
        let grown = propose_in_sync(&current, &["a".into(), "c".into(), "b".into()]);
        assert_eq!(
            grown.map(|s| s.isr),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
    }

    fn report(epoch: u64, ends: &[u64]) -> ReplicaReport {
        ReplicaReport {
            epoch,
            ends: ends.to_vec(),
            whole: true,
            answering_epoch: 0,
        }
    }

    #[test]
    fn the_best_log_is_the_newest_epoch_then_the_longest() {
        let reports = vec![
            ("h0".to_owned(), report(3, &[900])),
            ("h1".to_owned(), report(4, &[800])),
            ("h2".to_owned(), report(4, &[800])),
        ];
        let state = rebuilt_state(None, &reports);
        assert_eq!(state.replicas, ["h0", "h1", "h2"]);
        assert_eq!(
            state.isr,
            ["h1", "h2"],
            "a longer log of an older epoch may hold unacknowledged writes"
        );
        assert_eq!((state.leader, state.leader_epoch), (None, 5));

        let longer = vec![
            ("h0".to_owned(), report(4, &[700])),
            ("h1".to_owned(), report(4, &[800])),
        ];
        let previous = PartitionState {
            replicas: vec!["h1".into(), "h0".into()],
            leader: None,
            leader_epoch: 9,
            isr: vec![],
        };
        let state = rebuilt_state(Some(&previous), &longer);
        assert_eq!(state.replicas, ["h1", "h0"]);
        assert_eq!(state.isr, ["h1"]);
        assert_eq!(state.leader_epoch, 10);
    }
}
