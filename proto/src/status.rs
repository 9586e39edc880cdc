//! Ferry's errors in the standard gRPC error model, which every gRPC library and tool
//! reads from the `grpc-status-details-bin` trailer: a `google.rpc.Status` whose
//! details are an `ErrorInfo` (reason: the stable [`ErrorCode`] name without its
//! `ERROR_CODE_` prefix, domain [`ERROR_DOMAIN`], metadata such as the topic and
//! partition), a `RetryInfo` when waiting and retrying helps, a `ResourceInfo` for a
//! missing topic, queue or group, and Ferry's [`LeaderHint`] packed in an `Any`
//! for a refusal by a host that does not lead.
//!
//! [`status`] builds one from an [`ErrorDetail`] (the form per-partition results
//! carry inline); [`detail`] reads the [`ErrorDetail`] back.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message;
use prost_types::Any;
use tonic::{Code, Status};
use tonic_types::pb;

use crate::v1::{ErrorCode, ErrorDetail, LeaderHint};

/// The `ErrorInfo.domain` of every error Ferry sends.
pub const ERROR_DOMAIN: &str = "ferry.dev";
/// The type URL of a [`LeaderHint`] packed in an `Any`.
pub const LEADER_HINT_TYPE_URL: &str = "type.googleapis.com/ferry.v1.LeaderHint";

const ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";
const RESOURCE_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ResourceInfo";
const CODE_PREFIX: &str = "ERROR_CODE_";

/// What an error was about, beyond its [`ErrorDetail`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorContext {
    /// The resource that does not exist, as `ResourceInfo` type and name (`topic`,
    /// `queue`, `group`).
    pub missing: Option<(String, String)>,
    /// `ErrorInfo.metadata`: lowerCamelCase keys (`topic`, `partition`, `queue`, …).
    pub metadata: HashMap<String, String>,
}

/// The stable reason for `code` (`TOPIC_NOT_FOUND` for `ERROR_CODE_TOPIC_NOT_FOUND`).
pub fn reason(code: ErrorCode) -> &'static str {
    let name = code.as_str_name();
    name.strip_prefix(CODE_PREFIX).unwrap_or(name)
}

/// The [`ErrorCode`] a reason names; `Unspecified` for one this version does not know.
pub fn code_of_reason(reason: &str) -> ErrorCode {
    ErrorCode::from_str_name(&format!("{CODE_PREFIX}{reason}")).unwrap_or(ErrorCode::Unspecified)
}

fn pack(type_url: &str, message: &impl Message) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: message.encode_to_vec(),
    }
}

/// A gRPC status with `code`, `detail.message`, and `detail` and `context` as the
/// standard error details.
pub fn status(code: Code, detail: &ErrorDetail, context: &ErrorContext) -> Status {
    let error_code = ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Unspecified);
    let mut details = vec![pack(
        ERROR_INFO_TYPE_URL,
        &pb::ErrorInfo {
            reason: reason(error_code).to_owned(),
            domain: ERROR_DOMAIN.to_owned(),
            metadata: context.metadata.clone(),
        },
    )];
    if detail.retry_after_ms > 0 {
        let delay = Duration::from_millis(u64::from(detail.retry_after_ms));
        details.push(pack(
            RETRY_INFO_TYPE_URL,
            &pb::RetryInfo {
                retry_delay: prost_types::Duration::try_from(delay).ok(),
            },
        ));
    }
    if let Some((resource_type, resource_name)) = &context.missing {
        details.push(pack(
            RESOURCE_INFO_TYPE_URL,
            &pb::ResourceInfo {
                resource_type: resource_type.clone(),
                resource_name: resource_name.clone(),
                owner: String::new(),
                description: detail.message.clone(),
            },
        ));
    }
    if let Some(hint) = &detail.leader_hint {
        details.push(pack(LEADER_HINT_TYPE_URL, hint));
    }
    let encoded = pb::Status {
        code: code as i32,
        message: detail.message.clone(),
        details,
    }
    .encode_to_vec();
    Status::with_details(code, detail.message.clone(), encoded.into())
}

