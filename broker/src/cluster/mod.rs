//! Cluster mode: independent hosts that register in etcd under leases, one elected
//! controller per cluster that places partition replicas on hosts and elects their
//! leaders with epochs, and a cached view of all of it on every host.
//!
//! The keyspace is in `docs/etcd-keyspace.md`; the protocol in `docs/cluster.md`.

pub mod controller;
pub mod disk;
pub mod membership;
pub mod placement;
pub mod records;
pub mod routing;
pub mod view;

use std::time::Duration;

use crate::error::BrokerError;

/// Settings of one host in cluster mode.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The broker cluster this host belongs to.
    pub cluster: String,
    /// This host's id, unique in the cluster (a StatefulSet pod's name or ordinal).
    pub host_id: String,
    /// The address clients reach this host's gRPC service at.
    pub advertise: String,
    /// The address other hosts reach its peer listener at; `None` when peers use
    /// `advertise`.
    pub peer_advertise: Option<String>,
    /// The failure domain this host runs in (a node's `topology.kubernetes.io/zone`),
    /// if known: the controller spreads each partition's replicas over zones.
    pub zone: Option<String>,
    /// Time to live of the host's etcd lease. Default 5 s.
    pub lease_ttl: Duration,
    /// How much sooner than etcd this host assumes its lease is gone: it stops acting
    /// as a leader this long before etcd could expire the lease. Default 1 s.
    pub lease_safety_margin: Duration,
    /// How often the lease is renewed. Default a third of the TTL.
    pub keep_alive_interval: Duration,
    /// A host gone longer than this loses its replicas to other hosts. Default 30 s.
    pub host_grace: Duration,
    /// The controller re-checks placement at least this often. Default 1 s.
    pub reconcile_interval: Duration,
    /// Pause after a failed etcd call before trying again. Default 500 ms.
    pub retry_pause: Duration,
    /// How often leaders publish observed state (high watermarks, lag, depth). Default 5 s.
    pub observed_interval: Duration,
}

impl ClusterConfig {
    /// Defaults for a host `host_id` of `cluster` reachable at `advertise`.
    pub fn new(cluster: &str, host_id: &str, advertise: &str) -> Self {
        Self::with_lease_ttl(cluster, host_id, advertise, Duration::from_secs(5))
    }

    /// Defaults derived from a lease TTL (margin a fifth, renewals a third of it).
    pub fn with_lease_ttl(cluster: &str, host_id: &str, advertise: &str, ttl: Duration) -> Self {
        Self {
            cluster: cluster.to_owned(),
            host_id: host_id.to_owned(),
            advertise: advertise.to_owned(),
            peer_advertise: None,
            zone: None,
            lease_ttl: ttl,
            lease_safety_margin: ttl / 5,
            keep_alive_interval: ttl / 3,
            host_grace: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(1),
            retry_pause: Duration::from_millis(500),
            observed_interval: Duration::from_secs(5),
        }
    }

    /// Checks names and the timing relations fencing depends on.
    pub fn validate(&self) -> Result<(), BrokerError> {
        crate::names::validate_cluster_name(&self.cluster)?;
        crate::names::validate_host_id(&self.host_id)?;
        if let Some(zone) = &self.zone {
            crate::names::validate_zone(zone)?;
        }
        if self.advertise.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "the advertised address must not be empty".into(),
            ));
        }
        if self.lease_ttl < Duration::from_secs(2) {
            return Err(BrokerError::InvalidArgument(
                "the lease TTL must be at least 2 s (etcd's minimum)".into(),
            ));
        }
        if self.keep_alive_interval.is_zero()
            || self.keep_alive_interval + self.lease_safety_margin >= self.lease_ttl
        {
            return Err(BrokerError::InvalidArgument(
                "keep-alive interval plus safety margin must be shorter than the lease TTL".into(),
            ));
        }
        if self.reconcile_interval.is_zero()
            || self.retry_pause.is_zero()
            || self.observed_interval.is_zero()
        {
            return Err(BrokerError::InvalidArgument(
                "reconcile interval, retry pause and observed-state interval must be positive"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The lease TTL in whole seconds, as etcd takes it (rounded up).
    pub fn lease_ttl_seconds(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
    }
}

/// The pod labels naming a zone, in order of preference: the standard one, then the
/// key Kubernetes 1.33's PodTopologyLabelsAdmission copied it under (fixed in 1.34).
pub const ZONE_LABELS: [&str; 2] = ["topology.kubernetes.io/zone", "topology.k8s.io/zone"];

/// The zone in a Kubernetes downward-API labels file (`key="value"` per line), if
/// one of [`ZONE_LABELS`] is there with a plain value.
pub fn zone_from_pod_labels(labels: &str) -> Option<String> {
    let value = |wanted: &str| {
        labels.lines().find_map(|line| {
            let (key, quoted) = line.split_once('=')?;
            let value = quoted.strip_prefix('"')?.strip_suffix('"')?;
            // Label values never need escapes; a backslash means this is not one.
            (key == wanted && !value.is_empty() && !value.contains('\\')).then(|| value.to_owned())
        })
    };
    ZONE_LABELS.iter().find_map(|key| value(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_comes_from_the_standard_label_first() {
        let labels = "app.kubernetes.io/name=\"ferry\"\n\
                      topology.k8s.io/zone=\"old\"\n\
                      topology.kubernetes.io/zone=\"eu-1a\"";
        assert_eq!(zone_from_pod_labels(labels).as_deref(), Some("eu-1a"));
        let only_old = "topology.k8s.io/zone=\"eu-1b\"\n";
        assert_eq!(zone_from_pod_labels(only_old).as_deref(), Some("eu-1b"));
        assert_eq!(zone_from_pod_labels("app=\"x\"\n"), None);
        assert_eq!(
            zone_from_pod_labels("topology.kubernetes.io/zone=\"\""),
            None
        );
    }
}
