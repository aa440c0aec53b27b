//! Run with: cargo run -p example-workflow-core
//!
//! An engine on a SQLite file with a handler that fails twice and then succeeds, retrying on a
//! short schedule. Prints every event, then the task's attempts as stored.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use workflow_core::{
    AttemptContext, Engine, EngineConfig, ExponentialBackoff, Handler, HandlerOutcome, Jitter,
    NewTask, Priority, SqliteStore, Store, Task,
};

struct FlakyReceiver;

#[async_trait]
impl Handler for FlakyReceiver {
    async fn handle(&self, task: &Task, ctx: AttemptContext) -> HandlerOutcome {
        if ctx.attempt < 3 {
            HandlerOutcome::retryable(format!("HTTP 503 on attempt {}", ctx.attempt))
                .with_status(Some(503))
        } else {
            HandlerOutcome::success_with(serde_json::json!({"delivered": task.id}))
                .with_status(Some(200))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_path(dir.path().join("example.db"))?);
    let engine = Engine::builder(store.clone())
        .handler("webhook", Arc::new(FlakyReceiver))
        .config(EngineConfig {
            // The delays between attempts; how many a task gets is its own `max_attempts`.
            backoff: ExponentialBackoff::try_new(
                Duration::from_millis(200),
                Duration::from_secs(2),
                Jitter::None,
            )?,
            ..EngineConfig::default()
        })
        .start();
    let mut events = engine.subscribe();
    engine
        .enqueue(NewTask {
            id: "wf_1732435200_0a1b2c3d".into(),
            kind: "webhook".into(),
            priority: Priority::High,
            payload: serde_json::json!({"note": "any JSON the handler needs"}),
            target: Some("https://receiver.example:443".into()),
            max_attempts: 4,
            run_at: chrono::Utc::now(),
            idempotency_key: None,
        })
        .await?;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await??;
        println!("{}", serde_json::to_string(&event)?);
        if matches!(event, workflow_core::EngineEvent::StatusChanged { to, .. } if to.is_final()) {
            break;
        }
    }
    for a in store.attempts("wf_1732435200_0a1b2c3d").await? {
        println!(
            "attempt {}: {} {:?} {:?}",
            a.n, a.outcome, a.status_code, a.error
        );
    }
    engine.shutdown().await;
    Ok(())
}
