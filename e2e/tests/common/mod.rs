//! What the e2e scenarios read from etcd: the cluster keyspace the brokers keep.
//!
//! - `/ferry/clusters/{cluster}/hosts/{host_id}`: `{"host_id", "advertise",
//!   "registered_at_ms"}` on the host's lease.
//! - `/ferry/clusters/{cluster}/controller`: `{"host_id", "elected_at_ms"}` on the
//!   controller's lease.
//! - `/ferry/clusters/{cluster}/partitions/{topics|queues}/{name}/{partition}`:
//!   `{"replicas", "leader", "leader_epoch", "isr"}`, written by the controller.
//!
//! [`rpc`] has the plain gRPC requests scenarios send to hosts; [`timeline`] samples
//! partition epochs in the background and checks them; [`load`] keeps producers
//! writing to a topic's leaders and reads the topic back; [`otlp`] is a trace
//! collector the processes under test export to.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod load;
pub mod otlp;
pub mod rpc;
pub mod timeline;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use serde::Deserialize;
use tokio::time::Instant;

/// How often waits poll etcd.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A live host's registration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HostRecord {
    pub host_id: String,
    pub advertise: String,
    pub registered_at_ms: u64,
    /// The failure domain it reported (`--zone`).
    #[serde(default)]
    pub zone: Option<String>,
    /// Where other hosts reach its peer listener.
    #[serde(default)]
    pub peer_advertise: Option<String>,
    /// The etcd lease the key is attached to (0: none).
    #[serde(skip)]
    pub lease: i64,
}

/// The elected controller.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ControllerRecord {
    pub host_id: String,
    pub elected_at_ms: u64,
    /// The etcd lease the key is attached to (0: none).
    #[serde(skip)]
    pub lease: i64,
}

/// One partition's placement and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<String>,
    pub leader: Option<String>,
    pub leader_epoch: u64,
    pub isr: Vec<String>,
}

/// Which partition a state is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId {
    /// `topics` or `queues`.
    pub kind: String,
    /// The topic or queue.
    pub name: String,
    pub partition: u32,
}

impl PartitionId {
    /// Partition `partition` of topic `name`.
    pub fn topic(name: &str, partition: u32) -> Self {
        Self {
            kind: "topics".to_owned(),
            name: name.to_owned(),
            partition,
        }
    }

    /// Queue `name` (queues have one partition, 0).
    pub fn queue(name: &str) -> Self {
        Self {
            kind: "queues".to_owned(),
            name: name.to_owned(),
            partition: 0,
        }
    }
}

/// One read of a cluster's keys.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Registered hosts by the host id in their key.
    pub hosts: BTreeMap<String, HostRecord>,
    pub controller: Option<ControllerRecord>,
    /// Partition states by the partition named in their key.
    pub partitions: BTreeMap<PartitionId, PartitionState>,
}

impl ClusterView {
    /// The controller's host id, if there is one and it is a registered host.
    pub fn live_controller(&self) -> Option<&str> {
        self.controller
            .as_ref()
            .map(|c| c.host_id.as_str())
            .filter(|id| self.hosts.contains_key(*id))
    }

    /// Whether `host_id` is registered.
    pub fn has_host(&self, host_id: &str) -> bool {
        self.hosts.contains_key(host_id)
    }

    /// The state of `id`, if the controller wrote one.
    pub fn partition(&self, id: &PartitionId) -> Option<&PartitionState> {
        self.partitions.get(id)
    }

    /// The leader of `id`, if it has a state and a leader.
    pub fn leader(&self, id: &PartitionId) -> Option<&str> {
        self.partition(id)?.leader.as_deref()
    }

    /// Whether every partition of `ids` has a leader and `replicas` in-sync replicas.
    pub fn all_led_in_sync(&self, ids: &[PartitionId], replicas: usize) -> bool {
        ids.iter().all(|id| {
            self.partition(id)
                .is_some_and(|s| s.leader.is_some() && s.isr.len() == replicas)
        })
    }

