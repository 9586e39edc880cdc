//! Scenario and property tests of the coordinator, driven through a simulated
//! clock and simulated clients that report what they really consume.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::{GroupConfig, GroupCoordinator, GroupError, HeartbeatOutcome, TopicPartition};

const SESSION_MS: u32 = 10_000;

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn set(tps: &[TopicPartition]) -> BTreeSet<TopicPartition> {
    tps.iter().cloned().collect()
}

/// How a simulated client applies a heartbeat answer.
#[derive(Debug, Clone, Copy)]
enum Apply {
    /// Consume exactly what was assigned.
    Full,
    /// Start the new partitions but keep consuming revoked ones for now.
    SlowRelease,
    /// Drop revoked partitions but do not start new ones yet.
    SlowAcquire,
    /// The answer was lost: change nothing.
    Lost,
}

/// A client as the test sees it: what it really consumes.
#[derive(Debug)]
struct Client {
    group: String,
    consuming: BTreeSet<TopicPartition>,
}

/// A coordinator, a clock, the topic metadata and the live clients.
struct Sim {
    coord: GroupCoordinator,
    base: Instant,
    now_ms: u64,
    topics: BTreeMap<String, u32>,
    /// Live clients keyed by member id.
    clients: BTreeMap<String, Client>,
}

impl Sim {
    fn new(topics: &[(&str, u32)]) -> Self {
        Self::with_config(topics, GroupConfig::default())
    }

