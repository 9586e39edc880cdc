//! A whole test cluster: one etcd and N broker hosts `h0..hN-1` under one cluster
//! name, each host on its own loopback address or in its own network namespace, all
//! data in one temporary directory.

use std::net::Ipv4Addr;
use std::path::Path;

use tempfile::TempDir;

use crate::broker::{BrokerHost, HostConfig};
use crate::etcd::{EtcdServer, EtcdServerTls};
use crate::netns::{self, TestNetwork};

/// Where a cluster's hosts run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// In the test's namespace, each on its own loopback address: hosts cannot be
    /// cut off from each other.
    #[default]
    Loopback,
    /// Each in a namespace of its own on a private test network
    /// ([`crate::netns`]), so [`Cluster::cut`] can isolate one.
    Namespaces,
}

/// The most hosts a cluster may have: one loopback address each, from 127.0.0.2
/// (a network of namespaces allows fewer: `netns::MAX_HOSTS`).
const MAX_HOSTS: usize = 250;

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The cluster name.
    pub name: String,
    /// How many hosts.
    pub hosts: usize,
    /// The hosts' etcd lease TTL, if not the broker's default.
    pub lease_ttl_ms: Option<u64>,
    /// More `ferry-broker serve` arguments for every host.
    pub extra_args: Vec<String>,
    /// Where the hosts run.
    pub network: Network,
    /// Environment variables for some hosts, by index (e.g. a fake clock for one).
    pub host_env: Vec<(usize, String, String)>,
    /// etcd serves TLS and requires client certificates; the hosts' TLS flags for it
    /// go in `extra_args`.
    pub etcd_tls: Option<EtcdServerTls>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            name: "e2e".to_owned(),
            hosts: 3,
            lease_ttl_ms: None,
            extra_args: Vec::new(),
            network: Network::Loopback,
            host_env: Vec::new(),
            etcd_tls: None,
        }
    }
}

/// etcd plus broker hosts; everything stops and is deleted when it drops.
pub struct Cluster {
    // Fields drop in order: hosts before etcd, both before their network and their
    // directory.
    hosts: Vec<BrokerHost>,
    etcd: EtcdServer,
    network: Option<TestNetwork>,
    name: String,
    dir: TempDir,
}

impl Cluster {
    /// Starts etcd and `hosts` hosts with default options.
    pub fn start(hosts: usize) -> Self {
        Self::start_with(ClusterOptions {
            hosts,
            ..ClusterOptions::default()
        })
    }

    /// Starts etcd and the hosts, waiting until every host is ready.
    pub fn start_with(options: ClusterOptions) -> Self {
        assert!(
            (1..=MAX_HOSTS).contains(&options.hosts),
            "a cluster has 1 to {MAX_HOSTS} hosts, not {}",
            options.hosts
        );
        let dir = tempfile::Builder::new()
            .prefix("ferry-e2e-")
            .tempdir()
            .expect("a temporary directory");
        let network = match options.network {
            Network::Loopback => None,
            Network::Namespaces => Some(
                TestNetwork::create(options.hosts)
                    .unwrap_or_else(|err| panic!("create the test network: {err}")),
            ),
        };
        let etcd = EtcdServer::start_with(
            &dir.path().join("etcd"),
            network.as_ref().map(TestNetwork::gateway),
            options.etcd_tls.clone(),
        );
        let configs = (0..options.hosts)
            .map(|index| {
                let (ip, netns, etcd_endpoint) = match &network {
                    None => (host_ip(index), None, etcd.endpoint()),
                    Some(network) => {
                        let host = network.host(index);
                        let endpoint = etcd.endpoint_on(network.gateway());
                        (host.ip, Some(host.namespace.clone()), endpoint)
                    }
                };
                HostConfig {
                    cluster: options.name.clone(),
                    host_id: format!("h{index}"),
                    etcd_endpoints: vec![etcd_endpoint],
                    ip,
                    netns,
                    data_dir: dir.path().join(format!("h{index}")),
                    lease_ttl_ms: options.lease_ttl_ms,
                    extra_args: options.extra_args.clone(),
                    env: options
                        .host_env
                        .iter()
                        .filter(|(host, _, _)| *host == index)
                        .map(|(_, key, value)| (key.clone(), value.clone()))
                        .collect(),
                }
            })
            .collect();
        let hosts = BrokerHost::start_all(configs);
        Self {
            hosts,
            etcd,
            network,
            name: options.name,
            dir,
        }
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The etcd client URL.
    pub fn etcd_endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    /// The etcd server, to stop, restart or pause.
    pub fn etcd_mut(&mut self) -> &mut EtcdServer {
        &mut self.etcd
    }

    /// Every host, in host-id order.
    pub fn hosts(&self) -> &[BrokerHost] {
        &self.hosts
    }

    /// Every host, to kill, pause or restart.
    pub fn hosts_mut(&mut self) -> &mut [BrokerHost] {
        &mut self.hosts
    }

    /// The host with id `host_id`.
    pub fn host(&self, host_id: &str) -> &BrokerHost {
        self.hosts
            .iter()
            .find(|host| host.host_id() == host_id)
            .unwrap_or_else(|| panic!("no host {host_id} in cluster {}", self.name))
    }

    /// The host with id `host_id`, to kill, pause or restart.
    pub fn host_mut(&mut self, host_id: &str) -> &mut BrokerHost {
        let name = &self.name;
        self.hosts
            .iter_mut()
            .find(|host| host.host_id() == host_id)
            .unwrap_or_else(|| panic!("no host {host_id} in cluster {name}"))
    }

    /// Cuts host `host_id` off from etcd and the other hosts (see [`TestNetwork::cut`]).
    pub fn cut(&self, host_id: &str) {
        self.namespaced(host_id, "cut")
            .0
            .cut(self.host_index(host_id));
    }

    /// Lets a cut host reach etcd and the other hosts again.
    pub fn heal(&self, host_id: &str) {
        self.namespaced(host_id, "heal")
            .0
            .heal(self.host_index(host_id));
    }

    /// The URL of host `host_id`'s side door: reachable from the test even while the
    /// host is cut off, so the test can be a client on the host's side of a cut.
    pub fn side_door_url(&self, host_id: &str) -> String {
        let (network, index) = self.namespaced(host_id, "reach through a side door");
        let ip = network.host(index).side_door_ip;
        format!("http://{ip}:{}", netns::HOST_PORT)
    }

    /// The test network and the index of `host_id` in it, or a panic saying this
    /// cluster was not started in namespaces, so it cannot `what`.
    fn namespaced(&self, host_id: &str, what: &str) -> (&TestNetwork, usize) {
        let network = self.network.as_ref().unwrap_or_else(|| {
            panic!(
                "cluster {} runs on loopback and cannot {what}: start it with \
                 network: Network::Namespaces",
                self.name
            )
        });
        (network, self.host_index(host_id))
    }

    fn host_index(&self, host_id: &str) -> usize {
        self.hosts
            .iter()
            .position(|host| host.host_id() == host_id)
            .unwrap_or_else(|| panic!("no host {host_id} in cluster {}", self.name))
    }

    /// The directory holding etcd's and every host's data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Host `index` listens on 127.0.0.(index + 2): Linux routes all of 127/8 to lo.
fn host_ip(index: usize) -> Ipv4Addr {
    let last = u8::try_from(index + 2).expect("at most MAX_HOSTS hosts");
    Ipv4Addr::new(127, 0, 0, last)
}
