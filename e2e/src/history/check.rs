//! The checker: compares what the client was told with what was read back.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::{Anomaly, History, HistoryLog, Position, SendOp, SendOutcome};

/// What the checker allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// The producer deduplicates retries, so no value may be stored twice, not even
    /// one whose send had an unknown outcome.
    pub idempotent_producer: bool,
    /// At most this many anomalies are listed in the verdict; all are counted.
    pub max_anomalies: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            idempotent_producer: false,
            max_anomalies: 100,
        }
    }
}

/// How many of each thing the checker saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Sends invoked.
    pub sends: u64,
    /// Sends acknowledged.
    pub acked: u64,
    /// Sends definitely refused.
    pub failed: u64,
    /// Sends with an unknown outcome, including those never completed.
    pub unknown: u64,
    /// Unknown-outcome sends whose value was read.
    pub unknown_sends_seen: u64,
    /// Unknown-outcome sends whose value was not read.
    pub unknown_sends_unseen: u64,
    /// Distinct positions read.
    pub positions_read: u64,
    /// Unknown-outcome values read at several positions (allowed without idempotence).
    pub allowed_duplicates: u64,
    /// Acknowledged values never read.
    pub lost: u64,
    /// Acknowledged values read only elsewhere.
    pub wrong_offset: u64,
    /// Unacknowledged values read on another partition.
    pub wrong_partition: u64,
    /// Values read at several positions when not allowed.
    pub duplicates: u64,
    /// Values read that were never sent.
    pub phantoms: u64,
    /// Refused values read.
    pub failed_but_visible: u64,
    /// Acknowledgements out of order.
    pub order_violations: u64,
    /// Positions read with different values.
    pub offset_conflicts: u64,
    /// Values carried by several sends.
    pub reused_values: u64,
}

/// The checker's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// No anomaly at all.
    pub valid: bool,
    /// What was seen.
    pub counts: Counts,
    /// The anomalies, up to [`CheckOptions::max_anomalies`].
    pub anomalies: Vec<Anomaly>,
    /// Anomalies found beyond those listed.
    pub anomalies_omitted: u64,
}

impl Verdict {
    /// Whether the history is allowed.
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// The verdict as pretty JSON, for test failure output.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.valid { "valid" } else { "INVALID" };
        write!(f, "{state}: {:?}", self.counts)?;
        for anomaly in &self.anomalies {
            write!(f, "\n  {anomaly}")?;
        }
        if self.anomalies_omitted > 0 {
            write!(f, "\n  … and {} more", self.anomalies_omitted)?;
        }
        Ok(())
    }
}

/// Checks a shared history as it stands now.
pub fn check(history: &History, options: &CheckOptions) -> Verdict {
    check_log(&history.snapshot(), options)
}

/// Checks a history log.
pub fn check_log(log: &HistoryLog, options: &CheckOptions) -> Verdict {
    let mut checker = Checker {
        options,
        counts: Counts::default(),
        anomalies: Vec::new(),
        omitted: 0,
    };
    let sends = checker.sends_by_value(&log.sends);
    let reads = checker.reads_by_value(log);
    for (value, read_at) in &reads {
        match sends.get(value) {
            Some(send) => checker.check_read_send(send, read_at),
            None => checker.report(Anomaly::Phantom {
                read_at: read_at.clone(),
                value: (*value).to_owned(),
            }),
        }
    }
    for send in sends.values() {
        checker.check_unread_send(send, reads.contains_key(send.value.as_str()));
    }
    checker.check_order(&log.sends);
    let valid = checker.anomalies.is_empty();
    Verdict {
        valid,
        counts: checker.counts,
        anomalies: checker.anomalies,
        anomalies_omitted: checker.omitted,
    }
}

struct Checker<'a> {
    options: &'a CheckOptions,
    counts: Counts,
    anomalies: Vec<Anomaly>,
    omitted: u64,
}

