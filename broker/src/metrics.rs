//! Prometheus metrics and the HTTP endpoint that serves them.

use std::time::Duration;

use ferry_storage::SyncObserver;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a topic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// Topic name.
    pub topic: String,
}

/// Labels naming a partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
}

/// Labels naming a group's partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// Group name.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
}

/// Labels naming a queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Queue name.
    pub queue: String,
}

/// Labels naming a principal (a caller, as authentication named it).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrincipalLabels {
    /// The principal's name (`anonymous` where nobody is authenticated).
    pub principal: String,
}

/// Labels naming a principal and one of its quotas.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// The principal's name.
    pub principal: String,
    /// `produce_bytes_per_second`, `consume_bytes_per_second` or `requests_per_second`.
    pub quota: String,
}

/// What each principal used and how often a quota held it back (shared with the
/// quota keeper, which counts).
#[derive(Clone, Debug, Default)]
pub struct PrincipalMetrics {
    /// Requests, by principal.
    pub requests: Family<PrincipalLabels, Counter>,
    /// Bytes produced to topics and sent to queues, by principal.
    pub produce_bytes: Family<PrincipalLabels, Counter>,
    /// Bytes fetched from topics and received from queues, by principal.
    pub consume_bytes: Family<PrincipalLabels, Counter>,
    /// Requests refused for a quota, by principal and quota.
    pub throttled: Family<QuotaLabels, Counter>,
}

/// Labels naming a queue and a message state or event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueKindLabels {
    /// Queue name.
    pub queue: String,
    /// `visible`, `in_flight`, … for depth; `sent`, `acked`, … for events.
    pub kind: &'static str,
}

/// Labels naming one follower replica of a topic partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The follower's host id.
    pub replica: String,
}

/// Labels saying how a leader sent batches to its followers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaSentLabels {
    /// `stream` (the replica stream) or `grpc` (`ReplicaFetch`).
    pub transport: &'static str,
    /// `located` (sent from the segment file unread) or `read` (read and checked).
    pub reading: &'static str,
}

/// Labels naming a TLS listener: `client`, `peer` or `metrics`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// The listener.
    pub listener: &'static str,
}

/// The expiry of the certificate each TLS listener serves, read again at each scrape
/// (listeners reload their files when they change).
#[derive(Clone, Debug, Default)]
pub struct CertificateExpiry(Family<ListenerLabels, Gauge>);

impl CertificateExpiry {
    /// Sets the gauges from the listeners this process serves now.
    pub fn refresh(&self) {
        self.0.clear();
        for (role, not_after) in crate::tls::served_certificate_expiry() {
            self.0
                .get_or_create(&ListenerLabels {
                    listener: role.as_str(),
                })
                .set(not_after);
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "Not-after time of the certificate a TLS listener serves, seconds since the epoch",
            self.0.clone(),
        );
    }
}

/// Labels naming an RPC outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// gRPC method.
    pub method: String,
    /// gRPC status code name.
    pub code: String,
}

/// The fsync latency histogram, fed by the storage engine through [`SyncObserver`].
#[derive(Clone, Debug)]
pub struct FsyncHistogram(pub Histogram);

impl SyncObserver for FsyncHistogram {
    fn synced(&self, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }
}

