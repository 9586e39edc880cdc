//! The gateway's gRPC services: the same API as a host, each request sent on to the
//! host that serves it. Requests spanning partitions led by several hosts (produce,
//! fetch, list-offsets) are split per host, sent at once and put back together in
//! the request's order.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use ferry_proto::v1 as pb;
use ferry_proto::v1::access_service_client::AccessServiceClient;
use ferry_proto::v1::access_service_server::AccessService;
use ferry_proto::v1::admin_service_client::AdminServiceClient;
use ferry_proto::v1::admin_service_server::AdminService;
use ferry_proto::v1::group_service_client::GroupServiceClient;
use ferry_proto::v1::group_service_server::GroupService;
use ferry_proto::v1::metadata_service_client::MetadataServiceClient;
use ferry_proto::v1::metadata_service_server::MetadataService;
use ferry_proto::v1::queue_service_client::QueueServiceClient;
use ferry_proto::v1::queue_service_server::QueueService;
use ferry_proto::v1::topic_service_client::TopicServiceClient;
use ferry_proto::v1::topic_service_server::TopicService;
use ferry_records::{Batches, partition_for_key};
use ferry_replication::LogKind;
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};

use super::directory::{Directory, Target};
use super::forward::{
    Forwarder, HostChannel, current_caller, detail_of, not_done_by_the_host, on_behalf_of,
    partition_not_done_by_the_host,
};
use crate::access::{AccessControl, Operation, Resource};
use crate::cluster::routing::coordinator_index;
use crate::error::{BrokerError, BrokerResult};
use crate::service::auth::{caller, who_am_i};
use crate::service::status::to_status;

/// Everything the gateway's services share.
#[derive(Clone)]
pub struct Gateway {
    forwarder: Forwarder,
    /// The cluster for requests that name no topic or queue (creates, groups).
    default_cluster: Option<String>,
    /// This gateway's id and address in metadata answers.
    host_id: String,
    advertise: String,
    round_robin: Arc<AtomicU32>,
    /// Decides what the gateway answers itself (metadata); hosts decide the rest.
    access: AccessControl,
}

impl Gateway {
    /// A gateway forwarding through `forwarder`, answering metadata as `host_id` at
    /// `advertise` with what `access` lets each caller see.
    pub fn new(
        forwarder: Forwarder,
        default_cluster: Option<String>,
        host_id: String,
        advertise: String,
        access: AccessControl,
    ) -> Self {
        Self {
            forwarder,
            default_cluster,
            host_id,
            advertise,
            round_robin: Arc::new(AtomicU32::new(0)),
            access,
        }
    }

    fn turn(&self) -> usize {
        self.round_robin.fetch_add(1, Ordering::Relaxed) as usize
    }

    /// A live host of the cluster for requests naming no resource, in turn, or the
    /// host coordinating `group` (hosts pick it the same way).
    fn default_host(&self, directory: &Directory, group: Option<&str>) -> BrokerResult<Target> {
        let cluster = directory.default_cluster(self.default_cluster.as_deref())?;
        let turn = match group {
            Some(group) => {
                coordinator_index(group, directory.hosts_of(&cluster).len()).unwrap_or(0)
            }
            None => self.turn(),
        };
        any_host(directory, &cluster, turn)
    }

    /// Forwards a request about a topic to a live host of the cluster owning it.
    async fn to_topic_cluster<T, Fut>(
        &self,
        topic: &str,
        call: impl Fn(HostChannel) -> Fut,
    ) -> Result<T, Status>
    where
        Fut: Future<Output = Result<T, Status>>,
    {
        let turn = self.turn();
        self.forwarder
            .routed(
                |d| {
                    let cluster = d.topic(topic)?.0.cluster.clone().unwrap_or_default();
                    any_host(d, &cluster, turn)
                },
                call,
            )
            .await
    }

    /// Forwards a request about a queue to its leader.
    async fn to_queue_leader<T, Fut>(
        &self,
        queue: &str,
        call: impl Fn(HostChannel) -> Fut,
    ) -> Result<T, Status>
    where
        Fut: Future<Output = Result<T, Status>>,
    {
        self.forwarder
            .routed(|d| d.leader(LogKind::Queue, queue, 0), call)
            .await
    }

