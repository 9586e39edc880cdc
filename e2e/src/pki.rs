//! Certificate authorities for the TLS tests, made with the real `openssl` command
//! (Debian's openssl; `.ci/setup` installs it): a CA, and leaf certificates it signs
//! for servers and clients, with the subject alternative names a test needs.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A test certificate authority in a directory of its own.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    name: String,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
}

/// Runs `openssl args…` in `dir`, panicking with what it printed when it fails.
pub(crate) fn openssl<S: AsRef<OsStr>>(dir: &Path, args: &[S]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("run openssl (install Debian's openssl): {err}"));
    let shown: Vec<_> = args
        .iter()
        .map(|arg| arg.as_ref().to_string_lossy())
        .collect();
    assert!(
        output.status.success(),
        "openssl {shown:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `path` as a command-line argument.
pub fn arg(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

impl Issued {
    /// The flags of a host or gateway serving this certificate on its client
    /// listener, requiring callers' certificates from `client_ca` when given.
    pub fn listener_args(&self, client_ca: Option<&Path>) -> Vec<String> {
        let mut args = vec![
            "--tls-cert-file".to_owned(),
            arg(&self.cert),
            "--tls-key-file".to_owned(),
            arg(&self.key),
        ];
        if let Some(ca) = client_ca {
            args.extend(["--tls-client-ca-file".to_owned(), arg(ca)]);
        }
        args
    }

    /// The flags of a host serving this certificate on its peer listener, trusting
    /// peers of `peer_ca`.
    pub fn peer_listener_args(&self, peer_ca: &Path) -> Vec<String> {
        vec![
            "--peer-tls-cert-file".to_owned(),
            arg(&self.cert),
            "--peer-tls-key-file".to_owned(),
            arg(&self.key),
            "--peer-tls-ca-file".to_owned(),
            arg(peer_ca),
        ]
    }
}

impl Pki {
    /// A new CA named `name` (its subject CN) under `parent/name`, valid for two days.
    pub fn new(parent: &Path, name: &str) -> Self {
        let dir = parent.join(name);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Self {
            dir,
            name: name.to_owned(),
        }
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `file_stem`.pem/.key (subject CN `file_stem`) valid for every loopback
    /// address the harness uses: 127.0.0.1 for gateways, 127.0.0.2… for hosts.
    pub fn issue_for_loopback(&self, file_stem: &str) -> Issued {
        let sans: Vec<String> = (1..=12).map(|n| format!("IP:127.0.0.{n}")).collect();
        let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
        self.issue(file_stem, file_stem, &sans)
    }

    /// Issues `file_stem`.pem/.key with subject CN `common_name` and the given
    /// subject alternative names (`"IP:127.0.0.2"`, `"DNS:localhost"`), usable by
    /// servers and clients alike.
    pub fn issue(&self, file_stem: &str, common_name: &str, sans: &[&str]) -> Issued {
        let key = format!("{file_stem}.key");
        let csr = format!("{file_stem}.csr");
        let cert = format!("{file_stem}.pem");
        let ext = format!("{file_stem}.ext");
        let mut extensions = String::from(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        );
        if !sans.is_empty() {
            extensions.push_str(&format!("subjectAltName={}\n", sans.join(",")));
        }
        fs::write(self.dir.join(&ext), extensions).expect("write the extensions file");
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={common_name}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial(),
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        Issued {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        }
    }

    /// The CA's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Whether `openssl verify` accepts the certificate in `cert` as signed by the CA in
/// `ca` for `purpose` (`sslserver`, `sslclient`) and naming `host`; what openssl
/// printed when it does not. Files are PEM, in `dir`.
pub fn openssl_verifies(
    dir: &Path,
    ca: &Path,
    cert: &Path,
    purpose: &str,
    host: &str,
) -> Result<(), String> {
    let output = Command::new("openssl")
        .args([
            "verify",
            "-purpose",
            purpose,
            "-verify_hostname",
            host,
            "-CAfile",
        ])
        .arg(ca)
        .arg(cert)
        .current_dir(dir)
        .output()
        .map_err(|err| format!("run openssl (install Debian's openssl): {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A serial number unlikely to repeat within a test run.
fn serial() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos());
    format!("{}", nanos % 1_000_000_000_000_000)
}

/// Writes the certificates of several CAs into one PEM bundle at `path`.
pub fn bundle(path: &Path, cas: &[&Pki]) -> PathBuf {
    let mut pem = Vec::new();
    for ca in cas {
        pem.extend(fs::read(ca.ca()).expect("read a CA certificate"));
    }
    fs::write(path, pem).expect("write the CA bundle");
    path.to_owned()
}

/// Replaces `target` with the contents of `source` in one rename, as a Kubernetes
/// Secret volume update does, so a reader never sees half a file.
pub fn replace_atomically(source: &Path, target: &Path) {
    let staged = target.with_extension("staged");
    fs::copy(source, &staged).expect("stage the new file");
    fs::rename(&staged, target).expect("rename the new file into place");
}
