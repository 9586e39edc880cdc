//! The etcd metadata store against a real etcd: the store contract (reads, prefix
//! lists, compare-and-swap transactions, prefix watches), watches that resume without
//! a gap across an etcd restart, and clear "unavailable" errors while etcd is down.

use std::time::Duration;

use ferry_broker::meta::{
    Compare, EtcdConfig, EtcdStore, MetaError, MetadataStore, MetadataStoreExt, Op, WatchEvent,
};
use ferry_e2e::EtcdServer;

const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

fn config(etcd: &EtcdServer) -> EtcdConfig {
    EtcdConfig {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        watch_retry: Duration::from_millis(100),
        ..EtcdConfig::new(vec![etcd.endpoint()])
    }
}

async fn next_event(watch: &mut ferry_broker::meta::Watch) -> WatchEvent {
    tokio::time::timeout(EVENT_TIMEOUT, watch.next())
        .await
        .expect("a watch event in time")
        .expect("watch open")
}

#[tokio::test]
async fn etcd_store_keeps_the_metadata_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdServer::start(dir.path());
    let store = EtcdStore::connect(config(&etcd)).await.expect("connect");
    let mut watch = store.watch("/ferry/a/");

    let first = store.put("/ferry/a/1", b"one".to_vec()).await.expect("put");
    store.put("/ferry/a/2", b"two".to_vec()).await.expect("put");
    store
        .put("/ferry/b/1", b"other".to_vec())
        .await
        .expect("put");
    let listed = store.list("/ferry/a/").await.expect("list");
    let keys: Vec<&str> = listed.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/ferry/a/1", "/ferry/a/2"]);
    let one = store
        .get("/ferry/a/1")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        (one.value.as_slice(), one.mod_revision),
        (&b"one"[..], first)
    );
    assert!(store.get("/ferry/a/none").await.expect("get").is_none());

    // Compare-and-swap: create only when absent, update only at the revision read.
    assert!(
        !store
            .create("/ferry/a/1", b"x".to_vec())
            .await
            .expect("create")
    );
    assert!(
        store
            .create("/ferry/a/3", b"three".to_vec())
            .await
            .expect("create")
    );
    let stale = Compare::ModRevision {
        key: "/ferry/a/1".into(),
        revision: Some(first - 1),
    };
    let put = |value: &str| Op::Put {
        key: "/ferry/a/1".into(),
        value: value.as_bytes().to_vec(),
    };
    let refused = store
        .txn(vec![stale], vec![put("stale")])
        .await
        .expect("txn");
    assert!(!refused.succeeded);
    let current = Compare::ModRevision {
        key: "/ferry/a/1".into(),
        revision: Some(first),
    };
    let applied = store
        .txn(vec![current], vec![put("fresh")])
        .await
        .expect("txn");
    assert!(applied.succeeded);
    assert!(applied.revision > first);
    let fresh = store
        .get("/ferry/a/1")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(fresh.value, b"fresh");

    // Prefix deletion, then the watch saw exactly the /ferry/a/ changes in order.
    store
        .txn(
            Vec::new(),
            vec![Op::DeletePrefix {
                prefix: "/ferry/a/".into(),
            }],
        )
        .await
        .expect("txn");
    assert!(store.list("/ferry/a/").await.expect("list").is_empty());
    assert_eq!(store.list("/ferry/b/").await.expect("list").len(), 1);
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(match next_event(&mut watch).await {
            WatchEvent::Put(kv) => format!("put {} {}", kv.key, String::from_utf8_lossy(&kv.value)),
            WatchEvent::Delete { key, .. } => format!("delete {key}"),
        });
    }
    assert_eq!(
        seen,
        [
            "put /ferry/a/1 one",
            "put /ferry/a/2 two",
            "put /ferry/a/3 three",
            "put /ferry/a/1 fresh",
            "delete /ferry/a/1",
            "delete /ferry/a/2",
            "delete /ferry/a/3",
        ]
    );
}

#[tokio::test]
async fn watch_resumes_without_a_gap_and_errors_say_unavailable_while_etcd_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut etcd = EtcdServer::start(dir.path());
    let store = EtcdStore::connect(config(&etcd)).await.expect("connect");
    let mut watch = store.watch("/ferry/q/");
    store
        .put("/ferry/q/before", b"1".to_vec())
        .await
        .expect("put");

    etcd.stop();
    match store.get("/ferry/q/before").await {
        Err(MetaError::Unavailable(_)) => {}
        other => panic!("expected Unavailable while etcd is down, got {other:?}"),
    }

    etcd.restart();
    // The store reconnects by itself; writes succeed again once etcd serves.
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        match store.put("/ferry/q/after", b"2".to_vec()).await {
            Ok(_) => break,
            Err(MetaError::Unavailable(reason)) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "etcd never came back: {reason}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    let keys: Vec<String> = [next_event(&mut watch).await, next_event(&mut watch).await]
        .iter()
        .map(|event| event.key().to_owned())
        .collect();
    assert_eq!(keys, ["/ferry/q/before", "/ferry/q/after"]);
}
