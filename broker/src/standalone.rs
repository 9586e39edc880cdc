//! Standalone mode: one host, the embedded metadata store, everything under one
//! data directory.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::disk_pressure::DiskPressure;
use crate::tls::{HostDialing, Protocol, TlsListener};
use tokio::sync::watch;

use crate::access::authn::Authenticator;
use crate::access::quota::{QuotaTable, Quotas};
use crate::access::{AccessControl, AccessRules};
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::meta::{EmbeddedConfig, EmbeddedStore};
use crate::service::Security;

/// Addresses a started broker actually listens on (ports may have been 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddresses {
    /// gRPC.
    pub grpc: SocketAddr,
    /// Prometheus metrics, if enabled.
    pub metrics: Option<SocketAddr>,
}

/// Runs a standalone broker until `shutdown` resolves, then stops gracefully:
/// refuse new writes, let in-flight requests finish (up to the grace period),
/// flush and close every log.
///
/// `on_ready` is called once the listeners are bound.
pub async fn run(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(BoundAddresses),
) -> anyhow::Result<()> {
    let _lock = prepare_data_dir(&config)?;
    let meta = EmbeddedStore::open(&EmbeddedConfig {
        path: EmbeddedStore::default_path(&config.data_dir),
        watch_buffer: config.metadata_watch_buffer,
    })?;
    let listeners = Listeners::bind(&config).await?;
    let broker = Broker::open(config, Arc::new(meta), None).await?;
    // One host with nothing to catch up with: ready once it serves.
    let (_ready, ready_rx) = watch::channel(true);
    let (security, _security_tasks) = start_security(&broker, &listeners);
    serve_until(broker, listeners, security, ready_rx, shutdown, on_ready).await
}

/// Validates the configuration, creates the data directory and locks it; keep the
/// returned file open for as long as the broker runs.
pub(crate) fn prepare_data_dir(config: &BrokerConfig) -> anyhow::Result<File> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    lock_data_dir(&config.data_dir)
}

/// The bound gRPC and metrics listeners, the gRPC listener's TLS and how this host
/// dials others.
pub(crate) struct Listeners {
    grpc: TcpListener,
    metrics: Option<TcpListener>,
    tls: Option<TlsListener>,
    metrics_tls: Option<TlsListener>,
    /// How the gRPC listener authenticates callers.
    authn: Arc<Authenticator>,
    /// How this host opens channels to other hosts (cluster mode sets it).
    pub(crate) dialing: HostDialing,
}

impl Listeners {
    /// Binds the addresses the configuration names and reads the listener's TLS and
    /// authentication files: a missing or unusable file stops the start here.
    pub(crate) async fn bind(config: &BrokerConfig) -> anyhow::Result<Self> {
        let authn = Authenticator::load(config.client_authentication())
            .context("authentication of the gRPC listener")?;
        let tls = config
            .tls
            .clone()
            .map(TlsListener::load)
            .transpose()
            .context("the gRPC listener's TLS")?;
        let metrics_tls = match (&config.tls, config.metrics_tls) {
            (Some(tls), true) => Some(
                TlsListener::load_for(tls.clone(), Protocol::Http1)
                    .context("the metrics listener's TLS")?,
            ),
            _ => None,
        };
        let grpc = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(
                crate::host::metrics_endpoint::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for metrics on {addr}"))?,
            ),
            None => None,
        };
        Ok(Self {
            grpc,
            metrics,
            tls,
            metrics_tls,
            authn: Arc::new(authn),
            dialing: HostDialing::plaintext(),
        })
    }

    /// The addresses actually bound.
    pub(crate) fn bound(&self) -> anyhow::Result<BoundAddresses> {
        Ok(BoundAddresses {
            grpc: self.grpc.local_addr()?,
            metrics: self.metrics.as_ref().and_then(|l| l.local_addr().ok()),
        })
    }
}

/// The background work behind a host's [`Security`]: following the access rules in
/// the metadata store and re-reading authentication files. Stops when dropped.
pub(crate) struct SecurityTasks {
    rules: tokio::task::JoinHandle<()>,
    quotas: tokio::task::JoinHandle<()>,
    reloader: tokio::task::JoinHandle<()>,
}

impl Drop for SecurityTasks {
    fn drop(&mut self) {
        self.rules.abort();
        self.quotas.abort();
        self.reloader.abort();
    }
}

