//! `ferryctl queue …`: create, list, describe, delete and purge queues; send from
//! stdin, receive to stdout, settle receipts (ack, nack, change visibility) and
//! redrive dead letters.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use ferry_client::{
    Client, ClientError, Durability, ErrorCode, OutgoingMessage, QueueDescription, QueueMessage,
    QueueSettings, ReceiveOptions,
};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::output::{self, OutputFormat};
use crate::{Context, parse};

/// Most messages `queue send` puts in one request.
const SEND_BATCH: usize = 500;

/// Most messages `queue receive` asks for in one request (the broker's cap is higher;
/// smaller requests keep received-but-unprinted messages few).
const RECEIVE_BATCH: u64 = 1_000;

/// Queue subcommands.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Create a queue.
    Create {
        /// Queue name.
        name: String,
        #[command(flatten)]
        settings: CreateArgs,
    },
    /// List queues with their message counts.
    List,
    /// Show a queue's settings, message counts and counters.
    Describe {
        /// Queue name.
        name: String,
    },
    /// Delete a queue and its messages.
    Delete {
        /// Queue name.
        name: String,
    },
    /// Remove every message of a queue (visible, delayed and in flight).
    Purge {
        /// Queue name.
        name: String,
    },
    /// Send one message per line of stdin, or the --body values.
    Send {
        /// Queue name.
        name: String,
        /// A message body to send instead of reading stdin; repeat for more (where
        /// no stdin is at hand, e.g. `kubectl run`).
        #[arg(long = "body")]
        bodies: Vec<String>,
        /// Message group of every message (required by FIFO queues).
        #[arg(long)]
        group: Option<String>,
        /// Deduplication id (only with a single line of input).
        #[arg(long)]
        dedup_id: Option<String>,
        /// Delay before the messages become visible (a duration: 30s, 0.5s, 250ms).
        #[arg(long, value_parser = parse::duration_ms)]
        delay: Option<u64>,
        /// Attribute `name=value` on every message; repeat for more.
        #[arg(long = "attribute", value_parser = parse_attribute)]
        attributes: Vec<(String, String)>,
    },
    /// Receive messages and print them (bodies as UTF-8; invalid bytes become U+FFFD).
    Receive {
        /// Queue name.
        name: String,
        /// Most messages to receive.
        #[arg(long, default_value_t = 1)]
        max: u64,
        /// Wait up to this long for a first message, e.g. 20s (default: the queue's
        /// receive wait).
        #[arg(long, value_parser = parse::duration_ms)]
        wait: Option<u64>,
        /// Keep the messages invisible this long, e.g. 5m (default: the queue's).
        #[arg(long, value_parser = parse::duration_ms)]
        visibility_timeout: Option<u64>,
        /// Ack the messages after printing them.
        #[arg(long, conflicts_with = "at_most_once")]
        ack: bool,
        /// Delete messages as they are delivered (a lost response loses them).
        #[arg(long)]
        at_most_once: bool,
    },
    /// Delete received messages by receipt.
    Ack {
        /// Queue name.
        name: String,
        /// Receipt handles from `queue receive`.
        #[arg(required = true)]
        receipts: Vec<String>,
    },
    /// Make received messages visible again, now or after --delay.
    Nack {
        /// Queue name.
        name: String,
        /// Receipt handles from `queue receive`.
        #[arg(required = true)]
        receipts: Vec<String>,
        /// How long until they are visible again, e.g. 10s (default 0).
        #[arg(long, value_parser = parse::duration_ms)]
        delay: Option<u64>,
    },
    /// Set a new visibility timeout, counted from now, on received messages.
    ChangeVisibility {
        /// Queue name.
        name: String,
        /// Receipt handles from `queue receive`.
        #[arg(required = true)]
        receipts: Vec<String>,
        /// New visibility timeout, e.g. 30s (0 makes them visible now).
        #[arg(long, value_parser = parse::duration_ms)]
        timeout: u64,
    },
    /// Move messages from a dead-letter queue back to their queues (or to --to).
    Redrive {
        /// The dead-letter queue.
        dead_letter_queue: String,
        /// Destination for every message (default: the queue each came from).
        #[arg(long)]
        to: Option<String>,
        /// Most messages to move (default: all that are visible).
        #[arg(long)]
        max: Option<u64>,
    },
}

