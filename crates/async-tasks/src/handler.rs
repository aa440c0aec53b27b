//! [`BotJobHandler`]: runs a bot job for the engine (attachments, the processor under a
//! timeout and a progress card, then delivery through [`Push`]) and says so when a result did
//! not arrive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use workflow_core::{AttemptContext, AttemptResult, Handler, HandlerOutcome, Task};

use crate::estimate::estimate_zh;
use crate::job::{AttachmentKind, BotJob, JobResult, now_ms};
use crate::processor::{Job, JobFile, ProcessError, Processor};
use crate::progress::{self, Stage};
use crate::push::{DeliveryError, Push};
use crate::stats::DurationStats;

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
    processor: Arc<dyn Processor>,
    push: Arc<dyn Push>,
    settings: BotSettings,
    stats: DurationStats,
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
    /// A handler running `processor` and delivering through `push`, recording durations in
    /// `stats` (share them with the [`AsyncTaskManager`](crate::AsyncTaskManager)).
    pub fn new(
        processor: Arc<dyn Processor>,
        push: Arc<dyn Push>,
        settings: BotSettings,
        stats: DurationStats,
    ) -> BotJobHandler {
        BotJobHandler {
            processor,
            push,
            settings,
            stats,
        }
    }

    async fn update_card(
        &self,
        task_id: &str,
        job: &BotJob,
        stage: Stage,
        elapsed: Option<Duration>,
        content: &str,
    ) -> bool {
        let estimate = estimate_zh(&self.stats, &job.class);
        let params = progress::params(stage, task_id, job, elapsed, &estimate, content);
        match self
            .push
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
    async fn fetch_files(&self, task_id: &str, job: &BotJob) -> Result<Vec<JobFile>, String> {
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
                .push
                .download(&a.download_code)
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
    async fn tell_failure(&self, task: &Task, job: &BotJob, title: &str, notice: &str) {
        if job.card
            && self
                .update_card(&task.id, job, Stage::Failed, None, notice)
                .await
        {
            return;
        }
        if let Err(e) = self
            .push
            .deliver(job, title, notice, false, self.settings.session_margin)
            .await
        {
            tracing::warn!(task_id = %task.id, error = %e, "could not tell the user about the failure");
        }
    }

    async fn run_processor(
        &self,
        task: &Task,
        job: &BotJob,
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
        job: &BotJob,
        answer: &str,
        took: Duration,
    ) -> Result<&'static str, DeliveryError> {
        let excerpt = |text: &str, max: usize| self.push.excerpt(text, max);
        let title = if job.long {
            "后台任务完成"
        } else {
            "处理结果"
        };
        if job.card {
            let (shown, cut) = progress::done_content(
                answer,
                "（结果较长，此处为开头部分；完整结果已分条推送给您。）",
                &excerpt,
            );
            if !cut {
                if self
                    .update_card(&task.id, job, Stage::Done, Some(took), &shown)
                    .await
                {
                    return Ok("card");
                }
            } else {
                let pushed = self
                    .push
                    .deliver(job, title, answer, false, self.settings.session_margin)
                    .await;
                let shown = match &pushed {
                    Ok(_) => shown,
                    Err(e) => {
                        let (first, _) = progress::done_content(answer, "", &excerpt);
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
        self.push
            .deliver(
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
    /// One attempt of the job, in a `bot job` span (target `otel`: exported by a process that
    /// exports traces, else disabled) with `task_id`, `attempt` and, at the end, `outcome`.
    async fn handle(&self, task: &Task, ctx: AttemptContext) -> HandlerOutcome {
        let span = tracing::info_span!(
            target: "otel",
            "bot job",
            otel.status_code = tracing::field::Empty,
            task_id = %task.id,
            // i64: the OpenTelemetry bridge keeps only signed integers as numbers.
            attempt = i64::from(ctx.attempt),
            outcome = tracing::field::Empty,
        );
        if span.is_disabled() {
            return self.attempt(task, ctx).await;
        }
        let outcome = self.attempt(task, ctx).instrument(span.clone()).await;
        let (name, failed) = match &outcome.result {
            AttemptResult::Success(_) => ("success", false),
            AttemptResult::Retryable { .. } => ("retryable", true),
            AttemptResult::Permanent { .. } => ("permanent", true),
            AttemptResult::Deferred { .. } => ("deferred", false),
        };
        span.record("outcome", name);
        if failed {
            span.record("otel.status_code", "error");
        }
        outcome
    }
}

impl BotJobHandler {
    async fn attempt(&self, task: &Task, ctx: AttemptContext) -> HandlerOutcome {
        let job = match BotJob::from_task(task) {
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
                HandlerOutcome::success_with(
                    JobResult {
                        answer,
                        channel: channel.to_owned(),
                        took_ms: Some(millis(took)),
                        class: Some(job.class),
                    }
                    .to_value(),
                )
            }
            Err(DeliveryError::Undelivered(why)) => {
                count_finished("undelivered");
                metrics::counter!("bot_results_undelivered_total", "reason" => why.as_str())
                    .increment(1);
                let told = self.push.tell_undelivered(&job, &task.id, why).await;
                tracing::warn!(task_id = %task.id, reason = why.as_str(), told_in_conversation = told, "task completed but its result was not delivered");
                HandlerOutcome::permanent(DeliveryError::Undelivered(why).to_string())
            }
            Err(DeliveryError::Failed(e)) => {
                tracing::warn!(task_id = %task.id, error = %e, "pushing the result failed; retrying on the durable schedule");
                if last_attempt {
                    count_finished("push_failed");
                    if job.session_valid(Duration::ZERO) {
                        let notice = format!("任务 {} 已处理完成，但结果推送失败：{e}", task.id);
                        let _ = self
                            .push
                            .deliver(&job, "结果未送达", &notice, true, Duration::ZERO)
                            .await;
                    }
                }
                HandlerOutcome::retryable(format!("push failed: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_leave_their_folder() {
        assert_eq!(safe_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_name(".."), "file");
        assert_eq!(safe_name("报告.pdf"), "报告.pdf");
    }
}
