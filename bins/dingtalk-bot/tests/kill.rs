//! The real `dingtalk-bot` executable, against a TLS-only mock whose CA it trusts through
//! `SSL_CERT_FILE`, killed with SIGKILL in the middle of a long job, then
//! started again on the same data directory: the job is re-run and its result pushed exactly
//! once, the user is told "收到任务" once, and a message said while no bot was running is
//! still answered.
//!
//! `bot.rs` stops the bot gracefully in-process (the engine releases the job); here nothing
//! runs on the way down, so what the restart finds is whatever the dead process left in SQLite.
#![cfg(unix)]

use std::fs::File;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage, OutboxEntry};

/// How long any one step may take. Generous, because the machine is shared and slow, yet
/// shorter than the 120 s lease the bot's engine takes on a job: a restart that waited for
/// the dead process's lease to run out, instead of recovering it when the database is
/// opened, fails here.
const DEADLINE: Duration = Duration::from_secs(90);

/// The long request (`市场调研` is a seed keyword) and what the echo processor answers.
const LONG: &str = "市场调研 华东";
const LONG_RESULT: &str = "处理结果：市场调研 华东";

/// A `dingtalk-bot` process. Dropping it kills it, so a failing test leaves nothing behind;
/// its log is printed when the test is panicking.
struct BotProcess {
    child: Child,
    log: PathBuf,
}

