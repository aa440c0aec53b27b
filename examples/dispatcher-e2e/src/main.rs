//! Run with: cargo run -p example-dispatcher-e2e
//!
//! The whole closed loop in one process: a dispatcher (temp data dir) and a receiver on
//! loopback. Submits one task per priority, the receiver verifies each signed package and
//! reports back through the callback URL and token it was given, and the final statuses are
//! printed.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use webhook_client::{SigningSecret, verify_headers};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const KEY: &str = "example-key";

async fn receiver(headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let secret = SigningSecret::parse(SECRET).expect("valid secret");
    let verified = verify_headers(&[secret], &headers, &body, now).is_ok();
    let package: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    println!(
        "receiver: got {id} (signature ok: {verified}), brand {}, risk {}",
        package["evidence_data"]["brand_name"], package["evidence_data"]["risk_level"]
    );
    if !verified {
        // Never act on an unsigned or forged package.
        return (StatusCode::UNAUTHORIZED, "bad signature");
    }
    // Report back, as a receiver would once it has handled the task.
    let callback_url = package["delivery_instructions"]["callback_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let token = package["delivery_instructions"]["callback_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = reqwest::Client::new()
            .post(callback_url)
            .header("x-callback-token", token)
            .json(&serde_json::json!({"status": "resolved", "note": "已联系发布者"}))
            .send()
            .await;
        println!(
            "receiver: reported {id} resolved -> {:?}",
            r.map(|r| r.status().as_u16())
        );
    });
    (StatusCode::OK, "accepted")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", hook_listener.local_addr()?);
    tokio::spawn(async move {
        axum::serve(hook_listener, Router::new().route("/hook", post(receiver))).await
    });

    let data = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let config = dispatcher::Config {
        data_dir: data.path().to_path_buf(),
        public_url: Some(base.clone()),
        api_keys: dispatcher::config::OneOrMany(vec![KEY.into()]),
        signing_secret: dispatcher::config::OneOrMany(vec![SECRET.into()]),
        allowed_target_cidrs: dispatcher::config::OneOrMany(vec!["127.0.0.0/8".into()]),
        ..dispatcher::Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dispatcher::run(config, listener, async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let mut ids = vec![];
    for priority in ["low", "medium", "high", "critical"] {
        let mut body = task_package::examples::seed_request();
        body["webhook_url"] = hook.as_str().into();
        body["priority"] = priority.into();
        let r: serde_json::Value = http
            .post(format!("{base}/workflow/tasks"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        println!(
            "client: created {} ({priority}): {}",
            r["task_id"], r["message"]
        );
        ids.push(r["task_id"].as_str().unwrap_or_default().to_owned());
    }
    let mut closed = 0;
    for id in &ids {
        for _ in 0..100 {
            let v: serde_json::Value = http
                .get(format!("{base}/workflow/tasks/{id}"))
                .bearer_auth(KEY)
                .send()
                .await?
                .json()
                .await?;
            if v["task_info"]["callback"]["status"] == "resolved" {
                let t = &v["task_info"];
                println!(
                    "client: {id} {} ({}), attempts {}, callback {} \"{}\"",
                    t["status"],
                    t["priority"],
                    t["attempts"].as_array().map_or(0, Vec::len),
                    t["callback"]["status"],
                    t["callback"]["note"].as_str().unwrap_or("")
                );
                closed += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = stop.send(());
    server.await??;
    if closed != ids.len() {
        return Err(format!("only {closed} of {} loops closed", ids.len()).into());
    }
    println!("all {closed} tasks delivered, verified and reported back");
    Ok(())
}
