//! The broker: topics, queues, groups, committed offsets and metrics behind one handle that
//! every gRPC service shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ferry_replication::LogKind;

use crate::cluster::routing::Routing;
use crate::config::BrokerConfig;
use crate::error::{BrokerError, BrokerResult};
use crate::group::{GroupCoordinator, TopicPartition};
use crate::meta::MetadataStore;
use crate::metrics::Metrics;
use crate::offsets::OffsetStore;
use crate::queue::{Housekeeping, QueueCluster, Queues};
use crate::topic::{Topic, TopicOverrides, Topics};

/// Shared state of one broker host.
pub struct Broker {
    /// Configuration in force.
    pub config: BrokerConfig,
    /// The metadata store.
    pub meta: Arc<dyn MetadataStore>,
    /// Topics on this host.
    pub topics: Topics,
    /// Queues on this host.
    pub queues: Queues,
    /// Committed group offsets.
    pub offsets: OffsetStore,
    /// Metrics.
    pub metrics: Metrics,
    /// Cluster mode: which partitions this host may serve. `None` standalone.
    pub routing: Option<Routing>,
    // A std mutex: the coordinator is a pure state machine and nothing awaits under it.
    groups: Mutex<GroupCoordinator>,
    shutting_down: AtomicBool,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Broker {
    /// Opens topics and offsets from the metadata store and data directory.
    pub async fn open(
        config: BrokerConfig,
        meta: Arc<dyn MetadataStore>,
        routing: Option<Routing>,
    ) -> anyhow::Result<Arc<Self>> {
        config.validate()?;
        let metrics = Metrics::new();
        let hooks = ferry_storage::DiskHooks {
            faults: None,
            sync_observer: Some(Arc::new(metrics.fsync_seconds.clone())),
        };
        let topics = Topics::open(
            &config.data_dir,
            hooks.clone(),
            config.limits.clone(),
            config.topic_defaults.clone(),
            Arc::clone(&meta),
            routing.as_ref().map(|r| r.cluster().to_owned()),
        )
        .await?;
        let queues = Queues::open(
            &config.data_dir,
            hooks.clone(),
            config.limits.clone(),
            config.queue_defaults.clone(),
            Housekeeping {
                interval_ms: config.queue_housekeeping_interval_ms,
                snapshot_bytes: config.queue_snapshot_bytes,
                snapshot_interval_ms: config.queue_snapshot_interval_ms,
            },
            Arc::clone(&meta),
            routing.clone().map(|routing| QueueCluster {
                routing,
                ack_timeout: std::time::Duration::from_millis(config.replication.ack_timeout_ms),
            }),
        )
        .await?;
        let offsets = OffsetStore::load(Arc::clone(&meta)).await?;
        let groups = GroupCoordinator::new(config.groups.clone(), crate::clock::unique_id())?;
        Ok(Arc::new(Self {
            config,
            meta,
            topics,
            queues,
            offsets,
            metrics,
            routing,
            groups: Mutex::new(groups),
            shutting_down: AtomicBool::new(false),
            stopping: tokio::sync::watch::channel(false).0,
        }))
    }

    /// The group coordinator, locked.
    pub fn groups(&self) -> MutexGuard<'_, GroupCoordinator> {
        // A poisoned lock means a panic mid-update elsewhere; the state machine keeps
        // its own invariants per call, so carrying on is the least harmful choice.
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Partition count of a topic, for the group coordinator.
    pub fn partitions_of(&self, topic: &str) -> Option<u32> {
        self.topics.partition_count(topic)
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        overrides: &TopicOverrides,
    ) -> BrokerResult<Arc<Topic>> {
        self.check_accepting()?;
        self.topics.create(name, overrides).await
    }

    /// Deletes a topic, its data and offsets; groups subscribed to it rebalance.
    pub async fn delete_topic(&self, name: &str) -> BrokerResult<()> {
        self.check_accepting()?;
        self.topics.delete(name).await?;
        self.offsets.forget_topic(name);
        let partitions_of = |t: &str| self.partitions_of(t);
        self.groups().topics_changed(&partitions_of);
        Ok(())
    }

    /// Commits offsets after checking the committer owns the partitions.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: Option<&str>,
        offsets: Vec<(String, u32, u64, String)>,
    ) -> BrokerResult<()> {
        crate::names::validate_group_name(group)?;
        if offsets.is_empty() {
            return Ok(());
        }
        let partitions: Vec<TopicPartition> = offsets
            .iter()
            .map(|(t, p, _, _)| TopicPartition::new(t.clone(), *p))
            .collect();
        for tp in &partitions {
            self.topics.get(&tp.topic)?.partition(tp.partition)?;
        }
        self.groups().check_commit(group, member_id, &partitions)?;
        self.offsets.commit(group, offsets).await
    }

