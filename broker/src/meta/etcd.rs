//! The metadata store on etcd, for broker clusters: the same contract as the embedded
//! store, over etcd's KV, Txn and Watch APIs (etcd-client).
//!
//! One background task watches everything under the store's root and fans the changes
//! out to every [`Watch`]. When the watch stream breaks (etcd restarted, network
//! trouble) it resumes from the revision after the last event it delivered, so
//! watchers see no gap; if etcd compacted that history away, watchers are told to
//! re-read (their receiver closes) and a fresh stream starts at the current revision;
//! the same happens when etcd's revision goes backwards (it lost its data).
//!
//! With TLS, the certificate files are read again every reload interval; when they
//! change, a new client is built and checked against etcd, then handed out to every
//! request and reconnection from then on ([`EtcdConnection`]), so a rotated client
//! certificate is used without a restart. Streams already open stay on their
//! connection (etcd checks a client certificate only at the handshake).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::{
    BoxFuture, Compare, KeyValue, MetaError, MetadataStore, Op, Revision, TxnOutcome, Watch,
    WatchEvent,
};

/// Settings of the etcd store.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Keys this store reads, writes and watches all start with this.
    pub root: String,
    /// Longest wait for one etcd request.
    pub request_timeout: Duration,
    /// Longest wait for a connection to an etcd member.
    pub connect_timeout: Duration,
    /// Pause before re-opening a broken watch stream.
    pub watch_retry: Duration,
    /// Watch events buffered per watcher before it is told it lagged.
    pub watch_buffer: usize,
    /// TLS, for `https://` endpoints (which never fall back to plaintext).
    pub tls: Option<EtcdTls>,
    /// The etcd user, when etcd's authentication is on.
    pub user: Option<EtcdUser>,
}

/// How the etcd client checks etcd's certificate and proves its own identity: the
/// files, read at connect and again whenever they change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM CA certificates etcd's certificate must chain to; `None` trusts the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key files, for an etcd started with
    /// `--client-cert-auth`.
    pub identity_files: Option<(PathBuf, PathBuf)>,
    /// How often the files are checked for a change; `None` reads them once (a
    /// command that ends soon).
    pub reload_interval: Option<Duration>,
}

/// What the TLS files held when last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsMaterial {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl EtcdTls {
    /// Reads the files now.
    fn read(&self) -> Result<TlsMaterial, MetaError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|err| MetaError::Backend {
                operation: "reading an etcd TLS file",
                reason: format!("{}: {err}", path.display()),
            })
        };
        Ok(TlsMaterial {
            ca_pem: self.ca_file.as_ref().map(read).transpose()?,
            identity: match &self.identity_files {
                Some((cert, key)) => Some((read(cert)?, read(key)?)),
                None => None,
            },
        })
    }
}

impl TlsMaterial {
    fn client_config(&self) -> etcd_client::TlsOptions {
        let mut tls = etcd_client::TlsOptions::new();
        tls = match &self.ca_pem {
            Some(ca) => tls.ca_certificate(etcd_client::Certificate::from_pem(ca)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        tls
    }
}

/// An etcd user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdUser {
    /// The user name.
    pub name: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for EtcdUser {
    // The password stays out of logs and error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl EtcdConfig {
    /// Defaults for `endpoints`, rooted at Ferry's key prefix.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            root: super::keys::ROOT.to_owned(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            watch_retry: Duration::from_millis(500),
            watch_buffer: 1024,
            tls: None,
            user: None,
        }
    }
}

/// The etcd client every request takes its channel from: replaced when the TLS files
/// it was built from change, so new requests and reconnections present the renewed
/// certificate.
#[derive(Clone)]
pub struct EtcdConnection {
    current: Arc<RwLock<Client>>,
}

impl std::fmt::Debug for EtcdConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConnection").finish_non_exhaustive()
    }
}

impl EtcdConnection {
    fn new(client: Client) -> Self {
        Self {
            current: Arc::new(RwLock::new(client)),
        }
    }

    /// The client to use now; take it again for each new request or stream.
    pub fn client(&self) -> Client {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, client: Client) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = client;
    }
}

/// The metadata store on an etcd cluster.
pub struct EtcdStore {
    connection: EtcdConnection,
    /// Replaced when history was compacted away: dropping the old sender closes every
    /// receiver, which is how watchers learn they must re-read.
    events: Arc<Mutex<broadcast::Sender<WatchEvent>>>,
    watcher: JoinHandle<()>,
    /// Follows the TLS files, when there are files to follow.
    reloader: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.watcher.abort();
        if let Some(reloader) = &self.reloader {
            reloader.abort();
        }
    }
}

