//! OpenTelemetry traces, exported over OTLP/gRPC when the standard `OTEL_*`
//! environment variables ask for it, and off otherwise.
//!
//! Exporting is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, unless `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none`. The SDK reads the rest itself: the sampler
//! (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`; parent-based always-on by
//! default), the batch settings (`OTEL_BSP_*`), headers and timeouts
//! (`OTEL_EXPORTER_OTLP_*`) and the resource (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`). When off, no span is made for RPCs and nothing is
//! sent anywhere.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Whether this process exports traces (set once, at start-up).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces: the RPC layers and message-header
/// propagation do nothing when it does not.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The OTLP exporter could not be built (a bad endpoint, a TLS problem).
    #[error("cannot export traces over OTLP: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A TLS file the environment names cannot be read.
    #[error("{variable}: cannot read {path}: {source}")]
    File {
        /// The variable naming it.
        variable: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The variables naming the collector, the specific one first.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Whether the environment asks for traces to be exported, read through `var`.
fn requested(var: impl Fn(&str) -> Option<String>) -> bool {
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter =
        var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    !disabled && !no_exporter && first_set(&var, &ENDPOINT_VARIABLES).is_some()
}

/// The tracer provider exporting this process's spans, when the environment asks
/// for it; `program` is the service name unless `OTEL_SERVICE_NAME` says
/// otherwise. Must be called inside a Tokio runtime (the exporter's channel lives
/// there). Installs the W3C trace-context propagator either way, so that context
/// passes through a process that does not export.
pub(crate) fn provider(program: &str) -> Result<Option<SdkTracerProvider>, TraceError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if !requested(|name| std::env::var(name).ok()) {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(tls) = tls_config(|name| std::env::var(name).ok())? {
        exporter = exporter.with_tls_config(tls);
    }
    let exporter = exporter.build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(program.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Some(provider))
}

/// The first of `names` set (non-empty) in the environment read through `var`.
fn first_set(var: &impl Fn(&str) -> Option<String>, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| var(name).filter(|value| !value.trim().is_empty()))
}

/// TLS for an `https://` collector: the CA in
/// `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`, else the system's roots, and the
/// client certificate and key in
/// `OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE` / `…_CLIENT_KEY` when set (the
/// standard variables; the exporter's own default trusts no root at all).
fn tls_config(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<tonic::transport::ClientTlsConfig>, TraceError> {
    let endpoint = first_set(&var, &ENDPOINT_VARIABLES);
    if !endpoint.is_some_and(|endpoint| endpoint.trim().starts_with("https://")) {
        return Ok(None);
    }
    let read = |variable: &str, path: String| {
        std::fs::read(&path).map_err(|source| TraceError::File {
            variable: variable.to_owned(),
            path,
            source,
        })
    };
    let ca_names = [
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ];
    let tls = tonic::transport::ClientTlsConfig::new();
    let mut tls = match first_set(&var, &ca_names) {
        Some(path) => {
            let pem = read("OTEL_EXPORTER_OTLP_CERTIFICATE", path)?;
            tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
        }
        None => tls.with_native_roots(),
    };
    let cert = first_set(
        &var,
        &[
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ],
    );
    let key = first_set(
        &var,
        &[
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ],
    );
    if let (Some(cert), Some(key)) = (cert, key) {
        let cert = read("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert)?;
        let key = read("OTEL_EXPORTER_OTLP_CLIENT_KEY", key)?;
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    Ok(Some(tls))
}

/// The tracer spans of `program` are recorded with.
pub(crate) fn tracer(
    provider: &SdkTracerProvider,
    program: &'static str,
) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn an_https_collector_gets_tls_and_a_missing_ca_file_is_named() {
        assert!(
            tls_config(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]))
                .expect("no files")
                .is_none()
        );
        assert!(
            tls_config(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317")]))
                .expect("no files")
                .is_some()
        );
        let err = tls_config(env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
        ]))
        .expect_err("missing CA file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn an_endpoint_turns_exporting_on_and_the_standard_switches_turn_it_off() {
        assert!(!requested(env(&[])));
        assert!(requested(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        assert!(requested(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(!requested(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(!requested(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ])));
        assert!(!requested(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])));
    }
}