/// The [`ErrorDetail`] in a status built by [`status`]; `None` when it carries no
/// `ErrorInfo` of Ferry's domain (tonic's own transport errors, another server).
pub fn detail(status: &Status) -> Option<ErrorDetail> {
    let decoded = pb::Status::decode(status.details()).ok()?;
    let mut code = None;
    let mut detail = ErrorDetail {
        message: status.message().to_owned(),
        ..ErrorDetail::default()
    };
    for any in &decoded.details {
        match any.type_url.as_str() {
            ERROR_INFO_TYPE_URL => {
                let info = pb::ErrorInfo::decode(any.value.as_slice()).ok()?;
                if info.domain == ERROR_DOMAIN {
                    code = Some(code_of_reason(&info.reason));
                }
            }
            RETRY_INFO_TYPE_URL => {
                let info = pb::RetryInfo::decode(any.value.as_slice()).ok()?;
                let delay = info
                    .retry_delay
                    .and_then(|delay| Duration::try_from(delay).ok())
                    .unwrap_or_default();
                detail.retry_after_ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
            }
            LEADER_HINT_TYPE_URL => {
                detail.leader_hint = Some(LeaderHint::decode(any.value.as_slice()).ok()?);
            }
            _ => {}
        }
    }
    detail.code = code? as i32;
    Some(detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn a_detail_survives_the_standard_model_and_standard_readers_find_it() {
        let detail = ErrorDetail {
            code: ErrorCode::NotLeader as i32,
            message: "host h1 does not lead clicks/3".to_owned(),
            leader_hint: Some(LeaderHint {
                topic: "clicks".to_owned(),
                partition: 3,
                host_id: "h2".to_owned(),
                address: "10.0.0.2:7070".to_owned(),
                leader_epoch: 7,
            }),
            retry_after_ms: 100,
        };
        let context = ErrorContext {
            missing: None,
            metadata: HashMap::from([
                ("topic".to_owned(), "clicks".to_owned()),
                ("partition".to_owned(), "3".to_owned()),
            ]),
        };
        let status = status(Code::Unavailable, &detail, &context);
        assert_eq!(super::detail(&status), Some(detail.clone()));

        // What another language's library sees: google.rpc.Status and its details.
        let standard = status.get_error_details();
        let info = standard.error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "NOT_LEADER");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["partition"], "3");
        let retry = standard.retry_info().expect("a RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(100)));
        let rpc = pb::Status::decode(status.details()).expect("a google.rpc.Status");
        assert_eq!(rpc.code, Code::Unavailable as i32);
        assert_eq!(rpc.message, detail.message);
    }

    #[test]
    fn a_missing_resource_is_named_and_no_retry_is_suggested() {
        let detail = ErrorDetail {
            code: ErrorCode::TopicNotFound as i32,
            message: "topic clicks not found".to_owned(),
            ..ErrorDetail::default()
        };
        let context = ErrorContext {
            missing: Some(("topic".to_owned(), "clicks".to_owned())),
            metadata: HashMap::new(),
        };
        let status = status(Code::NotFound, &detail, &context);
        let standard = status.get_error_details();
        let resource = standard.resource_info().expect("a ResourceInfo");
        assert_eq!(
            (
                resource.resource_type.as_str(),
                resource.resource_name.as_str()
            ),
            ("topic", "clicks")
        );
        assert!(standard.retry_info().is_none());
        assert_eq!(super::detail(&status), Some(detail));
    }

    #[test]
    fn every_code_has_a_reason_that_names_it_back() {
        for value in 0..=i32::from(u8::MAX) {
            let Ok(code) = ErrorCode::try_from(value) else {
                continue;
            };
            let reason = reason(code);
            assert!(!reason.starts_with(CODE_PREFIX));
            assert!(reason.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
            assert_eq!(code_of_reason(reason), code);
        }
        assert_eq!(code_of_reason("SOMETHING_NEWER"), ErrorCode::Unspecified);
    }

    #[test]
    fn statuses_without_ferrys_error_info_have_no_detail() {
        assert_eq!(detail(&Status::unavailable("tcp connect error")), None);
        let foreign = pb::Status {
            code: Code::NotFound as i32,
            message: "no".to_owned(),
            details: vec![pack(
                ERROR_INFO_TYPE_URL,
                &pb::ErrorInfo {
                    reason: "NOT_FOUND".to_owned(),
                    domain: "example.com".to_owned(),
                    metadata: HashMap::new(),
                },
            )],
        };
        let status = Status::with_details(Code::NotFound, "no", foreign.encode_to_vec().into());
        assert_eq!(detail(&status), None);
        // A garbage trailer is no detail either.
        let garbage = Status::with_details(Code::Internal, "x", vec![0xff, 0xff].into());
        assert_eq!(detail(&garbage), None);
    }
}
