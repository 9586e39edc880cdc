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
    let output = Command::new(ferryctl)
        .args(["--server", url, "--output", "json"])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", ferryctl.display()))?;
    if !output.status.success() {
        bail!("ferryctl {} failed: {}", args.join(" "), output.status);
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "ferryctl printed no JSON report: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
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
