//! Delivery reports: one shared outcome per batch, many cheap futures pointing at it.
//!
//! A record's future is an `Arc` to its batch's outcome plus its index in the batch,
//! so sending a record costs no channel and no allocation; the sender resolves a whole
//! batch with one lock and one wake-up per waiting task.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::error::ClientError;
use crate::types::RecordMetadata;

/// The shared outcome of one batch: its base offset, or why it failed.
#[derive(Debug)]
pub(crate) struct BatchOutcome {
    partition: u32,
    // A std mutex: it is held only to read or set the result and to queue a waker,
    // never across an await.
    state: Mutex<OutcomeState>,
}

#[derive(Debug, Default)]
struct OutcomeState {
    result: Option<Result<u64, ClientError>>,
    wakers: Vec<Waker>,
}

impl BatchOutcome {
    /// An unresolved outcome for a batch bound to `partition`.
    pub(crate) fn new(partition: u32) -> Arc<Self> {
        Arc::new(Self {
            partition,
            state: Mutex::new(OutcomeState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, OutcomeState> {
        // A panic while holding this lock cannot leave the state half-written (each
        // critical section is a single assignment or push), so poison is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Resolves the batch (first call wins) and wakes every waiting future.
    pub(crate) fn resolve(&self, result: Result<u64, ClientError>) {
        let wakers = {
            let mut state = self.lock();
            if state.result.is_some() {
                return;
            }
            state.result = Some(result);
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// The result for the record at `index`, if the batch is resolved.
    fn get(&self, index: u32) -> Option<Result<RecordMetadata, ClientError>> {
        let state = self.lock();
        state
            .result
            .as_ref()
            .map(|result| self.metadata(result, index))
    }

    fn metadata(
        &self,
        result: &Result<u64, ClientError>,
        index: u32,
    ) -> Result<RecordMetadata, ClientError> {
        match result {
            Ok(base_offset) => Ok(RecordMetadata {
                partition: self.partition,
                offset: base_offset + u64::from(index),
            }),
            Err(err) => Err(err.clone()),
        }
    }

    fn poll_record(
        &self,
        index: u32,
        cx: &mut Context<'_>,
        registered: &mut Option<Waker>,
    ) -> Poll<Result<RecordMetadata, ClientError>> {
        let mut state = self.lock();
        if let Some(result) = state.result.as_ref() {
            return Poll::Ready(self.metadata(result, index));
        }
        // Register once per distinct waker so a future polled repeatedly (in a
        // select loop, say) does not grow the list.
        let fresh = registered
            .as_ref()
            .is_none_or(|waker| !waker.will_wake(cx.waker()));
        if fresh {
            state.wakers.push(cx.waker().clone());
            *registered = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Resolves to where one sent record was stored, or why it could not be.
///
/// The record is sent whether or not this is awaited; dropping it only gives up on
/// learning the outcome (use `drop(future)` for fire-and-forget sends).
#[derive(Debug)]
pub struct DeliveryFuture {
    outcome: Arc<BatchOutcome>,
    index: u32,
    registered: Option<Waker>,
}

impl DeliveryFuture {
    pub(crate) fn new(outcome: Arc<BatchOutcome>, index: u32) -> Self {
        Self {
            outcome,
            index,
            registered: None,
        }
    }

    /// The partition the record was assigned to (known before delivery).
    pub fn partition(&self) -> u32 {
        self.outcome.partition
    }

    /// The outcome if it is already known, without waiting.
    pub fn try_result(&self) -> Option<Result<RecordMetadata, ClientError>> {
        self.outcome.get(self.index)
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.outcome
            .poll_record(this.index, cx, &mut this.registered)
    }
}

/// A run of consecutive records of one `send_batch` call that landed in one batch.
#[derive(Debug)]
struct Run {
    outcome: Arc<BatchOutcome>,
    first_index: u32,
    count: u32,
}

/// Resolves when every record of one `send_batch` call is delivered: to their
/// positions in input order, or to the first error. Like [`DeliveryFuture`], dropping
/// it does not cancel anything.
#[derive(Debug, Default)]
pub struct BatchDelivery {
    runs: Vec<Run>,
    records: usize,
    next_run: usize,
    registered: Option<Waker>,
}

impl BatchDelivery {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Notes that the next record went to `outcome` at `index`.
    pub(crate) fn push(&mut self, outcome: &Arc<BatchOutcome>, index: u32) {
        self.records += 1;
        if let Some(run) = self.runs.last_mut()
            && Arc::ptr_eq(&run.outcome, outcome)
            && run.first_index + run.count == index
        {
            run.count += 1;
            return;
        }
        self.runs.push(Run {
            outcome: Arc::clone(outcome),
            first_index: index,
            count: 1,
        });
    }

    /// Number of records covered.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether no record is covered.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn collect(&self) -> Result<Vec<RecordMetadata>, ClientError> {
        let mut positions = Vec::with_capacity(self.records);
        for run in &self.runs {
            for index in run.first_index..run.first_index + run.count {
                match run.outcome.get(index) {
                    Some(result) => positions.push(result?),
                    None => return Err(ClientError::Protocol("batch not resolved".into())),
                }
            }
        }
        Ok(positions)
    }
}

impl Future for BatchDelivery {
    type Output = Result<Vec<RecordMetadata>, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        while let Some(run) = this.runs.get(this.next_run) {
            match run
                .outcome
                .poll_record(run.first_index, cx, &mut this.registered)
            {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(_)) => {
                    this.next_run += 1;
                    this.registered = None;
                }
            }
        }
        Poll::Ready(this.collect())
    }
}

#[cfg(test)]
impl BatchOutcome {
    /// The partition, for accumulator tests.
    pub(crate) fn partition_for_test(&self) -> u32 {
        self.partition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_record_of_a_batch_resolves_from_one_outcome() {
        let outcome = BatchOutcome::new(2);
        let first = DeliveryFuture::new(Arc::clone(&outcome), 0);
        let third = DeliveryFuture::new(Arc::clone(&outcome), 2);
        assert!(first.try_result().is_none());
        let waiter = tokio::spawn(third);
        tokio::task::yield_now().await;
        outcome.resolve(Ok(100));
        let third = waiter.await.ok().and_then(Result::ok);
        assert_eq!(
            third,
            Some(RecordMetadata {
                partition: 2,
                offset: 102
            })
        );
        assert_eq!(
            first.await.ok(),
            Some(RecordMetadata {
                partition: 2,
                offset: 100
            })
        );
    }

    #[tokio::test]
    async fn batch_delivery_merges_runs_and_reports_in_input_order() {
        let a = BatchOutcome::new(0);
        let b = BatchOutcome::new(1);
        let mut delivery = BatchDelivery::new();
        delivery.push(&a, 0);
        delivery.push(&b, 0);
        delivery.push(&a, 1);
        assert_eq!(delivery.runs.len(), 3);
        delivery.push(&a, 2);
        assert_eq!(delivery.runs.len(), 3, "consecutive index extends the run");
        a.resolve(Ok(10));
        b.resolve(Ok(20));
        let offsets: Vec<u64> = delivery
            .await
            .map(|p| p.iter().map(|m| m.offset).collect())
            .unwrap_or_default();
        assert_eq!(offsets, vec![10, 20, 11, 12]);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_its_records() {
        let outcome = BatchOutcome::new(0);
        outcome.resolve(Err(ClientError::Closed("producer")));
        outcome.resolve(Ok(5));
        assert!(DeliveryFuture::new(outcome, 0).await.is_err());
    }
}
