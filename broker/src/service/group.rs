//! `GroupService`: membership, assignment and committed offsets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1 as pb;
use ferry_proto::v1::group_service_client::GroupServiceClient;
use ferry_proto::v1::group_service_server::GroupService;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::auth::{Guard, audit_admin, caller};
use super::peers::{FORWARDED, PeerChannel, PeerChannels};
use super::status::Answer;
use crate::access::{Caller, Operation, Resource};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::TopicPartition;
use crate::names::{validate_group_name, validate_topic_name};
use crate::tls::HostDialing;

/// How long passing a group request on waits to connect to its coordinator.
const PASS_ON_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The consumer group API over a broker.
pub struct GroupApi {
    broker: Arc<Broker>,
    guard: Guard,
    /// Cluster mode: channels to the hosts coordinating other groups.
    peers: PeerChannels,
}

impl GroupApi {
    /// Serves group requests for `broker`, checking callers with `guard` (before a
    /// request is passed on: the coordinator trusts its peers), passing them on to
    /// other hosts as `dialing` says.
    pub fn new(broker: Arc<Broker>, guard: Guard, dialing: HostDialing) -> Self {
        let peers = PeerChannels::new(PASS_ON_CONNECT_TIMEOUT, dialing, broker.config.http2);
        Self {
            broker,
            guard,
            peers,
        }
    }

    /// Refuses the request unless its caller may do `operation` on its group.
    fn check<T: GroupRequest>(
        &self,
        method: &'static str,
        request: &Request<T>,
        operation: Operation,
    ) -> Result<Caller, Status> {
        let group = request.get_ref().group();
        self.guard
            .check(method, request, operation, [Resource::Group(group)])
    }

    /// Cluster mode: the address of the host coordinating `group` when it is not this
    /// one — unless the request was passed on already, which is then served here.
    fn coordinator_elsewhere<T>(&self, group: &str, request: &Request<T>) -> Option<String> {
        if request.metadata().contains_key(FORWARDED) {
            return None;
        }
        let routing = self.broker.routing.as_ref()?;
        let (host, address) = routing.group_coordinator(group)?;
        (host != routing.host_id()).then_some(address)
    }

    /// Passes a group request on to the host coordinating its group, so a group's
    /// members meet on one host whichever host each one talks to.
    async fn pass_on<Req, Resp, Fut>(
        &self,
        address: &str,
        request: Req,
        call: impl FnOnce(GroupServiceClient<PeerChannel>, Request<Req>) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        let channel = self.peers.channel(address)?;
        let mut forwarded = Request::new(request);
        forwarded
            .metadata_mut()
            .insert(FORWARDED, MetadataValue::from_static("1"));
        call(GroupServiceClient::new(channel), forwarded).await
    }
}

/// Passes the request on when another host coordinates its group.
macro_rules! pass_on_if_elsewhere {
    ($self:ident, $request:ident, $method:ident) => {
        if let Some(address) = $self.coordinator_elsewhere(&$request.get_ref().group, &$request) {
            return $self
                .pass_on(
                    &address,
                    $request.into_inner(),
                    |mut client, request| async move { client.$method(request).await },
                )
                .await;
        }
    };
}

/// A group request: the group it is about.
trait GroupRequest {
    fn group(&self) -> &str;
}

macro_rules! group_request {
    ($($t:ty),*) => {$(
        impl GroupRequest for $t {
            fn group(&self) -> &str {
                &self.group
            }
        }
    )*};
}

group_request!(
    pb::JoinGroupRequest,
    pb::HeartbeatRequest,
    pb::LeaveGroupRequest,
    pb::CommitOffsetsRequest,
    pb::FetchOffsetsRequest,
    pb::DescribeGroupRequest,
    pb::DeleteGroupRequest
);

fn to_pb(partitions: Vec<TopicPartition>) -> Vec<pb::TopicPartition> {
    partitions
        .into_iter()
        .map(|tp| pb::TopicPartition {
            topic: tp.topic,
            partition: tp.partition,
        })
        .collect()
}

fn from_pb(partitions: &[pb::TopicPartition]) -> Vec<TopicPartition> {
    partitions
        .iter()
        .map(|tp| TopicPartition::new(tp.topic.clone(), tp.partition))
        .collect()
}