    /// Forwards a group request to the host that coordinates `group`.
    async fn to_coordinator<T, Fut>(
        &self,
        group: &str,
        call: impl Fn(HostChannel) -> Fut,
    ) -> Result<T, Status>
    where
        Fut: Future<Output = Result<T, Status>>,
    {
        self.forwarder
            .routed(|d| self.default_host(d, Some(group)), call)
            .await
    }

    /// One live host of every cluster with live hosts.
    fn one_host_per_cluster(&self) -> Vec<Target> {
        let directory = self.forwarder.directory();
        let turn = self.turn();
        directory
            .clusters
            .keys()
            .filter_map(|cluster| any_host(&directory, cluster, turn).ok())
            .collect()
    }
}

fn any_host(directory: &Directory, cluster: &str, turn: usize) -> BrokerResult<Target> {
    let hosts = directory.hosts_of(cluster);
    if hosts.is_empty() {
        return Err(BrokerError::Meta(crate::meta::MetaError::Unavailable(
            format!("broker cluster {cluster:?} has no live host"),
        )));
    }
    Ok(hosts[turn % hosts.len()].clone())
}

fn answer<T>(result: Result<T, Status>) -> Result<Response<T>, Status> {
    result.map(Response::new)
}

/// One part of a produce request, remembered by its place in the request.
#[derive(Clone)]
enum ProduceItem {
    Batch {
        index: usize,
        batch: pb::PartitionBatch,
        partition: u32,
    },
    Message {
        index: usize,
        message: pb::Message,
        partition: u32,
    },
    Placed {
        index: usize,
        entry: pb::PartitionMessages,
    },
}

impl ProduceItem {
    fn partition(&self) -> u32 {
        match self {
            Self::Batch { partition, .. } | Self::Message { partition, .. } => *partition,
            Self::Placed { entry, .. } => entry.partition,
        }
    }

    /// Its place in the request: batches, then messages, then placed messages, each
    /// in order.
    fn place(&self) -> (u8, usize) {
        match self {
            Self::Batch { index, .. } => (0, *index),
            Self::Message { index, .. } => (1, *index),
            Self::Placed { index, .. } => (2, *index),
        }
    }
}

/// What a produce request's answer is assembled from.
struct ProduceAnswer {
    batches: Vec<Option<pb::BatchResult>>,
    messages: Vec<Option<pb::RecordPosition>>,
    message_batches: Vec<pb::BatchResult>,
    placed: Vec<Option<pb::BatchResult>>,
}

/// The partition a batch without one goes to: its common key's, else the turn's.
fn batch_partition(records: &[u8], partitions: u32, turn: u32) -> Result<u32, Status> {
    let batch = Batches::new(records)
        .next()
        .ok_or_else(|| to_status(&BrokerError::EmptyBatch))?
        .map_err(|err| to_status(&BrokerError::CorruptBatch(err)))?;
    let mut common: Option<Option<&[u8]>> = None;
    for record in batch.records() {
        let record = record.map_err(|err| to_status(&BrokerError::CorruptBatch(err)))?;
        match common {
            None => common = Some(record.key),
            Some(key) if key == record.key => {}
            Some(_) => return Ok(turn % partitions),
        }
    }
    Ok(match common.flatten() {
        Some(key) => partition_for_key(key, partitions),
        None => turn % partitions,
    })
}

