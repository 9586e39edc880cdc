//! `QueueService`: queue administration, send, receive, ack, nack, visibility and redrive.

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1 as pb;
use ferry_proto::v1::queue_service_server::QueueService;
use ferry_replication::LogKind;
use tonic::{Request, Response, Status};

use super::auth::{Guard, audit_admin, caller};
use super::status::Answer;
use crate::access::quota::QuotaKind;
use crate::access::{Caller, Operation, Resource};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::error::{BrokerError, BrokerResult};
use crate::queue::{Queue, ReceiveOptions, ReceiveRequest, Settle};
use crate::service::convert::{outgoing_message, queue_info, queue_overrides, received_message};
use crate::service::status::error_detail;

/// The bytes a sent message counts for against its sender's produce quota: body and
/// attributes.
fn send_message_bytes(message: &pb::SendMessage) -> usize {
    message.body.len()
        + message
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// Characters of a consumer id kept for the consumer count; longer ids are cut.
const MAX_CONSUMER_ID_CHARS: usize = 256;

/// The queue API over a broker.
pub struct QueueApi {
    broker: Arc<Broker>,
    guard: Guard,
}

impl QueueApi {
    /// Serves queue requests for `broker`, checking callers with `guard`.
    pub fn new(broker: Arc<Broker>, guard: Guard) -> Self {
        Self { broker, guard }
    }

    /// Refuses the request unless its caller may do `operation` on `queue`.
    fn check<T>(
        &self,
        method: &'static str,
        request: &Request<T>,
        operation: Operation,
        queue: impl Fn(&T) -> &str,
    ) -> Result<Caller, Status> {
        let name = queue(request.get_ref());
        self.guard
            .check(method, request, operation, [Resource::Queue(name)])
    }

    fn info(&self, queue: &Queue) -> pb::QueueInfo {
        let stats = queue.stats(now_ms());
        queue_info(
            queue,
            &stats,
            self.broker.queues.dead_letter_sources(queue.name()),
        )
    }

    /// Applies the queue's defaults and the broker's limits to a receive request.
    fn receive_request(
        &self,
        queue: &Queue,
        request: &pb::ReceiveRequest,
        peer: Option<std::net::SocketAddr>,
    ) -> BrokerResult<ReceiveRequest> {
        let limits = &self.broker.config.limits;
        let settings = &queue.record.settings;
        let max_messages = request.max_messages.max(1);
        if max_messages > limits.max_receive_messages {
            return Err(BrokerError::InvalidArgument(format!(
                "max_messages {max_messages} exceeds the limit of {}",
                limits.max_receive_messages
            )));
        }
        let wait_ms = request.wait_ms.unwrap_or(settings.receive_wait_ms);
        if wait_ms > limits.max_receive_wait_ms {
            return Err(BrokerError::InvalidArgument(format!(
                "wait of {wait_ms} ms exceeds the maximum of {} ms",
                limits.max_receive_wait_ms
            )));
        }
        let visibility_timeout_ms = request
            .visibility_timeout_ms
            .unwrap_or(settings.visibility_timeout_ms);
        if visibility_timeout_ms > limits.max_visibility_timeout_ms {
            return Err(BrokerError::InvalidArgument(format!(
                "visibility timeout of {visibility_timeout_ms} ms exceeds the maximum of {} ms",
                limits.max_visibility_timeout_ms
            )));
        }
        let at_most_once = match pb::ReceiveMode::try_from(request.mode) {
            Ok(pb::ReceiveMode::Unspecified | pb::ReceiveMode::AtLeastOnce) => false,
            Ok(pb::ReceiveMode::AtMostOnce) => true,
            Err(_) => {
                return Err(BrokerError::InvalidArgument(format!(
                    "unknown receive mode {}",
                    request.mode
                )));
            }
        };
        let consumer = if request.consumer_id.is_empty() {
            peer.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string())
        } else {
            request
                .consumer_id
                .chars()
                .take(MAX_CONSUMER_ID_CHARS)
                .collect()
        };
        Ok(ReceiveRequest {
            options: ReceiveOptions {
                max_messages: max_messages as usize,
                visibility_timeout_ms,
                at_most_once,
            },
            wait: Duration::from_millis(u64::from(wait_ms)),
            consumer,
        })
    }

    async fn settle(
        &self,
        method: &str,
        queue: &str,
        receipts: Vec<String>,
        action: Settle,
    ) -> Result<Vec<pb::ReceiptResult>, Status> {
        let result = async {
            self.broker.check_accepting()?;
            self.broker.check_leader(LogKind::Queue, queue, 0)?;
            self.broker.queues.settle(queue, &receipts, action).await
        }
        .await;
        let outcomes = self.broker.answer(method, result)?;
        Ok(receipts
            .into_iter()
            .zip(outcomes)
            .map(|(receipt, outcome)| pb::ReceiptResult {
                receipt,
                error: outcome.err().map(|err| error_detail(&err)),
            })
            .collect())
    }
}

