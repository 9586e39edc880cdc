//! The one error type of the client library, and its decoding from broker replies.
//!
//! The broker sends a `tonic::Status` in the standard gRPC error model (a
//! `google.rpc.Status` with an `ErrorInfo`, `RetryInfo` and a leader hint, read back
//! into an [`ErrorDetail`] by `ferry_proto::status`); per-partition failures carry an
//! `ErrorDetail` inline. Both become [`ClientError::Broker`], so callers match on one
//! shape whichever way the error travelled.

use ferry_proto::v1::{ErrorCode, ErrorDetail};
use ferry_records::RecordError;

/// Everything that can go wrong in the client library.
///
/// The type is `Clone` because one broker reply can fail many records at once: each
/// record's delivery future gets its own copy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server address could not be turned into a gRPC endpoint.
    #[error("invalid server address '{address}': {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The connection could not be established or broke (always retriable).
    #[error("cannot reach {address}: {reason}")]
    Transport {
        /// The server address.
        address: String,
        /// The underlying failure.
        reason: String,
    },
    /// The broker refused the request; `code` says why in a stable, machine-readable way.
    #[error("{}", broker_message(*code, message))]
    Broker {
        /// The gRPC status code, when the error came as a whole-request status.
        status: Option<tonic::Code>,
        /// Ferry's stable error code (`ERROR_CODE_UNSPECIFIED` when the broker sent none).
        code: ErrorCode,
        /// The broker's human-readable explanation.
        message: String,
        /// How long the broker asked us to wait before retrying, in milliseconds (0: no hint).
        retry_after_ms: u32,
        /// `host:port` of the partition leader, sent with `NOT_LEADER`.
        leader_address: Option<String>,
        /// The partition the leader hint is about, sent with `NOT_LEADER`.
        leader_partition: Option<u32>,
    },
    /// A fetched record batch failed its checksum or could not be decoded.
    #[error("corrupt record batch in {topic}/{partition}: {source}")]
    CorruptBatch {
        /// Topic of the batch.
        topic: String,
        /// Partition of the batch.
        partition: u32,
        /// What was wrong with it.
        source: RecordError,
    },
    /// A request argument was rejected before anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The broker answered with something the protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A record was not acknowledged within the producer's delivery timeout.
    #[error("delivery timed out after {timeout_ms} ms: {last_error}")]
    DeliveryTimeout {
        /// The delivery timeout in force.
        timeout_ms: u64,
        /// The last failure seen while retrying.
        last_error: String,
    },
    /// The producer or consumer was closed (or its background task ended).
    #[error("{0} is closed")]
    Closed(&'static str),
}

fn broker_message(code: ErrorCode, message: &str) -> String {
    if message.is_empty() {
        code.as_str_name().to_owned()
    } else {
        message.to_owned()
    }
}

impl ClientError {
    /// Decodes a gRPC status, using its error details when the broker attached them.
    pub fn from_status(status: &tonic::Status, address: &str) -> Self {
        if let Some(detail) = ferry_proto::status::detail(status)
            && detail.code != ErrorCode::Unspecified as i32
        {
            return Self::from_detail(Some(status.code()), &detail);
        }
        // No detail: tonic synthesizes UNAVAILABLE (and friends) for broken connections.
        if is_transport_status(status) {
            return Self::Transport {
                address: address.to_owned(),
                reason: status.message().to_owned(),
            };
        }
        Self::Broker {
            status: Some(status.code()),
            code: ErrorCode::Unspecified,
            message: status.message().to_owned(),
            retry_after_ms: 0,
            leader_address: None,
            leader_partition: None,
        }
    }

    /// Converts an inline per-partition [`ErrorDetail`] (or one from a status).
    pub fn from_detail(status: Option<tonic::Code>, detail: &ErrorDetail) -> Self {
        let code = ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Unspecified);
        let message = if detail.message.is_empty() {
            code.as_str_name().to_owned()
        } else {
            detail.message.clone()
        };
        Self::Broker {
            status,
            code,
            message,
            retry_after_ms: detail.retry_after_ms,
            leader_address: detail
                .leader_hint
                .as_ref()
                .map(|hint| hint.address.clone())
                .filter(|address| !address.is_empty()),
            leader_partition: detail
                .leader_hint
                .as_ref()
                .filter(|hint| !hint.address.is_empty())
                .map(|hint| hint.partition),
        }
    }

    /// Whether sending the same request again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Broker { status, code, .. } => {
                !is_definitive(*code)
                    && (matches!(
                        status,
                        Some(tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
                    ) || matches!(
                        code,
                        ErrorCode::NotLeader
                            | ErrorCode::ShuttingDown
                            | ErrorCode::MetadataUnavailable
                            | ErrorCode::DiskFull
                            | ErrorCode::Throttled
                    ))
            }
            _ => false,
        }
    }

    /// Ferry's error code, when the broker sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Broker { code, .. } if *code != ErrorCode::Unspecified => Some(*code),
            _ => None,
        }
    }

    /// Whether this is the broker saying the given code.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code() == Some(code)
    }

    /// The gRPC status code, when the error came as a whole-request status.
    pub fn status_code(&self) -> Option<tonic::Code> {
        match self {
            Self::Broker { status, .. } => *status,
            Self::Transport { .. } => Some(tonic::Code::Unavailable),
            _ => None,
        }
    }

    /// The retry delay the broker asked for, in milliseconds (0 when none).
    pub fn retry_after_ms(&self) -> u32 {
        match self {
            Self::Broker { retry_after_ms, .. } => *retry_after_ms,
            _ => 0,
        }
    }
}