#[tonic::async_trait]
impl TopicService for Gateway {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let request = request.into_inner();
        if request.batches.is_empty()
            && request.messages.is_empty()
            && request.partition_messages.is_empty()
        {
            return Err(to_status(&BrokerError::EmptyBatch));
        }
        let directory = self.forwarder.directory();
        let partitions = directory
            .topic(&request.topic)
            .map_err(|err| to_status(&err))?
            .0
            .settings
            .partitions;
        let turn = u32::try_from(self.turn() % partitions as usize).unwrap_or(0);
        let mut items = Vec::with_capacity(request.batches.len() + request.messages.len());
        for (index, batch) in request.batches.iter().enumerate() {
            let partition = match batch.partition {
                Some(partition) => partition,
                None => batch_partition(&batch.records, partitions, turn)?,
            };
            items.push(ProduceItem::Batch {
                index,
                batch: pb::PartitionBatch {
                    partition: Some(partition),
                    records: batch.records.clone(),
                },
                partition,
            });
        }
        // Keyless messages share one partition per request, as on a host; the host
        // then picks among the partitions it leads.
        for (index, message) in request.messages.iter().enumerate() {
            let partition = match &message.key {
                Some(key) => partition_for_key(key, partitions),
                None => turn,
            };
            items.push(ProduceItem::Message {
                index,
                message: message.clone(),
                partition,
            });
        }
        for (index, entry) in request.partition_messages.iter().enumerate() {
            items.push(ProduceItem::Placed {
                index,
                entry: entry.clone(),
            });
        }
        let mut answer = ProduceAnswer {
            batches: vec![None; request.batches.len()],
            messages: vec![None; request.messages.len()],
            message_batches: Vec::new(),
            placed: vec![None; request.partition_messages.len()],
        };
        let deadline = self.forwarder.deadline();
        let mut directory = self.forwarder.subscribe();
        let mut pending = items;
        // Whether any host answered for some item, and the last failure that ended an
        // item: a request no host took is answered with that error, never with
        // placeholder positions that look like success.
        let mut answered = false;
        let mut failure = None;
        while !pending.is_empty() {
            // Shares come back in any order; put the items back in the request's
            // order, so each host gets the messages of a partition as they were sent.
            pending.sort_by_key(ProduceItem::place);
            let groups = group_by_leader(&self.forwarder.directory(), &request.topic, pending);
            pending = Vec::new();
            let mut sends = JoinSet::new();
            for (target, group) in groups {
                let topic = request.topic.clone();
                let producer = request.producer;
                let channel = match &target {
                    Ok(target) => self
                        .forwarder
                        .channel(target)
                        .map_err(|s| (s, group.clone())),
                    Err(err) => Err((to_status(err), group.clone())),
                };
                sends.spawn(on_behalf_of(current_caller(), async move {
                    match channel {
                        Ok(channel) => {
                            let sent = send_group(channel, topic, producer, &group).await;
                            (group, sent)
                        }
                        Err((status, group)) => (group, Err(status)),
                    }
                }));
            }
            while let Some(joined) = sends.join_next().await {
                let (group, sent) = joined
                    .map_err(|err| Status::internal(format!("produce task failed: {err}")))?;
                match sent {
                    Ok(response) => {
                        answered = true;
                        place_response(&mut answer, &group, response);
                    }
                    // NOT_LEADER and the like are decided before anything is written:
                    // the whole share goes again, as one unit.
                    Err(status)
                        if not_done_by_the_host(&status)
                            && tokio::time::Instant::now() < deadline =>
                    {
                        pending.extend(group);
                    }
                    Err(status) => {
                        place_failure(&mut answer, &group, &status);
                        failure = Some(status);
                    }
                }
            }
            if !pending.is_empty() {
                self.forwarder.wait_for_change(&mut directory).await;
            }
        }
        if let (false, Some(status)) = (answered, failure) {
            return Err(status);
        }
        let missing = || Status::internal("a produce result went missing");
        Ok(Response::new(pb::ProduceResponse {
            batches: answer
                .batches
                .into_iter()
                .map(|b| b.ok_or_else(missing))
                .collect::<Result<_, _>>()?,
            messages: answer
                .messages
                .into_iter()
                .map(|m| m.ok_or_else(missing))
                .collect::<Result<_, _>>()?,
            message_batches: answer.message_batches,
            partition_message_batches: answer
                .placed
                .into_iter()
                .map(|b| b.ok_or_else(missing))
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let request = request.into_inner();
        let mut results: Vec<Option<pb::FetchedPartition>> = vec![None; request.partitions.len()];
        let deadline = self.forwarder.deadline();
        let mut directory = self.forwarder.subscribe();
        let mut pending: Vec<(usize, pb::FetchPartition)> =
            request.partitions.iter().cloned().enumerate().collect();
        while !pending.is_empty() {
            let current = self.forwarder.directory();
            let mut groups: BTreeMap<String, (Target, Vec<(usize, pb::FetchPartition)>)> =
                BTreeMap::new();
            for (index, wanted) in std::mem::take(&mut pending) {
                match current.leader(LogKind::Topic, &wanted.topic, wanted.partition) {
                    Ok(target) => groups
                        .entry(target.address.clone())
                        .or_insert_with(|| (target, Vec::new()))
                        .1
                        .push((index, wanted)),
                    Err(err) if tokio::time::Instant::now() >= deadline => {
                        results[index] = Some(fetch_failure(&wanted, &to_status(&err)));
                    }
                    Err(_) => pending.push((index, wanted)),
                }
            }
            let mut fetches = JoinSet::new();
            for (target, group) in groups.into_values() {
                let channel = self.forwarder.channel(&target)?;
                let sub = pb::FetchRequest {
                    partitions: group.iter().map(|(_, p)| p.clone()).collect(),
                    ..request.clone()
                };
                fetches.spawn(on_behalf_of(current_caller(), async move {
                    let fetched = TopicServiceClient::new(channel)
                        .max_decoding_message_size(usize::MAX)
                        .fetch(sub)
                        .await
                        .map(Response::into_inner);
                    (group, fetched)
                }));
            }
            while let Some(joined) = fetches.join_next().await {
                let (group, fetched) =
                    joined.map_err(|err| Status::internal(format!("fetch task failed: {err}")))?;
                match fetched {
                    Ok(response) => {
                        let retry = tokio::time::Instant::now() < deadline;
                        for ((index, wanted), partition) in
                            group.into_iter().zip(response.partitions)
                        {
                            // A partition the host did not serve (it moved, or the
                            // host has not opened it yet) goes again after the
                            // directory catches up; the others are answered.
                            if retry
                                && partition
                                    .error
                                    .as_ref()
                                    .is_some_and(partition_not_done_by_the_host)
                            {
                                pending.push((index, wanted));
                            } else {
                                results[index] = Some(partition);
                            }
                        }
                    }
                    Err(status)
                        if not_done_by_the_host(&status)
                            && tokio::time::Instant::now() < deadline =>
                    {
                        pending.extend(group);
                    }
                    Err(status) => {
                        for (index, wanted) in &group {
                            results[*index] = Some(fetch_failure(wanted, &status));
                        }
                    }
                }
            }
            if !pending.is_empty() {
                self.forwarder.wait_for_change(&mut directory).await;
            }
        }
        let partitions = results
            .into_iter()
            .map(|p| p.ok_or_else(|| Status::internal("a fetch result went missing")))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::FetchResponse { partitions }))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let request = request.into_inner();
        // One query at a time through the retry loop: list-offsets is small and rare.
        let mut offsets = Vec::with_capacity(request.queries.len());
        for query in &request.queries {
            let sub = pb::ListOffsetsRequest {
                topic: request.topic.clone(),
                queries: vec![*query],
            };
            let answer = self
                .forwarder
                .routed(
                    |d| d.leader(LogKind::Topic, &request.topic, query.partition),
                    |channel| {
                        let sub = sub.clone();
                        async move {
                            TopicServiceClient::new(channel)
                                .list_offsets(sub)
                                .await
                                .map(Response::into_inner)
                        }
                    },
                )
                .await?;
            offsets.extend(answer.offsets);
        }
        Ok(Response::new(pb::ListOffsetsResponse { offsets }))
    }

