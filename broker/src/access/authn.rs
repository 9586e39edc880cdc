//! Authentication: from a request's bearer token or client certificate to a
//! [`Principal`].
//!
//! Three ways, any of them per listener:
//! - a client certificate (on a listener with `--tls-client-ca-file`, so rustls has
//!   already verified it): the subject's common name is the principal and its
//!   organizations its groups, as Kubernetes reads client certificates;
//! - a static token from a file that holds only SHA-256 hashes of the tokens;
//! - a Kubernetes ServiceAccount token (a JWT), verified offline against the issuer's
//!   keys (a JWKS file, read again when it changes), for the configured audience.
//!
//! The files are re-read every reload interval; a file that stops parsing keeps the
//! previous contents in force and logs a warning.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{AccessError, AuthMethod, Caller, Principal};

/// Seconds a token's expiry and not-before may be off by (clocks of the API server
/// and the hosts differ).
const CLOCK_SKEW_LEEWAY_S: u64 = 30;

/// The audience ServiceAccount tokens must carry by default.
pub const DEFAULT_AUDIENCE: &str = "ferry";

/// How a listener authenticates callers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthnSettings {
    /// Principals from verified client certificates (the listener requires them).
    pub certificates: bool,
    /// The static tokens file (`--auth-tokens-file`).
    pub static_tokens: Option<PathBuf>,
    /// ServiceAccount tokens: the issuer's keys and the claims required.
    pub service_accounts: Option<ServiceAccountTokens>,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
}

/// Where ServiceAccount tokens' keys come from and what they must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountTokens {
    /// The issuer's JSON Web Key Set (`/openid/v1/jwks` of the API server).
    pub jwks_file: PathBuf,
    /// The `iss` claim required (the API server's `--service-account-issuer`).
    pub issuer: String,
    /// Audiences accepted; a token must name one of them.
    pub audiences: Vec<String>,
}

impl AuthnSettings {
    /// These settings on a listener with `tls`: client certificates authenticate
    /// when it requires them (a client CA).
    pub fn on_listener(&self, tls: Option<&crate::tls::ListenerTls>) -> Self {
        Self {
            certificates: tls.is_some_and(|tls| tls.files.client_ca.is_some()),
            ..self.clone()
        }
    }

    /// Whether any way to authenticate is configured: then every request needs one.
    pub fn required(&self) -> bool {
        self.certificates || self.static_tokens.is_some() || self.service_accounts.is_some()
    }
}

/// Why authentication material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file's contents are unusable.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Authenticates requests as the settings say.
#[derive(Debug, Clone)]
pub struct Authenticator {
    settings: AuthnSettings,
    tokens: Option<Arc<Reloaded<StaticTokens>>>,
    keys: Option<Arc<Reloaded<IssuerKeys>>>,
}

impl Authenticator {
    /// Accepts every request as [`Caller::Anonymous`].
    pub fn none() -> Self {
        Self {
            settings: AuthnSettings::default(),
            tokens: None,
            keys: None,
        }
    }

    /// Loads the files the settings name; fails when one is unreadable or invalid.
    pub fn load(settings: AuthnSettings) -> Result<Self, AuthnError> {
        let tokens = match &settings.static_tokens {
            Some(path) => Some(Reloaded::load(path.clone(), StaticTokens::parse)?),
            None => None,
        };
        let keys = match &settings.service_accounts {
            Some(sa) => Some(Reloaded::load(sa.jwks_file.clone(), IssuerKeys::parse)?),
            None => None,
        };
        Ok(Self {
            settings,
            tokens,
            keys,
        })
    }

