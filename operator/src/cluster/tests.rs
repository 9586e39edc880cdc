//! Reconcile scenarios of the BrokerCluster reconciler over a scripted API server.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{KIND, reconcile};
use crate::crd::BrokerCluster;
use crate::fixtures::{Call, context, event, verify};
use crate::metadata::MemoryMetadata;

const NS: &str = "prod";

fn cluster(hosts: i32) -> BrokerCluster {
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "BrokerCluster",
        "metadata": {"name": "main", "namespace": NS, "uid": "uid-main", "generation": 2},
        // Without TLS here: these scenarios are about hosts; TLS has its own.
        "spec": {"hosts": hosts, "tls": {"enabled": false},
                 "auth": {"serviceAccountTokens": false, "authorization": false},
                 "podTemplate": {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}},
    }))
    .expect("valid BrokerCluster")
}

fn path(group: &str, resource: &str, name: &str) -> String {
    format!("{group}/namespaces/{NS}/{resource}/{name}")
}

fn owned_by_main(body: &Value) {
    let owner = &body["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "BrokerCluster");
    assert_eq!(owner["name"], "main");
    assert_eq!(owner["uid"], "uid-main");
    assert_eq!(owner["controller"], true);
}

fn existing_set(replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "main", "namespace": NS},
        "spec": {"replicas": replicas, "serviceName": "main-hosts",
                 "selector": {"matchLabels": {}}, "template": {},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                     "spec": {"resources": {"requests": {"storage": "10Gi"}}},
                     "status": {"phase": "Pending"}}]},
    })
}

/// The applies of every owned object, with the StatefulSet checked by `check_set`
/// and answered with `ready` ready replicas.
fn applies(check_set: impl Fn(&Value) + Send + 'static, ready: i32) -> Vec<Call> {
    vec![
        Call::new(
            Method::PATCH,
            path("/api/v1", "serviceaccounts", "main-broker"),
        )
        .check(|b| {
            owned_by_main(b);
            assert_eq!(b["automountServiceAccountToken"], false);
        }),
        Call::new(Method::PATCH, path("/api/v1", "configmaps", "main-config")).check(owned_by_main),
        Call::new(Method::PATCH, path("/api/v1", "services", "main-hosts")).check(|b| {
            owned_by_main(b);
            assert_eq!(b["spec"]["clusterIP"], "None");
            assert_eq!(b["spec"]["publishNotReadyAddresses"], true);
        }),
        Call::new(Method::PATCH, path("/api/v1", "services", "main-client")).check(|b| {
            owned_by_main(b);
            assert_eq!(b["spec"]["ports"][0]["port"], 7070);
        }),
        Call::new(Method::PATCH, path("/apis/apps/v1", "statefulsets", "main"))
            .check(move |b| {
                owned_by_main(b);
                check_set(b);
            })
            .echo_with(move |b| {
                let replicas = b["spec"]["replicas"].clone();
                b["status"] = json!({"replicas": replicas, "readyReplicas": ready});
            }),
        Call::new(
            Method::PATCH,
            path("/apis/policy/v1", "poddisruptionbudgets", "main"),
        )
        .check(|b| {
            owned_by_main(b);
            assert_eq!(b["spec"]["maxUnavailable"], 1);
        }),
        Call::new(
            Method::PATCH,
            path(
                "/apis/networking.k8s.io/v1",
                "networkpolicies",
                "main-brokers",
            ),
        )
        .check(owned_by_main),
    ]
}

/// The status patch of a first reconcile, checked by `check`, and the events of its
/// conditions (no host ready yet, the objects applied).
fn first_status(check: impl Fn(&Value) + Send + 'static) -> [Call; 3] {
    [
        Call::new(
            Method::PATCH,
            path("/apis/ferry.dev/v1alpha1", "brokerclusters", "main") + "/status",
        )
        .check(check),
        event(NS, "HostsNotReady"),
        event(NS, "Applied"),
    ]
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("condition {type_} in {status}"))
}

