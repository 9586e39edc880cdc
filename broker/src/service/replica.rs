//! `ReplicaService`: the leader's side of replication, for the other hosts of the
//! cluster. Converts protobuf to [`ReplicaFetch`] and back; the logic is in
//! `host::replication`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::internal::v1 as pb;
use ferry_proto::internal::v1::replica_service_server::ReplicaService;
use ferry_replication::LogKind;
use tonic::{Request, Response, Status};

use super::replica_leader::count_sent;
use super::status::Answer;
use crate::broker::Broker;
use crate::config::ReplicationConfig;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::host::replication::{
    ReplicaData, ReplicaFetch, ReplicaReading, ReplicaRecords, SnapshotFetch, serve_fetch,
    serve_snapshot,
};

/// The replica service of one host.
pub struct ReplicaApi {
    broker: Arc<Broker>,
}

impl ReplicaApi {
    /// Serves `broker`'s partitions to their followers.
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}

#[tonic::async_trait]
impl ReplicaService for ReplicaApi {
    async fn replica_fetch(
        &self,
        request: Request<pb::ReplicaFetchRequest>,
    ) -> Result<Response<pb::ReplicaFetchResponse>, Status> {
        let fetch = fetch_from_wire(request.into_inner(), &self.broker.config.replication);
        let fetch = self.broker.answer("ReplicaFetch", fetch)?;
        let mut answer = self.broker.answer(
            "ReplicaFetch",
            serve_fetch(&self.broker, fetch, ReplicaReading::Read).await,
        )?;
        let ReplicaRecords::Read(records) = std::mem::take(&mut answer.records) else {
            let unread = BrokerError::Internal("a replica fetch read no batches".into());
            return Err(self.broker.fail("ReplicaFetch", &unread));
        };
        count_sent(&self.broker, "grpc", "read", records.len() as u64);
        Ok(Response::new(fetch_response(answer, records.into())))
    }

    async fn replica_snapshot(
        &self,
        request: Request<pb::ReplicaSnapshotRequest>,
    ) -> Result<Response<pb::ReplicaSnapshotResponse>, Status> {
        let request = request.into_inner();
        let fetch = SnapshotFetch {
            queue: request.queue,
            leader_epoch: request.leader_epoch,
            offset: request.offset,
            max_bytes: request
                .max_bytes
                .min(self.broker.config.replication.fetch_max_bytes)
                as usize,
        };
        let (leader_epoch, chunk) = self
            .broker
            .answer("ReplicaSnapshot", serve_snapshot(&self.broker, fetch).await)?;
        Ok(Response::new(pb::ReplicaSnapshotResponse {
            leader_epoch,
            snapshot: chunk.id.map(snapshot_id),
            total_bytes: chunk.total_bytes,
            data: chunk.data.into(),
        }))
    }
}

fn snapshot_id(id: crate::queue::SnapshotId) -> pb::SnapshotId {
    pb::SnapshotId {
        messages_end: id.messages_end,
        journal_end: id.journal_end,
    }
}

/// A follower's fetch as the leader serves it, within this host's limits.
pub(crate) fn fetch_from_wire(
    request: pb::ReplicaFetchRequest,
    replication: &ReplicationConfig,
) -> BrokerResult<ReplicaFetch> {
    // An empty kind is a topic (hosts from before queues replicated sent none).
    let kind = match request.kind.as_str() {
        "" => LogKind::Topic,
        other => other
            .parse::<LogKind>()
            .map_err(|err| BrokerError::InvalidArgument(format!("replica fetch: {err}")))?,
    };
    Ok(ReplicaFetch {
        kind,
        topic: request.topic,
        partition: request.partition,
        leader_epoch: request.leader_epoch,
        follower_id: request.follower_id,
        fetch_offset: request.fetch_offset,
        last_fetched_epoch: request.last_fetched_epoch,
        follower_lost: request
            .lost_ranges
            .iter()
            .map(|range| range.start..range.end)
            .collect(),
        max_bytes: request.max_bytes.min(replication.fetch_max_bytes) as usize,
        max_wait: Duration::from_millis(u64::from(
            request.max_wait_ms.min(replication.fetch_max_wait_ms),
        )),
    })
}

/// The wire form of a leader's answer, with `records` as its batches.
pub(crate) fn fetch_response(answer: ReplicaData, records: Bytes) -> pb::ReplicaFetchResponse {
    pb::ReplicaFetchResponse {
        leader_epoch: answer.leader_epoch,
        high_watermark: answer.high_watermark,
        log_start_offset: answer.log_start_offset,
        log_end_offset: answer.log_end_offset,
        diverging: answer
            .diverging
            .map(|(epoch, end_offset)| pb::EpochEnd { epoch, end_offset }),
        records,
        snapshot: answer.snapshot.map(snapshot_id),
        repair_below: answer.repair_below,
    }
}
