//! TLS against real processes and real certificates (made by openssl): a cluster
//! whose hosts require client certificates replicates over mutual TLS on the peer
//! listeners (which refuse client certificates; the client port does not serve
//! replica fetches), and `ferryctl` reaches it through a TLS gateway (whose metrics
//! are served over TLS too); clients without a certificate, with
//! one from another CA, or in plaintext are refused, and `ferryctl` never falls
//! back to plaintext; a certificate rotated on disk is served to new connections
//! without a restart while a producer carries on and nothing is lost; stalled and
//! garbage handshakes neither stop the listener nor hold it beyond their limits.
//! etcd too: hosts and gateways reach an etcd that requires client certificates (and
//! take a renewed one from disk without a restart), and sign in to one with authentication on (a wrong password is refused, saying why).

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::rpc::{self, show};
use common::{FORM_DEADLINE, PartitionId, SecuredEtcd, start_formed, wait_for_view};
use ferry_e2e::gateway::Gateway;
use ferry_e2e::pki::{self, Issued, Pki, arg as path};
use ferry_e2e::{
    BrokerHost, Cluster, ClusterOptions, EtcdServer, HostConfig, broker_binary, ferryctl_binary,
};
use ferry_proto::internal::v1 as internal;
use ferry_proto::v1 as pb;
use internal::replica_service_client::ReplicaServiceClient;
use pb::admin_service_client::AdminServiceClient;
use pb::metadata_service_client::MetadataServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The TLS gateway's metrics address (its IP is this test's alone) and port.
const GATEWAY_METRICS: &str = "127.0.0.67:9466";
const GATEWAY_METRICS_PORT: u16 = 9466;
/// Longest a `ferryctl` command may run.
const FERRYCTL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a rotated certificate to be served.
const ROTATION_DEADLINE: Duration = Duration::from_secs(30);

/// A TLS channel to `addr` trusting `ca`, presenting `identity` if given.
fn tls_channel(addr: SocketAddr, ca: &Path, identity: Option<&Issued>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
        std::fs::read(ca).expect("read the CA"),
    ));
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&identity.cert).expect("read the client certificate"),
            std::fs::read(&identity.key).expect("read the client key"),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("a valid URL")
        .tls_config(tls)
        .expect("a TLS configuration")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

fn plaintext_channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

async fn metadata(channel: &Channel) -> Result<pb::GetMetadataResponse, tonic::Status> {
    MetadataServiceClient::new(channel.clone())
        .get_metadata(pb::GetMetadataRequest::default())
        .await
        .map(tonic::Response::into_inner)
}

