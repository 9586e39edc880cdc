//! Authentication and authorization against a real standalone broker: static tokens
//! made by `ferry-broker token add`, client certificates (common name and
//! organizations), deny by default with `--authorization`, rules managed with
//! `ferryctl acl` and obeyed at once, PERMISSION_DENIED naming the missing right with
//! nothing changed, lists showing only what the caller may see, and a token added to
//! the file accepted without a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::BrokerProcess;
use ferry_client::{
    AccessRule, BearerToken, Client, ClientConfig, ClientError, ErrorCode, OutgoingMessage,
    QueueSettings, ReceiveOptions, TlsOptions, TopicSettings,
};
use ferry_e2e::ferryctl_binary;
use ferry_e2e::pki::Pki;

/// Longest wait for a rule or a reloaded tokens file to take effect.
const APPLY_DEADLINE: Duration = Duration::from_secs(20);

fn path(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

async fn client_with(broker: &BrokerProcess, token: Option<&str>) -> Client {
    Client::connect_with(
        &broker.url(),
        ClientConfig {
            token: token.map(|t| BearerToken::new(t).expect("a token")),
            ..ClientConfig::default()
        },
    )
    .await
    .expect("connect")
}

fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (tonic::Code, ErrorCode, String) {
    let err = result.expect_err("the request should be refused");
    (
        err.status_code().expect("a gRPC status"),
        err.code().unwrap_or(ErrorCode::Unspecified),
        err.to_string(),
    )
}

/// `ferryctl --server … args…` with `token_file`.
fn ferryctl(server: &str, token_file: &Path, args: &[&str]) -> Output {
    Command::new(ferryctl_binary())
        .args(["--server", server, "--token-file", &path(token_file)])
        .args(args)
        .output()
        .expect("run ferryctl")
}

fn write_token(dir: &Path, name: &str, token: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, format!("{token}\n")).expect("write a token file");
    file
}