/// Settings of `queue create`; unset ones take the broker's defaults.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// How long a received message stays invisible unless acked: 30s, 0.5s, 5m.
    #[arg(long, value_parser = parse::duration_ms)]
    visibility_timeout: Option<u64>,
    /// How long before a sent message becomes visible, e.g. 10s.
    #[arg(long, value_parser = parse::duration_ms)]
    delay: Option<u64>,
    /// How long a message is kept, e.g. 4d or 12h (0 keeps forever).
    #[arg(long, value_parser = parse::duration_ms)]
    retention: Option<u64>,
    /// How long a receive without its own wait long-polls, e.g. 20s.
    #[arg(long, value_parser = parse::duration_ms)]
    receive_wait: Option<u64>,
    /// Receives without an ack before a message moves to --dead-letter.
    #[arg(long, requires = "dead_letter")]
    max_receive_count: Option<u32>,
    /// Dead-letter queue (an existing queue of the same kind).
    #[arg(long, requires = "max_receive_count")]
    dead_letter: Option<String>,
    /// FIFO queue: messages of one group are delivered in order, one at a time.
    #[arg(long)]
    fifo: bool,
    /// How long a repeated dedup id is not stored again, e.g. 5m.
    #[arg(long, value_parser = parse::duration_ms)]
    dedup_window: Option<u64>,
    /// Use the SHA-256 of the body as dedup id for messages sent without one.
    #[arg(long)]
    content_based_dedup: bool,
    /// When a stored message counts as durable.
    #[arg(long, value_parser = parse_durability)]
    durability: Option<Durability>,
    /// Flush period for `--durability interval`, in milliseconds.
    #[arg(long)]
    flush_interval_ms: Option<u32>,
    /// Largest message (body plus attributes): 256KiB, bytes.
    #[arg(long, value_parser = parse::size_bytes)]
    max_message_bytes: Option<u64>,
    /// Most messages the queue holds.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Replicas of the queue (clusters only).
    #[arg(long)]
    replication_factor: Option<u32>,
}

fn parse_durability(text: &str) -> Result<Durability, String> {
    text.parse().map_err(|err: ClientError| err.to_string())
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("attribute '{text}' is not name=value")),
    }
}

impl CreateArgs {
    fn settings(self) -> anyhow::Result<QueueSettings> {
        let receive_wait_ms = self
            .receive_wait
            .map(u32::try_from)
            .transpose()
            .context("--receive-wait is too long")?;
        let max_message_bytes = self
            .max_message_bytes
            .map(u32::try_from)
            .transpose()
            .context("--max-message-bytes must be below 4 GiB")?;
        Ok(QueueSettings {
            fifo: self.fifo,
            durability: self.durability,
            flush_interval_ms: self.flush_interval_ms,
            visibility_timeout_ms: self.visibility_timeout,
            delay_ms: self.delay,
            receive_wait_ms,
            retention_ms: self.retention,
            max_message_bytes,
            max_receive_count: self.max_receive_count,
            dead_letter_queue: self.dead_letter,
            dedup_window_ms: self.dedup_window,
            content_based_dedup: self.content_based_dedup,
            max_messages: self.max_messages,
            replication_factor: self.replication_factor,
            ..QueueSettings::default()
        })
    }
}

