//! Topics: partitioned, durable, replayable logs with produce and long-poll fetch.

mod fetch;
mod partition;
mod produce;
mod registry;
mod settings;

pub use fetch::{FetchLimits, FetchTarget, FetchedData, FetchedPartition, fetch};
pub use partition::{Partition, STANDALONE_LEADER_EPOCH};
pub use produce::{BatchOutcome, IncomingBatch, IncomingMessage, ProduceOutcome, produce};
pub use registry::{Topic, Topics};
pub use settings::{
    DurabilitySetting, ReplicationSetting, TopicOverrides, TopicRecord, TopicSettings,
};
