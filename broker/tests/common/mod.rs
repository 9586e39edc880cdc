//! Test harness: real `ferry-broker standalone` processes on 127.0.0.1 with their
//! own data directories, killed when the test ends.

#![allow(dead_code)]

pub mod queue;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_proto::v1 as pb;
use ferry_proto::v1::admin_service_client::AdminServiceClient;
use ferry_proto::v1::topic_service_client::TopicServiceClient;
use ferry_records::{BatchBuilder, Batches, ProducerStamp};
use tonic::transport::Channel;

/// How long a broker may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running broker process.
pub struct BrokerProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
}

impl BrokerProcess {
    /// Starts a broker on a free port with `data_dir`, waiting until it is ready.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Starts a broker with extra command-line arguments.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        let metrics_default: &[&str] = if extra.contains(&"--metrics-listen") {
            &[]
        } else {
            &["--metrics-listen", "off"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-broker"))
            .arg("standalone")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(metrics_default)
            .args(extra)
            .env("FERRY_LOG", "warn")
            .env("FERRY_LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ferry-broker");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ferry-broker ready grpc=") {
                    let _ = tx.send(rest.to_owned());
                }
            }
        });
        let Ok(ready) = rx.recv_timeout(START_TIMEOUT) else {
            let _ = child.kill();
            panic!("ferry-broker did not become ready");
        };
        // "ADDR metrics=ADDR|off"
        let mut parts = ready.split_whitespace();
        let addr = parts
            .next()
            .and_then(|a| a.parse().ok())
            .expect("ready line has an address");
        let metrics_addr = parts
            .next()
            .and_then(|m| m.strip_prefix("metrics="))
            .and_then(|m| m.parse().ok());
        Self {
            child: Some(child),
            addr,
            metrics_addr,
            data_dir: data_dir.to_owned(),
        }
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// gRPC endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Connects to a broker, retrying briefly.
pub async fn channel(url: &str) -> Channel {
    for _ in 0..50 {
        if let Ok(endpoint) = Channel::from_shared(url.to_owned())
            && let Ok(channel) = endpoint.connect().await
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {url}");
}

/// Admin client with large message limits.
pub fn admin(channel: &Channel) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(channel.clone())
}

/// Topic client with large message limits.
pub fn topics(channel: &Channel) -> TopicServiceClient<Channel> {
    TopicServiceClient::new(channel.clone())
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024)
}

/// Creates a topic with the given partitions and durability.
pub async fn create_topic(
    channel: &Channel,
    name: &str,
    partitions: u32,
    durability: pb::Durability,
) {
    admin(channel)
        .create_topic(pb::CreateTopicRequest {
            name: name.to_owned(),
            config: Some(pb::TopicConfig {
                partitions,
                durability: durability as i32,
                ..Default::default()
            }),
        })
        .await
        .expect("create topic");
}

/// Encodes values as one batch, optionally with idempotent-producer fields.
pub fn batch(values: &[Vec<u8>], producer: Option<ProducerStamp>) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.set_producer(producer);
    for value in values {
        builder.push(None, value, &[], now_ms());
    }
    builder.finish().expect("non-empty batch")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub partition: u32,
    pub offset: u64,
    pub value: Vec<u8>,
}

