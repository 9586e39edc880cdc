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
    /// Set a principal's quotas (replacing its previous ones); `*` for every principal
    /// without its own. A limit left out is no limit.
    Set(SetArgs),
    /// Remove a principal's quotas.
    Remove {
        /// The principal.
        principal: String,
    },
}

/// What `quota set` sets.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The principal, or `*`.
    principal: String,
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
        QuotaCommand::Remove { principal } => {
            let existed = client.delete_quota(&principal).await?;
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
                limit(q.produce_bytes_per_second, true),
                limit(q.consume_bytes_per_second, true),
                limit(q.requests_per_second, false),
            ]
        })
        .collect();
    output::table(&["PRINCIPAL", "PRODUCE", "CONSUME", "REQUESTS"], &rows)
}

fn quota_json(quota: &Quota) -> serde_json::Value {
    json!({
        "principal": quota.principal,
        "produce_bytes_per_second": quota.produce_bytes_per_second,
        "consume_bytes_per_second": quota.consume_bytes_per_second,
        "requests_per_second": quota.requests_per_second,
    })
}
