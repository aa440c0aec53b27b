//! Failures the durable job engine retries: a job run by the bot's own parts ([`BotJobHandler`]
//! over [`DingTalkPush`]) on a real engine with a millisecond backoff, against dingtalk-mock
//! answering DingTalk's error bodies. The bot's engine backs off from 5 s, which would make
//! these tests slow; everything else is as the bot runs it.

use std::sync::Arc;
use std::time::Duration;

use async_tasks::{
    AsyncTaskConfig, AsyncTaskManager, Attachment, AttachmentKind, BotJob, BotJobHandler,
    BotSettings, CommandProcessor, DingTalkPush, DurationStats, Echo, JobResult, KIND, Processor,
    new_task_id,
};
use dingtalk_mock::{Api, DingTalkMock, MockConfig, MockFault, MockMessage, MsgType, Said};
use dingtalk_sender::DingTalkSender;
use workflow_core::{
    Engine, EngineConfig, ExponentialBackoff, Jitter, MemoryStore, RetryPolicy, Task, TaskStatus,
};

/// Attempts per job, as the bot's default.
const ATTEMPTS: u32 = 3;

struct Harness {
    mock: DingTalkMock,
    engine: Engine,
    tasks: AsyncTaskManager,
    files: tempfile::TempDir,
}

/// A mock and a bot job engine delivering to it. The sender does not retry by itself, so every
/// failed call is one failed attempt of the job.
async fn harness(processor: Arc<dyn Processor>) -> Harness {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let sender = DingTalkSender::builder()
        .client_id(mock.config().client_id.clone())
        .client_secret(mock.config().client_secret.clone())
        .api_base(mock.base_url())
        .oapi_base(mock.base_url())
        .retry(RetryPolicy {
            max_retries: 0,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            jitter: Jitter::None,
        })
        .build()
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let stats = DurationStats::default();
    let handler = BotJobHandler::new(
        processor,
        Arc::new(DingTalkPush::new(sender)),
        BotSettings {
            files_dir: files.path().to_path_buf(),
            ..BotSettings::default()
        },
        stats.clone(),
    );
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .handler(KIND, Arc::new(handler))
        .config(EngineConfig {
            owner_id: "retries-test".into(),
            backoff: ExponentialBackoff::try_new(
                Duration::from_millis(10),
                Duration::from_millis(50),
                Jitter::None,
            )
            .unwrap(),
            ..EngineConfig::default()
        })
        .start();
    let tasks = AsyncTaskManager::with_stats(
        engine.clone(),
        AsyncTaskConfig {
            max_attempts: ATTEMPTS,
            ..AsyncTaskConfig::default()
        },
        stats,
    );
    Harness {
        mock,
        engine,
        tasks,
        files,
    }
}

/// The job a message said through the mock makes (its conversation, session webhook, user).
fn job(said: &Said, user: &str, group: bool, prompt: &str) -> BotJob {
    BotJob {
        prompt: prompt.to_owned(),
        user_id: user.to_owned(),
        conversation_id: said.conversation_id.clone(),
        group,
        session_webhook: said.session_webhook.clone(),
        session_expires_ms: said.session_webhook_expired_time,
        received_ms: 0,
        long: true,
        class: "general".into(),
        no_staff_id: false,
        attachments: Vec::new(),
        card: false,
    }
}

impl Harness {
    async fn run(&self, job: &BotJob) -> Task {
        let id = new_task_id();
        self.tasks.create_task(&id, job, None).await.unwrap();
        for _ in 0..2000 {
            if let Some(t) = self.tasks.get_task(&id).await.unwrap()
                && t.status.is_final()
            {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} never finished: {:#?}", self.tasks.get_task(&id).await);
    }

    /// Nothing left behind in the attachments folder.
    fn files_left(&self) -> usize {
        std::fs::read_dir(self.files.path()).unwrap().count()
    }
}

/// The last attempt's error, as the engine stores it for a job out of attempts.
fn last_error(task: &Task) -> &str {
    let stored = task.last_error.as_deref().unwrap_or_default();
    stored
        .strip_prefix(&format!("attempts exhausted ({ATTEMPTS}); last error: "))
        .unwrap_or_else(|| panic!("not out of attempts: {stored}"))
}

/// The robot lacks a permission: DingTalk's 403 error body.
fn permission_denied() -> MockFault {
    MockFault::new(
        403,
        "Forbidden.AccessDenied.AccessTokenPermissionDenied",
        "没有调用该接口的权限",
    )
}

/// A processor answering with the content of the files it was given.
fn cat_files() -> Arc<dyn Processor> {
    Arc::new(CommandProcessor {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "printf '%s\\n' \"$BOT_FILES\" | while IFS= read -r f; do cat \"$f\"; done".into(),
        ],
    })
}

fn file_job(said: &Said, user: &str) -> BotJob {
    let mut job = job(said, user, false, "（用户发送了文件：a.pdf）");
    job.attachments = vec![Attachment {
        kind: AttachmentKind::File,
        download_code: said.download_codes[0].clone(),
        name: "a.pdf".into(),
    }];
    job
}

#[tokio::test]
async fn an_attachment_that_cannot_be_downloaded_fails_the_job_and_tells_the_user_once() {
    let h = harness(cat_files()).await;
    let said = h
        .mock
        .say(MockMessage::single("u30", "a.pdf").msg_type(MsgType::File))
        .await;
    h.mock
        .fail_next(Api::FileDownload, &permission_denied(), ATTEMPTS);
    let task = h.run(&file_job(&said, "u30")).await;
    assert_eq!(task.status, TaskStatus::Failed, "{task:#?}");
    assert_eq!(
        task.tries, ATTEMPTS,
        "retried within its attempts: {task:#?}"
    );
    let error = last_error(&task);
    assert!(
        error.starts_with("file download failed: dingtalk answered 403 Forbidden.AccessDenied.AccessTokenPermissionDenied: 没有调用该接口的权限 (requestid "),
        "{error}"
    );
    assert!(task.result.is_none());
    // Told once, after the last attempt, in Chinese, with the task and the cause.
    let out = h.mock.outbox();
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].channel, "batch_send");
    assert_eq!(out[0].to, ["u30"]);
    assert_eq!(out[0].content["title"], "任务失败");
    assert_eq!(
        out[0].text,
        format!(
            "任务 {} 失败：您发送的图片或文件无法下载（{error}）。",
            task.id
        )
    );
    assert_eq!(h.files_left(), 0, "the job's folder is removed");
    h.engine.shutdown().await;
}

