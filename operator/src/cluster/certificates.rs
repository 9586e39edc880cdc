//! A TLS cluster's certificates in Kubernetes: the CA in Secret `{name}-ca`, its
//! certificate alone in ConfigMap `{name}-ca-cert` for clients, and the hosts'
//! client listener and peer certificates in Secrets `{name}-tls` and `{name}-peer`
//! (type `kubernetes.io/tls`, with `ca.crt`), all owned by the BrokerCluster.
//!
//! Each reconcile reads the Secrets and issues a host certificate again when it is
//! missing, was signed by another CA, names other hosts, or is due for renewal
//! (annotations record when); otherwise it writes nothing. The CA is made once and
//! never replaced by the operator: clients hold it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::events::EventType;
use tracing::info;

use super::pki::{self, Issued, Role};
use super::resources::{ClusterNames, meta};
use crate::context::{Context, EtcdClientFiles};
use crate::error::Error;
use crate::metadata::MetadataClient;

/// The CA certificate's key in every Secret and ConfigMap here.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The CA private key's key in the CA Secret.
const CA_KEY_KEY: &str = "ca.key";
/// A host certificate's key in its Secret (the `kubernetes.io/tls` convention).
pub const CERT_KEY: &str = "tls.crt";
/// A host private key's key in its Secret.
pub const KEY_KEY: &str = "tls.key";
/// The CA's subject, which rebuilds its issuer from the stored key.
const SUBJECT_ANNOTATION: &str = "ferry.dev/ca-subject";
/// The end of a certificate's validity (RFC 3339).
const NOT_AFTER_ANNOTATION: &str = "ferry.dev/not-after";
/// When the operator issues a host certificate again (RFC 3339).
const RENEW_AFTER_ANNOTATION: &str = "ferry.dev/renew-after";
/// The DNS names a host certificate was issued for, comma-separated.
const DNS_NAMES_ANNOTATION: &str = "ferry.dev/dns-names";
/// The event reason of a host certificate issued or renewed.
pub const CERTIFICATE_ISSUED: &str = "CertificateIssued";

/// How long the operator's certificates are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// A cluster CA's lifetime.
    pub ca: Duration,
    /// A host certificate's lifetime; it is renewed after two thirds of it.
    pub host: Duration,
}

/// The cluster's CA as stored.
struct StoredCa {
    subject: String,
    cert_pem: String,
    key_pem: String,
}

