//! Facades with the seed's vocabulary over the [`Engine`](crate::Engine).

mod async_tasks;

pub use async_tasks::{
    AsyncTaskConfig, AsyncTaskManager, BOT_JOB_KIND, BotJob, DurationStats, SEED_KEYWORDS,
};
