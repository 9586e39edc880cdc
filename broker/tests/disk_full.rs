//! A full disk (issue 11, defect 4): a real broker whose data directory is a small
//! tmpfs. Producing until the disk is full gets RESOURCE_EXHAUSTED (DISK_FULL) and
//! loses nothing acknowledged; a queue's receives fail retriably meanwhile. Once the
//! file system grows, the same process takes writes again, on the partition that
//! filled it too, and the queue drains — no restart, no poisoned log.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::queue::{ack, create_queue, message, queues, receive_request, send};
use common::{BrokerProcess, batch, channel, create_topic, read_partition, topics};
use ferry_proto::v1 as pb;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (the test needs root): {status}",
            dir.display()
        );
        Self {
            dir: dir.to_owned(),
        }
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot grow the tmpfs: {status}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn disk_full(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::ResourceExhausted
        && common::detail(status).code == pb::ErrorCode::DiskFull as i32
}

async fn produce(
    ch: &tonic::transport::Channel,
    topic: &str,
    values: &[Vec<u8>],
) -> Result<(), tonic::Status> {
    let response = topics(ch)
        .produce(pb::ProduceRequest {
            topic: topic.into(),
            batches: vec![pb::PartitionBatch {
                partition: Some(0),
                records: batch(values, None).into(),
            }],
            messages: vec![],
            ..pb::ProduceRequest::default()
        })
        .await?
        .into_inner();
    match &response.batches[0].error {
        None => Ok(()),
        Some(detail) => Err(ferry_proto::status::status(
            tonic::Code::ResourceExhausted,
            detail,
            &Default::default(),
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_loses_nothing_and_recovers_without_a_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let tmpfs = Tmpfs::mount(root.path(), "24m");
    let data = root.path().join("data");
    let broker = BrokerProcess::start_with(&data, &["--metrics-listen", "127.0.0.1:0"]);
    let ch = channel(&broker.url()).await;
    create_topic(&ch, "filler", 1, pb::Durability::Fsync).await;
    create_topic(&ch, "orders", 1, pb::Durability::Fsync).await;
    let mut q = queues(&ch);
    create_queue(&mut q, "jobs", pb::QueueConfig::default()).await;
    send(
        &mut q,
        "jobs",
        (0..20).map(|i| message(format!("job-{i}"))).collect(),
    )
    .await;

    // Fill the disk: every acknowledged batch is remembered.
    let mut acked: Vec<Vec<u8>> = Vec::new();
    let mut refused = None;
    for n in 0..200 {
        let values: Vec<Vec<u8>> = (0..4)
            .map(|i| format!("{n:04}-{i}-{}", "x".repeat(64 * 1024)).into_bytes())
            .collect();
        match produce(&ch, "filler", &values).await {
            Ok(()) => acked.extend(values),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("the disk filled up");
    assert!(disk_full(&refused), "refused as DISK_FULL: {refused:?}");
    assert!(!acked.is_empty());
    // Full for everyone, and retriably so: the queue's receives too.
    let big = vec![vec![b'o'; 256 * 1024]];
    let again = produce(&ch, "orders", &big).await;
    assert!(again.as_ref().is_err_and(disk_full), "{again:?}");
    let received = q.receive(receive_request("jobs", 10, 0, 60_000)).await;
    if let Err(status) = &received {
        assert!(
            disk_full(status),
            "a receive fails only retriably: {status:?}"
        );
    }

    tmpfs.grow("96m");
    // The same process, the same partitions: writes go on.
    produce(&ch, "orders", &[b"o-1".to_vec()])
        .await
        .expect("orders takes writes once space is back");
    produce(&ch, "filler", &[b"after".to_vec()])
        .await
        .expect("the partition that filled the disk takes writes again");
    let stored: Vec<Vec<u8>> = read_partition(&ch, "filler", 0)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    let mut expected = acked.clone();
    expected.push(b"after".to_vec());
    assert_eq!(stored.len(), expected.len());
    assert!(
        stored == expected,
        "every acknowledged message, once, in order"
    );
    // The queue drains: receive and ack everything.
    let mut drained = 0;
    for _ in 0..50 {
        let got = q
            .receive(receive_request("jobs", 10, 0, 60_000))
            .await
            .expect("receive")
            .into_inner()
            .messages;
        if got.is_empty() {
            break;
        }
        drained += got.len();
        ack(
            &mut q,
            "jobs",
            got.iter().map(|m| m.receipt.clone()).collect(),
        )
        .await;
    }
    let in_flight_before = received.map_or(0, |r| r.into_inner().messages.len());
    assert_eq!(
        drained + in_flight_before,
        20,
        "every queued message is delivered"
    );
    let metrics = common::scrape(broker.metrics_addr.expect("metrics"));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferry_data_dir_free_bytes ")),
        "the free-space gauge is exported"
    );
    drop(broker);
}
