//! The NetworkPolicy of a cluster's broker pods (pure: the reconciler applies it).
//!
//! Ingress only: brokers dial etcd, DNS and each other freely. The client port takes
//! the allowed namespaces' pods; the peer port, which hands out any partition's
//! stored batches to a holder of a peer certificate, takes only the cluster's own
//! hosts and the pods its namespace labels as the cluster's gateways; the metrics
//! port takes anyone (Prometheus). The kubelet's probes are not subject to it.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::resources::{ClusterNames, meta, selector_labels};
use crate::context::Settings;
use crate::crd::BrokerCluster;

/// The pod label that admits a gateway (or any pod trusted as a peer, holding the
/// cluster's peer certificate) to the peer port: `ferry.dev/peer-of: {cluster}`.
pub const PEER_OF_LABEL: &str = "ferry.dev/peer-of";
/// The namespace label Kubernetes sets to the namespace's name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The broker pods' NetworkPolicy, `{name}-brokers`.
pub fn network_policy(
    names: &ClusterNames,
    owner: &OwnerReference,
    cluster: &BrokerCluster,
    settings: &Settings,
) -> NetworkPolicy {
    let spec = &cluster.spec.network_policy;
    let clients = if spec.client_namespaces.is_empty() {
        LabelSelector::default()
    } else {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.to_owned(),
                operator: "In".to_owned(),
                values: Some(spec.client_namespaces.clone()),
            }]),
            ..LabelSelector::default()
        }
    };
    let pods = |labels: BTreeMap<String, String>| NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: meta(names, names.network_policy(), owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&names.name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(clients),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: Some(vec![port(settings.broker_port)]),
                },
                NetworkPolicyIngressRule {
                    from: Some(vec![
                        pods(selector_labels(&names.name)),
                        pods(BTreeMap::from([(
                            PEER_OF_LABEL.to_owned(),
                            names.name.clone(),
                        )])),
                    ]),
                    ports: Some(vec![port(settings.broker_peer_port)]),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![port(settings.broker_metrics_port)]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

fn port(number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(spec: serde_json::Value) -> BrokerCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "BrokerCluster",
            "metadata": {"name": "main", "namespace": "shop"},
            "spec": spec,
        }))
        .expect("a BrokerCluster")
    }

    fn names() -> ClusterNames {
        ClusterNames {
            name: "main".into(),
            namespace: "shop".into(),
            etcd_name: "shop.main".into(),
        }
    }

    #[test]
    fn the_peer_port_admits_the_clusters_pods_and_gateways_only() {
        let policy = network_policy(
            &names(),
            &OwnerReference::default(),
            &cluster(serde_json::json!({})),
            &Settings::default(),
        );
        let value = serde_json::to_value(&policy).expect("JSON");
        let rules = &value["spec"]["ingress"];
        assert_eq!(value["metadata"]["name"], "main-brokers");
        assert_eq!(value["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
        // Client port: every namespace.
        assert_eq!(rules[0]["ports"][0]["port"], 7070);
        assert_eq!(
            rules[0]["from"][0]["namespaceSelector"],
            serde_json::json!({})
        );
        // Peer port: this cluster's hosts and pods labelled as its peers, in its
        // namespace (no namespace selector).
        assert_eq!(rules[1]["ports"][0]["port"], 7072);
        assert_eq!(
            rules[1]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
            "main"
        );
        assert_eq!(
            rules[1]["from"][1]["podSelector"]["matchLabels"]["ferry.dev/peer-of"],
            "main"
        );
        assert!(rules[1]["from"][0].get("namespaceSelector").is_none());
        // Metrics: anyone.
        assert_eq!(rules[2]["ports"][0]["port"], 7071);
        assert!(rules[2].get("from").is_none());
    }

    #[test]
    fn client_namespaces_narrow_the_client_port() {
        let policy = network_policy(
            &names(),
            &OwnerReference::default(),
            &cluster(serde_json::json!({"networkPolicy": {"clientNamespaces": ["shop", "web"]}})),
            &Settings::default(),
        );
        let value = serde_json::to_value(&policy).expect("JSON");
        let selector = &value["spec"]["ingress"][0]["from"][0]["namespaceSelector"];
        assert_eq!(
            selector["matchExpressions"][0],
            serde_json::json!({"key": "kubernetes.io/metadata.name", "operator": "In",
                               "values": ["shop", "web"]})
        );
    }
}
