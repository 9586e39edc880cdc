//! `ferryctl acl` and `ferryctl whoami`: the access rules brokers enforce, and who a
//! broker takes this caller for (docs/security.md).

use clap::{Args, Subcommand};
use ferry_client::AccessRule;
use serde_json::json;

use crate::Context;
use crate::output::{self, OutputFormat};

/// Access rule subcommands (they need the admin right on the cluster).
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Every rule.
    List,
    /// Grant a principal operations on a topic, queue, group (by name or prefix) or
    /// the cluster. Replaces a rule of the same name.
    Add(AddArgs),
    /// Remove a rule by name.
    Remove {
        /// The rule's name.
        name: String,
    },
}

/// What `acl add` grants.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The rule's name (lower-case letters, digits, '-' and '.').
    name: String,
    /// Who: a principal's name (a certificate's common name, a token's principal,
    /// `system:serviceaccount:NS:NAME`), `group:NAME`, or `*` for every
    /// authenticated caller.
    #[arg(long)]
    principal: String,
    /// Operations, comma-separated. Topic: produce, consume, describe, admin. Queue:
    /// send, receive, ack, purge, redrive, describe, admin. Group: join, commit,
    /// describe, admin. Cluster: admin.
    #[arg(long, value_delimiter = ',', required = true)]
    operations: Vec<String>,
    /// A topic name (or prefix, with --prefix).
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A queue name (or prefix, with --prefix).
    #[arg(long, group = "resource")]
    queue: Option<String>,
    /// A consumer group name (or prefix, with --prefix).
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// The cluster itself (admin: everything, access rules included).
    #[arg(long, group = "resource")]
    cluster: bool,
    /// The name is a prefix: every resource whose name starts with it.
    #[arg(long)]
    prefix: bool,
}

impl AddArgs {
    fn rule(self) -> anyhow::Result<AccessRule> {
        let (kind, name) = match (self.topic, self.queue, self.group, self.cluster) {
            (Some(name), None, None, false) => ("topic", name),
            (None, Some(name), None, false) => ("queue", name),
            (None, None, Some(name), false) => ("group", name),
            (None, None, None, true) => ("cluster", String::new()),
            _ => anyhow::bail!("name one resource: --topic, --queue, --group or --cluster"),
        };
        Ok(AccessRule {
            name: self.name,
            principal: self.principal,
            resource_kind: kind.to_owned(),
            resource_name: name,
            prefix: self.prefix,
            operations: self.operations,
        })
    }
}

/// Runs an acl subcommand.
pub async fn run(context: &Context, command: AclCommand) -> anyhow::Result<()> {
    let client = context.connect().await?;
    match command {
        AclCommand::List => {
            let rules = client.list_access_rules().await?;
            match context.output {
                OutputFormat::Text => print!("{}", rules_text(&rules)),
                OutputFormat::Json => {
                    output::print_json(&json!(rules.iter().map(rule_json).collect::<Vec<_>>()))?
                }
            }
        }
        AclCommand::Add(args) => {
            let rule = args.rule()?;
            client.put_access_rule(&rule).await?;
            match context.output {
                OutputFormat::Text => println!("rule {} written", rule.name),
                OutputFormat::Json => output::print_json(&rule_json(&rule))?,
            }
        }
        AclCommand::Remove { name } => {
            let existed = client.delete_access_rule(&name).await?;
            match context.output {
                OutputFormat::Text if existed => println!("rule {name} removed"),
                OutputFormat::Text => println!("no rule named {name}"),
                OutputFormat::Json => {
                    output::print_json(&json!({ "name": name, "existed": existed }))?
                }
            }
        }
    }
    Ok(())
}

/// `ferryctl whoami`.
pub async fn who_am_i(context: &Context) -> anyhow::Result<()> {
    let identity = context.connect().await?.who_am_i().await?;
    match context.output {
        OutputFormat::Text => {
            println!("principal: {}", identity.principal);
            if !identity.groups.is_empty() {
                println!("groups: {}", identity.groups.join(","));
            }
            println!("authenticated by: {}", identity.method);
            println!(
                "access rules: {}",
                if identity.authorization_enforced {
                    "enforced"
                } else {
                    "not enforced"
                }
            );
        }
        OutputFormat::Json => output::print_json(&json!({
            "principal": identity.principal,
            "groups": identity.groups,
            "method": identity.method,
            "authorization_enforced": identity.authorization_enforced,
        }))?,
    }
    Ok(())
}

fn resource_text(rule: &AccessRule) -> String {
    match (rule.resource_kind.as_str(), rule.prefix) {
        ("cluster", _) => "cluster".to_owned(),
        (kind, true) => format!("{kind} {}*", rule.resource_name),
        (kind, false) => format!("{kind} {}", rule.resource_name),
    }
}

fn rules_text(rules: &[AccessRule]) -> String {
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|rule| {
            vec![
                rule.name.clone(),
                rule.principal.clone(),
                resource_text(rule),
                rule.operations.join(","),
            ]
        })
        .collect();
    output::table(&["NAME", "PRINCIPAL", "RESOURCE", "OPERATIONS"], &rows)
}

fn rule_json(rule: &AccessRule) -> serde_json::Value {
    json!({
        "name": rule.name,
        "principal": rule.principal,
        "resource_kind": rule.resource_kind,
        "resource_name": rule.resource_name,
        "prefix": rule.prefix,
        "operations": rule.operations,
    })
}
