//! A replica fetch from both sides: what the leader answers, and what the follower
//! does with the answer.
//!
//! A follower fetches from its durable end, naming the newest epoch in its log. The
//! leader compares that with its own epoch history: if the follower's last epoch ended
//! earlier on the leader (or is unknown to it), the follower's log diverged and it
//! truncates to where the two agree before fetching again. Batches below the
//! leader's high watermark are never truncated by this: every in-sync replica holds
//! them, and only an in-sync replica leads.

use std::ops::Range;

/// What a follower asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    /// Everything below it is durable on the follower: where it wants to read from.
    pub fetch_offset: u64,
    /// The newest epoch in the follower's log, if it holds any batch.
    pub last_fetched_epoch: Option<u64>,
}

/// The leader's log as a fetch sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderLog {
    /// First offset still stored.
    pub start: u64,
    /// One past the last offset stored.
    pub end: u64,
    /// The newest epoch in the leader's log, if any.
    pub latest_epoch: Option<u64>,
    /// For the follower's last epoch: the newest epoch at or below it in the leader's
    /// history and the offset where that epoch ends on the leader.
    pub end_for_follower_epoch: Option<(u64, u64)>,
}

/// The leader's answer to a fetch, before it reads any batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// The follower's log diverged: it truncates to `end_offset` (at most) and asks
    /// again. `epoch` is the leader's epoch that ends there.
    Diverging {
        /// The newest epoch the two logs share.
        epoch: u64,
        /// Where that epoch ends on the leader.
        end_offset: u64,
    },
    /// The follower is below the leader's log start: it starts over there. Its fetch
    /// still counts (so a wiped replica is judged by what it holds now).
    StartOver,
    /// Batches from the fetch offset (its fetch counts toward the high watermark).
    Records,
}

/// What the leader answers `request`, given its own log.
pub fn serve(request: FetchRequest, leader: LeaderLog, leader_epoch: u64) -> Serve {
    if request.last_fetched_epoch.is_some()
        && let Some((found, end)) = leader.end_for_follower_epoch
        && (Some(found) != request.last_fetched_epoch || end < request.fetch_offset)
    {
        return Serve::Diverging {
            epoch: found,
            end_offset: end,
        };
    }
    if request.fetch_offset > leader.end {
        return Serve::Diverging {
            epoch: leader.latest_epoch.unwrap_or(leader_epoch),
            end_offset: leader.end,
        };
    }
    if request.fetch_offset < leader.start {
        return Serve::StartOver;
    }
    Serve::Records
}

/// Where a follower whose log holds `follower_lost` (lost ranges: damage on its disk,
/// or gaps copied from an earlier leader) must truncate to fetch what it lost again
/// from a leader whose own log lost `leader_lost`: below the first of its ranges the
/// leader holds records for. `None` when the leader lacks them too.
///
/// The leader, not the follower, decides when: only once the follower is out of the
/// committed in-sync set, since truncating cuts committed records above the gap and
/// an in-sync replica with a shorter log could be elected.
pub fn repair_point(follower_lost: &[Range<u64>], leader_lost: &[Range<u64>]) -> Option<u64> {
    follower_lost
        .iter()
        .filter(|gap| {
            !leader_lost
                .iter()
                .any(|lost| lost.start <= gap.start && gap.end <= lost.end)
        })
        .map(|gap| gap.start)
        .min()
}

/// What the follower does with the leader's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Cut its log to `offset` (where it agrees with the leader), then fetch again.
    Truncate {
        /// The new log end.
        offset: u64,
        /// The newest epoch both logs share.
        epoch: u64,
    },
    /// Drop everything and start over at the leader's log start.
    ResetTo {
        /// The leader's log start.
        offset: u64,
    },
    /// Append the batches it got (if any), then learn the high watermark.
    Append,
}

/// The follower's step for an answer: `diverging` as the leader sent it, the leader's
/// log start, the follower's fetch offset, and where the diverging epoch ends in the
/// follower's own log (`own_end_for_epoch`).
pub fn step(
    diverging: Option<(u64, u64)>,
    own_end_for_epoch: impl FnOnce(u64) -> u64,
    leader_start: u64,
    fetch_offset: u64,
) -> Step {
    if let Some((epoch, leader_end)) = diverging {
        return Step::Truncate {
            offset: leader_end.min(own_end_for_epoch(epoch)),
            epoch,
        };
    }
    if leader_start > fetch_offset {
        return Step::ResetTo {
            offset: leader_start,
        };
    }
    Step::Append
}

/// The high watermark a follower keeps from the leader's: never above its own end
/// (it serves nothing; this is where it starts from if elected).
pub fn learned_high_watermark(leader_high_watermark: u64, own_end: u64) -> u64 {
    leader_high_watermark.min(own_end)
}

#[cfg(test)]
// Lost ranges are lists of ranges, and a list of one is still one.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn leader(end_for: Option<(u64, u64)>) -> LeaderLog {
        LeaderLog {
            start: 10,
            end: 100,
            latest_epoch: Some(5),
            end_for_follower_epoch: end_for,
        }
    }

    #[test]
    fn a_follower_that_wrote_in_an_epoch_the_leader_ended_earlier_diverges() {
        let request = FetchRequest {
            fetch_offset: 80,
            last_fetched_epoch: Some(3),
        };
        assert_eq!(
            serve(request, leader(Some((3, 60))), 5),
            Serve::Diverging {
                epoch: 3,
                end_offset: 60
            }
        );
        assert_eq!(serve(request, leader(Some((3, 90))), 5), Serve::Records);
        assert_eq!(
            serve(request, leader(Some((2, 40))), 5),
            Serve::Diverging {
                epoch: 2,
                end_offset: 40
            },
            "an epoch the leader never saw"
        );
    }

    #[test]
    fn past_the_end_diverges_and_before_the_start_starts_over() {
        let ahead = FetchRequest {
            fetch_offset: 120,
            last_fetched_epoch: None,
        };
        assert_eq!(
            serve(ahead, leader(None), 5),
            Serve::Diverging {
                epoch: 5,
                end_offset: 100
            }
        );
        let behind = FetchRequest {
            fetch_offset: 0,
            last_fetched_epoch: None,
        };
        assert_eq!(serve(behind, leader(None), 5), Serve::StartOver);
    }

    #[test]
    fn the_follower_truncates_to_the_lower_of_both_ends_of_the_shared_epoch() {
        assert_eq!(
            step(Some((3, 60)), |_| 55, 0, 80),
            Step::Truncate {
                offset: 55,
                epoch: 3
            }
        );
        assert_eq!(
            step(Some((3, 60)), |_| 70, 0, 80),
            Step::Truncate {
                offset: 60,
                epoch: 3
            }
        );
        assert_eq!(step(None, |_| 0, 90, 80), Step::ResetTo { offset: 90 });
        assert_eq!(step(None, |_| 0, 10, 80), Step::Append);
        assert_eq!(repair_point(&[40..41, 12..14, 90..91], &[]), Some(12));
        assert_eq!(
            repair_point(&[12..14, 40..41], &[10..20]),
            Some(40),
            "the leader lacks 12..14 too"
        );
        assert_eq!(repair_point(&[12..14], &[12..14]), None);
        assert_eq!(learned_high_watermark(90, 80), 80);
    }
}
