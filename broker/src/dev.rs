//! `ferry-broker dev`: a local three-host cluster for trying cluster mode on one
//! machine — etcd (Debian's `etcd-server`, when installed) and three `serve`
//! processes of this same binary on 127.0.0.1, all under one data directory, all
//! stopped together on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long etcd may take to accept connections.
const ETCD_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings of a dev cluster.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Everything lives under here: `etcd/`, `h0/`, `h1/`, `h2/`.
    pub data_dir: PathBuf,
    /// Hosts to start.
    pub hosts: u16,
    /// gRPC port of the first host; the others follow it.
    pub first_port: u16,
    /// etcd's client port (its peer port is the next one).
    pub etcd_port: u16,
    /// The etcd binary; found on the path (or Debian's) when `None`.
    pub etcd_binary: Option<PathBuf>,
    /// The cluster's name.
    pub cluster: String,
}

/// Child processes, stopped (SIGTERM, then waited for) when dropped.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        // Hosts first, etcd last, so hosts can revoke their leases on the way out.
        for (name, child) in self.0.iter_mut().rev() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            match child.wait() {
                Ok(status) => eprintln!("{name} stopped ({status})"),
                Err(err) => eprintln!("{name}: {err}"),
            }
        }
    }
}

fn etcd_binary(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        return Ok(path.to_owned());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    });
    match on_path {
        Some(path) => Ok(path),
        None if Path::new("/usr/bin/etcd").is_file() => Ok(PathBuf::from("/usr/bin/etcd")),
        None => bail!(
            "etcd is not installed: install Debian's etcd-server (./.ci/setup test does), \
             or pass --etcd-binary"
        ),
    }
}

async fn wait_for_port(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + ETCD_START_TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() >= deadline {
            bail!("{what} did not start listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Starts etcd and the hosts, prints where they are, and waits for `shutdown`.
pub async fn run(
    options: DevOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if options.hosts == 0 {
        bail!("--hosts must be at least 1");
    }
    let mut children = Children(Vec::new());
    let etcd_dir = options.data_dir.join("etcd");
    std::fs::create_dir_all(&etcd_dir)
        .with_context(|| format!("cannot create {}", etcd_dir.display()))?;
    let client_url = format!("http://127.0.0.1:{}", options.etcd_port);
    let peer_url = format!("http://127.0.0.1:{}", options.etcd_port + 1);
    let etcd_log_path = options.data_dir.join("etcd.log");
    let etcd_log = std::fs::File::create(&etcd_log_path)
        .with_context(|| format!("cannot create {}", etcd_log_path.display()))?;
    let etcd = Command::new(etcd_binary(options.etcd_binary.as_deref())?)
        .args(["--name", "ferry-dev", "--data-dir"])
        .arg(&etcd_dir)
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("ferry-dev={peer_url}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(etcd_log)
        .spawn()
        .context("cannot start etcd")?;
    children.0.push(("etcd".into(), etcd));
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], options.etcd_port)),
        "etcd",
    )
    .await?;
    let log_level = std::env::var("FERRY_LOG").unwrap_or_else(|_| "warn".to_owned());
    let binary = std::env::current_exe().context("cannot find the ferry-broker binary")?;
    for index in 0..options.hosts {
        let host = format!("h{index}");
        let port = options.first_port + index;
        let metrics = metrics_port(options.first_port, options.hosts, index);
        let child = Command::new(&binary)
            .arg("serve")
            .args(["--cluster", &options.cluster, "--host-id", &host])
            .args(["--etcd", &client_url])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .arg("--data-dir")
            .arg(options.data_dir.join(&host))
            .env("FERRY_LOG", &log_level)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start host {host}"))?;
        children.0.push((host.clone(), child));
        println!("{host}: 127.0.0.1:{port} (metrics http://127.0.0.1:{metrics}/metrics)");
    }
    let gateway_port = options.first_port + options.hosts;
    let gateway_metrics = metrics_port(options.first_port, options.hosts, options.hosts);
    let gateway = Command::new(&binary)
        .arg("gateway")
        .args(["--etcd", &client_url])
        .args(["--listen", &format!("127.0.0.1:{gateway_port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{gateway_metrics}")])
        .env("FERRY_LOG", &log_level)
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start the gateway")?;
    children.0.push(("gateway".into(), gateway));
    println!(
        "gateway: 127.0.0.1:{gateway_port} (metrics http://127.0.0.1:{gateway_metrics}/metrics)"
    );
    println!(
        "cluster {} on etcd {client_url} (log: {}); try: ferryctl --server 127.0.0.1:{gateway_port} \
         topic create orders --replication-factor 3, then ferryctl --server \
         127.0.0.1:{gateway_port} cluster status",
        options.cluster,
        etcd_log_path.display(),
    );
    shutdown.await;
    drop(children);
    Ok(())
}

/// The metrics port of the `index`th process (hosts, then the gateway): after every
/// gRPC port (the hosts' and the gateway's), so three hosts on 7070-7072 and the
/// gateway on 7073 serve metrics on 7074-7077.
fn metrics_port(first_port: u16, hosts: u16, index: u16) -> u16 {
    first_port
        .saturating_add(hosts)
        .saturating_add(1)
        .saturating_add(index)
}
