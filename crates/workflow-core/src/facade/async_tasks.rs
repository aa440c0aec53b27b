//! `AsyncTaskManager`: long bot requests as durable background jobs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineError};
use crate::model::{NewTask, Priority, Task};
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

/// Observed durations per task class: an exponentially weighted average, so a class that
/// became slow is recognised after a few runs.
#[derive(Debug, Clone, Default)]
pub struct DurationStats {
    classes: Arc<Mutex<HashMap<String, (f64, u64)>>>,
}

impl DurationStats {
    /// Records one run of `class`.
    pub fn record(&self, class: &str, took: Duration) {
        let mut map = self.classes.lock();
        let entry = map
            .entry(class.to_owned())
            .or_insert((took.as_secs_f64(), 0));
        entry.0 = if entry.1 == 0 {
            took.as_secs_f64()
        } else {
            0.7 * entry.0 + 0.3 * took.as_secs_f64()
        };
        entry.1 += 1;
    }

    /// The typical duration of `class`, once it has been seen.
    pub fn estimate(&self, class: &str) -> Option<Duration> {
        self.classes
            .lock()
            .get(class)
            .map(|(avg, _)| Duration::from_secs_f64(*avg))
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
    pub fn complete_task(&self, class: &str, took: Duration) {
        self.stats.record(class, took);
    }

    /// Cancels a job.
    ///
    /// # Errors
    ///
    /// Not found, or a store failure.
    pub async fn cancel_task(&self, id: &str) -> Result<CancelOutcome, EngineError> {
        self.engine.cancel(id).await
    }

    /// Deletes final jobs older than `older_than`. Returns how many.
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
