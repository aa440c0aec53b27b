//! `dispatcher-client` against the real `dispatcher` executable: every client method on
//! loopback, the client's `ENDPOINTS` against the server's `/openapi.json`, and a receiver
//! that verifies deliveries with the client's `verify_webhook`.
//!
//! These live here rather than in the client crate because only this package's tests get the
//! executable's path (`CARGO_BIN_EXE_dispatcher`); the client's retry tests, which need no
//! server, stay in `crates/dispatcher-client/tests/`.

use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use dispatcher_client::{
    Client, CreateTaskRequest, ENDPOINTS, ListQuery, NewTask, Priority, SigningSecret, TaskInfo,
    TaskPackage, VerifyError, verify_webhook,
};
use futures::TryStreamExt as _;

use super::{KEY, SECRET, free_port, http, spawn, wait_healthy};

/// A running dispatcher, killed on drop (before its data directory is removed).
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
    /// The real binary with the test key and secret, fast retries, loopback targets allowed.
    async fn start(extra: &[&str]) -> Dispatcher {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let server = Dispatcher {
            child: spawn(dir.path(), port, extra),
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        wait_healthy(&http(), &server.base).await;
        server
    }

    fn client(&self) -> Client {
        Client::builder()
            .base_url(&self.base)
            .api_key(KEY)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

/// Serves `app` on a loopback port; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A receiver answering `status` after `delay`; returns its hook URL.
async fn receiver(status: StatusCode, delay: Duration) -> String {
    let app = Router::new().route(
        "/hook",
        post(move || async move {
            tokio::time::sleep(delay).await;
            status
        }),
    );
    format!("{}/hook", serve(app).await)
}

/// The seed's flat body, delivered to `hook`.
fn flat(hook: &str) -> serde_json::Value {
    let mut body = task_package::examples::seed_flat_request();
    body["webhook_url"] = hook.into();
    body
}

/// A task package (as a receiver would hold one) addressed to `hook`.
fn package(hook: &str) -> TaskPackage {
    let mut body = task_package::examples::seed_request();
    body["webhook_url"] = hook.into();
    let request = CreateTaskRequest::from_json_slice(body.to_string().as_bytes()).unwrap();
    task_package::create_task_package(&request, chrono::Utc::now())
}

/// Polls until the task's status is one of `statuses`.
async fn wait_for(client: &Client, task_id: &str, statuses: &[&str]) -> TaskInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let task = client.get_task(task_id).await.unwrap();
        if statuses.contains(&task.status.as_str()) {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {task_id} stayed {} (waiting for {statuses:?})",
            task.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === tests against the real dispatcher ===

#[tokio::test]
async fn creates_from_the_flat_form_and_from_a_package_and_follows_them_to_completion() {
    let server = Dispatcher::start(&[]).await;
    let client = server.client();
    let hook = receiver(StatusCode::OK, Duration::ZERO).await;

    let from_flat = client
        .create_task(NewTask::from(flat(&hook)).priority(Priority::High))
        .await
        .unwrap();
    assert_eq!(from_flat.response.status, "success");
    assert_eq!(from_flat.response.webhook_url, hook);
    assert!(!from_flat.replayed);
    assert!(task_package::TaskId::is_valid(from_flat.task_id()));

    let from_package = client
        .create_task(NewTask::from(package(&hook)).priority(Priority::Critical))
        .await
        .unwrap();
    assert_ne!(from_package.task_id(), from_flat.task_id());

    for (created, priority) in [(&from_flat, "high"), (&from_package, "critical")] {
        let task = wait_for(&client, created.task_id(), &["completed"]).await;
        assert_eq!(task.priority, priority);
        assert_eq!(task.webhook_url.as_deref(), Some(hook.as_str()));
        assert_eq!(task.attempts.len(), 1);
        assert_eq!(task.attempts[0].status_code, Some(200));
        assert!(task.completed_at.is_some());
    }
}

#[tokio::test]
async fn list_tasks_streams_every_page_following_the_cursor() {
    let server = Dispatcher::start(&[]).await;
    let client = server.client();
    let hook = receiver(StatusCode::OK, Duration::ZERO).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            client
                .create_task(flat(&hook))
                .await
                .unwrap()
                .response
                .task_id,
        );
    }

    let query = ListQuery {
        limit: Some("2".into()),
        ..ListQuery::default()
    };
    let first = client.list_page(&query).await.unwrap();
    assert_eq!(first.tasks.len(), 2);
    assert!(
        first.next_cursor.is_some(),
        "5 tasks do not fit a page of 2"
    );

    let listed: Vec<TaskInfo> = client.list_tasks(query).try_collect().await.unwrap();
    let listed: Vec<String> = listed.into_iter().map(|t| t.task_id).collect();
    ids.reverse(); // newest first
    assert_eq!(listed, ids);

    let high: Vec<TaskInfo> = client
        .list_tasks(ListQuery {
            priority: Some("high".into()),
            ..ListQuery::default()
        })
        .try_collect()
        .await
        .unwrap();
    assert!(high.is_empty(), "every task was medium");

    let bad = client
        .list_tasks(ListQuery {
            limit: Some("0".into()),
            ..ListQuery::default()
        })
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(reqwest::StatusCode::BAD_REQUEST));
    assert_eq!(bad.field_errors()[0].field, "limit");
}