/// Every metric the broker exports.
pub struct Metrics {
    registry: Registry,
    /// Calls to every gRPC server of the process, by method and code.
    pub rpc: crate::service::rpc_metrics::RpcMetrics,
    /// Records appended, by topic.
    pub produce_messages: Family<TopicLabels, Counter>,
    /// Batch bytes appended, by topic.
    pub produce_bytes: Family<TopicLabels, Counter>,
    /// Records returned by fetches, by topic.
    pub fetch_messages: Family<TopicLabels, Counter>,
    /// Bytes returned by fetches, by topic.
    pub fetch_bytes: Family<TopicLabels, Counter>,
    /// Time from receiving a produce batch to acknowledging it.
    pub produce_latency_seconds: Histogram,
    /// Time one fsync of a partition log took.
    pub fsync_seconds: FsyncHistogram,
    /// Next offset to be written, per partition.
    pub log_end_offset: Family<PartitionLabels, Gauge>,
    /// First stored offset, per partition.
    pub log_start_offset: Family<PartitionLabels, Gauge>,
    /// Bytes on disk, per partition.
    pub log_size_bytes: Family<PartitionLabels, Gauge>,
    /// Bytes free (for this process) on the data directory's file system.
    pub data_dir_free_bytes: Gauge,
    /// Size of the data directory's file system, in bytes.
    pub data_dir_size_bytes: Gauge,
    /// Offsets lost to damage on disk since the partition was opened (each now a
    /// lost range that readers skip), per partition.
    pub log_lost_records: Family<PartitionLabels, Gauge>,
    /// High watermark minus committed offset, per group partition.
    pub group_lag: Family<GroupLabels, Gauge>,
    /// Failed requests by method and status code.
    pub request_errors: Family<ErrorLabels, Counter>,
    /// Messages held per queue by state.
    pub queue_messages: Family<QueueKindLabels, Gauge>,
    /// Age of each queue's oldest message.
    pub queue_oldest_age_seconds: Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// On a leader: messages each follower is behind.
    pub replica_lag_messages: Family<ReplicaLabels, Gauge>,
    /// Bytes of batches a leader sent its followers, by transport and reading.
    pub replica_sent_bytes: Family<ReplicaSentLabels, Counter>,
    /// On a leader: seconds since each follower last held everything it had.
    pub replica_lag_seconds: Family<ReplicaLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Partitions of the cluster whose in-sync set is smaller than their replicas.
    pub cluster_partitions_under_replicated: Family<KindLabels, Gauge>,
    /// Consumers seen receiving in the last minute, per queue.
    pub queue_consumers: Family<QueueLabels, Gauge>,
    /// Message events per queue (sent, received, acked, redelivered, dead_lettered,
    /// expired, deduplicated), since the broker started.
    pub queue_events: Family<QueueKindLabels, Counter>,
    /// Cluster mode: 1 while this host's lease (by its own conservative clock) holds;
    /// the cluster gauges stay 0 on a standalone host.
    pub cluster_lease_live: Gauge,
    /// Cluster mode: 1 while this host is the cluster's controller.
    pub cluster_controller: Gauge,
    /// Cluster mode: hosts registered now, as this host sees them.
    pub cluster_hosts_live: Gauge,
    /// Cluster mode: partitions this host leads, by kind (topics, queues).
    pub cluster_partitions_led: Family<KindLabels, Gauge>,
    /// Cluster mode: partitions of the cluster without a leader, by kind.
    pub cluster_partitions_leaderless: Family<KindLabels, Gauge>,
    /// Per-principal usage and throttling.
    pub principals: PrincipalMetrics,
    /// Not-after of each TLS listener's certificate.
    pub tls_certificate_expiry: CertificateExpiry,
    /// 1 for a partition whose log refuses writes after a failed write or fsync.
    pub log_poisoned: Family<PartitionLabels, Gauge>,
    /// 1 for a queue one of whose logs refuses writes after a failed write or fsync.
    pub queue_log_poisoned: Family<QueueLabels, Gauge>,
    /// Followers a leader on this host took out of an in-sync set, by kind.
    pub replica_isr_shrinks: Family<KindLabels, Counter>,
    /// Followers a leader on this host put back into an in-sync set, by kind.
    pub replica_isr_expands: Family<KindLabels, Counter>,
}

