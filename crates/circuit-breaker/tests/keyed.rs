//! The keyed layer: one layer, one breaker per key, the policy reading answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use circuit_breaker::{
    BreakerConfig, BreakerPolicy, BreakerRegistry, CircuitOpen, KeyedCircuitBreakerLayer, State,
    Verdict,
};
use tower::{Layer, ServiceExt, service_fn};

/// A request to `target`; the answer is what the target "said".
#[derive(Debug, Clone)]
struct Call {
    target: Option<&'static str>,
    answer: Answer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Up,
    Down,
    Busy(u64),
    NotSent,
    Refused(Duration),
}

#[derive(Debug, Clone, Copy)]
struct ByTarget;

impl BreakerPolicy<Call, Answer> for ByTarget {
    type Key = &'static str;

    fn key(&self, call: &Call) -> Option<&'static str> {
        call.target
    }

    fn verdict(&self, answer: &Answer) -> Verdict {
        match *answer {
            Answer::Up => Verdict::Success,
            Answer::Down => Verdict::Failure,
            Answer::Busy(secs) => Verdict::FailureRetryAfter(Duration::from_secs(secs)),
            Answer::NotSent | Answer::Refused(_) => Verdict::Ignore,
        }
    }

    fn refused(&self, _: Call, open: CircuitOpen) -> Answer {
        Answer::Refused(open.retry_in)
    }
}

fn registry(failures: u32) -> Arc<BreakerRegistry<&'static str>> {
    Arc::new(BreakerRegistry::new(BreakerConfig {
        consecutive_failures: failures,
        ..BreakerConfig::default()
    }))
}

fn call(target: &'static str, answer: Answer) -> Call {
    Call {
        target: Some(target),
        answer,
    }
}

#[tokio::test(start_paused = true)]
async fn each_key_trips_alone_and_an_open_one_answers_without_calling_the_service() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let reg = registry(2);
    let svc =
        KeyedCircuitBreakerLayer::new(reg.clone(), ByTarget).layer(service_fn(move |c: Call| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, std::io::Error>(c.answer) }
        }));
    for _ in 0..2 {
        svc.clone().oneshot(call("a", Answer::Down)).await.unwrap();
    }
    assert_eq!(reg.get(&"a").state(), State::Open);
    let refused = svc.clone().oneshot(call("a", Answer::Up)).await.unwrap();
    assert!(
        matches!(refused, Answer::Refused(d) if d > Duration::ZERO),
        "{refused:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "an open breaker does not call the service"
    );
    // Another key is untouched.
    assert_eq!(
        svc.clone().oneshot(call("b", Answer::Up)).await.unwrap(),
        Answer::Up
    );
    assert_eq!(reg.get(&"b").state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn ignored_answers_record_nothing_and_keyless_calls_are_unguarded() {
    let reg = registry(1);
    let svc = KeyedCircuitBreakerLayer::new(reg.clone(), ByTarget).layer(service_fn(
        |c: Call| async move { Ok::<_, std::io::Error>(c.answer) },
    ));
    for _ in 0..5 {
        svc.clone()
            .oneshot(call("a", Answer::NotSent))
            .await
            .unwrap();
    }
    assert_eq!(reg.get(&"a").state(), State::Closed);
    let keyless = Call {
        target: None,
        answer: Answer::Down,
    };
    svc.clone().oneshot(keyless).await.unwrap();
    assert!(reg.peek(&"a").is_some());
    assert_eq!(reg.len(), 1, "a call without a key creates no breaker");
}

#[tokio::test(start_paused = true)]
async fn retry_after_pins_the_open_wait_and_inner_errors_count_as_failures() {
    let reg = registry(3);
    let svc = KeyedCircuitBreakerLayer::new(reg.clone(), ByTarget).layer(service_fn(
        |c: Call| async move { Ok::<_, std::io::Error>(c.answer) },
    ));
    svc.clone()
        .oneshot(call("busy", Answer::Busy(7)))
        .await
        .unwrap();
    assert_eq!(reg.retry_in(&"busy"), Some(Duration::from_secs(7)));

    let failing = KeyedCircuitBreakerLayer::new(reg.clone(), ByTarget).layer(service_fn(
        |_: Call| async move { Err::<Answer, _>(std::io::Error::other("boom")) },
    ));
    for _ in 0..3 {
        assert!(
            failing
                .clone()
                .oneshot(call("err", Answer::Up))
                .await
                .is_err()
        );
    }
    assert_eq!(reg.get(&"err").state(), State::Open);
}