/// A replica fetch of `secured`/0 as host `h1` would send it.
async fn fetch_replica(
    channel: Channel,
) -> Result<tonic::Response<internal::ReplicaFetchResponse>, tonic::Status> {
    ReplicaServiceClient::new(channel)
        .replica_fetch(internal::ReplicaFetchRequest {
            topic: "secured".to_owned(),
            partition: 0,
            follower_id: "h1".to_owned(),
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await
}

/// Runs `ferryctl args…` with `stdin`, killing it if it outlives
/// [`FERRYCTL_TIMEOUT`].
fn ferryctl(args: &[String], stdin: &str) -> Output {
    run_bounded(&ferryctl_binary(), args, stdin)
}

/// Runs `binary args…` with `stdin`, killing it if it outlives [`FERRYCTL_TIMEOUT`].
fn run_bounded(binary: &Path, args: &[String], stdin: &str) -> Output {
    ferry_e2e::run_bounded(binary, args, stdin, FERRYCTL_TIMEOUT)
}

fn succeeded(args: &[String], output: &Output) -> String {
    assert!(
        output.status.success(),
        "ferryctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `curl args…`: the body, or what went wrong.
fn curl(args: &[String]) -> Result<String, String> {
    let output = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("run curl (install Debian's curl): {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

#[tokio::test]
async fn a_mutual_tls_cluster_replicates_over_tls_and_ferryctl_reaches_it_through_a_tls_gateway() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // One CA for the client side (hosts' client ports, the gateway, users), another
    // for the peer listeners: a user's certificate means nothing to a peer listener.
    let ca = Pki::new(dir.path(), "ferry-ca");
    let peer_ca = Pki::new(dir.path(), "peer-ca");
    let hosts_cert = ca.issue_for_loopback("hosts");
    let peers_cert = peer_ca.issue_for_loopback("peers");
    let gateway_cert = ca.issue_for_loopback("gateway");
    let alice = ca.issue("alice", "alice", &[]);
    let mut extra_args = hosts_cert.listener_args(Some(&ca.ca()));
    extra_args.extend(peers_cert.peer_listener_args(&peer_ca.ca()));
    let (cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 3,
        extra_args,
        ..ClusterOptions::default()
    })
    .await;
    let mut gateway_args = gateway_cert.listener_args(Some(&ca.ca()));
    gateway_args.extend([
        "--host-tls-ca-file".to_owned(),
        path(&ca.ca()),
        "--host-tls-cert-file".to_owned(),
        path(&gateway_cert.cert),
        "--host-tls-key-file".to_owned(),
        path(&gateway_cert.key),
        "--metrics-listen".to_owned(),
        GATEWAY_METRICS.to_owned(),
        "--metrics-tls".to_owned(),
    ]);
    let gateway_args: Vec<&str> = gateway_args.iter().map(String::as_str).collect();
    let gateway = Gateway::start(&cluster.etcd_endpoint(), "127.0.0.1", &gateway_args);
    let server = gateway.url().replace("http://", "https://");

    // The gateway's metrics are served over TLS too, to a scraper whose certificate
    // the client CA signed, and never in plaintext. (Its certificate names
    // 127.0.0.1, where curl believes it connects.)
    let url = format!("https://127.0.0.1:{GATEWAY_METRICS_PORT}/metrics");
    let to_gateway = format!("127.0.0.1:{GATEWAY_METRICS_PORT}:{GATEWAY_METRICS}");
    let scraped = curl(&[
        "--connect-to".to_owned(),
        to_gateway.clone(),
        "--cacert".to_owned(),
        path(&ca.ca()),
        "--cert".to_owned(),
        path(&alice.cert),
        "--key".to_owned(),
        path(&alice.key),
        url.clone(),
    ]);
    assert!(
        scraped
            .as_ref()
            .is_ok_and(|body| body.contains("ferry_tls_certificate_expiry")),
        "gateway metrics over TLS: {scraped:?}"
    );
    let refused = curl(&[
        "--connect-to".to_owned(),
        to_gateway,
        "--cacert".to_owned(),
        path(&ca.ca()),
        url,
    ]);
    assert!(
        refused.is_err(),
        "gateway metrics without a client certificate: {refused:?}"
    );
    let plain = curl(&[format!("http://{GATEWAY_METRICS}/metrics")]);
    assert!(plain.is_err(), "gateway metrics in plaintext: {plain:?}");

    let client_flags = [
        "--server".to_owned(),
        server.clone(),
        "--tls-ca-file".to_owned(),
        path(&ca.ca()),
        "--tls-cert-file".to_owned(),
        path(&alice.cert),
        "--tls-key-file".to_owned(),
        path(&alice.key),
    ];
    let run = |command: &[&str], stdin: &str| {
        let mut args = client_flags.to_vec();
        args.extend(strings(command));
        let output = ferryctl(&args, stdin);
        succeeded(&args, &output)
    };
    run(
        &[
            "topic",
            "create",
            "secured",
            "--partitions",
            "2",
            "--replication-factor",
            "3",
        ],
        "",
    );
    let lines: Vec<String> = (0..20).map(|n| format!("message-{n}")).collect();
    let produced = run(&["topic", "produce", "secured"], &(lines.join("\n") + "\n"));
    assert!(produced.contains("20"), "{produced}");

    // Every follower fetched over mutual TLS: each partition has three in-sync
    // replicas only once both followers caught up with the leader.
    let ids = [
        PartitionId::topic("secured", 0),
        PartitionId::topic("secured", 1),
    ];
    let view = wait_for_view(
        &mut etcd,
        cluster.name(),
        FORM_DEADLINE,
        "both partitions led with three in-sync replicas",
        |view| view.all_led_in_sync(&ids, 3),
    )
    .await;

    let consumed = run(
        &[
            "topic",
            "consume",
            "secured",
            "--from-beginning",
            "--max",
            "20",
        ],
        "",
    );
    for line in &lines {
        assert!(
            consumed.contains(line.as_str()),
            "{line} missing: {consumed}"
        );
    }

    // The hosts themselves, straight: the same client certificate works, and the
    // replication between them did not need the client port in plaintext.
    let host = cluster.hosts()[0].addr();
    let alice_at_host = tls_channel(host, &ca.ca(), Some(&alice));
    metadata(&alice_at_host)
        .await
        .unwrap_or_else(|status| panic!("metadata from a host over TLS: {}", show(&status)));
    assert!(
        metadata(&plaintext_channel(host)).await.is_err(),
        "a host with TLS answered in plaintext"
    );
    // A client may not fetch replicas: the client port does not serve them at all.
    let fetched = fetch_replica(alice_at_host).await;
    assert_eq!(
        fetched.as_ref().map_err(tonic::Status::code).err(),
        Some(tonic::Code::Unimplemented),
        "ReplicaFetch on the client port: {fetched:?}"
    );
    // And the peer listener takes only the peer CA's certificates.
    let peer: SocketAddr = view.hosts["h0"]
        .peer_advertise
        .as_deref()
        .expect("hosts register their peer listener")
        .parse()
        .expect("a peer address");
    assert_ne!(peer, host, "the peer listener has a port of its own");
    for (what, channel) in [
        (
            "a user's certificate",
            tls_channel(peer, &peer_ca.ca(), Some(&alice)),
        ),
        ("no certificate", tls_channel(peer, &peer_ca.ca(), None)),
        ("plaintext", plaintext_channel(peer)),
    ] {
        let refused = fetch_replica(channel).await;
        assert!(
            refused.is_err(),
            "the peer listener served {what}: {refused:?}"
        );
    }
    drop(gateway);
}

#[tokio::test]
async fn clients_without_a_trusted_certificate_or_over_plaintext_are_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Pki::new(dir.path(), "ferry-ca");
    let other = Pki::new(dir.path(), "other-ca");
    let host_cert = ca.issue_for_loopback("host");
    let alice = ca.issue("alice", "alice", &[]);
    let mallory = other.issue("mallory", "alice", &[]);
    let (cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 1,
        extra_args: host_cert.listener_args(Some(&ca.ca())),
        ..ClusterOptions::default()
    })
    .await;
    let addr = cluster.hosts()[0].addr();

    metadata(&tls_channel(addr, &ca.ca(), Some(&alice)))
        .await
        .unwrap_or_else(|status| panic!("a trusted client certificate: {}", show(&status)));
    for (what, channel) in [
        ("plaintext", plaintext_channel(addr)),
        ("no client certificate", tls_channel(addr, &ca.ca(), None)),
        (
            "a client certificate from another CA",
            tls_channel(addr, &ca.ca(), Some(&mallory)),
        ),
        (
            "a server certificate checked against another CA",
            tls_channel(addr, &other.ca(), Some(&alice)),
        ),
    ] {
        let refused = metadata(&channel).await;
        assert!(refused.is_err(), "{what} was served: {refused:?}");
    }

    // ferryctl: TLS settings with an http:// address are refused, not sent in
    // plaintext; https:// without a CA checks against the system's roots and fails;
    // plaintext to a TLS host fails with a hint at the cause.
    let https = format!("https://{addr}");
    let cases = [
        (
            strings(&[
                "--server",
                &format!("http://{addr}"),
                "--tls-ca-file",
                &path(&ca.ca()),
                "topic",
                "list",
            ]),
            "http:// is plaintext",
        ),
        (
            strings(&[
                "--server",
                &https,
                "--tls-cert-file",
                &path(&alice.cert),
                "--tls-key-file",
                &path(&alice.key),
                "topic",
                "list",
            ]),
            "certificate",
        ),
        (
            strings(&["--server", &addr.to_string(), "topic", "list"]),
            "if the server serves tls",
        ),
    ];
    for (args, expected) in cases {
        let output = ferryctl(&args, "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "ferryctl {args:?} succeeded");
        assert!(
            stderr.to_lowercase().contains(expected),
            "ferryctl {args:?}: expected {expected:?} in {stderr}"
        );
    }
    let args = strings(&[
        "--server",
        &https,
        "--tls-ca-file",
        &path(&ca.ca()),
        "--tls-cert-file",
        &path(&alice.cert),
        "--tls-key-file",
        &path(&alice.key),
        "topic",
        "list",
    ]);
    succeeded(&args, &ferryctl(&args, ""));
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_is_served_without_a_restart_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let old_ca = Pki::new(dir.path(), "old-ca");
    let new_ca = Pki::new(dir.path(), "new-ca");
    let old = old_ca.issue_for_loopback("old");
    let new = new_ca.issue_for_loopback("new");
    // The files the host reads, as a Secret volume would hold them.
    let served = Issued {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    std::fs::copy(&old.cert, &served.cert).expect("install the first certificate");
    std::fs::copy(&old.key, &served.key).expect("install the first key");
    let both = pki::bundle(&dir.path().join("both.pem"), &[&old_ca, &new_ca]);
    let mut extra_args = served.listener_args(None);
    extra_args.extend(["--tls-reload-interval-ms".to_owned(), "200".to_owned()]);
    let (cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 1,
        extra_args,
        ..ClusterOptions::default()
    })
    .await;
    let addr = cluster.hosts()[0].addr();
    let channel = tls_channel(addr, &both, None);
    rpc::create_topic(&channel, "rotating", 1).await;
    rpc::until_led(FORM_DEADLINE, || {
        rpc::produce(&channel, "rotating", 0, None, "before the producer")
    })
    .await
    .unwrap_or_else(|status| panic!("the new topic is not led: {}", show(&status)));

    // A producer that opens a new TLS connection for every record, so that every
    // record crosses a handshake made before, during or after the rotation.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let bundle = both.clone();
    let producer = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut failures = Vec::new();
        for n in 0u64.. {
            if *stop_rx.borrow_and_update() {
                break;
            }
            let value = format!("record-{n}");
            match rpc::produce(
                &tls_channel(addr, &bundle, None),
                "rotating",
                0,
                None,
                &value,
            )
            .await
            {
                Ok(offset) => acked.push((offset, value)),
                Err(status) => failures.push(show(&status)),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (acked, failures)
    });

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        metadata(&tls_channel(addr, &old_ca.ca(), None))
            .await
            .is_ok()
    );
    // Certificate first, then key, each in one rename (a check between the two sees
    // a pair that does not match and keeps the old one).
    pki::replace_atomically(&new.cert, &served.cert);
    pki::replace_atomically(&new.key, &served.key);
    let until = Instant::now() + ROTATION_DEADLINE;
    while metadata(&tls_channel(addr, &new_ca.ca(), None))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < until,
            "the new certificate was not served within {ROTATION_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metadata(&tls_channel(addr, &old_ca.ca(), None))
            .await
            .is_err(),
        "the old certificate is still served"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    let (acked, failures) = producer.await.expect("the producer task");
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    assert!(
        acked.len() >= 10,
        "only {} records acknowledged",
        acked.len()
    );

    let records = rpc::read_partition(&tls_channel(addr, &both, None), "rotating", 0)
        .await
        .unwrap_or_else(|status| panic!("read the partition back: {}", show(&status)));
    for (offset, value) in &acked {
        let found = records
            .iter()
            .find(|record| record.offset == *offset)
            .unwrap_or_else(|| panic!("acknowledged offset {offset} is missing"));
        assert_eq!(&found.value, value, "offset {offset}");
    }
}

#[tokio::test]
async fn stalled_and_garbage_handshakes_are_dropped_and_do_not_stop_the_listener() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Pki::new(dir.path(), "ferry-ca");
    let host_cert = ca.issue_for_loopback("host");
    let mut extra_args = host_cert.listener_args(None);
    extra_args.extend(strings(&[
        "--max-pending-tls-handshakes",
        "2",
        "--tls-handshake-timeout-ms",
        "500",
    ]));
    let (mut cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 1,
        extra_args,
        ..ClusterOptions::default()
    })
    .await;
    let addr = cluster.hosts()[0].addr();

    // Two connections that never speak hold both handshake slots; two more send
    // garbage. The first two are dropped at the handshake deadline.
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let garbage: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            let _ = stream.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3]);
            let _ = stream.write_all(&[0x42; 4096]);
            stream
        })
        .collect();
    // The host closes each: end of stream, a reset, or a TLS alert followed by the close.
    for stream in stalled.into_iter().chain(garbage) {
        common::assert_closed(stream, "a stalled or garbage connection");
    }

    metadata(&tls_channel(addr, &ca.ca(), None))
        .await
        .unwrap_or_else(|status| {
            panic!(
                "a good client after stalled and garbage handshakes: {}",
                show(&status)
            )
        });
    assert!(cluster.host_mut("h0").is_running());
}

