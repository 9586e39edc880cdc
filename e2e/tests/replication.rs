//! Replication against real processes: a topic with three replicas per partition.
//!
//! - `sync`: producers keep writing while the leader is SIGKILLed; a new leader serves
//!   within 10 s, and no acknowledged message is lost. The killed host comes back,
//!   truncates what it had beyond the new leader's log and rejoins the in-sync set.
//!   Then a follower's disk is wiped; it copies everything back, rejoins, and — once
//!   it is the only host left — serves the whole partition by itself.
//! - `async`: the same leader kill, with the loss measured and printed (it may be
//!   non-zero: an async write is acknowledged before the followers have it).
//!
//! Every send is recorded in a [`History`] and the checker judges what is read back.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::load::{self, Load, LoadSpec};
use common::rpc;
use common::{ClusterView, FORM_DEADLINE, PartitionId, read_view, start_formed, wait_for_view};
use ferry_e2e::history::Anomaly;
use ferry_e2e::{CheckOptions, Cluster, ClusterOptions, History, Verdict, check};
use ferry_proto::v1 as pb;
use tokio::time::Instant;

const LEASE_TTL_MS: u64 = 2_000;
/// The killed host's replicas stay where they are: it must come back to them.
const HOST_GRACE_MS: u64 = 600_000;
/// A stopped follower leaves the in-sync set this soon, so `sync` writes go on.
const MAX_LAG_MS: u64 = 3_000;
const TOPIC: &str = "ledger";
const PARTITIONS: u32 = 2;
const PRODUCERS: u32 = 4;
/// Acknowledged sends before the leader is killed, and after a new one serves.
const SENDS_PER_PHASE: u64 = 300;
/// The promise: a new leader serves within 10 s of the kill.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(10);
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);
const PHASE_DEADLINE: Duration = Duration::from_secs(60);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
const LOAD: LoadSpec = LoadSpec {
    topic: TOPIC,
    partitions: PARTITIONS,
    producers: PRODUCERS,
    send_timeout: SEND_TIMEOUT,
};

/// Hosts whose followers fetch over `transport` (`stream` or `grpc`).
fn options(transport: &str) -> ClusterOptions {
    ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        extra_args: vec![
            "--host-grace-ms".to_owned(),
            HOST_GRACE_MS.to_string(),
            "--replica-max-lag-ms".to_owned(),
            MAX_LAG_MS.to_string(),
            format!("--replica-transport={transport}"),
        ],
        ..ClusterOptions::default()
    }
}

fn partition(p: u32) -> PartitionId {
    LOAD.partition(p)
}

fn all_in_sync(view: &ClusterView) -> bool {
    view.all_led_in_sync(&LOAD.partitions(), 3)
}

async fn start_replicated(
    mode: pb::ReplicationMode,
    transport: &str,
) -> (Cluster, etcd_client::Client) {
    let (cluster, mut etcd) = start_formed(options(transport)).await;
    let name = cluster.name().to_owned();
    let channels = rpc::channels(&cluster);
    rpc::create_replicated_topic(&channels["h0"], TOPIC, PARTITIONS, 3, mode).await;
    wait_for_view(
        &mut etcd,
        &name,
        FORM_DEADLINE,
        "every partition led with three in-sync replicas",
        all_in_sync,
    )
    .await;
    (cluster, etcd)
}

