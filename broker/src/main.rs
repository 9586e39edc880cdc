//! `ferry-broker`: the Ferry broker binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ferry_broker::access::AuthorizationSettings;
use ferry_broker::access::authn::{self, AuthnSettings, DEFAULT_AUDIENCE, ServiceAccountTokens};
use ferry_broker::allocator::{self, AllocatorSettings};
use ferry_broker::config::{BrokerConfig, Http2Settings, ReplicaTransport, ReplicationConfig};
use ferry_broker::dev::{self, DevOptions};
use ferry_broker::gateway::{self, GatewayOptions};
use ferry_broker::meta::{EtcdConfig, EtcdTls, EtcdUser};
use ferry_broker::rebuild::{self, ClusterHost, RebuildTarget};
use ferry_broker::serve::{self, PeerOptions, PeerTls, ServeOptions};
use ferry_broker::standalone::{self, BoundAddresses};
use ferry_broker::tls::{DialingTlsFiles, ListenerTls, ServerTlsFiles};
use ferry_broker::topic::DurabilitySetting;

/// The Ferry message broker.
#[derive(Parser, Debug)]
#[command(name = "ferry-broker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    log: ferry_telemetry::LogArgs,
    #[command(flatten)]
    allocator: AllocatorArgs,
}

/// How much freed memory the C allocator keeps for reuse (`ferry_broker::allocator`).
#[derive(Args, Debug)]
struct AllocatorArgs {
    /// Allocations larger than this are mapped on their own and returned to the OS
    /// when freed, in bytes (glibc; at most 32 MiB; 0 here and in
    /// --malloc-trim-threshold-bytes: glibc's adaptive thresholds).
    #[arg(long, env = "FERRY_MALLOC_MMAP_THRESHOLD_BYTES", global = true,
          default_value_t = allocator::MMAP_THRESHOLD_BYTES_DEFAULT)]
    malloc_mmap_threshold_bytes: usize,
    /// Free bytes at the top of each of the allocator's heaps kept for reuse before
    /// it shrinks (glibc).
    #[arg(long, env = "FERRY_MALLOC_TRIM_THRESHOLD_BYTES", global = true,
          default_value_t = allocator::TRIM_THRESHOLD_BYTES_DEFAULT)]
    malloc_trim_threshold_bytes: usize,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one host with an embedded metadata store (the default).
    Standalone(StandaloneArgs),
    /// Run one host of a broker cluster, with etcd as the cluster manager.
    Serve(Box<ServeArgs>),
    /// Start a local cluster for trying things out: etcd, three hosts and a gateway
    /// on 127.0.0.1.
    Dev(DevArgs),
    /// Run a stateless gateway: the same API, each request forwarded to the host
    /// that serves it (found through etcd).
    Gateway(GatewayArgs),
    /// Repair the metadata store from what hosts hold on disk.
    Metadata {
        #[command(subcommand)]
        command: MetadataCommand,
    },
    /// Make static bearer tokens for --auth-tokens-file.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Make a new random token for a principal: its hash is appended to the tokens
    /// file (created if missing, readable by its owner only), the token itself is
    /// printed once and kept nowhere.
    Add {
        /// The tokens file a broker reads (--auth-tokens-file).
        #[arg(long)]
        tokens_file: PathBuf,
        /// Who the token authenticates as.
        #[arg(long)]
        principal: String,
        /// Groups the principal belongs to, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Print the tokens-file hash of a token read from standard input (bring your own
    /// token).
    Hash,
}

#[derive(Subcommand, Debug)]
enum MetadataCommand {
    /// Put back the records of every topic and queue this host holds (and, on a
    /// cluster, its identity and partition states) after the metadata store lost
    /// them. Stop every host first; on a cluster run it on each host, then start them.
    Rebuild(RebuildArgs),
}

#[derive(Args, Debug)]
struct RebuildArgs {
    /// The host's data directory.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "ferry-data")]
    data_dir: PathBuf,
    /// The broker cluster (omit for a standalone host's embedded store).
    #[arg(long, env = "FERRY_CLUSTER", requires_all = ["host_id", "etcd"])]
    cluster: Option<String>,
    /// This host's id in the cluster.
    #[arg(long, env = "FERRY_HOST_ID")]
    host_id: Option<String>,
    /// etcd client URLs, comma-separated.
    #[arg(long, env = "FERRY_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Longest wait for one etcd request, in ms.
    #[arg(long, env = "FERRY_ETCD_TIMEOUT_MS", default_value_t = 5_000)]
    etcd_timeout_ms: u64,
    #[command(flatten)]
    etcd_security: EtcdSecurityArgs,
}

impl RebuildArgs {
    fn target(&self) -> anyhow::Result<RebuildTarget> {
        let (Some(cluster), Some(host_id)) = (&self.cluster, &self.host_id) else {
            return Ok(RebuildTarget::Standalone);
        };
        if self.etcd.is_empty() {
            anyhow::bail!("--etcd is required with --cluster");
        }
        let timeout = Duration::from_millis(self.etcd_timeout_ms);
        Ok(RebuildTarget::Cluster {
            host: ClusterHost {
                cluster: cluster.clone(),
                host_id: host_id.clone(),
            },
            etcd: Box::new(self.etcd_security.apply(
                EtcdConfig {
                    request_timeout: timeout,
                    connect_timeout: timeout,
                    ..EtcdConfig::new(self.etcd.clone())
                },
                // A one-shot command: its TLS files are read once.
                None,
            )?),
        })
    }
}

