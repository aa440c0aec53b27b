//! The bot's logic: route each message, answer short requests in the conversation, run long
//! ones as durable jobs and push their results, and say so when a result did not arrive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dingtalk_sender::DingTalkSender;
use dingtalk_stream::RobotMessage;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use workflow_core::{
    AsyncTaskManager, AttemptContext, CancelOutcome, Engine, Enqueued, Handler, HandlerOutcome,
    NewTask, Priority, Task, TaskFilter, TaskStatus,
};

use crate::deliver::{DeliveryError, Undelivered, deliver, tell_undelivered};
use crate::estimate::estimate_zh;
use crate::incoming::{Attachment, AttachmentKind, Request};
use crate::processor::{Job, JobFile, ProcessError, Processor};
use crate::progress::{self, Stage};

/// The task kind of bot jobs.
pub const KIND: &str = "bot_job";

/// What a job carries, so it can finish after a restart without the original message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotJobPayload {
    /// What was asked.
    pub prompt: String,
    /// The asker: the staff id, or (without one) the encrypted sender id, which only keys the
    /// per-user limits and `/tasks`.
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
    /// The message had no `senderStaffId`: a single chat can then only be answered through its
    /// session webhook.
    #[serde(default)]
    pub no_staff_id: bool,
    /// Pictures and files that came with the request.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// A progress card was delivered for this job ([`progress::out_track_id`]).
    #[serde(default)]
    pub card: bool,
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
    /// Session webhooks this close to expiry are not used for results.
    pub session_margin: Duration,
    /// Where attachments are downloaded for the processor (one folder per job, removed after).
    pub files_dir: PathBuf,
    /// Long jobs get a progress card from this template instead of text.
    pub card_template_id: Option<String>,
    /// How often a running job's card shows the new elapsed time.
    pub card_update_interval: Duration,
}

