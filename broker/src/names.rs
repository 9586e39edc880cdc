//! Naming rules for topics, queues and groups: they appear in file paths and metadata keys.

use crate::error::BrokerError;

/// Longest topic or group name.
pub const MAX_NAME_LEN: usize = 249;

/// Checks a topic name: 1..=249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    validate("topic", name)
}

/// Checks a consumer group name with the same rules as topics.
pub fn validate_group_name(name: &str) -> Result<(), BrokerError> {
    validate("group", name)
}

/// Checks a queue name with the same rules as topics.
pub fn validate_queue_name(name: &str) -> Result<(), BrokerError> {
    validate("queue", name)
}

/// Checks a broker cluster name.
pub fn validate_cluster_name(name: &str) -> Result<(), BrokerError> {
    validate("cluster", name)
}

/// Checks a host id.
pub fn validate_host_id(name: &str) -> Result<(), BrokerError> {
    validate("host id", name)
}

/// Checks a host's zone (a failure domain such as a Kubernetes node's
/// `topology.kubernetes.io/zone` label) like a host id.
pub fn validate_zone(name: &str) -> Result<(), BrokerError> {
    validate("zone", name)
}

fn validate(kind: &'static str, name: &str) -> Result<(), BrokerError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("must be at most 249 characters")
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("may only contain ASCII letters, digits, '.', '_' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BrokerError::InvalidName {
            kind,
            name: name.chars().take(MAX_NAME_LEN + 1).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["orders", "orders.v2", "a_b-c", "X9"] {
            assert!(validate_topic_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(250);
        for name in ["", ".", "..", "a/b", "a b", "ü", long.as_str(), "a\0"] {
            assert!(validate_topic_name(name).is_err(), "{name:?}");
        }
    }
}