#[tokio::test]
async fn hosts_and_the_gateway_reach_an_etcd_that_requires_client_certificates() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let secured = SecuredEtcd::new(dir.path());
    let mut etcd_flags = secured.flags.clone();
    etcd_flags.extend(["--tls-reload-interval-ms".to_owned(), "200".to_owned()]);
    let mut cluster = Cluster::start_with(ClusterOptions {
        hosts: 2,
        extra_args: etcd_flags.clone(),
        etcd_tls: Some(secured.server.clone()),
        ..ClusterOptions::default()
    });
    let endpoint = cluster.etcd_endpoint();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let mut etcd = secured.connect(&endpoint).await;
    wait_for_view(
        &mut etcd,
        cluster.name(),
        FORM_DEADLINE,
        "both hosts registered through TLS and a controller elected",
        |view| view.hosts.len() == 2 && view.live_controller().is_some(),
    )
    .await;

    let gateway_flags: Vec<&str> = etcd_flags.iter().map(String::as_str).collect();
    let gateway = Gateway::start(&endpoint, "127.0.0.1", &gateway_flags);
    let channel = Endpoint::from_shared(gateway.url())
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    rpc::create_topic(&channel, "through-tls-etcd", 1).await;
    rpc::produce(&channel, "through-tls-etcd", 0, None, "hello")
        .await
        .unwrap_or_else(|status| panic!("produce through the gateway: {}", show(&status)));

    // The client certificate is renewed from another CA and etcd restarts trusting
    // only that one: hosts and the gateway pick the new files up without a restart
    // and carry on (the old certificate, still in use, would be refused).
    // Past a few reload intervals the processes have read the new files (which etcd
    // does not accept yet, so they keep using the old ones until it does).
    let stale = secured
        .renew_client_certificate(dir.path(), cluster.etcd_mut(), Duration::from_secs(1))
        .await;
    let stale_client = etcd_client_with(&secured.ca.ca(), &stale, &endpoint).await;
    assert!(
        stale_client.is_err(),
        "etcd still accepts a certificate of the old CA"
    );
    let mut etcd = secured.connect(&endpoint).await;
    wait_for_view(
        &mut etcd,
        cluster.name(),
        FORM_DEADLINE,
        "both hosts registered and a controller elected with the renewed certificate",
        |view| view.hosts.len() == 2 && view.live_controller().is_some(),
    )
    .await;
    // Creating writes to etcd from a host; producing needs the gateway's watch of
    // etcd to have seen the new topic's leader.
    retry_until(
        ROTATION_DEADLINE,
        "create a topic after the renewal",
        || async {
            let created = AdminServiceClient::new(channel.clone())
                .create_topic(pb::CreateTopicRequest {
                    name: "after-etcd-renewal".to_owned(),
                    config: Some(pb::TopicConfig {
                        partitions: 1,
                        replication_factor: 1,
                        ..Default::default()
                    }),
                })
                .await;
            match created {
                Err(status) if status.code() != tonic::Code::AlreadyExists => Err(status),
                _ => Ok(()),
            }
        },
    )
    .await;
    retry_until(ROTATION_DEADLINE, "produce after the renewal", || {
        rpc::produce(&channel, "after-etcd-renewal", 0, None, "renewed")
    })
    .await;
    rpc::produce(&channel, "through-tls-etcd", 0, None, "still here")
        .await
        .unwrap_or_else(|status| panic!("produce to the old topic: {}", show(&status)));

    // Without a client certificate etcd refuses the gateway, which says so and exits;
    // TLS flags with an http:// endpoint are refused before anything is sent.
    let plain = endpoint.replace("https://", "http://");
    let cases = [
        (
            strings(&[
                "gateway",
                "--etcd",
                &endpoint,
                "--etcd-ca-file",
                &path(&secured.ca.ca()),
                "--etcd-timeout-ms",
                "2000",
                "--listen",
                "127.0.0.1:0",
            ]),
            "etcd",
        ),
        (
            strings(&[
                "gateway",
                "--etcd",
                &plain,
                "--etcd-ca-file",
                &path(&secured.ca.ca()),
                "--listen",
                "127.0.0.1:0",
            ]),
            "use https://",
        ),
    ];
    for (args, expected) in cases {
        let output = run_bounded(&broker_binary(), &args, "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
    }
    drop(gateway);
}

