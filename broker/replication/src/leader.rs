//! A leader's view of its followers in one epoch, as a state machine.
//!
//! Inputs: the replica sets from the partition state, each follower's fetch (its
//! durable end) with the leader's log end at that moment, and a clock value. Outputs:
//! the high watermark (the lowest durable end among the in-sync replicas, the leader's
//! own included), the in-sync set the leader wants, and whether a write is committed.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::follower::repair_point;

/// What the leader knows of one follower.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Progress {
    /// Everything below this is durable on the follower (its last fetch offset).
    fetch_offset: Option<u64>,
    /// When it last held everything the leader had (None: not since it lost data).
    caught_up_at_ms: Option<u64>,
    /// When it fetched last, and the leader's end at that moment.
    last_fetch: Option<(u64, u64)>,
    /// The lost ranges its log held at its last fetch.
    lost: Vec<Range<u64>>,
}

/// How far one follower is behind, as its leader knows it (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerLag {
    /// The follower's host id.
    pub host: String,
    /// Its durable end at its last fetch; `None` before its first fetch in this epoch.
    pub fetch_offset: Option<u64>,
    /// When it last held everything the leader had; `None` since it lost data (or
    /// before its first fetch).
    pub caught_up_at_ms: Option<u64>,
}

/// A fetch from a host that holds no replica of the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFollower(pub String);

impl std::fmt::Display for UnknownFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} holds no replica", self.0)
    }
}

impl std::error::Error for UnknownFollower {}

/// Where a write stands against the `sync` acknowledgement rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Every in-sync replica holds it and at least the required number are in sync:
    /// it may be acknowledged.
    Done,
    /// Not yet: the high watermark is below it, or too few replicas are in sync.
    Waiting,
}

/// The leader's side of replication for one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderCore {
    epoch: u64,
    /// The log end when this host became leader in this epoch: a replica rejoining the
    /// in-sync set must hold at least this much (everything earlier leaders committed).
    epoch_start_offset: u64,
    /// The other replicas, in placement order.
    followers: Vec<String>,
    /// The other replicas in the in-sync set as the metadata store holds it.
    in_sync: BTreeSet<String>,
    progress: BTreeMap<String, Progress>,
    /// The lost ranges in this leader's own log.
    own_lost: Vec<Range<u64>>,
    /// Replicas this leader proposed to add to the in-sync set, with the state
    /// revision the proposal was made against. They count toward the high watermark
    /// from the moment of proposing: once the store takes the proposal they are in the
    /// set (and electable) before this leader sees it.
    joining: Option<(u64, BTreeSet<String>)>,
}

impl LeaderCore {
    /// Leadership of `epoch`, taken up with the log ending at `log_end`; no followers
    /// until [`LeaderCore::set_replicas`].
    pub fn new(epoch: u64, log_end: u64) -> Self {
        Self {
            epoch,
            epoch_start_offset: log_end,
            followers: Vec::new(),
            in_sync: BTreeSet::new(),
            progress: BTreeMap::new(),
            own_lost: Vec::new(),
            joining: None,
        }
    }

    /// Tells the leader which ranges its own log lost (damage found by recovery or a
    /// read): what followers can repair from it, and what it may need from them.
    pub fn set_own_lost(&mut self, lost: Vec<Range<u64>>) {
        self.own_lost = lost;
    }

