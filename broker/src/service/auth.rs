//! Who calls, at the gRPC edge: the interceptor that authenticates every request on
//! the client listener (or marks it as a peer's on the peer listener), the guard the
//! services ask before they act, and `AccessService` (who am I, access rules).

use std::sync::Arc;

use ferry_proto::v1 as pb;
use ferry_proto::v1::access_service_server::AccessService;
use tonic::service::Interceptor;
use tonic::{Request, Response, Status};

use super::status::{Answer, access_status, to_status};
use crate::access::quota::{self, QuotaKind, QuotaLimits, QuotaRecord, QuotaScope, Quotas};
use crate::access::rules::{self, PatternKind, RulePattern};
use crate::access::{
    AccessControl, AccessError, AccessRule, AuthMethod, Caller, Operation, Principal, Resource,
    ResourceKind, authn::Authenticator,
};
use crate::broker::Broker;
use crate::error::BrokerError;

/// Authenticates each request on the client listener and records its [`Caller`] in
/// the request's extensions; a request with bad or missing (where required)
/// credentials is answered UNAUTHENTICATED before any service sees it.
#[derive(Clone)]
pub struct Authenticate {
    /// Who the caller is.
    pub authn: Arc<Authenticator>,
    /// Each request counts against the caller's requests-per-second quota.
    pub quotas: Quotas,
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        // Where nobody is authenticated, credentials (even malformed ones) are ignored.
        let bearer = match request.metadata().get("authorization") {
            Some(value) if self.authn.required() => {
                Some(bearer_token(value.to_str().ok()).map_err(access_status)?)
            }
            _ => None,
        };
        let certificates = request.peer_certs();
        let leaf = certificates
            .as_ref()
            .and_then(|chain| chain.first())
            .map(|der| der.as_ref());
        let caller = self
            .authn
            .authenticate(bearer, leaf)
            .inspect_err(|err| {
                tracing::warn!(
                    target: "ferry::audit",
                    remote = ?request.remote_addr(),
                    outcome = "unauthenticated",
                    reason = %err,
                    "request refused"
                );
            })
            .map_err(access_status)?;
        self.quotas
            .charge(&caller, QuotaKind::Requests, 1)
            .map_err(|throttled| to_status(&BrokerError::Throttled(throttled)))?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer_token(value: Option<&str>) -> Result<&str, AccessError> {
    value
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            AccessError::Unauthenticated("the authorization header must be `Bearer <token>`".into())
        })
}

/// Metadata a gateway sets on every request it forwards over a host's peer listener:
/// its id. With it, the request is the gateway's caller's (below), not a peer's own.
pub const FORWARDED_BY: &str = "ferry-forwarded-by";
/// The forwarded caller's principal (binary metadata: any UTF-8); absent for an
/// anonymous caller.
pub const FORWARDED_PRINCIPAL: &str = "ferry-forwarded-principal-bin";
/// The forwarded caller's groups, newline-separated.
pub const FORWARDED_GROUPS: &str = "ferry-forwarded-groups-bin";
/// How the gateway authenticated the forwarded caller.
pub const FORWARDED_METHOD: &str = "ferry-forwarded-method";

/// Establishes the caller of each request on the peer listener, which admits only
/// hosts of the cluster and its gateways (mutual TLS with the peer CA, when
/// configured): a request a gateway forwards is its caller's, as the gateway says;
/// anything else is a peer's own (a group request passed on, already checked where it
/// entered), where peers send such requests at all. Only here are the forwarding
/// headers believed.
#[derive(Clone)]
pub struct FromPeer {
    /// Whether hosts send this service requests of their own (groups: passed on to
    /// the coordinator); elsewhere only forwarded requests are taken.
    pub own_requests: bool,
    /// A forwarded request counts against its caller's requests-per-second quota.
    pub quotas: Quotas,
}

