//! [`Bot`]: the front door. Routes each message: commands (`/help`, `/status`, `/tasks`,
//! `/cancel`), and everything else as a job, answered in the conversation at once when short,
//! acknowledged and run in the background when long.

use std::sync::Arc;
use std::time::Duration;

use workflow_core::{CancelOutcome, Enqueued, Task, TaskStatus};

use crate::estimate::estimate_zh;
use crate::handler::BotSettings;
use crate::job::{Attachment, AttachmentKind, BotJob, JobResult, now_ms};
use crate::manager::{AsyncTaskManager, new_task_id};
use crate::progress::{self, Stage};
use crate::push::{Push, Undelivered};

/// A message to the bot, as the chat platform's glue read it.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// The platform's message id (deduplicates redeliveries).
    pub msg_id: String,
    /// The sender's staff id, when the platform gave one (DingTalk's `senderStaffId`).
    pub staff_id: Option<String>,
    /// The sender's (encrypted) id, used when there is no staff id.
    pub sender_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Whether it came from a group.
    pub group: bool,
    /// The conversation's reply webhook.
    pub session_webhook: String,
    /// When that webhook stops working (ms since the epoch).
    pub session_expires_ms: i64,
    /// The text (trimmed; may be empty when only attachments came).
    pub text: String,
    /// Pictures and files.
    pub attachments: Vec<Attachment>,
}

impl Incoming {
    /// Who it is from, for limits and `/tasks`: the staff id, else the sender id.
    pub fn user_key(&self) -> String {
        self.staff_id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.sender_id.clone())
    }

    fn job(&self, prompt: &str, long: bool, class: &str, attachments: Vec<Attachment>) -> BotJob {
        BotJob {
            prompt: prompt.to_owned(),
            user_id: self.user_key(),
            conversation_id: self.conversation_id.clone(),
            group: self.group,
            session_webhook: self.session_webhook.clone(),
            session_expires_ms: self.session_expires_ms,
            received_ms: now_ms(),
            long,
            class: class.to_owned(),
            no_staff_id: self.staff_id.as_deref().is_none_or(str::is_empty),
            attachments,
            card: false,
        }
    }
}

/// The front door: routes every incoming message.
#[derive(Clone)]
pub struct Bot {
    tasks: AsyncTaskManager,
    push: Arc<dyn Push>,
    settings: BotSettings,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

const HELP: &str = "可用命令：\n- /help 帮助\n- /status [任务ID] 查询任务（或：查询任务）\n- /tasks 最近的任务\n- /cancel 任务ID 取消任务（或：取消任务 ID）\n其他内容会作为任务处理（可附图片或文件）；包含“分析公司”“生成报告”等关键词的长任务会在后台处理并主动推送结果。";

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

/// A task's state for `/status` and `/tasks`: an undelivered result is named as such.
fn task_state_zh(t: &Task) -> String {
    match t.last_error.as_deref().and_then(Undelivered::from_error) {
        Some(why) if t.status == TaskStatus::Failed => format!("失败（结果未送达：{}）", why.zh()),
        _ => status_zh(t.status).to_owned(),
    }
}

impl Bot {
    /// A bot queueing jobs through `tasks` and answering through `push`.
    pub fn new(tasks: AsyncTaskManager, push: Arc<dyn Push>, settings: BotSettings) -> Bot {
        Bot {
            tasks,
            push,
            settings,
        }
    }

    /// Answers `m` in its conversation (e.g. that its type is not supported).
    pub async fn reply(&self, m: &Incoming, text: &str) {
        let job = m.job("", false, "general", Vec::new());
        if let Err(e) = self
            .push
            .deliver(&job, "回复", text, true, Duration::ZERO)
            .await
        {
            tracing::warn!(error = %e, "could not reply");
        }
    }

    /// Handles one message (already ACKed and deduplicated): a command, or a job.
    pub async fn handle(&self, mut m: Incoming) {
        let user = m.user_key();
        let text = std::mem::take(&mut m.text);
        let attachments = std::mem::take(&mut m.attachments);
        tracing::info!(user = %user, msg_id = %m.msg_id, files = attachments.len(), "message received");
        if attachments.is_empty() {
            let (cmd, arg) = text
                .split_once(char::is_whitespace)
                .map_or((text.as_str(), ""), |(c, a)| (c, a.trim()));
            match cmd {
                "/help" | "帮助" => return self.reply(&m, HELP).await,
                "/status" | "查询任务" if !arg.is_empty() => return self.status(&m, arg).await,
                "/status" | "查询任务" | "/tasks" => return self.recent(&m, &user).await,
                "/cancel" | "取消任务" => return self.cancel(&m, arg).await,
                _ => {}
            }
        }
        self.task(&m, &user, &text, attachments).await;
    }

