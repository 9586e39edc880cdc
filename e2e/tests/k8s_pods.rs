//! The user's journey in pods, on a one-node Kubernetes from real parts
//! (`ferry_e2e::node`): Ferry's image built without Docker (`e2e/k8s/image`) and
//! loaded into containerd; `helm install` of `charts/ferry` with that image and the
//! bundled etcd; `kubectl apply -f examples/` in a namespace that enforces the
//! restricted Pod Security Standard; the BrokerCluster's three broker pods Running
//! and Ready on bound volumes; the Queue and Topic Ready; then a client pod (ferryctl
//! from the same image) that produces and consumes through the cluster's Service DNS
//! name. README.md's Kubernetes section is these steps. Then a broker pod is deleted
//! while producers send through a gateway pod: the StatefulSet brings it back on its
//! own claim; then the operator renews the hosts' certificates and every host serves
//! the new one without a restart; then a change to the BrokerCluster's pod spec rolls the hosts one at a
//! time; then the cluster, scaled out to four hosts before, is scaled back to three
//! (a scale below the replication factor is refused first): the fourth host hands
//! its replicas over before its pod and claim go. The history checker finds nothing
//! acknowledged lost or duplicated. The examples' dead-letter queue is checked too.
//! Finally the namespaces are deleted and the release uninstalled, with no finalizer
//! left hanging.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rpc::{self, record_outcome, show, within};
use ferry_e2e::node::NODE_ZONE;
use ferry_e2e::pki::Pki;
use ferry_e2e::{CheckOptions, History, KubeApiServer, KubeNode, check};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The image name the README documents for a locally built image.
const IMAGE: &str = "ferry:dev";
/// Where the chart goes.
const RELEASE_NAMESPACE: &str = "ferry-system";
/// Where the examples go: a namespace enforcing the restricted Pod Security Standard.
const APP_NAMESPACE: &str = "shop";
/// Where the cluster with access control runs.
const SECURE_NAMESPACE: &str = "vault";
/// How long pods may take to become Ready (images are local; brokers form a cluster).
const PODS_READY: Duration = Duration::from_secs(240);
/// The topic the pod-loss phase writes (its own, so the history holds every value),
/// and its partitions.
const TOPIC: &str = "pod-loss";
const PARTITIONS: u32 = 3;
/// The gateway pod's port.
const GATEWAY_PORT: u16 = 7080;
/// A client-side deadline per send through the gateway: past it, the outcome is
/// unknown (the gateway itself retries while leaders move).
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// Sends acknowledged before the pod is deleted, and again after it is back.
const SENDS_PER_PHASE: u64 = 300;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Builds Ferry's image (from the debug binaries `cargo test` built: the layout is
/// the release image's) and the bundled etcd's, and returns both tarballs.
fn build_images(dir: &Path) -> Vec<PathBuf> {
    let out = dir.join("ferry-image.tar");
    let output = Command::new(repo_path("e2e/k8s/image"))
        .args(["--profile", "debug", "--etcd", "--tag", IMAGE, "--out"])
        .arg(&out)
        .output()
        .expect("run e2e/k8s/image");
    assert!(
        output.status.success(),
        "e2e/k8s/image failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    vec![out, dir.join("etcd-image.tar")]
}

/// The version of Debian's etcd, the tag of the etcd image.
fn etcd_version() -> String {
    let output = Command::new("etcd")
        .arg("--version")
        .output()
        .expect("run etcd --version");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("etcd Version: "))
        .expect("etcd prints its version")
        .trim()
        .to_owned()
}

