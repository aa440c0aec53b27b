//! Run with: cargo run -p example-client --bin example-receiver
//!
//! A receiver for the dispatcher's signed deliveries, in axum: it checks each delivery with
//! [`dispatcher_client::verify_webhook`] (401 if the signature is wrong), answers 200 at once,
//! and reports `resolved` through the dispatcher's callback a moment later, as a real handler
//! would after doing the work. Settings from the environment: `SIGNING_SECRET` (the
//! dispatcher's `whsec_...`, required), `LISTEN` (default `127.0.0.1:3000`, the hook is
//! `/hook`) and `DISPATCHER_URL` (default `http://127.0.0.1:8080`). Stop it with Ctrl-C.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use dispatcher_client::{Client, SigningSecret, TaskPackage, verify_webhook};
use tokio::sync::mpsc;

/// A delivery to report on: the task id and its callback token.
type Report = (String, String);

#[derive(Clone)]
struct AppState {
    secret: SigningSecret,
    reports: mpsc::UnboundedSender<Report>,
}

async fn hook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if let Err(e) = verify_webhook(&headers, &body, &state.secret) {
        eprintln!("refused a delivery: {e}");
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(package) = serde_json::from_slice::<TaskPackage>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let task_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    println!(
        "received {task_id}: {} about {}",
        package.task_type.as_str(),
        package.evidence_data.brand_name
    );
    if let Some(token) = package.delivery_instructions.callback_token {
        // Reported later by the worker: the delivery is acknowledged now.
        let _ = state.reports.send((task_id, token));
    }
    StatusCode::OK
}

/// Reports `resolved` for each delivery, a second after it arrived.
async fn reporter(client: Client, mut reports: mpsc::UnboundedReceiver<Report>) {
    while let Some((task_id, token)) = reports.recv().await {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match client
            .callback(
                &task_id,
                &token,
                "resolved",
                Some("handled by example-receiver"),
            )
            .await
        {
            Ok(task) => println!("reported {task_id} resolved (task is {})", task.status),
            Err(e) => eprintln!("callback for {task_id} failed: {e}"),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = SigningSecret::parse(&std::env::var("SIGNING_SECRET")?)?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let dispatcher =
        std::env::var("DISPATCHER_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned());
    // The callback is authenticated by each task's token: no API key needed.
    let client = Client::builder().base_url(dispatcher).build()?;

    let (tx, rx) = mpsc::unbounded_channel();
    let worker = tokio::spawn(reporter(client, rx));
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(AppState {
            secret,
            reports: tx,
        });
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("receiver listening on http://{listen}/hook");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // The router (and its sender) is gone: the worker reports what is queued, then ends.
    worker.await?;
    Ok(())
}
