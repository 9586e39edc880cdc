//! The producer's background task: takes batches from the accumulator, stamps them
//! with the idempotent producer's sequence numbers, sends them, retries, and resolves
//! their delivery futures.
//!
//! Invariant: at most one request per partition is in flight. That keeps batches of a
//! partition in order across retries, and lets a batch's sequence be decided when it
//! is first sent (the previous batch's outcome is known by then), so a batch the
//! broker rejected leaves no gap in the sequence.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_proto::v1::ErrorCode;
use ferry_records::{BatchBuilder, ProducerStamp};
use ferry_telemetry::propagation::in_current_trace;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};

use super::accumulator::{Accumulator, ClosedBatch};
use super::delivery::BatchOutcome;
use crate::connection::{BatchAck, Client, ProducerIdentity};
use crate::error::ClientError;

/// State shared between the producer handles and the sender task.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Open and completed batches. A std mutex: it is held only while encoding one
    /// record or draining, never across an await.
    pub accumulator: Mutex<Accumulator>,
    /// Pokes the sender when a batch opens or completes.
    pub wake: Notify,
    /// One permit per record the producer may still buffer: the backpressure bound.
    pub permits: Semaphore,
    /// Set by `close`; later sends fail.
    pub closed: AtomicBool,
}

impl Shared {
    pub(crate) fn accumulator(&self) -> MutexGuard<'_, Accumulator> {
        // Appends and drains leave the accumulator consistent at every await-free
        // step, so a panic elsewhere while holding it does not make it unusable.
        self.accumulator
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Requests from producer handles to the sender task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send every buffered record now; answer when all of them are resolved.
    Flush(oneshot::Sender<()>),
    /// Like flush, then stop.
    Close(oneshot::Sender<()>),
}

/// Sending and retry settings, taken from the producer configuration.
#[derive(Debug, Clone)]
pub(crate) struct SenderConfig {
    pub idempotent: bool,
    pub delivery_timeout: Duration,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub max_request_bytes: usize,
}

#[derive(Debug)]
enum Payload {
    Unsent(BatchBuilder),
    Encoded(Bytes),
}

#[derive(Debug)]
struct PendingBatch {
    id: u64,
    record_count: u32,
    payload: Payload,
    /// The identity and base sequence written into the batch when it was first sent.
    stamp: Option<ProducerStamp>,
    outcome: Arc<BatchOutcome>,
    created: Instant,
    attempts: u32,
    last_error: Option<ClientError>,
}

#[derive(Debug, Default)]
struct Lane {
    queue: VecDeque<PendingBatch>,
    in_flight: bool,
    retry_at: Option<Instant>,
    next_sequence: i32,
}

type ProduceResult = Result<Vec<Result<BatchAck, ClientError>>, ClientError>;

/// The sender task's state.
pub(crate) struct Sender {
    client: Client,
    topic: Arc<str>,
    shared: Arc<Shared>,
    config: SenderConfig,
    identity: Option<ProducerIdentity>,
    identity_stale: bool,
    identity_retry_at: Option<Instant>,
    lanes: Vec<Lane>,
    in_flight: JoinSet<ProduceResult>,
    in_flight_partitions: HashMap<tokio::task::Id, Vec<u32>>,
    unresolved: BTreeSet<u64>,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    force_drain: bool,
    unassigned_flushes: Vec<oneshot::Sender<()>>,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    close_waiters: Vec<oneshot::Sender<()>>,
    closing: bool,
}

