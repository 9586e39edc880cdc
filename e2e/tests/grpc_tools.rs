//! Ferry's errors read by a standard gRPC tool: grpcurl (built from its Go module by
//! `e2e/k8s/build`), with nothing but the server's reflection, prints a missing
//! topic as a `google.rpc.Status` with an `ErrorInfo` (reason `TOPIC_NOT_FOUND`,
//! domain `ferry.dev`) and a `ResourceInfo`, and a host's refusal to serve a queue
//! it does not lead with `NOT_LEADER`, a `RetryInfo` and the leader's address in a
//! `ferry.v1.LeaderHint`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{FORM_DEADLINE, PartitionId, start_formed, wait_for_view};
use ferry_e2e::{ClusterOptions, KubeTools};
use serde_json::Value;

const QUEUE: &str = "tooling";
/// Longest one grpcurl call may run.
const GRPCURL_TIMEOUT_S: &str = "30";

fn grpcurl() -> PathBuf {
    let path = KubeTools::locate().path("grpcurl");
    assert!(
        path.is_file(),
        "{} is missing: run e2e/k8s/build (or ./.ci/setup test)",
        path.display()
    );
    path
}

/// Calls `method` on the plaintext server at `addr` with the JSON `request`,
/// expecting a failure; returns grpcurl's JSON of the error status (which
/// `-format-error` prints on stderr).
fn failed_call(addr: &str, method: &str, request: &str) -> Value {
    let output = Command::new("timeout")
        .args(["-s", "KILL", GRPCURL_TIMEOUT_S])
        .arg(grpcurl())
        .args(["-plaintext", "-format-error", "-d", request, addr, method])
        .output()
        .unwrap_or_else(|err| panic!("run grpcurl: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "{method} succeeded: {stdout} {stderr}"
    );
    serde_json::from_str(&stderr)
        .unwrap_or_else(|err| panic!("grpcurl printed no status JSON ({err}): {stdout} {stderr}"))
}

/// The detail of `@type` `type_url` in a status JSON.
fn detail<'a>(status: &'a Value, type_url: &str) -> &'a Value {
    status["details"]
        .as_array()
        .and_then(|details| details.iter().find(|d| d["@type"] == type_url))
        .unwrap_or_else(|| panic!("no {type_url} in {status:#}"))
}

#[tokio::test]
async fn grpcurl_prints_ferrys_errors_in_the_standard_model() {
    let (cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 2,
        ..ClusterOptions::default()
    })
    .await;
    let first = cluster.hosts()[0].addr().to_string();

    let missing = failed_call(
        &first,
        "ferry.v1.AdminService/DescribeTopic",
        r#"{"name": "no-such-topic"}"#,
    );
    assert_eq!(missing["code"], 5, "NOT_FOUND: {missing:#}");
    let info = detail(&missing, "type.googleapis.com/google.rpc.ErrorInfo");
    assert_eq!(info["reason"], "TOPIC_NOT_FOUND", "{info:#}");
    assert_eq!(info["domain"], "ferry.dev", "{info:#}");
    assert_eq!(info["metadata"]["topic"], "no-such-topic", "{info:#}");
    let resource = detail(&missing, "type.googleapis.com/google.rpc.ResourceInfo");
    assert_eq!(resource["resourceType"], "topic", "{resource:#}");
    assert_eq!(resource["resourceName"], "no-such-topic", "{resource:#}");

    let channel = common::rpc::channel(&cluster.hosts()[0]);
    common::rpc::create_queue(&channel, QUEUE).await;
    let view = wait_for_view(
        &mut etcd,
        cluster.name(),
        FORM_DEADLINE,
        "the queue led",
        |view| view.leader(&PartitionId::queue(QUEUE)).is_some(),
    )
    .await;
    let leader = view
        .leader(&PartitionId::queue(QUEUE))
        .expect("a leader")
        .to_owned();
    let (led_by, other) = match cluster.hosts() {
        [a, b] if a.host_id() == leader => (a, b),
        [a, b] => (b, a),
        _ => unreachable!("two hosts"),
    };
    // The other host may still be opening the queue: then it does not know it yet.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let moved = loop {
        let status = failed_call(
            &other.addr().to_string(),
            "ferry.v1.QueueService/Send",
            &format!(r#"{{"queue": "{QUEUE}", "messages": [{{"body": "aGk="}}]}}"#),
        );
        if detail(&status, "type.googleapis.com/google.rpc.ErrorInfo")["reason"] == "NOT_LEADER"
            || tokio::time::Instant::now() > deadline
        {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(moved["code"], 14, "UNAVAILABLE: {moved:#}");
    let info = detail(&moved, "type.googleapis.com/google.rpc.ErrorInfo");
    assert_eq!(info["reason"], "NOT_LEADER", "{moved:#}");
    assert_eq!(info["metadata"]["queue"], QUEUE, "{info:#}");
    let retry = detail(&moved, "type.googleapis.com/google.rpc.RetryInfo");
    assert!(retry["retryDelay"].is_string(), "{retry:#}");
    let hint = detail(&moved, "type.googleapis.com/ferry.v1.LeaderHint");
    assert_eq!(hint["hostId"], led_by.host_id(), "{hint:#}");
    assert_eq!(hint["address"], led_by.addr().to_string(), "{hint:#}");
}