impl Interceptor for FromPeer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = if request.metadata().contains_key(FORWARDED_BY) {
            let caller = forwarded_caller(request.metadata()).map_err(access_status)?;
            self.quotas
                .charge(&caller, QuotaKind::Requests, 1)
                .map_err(|throttled| to_status(&BrokerError::Throttled(throttled)))?;
            caller
        } else if self.own_requests {
            Caller::Peer
        } else {
            return Err(access_status(AccessError::Unauthenticated(
                "the peer listener takes client requests only as a gateway forwards them".into(),
            )));
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller a gateway forwarded.
fn forwarded_caller(metadata: &tonic::metadata::MetadataMap) -> Result<Caller, AccessError> {
    let text = |key: &str| -> Result<Option<String>, AccessError> {
        metadata
            .get_bin(key)
            .map(|value| {
                value
                    .to_bytes()
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
                    .ok_or_else(|| {
                        AccessError::Unauthenticated(format!("forwarded {key} is unreadable"))
                    })
            })
            .transpose()
    };
    let Some(name) = text(FORWARDED_PRINCIPAL)? else {
        return Ok(Caller::Anonymous);
    };
    let groups = text(FORWARDED_GROUPS)?
        .map(|groups| {
            groups
                .split('\n')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let method = match metadata.get(FORWARDED_METHOD).and_then(|v| v.to_str().ok()) {
        Some("certificate") => AuthMethod::Certificate,
        Some("serviceaccount-token") => AuthMethod::ServiceAccountToken,
        _ => AuthMethod::StaticToken,
    };
    Ok(Caller::Principal(Arc::new(Principal {
        name,
        groups,
        method,
    })))
}

/// Writes `caller` into the metadata of a request a gateway forwards to a host's peer
/// listener (see [`FromPeer`]).
pub fn forward_caller(
    metadata: &mut tonic::metadata::MetadataMap,
    gateway_id: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    caller: &Caller,
) {
    use tonic::metadata::{BinaryMetadataValue, MetadataValue};
    metadata.insert(FORWARDED_BY, gateway_id.clone());
    if let Caller::Principal(principal) = caller {
        metadata.insert_bin(
            FORWARDED_PRINCIPAL,
            BinaryMetadataValue::from_bytes(principal.name.as_bytes()),
        );
        if !principal.groups.is_empty() {
            metadata.insert_bin(
                FORWARDED_GROUPS,
                BinaryMetadataValue::from_bytes(principal.groups.join("\n").as_bytes()),
            );
        }
        if let Ok(method) = MetadataValue::try_from(principal.method.to_string()) {
            metadata.insert(FORWARDED_METHOD, method);
        }
    }
}

/// Who a request comes from; anonymous when no interceptor said (which rules refuse).
pub fn caller<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous)
}

/// Records an administrative change that was made, in the audit log.
pub fn audit_admin(caller: &Caller, action: &'static str, resource: &str) {
    tracing::info!(
        target: "ferry::audit",
        principal = caller.name(),
        action,
        resource,
        outcome = "done",
        "administrative change"
    );
}

/// What the services ask before acting: the access decision, answered through the
/// broker so denials are counted like every other error.
#[derive(Clone)]
pub struct Guard {
    broker: Arc<Broker>,
    access: AccessControl,
    quotas: Quotas,
}

impl Guard {
    /// Checks against `access` and `quotas`, answering for `broker`.
    pub fn new(broker: Arc<Broker>, access: AccessControl, quotas: Quotas) -> Self {
        Self {
            broker,
            access,
            quotas,
        }
    }

    /// Refuses a produce, send, fetch or receive while `caller` is in debt on its
    /// `kind` quota; what the request moves is charged once it is done
    /// ([`Guard::charge`]), so a request that fails costs nothing.
    pub fn admit(
        &self,
        method: &'static str,
        caller: &Caller,
        resource: Resource<'_>,
        kind: QuotaKind,
    ) -> Result<(), Status> {
        let scope = QuotaScope::of(resource).unwrap_or(QuotaScope::All);
        let admitted = self
            .quotas
            .admit_on(caller, &scope, kind)
            .map_err(BrokerError::from);
        self.broker.answer(method, admitted)
    }

    /// Charges `bytes` a request of `caller` just produced or read on `resource` to
    /// its `kind` quotas.
    pub fn charge(&self, caller: &Caller, resource: Resource<'_>, kind: QuotaKind, bytes: u64) {
        let scope = QuotaScope::of(resource).unwrap_or(QuotaScope::All);
        self.quotas.charge_after_on(caller, &scope, kind, bytes);
    }
    /// Refuses the request unless its caller may do `operation` on every resource.
    pub fn check<'a, T>(
        &self,
        method: &'static str,
        request: &Request<T>,
        operation: Operation,
        resources: impl IntoIterator<Item = Resource<'a>>,
    ) -> Result<Caller, Status> {
        let caller = caller(request);
        for resource in resources {
            let checked = self
                .access
                .check(&caller, operation, resource)
                .map_err(BrokerError::from);
            self.broker.answer(method, checked)?;
        }
        Ok(caller)
    }

    /// Whether `caller` may see `resource`, for filtering lists (nothing recorded).
    pub fn may_describe(&self, caller: &Caller, resource: Resource<'_>) -> bool {
        self.access.allows(caller, Operation::Describe, resource)
    }
}

