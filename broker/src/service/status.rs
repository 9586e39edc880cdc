//! The one place that maps broker errors to gRPC status codes and `ErrorDetail`s,
//! sent in the standard error model (`ferry_proto::status`).

use std::collections::HashMap;

use ferry_proto::status::ErrorContext;
use ferry_proto::v1::{ErrorCode, ErrorDetail, LeaderHint};
use ferry_storage::StorageError;
use tonic::{Code, Status};

use crate::access::AccessError;
use crate::broker::Broker;
use crate::error::{BrokerError, BrokerResult};
use crate::group::GroupError;
use crate::meta::MetaError;
use crate::metrics::ErrorLabels;

/// How long a client should wait before retrying a retriable failure.
const RETRY_AFTER_MS: u32 = 100;
/// The pause a client is told to take before retrying a write refused for a full
/// disk: freeing space (retention, a drained queue) takes a while.
const DISK_FULL_RETRY_AFTER_MS: u32 = 1_000;

/// The gRPC code and stable Ferry error code for an error.
fn classify(err: &BrokerError) -> (Code, ErrorCode) {
    use BrokerError as E;
    match err {
        E::InvalidName { .. } => (Code::InvalidArgument, ErrorCode::InvalidName),
        E::InvalidArgument(_) => (Code::InvalidArgument, ErrorCode::InvalidArgument),
        E::TopicNotFound(_) => (Code::NotFound, ErrorCode::TopicNotFound),
        E::TopicExists(_) => (Code::AlreadyExists, ErrorCode::TopicAlreadyExists),
        E::PartitionNotFound { .. } => (Code::NotFound, ErrorCode::PartitionNotFound),
        E::MessageTooLarge { .. } => (Code::InvalidArgument, ErrorCode::MessageTooLarge),
        E::BatchTooLarge { .. } => (Code::InvalidArgument, ErrorCode::BatchTooLarge),
        E::EmptyBatch => (Code::InvalidArgument, ErrorCode::EmptyBatch),
        E::CorruptBatch(_) => (Code::InvalidArgument, ErrorCode::CorruptBatch),
        E::LimitExceeded { .. } => (Code::ResourceExhausted, ErrorCode::LimitExceeded),
        E::Storage { source, .. } => classify_storage(source),
        E::Group(group) => classify_group(group),
        E::GroupNotFound(_) => (Code::NotFound, ErrorCode::GroupNotFound),
        E::Meta(MetaError::Decode { .. }) => (Code::Internal, ErrorCode::Internal),
        E::Meta(_) => (Code::Unavailable, ErrorCode::MetadataUnavailable),
        E::QueueNotFound(_) => (Code::NotFound, ErrorCode::QueueNotFound),
        E::QueueExists(_) => (Code::AlreadyExists, ErrorCode::QueueAlreadyExists),
        E::QueueInUse { .. } => (Code::FailedPrecondition, ErrorCode::QueueInUse),
        E::ReceiptInvalid(_) => (Code::InvalidArgument, ErrorCode::ReceiptInvalid),
        E::ReceiptStale(_) => (Code::FailedPrecondition, ErrorCode::ReceiptStale),
        E::QueueStorage { source, .. } => classify_storage(source),
        E::ShuttingDown => (Code::Unavailable, ErrorCode::ShuttingDown),
        E::NotLeader { .. } => (Code::Unavailable, ErrorCode::NotLeader),
        E::NotEnoughReplicas { .. } => (Code::Unavailable, ErrorCode::NotEnoughReplicas),
        E::ReplicationIncomplete { .. } => (Code::Unavailable, ErrorCode::ReplicationIncomplete),
        E::FencedLeaderEpoch { .. } => (Code::FailedPrecondition, ErrorCode::FencedLeaderEpoch),
        E::Access(AccessError::Unauthenticated(_)) => {
            (Code::Unauthenticated, ErrorCode::Unauthenticated)
        }
        E::Access(AccessError::Denied { .. }) => {
            (Code::PermissionDenied, ErrorCode::PermissionDenied)
        }
        E::Throttled(_) => (Code::ResourceExhausted, ErrorCode::Throttled),
        E::Internal(_) => (Code::Internal, ErrorCode::Internal),
    }
}

