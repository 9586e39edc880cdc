//! How Ferry's programs report on themselves: one log setup for the broker, the
//! gateway and the operator, and the standard process metrics they all export.
//!
//! Logs go to stderr, as text on a terminal (with colours) and as one JSON object
//! per line elsewhere (pods, files, pipes), unless `--log-format` says otherwise.
//! Colour codes are written only to a terminal.

pub mod process_metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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

/// Installs the process's log subscriber, writing to stderr: `filter` chooses what
/// is logged (`FERRY_LOG` syntax, e.g. `info,ferry_broker=debug`).
pub fn init_logs(format: LogFormat, filter: EnvFilter) {
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal);
    match format.resolve(terminal) {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        _ => builder.init(),
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

    #[test]
    fn auto_means_text_on_a_terminal_and_json_elsewhere() {
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Json);
        assert_eq!(LogFormat::Text.resolve(false), LogFormat::Text);
        assert_eq!(LogFormat::Json.resolve(true), LogFormat::Json);
    }
}
