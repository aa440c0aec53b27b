//! `WorkflowManager`: create, dispatch, inspect, cancel, retry and list deliveries, and record
//! what receivers report back.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use task_package::{
    CreateTaskRequest, DeliveryFormat, Priority, TaskId, TaskPackage, create_task_package,
};
use webhook_client::WebhookClient;
use workflow_core::{
    AttemptRecord, CallbackRecord, CancelOutcome, Engine, EngineError, Enqueued, NewTask, Page,
    Task, TaskEvent, TaskFilter,
};

use crate::callback::{CallbackReport, CallbackTokens};
use crate::channels::{Channel, ChannelKind, Channels};
use crate::error::{Error, Result};
use crate::payload::{DeliveryPayload, Destination};
use crate::webhook::WEBHOOK_KIND;

/// What to do with a new task whose target's circuit breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BreakerOpenPolicy {
    /// Refuse it ([`Error::BreakerOpen`]; over HTTP, 503 with `Retry-After`: the seed's rule).
    #[default]
    Reject,
    /// Accept and deliver once the breaker lets a probe through.
    Queue,
}

/// The name is not a [`BreakerOpenPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected reject or queue, got {0:?}")]
pub struct UnknownBreakerOpenPolicy(pub String);

impl FromStr for BreakerOpenPolicy {
    type Err = UnknownBreakerOpenPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reject" => Ok(BreakerOpenPolicy::Reject),
            "queue" => Ok(BreakerOpenPolicy::Queue),
            other => Err(UnknownBreakerOpenPolicy(other.to_owned())),
        }
    }
}

/// The dispatcher's options. The retry budget is set here, in one place, and stored with each
/// task (`max_attempts`); the delays between attempts are the engine's
/// ([`workflow_core::EngineConfig::backoff`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowConfig {
    /// Retries after the first attempt (the seed's `max_retries`, default 3).
    pub max_retries: u32,
    /// Base of callback links: a package's `callback_url` is
    /// `{public_url}/workflow/tasks/{id}/callback`. Empty: packages carry no callback link.
    pub public_url: String,
    /// New tasks for a target whose breaker is open.
    pub breaker_open_policy: BreakerOpenPolicy,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig {
            max_retries: 3,
            public_url: String::new(),
            breaker_open_policy: BreakerOpenPolicy::default(),
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

/// What [`WorkflowManager::create_task`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedTask {
    /// The task (the existing one on a replay).
    pub task: Task,
    /// Whether the idempotency key named an existing task, which is returned as it is.
    pub replayed: bool,
    /// Where it is delivered (empty when only a channel was named).
    pub webhook_url: String,
    /// The preset channel named, if any.
    pub channel: Option<String>,
    /// With both a `webhook_url` and a channel: the task notifying the channel.
    pub channel_task_id: Option<String>,
}

/// The seed's `WorkflowManager`, over an [`Engine`] with a `webhook` handler
/// ([`crate::ChannelDeliveryHandler`] or [`crate::WebhookDeliveryHandler`]).
#[derive(Debug, Clone)]
pub struct WorkflowManager {
    engine: Engine,
    config: WorkflowConfig,
    channels: Channels,
    callbacks: Option<CallbackTokens>,
    client: Option<WebhookClient>,
}

impl WorkflowManager {
    /// A manager over `engine` (which must have a handler for `webhook` tasks), without
    /// channels, callback tokens or breaker checks until they are given.
    pub fn new(engine: Engine, config: WorkflowConfig) -> WorkflowManager {
        WorkflowManager {
            engine,
            config,
            channels: Channels::default(),
            callbacks: None,
            client: None,
        }
    }

    /// The preset channels requests may name.
    pub fn with_channels(mut self, channels: Channels) -> Self {
        self.channels = channels;
        self
    }

    /// Stamps packages with callback tokens from `tokens`, and checks reports with them.
    pub fn with_callback_tokens(mut self, tokens: CallbackTokens) -> Self {
        self.callbacks = Some(tokens);
        self
    }