    /// The host leading the most partitions of `ids` (the lowest host id on a tie).
    pub fn busiest_leader(&self, ids: &[PartitionId]) -> Option<String> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for id in ids {
            if let Some(leader) = self.leader(id) {
                *counts.entry(leader).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by_key(|(host, count)| (*count, std::cmp::Reverse(*host)))
            .map(|(host, _)| host.to_owned())
    }

    /// The partitions of `ids` that `host_id` leads.
    pub fn led_by(&self, ids: &[PartitionId], host_id: &str) -> Vec<PartitionId> {
        ids.iter()
            .filter(|id| self.leader(id) == Some(host_id))
            .cloned()
            .collect()
    }
}

/// Reads the membership keys and partition states of `cluster`.
pub async fn read_view(etcd: &mut Client, cluster: &str) -> Result<ClusterView, String> {
    let prefix = format!("/ferry/clusters/{cluster}/hosts/");
    let hosts = etcd
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|err| format!("list {prefix}: {err}"))?;
    let mut view = ClusterView::default();
    for kv in hosts.kvs() {
        let key = kv.key_str().map_err(|err| err.to_string())?;
        let host_id = key.strip_prefix(prefix.as_str()).unwrap_or(key).to_owned();
        let mut record: HostRecord = parse(key, kv.value())?;
        record.lease = kv.lease();
        view.hosts.insert(host_id, record);
    }
    let key = format!("/ferry/clusters/{cluster}/controller");
    let controller = etcd
        .get(key.as_str(), None)
        .await
        .map_err(|err| format!("get {key}: {err}"))?;
    if let Some(kv) = controller.kvs().first() {
        let mut record: ControllerRecord = parse(&key, kv.value())?;
        record.lease = kv.lease();
        view.controller = Some(record);
    }
    let prefix = format!("/ferry/clusters/{cluster}/partitions/");
    let partitions = etcd
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|err| format!("list {prefix}: {err}"))?;
    for kv in partitions.kvs() {
        let key = kv.key_str().map_err(|err| err.to_string())?;
        let id = parse_partition_key(key.strip_prefix(prefix.as_str()).unwrap_or(key))
            .ok_or_else(|| format!("unexpected partition state key {key:?}"))?;
        view.partitions.insert(id, parse(key, kv.value())?);
    }
    Ok(view)
}

/// The state of one partition and the etcd revision that last wrote it; `None` if
/// the controller wrote none.
pub async fn read_partition_state(
    etcd: &mut Client,
    cluster: &str,
    id: &PartitionId,
) -> Result<Option<(PartitionState, i64)>, String> {
    let key = format!(
        "/ferry/clusters/{cluster}/partitions/{}/{}/{}",
        id.kind, id.name, id.partition
    );
    let response = etcd
        .get(key.as_str(), None)
        .await
        .map_err(|err| format!("get {key}: {err}"))?;
    match response.kvs().first() {
        Some(kv) => Ok(Some((parse(&key, kv.value())?, kv.mod_revision()))),
        None => Ok(None),
    }
}

