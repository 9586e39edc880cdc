//! Produce: pick partitions, encode the convenience messages, append, collect results.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ferry_records::{BatchBuilder, Batches, ProducerStamp, partition_for_key};
use ferry_storage::{AppendOutcome, CheckedBatch};
use tokio::task::JoinSet;

use crate::clock::now_ms;
use crate::config::Limits;
use crate::error::{BrokerError, BrokerResult};
use crate::replicated_log::Ack;
use crate::topic::{ReplicatedLog, STANDALONE_LEADER_EPOCH, Topic};

/// A pre-encoded batch from a client.
#[derive(Debug)]
pub struct IncomingBatch {
    /// Target partition; the broker picks when `None`.
    pub partition: Option<u32>,
    /// Encoded record batch (a slice of the request, not a copy).
    pub records: Bytes,
}

/// A message for the broker to encode.
#[derive(Debug)]
pub struct IncomingMessage {
    /// Partitioning key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub value: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Creation time; now when `None`.
    pub timestamp_ms: Option<i64>,
}

/// Messages the client placed on one partition, for the broker to encode as one
/// batch (stamped with the producer's fields when idempotent).
#[derive(Debug)]
pub struct IncomingPartitionMessages {
    /// Target partition.
    pub partition: u32,
    /// The messages, in order.
    pub messages: Vec<IncomingMessage>,
    /// The idempotent producer's id, epoch and this entry's base sequence.
    pub producer: Option<ProducerStamp>,
}

/// Everything one produce request asks to store.
#[derive(Debug, Default)]
pub struct ProduceInput {
    /// Batches the client encoded.
    pub batches: Vec<IncomingBatch>,
    /// Messages the broker places and encodes.
    pub messages: Vec<IncomingMessage>,
    /// Messages the client placed, one batch per entry.
    pub partition_messages: Vec<IncomingPartitionMessages>,
}

/// Where one batch landed, or why it did not.
#[derive(Debug)]
pub struct BatchOutcome {
    /// The partition chosen.
    pub partition: u32,
    /// Offsets, or the error for this batch alone.
    pub result: BrokerResult<AppendOutcome>,
}

/// What a produce request achieved.
#[derive(Debug, Default)]
pub struct ProduceOutcome {
    /// One per incoming batch, in order.
    pub batches: Vec<BatchOutcome>,
    /// One per incoming message, in order: (partition, offset) or the batch's error.
    pub message_positions: Vec<BrokerResult<(u32, u64)>>,
    /// One per partition the messages went to, in order of first appearance.
    pub message_batches: Vec<BatchOutcome>,
    /// One per incoming partition-messages entry, in order.
    pub partition_message_batches: Vec<BatchOutcome>,
}

/// Which partitions a produce may write to, and when a write counts as done.
pub struct PartitionScope<'a> {
    /// The partitions writable here, or `None` for all of them (standalone). Keyless
    /// records go round-robin over these.
    pub writable: Option<Vec<u32>>,
    /// The leader epoch to stamp on a partition's batches, or why it is not writable
    /// here (in cluster mode, `NotLeader` with the leader's address).
    pub check: &'a (dyn Fn(u32) -> BrokerResult<u64> + Send + Sync),
    /// When an append is acknowledged.
    pub ack: Ack,
}

impl PartitionScope<'_> {
    /// Every partition, no checks, acknowledged once stored: a standalone host.
    pub const ALL: PartitionScope<'static> = PartitionScope {
        writable: None,
        check: &|_| Ok(STANDALONE_LEADER_EPOCH),
        ack: Ack::Leader,
    };

    /// The next partition for records without a (common) key.
    fn keyless(&self, topic: &Topic) -> BrokerResult<u32> {
        let turn = topic.next_round_robin();
        match &self.writable {
            None => Ok(turn),
            Some(writable) if writable.is_empty() => {
                (self.check)(turn)?;
                Ok(turn)
            }
            Some(writable) => Ok(writable[turn as usize % writable.len()]),
        }
    }
}