/// The host's security: the gRPC listener's authenticator, and access decisions
/// against the rules the metadata store holds (followed from now on).
pub(crate) fn start_security(broker: &Broker, listeners: &Listeners) -> (Security, SecurityTasks) {
    let (rules_tx, rules_rx) = watch::channel(Arc::new(AccessRules::default()));
    let (quotas_tx, quotas_rx) = watch::channel(Arc::new(QuotaTable::default()));
    let tasks = SecurityTasks {
        rules: tokio::spawn(crate::access::rules::follow(
            Arc::clone(&broker.meta),
            rules_tx,
        )),
        quotas: tokio::spawn(crate::access::quota::follow(
            Arc::clone(&broker.meta),
            quotas_tx,
        )),
        reloader: listeners.authn.spawn_reloader(),
    };
    let security = Security {
        authn: Arc::clone(&listeners.authn),
        access: AccessControl::new(broker.config.authorization.clone(), rules_rx),
        quotas: Quotas::new(quotas_rx, Some(broker.metrics.principals.clone())),
    };
    (security, tasks)
}

/// Serves `broker` on `listeners` until `shutdown` resolves, then stops gracefully;
/// the readiness probe follows `ready`.
pub(crate) async fn serve_until(
    broker: Arc<Broker>,
    listeners: Listeners,
    security: Security,
    ready: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(BoundAddresses),
) -> anyhow::Result<()> {
    let bound = listeners.bound()?;
    tracing::info!(
        grpc = %bound.grpc,
        tls = listeners.tls.is_some(),
        authentication = listeners.authn.required(),
        authorization = broker.config.authorization.enforced,
        metrics = %bound.metrics.map_or_else(|| "off".to_owned(), |addr| addr.to_string()),
        data_dir = %broker.config.data_dir.display(),
        "ferry broker ready"
    );
    on_ready(bound);

    let (stop_tx, stop_rx) = watch::channel(false);
    let background = spawn_background(Arc::clone(&broker), stop_rx.clone());
    let metrics_task = listeners.metrics.map(|listener| {
        tokio::spawn(crate::host::metrics_endpoint::serve(
            listener,
            listeners.metrics_tls,
            Arc::clone(&broker),
            ready.clone(),
            wait_true(stop_rx.clone()),
        ))
    });
    let grpc = tokio::spawn(crate::service::serve(
        Arc::clone(&broker),
        listeners.grpc,
        listeners.tls,
        listeners.dialing,
        security,
        ready,
        wait_true(stop_rx.clone()),
    ));

    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    broker.begin_shutdown();
    let _ = stop_tx.send(true);
    let grace = Duration::from_millis(broker.config.shutdown_grace_ms);
    match tokio::time::timeout(grace, grpc).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(%err, "gRPC server stopped with an error"),
        Ok(Err(err)) => tracing::warn!(%err, "gRPC server task failed"),
        Err(_) => tracing::warn!("in-flight requests did not finish within the grace period"),
    }
    background.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    broker.topics.close_all().await;
    broker.queues.close_all().await;
    tracing::info!("ferry broker stopped");
    Ok(())
}

/// Holds an exclusive lock on the data directory so two brokers never share it.
/// Locks the data directory for this process (the lock goes with the returned file).
pub(crate) fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<File> {
    let path = data_dir.join("LOCK");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.try_lock().map_err(|err| {
        anyhow::anyhow!(
            "data directory {} is in use by another broker ({err})",
            data_dir.display()
        )
    })?;
    Ok(file)
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Retention and group-expiry tickers.
fn spawn_background(
    broker: Arc<Broker>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut retention = tokio::time::interval(Duration::from_millis(
            broker.config.retention_check_interval_ms,
        ));
        let mut expiry = tokio::time::interval(Duration::from_millis(
            broker.config.group_expiry_check_interval_ms,
        ));
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut disk = DiskPressure::new(broker.config.disk_warn_free_percent);
        let stopped = wait_true(stop);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = retention.tick() => {
                    broker.topics.enforce_retention().await;
                    disk.check(&broker.config.data_dir);
                }
                _ = expiry.tick() => broker.expire_members(),
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed by this call, not when
/// the future is first polled: a host that has said it is ready must already stop
/// gracefully on SIGTERM (before, one that got it at once died of the signal). Call it
/// inside a tokio runtime.
pub fn termination_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match handlers {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
