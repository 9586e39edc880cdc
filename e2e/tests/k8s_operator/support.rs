//! What the operator scenarios share: the API server with the CRDs, operators and
//! broker clusters for a namespace, kubectl and etcd reads, and waits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_e2e::{Cluster, ClusterOptions, KubeApiServer, OperatorConfig, OperatorProcess};
use serde_json::Value;
use tokio::time::Instant;

use crate::common::rpc;
use crate::common::{PartitionId, read_partition_state};

/// Long enough for anything the operator and the brokers do here on two busy cores:
/// placing a partition, electing its leader, a reconcile after a 1 s resync.
pub const SETTLE: Duration = Duration::from_secs(90);
/// How often waits poll (each poll may run kubectl).
pub const POLL: Duration = Duration::from_millis(250);

/// `relative` in the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// The shared server with the CRDs installed, and a fresh namespace.
pub fn server_with_crds(namespace: &str) -> Arc<KubeApiServer> {
    let server = KubeApiServer::shared();
    // Server-side apply is idempotent, so every test may install them.
    server.install_crds(&repo_path("crds"));
    server.create_namespace(namespace);
    server
}

/// Flags every test operator gets: it watches only the test's namespace, elects its
/// leader on a Lease there, and resyncs every second so waits stay short.
pub fn operator_args(namespace: &str, etcd: &str) -> Vec<String> {
    [
        "--etcd",
        etcd,
        "--watch-namespaces",
        namespace,
        "--lease-namespace",
        namespace,
        "--resync-interval-ms",
        "1000",
        "--error-requeue-ms",
        "500",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// An operator as the admin, for `namespace`, on `etcd`, with `more` flags.
pub fn start_operator(
    server: &KubeApiServer,
    identity: &str,
    namespace: &str,
    etcd: &str,
    more: &[&str],
) -> OperatorProcess {
    start_operator_with_env(server, identity, namespace, etcd, more, Vec::new())
}

/// Like [`start_operator`], with more environment variables (e.g. `OTEL_*`).
pub fn start_operator_with_env(
    server: &KubeApiServer,
    identity: &str,
    namespace: &str,
    etcd: &str,
    more: &[&str],
    env: Vec<(String, String)>,
) -> OperatorProcess {
    let mut args = operator_args(namespace, etcd);
    args.extend(more.iter().map(|arg| (*arg).to_owned()));
    OperatorProcess::start(OperatorConfig {
        identity: identity.to_owned(),
        kubeconfig: server.kubeconfig_path(),
        args,
        env,
    })
}

/// A broker cluster of `hosts` hosts serving BrokerCluster `name` of `namespace`
/// (its etcd name is `{namespace}.{name}`).
pub fn brokers(namespace: &str, name: &str, hosts: usize) -> Cluster {
    Cluster::start_with(ClusterOptions {
        name: format!("{namespace}.{name}"),
        hosts,
        ..ClusterOptions::default()
    })
}

/// `kubectl apply --server-side` of `yaml` in `namespace`; panics if refused.
pub fn apply(server: &KubeApiServer, namespace: &str, yaml: &str) {
    let output = server.kubectl_stdin(["apply", "--server-side", "-n", namespace, "-f", "-"], yaml);
    assert!(
        output.status.success(),
        "the API server refused:\n{yaml}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A BrokerCluster of `hosts` hosts with 1Gi volumes.
pub fn broker_cluster_yaml(name: &str, hosts: u32) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: BrokerCluster\nmetadata:\n  name: {name}\n\
         spec:\n  hosts: {hosts}\n  storage:\n    size: 1Gi\n"
    )
}

/// A Queue on cluster `main` with `spec` (indented lines) besides.
pub fn queue_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Queue\nmetadata:\n  name: {name}\nspec:\n  \
         clusterRef: main\n{spec}"
    )
}

