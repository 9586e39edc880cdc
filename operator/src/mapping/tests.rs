//! Reconcile scenarios of the Topic and Queue reconciler over a scripted API server
//! and an in-memory metadata store.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{FINALIZER, reconcile};
use crate::crd::{Queue, Topic};
use crate::error::Error;
use crate::fixtures::{Call, context, event, verify};
use crate::metadata::MemoryMetadata;
use crate::records::digest;

const NS: &str = "prod";
const QUEUE_KEY: &str = "/ferry/queues/orders";
/// The rule letting the namespace's ServiceAccounts use the queue.
const QUEUE_RULE_KEY: &str = "/ferry/access/rules/k8s.prod.queue.orders";
/// The rule letting them use consumer groups named `prod.…`.
const GROUPS_RULE_KEY: &str = "/ferry/access/rules/k8s.prod.groups";

fn queue(spec: Value, status: Value, deleting: bool) -> Queue {
    let mut metadata = json!({"name": "orders", "namespace": NS, "uid": "uid-q", "generation": 1,
                              "finalizers": [FINALIZER]});
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Queue",
        "metadata": metadata, "spec": spec, "status": status,
    }))
    .expect("valid Queue")
}

/// The queue as the server answers a JSON patch of it.
fn stored_queue() -> Value {
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Queue",
           "metadata": {"name": "orders", "namespace": NS}, "spec": {}})
}

fn broker_cluster(name: &str, hosts: i32) -> Value {
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "BrokerCluster",
           "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}")},
           "spec": {"hosts": hosts}})
}

fn clusters_path() -> String {
    format!("/apis/ferry.dev/v1alpha1/namespaces/{NS}/brokerclusters")
}

fn get_cluster(name: &str, hosts: i32) -> Call {
    Call::new(Method::GET, format!("{}/{name}", clusters_path()))
        .reply(StatusCode::OK, broker_cluster(name, hosts))
}

fn status_path(plural: &str, name: &str) -> String {
    format!("/apis/ferry.dev/v1alpha1/namespaces/{NS}/{plural}/{name}/status")
}

fn condition<'a>(body: &'a Value, type_: &str) -> &'a Value {
    body["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("condition {type_} in {body}"))
}

/// A record as this operator writes it for `orders` on `prod.main`.
fn record(incarnation: u64, max_receive_count: u32) -> Vec<u8> {
    let mut settings = json!({
        "fifo": false, "durability": "fsync", "flush_interval_ms": 1000,
        "visibility_timeout_ms": 30000, "delay_ms": 0, "receive_wait_ms": 20000,
        "retention_ms": 345_600_000u64, "max_message_bytes": 262_144, "max_receive_count": 0,
        "dead_letter_queue": null, "dedup_window_ms": 300_000, "content_based_dedup": false,
        "max_messages": 10_000_000, "replication_factor": 1, "replication": "sync"});
    settings["max_receive_count"] = json!(max_receive_count);
    serde_json::to_vec(
        &json!({"name": "orders", "settings": settings, "created_at_ms": 5,
                               "incarnation": incarnation, "cluster": "prod.main"}),
    )
    .expect("json")
}

fn mapped_status(incarnation: u64, bytes: &[u8]) -> Value {
    json!({"cluster": "main", "incarnation": incarnation, "recordDigest": digest(bytes)})
}

#[tokio::test]
async fn the_finalizer_is_added_before_anything_else() {
    let (ctx, server) = context(MemoryMetadata::new());
    let mut fresh = queue(json!({"clusterRef": "main"}), json!({}), false);
    fresh.metadata.finalizers = None;
    let server = server.run(vec![
        Call::new(
            Method::PATCH,
            format!("/apis/ferry.dev/v1alpha1/namespaces/{NS}/queues/orders"),
        )
        .check(|b| {
            let ops = b.as_array().expect("a JSON patch");
            assert!(
                ops.iter()
                    .any(|op| op["op"] == "add" && op["value"] == json!([FINALIZER]))
            );
        })
        .reply(StatusCode::OK, stored_queue()),
    ]);
    reconcile(Arc::new(fresh), ctx.clone())
        .await
        .expect("reconciled");
    verify(server).await;
    assert!(
        ctx.metadata.keys().is_empty(),
        "nothing written before the finalizer"
    );
}

