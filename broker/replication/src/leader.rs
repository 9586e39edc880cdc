//! A leader's view of its followers in one epoch, as a state machine.
//!
//! Inputs: the replica sets from the partition state, each follower's fetch (its
//! durable end) with the leader's log end at that moment, and a clock value. Outputs:
//! the high watermark (the lowest durable end among the in-sync replicas, the leader's
//! own included), the in-sync set the leader wants, and whether a write is committed.

use std::collections::{BTreeMap, BTreeSet};

/// What the leader knows of one follower.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Progress {
    /// Everything below this is durable on the follower (its last fetch offset).
    fetch_offset: Option<u64>,
    /// When it last held everything the leader had (None: not since it lost data).
    caught_up_at_ms: Option<u64>,
    /// When it fetched last, and the leader's end at that moment.
    last_fetch: Option<(u64, u64)>,
    /// Its log held no lost range at its last fetch (a whole copy).
    damaged: bool,
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
        }
    }

    /// The epoch led.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The other replicas, in placement order.
    pub fn followers(&self) -> &[String] {
        &self.followers
    }

    /// Updates the other replicas and which of them the committed in-sync set holds.
    /// A follower seen for the first time gets a full lag allowance from `now_ms`; one
    /// that left the in-sync set proves it caught up afresh (what it held before says
    /// nothing now: it may have left because its disk was wiped or damaged).
    pub fn set_replicas(&mut self, followers: &[String], in_sync: &[String], now_ms: u64) {
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
    /// leader's log ends at `log_end`; `damaged` when the follower's log holds lost
    /// ranges.
    pub fn record_fetch(
        &mut self,
        follower: &str,
        fetch_offset: u64,
        log_end: u64,
        damaged: bool,
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
        progress.damaged = damaged;
        Ok(())
    }

    /// The high watermark the in-sync set allows, given the leader's own durable
    /// (visible) end: the lowest durable end among the in-sync replicas. A follower in
    /// the set that has not fetched yet in this epoch holds it at zero.
    pub fn high_watermark(&self, local_end: u64) -> u64 {
        self.in_sync
            .iter()
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

    /// Whether another replica besides the leader is in the committed in-sync set.
    pub fn others_in_sync(&self) -> bool {
        !self.in_sync.is_empty()
    }

    /// Whether a follower in the committed in-sync set holds a whole copy (no lost
    /// range at its last fetch): one a damaged leader can give way to.
    pub fn whole_copy_in_sync(&self) -> bool {
        self.in_sync.iter().any(|host| {
            self.progress
                .get(host)
                .is_some_and(|p| p.fetch_offset.is_some() && !p.damaged)
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
            let keep = recent(progress)
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
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|h| (*h).to_owned()).collect()
    }

    fn leading(log_end: u64) -> LeaderCore {
        let mut core = LeaderCore::new(3, log_end);
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b", "c"]), 0);
        core
    }

    #[test]
    fn the_high_watermark_is_the_lowest_durable_end_in_sync() {
        let mut core = leading(0);
        assert_eq!(core.high_watermark(10), 0, "followers have not fetched");
        core.record_fetch("b", 10, 10, false, 1).expect("b fetches");
        assert_eq!(core.high_watermark(10), 0, "c still holds it");
        core.record_fetch("c", 7, 10, false, 1).expect("c fetches");
        assert_eq!(core.high_watermark(10), 7);
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b"]), 2);
        assert_eq!(core.high_watermark(10), 10, "c left the set");
        assert!(core.record_fetch("x", 1, 10, false, 2).is_err());
    }

    #[test]
    fn only_a_follower_without_lost_ranges_is_a_whole_copy() {
        let mut core = leading(5);
        assert!(!core.whole_copy_in_sync(), "none has fetched");
        core.record_fetch("b", 5, 5, true, 1).expect("fetch");
        assert!(!core.whole_copy_in_sync(), "b copied a gap");
        core.record_fetch("c", 5, 5, false, 1).expect("fetch");
        assert!(core.whole_copy_in_sync());
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b"]), 2);
        assert!(!core.whole_copy_in_sync(), "c left the set");
    }

    #[test]
    fn a_write_commits_only_with_enough_replicas_in_sync() {
        let mut core = leading(0);
        core.record_fetch("b", 5, 5, false, 1).expect("fetch");
        core.record_fetch("c", 5, 5, false, 1).expect("fetch");
        let hw = core.high_watermark(5);
        assert_eq!(core.commit(5, hw, 2), Commit::Done);
        assert_eq!(core.commit(6, hw, 2), Commit::Waiting);
        // The set shrank to the leader alone: its own copy is not a quorum.
        core.set_replicas(&hosts(&["b", "c"]), &[], 2);
        let hw = core.high_watermark(6);
        assert_eq!(hw, 6);
        assert_eq!(core.commit(6, hw, 2), Commit::Waiting);
        assert_eq!(core.commit(6, hw, 1), Commit::Done);
    }

    #[test]
    fn a_lagging_follower_leaves_and_rejoins_only_holding_the_epoch_start() {
        let mut core = leading(100);
        core.record_fetch("b", 100, 100, false, 0).expect("fetch");
        core.record_fetch("c", 50, 100, false, 0).expect("fetch");
        // c never catches up: after the lag allowance it is out.
        assert_eq!(
            core.wanted_in_sync("a", 50, 1_000, 2_000),
            Some(hosts(&["a"]))
        );
        core.record_fetch("b", 100, 100, false, 2_000)
            .expect("fetch");
        assert_eq!(
            core.wanted_in_sync("a", 50, 1_000, 2_000),
            Some(hosts(&["a", "b"]))
        );
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b"]), 2_000);
        core.record_fetch("c", 100, 100, false, 2_100)
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
        core.set_replicas(&hosts(&["b", "c"]), &hosts(&["b"]), 0);
        core.record_fetch("b", 100, 100, false, 10).expect("fetch");
        core.record_fetch("c", 90, 100, false, 10).expect("fetch");
        assert_eq!(core.wanted_in_sync("a", 90, 1_000, 20), None);
        core.record_fetch("c", 100, 100, false, 30).expect("fetch");
        assert_eq!(
            core.wanted_in_sync("a", 100, 1_000, 40),
            Some(hosts(&["a", "b", "c"]))
        );
    }

    #[test]
    fn a_follower_whose_end_went_backwards_is_out_until_it_catches_up() {
        let mut core = leading(10);
        core.record_fetch("b", 10, 10, false, 0).expect("fetch");
        core.record_fetch("c", 10, 10, false, 0).expect("fetch");
        core.record_fetch("b", 0, 10, false, 10)
            .expect("b lost its disk");
        core.record_fetch("c", 10, 10, false, 1_000).expect("fetch");
        assert_eq!(
            core.wanted_in_sync("a", 10, 1_000, 1_020),
            Some(hosts(&["a", "c"]))
        );
    }
}
