//! Quotas per principal: produce bytes, consume bytes and requests per second, each a
//! token bucket on every host. A caller over its rate is refused with how long to wait
//! (nothing done); a request larger than a second's worth still goes through when the
//! bucket is not in debt, and the debt then holds the next ones back, so the long-run
//! rate is the quota whatever the request sizes.
//!
//! A quota applies to everything a principal does, or to what it does on one topic
//! or queue (each principal's own bucket there: a default for that topic or queue,
//! on top of the principal's overall quota). Quotas live in the metadata store under
//! `/ferry/access/quotas/`: `{principal}` for the overall ones, `{principal}/topics/
//! {name}` and `{principal}/queues/{name}` for one resource (`*` for every principal
//! without its own), followed with a watch like the access rules.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Caller;
use super::rules::FOLLOW_RETRY_PAUSE;
use crate::meta::{KeyValue, MetaError, MetadataStore, MetadataStoreExt, encode_json, keys};
use crate::metrics::{PrincipalLabels, PrincipalMetrics, QuotaLabels};

/// The principal whose quotas apply to every principal without its own.
pub const DEFAULT_PRINCIPAL: &str = "*";

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Bytes appended to topics and sent to queues.
    ProduceBytes,
    /// Bytes fetched from topics and received from queues.
    ConsumeBytes,
    /// Requests of any kind.
    Requests,
}

impl QuotaKind {
    /// Its name in errors and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProduceBytes => "produce_bytes_per_second",
            Self::ConsumeBytes => "consume_bytes_per_second",
            Self::Requests => "requests_per_second",
        }
    }
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One principal's limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    /// Bytes per second appended to topics and sent to queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produce_bytes_per_second: Option<u64>,
    /// Bytes per second fetched from topics and received from queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consume_bytes_per_second: Option<u64>,
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u64>,
}

impl QuotaLimits {
    fn limit(&self, kind: QuotaKind) -> Option<u64> {
        match kind {
            QuotaKind::ProduceBytes => self.produce_bytes_per_second,
            QuotaKind::ConsumeBytes => self.consume_bytes_per_second,
            QuotaKind::Requests => self.requests_per_second,
        }
        .filter(|limit| *limit > 0)
    }
}

/// What a quota covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaScope {
    /// Everything the principal does.
    All,
    /// What it does on one topic.
    Topic(String),
    /// What it does on one queue.
    Queue(String),
}

impl QuotaScope {
    /// The scope of `resource`: a topic or a queue; `None` for anything else.
    pub fn of(resource: super::Resource<'_>) -> Option<Self> {
        match resource {
            super::Resource::Topic(name) => Some(Self::Topic(name.to_owned())),
            super::Resource::Queue(name) => Some(Self::Queue(name.to_owned())),
            super::Resource::Group(_) | super::Resource::Cluster => None,
        }
    }

    /// What follows the principal in the scope's key.
    fn key_suffix(&self) -> String {
        match self {
            Self::All => String::new(),
            Self::Topic(name) => format!("/topics/{name}"),
            Self::Queue(name) => format!("/queues/{name}"),
        }
    }

    /// The scope a key suffix names (`None`: not one this version knows).
    fn from_key_suffix(suffix: &str) -> Option<Self> {
        match suffix.split_once('/') {
            None if suffix.is_empty() => Some(Self::All),
            Some(("topics", name)) if !name.is_empty() => Some(Self::Topic(name.to_owned())),
            Some(("queues", name)) if !name.is_empty() => Some(Self::Queue(name.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for QuotaScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => Ok(()),
            Self::Topic(name) => write!(f, " on topic {name:?}"),
            Self::Queue(name) => write!(f, " on queue {name:?}"),
        }
    }
}

/// A principal's quotas as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    /// Whose: a principal's name, or `*` for every principal without its own.
    pub principal: String,
    /// The topic it is limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The queue it is limited to, if any (never with `topic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The limits.
    #[serde(flatten)]
    pub limits: QuotaLimits,
}

impl QuotaRecord {
    /// What the record covers; `None` when it names both a topic and a queue.
    pub fn scope(&self) -> Option<QuotaScope> {
        match (&self.topic, &self.queue) {
            (None, None) => Some(QuotaScope::All),
            (Some(topic), None) => Some(QuotaScope::Topic(topic.clone())),
            (None, Some(queue)) => Some(QuotaScope::Queue(queue.clone())),
            (Some(_), Some(_)) => None,
        }
    }
}

/// Every principal's quotas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaTable {
    by_principal: HashMap<(String, QuotaScope), QuotaLimits>,
}