    /// Re-reads the files every reload interval, for as long as the task runs.
    pub fn spawn_reloader(&self) -> tokio::task::JoinHandle<()> {
        let tokens = self.tokens.clone();
        let keys = self.keys.clone();
        let interval = self.settings.reload_interval.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Some(tokens) = &tokens {
                    tokens.reload(StaticTokens::parse);
                }
                if let Some(keys) = &keys {
                    keys.reload(IssuerKeys::parse);
                }
            }
        })
    }

    /// Whether requests without credentials are refused.
    pub fn required(&self) -> bool {
        self.settings.required()
    }

    /// Who a request comes from: its bearer token when it has one (a bad token is
    /// refused even beside a good certificate), else its client certificate (DER,
    /// already verified by the TLS layer). A listener that authenticates nobody takes
    /// every request as anonymous, credentials or not.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        certificate: Option<&[u8]>,
    ) -> Result<Caller, AccessError> {
        if !self.required() {
            return Ok(Caller::Anonymous);
        }
        if let Some(token) = bearer {
            return self.token(token).map(|p| Caller::Principal(Arc::new(p)));
        }
        if self.settings.certificates
            && let Some(der) = certificate
        {
            return certificate_principal(der).map(|p| Caller::Principal(Arc::new(p)));
        }
        Err(AccessError::Unauthenticated(
            "this listener requires credentials: a bearer token (ferryctl --token-file) or a \
             client certificate"
                .into(),
        ))
    }

    fn token(&self, token: &str) -> Result<Principal, AccessError> {
        if let Some(tokens) = &self.tokens
            && let Some(principal) = tokens.current().find(token)
        {
            return Ok(principal);
        }
        if let (Some(keys), Some(sa)) = (&self.keys, &self.settings.service_accounts)
            && looks_like_jwt(token)
        {
            return keys
                .current()
                .verify(token, sa)
                .map_err(AccessError::Unauthenticated);
        }
        Err(AccessError::Unauthenticated(
            "the bearer token is not one this broker accepts".into(),
        ))
    }
}

/// A file's parsed contents, read again when asked.
#[derive(Debug)]
struct Reloaded<T> {
    path: PathBuf,
    raw: RwLock<Vec<u8>>,
    parsed: RwLock<Arc<T>>,
}

impl<T> Reloaded<T> {
    fn load(
        path: PathBuf,
        parse: fn(&Path, &[u8]) -> Result<T, AuthnError>,
    ) -> Result<Arc<Self>, AuthnError> {
        let raw = std::fs::read(&path).map_err(|source| AuthnError::Read {
            path: path.clone(),
            source,
        })?;
        let parsed = parse(&path, &raw)?;
        Ok(Arc::new(Self {
            path,
            raw: RwLock::new(raw),
            parsed: RwLock::new(Arc::new(parsed)),
        }))
    }

    fn current(&self) -> Arc<T> {
        Arc::clone(&self.parsed.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the file again; a change that parses replaces the contents.
    fn reload(&self, parse: fn(&Path, &[u8]) -> Result<T, AuthnError>) {
        let raw = match std::fs::read(&self.path) {
            Ok(raw) => raw,
            Err(err) => {
                tracing::warn!(path = %self.path.display(), %err, "cannot re-read an authentication file; keeping what was loaded");
                return;
            }
        };
        if *self.raw.read().unwrap_or_else(|e| e.into_inner()) == raw {
            return;
        }
        match parse(&self.path, &raw) {
            Ok(parsed) => {
                *self.parsed.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(parsed);
                *self.raw.write().unwrap_or_else(|e| e.into_inner()) = raw;
                tracing::info!(path = %self.path.display(), "authentication file reloaded");
            }
            Err(err) => {
                tracing::warn!(%err, "a changed authentication file is unusable; keeping what was loaded");
            }
        }
    }
}

/// Static tokens, by the SHA-256 of the token.
#[derive(Debug, Default)]
struct StaticTokens {
    by_hash: HashMap<[u8; 32], (String, Vec<String>)>,
}

/// The prefix of a token hash in the tokens file.
pub const TOKEN_HASH_PREFIX: &str = "sha256:";

/// The line the tokens file holds for `token`: its hash, never the token.
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{TOKEN_HASH_PREFIX}{hex}")
}

/// What a generated token starts with, so secret scanners and people recognise it.
pub const GENERATED_TOKEN_PREFIX: &str = "ferry_";

/// A new random token: [`GENERATED_TOKEN_PREFIX`] and 256 random bits in hex.
pub fn generate_token() -> Result<String, AuthnError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthnError::Invalid {
            path: PathBuf::from("/dev/urandom"),
            reason: "the system's random source failed".into(),
        })?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{GENERATED_TOKEN_PREFIX}{hex}"))
}

