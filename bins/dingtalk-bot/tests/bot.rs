//! The bot end to end against dingtalk-mock over real sockets: over https/wss with the mock's
//! throwaway CA given as `ca_file`, as against real DingTalk, except one test kept on plain ws.

use std::time::Duration;

use dingtalk_bot::{Config, ProcessorKind};
use dingtalk_mock::{Api, DingTalkMock, MockConfig, MockFault, MockMessage, MsgType, OutboxEntry};
use serde_json::json;

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A mock serving only https and wss.
async fn tls_mock(config: MockConfig) -> DingTalkMock {
    let mock = DingTalkMock::start_tls(config).await.unwrap();
    assert!(mock.base_url().starts_with("https://"));
    mock
}

fn config(mock: &DingTalkMock, dir: &std::path::Path) -> Config {
    let ca_file = mock.ca_pem().map(|pem| {
        let path = dir.join("mock-ca.pem");
        std::fs::write(&path, pem).unwrap();
        path
    });
    Config {
        ca_file,
        client_id: mock.config().client_id.clone(),
        client_secret: mock.config().client_secret.clone(),
        api_base: mock.base_url(),
        oapi_base: mock.base_url(),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    }
}

fn start(config: Config) -> Running {
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(dingtalk_bot::run(config, async move {
        let _ = rx.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn connected(mock: &DingTalkMock) {
    for _ in 0..500 {
        if mock.connections() > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the bot never connected");
}

async fn wait_outbox(
    mock: &DingTalkMock,
    pred: impl Fn(&[OutboxEntry]) -> bool,
) -> Vec<OutboxEntry> {
    for _ in 0..1000 {
        let out = mock.outbox();
        if pred(&out) {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("outbox never matched: {:#?}", mock.outbox());
}

fn task_id(text: &str) -> String {
    text.split("任务ID：").nth(1).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_short_message_is_answered_in_the_conversation_over_plain_ws() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    assert!(mock.base_url().starts_with("http://"));
    let dir = tempfile::tempdir().unwrap();
    let bot = start(config(&mock, dir.path()));
    connected(&mock).await;
    let mut live = mock.subscribe_outbox();
    mock.say(MockMessage::single("u1", "你好")).await;
    let out = wait_outbox(&mock, |o| o.len() >= 2).await;
    assert!(
        out.iter().all(|e| e.channel == "session_webhook"),
        "{out:#?}"
    );
    assert!(out[0].text.starts_with("收到任务，正在处理中..."));
    assert_eq!(out[1].text, "处理结果：你好");
    // A subscriber saw the same entries, in the same order, as they arrived.
    assert_eq!(live.recv().await.unwrap(), out[0]);
    assert_eq!(live.recv().await.unwrap(), out[1]);
    bot.stop().await;
}

#[tokio::test]
async fn a_long_message_is_acknowledged_then_pushed_to_the_user() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.echo_delay = Duration::from_millis(300);
    let bot = start(c);
    connected(&mock).await;
    mock.say(MockMessage::single("u1", "分析公司 ACME")).await;
    let out = wait_outbox(&mock, |o| o.len() >= 2).await;
    assert_eq!(out[0].channel, "session_webhook");
    assert!(
        out[0]
            .text
            .starts_with("收到任务，正在后台处理中...这是一个长时间任务，预计需要"),
        "{}",
        out[0].text
    );
    assert!(out[0].text.contains("完成后会主动推送结果给您"));
    assert_eq!(
        out[1].channel, "batch_send",
        "long results are pushed, not replied"
    );
    assert_eq!(out[1].to, ["u1"]);
    assert_eq!(out[1].text, "处理结果：分析公司 ACME");
    bot.stop().await;
}

#[tokio::test]
async fn a_group_request_is_pushed_to_the_group_and_long_results_arrive_in_parts() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let bot = start(config(&mock, dir.path()));
    connected(&mock).await;
    let body: String = (0..4000).map(|i| format!("第{i}条数据。")).collect();
    let text = format!("生成报告 {body}");
    assert!(text.chars().count() >= 30_000);
    mock.say(MockMessage::group("u2", "cidTeam==", &text)).await;
    // Wait for the last part, "(n/n) ...".
    let last_part = |e: &OutboxEntry| {
        e.channel == "group_send"
            && e.text
                .strip_prefix('(')
                .and_then(|r| r.split_once(')'))
                .and_then(|(frac, _)| frac.split_once('/'))
                .is_some_and(|(a, b)| a == b)
    };
    let all = wait_outbox(&mock, |o| o.iter().any(last_part)).await;
    let parts: Vec<String> = all
        .iter()
        .filter(|e| e.channel == "group_send")
        .map(|e| e.text.clone())
        .collect();
    assert!(parts.len() > 1);
    assert!(parts[0].starts_with(&format!("(1/{}) ", parts.len())));
    assert_eq!(
        dingtalk_sender::reassemble(&parts),
        format!("处理结果：{text}")
    );
    assert!(
        all.iter()
            .filter(|e| e.channel == "group_send")
            .all(|e| e.to == ["cidTeam=="])
    );
    bot.stop().await;
}

#[tokio::test]
async fn a_result_that_outlives_its_session_webhook_is_pushed_instead() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.echo_delay = Duration::from_millis(500);
    let bot = start(c);
    connected(&mock).await;
    mock.say(MockMessage::single("u3", "今天的舆情")).await;
    wait_outbox(&mock, |o| !o.is_empty()).await;
    mock.expire_sessions();
    let out = wait_outbox(&mock, |o| o.len() >= 2).await;
    assert_eq!(out[1].channel, "batch_send");
    assert_eq!(out[1].text, "处理结果：今天的舆情");
    bot.stop().await;
}

#[tokio::test]
async fn a_duplicate_delivery_is_processed_once() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let bot = start(config(&mock, dir.path()));
    connected(&mock).await;
    let mut m = MockMessage::single("u4", "一次就好");
    m.msg_id = Some("msgOnce==".into());
    mock.say(m.clone()).await;
    mock.say(m).await;
    wait_outbox(&mock, |o| o.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.outbox().len(), 2, "{:#?}", mock.outbox());
    bot.stop().await;
}

#[tokio::test]
async fn status_and_cancel_work_and_cancel_kills_the_command() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.processor = ProcessorKind::Command;
    c.processor_command = Some("sleep 30".into());
    let bot = start(c);
    connected(&mock).await;
    mock.say(MockMessage::single("u5", "竞品分析 全年")).await;
    let out = wait_outbox(&mock, |o| !o.is_empty()).await;
    let id = task_id(&out[0].text);
    tokio::time::sleep(Duration::from_millis(200)).await;
    mock.say(MockMessage::single("u5", &format!("/status {id}")))
        .await;
    let out = wait_outbox(&mock, |o| o.len() >= 2).await;
    assert!(out[1].text.contains("处理中"), "{}", out[1].text);
    mock.say(MockMessage::single("u5", &format!("/cancel {id}")))
        .await;
    let out = wait_outbox(&mock, |o| o.len() >= 3).await;
    assert!(out[2].text.contains("已取消"), "{}", out[2].text);
    mock.say(MockMessage::single("u5", &format!("查询任务 {id}")))
        .await;
    let out = wait_outbox(&mock, |o| o.len() >= 4 && o[3].text.contains("已取消")).await;
    assert!(out[3].text.contains(&id));
    mock.say(MockMessage::single("u5", "/help")).await;
    let out = wait_outbox(&mock, |o| o.len() >= 5).await;
    assert!(out[4].text.contains("/cancel"));
    bot.stop().await;
}

#[tokio::test]
async fn a_restarted_bot_finishes_the_interrupted_job() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.echo_delay = Duration::from_secs(60);
    c.shutdown_grace = Duration::from_millis(100);
    let bot = start(c.clone());
    connected(&mock).await;
    mock.say(MockMessage::single("u6", "市场调研 华东")).await;
    wait_outbox(&mock, |o| !o.is_empty()).await;
    // Stop while the job runs: it is released, not lost.
    bot.stop().await;
    assert_eq!(mock.outbox().len(), 1);
    c.echo_delay = Duration::from_millis(10);
    let bot = start(c);
    let out = wait_outbox(&mock, |o| o.len() >= 2).await;
    assert_eq!(out[1].channel, "batch_send");
    assert_eq!(out[1].text, "处理结果：市场调研 华东");
    bot.stop().await;
}

#[tokio::test]
async fn a_redelivery_from_a_user_at_the_job_limit_is_dropped_not_refused() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.echo_delay = Duration::from_secs(60);
    c.max_jobs_per_user = 1;
    c.shutdown_grace = Duration::from_millis(100);
    let bot = start(c.clone());
    connected(&mock).await;
    let first = MockMessage::single("u9", "市场调研 华南").msg_id("msgAtTheLimit==");
    mock.say(first.clone()).await;
    wait_outbox(&mock, |o| !o.is_empty()).await;
    // A restart empties the in-memory dedupe; the job is still running and fills u9's one slot.
    bot.stop().await;
    let bot = start(c);
    for _ in 0..500 {
        if mock.connections() > 0 && mock.say(first.clone()).await.delivered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A new request is refused: the limit is in force.
    mock.say(MockMessage::single("u9", "市场调研 西北")).await;
    wait_outbox(&mock, |o| o.iter().any(|e| e.text.starts_with("您已有"))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = mock.outbox();
    let refused = out.iter().filter(|e| e.text.starts_with("您已有")).count();
    let told = out
        .iter()
        .filter(|e| e.text.starts_with("收到任务"))
        .count();
    assert_eq!(refused, 1, "only the new request is refused: {out:#?}");
    assert_eq!(
        told, 1,
        "the redelivered request is not acknowledged again: {out:#?}"
    );
    bot.stop().await;
}

#[tokio::test]
async fn a_short_message_is_answered_over_https_and_wss() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let bot = start(config(&mock, dir.path()));
    connected(&mock).await;
    mock.say(MockMessage::single("u1", "你好")).await;
    let out = wait_outbox(&mock, |o| o.len() >= 2).await;
    assert_eq!(out[1].text, "处理结果：你好");
    bot.stop().await;
}

#[tokio::test]
async fn without_the_ca_the_bot_does_not_trust_the_tls_mock() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.ca_file = None;
    let bot = start(c);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mock.connections(), 0, "an unknown CA is refused");
    bot.stop().await;
}

