//! Batching: records go into one open batch per partition until it is full or has
//! lingered long enough, then the sender takes it.
//!
//! This is plain data behind the producer's mutex, with the clock passed in, so the
//! batching rules are unit-tested without a runtime or a broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_records::BatchBuilder;

use super::Partitioner;
use super::delivery::BatchOutcome;
use crate::types::RecordRef;

/// First allocation of a batch buffer: small, so idle partitions stay cheap; it
/// doubles as records arrive.
const INITIAL_BATCH_CAPACITY: usize = 16 << 10;

/// When a batch is complete.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub max_records: u32,
    pub max_bytes: usize,
    pub linger: Duration,
}

/// A batch no longer accepting records, waiting to be sent.
#[derive(Debug)]
pub(crate) struct ClosedBatch {
    /// Increases in close order, which is also send order within a partition.
    pub id: u64,
    pub partition: u32,
    /// Not yet finished: the producer stamp is written when it is first sent.
    pub builder: BatchBuilder,
    pub outcome: Arc<BatchOutcome>,
    pub created: Instant,
}

#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    outcome: Arc<BatchOutcome>,
    created: Instant,
}

/// Where a record went, and whether the sender has something new to look at.
#[derive(Debug)]
pub(crate) struct Appended {
    pub outcome: Arc<BatchOutcome>,
    pub index: u32,
    /// A batch was opened (new linger deadline) or completed.
    pub wake_sender: bool,
}

/// Batches the sender may take now, and when to look again.
#[derive(Debug)]
pub(crate) struct Drained {
    pub batches: Vec<ClosedBatch>,
    pub next_deadline: Option<Instant>,
}

/// The open and completed batches of one producer.
#[derive(Debug)]
pub(crate) struct Accumulator {
    limits: BatchLimits,
    partitioner: Partitioner,
    partitions: u32,
    open: Vec<Option<OpenBatch>>,
    ready: Vec<ClosedBatch>,
    sticky: u32,
    round_robin: u32,
    next_id: u64,
}

impl Accumulator {
    pub(crate) fn new(partitions: u32, partitioner: Partitioner, limits: BatchLimits) -> Self {
        Self::starting_at(random_u32(), partitions, partitioner, limits)
    }

    /// An accumulator whose keyless partitioning starts at `start % partitions`.
    pub(crate) fn starting_at(
        start: u32,
        partitions: u32,
        partitioner: Partitioner,
        limits: BatchLimits,
    ) -> Self {
        let partitions = partitions.max(1);
        // Producers start at a random partition so many short-lived ones (one per
        // CLI invocation, say) do not all pile onto partition 0.
        let start = start % partitions;
        Self {
            limits,
            partitioner,
            partitions,
            open: (0..partitions).map(|_| None).collect(),
            ready: Vec::new(),
            sticky: start,
            round_robin: start,
            next_id: 0,
        }
    }

    fn choose_partition(&mut self, key: Option<&[u8]>) -> u32 {
        match (key, self.partitioner) {
            (Some(key), _) => ferry_records::partition_for_key(key, self.partitions),
            (None, Partitioner::Sticky) => self.sticky,
            (None, Partitioner::RoundRobin) => {
                let partition = self.round_robin;
                self.round_robin = (self.round_robin + 1) % self.partitions;
                partition
            }
        }
    }

    /// Adds a record to its partition's open batch.
    pub(crate) fn append(
        &mut self,
        record: &RecordRef<'_>,
        timestamp_ms: i64,
        now: Instant,
    ) -> Appended {
        let mut partition = self.choose_partition(record.key);
        let mut wake_sender = false;
        let record_len = BatchBuilder::record_len(record.key, record.value, record.headers, 0, 0);
        if let Some(open) = &self.open[partition as usize]
            && !open.builder.is_empty()
            && open.builder.encoded_len() + record_len > self.limits.max_bytes
        {
            self.close(partition);
            wake_sender = true;
            if record.key.is_none() && self.partitioner == Partitioner::Sticky {
                partition = self.sticky;
            }
        }
        let slot = &mut self.open[partition as usize];
        let open = slot.get_or_insert_with(|| {
            wake_sender = true;
            OpenBatch {
                builder: BatchBuilder::with_capacity(
                    INITIAL_BATCH_CAPACITY.min(self.limits.max_bytes),
                ),
                outcome: BatchOutcome::new(partition),
                created: now,
            }
        });
        let index = open.builder.record_count();
        open.builder
            .push(record.key, record.value, record.headers, timestamp_ms);
        let outcome = Arc::clone(&open.outcome);
        let full = open.builder.record_count() >= self.limits.max_records
            || open.builder.encoded_len() >= self.limits.max_bytes;
        if full {
            self.close(partition);
            wake_sender = true;
        }
        Appended {
            outcome,
            index,
            wake_sender,
        }
    }

    /// Moves a partition's open batch to the ready list; a sticky producer moves on.
    fn close(&mut self, partition: u32) {
        let Some(open) = self.open[partition as usize].take() else {
            return;
        };
        self.ready.push(ClosedBatch {
            id: self.next_id,
            partition,
            builder: open.builder,
            outcome: open.outcome,
            created: open.created,
        });
        self.next_id += 1;
        if partition == self.sticky {
            self.sticky = (self.sticky + 1) % self.partitions;
        }
    }