/// `AccessService` over the metadata store the broker uses.
pub struct AccessApi {
    broker: Arc<Broker>,
    guard: Guard,
}

impl AccessApi {
    /// Serves access requests for `broker`.
    pub fn new(broker: Arc<Broker>, guard: Guard) -> Self {
        Self { broker, guard }
    }
}

/// The `WhoAmI` answer for `caller`, on a listener that does (or does not) enforce
/// access rules.
pub fn who_am_i(caller: &Caller, enforced: bool) -> pb::WhoAmIResponse {
    let (groups, method) = match caller {
        Caller::Principal(p) => (p.groups.clone(), p.method.to_string()),
        Caller::Anonymous | Caller::Peer => (Vec::new(), "none".to_owned()),
    };
    pb::WhoAmIResponse {
        principal: caller.name().to_owned(),
        groups,
        method,
        authorization_enforced: enforced,
    }
}

fn rule_to_proto(rule: &AccessRule) -> pb::AccessRule {
    pb::AccessRule {
        name: rule.name.clone(),
        principal: rule.principal.clone(),
        resource_kind: rule.resource.kind.to_string(),
        resource_name: rule.resource.name.clone(),
        prefix: rule.resource.pattern == PatternKind::Prefix,
        operations: rule
            .operations
            .iter()
            .map(|op| op.as_str().to_owned())
            .collect(),
    }
}

