//! Prometheus metrics and the HTTP endpoint that serves them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_storage::SyncObserver;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::broker::Broker;
use ferry_replication::LogKind;

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

/// Labels naming a queue and a message state or event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueKindLabels {
    /// Queue name.
    pub queue: String,
    /// `visible`, `in_flight`, … for depth; `sent`, `acked`, … for events.
    pub kind: &'static str,
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
        let mut registry = Registry::with_prefix("ferry");
        let metrics = Self {
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
            queue_consumers: Family::default(),
            queue_events: Family::default(),
            cluster_lease_live: Gauge::default(),
            cluster_controller: Gauge::default(),
            cluster_hosts_live: Gauge::default(),
            cluster_partitions_led: Family::default(),
            cluster_partitions_leaderless: Family::default(),
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
            "cluster_partitions_leaderless",
            "Partitions of the cluster that have no leader",
            metrics.cluster_partitions_leaderless.clone(),
        );
        registry.register(
            "queue_events",
            "Queue message events since start: sent, received, acked, redelivered, dead_lettered, expired, deduplicated",
            metrics.queue_events.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Renders the registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%err, "encoding metrics failed");
        }
        out
    }
}

/// Refreshes the gauges that are read from state rather than counted.
fn refresh_gauges(broker: &Broker) {
    let metrics = &broker.metrics;
    metrics.log_end_offset.clear();
    metrics.log_start_offset.clear();
    metrics.log_size_bytes.clear();
    metrics.log_lost_records.clear();
    match rustix::fs::statvfs(&broker.config.data_dir) {
        Ok(fs) => {
            let block = fs.f_frsize;
            metrics
                .data_dir_free_bytes
                .set(gauge(fs.f_bavail.saturating_mul(block)));
            metrics
                .data_dir_size_bytes
                .set(gauge(fs.f_blocks.saturating_mul(block)));
        }
        Err(err) => tracing::warn!(%err, "cannot read the data directory's free space"),
    }
    metrics.group_lag.clear();
    for topic in broker.topics.list() {
        for partition in &topic.partitions {
            let labels = PartitionLabels {
                topic: topic.name().to_owned(),
                partition: partition.index(),
            };
            let log = partition.log();
            metrics
                .log_end_offset
                .get_or_create(&labels)
                .set(gauge(log.end_offset()));
            metrics
                .log_start_offset
                .get_or_create(&labels)
                .set(gauge(log.start_offset()));
            metrics
                .log_size_bytes
                .get_or_create(&labels)
                .set(gauge(log.size_bytes()));
            let lost: u64 = log
                .lost_records()
                .unwrap_or_default()
                .iter()
                .map(|l| l.to_offset - l.from_offset)
                .sum();
            metrics
                .log_lost_records
                .get_or_create(&labels)
                .set(gauge(lost));
        }
    }
    for ((group, topic, partition), committed) in broker.offsets.all() {
        let Ok(found) = broker.topics.get(&topic) else {
            continue;
        };
        let Ok(p) = found.partition(partition) else {
            continue;
        };
        let lag = p.high_watermark().saturating_sub(committed);
        let labels = GroupLabels {
            group,
            topic,
            partition,
        };
        metrics.group_lag.get_or_create(&labels).set(gauge(lag));
    }
    refresh_queue_metrics(broker);
    refresh_cluster_metrics(broker);
}

/// Sets the cluster gauges from the host's view (nothing on a standalone host).
fn refresh_cluster_metrics(broker: &Broker) {
    let Some(routing) = &broker.routing else {
        return;
    };
    let metrics = &broker.metrics;
    let view = routing.view();
    metrics
        .cluster_lease_live
        .set(i64::from(routing.lease_live()));
    let controller = view
        .controller
        .as_ref()
        .is_some_and(|(record, _)| record.host_id == routing.host_id());
    metrics.cluster_controller.set(i64::from(controller));
    metrics
        .cluster_hosts_live
        .set(gauge(view.hosts.len() as u64));
    metrics.cluster_partitions_led.clear();
    metrics.cluster_partitions_leaderless.clear();
    for kind in [LogKind::Topic, LogKind::Queue] {
        let labels = KindLabels {
            kind: kind.as_str().to_owned(),
        };
        let states = view.partitions.iter().filter(|(key, _)| key.kind == kind);
        let (mut led, mut leaderless) = (0u64, 0u64);
        for (_, (state, _)) in states {
            match state.leader.as_deref() {
                Some(leader) if leader == routing.host_id() => led += 1,
                Some(_) => {}
                None => leaderless += 1,
            }
        }
        metrics
            .cluster_partitions_led
            .get_or_create(&labels)
            .set(gauge(led));
        metrics
            .cluster_partitions_leaderless
            .get_or_create(&labels)
            .set(gauge(leaderless));
    }
}

/// Sets the per-queue metrics from each queue's state. Counters are re-created from
/// the queue's own totals, so a deleted and re-created queue reads as a counter reset.
fn refresh_queue_metrics(broker: &Broker) {
    let metrics = &broker.metrics;
    metrics.queue_messages.clear();
    metrics.queue_oldest_age_seconds.clear();
    metrics.queue_consumers.clear();
    metrics.queue_events.clear();
    let now = crate::clock::now_ms();
    for queue in broker.queues.list() {
        let stats = queue.stats(now);
        let name = queue.name().to_owned();
        let depth = [
            ("visible", stats.depth.visible),
            ("in_flight", stats.depth.in_flight),
            ("delayed", stats.depth.delayed),
            ("dead_letter", stats.depth.dead_letter),
        ];
        for (kind, value) in depth {
            metrics
                .queue_messages
                .get_or_create(&QueueKindLabels {
                    queue: name.clone(),
                    kind,
                })
                .set(gauge(value));
        }
        let events = [
            ("sent", stats.sent),
            ("received", stats.received),
            ("acked", stats.acked),
            ("redelivered", stats.redelivered),
            ("dead_lettered", stats.dead_lettered),
            ("expired", stats.expired),
            ("deduplicated", stats.deduplicated),
        ];
        for (kind, value) in events {
            metrics
                .queue_events
                .get_or_create(&QueueKindLabels {
                    queue: name.clone(),
                    kind,
                })
                .inc_by(value);
        }
        let labels = QueueLabels { queue: name };
        metrics
            .queue_oldest_age_seconds
            .get_or_create(&labels)
            .set(stats.oldest_age_ms as f64 / 1000.0);
        metrics
            .queue_consumers
            .get_or_create(&labels)
            .set(i64::from(stats.consumers));
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Serves `/metrics` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let broker = Arc::clone(&broker);
                async move {
                    refresh_gauges(&broker);
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        broker.metrics.render(),
                    )
                }
            }),
        )
        .route("/health", get(|| async { "ok" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
