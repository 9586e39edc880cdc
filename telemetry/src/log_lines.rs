//! Log lines written inside a traced span carry its trace and span ids, so a line
//! found in the logs leads to its trace and back.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use tracing::Subscriber;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Where the ids go in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// First members of the line's JSON object.
    Json,
    /// `trace_id=… span_id=…` at the end of the text line.
    Text,
}

/// An event format that adds the current trace's ids to what `inner` writes.
pub(crate) struct WithTraceIds<F> {
    inner: F,
    shape: Shape,
}

impl<F> WithTraceIds<F> {
    /// Wraps `inner`, whose lines have `shape`.
    pub(crate) fn new(inner: F, shape: Shape) -> Self {
        Self { inner, shape }
    }
}

/// The trace and span ids of the span entered on this thread, if it is traced.
fn current_ids() -> Option<(String, String)> {
    let context = opentelemetry::Context::current();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

/// `line` with the ids added in `shape`.
fn with_ids(line: &str, shape: Shape, trace_id: &str, span_id: &str) -> String {
    match shape {
        Shape::Json => match line.strip_prefix('{') {
            Some(rest) => format!("{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"),
            None => line.to_owned(),
        },
        Shape::Text => {
            let body = line.strip_suffix('\n').unwrap_or(line);
            format!("{body} trace_id={trace_id} span_id={span_id}\n")
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = current_ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&with_ids(&line, self.shape, &trace_id, &span_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_lead_a_json_line_and_end_a_text_line() {
        assert_eq!(
            with_ids("{\"level\":\"INFO\"}\n", Shape::Json, "t", "s"),
            "{\"trace_id\":\"t\",\"span_id\":\"s\",\"level\":\"INFO\"}\n"
        );
        assert_eq!(
            with_ids("INFO ferry: stored\n", Shape::Text, "t", "s"),
            "INFO ferry: stored trace_id=t span_id=s\n"
        );
    }
}
