//! The gRPC service edge: the only code that sees protobuf types. It converts them to
//! domain types, calls the broker, and maps errors through [`status`].

mod admin;
pub mod auth;
mod convert;
mod group;
mod metadata;
pub mod peers;
mod queue;
mod replica;
mod replica_leader;
pub mod rpc_metrics;
pub mod status;
mod topic;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::internal::v1::replica_service_server::ReplicaServiceServer;
use ferry_proto::v1::access_service_server::AccessServiceServer;
use ferry_proto::v1::admin_service_server::AdminServiceServer;
use ferry_proto::v1::group_service_server::GroupServiceServer;
use ferry_proto::v1::metadata_service_server::MetadataServiceServer;
use ferry_proto::v1::queue_service_server::QueueServiceServer;
use ferry_proto::v1::topic_service_server::TopicServiceServer;
use ferry_telemetry::rpc::RpcTraceLayer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::access::AccessControl;
use crate::access::authn::Authenticator;
use crate::access::quota::Quotas;
use crate::broker::Broker;
use crate::http2;
use crate::tls::{HostDialing, TlsListener};

pub use admin::AdminApi;
pub use auth::{AccessApi, Authenticate, FromPeer, Guard};
pub use group::GroupApi;
pub use metadata::MetadataApi;
pub(crate) use metadata::add_observed;
pub use queue::QueueApi;
pub use replica::ReplicaApi;
pub use topic::TopicApi;

/// The gRPC health "service" a readiness probe asks about: serving once the host is
/// ready for traffic (a cluster host: caught up, see `host::readiness`). The empty
/// name, for liveness, is serving while the server runs.
pub const READY_HEALTH_SERVICE: &str = "ferry.ready";

/// HTTP/2 keepalive ping period, so dead clients are noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How the client listener checks its callers: who they are, what they may do.
#[derive(Debug, Clone)]
pub struct Security {
    /// Authentication of every request (health and reflection excepted).
    pub authn: Arc<Authenticator>,
    /// The access decision every service asks.
    pub access: AccessControl,
    /// Per-principal quotas.
    pub quotas: Quotas,
}

impl Security {
    /// Nobody authenticated, everything allowed: a listener without security.
    pub fn open() -> Self {
        Self {
            authn: Arc::new(Authenticator::none()),
            access: AccessControl::open(),
            quotas: Quotas::none(),
        }
    }
}

/// Serves the client API (plus health and reflection) until `shutdown` resolves;
/// then stops accepting and waits for in-flight requests to finish.
/// [`READY_HEALTH_SERVICE`] follows `ready`. Group requests for a group another host
/// coordinates are passed on to it as `dialing` says. Every API request is
/// authenticated and authorized as `security` says; health and reflection are open
/// (probes carry no credentials).
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    tls: Option<TlsListener>,
    dialing: HostDialing,
    security: Security,
    ready: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limit = broker.config.limits.max_request_bytes as usize;
    let guard = Guard::new(
        Arc::clone(&broker),
        security.access.clone(),
        security.quotas.clone(),
    );
    let authenticate = Authenticate {
        authn: Arc::clone(&security.authn),
        quotas: security.quotas.clone(),
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let readiness = tokio::spawn(report_readiness(health_reporter.clone(), ready));
    health_reporter
        .set_serving::<TopicServiceServer<TopicApi>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<AdminApi>>()
        .await;
    health_reporter
        .set_serving::<GroupServiceServer<GroupApi>>()
        .await;
    health_reporter
        .set_serving::<MetadataServiceServer<MetadataApi>>()
        .await;
    health_reporter
        .set_serving::<QueueServiceServer<QueueApi>>()
        .await;
    health_reporter
        .set_serving::<AccessServiceServer<AccessApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(ferry_proto::ERROR_DETAILS_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|err| {
            tracing::error!(%err, "reflection service could not be built");
            err
        });
    let router = http2::server(&broker.config.http2)
        .layer(broker.metrics.rpc.layer())
        .layer(RpcTraceLayer::server())
        .concurrency_limit_per_connection(
            broker.config.limits.max_concurrent_requests_per_connection as usize,
        )
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(health_service);
    let mut router = add_client_services(
        router,
        &broker,
        &guard,
        [authenticate.clone(), authenticate],
        dialing,
        limit,
    );
    if let Ok(reflection) = reflection {
        router = router.add_service(reflection);
    }
    let served = serve_router(router, listener, tls, shutdown).await;
    readiness.abort();
    served
}

