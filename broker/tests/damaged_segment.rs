//! A damaged sealed segment costs only what is damaged (issue 11, defect 1): a real
//! broker, one partition in 64 KiB segments, 5,000 acknowledged messages, a clean
//! stop, then one sealed segment cut in half or one byte flipped in it. On restart every
//! message outside the damage is served, the damaged offsets come back as a lost range
//! that readers step over, and the metrics report how many offsets were lost.

mod common;

use std::path::{Path, PathBuf};

use common::{BrokerProcess, channel, partition_dir, segment_files, topics};
use ferry_proto::v1 as pb;
use ferry_records::Batches;

const TOPIC: &str = "damaged";
const MESSAGES: usize = 5_000;
const PER_REQUEST: usize = 50;
const SEGMENT_BYTES: u64 = 64 * 1024;

/// What a read from offset 0 to the high watermark found.
#[derive(Debug, Default)]
struct ReadBack {
    /// (offset, value) of every record served.
    records: Vec<(u64, Vec<u8>)>,
    /// (from, to) of every lost range served.
    lost: Vec<(u64, u64)>,
}

async fn fill(ch: &tonic::transport::Channel) -> Vec<Vec<u8>> {
    common::admin(ch)
        .create_topic(pb::CreateTopicRequest {
            name: TOPIC.into(),
            config: Some(pb::TopicConfig {
                partitions: 1,
                durability: pb::Durability::Fsync as i32,
                segment_bytes: Some(SEGMENT_BYTES),
                ..Default::default()
            }),
        })
        .await
        .expect("create topic");
    let values: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|i| format!("message-{i:05}-{}", "x".repeat(120)).into_bytes())
        .collect();
    let mut client = topics(ch);
    for chunk in values.chunks(PER_REQUEST) {
        client
            .produce(pb::ProduceRequest {
                topic: TOPIC.into(),
                batches: vec![pb::PartitionBatch {
                    partition: Some(0),
                    records: common::batch(chunk, None).into(),
                }],
                messages: vec![],
                ..pb::ProduceRequest::default()
            })
            .await
            .expect("produce is acknowledged");
    }
    values
}

async fn read_back(ch: &tonic::transport::Channel) -> ReadBack {
    let mut client = topics(ch);
    let mut out = ReadBack::default();
    let mut offset = 0u64;
    for _ in 0..10_000 {
        let response = client
            .fetch(pb::FetchRequest {
                partitions: vec![pb::FetchPartition {
                    topic: TOPIC.into(),
                    partition: 0,
                    offset,
                    max_bytes: 1024 * 1024,
                }],
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 0,
                decode: false,
            })
            .await
            .expect("fetch")
            .into_inner();
        let fetched = &response.partitions[0];
        assert!(fetched.error.is_none(), "fetch error {:?}", fetched.error);
        if fetched.records.is_empty() {
            assert_eq!(offset, fetched.high_watermark, "stopped short");
            return out;
        }
        for batch in Batches::new(&fetched.records) {
            let batch = batch.expect("well-formed batch");
            batch
                .verify_crc()
                .expect("every served batch has a valid CRC");
            assert_eq!(batch.header.base_offset, offset, "offsets follow on");
            if batch.header.is_lost_range() {
                out.lost.push((offset, batch.header.next_offset()));
            }
            for record in batch.records() {
                let record = record.expect("well-formed record");
                out.records.push((record.offset, record.value.to_vec()));
            }
            offset = batch.header.next_offset();
        }
    }
    panic!("the read did not reach the high watermark");
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    segment_files(&partition_dir(data_dir, TOPIC, 0))
}

fn base_of(segment: &Path) -> u64 {
    segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment base offset")
}

fn lost_records_metric(broker: &BrokerProcess) -> u64 {
    let addr = broker.metrics_addr.expect("metrics are on");
    let body = common::scrape(addr);
    body.lines()
        .find(|l| l.starts_with("ferry_log_lost_records{") && l.contains(TOPIC))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ferry_log_lost_records for {TOPIC} in:\n{body}"))
}

/// Runs the scenario with `damage` applied to the third segment while the broker is
/// stopped; returns what a reader finds afterwards and the segments before/after.
async fn scenario(
    damage: impl FnOnce(&Path, &Path),
) -> (Vec<Vec<u8>>, ReadBack, u64, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let mut broker = BrokerProcess::start_with(dir.path(), &metrics);
    let ch = channel(&broker.url()).await;
    let values = fill(&ch).await;
    assert!(broker.terminate(), "clean SIGTERM stop");
    let before = segments(dir.path());
    assert!(before.len() >= 10, "{} segments", before.len());
    damage(dir.path(), &before[2]);

    let broker = BrokerProcess::start_with(dir.path(), &metrics);
    let ch = channel(&broker.url()).await;
    let read = read_back(&ch).await;
    assert_eq!(segments(dir.path()), before, "no segment was deleted");
    let metric = lost_records_metric(&broker);
    drop(dir);
    (values, read, metric, before)
}

