//! Which replicated log a decision is about.

use std::fmt;
use std::str::FromStr;

/// What kind of resource a replicated log belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogKind {
    /// A topic: one log per partition.
    Topic,
    /// A queue: a message log (index 0) and a journal (index 1), replicated together
    /// under one partition state (partition 0).
    Queue,
}

impl LogKind {
    /// The kind as it appears in metadata keys, directories and the wire
    /// (`topics`, `queues`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Topic => "topics",
            LogKind::Queue => "queues",
        }
    }
}

impl fmt::Display for LogKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind string that is neither `topics` nor `queues`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLogKindError(pub String);

impl fmt::Display for ParseLogKindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown kind {:?}: expected \"topics\" or \"queues\"",
            self.0
        )
    }
}

impl std::error::Error for ParseLogKindError {}

impl FromStr for LogKind {
    type Err = ParseLogKindError;

    fn from_str(kind: &str) -> Result<Self, Self::Err> {
        match kind {
            "topics" => Ok(LogKind::Topic),
            "queues" => Ok(LogKind::Queue),
            other => Err(ParseLogKindError(other.to_owned())),
        }
    }
}

/// One replicated log: a topic partition, or a queue's message log or journal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    /// Topic or queue.
    pub kind: LogKind,
    /// The resource's name.
    pub name: String,
    /// The partition of a topic; which of a queue's logs.
    pub index: u32,
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.name, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_what_they_print_and_refuse_anything_else() {
        for kind in [LogKind::Topic, LogKind::Queue] {
            assert_eq!(kind.as_str().parse::<LogKind>(), Ok(kind));
        }
        assert!("topic".parse::<LogKind>().is_err());
    }
}
