//! The access rules that come with a mapped Topic or Queue: by default a namespace's
//! ServiceAccounts may use the namespace's Topics and Queues (and consumer groups
//! named after the namespace), and nobody else unless a rule says so. The rules are
//! the operator's (`k8s.` names): written while the resource is mapped, removed when
//! it is deleted.

use kube::ResourceExt;

use super::kinds::Mapped;
use crate::context::Context;
use crate::error::Error;
use crate::metadata::{Entry, MetadataClient};
use crate::records::{AccessRuleRecord, keys, namespace_groups_rule, namespace_rule};

/// Writes, or puts back, the rules letting `namespace`'s ServiceAccounts use `object`.
pub async fn ensure_namespace_rules<K: Mapped, M: MetadataClient>(
    object: &K,
    namespace: &str,
    ctx: &Context<M>,
) -> Result<(), Error> {
    let own = namespace_rule(
        K::KIND,
        namespace,
        &object.name_any(),
        &object.broker_name(),
    );
    for rule in [own, namespace_groups_rule(namespace)] {
        let held = ctx.metadata.get(&keys::access_rule(&rule.name)).await?;
        put_rule(&rule, held.as_ref(), ctx).await?;
    }
    Ok(())
}

/// Removes the rule that came with `object` (the namespace's group rule stays: other
/// resources of the namespace may need it).
pub async fn remove_namespace_rule<K: Mapped, M: MetadataClient>(
    object: &K,
    namespace: &str,
    ctx: &Context<M>,
) -> Result<(), Error> {
    let rule = namespace_rule(
        K::KIND,
        namespace,
        &object.name_any(),
        &object.broker_name(),
    );
    let key = keys::access_rule(&rule.name);
    if let Some(entry) = ctx.metadata.get(&key).await? {
        ctx.metadata.delete_key(&key, entry.mod_revision).await?;
    }
    Ok(())
}

/// Writes `rule` unless the store already holds exactly it (`held`: its entry as
/// just read, if any).
pub(crate) async fn put_rule<M: MetadataClient>(
    rule: &AccessRuleRecord,
    held: Option<&Entry>,
    ctx: &Context<M>,
) -> Result<(), Error> {
    let key = keys::access_rule(&rule.name);
    let bytes = serde_json::to_vec(rule)?;
    match held {
        None => {
            ctx.metadata.create(&key, bytes).await?;
        }
        Some(entry) if entry.value != bytes => {
            ctx.metadata.put(&key, bytes, entry.mod_revision).await?;
        }
        Some(_) => {}
    }
    Ok(())
}
