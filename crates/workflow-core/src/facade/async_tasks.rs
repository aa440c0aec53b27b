//! `AsyncTaskManager`: long bot requests as durable background jobs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineError};
use crate::handler::HandlerOutcome;
use crate::model::{CallbackRecord, NewTask, Priority, Task};
use crate::store::{CancelOutcome, Enqueued};

/// The task kind of bot jobs.
pub const BOT_JOB_KIND: &str = "bot_job";

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

/// The payload of a `bot_job` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotJob {
    /// Who asked (DingTalk staff id).
    pub user_id: String,
    /// Where (DingTalk conversation id).
    pub conversation_id: String,
    /// The conversation's reply webhook at the time (may expire before the job ends).
    pub webhook_url: String,
    /// What was asked.
    pub prompt: String,
    /// The task class used for duration statistics.
    pub class: String,
}

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

/// How many recent runs per class [`DurationStats::quantile`] looks at.
const RECENT_RUNS: usize = 64;

#[derive(Debug, Default)]
struct ClassStats {
    /// Exponentially weighted average, seconds.
    ewma: f64,
    /// Runs seen.
    count: u64,
    /// The last [`RECENT_RUNS`] durations, seconds.
    recent: VecDeque<f64>,
}

/// Observed durations per task class, so a caller can predict whether a request will be long:
/// an exponentially weighted average (a class that became slow is recognised after a few runs)
/// and quantiles over the last 64 runs.
#[derive(Debug, Clone, Default)]
pub struct DurationStats {
    classes: Arc<Mutex<HashMap<String, ClassStats>>>,
}

impl DurationStats {
    /// Records one run of `class`.
    pub fn record(&self, class: &str, took: Duration) {
        let secs = took.as_secs_f64();
        let mut map = self.classes.lock();
        let entry = map.entry(class.to_owned()).or_default();
        entry.ewma = if entry.count == 0 {
            secs
        } else {
            0.7 * entry.ewma + 0.3 * secs
        };
        entry.count += 1;
        if entry.recent.len() == RECENT_RUNS {
            entry.recent.pop_front();
        }
        entry.recent.push_back(secs);
    }

    /// The typical duration of `class` (weighted average), once it has been seen.
    pub fn estimate(&self, class: &str) -> Option<Duration> {
        self.classes
            .lock()
            .get(class)
            .map(|c| Duration::from_secs_f64(c.ewma))
    }

    /// The `q` quantile (0.0 to 1.0, e.g. 0.9) of the last runs of `class`, once it has been seen.
    pub fn quantile(&self, class: &str, q: f64) -> Option<Duration> {
        let map = self.classes.lock();
        let c = map.get(class)?;
        let mut sorted: Vec<f64> = c.recent.iter().copied().collect();
        drop(map);
        sorted.sort_by(f64::total_cmp);
        let last = sorted.len().checked_sub(1)?;
        // Nearest rank over at most 64 samples.
        let idx = ((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last);
        Some(Duration::from_secs_f64(sorted[idx]))
    }

    /// How many runs of `class` have been recorded.
    pub fn runs(&self, class: &str) -> u64 {
        self.classes.lock().get(class).map_or(0, |c| c.count)
    }

    /// Whether `class` typically takes longer than `threshold`.
    pub fn predict_long(&self, class: &str, threshold: Duration) -> bool {
        self.estimate(class).is_some_and(|d| d > threshold)
    }
}

/// The seed's `AsyncTaskManager`, over an [`Engine`] with a `bot_job` handler.
#[derive(Debug, Clone)]
pub struct AsyncTaskManager {
    engine: Engine,
    config: AsyncTaskConfig,
    stats: DurationStats,
}

impl AsyncTaskManager {
    /// A manager over `engine`.
    pub fn new(engine: Engine, config: AsyncTaskConfig) -> AsyncTaskManager {
        AsyncTaskManager {
            engine,
            config,
            stats: DurationStats::default(),
        }
    }

