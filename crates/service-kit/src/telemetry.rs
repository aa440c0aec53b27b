//! OpenTelemetry traces over OTLP, when the standard environment asks for them.
//!
//! [`Telemetry::from_env`] reads the OpenTelemetry SDK's own variables and answers `None`
//! unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and
//! `OTEL_SDK_DISABLED` is not `true`): then no provider, no exporter thread and no layer exist,
//! and the spans meant for export (target [`SPAN_TARGET`]) are disabled at their call sites.
//!
//! Spans go out in batches from the SDK's own thread, with a blocking HTTP client, so exporting
//! never runs on (nor waits for) the service's async runtime.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::registry::LookupSpan;

/// The target of the spans meant for export (`tracing::info_span!(target: "otel", ...)`).
///
/// The log output never shows them (its filter turns this target off), and without
/// [`Telemetry`] nothing enables them, so they cost a disabled call site each.
pub const SPAN_TARGET: &str = "otel";

/// How long [`Telemetry::shutdown`] waits for the last batch to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The OTLP exporter could not be built from the environment.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces: {0}")]
pub struct TelemetryError(String);

/// An OpenTelemetry tracer provider exporting over OTLP: hand it to
/// [`init_tracing_with`](crate::init_tracing_with), then call [`Telemetry::shutdown`] (or drop
/// it) at graceful shutdown so the spans still batched are sent.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// Whether the environment asks for trace export (see [`Telemetry::from_env`]).
pub fn otlp_requested() -> bool {
    requested(|name| std::env::var(name).ok())
}

/// [`otlp_requested`] over any source of variables (tests pass a map: setting the process's
/// environment is unsafe while other threads read it).
fn requested(var: impl Fn(&str) -> Option<String>) -> bool {
    let value = |name: &str| var(name).map(|v| v.trim().to_ascii_lowercase());
    let set = |name: &str| value(name).is_some_and(|v| !v.is_empty());
    // The spec: only a case-insensitive `true` disables; anything else is false.
    value("OTEL_SDK_DISABLED").as_deref() != Some("true")
        && value("OTEL_TRACES_EXPORTER").as_deref() != Some("none")
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

impl Telemetry {
    /// A provider exporting over OTLP as the standard variables say, or `None` when they do not
    /// ask for it (no endpoint, `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`).
    ///
    /// Read by the SDK: `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended) or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is), `OTEL_EXPORTER_OTLP_PROTOCOL`
    /// (`http/protobuf`, the default; `grpc` with the `otlp-grpc` feature),
    /// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME` (else
    /// `service_name`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`.
    ///
    /// Installs rustls' ring provider as the process default if none is, as the exporter's
    /// client (reqwest built without one) needs it for `https://` endpoints.
    ///
    /// # Errors
    ///
    /// [`TelemetryError`] when the exporter cannot be built (an invalid endpoint, or `grpc`
    /// asked for without the `otlp-grpc` feature).
    pub fn from_env(service_name: &str) -> Result<Option<Telemetry>, TelemetryError> {
        if !otlp_requested() {
            return Ok(None);
        }
        let grpc = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|p| !p.trim().is_empty()))
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("grpc"));
        if grpc && !cfg!(feature = "otlp-grpc") {
            // The SDK would quietly fall back to HTTP on the gRPC port.
            return Err(TelemetryError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs service-kit's otlp-grpc feature".into(),
            ));
        }
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let exporter = exporter(grpc)?;
        let mut resource = Resource::builder().build();
        let named = resource
            .get(&opentelemetry::Key::new("service.name"))
            .is_some_and(|n| !n.as_str().starts_with("unknown_service"));
        if !named {
            resource = Resource::builder()
                .with_service_name(service_name.to_owned())
                .build();
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer(service_name.to_owned());
        Ok(Some(Telemetry { provider, tracer }))
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans of this provider.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            // Which thread ran an attempt says nothing useful and costs two attributes a span.
            .with_threads(false)
            // Every exported span's target is `otel`; and attempts have a `target` of their own
            // (the delivery's endpoint), which this attribute would shadow.
            .with_target(false)
    }

    /// Sends the spans still batched and stops the exporter (waiting at most 5 s). Also done on
    /// drop; call it explicitly where blocking the current thread briefly is fine.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // The subscriber's layer keeps the provider alive, so dropping ours would not flush.
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            eprintln!("warning: flushing traces at shutdown: {e}");
        }
    }
}

#[cfg(feature = "otlp-grpc")]
fn exporter(grpc: bool) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    if grpc {
        return opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError(e.to_string()));
    }
    http_exporter()
}

#[cfg(not(feature = "otlp-grpc"))]
fn exporter(_grpc: bool) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    http_exporter()
}

fn http_exporter() -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| TelemetryError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn export_is_asked_for_only_by_an_otlp_endpoint() {
        assert!(!requested(env(&[])));
        assert!(!requested(env(&[("OTEL_SERVICE_NAME", "dispatcher")])));
        assert!(!requested(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(requested(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4318"
        )])));
        assert!(requested(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces"
        )])));
    }

    #[test]
    fn sdk_disabled_or_exporter_none_wins_over_an_endpoint() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert!(!requested(env(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")])));
        assert!(requested(env(&[endpoint, ("OTEL_SDK_DISABLED", "false")])));
        assert!(!requested(env(&[
            endpoint,
            ("OTEL_TRACES_EXPORTER", "none")
        ])));
        assert!(requested(env(&[
            endpoint,
            ("OTEL_TRACES_EXPORTER", "otlp")
        ])));
    }
}