    async fn status(&self, m: &Incoming, id: &str) {
        match self.tasks.get_task(id).await {
            Ok(Some(t)) => {
                let mut text = format!("任务 {}：{}", t.id, task_state_zh(&t));
                if let Some(JobResult { answer, .. }) = JobResult::from_task(&t) {
                    let preview: String = answer.chars().take(200).collect();
                    text.push_str(&format!("\n结果：{preview}"));
                }
                if let Some(e) = &t.last_error
                    && Undelivered::from_error(e).is_none()
                {
                    text.push_str(&format!("\n最近错误：{e}"));
                }
                self.reply(m, &text).await;
            }
            _ => self.reply(m, &format!("没有找到任务 {id}")).await,
        }
    }

    async fn recent(&self, m: &Incoming, user: &str) {
        match self.tasks.recent_tasks(user, 5).await {
            Ok(tasks) if !tasks.is_empty() => {
                let lines: Vec<String> = tasks
                    .iter()
                    .map(|t| {
                        let prompt: String = BotJob::from_task(t)
                            .map(|j| j.prompt)
                            .unwrap_or_default()
                            .chars()
                            .take(20)
                            .collect();
                        format!("- {} {} {}", t.id, task_state_zh(t), prompt)
                    })
                    .collect();
                self.reply(m, &format!("您最近的任务：\n{}", lines.join("\n")))
                    .await;
            }
            _ => self.reply(m, "您还没有任务。").await,
        }
    }

    async fn cancel(&self, m: &Incoming, id: &str) {
        if id.is_empty() {
            self.reply(m, "请提供任务ID，例如：/cancel bot_xxx").await;
            return;
        }
        let text = match self.tasks.cancel_task(id).await {
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

    /// Delivers a queued card for a long job; `false` when there is no template, no space for a
    /// card, or DingTalk refused it (the text reply is used then).
    async fn queued_card(&self, id: &str, payload: &BotJob, estimate: &str) -> bool {
        let Some(template) = self.settings.card_template_id.as_deref() else {
            return false;
        };
        let params = progress::params(Stage::Queued, id, payload, None, estimate, "");
        match self
            .push
            .create_card(template, payload, &progress::out_track_id(id), &params)
            .await
        {
            Ok(made) => made,
            Err(e) => {
                tracing::warn!(task_id = id, error = %e, "could not deliver the progress card; replying in text");
                false
            }
        }
    }

    async fn task(&self, m: &Incoming, user: &str, text: &str, attachments: Vec<Attachment>) {
        let long = self.tasks.should_use_async(text);
        let class = self.tasks.classify(text);
        let idempotency_key = format!("msg:{}", m.msg_id);
        let recent = self.tasks.recent_tasks(user, 100).await.unwrap_or_default();
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
        let prompt = if text.is_empty() {
            describe(&attachments)
        } else {
            text.to_owned()
        };
        let mut payload = m.job(&prompt, long, &class, attachments);
        let id = new_task_id();
        let estimate = estimate_zh(self.tasks.stats(), &class);
        // The card goes out first, so the job (which may start at once) finds it to update.
        payload.card = long && self.queued_card(&id, &payload, &estimate).await;
        match self
            .tasks
            .create_task(&id, &payload, Some(idempotency_key))
            .await
        {
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
                if payload.card {
                    let params = progress::params(
                        Stage::Failed,
                        &id,
                        &payload,
                        None,
                        &estimate,
                        "系统繁忙，请稍后重试。",
                    );
                    let _ = self
                        .push
                        .update_card(&progress::out_track_id(&id), &params)
                        .await;
                } else {
                    self.reply(m, "系统繁忙，请稍后重试。").await;
                }
                return;
            }
        }
        if long {
            tracing::info!(task_id = %id, class = %class, card = payload.card, "long task detected");
            if !payload.card {
                let how = if payload.no_staff_id && !payload.group {
                    "完成后会在本会话中回复您（您的消息没有 senderStaffId，无法主动推送）。"
                } else {
                    "完成后会主动推送结果给您。"
                };
                self.reply(
                    m,
                    &format!("收到任务，正在后台处理中...这是一个长时间任务，预计需要 {estimate}，{how}\n任务ID：{id}"),
                )
                .await;
            }
        } else {
            self.reply(m, &format!("收到任务，正在处理中...\n任务ID：{id}"))
                .await;
        }
    }
}

/// A prompt for a message of attachments only.
fn describe(attachments: &[Attachment]) -> String {
    let names: Vec<&str> = attachments
        .iter()
        .filter(|a| a.kind == AttachmentKind::File)
        .map(|a| a.name.as_str())
        .collect();
    let pictures = attachments.len() - names.len();
    match (pictures, names.is_empty()) {
        (0, _) => format!("（用户发送了文件：{}）", names.join("、")),
        (n, true) => format!("（用户发送了 {n} 张图片）"),
        (n, false) => format!("（用户发送了 {n} 张图片和文件：{}）", names.join("、")),
    }
}