    /// The epoch led.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Updates the other replicas and which of them the committed in-sync set holds.
    /// A follower seen for the first time gets a full lag allowance from `now_ms`; one
    /// that left the in-sync set proves it caught up afresh (what it held before says
    /// nothing now: it may have left because its disk was wiped or damaged).
    /// `revision` is the partition state's revision these sets come from: a proposal
    /// made against another revision has been decided, one way or the other.
    pub fn set_replicas(
        &mut self,
        followers: &[String],
        in_sync: &[String],
        revision: u64,
        now_ms: u64,
    ) {
        if self.joining.as_ref().is_some_and(|(at, _)| *at != revision) {
            self.joining = None;
        }
        let in_sync: BTreeSet<String> = in_sync
            .iter()
            .filter(|host| followers.contains(host))
            .cloned()
            .collect();
        for gone in self.in_sync.difference(&in_sync) {
            if let Some(progress) = self.progress.get_mut(gone) {
                *progress = Progress::default();
            }
        }
        self.in_sync = in_sync;
        self.followers = followers.to_vec();
        self.progress.retain(|host, _| followers.contains(host));
        for host in followers {
            self.progress.entry(host.clone()).or_insert(Progress {
                caught_up_at_ms: Some(now_ms),
                ..Progress::default()
            });
        }
    }

    /// Records a fetch by `follower` from `fetch_offset` (its durable end) while the
    /// leader's log ends at `log_end`; `lost` are the lost ranges in the follower's log.
    pub fn record_fetch(
        &mut self,
        follower: &str,
        fetch_offset: u64,
        log_end: u64,
        lost: Vec<Range<u64>>,
        now_ms: u64,
    ) -> Result<(), UnknownFollower> {
        let Some(progress) = self.progress.get_mut(follower) else {
            return Err(UnknownFollower(follower.to_owned()));
        };
        if progress
            .fetch_offset
            .is_some_and(|previous| fetch_offset < previous)
        {
            // Its durable end went backwards in one epoch: it lost data (a wiped or
            // repaired disk). It is out of sync until it catches up again.
            progress.caught_up_at_ms = None;
        } else if fetch_offset >= log_end {
            progress.caught_up_at_ms = Some(now_ms);
        } else if let Some((at_ms, end_then)) = progress.last_fetch
            && fetch_offset >= end_then
        {
            // It holds all the leader had at its previous fetch: under steady writes a
            // follower is never exactly at the end, yet keeps up.
            progress.caught_up_at_ms = Some(at_ms);
        }
        progress.fetch_offset = Some(fetch_offset);
        progress.last_fetch = Some((now_ms, log_end));
        progress.lost = lost;
        Ok(())
    }

    /// Where `follower` must truncate to fetch again records it lost that this leader
    /// holds ([`repair_point`]), once it is out of the committed in-sync set (the
    /// cut takes committed records above the gap with it). `None` otherwise.
    pub fn repair_for(&self, follower: &str) -> Option<u64> {
        if self.in_sync.contains(follower) {
            return None;
        }
        let progress = self.progress.get(follower)?;
        repair_point(&progress.lost, &self.own_lost)
    }

    /// Records that this leader proposes the in-sync set `wanted` (its followers in
    /// it; others ignored) against the state at `revision`: those joining count toward
    /// the high watermark until the state moves past `revision`.
    pub fn propose_in_sync(&mut self, wanted: &[String], revision: u64) {
        let joining = wanted
            .iter()
            .filter(|h| self.followers.contains(h) && !self.in_sync.contains(*h))
            .cloned()
            .collect();
        self.joining = Some((revision, joining));
    }

    /// The high watermark the in-sync set allows, given the leader's own durable
    /// (visible) end: the lowest durable end among the in-sync replicas and those
    /// proposed to join. A follower counted that has not fetched yet in this epoch
    /// holds it at zero.
    pub fn high_watermark(&self, local_end: u64) -> u64 {
        let joining = self.joining.iter().flat_map(|(_, hosts)| hosts);
        self.in_sync
            .iter()
            .chain(joining)
            .map(|host| {
                self.progress
                    .get(host)
                    .and_then(|p| p.fetch_offset)
                    .unwrap_or(0)
            })
            .fold(local_end, u64::min)
    }

    /// Replicas in the committed in-sync set, the leader included.
    pub fn in_sync_count(&self) -> usize {
        self.in_sync.len() + 1
    }