/// Retries `check` until it holds or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + APPLY_DEADLINE;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} within {APPLY_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn tokens_and_rules_decide_every_request_and_a_denied_one_changes_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tokens = dir.path().join("tokens");
    let admin = common::add_token(&tokens, "admin", "");
    let alice = common::add_token(&tokens, "alice", "team-a");
    let broker = BrokerProcess::start_with(
        &dir.path().join("data"),
        &[
            "--auth-tokens-file",
            &path(&tokens),
            "--auth-reload-interval-ms",
            "100",
            "--authorization",
            "--superuser",
            "admin",
        ],
    );

    // No token, a wrong token: UNAUTHENTICATED.
    let (grpc, ferry, _) = code(client_with(&broker, None).await.list_queues().await);
    assert_eq!(
        (grpc, ferry),
        (tonic::Code::Unauthenticated, ErrorCode::Unauthenticated)
    );
    let (grpc, _, _) = code(
        client_with(&broker, Some("ferry_not-a-token"))
            .await
            .list_topics()
            .await,
    );
    assert_eq!(grpc, tonic::Code::Unauthenticated);

    // The superuser sets up; alice, with no rule, may do nothing and sees nothing.
    let admin_client = client_with(&broker, Some(&admin)).await;
    admin_client
        .create_queue("jobs", &QueueSettings::new())
        .await
        .expect("the superuser creates a queue");
    admin_client
        .create_queue("other", &QueueSettings::new())
        .await
        .expect("create a second queue");
    let alice_client = client_with(&broker, Some(&alice)).await;
    let (grpc, ferry, message) = code(
        alice_client
            .send("jobs", vec![OutgoingMessage::new("denied")])
            .await,
    );
    assert_eq!(
        (grpc, ferry),
        (tonic::Code::PermissionDenied, ErrorCode::PermissionDenied)
    );
    assert!(
        message.contains("alice lacks the send right on queue \"jobs\""),
        "{message}"
    );
    let jobs = admin_client.describe_queue("jobs").await.expect("describe");
    assert_eq!(jobs.stats.visible, 0, "a denied send stored a message");
    assert!(alice_client.list_queues().await.expect("list").is_empty());

    // A rule from ferryctl (token file) for alice's group, obeyed at once.
    let admin_file = write_token(dir.path(), "admin.token", &admin);
    let added = ferryctl(
        &broker.url(),
        &admin_file,
        &[
            "acl",
            "add",
            "jobs-workers",
            "--principal",
            "group:team-a",
            "--queue",
            "jobs",
            "--operations",
            "send,receive,ack",
        ],
    );
    assert!(added.status.success(), "ferryctl acl add: {added:?}");
    let listed = ferryctl(&broker.url(), &admin_file, &["acl", "list"]);
    let listed_text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && listed_text.contains("group:team-a"),
        "ferryctl acl list: {listed:?}"
    );
    let alice_file = write_token(dir.path(), "alice.token", &alice);
    let whoami = ferryctl(&broker.url(), &alice_file, &["whoami"]);
    let whoami_text = String::from_utf8_lossy(&whoami.stdout);
    assert!(
        whoami.status.success()
            && whoami_text.contains("principal: alice")
            && whoami_text.contains("groups: team-a")
            && whoami_text.contains("static-token"),
        "ferryctl whoami: {whoami:?}"
    );
    let refused = ferryctl(&broker.url(), &alice_file, &["acl", "list"]);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("lacks the admin right"),
        "alice listed the rules: {refused:?}"
    );

    eventually("the rule lets alice send", || async {
        alice_client
            .send("jobs", vec![OutgoingMessage::new("granted")])
            .await
            .is_ok()
    })
    .await;
    let received = alice_client
        .receive("jobs", &ReceiveOptions::new(10))
        .await
        .expect("alice receives");
    assert_eq!(received.len(), 1);
    let receipts: Vec<String> = received.iter().map(|m| m.receipt.clone()).collect();
    alice_client
        .ack("jobs", &receipts)
        .await
        .expect("alice acks");
    let listed: Vec<String> = alice_client
        .list_queues()
        .await
        .expect("list")
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(listed, ["jobs"], "alice sees only the queue she may use");

    // Still no purge, no other queue, no topic administration.
    admin_client
        .send("jobs", vec![OutgoingMessage::new("kept")])
        .await
        .expect("send");
    let (grpc, _, message) = code(alice_client.purge_queue("jobs").await);
    assert_eq!(grpc, tonic::Code::PermissionDenied);
    assert!(message.contains("purge right"), "{message}");
    assert_eq!(
        admin_client
            .describe_queue("jobs")
            .await
            .expect("describe")
            .stats
            .visible,
        1,
        "a denied purge removed messages"
    );
    let (grpc, _, _) = code(
        alice_client
            .send("other", vec![OutgoingMessage::new("x")])
            .await,
    );
    assert_eq!(grpc, tonic::Code::PermissionDenied);
    let (grpc, _, message) = code(
        alice_client
            .create_topic("events", &TopicSettings::new(1))
            .await,
    );
    assert_eq!(grpc, tonic::Code::PermissionDenied);
    assert!(
        message.contains("admin right on topic \"events\""),
        "{message}"
    );
    assert!(admin_client.list_topics().await.expect("list").is_empty());

    // Removing the rule takes the rights away again.
    assert!(
        admin_client
            .delete_access_rule("jobs-workers")
            .await
            .expect("delete")
    );
    eventually("the removed rule stops alice", || async {
        alice_client
            .send("jobs", vec![OutgoingMessage::new("late")])
            .await
            .is_err()
    })
    .await;

    // A token added to the file while the broker runs is accepted without a restart.
    let bob = common::add_token(&tokens, "bob", "");
    let bob_client = client_with(&broker, Some(&bob)).await;
    eventually("the reloaded tokens file accepts bob", || async {
        bob_client
            .who_am_i()
            .await
            .is_ok_and(|identity| identity.principal == "bob")
    })
    .await;
}

