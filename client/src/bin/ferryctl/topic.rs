//! `ferryctl topic …`: create, list, describe, delete, produce from stdin, consume to
//! stdout.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use ferry_client::{
    AutoOffsetReset, Client, ClientError, ConsumedRecord, Consumer, ConsumerConfig, DeliveryFuture,
    Durability, ErrorCode, Partitioner, Producer, ProducerConfig, RecordRef, TopicDescription,
    TopicPartition, TopicSettings,
};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::output::{self, OutputFormat};
use crate::{Context, parse};

/// Topic subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long)]
        partitions: u32,
        /// Delete data older than this: 7d, 24h, 30m, 15s (0 keeps forever).
        #[arg(long, value_parser = parse::duration_ms)]
        retention: Option<u64>,
        /// Per partition, delete the oldest data beyond this size: 1GiB, 500MB, bytes.
        #[arg(long, value_parser = parse::size_bytes)]
        retention_bytes: Option<u64>,
        /// When a write counts as durable.
        #[arg(long, value_parser = parse_durability)]
        durability: Option<Durability>,
        /// Flush period for `--durability interval`.
        #[arg(long)]
        flush_interval_ms: Option<u32>,
        /// Roll log segments at this size: 1GiB, 64MiB, bytes.
        #[arg(long, value_parser = parse::size_bytes)]
        segment_bytes: Option<u64>,
        /// Largest accepted record: 1MiB, bytes.
        #[arg(long, value_parser = parse::size_bytes)]
        max_message_bytes: Option<u64>,
        /// Replicas per partition (clusters only).
        #[arg(long)]
        replication_factor: Option<u32>,
    },
    /// List topics.
    List,
    /// Show a topic's settings and its partitions' offsets and sizes.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Produce one message per line of stdin; prints how many were acknowledged.
    Produce {
        /// Topic name.
        name: String,
        /// Key for every message (messages with one key share a partition).
        #[arg(long)]
        key: Option<String>,
        /// Where keyless messages go: round-robin (each to the next partition) or
        /// sticky (fill one partition's batch, then the next: larger batches).
        #[arg(long, value_parser = parse_partitioner, default_value = "round-robin")]
        partitioner: Partitioner,
    },
    /// Consume messages and print them: values as they are (or with --format); with
    /// --output json, text with invalid UTF-8 replaced and base64 for the exact bytes.
    Consume {
        /// Topic name.
        name: String,
        /// Consumer group: its committed offsets are used and updated. Without a
        /// group, every partition is read and nothing is committed.
        #[arg(long)]
        group: Option<String>,
        /// Start from the oldest message where the group has no committed offset
        /// (default: only new messages).
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many messages.
        #[arg(long)]
        max: Option<u64>,
        /// Read only this partition (repeatable; without --group).
        #[arg(long = "partition", conflicts_with = "group")]
        partitions: Vec<u32>,
        /// Start at this offset in each partition read (without --group).
        #[arg(long, conflicts_with_all = ["group", "from_beginning", "from_timestamp"])]
        offset: Option<u64>,
        /// Start at the first message at or after this time, ms since the epoch
        /// (without --group).
        #[arg(long, conflicts_with_all = ["group", "from_beginning"])]
        from_timestamp: Option<i64>,
        /// Print each message with this format (kcat's -f): %s value, %k key, %t
        /// topic, %p partition, %o offset, %T timestamp (ms), %h headers (k=v,…),
        /// %% a percent sign; \n and \t escapes. Default "%s\n". Text output only.
        #[arg(long)]
        format: Option<String>,
        /// Stop when no message arrived for this long. Ctrl-C stops too; with a
        /// group, what was printed is committed and the member leaves either way.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

fn parse_partitioner(text: &str) -> Result<Partitioner, String> {
    match text {
        "round-robin" => Ok(Partitioner::RoundRobin),
        "sticky" => Ok(Partitioner::Sticky),
        other => Err(format!(
            "unknown partitioner '{other}' (round-robin or sticky)"
        )),
    }
}

fn parse_durability(text: &str) -> Result<Durability, String> {
    text.parse().map_err(|err: ClientError| err.to_string())
}

/// Runs a topic subcommand.
pub async fn run(context: &Context, command: TopicCommand) -> anyhow::Result<()> {
    let client = context.connect().await?;
    let format = context.output;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            retention,
            retention_bytes,
            durability,
            flush_interval_ms,
            segment_bytes,
            max_message_bytes,
            replication_factor,
        } => {
            let max_message_bytes = max_message_bytes
                .map(u32::try_from)
                .transpose()
                .context("--max-message-bytes must be below 4 GiB")?;
            let settings = TopicSettings {
                partitions,
                replication_factor,
                durability,
                flush_interval_ms,
                retention_ms: retention,
                retention_bytes,
                segment_bytes,
                max_message_bytes,
                ..TopicSettings::default()
            };
            let topic = client
                .create_topic(&name, &settings)
                .await
                .map_err(|err| topic_error(&name, err))?;
            // So that a produce right after this command finds the leaders.
            crate::placement::wait_until_led(
                &client,
                crate::placement::Kind::Topic,
                &name,
                topic.partition_count() as usize,
            )
            .await;
            match format {
                OutputFormat::Text => println!(
                    "created topic '{}' with {} partitions",
                    topic.name,
                    topic.partition_count()
                ),
                OutputFormat::Json => output::print_json(&topic_json(&topic))?,
            }
        }
        TopicCommand::List => list(&client, format).await?,
        TopicCommand::Describe { name } => {
            let topic = client
                .describe_topic(&name)
                .await
                .map_err(|err| topic_error(&name, err))?;
            match format {
                OutputFormat::Text => print!("{}", describe_text(&topic)),
                OutputFormat::Json => output::print_json(&topic_json(&topic))?,
            }
        }
        TopicCommand::Delete { name } => {
            client
                .delete_topic(&name)
                .await
                .map_err(|err| topic_error(&name, err))?;
            match format {
                OutputFormat::Text => println!("deleted topic '{name}'"),
                OutputFormat::Json => output::print_json(&json!({ "deleted": name }))?,
            }
        }
        TopicCommand::Produce {
            name,
            key,
            partitioner,
        } => produce(&client, format, &name, key, partitioner).await?,
        TopicCommand::Consume {
            name,
            group,
            from_beginning,
            max,
            partitions,
            offset,
            from_timestamp,
            format: template,
            timeout_ms,
        } => {
            let options = ConsumeOptions {
                group,
                from_beginning,
                max,
                partitions,
                offset,
                from_timestamp,
                template: Template::parse(template.as_deref().unwrap_or("%s\\n"))?,
                idle: Duration::from_millis(timeout_ms),
            };
            consume(&client, format, &name, options).await?;
        }
    }
    Ok(())
}