#[derive(Args, Debug)]
struct GatewayArgs {
    /// etcd client URLs, comma-separated.
    #[arg(long, env = "FERRY_ETCD", value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// gRPC listen address.
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:7080")]
    listen: SocketAddr,
    /// Address clients should use for this gateway (defaults to --listen).
    #[arg(long, env = "FERRY_ADVERTISE")]
    advertise: Option<String>,
    /// This gateway's id in metadata answers.
    #[arg(long, env = "FERRY_GATEWAY_ID", default_value = "gateway")]
    gateway_id: String,
    /// The broker cluster for creates and consumer groups when several exist.
    #[arg(long, env = "FERRY_DEFAULT_CLUSTER")]
    default_cluster: Option<String>,
    /// How long a request is retried while its partition's leader moves, in ms.
    #[arg(long, env = "FERRY_RETRY_DEADLINE_MS", default_value_t = 10_000)]
    retry_deadline_ms: u64,
    /// Longest wait to connect to a host, in ms.
    #[arg(long, env = "FERRY_CONNECT_TIMEOUT_MS", default_value_t = 3_000)]
    connect_timeout_ms: u64,
    /// Longest wait for one etcd request, in ms.
    #[arg(long, env = "FERRY_ETCD_TIMEOUT_MS", default_value_t = 5_000)]
    etcd_timeout_ms: u64,
    /// Largest request accepted, in bytes.
    #[arg(long, env = "FERRY_MAX_REQUEST_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_request_bytes: usize,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    host_tls: HostTlsArgs,
    #[command(flatten)]
    peer_tls: GatewayPeerTlsArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    etcd_security: EtcdSecurityArgs,
    #[command(flatten)]
    http2: Http2Args,
    /// Serve on an address other machines can reach without TLS and authentication;
    /// refused otherwise.
    #[arg(long, env = "FERRY_INSECURE")]
    insecure: bool,
    /// Prometheus metrics listen address (its calls by method and code), or "off".
    #[arg(long, env = "FERRY_GATEWAY_METRICS_LISTEN", default_value = "off")]
    metrics_listen: String,
    /// Serve /metrics over TLS with --tls-cert-file (and --tls-client-ca-file).
    #[arg(long, env = "FERRY_GATEWAY_METRICS_TLS", requires = "tls_cert_file")]
    metrics_tls: bool,
}

/// How etcd is reached securely: TLS (for `https://` endpoints) and a user.
#[derive(Args, Debug)]
struct EtcdSecurityArgs {
    /// PEM CA certificates etcd's certificate must chain to (default: the system's
    /// roots); for `https://` --etcd endpoints.
    #[arg(long, env = "FERRY_ETCD_CA_FILE")]
    etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate for an etcd that requires one (--client-cert-auth).
    #[arg(long, env = "FERRY_ETCD_CERT_FILE", requires = "etcd_key_file")]
    etcd_cert_file: Option<PathBuf>,
    /// PEM private key of --etcd-cert-file.
    #[arg(long, env = "FERRY_ETCD_KEY_FILE", requires = "etcd_cert_file")]
    etcd_key_file: Option<PathBuf>,
    /// etcd user, when etcd's authentication is on.
    #[arg(long, env = "FERRY_ETCD_USER", requires = "etcd_password_file")]
    etcd_user: Option<String>,
    /// File holding the etcd user's password (a trailing newline is ignored).
    #[arg(long, env = "FERRY_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
}

impl EtcdSecurityArgs {
    /// `config` with the TLS files (followed every `reload_interval`, if given) and
    /// the password read now.
    fn apply(
        &self,
        mut config: EtcdConfig,
        reload_interval: Option<Duration>,
    ) -> anyhow::Result<EtcdConfig> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|err| anyhow::anyhow!("reading {flag} {}: {err}", path.display()))
        };
        let https = config
            .endpoints
            .iter()
            .any(|endpoint| endpoint.starts_with("https://"));
        let tls_flags = self.etcd_ca_file.is_some() || self.etcd_cert_file.is_some();
        if tls_flags && !https {
            anyhow::bail!(
                "--etcd-ca-file and --etcd-cert-file are for https:// endpoints, but --etcd \
                 names {:?}: use https:// (Ferry never sends them over plaintext)",
                config.endpoints
            );
        }
        if https {
            config.tls = Some(EtcdTls {
                ca_file: self.etcd_ca_file.clone(),
                identity_files: self.etcd_cert_file.clone().zip(self.etcd_key_file.clone()),
                reload_interval,
            });
        }
        if let (Some(name), Some(path)) = (&self.etcd_user, &self.etcd_password_file) {
            let password =
                String::from_utf8(read("--etcd-password-file", path)?).map_err(|_| {
                    anyhow::anyhow!("--etcd-password-file {} is not UTF-8", path.display())
                })?;
            config.user = Some(EtcdUser {
                name: name.clone(),
                password: password.trim_end_matches(['\n', '\r']).to_owned(),
            });
        }
        Ok(config)
    }
}