/// `{kind}/{name}/{partition}`.
fn parse_partition_key(rest: &str) -> Option<PartitionId> {
    let (kind, rest) = rest.split_once('/')?;
    let (name, partition) = rest.rsplit_once('/')?;
    Some(PartitionId {
        kind: kind.to_owned(),
        name: name.to_owned(),
        partition: partition.parse().ok()?,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|err| {
        let shown = String::from_utf8_lossy(value);
        format!("{key} holds {shown:?}, not the expected JSON: {err}")
    })
}

/// How long a new cluster may take to register every host and elect a controller.
pub const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// Starts a cluster, connects to its etcd, and waits until every host registered
/// and a controller was elected.
pub async fn start_formed(options: ferry_e2e::ClusterOptions) -> (ferry_e2e::Cluster, Client) {
    let hosts = options.hosts;
    let cluster = ferry_e2e::Cluster::start_with(options);
    let mut etcd = Client::connect([cluster.etcd_endpoint()], None)
        .await
        .expect("connect to etcd");
    wait_for_view(
        &mut etcd,
        cluster.name(),
        FORM_DEADLINE,
        "every host registered and a controller elected",
        |view| view.hosts.len() == hosts && view.live_controller().is_some(),
    )
    .await;
    (cluster, etcd)
}

/// Polls the cluster view until `done` holds, panicking with `what` and the last
/// view (or read error) if it does not within `deadline`.
pub async fn wait_for_view(
    etcd: &mut Client,
    cluster: &str,
    deadline: Duration,
    what: &str,
    done: impl Fn(&ClusterView) -> bool,
) -> ClusterView {
    let until = Instant::now() + deadline;
    loop {
        let last: Box<dyn Debug> = match read_view(etcd, cluster).await {
            Ok(view) if done(&view) => return view,
            Ok(view) => Box::new(view),
            Err(err) => Box::new(err),
        };
        assert!(
            Instant::now() < until,
            "not within {deadline:?}: {what}; last seen: {last:#?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// An etcd that requires client certificates, for the TLS scenarios: its CA (made by
/// openssl under `dir`), what etcd serves, the client certificate Ferry presents, and
/// the `--etcd-*` flags naming them (hosts, gateways and the operator take the same).
pub struct SecuredEtcd {
    /// The CA of etcd's certificate and of its clients'.
    pub ca: ferry_e2e::pki::Pki,
    /// What etcd is started with.
    pub server: ferry_e2e::EtcdServerTls,
    /// The client certificate Ferry's processes (and the test) present.
    pub client: ferry_e2e::pki::Issued,
    /// `--etcd-ca-file`, `--etcd-cert-file`, `--etcd-key-file` with their files.
    pub flags: Vec<String>,
}

impl SecuredEtcd {
    /// A new CA and certificates for an etcd on 127.0.0.1.
    pub fn new(dir: &std::path::Path) -> Self {
        let ca = ferry_e2e::pki::Pki::new(dir, "etcd-ca");
        let served = ca.issue("etcd", "etcd", &["IP:127.0.0.1"]);
        let client = ca.issue("ferry", "ferry", &[]);
        let path = |path: &std::path::Path| path.to_str().expect("a UTF-8 path").to_owned();
        let flags = vec![
            "--etcd-ca-file".to_owned(),
            path(&ca.ca()),
            "--etcd-cert-file".to_owned(),
            path(&client.cert),
            "--etcd-key-file".to_owned(),
            path(&client.key),
        ];
        let server = ferry_e2e::EtcdServerTls {
            cert: served.cert,
            key: served.key,
            client_ca: ca.ca(),
        };
        Self {
            ca,
            server,
            client,
            flags,
        }
    }

    /// Renews the client certificate from a new CA made under `dir` (written over the
    /// same files, as a Secret volume update does) and, once processes following the
    /// files have had `settle` to read them, restarts `etcd` trusting only that CA:
    /// whoever still presents the old certificate is refused from then on. Returns a
    /// certificate of the old CA, for checking that.
    pub async fn renew_client_certificate(
        &self,
        dir: &std::path::Path,
        etcd: &mut ferry_e2e::EtcdServer,
        settle: std::time::Duration,
    ) -> ferry_e2e::pki::Issued {
        let renewed_ca = ferry_e2e::pki::Pki::new(dir, "etcd-client-ca-renewed");
        let renewed = renewed_ca.issue("ferry-renewed", "ferry", &[]);
        let stale = self.ca.issue("ferry-stale", "ferry", &[]);
        ferry_e2e::pki::replace_atomically(&renewed.key, &self.client.key);
        ferry_e2e::pki::replace_atomically(&renewed.cert, &self.client.cert);
        tokio::time::sleep(settle).await;
        etcd.set_client_ca(&renewed_ca.ca());
        etcd.restart();
        stale
    }

    /// The test's own client of that etcd at `endpoint`, with the client certificate.
    pub async fn connect(&self, endpoint: &str) -> Client {
        let read = |path: &std::path::Path| {
            std::fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
        };
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca.ca())))
            .identity(etcd_client::Identity::from_pem(
                read(&self.client.cert),
                read(&self.client.key),
            ));
        Client::connect(
            [endpoint],
            Some(etcd_client::ConnectOptions::new().with_tls(tls)),
        )
        .await
        .expect("connect to etcd over TLS")
    }
}

/// Kills the host leading `queue` once it is led with three replicas in sync, and
/// waits until it and the topic's `partitions` are led by survivors; the killed
/// host's id. For the scenarios that check a client follows its leaders.
pub async fn kill_queue_leader(
    cluster: &mut ferry_e2e::Cluster,
    etcd: &mut Client,
    queue: &str,
    topic: &str,
    partitions: u32,
) -> String {
    let queue = PartitionId::queue(queue);
    let view = wait_for_view(
        etcd,
        cluster.name(),
        FORM_DEADLINE,
        "the queue led with three in sync",
        |view| {
            view.partition(&queue)
                .is_some_and(|state| state.leader.is_some() && state.isr.len() == 3)
        },
    )
    .await;
    let victim = view.leader(&queue).expect("a leader").to_owned();
    cluster.host_mut(&victim).kill();
    let led: Vec<PartitionId> = (0..partitions)
        .map(|p| PartitionId::topic(topic, p))
        .chain([queue])
        .collect();
    let name = cluster.name().to_owned();
    wait_for_view(
        etcd,
        &name,
        FORM_DEADLINE,
        "every partition led by a survivor",
        |view| {
            led.iter()
                .all(|id| view.leader(id).is_some_and(|leader| leader != victim))
        },
    )
    .await;
    victim
}

/// Waits up to 20 s until the host at the other end closes `stream` (end of stream or
/// a reset), reading and dropping whatever it sends first; panics naming `what` if it
/// stays open.
pub fn assert_closed(mut stream: std::net::TcpStream, what: &str) {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the host kept {what} open for 20 s")
            }
            Err(_) => return,
        }
    }
}
