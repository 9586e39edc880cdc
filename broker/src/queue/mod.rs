//! Point-to-point queues on the storage engine: each message goes to one consumer,
//! is redelivered when not acked in time, and is dead-lettered after too many
//! receives. Layout and recovery are described in `docs/queues.md`.

pub mod codec;
mod instance;
pub mod receipt;
mod registry;
mod settings;
pub mod state;

pub use instance::{
    DeliveredMessage, MAX_ID_LEN, OutgoingMessage, Queue, QueueMode, QueueStats, ReceiveOptions,
    SendOutcome, Settle, SnapshotChunk, SnapshotId,
};
pub use registry::{Housekeeping, QueueCluster, Queues, ReceiveRequest};
pub use settings::{QueueOverrides, QueueRecord, QueueSettings};
pub use state::ReceiptError;

#[cfg(test)]
mod disk_full_tests;
#[cfg(test)]
mod tests;
