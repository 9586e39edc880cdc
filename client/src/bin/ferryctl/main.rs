//! `ferryctl`: manage topics, groups and queues, produce, consume, send and receive
//! from the shell, and benchmark a Ferry broker.

mod acl;
mod bench;
mod cluster;
mod config;
mod group;
mod output;
mod parse;
mod placement;
mod queue;
mod quota;
mod topic;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ferry_client::{BearerToken, Client, ClientConfig, ClientError, ErrorCode, TlsOptions};
use tracing::Instrument;

use output::OutputFormat;

/// Command-line tool for Ferry, the distributed message queue.
#[derive(Debug, Parser)]
#[command(name = "ferryctl", version, about)]
struct Cli {
    /// Broker (or gateway) address: `host:port`, `http://host:port` or
    /// `https://host:port` (TLS; `host:port` is TLS too when a --tls-* flag is given).
    /// Default: the context's, else 127.0.0.1:7070.
    #[arg(long, global = true, env = "FERRY_SERVER")]
    server: Option<String>,
    /// The named context (server, TLS, token) to use from the config file
    /// (`ferryctl config`); default: its current context.
    #[arg(long, global = true, env = "FERRY_CONTEXT")]
    context: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// PEM CA certificates the server's certificate must chain to (default: the
    /// system's roots).
    #[arg(long, global = true, env = "FERRY_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (mutual TLS).
    #[arg(
        long,
        global = true,
        env = "FERRY_TLS_CERT_FILE",
        requires = "tls_key_file"
    )]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(
        long,
        global = true,
        env = "FERRY_TLS_KEY_FILE",
        requires = "tls_cert_file"
    )]
    tls_key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it differs from --server's host.
    #[arg(long, global = true, env = "FERRY_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
    /// A file holding the bearer token to send (a static token, or a Kubernetes
    /// ServiceAccount token such as /var/run/secrets/…/token). Without it, the
    /// FERRY_TOKEN environment variable's value, if set.
    #[arg(long, global = true, env = "FERRY_TOKEN_FILE")]
    token_file: Option<PathBuf>,
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
    /// Manage the access rules brokers enforce.
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Manage per-principal quotas.
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// Show the principal the broker sees for these credentials.
    Whoami,
    /// Manage named contexts (server, TLS, token) in the config file.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a shell completion script: `source <(ferryctl completion bash)`, or
    /// write it where the shell looks (zsh: a directory on $fpath as `_ferryctl`;
    /// fish: ~/.config/fish/completions/ferryctl.fish).
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Global settings every command gets.
#[derive(Debug, Clone)]
pub struct Context {
    /// Broker address.
    pub server: String,
    /// Output format.
    pub output: OutputFormat,
    /// How connections are made (TLS).
    pub client: ClientConfig,
}

/// How long the first answer may take before ferryctl says the server is silent.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Context {
    /// Connects to the broker, with the address in the error when that fails, and
    /// checks within seconds that a gRPC server answers there: a stopped broker or
    /// a port that speaks something else is named as such, not left to a request's
    /// 30 s timeout or an HTTP status.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let client = Client::connect_with(&self.server, self.client.clone()).await?;
        match tokio::time::timeout(PROBE_TIMEOUT, client.who_am_i()).await {
            Err(_) => anyhow::bail!(
                "no answer from {} within {} s: is the broker running (not stopped or \
                 overloaded), and is this its gRPC port (--listen, 7070 by default)?",
                self.server,
                PROBE_TIMEOUT.as_secs()
            ),
            Ok(Err(ClientError::Broker {
                code: ErrorCode::Unspecified,
                message,
                ..
            })) if message.contains("HTTP status code") => anyhow::bail!(
                "{} answered HTTP, not Ferry's gRPC ({message}): is it the metrics port? \
                 The gRPC port is the broker's --listen (7070 by default).",
                self.server
            ),
            // Any other answer (an access error included) is a server speaking gRPC:
            // the command itself says what is wrong, if anything.
            Ok(_) => Ok(client),
        }
    }
}

impl Cli {
    /// The connection flags given on this command line (or their variables).
    fn given(&self) -> config::Connection {
        config::Connection {
            server: self.server.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            tls_server_name: self.tls_server_name.clone(),
            token_file: self.token_file.clone(),
        }
    }
}

/// The bearer token: the token file's contents, else FERRY_TOKEN, else none.
fn token(connection: &config::Connection) -> anyhow::Result<Option<BearerToken>> {
    let token = match &connection.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading --token-file {}", path.display()))?,
        None => match std::env::var("FERRY_TOKEN") {
            Ok(token) => token,
            Err(_) => return Ok(None),
        },
    };
    Ok(Some(BearerToken::new(&token)?))
}

