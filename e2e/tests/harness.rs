//! The harness itself against real processes: etcd and broker hosts stop, restart,
//! pause and resume the way the scenarios rely on.

use std::net::TcpStream;
use std::time::Duration;

use etcd_client::Client;
use ferry_e2e::{Cluster, EtcdServer};

/// Long enough for any answer from a running etcd on loopback.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a paused etcd is given to (wrongly) answer.
const PAUSED_PROBE: Duration = Duration::from_millis(500);

async fn get(client: &mut Client, key: &str, within: Duration) -> Option<Option<String>> {
    let response = tokio::time::timeout(within, client.get(key, None))
        .await
        .ok()?
        .ok()?;
    Some(
        response
            .kvs()
            .first()
            .map(|kv| kv.value_str().expect("a UTF-8 value").to_owned()),
    )
}

async fn connect(etcd: &EtcdServer) -> Client {
    Client::connect([etcd.endpoint()], None)
        .await
        .expect("connect to etcd")
}

#[tokio::test]
async fn etcd_pauses_resumes_and_keeps_its_data_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut etcd = EtcdServer::start(dir.path());
    let mut client = connect(&etcd).await;
    client.put("/e2e/k", "v", None).await.expect("put");

    etcd.pause();
    assert!(etcd.is_running(), "a paused etcd still runs");
    assert_eq!(
        get(&mut client, "/e2e/k", PAUSED_PROBE).await,
        None,
        "paused etcd answered"
    );
    etcd.resume();
    assert_eq!(
        get(&mut client, "/e2e/k", ANSWER_TIMEOUT).await,
        Some(Some("v".to_owned()))
    );

    etcd.restart();
    let mut client = connect(&etcd).await;
    assert_eq!(
        get(&mut client, "/e2e/k", ANSWER_TIMEOUT).await,
        Some(Some("v".to_owned())),
        "data survives a restart"
    );

    // A paused etcd still stops.
    etcd.pause();
    etcd.stop();
    assert!(!etcd.is_running());
    assert_eq!(
        get(&mut client, "/e2e/k", PAUSED_PROBE).await,
        None,
        "stopped etcd answered"
    );
}

#[test]
fn a_host_restarts_on_its_address_and_starts_empty_after_a_wipe() {
    let mut cluster = Cluster::start(1);
    let host = cluster.host_mut("h0");
    let first = host.addr();
    assert_eq!(first.ip().to_string(), "127.0.0.2");
    assert!(TcpStream::connect(first).is_ok(), "listening on {first}");

    host.pause();
    host.resume();
    host.restart();
    assert_eq!(host.addr(), first, "same address after a restart");
    assert!(host.is_running());

    assert!(host.terminate(), "a SIGTERM'd host exits cleanly");
    assert!(!host.is_running());
    host.wipe_data();
    assert!(!host.config().data_dir.exists());
    host.restart();
    assert!(host.config().data_dir.is_dir());
    assert!(TcpStream::connect(host.addr()).is_ok());
    host.kill();
    assert!(!host.is_running());
}
