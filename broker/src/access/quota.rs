//! Quotas per principal: produce bytes, consume bytes and requests per second, each a
//! token bucket on every host. A caller over its rate is refused with how long to wait
//! (nothing done); a request larger than a second's worth still goes through when the
//! bucket is not in debt, and the debt then holds the next ones back, so the long-run
//! rate is the quota whatever the request sizes.
//!
//! Quotas live in the metadata store, one key per principal under
//! `/ferry/access/quotas/` (`*` for every principal without its own), followed with a
//! watch like the access rules.

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

/// A principal's quotas as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    /// Whose: a principal's name, or `*` for every principal without its own.
    pub principal: String,
    /// The limits.
    #[serde(flatten)]
    pub limits: QuotaLimits,
}

/// Every principal's quotas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaTable {
    by_principal: HashMap<String, QuotaLimits>,
}

impl QuotaTable {
    /// A table of `records`.
    pub fn from_records(records: impl IntoIterator<Item = QuotaRecord>) -> Self {
        Self {
            by_principal: records
                .into_iter()
                .map(|r| (r.principal, r.limits))
                .collect(),
        }
    }

    /// Every record, ordered by principal.
    pub fn records(&self) -> Vec<QuotaRecord> {
        let mut records: Vec<QuotaRecord> = self
            .by_principal
            .iter()
            .map(|(principal, limits)| QuotaRecord {
                principal: principal.clone(),
                limits: limits.clone(),
            })
            .collect();
        records.sort_by(|a, b| a.principal.cmp(&b.principal));
        records
    }

    /// The limits that apply to `principal`: its own, else the default.
    fn limits(&self, principal: &str) -> Option<&QuotaLimits> {
        self.by_principal
            .get(principal)
            .or_else(|| self.by_principal.get(DEFAULT_PRINCIPAL))
    }

    fn apply(&mut self, key: &str, value: Option<&KeyValue>) -> bool {
        let Some(encoded) = key.strip_prefix(keys::ACCESS_QUOTAS) else {
            return false;
        };
        let principal = decode_principal(encoded);
        self.by_principal.remove(&principal);
        if let Some(kv) = value {
            match serde_json::from_slice::<QuotaRecord>(&kv.value) {
                Ok(record) if record.principal == principal => {
                    self.by_principal.insert(principal, record.limits);
                }
                Ok(_) => tracing::warn!(%key, "a quota record names another principal; ignored"),
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

/// Stores `record`, replacing the principal's previous quotas.
pub async fn put(meta: &dyn MetadataStore, record: &QuotaRecord) -> Result<(), MetaError> {
    meta.put(
        &keys::access_quota(&encode_principal(&record.principal)),
        encode_json(record),
    )
    .await?;
    Ok(())
}

/// Removes `principal`'s quotas; whether it had any.
pub async fn delete(meta: &dyn MetadataStore, principal: &str) -> Result<bool, MetaError> {
    let key = keys::access_quota(&encode_principal(principal));
    let existed = meta.get(&key).await?.is_some();
    meta.delete(&key).await?;
    Ok(existed)
}

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
#[error("{principal} is over its {quota} quota; retry in {} ms", retry_after.as_millis())]
pub struct Throttled {
    /// Whose quota.
    pub principal: String,
    /// Which quota.
    pub quota: QuotaKind,
    /// How long to wait before the next request can pass.
    pub retry_after: Duration,
}

/// The quotas in force on this host and each principal's buckets.
#[derive(Debug, Clone)]
pub struct Quotas {
    table: watch::Receiver<Arc<QuotaTable>>,
    buckets: Arc<Mutex<HashMap<(String, QuotaKind), Bucket>>>,
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

    /// Refuses `caller` while its `kind` bucket is in debt; otherwise charges
    /// `amount` (which may put it in debt).
    pub fn charge(&self, caller: &Caller, kind: QuotaKind, amount: u64) -> Result<(), Throttled> {
        self.apply(caller, kind, amount, true)
    }

    /// Charges `amount` already served (consumed bytes, known only after the read):
    /// never refuses, the debt holds the next request back.
    pub fn charge_after(&self, caller: &Caller, kind: QuotaKind, amount: u64) {
        // Never refused when `refuse_in_debt` is false.
        let _ = self.apply(caller, kind, amount, false);
    }

    /// Charges `amount` to `caller`'s `kind` bucket, refusing first while the bucket
    /// is in debt when `refuse_in_debt`; counts what was charged.
    fn apply(
        &self,
        caller: &Caller,
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
            .limits(principal)
            .and_then(|l| l.limit(kind));
        if let Some(rate) = limit {
            let now = Instant::now();
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let bucket = buckets
                .entry((principal.to_owned(), kind))
                .or_insert_with(|| Bucket::new(rate, now));
            bucket.refill(rate, now);
            if let (true, Err(retry_after)) = (refuse_in_debt, bucket.admit()) {
                drop(buckets);
                self.count_throttled(principal, kind);
                return Err(Throttled {
                    principal: principal.to_owned(),
                    quota: kind,
                    retry_after,
                });
            }
            bucket.balance -= amount as f64;
        }
        self.count_usage(principal, kind, amount);
        Ok(())
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
                limits: QuotaLimits {
                    requests_per_second: Some(2),
                    ..QuotaLimits::default()
                },
            },
            QuotaRecord {
                principal: "batch".into(),
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
    fn principals_with_slashes_round_trip_through_keys() {
        let principal = "spiffe://cluster.local/ns/a%b/sa/c";
        assert_eq!(decode_principal(&encode_principal(principal)), principal);
        assert!(!encode_principal(principal).contains('/'));
    }
}
