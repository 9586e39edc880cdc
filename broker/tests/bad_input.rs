//! Bad input gets a clear error, the broker stays up, and nothing stored is lost.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{BrokerProcess, admin, batch, channel, create_topic, detail, read_partition, topics};
use ferry_proto::v1 as pb;
use ferry_proto::v1::group_service_client::GroupServiceClient;
use tonic::Code;

fn produce_to(topic: &str, records: Vec<u8>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        batches: vec![pb::PartitionBatch {
            partition: Some(0),
            records: records.into(),
        }],
        ..pb::ProduceRequest::default()
    }
}

fn assert_refused(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
    error: pb::ErrorCode,
) {
    let status = result.expect_err("request must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(detail(&status).code, error as i32, "{status:?}");
    assert!(!status.message().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start_with(dir.path(), &["--max-message-bytes", "1024"]);
    let ch = channel(&broker.url()).await;
    create_topic(&ch, "kept", 1, pb::Durability::Fsync).await;
    let mut client = topics(&ch);
    client
        .produce(produce_to("kept", batch(&[b"precious".to_vec()], None)))
        .await
        .expect("seed data");

    // Unknown topic.
    assert_refused(
        client
            .produce(produce_to("nope", batch(&[b"x".to_vec()], None)))
            .await,
        Code::NotFound,
        pb::ErrorCode::TopicNotFound,
    );
    // Invalid names.
    for name in ["", "a/b", "..", &"x".repeat(300)] {
        assert_refused(
            admin(&ch)
                .create_topic(pb::CreateTopicRequest {
                    name: name.to_owned(),
                    config: None,
                })
                .await,
            Code::InvalidArgument,
            pb::ErrorCode::InvalidName,
        );
    }
    // Oversized message.
    assert_refused(
        client
            .produce(produce_to("kept", batch(&[vec![7u8; 4096]], None)))
            .await,
        Code::InvalidArgument,
        pb::ErrorCode::MessageTooLarge,
    );
    // Empty request and empty batch bytes.
    assert_refused(
        client
            .produce(pb::ProduceRequest {
                topic: "kept".into(),
                batches: vec![],
                messages: vec![],
                ..pb::ProduceRequest::default()
            })
            .await,
        Code::InvalidArgument,
        pb::ErrorCode::EmptyBatch,
    );
    assert_refused(
        client.produce(produce_to("kept", Vec::new())).await,
        Code::InvalidArgument,
        pb::ErrorCode::EmptyBatch,
    );
    // Corrupt batch bytes: a flipped bit under the CRC.
    let mut corrupt = batch(&[b"x".to_vec()], None);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let response = client.produce(produce_to("kept", corrupt)).await;
    let refused = match response {
        Err(status) => detail(&status).code,
        Ok(r) => r.into_inner().batches[0]
            .error
            .as_ref()
            .map_or(0, |e| e.code),
    };
    assert_eq!(refused, pb::ErrorCode::CorruptBatch as i32);
    // A large request (its batches are checked off the async workers) with one bad
    // batch after good ones is refused whole: none of it is written.
    let good = batch(&vec![vec![7u8; 1000]; 500], None);
    let mut bad = batch(&[b"y".to_vec()], None);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let mut request = produce_to("kept", good.clone());
    request
        .batches
        .extend([good, bad].map(|records| pb::PartitionBatch {
            partition: Some(0),
            records: records.into(),
        }));
    assert_refused(
        client.produce(request).await,
        Code::InvalidArgument,
        pb::ErrorCode::CorruptBatch,
    );
    // Unknown partition.
    let mut request = produce_to("kept", batch(&[b"x".to_vec()], None));
    request.batches[0].partition = Some(99);
    assert_refused(
        client.produce(request).await,
        Code::NotFound,
        pb::ErrorCode::PartitionNotFound,
    );
    // Partition count above the limit.
    assert_refused(
        admin(&ch)
            .create_topic(pb::CreateTopicRequest {
                name: "too-many".into(),
                config: Some(pb::TopicConfig {
                    partitions: 100_000,
                    ..Default::default()
                }),
            })
            .await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidArgument,
    );
    // A huge long-poll wait.
    assert_refused(
        client
            .fetch(pb::FetchRequest {
                partitions: vec![pb::FetchPartition {
                    topic: "kept".into(),
                    partition: 0,
                    offset: 0,
                    max_bytes: u32::MAX,
                }],
                max_wait_ms: u32::MAX,
                min_bytes: 0,
                max_bytes: u32::MAX,
                decode: false,
            })
            .await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidArgument,
    );
    // Huge byte limits are capped, not errors.
    let fetched = client
        .fetch(pb::FetchRequest {
            partitions: vec![pb::FetchPartition {
                topic: "kept".into(),
                partition: 0,
                offset: 0,
                max_bytes: u32::MAX,
            }],
            max_wait_ms: 0,
            min_bytes: u32::MAX,
            max_bytes: u32::MAX,
            decode: false,
        })
        .await
        .expect("capped fetch")
        .into_inner();
    assert!(!fetched.partitions[0].records.is_empty());
    // Offset far past the end.
    let past = client
        .fetch(pb::FetchRequest {
            partitions: vec![pb::FetchPartition {
                topic: "kept".into(),
                partition: 0,
                offset: u64::MAX,
                max_bytes: 0,
            }],
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 0,
            decode: false,
        })
        .await
        .expect("call succeeds")
        .into_inner();
    let error = past.partitions[0].error.as_ref().expect("out of range");
    assert_eq!(error.code, pb::ErrorCode::OffsetOutOfRange as i32);
    // Session timeout out of range.
    assert_refused(
        GroupServiceClient::new(ch.clone())
            .join_group(pb::JoinGroupRequest {
                group: "g".into(),
                topics: vec!["kept".into()],
                session_timeout_ms: u32::MAX,
                client_id: "t".into(),
            })
            .await,
        Code::InvalidArgument,
        pb::ErrorCode::InvalidArgument,
    );

    // Garbage bytes on the gRPC port.
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xffu8; 4096][..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\xff\xff\xff\xff\xff",
    ] {
        let mut stream = std::net::TcpStream::connect(broker.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let _ = stream.write_all(garbage);
        let mut sink = [0u8; 1024];
        let _ = stream.read(&mut sink);
    }
    assert!(broker.is_running(), "garbage did not kill the broker");

    // Everything stored before is still there, and the broker still works.
    let ch = channel(&broker.url()).await;
    let values: Vec<Vec<u8>> = read_partition(&ch, "kept", 0)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values, vec![b"precious".to_vec()]);
    topics(&ch)
        .produce(produce_to("kept", batch(&[b"still-works".to_vec()], None)))
        .await
        .expect("produce after abuse");
    assert!(broker.terminate(), "graceful shutdown exits cleanly");
}