/// Appends `token`'s line (its hash, never the token) to the tokens file, created
/// readable by its owner only when missing. The file is checked to still parse.
pub fn add_token(
    path: &Path,
    token: &str,
    principal: &str,
    groups: &[String],
) -> Result<(), AuthnError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let invalid = |reason: String| AuthnError::Invalid {
        path: path.to_owned(),
        reason,
    };
    if principal.is_empty() || principal.chars().any(char::is_whitespace) {
        return Err(invalid(format!("principal {principal:?} must be one word")));
    }
    if let Some(group) = groups
        .iter()
        .find(|g| g.is_empty() || g.contains(',') || g.chars().any(char::is_whitespace))
    {
        return Err(invalid(format!(
            "group {group:?} must be one word without commas"
        )));
    }
    let mut line = format!("{} {principal}", token_hash(token));
    if !groups.is_empty() {
        line.push(' ');
        line.push_str(&groups.join(","));
    }
    line.push('\n');
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| AuthnError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let existing = if path.exists() {
        read(path)?
    } else {
        Vec::new()
    };
    let mut combined = existing.clone();
    if !combined.is_empty() && !combined.ends_with(b"\n") {
        combined.push(b'\n');
    }
    combined.extend_from_slice(line.as_bytes());
    StaticTokens::parse(path, &combined)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| AuthnError::Read {
            path: path.to_owned(),
            source,
        })?;
    let mut appended = Vec::new();
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        appended.push(b'\n');
    }
    appended.extend_from_slice(line.as_bytes());
    file.write_all(&appended)
        .and_then(|()| file.sync_all())
        .map_err(|source| AuthnError::Read {
            path: path.to_owned(),
            source,
        })
}

impl StaticTokens {
    /// Lines `sha256:<hex> <principal> [group,group...]`; blank lines and `#` comments
    /// are skipped.
    fn parse(path: &Path, contents: &[u8]) -> Result<Self, AuthnError> {
        let invalid = |line: usize, reason: String| AuthnError::Invalid {
            path: path.to_owned(),
            reason: format!("line {line}: {reason}"),
        };
        let text = std::str::from_utf8(contents).map_err(|_| AuthnError::Invalid {
            path: path.to_owned(),
            reason: "not UTF-8".into(),
        })?;
        let mut tokens = Self::default();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(hash), Some(principal)) = (fields.next(), fields.next()) else {
                return Err(invalid(
                    line_no,
                    "expected `sha256:<hex> <principal> [groups]`".into(),
                ));
            };
            let groups: Vec<String> = fields
                .next()
                .map(|g| {
                    g.split(',')
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if fields.next().is_some() {
                return Err(invalid(
                    line_no,
                    "groups are one comma-separated field".into(),
                ));
            }
            let hex = hash.strip_prefix(TOKEN_HASH_PREFIX).ok_or_else(|| {
                invalid(
                    line_no,
                    "the first field is a token's hash, `sha256:<hex>` (ferry-broker token hash)"
                        .into(),
                )
            })?;
            let digest = parse_hex32(hex)
                .ok_or_else(|| invalid(line_no, "a SHA-256 hash has 64 hex digits".into()))?;
            if tokens
                .by_hash
                .insert(digest, (principal.to_owned(), groups))
                .is_some()
            {
                return Err(invalid(line_no, "the same token appears twice".into()));
            }
        }
        Ok(tokens)
    }

    fn find(&self, token: &str) -> Option<Principal> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
        let key: [u8; 32] = digest.as_ref().try_into().ok()?;
        let (name, groups) = self.by_hash.get(&key)?;
        Some(Principal {
            name: name.clone(),
            groups: groups.clone(),
            method: AuthMethod::StaticToken,
        })
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A ServiceAccount token issuer's public keys.
#[derive(Debug)]
struct IssuerKeys {
    keys: JwkSet,
}

/// The claims of a Kubernetes ServiceAccount token Ferry reads.
#[derive(Debug, Deserialize)]
struct ServiceAccountClaims {
    sub: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Debug, Deserialize)]
