//! A damaged replica is never elected over whole copies, and repairs itself from them
//! (issue 11, defect 2). Real etcd, three `ferry-broker serve` hosts, one partition
//! replicated three times with `sync` acknowledgements in 64 KiB segments, 5,000
//! acknowledged messages.
//!
//! - Truncated segment: a follower is stopped, the other two are SIGKILLed within a
//!   second, and the follower's third segment is cut mid-batch. Started alone, it must
//!   not be elected (its recovery found the damage: it leaves the in-sync set before it
//!   registers), so the partition stays leaderless. When the others return, one of them
//!   leads with all 5,000 messages; the damaged host truncates below its lost range,
//!   fetches it back and rejoins the in-sync set; finally, alone again, it serves all
//!   5,000 by itself.
//! - Last in-sync member damaged: the followers die and the leader drops them, so it is
//!   the only member of the in-sync set when its own third segment is cut mid-batch.
//!   Started alone, it leaves the set anyway (a replica that may lack acknowledged
//!   records must not be elected while another that may hold them can return): the
//!   partition stays leaderless with an empty in-sync set. When the others return,
//!   every replica reports its log, and the controller elects from the best whole
//!   logs; every acknowledged message is served.
//! - Flipped byte: a follower stopped cleanly (its segments are trusted on restart, so
//!   recovery does not see the damage) rejoins; leaders are killed until it leads with a
//!   whole copy in the in-sync set. Readers still get every acknowledged message: the
//!   damaged leader finds the damage on a read, refuses it (retriable), and steps down
//!   so the whole copy leads; it then repairs from it and rejoins.
//! - Flipped bit in a leader's tail: a follower returns to batches the leader holds
//!   only in its active segment, which the replica stream sends unread; one of them is
//!   damaged. The follower refuses it by its CRC and asks for a checked read, the
//!   leader finds the damage and confines it, and every replica ends whole and in sync.
//! - Bad replica streams (not an opening, an opening cut short, a 4 GiB frame) are
//!   closed; refused requests are answered on an open stream; replication goes on.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::rpc;
use common::{ClusterView, FORM_DEADLINE, PartitionId, read_view, start_formed, wait_for_view};
use ferry_e2e::{Cluster, ClusterOptions};
use ferry_proto::internal::v1 as ipb;
use ferry_proto::v1 as pb;
use ferry_proto::v1::admin_service_client::AdminServiceClient;
use ferry_proto::v1::topic_service_client::TopicServiceClient;
use ferry_records::BatchBuilder;
use prost::Message;
use tokio::time::Instant;

const LEASE_TTL_MS: u64 = 2_000;
/// Hosts keep their replicas while down: they must come back to them.
const HOST_GRACE_MS: u64 = 600_000;
const MAX_LAG_MS: u64 = 3_000;
/// A leader closes a replica stream silent this long.
const STREAM_IDLE_TIMEOUT_MS: u64 = 3_000;
const TOPIC: &str = "ledger";
const MESSAGES: usize = 5_000;
const PER_REQUEST: usize = 50;
const SEGMENT_BYTES: u64 = 64 * 1024;
/// How long the damaged host alone must stay unelected: several lease TTLs, during
/// which the controller (itself) would have elected it if it were eligible.
const LEADERLESS_HOLD: Duration = Duration::from_secs(8);
const DEADLINE: Duration = Duration::from_secs(60);

fn partition() -> PartitionId {
    PartitionId::topic(TOPIC, 0)
}

fn options() -> ClusterOptions {
    ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        extra_args: vec![
            "--host-grace-ms".to_owned(),
            HOST_GRACE_MS.to_string(),
            "--replica-max-lag-ms".to_owned(),
            MAX_LAG_MS.to_string(),
            // Below assert_closed's 20 s, so the idle close is seen (default 60 s).
            "--replica-stream-idle-timeout-ms".to_owned(),
            STREAM_IDLE_TIMEOUT_MS.to_string(),
        ],
        ..ClusterOptions::default()
    }
}

