//! Store throughput: enqueue, claim and finish on `SqliteStore` (NORMAL) and `MemoryStore`.
//!
//! Run with: `cargo bench -p workflow-core --bench store -- --warm-up-time 1 --measurement-time 3`
//!
//! Each iteration moves `BATCH` tasks through one step; criterion reports tasks/s
//! ("thrpt"). `cycle` is the whole life of a task as the engine drives it: one
//! `enqueue_batch`, one batched `claim_due`, and one `finish_attempt` per task, all issued
//! concurrently (the SQLite writer commits them together). `sqlite-no-group-commit` is the
//! same store with `max_batch = 1`, to show what group commit buys.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use workflow_core::{
    AttemptRecord, Completion, EnqueueLimits, Fence, MemoryStore, NewTask, Priority, SqliteConfig,
    SqliteStore, Store, Task,
};

const BATCH: usize = 100;
const LEASE: Duration = Duration::from_secs(60);

static NEXT: AtomicU64 = AtomicU64::new(0);

fn tasks(n: usize) -> Vec<NewTask> {
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            NewTask {
                id: format!("wf_{id:016x}"),
                kind: "webhook".to_owned(),
                priority: Priority::ALL[i % 4],
                payload: serde_json::json!({
                    "task_type": "negative_evidence_intervention",
                    "evidence_data": {"evidence_fragment": "x".repeat(200), "brand_name": "Acme"},
                    "webhook_url": "https://hooks.example.com/a"
                }),
                target: Some("https://hooks.example.com:443".to_owned()),
                max_attempts: 4,
                run_at: now,
                idempotency_key: None,
            }
        })
        .collect()
}

fn record() -> AttemptRecord {
    AttemptRecord {
        started_at: Utc::now(),
        duration_ms: 3,
        status_code: Some(200),
        outcome: "success".to_owned(),
        ..AttemptRecord::default()
    }
}

async fn enqueue(s: &Arc<dyn Store>, batch: Vec<NewTask>) {
    s.enqueue_batch(batch, EnqueueLimits::default())
        .await
        .expect("enqueue");
}

async fn claim(s: &Arc<dyn Store>) -> Vec<Task> {
    let got = s
        .claim_due("bench", Utc::now(), LEASE, BATCH, &[])
        .await
        .expect("claim");
    assert_eq!(got.len(), BATCH, "every enqueued task is due");
    got
}

async fn finish_all(s: &Arc<dyn Store>, claimed: Vec<Task>) {
    let mut set = tokio::task::JoinSet::new();
    for t in claimed {
        let s = s.clone();
        set.spawn(async move {
            s.finish_attempt(
                &Fence::of(&t),
                record(),
                Completion::Succeeded { result: None },
                Utc::now(),
            )
            .await
            .expect("finish");
        });
    }
    set.join_all().await;
}

fn stores(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn Store>)> {
    let sqlite = SqliteStore::open_path(dir.join("bench.db")).expect("open");
    // The same store without group commit: one transaction (and one WAL append) per write.
    let mut one_by_one = SqliteConfig::new(dir.join("one.db"));
    one_by_one.max_batch = 1;
    let one_by_one = SqliteStore::open(one_by_one).expect("open");
    vec![
        ("sqlite", Arc::new(sqlite) as Arc<dyn Store>),
        ("sqlite-no-group-commit", Arc::new(one_by_one)),
        ("memory", Arc::new(MemoryStore::new())),
    ]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    for (name, store) in stores(dir.path()) {
        group.bench_function(BenchmarkId::new("enqueue_batch", name), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let s = store.clone();
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = tasks(BATCH);
                        let start = Instant::now();
                        enqueue(&s, batch).await;
                        spent += start.elapsed();
                        // Keep the due set small so every case measures the same store.
                        let claimed = claim(&s).await;
                        finish_all(&s, claimed).await;
                    }
                    spent
                }
            });
        });
        group.bench_function(BenchmarkId::new("claim", name), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let s = store.clone();
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        enqueue(&s, tasks(BATCH)).await;
                        let start = Instant::now();
                        let claimed = claim(&s).await;
                        spent += start.elapsed();
                        finish_all(&s, claimed).await;
                    }
                    spent
                }
            });
        });
        group.bench_function(BenchmarkId::new("finish", name), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let s = store.clone();
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        enqueue(&s, tasks(BATCH)).await;
                        let claimed = claim(&s).await;
                        let start = Instant::now();
                        finish_all(&s, claimed).await;
                        spent += start.elapsed();
                    }
                    spent
                }
            });
        });
        group.bench_function(BenchmarkId::new("cycle", name), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let s = store.clone();
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = tasks(BATCH);
                        let start = Instant::now();
                        enqueue(&s, batch).await;
                        let claimed = claim(&s).await;
                        finish_all(&s, claimed).await;
                        spent += start.elapsed();
                    }
                    spent
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
