//! End-to-end tests for Ferry clusters: a real etcd, several `ferry-broker`
//! processes on their own loopback addresses, faults (kill, pause, restart, wiped
//! disks), and a history checker that decides whether what clients saw was allowed.
//!
//! - [`history`]: record client operations from many tasks; [`history::check`] them.
//! - [`etcd`]: a single-member etcd server.
//! - [`broker`]: one broker host process in cluster mode.
//! - [`cluster`]: etcd plus N hosts under one cluster name, in a temporary directory.
//! - [`gateway`]: a `ferry-broker gateway` process.
//! - [`netns`]: a private network of namespaces, to cut one host off from the rest.
//! - [`kube`]: a real kube-apiserver (and kube-controller-manager) on its own etcd,
//!   with kubectl and helm, for the operator, CRD and chart tests.
//! - [`operator`]: a `ferry-operator` process against that API server.
//! - [`node`]: a one-node Kubernetes beside that API server (containerd, kubelet,
//!   kube-scheduler, kube-proxy, CoreDNS), for tests that run Ferry in pods.
//!
//! Every process is wrapped in `timeout 600`, so a test killed midway leaves nothing
//! running for long.

pub mod bench;
pub mod broker;
pub mod cluster;
pub mod etcd;
pub mod gateway;
pub mod history;
pub mod kube;
pub mod netns;
pub mod node;
pub mod operator;
pub mod pki;
mod process;

pub use broker::{BrokerHost, HostConfig, broker_binary, ferryctl_binary};
pub use cluster::{Cluster, ClusterOptions, Network};
pub use etcd::{EtcdServer, EtcdServerTls};
pub use history::{CheckOptions, History, Verdict, check};
pub use kube::{KubeApiServer, KubeTools};
pub use node::KubeNode;
pub use operator::{OperatorConfig, OperatorProcess, http_get};
pub use process::{run_bounded, run_bounded_with_env};