/// Makes sure the cluster's CA, its public ConfigMap and both host certificates
/// exist, are current and are signed by that CA; `regarding` gets an event for each
/// host certificate issued.
pub async fn reconcile<M: MetadataClient>(
    ctx: &Context<M>,
    names: &ClusterNames,
    owner: &OwnerReference,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
) -> Result<(), Error> {
    let now = Timestamp::now();
    let validity = ctx.settings.certificate_validity;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let ca = match secrets.get_opt(&names.ca_secret()).await? {
        Some(secret) => StoredCa::read(&secret, &names.ca_secret())?,
        None => {
            let subject = pki::ca_subject(&names.namespace, &names.name);
            let made = pki::new_ca(&subject, now, validity.ca).map_err(certificates)?;
            let mut secret = Secret {
                metadata: meta(names, names.ca_secret(), owner),
                type_: Some("Opaque".to_owned()),
                data: Some(BTreeMap::from([
                    (CA_CERT_KEY.to_owned(), bytes(&made.cert_pem)),
                    (CA_KEY_KEY.to_owned(), bytes(&made.key_pem)),
                ])),
                ..Secret::default()
            };
            secret.metadata.annotations = Some(BTreeMap::from([
                (SUBJECT_ANNOTATION.to_owned(), subject.clone()),
                (NOT_AFTER_ANNOTATION.to_owned(), made.not_after.to_string()),
            ]));
            super::apply(&ctx.client, names, &secret).await?;
            info!(secret = names.ca_secret(), "cluster CA created");
            StoredCa {
                subject,
                cert_pem: made.cert_pem,
                key_pem: made.key_pem,
            }
        }
    };
    let public = ConfigMap {
        metadata: meta(names, names.ca_config_map(), owner),
        data: Some(BTreeMap::from([(
            CA_CERT_KEY.to_owned(),
            ca.cert_pem.clone(),
        )])),
        ..ConfigMap::default()
    };
    super::apply(&ctx.client, names, &public).await?;

    let dns_names = names.dns_names(&ctx.settings.cluster_domain);
    let mut issued_now = Vec::new();
    for (role, secret_name) in [
        (Role::Server, names.tls_secret()),
        (Role::Peer, names.peer_secret()),
    ] {
        let existing = secrets.get_opt(&secret_name).await?;
        let Some(why) = reissue_reason(existing.as_ref(), &ca.cert_pem, &dns_names, now) else {
            continue;
        };
        let issued = pki::issue(
            &ca.subject,
            &ca.key_pem,
            role,
            &names.name,
            &dns_names,
            now,
            validity.host,
        )
        .map_err(certificates)?;
        let secret = host_secret(
            names,
            owner,
            &secret_name,
            &issued,
            &ca.cert_pem,
            &dns_names,
        );
        super::apply(&ctx.client, names, &secret).await?;
        info!(secret = secret_name, why, not_after = %issued.not_after, "host certificate issued");
        issued_now.push(format!(
            "{secret_name} ({why}; valid until {}, renewed after {})",
            issued.not_after,
            pki::renew_after(issued.not_before, issued.not_after)
        ));
    }
    // One event per reconcile: the recorder folds repeats of a reason into a series.
    if !issued_now.is_empty() {
        ctx.event(
            regarding,
            EventType::Normal,
            CERTIFICATE_ISSUED,
            "IssueCertificate",
            format!("Issued {}.", issued_now.join(", ")),
        )
        .await;
    }
    Ok(())
}

/// Copies the operator's etcd TLS files into Secret `{name}-etcd-client`, which the
/// hosts mount (read again every reconcile, so renewed files reach the hosts, which
/// follow them without a restart).
pub async fn copy_etcd_client(
    client: &kube::Client,
    names: &ClusterNames,
    owner: &OwnerReference,
    files: &EtcdClientFiles,
) -> Result<(), Error> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|err| {
            Error::Certificates(format!("reading the etcd file {}: {err}", path.display()))
        })
    };
    let mut data = BTreeMap::new();
    if let Some(ca) = &files.ca {
        data.insert(CA_CERT_KEY.to_owned(), ByteString(read(ca)?));
    }
    if let Some((cert, key)) = &files.identity {
        data.insert(CERT_KEY.to_owned(), ByteString(read(cert)?));
        data.insert(KEY_KEY.to_owned(), ByteString(read(key)?));
    }
    let secret = Secret {
        metadata: meta(names, names.etcd_client_secret(), owner),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    super::apply(client, names, &secret).await?;
    Ok(())
}

impl StoredCa {
    /// Reads the CA back; an unusable one is an error, never replaced: clients
    /// trust it.
    fn read(secret: &Secret, name: &str) -> Result<Self, Error> {
        let field = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|data| data.get(key))
                .and_then(|value| String::from_utf8(value.0.clone()).ok())
                .ok_or_else(|| Error::Certificates(format!("Secret {name} has no {key}")))
        };
        let subject = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SUBJECT_ANNOTATION))
            .cloned()
            .ok_or_else(|| {
                Error::Certificates(format!(
                    "Secret {name} has no {SUBJECT_ANNOTATION} annotation"
                ))
            })?;
        Ok(Self {
            subject,
            cert_pem: field(CA_CERT_KEY)?,
            key_pem: field(CA_KEY_KEY)?,
        })
    }
}

