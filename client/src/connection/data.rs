//! The data path calls, one request each: produce encoded batches, fetch, look up
//! offsets, allocate a producer id, commit and read group offsets.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::v1 as pb;

use ferry_telemetry::propagation::in_current_trace;
use tokio::task::JoinSet;

use super::Client;
use super::routing::{Kind, MAX_REDIRECTS, by_leader};
use crate::error::ClientError;
use crate::types::{OffsetSpec, PartitionOffset, TopicPartition};

/// The broker's acknowledgement of one produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAck {
    /// Partition the batch went to.
    pub partition: u32,
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// The batch was a retry of one already stored; the offsets are the original ones.
    pub duplicate: bool,
}

/// One partition to read, from an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTarget {
    /// Topic and partition.
    pub partition: TopicPartition,
    /// First offset wanted.
    pub offset: u64,
    /// Byte limit for this partition (at least one whole batch is returned anyway).
    pub max_bytes: u32,
}

/// Limits of a fetch request as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Long polling: wait up to this long for `min_bytes` of data.
    pub max_wait_ms: u32,
    /// Answer as soon as this many bytes are available.
    pub min_bytes: u32,
    /// Byte limit for the whole response.
    pub max_bytes: u32,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 16 << 20,
        }
    }
}

/// What a fetch returned for one partition.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    /// Topic and partition.
    pub partition: TopicPartition,
    /// Whole record batches, concatenated; the first may start before the requested
    /// offset. Decode with [`ferry_records::Batches`].
    pub records: Bytes,
    /// One past the last readable offset.
    pub high_watermark: u64,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Set when reading this partition failed (for example `OFFSET_OUT_OF_RANGE`).
    pub error: Option<ClientError>,
}

/// The identity of an idempotent producer, from `InitProducer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i32,
}