async fn told(mock: &DingTalkMock, needle: &str) -> Vec<OutboxEntry> {
    wait_outbox(mock, |o| o.iter().any(|e| e.text.contains(needle))).await
}

#[tokio::test]
async fn a_result_dingtalk_reports_undelivered_fails_the_job_and_the_user_is_told() {
    let mock = tls_mock(MockConfig {
        invalid_users: std::collections::HashSet::from(["ghost".to_owned()]),
        ..MockConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    c.metrics_listen = Some(metrics);
    let bot = start(c);
    connected(&mock).await;
    mock.say(MockMessage::single("ghost", "分析公司 ACME"))
        .await;
    let out = told(&mock, "结果未能推送给您").await;
    let id = task_id(&out[0].text);
    let notice = out
        .iter()
        .find(|e| e.text.contains("结果未能推送给您"))
        .unwrap();
    assert_eq!(
        notice.channel, "session_webhook",
        "told in the conversation"
    );
    assert!(
        notice.text.contains(&id) && notice.text.contains("invalidStaffIdList"),
        "{}",
        notice.text
    );
    assert!(
        !mock
            .outbox()
            .iter()
            .any(|e| e.text == "处理结果：分析公司 ACME"),
        "nobody received the result"
    );
    mock.say(MockMessage::single("ghost", &format!("/status {id}")))
        .await;
    // The bot installs no process-wide TLS provider; this test's own client needs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scraped = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scraped.contains("bot_results_undelivered_total{reason=\"invalid user\"}"),
        "{scraped}"
    );
    let out = told(&mock, "：失败（结果未送达").await;
    assert!(
        out.iter()
            .any(|e| e.text.starts_with(&format!("任务 {id}：失败（结果未送达"))),
        "{out:#?}"
    );
    bot.stop().await;
}

#[tokio::test]
async fn a_user_still_flow_controlled_after_the_retries_is_not_told_result_pushed() {
    let mock = tls_mock(MockConfig::default()).await;
    mock.flow_control("busy");
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.flow_control_retries = 0;
    let bot = start(c);
    connected(&mock).await;
    mock.say(MockMessage::single("busy", "生成报告 周报")).await;
    let out = told(&mock, "结果未能推送给您").await;
    let notice = out
        .iter()
        .find(|e| e.text.contains("结果未能推送给您"))
        .unwrap();
    assert!(
        notice.text.contains("flowControlledStaffIdList"),
        "{}",
        notice.text
    );
    assert!(!out.iter().any(|e| e.channel == "batch_send"));
    bot.stop().await;
}

#[tokio::test]
async fn an_unsupported_message_type_is_answered_with_what_is_supported() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let bot = start(config(&mock, dir.path()));
    connected(&mock).await;
    mock.say(MockMessage::single("u7", "").msg_type(MsgType::Video))
        .await;
    let out = wait_outbox(&mock, |o| !o.is_empty()).await;
    assert!(
        out[0].text.starts_with("暂不支持这种消息（视频）"),
        "{}",
        out[0].text
    );
    assert!(
        out[0]
            .text
            .contains(dingtalk_bot::incoming::SUPPORTED_TYPES_ZH)
    );
    mock.say(MockMessage::single("u7", "").msg_type(MsgType::Unknown))
        .await;
    let out = wait_outbox(&mock, |o| o.len() >= 2).await;
    assert!(out[1].text.contains("未知类型"), "{}", out[1].text);
    bot.stop().await;
}

