//! Run with: cargo run -p example-async-tasks
//!
//! The bot's core embedded in a plain program, without DingTalk (`default-features = false`):
//! an [`AsyncTaskManager`] over a SQLite job store in a temporary directory, a toy processor
//! that "thinks" for a moment, and a [`Push`] that prints what the user would see. A short and
//! a long request go through the bot's front door; the program exits 0 once the long job's
//! result has been pushed.

use std::sync::Arc;
use std::time::Duration;

use async_tasks::{
    AsyncTaskConfig, AsyncTaskManager, Bot, BotJob, BotJobHandler, BotSettings, CancellationToken,
    DeliveryError, DurationStats, Incoming, Job, KIND, ProcessError, Processor, Push,
};
use tokio::sync::mpsc;
use workflow_core::{Engine, SqliteConfig, SqliteStore};

/// Answers after a moment (longer for long requests), stopping when cancelled.
struct Toy;

#[async_trait::async_trait]
impl Processor for Toy {
    async fn process(&self, job: &Job, cancel: &CancellationToken) -> Result<String, ProcessError> {
        let think = Duration::from_millis(if job.prompt.contains("分析") {
            300
        } else {
            10
        });
        tokio::select! {
            () = tokio::time::sleep(think) => Ok(format!("answer to {:?}", job.prompt)),
            () = cancel.cancelled() => Err(ProcessError::Cancelled),
        }
    }
}

/// Prints every message, and hands the titles over so `main` knows when the long result came.
struct Print(mpsc::UnboundedSender<String>);

#[async_trait::async_trait]
impl Push for Print {
    async fn deliver(
        &self,
        job: &BotJob,
        title: &str,
        text: &str,
        prefer_session: bool,
        _margin: Duration,
    ) -> Result<&'static str, DeliveryError> {
        let how = if prefer_session { "reply" } else { "push" };
        println!("[{how} to {}] {title}: {text}", job.user_id);
        let _ = self.0.send(title.to_owned());
        Ok(if prefer_session { "reply" } else { "push" })
    }
}

fn message(id: &str, text: &str) -> Incoming {
    Incoming {
        msg_id: id.to_owned(),
        staff_id: Some("user-1".into()),
        sender_id: "user-1".into(),
        conversation_id: "conversation-1".into(),
        text: text.to_owned(),
        ..Incoming::default()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(SqliteConfig::new(
        dir.path().join("jobs.db"),
    ))?);
    let (tx, mut titles) = mpsc::unbounded_channel();
    let push = Arc::new(Print(tx));
    let settings = BotSettings {
        files_dir: dir.path().join("files"),
        ..BotSettings::default()
    };
    let stats = DurationStats::default();
    let handler = BotJobHandler::new(Arc::new(Toy), push.clone(), settings.clone(), stats.clone());
    let engine = Engine::builder(store)
        .handler(KIND, Arc::new(handler))
        .start();
    let tasks = AsyncTaskManager::with_stats(engine.clone(), AsyncTaskConfig::default(), stats);

    for text in ["hello", "请帮我分析公司 Acme 的舆情"] {
        let long = tasks.should_use_async(text);
        println!(
            "{text:?}: {} (class {})",
            if long { "long" } else { "short" },
            tasks.classify(text)
        );
    }
    let bot = Bot::new(tasks, push, settings);
    bot.handle(message("m1", "hello")).await;
    bot.handle(message("m2", "请帮我分析公司 Acme 的舆情"))
        .await;

    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(title) = titles.recv().await {
            if title == "后台任务完成" {
                return true;
            }
        }
        false
    })
    .await;
    engine.shutdown().await;
    match waited {
        Ok(true) => {
            println!("the long job's result was pushed");
            Ok(())
        }
        _ => Err("the long job's result never arrived".into()),
    }
}