#[tokio::test]
async fn a_new_queue_claims_an_incarnation_then_writes_its_record() {
    let metadata = MemoryMetadata::new();
    let (ctx, server) = context(metadata.clone());
    let server = server.run(vec![
        get_cluster("main", 3),
        Call::new(Method::PATCH, status_path("queues", "orders")).check(|b| {
            assert!(b["status"]["incarnation"].is_u64(), "claimed first: {b}");
            assert_eq!(b["status"]["cluster"], "main");
        }),
        event(NS, "RecordCreated"),
        Call::new(Method::PATCH, status_path("queues", "orders")).check(|b| {
            let status = &b["status"];
            assert_eq!(status["address"], "main-client.prod.svc:7070");
            assert_eq!(status["brokerName"], "orders");
            assert!(status["recordDigest"].is_string());
            assert!(
                status.get("depth").is_none(),
                "depth unknown until published"
            );
            assert_eq!(condition(b, "Synced")["reason"], "Mapped");
            assert_eq!(condition(b, "Ready")["reason"], "LeadersMissing");
            assert_eq!(condition(b, "Ready")["observedGeneration"], 1);
        }),
        event(NS, "Mapped"),
        event(NS, "LeadersMissing"),
    ]);
    let spec = json!({"clusterRef": "main", "maxReceiveCount": 5, "deadLetterQueue": "orders-dlq"});
    reconcile(Arc::new(queue(spec, json!({}), false)), ctx)
        .await
        .expect("reconciled");
    verify(server).await;
    let written: Value =
        serde_json::from_slice(&metadata.value(QUEUE_KEY).expect("record")).expect("json");
    assert_eq!(written["cluster"], "prod.main");
    assert_eq!(written["settings"]["max_receive_count"], 5);
    assert_eq!(written["settings"]["dead_letter_queue"], "orders-dlq");
    assert_eq!(written["settings"]["visibility_timeout_ms"], 30000);
    let rule: Value =
        serde_json::from_slice(&metadata.value(QUEUE_RULE_KEY).expect("a namespace rule"))
            .expect("json");
    assert_eq!(rule["principal"], "group:system:serviceaccounts:prod");
    assert_eq!(rule["resource"]["name"], "orders");
    assert_eq!(
        rule["operations"],
        json!(["send", "receive", "ack", "describe"])
    );
    assert!(
        metadata.value(GROUPS_RULE_KEY).is_some(),
        "the namespace's group rule"
    );
}

#[tokio::test]
async fn a_record_someone_else_created_is_never_overwritten() {
    let metadata = MemoryMetadata::new();
    let theirs = record(77, 0);
    metadata.set(QUEUE_KEY, theirs.clone());
    let (ctx, server) = context(metadata.clone());
    let server = server.run(vec![
        get_cluster("main", 3),
        // The cached object could predate a claim of its own: asked afresh.
        Call::new(
            Method::GET,
            format!("/apis/ferry.dev/v1alpha1/namespaces/{NS}/queues/orders"),
        )
        .reply(StatusCode::OK, stored_queue()),
        Call::new(Method::PATCH, status_path("queues", "orders")).check(|b| {
            let synced = condition(b, "Synced");
            assert_eq!(
                (synced["status"].as_str(), synced["reason"].as_str()),
                (Some("False"), Some("NameTaken"))
            );
            assert_eq!(condition(b, "Ready")["reason"], "NotMapped");
        }),
        event(NS, "NameTaken"),
        event(NS, "NotMapped"),
    ]);
    reconcile(
        Arc::new(queue(
            json!({"clusterRef": "main"}),
            json!({"cluster": "main"}),
            false,
        )),
        ctx,
    )
    .await
    .expect("reconciled");
    verify(server).await;
    assert_eq!(metadata.value(QUEUE_KEY), Some(theirs));
}