/// Why etcd could not be reached at start-up, with the whole cause chain: the top
/// level says only "transport error" or "operation was canceled", the cause (a
/// refused connection, a certificate etcd or Ferry did not accept) is further down.
fn unreachable(endpoints: &[String], err: &etcd_client::Error) -> MetaError {
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !reason.contains(&part) {
            reason.push_str(": ");
            reason.push_str(&part);
        }
        source = cause.source();
    }
    MetaError::Unavailable(format!(
        "cannot reach etcd at {}: {reason}",
        endpoints.join(",")
    ))
}

fn classify(operation: &'static str, err: etcd_client::Error) -> MetaError {
    use etcd_client::Error as E;
    match err {
        E::TransportError(err) => MetaError::Unavailable(format!("{operation}: {err}")),
        // A broken connection reaches us as an `Unknown` status carrying the transport
        // error as its source.
        E::GRpcStatus(status)
            if matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Aborted
                    | tonic::Code::ResourceExhausted
            ) || (status.code() == tonic::Code::Unknown
                && std::error::Error::source(&status).is_some()) =>
        {
            MetaError::Unavailable(format!("{operation}: {}", status.message()))
        }
        other => MetaError::Backend {
            operation,
            reason: other.to_string(),
        },
    }
}

fn revision(value: i64) -> Revision {
    u64::try_from(value).unwrap_or(0)
}

fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue, MetaError> {
    let key = kv.key_str().map_err(|err| MetaError::Decode {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: err.to_string(),
    })?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        mod_revision: revision(kv.mod_revision()),
    })
}

/// A client for `config`, presenting `tls` (it connects at its first request, or now
/// to sign in).
async fn open(
    config: &EtcdConfig,
    tls: Option<&TlsMaterial>,
) -> Result<Client, etcd_client::Error> {
    let mut options = ConnectOptions::new()
        .with_timeout(config.request_timeout)
        .with_connect_timeout(config.connect_timeout)
        .with_keep_alive(Duration::from_secs(5), config.request_timeout);
    if let Some(tls) = tls {
        options = options.with_tls(tls.client_config());
    }
    if let Some(user) = &config.user {
        // etcd's tokens expire (5 minutes by default); a long-lived host renews its
        // own rather than fail every request after that.
        options = options
            .with_user(user.name.clone(), user.password.clone())
            .with_auto_token_refresh(true);
    }
    Client::connect(&config.endpoints, Some(options)).await
}

/// etcd's current revision under the root, which also proves the client gets through.
async fn current_revision(
    client: &mut Client,
    config: &EtcdConfig,
) -> Result<i64, etcd_client::Error> {
    let response = client
        .get(
            config.root.as_str(),
            Some(GetOptions::new().with_count_only()),
        )
        .await?;
    Ok(response
        .header()
        .map(|header| header.revision())
        .unwrap_or(0))
}

impl EtcdStore {
    /// Connects to etcd and starts watching the root. Fails when no member answers
    /// within the connect timeout.
    pub async fn connect(config: EtcdConfig) -> Result<Self, MetaError> {
        let material = config.tls.as_ref().map(EtcdTls::read).transpose()?;
        let mut client = open(&config, material.as_ref())
            .await
            .map_err(|err| unreachable(&config.endpoints, &err))?;
        // Watch from the revision after the one current now, so no change made after
        // `connect` returns is missed.
        let current = current_revision(&mut client, &config)
            .await
            .map_err(|err| unreachable(&config.endpoints, &err))?;
        let connection = EtcdConnection::new(client);
        let (sender, _) = broadcast::channel(config.watch_buffer.max(1));
        let events = Arc::new(Mutex::new(sender));
        let watcher = tokio::spawn(watch_root(
            connection.clone(),
            config.clone(),
            Arc::clone(&events),
            current + 1,
        ));
        let reloader = match (&config.tls, material) {
            (Some(tls), Some(material)) => tls.reload_interval.map(|interval| {
                tokio::spawn(follow_tls_files(
                    connection.clone(),
                    config.clone(),
                    interval,
                    material,
                ))
            }),
            _ => None,
        };
        Ok(Self {
            connection,
            events,
            watcher,
            reloader,
        })
    }

    /// The etcd connection, for the cluster work that needs more than key-value
    /// access (leases, elections).
    pub fn connection(&self) -> EtcdConnection {
        self.connection.clone()
    }
}

/// Reads the TLS files every `interval`; when they changed, builds a client from them
/// and, once etcd answers it, hands it out instead of the old one. A client etcd
/// refuses (a certificate it does not trust yet) is tried again at the next check
/// while the old one stays in use.
async fn follow_tls_files(
    connection: EtcdConnection,
    config: EtcdConfig,
    interval: Duration,
    mut in_use: TlsMaterial,
) {
    let Some(tls) = config.tls.clone() else {
        return;
    };
    let mut warned_for: Option<TlsMaterial> = None;
    loop {
        tokio::time::sleep(interval).await;
        let material = match tls.read() {
            Ok(material) => material,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the etcd TLS files; keeping the old ones");
                continue;
            }
        };
        if material == in_use {
            continue;
        }
        let checked = match open(&config, Some(&material)).await {
            Ok(mut client) => current_revision(&mut client, &config).await.map(|_| client),
            Err(err) => Err(err),
        };
        match checked {
            Ok(client) => {
                connection.replace(client);
                in_use = material;
                warned_for = None;
                tracing::info!("etcd TLS files changed; new requests use the new certificate");
            }
            Err(err) => {
                if warned_for.as_ref() != Some(&material) {
                    tracing::warn!(
                        error = %unreachable(&config.endpoints, &err),
                        "etcd TLS files changed but etcd does not accept them yet; \
                         keeping the old ones and trying again"
                    );
                    warned_for = Some(material);
                }
            }
        }
    }
}

