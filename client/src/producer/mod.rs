//! The batching, idempotent producer.
//!
//! `send` encodes the record straight into its partition's open batch (under a short
//! lock, no per-record channel or allocation) and returns a [`DeliveryFuture`]. A
//! background sender task ships batches when they are full or have lingered, one
//! request in flight per partition, and retries retriable failures until the delivery
//! timeout. See `sender.rs` for the ordering and idempotence invariants.

mod accumulator;
mod delivery;
mod sender;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::connection::Client;
use crate::error::ClientError;
use crate::types::{Record, RecordRef};
use accumulator::{Accumulator, BatchLimits};
use sender::{Command, Sender, SenderConfig, Shared};

pub use delivery::{BatchDelivery, DeliveryFuture};

/// How keyless records are spread over partitions (keyed records always go to
/// `partition_for_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioner {
    /// Fill one partition's batch, then move to the next partition: large batches.
    #[default]
    Sticky,
    /// Each record to the next partition in turn: even spread, smaller batches.
    RoundRobin,
}

/// Producer settings. `ProducerConfig::default()` is tuned for throughput with
/// exactly-once appends per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// How long a batch waits for more records before it is sent (default 5 ms).
    pub linger: Duration,
    /// Records per batch at most (default 10 000).
    pub max_batch_records: u32,
    /// Encoded bytes per batch at most (default 1 MiB); a larger single record goes
    /// alone in its batch.
    pub max_batch_bytes: usize,
    /// Bytes of batches packed into one produce request at most (default 16 MiB).
    pub max_request_bytes: usize,
    /// Stamp batches with a producer id and sequence so retries are never stored twice
    /// (default true).
    pub idempotent: bool,
    /// How keyless records pick a partition (default sticky).
    pub partitioner: Partitioner,
    /// Give up on a record this long after it was batched (default 60 s).
    pub delivery_timeout: Duration,
    /// First retry delay, doubling per attempt (default 50 ms).
    pub retry_backoff: Duration,
    /// Longest retry delay (default 1 s).
    pub retry_backoff_max: Duration,
    /// Records buffered (batched or in flight) at most; `send` waits beyond this
    /// (default 200 000).
    pub max_buffered_records: u32,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            max_batch_records: 10_000,
            max_batch_bytes: 1 << 20,
            max_request_bytes: 16 << 20,
            idempotent: true,
            partitioner: Partitioner::Sticky,
            delivery_timeout: Duration::from_secs(60),
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(1),
            max_buffered_records: 200_000,
        }
    }
}

impl ProducerConfig {
    /// Checks that every bound is usable.
    pub fn validate(&self) -> Result<(), ClientError> {
        let fail = |reason: &str| Err(ClientError::InvalidArgument(reason.to_owned()));
        if self.max_batch_records == 0 {
            return fail("max_batch_records must be at least 1");
        }
        if self.max_batch_bytes < 1024 {
            return fail("max_batch_bytes must be at least 1 KiB");
        }
        if self.max_request_bytes < self.max_batch_bytes {
            return fail("max_request_bytes must be at least max_batch_bytes");
        }
        if self.max_buffered_records < self.max_batch_records {
            return fail("max_buffered_records must be at least max_batch_records");
        }
        if self.delivery_timeout.is_zero() {
            return fail("delivery_timeout must be positive");
        }
        if self.retry_backoff.is_zero() || self.retry_backoff_max < self.retry_backoff {
            return fail("retry_backoff must be positive and at most retry_backoff_max");
        }
        Ok(())
    }
}

/// `headers` with the trace-context fields added that it does not carry yet;
/// `None` when there is nothing to add (outside a traced span, the common case).
fn with_trace_context<'a>(
    headers: &'a [(&'a str, &'a [u8])],
    trace_context: &'a [(String, String)],
) -> Option<Vec<(&'a str, &'a [u8])>> {
    if trace_context.is_empty() {
        return None;
    }
    let mut extended = headers.to_vec();
    for (name, value) in trace_context {
        if !headers.iter().any(|(header, _)| header == name) {
            extended.push((name.as_str(), value.as_bytes()));
        }
    }
    Some(extended)
}

/// Sends records to one topic. Cheap to clone; clones share batches and the sender
/// task. Dropping every clone delivers what is buffered in the background; call
/// [`Producer::close`] to wait for it.
#[derive(Debug, Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    topic: Arc<str>,
    partitions: u32,
    max_buffered_records: u32,
}

impl Producer {
    /// Creates a producer for `topic`: looks up its partitions and, when idempotent,
    /// gets a producer id. Must be called inside a Tokio runtime. Made inside a
    /// traced span, its produce requests are spans of that trace.
    pub async fn new(
        client: &Client,
        topic: &str,
        config: ProducerConfig,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        let partitions = client.describe_topic(topic).await?.partition_count();
        if partitions == 0 {
            return Err(ClientError::Protocol(format!(
                "topic '{topic}' has no partitions"
            )));
        }
        let identity = if config.idempotent {
            Some(client.init_producer().await?)
        } else {
            None
        };
        let limits = BatchLimits {
            max_records: config.max_batch_records,
            max_bytes: config.max_batch_bytes,
            linger: config.linger,
        };
        let shared = Arc::new(Shared {
            accumulator: Mutex::new(Accumulator::new(partitions, config.partitioner, limits)),
            wake: Notify::new(),
            permits: Semaphore::new(config.max_buffered_records as usize),
            closed: AtomicBool::new(false),
        });
        let topic: Arc<str> = topic.into();
        let (commands, receiver) = mpsc::unbounded_channel();
        let sender_config = SenderConfig {
            idempotent: config.idempotent,
            delivery_timeout: config.delivery_timeout,
            retry_backoff: config.retry_backoff,
            retry_backoff_max: config.retry_backoff_max,
            max_request_bytes: config.max_request_bytes,
        };
        let sender = Sender::new(
            client.clone(),
            Arc::clone(&topic),
            Arc::clone(&shared),
            sender_config,
            identity,
            partitions,
            receiver,
        );
        // Its requests are spans of the trace this producer was made in, if any.
        tokio::spawn(ferry_telemetry::propagation::in_current_trace(sender.run()));
        Ok(Self {
            shared,
            commands,
            topic,
            partitions,
            max_buffered_records: config.max_buffered_records,
        })
    }

