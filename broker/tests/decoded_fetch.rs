//! Fetch for clients that do not read the batch format: with `decode` the broker
//! answers records (offset, key, value, headers, timestamp) from the requested offset
//! on, and where to fetch next; and a partition that cannot be read fails alone in a
//! multi-partition fetch, while the others are answered.

mod common;

use common::{BrokerProcess, channel, create_topic, topics};
use ferry_proto::v1 as pb;

fn message(key: &str, value: &str, timestamp_ms: i64) -> pb::Message {
    pb::Message {
        key: Some(key.as_bytes().to_vec().into()),
        value: value.as_bytes().to_vec().into(),
        headers: vec![pb::Header {
            key: "trace".to_owned(),
            value: format!("t-{value}").into_bytes().into(),
        }],
        timestamp_ms: Some(timestamp_ms),
    }
}

fn wanted(topic: &str, partition: u32, offset: u64) -> pb::FetchPartition {
    pb::FetchPartition {
        topic: topic.to_owned(),
        partition,
        offset,
        max_bytes: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_fetch_answers_records_and_failed_partitions_fail_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path());
    let ch = channel(&broker.url()).await;
    create_topic(&ch, "orders", 1, pb::Durability::Fsync).await;
    // One request, one batch: offsets 0, 1, 2.
    let produced = topics(&ch)
        .produce(pb::ProduceRequest {
            topic: "orders".to_owned(),
            batches: vec![],
            messages: vec![
                message("k0", "zero", 1_000),
                message("k1", "one", 2_000),
                message("k2", "two", 3_000),
            ],
            ..pb::ProduceRequest::default()
        })
        .await
        .expect("produce")
        .into_inner();
    assert_eq!(produced.messages.len(), 3);

    // From the middle of the stored batch: the records below the offset are left out.
    let response = topics(&ch)
        .fetch(pb::FetchRequest {
            partitions: vec![
                wanted("orders", 0, 1),
                wanted("no-such-topic", 0, 0),
                wanted("orders", 7, 0),
            ],
            max_wait_ms: 1_000,
            decode: true,
            ..Default::default()
        })
        .await
        .expect("a fetch with failing partitions still answers")
        .into_inner();
    assert_eq!(response.partitions.len(), 3);
    let orders = &response.partitions[0];
    assert!(orders.error.is_none(), "{orders:?}");
    assert!(orders.records.is_empty(), "no raw batches when decoded");
    let read: Vec<(u64, &[u8], &[u8], i64)> = orders
        .messages
        .iter()
        .map(|m| {
            (
                m.offset,
                m.key.as_deref().unwrap_or_default(),
                m.value.as_ref(),
                m.timestamp_ms,
            )
        })
        .collect();
    assert_eq!(
        read,
        vec![
            (1, b"k1".as_slice(), b"one".as_slice(), 2_000),
            (2, b"k2".as_slice(), b"two".as_slice(), 3_000)
        ]
    );
    assert_eq!(orders.messages[0].headers[0].key, "trace");
    assert_eq!(orders.messages[0].headers[0].value.as_ref(), b"t-one");
    assert_eq!(orders.next_offset, 3);
    assert_eq!(orders.high_watermark, 3);

    let code = |partition: &pb::FetchedPartition| {
        partition
            .error
            .as_ref()
            .map(|error| error.code)
            .unwrap_or_default()
    };
    assert_eq!(
        code(&response.partitions[1]),
        pb::ErrorCode::TopicNotFound as i32,
        "{:?}",
        response.partitions[1]
    );
    assert_eq!(response.partitions[1].topic, "no-such-topic");
    assert_eq!(
        code(&response.partitions[2]),
        pb::ErrorCode::PartitionNotFound as i32,
        "{:?}",
        response.partitions[2]
    );

    // At the end: nothing, and the next offset stays where it was asked.
    let response = topics(&ch)
        .fetch(pb::FetchRequest {
            partitions: vec![wanted("orders", 0, 3)],
            decode: true,
            ..Default::default()
        })
        .await
        .expect("fetch at the end")
        .into_inner();
    let at_end = &response.partitions[0];
    assert!(at_end.messages.is_empty() && at_end.error.is_none());
    assert_eq!(at_end.next_offset, 3);

    // A request as a whole still fails for what is wrong with it as a whole.
    let empty = topics(&ch)
        .fetch(pb::FetchRequest {
            decode: true,
            ..Default::default()
        })
        .await
        .expect_err("a fetch of nothing is refused");
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
}