/// TLS on the gRPC listener, and for the channels to broker hosts.
#[derive(Args, Debug)]
struct TlsArgs {
    /// PEM certificate chain of the gRPC listener; with --tls-key-file it serves TLS
    /// only. Reloaded when the file changes.
    #[arg(long, env = "FERRY_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "FERRY_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// PEM CA certificates for mutual TLS: clients must present a certificate one of
    /// them signed.
    #[arg(long, env = "FERRY_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    tls_client_ca_file: Option<PathBuf>,
    /// How often the TLS files are checked for a new certificate, in ms.
    #[arg(long, env = "FERRY_TLS_RELOAD_INTERVAL_MS", default_value_t = 10_000)]
    tls_reload_interval_ms: u64,
    /// Longest a client's TLS handshake may take, in ms.
    #[arg(long, env = "FERRY_TLS_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    tls_handshake_timeout_ms: u64,
    /// Most TLS handshakes in progress at once; more connections wait to be accepted.
    #[arg(long, env = "FERRY_MAX_PENDING_TLS_HANDSHAKES", default_value_t = 1024)]
    max_pending_tls_handshakes: usize,
}

impl TlsArgs {
    /// The listener's TLS settings, when a certificate is given.
    fn listener(&self) -> anyhow::Result<Option<ListenerTls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) else {
            return Ok(None);
        };
        self.with_files(ServerTlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca_file.clone(),
        })
        .map(Some)
    }

    /// `files` with these limits.
    fn with_files(&self, files: ServerTlsFiles) -> anyhow::Result<ListenerTls> {
        if self.tls_reload_interval_ms == 0 || self.tls_handshake_timeout_ms == 0 {
            anyhow::bail!(
                "--tls-reload-interval-ms and --tls-handshake-timeout-ms must be greater than 0"
            );
        }
        if self.max_pending_tls_handshakes == 0 {
            anyhow::bail!("--max-pending-tls-handshakes must be greater than 0");
        }
        Ok(ListenerTls {
            files,
            reload_interval: Duration::from_millis(self.tls_reload_interval_ms),
            handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
            max_pending_handshakes: self.max_pending_tls_handshakes,
        })
    }
}

/// The peer listener of a cluster host: replication and requests passed on between
/// hosts, apart from the client port.
#[derive(Args, Debug)]
struct PeerArgs {
    /// Peer listen address (default: --listen's address, any free port; peers find
    /// it in etcd).
    #[arg(long, env = "FERRY_PEER_LISTEN")]
    peer_listen: Option<SocketAddr>,
    /// Address other hosts dial for the peer listener (default: --advertise's host
    /// with the peer port).
    #[arg(long, env = "FERRY_PEER_ADVERTISE")]
    peer_advertise: Option<String>,
    /// PEM certificate of the peer listener, also presented to the peers this host
    /// dials; with --peer-tls-key-file and --peer-tls-ca-file, peers use mutual TLS.
    #[arg(
        long,
        env = "FERRY_PEER_TLS_CERT_FILE",
        requires_all = ["peer_tls_key_file", "peer_tls_ca_file"]
    )]
    peer_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --peer-tls-cert-file.
    #[arg(long, env = "FERRY_PEER_TLS_KEY_FILE", requires = "peer_tls_cert_file")]
    peer_tls_key_file: Option<PathBuf>,
    /// PEM CA that signs the cluster's peer certificates: the only certificates the
    /// peer listener accepts, and what peers' listeners are checked against.
    #[arg(long, env = "FERRY_PEER_TLS_CA_FILE", requires = "peer_tls_cert_file")]
    peer_tls_ca_file: Option<PathBuf>,
}

impl PeerArgs {
    fn options(&self, listen: SocketAddr, limits: &TlsArgs) -> anyhow::Result<PeerOptions> {
        let tls = match (
            &self.peer_tls_cert_file,
            &self.peer_tls_key_file,
            &self.peer_tls_ca_file,
        ) {
            (Some(cert), Some(key), Some(ca)) => Some(PeerTls {
                listener: limits.with_files(ServerTlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: Some(ca.clone()),
                })?,
                ca: ca.clone(),
            }),
            _ => None,
        };
        Ok(PeerOptions {
            listen: self
                .peer_listen
                .unwrap_or_else(|| SocketAddr::new(listen.ip(), 0)),
            advertise: self.peer_advertise.clone(),
            tls,
        })
    }
}

/// How a gateway dials the hosts' client ports when they serve TLS.
#[derive(Args, Debug)]
struct HostTlsArgs {
    /// PEM CA that signs the hosts' client-port certificates: hosts are dialled over
    /// TLS and checked against it.
    #[arg(long, env = "FERRY_HOST_TLS_CA_FILE")]
    host_tls_ca_file: Option<PathBuf>,
    /// PEM certificate the gateway presents to hosts that require client certificates.
    #[arg(
        long,
        env = "FERRY_HOST_TLS_CERT_FILE",
        requires_all = ["host_tls_key_file", "host_tls_ca_file"]
    )]
    host_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --host-tls-cert-file.
    #[arg(long, env = "FERRY_HOST_TLS_KEY_FILE", requires = "host_tls_cert_file")]
    host_tls_key_file: Option<PathBuf>,
}

impl HostTlsArgs {
    fn dialing(&self, reload_interval: Duration) -> Option<DialingTlsFiles> {
        Some(DialingTlsFiles {
            ca: self.host_tls_ca_file.clone()?,
            identity: self
                .host_tls_cert_file
                .clone()
                .zip(self.host_tls_key_file.clone()),
            reload_interval,
        })
    }
}

