//! [`AsyncTaskManager`]: which requests run in the background, and the durable bot jobs
//! themselves (queue, look up, list, cancel) over a [`workflow_core::Engine`].

use std::time::Duration;

use workflow_core::{
    CancelOutcome, Engine, EngineError, Enqueued, NewTask, Priority, StoreError, Task, TaskFilter,
    TaskStatus,
};

use crate::job::{BotJob, JobResult, KIND};
use crate::stats::DurationStats;

/// The seed's keywords that mark a request as long.
pub const SEED_KEYWORDS: [&str; 7] = [
    "client analysis",
    "分析公司",
    "生成报告",
    "详细分析",
    "战略分析",
    "市场调研",
    "竞品分析",
];

/// Most finished jobs read back by [`AsyncTaskManager::learn_durations`] (one store page,
/// newest first).
const LEARN_FROM: usize = 1_000;

/// Options of [`AsyncTaskManager`].
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncTaskConfig {
    /// Keywords (case-insensitive) that make a request long.
    pub keywords: Vec<String>,
    /// A class whose typical duration exceeds this is treated as long.
    pub long_after: Duration,
    /// Attempts per job.
    pub max_attempts: u32,
}

impl Default for AsyncTaskConfig {
    fn default() -> Self {
        AsyncTaskConfig {
            keywords: SEED_KEYWORDS.iter().map(|s| (*s).to_owned()).collect(),
            long_after: Duration::from_secs(30),
            max_attempts: 3,
        }
    }
}

/// A new job id: `bot_` and a time-ordered hex suffix.
pub fn new_task_id() -> String {
    format!(
        "bot_{:016x}{:08x}",
        chrono::Utc::now().timestamp_micros(),
        rand::random::<u32>()
    )
}

/// The seed's `AsyncTaskManager`: classifies requests and keeps bot jobs ([`KIND`]) on an
/// [`Engine`] whose `bot_job` handler is a [`BotJobHandler`](crate::BotJobHandler).
#[derive(Debug, Clone)]
pub struct AsyncTaskManager {
    engine: Engine,
    config: AsyncTaskConfig,
    stats: DurationStats,
}

impl AsyncTaskManager {
    /// A manager over `engine`.
    pub fn new(engine: Engine, config: AsyncTaskConfig) -> AsyncTaskManager {
        AsyncTaskManager::with_stats(engine, config, DurationStats::default())
    }

    /// A manager sharing `stats` with whoever records durations (the job handler).
    pub fn with_stats(
        engine: Engine,
        config: AsyncTaskConfig,
        stats: DurationStats,
    ) -> AsyncTaskManager {
        AsyncTaskManager {
            engine,
            config,
            stats,
        }
    }

    /// The engine the jobs run on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The duration statistics.
    pub fn stats(&self) -> &DurationStats {
        &self.stats
    }

    /// The class of a request: its first keyword, or `general`.
    pub fn classify(&self, text: &str) -> String {
        let lower = text.to_lowercase();
        self.config
            .keywords
            .iter()
            .find(|k| lower.contains(&k.to_lowercase()))
            .cloned()
            .unwrap_or_else(|| "general".to_owned())
    }

    /// Whether a request should run in the background: it contains a keyword
    /// (case-insensitive), or its class has been observed to take long.
    pub fn should_use_async(&self, text: &str) -> bool {
        let lower = text.to_lowercase();
        self.config
            .keywords
            .iter()
            .any(|k| lower.contains(&k.to_lowercase()))
            || self
                .stats
                .predict_long(&self.classify(text), self.config.long_after)
    }

    /// Queues `job` as task `id` (see [`new_task_id`]) for its user; with an idempotency key, a
    /// second enqueue of the same key returns the stored task as [`Enqueued::Existing`].
    ///
    /// # Errors
    ///
    /// Queue full or a store failure.
    pub async fn create_task(
        &self,
        id: &str,
        job: &BotJob,
        idempotency_key: Option<String>,
    ) -> Result<Enqueued, EngineError> {
        let task = NewTask {
            id: id.to_owned(),
            kind: KIND.to_owned(),
            priority: Priority::Medium,
            payload: job.to_value(),
            target: Some(job.user_id.clone()),
            max_attempts: self.config.max_attempts.max(1),
            run_at: self.engine.now(),
            idempotency_key,
        };
        self.engine.enqueue(task).await
    }

    /// A bot job by id (`None` for an unknown id or a task of another kind).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn get_task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        Ok(self
            .engine
            .store()
            .get(id)
            .await?
            .filter(|t| t.kind == KIND))
    }

    /// A user's newest bot jobs, at most `limit`.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn recent_tasks(&self, user_id: &str, limit: usize) -> Result<Vec<Task>, StoreError> {
        let filter = TaskFilter {
            target: Some(user_id.to_owned()),
            kind: Some(KIND.to_owned()),
            limit,
            ..TaskFilter::default()
        };
        Ok(self.engine.store().list(&filter).await?.tasks)
    }

    /// Cancels a job (a running one is told to stop).
    ///
    /// # Errors
    ///
    /// Not found, or a store failure.
    pub async fn cancel_task(&self, id: &str) -> Result<CancelOutcome, EngineError> {
        self.engine.cancel(id).await
    }

    /// Records the processing time of the newest completed bot jobs (oldest first, so the
    /// weighted average ends on the latest), so a restarted service remembers how long requests
    /// take. Jobs stored before durations were kept are skipped. Returns how many were learnt.
    ///
    /// # Errors
    ///
    /// The store could not be read.
    pub async fn learn_durations(&self) -> Result<usize, StoreError> {
        let page = self
            .engine
            .store()
            .list(&TaskFilter {
                kind: Some(KIND.to_owned()),
                status: Some(TaskStatus::Completed),
                limit: LEARN_FROM,
                ..TaskFilter::default()
            })
            .await?;
        let mut learnt = 0;
        for task in page.tasks.iter().rev() {
            let Some(JobResult {
                took_ms: Some(ms),
                class: Some(class),
                ..
            }) = JobResult::from_task(task)
            else {
                continue;
            };
            self.stats.record(&class, Duration::from_millis(ms));
            learnt += 1;
        }
        Ok(learnt)
    }
}
