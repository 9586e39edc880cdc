//! What the checker reports: anomalies, each naming the ops, positions and values
//! involved, with a one-line description.

use std::fmt;

use serde::Serialize;

use super::SendOutcome;

/// A place in a topic: partition and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Position {
    /// Partition.
    pub partition: u32,
    /// Offset within it.
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}@{}", self.partition, self.offset)
    }
}

/// One thing the cluster did that it must not do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Anomaly {
    /// An acknowledged send whose value was not read anywhere.
    Lost {
        /// The send.
        op: u64,
        /// Where it was acknowledged.
        acknowledged: Position,
        /// Its value.
        value: String,
    },
    /// An acknowledged send whose value was read, but never where it was acknowledged.
    WrongOffset {
        /// The send.
        op: u64,
        /// Where it was acknowledged.
        acknowledged: Position,
        /// Where it was read instead.
        read_at: Vec<Position>,
        /// Its value.
        value: String,
    },
    /// A send without acknowledgement whose value was read on another partition.
    WrongPartition {
        /// The send.
        op: u64,
        /// The partition it was sent to.
        sent_to: u32,
        /// Where it was read.
        read_at: Vec<Position>,
        /// Its value.
        value: String,
    },
    /// A value read at more than one position when that is not allowed.
    Duplicate {
        /// The send.
        op: u64,
        /// Its outcome.
        outcome: SendOutcome,
        /// Every position it was read at.
        read_at: Vec<Position>,
        /// Its value.
        value: String,
    },
    /// A value read that no send ever carried.
    Phantom {
        /// Where it was read.
        read_at: Vec<Position>,
        /// The value.
        value: String,
    },
    /// A send the broker definitely refused whose value was read.
    FailedButVisible {
        /// The send.
        op: u64,
        /// Where it was read.
        read_at: Vec<Position>,
        /// Its value.
        value: String,
    },
    /// Two acknowledged sends of one producer to one partition, the first completed
    /// before the second was invoked, acknowledged at offsets out of order.
    Order {
        /// The producer.
        producer: u32,
        /// The partition.
        partition: u32,
        /// The send that completed first.
        earlier_op: u64,
        /// Its acknowledged offset.
        earlier_offset: u64,
        /// The send invoked after that.
        later_op: u64,
        /// Its acknowledged offset, which should be greater.
        later_offset: u64,
    },
    /// Different values read at the same position.
    OffsetConflict {
        /// The position.
        at: Position,
        /// The values read there.
        values: Vec<String>,
    },
    /// Several sends carried the same value, so the history cannot be checked by value.
    ReusedValue {
        /// The sends.
        ops: Vec<u64>,
        /// The value.
        value: String,
    },
}

fn positions(list: &[Position]) -> String {
    let shown: Vec<String> = list.iter().map(Position::to_string).collect();
    shown.join(", ")
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lost {
                op,
                acknowledged,
                value,
            } => write!(
                f,
                "lost: send {op} of {value:?} was acknowledged at {acknowledged} but never read"
            ),
            Self::WrongOffset {
                op,
                acknowledged,
                read_at,
                value,
            } => write!(
                f,
                "wrong offset: send {op} of {value:?} was acknowledged at {acknowledged} \
                 but read at {}",
                positions(read_at)
            ),
            Self::WrongPartition {
                op,
                sent_to,
                read_at,
                value,
            } => write!(
                f,
                "wrong partition: send {op} of {value:?} went to partition {sent_to} \
                 but was read at {}",
                positions(read_at)
            ),
            Self::Duplicate {
                op,
                outcome,
                read_at,
                value,
            } => write!(
                f,
                "duplicate: send {op} of {value:?} ({outcome:?}) was read at {}",
                positions(read_at)
            ),
            Self::Phantom { read_at, value } => write!(
                f,
                "phantom: {value:?} was read at {} but never sent",
                positions(read_at)
            ),
            Self::FailedButVisible { op, read_at, value } => write!(
                f,
                "failed but visible: send {op} of {value:?} was refused but read at {}",
                positions(read_at)
            ),
            Self::Order {
                producer,
                partition,
                earlier_op,
                earlier_offset,
                later_op,
                later_offset,
            } => write!(
                f,
                "order: producer {producer} on partition {partition}: send {later_op} \
                 (offset {later_offset}) was invoked after send {earlier_op} \
                 (offset {earlier_offset}) completed, but is not at a greater offset"
            ),
            Self::OffsetConflict { at, values } => {
                write!(f, "offset conflict: {at} was read as {values:?}")
            }
            Self::ReusedValue { ops, value } => {
                write!(f, "reused value: sends {ops:?} all carried {value:?}")
            }
        }
    }
}
