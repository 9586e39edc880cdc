//! What the benchmark programs (`bench_cluster`, `bench_disk`) share: finding the
//! binaries, a standalone host to measure, running `ferryctl bench` for its JSON
//! report, and the machine's state around a run.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::process::ProcStat;

/// Where a standalone host listens: apart from the cluster hosts' 127.0.0.2…
pub const STANDALONE_IP: &str = "127.0.0.100";
/// How long the standalone host may take to print its ready line.
const STANDALONE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// The line a broker prints once it listens, followed by `ADDR metrics=…`.
const READY_PREFIX: &str = "ferry-broker ready grpc=";
/// Longest any process a benchmark starts lives, in seconds (as the harness's).
pub const LIFETIME_S: u64 = 600;

/// The binaries this program runs.
pub struct Binaries {
    /// `ferry-broker`.
    pub broker: PathBuf,
    /// `ferryctl`.
    pub ferryctl: PathBuf,
}

impl Binaries {
    /// `FERRY_BROKER_BIN` / `FERRYCTL_BIN`, else the ones beside this binary (cargo
    /// puts every binary of a build in the same directory).
    pub fn find() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let dir = exe.parent().context("this binary has no directory")?;
        let pick = |variable: &str, name: &str| -> anyhow::Result<PathBuf> {
            let path = std::env::var_os(variable).map_or_else(|| dir.join(name), PathBuf::from);
            if !path.is_file() {
                bail!(
                    "no {name} at {}: build it (cargo build --release -p ferry-broker -p \
                     ferry-client) or set {variable}",
                    path.display()
                );
            }
            Ok(path)
        };
        Ok(Self {
            broker: pick("FERRY_BROKER_BIN", "ferry-broker")?,
            ferryctl: pick("FERRYCTL_BIN", "ferryctl")?,
        })
    }
}

/// The binaries, in a process whose environment names the broker for the harness
/// (`FERRY_BROKER_BIN`, which `Cluster` reads). When it does not, this program runs
/// again with it set and exits as that run does: setting our own environment is
/// unsafe in a process that may have threads.
pub fn binaries_for_harness() -> anyhow::Result<Binaries> {
    let binaries = Binaries::find()?;
    if std::env::var_os("FERRY_BROKER_BIN").is_none() {
        rerun_with_broker(&binaries.broker)?;
    }
    Ok(binaries)
}

