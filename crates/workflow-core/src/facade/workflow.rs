//! `WorkflowManager`: create, dispatch, inspect, cancel, retry and list deliveries.

use std::time::Duration;

use serde::Serialize;
use task_package::{CreateTaskRequest, Priority, TaskPackage, create_task_package};

use crate::engine::{Engine, EngineError};
use crate::model::{AttemptRecord, NewTask, Task, TaskEvent};
use crate::store::{CancelOutcome, Enqueued, Page, TaskFilter};
use crate::webhook::{WEBHOOK_KIND, WebhookPayload};

/// The seed's dispatcher options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowConfig {
    /// Retries after the first attempt (seed: 3).
    pub max_retries: u32,
    /// The first retry delay (seed: 30 s).
    pub base_retry_delay: Duration,
    /// The longest retry delay (seed: 1 h).
    pub max_retry_delay: Duration,
    /// Most tasks not yet final (default 100,000).
    pub task_queue_size: u64,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig {
            max_retries: 3,
            base_retry_delay: Duration::from_secs(30),
            max_retry_delay: Duration::from_secs(3600),
            task_queue_size: 100_000,
        }
    }
}

/// One delivery to queue.
#[derive(Debug, Clone)]
pub struct DispatchRequest {
    /// The task id (`wf_<unix>_<hex>`; see `task_package::TaskId`).
    pub task_id: String,
    /// The package, complete with callback fields.
    pub package: TaskPackage,
    /// Queue priority.
    pub priority: Priority,
    /// Same key, same task.
    pub idempotency_key: Option<String>,
}

/// A task with its history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskStatusView {
    /// The task.
    pub task: Task,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// Its state changes, oldest first.
    pub events: Vec<TaskEvent>,
}

/// The seed's `WorkflowManager`, over an [`Engine`] with a `webhook` handler.
#[derive(Debug, Clone)]
pub struct WorkflowManager {
    engine: Engine,
    config: WorkflowConfig,
}

impl WorkflowManager {
    /// A manager over `engine` (which must have a handler for `webhook` tasks).
    pub fn new(engine: Engine, config: WorkflowConfig) -> WorkflowManager {
        WorkflowManager { engine, config }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration.
    pub fn config(&self) -> &WorkflowConfig {
        &self.config
    }

    /// Packs a request into the standard package, stamped now.
    pub fn create_task_package(&self, request: &CreateTaskRequest) -> TaskPackage {
        create_task_package(request, self.engine.now())
    }

    /// Queues a delivery of the package to its `webhook_url`. Stored durably before returning.
    ///
    /// # Errors
    ///
    /// Queue full, duplicate id, or a store failure.
    pub async fn dispatch_task(&self, request: DispatchRequest) -> Result<Enqueued, EngineError> {
        let url = request.package.delivery_instructions.webhook_url.clone();
        let payload = WebhookPayload {
            url: url.clone(),
            package: serde_json::to_value(&request.package)
                .expect("a task package always serialises"),
        };
        let task = NewTask {
            id: request.task_id,
            kind: WEBHOOK_KIND.to_owned(),
            priority: request.priority,
            payload: serde_json::to_value(payload).expect("a payload always serialises"),
            target: webhook_client::target_key(&url),
            max_attempts: self.config.max_retries.saturating_add(1),
            run_at: self.engine.now(),
            idempotency_key: request.idempotency_key,
        };
        self.engine.enqueue(task).await
    }

    /// A task with its attempts and events, or `None`.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn get_task_status(&self, id: &str) -> Result<Option<TaskStatusView>, EngineError> {
        let store = self.engine.store();
        let Some(task) = store.get(id).await? else {
            return Ok(None);
        };
        let (attempts, events) = tokio::try_join!(store.attempts(id), store.events(id))?;
        Ok(Some(TaskStatusView {
            task,
            attempts,
            events,
        }))
    }

    /// Cancels a task.
    ///
    /// # Errors
    ///
    /// Not found, or a store failure.
    pub async fn cancel_task(&self, id: &str) -> Result<CancelOutcome, EngineError> {
        self.engine.cancel(id).await
    }

    /// Makes a failed task due now.
    ///
    /// # Errors
    ///
    /// Not found, not failed, or a store failure.
    pub async fn retry_task(&self, id: &str) -> Result<Task, EngineError> {
        self.engine.retry_now(id).await
    }

    /// Lists tasks, newest first.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn list_tasks(&self, filter: &TaskFilter) -> Result<Page, EngineError> {
        Ok(self.engine.store().list(filter).await?)
    }
}