fn classify_storage(err: &StorageError) -> (Code, ErrorCode) {
    use StorageError as S;
    match err {
        S::OffsetOutOfRange { .. } => (Code::OutOfRange, ErrorCode::OffsetOutOfRange),
        S::OutOfOrderSequence { .. } => (Code::FailedPrecondition, ErrorCode::OutOfOrderSequence),
        S::ProducerFenced { .. } => (Code::FailedPrecondition, ErrorCode::ProducerFenced),
        S::InvalidBatch(_) => (Code::InvalidArgument, ErrorCode::CorruptBatch),
        S::BatchTooLarge { .. } => (Code::InvalidArgument, ErrorCode::BatchTooLarge),
        S::InvalidConfig(_) => (Code::InvalidArgument, ErrorCode::InvalidArgument),
        S::Closed => (Code::Unavailable, ErrorCode::ShuttingDown),
        S::Corrupt { .. } | S::DamagedBatch { .. } => (Code::DataLoss, ErrorCode::StorageFailed),
        S::Poisoned { .. } | S::Io { .. } => (Code::Unavailable, ErrorCode::StorageFailed),
        S::DiskFull { .. } => (Code::ResourceExhausted, ErrorCode::DiskFull),
        // A deposed leader's append: nothing was written, the new leader takes it.
        S::StaleLeaderEpoch { .. } => (Code::Unavailable, ErrorCode::FencedLeaderEpoch),
        S::ReplicaOffsetMismatch { .. } => (Code::Internal, ErrorCode::Internal),
    }
}

fn classify_group(err: &GroupError) -> (Code, ErrorCode) {
    use GroupError as G;
    match err {
        G::UnknownMember { .. } => (Code::NotFound, ErrorCode::UnknownMember),
        G::UnknownTopic(_) => (Code::NotFound, ErrorCode::TopicNotFound),
        G::InvalidSessionTimeout { .. } => (Code::InvalidArgument, ErrorCode::InvalidArgument),
        G::PartitionNotOwned { .. } => (Code::FailedPrecondition, ErrorCode::PartitionNotOwned),
        G::GroupHasMembers { .. } => (Code::FailedPrecondition, ErrorCode::GroupHasMembers),
        G::LimitExceeded { .. } => (Code::ResourceExhausted, ErrorCode::LimitExceeded),
    }
}

/// The machine-readable detail of an error, for statuses and inline results.
pub fn error_detail(err: &BrokerError) -> ErrorDetail {
    let (code, error_code) = classify(err);
    ErrorDetail {
        code: error_code as i32,
        message: err.to_string(),
        leader_hint: match err {
            BrokerError::NotLeader {
                name,
                partition,
                leader: Some(leader),
                ..
            } => Some(LeaderHint {
                topic: name.clone(),
                partition: *partition,
                host_id: leader.host_id.clone(),
                address: leader.address.clone(),
                leader_epoch: leader.leader_epoch,
            }),
            _ => None,
        },
        retry_after_ms: if let BrokerError::Throttled(throttled) = err {
            u32::try_from(throttled.retry_after.as_millis())
                .unwrap_or(u32::MAX)
                .max(1)
        } else if code == Code::Unavailable {
            RETRY_AFTER_MS
        } else if error_code == ErrorCode::DiskFull {
            DISK_FULL_RETRY_AFTER_MS
        } else {
            0
        },
    }
}