#[tokio::test]
async fn a_short_answer_longer_than_a_part_stays_in_the_conversation_in_parts() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let bot = start(config(&mock, dir.path()));
    connected(&mock).await;
    let text: String = (0..600).map(|i| format!("第{i}行。\n")).collect();
    assert!(text.len() > dingtalk_sender::DEFAULT_PART_BYTES);
    mock.say(MockMessage::single("u8", &text)).await;
    let last = |e: &OutboxEntry| {
        e.text
            .strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .and_then(|(frac, _)| frac.split_once('/'))
            .is_some_and(|(a, b)| a == b)
    };
    let out = wait_outbox(&mock, |o| o.iter().any(last)).await;
    let parts: Vec<String> = out[1..].iter().map(|e| e.text.clone()).collect();
    assert!(parts.len() > 1);
    assert!(
        out.iter().all(|e| e.channel == "session_webhook"),
        "{out:#?}"
    );
    assert_eq!(
        dingtalk_sender::reassemble(&parts),
        format!("处理结果：{}", text.trim())
    );
    bot.stop().await;
}

#[tokio::test]
async fn learnt_durations_survive_a_restart_and_are_quoted() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let c = config(&mock, dir.path());
    let bot = start(c.clone());
    connected(&mock).await;
    mock.say(MockMessage::single("u9", "竞品分析 甲")).await;
    let out = wait_outbox(&mock, |o| o.len() >= 2).await;
    assert!(
        out[0].text.contains("预计需要 2-5 分钟"),
        "nothing learnt yet: {}",
        out[0].text
    );
    bot.stop().await;
    mock.clear_outbox();
    let bot = start(c);
    // The old connection may still look alive to the mock for a moment: say it again until
    // the new bot answers.
    for _ in 0..100 {
        mock.say(MockMessage::single("u9", "竞品分析 乙")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !mock.outbox().is_empty() {
            break;
        }
    }
    let out = wait_outbox(&mock, |o| o.iter().any(|e| e.text.starts_with("收到任务"))).await;
    let ack = out.iter().find(|e| e.text.starts_with("收到任务")).unwrap();
    assert!(
        ack.text.contains("预计需要 1 分钟左右"),
        "the estimate comes from the job finished before the restart: {}",
        ack.text
    );
    bot.stop().await;
}

