//! The bot's logic: route each message, answer short requests in the conversation, run long
//! ones as durable jobs and push their results.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dingtalk_sender::{DingTalkSender, Message, Target};
use dingtalk_stream::RobotMessage;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use workflow_core::{
    AsyncTaskManager, AttemptContext, CancelOutcome, Engine, Enqueued, Handler, HandlerOutcome,
    NewTask, Priority, Task, TaskFilter, TaskStatus,
};

use crate::processor::{Job, ProcessError, Processor};

/// The task kind of bot jobs.
pub const KIND: &str = "bot_job";

/// What a job carries, so it can finish after a restart without the original message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotJobPayload {
    /// What was asked.
    pub prompt: String,
    /// The asker (staff id), for one-to-one pushes.
    pub user_id: String,
    /// The conversation (group pushes go to it).
    pub conversation_id: String,
    /// Whether it came from a group.
    pub group: bool,
    /// The conversation's reply webhook.
    pub session_webhook: String,
    /// When that webhook stops working (ms since the epoch).
    pub session_expires_ms: i64,
    /// When the message arrived (ms since the epoch).
    pub received_ms: i64,
    /// Detected as long: the result is always pushed.
    pub long: bool,
    /// The request class (for duration statistics).
    pub class: String,
}

/// Settings of the bot's behaviour.
#[derive(Debug, Clone)]
pub struct BotSettings {
    /// A short request answered within this goes through the session webhook; later, pushed.
    pub sync_deadline: Duration,
    /// A job running longer is stopped and the user told.
    pub task_timeout: Duration,
    /// Most jobs queued or running per user before new ones are refused politely.
    pub max_jobs_per_user: usize,
    /// Session webhooks this close to expiry are not used.
    pub session_margin: Duration,
}

impl Default for BotSettings {
    fn default() -> Self {
        BotSettings {
            sync_deadline: Duration::from_secs(60),
            task_timeout: Duration::from_secs(1800),
            max_jobs_per_user: 5,
            session_margin: Duration::from_secs(300),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Delivers a result or notice to the asker: through the session webhook while it is valid
/// (and `prefer_session`), otherwise, or when it turns out expired, through the OpenAPI push.
pub(crate) async fn deliver(
    sender: &DingTalkSender,
    job: &BotJobPayload,
    title: &str,
    text: &str,
    prefer_session: bool,
    margin: Duration,
) -> Result<&'static str, dingtalk_sender::Error> {
    let margin_ms = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
    let fits_one = text.len() <= dingtalk_sender::DEFAULT_PART_BYTES;
    if prefer_session && fits_one && now_ms() + margin_ms < job.session_expires_ms {
        let at = if job.group {
            vec![job.user_id.clone()]
        } else {
            Vec::new()
        };
        match sender
            .reply_session(&job.session_webhook, &Message::markdown(title, text), &at)
            .await
        {
            Ok(()) => return Ok("session_webhook"),
            Err(e) if e.is_session_expired() => {
                tracing::info!("session webhook expired; pushing through the OpenAPI instead");
            }
            Err(e) => return Err(e),
        }
    }
    let target = if job.group {
        Target::Group(job.conversation_id.clone())
    } else {
        Target::Users(vec![job.user_id.clone()])
    };
    sender.send_long_markdown(&target, title, text).await?;
    Ok(if job.group {
        "group_send"
    } else {
        "batch_send"
    })
}

/// Runs bot jobs for the engine: the processor with a timeout, then delivery.
pub struct BotJobHandler {
    pub(crate) processor: Arc<dyn Processor>,
    pub(crate) sender: DingTalkSender,
    pub(crate) settings: BotSettings,
    pub(crate) stats: workflow_core::DurationStats,
}

impl std::fmt::Debug for BotJobHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotJobHandler")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Handler for BotJobHandler {
    async fn handle(&self, task: &Task, ctx: AttemptContext) -> HandlerOutcome {
        let job: BotJobPayload = match serde_json::from_value(task.payload.clone()) {
            Ok(j) => j,
            Err(e) => return HandlerOutcome::permanent(format!("unreadable bot job: {e}")),
        };
        tracing::info!(task_id = %task.id, user = %job.user_id, long = job.long, "task started");
        let started = std::time::Instant::now();
        let work = Job {
            task_id: task.id.clone(),
            user_id: job.user_id.clone(),
            conversation_id: job.conversation_id.clone(),
            prompt: job.prompt.clone(),
        };
        let cancel: CancellationToken = ctx.cancel.clone();
        let outcome = tokio::time::timeout(
            self.settings.task_timeout,
            self.processor.process(&work, &cancel),
        )
        .await;
        let answer = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(ProcessError::Cancelled)) => return HandlerOutcome::permanent("cancelled"),
            Ok(Err(ProcessError::Failed(e))) => {
                tracing::warn!(task_id = %task.id, error = %e, "processor failed");
                if ctx.attempt >= task.max_attempts {
                    let notice = format!("任务 {} 处理失败：{e}", task.id);
                    let _ = deliver(
                        &self.sender,
                        &job,
                        "任务失败",
                        &notice,
                        false,
                        self.settings.session_margin,
                    )
                    .await;
                }
                return HandlerOutcome::retryable(e);
            }
            Err(_) => {
                // The seed's "timeout notification".
                let mins = self.settings.task_timeout.as_secs_f64() / 60.0;
                let notice = format!(
                    "任务 {} 处理超时（超过 {mins:.0} 分钟），已停止。请稍后重试或缩小问题范围。",
                    task.id
                );
                let _ = deliver(
                    &self.sender,
                    &job,
                    "任务超时",
                    &notice,
                    false,
                    self.settings.session_margin,
                )
                .await;
                return HandlerOutcome::permanent("timed out");
            }
        };
        let took = started.elapsed();
        self.stats.record(&job.class, took);
        let in_time = now_ms() - job.received_ms
            <= i64::try_from(self.settings.sync_deadline.as_millis()).unwrap_or(i64::MAX);
        let prefer_session = !job.long && in_time;
        let title = if job.long {
            "后台任务完成"
        } else {
            "处理结果"
        };
        match deliver(
            &self.sender,
            &job,
            title,
            &answer,
            prefer_session,
            self.settings.session_margin,
        )
        .await
        {
            Ok(channel) => {
                tracing::info!(task_id = %task.id, duration_ms = took.as_millis() as u64, channel, "task completed; result pushed");
                HandlerOutcome::success_with(
                    serde_json::json!({"answer": answer, "channel": channel}),
                )
            }
            Err(e) => {
                tracing::warn!(task_id = %task.id, error = %e, "pushing the result failed; retrying on the durable schedule");
                HandlerOutcome::retryable(format!("push failed: {e}"))
            }
        }
    }
}

