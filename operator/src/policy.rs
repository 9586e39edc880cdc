//! The AccessPolicy reconciler: each grant becomes broker access rules under
//! `/ferry/access/rules/k8s.{namespace}.policy.{policy}.…`, one per principal and
//! resource, and nothing else of the policy's remains in etcd once it changes or goes.
//! A policy names the Topics and Queues of its own namespace only (by resource name;
//! the rules carry their broker names), so it cannot reach another namespace's data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalize, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::instrument;

use crate::cluster::apply_params;
use crate::conditions::{self, Observation, SYNCED, Status};
use crate::context::Context;
use crate::crd::{AccessPolicy, GrantedOperation, Queue, Topic};
use crate::error::Error;
use crate::mapping::access::put_rule;
use crate::mapping::kinds::Mapped;
use crate::metadata::{Entry, MetadataClient};
use crate::records::{AccessRuleRecord, OPERATOR_RULE_PREFIX, RuleResource, keys};

/// The kind, for metrics and logs.
pub const KIND: &str = "AccessPolicy";
/// The finalizer that removes a policy's rules before the policy goes.
pub const FINALIZER: &str = "ferry.dev/access-rules";
/// Most rules one policy may expand to (grants × principals × resources).
pub const MAX_RULES: usize = 1024;

/// Reconciles one AccessPolicy.
#[instrument(skip_all, fields(namespace = policy.namespace(), name = policy.name_any()))]
pub async fn reconcile<M: MetadataClient>(
    policy: Arc<AccessPolicy>,
    ctx: Arc<Context<M>>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(KIND);
    let namespace = policy.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<AccessPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let outcome = finalizer(&api, FINALIZER, policy, |event| async {
        match event {
            Finalize::Apply(policy) => apply(&policy, &namespace, &ctx).await,
            Finalize::Cleanup(policy) => {
                sync_rules(
                    &rule_prefix(&namespace, &policy.name_any()),
                    Vec::new(),
                    &ctx,
                )
                .await?;
                Ok(Action::await_change())
            }
        }
    })
    .await;
    Ok(outcome?)
}

/// The prefix of every rule name of `policy` in `namespace`.
fn rule_prefix(namespace: &str, policy: &str) -> String {
    format!("{OPERATOR_RULE_PREFIX}{namespace}.policy.{policy}.")
}

async fn apply<M: MetadataClient>(
    policy: &AccessPolicy,
    namespace: &str,
    ctx: &Context<M>,
) -> Result<Action, Error> {
    let (resources, missing) = resolve(policy, namespace, ctx).await?;
    let prefix = rule_prefix(namespace, &policy.name_any());
    let rules = expand(policy, namespace, &prefix, &resources);
    let (status, reason, message, written) = if rules.len() > MAX_RULES {
        (
            Status::False,
            "TooManyRules",
            format!(
                "The grants expand to {} rules, more than {MAX_RULES}: split the policy.",
                rules.len()
            ),
            None,
        )
    } else {
        let count = rules.len();
        sync_rules(&prefix, rules, ctx).await?;
        if missing.is_empty() {
            (
                Status::True,
                "RulesWritten",
                format!("{count} access rules match the grants."),
                Some(count),
            )
        } else {
            (
                Status::False,
                "ResourcesMissing",
                format!(
                    "No {} in this namespace; {count} rules written for the rest.",
                    missing.join(", ")
                ),
                Some(count),
            )
        }
    };
    write_status(policy, namespace, ctx, status, reason, message, written).await?;
    Ok(Action::requeue(ctx.settings.resync_interval))
}

/// What a grant's resource names are on the brokers.
#[derive(Debug, Default)]
struct Resolved {
    topics: BTreeMap<String, String>,
    queues: BTreeMap<String, String>,
}

