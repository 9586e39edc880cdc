//! The queue state machine: which stored messages are visible, delayed, in flight or
//! waiting to be dead-lettered, FIFO group order, and the dedup window.
//!
//! Pure: no I/O, no clock. Every call takes `now_ms`, and every change that must
//! survive a restart comes back as an [`Event`] for the caller to journal. Replaying
//! the stored messages and then the journal through [`QueueState::restore_message`]
//! and [`QueueState::apply`] rebuilds the same state.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// A change to journal. Offsets name messages in the queue's message log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message was delivered and is invisible until `visible_at_ms`.
    Received {
        /// The message.
        offset: u64,
        /// Its receive count after this delivery.
        receive_count: u32,
        /// The token its receipt handle carries.
        token: u64,
        /// When it becomes visible again unless acked.
        visible_at_ms: i64,
    },
    /// A message was deleted by its consumer (or delivered at most once).
    Acked {
        /// The message.
        offset: u64,
    },
    /// A received message's visibility deadline moved.
    VisibilityChanged {
        /// The message.
        offset: u64,
        /// The new deadline.
        visible_at_ms: i64,
    },
    /// A message was copied to the dead-letter queue and leaves this one.
    DeadLettered {
        /// The message.
        offset: u64,
    },
    /// A message outlived the retention period.
    Expired {
        /// The message.
        offset: u64,
    },
    /// Every message below `below` was purged.
    Purged {
        /// First offset not purged.
        below: u64,
    },
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Sent, waiting for its delay to end.
    Delayed,
    /// Can be received (FIFO: once it heads its group).
    Visible,
    /// Received, invisible until its deadline.
    InFlight,
    /// Received too often; waiting to be moved to the dead-letter queue.
    DeadLetter,
}

/// What the state keeps per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    /// Append time.
    pub sent_at_ms: i64,
    /// When it becomes (or became) visible.
    pub visible_at_ms: i64,
    /// Deliveries so far.
    pub receive_count: u32,
    /// Token of the latest receipt handle; 0 before the first delivery.
    pub token: u64,
    /// FIFO message group.
    pub group: Option<Arc<str>>,
    /// Current status.
    pub status: Status,
}

/// A new message for [`QueueState::add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Append time.
    pub sent_at_ms: i64,
    /// End of its delay (`sent_at_ms` for none).
    pub visible_at_ms: i64,
    /// FIFO message group.
    pub group: Option<Arc<str>>,
    /// Dedup id, if the send carried one (or the queue derives one from the body).
    pub dedup_id: Option<String>,
}

/// A delivered message, for the caller to read and answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The message.
    pub offset: u64,
    /// Receive count including this delivery.
    pub receive_count: u32,
    /// The receipt token.
    pub token: u64,
}

/// Why a receipt handle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// No message at that offset: acked, expired, purged, or never sent.
    #[error("the message is no longer in the queue (acked, expired, purged or dead-lettered)")]
    Gone,
    /// The message was received again since this receipt was issued.
    #[error("the message was received again since this receipt was issued")]
    Superseded,
    /// The message is not in flight (its visibility timeout expired).
    #[error("the message is not in flight: its visibility timeout expired")]
    NotInFlight,
}

/// Settings the state machine needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateConfig {
    /// FIFO ordering and one-in-flight per group.
    pub fifo: bool,
    /// Receives after which an unacked message is dead-lettered; 0 never.
    pub max_receive_count: u32,
    /// How long a dedup id is remembered.
    pub dedup_window_ms: u64,
}

/// Counts by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Visible (FIFO: including those behind their group's head).
    pub visible: u64,
    /// Received, not acked, deadline not passed.
    pub in_flight: u64,
    /// Waiting for their delay.
    pub delayed: u64,
    /// Waiting to be moved to the dead-letter queue.
    pub dead_letter: u64,
}

/// Runtime counters of transitions the journal does not record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transitions {
    /// In-flight messages whose deadline passed and became visible again.
    pub redelivered: u64,
}