/// How a gateway that authenticates its callers dials the hosts' peer listeners, where
/// it forwards requests with their callers' identities.
#[derive(Args, Debug)]
struct GatewayPeerTlsArgs {
    /// PEM CA of the cluster's peer certificates (the hosts' --peer-tls-ca-file).
    #[arg(long, env = "FERRY_PEER_TLS_CA_FILE", requires_all = ["peer_tls_cert_file", "peer_tls_key_file"])]
    peer_tls_ca_file: Option<PathBuf>,
    /// PEM certificate from that CA the gateway presents to hosts' peer listeners.
    #[arg(long, env = "FERRY_PEER_TLS_CERT_FILE", requires = "peer_tls_ca_file")]
    peer_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --peer-tls-cert-file.
    #[arg(long, env = "FERRY_PEER_TLS_KEY_FILE", requires = "peer_tls_ca_file")]
    peer_tls_key_file: Option<PathBuf>,
}

impl GatewayArgs {
    fn into_options(self) -> anyhow::Result<GatewayOptions> {
        let timeout = Duration::from_millis(self.etcd_timeout_ms);
        let (authentication, authorization) = self.auth.settings()?;
        let reload_interval = Duration::from_millis(self.tls.tls_reload_interval_ms);
        let peer_tls = self
            .peer_tls
            .peer_tls_ca_file
            .clone()
            .map(|ca| DialingTlsFiles {
                ca,
                identity: self
                    .peer_tls
                    .peer_tls_cert_file
                    .clone()
                    .zip(self.peer_tls.peer_tls_key_file.clone()),
                reload_interval,
            });
        let metrics_listen = metrics_address(&self.metrics_listen)?;
        let http2 = self.http2.settings();
        http2.validate()?;
        Ok(GatewayOptions {
            http2,
            metrics_listen,
            metrics_tls: self.metrics_tls,
            authentication,
            authorization,
            peer_tls,
            insecure: self.insecure,
            tls: self.tls.listener()?,
            host_tls: self.host_tls.dialing(reload_interval),
            etcd: self.etcd_security.apply(
                EtcdConfig {
                    request_timeout: timeout,
                    connect_timeout: timeout,
                    ..EtcdConfig::new(self.etcd)
                },
                Some(reload_interval),
            )?,
            listen: self.listen,
            advertise: self.advertise,
            gateway_id: self.gateway_id,
            default_cluster: self.default_cluster,
            retry_deadline: Duration::from_millis(self.retry_deadline_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            max_request_bytes: self.max_request_bytes,
            retry_pause: Duration::from_millis(500),
        })
    }
}

#[derive(Args, Debug)]
struct DevArgs {
    /// Directory for etcd's and every host's data.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "ferry-dev")]
    data_dir: PathBuf,
    /// Hosts to start.
    #[arg(long, default_value_t = 3)]
    hosts: u16,
    /// gRPC port of the first host (the others take the next ports).
    #[arg(long, default_value_t = 7070)]
    first_port: u16,
    /// etcd's client port (its peer port is the next one).
    #[arg(long, default_value_t = 23790)]
    etcd_port: u16,
    /// The etcd binary (default: `etcd` on the path).
    #[arg(long, env = "FERRY_ETCD_BINARY")]
    etcd_binary: Option<PathBuf>,
    /// The cluster's name.
    #[arg(long, default_value = "dev")]
    cluster: String,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The broker cluster to join.
    #[arg(long, env = "FERRY_CLUSTER")]
    cluster: String,
    /// This host's id, unique in the cluster (e.g. the StatefulSet pod name).
    #[arg(long, env = "FERRY_HOST_ID")]
    host_id: String,
    /// etcd client URLs, comma-separated.
    #[arg(long, env = "FERRY_ETCD", value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// Time to live of the host's etcd lease, in ms (rounded up to whole seconds).
    #[arg(long, env = "FERRY_LEASE_TTL_MS", default_value_t = 5_000)]
    lease_ttl_ms: u64,
    /// How long a host may be gone before its replicas move to other hosts, in ms.
    #[arg(long, env = "FERRY_HOST_GRACE_MS", default_value_t = 30_000)]
    host_grace_ms: u64,
    /// Longest a starting host reports not ready (gRPC health `ferry.ready`, the
    /// readiness probe) while it is outside the in-sync set of a partition it
    /// replicates, in ms; after that it reports ready anyway.
    #[arg(long, env = "FERRY_READY_MAX_WAIT_MS", default_value_t = 300_000)]
    ready_max_wait_ms: u64,
    /// The failure domain this host runs in (in Kubernetes, its node's
    /// `topology.kubernetes.io/zone`); each partition's replicas spread over zones.
    /// Empty means unknown.
    #[arg(long, env = "FERRY_ZONE")]
    zone: Option<String>,
    /// A file of the pod's labels (a Kubernetes downward-API volume): without
    /// --zone, the zone is its `topology.kubernetes.io/zone` label, which
    /// Kubernetes copies from the node when it binds the pod (1.33 copies it as
    /// `topology.k8s.io/zone`, read too).
    #[arg(long, env = "FERRY_POD_LABELS_FILE")]
    pod_labels_file: Option<PathBuf>,
    /// Longest wait for one etcd request, in ms.
    #[arg(long, env = "FERRY_ETCD_TIMEOUT_MS", default_value_t = 5_000)]
    etcd_timeout_ms: u64,
    /// How often leaders publish observed state (high watermarks, lag, depth) to etcd, in ms.
    #[arg(long, env = "FERRY_OBSERVED_INTERVAL_MS", default_value_t = 5_000)]
    observed_interval_ms: u64,
    /// How long a `sync` write waits for the in-sync replicas, in ms.
    #[arg(
        long,
        env = "FERRY_REPLICATION_ACK_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    replication_ack_timeout_ms: u64,
    /// A follower behind the leader for longer than this leaves the in-sync set, in ms.
    #[arg(long, env = "FERRY_REPLICA_MAX_LAG_MS", default_value_t = 10_000)]
    replica_max_lag_ms: u64,
    /// Most bytes one replica fetch carries.
    #[arg(long, env = "FERRY_REPLICA_FETCH_MAX_BYTES", default_value_t = 8 * 1024 * 1024)]
    replica_fetch_max_bytes: u32,
    /// How long a replica fetch waits at the leader's log end, in ms.
    #[arg(long, env = "FERRY_REPLICA_FETCH_MAX_WAIT_MS", default_value_t = 500)]
    replica_fetch_max_wait_ms: u32,
    /// How much longer than its wait a replica fetch may take before it is sent
    /// again, in ms.
    #[arg(
        long,
        env = "FERRY_REPLICA_FETCH_TIMEOUT_SLACK_MS",
        default_value_t = 2_000
    )]
    replica_fetch_timeout_slack_ms: u64,
    /// How followers fetch from plaintext peer listeners: "stream" (the leader sends
    /// its cached tail from the segment file with sendfile) or "grpc" (ReplicaFetch
    /// only). Under peer TLS followers use gRPC.
    #[arg(
        long,
        env = "FERRY_REPLICA_TRANSPORT",
        default_value = "stream",
        value_parser = parse_replica_transport
    )]
    replica_transport: ReplicaTransport,
    /// How long a new peer connection may take to send its first byte, and a replica
    /// stream's opening to be answered, in ms.
    #[arg(
        long,
        env = "FERRY_REPLICA_STREAM_OPENING_TIMEOUT_MS",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    replica_stream_opening_timeout_ms: u64,
    /// How long a leader keeps a replica stream whose follower sends no request or
    /// takes no answer, in ms.
    #[arg(
        long,
        env = "FERRY_REPLICA_STREAM_IDLE_TIMEOUT_MS",
        default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    replica_stream_idle_timeout_ms: u64,
    /// How long a follower fetches over gRPC after a leader did not answer the replica
    /// stream's opening, before it tries the stream again, in ms.
    #[arg(
        long,
        env = "FERRY_REPLICA_STREAM_RETRY_MS",
        default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    replica_stream_retry_ms: u64,
    #[command(flatten)]
    etcd_security: EtcdSecurityArgs,
    #[command(flatten)]
    peer: PeerArgs,
    #[command(flatten)]
    host: StandaloneArgs,
}

