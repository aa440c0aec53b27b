//! Run with: cargo run -p example-circuit-breaker
//!
//! A target fails five times in a row: its breaker opens and calls fail fast. After the wait a
//! probe goes through and fails, so the breaker reopens for twice as long; the next probe
//! succeeds and the breaker closes. A second target sends `Retry-After`, which pins its wait.
//! State changes arrive as events on a broadcast channel. Real (short) waits: ~1 s in total.

use std::time::Duration;

use circuit_breaker::{BreakerConfig, BreakerRegistry};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let registry: BreakerRegistry<String> = BreakerRegistry::new(BreakerConfig {
        open_wait: Duration::from_millis(200),
        max_open_wait: Duration::from_secs(2),
        ..BreakerConfig::default()
    });
    let mut events = registry.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(change) = events.recv().await {
            println!("    event: {} {} -> {}", change.key, change.from, change.to);
        }
    });

    let target = "https://receiver.example:443".to_owned();
    for i in 1..=5 {
        registry.try_acquire(&target).expect("closed").failure();
        println!("call {i}: failed");
        tokio::task::yield_now().await;
    }
    if let Err(open) = registry.try_acquire(&target) {
        println!(
            "call 6: refused without calling, retry in {:?}",
            open.retry_in
        );
    }

    tokio::time::sleep(Duration::from_millis(210)).await;
    let probe = registry
        .try_acquire(&target)
        .expect("a probe after the wait");
    println!(
        "probe 1 allowed (half-open: {}), and it fails",
        probe.is_probe()
    );
    probe.failure();
    tokio::task::yield_now().await;
    println!(
        "reopened, retry in {:?} (the wait doubled)",
        registry.retry_in(&target).unwrap_or_default()
    );

    tokio::time::sleep(Duration::from_millis(410)).await;
    registry
        .try_acquire(&target)
        .expect("a probe after the longer wait")
        .success();
    tokio::task::yield_now().await;
    println!("probe 2 succeeded: state {}", registry.get(&target).state());

    let throttled = "https://busy.example:443".to_owned();
    registry
        .try_acquire(&throttled)
        .expect("closed")
        .failure_with_retry_after(Duration::from_millis(500));
    tokio::task::yield_now().await;
    println!(
        "{throttled} answered 429 + Retry-After 500 ms: open, retry in {:?}",
        registry.retry_in(&throttled).unwrap_or_default()
    );

    for (key, s) in registry.snapshot() {
        println!(
            "snapshot {key}: {} (calls {}, failures {}, trips {})",
            s.state, s.calls, s.failures, s.trips
        );
    }
    drop(registry); // closes the event channel, so the printer ends
    printer.await.expect("printer task");
}
