//! `MetadataService`: which host serves which partition, for smart clients.

use std::sync::Arc;

use ferry_proto::v1 as pb;
use ferry_proto::v1::metadata_service_server::MetadataService;
use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::topic::STANDALONE_LEADER_EPOCH;

/// The metadata API over a broker.
pub struct MetadataApi {
    broker: Arc<Broker>,
}

impl MetadataApi {
    /// Serves metadata requests for `broker`.
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}

#[tonic::async_trait]
impl MetadataService for MetadataApi {
    async fn get_metadata(
        &self,
        request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let wanted = request.into_inner().topics;
        let host_id = self.broker.config.host_id.clone();
        let topics = if wanted.is_empty() {
            self.broker.topics.list()
        } else {
            let found: Result<Vec<_>, _> =
                wanted.iter().map(|t| self.broker.topics.get(t)).collect();
            self.broker.answer("GetMetadata", found)?
        };
        let topics = topics
            .iter()
            .map(|topic| pb::TopicMetadata {
                name: topic.name().to_owned(),
                partitions: topic
                    .partitions
                    .iter()
                    .map(|p| pb::PartitionLeader {
                        partition: p.index(),
                        leader_host_id: host_id.clone(),
                        leader_epoch: STANDALONE_LEADER_EPOCH,
                        replicas: vec![host_id.clone()],
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::GetMetadataResponse {
            cluster: "standalone".to_owned(),
            hosts: vec![pb::Host {
                host_id: host_id.clone(),
                address: self.broker.config.advertised_address(),
                alive: true,
            }],
            topics,
        }))
    }
}