/// Every served record is the one acknowledged at its offset, and every acknowledged
/// offset is served or inside a lost range.
fn check(values: &[Vec<u8>], read: &ReadBack) {
    for (offset, value) in &read.records {
        assert_eq!(&values[*offset as usize], value, "record at {offset}");
    }
    let lost: u64 = read.lost.iter().map(|(from, to)| to - from).sum();
    assert_eq!(read.records.len() as u64 + lost, values.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_segment_cut_in_half_costs_only_its_second_half() {
    let (values, read, metric, before) = scenario(|_, segment| {
        let len = std::fs::metadata(segment).expect("segment").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(segment)
            .and_then(|f| f.set_len(len / 2))
            .expect("truncate the third segment");
    })
    .await;
    check(&values, &read);
    let (third, fourth) = (base_of(&before[2]), base_of(&before[3]));
    assert_eq!(read.lost.len(), 1, "{:?}", read.lost);
    let (from, to) = read.lost[0];
    assert!(
        from > third && to == fourth,
        "lost {from}..{to} of {third}..{fourth}"
    );
    assert!(
        read.records.iter().any(|(o, _)| *o == fourth) && read.records.len() > MESSAGES / 2,
        "every later segment is served"
    );
    assert_eq!(metric, to - from);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_sealed_segment_costs_one_batch() {
    let (values, read, metric, before) = scenario(|_, segment| {
        let mut bytes = std::fs::read(segment).expect("read segment");
        let at = bytes.len() / 2;
        bytes[at] ^= 0x20;
        std::fs::write(segment, &bytes).expect("flip a byte");
        // Without the recovery point every segment is scanned on open.
        let partition = segment.parent().expect("partition dir");
        std::fs::remove_file(partition.join("recovery-point")).expect("remove recovery point");
    })
    .await;
    check(&values, &read);
    assert_eq!(read.lost.len(), 1, "{:?}", read.lost);
    let (from, to) = read.lost[0];
    assert!(
        to - from <= PER_REQUEST as u64,
        "one batch lost: {from}..{to}"
    );
    assert!(from >= base_of(&before[2]) && to <= base_of(&before[3]));
    assert_eq!(metric, to - from);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_rot_in_a_trusted_segment_is_found_by_a_read_and_skipped() {
    let (values, read, metric, before) = scenario(|_, segment| {
        let mut bytes = std::fs::read(segment).expect("read segment");
        let at = bytes.len() / 3;
        bytes[at] ^= 0x01;
        std::fs::write(segment, &bytes).expect("flip a byte");
    })
    .await;
    check(&values, &read);
    assert_eq!(read.lost.len(), 1, "{:?}", read.lost);
    let (from, to) = read.lost[0];
    assert!(
        to - from <= PER_REQUEST as u64,
        "one batch lost: {from}..{to}"
    );
    assert!(from >= base_of(&before[2]) && to <= base_of(&before[3]));
    assert_eq!(metric, to - from);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_a_damaged_message_segment_serves_every_intact_message() {
    use common::queue::{ack, create_queue, message, queues, receive, send};
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--queue-segment-bytes", "4096"];
    let mut broker = BrokerProcess::start_with(dir.path(), &args);
    let ch = channel(&broker.url()).await;
    let mut q = queues(&ch);
    create_queue(&mut q, "jobs", pb::QueueConfig::default()).await;
    const SENT: usize = 2_000;
    for chunk in (0..SENT).collect::<Vec<_>>().chunks(100) {
        let messages = chunk
            .iter()
            .map(|i| message(format!("job-{i:05}")))
            .collect();
        send(&mut q, "jobs", messages).await;
    }
    assert!(broker.terminate(), "clean stop");
    let queue_dir = std::fs::read_dir(dir.path().join("queues"))
        .expect("queues dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("the queue's directory");
    let logs = segment_files(&queue_dir.join("messages"));
    assert!(logs.len() >= 5, "{} segments", logs.len());
    let len = std::fs::metadata(&logs[2]).expect("segment").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&logs[2])
        .and_then(|f| f.set_len(len / 2))
        .expect("cut the third segment in half");

    let broker = BrokerProcess::start_with(dir.path(), &args);
    let ch = channel(&broker.url()).await;
    let mut q = queues(&ch);
    let mut received = std::collections::BTreeSet::new();
    loop {
        let messages = receive(&mut q, "jobs", 100, 0, 60_000).await;
        if messages.is_empty() {
            break;
        }
        let receipts: Vec<String> = messages.iter().map(|m| m.receipt.clone()).collect();
        for m in messages {
            assert!(received.insert(String::from_utf8_lossy(&m.body).into_owned()));
        }
        ack(&mut q, "jobs", receipts).await;
    }
    let lost = SENT - received.len();
    assert!(
        lost > 0 && lost < SENT / 4,
        "{lost} of {SENT} lost to half a segment"
    );
    // What was lost is one run: the cut half of the third segment.
    let numbers: Vec<usize> = received
        .iter()
        .filter_map(|b| b.strip_prefix("job-")?.parse().ok())
        .collect();
    let gaps = numbers.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert_eq!(gaps, 1, "one lost run");
}
