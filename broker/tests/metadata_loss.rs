//! A standalone host's embedded metadata store loses records (issue 11, defect 3):
//! the data of a topic and a queue whose records vanished is kept, not deleted, and
//! `ferry-broker metadata rebuild` puts the records back so every acknowledged message
//! is served again. A topic deleted through the API is removed for good (its deletion
//! is recorded), and rebuild does not bring it back.

mod common;

use std::path::Path;
use std::process::Command;

use common::queue::{create_queue, message, queues, receive, send};
use common::{BrokerProcess, batch, channel, create_topic, read_partition, topics};
use ferry_broker::meta::{EmbeddedConfig, EmbeddedStore, MetadataStore, Op, keys};
use ferry_proto::v1 as pb;

const MESSAGES: usize = 200;

fn resource_dirs(data_dir: &Path, kind: &str, name: &str) -> usize {
    std::fs::read_dir(data_dir.join(kind))
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{name}-"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Deletes records from the stopped broker's embedded store, as a lost store would.
async fn lose_records(data_dir: &Path, lost: &[String]) {
    let store = EmbeddedStore::open(&EmbeddedConfig {
        path: EmbeddedStore::default_path(data_dir),
        watch_buffer: 16,
    })
    .expect("open the embedded store");
    let ops = lost
        .iter()
        .map(|key| Op::Delete { key: key.clone() })
        .collect();
    store.txn(Vec::new(), ops).await.expect("delete records");
}

fn rebuild(data_dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry-broker"))
        .args(["metadata", "rebuild", "--data-dir"])
        .arg(data_dir)
        .env("FERRY_LOG", "warn")
        .output()
        .expect("run ferry-broker metadata rebuild");
    assert!(
        output.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_records_keep_their_data_and_rebuild_brings_them_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let mut broker = BrokerProcess::start(data);
    let ch = channel(&broker.url()).await;
    create_topic(&ch, "orders", 1, pb::Durability::Fsync).await;
    create_topic(&ch, "scratch", 1, pb::Durability::Fsync).await;
    let values: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|i| format!("m{i}").into_bytes())
        .collect();
    for chunk in values.chunks(20) {
        topics(&ch)
            .produce(pb::ProduceRequest {
                topic: "orders".into(),
                batches: vec![pb::PartitionBatch {
                    partition: Some(0),
                    records: batch(chunk, None).into(),
                }],
                messages: vec![],
                ..pb::ProduceRequest::default()
            })
            .await
            .expect("produce");
    }
    let mut q = queues(&ch);
    create_queue(&mut q, "jobs", pb::QueueConfig::default()).await;
    send(
        &mut q,
        "jobs",
        (0..10).map(|i| message(format!("j{i}"))).collect(),
    )
    .await;
    // A deliberate delete: recorded, so its data goes for good.
    common::admin(&ch)
        .delete_topic(pb::DeleteTopicRequest {
            name: "scratch".into(),
        })
        .await
        .expect("delete scratch");
    assert!(broker.terminate(), "clean stop");

    lose_records(data, &[keys::topic("orders"), keys::queue("jobs")]).await;
    let mut broker = BrokerProcess::start(data);
    assert_eq!(resource_dirs(data, "topics", "orders"), 1, "kept");
    assert_eq!(resource_dirs(data, "queues", "jobs"), 1, "kept");
    assert_eq!(
        resource_dirs(data, "topics", "scratch"),
        0,
        "a recorded deletion"
    );
    assert!(broker.terminate(), "clean stop");

    let report = rebuild(data);
    assert!(
        report.contains("topics/orders") && report.contains("queues/jobs"),
        "{report}"
    );
    assert!(!report.contains("topics/scratch"), "{report}");

    let broker = BrokerProcess::start(data);
    let ch = channel(&broker.url()).await;
    let read: Vec<Vec<u8>> = read_partition(&ch, "orders", 0)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(read, values, "every acknowledged message is back");
    let mut q = queues(&ch);
    let mut bodies: Vec<String> = receive(&mut q, "jobs", 10, 0, 60_000)
        .await
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("j{i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected);
}