/// Serves what only other hosts of the cluster and gateways call — replica fetches and
/// snapshots, group requests passed on, and client requests a gateway forwards with
/// its caller's identity — on the peer listener, until `shutdown` resolves. The client
/// listener does not serve `ReplicaService`: it hands out any partition's stored
/// batches, so only peers may reach it (with mutual TLS, peers holding a certificate
/// from the peer CA). A forwarded identity is believed here only: on the client
/// listener the same headers mean nothing. Forwarded requests are checked by
/// `security`'s access rules and quotas like the client listener's (its
/// authenticator is not used: peers are known by the listener's TLS).
pub async fn serve_peers(
    broker: Arc<Broker>,
    listener: TcpListener,
    tls: Option<TlsListener>,
    dialing: HostDialing,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limit = broker.config.limits.max_request_bytes as usize;
    let guard = Guard::new(
        Arc::clone(&broker),
        security.access.clone(),
        security.quotas.clone(),
    );
    let router = http2::server(&broker.config.http2)
        .layer(broker.metrics.rpc.layer())
        // Calls a gateway or a host forwards carry their trace; replica fetches,
        // a follower's steady polling, start none.
        .layer(RpcTraceLayer::server().inside_traces_only())
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(
            ReplicaServiceServer::new(ReplicaApi::new(Arc::clone(&broker)))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        );
    let router = add_client_services(
        router,
        &broker,
        &guard,
        [
            FromPeer {
                own_requests: false,
                quotas: security.quotas.clone(),
            },
            FromPeer {
                own_requests: true,
                quotas: security.quotas,
            },
        ],
        dialing,
        limit,
    );
    if tls.is_some() {
        return serve_router(router, listener, tls, shutdown).await;
    }
    // Plaintext: replica streams are told from HTTP/2 by their first byte.
    let (stop, stopped) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let (to_grpc, incoming) = tokio::sync::mpsc::channel(64);
    tokio::spawn(replica_leader::sort_peer_connections(
        broker, listener, to_grpc, stopped,
    ));
    router
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(incoming),
            shutdown,
        )
        .await
}

/// Adds every client service to `router`, each request first through an interceptor
/// that establishes the caller (`[others, groups]`: group requests may differ) and
/// then checked by `guard`.
fn add_client_services<I>(
    router: MeteredRouter,
    broker: &Arc<Broker>,
    guard: &Guard,
    [interceptor, group_interceptor]: [I; 2],
    dialing: HostDialing,
    limit: usize,
) -> MeteredRouter
where
    I: tonic::service::Interceptor + Clone + Send + Sync + 'static,
{
    router
        .add_service(InterceptedService::new(
            TopicServiceServer::new(TopicApi::new(Arc::clone(broker), guard.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
            interceptor.clone(),
        ))
        .add_service(InterceptedService::new(
            AdminServiceServer::new(AdminApi::new(Arc::clone(broker), guard.clone()))
                .max_decoding_message_size(limit),
            interceptor.clone(),
        ))
        .add_service(InterceptedService::new(
            GroupServiceServer::new(GroupApi::new(Arc::clone(broker), guard.clone(), dialing))
                .max_decoding_message_size(limit),
            group_interceptor,
        ))
        .add_service(InterceptedService::new(
            MetadataServiceServer::new(MetadataApi::new(Arc::clone(broker), guard.clone()))
                .max_decoding_message_size(limit),
            interceptor.clone(),
        ))
        .add_service(InterceptedService::new(
            QueueServiceServer::new(QueueApi::new(Arc::clone(broker), guard.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
            interceptor.clone(),
        ))
        .add_service(InterceptedService::new(
            AccessServiceServer::new(AccessApi::new(Arc::clone(broker), guard.clone()))
                .max_decoding_message_size(limit),
            interceptor,
        ))
}

/// A server router whose calls [`rpc_metrics`] counts and whose calls get spans.
pub(crate) type MeteredRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<
        RpcTraceLayer,
        tower::layer::util::Stack<rpc_metrics::RpcMetricsLayer, tower::layer::util::Identity>,
    >,
>;

/// Runs `router` on `listener`, over TLS when `tls` is given, until `shutdown`.
pub(crate) async fn serve_router(
    router: MeteredRouter,
    listener: TcpListener,
    tls: Option<TlsListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
                .await
        }
        None => {
            // Small responses (a long poll answering one record) must not wait for
            // Nagle's algorithm and the peer's delayed ACK: that alone costs 40 ms per
            // response. The builder's tcp_nodelay only covers listeners tonic binds.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

/// Keeps [`READY_HEALTH_SERVICE`]'s status in step with `ready`.
async fn report_readiness(reporter: HealthReporter, mut ready: watch::Receiver<bool>) {
    loop {
        let status = if *ready.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter
            .set_service_status(READY_HEALTH_SERVICE, status)
            .await;
        if ready.changed().await.is_err() {
            return;
        }
    }
}