/// Runs a queue subcommand.
pub async fn run(context: &Context, command: QueueCommand) -> anyhow::Result<()> {
    let client = context.connect().await?;
    let format = context.output;
    match command {
        QueueCommand::Create { name, settings } => {
            let queue = client
                .create_queue(&name, &settings.settings()?)
                .await
                .map_err(|err| queue_error(&name, err))?;
            // So that a send right after this command finds the leader.
            crate::placement::wait_until_led(&client, crate::placement::Kind::Queue, &name, 1)
                .await;
            match format {
                OutputFormat::Text => println!("created queue '{}'", queue.name),
                OutputFormat::Json => output::print_json(&queue_json(&queue))?,
            }
        }
        QueueCommand::List => list(&client, format).await?,
        QueueCommand::Describe { name } => {
            let queue = client
                .describe_queue(&name)
                .await
                .map_err(|err| queue_error(&name, err))?;
            match format {
                OutputFormat::Text => print!("{}", describe_text(&queue)),
                OutputFormat::Json => output::print_json(&queue_json(&queue))?,
            }
        }
        QueueCommand::Delete { name } => {
            client
                .delete_queue(&name)
                .await
                .map_err(|err| queue_error(&name, err))?;
            match format {
                OutputFormat::Text => println!("deleted queue '{name}'"),
                OutputFormat::Json => output::print_json(&json!({ "deleted": name }))?,
            }
        }
        QueueCommand::Purge { name } => {
            let purged = client
                .purge_queue(&name)
                .await
                .map_err(|err| queue_error(&name, err))?;
            match format {
                OutputFormat::Text => println!("purged {purged} messages from '{name}'"),
                OutputFormat::Json => output::print_json(&json!({ "purged": purged }))?,
            }
        }
        QueueCommand::Send {
            name,
            bodies,
            group,
            dedup_id,
            delay,
            attributes,
        } => {
            let template = OutgoingMessage {
                attributes: attributes.into_iter().collect(),
                delay: delay.map(Duration::from_millis),
                group_id: group,
                dedup_id,
                ..OutgoingMessage::default()
            };
            send(&client, format, &name, &template, &bodies).await?;
        }
        QueueCommand::Receive {
            name,
            max,
            wait,
            visibility_timeout,
            ack,
            at_most_once,
        } => {
            let mut options = ReceiveOptions::new(0);
            options.wait = wait.map(Duration::from_millis);
            options.visibility_timeout = visibility_timeout.map(Duration::from_millis);
            options.at_most_once = at_most_once;
            receive(&client, format, &name, max, options, ack).await?;
        }
        QueueCommand::Ack { name, receipts } => {
            let results = client
                .ack(&name, &receipts)
                .await
                .map_err(|err| queue_error(&name, err))?;
            settled(format, "acked", &receipts, results)?;
        }
        QueueCommand::Nack {
            name,
            receipts,
            delay,
        } => {
            let delay = Duration::from_millis(delay.unwrap_or(0));
            let results = client
                .nack(&name, &receipts, delay)
                .await
                .map_err(|err| queue_error(&name, err))?;
            settled(format, "nacked", &receipts, results)?;
        }
        QueueCommand::ChangeVisibility {
            name,
            receipts,
            timeout,
        } => {
            let timeout = Duration::from_millis(timeout);
            let results = client
                .change_visibility(&name, &receipts, timeout)
                .await
                .map_err(|err| queue_error(&name, err))?;
            settled(format, "changed", &receipts, results)?;
        }
        QueueCommand::Redrive {
            dead_letter_queue,
            to,
            max,
        } => {
            let moved = client
                .redrive(&dead_letter_queue, to.as_deref(), max)
                .await
                .map_err(|err| queue_error(&dead_letter_queue, err))?;
            match format {
                OutputFormat::Text => {
                    println!("moved {moved} messages from '{dead_letter_queue}'");
                }
                OutputFormat::Json => output::print_json(&json!({ "moved": moved }))?,
            }
        }
    }
    Ok(())
}

/// The broker's queue errors name the queue already; these stand in when it sent
/// only a code.
pub fn queue_error(name: &str, err: ClientError) -> anyhow::Error {
    let bare = err
        .code()
        .is_some_and(|code| err.to_string() == code.as_str_name());
    match err.code() {
        Some(ErrorCode::QueueNotFound) if bare => anyhow::anyhow!("queue '{name}' not found"),
        Some(ErrorCode::QueueAlreadyExists) if bare => {
            anyhow::anyhow!("queue '{name}' already exists")
        }
        _ => err.into(),
    }
}

