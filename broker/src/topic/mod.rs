//! Topics: partitioned, durable, replayable logs with produce and long-poll fetch.

mod fetch;
mod partition;
mod produce;
mod registry;
mod settings;

pub use fetch::{FetchLimits, FetchTarget, FetchedData, FetchedPartition, fetch};
pub use partition::{
    Ack, Partition, QUEUE_JOURNAL_LOG, QUEUE_MESSAGES_LOG, ReplicaSets, STANDALONE_LEADER_EPOCH,
};
pub use produce::{
    BatchOutcome, IncomingBatch, IncomingMessage, PartitionScope, ProduceOutcome, produce,
};
pub use registry::{Topic, Topics};
pub use settings::{
    DurabilitySetting, MIN_SEGMENT_BYTES, ReplicationSetting, TopicOverrides, TopicRecord,
    TopicSettings,
};