#[tokio::test]
async fn create_applies_every_owned_object_then_reports_status() {
    let (ctx, server) = context(MemoryMetadata::new());
    let mut calls =
        vec![Call::new(Method::GET, path("/apis/apps/v1", "statefulsets", "main")).not_found()];
    calls.extend(applies(
        |set| {
            let spec = &set["spec"];
            assert_eq!(spec["replicas"], 3);
            assert_eq!(spec["serviceName"], "main-hosts");
            assert_eq!(spec["podManagementPolicy"], "OrderedReady");
            assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
            assert_eq!(
                spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
                "10Gi"
            );
            let pod = &spec["template"]["spec"];
            assert_eq!(pod["tolerations"][0]["key"], "dedicated");
            // Spread by default: preferably one host per node, evenly over zones.
            let anti = &pod["affinity"]["podAntiAffinity"]
                ["preferredDuringSchedulingIgnoredDuringExecution"][0];
            assert_eq!(anti["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
            let spread = &pod["topologySpreadConstraints"][0];
            assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
            assert_eq!(spread["whenUnsatisfiable"], "ScheduleAnyway");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            let broker = &pod["containers"][0];
            let args: Vec<&str> = broker["args"]
                .as_array()
                .expect("args")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            // The image's entrypoint is the operator: the broker container names
            // its binary.
            assert_eq!(
                broker["command"],
                serde_json::json!(["/usr/local/bin/ferry-broker"])
            );
            assert_eq!(&args[..3], ["serve", "--cluster", "prod.main"]);
            assert!(args.contains(&"$(FERRY_HOST_ID).main-hosts.prod.svc.cluster.local:7070"));
            assert_eq!(broker["env"][0]["name"], "FERRY_HOST_ID");
            assert_eq!(broker["env"][1]["name"], "FERRY_POD_LABELS_FILE");
            assert_eq!(broker["env"][1]["value"], "/etc/ferry/podinfo/labels");
            assert_eq!(broker["volumeMounts"][1]["mountPath"], "/etc/ferry/podinfo");
            let podinfo = &set["spec"]["template"]["spec"]["volumes"][0];
            assert_eq!(podinfo["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"], "metadata.labels");
            let claims = &set["spec"]["persistentVolumeClaimRetentionPolicy"];
            assert_eq!(claims["whenScaled"], "Delete", "a drained host's claim goes");
            assert_eq!(claims["whenDeleted"], "Retain");
            assert_eq!(
                broker["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
                "metadata.name"
            );
            // HTTP probes on the metrics port: the kubelet's gRPC probes cannot
            // speak TLS.
            assert_eq!(broker["readinessProbe"]["httpGet"]["port"], 7071);
            assert_eq!(broker["readinessProbe"]["httpGet"]["path"], "/ready");
            assert_eq!(broker["livenessProbe"]["httpGet"]["port"], 7071);
            assert_eq!(broker["livenessProbe"]["httpGet"]["path"], "/health");
            assert!(args.contains(&"--insecure"), "no TLS: insecure on purpose");
            assert_eq!(broker["securityContext"]["allowPrivilegeEscalation"], false);
            assert_eq!(broker["securityContext"]["readOnlyRootFilesystem"], true);
        },
        0,
    ));
    calls.push(
        Call::new(
            Method::PATCH,
            path("/apis/ferry.dev/v1alpha1", "brokerclusters", "main") + "/status",
        )
        .check(|b| {
            let status = &b["status"];
            assert_eq!(status["address"], "main-client.prod.svc:7070");
            assert_eq!(status["etcdName"], "prod.main");
            assert_eq!(status["hosts"], 3);
            assert_eq!(status["readyHosts"], 0);
            assert_eq!(status["observedGeneration"], 2);
            assert_eq!(condition(b, "Ready")["reason"], "HostsNotReady");
            assert_eq!(condition(b, "Synced")["status"], "True");
            assert_eq!(condition(b, "Synced")["observedGeneration"], 2);
        }),
    );
    calls.push(event(NS, "HostsNotReady"));
    calls.push(event(NS, "Applied"));
    let server = server.run(calls);
    reconcile(Arc::new(cluster(3)), Arc::clone(&ctx))
        .await
        .expect("reconciled");
    verify(server).await;
    let metrics = ctx.metrics.encode().expect("metrics");
    assert!(metrics.contains(&format!(
        "ferry_operator_reconciles_total{{kind=\"{KIND}\"}} 1"
    )));
}

#[tokio::test]
async fn ready_when_every_host_is_ready_and_registered() {
    let metadata = MemoryMetadata::new();
    for host in 0..3 {
        metadata.set(
            &format!("/ferry/clusters/prod.main/hosts/main-{host}"),
            "{}",
        );
    }
    let (ctx, server) = context(metadata);
    let mut calls = vec![
        Call::new(Method::GET, path("/apis/apps/v1", "statefulsets", "main"))
            .reply(http::StatusCode::OK, existing_set(3)),
    ];
    calls.extend(applies(
        |set| {
            // The volume claim templates are immutable: the existing ones are kept.
            assert!(
                set["spec"]["volumeClaimTemplates"][0]
                    .get("status")
                    .is_none()
            );
        },
        3,
    ));
    calls.push(
        Call::new(
            Method::PATCH,
            path("/apis/ferry.dev/v1alpha1", "brokerclusters", "main") + "/status",
        )
        .check(|b| {
            assert_eq!(b["status"]["readyHosts"], 3);
            assert_eq!(b["status"]["registeredHosts"], 3);
            assert_eq!(b["status"]["etcdRegistered"], true);
            assert_eq!(condition(b, "Ready")["status"], "True");
        }),
    );
    calls.push(event(NS, "HostsReady"));
    calls.push(event(NS, "Applied"));
    let server = server.run(calls);
    reconcile(Arc::new(cluster(3)), ctx)
        .await
        .expect("reconciled");
    verify(server).await;
}

/// A reconcile of a cluster of 3 hosts whose spec asks for `wanted`: the StatefulSet
/// is applied with `replicas`, the Synced condition checked by `check_synced`, and
/// the events are HostsNotReady (nothing registered) and `reason`.
async fn scale_from_three(
    metadata: MemoryMetadata,
    wanted: i32,
    replicas: i32,
    check_synced: impl Fn(&Value) + Send + 'static,
    reason: &'static str,
) {
    let (ctx, server) = context(metadata);
    let mut calls = vec![
        Call::new(Method::GET, path("/apis/apps/v1", "statefulsets", "main"))
            .reply(http::StatusCode::OK, existing_set(3)),
    ];
    calls.extend(applies(
        move |set| assert_eq!(set["spec"]["replicas"], replicas),
        replicas,
    ));
    calls.push(
        Call::new(
            Method::PATCH,
            path("/apis/ferry.dev/v1alpha1", "brokerclusters", "main") + "/status",
        )
        .check(move |b| check_synced(condition(b, "Synced"))),
    );
    calls.push(event(NS, "HostsNotReady"));
    calls.push(event(NS, reason));
    let server = server.run(calls);
    reconcile(Arc::new(cluster(wanted)), ctx)
        .await
        .expect("reconciled");
    verify(server).await;
}

fn applied(synced: &Value) {
    assert_eq!(synced["reason"], "Applied");
}

#[tokio::test]
async fn scale_down_drains_the_leaving_hosts_and_waits_while_they_hold_replicas() {
    let metadata = MemoryMetadata::new();
    metadata.set(
        "/ferry/clusters/prod.main/partitions/topics/orders/0",
        r#"{"replicas":["main-0","main-2"],"leader":"main-0","leader_epoch":3,"isr":["main-0"]}"#,
    );
    metadata.set(
        "/ferry/topics/orders",
        r#"{"name":"orders","settings":{"replication_factor":2},"cluster":"prod.main"}"#,
    );
    // Kept hosts lose their drain keys; an administrator's key for another host stays.
    metadata.set("/ferry/clusters/prod.main/draining/main-1", "{}");
    metadata.set("/ferry/clusters/prod.main/draining/spare", "{}");
    scale_from_three(
        metadata.clone(),
        2,
        3,
        |synced| {
            assert_eq!(synced["status"], "False");
            assert_eq!(synced["reason"], "Draining");
            assert!(
                synced["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("main-2"))
            );
        },
        "Draining",
    )
    .await;
    assert_eq!(
        metadata.keys(),
        [
            "/ferry/clusters/prod.main/draining/main-2",
            "/ferry/clusters/prod.main/draining/spare",
            "/ferry/clusters/prod.main/partitions/topics/orders/0",
            "/ferry/topics/orders",
        ],
        "main-2 is asked to leave; main-1 stays"
    );
}

#[tokio::test]
async fn scale_down_below_a_replication_factor_is_refused_and_drains_nothing() {
    let metadata = MemoryMetadata::new();
    metadata.set(
        "/ferry/queues/payments",
        r#"{"name":"payments","settings":{"replication_factor":3},"cluster":"prod.main"}"#,
    );
    // Another cluster's record does not count.
    metadata.set(
        "/ferry/topics/big",
        r#"{"name":"big","settings":{"replication_factor":5},"cluster":"other.main"}"#,
    );
    scale_from_three(
        metadata.clone(),
        2,
        3,
        |synced| {
            assert_eq!(synced["status"], "False");
            assert_eq!(synced["reason"], "ScaleDownRefused");
            assert!(
                synced["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("keeps 3 replicas"))
            );
        },
        "ScaleDownRefused",
    )
    .await;
    assert!(
        !metadata.keys().iter().any(|k| k.contains("/draining/")),
        "nothing drains: {:?}",
        metadata.keys()
    );
}

#[tokio::test]
async fn scale_down_proceeds_once_leaving_hosts_hold_nothing() {
    let metadata = MemoryMetadata::new();
    metadata.set(
        "/ferry/clusters/prod.main/partitions/topics/orders/0",
        r#"{"replicas":["main-0","main-1"],"leader":"main-0","leader_epoch":3,"isr":["main-0","main-1"]}"#,
    );
    // Another cluster's partition on a host of the same name does not count.
    metadata.set(
        "/ferry/clusters/other.main/partitions/topics/orders/0",
        r#"{"replicas":["main-2"],"leader":"main-2","leader_epoch":1,"isr":["main-2"]}"#,
    );
    scale_from_three(metadata, 2, 2, applied, "Applied").await;
}

#[tokio::test]
async fn scale_up_takes_back_the_drain_key_of_a_returning_host() {
    let metadata = MemoryMetadata::new();
    // Left by an earlier scale-down from 4 to 3.
    metadata.set("/ferry/clusters/prod.main/draining/main-3", "{}");
    scale_from_three(metadata.clone(), 4, 4, applied, "Applied").await;
    assert!(metadata.keys().is_empty(), "{:?}", metadata.keys());
}

#[tokio::test]
async fn a_paused_cluster_applies_nothing_and_says_so() {
    let (ctx, server) = context(MemoryMetadata::new());
    let mut paused = cluster(5);
    paused
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("ferry.dev/paused".to_owned(), "true".to_owned());
    // Not even the StatefulSet is read: only the status and an event.
    let server = server.run(vec![
        Call::new(
            Method::PATCH,
            path("/apis/ferry.dev/v1alpha1", "brokerclusters", "main") + "/status",
        )
        .check(|b| {
            assert_eq!(condition(b, "Synced")["status"], "False");
            assert_eq!(condition(b, "Synced")["reason"], "Paused");
        }),
        event(NS, "Paused"),
    ]);
    reconcile(Arc::new(paused), Arc::clone(&ctx))
        .await
        .expect("reconciled");
    verify(server).await;
}

/// A cluster whose brokers check ServiceAccount tokens and enforce access rules.
fn secured_cluster() -> BrokerCluster {
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "BrokerCluster",
        "metadata": {"name": "main", "namespace": NS, "uid": "uid-main", "generation": 2},
        "spec": {"hosts": 3, "tls": {"enabled": false},
                 "auth": {"serviceAccountTokens": true, "authorization": true,
                 "adminServiceAccounts": ["ops"],
                 "superusers": ["system:serviceaccount:ferry-system:admin"]}},
    }))
    .expect("valid BrokerCluster")
}

#[tokio::test]
async fn service_account_tokens_publish_the_issuer_keys_to_the_hosts() {
    let (ctx, server) = context(MemoryMetadata::new());
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]});
    let mut calls =
        vec![Call::new(Method::GET, path("/apis/apps/v1", "statefulsets", "main")).not_found()];
    let mut applied = applies(
        |set| {
            let pod = &set["spec"]["template"]["spec"];
            let volume = pod["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == "token-keys"))
                .unwrap_or_else(|| panic!("a token-keys volume in {pod}"));
            assert_eq!(volume["configMap"]["name"], "main-token-keys");
            let mounts = &pod["containers"][0]["volumeMounts"];
            assert!(
                mounts
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["mountPath"] == "/etc/ferry/token-keys")),
                "{mounts}"
            );
        },
        0,
    );
    let service_account = applied.remove(0);
    calls.push(service_account);
    calls.push(
        Call::new(Method::GET, "/.well-known/openid-configuration").reply(
            StatusCode::OK,
            json!({"issuer": "https://kubernetes.default.svc"}),
        ),
    );
    calls.push(Call::new(Method::GET, "/openid/v1/jwks").reply(StatusCode::OK, jwks.clone()));
    calls.push(
        Call::new(
            Method::PATCH,
            path("/api/v1", "configmaps", "main-token-keys"),
        )
        .check(move |b| {
            owned_by_main(b);
            let published: Value =
                serde_json::from_str(b["data"]["jwks.json"].as_str().expect("the key set"))
                    .expect("JSON");
            assert_eq!(published, jwks);
        }),
    );
    calls.extend(applied);
    calls.extend(first_status(|_| {}));
    let server = server.run(calls);
    reconcile(Arc::new(secured_cluster()), Arc::clone(&ctx))
        .await
        .expect("reconciled");
    verify(server).await;
}