impl ServeArgs {
    /// `--zone`, else the zone label in `--pod-labels-file`, else none.
    fn zone(&self) -> anyhow::Result<Option<String>> {
        if let Some(zone) = self.zone.as_ref().filter(|zone| !zone.is_empty()) {
            return Ok(Some(zone.clone()));
        }
        let Some(path) = &self.pod_labels_file else {
            return Ok(None);
        };
        let labels = std::fs::read_to_string(path).map_err(|err| {
            anyhow::anyhow!("reading --pod-labels-file {}: {err}", path.display())
        })?;
        Ok(ferry_broker::cluster::zone_from_pod_labels(&labels))
    }

    fn into_options(self) -> anyhow::Result<(BrokerConfig, ServeOptions)> {
        let zone = self.zone()?;
        let timeout = Duration::from_millis(self.etcd_timeout_ms);
        let etcd = self.etcd_security.apply(
            EtcdConfig {
                request_timeout: timeout,
                connect_timeout: timeout,
                ..EtcdConfig::new(self.etcd)
            },
            Some(Duration::from_millis(self.host.tls.tls_reload_interval_ms)),
        )?;
        let options = ServeOptions {
            cluster: self.cluster,
            host_id: self.host_id,
            etcd,
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            host_grace: Duration::from_millis(self.host_grace_ms),
            observed_interval: Duration::from_millis(self.observed_interval_ms),
            ready_max_wait: Duration::from_millis(self.ready_max_wait_ms),
            zone,
            peer: self.peer.options(self.host.listen, &self.host.tls)?,
        };
        let mut config = self.host.into_config()?;
        config.replication = ReplicationConfig {
            ack_timeout_ms: self.replication_ack_timeout_ms,
            max_lag_ms: self.replica_max_lag_ms,
            fetch_max_bytes: self.replica_fetch_max_bytes,
            fetch_max_wait_ms: self.replica_fetch_max_wait_ms,
            fetch_timeout_slack_ms: self.replica_fetch_timeout_slack_ms,
            transport: self.replica_transport,
            stream_opening_timeout_ms: self.replica_stream_opening_timeout_ms,
            stream_idle_timeout_ms: self.replica_stream_idle_timeout_ms,
            stream_retry_ms: self.replica_stream_retry_ms,
            ..ReplicationConfig::default()
        };
        Ok((config, options))
    }
}