/// Calls `call` until it succeeds, failing the test with its last error after
/// `deadline`.
async fn retry_until<T, Fut>(deadline: Duration, what: &str, mut call: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let until = Instant::now() + deadline;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(_) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("{what}: {}", show(&status)),
        }
    }
}

/// Whether a client presenting `identity` gets an answer from etcd at `endpoint`.
async fn etcd_client_with(
    ca: &Path,
    identity: &Issued,
    endpoint: &str,
) -> Result<(), etcd_client::Error> {
    let read = |path: &Path| std::fs::read(path).expect("read a certificate file");
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(ca)))
        .identity(etcd_client::Identity::from_pem(
            read(&identity.cert),
            read(&identity.key),
        ));
    let options = etcd_client::ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(5));
    let mut client = etcd_client::Client::connect([endpoint], Some(options)).await?;
    client.get("/", None).await.map(|_| ())
}

#[tokio::test]
async fn hosts_sign_in_to_an_etcd_with_authentication_on_and_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let etcd = EtcdServer::start(&dir.path().join("etcd"));
    let mut admin = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("connect to etcd");
    admin
        .user_add("root", "root-secret", None)
        .await
        .expect("add the root user");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("grant root its role");
    admin.auth_enable().await.expect("turn authentication on");
    assert!(
        etcd_client::Client::connect([etcd.endpoint()], None)
            .await
            .expect("connect to etcd")
            .get("/ferry", None)
            .await
            .is_err(),
        "etcd answered a client that did not sign in"
    );
    let password = dir.path().join("etcd-password");
    std::fs::write(&password, "root-secret\n").expect("write the password file");
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "guess\n").expect("write the wrong password file");

    let configs = (0..2)
        .map(|index| HostConfig {
            cluster: "auth".to_owned(),
            host_id: format!("h{index}"),
            etcd_endpoints: vec![etcd.endpoint()],
            ip: Ipv4Addr::new(127, 0, 0, 2 + index),
            netns: None,
            data_dir: dir.path().join(format!("h{index}")),
            lease_ttl_ms: None,
            extra_args: strings(&[
                "--etcd-user",
                "root",
                "--etcd-password-file",
                &path(&password),
            ]),
            env: Vec::new(),
        })
        .collect();
    let hosts = BrokerHost::start_all(configs);
    let mut signed_in = etcd_client::Client::connect(
        [etcd.endpoint()],
        Some(etcd_client::ConnectOptions::new().with_user("root", "root-secret")),
    )
    .await
    .expect("sign in to etcd");
    wait_for_view(
        &mut signed_in,
        "auth",
        FORM_DEADLINE,
        "both hosts registered and a controller elected",
        |view| view.hosts.len() == 2 && view.live_controller().is_some(),
    )
    .await;
    let channel = rpc::channel(&hosts[0]);
    rpc::create_topic(&channel, "signed-in", 1).await;
    let id = PartitionId::topic("signed-in", 0);
    wait_for_view(
        &mut signed_in,
        "auth",
        FORM_DEADLINE,
        "the topic is led",
        |view| view.leader(&id).is_some(),
    )
    .await;

    let args = strings(&[
        "serve",
        "--cluster",
        "auth",
        "--host-id",
        "intruder",
        "--etcd",
        &etcd.endpoint(),
        "--etcd-user",
        "root",
        "--etcd-password-file",
        &path(&wrong),
        "--listen",
        "127.0.0.9:0",
        "--metrics-listen",
        "off",
        "--data-dir",
        &path(&dir.path().join("intruder")),
    ]);
    let output = run_bounded(&broker_binary(), &args, "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a wrong password was accepted");
    assert!(
        stderr.contains("cannot reach etcd") && stderr.to_lowercase().contains("authentication"),
        "the refusal does not say why: {stderr}"
    );
}