struct KubernetesClaims {
    namespace: String,
}

/// The algorithms a key of this type may verify: the token's header must name one,
/// so a token cannot pick a weaker reading of the key.
fn algorithms_for(params: &AlgorithmParameters) -> Vec<Algorithm> {
    match params {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // A shared secret would let anyone holding the key set mint tokens.
        AlgorithmParameters::OctetKey(_) => Vec::new(),
    }
}

fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

impl IssuerKeys {
    fn parse(path: &Path, contents: &[u8]) -> Result<Self, AuthnError> {
        let keys: JwkSet = serde_json::from_slice(contents).map_err(|err| AuthnError::Invalid {
            path: path.to_owned(),
            reason: format!("not a JSON Web Key Set: {err}"),
        })?;
        if keys.keys.is_empty() {
            return Err(AuthnError::Invalid {
                path: path.to_owned(),
                reason: "the key set holds no key".into(),
            });
        }
        Ok(Self { keys })
    }

    /// Checks the signature, issuer, audience and lifetime; the principal is the
    /// subject, with the groups Kubernetes gives a ServiceAccount.
    fn verify(&self, token: &str, settings: &ServiceAccountTokens) -> Result<Principal, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| format!("the bearer token is not a readable JWT: {err}"))?;
        let jwk = match &header.kid {
            Some(kid) => self.keys.find(kid),
            None if self.keys.keys.len() == 1 => self.keys.keys.first(),
            None => None,
        }
        .ok_or("the token was not signed by a key of the configured issuer")?;
        let allowed = algorithms_for(&jwk.algorithm);
        if !allowed.contains(&header.alg) {
            return Err(format!(
                "the token's algorithm {:?} does not fit its key",
                header.alg
            ));
        }
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|err| format!("the issuer's key is unusable: {err}"))?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = allowed;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&settings.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = CLOCK_SKEW_LEEWAY_S;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<ServiceAccountClaims>(token, &key, &validation)
            .map_err(|err| format!("the token was refused: {err}"))?;
        let claims = data.claims;
        let mut groups = vec!["system:serviceaccounts".to_owned()];
        if let Some(k8s) = &claims.kubernetes {
            groups.push(format!("system:serviceaccounts:{}", k8s.namespace));
        }
        Ok(Principal {
            name: claims.sub,
            groups,
            method: AuthMethod::ServiceAccountToken,
        })
    }
}

/// The principal a verified client certificate names: the subject's common name
/// (else its first URI, else its first DNS subject alternative name), with the
/// subject's organizations as groups.
pub fn certificate_principal(der: &[u8]) -> Result<Principal, AccessError> {
    let unusable = |why: &str| AccessError::Unauthenticated(format!("client certificate {why}"));
    let certificate = tokio_rustls::rustls::pki_types::CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&certificate)
        .map_err(|err| unusable(&format!("cannot be read: {err}")))?;
    let subject =
        subject_attributes(cert.subject()).ok_or_else(|| unusable("has a malformed subject"))?;
    let mut common_name = None;
    let mut groups = Vec::new();
    for (oid, value) in subject {
        match oid {
            OID_COMMON_NAME if common_name.is_none() => common_name = Some(value),
            OID_ORGANIZATION => groups.push(value),
            _ => {}
        }
    }
    let name = common_name
        .filter(|cn| !cn.is_empty())
        .or_else(|| cert.valid_uri_names().next().map(str::to_owned))
        .or_else(|| cert.valid_dns_names().next().map(str::to_owned))
        .ok_or_else(|| unusable("names no principal (no common name, URI or DNS name)"))?;
    Ok(Principal {
        name,
        groups,
        method: AuthMethod::Certificate,
    })
}

/// The DER of OID 2.5.4.3, commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// The DER of OID 2.5.4.10, organizationName.
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
/// String types an attribute value may take that are text Ferry reads.
const TEXT_TAGS: [u8; 3] = [
    0x0c, /* UTF8String */
    0x13, /* PrintableString */
    0x16, /* IA5String */
];