fn value(i: usize) -> String {
    format!("message-{i:05}-{}", "x".repeat(120))
}

fn all_in_sync(view: &ClusterView) -> bool {
    view.all_led_in_sync(&[partition()], 3)
}

/// A formed cluster holding the topic with `MESSAGES` acknowledged messages, every
/// replica in sync.
async fn filled_cluster() -> (Cluster, etcd_client::Client) {
    let (cluster, mut etcd) = start_formed(options()).await;
    let name = cluster.name().to_owned();
    let channels = rpc::channels(&cluster);
    AdminServiceClient::new(channels["h0"].clone())
        .create_topic(pb::CreateTopicRequest {
            name: TOPIC.to_owned(),
            config: Some(pb::TopicConfig {
                partitions: 1,
                replication_factor: 3,
                durability: pb::Durability::Fsync as i32,
                replication: pb::ReplicationMode::Sync as i32,
                segment_bytes: Some(SEGMENT_BYTES),
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|status| panic!("create topic: {}", rpc::show(&status)));
    let view = wait_for_view(&mut etcd, &name, FORM_DEADLINE, "all in sync", all_in_sync).await;
    let leader = view.leader(&partition()).expect("a leader").to_owned();
    produce(&channels[&leader], 0..MESSAGES).await;
    wait_for_view(
        &mut etcd,
        &name,
        DEADLINE,
        "all in sync after the load",
        all_in_sync,
    )
    .await;
    (cluster, etcd)
}

/// Produces `value(i)` for each `i` in `messages` to the leader on `channel`, in
/// requests of `PER_REQUEST`, each acknowledged at offset `i`.
async fn produce(channel: &tonic::transport::Channel, messages: std::ops::Range<usize>) {
    let client = TopicServiceClient::new(channel.clone());
    for start in messages.clone().step_by(PER_REQUEST) {
        let mut builder = BatchBuilder::new();
        for i in start..(start + PER_REQUEST).min(messages.end) {
            builder.push(None, value(i).as_bytes(), &[], rpc::now_ms());
        }
        let records = builder.finish().expect("a batch");
        let response = rpc::until_led(DEADLINE, || {
            let mut client = client.clone();
            let request = pb::ProduceRequest {
                topic: TOPIC.to_owned(),
                batches: vec![pb::PartitionBatch {
                    partition: Some(0),
                    records: records.clone().into(),
                }],
                messages: Vec::new(),
                ..pb::ProduceRequest::default()
            };
            async move { client.produce(request).await }
        })
        .await
        .unwrap_or_else(|status| panic!("produce: {}", rpc::show(&status)))
        .into_inner();
        let result = &response.batches[0];
        assert!(result.error.is_none(), "produce {start}: {result:?}");
        assert_eq!(result.base_offset, start as u64, "offsets follow on");
    }
}

/// Reads the whole partition from whoever leads it, retrying while leadership moves,
/// and checks it holds exactly the acknowledged messages, in order.
async fn assert_every_message_served(cluster: &Cluster, etcd: &mut etcd_client::Client) {
    assert_messages_served(cluster, etcd, MESSAGES).await;
}

/// Like [`assert_every_message_served`], for the first `count` messages.
async fn assert_messages_served(cluster: &Cluster, etcd: &mut etcd_client::Client, count: usize) {
    let until = Instant::now() + DEADLINE;
    let mut last = String::new();
    while Instant::now() < until {
        let view = read_view(etcd, cluster.name()).await.expect("view");
        if let Some(leader) = view.leader(&partition()) {
            let channel = rpc::channel(cluster.host(leader));
            match read_all(&channel, count).await {
                Ok(values) if values.len() == count => {
                    for (i, read) in values.iter().enumerate() {
                        assert_eq!(*read, value(i), "message {i}");
                    }
                    return;
                }
                Ok(values) => last = format!("{leader} served {} messages", values.len()),
                Err(why) => last = format!("{leader}: {why}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("not all {count} acknowledged messages were served within {DEADLINE:?}: {last}");
}

/// Every value of the partition from offset 0 to the high watermark, as one host
/// serves it; an error (the host refused) as text. Panics if a lost range is served.
async fn read_all(
    channel: &tonic::transport::Channel,
    count: usize,
) -> Result<Vec<String>, String> {
    let mut client = TopicServiceClient::new(channel.clone());
    let mut values = Vec::new();
    let mut offset = 0u64;
    for _ in 0..count {
        let response = client
            .fetch(pb::FetchRequest {
                partitions: vec![pb::FetchPartition {
                    topic: TOPIC.to_owned(),
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
            .map_err(|status| rpc::show(&status))?
            .into_inner();
        let fetched = &response.partitions[0];
        if let Some(error) = &fetched.error {
            return Err(format!("at {offset}: {}", error.message));
        }
        if fetched.records.is_empty() {
            return Ok(values);
        }
        for batch in ferry_records::Batches::new(&fetched.records) {
            let batch = batch.map_err(|err| err.to_string())?;
            batch.verify_crc().map_err(|err| err.to_string())?;
            // Whole copies hold these records: a reader must never be told they are lost.
            assert!(
                !batch.header.is_lost_range(),
                "a lost range at {offset} reached a reader"
            );
            for record in batch.records() {
                let record = record.map_err(|err| err.to_string())?;
                values.push(String::from_utf8_lossy(record.value).into_owned());
            }
            offset = batch.header.next_offset();
        }
    }
    Err("the read made no progress".to_owned())
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let topic_dir = std::fs::read_dir(data_dir.join("topics"))
        .expect("topics dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{TOPIC}-")))
        })
        .expect("topic directory");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(topic_dir.join("0"))
        .expect("partition dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    assert!(logs.len() >= 8, "{} segments", logs.len());
    logs
}

/// Cuts the third segment of `host`'s partition log mid-batch (the host is stopped).
fn cut_third_segment_mid_batch(cluster: &Cluster, host: &str) {
    let data_dir = cluster.host(host).config().data_dir.clone();
    let third = &segments(&data_dir)[2];
    let len = std::fs::metadata(third).expect("segment").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(third)
        .and_then(|f| f.set_len(len / 2 + 7))
        .expect("cut the third segment mid-batch");
}

/// Starts `host` again while every other host is down, until the view shows it alone.
async fn restart_alone(cluster: &mut Cluster, etcd: &mut etcd_client::Client, host: &str) {
    cluster.host_mut(host).restart();
    let name = cluster.name().to_owned();
    wait_for_view(etcd, &name, DEADLINE, "the damaged host alone", |v| {
        v.hosts.len() == 1 && v.has_host(host)
    })
    .await;
}

/// The partition's leader and one of its followers.
async fn leader_and_follower(etcd: &mut etcd_client::Client, cluster: &str) -> (String, String) {
    let view = read_view(etcd, cluster).await.expect("view");
    let leader = view.leader(&partition()).expect("a leader").to_owned();
    (leader, followers(&view)[0].clone())
}

fn followers(view: &ClusterView) -> Vec<String> {
    let state = view.partition(&partition()).expect("partition state");
    state
        .replicas
        .iter()
        .filter(|h| state.leader.as_deref() != Some(h.as_str()))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_truncated_segment_is_not_elected_and_repairs_from_a_whole_copy() {
    let (mut cluster, mut etcd) = filled_cluster().await;
    let name = cluster.name().to_owned();
    let view = read_view(&mut etcd, &name).await.expect("view");
    let victim = followers(&view)[0].clone();
    let others: Vec<String> = ["h0", "h1", "h2"]
        .iter()
        .filter(|h| **h != victim)
        .map(|h| (*h).to_owned())
        .collect();

    assert!(cluster.host_mut(&victim).terminate(), "clean stop");
    for host in &others {
        cluster.host_mut(host).kill();
    }
    cut_third_segment_mid_batch(&cluster, &victim);
    // Alone: registered, the controller, and never the leader.
    restart_alone(&mut cluster, &mut etcd, &victim).await;
    let until = Instant::now() + LEADERLESS_HOLD;
    while Instant::now() < until {
        let view = read_view(&mut etcd, &name).await.expect("view");
        let state = view.partition(&partition()).expect("partition state");
        assert_ne!(
            state.leader.as_deref(),
            Some(victim.as_str()),
            "the damaged replica was elected: {state:?}"
        );
        assert!(
            !state.isr.contains(&victim),
            "the damaged replica is in the in-sync set: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The whole copies return: one leads with everything; the damaged one repairs.
    for host in &others {
        cluster.host_mut(host).restart();
    }
    wait_for_view(
        &mut etcd,
        &name,
        DEADLINE,
        "all three in sync again",
        all_in_sync,
    )
    .await;
    assert_every_message_served(&cluster, &mut etcd).await;

    // Alone again, the repaired host serves everything by itself.
    for host in &others {
        cluster.host_mut(host).kill();
    }
    wait_for_view(&mut etcd, &name, DEADLINE, "the repaired host leads", |v| {
        v.leader(&partition()) == Some(victim.as_str())
    })
    .await;
    assert_every_message_served(&cluster, &mut etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_last_in_sync_member_waits_for_every_replica_and_the_best_whole_log_leads() {
    let (mut cluster, mut etcd) = filled_cluster().await;
    let name = cluster.name().to_owned();
    let view = read_view(&mut etcd, &name).await.expect("view");
    let leader = view.leader(&partition()).expect("a leader").to_owned();
    let others = followers(&view);

    for host in &others {
        cluster.host_mut(host).kill();
    }
    wait_for_view(
        &mut etcd,
        &name,
        DEADLINE,
        "the leader alone in sync",
        |v| {
            v.partition(&partition())
                .is_some_and(|s| s.isr == [leader.clone()] && s.leader.as_deref() == Some(&leader))
        },
    )
    .await;
    assert!(cluster.host_mut(&leader).terminate(), "clean stop");
    cut_third_segment_mid_batch(&cluster, &leader);
    // Alone, the damaged last member leaves the set: leaderless, not elected.
    restart_alone(&mut cluster, &mut etcd, &leader).await;
    let until = Instant::now() + LEADERLESS_HOLD;
    while Instant::now() < until {
        let view = read_view(&mut etcd, &name).await.expect("view");
        let state = view.partition(&partition()).expect("partition state");
        assert!(
            state.leader.is_none() && state.isr.is_empty(),
            "the damaged last member must leave and not lead: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every replica reports; the best whole logs are in sync again and one leads.
    for host in &others {
        cluster.host_mut(host).restart();
    }
    let view = wait_for_view(&mut etcd, &name, DEADLINE, "a whole copy leads", |v| {
        v.leader(&partition()).is_some_and(|l| l != leader)
    })
    .await;
    let state = view.partition(&partition()).expect("partition state");
    assert!(
        !state.isr.contains(&leader),
        "elected from the whole logs: {state:?}"
    );
    assert_every_message_served(&cluster, &mut etcd).await;
    wait_for_view(
        &mut etcd,
        &name,
        DEADLINE,
        "the damaged host repaired and back in sync",
        all_in_sync,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_flipped_byte_never_serves_the_damage_to_readers() {
    let (mut cluster, mut etcd) = filled_cluster().await;
    let name = cluster.name().to_owned();
    let (leader, victim) = leader_and_follower(&mut etcd, &name).await;

    assert!(cluster.host_mut(&victim).terminate(), "clean stop");
    let data_dir = cluster.host(&victim).config().data_dir.clone();
    let third = &segments(&data_dir)[2];
    let mut bytes = std::fs::read(third).expect("read segment");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(third, &bytes).expect("flip a byte");
    cluster.host_mut(&victim).restart();
    wait_for_view(
        &mut etcd,
        &name,
        DEADLINE,
        "the stopped host back in sync",
        all_in_sync,
    )
    .await;

    // Kill leaders until the damaged host takes over with a whole copy still in the
    // in-sync set (an election picks either; each round restarts the killed host).
    let mut killed = leader;
    for round in 0..8 {
        cluster.host_mut(&killed).kill();
        let view = wait_for_view(&mut etcd, &name, DEADLINE, "a new leader", |v| {
            v.leader(&partition()).is_some_and(|l| l != killed)
        })
        .await;
        let now = view.leader(&partition()).expect("a leader").to_owned();
        if now == victim {
            break;
        }
        assert!(round < 7, "the damaged host was never elected");
        cluster.host_mut(&killed).restart();
        wait_for_view(&mut etcd, &name, DEADLINE, "all in sync", all_in_sync).await;
        killed = now;
    }
    // Readers get every acknowledged message: the damaged leader refuses what it lost
    // and gives way to the whole copy, then repairs from it.
    assert_every_message_served(&cluster, &mut etcd).await;
    let view = read_view(&mut etcd, &name).await.expect("view");
    assert_ne!(
        view.leader(&partition()),
        Some(victim.as_str()),
        "it gave way"
    );
    cluster.host_mut(&killed).restart();
    wait_for_view(
        &mut etcd,
        &name,
        DEADLINE,
        "all three in sync again",
        all_in_sync,
    )
    .await;
}

/// The leader's gauge of offsets it lost to damage.
const LEADER_LOST: &str = "ferry_log_lost_records{topic=\"ledger\",partition=\"0\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_confines_damage_in_its_tail_instead_of_sending_it_unread() {
    let (mut cluster, mut etcd) = filled_cluster().await;
    let name = cluster.name().to_owned();
    let (leader, victim) = leader_and_follower(&mut etcd, &name).await;

    // More messages while a follower is away: the leader's cached tail, which the
    // replica stream sends it from the segment file without reading it.
    assert!(cluster.host_mut(&victim).terminate(), "clean stop");
    let total = MESSAGES + 2 * PER_REQUEST;
    produce(&rpc::channel(cluster.host(&leader)), MESSAGES..total).await;
    // A flipped bit under the last batch's CRC, in the leader's active segment (through
    // the page cache the leader sends from).
    let data_dir = cluster.host(&leader).config().data_dir.clone();
    let active = segments(&data_dir).pop().expect("an active segment");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&active)
        .expect("open the active segment");
    let at = file.metadata().expect("segment size").len() - 20;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).expect("read a byte");
    file.write_all_at(&[byte[0] ^ 0x04], at)
        .expect("flip a bit");

    // The returning follower refuses the batch (its CRC fails) and asks for a read
    // the leader checks: the leader finds the damage and confines it to a lost range.
    cluster.host_mut(&victim).restart();
    let metrics = cluster.host(&leader).metrics_addr().expect("metrics");
    let until = Instant::now() + DEADLINE;
    loop {
        let scraped = ferry_e2e::http_get(metrics, "/metrics").unwrap_or_default();
        let lost = scraped
            .lines()
            .find_map(|line| line.strip_prefix(LEADER_LOST))
            .and_then(|value| value.trim().parse::<f64>().ok());
        if lost.is_some_and(|lost| lost > 0.0) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the leader never found the damage in its tail: {lost:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The whole copy serves every acknowledged message, and every replica ends whole
    // and in sync.
    assert_messages_served(&cluster, &mut etcd, total).await;
    wait_for_view(
        &mut etcd,
        &name,
        DEADLINE,
        "all three in sync again",
        all_in_sync,
    )
    .await;
}

/// A replica stream's opening, as `docs/replication.md` gives it.
const STREAM_MAGIC: [u8; 8] = *b"\0FERRYR1";

/// A connection to `peer` (a host's peer listener).
fn connect(peer: &str) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(peer).expect("connect to the peer listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    stream
}

/// A replica stream to `peer`, past its opening.
fn open_stream(peer: &str) -> std::net::TcpStream {
    let mut stream = connect(peer);
    stream.write_all(&STREAM_MAGIC).expect("opening");
    let mut answer = [0u8; 8];
    stream
        .read_exact(&mut answer)
        .expect("the opening answered");
    assert_eq!(answer, STREAM_MAGIC);
    stream
}

/// Sends `request` on a replica stream and reads the leader's answer frame.
fn ask(
    stream: &mut std::net::TcpStream,
    request: &ipb::ReplicaStreamRequest,
) -> ipb::ReplicaStreamResponse {
    let body = request.encode_to_vec();
    stream
        .write_all(&(body.len() as u32).to_be_bytes())
        .and_then(|()| stream.write_all(&body))
        .expect("send a request");
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("an answer's length");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).expect("an answer");
    ipb::ReplicaStreamResponse::decode(body.as_slice()).expect("an answer frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replica_streams_are_dropped_and_replication_goes_on() {
    let (mut cluster, mut etcd) = filled_cluster().await;
    let name = cluster.name().to_owned();
    let view = read_view(&mut etcd, &name).await.expect("view");
    let leader = view.leader(&partition()).expect("a leader").to_owned();
    let peer = view.hosts[&leader]
        .peer_advertise
        .clone()
        .expect("a peer address");

    // Not a stream's opening after its first byte; an opening cut short; a frame
    // longer than any request may be. Each is closed.
    let mut garbage = connect(&peer);
    garbage
        .write_all(&[0, 1, 2, 3, 4, 5, 6, 7])
        .expect("garbage");
    garbage.write_all(&[0x42; 4096]).expect("garbage");
    common::assert_closed(garbage, "a connection that is no stream");
    let mut cut = connect(&peer);
    cut.write_all(&STREAM_MAGIC[..4]).expect("half an opening");
    common::assert_closed(cut, "an opening cut short");
    let mut oversized = open_stream(&peer);
    oversized
        .write_all(&u32::MAX.to_be_bytes())
        .expect("a length");
    common::assert_closed(oversized, "a stream sending a 4 GiB frame");
    // An opened stream that then says nothing is closed after the idle timeout.
    common::assert_closed(open_stream(&peer), "a stream silent after its opening");

    // Requests the leader refuses are answered with the status ReplicaFetch would
    // give, and the stream stays open.
    let mut refused = open_stream(&peer);
    let empty = ask(&mut refused, &ipb::ReplicaStreamRequest::default());
    let code = empty
        .error
        .as_ref()
        .map(|error| tonic::Code::from(error.code));
    assert_eq!(code, Some(tonic::Code::InvalidArgument), "{empty:?}");
    let unknown = ipb::ReplicaStreamRequest {
        fetch: Some(ipb::ReplicaFetchRequest {
            topic: "no-such-topic".to_owned(),
            ..ipb::ReplicaFetchRequest::default()
        }),
        verify: false,
    };
    let answer = ask(&mut refused, &unknown);
    assert!(
        answer.error.is_some() && answer.fetch.is_none(),
        "{answer:?}"
    );

    // Replication goes on.
    assert!(cluster.host_mut(&leader).is_running());
    let total = MESSAGES + PER_REQUEST;
    produce(&rpc::channel(cluster.host(&leader)), MESSAGES..total).await;
    wait_for_view(&mut etcd, &name, DEADLINE, "all in sync", all_in_sync).await;
    assert_messages_served(&cluster, &mut etcd, total).await;
}