/// Turns "topic not found" into a message naming the topic; other errors pass.
pub fn topic_error(name: &str, err: ClientError) -> anyhow::Error {
    if err.is(ErrorCode::TopicNotFound) {
        anyhow::anyhow!("topic '{name}' not found")
    } else if err.is(ErrorCode::TopicAlreadyExists) {
        anyhow::anyhow!("topic '{name}' already exists")
    } else {
        err.into()
    }
}

async fn list(client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    let topics = client.list_topics().await?;
    match format {
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = topics
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.partition_count().to_string(),
                        t.settings
                            .durability
                            .map_or_else(|| "-".to_owned(), |d| d.to_string()),
                        t.settings
                            .retention_ms
                            .map_or_else(|| "-".to_owned(), retention_text),
                        t.stored_records().to_string(),
                        output::bytes(t.partitions.iter().map(|p| p.size_bytes).sum()),
                    ]
                })
                .collect();
            let headers = [
                "NAME",
                "PARTITIONS",
                "DURABILITY",
                "RETENTION",
                "RECORDS",
                "SIZE",
            ];
            print!("{}", output::table(&headers, &rows));
        }
        OutputFormat::Json => {
            let topics: Vec<_> = topics.iter().map(topic_json).collect();
            output::print_json(&json!({ "topics": topics }))?;
        }
    }
    Ok(())
}

fn retention_text(ms: u64) -> String {
    if ms == 0 {
        "forever".to_owned()
    } else {
        output::duration_ms(ms)
    }
}

