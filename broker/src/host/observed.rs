//! Observed state: every host publishes to etcd what it sees of the partitions and
//! queues it leads — high watermark, log ends, follower lag, queue depth — so that
//! anything reading etcd (the operator, `ferryctl cluster status`) sees the truth
//! without asking brokers. Keys in `docs/etcd-keyspace.md`.
//!
//! A value is written when it changed, and at least every [`REFRESH`] so that its
//! `updated_at_ms` shows it is current; values say which leader and epoch wrote
//! them, so a reader can tell a stale one from a dead leader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_replication::LogKind;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::cluster::records::{ObservedPartition, ObservedQueue};
use crate::cluster::routing::Routing;
use crate::meta::{MetadataStore, Op, keys};

/// Longest time between two writes of an unchanged value.
const REFRESH: Duration = Duration::from_secs(60);

/// Publishes in the background until dropped.
#[derive(Debug)]
pub struct Publisher {
    task: JoinHandle<()>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Publisher {
    /// Starts publishing for `broker` every `interval`.
    pub fn start(
        broker: Arc<Broker>,
        routing: Routing,
        meta: Arc<dyn MetadataStore>,
        interval: Duration,
    ) -> Self {
        Self {
            task: tokio::spawn(publish_forever(broker, routing, meta, interval)),
        }
    }
}

/// A value as last written, without its timestamp, and when.
struct Written {
    value: serde_json::Value,
    at: Instant,
}

async fn publish_forever(
    broker: Arc<Broker>,
    routing: Routing,
    meta: Arc<dyn MetadataStore>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: HashMap<String, Written> = HashMap::new();
    loop {
        ticker.tick().await;
        let observed = observe(&broker, &routing);
        // Forget what is no longer led here: if it is led here again (or created
        // again under the same name), it is written afresh.
        written.retain(|key, _| observed.iter().any(|(k, _)| k == key));
        let mut ops = Vec::new();
        for (key, value) in observed {
            let mut unstamped = value.clone();
            if let Some(object) = unstamped.as_object_mut() {
                object.remove("updated_at_ms");
            }
            let fresh = written
                .get(&key)
                .is_some_and(|w| w.value == unstamped && w.at.elapsed() < REFRESH);
            if !fresh {
                ops.push((key, value, unstamped));
            }
        }
        for (key, value, unstamped) in ops {
            let put = vec![Op::Put {
                key: key.clone(),
                value: value.to_string().into_bytes(),
            }];
            match meta.txn(Vec::new(), put).await {
                Ok(_) => {
                    written.insert(
                        key,
                        Written {
                            value: unstamped,
                            at: Instant::now(),
                        },
                    );
                }
                Err(err) => {
                    tracing::debug!(%err, %key, "cannot publish observed state");
                    break;
                }
            }
        }
    }
}

/// The observed values of everything this host leads now, by key.
fn observe(broker: &Broker, routing: &Routing) -> Vec<(String, serde_json::Value)> {
    let cluster = routing.cluster();
    let me = routing.host_id();
    let now = now_ms();
    let mut out = Vec::new();
    for topic in broker.topics.list() {
        for partition in &topic.partitions {
            let Ok(epoch) = routing.check(LogKind::Topic, topic.name(), partition.index()) else {
                continue;
            };
            let log_end = partition.log().end_offset();
            let value = ObservedPartition {
                leader: me.to_owned(),
                leader_epoch: epoch,
                log_start: partition.log_start_offset(),
                high_watermark: partition.high_watermark(),
                log_end,
                follower_lag: partition
                    .follower_offsets()
                    .into_iter()
                    .map(|(host, offset)| (host, offset.map(|o| log_end.saturating_sub(o))))
                    .collect(),
                updated_at_ms: now,
            };
            out.push((
                keys::observed_topic(cluster, topic.name(), partition.index()),
                json(&value),
            ));
        }
    }
    for queue in broker.queues.list() {
        // Led here, and its state rebuilt for this epoch: a queue still being taken
        // over would publish a follower's stale depth.
        let Ok(epoch) = routing.check(LogKind::Queue, queue.name(), 0) else {
            continue;
        };
        if queue.serving_epoch() != Some(epoch) {
            continue;
        }
        let stats = queue.stats(now);
        let depth = stats.depth;
        let value = ObservedQueue {
            leader: me.to_owned(),
            leader_epoch: epoch,
            depth: depth.visible + depth.in_flight + depth.delayed + depth.dead_letter,
            visible: depth.visible,
            in_flight: depth.in_flight,
            delayed: depth.delayed,
            oldest_age_ms: stats.oldest_age_ms,
            updated_at_ms: now,
        };
        out.push((keys::observed_queue(cluster, queue.name()), json(&value)));
    }
    out
}

fn json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
