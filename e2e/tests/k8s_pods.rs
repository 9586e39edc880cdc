//! The user's journey in pods, on a one-node Kubernetes from real parts
//! (`ferry_e2e::node`): Ferry's image built without Docker (`e2e/k8s/image`) and
//! loaded into containerd; `helm install` of `charts/ferry` with that image and the
//! bundled etcd; `kubectl apply -f examples/` in a namespace that enforces the
//! restricted Pod Security Standard; the BrokerCluster's three broker pods Running
//! and Ready on bound volumes; the Queue and Topic Ready; then a client pod (ferryctl
//! from the same image) that produces and consumes through the cluster's Service DNS
//! name. README.md's Kubernetes section is these steps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_e2e::{KubeApiServer, KubeNode};

/// The image name the README documents for a locally built image.
const IMAGE: &str = "ferry:dev";
/// Where the chart goes.
const RELEASE_NAMESPACE: &str = "ferry-system";
/// Where the examples go: a namespace enforcing the restricted Pod Security Standard.
const APP_NAMESPACE: &str = "shop";
/// How long pods may take to become Ready (images are local; brokers form a cluster).
const PODS_READY: Duration = Duration::from_secs(240);

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
/// `address`, under the restricted Pod Security Standard (README.md, "On
/// Kubernetes", step 4); returns its output once it succeeded.
fn ferryctl_pod(server: &KubeApiServer, name: &str, address: &str, args: &[&str]) -> String {
    let mut command = vec!["/usr/local/bin/ferryctl"];
    command.extend_from_slice(args);
    // The overrides replace the container kubectl would make (a JSON merge patch
    // replaces lists whole), so they carry everything.
    let overrides = serde_json::json!({
        "spec": {
            "securityContext": {
                "runAsNonRoot": true,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "ferryctl",
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "command": command,
                "env": [{"name": "FERRY_SERVER", "value": address}],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    });
    server.kubectl_ok([
        "run",
        "-n",
        APP_NAMESPACE,
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
            APP_NAMESPACE,
            "-o",
            "jsonpath={.status.phase}",
        ]);
        phase == "Succeeded" || phase == "Failed"
    });
    // Values may be any bytes (ferryctl replaces invalid UTF-8 when printing).
    let logs = server.kubectl(["logs", name, "-n", APP_NAMESPACE]);
    let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
    assert_eq!(
        phase, "Succeeded",
        "ferryctl {args:?} in pod {name} failed:\n{logs}"
    );
    logs
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
        || {
            server
                .kubectl([
                    "get",
                    "statefulset",
                    "main",
                    "-n",
                    APP_NAMESPACE,
                    "-o",
                    "jsonpath={.status.readyReplicas}",
                ])
                .stdout
                == b"3"
        },
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
            || {
                server
                    .kubectl([
                        "get",
                        kind,
                        name,
                        "-n",
                        APP_NAMESPACE,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ])
                    .stdout
                    == b"True"
            },
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
    drop(node);
}