impl QuotaTable {
    /// A table of `records` (those naming both a topic and a queue are left out).
    pub fn from_records(records: impl IntoIterator<Item = QuotaRecord>) -> Self {
        Self {
            by_principal: records
                .into_iter()
                .filter_map(|r| Some(((r.principal.clone(), r.scope()?), r.limits)))
                .collect(),
        }
    }

    /// Every record, ordered by principal, then scope.
    pub fn records(&self) -> Vec<QuotaRecord> {
        let mut entries: Vec<_> = self.by_principal.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        entries
            .into_iter()
            .map(|((principal, scope), limits)| {
                let (topic, queue) = match scope {
                    QuotaScope::All => (None, None),
                    QuotaScope::Topic(name) => (Some(name.clone()), None),
                    QuotaScope::Queue(name) => (None, Some(name.clone())),
                };
                QuotaRecord {
                    principal: principal.clone(),
                    topic,
                    queue,
                    limits: limits.clone(),
                }
            })
            .collect()
    }

    /// The limits that apply to `principal` in `scope`: its own, else the default.
    fn limits(&self, principal: &str, scope: &QuotaScope) -> Option<&QuotaLimits> {
        // The common case, no quotas at all, costs no key built per request.
        if self.by_principal.is_empty() {
            return None;
        }
        self.by_principal
            .get(&(principal.to_owned(), scope.clone()))
            .or_else(|| {
                self.by_principal
                    .get(&(DEFAULT_PRINCIPAL.to_owned(), scope.clone()))
            })
    }

    fn apply(&mut self, key: &str, value: Option<&KeyValue>) -> bool {
        let Some(rest) = key.strip_prefix(keys::ACCESS_QUOTAS) else {
            return false;
        };
        // The encoded principal holds no '/': what follows the first one is the scope.
        let (encoded, suffix) = match rest.split_once('/') {
            Some((encoded, scope)) => (encoded, scope),
            None => (rest, ""),
        };
        let Some(scope) = QuotaScope::from_key_suffix(suffix) else {
            tracing::warn!(%key, "a quota key of an unknown scope; ignored");
            return true;
        };
        let principal = decode_principal(encoded);
        let slot = (principal, scope);
        self.by_principal.remove(&slot);
        if let Some(kv) = value {
            match serde_json::from_slice::<QuotaRecord>(&kv.value) {
                Ok(record)
                    if record.principal == slot.0 && record.scope().as_ref() == Some(&slot.1) =>
                {
                    self.by_principal.insert(slot, record.limits);
                }
                Ok(_) => {
                    tracing::warn!(%key, "a quota record names another principal or scope; ignored")
                }
                Err(err) => tracing::warn!(%key, %err, "an unreadable quota record; ignored"),
            }
        }
        true
    }
}

/// The key segment for `principal` ('/' and '%' escaped: certificate URIs have both).
pub fn encode_principal(principal: &str) -> String {
    principal.replace('%', "%25").replace('/', "%2F")
}

fn decode_principal(encoded: &str) -> String {
    encoded.replace("%2F", "/").replace("%25", "%")
}

/// Keeps `sender` holding the store's current quotas, until the task is aborted.
pub async fn follow(meta: Arc<dyn MetadataStore>, sender: watch::Sender<Arc<QuotaTable>>) {
    crate::cluster::view::follow_prefix(
        meta,
        keys::ACCESS_QUOTAS.to_owned(),
        sender,
        FOLLOW_RETRY_PAUSE,
        QuotaTable::apply,
    )
    .await;
}

/// Every quota the store holds.
pub async fn list(meta: &dyn MetadataStore) -> Result<QuotaTable, MetaError> {
    let mut table = QuotaTable::default();
    for kv in meta.list(keys::ACCESS_QUOTAS).await? {
        table.apply(&kv.key, Some(&kv));
    }
    Ok(table)
}