#[test]
fn the_hosts_environment_turns_on_token_checks_and_access_rules() {
    let env = super::resources::host_environment(
        &secured_cluster(),
        Some("https://kubernetes.default.svc"),
    );
    assert_eq!(
        env.get("FERRY_AUTH_JWKS_FILE").map(String::as_str),
        Some("/etc/ferry/token-keys/jwks.json")
    );
    assert_eq!(
        env.get("FERRY_AUTH_TOKEN_ISSUER").map(String::as_str),
        Some("https://kubernetes.default.svc")
    );
    assert_eq!(
        env.get("FERRY_AUTHORIZATION").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        env.get("FERRY_SUPERUSERS").map(String::as_str),
        Some("system:serviceaccount:prod:ops,system:serviceaccount:ferry-system:admin")
    );
    let plain = super::resources::host_environment(&cluster(3), None);
    assert!(
        plain.keys().all(|key| !key.starts_with("FERRY_AUTH")),
        "{plain:?}"
    );
}

#[test]
fn a_tracing_endpoint_becomes_the_standard_otel_variables() {
    let mut traced = cluster(3);
    traced.spec.tracing.otlp_endpoint = Some("http://collector.monitoring:4317".to_owned());
    traced.spec.tracing.sampling_ratio = Some(0.25);
    let env = super::resources::host_environment(&traced, None);
    let get = |key: &str| env.get(key).map(String::as_str);
    assert_eq!(
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://collector.monitoring:4317")
    );
    assert_eq!(get("OTEL_TRACES_SAMPLER"), Some("parentbased_traceidratio"));
    assert_eq!(get("OTEL_TRACES_SAMPLER_ARG"), Some("0.25"));
    assert_eq!(
        get("OTEL_RESOURCE_ATTRIBUTES"),
        Some("k8s.namespace.name=prod,ferry.cluster=main")
    );
    let plain = super::resources::host_environment(&cluster(3), None);
    assert!(
        plain.keys().all(|key| !key.starts_with("OTEL_")),
        "{plain:?}"
    );
    // Unset, the field stays out of the object (no change to existing clusters).
    let spec = serde_json::to_value(&cluster(3).spec).expect("JSON");
    assert!(spec.get("tracing").is_none(), "{spec}");
}

