//! The metadata store (etcd) and the cluster's controller, as one model: the
//! partition's state with a revision for compare-and-swap, host leases, the cluster
//! identity; it can be unavailable for a while, or lose everything.

use std::collections::{BTreeMap, BTreeSet};

use ferry_replication::PartitionState;
use ferry_replication::election::{self, ReplicaReport};
use ferry_replication::identity::{self, IdentityCheck};

/// What the store holds, and whether it answers.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Whether requests are served now (an outage makes every request fail).
    pub available: bool,
    /// The partition's state and the revision it was written at.
    pub state: Option<(PartitionState, u64)>,
    /// The cluster identity; `None` after the store lost its data.
    pub identity: Option<u64>,
    /// The store's revision: bumped by every write, back to zero when it lost its data.
    pub revision: u64,
    /// Lease expiry per registered host.
    leases: BTreeMap<String, u64>,
    /// Every state written, for a failing seed's reader (drained by the world).
    pub trace: Vec<String>,
    /// The hosts' reports on their logs (`rebuild/…` keys in etcd).
    reports: BTreeMap<String, ReplicaReport>,
}

/// How long a host's lease lasts from when the store receives a renewal.
pub const LEASE_TTL_MS: u64 = 1_000;

impl Meta {
    /// A store holding `identity` and nothing else yet.
    pub fn new(identity: u64) -> Self {
        Self {
            available: true,
            state: None,
            identity: Some(identity),
            revision: 1,
            leases: BTreeMap::new(),
            trace: Vec::new(),
            reports: BTreeMap::new(),
        }
    }

    /// Hosts whose lease has not expired at `now_ms`.
    pub fn live(&self, now_ms: u64) -> BTreeSet<String> {
        self.leases
            .iter()
            .filter(|(_, until)| **until > now_ms)
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// Renews `host`'s lease from `now_ms`.
    pub fn renew(&mut self, host: &str, now_ms: u64) {
        self.leases.insert(host.to_owned(), now_ms + LEASE_TTL_MS);
    }

    /// Writes `next` if the state is still at `revision`.
    pub fn compare_and_swap(&mut self, revision: u64, next: PartitionState) -> bool {
        match &self.state {
            Some((_, current)) if *current == revision => {
                self.put(next);
                true
            }
            _ => false,
        }
    }

    fn put(&mut self, state: PartitionState) {
        self.trace.push(format!("store: {state:?}"));
        self.revision += 1;
        self.state = Some((state, self.revision));
    }

    /// A host joining after recovery, as `ferry-broker serve` does before it
    /// registers: one that found damage leaves the in-sync set; any other resigns the
    /// leadership it held before it stopped.
    pub fn join(&mut self, host: &str, damaged: bool) {
        let Some((state, _)) = &self.state else {
            return;
        };
        let next = if damaged {
            election::leave(state, host)
        } else {
            election::resign(state, host)
        };
        if let Some(next) = next {
            self.put(next);
        }
    }

    /// A host's report on its log.
    pub fn report(&mut self, host: &str, report: ReplicaReport) {
        self.reports.insert(host.to_owned(), report);
    }

    /// One controller pass: place the partition on `hosts` once all are live, or
    /// keep a live in-sync leader ([`election::elect`]).
    pub fn control(&mut self, hosts: &[String], identity: u64, now_ms: u64) {
        if let IdentityCheck::Refuse { .. } = identity::check(Some(identity), self.identity) {
            // The controller is a host: it never works on a store without the
            // cluster's identity.
            return;
        }
        let live = self.live(now_ms);
        match &self.state {
            None => {
                if hosts.iter().all(|h| live.contains(h)) {
                    self.put(PartitionState {
                        replicas: hosts.to_vec(),
                        leader: hosts.first().cloned(),
                        leader_epoch: 1,
                        isr: hosts.to_vec(),
                    });
                }
            }
            Some((state, _)) => {
                let reports: Vec<(String, ReplicaReport)> = self
                    .reports
                    .iter()
                    .map(|(host, report)| (host.clone(), report.clone()))
                    .collect();
                let recovered = election::recover_leaderless(state, &reports);
                let next =
                    election::elect(recovered.unwrap_or_else(|| state.clone()), &live, |_| 0);
                if next != *state {
                    self.put(next);
                }
            }
        }
    }

    /// The store lost its data (a wiped etcd started empty).
    pub fn wipe(&mut self) {
        self.reports.clear();
        self.state = None;
        self.identity = None;
        self.revision = 0;
        self.leases.clear();
    }

    /// `ferry-broker metadata rebuild` ran on every host: the identity and the state
    /// rebuilt from their reports.
    pub fn rebuild(&mut self, identity: u64, state: PartitionState) {
        self.identity = Some(identity);
        self.put(state);
    }
}
