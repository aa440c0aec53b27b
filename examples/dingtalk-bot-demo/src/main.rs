//! Run with: cargo run -p example-dingtalk-bot-demo
//!
//! Starts dingtalk-mock and the bot (echo processor that "thinks" for 2 s) on a temp data dir,
//! says a short and a long message as a user, and prints the conversation as the user sees it:
//! immediate acknowledgements in the chat, the short answer in the chat, the long result pushed.
//! Everything goes over https and wss, as with real DingTalk: the mock makes a throwaway CA and
//! the bot trusts it through `ca_file` (for a separate bot process, `SSL_CERT_FILE`).

use std::time::Duration;

use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = DingTalkMock::start_tls(MockConfig::default()).await?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("mock-ca.pem");
    std::fs::write(&ca_file, mock.ca_pem().unwrap_or_default())?;
    println!("DingTalk (mock) at {}", mock.base_url());
    let config = dingtalk_bot::Config {
        ca_file: Some(ca_file),
        client_id: mock.config().client_id.clone(),
        client_secret: mock.config().client_secret.clone(),
        api_base: mock.base_url(),
        oapi_base: mock.base_url(),
        data_dir: dir.path().to_path_buf(),
        echo_delay: Duration::from_secs(2),
        ..dingtalk_bot::Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let bot = tokio::spawn(dingtalk_bot::run(config, async move {
        let _ = stopped.await;
    }));
    while mock.connections() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("用户 > 今天有什么新舆情？");
    mock.say(MockMessage::single("manager1234", "今天有什么新舆情？"))
        .await;
    println!("用户 > 分析公司 ACME 的竞品动态");
    mock.say(MockMessage::single(
        "manager1234",
        "分析公司 ACME 的竞品动态",
    ))
    .await;
    let mut shown = 0;
    for _ in 0..100 {
        let out = mock.outbox();
        for e in &out[shown..] {
            let how = match e.channel.as_str() {
                "session_webhook" => "会话内回复",
                "batch_send" => "主动推送(单聊)",
                "group_send" => "主动推送(群聊)",
                other => other,
            };
            println!("机器人 [{how}] > {}", e.text.replace('\n', " "));
        }
        shown = out.len();
        if shown >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    bot.await??;
    Ok(())
}