#[tokio::test]
async fn a_record_removed_out_of_band_is_written_again_with_a_new_incarnation() {
    let metadata = MemoryMetadata::new();
    let (ctx, server) = context(metadata.clone());
    let server = server.run(vec![
        get_cluster("main", 3),
        Call::new(Method::PATCH, status_path("queues", "orders"))
            .check(|b| assert_ne!(b["status"]["incarnation"], 9, "a new incarnation")),
        event(NS, "RecordRestored"),
        Call::new(Method::PATCH, status_path("queues", "orders")),
        event(NS, "Mapped"),
        event(NS, "LeadersMissing"),
    ]);
    let status = mapped_status(9, &record(9, 0));
    reconcile(
        Arc::new(queue(json!({"clusterRef": "main"}), status, false)),
        ctx,
    )
    .await
    .expect("reconciled");
    verify(server).await;
    let written: Value =
        serde_json::from_slice(&metadata.value(QUEUE_KEY).expect("restored")).expect("json");
    assert_ne!(written["incarnation"], 9);
}

#[tokio::test]
async fn a_record_changed_out_of_band_is_put_back() {
    let metadata = MemoryMetadata::new();
    metadata.set(QUEUE_KEY, record(9, 0));
    let written = record(9, 0);
    // Someone raises max_receive_count behind the operator's back.
    metadata.set(QUEUE_KEY, record(9, 3));
    let (ctx, server) = context(metadata.clone());
    let server = server.run(vec![
        get_cluster("main", 3),
        event(NS, "RecordRepaired"),
        Call::new(Method::PATCH, status_path("queues", "orders"))
            .check(|b| assert_eq!(condition(b, "Synced")["reason"], "Mapped")),
        event(NS, "Mapped"),
        event(NS, "LeadersMissing"),
    ]);
    let status = mapped_status(9, &written);
    reconcile(
        Arc::new(queue(json!({"clusterRef": "main"}), status, false)),
        ctx,
    )
    .await
    .expect("reconciled");
    verify(server).await;
    let now: Value =
        serde_json::from_slice(&metadata.value(QUEUE_KEY).expect("record")).expect("json");
    assert_eq!(now["settings"]["max_receive_count"], 0);
    assert_eq!(now["incarnation"], 9);
    assert_eq!(now["created_at_ms"], 5, "the creation time is kept");
}