/// Labels for cluster gauges: `topics` or `queues`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `topics` or `queues`.
    pub kind: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut root = process_registry();
        let registry = root.sub_registry_with_prefix("ferry");
        let rpc = crate::service::rpc_metrics::RpcMetrics::register(registry);
        let metrics = Self {
            rpc,
            produce_messages: Family::default(),
            produce_bytes: Family::default(),
            fetch_messages: Family::default(),
            fetch_bytes: Family::default(),
            produce_latency_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            fsync_seconds: FsyncHistogram(Histogram::new(exponential_buckets(0.000_01, 2.0, 20))),
            log_end_offset: Family::default(),
            log_start_offset: Family::default(),
            log_size_bytes: Family::default(),
            log_lost_records: Family::default(),
            data_dir_free_bytes: Gauge::default(),
            data_dir_size_bytes: Gauge::default(),
            group_lag: Family::default(),
            request_errors: Family::default(),
            queue_messages: Family::default(),
            queue_oldest_age_seconds: Family::default(),
            replica_lag_messages: Family::default(),
            replica_sent_bytes: Family::default(),
            replica_lag_seconds: Family::default(),
            cluster_partitions_under_replicated: Family::default(),
            queue_consumers: Family::default(),
            queue_events: Family::default(),
            cluster_lease_live: Gauge::default(),
            cluster_controller: Gauge::default(),
            cluster_hosts_live: Gauge::default(),
            cluster_partitions_led: Family::default(),
            cluster_partitions_leaderless: Family::default(),
            principals: PrincipalMetrics::default(),
            tls_certificate_expiry: CertificateExpiry::default(),
            log_poisoned: Family::default(),
            queue_log_poisoned: Family::default(),
            replica_isr_shrinks: Family::default(),
            replica_isr_expands: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "produce_messages",
            "Records appended",
            metrics.produce_messages.clone(),
        );
        registry.register(
            "produce_bytes",
            "Record batch bytes appended",
            metrics.produce_bytes.clone(),
        );
        registry.register(
            "fetch_messages",
            "Records returned by fetches",
            metrics.fetch_messages.clone(),
        );
        registry.register(
            "fetch_bytes",
            "Record batch bytes returned by fetches",
            metrics.fetch_bytes.clone(),
        );
        registry.register(
            "produce_latency_seconds",
            "Time from receiving a produce batch to acknowledging it",
            metrics.produce_latency_seconds.clone(),
        );
        registry.register(
            "fsync_seconds",
            "Duration of one log fsync",
            metrics.fsync_seconds.0.clone(),
        );
        registry.register(
            "data_dir_free_bytes",
            "Bytes free on the data directory's file system (writes are refused when it is full)",
            metrics.data_dir_free_bytes.clone(),
        );
        registry.register(
            "data_dir_size_bytes",
            "Size of the data directory's file system",
            metrics.data_dir_size_bytes.clone(),
        );
        registry.register(
            "replica_sent_bytes",
            "Bytes of batches sent to followers, by transport (stream, grpc) and whether they \
             were sent from the segment file unread (located) or read and checked (read)",
            metrics.replica_sent_bytes.clone(),
        );
        registry.register(
            "log_lost_records",
            "Offsets lost to damage on disk since the partition was opened",
            metrics.log_lost_records.clone(),
        );
        registry.register(
            "log_end_offset",
            "Next offset to be written",
            metrics.log_end_offset.clone(),
        );
        registry.register(
            "log_start_offset",
            "First stored offset",
            metrics.log_start_offset.clone(),
        );
        registry.register(
            "log_size_bytes",
            "Bytes of the partition log on disk",
            metrics.log_size_bytes.clone(),
        );
        registry.register(
            "consumer_group_lag",
            "High watermark minus the committed offset",
            metrics.group_lag.clone(),
        );
        registry.register(
            "request_errors",
            "Failed requests by method and code",
            metrics.request_errors.clone(),
        );
        registry.register(
            "queue_messages",
            "Messages held by a queue, by state (visible, in_flight, delayed, dead_letter)",
            metrics.queue_messages.clone(),
        );
        registry.register(
            "queue_oldest_message_age_seconds",
            "Age of the oldest message in a queue",
            metrics.queue_oldest_age_seconds.clone(),
        );
        registry.register(
            "queue_consumers",
            "Consumers that received from a queue in the last minute",
            metrics.queue_consumers.clone(),
        );
        registry.register(
            "cluster_lease_live",
            "1 while this host's etcd lease holds by its own conservative deadline",
            metrics.cluster_lease_live.clone(),
        );
        registry.register(
            "cluster_controller",
            "1 while this host is its cluster's controller",
            metrics.cluster_controller.clone(),
        );
        registry.register(
            "cluster_hosts_live",
            "Hosts registered in the cluster, as this host sees them",
            metrics.cluster_hosts_live.clone(),
        );
        registry.register(
            "cluster_partitions_led",
            "Partitions this host leads",
            metrics.cluster_partitions_led.clone(),
        );
        registry.register(
            "replica_lag_messages",
            "Messages a follower is behind its leader, as the leader last saw it fetch",
            metrics.replica_lag_messages.clone(),
        );
        registry.register(
            "replica_lag_seconds",
            "Seconds since a follower last held everything its leader had",
            metrics.replica_lag_seconds.clone(),
        );
        registry.register(
            "cluster_partitions_under_replicated",
            "Partitions of the cluster whose in-sync set is smaller than their replicas",
            metrics.cluster_partitions_under_replicated.clone(),
        );
        registry.register(
            "cluster_partitions_leaderless",
            "Partitions of the cluster that have no leader",
            metrics.cluster_partitions_leaderless.clone(),
        );
        registry.register(
            "queue_events",
            "Queue message events since start: sent, received, acked, redelivered, dead_lettered, expired, deduplicated",
            metrics.queue_events.clone(),
        );
        registry.register(
            "principal_requests",
            "Requests by principal",
            metrics.principals.requests.clone(),
        );
        registry.register_with_unit(
            "principal_produce",
            "Bytes produced to topics and sent to queues, by principal",
            prometheus_client::registry::Unit::Bytes,
            metrics.principals.produce_bytes.clone(),
        );
        registry.register_with_unit(
            "principal_consume",
            "Bytes fetched from topics and received from queues, by principal",
            prometheus_client::registry::Unit::Bytes,
            metrics.principals.consume_bytes.clone(),
        );
        registry.register(
            "quota_throttled",
            "Requests refused for a quota, by principal and quota",
            metrics.principals.throttled.clone(),
        );
        metrics.tls_certificate_expiry.register(registry);
        registry.register(
            "log_poisoned",
            "1 while the partition's log refuses writes after a failed write or fsync",
            metrics.log_poisoned.clone(),
        );
        registry.register(
            "queue_log_poisoned",
            "1 while one of the queue's logs refuses writes after a failed write or fsync",
            metrics.queue_log_poisoned.clone(),
        );
        // From zero, so that the first change is an increase a rule can see.
        for kind in ["topics", "queues"] {
            let labels = KindLabels {
                kind: kind.to_owned(),
            };
            metrics.replica_isr_shrinks.get_or_create(&labels).inc_by(0);
            metrics.replica_isr_expands.get_or_create(&labels).inc_by(0);
        }
        registry.register(
            "replica_isr_shrinks",
            "Followers a leader on this host took out of an in-sync set",
            metrics.replica_isr_shrinks.clone(),
        );
        registry.register(
            "replica_isr_expands",
            "Followers a leader on this host put back into an in-sync set",
            metrics.replica_isr_expands.clone(),
        );
        Self {
            registry: root,
            ..metrics
        }
    }

    /// Renders the registry in the Prometheus text format.
    pub fn render(&self) -> String {
        self.tls_certificate_expiry.refresh();
        encode(&self.registry)
    }

    /// Counts an in-sync set change a leader here wrote: followers taken out and
    /// put back, for the partitions of `kind` (`topics`, `queues`).
    pub fn count_in_sync_change(&self, kind: &str, before: &[String], after: &[String]) {
        let labels = KindLabels {
            kind: kind.to_owned(),
        };
        let removed = before.iter().filter(|h| !after.contains(h)).count();
        let added = after.iter().filter(|h| !before.contains(h)).count();
        if removed > 0 {
            self.replica_isr_shrinks
                .get_or_create(&labels)
                .inc_by(removed as u64);
        }
        if added > 0 {
            self.replica_isr_expands
                .get_or_create(&labels)
                .inc_by(added as u64);
        }
    }
}

/// A registry with the standard `process_*` metrics; Ferry's own go in its `ferry`
/// sub-registry.
fn process_registry() -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ferry_telemetry::process_metrics::ProcessCollector));
    registry
}

/// `registry` in the Prometheus text format.
fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(%err, "encoding metrics failed");
    }
    out
}

/// What a gateway exports: the calls it answered (and forwarded), by method and code.
pub struct GatewayMetrics {
    registry: Registry,
    /// Calls to the gateway's gRPC server.
    pub rpc: crate::service::rpc_metrics::RpcMetrics,
    /// Not-after of the gateway's listener certificate.
    pub tls_certificate_expiry: CertificateExpiry,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = process_registry();
        let ferry = registry.sub_registry_with_prefix("ferry");
        let rpc = crate::service::rpc_metrics::RpcMetrics::register(ferry);
        let tls_certificate_expiry = CertificateExpiry::default();
        tls_certificate_expiry.register(ferry);
        Self {
            registry,
            rpc,
            tls_certificate_expiry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.tls_certificate_expiry.refresh();
        encode(&self.registry)
    }
}