/// Runs this program again with `FERRY_BROKER_BIN` set and exits as it does.
fn rerun_with_broker(broker: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let status = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env("FERRY_BROKER_BIN", broker)
        .status()
        .with_context(|| format!("running {} again", exe.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// A `ferry-broker standalone` process, stopped when dropped.
pub struct Standalone {
    /// The `timeout` process running the broker.
    child: Child,
    addr: SocketAddr,
}

impl Standalone {
    /// Starts it on a free port of [`STANDALONE_IP`], with `extra_args`, and waits
    /// for its ready line; it lives at most `lifetime_s` seconds.
    pub fn start(
        broker: &Path,
        data_dir: &Path,
        extra_args: &[String],
        lifetime_s: u64,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new("timeout")
            .arg(lifetime_s.to_string())
            .arg(broker)
            .arg("standalone")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &format!("{STANDALONE_IP}:0")])
            .args(["--metrics-listen", "off"])
            .args(extra_args)
            .env(
                "FERRY_LOG",
                std::env::var("FERRY_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} standalone", broker.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("the broker's stdout is piped")?;
        let (tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading after the ready line so the broker never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(READY_PREFIX) {
                    let _ = tx.send(rest.to_owned());
                }
            }
        });
        // Own the child before waiting, so a failed start still stops it.
        let mut host = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 100], 0)),
        };
        let rest = ready
            .recv_timeout(STANDALONE_START_TIMEOUT)
            .context("the standalone broker printed no ready line")?;
        host.addr = rest
            .split_whitespace()
            .next()
            .and_then(|addr| addr.parse().ok())
            .with_context(|| format!("a ready line without an address: {rest:?}"))?;
        Ok(host)
    }

    /// Its gRPC URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The broker's own process id (the child of `timeout`), for its memory.
    pub fn broker_pid(&self) -> Option<u32> {
        let id = self.child.id();
        std::fs::read_to_string(format!("/proc/{id}/task/{id}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// The resident memory of process `pid`, in bytes (`VmRSS`).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Drop for Standalone {
    fn drop(&mut self) {
        // SIGTERM to `timeout`, which passes it on: the broker shuts down cleanly.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ferryctl --output json` with `args` against `url`; returns its report.
pub fn bench(ferryctl: &Path, url: &str, args: &[String]) -> anyhow::Result<Value> {
    bench_with_cpu(ferryctl, url, args).map(|(report, _)| report)
}

/// [`bench`], with the CPU seconds the `ferryctl` process used (the load generator's
/// share of the machine), read from its `/proc` entry after it exited and before it
/// is reaped; `None` if that could not be read.
pub fn bench_with_cpu(
    ferryctl: &Path,
    url: &str,
    args: &[String],
) -> anyhow::Result<(Value, Option<f64>)> {
    let mut child = Command::new(ferryctl)
        .args(["--server", url, "--output", "json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("running {}", ferryctl.display()))?;
    let mut stdout = Vec::new();
    let read = child
        .stdout
        .take()
        .map(|mut pipe| std::io::Read::read_to_end(&mut pipe, &mut stdout));
    // Reaped either way, the report read or not.
    let cpu_s = exited_cpu_seconds(child.id());
    let status = child.wait().context("waiting for ferryctl")?;
    if let Some(Err(err)) = read {
        return Err(err).context("reading ferryctl's report");
    }
    if !status.success() {
        bail!("ferryctl {} failed: {status}", args.join(" "));
    }
    let report = serde_json::from_slice(&stdout).with_context(|| {
        format!(
            "ferryctl printed no JSON report: {}",
            String::from_utf8_lossy(&stdout)
        )
    })?;
    Ok((report, cpu_s))
}

/// How long to wait for a child that closed its output to exit.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// The CPU seconds of child `pid` once it has exited (a zombie until reaped, its
/// `/proc` entry holds its final times).
fn exited_cpu_seconds(pid: u32) -> Option<f64> {
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        let stat = ProcStat::read(pid)?;
        if stat.state == 'Z' {
            return Some(stat.cpu_seconds());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// CPU use of some processes and of the whole machine at one moment, from `/proc`.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    /// Busy and total jiffies of all cores (`/proc/stat`; busy excludes idle and
    /// iowait).
    machine: Option<(u64, u64)>,
    processes: Vec<ProcessCpu>,
}

/// One process in a [`CpuSnapshot`].
#[derive(Debug, Clone)]
struct ProcessCpu {
    pid: u32,
    /// CPU seconds so far, of every thread it has had.
    cpu_s: Option<f64>,
    /// Per live thread: seconds spent runnable but waiting for a core
    /// (`/proc/PID/task/TID/schedstat`).
    waits: Vec<(u32, f64)>,
}

/// What a set of processes and the machine did between two [`CpuSnapshot`]s.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// Fraction of all cores' time that was busy (anything's work).
    pub machine_busy: Option<f64>,
    /// CPU seconds the processes used.
    pub cpu_s: f64,
    /// Seconds their threads (those alive at both snapshots) were ready to run but
    /// waited for a core.
    pub waiting_for_cpu_s: f64,
}

impl CpuSnapshot {
    /// Takes a snapshot of `pids` and the machine.
    pub fn take(pids: &[u32]) -> Self {
        Self {
            machine: machine_jiffies(),
            processes: pids
                .iter()
                .map(|&pid| ProcessCpu {
                    pid,
                    cpu_s: ProcStat::read(pid).map(|stat| stat.cpu_seconds()),
                    waits: thread_waits(pid),
                })
                .collect(),
        }
    }

    /// What happened from `earlier` to this snapshot.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuUse {
        let machine_busy = match (earlier.machine, self.machine) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                Some(busy1.saturating_sub(busy0) as f64 / (total1 - total0) as f64)
            }
            _ => None,
        };
        let mut usage = CpuUse {
            machine_busy,
            cpu_s: 0.0,
            waiting_for_cpu_s: 0.0,
        };
        for now in &self.processes {
            let Some(then) = earlier.processes.iter().find(|p| p.pid == now.pid) else {
                continue;
            };
            if let (Some(now), Some(then)) = (now.cpu_s, then.cpu_s) {
                usage.cpu_s += (now - then).max(0.0);
            }
            for (tid, waited) in &now.waits {
                if let Some((_, waited0)) = then.waits.iter().find(|(t, _)| t == tid) {
                    usage.waiting_for_cpu_s += (waited - waited0).max(0.0);
                }
            }
        }
        usage
    }
}

/// Busy and total jiffies summed over all cores.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

/// Seconds each thread of `pid` has spent runnable but waiting for a core.
fn thread_waits(pid: u32) -> Vec<(u32, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let schedstat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            let waited_ns: u64 = schedstat.split_whitespace().nth(1)?.parse().ok()?;
            Some((tid, waited_ns as f64 / 1e9))
        })
        .collect()
}

/// The machine's one-minute load average: others' work on a shared box skews results.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Rounds to `digits` decimals so the report does not print float noise.
pub fn round(value: f64, digits: i32) -> f64 {
    let factor = 10f64.powi(digits);
    (value * factor).round() / factor
}