#[tokio::test]
async fn a_spec_change_a_live_queue_cannot_follow_is_reported_not_written() {
    let metadata = MemoryMetadata::new();
    let written = record(9, 0);
    metadata.set(QUEUE_KEY, written.clone());
    metadata.set(
        "/ferry/clusters/prod.main/partitions/queues/orders/0",
        r#"{"replicas":["main-0"],"leader":"main-0","leader_epoch":1,"isr":["main-0"]}"#,
    );
    metadata.set(
        "/ferry/clusters/prod.main/observed/queues/orders",
        r#"{"depth":42,"in_flight":2,"updated_at_ms":100}"#,
    );
    let (ctx, server) = context(metadata.clone());
    let server = server.run(vec![
        get_cluster("main", 3),
        Call::new(Method::PATCH, status_path("queues", "orders")).check(|b| {
            let synced = condition(b, "Synced");
            assert_eq!(synced["reason"], "SpecChangeNotApplied");
            assert!(
                synced["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("visibility_timeout_ms=30000"))
            );
            assert_eq!(condition(b, "Ready")["status"], "True");
            assert_eq!(b["status"]["depth"], 42);
        }),
        event(NS, "SpecChangeNotApplied"),
        event(NS, "LeadersElected"),
    ]);
    let spec = json!({"clusterRef": "main", "visibilityTimeoutMs": 60000});
    reconcile(
        Arc::new(queue(spec, mapped_status(9, &written), false)),
        ctx,
    )
    .await
    .expect("reconciled");
    verify(server).await;
    assert_eq!(metadata.value(QUEUE_KEY), Some(written));
}

#[tokio::test]
async fn a_replication_factor_above_the_hosts_scales_the_cluster_up() {
    let (ctx, server) = context(MemoryMetadata::new());
    let server = server.run(vec![
        get_cluster("main", 1),
        Call::new(Method::PATCH, format!("{}/main", clusters_path()))
            .check(|b| assert_eq!(b, &json!({"spec": {"hosts": 3}})))
            .reply(StatusCode::OK, broker_cluster("main", 3)),
        event(NS, "ClusterScaledUp"),
        Call::new(Method::PATCH, status_path("queues", "orders")),
        event(NS, "RecordCreated"),
        Call::new(Method::PATCH, status_path("queues", "orders")),
        event(NS, "Mapped"),
        event(NS, "LeadersMissing"),
    ]);
    let spec = json!({"clusterRef": "main", "replicationFactor": 3});
    reconcile(Arc::new(queue(spec, json!({}), false)), ctx)
        .await
        .expect("reconciled");
    verify(server).await;
}

#[tokio::test]
async fn without_a_reference_the_least_loaded_cluster_is_chosen() {
    let metadata = MemoryMetadata::new();
    metadata.set("/ferry/topics/a", r#"{"cluster":"prod.alpha"}"#);
    metadata.set("/ferry/queues/b", r#"{"cluster":"prod.alpha"}"#);
    metadata.set("/ferry/queues/c", r#"{"cluster":"prod.beta"}"#);
    let (ctx, server) = context(metadata.clone());
    let list = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "BrokerClusterList", "metadata": {},
                      "items": [broker_cluster("alpha", 3), broker_cluster("beta", 3)]});
    let server = server.run(vec![
        Call::new(Method::GET, clusters_path()).reply(StatusCode::OK, list),
        Call::new(Method::PATCH, status_path("topics", "events"))
            .check(|b| assert_eq!(b["status"]["cluster"], "beta")),
        event(NS, "RecordCreated"),
        Call::new(Method::PATCH, status_path("topics", "events")).check(|b| {
            assert_eq!(b["status"]["partitions"], json!({"ready": 0, "total": 4}));
            assert_eq!(b["status"]["address"], "beta-client.prod.svc:7070");
        }),
        event(NS, "Mapped"),
        event(NS, "LeadersMissing"),
    ]);
    let topic: Topic = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "events", "namespace": NS, "uid": "uid-t", "generation": 1, "finalizers": [FINALIZER]},
        "spec": {"partitions": 4}}))
    .expect("valid Topic");
    reconcile(Arc::new(topic), ctx).await.expect("reconciled");
    verify(server).await;
    let written: Value =
        serde_json::from_slice(&metadata.value("/ferry/topics/events").expect("record"))
            .expect("json");
    assert_eq!(written["cluster"], "prod.beta");
    assert_eq!(written["settings"]["partitions"], 4);
}

#[tokio::test]
async fn with_no_cluster_in_the_namespace_a_default_one_is_created() {
    let (ctx, server) = context(MemoryMetadata::new());
    let empty = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "BrokerClusterList", "metadata": {}, "items": []});
    let server = server.run(vec![
        Call::new(Method::GET, clusters_path()).reply(StatusCode::OK, empty),
        Call::new(Method::PATCH, format!("{}/ferry", clusters_path()))
            .check(|b| assert_eq!(b["spec"]["hosts"], 3))
            .echo_with(|b| b["metadata"]["uid"] = json!("uid-ferry")),
        event(NS, "DefaultClusterCreated"),
        Call::new(Method::PATCH, status_path("queues", "orders"))
            .check(|b| assert_eq!(b["status"]["cluster"], "ferry")),
        event(NS, "RecordCreated"),
        Call::new(Method::PATCH, status_path("queues", "orders")),
        event(NS, "Mapped"),
        event(NS, "LeadersMissing"),
    ]);
    reconcile(Arc::new(queue(json!({}), json!({}), false)), ctx)
        .await
        .expect("reconciled");
    verify(server).await;
}