#[tokio::test]
async fn a_client_certificate_names_the_principal_and_its_organizations_the_groups() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Pki::new(dir.path(), "ferry-ca");
    let server = ca.issue("broker", "localhost", &["DNS:localhost", "IP:127.0.0.1"]);
    let carol = ca.issue("carol", "carol/O=payments/O=oncall", &[]);
    let ops = ca.issue("ops", "ops", &[]);
    let broker = BrokerProcess::start_with(
        &dir.path().join("data"),
        &[
            "--tls-cert-file",
            &path(&server.cert),
            "--tls-key-file",
            &path(&server.key),
            "--tls-client-ca-file",
            &path(&ca.ca()),
            "--authorization",
            "--superuser",
            "ops",
        ],
    );
    let connect = |who: &ferry_e2e::pki::Issued| {
        let config = ClientConfig {
            tls: Some(TlsOptions {
                ca_pem: Some(std::fs::read(ca.ca()).expect("read the CA")),
                identity: Some((
                    std::fs::read(&who.cert).expect("read the certificate"),
                    std::fs::read(&who.key).expect("read the key"),
                )),
                server_name: None,
            }),
            ..ClientConfig::default()
        };
        let url = format!("https://localhost:{}", broker.addr.port());
        async move { Client::connect_with(&url, config).await.expect("connect") }
    };
    let carol_client = connect(&carol).await;
    let identity = carol_client.who_am_i().await.expect("whoami");
    assert_eq!(identity.principal, "carol");
    assert_eq!(identity.groups, ["payments", "oncall"]);
    assert_eq!(identity.method, "certificate");
    assert!(identity.authorization_enforced);

    let ops_client = connect(&ops).await;
    ops_client
        .create_topic("payments.events", &TopicSettings::new(1))
        .await
        .expect("the superuser creates a topic");
    let (grpc, _, message) = code(carol_client.describe_topic("payments.events").await);
    assert_eq!(grpc, tonic::Code::PermissionDenied);
    assert!(
        message.contains("carol lacks the describe right"),
        "{message}"
    );
    ops_client
        .put_access_rule(&AccessRule {
            name: "payments-readers".into(),
            principal: "group:payments".into(),
            resource_kind: "topic".into(),
            resource_name: "payments.".into(),
            prefix: true,
            operations: vec!["consume".into()],
        })
        .await
        .expect("a prefix rule for the group");
    eventually("the group rule lets carol describe", || async {
        carol_client.describe_topic("payments.events").await.is_ok()
    })
    .await;
    let invalid = ops_client
        .put_access_rule(&AccessRule {
            name: "bad".into(),
            principal: "carol".into(),
            resource_kind: "queue".into(),
            resource_name: "jobs".into(),
            prefix: false,
            operations: vec!["produce".into()],
        })
        .await;
    let (grpc, _, message) = code(invalid);
    assert_eq!(grpc, tonic::Code::InvalidArgument);
    assert!(
        message.contains("produce means nothing on a queue"),
        "{message}"
    );
}

#[tokio::test]
async fn a_python_grpcio_client_authenticates_with_a_token_and_reads_the_refusals() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Pki::new(dir.path(), "ferry-ca");
    let server = ca.issue("broker", "localhost", &["DNS:localhost", "IP:127.0.0.1"]);
    let tokens = dir.path().join("tokens");
    let admin = common::add_token(&tokens, "admin", "");
    let python = common::add_token(&tokens, "python", "");
    let nobody = common::add_token(&tokens, "nobody", "");
    let broker = BrokerProcess::start_with(
        &dir.path().join("data"),
        &[
            "--tls-cert-file",
            &path(&server.cert),
            "--tls-key-file",
            &path(&server.key),
            "--auth-tokens-file",
            &path(&tokens),
            "--authorization",
            "--superuser",
            "admin",
        ],
    );
    let url = format!("https://localhost:{}", broker.addr.port());
    let connect = |token: &str| {
        let config = ClientConfig {
            tls: Some(TlsOptions {
                ca_pem: Some(std::fs::read(ca.ca()).expect("read the CA")),
                ..TlsOptions::default()
            }),
            token: Some(BearerToken::new(token).expect("a token")),
            ..ClientConfig::default()
        };
        let url = url.clone();
        async move { Client::connect_with(&url, config).await.expect("connect") }
    };
    let admin_client = connect(&admin).await;
    admin_client
        .create_queue("from-python", &QueueSettings::new())
        .await
        .expect("create the queue");
    admin_client
        .put_access_rule(&AccessRule {
            name: "python-queue".into(),
            principal: "python".into(),
            resource_kind: "queue".into(),
            resource_name: "from-python".into(),
            prefix: false,
            operations: vec!["send".into(), "receive".into(), "ack".into()],
        })
        .await
        .expect("a rule for the Python client");
    let python_client = connect(&python).await;
    eventually("the rule reaches the broker", || async {
        python_client.describe_queue("from-python").await.is_ok()
    })
    .await;
    let (ok, printed) = common::python_queue_client(&[
        "--server".to_owned(),
        format!("localhost:{}", broker.addr.port()),
        "--ca".to_owned(),
        path(&ca.ca()),
        "--token".to_owned(),
        python,
        "--denied-token".to_owned(),
        nobody,
    ]);
    assert!(
        ok,
        "the Python client failed (./.ci/setup test installs grpcio): {printed}"
    );
    for line in [
        "whoami python static-token",
        "sent 3",
        "acked 3",
        "denied PERMISSION_DENIED nobody lacks the send right on queue \"from-python\" \
         (reason PERMISSION_DENIED)",
        "anonymous UNAUTHENTICATED",
        "(reason UNAUTHENTICATED)",
    ] {
        assert!(printed.contains(line), "{line:?} missing: {printed}");
    }
}

