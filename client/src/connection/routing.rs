//! Following partition leaders in a broker cluster.
//!
//! Any host of a cluster accepts a connection, but only a partition's leader serves
//! its data; the others answer `NOT_LEADER` with the leader's address. The client
//! remembers those addresses per partition, keeps one lazily connected channel per
//! host, and sends a partition's requests straight to its leader from then on. A
//! refused request wrote nothing, so sending it again to the leader is safe.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use ferry_proto::v1::ErrorCode;
use tonic::transport::Channel;

use super::{Client, ClientConfig, endpoint};
use crate::error::ClientError;

/// Redirects followed for one request before giving up with the last error.
pub(crate) const MAX_REDIRECTS: usize = 3;

/// Which kind of resource a partition belongs to (a topic and a queue may share a name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A topic partition.
    Topic,
    /// A queue (its single partition).
    Queue,
}

/// Known hosts and known leaders, shared by every clone of a [`Client`].
#[derive(Debug)]
pub(crate) struct Peers {
    config: ClientConfig,
    // Std mutexes: lookups and inserts only, nothing awaits while they are held.
    channels: Mutex<HashMap<String, Channel>>,
    leaders: Mutex<HashMap<(Kind, String, u32), String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps: a panic elsewhere cannot leave them half-updated.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Peers {
    /// No hosts known beyond the one the client connected to.
    pub(crate) fn new(config: ClientConfig) -> Self {
        Self {
            config,
            channels: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
        }
    }

    fn leader(&self, kind: Kind, name: &str, partition: u32) -> Option<String> {
        lock(&self.leaders)
            .get(&(kind, name.to_owned(), partition))
            .cloned()
    }

    fn learn(&self, kind: Kind, name: &str, partition: u32, address: &str) {
        lock(&self.leaders).insert((kind, name.to_owned(), partition), address.to_owned());
    }

    fn forget(&self, kind: Kind, name: &str, partition: u32) {
        lock(&self.leaders).remove(&(kind, name.to_owned(), partition));
    }

    /// The channel to `address`, created (not yet connected) on first use.
    fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        if let Some(channel) = lock(&self.channels).get(address) {
            return Ok(channel.clone());
        }
        let channel = endpoint(address, &self.config)?.connect_lazy();
        Ok(lock(&self.channels)
            .entry(address.to_owned())
            .or_insert(channel)
            .clone())
    }
}

impl Client {
    /// A client for the host at `address`, sharing this client's peers and settings.
    fn at(&self, address: &str) -> Result<Client, ClientError> {
        if address == &*self.address {
            return Ok(self.clone());
        }
        Ok(Client {
            channel: self.peers.channel(address)?,
            address: address.into(),
            ..self.clone()
        })
    }

    /// The client to send a partition's requests to: its known leader, else this one.
    pub(crate) fn for_partition(&self, kind: Kind, name: &str, partition: u32) -> Client {
        self.peers
            .leader(kind, name, partition)
            .and_then(|address| self.at(&address).ok())
            .unwrap_or_else(|| self.clone())
    }

    /// Remembers that `address` leads a partition.
    pub(crate) fn remember_leader(&self, kind: Kind, name: &str, partition: u32, address: &str) {
        self.peers.learn(kind, name, partition, address);
    }

    /// Forgets who leads a partition (its requests go to the bootstrap host again).
    pub(crate) fn forget_leader(&self, kind: Kind, name: &str, partition: u32) {
        self.peers.forget(kind, name, partition);
    }

    /// Remembers the leader a `NOT_LEADER` error names; true if it named one.
    pub(crate) fn learn_leader(&self, kind: Kind, name: &str, err: &ClientError) -> bool {
        match err {
            ClientError::Broker {
                code: ErrorCode::NotLeader,
                leader_address: Some(address),
                leader_partition: Some(partition),
                ..
            } => {
                self.peers.learn(kind, name, *partition, address);
                true
            }
            _ => false,
        }
    }

    /// Runs `call` against the partition's leader as far as the client knows, and
    /// again at the leader a `NOT_LEADER` answer names (a few times at most).
    pub(crate) async fn routed<T, F, Fut>(
        &self,
        kind: Kind,
        name: &str,
        partition: u32,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut target = self.for_partition(kind, name, partition);
        for _ in 0..MAX_REDIRECTS {
            match call(target.clone()).await {
                Err(err) if self.learn_leader(kind, name, &err) => {
                    target = self.for_partition(kind, name, partition);
                }
                Err(err @ ClientError::Transport { .. }) => {
                    // The remembered leader may be gone: ask the bootstrap host next time.
                    self.peers.forget(kind, name, partition);
                    return Err(err);
                }
                other => return other,
            }
        }
        call(target).await
    }
}

/// Items grouped by the host (client) to send them to.
pub(crate) type LeaderGroups<T> = Vec<(Client, Vec<(u32, T)>)>;

/// Groups `(partition, item)` pairs by the client that should receive them (the known
/// leader, else the bootstrap host), keeping their order within each group.
pub(crate) fn by_leader<T>(
    client: &Client,
    kind: Kind,
    name: &str,
    items: impl IntoIterator<Item = (u32, T)>,
) -> LeaderGroups<T> {
    let mut groups: LeaderGroups<T> = Vec::new();
    for (partition, item) in items {
        let target = client.for_partition(kind, name, partition);
        match groups.iter_mut().find(|(c, _)| c.address == target.address) {
            Some((_, group)) => group.push((partition, item)),
            None => groups.push((target, vec![(partition, item)])),
        }
    }
    groups
}
