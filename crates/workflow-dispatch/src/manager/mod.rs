//! `WorkflowManager`: create tasks (choosing their targets: named by the request, or by the
//! server's routes), dispatch, inspect, cancel, retry and list them, and record what receivers
//! report back. A task that reaches several targets fans out into one delivery per target
//! (see [`crate::payload`]); `deliveries` has the per-delivery half.

mod deliveries;

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use task_package::{
    CreateTaskRequest, DeliveryFormat, Priority, TaskId, TaskPackage, create_task_package,
};
use webhook_client::WebhookClient;
use workflow_core::{Engine, EngineError, Enqueued, NewTask, Task};

pub use self::deliveries::{DeliveryStatus, TaskStatusView, overall_status};

use crate::callback::CallbackTokens;
use crate::channels::{Channel, ChannelKind, Channels};
use crate::error::{Error, Result};
use crate::payload::{DeliveryPayload, DeliveryRef, Destination, MAX_DELIVERIES, delivery_id};
use crate::routing::Routes;
use crate::webhook::{FANOUT_KIND, WEBHOOK_KIND};

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

/// What [`WorkflowManager::create_task`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedTask {
    /// The task (its first delivery; the existing one on a replay).
    pub task: Task,
    /// Whether the idempotency key named an existing task, which is returned as it is.
    pub replayed: bool,
    /// The webhook URL it is delivered to (empty when only channels were chosen).
    pub webhook_url: String,
    /// The preset channel the request named, if any.
    pub channel: Option<String>,
    /// With both a `webhook_url` and a channel: the delivery notifying the channel.
    pub channel_task_id: Option<String>,
    /// Every delivery: its id and target, the task's own first.
    pub deliveries: Vec<DeliveryRef>,
    /// The route that chose the targets, when the request named none.
    pub route: Option<String>,
}

/// Where one delivery goes, resolved against the configured channels.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Url(&'a str),
    Channel(&'a Channel),
}

impl Target<'_> {
    fn label(&self) -> &str {
        match self {
            Target::Url(u) => u,
            Target::Channel(c) => &c.name,
        }
    }
}

/// The targets a request reaches, as [`WorkflowManager::plan`] answers: what
/// `POST /workflow/routes/test` shows without creating a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoutePlan {
    /// The route that chose the targets; absent when the request named them itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Every delivery the task would get, in order.
    pub targets: Vec<PlannedTarget>,
}

/// One delivery of a [`RoutePlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedTarget {
    /// The webhook URL, or the channel's name (as `deliveries[].target` will show it).
    pub target: String,
    /// `webhook_url`, or the channel's kind (`dingtalk_robot`, `webhook`, ...).
    pub kind: String,
}

/// The seed's `WorkflowManager`, over an [`Engine`] with a handler for the delivery kinds
/// ([`crate::DELIVERY_KINDS`]: [`crate::ChannelDeliveryHandler`] or
/// [`crate::WebhookDeliveryHandler`]).
#[derive(Debug, Clone)]
pub struct WorkflowManager {
    engine: Engine,
    config: WorkflowConfig,
    channels: Channels,
    /// Shared by every clone, so a reload ([`WorkflowManager::set_routes`]) reaches them all.
    routes: Arc<RwLock<Arc<Routes>>>,
    callbacks: Option<CallbackTokens>,
    client: Option<WebhookClient>,
}

impl WorkflowManager {
    /// A manager over `engine` (which must have a handler for [`crate::DELIVERY_KINDS`]),
    /// without channels, routes, callback tokens or breaker checks until they are given.
    pub fn new(engine: Engine, config: WorkflowConfig) -> WorkflowManager {
        WorkflowManager {
            engine,
            config,
            channels: Channels::default(),
            routes: Arc::default(),
            callbacks: None,
            client: None,
        }
    }

    /// The preset channels requests and routes may name.
    pub fn with_channels(mut self, channels: Channels) -> Self {
        self.channels = channels;
        self
    }

    /// The routing rules for requests that name no target (build them against
    /// [`WorkflowManager::channels`]).
    pub fn with_routes(self, routes: Routes) -> Self {
        self.set_routes(routes);
        self
    }

