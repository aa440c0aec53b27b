//! Run with: cargo run -p example-dingtalk-sender
//!
//! Starts dingtalk-mock in-process, replies through a session webhook, pushes text to a user
//! and markdown to several (one of them unknown to DingTalk), a long markdown report to a group
//! (split into numbered parts), shows the typed error of an expired session webhook, and prints
//! the mock's outbox. No credentials needed: the mock's own are used.

use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage};
use dingtalk_sender::{DingTalkSender, Message, Target};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = DingTalkMock::start(MockConfig {
        invalid_users: ["ghost".to_owned()].into(),
        ..MockConfig::default()
    })
    .await?;
    let sender = DingTalkSender::builder()
        .client_id(mock.config().client_id.clone())
        .client_secret(mock.config().client_secret.clone())
        .api_base(mock.base_url())
        .oapi_base(mock.base_url())
        .build()?;

    let said = mock
        .say(MockMessage::group("manager1234", "cidDemo==", "生成报告"))
        .await;
    sender
        .reply_session(
            &said.session_webhook,
            &Message::text("收到任务，正在后台处理中..."),
            &["manager1234"],
        )
        .await?;
    sender
        .send_text_message("", "manager1234", "单聊推送：报告已生成")
        .await?;
    let report = sender
        .send_to_users(
            &["manager1234", "analyst42", "ghost"],
            &Message::markdown("日报", "### 今日舆情\n- 无新增风险"),
        )
        .await?;
    println!(
        "one-to-one: delivered to {:?}, invalid {:?}",
        report.delivered, report.invalid_users
    );
    let report: String = (1..=400)
        .map(|i| format!("{i}. 竞品动态与舆情要点，建议持续关注。\n"))
        .collect();
    let parts = sender
        .send_long_markdown(&Target::Group("cidDemo==".into()), "分析报告", &report)
        .await?;
    println!("long report sent as {parts} parts");
    mock.expire_sessions();
    match sender
        .reply_session::<&str>(&said.session_webhook, &Message::text("too late"), &[])
        .await
    {
        Err(e) if e.is_session_expired() => println!(
            "expired session webhook -> {e}; the bot would push through the OpenAPI instead"
        ),
        other => println!("unexpected: {other:?}"),
    }
    println!("\noutbox (what users see):");
    for e in mock.outbox() {
        let preview: String = e
            .text
            .chars()
            .take(32)
            .map(|c| if c == '\n' { '⏎' } else { c })
            .collect();
        println!(
            "  {:<16} {:<14} {:>5} B  {:?} {preview}",
            e.channel,
            e.kind,
            e.text.len(),
            e.to
        );
    }
    Ok(())
}
