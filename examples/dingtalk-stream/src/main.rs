//! Run with: cargo run -p example-dingtalk-stream
//!
//! Connects the Stream client to dingtalk-mock in TLS mode (https gateway, wss socket, as the
//! cloud; the mock's throwaway CA trusted as an extra root), says three messages as users (one twice, as a
//! redelivery), asks the gateway to move the connection, says one more, and prints what the
//! client handed over and what it did.

use std::time::Duration;

use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage};
use dingtalk_stream::{StreamClient, StreamConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = DingTalkMock::start_tls(MockConfig::default()).await?;
    println!("mock DingTalk at {} (TLS only)", mock.base_url());
    let config = StreamConfig::new(
        mock.config().client_id.clone(),
        mock.config().client_secret.clone(),
    )
    .api_base(mock.base_url())
    .add_root_certificates_pem(mock.ca_pem().ok_or("the TLS mock has a CA")?);
    let (handle, mut messages) = StreamClient::new(config)?.start();
    while mock.connections() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut dup = MockMessage::single("user1", "你好");
    dup.msg_id = Some("msgSame==".into());
    mock.say(dup.clone()).await;
    mock.say(dup).await; // a redelivery: same msgId, new messageId
    mock.say(MockMessage::group("user2", "cidTeam==", "分析公司 ACME"))
        .await;
    mock.disconnect_all();
    tokio::time::sleep(Duration::from_millis(200)).await;
    mock.say(MockMessage::single("user3", "/status")).await;
    // Four messages were said, one twice: the duplicate is dropped by msgId.
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.recv())
            .await?
            .ok_or("stream closed")?;
        println!(
            "{} ({}) in {} chat: {:?}",
            m.message.sender_nick,
            m.message.sender_staff_id.as_deref().unwrap_or("?"),
            if m.message.is_group() {
                "a group"
            } else {
                "a single"
            },
            m.message.extract_text()
        );
    }
    println!("client: {:?}", handle.stats());
    handle.shutdown().await;
    Ok(())
}