#[tonic::async_trait]
impl QueueService for QueueApi {
    async fn create_queue(
        &self,
        request: Request<pb::CreateQueueRequest>,
    ) -> Result<Response<pb::CreateQueueResponse>, Status> {
        let caller = self.check("CreateQueue", &request, Operation::Admin, |r| &r.name)?;
        let request = request.into_inner();
        let result = async {
            self.broker.check_accepting()?;
            let overrides = queue_overrides(request.config)?;
            self.broker.queues.create(&request.name, &overrides).await
        }
        .await;
        let queue = self.broker.answer("CreateQueue", result)?;
        audit_admin(&caller, "create-queue", queue.name());
        Ok(Response::new(pb::CreateQueueResponse {
            queue: Some(self.info(&queue)),
        }))
    }

    async fn delete_queue(
        &self,
        request: Request<pb::DeleteQueueRequest>,
    ) -> Result<Response<pb::DeleteQueueResponse>, Status> {
        let caller = self.check("DeleteQueue", &request, Operation::Admin, |r| &r.name)?;
        let name = request.into_inner().name;
        let result = async {
            self.broker.check_accepting()?;
            self.broker.queues.delete(&name).await
        }
        .await;
        self.broker.answer("DeleteQueue", result)?;
        audit_admin(&caller, "delete-queue", &name);
        Ok(Response::new(pb::DeleteQueueResponse {}))
    }

