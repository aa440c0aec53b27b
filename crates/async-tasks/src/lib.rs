//! Chat-bot requests as durable background jobs: a short request is answered in the
//! conversation at once, a long one ("client analysis", "分析公司", "生成报告", ...) runs as a
//! durable job on [`workflow_core`] whose result is pushed later, because the conversation's
//! reply webhook may have expired by then.
//!
//! - [`AsyncTaskManager`]: classification ([`AsyncTaskManager::should_use_async`]: the seed's
//!   keywords, [`SEED_KEYWORDS`], and durations learnt per request class in [`DurationStats`]),
//!   and the jobs themselves (queue, look up, list, cancel, relearn durations after a restart).
//! - [`BotJob`]: the one typed payload of a job, and [`JobResult`] what a finished one stores.
//! - [`BotJobHandler`]: the engine's handler for [`KIND`]: attachments, a [`Processor`] under a
//!   timeout, an optional progress card ([`progress`]), then delivery through [`Push`]; a result
//!   the platform did not deliver fails the job with the reason ([`Undelivered`]).
//! - [`Bot`]: the front door for messages ([`Incoming`]): commands and jobs. With the
//!   `dingtalk-stream` feature, `incoming` reads DingTalk's robot messages into requests and
//!   hands them to the bot.
//! - [`Push`]: how answers reach the asker. Implement it for your chat platform;
//!   [`DingTalkPush`] is DingTalk's.
//!
//! Nothing here installs process-wide state (no TLS provider, no tracing subscriber, no metrics
//! recorder): counters go through the `metrics` facade (`bot_jobs_finished_total{outcome}`,
//! `bot_results_undelivered_total{reason}`) to whatever recorder the process installed.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use async_tasks::{
//!     AsyncTaskConfig, AsyncTaskManager, BotJob, BotJobHandler, BotSettings, DeliveryError,
//!     DurationStats, Echo, KIND, Push, new_task_id,
//! };
//! use workflow_core::{Engine, MemoryStore};
//!
//! /// Delivers by printing.
//! struct Print;
//!
//! #[async_trait::async_trait]
//! impl Push for Print {
//!     async fn deliver(
//!         &self,
//!         job: &BotJob,
//!         title: &str,
//!         text: &str,
//!         _prefer_session: bool,
//!         _margin: Duration,
//!     ) -> Result<&'static str, DeliveryError> {
//!         println!("to {}: {title}: {text}", job.user_id);
//!         Ok("stdout")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let stats = DurationStats::default();
//! let handler = BotJobHandler::new(
//!     Arc::new(Echo::default()),
//!     Arc::new(Print),
//!     BotSettings::default(),
//!     stats.clone(),
//! );
//! let engine = Engine::builder(Arc::new(MemoryStore::new()))
//!     .handler(KIND, Arc::new(handler))
//!     .start();
//! let tasks = AsyncTaskManager::with_stats(engine.clone(), AsyncTaskConfig::default(), stats);
//! assert!(tasks.should_use_async("请帮我分析公司 Acme"));
//! assert!(!tasks.should_use_async("hello"));
//!
//! let job = BotJob {
//!     prompt: "分析公司 Acme".into(),
//!     user_id: "u1".into(),
//!     conversation_id: "c1".into(),
//!     group: false,
//!     session_webhook: String::new(),
//!     session_expires_ms: 0,
//!     received_ms: 0,
//!     long: true,
//!     class: tasks.classify("分析公司 Acme"),
//!     no_staff_id: false,
//!     attachments: Vec::new(),
//!     card: false,
//! };
//! let id = new_task_id();
//! tasks.create_task(&id, &job, None).await?;
//! while !tasks.get_task(&id).await?.is_some_and(|t| t.status.is_final()) {
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//! }
//! assert_eq!(tasks.stats().runs("分析公司"), 1);
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! - `dingtalk` (default): [`DingTalkPush`], the [`Push`] over [`dingtalk_sender`] (session
//!   webhook replies, `batchSend` / group pushes with DingTalk's undelivered lists, interactive
//!   progress cards, attachment downloads). It is a feature rather than a separate crate so the
//!   bundled bot gets it by default while a service on another chat platform turns default
//!   features off, implements [`Push`], and builds no DingTalk client.
//! - `dingtalk-stream`: `incoming`, DingTalk's robot messages (`dingtalk_stream::RobotMessage`,
//!   from Stream mode or HTTP callbacks) read leniently into a request (text and attachments)
//!   or an unsupported type answered with what the bot supports, and handed to the [`Bot`].

mod bot;
#[cfg(feature = "dingtalk")]
pub mod dingtalk;
pub mod estimate;
mod handler;
#[cfg(feature = "dingtalk-stream")]
pub mod incoming;
mod job;
mod manager;
pub mod processor;
pub mod progress;
mod push;
mod stats;

pub use bot::{Bot, Incoming};
#[cfg(feature = "dingtalk")]
pub use dingtalk::DingTalkPush;
pub use estimate::{DEFAULT_ESTIMATE_ZH, estimate_zh};
pub use handler::{BotJobHandler, BotSettings};
pub use job::{Attachment, AttachmentKind, BotJob, JobResult, KIND};
pub use manager::{AsyncTaskConfig, AsyncTaskManager, SEED_KEYWORDS, new_task_id};
pub use processor::{
    CommandProcessor, Echo, HttpProcessor, Job, JobFile, OpenAiProcessor, ProcessError, Processor,
};
pub use push::{CardParams, DeliveryError, Downloaded, Push, PushError, Undelivered};
pub use stats::DurationStats;
pub use tokio_util::sync::CancellationToken;
