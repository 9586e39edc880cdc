//! The group coordinator state machine: members, targets, grants and expiry.
//!
//! Every method is synchronous and free of I/O; the host wraps the coordinator
//! in a short std mutex and drives [`GroupCoordinator::expire`] from a ticker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::assignor::{self, Subscriber};
use super::{
    GroupConfig, GroupConfigError, GroupError, GroupSnapshot, HeartbeatOutcome, JoinOutcome,
    MemberSnapshot, TopicPartition,
};

/// Every consumer group of one broker: membership and cooperative assignment.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    /// Distinguishes member ids handed out by different broker processes.
    incarnation: u64,
    /// Suffix of the next member id; never reused within an incarnation.
    next_member_seq: u64,
    /// Groups with at least one member; an emptied group is dropped.
    groups: BTreeMap<String, Group>,
}

#[derive(Debug, Default)]
struct Group {
    /// Bumped whenever any member's target changes.
    generation: u64,
    /// Partition counts of the topics the members subscribe to, as last seen.
    /// A deleted topic is absent.
    partition_counts: BTreeMap<String, u32>,
    members: BTreeMap<String, Member>,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    topics: BTreeSet<String>,
    session_timeout_ms: u32,
    last_heartbeat: Instant,
    /// What the member last reported consuming (only partitions it held).
    owned: BTreeSet<TopicPartition>,
    /// What the member was last told it may consume.
    assigned: BTreeSet<TopicPartition>,
    /// What the assignor wants the member to end up with.
    target: BTreeSet<TopicPartition>,
}

impl Member {
    /// Whether the member might be consuming `tp` right now.
    fn holds(&self, tp: &TopicPartition) -> bool {
        self.owned.contains(tp) || self.assigned.contains(tp)
    }
}

