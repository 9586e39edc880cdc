//! The operator (`ferry-operator`) against a real kube-apiserver, with real broker
//! processes standing in for the StatefulSet's pods (no kubelet runs here, so the pods
//! the operator asks for never start; harness hosts serve the same cluster name in the
//! same etcd instead).
//!
//! - a BrokerCluster yields its StatefulSet, Services, PDB, ConfigMap and
//!   ServiceAccount with the expected spec and owner references;
//! - a Queue and a Topic get their etcd records and `Ready` with `observedGeneration`,
//!   and the brokers serve them;
//! - `deletionPolicy: Retain` keeps the queue and its data, `Delete` removes them;
//! - deleting the cluster first leaves no Queue stuck on its finalizer;
//! - of two operator replicas only the Lease holder reconciles, and the other takes
//!   over when it is killed;
//! - the Helm chart installs, and the operator under the chart's ServiceAccount
//!   reconciles the sample Queue from `examples/`.
//!
//! The tests share one API server; each works in its own namespace, with its own etcd
//! (its broker cluster's) and its own operators, which watch only that namespace and
//! elect a leader on a Lease in it.

#[path = "../common/mod.rs"]
mod common;
mod support;

use std::time::Duration;

use common::{PartitionId, SecuredEtcd, read_partition_state};
use common::{otlp, rpc};
use ferry_e2e::{Cluster, ClusterOptions, KubeApiServer, OperatorConfig, OperatorProcess};
use serde_json::Value;
use support::{
    LEASE_DURATION, LEASE_FLAGS, POLL, SETTLE, apply, assert_owned_by, broker_cluster_yaml,
    brokers, chart_operator_config, condition, container, delete, etcd_client, etcd_json,
    event_reasons, eventually, get, leading, lease_holder, must_get, queue_dirs, queue_leader,
    queue_yaml, reconciles, repo_path, server_with_crds, start_operator, start_operator_with_env,
    wait_gone, wait_ready,
};
use tokio::time::Instant;