    async fn purge_queue(
        &self,
        request: Request<pb::PurgeQueueRequest>,
    ) -> Result<Response<pb::PurgeQueueResponse>, Status> {
        let caller = self.check("PurgeQueue", &request, Operation::Purge, |r| &r.name)?;
        let name = request.into_inner().name;
        let result = async {
            self.broker.check_accepting()?;
            self.broker.check_leader(LogKind::Queue, &name, 0)?;
            self.broker.queues.purge(&name).await
        }
        .await;
        let purged = self.broker.answer("PurgeQueue", result)?;
        audit_admin(&caller, "purge-queue", &name);
        Ok(Response::new(pb::PurgeQueueResponse { purged }))
    }

    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let caller = caller(&request);
        let queues = self
            .broker
            .queues
            .list()
            .iter()
            .filter(|q| self.guard.may_describe(&caller, Resource::Queue(q.name())))
            .map(|q| self.info(q))
            .collect();
        Ok(Response::new(pb::ListQueuesResponse { queues }))
    }

    async fn describe_queue(
        &self,
        request: Request<pb::DescribeQueueRequest>,
    ) -> Result<Response<pb::DescribeQueueResponse>, Status> {
        self.check("DescribeQueue", &request, Operation::Describe, |r| &r.name)?;
        let name = request.into_inner().name;
        let found = self
            .broker
            .check_leader(LogKind::Queue, &name, 0)
            .and_then(|_epoch| self.broker.queues.get(&name));
        let queue = self.broker.answer("DescribeQueue", found)?;
        Ok(Response::new(pb::DescribeQueueResponse {
            queue: Some(self.info(&queue)),
        }))
    }

    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let caller = self.check("Send", &request, Operation::Send, |r| &r.queue)?;
        let request = request.into_inner();
        self.guard.admit(
            "Send",
            &caller,
            Resource::Queue(&request.queue),
            QuotaKind::ProduceBytes,
        )?;
        let bytes: usize = request.messages.iter().map(send_message_bytes).sum();
        let messages = request.messages.into_iter().map(outgoing_message).collect();
        let result = async {
            self.broker.check_accepting()?;
            self.broker
                .check_leader(LogKind::Queue, &request.queue, 0)?;
            self.broker.queues.send(&request.queue, messages).await
        }
        .await;
        let (queue, outcomes) = self.broker.answer("Send", result)?;
        self.guard.charge(
            &caller,
            Resource::Queue(&request.queue),
            QuotaKind::ProduceBytes,
            bytes as u64,
        );
        Ok(Response::new(pb::SendResponse {
            results: outcomes
                .into_iter()
                .map(|o| pb::SendResult {
                    message_id: queue.message_id(o.offset),
                    duplicate: o.duplicate,
                })
                .collect(),
        }))
    }

    async fn receive(
        &self,
        request: Request<pb::ReceiveRequest>,
    ) -> Result<Response<pb::ReceiveResponse>, Status> {
        let caller = self.check("Receive", &request, Operation::Receive, |r| &r.queue)?;
        self.guard.admit(
            "Receive",
            &caller,
            Resource::Queue(&request.get_ref().queue),
            QuotaKind::ConsumeBytes,
        )?;
        let peer = request.remote_addr();
        let request = request.into_inner();
        let result = async {
            self.broker.check_accepting()?;
            self.broker
                .check_leader(LogKind::Queue, &request.queue, 0)?;
            let queue = self.broker.queues.get(&request.queue)?;
            let receive = self.receive_request(&queue, &request, peer)?;
            self.broker
                .queues
                .receive(&request.queue, receive, self.broker.stopping())
                .await
        }
        .await;
        let (queue, delivered) = self.broker.answer("Receive", result)?;
        let messages: Vec<pb::ReceivedMessage> = delivered
            .into_iter()
            .map(|d| received_message(&queue, d))
            .collect();
        let read: usize = messages.iter().map(|m| m.body.len()).sum();
        self.guard.charge(
            &caller,
            Resource::Queue(&request.queue),
            QuotaKind::ConsumeBytes,
            read as u64,
        );
        Ok(Response::new(pb::ReceiveResponse { messages }))
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        self.check("Ack", &request, Operation::Ack, |r| &r.queue)?;
        let request = request.into_inner();
        let results = self
            .settle("Ack", &request.queue, request.receipts, Settle::Ack)
            .await?;
        Ok(Response::new(pb::AckResponse { results }))
    }

    async fn nack(
        &self,
        request: Request<pb::NackRequest>,
    ) -> Result<Response<pb::NackResponse>, Status> {
        self.check("Nack", &request, Operation::Ack, |r| &r.queue)?;
        let request = request.into_inner();
        let results = self
            .settle(
                "Nack",
                &request.queue,
                request.receipts,
                Settle::Visibility(request.delay_ms),
            )
            .await?;
        Ok(Response::new(pb::NackResponse { results }))
    }

    async fn change_visibility(
        &self,
        request: Request<pb::ChangeVisibilityRequest>,
    ) -> Result<Response<pb::ChangeVisibilityResponse>, Status> {
        self.check("ChangeVisibility", &request, Operation::Ack, |r| &r.queue)?;
        let request = request.into_inner();
        let results = self
            .settle(
                "ChangeVisibility",
                &request.queue,
                request.receipts,
                Settle::Visibility(request.visibility_timeout_ms),
            )
            .await?;
        Ok(Response::new(pb::ChangeVisibilityResponse { results }))
    }

    async fn redrive(
        &self,
        request: Request<pb::RedriveRequest>,
    ) -> Result<Response<pb::RedriveResponse>, Status> {
        let caller = self.check("Redrive", &request, Operation::Redrive, |r| &r.queue)?;
        // Moving messages into a named queue sends to it; back to their origins needs
        // only the redrive right on the dead-letter queue.
        if let Some(target) = request
            .get_ref()
            .to_queue
            .as_deref()
            .filter(|q| !q.is_empty())
        {
            self.guard.check(
                "Redrive",
                &request,
                Operation::Send,
                [Resource::Queue(target)],
            )?;
        }
        let request = request.into_inner();
        let result = async {
            self.broker.check_accepting()?;
            self.broker
                .check_leader(LogKind::Queue, &request.queue, 0)?;
            self.broker
                .queues
                .redrive(
                    &request.queue,
                    request.to_queue.as_deref().filter(|q| !q.is_empty()),
                    request.max_messages,
                )
                .await
        }
        .await;
        let moved = self.broker.answer("Redrive", result)?;
        audit_admin(&caller, "redrive-queue", &request.queue);
        Ok(Response::new(pb::RedriveResponse { moved }))
    }
}