/// Runs a command to success and returns its stdout; panics with what it printed.
fn run_ok(mut command: Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until `check` holds, polling every second; panics with `what` and the
/// pods' state after `within`.
fn wait_until(
    server: &KubeApiServer,
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !check() {
        if Instant::now() >= deadline {
            let pods = server.kubectl(["get", "pods", "-A", "-o", "wide"]);
            let events = server.kubectl(["get", "events", "-A", "--sort-by=.lastTimestamp"]);
            panic!(
                "{what}: not within {within:?}\npods:\n{}\nevents:\n{}",
                String::from_utf8_lossy(&pods.stdout),
                String::from_utf8_lossy(&events.stdout)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `kubectl run` of a pod running `ferryctl args…` from Ferry's image against
/// `address` of the examples' cluster (over TLS, trusting its CA, with the token of
/// the examples' admin ServiceAccount), under the restricted Pod Security Standard
/// (README.md, "On Kubernetes", step 4); returns its output once it succeeded.
fn ferryctl_pod(server: &KubeApiServer, name: &str, address: &str, args: &[&str]) -> String {
    let (succeeded, logs) = ferryctl_pod_in(
        server,
        APP_NAMESPACE,
        MAIN_CA,
        Some(ADMIN_ACCOUNT),
        name,
        address,
        args,
    );
    assert!(succeeded, "ferryctl {args:?} in pod {name} failed:\n{logs}");
    logs
}

/// Where a client pod's projected ServiceAccount token is mounted.
const TOKEN_PATH: &str = "/var/run/secrets/ferry/token";
/// The examples' ServiceAccount allowed everything on their cluster.
const ADMIN_ACCOUNT: &str = "ferry-admin";
/// The principal of the producers' client certificate (through the gateway).
const PRODUCER: &str = "history-producer";
/// The name the gateway's certificate carries (clients dial its pod IP).
const GATEWAY_NAME: &str = "gateway.shop.test";
/// The ConfigMap with the examples' cluster CA certificate (the operator's).
const MAIN_CA: &str = "main-ca-cert";
/// The ConfigMap with the secured cluster's CA certificate.
const GUARDED_CA: &str = "guarded-ca-cert";
/// Where a client pod finds the CA certificate it trusts.
const CA_DIR: &str = "/etc/ferry/ca";

/// As [`ferryctl_pod`], in `namespace`, trusting the CA certificate in ConfigMap
/// `ca` of that namespace; with `account` the pod runs as ServiceAccount `account`
/// with a projected token for the audience `ferry`, which ferryctl sends
/// (`FERRY_TOKEN_FILE`); whether it succeeded, and its output.
fn ferryctl_pod_in(
    server: &KubeApiServer,
    namespace: &str,
    ca: &str,
    account: Option<&str>,
    name: &str,
    address: &str,
    args: &[&str],
) -> (bool, String) {
    let mut command = vec!["/usr/local/bin/ferryctl"];
    command.extend_from_slice(args);
    // The overrides replace the container kubectl would make (a JSON merge patch
    // replaces lists whole), so they carry everything.
    let mut overrides = serde_json::json!({
        "spec": {
            "securityContext": {
                "runAsNonRoot": true,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumes": [{"name": "ferry-ca", "configMap": {"name": ca}}],
            "containers": [{
                "name": "ferryctl",
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "command": command,
                "env": [
                    {"name": "FERRY_SERVER", "value": address},
                    {"name": "FERRY_TLS_CA_FILE", "value": format!("{CA_DIR}/ca.crt")},
                ],
                "volumeMounts": [{"name": "ferry-ca", "mountPath": CA_DIR, "readOnly": true}],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    });
    if let Some(account) = account {
        let spec = &mut overrides["spec"];
        spec["serviceAccountName"] = account.into();
        if let Some(volumes) = spec["volumes"].as_array_mut() {
            volumes.push(serde_json::json!({
                "name": "ferry-token",
                "projected": {"sources": [{"serviceAccountToken": {
                    "audience": "ferry", "expirationSeconds": 3600, "path": "token"}}]},
            }));
        }
        if let Some(env) = spec["containers"][0]["env"].as_array_mut() {
            env.push(serde_json::json!({"name": "FERRY_TOKEN_FILE", "value": TOKEN_PATH}));
        }
        if let Some(mounts) = spec["containers"][0]["volumeMounts"].as_array_mut() {
            mounts.push(serde_json::json!({
                "name": "ferry-token", "mountPath": "/var/run/secrets/ferry", "readOnly": true,
            }));
        }
    }
    server.kubectl_ok([
        "run",
        "-n",
        namespace,
        name,
        &format!("--image={IMAGE}"),
        "--restart=Never",
        &format!("--overrides={overrides}"),
    ]);
    let mut phase = String::new();
    wait_until(server, PODS_READY, &format!("pod {name} finished"), || {
        phase = server.kubectl_ok([
            "get",
            "pod",
            name,
            "-n",
            namespace,
            "-o",
            "jsonpath={.status.phase}",
        ]);
        phase == "Succeeded" || phase == "Failed"
    });
    // Values may be any bytes (ferryctl replaces invalid UTF-8 when printing).
    let logs = server.kubectl(["logs", name, "-n", namespace]);
    let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
    (phase == "Succeeded", logs)
}

#[test]
fn brokers_run_in_pods_installed_by_helm_and_serve_clients_in_the_cluster() {
    let mut server = KubeNode::start_api_server();
    server.start_controller_manager();
    let images = build_images(server.work_dir());
    let node = KubeNode::start(&server, &images);

    // The README's install, with the locally built image and the bundled etcd.
    let mut helm = server.helm_command();
    helm.args(["install", "ferry"])
        .arg(repo_path("charts/ferry"))
        .args(["--namespace", RELEASE_NAMESPACE, "--create-namespace"])
        .args(["--set", "image.repository=ferry", "--set", "image.tag=dev"])
        .args(["--set", "image.pullPolicy=Never"])
        .args(["--set", "etcd.image.repository=ferry.local/etcd"])
        .args(["--set", &format!("etcd.image.tag={}", etcd_version())])
        .args(["--set", "etcd.image.pullPolicy=Never"])
        .args(["--wait", "--timeout", "4m"]);
    run_ok(helm, "helm install");

    server.kubectl_ok(["create", "namespace", APP_NAMESPACE]);
    server.kubectl_ok([
        "label",
        "namespace",
        APP_NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let examples = repo_path("examples");
    server.kubectl_ok([
        "apply",
        "-n",
        APP_NAMESPACE,
        "-f",
        examples.to_str().expect("UTF-8 path"),
    ]);

    wait_until(
        &server,
        PODS_READY,
        "the broker StatefulSet has 3 ready pods",
        || ready_brokers(&server) == "3",
    );
    let claims = server.kubectl_ok([
        "get",
        "pvc",
        "-n",
        APP_NAMESPACE,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.phase}{\"\\n\"}{end}",
    ]);
    let bound = claims
        .lines()
        .filter(|line| line.ends_with("=Bound"))
        .count();
    assert_eq!(bound, 3, "the brokers' volume claims are bound: {claims}");
    for (kind, name) in [
        ("queue", "orders"),
        ("queue", "orders-dlq"),
        ("topic", "clicks"),
    ] {
        wait_until(
            &server,
            PODS_READY,
            &format!("{kind} {name} is Ready"),
            || is_ready(&server, kind, name),
        );
    }

    // A client in the cluster, through the Service's DNS name, which the
    // BrokerCluster's status gives.
    let address = server.kubectl_ok([
        "get",
        "brokercluster",
        "main",
        "-n",
        APP_NAMESPACE,
        "-o",
        "jsonpath={.status.address}",
    ]);
    assert!(
        address.starts_with(&format!("main-client.{APP_NAMESPACE}.svc")),
        "the BrokerCluster's status names its client Service: {address:?}"
    );
    // Each broker knows its zone: the node's label, copied onto its pod.
    let status = ferryctl_pod(
        &server,
        "status",
        &address,
        &["cluster", "status", "--output", "json"],
    );
    let status: serde_json::Value = serde_json::from_str(status.trim())
        .unwrap_or_else(|err| panic!("cluster status prints JSON ({err}):\n{status}"));
    let zones: Vec<(&str, &str)> = status["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["host_id"].as_str().unwrap_or(""),
                h["zone"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(zones.len(), 3, "{status}");
    assert!(
        zones.iter().all(|(_, zone)| *zone == NODE_ZONE),
        "every host reports the node's zone {NODE_ZONE}: {zones:?}"
    );
    let produced = ferryctl_pod(
        &server,
        "produce",
        &address,
        &[
            "bench",
            "produce",
            "--topic",
            "clicks",
            "--messages",
            "1000",
        ],
    );
    println!("{produced}");
    let consumed = ferryctl_pod(
        &server,
        "consume",
        &address,
        &[
            "topic",
            "consume",
            "clicks",
            "--from-beginning",
            "--max",
            "2000",
            "--timeout-ms",
            "10000",
            "--output",
            "json",
        ],
    );
    let offsets: Vec<serde_json::Value> = consumed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    assert_eq!(
        offsets.len(),
        1000,
        "every produced message is consumed, once:\n{produced}"
    );

    // README.md's client pod, exactly as written there (after the count above: it
    // produces to the same topic).
    readme_client_pod(&server);

    // Queues through the same Service: send, receive and ack, every message acked.
    let queued = ferryctl_pod(
        &server,
        "queue",
        &address,
        &[
            "bench",
            "queue",
            "--queue",
            "pod-bench",
            "--replication-factor",
            "3",
            "--messages",
            "1000",
            "--output",
            "json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(queued.trim())
        .unwrap_or_else(|err| panic!("bench queue prints JSON ({err}):\n{queued}"));
    println!("{report}");
    for (field, expected) in [
        ("acked", 1000),
        ("unique_acked", 1000),
        ("lost", 0),
        ("duplicates", 0),
    ] {
        assert_eq!(report[field], expected, "bench queue {field}: {report}");
    }

    // The examples' dead-letter path: a message received maxReceiveCount (5) times
    // without an ack moves from `orders` to `orders-dlq`.
    ferryctl_pod(
        &server,
        "dlq-send",
        &address,
        &[
            "queue",
            "send",
            "orders",
            "--group",
            "dlq-check",
            "--body",
            "poison",
        ],
    );
    for delivery in 1..=5 {
        let (message, printed) = receive_one(
            &server,
            &format!("dlq-receive-{delivery}"),
            &address,
            &["orders", "--visibility-timeout", "500ms"],
        );
        assert_eq!(message["body"], "poison", "{printed}");
        assert_eq!(message["receive_count"], delivery, "{printed}");
    }
    let (message, printed) = receive_one(&server, "dlq-read", &address, &["orders-dlq", "--ack"]);
    assert_eq!(message["body"], "poison", "{printed}");
    assert_eq!(
        message["dead_letter"]["source_queue"], "orders",
        "{printed}"
    );
    assert_eq!(message["dead_letter"]["receive_count"], 5, "{printed}");

    // Scale out: a fourth host joins on a claim of its own.
    let scale = |hosts: &str| {
        server.kubectl_ok([
            "scale",
            "brokercluster",
            "main",
            "-n",
            APP_NAMESPACE,
            &format!("--replicas={hosts}"),
        ]);
    };
    scale("4");
    wait_until(&server, PODS_READY, "a fourth broker is ready", || {
        ready_brokers(&server) == "4"
    });

    // 5. A broker pod is deleted while producers send through a gateway pod, to a
    //    topic of their own (placed over four hosts, so the fourth holds replicas).
    let topic = serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "Topic",
        "metadata": {"name": TOPIC, "namespace": APP_NAMESPACE},
        "spec": {
            "clusterRef": "main",
            "partitions": PARTITIONS,
            "replicationFactor": 3,
            "replication": "sync",
            "durability": "fsync",
        },
    });
    let created = server.kubectl_stdin(["apply", "-f", "-"], &topic.to_string());
    assert!(
        created.status.success(),
        "apply topic {TOPIC}: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    wait_until(
        &server,
        PODS_READY,
        &format!("topic {TOPIC} is Ready"),
        || is_ready(&server, "topic", TOPIC),
    );
    let claim_before = volume_of(&server, "data-main-1");
    let uid_before = pod_uid(&server, "main-1");
    let (gateway, client_tls) = start_gateway(&server);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let via = runtime
        .block_on(async { channel(&format!("https://{gateway}:{GATEWAY_PORT}"), client_tls) });
    let history = History::new();
    let producers = Producers::start(&runtime, &via, &history);
    producers.wait_for(SENDS_PER_PHASE, "before the pod is deleted");
    producers.phase("the deletion of pod main-1");
    server.kubectl_ok(["delete", "pod", "main-1", "-n", APP_NAMESPACE]);
    wait_until(&server, PODS_READY, "main-1 is back and Ready", || {
        pod_uid(&server, "main-1") != uid_before && ready_brokers(&server) == "4"
    });
    let pod_uid_after_deletion = pod_uid(&server, "main-1");
    assert_eq!(
        volume_of(&server, "data-main-1"),
        claim_before,
        "the new main-1 runs on the same claim and volume"
    );
    producers.wait_for(SENDS_PER_PHASE, "after main-1 came back");

    // The operator renews the hosts' certificates (their renewal time moved into the
    // past) while producers run: every host serves the new one without a restart,
    // and replication goes on over renewed peer certificates.
    producers.phase("the certificate renewal");
    let served_before = served_fingerprints(&server);
    for secret in ["main-tls", "main-peer"] {
        server.kubectl_ok([
            "annotate",
            "secret",
            secret,
            "-n",
            APP_NAMESPACE,
            "--overwrite",
            "ferry.dev/renew-after=2000-01-01T00:00:00Z",
        ]);
    }
    let mut renewed = String::new();
    wait_until(
        &server,
        PODS_READY,
        "every host serves the renewed certificate",
        || {
            renewed = secret_fingerprint(&server, "main-tls");
            let served = served_fingerprints(&server);
            !served_before.contains(&renewed) && served.iter().all(|f| *f == renewed)
        },
    );
    assert_eq!(
        pod_uid(&server, "main-1"),
        pod_uid_after_deletion,
        "the renewal restarted no host"
    );
    producers.wait_for(SENDS_PER_PHASE, "after the certificate renewal");

    // 6. A change to the BrokerCluster's pod spec rolls the hosts one at a time,
    //    each back in sync (ready) before the next goes, while producers run.
    producers.phase("the rolling change");
    let revision_before = stateful_set_field(&server, "{.status.currentRevision}");
    server.kubectl_ok([
        "patch",
        "brokercluster",
        "main",
        "-n",
        APP_NAMESPACE,
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"cpu":"200m","memory":"256Mi"},"limits":{"memory":"1Gi"}}}}"#,
    ]);
    wait_until(
        &server,
        PODS_READY,
        "the StatefulSet takes the new pod spec",
        || stateful_set_field(&server, "{.status.updateRevision}") != revision_before,
    );
    server.kubectl_ok([
        "rollout",
        "status",
        "statefulset/main",
        "-n",
        APP_NAMESPACE,
        "--timeout=300s",
    ]);
    assert_eq!(
        ready_brokers(&server),
        "4",
        "every host is back after the roll"
    );
    producers.wait_for(SENDS_PER_PHASE, "after the rolling change");

    // 7. Scale back in while producers run: below the largest replication factor
    //    (3) is refused; to 3, main-3 first hands its replicas over, then its pod
    //    and claim go.
    let holders = replica_holders(&server, "holders-before", &address);
    assert!(
        holders.contains("main-3"),
        "the fourth host holds replicas before the scale-down: {holders:?}"
    );
    scale("2");
    // The refusal is the Synced reason only until a Queue of replication factor 3
    // raises the cluster to 3 hosts (ClusterScaledUp), which may come between two
    // polls; its Warning event stays.
    wait_until(&server, PODS_READY, "a scale-down to 2 is refused", || {
        synced_reason(&server) == "ScaleDownRefused"
            || warning_recorded(&server, "ScaleDownRefused")
    });
    assert_ne!(
        stateful_set_field(&server, "{.spec.replicas}"),
        "2",
        "the StatefulSet never goes below the largest replication factor"
    );
    producers.phase("the scale-down");
    scale("3");
    wait_until(
        &server,
        PODS_READY,
        "main-3 drained, its pod and claim gone",
        || {
            stateful_set_field(&server, "{.spec.replicas}") == "3"
                && synced_reason(&server) == "Applied"
                && server
                    .kubectl_ok(["get", "pvc,pods", "-n", APP_NAMESPACE, "-o", "name"])
                    .lines()
                    .all(|name| !name.ends_with("main-3"))
        },
    );
    let holders = replica_holders(&server, "holders-after", &address);
    assert!(
        !holders.contains("main-3"),
        "nothing is left on the removed host: {holders:?}"
    );
    for reason in ["Draining", "ScaleDownRefused"] {
        assert!(
            warning_recorded(&server, reason),
            "a Warning event {reason} was recorded"
        );
    }
    producers.phase("after the scale-down");
    producers.wait_for(SENDS_PER_PHASE, "after the scale-down");
    let acked = runtime.block_on(producers.stop());
    runtime.block_on(async {
        for p in 0..PARTITIONS {
            let reads = rpc::read_partition(&via, TOPIC, p)
                .await
                .unwrap_or_else(|status| panic!("read {TOPIC}/{p}: {}", show(&status)));
            for read in reads {
                history.record_read(read.partition, read.offset, &read.value);
            }
        }
    });
    let verdict = check(
        &history,
        &CheckOptions {
            idempotent_producer: true,
            ..CheckOptions::default()
        },
    );
    println!(
        "pod deleted, hosts rolled and scaled in under load: {acked} sends acknowledged; {:?}",
        verdict.counts
    );
    assert!(verdict.valid, "{}", verdict.to_json());

    // 8. Access control in pods: a BrokerCluster that checks ServiceAccount tokens and
    //    enforces access rules. A pod of its namespace, with a projected token for
    //    the audience `ferry`, uses the namespace's queue; a pod of another namespace,
    //    with its own genuine token, is refused the right, and one without a token is
    //    not authenticated.
    secured_queue_in_pods(&server);

    // 9. Uninstall: the app namespace goes first, while the operator still runs to
    //    release its finalizers; then the release and its namespace. Nothing hangs.
    drop(via);
    drop(runtime);
    server.kubectl_ok(["delete", "namespace", APP_NAMESPACE, "--timeout=180s"]);
    server.kubectl_ok(["delete", "namespace", SECURE_NAMESPACE, "--timeout=180s"]);
    let mut uninstall = server.helm_command();
    uninstall.args([
        "uninstall",
        "ferry",
        "--namespace",
        RELEASE_NAMESPACE,
        "--wait",
        "--timeout",
        "3m",
    ]);
    run_ok(uninstall, "helm uninstall");
    server.kubectl_ok(["delete", "namespace", RELEASE_NAMESPACE, "--timeout=180s"]);
    let left = server.kubectl_ok([
        "get",
        "namespaces",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    for gone in [APP_NAMESPACE, SECURE_NAMESPACE, RELEASE_NAMESPACE] {
        assert!(
            !left.split_whitespace().any(|ns| ns == gone),
            "namespace {gone} is still there: {left}"
        );
    }
    drop(node);
}

/// Step 8: a one-host BrokerCluster with `spec.auth` in its own namespace, its queue,
/// and clients in pods with and without the namespace's ServiceAccount tokens; an
/// AccessPolicy then admits another namespace's account to exactly what it grants.
fn secured_queue_in_pods(server: &KubeApiServer) {
    server.kubectl_ok(["create", "namespace", SECURE_NAMESPACE]);
    server.kubectl_ok([
        "label",
        "namespace",
        SECURE_NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let manifests = "apiVersion: ferry.dev/v1alpha1\nkind: BrokerCluster\nmetadata:\n  name: guarded\n\
        spec:\n  hosts: 1\n  storage:\n    size: 1Gi\n  resources:\n    requests:\n      cpu: 100m\n\
        \x20     memory: 128Mi\n  auth:\n    serviceAccountTokens: true\n    authorization: true\n\
        ---\napiVersion: ferry.dev/v1alpha1\nkind: Queue\nmetadata:\n  name: vault-jobs\n\
        spec:\n  clusterRef: guarded\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n\
        \x20 name: worker\n";
    let applied = server.kubectl_stdin(["apply", "-n", SECURE_NAMESPACE, "-f", "-"], manifests);
    assert!(
        applied.status.success(),
        "apply the secured cluster: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    wait_until(server, PODS_READY, "the secured broker is ready", || {
        // The StatefulSet comes after the cluster's certificates: absent at first.
        let ready = server.kubectl([
            "get",
            "statefulset",
            "guarded",
            "-n",
            SECURE_NAMESPACE,
            "-o",
            "jsonpath={.status.readyReplicas}",
        ]);
        ready.status.success() && ready.stdout == b"1"
    });
    wait_until(server, PODS_READY, "queue vault-jobs is Ready", || {
        is_ready_in(server, SECURE_NAMESPACE, "queue", "vault-jobs")
    });
    let address = format!("guarded-client.{SECURE_NAMESPACE}.svc:7070");
    // Clients in another namespace trust the cluster's CA through a copy of its
    // ConfigMap (pods mount ConfigMaps of their own namespace only).
    let ca_file = server.work_dir().join("guarded-ca.crt");
    let ca_pem = server.kubectl_ok([
        "get",
        "configmap",
        GUARDED_CA,
        "-n",
        SECURE_NAMESPACE,
        "-o",
        "go-template={{index .data \"ca.crt\"}}",
    ]);
    std::fs::write(&ca_file, ca_pem).expect("write the CA certificate");
    server.kubectl_ok([
        "create",
        "configmap",
        GUARDED_CA,
        "-n",
        APP_NAMESPACE,
        &format!("--from-file=ca.crt={}", ca_file.display()),
    ]);

    let (sent, logs) = ferryctl_pod_in(
        server,
        SECURE_NAMESPACE,
        GUARDED_CA,
        Some("worker"),
        "vault-send",
        &address,
        &["queue", "send", "vault-jobs", "--body", "classified"],
    );
    assert!(sent, "the namespace's ServiceAccount sends: {logs}");
    let (received, logs) = ferryctl_pod_in(
        server,
        SECURE_NAMESPACE,
        GUARDED_CA,
        Some("worker"),
        "vault-receive",
        &address,
        &["queue", "receive", "vault-jobs", "--ack", "--wait", "10s"],
    );
    assert!(
        received && logs.contains("classified"),
        "the namespace's ServiceAccount receives: {logs}"
    );
    let (who, logs) = ferryctl_pod_in(
        server,
        SECURE_NAMESPACE,
        GUARDED_CA,
        Some("worker"),
        "vault-whoami",
        &address,
        &["whoami"],
    );
    assert!(
        who && logs.contains(&format!(
            "principal: system:serviceaccount:{SECURE_NAMESPACE}:worker"
        )),
        "{logs}"
    );

    let (refused, logs) = ferryctl_pod_in(
        server,
        APP_NAMESPACE,
        GUARDED_CA,
        Some("default"),
        "intruder-send",
        &address,
        &["queue", "send", "vault-jobs", "--body", "stolen"],
    );
    assert!(
        !refused
            && logs.contains(&format!(
                "system:serviceaccount:{APP_NAMESPACE}:default lacks the send right on queue \"vault-jobs\""
            )),
        "another namespace's ServiceAccount was not refused the right: {logs}"
    );
    // An AccessPolicy of the queue's namespace admits exactly that account.
    let policy = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: shop-senders\n\
         spec:\n  grants:\n  - serviceAccounts: [{APP_NAMESPACE}/default]\n\
         \x20   queues: [vault-jobs]\n    operations: [send]\n"
    );
    let applied = server.kubectl_stdin(["apply", "-n", SECURE_NAMESPACE, "-f", "-"], &policy);
    assert!(
        applied.status.success(),
        "apply the policy: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    wait_until(server, PODS_READY, "the policy is written", || {
        server.kubectl_ok([
            "get",
            "accesspolicy",
            "shop-senders",
            "-n",
            SECURE_NAMESPACE,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Synced\")].status}",
        ]) == "True"
    });
    let (admitted, logs) = ferryctl_pod_in(
        server,
        APP_NAMESPACE,
        GUARDED_CA,
        Some("default"),
        "admitted-send",
        &address,
        &["queue", "send", "vault-jobs", "--body", "by-policy"],
    );
    assert!(
        admitted,
        "the policy did not admit the other namespace's account: {logs}"
    );
    let (still_refused, logs) = ferryctl_pod_in(
        server,
        APP_NAMESPACE,
        GUARDED_CA,
        Some("default"),
        "admitted-purge",
        &address,
        &["queue", "purge", "vault-jobs"],
    );
    assert!(
        !still_refused && logs.contains("lacks the purge right"),
        "the policy granted more than it says: {logs}"
    );

    let (anonymous, logs) = ferryctl_pod_in(
        server,
        APP_NAMESPACE,
        GUARDED_CA,
        None,
        "anonymous-send",
        &address,
        &["queue", "send", "vault-jobs", "--body", "anonymous"],
    );
    assert!(
        !anonymous && logs.contains("unauthenticated"),
        "a client without a token was not refused: {logs}"
    );
}

/// `ferryctl queue receive QUEUE OPTIONS… --wait 20s --output json` in pod `name`:
/// the one message it printed, and all it printed.
fn receive_one(
    server: &KubeApiServer,
    name: &str,
    address: &str,
    queue_and_options: &[&str],
) -> (serde_json::Value, String) {
    let mut args = vec!["queue", "receive"];
    args.extend_from_slice(queue_and_options);
    args.extend_from_slice(&["--wait", "20s", "--output", "json"]);
    let printed = ferryctl_pod(server, name, address, &args);
    let lines: Vec<&str> = printed.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 1, "one message received:\n{printed}");
    let message =
        serde_json::from_str(lines[0]).unwrap_or_else(|err| panic!("{err}: {}", lines[0]));
    (message, printed)
}

/// The reason of the BrokerCluster's Synced condition.
/// Whether a Warning event with `reason` was recorded in the app namespace.
fn warning_recorded(server: &KubeApiServer, reason: &str) -> bool {
    !server
        .kubectl_ok([
            "get",
            "events",
            "-n",
            APP_NAMESPACE,
            "--field-selector",
            &format!("reason={reason},type=Warning"),
            "-o",
            "name",
        ])
        .trim()
        .is_empty()
}

fn synced_reason(server: &KubeApiServer) -> String {
    server.kubectl_ok([
        "get",
        "brokercluster",
        "main",
        "-n",
        APP_NAMESPACE,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Synced\")].reason}",
    ])
}

/// Every host holding a replica of any topic partition or queue, as `ferryctl cluster
/// status` in a pod of the examples' admin ServiceAccount sees them (`name` names the
/// pod).
fn replica_holders(
    server: &KubeApiServer,
    name: &str,
    address: &str,
) -> std::collections::BTreeSet<String> {
    let printed = ferryctl_pod(
        server,
        name,
        address,
        &["cluster", "status", "--output", "json"],
    );
    let status: serde_json::Value = serde_json::from_str(printed.trim())
        .unwrap_or_else(|err| panic!("cluster status prints JSON ({err}):\n{printed}"));
    ["topics", "queues"]
        .iter()
        .flat_map(|kind| status[kind].as_array().cloned().unwrap_or_default())
        .flat_map(|resource| {
            resource["partitions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|partition| {
            partition["replicas"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|replica| replica.as_str().map(str::to_owned))
        .collect()
}

/// The SHA-256 fingerprint `openssl x509` prints for the PEM certificate `pem`.
fn fingerprint(pem: &[u8]) -> String {
    let mut openssl = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run openssl");
    if let Some(mut stdin) = openssl.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(pem);
    }
    let output = openssl.wait_with_output().expect("openssl x509");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The fingerprint of the certificate in Secret `secret` of the app namespace.
fn secret_fingerprint(server: &KubeApiServer, secret: &str) -> String {
    let pem = server.kubectl_ok([
        "get",
        "secret",
        secret,
        "-n",
        APP_NAMESPACE,
        "-o",
        "go-template={{index .data \"tls.crt\" | base64decode}}",
    ]);
    fingerprint(pem.as_bytes())
}

/// The fingerprints of the certificates the broker pods of `main` serve on their
/// client port, as `openssl s_client` sees them (this machine reaches pod IPs).
fn served_fingerprints(server: &KubeApiServer) -> Vec<String> {
    let ips = server.kubectl_ok([
        "get",
        "pods",
        "-n",
        APP_NAMESPACE,
        "-l",
        "app.kubernetes.io/instance=main",
        "-o",
        "jsonpath={range .items[*]}{.status.podIP}{\"\\n\"}{end}",
    ]);
    ips.lines()
        .filter(|ip| !ip.is_empty())
        .map(|ip| {
            let output = Command::new("timeout")
                .args(["10", "openssl", "s_client", "-connect"])
                .arg(format!("{ip}:7070"))
                .args(["-servername", &format!("main-client.{APP_NAMESPACE}.svc")])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .expect("run openssl s_client");
            fingerprint(&output.stdout)
        })
        .collect()
}

/// Runs the client pod of README.md's "On Kubernetes" step 4 with the overrides
/// written there (TLS trusting the cluster's CA, a projected token of the examples'
/// admin ServiceAccount), and checks it produced.
fn readme_client_pod(server: &KubeApiServer) {
    let readme = std::fs::read_to_string(repo_path("README.md")).expect("read README.md");
    let start = readme
        .find("kubectl run -n shop ferryctl")
        .expect("README.md's client pod command");
    let command = &readme[start..];
    let overrides = command
        .split_once("--overrides='")
        .and_then(|(_, rest)| rest.split_once("'\n"))
        .map(|(json, _)| json)
        .expect("the command's --overrides");
    serde_json::from_str::<serde_json::Value>(overrides)
        .unwrap_or_else(|err| panic!("README.md's overrides are not JSON ({err}):\n{overrides}"));
    assert_eq!(
        APP_NAMESPACE, "shop",
        "README.md's commands use namespace shop"
    );
    server.kubectl_ok([
        "run",
        "-n",
        APP_NAMESPACE,
        "ferryctl",
        &format!("--image={IMAGE}"),
        "--restart=Never",
        &format!("--overrides={overrides}"),
    ]);
    let mut phase = String::new();
    wait_until(
        server,
        PODS_READY,
        "README.md's client pod finished",
        || {
            phase = server.kubectl_ok([
                "get",
                "pod",
                "ferryctl",
                "-n",
                APP_NAMESPACE,
                "-o",
                "jsonpath={.status.phase}",
            ]);
            phase == "Succeeded" || phase == "Failed"
        },
    );
    let logs = server.kubectl(["logs", "ferryctl", "-n", APP_NAMESPACE]);
    let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
    assert!(
        phase == "Succeeded" && logs.contains("produce: 1000 messages"),
        "README.md's client pod ({phase}):\n{logs}"
    );
}

/// Whether a resource in the app namespace has the condition Ready=True.
fn is_ready(server: &KubeApiServer, kind: &str, name: &str) -> bool {
    is_ready_in(server, APP_NAMESPACE, kind, name)
}

/// Whether `kind/name` in `namespace` reports the condition `Ready` true.
fn is_ready_in(server: &KubeApiServer, namespace: &str, kind: &str, name: &str) -> bool {
    server
        .kubectl([
            "get",
            kind,
            name,
            "-n",
            namespace,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .stdout
        == b"True"
}

/// How many broker pods the StatefulSet counts ready.
fn ready_brokers(server: &KubeApiServer) -> String {
    stateful_set_field(server, "{.status.readyReplicas}")
}

/// A field of the brokers' StatefulSet, by JSONPath (empty when unset).
fn stateful_set_field(server: &KubeApiServer, path: &str) -> String {
    let output = server.kubectl([
        "get",
        "statefulset",
        "main",
        "-n",
        APP_NAMESPACE,
        "-o",
        &format!("jsonpath={path}"),
    ]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The persistent volume bound to claim `name`.
fn volume_of(server: &KubeApiServer, name: &str) -> String {
    server.kubectl_ok([
        "get",
        "pvc",
        name,
        "-n",
        APP_NAMESPACE,
        "-o",
        "jsonpath={.spec.volumeName}",
    ])
}

/// A pod's uid (empty while it does not exist).
fn pod_uid(server: &KubeApiServer, name: &str) -> String {
    let output = server.kubectl([
        "get",
        "pod",
        name,
        "-n",
        APP_NAMESPACE,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A `ferry-broker gateway` pod in the app namespace, on the chart's etcd, as a
/// secured cluster needs one: clients authenticate with certificates from a CA of
/// the test's (TLS on its own listener, so no `--insecure`), and it passes their
/// identity on to the hosts' peer listeners with the cluster's peer certificate
/// (Secret `main-peer`, the operator's). An AccessPolicy lets the producers'
/// principal use the test's topic. Returns the pod's IP once it is Ready (this
/// machine is the node: it reaches pod IPs) and the producers' TLS settings.
fn start_gateway(server: &KubeApiServer) -> (String, ClientTlsConfig) {
    let pki = Pki::new(server.work_dir(), "gateway-clients");
    let gateway_cert = pki.issue("gateway", "gateway", &[&format!("DNS:{GATEWAY_NAME}")]);
    let producer = pki.issue("producer", PRODUCER, &[]);
    server.kubectl_ok([
        "create",
        "secret",
        "generic",
        "gateway-tls",
        "-n",
        APP_NAMESPACE,
        &format!("--from-file=tls.crt={}", gateway_cert.cert.display()),
        &format!("--from-file=tls.key={}", gateway_cert.key.display()),
        &format!("--from-file=client-ca.crt={}", pki.ca().display()),
    ]);
    let policy = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: history-producers\n\
         spec:\n  grants:\n  - users: [{PRODUCER}]\n    topics: [{TOPIC}]\n\
         \x20   operations: [produce, consume, describe]\n"
    );
    let applied = server.kubectl_stdin(["apply", "-n", APP_NAMESPACE, "-f", "-"], &policy);
    assert!(
        applied.status.success(),
        "apply the producers' policy: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        // The label the cluster's NetworkPolicy admits to the hosts' peer port.
        "metadata": {"name": "gateway", "namespace": APP_NAMESPACE,
                     "labels": {"ferry.dev/peer-of": "main"}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumes": [
                {"name": "tls", "secret": {"secretName": "gateway-tls", "defaultMode": 0o440}},
                {"name": "peer", "secret": {"secretName": "main-peer", "defaultMode": 0o440}},
                {"name": "etcd", "secret": {"secretName": "main-etcd-client", "defaultMode": 0o440}},
            ],
            "containers": [{
                "name": "gateway",
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "command": ["/usr/local/bin/ferry-broker", "gateway"],
                "args": [
                    // The chart's etcd wants a client certificate of its CA: the
                    // operator's copy for the cluster's namespace.
                    format!("--etcd=https://ferry-etcd-0.ferry-etcd-headless.{RELEASE_NAMESPACE}.svc:2379"),
                    "--etcd-ca-file=/etc/ferry/etcd/ca.crt".to_owned(),
                    "--etcd-cert-file=/etc/ferry/etcd/tls.crt".to_owned(),
                    "--etcd-key-file=/etc/ferry/etcd/tls.key".to_owned(),
                    format!("--listen=0.0.0.0:{GATEWAY_PORT}"),
                    format!("--advertise=$(POD_IP):{GATEWAY_PORT}"),
                    "--tls-cert-file=/etc/ferry/tls/tls.crt".to_owned(),
                    "--tls-key-file=/etc/ferry/tls/tls.key".to_owned(),
                    "--tls-client-ca-file=/etc/ferry/tls/client-ca.crt".to_owned(),
                    "--peer-tls-ca-file=/etc/ferry/peer/ca.crt".to_owned(),
                    "--peer-tls-cert-file=/etc/ferry/peer/tls.crt".to_owned(),
                    "--peer-tls-key-file=/etc/ferry/peer/tls.key".to_owned(),
                ],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "volumeMounts": [
                    {"name": "tls", "mountPath": "/etc/ferry/tls", "readOnly": true},
                    {"name": "peer", "mountPath": "/etc/ferry/peer", "readOnly": true},
                    {"name": "etcd", "mountPath": "/etc/ferry/etcd", "readOnly": true},
                ],
                "ports": [{"containerPort": GATEWAY_PORT}],
                // The kubelet's gRPC probes cannot speak TLS.
                "readinessProbe": {"tcpSocket": {"port": GATEWAY_PORT}, "periodSeconds": 2},
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    });
    let created = server.kubectl_stdin(["create", "-f", "-"], &pod.to_string());
    assert!(
        created.status.success(),
        "create the gateway pod: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    server.kubectl_ok([
        "wait",
        "pod/gateway",
        "-n",
        APP_NAMESPACE,
        "--for=condition=Ready",
        "--timeout=120s",
    ]);
    let address = server.kubectl_ok([
        "get",
        "pod",
        "gateway",
        "-n",
        APP_NAMESPACE,
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    let read = |path: &Path| std::fs::read(path).expect("read a test certificate");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&pki.ca())))
        .identity(Identity::from_pem(
            read(&producer.cert),
            read(&producer.key),
        ))
        .domain_name(GATEWAY_NAME);
    (address, tls)
}

fn channel(url: &str, tls: ClientTlsConfig) -> Channel {
    Endpoint::from_shared(url.to_owned())
        .expect("a valid URL")
        .tls_config(tls)
        .expect("TLS settings")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// One producer per partition sending unique values through the gateway, every send
/// recorded in the history, until stopped.
struct Producers {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    /// Sends not acknowledged, by the phase they fell in and the error: what an
    /// availability gap looked like, for the log.
    errors: Arc<Mutex<BTreeMap<(usize, String), u64>>>,
    /// The phases so far (the index in `errors`).
    phases: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Producers {
    fn start(runtime: &tokio::runtime::Runtime, via: &Channel, history: &History) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let errors: Arc<Mutex<BTreeMap<(usize, String), u64>>> = Arc::default();
        let phases = Arc::new(Mutex::new(vec!["start".to_owned()]));
        let tasks = (0..PARTITIONS)
            .map(|p| {
                let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
                let (errors, phases) = (Arc::clone(&errors), Arc::clone(&phases));
                let (via, history) = (via.clone(), history.clone());
                runtime.spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        let value = format!("p{p}-{n}");
                        n += 1;
                        let op = history.record_send_invoke(p, p, &value);
                        let answer =
                            within(SEND_TIMEOUT, rpc::produce(&via, TOPIC, p, None, &value)).await;
                        record_outcome(&history, op, &answer);
                        match &answer {
                            Ok(_) => {
                                acked.fetch_add(1, Ordering::AcqRel);
                            }
                            Err(status) => {
                                let phase = lock(&phases).len() - 1;
                                let kind = format!("{:?}: {}", status.code(), status.message());
                                *lock(&errors).entry((phase, kind)).or_default() += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            acked,
            errors,
            phases,
            tasks,
        }
    }

    /// Marks the start of a phase, for the error summary.
    fn phase(&self, name: &str) {
        lock(&self.phases).push(name.to_owned());
    }

    /// Waits until `more` further sends were acknowledged.
    fn wait_for(&self, more: u64, what: &str) {
        let target = self.acked.load(Ordering::Acquire) + more;
        let deadline = Instant::now() + PODS_READY;
        while self.acked.load(Ordering::Acquire) < target {
            assert!(
                Instant::now() < deadline,
                "{what}: only {} of {target} sends acknowledged within {PODS_READY:?}",
                self.acked.load(Ordering::Acquire)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the producers once their sends in flight are answered; returns how many
    /// were acknowledged.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        for task in self.tasks {
            task.await.expect("producer task");
        }
        let phases = lock(&self.phases);
        for ((phase, error), count) in lock(&self.errors).iter() {
            println!(
                "sends not acknowledged during {}: {count} × {error}",
                phases[*phase]
            );
        }
        self.acked.load(Ordering::Acquire)
    }
}

/// Locks `mutex`, also when a producer panicked holding it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
