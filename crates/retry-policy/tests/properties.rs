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