#[derive(Args, Debug)]
struct StandaloneArgs {
    /// Directory for logs and metadata.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "ferry-data")]
    data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Prometheus metrics listen address, or "off".
    #[arg(long, env = "FERRY_METRICS_LISTEN", default_value = "127.0.0.1:7071")]
    metrics_listen: String,
    /// Serve /metrics over TLS with --tls-cert-file (and --tls-client-ca-file).
    #[arg(long, env = "FERRY_METRICS_TLS", requires = "tls_cert_file")]
    metrics_tls: bool,
    /// Address clients should use for this host (defaults to --listen).
    #[arg(long, env = "FERRY_ADVERTISE")]
    advertise: Option<String>,
    /// Largest record in bytes.
    #[arg(long, env = "FERRY_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<u32>,
    /// Largest record batch in bytes.
    #[arg(long, env = "FERRY_MAX_BATCH_BYTES")]
    max_batch_bytes: Option<u32>,
    /// Largest fetch response in bytes.
    #[arg(long, env = "FERRY_MAX_FETCH_BYTES")]
    max_fetch_bytes: Option<u32>,
    /// Partitions of topics created without a count.
    #[arg(long, env = "FERRY_DEFAULT_PARTITIONS")]
    default_partitions: Option<u32>,
    /// Durability of topics and queues created without one: fsync, interval or none.
    #[arg(long, env = "FERRY_DEFAULT_DURABILITY", value_parser = parse_durability)]
    default_durability: Option<DurabilitySetting>,
    /// Longest queue receive long-poll wait, in ms.
    #[arg(long, env = "FERRY_MAX_RECEIVE_WAIT_MS")]
    max_receive_wait_ms: Option<u32>,
    /// Longest queue visibility timeout, in ms.
    #[arg(long, env = "FERRY_MAX_VISIBILITY_TIMEOUT_MS")]
    max_visibility_timeout_ms: Option<u64>,
    /// Longest queue message delay, in ms.
    #[arg(long, env = "FERRY_MAX_DELAY_MS")]
    max_delay_ms: Option<u64>,
    /// How often queues look for dead letters, expired messages and compaction, in ms.
    #[arg(long, env = "FERRY_QUEUE_HOUSEKEEPING_INTERVAL_MS")]
    queue_housekeeping_interval_ms: Option<u64>,
    /// Bytes at the end of each log kept in the OS page cache once fsynced; older
    /// fsynced bytes are dropped from it so long runs recycle memory (0: leave it to the OS).
    #[arg(long, env = "FERRY_PAGE_CACHE_WINDOW_BYTES")]
    page_cache_window_bytes: Option<u64>,
    #[command(flatten)]
    http2: Http2Args,
    /// Size at which a queue's message log and journal roll to a new segment, in bytes.
    #[arg(long, env = "FERRY_QUEUE_SEGMENT_BYTES")]
    queue_segment_bytes: Option<u64>,
    /// Journal growth after which a queue takes a snapshot and compacts, in bytes.
    #[arg(long, env = "FERRY_QUEUE_SNAPSHOT_BYTES")]
    queue_snapshot_bytes: Option<u64>,
    /// Longest time between a queue's snapshots while its journal grows, in ms.
    #[arg(long, env = "FERRY_QUEUE_SNAPSHOT_INTERVAL_MS")]
    queue_snapshot_interval_ms: Option<u64>,
    /// How often retention runs (and free space is checked), in ms.
    #[arg(long, env = "FERRY_RETENTION_CHECK_INTERVAL_MS")]
    retention_check_interval_ms: Option<u64>,
    /// Log a warning once the data directory's file system has less than this
    /// percentage free (0: never).
    #[arg(long, env = "FERRY_DISK_WARN_FREE_PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    disk_warn_free_percent: Option<u8>,
    /// How long shutdown waits for in-flight requests, in ms.
    #[arg(long, env = "FERRY_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: Option<u64>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// Serve listeners other machines can reach (an address outside loopback) without
    /// TLS and authentication; refused otherwise.
    #[arg(long, env = "FERRY_INSECURE")]
    insecure: bool,
}

/// HTTP/2 flow control and framing of what the process receives (`Http2Settings`).
#[derive(Args, Debug)]
struct Http2Args {
    /// Bytes a peer may send on one gRPC call before they are read (HTTP/2 stream
    /// window of the listeners and of this process's own connections).
    #[arg(long, env = "FERRY_HTTP2_STREAM_WINDOW_BYTES")]
    http2_stream_window_bytes: Option<u32>,
    /// Bytes a peer may send on one connection before they are read (HTTP/2
    /// connection window).
    #[arg(long, env = "FERRY_HTTP2_CONNECTION_WINDOW_BYTES")]
    http2_connection_window_bytes: Option<u32>,
    /// Largest HTTP/2 frame a peer may send, in bytes (16384 to 16777215).
    #[arg(long, env = "FERRY_HTTP2_MAX_FRAME_BYTES")]
    http2_max_frame_bytes: Option<u32>,
}

impl Http2Args {
    /// The defaults with the flags given applied (checked with the rest of the config).
    fn settings(&self) -> Http2Settings {
        let defaults = Http2Settings::default();
        Http2Settings {
            stream_window_bytes: self
                .http2_stream_window_bytes
                .unwrap_or(defaults.stream_window_bytes),
            connection_window_bytes: self
                .http2_connection_window_bytes
                .unwrap_or(defaults.connection_window_bytes),
            max_frame_bytes: self
                .http2_max_frame_bytes
                .unwrap_or(defaults.max_frame_bytes),
        }
    }
}