    /// Deletes a group with no members: its committed offsets go.
    /// `GroupHasMembers` while a member is in it, `GroupNotFound` when it has
    /// neither members nor offsets.
    pub async fn delete_group(&self, group: &str) -> BrokerResult<()> {
        crate::names::validate_group_name(group)?;
        self.groups().check_commit(group, None, &[])?;
        if self.groups().describe(group).is_none() && self.offsets.fetch(group, &[]).is_empty() {
            return Err(BrokerError::GroupNotFound(group.to_owned()));
        }
        self.offsets.delete_group(group).await
    }

    /// Removes group members whose session expired.
    pub fn expire_members(&self) {
        for (group, member) in self.groups().expire(Instant::now()) {
            tracing::info!(%group, %member, "group member expired");
        }
    }

    /// Cluster mode: the leader epoch if this host leads the partition now, else
    /// `NotLeader`. A standalone host always leads, in epoch 0.
    pub fn check_leader(&self, kind: LogKind, name: &str, partition: u32) -> BrokerResult<u64> {
        match &self.routing {
            Some(routing) => routing
                .check(kind, name, partition)
                .inspect(|epoch| self.take_up_leadership(routing, kind, name, partition, *epoch))
                .and_then(|epoch| self.check_queue_served(kind, name, epoch))
                .map_err(|refused| {
                    // A resource no host is placed for and this host does not know is gone
                    // (or never was): say so, rather than send the client after a leader
                    // that will never come.
                    if routing.is_placed(kind, name, partition) || self.knows(kind, name) {
                        refused
                    } else if kind == LogKind::Queue {
                        BrokerError::QueueNotFound(name.to_owned())
                    } else {
                        BrokerError::TopicNotFound(name.to_owned())
                    }
                }),
            None => Ok(crate::topic::STANDALONE_LEADER_EPOCH),
        }
    }

    /// The view says this host leads a topic partition in `epoch`; the replicator
    /// applies that to the partition on its next pass. A request that arrives first
    /// applies it now, so what it writes is served at once.
    fn take_up_leadership(
        &self,
        routing: &crate::cluster::routing::Routing,
        kind: LogKind,
        name: &str,
        partition: u32,
        epoch: u64,
    ) {
        if kind != LogKind::Topic {
            // A queue is taken up by the replicator alone: its state is rebuilt from
            // the logs first (see `check_queue_served`).
            return;
        }
        let Ok(local) = self
            .topics
            .get(name)
            .and_then(|t| Ok(Arc::clone(t.partition(partition)?)))
        else {
            return;
        };
        if local.leader_epoch() == Some(epoch) {
            return;
        }
        let view = routing.view();
        if let Some((state, revision)) = view.partition_at(kind, name, partition)
            && state.leader_epoch == epoch
        {
            local.lead_per(state, revision, routing.host_id());
        }
    }

    /// A queue this host leads is served only once its state was rebuilt for the
    /// epoch; until then the request is refused as by a non-leader (retriable).
    fn check_queue_served(&self, kind: LogKind, name: &str, epoch: u64) -> BrokerResult<u64> {
        if kind != LogKind::Queue {
            return Ok(epoch);
        }
        match self.queues.get(name) {
            Ok(queue) if queue.serving_epoch() != Some(epoch) => Err(BrokerError::NotLeader {
                kind,
                name: name.to_owned(),
                partition: 0,
                leader: None,
            }),
            _ => Ok(epoch),
        }
    }

    /// A replicated log: a topic partition, or one of a queue's logs.
    pub fn replicated_log(
        &self,
        kind: LogKind,
        name: &str,
        index: u32,
    ) -> BrokerResult<Arc<crate::replicated_log::ReplicatedLog>> {
        if kind == LogKind::Queue {
            self.queues.get(name)?.replicated_log(index)
        } else {
            Ok(Arc::clone(self.topics.get(name)?.partition(index)?))
        }
    }

    /// Whether this host has the topic or queue open.
    fn knows(&self, kind: LogKind, name: &str) -> bool {
        if kind == LogKind::Queue {
            self.queues.get(name).is_ok()
        } else {
            self.topics.get(name).is_ok()
        }
    }

    /// When a write to a topic with `settings` is acknowledged: after the in-sync
    /// replicas stored it under `sync` replication with more than one replica, else
    /// once this host stored it.
    pub fn ack_policy(&self, settings: &crate::topic::TopicSettings) -> crate::topic::Ack {
        crate::topic::Ack::for_settings(
            self.routing.is_some(),
            settings.replication_factor,
            settings.replication,
            std::time::Duration::from_millis(self.config.replication.ack_timeout_ms),
        )
    }

    /// The partitions of a topic this host may write to: all of them standalone,
    /// those it leads in cluster mode.
    pub fn writable_partitions(&self, topic: &str, partitions: u32) -> Option<Vec<u32>> {
        self.routing
            .as_ref()
            .map(|routing| routing.led(LogKind::Topic, topic, partitions))
    }

    /// Fails new work once shutdown began.
    pub fn check_accepting(&self) -> BrokerResult<()> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(BrokerError::ShuttingDown);
        }
        Ok(())
    }

    /// Marks the broker as stopping: new writes are refused.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.stopping.send_replace(true);
    }

    /// Turns true when shutdown begins; long polls watch it to return early.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }
}
