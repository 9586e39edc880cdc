//! Talking to broker hosts the way a client does, one plain gRPC request at a time
//! (no client library: no retries, no rerouting), so a scenario sees exactly what
//! each host answered.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use ferry_e2e::history::ReadOp;
use ferry_e2e::{BrokerHost, Cluster, History};
use ferry_proto::v1 as pb;
use ferry_records::{BatchBuilder, Batches, partition_for_key};
use pb::admin_service_client::AdminServiceClient;
use pb::queue_service_client::QueueServiceClient;
use pb::topic_service_client::TopicServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::PartitionId;

/// Any single request on loopback to a running host; a stopped host never answers,
/// so scenarios that stop hosts give their requests shorter deadlines with [`within`].
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// A lazily connected channel to `host`.
pub fn channel(host: &BrokerHost) -> Channel {
    Endpoint::from_shared(host.url())
        .expect("a valid URL")
        .connect_timeout(RPC_TIMEOUT)
        .timeout(RPC_TIMEOUT)
        .connect_lazy()
}

/// A channel to every running host, by host id.
pub fn channels(cluster: &Cluster) -> BTreeMap<String, Channel> {
    cluster
        .hosts()
        .iter()
        .map(|host| (host.host_id().to_owned(), channel(host)))
        .collect()
}

/// The message of the status [`within`] gives when its deadline passes.
const CLIENT_DEADLINE: &str = "client-side deadline passed";

/// Runs `call`, giving up after `deadline` with DEADLINE_EXCEEDED: the request was
/// sent (or not) and its outcome is unknown. Dropping the call cancels it.
pub async fn within<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "{CLIENT_DEADLINE} ({deadline:?})"
            )))
        })
}

/// The broker's [`pb::ErrorDetail`] in `status`, if it sent one.
pub fn error_detail(status: &Status) -> Option<pb::ErrorDetail> {
    ferry_proto::status::detail(status)
        .filter(|detail| detail.code != pb::ErrorCode::Unspecified as i32)
}

/// The detail of a NOT_LEADER refusal, which clients may retry (UNAVAILABLE, with a
/// pause to wait). A refused request wrote nothing.
pub fn not_leader_detail(status: &Status) -> Result<pb::ErrorDetail, String> {
    let detail = ferry_proto::status::detail(status)
        .ok_or_else(|| format!("no error details in {}", show(status)))?;
    if status.code() != Code::Unavailable
        || detail.code != pb::ErrorCode::NotLeader as i32
        || detail.retry_after_ms == 0
    {
        return Err(format!(
            "expected UNAVAILABLE with NOT_LEADER and a retry pause, got {}",
            show(status)
        ));
    }
    Ok(detail)
}

/// Calls `call` again while it is refused with NOT_LEADER (nothing was written, so
/// resending cannot duplicate), up to `deadline`: a host's view of a new leader may
/// trail what the test read from etcd by a moment.
pub async fn until_led<T, Fut>(
    deadline: Duration,
    mut call: impl FnMut() -> Fut,
) -> Result<T, Status>
where
    Fut: Future<Output = Result<T, Status>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match call().await {
            Err(status) if tokio::time::Instant::now() < until => {
                let Ok(detail) = not_leader_detail(&status) else {
                    return Err(status);
                };
                tokio::time::sleep(Duration::from_millis(u64::from(detail.retry_after_ms))).await;
            }
            other => return other,
        }
    }
}

/// Whether ferry-client would send the request again after `status`: the same rule
/// as `ClientError::from_status(..).is_retriable()` in `client/src/error.rs` (the
/// e2e crate does not depend on the client library, so it is restated here).
pub fn client_would_retry(status: &Status) -> bool {
    use pb::ErrorCode as E;
    let Some(detail) = error_detail(status) else {
        // No detail: tonic's connection failures, or a bare status from the broker.
        return matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
            || (status.code() == Code::Unknown && std::error::Error::source(status).is_some());
    };
    let code = E::try_from(detail.code).unwrap_or(E::Unspecified);
    let definitive = matches!(
        code,
        E::QueueNotFound
            | E::QueueAlreadyExists
            | E::QueueInUse
            | E::ReceiptInvalid
            | E::ReceiptStale
    );
    !definitive
        && (matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
            || matches!(
                code,
                E::NotLeader | E::ShuttingDown | E::MetadataUnavailable
            ))
}

/// Records what became of send `op`: acknowledged at an offset, refused with
/// NOT_LEADER (nothing was written, so it must never be read), or anything else
/// (a timeout, a lost connection, another error) as unknown.
pub fn record_outcome(history: &History, op: u64, answer: &Result<u64, Status>) {
    match answer {
        Ok(offset) => history.record_send_ok(op, *offset),
        Err(status) if not_leader_detail(status).is_ok() => history.record_send_failed(op),
        Err(_) => history.record_send_unknown(op),
    }
}

