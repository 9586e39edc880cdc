//! SIGKILL the broker in the middle of a produce stream, again and again; every
//! acknowledged message must be there exactly once and nothing corrupt served.
//! Also: a torn tail written on purpose is cut off at recovery.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    BrokerProcess, batch, channel, create_topic, partition_dir, read_partition, segment_files,
    topics,
};
use ferry_proto::v1 as pb;
use ferry_records::ProducerStamp;
use tokio::sync::Mutex;

const TOPIC: &str = "crash";
const PARTITIONS: u32 = 3;
const KILLS: usize = 5;
const RECORDS_PER_BATCH: u64 = 10;

/// What the producer learned: per acknowledged value, the offset it was told.
#[derive(Default)]
struct History {
    acknowledged: HashMap<Vec<u8>, (u32, u64)>,
    batches_sent: u64,
}

/// Sends numbered batches round-robin over partitions with an idempotent producer
/// id; a batch whose outcome is unknown is retried with the same bytes until it is
/// acknowledged (or the run stops), as a real idempotent producer would.
async fn produce_until_stopped(
    url: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
) {
    let mut next_value = 0u64;
    let mut sequences = [0i32; PARTITIONS as usize];
    let mut producer_id = None;
    let mut batch_index = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let partition = (batch_index % u64::from(PARTITIONS)) as u32;
        batch_index += 1;
        let values: Vec<Vec<u8>> = (0..RECORDS_PER_BATCH)
            .map(|i| format!("value-{:08}", next_value + i).into_bytes())
            .collect();
        next_value += RECORDS_PER_BATCH;
        let mut bytes = None;
        // Retry this batch until acknowledged: same bytes, same sequence.
        loop {
            let current_url = url.lock().await.clone();
            let Ok(endpoint) = tonic::transport::Channel::from_shared(current_url) else {
                return;
            };
            let Ok(ch) = endpoint
                .connect_timeout(Duration::from_millis(500))
                .connect()
                .await
            else {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let mut client = topics(&ch);
            if producer_id.is_none() {
                match client.init_producer(pb::InitProducerRequest {}).await {
                    Ok(r) => producer_id = Some(r.into_inner().producer_id),
                    Err(_) => continue,
                }
            }
            let Some(id) = producer_id else { continue };
            let encoded = bytes.get_or_insert_with(|| {
                let stamp = ProducerStamp {
                    producer_id: id,
                    producer_epoch: 0,
                    base_sequence: sequences[partition as usize],
                };
                batch(&values, Some(stamp))
            });
            let request = pb::ProduceRequest {
                topic: TOPIC.to_owned(),
                batches: vec![pb::PartitionBatch {
                    partition: Some(partition),
                    records: encoded.clone().into(),
                }],
                messages: vec![],
                ..pb::ProduceRequest::default()
            };
            history.lock().await.batches_sent += 1;
            match client.produce(request).await {
                Ok(response) => {
                    let result = &response.into_inner().batches[0];
                    assert!(result.error.is_none(), "batch refused: {:?}", result.error);
                    let mut h = history.lock().await;
                    for (i, value) in values.iter().enumerate() {
                        h.acknowledged
                            .insert(value.clone(), (partition, result.base_offset + i as u64));
                    }
                    sequences[partition as usize] += RECORDS_PER_BATCH as i32;
                    break;
                }
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_sigkill_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(dir.path());
    let ch = channel(&broker.url()).await;
    create_topic(&ch, TOPIC, PARTITIONS, pb::Durability::Fsync).await;

    let url = Arc::new(Mutex::new(broker.url()));
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(History::default()));
    let producer = tokio::spawn(produce_until_stopped(
        Arc::clone(&url),
        Arc::clone(&stop),
        Arc::clone(&history),
    ));
    for round in 0..KILLS {
        // Let acknowledged data accumulate, then kill mid-stream.
        tokio::time::sleep(Duration::from_millis(300 + 150 * round as u64)).await;
        broker.kill9();
        broker = BrokerProcess::start(dir.path());
        *url.lock().await = broker.url();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    producer.await.expect("producer task");

    let ch = channel(&broker.url()).await;
    let mut seen: BTreeMap<Vec<u8>, Vec<(u32, u64)>> = BTreeMap::new();
    for partition in 0..PARTITIONS {
        for record in read_partition(&ch, TOPIC, partition).await {
            seen.entry(record.value)
                .or_default()
                .push((partition, record.offset));
        }
    }
    let history = history.lock().await;
    assert!(
        history.acknowledged.len() >= 100,
        "the run acknowledged too little to mean anything: {}",
        history.acknowledged.len()
    );
    for (value, positions) in &seen {
        assert_eq!(
            positions.len(),
            1,
            "{} stored {} times",
            String::from_utf8_lossy(value),
            positions.len()
        );
    }
    for (value, (partition, offset)) in &history.acknowledged {
        let positions = seen.get(value).unwrap_or_else(|| {
            panic!("acknowledged {} is missing", String::from_utf8_lossy(value))
        });
        assert_eq!(
            positions,
            &vec![(*partition, *offset)],
            "acknowledged at one offset, stored at another"
        );
    }
    eprintln!(
        "crash test: {} acknowledged, {} stored, {} batch sends over {KILLS} kills",
        history.acknowledged.len(),
        seen.len(),
        history.batches_sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_off_at_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(dir.path());
    let ch = channel(&broker.url()).await;
    create_topic(&ch, "torn", 1, pb::Durability::Fsync).await;
    let mut client = topics(&ch);
    let values: Vec<Vec<u8>> = (0..20).map(|i| format!("kept-{i}").into_bytes()).collect();
    for chunk in values.chunks(5) {
        client
            .produce(pb::ProduceRequest {
                topic: "torn".into(),
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
    broker.kill9();

    // Half a valid batch, as if the machine died in the middle of a write.
    let half = batch(&[b"torn-away".to_vec(), b"also-gone".to_vec()], None);
    let segment = segment_files(&partition_dir(dir.path(), "torn", 0))
        .pop()
        .expect("a segment file");
    let before = std::fs::metadata(&segment).expect("segment").len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open segment");
    file.write_all(&half[..half.len() / 2])
        .expect("write torn tail");
    file.sync_all().expect("sync");
    drop(file);

    let broker = BrokerProcess::start(dir.path());
    let ch = channel(&broker.url()).await;
    let read = read_partition(&ch, "torn", 0).await;
    let read_values: Vec<Vec<u8>> = read.iter().map(|r| r.value.clone()).collect();
    assert_eq!(
        read_values, values,
        "everything before the torn tail is intact"
    );
    assert_eq!(
        std::fs::metadata(&segment).expect("segment").len(),
        before,
        "torn bytes were cut"
    );

    // Appends continue at the right offset.
    let response = topics(&ch)
        .produce(pb::ProduceRequest {
            topic: "torn".into(),
            batches: vec![pb::PartitionBatch {
                partition: Some(0),
                records: batch(&[b"after".to_vec()], None).into(),
            }],
            messages: vec![],
            ..pb::ProduceRequest::default()
        })
        .await
        .expect("produce after recovery")
        .into_inner();
    assert_eq!(response.batches[0].base_offset, 20);
}
