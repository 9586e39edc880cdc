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
use std::sync::{Arc, RwLock};
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
    current: RwLock<(Material, Arc<ServerConfig>)>,
}

impl ReloadingServerConfig {
    /// Reads the files; an error here stops the host from starting.
    pub fn load(files: ServerTlsFiles, protocol: Protocol) -> Result<Arc<Self>, TlsError> {
        let material = Material::read(&files)?;
        let config = Arc::new(material.server_config(&files, protocol)?);
        Ok(Arc::new(Self {
            files,
            protocol,
            current: RwLock::new((material, config)),
        }))
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
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (material, config);
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
    /// Loads the files `settings` names, for a gRPC listener.
    pub fn load(settings: ListenerTls) -> Result<Self, TlsError> {
        Self::load_for(settings, Protocol::Grpc)
    }

    /// Loads the files `settings` names, for a listener serving `protocol`.
    pub fn load_for(settings: ListenerTls, protocol: Protocol) -> Result<Self, TlsError> {
        Ok(Self {
            config: ReloadingServerConfig::load(settings.files.clone(), protocol)?,
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
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = sender.closed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: the next accept may succeed.
                tracing::warn!(%err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small responses must not wait for Nagle's algorithm (see service::serve).
        let _ = stream.set_nodelay(true);
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