    async fn init_producer(
        &self,
        request: Request<pb::InitProducerRequest>,
    ) -> Result<Response<pb::InitProducerResponse>, Status> {
        let request = request.into_inner();
        answer(
            self.forwarder
                .routed(
                    |d| self.default_host(d, None),
                    |channel| async move {
                        TopicServiceClient::new(channel)
                            .init_producer(request)
                            .await
                            .map(Response::into_inner)
                    },
                )
                .await,
        )
    }
}

/// Splits produce items by the host leading their partition now, keeping their order;
/// items whose partition has no leader go into one group per partition with the error.
fn group_by_leader(
    directory: &Directory,
    topic: &str,
    items: Vec<ProduceItem>,
) -> Vec<(BrokerResult<Target>, Vec<ProduceItem>)> {
    let mut by_host: BTreeMap<String, (Target, Vec<ProduceItem>)> = BTreeMap::new();
    let mut leaderless: BTreeMap<u32, (BrokerError, Vec<ProduceItem>)> = BTreeMap::new();
    for item in items {
        match directory.leader(LogKind::Topic, topic, item.partition()) {
            Ok(target) => by_host
                .entry(target.host_id.clone())
                .or_insert_with(|| (target, Vec::new()))
                .1
                .push(item),
            Err(err) => match leaderless.entry(item.partition()) {
                std::collections::btree_map::Entry::Occupied(mut held) => {
                    held.get_mut().1.push(item)
                }
                std::collections::btree_map::Entry::Vacant(free) => {
                    free.insert((err, vec![item]));
                }
            },
        }
    }
    by_host
        .into_values()
        .map(|(target, items)| (Ok(target), items))
        .chain(
            leaderless
                .into_values()
                .map(|(err, items)| (Err(err), items)),
        )
        .collect()
}