/// The object as JSON, or `None` if the API server has none by that name.
pub fn get(server: &KubeApiServer, namespace: &str, resource: &str, name: &str) -> Option<Value> {
    let output = server.kubectl(["get", resource, name, "-n", namespace, "-o", "json"]);
    if output.status.success() {
        return Some(serde_json::from_slice(&output.stdout).expect("kubectl prints JSON"));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("NotFound"),
        "kubectl get {resource} {name}: {stderr}"
    );
    None
}

/// The object as JSON; panics if there is none.
pub fn must_get(server: &KubeApiServer, namespace: &str, resource: &str, name: &str) -> Value {
    get(server, namespace, resource, name)
        .unwrap_or_else(|| panic!("no {resource} {name} in {namespace}"))
}

/// The condition of `type_` in the object's status.
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Whether the object is `Ready=True` for its current generation, both in the status
/// and in the condition.
pub fn ready_now(object: &Value) -> bool {
    let generation = &object["metadata"]["generation"];
    condition(object, "Ready")
        .is_some_and(|c| c["status"] == "True" && &c["observedGeneration"] == generation)
        && &object["status"]["observedGeneration"] == generation
}

/// Polls `probe` until it gives `Ok`, panicking with `what` and its last error after
/// `deadline`. The probes run kubectl or scrape metrics, which block briefly; the
/// waits between them let the runtime's other tasks run.
pub async fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let until = Instant::now() + deadline;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < until,
                "not within {deadline:?}: {what}; last: {last}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `resource` `name` is `Ready=True` for its generation; its JSON.
pub async fn wait_ready(
    server: &KubeApiServer,
    namespace: &str,
    resource: &str,
    name: &str,
) -> Value {
    eventually(&format!("{resource} {name} Ready"), SETTLE, || {
        let object = get(server, namespace, resource, name).ok_or("absent")?;
        if ready_now(&object) {
            Ok(object)
        } else {
            Err(format!("status {}", object["status"]))
        }
    })
    .await
}

/// Waits until the API server no longer has `resource` `name`.
pub async fn wait_gone(server: &KubeApiServer, namespace: &str, resource: &str, name: &str) {
    eventually(&format!("{resource} {name} deleted"), SETTLE, || match get(
        server, namespace, resource, name,
    ) {
        None => Ok(()),
        Some(object) => Err(format!("still there: {}", object["metadata"])),
    })
    .await;
}

/// Deletes without waiting: the finalizer decides when it goes.
pub fn delete(server: &KubeApiServer, namespace: &str, resource: &str, name: &str) {
    server.kubectl_ok(["delete", resource, name, "-n", namespace, "--wait=false"]);
}

