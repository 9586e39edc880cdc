//! Who is calling and what they may do: principals, access rules and the decision.
//!
//! Authentication (`authn`) turns a request's client certificate or bearer token into
//! a [`Principal`]; authorization ([`AccessControl`]) decides each operation on a
//! resource against the rules kept in the metadata store (`rules`). Nothing here knows
//! gRPC: the service edge extracts the credentials and maps the errors.

pub mod authn;
pub mod quota;
pub mod rules;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use rules::{AccessRule, AccessRules, PatternKind, ResourceKind, RulePattern};

/// An authenticated caller: its name and the groups it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name rules match: a certificate's common name, a static token's user, or a
    /// ServiceAccount token's subject (`system:serviceaccount:NS:NAME`).
    pub name: String,
    /// Groups (a certificate's organizations, a token's groups, a ServiceAccount's
    /// `system:serviceaccounts` and `system:serviceaccounts:NS`).
    pub groups: Vec<String>,
    /// How the caller proved it.
    pub method: AuthMethod,
}

/// How a principal was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A client certificate on a mutual-TLS listener.
    Certificate,
    /// A static token from the tokens file.
    StaticToken,
    /// A Kubernetes ServiceAccount token checked against the issuer's keys.
    ServiceAccountToken,
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Certificate => "certificate",
            Self::StaticToken => "static-token",
            Self::ServiceAccountToken => "serviceaccount-token",
        })
    }
}

/// Who a request comes from, as the service edge established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off on this listener: nobody in particular.
    Anonymous,
    /// An authenticated principal.
    Principal(Arc<Principal>),
    /// Another host of the cluster, on the peer listener: already checked where the
    /// request entered.
    Peer,
}

impl Caller {
    /// The name audit records and errors use.
    pub fn name(&self) -> &str {
        match self {
            Self::Anonymous => "anonymous",
            Self::Principal(principal) => &principal.name,
            Self::Peer => "peer",
        }
    }
}

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Append to a topic (and allocate an idempotent producer id).
    Produce,
    /// Read a topic.
    Consume,
    /// See that a topic, queue or group exists, with its settings and offsets.
    Describe,
    /// Send to a queue.
    Send,
    /// Receive from a queue.
    Receive,
    /// Acknowledge, reject or extend received messages.
    Ack,
    /// Remove every message from a queue.
    Purge,
    /// Move a dead-letter queue's messages back.
    Redrive,
    /// Join, heartbeat in and leave a consumer group.
    Join,
    /// Commit a group's offsets.
    Commit,
    /// Create, delete and change settings (on a topic, queue or group); on the cluster,
    /// everything including access rules.
    Admin,
}

impl Operation {
    /// Every operation, in declaration order.
    pub const ALL: [Operation; 11] = [
        Self::Produce,
        Self::Consume,
        Self::Describe,
        Self::Send,
        Self::Receive,
        Self::Ack,
        Self::Purge,
        Self::Redrive,
        Self::Join,
        Self::Commit,
        Self::Admin,
    ];

    /// The lower-case name rules and errors use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Produce => "produce",
            Self::Consume => "consume",
            Self::Describe => "describe",
            Self::Send => "send",
            Self::Receive => "receive",
            Self::Ack => "ack",
            Self::Purge => "purge",
            Self::Redrive => "redrive",
            Self::Join => "join",
            Self::Commit => "commit",
            Self::Admin => "admin",
        }
    }

    /// Parses a name as [`Operation::as_str`] writes it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Whether a rule granting `self` also grants `wanted`: anything that uses a
    /// resource may see it, and admin on a resource may do everything with it.
    fn covers(self, wanted: Operation) -> bool {
        self == wanted || self == Self::Admin || (wanted == Self::Describe)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A topic by name.
    Topic(&'a str),
    /// A queue by name.
    Queue(&'a str),
    /// A consumer group by name.
    Group(&'a str),
    /// The cluster as a whole (access rules, hosts).
    Cluster,
}

impl Resource<'_> {
    /// Its kind.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Self::Topic(_) => ResourceKind::Topic,
            Self::Queue(_) => ResourceKind::Queue,
            Self::Group(_) => ResourceKind::Group,
            Self::Cluster => ResourceKind::Cluster,
        }
    }

    /// Its name (empty for the cluster).
    pub fn name(&self) -> &str {
        match self {
            Self::Topic(name) | Self::Queue(name) | Self::Group(name) => name,
            Self::Cluster => "",
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cluster => f.write_str("the cluster"),
            other => write!(f, "{} {:?}", other.kind(), other.name()),
        }
    }
}

