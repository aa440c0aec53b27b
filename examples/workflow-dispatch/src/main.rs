//! Run with: cargo run -p example-workflow-dispatch
//!
//! Embeds the dispatcher's core in a program of its own, without its HTTP API: a
//! [`WorkflowManager`] over a SQLite store in a temporary directory creates a task from the
//! seed's sample request and delivers it, signed, to a receiver on `127.0.0.1:0`, which checks
//! the signature and the callback token it was given. Exits 0 once the task is completed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::mpsc;
use webhook_client::{SigningSecret, WebhookClient, verify_headers};
use workflow_core::{Engine, SqliteConfig, SqliteStore, TaskStatus};
use workflow_dispatch::{
    CallbackTokens, WEBHOOK_KIND, WebhookDeliveryHandler, WorkflowConfig, WorkflowManager,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = SigningSecret::generate();
    // The receiver: verifies the signature and hands the package over.
    let (got, mut received) = mpsc::unbounded_channel::<serde_json::Value>();
    let receiver_secret = secret.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let (secret, got) = (receiver_secret.clone(), got.clone());
            async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                if verify_headers(&[secret], &headers, &body, now).is_err() {
                    return StatusCode::UNAUTHORIZED;
                }
                let _ = got.send(serde_json::from_slice(&body).unwrap_or_default());
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let (stop_receiver, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    // The dispatcher's core: a durable store, the delivery handler, the manager.
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("dispatch.db")))?;
    let client = WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse()?]) // the receiver is on loopback
        .build()?;
    let engine = Engine::builder(Arc::new(store))
        .handler(
            WEBHOOK_KIND,
            Arc::new(WebhookDeliveryHandler::new(
                client.clone(),
                vec![secret.clone()],
            )),
        )
        .start();
    let tokens = CallbackTokens::new(&secret);
    let manager = WorkflowManager::new(
        engine.clone(),
        WorkflowConfig {
            public_url: "http://dispatch.invalid".into(),
            ..WorkflowConfig::default()
        },
    )
    .with_callback_tokens(tokens.clone())
    .with_client(client);

    let mut body = task_package::examples::seed_flat_request();
    body["webhook_url"] = hook.into();
    let request = task_package::CreateTaskRequest::from_json_slice(body.to_string().as_bytes())?;
    let created = manager.create_task(&request, None).await?;
    println!("queued {} for {}", created.task.id, created.webhook_url);

    let package = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await?
        .ok_or("the receiver stopped")?;
    let token = package["delivery_instructions"]["callback_token"]
        .as_str()
        .unwrap_or_default();
    assert!(
        tokens.verify(&created.task.id, token),
        "the package carries its callback token"
    );
    println!(
        "receiver: verified package for brand {}",
        package["evidence_data"]["brand_name"]
    );
    // The engine records the attempt after the receiver answers: wait for the final state.
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let view = manager.get_task_status(&created.task.id).await?;
            match view.map(|v| v.task.status) {
                Some(s) if s.is_final() => return Ok::<_, workflow_core::EngineError>(s),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await??;
    println!("task {} is {status}", created.task.id);
    engine.shutdown().await;
    let _ = stop_receiver.send(());
    server.await??;
    if status == TaskStatus::Completed {
        Ok(())
    } else {
        Err(format!("delivery ended {status}").into())
    }
}
