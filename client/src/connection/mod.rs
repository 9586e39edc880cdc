//! The connection to a broker and the plain request/response calls on it.
//!
//! [`Client`] is a cheap-to-clone handle on one multiplexed HTTP/2 channel. The
//! producer and consumer are built on top of it; its methods are also the low-level
//! API for tools that want exact control over requests.

mod access;
mod admin;
mod cluster;
mod data;
mod group;
mod queue;
mod queue_settings;
mod routing;

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1::admin_service_client::AdminServiceClient;
use ferry_proto::v1::group_service_client::GroupServiceClient;
use ferry_proto::v1::queue_service_client::QueueServiceClient;
use ferry_proto::v1::topic_service_client::TopicServiceClient;
use ferry_telemetry::rpc::{RpcTraceLayer, RpcTraced};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tower::Layer;

use crate::error::ClientError;

pub use access::{AccessRule, CallerIdentity, Quota};
pub use admin::{
    Durability, GroupDescription, GroupMember, PartitionLag, PartitionState, ReplicationMode,
    TopicDescription, TopicSettings,
};
pub use cluster::{ClusterMetadata, HostInfo, PartitionPlacement, ResourcePlacement};
pub use data::{BatchAck, FetchOptions, FetchTarget, FetchedPartition, ProducerIdentity};
pub(crate) use group::Assignment;
pub use queue::{DeadLetterOrigin, OutgoingMessage, QueueMessage, ReceiveOptions, SendReceipt};
pub use queue_settings::{QueueDescription, QueueSettings, QueueStats};

/// How the client connects and how large its messages may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Give up connecting after this long (default 5 s).
    pub connect_timeout: Duration,
    /// Fail any single request that takes longer than this (default 30 s). Long polls
    /// (fetches, queue receives) get their wait on top of it.
    pub request_timeout: Duration,
    /// Largest gRPC message sent or accepted, in bytes (default 64 MiB). Fetch responses
    /// are bounded by the consumer's `fetch_max_bytes`, so this only needs to exceed it.
    pub max_message_bytes: usize,
    /// TLS settings. With them an address without a scheme means `https://`; an
    /// `https://` address uses TLS with or without them (the system's roots then),
    /// and `http://` with them is refused rather than sent in plaintext.
    pub tls: Option<TlsOptions>,
    /// A bearer token sent with every request (`authorization: Bearer …`): a static
    /// token or a Kubernetes ServiceAccount token. Send it over TLS only.
    pub token: Option<BearerToken>,
}

/// A bearer token; its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps `token`, trimmed (a token file's trailing newline is not part of it).
    pub fn new(token: &str) -> Result<Self, ClientError> {
        let token = token.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::InvalidArgument(
                "a bearer token must be non-empty printable ASCII without spaces".into(),
            ));
        }
        Ok(Self(token.to_owned()))
    }

    fn header(&self) -> Option<MetadataValue<Ascii>> {
        MetadataValue::try_from(format!("Bearer {}", self.0)).ok()
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(…)")
    }
}

/// How the client checks the server's certificate and proves its own identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM CA certificates the server's certificate must chain to; `None` trusts the
    /// system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and private key presented to servers that require one
    /// (mutual TLS).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry, when it is not the address's host.
    pub server_name: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_message_bytes: 64 << 20,
            tls: None,
            token: None,
        }
    }
}

/// A connection to a Ferry broker (or gateway). Clone it freely: clones share the
/// underlying HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    address: Arc<str>,
    max_message_bytes: usize,
    request_timeout: Duration,
    /// The `authorization` header every request carries, if any.
    authorization: Option<MetadataValue<Ascii>>,
    /// Other hosts of the cluster and which partitions they lead, learnt from
    /// `NOT_LEADER` answers.
    peers: Arc<routing::Peers>,
}

/// The channel with every request given a deadline and credentials (see
/// [`CallDefaults`]), and a client span when made inside a traced span (whose
/// context the broker continues).
pub(crate) type Service = InterceptedService<RpcTraced<Channel>, CallDefaults>;