#[tonic::async_trait]
impl GroupService for GroupApi {
    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        self.check("JoinGroup", &request, Operation::Join)?;
        pass_on_if_elsewhere!(self, request, join_group);
        let request = request.into_inner();
        let result = (|| {
            validate_group_name(&request.group)?;
            if request.topics.is_empty() {
                return Err(BrokerError::InvalidArgument(
                    "a member must subscribe to at least one topic".into(),
                ));
            }
            for topic in &request.topics {
                validate_topic_name(topic)?;
            }
            let partitions_of = |t: &str| self.broker.partitions_of(t);
            Ok(self.broker.groups().join(
                Instant::now(),
                &request.group,
                request.topics.clone(),
                request.session_timeout_ms,
                &request.client_id,
                &partitions_of,
            )?)
        })();
        let joined = self.broker.answer("JoinGroup", result)?;
        tracing::info!(group = %request.group, member = %joined.member_id, generation = joined.generation, "member joined");
        Ok(Response::new(pb::JoinGroupResponse {
            member_id: joined.member_id,
            generation: joined.generation,
            heartbeat_interval_ms: joined.heartbeat_interval_ms,
            assigned: to_pb(joined.assigned),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.check("Heartbeat", &request, Operation::Join)?;
        pass_on_if_elsewhere!(self, request, heartbeat);
        let request = request.into_inner();
        let owned = from_pb(&request.owned);
        let result = self
            .broker
            .groups()
            .heartbeat(Instant::now(), &request.group, &request.member_id, &owned)
            .map_err(BrokerError::from);
        let beat = self.broker.answer("Heartbeat", result)?;
        Ok(Response::new(pb::HeartbeatResponse {
            generation: beat.generation,
            assigned: to_pb(beat.assigned),
            heartbeat_interval_ms: beat.heartbeat_interval_ms,
        }))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        self.check("LeaveGroup", &request, Operation::Join)?;
        pass_on_if_elsewhere!(self, request, leave_group);
        let request = request.into_inner();
        let result = self
            .broker
            .groups()
            .leave(&request.group, &request.member_id)
            .map_err(BrokerError::from);
        self.broker.answer("LeaveGroup", result)?;
        tracing::info!(group = %request.group, member = %request.member_id, "member left");
        Ok(Response::new(pb::LeaveGroupResponse {}))
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        self.check("CommitOffsets", &request, Operation::Commit)?;
        // As with Kafka: committing a topic's position needs the right to read it.
        self.guard.check(
            "CommitOffsets",
            &request,
            Operation::Consume,
            request
                .get_ref()
                .offsets
                .iter()
                .map(|o| Resource::Topic(&o.topic)),
        )?;
        pass_on_if_elsewhere!(self, request, commit_offsets);
        let request = request.into_inner();
        let member = (!request.member_id.is_empty()).then_some(request.member_id.as_str());
        let offsets = request
            .offsets
            .into_iter()
            .map(|o| (o.topic, o.partition, o.offset, o.metadata))
            .collect();
        let result = self
            .broker
            .commit_offsets(&request.group, member, offsets)
            .await;
        self.broker.answer("CommitOffsets", result)?;
        Ok(Response::new(pb::CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(
        &self,
        request: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        self.check("FetchOffsets", &request, Operation::Describe)?;
        pass_on_if_elsewhere!(self, request, fetch_offsets);
        let request = request.into_inner();
        let result = validate_group_name(&request.group);
        self.broker.answer("FetchOffsets", result)?;
        let only: Vec<(String, u32)> = request
            .partitions
            .iter()
            .map(|tp| (tp.topic.clone(), tp.partition))
            .collect();
        let offsets = self
            .broker
            .offsets
            .fetch(&request.group, &only)
            .into_iter()
            .map(|(topic, partition, c)| pb::CommittedOffset {
                topic,
                partition,
                offset: c.offset,
                metadata: c.metadata,
                committed_at_ms: c.committed_at_ms,
            })
            .collect();
        Ok(Response::new(pb::FetchOffsetsResponse { offsets }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let caller = caller(&request);
        let mut groups = self.broker.groups().list();
        groups.extend(self.broker.offsets.groups());
        groups.sort();
        groups.dedup();
        groups.retain(|g| self.guard.may_describe(&caller, Resource::Group(g)));
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        self.check("DescribeGroup", &request, Operation::Describe)?;
        pass_on_if_elsewhere!(self, request, describe_group);
        let group = request.into_inner().group;
        self.broker
            .answer("DescribeGroup", validate_group_name(&group))?;
        let snapshot = self.broker.groups().describe(&group);
        let committed = self.broker.offsets.fetch(&group, &[]);
        if snapshot.is_none() && committed.is_empty() {
            let missing = BrokerError::GroupNotFound(group);
            return Err(self.broker.fail("DescribeGroup", &missing));
        }
        let (generation, members) = snapshot.map_or((0, Vec::new()), |s| {
            let members = s
                .members
                .into_iter()
                .map(|m| pb::GroupMember {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    assigned: to_pb(m.assigned),
                    owned: to_pb(m.owned),
                })
                .collect();
            (s.generation, members)
        });
        let lag = committed
            .into_iter()
            .filter_map(|(topic, partition, c)| {
                let hw = self
                    .broker
                    .topics
                    .get(&topic)
                    .ok()?
                    .partition(partition)
                    .ok()?
                    .high_watermark();
                Some(pb::PartitionLag {
                    topic,
                    partition,
                    committed_offset: c.offset,
                    high_watermark: hw,
                    lag: hw.saturating_sub(c.offset),
                })
            })
            .collect();
        Ok(Response::new(pb::DescribeGroupResponse {
            group,
            generation,
            members,
            lag,
        }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let caller = self.check("DeleteGroup", &request, Operation::Admin)?;
        pass_on_if_elsewhere!(self, request, delete_group);
        let group = request.into_inner().group;
        let result = self.broker.delete_group(&group).await;
        self.broker.answer("DeleteGroup", result)?;
        audit_admin(&caller, "delete-group", &group);
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }
}