fn describe_text(topic: &TopicDescription) -> String {
    let s = &topic.settings;
    let mut text = format!("topic:        {}\n", topic.name);
    text.push_str(&format!("partitions:   {}\n", topic.partition_count()));
    let durability = s
        .durability
        .map_or_else(|| "-".to_owned(), |d| d.to_string());
    match s.flush_interval_ms {
        Some(ms) if s.durability == Some(Durability::Interval) => {
            text.push_str(&format!("durability:   {durability} (every {ms} ms)\n"));
        }
        _ => text.push_str(&format!("durability:   {durability}\n")),
    }
    let retention = s
        .retention_ms
        .map_or_else(|| "-".to_owned(), retention_text);
    let retention_bytes = match s.retention_bytes {
        None => "-".to_owned(),
        Some(0) => "no size limit".to_owned(),
        Some(bytes) => format!("{} per partition", output::bytes(bytes)),
    };
    text.push_str(&format!("retention:    {retention}, {retention_bytes}\n"));
    if let Some(bytes) = s.segment_bytes {
        text.push_str(&format!("segment size: {}\n", output::bytes(bytes)));
    }
    if let Some(bytes) = s.max_message_bytes {
        text.push_str(&format!(
            "max message:  {}\n",
            output::bytes(u64::from(bytes))
        ));
    }
    let rows: Vec<Vec<String>> = topic
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.log_start_offset.to_string(),
                p.high_watermark.to_string(),
                p.high_watermark
                    .saturating_sub(p.log_start_offset)
                    .to_string(),
                output::bytes(p.size_bytes),
                p.segments.to_string(),
                p.leader_host_id.clone(),
            ]
        })
        .collect();
    text.push('\n');
    let headers = [
        "PARTITION",
        "START",
        "END",
        "RECORDS",
        "SIZE",
        "SEGMENTS",
        "LEADER",
    ];
    text.push_str(&output::table(&headers, &rows));
    text
}

fn topic_json(topic: &TopicDescription) -> serde_json::Value {
    let s = &topic.settings;
    let partitions: Vec<_> = topic
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "start_offset": p.log_start_offset,
                "end_offset": p.high_watermark,
                "records": p.high_watermark.saturating_sub(p.log_start_offset),
                "size_bytes": p.size_bytes,
                "segments": p.segments,
                "leader": p.leader_host_id,
                "leader_epoch": p.leader_epoch,
                "replicas": p.replicas,
                "in_sync_replicas": p.in_sync_replicas,
            })
        })
        .collect();
    json!({
        "name": topic.name,
        "created_at_ms": topic.created_at_ms,
        "config": {
            "partitions": topic.partition_count(),
            "replication_factor": s.replication_factor,
            "durability": s.durability.map(|d| d.to_string()),
            "flush_interval_ms": s.flush_interval_ms,
            "retention_ms": s.retention_ms,
            "retention_bytes": s.retention_bytes,
            "segment_bytes": s.segment_bytes,
            "segment_ms": s.segment_ms,
            "max_message_bytes": s.max_message_bytes,
            "replication": s.replication.map(|r| r.to_string()),
        },
        "partitions": partitions,
    })
}

/// Delivery tallies of `topic produce`.
#[derive(Debug, Default)]
struct Tally {
    acknowledged: u64,
    failed: u64,
    first_error: Option<ClientError>,
}

impl Tally {
    fn add(&mut self, result: Result<ferry_client::RecordMetadata, ClientError>) {
        match result {
            Ok(_) => self.acknowledged += 1,
            Err(err) => {
                self.failed += 1;
                self.first_error.get_or_insert(err);
            }
        }
    }
}

async fn produce(
    client: &Client,
    format: OutputFormat,
    name: &str,
    key: Option<String>,
    partitioner: Partitioner,
) -> anyhow::Result<()> {
    let config = ProducerConfig {
        partitioner,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, name, config)
        .await
        .map_err(|err| topic_error(name, err))?;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut tally = Tally::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        if stdin
            .read_until(b'\n', &mut line)
            .await
            .context("reading stdin")?
            == 0
        {
            break;
        }
        let value = strip_newline(&line);
        let record = RecordRef {
            key: key.as_deref().map(str::as_bytes),
            value,
            ..RecordRef::default()
        };
        pending.push_back(producer.send_ref(record).await?);
        // Settle finished deliveries as we go so memory stays bounded on long inputs.
        while let Some(result) = pending.front().and_then(DeliveryFuture::try_result) {
            tally.add(result);
            pending.pop_front();
        }
    }
    producer.flush().await?;
    for delivery in pending {
        tally.add(delivery.await);
    }
    producer.close().await?;
    match format {
        OutputFormat::Text => println!("acknowledged {} messages", tally.acknowledged),
        OutputFormat::Json => output::print_json(&json!({
            "acknowledged": tally.acknowledged,
            "failed": tally.failed,
        }))?,
    }
    if let Some(err) = tally.first_error {
        bail!(
            "{} messages were not acknowledged; first error: {err}",
            tally.failed
        );
    }
    Ok(())
}

fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Options of `topic consume`.
#[derive(Debug)]
struct ConsumeOptions {
    group: Option<String>,
    from_beginning: bool,
    max: Option<u64>,
    partitions: Vec<u32>,
    offset: Option<u64>,
    from_timestamp: Option<i64>,
    template: Template,
    idle: Duration,
}

/// One piece of a `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value,
    Key,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Headers,
}

/// A parsed `--format` template (kcat's -f style).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Piece>);

impl Template {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            let piece = match (c, chars.clone().next()) {
                ('%', Some(spec)) => {
                    chars.next();
                    match spec {
                        's' => Piece::Value,
                        'k' => Piece::Key,
                        't' => Piece::Topic,
                        'p' => Piece::Partition,
                        'o' => Piece::Offset,
                        'T' => Piece::Timestamp,
                        'h' => Piece::Headers,
                        '%' => {
                            literal.push('%');
                            continue;
                        }
                        other => anyhow::bail!(
                            "--format: unknown %{other} (use %s %k %t %p %o %T %h or %%)"
                        ),
                    }
                }
                ('\\', Some(escaped @ ('n' | 't' | '\\'))) => {
                    chars.next();
                    literal.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        _ => '\\',
                    });
                    continue;
                }
                _ => {
                    literal.push(c);
                    continue;
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self(pieces))
    }

    /// Writes `record` as the template says; values and keys go out byte for byte.
    fn write(&self, out: &mut impl Write, record: &ConsumedRecord) -> std::io::Result<()> {
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.write_all(text.as_bytes())?,
                Piece::Value => out.write_all(&record.value)?,
                Piece::Key => out.write_all(record.key.as_deref().unwrap_or_default())?,
                Piece::Topic => out.write_all(record.topic.as_bytes())?,
                Piece::Partition => write!(out, "{}", record.partition)?,
                Piece::Offset => write!(out, "{}", record.offset)?,
                Piece::Timestamp => write!(out, "{}", record.timestamp_ms)?,
                Piece::Headers => {
                    for (index, (key, value)) in record.headers.iter().enumerate() {
                        if index > 0 {
                            out.write_all(b",")?;
                        }
                        out.write_all(key.as_bytes())?;
                        out.write_all(b"=")?;
                        out.write_all(value)?;
                    }
                }
            }
        }
        Ok(())
    }
}

async fn consume(
    client: &Client,
    format: OutputFormat,
    name: &str,
    options: ConsumeOptions,
) -> anyhow::Result<()> {
    let config = ConsumerConfig {
        group: options.group.clone().unwrap_or_default(),
        topics: vec![name.to_owned()],
        auto_offset_reset: if options.from_beginning {
            AutoOffsetReset::Earliest
        } else {
            AutoOffsetReset::Latest
        },
        // Commit once at the end, exactly after what was printed.
        auto_commit: false,
        ..ConsumerConfig::default()
    };
    let mut consumer = match options.group {
        Some(_) => Consumer::subscribe(client, config)
            .await
            .map_err(|err| topic_error(name, err))?,
        None => {
            let topic = client
                .describe_topic(name)
                .await
                .map_err(|err| topic_error(name, err))?;
            let count = topic.partition_count();
            if let Some(missing) = options.partitions.iter().find(|&&p| p >= count) {
                anyhow::bail!("topic '{name}' has no partition {missing} (it has {count})");
            }
            let partitions = (0..count)
                .filter(|p| options.partitions.is_empty() || options.partitions.contains(p))
                .map(|p| TopicPartition::new(name, p))
                .collect();
            Consumer::assign(client, config, partitions)?
        }
    };
    if let Some(offset) = options.offset {
        for tp in consumer.assignment() {
            consumer.seek(&tp, offset);
        }
    }
    if let Some(timestamp_ms) = options.from_timestamp {
        consumer.seek_to_timestamp(timestamp_ms).await?;
    }
    let mut consumed = 0u64;
    let mut last_message = Instant::now();
    loop {
        let want = options.max.map_or(u64::MAX, |max| max - consumed);
        let idle_left = options.idle.saturating_sub(last_message.elapsed());
        if want == 0 || idle_left.is_zero() {
            break;
        }
        let limit = usize::try_from(want).unwrap_or(usize::MAX).min(10_000);
        // Ctrl-C ends the run like --max does: what was printed is committed and
        // the member leaves, so its partitions move at once.
        let records = tokio::select! {
            polled = consumer.poll_up_to(idle_left, limit) => polled?,
            _ = tokio::signal::ctrl_c() => break,
        };
        if records.is_empty() {
            continue;
        }
        last_message = Instant::now();
        consumed += records.len() as u64;
        print_records(format, &options.template, &records)?;
    }
    consumer.close().await?;
    if format == OutputFormat::Text {
        eprintln!("consumed {consumed} messages");
    }
    Ok(())
}

