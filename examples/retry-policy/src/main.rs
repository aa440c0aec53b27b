//! Run with: cargo run -p example-retry-policy
//!
//! Prints the seed's retry schedule (`min(30 s · 2ⁿ + U(0, 10 s), 1 h)`) for a few seeds,
//! how a `Retry-After` raises a delay, and how answers are classified.

use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use retry_policy::{
    Classifier, ExponentialBackoff, Jitter, RetryPolicy, TransportErrorKind, parse_retry_after,
};

fn main() {
    let seed_policy = RetryPolicy::default();
    println!(
        "seed policy: {} retries, base {:?}, cap {:?}, jitter {:?}",
        seed_policy.max_retries, seed_policy.base_delay, seed_policy.max_delay, seed_policy.jitter
    );
    // The seed's schedule stretched to 5 retries, once per jitter strategy.
    let five = RetryPolicy {
        max_retries: 5,
        ..seed_policy
    };
    for (name, jitter) in [
        ("none", Jitter::None),
        ("additive (seed)", seed_policy.jitter),
        ("full", Jitter::Full),
    ] {
        let policy = RetryPolicy { jitter, ..five };
        let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
        let mut delays = Vec::new();
        while let Some(d) = policy.next_delay_with(delays.len() as u32, None, &mut rng) {
            delays.push(format!("{:.1}s", d.as_secs_f64()));
        }
        println!(
            "  {name:<16} {} -> then give up ({} attempts)",
            delays.join(", "),
            policy.max_attempts()
        );
    }
    let exact = RetryPolicy {
        jitter: Jitter::None,
        ..seed_policy
    };

    let ra = parse_retry_after("120", SystemTime::now());
    println!(
        "\nRetry-After: 120 -> {ra:?}; next delay becomes {:?}",
        exact.next_delay(0, ra)
    );
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now + Duration::from_secs(7200));
    println!(
        "Retry-After: {date} -> {:?}; capped at {:?}",
        parse_retry_after(&date, now),
        exact.next_delay(0, parse_retry_after(&date, now))
    );
    println!(
        "ExponentialBackoff::try_new(60s, 10s, none) -> {:?}\n",
        ExponentialBackoff::try_new(
            Duration::from_secs(60),
            Duration::from_secs(10),
            Jitter::None
        )
        .map_err(|e| e.to_string())
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
