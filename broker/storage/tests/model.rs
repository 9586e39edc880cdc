//! Property test: random operations against a log and a trivial model (the list of
//! acknowledged batches) must always agree on what reads return.

mod common;

use std::collections::VecDeque;

use common::*;
use ferry_records::{BatchHeader, Batches};
use ferry_storage::{Durability, Log, LogConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        count: usize,
        value_len: usize,
    },
    AppendIdempotent {
        count: usize,
        value_len: usize,
    },
    Retry {
        pick: usize,
    },
    Read {
        at: f64,
        max_bytes: usize,
        bound: f64,
    },
    Flush,
    CloseReopen,
    CrashReopen,
    Truncate {
        at: f64,
    },
    Retention,
    /// `at` above 1 asks for an offset beyond the end.
    DeleteBefore {
        at: f64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..6usize, 0..300usize).prop_map(|(count, value_len)| Op::Append { count, value_len }),
        3 => (1..4usize, 0..100usize).prop_map(|(count, value_len)| Op::AppendIdempotent { count, value_len }),
        1 => (0..5usize).prop_map(|pick| Op::Retry { pick }),
        3 => (0.0..1.0f64, 1..3000usize, 0.0..1.2f64).prop_map(|(at, max_bytes, bound)| Op::Read { at, max_bytes, bound }),
        1 => Just(Op::Flush),
        1 => Just(Op::CloseReopen),
        1 => Just(Op::CrashReopen),
        1 => (0.0..1.0f64).prop_map(|at| Op::Truncate { at }),
        1 => Just(Op::Retention),
        1 => (0.0..1.3f64).prop_map(|at| Op::DeleteBefore { at }),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        prop_oneof![
            Just(Durability::Fsync),
            Just(Durability::Interval),
            Just(Durability::None)
        ],
        256..4096u64,
        16..512u32,
        prop::option::of(1000..8000u64),
    )
        .prop_map(
            |(durability, segment_bytes, index_interval_bytes, retention_bytes)| LogConfig {
                durability,
                segment_bytes,
                index_interval_bytes,
                retention_bytes,
                ..LogConfig::default()
            },
        )
}

/// One acknowledged batch as the model remembers it.
#[derive(Debug, Clone)]
struct Stored {
    base_offset: u64,
    next_offset: u64,
    leader_epoch: u64,
    unstamped: Vec<u8>,
    /// Base sequence and record count of an idempotent batch.
    sequence: Option<(i32, i32)>,
}

/// An idempotent batch the log must still recognise as a duplicate.
#[derive(Debug, Clone)]
struct Sent {
    base_offset: u64,
    sequence: i32,
    bytes: Vec<u8>,
}

struct Harness {
    dir: std::path::PathBuf,
    config: LogConfig,
    log: Log,
    stored: Vec<Stored>,
    cache: VecDeque<Sent>,
    next_sequence: i32,
    clock: i64,
    epoch: u64,
    /// Next offset the model expects the log to assign.
    end_offset: u64,
}

impl Harness {
    fn start(&self) -> u64 {
        self.stored
            .first()
            .map_or(self.end_offset, |s| s.base_offset)
    }

    fn end(&self) -> u64 {
        self.end_offset
    }

    fn offset_at(&self, at: f64) -> u64 {
        let (start, end) = (self.start(), self.end());
        start + ((end - start) as f64 * at) as u64
    }

    fn append(&mut self, bytes: Vec<u8>, sequence: Option<i32>) {
        self.clock += 1;
        self.epoch += 1;
        let outcome = self
            .log
            .append(bytes.clone(), self.epoch, self.clock)
            .expect("append");
        assert!(!outcome.duplicate);
        assert_eq!(outcome.base_offset, self.end());
        let count = Batches::new(&bytes)
            .next()
            .expect("batch")
            .expect("ok")
            .header
            .record_count;
        assert_eq!(
            outcome.last_offset,
            outcome.base_offset + u64::from(count) - 1
        );
        self.end_offset = outcome.last_offset + 1;
        self.stored.push(Stored {
            base_offset: outcome.base_offset,
            next_offset: outcome.last_offset + 1,
            leader_epoch: self.epoch,
            unstamped: bytes.clone(),
            sequence: sequence.map(|seq| (seq, count as i32)),
        });
        if let Some(sequence) = sequence {
            self.next_sequence = sequence + count as i32;
            if self.cache.len() == 5 {
                self.cache.pop_front();
            }
            self.cache.push_back(Sent {
                base_offset: outcome.base_offset,
                sequence,
                bytes,
            });
        }
    }

