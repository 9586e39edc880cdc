//! A standalone broker with TLS, as a newcomer runs it: `/metrics` over TLS with the
//! gRPC listener's certificate, read by the real `curl`; with a client CA, a scraper
//! needs a client certificate; plaintext gets nothing. The Rust client reaches the
//! gRPC port over TLS, and so does a Python grpcio client (stubs generated from the
//! repository's protos) with a client certificate: it sends, receives and acks.

mod common;

use std::path::Path;
use std::process::Command;

use common::BrokerProcess;
use ferry_client::{Client, ClientConfig, TlsOptions};
use ferry_e2e::pki::{Issued, Pki, arg as path};

/// `curl args…`: whether it succeeded, and what it printed.
fn curl(args: &[String]) -> (bool, String) {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("run curl (install Debian's curl): {err}"));
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn start(dir: &Path, server: &Issued, client_ca: Option<&Path>) -> BrokerProcess {
    let mut extra = vec![
        "--metrics-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--metrics-tls".to_owned(),
    ];
    extra.extend(server.listener_args(client_ca));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    BrokerProcess::start_with(&dir.join("data"), &extra)
}

#[tokio::test]
async fn metrics_are_served_over_tls_and_the_client_connects_over_tls() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Pki::new(dir.path(), "ferry-ca");
    let server = ca.issue("broker", "localhost", &["DNS:localhost", "IP:127.0.0.1"]);
    let broker = start(dir.path(), &server, None);
    let metrics = broker.metrics_addr.expect("a metrics address");

    let (ok, body) = curl(&[
        "--cacert".to_owned(),
        path(&ca.ca()),
        format!("https://{metrics}/metrics"),
    ]);
    assert!(ok && body.contains("ferry_"), "metrics over TLS: {body}");
    let (ok, body) = curl(&[format!("http://{metrics}/metrics")]);
    assert!(!ok, "metrics served in plaintext: {body}");

    let client = Client::connect_with(
        &format!("https://localhost:{}", broker.addr.port()),
        ClientConfig {
            tls: Some(TlsOptions {
                ca_pem: Some(std::fs::read(ca.ca()).expect("read the CA")),
                ..TlsOptions::default()
            }),
            ..ClientConfig::default()
        },
    )
    .await
    .expect("connect over TLS");
    client
        .list_topics()
        .await
        .expect("a request over TLS is answered");
}

#[tokio::test]
async fn with_a_client_ca_a_scraper_needs_a_certificate_from_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Pki::new(dir.path(), "ferry-ca");
    let server = ca.issue("broker", "localhost", &["DNS:localhost", "IP:127.0.0.1"]);
    let prometheus = ca.issue("prometheus", "prometheus", &[]);
    let broker = start(dir.path(), &server, Some(&ca.ca()));
    let metrics = broker.metrics_addr.expect("a metrics address");
    let url = format!("https://{metrics}/metrics");

    let (ok, body) = curl(&["--cacert".to_owned(), path(&ca.ca()), url.clone()]);
    assert!(!ok, "metrics served without a client certificate: {body}");
    let (ok, body) = curl(&[
        "--cacert".to_owned(),
        path(&ca.ca()),
        "--cert".to_owned(),
        path(&prometheus.cert),
        "--key".to_owned(),
        path(&prometheus.key),
        url,
    ]);
    assert!(
        ok && body.contains("ferry_"),
        "metrics with a client certificate: {body}"
    );
}

#[test]
fn a_python_grpcio_client_sends_receives_and_acks_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Pki::new(dir.path(), "ferry-ca");
    let server = ca.issue("broker", "localhost", &["DNS:localhost", "IP:127.0.0.1"]);
    let client = ca.issue("python", "python", &[]);
    let broker = start(dir.path(), &server, Some(&ca.ca()));
    let (ok, printed) = common::python_queue_client(&[
        "--server".to_owned(),
        format!("localhost:{}", broker.addr.port()),
        "--ca".to_owned(),
        path(&ca.ca()),
        "--cert".to_owned(),
        path(&client.cert),
        "--key".to_owned(),
        path(&client.key),
    ]);
    assert!(
        ok,
        "the Python client failed (./.ci/setup test installs grpcio): {printed}"
    );
    for line in [
        "sent 3",
        "acked 3",
        "missing NOT_FOUND queue no-such-queue",
        "refused without a certificate",
    ] {
        assert!(printed.contains(line), "{line:?} missing: {printed}");
    }
}
