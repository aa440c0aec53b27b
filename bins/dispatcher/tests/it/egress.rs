//! The real binary delivering through an egress proxy given by flag, with the proxy's
//! password kept out of its logs. (The proxy rules themselves, CONNECT, NO_PROXY and the SSRF
//! guard before the proxy, are webhook-client's tests.)

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::{
    KEY, SECRET, command, create_task, free_port, http, receiver, terminate, wait_healthy,
};

/// A forward proxy for plain-http targets; records each request line.
pub(crate) async fn forward_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
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
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push(line.clone());
                // "POST http://127.0.0.1:PORT/hook HTTP/1.1": connect to that authority.
                let authority = line
                    .split(' ')
                    .nth(1)
                    .and_then(|u| u.strip_prefix("http://"))
                    .and_then(|r| r.split('/').next())
                    .unwrap_or("")
                    .to_owned();
                if let Ok(mut upstream) = TcpStream::connect(authority.as_str()).await {
                    let _ = upstream.write_all(&head).await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (port, asked)
}

#[tokio::test]
async fn deliveries_go_out_through_the_egress_proxy_and_its_password_is_never_logged() {
    let (proxy_port, asked) = forward_proxy().await;
    let (hook, seen) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = command(dir.path(), port)
        .args(["--api-keys", KEY, "--signing-secret", SECRET])
        .args([
            "--egress-proxy",
            &format!("http://ops:hunter2@127.0.0.1:{proxy_port}"),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = http();
    wait_healthy(&http, &base).await;
    let id = create_task(&http, &base, &hook).await;
    for _ in 0..200 {
        if seen.lock().unwrap().contains_key(&id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.lock().unwrap().get(&id), Some(&1), "delivered once");
    assert_eq!(
        *asked.lock().unwrap(),
        [format!("POST {hook} HTTP/1.1")],
        "through the proxy"
    );

    terminate(&child);
    let out = child.wait_with_output().unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logs.contains("egress proxy"), "{logs}");
    assert!(logs.contains("ops:***@127.0.0.1"), "{logs}");
    assert!(!logs.contains("hunter2"), "{logs}");
    assert!(out.status.success());
}
