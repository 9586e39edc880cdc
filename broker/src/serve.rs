//! Cluster mode: one host of a broker cluster, with etcd as the metadata store,
//! registered under a lease, following the cluster's view, and campaigning for the
//! controller role.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::cluster::ClusterConfig;
use crate::cluster::controller::{Controller, ControllerContext};
use crate::cluster::membership::Membership;
use crate::cluster::routing::Routing;
use crate::cluster::view::ViewKeeper;
use crate::config::BrokerConfig;
use crate::host::materialize::Materializer;
use crate::host::observed::Publisher;
use crate::host::replication::Replicator;
use crate::meta::{EtcdConfig, EtcdStore, MetadataStore};
use crate::standalone::{BoundAddresses, Listeners, prepare_data_dir, serve_until, start_security};
use crate::tls::{DialingTlsFiles, HostDialing, ListenerRole, ListenerTls, TlsListener};

/// What cluster mode adds to a broker's configuration.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The broker cluster to join.
    pub cluster: String,
    /// This host's id in it.
    pub host_id: String,
    /// How to reach etcd.
    pub etcd: EtcdConfig,
    /// The host's lease TTL.
    pub lease_ttl: Duration,
    /// How long a host may be gone before its replicas move.
    pub host_grace: Duration,
    /// How often leaders publish observed state to etcd.
    pub observed_interval: Duration,
    /// Longest a starting host reports not ready while it catches up.
    pub ready_max_wait: Duration,
    /// The failure domain the host runs in, if known.
    pub zone: Option<String>,
    /// The listener other hosts reach this one on.
    pub peer: PeerOptions,
}

/// The peer listener: replica fetches and group requests passed on between hosts.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Where it listens; port 0 picks a free one (peers learn it from etcd).
    pub listen: SocketAddr,
    /// The address peers dial; default: the client address's host with the bound port.
    pub advertise: Option<String>,
    /// Mutual TLS: the listener's certificate and key, and the CA whose certificates
    /// it accepts and checks peers' listeners against. The same certificate is
    /// presented when dialling peers.
    pub tls: Option<PeerTls>,
}

/// The peer listener's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    /// The listener's certificate, key and the peer CA (required: peers are known).
    pub listener: ListenerTls,
    /// The peer CA, also used to check the peers this host dials.
    pub ca: PathBuf,
}

