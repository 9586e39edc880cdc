//! Access control across a cluster and its gateway, with real processes: hosts that
//! enforce access rules (static tokens, peer mutual TLS) and a gateway that
//! authenticates callers itself and forwards each request with its caller's identity
//! to the hosts' peer listeners. The hosts decide: a denial names the caller, not the
//! gateway; rules written on a host or through the gateway apply on every host;
//! `whoami` and `acl` work through the gateway; produce and fetch
//! split across leaders keep the identity; the forwarding headers mean nothing on a
//! host's client port, and the peer listener takes client requests only as forwarded.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::start_formed;
use ferry_e2e::gateway::Gateway;
use ferry_e2e::pki::{Issued, Pki, arg as path};
use ferry_e2e::{ClusterOptions, broker_binary, ferryctl_binary};
use ferry_proto::v1 as pb;
use pb::queue_service_client::QueueServiceClient;
use tonic::metadata::{BinaryMetadataValue, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Longest a `ferryctl` command may run.
const FERRYCTL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a rule to reach every host.
const RULE_DEADLINE: Duration = Duration::from_secs(20);

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

/// A token made by `ferry-broker token add`, written to its own file.
fn add_token(dir: &Path, tokens: &Path, principal: &str) -> (String, PathBuf) {
    let output = std::process::Command::new(broker_binary())
        .args(["token", "add", "--tokens-file", &path(tokens)])
        .args(["--principal", principal])
        .output()
        .expect("run ferry-broker token add");
    assert!(output.status.success(), "token add: {output:?}");
    let token = String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned();
    let file = dir.join(format!("{principal}.token"));
    std::fs::write(&file, &token).expect("write the token file");
    (token, file)
}

/// `ferryctl --server URL --token-file FILE args…` with `stdin`.
fn ferryctl(server: &str, token: &Path, args: &[&str], stdin: &str) -> Output {
    let mut all = strings(&["--server", server, "--token-file"]);
    all.push(path(token));
    all.extend(strings(args));
    ferry_e2e::run_bounded(&ferryctl_binary(), &all, stdin, FERRYCTL_TIMEOUT)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn succeeded(output: Output, what: &str) -> String {
    assert!(output.status.success(), "{what}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `attempt` until it succeeds, for a rule that is still on its way.
fn until_allowed(what: &str, mut attempt: impl FnMut() -> Output) -> String {
    let deadline = Instant::now() + RULE_DEADLINE;
    loop {
        let output = attempt();
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {RULE_DEADLINE:?}: {}",
            text(&output)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A purge of `jobs` with `token`, and forwarding headers claiming `claimed`.
async fn purge_claiming(
    channel: Channel,
    token: Option<&str>,
    claimed: &str,
) -> Result<pb::PurgeQueueResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::PurgeQueueRequest {
        name: "jobs".to_owned(),
    });
    let metadata = request.metadata_mut();
    metadata.insert("ferry-forwarded-by", MetadataValue::from_static("gateway"));
    metadata.insert_bin(
        "ferry-forwarded-principal-bin",
        BinaryMetadataValue::from_bytes(claimed.as_bytes()),
    );
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ASCII");
        metadata.insert("authorization", value);
    }
    QueueServiceClient::new(channel)
        .purge_queue(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_gateway_forwards_its_callers_identities_and_the_hosts_decide() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tokens = dir.path().join("tokens");
    let (_, admin) = add_token(dir.path(), &tokens, "admin");
    let (alice_token, alice) = add_token(dir.path(), &tokens, "alice");
    let peer_ca = Pki::new(dir.path(), "peer-ca");
    let peers_cert = peer_ca.issue_for_loopback("peers");
    let gateway_cert = peer_ca.issue_for_loopback("gateway");
    let security = strings(&[
        "--auth-tokens-file",
        &path(&tokens),
        "--authorization",
        "--superuser",
        "admin",
    ]);
    let mut host_args = security.clone();
    host_args.extend(strings(&[
        "--peer-tls-cert-file",
        &path(&peers_cert.cert),
        "--peer-tls-key-file",
        &path(&peers_cert.key),
        "--peer-tls-ca-file",
        &path(&peer_ca.ca()),
    ]));
    let (cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 2,
        extra_args: host_args,
        ..ClusterOptions::default()
    })
    .await;
    let mut gateway_args = security;
    gateway_args.extend(strings(&[
        "--peer-tls-ca-file",
        &path(&peer_ca.ca()),
        "--peer-tls-cert-file",
        &path(&gateway_cert.cert),
        "--peer-tls-key-file",
        &path(&gateway_cert.key),
    ]));
    let gateway_args: Vec<&str> = gateway_args.iter().map(String::as_str).collect();
    let gateway = Gateway::start(&cluster.etcd_endpoint(), "127.0.0.1", &gateway_args);
    let server = gateway.url();

    // Without a token the gateway itself refuses; with alice's, the host refuses
    // alice (not the gateway) and stores nothing.
    let anonymous = ferry_e2e::run_bounded(
        &ferryctl_binary(),
        &strings(&["--server", &server, "queue", "list"]),
        "",
        FERRYCTL_TIMEOUT,
    );
    assert!(
        !anonymous.status.success() && text(&anonymous).contains("unauthenticated"),
        "an anonymous caller was served: {}",
        text(&anonymous)
    );
    succeeded(
        ferryctl(
            &server,
            &admin,
            &["queue", "create", "jobs", "--replication-factor", "2"],
            "",
        ),
        "admin creates a queue through the gateway",
    );
    let denied = ferryctl(
        &server,
        &alice,
        &["queue", "send", "jobs", "--body", "early"],
        "",
    );
    assert!(
        !denied.status.success() && text(&denied).contains("alice lacks the send right"),
        "alice sent through the gateway without a rule: {}",
        text(&denied)
    );
    let whoami = succeeded(
        ferryctl(&server, &alice, &["topic", "list"], ""),
        "topic list",
    );
    assert!(!whoami.contains("jobs"), "{whoami}");

    // Rules written on a host and through the gateway apply on every host.
    succeeded(
        ferryctl(
            &cluster.hosts()[0].url(),
            &admin,
            &[
                "acl",
                "add",
                "alice-jobs",
                "--principal",
                "alice",
                "--queue",
                "jobs",
                "--operations",
                "send,receive,ack",
            ],
            "",
        ),
        "acl add on a host",
    );
    succeeded(
        ferryctl(
            &server,
            &admin,
            &[
                "acl",
                "add",
                "alice-events",
                "--principal",
                "alice",
                "--topic",
                "events.",
                "--prefix",
                "--operations",
                "produce,consume",
            ],
            "",
        ),
        "acl add through the gateway",
    );
    let refused = ferryctl(&server, &alice, &["acl", "list"], "");
    assert!(
        !refused.status.success() && text(&refused).contains("alice lacks the admin right"),
        "alice listed the rules through the gateway: {}",
        text(&refused)
    );
    let whoami = succeeded(
        ferryctl(&server, &alice, &["whoami"], ""),
        "whoami through the gateway",
    );
    assert!(
        whoami.contains("principal: alice") && whoami.contains("static-token"),
        "{whoami}"
    );
    until_allowed("alice sends through the gateway", || {
        ferryctl(
            &server,
            &alice,
            &["queue", "send", "jobs", "--body", "hello"],
            "",
        )
    });
    let received = succeeded(
        ferryctl(&server, &alice, &["queue", "receive", "jobs", "--ack"], ""),
        "alice receives through the gateway",
    );
    assert!(received.contains("hello"), "{received}");

    // A topic with a partition on each host: the gateway splits produce and fetch per
    // leader, each share on alice's behalf.
    succeeded(
        ferryctl(
            &server,
            &admin,
            &["topic", "create", "events.orders", "--partitions", "4"],
            "",
        ),
        "admin creates a topic",
    );
    let lines: Vec<String> = (0..40).map(|n| format!("order-{n}")).collect();
    let produced = until_allowed("alice produces through the gateway", || {
        ferryctl(
            &server,
            &alice,
            &["topic", "produce", "events.orders"],
            &(lines.join("\n") + "\n"),
        )
    });
    assert!(produced.contains("40"), "{produced}");
    let consumed = succeeded(
        ferryctl(
            &server,
            &alice,
            &[
                "topic",
                "consume",
                "events.orders",
                "--from-beginning",
                "--max",
                "40",
            ],
            "",
        ),
        "alice consumes through the gateway",
    );
    for line in &lines {
        assert!(
            consumed.contains(line.as_str()),
            "{line} missing: {consumed}"
        );
    }
    let purge = ferryctl(&server, &alice, &["queue", "purge", "jobs"], "");
    assert!(
        !purge.status.success() && text(&purge).contains("alice lacks the purge right"),
        "alice purged: {}",
        text(&purge)
    );

    // The forwarding headers on a host's client port: ignored. Alice claiming to be
    // admin is still alice (no purge); without a token, unauthenticated.
    let host = cluster.hosts()[0].addr();
    let client_port = Endpoint::from_shared(format!("http://{host}"))
        .expect("a URL")
        .connect_lazy();
    let forged = purge_claiming(client_port.clone(), Some(&alice_token), "admin").await;
    let refused = forged.expect_err("a forged identity on the client port");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let refused = purge_claiming(client_port, None, "admin")
        .await
        .expect_err("forged headers without a token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // The peer listener, with a peer certificate but no forwarding header, takes no
    // client requests of its own.
    let peer: SocketAddr = peer_address(&cluster).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(peer_ca.ca()).expect("read the peer CA"),
        ))
        .identity(Identity::from_pem(
            std::fs::read(&peers_cert.cert).expect("read the certificate"),
            std::fs::read(&peers_cert.key).expect("read the key"),
        ))
        .domain_name(peer.ip().to_string());
    let peer_channel = Endpoint::from_shared(format!("https://{peer}"))
        .expect("a URL")
        .tls_config(tls)
        .expect("TLS settings")
        .connect_lazy();
    let refused = QueueServiceClient::new(peer_channel)
        .list_queues(pb::ListQueuesRequest {})
        .await
        .expect_err("a client request on the peer listener without a forwarder");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    drop(gateway);
}

/// Host h0's peer listener, from its etcd record.
async fn peer_address(cluster: &ferry_e2e::Cluster) -> SocketAddr {
    let mut etcd = etcd_client::Client::connect([cluster.etcd_endpoint()], None)
        .await
        .expect("connect to etcd");
    let view = common::read_view(&mut etcd, cluster.name())
        .await
        .expect("the cluster view");
    view.hosts["h0"]
        .peer_advertise
        .as_deref()
        .expect("hosts register their peer listener")
        .parse()
        .expect("a peer address")
}

/// Certificates renewed on disk reach the connections a gateway and hosts open later,
/// without restarting them: here the cluster moves to a new peer CA (certificates and
/// trust replaced at once, as a rotation that also rolls the CA would), the host
/// restarts and trusts only the new CA, and the gateway, never restarted, dials it
/// with its renewed certificate and checks it against the new CA.
#[tokio::test]
async fn a_gateway_dials_hosts_with_its_renewed_peer_certificate_without_a_restart() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tokens = dir.path().join("tokens");
    let (_, admin) = add_token(dir.path(), &tokens, "admin");
    let old_ca = Pki::new(dir.path(), "old-peer-ca");
    let new_ca = Pki::new(dir.path(), "new-peer-ca");
    // The files both processes read; a rotation replaces them in place.
    let file = |name: &str| dir.path().join(name);
    let install = |issued: &Issued, stem: &str| {
        ferry_e2e::pki::replace_atomically(&issued.cert, &file(&format!("{stem}.pem")));
        ferry_e2e::pki::replace_atomically(&issued.key, &file(&format!("{stem}.key")));
    };
    install(&old_ca.issue_for_loopback("host-old"), "host");
    install(&old_ca.issue_for_loopback("gateway-old"), "gateway");
    ferry_e2e::pki::bundle(&file("trust.pem"), &[&old_ca]);
    let security = strings(&[
        "--auth-tokens-file",
        &path(&tokens),
        "--authorization",
        "--superuser",
        "admin",
        "--tls-reload-interval-ms",
        "100",
        "--peer-tls-ca-file",
        &path(&file("trust.pem")),
    ]);
    let mut host_args = security.clone();
    host_args.extend(strings(&[
        "--peer-tls-cert-file",
        &path(&file("host.pem")),
        "--peer-tls-key-file",
        &path(&file("host.key")),
    ]));
    let (mut cluster, _etcd) = start_formed(ClusterOptions {
        hosts: 1,
        extra_args: host_args,
        ..ClusterOptions::default()
    })
    .await;
    let mut gateway_args = security;
    gateway_args.extend(strings(&[
        "--peer-tls-cert-file",
        &path(&file("gateway.pem")),
        "--peer-tls-key-file",
        &path(&file("gateway.key")),
    ]));
    let gateway_args: Vec<&str> = gateway_args.iter().map(String::as_str).collect();
    let gateway = Gateway::start(&cluster.etcd_endpoint(), "127.0.0.1", &gateway_args);
    let server = gateway.url();
    let send = |body: &str| {
        ferryctl(
            &server,
            &admin,
            &["queue", "send", "jobs", "--body", body],
            "",
        )
    };
    succeeded(
        ferryctl(&server, &admin, &["queue", "create", "jobs"], ""),
        "create a queue through the gateway",
    );
    succeeded(send("before"), "send before the rotation");

    install(&new_ca.issue_for_loopback("host-new"), "host");
    install(&new_ca.issue_for_loopback("gateway-new"), "gateway");
    ferry_e2e::pki::bundle(&file("trust.pem"), &[&new_ca]);
    // Past the reload interval, then the host comes back trusting the new CA only:
    // the gateway's connection must be made again, with the files as they are now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.hosts_mut()[0].restart();
    until_allowed("send through the gateway after the rotation", || {
        send("after")
    });

    let received = succeeded(
        ferryctl(
            &server,
            &admin,
            &[
                "queue", "receive", "jobs", "--max", "10", "--wait", "5s", "--ack",
            ],
            "",
        ),
        "receive both",
    );
    for body in ["before", "after"] {
        assert!(received.contains(body), "{body} missing: {received}");
    }
    drop(gateway);
}