    fn with_config(topics: &[(&str, u32)], config: GroupConfig) -> Self {
        let coord = GroupCoordinator::new(config, 7).expect("valid config");
        Self {
            coord,
            base: Instant::now(),
            now_ms: 0,
            topics: topics.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect(),
            clients: BTreeMap::new(),
        }
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    fn try_join(
        &mut self,
        group: &str,
        topics: &[&str],
        session_ms: u32,
    ) -> Result<String, GroupError> {
        let now = self.now();
        let topics = topics.iter().map(|t| (*t).to_owned()).collect();
        let meta = &self.topics;
        let out = self
            .coord
            .join(now, group, topics, session_ms, "client", &|t| {
                meta.get(t).copied()
            })?;
        let consuming = out.assigned.iter().cloned().collect();
        self.clients.insert(
            out.member_id.clone(),
            Client {
                group: group.to_owned(),
                consuming,
            },
        );
        self.check();
        Ok(out.member_id)
    }

    fn join(&mut self, group: &str, topics: &[&str]) -> String {
        self.try_join(group, topics, SESSION_MS).expect("join")
    }

    /// The client reports what it consumes and applies the answer per `apply`.
    fn heartbeat(&mut self, member: &str, apply: Apply) -> Result<HeartbeatOutcome, GroupError> {
        let now = self.now();
        let Some(client) = self.clients.get_mut(member) else {
            return Err(GroupError::UnknownMember {
                group: String::new(),
                member_id: member.to_owned(),
            });
        };
        let owned: Vec<TopicPartition> = client.consuming.iter().cloned().collect();
        let result = self.coord.heartbeat(now, &client.group, member, &owned);
        match &result {
            Ok(out) => {
                let assigned = set(&out.assigned);
                client.consuming = match apply {
                    Apply::Full => assigned,
                    Apply::SlowRelease => client.consuming.union(&assigned).cloned().collect(),
                    Apply::SlowAcquire => {
                        client.consuming.intersection(&assigned).cloned().collect()
                    }
                    Apply::Lost => client.consuming.clone(),
                };
            }
            // The coordinator forgot the member (expired): the client stops.
            Err(GroupError::UnknownMember { .. }) => {
                self.clients.remove(member);
            }
            Err(e) => panic!("unexpected heartbeat error {e}"),
        }
        self.check();
        result
    }

    fn hb(&mut self, member: &str) -> BTreeSet<TopicPartition> {
        let out = self.heartbeat(member, Apply::Full).expect("heartbeat");
        set(&out.assigned)
    }

    /// The client stops consuming, then leaves.
    fn leave(&mut self, member: &str) {
        if let Some(client) = self.clients.remove(member) {
            self.coord.leave(&client.group, member).expect("leave");
        }
        self.check();
    }

    fn advance_and_expire(&mut self, ms: u64) -> Vec<(String, String)> {
        self.now_ms += ms;
        let expired = self.coord.expire(self.now());
        for (_, member) in &expired {
            self.clients.remove(member);
        }
        self.check();
        expired
    }

    fn set_topic(&mut self, topic: &str, count: Option<u32>) {
        match count {
            Some(n) => self.topics.insert(topic.to_owned(), n),
            None => self.topics.remove(topic),
        };
        let meta = &self.topics;
        self.coord.topics_changed(&|t| meta.get(t).copied());
        self.check();
    }

    fn assigned(&self, group: &str, member: &str) -> BTreeSet<TopicPartition> {
        let snap = self.coord.describe(group).expect("group exists");
        let m = snap
            .members
            .iter()
            .find(|m| m.member_id == member)
            .expect("member");
        set(&m.assigned)
    }

    /// The safety invariant, checked after every operation: within a group, no
    /// partition is assigned to, owned by, or consumed by two members.
    fn check(&self) {
        assert!(self.coord.held_sets_disjoint(), "held sets overlap");
        for group in self.coord.list() {
            let snap = self.coord.describe(&group).expect("listed group exists");
            let mut assigned = BTreeSet::new();
            for m in &snap.members {
                for p in &m.assigned {
                    assert!(assigned.insert(p.clone()), "{p} assigned twice in {group}");
                }
            }
            let mut consumed = BTreeSet::new();
            for client in self.clients.values().filter(|c| c.group == group) {
                for p in &client.consuming {
                    assert!(consumed.insert(p.clone()), "{p} consumed twice in {group}");
                }
            }
        }
    }

    /// Three rounds of heartbeats with prompt clients: enough for a holder to
    /// learn of a revocation, confirm the release, and the new target to take
    /// the partition, whatever the order within a round. (Two rounds are not:
    /// if the new target heartbeats before the holder in each round, it sees
    /// the holder's confirmation only in the third.)
    fn quiesce(&mut self) {
        for _ in 0..3 {
            let members: Vec<String> = self.clients.keys().cloned().collect();
            for m in members {
                self.heartbeat(&m, Apply::Full).expect("live member");
            }
        }
    }

    /// After quiescing: every partition of every topic some member of the group
    /// subscribes to is assigned to, and consumed by, exactly one member.
    fn check_converged(&self) {
        for group in self.coord.list() {
            let snap = self.coord.describe(&group).expect("listed group exists");
            let subscribed: BTreeSet<&String> =
                snap.members.iter().flat_map(|m| &m.topics).collect();
            let expected: BTreeSet<TopicPartition> = subscribed
                .into_iter()
                .filter_map(|t| self.topics.get(t).map(|n| (t, *n)))
                .flat_map(|(t, n)| (0..n).map(move |p| tp(t, p)))
                .collect();
            let mut assigned = BTreeSet::new();
            for m in &snap.members {
                assert_eq!(m.assigned, m.target, "{} not converged", m.member_id);
                let owned = set(&m.owned);
                assert!(
                    owned.is_subset(&set(&m.assigned)),
                    "{} owns extra",
                    m.member_id
                );
                let client = &self.clients[&m.member_id];
                assert_eq!(client.consuming, set(&m.assigned));
                assigned.extend(m.assigned.iter().cloned());
            }
            assert_eq!(assigned, expected, "group {group} not fully assigned");
        }
    }
}

#[test]
fn third_member_gets_partitions_only_after_releases() {
    let mut sim = Sim::new(&[("t", 4)]);
    let a = sim.join("g", &["t"]);
    assert_eq!(sim.assigned("g", &a).len(), 4);
    assert_eq!(sim.hb(&a).len(), 4);

    // B joins: A keeps everything until it releases.
    let b = sim.join("g", &["t"]);
    assert!(sim.assigned("g", &b).is_empty());
    assert_eq!(sim.hb(&b).len(), 0);
    assert_eq!(sim.hb(&a).len(), 2, "A is told to release two");
    assert_eq!(sim.hb(&b).len(), 0, "A has not confirmed the release yet");
    assert_eq!(sim.hb(&a).len(), 2);
    assert_eq!(sim.hb(&b).len(), 2, "released partitions reach B");

    // C joins: A or B gives up one partition, again only after releasing it.
    let generation = sim.coord.describe("g").expect("group").generation;
    let c = sim.join("g", &["t"]);
    assert!(sim.coord.describe("g").expect("group").generation > generation);
    assert!(sim.assigned("g", &c).is_empty());
    // A keeps its two (the larger share goes to a current holder, then by
    // member id); B gives up one to C.
    assert!(sim.hb(&c).is_empty());
    assert_eq!(sim.hb(&a).len(), 2);
    assert_eq!(sim.hb(&b).len(), 1, "B is told to release one");
    assert!(sim.hb(&c).is_empty(), "B has not confirmed the release yet");
    assert_eq!(sim.hb(&b).len(), 1);
    assert_eq!(sim.hb(&c).len(), 1, "released partition reaches C");
    sim.quiesce();
    sim.check_converged();
    let sizes: Vec<usize> = [&a, &b, &c]
        .iter()
        .map(|m| sim.assigned("g", m).len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 4);
    assert!(sizes.iter().all(|&n| (1..=2).contains(&n)), "{sizes:?}");
}

#[test]
fn partition_granted_but_not_yet_reported_is_still_held() {
    let mut sim = Sim::new(&[("t", 2)]);
    let a = sim.join("g", &["t"]);
    // A was granted both partitions at join but has not heartbeated yet.
    let b = sim.join("g", &["t"]);
    assert!(
        sim.hb(&b).is_empty(),
        "A may already consume what it was granted"
    );
    assert_eq!(sim.hb(&a).len(), 1);
    sim.hb(&a);
    assert_eq!(sim.hb(&b).len(), 1);
}

#[test]
fn silent_member_expires_and_its_partitions_move() {
    let mut sim = Sim::new(&[("t", 4)]);
    let a = sim.join("g", &["t"]);
    let b = sim.join("g", &["t"]);
    sim.quiesce();
    sim.check_converged();

    // Only A keeps heartbeating.
    for _ in 0..2 {
        assert!(sim.advance_and_expire(4_000).is_empty());
        sim.hb(&a);
    }
    // B's last heartbeat is now 12 s old, past its 10 s session; A's is 4 s old.
    let expired = sim.advance_and_expire(4_000);
    assert_eq!(expired, vec![("g".to_owned(), b.clone())]);
    assert!(sim.coord.heartbeat(sim.now(), "g", &b, &[]).is_err());
    assert_eq!(sim.hb(&a).len(), 4, "A takes over at once");
}

#[test]
fn expiry_is_not_early_and_empties_the_group() {
    let mut sim = Sim::new(&[("t", 1)]);
    let a = sim.try_join("g", &["t"], 2_000).expect("join");
    assert!(
        sim.advance_and_expire(2_000).is_empty(),
        "exactly at the timeout is alive"
    );
    assert_eq!(sim.advance_and_expire(1), vec![("g".to_owned(), a)]);
    assert!(sim.coord.list().is_empty());
    assert!(sim.coord.describe("g").is_none());
}

#[test]
fn leave_frees_partitions_immediately() {
    let mut sim = Sim::new(&[("t", 4)]);
    let a = sim.join("g", &["t"]);
    let b = sim.join("g", &["t"]);
    sim.quiesce();
    sim.leave(&a);
    assert_eq!(sim.hb(&b).len(), 4);
    assert!(matches!(
        sim.coord.leave("g", &a),
        Err(GroupError::UnknownMember { .. })
    ));
}

#[test]
fn partitions_only_go_to_subscribers() {
    let mut sim = Sim::new(&[("x", 2), ("y", 3)]);
    let a = sim.join("g", &["x"]);
    let b = sim.join("g", &["x", "y"]);
    sim.quiesce();
    sim.check_converged();
    assert!(sim.assigned("g", &a).iter().all(|p| p.topic == "x"));
    assert_eq!(sim.assigned("g", &a).len(), 1);
    assert_eq!(sim.assigned("g", &b).len(), 4);
}

#[test]
fn topic_growth_and_deletion_rebalance() {
    let mut sim = Sim::new(&[("x", 2), ("y", 2)]);
    let a = sim.join("g", &["x", "y"]);
    let b = sim.join("g", &["x"]);
    sim.quiesce();
    let generation = sim.coord.describe("g").expect("group").generation;
    assert_eq!(sim.coord.groups_subscribed_to("y"), vec!["g".to_owned()]);

    sim.set_topic("x", Some(6));
    assert!(sim.coord.describe("g").expect("group").generation > generation);
    sim.quiesce();
    sim.check_converged();
    assert_eq!(sim.assigned("g", &b).len(), 3);

    sim.set_topic("y", None);
    sim.quiesce();
    sim.check_converged();
    assert!(sim.assigned("g", &a).iter().all(|p| p.topic == "x"));
    // Nothing changed: no rebalance, no generation bump.
    let generation = sim.coord.describe("g").expect("group").generation;
    let meta = sim.topics.clone();
    assert!(
        sim.coord
            .topics_changed(&|t| meta.get(t).copied())
            .is_empty()
    );
    assert_eq!(
        sim.coord.describe("g").expect("group").generation,
        generation
    );
}

#[test]
fn owned_claims_beyond_what_is_held_are_ignored() {
    let mut sim = Sim::new(&[("t", 2)]);
    let a = sim.join("g", &["t"]);
    sim.hb(&a);
    let b = sim.join("g", &["t"]);
    // B claims both partitions; A still holds them.
    let now = sim.now();
    let out = sim.coord.heartbeat(now, "g", &b, &[tp("t", 0), tp("t", 1)]);
    assert!(out.expect("heartbeat").assigned.is_empty());
    let snap = sim.coord.describe("g").expect("group");
    assert!(
        snap.members
            .iter()
            .find(|m| m.member_id == b)
            .expect("b")
            .owned
            .is_empty()
    );
    sim.check();
    // A claims a partition of an unknown topic: ignored too.
    let out = sim
        .coord
        .heartbeat(now, "g", &a, &[tp("t", 0), tp("t", 1), tp("zz", 0)]);
    assert_eq!(out.expect("heartbeat").assigned.len(), 1);
    let snap = sim.coord.describe("g").expect("group");
    let owned = &snap
        .members
        .iter()
        .find(|m| m.member_id == a)
        .expect("a")
        .owned;
    assert_eq!(owned, &vec![tp("t", 0), tp("t", 1)]);
}

#[test]
fn released_partition_cannot_be_reclaimed() {
    let mut sim = Sim::new(&[("t", 2)]);
    let a = sim.join("g", &["t"]);
    sim.hb(&a);
    let b = sim.join("g", &["t"]);
    let kept = sim.hb(&a);
    sim.hb(&a);
    let now = sim.now();
    let all = [tp("t", 0), tp("t", 1)];
    let out = sim.coord.heartbeat(now, "g", &a, &all).expect("heartbeat");
    assert_eq!(set(&out.assigned), kept);
    assert_eq!(sim.hb(&b).len(), 1);
}

#[test]
fn check_commit_rules() {
    let mut sim = Sim::new(&[("t", 2)]);
    // Standalone commits are fine while nobody is in the group.
    assert_eq!(sim.coord.check_commit("g", None, &[tp("t", 0)]), Ok(()));
    let a = sim.join("g", &["t"]);
    sim.hb(&a);
    assert!(matches!(
        sim.coord.check_commit("g", None, &[tp("t", 0)]),
        Err(GroupError::GroupHasMembers { .. })
    ));
    assert_eq!(
        sim.coord
            .check_commit("g", Some(&a), &[tp("t", 0), tp("t", 1)]),
        Ok(())
    );
    assert!(matches!(
        sim.coord.check_commit("g", Some("nobody"), &[tp("t", 0)]),
        Err(GroupError::UnknownMember { .. })
    ));
    assert!(matches!(
        sim.coord.check_commit("other", Some(&a), &[]),
        Err(GroupError::UnknownMember { .. })
    ));

    // B joins; A is told to release one partition but may still commit it.
    let b = sim.join("g", &["t"]);
    let now = sim.now();
    let all = [tp("t", 0), tp("t", 1)];
    let out = sim.coord.heartbeat(now, "g", &a, &all).expect("heartbeat");
    assert_eq!(out.assigned.len(), 1);
    assert_eq!(sim.coord.check_commit("g", Some(&a), &all), Ok(()));
    let err = sim.coord.check_commit("g", Some(&b), &[tp("t", 0)]);
    assert!(
        matches!(err, Err(GroupError::PartitionNotOwned { .. })),
        "{err:?}"
    );

    // Once released, A may no longer commit it; B may once granted.
    let kept = out.assigned.clone();
    sim.coord.heartbeat(now, "g", &a, &kept).expect("heartbeat");
    let released: Vec<TopicPartition> = all.iter().filter(|p| !kept.contains(p)).cloned().collect();
    let err = sim.coord.check_commit("g", Some(&a), &released);
    assert!(
        matches!(err, Err(GroupError::PartitionNotOwned { .. })),
        "{err:?}"
    );
    let out = sim.coord.heartbeat(now, "g", &b, &[]).expect("heartbeat");
    assert_eq!(out.assigned, released);
    assert_eq!(sim.coord.check_commit("g", Some(&b), &released), Ok(()));

    // After everyone leaves, standalone commits are allowed again.
    sim.coord.leave("g", &a).expect("leave");
    sim.coord.leave("g", &b).expect("leave");
    assert_eq!(sim.coord.check_commit("g", None, &[tp("t", 0)]), Ok(()));
}

#[test]
fn join_validation_and_limits() {
    let config = GroupConfig {
        members_per_group_max: 2,
        groups_max: 2,
        topics_per_member_max: 2,
        ..GroupConfig::default()
    };
    let mut sim = Sim::with_config(&[("t", 1), ("u", 1), ("v", 1)], config);
    assert_eq!(
        sim.try_join("g", &["nope"], SESSION_MS),
        Err(GroupError::UnknownTopic("nope".into()))
    );
    assert!(
        sim.coord.list().is_empty(),
        "a failed join creates no group"
    );
    assert_eq!(
        sim.try_join("g", &["t"], 999),
        Err(GroupError::InvalidSessionTimeout {
            value: 999,
            min: 1_000,
            max: 300_000
        })
    );
    assert!(matches!(
        sim.try_join("g", &["t"], 300_001),
        Err(GroupError::InvalidSessionTimeout { .. })
    ));
    assert!(matches!(
        sim.try_join("g", &["t", "u", "v"], SESSION_MS),
        Err(GroupError::LimitExceeded {
            what: "topics per member",
            limit: 2
        })
    ));
    let a = sim
        .try_join("g", &["t", "t", "u"], 0)
        .expect("duplicates collapse; 0 = default");
    let snap = sim.coord.describe("g").expect("group");
    assert_eq!(snap.members[0].topics, vec!["t".to_owned(), "u".to_owned()]);
    let b = sim.join("g", &["t"]);
    assert_ne!(a, b);
    assert!(matches!(
        sim.try_join("g", &["t"], SESSION_MS),
        Err(GroupError::LimitExceeded {
            what: "members per group",
            limit: 2
        })
    ));
    sim.join("h", &["t"]);
    assert!(matches!(
        sim.try_join("i", &["t"], SESSION_MS),
        Err(GroupError::LimitExceeded {
            what: "groups",
            limit: 2
        })
    ));
    assert_eq!(sim.coord.list(), vec!["g".to_owned(), "h".to_owned()]);
}

#[test]
fn heartbeat_interval_is_a_third_with_a_floor() {
    let mut sim = Sim::new(&[("t", 1)]);
    let now = sim.now();
    let meta = sim.topics.clone();
    let out = sim
        .coord
        .join(now, "g", vec!["t".into()], 9_000, "c", &|t| {
            meta.get(t).copied()
        })
        .expect("join");
    assert_eq!(out.heartbeat_interval_ms, 3_000);
    assert!(out.member_id.starts_with("c-7-"));
    let hb = sim
        .coord
        .heartbeat(now, "g", &out.member_id, &[])
        .expect("heartbeat");
    assert_eq!(hb.heartbeat_interval_ms, 3_000);
    let out = sim
        .coord
        .join(now, "g", vec!["t".into()], 1_000, "c", &|t| {
            meta.get(t).copied()
        })
        .expect("join");
    assert_eq!(out.heartbeat_interval_ms, 333);
    assert!(matches!(
        sim.coord.heartbeat(now, "g", "c-7-99", &[]),
        Err(GroupError::UnknownMember { .. })
    ));
}

#[test]
fn config_validation() {
    assert_eq!(GroupConfig::default().validate(), Ok(()));
    let bad = [
        GroupConfig {
            session_timeout_ms_min: 0,
            ..GroupConfig::default()
        },
        GroupConfig {
            session_timeout_ms_max: 500,
            ..GroupConfig::default()
        },
        GroupConfig {
            session_timeout_ms_default: 500_000,
            ..GroupConfig::default()
        },
        GroupConfig {
            heartbeat_interval_ms_min: 1_000,
            ..GroupConfig::default()
        },
        GroupConfig {
            members_per_group_max: 0,
            ..GroupConfig::default()
        },
        GroupConfig {
            groups_max: 0,
            ..GroupConfig::default()
        },
        GroupConfig {
            topics_per_member_max: 0,
            ..GroupConfig::default()
        },
    ];
    for config in bad {
        assert!(config.validate().is_err(), "{config:?}");
        assert!(GroupCoordinator::new(config, 0).is_err());
    }
}

/// One step of the randomized scenario.
#[derive(Debug, Clone)]
enum Op {
    Join {
        group: u8,
        topics: u8,
        session_ms: u32,
    },
    Heartbeat {
        member: usize,
        apply: Apply,
    },
    Leave {
        member: usize,
    },
    Advance {
        ms: u64,
    },
    Topic {
        topic: u8,
        count: Option<u32>,
    },
}

const GROUPS: [&str; 2] = ["g0", "g1"];
const TOPICS: [&str; 3] = ["a", "b", "c"];

fn op() -> impl Strategy<Value = Op> {
    let apply = prop_oneof![
        4 => Just(Apply::Full),
        1 => Just(Apply::SlowRelease),
        1 => Just(Apply::SlowAcquire),
        1 => Just(Apply::Lost),
    ];
    prop_oneof![
        2 => (0..2u8, 1..8u8, prop::sample::select(vec![1_000u32, 5_000, 10_000]))
            .prop_map(|(group, topics, session_ms)| Op::Join { group, topics, session_ms }),
        8 => (any::<usize>(), apply).prop_map(|(member, apply)| Op::Heartbeat { member, apply }),
        1 => any::<usize>().prop_map(|member| Op::Leave { member }),
        2 => (0..3_000u64).prop_map(|ms| Op::Advance { ms }),
        1 => (0..3u8, prop::option::weighted(0.8, 0..7u32))
            .prop_map(|(topic, count)| Op::Topic { topic, count }),
    ]
}

fn nth_member(sim: &Sim, n: usize) -> Option<String> {
    let len = sim.clients.len();
    (len > 0)
        .then(|| sim.clients.keys().nth(n % len).cloned())
        .flatten()
}

fn run(sim: &mut Sim, op: &Op) {
    match *op {
        Op::Join {
            group,
            topics,
            session_ms,
        } => {
            let names: Vec<&str> = TOPICS
                .iter()
                .enumerate()
                .filter(|(i, _)| topics & (1 << i) != 0)
                .map(|(_, t)| *t)
                .collect();
            match sim.try_join(GROUPS[usize::from(group)], &names, session_ms) {
                Ok(_) | Err(GroupError::UnknownTopic(_)) => {}
                Err(e) => panic!("unexpected join error {e}"),
            }
        }
        Op::Heartbeat { member, apply } => {
            if let Some(m) = nth_member(sim, member) {
                // An expired member is removed from the simulation by `heartbeat`.
                let _ = sim.heartbeat(&m, apply);
            }
        }
        Op::Leave { member } => {
            if let Some(m) = nth_member(sim, member) {
                sim.leave(&m);
            }
        }
        Op::Advance { ms } => {
            sim.advance_and_expire(ms);
        }
        Op::Topic { topic, count } => sim.set_topic(TOPICS[usize::from(topic)], count),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn assignment_is_exclusive_and_converges(ops in prop::collection::vec(op(), 1..80)) {
        let mut sim = Sim::new(&[("a", 4), ("b", 3), ("c", 1)]);
        for op in &ops {
            run(&mut sim, op);
        }
        sim.quiesce();
        sim.check_converged();
        // Targets are balanced per topic among its subscribers.
        for group in sim.coord.list() {
            let snap = sim.coord.describe(&group).expect("listed group exists");
            for topic in TOPICS {
                let counts: Vec<usize> = snap
                    .members
                    .iter()
                    .filter(|m| m.topics.iter().any(|t| t == topic))
                    .map(|m| m.target.iter().filter(|p| p.topic == topic).count())
                    .collect();
                let (min, max) = (counts.iter().min(), counts.iter().max());
                if let (Some(min), Some(max)) = (min, max) {
                    prop_assert!(max - min <= 1, "{group}/{topic}: {counts:?}");
                }
            }
        }
    }
}
