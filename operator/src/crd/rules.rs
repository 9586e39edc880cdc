//! The limits and CEL rules the custom resources share, in one place so the
//! schema, the tests and `operator/README.md` agree.
//!
//! Plain OpenAPI keywords (`minimum`, `maximum`, `maxLength`, `pattern`, `enum`)
//! carry what a value can be checked against on its own; CEL rules carry the rest:
//! comparisons with the old object (`oldSelf`) and between fields. Every string a
//! CEL rule reads has a `maxLength`, so the API server's cost estimate stays small.

use kube::core::{Message, Reason, Rule};

/// Longest topic, queue or cluster name the broker accepts.
pub const NAME_MAX_LEN: u32 = 249;
/// The broker's name rule (`broker/src/names.rs`) as an OpenAPI pattern; `.` and `..`
/// are excluded by [`not_dot_or_dot_dot`].
pub const NAME_PATTERN: &str = "^[A-Za-z0-9._-]{1,249}$";
/// Most partitions per topic: the broker's `max_partitions_per_topic`.
pub const MAX_PARTITIONS: u32 = 1024;
/// Most replicas of a partition or queue.
pub const MAX_REPLICATION_FACTOR: u32 = 7;
/// Longest visibility timeout: the broker's `max_visibility_timeout_ms`, 12 hours.
pub const MAX_VISIBILITY_TIMEOUT_MS: u64 = 12 * 60 * 60 * 1000;
/// Longest default delay of a queue: the broker's `max_delay_ms`, 15 minutes.
pub const MAX_DELAY_MS: u64 = 15 * 60 * 1000;
/// Longest receive long-poll wait: the broker's `max_receive_wait_ms`, 20 s.
pub const MAX_RECEIVE_WAIT_MS: u32 = 20_000;
/// Longest dedup window: the broker's `max_dedup_window_ms`, 1 day.
pub const MAX_DEDUP_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Most messages a queue may hold: the broker's `max_queue_messages`.
pub const MAX_QUEUE_MESSAGES: u64 = 100_000_000;
/// Smallest topic segment: the broker's `MIN_SEGMENT_BYTES`.
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Largest topic segment: segment offsets are 32-bit.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;
/// Longest BrokerCluster name: its StatefulSet's pods and Services add suffixes to it
/// and must stay within 63 characters.
pub const CLUSTER_NAME_MAX_LEN: u32 = 45;
/// A BrokerCluster name: a DNS label (RFC 1035) of at most 45 characters.
pub const CLUSTER_NAME_PATTERN: &str = "^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$";
/// A Kubernetes resource quantity such as `10Gi` or `500M`.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
/// An etcd client URL.
pub const ETCD_ENDPOINT_PATTERN: &str = "^https?://[^/?#\\s]+$";

/// The resource's own name is a BrokerCluster name ([`CLUSTER_NAME_PATTERN`]); goes on
/// the root object, where CEL may read `metadata.name`.
pub fn cluster_name() -> Rule {
    Rule::new(format!(
        "self.metadata.name.matches('{CLUSTER_NAME_PATTERN}')"
    ))
    .message(
        "metadata.name must be a DNS label of at most 45 characters: \
         it names the StatefulSet, its pods and Services",
    )
}

/// The field keeps the value it was created with.
pub fn immutable(field: &str) -> Rule {
    Rule::new("self == oldSelf").message(text(format!("{field} is immutable")))
}

/// An optional field that may be set at creation and never added, removed or changed
/// afterwards; goes on the parent object, beside [`immutable`] on the field.
pub fn presence_immutable(field: &str) -> Rule {
    Rule::new(format!("has(self.{field}) == has(oldSelf.{field})"))
        .message(text(format!(
            "{field} cannot be added or removed after creation"
        )))
        .field_path(format!(".{field}"))
}

/// An optional field that may be set later but, once set, never removed; goes on the
/// parent object, beside [`immutable`] on the field.
pub fn never_unset(field: &str) -> Rule {
    Rule::new(format!("!has(oldSelf.{field}) || has(self.{field})"))
        .message(text(format!("{field} cannot be removed once set")))
        .field_path(format!(".{field}"))
}

/// The value may grow but never shrink.
pub fn never_decreases(field: &str) -> Rule {
    Rule::new("self >= oldSelf").message(text(format!("{field} cannot decrease")))
}

/// The rest of the broker's name rule: not `.` or `..`.
pub fn not_dot_or_dot_dot(field: &str) -> Rule {
    Rule::new("self != '.' && self != '..'")
        .message(text(format!("{field} must not be '.' or '..'")))
}

/// A storage quantity that may grow (volume expansion) but never shrink.
pub fn quantity_never_shrinks(field: &str) -> Rule {
    Rule::new("quantity(self).compareTo(quantity(oldSelf)) >= 0")
        .message(text(format!("{field} cannot shrink")))
        .reason(Reason::FieldValueForbidden)
}

/// A fixed failure message (as opposed to a CEL `messageExpression`).
fn text(message: String) -> Message {
    Message::Message(message)
}