/// Kills the busiest leader under load and waits until every partition it led is
/// served by another host. Returns the killed host and how long that took.
async fn kill_leader_under_load(
    cluster: &mut Cluster,
    etcd: &mut etcd_client::Client,
    load: &Load,
) -> (String, Duration) {
    let name = cluster.name().to_owned();
    load.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE, "before the kill")
        .await;
    let view = read_view(etcd, &name).await.expect("view");
    let victim = view
        .busiest_leader(&LOAD.partitions())
        .expect("some leader");
    let led: Vec<u32> = (0..PARTITIONS)
        .filter(|p| view.leader(&partition(*p)) == Some(victim.as_str()))
        .collect();
    let before = load.acked_by().await;
    cluster.host_mut(&victim).kill();
    let killed_at = Instant::now();
    // Served again: a produce acknowledged by another host, on each partition it led.
    let served = wait_for_view(
        etcd,
        &name,
        FAILOVER_DEADLINE,
        "a new leader for every partition of the killed host",
        |v| {
            led.iter()
                .all(|p| v.leader(&partition(*p)).is_some_and(|l| l != victim))
        },
    )
    .await;
    let new_leaders: Vec<String> = led
        .iter()
        .filter_map(|p| served.leader(&partition(*p)).map(str::to_owned))
        .collect();
    loop {
        let now = load.acked_by().await;
        let serving = new_leaders
            .iter()
            .all(|h| now.get(h).copied().unwrap_or(0) > before.get(h).copied().unwrap_or(0));
        if serving {
            break;
        }
        assert!(
            killed_at.elapsed() < FAILOVER_DEADLINE,
            "no acknowledged send from the new leaders {new_leaders:?} within \
             {FAILOVER_DEADLINE:?} of killing {victim}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (victim, killed_at.elapsed())
}

/// Waits for `host` to report ready (its readiness probe), and checks that by then
/// it is in the in-sync set of every partition: a rolling restart waits on exactly
/// this before it takes the next host down.
/// Returns how many polls found it not ready.
async fn ready_only_in_sync(cluster: &Cluster, etcd: &mut etcd_client::Client, host: &str) -> u32 {
    let channel = rpc::channel(cluster.host(host));
    let deadline = tokio::time::Instant::now() + CATCH_UP_DEADLINE;
    let mut polls_not_ready = 0u32;
    while !rpc::ready(&channel).await {
        polls_not_ready += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "{host} did not report ready within {CATCH_UP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = read_view(etcd, cluster.name()).await.expect("view");
    for p in 0..PARTITIONS {
        let state = view.partition(&partition(p)).expect("partition state");
        assert!(
            state.isr.iter().any(|h| h == host),
            "{host} reported ready while outside partition {p}'s in-sync set {:?}",
            state.isr
        );
    }
    eprintln!("{host} reported ready after {polls_not_ready} polls that said not ready");
    polls_not_ready
}

fn assert_valid(verdict: &Verdict, what: &str) {
    assert!(verdict.valid, "{what}: {}", verdict.to_json());
}

/// The leaders' count of topic partitions whose in-sync set lacks a replica.
const UNDER_REPLICATED: &str = "ferry_cluster_partitions_under_replicated{kind=\"topics\"}";

/// Bytes leaders sent followers over the replica stream from their segment files,
/// unread, and over gRPC.
const SENT_LOCATED: &str =
    "ferry_replica_sent_bytes_total{transport=\"stream\",reading=\"located\"}";
const SENT_OVER_GRPC: &str = "ferry_replica_sent_bytes_total{transport=\"grpc\",reading=\"read\"}";
const SENT_OVER_STREAM: &str = "ferry_replica_sent_bytes_total{transport=\"stream\"";

/// The value of the sample line starting with `series` (labels included).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
}

/// Waits until the metrics of one of `hosts` satisfy `wanted`.
async fn metric_eventually(
    cluster: &Cluster,
    hosts: &[String],
    what: &str,
    wanted: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    loop {
        let scraped: Vec<String> = hosts
            .iter()
            .filter_map(|host| cluster.host(host).metrics_addr())
            .filter_map(|addr| ferry_e2e::http_get(addr, "/metrics").ok())
            .collect();
        if scraped.iter().any(|metrics| wanted(metrics)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}: {scraped:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn sync_replication_loses_nothing_acknowledged_when_the_leader_dies_and_replicas_catch_up() {
    let (mut cluster, mut etcd) = start_replicated(pb::ReplicationMode::Sync, "stream").await;
    let name = cluster.name().to_owned();
    let load = Load::start(&LOAD, cluster.etcd_endpoint(), name.clone(), History::new());

    // 1. The leader dies mid-produce: a new leader serves within 10 s.
    let (victim, failover) = kill_leader_under_load(&mut cluster, &mut etcd, &load).await;
    eprintln!("sync: {victim} killed; a new leader acknowledged after {failover:?}");
    load.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE, "after the failover")
        .await;

    // 2. It returns with its data, truncates by epoch, catches up, rejoins; it
    //    reports ready only once back in every in-sync set.
    cluster.host_mut(&victim).restart();
    ready_only_in_sync(&cluster, &mut etcd, &victim).await;
    wait_for_view(
        &mut etcd,
        &name,
        CATCH_UP_DEADLINE,
        "the restarted host back in every in-sync set",
        all_in_sync,
    )
    .await;
    load.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE, "with the returned host")
        .await;

    // 3. A follower loses its disk: it leaves the in-sync set, copies everything
    //    back, and rejoins.
    let view = read_view(&mut etcd, &name).await.expect("view");
    let leaders: Vec<String> = (0..PARTITIONS)
        .filter_map(|p| view.leader(&partition(p)).map(str::to_owned))
        .collect();
    let wiped = ["h0", "h1", "h2"]
        .into_iter()
        .find(|h| !leaders.iter().any(|l| l == h))
        .unwrap_or("h2")
        .to_owned();
    {
        let host = cluster.host_mut(&wiped);
        host.kill();
        host.wipe_data();
    }
    load.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE, "while a replica is down")
        .await;
    // The leaders' metrics say so: partitions under-replicated.
    metric_eventually(&cluster, &leaders, "under-replicated partitions", |m| {
        sample(m, UNDER_REPLICATED) >= Some(1.0)
    })
    .await;
    cluster.host_mut(&wiped).restart();
    // A wiped disk leaves every in-sync set before the host registers: it cannot
    // be ready at once.
    let not_ready = ready_only_in_sync(&cluster, &mut etcd, &wiped).await;
    assert!(
        not_ready > 0,
        "the wiped host reported ready before copying anything back"
    );
    wait_for_view(
        &mut etcd,
        &name,
        CATCH_UP_DEADLINE,
        "the wiped host back in every in-sync set",
        all_in_sync,
    )
    .await;
    load.wait_for_acks(
        SENDS_PER_PHASE,
        PHASE_DEADLINE,
        "after the wiped host returned",
    )
    .await;
    // Back in sync: nothing under-replicated, and a leader sees each follower of
    // what it leads caught up moments ago, a few messages behind at most.
    metric_eventually(
        &cluster,
        &leaders,
        "every partition fully replicated",
        |m| {
            let lags = |name: &str| -> Vec<f64> {
                m.lines()
                    .filter(|line| line.starts_with(name))
                    .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
                    .collect()
            };
            let seconds = lags("ferry_replica_lag_seconds{");
            let messages = lags("ferry_replica_lag_messages{");
            sample(m, UNDER_REPLICATED) == Some(0.0)
                && !seconds.is_empty()
                && seconds.len() == messages.len()
                && seconds.iter().all(|s| *s * 1000.0 <= MAX_LAG_MS as f64)
                && messages.iter().all(|n| *n < SENDS_PER_PHASE as f64)
        },
    )
    .await;
    let history = load.stop().await;

    // Followers took batches over the replica stream, sent unread from the leaders'
    // segment files (`sendfile`).
    let hosts = ["h0", "h1", "h2"].map(str::to_owned);
    metric_eventually(&cluster, &hosts, "batches sent from segment files", |m| {
        sample(m, SENT_LOCATED) > Some(0.0)
    })
    .await;

    // 4. Only the wiped host is left: it must hold everything acknowledged.
    for host in ["h0", "h1", "h2"] {
        if host != wiped {
            cluster.host_mut(host).kill();
        }
    }
    wait_for_view(
        &mut etcd,
        &name,
        CATCH_UP_DEADLINE,
        "the wiped host leading every partition alone",
        |v| {
            (0..PARTITIONS).all(|p| {
                v.partition(&partition(p)).is_some_and(|s| {
                    s.leader.as_deref() == Some(wiped.as_str()) && s.isr == [wiped.clone()]
                })
            })
        },
    )
    .await;
    load::record_reads(&history, &load::read_back(&mut etcd, &name, &LOAD).await);
    let verdict = check(
        &history,
        &CheckOptions {
            idempotent_producer: true,
            ..CheckOptions::default()
        },
    );
    eprintln!("sync verdict: {}", verdict.to_json());
    assert_valid(
        &verdict,
        "sync replication, read back from the wiped replica",
    );
    assert!(
        verdict.counts.acked >= SENDS_PER_PHASE * 4,
        "{:?}",
        verdict.counts
    );
}

#[tokio::test]
async fn async_replication_loss_on_a_leader_kill_is_measured() {
    let (mut cluster, mut etcd) = start_replicated(pb::ReplicationMode::Async, "grpc").await;
    let name = cluster.name().to_owned();
    let load = Load::start(&LOAD, cluster.etcd_endpoint(), name.clone(), History::new());
    let (victim, failover) = kill_leader_under_load(&mut cluster, &mut etcd, &load).await;
    load.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE, "after the failover")
        .await;
    let history = load.stop().await;
    // These hosts were told to fetch over gRPC only.
    let hosts = ["h0", "h1", "h2"].map(str::to_owned);
    metric_eventually(&cluster, &hosts, "batches sent over gRPC", |m| {
        sample(m, SENT_OVER_GRPC) > Some(0.0)
    })
    .await;
    for host in &hosts {
        if let Some(metrics) = cluster
            .host(host)
            .metrics_addr()
            .and_then(|addr| ferry_e2e::http_get(addr, "/metrics").ok())
        {
            assert!(
                !metrics.contains(SENT_OVER_STREAM),
                "{host} used the stream"
            );
        }
    }
    load::record_reads(&history, &load::read_back(&mut etcd, &name, &LOAD).await);
    let verdict = check(
        &history,
        &CheckOptions {
            idempotent_producer: true,
            // Every anomaly listed: order violations are matched against losses below.
            max_anomalies: usize::MAX,
        },
    );
    assert_eq!(verdict.anomalies_omitted, 0);
    let counts = &verdict.counts;
    // The one figure the issue asks for, as a JSON line for the closing note.
    println!(
        "{{\"scenario\":\"async-leader-kill\",\"killed\":\"{victim}\",\"failover_ms\":{},\
         \"acked\":{},\"lost\":{}}}",
        failover.as_millis(),
        counts.acked,
        counts.lost
    );
    // Loss is allowed under async, and so is what loss implies: the new leader
    // assigns a lost write's offset again, so a later acknowledgement of the same
    // producer can land below an earlier, lost one. Nothing else is allowed.
    let lost: BTreeSet<u64> = verdict
        .anomalies
        .iter()
        .filter_map(|a| match a {
            Anomaly::Lost { op, .. } => Some(*op),
            _ => None,
        })
        .collect();
    let order_after_loss = verdict
        .anomalies
        .iter()
        .filter(|a| matches!(a, Anomaly::Order { earlier_op, .. } if lost.contains(earlier_op)))
        .count() as u64;
    let others = counts.wrong_offset
        + counts.wrong_partition
        + counts.duplicates
        + counts.phantoms
        + counts.failed_but_visible
        + (counts.order_violations - order_after_loss)
        + counts.offset_conflicts
        + counts.reused_values;
    assert_eq!(others, 0, "async: {}", verdict.to_json());
}
