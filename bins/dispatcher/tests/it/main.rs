//! The dispatcher's own integration tests, in one binary: the router in-process
//! (`router`); preset channels end to end, against local stand-ins for each chat platform
//! that check its wire format and signature (`channels`); and the real `dispatcher`
//! executable (`binary`, `crash`) for what only a real process shows: signals, exit codes,
//! first-start output, SIGKILL recovery, and several processes sharing one PostgreSQL
//! database (`scale_out`), and traces exported over OTLP (`otel`); `dispatcher-client`
//! against the executable (`client`); routing rules and fan-out to real receivers
//! (`routing`); the dashboard in-process (`dashboard`) and in headless
//! Chromium (`browser`); configuration files under hostile input (`config_fuzz`).
//! `tests/config.rs`, a binary of its own because it sets environment variables, tests the
//! configuration's layering and validation.
//!
//! Cross-crate end-to-end tests (receiver, signatures, priorities, retries) are in the
//! workspace's `tests/` package.

mod binary;
mod browser;
mod channels;
mod client;
mod config_fuzz;
mod crash;
mod dashboard;
mod egress;
mod limits;
mod otel;
mod router;
mod routing;
mod scale_out;
mod seed;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;

/// The API key the binary tests configure.
const KEY: &str = "binary-test-key";
/// A fixed signing secret.
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary on `port` with `data_dir`, fast retries and loopback targets allowed.
fn command(data_dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dispatcher"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--allowed-target-cidrs", "127.0.0.0/8"])
        .args(["--base-retry-delay", "100ms", "--max-retry-delay", "1s"])
        .env("RUST_LOG", "warn")
        .env_remove("DISPATCHER_CONFIG")
        .stdin(Stdio::null());
    cmd
}

/// [`command`] with the test key and secret, output discarded.
fn spawn(data_dir: &Path, port: u16, extra: &[&str]) -> Child {
    command(data_dir, port)
        .args(["--api-keys", KEY, "--signing-secret", SECRET])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the dispatcher binary")
}

/// [`spawn`], its stderr kept in `log` for [`stopped_cleanly`] to show.
fn spawn_logged(data_dir: &Path, port: u16, log: &Path) -> Child {
    command(data_dir, port)
        .args(["--api-keys", KEY, "--signing-secret", SECRET])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("create the log file"))
        .spawn()
        .expect("start the dispatcher binary")
}

/// Terminates `child` and checks that it exited with success; if not, the assertion shows how
/// it ended and its log (from [`spawn_logged`]).
fn stopped_cleanly(mut child: Child, log: &Path) {
    terminate(&child);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the dispatcher ended with {status:?}; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// An HTTP client (with the workspace's TLS provider installed, as reqwest is built without one).
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// `GET base + path` with the test key, as JSON.
async fn get_json(http: &reqwest::Client, base: &str, path: &str) -> serde_json::Value {
    http.get(format!("{base}{path}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    for _ in 0..500 {
        if http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("dispatcher did not become healthy");
}

/// Sends SIGTERM (through `kill`, so the tests need no libc binding).
fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// The seed's request body, delivered to `hook`.
fn seed_body(hook: &str) -> String {
    let mut body: serde_json::Value = serde_json::from_str(include_str!(
        "../../../../crates/task-package/tests/golden/seed_request.json"
    ))
    .unwrap();
    body["webhook_url"] = hook.into();
    body.to_string()
}

/// Creates the seed's task to `hook` through the API of the dispatcher at `base`; its id.
async fn create_task(http: &reqwest::Client, base: &str, hook: &str) -> String {
    let created: serde_json::Value = http
        .post(format!("{base}/workflow/tasks"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(seed_body(hook))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no task id in {created}"))
        .to_owned()
}

/// Deliveries seen by the receiver, by task id (the `webhook-id` header).
type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// A receiver on a loopback port counting deliveries by `webhook-id`; returns its hook URL.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let s = s.clone();
            async move {
                let id = headers["webhook-id"]
                    .to_str()
                    .unwrap_or_default()
                    .to_owned();
                *s.lock().unwrap().entry(id).or_default() += 1;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (hook, seen)
}
