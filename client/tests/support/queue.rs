//! The mock broker's `QueueService`: standard queues in memory with visibility
//! timeouts, receipts that go stale on redelivery, dedup ids, dead-lettering after
//! `max_receive_count` receives and redrive. FIFO ordering is not modelled.
//!
//! Receipts are `queue:id:receive_count`, so the mock can tell a stale receipt (the
//! message was acked or received again) from an invalid one (never issued here).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_proto::v1 as pb;
use ferry_proto::v1::queue_service_server::QueueService;
use tonic::{Request, Response, Status};

use super::{Faults, Reply, status};

#[derive(Debug)]
struct Message {
    body: bytes::Bytes,
    attributes: HashMap<String, String>,
    group_id: String,
    dedup_id: String,
    sent_at_ms: i64,
    receive_count: u32,
    visible_at: Instant,
    in_flight: bool,
    dead_letter: Option<pb::DeadLetterOrigin>,
}

#[derive(Debug)]
struct Queue {
    config: pb::QueueConfig,
    messages: BTreeMap<u64, Message>,
    dedup: HashMap<String, u64>,
    stats: pb::QueueStats,
}

/// Every queue the mock knows, and what it saw of receives.
#[derive(Debug, Default)]
pub struct QueueState {
    queues: BTreeMap<String, Queue>,
    next_id: u64,
    /// The `grpc-timeout` header of the latest receive (`None` when it had none).
    pub last_receive_deadline: Option<Duration>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn not_found(name: &str) -> Status {
    status(
        tonic::Code::NotFound,
        pb::ErrorCode::QueueNotFound,
        &format!("queue '{name}' not found"),
    )
}

/// Parses a `grpc-timeout` header value (`<digits><unit>`).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The settings in force: what was asked, with the protocol's defaults filled in.
fn in_force(config: Option<pb::QueueConfig>) -> pb::QueueConfig {
    let mut config = config.unwrap_or_default();
    if config.durability == pb::Durability::Unspecified as i32 {
        config.durability = pb::Durability::Fsync as i32;
    }
    config.visibility_timeout_ms.get_or_insert(30_000);
    config.delay_ms.get_or_insert(0);
    config.receive_wait_ms.get_or_insert(20_000);
    config.retention_ms.get_or_insert(4 * 86_400_000);
    config.max_message_bytes.get_or_insert(256 << 10);
    config.max_receive_count.get_or_insert(0);
    config.dedup_window_ms.get_or_insert(300_000);
    config.max_messages.get_or_insert(10_000_000);
    config.replication_factor = config.replication_factor.max(1);
    config
}

impl QueueState {
    fn info(&self, name: &str) -> Option<pb::QueueInfo> {
        let queue = self.queues.get(name)?;
        let now = Instant::now();
        let mut stats = queue.stats;
        stats.visible = 0;
        stats.in_flight = 0;
        stats.delayed = 0;
        for message in queue.messages.values() {
            match (message.in_flight, message.visible_at <= now) {
                (_, true) => stats.visible += 1,
                (true, false) => stats.in_flight += 1,
                (false, false) => stats.delayed += 1,
            }
        }
        let dead_letter_sources = self
            .queues
            .iter()
            .filter(|(_, q)| q.config.dead_letter_queue.as_deref() == Some(name))
            .map(|(source, _)| source.clone())
            .collect();
        Some(pb::QueueInfo {
            name: name.to_owned(),
            config: Some(queue.config.clone()),
            stats: Some(stats),
            created_at_ms: 1_700_000_000_000,
            dead_letter_sources,
        })
    }

