//! The broker's error type. `service::status` is the one place that maps it to gRPC.

use ferry_records::RecordError;
use ferry_storage::StorageError;

use crate::group::GroupError;
use crate::meta::MetaError;

/// Everything a broker operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A topic or group name breaks the naming rules.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// "topic" or "group".
        kind: &'static str,
        /// The offending name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A request field is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No topic by that name.
    #[error("topic {0:?} not found")]
    TopicNotFound(String),
    /// A topic by that name exists already.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// The partition index is not below the topic's partition count.
    #[error("topic {topic:?} has no partition {partition} (it has {partitions})")]
    PartitionNotFound {
        /// Topic name.
        topic: String,
        /// Requested partition.
        partition: u32,
        /// Partitions the topic has.
        partitions: u32,
    },
    /// One record is larger than the topic allows.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Encoded record size.
        size: usize,
        /// Limit in force.
        limit: usize,
    },
    /// A batch or request is larger than allowed.
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Batch size.
        size: usize,
        /// Limit in force.
        limit: usize,
    },
    /// A produce request carried nothing to append.
    #[error("empty batch: a produce request needs at least one record")]
    EmptyBatch,
    /// Batch bytes failed validation.
    #[error("corrupt batch: {0}")]
    CorruptBatch(RecordError),
    /// A count or size limit was reached.
    #[error("limit exceeded: {what} (limit {limit})")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: u64,
    },
    /// The storage engine refused or failed.
    #[error("topic {topic:?} partition {partition}: {source}")]
    Storage {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// What storage said.
        source: StorageError,
    },
    /// A consumer group rule was broken.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// No group by that name.
    #[error("group {0:?} not found")]
    GroupNotFound(String),
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// No queue by that name.
    #[error("queue {0:?} not found")]
    QueueNotFound(String),
    /// A queue by that name exists already.
    #[error("queue {0:?} already exists")]
    QueueExists(String),
    /// The queue is another queue's dead-letter queue.
    #[error("queue {queue:?} is the dead-letter queue of {used_by:?}")]
    QueueInUse {
        /// The queue.
        queue: String,
        /// The queue that dead-letters into it.
        used_by: String,
    },
    /// A receipt handle that does not decode or belongs to another queue.
    #[error("invalid receipt handle: {0}")]
    ReceiptInvalid(&'static str),
    /// A receipt handle that no longer names a delivery.
    #[error("stale receipt handle: {0}")]
    ReceiptStale(#[from] crate::queue::ReceiptError),
    /// A queue's storage refused or failed.
    #[error("queue {queue:?}: {source}")]
    QueueStorage {
        /// Queue name.
        queue: String,
        /// What storage said.
        source: StorageError,
    },
    /// The broker is stopping and takes no new work.
    #[error("broker is shutting down")]
    ShuttingDown,
    /// Cluster mode: another host (or, for now, none) leads this partition.
    #[error("this host does not lead {kind} {name:?} partition {partition}{}", leader_text(.leader))]
    NotLeader {
        /// Topic or queue.
        kind: ferry_replication::LogKind,
        /// The topic or queue.
        name: String,
        /// The partition.
        partition: u32,
        /// Where the leader is, when one is known.
        leader: Option<LeaderLocation>,
    },
    /// Under `sync` replication, fewer replicas are in sync than a write needs;
    /// nothing was written.
    #[error(
        "topic {topic:?} partition {partition}: {in_sync} of {required} required replicas in sync"
    )]
    NotEnoughReplicas {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// Replicas in sync now (the leader included).
        in_sync: usize,
        /// Replicas a write needs.
        required: usize,
    },
    /// A write reached the leader but was not confirmed by the in-sync replicas in
    /// time, or leadership moved first: it may or may not survive.
    #[error(
        "topic {topic:?} partition {partition}: write not confirmed by the replicas ({reason})"
    )]
    ReplicationIncomplete {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// Timed out, or leadership moved.
        reason: &'static str,
    },
    /// A replica request carried a leader epoch older than the partition's.
    #[error("topic {topic:?} partition {partition}: epoch {epoch} is older than {current}")]
    FencedLeaderEpoch {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// The request's epoch.
        epoch: u64,
        /// The partition's epoch on this host.
        current: u64,
    },
    /// The caller is not authenticated, or lacks a right: nothing was done.
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    /// The caller is over a quota: nothing was done.
    #[error(transparent)]
    Throttled(#[from] crate::access::quota::Throttled),
    /// A bug or an impossible state; the message says which.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    /// Wraps a storage error with the partition it came from.
    pub fn storage(topic: &str, partition: u32, source: StorageError) -> Self {
        Self::refused_batch(source).unwrap_or_else(|source| BrokerError::Storage {
            topic: topic.to_owned(),
            partition,
            source,
        })
    }

    /// The client's error a storage error stands for when it refused a batch (too
    /// large, malformed, a record too large); any other storage error back.
    pub fn refused_batch(source: StorageError) -> Result<Self, StorageError> {
        match source {
            StorageError::InvalidBatch(RecordError::RecordTooLarge { size, limit }) => {
                Ok(BrokerError::MessageTooLarge { size, limit })
            }
            StorageError::InvalidBatch(err) => Ok(BrokerError::CorruptBatch(err)),
            StorageError::BatchTooLarge { size, limit } => {
                Ok(BrokerError::BatchTooLarge { size, limit })
            }
            source => Err(source),
        }
    }
}

impl BrokerError {
    /// Wraps a storage error with the queue it came from.
    pub fn queue_storage(queue: &str, source: StorageError) -> Self {
        match source {
            StorageError::InvalidBatch(RecordError::RecordTooLarge { size, limit }) => {
                BrokerError::MessageTooLarge { size, limit }
            }
            StorageError::BatchTooLarge { size, limit } => {
                BrokerError::BatchTooLarge { size, limit }
            }
            source => BrokerError::QueueStorage {
                queue: queue.to_owned(),
                source,
            },
        }
    }
}

/// Result alias for broker operations.
pub type BrokerResult<T> = Result<T, BrokerError>;

/// Where a partition's leader can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderLocation {
    /// The leader's host id.
    pub host_id: String,
    /// Its advertised gRPC address.
    pub address: String,
    /// The epoch it leads in.
    pub leader_epoch: u64,
}

fn leader_text(leader: &Option<LeaderLocation>) -> String {
    match leader {
        Some(leader) => format!(
            "; its leader is {} at {} (epoch {})",
            leader.host_id, leader.address, leader.leader_epoch
        ),
        None => "; it has no leader right now".into(),
    }
}