#[tokio::test]
async fn cancel_stops_a_task_and_retry_queues_a_failed_one_again() {
    let server = Dispatcher::start(&["--max-retries", "0"]).await;
    let client = server.client();

    // A slow, failing receiver: the task is still running or waiting when it is cancelled.
    let slow = receiver(
        StatusCode::INTERNAL_SERVER_ERROR,
        Duration::from_millis(500),
    )
    .await;
    let created = client.create_task(flat(&slow)).await.unwrap();
    let cancelling = client.cancel(created.task_id()).await.unwrap();
    assert_eq!(cancelling.task_id, created.task_id());
    let cancelled = wait_for(&client, created.task_id(), &["cancelled"]).await;
    assert!(cancelled.completed_at.is_some());
    let again = client.cancel(created.task_id()).await.unwrap_err();
    assert_eq!(again.status(), Some(reqwest::StatusCode::CONFLICT));
    assert_eq!(again.code(), Some("already_final"));

    // A failing receiver and no retries: the task fails after one attempt.
    let failing = receiver(StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO).await;
    let created = client.create_task(flat(&failing)).await.unwrap();
    let failed = wait_for(&client, created.task_id(), &["failed"]).await;
    assert_eq!(failed.attempts.len(), 1);
    let queued = client.retry(created.task_id()).await.unwrap();
    assert_ne!(queued.status, "failed");
    let failed = wait_for(&client, created.task_id(), &["failed"]).await;
    assert_eq!(failed.attempts.len(), 2, "the retry made a second attempt");

    // A completed task cannot be retried.
    let ok = receiver(StatusCode::OK, Duration::ZERO).await;
    let created = client.create_task(flat(&ok)).await.unwrap();
    wait_for(&client, created.task_id(), &["completed"]).await;
    let e = client.retry(created.task_id()).await.unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::CONFLICT));
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_same_task() {
    let server = Dispatcher::start(&[]).await;
    let client = server.client();
    let hook = receiver(StatusCode::OK, Duration::ZERO).await;

    let first = client
        .create_task(NewTask::from(flat(&hook)).idempotency_key("order-42"))
        .await
        .unwrap();
    let second = client
        .create_task(NewTask::from(flat(&hook)).idempotency_key("order-42"))
        .await
        .unwrap();
    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(second.idempotency_key, "order-42");
    assert_eq!(first.task_id(), second.task_id());

    // Without a key the client generates a fresh one per call: two calls, two tasks.
    let a = client.create_task(flat(&hook)).await.unwrap();
    let b = client.create_task(flat(&hook)).await.unwrap();
    assert_ne!(a.idempotency_key, b.idempotency_key);
    assert_ne!(a.task_id(), b.task_id());
    // The generated key replays like the caller's.
    let replay = client
        .create_task(NewTask::from(flat(&hook)).idempotency_key(a.idempotency_key.clone()))
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.task_id(), a.task_id());

    let all: Vec<TaskInfo> = client
        .list_tasks(ListQuery::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
}

#[tokio::test]
async fn invalid_fields_come_back_as_field_errors() {
    let server = Dispatcher::start(&[]).await;
    let client = server.client();

    let mut body = flat("not a url");
    body["risk_level"] = "dire".into();
    body.as_object_mut().unwrap().remove("evidence_fragment");
    let e = client.create_task(body).await.unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::BAD_REQUEST));
    assert_eq!(e.code(), Some("validation_failed"));
    assert!(!e.is_retryable());
    let fields: BTreeSet<&str> = e.field_errors().iter().map(|f| f.field.as_str()).collect();
    for field in ["evidence_fragment", "risk_level", "webhook_url"] {
        assert!(fields.contains(field), "{field} missing from {fields:?}");
    }

    let e = client
        .create_task(NewTask::from(flat("http://127.0.0.1:9/hook")).idempotency_key(" "))
        .await
        .unwrap_err();
    assert_eq!(e.field_errors()[0].field, "Idempotency-Key");
}

#[tokio::test]
async fn a_wrong_api_key_is_401_and_an_unknown_task_404() {
    let server = Dispatcher::start(&[]).await;
    let wrong = Client::builder()
        .base_url(&server.base)
        .api_key("guess")
        .build()
        .unwrap();
    let e = wrong.get_task("wf_1_00000000").await.unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::UNAUTHORIZED));
    assert_eq!(e.code(), Some("unauthorized"));
    assert!(!e.is_retryable());
    assert!(!e.to_string().contains("guess"), "{e}");
    let e = wrong.channels().await.unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::UNAUTHORIZED));

    let client = server.client();
    for e in [
        client.get_task("wf_1_00000000").await.unwrap_err(),
        client.cancel("wf_1_00000000").await.unwrap_err(),
        client.retry("wf_1_00000000").await.unwrap_err(),
    ] {
        assert_eq!(e.status(), Some(reqwest::StatusCode::NOT_FOUND), "{e}");
        assert_eq!(e.code(), Some("not_found"));
    }
    assert!(client.channels().await.unwrap().is_empty());
}