/// The reasons of the events about `name` in `namespace`.
pub fn event_reasons(server: &KubeApiServer, namespace: &str, name: &str) -> Vec<String> {
    let json = server.kubectl_ok([
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&json).expect("kubectl prints JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|event| event["reason"].as_str().map(str::to_owned))
        .collect()
}

/// A client of the etcd at `endpoint`.
pub async fn etcd_client(endpoint: &str) -> etcd_client::Client {
    etcd_client::Client::connect([endpoint], None)
        .await
        .expect("connect to etcd")
}

/// The JSON value at `key`, if any.
pub async fn etcd_json(etcd: &mut etcd_client::Client, key: &str) -> Option<Value> {
    let response = etcd.get(key, None).await.expect("etcd get");
    let kv = response.kvs().first()?;
    Some(serde_json::from_slice(kv.value()).expect("a JSON record"))
}

/// A channel to the host leading queue `queue`, once the cluster's controller
/// elected one.
pub async fn queue_leader(cluster: &Cluster, queue: &str) -> tonic::transport::Channel {
    let mut etcd = etcd_client(&cluster.etcd_endpoint()).await;
    let id = PartitionId::queue(queue);
    let until = Instant::now() + SETTLE;
    loop {
        let state = read_partition_state(&mut etcd, cluster.name(), &id).await;
        if let Ok(Some((state, _))) = &state
            && let Some(leader) = &state.leader
        {
            return rpc::channel(cluster.host(leader));
        }
        assert!(
            Instant::now() < until,
            "queue {queue} has no leader after {SETTLE:?}: {state:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The owner reference of `object`, which must be exactly one: the BrokerCluster.
pub fn assert_owned_by(object: &Value, cluster: &Value) {
    let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
    let owners = object["metadata"]["ownerReferences"]
        .as_array()
        .unwrap_or_else(|| panic!("{what} has no owner references"));
    let [owner] = owners.as_slice() else {
        panic!("{what} has owners {owners:?}");
    };
    assert_eq!(owner["apiVersion"], "ferry.dev/v1alpha1", "{what}");
    assert_eq!(owner["kind"], "BrokerCluster", "{what}");
    assert_eq!(owner["name"], cluster["metadata"]["name"], "{what}");
    assert_eq!(owner["uid"], cluster["metadata"]["uid"], "{what}");
    assert_eq!(owner["controller"], true, "{what}");
}

/// The container named `name` of a pod template.
pub fn container<'a>(pod_spec: &'a Value, name: &str) -> &'a Value {
    pod_spec["containers"]
        .as_array()
        .and_then(|containers| containers.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {pod_spec}"))
}

/// The directories of `queue` in a host's data directory (one per incarnation:
/// `queues/{queue}-{incarnation}`).
pub fn queue_dirs(cluster: &Cluster, queue: &str) -> Vec<String> {
    let dir = cluster.hosts()[0].config().data_dir.join("queues");
    let prefix = format!("{queue}-");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        .map(|entry| entry.expect("a directory entry").file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| {
            name.strip_prefix(&prefix)
                .is_some_and(|rest| rest.parse::<u64>().is_ok())
        })
        .collect()
}

/// Lease timing for the two-replica test: short, so a takeover takes seconds.
pub const LEASE_FLAGS: [&str; 6] = [
    "--lease-duration-ms",
    "6000",
    "--lease-renew-deadline-ms",
    "4000",
    "--lease-retry-ms",
    "500",
];
/// The lease duration above, which bounds how long a takeover may wait for a holder
/// that stopped renewing.
pub const LEASE_DURATION: Duration = Duration::from_millis(6000);

/// Every reconcile an operator counted, all kinds together.
pub fn reconciles(operator: &OperatorProcess) -> f64 {
    ["BrokerCluster", "Topic", "Queue"]
        .iter()
        .map(|kind| {
            let series = format!("ferry_operator_reconciles_total{{kind=\"{kind}\"}}");
            operator.metric(&series).expect("metrics").unwrap_or(0.0)
        })
        .sum()
}

/// Whether an operator says it leads.
pub fn leading(operator: &OperatorProcess) -> bool {
    operator
        .metric("ferry_operator_leading")
        .expect("metrics")
        .is_some_and(|value| value == 1.0)
}

/// The Lease holder in `namespace`, if any.
pub fn lease_holder(server: &KubeApiServer, namespace: &str) -> Option<String> {
    let lease = get(server, namespace, "lease", "ferry-operator")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

/// The operator's flags and environment as the chart's Deployment gives them, for a
/// process outside any pod: the downward-API variables are filled in as the kubelet
/// would, and `--listen` is left to the harness.
pub fn chart_operator_config(
    deployment: &Value,
    namespace: &str,
    pod: &str,
) -> (Vec<String>, Vec<(String, String)>) {
    let container = container(&deployment["spec"]["template"]["spec"], "operator");
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("operator args")
        .iter()
        .filter_map(Value::as_str)
        .filter(|arg| !arg.starts_with("--listen"))
        .map(str::to_owned)
        .collect();
    let env = container["env"]
        .as_array()
        .expect("operator env")
        .iter()
        .map(|var| {
            let name = var["name"].as_str().expect("env name").to_owned();
            let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod.to_owned(),
                Some("metadata.namespace") => namespace.to_owned(),
                Some(other) => panic!("the chart reads {other} from the downward API"),
                None => var["value"].as_str().expect("env value").to_owned(),
            };
            (name, value)
        })
        .collect();
    (args, env)
}
