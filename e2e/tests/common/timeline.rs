//! A background sampler of every partition state's leader and epoch, and the checks
//! on what it saw: an epoch never goes down, and one epoch of a partition never has
//! two different leaders (every leader change, also to and from no leader, takes a
//! new epoch). On a panic while it runs, the timeline is printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{PartitionId, read_view};

/// How long one read (or connect) of etcd may take before the sample counts as
/// failed: etcd may be stopped or paused.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// A partition's leader and epoch as etcd had them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub leader: Option<String>,
    pub epoch: u64,
}

impl std::fmt::Display for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}",
            self.leader.as_deref().unwrap_or("null"),
            self.epoch
        )
    }
}

/// One sample: when (since the sampler started), and every partition's leadership
/// or why etcd could not be read.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Duration,
    pub states: Result<BTreeMap<PartitionId, Leadership>, String>,
}

/// Samples the cluster's partition states every `every` until stopped.
pub struct EpochSampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    started: Instant,
}

impl EpochSampler {
    /// Starts sampling `cluster` on the etcd at `endpoint`, with a client of its own
    /// (connected again after any failed read, so it survives etcd restarts).
    pub fn start(endpoint: String, cluster: String, every: Duration) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel();
        let started = Instant::now();
        let sink = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            let mut client: Option<etcd_client::Client> = None;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {}
                }
                let states = sample(&mut client, &endpoint, &cluster).await;
                if states.is_err() {
                    client = None;
                }
                let at = started.elapsed();
                lock(&sink).push(Sample { at, states });
            }
        });
        Self {
            samples,
            stop: Some(stop),
            task: Some(task),
            started,
        }
    }

    /// How long the sampler has been running: the time base of the samples.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops sampling; the timeline.
    pub async fn stop(mut self) -> Timeline {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the sampler task does not panic");
        }
        self.timeline()
    }

    /// Waits until a sample satisfies `done`, panicking with `what` if none does
    /// within `deadline`: so a timeline is known to hold a state before a fault.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        what: &str,
        done: impl Fn(&BTreeMap<PartitionId, Leadership>) -> bool,
    ) {
        let until = Instant::now() + deadline;
        loop {
            let seen = lock(&self.samples)
                .iter()
                .rev()
                .find_map(|sample| sample.states.as_ref().ok())
                .is_some_and(&done);
            if seen {
                return;
            }
            assert!(
                Instant::now() < until,
                "no sample within {deadline:?}: {what}; timeline:\n{}",
                self.timeline().render()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What was sampled so far.
    pub fn timeline(&self) -> Timeline {
        Timeline {
            samples: lock(&self.samples).clone(),
        }
    }
}

impl Drop for EpochSampler {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if std::thread::panicking() {
            eprintln!("sampled epoch timeline:\n{}", self.timeline().render());
        }
    }
}

fn lock(samples: &Mutex<Vec<Sample>>) -> std::sync::MutexGuard<'_, Vec<Sample>> {
    samples.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn sample(
    client: &mut Option<etcd_client::Client>,
    endpoint: &str,
    cluster: &str,
) -> Result<BTreeMap<PartitionId, Leadership>, String> {
    if client.is_none() {
        let connect = etcd_client::Client::connect([endpoint], None);
        *client = Some(
            tokio::time::timeout(READ_TIMEOUT, connect)
                .await
                .map_err(|_| format!("connect: no answer within {READ_TIMEOUT:?}"))?
                .map_err(|err| format!("connect: {err}"))?,
        );
    }
    let etcd = client.as_mut().expect("connected above");
    let view = tokio::time::timeout(READ_TIMEOUT, read_view(etcd, cluster))
        .await
        .map_err(|_| format!("read: no answer within {READ_TIMEOUT:?}"))??;
    Ok(view
        .partitions
        .into_iter()
        .map(|(id, state)| {
            let leadership = Leadership {
                leader: state.leader,
                epoch: state.leader_epoch,
            };
            (id, leadership)
        })
        .collect())
}

/// Everything one sampler saw.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub samples: Vec<Sample>,
}