#[tokio::test]
async fn a_broker_cluster_yields_its_statefulset_services_and_pdb() {
    let ns = "op-objects";
    let server = server_with_crds(ns);
    // No brokers: the objects are the operator's alone; it only needs an etcd.
    let etcd = ferry_e2e::EtcdServer::start(&server.work_dir().join(format!("{ns}-etcd")));
    let _operator = start_operator(&server, "op-objects-a", ns, &etcd.endpoint(), &[]);
    apply(
        &server,
        ns,
        "apiVersion: ferry.dev/v1alpha1\nkind: BrokerCluster\nmetadata:\n  name: main\n\
         spec:\n  hosts: 3\n  storage:\n    size: 2Gi\n    storageClassName: fast\n  \
         config:\n    maxMessageBytes: 65536\n  pdb:\n    maxUnavailable: 1\n  \
         podTemplate:\n    tolerations:\n    - key: dedicated\n      operator: Equal\n      \
         value: ferry\n      effect: NoSchedule\n",
    );
    let set = eventually("the StatefulSet", SETTLE, || {
        get(&server, ns, "statefulset", "main").ok_or_else(|| "absent".to_owned())
    })
    .await;
    let cluster = must_get(&server, ns, "brokercluster", "main");

    let spec = &set["spec"];
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["serviceName"], "main-hosts");
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    let claim = &spec["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(claim["spec"]["storageClassName"], "fast");
    assert_eq!(claim["spec"]["accessModes"][0], "ReadWriteOnce");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "main-broker");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let broker = container(pod, "broker");
    let args: Vec<&str> = broker["args"]
        .as_array()
        .expect("broker args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "serve", "{args:?}");
    let cluster_name = format!("{ns}.main");
    assert!(
        args.windows(2)
            .any(|pair| pair == ["--cluster", cluster_name.as_str()]),
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|pair| pair
            == [
                "--advertise",
                &format!("$(FERRY_HOST_ID).main-hosts.{ns}.svc.cluster.local:7070")
            ]),
        "{args:?}"
    );
    let env = broker["env"].as_array().expect("broker env");
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {env:?}"))
    };
    // The host id is the pod's name, `main-{ordinal}`.
    assert_eq!(
        var("FERRY_HOST_ID")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(var("FERRY_ETCD")["value"], etcd.endpoint());
    assert_eq!(broker["envFrom"][0]["configMapRef"]["name"], "main-config");
    // HTTP probes on the metrics port: the kubelet's gRPC probes cannot speak TLS.
    for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health")] {
        assert_eq!(broker[probe]["httpGet"]["port"], 7071, "{probe}");
        assert_eq!(broker[probe]["httpGet"]["path"], path, "{probe}");
    }
    let security = &broker["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert_owned_by(&set, &cluster);
    // The pods it would run pass the restricted Pod Security Standard, enforced.
    server.kubectl_ok([
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    // As the StatefulSet controller would make it: the claim template becomes a
    // volume beside the template's own (the pod's labels).
    let mut pod_spec = spec["template"]["spec"].clone();
    let mut volumes = pod_spec["volumes"].as_array().cloned().unwrap_or_default();
    volumes.push(serde_json::json!(
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-main-0"}}
    ));
    pod_spec["volumes"] = serde_json::Value::Array(volumes);
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "main-0", "labels": spec["template"]["metadata"]["labels"]},
        "spec": pod_spec,
    });
    let admitted = server.kubectl_stdin(
        ["create", "--dry-run=server", "-n", ns, "-f", "-"],
        &pod.to_string(),
    );
    assert!(
        admitted.status.success(),
        "a host's pod is refused under the restricted profile: {}",
        String::from_utf8_lossy(&admitted.stderr)
    );

    let headless = must_get(&server, ns, "service", "main-hosts");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    assert_owned_by(&headless, &cluster);
    let client = must_get(&server, ns, "service", "main-client");
    assert_eq!(client["spec"]["type"], "ClusterIP");
    assert_eq!(client["spec"]["ports"][0]["port"], 7070);
    assert_eq!(
        client["spec"]["selector"]["app.kubernetes.io/instance"],
        "main"
    );
    assert_owned_by(&client, &cluster);
    let pdb = must_get(&server, ns, "poddisruptionbudget", "main");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        spec["selector"]["matchLabels"]
    );
    assert_owned_by(&pdb, &cluster);
    // The broker pods' NetworkPolicy, as the API server stored it: the client port
    // from every namespace, the peer port from the cluster's hosts and gateways.
    let policy = must_get(&server, ns, "networkpolicy", "main-brokers");
    assert_owned_by(&policy, &cluster);
    let rules = &policy["spec"]["ingress"];
    assert_eq!(rules[0]["ports"][0]["port"], 7070, "{policy}");
    assert_eq!(rules[1]["ports"][0]["port"], 7072, "{policy}");
    assert_eq!(
        rules[1]["from"][1]["podSelector"]["matchLabels"]["ferry.dev/peer-of"],
        "main"
    );
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/part-of"], "ferry",
        "broker pods carry the label the chart's etcd NetworkPolicy admits"
    );
    let config = must_get(&server, ns, "configmap", "main-config");
    assert_eq!(config["data"]["FERRY_MAX_MESSAGE_BYTES"], "65536");
    assert_owned_by(&config, &cluster);
    let account = must_get(&server, ns, "serviceaccount", "main-broker");
    assert_eq!(account["automountServiceAccountToken"], false);
    assert_owned_by(&account, &cluster);

    // Status for this generation; no pod runs, so the cluster is not Ready.
    let cluster = eventually("the BrokerCluster's status", SETTLE, || {
        let cluster = must_get(&server, ns, "brokercluster", "main");
        let synced = condition(&cluster, "Synced").is_some_and(|c| c["status"] == "True");
        if synced && cluster["status"]["observedGeneration"] == cluster["metadata"]["generation"] {
            Ok(cluster)
        } else {
            Err(format!("status {}", cluster["status"]))
        }
    })
    .await;
    let status = &cluster["status"];
    assert_eq!(status["address"], format!("main-client.{ns}.svc:7070"));
    assert_eq!(status["etcdName"], cluster_name);
    assert_eq!(status["readyHosts"], 0);
    let ready = condition(&cluster, "Ready").expect("a Ready condition");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "HostsNotReady");

    tls_certificates_are_issued_and_renewed(&server, ns, &cluster).await;

    // The scale subresource moves the StatefulSet.
    server.kubectl_ok(["scale", "brokercluster", "main", "-n", ns, "--replicas=4"]);
    eventually("the StatefulSet scaled to 4", SETTLE, || {
        let set = must_get(&server, ns, "statefulset", "main");
        (set["spec"]["replicas"] == 4)
            .then_some(())
            .ok_or_else(|| format!("replicas {}", set["spec"]["replicas"]))
    })
    .await;

    // With ServiceAccount tokens and access rules: the API server's issuer and keys,
    // as it publishes them, reach the hosts (a mounted ConfigMap and their settings).
    apply(
        &server,
        ns,
        "apiVersion: ferry.dev/v1alpha1\nkind: BrokerCluster\nmetadata:\n  name: secured\n\
         spec:\n  hosts: 1\n  auth:\n    serviceAccountTokens: true\n    authorization: true\n\
         \x20   superusers: [\"system:serviceaccount:ferry-system:admin\"]\n",
    );
    let keys = eventually("the token keys published", SETTLE, || {
        get(&server, ns, "configmap", "secured-token-keys").ok_or_else(|| "absent".to_owned())
    })
    .await;
    let published: Value = serde_json::from_str(
        keys["data"]["jwks.json"]
            .as_str()
            .expect("the key set in the ConfigMap"),
    )
    .expect("JSON");
    let served: Value =
        serde_json::from_str(&server.kubectl_ok(["get", "--raw", "/openid/v1/jwks"]))
            .expect("the API server's key set");
    assert_eq!(published, served, "the key set as the API server serves it");
    let discovery: Value = serde_json::from_str(&server.kubectl_ok([
        "get",
        "--raw",
        "/.well-known/openid-configuration",
    ]))
    .expect("discovery JSON");
    let config = must_get(&server, ns, "configmap", "secured-config");
    assert_eq!(
        config["data"]["FERRY_AUTH_TOKEN_ISSUER"],
        discovery["issuer"]
    );
    assert_eq!(
        config["data"]["FERRY_AUTH_JWKS_FILE"],
        "/etc/ferry/token-keys/jwks.json"
    );
    assert_eq!(config["data"]["FERRY_AUTHORIZATION"], "true");
    let set = eventually("the secured StatefulSet", SETTLE, || {
        get(&server, ns, "statefulset", "secured").ok_or_else(|| "absent".to_owned())
    })
    .await;
    let volumes = &set["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes.as_array().is_some_and(|v| v
            .iter()
            .any(|v| v["configMap"]["name"] == "secured-token-keys")),
        "{volumes}"
    );
}

