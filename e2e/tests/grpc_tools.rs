//! Ferry's errors read by a standard gRPC tool: grpcurl (built from its Go module by
//! `e2e/k8s/build`), with nothing but the server's reflection, prints a missing
//! topic as a `google.rpc.Status` with an `ErrorInfo` (reason `TOPIC_NOT_FOUND`,
//! domain `ferry.dev`) and a `ResourceInfo`, and a host's refusal to serve a queue
//! it does not lead with `NOT_LEADER`, a `RetryInfo` and the leader's address in a
//! `ferry.v1.LeaderHint`. A decoded fetch of partitions spread over both hosts,
//! sent to one, answers the partitions it leads with their messages and refuses
//! each of the others alone, naming its leader.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{FORM_DEADLINE, PartitionId, start_formed, wait_for_view};
use ferry_e2e::{ClusterOptions, KubeTools};
use serde_json::Value;

const QUEUE: &str = "tooling";
const TOPIC: &str = "spread";
const PARTITIONS: u32 = 4;
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

/// Calls `method` on the plaintext server at `addr` with the JSON `request`; its
/// JSON answer.
fn call(addr: &str, method: &str, request: &str) -> Value {
    let output = Command::new("timeout")
        .args(["-s", "KILL", GRPCURL_TIMEOUT_S])
        .arg(grpcurl())
        .args(["-plaintext", "-d", request, addr, method])
        .output()
        .unwrap_or_else(|err| panic!("run grpcurl: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{method} failed: {stdout} {stderr}"
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("grpcurl printed no JSON ({err}): {stdout}"))
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

    decoded_fetch_spread_over_hosts(&cluster, &mut etcd).await;
}

/// Partitions of one topic spread over both hosts, each holding one message: a
/// decoded fetch of all of them from one host.
async fn decoded_fetch_spread_over_hosts(
    cluster: &ferry_e2e::Cluster,
    etcd: &mut etcd_client::Client,
) {
    let channels = common::rpc::channels(cluster);
    let first = &cluster.hosts()[0];
    common::rpc::create_topic(&channels[first.host_id()], TOPIC, PARTITIONS).await;
    let ids: Vec<PartitionId> = (0..PARTITIONS)
        .map(|p| PartitionId::topic(TOPIC, p))
        .collect();
    let view = wait_for_view(
        etcd,
        cluster.name(),
        FORM_DEADLINE,
        "every partition led",
        |view| ids.iter().all(|id| view.leader(id).is_some()),
    )
    .await;
    let leaders: Vec<String> = ids
        .iter()
        .map(|id| view.leader(id).expect("a leader").to_owned())
        .collect();
    assert!(
        leaders.iter().any(|l| l == first.host_id())
            && leaders.iter().any(|l| l != first.host_id()),
        "partitions spread over both hosts: {leaders:?}"
    );
    for (partition, leader) in (0..PARTITIONS).zip(&leaders) {
        let value = format!("m{partition}");
        common::rpc::until_led(Duration::from_secs(30), || {
            common::rpc::produce(&channels[leader], TOPIC, partition, None, &value)
        })
        .await
        .unwrap_or_else(|status| panic!("produce to {partition}: {}", common::rpc::show(&status)));
    }
    let wanted: Vec<String> = (0..PARTITIONS)
        .map(|p| format!(r#"{{"topic": "{TOPIC}", "partition": {p}, "offset": 0}}"#))
        .collect();
    let answer = call(
        &first.addr().to_string(),
        "ferry.v1.TopicService/Fetch",
        &format!(
            r#"{{"partitions": [{}], "decode": true}}"#,
            wanted.join(", ")
        ),
    );
    let partitions = answer["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), PARTITIONS as usize, "{answer:#}");
    for ((partition, leader), fetched) in (0..PARTITIONS).zip(&leaders).zip(partitions) {
        assert_eq!(
            fetched["partition"].as_u64().unwrap_or(0),
            u64::from(partition),
            "{fetched:#}"
        );
        if leader == first.host_id() {
            let value = format!("m{partition}");
            let expected = base64_of(value.as_bytes());
            assert_eq!(
                fetched["messages"][0]["value"],
                expected.as_str(),
                "{fetched:#}"
            );
            assert!(fetched["error"].is_null(), "{fetched:#}");
        } else {
            assert_eq!(
                fetched["error"]["code"], "ERROR_CODE_NOT_LEADER",
                "{fetched:#}"
            );
            assert_eq!(
                fetched["error"]["leaderHint"]["hostId"],
                leader.as_str(),
                "{fetched:#}"
            );
            assert!(fetched["messages"].is_null(), "{fetched:#}");
        }
    }
}

/// Standard base64, as protobuf's JSON mapping writes bytes.
fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