/// A cluster with the defaults: TLS, ServiceAccount tokens and access rules on.
fn tls_cluster() -> BrokerCluster {
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "BrokerCluster",
        "metadata": {"name": "main", "namespace": NS, "uid": "uid-main", "generation": 2},
        "spec": {"hosts": 3},
    }))
    .expect("valid BrokerCluster")
}

/// The calls of a reconcile of [`tls_cluster`] that issues nothing, with
/// `certificates` (the calls about certificates) after the ServiceAccount.
fn tls_reconcile(certificates: Vec<Call>) -> Vec<Call> {
    let mut calls =
        vec![Call::new(Method::GET, path("/apis/apps/v1", "statefulsets", "main")).not_found()];
    let mut applied = applies(
        |set| {
            let pod = &set["spec"]["template"]["spec"];
            let broker = &pod["containers"][0];
            for (volume, secret, dir) in [
                ("tls", "main-tls", "/etc/ferry/tls"),
                ("peer-tls", "main-peer", "/etc/ferry/peer"),
            ] {
                let found = pod["volumes"]
                    .as_array()
                    .and_then(|v| v.iter().find(|v| v["name"] == volume))
                    .unwrap_or_else(|| panic!("a {volume} volume in {pod}"));
                assert_eq!(found["secret"]["secretName"], secret);
                assert_eq!(found["secret"]["defaultMode"], 0o440);
                assert!(
                    broker["volumeMounts"].as_array().is_some_and(|m| m
                        .iter()
                        .any(|m| m["name"] == volume
                            && m["mountPath"] == dir
                            && m["readOnly"] == true)),
                    "{broker}"
                );
            }
            // TLS and authenticated callers: the brokers listen without --insecure.
            assert!(
                broker["args"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|a| a != "--insecure")),
                "{broker}"
            );
        },
        0,
    );
    calls.push(applied.remove(0));
    calls.push(
        Call::new(Method::GET, "/.well-known/openid-configuration").reply(
            StatusCode::OK,
            json!({"issuer": "https://kubernetes.default.svc"}),
        ),
    );
    calls
        .push(Call::new(Method::GET, "/openid/v1/jwks").reply(StatusCode::OK, json!({"keys": []})));
    calls.push(Call::new(
        Method::PATCH,
        path("/api/v1", "configmaps", "main-token-keys"),
    ));
    calls.extend(certificates);
    let config = applied.remove(0);
    calls.push(config.check(|b| {
        let env = &b["data"];
        assert_eq!(env["FERRY_TLS_CERT_FILE"], "/etc/ferry/tls/tls.crt");
        assert_eq!(env["FERRY_TLS_KEY_FILE"], "/etc/ferry/tls/tls.key");
        assert_eq!(env["FERRY_PEER_TLS_CERT_FILE"], "/etc/ferry/peer/tls.crt");
        assert_eq!(env["FERRY_PEER_TLS_KEY_FILE"], "/etc/ferry/peer/tls.key");
        assert_eq!(env["FERRY_PEER_TLS_CA_FILE"], "/etc/ferry/peer/ca.crt");
    }));
    calls.extend(applied);
    calls.extend(first_status(|b| {
        assert_eq!(b["status"]["caConfigMap"], "main-ca-cert");
    }));
    calls
}