impl BotProcess {
    /// Starts the executable against `mock`, with the job database in `data_dir` and the
    /// echo processor taking `echo_delay` (humantime) per request.
    fn start(mock: &DingTalkMock, data_dir: &Path, echo_delay: &str, name: &str) -> BotProcess {
        let log = data_dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("the log file can be created");
        let err = out.try_clone().expect("the log file can be shared");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dingtalk-bot"));
        // Only what this test sets: a BOT_* or DINGTALK_* from the caller's shell would change
        // the configuration under the test's feet.
        for (key, _) in std::env::vars_os() {
            if key
                .to_str()
                .is_some_and(|k| k.starts_with("BOT_") || k.starts_with("DINGTALK_"))
            {
                cmd.env_remove(key);
            }
        }
        // A TLS mock's CA is trusted the way an operator would: SSL_CERT_FILE.
        if let Some(pem) = mock.ca_pem() {
            let ca = data_dir.join("mock-ca.pem");
            std::fs::write(&ca, pem).expect("the CA file can be written");
            cmd.env("SSL_CERT_FILE", ca);
        }
        let child = cmd
            .env("RUST_LOG", "warn")
            .env("DINGTALK_CLIENT_ID", &mock.config().client_id)
            .env("DINGTALK_CLIENT_SECRET", &mock.config().client_secret)
            .env("DINGTALK_ROBOT_CODE", &mock.config().robot_code)
            .env("DINGTALK_API_BASE", mock.base_url())
            .env("DINGTALK_OAPI_BASE", mock.base_url())
            .env("BOT_ECHO_DELAY", echo_delay)
            .args(["--mode", "stream", "--processor", "echo", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the dingtalk-bot executable starts");
        BotProcess { child, log }
    }

    /// SIGKILL (what `Child::kill` sends on Unix): no shutdown code runs.
    fn sigkill(mut self) {
        self.child.kill().expect("the bot is still running");
        let status = self.child.wait().expect("the bot can be waited for");
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        // Already dead after `sigkill`: both calls then fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- {} ---\n{log}", self.log.display());
        }
    }
}

/// Polls until `found` picks something out of the outbox.
async fn eventually<T>(
    mock: &DingTalkMock,
    what: &str,
    found: impl Fn(&[OutboxEntry]) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = found(&mock.outbox()) {
            return t;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not seen within {DEADLINE:?}; outbox: {:#?}",
            mock.outbox()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until the mock has exactly `n` Stream connections.
async fn connections(mock: &DingTalkMock, n: usize) {
    let start = Instant::now();
    while mock.connections() != n {
        assert!(
            start.elapsed() < DEADLINE,
            "{} Stream connections, expected {n}",
            mock.connections()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn task_id(text: &str) -> String {
    text.split("任务ID：")
        .nth(1)
        .expect("the reply names the task")
        .trim()
        .to_owned()
}

/// What `user` was sent whose text satisfies `pred`, on any channel.
fn sent_to<'a>(
    out: &'a [OutboxEntry],
    conversation: &str,
    user: &str,
    pred: impl Fn(&str) -> bool,
) -> Vec<&'a OutboxEntry> {
    out.iter()
        .filter(|e| e.to.iter().any(|t| t == conversation || t == user))
        .filter(|e| pred(&e.text))
        .collect()
}

/// Asks `/status id` as `user` until the answer says `status`.
async fn wait_status(mock: &DingTalkMock, user: &str, id: &str, status: &str) {
    let start = Instant::now();
    loop {
        let before = mock.outbox().len();
        mock.say(MockMessage::single(user, &format!("/status {id}")))
            .await;
        let prefix = format!("任务 {id}：");
        let text = eventually(mock, "the /status answer", |o| {
            o[before.min(o.len())..]
                .iter()
                .find(|e| e.text.starts_with(&prefix))
                .map(|e| e.text.clone())
        })
        .await;
        if text.contains(status) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "task {id} never became {status}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts a bot with a job that never ends on its own, says the long request, waits until the
/// job runs (so it holds a lease) and SIGKILLs the bot. Returns the task id and conversation.
async fn kill_mid_job(mock: &DingTalkMock, dir: &Path, request: MockMessage) -> (String, String) {
    let user = request.sender_staff_id.clone();
    let bot = BotProcess::start(mock, dir, "10m", "first");
    connections(mock, 1).await;
    let said = mock.say(request).await;
    assert!(said.delivered, "the first bot is connected");
    let ack = eventually(mock, "the long-task reply", |o| {
        o.iter()
            .find(|e| e.text.starts_with("收到任务，正在后台处理中..."))
            .cloned()
    })
    .await;
    let id = task_id(&ack.text);
    wait_status(mock, &user, &id, "处理中").await;
    bot.sigkill();
    // The kernel closed the dead process's socket.
    connections(mock, 0).await;
    let out = mock.outbox();
    let early = sent_to(&out, &said.conversation_id, &user, |t| t == LONG_RESULT);
    assert!(early.is_empty(), "nothing was pushed before the restart");
    (id, said.conversation_id)
}

#[tokio::test]
async fn a_bot_killed_mid_job_finishes_it_after_a_restart_and_loses_no_message() {
    // Like DingTalk, the mock keeps a callback nobody ACKed and delivers it once a
    // connection appears.
    let mock = DingTalkMock::start_tls(MockConfig {
        redelivery_after: Some(Duration::from_secs(1)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (id, conversation) = kill_mid_job(&mock, dir.path(), MockMessage::single("u6", LONG)).await;

    let meanwhile = mock.say(MockMessage::single("u7", "你好")).await;
    assert!(!meanwhile.delivered, "no bot is running");

    let _bot = BotProcess::start(&mock, dir.path(), "0s", "second");
    let pushed = eventually(&mock, "the interrupted job's result", |o| {
        o.iter()
            .find(|e| e.channel == "batch_send" && e.text == LONG_RESULT)
            .cloned()
    })
    .await;
    assert_eq!(pushed.to, ["u6"]);
    eventually(&mock, "the answer to the message said while down", |o| {
        o.iter().find(|e| e.text == "处理结果：你好").cloned()
    })
    .await;
    wait_status(&mock, "u6", &id, "已完成").await;

    // Time for a second push or answer to show up, were one coming.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = mock.outbox();
    let results = sent_to(&out, &conversation, "u6", |t| t == LONG_RESULT);
    assert_eq!(results.len(), 1, "pushed exactly once: {out:#?}");
    assert_eq!(results[0].channel, "batch_send");
    let answers: Vec<_> = out.iter().filter(|e| e.text == "处理结果：你好").collect();
    assert_eq!(answers.len(), 1, "answered exactly once: {out:#?}");
}

#[tokio::test]
async fn the_user_of_an_interrupted_job_is_told_once() {
    let mock = DingTalkMock::start_tls(MockConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let request = MockMessage::single("u8", LONG).msg_id("msgKilledMidJob==");
    let (id, conversation) = kill_mid_job(&mock, dir.path(), request.clone()).await;

    let _bot = BotProcess::start(&mock, dir.path(), "0s", "second");
    connections(&mock, 1).await;
    // DingTalk delivers a message again with the same msgId (after a lost ACK, or as one of its
    // duplicates); the new process's in-memory dedupe has never seen it.
    assert!(mock.say(request).await.delivered);
    eventually(&mock, "the interrupted job's result", |o| {
        o.iter()
            .find(|e| e.channel == "batch_send" && e.text == LONG_RESULT)
            .cloned()
    })
    .await;
    wait_status(&mock, "u8", &id, "已完成").await;
    let before = mock.outbox().len();
    mock.say(MockMessage::single("u8", "/tasks")).await;
    let tasks = eventually(&mock, "the /tasks answer", |o| {
        o[before.min(o.len())..]
            .iter()
            .find(|e| e.text.starts_with("您最近的任务"))
            .map(|e| e.text.clone())
    })
    .await;
    assert_eq!(tasks.lines().count(), 2, "one task, not two: {tasks}");
    assert!(tasks.contains(&id), "{tasks}");

    // Time for a second notice or push to show up, were one coming.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = mock.outbox();
    let told = sent_to(&out, &conversation, "u8", |t| t.starts_with("收到任务"));
    assert_eq!(told.len(), 1, "told once: {out:#?}");
    assert!(told[0].text.contains(&id), "{}", told[0].text);
    let results = sent_to(&out, &conversation, "u8", |t| t == LONG_RESULT);
    assert_eq!(results.len(), 1, "pushed exactly once: {out:#?}");
}