impl Sender {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Client,
        topic: Arc<str>,
        shared: Arc<Shared>,
        config: SenderConfig,
        identity: Option<ProducerIdentity>,
        partitions: u32,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        Self {
            client,
            topic,
            shared,
            config,
            identity,
            identity_stale: false,
            identity_retry_at: None,
            lanes: (0..partitions.max(1)).map(|_| Lane::default()).collect(),
            in_flight: JoinSet::new(),
            in_flight_partitions: HashMap::new(),
            unresolved: BTreeSet::new(),
            commands,
            commands_open: true,
            force_drain: false,
            unassigned_flushes: Vec::new(),
            flush_waiters: Vec::new(),
            close_waiters: Vec::new(),
            closing: false,
        }
    }

    /// Runs until closed (or every producer handle is dropped) and nothing is pending.
    pub(crate) async fn run(mut self) {
        loop {
            let next_deadline = self.take_batches();
            self.refresh_identity().await;
            self.dispatch();
            self.answer_flushes();
            if self.closing && self.is_idle() {
                break;
            }
            let wake_at = [next_deadline, self.next_retry(), self.identity_retry_at]
                .into_iter()
                .flatten()
                .min();
            self.wait(wake_at).await;
        }
        // Wake sends still waiting for buffer space: they fail as closed.
        self.shared.permits.close();
        for (_, waiter) in self.flush_waiters.drain(..) {
            let _ = waiter.send(());
        }
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn is_idle(&self) -> bool {
        self.unresolved.is_empty()
            && self.in_flight.is_empty()
            && self.shared.accumulator().is_empty()
    }

    async fn wait(&mut self, wake_at: Option<Instant>) {
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                self.on_response(joined);
            }
            command = self.commands.recv(), if self.commands_open => self.on_command(command),
            () = self.shared.wake.notified() => {}
            () = sleep => {}
        }
    }

    fn on_command(&mut self, command: Option<Command>) {
        match command {
            Some(Command::Flush(waiter)) => {
                self.force_drain = true;
                self.unassigned_flushes.push(waiter);
            }
            Some(Command::Close(waiter)) => {
                self.closing = true;
                self.close_waiters.push(waiter);
            }
            // Every handle is gone: deliver what is buffered, then stop.
            None => {
                self.commands_open = false;
                self.closing = true;
            }
        }
    }

    /// Moves batches from the accumulator into the partition lanes; returns the next
    /// linger deadline.
    fn take_batches(&mut self) -> Option<std::time::Instant> {
        let force = self.force_drain || self.closing;
        let lanes = &self.lanes;
        let (drained, next_id) = {
            let mut accumulator = self.shared.accumulator();
            let drained = accumulator.drain(Instant::now(), force, |partition| {
                lanes
                    .get(partition as usize)
                    .is_some_and(|lane| !lane.in_flight && lane.queue.is_empty())
            });
            (drained, accumulator.next_batch_id())
        };
        if self.force_drain {
            self.force_drain = false;
            for waiter in self.unassigned_flushes.drain(..) {
                self.flush_waiters.push((next_id, waiter));
            }
        }
        for batch in drained.batches {
            self.enqueue(batch);
        }
        drained.next_deadline
    }

    fn enqueue(&mut self, batch: ClosedBatch) {
        self.unresolved.insert(batch.id);
        let pending = PendingBatch {
            id: batch.id,
            record_count: batch.builder.record_count(),
            payload: Payload::Unsent(batch.builder),
            stamp: None,
            outcome: batch.outcome,
            created: batch.created,
            attempts: 0,
            last_error: None,
        };
        match self.lanes.get_mut(batch.partition as usize) {
            Some(lane) => lane.queue.push_back(pending),
            None => {
                // The accumulator only produces partitions below the lane count.
                let err = ClientError::InvalidArgument(format!("no partition {}", batch.partition));
                self.finish(pending, Err(err));
            }
        }
    }

    /// Answers flush waiters whose batches are all resolved.
    fn answer_flushes(&mut self) {
        let oldest = self.unresolved.first().copied().unwrap_or(u64::MAX);
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .flush_waiters
            .drain(..)
            .partition(|(target, _)| oldest >= *target);
        self.flush_waiters = waiting;
        for (_, waiter) in done {
            let _ = waiter.send(());
        }
    }

    /// Gets a fresh producer id after a failure left the old sequence state unknown.
    async fn refresh_identity(&mut self) {
        if !self.config.idempotent || !self.identity_stale {
            return;
        }
        if self.identity_retry_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        match self.client.init_producer().await {
            Ok(identity) => {
                tracing::info!(
                    producer_id = identity.producer_id,
                    "producer re-initialized"
                );
                self.identity = Some(identity);
                self.identity_stale = false;
                self.identity_retry_at = None;
                for lane in &mut self.lanes {
                    lane.next_sequence = 0;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "InitProducer failed; retrying");
                self.identity = None;
                self.identity_retry_at = Some(Instant::now() + self.config.retry_backoff_max);
            }
        }
    }

    fn next_retry(&self) -> Option<Instant> {
        self.lanes
            .iter()
            .filter(|lane| !lane.in_flight && !lane.queue.is_empty())
            .filter_map(|lane| lane.retry_at)
            .min()
    }

    /// Sends the head batch of every idle lane, packed into requests of bounded size.
    fn dispatch(&mut self) {
        let now = Instant::now();
        self.expire_waiting(now);
        if self.config.idempotent && (self.identity.is_none() || self.identity_stale) {
            return;
        }
        let mut request: Vec<(u32, Bytes)> = Vec::new();
        let mut request_bytes = 0usize;
        for partition in 0..self.lanes.len() {
            let lane = &mut self.lanes[partition];
            if lane.in_flight || lane.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            let next_sequence = lane.next_sequence;
            let Some(head) = lane.queue.front_mut() else {
                continue;
            };
            let bytes = encode(
                head,
                self.identity.filter(|_| self.config.idempotent),
                next_sequence,
            );
            if !request.is_empty() && request_bytes + bytes.len() > self.config.max_request_bytes {
                self.send(std::mem::take(&mut request));
                request_bytes = 0;
            }
            let lane = &mut self.lanes[partition];
            lane.in_flight = true;
            lane.retry_at = None;
            request_bytes += bytes.len();
            request.push((partition as u32, bytes));
        }
        if !request.is_empty() {
            self.send(request);
        }
    }

    /// Fails head batches that waited past their delivery timeout without being sent
    /// (while backing off, or while no producer id could be obtained).
    fn expire_waiting(&mut self, now: Instant) {
        for partition in 0..self.lanes.len() {
            loop {
                let lane = &mut self.lanes[partition];
                let expired = !lane.in_flight
                    && lane
                        .queue
                        .front()
                        .is_some_and(|head| head.created + self.config.delivery_timeout <= now);
                if !expired {
                    break;
                }
                let Some(head) = lane.queue.pop_front() else {
                    break;
                };
                lane.retry_at = None;
                if self.config.idempotent && head.attempts > 0 {
                    self.identity_stale = true;
                }
                let err = timeout_error(&self.config, head.last_error.as_ref());
                self.finish(head, Err(err));
            }
        }
    }

    fn send(&mut self, request: Vec<(u32, Bytes)>) {
        let client = self.client.clone();
        let topic = Arc::clone(&self.topic);
        let partitions: Vec<u32> = request.iter().map(|(partition, _)| *partition).collect();
        let handle = self.in_flight.spawn(in_current_trace(async move {
            client.produce_batches(&topic, &request).await
        }));
        self.in_flight_partitions.insert(handle.id(), partitions);
    }

    fn on_response(&mut self, joined: Result<(tokio::task::Id, ProduceResult), JoinError>) {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(err) => (
                err.id(),
                Err(ClientError::Protocol(format!("produce task failed: {err}"))),
            ),
        };
        let Some(partitions) = self.in_flight_partitions.remove(&id) else {
            return;
        };
        match result {
            Ok(results) => {
                for (partition, result) in partitions.into_iter().zip(results) {
                    self.on_batch_result(partition, result);
                }
            }
            Err(err) => {
                for partition in partitions {
                    self.on_batch_result(partition, Err(err.clone()));
                }
            }
        }
    }

    fn on_batch_result(&mut self, partition: u32, result: Result<BatchAck, ClientError>) {
        let Some(lane) = self.lanes.get_mut(partition as usize) else {
            return;
        };
        lane.in_flight = false;
        match result {
            Ok(ack) => {
                let Some(head) = lane.queue.pop_front() else {
                    return;
                };
                if let Some(stamp) = head.stamp
                    && self
                        .identity
                        .is_some_and(|id| id.producer_id == stamp.producer_id)
                {
                    lane.next_sequence = stamp.base_sequence.wrapping_add(head.record_count as i32);
                }
                if ack.last_offset.wrapping_sub(ack.base_offset) + 1 != u64::from(head.record_count)
                {
                    tracing::warn!(
                        partition,
                        base = ack.base_offset,
                        last = ack.last_offset,
                        records = head.record_count,
                        "acknowledged offsets do not match the batch size"
                    );
                }
                self.finish(head, Ok(ack.base_offset));
            }
            Err(err) => self.on_batch_failure(partition, err),
        }
    }

    fn on_batch_failure(&mut self, partition: u32, err: ClientError) {
        let now = Instant::now();
        let Some(lane) = self.lanes.get_mut(partition as usize) else {
            return;
        };
        let Some(head) = lane.queue.front_mut() else {
            return;
        };
        head.attempts += 1;
        let backoff = backoff(&self.config, head.attempts, err.retry_after_ms());
        let expires = head.created + self.config.delivery_timeout;
        if err.is_retriable() && now + backoff < expires {
            tracing::debug!(partition, attempts = head.attempts, error = %err, "retrying batch");
            head.last_error = Some(err);
            lane.retry_at = Some(now + backoff);
            return;
        }
        let Some(head) = lane.queue.pop_front() else {
            return;
        };
        lane.retry_at = None;
        // A retriable failure that ran out of time may or may not have been stored, and
        // the sequence-state errors mean the broker and we disagree: either way, start
        // over with a new producer id rather than guess the next sequence.
        let sequence_unknown = err.is_retriable()
            || [
                ErrorCode::OutOfOrderSequence,
                ErrorCode::UnknownProducer,
                ErrorCode::ProducerFenced,
            ]
            .into_iter()
            .any(|code| err.is(code));
        if self.config.idempotent && sequence_unknown {
            self.identity_stale = true;
        }
        let err = if err.is_retriable() {
            timeout_error(&self.config, Some(&err))
        } else {
            err
        };
        self.finish(head, Err(err));
    }

    /// Resolves a batch's futures and returns its records' buffer permits.
    fn finish(&mut self, batch: PendingBatch, result: Result<u64, ClientError>) {
        batch.outcome.resolve(result);
        self.unresolved.remove(&batch.id);
        self.shared.permits.add_permits(batch.record_count as usize);
    }
}