/// Sends one host's share of a produce request.
async fn send_group(
    channel: HostChannel,
    topic: String,
    producer: Option<pb::ProducerIdentity>,
    group: &[ProduceItem],
) -> Result<pb::ProduceResponse, Status> {
    let mut request = pb::ProduceRequest {
        topic,
        producer,
        ..pb::ProduceRequest::default()
    };
    for item in group {
        match item {
            ProduceItem::Batch { batch, .. } => request.batches.push(batch.clone()),
            ProduceItem::Message { message, .. } => request.messages.push(message.clone()),
            ProduceItem::Placed { entry, .. } => request.partition_messages.push(entry.clone()),
        }
    }
    TopicServiceClient::new(channel)
        .produce(request)
        .await
        .map(Response::into_inner)
}

/// Puts a host's answer back at the items' places in the request.
fn place_response(
    answer: &mut ProduceAnswer,
    group: &[ProduceItem],
    response: pb::ProduceResponse,
) {
    let mut batches = response.batches.into_iter();
    let mut messages = response.messages.into_iter();
    let mut placed = response.partition_message_batches.into_iter();
    for item in group {
        match item {
            ProduceItem::Batch { index, .. } => answer.batches[*index] = batches.next(),
            ProduceItem::Message { index, .. } => answer.messages[*index] = messages.next(),
            ProduceItem::Placed { index, .. } => answer.placed[*index] = placed.next(),
        }
    }
    answer.message_batches.extend(response.message_batches);
}

/// Marks every item of a failed share with the failure: batches carry the error, a
/// message's position is unknown and its batch's error is in `message_batches`.
fn place_failure(answer: &mut ProduceAnswer, group: &[ProduceItem], status: &Status) {
    let detail = detail_of(status);
    let mut message_partitions = Vec::new();
    for item in group {
        match item {
            ProduceItem::Batch {
                index, partition, ..
            } => {
                answer.batches[*index] = Some(failed_batch(*partition, &detail));
            }
            ProduceItem::Message {
                index, partition, ..
            } => {
                answer.messages[*index] = Some(pb::RecordPosition {
                    partition: u32::MAX,
                    offset: u64::MAX,
                });
                if !message_partitions.contains(partition) {
                    message_partitions.push(*partition);
                }
            }
            ProduceItem::Placed { index, entry } => {
                answer.placed[*index] = Some(failed_batch(entry.partition, &detail));
            }
        }
    }
    for partition in message_partitions {
        answer
            .message_batches
            .push(failed_batch(partition, &detail));
    }
}

fn failed_batch(partition: u32, detail: &pb::ErrorDetail) -> pb::BatchResult {
    pb::BatchResult {
        partition,
        error: Some(detail.clone()),
        ..pb::BatchResult::default()
    }
}

fn fetch_failure(wanted: &pb::FetchPartition, status: &Status) -> pb::FetchedPartition {
    pb::FetchedPartition {
        topic: wanted.topic.clone(),
        partition: wanted.partition,
        error: Some(detail_of(status)),
        ..pb::FetchedPartition::default()
    }
}