impl GroupCoordinator {
    /// Creates an empty coordinator after validating `config`.
    ///
    /// `incarnation` must differ between broker processes (a startup timestamp
    /// will do): it is part of every member id, so a client holding an id from a
    /// previous process can never be mistaken for a member of this one.
    pub fn new(config: GroupConfig, incarnation: u64) -> Result<Self, GroupConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            incarnation,
            next_member_seq: 1,
            groups: BTreeMap::new(),
        })
    }

    /// The configuration the coordinator runs with.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Adds a new member subscribed to `topics`, creating the group if needed,
    /// and rebalances.
    ///
    /// A `session_timeout_ms` of 0 selects the configured default. The new
    /// member is granted only partitions no other member holds; the rest reach
    /// it through later heartbeats as their holders release them.
    pub fn join(
        &mut self,
        now: Instant,
        group: &str,
        topics: Vec<String>,
        session_timeout_ms: u32,
        client_id: &str,
        partitions_of: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<JoinOutcome, GroupError> {
        let session_timeout_ms = self.resolve_session_timeout(session_timeout_ms)?;
        let topics: BTreeSet<String> = topics.into_iter().collect();
        if topics.len() > self.config.topics_per_member_max {
            return Err(GroupError::LimitExceeded {
                what: "topics per member",
                limit: self.config.topics_per_member_max,
            });
        }
        if let Some(unknown) = topics.iter().find(|t| partitions_of(t).is_none()) {
            return Err(GroupError::UnknownTopic(unknown.clone()));
        }
        match self.groups.get(group) {
            None if self.groups.len() >= self.config.groups_max => {
                return Err(GroupError::LimitExceeded {
                    what: "groups",
                    limit: self.config.groups_max,
                });
            }
            Some(g) if g.members.len() >= self.config.members_per_group_max => {
                return Err(GroupError::LimitExceeded {
                    what: "members per group",
                    limit: self.config.members_per_group_max,
                });
            }
            _ => {}
        }

        let member_id = format!(
            "{client_id}-{:x}-{}",
            self.incarnation, self.next_member_seq
        );
        self.next_member_seq += 1;
        let g = self.groups.entry(group.to_owned()).or_default();
        g.members.insert(
            member_id.clone(),
            Member {
                client_id: client_id.to_owned(),
                topics,
                session_timeout_ms,
                last_heartbeat: now,
                owned: BTreeSet::new(),
                assigned: BTreeSet::new(),
                target: BTreeSet::new(),
            },
        );
        g.refresh_partition_counts(partitions_of);
        g.rebalance();
        let assigned = g.grant(&member_id);
        Ok(JoinOutcome {
            member_id,
            generation: g.generation,
            heartbeat_interval_ms: self.heartbeat_interval_ms(session_timeout_ms),
            assigned,
        })
    }

    /// Records that a member is alive and consumes `owned`, and answers with
    /// what it may consume now.
    ///
    /// Claims to partitions the member does not hold (never granted to it, or
    /// already released) are ignored, so a member can neither grab a partition
    /// nor take one back after releasing it. Partitions it still holds but no
    /// longer targets stay owned until a heartbeat leaves them out.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        group: &str,
        member_id: &str,
        owned: &[TopicPartition],
    ) -> Result<HeartbeatOutcome, GroupError> {
        let unknown = || GroupError::UnknownMember {
            group: group.to_owned(),
            member_id: member_id.to_owned(),
        };
        let g = self.groups.get_mut(group).ok_or_else(unknown)?;
        let member = g.members.get_mut(member_id).ok_or_else(unknown)?;
        member.last_heartbeat = now;
        let still_owned: BTreeSet<TopicPartition> = owned
            .iter()
            .filter(|tp| member.holds(tp))
            .cloned()
            .collect();
        member.owned = still_owned;
        let session_timeout_ms = member.session_timeout_ms;
        let assigned = g.grant(member_id);
        Ok(HeartbeatOutcome {
            generation: g.generation,
            assigned,
            heartbeat_interval_ms: self.heartbeat_interval_ms(session_timeout_ms),
        })
    }

    /// Removes a member at its request; its partitions are free at once.
    pub fn leave(&mut self, group: &str, member_id: &str) -> Result<(), GroupError> {
        let removed = self
            .groups
            .get_mut(group)
            .and_then(|g| g.members.remove(member_id));
        if removed.is_none() {
            return Err(GroupError::UnknownMember {
                group: group.to_owned(),
                member_id: member_id.to_owned(),
            });
        }
        self.settle(group);
        Ok(())
    }

    /// Removes every member whose last heartbeat is older than its session
    /// timeout, rebalances the affected groups, and returns the removed
    /// `(group, member_id)` pairs.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, String)> {
        let mut expired = Vec::new();
        for (name, g) in &mut self.groups {
            g.members.retain(|id, m| {
                let silent = now.saturating_duration_since(m.last_heartbeat);
                let alive = silent <= Duration::from_millis(u64::from(m.session_timeout_ms));
                if !alive {
                    expired.push((name.clone(), id.clone()));
                }
                alive
            });
        }
        let touched: BTreeSet<String> = expired.iter().map(|(g, _)| g.clone()).collect();
        for group in &touched {
            self.settle(group);
        }
        expired
    }

    /// Checks that a commit of offsets for `partitions` is allowed.
    ///
    /// With a member id, the member must hold every partition (owned or
    /// assigned: a member commits what it releases before dropping it). Without
    /// one (a standalone commit), the group must have no members.
    pub fn check_commit(
        &self,
        group: &str,
        member_id: Option<&str>,
        partitions: &[TopicPartition],
    ) -> Result<(), GroupError> {
        let g = self.groups.get(group);
        let Some(member_id) = member_id else {
            return match g {
                Some(g) if !g.members.is_empty() => Err(GroupError::GroupHasMembers {
                    group: group.to_owned(),
                }),
                _ => Ok(()),
            };
        };
        let member =
            g.and_then(|g| g.members.get(member_id))
                .ok_or_else(|| GroupError::UnknownMember {
                    group: group.to_owned(),
                    member_id: member_id.to_owned(),
                })?;
        match partitions.iter().find(|tp| !member.holds(tp)) {
            Some(tp) => Err(GroupError::PartitionNotOwned {
                topic: tp.topic.clone(),
                partition: tp.partition,
                member_id: member_id.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// Re-reads the partition count of every subscribed topic (a deleted topic
    /// answers `None`) and rebalances the groups where one changed; returns the
    /// groups whose targets changed.
    pub fn topics_changed(&mut self, partitions_of: &dyn Fn(&str) -> Option<u32>) -> Vec<String> {
        let mut rebalanced = Vec::new();
        for (name, g) in &mut self.groups {
            if g.refresh_partition_counts(partitions_of) && g.rebalance() {
                rebalanced.push(name.clone());
            }
        }
        rebalanced
    }

    /// A snapshot of one group, or `None` if it has no members.
    pub fn describe(&self, group: &str) -> Option<GroupSnapshot> {
        let g = self.groups.get(group)?;
        let members = g
            .members
            .iter()
            .map(|(id, m)| MemberSnapshot {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                topics: m.topics.iter().cloned().collect(),
                assigned: m.assigned.iter().cloned().collect(),
                owned: m.owned.iter().cloned().collect(),
                target: m.target.iter().cloned().collect(),
            })
            .collect();
        Some(GroupSnapshot {
            generation: g.generation,
            members,
        })
    }

    /// The names of all groups with at least one member, sorted.
    pub fn list(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// The groups with a member subscribed to `topic`, sorted.
    pub fn groups_subscribed_to(&self, topic: &str) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, g)| g.members.values().any(|m| m.topics.contains(topic)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Maps a requested session timeout (0 = default) onto the allowed range.
    fn resolve_session_timeout(&self, requested_ms: u32) -> Result<u32, GroupError> {
        let value = if requested_ms == 0 {
            self.config.session_timeout_ms_default
        } else {
            requested_ms
        };
        let (min, max) = (
            self.config.session_timeout_ms_min,
            self.config.session_timeout_ms_max,
        );
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(GroupError::InvalidSessionTimeout { value, min, max })
        }
    }

    /// A third of the session timeout, so two heartbeats may be lost before
    /// the session expires, but never below the configured floor.
    fn heartbeat_interval_ms(&self, session_timeout_ms: u32) -> u32 {
        (session_timeout_ms / 3).max(self.config.heartbeat_interval_ms_min)
    }

    /// After a removal: drops the group if it is empty, else rebalances it.
    fn settle(&mut self, group: &str) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if g.members.is_empty() {
            self.groups.remove(group);
        } else {
            g.rebalance();
        }
    }

    /// Checks the invariant that the held sets of a group's members are
    /// pairwise disjoint; for tests and debug assertions.
    #[cfg(test)]
    pub(super) fn held_sets_disjoint(&self) -> bool {
        self.groups.values().all(|g| {
            let mut seen = BTreeSet::new();
            g.members
                .values()
                .flat_map(|m| m.owned.union(&m.assigned))
                .all(|tp| seen.insert(tp))
        })
    }
}

impl Group {
    /// Re-reads partition counts for every subscribed topic; returns whether
    /// anything changed.
    fn refresh_partition_counts(&mut self, partitions_of: &dyn Fn(&str) -> Option<u32>) -> bool {
        let topics: BTreeSet<&String> = self.members.values().flat_map(|m| &m.topics).collect();
        let counts: BTreeMap<String, u32> = topics
            .into_iter()
            .filter_map(|t| partitions_of(t).map(|n| (t.clone(), n)))
            .collect();
        let changed = counts != self.partition_counts;
        self.partition_counts = counts;
        changed
    }

    /// Recomputes every member's target from the cached partition counts and
    /// bumps the generation if any target changed; returns whether one did.
    fn rebalance(&mut self) -> bool {
        let subscribers: Vec<Subscriber<'_>> = self
            .members
            .iter()
            .map(|(id, m)| Subscriber {
                id,
                topics: &m.topics,
                current: &m.target,
            })
            .collect();
        let mut targets = assignor::assign(&subscribers, &self.partition_counts);
        let mut changed = false;
        for (id, m) in &mut self.members {
            let target = targets.remove(id).unwrap_or_default();
            if target != m.target {
                m.target = target;
                changed = true;
            }
        }
        if changed {
            self.generation = self.generation.saturating_add(1);
        }
        changed
    }

    /// Computes, records and returns what `member_id` may consume now: its
    /// target, less partitions another member still holds.
    fn grant(&mut self, member_id: &str) -> Vec<TopicPartition> {
        let Some(member) = self.members.get(member_id) else {
            return Vec::new();
        };
        let assigned: BTreeSet<TopicPartition> = member
            .target
            .iter()
            .filter(|tp| {
                member.holds(tp)
                    || !self
                        .members
                        .iter()
                        .any(|(other, m)| other != member_id && m.holds(tp))
            })
            .cloned()
            .collect();
        let granted: Vec<TopicPartition> = assigned.iter().cloned().collect();
        if let Some(member) = self.members.get_mut(member_id) {
            member.assigned = assigned;
        }
        granted
    }
}
