//! What travels between the simulated nodes, and what a node asks the world to do.

use ferry_e2e::history::SendOutcome;
use ferry_replication::PartitionState;

/// A node of the simulated cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    /// A broker host, by index.
    Host(usize),
    /// The metadata store (with the controller).
    Meta,
    /// The producing client.
    Client,
}

/// A message on the simulated network.
#[derive(Debug, Clone)]
pub enum Msg {
    /// Host → store: joining after recovery (`damaged`: its logs hold lost ranges).
    Join {
        /// Whether recovery found damage.
        damaged: bool,
    },
    /// Store → host: the identity it holds (a host refuses a store without its own).
    Joined {
        /// The store's cluster identity.
        identity: Option<u64>,
    },
    /// Host → store: renew the lease; `sent_at_ms` comes back in the answer.
    Renew {
        /// When the host sent it.
        sent_at_ms: u64,
    },
    /// Store → host: the lease was renewed.
    Renewed {
        /// When the host sent the renewal.
        sent_at_ms: u64,
    },
    /// Host → store: read the partition state (a watch, modelled as a poll).
    Poll,
    /// Host → store: write `state` if the partition's state is still at `revision`.
    Propose {
        /// The revision the proposal was made against.
        revision: u64,
        /// The state proposed.
        state: PartitionState,
    },
    /// Store → host: what it holds now.
    View {
        /// The partition state and its revision.
        state: Option<(PartitionState, u64)>,
        /// The cluster identity.
        identity: Option<u64>,
    },
    /// Follower → leader: a replica fetch.
    Fetch {
        /// The epoch the follower follows.
        epoch: u64,
        /// Its durable end.
        fetch_offset: u64,
        /// The newest epoch in its log.
        last_epoch: Option<u64>,
        /// The lost ranges in its log.
        lost: Vec<std::ops::Range<u64>>,
    },
    /// Host → store: its log, for a partition left without in-sync replicas.
    Report {
        /// The report.
        report: ferry_replication::election::ReplicaReport,
    },
    /// Leader → follower: the answer (`None`: refused, not the leader of that epoch).
    Fetched {
        /// The answer, when the leader served it.
        answer: Option<FetchAnswer>,
        /// The fetch offset it answers.
        fetch_offset: u64,
    },
    /// Client → host: produce one value.
    Produce {
        /// The history's operation id.
        op: u64,
        /// The value.
        value: String,
    },
    /// Host → client: what became of a produce.
    Produced {
        /// The history's operation id.
        op: u64,
        /// Its outcome.
        outcome: SendOutcome,
    },
}

/// A leader's answer to a fetch.
#[derive(Debug, Clone)]
pub struct FetchAnswer {
    /// `(epoch, end offset)` when the follower's log diverged.
    pub diverging: Option<(u64, u64)>,
    /// The leader's log start.
    pub log_start: u64,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// Whole batches from the fetch offset.
    pub records: Vec<u8>,
    /// Truncate to this offset and fetch again: the leader holds records the follower
    /// lost, and the follower is out of the in-sync set.
    pub repair_below: Option<u64>,
}

/// Something a node asks of the world.
#[derive(Debug, Clone)]
pub enum Out {
    /// Send a message.
    Send {
        /// Recipient.
        to: Node,
        /// The message.
        msg: Msg,
    },
    /// Wake this host's sync after `after_ms` (a group-commit fsync round).
    SyncLater {
        /// Delay.
        after_ms: u64,
    },
    /// This host started leading `epoch` (checked: one leader per epoch).
    Led {
        /// The epoch.
        epoch: u64,
    },
}
