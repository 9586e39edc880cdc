//! The [`MetadataClient`] on etcd (etcd-client), used by the running operator.

use std::future::Future;
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

/// How the operator checks etcd's certificate and proves its own identity.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// PEM CA certificates etcd's certificate must chain to; `None` trusts the
    /// system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// The metadata store on etcd.
#[derive(Clone)]
pub struct EtcdMetadata {
    client: Client,
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

impl EtcdMetadata {
    /// Connects to etcd within the configured timeout.
    pub async fn connect(settings: &EtcdSettings) -> Result<Self, MetaError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(settings.timeout)
            .with_timeout(settings.timeout);
        if let Some(tls) = &settings.tls {
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
        let client = bounded(
            settings.timeout,
            Client::connect(&settings.endpoints, Some(options)),
        )
        .await?;
        Ok(Self {
            client,
            timeout: settings.timeout,
            list_limit: settings.list_limit,
        })
    }

    async fn compare_and_write(&self, compare: Compare, op: TxnOp) -> Result<bool, MetaError> {
        let txn = Txn::new().when([compare]).and_then([op]);
        let mut kv = self.client.kv_client();
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
        let mut kv = self.client.kv_client();
        let response = bounded(self.timeout, kv.get(key, None)).await?;
        Ok(response.kvs().first().map(entry))
    }

    async fn list_prefix(&self, prefix: &str) -> Result<Vec<Entry>, MetaError> {
        let mut kv = self.client.kv_client();
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
        let mut kv = self.client.kv_client();
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
        let mut kv = self.client.kv_client();
        let response = bounded(self.timeout, kv.txn(txn)).await?;
        Ok(response.succeeded())
    }
}
