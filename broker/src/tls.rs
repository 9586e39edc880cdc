//! TLS for the host's gRPC listener and for the channels it opens to other hosts.
//!
//! A listener's certificate, key and client CA come from PEM files and are read again
//! whenever they change, so certificates rotate without a restart: connections made
//! after the change get the new certificate, open ones keep theirs. Handshakes run
//! beside the accept loop with a deadline and a bound on how many are pending, so a
//! slow or garbage peer costs one slot for a bounded time and nothing else.
//!
//! One crypto provider for the whole tree: ring (kube's client uses it too).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The files a TLS listener is configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign the client certificates the listener requires
    /// (mutual TLS); `None` accepts clients without certificates.
    pub client_ca: Option<PathBuf>,
}

/// How a listener runs TLS: its files and the limits on handshakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The certificate, key and client CA.
    pub files: ServerTlsFiles,
    /// How often the files are checked for a change: 10 s.
    pub reload_interval: Duration,
    /// Longest a TLS handshake may take before the connection is dropped: 10 s.
    pub handshake_timeout: Duration,
    /// Most handshakes in progress at once; further connections wait in the listen
    /// backlog: 1,024.
    pub max_pending_handshakes: usize,
}

impl ListenerTls {
    /// The files with the default limits.
    pub fn new(files: ServerTlsFiles) -> Self {
        Self {
            files,
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 1024,
        }
    }
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the combination (say, a key that does not match the certificate).
    #[error("the TLS configuration from {cert} is unusable: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The client CA could not build a certificate verifier.
    #[error("client CA {path} is unusable: {reason}")]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a PEM certificate file: {err}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

/// The private key in a PEM file.
fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| TlsError::Pem {
        path: path.to_owned(),
        what: format!("holds no usable PEM private key: {err}"),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The contents of a listener's files, kept to tell when they change.
#[derive(Debug, PartialEq, Eq)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Material {
    fn read(files: &ServerTlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            client_ca: files.client_ca.as_deref().map(read).transpose()?,
        })
    }

    fn server_config(
        &self,
        files: &ServerTlsFiles,
        protocol: Protocol,
    ) -> Result<ServerConfig, TlsError> {
        let certs = certificates(&files.cert, &self.cert)?;
        let key = private_key(&files.key, &self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config {
                cert: files.cert.clone(),
                source,
            })?;
        let builder = match (&files.client_ca, &self.client_ca) {
            (Some(path), Some(pem)) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates(path, pem)? {
                    roots.add(ca).map_err(|err| TlsError::ClientCa {
                        path: path.clone(),
                        reason: err.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|err| TlsError::ClientCa {
                            path: path.clone(),
                            reason: err.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config =
            builder
                .with_single_cert(certs, key)
                .map_err(|source| TlsError::Config {
                    cert: files.cert.clone(),
                    source,
                })?;
        config.alpn_protocols = match protocol {
            // gRPC is HTTP/2; clients such as grpcio insist on negotiating it.
            Protocol::Grpc => vec![b"h2".to_vec()],
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
        };
        Ok(config)
    }
}

/// Which of a process's listeners a TLS configuration serves: the label of its
/// certificate's expiry metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListenerRole {
    /// The client gRPC listener (a host's or a gateway's).
    Client,
    /// The peer gRPC listener between hosts.
    Peer,
    /// The metrics HTTP listener.
    Metrics,
}

impl ListenerRole {
    /// The metric label: `client`, `peer` or `metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerRole::Client => "client",
            ListenerRole::Peer => "peer",
            ListenerRole::Metrics => "metrics",
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            ListenerRole::Client | ListenerRole::Peer => Protocol::Grpc,
            ListenerRole::Metrics => Protocol::Http1,
        }
    }
}

/// The TLS configurations this process serves, so that the metrics endpoint can
/// report when each one's certificate expires without holding the listeners.
static SERVED: Mutex<Vec<Weak<ReloadingServerConfig>>> = Mutex::new(Vec::new());

/// The not-after time (seconds since the epoch) of the certificate each live TLS
/// listener of this process serves now, by listener; the earliest where a process
/// runs more than one of a kind.
pub fn served_certificate_expiry() -> Vec<(ListenerRole, i64)> {
    let mut served = SERVED.lock().unwrap_or_else(|e| e.into_inner());
    served.retain(|config| config.strong_count() > 0);
    let mut expiry: std::collections::BTreeMap<ListenerRole, i64> = Default::default();
    for config in served.iter().filter_map(Weak::upgrade) {
        let not_after = config.not_after.load(Ordering::Relaxed);
        // 0: the certificate's validity could not be read (see `not_after_unix`).
        if not_after != 0 {
            let entry = expiry.entry(config.role).or_insert(not_after);
            *entry = (*entry).min(not_after);
        }
    }
    expiry.into_iter().collect()
}

/// The not-after time of the leaf (first) certificate of a PEM chain, in seconds
/// since the epoch; `None` when it cannot be read.
fn leaf_not_after(pem: &[u8]) -> Option<i64> {
    let leaf = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    not_after_unix(leaf.as_ref())
}

/// One DER element: its tag, its contents and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits count the length's bytes; certificates need few.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |len, byte| (len << 8) | usize::from(*byte));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// The not-after time of a DER X.509 certificate, in seconds since the epoch
/// (RFC 5280 4.1: Certificate → tbsCertificate → validity → notAfter). A few lines of
/// DER reading rather than an X.509 crate: this one field is all the broker needs.
pub fn not_after_unix(der: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = der_element(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = der_element(certificate)? else {
        return None;
    };
    // [0] EXPLICIT version, absent in version 1 certificates.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        tbs = der_element(tbs)?.2;
    }
    let (SEQUENCE, validity, _) = der_element(tbs)? else {
        return None;
    };
    let (_, _, validity) = der_element(validity)?;
    let (tag, time, _) = der_element(validity)?;
    let time = std::str::from_utf8(time).ok()?;
    match tag {
        0x17 => {
            // UTCTime YYMMDDHHMMSSZ: years 50-99 are 19xx (RFC 5280 4.1.2.5.1).
            let yy: i64 = time.get(0..2)?.parse().ok()?;
            let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
            unix_time(year, time.get(2..)?)
        }
        0x18 => unix_time(time.get(0..4)?.parse().ok()?, time.get(4..)?),
        _ => None,
    }
}

/// Seconds since the epoch of `year` and `rest`, `MMDDHHMMSSZ`.
fn unix_time(year: i64, rest: &str) -> Option<i64> {
    if rest.len() != 11 || !rest.ends_with('Z') {
        return None;
    }
    let field = |at: usize| -> Option<i64> { rest.get(at..at + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// What a TLS listener serves, for the protocol it offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2.
    Grpc,
    /// HTTP/1.1 (the metrics endpoint).
    Http1,
}

/// A listener's TLS configuration that follows its files.
#[derive(Debug)]
pub struct ReloadingServerConfig {
    files: ServerTlsFiles,
    protocol: Protocol,
    role: ListenerRole,
    current: RwLock<(Material, Arc<ServerConfig>)>,
    /// The served certificate's not-after, seconds since the epoch (0: unreadable).
    not_after: AtomicI64,
}

impl ReloadingServerConfig {
    /// Reads the files; an error here stops the host from starting.
    pub fn load(files: ServerTlsFiles, role: ListenerRole) -> Result<Arc<Self>, TlsError> {
        let protocol = role.protocol();
        let material = Material::read(&files)?;
        let config = Arc::new(material.server_config(&files, protocol)?);
        let not_after = AtomicI64::new(leaf_not_after(&material.cert).unwrap_or(0));
        let this = Arc::new(Self {
            files,
            protocol,
            role,
            current: RwLock::new((material, config)),
            not_after,
        });
        SERVED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&this));
        Ok(this)
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&current.1)
    }

    /// Reads the files again and, when they changed and make a usable configuration,
    /// installs it. `Ok(true)` when it did; an error leaves the previous one in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let material = Material::read(&self.files)?;
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == material {
                return Ok(false);
            }
        }
        let config = Arc::new(material.server_config(&self.files, self.protocol)?);
        let not_after = leaf_not_after(&material.cert).unwrap_or(0);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (material, config);
        self.not_after.store(not_after, Ordering::Relaxed);
        Ok(true)
    }

    /// Checks the files every `interval` until the returned task is aborted.
    fn spawn_reloader(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            // A rotation writes the certificate and the key one after the other; a
            // check between the two sees a mismatch, keeps the old pair and warns once.
            let mut failing = false;
            loop {
                ticker.tick().await;
                match this.reload() {
                    Ok(true) => {
                        failing = false;
                        tracing::info!(cert = %this.files.cert.display(), "TLS certificate reloaded");
                    }
                    Ok(false) => failing = false,
                    Err(err) if !failing => {
                        failing = true;
                        tracing::warn!(%err, "TLS files changed but are unusable; keeping the previous certificate");
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

/// A TLS listener ready to hand to tonic: its configuration and limits.
#[derive(Debug, Clone)]
pub struct TlsListener {
    config: Arc<ReloadingServerConfig>,
    settings: ListenerTls,
}

impl TlsListener {
    /// Loads the files `settings` names, for a client gRPC listener.
    pub fn load(settings: ListenerTls) -> Result<Self, TlsError> {
        Self::load_as(settings, ListenerRole::Client)
    }

    /// Loads the files `settings` names, for a listener serving `protocol`: gRPC for
    /// clients, or HTTP/1.1 for metrics.
    pub fn load_for(settings: ListenerTls, protocol: Protocol) -> Result<Self, TlsError> {
        let role = match protocol {
            Protocol::Grpc => ListenerRole::Client,
            Protocol::Http1 => ListenerRole::Metrics,
        };
        Self::load_as(settings, role)
    }

    /// Loads the files `settings` names, for the listener `role`.
    pub fn load_as(settings: ListenerTls, role: ListenerRole) -> Result<Self, TlsError> {
        Ok(Self {
            config: ReloadingServerConfig::load(settings.files.clone(), role)?,
            settings,
        })
    }

    /// Accepts connections on `listener` and yields them once their handshake is
    /// done; reloads the files while the stream lives.
    pub fn incoming(
        self,
        listener: TcpListener,
    ) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, self, sender));
        ReceiverStream::new(receiver)
    }
}

/// Accepts until the receiving end (the server) is gone.
async fn accept_loop(
    listener: TcpListener,
    tls: TlsListener,
    sender: mpsc::Sender<io::Result<TlsStream<TcpStream>>>,
) {
    let reloader = tls
        .config
        .spawn_reloader(tls.settings.reload_interval.max(Duration::from_millis(10)));
    let pending = Arc::new(Semaphore::new(tls.settings.max_pending_handshakes.max(1)));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&pending).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = sender.closed() => break,
        };
        let stream = tokio::select! {
            stream = crate::listener::accept(&listener) => stream,
            () = sender.closed() => break,
        };
        let acceptor = TlsAcceptor::from(tls.config.current());
        let sender = sender.clone();
        let timeout = tls.settings.handshake_timeout;
        tokio::spawn(async move {
            let peer = stream.peer_addr().ok();
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    drop(permit);
                    let _ = sender.send(Ok(stream)).await;
                }
                Ok(Err(err)) => tracing::debug!(?peer, %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
            }
        });
    }
    reloader.abort();
}