    /// Takes up to `max` visible messages, dead-lettering those received too often.
    fn take(&mut self, request: &pb::ReceiveRequest) -> Result<Vec<pb::ReceivedMessage>, Status> {
        let name = &request.queue;
        let queue = self.queues.get_mut(name).ok_or_else(|| not_found(name))?;
        let now = Instant::now();
        let visibility = request
            .visibility_timeout_ms
            .or(queue.config.visibility_timeout_ms)
            .unwrap_or(30_000);
        let max_receives = queue.config.max_receive_count.unwrap_or(0);
        let dead_letter_queue = queue.config.dead_letter_queue.clone();
        let at_most_once = request.mode == pb::ReceiveMode::AtMostOnce as i32;
        let mut out = Vec::new();
        let mut dead = Vec::new();
        let ids: Vec<u64> = queue
            .messages
            .iter()
            .filter(|(_, m)| m.visible_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if out.len() >= request.max_messages.max(1) as usize {
                break;
            }
            let Some(message) = queue.messages.get_mut(&id) else {
                continue;
            };
            if max_receives > 0 && message.receive_count >= max_receives {
                if let Some(message) = queue.messages.remove(&id) {
                    dead.push((id, message));
                }
                continue;
            }
            message.receive_count += 1;
            message.in_flight = true;
            message.visible_at = now + Duration::from_millis(visibility);
            queue.stats.received += 1;
            if message.receive_count > 1 {
                queue.stats.redelivered += 1;
            }
            out.push(pb::ReceivedMessage {
                message_id: format!("m{id}"),
                receipt: format!("{name}:{id}:{}", message.receive_count),
                body: message.body.clone(),
                attributes: message.attributes.clone(),
                receive_count: message.receive_count,
                sent_at_ms: message.sent_at_ms,
                group_id: message.group_id.clone(),
                dedup_id: message.dedup_id.clone(),
                dead_letter: message.dead_letter.clone(),
            });
            if at_most_once {
                queue.messages.remove(&id);
            }
        }
        queue.stats.dead_lettered += dead.len() as u64;
        if let Some(target) = dead_letter_queue.and_then(|dlq| self.queues.get_mut(&dlq)) {
            for (id, mut message) in dead {
                message.dead_letter = Some(pb::DeadLetterOrigin {
                    source_queue: name.clone(),
                    source_message_id: format!("m{id}"),
                    reason: "max receive count exceeded".into(),
                    receive_count: message.receive_count,
                    dead_lettered_at_ms: now_ms(),
                });
                message.in_flight = false;
                message.visible_at = now;
                target.messages.insert(id, message);
            }
        }
        Ok(out)
    }

    /// Applies `change` to the in-flight message a receipt names, or says why not.
    fn with_receipt(
        &mut self,
        queue_name: &str,
        receipt: &str,
        change: impl FnOnce(&mut Queue, u64),
    ) -> Option<pb::ErrorDetail> {
        let parts: Vec<&str> = receipt.split(':').collect();
        let parsed = match parts.as_slice() {
            [queue, id, count] if *queue == queue_name => {
                id.parse::<u64>().ok().zip(count.parse::<u32>().ok())
            }
            _ => None,
        };
        let error = |code: pb::ErrorCode| {
            Some(pb::ErrorDetail {
                code: code as i32,
                message: format!("receipt '{receipt}': {}", code.as_str_name()),
                ..pb::ErrorDetail::default()
            })
        };
        let Some((id, count)) = parsed.filter(|(id, _)| *id < self.next_id) else {
            return error(pb::ErrorCode::ReceiptInvalid);
        };
        let queue = self.queues.get_mut(queue_name)?;
        match queue.messages.get(&id) {
            // Like the broker, a receipt works until the message is received again,
            // even after its visibility timeout ran out.
            Some(message) if message.in_flight && message.receive_count == count => {
                change(queue, id);
                None
            }
            _ => error(pb::ErrorCode::ReceiptStale),
        }
    }
}

/// The queue half of the mock broker.
#[derive(Clone)]
pub struct QueueApi {
    pub state: Arc<Mutex<QueueState>>,
    pub faults: Arc<Faults>,
}

impl QueueApi {
    async fn stall(&self) {
        let ms = self.faults.stall_queue_admin_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
        }
    }

