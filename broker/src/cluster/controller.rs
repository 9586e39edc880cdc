//! The cluster's internal manager: one host, elected through etcd, places partition
//! replicas and elects partition leaders (see [`super::placement`]).
//!
//! Election: the controller key is created only if absent, attached to the winner's
//! lease, so it disappears with the winner. The revision that created it is the
//! controller's epoch, and every write the controller makes carries a comparison on
//! it: a deposed controller that has not noticed yet cannot change anything.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use ferry_replication::LogKind;
use ferry_replication::election::{self, ReplicaReport};

use super::ClusterConfig;
use super::membership::LeaseStatus;
use super::placement::{Change, Desired, Hosts, PartitionKey, plan};
use super::records::ControllerRecord;
use super::view::ClusterView;
use crate::clock::now_ms;
use crate::meta::{
    Compare, EtcdConnection, MetaError, MetadataStore, Op, Revision, decode_json, encode_json, keys,
};
use crate::queue::QueueRecord;
use crate::topic::TopicRecord;

/// The controller role of one host: campaigns while the host is live, leads when elected.
#[derive(Debug)]
pub struct Controller {
    task: JoinHandle<()>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the controller role needs.
#[derive(Clone)]
pub struct ControllerContext {
    /// etcd, for the lease-attached election key.
    pub etcd: EtcdConnection,
    /// The metadata store (etcd) for desired state and partition states.
    pub meta: Arc<dyn MetadataStore>,
    /// This host's settings.
    pub config: ClusterConfig,
    /// This host's lease.
    pub lease: watch::Receiver<LeaseStatus>,
    /// The cluster as this host sees it.
    pub view: watch::Receiver<Arc<ClusterView>>,
}

impl Controller {
    /// Starts campaigning in the background.
    pub fn start(context: ControllerContext) -> Self {
        Self {
            task: tokio::spawn(campaign_forever(context)),
        }
    }
}

async fn campaign_forever(mut context: ControllerContext) {
    loop {
        let Some(lease) = wait_live(&mut context.lease).await else {
            return;
        };
        match campaign(&mut context.etcd.client(), &context.config, lease).await {
            Ok(Some(epoch)) => {
                tracing::info!(cluster = %context.config.cluster, host = %context.config.host_id, epoch, "elected controller");
                let reason = lead(&mut context, lease, epoch).await;
                tracing::warn!(cluster = %context.config.cluster, host = %context.config.host_id, %reason, "stepped down as controller");
            }
            Ok(None) => wait_for_vacancy(&mut context, lease).await,
            Err(err) => {
                tracing::warn!(error = %err, "controller campaign failed; retrying");
                tokio::time::sleep(context.config.retry_pause).await;
            }
        }
    }
}

/// Waits until the host holds a live lease; `None` when the membership ended.
async fn wait_live(lease: &mut watch::Receiver<LeaseStatus>) -> Option<i64> {
    loop {
        let status = *lease.borrow_and_update();
        if status.is_live(Instant::now())
            && let Some(id) = status.id
        {
            return Some(id);
        }
        lease.changed().await.ok()?;
    }
}

/// Tries to create the controller key under `lease`; the epoch if this host won.
async fn campaign(
    client: &mut Client,
    config: &ClusterConfig,
    lease: i64,
) -> Result<Option<Revision>, etcd_client::Error> {
    let key = keys::cluster_controller(&config.cluster);
    let record = ControllerRecord {
        host_id: config.host_id.clone(),
        elected_at_ms: now_ms(),
    };
    let txn = Txn::new()
        .when([EtcdCompare::create_revision(
            key.as_str(),
            CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put(
            key.as_str(),
            encode_json(&record),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let response = client.txn(txn).await?;
    if !response.succeeded() {
        // The seat may already be this host's under this very lease (it stepped down
        // on a stale view and campaigns again): it leads again at that epoch.
        let held = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .filter(|kv| kv.lease() == lease)
                .map(|kv| u64::try_from(kv.mod_revision()).unwrap_or(0)),
            _ => None,
        });
        return Ok(held);
    }
    let epoch = response
        .header()
        .map(|header| u64::try_from(header.revision()).unwrap_or(0))
        .unwrap_or(0);
    Ok(Some(epoch))
}

/// Waits until the controller seat is empty (or the lease changed), re-checking now
/// and then in case a watch event was missed.
async fn wait_for_vacancy(context: &mut ControllerContext, lease: i64) {
    let recheck = context.config.lease_ttl;
    let _ = tokio::time::timeout(recheck, async {
        loop {
            let vacant = context.view.borrow_and_update().controller.is_none();
            let same_lease = context.lease.borrow().id == Some(lease);
            if vacant || !same_lease {
                return;
            }
            tokio::select! {
                changed = context.view.changed() => if changed.is_err() { return },
                changed = context.lease.changed() => if changed.is_err() { return },
            }
        }
    })
    .await;
}

/// Leads until deposed; returns why it stopped.
async fn lead(context: &mut ControllerContext, lease: i64, epoch: Revision) -> String {
    let mut gone_since: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(context.config.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // New, changed and deleted topics and queues are placed at once, not on the tick.
    // Subscribed before the first read, so no record change is missed; the records are
    // read again only when one changed (ticks and view changes reuse them).
    let mut records = context.meta.watch(keys::ROOT);
    let mut wanted: Option<Vec<Desired>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = context.view.changed() => if changed.is_err() { return "view ended".into() },
            changed = context.lease.changed() => if changed.is_err() { return "membership ended".into() },
            event = records.next() => match event {
                Ok(event) if !is_record(event.key()) => continue,
                Ok(_) => wanted = None,
                // Lagged or closed (history compacted): plan again from a full read,
                // on a fresh subscription so a closed one does not spin.
                Err(_) => {
                    records = context.meta.watch(keys::ROOT);
                    wanted = None;
                }
            },
        }
        let status = *context.lease.borrow();
        if status.id != Some(lease) || !status.is_live(Instant::now()) {
            return "the host's lease is gone".into();
        }
        let view = Arc::clone(&context.view.borrow());
        match seat(view.controller.as_ref(), &context.config.host_id, epoch) {
            Seat::Held => {}
            Seat::NotSeenYet => continue,
            Seat::Taken(by) => return format!("{by} is controller now"),
        }
        if wanted.is_none() {
            match desired(context.meta.as_ref(), &context.config.cluster).await {
                Ok(read) => wanted = Some(read),
                Err(err) => {
                    tracing::warn!(%err, "cannot read topic and queue records; trying again");
                    continue;
                }
            }
        }
        let desired = wanted.as_deref().unwrap_or_default();
        match reconcile(context, &view, desired, epoch, &mut gone_since).await {
            Ok(()) => {}
            Err(ReconcileError::Deposed) => return "a write found another controller".into(),
            Err(ReconcileError::Meta(err)) => {
                tracing::warn!(%err, "reconcile failed; trying again");
            }
        }
    }
}

/// The event operators follow for placement and leadership (docs/operations.md):
/// one line per partition state the controller wrote.
fn log_change(cluster: &str, change: &Change) {
    match change {
        Change::Create { key, state } | Change::Update { key, state, .. } => tracing::info!(
            cluster,
            partition = %key,
            leader = state.leader.as_deref().unwrap_or("none"),
            leader_epoch = state.leader_epoch,
            replicas = %state.replicas.join(","),
            in_sync = %state.isr.join(","),
            "partition state written"
        ),
        Change::Delete { key, .. } => {
            tracing::info!(cluster, partition = %key, "partition state removed");
        }
    }
}

/// The controller seat as a host's view shows it to the controller elected at `epoch`.
#[derive(Debug, PartialEq, Eq)]
enum Seat {
    /// This controller's seat, or an empty one the view has not refilled yet.
    Held,
    /// The view still shows the seat from before this election (perhaps this host's
    /// own, under a lease it lost): it has not caught up, so wait rather than step
    /// down from a seat this host holds.
    NotSeenYet,
    /// Another election happened after this one: the named host leads now.
    Taken(String),
}

fn seat(shown: Option<&(ControllerRecord, Revision)>, host_id: &str, epoch: Revision) -> Seat {
    match shown {
        None => Seat::Held,
        Some((_, revision)) if *revision < epoch => Seat::NotSeenYet,
        Some((record, revision)) if *revision == epoch && record.host_id == host_id => Seat::Held,
        Some((record, _)) => Seat::Taken(record.host_id.clone()),
    }
}

/// Why one reconcile pass stopped.
#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    /// The controller key no longer carries this controller's epoch.
    #[error("deposed")]
    Deposed,
    /// The store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// One pass: plan against what should exist, write each change fenced by the epoch.
async fn reconcile(
    context: &ControllerContext,
    view: &ClusterView,
    desired: &[Desired],
    epoch: Revision,
    gone_since: &mut HashMap<String, Instant>,
) -> Result<(), ReconcileError> {
    let config = &context.config;
    let hosts = hosts(view, config, gone_since);
    let fence = Compare::ModRevision {
        key: keys::cluster_controller(&config.cluster),
        revision: Some(epoch),
    };
    recover_leaderless(context, view, &fence).await?;
    for change in plan(desired, &view.partitions, &hosts) {
        let (key, expected, op) = match &change {
            Change::Create { key, state } => (key, None, Some(encode_json(state))),
            Change::Update {
                key,
                state,
                revision,
            } => (key, Some(*revision), Some(encode_json(state))),
            Change::Delete { key, revision } => (key, Some(*revision), None),
        };
        let path = state_key(&config.cluster, key);
        let compares = vec![
            fence.clone(),
            Compare::ModRevision {
                key: path.clone(),
                revision: expected,
            },
        ];
        let ops = match op {
            Some(value) => vec![Op::Put { key: path, value }],
            // What its leader published, and its replicas' reports, go with the state.
            None => vec![
                Op::Delete { key: path },
                Op::Delete {
                    key: keys::observed(&config.cluster, key.kind, &key.name, key.partition),
                },
                Op::DeletePrefix {
                    prefix: keys::replica_reports(
                        &config.cluster,
                        key.kind,
                        &key.name,
                        key.partition,
                    ),
                },
            ],
        };
        if context.meta.txn(compares, ops).await?.succeeded {
            log_change(&config.cluster, &change);
            continue;
        }
        // Either the state moved under us (the view will catch up and the next pass
        // plans again) or this controller was deposed.
        let seat = context
            .meta
            .get(&keys::cluster_controller(&config.cluster))
            .await?;
        if seat.is_none_or(|kv| kv.mod_revision != epoch) {
            return Err(ReconcileError::Deposed);
        }
        return Ok(());
    }
    Ok(())
}

/// Partitions left without a leader or any in-sync replica (the last member's log was
/// damaged) get the state that lets them elect again once every replica has reported
/// its log for this epoch ([`election::recover_leaderless`]); until then they stay
/// leaderless, and the view reports them.
async fn recover_leaderless(
    context: &ControllerContext,
    view: &ClusterView,
    fence: &Compare,
) -> Result<(), ReconcileError> {
    let cluster = &context.config.cluster;
    for (key, (state, revision)) in &view.partitions {
        if state.leader.is_some() || !state.isr.is_empty() {
            continue;
        }
        let prefix = keys::replica_reports(cluster, key.kind, &key.name, key.partition);
        let mut reports = Vec::new();
        for kv in context.meta.list(&prefix).await? {
            let host = kv.key[prefix.len()..].to_owned();
            match decode_json::<ReplicaReport>(&kv.key, &kv.value) {
                Ok(report) => reports.push((host, report)),
                Err(err) => tracing::warn!(%err, key = kv.key, "unreadable replica report"),
            }
        }
        let Some(next) = election::recover_leaderless(state, &reports) else {
            continue;
        };
        let path = state_key(cluster, key);
        let compares = vec![
            fence.clone(),
            Compare::ModRevision {
                key: path.clone(),
                revision: Some(*revision),
            },
        ];
        let ops = vec![Op::Put {
            key: path,
            value: encode_json(&next),
        }];
        if context.meta.txn(compares, ops).await?.succeeded {
            tracing::warn!(
                partition = %key,
                in_sync = %next.isr.join(","),
                "every replica reported: the best logs are in sync again"
            );
        }
    }
    Ok(())
}

/// Whether `key` is a topic or queue record (the controller's desired state).
fn is_record(key: &str) -> bool {
    key.starts_with(keys::TOPICS) || key.starts_with(keys::QUEUES)
}

fn state_key(cluster: &str, key: &PartitionKey) -> String {
    keys::partition_state(cluster, key.kind, &key.name, key.partition)
}

/// Live hosts, replica holders gone longer than the grace period, and hosts asked to
/// leave.
fn hosts(
    view: &ClusterView,
    config: &ClusterConfig,
    gone_since: &mut HashMap<String, Instant>,
) -> Hosts {
    let live: BTreeSet<String> = view.hosts.keys().cloned().collect();
    let holders: BTreeSet<&String> = view
        .partitions
        .values()
        .flat_map(|(state, _)| state.replicas.iter())
        .collect();
    let now = Instant::now();
    gone_since.retain(|host, _| !live.contains(host) && holders.contains(host));
    let mut departed = BTreeSet::new();
    for host in holders {
        if live.contains(host) {
            continue;
        }
        let since = *gone_since.entry(host.clone()).or_insert(now);
        if now.duration_since(since) >= config.host_grace {
            departed.insert(host.clone());
        }
    }
    let zones = view
        .hosts
        .iter()
        .filter_map(|(id, record)| Some((id.clone(), record.zone.clone()?)))
        .collect();
    Hosts {
        live,
        departed,
        draining: view.draining.clone(),
        zones,
    }
}

/// Topics and queues mapped to `cluster`.
async fn desired(meta: &dyn MetadataStore, cluster: &str) -> Result<Vec<Desired>, MetaError> {
    let mut desired = Vec::new();
    for kv in meta.list(keys::TOPICS).await? {
        let record: TopicRecord = decode_json(&kv.key, &kv.value)?;
        if record.cluster.as_deref() == Some(cluster) {
            desired.push(Desired {
                kind: LogKind::Topic,
                partitions: record.settings.partitions,
                replication_factor: record.settings.replication_factor,
                name: record.name,
                leads_with: None,
            });
        }
    }
    for kv in meta.list(keys::QUEUES).await? {
        let record: QueueRecord = decode_json(&kv.key, &kv.value)?;
        if record.cluster.as_deref() == Some(cluster) {
            desired.push(Desired {
                kind: LogKind::Queue,
                partitions: 1,
                replication_factor: record.settings.replication_factor,
                leads_with: record.settings.dead_letter_queue,
                name: record.name,
            });
        }
    }
    Ok(desired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(host: &str, revision: Revision) -> (ControllerRecord, Revision) {
        let record = ControllerRecord {
            host_id: host.to_owned(),
            elected_at_ms: 0,
        };
        (record, revision)
    }

    #[test]
    fn a_view_from_before_the_election_is_waited_for_not_obeyed() {
        assert_eq!(seat(None, "h0", 13), Seat::Held);
        assert_eq!(seat(Some(&shown("h0", 13)), "h0", 13), Seat::Held);
        // This host's own seat under the lease it lost, or another host's seat that
        // has gone since: the view lags behind the election.
        assert_eq!(seat(Some(&shown("h0", 4)), "h0", 13), Seat::NotSeenYet);
        assert_eq!(seat(Some(&shown("h1", 4)), "h0", 13), Seat::NotSeenYet);
        assert_eq!(
            seat(Some(&shown("h1", 20)), "h0", 13),
            Seat::Taken("h1".to_owned())
        );
        assert_eq!(
            seat(Some(&shown("h0", 20)), "h0", 13),
            Seat::Taken("h0".to_owned())
        );
    }

    #[tokio::test]
    async fn a_host_that_holds_the_seat_under_its_lease_wins_its_campaign_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = ferry_e2e::EtcdServer::start(dir.path());
        let mut client = Client::connect([etcd.endpoint()], None)
            .await
            .expect("connect");
        let config = ClusterConfig::new("c", "h0", "127.0.0.1:1");
        let lease = client.lease_grant(30, None).await.expect("lease").id();
        let other = client.lease_grant(30, None).await.expect("lease").id();

        let epoch = campaign(&mut client, &config, lease)
            .await
            .expect("campaign")
            .expect("elected");
        assert_eq!(
            campaign(&mut client, &config, lease)
                .await
                .expect("campaign"),
            Some(epoch),
            "the seat is already this lease's: same epoch, no new election"
        );
        assert_eq!(
            campaign(&mut client, &config, other)
                .await
                .expect("campaign"),
            None,
            "a seat under another lease is taken"
        );
    }
}
