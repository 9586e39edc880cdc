//! The metrics endpoint of a host: `/metrics` refreshes the gauges read from the
//! broker's state (log ends, lag, queue depth, disk headroom, the cluster's view) and
//! renders the registry (`crate::metrics`, which knows nothing of the broker).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::tls::TlsListener;

use ferry_replication::LogKind;

use crate::broker::Broker;
use crate::metrics::{
    GroupLabels, KindLabels, PartitionLabels, QueueKindLabels, QueueLabels, ReplicaLabels,
};
use crate::replicated_log::{QUEUE_JOURNAL_LOG, QUEUE_MESSAGES_LOG};

/// Refreshes the gauges that are read from state rather than counted.
fn refresh_gauges(broker: &Broker) {
    let metrics = &broker.metrics;
    metrics.log_end_offset.clear();
    metrics.log_start_offset.clear();
    metrics.log_size_bytes.clear();
    metrics.log_lost_records.clear();
    metrics.log_poisoned.clear();
    metrics.replica_lag_messages.clear();
    metrics.replica_lag_seconds.clear();
    // The replication core's clock: follower catch-up times are on it.
    let now_ms = crate::clock::monotonic_ms();
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
            metrics
                .log_poisoned
                .get_or_create(&labels)
                .set(i64::from(log.failure().is_some()));
            for follower in partition.follower_lag() {
                let replica = ReplicaLabels {
                    topic: topic.name().to_owned(),
                    partition: partition.index(),
                    replica: follower.host,
                };
                if let Some(offset) = follower.fetch_offset {
                    metrics
                        .replica_lag_messages
                        .get_or_create(&replica)
                        .set(gauge(log.end_offset().saturating_sub(offset)));
                }
                if let Some(at_ms) = follower.caught_up_at_ms {
                    let seconds = now_ms.saturating_sub(at_ms) as f64 / 1000.0;
                    metrics
                        .replica_lag_seconds
                        .get_or_create(&replica)
                        .set(seconds);
                }
            }
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
    metrics.cluster_partitions_under_replicated.clear();
    for kind in [LogKind::Topic, LogKind::Queue] {
        let labels = KindLabels {
            kind: kind.as_str().to_owned(),
        };
        let states = view.partitions.iter().filter(|(key, _)| key.kind == kind);
        let (mut led, mut leaderless, mut under_replicated) = (0u64, 0u64, 0u64);
        for (_, (state, _)) in states {
            if state.isr.len() < state.replicas.len() {
                under_replicated += 1;
            }
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
        metrics
            .cluster_partitions_under_replicated
            .get_or_create(&labels)
            .set(gauge(under_replicated));
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
    metrics.queue_log_poisoned.clear();
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
        let poisoned = [QUEUE_MESSAGES_LOG, QUEUE_JOURNAL_LOG]
            .into_iter()
            .filter_map(|index| queue.replicated_log(index).ok())
            .any(|log| log.log().failure().is_some());
        metrics
            .queue_log_poisoned
            .get_or_create(&labels)
            .set(i64::from(poisoned));
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

/// Serves `/metrics`, `/health` (the process answers) and `/ready` (`ready` holds:
/// the host serves what it replicates) until `shutdown` resolves, over TLS when
/// `tls` is given. Kubernetes probes read the last two: the kubelet's gRPC probes
/// cannot speak TLS, its HTTP probes can.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<TlsListener>,
    broker: Arc<Broker>,
    ready: tokio::sync::watch::Receiver<bool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
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
        .route("/health", get(|| async { "ok" }))
        .route(
            "/ready",
            get(move || {
                let ready = *ready.borrow();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "catching up")
                    }
                }
            }),
        );
    serve_app(listener, tls, app, shutdown).await
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `shutdown`.
async fn serve_app(
    listener: tokio::net::TcpListener,
    tls: Option<TlsListener>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(tls) => {
            let local = listener.local_addr()?;
            let listener = TlsConnections {
                connections: tls.incoming(listener),
                local,
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// The TLS listener's finished handshakes, as axum takes connections.
struct TlsConnections {
    connections: ReceiverStream<std::io::Result<TlsStream<TcpStream>>>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsConnections {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (stream, peer);
                }
                Some(Err(_)) => continue,
                // The accept loop ended (it never does while the server runs).
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves `/metrics` (what `render` returns) and `/health` on `listener`, over TLS
/// when `tls` is given, until the task is dropped: for processes with no broker
/// behind them (the gateway).
pub async fn serve_rendered(
    listener: tokio::net::TcpListener,
    tls: Option<TlsListener>,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = render();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route("/health", get(|| async { "ok" }));
    serve_app(listener, tls, app, std::future::pending()).await
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
