//! What the broker pods mount besides their data: their labels, and as the spec
//! asks, the operator's certificates (client listener and peer), a copy of the
//! operator's etcd client files, and the API server's token keys; with the
//! environment variables that point the broker at them. Volumes, never `subPath`
//! mounts: the kubelet refreshes volumes when the Secrets and ConfigMaps change, so
//! renewed certificates and keys reach running hosts.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EnvVar,
    ObjectFieldSelector, SecretVolumeSource, Volume, VolumeMount,
};

use super::certificates::{CA_CERT_KEY, CERT_KEY, KEY_KEY};
use super::resources::{ClusterNames, PODINFO_VOLUME};
use crate::context::{EtcdClientFiles, Settings};
use crate::crd::BrokerCluster;

/// Where the hosts find their client listener certificate (Secret `{name}-tls`).
pub const TLS_DIR: &str = "/etc/ferry/tls";
/// The client listener certificate's volume.
const TLS_VOLUME: &str = "tls";
/// Where the hosts find their peer certificate and the cluster CA (`{name}-peer`).
pub const PEER_TLS_DIR: &str = "/etc/ferry/peer";
/// The peer certificate's volume.
const PEER_TLS_VOLUME: &str = "peer-tls";

/// Where the hosts find the operator's etcd client files (Secret
/// `{name}-etcd-client`).
pub const ETCD_CLIENT_DIR: &str = "/etc/ferry/etcd";
/// The etcd client files' volume.
const ETCD_CLIENT_VOLUME: &str = "etcd-client";
/// The operator's etcd TLS files, when the cluster's hosts use the operator's etcd
/// (they then get the same).
pub fn etcd_client_files<'a>(
    cluster: &BrokerCluster,
    settings: &'a Settings,
) -> Option<&'a EtcdClientFiles> {
    settings
        .etcd_client_files
        .as_ref()
        .filter(|_| super::uses_operator_etcd(cluster, settings))
}

/// The hosts' etcd TLS settings, pointing at the mounted copy of the operator's.
pub fn etcd_client_environment(cluster: &BrokerCluster, settings: &Settings) -> Vec<EnvVar> {
    let Some(files) = etcd_client_files(cluster, settings) else {
        return Vec::new();
    };
    let mut env = Vec::new();
    let mut put = |name: &str, file: &str| {
        env.push(EnvVar {
            name: name.to_owned(),
            value: Some(format!("{ETCD_CLIENT_DIR}/{file}")),
            ..EnvVar::default()
        });
    };
    if files.ca.is_some() {
        put("FERRY_ETCD_CA_FILE", CA_CERT_KEY);
    }
    if files.identity.is_some() {
        put("FERRY_ETCD_CERT_FILE", CERT_KEY);
        put("FERRY_ETCD_KEY_FILE", KEY_KEY);
    }
    env
}

/// Where the hosts find the ServiceAccount token keys.
pub const TOKEN_KEYS_DIR: &str = "/etc/ferry/token-keys";
/// The token keys volume.
const TOKEN_KEYS_VOLUME: &str = "token-keys";
/// The key set's file name in the ConfigMap and the volume.
pub const TOKEN_KEYS_FILE: &str = "jwks.json";

/// The pod's volumes besides its data: its labels (downward API) and those of
/// [`optional_volumes`].
pub fn pod_volumes(
    names: &ClusterNames,
    cluster: &BrokerCluster,
    settings: &Settings,
) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: PODINFO_VOLUME.to_owned(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![DownwardAPIVolumeFile {
                path: "labels".to_owned(),
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.labels".to_owned(),
                    ..ObjectFieldSelector::default()
                }),
                ..DownwardAPIVolumeFile::default()
            }]),
            ..DownwardAPIVolumeSource::default()
        }),
        ..Volume::default()
    }];
    for (volume, _, source) in optional_volumes(cluster, settings) {
        let mut volume = Volume {
            name: volume.to_owned(),
            ..Volume::default()
        };
        match source {
            VolumeSource::TokenKeys => {
                volume.config_map = Some(ConfigMapVolumeSource {
                    name: names.token_keys_config_map(),
                    ..ConfigMapVolumeSource::default()
                });
            }
            VolumeSource::Secret(secret) => {
                volume.secret = Some(SecretVolumeSource {
                    secret_name: Some(secret(names)),
                    // Readable by the broker's group only (fsGroup), never by others.
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                });
            }
        }
        volumes.push(volume);
    }
    volumes
}

/// Where an optional volume's files come from.
enum VolumeSource {
    /// The API server's token keys (ConfigMap `{name}-token-keys`).
    TokenKeys,
    /// A certificate Secret, by name.
    Secret(fn(&ClusterNames) -> String),
}

/// The volumes the spec asks for beyond data and pod labels: name, mount path and
/// source. Secret volumes (not subPath mounts) follow renewed certificates.
fn optional_volumes(
    cluster: &BrokerCluster,
    settings: &Settings,
) -> Vec<(&'static str, &'static str, VolumeSource)> {
    let mut volumes = Vec::new();
    if etcd_client_files(cluster, settings).is_some() {
        volumes.push((
            ETCD_CLIENT_VOLUME,
            ETCD_CLIENT_DIR,
            VolumeSource::Secret(ClusterNames::etcd_client_secret),
        ));
    }
    if cluster.spec.auth.service_account_tokens {
        volumes.push((TOKEN_KEYS_VOLUME, TOKEN_KEYS_DIR, VolumeSource::TokenKeys));
    }
    if cluster.spec.tls.enabled {
        volumes.push((
            TLS_VOLUME,
            TLS_DIR,
            VolumeSource::Secret(ClusterNames::tls_secret),
        ));
        volumes.push((
            PEER_TLS_VOLUME,
            PEER_TLS_DIR,
            VolumeSource::Secret(ClusterNames::peer_secret),
        ));
    }
    volumes
}

/// The read-only mounts of [`optional_volumes`], for the broker container.
pub fn volume_mounts(cluster: &BrokerCluster, settings: &Settings) -> Vec<VolumeMount> {
    optional_volumes(cluster, settings)
        .into_iter()
        .map(|(volume, dir, _)| VolumeMount {
            name: volume.to_owned(),
            mount_path: dir.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        })
        .collect()
}