async fn list(client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    let queues = client.list_queues().await?;
    match format {
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = queues
                .iter()
                .map(|q| {
                    vec![
                        q.name.clone(),
                        kind(q).to_owned(),
                        optional(q.settings.durability),
                        q.stats.visible.to_string(),
                        q.stats.in_flight.to_string(),
                        q.stats.delayed.to_string(),
                        output::duration_ms(q.stats.oldest_age_ms),
                        q.stats.consumers.to_string(),
                    ]
                })
                .collect();
            let headers = [
                "NAME",
                "KIND",
                "DURABILITY",
                "VISIBLE",
                "IN-FLIGHT",
                "DELAYED",
                "OLDEST",
                "CONSUMERS",
            ];
            print!("{}", output::table(&headers, &rows));
        }
        OutputFormat::Json => {
            let queues: Vec<_> = queues.iter().map(queue_json).collect();
            output::print_json(&json!({ "queues": queues }))?;
        }
    }
    Ok(())
}

fn kind(queue: &QueueDescription) -> &'static str {
    if queue.settings.fifo {
        "fifo"
    } else {
        "standard"
    }
}

fn optional(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn duration_text(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), output::duration_ms)
}

fn describe_text(queue: &QueueDescription) -> String {
    let s = &queue.settings;
    let t = &queue.stats;
    let mut lines = vec![
        ("queue", queue.name.clone()),
        ("kind", kind(queue).to_owned()),
        ("durability", optional(s.durability)),
        ("visibility timeout", duration_text(s.visibility_timeout_ms)),
        ("delay", duration_text(s.delay_ms)),
        (
            "receive wait",
            duration_text(s.receive_wait_ms.map(u64::from)),
        ),
        (
            "retention",
            match s.retention_ms {
                Some(0) => "forever".to_owned(),
                other => duration_text(other),
            },
        ),
        (
            "max message",
            optional(s.max_message_bytes.map(|b| output::bytes(u64::from(b)))),
        ),
        ("max messages", optional(s.max_messages)),
    ];
    // The broker fills the flush interval in for every queue; it only matters here.
    if let (Some(ms), Some(Durability::Interval)) = (s.flush_interval_ms, s.durability) {
        lines.push(("flush interval", output::duration_ms(u64::from(ms))));
    }
    let dead_letter = match (&s.dead_letter_queue, s.max_receive_count) {
        (Some(dlq), Some(count)) => format!("{dlq} after {count} receives"),
        (Some(dlq), None) => dlq.clone(),
        (None, _) => "-".to_owned(),
    };
    lines.push(("dead-letter queue", dead_letter));
    let mut dedup = duration_text(s.dedup_window_ms);
    if s.content_based_dedup {
        dedup.push_str(" (content-based)");
    }
    lines.push(("dedup window", dedup));
    if !queue.dead_letter_sources.is_empty() {
        lines.push(("dead letters of", queue.dead_letter_sources.join(", ")));
    }
    lines.push((
        "messages",
        format!(
            "{} visible, {} in flight, {} delayed (oldest {})",
            t.visible,
            t.in_flight,
            t.delayed,
            output::duration_ms(t.oldest_age_ms)
        ),
    ));
    lines.push(("consumers", t.consumers.to_string()));
    lines.push((
        "counters",
        format!(
            "sent {}, received {}, acked {}, redelivered {}, dead-lettered {}, expired {}, \
             deduplicated {}",
            t.sent, t.received, t.acked, t.redelivered, t.dead_lettered, t.expired, t.deduplicated
        ),
    ));
    lines
        .iter()
        .map(|(label, value)| format!("{:<20}{value}\n", format!("{label}:")))
        .collect()
}

fn queue_json(queue: &QueueDescription) -> serde_json::Value {
    let s = &queue.settings;
    let t = &queue.stats;
    json!({
        "name": queue.name,
        "created_at_ms": queue.created_at_ms,
        "dead_letter_sources": queue.dead_letter_sources,
        "config": {
            "fifo": s.fifo,
            "durability": s.durability.map(|d| d.to_string()),
            "flush_interval_ms": s.flush_interval_ms,
            "visibility_timeout_ms": s.visibility_timeout_ms,
            "delay_ms": s.delay_ms,
            "receive_wait_ms": s.receive_wait_ms,
            "retention_ms": s.retention_ms,
            "max_message_bytes": s.max_message_bytes,
            "max_receive_count": s.max_receive_count,
            "dead_letter_queue": s.dead_letter_queue,
            "dedup_window_ms": s.dedup_window_ms,
            "content_based_dedup": s.content_based_dedup,
            "max_messages": s.max_messages,
            "replication_factor": s.replication_factor,
            "replication": s.replication.map(|r| r.to_string()),
        },
        "stats": {
            "visible": t.visible,
            "in_flight": t.in_flight,
            "delayed": t.delayed,
            "oldest_age_ms": t.oldest_age_ms,
            "consumers": t.consumers,
            "sent": t.sent,
            "received": t.received,
            "acked": t.acked,
            "redelivered": t.redelivered,
            "dead_lettered": t.dead_lettered,
            "expired": t.expired,
            "deduplicated": t.deduplicated,
        },
    })
}