fn print_records(
    format: OutputFormat,
    template: &Template,
    records: &[ConsumedRecord],
) -> anyhow::Result<()> {
    use base64::Engine as _;
    let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let tracing = ferry_telemetry::traces::exporting();
    for record in records {
        // Printing is this consumer's processing: its span links to the producer's.
        let _processing = tracing.then(|| record.process_span().entered());
        match format {
            OutputFormat::Text => template.write(&mut stdout, record)?,
            OutputFormat::Json => {
                // Text for people (invalid UTF-8 replaced), base64 for the exact bytes.
                let line = json!({
                    "topic": &*record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "key": record.key.as_deref().map(output::lossy),
                    "key_base64": record.key.as_deref().map(base64),
                    "value": output::lossy(&record.value),
                    "value_base64": base64(&record.value),
                    "headers": record.headers.iter().map(|(k, v)| json!({
                        "key": k,
                        "value": output::lossy(v),
                        "value_base64": base64(v),
                    })).collect::<Vec<_>>(),
                    "timestamp": record.timestamp_ms,
                });
                serde_json::to_writer(&mut stdout, &line)?;
                stdout.write_all(b"\n")?;
            }
        }
    }
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_are_stripped_once() {
        assert_eq!(strip_newline(b"abc\r\n"), b"abc");
        assert_eq!(strip_newline(b"abc\n"), b"abc");
        assert_eq!(strip_newline(b"abc"), b"abc");
        assert_eq!(strip_newline(b"\n"), b"");
    }

    #[test]
    fn not_found_names_the_topic() {
        let err = ClientError::Broker {
            status: Some(tonic::Code::NotFound),
            code: ErrorCode::TopicNotFound,
            message: "no such topic".into(),
            retry_after_ms: 0,
            leader_address: None,
            leader_partition: None,
        };
        assert_eq!(topic_error("x", err).to_string(), "topic 'x' not found");
    }

    #[test]
    fn describe_text_lists_partitions() {
        let topic = TopicDescription {
            name: "orders".into(),
            settings: TopicSettings {
                partitions: 1,
                durability: Some(Durability::Fsync),
                retention_ms: Some(604_800_000),
                retention_bytes: Some(0),
                ..TopicSettings::default()
            },
            partitions: vec![ferry_client::PartitionState {
                partition: 0,
                log_start_offset: 5,
                high_watermark: 15,
                size_bytes: 2048,
                segments: 1,
                leader_host_id: "h0".into(),
                leader_epoch: 1,
                replicas: vec![],
                in_sync_replicas: vec![],
            }],
            created_at_ms: 0,
        };
        let text = describe_text(&topic);
        assert!(text.contains("durability:   fsync"));
        assert!(text.contains("retention:    7d, no size limit"));
        assert!(text.contains("0          5      15   10       2.0 KiB  1         h0"));
        let value = topic_json(&topic);
        assert_eq!(value["partitions"][0]["records"], 10);
        assert_eq!(value["config"]["durability"], "fsync");
    }

    #[test]
    fn format_templates_write_each_field_byte_for_byte() -> anyhow::Result<()> {
        let record = ConsumedRecord {
            topic: std::sync::Arc::from("orders"),
            partition: 2,
            offset: 41,
            key: Some(bytes::Bytes::from_static(b"k1")),
            value: bytes::Bytes::from_static(&[0xff, b'v']),
            headers: vec![
                ("a".to_owned(), bytes::Bytes::from_static(b"1")),
                ("b".to_owned(), bytes::Bytes::from_static(b"2")),
            ],
            timestamp_ms: 1_700,
        };
        let template = Template::parse(r"%t/%p@%o %k=%s [%h] %T 100%%\n")?;
        let mut out = Vec::new();
        template.write(&mut out, &record)?;
        let mut expected = b"orders/2@41 k1=".to_vec();
        expected.extend_from_slice(&[0xff, b'v']);
        expected.extend_from_slice(b" [a=1,b=2] 1700 100%\n");
        assert_eq!(out, expected);
        assert!(Template::parse("%x").is_err());
        Ok(())
    }
}