/// The front door: routes every incoming message.
#[derive(Clone)]
pub struct Bot {
    pub(crate) engine: Engine,
    pub(crate) tasks: AsyncTaskManager,
    pub(crate) sender: DingTalkSender,
    pub(crate) settings: BotSettings,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

const HELP: &str = "可用命令：\n- /help 帮助\n- /status [任务ID] 查询任务（或：查询任务）\n- /tasks 最近的任务\n- /cancel 任务ID 取消任务（或：取消任务 ID）\n其他内容会作为任务处理；包含“分析公司”“生成报告”等关键词的长任务会在后台处理并主动推送结果。";

fn status_zh(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Pending => "排队中",
        TaskStatus::Processing => "处理中",
        TaskStatus::Retrying => "等待重试",
        TaskStatus::Completed => "已完成",
        TaskStatus::Failed => "失败",
        TaskStatus::Cancelled => "已取消",
    }
}

impl Bot {
    async fn reply(&self, m: &RobotMessage, text: &str) {
        let job = payload_of(m, "", false, "general");
        if let Err(e) = deliver(&self.sender, &job, "回复", text, true, Duration::ZERO).await {
            tracing::warn!(error = %e, "could not reply");
        }
    }

    /// Handles one message (already ACKed and deduplicated).
    pub async fn handle(&self, m: RobotMessage) {
        let Some(text) = m.extract_text() else {
            self.reply(&m, "暂不支持这种消息类型，请发送文字。").await;
            return;
        };
        let user = m
            .sender_staff_id
            .clone()
            .unwrap_or_else(|| m.sender_id.clone());
        tracing::info!(user = %user, msg_id = %m.msg_id, "message received");
        let (cmd, arg) = text
            .split_once(char::is_whitespace)
            .map_or((text.as_str(), ""), |(c, a)| (c, a.trim()));
        match cmd {
            "/help" | "帮助" => self.reply(&m, HELP).await,
            "/status" | "查询任务" if !arg.is_empty() => self.status(&m, arg).await,
            "/status" | "查询任务" | "/tasks" => self.recent(&m, &user).await,
            "/cancel" | "取消任务" => self.cancel(&m, arg).await,
            _ => self.task(&m, &user, &text).await,
        }
    }

    async fn status(&self, m: &RobotMessage, id: &str) {
        match self.engine.store().get(id).await {
            Ok(Some(t)) if t.kind == KIND => {
                let mut text = format!("任务 {}：{}", t.id, status_zh(t.status));
                if let Some(answer) = t.result.as_ref().and_then(|r| r["answer"].as_str()) {
                    let preview: String = answer.chars().take(200).collect();
                    text.push_str(&format!("\n结果：{preview}"));
                }
                if let Some(e) = &t.last_error {
                    text.push_str(&format!("\n最近错误：{e}"));
                }
                self.reply(m, &text).await;
            }
            _ => self.reply(m, &format!("没有找到任务 {id}")).await,
        }
    }

