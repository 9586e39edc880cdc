//! Fetch with long polling: read what is visible, and if that is less than asked
//! for, wait for any of the partitions to advance, up to the deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use ferry_records::Batches;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Limits;
use crate::error::{BrokerError, BrokerResult};
use crate::topic::{ReplicatedLog, Topics};

/// One partition to read.
#[derive(Debug, Clone)]
pub struct FetchTarget {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Byte limit for this partition (0: the broker's limit).
    pub max_bytes: u32,
}

/// Fetch parameters beyond the targets.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Longest wait for data.
    pub max_wait: Duration,
    /// Return as soon as this many bytes are available (at least one batch).
    pub min_bytes: u32,
    /// Response byte limit (0: the broker's limit).
    pub max_bytes: u32,
}

/// Data read from one partition.
#[derive(Debug)]
pub struct FetchedData {
    /// Whole batches.
    pub records: Vec<u8>,
    /// Records in `records`.
    pub record_count: u64,
    /// One past the last readable offset.
    pub high_watermark: u64,
    /// First stored offset.
    pub log_start_offset: u64,
}

/// One partition's fetch result.
#[derive(Debug)]
pub struct FetchedPartition {
    /// The target it answers.
    pub target: FetchTarget,
    /// Data, or this partition's own error (offset out of range, storage failure).
    pub result: BrokerResult<FetchedData>,
}

/// Checks a fetch request as a whole against the limits: what fails here fails the
/// request, not one partition.
pub fn validate(
    targets: &[FetchTarget],
    params: &FetchLimits,
    limits: &Limits,
) -> BrokerResult<()> {
    if params.max_wait > Duration::from_millis(u64::from(limits.max_fetch_wait_ms)) {
        return Err(BrokerError::InvalidArgument(format!(
            "max_wait_ms must be at most {}",
            limits.max_fetch_wait_ms
        )));
    }
    if targets.is_empty() {
        return Err(BrokerError::InvalidArgument(
            "a fetch needs at least one partition".into(),
        ));
    }
    if targets.len() > limits.max_fetch_partitions as usize {
        return Err(BrokerError::LimitExceeded {
            what: "partitions in one fetch",
            limit: u64::from(limits.max_fetch_partitions),
        });
    }
    Ok(())
}

/// Reads the targets, long-polling until `min_bytes` are available or `max_wait` passes.
///
/// `stopping` turning true (broker shutdown) ends the wait early with what is there.
pub async fn fetch(
    topics: &Topics,
    targets: Vec<FetchTarget>,
    params: FetchLimits,
    limits: &Limits,
    mut stopping: watch::Receiver<bool>,
) -> BrokerResult<Vec<FetchedPartition>> {
    validate(&targets, &params, limits)?;
    // Targets that resolved, and the errors of those naming no topic or partition
    // (answered in the first pass, which then returns: an error ends the wait).
    let (partitions, mut unresolved): (Vec<_>, Vec<_>) = targets
        .iter()
        .map(|t| {
            match topics
                .get(&t.topic)
                .and_then(|topic| topic.partition(t.partition).cloned())
            {
                Ok(partition) => (Some(partition), None),
                Err(err) => (None, Some(err)),
            }
        })
        .unzip();
    let deadline = Instant::now() + params.max_wait;
    let response_limit = cap(params.max_bytes, limits.max_fetch_bytes) as usize;
    let partition_limit = limits.max_partition_fetch_bytes;
    let min_bytes = params.min_bytes.max(1) as usize;
    let mut receivers: Vec<watch::Receiver<u64>> =
        partitions.iter().flatten().map(|p| p.subscribe()).collect();
    loop {
        for receiver in &mut receivers {
            receiver.borrow_and_update();
        }
        let mut total = 0usize;
        let mut results = Vec::with_capacity(targets.len());
        for ((target, partition), unresolved) in
            targets.iter().zip(&partitions).zip(&mut unresolved)
        {
            let budget = (cap(target.max_bytes, partition_limit) as usize)
                .min(response_limit.saturating_sub(total));
            let result = match (partition, unresolved.take()) {
                (Some(partition), _) => read_one(partition, target.offset, budget).await,
                (None, Some(err)) => Err(err),
                (None, None) => Err(BrokerError::Internal(
                    "an unresolved fetch target was answered twice".into(),
                )),
            };
            if let Ok(data) = &result {
                total += data.records.len();
            }
            results.push(FetchedPartition {
                target: target.clone(),
                result,
            });
        }
        let any_error = results.iter().any(|r| r.result.is_err());
        if total >= min_bytes || any_error || Instant::now() >= deadline || *stopping.borrow() {
            return Ok(results);
        }
        // On timeout or shutdown, loop once more: the read sees late data, then returns.
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = any_changed(&mut receivers) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// A limit from the request, where 0 means "the broker's limit".
fn cap(requested: u32, limit: u32) -> u32 {
    if requested == 0 {
        limit
    } else {
        requested.min(limit)
    }
}

async fn read_one(
    partition: &ReplicatedLog,
    offset: u64,
    budget: usize,
) -> BrokerResult<FetchedData> {
    let high_watermark = partition.high_watermark();
    let log_start_offset = partition.log_start_offset();
    let read = if budget == 0 {
        Vec::new()
    } else {
        partition.read(offset, budget).await?.bytes
    };
    let record_count = Batches::new(&read)
        .filter_map(Result::ok)
        .map(|b| u64::from(b.header.record_count))
        .sum();
    Ok(FetchedData {
        records: read,
        record_count,
        high_watermark,
        log_start_offset,
    })
}

/// Resolves when any receiver sees a change (or its partition goes away).
async fn any_changed(receivers: &mut [watch::Receiver<u64>]) {
    let mut waits: Vec<Pin<Box<dyn Future<Output = _> + Send + '_>>> = receivers
        .iter_mut()
        .map(|rx| Box::pin(rx.changed()) as Pin<Box<dyn Future<Output = _> + Send>>)
        .collect();
    std::future::poll_fn(|cx| {
        for wait in &mut waits {
            if wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await;
}