/// A status with its decoded detail, for messages.
pub fn show(status: &Status) -> String {
    let detail = ferry_proto::status::detail(status)
        .map_or_else(|| "no detail".to_owned(), |detail| format!("{detail:?}"));
    format!("{:?} {:?} ({detail})", status.code(), status.message())
}

/// Creates a topic of `partitions` partitions, replication factor 1, fsync.
pub async fn create_topic(channel: &Channel, topic: &str, partitions: u32) {
    create_replicated_topic(channel, topic, partitions, 1, pb::ReplicationMode::Sync).await;
}

/// Creates a topic of `partitions` partitions with `replicas` replicas each,
/// replicated in `mode`, fsync.
pub async fn create_replicated_topic(
    channel: &Channel,
    topic: &str,
    partitions: u32,
    replicas: u32,
    mode: pb::ReplicationMode,
) {
    AdminServiceClient::new(channel.clone())
        .create_topic(pb::CreateTopicRequest {
            name: topic.to_owned(),
            config: Some(pb::TopicConfig {
                partitions,
                replication_factor: replicas,
                durability: pb::Durability::Fsync as i32,
                replication: mode as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|status| panic!("create topic {topic}: {}", show(&status)));
}

/// Creates a queue, replication factor 1, fsync.
pub async fn create_queue(channel: &Channel, queue: &str) {
    create_queue_with(
        channel,
        queue,
        pb::QueueConfig {
            replication_factor: 1,
            durability: pb::Durability::Fsync as i32,
            ..Default::default()
        },
    )
    .await;
}

/// Creates a queue with three replicas, `sync`, fsync, and `more` settings.
pub async fn create_replicated_queue(channel: &Channel, queue: &str, more: pb::QueueConfig) {
    let config = pb::QueueConfig {
        replication_factor: 3,
        replication: pb::ReplicationMode::Sync as i32,
        durability: pb::Durability::Fsync as i32,
        ..more
    };
    create_queue_with(channel, queue, config).await;
}

async fn create_queue_with(channel: &Channel, queue: &str, config: pb::QueueConfig) {
    QueueServiceClient::new(channel.clone())
        .create_queue(pb::CreateQueueRequest {
            name: queue.to_owned(),
            config: Some(config),
        })
        .await
        .unwrap_or_else(|status| panic!("create queue {queue}: {}", show(&status)));
}

/// A key that [`partition_for_key`] maps to `partition` of `partitions`.
pub fn key_for(partition: u32, partitions: u32) -> Vec<u8> {
    (0u32..)
        .map(|n| format!("key-{n}").into_bytes())
        .find(|key| partition_for_key(key, partitions) == partition)
        .expect("some key hashes to every partition")
}

/// Produces a batch of one record to `partition` of `topic`: the request names the
/// partition, or, with a `key` (which must hash to `partition`), leaves it to the
/// broker. The acknowledged offset, or the request's status, or the batch's error.
pub async fn produce(
    channel: &Channel,
    topic: &str,
    partition: u32,
    key: Option<&[u8]>,
    value: &str,
) -> Result<u64, Status> {
    let mut builder = BatchBuilder::new();
    builder.push(key, value.as_bytes(), &[], now_ms());
    let records = builder.finish().expect("a batch of one record");
    let response = TopicServiceClient::new(channel.clone())
        .produce(pb::ProduceRequest {
            topic: topic.to_owned(),
            batches: vec![pb::PartitionBatch {
                partition: key.is_none().then_some(partition),
                records: records.into(),
            }],
            messages: Vec::new(),
            ..pb::ProduceRequest::default()
        })
        .await?
        .into_inner();
    let [result] = response.batches.as_slice() else {
        panic!("one batch sent, results: {response:?}");
    };
    if let Some(detail) = &result.error {
        // A batch can fail after the request was accepted (REPLICATION_INCOMPLETE:
        // written, but not confirmed by the replicas). Such an error has no gRPC
        // code of its own; it comes back as UNKNOWN carrying the batch's detail.
        let failed = pb::ErrorDetail {
            message: format!("batch failed: {}", detail.message),
            ..detail.clone()
        };
        return Err(ferry_proto::status::status(
            Code::Unknown,
            &failed,
            &Default::default(),
        ));
    }
    assert_eq!(result.partition, partition, "{result:?}");
    assert_eq!(result.base_offset, result.last_offset, "{result:?}");
    Ok(result.base_offset)
}

/// A read-only request that only the leader of `id` answers: the latest offset of a
/// topic partition, or a queue's description.
pub async fn probe(channel: &Channel, id: &PartitionId) -> Result<(), Status> {
    if id.kind == "queues" {
        describe_queue(channel, &id.name).await.map(drop)
    } else {
        TopicServiceClient::new(channel.clone())
            .list_offsets(pb::ListOffsetsRequest {
                topic: id.name.clone(),
                queries: vec![pb::OffsetQuery {
                    partition: id.partition,
                    spec: Some(pb::offset_query::Spec::Latest(true)),
                }],
            })
            .await
            .map(drop)
    }
}

/// A partition's own error in a fetch, as the status a single-partition call would
/// have failed with.
fn partition_status(detail: &pb::ErrorDetail) -> Status {
    use pb::ErrorCode as E;
    let code = match E::try_from(detail.code).unwrap_or(E::Unspecified) {
        E::NotLeader | E::ShuttingDown | E::StorageFailed => Code::Unavailable,
        E::OffsetOutOfRange => Code::OutOfRange,
        E::TopicNotFound | E::PartitionNotFound => Code::NotFound,
        _ => Code::Unknown,
    };
    ferry_proto::status::status(code, detail, &Default::default())
}

/// Reads `partition` of `topic` from its start to its high watermark; a refusal of
/// the partition (NOT_LEADER, …) comes back as the error.
pub async fn read_partition(
    channel: &Channel,
    topic: &str,
    partition: u32,
) -> Result<Vec<ReadOp>, Status> {
    let mut client = TopicServiceClient::new(channel.clone());
    let mut reads = Vec::new();
    let mut offset = 0;
    loop {
        let response = client
            .fetch(pb::FetchRequest {
                partitions: vec![pb::FetchPartition {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    max_bytes: 1024 * 1024,
                }],
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 0,
                decode: false,
            })
            .await?
            .into_inner();
        let [fetched] = response.partitions.as_slice() else {
            panic!("one partition fetched, got {response:?}");
        };
        if let Some(refused) = &fetched.error {
            // One partition asked for: its refusal is the answer, as a status.
            return Err(partition_status(refused));
        }
        if fetched.records.is_empty() {
            assert_eq!(
                offset, fetched.high_watermark,
                "{topic}/{partition}: an empty fetch below the high watermark"
            );
            return Ok(reads);
        }
        for batch in Batches::new(&fetched.records) {
            let batch = batch.expect("a well-formed batch");
            batch.verify_crc().expect("a served batch has a valid CRC");
            for record in batch.records() {
                let record = record.expect("a well-formed record");
                if record.offset < offset {
                    continue;
                }
                assert_eq!(
                    record.offset, offset,
                    "{topic}/{partition}: offsets in order"
                );
                let value = String::from_utf8(record.value.to_vec()).expect("UTF-8 values");
                reads.push(ReadOp {
                    partition,
                    offset,
                    value,
                });
                offset += 1;
            }
        }
    }
}

/// Describes `queue` (a read-only request only its leader serves).
pub async fn describe_queue(channel: &Channel, queue: &str) -> Result<pb::QueueInfo, Status> {
    let response = QueueServiceClient::new(channel.clone())
        .describe_queue(pb::DescribeQueueRequest {
            name: queue.to_owned(),
        })
        .await?
        .into_inner();
    Ok(response.queue.expect("a described queue"))
}

/// Sends one message with `body` to `queue`.
pub async fn send(channel: &Channel, queue: &str, body: &str) -> Result<(), Status> {
    let response = QueueServiceClient::new(channel.clone())
        .send(pb::SendRequest {
            queue: queue.to_owned(),
            messages: vec![pb::SendMessage {
                body: body.as_bytes().to_vec().into(),
                ..Default::default()
            }],
        })
        .await?
        .into_inner();
    let [result] = response.results.as_slice() else {
        panic!("one message sent, results: {response:?}");
    };
    assert!(
        !result.duplicate,
        "{body:?} taken for a duplicate: {result:?}"
    );
    assert!(!result.message_id.is_empty(), "{result:?}");
    Ok(())
}

/// Receives every visible message of `queue` (leaving them in flight, each received
/// for the first time); their bodies.
pub async fn receive_all(channel: &Channel, queue: &str) -> Result<Vec<String>, Status> {
    let mut client = QueueServiceClient::new(channel.clone());
    let mut bodies = Vec::new();
    loop {
        let response = client
            .receive(pb::ReceiveRequest {
                queue: queue.to_owned(),
                max_messages: 100,
                wait_ms: Some(0),
                visibility_timeout_ms: Some(600_000),
                ..Default::default()
            })
            .await?
            .into_inner();
        if response.messages.is_empty() {
            return Ok(bodies);
        }
        for message in response.messages {
            assert_eq!(message.receive_count, 1, "{message:?}");
            bodies.push(String::from_utf8(message.body.to_vec()).expect("UTF-8 bodies"));
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether the host behind `channel` reports ready (gRPC health `ferry.ready`, what
/// the operator's readiness probe asks); `false` when it does not answer.
pub async fn ready(channel: &Channel) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let request = HealthCheckRequest {
        service: "ferry.ready".to_owned(),
    };
    HealthClient::new(channel.clone())
        .check(request)
        .await
        .is_ok_and(|answer| answer.into_inner().status == ServingStatus::Serving as i32)
}
