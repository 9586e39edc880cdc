//! `TopicService`: produce, fetch, list offsets, init producer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1 as pb;
use ferry_proto::v1::topic_service_server::TopicService;
use ferry_replication::LogKind;
use tonic::{Request, Response, Status};

use super::auth::Guard;
use super::status::Answer;
use crate::access::quota::QuotaKind;
use crate::access::{Operation, Resource};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metrics::TopicLabels;
use crate::names::validate_topic_name;
use crate::service::convert::decoded_messages;
use crate::service::status::error_detail;
use crate::topic::{
    BatchOutcome, FetchLimits, FetchTarget, FetchedData, IncomingBatch, IncomingMessage,
    IncomingPartitionMessages, PartitionScope, ProduceInput, fetch, produce, validate_fetch,
};
use ferry_records::ProducerStamp;

/// The topic data API over a broker.
pub struct TopicApi {
    broker: Arc<Broker>,
    guard: Guard,
}

impl TopicApi {
    /// Serves produce and fetch requests for `broker`, checking callers with `guard`.
    pub fn new(broker: Arc<Broker>, guard: Guard) -> Self {
        Self { broker, guard }
    }
}

/// A partition's answer to a fetch: the stored batches, or their records decoded
/// for a client that does not read the batch format.
fn fetched_partition(target: FetchTarget, data: FetchedData, decode: bool) -> pb::FetchedPartition {
    let mut answer = pb::FetchedPartition {
        topic: target.topic,
        partition: target.partition,
        high_watermark: data.high_watermark,
        log_start_offset: data.log_start_offset,
        ..Default::default()
    };
    if !decode {
        answer.records = data.records.into();
        return answer;
    }
    match decoded_messages(&data.records.into(), target.offset) {
        Ok((messages, next_offset)) => {
            answer.messages = messages;
            answer.next_offset = next_offset;
        }
        // The log checked these batches when it read them: this is a bug.
        Err(err) => {
            answer.error = Some(error_detail(&BrokerError::Internal(format!(
                "stored batches of {}/{} do not decode: {err}",
                answer.topic, answer.partition
            ))));
        }
    }
    answer
}

/// A partition's fetch refused or failed on its own.
fn failed_partition(target: FetchTarget, err: &BrokerError) -> pb::FetchedPartition {
    pb::FetchedPartition {
        topic: target.topic,
        partition: target.partition,
        error: Some(error_detail(err)),
        next_offset: target.offset,
        ..Default::default()
    }
}

/// The payload bytes a produce request carries, as its quota and the produce-bytes
/// metric count them: record batches whole, messages by key, value and headers.
fn produce_request_bytes(request: &pb::ProduceRequest) -> u64 {
    let message_bytes = |m: &pb::Message| {
        m.key.as_ref().map_or(0, |k| k.len())
            + m.value.len()
            + m.headers
                .iter()
                .map(|h| h.key.len() + h.value.len())
                .sum::<usize>()
    };
    let batches: usize = request.batches.iter().map(|b| b.records.len()).sum();
    let messages: usize = request.messages.iter().map(message_bytes).sum();
    let placed: usize = request
        .partition_messages
        .iter()
        .flat_map(|entry| &entry.messages)
        .map(message_bytes)
        .sum();
    (batches + messages + placed) as u64
}

fn incoming_message(message: pb::Message) -> IncomingMessage {
    IncomingMessage {
        key: message.key.map(Into::into),
        value: message.value.into(),
        headers: message
            .headers
            .into_iter()
            .map(|h| (h.key, h.value.into()))
            .collect(),
        timestamp_ms: message.timestamp_ms,
    }
}

/// A produce request as the topic layer takes it.
fn produce_input(
    batches: Vec<pb::PartitionBatch>,
    messages: Vec<pb::Message>,
    partition_messages: Vec<pb::PartitionMessages>,
    producer: Option<pb::ProducerIdentity>,
) -> ProduceInput {
    ProduceInput {
        batches: batches
            .into_iter()
            .map(|b| IncomingBatch {
                partition: b.partition,
                records: b.records,
            })
            .collect(),
        messages: messages.into_iter().map(incoming_message).collect(),
        partition_messages: partition_messages
            .into_iter()
            .map(|entry| IncomingPartitionMessages {
                partition: entry.partition,
                messages: entry.messages.into_iter().map(incoming_message).collect(),
                producer: producer.map(|p| ProducerStamp {
                    producer_id: p.producer_id,
                    producer_epoch: p.producer_epoch,
                    base_sequence: entry.base_sequence,
                }),
            })
            .collect(),
    }
}

