//! Traces over OTLP/HTTP from the real executable (the tracer provider is process-wide, so a
//! subprocess keeps it out of the other tests): a local collector decodes what arrives with
//! the OpenTelemetry protobuf definitions, and a receiver keeps the delivered headers.

use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use super::{KEY, SECRET, command, free_port, http, seed_body, terminate, wait_healthy};

/// The caller's context: trace `4bf9...4736`, its span `00f0...02b7`, sampled.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Spans received, as decoded.
type Spans = Arc<Mutex<Vec<Span>>>;
/// Headers of each delivery received.
type Deliveries = Arc<Mutex<Vec<HeaderMap>>>;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// An OTLP/HTTP collector (`POST /v1/traces`, protobuf); returns its base URL.
async fn collector() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let s = spans.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let s = s.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut s = s.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        s.extend(scope.spans);
                    }
                }
                // An empty ExportTraceServiceResponse.
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        }),
    );
    (serve(app).await, spans)
}

/// A webhook receiver answering 200; returns its hook URL.
async fn receiver() -> (String, Deliveries) {
    let seen: Deliveries = Arc::default();
    let s = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(headers);
                "ok"
            }
        }),
    );
    (format!("{}/hook", serve(app).await), seen)
}

/// The dispatcher binary with `env` added and any OTEL variable of the test's own environment
/// removed; killed on drop.
struct Dispatcher {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dispatcher {
    async fn start(env: &[(&str, &str)]) -> Dispatcher {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = command(dir.path(), port);
        cmd.args(["--api-keys", KEY, "--signing-secret", SECRET])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("OTEL_")) {
            cmd.env_remove(name);
        }
        cmd.envs(env.iter().copied());
        let server = Dispatcher {
            child: cmd.spawn().expect("start the dispatcher binary"),
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        wait_healthy(&http(), &server.base).await;
        server
    }

    /// Creates the seed's task to `hook` as a caller in trace [`TRACE_ID`]; the task id.
    async fn create_traced_task(&self, hook: &str) -> String {
        let created: serde_json::Value = http()
            .post(format!("{}/workflow/tasks", self.base))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
            .body(seed_body(hook))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["task_id"].as_str().unwrap().to_owned()
    }

    /// SIGTERM, then waits for the exit (a graceful stop flushes the batched spans).
    fn stop(mut self) {
        terminate(&self.child);
        assert!(self.child.wait().unwrap().success());
    }
}

/// Polls `check` every 50 ms for up to 30 s (a bound, not a timing assertion).
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attribute(span, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attribute(span, key)? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// Lowercase hex, as ids are written in `traceparent`.
fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The `traceparent` header's trace and span ids, hex.
fn traceparent_ids(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let parts: Vec<&str> = value.split('-').collect();
    (parts.len() == 4).then(|| (parts[1].to_owned(), parts[2].to_owned()))
}

#[tokio::test]
async fn request_and_attempt_spans_join_the_callers_trace_and_reach_the_collector() {
    let (collector, spans) = collector().await;
    let (hook, deliveries) = receiver().await;
    let server = Dispatcher::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let task_id = server
        .create_traced_task(&format!("{hook}?token=secret"))
        .await;

    let delivered = eventually("the delivery", || {
        deliveries.lock().unwrap().first().cloned()
    })
    .await;
    let (trace, attempt_span) = traceparent_ids(&delivered).expect("a traceparent on the webhook");
    assert_eq!(trace, TRACE_ID, "the delivery continues the caller's trace");
    assert_ne!(attempt_span, CALLER_SPAN);

    let (request, attempt) = eventually("the request and attempt spans", || {
        let spans = spans.lock().unwrap();
        let in_trace = |s: &&Span| hex(&s.trace_id) == TRACE_ID;
        let request = spans
            .iter()
            .filter(in_trace)
            .find(|s| s.name == "POST /workflow/tasks")?;
        let attempt = spans
            .iter()
            .filter(in_trace)
            .find(|s| s.name == "delivery attempt")?;
        Some((request.clone(), attempt.clone()))
    })
    .await;

    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
    assert_eq!(text(&request, "task_id"), Some(task_id.as_str()));
    assert_eq!(int(&request, "http.response.status_code"), Some(200));

    // The attempt is a child of the request (through the stored traceparent), and the webhook
    // carried the attempt's own context.
    assert_eq!(hex(&attempt.parent_span_id), hex(&request.span_id));
    assert_eq!(hex(&attempt.span_id), attempt_span);
    assert_eq!(text(&attempt, "task_id"), Some(task_id.as_str()));
    assert_eq!(int(&attempt, "attempt"), Some(1));
    assert_eq!(text(&attempt, "outcome"), Some("success"));
    assert_eq!(text(&attempt, "priority"), Some("high"));
    assert_eq!(int(&attempt, "http.response.status_code"), Some(200));
    assert_eq!(
        text(&attempt, "target"),
        Some(hook.as_str()),
        "the endpoint without its query"
    );
    server.stop();
}

#[tokio::test]
async fn nothing_is_exported_or_propagated_unless_the_environment_asks() {
    let (collector, spans) = collector().await;
    for env in [
        vec![],
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    ] {
        let (hook, deliveries) = receiver().await;
        let server = Dispatcher::start(&env).await;
        server.create_traced_task(&hook).await;
        let delivered = eventually("the delivery", || {
            deliveries.lock().unwrap().first().cloned()
        })
        .await;
        assert_eq!(delivered.get("traceparent"), None, "with {env:?}");
        // After a graceful exit nothing more can arrive.
        server.stop();
        assert!(spans.lock().unwrap().is_empty(), "with {env:?}");
    }
}