/// TLS by default: the cluster's CA, its certificate for clients, and host
/// certificates that openssl (not the operator's own code) verifies against it for
/// the names clients and peers dial; a certificate due for renewal is issued again
/// from the same CA.
async fn tls_certificates_are_issued_and_renewed(
    server: &KubeApiServer,
    ns: &str,
    cluster: &Value,
) {
    let dir = server.work_dir().join(format!("{ns}-certificates"));
    std::fs::create_dir_all(&dir).expect("a directory for the certificates");
    // `kind/name`'s `key`, decoded from base64 for a Secret, written to `file`.
    let save = |kind: &str, name: &str, key: &str, file: &str| {
        let value = format!("index .data \"{key}\"");
        let template = if kind == "secret" {
            format!("go-template={{{{{value} | base64decode}}}}")
        } else {
            format!("go-template={{{{{value}}}}}")
        };
        let text = server.kubectl_ok(["get", kind, name, "-n", ns, "-o", &template]);
        let path = dir.join(file);
        std::fs::write(&path, text).expect("write a certificate");
        path
    };
    let verifies = |cert: &std::path::Path, purpose: &str, host: &str| {
        ferry_e2e::pki::openssl_verifies(&dir, &dir.join("ca.crt"), cert, purpose, host)
    };
    let ca_secret = must_get(server, ns, "secret", "main-ca");
    assert_owned_by(&ca_secret, cluster);
    assert!(
        ca_secret["data"]["ca.key"].is_string(),
        "the CA keeps its key"
    );
    let public = must_get(server, ns, "configmap", "main-ca-cert");
    assert_owned_by(&public, cluster);
    assert!(public["data"].get("ca.key").is_none(), "clients get no key");
    save("configmap", "main-ca-cert", "ca.crt", "ca.crt");
    assert_eq!(cluster["status"]["caConfigMap"], "main-ca-cert");
    let client_name = format!("main-client.{ns}.svc");
    let host_name = format!("main-2.main-hosts.{ns}.svc.cluster.local");
    for (secret, purposes) in [
        ("main-tls", &["sslserver"][..]),
        ("main-peer", &["sslserver", "sslclient"][..]),
    ] {
        let object = must_get(server, ns, "secret", secret);
        assert_eq!(object["type"], "kubernetes.io/tls");
        assert_owned_by(&object, cluster);
        let cert = save("secret", secret, "tls.crt", &format!("{secret}.crt"));
        for purpose in purposes {
            for host in [&client_name, &host_name] {
                if let Err(printed) = verifies(&cert, purpose, host) {
                    panic!("{secret} is not valid for {purpose} as {host}: {printed}");
                }
            }
        }
        assert!(
            verifies(&cert, "sslserver", "elsewhere.example").is_err(),
            "{secret} names a host it should not"
        );
    }
    assert!(
        verifies(&dir.join("main-tls.crt"), "sslclient", &client_name).is_err(),
        "the client listener's certificate passes for a peer's"
    );

    // Renewal: a certificate past its renewal time is issued again, from the same CA.
    let before = must_get(server, ns, "secret", "main-tls")["data"]["tls.crt"].clone();
    server.kubectl_ok([
        "annotate",
        "secret",
        "main-tls",
        "-n",
        ns,
        "--overwrite",
        "ferry.dev/renew-after=2000-01-01T00:00:00Z",
    ]);
    eventually("the certificate renewed", SETTLE, || {
        let now = must_get(server, ns, "secret", "main-tls");
        (now["data"]["tls.crt"] != before)
            .then_some(())
            .ok_or_else(|| "still the old certificate".to_owned())
    })
    .await;
    let renewed = save("secret", "main-tls", "tls.crt", "main-tls-renewed.crt");
    if let Err(printed) = verifies(&renewed, "sslserver", &client_name) {
        panic!("the renewed certificate does not verify: {printed}");
    }
    assert_eq!(
        must_get(server, ns, "configmap", "main-ca-cert")["data"]["ca.crt"],
        public["data"]["ca.crt"],
        "renewal keeps the CA"
    );
    assert!(
        event_reasons(server, ns, "main")
            .iter()
            .any(|reason| reason == "CertificateIssued"),
        "an event says the certificate was issued"
    );
}

