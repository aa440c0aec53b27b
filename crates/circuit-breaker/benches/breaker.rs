//! The breaker check on every delivery: acquire a permit and report the outcome, on one
//! breaker and through the keyed registry (one lookup per attempt, as the webhook client does),
//! uncontended and with two threads on the same key.
//!
//! Run with: `cargo bench -p circuit-breaker -- --warm-up-time 1 --measurement-time 3`

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::sync::Arc;

use circuit_breaker::{BreakerConfig, BreakerRegistry, CircuitBreaker};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("circuit_breaker");
    group.throughput(Throughput::Elements(1));

    let one = Arc::new(CircuitBreaker::new(BreakerConfig::default()));
    group.bench_function("acquire_success", |b| {
        b.iter(|| one.try_acquire().expect("closed").success())
    });

    let registry: BreakerRegistry<String> = BreakerRegistry::new(BreakerConfig::default());
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("http://receiver-{i}.example:443"))
        .collect();
    for k in &keys {
        registry.get(k);
    }
    let mut i = 0usize;
    group.bench_function("registry_acquire_success_1000_targets", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            registry.try_acquire(&keys[i]).expect("closed").success()
        })
    });
    group.bench_function("registry_retry_in_closed", |b| {
        // The API's check before accepting a task (breaker-open policy `reject`).
        b.iter(|| registry.retry_in(std::hint::black_box(&keys[7])))
    });

    let open = Arc::new(CircuitBreaker::new(BreakerConfig::default()));
    for _ in 0..BreakerConfig::default().consecutive_failures {
        open.try_acquire().expect("closed").failure();
    }
    group.bench_function("acquire_rejected_open", |b| {
        b.iter(|| open.try_acquire().is_err())
    });

    // Two threads hammering one key: the cost of the shared lock.
    let shared = Arc::new(CircuitBreaker::new(BreakerConfig::default()));
    group.bench_function("acquire_success_contended_2_threads", |b| {
        b.iter_custom(|iters| {
            let other = shared.clone();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop2 = stop.clone();
            let t = std::thread::spawn(move || {
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(p) = other.try_acquire() {
                        p.success();
                    }
                }
            });
            let start = std::time::Instant::now();
            for _ in 0..iters {
                if let Ok(p) = shared.try_acquire() {
                    p.success();
                }
            }
            let took = start.elapsed();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            t.join().expect("helper thread");
            took
        })
    });
    group.finish();
}

criterion_group!(benches, breaker);
criterion_main!(benches);
