//! `ferryctl cluster status`: the hosts of the connected broker's cluster (through a
//! gateway, of the cluster behind it), and every partition's replicas, leader, epoch
//! and in-sync replicas.

use clap::Subcommand;
use ferry_client::{ClusterMetadata, PartitionPlacement, ResourcePlacement};
use serde_json::json;

use crate::Context;
use crate::output::{self, OutputFormat};

/// Cluster subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Hosts (live or gone, which one is controller) and partition placement.
    Status,
}

/// Runs a cluster subcommand.
pub async fn run(context: &Context, command: ClusterCommand) -> anyhow::Result<()> {
    let client = context.connect().await?;
    match command {
        ClusterCommand::Status => {
            let metadata = client.describe_cluster(&[]).await?;
            match context.output {
                OutputFormat::Text => print!("{}", status_text(&metadata)),
                OutputFormat::Json => output::print_json(&status_json(&metadata))?,
            }
        }
    }
    Ok(())
}

fn list(hosts: &[String]) -> String {
    if hosts.is_empty() {
        "-".to_owned()
    } else {
        hosts.join(",")
    }
}

fn placement_rows(kind: &str, resources: &[ResourcePlacement]) -> Vec<Vec<String>> {
    resources
        .iter()
        .flat_map(|resource| {
            resource.partitions.iter().map(move |p| {
                vec![
                    kind.to_owned(),
                    resource.name.clone(),
                    p.partition.to_string(),
                    p.leader.clone().unwrap_or_else(|| "none".to_owned()),
                    p.leader_epoch.to_string(),
                    list(&p.replicas),
                    list(&p.in_sync_replicas),
                    p.high_watermark
                        .map_or_else(|| "-".to_owned(), |hw| hw.to_string()),
                    lag_text(p),
                ]
            })
        })
        .collect()
}

/// The largest follower lag and who has it, `0` when every follower is caught up,
/// `-` when unknown (no follower has fetched, or nothing was published).
fn lag_text(p: &PartitionPlacement) -> String {
    match p.follower_lag.iter().max_by_key(|(_, lag)| **lag) {
        Some((_, 0)) => "0".to_owned(),
        Some((host, lag)) => format!("{lag} ({host})"),
        None => "-".to_owned(),
    }
}

fn status_text(metadata: &ClusterMetadata) -> String {
    let hosts: Vec<Vec<String>> = metadata
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.host_id.clone(),
                if h.address.is_empty() {
                    "-".to_owned()
                } else {
                    h.address.clone()
                },
                match (h.alive, h.draining) {
                    (true, false) => "live",
                    (true, true) => "live, draining",
                    (false, false) => "gone",
                    (false, true) => "gone, draining",
                }
                .to_owned(),
                if h.zone.is_empty() {
                    "-".to_owned()
                } else {
                    h.zone.clone()
                },
                if h.controller { "controller" } else { "" }.to_owned(),
            ]
        })
        .collect();
    let mut rows = placement_rows("topic", &metadata.topics);
    rows.extend(placement_rows("queue", &metadata.queues));
    format!(
        "cluster: {}\n\n{}\n{}",
        metadata.cluster,
        output::table(&["HOST", "ADDRESS", "STATE", "ZONE", "ROLE"], &hosts),
        output::table(
            &[
                "KIND",
                "NAME",
                "PARTITION",
                "LEADER",
                "EPOCH",
                "REPLICAS",
                "IN-SYNC",
                "HW",
                "LAG"
            ],
            &rows
        )
    )
}

fn placement_json(resources: &[ResourcePlacement]) -> serde_json::Value {
    resources
        .iter()
        .map(|resource| {
            json!({
                "name": resource.name,
                "partitions": resource.partitions.iter().map(|p| json!({
                    "partition": p.partition,
                    "leader": p.leader,
                    "leader_epoch": p.leader_epoch,
                    "replicas": p.replicas,
                    "in_sync_replicas": p.in_sync_replicas,
                    "high_watermark": p.high_watermark,
                    "log_end_offset": p.log_end_offset,
                    "follower_lag": p.follower_lag,
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn status_json(metadata: &ClusterMetadata) -> serde_json::Value {
    json!({
        "cluster": metadata.cluster,
        "hosts": metadata.hosts.iter().map(|h| json!({
            "host_id": h.host_id,
            "address": h.address,
            "alive": h.alive,
            "draining": h.draining,
            "zone": h.zone,
            "controller": h.controller,
        })).collect::<Vec<_>>(),
        "topics": placement_json(&metadata.topics),
        "queues": placement_json(&metadata.queues),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_client::HostInfo;

    #[test]
    fn status_lists_hosts_and_leaderless_partitions() {
        let metadata = ClusterMetadata {
            cluster: "c1".into(),
            hosts: vec![
                HostInfo {
                    host_id: "h0".into(),
                    address: "127.0.0.2:7070".into(),
                    alive: true,
                    controller: true,
                    zone: "zone-a".into(),
                    draining: false,
                },
                HostInfo {
                    host_id: "h1".into(),
                    address: String::new(),
                    alive: false,
                    controller: false,
                    zone: String::new(),
                    draining: true,
                },
            ],
            topics: vec![ResourcePlacement {
                name: "orders".into(),
                partitions: vec![PartitionPlacement {
                    partition: 0,
                    leader: None,
                    leader_epoch: 3,
                    replicas: vec!["h1".into()],
                    in_sync_replicas: vec!["h1".into()],
                    high_watermark: Some(40),
                    log_end_offset: Some(42),
                    follower_lag: [("h2".to_owned(), 2), ("h3".to_owned(), 0)].into(),
                }],
            }],
            queues: Vec::new(),
        };
        let text = status_text(&metadata);
        assert!(text.contains("controller"));
        assert!(text.contains("gone, draining"), "{text}");
        assert!(text.contains("zone-a"), "{text}");
        assert!(text.contains("none"));
        assert!(text.contains("2 (h2)"), "{text}");
        let value = status_json(&metadata);
        assert_eq!(value["topics"][0]["partitions"][0]["leader_epoch"], 3);
        assert_eq!(value["topics"][0]["partitions"][0]["follower_lag"]["h2"], 2);
        assert_eq!(value["hosts"][1]["alive"], false);
        assert_eq!(value["hosts"][1]["draining"], true);
        assert_eq!(value["hosts"][0]["zone"], "zone-a");
    }
}
