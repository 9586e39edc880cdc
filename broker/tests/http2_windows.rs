//! The broker's listeners grant the HTTP/2 flow-control windows it is configured
//! with, as a plain HTTP/2 client sees them: a large produce request is not held up
//! waiting for window updates every megabyte (`Http2Settings`, `docs/performance.md`).

mod common;

use std::time::Duration;

use common::BrokerProcess;

/// How long the window may take to open (the server's updates follow its settings).
const OPEN_WITHIN: Duration = Duration::from_secs(10);
/// No more capacity for this long: the windows are open as far as they go.
const SETTLED_AFTER: Duration = Duration::from_millis(500);

/// What one call to the broker at `addr` may send before the broker reads any of it:
/// the smaller of the stream's and the connection's windows as the server grants them.
async fn send_window(addr: std::net::SocketAddr, wanted: usize) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The client's own send buffer (400 KiB by default) would cap the capacity first.
    let (client, connection) = h2::client::Builder::new()
        .max_send_buffer_size(wanted)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{addr}/ferry.v1.TopicService/Produce"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (_response, mut stream) = client.send_request(request, false).expect("send");
    // Ask for more than either window could grant; the capacity granted grows as the
    // server's window updates arrive, up to the smaller window, then stays there.
    stream.reserve_capacity(wanted);
    let mut granted = 0;
    let deadline = tokio::time::Instant::now() + OPEN_WITHIN;
    while tokio::time::Instant::now() < deadline {
        let more = futures::future::poll_fn(|cx| stream.poll_capacity(cx));
        match tokio::time::timeout(SETTLED_AFTER, more).await {
            Ok(Some(capacity)) => granted = capacity.expect("capacity"),
            Ok(None) | Err(_) => break,
        }
    }
    connection.abort();
    granted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_grant_the_configured_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path());
    // The default stream window (8 MiB) against hyper's own 1 MiB.
    assert_eq!(send_window(broker.addr, 64 << 20).await, 8 << 20);

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start_with(
        dir.path(),
        &[
            "--http2-stream-window-bytes",
            "3000000",
            "--http2-connection-window-bytes",
            "2000000",
        ],
    );
    // The connection's window is the smaller one here.
    assert_eq!(send_window(broker.addr, 64 << 20).await, 2_000_000);
}

#[test]
fn windows_and_frames_outside_http2s_range_are_refused_at_start() {
    for bad in [
        ["--http2-stream-window-bytes", "0"],
        ["--http2-connection-window-bytes", "2147483648"],
        ["--http2-max-frame-bytes", "1024"],
        ["--http2-max-frame-bytes", "16777216"],
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry-broker"))
            .arg("standalone")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
            .args(bad)
            .output()
            .expect("run ferry-broker");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad:?} accepted");
        assert!(
            stderr.contains("http2") || stderr.contains("invalid value"),
            "{bad:?}: {stderr}"
        );
    }
}
