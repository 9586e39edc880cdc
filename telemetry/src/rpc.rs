//! A span per gRPC call, as tower layers for servers and for channels.
//!
//! A server span continues the trace its caller sent in the `traceparent` header; a
//! client span is a child of the current span and sends its own context on. Both
//! follow OpenTelemetry's RPC conventions (`rpc.system`, `rpc.service`,
//! `rpc.method`, `rpc.grpc.status_code`). A layer that starts traces makes
//! nothing while this process exports none; one that only continues them looks
//! for a trace context first.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::Either;
use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::{extract_headers, inject_headers};
use crate::traces::exporting;

/// Which end of a call a layer traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// Whether a call outside any trace starts one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roots {
    /// Every call gets a span.
    Start,
    /// Only calls inside a trace (an incoming context, or a current span) get one:
    /// for chatty internal calls such as replica fetches.
    Follow,
}

/// The tower layer that gives each gRPC call a span.
#[derive(Debug, Clone, Copy)]
pub struct RpcTraceLayer {
    side: Side,
    roots: Roots,
}

impl RpcTraceLayer {
    /// Server spans, continuing the caller's trace or starting one.
    pub fn server() -> Self {
        Self {
            side: Side::Server,
            roots: Roots::Start,
        }
    }

    /// Client spans under the current span (a root when there is none), whose
    /// context is sent to the server.
    pub fn client() -> Self {
        Self {
            side: Side::Client,
            roots: Roots::Start,
        }
    }

    /// Spans only for calls that are part of a trace already.
    pub fn inside_traces_only(self) -> Self {
        Self {
            roots: Roots::Follow,
            ..self
        }
    }
}

impl<S> tower::Layer<S> for RpcTraceLayer {
    type Service = RpcTraced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTraced {
            inner,
            layer: *self,
        }
    }
}

/// A gRPC service (server or channel) whose calls get spans.
#[derive(Debug, Clone)]
pub struct RpcTraced<S> {
    inner: S,
    layer: RpcTraceLayer,
}

impl<S> RpcTraced<S> {
    /// The span for a call of `path` with `headers`; `None` when it gets none.
    fn span_for(&self, path: &str, headers: &mut http::HeaderMap) -> Option<tracing::Span> {
        // A call continuing a trace gets a span whoever set the tracing up (a
        // program embedding the client may export through its own layer); only a
        // new trace needs this process to export.
        if self.layer.roots == Roots::Start && !exporting() {
            return None;
        }
        let name = path.trim_start_matches('/');
        let (service, method) = name.split_once('/').unwrap_or((name, ""));
        let kind = match self.layer.side {
            Side::Server => "server",
            Side::Client => "client",
        };
        let parent = match self.layer.side {
            Side::Server => extract_headers(headers),
            Side::Client => opentelemetry::Context::current(),
        };
        if self.layer.roots == Roots::Follow && !parent.span().span_context().is_valid() {
            return None;
        }
        let span = tracing::info_span!(
            target: "ferry::rpc",
            "rpc",
            otel.name = name,
            otel.kind = kind,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        match self.layer.side {
            Side::Server => {
                // Fails only when the span is disabled: then there is nothing to trace.
                let _ = span.set_parent(parent);
            }
            Side::Client => inject_headers(&span.context(), headers),
        }
        Some(span)
    }
}

/// A call in its span.
pub type Traced<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

/// Records how a call ended on its span.
fn record_status(span: &tracing::Span, headers: Option<&http::HeaderMap>) {
    let code = match headers {
        // A status in the headers: the call was answered with an error at once
        // (a successful call's status comes in the trailers).
        Some(headers) => match headers.get("grpc-status") {
            Some(value) => std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|text| text.parse::<i64>().ok()),
            None => Some(0),
        },
        None => None,
    };
    match code {
        Some(0) => {
            span.record("rpc.grpc.status_code", 0);
        }
        Some(code) => {
            span.record("rpc.grpc.status_code", code);
            span.record("otel.status_code", "error");
        }
        // No answer at all: the transport failed.
        None => {
            span.record("otel.status_code", "error");
        }
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcTraced<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    /// The inner call as it is when it gets no span (nothing added on the hot path),
    /// else it in its span.
    type Future = Either<S::Future, Traced<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let Some(span) = self.span_for(&path, request.headers_mut()) else {
            return Either::Left(self.inner.call(request));
        };
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let recording = span.clone();
        Either::Right(Box::pin(
            async move {
                let response = response.await;
                record_status(&recording, response.as_ref().ok().map(|r| r.headers()));
                response
            }
            .instrument(span),
        ))
    }
}