#[tonic::async_trait]
impl AdminService for Gateway {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let request = request.into_inner();
        let name = request.name.clone();
        let created = self
            .forwarder
            .routed(
                |d| self.default_host(d, None),
                |channel| {
                    let request = request.clone();
                    async move {
                        AdminServiceClient::new(channel)
                            .create_topic(request)
                            .await
                            .map(Response::into_inner)
                    }
                },
            )
            .await?;
        // Read-your-writes: the next request through this gateway finds the topic.
        self.forwarder.wait_until(|d| d.topic(&name).is_ok()).await;
        Ok(Response::new(created))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let request = request.into_inner();
        answer(
            self.to_topic_cluster(&request.name, |channel| {
                let request = request.clone();
                async move {
                    AdminServiceClient::new(channel)
                        .delete_topic(request)
                        .await
                        .map(Response::into_inner)
                }
            })
            .await,
        )
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let request = request.into_inner();
        let mut topics = Vec::new();
        for host in self.one_host_per_cluster() {
            let channel = self.forwarder.channel(&host)?;
            let listed = AdminServiceClient::new(channel)
                .list_topics(request)
                .await?
                .into_inner();
            topics.extend(listed.topics);
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let request = request.into_inner();
        answer(
            self.to_topic_cluster(&request.name, |channel| {
                let request = request.clone();
                async move {
                    AdminServiceClient::new(channel)
                        .describe_topic(request)
                        .await
                        .map(Response::into_inner)
                }
            })
            .await,
        )
    }
}

/// Forwards a queue request (its queue name in field `$field`) to the queue's leader.
macro_rules! to_queue_leader {
    ($self:ident, $request:ident, $field:ident, $method:ident) => {{
        let request = $request.into_inner();
        answer(
            $self
                .to_queue_leader(&request.$field, |channel| {
                    let request = request.clone();
                    async move {
                        QueueServiceClient::new(channel)
                            .max_decoding_message_size(usize::MAX)
                            .$method(request)
                            .await
                            .map(Response::into_inner)
                    }
                })
                .await,
        )
    }};
}

#[tonic::async_trait]
impl QueueService for Gateway {
    async fn create_queue(
        &self,
        request: Request<pb::CreateQueueRequest>,
    ) -> Result<Response<pb::CreateQueueResponse>, Status> {
        let request = request.into_inner();
        let name = request.name.clone();
        let created = self
            .forwarder
            .routed(
                |d| self.default_host(d, None),
                |channel| {
                    let request = request.clone();
                    async move {
                        QueueServiceClient::new(channel)
                            .create_queue(request)
                            .await
                            .map(Response::into_inner)
                    }
                },
            )
            .await?;
        // Read-your-writes: the next request through this gateway finds the queue.
        self.forwarder.wait_until(|d| d.queue(&name).is_ok()).await;
        Ok(Response::new(created))
    }

    async fn delete_queue(
        &self,
        request: Request<pb::DeleteQueueRequest>,
    ) -> Result<Response<pb::DeleteQueueResponse>, Status> {
        to_queue_leader!(self, request, name, delete_queue)
    }

    async fn purge_queue(
        &self,
        request: Request<pb::PurgeQueueRequest>,
    ) -> Result<Response<pb::PurgeQueueResponse>, Status> {
        to_queue_leader!(self, request, name, purge_queue)
    }

    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let request = request.into_inner();
        let mut queues = Vec::new();
        for host in self.one_host_per_cluster() {
            let channel = self.forwarder.channel(&host)?;
            let listed = QueueServiceClient::new(channel)
                .list_queues(request)
                .await?
                .into_inner();
            queues.extend(listed.queues);
        }
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListQueuesResponse { queues }))
    }

    async fn describe_queue(
        &self,
        request: Request<pb::DescribeQueueRequest>,
    ) -> Result<Response<pb::DescribeQueueResponse>, Status> {
        to_queue_leader!(self, request, name, describe_queue)
    }

    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        to_queue_leader!(self, request, queue, send)
    }

    async fn receive(
        &self,
        request: Request<pb::ReceiveRequest>,
    ) -> Result<Response<pb::ReceiveResponse>, Status> {
        to_queue_leader!(self, request, queue, receive)
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        to_queue_leader!(self, request, queue, ack)
    }

    async fn nack(
        &self,
        request: Request<pb::NackRequest>,
    ) -> Result<Response<pb::NackResponse>, Status> {
        to_queue_leader!(self, request, queue, nack)
    }

    async fn change_visibility(
        &self,
        request: Request<pb::ChangeVisibilityRequest>,
    ) -> Result<Response<pb::ChangeVisibilityResponse>, Status> {
        to_queue_leader!(self, request, queue, change_visibility)
    }

    async fn redrive(
        &self,
        request: Request<pb::RedriveRequest>,
    ) -> Result<Response<pb::RedriveResponse>, Status> {
        to_queue_leader!(self, request, queue, redrive)
    }
}

