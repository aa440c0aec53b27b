//! `PostgresStore` under load: enqueue rate, claim latency (p50/p99) and the store-level
//! enqueue + claim + finish cycle, with one and with two store instances (two engines) on one
//! database. A timed loop rather than criterion: the figure wanted is the latency distribution
//! of `claim_due` under concurrent claimers, not a mean of repeated identical calls.
//!
//! ```sh
//! scripts/with-postgres.sh cargo bench -p workflow-core --bench postgres_claim
//! ```
//!
//! Without `TEST_DATABASE_URL` it prints `skipped: TEST_DATABASE_URL not set` and exits.
//! `BENCH_TASKS` sets the number of tasks (default 20,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use workflow_core::store::conformance::{attempt, fresh_postgres_database, new_task};
use workflow_core::{
    Completion, EnqueueLimits, Fence, PostgresConfig, PostgresStore, Priority, Store,
};

const LEASE: Duration = Duration::from_secs(60);
const BATCH: usize = 128;
const WORKERS_PER_INSTANCE: usize = 64;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn store(url: &str) -> PostgresStore {
    let mut c = PostgresConfig::new(url);
    c.pool_size = 32;
    PostgresStore::connect(c).await.expect("connect")
}

/// Enqueues `n` tasks one call each from 32 concurrent callers (the API's shape).
async fn enqueue_single(s: &PostgresStore, n: usize) -> f64 {
    let limits = EnqueueLimits {
        max_active: Some(1_000_000),
    };
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..32 {
        let s = s.clone();
        set.spawn(async move {
            for i in (c..n).step_by(32) {
                let t = new_task(&format!("t{i}"), Priority::ALL[i % 4], chrono::Utc::now());
                s.enqueue(t, limits).await.expect("enqueue");
            }
        });
    }
    while set.join_next().await.is_some() {}
    n as f64 / started.elapsed().as_secs_f64()
}

/// Claims in batches of [`BATCH`] and finishes each task from a pool of workers, like the
/// engine, on every instance at once. Returns tasks/s and every claim's latency.
async fn drain(instances: &[PostgresStore], n: usize) -> (f64, Vec<Duration>) {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (k, s) in instances.iter().enumerate() {
        let s = s.clone();
        set.spawn(async move {
            let owner = format!("bench-{k}");
            let sem = Arc::new(tokio::sync::Semaphore::new(WORKERS_PER_INSTANCE));
            let mut latencies = Vec::new();
            let mut done = 0usize;
            let mut running = tokio::task::JoinSet::new();
            loop {
                let free = sem.available_permits().min(BATCH);
                if free == 0 {
                    running.join_next().await;
                    continue;
                }
                let t0 = Instant::now();
                let got = s
                    .claim_due(&owner, chrono::Utc::now(), LEASE, free, &[])
                    .await
                    .expect("claim");
                latencies.push(t0.elapsed());
                if got.is_empty() {
                    if running.is_empty() {
                        break;
                    }
                    running.join_next().await;
                    continue;
                }
                for t in got {
                    let permit = sem.clone().acquire_owned().await.expect("permit");
                    let s = s.clone();
                    done += 1;
                    running.spawn(async move {
                        s.finish_attempt(
                            &Fence::of(&t),
                            attempt(true),
                            Completion::Succeeded { result: None },
                            chrono::Utc::now(),
                        )
                        .await
                        .expect("finish");
                        drop(permit);
                    });
                }
            }
            while running.join_next().await.is_some() {}
            (done, latencies)
        });
    }
    let mut total = 0;
    let mut latencies = Vec::new();
    while let Some(r) = set.join_next().await {
        let (d, l) = r.expect("join");
        total += d;
        latencies.extend(l);
    }
    assert_eq!(total, n, "every task claimed and finished once");
    latencies.sort();
    (n as f64 / started.elapsed().as_secs_f64(), latencies)
}

async fn run(instances: usize, n: usize) {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let mut stores = Vec::new();
    for _ in 0..instances {
        stores.push(store(&url).await);
    }
    let enq = enqueue_single(&stores[0], n).await;
    let (rate, lat) = drain(&stores, n).await;
    println!(
        "{instances} instance(s), {n} tasks: enqueue {enq:.0}/s (32 callers, one task per call); \
         claim + finish {rate:.0} tasks/s; claim_due latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
         over {} claims",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        lat.len()
    );
}

fn main() {
    let n = std::env::var("BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        run(1, n).await;
        run(2, n).await;
    });
}
