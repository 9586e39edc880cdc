//! `ferryctl group …`: list consumer groups, show members, assignment and lag, move
//! a group's committed offsets, and delete a group.

use std::collections::HashMap;

use clap::{Args, Subcommand};
use ferry_client::{Client, ErrorCode, GroupDescription, OffsetSpec, TopicPartition};
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
    /// Move a group's committed offsets on a topic (like kafka-consumer-groups
    /// --reset-offsets): shows the plan, and commits it with --execute. The group
    /// must have no members then.
    ResetOffsets {
        /// Group name.
        group: String,
        /// The topic whose offsets move.
        #[arg(long)]
        topic: String,
        /// Only this partition (repeatable; default: all).
        #[arg(long = "partition")]
        partitions: Vec<u32>,
        #[command(flatten)]
        target: ResetTarget,
        /// Commit the new offsets (without it, only show them).
        #[arg(long)]
        execute: bool,
    },
    /// Delete a group and its committed offsets (like kafka-consumer-groups
    /// --delete). The group must have no members; a member that joins later starts
    /// from its reset policy.
    Delete {
        /// Group name.
        group: String,
    },
}

/// Where reset-offsets moves each partition's committed offset.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// To the first offset still stored.
    #[arg(long)]
    to_earliest: bool,
    /// To the end: only messages produced from now on are read.
    #[arg(long)]
    to_latest: bool,
    /// To this offset (kept within what is stored).
    #[arg(long)]
    to_offset: Option<u64>,
    /// To the first message at or after this time (ms since the epoch).
    #[arg(long)]
    to_timestamp: Option<i64>,
    /// By this many messages from the committed offset (negative: back).
    #[arg(long, allow_hyphen_values = true)]
    shift_by: Option<i64>,
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
        GroupCommand::ResetOffsets {
            group,
            topic,
            partitions,
            target,
            execute,
        } => {
            reset_offsets(
                context,
                &client,
                &group,
                &topic,
                &partitions,
                &target,
                execute,
            )
            .await?
        }
        GroupCommand::Delete { group } => {
            client.delete_group(&group).await.map_err(|err| {
                if err.is(ErrorCode::GroupNotFound) {
                    anyhow::anyhow!("group '{group}' not found")
                } else if err.is(ErrorCode::GroupHasMembers) {
                    anyhow::anyhow!(
                        "group '{group}' has members: stop its consumers (or wait until their \
                         sessions end) and delete it then"
                    )
                } else {
                    err.into()
                }
            })?;
            match context.output {
                OutputFormat::Text => println!("group '{group}' deleted"),
                OutputFormat::Json => {
                    output::print_json(&json!({ "group": group, "deleted": true }))?
                }
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

/// One partition's move: from where to where.
struct Move {
    partition: u32,
    current: Option<u64>,
    new: u64,
}

/// Plans (and with `execute` commits) the new committed offsets of `group` on `topic`.
async fn reset_offsets(
    context: &Context,
    client: &Client,
    group: &str,
    topic: &str,
    only: &[u32],
    target: &ResetTarget,
    execute: bool,
) -> anyhow::Result<()> {
    let description = client.describe_topic(topic).await?;
    let partitions: Vec<u32> = description
        .partitions
        .iter()
        .map(|p| p.partition)
        .filter(|p| only.is_empty() || only.contains(p))
        .collect();
    if let Some(missing) = only.iter().find(|p| !partitions.contains(p)) {
        anyhow::bail!("topic '{topic}' has no partition {missing}");
    }
    let tps: Vec<TopicPartition> = partitions
        .iter()
        .map(|&p| TopicPartition::new(topic, p))
        .collect();
    let committed = client.committed_offsets(group, &tps).await?;
    let bounds = |spec: OffsetSpec| {
        let queries: Vec<(u32, OffsetSpec)> = partitions.iter().map(|&p| (p, spec)).collect();
        async move {
            let found = client.list_offsets(topic, &queries).await?;
            Ok::<_, anyhow::Error>(
                found
                    .into_iter()
                    .map(|o| (o.partition, o.offset))
                    .collect::<HashMap<u32, u64>>(),
            )
        }
    };
    let earliest = bounds(OffsetSpec::Earliest).await?;
    let latest = bounds(OffsetSpec::Latest).await?;
    let at_time = match target.to_timestamp {
        Some(ms) => bounds(OffsetSpec::Timestamp(ms)).await?,
        None => HashMap::new(),
    };
    let mut moves = Vec::with_capacity(partitions.len());
    for (&partition, tp) in partitions.iter().zip(&tps) {
        let low = earliest.get(&partition).copied().unwrap_or(0);
        let high = latest.get(&partition).copied().unwrap_or(low).max(low);
        let current = committed.get(tp).copied();
        let wanted = if target.to_earliest {
            low
        } else if target.to_latest {
            high
        } else if let Some(offset) = target.to_offset {
            offset
        } else if target.to_timestamp.is_some() {
            at_time.get(&partition).copied().unwrap_or(high)
        } else {
            let shift = target.shift_by.unwrap_or(0);
            let from = current.unwrap_or(low);
            if shift < 0 {
                from.saturating_sub(shift.unsigned_abs())
            } else {
                from.saturating_add(shift.unsigned_abs())
            }
        };
        moves.push(Move {
            partition,
            current,
            new: wanted.clamp(low, high),
        });
    }
    if execute {
        let offsets: Vec<(TopicPartition, u64)> = moves
            .iter()
            .map(|m| (TopicPartition::new(topic, m.partition), m.new))
            .collect();
        client
            .commit_offsets(group, "", &offsets)
            .await
            .map_err(|err| {
                if err.is(ErrorCode::GroupHasMembers) {
                    anyhow::anyhow!(
                        "group '{group}' has members: stop its consumers first (offsets move \
                         only while nobody reads)"
                    )
                } else {
                    err.into()
                }
            })?;
    }
    let shown = |offset: Option<u64>| offset.map_or_else(|| "-".to_owned(), |o| o.to_string());
    match context.output {
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = moves
                .iter()
                .map(|m| {
                    vec![
                        topic.to_owned(),
                        m.partition.to_string(),
                        shown(m.current),
                        m.new.to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["TOPIC", "PARTITION", "CURRENT", "NEW"], &rows)
            );
            if !execute {
                println!("(dry run: add --execute to commit these offsets)");
            }
        }
        OutputFormat::Json => output::print_json(&json!({
            "group": group,
            "executed": execute,
            "partitions": moves.iter().map(|m| json!({
                "topic": topic,
                "partition": m.partition,
                "current": m.current,
                "new": m.new,
            })).collect::<Vec<_>>(),
        }))?,
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