fn rule_from_proto(rule: pb::AccessRule) -> Result<AccessRule, BrokerError> {
    let kind = ResourceKind::parse(&rule.resource_kind).ok_or_else(|| {
        BrokerError::InvalidArgument(format!(
            "resource kind {:?} is none of topic, queue, group, cluster",
            rule.resource_kind
        ))
    })?;
    let operations = rule
        .operations
        .iter()
        .map(|name| {
            Operation::parse(name).ok_or_else(|| {
                BrokerError::InvalidArgument(format!("{name:?} is not an operation"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rule = AccessRule {
        name: rule.name,
        principal: rule.principal,
        resource: RulePattern {
            kind,
            name: rule.resource_name,
            pattern: if rule.prefix {
                PatternKind::Prefix
            } else {
                PatternKind::Literal
            },
        },
        operations,
    };
    rule.validate()
        .map_err(|err| BrokerError::InvalidArgument(err.0))?;
    Ok(rule)
}

#[tonic::async_trait]
impl AccessService for AccessApi {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        Ok(Response::new(who_am_i(
            &caller(&request),
            self.guard.access.enforced(),
        )))
    }

    async fn list_access_rules(
        &self,
        request: Request<pb::ListAccessRulesRequest>,
    ) -> Result<Response<pb::ListAccessRulesResponse>, Status> {
        self.guard.check(
            "ListAccessRules",
            &request,
            Operation::Admin,
            [Resource::Cluster],
        )?;
        let listed = rules::list(self.broker.meta.as_ref())
            .await
            .map_err(BrokerError::from);
        let listed = self.broker.answer("ListAccessRules", listed)?;
        Ok(Response::new(pb::ListAccessRulesResponse {
            rules: listed.iter().map(rule_to_proto).collect(),
        }))
    }

    async fn put_access_rule(
        &self,
        request: Request<pb::PutAccessRuleRequest>,
    ) -> Result<Response<pb::PutAccessRuleResponse>, Status> {
        let caller = self.guard.check(
            "PutAccessRule",
            &request,
            Operation::Admin,
            [Resource::Cluster],
        )?;
        let result = async {
            let rule = request
                .into_inner()
                .rule
                .ok_or_else(|| BrokerError::InvalidArgument("the request carries no rule".into()))
                .and_then(rule_from_proto)?;
            rules::put(self.broker.meta.as_ref(), &rule).await?;
            Ok(rule)
        }
        .await;
        let rule = self.broker.answer("PutAccessRule", result)?;
        tracing::info!(
            target: "ferry::audit",
            principal = caller.name(),
            action = "put-access-rule",
            rule = %rule.name,
            rule_principal = %rule.principal,
            resource_kind = %rule.resource.kind,
            resource = %rule.resource.name,
            outcome = "done",
            "access rule written"
        );
        Ok(Response::new(pb::PutAccessRuleResponse {}))
    }

    async fn delete_access_rule(
        &self,
        request: Request<pb::DeleteAccessRuleRequest>,
    ) -> Result<Response<pb::DeleteAccessRuleResponse>, Status> {
        let caller = self.guard.check(
            "DeleteAccessRule",
            &request,
            Operation::Admin,
            [Resource::Cluster],
        )?;
        let name = request.into_inner().name;
        let result = rules::delete(self.broker.meta.as_ref(), &name)
            .await
            .map_err(BrokerError::from);
        let existed = self.broker.answer("DeleteAccessRule", result)?;
        tracing::info!(
            target: "ferry::audit",
            principal = caller.name(),
            action = "delete-access-rule",
            rule = %name,
            existed,
            outcome = "done",
            "access rule deleted"
        );
        Ok(Response::new(pb::DeleteAccessRuleResponse { existed }))
    }

    async fn list_quotas(
        &self,
        request: Request<pb::ListQuotasRequest>,
    ) -> Result<Response<pb::ListQuotasResponse>, Status> {
        self.guard.check(
            "ListQuotas",
            &request,
            Operation::Admin,
            [Resource::Cluster],
        )?;
        let listed = quota::list(self.broker.meta.as_ref())
            .await
            .map_err(BrokerError::from);
        let listed = self.broker.answer("ListQuotas", listed)?;
        Ok(Response::new(pb::ListQuotasResponse {
            quotas: listed.records().iter().map(quota_to_proto).collect(),
        }))
    }

    async fn put_quota(
        &self,
        request: Request<pb::PutQuotaRequest>,
    ) -> Result<Response<pb::PutQuotaResponse>, Status> {
        let caller =
            self.guard
                .check("PutQuota", &request, Operation::Admin, [Resource::Cluster])?;
        let result = async {
            let record = request
                .into_inner()
                .quota
                .ok_or_else(|| BrokerError::InvalidArgument("the request carries no quota".into()))
                .and_then(quota_from_proto)?;
            quota::put(self.broker.meta.as_ref(), &record).await?;
            Ok(record)
        }
        .await;
        let record = self.broker.answer("PutQuota", result)?;
        tracing::info!(
            target: "ferry::audit",
            principal = caller.name(),
            action = "put-quota",
            quota_principal = %record.principal,
            quota_topic = record.topic.as_deref(),
            quota_queue = record.queue.as_deref(),
            limits = ?record.limits,
            outcome = "done",
            "quota written"
        );
        Ok(Response::new(pb::PutQuotaResponse {}))
    }

    async fn delete_quota(
        &self,
        request: Request<pb::DeleteQuotaRequest>,
    ) -> Result<Response<pb::DeleteQuotaResponse>, Status> {
        let caller = self.guard.check(
            "DeleteQuota",
            &request,
            Operation::Admin,
            [Resource::Cluster],
        )?;
        let request = request.into_inner();
        let principal = request.principal;
        let result = async {
            let scope = quota_scope(request.topic, request.queue)?;
            Ok(quota::delete(self.broker.meta.as_ref(), &principal, &scope).await?)
        }
        .await;
        let existed = self.broker.answer("DeleteQuota", result)?;
        tracing::info!(
            target: "ferry::audit",
            principal = caller.name(),
            action = "delete-quota",
            quota_principal = %principal,
            existed,
            outcome = "done",
            "quota deleted"
        );
        Ok(Response::new(pb::DeleteQuotaResponse { existed }))
    }
}

fn quota_to_proto(record: &QuotaRecord) -> pb::Quota {
    pb::Quota {
        principal: record.principal.clone(),
        produce_bytes_per_second: record.limits.produce_bytes_per_second,
        consume_bytes_per_second: record.limits.consume_bytes_per_second,
        requests_per_second: record.limits.requests_per_second,
        topic: record.topic.clone().unwrap_or_default(),
        queue: record.queue.clone().unwrap_or_default(),
    }
}

/// The scope a request names: a valid topic or queue name, at most one of them.
fn quota_scope(topic: String, queue: String) -> Result<QuotaScope, BrokerError> {
    match (topic.is_empty(), queue.is_empty()) {
        (true, true) => Ok(QuotaScope::All),
        (false, true) => {
            crate::names::validate_topic_name(&topic)?;
            Ok(QuotaScope::Topic(topic))
        }
        (true, false) => {
            crate::names::validate_queue_name(&queue)?;
            Ok(QuotaScope::Queue(queue))
        }
        (false, false) => Err(BrokerError::InvalidArgument(
            "a quota applies to one topic or one queue, not both".into(),
        )),
    }
}

fn quota_from_proto(quota: pb::Quota) -> Result<QuotaRecord, BrokerError> {
    if quota.principal.trim().is_empty() {
        return Err(BrokerError::InvalidArgument(
            "a quota names a principal, or * for every principal without its own".into(),
        ));
    }
    let positive = |value: Option<u64>| value.filter(|v| *v > 0);
    let (topic, queue) = match quota_scope(quota.topic, quota.queue)? {
        QuotaScope::All => (None, None),
        QuotaScope::Topic(name) => (Some(name), None),
        QuotaScope::Queue(name) => (None, Some(name)),
    };
    Ok(QuotaRecord {
        principal: quota.principal,
        topic,
        queue,
        limits: QuotaLimits {
            produce_bytes_per_second: positive(quota.produce_bytes_per_second),
            consume_bytes_per_second: positive(quota.consume_bytes_per_second),
            requests_per_second: positive(quota.requests_per_second),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_without_authentication_ignores_any_authorization_header() {
        let mut open = Authenticate {
            authn: Arc::new(Authenticator::none()),
            quotas: Quotas::none(),
        };
        let mut request = Request::new(());
        request.metadata_mut().insert(
            "authorization",
            tonic::metadata::MetadataValue::from_static("Basic dXNlcjpwYXNz"),
        );
        let request = open.call(request).expect("served");
        assert_eq!(
            request.extensions().get::<Caller>(),
            Some(&Caller::Anonymous)
        );
    }

    #[test]
    fn bearer_headers_are_read_strictly() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
        assert!(bearer_token(Some("Basic abc")).is_err());
        assert!(bearer_token(Some("Bearer ")).is_err());
        assert!(bearer_token(None).is_err());
    }
}
