//! A batch retried after its response was lost is stored once — also across a restart.

mod common;

use common::{BrokerProcess, batch, channel, create_topic, read_partition, topics};
use ferry_proto::v1 as pb;
use ferry_records::ProducerStamp;

fn request(records: Vec<u8>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: "payments".into(),
        batches: vec![pb::PartitionBatch {
            partition: Some(0),
            records: records.into(),
        }],
        ..pb::ProduceRequest::default()
    }
}

/// A new idempotent producer's id.
async fn producer_id(
    client: &mut pb::topic_service_client::TopicServiceClient<tonic::transport::Channel>,
) -> i64 {
    client
        .init_producer(pb::InitProducerRequest {})
        .await
        .expect("init producer")
        .into_inner()
        .producer_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(dir.path());
    let ch = channel(&broker.url()).await;
    create_topic(&ch, "payments", 1, pb::Durability::Fsync).await;
    let mut client = topics(&ch);
    let id = producer_id(&mut client).await;
    let stamp = |base_sequence| {
        Some(ProducerStamp {
            producer_id: id,
            producer_epoch: 0,
            base_sequence,
        })
    };
    let first = batch(&[b"a".to_vec(), b"b".to_vec()], stamp(0));
    let original = client
        .produce(request(first.clone()))
        .await
        .expect("produce")
        .into_inner();
    assert!(!original.batches[0].duplicate);

    // The response was "lost": the producer sends the very same bytes again.
    let retry = client
        .produce(request(first.clone()))
        .await
        .expect("retry")
        .into_inner();
    assert!(retry.batches[0].duplicate, "the retry is recognised");
    assert_eq!(
        retry.batches[0].base_offset,
        original.batches[0].base_offset
    );
    assert_eq!(
        retry.batches[0].last_offset,
        original.batches[0].last_offset
    );

    let second = batch(&[b"c".to_vec()], stamp(2));
    client.produce(request(second)).await.expect("next batch");

    // A gap in the sequence is refused and stores nothing.
    let gap = client
        .produce(request(batch(&[b"x".to_vec()], stamp(10))))
        .await
        .expect("call succeeds")
        .into_inner();
    let error = gap.batches[0]
        .error
        .as_ref()
        .expect("out of order is refused");
    assert_eq!(error.code, pb::ErrorCode::OutOfOrderSequence as i32);

    // After a crash and restart, the first batch is still recognised.
    broker.kill9();
    let broker = BrokerProcess::start(dir.path());
    let ch = channel(&broker.url()).await;
    let again = topics(&ch)
        .produce(request(first))
        .await
        .expect("retry after restart")
        .into_inner();
    assert!(again.batches[0].duplicate);
    assert_eq!(
        again.batches[0].base_offset,
        original.batches[0].base_offset
    );

    let values: Vec<Vec<u8>> = read_partition(&ch, "payments", 0)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
}

/// A produce of client-placed messages: the broker encodes them, stamped with the
/// producer's fields, so a client with only generated stubs can produce idempotently.
fn placed(producer_id: i64, base_sequence: i32, values: &[&str]) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: "orders".into(),
        partition_messages: vec![pb::PartitionMessages {
            partition: 1,
            messages: values
                .iter()
                .map(|value| pb::Message {
                    value: value.as_bytes().to_vec().into(),
                    ..pb::Message::default()
                })
                .collect(),
            base_sequence,
        }],
        producer: Some(pb::ProducerIdentity {
            producer_id,
            producer_epoch: 0,
        }),
        ..pb::ProduceRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placed_messages_from_a_producer_are_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path());
    let ch = channel(&broker.url()).await;
    create_topic(&ch, "orders", 2, pb::Durability::Fsync).await;
    let mut client = topics(&ch);
    let id = producer_id(&mut client).await;
    let send = |request| {
        let mut client = client.clone();
        async move {
            client
                .produce(request)
                .await
                .expect("produce")
                .into_inner()
                .partition_message_batches
        }
    };

    let original = send(placed(id, 0, &["a", "b"])).await;
    assert_eq!(original.len(), 1);
    assert_eq!(
        (
            original[0].partition,
            original[0].base_offset,
            original[0].last_offset
        ),
        (1, 0, 1)
    );
    assert!(!original[0].duplicate && original[0].error.is_none());

    let retry = send(placed(id, 0, &["a", "b"])).await;
    assert!(retry[0].duplicate, "the retry is recognised");
    assert_eq!((retry[0].base_offset, retry[0].last_offset), (0, 1));

    let next = send(placed(id, 2, &["c"])).await;
    assert_eq!((next[0].base_offset, next[0].duplicate), (2, false));
    let gap = send(placed(id, 10, &["x"])).await;
    let error = gap[0].error.as_ref().expect("a gap is refused");
    assert_eq!(error.code, pb::ErrorCode::OutOfOrderSequence as i32);

    // Without a producer the same entry is stored again: placement alone is not
    // idempotence.
    let mut plain = placed(id, 0, &["d"]);
    plain.producer = None;
    let stored = send(plain).await;
    assert_eq!((stored[0].base_offset, stored[0].duplicate), (3, false));

    let values: Vec<Vec<u8>> = read_partition(&ch, "orders", 1)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values, [b"a", b"b", b"c", b"d"].map(|v| v.to_vec()));
    assert!(read_partition(&ch, "orders", 0).await.is_empty());
}