impl Checker<'_> {
    fn report(&mut self, anomaly: Anomaly) {
        let counter = match &anomaly {
            Anomaly::Lost { .. } => &mut self.counts.lost,
            Anomaly::WrongOffset { .. } => &mut self.counts.wrong_offset,
            Anomaly::WrongPartition { .. } => &mut self.counts.wrong_partition,
            Anomaly::Duplicate { .. } => &mut self.counts.duplicates,
            Anomaly::Phantom { .. } => &mut self.counts.phantoms,
            Anomaly::FailedButVisible { .. } => &mut self.counts.failed_but_visible,
            Anomaly::Order { .. } => &mut self.counts.order_violations,
            Anomaly::OffsetConflict { .. } => &mut self.counts.offset_conflicts,
            Anomaly::ReusedValue { .. } => &mut self.counts.reused_values,
        };
        *counter += 1;
        if self.anomalies.len() < self.options.max_anomalies {
            self.anomalies.push(anomaly);
        } else {
            self.omitted += 1;
        }
    }

    /// Indexes sends by value, counting outcomes; a reused value is an anomaly and
    /// the first send carrying it stands for all of them.
    fn sends_by_value<'s>(&mut self, sends: &'s [SendOp]) -> BTreeMap<&'s str, &'s SendOp> {
        let mut by_value: BTreeMap<&str, Vec<&SendOp>> = BTreeMap::new();
        for send in sends {
            self.counts.sends += 1;
            match send.outcome {
                SendOutcome::Ok { .. } => self.counts.acked += 1,
                SendOutcome::Failed => self.counts.failed += 1,
                SendOutcome::Unknown | SendOutcome::Pending => self.counts.unknown += 1,
            }
            by_value.entry(send.value.as_str()).or_default().push(send);
        }
        let mut first = BTreeMap::new();
        for (value, carriers) in by_value {
            if carriers.len() > 1 {
                self.report(Anomaly::ReusedValue {
                    ops: carriers.iter().map(|send| send.id).collect(),
                    value: value.to_owned(),
                });
            }
            first.insert(value, carriers[0]);
        }
        first
    }

    /// Indexes distinct reads by value; different values at one position are an
    /// anomaly. Reading the same value at the same position twice is not.
    fn reads_by_value<'r>(&mut self, log: &'r HistoryLog) -> BTreeMap<&'r str, Vec<Position>> {
        let mut by_position: BTreeMap<Position, BTreeSet<&str>> = BTreeMap::new();
        for read in &log.reads {
            let at = Position {
                partition: read.partition,
                offset: read.offset,
            };
            by_position
                .entry(at)
                .or_default()
                .insert(read.value.as_str());
        }
        self.counts.positions_read = by_position.len() as u64;
        let mut by_value: BTreeMap<&str, Vec<Position>> = BTreeMap::new();
        for (at, values) in by_position {
            if values.len() > 1 {
                self.report(Anomaly::OffsetConflict {
                    at,
                    values: values.iter().map(|value| (*value).to_owned()).collect(),
                });
            }
            for value in values {
                by_value.entry(value).or_default().push(at);
            }
        }
        by_value
    }

    /// Rules for a send whose value was read at `read_at` (sorted, distinct).
    fn check_read_send(&mut self, send: &SendOp, read_at: &[Position]) {
        let value = send.value.clone();
        let uncertain = matches!(send.outcome, SendOutcome::Unknown | SendOutcome::Pending);
        if uncertain {
            self.counts.unknown_sends_seen += 1;
        }
        if read_at.len() > 1 {
            if uncertain && !self.options.idempotent_producer {
                self.counts.allowed_duplicates += 1;
            } else {
                self.report(Anomaly::Duplicate {
                    op: send.id,
                    outcome: send.outcome,
                    read_at: read_at.to_vec(),
                    value: value.clone(),
                });
            }
        }
        match send.outcome {
            SendOutcome::Ok { offset } => {
                let acknowledged = Position {
                    partition: send.partition,
                    offset,
                };
                if !read_at.contains(&acknowledged) {
                    self.report(Anomaly::WrongOffset {
                        op: send.id,
                        acknowledged,
                        read_at: read_at.to_vec(),
                        value,
                    });
                }
            }
            SendOutcome::Failed => self.report(Anomaly::FailedButVisible {
                op: send.id,
                read_at: read_at.to_vec(),
                value,
            }),
            SendOutcome::Unknown | SendOutcome::Pending => {
                let elsewhere: Vec<Position> = read_at
                    .iter()
                    .copied()
                    .filter(|at| at.partition != send.partition)
                    .collect();
                if !elsewhere.is_empty() {
                    self.report(Anomaly::WrongPartition {
                        op: send.id,
                        sent_to: send.partition,
                        read_at: elsewhere,
                        value,
                    });
                }
            }
        }
    }

    /// Rules for a send, given whether its value was read anywhere.
    fn check_unread_send(&mut self, send: &SendOp, seen: bool) {
        if seen {
            return;
        }
        match send.outcome {
            SendOutcome::Ok { offset } => self.report(Anomaly::Lost {
                op: send.id,
                acknowledged: Position {
                    partition: send.partition,
                    offset,
                },
                value: send.value.clone(),
            }),
            SendOutcome::Unknown | SendOutcome::Pending => self.counts.unknown_sends_unseen += 1,
            SendOutcome::Failed => {}
        }
    }

    /// Real-time order of acknowledgements per producer and partition: if send A
    /// completed before send B was invoked, A's offset must be below B's. For each B
    /// it compares with the greatest offset among the sends completed before B was
    /// invoked (a sweep, so long histories stay cheap) and reports that one.
    fn check_order(&mut self, sends: &[SendOp]) {
        let mut streams: BTreeMap<(u32, u32), Vec<Acked>> = BTreeMap::new();
        for send in sends {
            if let (SendOutcome::Ok { offset }, Some(complete_us)) =
                (send.outcome, send.complete_us)
            {
                let stream = streams.entry((send.producer, send.partition)).or_default();
                stream.push(Acked {
                    id: send.id,
                    offset,
                    invoke_us: send.invoke_us,
                    complete_us,
                });
            }
        }
        for ((producer, partition), stream) in streams {
            let mut by_invoke = stream.clone();
            by_invoke.sort_by_key(|send| (send.invoke_us, send.id));
            let mut by_complete = stream;
            by_complete.sort_by_key(|send| (send.complete_us, send.id));
            let mut completed = by_complete.iter().peekable();
            let mut highest: Option<Acked> = None;
            for later in by_invoke {
                while let Some(earlier) =
                    completed.next_if(|earlier| earlier.complete_us < later.invoke_us)
                {
                    if highest.is_none_or(|best| earlier.offset > best.offset) {
                        highest = Some(*earlier);
                    }
                }
                if let Some(earlier) = highest
                    && earlier.offset >= later.offset
                {
                    self.report(Anomaly::Order {
                        producer,
                        partition,
                        earlier_op: earlier.id,
                        earlier_offset: earlier.offset,
                        later_op: later.id,
                        later_offset: later.offset,
                    });
                }
            }
        }
    }
}

/// An acknowledged send, as the order rule sees it.
#[derive(Clone, Copy)]
struct Acked {
    id: u64,
    offset: u64,
    invoke_us: u64,
    complete_us: u64,
}