/// Why a host certificate Secret must be issued again at `now`, or `None` when it
/// is current.
fn reissue_reason(
    existing: Option<&Secret>,
    ca_pem: &str,
    dns_names: &[String],
    now: Timestamp,
) -> Option<&'static str> {
    let Some(secret) = existing else {
        return Some("missing");
    };
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| data.get(key).map(|value| value.0.as_slice());
    if text(CERT_KEY).is_none_or(<[u8]>::is_empty) || text(KEY_KEY).is_none_or(<[u8]>::is_empty) {
        return Some("certificate or key missing");
    }
    if text(CA_CERT_KEY) != Some(ca_pem.as_bytes()) {
        return Some("signed by another CA");
    }
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    if annotations.get(DNS_NAMES_ANNOTATION) != Some(&dns_names.join(",")) {
        return Some("host names changed");
    }
    let renew_after = annotations
        .get(RENEW_AFTER_ANNOTATION)
        .and_then(|value| value.parse::<Timestamp>().ok());
    match renew_after {
        Some(renew_after) if renew_after > now => None,
        Some(_) => Some("due for renewal"),
        None => Some("renewal time unknown"),
    }
}

fn host_secret(
    names: &ClusterNames,
    owner: &OwnerReference,
    name: &str,
    issued: &Issued,
    ca_pem: &str,
    dns_names: &[String],
) -> Secret {
    let mut metadata = meta(names, name.to_owned(), owner);
    metadata.annotations = Some(BTreeMap::from([
        (
            NOT_AFTER_ANNOTATION.to_owned(),
            issued.not_after.to_string(),
        ),
        (
            RENEW_AFTER_ANNOTATION.to_owned(),
            pki::renew_after(issued.not_before, issued.not_after).to_string(),
        ),
        (DNS_NAMES_ANNOTATION.to_owned(), dns_names.join(",")),
    ]));
    Secret {
        metadata,
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            (CERT_KEY.to_owned(), bytes(&issued.cert_pem)),
            (KEY_KEY.to_owned(), bytes(&issued.key_pem)),
            (CA_CERT_KEY.to_owned(), bytes(ca_pem)),
        ])),
        ..Secret::default()
    }
}

fn bytes(text: &str) -> ByteString {
    ByteString(text.as_bytes().to_vec())
}

fn certificates(err: pki::PkiError) -> Error {
    Error::Certificates(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid time")
    }

    #[test]
    fn a_host_certificate_is_issued_again_only_when_it_must_be() {
        let names = ClusterNames {
            name: "main".into(),
            namespace: "shop".into(),
            etcd_name: "shop.main".into(),
        };
        let owner = OwnerReference::default();
        let dns = names.dns_names("cluster.local");
        let issued = Issued {
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
            not_before: at(0),
            not_after: at(90_000),
        };
        let secret = host_secret(&names, &owner, "main-tls", &issued, "CA", &dns);
        assert_eq!(reissue_reason(None, "CA", &dns, at(1)), Some("missing"));
        assert_eq!(reissue_reason(Some(&secret), "CA", &dns, at(1)), None);
        assert_eq!(reissue_reason(Some(&secret), "CA", &dns, at(59_999)), None);
        assert_eq!(
            reissue_reason(Some(&secret), "CA", &dns, at(60_000)),
            Some("due for renewal")
        );
        assert_eq!(
            reissue_reason(Some(&secret), "NEW CA", &dns, at(1)),
            Some("signed by another CA")
        );
        assert_eq!(
            reissue_reason(Some(&secret), "CA", &dns[1..], at(1)),
            Some("host names changed")
        );
        let mut emptied = secret.clone();
        if let Some(data) = emptied.data.as_mut() {
            data.remove(KEY_KEY);
        }
        assert_eq!(
            reissue_reason(Some(&emptied), "CA", &dns, at(1)),
            Some("certificate or key missing")
        );
        let mut unknown = secret;
        unknown.metadata.annotations = None;
        assert_eq!(
            reissue_reason(Some(&unknown), "CA", &dns, at(1)),
            Some("host names changed")
        );
    }
}
