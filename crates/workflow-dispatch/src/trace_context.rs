//! W3C trace context across the durable queue: the request that created a task is the parent
//! of every delivery attempt, and each attempt's own context goes out as the webhook's
//! `traceparent` header.
//!
//! Nothing here installs anything. The spans are plain `tracing` spans with target `otel`,
//! which only a process that exports traces enables (`service_kit::Telemetry`); elsewhere they
//! are disabled, and every function below returns at once without allocating.

use std::collections::HashMap;

use async_trait::async_trait;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use workflow_core::{AttemptContext, AttemptResult, Handler, HandlerOutcome, Task};

use crate::payload::DeliveryPayload;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The current span's context as a W3C `traceparent` value, or `None` when no exported span is
/// current (tracing off, or no OpenTelemetry layer installed).
pub fn current_traceparent() -> Option<String> {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the remote context in `traceparent` (and `tracestate`), if they
/// parse; otherwise `span` stays a root. Call it before the span is first entered.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    let mut carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    if let Some(state) = tracestate {
        carrier.insert(TRACESTATE.to_owned(), state.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer sees the span: then there is nothing to link.
        let _ = span.set_parent(cx);
    }
}

/// The headers that carry the current span's context to the next hop (`traceparent`, and
/// `tracestate` when there is one); empty when no exported span is current.
pub fn outgoing_headers() -> Vec<(String, String)> {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return Vec::new();
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.into_iter().collect()
}

/// `url` without its query and fragment, which may carry tokens: what a span may show.
pub fn endpoint_of(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// What an attempt's outcome is called in its span.
fn outcome_name(result: &AttemptResult) -> &'static str {
    match result {
        AttemptResult::Success(_) => "success",
        AttemptResult::Retryable { .. } => "retryable",
        AttemptResult::Permanent { .. } => "permanent",
        AttemptResult::Deferred { .. } => "deferred",
    }
}

/// Wraps a delivery handler so each attempt runs in a span (`delivery attempt`) that is a child
/// of the trace the task was created in, with `task_id`, `target` (the URL without its query,
/// or `channel:<name>`), `priority`, `attempt` and, at the end, `outcome`.
#[derive(Debug, Clone)]
pub struct TracedDelivery<H> {
    inner: H,
}

impl<H> TracedDelivery<H> {
    /// Traces `inner`'s attempts.
    pub fn new(inner: H) -> TracedDelivery<H> {
        TracedDelivery { inner }
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

#[async_trait]
impl<H: Handler> Handler for TracedDelivery<H> {
    async fn handle(&self, task: &Task, ctx: AttemptContext) -> HandlerOutcome {
        let span = tracing::info_span!(
            target: "otel",
            "delivery attempt",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            task_id = %task.id,
            target = tracing::field::Empty,
            priority = task.priority.as_str(),
            // i64: the OpenTelemetry bridge keeps only signed integers as numbers.
            attempt = i64::from(ctx.attempt),
            outcome = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        if span.is_disabled() {
            return self.inner.handle(task, ctx).await;
        }
        if let Ok(payload) = DeliveryPayload::read(&task.payload) {
            match (payload.url, payload.channel) {
                (_, Some(channel)) => span.record("target", format!("channel:{channel}")),
                (Some(url), None) => span.record("target", endpoint_of(url)),
                (None, None) => &span,
            };
            if let Some(parent) = payload.traceparent {
                set_remote_parent(&span, parent, None);
            }
        }
        let outcome = self.inner.handle(task, ctx).instrument(span.clone()).await;
        span.record("outcome", outcome_name(&outcome.result));
        if let Some(status) = outcome.status_code {
            span.record("http.response.status_code", i64::from(status));
        }
        if matches!(
            outcome.result,
            AttemptResult::Retryable { .. } | AttemptResult::Permanent { .. }
        ) {
            span.record("otel.status_code", "error");
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_lose_their_query_and_fragment() {
        assert_eq!(
            endpoint_of("https://r.example/h?access_token=x#y"),
            "https://r.example/h"
        );
        assert_eq!(endpoint_of("https://r.example/h#y"), "https://r.example/h");
        assert_eq!(endpoint_of("https://r.example/h"), "https://r.example/h");
    }

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_span_under_a_traceparent_passes_on_the_trace_with_its_own_span() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "test");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: "otel", "attempt");
            set_remote_parent(&span, CALLER, Some("vendor=1"));
            let _entered = span.enter();
            let traceparent = current_traceparent().expect("an exported span is current");
            assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
            assert!(!traceparent.contains("00f067aa0ba902b7"), "its own span id");
            let mut headers = outgoing_headers();
            headers.sort();
            assert_eq!(
                headers,
                [
                    ("traceparent".to_owned(), traceparent),
                    ("tracestate".to_owned(), "vendor=1".to_owned())
                ]
            );
        });
    }

    #[test]
    fn without_an_exporting_layer_nothing_is_recorded_or_sent() {
        let span = tracing::info_span!(target: "otel", "request");
        set_remote_parent(&span, CALLER, None);
        let _entered = span.enter();
        assert_eq!(current_traceparent(), None);
        assert!(outgoing_headers().is_empty());
    }
}
