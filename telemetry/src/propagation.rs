//! The W3C trace context (`traceparent`, `tracestate`) carried between processes:
//! in gRPC metadata (HTTP/2 headers) and in message headers or queue attributes, so
//! that a consumer's span can link to the producer's.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header that carries the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Reads trace-context fields from HTTP headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Writes trace-context fields into HTTP headers.
struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Collects trace-context fields as pairs.
struct PairInjector(Vec<(String, String)>);

impl Injector for PairInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// Reads trace-context fields through a lookup function.
struct LookupExtractor<F>(F, Vec<(String, String)>);

impl<F: Fn(&str) -> Option<String>> LookupExtractor<F> {
    fn new(lookup: F) -> Self {
        let fields = ["traceparent", "tracestate"]
            .iter()
            .filter_map(|key| lookup(key).map(|value| ((*key).to_owned(), value)))
            .collect();
        Self(lookup, fields)
    }
}

impl<F> Extractor for LookupExtractor<F> {
    fn get(&self, key: &str) -> Option<&str> {
        self.1
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.1.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// Writes `context` into `headers` (`traceparent`, and `tracestate` when set).
pub fn inject_headers(context: &Context, headers: &mut http::HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(context, &mut HeaderInjector(headers));
    });
}

/// The trace context a caller sent in `headers` (empty when none).
pub fn extract_headers(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// The current span's trace context as header pairs, to carry in a message's
/// headers or a queue message's attributes; empty outside a traced span.
pub fn current_context_fields() -> Vec<(String, String)> {
    let context = Context::current();
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut injector = PairInjector(Vec::new());
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut injector);
    });
    injector.0
}

/// The span context a message carried (its producer's), read through `lookup` of
/// its headers or attributes; `None` when it carries none or a malformed one.
pub fn carried_span_context(lookup: impl Fn(&str) -> Option<String>) -> Option<SpanContext> {
    let extractor = LookupExtractor::new(lookup);
    let context =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&extractor));
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// `future` run in the trace current now (if any), for work spawned onto another
/// task: the RPC spans it makes are children of the current span. Unlike
/// instrumenting it with the current span, this does not keep that span open.
pub fn in_current_trace<F: Future>(future: F) -> impl Future<Output = F::Output> {
    use opentelemetry::context::FutureExt as _;
    future.with_context(Context::current())
}

/// A span for processing one consumed message of `destination` (a topic or a
/// queue), linked to the span that sent it when the message carried its context
/// (`lookup` reads the message's headers or attributes). Enter it around the work
/// the message causes.
pub fn process_span(
    destination: &str,
    message_id: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: "ferry::messaging",
        "process",
        otel.name = format!("process {destination}"),
        otel.kind = "consumer",
        messaging.system = "ferry",
        messaging.operation.type = "process",
        messaging.destination.name = destination,
        messaging.message.id = message_id,
    );
    if let Some(sender) = carried_span_context(lookup) {
        span.add_link(sender);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_carried_traceparent_reads_back_as_the_producers_span() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let carried = carried_span_context(|key| (key == TRACEPARENT).then(|| PARENT.to_owned()))
            .expect("valid context");
        assert_eq!(
            carried.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(carried.span_id().to_string(), "00f067aa0ba902b7");
        assert!(carried_span_context(|_| Some("garbage".to_owned())).is_none());
        assert!(carried_span_context(|_| None).is_none());

        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, http::HeaderValue::from_static(PARENT));
        let context = extract_headers(&headers);
        let mut written = http::HeaderMap::new();
        inject_headers(&context, &mut written);
        assert_eq!(
            written.get(TRACEPARENT).map(|v| v.as_bytes()),
            Some(PARENT.as_bytes())
        );
    }
}