/// The batch's bytes, encoding and stamping it on first use so retries resend the
/// identical bytes.
fn encode(
    batch: &mut PendingBatch,
    identity: Option<ProducerIdentity>,
    next_sequence: i32,
) -> Bytes {
    let payload = std::mem::replace(&mut batch.payload, Payload::Encoded(Bytes::new()));
    let bytes = match payload {
        Payload::Encoded(bytes) => bytes,
        Payload::Unsent(mut builder) => {
            batch.stamp = identity.map(|id| ProducerStamp {
                producer_id: id.producer_id,
                producer_epoch: id.producer_epoch,
                base_sequence: next_sequence,
            });
            builder.set_producer(batch.stamp);
            // `finish` is `None` only for an empty builder, and closed batches hold at
            // least one record.
            Bytes::from(builder.finish().unwrap_or_default())
        }
    };
    batch.payload = Payload::Encoded(bytes.clone());
    bytes
}

/// Exponential backoff from `retry_backoff`, capped, unless the broker asked for a delay.
fn backoff(config: &SenderConfig, attempts: u32, retry_after_ms: u32) -> Duration {
    if retry_after_ms > 0 {
        return Duration::from_millis(u64::from(retry_after_ms));
    }
    let factor = 1u32 << attempts.saturating_sub(1).min(10);
    (config.retry_backoff * factor).min(config.retry_backoff_max)
}

