//! The Ferry client: admin calls, a batching idempotent [`Producer`] and a
//! consumer-group [`Consumer`], over the `ferry.v1` gRPC API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::ClientError> {
//! use ferry_client::{Client, Producer, ProducerConfig, Record, TopicSettings};
//!
//! let client = Client::connect("127.0.0.1:7070").await?;
//! client.create_topic("events", &TopicSettings::new(3)).await?;
//! let producer = Producer::new(&client, "events", ProducerConfig::default()).await?;
//! let delivery = producer.send(Record::new("hello").with_key("user-1")).await?;
//! let stored = delivery.await?;
//! println!("stored at {}/{}", stored.partition, stored.offset);
//! producer.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Bird's-eye view: `connection` owns the gRPC channel and one method per broker
//! call; `producer` batches and sends; `consumer` fetches, decodes and follows the
//! group protocol; `error` turns broker statuses into [`ClientError`].

mod connection;
mod consumer;
mod error;
mod producer;
mod types;

pub use connection::{
    BatchAck, Client, ClientConfig, DeadLetterOrigin, Durability, FetchOptions, FetchTarget,
    FetchedPartition, GroupDescription, GroupMember, OutgoingMessage, PartitionLag, PartitionState,
    ProducerIdentity, QueueDescription, QueueMessage, QueueSettings, QueueStats, ReceiveOptions,
    ReplicationMode, SendReceipt, TopicDescription, TopicSettings,
};
pub use consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
pub use error::ClientError;
pub use ferry_proto::v1::ErrorCode;
pub use producer::{BatchDelivery, DeliveryFuture, Partitioner, Producer, ProducerConfig};
pub use types::{
    ConsumedRecord, OffsetSpec, PartitionOffset, Record, RecordMetadata, RecordRef, TopicPartition,
};
