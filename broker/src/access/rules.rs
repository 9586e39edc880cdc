//! Access rules: what they say, how they are checked and stored, and how every host
//! keeps the current set (one key per rule under `/ferry/access/rules/`, watched).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Operation, Principal, Resource};
use crate::meta::{KeyValue, MetaError, MetadataStore, MetadataStoreExt, encode_json, keys};

/// The prefix a rule's principal carries when it names a group.
pub const GROUP_PREFIX: &str = "group:";
/// The principal that matches every authenticated caller.
pub const ANY_PRINCIPAL: &str = "*";
/// How long following the rules (or quotas) waits after a failed read of the store.
pub(crate) const FOLLOW_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Longest rule name.
pub const MAX_RULE_NAME_BYTES: usize = 253;

/// The kinds of resource a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// Topics.
    Topic,
    /// Queues.
    Queue,
    /// Consumer groups.
    Group,
    /// The cluster itself.
    Cluster,
}

impl ResourceKind {
    /// The operations that mean something on this kind.
    pub fn operations(self) -> &'static [Operation] {
        use Operation as O;
        match self {
            Self::Topic => &[O::Produce, O::Consume, O::Describe, O::Admin],
            Self::Queue => &[
                O::Send,
                O::Receive,
                O::Ack,
                O::Purge,
                O::Redrive,
                O::Describe,
                O::Admin,
            ],
            Self::Group => &[O::Join, O::Commit, O::Describe, O::Admin],
            Self::Cluster => &[O::Admin],
        }
    }

    /// Parses a kind as it is displayed.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Topic, Self::Queue, Self::Group, Self::Cluster]
            .into_iter()
            .find(|kind| kind.to_string() == name)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Topic => "topic",
            Self::Queue => "queue",
            Self::Group => "group",
            Self::Cluster => "cluster",
        })
    }
}

/// How a rule's resource name is compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternKind {
    /// The exact name.
    #[default]
    Literal,
    /// Every name starting with it (an empty prefix: every name).
    Prefix,
}

/// The resources a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePattern {
    /// Which kind.
    pub kind: ResourceKind,
    /// The name or prefix (empty for the cluster).
    #[serde(default)]
    pub name: String,
    /// Literal or prefix.
    #[serde(default)]
    pub pattern: PatternKind,
}

impl RulePattern {
    /// Whether `resource` is one of those this pattern covers.
    pub fn matches(&self, resource: Resource<'_>) -> bool {
        if resource.kind() != self.kind {
            return false;
        }
        match self.pattern {
            PatternKind::Literal => resource.name() == self.name,
            PatternKind::Prefix => resource.name().starts_with(&self.name),
        }
    }
}

/// One grant: a principal may do these operations on these resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRule {
    /// The rule's name, its key in the store.
    pub name: String,
    /// Who: a principal's name, `group:NAME`, or `*` for every authenticated caller.
    pub principal: String,
    /// On what.
    pub resource: RulePattern,
    /// What.
    pub operations: Vec<Operation>,
}

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid access rule: {0}")]
pub struct InvalidRule(pub String);

impl AccessRule {
    /// Whether the rule's principal is `principal` or one of its groups.
    pub fn matches_principal(&self, principal: &Principal) -> bool {
        if self.principal == ANY_PRINCIPAL {
            return true;
        }
        match self.principal.strip_prefix(GROUP_PREFIX) {
            Some(group) => principal.groups.iter().any(|g| g == group),
            None => self.principal == principal.name,
        }
    }

