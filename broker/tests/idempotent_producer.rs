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
        messages: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(dir.path());
    let ch = channel(&broker.url()).await;
    create_topic(&ch, "payments", 1, pb::Durability::Fsync).await;
    let mut client = topics(&ch);
    let id = client
        .init_producer(pb::InitProducerRequest {})
        .await
        .expect("init producer")
        .into_inner()
        .producer_id;
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
