//! The Ferry client: admin calls, a batching idempotent [`Producer`] and a
//! consumer-group [`Consumer`] for topics, and queue calls on [`Client`] (send,
//! receive, ack), over the `ferry.v1` gRPC API.
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
//! Queues are plain calls on [`Client`]; receipt calls answer per receipt:
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::ClientError> {
//! use std::time::Duration;
//! use ferry_client::{Client, OutgoingMessage, QueueSettings, ReceiveOptions};
//!
//! let client = Client::connect("127.0.0.1:7070").await?;
//! client.create_queue("jobs", &QueueSettings::new()).await?;
//! client.send("jobs", vec![OutgoingMessage::new("work").with_attribute("kind", "a")]).await?;
//! let options = ReceiveOptions::new(10).with_wait(Duration::from_secs(5));
//! let messages = client.receive("jobs", &options).await?;
//! for result in client.ack("jobs", messages.iter().map(|m| &m.receipt)).await? {
//!     result?; // RECEIPT_STALE: the message was received again since
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Bird's-eye view: `connection` owns the gRPC channel and one method per broker
//! call (topics, groups, queues); `producer` batches and sends; `consumer` fetches,
//! decodes and follows the group protocol; `error` turns broker statuses into
//! [`ClientError`].

mod connection;
mod consumer;
mod error;
mod producer;
mod types;

pub use connection::{
    AccessRule, BatchAck, BearerToken, CallerIdentity, Client, ClientConfig, ClusterMetadata,
    DeadLetterOrigin, Durability, FetchOptions, FetchTarget, FetchedPartition, GroupDescription,
    GroupMember, HostInfo, OutgoingMessage, PartitionLag, PartitionPlacement, PartitionState,
    ProducerIdentity, QueueDescription, QueueMessage, QueueSettings, QueueStats, Quota,
    ReceiveOptions, ReplicationMode, ResourcePlacement, SendReceipt, TlsOptions, TopicDescription,
    TopicSettings,
};
pub use consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
pub use error::ClientError;
pub use ferry_proto::v1::ErrorCode;
pub use producer::{BatchDelivery, DeliveryFuture, Partitioner, Producer, ProducerConfig};
pub use types::{
    ConsumedRecord, OffsetSpec, PartitionOffset, Record, RecordMetadata, RecordRef, TopicPartition,
};
