//! Deliveries through an egress proxy: a local proxy (HTTP forward and CONNECT) that records
//! what it was asked for, and the SSRF guard checking the target, not the proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use webhook_client::{EgressProxy, Outcome, TransportErrorKind, WebhookClient, WebhookRequest};

/// What the proxy was asked for: `"CONNECT host:port"` or `"POST http://..."`.
type Asked = Arc<Mutex<Vec<String>>>;

/// A forward proxy on loopback: CONNECT tunnels, absolute-form requests are passed on; 502
/// when the upstream cannot be reached.
async fn proxy() -> (String, Asked) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked: Asked = Arc::default();
    let seen = asked.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
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
                let mut line = text.lines().next().unwrap_or_default().split(' ');
                let (method, target) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                seen.lock().unwrap().push(format!("{method} {target}"));
                let authority = if method == "CONNECT" {
                    target.to_owned()
                } else {
                    let rest = target.split_once("://").map_or(target, |(_, r)| r);
                    let host = rest.split('/').next().unwrap_or(rest);
                    if host.contains(':') {
                        host.to_owned()
                    } else {
                        format!("{host}:80")
                    }
                };
                let Ok(mut upstream) = TcpStream::connect(authority.as_str()).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
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
    (url, asked)
}

/// A receiver on loopback counting deliveries.
async fn receiver() -> (SocketAddr, Arc<Mutex<u32>>) {
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    let app = Router::new().route(
        "/hook",
        post(move || {
            let c = c.clone();
            async move {
                *c.lock().unwrap() += 1;
                StatusCode::OK
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, count)
}

async fn send(client: &WebhookClient, url: &str) -> webhook_client::AttemptReport {
    client
        .send_webhook(&WebhookRequest {
            url,
            msg_id: "wf_1_deadbeef",
            body: Bytes::from_static(b"{\"ok\":true}"),
            secrets: &[],
            headers: &[],
        })
        .await
}

#[tokio::test]
async fn deliveries_go_through_the_proxy_and_no_proxy_hosts_go_direct() {
    let (proxy_url, asked) = proxy().await;
    let (addr, delivered) = receiver().await;
    let client = WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse().unwrap()])
        .timeout(Duration::from_secs(5))
        .proxy(EgressProxy::all(&proxy_url).unwrap())
        .build()
        .unwrap();
    let url = format!("http://{addr}/hook");
    let report = send(&client, &url).await;
    assert_eq!(report.status, Some(200), "{:?}", report.error);
    assert_eq!(*delivered.lock().unwrap(), 1);
    assert_eq!(*asked.lock().unwrap(), [format!("POST {url}")]);

    // An https target is tunnelled with CONNECT (the receiver speaks no TLS, so the attempt
    // then fails; what matters is what the proxy was asked).
    let report = send(&client, &format!("https://{addr}/hook")).await;
    assert!(report.error.is_some());
    assert_eq!(asked.lock().unwrap()[1], format!("CONNECT {addr}"));

    // NO_PROXY hosts are reached directly.
    let direct = WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse().unwrap()])
        .proxy(EgressProxy::all(&proxy_url).unwrap().no_proxy("127.0.0.1"))
        .build()
        .unwrap();
    assert_eq!(send(&direct, &url).await.status, Some(200));
    assert_eq!(*delivered.lock().unwrap(), 2);
    assert_eq!(asked.lock().unwrap().len(), 2, "the proxy was not asked");
}

#[tokio::test]
async fn the_guard_checks_the_target_before_the_proxy_and_trusts_the_proxy_itself() {
    // The proxy is on loopback, which the guard refuses for targets: it must still be usable.
    let (proxy_url, asked) = proxy().await;
    let client = WebhookClient::builder()
        .timeout(Duration::from_secs(5))
        .proxy(EgressProxy::all(&proxy_url).unwrap())
        // Names that resolve to a private and to a public address, without real DNS.
        .resolve("intranet.test", "10.0.0.5:80".parse().unwrap())
        .resolve("public.test", "93.184.216.34:80".parse().unwrap())
        .build()
        .unwrap();
    for target in [
        "http://intranet.test/hook",
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
    ] {
        let report = send(&client, target).await;
        assert!(!report.sent, "{target}");
        assert_eq!(report.outcome, Outcome::Permanent, "{target}");
        let kind = match &report.error {
            Some(webhook_client::Error::Transport { kind, .. }) => *kind,
            other => panic!("{target}: {other:?}"),
        };
        assert_eq!(kind, TransportErrorKind::Blocked, "{target}");
    }
    assert!(
        asked.lock().unwrap().is_empty(),
        "refused targets never reach the proxy"
    );

    // A public target goes to the proxy (which cannot reach it from here and answers 502).
    let report = send(&client, "http://public.test/hook").await;
    assert!(report.sent);
    assert_eq!(report.status, Some(502));
    assert_eq!(*asked.lock().unwrap(), ["POST http://public.test/hook"]);

    // A name that does not resolve here is not handed to the proxy either.
    let report = send(&client, "http://no-such-host.invalid/hook").await;
    assert!(!report.sent);
    assert_eq!(asked.lock().unwrap().len(), 1);
}