/// What an error was about: the missing resource, and the names and numbers a
/// client may act on as `ErrorInfo` metadata.
fn error_context(err: &BrokerError) -> ErrorContext {
    use BrokerError as E;
    let missing = |kind: &str, name: &str| Some((kind.to_owned(), name.to_owned()));
    let partition = |topic: &str, partition: u32| {
        HashMap::from([
            ("topic".to_owned(), topic.to_owned()),
            ("partition".to_owned(), partition.to_string()),
        ])
    };
    let one = |key: &str, value: &str| HashMap::from([(key.to_owned(), value.to_owned())]);
    let (missing, metadata) = match err {
        E::TopicNotFound(name) | E::Group(GroupError::UnknownTopic(name)) => {
            (missing("topic", name), one("topic", name))
        }
        E::QueueNotFound(name) => (missing("queue", name), one("queue", name)),
        E::GroupNotFound(name) => (missing("group", name), one("group", name)),
        E::PartitionNotFound {
            topic,
            partition: p,
            ..
        } => (
            missing("partition", &format!("{topic}/{p}")),
            partition(topic, *p),
        ),
        E::TopicExists(name) => (None, one("topic", name)),
        E::QueueExists(name) => (None, one("queue", name)),
        E::QueueInUse { queue, used_by } => {
            let mut metadata = one("queue", queue);
            metadata.insert("usedBy".to_owned(), used_by.clone());
            (None, metadata)
        }
        E::QueueStorage { queue, .. } => (None, one("queue", queue)),
        E::Storage {
            topic,
            partition: p,
            ..
        }
        | E::NotEnoughReplicas {
            topic,
            partition: p,
            ..
        }
        | E::ReplicationIncomplete {
            topic,
            partition: p,
            ..
        }
        | E::FencedLeaderEpoch {
            topic,
            partition: p,
            ..
        } => (None, partition(topic, *p)),
        E::NotLeader {
            kind,
            name,
            partition: p,
            ..
        } => match kind {
            ferry_replication::LogKind::Topic => (None, partition(name, *p)),
            ferry_replication::LogKind::Queue => (None, one("queue", name)),
        },
        E::LimitExceeded { what, limit } => {
            let mut metadata = one("limit", what);
            metadata.insert("value".to_owned(), limit.to_string());
            (None, metadata)
        }
        E::Access(AccessError::Denied {
            principal,
            operation,
            resource,
        }) => {
            let mut metadata = one("principal", principal);
            metadata.insert("operation".to_owned(), operation.as_str().to_owned());
            metadata.insert("resource".to_owned(), resource.clone());
            (None, metadata)
        }
        _ => (None, HashMap::new()),
    };
    ErrorContext { missing, metadata }
}

/// The gRPC status for an error, its `ErrorDetail` and context in the standard
/// error details.
pub fn to_status(err: &BrokerError) -> Status {
    let (code, _) = classify(err);
    ferry_proto::status::status(code, &error_detail(err), &error_context(err))
}

/// The gRPC status for a request refused before it reached a service (the
/// authenticating interceptor has no broker to count it with).
pub fn access_status(err: AccessError) -> Status {
    to_status(&BrokerError::Access(err))
}

impl From<BrokerError> for Status {
    fn from(err: BrokerError) -> Self {
        to_status(&err)
    }
}

/// How the services answer: a broker result becomes a gRPC answer, each failure counted
/// by method and code and logged. Here, not on `Broker`, so the broker's core knows
/// nothing of gRPC.
pub trait Answer {
    /// Turns a result into a gRPC answer, counting failures by method and code.
    fn answer<T>(&self, method: &str, result: BrokerResult<T>) -> Result<T, tonic::Status>;
    /// The gRPC status for a failed request, counted by method and code.
    fn fail(&self, method: &str, err: &BrokerError) -> tonic::Status;
}

impl Answer for Broker {
    /// Turns a result into a gRPC answer, counting failures by method and code.
    fn answer<T>(&self, method: &str, result: BrokerResult<T>) -> Result<T, tonic::Status> {
        result.map_err(|err| self.fail(method, &err))
    }

    /// The gRPC status for a failed request, counted by method and code.
    fn fail(&self, method: &str, err: &BrokerError) -> tonic::Status {
        {
            let status = to_status(err);
            self.metrics
                .request_errors
                .get_or_create(&ErrorLabels {
                    method: method.to_owned(),
                    code: format!("{:?}", status.code()),
                })
                .inc();
            if is_failure(err) {
                tracing::warn!(method, %err, "request failed");
            } else {
                tracing::debug!(method, %err, "request refused");
            }
            status
        }
    }
}

