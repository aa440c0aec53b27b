//! The manager over a real engine with paused time (moved from workflow-core's engine tests).

use std::sync::Arc;
use std::time::Duration;

use async_tasks::{AsyncTaskConfig, AsyncTaskManager, BotJob, DurationStats, new_task_id};
use async_trait::async_trait;
use workflow_core::{
    AttemptContext, Engine, EngineConfig, Enqueued, ExponentialBackoff, Handler, HandlerOutcome,
    Jitter, MemoryStore, Store, Task, TaskStatus, TokioClock,
};

/// Holds every attempt until cancelled.
struct Holding(Duration);

#[async_trait]
impl Handler for Holding {
    async fn handle(&self, _task: &Task, ctx: AttemptContext) -> HandlerOutcome {
        tokio::select! {
            () = tokio::time::sleep(self.0) => HandlerOutcome::success(),
            () = ctx.cancel.cancelled() => HandlerOutcome::retryable("cancelled"),
        }
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

async fn wait_final(store: &Arc<dyn Store>, id: &str) -> Task {
    for _ in 0..100_000 {
        if let Some(t) = store.get(id).await.unwrap()
            && t.status.is_final()
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} never reached a final status");
}

#[tokio::test(start_paused = true)]
async fn async_task_manager_routes_long_requests_and_learns_slow_classes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let e = Engine::builder(store.clone())
        .handler("bot_job", Arc::new(Holding(Duration::from_secs(3600))))
        .config(config())
        .clock(Arc::new(TokioClock::default()))
        .start();
    let stats = DurationStats::default();
    let m = AsyncTaskManager::with_stats(
        e.clone(),
        AsyncTaskConfig {
            long_after: Duration::from_secs(30),
            ..AsyncTaskConfig::default()
        },
        stats.clone(),
    );
    // The seed's keywords, case-insensitively, in English and Chinese.
    assert!(m.should_use_async("Please run a CLIENT ANALYSIS for Acme"));
    assert!(m.should_use_async("帮我分析公司的舆情"));
    assert!(m.should_use_async("请做竞品分析"));
    assert!(!m.should_use_async("hello"));
    assert_eq!(m.classify("帮我生成报告"), "生成报告");
    assert_eq!(m.classify("hello"), "general");
    // A class observed to be slow becomes long even without a keyword.
    for secs in [40, 50, 60] {
        stats.record("general", Duration::from_secs(secs));
    }
    assert!(m.should_use_async("hello"));
    assert_eq!(stats.runs("general"), 3);
    assert_eq!(
        stats.quantile("general", 0.0),
        Some(Duration::from_secs(40))
    );
    assert_eq!(
        stats.quantile("general", 1.0),
        Some(Duration::from_secs(60))
    );
    assert!(stats.estimate("never").is_none());

    let payload = BotJob {
        prompt: "详细分析 Acme".into(),
        user_id: "user1".into(),
        conversation_id: "conv1".into(),
        group: false,
        session_webhook: "https://session.example/x".into(),
        session_expires_ms: 0,
        received_ms: 0,
        long: true,
        class: m.classify("详细分析 Acme"),
        no_staff_id: false,
        attachments: Vec::new(),
        card: false,
    };
    let id = new_task_id();
    let Enqueued::Created(job) = m
        .create_task(&id, &payload, Some("msg:1".into()))
        .await
        .unwrap()
    else {
        panic!("a new job is created")
    };
    assert_eq!(job.kind, "bot_job");
    assert_eq!(job.target.as_deref(), Some("user1"), "per-user cap");
    assert_eq!(job.payload["class"], "详细分析");
    assert_eq!(
        BotJob::from_task(&job).unwrap(),
        payload,
        "one payload, read back"
    );
    // The same message again is the stored job, not a second one.
    let again = m
        .create_task(&new_task_id(), &payload, Some("msg:1".into()))
        .await
        .unwrap();
    assert!(matches!(again, Enqueued::Existing(t) if t.id == id));
    let got = m.get_task(&job.id).await.unwrap().unwrap();
    assert_eq!(got.id, id);
    let mine = m.recent_tasks("user1", 5).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert!(m.recent_tasks("someone else", 5).await.unwrap().is_empty());
    // What the job handler records when a job of the class finishes, learned for the class.
    stats.record(&payload.class, Duration::from_secs(90));
    assert_eq!(stats.estimate("详细分析"), Some(Duration::from_secs(90)));

    m.cancel_task(&job.id).await.unwrap();
    assert_eq!(
        wait_final(&store, &job.id).await.status,
        TaskStatus::Cancelled
    );
    // An unknown id is no job.
    assert!(m.get_task("missing").await.unwrap().is_none());
    e.shutdown().await;
}
