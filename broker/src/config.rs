//! Broker configuration: one struct with documented defaults and validation.
//! Command-line flags and environment variables map onto it in `main.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::group::GroupConfig;
use crate::topic::TopicSettings;

/// Limits on requests; each has a name, a default and a check at load time.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest record (key + value + headers) accepted by default: 1 MiB.
    pub max_message_bytes: u32,
    /// Largest single record batch: 16 MiB.
    pub max_batch_bytes: u32,
    /// Largest gRPC request the server decodes: 64 MiB.
    pub max_request_bytes: u32,
    /// Most records in one batch: 1,000,000.
    pub max_batch_records: u32,
    /// Most batches plus messages in one produce request: 10,000.
    pub max_produce_items: u32,
    /// Largest fetch response: 32 MiB.
    pub max_fetch_bytes: u32,
    /// Largest per-partition fetch: 16 MiB.
    pub max_partition_fetch_bytes: u32,
    /// Longest long-poll wait: 30 s.
    pub max_fetch_wait_ms: u32,
    /// Most partitions in one fetch request: 1,024.
    pub max_fetch_partitions: u32,
    /// Most partitions per topic: 1,024.
    pub max_partitions_per_topic: u32,
    /// Most topics on the broker: 10,000.
    pub max_topics: u32,
    /// Concurrent requests served per client connection: 256.
    pub max_concurrent_requests_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            max_batch_bytes: 16 * 1024 * 1024,
            max_request_bytes: 64 * 1024 * 1024,
            max_batch_records: 1_000_000,
            max_produce_items: 10_000,
            max_fetch_bytes: 32 * 1024 * 1024,
            max_partition_fetch_bytes: 16 * 1024 * 1024,
            max_fetch_wait_ms: 30_000,
            max_fetch_partitions: 1024,
            max_partitions_per_topic: 1024,
            max_topics: 10_000,
            max_concurrent_requests_per_connection: 256,
        }
    }
}

/// Everything a broker needs to start.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where logs and the embedded metadata store live. Default `./ferry-data`.
    pub data_dir: PathBuf,
    /// gRPC listen address. Default `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address; `None` disables it. Default `127.0.0.1:7071`.
    pub metrics_listen: Option<SocketAddr>,
    /// This host's id in metadata answers. Default `standalone`.
    pub host_id: String,
    /// The address clients should use for this host; defaults to `listen`.
    pub advertise: Option<String>,
    /// Request limits.
    pub limits: Limits,
    /// Settings for topics created without them.
    pub topic_defaults: TopicSettings,
    /// Consumer group rules.
    pub groups: GroupConfig,
    /// How often retention runs: 5 s.
    pub retention_check_interval_ms: u64,
    /// How often expired group members are removed: 500 ms.
    pub group_expiry_check_interval_ms: u64,
    /// How long shutdown waits for in-flight requests: 30 s.
    pub shutdown_grace_ms: u64,
    /// Metadata watch events buffered per watcher: 1,024.
    pub metadata_watch_buffer: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("ferry-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7071))),
            host_id: "standalone".to_owned(),
            advertise: None,
            limits: Limits::default(),
            topic_defaults: TopicSettings::default(),
            groups: GroupConfig::default(),
            retention_check_interval_ms: 5_000,
            group_expiry_check_interval_ms: 500,
            shutdown_grace_ms: 30_000,
            metadata_watch_buffer: 1024,
        }
    }
}

/// A configuration value out of its allowed range.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl BrokerConfig {
    /// Checks every bound; the broker refuses to start on an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let positive = [
            ("max_message_bytes", u64::from(l.max_message_bytes)),
            ("max_batch_bytes", u64::from(l.max_batch_bytes)),
            ("max_request_bytes", u64::from(l.max_request_bytes)),
            ("max_batch_records", u64::from(l.max_batch_records)),
            ("max_produce_items", u64::from(l.max_produce_items)),
            ("max_fetch_bytes", u64::from(l.max_fetch_bytes)),
            (
                "max_partition_fetch_bytes",
                u64::from(l.max_partition_fetch_bytes),
            ),
            ("max_fetch_partitions", u64::from(l.max_fetch_partitions)),
            (
                "max_partitions_per_topic",
                u64::from(l.max_partitions_per_topic),
            ),
            ("max_topics", u64::from(l.max_topics)),
            (
                "max_concurrent_requests_per_connection",
                u64::from(l.max_concurrent_requests_per_connection),
            ),
            (
                "retention_check_interval_ms",
                self.retention_check_interval_ms,
            ),
            (
                "group_expiry_check_interval_ms",
                self.group_expiry_check_interval_ms,
            ),
            ("metadata_watch_buffer", self.metadata_watch_buffer as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be greater than 0")));
            }
        }
        if l.max_message_bytes > l.max_batch_bytes {
            return Err(ConfigError(
                "max_message_bytes must not exceed max_batch_bytes".into(),
            ));
        }
        if l.max_batch_bytes > l.max_request_bytes {
            return Err(ConfigError(
                "max_batch_bytes must not exceed max_request_bytes".into(),
            ));
        }
        if self.host_id.is_empty() {
            return Err(ConfigError("host_id must not be empty".into()));
        }
        self.groups
            .validate()
            .map_err(|err| ConfigError(err.to_string()))?;
        self.topic_defaults
            .validate(l)
            .map_err(|err| ConfigError(format!("topic defaults: {err}")))?;
        Ok(())
    }

    /// The address this host tells clients to use.
    pub fn advertised_address(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}
