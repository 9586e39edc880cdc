//! Cluster mode: one host of a broker cluster, with etcd as the metadata store,
//! registered under a lease, following the cluster's view, and campaigning for the
//! controller role.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::cluster::ClusterConfig;
use crate::cluster::controller::{Controller, ControllerContext};
use crate::cluster::materialize::Materializer;
use crate::cluster::membership::Membership;
use crate::cluster::observed::Publisher;
use crate::cluster::replication::Replicator;
use crate::cluster::routing::Routing;
use crate::cluster::view::ViewKeeper;
use crate::config::BrokerConfig;
use crate::meta::{EtcdConfig, EtcdStore, MetadataStore};
use crate::standalone::{BoundAddresses, Listeners, prepare_data_dir, serve_until};

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
}

/// Runs one cluster host until `shutdown` resolves; on the way out it gives up its
/// lease at once, so the cluster does not wait for it to expire.
pub async fn run(
    mut config: BrokerConfig,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(BoundAddresses),
) -> anyhow::Result<()> {
    let _lock = prepare_data_dir(&config)?;
    let listeners = Listeners::bind(&config).await?;
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
    config.host_id = options.host_id.clone();
    let mut cluster = ClusterConfig::with_lease_ttl(
        &options.cluster,
        &options.host_id,
        &advertise,
        options.lease_ttl,
    );
    cluster.host_grace = options.host_grace;
    cluster.observed_interval = options.observed_interval;
    cluster.validate()?;
    let store = EtcdStore::connect(options.etcd.clone()).await?;
    let client = store.client();
    let meta: Arc<dyn MetadataStore> = Arc::new(store);
    // Before registering: a new or wiped disk must not stay in any in-sync set.
    crate::cluster::disk::claim(
        meta.as_ref(),
        &cluster.cluster,
        &cluster.host_id,
        &config.data_dir,
    )
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
    let membership = Membership::start(client.clone(), cluster.clone());
    let view = ViewKeeper::start(
        Arc::clone(&meta),
        cluster.cluster.clone(),
        cluster.retry_pause,
    );
    let controller = Controller::start(ControllerContext {
        client,
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
    let materializer = Materializer::start(Arc::clone(&broker), cluster.retry_pause);
    let replicator = Replicator::start(
        Arc::clone(&broker),
        routing.clone(),
        Arc::clone(&meta),
        cluster.retry_pause,
    );
    let publisher = Publisher::start(
        Arc::clone(&broker),
        routing,
        meta,
        options.observed_interval,
    );
    let served = serve_until(broker, listeners, shutdown, on_ready).await;
    drop(publisher);
    drop(replicator);
    drop(materializer);
    drop(controller);
    membership.leave().await;
    drop(view);
    served
}
