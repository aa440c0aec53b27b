//! Engine behaviour with paused time and real stores.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use parking_lot::Mutex;
use workflow_core::{
    AttemptContext, CancelOutcome, Engine, EngineConfig, EngineEvent, Fence, Handler,
    HandlerOutcome, Jitter, MemoryStore, NewTask, Priority, RetryPolicy, SqliteStore, Store, Task,
    TaskStatus, TokioClock,
};

/// Records the order of attempts and answers with a scripted outcome.
struct Scripted {
    seen: Mutex<Vec<String>>,
    answer: Box<dyn Fn(&Task) -> HandlerOutcome + Send + Sync>,
    hold: Duration,
}

impl Scripted {
    fn new(answer: impl Fn(&Task) -> HandlerOutcome + Send + Sync + 'static) -> Arc<Scripted> {
        Arc::new(Scripted {
            seen: Mutex::new(vec![]),
            answer: Box::new(answer),
            hold: Duration::ZERO,
        })
    }

    fn holding(hold: Duration) -> Arc<Scripted> {
        Arc::new(Scripted {
            seen: Mutex::new(vec![]),
            answer: Box::new(|_| HandlerOutcome::success()),
            hold,
        })
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().clone()
    }
}

#[async_trait]
impl Handler for Scripted {
    async fn handle(&self, task: &Task, ctx: AttemptContext) -> HandlerOutcome {
        self.seen.lock().push(task.id.clone());
        if !self.hold.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(self.hold) => {}
                () = ctx.cancel.cancelled() => return HandlerOutcome::retryable("cancelled"),
            }
        }
        (self.answer)(task)
    }
}

fn task(id: &str, priority: Priority) -> NewTask {
    NewTask {
        id: id.to_owned(),
        kind: "webhook".to_owned(),
        priority,
        payload: serde_json::json!({}),
        target: Some("https://t.example:443".to_owned()),
        max_attempts: 4,
        run_at: Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap(),
        idempotency_key: None,
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        owner_id: "test".into(),
        retry: RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(3600),
            jitter: Jitter::None,
        },
        ..EngineConfig::default()
    }
}

fn engine(store: Arc<dyn Store>, handler: Arc<dyn Handler>, config: EngineConfig) -> Engine {
    Engine::builder(store)
        .handler("webhook", handler)
        .config(config)
        .clock(Arc::new(TokioClock::default()))
        .start()
}

async fn wait_final(store: &Arc<dyn Store>, id: &str) -> Task {
    for _ in 0..100_000 {
        if let Some(t) = store.get(id).await.unwrap()
            && t.status.is_final()
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} never finished");
}