/// How long the peer listener may take to finish its requests at shutdown (replica
/// fetches wait at most their long-poll time).
const PEER_STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs one cluster host until `shutdown` resolves; on the way out it gives up its
/// lease at once, so the cluster does not wait for it to expire.
pub async fn run(
    mut config: BrokerConfig,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(BoundAddresses),
) -> anyhow::Result<()> {
    let _lock = prepare_data_dir(&config)?;
    if !config.insecure {
        // Peers are known by the peer CA: mutual TLS is the peer listener's protection.
        crate::config::exposed_listener("peer", options.peer.listen, options.peer.tls.is_some())?;
    }
    let mut listeners = Listeners::bind(&config).await?;
    let peer_listener = TcpListener::bind(options.peer.listen)
        .await
        .with_context(|| format!("cannot listen for peers on {}", options.peer.listen))?;
    let peer_tls = options
        .peer
        .tls
        .as_ref()
        .map(|tls| TlsListener::load_as(tls.listener.clone(), ListenerRole::Peer))
        .transpose()
        .context("the peer listener's TLS")?;
    listeners.dialing = match &options.peer.tls {
        Some(tls) => HostDialing::tls(&DialingTlsFiles {
            ca: tls.ca.clone(),
            identity: Some((
                tls.listener.files.cert.clone(),
                tls.listener.files.key.clone(),
            )),
            reload_interval: tls.listener.reload_interval,
        })
        .context("TLS to peers")?,
        None => HostDialing::plaintext(),
    };
    let advertise = match &config.advertise {
        Some(advertise) => advertise.clone(),
        None => {
            let bound = listeners.bound()?.grpc;
            if bound.ip().is_unspecified() {
                anyhow::bail!(
                    "listening on {bound}: pass --advertise with an address other hosts and \
                     clients can reach"
                );
            }
            bound.to_string()
        }
    };
    config.advertise = Some(advertise.clone());
    let peer_advertise = match &options.peer.advertise {
        Some(peer) => peer.clone(),
        None => {
            let port = peer_listener.local_addr()?.port();
            let host = advertise
                .rsplit_once(':')
                .map_or(advertise.as_str(), |(host, _)| host);
            format!("{host}:{port}")
        }
    };
    config.host_id = options.host_id.clone();
    let mut cluster = ClusterConfig::with_lease_ttl(
        &options.cluster,
        &options.host_id,
        &advertise,
        options.lease_ttl,
    );
    cluster.host_grace = options.host_grace;
    cluster.zone = options.zone.clone();
    cluster.peer_advertise = Some(peer_advertise.clone());
    cluster.observed_interval = options.observed_interval;
    cluster.validate()?;
    let store = EtcdStore::connect(options.etcd.clone()).await?;
    let etcd = store.connection();
    let meta: Arc<dyn MetadataStore> = Arc::new(store);
    // Before registering: a new or wiped disk must not stay in any in-sync set.
    crate::cluster::disk::claim(
        meta.as_ref(),
        &cluster.cluster,
        &cluster.host_id,
        &config.data_dir,
    )
    .await?;
    // Before registering: etcd must still hold the cluster this data belongs to.
    let identity =
        crate::cluster::disk::check_identity(meta.as_ref(), &cluster.cluster, &config.data_dir)
            .await?;
    // Before registering: a host whose logs lost records to damage must not stay in an
    // in-sync set another replica shares (it could be elected over a whole copy).
    crate::cluster::disk::leave_if_damaged(
        meta.as_ref(),
        &cluster.cluster,
        &cluster.host_id,
        &config.data_dir,
    )
    .await?;
    // Before registering: leaderships held before this start are given up, so none is
    // resumed in an epoch whose unsynced writes a power loss may have taken.
    crate::cluster::disk::resign_leaderships(meta.as_ref(), &cluster.cluster, &cluster.host_id)
        .await?;
    let membership = Membership::start(etcd.clone(), cluster.clone());
    let view = ViewKeeper::start(
        Arc::clone(&meta),
        cluster.cluster.clone(),
        cluster.retry_pause,
    );
    let controller = Controller::start(ControllerContext {
        etcd,
        meta: Arc::clone(&meta),
        config: cluster.clone(),
        lease: membership.status(),
        view: view.view(),
    });
    let routing = Routing::new(
        cluster.cluster.clone(),
        cluster.host_id.clone(),
        view.view(),
        membership.status(),
    );
    let broker = Broker::open(config, Arc::clone(&meta), Some(routing.clone())).await?;
    let (security, _security_tasks) = start_security(&broker, &listeners);
    let (peers_stop, peers_stopping) = tokio::sync::watch::channel(false);
    let peer_server = tokio::spawn(crate::service::serve_peers(
        Arc::clone(&broker),
        peer_listener,
        peer_tls,
        listeners.dialing.clone(),
        security.clone(),
        async move {
            let mut stopping = peers_stopping;
            let _ = stopping.wait_for(|stop| *stop).await;
        },
    ));
    tracing::info!(peers = %peer_advertise, tls = options.peer.tls.is_some(), "peer listener ready");
    let materializer = Materializer::start(Arc::clone(&broker), cluster.retry_pause);
    let replicator = Replicator::start(
        Arc::clone(&broker),
        routing.clone(),
        Arc::clone(&meta),
        cluster.retry_pause,
        listeners.dialing.clone(),
    );
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let readiness = tokio::spawn(crate::host::readiness::become_ready(
        routing.clone(),
        options.ready_max_wait,
        ready_tx,
    ));
    let publisher = Publisher::start(
        Arc::clone(&broker),
        routing,
        meta,
        options.observed_interval,
    );
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
    let guard = tokio::spawn(guard_identity(view.view(), identity, lost_tx));
    let metadata_lost = Arc::new(std::sync::Mutex::new(None));
    let noticed = Arc::clone(&metadata_lost);
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            lost = lost_rx => {
                if let Ok(why) = lost
                    && let Ok(mut slot) = noticed.lock()
                {
                    *slot = Some(why);
                }
            }
        }
    };
    let served = serve_until(broker, listeners, security, ready, shutdown, on_ready).await;
    let _ = peers_stop.send(true);
    match tokio::time::timeout(PEER_STOP_GRACE, peer_server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(%err, "the peer listener stopped with an error"),
        Ok(Err(err)) => tracing::warn!(%err, "the peer listener's task failed"),
        Err(_) => tracing::warn!("the peer listener did not stop within {PEER_STOP_GRACE:?}"),
    }
    guard.abort();
    readiness.abort();
    drop(publisher);
    drop(replicator);
    drop(materializer);
    drop(controller);
    membership.leave().await;
    drop(view);
    if let Some(why) = metadata_lost.lock().ok().and_then(|mut slot| slot.take()) {
        anyhow::bail!(why);
    }
    served
}

/// Watches the cluster view and reports (once) when etcd no longer holds the cluster's
/// identity: etcd lost the cluster (wiped or replaced). The host then stops serving —
/// nothing more is acknowledged and nothing is deleted — and refuses to start again
/// until the metadata is rebuilt.
async fn guard_identity(
    mut view: tokio::sync::watch::Receiver<Arc<crate::cluster::view::ClusterView>>,
    identity: u64,
    lost: tokio::sync::oneshot::Sender<String>,
) {
    // The first value is the empty view from before the first full read.
    while view.changed().await.is_ok() {
        let seen = view.borrow_and_update().identity;
        if let ferry_replication::identity::IdentityCheck::Refuse { .. } =
            ferry_replication::identity::check(Some(identity), seen)
        {
            let why = format!(
                "etcd no longer holds this cluster (identity {identity}, now {}): etcd lost the \
                 cluster's metadata; stopping without deleting anything. Rebuild it with \
                 `ferry-broker metadata rebuild` (docs/cluster.md)",
                seen.map_or_else(|| "none".to_owned(), |s| s.to_string())
            );
            tracing::error!("{why}");
            let _ = lost.send(why);
            return;
        }
    }
}