    fn receipts(
        &self,
        queue: &str,
        receipts: &[String],
        change: impl Fn(&mut Queue, u64),
    ) -> Result<Vec<pb::ReceiptResult>, Status> {
        let mut state = self.state.lock().unwrap();
        if !state.queues.contains_key(queue) {
            return Err(not_found(queue));
        }
        Ok(receipts
            .iter()
            .map(|receipt| pb::ReceiptResult {
                receipt: receipt.clone(),
                error: state.with_receipt(queue, receipt, &change),
            })
            .collect())
    }
}

#[tonic::async_trait]
impl QueueService for QueueApi {
    async fn create_queue(
        &self,
        request: Request<pb::CreateQueueRequest>,
    ) -> Reply<pb::CreateQueueResponse> {
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        if state.queues.contains_key(&request.name) {
            return Err(status(
                tonic::Code::AlreadyExists,
                pb::ErrorCode::QueueAlreadyExists,
                "exists",
            ));
        }
        let queue = Queue {
            config: in_force(request.config),
            messages: BTreeMap::new(),
            dedup: HashMap::new(),
            stats: pb::QueueStats::default(),
        };
        state.queues.insert(request.name.clone(), queue);
        Ok(Response::new(pb::CreateQueueResponse {
            queue: state.info(&request.name),
        }))
    }

    async fn delete_queue(
        &self,
        request: Request<pb::DeleteQueueRequest>,
    ) -> Reply<pb::DeleteQueueResponse> {
        let name = request.into_inner().name;
        let mut state = self.state.lock().unwrap();
        state.queues.remove(&name).ok_or_else(|| not_found(&name))?;
        Ok(Response::new(pb::DeleteQueueResponse {}))
    }

    async fn purge_queue(
        &self,
        request: Request<pb::PurgeQueueRequest>,
    ) -> Reply<pb::PurgeQueueResponse> {
        let name = request.into_inner().name;
        let mut state = self.state.lock().unwrap();
        let queue = state
            .queues
            .get_mut(&name)
            .ok_or_else(|| not_found(&name))?;
        let purged = queue.messages.len() as u64;
        queue.messages.clear();
        Ok(Response::new(pb::PurgeQueueResponse { purged }))
    }

    async fn list_queues(
        &self,
        _request: Request<pb::ListQueuesRequest>,
    ) -> Reply<pb::ListQueuesResponse> {
        let state = self.state.lock().unwrap();
        // Reverse order: the client is the one that sorts.
        let queues = state
            .queues
            .keys()
            .rev()
            .filter_map(|name| state.info(name))
            .collect();
        Ok(Response::new(pb::ListQueuesResponse { queues }))
    }

    async fn describe_queue(
        &self,
        request: Request<pb::DescribeQueueRequest>,
    ) -> Reply<pb::DescribeQueueResponse> {
        self.stall().await;
        let name = request.into_inner().name;
        let state = self.state.lock().unwrap();
        let queue = state.info(&name).ok_or_else(|| not_found(&name))?;
        Ok(Response::new(pb::DescribeQueueResponse {
            queue: Some(queue),
        }))
    }

    async fn send(&self, request: Request<pb::SendRequest>) -> Reply<pb::SendResponse> {
        let request = request.into_inner();
        if let Some(status) = self.faults.not_leader(&request.queue, 0) {
            return Err(status);
        }
        let mut state = self.state.lock().unwrap();
        let mut next_id = state.next_id;
        let queue = state
            .queues
            .get_mut(&request.queue)
            .ok_or_else(|| not_found(&request.queue))?;
        let now = Instant::now();
        let mut results = Vec::new();
        for message in request.messages {
            if let Some(&id) = queue.dedup.get(&message.dedup_id) {
                queue.stats.deduplicated += 1;
                results.push(pb::SendResult {
                    message_id: format!("m{id}"),
                    duplicate: true,
                });
                continue;
            }
            let id = next_id;
            next_id += 1;
            if !message.dedup_id.is_empty() {
                queue.dedup.insert(message.dedup_id.clone(), id);
            }
            let delay = message.delay_ms.or(queue.config.delay_ms).unwrap_or(0);
            queue.messages.insert(
                id,
                Message {
                    body: message.body,
                    attributes: message.attributes,
                    group_id: message.group_id,
                    dedup_id: message.dedup_id,
                    sent_at_ms: now_ms(),
                    receive_count: 0,
                    visible_at: now + Duration::from_millis(delay),
                    in_flight: false,
                    dead_letter: None,
                },
            );
            queue.stats.sent += 1;
            results.push(pb::SendResult {
                message_id: format!("m{id}"),
                duplicate: false,
            });
        }
        state.next_id = next_id;
        Ok(Response::new(pb::SendResponse { results }))
    }