/// How this process dials broker hosts: plaintext, or TLS trusting a CA and, when the
/// hosts require client certificates, presenting one. The files are read again when
/// they change (checked at most once per reload interval, as channels are made), so
/// a renewed certificate reaches new connections without a restart;
/// [`HostDialing::generation`] tells holders of long-lived channels to make new ones.
#[derive(Debug, Clone, Default)]
pub struct HostDialing {
    tls: Option<Arc<DialingTls>>,
}

/// The files a process dials hosts over TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialingTlsFiles {
    /// PEM CA certificates that sign the hosts' certificates.
    pub ca: PathBuf,
    /// This process's certificate and key, for hosts that require one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// How often the files are checked for a change.
    pub reload_interval: Duration,
}

/// The dialing TLS configuration and the files it follows.
#[derive(Debug)]
struct DialingTls {
    files: DialingTlsFiles,
    // A std mutex: held only to compare and swap the configuration, never across an
    // await.
    current: std::sync::Mutex<DialingState>,
}

#[derive(Debug)]
struct DialingState {
    material: Vec<Vec<u8>>,
    config: ClientTlsConfig,
    generation: u64,
    checked: std::time::Instant,
}

impl DialingTlsFiles {
    /// The files' contents, in a fixed order (CA, then certificate and key).
    fn read(&self) -> Result<Vec<Vec<u8>>, TlsError> {
        let mut material = vec![read(&self.ca)?];
        if let Some((cert, key)) = &self.identity {
            material.push(read(cert)?);
            material.push(read(key)?);
        }
        Ok(material)
    }