/// The (attribute type OID, text value) pairs of an X.509 Name's contents (its
/// RelativeDistinguishedName sets, without the outer SEQUENCE). Values in other
/// string types are skipped; malformed DER gives `None`.
fn subject_attributes(mut name: &[u8]) -> Option<Vec<(&[u8], String)>> {
    let mut attributes = Vec::new();
    while !name.is_empty() {
        let (tag, mut set, rest) = der_item(name)?;
        name = rest;
        if tag != TAG_SET {
            return None;
        }
        while !set.is_empty() {
            let (tag, attribute, rest) = der_item(set)?;
            set = rest;
            if tag != TAG_SEQUENCE {
                return None;
            }
            let (tag, oid, rest) = der_item(attribute)?;
            if tag != TAG_OID {
                return None;
            }
            let (tag, value, _) = der_item(rest)?;
            if TEXT_TAGS.contains(&tag)
                && let Ok(text) = std::str::from_utf8(value)
            {
                attributes.push((oid, text.to_owned()));
            }
        }
    }
    Some(attributes)
}

/// One DER item at the start of `input`: its tag, contents and what follows. Only
/// single-byte tags and definite lengths (DER has no other kind) are read.
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    if rest.len() < length {
        return None;
    }
    let (contents, after) = rest.split_at(length);
    Some((tag, contents, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_tokens_match_by_hash_and_refuse_everything_else() {
        let file = format!(
            "# comment\n\n{} alice team-a,ops\n{} bob\n",
            token_hash("s3cret-alice"),
            token_hash("s3cret-bob")
        );
        let tokens = StaticTokens::parse(Path::new("t"), file.as_bytes()).expect("test value");
        let alice = tokens.find("s3cret-alice").expect("test value");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["team-a", "ops"]);
        assert_eq!(
            tokens.find("s3cret-bob").expect("test value").groups,
            Vec::<String>::new()
        );
        assert!(tokens.find("s3cret-carol").is_none());
        assert!(
            tokens.find(&token_hash("s3cret-alice")).is_none(),
            "a hash is no token"
        );
    }

    #[test]
    fn a_bad_tokens_file_names_the_line() {
        let err =
            StaticTokens::parse(Path::new("t"), b"\nplaintext-token alice\n").expect_err("refused");
        assert!(err.to_string().contains("line 2"), "{err}");
        let twice = format!("{} a\n{} b\n", token_hash("x"), token_hash("x"));
        assert!(StaticTokens::parse(Path::new("t"), twice.as_bytes()).is_err());
    }

    #[test]
    fn der_items_refuse_truncation_and_long_lengths() {
        assert_eq!(
            der_item(&[0x04, 0x02, 1, 2, 9]),
            Some((0x04, &[1u8, 2][..], &[9u8][..]))
        );
        assert_eq!(der_item(&[0x04, 0x03, 1, 2]), None);
        assert_eq!(
            der_item(&[0x04, 0x81, 0x01, 7]),
            Some((0x04, &[7u8][..], &[][..]))
        );
        assert_eq!(der_item(&[0x04, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_item(&[0x1f, 0x01, 0]), None);
        assert_eq!(der_item(&[]), None);
    }

    #[test]
    fn subject_attributes_read_common_name_and_organizations() {
        // SET { SEQ { OID 2.5.4.10, UTF8 "ops" } }, SET { SEQ { OID 2.5.4.3, PRINTABLE "alice" } }
        let name = [
            0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x03, b'o', b'p', b's',
            0x31, 0x0e, 0x30, 0x0c, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x05, b'a', b'l', b'i',
            b'c', b'e',
        ];
        let attributes = subject_attributes(&name).expect("test value");
        assert_eq!(
            attributes,
            vec![
                (OID_ORGANIZATION, "ops".to_owned()),
                (OID_COMMON_NAME, "alice".to_owned())
            ]
        );
        assert!(subject_attributes(&name[..name.len() - 1]).is_none());
    }

    /// An issuer of ES256 tokens for the tests: its key pair and key set.
    struct TestIssuer {
        pkcs8: Vec<u8>,
        keys: IssuerKeys,
    }

    const ISSUER: &str = "https://kubernetes.default.svc";

    fn test_issuer(kid: &str) -> TestIssuer {
        use base64::Engine as _;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("a key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("the key reads back");
        // An uncompressed point: 0x04, then x and y.
        let point = pair.public_key().as_ref();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
        }]});
        let keys =
            IssuerKeys::parse(Path::new("jwks"), jwks.to_string().as_bytes()).expect("a key set");
        TestIssuer {
            pkcs8: pkcs8.as_ref().to_vec(),
            keys,
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    /// A token `issuer` signs (as key `kid`) with `claims` over the defaults.
    fn sign(issuer: &TestIssuer, kid: &str, claims: serde_json::Value) -> String {
        let mut all = serde_json::json!({
            "iss": ISSUER, "aud": ["ferry"], "sub": "system:serviceaccount:shop:worker",
            "iat": now(), "nbf": now() - 10, "exp": now() + 600,
            "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "worker"}},
        });
        for (key, value) in claims.as_object().expect("an object") {
            all[key] = value.clone();
        }
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(
            &header,
            &all,
            &jsonwebtoken::EncodingKey::from_ec_der(&issuer.pkcs8),
        )
        .expect("signed")
    }

    fn settings() -> ServiceAccountTokens {
        ServiceAccountTokens {
            jwks_file: PathBuf::from("jwks"),
            issuer: ISSUER.to_owned(),
            audiences: vec![DEFAULT_AUDIENCE.to_owned()],
        }
    }

    #[test]
    fn service_account_tokens_are_checked_for_signature_issuer_audience_and_time() {
        let issuer = test_issuer("k1");
        let verify = |token: &str| issuer.keys.verify(token, &settings());
        let principal = verify(&sign(&issuer, "k1", serde_json::json!({}))).expect("valid");
        assert_eq!(principal.name, "system:serviceaccount:shop:worker");
        assert_eq!(
            principal.groups,
            ["system:serviceaccounts", "system:serviceaccounts:shop"]
        );
        let refused = [
            (
                "expired",
                sign(&issuer, "k1", serde_json::json!({"exp": now() - 3600})),
            ),
            (
                "not yet valid",
                sign(&issuer, "k1", serde_json::json!({"nbf": now() + 3600})),
            ),
            (
                "another audience",
                sign(&issuer, "k1", serde_json::json!({"aud": ["vault"]})),
            ),
            (
                "another issuer",
                sign(&issuer, "k1", serde_json::json!({"iss": "https://evil"})),
            ),
            ("an unknown key", sign(&issuer, "k2", serde_json::json!({}))),
            // Same key id, another key: a forgery.
            (
                "another key",
                sign(&test_issuer("k1"), "k1", serde_json::json!({})),
            ),
        ];
        for (what, token) in refused {
            assert!(verify(&token).is_err(), "a token with {what} was accepted");
        }
        // A header naming an algorithm the key does not take (HMAC with the public key
        // as secret, the classic confusion) is refused before any check.
        let valid = sign(&issuer, "k1", serde_json::json!({}));
        let mut parts = valid.splitn(2, '.');
        let _ = parts.next();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#);
        let confused = format!("{header}.{}", parts.next().expect("payload and signature"));
        let err = verify(&confused).expect_err("algorithm confusion");
        assert!(err.contains("does not fit its key"), "{err}");
    }

    #[test]
    fn anonymous_only_where_nothing_is_required() {
        assert_eq!(
            Authenticator::none().authenticate(None, None),
            Ok(Caller::Anonymous)
        );
        assert_eq!(
            Authenticator::none().authenticate(Some("a token"), None),
            Ok(Caller::Anonymous),
            "credentials mean nothing where nobody is authenticated"
        );
        let required = Authenticator {
            settings: AuthnSettings {
                certificates: true,
                ..AuthnSettings::default()
            },
            tokens: None,
            keys: None,
        };
        assert!(matches!(
            required.authenticate(None, None),
            Err(AccessError::Unauthenticated(_))
        ));
        assert!(matches!(
            required.authenticate(Some("whatever"), None),
            Err(AccessError::Unauthenticated(_))
        ));
    }
}
