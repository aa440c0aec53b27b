//! Run with: cargo run --release -p example-engine-throughput -- [TASKS] [PRELOAD] [memory|sqlite]
//!
//! Measures the engine alone: tasks are enqueued in batches of 100 by 4 producers while the
//! engine claims and completes them with a handler that succeeds at once. Prints tasks/s end to
//! end and the enqueue-to-start latency percentiles. PRELOAD final tasks are written first, to
//! see how the figures change with a larger table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use workflow_core::{
    AttemptContext, Engine, EngineConfig, EnqueueLimits, Handler, HandlerOutcome, MemoryStore,
    NewTask, Priority, SqliteStore, Store, Task,
};

struct Instant0 {
    latencies: std::sync::Mutex<Vec<i64>>,
}

#[async_trait]
impl Handler for Instant0 {
    async fn handle(&self, task: &Task, _ctx: AttemptContext) -> HandlerOutcome {
        let waited = (chrono::Utc::now() - task.created_at)
            .num_microseconds()
            .unwrap_or(0);
        self.latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(waited);
        HandlerOutcome::success()
    }
}

fn task(i: usize, prefix: &str) -> NewTask {
    NewTask {
        id: format!("{prefix}{i:09}"),
        kind: "bench".into(),
        priority: Priority::ALL[i % 4],
        payload: serde_json::json!({"n": i}),
        target: Some(format!("https://t{}.example:443", i % 16)),
        max_attempts: 4,
        run_at: chrono::Utc::now(),
        idempotency_key: None,
    }
}

fn pct(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let preload: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let backend = args.get(3).map_or("sqlite", String::as_str).to_owned();
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = match backend.as_str() {
        "memory" => Arc::new(MemoryStore::new()),
        _ => Arc::new(SqliteStore::open_path(dir.path().join("bench.db"))?),
    };
    if preload > 0 {
        // Final rows: they sit in the table and indexes like a long-running service's history.
        let t = Instant::now();
        for chunk in (0..preload).collect::<Vec<_>>().chunks(1000) {
            let batch = chunk.iter().map(|i| task(*i, "old")).collect();
            store.enqueue_batch(batch, EnqueueLimits::default()).await?;
            let claimed = store
                .claim_due(
                    "preload",
                    chrono::Utc::now(),
                    Duration::from_secs(60),
                    1000,
                    &[],
                )
                .await?;
            for t in claimed {
                store
                    .finish_attempt(
                        &workflow_core::Fence::of(&t),
                        Default::default(),
                        workflow_core::Completion::Succeeded { result: None },
                        chrono::Utc::now(),
                    )
                    .await?;
            }
        }
        println!(
            "preloaded {preload} final tasks in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    let handler = Arc::new(Instant0 {
        latencies: std::sync::Mutex::new(Vec::with_capacity(n)),
    });
    let engine = Engine::builder(store.clone())
        .handler("bench", handler.clone())
        .config(EngineConfig {
            batch_size: 256,
            max_in_flight: 1024,
            per_target_in_flight: 1024,
            gauge_interval: Duration::from_secs(3600),
            ..EngineConfig::default()
        })
        .start();
    let started = Instant::now();
    let producers = 4;
    let mut set = tokio::task::JoinSet::new();
    for p in 0..producers {
        let engine = engine.clone();
        set.spawn(async move {
            let ids: Vec<usize> = (0..n).filter(|i| i % producers == p).collect();
            for chunk in ids.chunks(100) {
                engine
                    .enqueue_batch(chunk.iter().map(|i| task(*i, "t")).collect())
                    .await
                    .expect("enqueue");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r?;
    }
    let enqueued_in = started.elapsed();
    loop {
        let done = handler
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        if done >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = started.elapsed();
    // Then check that every completion was committed (not timed: counting scans the table).
    let mut finished = 0;
    for _ in 0..2000 {
        let counts = store.counts().await?;
        finished = counts
            .by_status_priority
            .iter()
            .filter(|(s, _, _)| *s == workflow_core::TaskStatus::Completed)
            .map(|(_, _, c)| *c)
            .sum::<u64>();
        if finished as usize >= n + preload {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lat = handler
        .latencies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    lat.sort_unstable();
    println!(
        "{backend}: {n} tasks (+{preload} stored) enqueued in {:.2}s, all completed in {:.2}s -> {:.0} tasks/s end to end; enqueue-to-start p50 {:.1} ms, p99 {:.1} ms; completed rows {finished}",
        enqueued_in.as_secs_f64(),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
    );
    engine.shutdown().await;
    Ok(())
}