/// What `queue send` stored.
#[derive(Debug, Default)]
struct SendTally {
    message_ids: Vec<String>,
    duplicates: u64,
}

async fn send(
    client: &Client,
    format: OutputFormat,
    name: &str,
    template: &OutgoingMessage,
    bodies: &[String],
) -> anyhow::Result<()> {
    let mut batch: Vec<OutgoingMessage> = Vec::new();
    let mut tally = SendTally::default();
    // One dedup id on many messages would store only the first: refuse before
    // sending anything.
    if template.dedup_id.is_some() && bodies.len() > 1 {
        bail!("--dedup-id applies to one message, but --body was given more than once");
    }
    for body in bodies {
        let mut message = template.clone();
        message.body = body.clone().into_bytes().into();
        batch.push(message);
        if batch.len() >= SEND_BATCH {
            send_batch(client, name, &mut batch, &mut tally).await?;
        }
    }
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut lines = 0u64;
    let mut line = Vec::new();
    while bodies.is_empty() {
        line.clear();
        let read = stdin
            .read_until(b'\n', &mut line)
            .await
            .context("reading stdin")?;
        if read == 0 {
            break;
        }
        lines += 1;
        if template.dedup_id.is_some() && lines > 1 {
            bail!("--dedup-id applies to one message, but stdin has more than one line");
        }
        let mut message = template.clone();
        message.body = strip_newline(&line).to_vec().into();
        batch.push(message);
        if batch.len() >= SEND_BATCH {
            send_batch(client, name, &mut batch, &mut tally).await?;
        }
    }
    send_batch(client, name, &mut batch, &mut tally).await?;
    let sent = tally.message_ids.len();
    match format {
        OutputFormat::Text if tally.duplicates > 0 => println!(
            "sent {sent} messages ({} duplicates not stored again)",
            tally.duplicates
        ),
        OutputFormat::Text => println!("sent {sent} messages"),
        OutputFormat::Json => output::print_json(&json!({
            "sent": sent,
            "duplicates": tally.duplicates,
            "message_ids": tally.message_ids,
        }))?,
    }
    Ok(())
}

async fn send_batch(
    client: &Client,
    name: &str,
    batch: &mut Vec<OutgoingMessage>,
    tally: &mut SendTally,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let already = tally.message_ids.len();
    let receipts = match client.send(name, std::mem::take(batch)).await {
        Ok(receipts) => receipts,
        // The request stored nothing, but earlier ones did: say how many.
        Err(err) if already > 0 => {
            return Err(queue_error(name, err)
                .context(format!("sending failed after {already} messages were sent")));
        }
        Err(err) => return Err(queue_error(name, err)),
    };
    for receipt in receipts {
        tally.duplicates += u64::from(receipt.duplicate);
        tally.message_ids.push(receipt.message_id);
    }
    Ok(())
}

fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Receives up to `max` messages: the first request waits, the following ones take
/// only what is there, until `max` or an empty answer.
async fn receive(
    client: &Client,
    format: OutputFormat,
    name: &str,
    max: u64,
    mut options: ReceiveOptions,
    ack: bool,
) -> anyhow::Result<()> {
    let mut received = 0u64;
    let mut ack_failures = 0usize;
    while received < max {
        options.max_messages = (max - received).min(RECEIVE_BATCH) as u32;
        let messages = client
            .receive(name, &options)
            .await
            .map_err(|err| queue_error(name, err))?;
        if messages.is_empty() {
            break;
        }
        received += messages.len() as u64;
        print_messages(format, name, &messages)?;
        if ack {
            let receipts: Vec<&String> = messages.iter().map(|m| &m.receipt).collect();
            let results = client
                .ack(name, receipts.iter().copied())
                .await
                .map_err(|err| queue_error(name, err))?;
            ack_failures += report_failures(&receipts, &results);
        }
        options.wait = Some(Duration::ZERO);
    }
    if format == OutputFormat::Text {
        eprintln!("received {received} messages");
    }
    if ack_failures > 0 {
        bail!("{ack_failures} of {received} acks failed");
    }
    Ok(())
}