/// Whether `err` is this host failing (logged as a warning) rather than a request
/// refused. A log closed by shutdown or deletion refuses what reaches it late (a
/// follower still fetching while the leader stops): the caller retries elsewhere.
fn is_failure(err: &BrokerError) -> bool {
    match err {
        BrokerError::Internal(_) => true,
        BrokerError::Storage { source, .. } | BrokerError::QueueStorage { source, .. } => {
            !matches!(source, StorageError::Closed)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_log_refuses_while_other_storage_errors_fail() {
        let storage = |source| BrokerError::Storage {
            topic: "orders".into(),
            partition: 0,
            source,
        };
        assert!(!is_failure(&storage(StorageError::Closed)));
        assert!(!is_failure(&BrokerError::QueueStorage {
            queue: "jobs".into(),
            source: StorageError::Closed,
        }));
        assert!(is_failure(&storage(StorageError::Poisoned {
            reason: "fsync failed".into(),
        })));
        assert!(is_failure(&BrokerError::Internal("bug".into())));
        assert!(!is_failure(&BrokerError::TopicNotFound("orders".into())));
        assert_eq!(
            to_status(&storage(StorageError::Closed)).code(),
            Code::Unavailable
        );
    }

    #[test]
    fn not_found_carries_its_detail() {
        let status = to_status(&BrokerError::TopicNotFound("orders".into()));
        assert_eq!(status.code(), Code::NotFound);
        let detail = ferry_proto::status::detail(&status).expect("detail decodes");
        assert_eq!(detail.code, ErrorCode::TopicNotFound as i32);
        assert!(detail.message.contains("orders"));
        let context = error_context(&BrokerError::TopicNotFound("orders".into()));
        assert_eq!(
            context.missing,
            Some(("topic".to_owned(), "orders".to_owned()))
        );
        assert_eq!(context.metadata["topic"], "orders");
    }

    #[test]
    fn limits_are_resource_exhausted_and_sizes_invalid() {
        let limit = BrokerError::LimitExceeded {
            what: "topics",
            limit: 1,
        };
        assert_eq!(to_status(&limit).code(), Code::ResourceExhausted);
        let size = BrokerError::MessageTooLarge { size: 2, limit: 1 };
        assert_eq!(to_status(&size).code(), Code::InvalidArgument);
    }

    #[test]
    fn not_leader_carries_the_leader_hint() {
        let err = BrokerError::NotLeader {
            kind: ferry_replication::LogKind::Topic,
            name: "orders".into(),
            partition: 2,
            leader: Some(crate::error::LeaderLocation {
                host_id: "h1".into(),
                address: "127.0.0.3:7070".into(),
                leader_epoch: 4,
            }),
        };
        let status = to_status(&err);
        assert_eq!(status.code(), Code::Unavailable);
        let detail = ferry_proto::status::detail(&status).expect("detail decodes");
        assert_eq!(detail.code, ErrorCode::NotLeader as i32);
        let hint = detail.leader_hint.expect("hint");
        assert_eq!(
            (
                hint.topic.as_str(),
                hint.partition,
                hint.address.as_str(),
                hint.leader_epoch
            ),
            ("orders", 2, "127.0.0.3:7070", 4)
        );
    }

    #[test]
    fn access_errors_are_unauthenticated_and_permission_denied() {
        let status = access_status(AccessError::Unauthenticated("no token".into()));
        assert_eq!(status.code(), Code::Unauthenticated);
        let denied = to_status(&BrokerError::Access(AccessError::Denied {
            principal: "alice".into(),
            operation: crate::access::Operation::Purge,
            resource: "queue \"jobs\"".into(),
        }));
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(
            denied.message(),
            "alice lacks the purge right on queue \"jobs\""
        );
        let detail = ferry_proto::status::detail(&denied).expect("detail decodes");
        assert_eq!(detail.code, ErrorCode::PermissionDenied as i32);
    }

    #[test]
    fn unavailable_errors_suggest_a_retry() {
        let detail = error_detail(&BrokerError::ShuttingDown);
        assert!(detail.retry_after_ms > 0);
    }
}
