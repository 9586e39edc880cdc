//! Producers writing all the time: each sends unique values round-robin to every
//! partition of a topic, straight to the partition's leader as etcd names it (looked
//! up again whenever a send fails), and records every send in a [`History`]. Then
//! [`read_back`] reads the partitions back for the checker.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferry_e2e::History;
use ferry_e2e::history::ReadOp;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::rpc::{self, record_outcome, within};
use super::{ClusterView, PartitionId, read_view};

/// What the producers write to, and how patiently.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub topic: &'static str,
    pub partitions: u32,
    /// Producer tasks; producer ids `0..producers` in the history.
    pub producers: u32,
    /// A client-side deadline per send: past it, the outcome is unknown.
    pub send_timeout: Duration,
}

impl LoadSpec {
    /// Partition `p` of the topic.
    pub fn partition(&self, p: u32) -> PartitionId {
        PartitionId::topic(self.topic, p)
    }

    /// Every partition of the topic.
    pub fn partitions(&self) -> Vec<PartitionId> {
        (0..self.partitions).map(|p| self.partition(p)).collect()
    }
}

/// Where sends went: op id → the host id the send was addressed to.
type Targets = Arc<Mutex<BTreeMap<u64, String>>>;

/// Producers running in the background until [`Load::stop`].
pub struct Load {
    history: History,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    /// Acknowledgements by host id, to see who serves.
    acked_by: Arc<tokio::sync::Mutex<HashMap<String, u64>>>,
    targets: Targets,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `spec.producers` producers that read `cluster`'s view from the etcd
    /// at `etcd_endpoint`.
    pub fn start(
        spec: &LoadSpec,
        etcd_endpoint: String,
        cluster: String,
        history: History,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let acked_by = Arc::new(tokio::sync::Mutex::new(HashMap::new()));
        let targets = Targets::default();
        let tasks = (0..spec.producers)
            .map(|producer| {
                let producer = Producer {
                    id: producer,
                    spec: spec.clone(),
                    history: history.clone(),
                    stop: Arc::clone(&stop),
                    acked: Arc::clone(&acked),
                    acked_by: Arc::clone(&acked_by),
                    targets: Arc::clone(&targets),
                };
                tokio::spawn(producer.run(etcd_endpoint.clone(), cluster.clone()))
            })
            .collect();
        Self {
            history,
            stop,
            acked,
            acked_by,
            targets,
            tasks,
        }
    }

    /// Sends acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// Acknowledgements so far by host id.
    pub async fn acked_by(&self) -> HashMap<String, u64> {
        self.acked_by.lock().await.clone()
    }

    /// The host id each send so far was addressed to, by op id.
    pub fn targets(&self) -> BTreeMap<u64, String> {
        self.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `more` further sends were acknowledged, panicking with `what` if
    /// that takes longer than `deadline`.
    pub async fn wait_for_acks(&self, more: u64, deadline: Duration, what: &str) {
        let target = self.acked() + more;
        let until = Instant::now() + deadline;
        while self.acked() < target {
            assert!(
                Instant::now() < until,
                "{what}: only {} of {target} sends acknowledged within {deadline:?}",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the producers once their sends in flight are answered or time out.
    pub async fn stop(self) -> History {
        self.stop.store(true, Ordering::Release);
        for task in self.tasks {
            task.await.expect("producer task");
        }
        self.history
    }
}

/// One producer task's state.
struct Producer {
    id: u32,
    spec: LoadSpec,
    history: History,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    acked_by: Arc<tokio::sync::Mutex<HashMap<String, u64>>>,
    targets: Targets,
}

impl Producer {
    async fn run(self, etcd_endpoint: String, cluster: String) {
        let mut etcd = etcd_client::Client::connect([etcd_endpoint], None)
            .await
            .expect("connect to etcd");
        let mut channels: HashMap<String, Channel> = HashMap::new();
        let mut view: Option<ClusterView> = None;
        let mut n = 0u64;
        while !self.stop.load(Ordering::Acquire) {
            let p = (n % u64::from(self.spec.partitions)) as u32;
            n += 1;
            if view.is_none() {
                view = read_view(&mut etcd, &cluster).await.ok();
            }
            let target = view.as_ref().and_then(|v| {
                let leader = v.leader(&self.spec.partition(p))?;
                Some((leader.to_owned(), v.hosts.get(leader)?.advertise.clone()))
            });
            let Some((leader, address)) = target else {
                view = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let channel = channels
                .entry(address.clone())
                .or_insert_with(|| {
                    Endpoint::from_shared(format!("http://{address}"))
                        .expect("a valid address")
                        .connect_timeout(self.spec.send_timeout)
                        .connect_lazy()
                })
                .clone();
            let value = format!("p{}-{n}", self.id);
            let op = self.history.record_send_invoke(self.id, p, &value);
            self.targets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(op, leader.clone());
            let send = rpc::produce(&channel, self.spec.topic, p, None, &value);
            let answer = within(self.spec.send_timeout, send).await;
            record_outcome(&self.history, op, &answer);
            if answer.is_ok() {
                self.acked.fetch_add(1, Ordering::AcqRel);
                *self.acked_by.lock().await.entry(leader).or_default() += 1;
            } else {
                view = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads `partition` of `topic` through `channel` until two reads a moment apart
/// agree: the high watermark may still be catching up with the followers' last
/// fetches when the load stops.
pub async fn read_settled(
    channel: &Channel,
    topic: &str,
    partition: u32,
    host: &str,
) -> Vec<ReadOp> {
    let mut previous = None;
    loop {
        let reads = rpc::read_partition(channel, topic, partition)
            .await
            .unwrap_or_else(|status| {
                panic!(
                    "read {topic}/{partition} from {host}: {}",
                    rpc::show(&status)
                )
            });
        if previous == Some(reads.len()) {
            return reads;
        }
        previous = Some(reads.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Reads every partition back from its leader, each once settled.
pub async fn read_back(
    etcd: &mut etcd_client::Client,
    cluster: &str,
    spec: &LoadSpec,
) -> BTreeMap<u32, Vec<ReadOp>> {
    let view = read_view(etcd, cluster).await.expect("read the view");
    let mut partitions = BTreeMap::new();
    for p in 0..spec.partitions {
        let leader = view.leader(&spec.partition(p)).expect("a leader");
        let address = &view.hosts[leader].advertise;
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .expect("a valid address")
            .connect_lazy();
        partitions.insert(p, read_settled(&channel, spec.topic, p, leader).await);
    }
    partitions
}

/// Records every read in `history`, as the final read the checker judges.
pub fn record_reads(history: &History, reads: &BTreeMap<u32, Vec<ReadOp>>) {
    for read in reads.values().flatten() {
        history.record_read(read.partition, read.offset, &read.value);
    }
}
