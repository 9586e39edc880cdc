//! Broker configuration: one struct with documented defaults and validation.
//! Command-line flags and environment variables map onto it in `main.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::access::AuthorizationSettings;
use crate::access::authn::AuthnSettings;
use crate::group::GroupConfig;
use crate::queue::QueueSettings;
use crate::tls::ListenerTls;
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
    /// Most queues on the broker: 10,000.
    pub max_queues: u32,
    /// Most messages in one send request: 10,000.
    pub max_send_messages: u32,
    /// Most messages one receive returns: 10,000.
    pub max_receive_messages: u32,
    /// Longest receive long-poll wait: 20 s.
    pub max_receive_wait_ms: u32,
    /// Longest visibility timeout: 12 hours.
    pub max_visibility_timeout_ms: u64,
    /// Longest message delay: 15 minutes.
    pub max_delay_ms: u64,
    /// Longest dedup window: 1 day.
    pub max_dedup_window_ms: u64,
    /// Most messages a queue may be configured to hold: 100,000,000 (about 100 bytes
    /// of memory each).
    pub max_queue_messages: u64,
    /// Most attributes on one message: 64.
    pub max_message_attributes: u32,
    /// Most receipt handles in one ack, nack or visibility change: 10,000.
    pub max_receipts_per_request: u32,
    /// Segment size of queue message logs and journals: 64 MiB.
    pub queue_segment_bytes: u64,
    /// Most replicas of a topic partition in cluster mode: 7.
    pub max_replication_factor: u32,
    /// Bytes at the end of each log kept in the OS page cache once fsynced; older
    /// fsynced bytes are dropped from it (0: leave caching to the OS): 64 MiB.
    pub page_cache_window_bytes: u64,
}

impl Limits {
    /// [`Limits::page_cache_window_bytes`] as the storage setting.
    pub fn page_cache_window(&self) -> Option<u64> {
        (self.page_cache_window_bytes > 0).then_some(self.page_cache_window_bytes)
    }
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
            max_queues: 10_000,
            max_send_messages: 10_000,
            max_receive_messages: 10_000,
            max_receive_wait_ms: 20_000,
            max_visibility_timeout_ms: 12 * 60 * 60 * 1000,
            max_delay_ms: 15 * 60 * 1000,
            max_dedup_window_ms: 24 * 60 * 60 * 1000,
            max_queue_messages: 100_000_000,
            max_message_attributes: 64,
            max_receipts_per_request: 10_000,
            queue_segment_bytes: 64 * 1024 * 1024,
            max_replication_factor: 7,
            page_cache_window_bytes: ferry_storage::PAGE_CACHE_WINDOW_BYTES_DEFAULT,
        }
    }
}

/// Smallest HTTP/2 frame a peer may be told to accept (RFC 9113, 6.5.2).
pub const HTTP2_FRAME_BYTES_MIN: u32 = 16 * 1024;
/// Largest HTTP/2 frame size (RFC 9113, 6.5.2).
pub const HTTP2_FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024 - 1;
/// Largest HTTP/2 flow-control window (RFC 9113, 6.9.1).
pub const HTTP2_WINDOW_BYTES_MAX: u32 = i32::MAX as u32;

/// HTTP/2 flow control and framing for what the broker receives: produce requests on
/// its listeners, fetch responses on its followers' connections to leaders.
///
/// hyper's defaults (16 KiB frames; 1 MiB windows on a server, 2 MiB on a client)
/// split a replica fetch of several MiB into hundreds of frames, each handled and
/// copied on its own, and stop a 4 MiB produce request for window updates every
/// MiB. On the benchmark's three-host cluster 1 MiB frames took RF=3 from 296-304
/// to 348-362 MB/s (the windows alone changed nothing measurable there;
/// `docs/performance.md`). The windows bound what a peer may send before the broker
/// reads it; a request is still refused above `max_request_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// Bytes a peer may send on one call before the broker has read them: 8 MiB.
    pub stream_window_bytes: u32,
    /// Bytes a peer may send on one connection, all calls together: 32 MiB.
    pub connection_window_bytes: u32,
    /// Largest frame a peer may send: 1 MiB.
    pub max_frame_bytes: u32,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            stream_window_bytes: 8 * 1024 * 1024,
            connection_window_bytes: 32 * 1024 * 1024,
            max_frame_bytes: 1024 * 1024,
        }
    }
}