    /// Whether a follower in the committed in-sync set holds records this leader's
    /// log lost: one a damaged leader gives way to (a follower that copied the same
    /// gaps is no better).
    pub fn in_sync_holds_what_i_lost(&self) -> bool {
        self.in_sync.iter().any(|host| {
            self.progress.get(host).is_some_and(|p| {
                let end = p.fetch_offset.unwrap_or(0);
                let below: Vec<Range<u64>> = self
                    .own_lost
                    .iter()
                    .filter(|gap| gap.start < end)
                    .cloned()
                    .collect();
                repair_point(&below, &p.lost).is_some()
            })
        })
    }

    /// Whether a write ending at `end` may be acknowledged under `sync` replication:
    /// the high watermark passed it and at least `min_in_sync` replicas are in sync
    /// now, so at least that many hold it durably (a set that shrank meanwhile does
    /// not count).
    pub fn commit(&self, end: u64, high_watermark: u64, min_in_sync: usize) -> Commit {
        if high_watermark >= end && self.in_sync_count() >= min_in_sync {
            Commit::Done
        } else {
            Commit::Waiting
        }
    }

    /// Each follower's durable end as its last fetch reported it (`None` before its
    /// first fetch in this epoch), in placement order.
    pub fn follower_offsets(&self) -> Vec<(String, Option<u64>)> {
        self.followers
            .iter()
            .map(|host| {
                let offset = self.progress.get(host).and_then(|p| p.fetch_offset);
                (host.clone(), offset)
            })
            .collect()
    }

    /// Each follower's progress, in placement order.
    pub fn follower_lag(&self) -> Vec<FollowerLag> {
        self.followers
            .iter()
            .map(|host| {
                let progress = self.progress.get(host);
                FollowerLag {
                    host: host.clone(),
                    fetch_offset: progress.and_then(|p| p.fetch_offset),
                    caught_up_at_ms: progress.and_then(|p| p.caught_up_at_ms),
                }
            })
            .collect()
    }

    /// The in-sync set as this leader judges it at `now_ms` (`me` first): members stay
    /// while they caught up within `max_lag_ms`; others join once they caught up
    /// recently and hold at least the high watermark and this epoch's start.
    pub fn judge_in_sync(
        &self,
        me: &str,
        high_watermark: u64,
        max_lag_ms: u64,
        now_ms: u64,
    ) -> Vec<String> {
        let recent = |p: &Progress| {
            p.caught_up_at_ms
                .is_some_and(|at| now_ms.saturating_sub(at) <= max_lag_ms)
        };
        let mut wanted = vec![me.to_owned()];
        for host in &self.followers {
            let Some(progress) = self.progress.get(host) else {
                continue;
            };
            // One that lost records this leader holds leaves, to repair them.
            let keep = recent(progress)
                && repair_point(&progress.lost, &self.own_lost).is_none()
                && (self.in_sync.contains(host)
                    || progress.fetch_offset.is_some_and(|offset| {
                        offset >= high_watermark && offset >= self.epoch_start_offset
                    }));
            if keep {
                wanted.push(host.clone());
            }
        }
        wanted
    }

    /// The in-sync set this leader wants (`me` first), if it differs from the
    /// committed one.
    pub fn wanted_in_sync(
        &self,
        me: &str,
        high_watermark: u64,
        max_lag_ms: u64,
        now_ms: u64,
    ) -> Option<Vec<String>> {
        let wanted = self.judge_in_sync(me, high_watermark, max_lag_ms, now_ms);
        let unchanged = wanted.len() == self.in_sync.len() + 1
            && wanted[1..].iter().all(|h| self.in_sync.contains(h));
        (!unchanged).then_some(wanted)
    }
}

