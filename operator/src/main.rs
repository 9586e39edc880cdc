//! `ferry-operator`: reconciles BrokerCluster, Topic and Queue resources. Every flag
//! can also be set through the environment variable named in its help.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Parser};
use ferry_operator::cluster::Validity;
use ferry_operator::context::{Context, DEFAULT_IMAGE, DefaultCluster, EtcdClientFiles, Settings};
use ferry_operator::controller::{self, Namespaces};
use ferry_operator::leader::{LeaderElector, LeaseSettings};
use ferry_operator::metadata::{EtcdMetadata, EtcdSettings, EtcdTls, MetaError};
use ferry_operator::metrics::Metrics;
use tokio::sync::watch;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// The Ferry Kubernetes operator.
#[derive(Parser, Debug)]
#[command(name = "ferry-operator", version, about)]
struct Cli {
    /// etcd client URLs the brokers use, comma-separated.
    #[arg(
        long,
        env = "FERRY_OPERATOR_ETCD",
        value_delimiter = ',',
        required = true
    )]
    etcd: Vec<String>,
    /// Longest wait for one etcd request, in ms.
    #[arg(long, env = "FERRY_OPERATOR_ETCD_TIMEOUT_MS", default_value_t = 5_000)]
    etcd_timeout_ms: u64,
    /// Most keys one etcd prefix listing may return (placement counts every topic
    /// and queue record).
    #[arg(
        long,
        env = "FERRY_OPERATOR_ETCD_LIST_LIMIT",
        default_value_t = 100_000
    )]
    etcd_list_limit: usize,
    /// PEM CA certificates etcd's certificate must chain to (default: the system's
    /// roots); for `https://` --etcd endpoints.
    #[arg(long, env = "FERRY_OPERATOR_ETCD_CA_FILE")]
    etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate for an etcd that requires one.
    #[arg(
        long,
        env = "FERRY_OPERATOR_ETCD_CERT_FILE",
        requires = "etcd_key_file"
    )]
    etcd_cert_file: Option<PathBuf>,
    /// PEM private key of --etcd-cert-file.
    #[arg(
        long,
        env = "FERRY_OPERATOR_ETCD_KEY_FILE",
        requires = "etcd_cert_file"
    )]
    etcd_key_file: Option<PathBuf>,
    /// How often the etcd TLS files are checked for a renewed certificate, in ms.
    #[arg(
        long,
        env = "FERRY_OPERATOR_ETCD_TLS_RELOAD_INTERVAL_MS",
        default_value_t = 10_000
    )]
    etcd_tls_reload_interval_ms: u64,
    /// etcd user, when etcd's authentication is on.
    #[arg(
        long,
        env = "FERRY_OPERATOR_ETCD_USER",
        requires = "etcd_password_file"
    )]
    etcd_user: Option<String>,
    /// File holding the etcd user's password (a trailing newline is ignored).
    #[arg(
        long,
        env = "FERRY_OPERATOR_ETCD_PASSWORD_FILE",
        requires = "etcd_user"
    )]
    etcd_password_file: Option<PathBuf>,
    /// Namespaces to watch, comma-separated; empty watches all.
    #[arg(long, env = "FERRY_OPERATOR_WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Address of the `/health` and `/metrics` endpoints.
    #[arg(long, env = "FERRY_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Whether to elect a leader through a Lease (turn off only for one replica).
    #[arg(long, env = "FERRY_OPERATOR_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// The leader Lease's name.
    #[arg(
        long,
        env = "FERRY_OPERATOR_LEASE_NAME",
        default_value = "ferry-operator"
    )]
    lease_name: String,
    /// The leader Lease's namespace (default: the pod's, from POD_NAMESPACE).
    #[arg(long, env = "FERRY_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long the lease lasts without renewal, in ms (rounded up to seconds).
    #[arg(
        long,
        env = "FERRY_OPERATOR_LEASE_DURATION_MS",
        default_value_t = 15_000
    )]
    lease_duration_ms: u64,
    /// How long the leader keeps leading without a renewal, in ms; below the duration.
    #[arg(
        long,
        env = "FERRY_OPERATOR_LEASE_RENEW_DEADLINE_MS",
        default_value_t = 10_000
    )]
    lease_renew_deadline_ms: u64,
    /// How often the lease is renewed or tried, in ms; below the renew deadline.
    #[arg(long, env = "FERRY_OPERATOR_LEASE_RETRY_MS", default_value_t = 2_000)]
    lease_retry_ms: u64,
    /// This replica's identity in the Lease and in events (default: POD_NAME, else
    /// the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log filter in tracing-subscriber syntax (`info`, `ferry_operator=debug`, …);
    /// default: RUST_LOG, else `info`.
    #[arg(long, env = "FERRY_LOG")]
    log: Option<String>,
    #[command(flatten)]
    log_output: ferry_telemetry::LogArgs,
    /// The broker image of clusters that name none.
    #[arg(long, env = "FERRY_OPERATOR_BROKER_IMAGE", default_value = DEFAULT_IMAGE)]
    broker_image: String,
    /// When the kubelet pulls broker images: Always, IfNotPresent or Never (default:
    /// Kubernetes' own, Always for a `:latest` tag and IfNotPresent otherwise).
    #[arg(long, env = "FERRY_OPERATOR_BROKER_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    broker_image_pull_policy: Option<String>,
    /// Name of the cluster created when a Topic or Queue finds none in its namespace.
    #[arg(
        long,
        env = "FERRY_OPERATOR_DEFAULT_CLUSTER_NAME",
        default_value = "ferry"
    )]
    default_cluster_name: String,
    /// Hosts of that cluster (raised to the replication factor asked for).
    #[arg(
        long,
        env = "FERRY_OPERATOR_DEFAULT_CLUSTER_HOSTS",
        default_value_t = 3
    )]
    default_cluster_hosts: i32,
    /// Broker image of that cluster (default: --broker-image).
    #[arg(long, env = "FERRY_OPERATOR_DEFAULT_CLUSTER_IMAGE")]
    default_cluster_image: Option<String>,
    /// Whether that cluster serves TLS (`spec.tls.enabled`).
    #[arg(
        long,
        env = "FERRY_OPERATOR_DEFAULT_CLUSTER_TLS",
        default_value_t = true,
        action = ArgAction::Set
    )]
    default_cluster_tls: bool,
    /// Whether that cluster authenticates callers by ServiceAccount token and enforces
    /// access rules (`spec.auth`).
    #[arg(
        long,
        env = "FERRY_OPERATOR_DEFAULT_CLUSTER_AUTH",
        default_value_t = true,
        action = ArgAction::Set
    )]
    default_cluster_auth: bool,
    /// How often a resource is reconciled without a change (drift repair, status), in ms.
    #[arg(
        long,
        env = "FERRY_OPERATOR_RESYNC_INTERVAL_MS",
        default_value_t = 30_000
    )]
    resync_interval_ms: u64,
    /// How often a BrokerCluster whose scale-down drains hosts is checked again (have
    /// they handed all their replicas over?), in ms.
    #[arg(
        long,
        env = "FERRY_OPERATOR_DRAIN_CHECK_INTERVAL_MS",
        default_value_t = 2_000
    )]
    drain_check_interval_ms: u64,
    /// How long after a failed reconcile it is retried, in ms.
    #[arg(long, env = "FERRY_OPERATOR_ERROR_REQUEUE_MS", default_value_t = 5_000)]
    error_requeue_ms: u64,
    /// Most reconciles running at once per controller and namespace.
    #[arg(
        long,
        env = "FERRY_OPERATOR_MAX_CONCURRENT_RECONCILES",
        default_value_t = 8
    )]
    max_concurrent_reconciles: u16,
    /// Lifetime of the CA the operator makes for each TLS BrokerCluster, in days.
    #[arg(long, env = "FERRY_OPERATOR_CA_VALIDITY_DAYS", default_value_t = 3650)]
    ca_validity_days: u64,
    /// Lifetime of the hosts' certificates, in hours; they are renewed after two
    /// thirds of it. More than three resync intervals, less than the CA's lifetime.
    #[arg(
        long,
        env = "FERRY_OPERATOR_CERTIFICATE_VALIDITY_HOURS",
        default_value_t = 2160
    )]
    certificate_validity_hours: u64,
    /// The Kubernetes cluster's DNS domain (the hosts' advertised names end in it).
    #[arg(
        long,
        env = "FERRY_OPERATOR_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    cluster_domain: String,
    /// The brokers' gRPC port.
    #[arg(long, env = "FERRY_OPERATOR_BROKER_PORT", default_value_t = 7070)]
    broker_port: i32,
    /// The brokers' metrics port.
    #[arg(
        long,
        env = "FERRY_OPERATOR_BROKER_METRICS_PORT",
        default_value_t = 7071
    )]
    broker_metrics_port: i32,
    /// The brokers' peer port (replication between hosts, apart from clients).
    #[arg(long, env = "FERRY_OPERATOR_BROKER_PEER_PORT", default_value_t = 7072)]
    broker_peer_port: i32,
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("invalid flags: {0}")]
    Flags(String),
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("etcd: {0}")]
    Metadata(#[from] MetaError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Cli {
    /// How to reach etcd, with the password read now (the TLS files are read at
    /// connect and followed).
    fn etcd_settings(&self) -> Result<EtcdSettings, MainError> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|err| {
                MainError::Flags(format!("reading {flag} {}: {err}", path.display()))
            })
        };
        let https = self.etcd.iter().any(|url| url.starts_with("https://"));
        if !https && (self.etcd_ca_file.is_some() || self.etcd_cert_file.is_some()) {
            return Err(MainError::Flags(format!(
                "--etcd-ca-file and --etcd-cert-file are for https:// endpoints, but --etcd \
                 names {:?}: use https:// (they are never sent over plaintext)",
                self.etcd
            )));
        }
        let tls = https.then(|| EtcdTls {
            ca_file: self.etcd_ca_file.clone(),
            identity_files: self.etcd_cert_file.clone().zip(self.etcd_key_file.clone()),
            reload_interval: Duration::from_millis(self.etcd_tls_reload_interval_ms),
        });
        let user = match (&self.etcd_user, &self.etcd_password_file) {
            (Some(name), Some(path)) => {
                let password =
                    String::from_utf8(read("--etcd-password-file", path)?).map_err(|_| {
                        MainError::Flags(format!(
                            "--etcd-password-file {} is not UTF-8",
                            path.display()
                        ))
                    })?;
                Some((
                    name.clone(),
                    password.trim_end_matches(['\n', '\r']).to_owned(),
                ))
            }
            _ => None,
        };
        Ok(EtcdSettings {
            endpoints: self.etcd.clone(),
            timeout: Duration::from_millis(self.etcd_timeout_ms),
            list_limit: self.etcd_list_limit,
            tls,
            user,
        })
    }

    fn validate(&self) -> Result<(), MainError> {
        let invalid = |msg: &str| Err(MainError::Flags(msg.to_owned()));
        if self.lease_renew_deadline_ms >= self.lease_duration_ms {
            return invalid("--lease-renew-deadline-ms must be below --lease-duration-ms");
        }
        if self.lease_retry_ms >= self.lease_renew_deadline_ms || self.lease_retry_ms == 0 {
            return invalid("--lease-retry-ms must be above 0 and below --lease-renew-deadline-ms");
        }
        if self.default_cluster_hosts < 1 {
            return invalid("--default-cluster-hosts must be at least 1");
        }
        if self.max_concurrent_reconciles == 0 || self.etcd_list_limit == 0 {
            return invalid("--max-concurrent-reconciles and --etcd-list-limit must be above 0");
        }
        if self.resync_interval_ms == 0
            || self.drain_check_interval_ms == 0
            || self.error_requeue_ms == 0
            || self.etcd_timeout_ms == 0
            || self.etcd_tls_reload_interval_ms == 0
        {
            return invalid("intervals and timeouts must be above 0");
        }
        // A renewal is due a third of a lifetime before expiry: a resync must come
        // within that third.
        let validity = self.settings().certificate_validity;
        if validity.host < Duration::from_millis(self.resync_interval_ms).saturating_mul(3)
            || validity.host >= validity.ca
        {
            return invalid(
                "--certificate-validity-hours must exceed three resync intervals and stay below \
                 --ca-validity-days",
            );
        }
        Ok(())
    }

    fn settings(&self) -> Settings {
        Settings {
            broker_image: self.broker_image.clone(),
            broker_image_pull_policy: self.broker_image_pull_policy.clone(),
            etcd_endpoints: self.etcd.clone(),
            default_cluster: DefaultCluster {
                name: self.default_cluster_name.clone(),
                hosts: self.default_cluster_hosts,
                image: self.default_cluster_image.clone(),
                tls: self.default_cluster_tls,
                auth: self.default_cluster_auth,
            },
            resync_interval: Duration::from_millis(self.resync_interval_ms),
            drain_check_interval: Duration::from_millis(self.drain_check_interval_ms),
            error_requeue: Duration::from_millis(self.error_requeue_ms),
            cluster_domain: self.cluster_domain.clone(),
            broker_port: self.broker_port,
            broker_metrics_port: self.broker_metrics_port,
            broker_peer_port: self.broker_peer_port,
            certificate_validity: Validity {
                ca: Duration::from_secs(self.ca_validity_days.saturating_mul(86_400)),
                host: Duration::from_secs(self.certificate_validity_hours.saturating_mul(3_600)),
            },
            etcd_client_files: self
                .etcd
                .iter()
                .any(|url| url.starts_with("https://"))
                .then(|| EtcdClientFiles {
                    ca: self.etcd_ca_file.clone(),
                    identity: self.etcd_cert_file.clone().zip(self.etcd_key_file.clone()),
                }),
        }
    }

    fn namespaces(&self) -> Namespaces {
        let listed: Vec<String> = self
            .watch_namespaces
            .iter()
            .map(|ns| ns.trim().to_owned())
            .filter(|ns| !ns.is_empty())
            .collect();
        if listed.is_empty() {
            Namespaces::All
        } else {
            Namespaces::Only(listed)
        }
    }
}