/// Forwards a group request (its group in field `group`) to the group's coordinator.
macro_rules! to_coordinator {
    ($self:ident, $request:ident, $method:ident) => {{
        let request = $request.into_inner();
        answer(
            $self
                .to_coordinator(&request.group, |channel| {
                    let request = request.clone();
                    async move {
                        GroupServiceClient::new(channel)
                            .$method(request)
                            .await
                            .map(Response::into_inner)
                    }
                })
                .await,
        )
    }};
}

#[tonic::async_trait]
impl GroupService for Gateway {
    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        to_coordinator!(self, request, join_group)
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        to_coordinator!(self, request, heartbeat)
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        to_coordinator!(self, request, leave_group)
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        to_coordinator!(self, request, commit_offsets)
    }

    async fn fetch_offsets(
        &self,
        request: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        to_coordinator!(self, request, fetch_offsets)
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let request = request.into_inner();
        let directory = self.forwarder.directory();
        let cluster = directory
            .default_cluster(self.default_cluster.as_deref())
            .map_err(|err| to_status(&err))?;
        let mut groups = Vec::new();
        for host in directory.hosts_of(&cluster) {
            let channel = self.forwarder.channel(&host)?;
            let listed = GroupServiceClient::new(channel)
                .list_groups(request)
                .await?
                .into_inner();
            groups.extend(listed.groups);
        }
        groups.sort();
        groups.dedup();
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        to_coordinator!(self, request, describe_group)
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        to_coordinator!(self, request, delete_group)
    }
}

/// Forwards an access request to a live host of the default cluster: rules and
/// quotas are the metadata store's, shared by every cluster on it, and the host
/// decides whether the caller may manage them.
macro_rules! to_any_host {
    ($self:ident, $request:ident, $method:ident) => {{
        let request = $request.into_inner();
        answer(
            $self
                .forwarder
                .routed(
                    |d| $self.default_host(d, None),
                    |channel| {
                        let request = request.clone();
                        async move {
                            AccessServiceClient::new(channel)
                                .$method(request)
                                .await
                                .map(Response::into_inner)
                        }
                    },
                )
                .await,
        )
    }};
}

#[tonic::async_trait]
impl AccessService for Gateway {
    /// The gateway answers for itself: it authenticated the caller.
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        Ok(Response::new(who_am_i(
            &caller(&request),
            self.access.enforced(),
        )))
    }

    async fn list_access_rules(
        &self,
        request: Request<pb::ListAccessRulesRequest>,
    ) -> Result<Response<pb::ListAccessRulesResponse>, Status> {
        to_any_host!(self, request, list_access_rules)
    }

    async fn put_access_rule(
        &self,
        request: Request<pb::PutAccessRuleRequest>,
    ) -> Result<Response<pb::PutAccessRuleResponse>, Status> {
        to_any_host!(self, request, put_access_rule)
    }

    async fn delete_access_rule(
        &self,
        request: Request<pb::DeleteAccessRuleRequest>,
    ) -> Result<Response<pb::DeleteAccessRuleResponse>, Status> {
        to_any_host!(self, request, delete_access_rule)
    }

    async fn list_quotas(
        &self,
        request: Request<pb::ListQuotasRequest>,
    ) -> Result<Response<pb::ListQuotasResponse>, Status> {
        to_any_host!(self, request, list_quotas)
    }

    async fn put_quota(
        &self,
        request: Request<pb::PutQuotaRequest>,
    ) -> Result<Response<pb::PutQuotaResponse>, Status> {
        to_any_host!(self, request, put_quota)
    }

    async fn delete_quota(
        &self,
        request: Request<pb::DeleteQuotaRequest>,
    ) -> Result<Response<pb::DeleteQuotaResponse>, Status> {
        to_any_host!(self, request, delete_quota)
    }
}

