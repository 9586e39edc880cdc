//! The target assignor: balanced per topic, sticky where balance allows.
//!
//! For each topic, its `n` partitions go to its `k` subscribers so that every
//! subscriber gets `n / k` or `n / k + 1` of them. The `n % k` larger shares go
//! to the subscribers that already hold the most partitions of the topic (so
//! fewer partitions move), then to those with the smallest load so far across
//! topics (so single-partition topics do not pile onto one member), then by
//! member id. Each subscriber keeps as many of its current partitions as its
//! share allows; the rest are dealt round-robin in member-id order.
//!
//! Invariant: the output is a pure function of the input (no hashing order, no
//! randomness), so every replica of the coordinator computes the same targets.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use super::TopicPartition;

/// One member as the assignor sees it.
pub(super) struct Subscriber<'a> {
    /// The member id; the final tie-breaker.
    pub id: &'a str,
    /// Topics the member subscribes to.
    pub topics: &'a BTreeSet<String>,
    /// The member's current target, kept where balance allows.
    pub current: &'a BTreeSet<TopicPartition>,
}

/// Computes the new target of every subscriber, keyed by member id.
///
/// Topics missing from `partition_counts` (deleted or unknown) get no
/// partitions; every subscriber appears in the result, possibly with nothing.
pub(super) fn assign(
    subscribers: &[Subscriber<'_>],
    partition_counts: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut order: Vec<usize> = (0..subscribers.len()).collect();
    order.sort_by(|&a, &b| subscribers[a].id.cmp(subscribers[b].id));
    let mut load = vec![0usize; subscribers.len()];
    let mut result: BTreeMap<String, BTreeSet<TopicPartition>> = subscribers
        .iter()
        .map(|s| (s.id.to_owned(), BTreeSet::new()))
        .collect();

    for (topic, &count) in partition_counts {
        let subs: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| subscribers[i].topics.contains(topic))
            .collect();
        if subs.is_empty() || count == 0 {
            continue;
        }
        let shares = assign_topic(subscribers, &subs, &load, topic, count);
        for (&i, partitions) in subs.iter().zip(shares) {
            load[i] += partitions.len();
            if let Some(target) = result.get_mut(subscribers[i].id) {
                target.extend(
                    partitions
                        .into_iter()
                        .map(|p| TopicPartition::new(topic, p)),
                );
            }
        }
    }
    result
}

