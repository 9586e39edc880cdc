//! Queue calls, one request each: create, delete, purge, list and describe queues;
//! send, receive, ack, nack, change visibility and redrive messages.
//!
//! Batch calls on receipts (ack, nack, change visibility) succeed or fail per receipt:
//! the outer `Result` is the request as a whole, the inner ones follow request order.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::v1 as pb;
use ferry_proto::v1::queue_service_client::QueueServiceClient;

use super::queue_settings::{QueueDescription, QueueSettings, millis};
use super::routing::Kind;
use super::{Client, Service};
use crate::error::ClientError;

/// How long the client lets a receive without its own `wait` poll: such a receive
/// waits the queue's `receive_wait_ms`, which the client does not know, so the
/// deadline allows this much (well above the 20 s default) plus the request timeout.
const QUEUE_WAIT_ALLOWANCE: Duration = Duration::from_secs(60);

/// A message to send to a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The payload.
    pub body: Bytes,
    /// String key/values delivered with the message (names starting `ferry.` are reserved).
    pub attributes: BTreeMap<String, String>,
    /// Invisible for this long after sending; the queue's delay when `None`.
    pub delay: Option<Duration>,
    /// FIFO queues: the message group (required there); order is kept within a group.
    pub group_id: Option<String>,
    /// Sends with the same dedup id within the queue's dedup window are stored once.
    pub dedup_id: Option<String>,
}

impl OutgoingMessage {
    /// A message with this body and nothing else set.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    /// Sets the message group (FIFO queues).
    pub fn with_group(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }

    /// Sets the deduplication id.
    pub fn with_dedup_id(mut self, dedup_id: impl Into<String>) -> Self {
        self.dedup_id = Some(dedup_id.into());
        self
    }

    /// Delays the message's first delivery.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Adds (or replaces) an attribute.
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    fn into_proto(self) -> pb::SendMessage {
        pb::SendMessage {
            body: self.body,
            attributes: self.attributes.into_iter().collect(),
            delay_ms: self.delay.map(millis),
            group_id: self.group_id.unwrap_or_default(),
            dedup_id: self.dedup_id.unwrap_or_default(),
        }
    }
}

/// The broker's answer for one sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The id the broker gave the message.
    pub message_id: String,
    /// The message had been sent before within the dedup window: it was not stored
    /// again and `message_id` is the original's.
    pub duplicate: bool,
}

/// How a receive asks for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Most messages to return (at least 1; the broker caps it).
    pub max_messages: u32,
    /// Long-poll: wait up to this long for at least one message; `Duration::ZERO`
    /// returns at once. `None` waits the queue's `receive_wait_ms` (20 s by default);
    /// the client's deadline then allows up to 60 s of waiting, so name longer waits.
    pub wait: Option<Duration>,
    /// How long the returned messages stay invisible; the queue's when `None`.
    pub visibility_timeout: Option<Duration>,
    /// Delete messages as they are delivered (no ack; a lost response loses them).
    pub at_most_once: bool,
    /// Names this consumer in the queue's consumer count; the peer address when empty.
    pub consumer_id: String,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        Self::new(1)
    }
}

impl ReceiveOptions {
    /// Up to `max_messages` messages with the queue's wait and visibility timeout.
    pub fn new(max_messages: u32) -> Self {
        Self {
            max_messages,
            wait: None,
            visibility_timeout: None,
            at_most_once: false,
            consumer_id: String::new(),
        }
    }

    /// Sets the long-poll wait.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Sets the visibility timeout of the returned messages.
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = Some(timeout);
        self
    }

    /// Receives at most once: messages are deleted as they are delivered.
    pub fn at_most_once(mut self) -> Self {
        self.at_most_once = true;
        self
    }

    /// Names the consumer.
    pub fn with_consumer_id(mut self, consumer_id: impl Into<String>) -> Self {
        self.consumer_id = consumer_id.into();
        self
    }

    fn to_proto(&self, queue: &str) -> Result<pb::ReceiveRequest, ClientError> {
        let wait_ms = self
            .wait
            .map(|wait| {
                u32::try_from(wait.as_millis()).map_err(|_| {
                    ClientError::InvalidArgument(format!("receive wait {wait:?} is too long"))
                })
            })
            .transpose()?;
        let mode = if self.at_most_once {
            pb::ReceiveMode::AtMostOnce
        } else {
            pb::ReceiveMode::AtLeastOnce
        };
        Ok(pb::ReceiveRequest {
            queue: queue.to_owned(),
            max_messages: self.max_messages,
            wait_ms,
            visibility_timeout_ms: self.visibility_timeout.map(millis),
            mode: mode as i32,
            consumer_id: self.consumer_id.clone(),
        })
    }
}