    /// Takes completed batches, plus open ones whose linger expired on partitions the
    /// sender can send to now (`is_free`). A busy partition's batch keeps filling,
    /// which is what makes batches large under load. `force` takes every batch.
    pub(crate) fn drain(
        &mut self,
        now: Instant,
        force: bool,
        is_free: impl Fn(u32) -> bool,
    ) -> Drained {
        let mut next_deadline: Option<Instant> = None;
        for partition in 0..self.partitions {
            let Some(open) = &self.open[partition as usize] else {
                continue;
            };
            let deadline = open.created + self.limits.linger;
            if force || (deadline <= now && is_free(partition)) {
                self.close(partition);
            } else if is_free(partition) {
                next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
            }
        }
        Drained {
            batches: std::mem::take(&mut self.ready),
            next_deadline,
        }
    }

    /// Id the next closed batch will get: every batch closed so far has a smaller one.
    pub(crate) fn next_batch_id(&self) -> u64 {
        self.next_id
    }

    /// Whether no record is waiting here.
    pub(crate) fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.open.iter().all(Option::is_none)
    }
}

/// A random number from the standard library's per-process hash keys (no `rand`
/// dependency for one number per producer).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_records: u32, max_bytes: usize) -> BatchLimits {
        BatchLimits {
            max_records,
            max_bytes,
            linger: Duration::from_millis(5),
        }
    }

    #[test]
    fn keyed_records_follow_the_key_hash() {
        let mut acc = Accumulator::starting_at(0, 8, Partitioner::Sticky, limits(100, 1 << 20));
        let now = Instant::now();
        for key in [b"a".as_slice(), b"bb", b"ccc"] {
            let appended = acc.append(&RecordRef::keyed(key, b"v"), 0, now);
            let expected = ferry_records::partition_for_key(key, 8);
            let drained = acc.drain(now, true, |_| true);
            assert_eq!(drained.batches.len(), 1);
            assert_eq!(drained.batches[0].partition, expected);
            assert_eq!(appended.index, 0);
        }
    }

    #[test]
    fn sticky_fills_one_partition_then_moves_on() {
        let mut acc = Accumulator::starting_at(0, 3, Partitioner::Sticky, limits(2, 1 << 20));
        let now = Instant::now();
        for _ in 0..6 {
            acc.append(&RecordRef::new(b"x"), 0, now);
        }
        let drained = acc.drain(now, false, |_| true);
        let partitions: Vec<u32> = drained.batches.iter().map(|b| b.partition).collect();
        assert_eq!(partitions, vec![0, 1, 2]);
        assert!(
            drained
                .batches
                .iter()
                .all(|b| b.builder.record_count() == 2)
        );
        assert!(acc.is_empty());
    }

    #[test]
    fn round_robin_spreads_consecutive_records() {
        let mut acc = Accumulator::starting_at(0, 3, Partitioner::RoundRobin, limits(100, 1 << 20));
        let now = Instant::now();
        let partitions: Vec<u32> = (0..4)
            .map(|_| {
                acc.append(&RecordRef::new(b"x"), 0, now)
                    .outcome
                    .partition_for_test()
            })
            .collect();
        assert_eq!(partitions, vec![0, 1, 2, 0]);
    }

    #[test]
    fn a_batch_closes_before_exceeding_max_bytes() {
        let mut acc = Accumulator::starting_at(0, 1, Partitioner::Sticky, limits(1000, 300));
        let now = Instant::now();
        let value = [7u8; 100];
        let indexes: Vec<u32> = (0..3)
            .map(|_| acc.append(&RecordRef::new(&value), 0, now).index)
            .collect();
        // 64-byte header + two ~106-byte records fit in 300; the third starts a new batch.
        assert_eq!(indexes, vec![0, 1, 0]);
        let drained = acc.drain(now, true, |_| true);
        assert_eq!(drained.batches.len(), 2);
        assert!(drained.batches[0].builder.encoded_len() <= 300);
        assert!(drained.batches[0].id < drained.batches[1].id);
    }

    #[test]
    fn linger_expiry_takes_only_free_partitions_and_reports_the_next_deadline() {
        let mut acc = Accumulator::starting_at(0, 2, Partitioner::RoundRobin, limits(100, 1 << 20));
        let start = Instant::now();
        let opened = acc.append(&RecordRef::new(b"a"), 0, start);
        assert!(opened.wake_sender, "opening a batch wakes the sender");
        let again = acc.append(&RecordRef::new(b"b"), 0, start);
        assert!(again.wake_sender);
        let early = acc.drain(start, false, |_| true);
        assert!(early.batches.is_empty());
        assert_eq!(early.next_deadline, Some(start + Duration::from_millis(5)));
        let later = start + Duration::from_millis(6);
        let drained = acc.drain(later, false, |p| p == 1);
        assert_eq!(drained.batches.len(), 1);
        assert_eq!(drained.batches[0].partition, 1);
        assert_eq!(
            drained.next_deadline, None,
            "busy partitions have no deadline"
        );
        assert!(!acc.is_empty());
    }
}
