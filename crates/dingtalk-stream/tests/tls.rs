//! The Stream client against dingtalk-mock in TLS mode: `https://` gateway, `wss://` socket.

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
}

#[tokio::test]
async fn connects_over_wss_when_the_mock_ca_is_trusted() {
    let mock = DingTalkMock::start_tls(MockConfig::default())
        .await
        .unwrap();
    assert!(mock.base_url().starts_with("https://127.0.0.1:"));
    let ca = mock.ca_pem().expect("a generated CA").to_owned();
    let client = StreamClient::new(config(&mock).add_root_certificates_pem(ca)).unwrap();
    let url = client.open_ticket().await.unwrap();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");

    let (handle, mut rx) = client.start();
    let mut delivered = false;
    for _ in 0..500 {
        if mock
            .say(MockMessage::single("u1", "你好 TLS"))
            .await
            .delivered
        {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(delivered, "never connected over wss");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a message within the bound")
        .unwrap();
    assert_eq!(got.message.extract_text().as_deref(), Some("你好 TLS"));
    // The ACK came back over the same TLS socket.
    for _ in 0..500 {
        if !mock.acks().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.acks()[0]["code"], 200);
    assert!(handle.stats().connections_opened >= 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn refuses_a_mock_whose_ca_it_does_not_trust() {
    let mock = DingTalkMock::start_tls(MockConfig::default())
        .await
        .unwrap();
    // Another throwaway CA: a well-formed root, just not the one that signed this mock.
    let other = DingTalkMock::start_tls(MockConfig::default())
        .await
        .unwrap();
    for client in [
        StreamClient::new(config(&mock)).unwrap(),
        StreamClient::new(config(&mock).add_root_certificates_pem(other.ca_pem().unwrap()))
            .unwrap(),
    ] {
        let err = client.open_ticket().await.unwrap_err();
        assert!(matches!(err, dingtalk_stream::Error::Http(_)), "{err:?}");
        let (handle, _rx) = client.start();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(mock.connections(), 0);
        assert_eq!(handle.stats().connections_opened, 0);
        handle.shutdown().await;
    }
}

#[test]
fn a_pem_without_a_certificate_is_a_config_error() {
    let err = StreamClient::new(
        StreamConfig::new("id", "secret").add_root_certificates_pem("not a certificate"),
    )
    .unwrap_err();
    assert!(matches!(err, dingtalk_stream::Error::Config(_)), "{err:?}");
}
