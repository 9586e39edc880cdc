//! Prometheus metrics of the reconcilers: reconciles, their durations and failures,
//! by kind (and reason), plus whether this replica leads.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::Error;

/// Labels of per-kind metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `BrokerCluster`, `Topic` or `Queue`.
    pub kind: &'static str,
}

/// Labels of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The resource kind.
    pub kind: &'static str,
    /// [`Error::metric_label`].
    pub reason: &'static str,
}

/// Durations buckets, in seconds: a reconcile makes a handful of API and etcd calls.
const DURATION_BUCKETS_S: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The operator's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    leading: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        // The standard process_* metrics at the root, the operator's own under
        // ferry_operator_.
        let mut root = Registry::default();
        root.register_collector(Box::new(ferry_telemetry::process_metrics::ProcessCollector));
        let registry = root.sub_registry_with_prefix("ferry_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS_S)
        });
        let leading = Gauge::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles took",
            durations.clone(),
        );
        registry.register(
            "leading",
            "1 while this replica holds the leader lease",
            leading.clone(),
        );
        Self {
            registry: root,
            reconciles,
            failures,
            durations,
            leading,
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `kind` and returns a timer that records its duration
    /// when dropped, so early returns are measured too.
    pub fn reconcile(self: &Arc<Self>, kind: &'static str) -> ReconcileTimer {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        ReconcileTimer {
            metrics: Arc::clone(self),
            kind,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `kind`.
    pub fn failure(&self, kind: &'static str, error: &Error) {
        self.failures
            .get_or_create(&FailureLabels {
                kind,
                reason: error.metric_label(),
            })
            .inc();
    }

    /// Records whether this replica leads.
    pub fn set_leading(&self, leading: bool) {
        self.leading.set(i64::from(leading));
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Records a reconcile's duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer {
    metrics: Arc<Metrics>,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metrics
            .durations
            .get_or_create(&KindLabels { kind: self.kind })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_failures_and_durations_are_exported() {
        let metrics = Arc::new(Metrics::default());
        drop(metrics.reconcile("Queue"));
        metrics.failure("Queue", &Error::MissingField("namespace"));
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("ferry_operator_reconciles_total{kind=\"Queue\"} 1"));
        assert!(text.contains(
            "ferry_operator_reconcile_failures_total{kind=\"Queue\",reason=\"missing_field\"} 1"
        ));
        assert!(text.contains("ferry_operator_reconcile_duration_seconds_count{kind=\"Queue\"} 1"));
    }
}