impl Http2Settings {
    /// Checks the values against what HTTP/2 allows.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("http2 stream window", self.stream_window_bytes),
            ("http2 connection window", self.connection_window_bytes),
        ] {
            if !(1..=HTTP2_WINDOW_BYTES_MAX).contains(&value) {
                return Err(ConfigError(format!(
                    "{name} must be between 1 and {HTTP2_WINDOW_BYTES_MAX} bytes, not {value}"
                )));
            }
        }
        if !(HTTP2_FRAME_BYTES_MIN..=HTTP2_FRAME_BYTES_MAX).contains(&self.max_frame_bytes) {
            return Err(ConfigError(format!(
                "http2 max frame must be between {HTTP2_FRAME_BYTES_MIN} and \
                 {HTTP2_FRAME_BYTES_MAX} bytes, not {}",
                self.max_frame_bytes
            )));
        }
        Ok(())
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
    /// Settings for queues created without them.
    pub queue_defaults: QueueSettings,
    /// Queue journal bytes written after which the queue state is snapshotted and
    /// the journal compacted: 64 MiB.
    pub queue_snapshot_bytes: u64,
    /// Longest time between queue snapshots while the journal grows: 5 minutes.
    pub queue_snapshot_interval_ms: u64,
    /// How often queues look for expired messages, dead letters and compaction: 1 s.
    pub queue_housekeeping_interval_ms: u64,
    /// Consumer group rules.
    pub groups: GroupConfig,
    /// How often retention runs (and the data directory's free space is checked): 5 s.
    pub retention_check_interval_ms: u64,
    /// Warn (once) when the data directory's file system has less than this share
    /// free, in percent: 10; 0 never warns.
    pub disk_warn_free_percent: u8,
    /// How often expired group members are removed: 500 ms.
    pub group_expiry_check_interval_ms: u64,
    /// How long shutdown waits for in-flight requests: 30 s.
    pub shutdown_grace_ms: u64,
    /// Metadata watch events buffered per watcher: 1,024.
    pub metadata_watch_buffer: usize,
    /// How replicas of a partition keep up with its leader (cluster mode).
    pub replication: ReplicationConfig,
    /// HTTP/2 flow control and framing of the listeners and of replica fetches.
    pub http2: Http2Settings,
    /// TLS on the gRPC listener; `None` serves plaintext. Default `None`.
    pub tls: Option<ListenerTls>,
    /// Serve `/metrics` over TLS too, with the gRPC listener's certificate (and its
    /// client CA: scrapers then need a client certificate). Default `false`.
    pub metrics_tls: bool,
    /// How the client listener authenticates callers beyond client certificates
    /// (static tokens, ServiceAccount tokens). Default: neither.
    pub authentication: AuthnSettings,
    /// Whether access rules are enforced, and the superusers. Default: not enforced.
    pub authorization: AuthorizationSettings,
    /// Serve the gRPC listener on an address other hosts can reach without TLS and
    /// authentication (`--insecure`). Default `false`: refused at start.
    pub insecure: bool,
}

/// Replication between the hosts of a broker cluster (`docs/replication.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// How long a `sync` write waits for the in-sync replicas before it is answered
    /// "incomplete" (it may still commit): 30 s.
    pub ack_timeout_ms: u64,
    /// A follower that has not caught up with the leader for this long leaves the
    /// in-sync set: 10 s.
    pub max_lag_ms: u64,
    /// Most bytes one replica fetch returns: 8 MiB.
    pub fetch_max_bytes: u32,
    /// How long a replica fetch waits at the leader's end for new batches: 500 ms.
    pub fetch_max_wait_ms: u32,
    /// How much longer than its wait a replica fetch may take before the follower
    /// gives up on it and asks again (a lost connection is noticed this soon): 2 s.
    pub fetch_timeout_slack_ms: u64,
    /// How often a leader reviews its in-sync sets: 250 ms.
    pub in_sync_check_interval_ms: u64,
    /// How followers fetch from plaintext peer listeners: the replica stream.
    pub transport: ReplicaTransport,
    /// How long a new peer connection may take to send its first byte, and a replica
    /// stream's opening to be answered: 1 s.
    pub stream_opening_timeout_ms: u64,
    /// How long a leader keeps a replica stream whose follower sends no request, or
    /// does not take an answer: 60 s.
    pub stream_idle_timeout_ms: u64,
    /// How long a follower fetches over gRPC after a leader did not answer the
    /// stream's opening, before it tries the stream again: 60 s.
    pub stream_retry_ms: u64,
}