fn remove_finalizer() -> Call {
    Call::new(
        Method::PATCH,
        format!("/apis/ferry.dev/v1alpha1/namespaces/{NS}/queues/orders"),
    )
    .check(|b| {
        let ops = b.as_array().expect("a JSON patch");
        assert!(
            ops.iter()
                .any(|op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/0")
        );
    })
    .reply(StatusCode::OK, stored_queue())
}

#[tokio::test]
async fn deleting_with_retain_keeps_the_record() {
    let metadata = MemoryMetadata::new();
    let written = record(9, 0);
    metadata.set(QUEUE_KEY, written.clone());
    metadata.set(QUEUE_RULE_KEY, "{}");
    let (ctx, server) = context(metadata.clone());
    let server = server.run(vec![event(NS, "Retained"), remove_finalizer()]);
    let object = queue(
        json!({"clusterRef": "main"}),
        mapped_status(9, &written),
        true,
    );
    reconcile(Arc::new(object), ctx).await.expect("released");
    verify(server).await;
    assert_eq!(metadata.value(QUEUE_KEY), Some(written));
    assert_eq!(
        metadata.value(QUEUE_RULE_KEY),
        None,
        "the namespace's access goes with the resource, though the data stays"
    );
}

#[tokio::test]
async fn deleting_with_delete_removes_the_record() {
    let metadata = MemoryMetadata::new();
    let written = record(9, 0);
    metadata.set(QUEUE_KEY, written.clone());
    let (ctx, server) = context(metadata.clone());
    let server = server.run(vec![
        get_cluster("main", 3),
        event(NS, "Deleted"),
        remove_finalizer(),
    ]);
    let object = queue(
        json!({"clusterRef": "main", "deletionPolicy": "Delete"}),
        mapped_status(9, &written),
        true,
    );
    reconcile(Arc::new(object), ctx).await.expect("released");
    verify(server).await;
    assert_eq!(metadata.value(QUEUE_KEY), None);
}

#[tokio::test]
async fn delete_if_empty_waits_while_the_queue_holds_messages() {
    let metadata = MemoryMetadata::new();
    let written = record(9, 0);
    metadata.set(QUEUE_KEY, written.clone());
    metadata.set(
        "/ferry/clusters/prod.main/observed/queues/orders",
        r#"{"depth":3,"in_flight":0,"updated_at_ms":1}"#,
    );
    let (ctx, server) = context(metadata.clone());
    let server = server.run(vec![
        get_cluster("main", 3),
        Call::new(Method::PATCH, status_path("queues", "orders")).check(|b| {
            assert_eq!(condition(b, "Synced")["reason"], "DeletionBlocked");
            assert_eq!(b["status"]["depth"], 3);
        }),
        event(NS, "DeletionBlocked"),
    ]);
    let object = queue(
        json!({"clusterRef": "main", "deletionPolicy": "DeleteIfEmpty"}),
        mapped_status(9, &written),
        true,
    );
    let result = reconcile(Arc::new(object), ctx).await;
    assert!(matches!(result, Err(Error::NotEmpty(_))), "{result:?}");
    verify(server).await;
    assert_eq!(
        metadata.value(QUEUE_KEY),
        Some(written),
        "kept while not empty"
    );
}

#[tokio::test]
async fn delete_if_empty_deletes_an_empty_queue() {
    let metadata = MemoryMetadata::new();
    let written = record(9, 0);
    metadata.set(QUEUE_KEY, written.clone());
    metadata.set(
        "/ferry/clusters/prod.main/observed/queues/orders",
        r#"{"depth":0,"in_flight":0,"updated_at_ms":1}"#,
    );
    let (ctx, server) = context(metadata.clone());
    let server = server.run(vec![
        get_cluster("main", 3),
        event(NS, "Deleted"),
        remove_finalizer(),
    ]);
    let object = queue(
        json!({"clusterRef": "main", "deletionPolicy": "DeleteIfEmpty"}),
        mapped_status(9, &written),
        true,
    );
    reconcile(Arc::new(object), ctx).await.expect("released");
    verify(server).await;
    assert_eq!(metadata.value(QUEUE_KEY), None);
    // The deletion is recorded, so the hosts remove the queue's data (and nothing
    // else makes them).
    assert!(
        metadata
            .value("/ferry/tombstones/queues/orders/9")
            .is_some(),
        "a tombstone for the deleted incarnation"
    );
}

#[tokio::test]
async fn a_gone_cluster_releases_the_finalizer_with_an_event() {
    let metadata = MemoryMetadata::new();
    let written = record(9, 0);
    metadata.set(QUEUE_KEY, written.clone());
    let (ctx, server) = context(metadata.clone());
    let server = server.run(vec![
        Call::new(Method::GET, format!("{}/main", clusters_path())).not_found(),
        event(NS, "ClusterGone"),
        remove_finalizer(),
    ]);
    let object = queue(
        json!({"clusterRef": "main", "deletionPolicy": "DeleteIfEmpty"}),
        mapped_status(9, &written),
        true,
    );
    reconcile(Arc::new(object), ctx).await.expect("released");
    verify(server).await;
    assert_eq!(
        metadata.value(QUEUE_KEY),
        Some(written),
        "DeleteIfEmpty cannot know: kept"
    );
}

#[tokio::test]
async fn a_stale_cached_object_does_not_disown_its_own_record() {
    let metadata = MemoryMetadata::new();
    let written = record(9, 0);
    metadata.set(QUEUE_KEY, written.clone());
    let (ctx, server) = context(metadata.clone());
    let mut fresh = stored_queue();
    fresh["status"] = json!({"cluster": "main", "incarnation": 9});
    let server = server.run(vec![
        get_cluster("main", 3),
        Call::new(
            Method::GET,
            format!("/apis/ferry.dev/v1alpha1/namespaces/{NS}/queues/orders"),
        )
        .reply(StatusCode::OK, fresh),
        Call::new(Method::PATCH, status_path("queues", "orders")).check(|b| {
            assert_eq!(b["status"]["incarnation"], 9);
            assert_eq!(condition(b, "Synced")["reason"], "Mapped");
        }),
        event(NS, "Mapped"),
        event(NS, "LeadersMissing"),
    ]);
    // The cache has not seen the claim yet: no incarnation in its status.
    let object = queue(
        json!({"clusterRef": "main"}),
        json!({"cluster": "main"}),
        false,
    );
    reconcile(Arc::new(object), ctx).await.expect("reconciled");
    verify(server).await;
    assert_eq!(metadata.value(QUEUE_KEY), Some(written));
}

#[tokio::test]
async fn a_cluster_with_an_etcd_of_its_own_is_not_written_to() {
    let (ctx, server) = context(MemoryMetadata::new());
    let mut own_etcd = broker_cluster("main", 3);
    own_etcd["spec"]["etcd"] = json!({"endpoints": ["http://elsewhere:2379"]});
    let server = server.run(vec![
        Call::new(Method::GET, format!("{}/main", clusters_path())).reply(StatusCode::OK, own_etcd),
        Call::new(Method::PATCH, status_path("queues", "orders"))
            .check(|b| assert_eq!(condition(b, "Synced")["reason"], "SeparateEtcdUnsupported")),
        event(NS, "SeparateEtcdUnsupported"),
        event(NS, "SeparateEtcdUnsupported"),
    ]);
    reconcile(
        Arc::new(queue(json!({"clusterRef": "main"}), json!({}), false)),
        ctx.clone(),
    )
    .await
    .expect("reconciled");
    verify(server).await;
    assert!(ctx.metadata.keys().is_empty());
}

#[tokio::test]
async fn a_paused_queue_changes_nothing_and_says_so() {
    let metadata = MemoryMetadata::new();
    let (ctx, server) = context(metadata.clone());
    let mut paused = queue(
        json!({"maxReceiveCount": 9}),
        mapped_status(7, &record(7, 3)),
        false,
    );
    paused
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("ferry.dev/paused".to_owned(), "true".to_owned());
    // No cluster is looked up and no record written: only the status and an event.
    let server = server.run(vec![
        Call::new(Method::PATCH, status_path("queues", "orders")).check(|b| {
            let synced = condition(b, "Synced");
            assert_eq!(synced["status"], "False");
            assert_eq!(synced["reason"], "Paused");
            assert_eq!(b["status"]["incarnation"], 7, "what was mapped stays");
        }),
        event(NS, "Paused"),
    ]);
    reconcile(Arc::new(paused), Arc::clone(&ctx))
        .await
        .expect("reconciled");
    verify(server).await;
    assert!(metadata.keys().is_empty(), "nothing written to etcd");
}
