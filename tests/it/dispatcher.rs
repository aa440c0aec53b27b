//! The dispatcher end to end: real HTTP on loopback, a real SQLite file, a local receiver.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use integration_tests::{API_KEY, Dispatcher, Receiver, SEED_REQUEST, test_config};

fn seed_for(url: &str) -> serde_json::Value {
    let mut body: serde_json::Value = serde_json::from_str(SEED_REQUEST).unwrap();
    body["webhook_url"] = url.into();
    body
}

#[tokio::test]
async fn seed_request_round_trip_delivers_the_exact_signed_package() {
    let rx = Receiver::ok().await;
    let d = Dispatcher::start(test_config()).await;
    let r = d
        .post("/workflow/tasks", &seed_for(&rx.url()).to_string())
        .await;
    assert_eq!(r.status(), 200);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(created["status"], "success");
    assert_eq!(created["webhook_url"], rx.url());
    let id = created["task_id"].as_str().unwrap().to_owned();
    assert!(task_package::TaskId::is_valid(&id), "{id}");
    assert!(created["message"].is_string());

    let got = rx.wait_for(1).await;
    assert_eq!(got.len(), 1);
    let delivery = &got[0];
    assert_eq!(delivery.id, id, "webhook-id is the task id");
    assert!(
        delivery.signature_ok,
        "signature verifies with the receiver's check"
    );
    let pkg = &delivery.body;
    let mut top: Vec<&str> = pkg
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    top.sort_unstable();
    assert_eq!(
        top,
        [
            "delivery_instructions",
            "evidence_data",
            "metadata",
            "task_type"
        ],
        "the seed's package, nothing else"
    );
    let seed: serde_json::Value = serde_json::from_str(SEED_REQUEST).unwrap();
    assert_eq!(pkg["task_type"], "negative_evidence_intervention");
    assert_eq!(
        pkg["evidence_data"], seed["evidence_data"],
        "every evidence field as sent"
    );
    assert_eq!(pkg["delivery_instructions"]["webhook_url"], rx.url());
    assert_eq!(
        pkg["delivery_instructions"]["delivery_format"],
        "standard_payload"
    );
    assert_eq!(pkg["delivery_instructions"]["callback_required"], true);
    assert_eq!(pkg["metadata"]["version"], "1.0");
    assert!(
        pkg["metadata"]["created_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let callback_url = pkg["delivery_instructions"]["callback_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        callback_url,
        format!("{}/workflow/tasks/{id}/callback", d.base)
    );
    let token = pkg["delivery_instructions"]["callback_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let info = d.wait_status(&id, "completed").await;
    assert!(info["completed_at"].is_string());
    assert_eq!(info["priority"], "high");
    assert_eq!(info["attempts"][0]["status_code"], 200);

    // The receiver closes the loop with the token it was given; no API key needed.
    let http = reqwest::Client::new();
    let wrong = http
        .post(&callback_url)
        .header("x-callback-token", "forged")
        .json(&serde_json::json!({"status": "resolved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let wrong_bearer = http
        .post(&callback_url)
        .bearer_auth("forged")
        .json(&serde_json::json!({"status": "resolved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_bearer.status(), 401);
    // What a receiver's HTTP client tries first: the token as a Bearer credential.
    let accepted = http
        .post(&callback_url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"status": "accepted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let ok = http
        .post(&callback_url)
        .header("x-callback-token", &token)
        .json(&serde_json::json!({"status": "resolved", "note": "已私信用户并补偿"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad_status = http
        .post(&callback_url)
        .json(&serde_json::json!({"status": "done", "callback_token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_status.status(), 400);
    let (_, v) = d.get(&format!("/workflow/tasks/{id}")).await;
    assert_eq!(v["task_info"]["status"], "completed");
    assert_eq!(v["task_info"]["callback"]["status"], "resolved");
    assert_eq!(v["task_info"]["callback"]["note"], "已私信用户并补偿");
    d.stop().await;
}

#[tokio::test]
async fn retries_with_short_delays_until_success() {
    let rx = Receiver::start(Arc::new(|_, n| {
        if n < 3 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }))
    .await;
    let d = Dispatcher::start(test_config()).await;
    let id = d.create(&rx.url(), "medium").await;
    let info = d.wait_status(&id, "completed").await;
    let codes: Vec<_> = info["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [503, 503, 200]);
    assert_eq!(info["retries"], 2);
    assert!(
        rx.deliveries().iter().all(|d| d.id == id),
        "same webhook-id on every retry"
    );
    d.stop().await;
}

#[tokio::test]
async fn fails_after_max_retries_with_every_attempt_recorded() {
    let rx = Receiver::start(Arc::new(|_, _| StatusCode::INTERNAL_SERVER_ERROR)).await;
    let mut config = test_config();
    config.max_retries = 2;
    let d = Dispatcher::start(config).await;
    let id = d.create(&rx.url(), "low").await;
    let info = d.wait_status(&id, "failed").await;
    assert_eq!(info["attempts"].as_array().unwrap().len(), 3);
    assert!(
        info["last_error"]
            .as_str()
            .unwrap()
            .contains("attempts exhausted")
    );
    // Retry-now gives it a fresh budget.
    let r = d.post(&format!("/workflow/tasks/{id}/retry"), "{}").await;
    assert_eq!(r.status(), 200);
    let r = d.post(&format!("/workflow/tasks/{id}/retry"), "{}").await;
    assert_eq!(r.status(), 409, "only failed tasks can be retried");
    d.stop().await;
}

#[tokio::test]
async fn answers_503_with_retry_after_while_the_targets_breaker_is_open() {
    let rx = Receiver::start(Arc::new(|_, _| StatusCode::BAD_GATEWAY)).await;
    let mut config = test_config();
    config.max_retries = 0;
    // Long enough that the breaker is still open when the next request comes, however slow.
    config.breaker_open_wait = Duration::from_secs(30);
    let d = Dispatcher::start(config).await;
    // Five consecutive failures open the breaker.
    for _ in 0..5 {
        let id = d.create(&rx.url(), "medium").await;
        d.wait_status(&id, "failed").await;
    }
    let r = d
        .post("/workflow/tasks", &seed_for(&rx.url()).to_string())
        .await;
    assert_eq!(r.status(), 503);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "target_unavailable");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn higher_priorities_are_delivered_first_under_load() {
    let rx = Receiver::ok().await;
    let mut config = test_config();
    config.max_in_flight = 1;
    config.delivery_timeout = Duration::from_secs(60);
    let d = Dispatcher::start(config).await;
    // Park the single worker on a first delivery that is held until the whole backlog is in,
    // so the order below depends on priorities only, not on how fast this machine is.
    let release = Arc::new(AtomicBool::new(false));
    let gate = release.clone();
    let slow = Receiver::start(Arc::new(move |_, _| {
        for _ in 0..4000 {
            if gate.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        StatusCode::OK
    }))
    .await;
    let blocker = d.create(&slow.url(), "critical").await;
    slow.wait_for(1).await;
    let priorities = ["low", "medium", "high", "critical"];
    let mut ids = std::collections::HashMap::new();
    for i in 0..120 {
        // A fixed shuffle: each priority 30 times, interleaved irregularly.
        let p = priorities[(i * 7 + i / 5) % 4];
        ids.insert(d.create(&rx.url(), p).await, (p, i));
    }
    release.store(true, Ordering::SeqCst);
    d.wait_status(&blocker, "completed").await;
    let got = rx.wait_for(ids.len()).await;
    assert_eq!(got.len(), ids.len());
    let rank = |p: &str| priorities.iter().position(|x| *x == p).unwrap();
    let order: Vec<(usize, usize)> = got
        .iter()
        .map(|g| {
            let (p, i) = ids[&g.id];
            (rank(p), i)
        })
        .collect();
    // Highest priority first; within a priority, in the order accepted.
    let mut want = order.clone();
    want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(order, want);
    d.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_task() {
    let rx = Receiver::ok().await;
    let d = Dispatcher::start(test_config()).await;
    let send = || {
        d.http
            .post(format!("{}/workflow/tasks", d.base))
            .bearer_auth(API_KEY)
            .header("idempotency-key", "click-42")
            .json(&seed_for(&rx.url()))
            .send()
    };
    let a: serde_json::Value = send().await.unwrap().json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let b: serde_json::Value = second.json().await.unwrap();
    assert_eq!(a["task_id"], b["task_id"]);
    rx.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.deliveries().len(), 1);
    d.stop().await;
}

#[tokio::test]
async fn every_error_status_has_the_json_shape() {
    let d = Dispatcher::start(test_config()).await;
    let http = &d.http;
    let url = |p: &str| format!("{}{p}", d.base);
    let check = |r: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(r.status().as_u16(), status, "{code}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["code"], code);
        assert!(v["message"].is_string());
        v
    };
    // 401: missing and wrong keys.
    check(
        http.get(url("/workflow/tasks")).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    check(
        http.get(url("/workflow/tasks"))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // 400: every invalid field named.
    let v = check(
        d.post("/workflow/tasks", r#"{"task_type":"negative_evidence_intervention","evidence_data":{"associated_url":"nope","risk_level":"severe"},"webhook_url":"ftp://x","priority":"urgent"}"#).await,
        400,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    for f in [
        "evidence_data.evidence_fragment",
        "evidence_data.associated_url",
        "evidence_data.risk_level",
        "webhook_url",
        "priority",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    check(
        d.post("/workflow/tasks", "{not json").await,
        400,
        "malformed_body",
    )
    .await;
    check(
        d.post("/workflow/tasks", r#"{"task_type": 5}"#).await,
        400,
        "validation_failed",
    )
    .await;
    let mut with_channel = seed_for("https://a.example/x");
    with_channel["channel"] = "pr-team".into();
    check(
        d.post("/workflow/tasks", &with_channel.to_string()).await,
        400,
        "validation_failed",
    )
    .await;
    // 404, 405.
    check(
        http.get(url("/workflow/tasks/wf_1_deadbeef"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    check(
        http.get(url("/nowhere")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    check(
        http.delete(url("/workflow/tasks"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    // 413, 415.
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    check(
        d.post("/workflow/tasks", &huge).await,
        413,
        "payload_too_large",
    )
    .await;
    let r = http
        .post(url("/workflow/tasks"))
        .bearer_auth(API_KEY)
        .header("content-type", "text/plain")
        .body(SEED_REQUEST)
        .send()
        .await
        .unwrap();
    check(r, 415, "unsupported_media_type").await;
    // 400 on list filters.
    let v = check(
        http.get(url("/workflow/tasks?status=done&priority=x&limit=0"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap(),
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(v["details"].as_array().unwrap().len(), 3);
    // Nothing above created a task.
    let (_, list) = d.get("/workflow/tasks").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 0);
    d.stop().await;
}

#[tokio::test]
async fn queue_full_is_503_with_retry_after() {
    let mut config = test_config();
    config.task_queue_size = 2;
    let d = Dispatcher::start(config).await;
    // A target that is never reachable keeps tasks waiting (connection refused, long retries).
    let mut cfg_body = seed_for("http://127.0.0.1:9/hook");
    cfg_body["priority"] = "low".into();
    assert_eq!(
        d.post("/workflow/tasks", &cfg_body.to_string())
            .await
            .status(),
        200
    );
    assert_eq!(
        d.post("/workflow/tasks", &cfg_body.to_string())
            .await
            .status(),
        200
    );
    let r = d.post("/workflow/tasks", &cfg_body.to_string()).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "queue_full");
    d.stop().await;
}

#[tokio::test]
async fn list_pages_and_cancel() {
    let d = Dispatcher::start(test_config()).await;
    let mut ids = vec![];
    for _ in 0..5 {
        // Unreachable target: tasks wait in retrying.
        ids.push(d.create("http://127.0.0.1:9/hook", "low").await);
    }
    let (s, page) = d.get("/workflow/tasks?limit=2").await;
    assert_eq!(s, 200);
    assert_eq!(page["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(page["tasks"][0]["task_id"], ids[4].as_str());
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, next) = d
        .get(&format!("/workflow/tasks?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(next["tasks"][0]["task_id"], ids[2].as_str());
    let (_, low) = d.get("/workflow/tasks?priority=LOW").await;
    assert_eq!(low["tasks"].as_array().unwrap().len(), 5);

    let r = d
        .post(&format!("/workflow/tasks/{}/cancel", ids[0]), "{}")
        .await;
    assert_eq!(r.status(), 200);
    d.wait_status(&ids[0], "cancelled").await;
    let again = d
        .post(&format!("/workflow/tasks/{}/cancel", ids[0]), "{}")
        .await;
    assert_eq!(again.status(), 409);
    let missing = d.post("/workflow/tasks/wf_1_00000000/cancel", "{}").await;
    assert_eq!(missing.status(), 404);
    d.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi() {
    let rx = Receiver::ok().await;
    let d = Dispatcher::start(test_config()).await;
    let id = d.create(&rx.url(), "high").await;
    d.wait_status(&id, "completed").await;
    let get = |p: &str| d.http.get(format!("{}{p}", d.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("workflow_attempts_total"), "{metrics}");
    assert!(metrics.contains("workflow_tasks_created_total"));
    let spec: serde_json::Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for p in [
        "/workflow/tasks",
        "/workflow/tasks/{task_id}",
        "/workflow/tasks/{task_id}/cancel",
        "/workflow/tasks/{task_id}/retry",
        "/workflow/tasks/{task_id}/callback",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} missing from openapi.json");
    }
    assert!(
        paths["/workflow/tasks"].get("post").is_some()
            && paths["/workflow/tasks"].get("get").is_some()
    );
    d.stop().await;
}

#[tokio::test]
async fn restart_on_the_same_data_dir_delivers_everything_accepted() {
    // The receiver is failing while the first instance accepts tasks; the instance stops, the
    // receiver recovers, a second instance on the same data dir delivers every task.
    let up = Arc::new(AtomicBool::new(false));
    let flag = up.clone();
    let rx = Receiver::start(Arc::new(move |_, _| {
        if flag.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }))
    .await;
    let mut config = test_config();
    // Enough attempts that no task can fail for good however slow this machine is, and new
    // tasks are queued (not refused) once the failing target's breaker opens.
    config.max_retries = 1000;
    config.breaker_open_policy = dispatcher::BreakerOpenPolicy::Queue;
    let d = Dispatcher::start(config.clone()).await;
    let mut ids = vec![];
    for _ in 0..20 {
        ids.push(d.create(&rx.url(), "medium").await);
    }
    let dir = d.stop().await;
    let failed_before = rx.deliveries().len();
    up.store(true, Ordering::SeqCst);

    let d = Dispatcher::start_in(config, dir).await;
    for id in &ids {
        d.wait_status(id, "completed").await;
    }
    let mut got: Vec<String> = rx.deliveries()[failed_before..]
        .iter()
        .map(|d| d.id.clone())
        .collect();
    got.sort();
    got.dedup();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "every accepted task delivered after the restart");
    d.stop().await;
}
