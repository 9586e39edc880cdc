//! Per-RPC metrics for every gRPC server (hosts' client and peer listeners, the
//! gateway), in the gRPC conventions: requests started and handled by service,
//! method and status code, and how long each took until its status was sent.
//!
//! A tower layer around the whole server, so every service and every way a call
//! ends is counted: a status in the response headers (an error answered at once), in
//! the trailers (after the body), or no status because the caller went away
//! (counted as `Cancelled`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::Code;

/// Labels naming a method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// Fully qualified service, e.g. `ferry.v1.TopicService`.
    pub grpc_service: String,
    /// Method, e.g. `Produce`.
    pub grpc_method: String,
}

/// Labels naming a method and how calls to it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    /// Fully qualified service.
    pub grpc_service: String,
    /// Method.
    pub grpc_method: String,
    /// Status code name, e.g. `OK`, `NOT_FOUND`.
    pub grpc_code: String,
}

type Seconds = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// The per-RPC metrics of one process.
#[derive(Clone)]
pub struct RpcMetrics {
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling_seconds: Seconds,
}

fn handling_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl RpcMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            started: Family::default(),
            handled: Family::default(),
            handling_seconds: Family::new_with_constructor(handling_histogram),
        };
        registry.register(
            "grpc_server_started",
            "gRPC calls started, by service and method",
            metrics.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "gRPC calls completed, by service, method and status code",
            metrics.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from receiving a gRPC call to sending its status",
            metrics.handling_seconds.clone(),
        );
        metrics
    }

    /// The layer that counts every call of the server it wraps.
    pub fn layer(&self) -> RpcMetricsLayer {
        RpcMetricsLayer(self.clone())
    }
}

/// Splits `/ferry.v1.TopicService/Produce` into service and method.
fn method_of(path: &str) -> MethodLabels {
    let trimmed = path.trim_start_matches('/');
    let (service, method) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    MethodLabels {
        grpc_service: service.to_owned(),
        grpc_method: method.to_owned(),
    }
}

/// The name Prometheus users know a code by (`OK`, `NOT_FOUND`, …).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status in a header map, if it carries one.
fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// One call being measured; records itself once, when its status is known or when
/// it is dropped without one.
struct Call {
    metrics: RpcMetrics,
    method: MethodLabels,
    started: Instant,
    recorded: bool,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        self.metrics
            .handled
            .get_or_create(&HandledLabels {
                grpc_service: self.method.grpc_service.clone(),
                grpc_method: self.method.grpc_method.clone(),
                grpc_code: code_name(code).to_owned(),
            })
            .inc();
        self.metrics
            .handling_seconds
            .get_or_create(&self.method)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The body went away before its trailers: the caller cancelled.
        self.finish(Code::Cancelled);
    }
}

/// The tower layer of [`RpcMetrics`].
#[derive(Clone)]
pub struct RpcMetricsLayer(RpcMetrics);

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service whose calls are counted and timed.
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Metered<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = method_of(request.uri().path());
        self.metrics.started.get_or_create(&method).inc();
        let mut call = Call {
            metrics: self.metrics.clone(),
            method,
            started: Instant::now(),
            recorded: false,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(err) => {
                    call.finish(Code::Unknown);
                    return Err(err);
                }
            };
            if let Some(code) = status_in(response.headers()) {
                call.finish(code);
            }
            Ok(response.map(|body| MeteredBody { body, call }))
        })
    }
}

/// A response body that records its call when the trailers carry the status.
pub struct MeteredBody<B> {
    body: B,
    call: Call,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    this.call.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish(Code::Internal),
            Poll::Ready(None) if !this.call.recorded => this.call.finish(Code::Unknown),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        let labels = method_of("/ferry.v1.TopicService/Produce");
        assert_eq!(labels.grpc_service, "ferry.v1.TopicService");
        assert_eq!(labels.grpc_method, "Produce");
        assert_eq!(method_of("/odd").grpc_method, "");
    }
}