/// Why a request was refused before anything was done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No usable credentials where authentication is required.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller lacks a right.
    #[error("{principal} lacks the {operation} right on {resource}")]
    Denied {
        /// Who asked.
        principal: String,
        /// The right it lacks.
        operation: Operation,
        /// On what, as text (`queue "orders"`).
        resource: String,
    },
}

/// Whether authorization is enforced, and who bypasses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizationSettings {
    /// Deny every operation no rule grants (`--authorization`). Off: every caller that
    /// authenticated (or any caller, without authentication) may do everything.
    pub enforced: bool,
    /// Principals allowed everything (`--superuser`): who manages the first rules.
    pub superusers: BTreeSet<String>,
}

/// The authorization decision point: settings plus the rules as the metadata store
/// has them, kept current by [`rules::follow`].
#[derive(Debug, Clone)]
pub struct AccessControl {
    settings: Arc<AuthorizationSettings>,
    rules: watch::Receiver<Arc<AccessRules>>,
}

impl AccessControl {
    /// Decides against `settings` and whatever `rules` holds at the time.
    pub fn new(settings: AuthorizationSettings, rules: watch::Receiver<Arc<AccessRules>>) -> Self {
        Self {
            settings: Arc::new(settings),
            rules,
        }
    }

    /// Allows everything: for listeners and tests without authorization.
    pub fn open() -> Self {
        let (_, rules) = watch::channel(Arc::new(AccessRules::default()));
        Self::new(AuthorizationSettings::default(), rules)
    }

    /// Whether rules are enforced.
    pub fn enforced(&self) -> bool {
        self.settings.enforced
    }

    /// Whether `caller` may do `operation` on `resource`; a denial names the right.
    /// Denials are recorded in the audit log.
    pub fn check(
        &self,
        caller: &Caller,
        operation: Operation,
        resource: Resource<'_>,
    ) -> Result<(), AccessError> {
        if self.allows(caller, operation, resource) {
            return Ok(());
        }
        let err = AccessError::Denied {
            principal: caller.name().to_owned(),
            operation,
            resource: resource.to_string(),
        };
        tracing::warn!(
            target: "ferry::audit",
            principal = caller.name(),
            operation = operation.as_str(),
            resource_kind = %resource.kind(),
            resource = resource.name(),
            outcome = "denied",
            "request denied"
        );
        Err(err)
    }

    /// Whether `caller` may do `operation` on `resource`, without recording anything:
    /// for filtering lists.
    pub fn allows(&self, caller: &Caller, operation: Operation, resource: Resource<'_>) -> bool {
        if !self.settings.enforced {
            return true;
        }
        let principal = match caller {
            Caller::Peer => return true,
            Caller::Anonymous => return false,
            Caller::Principal(principal) => principal,
        };
        if self.settings.superusers.contains(&principal.name) {
            return true;
        }
        let rules = self.rules.borrow();
        rules.iter().any(|rule| {
            rule.matches_principal(principal)
                && rule
                    .operations
                    .iter()
                    .any(|granted| granted_covers(*granted, operation, resource, rule))
        })
    }
}