impl Default for BotSettings {
    fn default() -> Self {
        BotSettings {
            sync_deadline: Duration::from_secs(60),
            task_timeout: Duration::from_secs(1800),
            max_jobs_per_user: 5,
            session_margin: Duration::from_secs(300),
            files_dir: std::env::temp_dir().join("dingtalk-bot-files"),
            card_template_id: None,
            card_update_interval: Duration::from_secs(15),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Counts a job's end for `/metrics` (`bot_jobs_finished_total{outcome}`; undelivered results
/// also in `bot_results_undelivered_total{reason}`).
fn count_finished(outcome: &'static str) {
    metrics::counter!("bot_jobs_finished_total", "outcome" => outcome).increment(1);
}

/// Runs bot jobs for the engine: attachments, the processor with a timeout, then delivery.
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

fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .take(100)
        .collect();
    match cleaned.trim_start_matches('.') {
        "" => "file".to_owned(),
        s => s.to_owned(),
    }
}

fn picture_extension(content_type: Option<&str>) -> &'static str {
    match content_type.unwrap_or_default() {
        t if t.starts_with("image/png") => ".png",
        t if t.starts_with("image/gif") => ".gif",
        t if t.starts_with("image/webp") => ".webp",
        _ => ".jpg",
    }
}

impl BotJobHandler {
    async fn update_card(
        &self,
        task_id: &str,
        job: &BotJobPayload,
        stage: Stage,
        elapsed: Option<Duration>,
        content: &str,
    ) -> bool {
        let estimate = estimate_zh(&self.stats, &job.class);
        let params = progress::params(stage, task_id, job, elapsed, &estimate, content);
        match self
            .sender
            .update_card(&progress::out_track_id(task_id), &params)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(task_id, error = %e, stage = stage.zh(), "could not update the progress card");
                false
            }
        }
    }

    /// Downloads the job's attachments into a folder of its own.
    async fn fetch_files(
        &self,
        task_id: &str,
        job: &BotJobPayload,
    ) -> Result<Vec<JobFile>, String> {
        let mut files = Vec::new();
        if job.attachments.is_empty() {
            return Ok(files);
        }
        let dir = self.settings.files_dir.join(safe_name(task_id));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("cannot create the files folder: {e}"))?;
        for (i, a) in job.attachments.iter().enumerate() {
            let file = self
                .sender
                .download_file(&a.download_code)
                .await
                .map_err(|e| format!("file download failed: {e}"))?;
            let mut name = safe_name(&a.name);
            if a.kind == AttachmentKind::Picture && !name.contains('.') {
                name.push_str(picture_extension(file.content_type.as_deref()));
            }
            let path = dir.join(format!("{}-{name}", i + 1));
            tokio::fs::write(&path, &file.bytes)
                .await
                .map_err(|e| format!("cannot store {name}: {e}"))?;
            files.push(JobFile {
                path,
                name,
                picture: a.kind == AttachmentKind::Picture,
                content_type: file.content_type,
                url: file.url,
            });
        }
        Ok(files)
    }

    /// Ends a job whose processing failed for good: tells the user on the card or in text.
    async fn tell_failure(&self, task: &Task, job: &BotJobPayload, title: &str, notice: &str) {
        if job.card
            && self
                .update_card(&task.id, job, Stage::Failed, None, notice)
                .await
        {
            return;
        }
        if let Err(e) = deliver(
            &self.sender,
            job,
            title,
            notice,
            false,
            self.settings.session_margin,
        )
        .await
        {
            tracing::warn!(task_id = %task.id, error = %e, "could not tell the user about the failure");
        }
    }

    async fn run_processor(
        &self,
        task: &Task,
        job: &BotJobPayload,
        work: &Job,
        cancel: &CancellationToken,
        started: std::time::Instant,
    ) -> Result<Result<String, ProcessError>, tokio::time::error::Elapsed> {
        let run = tokio::time::timeout(
            self.settings.task_timeout,
            self.processor.process(work, cancel),
        );
        if !job.card {
            return run.await;
        }
        tokio::pin!(run);
        let mut tick = tokio::time::interval(self.settings.card_update_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                r = &mut run => return r,
                _ = tick.tick() => {
                    self.update_card(&task.id, job, Stage::Running, Some(started.elapsed()), "").await;
                }
            }
        }
    }

    /// Delivers a finished job's answer: on its card (the first part and a note when long, the
    /// whole answer then pushed), else as text.
    async fn deliver_answer(
        &self,
        task: &Task,
        job: &BotJobPayload,
        answer: &str,
        took: Duration,
    ) -> Result<&'static str, DeliveryError> {
        let title = if job.long {
            "后台任务完成"
        } else {
            "处理结果"
        };
        if job.card {
            let (shown, cut) = progress::done_content(
                answer,
                "（结果较长，此处为开头部分；完整结果已分条推送给您。）",
            );
            if !cut {
                if self
                    .update_card(&task.id, job, Stage::Done, Some(took), &shown)
                    .await
                {
                    return Ok("card");
                }
            } else {
                let pushed = deliver(
                    &self.sender,
                    job,
                    title,
                    answer,
                    false,
                    self.settings.session_margin,
                )
                .await;
                let shown = match &pushed {
                    Ok(_) => shown,
                    Err(e) => {
                        let (first, _) = progress::done_content(answer, "");
                        format!("{first}\n\n（结果较长，此处为开头部分；完整结果未能推送：{e}）")
                    }
                };
                self.update_card(&task.id, job, Stage::Done, Some(took), &shown)
                    .await;
                return pushed.map(|_| "card+push");
            }
        }
        let in_time = now_ms() - job.received_ms
            <= i64::try_from(self.settings.sync_deadline.as_millis()).unwrap_or(i64::MAX);
        let prefer_session = !job.long && in_time;
        deliver(
            &self.sender,
            job,
            title,
            answer,
            prefer_session,
            self.settings.session_margin,
        )
        .await
    }
}

