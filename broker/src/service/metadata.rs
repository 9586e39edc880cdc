//! `MetadataService`: which host serves which partition, for smart clients.

use std::collections::BTreeSet;
use std::sync::Arc;

use ferry_proto::v1 as pb;
use ferry_proto::v1::metadata_service_server::MetadataService;
use ferry_replication::LogKind;
use tonic::{Request, Response, Status};

use super::auth::Guard;
use super::status::Answer;
use crate::access::{Caller, Operation, Resource};
use crate::broker::Broker;
use crate::cluster::routing::Routing;
use crate::error::BrokerError;
use crate::topic::{STANDALONE_LEADER_EPOCH, Topic};

/// The metadata API over a broker.
pub struct MetadataApi {
    broker: Arc<Broker>,
    guard: Guard,
}

impl MetadataApi {
    /// Serves metadata requests for `broker`, checking callers with `guard`.
    pub fn new(broker: Arc<Broker>, guard: Guard) -> Self {
        Self { broker, guard }
    }
}

#[tonic::async_trait]
impl MetadataService for MetadataApi {
    async fn get_metadata(
        &self,
        request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        // Hosts are for every caller the listener let in; topics and queues only for
        // those who may describe them.
        let caller = self.guard.check(
            "GetMetadata",
            &request,
            Operation::Describe,
            request.get_ref().topics.iter().map(|t| Resource::Topic(t)),
        )?;
        let wanted = request.into_inner().topics;
        let response = self.metadata("GetMetadata", &caller, &wanted)?;
        Ok(Response::new(response))
    }

    async fn describe_cluster(
        &self,
        request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let caller = self.guard.check(
            "DescribeCluster",
            &request,
            Operation::Describe,
            request.get_ref().topics.iter().map(|t| Resource::Topic(t)),
        )?;
        let request = request.into_inner();
        let own = self
            .broker
            .routing
            .as_ref()
            .map_or("standalone", |routing| routing.cluster());
        if !request.cluster.is_empty() && request.cluster != own {
            let elsewhere = BrokerError::InvalidArgument(format!(
                "this host serves cluster {own}, not {}; ask one of its hosts or a gateway",
                request.cluster
            ));
            return Err(self.broker.fail("DescribeCluster", &elsewhere));
        }
        let metadata = self.metadata("DescribeCluster", &caller, &request.topics)?;
        Ok(Response::new(pb::DescribeClusterResponse {
            cluster: metadata.cluster,
            hosts: metadata.hosts,
            topics: metadata.topics,
            queues: metadata.queues,
        }))
    }
}

impl MetadataApi {
    /// This host's view of its cluster (or itself, standalone): `wanted` topics (all
    /// when empty) and every queue the caller may describe.
    fn metadata(
        &self,
        method: &'static str,
        caller: &Caller,
        wanted: &[String],
    ) -> Result<pb::GetMetadataResponse, Status> {
        let topics = if wanted.is_empty() {
            self.broker.topics.list()
        } else {
            let found: Result<Vec<_>, _> =
                wanted.iter().map(|t| self.broker.topics.get(t)).collect();
            self.broker.answer(method, found)?
        };
        let mut response = match &self.broker.routing {
            Some(routing) => self.cluster_metadata(routing, &topics),
            None => self.standalone_metadata(&topics),
        };
        response
            .topics
            .retain(|t| self.guard.may_describe(caller, Resource::Topic(&t.name)));
        response
            .queues
            .retain(|q| self.guard.may_describe(caller, Resource::Queue(&q.name)));
        Ok(response)
    }

    /// This host leads everything.
    fn standalone_metadata(&self, topics: &[Arc<Topic>]) -> pb::GetMetadataResponse {
        let host_id = self.broker.config.host_id.clone();
        let leader = |kind: LogKind, name: &str, partition: u32| {
            let local = (kind == LogKind::Topic)
                .then(|| self.broker.topics.get(name).ok())
                .flatten()
                .and_then(|topic| topic.partition(partition).ok().cloned());
            pb::PartitionLeader {
                partition,
                leader_host_id: host_id.clone(),
                leader_epoch: STANDALONE_LEADER_EPOCH,
                replicas: vec![host_id.clone()],
                in_sync_replicas: vec![host_id.clone()],
                high_watermark: local.as_ref().map(|p| p.high_watermark()),
                log_end_offset: local.as_ref().map(|p| p.log().end_offset()),
                follower_lag: Default::default(),
            }
        };
        let (topics, queues) = self.placements(topics, leader);
        pb::GetMetadataResponse {
            cluster: "standalone".to_owned(),
            hosts: vec![pb::Host {
                host_id: host_id.clone(),
                address: self.broker.config.advertised_address(),
                alive: true,
                controller: true,
                ..pb::Host::default()
            }],
            topics,
            queues,
        }
    }

