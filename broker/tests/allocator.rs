//! The broker keeps freed memory for reuse: large produce requests, one after
//! another, land on pages it already has instead of fresh ones the kernel must fault
//! in and zero (`ferry_broker::allocator`, `docs/performance.md`).

mod common;

use common::{BrokerProcess, batch, channel, create_topic, topics};
use ferry_proto::v1 as pb;
use ferry_proto::v1::topic_service_client::TopicServiceClient;
use tonic::transport::Channel;

type TopicClient = TopicServiceClient<Channel>;

/// Partitions of the topic; a request carries a batch of up to 1 MiB for some of them.
const PARTITIONS: u32 = 4;
/// Producers sending at once, each on its own connection.
const PRODUCERS: usize = 4;
/// Requests sent before counting, so the broker's buffers reach their working size.
const WARM_UP_REQUESTS: usize = 48;
/// Requests counted.
const COUNTED_REQUESTS: usize = 96;
/// Page faults per MiB received beyond which freed memory is not being reused: a
/// fresh MiB is 256 faults of 4 KiB pages, and each byte received passes through at
/// least one buffer of the size of its request.
const KEPT_FAULTS_PER_MIB_MAX: f64 = 8.0;
/// Page faults per MiB received at least, when every large buffer is fresh memory.
const RETURNED_FAULTS_PER_MIB_MIN: f64 = 64.0;

/// The process's minor page faults so far (`/proc/<pid>/stat`, field 10).
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The command name (field 2) may hold spaces; the fields after it do not.
    let after_name = stat.rsplit_once(')').expect("stat has a name").1;
    after_name
        .split_whitespace()
        .nth(7)
        .and_then(|field| field.parse().ok())
        .expect("minflt field")
}

/// A request with a batch of `records` records of 64 KiB for each of the first
/// `partitions` partitions.
fn request(partitions: u32, records: usize) -> pb::ProduceRequest {
    let values = vec![vec![7u8; 64 * 1024]; records];
    pb::ProduceRequest {
        topic: "big".into(),
        batches: (0..partitions)
            .map(|partition| pb::PartitionBatch {
                partition: Some(partition),
                records: batch(&values, None).into(),
            })
            .collect(),
        ..pb::ProduceRequest::default()
    }
}

/// Sends `count` requests of varying sizes, one at a time; returns the MiB sent.
async fn send(client: &mut TopicClient, count: usize, first: usize) -> f64 {
    let mut sent_bytes = 0;
    for sent in first..first + count {
        // 64 KiB to 4 MiB, as a producer's requests vary with what each partition
        // holds.
        let partitions = 1 + (sent % PARTITIONS as usize) as u32;
        let request = request(partitions, 1 + (sent * 7) % 16);
        sent_bytes += request
            .batches
            .iter()
            .map(|b| b.records.len())
            .sum::<usize>();
        let answer = client.produce(request).await.expect("produce").into_inner();
        assert!(
            answer.batches.len() == partitions as usize
                && answer.batches.iter().all(|result| result.error.is_none()),
            "{:?}",
            answer.batches
        );
    }
    sent_bytes as f64 / (1024.0 * 1024.0)
}

/// Minor page faults of a broker started with `extra` per MiB it receives once warm,
/// from producers on connections of their own, concurrently.
async fn faults_per_mib(extra: &[&str]) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start_with(dir.path(), extra);
    let pid = broker.pid().expect("running");
    create_topic(
        &channel(&broker.url()).await,
        "big",
        PARTITIONS,
        pb::Durability::Fsync,
    )
    .await;
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        producers.push(topics(&channel(&broker.url()).await));
    }
    let all = |count: usize, first: usize, producers: Vec<TopicClient>| async move {
        let tasks: Vec<_> = producers
            .into_iter()
            .enumerate()
            .map(|(i, mut client)| {
                tokio::spawn(async move {
                    let mib = send(&mut client, count, first + i).await;
                    (client, mib)
                })
            })
            .collect();
        let mut back = Vec::new();
        let mut mib = 0.0;
        for task in tasks {
            let (client, sent) = task.await.expect("producer task");
            back.push(client);
            mib += sent;
        }
        (back, mib)
    };
    let (producers, _) = all(WARM_UP_REQUESTS, 0, producers).await;
    let before = minor_faults(pid);
    let (_, mib) = all(COUNTED_REQUESTS, WARM_UP_REQUESTS, producers).await;
    (minor_faults(pid) - before) as f64 / mib
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_reuse_freed_memory() {
    let kept = faults_per_mib(&[]).await;
    // The control: glibc's starting thresholds (128 KiB), held fixed, map every large
    // buffer on its own and unmap it when freed, so each request is received into
    // fresh pages. (glibc's adaptive thresholds fall anywhere between the two.)
    let returned = faults_per_mib(&[
        "--malloc-mmap-threshold-bytes=131072",
        "--malloc-trim-threshold-bytes=131072",
    ])
    .await;
    eprintln!("page faults per MiB received: {kept:.1} kept, {returned:.1} returned");
    assert!(
        kept < KEPT_FAULTS_PER_MIB_MAX,
        "{kept:.1} page faults per MiB with freed memory kept (at most \
         {KEPT_FAULTS_PER_MIB_MAX})"
    );
    assert!(
        returned > RETURNED_FAULTS_PER_MIB_MIN,
        "{returned:.1} page faults per MiB with freed memory returned: the control no \
         longer shows what the test measures"
    );
}
