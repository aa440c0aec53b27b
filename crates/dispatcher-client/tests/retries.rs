//! The client's retries against local stubs, for what the real server will not do on demand
//! (a 503 with `Retry-After`, a refused connection). The tests against the real dispatcher
//! executable are in the dispatcher package (`bins/dispatcher/tests/it/client.rs`), the only
//! place cargo hands a test the executable's path.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use dispatcher_client::{Client, Jitter, RetryPolicy};

const KEY: &str = "client-test-key";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves `app` on a loopback port; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The seed's flat body, delivered to `hook`.
fn flat(hook: &str) -> serde_json::Value {
    let mut body = task_package::examples::seed_flat_request();
    body["webhook_url"] = hook.into();
    body
}

/// A stub answering the scripted `(status, retry-after)` answers in turn, then 200 with a
/// create answer; records each request's `Idempotency-Key`.
async fn stub(script: Vec<(u16, Option<&'static str>)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let calls = Arc::new(AtomicU32::new(0));
    let s = seen.clone();
    let app = Router::new().route(
        "/workflow/tasks",
        post(move |headers: HeaderMap| {
            let (s, calls, script) = (s.clone(), calls.clone(), script.clone());
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                s.lock().unwrap().push(key);
                let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
                match script.get(n) {
                    Some(&(status, retry_after)) => {
                        let mut resp = (
                            StatusCode::from_u16(status).unwrap(),
                            axum::Json(serde_json::json!({
                                "status": "error", "code": "queue_full", "message": "busy"
                            })),
                        )
                            .into_response();
                        if let Some(ra) = retry_after {
                            resp.headers_mut()
                                .insert("retry-after", ra.parse().unwrap());
                        }
                        resp
                    }
                    None => axum::Json(serde_json::json!({
                        "status": "success", "task_id": "wf_1_0000abcd",
                        "message": "Workflow task created and dispatched successfully",
                        "webhook_url": "http://127.0.0.1:9/hook"
                    }))
                    .into_response(),
                }
            }
        }),
    );
    (serve(app).await, seen)
}

fn fast_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
        jitter: Jitter::None,
    }
}

#[tokio::test]
async fn busy_answers_are_retried_honouring_retry_after_with_the_same_key() {
    let (base, seen) = stub(vec![(503, Some("1")), (429, None)]).await;
    let client = Client::builder()
        .base_url(&base)
        .api_key(KEY)
        .retry(fast_retries(3))
        .build()
        .unwrap();
    let started = Instant::now();
    let created = client
        .create_task(flat("http://127.0.0.1:9/hook"))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(created.task_id(), "wf_1_0000abcd");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "503, 429, then 200");
    assert!(
        seen.iter().all(|k| *k == created.idempotency_key),
        "{seen:?}"
    );
}

#[tokio::test]
async fn retries_are_bounded_and_other_4xx_are_never_retried() {
    let (base, seen) = stub(vec![(503, None); 10]).await;
    let client = Client::builder()
        .base_url(&base)
        .retry(fast_retries(2))
        .build()
        .unwrap();
    let e = client
        .create_task(flat("http://127.0.0.1:9/hook"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(e.code(), Some("queue_full"));
    assert!(e.is_retryable());
    assert_eq!(seen.lock().unwrap().len(), 3, "the first try and 2 retries");

    let (base, seen) = stub(vec![(409, None), (400, None)]).await;
    let client = Client::builder()
        .base_url(&base)
        .retry(fast_retries(5))
        .build()
        .unwrap();
    let e = client
        .create_task(flat("http://127.0.0.1:9/hook"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::CONFLICT));
    assert_eq!(seen.lock().unwrap().len(), 1, "a 409 is not retried");

    let (base, seen) = stub(vec![(503, Some("1"))]).await;
    let e = Client::builder()
        .base_url(&base)
        .no_retry()
        .build()
        .unwrap()
        .create_task(flat("http://127.0.0.1:9/hook"))
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn connection_failures_are_retried_then_reported() {
    let port = free_port(); // nothing listens there
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .retry(fast_retries(2))
        .build()
        .unwrap();
    let started = Instant::now();
    let e = client.get_task("wf_1_00000000").await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(e.status(), None);
    // 10 ms + 20 ms of backoff between the three tries.
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert!(!e.to_string().contains(&port.to_string()), "{e}");
}