impl Client {
    /// Appends already-encoded record batches (one `(partition, batch)` each) to a
    /// topic. The outer error is for the request as a whole; the inner results are per
    /// batch, in request order, and some may fail while others succeed.
    ///
    /// In a cluster the batches go to their partitions' leaders (one request per
    /// leader, concurrently), following `NOT_LEADER` answers a few times; a request
    /// to one leader that fails then fails just its own batches.
    pub async fn produce_batches(
        &self,
        topic: &str,
        batches: &[(u32, Bytes)],
    ) -> Result<Vec<Result<BatchAck, ClientError>>, ClientError> {
        let mut results: Vec<Option<Result<BatchAck, ClientError>>> =
            batches.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..batches.len()).collect();
        for round in 0..=MAX_REDIRECTS {
            let groups = by_leader(
                self,
                Kind::Topic,
                topic,
                pending.iter().map(|&i| (batches[i].0, i)),
            );
            let whole = round == 0 && groups.len() == 1;
            pending.clear();
            let mut calls = JoinSet::new();
            for (client, items) in groups {
                let positions: Vec<usize> = items.iter().map(|(_, i)| *i).collect();
                let request: Vec<(u32, Bytes)> = items
                    .iter()
                    .map(|(partition, i)| (*partition, batches[*i].1.clone()))
                    .collect();
                let topic = topic.to_owned();
                calls.spawn(in_current_trace(async move {
                    let outcome = client.produce_to_host(&topic, &request).await;
                    (positions, outcome)
                }));
            }
            while let Some(joined) = calls.join_next().await {
                let (positions, outcome) = joined
                    .map_err(|err| ClientError::Protocol(format!("produce task failed: {err}")))?;
                match outcome {
                    Ok(acks) => {
                        for (position, ack) in positions.into_iter().zip(acks) {
                            results[position] = Some(ack);
                        }
                    }
                    Err(err)
                        if round < MAX_REDIRECTS && self.learn_leader(Kind::Topic, topic, &err) =>
                    {
                        pending.extend(positions);
                    }
                    Err(err) => {
                        if let ClientError::Transport { .. } = err {
                            // The host may be gone: ask the bootstrap host next time.
                            for &position in &positions {
                                self.forget_leader(Kind::Topic, topic, batches[position].0);
                            }
                        }
                        if whole {
                            return Err(err);
                        }
                        for position in positions {
                            results[position] = Some(Err(err.clone()));
                        }
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            // Leaders moved or were never known: learn them all in one request rather
            // than one NOT_LEADER hint per round.
            self.refresh_leaders(Kind::Topic, topic).await;
        }
        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| Err(ClientError::Protocol("a batch got no result".into())))
            })
            .collect())
    }

    /// One produce request to this client's host.
    async fn produce_to_host(
        &self,
        topic: &str,
        batches: &[(u32, Bytes)],
    ) -> Result<Vec<Result<BatchAck, ClientError>>, ClientError> {
        let request = pb::ProduceRequest {
            topic: topic.to_owned(),
            batches: batches
                .iter()
                .map(|(partition, records)| pb::PartitionBatch {
                    partition: Some(*partition),
                    records: records.clone(),
                })
                .collect(),
            ..pb::ProduceRequest::default()
        };
        let response = self
            .topic_service()
            .produce(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        if response.batches.len() != batches.len() {
            return Err(ClientError::Protocol(format!(
                "sent {} batches, got {} results",
                batches.len(),
                response.batches.len()
            )));
        }
        Ok(response
            .batches
            .into_iter()
            .map(|result| match result.error {
                Some(detail) if detail.code != pb::ErrorCode::Unspecified as i32 => {
                    Err(ClientError::from_detail(None, &detail))
                }
                _ => Ok(BatchAck {
                    partition: result.partition,
                    base_offset: result.base_offset,
                    last_offset: result.last_offset,
                    duplicate: result.duplicate,
                }),
            })
            .collect())
    }

    /// Reads record batches from partitions, long-polling up to `options.max_wait_ms`.
    ///
    /// In a cluster each partition is read from its leader (one request per leader,
    /// concurrently), following `NOT_LEADER` answers (for the whole request or for
    /// one partition) a few times.
    pub async fn fetch(
        &self,
        targets: &[FetchTarget],
        options: FetchOptions,
    ) -> Result<Vec<FetchedPartition>, ClientError> {
        let mut fetched = Vec::with_capacity(targets.len());
        let mut pending: Vec<FetchTarget> = targets.to_vec();
        for round in 0..=MAX_REDIRECTS {
            // Groups per topic name as well: leaders are known per topic partition.
            let mut groups: Vec<(Client, Vec<FetchTarget>)> = Vec::new();
            for target in pending.drain(..) {
                let client = self.for_partition(
                    Kind::Topic,
                    &target.partition.topic,
                    target.partition.partition,
                );
                match groups.iter_mut().find(|(c, _)| c.address == client.address) {
                    Some((_, group)) => group.push(target),
                    None => groups.push((client, vec![target])),
                }
            }
            let whole = round == 0 && groups.len() == 1;
            let mut calls = JoinSet::new();
            for (client, group) in groups {
                calls.spawn(in_current_trace(async move {
                    let outcome = client.fetch_from_host(&group, options).await;
                    (group, outcome)
                }));
            }
            while let Some(joined) = calls.join_next().await {
                let (group, outcome) = joined
                    .map_err(|err| ClientError::Protocol(format!("fetch task failed: {err}")))?;
                match outcome {
                    Ok(partitions) => {
                        // A partition the host does not lead is refused alone: go to
                        // the leader it names; the others are answered.
                        for (target, partition) in group.into_iter().zip(partitions) {
                            let moved = partition.error.as_ref().is_some_and(|err| {
                                round < MAX_REDIRECTS
                                    && self.learn_leader(Kind::Topic, &target.partition.topic, err)
                            });
                            if moved {
                                pending.push(target);
                            } else {
                                fetched.push(partition);
                            }
                        }
                    }
                    Err(err) => {
                        let learned = group.iter().any(|target| {
                            self.learn_leader(Kind::Topic, &target.partition.topic, &err)
                        });
                        if let ClientError::Transport { .. } = err {
                            for target in &group {
                                self.forget_leader(
                                    Kind::Topic,
                                    &target.partition.topic,
                                    target.partition.partition,
                                );
                            }
                        }
                        if learned && round < MAX_REDIRECTS {
                            pending.extend(group);
                        } else if whole {
                            return Err(err);
                        } else {
                            fetched.extend(group.into_iter().map(|target| FetchedPartition {
                                partition: target.partition,
                                records: Bytes::new(),
                                high_watermark: 0,
                                log_start_offset: 0,
                                error: Some(err.clone()),
                            }));
                        }
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            let mut topics: Vec<&str> =
                pending.iter().map(|t| t.partition.topic.as_str()).collect();
            topics.dedup();
            for topic in topics {
                self.refresh_leaders(Kind::Topic, topic).await;
            }
        }
        Ok(fetched)
    }

    /// One fetch request to this client's host.
    async fn fetch_from_host(
        &self,
        targets: &[FetchTarget],
        options: FetchOptions,
    ) -> Result<Vec<FetchedPartition>, ClientError> {
        let request = pb::FetchRequest {
            partitions: targets
                .iter()
                .map(|target| pb::FetchPartition {
                    topic: target.partition.topic.clone(),
                    partition: target.partition.partition,
                    offset: target.offset,
                    max_bytes: target.max_bytes,
                })
                .collect(),
            max_wait_ms: options.max_wait_ms,
            min_bytes: options.min_bytes,
            max_bytes: options.max_bytes,
            // The stored batches, decoded here without copying.
            decode: false,
        };
        let wait = Duration::from_millis(u64::from(options.max_wait_ms));
        let response = self
            .topic_service()
            .fetch(self.long_poll(request, wait))
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(response
            .partitions
            .into_iter()
            .map(|fetched| FetchedPartition {
                partition: TopicPartition::new(fetched.topic, fetched.partition),
                records: fetched.records,
                high_watermark: fetched.high_watermark,
                log_start_offset: fetched.log_start_offset,
                error: fetched
                    .error
                    .filter(|detail| detail.code != pb::ErrorCode::Unspecified as i32)
                    .map(|detail| ClientError::from_detail(None, &detail)),
            })
            .collect())
    }

    /// Resolves earliest, latest or timestamp specs to offsets for partitions of a topic
    /// (in a cluster, each at its partition's leader).
    pub async fn list_offsets(
        &self,
        topic: &str,
        queries: &[(u32, OffsetSpec)],
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        let mut found = Vec::with_capacity(queries.len());
        let mut pending: Vec<(u32, OffsetSpec)> = queries.to_vec();
        for round in 0..=MAX_REDIRECTS {
            let groups = by_leader(self, Kind::Topic, topic, std::mem::take(&mut pending));
            for (client, group) in groups {
                match client.list_offsets_at_host(topic, &group).await {
                    Ok(answered) => found.extend(answered),
                    Err(err)
                        if round < MAX_REDIRECTS && self.learn_leader(Kind::Topic, topic, &err) =>
                    {
                        pending.extend(group);
                    }
                    Err(err) => {
                        if let ClientError::Transport { .. } = err {
                            for (partition, _) in &group {
                                self.forget_leader(Kind::Topic, topic, *partition);
                            }
                        }
                        return Err(err);
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            self.refresh_leaders(Kind::Topic, topic).await;
        }
        Ok(found)
    }

    /// One list-offsets request to this client's host.
    async fn list_offsets_at_host(
        &self,
        topic: &str,
        queries: &[(u32, OffsetSpec)],
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        let request = pb::ListOffsetsRequest {
            topic: topic.to_owned(),
            queries: queries
                .iter()
                .map(|&(partition, spec)| pb::OffsetQuery {
                    partition,
                    spec: Some(match spec {
                        OffsetSpec::Earliest => pb::offset_query::Spec::Earliest(true),
                        OffsetSpec::Latest => pb::offset_query::Spec::Latest(true),
                        OffsetSpec::Timestamp(ms) => pb::offset_query::Spec::TimestampMs(ms),
                    }),
                })
                .collect(),
        };
        let response = self
            .topic_service()
            .list_offsets(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(response
            .offsets
            .into_iter()
            .map(|found| PartitionOffset {
                partition: found.partition,
                offset: found.offset,
                timestamp_ms: Some(found.timestamp_ms).filter(|&ms| ms >= 0),
            })
            .collect())
    }

    /// Allocates a producer id and epoch for idempotent produce.
    pub async fn init_producer(&self) -> Result<ProducerIdentity, ClientError> {
        let response = self
            .topic_service()
            .init_producer(pb::InitProducerRequest {})
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(ProducerIdentity {
            producer_id: response.producer_id,
            producer_epoch: response.producer_epoch,
        })
    }

    /// Commits `offset` (the next offset to consume) per partition for a group.
    ///
    /// `member_id` must own every partition; pass `""` for a standalone commit, which
    /// the broker allows only while the group has no members.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<(), ClientError> {
        let request = pb::CommitOffsetsRequest {
            group: group.to_owned(),
            member_id: member_id.to_owned(),
            offsets: offsets
                .iter()
                .map(|(tp, offset)| pb::OffsetCommit {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        };
        self.group_service()
            .commit_offsets(request)
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    /// Reads a group's committed offsets (next offset to consume); an empty
    /// `partitions` means every partition the group committed. Partitions without a
    /// commit are absent from the map.
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, u64>, ClientError> {
        let request = pb::FetchOffsetsRequest {
            group: group.to_owned(),
            partitions: partitions.iter().map(pb::TopicPartition::from).collect(),
        };
        let response = self
            .group_service()
            .fetch_offsets(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(response
            .offsets
            .into_iter()
            .map(|c| (TopicPartition::new(c.topic, c.partition), c.offset))
            .collect())
    }
}
