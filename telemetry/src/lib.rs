//! How Ferry's programs report on themselves: one log setup for the broker, the
//! gateway and the operator, and the standard process metrics they all export.
//!
//! Logs go to stderr, as text on a terminal (with colours) and as one JSON object
//! per line elsewhere (pods, files, pipes), unless `--log-format` says otherwise.
//! Colour codes are written only to a terminal. Inside a traced span a line
//! carries its trace and span ids.
//!
//! Traces go to an OTLP/gRPC collector when the standard `OTEL_*` variables name
//! one ([`traces`]); [`rpc`] gives every gRPC call a span and [`propagation`]
//! carries the W3C trace context between processes and in messages.

mod log_lines;
pub mod process_metrics;
pub mod propagation;
pub mod rpc;
pub mod traces;

use std::io::IsTerminal;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use log_lines::{Shape, WithTraceIds};
pub use traces::TraceError;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON on anything but a terminal, text on a terminal.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with
    /// `message`) and the enclosing `spans`.
    Json,
}

impl LogFormat {
    /// The format `Auto` stands for, given whether stderr is a terminal.
    pub fn resolve(self, terminal: bool) -> LogFormat {
        match (self, terminal) {
            (LogFormat::Auto, true) => LogFormat::Text,
            (LogFormat::Auto, false) => LogFormat::Json,
            (chosen, _) => chosen,
        }
    }
}

/// The log flags every Ferry program takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format: auto (JSON unless stderr is a terminal), text or json.
    #[arg(long, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,
}

/// What [`init`] set up; flushes the spans still buffered when shut down or dropped.
/// Drop it outside async code (or in `spawn_blocking`): the flush waits for the
/// exporter, whose channel runs on the Tokio runtime.
#[must_use = "dropping it stops exporting traces"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered and stops exporting.
    pub fn shutdown(mut self) {
        self.flush_and_stop();
    }

    fn flush_and_stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("warning: traces not all sent: {err}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush_and_stop();
    }
}

/// Installs the process's log subscriber, writing to stderr (`filter` chooses what
/// is logged, `FERRY_LOG` syntax, e.g. `info,ferry_broker=debug`), and exports
/// spans over OTLP when the `OTEL_*` environment asks for it ([`traces`]), as
/// service `program`. Call it inside a Tokio runtime.
pub fn init(
    program: &'static str,
    format: LogFormat,
    filter: EnvFilter,
) -> Result<Telemetry, TraceError> {
    install(program, Some((format, filter)))
}

/// Like [`init`] for a command-line tool that writes no log lines: only spans,
/// when the environment asks for them.
pub fn init_traces(program: &'static str) -> Result<Telemetry, TraceError> {
    install(program, None)
}

fn install(
    program: &'static str,
    logs: Option<(LogFormat, EnvFilter)>,
) -> Result<Telemetry, TraceError> {
    let provider = traces::provider(program)?;
    if provider.is_none() && logs.is_none() {
        // No subscriber at all: a registry without layers would enable every
        // span and event of every library (the cost of recording them all).
        return Ok(Telemetry { provider });
    }
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(traces::tracer(provider, program))
            .with_filter(LevelFilter::INFO)
    });
    let terminal = std::io::stderr().is_terminal();
    let lines = logs.map(|(format, filter)| log_layer(format, filter, std::io::stderr, terminal));
    tracing_subscriber::registry()
        .with(spans)
        .with(lines)
        .init();
    Ok(Telemetry { provider })
}

/// The layer writing log lines to `writer` in `format`; `terminal` says whether
/// that is a terminal (colours, and what `auto` means).
fn log_layer<S, W>(format: LogFormat, filter: EnvFilter, writer: W, terminal: bool) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // RPC spans are for traces: their ids are in the lines already, their fields
    // would only crowd them.
    let filter = match "ferry::rpc=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(terminal);
    match format.resolve(terminal) {
        LogFormat::Json => {
            let lines = tracing_subscriber::fmt::format()
                .json()
                .with_current_span(true)
                .with_span_list(true);
            layer
                .json()
                .event_format(WithTraceIds::new(lines, Shape::Json))
                .with_filter(filter)
                .boxed()
        }
        _ => {
            let lines = tracing_subscriber::fmt::format().with_ansi(terminal);
            layer
                .event_format(WithTraceIds::new(lines, Shape::Text))
                .with_filter(filter)
                .boxed()
        }
    }
}

/// The filter from environment variable `variable` (then `RUST_LOG`), else `default`.
pub fn filter_from_env(variable: &str, default: &str) -> EnvFilter {
    EnvFilter::try_from_env(variable)
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Lines {
        type Writer = Lines;

        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    /// What `format` writes for one line inside a traced span and one outside,
    /// and the span's trace and span ids.
    fn lines_inside_and_outside(format: LogFormat) -> (Vec<String>, String, String) {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(log_layer(
                format,
                EnvFilter::new("info"),
                lines.clone(),
                false,
            ));
        let ids = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("work");
            let ids = {
                let _inside = span.enter();
                tracing::info!("inside");
                let context = span.context();
                let span_context = context.span().span_context().clone();
                (
                    span_context.trace_id().to_string(),
                    span_context.span_id().to_string(),
                )
            };
            tracing::info!("outside");
            ids
        });
        let written = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("UTF-8");
        (written.lines().map(str::to_owned).collect(), ids.0, ids.1)
    }

    #[test]
    fn a_line_inside_a_traced_span_carries_its_trace_and_span_ids() {
        let (json, trace_id, span_id) = lines_inside_and_outside(LogFormat::Json);
        assert_eq!(json.len(), 2, "{json:?}");
        let inside: serde_json::Value = serde_json::from_str(&json[0]).expect("JSON");
        assert_eq!(inside["trace_id"], trace_id.as_str());
        assert_eq!(inside["span_id"], span_id.as_str());
        assert_eq!(inside["fields"]["message"], "inside");
        let outside: serde_json::Value = serde_json::from_str(&json[1]).expect("JSON");
        assert!(outside.get("trace_id").is_none(), "{outside}");

        let (text, trace_id, span_id) = lines_inside_and_outside(LogFormat::Text);
        assert!(
            text[0].ends_with(&format!("inside trace_id={trace_id} span_id={span_id}")),
            "{text:?}"
        );
        assert!(!text[1].contains("trace_id"), "{text:?}");
    }

    #[test]
    fn auto_means_text_on_a_terminal_and_json_elsewhere() {
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Json);
        assert_eq!(LogFormat::Text.resolve(false), LogFormat::Text);
        assert_eq!(LogFormat::Json.resolve(true), LogFormat::Json);
    }
}