    /// Replaces the routing rules, for this manager and every clone of it (a reload).
    pub fn set_routes(&self, routes: Routes) {
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routes);
    }

    /// The routing rules in force.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

    /// Parses and validates a request body, reporting every invalid field at once: a target
    /// (`webhook_url`, `channel` or `channels`) is required unless routing rules are set, which
    /// then decide where a request that names none goes.
    ///
    /// # Errors
    ///
    /// [`task_package::ValidationErrors`] naming each invalid field.
    pub fn parse_request(
        &self,
        body: &[u8],
    ) -> Result<CreateTaskRequest, task_package::ValidationErrors> {
        let parsed = if self.routes().is_empty() {
            CreateTaskRequest::from_json_slice(body)
        } else {
            CreateTaskRequest::from_json_slice_routable(body)
        };
        // A valid request's unknown channels are named by `create_task`; an invalid one's are
        // named here, with the other errors, so that one 400 lists them all.
        parsed.map_err(|mut errors| {
            let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let named = value
                .get("channel")
                .map(|c| ("channel".to_owned(), c))
                .into_iter()
                .chain(
                    value
                        .get("channels")
                        .and_then(serde_json::Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, c)| (format!("channels[{i}]"), c)),
                );
            for (field, name) in named {
                if let Some(name) = name.as_str()
                    && !task_package::is_blank(name)
                    && self.channels.get(name).is_none()
                    && !errors.iter().any(|e| e.field == field)
                {
                    errors.errors.push(unknown_channel(&field, name));
                }
            }
            errors
        })
    }

    /// Packs a request into the standard package, stamped now.
    pub fn create_task_package(&self, request: &CreateTaskRequest) -> TaskPackage {
        create_task_package(request, self.engine.now())
    }

    /// The package of delivery `delivery_id` of task `task_id`: every delivery carries the
    /// task's callback link, and a token of its own, so a report says which receiver answered.
    fn package_for(
        &self,
        request: &CreateTaskRequest,
        task_id: &str,
        delivery_id: &str,
    ) -> TaskPackage {
        let mut package = self.create_task_package(request);
        if !self.config.public_url.is_empty() {
            package.delivery_instructions.callback_url = Some(format!(
                "{}/workflow/tasks/{task_id}/callback",
                self.config.public_url
            ));
        }
        if let Some(tokens) = &self.callbacks {
            package.delivery_instructions.callback_token = Some(tokens.token(delivery_id));
        }
        package
    }

    /// The targets `request` reaches and the route that chose them: the ones it names
    /// (`webhook_url`, then `channel`, then `channels`), else the first matching route's.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownChannels`] naming every unknown channel, [`Error::NoRoute`] when the
    /// request names no target and no route matches, [`Error::TooManyTargets`].
    fn targets<'a>(
        &'a self,
        request: &'a CreateTaskRequest,
        routes: &'a Routes,
    ) -> Result<(Vec<Target<'a>>, Option<String>)> {
        let mut targets = Vec::new();
        let mut unknown = Vec::new();
        if let Some(url) = request.webhook_url.as_deref().filter(|u| !u.is_empty()) {
            targets.push(Target::Url(url));
        }
        let named = request
            .channel
            .iter()
            .map(|c| ("channel".to_owned(), c))
            .chain(
                request
                    .channels
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("channels[{i}]"), c)),
            );
        for (field, name) in named {
            match self.channels.get(name) {
                // `channel` and `channels` may both name it: one delivery.
                Some(ch)
                    if targets
                        .iter()
                        .any(|t| matches!(t, Target::Channel(c) if c.name == ch.name)) => {}
                Some(ch) => targets.push(Target::Channel(ch)),
                None => unknown.push((field, name.clone())),
            }
        }
        if !unknown.is_empty() {
            return Err(Error::UnknownChannels(unknown));
        }
        let mut route = None;
        if targets.is_empty() {
            let chosen = routes.route(request).ok_or(Error::NoRoute)?;
            for name in &chosen.to {
                // Routes are checked against these channels when they are set.
                let ch = self
                    .channels
                    .get(name)
                    .ok_or_else(|| Error::UnknownChannels(vec![("route".into(), name.clone())]))?;
                targets.push(Target::Channel(ch));
            }
            route = Some(chosen.name.clone());
        }
        if targets.len() > MAX_DELIVERIES {
            return Err(Error::TooManyTargets(MAX_DELIVERIES));
        }
        Ok((targets, route))
    }

    /// Which targets `request` would reach, and through which route, without creating a task
    /// (`POST /workflow/routes/test`).
    ///
    /// # Errors
    ///
    /// As [`WorkflowManager::create_task`] for its targets: unknown channels, no route.
    pub fn plan(&self, request: &CreateTaskRequest) -> Result<RoutePlan> {
        let routes = self.routes();
        let (targets, route) = self.targets(request, &routes)?;
        Ok(RoutePlan {
            route,
            targets: targets
                .iter()
                .map(|t| PlannedTarget {
                    target: t.label().to_owned(),
                    kind: match t {
                        Target::Url(_) => "webhook_url".to_owned(),
                        Target::Channel(c) => c.kind.as_str().to_owned(),
                    },
                })
                .collect(),
        })
    }

    /// Creates the task a request asks for, as the seed's `POST /workflow/tasks` does: picks
    /// its targets (the ones it names, else the first matching route's), refuses it while
    /// every target's breaker is open (policy [`BreakerOpenPolicy::Reject`]), and queues one
    /// delivery per target, all in one transaction: each with its own attempts, breaker, rate
    /// limit, retries and callback token, all carrying the task's callback link. The first
    /// delivery has the task's id. An `idempotency_key` already used returns that task as it
    /// is stored ([`CreatedTask::replayed`]).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownChannels`], [`Error::NoRoute`], [`Error::BreakerOpen`], or the
    /// engine's (queue full, store).
    pub async fn create_task(
        &self,
        request: &CreateTaskRequest,
        idempotency_key: Option<String>,
    ) -> Result<CreatedTask> {
        let routes = self.routes();
        let (targets, route) = self.targets(request, &routes)?;
        if self.config.breaker_open_policy == BreakerOpenPolicy::Reject
            && let Some(retry_in) = targets
                .iter()
                .map(|t| self.target_retry_in(*t))
                .collect::<Option<Vec<Duration>>>()
                .and_then(|waits| waits.into_iter().min())
        {
            return Err(Error::BreakerOpen { retry_in });
        }
        let task_id = TaskId::generate();
        let deliveries: Vec<DeliveryRef> = targets
            .iter()
            .enumerate()
            .map(|(n, t)| DeliveryRef {
                id: delivery_id(&task_id, n),
                target: t.label().to_owned(),
            })
            .collect();
        // The trace the task was created in, for its attempts to join (None unless exported).
        let traceparent = crate::trace_context::current_traceparent();
        let mut batch = Vec::with_capacity(targets.len());
        for (n, (target, delivery)) in targets.iter().zip(&deliveries).enumerate() {
            let package = self.package_for(request, &task_id, &delivery.id);
            let (destination, package, key) = match target {
                Target::Url(url) => (
                    Destination::Url((*url).to_owned()),
                    package,
                    webhook_client::target_key(url),
                ),
                Target::Channel(ch) => (
                    Destination::Channel(ch.name.clone()),
                    for_channel(ch, package),
                    Some(ch.target()),
                ),
            };
            let payload = DeliveryPayload::new(
                destination,
                serde_json::to_value(&package).expect("a task package always serialises"),
            )
            .with_traceparent(traceparent.clone());
            let (kind, payload, key_suffix) = if n == 0 {
                // The first lists the others, when there are any.
                let listing = if deliveries.len() > 1 {
                    deliveries.clone()
                } else {
                    Vec::new()
                };
                (WEBHOOK_KIND, payload.listing(listing), String::new())
            } else {
                (FANOUT_KIND, payload.of_task(&task_id), format!("#{n}"))
            };
            batch.push(self.new_delivery(
                delivery.id.clone(),
                kind,
                payload,
                key,
                request.priority,
                idempotency_key.as_ref().map(|k| format!("{k}{key_suffix}")),
            ));
        }
        let out = self.engine.enqueue_batch(batch).await?;
        let mut out = out.into_iter();
        let (task, replayed) = match out.next() {
            Some(Enqueued::Created(t)) => (t, false),
            Some(Enqueued::Existing(t)) => (t, true),
            None => unreachable!("a task has at least one target"),
        };
        if replayed {
            // Only when the targets changed since the first request (a route reloaded): the
            // replay answers the stored task, so a delivery it added must not go out.
            for extra in out.filter_map(|e| match e {
                Enqueued::Created(t) => Some(t),
                Enqueued::Existing(_) => None,
            }) {
                tracing::warn!(task_id = %task.id, delivery = %extra.id, "idempotent replay reached a target the first request did not; cancelling that delivery");
                let _ = self.engine.cancel(&extra.id).await;
            }
            return Ok(created_from_stored(task));
        }
        if let Some(name) = &route {
            metrics::counter!("dispatcher_routed_tasks_total", "route" => name.clone())
                .increment(1);
        }
        let webhook_url = targets.iter().find_map(|t| match t {
            Target::Url(u) => Some((*u).to_owned()),
            Target::Channel(_) => None,
        });
        let channel_task_id =
            (webhook_url.is_some() && request.channel.is_some() && deliveries.len() > 1)
                .then(|| deliveries[1].id.clone());
        Ok(CreatedTask {
            task,
            replayed: false,
            webhook_url: webhook_url.unwrap_or_default(),
            channel: request.channel.clone(),
            channel_task_id,
            deliveries,
            route,
        })
    }

    /// While `target`'s breaker is open, how long until it lets a probe through.
    fn target_retry_in(&self, target: Target<'_>) -> Option<Duration> {
        match target {
            Target::Url(u) => self.breaker_retry_in(Some(u), None),
            Target::Channel(c) => self.breaker_retry_in(None, Some(c)),
        }
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
        package: TaskPackage,
        priority: Priority,
        idempotency_key: Option<String>,
    ) -> Result<Enqueued, EngineError> {
        let package = for_channel(channel, package);
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
        let task = self.new_delivery(id, WEBHOOK_KIND, payload, target, priority, idempotency_key);
        self.engine.enqueue(task).await
    }

    /// The engine task of one delivery, due now, with the configured attempt budget.
    fn new_delivery(
        &self,
        id: String,
        kind: &str,
        payload: DeliveryPayload,
        target: Option<String>,
        priority: Priority,
        idempotency_key: Option<String>,
    ) -> NewTask {
        NewTask {
            id,
            kind: kind.to_owned(),
            priority: crate::queue_priority(priority),
            payload: payload.into_value(),
            target,
            max_attempts: self.max_attempts(),
            run_at: self.engine.now(),
            idempotency_key,
        }
    }
}