fn batch_result(outcome: BatchOutcome) -> pb::BatchResult {
    match outcome.result {
        Ok(appended) => pb::BatchResult {
            partition: outcome.partition,
            base_offset: appended.base_offset,
            last_offset: appended.last_offset,
            duplicate: appended.duplicate,
            error: None,
        },
        Err(err) => pb::BatchResult {
            partition: outcome.partition,
            error: Some(error_detail(&err)),
            ..Default::default()
        },
    }
}

impl TopicApi {
    fn record_appends(&self, topic: &str, outcomes: &[BatchOutcome], started: Instant) {
        let metrics = &self.broker.metrics;
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        for outcome in outcomes {
            if let Ok(appended) = &outcome.result
                && !appended.duplicate
            {
                let records = appended.last_offset - appended.base_offset + 1;
                metrics
                    .produce_messages
                    .get_or_create(&labels)
                    .inc_by(records);
                metrics
                    .produce_latency_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        }
    }
}

#[tonic::async_trait]
impl TopicService for TopicApi {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let started = Instant::now();
        let caller = self.guard.check(
            "Produce",
            &request,
            Operation::Produce,
            [Resource::Topic(&request.get_ref().topic)],
        )?;
        let request = request.into_inner();
        self.guard.admit(
            "Produce",
            &caller,
            Resource::Topic(&request.topic),
            QuotaKind::ProduceBytes,
        )?;
        let request_bytes = produce_request_bytes(&request);
        self.broker
            .answer("Produce", self.broker.check_accepting())?;
        let result = async {
            validate_topic_name(&request.topic)?;
            let topic = self.broker.topics.get(&request.topic)?;
            let input = produce_input(
                request.batches,
                request.messages,
                request.partition_messages,
                request.producer,
            );
            let check = |partition| {
                self.broker
                    .check_leader(LogKind::Topic, &request.topic, partition)
            };
            let scope = PartitionScope {
                writable: self
                    .broker
                    .writable_partitions(&request.topic, topic.record.settings.partitions),
                check: &check,
                ack: self.broker.ack_policy(&topic.record.settings),
            };
            let outcome = produce(&topic, input, &self.broker.config.limits, &scope).await?;
            self.broker
                .metrics
                .produce_bytes
                .get_or_create(&TopicLabels {
                    topic: request.topic.clone(),
                })
                .inc_by(request_bytes);
            Ok::<_, BrokerError>(outcome)
        }
        .await;
        let outcome = self.broker.answer("Produce", result)?;
        self.guard.charge(
            &caller,
            Resource::Topic(&request.topic),
            QuotaKind::ProduceBytes,
            request_bytes,
        );
        self.record_appends(&request.topic, &outcome.batches, started);
        self.record_appends(&request.topic, &outcome.message_batches, started);
        self.record_appends(&request.topic, &outcome.partition_message_batches, started);
        let messages = outcome
            .message_positions
            .into_iter()
            .map(|position| match position {
                Ok((partition, offset)) => pb::RecordPosition { partition, offset },
                // The failed batch's error is in message_batches; the position is unknown.
                Err(_) => pb::RecordPosition {
                    partition: u32::MAX,
                    offset: u64::MAX,
                },
            })
            .collect();
        Ok(Response::new(pb::ProduceResponse {
            batches: outcome.batches.into_iter().map(batch_result).collect(),
            messages,
            message_batches: outcome
                .message_batches
                .into_iter()
                .map(batch_result)
                .collect(),
            partition_message_batches: outcome
                .partition_message_batches
                .into_iter()
                .map(batch_result)
                .collect(),
        }))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let caller = self.guard.check(
            "Fetch",
            &request,
            Operation::Consume,
            request
                .get_ref()
                .partitions
                .iter()
                .map(|p| Resource::Topic(&p.topic)),
        )?;
        let topics: std::collections::BTreeSet<String> = request
            .get_ref()
            .partitions
            .iter()
            .map(|p| p.topic.clone())
            .collect();
        for topic in &topics {
            self.guard.admit(
                "Fetch",
                &caller,
                Resource::Topic(topic),
                QuotaKind::ConsumeBytes,
            )?;
        }
        let request = request.into_inner();
        let decode = request.decode;
        let targets: Vec<FetchTarget> = request
            .partitions
            .into_iter()
            .map(|p| FetchTarget {
                topic: p.topic,
                partition: p.partition,
                offset: p.offset,
                max_bytes: p.max_bytes,
            })
            .collect();
        let mut params = FetchLimits {
            max_wait: Duration::from_millis(u64::from(request.max_wait_ms)),
            min_bytes: request.min_bytes,
            max_bytes: request.max_bytes,
        };
        let valid = validate_fetch(&targets, &params, &self.broker.config.limits);
        self.broker.answer("Fetch", valid)?;
        // A partition this host does not lead is refused alone, with the leader's
        // address; the others are read (at once: a refusal ends the wait, as any
        // partition's error does).
        let mut answers: Vec<Option<pb::FetchedPartition>> = Vec::with_capacity(targets.len());
        let mut served = Vec::with_capacity(targets.len());
        for target in targets {
            match self
                .broker
                .check_leader(LogKind::Topic, &target.topic, target.partition)
            {
                Ok(_) => {
                    answers.push(None);
                    served.push(target);
                }
                Err(err) => answers.push(Some(failed_partition(target, &err))),
            }
        }
        if served.len() < answers.len() {
            params.max_wait = Duration::ZERO;
        }
        let fetched = if served.is_empty() {
            Vec::new()
        } else {
            let result = fetch(
                &self.broker.topics,
                served,
                params,
                &self.broker.config.limits,
                self.broker.stopping(),
            )
            .await;
            self.broker.answer("Fetch", result)?
        };
        // What each topic gave, charged to its quotas (and all of it to the caller's
        // overall one).
        let mut read: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for partition in &fetched {
            if let Ok(data) = &partition.result {
                *read.entry(partition.target.topic.as_str()).or_default() +=
                    data.records.len() as u64;
            }
        }
        for (topic, bytes) in read {
            self.guard.charge(
                &caller,
                Resource::Topic(topic),
                QuotaKind::ConsumeBytes,
                bytes,
            );
        }
        let metrics = &self.broker.metrics;
        let mut fetched = fetched.into_iter().map(|f| match f.result {
            Ok(data) => {
                let labels = TopicLabels {
                    topic: f.target.topic.clone(),
                };
                metrics
                    .fetch_messages
                    .get_or_create(&labels)
                    .inc_by(data.record_count);
                metrics
                    .fetch_bytes
                    .get_or_create(&labels)
                    .inc_by(data.records.len() as u64);
                fetched_partition(f.target, data, decode)
            }
            Err(err) => failed_partition(f.target, &err),
        });
        let partitions = answers
            .into_iter()
            .map(|answer| {
                answer
                    .or_else(|| fetched.next())
                    .ok_or_else(|| Status::internal("a fetch result went missing"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::FetchResponse { partitions }))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        self.guard.check(
            "ListOffsets",
            &request,
            Operation::Describe,
            [Resource::Topic(&request.get_ref().topic)],
        )?;
        let request = request.into_inner();
        let result = async {
            validate_topic_name(&request.topic)?;
            let topic = self.broker.topics.get(&request.topic)?;
            let mut offsets = Vec::with_capacity(request.queries.len());
            for query in request.queries {
                let partition = topic.partition(query.partition)?;
                self.broker
                    .check_leader(LogKind::Topic, &request.topic, query.partition)?;
                let (offset, timestamp_ms) = match query.spec {
                    Some(pb::offset_query::Spec::Earliest(_)) => (partition.log_start_offset(), -1),
                    Some(pb::offset_query::Spec::Latest(_)) => (partition.high_watermark(), -1),
                    Some(pb::offset_query::Spec::TimestampMs(ts)) => partition
                        .offset_for_timestamp(ts)
                        .await?
                        .unwrap_or((partition.high_watermark(), -1)),
                    None => {
                        return Err(BrokerError::InvalidArgument(
                            "an offset query needs earliest, latest or timestamp_ms".into(),
                        ));
                    }
                };
                offsets.push(pb::PartitionOffset {
                    partition: query.partition,
                    offset,
                    timestamp_ms,
                });
            }
            Ok(offsets)
        }
        .await;
        let offsets = self.broker.answer("ListOffsets", result)?;
        Ok(Response::new(pb::ListOffsetsResponse { offsets }))
    }

    // Any caller the listener let in may take a producer id: with authorization on,
    // that is an authenticated one, and the id writes nothing without produce rights.
    async fn init_producer(
        &self,
        _request: Request<pb::InitProducerRequest>,
    ) -> Result<Response<pb::InitProducerResponse>, Status> {
        let result = crate::offsets::allocate_producer_id(self.broker.meta.as_ref()).await;
        let producer_id = self.broker.answer("InitProducer", result)?;
        Ok(Response::new(pb::InitProducerResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }
}
