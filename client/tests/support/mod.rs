//! An in-memory broker speaking `ferry.v1`, with fault injection, so the client's
//! producer and consumer are tested over real gRPC without the real broker.
//!
//! It stores batches as sent (stamped with offsets), deduplicates idempotent batches
//! by producer id and sequence, and coordinates groups cooperatively: a partition is
//! assigned to a member only while no other member reports owning it.

#![allow(dead_code, clippy::unwrap_used)]

pub mod queue;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::v1 as pb;
use ferry_proto::v1::admin_service_server::{AdminService, AdminServiceServer};
use ferry_proto::v1::group_service_server::{GroupService, GroupServiceServer};
use ferry_proto::v1::queue_service_server::QueueServiceServer;
use ferry_proto::v1::topic_service_server::{TopicService, TopicServiceServer};
use ferry_records::BatchHeader;
use tonic::{Request, Response, Status};

type Reply<T> = Result<Response<T>, Status>;

fn status(code: tonic::Code, error: pb::ErrorCode, message: &str) -> Status {
    let detail = pb::ErrorDetail {
        code: error as i32,
        message: message.to_owned(),
        leader_hint: None,
        retry_after_ms: 0,
    };
    ferry_proto::status::status(code, &detail, &Default::default())
}

#[derive(Debug, Default)]
struct ProducerSeq {
    next_sequence: i32,
    last: Option<(i32, u64, u64)>,
}

#[derive(Debug, Default)]
struct PartitionLog {
    batches: Vec<(u64, Vec<u8>)>,
    next_offset: u64,
    producers: HashMap<i64, ProducerSeq>,
}

#[derive(Debug, Default)]
struct Member {
    owned: BTreeSet<(String, u32)>,
}

#[derive(Debug, Default)]
struct Group {
    topics: Vec<String>,
    members: BTreeMap<String, Member>,
    committed: HashMap<(String, u32), u64>,
    generation: u64,
}

/// Everything the mock broker knows.
#[derive(Debug, Default)]
pub struct State {
    topics: HashMap<String, Vec<PartitionLog>>,
    groups: HashMap<String, Group>,
    next_producer_id: i64,
    next_member: u64,
}

/// Faults to inject, counted down per produce request.
#[derive(Debug, Default)]
pub struct Faults {
    /// Store the batches, then answer UNAVAILABLE (a lost response).
    pub lose_responses: AtomicU32,
    /// Answer UNAVAILABLE without storing.
    pub unavailable: AtomicU32,
    /// Answer every produce with UNAVAILABLE.
    pub always_unavailable: AtomicBool,
    /// Reject the next batches inline with MESSAGE_TOO_LARGE, without storing.
    pub reject_batches: AtomicU32,
    /// Set when two members ever owned one partition at once.
    pub double_ownership: AtomicBool,
    /// Delay queue describes by this many milliseconds (request deadline tests).
    pub stall_queue_admin_ms: AtomicU32,
    /// Answer produce, fetch, send and receive with NOT_LEADER naming this address
    /// (a cluster host that leads nothing).
    pub leader_elsewhere: Mutex<Option<String>>,
}

impl Faults {
    /// The NOT_LEADER answer for `name`/`partition`, when leadership is elsewhere.
    pub fn not_leader(&self, name: &str, partition: u32) -> Option<Status> {
        let address = self.leader_elsewhere.lock().unwrap().clone()?;
        let message = format!("not the leader of {name}/{partition}");
        let detail = pb::ErrorDetail {
            code: pb::ErrorCode::NotLeader as i32,
            message: message.clone(),
            leader_hint: Some(pb::LeaderHint {
                topic: name.to_owned(),
                partition,
                host_id: "elsewhere".into(),
                address,
                leader_epoch: 1,
            }),
            retry_after_ms: 0,
        };
        Some(ferry_proto::status::status(
            tonic::Code::Unavailable,
            &detail,
            &Default::default(),
        ))
    }
}

/// A running mock broker.
#[derive(Clone)]
pub struct MockBroker {
    pub state: Arc<Mutex<State>>,
    pub queues: Arc<Mutex<queue::QueueState>>,
    pub faults: Arc<Faults>,
    pub address: SocketAddr,
}

