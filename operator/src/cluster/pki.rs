//! The certificates of a broker cluster, made without any API call: the cluster's
//! own certificate authority, and the certificates it signs for the hosts' client
//! listener (server) and peer listener (server and client: peers dial each other).
//!
//! One CA per BrokerCluster is the cluster's boundary: the peer listener accepts
//! only certificates this CA signed, so another cluster's hosts are strangers.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate could not be made or read back.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters or a stored key.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A validity end outside what a certificate can carry.
    #[error("certificate validity out of range: {0}")]
    Validity(String),
}

/// What a host certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The client listener: clients check it; it never authenticates the host.
    Server,
    /// The peer listener and the connections hosts open to each other (and gateways
    /// to hosts): both ends present it.
    Peer,
}

/// A certificate and its private key, PEM-encoded, with its validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// The start of its validity.
    pub not_before: Timestamp,
    /// The end of its validity.
    pub not_after: Timestamp,
}

/// The subject of a cluster's CA; the same name rebuilds its issuer from the stored
/// key, so it must never change for an existing CA (the Secret records it).
pub fn ca_subject(namespace: &str, cluster: &str) -> String {
    format!("ferry {namespace}/{cluster} CA")
}

/// A new self-signed CA named `subject`, valid from `now` for `validity`.
pub fn new_ca(subject: &str, now: Timestamp, validity: Duration) -> Result<Issued, PkiError> {
    let key = KeyPair::generate()?;
    let params = ca_params(subject, now, validity)?;
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_before: now,
        not_after: end_of(now, validity)?,
    })
}

/// A certificate for `role` naming `dns_names`, signed by the CA with subject
/// `ca_subject` and key `ca_key_pem`, valid from `now` for `validity`.
pub fn issue(
    ca_subject: &str,
    ca_key_pem: &str,
    role: Role,
    common_name: &str,
    dns_names: &[String],
    now: Timestamp,
    validity: Duration,
) -> Result<Issued, PkiError> {
    // Only the subject, key identifier method and key usages of the CA's parameters
    // reach a signed certificate; its own validity does not matter here.
    let issuer = Issuer::new(
        ca_params(ca_subject, now, validity)?,
        KeyPair::from_pem(ca_key_pem)?,
    );
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params.distinguished_name = distinguished_name(common_name);
    params.not_before = to_offset(now)?;
    params.not_after = to_offset(end_of(now, validity)?)?;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        Role::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Role::Peer => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_before: now,
        not_after: end_of(now, validity)?,
    })
}

/// When a certificate valid from `not_before` to `not_after` is renewed: once two
/// thirds of its life have passed, so a third of it is left for the new one to reach
/// every host (kubelets refresh Secret volumes within about a minute, hosts reread
/// their files every few seconds) and for a stuck operator to be noticed.
pub fn renew_after(not_before: Timestamp, not_after: Timestamp) -> Timestamp {
    let life = not_after.as_second().saturating_sub(not_before.as_second());
    Timestamp::from_second(not_before.as_second().saturating_add(life / 3 * 2))
        .unwrap_or(not_before)
}

fn ca_params(
    subject: &str,
    now: Timestamp,
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(subject);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = to_offset(now)?;
    params.not_after = to_offset(end_of(now, validity)?)?;
    Ok(params)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "ferry.dev");
    name
}

fn end_of(start: Timestamp, validity: Duration) -> Result<Timestamp, PkiError> {
    let seconds = i64::try_from(validity.as_secs())
        .map_err(|_| PkiError::Validity(format!("{validity:?}")))?;
    Timestamp::from_second(start.as_second().saturating_add(seconds))
        .map_err(|err| PkiError::Validity(err.to_string()))
}

fn to_offset(at: Timestamp) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(at.as_second())
        .map_err(|err| PkiError::Validity(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
    use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid time")
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
    }

    /// Whether `leaf` chains to `ca` for `usage` at `now` and names `host`.
    fn verifies(ca: &Issued, leaf: &Issued, usage: KeyUsage, now: Timestamp, host: &str) -> bool {
        let ca_der = der(&ca.cert_pem);
        let anchor = anchor_from_trusted_cert(&ca_der).expect("a trust anchor");
        let leaf_der = der(&leaf.cert_pem);
        let cert = EndEntityCert::try_from(&leaf_der).expect("an end-entity certificate");
        let time = UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(now.as_second()).expect("after 1970"),
        ));
        let name = ServerName::try_from(host.to_owned()).expect("a DNS name");
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            time,
            usage,
            None,
            None,
        )
        .is_ok()
            && cert.verify_is_valid_for_subject_name(&name).is_ok()
    }

    #[test]
    fn host_certificates_chain_to_the_ca_rebuilt_from_its_stored_key() {
        let now = at(1_800_000_000);
        let subject = ca_subject("shop", "main");
        let ca = new_ca(&subject, now, 3650 * DAY).expect("a CA");
        let names = vec![
            "main-client.shop.svc".to_owned(),
            "*.main-hosts.shop.svc.cluster.local".to_owned(),
        ];
        let server = issue(
            &subject,
            &ca.key_pem,
            Role::Server,
            "main",
            &names,
            now,
            90 * DAY,
        )
        .expect("a server certificate");
        let peer = issue(
            &subject,
            &ca.key_pem,
            Role::Peer,
            "main",
            &names,
            now,
            90 * DAY,
        )
        .expect("a peer certificate");
        let later = at(1_800_000_000 + 3600);
        assert!(verifies(
            &ca,
            &server,
            KeyUsage::server_auth(),
            later,
            "main-client.shop.svc"
        ));
        assert!(verifies(
            &ca,
            &peer,
            KeyUsage::server_auth(),
            later,
            "main-2.main-hosts.shop.svc.cluster.local"
        ));
        assert!(verifies(
            &ca,
            &peer,
            KeyUsage::client_auth(),
            later,
            "main-client.shop.svc"
        ));
        // The client listener's certificate cannot pass for a peer.
        assert!(!verifies(
            &ca,
            &server,
            KeyUsage::client_auth(),
            later,
            "main-client.shop.svc"
        ));
        // Names it was not issued for, and times outside its validity, are refused.
        assert!(!verifies(
            &ca,
            &server,
            KeyUsage::server_auth(),
            later,
            "other.shop.svc"
        ));
        assert!(!verifies(
            &ca,
            &server,
            KeyUsage::server_auth(),
            at(1_800_000_000 + 91 * 86_400),
            "main-client.shop.svc"
        ));
        // Another cluster's CA signs nothing this one trusts.
        let other = new_ca(&ca_subject("shop", "main"), now, 3650 * DAY).expect("a CA");
        assert!(!verifies(
            &other,
            &server,
            KeyUsage::server_auth(),
            later,
            "main-client.shop.svc"
        ));
    }

    #[test]
    fn renewal_comes_after_two_thirds_of_the_validity() {
        assert_eq!(renew_after(at(0), at(90 * 86_400)), at(60 * 86_400));
        assert_eq!(renew_after(at(100), at(100)), at(100));
    }
}