/// Gives a request the client's request timeout unless the call set its own, and the
/// client's bearer token.
///
/// The deadline is per request rather than on the channel because tonic applies the
/// shorter of a channel timeout and a request's own: a channel-wide 30 s would cut
/// every long poll asking for more than 30 s of waiting.
#[derive(Debug, Clone)]
pub(crate) struct CallDefaults {
    timeout: Duration,
    authorization: Option<MetadataValue<Ascii>>,
}

impl Interceptor for CallDefaults {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if !request.metadata().contains_key(GRPC_TIMEOUT_HEADER) {
            request.set_timeout(self.timeout);
        }
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        Ok(request)
    }
}

/// The header `tonic::Request::set_timeout` writes and the channel enforces.
const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

impl Client {
    /// Connects to `address` (`"127.0.0.1:7070"`, `"http://host:port"` or
    /// `"https://host:port"`) with defaults.
    pub async fn connect(address: &str) -> Result<Self, ClientError> {
        Self::connect_with(address, ClientConfig::default()).await
    }

    /// Connects to `address` with the given configuration.
    pub async fn connect_with(
        address: &str,
        mut config: ClientConfig,
    ) -> Result<Self, ClientError> {
        // The hosts a cluster names are `host:port`: they get TLS when this did.
        if config.tls.is_none() && scheme(address)? == Scheme::Https {
            config.tls = Some(TlsOptions::default());
        }
        let channel =
            endpoint(address, &config)?
                .connect()
                .await
                .map_err(|err| ClientError::Transport {
                    address: address.to_owned(),
                    reason: error_chain(&err),
                })?;
        Ok(Self {
            channel,
            address: address.into(),
            max_message_bytes: config.max_message_bytes,
            request_timeout: config.request_timeout,
            authorization: config.token.as_ref().and_then(BearerToken::header),
            peers: Arc::new(routing::Peers::new(config)),
        })
    }