/// TLS settings, the files read now; `None` when no TLS setting is given.
fn tls(connection: &config::Connection) -> anyhow::Result<Option<TlsOptions>> {
    if connection.tls_ca_file.is_none()
        && connection.tls_cert_file.is_none()
        && connection.tls_server_name.is_none()
    {
        return Ok(None);
    }
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))
    };
    let ca_pem = connection
        .tls_ca_file
        .as_ref()
        .map(|path| read("--tls-ca-file", path))
        .transpose()?;
    let identity = match (&connection.tls_cert_file, &connection.tls_key_file) {
        (Some(cert), Some(key)) => {
            Some((read("--tls-cert-file", cert)?, read("--tls-key-file", key)?))
        }
        (None, None) => None,
        _ => anyhow::bail!("a client certificate needs both --tls-cert-file and --tls-key-file"),
    };
    Ok(Some(TlsOptions {
        ca_pem,
        identity,
        server_name: connection.tls_server_name.clone(),
    }))
}

/// The connection: flags over the selected context over the defaults.
fn resolve(cli: &Cli) -> anyhow::Result<(String, Option<TlsOptions>, Option<BearerToken>)> {
    let context = config::selected(&config::path(), cli.context.as_deref())?;
    let connection = cli.given().or(context);
    let server = connection
        .server
        .clone()
        .unwrap_or_else(|| "127.0.0.1:7070".to_owned());
    Ok((server, tls(&connection)?, token(&connection)?))
}

/// Prints the completion script for `shell` (needs no broker and no credentials).
fn completion(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory as _;
    use clap_complete::Generator as _;
    use std::io::Write as _;
    let mut command = Cli::command();
    command.set_bin_name("ferryctl");
    command.build();
    let mut script = Vec::new();
    let written = shell
        .try_generate(&command, &mut script)
        .and_then(|()| std::io::stdout().write_all(&script));
    match written {
        // A reader that stopped early (`| head`) is not an error.
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: writing the completion script: {err}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// The command line's subcommands, e.g. `ferryctl topic produce`: the trace's name.
fn command_name() -> String {
    let mut name = String::from("ferryctl");
    if let Ok(matches) = <Cli as clap::CommandFactory>::command().try_get_matches() {
        let mut next = matches.subcommand();
        while let Some((subcommand, matches)) = next {
            name.push(' ');
            name.push_str(subcommand);
            next = matches.subcommand();
        }
    }
    name
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completion { shell } = cli.command {
        return completion(shell);
    }
    // Contexts are edited without a broker.
    let given = cli.given();
    if let Command::Config(command) = cli.command {
        return match config::run(command, given, cli.output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
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
    let (server, tls, token) = match resolve(&cli) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let tls_in_use = tls.is_some() || server.trim().starts_with("https://");
    let context = Context {
        server,
        output: cli.output,
        client: ClientConfig {
            tls,
            token,
            ..ClientConfig::default()
        },
    };
    let telemetry = {
        let _in_runtime = runtime.enter();
        match ferry_telemetry::init_traces("ferryctl") {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        }
    };
    // The whole command is one trace: its requests, the messages it produces
    // (they carry the context) and what it prints are spans of it.
    let span = tracing::info_span!("ferryctl", otel.name = command_name());
    let result = runtime.block_on(
        async {
            match cli.command {
                Command::Topic(command) => topic::run(&context, command).await,
                Command::Group(command) => group::run(&context, command).await,
                Command::Queue(command) => queue::run(&context, command).await,
                Command::Bench(command) => bench::run(&context, command).await,
                Command::Cluster(command) => cluster::run(&context, command).await,
                Command::Acl(command) => acl::run(&context, command).await,
                Command::Quota(command) => quota::run(&context, command).await,
                Command::Whoami => acl::who_am_i(&context).await,
                Command::Completion { .. } | Command::Config(_) => Ok(()),
            }
        }
        .instrument(span),
    );
    // Sent before the runtime stops: the exporter's channel runs on it.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // A TLS server drops a plaintext client mid-handshake, which surfaces as a
            // transport error, a protocol error or a cancellation, never as an answer
            // of Ferry's (those carry an error code): name the likely cause.
            if !tls_in_use && not_a_ferry_answer(&err) {
                eprintln!(
                    "hint: if the server serves TLS, use --server https://… (and --tls-ca-file \
                     for a private CA)"
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// Whether `err` is a failure to talk to Ferry at all: a transport error, or a gRPC
/// status without Ferry's error code (a protocol error, a cancellation), rather than
/// an answer of a Ferry broker.
/// (A refused connection is not: nothing listens there at all.)
fn not_a_ferry_answer(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| match cause.downcast_ref::<ClientError>() {
            Some(ClientError::Transport { reason, .. }) => !reason.contains("refused"),
            Some(ClientError::Broker { code, .. }) => *code == ErrorCode::Unspecified,
            _ => false,
        })
}
