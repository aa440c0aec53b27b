//! The dispatcher's core, embeddable in any Rust service without HTTP: negative evidence
//! packed into standard task packages and delivered, durably and in priority order, by signed
//! webhook or through preset chat channels, with receivers' callbacks closing the loop.
//!
//! - [`WorkflowManager`] (the seed's name): create a task from the seed's request
//!   ([`WorkflowManager::create_task`]: channel lookup, breaker pre-check, callback link and
//!   token, idempotent replay), dispatch, inspect, cancel, retry, list, record callbacks.
//! - [`WebhookDeliveryHandler`] and [`ChannelDeliveryHandler`]: the `webhook` task kind's
//!   [`workflow_core::Handler`]: one signed POST per attempt over `webhook_client`, or a
//!   channel's message (chat robot, DingTalk app), with breaker and rate limit deferring an
//!   attempt without spending it.
//! - [`routing`]: `[[routes]]` rules choosing the channels of a task whose request names no
//!   target; a task reaching several targets fans out into one delivery each (own attempts,
//!   breaker, rate limit, retries, callback token), all in one transaction: register the
//!   delivery handler for every kind in [`DELIVERY_KINDS`].
//! - [`channels`]: preset delivery channels from configuration; [`render`]: a package as a
//!   chat message; [`CallbackTokens`]: per-task tokens derived, never stored;
//!   [`DeliveryPayload`]: what a delivery task stores; [`api`]: the task API's models (and,
//!   with `axum`, its error answers).
//! - [`ClientSettings`]: the delivery client from a service's settings (allowed CIDRs, fixed
//!   addresses, egress proxy, breakers, permanent statuses), checked at load time.
//! - [`trace_context`]: W3C trace context across the queue; [`TracedDelivery`] runs each
//!   attempt in a span that joins the creating request's trace and sends its `traceparent`.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use workflow_core::{Engine, MemoryStore};
//! use workflow_dispatch::{
//!     CallbackTokens, WEBHOOK_KIND, WebhookDeliveryHandler, WorkflowConfig, WorkflowManager,
//! };
//! use webhook_client::{SigningSecret, WebhookClient};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let _ = rustls::crypto::ring::default_provider().install_default();
//! let secret = SigningSecret::generate();
//! let client = WebhookClient::builder()
//! #   .resolve("hooks.example.com", "127.0.0.1:9".parse()?) // never leave the machine
//!     .build()?;
//! let engine = Engine::builder(Arc::new(MemoryStore::new()))
//!     .handler(WEBHOOK_KIND, Arc::new(WebhookDeliveryHandler::new(client.clone(), vec![secret.clone()])))
//!     .start();
//! let manager = WorkflowManager::new(
//!     engine.clone(),
//!     WorkflowConfig { public_url: "https://dispatch.example".into(), ..WorkflowConfig::default() },
//! )
//! .with_callback_tokens(CallbackTokens::new(&secret))
//! .with_client(client);
//! let request = task_package::CreateTaskRequest::from_json_slice(task_package::examples::SEED_FLAT_REQUEST.as_bytes())?;
//! let created = manager.create_task(&request, None).await?;
//! let view = manager.get_task_status(&created.task.id).await?.expect("just created");
//! assert_eq!(view.task.id, created.task.id);
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! - `openapi`: derives `utoipa::ToSchema` on the types an HTTP API shows (the answers in
//!   [`api`], [`channels::ChannelView`], [`routing::RouteView`]) and adds `api::schema`, the
//!   request bodies' schemas, for services that publish an OpenAPI document.
//! - `axum`: `api::error`, the task API's JSON error answers as axum responses (`ApiError`,
//!   `ErrorBody`, and `json_errors`, the middleware giving axum's and tower-http's own
//!   rejections the same shape), for a service publishing the API.

pub mod api;
pub mod callback;
pub mod channels;
pub mod client_settings;
mod error;
mod manager;
pub mod payload;
pub mod render;
pub mod routing;
pub mod trace_context;
mod webhook;

pub use callback::{CALLBACK_STATUSES, CallbackReport, CallbackTokens};
pub use channels::{ChannelConfigError, ChannelDeliveryHandler, Channels};
pub use client_settings::{ClientSettings, ClientSettingsError};
pub use error::{Error, Result};
pub use manager::{
    BreakerOpenPolicy, CreatedTask, DeliveryStatus, DispatchRequest, PlannedTarget, RoutePlan,
    TaskStatusView, UnknownBreakerOpenPolicy, WorkflowConfig, WorkflowManager, overall_status,
    unknown_channel,
};
pub use payload::{
    DeliveryPayload, DeliveryRef, Destination, PayloadRef, UnreadablePayload, queue_priority,
};
pub use routing::{RouteConfigError, RouteList, Routes};
pub use trace_context::TracedDelivery;
pub use webhook::{
    DELIVERY_KINDS, FANOUT_KIND, WEBHOOK_KIND, WebhookDeliveryHandler, attempt_outcome,
};