/// The broker names of the Topics and Queues the policy names, and those that are
/// missing (as `topic x`, `queue y`).
async fn resolve<M: MetadataClient>(
    policy: &AccessPolicy,
    namespace: &str,
    ctx: &Context<M>,
) -> Result<(Resolved, Vec<String>), Error> {
    let topics: Api<Topic> = Api::namespaced(ctx.client.clone(), namespace);
    let queues: Api<Queue> = Api::namespaced(ctx.client.clone(), namespace);
    let mut resolved = Resolved::default();
    let mut missing = Vec::new();
    let wanted_topics: BTreeSet<&String> =
        policy.spec.grants.iter().flat_map(|g| &g.topics).collect();
    for name in wanted_topics {
        match topics.get_opt(name).await? {
            Some(topic) => {
                resolved.topics.insert(name.clone(), topic.broker_name());
            }
            None => missing.push(format!("topic {name}")),
        }
    }
    let wanted_queues: BTreeSet<&String> =
        policy.spec.grants.iter().flat_map(|g| &g.queues).collect();
    for name in wanted_queues {
        match queues.get_opt(name).await? {
            Some(queue) => {
                resolved.queues.insert(name.clone(), queue.broker_name());
            }
            None => missing.push(format!("queue {name}")),
        }
    }
    Ok((resolved, missing))
}

