//! Properties of every retry schedule.

use std::time::Duration;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use retry_policy::{ExponentialBackoff, Jitter, RetryPolicy};

fn policy() -> impl Strategy<Value = RetryPolicy> {
    (
        0u32..10,
        0u64..120_000,
        1u64..7_200_000,
        0u8..3,
        0u64..20_000,
    )
        .prop_map(|(retries, base, max, j, extra)| {
            let max = max.max(base);
            RetryPolicy {
                max_retries: retries,
                base_delay: Duration::from_millis(base),
                max_delay: Duration::from_millis(max),
                jitter: match j {
                    0 => Jitter::None,
                    1 => Jitter::Additive(Duration::from_millis(extra)),
                    _ => Jitter::Full,
                },
            }
        })
}

proptest! {
    #[test]
    fn delays_stay_between_the_base_step_and_the_cap(p in policy(), n in 0u32..40, seed in any::<u64>()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let d = p.delay(n, &mut rng);
        prop_assert!(d <= p.max_delay, "{d:?} above cap {:?}", p.max_delay);
        prop_assert!(d >= p.base_step(n), "{d:?} below base step {:?}", p.base_step(n));
    }

    #[test]
    fn attempts_stop_after_max_retries(p in policy(), ra in proptest::option::of(0u64..10_000)) {
        let ra = ra.map(Duration::from_millis);
        let mut rng = StdRng::seed_from_u64(1);
        let granted = (0..p.max_retries + 5)
            .take_while(|n| p.next_delay_with(*n, ra, &mut rng).is_some())
            .count();
        prop_assert_eq!(granted as u32, p.max_retries);
        prop_assert_eq!(p.max_attempts(), p.max_retries + 1);
    }

    #[test]
    fn retry_after_raises_the_delay_up_to_the_cap(
        p in policy(),
        n in 0u32..10,
        ra in 0u64..100_000_000,
        seed in any::<u64>(),
    ) {
        let ra = Duration::from_millis(ra);
        let mut rng = StdRng::seed_from_u64(seed);
        if let Some(d) = p.next_delay_with(n, Some(ra), &mut rng) {
            prop_assert!(d <= p.max_delay, "{d:?} above cap");
            prop_assert!(d >= ra.min(p.max_delay), "{d:?} below Retry-After {ra:?}");
            prop_assert!(d >= p.base_step(n), "{d:?} below base step");
        }
    }

    #[test]
    fn checked_backoffs_are_exactly_the_sane_ones(min in 0u64..10_000, max in 0u64..10_000) {
        let (min, max) = (Duration::from_millis(min), Duration::from_millis(max));
        let built = ExponentialBackoff::try_new(min, max, Jitter::Full);
        prop_assert_eq!(built.is_ok(), !max.is_zero() && min <= max);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// `Retry-After` comes from whatever server was called: any text parses or is `None`,
    /// never a panic, and a date is never a delay longer than its distance from now.
    #[test]
    fn any_retry_after_text_parses_or_is_none(
        value in prop_oneof![
            "\\PC{0,40}",
            "[0-9]{0,30}",
            "(Mon|Sun|Xyz), [0-9]{1,2} (Jan|Dec|Foo) [0-9]{1,5} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        ],
        now_secs in 0u64..4_000_000_000,
    ) {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(now_secs);
        if let Some(delay) = retry_policy::parse_retry_after(&value, now)
            && let Ok(at) = httpdate::parse_http_date(value.trim())
        {
            prop_assert_eq!(delay, at.duration_since(now).unwrap_or(Duration::ZERO));
        }
    }
}
