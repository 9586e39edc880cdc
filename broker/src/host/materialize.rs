//! Cluster mode: every host opens the topics and queues mapped to its cluster as their
//! records appear in etcd (whichever host created them) and drops them when the
//! records go. Which partitions a host *serves* is decided by [`super::routing`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::meta::{KeyValue, WatchEvent, decode_json, keys};
use crate::queue::QueueRecord;
use crate::topic::TopicRecord;

/// Follows topic and queue records in the background until dropped.
#[derive(Debug)]
pub struct Materializer {
    task: JoinHandle<()>,
}

impl Drop for Materializer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Materializer {
    /// Starts following the metadata store for `broker`.
    pub fn start(broker: Arc<Broker>, retry_pause: Duration) -> Self {
        Self {
            task: tokio::spawn(follow(broker, retry_pause)),
        }
    }
}

async fn follow(broker: Arc<Broker>, retry_pause: Duration) {
    loop {
        // Watch first, then read everything, so no change in between is missed.
        let mut changes = broker.meta.watch(keys::ROOT);
        if let Err(err) = resync(&broker).await {
            tracing::warn!(%err, "cannot read topic and queue records; retrying");
            tokio::time::sleep(retry_pause).await;
            continue;
        }
        while let Ok(event) = changes.next().await {
            apply(&broker, &event).await;
        }
        tracing::info!("topic and queue records re-read after a watch gap");
    }
}

/// Adopts every record listed and forgets every local topic or queue not listed.
async fn resync(broker: &Broker) -> Result<(), crate::error::BrokerError> {
    let topics = broker.meta.list(keys::TOPICS).await?;
    let queues = broker.meta.list(keys::QUEUES).await?;
    let mut listed = HashSet::new();
    for kv in &topics {
        listed.insert(kv.key.clone());
        adopt_topic(broker, kv).await;
    }
    for kv in &queues {
        listed.insert(kv.key.clone());
        adopt_queue(broker, kv).await;
    }
    for topic in broker.topics.list() {
        let key = keys::topic(topic.name());
        if !listed.contains(&key) {
            forget(broker, &key).await;
        }
    }
    for queue in broker.queues.list() {
        let key = keys::queue(queue.name());
        if !listed.contains(&key) {
            forget(broker, &key).await;
        }
    }
    Ok(())
}

async fn apply(broker: &Broker, event: &WatchEvent) {
    match event {
        WatchEvent::Put(kv) if kv.key.starts_with(keys::TOPICS) => adopt_topic(broker, kv).await,
        WatchEvent::Put(kv) if kv.key.starts_with(keys::QUEUES) => adopt_queue(broker, kv).await,
        WatchEvent::Delete { key, .. } => forget(broker, key).await,
        WatchEvent::Put(_) => {}
    }
}

async fn adopt_topic(broker: &Broker, kv: &KeyValue) {
    let adopted = match decode_json::<TopicRecord>(&kv.key, &kv.value) {
        Ok(record) => broker.topics.adopt(record).await,
        Err(err) => Err(err.into()),
    };
    if let Err(err) = adopted {
        tracing::warn!(key = %kv.key, %err, "cannot open topic");
    }
}

async fn adopt_queue(broker: &Broker, kv: &KeyValue) {
    let adopted = match decode_json::<QueueRecord>(&kv.key, &kv.value) {
        Ok(record) => broker.queues.adopt(record).await,
        Err(err) => Err(err.into()),
    };
    if let Err(err) = adopted {
        tracing::warn!(key = %kv.key, %err, "cannot open queue");
    }
}

async fn forget(broker: &Broker, key: &str) {
    let forgotten = if let Some(name) = key.strip_prefix(keys::TOPICS) {
        broker.topics.forget(name).await
    } else if let Some(name) = key.strip_prefix(keys::QUEUES) {
        broker.queues.forget(name).await
    } else {
        Ok(())
    };
    if let Err(err) = forgotten {
        tracing::warn!(%key, %err, "cannot drop local data");
    }
}