/// The key of `principal`'s quotas in `scope`.
fn quota_key(principal: &str, scope: &QuotaScope) -> String {
    keys::access_quota(&format!(
        "{}{}",
        encode_principal(principal),
        scope.key_suffix()
    ))
}

/// Stores `record`, replacing the principal's previous quotas in its scope (the
/// caller has checked it names at most one of a topic and a queue).
pub async fn put(meta: &dyn MetadataStore, record: &QuotaRecord) -> Result<(), MetaError> {
    let scope = record.scope().unwrap_or(QuotaScope::All);
    meta.put(&quota_key(&record.principal, &scope), encode_json(record))
        .await?;
    Ok(())
}

/// Removes `principal`'s quotas in `scope`; whether it had any.
pub async fn delete(
    meta: &dyn MetadataStore,
    principal: &str,
    scope: &QuotaScope,
) -> Result<bool, MetaError> {
    let key = quota_key(principal, scope);
    let existed = meta.get(&key).await?.is_some();
    meta.delete(&key).await?;
    Ok(existed)
}

/// Whose bucket, where, of what.
type BucketKey = (String, QuotaScope, QuotaKind);

/// A token bucket: `rate` units a second, holding at most a second's worth.
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    balance: f64,
    updated: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate: rate as f64,
            balance: rate as f64,
            updated: now,
        }
    }

    fn refill(&mut self, rate: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.rate = rate as f64;
        self.balance = (self.balance + elapsed * self.rate).min(self.rate);
        self.updated = now;
    }

    /// `Err(wait)` while the bucket is in debt: how long until it is not.
    fn admit(&self) -> Result<(), Duration> {
        if self.balance >= 0.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(-self.balance / self.rate.max(1.0)))
        }
    }
}

/// A request refused for a quota: nothing was done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{principal} is over its {quota} quota{scope}; retry in {} ms", retry_after.as_millis())]
pub struct Throttled {
    /// Whose quota.
    pub principal: String,
    /// Which quota.
    pub quota: QuotaKind,
    /// Where it applies.
    pub scope: QuotaScope,
    /// How long to wait before the next request can pass.
    pub retry_after: Duration,
}

/// The quotas in force on this host and each principal's buckets.
#[derive(Debug, Clone)]
pub struct Quotas {
    table: watch::Receiver<Arc<QuotaTable>>,
    buckets: Arc<Mutex<HashMap<BucketKey, Bucket>>>,
    metrics: Option<PrincipalMetrics>,
}

impl Quotas {
    /// Enforces whatever `table` holds, counting in `metrics`.
    pub fn new(table: watch::Receiver<Arc<QuotaTable>>, metrics: Option<PrincipalMetrics>) -> Self {
        Self {
            table,
            buckets: Arc::new(Mutex::new(HashMap::new())),
            metrics,
        }
    }

    /// No quotas at all.
    pub fn none() -> Self {
        let (_, table) = watch::channel(Arc::new(QuotaTable::default()));
        Self::new(table, None)
    }

    /// The name quotas and usage go by: peers are not counted (what they pass on was
    /// counted where it entered).
    fn principal(caller: &Caller) -> Option<&str> {
        match caller {
            Caller::Peer => None,
            other => Some(other.name()),
        }
    }

    /// Refuses `caller` while its overall `kind` bucket is in debt; otherwise charges
    /// `amount` (which may put it in debt) and counts it as usage.
    pub fn charge(&self, caller: &Caller, kind: QuotaKind, amount: u64) -> Result<(), Throttled> {
        self.apply(caller, &QuotaScope::All, kind, amount, true)?;
        self.count(caller, kind, amount);
        Ok(())
    }

    /// Admits a produce, send, fetch or receive of `caller` on `scope`: refused while
    /// its overall or `scope` bucket of `kind` is in debt, or `scope`'s requests
    /// bucket is; charges that request to the latter.
    pub fn admit_on(
        &self,
        caller: &Caller,
        scope: &QuotaScope,
        kind: QuotaKind,
    ) -> Result<(), Throttled> {
        self.apply(caller, &QuotaScope::All, kind, 0, true)?;
        if *scope != QuotaScope::All {
            self.apply(caller, scope, kind, 0, true)?;
            self.apply(caller, scope, QuotaKind::Requests, 1, true)?;
        }
        Ok(())
    }