#[tokio::test]
async fn deliveries_verify_and_the_callback_closes_the_loop() {
    let server = Dispatcher::start(&[]).await;
    let client = server.client();

    // A receiver that verifies each delivery with `verify_webhook` and hands over the
    // package's callback token.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let secret = SigningSecret::parse(SECRET).unwrap();
                let verified = verify_webhook(&headers, &body, &secret);
                let wrong = verify_webhook(&headers, &body, &SigningSecret::generate());
                let package: TaskPackage = serde_json::from_slice(&body).unwrap();
                let task_id = headers["webhook-id"].to_str().unwrap().to_owned();
                let _ = tx.send((task_id, package, verified, wrong));
                StatusCode::OK
            }
        }),
    );
    let hook = format!("{}/hook", serve(app).await);

    let created = client.create_task(flat(&hook)).await.unwrap();
    let (task_id, package, verified, wrong) =
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(task_id, created.task_id());
    verified.unwrap();
    assert_eq!(wrong, Err(VerifyError::NoMatchingSignature));
    let token = package
        .delivery_instructions
        .callback_token
        .expect("the dispatcher sends a callback token");

    // The callback needs no API key.
    let receiver_side = Client::builder().base_url(&server.base).build().unwrap();
    let e = receiver_side
        .callback(&task_id, "not-the-token", "resolved", None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::UNAUTHORIZED));
    let e = receiver_side
        .callback(&task_id, &token, "done", None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::BAD_REQUEST));
    assert_eq!(e.field_errors()[0].field, "status");

    let reported = receiver_side
        .callback(&task_id, &token, "resolved", Some("handled"))
        .await
        .unwrap();
    let report = reported.callback.expect("the report is shown");
    assert_eq!(report.status, "resolved");
    assert_eq!(report.note.as_deref(), Some("handled"));
    let task = client.get_task(&task_id).await.unwrap();
    assert_eq!(task.callback.unwrap().status, "resolved");
}

#[tokio::test]
async fn client_endpoints_match_the_servers_openapi_paths() {
    let server = Dispatcher::start(&[]).await;
    let doc: serde_json::Value = http()
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Operations routes the client deliberately does not wrap.
    let ops = ["/healthz", "/readyz", "/metrics", "/openapi.json"];
    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if ops.contains(&path.as_str()) {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                served.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    let called: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        called, served,
        "dispatcher_client::ENDPOINTS and the server's /openapi.json differ: add (or drop) a \
         client method for each difference"
    );
}

#[tokio::test]
async fn routes_test_route_and_one_delivery_at_a_time() {
    let ok = receiver(StatusCode::OK, Duration::ZERO).await;
    let failing = receiver(StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dispatcher.toml");
    std::fs::write(
        &file,
        format!(
            "[channels.good]\nkind = \"webhook\"\nurl = \"{ok}\"\n\
             [channels.bad]\nkind = \"webhook\"\nurl = \"{failing}\"\n\
             [[routes]]\nname = \"both\"\nto = [\"good\", \"bad\"]\n"
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let server = Dispatcher::start(&["--config", config, "--max-retries", "0"]).await;
    let client = server.client();

    let routes = client.routes().await.unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!((routes[0].name.as_str(), routes[0].default), ("both", true));
    let mut body = flat("https://unused.example/");
    body.as_object_mut().unwrap().remove("webhook_url");
    let plan = client
        .test_route(NewTask::json(body.clone()))
        .await
        .unwrap();
    assert_eq!(plan.route.as_deref(), Some("both"));
    let targets: Vec<&str> = plan.targets.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(targets, ["good", "bad"]);

    let created = client.create_task(NewTask::json(body)).await.unwrap();
    let id = created.task_id().to_owned();
    let failed = wait_for(&client, &id, &["failed"]).await;
    let status_of = |info: &TaskInfo, target: &str| {
        info.deliveries
            .iter()
            .find(|d| d.target == target)
            .map(|d| d.status.clone())
            .unwrap()
    };
    // Wait for the good one too (it may finish after the bad one failed the task).
    let mut failed = failed;
    for _ in 0..500 {
        if status_of(&failed, "good") == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        failed = client.get_task(&id).await.unwrap();
    }
    assert_eq!(status_of(&failed, "good"), "completed");
    assert_eq!(status_of(&failed, "bad"), "failed");
    // Only the failed delivery can be retried; the delivered one is already final.
    let e = client.retry_delivery(&id, "good").await.unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::CONFLICT));
    let retried = client.retry_delivery(&id, "bad").await.unwrap();
    assert_eq!(status_of(&retried, "good"), "completed");
    wait_for(&client, &id, &["failed"]).await;
    let e = client.cancel_delivery(&id, "good").await.unwrap_err();
    assert_eq!(e.code(), Some("already_final"));
    let e = client.cancel_delivery(&id, "nobody").await.unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::NOT_FOUND));
}
