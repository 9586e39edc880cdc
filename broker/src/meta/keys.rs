//! The metadata keyspace, in one place (documented in `docs/metadata-keyspace.md`).

/// Root of every Ferry key.
pub const ROOT: &str = "/ferry/";

/// Prefix of topic records.
pub const TOPICS: &str = "/ferry/topics/";

/// The record of one topic.
pub fn topic(name: &str) -> String {
    format!("{TOPICS}{name}")
}

/// Prefix of every group's committed offsets.
pub const GROUPS: &str = "/ferry/groups/";

/// Prefix of one group's committed offsets.
pub fn group_offsets(group: &str) -> String {
    format!("{GROUPS}{group}/offsets/")
}

/// One committed offset.
pub fn group_offset(group: &str, topic: &str, partition: u32) -> String {
    format!("{GROUPS}{group}/offsets/{topic}/{partition}")
}

/// Splits a committed-offset key into (group, topic, partition).
pub fn parse_group_offset(key: &str) -> Option<(&str, &str, u32)> {
    let rest = key.strip_prefix(GROUPS)?;
    let (group, rest) = rest.split_once("/offsets/")?;
    let (topic, partition) = rest.rsplit_once('/')?;
    Some((group, topic, partition.parse().ok()?))
}

/// Prefix of queue records.
pub const QUEUES: &str = "/ferry/queues/";

/// The record of one queue.
pub fn queue(name: &str) -> String {
    format!("{QUEUES}{name}")
}

/// The next idempotent producer id to hand out.
pub const NEXT_PRODUCER_ID: &str = "/ferry/producer-ids/next";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_offset_keys_round_trip() {
        let key = group_offset("billing", "orders", 7);
        assert_eq!(parse_group_offset(&key), Some(("billing", "orders", 7)));
        assert_eq!(parse_group_offset("/ferry/topics/x"), None);
    }
}
