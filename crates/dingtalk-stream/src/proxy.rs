//! The WebSocket through an HTTP proxy: a CONNECT tunnel, then TLS and the WebSocket
//! handshake inside it. tokio-tungstenite opens its own TCP connection and knows no proxy,
//! so the tunnel is opened here (a few lines of HTTP/1.1; no crate does only this).

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use url::Url;

use crate::Error;

/// Longest CONNECT answer head read.
const MAX_HEAD: usize = 8 * 1024;

/// A TCP stream to `target`'s host and port through the `http://` proxy `proxy`.
pub(crate) async fn connect_tunnel(proxy: &Url, target: &Url) -> Result<TcpStream, Error> {
    let shown = webhook_client::redact_proxy_url(proxy);
    if proxy.scheme() != "http" {
        return Err(Error::WebSocket(format!(
            "the Stream WebSocket goes through http:// proxies only, not {shown}"
        )));
    }
    let (Some(proxy_host), Some(host), Some(port)) = (
        proxy.host_str(),
        target.host_str(),
        target.port_or_known_default(),
    ) else {
        return Err(Error::WebSocket(format!("proxy {shown}: no host")));
    };
    let mut tcp = TcpStream::connect((proxy_host, proxy.port_or_known_default().unwrap_or(80)))
        .await
        .map_err(|e| Error::WebSocket(format!("proxy {shown}: {e}")))?;
    tcp.set_nodelay(true)
        .map_err(|e| Error::WebSocket(format!("proxy {shown}: {e}")))?;
    let authority = format!("{host}:{port}");
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if !proxy.username().is_empty() {
        let credentials = format!("{}:{}", proxy.username(), proxy.password().unwrap_or(""));
        request.push_str(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| Error::WebSocket(format!("proxy {shown}: {e}")))?;
    // Byte by byte up to the blank line: nothing after it may be consumed, it is the tunnel's.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tcp
            .read(&mut byte)
            .await
            .map_err(|e| Error::WebSocket(format!("proxy {shown}: {e}")))?;
        if n == 0 || head.len() >= MAX_HEAD {
            return Err(Error::WebSocket(format!(
                "proxy {shown} closed or sent an overlong answer to CONNECT"
            )));
        }
        head.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let ok = status_line
        .split(' ')
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    if ok {
        Ok(tcp)
    } else {
        Err(Error::WebSocket(format!(
            "proxy {shown} refused CONNECT {authority}: {status_line}"
        )))
    }
}
