//! Raw `QueueService` calls for the queue suites: one helper per RPC that panics on
//! a transport or status error, so scenarios read as the protocol they exercise.

use std::time::{Duration, Instant};

use ferry_proto::v1 as pb;
use ferry_proto::v1::queue_service_client::QueueServiceClient;
use tonic::transport::Channel;

use super::{BrokerProcess, channel, detail};

/// The raw queue client.
pub type QueueClient = QueueServiceClient<Channel>;

/// Queue client with large message limits.
pub fn queues(channel: &Channel) -> QueueClient {
    QueueServiceClient::new(channel.clone())
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024)
}

/// Creates a queue, panicking on failure.
pub async fn create_queue(client: &mut QueueClient, name: &str, config: pb::QueueConfig) {
    client
        .create_queue(pb::CreateQueueRequest {
            name: name.to_owned(),
            config: Some(config),
        })
        .await
        .unwrap_or_else(|status| panic!("create queue {name}: {status:?}"));
}

/// A message with a body and nothing else.
pub fn message(body: impl Into<Vec<u8>>) -> pb::SendMessage {
    pb::SendMessage {
        body: body.into().into(),
        ..Default::default()
    }
}

/// Sends messages, panicking on failure.
pub async fn send(
    client: &mut QueueClient,
    queue: &str,
    messages: Vec<pb::SendMessage>,
) -> Vec<pb::SendResult> {
    client
        .send(pb::SendRequest {
            queue: queue.to_owned(),
            messages,
        })
        .await
        .unwrap_or_else(|status| panic!("send to {queue}: {status:?}"))
        .into_inner()
        .results
}

/// The parameters of a receive, with the fields the suites vary.
pub fn receive_request(
    queue: &str,
    max_messages: u32,
    wait_ms: u32,
    visibility_timeout_ms: u64,
) -> pb::ReceiveRequest {
    pb::ReceiveRequest {
        queue: queue.to_owned(),
        max_messages,
        wait_ms: Some(wait_ms),
        visibility_timeout_ms: Some(visibility_timeout_ms),
        ..Default::default()
    }
}

/// Receives, panicking on failure.
pub async fn receive(
    client: &mut QueueClient,
    queue: &str,
    max_messages: u32,
    wait_ms: u32,
    visibility_timeout_ms: u64,
) -> Vec<pb::ReceivedMessage> {
    client
        .receive(receive_request(
            queue,
            max_messages,
            wait_ms,
            visibility_timeout_ms,
        ))
        .await
        .unwrap_or_else(|status| panic!("receive from {queue}: {status:?}"))
        .into_inner()
        .messages
}

/// Acks receipts, panicking if the call (not a receipt) fails.
pub async fn ack(
    client: &mut QueueClient,
    queue: &str,
    receipts: Vec<String>,
) -> Vec<pb::ReceiptResult> {
    client
        .ack(pb::AckRequest {
            queue: queue.to_owned(),
            receipts,
        })
        .await
        .unwrap_or_else(|status| panic!("ack on {queue}: {status:?}"))
        .into_inner()
        .results
}

/// Nacks receipts, panicking if the call (not a receipt) fails.
pub async fn nack(
    client: &mut QueueClient,
    queue: &str,
    receipts: Vec<String>,
    delay_ms: u64,
) -> Vec<pb::ReceiptResult> {
    client
        .nack(pb::NackRequest {
            queue: queue.to_owned(),
            receipts,
            delay_ms,
        })
        .await
        .unwrap_or_else(|status| panic!("nack on {queue}: {status:?}"))
        .into_inner()
        .results
}

/// Changes visibility, panicking if the call (not a receipt) fails.
pub async fn change_visibility(
    client: &mut QueueClient,
    queue: &str,
    receipts: Vec<String>,
    visibility_timeout_ms: u64,
) -> Vec<pb::ReceiptResult> {
    client
        .change_visibility(pb::ChangeVisibilityRequest {
            queue: queue.to_owned(),
            receipts,
            visibility_timeout_ms,
        })
        .await
        .unwrap_or_else(|status| panic!("change visibility on {queue}: {status:?}"))
        .into_inner()
        .results
}

/// A queue's description, panicking on failure.
pub async fn describe(client: &mut QueueClient, queue: &str) -> pb::QueueInfo {
    client
        .describe_queue(pb::DescribeQueueRequest {
            name: queue.to_owned(),
        })
        .await
        .unwrap_or_else(|status| panic!("describe {queue}: {status:?}"))
        .into_inner()
        .queue
        .expect("describe returns the queue")
}

/// A queue's current stats.
pub async fn stats(client: &mut QueueClient, queue: &str) -> pb::QueueStats {
    describe(client, queue)
        .await
        .stats
        .expect("describe returns stats")
}

/// Messages a queue holds in the states describe reports.
pub fn depth(stats: &pb::QueueStats) -> u64 {
    stats.visible + stats.in_flight + stats.delayed
}

/// The error code of one receipt's outcome; `None` on success.
pub fn receipt_error(result: &pb::ReceiptResult) -> Option<pb::ErrorCode> {
    result
        .error
        .as_ref()
        .map(|e| pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified))
}

/// The receipts of received messages.
pub fn receipts(messages: &[pb::ReceivedMessage]) -> Vec<String> {
    messages.iter().map(|m| m.receipt.clone()).collect()
}

/// How long anything that should happen "soon" may take before the test gives up.
/// A failure guard, never a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Starts a broker in a fresh directory and connects a queue client to it.
pub async fn start() -> (tempfile::TempDir, BrokerProcess, QueueClient) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path());
    let client = queues(&channel(&broker.url()).await);
    (dir, broker, client)
}

/// Long-polls until at least one message arrives; panics after [`PATIENCE`].
pub async fn receive_eventually(
    client: &mut QueueClient,
    queue: &str,
    max_messages: u32,
    visibility_timeout_ms: u64,
) -> Vec<pb::ReceivedMessage> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = receive(client, queue, max_messages, 2000, visibility_timeout_ms).await;
        if !got.is_empty() {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "nothing arrived in {queue} within {PATIENCE:?}"
        );
    }
}

/// The gRPC code and Ferry error code of a failed call.
pub fn codes<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (tonic::Code, pb::ErrorCode) {
    let status = result.expect_err("the call must fail");
    let code = pb::ErrorCode::try_from(detail(&status).code).unwrap_or(pb::ErrorCode::Unspecified);
    (status.code(), code)
}

/// A body as text (the suites send text).
pub fn body_text(message: &pb::ReceivedMessage) -> String {
    String::from_utf8(message.body.to_vec()).expect("bodies are UTF-8")
}

/// Asserts a call failed with these codes.
pub fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tonic::Status>,
    expected: (tonic::Code, pb::ErrorCode),
) {
    assert_eq!(codes(result), expected, "{what}");
}

/// INVALID_ARGUMENT with the generic code.
pub const INVALID: (tonic::Code, pb::ErrorCode) =
    (tonic::Code::InvalidArgument, pb::ErrorCode::InvalidArgument);
/// An unknown queue.
pub const NOT_FOUND: (tonic::Code, pb::ErrorCode) =
    (tonic::Code::NotFound, pb::ErrorCode::QueueNotFound);

/// Redrives every visible message of `queue`; returns how many moved.
pub async fn redrive(c: &mut QueueClient, queue: &str, to_queue: Option<&str>) -> u64 {
    c.redrive(pb::RedriveRequest {
        queue: queue.to_owned(),
        to_queue: to_queue.map(str::to_owned),
        max_messages: 0,
    })
    .await
    .expect("redrive")
    .into_inner()
    .moved
}