fn message_json(message: &QueueMessage) -> serde_json::Value {
    let mut object = json!({
        "id": message.id,
        "receipt": message.receipt,
        "body": output::lossy(&message.body),
        "receive_count": message.receive_count,
        "attributes": message.attributes,
    });
    let mut optional = BTreeMap::new();
    if let Some(group) = &message.group_id {
        optional.insert("group_id", json!(group));
    }
    if let Some(dedup) = &message.dedup_id {
        optional.insert("dedup_id", json!(dedup));
    }
    if message.sent_at_ms != 0 {
        optional.insert("sent_at_ms", json!(message.sent_at_ms));
    }
    if let Some(origin) = &message.dead_letter {
        optional.insert(
            "dead_letter",
            json!({
                "source_queue": origin.source_queue,
                "source_message_id": origin.source_message_id,
                "reason": origin.reason,
                "receive_count": origin.receive_count,
                "dead_lettered_at_ms": origin.dead_lettered_at_ms,
            }),
        );
    }
    if let Some(fields) = object.as_object_mut() {
        fields.extend(optional.into_iter().map(|(k, v)| (k.to_owned(), v)));
    }
    object
}

fn print_messages(
    format: OutputFormat,
    queue: &str,
    messages: &[QueueMessage],
) -> anyhow::Result<()> {
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let tracing = ferry_telemetry::traces::exporting();
    for message in messages {
        // Printing is this receiver's processing: its span links to the sender's.
        let _processing = tracing.then(|| message.process_span(queue).entered());
        match format {
            OutputFormat::Text => stdout.write_all(&message.body)?,
            OutputFormat::Json => serde_json::to_writer(&mut stdout, &message_json(message))?,
        }
        stdout.write_all(b"\n")?;
    }
    // Flushed before any ack, so an acked message has always been printed.
    stdout.flush()?;
    Ok(())
}

/// Prints each failed receipt to stderr; returns how many failed.
fn report_failures<R: AsRef<str>>(receipts: &[R], results: &[Result<(), ClientError>]) -> usize {
    let mut failed = 0;
    for (receipt, result) in receipts.iter().zip(results) {
        if let Err(err) = result {
            failed += 1;
            eprintln!("receipt {}: {err}", receipt.as_ref());
        }
    }
    failed
}