    /// A manager sharing `stats` with whoever records durations (e.g. the job handler).
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

    /// Queues a background job. Returns the stored task.
    ///
    /// # Errors
    ///
    /// Queue full or a store failure.
    pub async fn create_task(
        &self,
        user_id: &str,
        conversation_id: &str,
        webhook_url: &str,
        prompt: &str,
    ) -> Result<Task, EngineError> {
        let job = BotJob {
            user_id: user_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            webhook_url: webhook_url.to_owned(),
            prompt: prompt.to_owned(),
            class: self.classify(prompt),
        };
        let task = NewTask {
            id: format!("bot_{}", uuid::Uuid::now_v7().simple()),
            kind: BOT_JOB_KIND.to_owned(),
            priority: Priority::Medium,
            payload: serde_json::to_value(&job).expect("a bot job always serialises"),
            target: Some(user_id.to_owned()),
            max_attempts: self.config.max_attempts.max(1),
            run_at: self.engine.now(),
            idempotency_key: None,
        };
        match self.engine.enqueue(task).await? {
            Enqueued::Created(t) | Enqueued::Existing(t) => Ok(t),
        }
    }

    /// A job by id.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn get_task(&self, id: &str) -> Result<Option<Task>, EngineError> {
        Ok(self.engine.store().get(id).await?)
    }

    /// Records how long a finished job of `class` took (feeds [`AsyncTaskManager::should_use_async`]).
    pub fn record_duration(&self, class: &str, took: Duration) {
        self.stats.record(class, took);
    }

    /// Records progress on a running job: kept as the task's latest report
    /// ([`Task::callback`], status `in_progress`) so `get_task` shows it.
    ///
    /// # Errors
    ///
    /// Not found, or a store failure.
    pub async fn update_status(&self, id: &str, note: &str) -> Result<Task, EngineError> {
        let report = CallbackRecord {
            status: "in_progress".to_owned(),
            note: Some(note.to_owned()),
            at: self.engine.now(),
        };
        Ok(self.engine.store().record_callback(id, report).await?)
    }

    /// Ends a job's attempt successfully: records its duration for the job's class and returns
    /// the outcome a `bot_job` handler returns (the engine then stores `result` and marks the
    /// task `completed`).
    pub fn complete_task(
        &self,
        task: &Task,
        result: serde_json::Value,
        took: Duration,
    ) -> HandlerOutcome {
        self.stats.record(&job_class(task), took);
        HandlerOutcome::success_with(result)
    }

    /// Ends a job's attempt with a failure: the outcome a `bot_job` handler returns. A retryable
    /// failure is retried on the engine's schedule until attempts run out; otherwise the task
    /// is `failed` at once.
    pub fn fail_task(&self, error: impl Into<String>, retryable: bool) -> HandlerOutcome {
        if retryable {
            HandlerOutcome::retryable(error)
        } else {
            HandlerOutcome::permanent(error)
        }
    }

    /// Cancels a job.
    ///
    /// # Errors
    ///
    /// Not found, or a store failure.
    pub async fn cancel_task(&self, id: &str) -> Result<CancelOutcome, EngineError> {
        self.engine.cancel(id).await
    }

    /// Deletes final tasks that finished more than `older_than` ago, with their attempts and
    /// events. Returns how many. The store is shared by every kind, so this prunes final tasks of
    /// every kind (as the engine's own `prune_after` does).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn cleanup(&self, older_than: Duration) -> Result<u64, EngineError> {
        let before = self.engine.now()
            - chrono::Duration::from_std(older_than).unwrap_or(chrono::TimeDelta::MAX);
        Ok(self.engine.store().prune(before).await?)
    }
}

/// The class of a job: its payload's `class` field, or `general`.
fn job_class(task: &Task) -> String {
    task.payload
        .get("class")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("general")
        .to_owned()
}