/// One queue's state.
#[derive(Debug)]
pub struct QueueState {
    config: StateConfig,
    messages: BTreeMap<u64, MessageState>,
    /// Appended but not yet durable: invisible to everything but purge.
    pending: VecDeque<(u64, NewMessage)>,
    /// Receivable now, oldest first. FIFO: group heads only.
    ready: BTreeSet<u64>,
    /// Delayed and in-flight messages by the time they become visible.
    timers: BTreeSet<(i64, u64)>,
    /// Waiting to be dead-lettered, oldest first.
    dead_letters: BTreeSet<u64>,
    /// FIFO: each group's messages in send order.
    groups: HashMap<Arc<str>, VecDeque<u64>>,
    /// Dedup id → (message offset, time first sent).
    dedup: HashMap<String, (u64, i64)>,
    /// Dedup ids in the order they expire.
    dedup_expiry: VecDeque<(i64, String)>,
    depth: Depth,
    transitions: Transitions,
    /// Times a message joined `ready`, so callers can tell when to wake receivers.
    readied: u64,
}

/// What [`QueueState::add`] decided for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Store it at this offset.
    Stored(u64),
    /// A duplicate of the message at this offset; store nothing.
    Duplicate(u64),
}

impl QueueState {
    /// An empty queue.
    pub fn new(config: StateConfig) -> Self {
        Self {
            config,
            messages: BTreeMap::new(),
            pending: VecDeque::new(),
            ready: BTreeSet::new(),
            timers: BTreeSet::new(),
            dead_letters: BTreeSet::new(),
            groups: HashMap::new(),
            dedup: HashMap::new(),
            dedup_expiry: VecDeque::new(),
            depth: Depth::default(),
            transitions: Transitions::default(),
            readied: 0,
        }
    }

    /// Settings in force.
    pub fn config(&self) -> StateConfig {
        self.config
    }

    /// Messages held, pending ones included.
    pub fn len(&self) -> usize {
        self.messages.len() + self.pending.len()
    }

    /// True when no message is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts by status.
    pub fn depth(&self) -> Depth {
        self.depth
    }

    /// How many times a message became receivable so far. A change that raises it
    /// (a nack, or an ack that lets a FIFO group's next message through) must wake
    /// waiting receivers.
    pub fn readied(&self) -> u64 {
        self.readied
    }

    /// Counters of unjournaled transitions.
    pub fn transitions(&self) -> Transitions {
        self.transitions
    }

    /// The state of one message.
    pub fn message(&self, offset: u64) -> Option<&MessageState> {
        self.messages.get(&offset)
    }

    /// Send time of the oldest message.
    pub fn oldest_sent_at_ms(&self) -> Option<i64> {
        self.messages.values().map(|m| m.sent_at_ms).next()
    }