impl Timeline {
    /// Samples that read etcd.
    pub fn successful(&self) -> usize {
        self.samples.iter().filter(|s| s.states.is_ok()).count()
    }

    /// Every epoch that went down, and every epoch seen with two different leaders
    /// (two hosts, or a host and no leader), per partition.
    pub fn violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        let mut last: BTreeMap<&PartitionId, (Duration, &Leadership)> = BTreeMap::new();
        let mut by_epoch: BTreeMap<(&PartitionId, u64), (Duration, &Leadership)> = BTreeMap::new();
        for sample in &self.samples {
            let Ok(states) = &sample.states else {
                continue;
            };
            for (id, now) in states {
                if let Some((then, before)) = last.get(id)
                    && now.epoch < before.epoch
                {
                    violations.push(format!(
                        "{} epoch went down: {before} at +{then:.1?}, {now} at +{:.1?}",
                        name(id),
                        sample.at
                    ));
                }
                last.insert(id, (sample.at, now));
                match by_epoch.get(&(id, now.epoch)) {
                    Some((then, first)) if first.leader != now.leader => {
                        let kind = if first.leader.is_some() && now.leader.is_some() {
                            "two hosts led it in one epoch"
                        } else {
                            "its leader changed without a new epoch"
                        };
                        violations.push(format!(
                            "{} {kind}: {first} at +{then:.1?}, {now} at +{:.1?}",
                            name(id),
                            sample.at
                        ));
                    }
                    Some(_) => {}
                    None => {
                        by_epoch.insert((id, now.epoch), (sample.at, now));
                    }
                }
            }
        }
        violations
    }

    /// The timeline, compactly: the first sample in full, then every change, and
    /// runs of failed reads as one line each.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut previous: Option<&BTreeMap<PartitionId, Leadership>> = None;
        let mut failing: Option<(Duration, Duration, usize, &str)> = None;
        for sample in &self.samples {
            match &sample.states {
                Err(err) => {
                    failing = Some(match failing {
                        Some((from, _, count, first)) => (from, sample.at, count + 1, first),
                        None => (sample.at, sample.at, 1, err.as_str()),
                    });
                }
                Ok(states) => {
                    if let Some((from, to, count, first)) = failing.take() {
                        let _ = writeln!(
                            out,
                            "+{from:.1?}..+{to:.1?}: etcd not read ({count} samples; first: {first})"
                        );
                    }
                    let changes: Vec<String> = states
                        .iter()
                        .filter_map(|(id, now)| {
                            let before = previous.and_then(|p| p.get(id));
                            match before {
                                Some(before) if before == now => None,
                                Some(before) => Some(format!("{} {before} -> {now}", name(id))),
                                None => Some(format!("{} {now}", name(id))),
                            }
                        })
                        .chain(previous.into_iter().flat_map(|p| {
                            p.keys()
                                .filter(|id| !states.contains_key(id))
                                .map(|id| format!("{} removed", name(id)))
                        }))
                        .collect();
                    if !changes.is_empty() {
                        let _ = writeln!(out, "+{:.1?}: {}", sample.at, changes.join(", "));
                    }
                    previous = Some(states);
                }
            }
        }
        if let Some((from, to, count, first)) = failing {
            let _ = writeln!(
                out,
                "+{from:.1?}..+{to:.1?}: etcd not read ({count} samples; first: {first})"
            );
        }
        let _ = write!(
            out,
            "({} samples, {} read etcd)",
            self.samples.len(),
            self.successful()
        );
        out
    }
}

/// `topic/partition` or `queue name` for messages.
pub fn name(id: &PartitionId) -> String {
    if id.kind == "queues" {
        format!("queue {}", id.name)
    } else {
        format!("{}/{}", id.name, id.partition)
    }
}