    /// A client configuration from `material` (as [`DialingTlsFiles::read`] gives it),
    /// every file checked first.
    fn config(&self, material: &[Vec<u8>]) -> Result<ClientTlsConfig, TlsError> {
        let empty = Vec::new();
        let ca = material.first().unwrap_or(&empty);
        certificates(&self.ca, ca)?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let (Some((cert_path, key_path)), [_, cert, key]) = (&self.identity, material) {
            certificates(cert_path, cert)?;
            private_key(key_path, key)?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(config)
    }
}

impl HostDialing {
    /// Plaintext `http://` channels.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// TLS channels configured from `files`, read now; an error here stops the
    /// process from starting.
    pub fn tls(files: &DialingTlsFiles) -> Result<Self, TlsError> {
        let material = files.read()?;
        let config = files.config(&material)?;
        Ok(Self {
            tls: Some(Arc::new(DialingTls {
                files: files.clone(),
                current: std::sync::Mutex::new(DialingState {
                    material,
                    config,
                    generation: 0,
                    checked: std::time::Instant::now(),
                }),
            })),
        })
    }

    /// Counts configuration changes: a channel made under an older generation
    /// reconnects with the files it was made with, so its holder makes a new one.
    pub fn generation(&self) -> u64 {
        self.tls.as_ref().map_or(0, |tls| tls.current().1)
    }

