//! The real binary killed with SIGKILL under load and restarted on the same SQLite file
//! delivers every task it accepted.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use parking_lot_shim::Counts;

const KEY: &str = "crash-test-key";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

mod parking_lot_shim {
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Deliveries per task id.
    #[derive(Default)]
    pub(crate) struct Counts(pub(crate) Mutex<HashMap<String, u32>>);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(data_dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--api-keys",
            KEY,
            "--signing-secret",
            SECRET,
            "--allowed-target-cidrs",
            "127.0.0.0/8",
        ])
        .args([
            "--base-retry-delay",
            "100ms",
            "--max-retry-delay",
            "1s",
            "--max-retries",
            "20",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the dispatcher binary")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_then_restart_delivers_every_accepted_task() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let c = c.clone();
            async move {
                let id = headers["webhook-id"]
                    .to_str()
                    .unwrap_or_default()
                    .to_owned();
                *c.0.lock().unwrap().entry(id).or_default() += 1;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut child = spawn(dir.path(), port);
    wait_healthy(&http, &base).await;

    let mut body: serde_json::Value = serde_json::from_str(include_str!(
        "../../../crates/task-package/tests/golden/seed_request.json"
    ))
    .unwrap();
    body["webhook_url"] = hook.clone().into();
    let body = body.to_string();
    let accepted = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut submitters = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (http, base, body, accepted) =
            (http.clone(), base.clone(), body.clone(), accepted.clone());
        submitters.spawn(async move {
            for _ in 0..250 {
                let r = http
                    .post(format!("{base}/workflow/tasks"))
                    .bearer_auth(KEY)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: serde_json::Value = r.json().await.unwrap();
                        accepted
                            .lock()
                            .unwrap()
                            .push(v["task_id"].as_str().unwrap().to_owned());
                    }
                    // The process died mid-request: not accepted as far as the client knows.
                    _ => break,
                }
            }
        });
    }
    // Kill it while submissions and deliveries are in full swing.
    while accepted.lock().unwrap().len() < 600 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    while submitters.join_next().await.is_some() {}
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    let delivered_before = counts.0.lock().unwrap().len();
    assert!(accepted.len() >= 600);

    let mut child = spawn(dir.path(), port);
    wait_healthy(&http, &base).await;
    let mut missing = accepted.len();
    for _ in 0..1500 {
        missing = {
            let seen = counts.0.lock().unwrap();
            accepted.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().ok();
    child.wait().ok();
    let seen: HashMap<String, u32> = counts.0.lock().unwrap().clone();
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    println!(
        "accepted {}, delivered before the kill {}, delivered in all {}, duplicates {}",
        accepted.len(),
        delivered_before,
        seen.len(),
        duplicates
    );
    assert_eq!(missing, 0, "accepted tasks never delivered after restart");
}
