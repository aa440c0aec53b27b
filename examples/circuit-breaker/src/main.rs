//! Run with: cargo run -p example-circuit-breaker
//!
//! A target fails five times in a row: its breaker opens and calls fail fast. After the wait a
//! probe goes through; it succeeds and the breaker closes. State changes arrive as events.

use std::time::Duration;

use circuit_breaker::{BreakerConfig, BreakerRegistry};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let registry: BreakerRegistry<String> = BreakerRegistry::new(BreakerConfig {
        open_wait: Duration::from_millis(300),
        ..BreakerConfig::default()
    });
    let mut events = registry.subscribe();
    tokio::spawn(async move {
        while let Ok(change) = events.recv().await {
            println!("  event: {} {} -> {}", change.key, change.from, change.to);
        }
    });
    let target = "https://receiver.example:443".to_owned();
    for i in 1..=5 {
        registry.try_acquire(&target).expect("closed").failure();
        println!("call {i}: failed");
    }
    match registry.try_acquire(&target) {
        Ok(_) => println!("unexpected: still closed"),
        Err(open) => println!(
            "call 6: refused without calling, retry in {:?}",
            open.retry_in
        ),
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let probe = registry
        .try_acquire(&target)
        .expect("a probe after the wait");
    println!("probe allowed (half-open): {}", probe.is_probe());
    probe.success();
    println!("state now: {}", registry.get(&target).state());
    tokio::time::sleep(Duration::from_millis(20)).await;
}