    /// The address this client was connected to, as given.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn service(&self) -> Service {
        InterceptedService::new(
            RpcTraceLayer::client()
                .inside_traces_only()
                .layer(self.channel.clone()),
            CallDefaults {
                timeout: self.request_timeout,
                authorization: self.authorization.clone(),
            },
        )
    }

    pub(crate) fn admin_service(&self) -> AdminServiceClient<Service> {
        AdminServiceClient::new(self.service())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    pub(crate) fn topic_service(&self) -> TopicServiceClient<Service> {
        TopicServiceClient::new(self.service())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    pub(crate) fn group_service(&self) -> GroupServiceClient<Service> {
        GroupServiceClient::new(self.service())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    pub(crate) fn queue_service(&self) -> QueueServiceClient<Service> {
        QueueServiceClient::new(self.service())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    /// A request whose deadline allows a long poll of `wait` plus the usual request
    /// timeout for the answer once the wait is over.
    pub(crate) fn long_poll<T>(&self, message: T, wait: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(wait.saturating_add(self.request_timeout));
        request
    }

    /// Converts a failed call's status into a [`ClientError`].
    pub(crate) fn error(&self, status: &tonic::Status) -> ClientError {
        ClientError::from_status(status, &self.address)
    }
}

/// The endpoint for `address` with the client's connection settings.
fn endpoint(address: &str, config: &ClientConfig) -> Result<Endpoint, ClientError> {
    let invalid = |reason: String| ClientError::InvalidAddress {
        address: address.to_owned(),
        reason,
    };
    let uri = normalize_address(address, config.tls.is_some())?;
    let mut endpoint = Endpoint::from_shared(uri).map_err(|err| invalid(err.to_string()))?;
    match (scheme(address)?, &config.tls) {
        (Scheme::Http, Some(_)) => {
            return Err(invalid(
                "http:// is plaintext but TLS settings were given: use https:// (or no scheme)"
                    .into(),
            ));
        }
        (Scheme::Https, tls) | (Scheme::None, tls @ Some(_)) => {
            let tls = tls.clone().unwrap_or_default();
            endpoint = endpoint
                .tls_config(tls_config(tls))
                .map_err(|err| invalid(error_chain(&err)))?;
        }
        (Scheme::Http | Scheme::None, None) => {}
    }
    Ok(endpoint
        // No channel-wide `.timeout()`: `CallDefaults` sets one per request so
        // long polls can ask for more.
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        // What the client receives, fetch responses of many MiB, flows by these
        // windows and frames: larger than hyper's (2 MiB, 16 KiB frames), a fetch
        // does not stop for window updates or arrive in thousands of frames. What it
        // sends flows by the broker's (`--http2-*` flags).
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .max_frame_size(Some(1 << 20)))
}

/// tonic's TLS settings from the client's.
fn tls_config(tls: TlsOptions) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new();
    config = match tls.ca_pem {
        Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
        None => config.with_native_roots(),
    };
    if let Some((cert, key)) = tls.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    if let Some(name) = tls.server_name {
        config = config.domain_name(name);
    }
    config
}

/// The scheme an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
    None,
}

fn scheme(address: &str) -> Result<Scheme, ClientError> {
    let trimmed = address.trim();
    match trimmed.split_once("://") {
        None => Ok(Scheme::None),
        Some(("http", _)) => Ok(Scheme::Http),
        Some(("https", _)) => Ok(Scheme::Https),
        Some((other, _)) => Err(ClientError::InvalidAddress {
            address: address.to_owned(),
            reason: format!("unknown scheme {other:?}: use http:// or https://"),
        }),
    }
}

/// Adds a scheme when the address has none, so `host:port` works: `https://` when
/// the client has TLS settings, `http://` otherwise.
fn normalize_address(address: &str, tls: bool) -> Result<String, ClientError> {
    let trimmed = address.trim();
    if trimmed.is_empty() {
        return Err(ClientError::InvalidAddress {
            address: address.to_owned(),
            reason: "empty address".into(),
        });
    }
    if trimmed.contains("://") {
        Ok(trimmed.to_owned())
    } else if tls {
        Ok(format!("https://{trimmed}"))
    } else {
        Ok(format!("http://{trimmed}"))
    }
}

/// Joins an error with its sources: tonic's top-level transport error says only
/// "transport error", the useful part ("connection refused") is further down.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Layers often repeat their inner error's text; show each part once.
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme() {
        assert_eq!(
            normalize_address("127.0.0.1:7070", false).ok().as_deref(),
            Some("http://127.0.0.1:7070")
        );
        assert_eq!(
            normalize_address("127.0.0.1:7070", true).ok().as_deref(),
            Some("https://127.0.0.1:7070")
        );
        assert_eq!(
            normalize_address("https://ferry:443", false)
                .ok()
                .as_deref(),
            Some("https://ferry:443")
        );
        assert!(normalize_address("  ", false).is_err());
    }

    #[test]
    fn https_is_never_plaintext_and_http_never_tls() {
        let plain = ClientConfig::default();
        let tls = ClientConfig {
            tls: Some(TlsOptions::default()),
            ..ClientConfig::default()
        };
        let uri = |address: &str, config: &ClientConfig| {
            endpoint(address, config).map(|endpoint| endpoint.uri().to_string())
        };
        assert_eq!(
            uri("https://ferry:443", &plain).ok().as_deref(),
            Some("https://ferry:443/")
        );
        assert_eq!(
            uri("ferry:443", &tls).ok().as_deref(),
            Some("https://ferry:443/")
        );
        assert!(matches!(
            uri("http://ferry:443", &tls),
            Err(ClientError::InvalidAddress { .. })
        ));
        assert!(matches!(
            uri("ftp://ferry:443", &plain),
            Err(ClientError::InvalidAddress { .. })
        ));
    }
}