/// Where a dead-lettered message came from and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterOrigin {
    /// The queue it was dead-lettered from.
    pub source_queue: String,
    /// Its id in that queue.
    pub source_message_id: String,
    /// Why it was moved (for example too many receives).
    pub reason: String,
    /// Its receive count when it was moved.
    pub receive_count: u32,
    /// When it was moved, ms since the Unix epoch.
    pub dead_lettered_at_ms: i64,
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// The message id (stable across deliveries).
    pub id: String,
    /// Handle for ack, nack and change visibility; it stops working once the message
    /// is received again.
    pub receipt: String,
    /// The payload.
    pub body: Bytes,
    /// Attributes sent with the message.
    pub attributes: BTreeMap<String, String>,
    /// Deliveries so far, this one included (1 on the first).
    pub receive_count: u32,
    /// When it was sent, ms since the Unix epoch.
    pub sent_at_ms: i64,
    /// Message group (FIFO queues).
    pub group_id: Option<String>,
    /// Deduplication id it was sent with.
    pub dedup_id: Option<String>,
    /// Set for messages dead-lettered into this queue.
    pub dead_letter: Option<DeadLetterOrigin>,
}

impl QueueMessage {
    /// A span for processing this message of `queue`, linked to the span that sent
    /// it when the sender was tracing (its `traceparent` attribute).
    pub fn process_span(&self, queue: &str) -> tracing::Span {
        ferry_telemetry::propagation::process_span(queue, &self.id, |name| {
            self.attributes.get(name).cloned()
        })
    }

    fn from_proto(message: pb::ReceivedMessage) -> Self {
        Self {
            id: message.message_id,
            receipt: message.receipt,
            body: message.body,
            attributes: message.attributes.into_iter().collect(),
            receive_count: message.receive_count,
            sent_at_ms: message.sent_at_ms,
            group_id: Some(message.group_id).filter(|id| !id.is_empty()),
            dedup_id: Some(message.dedup_id).filter(|id| !id.is_empty()),
            dead_letter: message.dead_letter.map(|origin| DeadLetterOrigin {
                source_queue: origin.source_queue,
                source_message_id: origin.source_message_id,
                reason: origin.reason,
                receive_count: origin.receive_count,
                dead_lettered_at_ms: origin.dead_lettered_at_ms,
            }),
        }
    }
}

/// Per-receipt outcomes, checked against the request: one per receipt, in order.
fn receipt_results(
    receipts: &[String],
    results: Vec<pb::ReceiptResult>,
) -> Result<Vec<Result<(), ClientError>>, ClientError> {
    if results.len() != receipts.len() {
        return Err(ClientError::Protocol(format!(
            "sent {} receipts, got {} results",
            receipts.len(),
            results.len()
        )));
    }
    receipts
        .iter()
        .zip(results)
        .map(|(sent, result)| {
            // The broker may leave the echo empty; a different one means misordered results.
            if !result.receipt.is_empty() && result.receipt != *sent {
                return Err(ClientError::Protocol(format!(
                    "result for receipt '{}' where '{sent}' was expected",
                    result.receipt
                )));
            }
            Ok(match result.error {
                Some(detail) if detail.code != pb::ErrorCode::Unspecified as i32 => {
                    Err(ClientError::from_detail(None, &detail))
                }
                _ => Ok(()),
            })
        })
        .collect()
}

fn owned_receipts(receipts: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    receipts.into_iter().map(Into::into).collect()
}