#[tokio::test]
async fn pictures_and_files_reach_the_command_processor_as_paths() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("files.sh");
    // The prompt, then per file: a picture's magic ("\x89PNG" less its first byte) or the
    // file's content (the mock's files say "mock file NAME").
    std::fs::write(
        &script,
        "echo \"$BOT_PROMPT\"\nprintf '%s\\n' \"$BOT_FILES\" | while IFS= read -r f; do\n  case \"$f\" in *.png) head -c 4 \"$f\" | tail -c 3; echo;; *) cat \"$f\";; esac\ndone\n",
    )
    .unwrap();
    let mut c = config(&mock, dir.path());
    c.processor = ProcessorKind::Command;
    c.processor_command = Some(format!("sh {}", script.display()));
    let bot = start(c);
    connected(&mock).await;
    mock.say(
        MockMessage::single("u10", "看图")
            .msg_type(MsgType::RichText)
            .rich_text_with_pictures(2),
    )
    .await;
    let out = wait_outbox(&mock, |o| o.len() >= 2).await;
    assert_eq!(out[1].text, "看图\nPNG\nPNG", "{out:#?}");
    mock.say(MockMessage::single("u10", "a.pdf").msg_type(MsgType::File))
        .await;
    let out = wait_outbox(&mock, |o| o.len() >= 4).await;
    assert_eq!(out[3].text, "（用户发送了文件：a.pdf）\nmock file a.pdf");
    assert!(
        std::fs::read_dir(dir.path().join("files"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "downloaded files are removed after the job"
    );
    bot.stop().await;
}

#[tokio::test]
async fn a_long_job_without_a_staff_id_is_answered_in_the_conversation() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let bot = start(config(&mock, dir.path()));
    connected(&mock).await;
    mock.say(MockMessage::single("ext1", "分析公司 外部").without_sender_staff_id())
        .await;
    let out = wait_outbox(&mock, |o| o.len() >= 2).await;
    assert!(
        out[0].text.contains("完成后会在本会话中回复您"),
        "{}",
        out[0].text
    );
    assert_eq!(out[1].text, "处理结果：分析公司 外部");
    assert!(
        out.iter().all(|e| e.channel == "session_webhook"),
        "{out:#?}"
    );
    bot.stop().await;
}