#[tokio::test]
async fn a_queue_and_a_topic_are_mapped_ready_and_served_by_real_brokers() {
    let ns = "op-mapping";
    let server = server_with_crds(ns);
    let cluster = brokers(ns, "main", 3);
    let etcd_endpoint = cluster.etcd_endpoint();
    // The operator exports its reconcile spans to a collector.
    let collector = otlp::Collector::default();
    let collector_addr = collector.start("127.0.0.66");
    let _operator = start_operator_with_env(
        &server,
        "op-mapping-a",
        ns,
        &etcd_endpoint,
        &[],
        otlp::otel_env(collector_addr),
    );
    apply(&server, ns, &broker_cluster_yaml("main", 3));
    apply(
        &server,
        ns,
        &queue_yaml(
            "jobs",
            "  visibilityTimeoutMs: 45000\n  maxMessages: 1000\n",
        ),
    );
    apply(
        &server,
        ns,
        "apiVersion: ferry.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: events\nspec:\n  \
         clusterRef: main\n  partitions: 3\n  replicationFactor: 2\n  retentionMs: 3600000\n",
    );

    let queue = wait_ready(&server, ns, "queue", "jobs").await;
    let topic = wait_ready(&server, ns, "topic", "events").await;
    let cluster_name = format!("{ns}.main");
    for object in [&queue, &topic] {
        let status = &object["status"];
        assert_eq!(status["cluster"], "main", "{status}");
        assert_eq!(status["address"], format!("main-client.{ns}.svc:7070"));
        let synced = condition(object, "Synced").expect("Synced");
        assert_eq!(synced["status"], "True", "{status}");
    }
    assert_eq!(topic["status"]["partitions"]["ready"], 3);
    assert_eq!(topic["status"]["partitions"]["total"], 3);

    // Each reconcile is a span naming the resource it reconciled.
    for (kind, name) in [("Queue", "jobs"), ("Topic", "events")] {
        collector
            .wait_for(
                &format!("a reconcile span of {kind} {ns}/{name}"),
                |spans| {
                    spans
                        .iter()
                        .find(|r| {
                            r.service == "ferry-operator"
                                && r.span.name == "reconcile"
                                && r.attribute("kind").as_deref() == Some(kind)
                                && r.attribute("namespace").as_deref() == Some(ns)
                                && r.attribute("name").as_deref() == Some(name)
                        })
                        .cloned()
                },
            )
            .await;
    }

    // The records, in the brokers' format, mapped to the cluster, claimed by the
    // incarnation in status.
    let mut etcd = etcd_client(&etcd_endpoint).await;
    let record = etcd_json(&mut etcd, "/ferry/queues/jobs")
        .await
        .expect("the queue's record");
    assert_eq!(record["name"], "jobs");
    assert_eq!(record["cluster"], cluster_name);
    assert_eq!(record["incarnation"], queue["status"]["incarnation"]);
    assert_eq!(record["settings"]["visibility_timeout_ms"], 45_000);
    assert_eq!(record["settings"]["max_messages"], 1000);
    assert_eq!(record["settings"]["fifo"], false);
    let record = etcd_json(&mut etcd, "/ferry/topics/events")
        .await
        .expect("the topic's record");
    assert_eq!(record["cluster"], cluster_name);
    assert_eq!(record["incarnation"], topic["status"]["incarnation"]);
    assert_eq!(record["settings"]["partitions"], 3);
    assert_eq!(record["settings"]["replication_factor"], 2);
    assert_eq!(record["settings"]["retention_ms"], 3_600_000);
    // With them, the rules letting the namespace's ServiceAccounts use them.
    let accounts = format!("group:system:serviceaccounts:{ns}");
    for (key, resource) in [
        (format!("/ferry/access/rules/k8s.{ns}.queue.jobs"), "jobs"),
        (
            format!("/ferry/access/rules/k8s.{ns}.topic.events"),
            "events",
        ),
        (
            format!("/ferry/access/rules/k8s.{ns}.groups"),
            &*format!("{ns}."),
        ),
    ] {
        let rule = etcd_json(&mut etcd, &key).await.expect("a namespace rule");
        assert_eq!(rule["principal"], accounts.as_str(), "{key}: {rule}");
        assert_eq!(rule["resource"]["name"], resource, "{key}: {rule}");
    }

    // The brokers serve them: a message goes through the queue's leader.
    let leader = queue_leader(&cluster, "jobs").await;
    rpc::until_led(SETTLE, || rpc::send(&leader, "jobs", "hello from kubectl"))
        .await
        .expect("send");
    let received = rpc::receive_all(&leader, "jobs").await.expect("receive");
    assert_eq!(received, ["hello from kubectl"]);
    let info = rpc::describe_queue(&leader, "jobs")
        .await
        .expect("describe");
    assert_eq!(
        info.config.as_ref().map(|c| c.visibility_timeout_ms),
        Some(Some(45_000)),
        "{info:?}"
    );

    // The BrokerCluster counts the hosts registered under its etcd name.
    eventually("3 hosts registered", SETTLE, || {
        let cluster = must_get(&server, ns, "brokercluster", "main");
        (cluster["status"]["registeredHosts"] == 3)
            .then_some(())
            .ok_or_else(|| format!("status {}", cluster["status"]))
    })
    .await;

    // A spec change the live queue cannot take is reported for the new generation,
    // and the record stays as it was.
    apply(
        &server,
        ns,
        &queue_yaml("jobs", "  visibilityTimeoutMs: 5000\n  maxMessages: 1000\n"),
    );
    let queue = eventually("the change reported", SETTLE, || {
        let queue = must_get(&server, ns, "queue", "jobs");
        let reported = condition(&queue, "Synced").is_some_and(|c| {
            c["reason"] == "SpecChangeNotApplied"
                && c["observedGeneration"] == queue["metadata"]["generation"]
        });
        if reported {
            Ok(queue)
        } else {
            Err(format!("status {}", queue["status"]))
        }
    })
    .await;
    assert_eq!(queue["metadata"]["generation"], 2);
    assert_eq!(queue["status"]["observedGeneration"], 2);
    let synced = condition(&queue, "Synced").expect("Synced");
    assert_eq!(synced["status"], "False");
    assert!(
        synced["message"]
            .as_str()
            .is_some_and(|m| m.contains("visibility_timeout_ms=45000")),
        "{synced}"
    );
    let record = etcd_json(&mut etcd, "/ferry/queues/jobs")
        .await
        .expect("the queue's record");
    assert_eq!(record["settings"]["visibility_timeout_ms"], 45_000);
}