/// How a follower fetches batches from its leader (`docs/replication.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplicaTransport {
    /// The replica stream: the leader sends its cached tail from the segment file
    /// (`sendfile`); gRPC where the peer listener uses TLS or the leader does not
    /// serve the stream.
    #[default]
    Stream,
    /// `ReplicaFetch` over gRPC only: every batch is read and copied into a message.
    Grpc,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            ack_timeout_ms: 30_000,
            max_lag_ms: 10_000,
            fetch_max_bytes: 8 * 1024 * 1024,
            fetch_max_wait_ms: 500,
            fetch_timeout_slack_ms: 2_000,
            in_sync_check_interval_ms: 250,
            transport: ReplicaTransport::Stream,
            stream_opening_timeout_ms: 1_000,
            stream_idle_timeout_ms: 60_000,
            stream_retry_ms: 60_000,
        }
    }
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
            queue_defaults: QueueSettings::default(),
            queue_snapshot_bytes: 64 * 1024 * 1024,
            queue_snapshot_interval_ms: 5 * 60 * 1000,
            queue_housekeeping_interval_ms: 1000,
            groups: GroupConfig::default(),
            retention_check_interval_ms: 5_000,
            disk_warn_free_percent: 10,
            group_expiry_check_interval_ms: 500,
            shutdown_grace_ms: 30_000,
            metadata_watch_buffer: 1024,
            replication: ReplicationConfig::default(),
            http2: Http2Settings::default(),
            tls: None,
            metrics_tls: false,
            authentication: AuthnSettings::default(),
            authorization: AuthorizationSettings::default(),
            insecure: false,
        }
    }
}

/// Refuses a listener that other machines can reach (any address outside 127/8 and
/// `::1`) unless it is `secured` (TLS and authentication): secure by default, and
/// `--insecure` says otherwise on purpose.
pub fn exposed_listener(what: &str, address: SocketAddr, secured: bool) -> Result<(), ConfigError> {
    if secured || address.ip().is_loopback() {
        return Ok(());
    }
    Err(ConfigError(format!(
        "refusing to serve the {what} listener on {address} without TLS and \
         authentication: other machines can reach it. Give --tls-cert-file and \
         --tls-key-file with a way to authenticate callers (--tls-client-ca-file, \
         --auth-tokens-file or --auth-jwks-file), listen on a loopback address, or \
         pass --insecure"
    )))
}

/// A configuration value out of its allowed range.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl BrokerConfig {
    /// How the client listener authenticates: the configured tokens, plus client
    /// certificates when the listener requires them.
    pub fn client_authentication(&self) -> AuthnSettings {
        self.authentication.on_listener(self.tls.as_ref())
    }

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
            ("max_queues", u64::from(l.max_queues)),
            ("max_send_messages", u64::from(l.max_send_messages)),
            ("max_receive_messages", u64::from(l.max_receive_messages)),
            ("max_queue_messages", l.max_queue_messages),
            (
                "max_receipts_per_request",
                u64::from(l.max_receipts_per_request),
            ),
            ("queue_segment_bytes", l.queue_segment_bytes),
            ("queue_snapshot_bytes", self.queue_snapshot_bytes),
            (
                "queue_snapshot_interval_ms",
                self.queue_snapshot_interval_ms,
            ),
            (
                "queue_housekeeping_interval_ms",
                self.queue_housekeeping_interval_ms,
            ),
            (
                "replication.ack_timeout_ms",
                self.replication.ack_timeout_ms,
            ),
            ("replication.max_lag_ms", self.replication.max_lag_ms),
            (
                "replication.fetch_max_bytes",
                u64::from(self.replication.fetch_max_bytes),
            ),
            (
                "replication.in_sync_check_interval_ms",
                self.replication.in_sync_check_interval_ms,
            ),
            (
                "replication.fetch_timeout_slack_ms",
                self.replication.fetch_timeout_slack_ms,
            ),
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
        if self.metrics_tls && self.tls.is_none() {
            return Err(ConfigError(
                "metrics over TLS needs the gRPC listener's certificate (--tls-cert-file)".into(),
            ));
        }
        if self.authorization.enforced && !self.client_authentication().required() {
            return Err(ConfigError(
                "authorization needs a way to authenticate callers: client certificates \
                 (--tls-client-ca-file), static tokens (--auth-tokens-file) or ServiceAccount \
                 tokens (--auth-jwks-file)"
                    .into(),
            ));
        }
        if !self.insecure {
            let secured = self.tls.is_some() && self.client_authentication().required();
            exposed_listener("gRPC", self.listen, secured)?;
        }
        if self.host_id.is_empty() {
            return Err(ConfigError("host_id must not be empty".into()));
        }
        self.groups
            .validate()
            .map_err(|err| ConfigError(err.to_string()))?;
        self.topic_defaults
            .validate(l, 1)
            .map_err(|err| ConfigError(format!("topic defaults: {err}")))?;
        self.queue_defaults
            .validate(l, 1)
            .map_err(|err| ConfigError(format!("queue defaults: {err}")))?;
        self.http2.validate()?;
        if l.queue_segment_bytes < crate::topic::MIN_SEGMENT_BYTES {
            return Err(ConfigError(format!(
                "queue_segment_bytes must be at least {}",
                crate::topic::MIN_SEGMENT_BYTES
            )));
        }
        Ok(())
    }

    /// The address this host tells clients to use.
    pub fn advertised_address(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}