#[tokio::test]
async fn a_message_with_null_fields_is_still_answered() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let bot = start(config(&mock, dir.path()));
    connected(&mock).await;
    mock.say(MockMessage::single("u11", "空字段").with_null_fields())
        .await;
    wait_outbox(&mock, |o| o.iter().any(|e| e.text == "处理结果：空字段")).await;
    bot.stop().await;
}

// dingtalk-stream's `RobotMessage` (not this crate) reads `createAt` as a number only and drops
// the message, after its ACK, when DingTalk sends a string (its own docs type it as String).
#[tokio::test]
async fn a_message_with_create_at_as_a_string_is_still_answered() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let bot = start(config(&mock, dir.path()));
    connected(&mock).await;
    mock.say(MockMessage::single("u11", "字符串时间").create_at_as_string())
        .await;
    wait_outbox(&mock, |o| {
        o.iter().any(|e| e.text == "处理结果：字符串时间")
    })
    .await;
    bot.stop().await;
}

#[tokio::test]
async fn a_long_job_shows_its_progress_on_a_card_updated_in_place() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.card_template_id = Some("tpl.progress.schema".into());
    c.echo_delay = Duration::from_millis(300);
    let bot = start(c);
    connected(&mock).await;
    mock.say(MockMessage::single("u12", "战略分析 明年")).await;
    let mut done = None;
    for _ in 0..1000 {
        if let Some(card) = mock
            .cards()
            .into_iter()
            .find(|c| c.card_data.get("status").and_then(|v| v.as_str()) == Some("已完成"))
        {
            done = Some(card);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let card = done.expect("the card reached 已完成");
    assert_eq!(card.template_id, "tpl.progress.schema");
    assert_eq!(card.spaces, ["dtv1.card//IM_ROBOT.u12"]);
    assert_eq!(card.card_data["content"], "处理结果：战略分析 明年");
    assert!(card.updates >= 2, "running, then done: {card:#?}");
    let task = card.card_data["task_id"].as_str().unwrap().to_owned();
    assert_eq!(card.out_track_id, format!("bot-card-{task}"));
    assert!(
        !mock.outbox().iter().any(|e| e.text.starts_with("收到任务")),
        "the card replaces the text reply: {:#?}",
        mock.outbox()
    );
    bot.stop().await;
}

/// The card the bot delivered whose `status` is `status`, waited for.
async fn card_with_status(mock: &DingTalkMock, status: &str) -> dingtalk_mock::CardRecord {
    for _ in 0..1000 {
        if let Some(card) = mock
            .cards()
            .into_iter()
            .find(|c| c.card_data.get("status").and_then(|v| v.as_str()) == Some(status))
        {
            return card;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no card reached {status}: {:#?}", mock.cards());
}

/// The entry without its arrival time, to compare whole entries.
fn without_time(e: &OutboxEntry) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap();
    v.as_object_mut().unwrap().remove("at_ms");
    v
}

/// A robot whose code is not the client id: the mock refuses sends carrying another code.
const GROUP_ROBOT: &str = "dingrobotgroupcode";

#[tokio::test]
async fn a_long_group_result_goes_through_group_send_with_the_body_dingtalk_takes() {
    let mock = tls_mock(MockConfig {
        robot_code: GROUP_ROBOT.into(),
        ..MockConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.robot_code = Some(GROUP_ROBOT.into());
    let bot = start(c);
    connected(&mock).await;
    mock.say(MockMessage::group("u20", "cidGroupPush==", "分析公司 ACME"))
        .await;
    let out = wait_outbox(&mock, |o| o.iter().any(|e| e.channel == "group_send")).await;
    assert_eq!(
        out.len(),
        2,
        "the acknowledgement, then the result: {out:#?}"
    );
    // The acknowledgement mentions the asker in the group.
    let ack = &out[0];
    assert_eq!(ack.channel, "session_webhook");
    assert_eq!(ack.to, ["cidGroupPush=="]);
    assert_eq!(ack.kind, "markdown");
    assert_eq!(ack.at_user_ids, ["u20"]);
    assert!(!ack.is_at_all);
    assert!(
        ack.text
            .starts_with("@u20 收到任务，正在后台处理中...这是一个长时间任务"),
        "{}",
        ack.text
    );
    let id = task_id(&ack.text);
    // The result: groupMessages/send to the conversation, msgKey sampleMarkdown, msgParam
    // {title, text}, robotCode the configured one (the mock refuses any other).
    assert_eq!(
        without_time(&out[1]),
        json!({
            "channel": "group_send",
            "to": ["cidGroupPush=="],
            "kind": "sampleMarkdown",
            "content": {"title": "后台任务完成", "text": "处理结果：分析公司 ACME"},
            "text": "处理结果：分析公司 ACME",
            "at_user_ids": [],
            "is_at_all": false,
        })
    );
    assert!(!out.iter().any(|e| e.channel == "batch_send"), "{out:#?}");
    // The job is stored as delivered.
    mock.say(MockMessage::group(
        "u20",
        "cidGroupPush==",
        &format!("/status {id}"),
    ))
    .await;
    let out = told(&mock, &format!("任务 {id}：已完成")).await;
    assert!(
        out.last()
            .unwrap()
            .text
            .contains("结果：处理结果：分析公司 ACME"),
        "{out:#?}"
    );
    bot.stop().await;
}

#[tokio::test]
async fn a_group_card_is_created_and_delivered_to_the_group_with_the_robot_code() {
    let mock = tls_mock(MockConfig {
        robot_code: GROUP_ROBOT.into(),
        ..MockConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.robot_code = Some(GROUP_ROBOT.into());
    c.card_template_id = Some("tpl.group.schema".into());
    let bot = start(c);
    connected(&mock).await;
    mock.say(MockMessage::group("u21", "cidGroupCard==", "战略分析 明年"))
        .await;
    let card = card_with_status(&mock, "已完成").await;
    let id = card.card_data["task_id"].as_str().unwrap().to_owned();
    assert_eq!(card.out_track_id, format!("bot-card-{id}"));
    assert_eq!(card.template_id, "tpl.group.schema");
    assert_eq!(card.spaces, ["dtv1.card//IM_GROUP.cidGroupCard=="]);
    assert_eq!(card.card_data["content"], "处理结果：战略分析 明年");
    // What the mock received, call by call.
    assert_eq!(card.calls[0].api, "POST /v1.0/card/instances");
    assert_eq!(
        card.calls[0].body,
        json!({
            "cardTemplateId": "tpl.group.schema",
            "outTrackId": card.out_track_id,
            "cardData": {"cardParamMap": {
                "title": "后台任务",
                "status": "排队中",
                "task_id": id,
                "prompt": "战略分析 明年",
                "elapsed": "",
                "estimate": async_tasks::DEFAULT_ESTIMATE_ZH,
                "content": "",
            }},
            "imGroupOpenSpaceModel": {"supportForward": false},
            "imRobotOpenSpaceModel": {"supportForward": false},
        })
    );
    assert_eq!(card.calls[1].api, "POST /v1.0/card/instances/deliver");
    assert_eq!(
        card.calls[1].body,
        json!({
            "outTrackId": card.out_track_id,
            "userIdType": 1,
            "openSpaceId": "dtv1.card//IM_GROUP.cidGroupCard==",
            "imGroupOpenDeliverModel": {"robotCode": GROUP_ROBOT},
        })
    );
    let last = card.calls.last().unwrap();
    assert_eq!(last.api, "PUT /v1.0/card/instances");
    assert_eq!(last.body["outTrackId"], card.out_track_id.as_str());
    assert_eq!(last.body["cardData"]["cardParamMap"]["status"], "已完成");
    // A short answer lives on the card: no text acknowledgement, no group push.
    assert!(mock.outbox().is_empty(), "{:#?}", mock.outbox());
    bot.stop().await;
}

/// The app lacks the card permission: DingTalk's 403 error body.
fn card_permission_denied() -> MockFault {
    MockFault::new(
        403,
        "Forbidden.AccessDenied.AccessTokenPermissionDenied",
        "没有调用该接口的权限",
    )
}

#[tokio::test]
async fn a_refused_card_create_or_deliver_falls_back_to_the_text_reply_and_push() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.card_template_id = Some("tpl.progress.schema".into());
    let bot = start(c);
    connected(&mock).await;
    for (round, (api, user)) in [(Api::CardCreate, "u22"), (Api::CardDeliver, "u23")]
        .into_iter()
        .enumerate()
    {
        mock.clear_outbox();
        mock.fail_next(api, &card_permission_denied(), 1);
        mock.say(MockMessage::single(user, "生成报告 月报")).await;
        let out = wait_outbox(&mock, |o| o.iter().any(|e| e.channel == "batch_send")).await;
        assert_eq!(out.len(), 2, "{api:?}: {out:#?}");
        assert_eq!(out[0].channel, "session_webhook", "{api:?}");
        assert!(
            out[0].text.starts_with("收到任务，正在后台处理中..."),
            "{api:?}: the text acknowledgement replaces the card: {}",
            out[0].text
        );
        let id = task_id(&out[0].text);
        assert_eq!(out[1].to, [user], "{api:?}");
        assert_eq!(out[1].text, "处理结果：生成报告 月报", "{api:?}");
        let cards = mock.cards();
        match api {
            // Refused: nothing was created.
            Api::CardCreate => assert!(cards.is_empty(), "{cards:#?}"),
            // Created, never delivered, and left alone afterwards.
            _ => {
                assert_eq!(cards.len(), round, "{cards:#?}");
                let card = mock.card(&format!("bot-card-{id}")).unwrap();
                assert!(card.spaces.is_empty(), "{card:#?}");
                assert_eq!(card.updates, 0, "{card:#?}");
            }
        }
    }
    bot.stop().await;
}

#[tokio::test]
async fn a_card_that_cannot_be_updated_still_gets_its_result_pushed() {
    let mock = tls_mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.card_template_id = Some("tpl.progress.schema".into());
    c.echo_delay = Duration::from_millis(100);
    let bot = start(c);
    connected(&mock).await;
    // Every update is refused: running, and done.
    mock.fail_next(Api::CardUpdate, &card_permission_denied(), 100);
    mock.say(MockMessage::single("u24", "竞品分析 乙方")).await;
    let out = wait_outbox(&mock, |o| o.iter().any(|e| e.channel == "batch_send")).await;
    assert_eq!(
        out.len(),
        1,
        "no text acknowledgement: the card had it: {out:#?}"
    );
    assert_eq!(out[0].to, ["u24"]);
    assert_eq!(out[0].kind, "sampleMarkdown");
    assert_eq!(out[0].content["title"], "后台任务完成");
    assert_eq!(out[0].text, "处理结果：竞品分析 乙方");
    let cards = mock.cards();
    assert_eq!(cards.len(), 1, "{cards:#?}");
    let card = &cards[0];
    assert_eq!(card.spaces, ["dtv1.card//IM_ROBOT.u24"]);
    assert_eq!(card.updates, 0, "every update was refused: {card:#?}");
    assert_eq!(card.card_data["status"], "排队中");
    // The job is stored as completed, not failed or lost.
    let id = card.card_data["task_id"].as_str().unwrap().to_owned();
    mock.say(MockMessage::single("u24", &format!("/status {id}")))
        .await;
    let out = told(&mock, &format!("任务 {id}：已完成")).await;
    assert!(
        out.last()
            .unwrap()
            .text
            .contains("结果：处理结果：竞品分析 乙方"),
        "{out:#?}"
    );
    bot.stop().await;
}

/// A proxy for plain-HTTP targets and CONNECT tunnels; records each connection's first line.
async fn recording_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = lines.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let line = text.lines().next().unwrap_or_default().to_owned();
                seen.lock().unwrap().push(line.clone());
                let mut parts = line.split(' ');
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let authority = if method == "CONNECT" {
                    target.to_owned()
                } else {
                    let rest = target.strip_prefix("http://").unwrap_or(target);
                    rest.split('/').next().unwrap_or("").to_owned()
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(authority.as_str()).await
                else {
                    return;
                };
                if method == "CONNECT" {
                    let _ = client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                } else {
                    let _ = upstream.write_all(&head).await;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (url, lines)
}

#[tokio::test]
async fn every_call_of_the_bot_goes_out_through_its_egress_proxy() {
    let (proxy, lines) = recording_proxy().await;
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The credentials live in a file, as a secret would.
    let proxy_file = dir.path().join("proxy-url");
    std::fs::write(&proxy_file, format!("{proxy}\n")).unwrap();
    let bot = start(Config {
        egress_proxy_file: Some(proxy_file),
        ..config(&mock, dir.path())
    });
    connected(&mock).await;
    mock.say(MockMessage::single("u1", "你好")).await;
    let out = wait_outbox(&mock, |o| o.len() >= 2).await;
    assert_eq!(out[1].text, "处理结果：你好");
    bot.stop().await;
    let lines = lines.lock().unwrap().clone();
    let base = mock.base_url();
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    // The gateway registration, the WebSocket (a CONNECT tunnel) and the session-webhook reply.
    assert!(
        lines.contains(
            &format!("POST {base}/v1.0/gateway/connections/open HTTP/1.1").replace("//v1", "/v1")
        ),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!("CONNECT {host} HTTP/1.1")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(
            |l| l.starts_with(&format!("POST {}", base.trim_end_matches('/')))
                && !l.contains("gateway")
        ),
        "the reply went direct: {lines:#?}"
    );
}