#[tonic::async_trait]
impl MetadataService for Gateway {
    /// The gateway answers for itself: it is the one host clients see, and it
    /// "leads" every partition that has a leader somewhere, so clients send it
    /// everything.
    /// The real cluster, as one of its hosts sees it: the gateway's GetMetadata
    /// names the gateway as every partition's leader, for routing.
    async fn describe_cluster(
        &self,
        request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let mut request = request.into_inner();
        let chosen = std::mem::take(&mut request.cluster);
        answer(
            self.forwarder
                .routed(
                    |directory| {
                        let cluster = if chosen.is_empty() {
                            directory.default_cluster(self.default_cluster.as_deref())?
                        } else {
                            chosen.clone()
                        };
                        any_host(directory, &cluster, self.turn())
                    },
                    |channel| {
                        let request = request.clone();
                        async move {
                            MetadataServiceClient::new(channel)
                                .describe_cluster(request)
                                .await
                                .map(Response::into_inner)
                        }
                    },
                )
                .await,
        )
    }

    async fn get_metadata(
        &self,
        request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let caller = caller(&request);
        for topic in &request.get_ref().topics {
            self.access
                .check(&caller, Operation::Describe, Resource::Topic(topic))
                .map_err(|err| to_status(&BrokerError::Access(err)))?;
        }
        let may_describe =
            |resource: Resource<'_>| self.access.allows(&caller, Operation::Describe, resource);
        let request = request.into_inner();
        let directory = self.forwarder.directory();
        let wanted =
            |name: &str| request.topics.is_empty() || request.topics.iter().any(|t| t == name);
        let mut topics = Vec::new();
        for (name, record) in directory
            .topics
            .iter()
            .filter(|(name, _)| wanted(name) && may_describe(Resource::Topic(name)))
        {
            let view = directory.topic(name).map(|(_, view)| view).ok();
            let partitions = (0..record.settings.partitions)
                .map(|p| self.partition_leader(view, LogKind::Topic, name, p))
                .collect();
            topics.push(pb::TopicMetadata {
                name: name.clone(),
                partitions,
            });
        }
        if let Some(missing) = request
            .topics
            .iter()
            .find(|t| !directory.topics.contains_key(*t))
        {
            return Err(to_status(&BrokerError::TopicNotFound(missing.clone())));
        }
        let queues = directory
            .queues
            .keys()
            .filter(|name| may_describe(Resource::Queue(name)))
            .map(|name| {
                let view = directory.queue(name).ok();
                pb::TopicMetadata {
                    name: name.clone(),
                    partitions: vec![self.partition_leader(view, LogKind::Queue, name, 0)],
                }
            })
            .collect();
        Ok(Response::new(pb::GetMetadataResponse {
            cluster: String::new(),
            hosts: vec![pb::Host {
                host_id: self.host_id.clone(),
                address: self.advertise.clone(),
                alive: true,
                controller: false,
                ..pb::Host::default()
            }],
            topics,
            queues,
        }))
    }
}

impl Gateway {
    /// A partition as the gateway presents it: led by the gateway while some host
    /// leads it, with the real replicas and in-sync set for information.
    fn partition_leader(
        &self,
        view: Option<&crate::cluster::view::ClusterView>,
        kind: LogKind,
        name: &str,
        partition: u32,
    ) -> pb::PartitionLeader {
        let state = view.and_then(|v| v.partition(kind, name, partition));
        let led = state
            .and_then(|s| s.leader.as_deref())
            .is_some_and(|leader| view.is_some_and(|v| v.hosts.contains_key(leader)));
        let mut placement = pb::PartitionLeader {
            partition,
            leader_host_id: if led {
                self.host_id.clone()
            } else {
                String::new()
            },
            leader_epoch: state.map_or(0, |s| s.leader_epoch),
            replicas: state.map(|s| s.replicas.clone()).unwrap_or_default(),
            in_sync_replicas: state.map(|s| s.isr.clone()).unwrap_or_default(),
            ..Default::default()
        };
        if let Some(view) = view
            && kind == LogKind::Topic
        {
            crate::service::add_observed(&mut placement, view, name);
        }
        placement
    }
}