#[tokio::test]
async fn an_attachment_download_that_fails_once_is_retried_and_reaches_the_processor() {
    let h = harness(cat_files()).await;
    let said = h
        .mock
        .say(MockMessage::single("u31", "a.pdf").msg_type(MsgType::File))
        .await;
    h.mock
        .fail_next(Api::FileDownload, &MockFault::unavailable(), 1);
    let task = h.run(&file_job(&said, "u31")).await;
    assert_eq!(task.status, TaskStatus::Completed, "{task:#?}");
    assert_eq!(task.tries, 2, "{task:#?}");
    let result = JobResult::from_task(&task).unwrap();
    assert_eq!(result.answer, "mock file a.pdf");
    assert_eq!(result.channel, "batch_send");
    let out = h.mock.outbox();
    assert_eq!(out.len(), 1, "only the result, no failure notice: {out:#?}");
    assert_eq!(out[0].text, "mock file a.pdf");
    assert_eq!(h.files_left(), 0);
    h.engine.shutdown().await;
}

#[tokio::test]
async fn a_group_push_that_keeps_failing_fails_the_job_and_says_so_in_the_group() {
    let h = harness(Arc::new(Echo::default())).await;
    let said = h
        .mock
        .say(MockMessage::group("u32", "cidPushFails==", "分析公司 ACME"))
        .await;
    h.mock
        .fail_next(Api::GroupSend, &MockFault::unavailable(), ATTEMPTS);
    let task = h.run(&job(&said, "u32", true, "分析公司 ACME")).await;
    assert_eq!(task.status, TaskStatus::Failed, "{task:#?}");
    assert_eq!(task.tries, ATTEMPTS, "every attempt pushed once: {task:#?}");
    let error = last_error(&task);
    assert!(
        error.starts_with(
            "push failed: dingtalk answered 503 ServiceUnavailable: 服务暂时不可用 (requestid "
        ),
        "{error}"
    );
    assert!(task.result.is_none(), "no result is stored as delivered");
    // Nothing reached the group by push; the failure is told in the conversation, once.
    let out = h.mock.outbox();
    assert!(!out.iter().any(|e| e.channel == "group_send"), "{out:#?}");
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].channel, "session_webhook");
    assert_eq!(out[0].to, ["cidPushFails=="]);
    assert_eq!(out[0].at_user_ids, ["u32"]);
    assert_eq!(
        out[0].text,
        format!(
            "@u32 任务 {} 已处理完成，但结果推送失败：{}",
            task.id,
            error.trim_start_matches("push failed: ")
        )
    );
    h.engine.shutdown().await;
}

#[tokio::test]
async fn a_group_push_that_fails_within_the_attempts_is_delivered_once() {
    let h = harness(Arc::new(Echo::default())).await;
    let said = h
        .mock
        .say(MockMessage::group(
            "u33",
            "cidPushRetried==",
            "分析公司 ACME",
        ))
        .await;
    h.mock
        .fail_next(Api::GroupSend, &MockFault::unavailable(), ATTEMPTS - 1);
    let task = h.run(&job(&said, "u33", true, "分析公司 ACME")).await;
    assert_eq!(task.status, TaskStatus::Completed, "{task:#?}");
    assert_eq!(task.tries, ATTEMPTS, "{task:#?}");
    assert_eq!(JobResult::from_task(&task).unwrap().channel, "group_send");
    let out = h.mock.outbox();
    assert_eq!(out.len(), 1, "the result once, no failure notice: {out:#?}");
    assert_eq!(out[0].channel, "group_send");
    assert_eq!(out[0].to, ["cidPushRetried=="]);
    assert_eq!(out[0].text, "处理结果：分析公司 ACME");
    h.engine.shutdown().await;
}
