//! Records and partitions: the values producers send and consumers receive.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number, from 0.
    pub partition: u32,
}

impl TopicPartition {
    /// A partition of a topic.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

impl From<ferry_proto::v1::TopicPartition> for TopicPartition {
    fn from(tp: ferry_proto::v1::TopicPartition) -> Self {
        Self::new(tp.topic, tp.partition)
    }
}

impl From<&TopicPartition> for ferry_proto::v1::TopicPartition {
    fn from(tp: &TopicPartition) -> Self {
        Self {
            topic: tp.topic.clone(),
            partition: tp.partition,
        }
    }
}

/// A record to produce, owning its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Partitioning key; records with the same key go to the same partition.
    pub key: Option<Bytes>,
    /// Payload.
    pub value: Bytes,
    /// Annotations (name, value).
    pub headers: Vec<(String, Bytes)>,
    /// Creation time in ms since the Unix epoch; the producer's clock when `None`.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// A keyless record with only a value.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Self {
            value: value.into(),
            ..Self::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the creation timestamp.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// A record to produce, borrowing its bytes: the fast path, since the producer copies
/// records into the batch encoding anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Partitioning key.
    pub key: Option<&'a [u8]>,
    /// Payload.
    pub value: &'a [u8],
    /// Annotations (name, value).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Creation time in ms since the Unix epoch; the producer's clock when `None`.
    pub timestamp_ms: Option<i64>,
}

impl<'a> RecordRef<'a> {
    /// A keyless record with only a value.
    pub fn new(value: &'a [u8]) -> Self {
        Self {
            value,
            ..Self::default()
        }
    }

    /// A keyed record.
    pub fn keyed(key: &'a [u8], value: &'a [u8]) -> Self {
        Self {
            key: Some(key),
            value,
            ..Self::default()
        }
    }
}

/// Where a produced record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordMetadata {
    /// The partition it went to.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
}

/// A record returned by a consumer. Key and value share the fetched buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic it came from (shared among the records of one partition).
    pub topic: Arc<str>,
    /// Partition it came from.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Partitioning key, if any.
    pub key: Option<Bytes>,
    /// Payload.
    pub value: Bytes,
    /// Annotations (name, value).
    pub headers: Vec<(String, Bytes)>,
    /// Creation time in ms since the Unix epoch.
    pub timestamp_ms: i64,
}

impl ConsumedRecord {
    /// A span for processing this record, linked to the span that produced it when
    /// the producer was tracing (its `traceparent` header).
    pub fn process_span(&self) -> tracing::Span {
        let id = format!("{}/{}/{}", self.topic, self.partition, self.offset);
        ferry_telemetry::propagation::process_span(&self.topic, &id, |name| {
            self.headers
                .iter()
                .find(|(header, _)| header == name)
                .and_then(|(_, value)| std::str::from_utf8(value).ok())
                .map(str::to_owned)
        })
    }
}

/// Which offset of a partition to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still stored.
    Earliest,
    /// The offset the next produced record will get (the high watermark).
    Latest,
    /// The first offset whose record timestamp is at or after this (ms since the epoch).
    Timestamp(i64),
}

/// A resolved offset lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffset {
    /// Partition looked up.
    pub partition: u32,
    /// The offset found (the high watermark for a timestamp past the newest record).
    pub offset: u64,
    /// Timestamp of the record found, when one was.
    pub timestamp_ms: Option<i64>,
}