impl MockBroker {
    /// Starts a mock broker on a free local port.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let faults = Arc::new(Faults::default());
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = incoming.local_addr().unwrap();
        let api = Api {
            state: Arc::clone(&state),
            faults: Arc::clone(&faults),
        };
        let queues = Arc::new(Mutex::new(queue::QueueState::default()));
        let queue_api = queue::QueueApi {
            state: Arc::clone(&queues),
            faults: Arc::clone(&faults),
        };
        let router = tonic::transport::Server::builder()
            .add_service(TopicServiceServer::new(api.clone()))
            .add_service(AdminServiceServer::new(api.clone()))
            .add_service(GroupServiceServer::new(api))
            .add_service(QueueServiceServer::new(queue_api));
        tokio::spawn(router.serve_with_incoming(incoming));
        Self {
            state,
            queues,
            faults,
            address,
        }
    }

    /// `host:port` for `Client::connect`.
    pub fn addr(&self) -> String {
        self.address.to_string()
    }

    /// Records stored in a partition.
    pub fn stored(&self, topic: &str, partition: u32) -> u64 {
        let state = self.state.lock().unwrap();
        state.topics[topic][partition as usize].next_offset
    }

    /// Forgets every member of a group (as if their sessions expired).
    pub fn expire_members(&self, group: &str) {
        let mut state = self.state.lock().unwrap();
        if let Some(group) = state.groups.get_mut(group) {
            group.members.clear();
            group.generation += 1;
        }
    }

    /// The committed offset of a group on a partition.
    pub fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        let state = self.state.lock().unwrap();
        state
            .groups
            .get(group)?
            .committed
            .get(&(topic.to_owned(), partition))
            .copied()
    }
}

#[derive(Clone)]
struct Api {
    state: Arc<Mutex<State>>,
    faults: Arc<Faults>,
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn topic_info(name: &str, logs: &[PartitionLog]) -> pb::TopicInfo {
    pb::TopicInfo {
        name: name.to_owned(),
        config: Some(pb::TopicConfig {
            partitions: logs.len() as u32,
            ..pb::TopicConfig::default()
        }),
        partitions: logs
            .iter()
            .enumerate()
            .map(|(i, log)| pb::PartitionInfo {
                partition: i as u32,
                high_watermark: log.next_offset,
                ..pb::PartitionInfo::default()
            })
            .collect(),
        created_at_ms: 0,
    }
}

impl State {
    fn append(&mut self, topic: &str, partition: u32, bytes: &[u8]) -> pb::BatchResult {
        let mut result = pb::BatchResult {
            partition,
            ..pb::BatchResult::default()
        };
        let Some(log) = self
            .topics
            .get_mut(topic)
            .and_then(|logs| logs.get_mut(partition as usize))
        else {
            result.error = Some(pb::ErrorDetail {
                code: pb::ErrorCode::PartitionNotFound as i32,
                ..pb::ErrorDetail::default()
            });
            return result;
        };
        let header = ferry_records::validate_batch(bytes, 1 << 20).unwrap();
        let count = u64::from(header.record_count);
        if header.has_producer() {
            let seq = log.producers.entry(header.producer_id).or_default();
            if let Some((base, first, last)) = seq.last
                && base == header.base_sequence
            {
                result.base_offset = first;
                result.last_offset = last;
                result.duplicate = true;
                return result;
            }
            if header.base_sequence != seq.next_sequence {
                result.error = Some(pb::ErrorDetail {
                    code: pb::ErrorCode::OutOfOrderSequence as i32,
                    message: format!(
                        "expected sequence {}, got {}",
                        seq.next_sequence, header.base_sequence
                    ),
                    ..pb::ErrorDetail::default()
                });
                return result;
            }
            seq.next_sequence = header.base_sequence + header.record_count as i32;
            seq.last = Some((
                header.base_sequence,
                log.next_offset,
                log.next_offset + count - 1,
            ));
        }
        let mut stored = bytes.to_vec();
        BatchHeader::set_base_offset(&mut stored, log.next_offset);
        result.base_offset = log.next_offset;
        result.last_offset = log.next_offset + count - 1;
        log.batches.push((log.next_offset, stored));
        log.next_offset += count;
        result
    }

