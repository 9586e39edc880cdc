//! Kubernetes ServiceAccount tokens as Ferry identities, against a real API server:
//! a broker given the server's key set (`/openid/v1/jwks`) and issuer accepts tokens
//! made by the TokenRequest API (`kubectl create token`) for the `ferry` audience,
//! sees `system:serviceaccount:NS:NAME` in the groups `system:serviceaccounts` and
//! `system:serviceaccounts:NS`, and a rule for a namespace's group lets its accounts
//! in and nobody else; a token for another audience, or altered, is refused.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use ferry_e2e::{Cluster, ClusterOptions, KubeApiServer, broker_binary, ferryctl_binary};

/// Longest a `ferryctl` command may run.
const FERRYCTL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a rule to reach the host.
const RULE_DEADLINE: Duration = Duration::from_secs(20);

fn path(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// `ferryctl --server URL --token-file FILE args…`.
fn ferryctl(server: &str, token_file: &Path, args: &[&str]) -> Output {
    let mut all = vec![
        "--server".to_owned(),
        server.to_owned(),
        "--token-file".to_owned(),
        path(token_file),
    ];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    ferry_e2e::run_bounded(&ferryctl_binary(), &all, "", FERRYCTL_TIMEOUT)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A token for `account` in `namespace`, from the TokenRequest API, in a file.
fn service_account_token(
    server: &KubeApiServer,
    dir: &Path,
    namespace: &str,
    account: &str,
    audience: &str,
) -> PathBuf {
    let token = server.kubectl_ok([
        "create",
        "token",
        account,
        "-n",
        namespace,
        "--audience",
        audience,
        "--duration",
        "10m",
    ]);
    let file = dir.join(format!("{namespace}-{account}-{audience}.token"));
    std::fs::write(&file, token.trim()).expect("write the token");
    file
}

#[test]
fn service_account_tokens_are_identities_and_a_namespace_rule_admits_only_its_accounts() {
    let server = KubeApiServer::shared();
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (namespace, account) in [("sa-team", "worker"), ("sa-other", "intruder")] {
        server.create_namespace(namespace);
        server.kubectl_ok(["create", "serviceaccount", account, "-n", namespace]);
    }

    // What a broker pod would be given: the issuer's keys and its name, as the API
    // server publishes them (OIDC discovery).
    let jwks = server.kubectl_ok(["get", "--raw", "/openid/v1/jwks"]);
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, &jwks).expect("write the key set");
    let discovery: serde_json::Value = serde_json::from_str(&server.kubectl_ok([
        "get",
        "--raw",
        "/.well-known/openid-configuration",
    ]))
    .expect("discovery JSON");
    let issuer = discovery["issuer"].as_str().expect("an issuer").to_owned();

    // A static token for the administrator who writes the rule.
    let tokens = dir.path().join("tokens");
    let added = std::process::Command::new(broker_binary())
        .args([
            "token",
            "add",
            "--tokens-file",
            &path(&tokens),
            "--principal",
            "admin",
        ])
        .output()
        .expect("run ferry-broker token add");
    assert!(added.status.success(), "token add: {}", text(&added));
    let admin_token = dir.path().join("admin.token");
    std::fs::write(&admin_token, &added.stdout).expect("write the admin token");

    let cluster = Cluster::start_with(ClusterOptions {
        name: "sa-tokens".to_owned(),
        hosts: 1,
        extra_args: [
            "--auth-jwks-file",
            &path(&jwks_file),
            "--auth-token-issuer",
            &issuer,
            "--auth-tokens-file",
            &path(&tokens),
            "--authorization",
            "--superuser",
            "admin",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect(),
        ..ClusterOptions::default()
    });
    let url = cluster.hosts()[0].url();

    let worker = service_account_token(&server, dir.path(), "sa-team", "worker", "ferry");
    let whoami = ferryctl(&url, &worker, &["whoami"]);
    let shown = text(&whoami);
    assert!(
        whoami.status.success()
            && shown.contains("principal: system:serviceaccount:sa-team:worker")
            && shown.contains("system:serviceaccounts:sa-team")
            && shown.contains("serviceaccount-token"),
        "whoami with a ServiceAccount token: {shown}"
    );

    let created = ferryctl(&url, &admin_token, &["queue", "create", "jobs"]);
    assert!(
        created.status.success(),
        "create the queue: {}",
        text(&created)
    );
    let denied = ferryctl(&url, &worker, &["queue", "send", "jobs", "--body", "early"]);
    assert!(
        !denied.status.success()
            && text(&denied).contains(
                "system:serviceaccount:sa-team:worker lacks the send right on queue \"jobs\""
            ),
        "sent without a rule: {}",
        text(&denied)
    );
    let rule = ferryctl(
        &url,
        &admin_token,
        &[
            "acl",
            "add",
            "sa-team-jobs",
            "--principal",
            "group:system:serviceaccounts:sa-team",
            "--queue",
            "jobs",
            "--operations",
            "send,receive,ack",
        ],
    );
    assert!(rule.status.success(), "acl add: {}", text(&rule));

    let deadline = Instant::now() + RULE_DEADLINE;
    loop {
        let sent = ferryctl(&url, &worker, &["queue", "send", "jobs", "--body", "hello"]);
        if sent.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the namespace rule did not admit the worker: {}",
            text(&sent)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let received = ferryctl(&url, &worker, &["queue", "receive", "jobs", "--ack"]);
    assert!(
        received.status.success() && text(&received).contains("hello"),
        "receive: {}",
        text(&received)
    );

    // Another namespace's account: known to Kubernetes, not granted by the rule.
    let intruder = service_account_token(&server, dir.path(), "sa-other", "intruder", "ferry");
    let refused = ferryctl(&url, &intruder, &["queue", "send", "jobs", "--body", "x"]);
    assert!(
        !refused.status.success() && text(&refused).contains("lacks the send right"),
        "another namespace's account sent: {}",
        text(&refused)
    );

    // A token for another audience, and one with another's claims: unauthenticated.
    let other_audience = service_account_token(&server, dir.path(), "sa-team", "worker", "vault");
    let refused = ferryctl(&url, &other_audience, &["whoami"]);
    assert!(
        !refused.status.success() && text(&refused).contains("unauthenticated"),
        "a token for another audience was accepted: {}",
        text(&refused)
    );
    // The worker's signature over the intruder's claims: well-formed, not genuine.
    let read_parts = |file: &Path| -> Vec<String> {
        let token = std::fs::read_to_string(file).expect("read the token");
        let parts: Vec<String> = token.trim().split('.').map(str::to_owned).collect();
        assert_eq!(parts.len(), 3, "a JWT: {token}");
        parts
    };
    let (signed, claims) = (read_parts(&worker), read_parts(&intruder));
    let forged = dir.path().join("forged.token");
    std::fs::write(
        &forged,
        format!("{}.{}.{}", signed[0], claims[1], signed[2]),
    )
    .expect("write the forged token");
    let refused = ferryctl(&url, &forged, &["whoami"]);
    assert!(
        !refused.status.success() && text(&refused).contains("unauthenticated"),
        "an altered token was accepted: {}",
        text(&refused)
    );
}