    /// Lowest offset still needed (held or pending), or `None` when empty.
    pub fn lowest_offset(&self) -> Option<u64> {
        let held = self.messages.keys().next().copied();
        let pending = self.pending.front().map(|(offset, _)| *offset);
        match (held, pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest time something changes by itself (a delay or a deadline ends).
    pub fn next_due_ms(&self) -> Option<i64> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Offsets waiting to be dead-lettered, oldest first.
    pub fn dead_letter_candidates(&self, max: usize) -> Vec<u64> {
        self.dead_letters.iter().take(max).copied().collect()
    }

    /// The original offset when `dedup_id` was sent within the window.
    pub fn find_duplicate(&mut self, dedup_id: &str, now_ms: i64) -> Option<u64> {
        self.expire_dedup(now_ms);
        self.dedup.get(dedup_id).map(|(offset, _)| *offset)
    }

    fn expire_dedup(&mut self, now_ms: i64) {
        while let Some((expires_at, _)) = self.dedup_expiry.front() {
            if *expires_at > now_ms {
                break;
            }
            if let Some((_, id)) = self.dedup_expiry.pop_front()
                && let Some((_, sent_at)) = self.dedup.get(&id)
                && sent_at.saturating_add(self.window()) <= now_ms
            {
                self.dedup.remove(&id);
            }
        }
    }

    fn window(&self) -> i64 {
        i64::try_from(self.config.dedup_window_ms).unwrap_or(i64::MAX)
    }

    fn remember_dedup(&mut self, dedup_id: String, offset: u64, sent_at_ms: i64) {
        let expires_at = sent_at_ms.saturating_add(self.window());
        self.dedup_expiry.push_back((expires_at, dedup_id.clone()));
        self.dedup.insert(dedup_id, (offset, sent_at_ms));
    }

    /// Records a message appended at `offset` (not yet durable). Offsets must grow.
    pub fn add(&mut self, offset: u64, message: NewMessage) {
        if let Some(id) = &message.dedup_id {
            self.remember_dedup(id.clone(), offset, message.sent_at_ms);
        }
        self.pending.push_back((offset, message));
    }

    /// Makes pending messages below `durable_end` receivable (or delayed).
    /// Returns how many became visible at once.
    pub fn promote(&mut self, durable_end: u64, now_ms: i64) -> usize {
        let mut visible = 0;
        while let Some((offset, _)) = self.pending.front() {
            if *offset >= durable_end {
                break;
            }
            let Some((offset, message)) = self.pending.pop_front() else {
                break;
            };
            if self.insert(offset, message, now_ms) == Status::Visible {
                visible += 1;
            }
        }
        visible
    }

    fn insert(&mut self, offset: u64, message: NewMessage, now_ms: i64) -> Status {
        let status = if message.visible_at_ms > now_ms {
            Status::Delayed
        } else {
            Status::Visible
        };
        if let Some(group) = &message.group {
            self.groups
                .entry(Arc::clone(group))
                .or_default()
                .push_back(offset);
        }
        self.messages.insert(
            offset,
            MessageState {
                sent_at_ms: message.sent_at_ms,
                visible_at_ms: message.visible_at_ms,
                receive_count: 0,
                token: 0,
                group: message.group,
                status,
            },
        );
        self.count(status, 1);
        self.enter(offset, status);
        status
    }

    /// Rebuilds a message from the message log during recovery (already durable).
    pub fn restore_message(&mut self, offset: u64, message: NewMessage, now_ms: i64) {
        if self.messages.contains_key(&offset) {
            return;
        }
        if let Some(id) = &message.dedup_id
            && message.sent_at_ms.saturating_add(self.window()) > now_ms
        {
            self.remember_dedup(id.clone(), offset, message.sent_at_ms);
        }
        self.insert(offset, message, now_ms);
    }

    /// Rebuilds a message from a snapshot during recovery.
    pub fn restore_snapshot_message(&mut self, offset: u64, message: MessageState, now_ms: i64) {
        let status = if message.visible_at_ms > now_ms {
            if message.receive_count > 0 {
                Status::InFlight
            } else {
                Status::Delayed
            }
        } else {
            self.after_deadline(message.receive_count)
        };
        if let Some(group) = &message.group {
            self.groups
                .entry(Arc::clone(group))
                .or_default()
                .push_back(offset);
        }
        self.messages
            .insert(offset, MessageState { status, ..message });
        self.count(status, 1);
        self.enter(offset, status);
    }

    /// Rebuilds a dedup entry from a snapshot; entries must come oldest first.
    pub fn restore_dedup(&mut self, dedup_id: String, offset: u64, sent_at_ms: i64) {
        self.remember_dedup(dedup_id, offset, sent_at_ms);
    }

    /// Every held message with its state, oldest first (for snapshots).
    pub fn messages(&self) -> impl Iterator<Item = (u64, &MessageState)> {
        self.messages.iter().map(|(offset, m)| (*offset, m))
    }

    /// Pending messages (for snapshots, which are taken only once they are durable).
    pub fn pending(&self) -> impl Iterator<Item = (u64, &NewMessage)> {
        self.pending.iter().map(|(offset, m)| (*offset, m))
    }

    /// Live dedup entries: (id, offset, first sent).
    pub fn dedup_entries(&self) -> impl Iterator<Item = (&str, u64, i64)> {
        self.dedup
            .iter()
            .map(|(id, (offset, sent_at))| (id.as_str(), *offset, *sent_at))
    }

    fn after_deadline(&self, receive_count: u32) -> Status {
        let max = self.config.max_receive_count;
        if max > 0 && receive_count >= max {
            Status::DeadLetter
        } else {
            Status::Visible
        }
    }

    fn count(&mut self, status: Status, delta: i64) {
        let slot = match status {
            Status::Delayed => &mut self.depth.delayed,
            Status::Visible => &mut self.depth.visible,
            Status::InFlight => &mut self.depth.in_flight,
            Status::DeadLetter => &mut self.depth.dead_letter,
        };
        *slot = slot.saturating_add_signed(delta);
    }

    /// Puts `offset` into the index its status calls for.
    fn enter(&mut self, offset: u64, status: Status) {
        let Some(message) = self.messages.get(&offset) else {
            return;
        };
        match status {
            Status::Delayed | Status::InFlight => {
                self.timers.insert((message.visible_at_ms, offset));
            }
            Status::Visible => {
                if self.is_receivable_head(offset, message) {
                    self.ready.insert(offset);
                    self.readied += 1;
                }
            }
            Status::DeadLetter => {
                self.dead_letters.insert(offset);
            }
        }
    }

    /// Takes `offset` out of the index its status put it in.
    fn leave(&mut self, offset: u64) {
        let Some(message) = self.messages.get(&offset) else {
            return;
        };
        match message.status {
            Status::Delayed | Status::InFlight => {
                self.timers.remove(&(message.visible_at_ms, offset));
            }
            Status::Visible => {
                self.ready.remove(&offset);
            }
            Status::DeadLetter => {
                self.dead_letters.remove(&offset);
            }
        }
    }

    /// Standard queues: every visible message. FIFO: a visible message heading its group.
    fn is_receivable_head(&self, offset: u64, message: &MessageState) -> bool {
        match &message.group {
            Some(group) if self.config.fifo => self
                .groups
                .get(group)
                .and_then(VecDeque::front)
                .is_some_and(|head| *head == offset),
            _ => true,
        }
    }

    fn set_status(&mut self, offset: u64, status: Status) {
        self.leave(offset);
        let Some(message) = self.messages.get_mut(&offset) else {
            return;
        };
        let old = message.status;
        message.status = status;
        self.count(old, -1);
        self.count(status, 1);
        self.enter(offset, status);
    }

    fn remove(&mut self, offset: u64) -> Option<MessageState> {
        self.leave(offset);
        let message = self.messages.remove(&offset)?;
        self.count(message.status, -1);
        if let Some(group) = &message.group
            && let Some(queue) = self.groups.get_mut(group)
        {
            let was_head = queue.front() == Some(&offset);
            if was_head {
                queue.pop_front();
            } else if let Some(at) = queue.iter().position(|o| *o == offset) {
                queue.remove(at);
            }
            match queue.front().copied() {
                None => {
                    self.groups.remove(group);
                }
                Some(next) if was_head => {
                    if self
                        .messages
                        .get(&next)
                        .is_some_and(|m| m.status == Status::Visible)
                    {
                        self.ready.insert(next);
                        self.readied += 1;
                    }
                }
                Some(_) => {}
            }
        }
        Some(message)
    }

    /// Applies the passage of time: delays and visibility deadlines that ended.
    /// Returns how many messages became visible.
    pub fn advance(&mut self, now_ms: i64) -> usize {
        let mut visible = 0;
        while let Some(&(at, offset)) = self.timers.first() {
            if at > now_ms {
                break;
            }
            let Some(message) = self.messages.get(&offset) else {
                self.timers.pop_first();
                continue;
            };
            let next = match message.status {
                Status::InFlight => self.after_deadline(message.receive_count),
                _ => Status::Visible,
            };
            if message.status == Status::InFlight && next == Status::Visible {
                self.transitions.redelivered += 1;
            }
            self.set_status(offset, next);
            if next == Status::Visible {
                visible += 1;
            }
        }
        visible
    }

    /// Delivers up to `max` receivable messages, oldest first, each invisible for
    /// `visibility_ms`. `token` is called once per delivery for its receipt token.
    /// `at_most_once` deletes them as they are delivered.
    pub fn receive(
        &mut self,
        max: usize,
        visibility_ms: u64,
        at_most_once: bool,
        now_ms: i64,
        token: impl FnMut() -> u64,
        events: &mut Vec<Event>,
    ) -> Vec<Delivery> {
        let options = (max, visibility_ms, at_most_once);
        self.receive_undoable(options, now_ms, token, events, None)
    }

    /// [`QueueState::receive`] (`options`: max, visibility, at most once) that also
    /// collects each delivered message's state from before, so a receive whose events
    /// cannot be journaled can be undone with [`QueueState::put_back`].
    pub fn receive_undoable(
        &mut self,
        (max, visibility_ms, at_most_once): (usize, u64, bool),
        now_ms: i64,
        mut token: impl FnMut() -> u64,
        events: &mut Vec<Event>,
        mut before: Option<&mut Vec<(u64, MessageState)>>,
    ) -> Vec<Delivery> {
        self.advance(now_ms);
        let deadline = now_ms.saturating_add(i64::try_from(visibility_ms).unwrap_or(i64::MAX));
        let mut deliveries = Vec::new();
        while deliveries.len() < max {
            let Some(offset) = self.ready.pop_first() else {
                break;
            };
            let Some(message) = self.messages.get_mut(&offset) else {
                continue;
            };
            if let Some(before) = before.as_deref_mut() {
                before.push((offset, message.clone()));
            }
            let receive_count = message.receive_count.saturating_add(1);
            let delivery = Delivery {
                offset,
                receive_count,
                token: token(),
            };
            if at_most_once {
                self.remove(offset);
                events.push(Event::Acked { offset });
            } else {
                message.receive_count = receive_count;
                message.token = delivery.token;
                message.visible_at_ms = deadline;
                self.set_status(offset, Status::InFlight);
                events.push(Event::Received {
                    offset,
                    receive_count,
                    token: delivery.token,
                    visible_at_ms: deadline,
                });
            }
            deliveries.push(delivery);
        }
        deliveries
    }

    fn check_receipt(&self, offset: u64, token: u64) -> Result<&MessageState, ReceiptError> {
        let message = self.messages.get(&offset).ok_or(ReceiptError::Gone)?;
        if message.token != token || token == 0 {
            return Err(ReceiptError::Superseded);
        }
        Ok(message)
    }

    /// Deletes a received message. Works until the message is received again, even
    /// after its visibility timeout expired, but not once it is due for the
    /// dead-letter queue.
    pub fn ack(&mut self, offset: u64, token: u64) -> Result<Event, ReceiptError> {
        let message = self.check_receipt(offset, token)?;
        // Its copy may already be on the way to the dead-letter queue (outside the
        // lock); deleting it here would leave it both acked and dead-lettered.
        if message.status == Status::DeadLetter {
            return Err(ReceiptError::NotInFlight);
        }
        self.remove(offset);
        Ok(Event::Acked { offset })
    }

    /// Sets an in-flight message's deadline to `now + timeout_ms`; 0 makes it visible
    /// now (a nack).
    pub fn change_visibility(
        &mut self,
        offset: u64,
        token: u64,
        timeout_ms: u64,
        now_ms: i64,
    ) -> Result<Event, ReceiptError> {
        let message = self.check_receipt(offset, token)?;
        if message.status != Status::InFlight {
            return Err(ReceiptError::NotInFlight);
        }
        let visible_at_ms = now_ms.saturating_add(i64::try_from(timeout_ms).unwrap_or(i64::MAX));
        self.set_deadline(offset, visible_at_ms, now_ms);
        Ok(Event::VisibilityChanged {
            offset,
            visible_at_ms,
        })
    }

    /// Moves every deadline later than `latest(offset, message)` back to it, for in
    /// flight and delayed messages: a leader that rebuilt the state from events another
    /// clock wrote re-arms them from its own (a clock ahead of it must not hold messages
    /// back for longer than their visibility timeout or delay).
    pub fn cap_deadlines(&mut self, now_ms: i64, latest: impl Fn(u64, &MessageState) -> i64) {
        let capped: Vec<(u64, i64)> = self
            .messages
            .iter()
            .filter(|(_, m)| matches!(m.status, Status::InFlight | Status::Delayed))
            .filter_map(|(offset, m)| {
                let cap = latest(*offset, m);
                (m.visible_at_ms > cap).then_some((*offset, cap))
            })
            .collect();
        for (offset, cap) in capped {
            self.move_deadline(offset, cap, None, now_ms);
        }
    }

    fn set_deadline(&mut self, offset: u64, visible_at_ms: i64, now_ms: i64) {
        self.move_deadline(offset, visible_at_ms, Some(Status::InFlight), now_ms);
    }

    /// Gives a message a new deadline: while it lies ahead the message is `pending`
    /// (or keeps its status, for `None`); once passed, whatever follows a deadline.
    fn move_deadline(
        &mut self,
        offset: u64,
        visible_at_ms: i64,
        pending: Option<Status>,
        now_ms: i64,
    ) {
        self.leave(offset);
        let Some(message) = self.messages.get_mut(&offset) else {
            return;
        };
        message.visible_at_ms = visible_at_ms;
        let (old, receive_count) = (message.status, message.receive_count);
        let status = if visible_at_ms > now_ms {
            pending.unwrap_or(old)
        } else {
            self.after_deadline(receive_count)
        };
        if let Some(message) = self.messages.get_mut(&offset) {
            message.status = status;
        }
        self.count(old, -1);
        self.count(status, 1);
        self.enter(offset, status);
    }

    /// Removes a message that was copied to the dead-letter queue.
    pub fn dead_lettered(&mut self, offset: u64) -> Option<Event> {
        let message = self.messages.get(&offset)?;
        if message.status != Status::DeadLetter {
            return None;
        }
        self.remove(offset);
        Some(Event::DeadLettered { offset })
    }

    /// Drops messages sent before `cutoff_ms` (retention), oldest first, at most `max`.
    pub fn expire(&mut self, cutoff_ms: i64, max: usize, events: &mut Vec<Event>) -> usize {
        let expired: Vec<u64> = self
            .messages
            .iter()
            .take_while(|(_, m)| m.sent_at_ms < cutoff_ms)
            .take(max)
            .map(|(offset, _)| *offset)
            .collect();
        for offset in &expired {
            self.remove(*offset);
            events.push(Event::Expired { offset: *offset });
        }
        expired.len()
    }

    /// Removes every message below `below`, pending ones included. Returns how many.
    pub fn purge(&mut self, below: u64) -> (usize, Event) {
        let doomed: Vec<u64> = self.messages.range(..below).map(|(o, _)| *o).collect();
        for offset in &doomed {
            self.remove(*offset);
        }
        let before = self.pending.len();
        self.pending.retain(|(offset, _)| *offset >= below);
        (
            doomed.len() + before - self.pending.len(),
            Event::Purged { below },
        )
    }

    /// Puts a message back exactly as `before` describes it: undoes a change (a
    /// receive, an ack, a visibility change) whose event could not be journaled, so
    /// the state stays what the journal replays to. Undo several in reverse order.
    pub fn put_back(&mut self, offset: u64, before: MessageState) {
        if let Some(current) = self.messages.get(&offset) {
            let status = current.status;
            self.leave(offset);
            self.count(status, -1);
        } else if let Some(group) = &before.group {
            let queue = self.groups.entry(Arc::clone(group)).or_default();
            let at = queue.partition_point(|o| *o < offset);
            // The message heads its group again; the one that moved up steps back.
            let demoted = (at == 0).then(|| queue.front().copied()).flatten();
            queue.insert(at, offset);
            if let Some(demoted) = demoted
                && self.config.fifo
            {
                self.ready.remove(&demoted);
            }
        }
        let status = before.status;
        self.messages.insert(offset, before);
        self.count(status, 1);
        self.enter(offset, status);
    }

    /// Replays a journaled event during recovery.
    pub fn apply(&mut self, event: &Event, now_ms: i64) {
        match *event {
            Event::Received {
                offset,
                receive_count,
                token,
                visible_at_ms,
            } => {
                if let Some(message) = self.messages.get_mut(&offset) {
                    message.receive_count = receive_count;
                    message.token = token;
                    self.set_deadline(offset, visible_at_ms, now_ms);
                }
            }
            Event::VisibilityChanged {
                offset,
                visible_at_ms,
            } => self.set_deadline(offset, visible_at_ms, now_ms),
            Event::Acked { offset }
            | Event::DeadLettered { offset }
            | Event::Expired { offset } => {
                self.remove(offset);
            }
            Event::Purged { below } => {
                self.purge(below);
            }
        }
    }

    /// Checks the internal indexes agree (tests and debug builds).
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let mut depth = Depth::default();
        for (offset, m) in &self.messages {
            match m.status {
                Status::Delayed => {
                    depth.delayed += 1;
                    assert!(self.timers.contains(&(m.visible_at_ms, *offset)));
                }
                Status::InFlight => {
                    depth.in_flight += 1;
                    assert!(self.timers.contains(&(m.visible_at_ms, *offset)));
                }
                Status::Visible => {
                    depth.visible += 1;
                    assert_eq!(
                        self.ready.contains(offset),
                        self.is_receivable_head(*offset, m),
                        "ready index for {offset}"
                    );
                }
                Status::DeadLetter => {
                    depth.dead_letter += 1;
                    assert!(self.dead_letters.contains(offset));
                }
            }
        }
        assert_eq!(depth, self.depth);
        assert_eq!(
            self.timers.len() as u64,
            depth.delayed + depth.in_flight,
            "stale timers"
        );
        for offset in &self.ready {
            assert!(self.messages.contains_key(offset));
        }
        if self.config.fifo {
            for (group, queue) in &self.groups {
                assert!(!queue.is_empty());
                let mut in_flight = 0;
                for (i, offset) in queue.iter().enumerate() {
                    let m = &self.messages[offset];
                    assert_eq!(m.group.as_deref(), Some(&**group));
                    if m.status == Status::InFlight {
                        in_flight += 1;
                        assert_eq!(i, 0, "only a group's head may be in flight");
                    }
                }
                assert!(in_flight <= 1);
                assert!(queue.iter().zip(queue.iter().skip(1)).all(|(a, b)| a < b));
            }
        }
    }
}
