//! A typed async client of the dispatcher's HTTP API, with the server's own request and
//! response types.
//!
//! [`Client`] has one method per endpoint: [`Client::create_task`] (the seed's flat JSON, a
//! [`CreateTaskRequest`] or a [`TaskPackage`], see [`NewTask`]), [`Client::get_task`],
//! [`Client::list_tasks`] (a [`futures::Stream`] that follows the cursor page after page),
//! [`Client::cancel`] and [`Client::retry`] (and, for one delivery of a task that fans out,
//! [`Client::cancel_delivery`] and [`Client::retry_delivery`]), [`Client::channels`], the
//! routing rules ([`Client::routes`], [`Client::test_route`]) and, for receivers,
//! [`Client::callback`]. [`ENDPOINTS`] lists the routes they call; a test checks it against
//! the running server's `/openapi.json`.
//!
//! The bodies are the server's types, not copies: [`workflow_dispatch::api`] for answers and
//! the list query, [`task_package`] for requests, packages and the field errors of a 400.
//!
//! Behaviour:
//! - authentication is `Authorization: Bearer <api key>` ([`ClientBuilder::api_key`]);
//! - every create carries an `Idempotency-Key` (the caller's via [`NewTask::idempotency_key`],
//!   else a fresh UUID) that the client's retries repeat, so a retried create never makes two
//!   tasks ([`Created::replayed`] says when the server found the existing one);
//! - `503` and `429` answers and connection failures are retried on a bounded,
//!   configurable [`RetryPolicy`] (the `retry-policy` crate's backoff), waiting at least the
//!   server's `Retry-After` (capped by the policy's `max_delay`); other 4xx never are;
//! - errors are one opaque [`Error`] with [`Error::status`], [`Error::code`],
//!   [`Error::field_errors`], [`Error::is_retryable`] and [`Error::retry_after`].
//!
//! The receiving side: [`verify_webhook`] checks a delivery's Standard Webhooks signature
//! with the dispatcher's own code (`webhook-client`), and [`Client::callback`] reports how
//! the task ended with the package's callback token.
//!
//! # Example
//!
//! ```no_run
//! use dispatcher_client::{Client, NewTask, ListQuery};
//! use futures::TryStreamExt as _;
//! use task_package::Priority;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder()
//!     .base_url("http://127.0.0.1:8080")
//!     .api_key("my-api-key")
//!     .timeout(std::time::Duration::from_secs(10))
//!     .build()?;
//!
//! // The seed's flat body, as its API document prints it.
//! let mut body = task_package::examples::seed_flat_request();
//! body["webhook_url"] = "https://hooks.example.com/webhook".into();
//! let created = client
//!     .create_task(NewTask::from(body).priority(Priority::High))
//!     .await?;
//! let task = client.get_task(created.task_id()).await?;
//! println!("{} is {}", task.task_id, task.status);
//!
//! let failed: Vec<_> = client
//!     .list_tasks(ListQuery { status: Some("failed".into()), ..ListQuery::default() })
//!     .try_collect()
//!     .await?;
//! for task in failed {
//!     client.retry(&task.task_id).await?;
//! }
//!
//! match client.create_task(serde_json::json!({"risk_level": "dire"})).await {
//!     Err(e) if e.status().is_some_and(|s| s == 400) => {
//!         for field in e.field_errors() {
//!             eprintln!("{}: {}", field.field, field.reason);
//!         }
//!     }
//!     other => { other?; }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }
//! ```
//!
//! # Dependencies
//!
//! The wire types live in `workflow-dispatch`, the dispatcher's core, so depending on this
//! crate currently pulls in the whole engine (workflow-core and its SQLite/PostgreSQL
//! stores, the channels, the delivery stack) even though the client uses only
//! `workflow_dispatch::api`. That is accepted for now; splitting the API models into a small
//! types crate (like `task-package`) would remove it without changing this crate's API.
//!
//! # Feature flags
//!
//! None. TLS is rustls with the `ring` provider and the platform's trust roots, configured
//! per client (no process-wide crypto provider is installed).

mod client;
mod error;
mod receiver;

pub use client::{Client, ClientBuilder, Created, ENDPOINTS, IDEMPOTENCY_KEY, NewTask};
pub use error::{Error, Result};
pub use receiver::{verify_webhook, verify_webhook_any};

pub use retry_policy::{Jitter, RetryPolicy};
pub use task_package::{CreateTaskRequest, FieldError, Priority, TaskPackage};
pub use webhook_client::{SigningSecret, VerifyError};
pub use workflow_dispatch::CALLBACK_STATUSES;
pub use workflow_dispatch::api::{
    CallbackView, CreateTaskResponse, ListQuery, TaskInfo, TaskListResponse,
};
pub use workflow_dispatch::channels::ChannelView;
