//! Breaker behaviour under paused tokio time.

use std::sync::Arc;
use std::time::Duration;

use circuit_breaker::{
    BreakerConfig, BreakerRegistry, CircuitBreaker, CircuitBreakerLayer, CircuitOpen, State,
};
use tower::{Layer, Service, ServiceExt, service_fn};

fn breaker(config: BreakerConfig) -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(config))
}

fn fail(b: &Arc<CircuitBreaker>, n: u32) {
    for _ in 0..n {
        b.try_acquire().expect("closed").failure();
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_five_consecutive_failures() {
    let b = breaker(BreakerConfig::default());
    fail(&b, 4);
    assert_eq!(b.state(), State::Closed);
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.retry_in, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_consecutive_count() {
    let b = breaker(BreakerConfig {
        min_calls: 100,
        ..BreakerConfig::default()
    });
    for _ in 0..5 {
        fail(&b, 4);
        b.try_acquire().unwrap().success();
    }
    assert_eq!(b.state(), State::Closed, "never 5 failures in a row");
    fail(&b, 5);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn trips_on_failure_rate_only_after_min_calls() {
    let b = breaker(BreakerConfig {
        consecutive_failures: 100,
        window: 10,
        min_calls: 10,
        failure_rate: 0.5,
        ..BreakerConfig::default()
    });
    // Alternate: 50 % failures, but the rate only counts from the 10th call.
    for i in 0..9 {
        let p = b.try_acquire().unwrap();
        if i % 2 == 0 { p.failure() } else { p.success() }
    }
    assert_eq!(b.state(), State::Closed, "9 calls is below min_calls");
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_window_slides() {
    let b = breaker(BreakerConfig {
        consecutive_failures: 100,
        window: 4,
        min_calls: 4,
        failure_rate: 0.75,
        ..BreakerConfig::default()
    });
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    for _ in 0..4 {
        b.try_acquire().unwrap().success();
    }
    // Old failures slid out: two more failures are 50 % of the window.
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Closed);
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_one_probe_through_and_closes_on_success() {
    let b = breaker(BreakerConfig::default());
    fail(&b, 5);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(b.try_acquire().is_err());
    tokio::time::advance(Duration::from_secs(1)).await;
    let probe = b.try_acquire().expect("probe allowed after the wait");
    assert!(probe.is_probe());
    assert_eq!(b.state(), State::HalfOpen);
    assert!(b.try_acquire().is_err(), "only one probe at a time");
    probe.success();
    assert_eq!(b.state(), State::Closed);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() {
    let b = breaker(BreakerConfig {
        open_wait: Duration::from_secs(30),
        max_open_wait: Duration::from_secs(100),
        ..BreakerConfig::default()
    });
    fail(&b, 5);
    let mut waits = vec![];
    for _ in 0..3 {
        let wait = b.snapshot().retry_in.unwrap();
        waits.push(wait.as_secs());
        tokio::time::advance(wait).await;
        b.try_acquire().unwrap().failure();
    }
    assert_eq!(waits, [30, 60, 100]);
}

#[tokio::test(start_paused = true)]
async fn an_unreported_probe_frees_its_slot() {
    let b = breaker(BreakerConfig::default());
    fail(&b, 5);
    tokio::time::advance(Duration::from_secs(30)).await;
    drop(b.try_acquire().unwrap());
    assert!(b.try_acquire().is_ok(), "slot freed by the dropped permit");
}

#[tokio::test(start_paused = true)]
async fn retry_after_opens_at_once_for_that_long() {
    let b = breaker(BreakerConfig::default());
    b.try_acquire()
        .unwrap()
        .failure_with_retry_after(Duration::from_secs(120));
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.retry_in(), Some(Duration::from_secs(120)));
}

#[tokio::test(start_paused = true)]
async fn registry_keeps_one_breaker_per_key_and_reports_changes() {
    let reg: BreakerRegistry<String> = BreakerRegistry::new(BreakerConfig {
        consecutive_failures: 1,
        ..BreakerConfig::default()
    });
    let mut events = reg.subscribe();
    reg.try_acquire(&"a".to_owned()).unwrap().failure();
    assert!(reg.try_acquire(&"a".to_owned()).is_err());
    assert!(
        reg.try_acquire(&"b".to_owned()).is_ok(),
        "other targets unaffected"
    );
    let change = events.recv().await.unwrap();
    assert_eq!(
        (change.key.as_str(), change.from, change.to),
        ("a", State::Closed, State::Open)
    );
    assert_eq!(reg.retry_in(&"a".to_owned()), Some(Duration::from_secs(30)));
    assert_eq!(reg.retry_in(&"zzz".to_owned()), None);
}

#[tokio::test(start_paused = true)]
async fn registry_memory_is_bounded_but_keeps_open_breakers() {
    let reg: BreakerRegistry<u32> = BreakerRegistry::with_limits(
        BreakerConfig {
            consecutive_failures: 1,
            ..BreakerConfig::default()
        },
        10,
        Duration::from_secs(60),
    );
    reg.try_acquire(&0).unwrap().failure(); // open: must survive eviction
    for k in 1..1000 {
        drop(reg.try_acquire(&k));
    }
    assert!(reg.len() <= 10, "{} kept", reg.len());
    assert_eq!(reg.get(&0).state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn many_tasks_asking_at_once_all_get_answers() {
    let b = breaker(BreakerConfig::default());
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let b = b.clone();
        set.spawn(async move {
            for _ in 0..100 {
                b.try_acquire().unwrap().success();
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    assert_eq!(b.snapshot().calls, 20, "window holds the last 20 calls");
}

#[tokio::test(start_paused = true)]
async fn tower_layer_fails_fast_while_open() {
    let b = breaker(BreakerConfig {
        consecutive_failures: 2,
        ..BreakerConfig::default()
    });
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let c = calls.clone();
    let inner = service_fn(move |fail: bool| {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { if fail { Err("boom") } else { Ok("ok") } }
    });
    let mut svc = tower::ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(b.clone()))
        .service(inner);
    assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), "ok");
    assert!(svc.ready().await.unwrap().call(true).await.is_err());
    assert!(svc.ready().await.unwrap().call(true).await.is_err());
    let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen>().is_some(), "{err}");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "inner not called while open"
    );
}

#[tokio::test(start_paused = true)]
async fn a_short_retry_after_pins_the_wait_below_the_default() {
    let b = breaker(BreakerConfig::default());
    b.try_acquire()
        .unwrap()
        .failure_with_retry_after(Duration::from_secs(5));
    assert_eq!(b.retry_in(), Some(Duration::from_secs(5)));
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(b.try_acquire().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_capped_by_the_max_open_wait() {
    let b = breaker(BreakerConfig {
        max_open_wait: Duration::from_secs(60),
        ..BreakerConfig::default()
    });
    b.try_acquire()
        .unwrap()
        .failure_with_retry_after(Duration::from_secs(3600));
    assert_eq!(b.retry_in(), Some(Duration::from_secs(60)));
}

#[tokio::test(start_paused = true)]
async fn results_of_calls_started_before_a_trip_are_ignored() {
    let b = breaker(BreakerConfig::default());
    let slow_success = b.try_acquire().unwrap();
    let slow_failure = b.try_acquire().unwrap();
    fail(&b, 5);
    tokio::time::advance(Duration::from_secs(30)).await;
    let probe = b.try_acquire().unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    // A late success from the closed era must not close the breaker behind the probe's back,
    // and a late failure must not reopen it.
    slow_success.success();
    slow_failure.failure();
    assert_eq!(b.state(), State::HalfOpen);
    assert!(b.try_acquire().is_err(), "the probe slot is still taken");
    probe.failure();
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_stale_probe_dropped_later_does_not_free_a_new_slot() {
    let b = breaker(BreakerConfig {
        half_open_probes: 2,
        ..BreakerConfig::default()
    });
    fail(&b, 5);
    tokio::time::advance(Duration::from_secs(30)).await;
    let failing = b.try_acquire().unwrap();
    let stale = b.try_acquire().unwrap();
    failing.failure(); // reopens for 60 s; `stale` now belongs to a finished episode
    tokio::time::advance(Duration::from_secs(60)).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    drop(stale);
    assert!(
        b.try_acquire().is_err(),
        "both new slots are still taken after the stale probe is dropped"
    );
    drop(p1);
    assert!(b.try_acquire().is_ok(), "a current probe frees its slot");
    drop(p2);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_the_configured_probes() {
    let b = breaker(BreakerConfig {
        half_open_probes: 3,
        ..BreakerConfig::default()
    });
    fail(&b, 5);
    tokio::time::advance(Duration::from_secs(30)).await;
    let probes: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    assert!(probes.iter().all(|p| p.is_probe()));
    assert!(b.try_acquire().is_err(), "a fourth probe is refused");
    let mut probes = probes.into_iter();
    probes.next().unwrap().success();
    assert_eq!(b.state(), State::Closed, "one success closes");
    // The other probes' outcomes belong to the half-open episode and change nothing now.
    for p in probes {
        p.failure();
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn closing_resets_the_growing_wait() {
    let b = breaker(BreakerConfig::default());
    fail(&b, 5);
    tokio::time::advance(Duration::from_secs(30)).await;
    b.try_acquire().unwrap().failure(); // second trip: 60 s
    assert_eq!(b.retry_in(), Some(Duration::from_secs(60)));
    tokio::time::advance(Duration::from_secs(60)).await;
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), State::Closed);
    fail(&b, 5);
    assert_eq!(
        b.retry_in(),
        Some(Duration::from_secs(30)),
        "back to the base wait"
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_counts() {
    let b = breaker(BreakerConfig::default());
    b.try_acquire().unwrap().success();
    fail(&b, 2);
    let s = b.snapshot();
    assert_eq!(
        (
            s.state,
            s.calls,
            s.failures,
            s.consecutive_failures,
            s.retry_in
        ),
        (State::Closed, 3, 2, 2, None)
    );
    fail(&b, 3);
    let s = b.snapshot();
    assert_eq!((s.state, s.trips), (State::Open, 1));
    assert_eq!(s.retry_in, Some(Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn registry_publishes_the_whole_cycle() {
    let reg: BreakerRegistry<&'static str> = BreakerRegistry::new(BreakerConfig {
        consecutive_failures: 1,
        ..BreakerConfig::default()
    });
    let mut events = reg.subscribe();
    reg.try_acquire(&"t").unwrap().failure();
    tokio::time::advance(Duration::from_secs(30)).await;
    reg.try_acquire(&"t").unwrap().success();
    let mut seen = vec![];
    while let Ok(e) = events.try_recv() {
        seen.push((e.key, e.from, e.to));
    }
    assert_eq!(
        seen,
        [
            ("t", State::Closed, State::Open),
            ("t", State::Open, State::HalfOpen),
            ("t", State::HalfOpen, State::Closed),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn registry_snapshot_and_purge_idle() {
    let reg: BreakerRegistry<u32> = BreakerRegistry::with_limits(
        BreakerConfig {
            consecutive_failures: 1,
            ..BreakerConfig::default()
        },
        100,
        Duration::from_secs(60),
    );
    reg.try_acquire(&1).unwrap().success();
    reg.try_acquire(&2).unwrap().failure();
    let held = reg.get(&3);
    let mut snap = reg.snapshot();
    snap.sort_by_key(|(k, _)| *k);
    let states: Vec<_> = snap.iter().map(|(k, s)| (*k, s.state)).collect();
    assert_eq!(
        states,
        [(1, State::Closed), (2, State::Open), (3, State::Closed)]
    );
    assert_eq!(reg.purge_idle(), 0, "nothing idle yet");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        reg.purge_idle(),
        1,
        "only the idle, closed, unheld breaker goes"
    );
    assert!(reg.peek(&1).is_none());
    assert_eq!(reg.peek(&2).unwrap().state(), State::Open);
    assert!(Arc::ptr_eq(&reg.peek(&3).unwrap(), &held));
}

#[tokio::test(start_paused = true)]
async fn tower_layer_probes_and_recovers() {
    let b = breaker(BreakerConfig {
        consecutive_failures: 1,
        ..BreakerConfig::default()
    });
    let mut svc = CircuitBreakerLayer::new(b.clone()).layer(service_fn(|fail: bool| async move {
        if fail {
            Err(std::io::Error::other("down"))
        } else {
            Ok(7)
        }
    }));
    let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert!(
        err.downcast_ref::<std::io::Error>().is_some(),
        "inner error kept: {err}"
    );
    let open = svc.ready().await.unwrap().call(false).await.unwrap_err();
    let open = open.downcast_ref::<CircuitOpen>().expect("fails fast");
    assert_eq!(open.retry_in, Duration::from_secs(30));
    tokio::time::advance(open.retry_in).await;
    assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), 7);
    assert_eq!(b.state(), State::Closed);
}
