//! Engine behaviour with paused time and real stores.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use parking_lot::Mutex;
use workflow_core::{
    AttemptContext, CancelOutcome, Engine, EngineConfig, EngineEvent, ExponentialBackoff, Fence,
    Handler, HandlerOutcome, Jitter, MemoryStore, NewTask, Priority, SqliteStore, Store, Task,
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
        backoff: ExponentialBackoff::try_new(
            Duration::from_secs(10),
            Duration::from_secs(3600),
            Jitter::None,
        )
        .unwrap(),
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

/// Panics on its first attempt of each task, then succeeds.
struct PanicsOnce;

#[async_trait]
impl Handler for PanicsOnce {
    async fn handle(&self, task: &Task, ctx: AttemptContext) -> HandlerOutcome {
        if ctx.attempt == 1 {
            panic!("handler bug on {}", task.id);
        }
        HandlerOutcome::success()
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_spends_an_attempt_and_gives_back_its_slot() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // One slot, one per target: a slot leaked by the panic would stall every later task.
    let e = engine(
        store.clone(),
        Arc::new(PanicsOnce),
        EngineConfig {
            max_in_flight: 1,
            per_target_in_flight: 1,
            lease: Duration::from_secs(30),
            ..config()
        },
    );
    for id in ["p1", "p2", "p3"] {
        e.enqueue(task(id, Priority::High)).await.unwrap();
    }
    for id in ["p1", "p2", "p3"] {
        let t = wait_final(&store, id).await;
        assert_eq!(t.status, TaskStatus::Completed, "{id}");
        assert_eq!(
            t.tries, 2,
            "{id}: the panicked attempt counts, the next one succeeds"
        );
        let attempts = store.attempts(id).await.unwrap();
        assert_eq!(attempts[0].outcome, "retryable");
        assert_eq!(
            attempts[0].error.as_deref(),
            Some(format!("handler panicked: handler bug on {id}").as_str())
        );
    }
    assert_eq!(e.in_flight(), 0);
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
    // A new engine on the same file finishes it (the file is locked while the first is open).
    drop((e, store));
    let store2: Arc<dyn Store> = Arc::new(SqliteStore::open_path(&path).unwrap());
    let e2 = engine(
        store2.clone(),
        Scripted::new(|_| HandlerOutcome::success()),
        config(),
    );
    assert_eq!(wait_final(&store2, "a").await.status, TaskStatus::Completed);
    e2.shutdown().await;
}

/// A store whose lease extensions for one owner silently do nothing: that worker looks alive to
/// itself but its lease runs out, like a worker stuck or cut off from the database. Its claims
/// can also be made to take a while (`claim_delay`), like a busy database's.
#[derive(Debug)]
struct Partitioned {
    inner: Arc<dyn Store>,
    owner: String,
    claim_delay: Duration,
}

#[async_trait]
impl Store for Partitioned {
    async fn enqueue(
        &self,
        task: NewTask,
        limits: workflow_core::EnqueueLimits,
    ) -> workflow_core::StoreResult<workflow_core::Enqueued> {
        self.inner.enqueue(task, limits).await
    }
    async fn enqueue_batch(
        &self,
        tasks: Vec<NewTask>,
        limits: workflow_core::EnqueueLimits,
    ) -> workflow_core::StoreResult<Vec<workflow_core::Enqueued>> {
        self.inner.enqueue_batch(tasks, limits).await
    }
    async fn enqueue_claimed(
        &self,
        tasks: Vec<NewTask>,
        limits: workflow_core::EnqueueLimits,
        owner: &str,
        now: chrono::DateTime<Utc>,
        lease: Duration,
    ) -> workflow_core::StoreResult<Vec<workflow_core::Enqueued>> {
        self.inner
            .enqueue_claimed(tasks, limits, owner, now, lease)
            .await
    }
    async fn claim_due(
        &self,
        owner: &str,
        now: chrono::DateTime<Utc>,
        lease: Duration,
        max: usize,
        skip: &[String],
    ) -> workflow_core::StoreResult<Vec<Task>> {
        // What is due is read as the claim begins; the delay stands for the time it takes.
        let claimed = self.inner.claim_due(owner, now, lease, max, skip).await;
        tokio::time::sleep(self.claim_delay).await;
        claimed
    }
    async fn finish_attempt(
        &self,
        fence: &Fence,
        attempt: workflow_core::AttemptRecord,
        completion: workflow_core::Completion,
        now: chrono::DateTime<Utc>,
    ) -> workflow_core::StoreResult<Task> {
        self.inner
            .finish_attempt(fence, attempt, completion, now)
            .await
    }
    async fn release(
        &self,
        fence: &Fence,
        release: workflow_core::Release,
        now: chrono::DateTime<Utc>,
    ) -> workflow_core::StoreResult<Task> {
        self.inner.release(fence, release, now).await
    }
    async fn extend_lease(
        &self,
        fence: &Fence,
        until: chrono::DateTime<Utc>,
    ) -> workflow_core::StoreResult<()> {
        if fence.owner == self.owner {
            return Ok(());
        }
        self.inner.extend_lease(fence, until).await
    }
    async fn get(&self, id: &str) -> workflow_core::StoreResult<Option<Task>> {
        self.inner.get(id).await
    }
    async fn attempts(
        &self,
        id: &str,
    ) -> workflow_core::StoreResult<Vec<workflow_core::AttemptRecord>> {
        self.inner.attempts(id).await
    }
    async fn events(&self, id: &str) -> workflow_core::StoreResult<Vec<workflow_core::TaskEvent>> {
        self.inner.events(id).await
    }
    async fn cancel(
        &self,
        id: &str,
        reason: &str,
        now: chrono::DateTime<Utc>,
    ) -> workflow_core::StoreResult<CancelOutcome> {
        self.inner.cancel(id, reason, now).await
    }
    async fn retry_now(
        &self,
        id: &str,
        now: chrono::DateTime<Utc>,
    ) -> workflow_core::StoreResult<Task> {
        self.inner.retry_now(id, now).await
    }
    async fn record_callback(
        &self,
        id: &str,
        callback: workflow_core::CallbackRecord,
    ) -> workflow_core::StoreResult<Task> {
        self.inner.record_callback(id, callback).await
    }
    async fn list(
        &self,
        filter: &workflow_core::TaskFilter,
    ) -> workflow_core::StoreResult<workflow_core::Page> {
        self.inner.list(filter).await
    }
    async fn next_due_at(&self) -> workflow_core::StoreResult<Option<chrono::DateTime<Utc>>> {
        self.inner.next_due_at().await
    }
    async fn counts(&self) -> workflow_core::StoreResult<workflow_core::Counts> {
        self.inner.counts().await
    }
    async fn prune(&self, before: chrono::DateTime<Utc>) -> workflow_core::StoreResult<u64> {
        self.inner.prune(before).await
    }
    async fn ping(&self) -> workflow_core::StoreResult<()> {
        self.inner.ping().await
    }
    fn wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.inner.wakeup()
    }
}

/// Holds every attempt until the test opens the gate, ignoring cancellation (a stuck worker).
struct Gate {
    seen: Mutex<Vec<String>>,
    open: tokio::sync::Notify,
}

#[async_trait]
impl Handler for Gate {
    async fn handle(&self, task: &Task, _ctx: AttemptContext) -> HandlerOutcome {
        self.seen.lock().push(task.id.clone());
        self.open.notified().await;
        HandlerOutcome::success()
    }
}

#[tokio::test(start_paused = true)]
async fn a_stuck_workers_lease_expires_another_engine_finishes_and_the_late_write_is_fenced() {
    let shared: Arc<dyn Store> = Arc::new(MemoryStore::new());
    shared
        .enqueue(task("a", Priority::High), Default::default())
        .await
        .unwrap();
    let stuck: Arc<dyn Store> = Arc::new(Partitioned {
        inner: shared.clone(),
        owner: "stuck".into(),
        claim_delay: Duration::ZERO,
    });
    let gate = Arc::new(Gate {
        seen: Mutex::new(vec![]),
        open: tokio::sync::Notify::new(),
    });
    let lease = Duration::from_secs(6);
    // One slot, so the stuck engine cannot reclaim the task itself when its lease runs out.
    let a = engine(
        stuck,
        gate.clone(),
        EngineConfig {
            owner_id: "stuck".into(),
            max_in_flight: 1,
            lease,
            ..config()
        },
    );
    let mut a_events = a.subscribe();
    while gate.seen.lock().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let healthy = Scripted::new(|_| HandlerOutcome::success());
    let b = engine(
        shared.clone(),
        healthy.clone(),
        EngineConfig {
            owner_id: "healthy".into(),
            lease,
            ..config()
        },
    );
    let t = wait_final(&shared, "a").await;
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.attempt, 2, "the second claim is the one that completed");
    assert_eq!(healthy.seen(), ["a"]);
    // The stuck worker finally answers: its write is refused and reported.
    gate.open.notify_one();
    let fenced = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let EngineEvent::Fenced { task_id, attempt } = a_events.recv().await.unwrap() {
                return (task_id, attempt);
            }
        }
    })
    .await
    .expect("the stale write is reported");
    assert_eq!(fenced, ("a".to_owned(), 1));
    let t = shared.get("a").await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.tries, 1, "only the healthy attempt is recorded");
    assert_eq!(shared.attempts("a").await.unwrap().len(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_written_to_the_store_reaches_the_running_handler_within_a_heartbeat() {
    // As when another instance (or an admin tool) cancels: only the store knows.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let h = Scripted::holding(Duration::from_secs(3600));
    let e = engine(
        store.clone(),
        h.clone(),
        EngineConfig {
            lease: Duration::from_secs(9),
            ..config()
        },
    );
    e.enqueue(task("a", Priority::Low)).await.unwrap();
    while h.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let asked_at = tokio::time::Instant::now();
    assert!(matches!(
        store
            .cancel("a", "cancelled elsewhere", e.now())
            .await
            .unwrap(),
        CancelOutcome::Requested(_)
    ));
    let t = wait_final(&store, "a").await;
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert!(
        asked_at.elapsed() <= Duration::from_secs(4),
        "noticed at the next heartbeat (lease / 3), not at the end of the 1 h handler"
    );
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_racing_the_end_of_an_attempt_never_schedules_a_retry() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Ignores the token and answers once the gate opens: success for "ok", failure otherwise.
    struct LateAnswer(tokio::sync::Notify, Mutex<Vec<String>>);
    #[async_trait]
    impl Handler for LateAnswer {
        async fn handle(&self, task: &Task, _ctx: AttemptContext) -> HandlerOutcome {
            self.1.lock().push(task.id.clone());
            self.0.notified().await;
            if task.id == "ok" {
                HandlerOutcome::success()
            } else {
                HandlerOutcome::retryable("HTTP 503")
            }
        }
    }
    let h = Arc::new(LateAnswer(tokio::sync::Notify::new(), Mutex::new(vec![])));
    let e = engine(store.clone(), h.clone(), config());
    let mut events = e.subscribe();
    e.enqueue(task("ok", Priority::Low)).await.unwrap();
    e.enqueue(task("bad", Priority::Low)).await.unwrap();
    while h.1.lock().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in ["ok", "bad"] {
        assert!(matches!(
            e.cancel(id).await.unwrap(),
            CancelOutcome::Requested(_)
        ));
    }
    h.0.notify_waiters();
    // The delivery that happened is not denied; the one that failed is not retried.
    assert_eq!(wait_final(&store, "ok").await.status, TaskStatus::Completed);
    assert_eq!(
        wait_final(&store, "bad").await.status,
        TaskStatus::Cancelled
    );
    while let Ok(ev) = events.try_recv() {
        assert!(
            !matches!(ev, EngineEvent::RetryScheduled { .. }),
            "no retry for a cancelled task: {ev:?}"
        );
    }
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_target_at_its_cap_does_not_hold_back_another_targets_due_task() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let h = Scripted::holding(Duration::from_secs(3600));
    for id in ["slow1", "slow2"] {
        store
            .enqueue(task(id, Priority::Critical), Default::default())
            .await
            .unwrap();
    }
    let e = engine(
        store.clone(),
        h.clone(),
        EngineConfig {
            per_target_in_flight: 1,
            ..config()
        },
    );
    let mut later = task("other", Priority::Low);
    later.target = Some("https://other.example:443".into());
    later.run_at = e.now() + chrono::Duration::seconds(10);
    let enqueued_at = e.now();
    e.enqueue(later).await.unwrap();
    while !h.seen().contains(&"other".to_owned()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = store.get("other").await.unwrap().unwrap().updated_at;
    let waited = (started - enqueued_at).num_milliseconds();
    // Paused (logical) time: due after 10 s, found within the capped re-check, long before the
    // one-minute idle safety net.
    assert!(
        (9_000..=12_000).contains(&waited),
        "started after {waited} ms"
    );
    assert_eq!(h.seen().iter().filter(|s| s.starts_with("slow")).count(), 1);
    e.shutdown().await;
}

#[tokio::test]
async fn priority_order_and_durable_retries_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_path(dir.path().join("e.db")).unwrap());
    for (id, p) in [
        ("l1", Priority::Low),
        ("m1", Priority::Medium),
        ("c1", Priority::Critical),
        ("h1", Priority::High),
        ("l2", Priority::Low),
        ("c2", Priority::Critical),
    ] {
        store
            .enqueue(task(id, p), Default::default())
            .await
            .unwrap();
    }
    let mut failing = task("retry", Priority::Low);
    failing.kind = "failing".into();
    failing.run_at = Utc::now() + chrono::Duration::days(1);
    let order = Scripted::new(|_| HandlerOutcome::success());
    let fails = Scripted::new(|_| HandlerOutcome::retryable("HTTP 502").with_status(Some(502)));
    let e = Engine::builder(store.clone())
        .handler("webhook", order.clone())
        .handler("failing", fails)
        .config(EngineConfig {
            max_in_flight: 1,
            backoff: ExponentialBackoff::try_new(
                Duration::from_millis(20),
                Duration::from_secs(1),
                Jitter::None,
            )
            .unwrap(),
            ..config()
        })
        .start();
    wait_final(&store, "l2").await;
    assert_eq!(order.seen(), ["c1", "c2", "h1", "m1", "l1", "l2"]);
    let mut events = e.subscribe();
    failing.run_at = Utc::now();
    e.enqueue(failing).await.unwrap();
    let t = wait_final(&store, "retry").await;
    assert_eq!(t.status, TaskStatus::Failed);
    let attempts = store.attempts("retry").await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.n).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "every attempt is a row"
    );
    let mut delays = vec![];
    while let Ok(ev) = events.try_recv() {
        if let EngineEvent::RetryScheduled { delay_ms, .. } = ev {
            delays.push(delay_ms);
        }
    }
    assert_eq!(delays, [20, 40, 80]);
    e.shutdown().await;
}

