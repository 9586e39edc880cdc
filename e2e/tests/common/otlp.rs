//! An OTLP/gRPC trace collector for tests, built on the OpenTelemetry protobuf
//! definitions: the processes under test export to it as to any collector, and
//! the test reads what arrived.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tonic::transport::server::TcpIncoming;

/// How long spans may take to arrive (the processes export every 100 ms).
const ARRIVAL: Duration = Duration::from_secs(30);

/// A span as received, with the service that sent it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `service.name` of the process that sent it.
    pub service: String,
    /// The span.
    pub span: Span,
}

impl Received {
    /// The value of attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<String> {
        string_attribute(&self.span.attributes, key)
    }

    /// Whether it is span `name` of `kind` sent by `service`.
    pub fn is(&self, service: &str, name: &str, kind: SpanKind) -> bool {
        self.service == service && self.span.name == name && self.span.kind == kind as i32
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| match &value.value {
            Some(any_value::Value::StringValue(text)) => Some(text.clone()),
            Some(any_value::Value::IntValue(number)) => Some(number.to_string()),
            _ => None,
        })
}

/// An OTLP/gRPC trace collector keeping every span it is sent.
#[derive(Clone, Default)]
pub struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("collector lock");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| string_attribute(&resource.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| Received {
                    service: service.clone(),
                    span,
                }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on `ip` (any port) until the test process ends, on a thread and a
    /// runtime of its own (so a test blocking its own runtime stalls no export);
    /// returns the address.
    pub fn start(&self, ip: &str) -> SocketAddr {
        self.serve(ip, None)
    }

    /// Like [`Collector::start`], serving TLS with the certificate and key (PEM)
    /// in these files.
    pub fn start_tls(&self, ip: &str, cert: &std::path::Path, key: &std::path::Path) -> SocketAddr {
        let read = |path: &std::path::Path| {
            std::fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
        };
        let identity = tonic::transport::Identity::from_pem(read(cert), read(key));
        self.serve(
            ip,
            Some(tonic::transport::ServerTlsConfig::new().identity(identity)),
        )
    }

    fn serve(&self, ip: &str, tls: Option<tonic::transport::ServerTlsConfig>) -> SocketAddr {
        let listener = std::net::TcpListener::bind(format!("{ip}:0")).expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let service = TraceServiceServer::new(self.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the collector's runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a Tokio listener");
                let mut server = tonic::transport::Server::builder();
                if let Some(tls) = tls {
                    server = server.tls_config(tls).expect("the collector's TLS");
                }
                let _ = server
                    .add_service(service)
                    .serve_with_incoming(TcpIncoming::from(listener))
                    .await;
            });
        });
        addr
    }

    /// Every span received so far.
    pub fn snapshot(&self) -> Vec<Received> {
        self.spans.lock().expect("collector lock").clone()
    }

    /// Waits until `found` finds what it looks for in the spans received so far.
    pub async fn wait_for<T>(&self, what: &str, found: impl Fn(&[Received]) -> Option<T>) -> T {
        let until = Instant::now() + ARRIVAL;
        loop {
            let spans = self.snapshot();
            if let Some(result) = found(&spans) {
                return result;
            }
            if Instant::now() > until {
                let hex = |bytes: &[u8]| -> String {
                    bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
                };
                let names: Vec<String> = spans
                    .iter()
                    .map(|r| {
                        format!(
                            "{}:{} trace {} span {} parent {}",
                            r.service,
                            r.span.name,
                            hex(&r.span.trace_id),
                            hex(&r.span.span_id),
                            hex(&r.span.parent_span_id)
                        )
                    })
                    .collect();
                panic!(
                    "{what}: not among the {} spans received: {names:?}",
                    spans.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The OTLP settings every process of this test runs with.
pub fn otel_env(collector: SocketAddr) -> Vec<(String, String)> {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}")),
        // Export within 100 ms rather than the default 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}