/// Appends a request's batches and messages to `topic`, within `scope`.
pub async fn produce(
    topic: &Topic,
    input: ProduceInput,
    limits: &Limits,
    scope: &PartitionScope<'_>,
) -> BrokerResult<ProduceOutcome> {
    let ProduceInput {
        mut batches,
        messages,
        partition_messages,
    } = input;
    if batches.is_empty() && messages.is_empty() && partition_messages.is_empty() {
        return Err(BrokerError::EmptyBatch);
    }
    let items = batches.len()
        + messages.len()
        + partition_messages
            .iter()
            .map(|entry| entry.messages.len())
            .sum::<usize>();
    if items > limits.max_produce_items as usize {
        return Err(BrokerError::LimitExceeded {
            what: "batches and messages in one produce request",
            limit: u64::from(limits.max_produce_items),
        });
    }
    // Client-placed messages become batches like the client's own, after them.
    let client_batches = batches.len();
    for entry in &partition_messages {
        batches.push(IncomingBatch {
            partition: Some(entry.partition),
            records: encode_partition_messages(topic, entry, limits)?.into(),
        });
    }
    // Check everything before appending anything, so a bad request writes nothing.
    // Each batch is checked once, here; the partition's log takes the checked batch
    // as it is (its limits are the same).
    let max_message = topic.record.settings.max_message_bytes as usize;
    let checked = check_all(batches, limits, max_message).await?;
    let mut targets = Vec::with_capacity(checked.len());
    let mut checked_batches = Vec::with_capacity(checked.len());
    for (partition, checked) in checked {
        let partition = match partition {
            Some(partition) => partition,
            None => choose_partition(topic, checked.bytes(), scope)?,
        };
        topic.partition(partition)?;
        let epoch = (scope.check)(partition)?;
        targets.push((partition, epoch));
        checked_batches.push(checked);
    }
    let (message_partitions, encoded) = encode_messages(topic, &messages, limits, scope)?;
    let mut message_targets = Vec::with_capacity(encoded.len());
    let mut checked_messages = Vec::with_capacity(encoded.len());
    for (partition, records) in encoded {
        message_targets.push((partition, (scope.check)(partition)?));
        checked_messages.push(check(records.into(), limits.max_batch_bytes, max_message)?);
    }

    let mut jobs = JoinSet::new();
    let all_targets = targets.iter().chain(&message_targets);
    let all_batches = checked_batches.into_iter().chain(checked_messages);
    for (slot, (batch, (partition, epoch))) in all_batches.zip(all_targets).enumerate() {
        let target = Arc::clone(topic.partition(*partition)?);
        jobs.spawn(append_job(slot, target, batch, *epoch, scope.ack));
    }
    let first_message_slot = targets.len();
    let mut results: Vec<Option<BrokerResult<AppendOutcome>>> = (0..first_message_slot
        + message_targets.len())
        .map(|_| None)
        .collect();
    while let Some(joined) = jobs.join_next().await {
        let (slot, result) =
            joined.map_err(|err| BrokerError::Internal(format!("append task failed: {err}")))?;
        results[slot] = Some(result);
    }
    // One slot per job, batches first, then message batches: zipping keeps them aligned.
    let mut results = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(BrokerError::Internal("append result missing".into()))));

    let mut outcome = ProduceOutcome::default();
    for (slot, ((partition, _), result)) in targets.into_iter().zip(&mut results).enumerate() {
        let batch = BatchOutcome { partition, result };
        if slot < client_batches {
            outcome.batches.push(batch);
        } else {
            outcome.partition_message_batches.push(batch);
        }
    }
    let mut base_offsets = BTreeMap::new();
    for ((partition, _), result) in message_targets.iter().zip(results) {
        if let Ok(appended) = &result {
            base_offsets.insert(*partition, appended.base_offset);
        }
        outcome.message_batches.push(BatchOutcome {
            partition: *partition,
            result,
        });
    }
    let mut next_in_partition: BTreeMap<u32, u64> = BTreeMap::new();
    for partition in message_partitions {
        let index = next_in_partition.entry(partition).or_insert(0);
        let position = match base_offsets.get(&partition) {
            Some(base) => Ok((partition, base + *index)),
            None => Err(BrokerError::Internal(format!(
                "the batch for partition {partition} failed; see message_batches"
            ))),
        };
        *index += 1;
        outcome.message_positions.push(position);
    }
    Ok(outcome)
}

async fn append_job(
    slot: usize,
    partition: Arc<ReplicatedLog>,
    records: CheckedBatch<Bytes>,
    leader_epoch: u64,
    ack: Ack,
) -> (usize, BrokerResult<AppendOutcome>) {
    (
        slot,
        partition.append(records, leader_epoch, now_ms(), ack).await,
    )
}

/// Requests carrying more batch bytes than this are checked on the blocking pool: a
/// large request's CRCs and record walks take milliseconds, which would otherwise hold
/// an async worker, and every small request queued behind it, for as long.
const INLINE_CHECK_BYTES_MAX: usize = 256 << 10;

/// Checks every batch (sizes, CRC, records, record count), keeping each one's
/// requested partition; the first failure fails the request.
async fn check_all(
    batches: Vec<IncomingBatch>,
    limits: &Limits,
    max_message: usize,
) -> BrokerResult<Vec<(Option<u32>, CheckedBatch<Bytes>)>> {
    let max_batch_bytes = limits.max_batch_bytes;
    let max_batch_records = limits.max_batch_records;
    let bytes: usize = batches.iter().map(|batch| batch.records.len()).sum();
    let check_each = move || {
        batches
            .into_iter()
            .map(|batch| {
                let checked = check(batch.records, max_batch_bytes, max_message)?;
                if checked.header().record_count > max_batch_records {
                    return Err(BrokerError::LimitExceeded {
                        what: "records in one batch",
                        limit: u64::from(max_batch_records),
                    });
                }
                Ok((batch.partition, checked))
            })
            .collect()
    };
    if bytes <= INLINE_CHECK_BYTES_MAX {
        return check_each();
    }
    tokio::task::spawn_blocking(check_each)
        .await
        .map_err(|err| BrokerError::Internal(format!("batch check task failed: {err}")))?
}

