//! The Stream client against dingtalk-mock over real sockets.

use std::time::Duration;

use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage};
use dingtalk_stream::{StreamClient, StreamConfig};

fn config(mock: &DingTalkMock) -> StreamConfig {
    StreamConfig::new(
        mock.config().client_id.clone(),
        mock.config().client_secret.clone(),
    )
    .api_base(mock.base_url())
    .backoff(Duration::from_millis(50), Duration::from_millis(400))
    .idle_timeout(Duration::from_millis(800))
}

async fn wait_connected(mock: &DingTalkMock, n: usize) {
    for _ in 0..400 {
        if mock.connections() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never connected");
}

async fn say_until_delivered(mock: &DingTalkMock, m: MockMessage) -> String {
    for _ in 0..400 {
        let said = mock.say(m.clone()).await;
        if said.delivered {
            return said.msg_id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no live connection to deliver to");
}

#[tokio::test]
async fn receives_acks_first_and_drops_duplicates() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let (handle, mut rx) = StreamClient::new(config(&mock)).unwrap().start();
    wait_connected(&mock, 1).await;
    let mut m = MockMessage::single("u1", "分析公司 ACME");
    m.msg_id = Some("msgDUP==".into());
    say_until_delivered(&mock, m.clone()).await;
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message.extract_text().as_deref(), Some("分析公司 ACME"));
    assert_eq!(got.message.sender_staff_id.as_deref(), Some("u1"));
    // The same msgId again (a redelivery with a new messageId) is ACKed but not handed over.
    say_until_delivered(&mock, m).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "duplicate delivered"
    );
    let acks = mock.acks();
    assert_eq!(acks.len(), 2, "both deliveries ACKed: {acks:?}");
    assert!(acks.iter().all(|a| a["code"] == 200));
    // The mock timed both ACKs on the socket (what `bench-bot` reports as ACK latency).
    assert_eq!(mock.ack_latencies().len(), 2);
    assert_eq!(handle.stats().duplicates_dropped, 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn answers_pings_with_their_data() {
    let mock = DingTalkMock::start(MockConfig {
        ping_interval: Some(Duration::from_millis(200)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (handle, _rx) = StreamClient::new(config(&mock)).unwrap().start();
    wait_connected(&mock, 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let acks = mock.acks();
    assert!(!acks.is_empty());
    let data: serde_json::Value = serde_json::from_str(acks[0]["data"].as_str().unwrap()).unwrap();
    assert!(data["opaque"].is_string(), "ping data echoed: {acks:?}");
    assert!(handle.stats().pings_answered >= 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn disconnect_opens_a_new_connection_before_dropping_the_old_and_loses_nothing() {
    let mock = DingTalkMock::start(MockConfig {
        disconnect_grace: Duration::from_secs(2),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (handle, mut rx) = StreamClient::new(config(&mock)).unwrap().start();
    wait_connected(&mock, 1).await;
    mock.disconnect_all();
    // Make before break: the new connection is up before the old one is closed (the old one
    // would stay open for the 2 s grace otherwise), so the client is never without one.
    for _ in 0..300 {
        if handle.stats().connections_opened >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handle.stats().connections_opened, 2);
    assert_eq!(
        handle.stats().reconnects,
        0,
        "a planned switch, not a reconnect after failure"
    );
    say_until_delivered(&mock, MockMessage::single("u1", "after disconnect")).await;
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got.message.extract_text().as_deref(),
        Some("after disconnect")
    );
    assert_eq!(handle.stats().disconnects_handled, 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_dropped_socket_reconnects() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let (handle, mut rx) = StreamClient::new(config(&mock)).unwrap().start();
    wait_connected(&mock, 1).await;
    mock.drop_connections();
    tokio::time::sleep(Duration::from_millis(50)).await;
    say_until_delivered(&mock, MockMessage::single("u1", "after drop")).await;
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message.extract_text().as_deref(), Some("after drop"));
    assert!(handle.stats().reconnects >= 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_zombie_connection_is_detected_and_replaced() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let (handle, mut rx) = StreamClient::new(config(&mock)).unwrap().start();
    wait_connected(&mock, 1).await;
    mock.zombify_connections();
    // The watchdog (800 ms) notices the silence and reconnects.
    for _ in 0..300 {
        if handle.stats().watchdog_reconnects >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        handle.stats().watchdog_reconnects >= 1,
        "{:?}",
        handle.stats()
    );
    say_until_delivered(&mock, MockMessage::single("u1", "after zombie")).await;
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message.extract_text().as_deref(), Some("after zombie"));
    handle.shutdown().await;
}

#[tokio::test]
async fn refused_registration_is_retried_with_backoff() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    mock.reject_open(Some(503));
    let (handle, _rx) = StreamClient::new(config(&mock)).unwrap().start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.connections(), 0);
    mock.reject_open(None);
    wait_connected(&mock, 1).await;
    handle.shutdown().await;
}

#[tokio::test]
async fn http_mode_rejects_a_bad_signature_and_accepts_a_good_one() {
    let mock_secret = MockConfig::default().client_secret;
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let app = axum::Router::new().nest(
        "/dingtalk",
        dingtalk_stream::callback_router(&mock_secret, tx),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/dingtalk", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mock = DingTalkMock::start(MockConfig {
        http_callback_url: Some(url.clone()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let said = mock.say(MockMessage::single("u9", "你好")).await;
    assert!(said.delivered);
    let got = rx.recv().await.unwrap();
    assert_eq!(got.message.extract_text().as_deref(), Some("你好"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = reqwest::Client::new()
        .post(&url)
        .header("timestamp", "1577262236757")
        .header("sign", "forged")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn loose_payloads_from_the_cloud_still_arrive() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let (handle, mut rx) = StreamClient::new(config(&mock)).unwrap().start();
    wait_connected(&mock, 1).await;
    let m = MockMessage::group("ext", "cidG==", "外部用户的消息")
        .without_sender_staff_id()
        .create_at_as_string()
        .with_null_fields()
        .mention("u7")
        .rich_text_with_pictures(1);
    say_until_delivered(&mock, m).await;
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a message within the bound")
        .unwrap();
    assert_eq!(got.message.sender_staff_id, None);
    assert!(got.message.create_at > 0, "createAt parsed from its string");
    assert_eq!(got.message.sender_corp_id, None);
    assert_eq!(
        got.message.extract_text().as_deref(),
        Some("外部用户的消息")
    );
    handle.shutdown().await;
}
