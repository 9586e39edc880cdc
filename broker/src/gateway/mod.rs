//! `ferry-broker gateway`: the stateless front end (seed 000). It serves the same
//! gRPC API as a host, finds the cluster and host that serve each request from the
//! etcd mapping (topic and queue records, cluster views; cached and kept current by
//! a watch) and forwards it there, retrying while a leader moves. Clients need only
//! its address; several gateways can run side by side, since they keep no state of
//! their own.

pub mod api;
pub mod directory;
pub mod forward;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry_proto::v1::access_service_server::AccessServiceServer;
use ferry_proto::v1::admin_service_server::AdminServiceServer;
use ferry_proto::v1::group_service_server::GroupServiceServer;
use ferry_proto::v1::metadata_service_server::MetadataServiceServer;
use ferry_proto::v1::queue_service_server::QueueServiceServer;
use ferry_proto::v1::topic_service_server::TopicServiceServer;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

use self::api::Gateway;
use self::directory::DirectoryKeeper;
use self::forward::{Forwarder, OnBehalfOfCaller};
use crate::access::authn::{Authenticator, AuthnSettings};
use crate::access::quota::Quotas;
use crate::access::{AccessControl, AccessRules, AuthorizationSettings};
use crate::config::Http2Settings;
use crate::http2;
use crate::meta::{EtcdConfig, EtcdStore, MetadataStore};
use crate::metrics::GatewayMetrics;
use crate::service::auth::Authenticate;
use crate::tls::{DialingTlsFiles, HostDialing, ListenerTls, Protocol, TlsListener};

/// How a gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// How to reach etcd.
    pub etcd: EtcdConfig,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// The address clients use for this gateway (metadata answers name it).
    pub advertise: Option<String>,
    /// Its id in metadata answers.
    pub gateway_id: String,
    /// The cluster for creates and groups when several exist.
    pub default_cluster: Option<String>,
    /// How long a request is retried while its leader moves.
    pub retry_deadline: Duration,
    /// Longest wait to connect to a host.
    pub connect_timeout: Duration,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Pause after a failed etcd read before trying again.
    pub retry_pause: Duration,
    /// TLS on the gRPC listener; `None` serves plaintext.
    pub tls: Option<ListenerTls>,
    /// TLS for the channels to hosts' client ports; `None` dials them in plaintext.
    pub host_tls: Option<DialingTlsFiles>,
    /// How callers authenticate. When any way is configured, the gateway forwards
    /// each request with its caller's identity to the hosts' peer listeners (dialled
    /// as `peer_tls` says), which believe it there only; unless only `host_tls` is
    /// given, when it calls the hosts' client ports as itself.
    pub authentication: AuthnSettings,
    /// Access rules for what the gateway answers itself (metadata); hosts decide for
    /// what it forwards.
    pub authorization: AuthorizationSettings,
    /// TLS to the hosts' peer listeners: the cluster's peer CA and a certificate it
    /// signed. `None` dials them in plaintext.
    pub peer_tls: Option<DialingTlsFiles>,
    /// Serve a listener other machines can reach without TLS and authentication.
    pub insecure: bool,
    /// Where to serve Prometheus metrics (`/metrics`); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve them over TLS with the gRPC listener's certificate (and client CA).
    pub metrics_tls: bool,
    /// HTTP/2 windows and frame size of the listener and of channels to hosts.
    pub http2: Http2Settings,
}