    /// The delivery client whose breakers [`BreakerOpenPolicy::Reject`] asks.
    pub fn with_client(mut self, client: WebhookClient) -> Self {
        self.client = Some(client);
        self
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration.
    pub fn config(&self) -> &WorkflowConfig {
        &self.config
    }

    /// The preset channels.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// The callback tokens packages are stamped with, if configured.
    pub fn callback_tokens(&self) -> Option<&CallbackTokens> {
        self.callbacks.as_ref()
    }

    /// The delivery client whose breakers the reject policy asks, if configured.
    pub fn client(&self) -> Option<&WebhookClient> {
        self.client.as_ref()
    }

    fn max_attempts(&self) -> u32 {
        self.config.max_retries.saturating_add(1)
    }

    /// Packs a request into the standard package, stamped now.
    pub fn create_task_package(&self, request: &CreateTaskRequest) -> TaskPackage {
        create_task_package(request, self.engine.now())
    }

    /// The package of task `task_id`, with its callback link and token when configured.
    fn package_for(&self, request: &CreateTaskRequest, task_id: &str) -> TaskPackage {
        let mut package = self.create_task_package(request);
        if !self.config.public_url.is_empty() {
            package.delivery_instructions.callback_url = Some(format!(
                "{}/workflow/tasks/{task_id}/callback",
                self.config.public_url
            ));
        }
        if let Some(tokens) = &self.callbacks {
            package.delivery_instructions.callback_token = Some(tokens.token(task_id));
        }
        package
    }

    /// Creates the task a request asks for, as the seed's `POST /workflow/tasks` does: looks
    /// its channel up, refuses it while its target's breaker is open (policy
    /// [`BreakerOpenPolicy::Reject`]), packs the package with its callback link and token and
    /// queues it. With a `webhook_url`, the package goes there; a channel named as well gets its
    /// own task (own retries, status and callback). An `idempotency_key` already used returns
    /// that task as it is stored ([`CreatedTask::replayed`]).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownChannel`], [`Error::BreakerOpen`], or the engine's (queue full, store).
    pub async fn create_task(
        &self,
        request: &CreateTaskRequest,
        idempotency_key: Option<String>,
    ) -> Result<CreatedTask> {
        let channel = match &request.channel {
            None => None,
            Some(name) => Some(
                self.channels
                    .get(name)
                    .ok_or_else(|| Error::UnknownChannel(name.clone()))?,
            ),
        };
        let webhook_url = request.webhook_url.clone().filter(|u| !u.is_empty());
        if self.config.breaker_open_policy == BreakerOpenPolicy::Reject
            && let Some(retry_in) = self.breaker_retry_in(webhook_url.as_deref(), channel)
        {
            return Err(Error::BreakerOpen { retry_in });
        }
        let task_id = TaskId::generate();
        let package = self.package_for(request, &task_id);
        let out = match (&webhook_url, channel) {
            (None, Some(ch)) => {
                self.dispatch_to_channel(
                    ch,
                    task_id,
                    package,
                    request.priority,
                    idempotency_key.clone(),
                )
                .await?
            }
            _ => {
                self.dispatch_task(DispatchRequest {
                    task_id,
                    package,
                    priority: request.priority,
                    idempotency_key: idempotency_key.clone(),
                })
                .await?
            }
        };
        let (task, replayed) = match out {
            Enqueued::Created(t) => (t, false),
            Enqueued::Existing(t) => (t, true),
        };
        let channel_task_id = match (&webhook_url, channel) {
            (Some(_), Some(ch)) => {
                let id = TaskId::generate();
                let package = self.package_for(request, &id);
                let companion = self
                    .dispatch_to_channel(
                        ch,
                        id,
                        package,
                        request.priority,
                        idempotency_key.as_ref().map(|k| format!("{k}#channel")),
                    )
                    .await?;
                Some(companion.task().id.clone())
            }
            _ => None,
        };
        // A replay answers what the stored task does, not what the new request asked for.
        let (webhook_url, channel) = if replayed {
            let stored = DeliveryPayload::read(&task.payload).ok();
            (
                stored.and_then(|p| p.url).unwrap_or_default().to_owned(),
                stored.and_then(|p| p.channel).map(str::to_owned),
            )
        } else {
            (
                webhook_url.unwrap_or_default(),
                channel.map(|c| c.name.clone()),
            )
        };
        Ok(CreatedTask {
            task,
            replayed,
            webhook_url,
            channel,
            channel_task_id,
        })
    }

    /// While the breaker of `webhook_url`'s endpoint or of `channel` is open, how long until it
    /// lets a probe through (`None` without a client: see [`WorkflowManager::with_client`]).
    pub fn breaker_retry_in(
        &self,
        webhook_url: Option<&str>,
        channel: Option<&Channel>,
    ) -> Option<Duration> {
        let client = self.client.as_ref()?;
        let url_open = webhook_url.and_then(|u| client.breaker_retry_in(u));
        let channel_open = channel.and_then(|c| match c.kind {
            ChannelKind::Webhook => client.breaker_retry_in(&c.url),
            _ => client.breaker_retry_in_key(&c.breaker_key()),
        });
        url_open.or(channel_open)
    }

    /// Queues a delivery of the package to its `webhook_url`. Stored durably before returning.
    ///
    /// # Errors
    ///
    /// Queue full, duplicate id, or a store failure.
    pub async fn dispatch_task(&self, request: DispatchRequest) -> Result<Enqueued, EngineError> {
        let url = request.package.delivery_instructions.webhook_url.clone();
        let target = webhook_client::target_key(&url);
        let payload = DeliveryPayload::new(
            Destination::Url(url),
            serde_json::to_value(&request.package).expect("a task package always serialises"),
        );
        self.enqueue(
            request.task_id,
            payload,
            target,
            request.priority,
            request.idempotency_key,
        )
        .await
    }

    /// Queues a delivery through a preset channel. The payload holds the channel's name (not
    /// its URL, which may carry a token), so a retry after a restart resolves the channel again.
    ///
    /// # Errors
    ///
    /// Queue full, duplicate id, or a store failure.
    pub async fn dispatch_to_channel(
        &self,
        channel: &Channel,
        task_id: String,
        mut package: TaskPackage,
        priority: Priority,
        idempotency_key: Option<String>,
    ) -> Result<Enqueued, EngineError> {
        let format = match channel.kind {
            ChannelKind::Webhook => {
                package.delivery_instructions.webhook_url = channel.url.clone();
                "standard_payload"
            }
            ChannelKind::Chat(kind) => kind.delivery_format(),
            ChannelKind::DingTalkApp => "dingtalk_app_markdown",
        };
        package.delivery_instructions.delivery_format = DeliveryFormat::from(format);
        let payload = DeliveryPayload::new(
            Destination::Channel(channel.name.clone()),
            serde_json::to_value(&package).expect("a task package always serialises"),
        );
        self.enqueue(
            task_id,
            payload,
            Some(channel.target()),
            priority,
            idempotency_key,
        )
        .await
    }

    async fn enqueue(
        &self,
        id: String,
        payload: DeliveryPayload,
        target: Option<String>,
        priority: Priority,
        idempotency_key: Option<String>,
    ) -> Result<Enqueued, EngineError> {
        // The trace the task was created in, for its attempts to join (None unless exported).
        let payload = payload.with_traceparent(crate::trace_context::current_traceparent());
        let task = NewTask {
            id,
            kind: WEBHOOK_KIND.to_owned(),
            priority: crate::queue_priority(priority),
            payload: payload.to_value(),
            target,
            max_attempts: self.max_attempts(),
            run_at: self.engine.now(),
            idempotency_key,
        };
        self.engine.enqueue(task).await
    }

    /// Whether `token` is task `task_id`'s callback token (never, without tokens configured).
    pub fn verify_callback_token(&self, task_id: &str, token: &str) -> bool {
        self.callbacks
            .as_ref()
            .is_some_and(|t| t.verify(task_id, token))
    }

    /// Records what the receiver reports on a task (the closed loop); the latest report is
    /// shown with the task. Check the reporter first ([`WorkflowManager::verify_callback_token`]).
    ///
    /// # Errors
    ///
    /// Not found, or a store failure.
    pub async fn record_callback(
        &self,
        task_id: &str,
        report: CallbackReport,
    ) -> Result<Task, EngineError> {
        let status = report.status.clone();
        let record = CallbackRecord {
            status: report.status,
            note: report.note,
            at: chrono::Utc::now(),
        };
        let task = self.engine.store().record_callback(task_id, record).await?;
        tracing::info!(task_id = %task_id, callback_status = %status, "receiver reported back");
        metrics::counter!("dispatcher_callbacks_total", "status" => status).increment(1);
        Ok(task)
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