/// The operations of `granted` that mean something on `kind`.
fn operations_for(kind: &str, granted: &[GrantedOperation]) -> Vec<String> {
    use GrantedOperation as O;
    let allowed: &[GrantedOperation] = match kind {
        "topic" => &[O::Produce, O::Consume, O::Describe],
        "queue" => &[
            O::Send,
            O::Receive,
            O::Ack,
            O::Purge,
            O::Redrive,
            O::Describe,
        ],
        _ => &[O::Join, O::Commit, O::Describe],
    };
    let mut operations: Vec<String> = granted
        .iter()
        .filter(|op| allowed.contains(op))
        .map(|op| {
            serde_json::to_value(op)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    operations.sort();
    operations.dedup();
    operations
}

/// Every rule the policy's grants make: one per principal and resource whose kind
/// takes at least one of the grant's operations.
fn expand(
    policy: &AccessPolicy,
    namespace: &str,
    prefix: &str,
    resources: &Resolved,
) -> Vec<AccessRuleRecord> {
    let mut rules = Vec::new();
    for (g, grant) in policy.spec.grants.iter().enumerate() {
        let principals: Vec<String> = grant
            .service_accounts
            .iter()
            .map(|account| match account.split_once('/') {
                Some((ns, name)) => format!("system:serviceaccount:{ns}:{name}"),
                None => format!("system:serviceaccount:{namespace}:{account}"),
            })
            .chain(grant.users.iter().cloned())
            .chain(grant.groups.iter().map(|group| format!("group:{group}")))
            .collect();
        let mut targets: Vec<(&str, String, &str)> = Vec::new();
        for topic in &grant.topics {
            if let Some(name) = resources.topics.get(topic) {
                targets.push(("topic", name.clone(), "literal"));
            }
        }
        for queue in &grant.queues {
            if let Some(name) = resources.queues.get(queue) {
                targets.push(("queue", name.clone(), "literal"));
            }
        }
        for group in &grant.consumer_groups {
            targets.push(("group", format!("{namespace}.{group}"), "literal"));
        }
        let mut n = 0;
        for principal in &principals {
            for (kind, name, pattern) in &targets {
                let operations = operations_for(kind, &grant.operations);
                if operations.is_empty() {
                    continue;
                }
                rules.push(AccessRuleRecord {
                    name: format!("{prefix}{g}.{n}"),
                    principal: principal.clone(),
                    resource: RuleResource {
                        kind: (*kind).to_owned(),
                        name: name.clone(),
                        pattern: (*pattern).to_owned(),
                    },
                    operations,
                });
                n += 1;
            }
        }
    }
    rules
}

/// Makes the rules under `prefix` exactly `rules`: writes what is missing or
/// different, deletes what is no longer wanted.
async fn sync_rules<M: MetadataClient>(
    prefix: &str,
    rules: Vec<AccessRuleRecord>,
    ctx: &Context<M>,
) -> Result<(), Error> {
    // One listing serves both: what to rewrite, and what is no longer wanted.
    let mut stale: BTreeMap<String, Entry> = ctx
        .metadata
        .list_prefix(&keys::access_rule(prefix))
        .await?
        .into_iter()
        .map(|entry| (entry.key.clone(), entry))
        .collect();
    for rule in rules {
        let held = stale.remove(&keys::access_rule(&rule.name));
        put_rule(&rule, held.as_ref(), ctx).await?;
    }
    for (key, entry) in stale {
        ctx.metadata.delete_key(&key, entry.mod_revision).await?;
    }
    Ok(())
}

async fn write_status<M: MetadataClient>(
    policy: &AccessPolicy,
    namespace: &str,
    ctx: &Context<M>,
    status: Status,
    reason: &str,
    message: String,
    rules: Option<usize>,
) -> Result<(), Error> {
    let before = policy
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut conditions = before.clone();
    let generation = policy.meta().generation;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    conditions::set(
        &mut conditions,
        Observation {
            type_: SYNCED,
            status,
            reason,
            message,
            observed_generation: generation,
        },
        &now,
    );
    let mut fields = json!({"conditions": conditions});
    if let Some(generation) = generation {
        fields["observedGeneration"] = json!(generation);
    }
    if let Some(rules) = rules {
        fields["rules"] = json!(rules);
    }
    let patch = json!({
        "apiVersion": AccessPolicy::api_version(&()),
        "kind": AccessPolicy::kind(&()),
        "status": fields,
    });
    let api: Api<AccessPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch_status(&policy.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await?;
    ctx.condition_events(&policy.object_ref(&()), &before, &conditions)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec: serde_json::Value) -> AccessPolicy {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "readers", "namespace": "shop"},
            "spec": spec,
        }))
        .expect("a valid AccessPolicy")
    }

    #[test]
    fn grants_expand_to_one_rule_per_principal_and_resource_with_the_operations_that_fit() {
        let policy = policy(json!({"grants": [{
            "serviceAccounts": ["analytics/reader", "auditor"],
            "groups": ["oncall"],
            "topics": ["clicks"],
            "queues": ["orders"],
            "consumerGroups": ["reporting"],
            "operations": ["consume", "receive", "join", "describe"],
        }]}));
        let mut resources = Resolved::default();
        resources.topics.insert("clicks".into(), "clicks.v2".into());
        resources.queues.insert("orders".into(), "orders".into());
        let prefix = rule_prefix("shop", "readers");
        let rules = expand(&policy, "shop", &prefix, &resources);
        assert_eq!(rules.len(), 9, "3 principals × 3 resources");
        let first = &rules[0];
        assert_eq!(first.name, "k8s.shop.policy.readers.0.0");
        assert_eq!(first.principal, "system:serviceaccount:analytics:reader");
        assert_eq!(first.resource.name, "clicks.v2", "the topic's broker name");
        assert_eq!(first.operations, ["consume", "describe"]);
        let queue = &rules[1];
        assert_eq!(queue.operations, ["describe", "receive"]);
        let group = &rules[2];
        assert_eq!(group.resource.name, "shop.reporting");
        assert_eq!(group.operations, ["describe", "join"]);
        assert_eq!(rules[3].principal, "system:serviceaccount:shop:auditor");
        assert_eq!(rules[6].principal, "group:oncall");
    }

    #[test]
    fn a_missing_resource_makes_no_rule_and_operations_that_fit_nothing_are_dropped() {
        let policy = policy(json!({"grants": [{
            "users": ["alice"], "topics": ["gone"], "queues": ["orders"],
            "operations": ["produce"],
        }]}));
        let mut resources = Resolved::default();
        resources.queues.insert("orders".into(), "orders".into());
        let rules = expand(&policy, "shop", &rule_prefix("shop", "readers"), &resources);
        assert!(
            rules.is_empty(),
            "produce means nothing on a queue: {rules:?}"
        );
    }
}