    /// Charges `amount` already served on `scope` (known only once done) to the
    /// overall and `scope` buckets: never refuses, the debt holds the next request
    /// back.
    pub fn charge_after_on(
        &self,
        caller: &Caller,
        scope: &QuotaScope,
        kind: QuotaKind,
        amount: u64,
    ) {
        // Never refused when `refuse_in_debt` is false.
        let _ = self.apply(caller, &QuotaScope::All, kind, amount, false);
        if *scope != QuotaScope::All {
            let _ = self.apply(caller, scope, kind, amount, false);
        }
        self.count(caller, kind, amount);
    }

    /// Charges `amount` to `caller`'s `kind` bucket in `scope`, refusing first while
    /// the bucket is in debt when `refuse_in_debt`.
    fn apply(
        &self,
        caller: &Caller,
        scope: &QuotaScope,
        kind: QuotaKind,
        amount: u64,
        refuse_in_debt: bool,
    ) -> Result<(), Throttled> {
        let Some(principal) = Self::principal(caller) else {
            return Ok(());
        };
        let limit = self
            .table
            .borrow()
            .limits(principal, scope)
            .and_then(|l| l.limit(kind));
        let Some(rate) = limit else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry((principal.to_owned(), scope.clone(), kind))
            .or_insert_with(|| Bucket::new(rate, now));
        bucket.refill(rate, now);
        if let (true, Err(retry_after)) = (refuse_in_debt, bucket.admit()) {
            drop(buckets);
            self.count_throttled(principal, kind);
            return Err(Throttled {
                principal: principal.to_owned(),
                quota: kind,
                scope: scope.clone(),
                retry_after,
            });
        }
        bucket.balance -= amount as f64;
        Ok(())
    }

    /// Counts `amount` of `kind` as `caller`'s usage.
    fn count(&self, caller: &Caller, kind: QuotaKind, amount: u64) {
        if let Some(principal) = Self::principal(caller) {
            self.count_usage(principal, kind, amount);
        }
    }

