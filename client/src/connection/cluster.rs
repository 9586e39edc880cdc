//! Who serves what: the cluster's hosts, and each partition's replicas and leader.

use ferry_proto::v1 as pb;
use ferry_proto::v1::metadata_service_client::MetadataServiceClient;

use super::Client;
use super::routing::Kind;
use crate::error::ClientError;

/// A broker host as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Its id.
    pub host_id: String,
    /// Where its gRPC service is (empty for a host that is gone).
    pub address: String,
    /// Registered now.
    pub alive: bool,
    /// The cluster's elected controller.
    pub controller: bool,
    /// The failure domain it runs in (empty when unknown).
    pub zone: String,
    /// Asked to leave: its replicas are moving to the other hosts.
    pub draining: bool,
}

/// One partition's replicas and leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlacement {
    /// Partition number.
    pub partition: u32,
    /// The leading host, if any.
    pub leader: Option<String>,
    /// Bumped on every leader change.
    pub leader_epoch: u64,
    /// Hosts holding a replica.
    pub replicas: Vec<String>,
    /// Replicas holding everything committed.
    pub in_sync_replicas: Vec<String>,
    /// What consumers may read below, as the leader last published it.
    pub high_watermark: Option<u64>,
    /// The leader's log end, as it last published it.
    pub log_end_offset: Option<u64>,
    /// Each follower's lag behind the leader's log end, in records.
    pub follower_lag: std::collections::BTreeMap<String, u64>,
}

/// A topic's or queue's placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePlacement {
    /// Topic or queue name.
    pub name: String,
    /// Its partitions (one for a queue).
    pub partitions: Vec<PartitionPlacement>,
}

/// What a host knows of its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// The cluster's name (`standalone` for a standalone host).
    pub cluster: String,
    /// Its hosts, live and gone.
    pub hosts: Vec<HostInfo>,
    /// Topics.
    pub topics: Vec<ResourcePlacement>,
    /// Queues.
    pub queues: Vec<ResourcePlacement>,
}

impl ClusterMetadata {
    fn from_proto(response: pb::GetMetadataResponse) -> Self {
        let placement = |resource: pb::TopicMetadata| ResourcePlacement {
            name: resource.name,
            partitions: resource
                .partitions
                .into_iter()
                .map(|p| PartitionPlacement {
                    partition: p.partition,
                    leader: Some(p.leader_host_id).filter(|id| !id.is_empty()),
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas,
                    in_sync_replicas: p.in_sync_replicas,
                    high_watermark: p.high_watermark,
                    log_end_offset: p.log_end_offset,
                    follower_lag: p.follower_lag.into_iter().collect(),
                })
                .collect(),
        };
        Self {
            cluster: response.cluster,
            hosts: response
                .hosts
                .into_iter()
                .map(|h| HostInfo {
                    host_id: h.host_id,
                    address: h.address,
                    alive: h.alive,
                    controller: h.controller,
                    zone: h.zone,
                    draining: h.draining,
                })
                .collect(),
            topics: response.topics.into_iter().map(placement).collect(),
            queues: response.queues.into_iter().map(placement).collect(),
        }
    }

    /// The address of a live host.
    fn address_of(&self, host_id: &str) -> Option<&str> {
        self.hosts
            .iter()
            .find(|h| h.host_id == host_id && h.alive && !h.address.is_empty())
            .map(|h| h.address.as_str())
    }
}

impl Client {
    /// The cluster's hosts and the placement of `topics` (all topics when empty) and of
    /// every queue, as the connected host sees them.
    pub async fn cluster_metadata(&self, topics: &[&str]) -> Result<ClusterMetadata, ClientError> {
        let request = pb::GetMetadataRequest {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        };
        let response = MetadataServiceClient::new(self.service())
            .max_decoding_message_size(self.max_message_bytes)
            .get_metadata(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(ClusterMetadata::from_proto(response))
    }

    /// The cluster as its hosts see it: real hosts and leaders also through a
    /// gateway (whose [`Self::cluster_metadata`] names itself, for routing).
    pub async fn describe_cluster(&self, topics: &[&str]) -> Result<ClusterMetadata, ClientError> {
        let request = pb::DescribeClusterRequest {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            cluster: String::new(),
        };
        let response = MetadataServiceClient::new(self.service())
            .max_decoding_message_size(self.max_message_bytes)
            .describe_cluster(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(ClusterMetadata::from_proto(pb::GetMetadataResponse {
            cluster: response.cluster,
            hosts: response.hosts,
            topics: response.topics,
            queues: response.queues,
        }))
    }

    /// Learns every leader of a topic (or a queue) at once from the connected host;
    /// best effort: routing falls back to `NOT_LEADER` hints if this fails.
    pub(crate) async fn refresh_leaders(&self, kind: Kind, name: &str) {
        let wanted: Vec<&str> = match kind {
            Kind::Topic => vec![name],
            Kind::Queue => Vec::new(),
        };
        let Ok(metadata) = self.cluster_metadata(&wanted).await else {
            return;
        };
        let resources = match kind {
            Kind::Topic => &metadata.topics,
            Kind::Queue => &metadata.queues,
        };
        for resource in resources.iter().filter(|r| r.name == name) {
            for partition in &resource.partitions {
                match partition
                    .leader
                    .as_deref()
                    .and_then(|leader| metadata.address_of(leader))
                {
                    Some(address) => self.remember_leader(kind, name, partition.partition, address),
                    None => self.forget_leader(kind, name, partition.partition),
                }
            }
        }
    }
}
