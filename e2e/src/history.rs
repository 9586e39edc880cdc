//! A recorded history of client operations, shared by the tasks of a test, and the
//! checker that decides whether what the cluster did was allowed.
//!
//! Tasks record a send when they invoke it and again when they learn its outcome;
//! the final read of every partition is recorded last. [`check`] then compares
//! acknowledgements with what was read. Values must be unique per send: the checker
//! matches sends and reads by value.

mod anomaly;
mod check;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;

pub use anomaly::{Anomaly, Position};
pub use check::{CheckOptions, Counts, Verdict, check, check_log};

/// What became of a send, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SendOutcome {
    /// Invoked, and no outcome recorded yet; the checker treats it like `Unknown`.
    Pending,
    /// Acknowledged at this offset.
    Ok {
        /// The offset the broker acknowledged.
        offset: u64,
    },
    /// Definitely refused: the broker said no, so the value must never be read.
    Failed,
    /// Indeterminate: a timeout or lost connection; the value may or may not be stored.
    Unknown,
}

/// One send operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendOp {
    /// Operation id, unique within the history.
    pub id: u64,
    /// Which producer sent it; order is checked per producer and partition.
    pub producer: u32,
    /// The partition it was sent to.
    pub partition: u32,
    /// The value, unique per send.
    pub value: String,
    /// When it was invoked, in µs since the history started.
    pub invoke_us: u64,
    /// When its outcome was recorded, in µs since the history started.
    pub complete_us: Option<u64>,
    /// Its outcome.
    pub outcome: SendOutcome,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadOp {
    /// The partition it was read from.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Its value.
    pub value: String,
}

/// Everything recorded so far: a plain value the checker works on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HistoryLog {
    /// Sends in the order they were invoked (index = op id).
    pub sends: Vec<SendOp>,
    /// Reads in the order they were recorded.
    pub reads: Vec<ReadOp>,
}

/// A history shared between tasks: clone it into each one.
///
/// A short std mutex guards it: every method holds the lock only to push or update
/// one entry and never across an `.await`, so an async mutex would buy nothing. The
/// lock also orders the timestamps: each event gets a time strictly later than the
/// event recorded before it, so "A completed before B was invoked" in the history
/// means exactly that for the tasks that recorded them.
#[derive(Debug, Clone)]
pub struct History {
    inner: Arc<Mutex<Recorder>>,
}

#[derive(Debug)]
struct Recorder {
    start: Instant,
    last_us: Option<u64>,
    log: HistoryLog,
}

impl Recorder {
    /// Microseconds since the start, strictly after the previous event's.
    fn tick(&mut self) -> u64 {
        let now_us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let us = match self.last_us {
            Some(last) => now_us.max(last + 1),
            None => now_us,
        };
        self.last_us = Some(us);
        us
    }

    fn complete(&mut self, id: u64, outcome: SendOutcome) {
        let at_us = self.tick();
        let send = usize::try_from(id)
            .ok()
            .and_then(|index| self.log.sends.get_mut(index));
        let Some(send) = send else {
            panic!("send op {id} was never invoked");
        };
        assert_eq!(
            send.outcome,
            SendOutcome::Pending,
            "send op {id} completed twice"
        );
        send.outcome = outcome;
        send.complete_us = Some(at_us);
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Recorder {
                start: Instant::now(),
                last_us: None,
                log: HistoryLog::default(),
            })),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Recorder) -> T) -> T {
        // A panic while recording (a misuse, such as completing an op twice) already
        // fails the test; later recorders may still use what is there.
        let mut recorder = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut recorder)
    }

    /// Records that `producer` is sending `value` to `partition`; returns the op id.
    pub fn record_send_invoke(&self, producer: u32, partition: u32, value: &str) -> u64 {
        self.with(|recorder| {
            let invoke_us = recorder.tick();
            let id = recorder.log.sends.len() as u64;
            recorder.log.sends.push(SendOp {
                id,
                producer,
                partition,
                value: value.to_owned(),
                invoke_us,
                complete_us: None,
                outcome: SendOutcome::Pending,
            });
            id
        })
    }

    /// Records that send `id` was acknowledged at `offset`.
    pub fn record_send_ok(&self, id: u64, offset: u64) {
        self.with(|recorder| recorder.complete(id, SendOutcome::Ok { offset }));
    }

    /// Records that send `id` was definitely refused.
    pub fn record_send_failed(&self, id: u64) {
        self.with(|recorder| recorder.complete(id, SendOutcome::Failed));
    }

    /// Records that the outcome of send `id` is unknown (timeout, connection lost).
    pub fn record_send_unknown(&self, id: u64) {
        self.with(|recorder| recorder.complete(id, SendOutcome::Unknown));
    }

    /// Records that `value` was read at `offset` of `partition`.
    pub fn record_read(&self, partition: u32, offset: u64, value: &str) {
        self.with(|recorder| {
            recorder.log.reads.push(ReadOp {
                partition,
                offset,
                value: value.to_owned(),
            });
        });
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> HistoryLog {
        self.with(|recorder| recorder.log.clone())
    }
}
