//! TLS mode: https for the OpenAPI and session webhooks, wss for the Stream socket, a
//! throwaway CA for clients.

use std::time::Duration;

use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage, MockTls};
use futures::StreamExt;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};

fn provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn trusting(mock: &DingTalkMock) -> reqwest::Client {
    provider();
    let ca = reqwest::Certificate::from_pem(mock.ca_pem().unwrap().as_bytes()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

#[tokio::test]
async fn serves_https_and_hands_out_wss_endpoints() {
    let mock = DingTalkMock::start_tls(MockConfig::default())
        .await
        .unwrap();
    assert!(mock.is_tls());
    assert!(mock.base_url().starts_with("https://127.0.0.1:"));
    assert!(mock.ca_pem().unwrap().contains("BEGIN CERTIFICATE"));
    let http = trusting(&mock);
    let cfg = mock.config();
    let open: Value = http
        .post(format!("{}/v1.0/gateway/connections/open", mock.base_url()))
        .json(&json!({
            "clientId": cfg.client_id, "clientSecret": cfg.client_secret,
            "subscriptions": [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = open["endpoint"].as_str().unwrap();
    let port = mock.addr().port();
    assert_eq!(endpoint, format!("wss://127.0.0.1:{port}/connect"));

    // The socket over TLS, with the CA trusted.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(mock.ca_pem().unwrap().as_bytes())
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("{endpoint}?ticket={}", open["ticket"].as_str().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        true,
        Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
            tls,
        ))),
    )
    .await
    .unwrap();
    let said = mock.say(MockMessage::single("u1", "hi")).await;
    assert!(said.delivered);
    assert!(said.session_webhook.starts_with("https://127.0.0.1:"));
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(frame.to_text().unwrap().contains("CALLBACK"));

    // The session webhook answers over https too.
    let reply: Value = http
        .post(&said.session_webhook)
        .json(&json!({"msgtype": "text", "text": {"content": "ok"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["errcode"], 0);
    mock.shutdown().await;
}

#[tokio::test]
async fn a_client_without_the_ca_is_refused() {
    let mock = DingTalkMock::start_tls(MockConfig::default())
        .await
        .unwrap();
    provider();
    let err = reqwest::Client::new()
        .post(format!("{}/v1.0/oauth2/accessToken", mock.base_url()))
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn serves_a_certificate_given_as_pem() {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let mock = DingTalkMock::start(MockConfig {
        tls: Some(MockTls::Pem {
            cert_chain_pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
            ca_pem: Some(cert.pem()),
        }),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(mock.ca_pem(), Some(cert.pem().as_str()));
    let status = trusting(&mock)
        .get(format!("{}/_mock/config", mock.base_url()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    // A bad PEM is refused at start.
    let bad = DingTalkMock::start(MockConfig {
        tls: Some(MockTls::Pem {
            cert_chain_pem: "nope".into(),
            key_pem: "nope".into(),
            ca_pem: None,
        }),
        ..MockConfig::default()
    })
    .await;
    assert!(matches!(bad, Err(dingtalk_mock::Error::Tls(_))), "{bad:?}");
}

#[tokio::test]
async fn plain_mode_stays_plain() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    assert!(!mock.is_tls());
    assert!(mock.ca_pem().is_none());
    assert!(mock.base_url().starts_with("http://"));
}