/// What a PATCH of a Secret sent, kept to answer the next reconcile's GET.
type Kept = Arc<std::sync::Mutex<Option<Value>>>;

fn keep(kept: &Kept) -> impl Fn(&Value) + Send + 'static {
    let kept = Arc::clone(kept);
    move |body| {
        owned_by_main(body);
        *kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(body.clone());
    }
}

fn kept(kept: &Kept) -> Value {
    kept.lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .expect("written by the first reconcile")
}

#[tokio::test]
async fn tls_clusters_get_a_ca_and_host_certificates_once_and_mount_them() {
    let (ca, tls, peer): (Kept, Kept, Kept) = Default::default();
    let secret = |name: &str| path("/api/v1", "secrets", name);
    let (ctx, server) = context(MemoryMetadata::new());
    let ca_for_clients = Arc::clone(&ca);
    let server = server.run(tls_reconcile(vec![
        Call::new(Method::GET, secret("main-ca")).not_found(),
        Call::new(Method::PATCH, secret("main-ca")).check(keep(&ca)),
        Call::new(Method::PATCH, path("/api/v1", "configmaps", "main-ca-cert")).check(move |b| {
            owned_by_main(b);
            let stored = kept(&ca_for_clients);
            let pem = b["data"]["ca.crt"].as_str().expect("the CA certificate");
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
            // The ConfigMap has the certificate only, never the key.
            assert!(b["data"].get("ca.key").is_none());
            assert!(stored["data"]["ca.key"].is_string());
        }),
        Call::new(Method::GET, secret("main-tls")).not_found(),
        Call::new(Method::PATCH, secret("main-tls")).check(keep(&tls)),
        Call::new(Method::GET, secret("main-peer")).not_found(),
        Call::new(Method::PATCH, secret("main-peer")).check(keep(&peer)),
        event(NS, "CertificateIssued"),
    ]));
    reconcile(Arc::new(tls_cluster()), Arc::clone(&ctx))
        .await
        .expect("reconciled");
    verify(server).await;
    for issued in [kept(&tls), kept(&peer)] {
        assert_eq!(issued["type"], "kubernetes.io/tls");
        assert_eq!(issued["data"]["ca.crt"], kept(&ca)["data"]["ca.crt"]);
        let annotations = &issued["metadata"]["annotations"];
        assert!(annotations["ferry.dev/renew-after"].is_string(), "{issued}");
        assert!(
            annotations["ferry.dev/dns-names"]
                .as_str()
                .is_some_and(|n| n.contains("*.main-hosts.prod.svc.cluster.local")),
            "{issued}"
        );
    }

    // The next reconcile finds them current: it reads them and writes none.
    let (ctx, server) = context(MemoryMetadata::new());
    let server = server.run(tls_reconcile(vec![
        Call::new(Method::GET, secret("main-ca")).reply(StatusCode::OK, kept(&ca)),
        Call::new(Method::PATCH, path("/api/v1", "configmaps", "main-ca-cert")),
        Call::new(Method::GET, secret("main-tls")).reply(StatusCode::OK, kept(&tls)),
        Call::new(Method::GET, secret("main-peer")).reply(StatusCode::OK, kept(&peer)),
    ]));
    reconcile(Arc::new(tls_cluster()), Arc::clone(&ctx))
        .await
        .expect("reconciled");
    verify(server).await;
}