/// The field error of a request naming channel `name`, which is not configured.
pub fn unknown_channel(field: &str, name: &str) -> task_package::FieldError {
    task_package::FieldError::new(
        field,
        format!("unknown channel {name:?} (GET /workflow/channels lists them)"),
    )
}

/// The package as channel `channel` delivers it: a `webhook` channel's URL, or the chat
/// platform's delivery format.
fn for_channel(channel: &Channel, mut package: TaskPackage) -> TaskPackage {
    let format = match channel.kind {
        ChannelKind::Webhook => {
            package.delivery_instructions.webhook_url = channel.url.clone();
            "standard_payload"
        }
        ChannelKind::Chat(kind) => kind.delivery_format(),
        ChannelKind::DingTalkApp => "dingtalk_app_markdown",
    };
    package.delivery_instructions.delivery_format = DeliveryFormat::from(format);
    package
}

/// What a replay answers: the stored task's targets, not the new request's.
fn created_from_stored(task: Task) -> CreatedTask {
    let stored = DeliveryPayload::read(&task.payload).ok();
    let mut deliveries = DeliveryPayload::fanout_of(&task.payload);
    if deliveries.is_empty() {
        deliveries.push(DeliveryRef {
            id: task.id.clone(),
            target: stored.map(|p| p.label().to_owned()).unwrap_or_default(),
        });
    }
    CreatedTask {
        replayed: true,
        webhook_url: stored.and_then(|p| p.url).unwrap_or_default().to_owned(),
        channel: stored.and_then(|p| p.channel).map(str::to_owned),
        channel_task_id: None,
        deliveries,
        route: None,
        task,
    }
}
