//! The CustomResourceDefinitions in `crds/` against a real kube-apiserver: they
//! install and become Established, the API server itself rejects what the schema and
//! its CEL rules forbid (with the messages `operator/src/crd/rules.rs` defines), and
//! the manifests in `examples/` are accepted. The tests share one server and each
//! works in its own namespace.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use ferry_e2e::KubeApiServer;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// The shared server with the CRDs installed and Established, and a fresh namespace.
fn server_with_crds(namespace: &str) -> Arc<KubeApiServer> {
    let server = KubeApiServer::shared();
    // Server-side apply is idempotent, so every test may install them.
    server.install_crds(&repo_path("crds"));
    server.create_namespace(namespace);
    server
}

/// `kubectl apply --server-side` of `yaml` in `namespace`.
fn apply(server: &KubeApiServer, namespace: &str, yaml: &str) -> Output {
    server.kubectl_stdin(["apply", "--server-side", "-n", namespace, "-f", "-"], yaml)
}

fn apply_ok(server: &KubeApiServer, namespace: &str, yaml: &str) {
    let output = apply(server, namespace, yaml);
    assert!(
        output.status.success(),
        "the API server refused:\n{yaml}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Applies `yaml` and expects the API server to refuse it with `message`.
fn apply_rejected(server: &KubeApiServer, namespace: &str, yaml: &str, message: &str) {
    let output = apply(server, namespace, yaml);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the API server accepted:\n{yaml}");
    assert!(
        stderr.contains(message),
        "refused, but not with {message:?}:\n{yaml}\n{stderr}"
    );
}

fn topic(name: &str, spec: &str) -> String {
    format!("apiVersion: ferry.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

fn queue(name: &str, spec: &str) -> String {
    format!("apiVersion: ferry.dev/v1alpha1\nkind: Queue\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

fn broker_cluster(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: BrokerCluster\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

#[test]
fn crds_install_and_become_established() {
    let server = server_with_crds("crds-established");
    for crd in [
        "brokerclusters.ferry.dev",
        "topics.ferry.dev",
        "queues.ferry.dev",
    ] {
        let established = server.kubectl_ok([
            "get",
            "crd",
            crd,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ]);
        assert_eq!(established, "True", "{crd} is not Established");
    }
    // The `ferry` category and the short names are served.
    server.kubectl_ok(["get", "ferry", "-n", "crds-established"]);
    for short in ["fbc", "ft", "fq"] {
        server.kubectl_ok(["get", short, "-n", "crds-established"]);
    }
}

#[test]
fn topic_partitions_may_grow_but_never_decrease() {
    let ns = "crds-partitions";
    let server = server_with_crds(ns);
    apply_ok(&server, ns, &topic("events", "  partitions: 3\n"));
    apply_rejected(
        &server,
        ns,
        &topic("events", "  partitions: 2\n"),
        "partitions cannot decrease",
    );
    apply_ok(&server, ns, &topic("events", "  partitions: 4\n"));
    let partitions = server.kubectl_ok([
        "get",
        "topic",
        "events",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.partitions}",
    ]);
    assert_eq!(partitions, "4");
}

#[test]
fn immutable_fields_cannot_change() {
    let ns = "crds-immutable";
    let server = server_with_crds(ns);
    apply_ok(&server, ns, &queue("jobs", "  fifo: true\n"));
    apply_rejected(
        &server,
        ns,
        &queue("jobs", "  fifo: false\n"),
        "fifo is immutable",
    );

    apply_ok(&server, ns, &topic("audit", "  replicationFactor: 1\n"));
    apply_rejected(
        &server,
        ns,
        &topic("audit", "  replicationFactor: 3\n"),
        "replicationFactor is immutable",
    );

    apply_ok(
        &server,
        ns,
        &queue("named", "  queueName: Named_Queue\n  clusterRef: main\n"),
    );
    apply_rejected(
        &server,
        ns,
        &queue("named", "  queueName: Other_Queue\n  clusterRef: main\n"),
        "queueName is immutable",
    );
    apply_rejected(
        &server,
        ns,
        &queue("named", "  queueName: Named_Queue\n  clusterRef: other\n"),
        "clusterRef is immutable",
    );
    apply_rejected(
        &server,
        ns,
        &queue("named", "  queueName: Named_Queue\n"),
        "clusterRef cannot be removed once set",
    );

    apply_ok(
        &server,
        ns,
        &broker_cluster("grow", "  storage:\n    size: 10Gi\n"),
    );
    apply_rejected(
        &server,
        ns,
        &broker_cluster("grow", "  storage:\n    size: 5Gi\n"),
        "storage.size cannot shrink",
    );
    apply_ok(
        &server,
        ns,
        &broker_cluster("grow", "  storage:\n    size: 20Gi\n"),
    );
}

#[test]
fn out_of_range_values_are_refused() {
    let ns = "crds-ranges";
    let server = server_with_crds(ns);
    apply_rejected(
        &server,
        ns,
        &topic("none", "  replicationFactor: 0\n"),
        "spec.replicationFactor in body should be greater than or equal to 1",
    );
    apply_rejected(
        &server,
        ns,
        &queue("none", "  replicationFactor: 0\n"),
        "spec.replicationFactor in body should be greater than or equal to 1",
    );
    apply_rejected(
        &server,
        ns,
        &topic("huge", "  partitions: 1025\n"),
        "spec.partitions in body should be less than or equal to 1024",
    );
    apply_rejected(
        &server,
        ns,
        &queue("slow", "  durability: sometimes\n"),
        "Unsupported value: \"sometimes\"",
    );
    apply_rejected(
        &server,
        ns,
        &broker_cluster(
            "limits",
            "  config:\n    maxMessageBytes: 2000000\n    maxBatchBytes: 1000000\n",
        ),
        "maxMessageBytes must not exceed maxBatchBytes",
    );
    apply_rejected(
        &server,
        ns,
        &broker_cluster(
            "traced",
            "  tracing:\n    otlpEndpoint: http://otel:4317\n    samplingRatio: 1.5\n",
        ),
        "spec.tracing.samplingRatio in body should be less than or equal to 1",
    );
    apply_rejected(
        &server,
        ns,
        &broker_cluster("traced", "  tracing:\n    otlpEndpoint: otel:4317\n"),
        "spec.tracing.otlpEndpoint in body should match '^https?://'",
    );
    apply_ok(
        &server,
        ns,
        &broker_cluster(
            "traced",
            "  tracing:\n    otlpEndpoint: http://otel:4317\n    samplingRatio: 0.1\n",
        ),
    );
}

#[test]
fn bad_names_and_dead_letter_settings_are_refused() {
    let ns = "crds-names";
    let server = server_with_crds(ns);
    // A valid Kubernetes name (a DNS subdomain) that is no DNS label.
    apply_rejected(
        &server,
        ns,
        &broker_cluster("my.cluster", "  hosts: 1\n"),
        "metadata.name must be a DNS label of at most 45 characters",
    );
    let long = "c".repeat(46);
    apply_rejected(
        &server,
        ns,
        &broker_cluster(&long, "  hosts: 1\n"),
        "metadata.name must be a DNS label of at most 45 characters",
    );
    apply_rejected(
        &server,
        ns,
        &queue("dots", "  queueName: '..'\n"),
        "queueName must not be '.' or '..'",
    );
    apply_rejected(
        &server,
        ns,
        &topic("spaces", "  topicName: 'has space'\n"),
        "spec.topicName in body should match",
    );
    apply_rejected(
        &server,
        ns,
        &queue("bad-ref", "  clusterRef: Not_A_Label\n"),
        "spec.clusterRef in body should match",
    );
    apply_rejected(
        &server,
        ns,
        &queue("loop", "  maxReceiveCount: 3\n  deadLetterQueue: loop\n"),
        "a queue cannot be its own dead-letter queue",
    );
    apply_rejected(
        &server,
        ns,
        &queue("no-dlq", "  maxReceiveCount: 3\n"),
        "deadLetterQueue is required when maxReceiveCount is above 0",
    );
    apply_rejected(
        &server,
        ns,
        &queue("no-count", "  deadLetterQueue: elsewhere\n"),
        "deadLetterQueue needs maxReceiveCount of at least 1",
    );
    // The same resources with the rule met are accepted, so the refusals above are
    // the rules' doing and not a malformed manifest's.
    apply_ok(&server, ns, &broker_cluster("my-cluster", "  hosts: 1\n"));
    apply_ok(&server, ns, &queue("dots", "  queueName: '.hidden'\n"));
    apply_ok(
        &server,
        ns,
        &queue(
            "with-dlq",
            "  maxReceiveCount: 3\n  deadLetterQueue: elsewhere\n",
        ),
    );
}

#[test]
fn examples_are_accepted_with_schema_defaults() {
    let ns = "crds-examples";
    let server = server_with_crds(ns);
    let examples = repo_path("examples");
    server.kubectl_ok([
        "apply".as_ref(),
        "--server-side".as_ref(),
        "-n".as_ref(),
        ns.as_ref(),
        "-f".as_ref(),
        examples.as_os_str(),
    ]);
    let names = server.kubectl_ok([
        "get",
        "brokerclusters,queues,topics,accesspolicies",
        "-n",
        ns,
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.name} {end}",
    ]);
    let mut names: Vec<&str> = names.split_whitespace().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "AccessPolicy/analytics-readers",
            "BrokerCluster/main",
            "Queue/orders",
            "Queue/orders-dlq",
            "Topic/clicks"
        ]
    );
    // Defaults the schema fills in are stored, as the operator expects them.
    let policy = server.kubectl_ok([
        "get",
        "queue",
        "orders",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.deletionPolicy}",
    ]);
    assert_eq!(policy, "Retain");
}