fn timeout_error(config: &SenderConfig, last: Option<&ClientError>) -> ClientError {
    ClientError::DeliveryTimeout {
        timeout_ms: config.delivery_timeout.as_millis() as u64,
        last_error: last.map_or_else(|| "not sent".to_owned(), ToString::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SenderConfig {
        SenderConfig {
            idempotent: true,
            delivery_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(1),
            max_request_bytes: 1 << 20,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_the_hint() {
        let config = config();
        assert_eq!(backoff(&config, 1, 0), Duration::from_millis(50));
        assert_eq!(backoff(&config, 3, 0), Duration::from_millis(200));
        assert_eq!(backoff(&config, 30, 0), Duration::from_secs(1));
        assert_eq!(backoff(&config, 3, 7), Duration::from_millis(7));
    }

    #[test]
    fn a_batch_is_stamped_once_and_resent_identically() {
        let mut builder = BatchBuilder::new();
        builder.push(None, b"a", &[], 1);
        builder.push(None, b"b", &[], 2);
        let mut batch = PendingBatch {
            id: 0,
            record_count: 2,
            payload: Payload::Unsent(builder),
            stamp: None,
            outcome: BatchOutcome::new(0),
            created: Instant::now(),
            attempts: 0,
            last_error: None,
        };
        let identity = ProducerIdentity {
            producer_id: 7,
            producer_epoch: 1,
        };
        let first = encode(&mut batch, Some(identity), 40);
        let again = encode(&mut batch, Some(identity), 99);
        assert_eq!(first, again);
        let header = ferry_records::Batches::new(&first)
            .next()
            .and_then(Result::ok)
            .map(|b| b.header);
        assert_eq!(
            header.map(|h| (h.producer_id, h.base_sequence)),
            Some((7, 40))
        );
    }
}
