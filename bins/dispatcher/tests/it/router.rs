//! The router in-process (`tower::ServiceExt::oneshot`): every error status and validation
//! detail, authentication, callbacks, the OpenAPI document.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::{KEY, SECRET, seed_body};

struct TestApp {
    app: dispatcher::App,
    router: Router,
    _dir: tempfile::TempDir,
}

async fn start_with(edit: impl FnOnce(&mut dispatcher::Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dispatcher::Config {
        data_dir: dir.path().to_path_buf(),
        api_keys: dispatcher::config::OneOrMany(vec![KEY.into(), "second-key".into()]),
        signing_secret: dispatcher::config::OneOrMany(vec![SECRET.into()]),
        allowed_target_cidrs: dispatcher::config::OneOrMany(vec!["127.0.0.0/8".into()]),
        public_url: Some("https://dispatch.example".into()),
        shutdown_grace: Duration::from_millis(200),
        ..dispatcher::Config::default()
    };
    edit(&mut config);
    let app = dispatcher::App::start(&config).await.unwrap();
    TestApp {
        router: app.router(),
        app,
        _dir: dir,
    }
}

async fn start() -> TestApp {
    start_with(|_| {}).await
}

/// A target nobody listens on: deliveries fail and wait for a (long, seed-default) retry.
const DEAD: &str = "http://127.0.0.1:9/hook";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

impl TestApp {
    async fn call(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            json,
        }
    }

    async fn post_json(&self, path: &str, body: impl Into<Body>) -> Answer {
        self.call(
            Request::post(path)
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-type", "application/json")
                .body(body.into())
                .unwrap(),
        )
        .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(
            Request::get(path)
                .header("authorization", format!("Bearer {KEY}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn task_count(&self) -> usize {
        self.get("/workflow/tasks").await.json["tasks"]
            .as_array()
            .unwrap()
            .len()
    }

    async fn stop(self) {
        self.app.shutdown().await;
    }
}

/// The error shape, with `code`; returns the body.
fn assert_error(a: &Answer, status: u16, code: &str) -> Value {
    assert_eq!(a.status.as_u16(), status, "{}", a.json);
    assert_eq!(
        a.headers["content-type"], "application/json",
        "{status} is JSON"
    );
    assert_eq!(a.json["status"], "error", "{}", a.json);
    assert_eq!(a.json["code"], code, "{}", a.json);
    assert!(a.json["message"].as_str().is_some_and(|m| !m.is_empty()));
    a.json.clone()
}

fn fields(v: &Value) -> Vec<String> {
    v["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn create_answers_exactly_the_seed_response_and_the_task_has_every_field() {
    let t = start().await;
    let a = t.post_json("/workflow/tasks", seed_body(DEAD)).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let keys: Vec<&str> = a
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for k in ["status", "task_id", "message", "webhook_url"] {
        assert!(keys.contains(&k), "{k}");
    }
    assert_eq!(a.json["status"], "success");
    assert_eq!(a.json["webhook_url"], DEAD);
    let id = a.json["task_id"].as_str().unwrap();
    assert!(task_package::TaskId::is_valid(id), "{id}");
    assert!(a.headers.contains_key("x-request-id"));

    let got = t.get(&format!("/workflow/tasks/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json["status"], "success");
    let info = &got.json["task_info"];
    assert_eq!(info["task_id"], id);
    assert_eq!(info["priority"], "high");
    for k in [
        "status",
        "completed_at",
        "created_at",
        "updated_at",
        "attempts",
        "retries",
        "next_attempt_at",
        "last_error",
        "callback",
    ] {
        assert!(info.get(k).is_some(), "task_info.{k} missing: {info}");
    }
    t.stop().await;
}

#[tokio::test]
async fn every_invalid_field_is_listed_and_no_task_is_created() {
    let t = start().await;
    let body = json!({
        "task_type": 7,
        "evidence_data": {
            "evidence_fragment": "",
            "associated_url": "not a url",
            "source_name": ["微博"],
            "risk_level": "severe",
            "intervention_script": "x"
        },
        "webhook_url": "ftp://example.com/x",
        "priority": "urgent"
    });
    let a = t.post_json("/workflow/tasks", body.to_string()).await;
    let v = assert_error(&a, 400, "validation_failed");
    let got = fields(&v);
    for f in [
        "task_type",
        "evidence_data.evidence_fragment",
        "evidence_data.associated_url",
        "evidence_data.source_name",
        "evidence_data.risk_level",
        "evidence_data.brand_name",
        "webhook_url",
        "priority",
    ] {
        assert!(got.iter().any(|g| g == f), "{f} not in {got:?}");
    }
    for d in v["details"].as_array().unwrap() {
        assert!(d["reason"].as_str().is_some_and(|r| !r.is_empty()), "{d}");
    }

    // Missing everything.
    let v = assert_error(
        &t.post_json("/workflow/tasks", "{}").await,
        400,
        "validation_failed",
    );
    // `{}` is the seed's flat form with every field missing: named flat.
    let got = fields(&v);
    for f in ["evidence_fragment", "risk_level", "webhook_url"] {
        assert!(got.iter().any(|g| g == f), "{f} not in {got:?}");
    }

    // Malformed JSON, not an object, an unknown preset channel.
    assert_error(
        &t.post_json("/workflow/tasks", r#"{"task_type": "#).await,
        400,
        "malformed_body",
    );
    assert_error(
        &t.post_json("/workflow/tasks", "[1, 2]").await,
        400,
        "malformed_body",
    );
    let mut with_channel: Value = serde_json::from_str(&seed_body(DEAD)).unwrap();
    with_channel["channel"] = "pr-team".into();
    let v = assert_error(
        &t.post_json("/workflow/tasks", with_channel.to_string())
            .await,
        400,
        "validation_failed",
    );
    assert_eq!(fields(&v), ["channel"]);
    // A bad Idempotency-Key: too long, or with characters that are not visible ASCII (what
    // the OpenAPI document says; Schemathesis found a key with an inner space accepted).
    for key in [
        "k".repeat(300),
        "click 42".to_owned(),
        "click\t42".to_owned(),
    ] {
        let a = t
            .call(
                Request::post("/workflow/tasks")
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .header("idempotency-key", key.as_str())
                    .body(Body::from(seed_body(DEAD)))
                    .unwrap(),
            )
            .await;
        let v = assert_error(&a, 400, "validation_failed");
        assert_eq!(fields(&v), ["Idempotency-Key"], "{key:?}");
    }
    // With bad body fields too, one answer names them all.
    let mut bad_body: Value = serde_json::from_str(&seed_body(DEAD)).unwrap();
    bad_body["priority"] = json!("urgent");
    let a = t
        .call(
            Request::post("/workflow/tasks")
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-type", "application/json")
                .header("idempotency-key", "click 42")
                .body(Body::from(bad_body.to_string()))
                .unwrap(),
        )
        .await;
    let v = assert_error(&a, 400, "validation_failed");
    assert_eq!(fields(&v), ["priority", "Idempotency-Key"]);

    assert_eq!(t.task_count().await, 0, "bad input never creates a task");
    t.stop().await;
}

#[tokio::test]
async fn api_key_is_required_on_every_task_route() {
    let t = start().await;
    let routes = [
        ("POST", "/workflow/tasks"),
        ("GET", "/workflow/tasks"),
        ("GET", "/workflow/tasks/wf_1_00000000"),
        ("POST", "/workflow/tasks/wf_1_00000000/cancel"),
        ("POST", "/workflow/tasks/wf_1_00000000/retry"),
    ];
    for (method, path) in routes {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some(&*format!("Basic {KEY}")),
            Some("Bearer "),
        ] {
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let a = t.call(req.body(Body::from(seed_body(DEAD))).unwrap()).await;
            assert_error(&a, 401, "unauthorized");
        }
    }
    // Every configured key works, and the scheme is case-insensitive.
    for auth in ["Bearer second-key", &format!("bearer {KEY}")] {
        let a = t
            .call(
                Request::get("/workflow/tasks")
                    .header("authorization", auth)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(a.status, 200, "{auth}");
    }
    // Operations endpoints are open.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let a = t
            .call(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(a.status, 200, "{path}");
    }
    assert_eq!(t.task_count().await, 0);
    t.stop().await;
}

#[tokio::test]
async fn not_found_method_not_allowed_too_large_and_wrong_media_type() {
    let t = start().await;
    // 404: unknown route, unknown task on each task route.
    let a = t
        .call(Request::get("/nowhere").body(Body::empty()).unwrap())
        .await;
    assert_error(&a, 404, "not_found");
    assert_error(
        &t.get("/workflow/tasks/wf_1_00000000").await,
        404,
        "not_found",
    );
    for action in ["cancel", "retry"] {
        let a = t
            .post_json(&format!("/workflow/tasks/wf_1_00000000/{action}"), "{}")
            .await;
        assert_error(&a, 404, "not_found");
    }
    // 405.
    for (method, path) in [
        ("DELETE", "/workflow/tasks"),
        ("PUT", "/workflow/tasks/wf_1_00000000"),
        ("GET", "/workflow/tasks/wf_1_00000000/cancel"),
        ("POST", "/healthz"),
    ] {
        let a = t
            .call(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .header("authorization", format!("Bearer {KEY}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_error(&a, 405, "method_not_allowed");
    }
    // 413, with and without a Content-Length.
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(dispatcher::BODY_LIMIT));
    assert_error(
        &t.post_json("/workflow/tasks", huge.clone()).await,
        413,
        "payload_too_large",
    );
    let chunks = chunked(huge.as_bytes());
    assert_error(
        &t.post_json("/workflow/tasks", chunks).await,
        413,
        "payload_too_large",
    );
    // 415: a non-JSON content type, or none.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req =
            Request::post("/workflow/tasks").header("authorization", format!("Bearer {KEY}"));
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let a = t.call(req.body(Body::from(seed_body(DEAD))).unwrap()).await;
        assert_error(&a, 415, "unsupported_media_type");
    }
    // `application/json; charset=utf-8` is JSON.
    let a = t
        .call(
            Request::post("/workflow/tasks")
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-type", "application/json; charset=utf-8")
                .body(Body::from(seed_body(DEAD)))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, 200);
    t.stop().await;
}

/// A body without a known length (chunked), so only the streaming limit can stop it.
fn chunked(bytes: &[u8]) -> Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    Body::from_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn query_and_path_rejections_use_the_error_shape() {
    let t = start().await;
    let v = assert_error(
        &t.get("/workflow/tasks?status=done&priority=urgent&limit=5000&cursor=abc")
            .await,
        400,
        "validation_failed",
    );
    assert_eq!(fields(&v), ["status", "priority", "limit", "cursor"]);
    let v = assert_error(
        &t.get("/workflow/tasks?limit=1&limit=2").await,
        400,
        "validation_failed",
    );
    assert_eq!(fields(&v), ["query"]);
    // A path segment that is not UTF-8: axum's own rejection, in our shape.
    assert_error(&t.get("/workflow/tasks/%FF%FE").await, 400, "bad_request");
    t.stop().await;
}

#[tokio::test]
async fn queue_full_is_503_with_retry_after() {
    let t = start_with(|c| c.task_queue_size = 1).await;
    assert_eq!(
        t.post_json("/workflow/tasks", seed_body(DEAD)).await.status,
        200
    );
    let a = t.post_json("/workflow/tasks", seed_body(DEAD)).await;
    assert_error(&a, 503, "queue_full");
    let secs: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(secs >= 1);
    assert_eq!(t.task_count().await, 1, "the refused task was not stored");
    t.stop().await;
}

#[tokio::test]
async fn open_breaker_is_503_with_retry_after_unless_policy_queues() {
    for policy in [
        dispatcher::BreakerOpenPolicy::Reject,
        dispatcher::BreakerOpenPolicy::Queue,
    ] {
        let t = start_with(|c| c.breaker_open_policy = policy).await;
        // Trip the endpoint's breaker the way failed deliveries do.
        let key = webhook_client::endpoint_key(DEAD).unwrap();
        let breaker = t.app.state().manager.client().unwrap().breakers().get(&key);
        for _ in 0..10 {
            if let Ok(permit) = breaker.try_acquire() {
                permit.failure();
            }
        }
        assert!(
            t.app
                .state()
                .manager
                .client()
                .unwrap()
                .breaker_retry_in(DEAD)
                .is_some()
        );
        let a = t.post_json("/workflow/tasks", seed_body(DEAD)).await;
        match policy {
            dispatcher::BreakerOpenPolicy::Reject => {
                assert_error(&a, 503, "target_unavailable");
                let secs: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=30).contains(&secs), "{secs}");
                assert_eq!(t.task_count().await, 0);
            }
            dispatcher::BreakerOpenPolicy::Queue => {
                assert_eq!(a.status, 200, "{}", a.json);
            }
        }
        // Other targets are unaffected.
        let other = t
            .post_json("/workflow/tasks", seed_body("http://127.0.0.2:9/hook"))
            .await;
        assert_eq!(other.status, 200);
        t.stop().await;
    }
}

#[tokio::test]
async fn callback_needs_the_tasks_token_and_a_valid_status() {
    let t = start().await;
    let id = t.post_json("/workflow/tasks", seed_body(DEAD)).await.json["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tokens = t.app.state().manager.callback_tokens().unwrap().clone();
    let token = tokens.token(&id);
    let path = format!("/workflow/tasks/{id}/callback");
    let send = |token_header: Option<&str>, body: Value| {
        let mut req = Request::post(&path).header("content-type", "application/json");
        if let Some(tok) = token_header {
            req = req.header("x-callback-token", tok);
        }
        t.call(req.body(Body::from(body.to_string())).unwrap())
    };
    // 401: missing, wrong, another task's token; the API key is not a callback token.
    assert_error(
        &send(None, json!({"status": "resolved"})).await,
        401,
        "unauthorized",
    );
    assert_error(
        &send(Some("forged"), json!({"status": "resolved"})).await,
        401,
        "unauthorized",
    );
    let other = tokens.token("wf_1_00000000");
    assert_error(
        &send(None, json!({"status": "resolved", "callback_token": other})).await,
        401,
        "unauthorized",
    );
    assert_error(
        &send(Some(KEY), json!({"status": "resolved"})).await,
        401,
        "unauthorized",
    );
    // 400: every invalid field.
    let v = assert_error(
        &send(Some(&token), json!({"status": "done", "note": 5})).await,
        400,
        "validation_failed",
    );
    assert_eq!(fields(&v), ["status", "note"]);
    let v = assert_error(
        &send(Some(&token), json!({})).await,
        400,
        "validation_failed",
    );
    assert_eq!(fields(&v), ["status"]);
    // 404: a valid token for a task that does not exist.
    let ghost = "wf_1_0000abcd";
    let a = t
        .call(
            Request::post(format!("/workflow/tasks/{ghost}/callback"))
                .header("content-type", "application/json")
                .header("x-callback-token", tokens.token(ghost))
                .body(Body::from(r#"{"status":"accepted"}"#))
                .unwrap(),
        )
        .await;
    assert_error(&a, 404, "not_found");
    // Recorded with the token in the header or in the body; the latest one is shown.
    let a = send(Some(&token), json!({"status": "in_progress"})).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let a = send(
        None,
        json!({"status": "resolved", "note": "已私信用户", "callback_token": token}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let info = &t.get(&format!("/workflow/tasks/{id}")).await.json["task_info"];
    assert_eq!(info["callback"]["status"], "resolved");
    assert_eq!(info["callback"]["note"], "已私信用户");
    assert!(info["callback"]["at"].is_string());
    t.stop().await;
}

#[tokio::test]
async fn cancel_then_retry_and_conflicts() {
    let t = start().await;
    let id = t.post_json("/workflow/tasks", seed_body(DEAD)).await.json["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = t
        .post_json(&format!("/workflow/tasks/{id}/cancel"), "")
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    // Cancelling may wait for an attempt in flight; it ends cancelled either way.
    let mut status = Value::Null;
    for _ in 0..200 {
        status = t.get(&format!("/workflow/tasks/{id}")).await.json["task_info"]["status"].clone();
        if status == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, "cancelled");
    assert_error(
        &t.post_json(&format!("/workflow/tasks/{id}/cancel"), "")
            .await,
        409,
        "already_final",
    );
    let a = t
        .post_json(&format!("/workflow/tasks/{id}/retry"), "")
        .await;
    assert_eq!(a.status, 200, "a cancelled task can be retried: {}", a.json);
    let a = t
        .post_json(&format!("/workflow/tasks/{id}/retry"), "")
        .await;
    assert_error(&a, 409, "invalid_state");
    t.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_task() {
    let t = start().await;
    let send = || {
        t.call(
            Request::post("/workflow/tasks")
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-type", "application/json")
                .header("idempotency-key", "click-42")
                .body(Body::from(seed_body(DEAD)))
                .unwrap(),
        )
    };
    let first = send().await;
    let second = send().await;
    assert_eq!(first.json["task_id"], second.json["task_id"]);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(t.task_count().await, 1);
    assert_eq!(
        first.json["message"],
        "Workflow task created and dispatched successfully"
    );
    // A replay with another URL answers the stored task's URL, not the new request's.
    let other = t
        .call(
            Request::post("/workflow/tasks")
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-type", "application/json")
                .header("idempotency-key", "click-42")
                .body(Body::from(seed_body("http://127.0.0.2:9/other")))
                .unwrap(),
        )
        .await;
    assert_eq!(other.json["task_id"], first.json["task_id"]);
    assert_eq!(other.json["webhook_url"], DEAD);
    assert_eq!(t.task_count().await, 1);
    t.stop().await;
}

#[tokio::test]
async fn list_filters_by_status_priority_and_target_with_cursor_paging() {
    let app = start().await;
    let t = &app;
    let mut ids = vec![];
    for (p, url) in [
        ("low", DEAD),
        ("high", DEAD),
        ("low", "http://127.0.0.2:9/hook"),
        ("critical", DEAD),
        ("low", DEAD),
    ] {
        let mut body: Value = serde_json::from_str(&seed_body(url)).unwrap();
        body["priority"] = p.into();
        let a = t.post_json("/workflow/tasks", body.to_string()).await;
        ids.push(a.json["task_id"].as_str().unwrap().to_owned());
    }
    let page = |q: String| async move { t.get(&format!("/workflow/tasks?{q}")).await };
    let ids_of = |v: &Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["task_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let low = page("priority=LOW".to_owned()).await.json;
    assert_eq!(
        ids_of(&low),
        [ids[4].as_str(), &ids[2], &ids[0]],
        "newest first"
    );
    let target = page("target=http://127.0.0.2:9".to_owned()).await.json;
    assert_eq!(ids_of(&target), [ids[2].as_str()]);
    let first = page("limit=2".to_owned()).await.json;
    assert_eq!(ids_of(&first), [ids[4].as_str(), &ids[3]]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = page(format!("limit=2&cursor={cursor}")).await.json;
    assert_eq!(ids_of(&second), [ids[2].as_str(), &ids[1]]);
    let none = page("status=completed".to_owned()).await.json;
    assert!(ids_of(&none).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn openapi_lists_every_route_and_every_listed_route_exists() {
    let t = start().await;
    let spec = t
        .call(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .json;
    let paths = spec["paths"].as_object().unwrap();
    let routes = [
        ("post", "/workflow/tasks"),
        ("get", "/workflow/tasks"),
        ("get", "/workflow/tasks/{task_id}"),
        ("post", "/workflow/tasks/{task_id}/cancel"),
        ("post", "/workflow/tasks/{task_id}/retry"),
        ("post", "/workflow/tasks/{task_id}/callback"),
        ("get", "/workflow/channels"),
        ("get", "/workflow/routes"),
        ("post", "/workflow/routes/test"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    for (method, path) in routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from openapi.json"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        routes.len(),
        "openapi.json documents a route that is not tested here"
    );
    // Each documented operation is routed: asking it never hits the route fallback or 405.
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let uri = path.replace("{task_id}", "wf_1_00000000");
            let a = t
                .call(
                    Request::builder()
                        .method(method.to_uppercase().as_str())
                        .uri(&uri)
                        .header("authorization", format!("Bearer {KEY}"))
                        .header("content-type", "application/json")
                        .body(Body::from("{}"))
                        .unwrap(),
                )
                .await;
            assert_ne!(a.status, 405, "{method} {path}");
            assert_ne!(a.json["message"], "route not found", "{method} {path}");
        }
    }
    // The seed example is in the request schema.
    assert_eq!(
        spec["components"]["schemas"]["CreateTaskBody"]["example"]["priority"],
        "high"
    );
    t.stop().await;
}

#[tokio::test]
async fn metrics_readiness_and_request_ids() {
    let t = start().await;
    t.post_json("/workflow/tasks", seed_body(DEAD)).await;
    let resp = t
        .router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("workflow_tasks_created_total"), "{text}");
    let a = t
        .call(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(a.json["status"], "ready");
    // A client's request id is echoed; otherwise one is made.
    let a = t
        .call(
            Request::get("/healthz")
                .header("x-request-id", "req-7")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.headers["x-request-id"], "req-7");
    t.stop().await;
}