#[tokio::test(start_paused = true)]
async fn strict_priority_then_fifo_under_a_saturated_pool() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Queue everything before the engine starts, so the pool of one is saturated.
    for (id, p) in [
        ("l1", Priority::Low),
        ("m1", Priority::Medium),
        ("c1", Priority::Critical),
        ("h1", Priority::High),
        ("l2", Priority::Low),
        ("c2", Priority::Critical),
        ("m2", Priority::Medium),
        ("h2", Priority::High),
    ] {
        store
            .enqueue(task(id, p), Default::default())
            .await
            .unwrap();
    }
    let h = Scripted::new(|_| HandlerOutcome::success());
    let e = engine(
        store.clone(),
        h.clone(),
        EngineConfig {
            max_in_flight: 1,
            ..config()
        },
    );
    wait_final(&store, "l2").await;
    assert_eq!(h.seen(), ["c1", "c2", "h1", "h2", "m1", "m2", "l1", "l2"]);
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retry_delays_follow_the_policy_and_exhaustion_fails_with_every_attempt_recorded() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let h = Scripted::new(|_| HandlerOutcome::retryable("HTTP 500").with_status(Some(500)));
    let e = engine(store.clone(), h.clone(), config());
    let mut events = e.subscribe();
    e.enqueue(task("a", Priority::High)).await.unwrap();
    let t = wait_final(&store, "a").await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert!(t.last_error.unwrap().contains("attempts exhausted"));
    let attempts = store.attempts("a").await.unwrap();
    assert_eq!(attempts.len(), 4);
    assert!(
        attempts
            .iter()
            .all(|a| a.status_code == Some(500) && a.outcome == "retryable")
    );
    let mut delays = vec![];
    while let Ok(ev) = events.try_recv() {
        if let EngineEvent::RetryScheduled { delay_ms, .. } = ev {
            delays.push(delay_ms);
        }
    }
    assert_eq!(delays, [10_000, 20_000, 40_000]);
    // The attempts really were that far apart on the (paused) clock.
    let gaps: Vec<i64> = attempts
        .windows(2)
        .map(|w| (w[1].started_at - w[0].started_at).num_seconds())
        .collect();
    assert_eq!(gaps, [10, 20, 40]);
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_raises_the_delay() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let h = Scripted::new(|t| {
        if t.tries == 0 {
            HandlerOutcome::from(workflow_core::AttemptResult::Retryable {
                error: "429".into(),
                retry_after: Some(Duration::from_secs(90)),
            })
        } else {
            HandlerOutcome::success()
        }
    });
    let e = engine(store.clone(), h, config());
    e.enqueue(task("a", Priority::High)).await.unwrap();
    wait_final(&store, "a").await;
    let a = store.attempts("a").await.unwrap();
    assert_eq!((a[1].started_at - a[0].started_at).num_seconds(), 90);
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_fails_at_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let h = Scripted::new(|_| HandlerOutcome::permanent("HTTP 410").with_status(Some(410)));
    let e = engine(store.clone(), h.clone(), config());
    e.enqueue(task("a", Priority::Low)).await.unwrap();
    let t = wait_final(&store, "a").await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(h.seen().len(), 1);
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_deferred_attempt_does_not_spend_a_try() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let h = Scripted::new(|t| {
        if t.attempt == 1 {
            HandlerOutcome::deferred(Duration::from_secs(30), "circuit open")
        } else {
            HandlerOutcome::success()
        }
    });
    let e = engine(store.clone(), h.clone(), config());
    e.enqueue(task("a", Priority::Low)).await.unwrap();
    let t = wait_final(&store, "a").await;
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.tries, 1, "only the real attempt counts");
    assert_eq!(store.attempts("a").await.unwrap().len(), 1);
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_workers_task_is_reattempted_and_its_late_write_rejected() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store
        .enqueue(task("a", Priority::High), Default::default())
        .await
        .unwrap();
    // A worker claims it and "dies" (never finishes).
    let clock = TokioClock::default();
    let dead = store
        .claim_due(
            "dead-worker",
            workflow_core::Clock::now(&clock),
            Duration::from_secs(5),
            1,
            &[],
        )
        .await
        .unwrap()
        .remove(0);
    let h = Scripted::new(|_| HandlerOutcome::success());
    let e = engine(store.clone(), h.clone(), config());
    let t = wait_final(&store, "a").await;
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.attempt, 2, "reclaimed after the lease expired");
    let late = store
        .finish_attempt(
            &Fence::of(&dead),
            Default::default(),
            workflow_core::Completion::Failed {
                error: "late".into(),
            },
            Utc::now(),
        )
        .await
        .unwrap_err();
    assert!(late.is_fenced());
    assert_eq!(
        store.get("a").await.unwrap().unwrap().status,
        TaskStatus::Completed
    );
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn queue_full_is_a_typed_error() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let h = Scripted::holding(Duration::from_secs(3600));
    let e = engine(
        store.clone(),
        h,
        EngineConfig {
            task_queue_size: Some(2),
            ..config()
        },
    );
    e.enqueue(task("a", Priority::Low)).await.unwrap();
    e.enqueue(task("b", Priority::Low)).await.unwrap();
    let err = e.enqueue(task("c", Priority::Low)).await.unwrap_err();
    assert!(err.is_queue_full(), "{err}");
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_task_stops_its_handler_and_ends_cancelled() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let h = Scripted::holding(Duration::from_secs(3600));
    let e = engine(store.clone(), h.clone(), config());
    e.enqueue(task("a", Priority::Low)).await.unwrap();
    while h.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(
        e.cancel("a").await.unwrap(),
        CancelOutcome::Requested(_)
    ));
    let t = wait_final(&store, "a").await;
    assert_eq!(t.status, TaskStatus::Cancelled);
    // Cancelling again, or a waiting task, is immediate.
    assert!(matches!(
        e.cancel("a").await.unwrap(),
        CancelOutcome::AlreadyFinal(_)
    ));
    let mut later = task("b", Priority::Low);
    later.run_at = Utc::now() + chrono::Duration::days(1);
    e.enqueue(later).await.unwrap();
    assert!(matches!(
        e.cancel("b").await.unwrap(),
        CancelOutcome::Cancelled(_)
    ));
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_engine_does_not_poll() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let e = engine(
        store.clone(),
        Scripted::new(|_| HandlerOutcome::success()),
        config(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = e.claim_rounds();
    // Ten idle minutes: only the one-minute safety net may wake it.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let rounds = e.claim_rounds() - before;
    assert!(rounds <= 11, "{rounds} claim rounds in 10 idle minutes");
    // And an enqueue still wakes it at once.
    e.enqueue(task("a", Priority::Low)).await.unwrap();
    assert_eq!(wait_final(&store, "a").await.status, TaskStatus::Completed);
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn per_target_cap_keeps_one_slow_target_from_taking_every_slot() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let h = Scripted::holding(Duration::from_secs(60));
    for i in 0..10 {
        store
            .enqueue(
                task(&format!("slow{i}"), Priority::Critical),
                Default::default(),
            )
            .await
            .unwrap();
    }
    let mut fast = task("fast", Priority::Low);
    fast.target = Some("https://fast.example:443".into());
    store.enqueue(fast, Default::default()).await.unwrap();
    let e = engine(
        store.clone(),
        h.clone(),
        EngineConfig {
            max_in_flight: 4,
            per_target_in_flight: 2,
            ..config()
        },
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = h.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.contains(&"fast".to_owned()),
        "the other target got a slot: {seen:?}"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_running_tasks_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_path(&path).unwrap());
    let h = Scripted::holding(Duration::from_secs(3600));
    let e = engine(
        store.clone(),
        h.clone(),
        EngineConfig {
            shutdown_grace: Duration::from_millis(50),
            ..config()
        },
    );
    e.enqueue(task("a", Priority::Low)).await.unwrap();
    while h.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    e.shutdown().await;
    let t = store.get("a").await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Pending, "released, not left leased");
    // A new engine on the same file finishes it.
    let store2: Arc<dyn Store> = Arc::new(SqliteStore::open_path(&path).unwrap());
    let e2 = engine(
        store2.clone(),
        Scripted::new(|_| HandlerOutcome::success()),
        config(),
    );
    assert_eq!(wait_final(&store2, "a").await.status, TaskStatus::Completed);
    e2.shutdown().await;
}