/// Codes that describe the named queue or receipt rather than a passing condition:
/// sending the same request again gets the same answer, whatever the gRPC status. A
/// stale receipt in particular stays stale; only a new receive yields a working one.
fn is_definitive(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::QueueNotFound
            | ErrorCode::QueueAlreadyExists
            | ErrorCode::QueueInUse
            | ErrorCode::ReceiptInvalid
            | ErrorCode::ReceiptStale
    )
}

/// Whether a detail-less status is tonic reporting a connection problem rather than
/// the broker answering.
fn is_transport_status(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown => status.source().is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::v1::LeaderHint;

    fn status_with(code: tonic::Code, detail: &ErrorDetail) -> tonic::Status {
        ferry_proto::status::status(code, detail, &Default::default())
    }

    #[test]
    fn decodes_error_detail_from_status() {
        let detail = ErrorDetail {
            code: ErrorCode::TopicNotFound as i32,
            message: "topic 'x' not found".into(),
            leader_hint: None,
            retry_after_ms: 0,
        };
        let err = ClientError::from_status(&status_with(tonic::Code::NotFound, &detail), "a");
        assert_eq!(err.code(), Some(ErrorCode::TopicNotFound));
        assert_eq!(err.status_code(), Some(tonic::Code::NotFound));
        assert_eq!(err.to_string(), "topic 'x' not found");
        assert!(!err.is_retriable());
    }

    #[test]
    fn not_leader_is_retriable_and_carries_the_hint() {
        let detail = ErrorDetail {
            code: ErrorCode::NotLeader as i32,
            message: String::new(),
            leader_hint: Some(LeaderHint {
                address: "10.0.0.2:7070".into(),
                ..LeaderHint::default()
            }),
            retry_after_ms: 50,
        };
        let err = ClientError::from_detail(None, &detail);
        assert!(err.is_retriable());
        assert_eq!(err.retry_after_ms(), 50);
        assert_eq!(err.to_string(), "ERROR_CODE_NOT_LEADER");
        let ClientError::Broker { leader_address, .. } = err else {
            panic!("expected a broker error");
        };
        assert_eq!(leader_address.as_deref(), Some("10.0.0.2:7070"));
    }

    #[test]
    fn unavailable_without_detail_is_a_retriable_transport_error() {
        let err = ClientError::from_status(&tonic::Status::unavailable("refused"), "h:1");
        assert!(matches!(err, ClientError::Transport { .. }));
        assert!(err.is_retriable());
        assert_eq!(err.code(), None);
    }

    #[test]
    fn plain_status_keeps_its_code_and_message() {
        let err = ClientError::from_status(&tonic::Status::invalid_argument("bad name"), "h");
        assert_eq!(err.status_code(), Some(tonic::Code::InvalidArgument));
        assert_eq!(err.to_string(), "bad name");
        assert!(!err.is_retriable());
    }

    #[test]
    fn queue_and_receipt_errors_are_not_retriable() {
        for code in [
            ErrorCode::QueueNotFound,
            ErrorCode::QueueAlreadyExists,
            ErrorCode::QueueInUse,
            ErrorCode::ReceiptInvalid,
            ErrorCode::ReceiptStale,
        ] {
            let detail = ErrorDetail {
                code: code as i32,
                ..ErrorDetail::default()
            };
            let inline = ClientError::from_detail(None, &detail);
            assert_eq!(inline.code(), Some(code));
            assert!(!inline.is_retriable(), "{code:?} inline");
            // Even a status that usually means "try again" does not make them so.
            let status = status_with(tonic::Code::Unavailable, &detail);
            assert!(
                !ClientError::from_status(&status, "h").is_retriable(),
                "{code:?}"
            );
        }
    }

    #[test]
    fn shutting_down_and_unavailable_are_retriable() {
        let detail = ErrorDetail {
            code: ErrorCode::ShuttingDown as i32,
            ..ErrorDetail::default()
        };
        assert!(ClientError::from_detail(None, &detail).is_retriable());
        let detail = ErrorDetail {
            code: ErrorCode::StorageFailed as i32,
            ..ErrorDetail::default()
        };
        assert!(!ClientError::from_detail(None, &detail).is_retriable());
        assert!(
            ClientError::from_status(&status_with(tonic::Code::Unavailable, &detail), "h")
                .is_retriable()
        );
    }
}