/// Who may call the client listener, and what they may do (docs/security.md).
#[derive(Args, Debug)]
struct AuthArgs {
    /// Static bearer tokens: lines `sha256:<hex> <principal> [group,...]` (made by
    /// `ferry-broker token add`). Reloaded when the file changes.
    #[arg(long, env = "FERRY_AUTH_TOKENS_FILE")]
    auth_tokens_file: Option<PathBuf>,
    /// Kubernetes ServiceAccount tokens: the issuer's JSON Web Key Set (the API
    /// server's /openid/v1/jwks). Reloaded when the file changes.
    #[arg(long, env = "FERRY_AUTH_JWKS_FILE", requires = "auth_token_issuer")]
    auth_jwks_file: Option<PathBuf>,
    /// The issuer ServiceAccount tokens must name (the API server's
    /// --service-account-issuer).
    #[arg(long, env = "FERRY_AUTH_TOKEN_ISSUER", requires = "auth_jwks_file")]
    auth_token_issuer: Option<String>,
    /// Audiences a ServiceAccount token may be for, comma-separated.
    #[arg(
        long,
        env = "FERRY_AUTH_TOKEN_AUDIENCES",
        value_delimiter = ',',
        default_value = DEFAULT_AUDIENCE
    )]
    auth_token_audiences: Vec<String>,
    /// How often the tokens and key set files are checked for changes, in ms.
    #[arg(long, env = "FERRY_AUTH_RELOAD_INTERVAL_MS", default_value_t = 10_000)]
    auth_reload_interval_ms: u64,
    /// Enforce access rules: deny every operation no rule grants. Needs a way to
    /// authenticate (client certificates, static or ServiceAccount tokens).
    #[arg(long, env = "FERRY_AUTHORIZATION")]
    authorization: bool,
    /// A principal allowed everything, rules or not (repeat, or comma-separate): who
    /// writes the first rules.
    #[arg(long, env = "FERRY_SUPERUSERS", value_delimiter = ',')]
    superuser: Vec<String>,
}

impl AuthArgs {
    fn apply(&self, config: &mut BrokerConfig) -> anyhow::Result<()> {
        (config.authentication, config.authorization) = self.settings()?;
        Ok(())
    }

    /// How callers authenticate (client certificates aside: the listener's client CA
    /// decides those), and whether access rules are enforced.
    fn settings(&self) -> anyhow::Result<(AuthnSettings, AuthorizationSettings)> {
        if self.auth_reload_interval_ms == 0 {
            anyhow::bail!("--auth-reload-interval-ms must be greater than 0");
        }
        let authentication = AuthnSettings {
            certificates: false,
            static_tokens: self.auth_tokens_file.clone(),
            service_accounts: match (&self.auth_jwks_file, &self.auth_token_issuer) {
                (Some(jwks), Some(issuer)) => Some(ServiceAccountTokens {
                    jwks_file: jwks.clone(),
                    issuer: issuer.clone(),
                    audiences: self.auth_token_audiences.clone(),
                }),
                _ => None,
            },
            reload_interval: Duration::from_millis(self.auth_reload_interval_ms),
        };
        let authorization = AuthorizationSettings {
            enforced: self.authorization,
            superusers: self
                .superuser
                .iter()
                .filter(|name| !name.is_empty())
                .cloned()
                .collect(),
        };
        Ok((authentication, authorization))
    }
}

fn parse_durability(value: &str) -> Result<DurabilitySetting, String> {
    match value {
        "fsync" => Ok(DurabilitySetting::Fsync),
        "interval" => Ok(DurabilitySetting::Interval),
        "none" => Ok(DurabilitySetting::None),
        other => Err(format!("expected fsync, interval or none, got {other:?}")),
    }
}

fn parse_replica_transport(value: &str) -> Result<ReplicaTransport, String> {
    match value {
        "stream" => Ok(ReplicaTransport::Stream),
        "grpc" => Ok(ReplicaTransport::Grpc),
        other => Err(format!("expected stream or grpc, got {other:?}")),
    }
}

