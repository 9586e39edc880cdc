//! `ferryctl group …`: list consumer groups and show members, assignment and lag.

use clap::Subcommand;
use ferry_client::{ErrorCode, GroupDescription, TopicPartition};
use serde_json::json;

use crate::Context;
use crate::output::{self, OutputFormat};

/// Group subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show a group's members, their partitions and the lag per partition.
    Describe {
        /// Group name.
        group: String,
    },
}

/// Runs a group subcommand.
pub async fn run(context: &Context, command: GroupCommand) -> anyhow::Result<()> {
    let client = context.connect().await?;
    match command {
        GroupCommand::List => {
            let groups = client.list_groups().await?;
            match context.output {
                OutputFormat::Text => {
                    for group in groups {
                        println!("{group}");
                    }
                }
                OutputFormat::Json => output::print_json(&json!({ "groups": groups }))?,
            }
        }
        GroupCommand::Describe { group } => {
            let description = client.describe_group(&group).await.map_err(|err| {
                if err.is(ErrorCode::GroupNotFound) {
                    anyhow::anyhow!("group '{group}' not found")
                } else {
                    err.into()
                }
            })?;
            match context.output {
                OutputFormat::Text => print!("{}", describe_text(&description)),
                OutputFormat::Json => output::print_json(&describe_json(&description))?,
            }
        }
    }
    Ok(())
}

fn partition_list(partitions: &[TopicPartition]) -> String {
    if partitions.is_empty() {
        return "-".to_owned();
    }
    partitions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn describe_text(group: &GroupDescription) -> String {
    let mut text = format!(
        "group:      {}\ngeneration: {}\nmembers:    {}\n\n",
        group.group,
        group.generation,
        group.members.len()
    );
    let members: Vec<Vec<String>> = group
        .members
        .iter()
        .map(|m| {
            vec![
                m.member_id.clone(),
                m.client_id.clone(),
                partition_list(&m.assigned),
                partition_list(&m.owned),
            ]
        })
        .collect();
    text.push_str(&output::table(
        &["MEMBER", "CLIENT", "ASSIGNED", "OWNED"],
        &members,
    ));
    let owner = |tp: &TopicPartition| {
        group
            .members
            .iter()
            .find(|m| m.owned.contains(tp))
            .map_or_else(|| "-".to_owned(), |m| m.member_id.clone())
    };
    let lag: Vec<Vec<String>> = group
        .lag
        .iter()
        .map(|l| {
            vec![
                l.partition.topic.clone(),
                l.partition.partition.to_string(),
                l.committed_offset.to_string(),
                l.high_watermark.to_string(),
                l.lag.to_string(),
                owner(&l.partition),
            ]
        })
        .collect();
    text.push('\n');
    let headers = ["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "OWNER"];
    text.push_str(&output::table(&headers, &lag));
    text
}

fn describe_json(group: &GroupDescription) -> serde_json::Value {
    let names = |partitions: &[TopicPartition]| -> Vec<serde_json::Value> {
        partitions
            .iter()
            .map(|tp| json!({ "topic": tp.topic, "partition": tp.partition }))
            .collect()
    };
    json!({
        "group": group.group,
        "generation": group.generation,
        "members": group.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "client_id": m.client_id,
            "assigned": names(&m.assigned),
            "owned": names(&m.owned),
        })).collect::<Vec<_>>(),
        "lag": group.lag.iter().map(|l| json!({
            "topic": l.partition.topic,
            "partition": l.partition.partition,
            "committed_offset": l.committed_offset,
            "high_watermark": l.high_watermark,
            "lag": l.lag,
        })).collect::<Vec<_>>(),
        "total_lag": group.lag.iter().map(|l| l.lag).sum::<u64>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_client::{GroupMember, PartitionLag};

    #[test]
    fn describe_shows_members_and_lag() {
        let tp = TopicPartition::new("orders", 0);
        let group = GroupDescription {
            group: "billing".into(),
            generation: 3,
            members: vec![GroupMember {
                member_id: "m-1".into(),
                client_id: "ferryctl".into(),
                assigned: vec![tp.clone()],
                owned: vec![tp.clone()],
            }],
            lag: vec![PartitionLag {
                partition: tp,
                committed_offset: 40,
                high_watermark: 50,
                lag: 10,
            }],
        };
        let text = describe_text(&group);
        assert!(text.contains("m-1     ferryctl  orders/0  orders/0"));
        assert!(text.contains("orders  0          40         50   10   m-1"));
        let value = describe_json(&group);
        assert_eq!(value["total_lag"], 10);
        assert_eq!(value["members"][0]["owned"][0]["topic"], "orders");
    }
}