    /// Placement and leaders as this host's view of the cluster has them.
    fn cluster_metadata(
        &self,
        routing: &Routing,
        topics: &[Arc<Topic>],
    ) -> pb::GetMetadataResponse {
        let view = routing.view();
        let controller = view
            .controller
            .as_ref()
            .map(|(record, _)| record.host_id.as_str());
        let mut hosts: Vec<pb::Host> = view
            .hosts
            .values()
            .map(|host| pb::Host {
                host_id: host.host_id.clone(),
                address: host.advertise.clone(),
                alive: true,
                controller: controller == Some(host.host_id.as_str()),
                zone: host.zone.clone().unwrap_or_default(),
                draining: view.draining.contains(&host.host_id),
            })
            .collect();
        let gone: BTreeSet<&String> = view
            .partitions
            .values()
            .flat_map(|(state, _)| state.replicas.iter())
            .filter(|host| !view.hosts.contains_key(*host))
            .collect();
        hosts.extend(gone.into_iter().map(|host| pb::Host {
            host_id: host.clone(),
            address: String::new(),
            alive: false,
            controller: false,
            zone: String::new(),
            draining: view.draining.contains(host),
        }));
        let partition = |kind: LogKind, name: &str, index: u32| {
            let state = view.partition(kind, name, index);
            let mut placement = pb::PartitionLeader {
                partition: index,
                leader_host_id: state.and_then(|s| s.leader.clone()).unwrap_or_default(),
                leader_epoch: state.map_or(0, |s| s.leader_epoch),
                replicas: state.map(|s| s.replicas.clone()).unwrap_or_default(),
                in_sync_replicas: state.map(|s| s.isr.clone()).unwrap_or_default(),
                ..Default::default()
            };
            if kind == LogKind::Topic {
                add_observed(&mut placement, &view, name);
            }
            placement
        };
        let (topics, queues) = self.placements(topics, partition);
        pb::GetMetadataResponse {
            cluster: routing.cluster().to_owned(),
            hosts,
            topics,
            queues,
        }
    }

    /// The placement of `topics` and of every queue, each partition described by
    /// `describe(kind, name, partition)`.
    fn placements(
        &self,
        topics: &[Arc<Topic>],
        describe: impl Fn(LogKind, &str, u32) -> pb::PartitionLeader,
    ) -> (Vec<pb::TopicMetadata>, Vec<pb::TopicMetadata>) {
        let topics = topics
            .iter()
            .map(|topic| pb::TopicMetadata {
                name: topic.name().to_owned(),
                partitions: (0..topic.record.settings.partitions)
                    .map(|index| describe(LogKind::Topic, topic.name(), index))
                    .collect(),
            })
            .collect();
        let queues = self
            .broker
            .queues
            .list()
            .iter()
            .map(|queue| pb::TopicMetadata {
                name: queue.name().to_owned(),
                partitions: vec![describe(LogKind::Queue, queue.name(), 0)],
            })
            .collect();
        (topics, queues)
    }
}

/// Adds what the partition's current leader last published to `placement`.
pub(crate) fn add_observed(
    placement: &mut pb::PartitionLeader,
    view: &crate::cluster::view::ClusterView,
    topic: &str,
) {
    if let Some(observed) = view.observed_topic(topic, placement.partition) {
        placement.high_watermark = Some(observed.high_watermark);
        placement.log_end_offset = Some(observed.log_end);
        placement.follower_lag = observed
            .follower_lag
            .iter()
            .filter_map(|(host, lag)| lag.map(|lag| (host.clone(), lag)))
            .collect();
    }
}