impl StandaloneArgs {
    fn into_config(self) -> anyhow::Result<BrokerConfig> {
        let mut config = BrokerConfig {
            tls: self.tls.listener()?,
            ..BrokerConfig::default()
        };
        self.auth.apply(&mut config)?;
        let mut config = BrokerConfig {
            metrics_tls: self.metrics_tls,
            data_dir: self.data_dir,
            listen: self.listen,
            advertise: self.advertise,
            insecure: self.insecure,
            ..config
        };
        config.metrics_listen = metrics_address(&self.metrics_listen)?;
        let limits = &mut config.limits;
        if let Some(v) = self.max_message_bytes {
            limits.max_message_bytes = v;
            config.topic_defaults.max_message_bytes = v;
            config.queue_defaults.max_message_bytes =
                config.queue_defaults.max_message_bytes.min(v);
        }
        if let Some(v) = self.max_batch_bytes {
            limits.max_batch_bytes = v;
        }
        if let Some(v) = self.max_fetch_bytes {
            limits.max_fetch_bytes = v;
        }
        if let Some(v) = self.default_partitions {
            config.topic_defaults.partitions = v;
        }
        if let Some(v) = self.default_durability {
            config.topic_defaults.durability = v;
            config.queue_defaults.durability = v;
        }
        if let Some(v) = self.max_receive_wait_ms {
            limits.max_receive_wait_ms = v;
            config.queue_defaults.receive_wait_ms = config.queue_defaults.receive_wait_ms.min(v);
        }
        if let Some(v) = self.max_visibility_timeout_ms {
            limits.max_visibility_timeout_ms = v;
            config.queue_defaults.visibility_timeout_ms =
                config.queue_defaults.visibility_timeout_ms.min(v);
        }
        if let Some(v) = self.max_delay_ms {
            limits.max_delay_ms = v;
        }
        if let Some(v) = self.queue_housekeeping_interval_ms {
            config.queue_housekeeping_interval_ms = v;
        }
        if let Some(v) = self.page_cache_window_bytes {
            config.limits.page_cache_window_bytes = v;
        }
        config.http2 = self.http2.settings();
        if let Some(v) = self.queue_segment_bytes {
            config.limits.queue_segment_bytes = v;
        }
        if let Some(v) = self.queue_snapshot_bytes {
            config.queue_snapshot_bytes = v;
        }
        if let Some(v) = self.queue_snapshot_interval_ms {
            config.queue_snapshot_interval_ms = v;
        }
        if let Some(v) = self.retention_check_interval_ms {
            config.retention_check_interval_ms = v;
        }
        if let Some(v) = self.disk_warn_free_percent {
            config.disk_warn_free_percent = v;
        }
        if let Some(v) = self.shutdown_grace_ms {
            config.shutdown_grace_ms = v;
        }
        config.validate()?;
        Ok(config)
    }
}

/// A `--metrics-listen` value: an address, or `off` (also empty) for none.
fn metrics_address(value: &str) -> anyhow::Result<Option<SocketAddr>> {
    match value {
        "off" | "" => Ok(None),
        addr => addr
            .parse()
            .map(Some)
            .map_err(|err| anyhow::anyhow!("--metrics-listen {addr:?} is not an address: {err}")),
    }
}

/// The service name this process's spans carry.
fn program_name(command: Option<&Command>) -> &'static str {
    match command {
        Some(Command::Gateway(_)) => "ferry-gateway",
        _ => "ferry-broker",
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before the runtime starts its threads, so every heap they use is set up alike.
    let allocator = allocator::apply(AllocatorSettings {
        mmap_threshold_bytes: cli.allocator.malloc_mmap_threshold_bytes,
        trim_threshold_bytes: cli.allocator.malloc_trim_threshold_bytes,
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry-broker")
        .build()?;
    // The signal handlers are installed as the commands below are built.
    let _runtime_context = runtime.enter();
    // Dropped before the runtime: buffered spans are flushed while it still runs.
    let _telemetry = ferry_telemetry::init(
        program_name(cli.command.as_ref()),
        cli.log.log_format,
        ferry_telemetry::filter_from_env("FERRY_LOG", "info"),
    )?;
    tracing::debug!(?allocator, "allocator thresholds");
    match cli.command {
        Some(Command::Dev(args)) => runtime.block_on(dev::run(
            DevOptions {
                data_dir: args.data_dir,
                hosts: args.hosts,
                first_port: args.first_port,
                etcd_port: args.etcd_port,
                etcd_binary: args.etcd_binary,
                cluster: args.cluster,
            },
            standalone::termination_signal(),
        )),
        Some(Command::Gateway(args)) => runtime.block_on(gateway::run(
            args.into_options()?,
            standalone::termination_signal(),
            |bound| println!("ferry-gateway ready grpc={bound}"),
        )),
        Some(Command::Token {
            command:
                TokenCommand::Add {
                    tokens_file,
                    principal,
                    groups,
                },
        }) => {
            let token = authn::generate_token()?;
            authn::add_token(&tokens_file, &token, &principal, &groups)?;
            println!("{token}");
            Ok(())
        }
        Some(Command::Token {
            command: TokenCommand::Hash,
        }) => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            if token.trim().is_empty() {
                anyhow::bail!("no token on standard input");
            }
            println!("{}", authn::token_hash(&token));
            Ok(())
        }
        Some(Command::Metadata {
            command: MetadataCommand::Rebuild(args),
        }) => {
            let target = args.target()?;
            let report = runtime.block_on(rebuild::run(&args.data_dir, target))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Some(Command::Serve(args)) => {
            let (config, options) = (*args).into_options()?;
            runtime.block_on(serve::run(
                config,
                options,
                standalone::termination_signal(),
                print_ready,
            ))
        }
        command => {
            let args = match command {
                Some(Command::Standalone(args)) => args,
                _ => StandaloneArgs::parse_defaults()?,
            };
            let config = args.into_config()?;
            runtime.block_on(standalone::run(
                config,
                standalone::termination_signal(),
                print_ready,
            ))
        }
    }
}

/// One line on stdout that scripts and tests can wait for.
fn print_ready(bound: BoundAddresses) {
    let metrics = bound
        .metrics
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    println!("ferry-broker ready grpc={} metrics={metrics}", bound.grpc);
}

impl StandaloneArgs {
    /// The standalone flags with their defaults and environment variables applied.
    fn parse_defaults() -> anyhow::Result<Self> {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: StandaloneArgs,
        }
        Ok(Only::try_parse_from(["ferry-broker"])?.args)
    }
}