/// Splits the `count` partitions of `topic` among `subs` (indexes into
/// `subscribers`, in member-id order); returns one share per entry of `subs`.
fn assign_topic(
    subscribers: &[Subscriber<'_>],
    subs: &[usize],
    load: &[usize],
    topic: &str,
    count: u32,
) -> Vec<Vec<u32>> {
    let n = count as usize;
    let k = subs.len();
    let base = n / k;
    let extra = n % k;

    // The partitions of this topic each subscriber currently targets, ascending.
    let current: Vec<Vec<u32>> = subs
        .iter()
        .map(|&i| current_partitions(subscribers[i].current, topic, count))
        .collect();

    // Decide who gets the `extra` larger shares.
    let mut by_claim: Vec<usize> = (0..k).collect();
    by_claim.sort_by_key(|&j| (Reverse(current[j].len().min(base + 1)), load[subs[j]], j));
    let mut cap = vec![base; k];
    for &j in by_claim.iter().take(extra) {
        cap[j] = base + 1;
    }

    // Keep current partitions up to each share. Targets are disjoint by
    // construction, but a partition is never kept twice even if they were not.
    let mut taken = vec![false; n];
    let mut shares: Vec<Vec<u32>> = vec![Vec::new(); k];
    for j in 0..k {
        for &p in &current[j] {
            if shares[j].len() == cap[j] {
                break;
            }
            let slot = &mut taken[p as usize];
            if !*slot {
                *slot = true;
                shares[j].push(p);
            }
        }
    }

    // Deal the remaining partitions round-robin to subscribers below their share.
    // The shares sum to `n`, so every partition is placed; each pass places at
    // least one partition or ends the loop, bounding it by `n + 1` passes.
    let mut free = (0..count).filter(|&p| !taken[p as usize]);
    loop {
        let mut placed = false;
        for j in 0..k {
            if shares[j].len() == cap[j] {
                continue;
            }
            let Some(p) = free.next() else {
                break;
            };
            shares[j].push(p);
            placed = true;
        }
        if !placed {
            break;
        }
    }
    for share in &mut shares {
        share.sort_unstable();
    }
    shares
}

/// The partitions of `topic` below `count` in `set`, ascending.
fn current_partitions(set: &BTreeSet<TopicPartition>, topic: &str, count: u32) -> Vec<u32> {
    let low = TopicPartition::new(topic, 0);
    let high = TopicPartition::new(topic, count.saturating_sub(1));
    set.range(low..=high).map(|tp| tp.partition).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn counts(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    }

    fn parts(tps: &[(&str, u32)]) -> BTreeSet<TopicPartition> {
        tps.iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }

    #[test]
    fn fresh_assignment_is_round_robin_and_balanced() {
        let t = topics(&["a"]);
        let empty = BTreeSet::new();
        let subs = [
            Subscriber {
                id: "m2",
                topics: &t,
                current: &empty,
            },
            Subscriber {
                id: "m1",
                topics: &t,
                current: &empty,
            },
        ];
        let out = assign(&subs, &counts(&[("a", 5)]));
        assert_eq!(out["m1"], parts(&[("a", 0), ("a", 2), ("a", 4)]));
        assert_eq!(out["m2"], parts(&[("a", 1), ("a", 3)]));
    }

    #[test]
    fn adding_a_member_moves_only_what_balance_requires() {
        let t = topics(&["a"]);
        let m1 = parts(&[("a", 0), ("a", 1), ("a", 2)]);
        let m2 = parts(&[("a", 3), ("a", 4), ("a", 5)]);
        let empty = BTreeSet::new();
        let subs = [
            Subscriber {
                id: "m1",
                topics: &t,
                current: &m1,
            },
            Subscriber {
                id: "m2",
                topics: &t,
                current: &m2,
            },
            Subscriber {
                id: "m3",
                topics: &t,
                current: &empty,
            },
        ];
        let out = assign(&subs, &counts(&[("a", 6)]));
        assert_eq!(out["m1"], parts(&[("a", 0), ("a", 1)]));
        assert_eq!(out["m2"], parts(&[("a", 3), ("a", 4)]));
        assert_eq!(out["m3"], parts(&[("a", 2), ("a", 5)]));
    }

    #[test]
    fn larger_shares_go_to_current_holders() {
        let t = topics(&["a"]);
        let m1 = parts(&[("a", 0)]);
        let m2 = parts(&[("a", 1), ("a", 2)]);
        let subs = [
            Subscriber {
                id: "m1",
                topics: &t,
                current: &m1,
            },
            Subscriber {
                id: "m2",
                topics: &t,
                current: &m2,
            },
        ];
        let out = assign(&subs, &counts(&[("a", 3)]));
        assert_eq!(out["m1"], m1);
        assert_eq!(out["m2"], m2);
    }

    #[test]
    fn partitions_only_go_to_subscribers_of_their_topic() {
        let ta = topics(&["a"]);
        let tb = topics(&["a", "b"]);
        let empty = BTreeSet::new();
        let subs = [
            Subscriber {
                id: "m1",
                topics: &ta,
                current: &empty,
            },
            Subscriber {
                id: "m2",
                topics: &tb,
                current: &empty,
            },
        ];
        let out = assign(&subs, &counts(&[("a", 2), ("b", 2), ("c", 4)]));
        assert_eq!(out["m1"], parts(&[("a", 0)]));
        assert_eq!(out["m2"], parts(&[("a", 1), ("b", 0), ("b", 1)]));
    }

    #[test]
    fn single_partition_topics_spread_by_load() {
        let t = topics(&["a", "b", "c", "d"]);
        let empty = BTreeSet::new();
        let subs = [
            Subscriber {
                id: "m1",
                topics: &t,
                current: &empty,
            },
            Subscriber {
                id: "m2",
                topics: &t,
                current: &empty,
            },
        ];
        let out = assign(&subs, &counts(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]));
        assert_eq!(out["m1"].len(), 2);
        assert_eq!(out["m2"].len(), 2);
    }

    #[test]
    fn shrunk_topic_drops_partitions_beyond_its_count() {
        let t = topics(&["a"]);
        let m1 = parts(&[("a", 0), ("a", 3)]);
        let subs = [Subscriber {
            id: "m1",
            topics: &t,
            current: &m1,
        }];
        let out = assign(&subs, &counts(&[("a", 2)]));
        assert_eq!(out["m1"], parts(&[("a", 0), ("a", 1)]));
        let out = assign(&subs, &counts(&[]));
        assert!(out["m1"].is_empty());
    }
}
