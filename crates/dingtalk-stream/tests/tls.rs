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

/// A CONNECT-only proxy on loopback; records each request line.
async fn connect_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://ops:pw@{}", listener.local_addr().unwrap());
    let asked: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let seen = asked.clone();
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
                let authorized = text.contains("Proxy-Authorization: Basic b3BzOnB3"); // ops:pw
                seen.lock()
                    .unwrap()
                    .push(format!("{line} auth={authorized}"));
                let target = line.split(' ').nth(1).unwrap_or_default().to_owned();
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target.as_str()).await else {
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (url, asked)
}

/// Starts `client`, has the mock say `text` once the socket is up, and checks it arrives;
/// the client's handle, for shutting it down.
async fn receives_through(
    mock: &DingTalkMock,
    client: StreamClient,
    text: &str,
    what: &str,
) -> dingtalk_stream::StreamHandle {
    let (handle, mut rx) = client.start();
    let mut delivered = false;
    for _ in 0..500 {
        if mock.say(MockMessage::single("u1", text)).await.delivered {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(delivered, "never connected through the {what}");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message.extract_text().as_deref(), Some(text));
    handle
}

#[tokio::test]
async fn the_wss_socket_goes_through_an_http_proxy_by_connect() {
    let mock = DingTalkMock::start_tls(MockConfig::default())
        .await
        .unwrap();
    let (proxy, asked) = connect_proxy().await;
    let ca = mock.ca_pem().expect("a generated CA").to_owned();
    let client = StreamClient::new(
        config(&mock)
            .add_root_certificates_pem(ca)
            .proxy(dingtalk_stream::EgressProxy::all(&proxy).unwrap()),
    )
    .unwrap();
    let handle = receives_through(&mock, client, "经代理", "proxy").await;
    let port = mock.base_url().rsplit(':').next().unwrap().to_owned();
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .any(|l| l.starts_with("CONNECT 127.0.0.1:") && l.ends_with("auth=true")),
        "{asked:?} (mock on {port})"
    );
    handle.shutdown().await;
}

/// A SOCKS5 proxy (RFC 1928) that requires a user name and password (RFC 1929); records
/// `user:password target` per connection.
async fn socks5_proxy() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 2];
                c.read_exact(&mut b).await.ok()?;
                let mut methods = vec![0u8; b[1] as usize];
                c.read_exact(&mut methods).await.ok()?;
                if !methods.contains(&2) {
                    c.write_all(&[5, 0xff]).await.ok()?;
                    return None;
                }
                c.write_all(&[5, 2]).await.ok()?;
                let field = async |c: &mut tokio::net::TcpStream| {
                    let mut n = [0u8; 1];
                    c.read_exact(&mut n).await.ok()?;
                    let mut v = vec![0u8; n[0] as usize];
                    c.read_exact(&mut v).await.ok()?;
                    Some(String::from_utf8_lossy(&v).into_owned())
                };
                let mut ver = [0u8; 1];
                c.read_exact(&mut ver).await.ok()?;
                let user = field(&mut c).await?;
                let password = field(&mut c).await?;
                c.write_all(&[1, 0]).await.ok()?;
                let mut req = [0u8; 4];
                c.read_exact(&mut req).await.ok()?;
                let host = match req[3] {
                    1 => {
                        let mut ip = [0u8; 4];
                        c.read_exact(&mut ip).await.ok()?;
                        std::net::Ipv4Addr::from(ip).to_string()
                    }
                    3 => field(&mut c).await?,
                    _ => return None,
                };
                let mut p = [0u8; 2];
                c.read_exact(&mut p).await.ok()?;
                let target = format!("{host}:{}", u16::from_be_bytes(p));
                seen.lock()
                    .unwrap()
                    .push(format!("{user}:{password} {target}"));
                let mut up = tokio::net::TcpStream::connect(target.as_str()).await.ok()?;
                c.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.ok()?;
                let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
                Some(())
            });
        }
    });
    (port, asked)
}

#[tokio::test]
async fn the_wss_socket_goes_through_a_socks5_proxy_with_a_password() {
    let mock = DingTalkMock::start_tls(MockConfig::default())
        .await
        .unwrap();
    let (port, asked) = socks5_proxy().await;
    let ca = mock.ca_pem().expect("a generated CA").to_owned();
    let proxy = format!("socks5h://ops:p%40ss@127.0.0.1:{port}");
    let client = StreamClient::new(
        config(&mock)
            .add_root_certificates_pem(ca)
            .proxy(dingtalk_stream::EgressProxy::all(&proxy).unwrap()),
    )
    .unwrap();
    let handle = receives_through(&mock, client, "经SOCKS", "SOCKS5 proxy").await;
    let asked = asked.lock().unwrap().clone();
    // The WebSocket's tunnel, with the password as typed (percent-decoded).
    assert!(
        asked.iter().any(|l| l.starts_with("ops:p@ss 127.0.0.1:")),
        "{asked:?}"
    );
    handle.shutdown().await;
}