/// Fans etcd watch events under `config.root` out to the broadcast, resuming after
/// stream failures without a gap.
async fn watch_root(
    connection: EtcdConnection,
    config: EtcdConfig,
    events: Arc<Mutex<broadcast::Sender<WatchEvent>>>,
    mut next_revision: i64,
) {
    loop {
        let mut client = connection.client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(next_revision);
        let mut stream = match client.watch(config.root.as_str(), Some(options)).await {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "etcd watch could not start; retrying");
                tokio::time::sleep(config.watch_retry).await;
                continue;
            }
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "etcd watch stream broke; resuming");
                    break;
                }
            };
            // A store whose revision is below one already delivered lost its history
            // (wiped, or restored from an older backup): a watch resumed at the old
            // revision would wait silently for it, missing everything until then.
            let current = response.header().map_or(0, |header| header.revision());
            if current > 0 && current + 1 < next_revision {
                tracing::error!(
                    from = next_revision,
                    current,
                    "etcd's revision went backwards: it lost its data; watchers must re-read"
                );
                let fresh = broadcast::channel(config.watch_buffer.max(1)).0;
                *events.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
                next_revision = current + 1;
                break;
            }
            if response.canceled() {
                let compacted = response.compact_revision();
                if compacted > 0 {
                    tracing::warn!(
                        from = next_revision,
                        compacted,
                        "etcd compacted watch history; watchers must re-read"
                    );
                    let fresh = broadcast::channel(config.watch_buffer.max(1)).0;
                    *events.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
                    next_revision = compacted;
                }
                break;
            }
            let sender = events.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                next_revision = next_revision.max(kv.mod_revision() + 1);
                let delivered = match event.event_type() {
                    EventType::Put => match key_value(kv) {
                        Ok(kv) => WatchEvent::Put(kv),
                        Err(err) => {
                            tracing::warn!(error = %err, "skipping a watch event");
                            continue;
                        }
                    },
                    EventType::Delete => WatchEvent::Delete {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        revision: revision(kv.mod_revision()),
                    },
                };
                let _ = sender.send(delivered);
            }
        }
        tokio::time::sleep(config.watch_retry).await;
    }
}

impl MetadataStore for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, MetaError>> {
        Box::pin(async move {
            let mut client = self.connection.client();
            let response = client
                .get(key, None)
                .await
                .map_err(|err| classify("get", err))?;
            response.kvs().first().map(key_value).transpose()
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, MetaError>> {
        Box::pin(async move {
            let mut client = self.connection.client();
            let response = client
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|err| classify("list", err))?;
            response.kvs().iter().map(key_value).collect()
        })
    }

    fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> BoxFuture<'_, Result<TxnOutcome, MetaError>> {
        Box::pin(async move {
            let compares: Vec<EtcdCompare> = compares
                .into_iter()
                .map(|compare| match compare {
                    Compare::ModRevision {
                        key,
                        revision: None,
                    } => EtcdCompare::create_revision(key, CompareOp::Equal, 0),
                    Compare::ModRevision {
                        key,
                        revision: Some(revision),
                    } => EtcdCompare::mod_revision(
                        key,
                        CompareOp::Equal,
                        i64::try_from(revision).unwrap_or(i64::MAX),
                    ),
                })
                .collect();
            let ops: Vec<TxnOp> = ops
                .into_iter()
                .map(|op| match op {
                    Op::Put { key, value } => TxnOp::put(key, value, None),
                    Op::Delete { key } => TxnOp::delete(key, None),
                    Op::DeletePrefix { prefix } => {
                        TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix()))
                    }
                })
                .collect();
            let mut client = self.connection.client();
            let response = client
                .txn(Txn::new().when(compares).and_then(ops))
                .await
                .map_err(|err| classify("transaction", err))?;
            Ok(TxnOutcome {
                succeeded: response.succeeded(),
                revision: response
                    .header()
                    .map(|header| revision(header.revision()))
                    .unwrap_or(0),
            })
        })
    }

    fn watch(&self, prefix: &str) -> Watch {
        let events = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .subscribe();
        Watch {
            prefix: prefix.to_owned(),
            events,
        }
    }
}