fn identity(cli: &Cli) -> String {
    cli.identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| "ferry-operator".to_owned())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves once `leading` holds `wanted` (or the sender is gone).
async fn until(mut leading: watch::Receiver<bool>, wanted: bool) {
    let _ = leading.wait_for(|now| *now == wanted).await;
}

async fn run(cli: Cli) -> Result<(), MainError> {
    cli.validate()?;
    let identity = identity(&cli);
    let client = kube::Client::try_default().await?;
    let metadata = EtcdMetadata::connect(&cli.etcd_settings()?).await?;
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(
        client.clone(),
        metadata,
        cli.settings(),
        Arc::clone(&metrics),
        Some(identity.clone()),
    ));

    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let router = ferry_operator::http::router(Arc::clone(&metrics));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            error!(%err, "the HTTP server stopped");
        }
    });

    let (leading_tx, leading) = watch::channel(!cli.leader_election);
    let elector = cli.leader_election.then(|| {
        let namespace = cli
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_owned());
        LeaderElector::new(
            client.clone(),
            LeaseSettings {
                name: cli.lease_name.clone(),
                namespace,
                identity: identity.clone(),
                lease_duration: Duration::from_millis(cli.lease_duration_ms),
                renew_deadline: Duration::from_millis(cli.lease_renew_deadline_ms),
                retry_period: Duration::from_millis(cli.lease_retry_ms),
            },
        )
    });
    let election = elector.clone().map(|e| tokio::spawn(e.run(leading_tx)));
    info!(%identity, listen = %cli.listen, "ferry-operator started");

    let namespaces = cli.namespaces();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = until(leading.clone(), true) => {}
            () = &mut shutdown => break,
        }
        metrics.set_leading(true);
        info!("leading: controllers start");
        let lost = until(leading.clone(), false);
        tokio::select! {
            () = controller::run(Arc::clone(&ctx), &namespaces, cli.max_concurrent_reconciles, lost) => {
                info!("leadership lost: controllers stopped");
            }
            () = &mut shutdown => break,
        }
        metrics.set_leading(false);
    }
    metrics.set_leading(false);
    if let Some(task) = election {
        task.abort();
    }
    if let Some(elector) = elector
        && let Err(err) = elector.release().await
    {
        error!(%err, "could not release the leader lease");
    }
    info!("ferry-operator stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // FERRY_LOG, the broker's variable, is what the chart sets from
    // `operator.logLevel`; RUST_LOG is honoured when it is absent.
    let filter = match cli.log.as_deref() {
        Some(directives) => EnvFilter::try_new(directives).ok(),
        None => EnvFilter::try_from_default_env().ok(),
    }
    .unwrap_or_else(|| EnvFilter::new("info"));
    let telemetry = match ferry_telemetry::init("ferry-operator", cli.log_output.log_format, filter)
    {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("ferry-operator: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(%err, "ferry-operator failed");
            ExitCode::FAILURE
        }
    };
    // The flush waits for the exporter, which runs on this runtime.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}