    /// Whether channels use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// An endpoint for `address` (`host:port`) with the scheme and TLS settings.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|err| format!("unusable host address {address:?}: {err}"))?;
        match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.current().0)
                .map_err(|err| format!("TLS for {address:?}: {err}")),
            None => Ok(endpoint),
        }
    }
}

impl DialingTls {
    /// The configuration to dial with and its generation, read again from the files
    /// first when the reload interval has passed and they changed. Unusable files
    /// (a rotation caught between the certificate and the key) keep the previous
    /// configuration.
    fn current(&self) -> (ClientTlsConfig, u64) {
        let mut state = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= self.files.reload_interval {
            state.checked = std::time::Instant::now();
            match self.files.read().and_then(|material| {
                if material == state.material {
                    return Ok(None);
                }
                let config = self.files.config(&material)?;
                Ok(Some((material, config)))
            }) {
                Ok(Some((material, config))) => {
                    state.material = material;
                    state.config = config;
                    state.generation += 1;
                    tracing::info!(ca = %self.files.ca.display(), "TLS files for dialing hosts reloaded");
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%err, "TLS files for dialing hosts changed but are unusable; keeping the previous ones");
                }
            }
        }
        (state.config.clone(), state.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `openssl req -x509 -newkey ec … -days 3650` (a UTCTime not-after).
    const UTC_TIME: &str = "-----BEGIN CERTIFICATE-----
MIIBgTCCASegAwIBAgIUDhsqlKc/K8koFuuxx4ovJrv/GhwwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLZXhwaXJ5LXRlc3QwHhcNMjYxMjA2MDgxMjMzWhcNMzYxMjAz
MDgxMjMzWjAWMRQwEgYDVQQDDAtleHBpcnktdGVzdDBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABJ9R7nJKsvTXZI42LyvspMZ0pJ7+GsDBxRs5jFn9Yax2fLG/s+SZ
DPlAZ5dHZsc4wriAsq/y2JH+83M9HpVQqvGjUzBRMB0GA1UdDgQWBBST8Hm773+3
osye4PJsgOZO9t63BDAfBgNVHSMEGDAWgBST8Hm773+3osye4PJsgOZO9t63BDAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCID4rUZ0ZG/qKIqH/RVaI
7kznplAuoAAa0bvHrVAV3bOEAiEAhMgAu9cEFSUcdgnf1v8IOE+Aex5dpRC9+UQ2
g4LNJTA=
-----END CERTIFICATE-----
";

    // `-days 10000`: a not-after past 2049 is a GeneralizedTime.
    const GENERALIZED_TIME: &str = "-----BEGIN CERTIFICATE-----
MIIBbzCCARWgAwIBAgIUZVZ/7rOcaF5qjIpLUYiBdNAKWLAwCgYIKoZIzj0EAwIw
DDEKMAgGA1UEAwwBZzAgFw0yNjEyMDYwODEyMzVaGA8yMDU0MDQyMzA4MTIzNVow
DDEKMAgGA1UEAwwBZzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABIss4BK1i1Ll
PJCFmgB/kkexUCcTOqW4R+3V5hM4pywn8SRJGpOB9yBl1oGWQ9s0S5K/uPykx6UZ
NZT6cXYGR5+jUzBRMB0GA1UdDgQWBBQvKZ4FvfR5kFzDVj/pjTuWu7rjSDAfBgNV
HSMEGDAWgBQvKZ4FvfR5kFzDVj/pjTuWu7rjSDAPBgNVHRMBAf8EBTADAQH/MAoG
CCqGSM49BAMCA0gAMEUCIQDdxT9W/Bj5M6Y5nureUgRygHpiYumsW7OaYxDs5Ylf
yAIgRUpJ8BsVg8zVgH5Czg8LffJMyo3pQxL5kFsFwlnZyf0=
-----END CERTIFICATE-----
";

    #[test]
    fn reads_the_not_after_of_a_certificate() {
        // `date -d "$(openssl x509 -noout -enddate …)" +%s`.
        assert_eq!(leaf_not_after(UTC_TIME.as_bytes()), Some(2_111_904_753));
        assert_eq!(
            leaf_not_after(GENERALIZED_TIME.as_bytes()),
            Some(2_660_544_755)
        );
    }

    #[test]
    fn garbage_has_no_not_after() {
        assert_eq!(not_after_unix(b""), None);
        assert_eq!(not_after_unix(&[0x30, 0x82, 0xff]), None);
        assert_eq!(not_after_unix(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
        let der = CertificateDer::pem_slice_iter(UTC_TIME.as_bytes())
            .next()
            .and_then(Result::ok)
            .map(|der| der.as_ref().to_vec())
            .unwrap_or_default();
        for cut in 0..der.len() {
            // Any prefix either parses to the same field (the not-after comes early)
            // or to nothing: never a panic or another value.
            let got = not_after_unix(&der[..cut]);
            assert!(got.is_none() || got == Some(2_111_904_753), "cut at {cut}");
        }
    }
}
