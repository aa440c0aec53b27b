//! Run with: cargo run -p example-retry-policy
//!
//! Prints the seed's retry schedule (`min(30 s · 2ⁿ + U(0, 10 s), 1 h)`) for a few seeds,
//! how a `Retry-After` raises a delay, and how answers are classified.

use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use retry_policy::{Classifier, Jitter, RetryPolicy, TransportErrorKind, parse_retry_after};

fn main() {
    let policy = RetryPolicy::default();
    println!(
        "seed policy: {} retries, base {:?}, cap {:?}, jitter {:?}",
        policy.max_retries, policy.base_delay, policy.max_delay, policy.jitter
    );
    for seed in 0..3 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let delays: Vec<String> = (0..5)
            .map(|n| format!("{:.1}s", policy.delay(n, &mut rng).as_secs_f64()))
            .collect();
        println!("  schedule (seed {seed}): {}", delays.join(", "));
    }
    let exact = RetryPolicy {
        jitter: Jitter::None,
        ..policy
    };
    let mut n = 0;
    while let Some(d) = exact.next_delay(n, None) {
        println!("  retry {} after {:?}", n + 1, d);
        n += 1;
    }
    println!("  then: exhausted after {} attempts", exact.max_attempts());

    let ra = parse_retry_after("120", SystemTime::now());
    println!(
        "\nRetry-After: 120 -> {ra:?}; next delay becomes {:?}",
        exact.next_delay(0, ra)
    );

    let seed = Classifier::seed();
    let strict = Classifier::conventional();
    for status in [200, 301, 404, 410, 429, 500, 503] {
        println!(
            "HTTP {status}: seed rule {:<9} conventional {}",
            seed.classify_status(status, None).as_str(),
            strict
                .classify_status(status, Some(Duration::from_secs(5)))
                .as_str()
        );
    }
    for kind in [
        TransportErrorKind::Timeout,
        TransportErrorKind::Connect,
        TransportErrorKind::Blocked,
    ] {
        println!(
            "{:<8} -> {}",
            kind.as_str(),
            seed.classify_transport(kind).as_str()
        );
    }
}