    async fn recent(&self, m: &RobotMessage, user: &str) {
        let filter = TaskFilter {
            target: Some(user.to_owned()),
            kind: Some(KIND.to_owned()),
            limit: 5,
            ..TaskFilter::default()
        };
        match self.engine.store().list(&filter).await {
            Ok(page) if !page.tasks.is_empty() => {
                let lines: Vec<String> = page
                    .tasks
                    .iter()
                    .map(|t| {
                        let prompt: String = t.payload["prompt"]
                            .as_str()
                            .unwrap_or_default()
                            .chars()
                            .take(20)
                            .collect();
                        format!("- {} {} {}", t.id, status_zh(t.status), prompt)
                    })
                    .collect();
                self.reply(m, &format!("您最近的任务：\n{}", lines.join("\n")))
                    .await;
            }
            _ => self.reply(m, "您还没有任务。").await,
        }
    }

    async fn cancel(&self, m: &RobotMessage, id: &str) {
        if id.is_empty() {
            self.reply(m, "请提供任务ID，例如：/cancel bot_xxx").await;
            return;
        }
        let text = match self.engine.cancel(id).await {
            Ok(CancelOutcome::Cancelled(_) | CancelOutcome::Requested(_)) => {
                format!("任务 {id} 已取消。")
            }
            Ok(CancelOutcome::AlreadyFinal(t)) => {
                format!("任务 {id} 已结束（{}），无法取消。", status_zh(t.status))
            }
            Err(_) => format!("没有找到任务 {id}"),
        };
        self.reply(m, &text).await;
    }

    async fn task(&self, m: &RobotMessage, user: &str, text: &str) {
        let long = self.tasks.should_use_async(text);
        let class = self.tasks.classify(text);
        let idempotency_key = format!("msg:{}", m.msg_id);
        let recent = self
            .engine
            .store()
            .list(&TaskFilter {
                target: Some(user.to_owned()),
                kind: Some(KIND.to_owned()),
                limit: 100,
                ..TaskFilter::default()
            })
            .await
            .map(|p| p.tasks)
            .unwrap_or_default();
        if let Some(t) = recent
            .iter()
            .find(|t| t.idempotency_key.as_deref() == Some(idempotency_key.as_str()))
        {
            // A redelivery of a message already stored (see the `Existing` case below): a user
            // at the job limit must not be told about the limit for a job they already have.
            tracing::info!(task_id = %t.id, msg_id = %m.msg_id, "duplicate delivery of a stored task dropped");
            return;
        }
        let active = recent.iter().filter(|t| !t.status.is_final()).count();
        if active >= self.settings.max_jobs_per_user {
            self.reply(
                m,
                &format!("您已有 {active} 个任务在处理，请等待完成后再提交。"),
            )
            .await;
            return;
        }
        let payload = payload_of(m, text, long, &class);
        let id = format!("bot_{}", uuid_like());
        let new = NewTask {
            id: id.clone(),
            kind: KIND.to_owned(),
            priority: Priority::Medium,
            payload: serde_json::to_value(&payload).expect("a payload always serialises"),
            target: Some(user.to_owned()),
            max_attempts: 3,
            run_at: self.engine.now(),
            idempotency_key: Some(idempotency_key),
        };
        match self.engine.enqueue(new).await {
            Ok(Enqueued::Created(_)) => {}
            Ok(Enqueued::Existing(t)) => {
                // The same msgId again, past the in-memory dedupe (which a restart empties):
                // the job exists and its user was told when it first arrived. Replying again
                // would tell them twice, with the id of a task that was never stored.
                tracing::info!(task_id = %t.id, msg_id = %m.msg_id, "duplicate delivery of a stored task dropped");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not queue the task");
                self.reply(m, "系统繁忙，请稍后重试。").await;
                return;
            }
        }
        if long {
            let minutes = self
                .tasks
                .stats()
                .estimate(&class)
                .map_or(5, |d| (d.as_secs() / 60).max(1));
            tracing::info!(task_id = %id, class = %class, "long task detected");
            self.reply(m, &format!("收到任务，正在后台处理中...这是一个长时间任务，预计需要 {minutes} 分钟，完成后会主动推送结果给您。\n任务ID：{id}")).await;
        } else {
            self.reply(m, &format!("收到任务，正在处理中...\n任务ID：{id}"))
                .await;
        }
    }
}

fn uuid_like() -> String {
    format!(
        "{:016x}{:08x}",
        chrono::Utc::now().timestamp_micros(),
        rand::random::<u32>()
    )
}

fn payload_of(m: &RobotMessage, prompt: &str, long: bool, class: &str) -> BotJobPayload {
    BotJobPayload {
        prompt: prompt.to_owned(),
        user_id: m
            .sender_staff_id
            .clone()
            .unwrap_or_else(|| m.sender_id.clone()),
        conversation_id: m.conversation_id.clone(),
        group: m.is_group(),
        session_webhook: m.session_webhook.clone(),
        session_expires_ms: m.session_webhook_expired_time,
        received_ms: now_ms(),
        long,
        class: class.to_owned(),
    }
}