#[async_trait]
impl Handler for BotJobHandler {
    async fn handle(&self, task: &Task, ctx: AttemptContext) -> HandlerOutcome {
        let job: BotJobPayload = match serde_json::from_value(task.payload.clone()) {
            Ok(j) => j,
            Err(e) => return HandlerOutcome::permanent(format!("unreadable bot job: {e}")),
        };
        let last_attempt = ctx.attempt >= task.max_attempts;
        tracing::info!(task_id = %task.id, user = %job.user_id, long = job.long, files = job.attachments.len(), "task started");
        let started = std::time::Instant::now();
        if job.card {
            self.update_card(&task.id, &job, Stage::Running, Some(Duration::ZERO), "")
                .await;
        }
        let files = match self.fetch_files(&task.id, &job).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(task_id = %task.id, error = %e, "attachments could not be fetched");
                let _ =
                    tokio::fs::remove_dir_all(self.settings.files_dir.join(safe_name(&task.id)))
                        .await;
                if last_attempt {
                    count_finished("failed");
                    let notice =
                        format!("任务 {} 失败：您发送的图片或文件无法下载（{e}）。", task.id);
                    self.tell_failure(task, &job, "任务失败", &notice).await;
                }
                return HandlerOutcome::retryable(e);
            }
        };
        let work = Job {
            task_id: task.id.clone(),
            user_id: job.user_id.clone(),
            conversation_id: job.conversation_id.clone(),
            prompt: job.prompt.clone(),
            files,
        };
        let cancel: CancellationToken = ctx.cancel.clone();
        let outcome = self
            .run_processor(task, &job, &work, &cancel, started)
            .await;
        if !work.files.is_empty() {
            let _ =
                tokio::fs::remove_dir_all(self.settings.files_dir.join(safe_name(&task.id))).await;
        }
        let answer = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(ProcessError::Cancelled)) => {
                if job.card && !cancel.is_cancelled() {
                    // Not expected: processors only return Cancelled when told to.
                    tracing::warn!(task_id = %task.id, "processor cancelled by itself");
                }
                if job.card {
                    self.update_card(
                        &task.id,
                        &job,
                        Stage::Failed,
                        Some(started.elapsed()),
                        "任务已取消。",
                    )
                    .await;
                }
                count_finished("cancelled");
                return HandlerOutcome::permanent("cancelled");
            }
            Ok(Err(ProcessError::Failed(e))) => {
                tracing::warn!(task_id = %task.id, error = %e, "processor failed");
                if last_attempt {
                    count_finished("failed");
                    let notice = format!("任务 {} 处理失败：{e}", task.id);
                    self.tell_failure(task, &job, "任务失败", &notice).await;
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
                count_finished("timed_out");
                self.tell_failure(task, &job, "任务超时", &notice).await;
                return HandlerOutcome::permanent("timed out");
            }
        };
        let took = started.elapsed();
        self.stats.record(&job.class, took);
        match self.deliver_answer(task, &job, &answer, took).await {
            Ok(channel) => {
                count_finished("delivered");
                tracing::info!(task_id = %task.id, duration_ms = millis(took), channel, "task completed; result delivered");
                HandlerOutcome::success_with(serde_json::json!({
                    "answer": answer,
                    "channel": channel,
                    "took_ms": millis(took),
                    "class": job.class,
                }))
            }
            Err(DeliveryError::Undelivered(why)) => {
                count_finished("undelivered");
                metrics::counter!("bot_results_undelivered_total", "reason" => why.as_str())
                    .increment(1);
                let told = tell_undelivered(&self.sender, &job, &task.id, why).await;
                tracing::warn!(task_id = %task.id, reason = why.as_str(), told_in_conversation = told, "task completed but its result was not delivered");
                HandlerOutcome::permanent(DeliveryError::Undelivered(why).to_string())
            }
            Err(DeliveryError::Failed(e)) => {
                tracing::warn!(task_id = %task.id, error = %e, "pushing the result failed; retrying on the durable schedule");
                if last_attempt {
                    count_finished("push_failed");
                    if crate::deliver::session_valid(&job, Duration::ZERO) {
                        let notice = format!("任务 {} 已处理完成，但结果推送失败：{e}", task.id);
                        let _ = deliver(
                            &self.sender,
                            &job,
                            "结果未送达",
                            &notice,
                            true,
                            Duration::ZERO,
                        )
                        .await;
                    }
                }
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
    async fn reply(&self, m: &RobotMessage, text: &str) {
        let job = payload_of(m, "", false, "general", Vec::new());
        if let Err(e) = deliver(&self.sender, &job, "回复", text, true, Duration::ZERO).await {
            tracing::warn!(error = %e, "could not reply");
        }
    }

    /// Handles one message (already ACKed and deduplicated). Every message gets an answer:
    /// a type the bot cannot act on is answered with what it supports.
    pub async fn handle(&self, m: RobotMessage) {
        let user = user_key(&m);
        let (text, attachments) = match crate::incoming::read(&m) {
            Request::Ask { text, attachments } => (text, attachments),
            Request::Unsupported(label) => {
                tracing::info!(user = %user, msg_id = %m.msg_id, msgtype = %m.msgtype, "unsupported message answered");
                self.reply(&m, &crate::incoming::unsupported_reply(&label))
                    .await;
                return;
            }
        };
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

    async fn status(&self, m: &RobotMessage, id: &str) {
        match self.engine.store().get(id).await {
            Ok(Some(t)) if t.kind == KIND => {
                let mut text = format!("任务 {}：{}", t.id, task_state_zh(&t));
                if let Some(answer) = t.result.as_ref().and_then(|r| r["answer"].as_str()) {
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
                        format!("- {} {} {}", t.id, task_state_zh(t), prompt)
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

    /// Delivers a queued card for a long job; `false` when there is no template, no space for a
    /// card, or DingTalk refused it (the text reply is used then).
    async fn queued_card(&self, id: &str, payload: &BotJobPayload, estimate: &str) -> bool {
        let (Some(template), Some(space)) = (
            self.settings.card_template_id.as_deref(),
            progress::space(payload),
        ) else {
            return false;
        };
        let params = progress::params(Stage::Queued, id, payload, None, estimate, "");
        match self
            .sender
            .create_and_deliver_card(template, &progress::out_track_id(id), &space, &params)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(task_id = id, error = %e, "could not deliver the progress card; replying in text");
                false
            }
        }
    }

    async fn task(&self, m: &RobotMessage, user: &str, text: &str, attachments: Vec<Attachment>) {
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
        let prompt = if text.is_empty() {
            describe(&attachments)
        } else {
            text.to_owned()
        };
        let mut payload = payload_of(m, &prompt, long, &class, attachments);
        let id = format!("bot_{}", uuid_like());
        let estimate = estimate_zh(self.tasks.stats(), &class);
        // The card goes out first, so the job (which may start at once) finds it to update.
        payload.card = long && self.queued_card(&id, &payload, &estimate).await;
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
                        .sender
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

fn uuid_like() -> String {
    format!(
        "{:016x}{:08x}",
        chrono::Utc::now().timestamp_micros(),
        rand::random::<u32>()
    )
}

/// Who a message is from, for limits and `/tasks`: the staff id, else the encrypted sender id.
fn user_key(m: &RobotMessage) -> String {
    m.sender_staff_id
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| m.sender_id.clone())
}

fn payload_of(
    m: &RobotMessage,
    prompt: &str,
    long: bool,
    class: &str,
    attachments: Vec<Attachment>,
) -> BotJobPayload {
    BotJobPayload {
        prompt: prompt.to_owned(),
        user_id: user_key(m),
        conversation_id: m.conversation_id.clone(),
        group: m.is_group(),
        session_webhook: m.session_webhook.clone(),
        session_expires_ms: m.session_webhook_expired_time,
        received_ms: now_ms(),
        long,
        class: class.to_owned(),
        no_staff_id: m.sender_staff_id.as_deref().is_none_or(str::is_empty),
        attachments,
        card: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_stored_before_attachments_and_cards_still_reads() {
        let old = serde_json::json!({
            "prompt": "分析公司", "user_id": "u1", "conversation_id": "c", "group": false,
            "session_webhook": "http://x", "session_expires_ms": 1, "received_ms": 1,
            "long": true, "class": "分析公司"
        });
        let job: BotJobPayload = serde_json::from_value(old).unwrap();
        assert!(!job.no_staff_id && !job.card && job.attachments.is_empty());
    }

    #[test]
    fn file_names_cannot_leave_their_folder() {
        assert_eq!(safe_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_name(".."), "file");
        assert_eq!(safe_name("报告.pdf"), "报告.pdf");
    }
}