    /// The cooperative assignment: partitions dealt round-robin over members sorted
    /// by id, withheld while another member still owns them.
    fn assigned(&mut self, group_name: &str, member_id: &str) -> Vec<pb::TopicPartition> {
        let Some(group) = self.groups.get(group_name) else {
            return Vec::new();
        };
        let mut all = Vec::new();
        for topic in &group.topics {
            let count = self.topics.get(topic).map_or(0, Vec::len);
            all.extend((0..count as u32).map(|p| (topic.clone(), p)));
        }
        let members: Vec<&String> = group.members.keys().collect();
        let Some(index) = members.iter().position(|m| *m == member_id) else {
            return Vec::new();
        };
        all.iter()
            .enumerate()
            .filter(|(i, _)| i % members.len() == index)
            .filter(|(_, tp)| {
                group
                    .members
                    .iter()
                    .all(|(id, m)| id == member_id || !m.owned.contains(*tp))
            })
            .map(|(_, (topic, partition))| pb::TopicPartition {
                topic: topic.clone(),
                partition: *partition,
            })
            .collect()
    }
}

#[tonic::async_trait]
impl TopicService for Api {
    async fn produce(&self, request: Request<pb::ProduceRequest>) -> Reply<pb::ProduceResponse> {
        let request = request.into_inner();
        let first = request
            .batches
            .first()
            .and_then(|b| b.partition)
            .unwrap_or(0);
        if let Some(status) = self.faults.not_leader(&request.topic, first) {
            return Err(status);
        }
        if self.faults.always_unavailable.load(Ordering::SeqCst) || take(&self.faults.unavailable) {
            return Err(Status::unavailable("injected: unavailable"));
        }
        let mut state = self.state.lock().unwrap();
        let mut batches = Vec::new();
        for batch in &request.batches {
            let partition = batch.partition.unwrap_or(0);
            if take(&self.faults.reject_batches) {
                batches.push(pb::BatchResult {
                    partition,
                    error: Some(pb::ErrorDetail {
                        code: pb::ErrorCode::MessageTooLarge as i32,
                        message: "injected: too large".into(),
                        ..pb::ErrorDetail::default()
                    }),
                    ..pb::BatchResult::default()
                });
                continue;
            }
            batches.push(state.append(&request.topic, partition, &batch.records));
        }
        if take(&self.faults.lose_responses) {
            return Err(Status::unavailable("injected: response lost"));
        }
        Ok(Response::new(pb::ProduceResponse {
            batches,
            ..pb::ProduceResponse::default()
        }))
    }

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Reply<pb::FetchResponse> {
        let request = request.into_inner();
        if let Some(first) = request.partitions.first()
            && let Some(status) = self.faults.not_leader(&first.topic, first.partition)
        {
            return Err(status);
        }
        let mut partitions = Vec::new();
        let mut total = 0;
        {
            let state = self.state.lock().unwrap();
            for target in &request.partitions {
                let log = &state.topics[&target.topic][target.partition as usize];
                let mut records = Vec::new();
                for (_, bytes) in &log.batches {
                    let header = BatchHeader::parse(bytes).unwrap();
                    if header.next_offset() <= target.offset {
                        continue;
                    }
                    if !records.is_empty()
                        && records.len() + bytes.len() > target.max_bytes as usize
                    {
                        break;
                    }
                    records.extend_from_slice(bytes);
                }
                total += records.len();
                partitions.push(pb::FetchedPartition {
                    topic: target.topic.clone(),
                    partition: target.partition,
                    records: Bytes::from(records),
                    high_watermark: log.next_offset,
                    log_start_offset: 0,
                    ..Default::default()
                });
            }
        }
        if total == 0 {
            let wait = Duration::from_millis(u64::from(request.max_wait_ms).min(20));
            tokio::time::sleep(wait).await;
        }
        Ok(Response::new(pb::FetchResponse { partitions }))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Reply<pb::ListOffsetsResponse> {
        let request = request.into_inner();
        let state = self.state.lock().unwrap();
        let logs = &state.topics[&request.topic];
        let offsets = request
            .queries
            .iter()
            .map(|q| {
                let end = logs[q.partition as usize].next_offset;
                let offset = match q.spec {
                    Some(pb::offset_query::Spec::Latest(_)) => end,
                    _ => 0,
                };
                pb::PartitionOffset {
                    partition: q.partition,
                    offset,
                    timestamp_ms: -1,
                }
            })
            .collect();
        Ok(Response::new(pb::ListOffsetsResponse { offsets }))
    }

    async fn init_producer(
        &self,
        _request: Request<pb::InitProducerRequest>,
    ) -> Reply<pb::InitProducerResponse> {
        let mut state = self.state.lock().unwrap();
        state.next_producer_id += 1;
        Ok(Response::new(pb::InitProducerResponse {
            producer_id: state.next_producer_id,
            producer_epoch: 0,
        }))
    }
}

#[tonic::async_trait]
impl AdminService for Api {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Reply<pb::CreateTopicResponse> {
        let request = request.into_inner();
        let partitions = request.config.map_or(1, |c| c.partitions);
        let mut state = self.state.lock().unwrap();
        if state.topics.contains_key(&request.name) {
            return Err(status(
                tonic::Code::AlreadyExists,
                pb::ErrorCode::TopicAlreadyExists,
                "exists",
            ));
        }
        let logs: Vec<PartitionLog> = (0..partitions).map(|_| PartitionLog::default()).collect();
        let info = topic_info(&request.name, &logs);
        state.topics.insert(request.name, logs);
        Ok(Response::new(pb::CreateTopicResponse { topic: Some(info) }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Reply<pb::DeleteTopicResponse> {
        self.state
            .lock()
            .unwrap()
            .topics
            .remove(&request.into_inner().name);
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Reply<pb::ListTopicsResponse> {
        let state = self.state.lock().unwrap();
        let topics = state
            .topics
            .iter()
            .map(|(name, logs)| topic_info(name, logs))
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Reply<pb::DescribeTopicResponse> {
        let name = request.into_inner().name;
        let state = self.state.lock().unwrap();
        let logs = state.topics.get(&name).ok_or_else(|| {
            status(
                tonic::Code::NotFound,
                pb::ErrorCode::TopicNotFound,
                &format!("topic '{name}' not found"),
            )
        })?;
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(topic_info(&name, logs)),
        }))
    }
}

fn unknown_member() -> Status {
    status(
        tonic::Code::NotFound,
        pb::ErrorCode::UnknownMember,
        "unknown member",
    )
}

#[tonic::async_trait]
impl GroupService for Api {
    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Reply<pb::JoinGroupResponse> {
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        state.next_member += 1;
        let member_id = format!("m{:03}", state.next_member);
        let group = state.groups.entry(request.group.clone()).or_default();
        group.topics = request.topics;
        group.members.insert(member_id.clone(), Member::default());
        group.generation += 1;
        let generation = group.generation;
        let assigned = state.assigned(&request.group, &member_id);
        Ok(Response::new(pb::JoinGroupResponse {
            member_id,
            generation,
            heartbeat_interval_ms: 50,
            assigned,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Reply<pb::HeartbeatResponse> {
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        let group = state
            .groups
            .get_mut(&request.group)
            .ok_or_else(unknown_member)?;
        let owned: BTreeSet<(String, u32)> = request
            .owned
            .iter()
            .map(|tp| (tp.topic.clone(), tp.partition))
            .collect();
        for (id, member) in &group.members {
            if *id != request.member_id && !member.owned.is_disjoint(&owned) {
                self.faults.double_ownership.store(true, Ordering::SeqCst);
            }
        }
        let member = group
            .members
            .get_mut(&request.member_id)
            .ok_or_else(unknown_member)?;
        member.owned = owned;
        let generation = group.generation;
        let assigned = state.assigned(&request.group, &request.member_id);
        Ok(Response::new(pb::HeartbeatResponse {
            generation,
            assigned,
            heartbeat_interval_ms: 50,
        }))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Reply<pb::LeaveGroupResponse> {
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        if let Some(group) = state.groups.get_mut(&request.group) {
            group.members.remove(&request.member_id);
            group.generation += 1;
        }
        Ok(Response::new(pb::LeaveGroupResponse {}))
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Reply<pb::CommitOffsetsResponse> {
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        let group = state.groups.entry(request.group).or_default();
        if !request.member_id.is_empty() {
            let member = group
                .members
                .get(&request.member_id)
                .ok_or_else(unknown_member)?;
            for commit in &request.offsets {
                if !member
                    .owned
                    .contains(&(commit.topic.clone(), commit.partition))
                {
                    return Err(status(
                        tonic::Code::FailedPrecondition,
                        pb::ErrorCode::PartitionNotOwned,
                        "not owned",
                    ));
                }
            }
        }
        for commit in request.offsets {
            group
                .committed
                .insert((commit.topic, commit.partition), commit.offset);
        }
        Ok(Response::new(pb::CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(
        &self,
        request: Request<pb::FetchOffsetsRequest>,
    ) -> Reply<pb::FetchOffsetsResponse> {
        let request = request.into_inner();
        let state = self.state.lock().unwrap();
        let offsets = state
            .groups
            .get(&request.group)
            .map(|group| {
                group
                    .committed
                    .iter()
                    .filter(|((topic, partition), _)| {
                        request.partitions.is_empty()
                            || request
                                .partitions
                                .iter()
                                .any(|tp| tp.topic == *topic && tp.partition == *partition)
                    })
                    .map(|((topic, partition), offset)| pb::CommittedOffset {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: *offset,
                        ..pb::CommittedOffset::default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(pb::FetchOffsetsResponse { offsets }))
    }

    async fn list_groups(
        &self,
        _request: Request<pb::ListGroupsRequest>,
    ) -> Reply<pb::ListGroupsResponse> {
        let state = self.state.lock().unwrap();
        Ok(Response::new(pb::ListGroupsResponse {
            groups: state.groups.keys().cloned().collect(),
        }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Reply<pb::DescribeGroupResponse> {
        Ok(Response::new(pb::DescribeGroupResponse {
            group: request.into_inner().group,
            ..pb::DescribeGroupResponse::default()
        }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Reply<pb::DeleteGroupResponse> {
        let mut state = self.state.lock().unwrap();
        state.groups.remove(&request.into_inner().group);
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }
}
