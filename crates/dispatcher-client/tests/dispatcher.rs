//! The client against the real `dispatcher` executable on loopback, plus local stubs for what
//! the real server will not do on demand (a 503 with `Retry-After`).
//!
//! Finding the binary: `CARGO_BIN_EXE_dispatcher` exists only for the dispatcher package's
//! own tests, so the harness runs `cargo build -p dispatcher --bin dispatcher` once per test
//! binary (with the `cargo` running the tests, the same target directory and profile
//! `dev`) and takes the executable's path from cargo's JSON messages. The nested cargo runs
//! without the test process's `CARGO_*` variables, and `dispatcher` is a dev-dependency, so
//! after `cargo test -p dispatcher-client` it only checks fingerprints (well under a second).
//! Under `cargo test --workspace` features are unified over the whole workspace, so the first
//! run builds the dispatcher's subtree once more with the dispatcher's own features (cached
//! afterwards); cargo runs test binaries one at a time, so re-linking `target/debug/dispatcher`
//! cannot race the dispatcher's own tests. A runner that runs binaries in parallel (nextest)
//! should build the binary first and set `DISPATCHER_CLIENT_TEST_BIN` to it, which skips the
//! nested build. (Not `DISPATCHER_BIN`: the dispatcher reads every `DISPATCHER_*` variable as
//! configuration, which is also why the harness clears them for the child.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use dispatcher_client::{
    Client, CreateTaskRequest, ENDPOINTS, Jitter, ListQuery, NewTask, Priority, RetryPolicy,
    SigningSecret, TaskInfo, TaskPackage, VerifyError, verify_webhook,
};
use futures::TryStreamExt as _;

const KEY: &str = "client-test-key";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

// === harness ===

/// The dispatcher executable, built once per test binary (see the module docs).
fn dispatcher_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("DISPATCHER_CLIENT_TEST_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut build = Command::new(cargo);
        // The variables cargo sets for a test process (`CARGO_PKG_*`, `CARGO_MANIFEST_*`,
        // `CARGO_TARGET_TMPDIR`, ...) would make this build's fingerprints differ from a
        // build started from a shell, and each would rebuild what the other built.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let keep = [
                "CARGO_HOME",
                "CARGO_TARGET_DIR",
                "CARGO_BUILD_",
                "CARGO_PROFILE_",
                "CARGO_NET_",
                "CARGO_HTTP_",
                "CARGO_REGISTRIES_",
                "CARGO_REGISTRY_",
                "CARGO_TERM_",
                "CARGO_INCREMENTAL",
            ]
            .iter()
            .any(|k| name.starts_with(k));
            if (name.starts_with("CARGO_") && !keep) || name == "OUT_DIR" {
                build.env_remove(&*name);
            }
        }
        let out = build
            .args(["build", "-p", "dispatcher", "--bin", "dispatcher"])
            .arg("--message-format=json-render-diagnostics")
            .current_dir(&workspace)
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build -p dispatcher --bin dispatcher");
        assert!(out.status.success(), "building the dispatcher failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "dispatcher")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the dispatcher executable")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory, removed on drop (not `tempfile`: see Cargo.toml).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dispatcher-client-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running dispatcher, killed on drop (before its data directory is removed).
struct Dispatcher {
    child: Child,
    base: String,
    _dir: TempDir,
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
        let dir = TempDir::new();
        let port = free_port();
        let mut command = Command::new(dispatcher_bin());
        // The dispatcher reads every `DISPATCHER_*` variable as configuration (and refuses
        // unknown ones): none of the test environment's may reach it.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("DISPATCHER_") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&dir.0)
            .args(["--allowed-target-cidrs", "127.0.0.0/8"])
            .args(["--api-keys", KEY, "--signing-secret", SECRET])
            .args(["--base-retry-delay", "100ms", "--max-retry-delay", "1s"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the dispatcher binary");
        let server = Dispatcher {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = plain_http();
        for _ in 0..500 {
            if http
                .get(format!("{}/healthz", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("dispatcher did not become healthy");
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

/// A bare reqwest client for the harness (the workspace builds reqwest without a default TLS
/// provider; a test process may install one).
fn plain_http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
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
    let doc: serde_json::Value = plain_http()
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

// === retries, against local stubs ===

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
