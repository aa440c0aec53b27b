//! The tower-http stack in front of an HTTP API's router ([`ApiLayers`]): request ids (set and
//! propagated), sensitive-header redaction, a request span per request (exported when traces
//! are, a child of the caller's `traceparent`), the service's own error shape for every
//! rejection, a body limit, a request timeout and panic recovery.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, Request, Response, StatusCode};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, MakeSpan as _, OnResponse as _};

/// Makes a request's span a child of the remote context in a `traceparent` (and `tracestate`)
/// header, e.g. `workflow_dispatch::trace_context::set_remote_parent`.
pub type RemoteParent = fn(&tracing::Span, &str, Option<&str>);

/// What [`ApiLayers::apply`] puts in front of a router.
#[derive(Debug, Clone)]
pub struct ApiLayers {
    /// Largest request body accepted, in bytes (larger: 413).
    pub body_limit: usize,
    /// How long one request may take before it is answered 408.
    pub timeout: Duration,
    /// Request headers shown as redacted in logs and spans (credentials, tokens).
    pub sensitive_headers: Vec<HeaderName>,
    /// Paths that get tower-http's usual debug span, never an exported one: probes and scrapes
    /// every few seconds would bury the traces worth reading.
    pub quiet_paths: &'static [&'static str],
    /// Links a request's span to the caller's trace; `None`: every request span is a root.
    pub remote_parent: Option<RemoteParent>,
}

impl ApiLayers {
    /// `router` behind the stack, outermost first: a request id (`x-request-id`, set unless
    /// given, and copied to the response), `sensitive_headers` redacted, the request span (see
    /// [`request_span`]) and the response log, `errors` over every response (to rewrite the
    /// rejections below into the service's error shape), the body limit, the timeout (408), and
    /// panic recovery answering `on_panic()`.
    pub fn apply<S, E, Fut>(
        &self,
        router: Router<S>,
        errors: E,
        on_panic: fn() -> axum::response::Response,
    ) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
        E: Fn(axum::response::Response) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = axum::response::Response> + Send + 'static,
    {
        let quiet = self.quiet_paths;
        let parent = self.remote_parent;
        router
            .layer(DefaultBodyLimit::max(self.body_limit))
            .layer(CatchPanicLayer::custom(move |_| on_panic()))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                self.timeout,
            ))
            .layer(RequestBodyLimitLayer::new(self.body_limit))
            .layer(axum::middleware::map_response(errors))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(move |request: &Request<_>| {
                        request_span(request, quiet, parent)
                    })
                    .on_response(on_response),
            )
            .layer(SetSensitiveRequestHeadersLayer::new(
                self.sensitive_headers.clone(),
            ))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
    }
}

/// The span of one API request: exported (target `otel`, a child of the caller's `traceparent`
/// through `remote_parent`) when traces are, else tower-http's usual debug span (always for
/// `quiet` paths). Its `task_id` is left for the handlers that know one to fill in.
pub fn request_span<B>(
    request: &Request<B>,
    quiet: &[&str],
    remote_parent: Option<RemoteParent>,
) -> tracing::Span {
    if quiet.contains(&request.uri().path()) {
        return DefaultMakeSpan::new().make_span(request);
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let span = tracing::info_span!(
        target: "otel",
        "request",
        otel.name = format!("{} {route}", request.method()).trim_end(),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        task_id = tracing::field::Empty,
    );
    if span.is_disabled() {
        return DefaultMakeSpan::new().make_span(request);
    }
    let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    if let (Some(set_parent), Some(traceparent)) = (remote_parent, header("traceparent")) {
        set_parent(&span, traceparent, header("tracestate"));
    }
    span
}

/// Records the status on the request span, then logs as tower-http does by default.
pub fn on_response<B>(response: &Response<B>, latency: Duration, span: &tracing::Span) {
    let status = response.status();
    // i64: the OpenTelemetry bridge keeps only signed integers as numbers.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    DefaultOnResponse::new().on_response(response, latency, span);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::response::IntoResponse as _;
    use tower::ServiceExt as _;

    fn layers() -> ApiLayers {
        ApiLayers {
            body_limit: 16,
            timeout: Duration::from_millis(200),
            sensitive_headers: vec![axum::http::header::AUTHORIZATION],
            quiet_paths: &["/healthz"],
            remote_parent: None,
        }
    }

    async fn tag_errors(mut response: axum::response::Response) -> axum::response::Response {
        if response.status().is_client_error() || response.status().is_server_error() {
            response
                .headers_mut()
                .insert("x-rewritten", axum::http::HeaderValue::from_static("1"));
        }
        response
    }

    fn app() -> Router {
        let router = Router::new()
            .route("/echo", axum::routing::post(|body: String| async { body }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }),
            )
            .route(
                "/panic",
                axum::routing::get(|| async {
                    if true {
                        panic!("boom");
                    }
                }),
            );
        layers().apply(router, tag_errors, || {
            (StatusCode::INTERNAL_SERVER_ERROR, "recovered").into_response()
        })
    }

    async fn call(request: Request<Body>) -> axum::response::Response {
        app().oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn every_response_has_a_request_id_and_keeps_a_given_one() {
        let r = call(Request::post("/echo").body(Body::from("hi")).unwrap()).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().contains_key("x-request-id"));
        let r = call(
            Request::post("/echo")
                .header("x-request-id", "r-1")
                .body(Body::from("hi"))
                .unwrap(),
        )
        .await;
        assert_eq!(r.headers()["x-request-id"], "r-1");
    }

    #[tokio::test]
    async fn limits_timeouts_and_panics_pass_through_the_error_rewriter() {
        let big = call(
            Request::post("/echo")
                .body(Body::from("x".repeat(64)))
                .unwrap(),
        )
        .await;
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(big.headers()["x-rewritten"], "1");
        let slow = call(Request::get("/slow").body(Body::empty()).unwrap()).await;
        assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(slow.headers()["x-rewritten"], "1");
        let panic = call(Request::get("/panic").body(Body::empty()).unwrap()).await;
        assert_eq!(panic.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(panic.headers()["x-rewritten"], "1");
        assert!(panic.headers().contains_key("x-request-id"));
    }
}
