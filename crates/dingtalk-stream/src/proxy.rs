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

/// A TCP stream to `target`'s host and port through `proxy`: an `http://` proxy by CONNECT,
/// or a SOCKS5 one (`socks5://` resolves the target here, `socks5h://` lets the proxy resolve
/// it; credentials by RFC 1929).
pub(crate) async fn connect_tunnel(proxy: &Url, target: &Url) -> Result<TcpStream, Error> {
    let shown = webhook_client::redact_proxy_url(proxy);
    match proxy.scheme() {
        "http" => {}
        "socks5" | "socks5h" => return connect_socks5(proxy, target, &shown).await,
        _ => {
            return Err(Error::WebSocket(format!(
                "the Stream WebSocket goes through http:// or socks5:// proxies, not {shown}"
            )));
        }
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

/// The SOCKS5 handshake, by `tokio-socks`.
async fn connect_socks5(proxy: &Url, target: &Url, shown: &str) -> Result<TcpStream, Error> {
    use tokio_socks::tcp::Socks5Stream;
    let failed = |e: &dyn std::fmt::Display| Error::WebSocket(format!("proxy {shown}: {e}"));
    let (Some(proxy_host), Some(host), Some(port)) = (
        proxy.host_str(),
        target.host_str(),
        target.port_or_known_default(),
    ) else {
        return Err(Error::WebSocket(format!("proxy {shown}: no host")));
    };
    let proxy_addr = (proxy_host, proxy.port_or_known_default().unwrap_or(1080));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let user = percent_decoded(proxy.username());
    let password = percent_decoded(proxy.password().unwrap_or(""));
    let stream = if proxy.scheme() == "socks5" {
        // socks5://: the name is resolved here, the proxy is given an address.
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| failed(&e))?
            .next()
            .ok_or_else(|| failed(&format!("{host} has no address")))?;
        if user.is_empty() {
            Socks5Stream::connect(proxy_addr, addr).await
        } else {
            Socks5Stream::connect_with_password(proxy_addr, addr, &user, &password).await
        }
    } else if user.is_empty() {
        Socks5Stream::connect(proxy_addr, (host, port)).await
    } else {
        Socks5Stream::connect_with_password(proxy_addr, (host, port), &user, &password).await
    }
    .map_err(|e| failed(&e))?;
    let tcp = stream.into_inner();
    tcp.set_nodelay(true).map_err(|e| failed(&e))?;
    Ok(tcp)
}

/// A URL's user or password as typed (`%40` back to `@`).
fn percent_decoded(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}
