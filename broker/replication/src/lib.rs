//! Ferry's replication decisions, apart from the I/O that carries them out.
//!
//! Everything here is pure: inputs are events and a clock value (milliseconds on a
//! monotonic clock the caller chooses), outputs are decisions. The broker's
//! `Partition` and replicator are thin drivers around these; `ferry-sim` drives the
//! same code through simulated crashes, cuts and disk faults (`docs/replication.md`).
//!
//! - [`LogId`]: which replicated log (a topic partition, or one of a queue's two logs).
//! - [`PartitionState`]: a partition's placement, leader, epoch and in-sync set, as the
//!   metadata store holds it.
//! - [`LeaderCore`]: a leader's view of its followers: progress, the high watermark,
//!   who is in sync, when a write counts as committed.
//! - [`follower`]: what a leader answers a fetch, and what a follower does with it.
//! - [`election`]: who may lead, who leaves the in-sync sets, and the state rebuilt
//!   from the replicas' logs after the metadata store lost it.
//! - [`identity`]: whether a host may serve on the metadata store it found.

pub mod election;
pub mod follower;
mod id;
pub mod identity;
mod leader;
mod state;

pub use id::{LogId, LogKind, ParseLogKindError};
pub use leader::{Commit, FollowerLag, LeaderCore, UnknownFollower};
pub use state::PartitionState;
