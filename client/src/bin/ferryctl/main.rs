//! `ferryctl`: manage topics, groups and queues, produce, consume, send and receive
//! from the shell, and benchmark a Ferry broker.

mod bench;
mod cluster;
mod group;
mod output;
mod parse;
mod queue;
mod topic;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_client::Client;

use output::OutputFormat;

/// Command-line tool for Ferry, the distributed message queue.
#[derive(Debug, Parser)]
#[command(name = "ferryctl", version, about)]
struct Cli {
    /// Broker (or gateway) address, `host:port` or `http://host:port`.
    #[arg(
        long,
        global = true,
        env = "FERRY_SERVER",
        default_value = "127.0.0.1:7070"
    )]
    server: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, inspect, delete, produce to and consume from topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Inspect consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Create and inspect queues; send, receive and settle messages.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Measure throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Show the broker cluster: hosts, partition leaders and in-sync replicas.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

/// Global settings every command gets.
#[derive(Debug, Clone)]
pub struct Context {
    /// Broker address.
    pub server: String,
    /// Output format.
    pub output: OutputFormat,
}

impl Context {
    /// Connects to the broker, with the address in the error when that fails.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.server).await?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let context = Context {
        server: cli.server,
        output: cli.output,
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Topic(command) => topic::run(&context, command).await,
            Command::Group(command) => group::run(&context, command).await,
            Command::Queue(command) => queue::run(&context, command).await,
            Command::Bench(command) => bench::run(&context, command).await,
            Command::Cluster(command) => cluster::run(&context, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