#[tokio::test]
async fn a_network_policy_turned_off_is_removed() {
    let (ctx, server) = context(MemoryMetadata::new());
    let mut calls =
        vec![Call::new(Method::GET, path("/apis/apps/v1", "statefulsets", "main")).not_found()];
    let mut applied = applies(|_| {}, 0);
    applied.pop();
    calls.extend(applied);
    calls.push(Call::new(
        Method::DELETE,
        path(
            "/apis/networking.k8s.io/v1",
            "networkpolicies",
            "main-brokers",
        ),
    ));
    calls.extend(first_status(|_| {}));
    let server = server.run(calls);
    let mut open = cluster(3);
    open.spec.network_policy.enabled = false;
    reconcile(Arc::new(open), Arc::clone(&ctx))
        .await
        .expect("reconciled");
    verify(server).await;
}

#[test]
fn hosts_on_the_operators_tls_etcd_get_its_client_files() {
    use crate::context::{EtcdClientFiles, Settings};
    let settings = Settings {
        etcd_endpoints: vec!["https://etcd:2379".to_owned()],
        etcd_client_files: Some(EtcdClientFiles {
            ca: Some("/etc/ferry/etcd/ca.crt".into()),
            identity: Some((
                "/etc/ferry/etcd/tls.crt".into(),
                "/etc/ferry/etcd/tls.key".into(),
            )),
        }),
        ..Settings::default()
    };
    let names = super::resources::ClusterNames {
        name: "main".into(),
        namespace: NS.into(),
        etcd_name: "prod.main".into(),
    };
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference::default();
    let set = |cluster: &BrokerCluster| {
        serde_json::to_value(super::resources::stateful_set(
            &names, &owner, cluster, &settings, 3, None,
        ))
        .expect("JSON")
    };
    let on_shared = set(&cluster(3));
    let pod = &on_shared["spec"]["template"]["spec"];
    let env = pod["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (name, value) in [
        ("FERRY_ETCD_CA_FILE", "/etc/ferry/etcd/ca.crt"),
        ("FERRY_ETCD_CERT_FILE", "/etc/ferry/etcd/tls.crt"),
        ("FERRY_ETCD_KEY_FILE", "/etc/ferry/etcd/tls.key"),
    ] {
        assert!(
            env.iter().any(|e| e["name"] == name && e["value"] == value),
            "{name} in {env:?}"
        );
    }
    assert!(
        pod["volumes"].as_array().is_some_and(|v| v
            .iter()
            .any(|v| v["secret"]["secretName"] == "main-etcd-client")),
        "{pod}"
    );
    // A cluster with an etcd of its own gets none of the operator's files.
    let mut own = cluster(3);
    own.spec.etcd = Some(crate::crd::EtcdSpec {
        endpoints: vec!["http://other:2379".to_owned()],
    });
    let separate = set(&own);
    let env = &separate["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .is_some_and(|e| e.iter().all(|e| e["name"] != "FERRY_ETCD_CA_FILE")),
        "{env}"
    );
}
