//! The metadata keyspace, in one place (documented in `docs/etcd-keyspace.md`).

use ferry_replication::LogKind;

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

/// Prefix of deletion records: a topic or queue incarnation whose data may be removed.
pub const TOMBSTONES: &str = "/ferry/tombstones/";

/// The deletion record of one incarnation of a topic or queue (`kind`: `topics` or
/// `queues`), written in the same transaction that deletes its record.
pub fn tombstone(kind: LogKind, name: &str, incarnation: u64) -> String {
    format!("{TOMBSTONES}{kind}/{name}/{incarnation}")
}

/// Prefix of access rules: who may do what (`ferryctl acl`, the operator's
/// `AccessPolicy`), read by every host and gateway.
pub const ACCESS_RULES: &str = "/ferry/access/rules/";

/// One access rule, by name.
pub fn access_rule(name: &str) -> String {
    format!("{ACCESS_RULES}{name}")
}

/// Prefix of quotas, one key per principal (escaped: `access::quota`).
pub const ACCESS_QUOTAS: &str = "/ferry/access/quotas/";

/// One principal's quotas, by its escaped name.
pub fn access_quota(encoded_principal: &str) -> String {
    format!("{ACCESS_QUOTAS}{encoded_principal}")
}

/// The next idempotent producer id to hand out.
pub const NEXT_PRODUCER_ID: &str = "/ferry/producer-ids/next";

/// Prefix of every broker cluster's keys.
pub const CLUSTERS: &str = "/ferry/clusters/";

/// Prefix of everything one cluster keeps.
pub fn cluster(cluster: &str) -> String {
    format!("{CLUSTERS}{cluster}/")
}

/// Prefix of a cluster's live hosts (each key attached to the host's lease).
pub fn cluster_hosts(cluster: &str) -> String {
    format!("{CLUSTERS}{cluster}/hosts/")
}

/// One live host of a cluster.
pub fn cluster_host(cluster: &str, host: &str) -> String {
    format!("{CLUSTERS}{cluster}/hosts/{host}")
}

/// Prefix of a cluster's hosts asked to leave: the controller moves their replicas to
/// the other hosts (a scale-down drains its hosts this way). The value is ignored.
pub fn cluster_draining(cluster: &str) -> String {
    format!("{CLUSTERS}{cluster}/draining/")
}

/// One host asked to leave (under [`cluster_draining`]).
pub fn cluster_draining_host(cluster: &str, host: &str) -> String {
    format!("{CLUSTERS}{cluster}/draining/{host}")
}

/// The cluster's identity: created once, when its first host starts, and remembered in
/// every host's data directory, so a host can tell an etcd that lost the cluster.
pub fn cluster_identity(cluster: &str) -> String {
    format!("{CLUSTERS}{cluster}/identity")
}

/// The cluster's elected controller (attached to the controller's lease).
pub fn cluster_controller(cluster: &str) -> String {
    format!("{CLUSTERS}{cluster}/controller")
}

/// Prefix of a cluster's partition states (placement, leader, epoch, in-sync replicas).
pub fn cluster_partitions(cluster: &str) -> String {
    format!("{CLUSTERS}{cluster}/partitions/")
}

/// One partition's state: `kind` is `topics` or `queues`.
pub fn partition_state(cluster: &str, kind: LogKind, name: &str, partition: u32) -> String {
    format!("{CLUSTERS}{cluster}/partitions/{kind}/{name}/{partition}")
}

/// The hosts' reports on their replica of one partition (`…/{host}` under it): written
/// by `metadata rebuild`, and by replicas of a partition left without in-sync members.
pub fn replica_reports(cluster: &str, kind: LogKind, name: &str, partition: u32) -> String {
    format!("{CLUSTERS}{cluster}/rebuild/{kind}/{name}/{partition}/")
}

/// One host's report on its replica of one partition (under [`replica_reports`]).
pub fn replica_report(
    cluster: &str,
    kind: LogKind,
    name: &str,
    partition: u32,
    host: &str,
) -> String {
    format!("{}{host}", replica_reports(cluster, kind, name, partition))
}

/// What the leader of a topic partition last published about it.
pub fn observed_topic(cluster: &str, topic: &str, partition: u32) -> String {
    format!("{CLUSTERS}{cluster}/observed/topics/{topic}/{partition}")
}

/// What the leader of a queue last published about it.
pub fn observed_queue(cluster: &str, queue: &str) -> String {
    format!("{CLUSTERS}{cluster}/observed/queues/{queue}")
}

/// The observed-state key of one partition of a `kind` resource.
pub fn observed(cluster: &str, kind: LogKind, name: &str, partition: u32) -> String {
    if kind == LogKind::Queue {
        observed_queue(cluster, name)
    } else {
        observed_topic(cluster, name, partition)
    }
}

/// Splits an observed-state key of a topic partition of `cluster` into (topic, partition).
pub fn parse_observed_topic<'a>(cluster: &str, key: &'a str) -> Option<(&'a str, u32)> {
    let rest = key
        .strip_prefix(CLUSTERS)?
        .strip_prefix(cluster)?
        .strip_prefix("/observed/topics/")?;
    let (name, partition) = rest.rsplit_once('/')?;
    Some((name, partition.parse().ok()?))
}

/// Splits a partition-state key of `cluster` into (kind, name, partition).
pub fn parse_partition_state<'a>(cluster: &str, key: &'a str) -> Option<(&'a str, &'a str, u32)> {
    let rest = key
        .strip_prefix(CLUSTERS)?
        .strip_prefix(cluster)?
        .strip_prefix("/partitions/")?;
    let (kind, rest) = rest.split_once('/')?;
    let (name, partition) = rest.rsplit_once('/')?;
    Some((kind, name, partition.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_offset_keys_round_trip() {
        let key = group_offset("billing", "orders", 7);
        assert_eq!(parse_group_offset(&key), Some(("billing", "orders", 7)));
        assert_eq!(parse_group_offset("/ferry/topics/x"), None);
    }

    #[test]
    fn tombstone_keys_are_what_the_operator_writes() {
        // operator/src/records.rs writes the same literal; both sides pin it.
        assert_eq!(
            tombstone(LogKind::Queue, "orders", 9),
            "/ferry/tombstones/queues/orders/9"
        );
    }

    #[test]
    fn partition_state_keys_round_trip() {
        let key = partition_state("c1", LogKind::Topic, "orders", 3);
        assert_eq!(
            parse_partition_state("c1", &key),
            Some(("topics", "orders", 3))
        );
        assert_eq!(parse_partition_state("c2", &key), None);
        assert_eq!(parse_partition_state("c1", &cluster_host("c1", "h0")), None);
    }
}