#[tokio::test]
async fn deletion_keeps_a_retained_queue_and_removes_a_deleted_one() {
    let ns = "op-deletion";
    let server = server_with_crds(ns);
    let cluster = brokers(ns, "main", 1);
    let etcd_endpoint = cluster.etcd_endpoint();
    let _operator = start_operator(&server, "op-deletion-a", ns, &etcd_endpoint, &[]);
    apply(&server, ns, &broker_cluster_yaml("main", 1));
    apply(
        &server,
        ns,
        &queue_yaml("kept", "  deletionPolicy: Retain\n"),
    );
    apply(
        &server,
        ns,
        &queue_yaml("dropped", "  deletionPolicy: Delete\n"),
    );
    let kept = wait_ready(&server, ns, "queue", "kept").await;
    wait_ready(&server, ns, "queue", "dropped").await;
    let host = queue_leader(&cluster, "kept").await;
    for queue in ["kept", "dropped"] {
        let body = format!("a message on {queue}");
        rpc::until_led(SETTLE, || rpc::send(&host, queue, &body))
            .await
            .expect("send");
    }
    let mut etcd = etcd_client(&etcd_endpoint).await;

    delete(&server, ns, "queue", "kept");
    wait_gone(&server, ns, "queue", "kept").await;
    let record = etcd_json(&mut etcd, "/ferry/queues/kept")
        .await
        .expect("a retained queue keeps its record");
    assert_eq!(record["incarnation"], kept["status"]["incarnation"]);
    assert!(event_reasons(&server, ns, "kept").contains(&"Retained".to_owned()));
    // The data stays: the message sent before the deletion is still there.
    let received = rpc::receive_all(&host, "kept").await.expect("receive");
    assert_eq!(received, ["a message on kept"]);

    delete(&server, ns, "queue", "dropped");
    wait_gone(&server, ns, "queue", "dropped").await;
    assert_eq!(etcd_json(&mut etcd, "/ferry/queues/dropped").await, None);
    assert!(event_reasons(&server, ns, "dropped").contains(&"Deleted".to_owned()));
    // The controller drops the queue's placement and the host its data; it no longer
    // serves the queue (in cluster mode it answers NOT_LEADER with no leader for a
    // queue it does not know, not QUEUE_NOT_FOUND).
    eventually("the host deletes the data of queue dropped", SETTLE, || {
        let left = queue_dirs(&cluster, "dropped");
        left.is_empty()
            .then_some(())
            .ok_or_else(|| format!("left: {left:?}"))
    })
    .await;
    let until = Instant::now() + SETTLE;
    loop {
        let id = PartitionId::queue("dropped");
        let state = read_partition_state(&mut etcd, cluster.name(), &id).await;
        if matches!(state, Ok(None)) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the controller keeps a state for a deleted queue: {state:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let answer = rpc::describe_queue(&host, "dropped").await;
    assert!(answer.is_err(), "a deleted queue is served: {answer:?}");
    assert_eq!(
        queue_dirs(&cluster, "kept"),
        [format!("kept-{}", kept["status"]["incarnation"])]
    );
    // The retained queue is untouched by its neighbour's deletion.
    rpc::describe_queue(&host, "kept")
        .await
        .expect("kept is still served");
}

#[tokio::test]
async fn deleting_the_cluster_first_does_not_leave_a_queue_stuck() {
    let ns = "op-cluster-gone";
    let server = server_with_crds(ns);
    let cluster = brokers(ns, "main", 1);
    let etcd_endpoint = cluster.etcd_endpoint();
    let _operator = start_operator(&server, "op-cluster-gone-a", ns, &etcd_endpoint, &[]);
    apply(&server, ns, &broker_cluster_yaml("main", 1));
    apply(
        &server,
        ns,
        &queue_yaml("orphan", "  deletionPolicy: Delete\n"),
    );
    let queue = wait_ready(&server, ns, "queue", "orphan").await;
    assert_eq!(queue["metadata"]["finalizers"][0], "ferry.dev/cleanup");

    server.kubectl_ok(["delete", "brokercluster", "main", "-n", ns, "--timeout=60s"]);
    delete(&server, ns, "queue", "orphan");
    wait_gone(&server, ns, "queue", "orphan").await;
    assert!(
        event_reasons(&server, ns, "orphan").contains(&"ClusterGone".to_owned()),
        "no ClusterGone event: {:?}",
        event_reasons(&server, ns, "orphan")
    );
    // With deletionPolicy Delete the dead mapping goes too.
    let mut etcd = etcd_client(&etcd_endpoint).await;
    assert_eq!(etcd_json(&mut etcd, "/ferry/queues/orphan").await, None);
}

#[tokio::test]
async fn two_operator_replicas_never_reconcile_at_once() {
    let ns = "op-leader";
    let server = server_with_crds(ns);
    let cluster = brokers(ns, "main", 1);
    let etcd = cluster.etcd_endpoint();
    let mut operators = [
        start_operator(&server, "op-leader-a", ns, &etcd, &LEASE_FLAGS),
        start_operator(&server, "op-leader-b", ns, &etcd, &LEASE_FLAGS),
    ];
    apply(&server, ns, &broker_cluster_yaml("main", 1));
    apply(&server, ns, &queue_yaml("before", ""));

    // Sample both for a while (each resyncs every second): never both leading, and
    // a replica that never led never reconciled. Under load a leader may miss its
    // renew deadline and the other take over; that is allowed, overlap is not.
    let mut ever_led = [false; 2];
    let until = Instant::now() + Duration::from_secs(10);
    let mut start_counts = None;
    while Instant::now() < until {
        let now = [leading(&operators[0]), leading(&operators[1])];
        assert!(!(now[0] && now[1]), "both replicas lead at once");
        for (index, leads) in now.into_iter().enumerate() {
            ever_led[index] |= leads;
            if !ever_led[index] {
                assert_eq!(
                    reconciles(&operators[index]),
                    0.0,
                    "{} reconciled without ever leading",
                    operators[index].identity()
                );
            }
        }
        if start_counts.is_none() && now.contains(&true) {
            start_counts = Some([reconciles(&operators[0]), reconciles(&operators[1])]);
        }
        tokio::time::sleep(POLL).await;
    }
    let start_counts = start_counts.expect("a replica led within 10 s");
    let end_counts = [reconciles(&operators[0]), reconciles(&operators[1])];
    assert!(
        (0..2).any(|i| end_counts[i] > start_counts[i]),
        "nobody reconciled in 10 s of 1 s resyncs: {start_counts:?} {end_counts:?}"
    );
    wait_ready(&server, ns, "queue", "before").await;
    let leader = eventually("one replica leads", SETTLE, || {
        operators
            .iter()
            .position(leading)
            .ok_or_else(|| "none leads".to_owned())
    })
    .await;
    let follower = 1 - leader;
    assert_eq!(
        lease_holder(&server, ns).as_deref(),
        Some(operators[leader].identity())
    );

    // SIGKILL the leader: it releases nothing, so the other waits out the lease.
    operators[leader].kill();
    let killed_at = Instant::now();
    let survivor = &operators[follower];
    eventually("the other replica takes over", SETTLE, || {
        leading(survivor)
            .then_some(())
            .ok_or_else(|| "not leading".to_owned())
    })
    .await;
    // Within the lease duration after the last renewal, plus one retry period and
    // slack for two busy cores; no sooner than the lease allows is not asserted
    // (the last renewal was up to a retry period before the kill).
    let took = killed_at.elapsed();
    assert!(
        took < LEASE_DURATION + Duration::from_secs(10),
        "takeover took {took:?}"
    );
    assert_eq!(
        lease_holder(&server, ns).as_deref(),
        Some(survivor.identity())
    );
    apply(&server, ns, &queue_yaml("after", ""));
    wait_ready(&server, ns, "queue", "after").await;
    let queues = survivor
        .metric("ferry_operator_reconciles_total{kind=\"Queue\"}")
        .expect("metrics");
    assert!(
        queues.is_some_and(|count| count > 0.0),
        "the new leader counted no Queue reconcile"
    );
    let resident = survivor
        .metric("process_resident_memory_bytes")
        .expect("metrics");
    assert!(
        resident.is_some_and(|bytes| bytes > 0.0),
        "the operator exports the standard process metrics"
    );
}

#[tokio::test]
async fn the_chart_installs_and_its_operator_reconciles_the_sample_queue() {
    let ns = "op-chart";
    let release = "ferry-op";
    // Installed before helm runs, so helm finds the CRDs there and skips its own
    // copies instead of racing the other tests' installs.
    let server = KubeApiServer::shared();
    server.install_crds(&repo_path("crds"));
    let cluster = brokers(ns, "main", 3);
    let install = server
        .helm_command()
        .args(["install", release])
        .arg(repo_path("charts/ferry"))
        .args(["--namespace", ns, "--create-namespace"])
        .args(["--set", "etcd.enabled=false"])
        .args([
            "--set",
            &format!("etcd.endpoints={{{}}}", cluster.etcd_endpoint()),
        ])
        // Only its own namespace: the other tests' resources are not its business.
        .args(["--set", &format!("operator.watchNamespaces={{{ns}}}")])
        .output()
        .expect("run helm");
    assert!(
        install.status.success(),
        "helm install failed:\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let deployment = must_get(&server, ns, "deployment", &format!("{release}-operator"));
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("the operator's ServiceAccount")
        .to_owned();
    let pod = format!("{release}-operator-0");
    let (args, env) = chart_operator_config(&deployment, ns, &pod);
    assert!(
        args.contains(&format!("--etcd={}", cluster.etcd_endpoint())),
        "{args:?}"
    );
    // Exactly the rights the chart grants its ServiceAccount: the admin impersonates
    // it, with the groups a real token of it would carry.
    let kubeconfig = server.kubeconfig_as(
        &format!("system:serviceaccount:{ns}:{account}"),
        &[
            "system:serviceaccounts",
            &format!("system:serviceaccounts:{ns}"),
            "system:authenticated",
        ],
    );
    let operator = OperatorProcess::start(OperatorConfig {
        identity: pod.clone(),
        kubeconfig,
        args,
        env,
    });

    let examples = repo_path("examples");
    for file in ["broker-cluster.yaml", "queue.yaml"] {
        let yaml = std::fs::read_to_string(examples.join(file)).expect("read the example");
        apply(&server, ns, &yaml);
    }
    for queue in ["orders", "orders-dlq"] {
        let object = wait_ready(&server, ns, "queue", queue).await;
        assert_eq!(object["status"]["cluster"], "main");
    }
    // The operator could do all of its work under those rights: the cluster's objects
    // are applied, its status written, its leader Lease is in the release namespace.
    let cluster_object = eventually("BrokerCluster main Synced", SETTLE, || {
        let object = must_get(&server, ns, "brokercluster", "main");
        condition(&object, "Synced")
            .is_some_and(|c| c["status"] == "True")
            .then_some(object.clone())
            .ok_or_else(|| format!("status {}", object["status"]))
    })
    .await;
    assert_owned_by(
        &must_get(&server, ns, "statefulset", "main"),
        &cluster_object,
    );
    assert_eq!(lease_holder(&server, ns).as_deref(), Some(pod.as_str()));
    assert!(event_reasons(&server, ns, "orders").contains(&"LeadersElected".to_owned()));
    for kind in ["BrokerCluster", "Queue"] {
        let forbidden =
            format!("ferry_operator_reconcile_failures_total{{kind=\"{kind}\",reason=\"kube\"}}");
        assert_eq!(
            operator.metric(&forbidden).expect("metrics"),
            None,
            "{kind} reconciles failed on the API (forbidden?)"
        );
    }

    // The broker serves the sample queue, with the example's settings.
    let mut etcd = etcd_client(&cluster.etcd_endpoint()).await;
    let record = etcd_json(&mut etcd, "/ferry/queues/orders")
        .await
        .expect("the record of orders");
    assert_eq!(record["cluster"], format!("{ns}.main"));
    assert_eq!(record["settings"]["dead_letter_queue"], "orders-dlq");
    let leader = queue_leader(&cluster, "orders").await;
    let info = rpc::describe_queue(&leader, "orders")
        .await
        .expect("describe");
    let config = info.config.expect("a queue config");
    assert!(config.fifo);
    assert_eq!(config.max_receive_count, Some(5));
}

#[tokio::test]
async fn the_operator_maps_a_queue_through_an_etcd_that_requires_client_certificates() {
    let ns = "op-etcd-tls";
    let server = server_with_crds(ns);
    let pki_dir = server.work_dir().join(format!("{ns}-pki"));
    let secured = SecuredEtcd::new(&pki_dir);
    let mut host_flags = secured.flags.clone();
    host_flags.extend(["--tls-reload-interval-ms".to_owned(), "200".to_owned()]);
    let mut cluster = Cluster::start_with(ClusterOptions {
        name: format!("{ns}.main"),
        hosts: 1,
        extra_args: host_flags,
        etcd_tls: Some(secured.server.clone()),
        ..ClusterOptions::default()
    });
    let endpoint = cluster.etcd_endpoint();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let mut flags: Vec<&str> = secured.flags.iter().map(String::as_str).collect();
    flags.extend(["--etcd-tls-reload-interval-ms", "200"]);
    let _operator = start_operator(&server, "op-etcd-tls-a", ns, &endpoint, &flags);
    apply(&server, ns, &broker_cluster_yaml("main", 1));
    apply(&server, ns, &queue_yaml("secured", ""));
    let queue = wait_ready(&server, ns, "queue", "secured").await;

    let mut etcd = secured.connect(&endpoint).await;
    let record = etcd_json(&mut etcd, "/ferry/queues/secured")
        .await
        .expect("the queue's record, written over TLS");
    assert_eq!(record["incarnation"], queue["status"]["incarnation"]);

    // A renewed client certificate (from a CA etcd trusts alone after a restart)
    // is taken from disk by the running operator and host: the next Queue maps.
    secured
        .renew_client_certificate(&pki_dir, cluster.etcd_mut(), Duration::from_secs(1))
        .await;
    apply(&server, ns, &queue_yaml("after-renewal", ""));
    let queue = wait_ready(&server, ns, "queue", "after-renewal").await;
    let mut etcd = secured.connect(&endpoint).await;
    let record = etcd_json(&mut etcd, "/ferry/queues/after-renewal")
        .await
        .expect("the second queue's record, written with the renewed certificate");
    assert_eq!(record["incarnation"], queue["status"]["incarnation"]);
}

#[tokio::test]
async fn an_access_policy_becomes_broker_rules_that_go_with_it() {
    let ns = "op-policy";
    let server = server_with_crds(ns);
    let etcd = ferry_e2e::EtcdServer::start(&server.work_dir().join(format!("{ns}-etcd")));
    let _operator = start_operator(&server, "op-policy-a", ns, &etcd.endpoint(), &[]);
    // The policy names resources by their Kubernetes names; the rules carry the
    // broker's names. (No cluster needed: the Topic need not be mapped yet.)
    apply(
        &server,
        ns,
        "apiVersion: ferry.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: clicks\nspec:\n  \
         topicName: clicks.v2\n  partitions: 1\n",
    );
    let policy = |topics: &str| {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: readers\n\
             spec:\n  grants:\n  - serviceAccounts: [analytics/reader]\n    users: [alice]\n\
             \x20   topics: [{topics}]\n    consumerGroups: [reporting]\n\
             \x20   operations: [consume, join, commit]\n"
        )
    };
    apply(&server, ns, &policy("clicks, gone"));
    let reported = eventually("the policy reports the missing topic", SETTLE, || {
        let policy = must_get(&server, ns, "accesspolicy", "readers");
        match condition(&policy, "Synced") {
            Some(c) if c["reason"] == "ResourcesMissing" => Ok(policy),
            _ => Err(format!("status {}", policy["status"])),
        }
    })
    .await;
    assert_eq!(
        reported["status"]["rules"], 4,
        "2 principals × (topic, group)"
    );
    let mut client = etcd_client(&etcd.endpoint()).await;
    let prefix = format!("/ferry/access/rules/k8s.{ns}.policy.readers.");
    let first = etcd_json(&mut client, &format!("{prefix}0.0"))
        .await
        .expect("the first rule");
    assert_eq!(first["principal"], "system:serviceaccount:analytics:reader");
    assert_eq!(first["resource"]["kind"], "topic");
    assert_eq!(first["resource"]["name"], "clicks.v2");
    assert_eq!(first["operations"], serde_json::json!(["consume"]));
    let group = etcd_json(&mut client, &format!("{prefix}0.1"))
        .await
        .expect("the group rule");
    assert_eq!(group["resource"]["name"], format!("{ns}.reporting"));
    assert_eq!(group["operations"], serde_json::json!(["commit", "join"]));

    // Narrowed: alice's rules go, the status turns Synced.
    let narrowed = "apiVersion: ferry.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: readers\n\
         spec:\n  grants:\n  - serviceAccounts: [analytics/reader]\n    topics: [clicks]\n\
         \x20   operations: [consume]\n";
    apply(&server, ns, narrowed);
    eventually("the narrowed policy synced", SETTLE, || {
        let policy = must_get(&server, ns, "accesspolicy", "readers");
        match condition(&policy, "Synced") {
            Some(c) if c["status"] == "True" && policy["status"]["rules"] == 1 => Ok(()),
            _ => Err(format!("status {}", policy["status"])),
        }
    })
    .await;
    assert!(
        etcd_json(&mut client, &format!("{prefix}0.1"))
            .await
            .is_none(),
        "a rule the policy no longer makes is removed"
    );

    // Deleted: nothing of it remains in etcd.
    server.kubectl_ok([
        "delete",
        "accesspolicy",
        "readers",
        "-n",
        ns,
        "--timeout=60s",
    ]);
    assert!(
        etcd_json(&mut client, &format!("{prefix}0.0"))
            .await
            .is_none(),
        "the policy's rules go with it"
    );
}