impl Client {
    /// Calls the queue's leader (any host when standalone), following `NOT_LEADER`
    /// answers to the host they name.
    async fn on_queue_leader<T, F, Fut>(&self, queue: &str, call: F) -> Result<T, ClientError>
    where
        F: Fn(QueueServiceClient<Service>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.routed(Kind::Queue, queue, 0, |client| {
            let answer = call(client.queue_service());
            async move {
                answer
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| client.error(&status))
            }
        })
        .await
    }

    /// Creates a queue and returns it as the broker made it.
    pub async fn create_queue(
        &self,
        name: &str,
        settings: &QueueSettings,
    ) -> Result<QueueDescription, ClientError> {
        let request = pb::CreateQueueRequest {
            name: name.to_owned(),
            config: Some(settings.to_proto()),
        };
        let response = self
            .queue_service()
            .create_queue(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        let info = response
            .queue
            .ok_or_else(|| ClientError::Protocol("CreateQueue returned no queue".into()))?;
        Ok(QueueDescription::from_proto(info))
    }

    /// Deletes a queue and its messages.
    pub async fn delete_queue(&self, name: &str) -> Result<(), ClientError> {
        let request = pb::DeleteQueueRequest {
            name: name.to_owned(),
        };
        self.queue_service()
            .delete_queue(request)
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    /// Removes every message of a queue (visible, delayed and in flight); returns how
    /// many were removed.
    pub async fn purge_queue(&self, name: &str) -> Result<u64, ClientError> {
        let request = pb::PurgeQueueRequest {
            name: name.to_owned(),
        };
        let response = self
            .on_queue_leader(name, |mut service| {
                let request = request.clone();
                async move { service.purge_queue(request).await }
            })
            .await?;
        Ok(response.purged)
    }

    /// Lists every queue, sorted by name.
    pub async fn list_queues(&self) -> Result<Vec<QueueDescription>, ClientError> {
        let response = self
            .queue_service()
            .list_queues(pb::ListQueuesRequest {})
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        let mut queues: Vec<_> = response
            .queues
            .into_iter()
            .map(QueueDescription::from_proto)
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(queues)
    }

    /// Describes one queue: settings in force and current state.
    pub async fn describe_queue(&self, name: &str) -> Result<QueueDescription, ClientError> {
        let request = pb::DescribeQueueRequest {
            name: name.to_owned(),
        };
        let response = self
            .on_queue_leader(name, |mut service| {
                let request = request.clone();
                async move { service.describe_queue(request).await }
            })
            .await?;
        let info = response
            .queue
            .ok_or_else(|| ClientError::Protocol("DescribeQueue returned no queue".into()))?;
        Ok(QueueDescription::from_proto(info))
    }

    /// Stores messages in a queue: all of them or (on error) none. Returns one receipt
    /// per message, in order.
    pub async fn send(
        &self,
        queue: &str,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<SendReceipt>, ClientError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let count = messages.len();
        // Each message carries the sender's trace context (when it has one), so
        // whoever processes it can link to the send.
        let trace_context = ferry_telemetry::propagation::current_context_fields();
        let request = pb::SendRequest {
            queue: queue.to_owned(),
            messages: messages
                .into_iter()
                .map(|mut message| {
                    for (name, value) in &trace_context {
                        message
                            .attributes
                            .entry(name.clone())
                            .or_insert_with(|| value.clone());
                    }
                    message.into_proto()
                })
                .collect(),
        };
        let response = self
            .on_queue_leader(queue, |mut service| {
                let request = request.clone();
                async move { service.send(request).await }
            })
            .await?;
        if response.results.len() != count {
            return Err(ClientError::Protocol(format!(
                "sent {count} messages, got {} results",
                response.results.len()
            )));
        }
        Ok(response
            .results
            .into_iter()
            .map(|result| SendReceipt {
                message_id: result.message_id,
                duplicate: result.duplicate,
            })
            .collect())
    }

    /// Takes up to `options.max_messages` visible messages, long-polling up to the
    /// wait. The request's deadline is the wait plus the client's request timeout, so
    /// a long poll is never cut short by the client.
    pub async fn receive(
        &self,
        queue: &str,
        options: &ReceiveOptions,
    ) -> Result<Vec<QueueMessage>, ClientError> {
        let request = options.to_proto(queue)?;
        let wait = options.wait.unwrap_or(QUEUE_WAIT_ALLOWANCE);
        let response = self
            .on_queue_leader(queue, |mut service| {
                let request = self.long_poll(request.clone(), wait);
                async move { service.receive(request).await }
            })
            .await?;
        Ok(response
            .messages
            .into_iter()
            .map(QueueMessage::from_proto)
            .collect())
    }

    /// Deletes received messages by receipt. One result per receipt, in order
    /// (`RECEIPT_STALE`, `RECEIPT_INVALID` for receipts that no longer or never worked).
    pub async fn ack(
        &self,
        queue: &str,
        receipts: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Vec<Result<(), ClientError>>, ClientError> {
        let receipts = owned_receipts(receipts);
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let request = pb::AckRequest {
            queue: queue.to_owned(),
            receipts: receipts.clone(),
        };
        let response = self
            .on_queue_leader(queue, |mut service| {
                let request = request.clone();
                async move { service.ack(request).await }
            })
            .await?;
        receipt_results(&receipts, response.results)
    }

    /// Makes received messages visible again after `delay` (`Duration::ZERO`: now).
    /// One result per receipt, in order.
    pub async fn nack(
        &self,
        queue: &str,
        receipts: impl IntoIterator<Item = impl Into<String>>,
        delay: Duration,
    ) -> Result<Vec<Result<(), ClientError>>, ClientError> {
        let receipts = owned_receipts(receipts);
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let request = pb::NackRequest {
            queue: queue.to_owned(),
            receipts: receipts.clone(),
            delay_ms: millis(delay),
        };
        let response = self
            .on_queue_leader(queue, |mut service| {
                let request = request.clone();
                async move { service.nack(request).await }
            })
            .await?;
        receipt_results(&receipts, response.results)
    }

    /// Sets a new visibility timeout, counted from now, on received messages. One
    /// result per receipt, in order.
    pub async fn change_visibility(
        &self,
        queue: &str,
        receipts: impl IntoIterator<Item = impl Into<String>>,
        timeout: Duration,
    ) -> Result<Vec<Result<(), ClientError>>, ClientError> {
        let receipts = owned_receipts(receipts);
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let request = pb::ChangeVisibilityRequest {
            queue: queue.to_owned(),
            receipts: receipts.clone(),
            visibility_timeout_ms: millis(timeout),
        };
        let response = self
            .on_queue_leader(queue, |mut service| {
                let request = request.clone();
                async move { service.change_visibility(request).await }
            })
            .await?;
        receipt_results(&receipts, response.results)
    }

    /// Moves up to `max` visible messages (all when `None`) from a dead-letter queue to
    /// `to`, or each back to the queue it came from. Returns how many moved.
    pub async fn redrive(
        &self,
        dead_letter_queue: &str,
        to: Option<&str>,
        max: Option<u64>,
    ) -> Result<u64, ClientError> {
        if max == Some(0) {
            return Ok(0);
        }
        let request = pb::RedriveRequest {
            queue: dead_letter_queue.to_owned(),
            to_queue: to.map(str::to_owned),
            max_messages: max.unwrap_or(0),
        };
        let response = self
            .on_queue_leader(dead_letter_queue, |mut service| {
                let request = request.clone();
                async move { service.redrive(request).await }
            })
            .await?;
        Ok(response.moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::v1::ErrorCode;

    #[test]
    fn outgoing_message_maps_every_field() {
        let message = OutgoingMessage::new("body")
            .with_group("g")
            .with_dedup_id("d")
            .with_delay(Duration::from_millis(1500))
            .with_attribute("k", "v");
        let proto = message.into_proto();
        assert_eq!(proto.body, Bytes::from_static(b"body"));
        assert_eq!(proto.group_id, "g");
        assert_eq!(proto.dedup_id, "d");
        assert_eq!(proto.delay_ms, Some(1500));
        assert_eq!(proto.attributes.get("k").map(String::as_str), Some("v"));
        assert_eq!(OutgoingMessage::new("x").into_proto().delay_ms, None);
    }

    #[test]
    fn receive_options_map_to_the_request() -> Result<(), ClientError> {
        let request = ReceiveOptions::new(5)
            .with_wait(Duration::from_secs(2))
            .with_visibility_timeout(Duration::from_millis(500))
            .at_most_once()
            .with_consumer_id("c1")
            .to_proto("q")?;
        assert_eq!(request.queue, "q");
        assert_eq!(request.max_messages, 5);
        assert_eq!(request.wait_ms, Some(2000));
        assert_eq!(request.visibility_timeout_ms, Some(500));
        assert_eq!(request.mode, pb::ReceiveMode::AtMostOnce as i32);
        assert_eq!(request.consumer_id, "c1");
        let defaults = ReceiveOptions::default().to_proto("q")?;
        assert_eq!(defaults.wait_ms, None);
        assert_eq!(defaults.mode, pb::ReceiveMode::AtLeastOnce as i32);
        let too_long = ReceiveOptions::new(1).with_wait(Duration::from_secs(u64::MAX));
        assert!(matches!(
            too_long.to_proto("q"),
            Err(ClientError::InvalidArgument(_))
        ));
        Ok(())
    }

    fn result(receipt: &str, code: Option<ErrorCode>) -> pb::ReceiptResult {
        pb::ReceiptResult {
            receipt: receipt.to_owned(),
            error: code.map(|code| pb::ErrorDetail {
                code: code as i32,
                ..pb::ErrorDetail::default()
            }),
        }
    }

    #[test]
    fn receipt_results_keep_order_and_codes() -> Result<(), ClientError> {
        let sent = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let results = receipt_results(
            &sent,
            vec![
                result("a", None),
                result("", Some(ErrorCode::ReceiptStale)),
                result("c", Some(ErrorCode::Unspecified)),
            ],
        )?;
        assert!(results[0].is_ok());
        assert!(
            results[1]
                .as_ref()
                .is_err_and(|err| err.is(ErrorCode::ReceiptStale))
        );
        assert!(results[2].is_ok(), "an UNSPECIFIED detail is success");
        assert!(receipt_results(&sent, vec![result("a", None)]).is_err());
        let swapped = vec![result("b", None), result("a", None), result("c", None)];
        assert!(matches!(
            receipt_results(&sent, swapped),
            Err(ClientError::Protocol(_))
        ));
        Ok(())
    }
}