/// `ferry-broker standalone args…` that must refuse to start: what it said.
fn refused_start(dir: &Path, args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-broker"))
        .arg("standalone")
        .arg("--data-dir")
        .arg(dir)
        .args(["--metrics-listen", "off"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ferry-broker");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("poll").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferry-broker {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    assert!(!output.status.success(), "{args:?} exited cleanly");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_listener_other_machines_reach_needs_tls_and_authentication_or_insecure() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let said = refused_start(&dir.path().join("a"), &["--listen", "0.0.0.0:0"]);
    assert!(
        said.contains("refusing to serve the gRPC listener on 0.0.0.0:0")
            && said.contains("--insecure"),
        "{said}"
    );
    // TLS alone is not enough: anyone could still call.
    let ca = Pki::new(dir.path(), "ferry-ca");
    let server = ca.issue("broker", "localhost", &["DNS:localhost", "IP:127.0.0.1"]);
    let said = refused_start(
        &dir.path().join("b"),
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert-file",
            &path(&server.cert),
            "--tls-key-file",
            &path(&server.key),
        ],
    );
    assert!(said.contains("without TLS and authentication"), "{said}");
}

/// The broker's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

/// A 200 MiB request at a broker whose limit is 64 MiB (its default): without a token
/// it is refused on its headers, before the body is read; with one, on the body's
/// length prefix, before the body is buffered. Either way the broker's peak memory
/// does not grow by the request's size, and it goes on serving.
#[tokio::test]
async fn an_oversized_request_is_refused_before_its_body_is_read() {
    use ferry_proto::v1 as pb;
    use pb::queue_service_client::QueueServiceClient;

    const OVERSIZED_BYTES: usize = 200 * 1024 * 1024;
    const LIMIT_KIB: u64 = 64 * 1024;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tokens = dir.path().join("tokens");
    let admin = common::add_token(&tokens, "admin", "");
    let broker = BrokerProcess::start_with(
        &dir.path().join("data"),
        &[
            "--auth-tokens-file",
            &path(&tokens),
            "--authorization",
            "--superuser",
            "admin",
        ],
    );
    let pid = broker.pid().expect("the broker runs");
    client_with(&broker, Some(&admin))
        .await
        .create_queue("jobs", &QueueSettings::default())
        .await
        .expect("create a queue");
    let peak_before = peak_rss_kib(pid);
    let channel = tonic::transport::Endpoint::from_shared(broker.url())
        .expect("a URL")
        .connect()
        .await
        .expect("connect");
    let oversized = || pb::SendRequest {
        queue: "jobs".into(),
        messages: vec![pb::SendMessage {
            body: vec![7u8; OVERSIZED_BYTES].into(),
            ..pb::SendMessage::default()
        }],
    };
    let client = QueueServiceClient::new(channel).max_encoding_message_size(usize::MAX);

    let refused = client
        .clone()
        .send(oversized())
        .await
        .expect_err("an anonymous 200 MiB send");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    let mut request = tonic::Request::new(oversized());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {admin}").parse().expect("a header value"),
    );
    let refused = client
        .clone()
        .send(request)
        .await
        .expect_err("an authenticated 200 MiB send");
    assert!(
        matches!(
            refused.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "over the request limit: {refused:?}"
    );

    let grown = peak_rss_kib(pid).saturating_sub(peak_before);
    assert!(
        grown < LIMIT_KIB,
        "the broker's peak memory grew by {grown} KiB for requests it refused"
    );
    let admin_client = client_with(&broker, Some(&admin)).await;
    admin_client
        .send("jobs", vec![OutgoingMessage::new("still serving")])
        .await
        .expect("the broker still serves");
}
