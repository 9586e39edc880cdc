//! Topics: partitioned, durable, replayable logs with produce and long-poll fetch.

mod fetch;
mod produce;
mod registry;
mod settings;

pub use fetch::{
    FetchLimits, FetchTarget, FetchedData, FetchedPartition, fetch, validate as validate_fetch,
};
// A topic partition is a replicated log; so are a queue's two logs.
pub use crate::replicated_log::{
    Ack, QUEUE_JOURNAL_LOG, QUEUE_MESSAGES_LOG, ReplicaSets, ReplicatedLog, STANDALONE_LEADER_EPOCH,
};
pub use produce::{
    BatchOutcome, IncomingBatch, IncomingMessage, IncomingPartitionMessages, PartitionScope,
    ProduceInput, ProduceOutcome, produce,
};
pub use registry::{Topic, Topics};
pub use settings::{
    DurabilitySetting, MIN_SEGMENT_BYTES, ReplicationSetting, TopicOverrides, TopicRecord,
    TopicSettings,
};