/// Reports the outcome of ack, nack or change-visibility; an error when any failed.
fn settled(
    format: OutputFormat,
    verb: &str,
    receipts: &[String],
    results: Vec<Result<(), ClientError>>,
) -> anyhow::Result<()> {
    let failed = report_failures(receipts, &results);
    let ok = results.len() - failed;
    match format {
        OutputFormat::Text => println!("{verb} {ok} of {} receipts", receipts.len()),
        OutputFormat::Json => output::print_json(&json!({ "ok": ok, "failed": failed }))?,
    }
    if failed > 0 {
        bail!("{failed} of {} receipts failed", receipts.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_client::{DeadLetterOrigin, QueueStats};

    fn message() -> QueueMessage {
        QueueMessage {
            id: "m1".into(),
            receipt: "r1".into(),
            body: bytes::Bytes::from_static(b"hi\xff"),
            attributes: [("k".to_owned(), "v".to_owned())].into(),
            receive_count: 2,
            sent_at_ms: 1_700_000_000_000,
            group_id: None,
            dedup_id: None,
            dead_letter: None,
        }
    }

    #[test]
    fn message_json_has_optional_fields_only_when_set() {
        let plain = message_json(&message());
        assert_eq!(plain["id"], "m1");
        assert_eq!(plain["receipt"], "r1");
        assert_eq!(plain["body"], "hi\u{fffd}");
        assert_eq!(plain["receive_count"], 2);
        assert_eq!(plain["attributes"]["k"], "v");
        assert_eq!(plain["sent_at_ms"], 1_700_000_000_000i64);
        assert!(plain.get("group_id").is_none());
        assert!(plain.get("dead_letter").is_none());
        let mut dead = message();
        dead.group_id = Some("g".into());
        dead.dead_letter = Some(DeadLetterOrigin {
            source_queue: "q".into(),
            source_message_id: "m0".into(),
            reason: "too many receives".into(),
            receive_count: 5,
            dead_lettered_at_ms: 1,
        });
        let value = message_json(&dead);
        assert_eq!(value["group_id"], "g");
        assert_eq!(value["dead_letter"]["source_queue"], "q");
        assert_eq!(value["dead_letter"]["receive_count"], 5);
    }

    #[test]
    fn bare_codes_get_the_queue_name() {
        let err = |message: &str| ClientError::Broker {
            status: Some(tonic::Code::NotFound),
            code: ErrorCode::QueueNotFound,
            message: message.into(),
            retry_after_ms: 0,
            leader_address: None,
            leader_partition: None,
        };
        let bare = queue_error("jobs", err("ERROR_CODE_QUEUE_NOT_FOUND"));
        assert_eq!(bare.to_string(), "queue 'jobs' not found");
        let named = queue_error("jobs", err("queue \"dlq\" not found"));
        assert_eq!(named.to_string(), "queue \"dlq\" not found");
    }

    #[test]
    fn attributes_need_a_name_and_an_equals_sign() {
        assert_eq!(parse_attribute("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_attribute("a="), Ok(("a".into(), String::new())));
        assert!(parse_attribute("=b").is_err());
        assert!(parse_attribute("ab").is_err());
    }

    #[test]
    fn describe_shows_settings_and_state() {
        let queue = QueueDescription {
            name: "jobs".into(),
            settings: QueueSettings::new()
                .with_durability(Durability::Fsync)
                .with_visibility_timeout(Duration::from_millis(500))
                .with_retention(Duration::ZERO)
                .with_dead_letter("dlq", 5),
            stats: QueueStats {
                visible: 3,
                in_flight: 1,
                oldest_age_ms: 2_000,
                ..QueueStats::default()
            },
            created_at_ms: 0,
            dead_letter_sources: Vec::new(),
        };
        let text = describe_text(&queue);
        assert!(text.contains("kind:               standard\n"), "{text}");
        assert!(text.contains("visibility timeout: 500ms\n"), "{text}");
        assert!(text.contains("retention:          forever\n"), "{text}");
        assert!(text.contains("dead-letter queue:  dlq after 5 receives\n"));
        assert!(text.contains("3 visible, 1 in flight, 0 delayed (oldest 2s)"));
        let value = queue_json(&queue);
        assert_eq!(value["config"]["visibility_timeout_ms"], 500);
        assert_eq!(value["stats"]["visible"], 3);
    }

    #[test]
    fn create_flags_map_to_settings() -> anyhow::Result<()> {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            command: QueueCommand,
        }
        let cli = Cli::try_parse_from([
            "q",
            "create",
            "jobs",
            "--visibility-timeout",
            "0.5s",
            "--receive-wait",
            "10s",
            "--fifo",
            "--max-receive-count",
            "3",
            "--dead-letter",
            "dlq",
            "--max-message-bytes",
            "64KiB",
        ])?;
        let QueueCommand::Create { settings, .. } = cli.command else {
            bail!("parsed as another command");
        };
        let settings = settings.settings()?;
        assert_eq!(settings.visibility_timeout_ms, Some(500));
        assert_eq!(settings.receive_wait_ms, Some(10_000));
        assert!(settings.fifo);
        assert_eq!(settings.dead_letter_queue.as_deref(), Some("dlq"));
        assert_eq!(settings.max_receive_count, Some(3));
        assert_eq!(settings.max_message_bytes, Some(64 << 10));
        assert!(Cli::try_parse_from(["q", "create", "x", "--dead-letter", "d"]).is_err());
        assert!(Cli::try_parse_from(["q", "receive", "x", "--ack", "--at-most-once"]).is_err());
        Ok(())
    }
}
