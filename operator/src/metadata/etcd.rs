//! The [`MetadataClient`] on etcd (etcd-client), used by the running operator.
//!
//! With TLS the certificate files are read again every reload interval; a changed set
//! becomes a new client once etcd answers it, and every request after that uses it,
//! so a renewed client certificate needs no restart.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};

use super::{Entry, MetaError, MetadataClient};

/// How the operator talks to etcd.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Longest wait for one request (and for a connection).
    pub timeout: Duration,
    /// Most keys one prefix listing may return before it is an error.
    pub list_limit: usize,
    /// TLS, for `https://` endpoints: the CA PEM (`None`: the system's roots) and a
    /// client certificate and key PEM for an etcd that requires one.
    pub tls: Option<EtcdTls>,
    /// User and password, when etcd's authentication is on.
    pub user: Option<(String, String)>,
}

/// How the operator checks etcd's certificate and proves its own identity: the files,
/// read at connect and followed.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// PEM CA certificates etcd's certificate must chain to; `None` trusts the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key files.
    pub identity_files: Option<(PathBuf, PathBuf)>,
    /// How often the files are checked for a change.
    pub reload_interval: Duration,
}

/// What the TLS files held when last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsMaterial {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl EtcdTls {
    fn read(&self) -> Result<TlsMaterial, MetaError> {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|err| MetaError::Store(format!("reading {}: {err}", path.display())))
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

/// The metadata store on etcd.
#[derive(Clone)]
pub struct EtcdMetadata {
    client: Arc<RwLock<Client>>,
    timeout: Duration,
    list_limit: usize,
}

impl std::fmt::Debug for EtcdMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdMetadata")
            .field("timeout", &self.timeout)
            .field("list_limit", &self.list_limit)
            .finish_non_exhaustive()
    }
}

/// A client for `settings` presenting `tls`.
async fn open(settings: &EtcdSettings, tls: Option<&TlsMaterial>) -> Result<Client, MetaError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(settings.timeout)
        .with_timeout(settings.timeout);
    if let Some(tls) = tls {
        let mut config = etcd_client::TlsOptions::new();
        config = match &tls.ca_pem {
            Some(ca) => config.ca_certificate(etcd_client::Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(etcd_client::Identity::from_pem(cert, key));
        }
        options = options.with_tls(config);
    }
    if let Some((name, password)) = &settings.user {
        options = options
            .with_user(name.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    bounded(
        settings.timeout,
        Client::connect(&settings.endpoints, Some(options)),
    )
    .await
}

/// [`open`], then one read: whether etcd accepts the client.
async fn open_checked(settings: &EtcdSettings, tls: &TlsMaterial) -> Result<Client, MetaError> {
    let client = open(settings, Some(tls)).await?;
    let mut kv = client.kv_client();
    let probe = GetOptions::new().with_count_only();
    bounded(settings.timeout, kv.get("/", Some(probe))).await?;
    Ok(client)
}

/// Reads the TLS files every reload interval; a changed set replaces the client once
/// etcd answers it (until then the old one stays). Ends when the store is dropped.
async fn follow_tls_files(
    client: Weak<RwLock<Client>>,
    settings: EtcdSettings,
    tls: EtcdTls,
    mut in_use: TlsMaterial,
) {
    let mut warned_for: Option<TlsMaterial> = None;
    loop {
        tokio::time::sleep(tls.reload_interval).await;
        let Some(current) = client.upgrade() else {
            return;
        };
        let material = match tls.read() {
            Ok(material) if material != in_use => material,
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the etcd TLS files; keeping the old ones");
                continue;
            }
        };
        match open_checked(&settings, &material).await {
            Ok(renewed) => {
                *current.write().unwrap_or_else(|e| e.into_inner()) = renewed;
                in_use = material;
                warned_for = None;
                tracing::info!("etcd TLS files changed; requests use the new certificate");
            }
            Err(err) if warned_for.as_ref() != Some(&material) => {
                tracing::warn!(error = %err, "etcd does not accept the changed TLS files yet; keeping the old ones");
                warned_for = Some(material);
            }
            Err(_) => {}
        }
    }
}

impl EtcdMetadata {
    /// Connects to etcd within the configured timeout, and follows the TLS files.
    pub async fn connect(settings: &EtcdSettings) -> Result<Self, MetaError> {
        let material = settings.tls.as_ref().map(EtcdTls::read).transpose()?;
        let client = Arc::new(RwLock::new(open(settings, material.as_ref()).await?));
        if let (Some(tls), Some(material)) = (&settings.tls, material) {
            tokio::spawn(follow_tls_files(
                Arc::downgrade(&client),
                settings.clone(),
                tls.clone(),
                material,
            ));
        }
        Ok(Self {
            client,
            timeout: settings.timeout,
            list_limit: settings.list_limit,
        })
    }

    /// A KV client on the connection in use now.
    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .kv_client()
    }

    async fn compare_and_write(&self, compare: Compare, op: TxnOp) -> Result<bool, MetaError> {
        let txn = Txn::new().when([compare]).and_then([op]);
        let mut kv = self.kv();
        let response = bounded(self.timeout, kv.txn(txn)).await?;
        Ok(response.succeeded())
    }
}

/// Runs one etcd request under `timeout`, mapping both failures to [`MetaError`].
async fn bounded<T>(
    timeout: Duration,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, MetaError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result.map_err(|err| MetaError::Store(err.to_string())),
        Err(_) => Err(MetaError::Timeout {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

fn entry(kv: &etcd_client::KeyValue) -> Entry {
    Entry {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    }
}

impl MetadataClient for EtcdMetadata {
    async fn get(&self, key: &str) -> Result<Option<Entry>, MetaError> {
        let mut kv = self.kv();
        let response = bounded(self.timeout, kv.get(key, None)).await?;
        Ok(response.kvs().first().map(entry))
    }

    async fn list_prefix(&self, prefix: &str) -> Result<Vec<Entry>, MetaError> {
        let mut kv = self.kv();
        let limit = i64::try_from(self.list_limit).unwrap_or(i64::MAX);
        let options = GetOptions::new().with_prefix().with_limit(limit);
        let response = bounded(self.timeout, kv.get(prefix, Some(options))).await?;
        if response.more() {
            return Err(MetaError::TooManyKeys {
                prefix: prefix.to_owned(),
                limit: self.list_limit,
            });
        }
        Ok(response.kvs().iter().map(entry).collect())
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<bool, MetaError> {
        self.compare_and_write(
            Compare::create_revision(key, CompareOp::Equal, 0),
            TxnOp::put(key, value, None),
        )
        .await
    }

    async fn put(&self, key: &str, value: Vec<u8>, mod_revision: i64) -> Result<bool, MetaError> {
        self.compare_and_write(
            Compare::mod_revision(key, CompareOp::Equal, mod_revision),
            TxnOp::put(key, value, None),
        )
        .await
    }

    async fn delete_key(&self, key: &str, mod_revision: i64) -> Result<bool, MetaError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
            .and_then([TxnOp::delete(key, None)]);
        let mut kv = self.kv();
        let response = bounded(self.timeout, kv.txn(txn)).await?;
        Ok(response.succeeded())
    }

    async fn delete(
        &self,
        key: &str,
        mod_revision: i64,
        tombstone: (String, Vec<u8>),
    ) -> Result<bool, MetaError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
            .and_then([
                TxnOp::delete(key, None),
                TxnOp::put(tombstone.0, tombstone.1, None),
            ]);
        let mut kv = self.kv();
        let response = bounded(self.timeout, kv.txn(txn)).await?;
        Ok(response.succeeded())
    }
}