    fn count_usage(&self, principal: &str, kind: QuotaKind, amount: u64) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let labels = PrincipalLabels {
            principal: principal.to_owned(),
        };
        match kind {
            QuotaKind::Requests => metrics.requests.get_or_create(&labels).inc_by(amount),
            QuotaKind::ProduceBytes => metrics.produce_bytes.get_or_create(&labels).inc_by(amount),
            QuotaKind::ConsumeBytes => metrics.consume_bytes.get_or_create(&labels).inc_by(amount),
        };
    }

    fn count_throttled(&self, principal: &str, kind: QuotaKind) {
        if let Some(metrics) = &self.metrics {
            metrics
                .throttled
                .get_or_create(&QuotaLabels {
                    principal: principal.to_owned(),
                    quota: kind.as_str().to_owned(),
                })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AuthMethod, Principal};

    fn caller(name: &str) -> Caller {
        Caller::Principal(Arc::new(Principal {
            name: name.into(),
            groups: Vec::new(),
            method: AuthMethod::StaticToken,
        }))
    }

    fn quotas(records: Vec<QuotaRecord>) -> Quotas {
        let (sender, table) = watch::channel(Arc::new(QuotaTable::from_records(records)));
        std::mem::forget(sender);
        Quotas::new(table, None)
    }

    #[test]
    fn a_bucket_lets_a_seconds_worth_through_then_asks_to_wait_for_the_debt() {
        let start = Instant::now();
        let mut bucket = Bucket::new(1_000, start);
        assert!(bucket.admit().is_ok());
        bucket.balance -= 3_000.0;
        let wait = bucket.admit().expect_err("in debt");
        assert_eq!(wait, Duration::from_secs(2));
        bucket.refill(1_000, start + Duration::from_secs(1));
        assert_eq!(bucket.admit(), Err(Duration::from_secs(1)));
        bucket.refill(1_000, start + Duration::from_secs(10));
        assert_eq!(bucket.balance, 1_000.0, "never more than a second's worth");
    }

    #[test]
    fn own_limits_win_over_the_default_and_peers_are_never_counted() {
        let quotas = quotas(vec![
            QuotaRecord {
                principal: DEFAULT_PRINCIPAL.into(),
                topic: None,
                queue: None,
                limits: QuotaLimits {
                    requests_per_second: Some(2),
                    ..QuotaLimits::default()
                },
            },
            QuotaRecord {
                principal: "batch".into(),
                topic: None,
                queue: None,
                limits: QuotaLimits::default(),
            },
        ]);
        let alice = caller("alice");
        assert!(quotas.charge(&alice, QuotaKind::Requests, 1).is_ok());
        assert!(quotas.charge(&alice, QuotaKind::Requests, 1).is_ok());
        assert!(
            quotas.charge(&alice, QuotaKind::Requests, 1).is_ok(),
            "balance 0 passes"
        );
        let refused = quotas
            .charge(&alice, QuotaKind::Requests, 1)
            .expect_err("over the default");
        assert_eq!(refused.quota, QuotaKind::Requests);
        assert!(refused.retry_after > Duration::ZERO);
        for _ in 0..100 {
            assert!(
                quotas
                    .charge(&caller("batch"), QuotaKind::Requests, 1)
                    .is_ok()
            );
            assert!(quotas.charge(&Caller::Peer, QuotaKind::Requests, 1).is_ok());
        }
    }

    #[test]
    fn a_topics_quota_holds_each_principal_there_and_nowhere_else() {
        let quotas = quotas(vec![QuotaRecord {
            principal: DEFAULT_PRINCIPAL.into(),
            topic: Some("clicks".into()),
            queue: None,
            limits: QuotaLimits {
                produce_bytes_per_second: Some(1_000),
                ..QuotaLimits::default()
            },
        }]);
        let clicks = QuotaScope::Topic("clicks".into());
        let other = QuotaScope::Topic("orders".into());
        let alice = caller("alice");
        assert!(
            quotas
                .admit_on(&alice, &clicks, QuotaKind::ProduceBytes)
                .is_ok()
        );
        quotas.charge_after_on(&alice, &clicks, QuotaKind::ProduceBytes, 5_000);
        let refused = quotas
            .admit_on(&alice, &clicks, QuotaKind::ProduceBytes)
            .expect_err("in debt on clicks");
        assert_eq!(refused.scope, clicks);
        assert!(
            refused.to_string().contains("on topic \"clicks\""),
            "{refused}"
        );
        // Elsewhere, and for another principal on the same topic, nothing is owed.
        assert!(
            quotas
                .admit_on(&alice, &other, QuotaKind::ProduceBytes)
                .is_ok()
        );
        assert!(
            quotas
                .admit_on(&caller("bob"), &clicks, QuotaKind::ProduceBytes)
                .is_ok()
        );
    }

    #[test]
    fn scoped_keys_round_trip_and_unknown_scopes_are_ignored() {
        for scope in [
            QuotaScope::All,
            QuotaScope::Topic("clicks".into()),
            QuotaScope::Queue("jobs".into()),
        ] {
            let key = quota_key("spiffe://x/y", &scope);
            let mut table = QuotaTable::default();
            let record = QuotaRecord {
                principal: "spiffe://x/y".into(),
                topic: matches!(&scope, QuotaScope::Topic(_)).then(|| "clicks".into()),
                queue: matches!(&scope, QuotaScope::Queue(_)).then(|| "jobs".into()),
                limits: QuotaLimits {
                    requests_per_second: Some(3),
                    ..QuotaLimits::default()
                },
            };
            let kv = KeyValue {
                key: key.clone(),
                value: serde_json::to_vec(&record).expect("JSON"),
                mod_revision: 1,
            };
            assert!(table.apply(&key, Some(&kv)));
            assert_eq!(table.records(), vec![record], "{key}");
        }
        let mut table = QuotaTable::default();
        assert!(table.apply(&format!("{}alice/groups/g", keys::ACCESS_QUOTAS), None));
        assert!(table.records().is_empty());
    }

    #[test]
    fn principals_with_slashes_round_trip_through_keys() {
        let principal = "spiffe://cluster.local/ns/a%b/sa/c";
        assert_eq!(decode_principal(&encode_principal(principal)), principal);
        assert!(!encode_principal(principal).contains('/'));
    }
}