    /// Checks the rule before it is stored: a usable name, a principal, operations
    /// that mean something on the resource kind, no name on the cluster.
    pub fn validate(&self) -> Result<(), InvalidRule> {
        let bad = |what: String| Err(InvalidRule(what));
        if self.name.is_empty() || self.name.len() > MAX_RULE_NAME_BYTES {
            return bad(format!(
                "a rule's name must have 1 to {MAX_RULE_NAME_BYTES} bytes"
            ));
        }
        if !self
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return bad(format!(
                "rule name {:?} may hold only lower-case letters, digits, '-' and '.'",
                self.name
            ));
        }
        if self.principal.trim().is_empty() || self.principal == GROUP_PREFIX {
            return bad("a rule needs a principal (a name, group:NAME or *)".into());
        }
        if self.operations.is_empty() {
            return bad("a rule needs at least one operation".into());
        }
        let allowed = self.resource.kind.operations();
        if let Some(op) = self.operations.iter().find(|op| !allowed.contains(op)) {
            let names: Vec<&str> = allowed.iter().map(|op| op.as_str()).collect();
            return bad(format!(
                "{op} means nothing on a {}; it takes {}",
                self.resource.kind,
                names.join(", ")
            ));
        }
        match self.resource.kind {
            ResourceKind::Cluster if !self.resource.name.is_empty() => {
                bad("a cluster rule names no resource".into())
            }
            ResourceKind::Cluster => Ok(()),
            _ if self.resource.name.is_empty() && self.resource.pattern == PatternKind::Literal => {
                bad(format!(
                    "a {} rule needs a name, or a prefix (an empty prefix covers every {})",
                    self.resource.kind, self.resource.kind
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The rules in force, ordered by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    rules: Vec<AccessRule>,
}

impl AccessRules {
    /// A set of rules, ordered by name.
    pub fn from_rules(mut rules: Vec<AccessRule>) -> Self {
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        Self { rules }
    }

    /// Every rule.
    pub fn iter(&self) -> impl Iterator<Item = &AccessRule> {
        self.rules.iter()
    }

    /// Applies one key's change: a rule written (`Some`) or deleted (`None`). A value
    /// that does not parse is logged and skipped: it grants nothing.
    fn apply(&mut self, key: &str, value: Option<&KeyValue>) -> bool {
        let Some(name) = key.strip_prefix(keys::ACCESS_RULES) else {
            return false;
        };
        self.rules.retain(|rule| rule.name != name);
        if let Some(kv) = value {
            match serde_json::from_slice::<AccessRule>(&kv.value) {
                Ok(rule) if rule.name == name && rule.validate().is_ok() => {
                    let at = self.rules.partition_point(|r| r.name.as_str() < name);
                    self.rules.insert(at, rule);
                }
                Ok(_) => {
                    tracing::warn!(%key, "an access rule that does not validate grants nothing")
                }
                Err(err) => tracing::warn!(%key, %err, "an unreadable access rule grants nothing"),
            }
        }
        true
    }
}

/// Keeps `sender` holding the store's current rules, until the receivers are gone.
pub async fn follow(meta: Arc<dyn MetadataStore>, sender: watch::Sender<Arc<AccessRules>>) {
    crate::cluster::view::follow_prefix(
        meta,
        keys::ACCESS_RULES.to_owned(),
        sender,
        FOLLOW_RETRY_PAUSE,
        AccessRules::apply,
    )
    .await;
}

/// Every rule the store holds, for listing.
pub async fn list(meta: &dyn MetadataStore) -> Result<AccessRules, MetaError> {
    let mut rules = AccessRules::default();
    for kv in meta.list(keys::ACCESS_RULES).await? {
        rules.apply(&kv.key, Some(&kv));
    }
    Ok(rules)
}

/// Stores `rule`, replacing one of the same name.
pub async fn put(meta: &dyn MetadataStore, rule: &AccessRule) -> Result<(), MetaError> {
    meta.put(&keys::access_rule(&rule.name), encode_json(rule))
        .await?;
    Ok(())
}

/// Removes the rule `name`; whether it existed.
pub async fn delete(meta: &dyn MetadataStore, name: &str) -> Result<bool, MetaError> {
    let key = keys::access_rule(name);
    let existed = meta.get(&key).await?.is_some();
    meta.delete(&key).await?;
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_rule(ops: Vec<Operation>) -> AccessRule {
        AccessRule {
            name: "orders-writers".into(),
            principal: "alice".into(),
            resource: RulePattern {
                kind: ResourceKind::Queue,
                name: "orders".into(),
                pattern: PatternKind::Literal,
            },
            operations: ops,
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(queue_rule(vec![Operation::Send]).validate().is_ok());
        let err = queue_rule(vec![Operation::Produce])
            .validate()
            .expect_err("refused");
        assert!(err.0.contains("produce means nothing on a queue"), "{err}");
        assert!(queue_rule(vec![]).validate().is_err());
        let mut bad_name = queue_rule(vec![Operation::Send]);
        bad_name.name = "Orders/1".into();
        assert!(bad_name.validate().is_err());
        let mut cluster = queue_rule(vec![Operation::Admin]);
        cluster.resource.kind = ResourceKind::Cluster;
        assert!(cluster.validate().is_err(), "a cluster rule names nothing");
        cluster.resource.name.clear();
        assert!(cluster.validate().is_ok());
    }

    #[test]
    fn the_stored_form_is_stable_json() {
        let rule = queue_rule(vec![Operation::Send, Operation::Receive]);
        let json = serde_json::to_string(&rule).expect("test value");
        assert_eq!(
            json,
            r#"{"name":"orders-writers","principal":"alice","resource":{"kind":"queue","name":"orders","pattern":"literal"},"operations":["send","receive"]}"#
        );
    }

    #[test]
    fn applying_changes_keeps_the_set_ordered_and_skips_bad_values() {
        let mut rules = AccessRules::default();
        let kv = |name: &str, value: Vec<u8>| KeyValue {
            key: keys::access_rule(name),
            value,
            mod_revision: 1,
        };
        let mut b = queue_rule(vec![Operation::Send]);
        b.name = "b".into();
        let mut a = b.clone();
        a.name = "a".into();
        rules.apply(
            &keys::access_rule("b"),
            Some(&kv("b", serde_json::to_vec(&b).expect("test value"))),
        );
        rules.apply(
            &keys::access_rule("a"),
            Some(&kv("a", serde_json::to_vec(&a).expect("test value"))),
        );
        rules.apply(
            &keys::access_rule("c"),
            Some(&kv("c", b"not json".to_vec())),
        );
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        rules.apply(&keys::access_rule("a"), None);
        assert_eq!(rules.iter().count(), 1);
    }
}
