//! Waiting for a new topic's or queue's leaders: a cluster places and elects them a
//! moment after the create returns, and a produce or send before that fails.

use std::time::{Duration, Instant};

use ferry_client::Client;

/// Longest wait for the leaders before the create reports without them.
const LEADERS_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between checks.
const POLL: Duration = Duration::from_millis(100);

/// Whether a topic or a queue is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A topic, all of its partitions.
    Topic,
    /// A queue.
    Queue,
}

/// Waits until every partition of `name` has a leader (at once on a standalone
/// host). Past the timeout it warns and returns: the create itself succeeded.
pub async fn wait_until_led(client: &Client, kind: Kind, name: &str, partitions: usize) {
    let deadline = Instant::now() + LEADERS_TIMEOUT;
    loop {
        let topics: &[&str] = if kind == Kind::Topic { &[name] } else { &[] };
        if let Ok(metadata) = client.cluster_metadata(topics).await {
            let placed = match kind {
                Kind::Topic => &metadata.topics,
                Kind::Queue => &metadata.queues,
            };
            let led = placed.iter().find(|p| p.name == name).is_some_and(|p| {
                p.partitions.len() >= partitions && p.partitions.iter().all(|p| p.leader.is_some())
            });
            if led {
                return;
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "note: '{name}' has no leader for every partition after {} s; requests \
                 to it may be refused until it does",
                LEADERS_TIMEOUT.as_secs()
            );
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}