    fn reopen(&mut self, clean: bool) {
        let replacement = {
            if clean {
                self.log.close().expect("close");
            }
            // Dropping without close is a process crash: no checkpoint, no snapshot.
            Log::open(&self.dir, self.config.clone()).expect("reopen")
        };
        self.log = replacement;
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Append { count, value_len } => {
                self.append(batch(count, value_len, self.clock), None)
            }
            Op::AppendIdempotent { count, value_len } => {
                let sequence = self.next_sequence;
                let b = stamped_batch(count, value_len, self.clock, producer(77, 0, sequence));
                self.append(b, Some(sequence));
            }
            Op::Retry { pick } => {
                let start = self.start();
                let live: Vec<Sent> = self
                    .cache
                    .iter()
                    .filter(|s| s.base_offset >= start)
                    .cloned()
                    .collect();
                if let Some(sent) = live.get(pick % live.len().max(1)) {
                    let outcome = self
                        .log
                        .append(sent.bytes.clone(), 999, self.clock)
                        .expect("retry");
                    assert!(outcome.duplicate, "retry of sequence {}", sent.sequence);
                    assert_eq!(outcome.base_offset, sent.base_offset);
                }
            }
            Op::Read {
                at,
                max_bytes,
                bound,
            } => self.check_read(at, max_bytes, bound),
            Op::Flush => {
                let durable = self.log.flush().expect("flush");
                assert_eq!(durable, self.end());
            }
            Op::CloseReopen => self.reopen(true),
            Op::CrashReopen => self.reopen(false),
            Op::Truncate { at } => {
                let offset = self.offset_at(at);
                let new_end = self.log.truncate_to(offset).expect("truncate");
                let start = self.start();
                self.stored.retain(|s| s.next_offset <= offset);
                self.end_offset = self
                    .stored
                    .last()
                    .map_or(start, |s| s.next_offset)
                    .min(self.end_offset);
                assert_eq!(new_end, self.end());
                self.cache.retain(|s| s.base_offset < new_end);
                // The log reloads the producer from the batches left, as a rebuild would.
                if let Some((seq, count)) = self.stored.iter().rev().find_map(|s| s.sequence) {
                    self.next_sequence = seq + count;
                }
            }
            Op::Retention => {
                let outcome = self.log.enforce_retention(self.clock).expect("retention");
                let start = self.log.start_offset();
                let before = self.stored.len();
                self.stored.retain(|s| s.base_offset >= start);
                assert!(before - self.stored.len() >= outcome.segments_deleted);
                if let Some(limit) = self.config.retention_bytes
                    && outcome.segments_deleted > 0
                {
                    assert!(self.log.size_bytes() >= limit);
                }
            }
            Op::DeleteBefore { at } => self.delete_before(at),
        }
        self.check_invariants();
    }

    fn delete_before(&mut self, at: f64) {
        let offset = if at > 1.0 {
            self.end() + ((at - 1.0) * 1000.0) as u64
        } else {
            self.offset_at(at)
        };
        let (old_start, segments) = (self.start(), self.log.segment_count());
        let outcome = self.log.delete_before(offset).expect("delete_before");
        let start = self.log.start_offset();
        assert_eq!(outcome.records_deleted, start - old_start);
        assert_eq!(
            outcome.segments_deleted,
            segments - self.log.segment_count()
        );
        if outcome.segments_deleted == 0 {
            assert_eq!(start, old_start);
        } else {
            assert!(start <= offset, "deleted records at or above {offset}");
        }
        // The model cannot see segments; the files can. Every sealed segment entirely
        // below the offset went: the first one left is the active one or reaches it.
        let bases = segment_bases(&self.dir);
        assert_eq!(bases[0], start);
        if let Some(&second) = bases.get(1) {
            assert!(
                second > offset,
                "a segment ending at {second} <= {offset} was kept"
            );
        }
        // Whole batches only: `check_invariants` then checks that `start` was a batch
        // boundary of the model.
        self.stored.retain(|s| s.base_offset >= start);
    }

    fn check_read(&self, at: f64, max_bytes: usize, bound: f64) {
        let offset = self.offset_at(at);
        let max_offset = self
            .offset_at(bound.min(1.0))
            .max(if bound > 1.0 { u64::MAX } else { 0 });
        let result = self.log.read(offset, max_bytes, max_offset).expect("read");
        let expected: Vec<&Stored> = {
            let mut out = Vec::new();
            let mut bytes = 0;
            for s in self.stored.iter().filter(|s| s.next_offset > offset) {
                if s.next_offset > max_offset
                    || (!out.is_empty() && bytes + s.unstamped.len() > max_bytes)
                {
                    break;
                }
                // Reads stop at segment boundaries, so the log may return a prefix.
                bytes += s.unstamped.len();
                out.push(s);
            }
            out
        };
        let got: Vec<_> = Batches::new(&result.bytes)
            .map(|b| b.expect("whole batch"))
            .collect();
        assert_eq!(got.len(), result.batches);
        assert!(got.len() <= expected.len());
        assert_eq!(
            got.is_empty(),
            expected.is_empty(),
            "at least one batch when available"
        );
        for (batch, want) in got.iter().zip(&expected) {
            assert_eq!(batch.header.base_offset, want.base_offset);
            assert_eq!(batch.header.leader_epoch, want.leader_epoch);
            assert!(unstamped(batch.bytes) == want.unstamped);
        }
        let next = got.last().map_or(offset, |b| b.header.next_offset());
        assert_eq!(result.next_offset, next);
    }

    fn check_invariants(&self) {
        assert_eq!(self.log.end_offset(), self.end());
        assert_eq!(self.log.start_offset(), self.start());
        assert!(self.log.durable_end_offset() <= self.log.end_offset());
        assert!(self.log.visible_end_offset() <= self.log.end_offset());
        let all = read_all(&self.log);
        assert_eq!(all.len(), self.stored.len());
        for (bytes, want) in all.iter().zip(&self.stored) {
            let header = BatchHeader::parse(bytes).expect("header");
            assert_eq!(header.base_offset, want.base_offset);
            assert_eq!(header.leader_epoch, want.leader_epoch);
            assert!(unstamped(bytes) == want.unstamped);
        }
    }
}

proptest! {
    // PROPTEST_CASES overrides the default 48 cases for longer runs.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model(config in config(), ops in prop::collection::vec(op(), 1..60)) {
        let (_tmp, dir) = temp_log_dir();
        let log = Log::open(&dir, config.clone()).expect("open");
        let mut harness = Harness {
            dir,
            config,
            log,
            stored: Vec::new(),
            cache: VecDeque::new(),
            next_sequence: 0,
            clock: 1_000,
            epoch: 0,
            end_offset: 0,
        };
        for op in ops {
            harness.apply(op);
        }
        harness.reopen(false);
        harness.check_invariants();
        harness.reopen(true);
        harness.check_invariants();
    }
}