/// Defers every task of one target until a fixed moment (a breaker open until then) and
/// succeeds at once for every other target; counts the deferrals.
struct OpenUntil {
    target: String,
    reopen: tokio::time::Instant,
    deferrals: Mutex<usize>,
    others_done: Mutex<Vec<tokio::time::Instant>>,
}

#[async_trait]
impl Handler for OpenUntil {
    async fn handle(&self, task: &Task, _ctx: AttemptContext) -> HandlerOutcome {
        let now = tokio::time::Instant::now();
        if task.target.as_deref() == Some(&self.target) {
            if now < self.reopen {
                *self.deferrals.lock() += 1;
                return HandlerOutcome::deferred(self.reopen - now, "circuit open for target");
            }
        } else {
            self.others_done.lock().push(now);
        }
        HandlerOutcome::success()
    }
}

#[tokio::test(start_paused = true)]
async fn a_deferring_target_is_held_back_instead_of_claimed_over_and_over() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let held = "https://down.example:443";
    for i in 0..500 {
        let mut t = task(&format!("down-{i}"), Priority::High);
        t.target = Some(held.to_owned());
        store.enqueue(t, Default::default()).await.unwrap();
    }
    for i in 0..20 {
        let mut t = task(&format!("up-{i}"), Priority::Low);
        t.target = Some("https://up.example:443".to_owned());
        store.enqueue(t, Default::default()).await.unwrap();
    }
    let h = Arc::new(OpenUntil {
        target: held.to_owned(),
        reopen: tokio::time::Instant::now() + Duration::from_secs(30),
        deferrals: Mutex::new(0),
        others_done: Mutex::new(vec![]),
    });
    let mut cfg = config();
    cfg.max_in_flight = 16;
    cfg.per_target_in_flight = 16;
    cfg.batch_size = 16;
    let e = engine(store.clone(), h.clone(), cfg);
    for i in 0..500 {
        let t = wait_final(&store, &format!("down-{i}")).await;
        assert_eq!(t.status, TaskStatus::Completed);
        assert_eq!(t.tries, 1, "deferrals spend no attempt");
    }
    for i in 0..20 {
        assert_eq!(
            wait_final(&store, &format!("up-{i}")).await.status,
            TaskStatus::Completed
        );
    }
    // Without the hold every one of the 500 due tasks is claimed and given back at least
    // once; with it, only what was already claimed when the first deferral came back.
    let deferrals = *h.deferrals.lock();
    assert!(
        deferrals <= 32,
        "{deferrals} deferrals: the held target's tasks were claimed while it was held"
    );
    assert!(deferrals >= 1);
    // The other target's tasks, lower in priority, went while the first one was held.
    let others = h.others_done.lock().clone();
    assert_eq!(others.len(), 20);
    assert!(others.iter().all(|at| *at < h.reopen), "{others:?}");
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_task_goes_straight_to_a_free_worker_without_a_claim_round() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let h = Scripted::holding(Duration::ZERO);
    let e = engine(store.clone(), h.clone(), config());
    // The first round finds the store empty; from then on new tasks need no round.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rounds = e.claim_rounds();
    for i in 0..5 {
        e.enqueue(task(&format!("t{i}"), Priority::Low))
            .await
            .unwrap();
    }
    for i in 0..5 {
        let t = wait_final(&store, &format!("t{i}")).await;
        assert_eq!(
            (t.status, t.attempt, t.tries),
            (TaskStatus::Completed, 1, 1)
        );
    }
    assert_eq!(e.claim_rounds(), rounds, "no claim round was needed");
    let events = store.events("t0").await.unwrap();
    let reasons: Vec<_> = events.iter().map(|e| (e.to, e.reason.as_str())).collect();
    assert_eq!(
        reasons[..2],
        [
            (TaskStatus::Pending, "created"),
            (TaskStatus::Processing, "claimed"),
        ]
    );
    assert_eq!(reasons.last().map(|r| r.0), Some(TaskStatus::Completed));
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_task_does_not_overtake_due_work_held_back_by_its_targets_cap() {
    let store: Arc<dyn Store> = Arc::new(Partitioned {
        inner: Arc::new(MemoryStore::new()),
        owner: "nobody".into(),
        claim_delay: Duration::from_millis(100),
    });
    let h = Arc::new(Gate {
        seen: Mutex::new(vec![]),
        open: tokio::sync::Notify::new(),
    });
    let e = engine(
        store.clone(),
        h.clone(),
        EngineConfig {
            per_target_in_flight: 1,
            ..config()
        },
    );
    e.enqueue(task("first", Priority::Low)).await.unwrap();
    while h.seen.lock().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The target is at its cap: this one waits in the store, and the claim loop's round skips
    // the target and claims nothing, which must not count as having drained the store.
    e.enqueue(task("waiting", Priority::Critical))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The slot frees; the claim loop's next round (slow to answer) is under way when a new
    // task of a lower priority arrives: it must not take the slot from the one waiting.
    h.open.notify_one();
    while !store.get("first").await.unwrap().unwrap().status.is_final() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    e.enqueue(task("new", Priority::Low)).await.unwrap();
    for id in ["waiting", "new"] {
        while !store.get(id).await.unwrap().unwrap().status.is_final() {
            h.open.notify_one();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(h.seen.lock().clone(), ["first", "waiting", "new"]);
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_task_does_not_overtake_due_work_waiting_in_the_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Due work from before this start, of a higher priority than what arrives next.
    store
        .enqueue(task("waiting", Priority::Critical), Default::default())
        .await
        .unwrap();
    let h = Scripted::holding(Duration::from_millis(100));
    let e = engine(
        store.clone(),
        h.clone(),
        EngineConfig {
            max_in_flight: 1,
            ..config()
        },
    );
    // Before the claim loop's first round: a free slot, but the store may hold due work.
    e.enqueue(task("new", Priority::Low)).await.unwrap();
    wait_final(&store, "new").await;
    assert_eq!(h.seen(), ["waiting", "new"]);
    e.shutdown().await;
}