/// Checks a batch as its log would (CRC, every record, sizes), once, keeping the result.
fn check(
    records: Bytes,
    max_batch_bytes: u32,
    max_message: usize,
) -> BrokerResult<CheckedBatch<Bytes>> {
    check_batch_size(records.len(), max_batch_bytes)?;
    ferry_storage::check_batch(records, max_batch_bytes as usize, max_message).map_err(|err| {
        BrokerError::refused_batch(err)
            .unwrap_or_else(|other| BrokerError::Internal(format!("checking a batch: {other}")))
    })
}

fn check_batch_size(size: usize, max_batch_bytes: u32) -> BrokerResult<()> {
    if size > max_batch_bytes as usize {
        return Err(BrokerError::BatchTooLarge {
            size,
            limit: max_batch_bytes as usize,
        });
    }
    if size == 0 {
        return Err(BrokerError::EmptyBatch);
    }
    Ok(())
}

/// Picks a partition for a (validated) batch sent without one: the key hash when
/// every record has the same key, round-robin otherwise.
fn choose_partition(
    topic: &Topic,
    records: &[u8],
    scope: &PartitionScope<'_>,
) -> BrokerResult<u32> {
    let batch = Batches::new(records)
        .next()
        .ok_or(BrokerError::EmptyBatch)?
        .map_err(BrokerError::CorruptBatch)?;
    let mut common_key: Option<Option<&[u8]>> = None;
    for record in batch.records() {
        let record = record.map_err(BrokerError::CorruptBatch)?;
        match common_key {
            None => common_key = Some(record.key),
            Some(key) if key == record.key => {}
            Some(_) => return scope.keyless(topic),
        }
    }
    match common_key.flatten() {
        Some(key) => Ok(partition_for_key(key, topic.record.settings.partitions)),
        None => scope.keyless(topic),
    }
}

type EncodedMessages = (Vec<u32>, Vec<(u32, Vec<u8>)>);

/// Groups messages by partition (key hash; keyless ones share one round-robin
/// partition per request) and encodes one batch per partition.
fn encode_messages(
    topic: &Topic,
    messages: &[IncomingMessage],
    limits: &Limits,
    scope: &PartitionScope<'_>,
) -> BrokerResult<EncodedMessages> {
    if messages.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let partitions = topic.record.settings.partitions;
    let max_message = topic.record.settings.max_message_bytes as usize;
    let now = now_ms();
    let mut keyless_partition = None;
    let mut order: Vec<u32> = Vec::new();
    let mut builders: BTreeMap<u32, BatchBuilder> = BTreeMap::new();
    let mut chosen = Vec::with_capacity(messages.len());
    for message in messages {
        check_message_size(message, max_message)?;
        let partition = match &message.key {
            Some(key) => partition_for_key(key, partitions),
            None => match keyless_partition {
                Some(partition) => partition,
                None => *keyless_partition.insert(scope.keyless(topic)?),
            },
        };
        let builder = builders.entry(partition).or_insert_with(|| {
            order.push(partition);
            BatchBuilder::new()
        });
        push_message(builder, message, now);
        check_batch_size(builder.encoded_len(), limits.max_batch_bytes)?;
        chosen.push(partition);
    }
    let mut encoded = Vec::with_capacity(order.len());
    for partition in order {
        if let Some(records) = builders.remove(&partition).and_then(BatchBuilder::finish) {
            encoded.push((partition, records));
        }
    }
    Ok((chosen, encoded))
}

/// Refuses a message larger than the topic allows (key, value and headers).
fn check_message_size(message: &IncomingMessage, max_message: usize) -> BrokerResult<()> {
    let size = message.key.as_ref().map_or(0, Vec::len)
        + message.value.len()
        + message
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > max_message {
        return Err(BrokerError::MessageTooLarge {
            size,
            limit: max_message,
        });
    }
    Ok(())
}

fn push_message(builder: &mut BatchBuilder, message: &IncomingMessage, now: i64) {
    let headers: Vec<(&str, &[u8])> = message
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    builder.push(
        message.key.as_deref(),
        &message.value,
        &headers,
        message.timestamp_ms.unwrap_or(now),
    );
}

/// Encodes one client-placed entry as one batch, stamped with its producer fields.
fn encode_partition_messages(
    topic: &Topic,
    entry: &IncomingPartitionMessages,
    limits: &Limits,
) -> BrokerResult<Vec<u8>> {
    let max_message = topic.record.settings.max_message_bytes as usize;
    let now = now_ms();
    let mut builder = BatchBuilder::new();
    builder.set_producer(entry.producer);
    for message in &entry.messages {
        check_message_size(message, max_message)?;
        push_message(&mut builder, message, now);
    }
    check_batch_size(builder.encoded_len(), limits.max_batch_bytes)?;
    builder.finish().ok_or(BrokerError::EmptyBatch)
}