/// Runs a gateway until `shutdown` resolves; `on_ready` gets the bound address.
pub async fn run(
    options: GatewayOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let tls = options
        .tls
        .clone()
        .map(TlsListener::load)
        .transpose()
        .context("the gRPC listener's TLS")?;
    let authentication = options.authentication.on_listener(options.tls.as_ref());
    // A gateway that authenticates callers forwards their identities over the hosts'
    // peer listeners, unless it is set up to reach only the client ports (host TLS
    // without peer TLS): then it calls the hosts as itself, as before.
    let forwards_identities =
        authentication.required() && (options.peer_tls.is_some() || options.host_tls.is_none());
    if options.authorization.enforced && !authentication.required() {
        anyhow::bail!(
            "authorization needs a way to authenticate callers: client certificates \
             (--tls-client-ca-file), static tokens (--auth-tokens-file) or ServiceAccount \
             tokens (--auth-jwks-file)"
        );
    }
    let authn = Arc::new(
        Authenticator::load(authentication).context("authentication of the gRPC listener")?,
    );
    let dialing = match (forwards_identities, &options.peer_tls, &options.host_tls) {
        (true, Some(files), _) => {
            HostDialing::tls(files).context("TLS to hosts' peer listeners")?
        }
        (false, _, Some(files)) => HostDialing::tls(files).context("TLS to hosts")?,
        _ => HostDialing::plaintext(),
    };
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let bound = listener.local_addr()?;
    let advertise = options
        .advertise
        .clone()
        .unwrap_or_else(|| bound.to_string());
    let store = EtcdStore::connect(options.etcd.clone()).await?;
    let meta: Arc<dyn MetadataStore> = Arc::new(store);
    let keeper = DirectoryKeeper::start(Arc::clone(&meta), options.retry_pause);
    // Ready only once the first full read is in: before it, every topic would look
    // unknown.
    keeper
        .directory()
        .changed()
        .await
        .context("the etcd follower stopped")?;
    let forwarder = Forwarder::new(
        keeper.directory(),
        options.connect_timeout,
        options.retry_deadline,
        dialing,
        options.http2,
        forwards_identities.then_some(options.gateway_id.as_str()),
    )
    .map_err(|err| anyhow::anyhow!(err))?;
    let (rules_tx, rules_rx) = tokio::sync::watch::channel(Arc::new(AccessRules::default()));
    let rules = tokio::spawn(crate::access::rules::follow(Arc::clone(&meta), rules_tx));
    let reloader = authn.spawn_reloader();
    let gateway = Gateway::new(
        forwarder,
        options.default_cluster.clone(),
        options.gateway_id.clone(),
        advertise,
        AccessControl::new(options.authorization.clone(), rules_rx),
    );
    // Quotas are the hosts' to enforce: the gateway forwards every request.
    let authenticate = Authenticate {
        authn,
        quotas: Quotas::none(),
    };
    let limit = options.max_request_bytes;
    let metrics = Arc::new(GatewayMetrics::new());
    let metrics_tls = match (&options.tls, options.metrics_tls) {
        (Some(files), true) => Some(
            TlsListener::load_for(files.clone(), Protocol::Http1)
                .context("the metrics listener's TLS")?,
        ),
        (None, true) => anyhow::bail!("--metrics-tls needs --tls-cert-file and --tls-key-file"),
        _ => None,
    };
    let metrics_server = match options.metrics_listen {
        Some(addr) => {
            let listener = crate::host::metrics_endpoint::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            let bound = listener.local_addr()?;
            let metrics = Arc::clone(&metrics);
            tracing::info!(metrics = %bound, tls = metrics_tls.is_some(), "gateway metrics served");
            Some(tokio::spawn(crate::host::metrics_endpoint::serve_rendered(
                listener,
                metrics_tls,
                move || metrics.render(),
            )))
        }
        None => None,
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<TopicServiceServer<Gateway>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(ferry_proto::ERROR_DETAILS_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let router = http2::server(&options.http2)
        .layer(metrics.rpc.layer())
        .layer(ferry_telemetry::rpc::RpcTraceLayer::server())
        .add_service(health_service)
        .add_service(reflection)
        .add_service(InterceptedService::new(
            OnBehalfOfCaller(
                TopicServiceServer::new(gateway.clone())
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(usize::MAX),
            ),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            OnBehalfOfCaller(
                AdminServiceServer::new(gateway.clone()).max_decoding_message_size(limit),
            ),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            OnBehalfOfCaller(
                GroupServiceServer::new(gateway.clone()).max_decoding_message_size(limit),
            ),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            OnBehalfOfCaller(
                MetadataServiceServer::new(gateway.clone()).max_decoding_message_size(limit),
            ),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            OnBehalfOfCaller(
                AccessServiceServer::new(gateway.clone()).max_decoding_message_size(limit),
            ),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            OnBehalfOfCaller(
                QueueServiceServer::new(gateway)
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(usize::MAX),
            ),
            authenticate,
        ));
    tracing::info!(
        grpc = %bound,
        tls = tls.is_some(),
        forwards_identities,
        "ferry gateway ready"
    );
    on_ready(bound);
    let served = crate::service::serve_router(router, listener, tls, shutdown).await;
    rules.abort();
    reloader.abort();
    if let Some(server) = metrics_server {
        server.abort();
    }
    served?;
    drop(keeper);
    tracing::info!("ferry gateway stopped");
    Ok(())
}