    async fn receive(&self, request: Request<pb::ReceiveRequest>) -> Reply<pb::ReceiveResponse> {
        if let Some(status) = self.faults.not_leader(&request.get_ref().queue, 0) {
            return Err(status);
        }
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        let request = request.into_inner();
        let wait = {
            let mut state = self.state.lock().unwrap();
            state.last_receive_deadline = deadline;
            let queue = state
                .queues
                .get(&request.queue)
                .ok_or_else(|| not_found(&request.queue))?;
            let wait_ms = request.wait_ms.or(queue.config.receive_wait_ms);
            Duration::from_millis(u64::from(wait_ms.unwrap_or(0)))
        };
        let start = Instant::now();
        loop {
            let messages = self.state.lock().unwrap().take(&request)?;
            if !messages.is_empty() || start.elapsed() >= wait {
                return Ok(Response::new(pb::ReceiveResponse { messages }));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn ack(&self, request: Request<pb::AckRequest>) -> Reply<pb::AckResponse> {
        let request = request.into_inner();
        let results = self.receipts(&request.queue, &request.receipts, |queue, id| {
            queue.messages.remove(&id);
            queue.stats.acked += 1;
        })?;
        Ok(Response::new(pb::AckResponse { results }))
    }

    async fn nack(&self, request: Request<pb::NackRequest>) -> Reply<pb::NackResponse> {
        let request = request.into_inner();
        let visible_at = Instant::now() + Duration::from_millis(request.delay_ms);
        let results = self.receipts(&request.queue, &request.receipts, |queue, id| {
            if let Some(message) = queue.messages.get_mut(&id) {
                message.in_flight = false;
                message.visible_at = visible_at;
            }
        })?;
        Ok(Response::new(pb::NackResponse { results }))
    }

    async fn change_visibility(
        &self,
        request: Request<pb::ChangeVisibilityRequest>,
    ) -> Reply<pb::ChangeVisibilityResponse> {
        let request = request.into_inner();
        let visible_at = Instant::now() + Duration::from_millis(request.visibility_timeout_ms);
        let results = self.receipts(&request.queue, &request.receipts, |queue, id| {
            if let Some(message) = queue.messages.get_mut(&id) {
                message.visible_at = visible_at;
            }
        })?;
        Ok(Response::new(pb::ChangeVisibilityResponse { results }))
    }

    async fn redrive(&self, request: Request<pb::RedriveRequest>) -> Reply<pb::RedriveResponse> {
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        let dlq = state
            .queues
            .get_mut(&request.queue)
            .ok_or_else(|| not_found(&request.queue))?;
        let limit = if request.max_messages == 0 {
            usize::MAX
        } else {
            request.max_messages as usize
        };
        let ids: Vec<u64> = dlq.messages.keys().copied().take(limit).collect();
        let moving: Vec<(u64, Message)> = ids
            .into_iter()
            .filter_map(|id| dlq.messages.remove(&id).map(|m| (id, m)))
            .collect();
        let moved = moving.len() as u64;
        for (id, mut message) in moving {
            let target = request.to_queue.clone().unwrap_or_else(|| {
                message
                    .dead_letter
                    .as_ref()
                    .map(|origin| origin.source_queue.clone())
                    .unwrap_or_default()
            });
            let target = state
                .queues
                .get_mut(&target)
                .ok_or_else(|| not_found(&target))?;
            message.receive_count = 0;
            message.dead_letter = None;
            target.messages.insert(id, message);
        }
        Ok(Response::new(pb::RedriveResponse { moved }))
    }
}