#[cfg(test)]
// Lost ranges are lists of ranges, and a list of one is still one.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|h| (*h).to_owned()).collect()
    }

    fn leading(log_end: u64) -> LeaderCore {
        let mut core = LeaderCore::new(3, log_end);
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b", "c"]), 0, 0);
        core
    }

    #[test]
    fn the_high_watermark_is_the_lowest_durable_end_in_sync() {
        let mut core = leading(0);
        assert_eq!(core.high_watermark(10), 0, "followers have not fetched");
        core.record_fetch("b", 10, 10, Vec::new(), 1)
            .expect("b fetches");
        assert_eq!(core.high_watermark(10), 0, "c still holds it");
        core.record_fetch("c", 7, 10, Vec::new(), 1)
            .expect("c fetches");
        assert_eq!(core.high_watermark(10), 7);
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b"]), 0, 2);
        assert_eq!(core.high_watermark(10), 10, "c left the set");
        assert!(core.record_fetch("x", 1, 10, Vec::new(), 2).is_err());
    }

    #[test]
    fn follower_lag_says_where_each_follower_is_and_when_it_last_kept_up() {
        let mut core = leading(10);
        core.record_fetch("b", 10, 10, Vec::new(), 5)
            .expect("fetch");
        core.record_fetch("c", 4, 10, Vec::new(), 5).expect("fetch");
        let lag = core.follower_lag();
        let by_host = |host: &str| lag.iter().find(|l| l.host == host).cloned();
        let b = by_host("b").expect("b");
        assert_eq!((b.fetch_offset, b.caught_up_at_ms), (Some(10), Some(5)));
        let c = by_host("c").expect("c");
        assert_eq!(c.fetch_offset, Some(4));
        // c went backwards: it lost data and has not caught up since.
        core.record_fetch("c", 2, 10, Vec::new(), 6).expect("fetch");
        let c = core.follower_lag().into_iter().find(|l| l.host == "c");
        assert_eq!(c.and_then(|c| c.caught_up_at_ms), None);
    }

    #[test]
    fn a_damaged_leader_gives_way_only_to_a_follower_holding_what_it_lost() {
        let mut core = leading(5);
        core.set_own_lost(vec![1..2, 3..4]);
        assert!(!core.in_sync_holds_what_i_lost(), "none has fetched");
        core.record_fetch("b", 5, 5, vec![1..2, 3..4], 1)
            .expect("fetch");
        assert!(!core.in_sync_holds_what_i_lost(), "b copied the same gaps");
        core.record_fetch("c", 2, 5, Vec::new(), 1).expect("fetch");
        assert!(core.in_sync_holds_what_i_lost(), "c holds offset 1");
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b"]), 0, 2);
        assert!(!core.in_sync_holds_what_i_lost(), "c left the set");
    }

    #[test]
    fn a_follower_missing_what_the_leader_holds_leaves_and_only_then_repairs() {
        let mut core = leading(5);
        core.set_own_lost(vec![3..4]);
        core.record_fetch("b", 5, 5, vec![1..2, 3..4], 1)
            .expect("fetch");
        core.record_fetch("c", 5, 5, vec![3..4], 1).expect("fetch");
        assert_eq!(core.repair_for("b"), None, "in the committed set");
        assert_eq!(
            core.wanted_in_sync("a", 5, 1_000, 2),
            Some(hosts(&["a", "c"])),
            "b leaves"
        );
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["c"]), 0, 3);
        core.record_fetch("b", 5, 5, vec![1..2, 3..4], 4)
            .expect("fetch");
        assert_eq!(
            core.repair_for("b"),
            Some(1),
            "out of the set: told at its next fetch"
        );
        assert_eq!(core.repair_for("c"), None, "the leader lacks 3..4 too");
    }

    #[test]
    fn a_replica_proposed_to_join_holds_the_high_watermark_until_decided() {
        let mut core = leading(10);
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b"]), 7, 0);
        core.record_fetch("b", 10, 10, Vec::new(), 1)
            .expect("fetch");
        core.record_fetch("c", 8, 10, Vec::new(), 1).expect("fetch");
        assert_eq!(core.high_watermark(10), 10);
        core.propose_in_sync(&hosts(&["a", "b", "c"]), 7);
        assert_eq!(core.high_watermark(10), 8, "c may be in the set already");
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b"]), 7, 2);
        assert_eq!(core.high_watermark(10), 8, "not decided yet");
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b"]), 8, 3);
        assert_eq!(core.high_watermark(10), 10, "decided: it did not join");
    }

    #[test]
    fn a_write_commits_only_with_enough_replicas_in_sync() {
        let mut core = leading(0);
        core.record_fetch("b", 5, 5, Vec::new(), 1).expect("fetch");
        core.record_fetch("c", 5, 5, Vec::new(), 1).expect("fetch");
        let hw = core.high_watermark(5);
        assert_eq!(core.commit(5, hw, 2), Commit::Done);
        assert_eq!(core.commit(6, hw, 2), Commit::Waiting);
        // The set shrank to the leader alone: its own copy is not a quorum.
        core.set_replicas(&hosts(&["b", "c"]), &[], 0, 2);
        let hw = core.high_watermark(6);
        assert_eq!(hw, 6);
        assert_eq!(core.commit(6, hw, 2), Commit::Waiting);
        assert_eq!(core.commit(6, hw, 1), Commit::Done);
    }

    #[test]
    fn a_lagging_follower_leaves_and_rejoins_only_holding_the_epoch_start() {
        let mut core = leading(100);
        core.record_fetch("b", 100, 100, Vec::new(), 0)
            .expect("fetch");
        core.record_fetch("c", 50, 100, Vec::new(), 0)
            .expect("fetch");
        // c never catches up: after the lag allowance it is out.
        assert_eq!(
            core.wanted_in_sync("a", 50, 1_000, 2_000),
            Some(hosts(&["a"]))
        );
        core.record_fetch("b", 100, 100, Vec::new(), 2_000)
            .expect("fetch");
        assert_eq!(
            core.wanted_in_sync("a", 50, 1_000, 2_000),
            Some(hosts(&["a", "b"]))
        );
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b"]), 0, 2_000);
        core.record_fetch("c", 100, 100, Vec::new(), 2_100)
            .expect("fetch");
        assert_eq!(
            core.wanted_in_sync("a", 100, 1_000, 2_100),
            Some(hosts(&["a", "b", "c"]))
        );
    }

    #[test]
    fn a_new_follower_rejoins_only_holding_what_earlier_leaders_committed() {
        // Leader since offset 100; c is new to this leader (a full lag allowance) and
        // fetched from 90, at the high watermark this leader knows.
        let mut core = LeaderCore::new(4, 100);
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b"]), 0, 0);
        core.record_fetch("b", 100, 100, Vec::new(), 10)
            .expect("fetch");
        core.record_fetch("c", 90, 100, Vec::new(), 10)
            .expect("fetch");
        assert_eq!(core.wanted_in_sync("a", 90, 1_000, 20), None);
        core.record_fetch("c", 100, 100, Vec::new(), 30)
            .expect("fetch");
        assert_eq!(
            core.wanted_in_sync("a", 100, 1_000, 40),
            Some(hosts(&["a", "b", "c"]))
        );
    }

    #[test]
    fn a_follower_whose_end_went_backwards_is_out_until_it_catches_up() {
        let mut core = leading(10);
        core.record_fetch("b", 10, 10, Vec::new(), 0)
            .expect("fetch");
        core.record_fetch("c", 10, 10, Vec::new(), 0)
            .expect("fetch");
        core.record_fetch("b", 0, 10, Vec::new(), 10)
            .expect("b lost its disk");
        core.record_fetch("c", 10, 10, Vec::new(), 1_000)
            .expect("fetch");
        assert_eq!(
            core.wanted_in_sync("a", 10, 1_000, 1_020),
            Some(hosts(&["a", "c"]))
        );
    }
}