/// Whether `rule`, granting `granted`, covers `wanted` on `resource`: admin on the
/// cluster covers everything; otherwise the rule's resource must match.
fn granted_covers(
    granted: Operation,
    wanted: Operation,
    resource: Resource<'_>,
    rule: &AccessRule,
) -> bool {
    if rule.resource.kind == ResourceKind::Cluster && granted == Operation::Admin {
        return true;
    }
    rule.resource.matches(resource) && granted.covers(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(name: &str, groups: &[&str]) -> Caller {
        Caller::Principal(Arc::new(Principal {
            name: name.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            method: AuthMethod::StaticToken,
        }))
    }

    fn control(rules: Vec<AccessRule>, superusers: &[&str]) -> AccessControl {
        let rules = AccessRules::from_rules(rules);
        let (_keep, receiver) = watch::channel(Arc::new(rules));
        std::mem::forget(_keep);
        AccessControl::new(
            AuthorizationSettings {
                enforced: true,
                superusers: superusers.iter().map(|s| (*s).to_owned()).collect(),
            },
            receiver,
        )
    }

    fn rule(
        principal: &str,
        kind: ResourceKind,
        name: &str,
        prefix: bool,
        ops: &[Operation],
    ) -> AccessRule {
        AccessRule {
            name: format!("r-{principal}-{name}"),
            principal: principal.into(),
            resource: RulePattern {
                kind,
                name: name.into(),
                pattern: if prefix {
                    PatternKind::Prefix
                } else {
                    PatternKind::Literal
                },
            },
            operations: ops.to_vec(),
        }
    }

    #[test]
    fn deny_by_default_and_grants_by_literal_prefix_and_group() {
        let access = control(
            vec![
                rule(
                    "alice",
                    ResourceKind::Queue,
                    "orders",
                    false,
                    &[Operation::Send],
                ),
                rule(
                    "group:team-a",
                    ResourceKind::Topic,
                    "team-a.",
                    true,
                    &[Operation::Consume],
                ),
            ],
            &["root"],
        );
        let alice = principal("alice", &[]);
        let bob = principal("bob", &["team-a"]);
        assert!(
            access
                .check(&alice, Operation::Send, Resource::Queue("orders"))
                .is_ok()
        );
        assert!(access.allows(&alice, Operation::Describe, Resource::Queue("orders")));
        assert_eq!(
            access.check(&alice, Operation::Receive, Resource::Queue("orders")),
            Err(AccessError::Denied {
                principal: "alice".into(),
                operation: Operation::Receive,
                resource: "queue \"orders\"".into(),
            })
        );
        assert!(!access.allows(&alice, Operation::Send, Resource::Queue("orders-2")));
        assert!(access.allows(&bob, Operation::Consume, Resource::Topic("team-a.events")));
        assert!(!access.allows(&bob, Operation::Produce, Resource::Topic("team-a.events")));
        assert!(!access.allows(&bob, Operation::Consume, Resource::Topic("team-b.events")));
        assert!(!access.allows(
            &Caller::Anonymous,
            Operation::Describe,
            Resource::Topic("x")
        ));
        assert!(access.allows(&principal("root", &[]), Operation::Admin, Resource::Cluster));
        assert!(access.allows(&Caller::Peer, Operation::Join, Resource::Group("g")));
    }

    #[test]
    fn cluster_admin_covers_everything_and_resource_admin_only_its_resource() {
        let access = control(
            vec![
                rule("ops", ResourceKind::Cluster, "", false, &[Operation::Admin]),
                rule(
                    "carol",
                    ResourceKind::Queue,
                    "jobs",
                    false,
                    &[Operation::Admin],
                ),
            ],
            &[],
        );
        let ops = principal("ops", &[]);
        let carol = principal("carol", &[]);
        assert!(access.allows(&ops, Operation::Purge, Resource::Queue("anything")));
        assert!(access.allows(&ops, Operation::Admin, Resource::Cluster));
        assert!(access.allows(&carol, Operation::Purge, Resource::Queue("jobs")));
        assert!(!access.allows(&carol, Operation::Admin, Resource::Cluster));
        assert!(!access.allows(&carol, Operation::Send, Resource::Topic("jobs")));
    }

    #[test]
    fn without_enforcement_everything_is_allowed() {
        let access = AccessControl::open();
        assert!(access.allows(&Caller::Anonymous, Operation::Admin, Resource::Cluster));
    }
}
