//! `ferryctl quota`: per-principal quotas the brokers enforce (docs/security.md).

use clap::{Args, Subcommand};
use ferry_client::Quota;
use serde_json::json;

use crate::Context;
use crate::output::{self, OutputFormat};
use crate::parse::size_bytes;

/// Quota subcommands (they need the admin right on the cluster).
#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Every principal's quotas.
    List,
    /// Set a principal's quotas (replacing its previous ones there); `*` for every
    /// principal without its own. With --topic or --queue they hold each principal on
    /// that topic or queue, on top of its overall quota. A limit left out is no limit.
    Set(SetArgs),
    /// Remove a principal's quotas (overall, or on --topic or --queue).
    Remove {
        /// The principal.
        principal: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

/// Where a quota applies: overall unless a topic or a queue is named.
#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// A topic the quota is for.
    #[arg(long, conflicts_with = "queue")]
    topic: Option<String>,
    /// A queue the quota is for.
    #[arg(long)]
    queue: Option<String>,
}

/// What `quota set` sets.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The principal, or `*`.
    principal: String,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Bytes per second produced to topics and sent to queues (e.g. 10MiB).
    #[arg(long, value_parser = size_bytes)]
    produce_bytes_per_second: Option<u64>,
    /// Bytes per second fetched from topics and received from queues.
    #[arg(long, value_parser = size_bytes)]
    consume_bytes_per_second: Option<u64>,
    /// Requests per second.
    #[arg(long)]
    requests_per_second: Option<u64>,
}

/// Runs a quota subcommand.
pub async fn run(context: &Context, command: QuotaCommand) -> anyhow::Result<()> {
    let client = context.connect().await?;
    match command {
        QuotaCommand::List => {
            let quotas = client.list_quotas().await?;
            match context.output {
                OutputFormat::Text => print!("{}", quotas_text(&quotas)),
                OutputFormat::Json => {
                    output::print_json(&json!(quotas.iter().map(quota_json).collect::<Vec<_>>()))?
                }
            }
        }
        QuotaCommand::Set(args) => {
            let quota = Quota {
                principal: args.principal,
                topic: args.scope.topic,
                queue: args.scope.queue,
                produce_bytes_per_second: args.produce_bytes_per_second,
                consume_bytes_per_second: args.consume_bytes_per_second,
                requests_per_second: args.requests_per_second,
            };
            client.put_quota(&quota).await?;
            match context.output {
                OutputFormat::Text => println!("quota for {} written", quota.principal),
                OutputFormat::Json => output::print_json(&quota_json(&quota))?,
            }
        }
        QuotaCommand::Remove { principal, scope } => {
            let existed = client
                .delete_quota(&principal, scope.topic.as_deref(), scope.queue.as_deref())
                .await?;
            match context.output {
                OutputFormat::Text if existed => println!("quota for {principal} removed"),
                OutputFormat::Text => println!("{principal} had no quota"),
                OutputFormat::Json => {
                    output::print_json(&json!({ "principal": principal, "existed": existed }))?
                }
            }
        }
    }
    Ok(())
}

fn limit(value: Option<u64>, bytes: bool) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if bytes => format!("{}/s", output::bytes(v)),
        Some(v) => format!("{v}/s"),
    }
}

fn quotas_text(quotas: &[Quota]) -> String {
    let rows: Vec<Vec<String>> = quotas
        .iter()
        .map(|q| {
            vec![
                q.principal.clone(),
                scope_text(q),
                limit(q.produce_bytes_per_second, true),
                limit(q.consume_bytes_per_second, true),
                limit(q.requests_per_second, false),
            ]
        })
        .collect();
    output::table(
        &["PRINCIPAL", "ON", "PRODUCE", "CONSUME", "REQUESTS"],
        &rows,
    )
}

/// Where a quota applies, for the table: `*` overall, `topic/NAME`, `queue/NAME`.
fn scope_text(quota: &Quota) -> String {
    match (&quota.topic, &quota.queue) {
        (Some(topic), _) => format!("topic/{topic}"),
        (None, Some(queue)) => format!("queue/{queue}"),
        (None, None) => "*".to_owned(),
    }
}

fn quota_json(quota: &Quota) -> serde_json::Value {
    json!({
        "principal": quota.principal,
        "topic": quota.topic,
        "queue": quota.queue,
        "produce_bytes_per_second": quota.produce_bytes_per_second,
        "consume_bytes_per_second": quota.consume_bytes_per_second,
        "requests_per_second": quota.requests_per_second,
    })
}