    /// The topic this producer writes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's partition count when the producer was created.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Queues one record; waits only when `max_buffered_records` are buffered. The
    /// returned future resolves when the broker acknowledged (or finally refused) it.
    pub async fn send(&self, record: Record) -> Result<DeliveryFuture, ClientError> {
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_ref()))
            .collect();
        let record = RecordRef {
            key: record.key.as_deref(),
            value: &record.value,
            headers: &headers,
            timestamp_ms: record.timestamp_ms,
        };
        self.send_ref(record).await
    }

    /// Like [`Producer::send`], borrowing the record: its bytes are copied into the batch.
    /// Inside a traced span the record carries its context (a `traceparent` header).
    pub async fn send_ref(&self, record: RecordRef<'_>) -> Result<DeliveryFuture, ClientError> {
        self.reserve(1).await?;
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let trace_context = ferry_telemetry::propagation::current_context_fields();
        let headers = with_trace_context(record.headers, &trace_context);
        let record = RecordRef {
            headers: headers.as_deref().unwrap_or(record.headers),
            ..record
        };
        let appended = {
            let mut accumulator = self.shared.accumulator();
            self.check_open_locked(1)?;
            accumulator.append(&record, timestamp_ms, Instant::now())
        };
        if appended.wake_sender {
            self.shared.wake.notify_one();
        }
        Ok(DeliveryFuture::new(appended.outcome, appended.index))
    }

    /// Queues many records under one lock and one buffer reservation: the fastest way
    /// in. Records without a timestamp share one clock reading.
    pub async fn send_batch(
        &self,
        records: &[RecordRef<'_>],
    ) -> Result<BatchDelivery, ClientError> {
        let count = u32::try_from(records.len())
            .ok()
            .filter(|&n| n <= self.max_buffered_records)
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "send_batch of {} records exceeds max_buffered_records ({})",
                    records.len(),
                    self.max_buffered_records
                ))
            })?;
        let mut delivery = BatchDelivery::new();
        if count == 0 {
            return Ok(delivery);
        }
        self.reserve(count).await?;
        let now = Instant::now();
        let clock_ms = now_ms();
        let trace_context = ferry_telemetry::propagation::current_context_fields();
        let mut wake = false;
        {
            let mut accumulator = self.shared.accumulator();
            self.check_open_locked(count)?;
            for record in records {
                let timestamp_ms = record.timestamp_ms.unwrap_or(clock_ms);
                let headers = with_trace_context(record.headers, &trace_context);
                let record = RecordRef {
                    headers: headers.as_deref().unwrap_or(record.headers),
                    ..*record
                };
                let appended = accumulator.append(&record, timestamp_ms, now);
                wake |= appended.wake_sender;
                delivery.push(&appended.outcome, appended.index);
            }
        }
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(delivery)
    }

    /// Fails (returning `count` reserved permits) once the producer is closed. Called
    /// with the accumulator locked: the sender decides to stop under that lock after
    /// `closed` is set, so a record appended here is always delivered.
    fn check_open_locked(&self, count: u32) -> Result<(), ClientError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            self.shared.permits.add_permits(count as usize);
            return Err(ClientError::Closed("producer"));
        }
        Ok(())
    }

    /// Takes `count` buffer permits, waiting for deliveries to free them.
    async fn reserve(&self, count: u32) -> Result<(), ClientError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed("producer"));
        }
        let permits = match self.shared.permits.try_acquire_many(count) {
            Ok(permits) => permits,
            Err(_) => self
                .shared
                .permits
                .acquire_many(count)
                .await
                .map_err(|_| ClientError::Closed("producer"))?,
        };
        // The sender returns the permits when the batch resolves, not on drop.
        permits.forget();
        Ok(())
    }

    /// Sends everything buffered now and waits until all of it is acknowledged or
    /// failed (check the delivery futures for which).
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Flush(done))
            .map_err(|_| ClientError::Closed("producer"))?;
        wait.await.map_err(|_| ClientError::Closed("producer"))
    }

    /// Refuses further sends, delivers everything buffered and stops the sender task.
    pub async fn close(&self) -> Result<(), ClientError> {
        self.shared.closed.store(true, Ordering::SeqCst);
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Close(done))
            .map_err(|_| ClientError::Closed("producer"))?;
        wait.await.map_err(|_| ClientError::Closed("producer"))
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_bad_bounds_are_rejected() {
        assert!(ProducerConfig::default().validate().is_ok());
        let config = ProducerConfig {
            max_buffered_records: 10,
            ..ProducerConfig::default()
        };
        assert!(config.validate().is_err());
        let config = ProducerConfig {
            max_batch_records: 0,
            ..ProducerConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