/// Reads every record of a partition from its start to its high watermark,
/// checking CRCs and that offsets are contiguous.
pub async fn read_partition(channel: &Channel, topic: &str, partition: u32) -> Vec<ReadRecord> {
    let mut client = topics(channel);
    let mut records = Vec::new();
    let mut offset = 0u64;
    loop {
        let response = client
            .fetch(pb::FetchRequest {
                partitions: vec![pb::FetchPartition {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    max_bytes: 4 * 1024 * 1024,
                }],
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 0,
                decode: false,
            })
            .await
            .expect("fetch")
            .into_inner();
        let fetched = &response.partitions[0];
        assert!(fetched.error.is_none(), "fetch error {:?}", fetched.error);
        if fetched.records.is_empty() {
            assert_eq!(
                offset, fetched.high_watermark,
                "stopped short of the high watermark"
            );
            return records;
        }
        for batch in Batches::new(&fetched.records) {
            let batch = batch.expect("well-formed batch");
            batch.verify_crc().expect("served batch has a valid CRC");
            for record in batch.records() {
                let record = record.expect("well-formed record");
                if record.offset < offset {
                    continue;
                }
                assert_eq!(record.offset, offset, "offsets are contiguous");
                records.push(ReadRecord {
                    partition,
                    offset: record.offset,
                    value: record.value.to_vec(),
                });
                offset += 1;
            }
        }
    }
}

/// The `ErrorDetail` of a failed call.
pub fn detail(status: &tonic::Status) -> pb::ErrorDetail {
    ferry_proto::status::detail(status).expect("status carries Ferry's error details")
}

/// The body of a plain HTTP GET of `/metrics` (the raw response, headers included).
pub fn scrape(addr: SocketAddr) -> String {
    http_get(addr, "/metrics")
}

/// The whole HTTP/1.1 response (status line, headers, body) to `GET path` on `addr`.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to metrics");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .expect("request");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("response");
    body
}

/// The directory of one partition of a topic in a standalone host's data directory.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    let topic_dir = std::fs::read_dir(data_dir.join("topics"))
        .expect("topics dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{topic}-")))
        })
        .expect("topic directory");
    topic_dir.join(partition.to_string())
}

/// The segment files of a log directory, oldest first.
pub fn segment_files(log_dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(log_dir)
        .expect("log dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

/// Where `.ci/setup test` installs grpcio, grpcio-tools and grpcio-status.
fn python_deps() -> PathBuf {
    std::env::var_os("FERRY_PYTHON_DEPS").map_or_else(
        || {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".cache/ferry/python")
        },
        PathBuf::from,
    )
}

/// Runs `python3 args…` from the repository with the Python client
/// (`clients/python`) and its dependencies on the path: whether it succeeded, and
/// what it printed.
pub fn python(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path =
        std::env::join_paths([repo.join("clients/python"), python_deps()]).expect("a PYTHONPATH");
    let output = Command::new("timeout")
        .args(["-s", "KILL", "600", "python3"])
        .current_dir(&repo)
        .env("PYTHONPATH", path)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("run python3: {err}"));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// Runs `e2e/python/queue_client.py` (Python grpcio, stubs generated from the
/// repository's protos) with `args`: whether it succeeded, and what it printed.
pub fn python_queue_client(args: &[String]) -> (bool, String) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut all: Vec<std::ffi::OsString> = vec![
        repo.join("e2e/python/queue_client.py").into(),
        "--proto-dir".into(),
        repo.join("proto").into(),
    ];
    all.extend(args.iter().map(Into::into));
    let all: Vec<&std::ffi::OsStr> = all.iter().map(std::ffi::OsString::as_os_str).collect();
    python(&all)
}

/// `ferry-broker token add` for `principal` (in `groups`, comma-separated, if any):
/// the token it printed, checked to be absent from the tokens file itself.
pub fn add_token(tokens: &Path, principal: &str, groups: &str) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry-broker"));
    command.args(["token", "add", "--tokens-file"]);
    command.arg(tokens).args(["--principal", principal]);
    if !groups.is_empty() {
        command.args(["--groups", groups]);
    }
    let output = command.output().expect("run ferry-broker token add");
    assert!(output.status.success(), "token add: {output:?}");
    let token = String::from_utf8(output.stdout).expect("UTF-8");
    let token = token.trim().to_owned();
    assert!(
        token.starts_with("ferry_") && token.len() > 60,
        "token {token:?}"
    );
    let file = std::fs::read_to_string(tokens).expect("read the tokens file");
    assert!(
        !file.contains(&token),
        "the tokens file holds the token itself"
    );
    token
}
