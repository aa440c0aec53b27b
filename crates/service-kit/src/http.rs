//! The HTTP listener both services (and any axum app) run behind: `axum::serve` with the
//! limits a server on a shared network needs.
//!
//! `axum::serve` has no timeouts and no connection cap: an idle or slowloris client holds a
//! socket (and a file descriptor) for as long as it likes, and past the open-file limit the
//! server stops accepting anyone. [`serve`] is the same hyper connection driver with:
//!
//! - a **header timeout** (hyper's `header_read_timeout`): a connection must finish a request's
//!   headers within it, counted from when it opened or finished its previous exchange. It
//!   bounds slowloris senders and idle keep-alive connections alike;
//! - a **connection cap**: beyond [`HttpLimits::max_connections`] open connections a new one is
//!   answered `503 Service Unavailable` with `Retry-After: 1` and closed, so the server keeps
//!   descriptors for the clients it serves;
//! - **accept back-off**: an accept error (say, `EMFILE`) pauses accepting, 10 ms doubling
//!   to 1 s, instead of spinning on it;
//! - graceful shutdown: open connections finish their requests, then close.
//!
//! It speaks HTTP/1.1 only. Detecting cleartext HTTP/2 (`h2c` prior knowledge) means reading
//! the client's first bytes before any timeout runs, which a silent client could stall
//! forever; the services' clients (UIs, receivers, DingTalk, reverse proxies) use HTTP/1.1.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ConfigError;

/// The listener's limits (the services' `header_timeout` and `max_connections` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a connection may take to send a request's headers, from when it opened or
    /// finished its previous exchange (default 10 s). Also the idle keep-alive timeout.
    pub header_timeout: Duration,
    /// Open connections at most (default 4096); more are answered 503 and closed.
    pub max_connections: usize,
    /// How long shutdown waits for open connections to finish their requests (default 10 s).
    pub shutdown_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 4096,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl HttpLimits {
    /// The limits a service's settings name, checked.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_connections` (0) or `header_timeout` (under 100 ms).
    pub fn new(
        max_connections: usize,
        header_timeout: Duration,
        shutdown_timeout: Duration,
    ) -> Result<HttpLimits, ConfigError> {
        if max_connections == 0 {
            return Err(ConfigError("max_connections must be at least 1".into()));
        }
        if header_timeout < Duration::from_millis(100) {
            return Err(ConfigError("header_timeout must be at least 100ms".into()));
        }
        Ok(HttpLimits {
            header_timeout,
            max_connections,
            shutdown_timeout,
        })
    }
}

/// What a connection past the cap is told before it is closed.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 69\r\n\r\n\
{\"error\":\"too_many_connections\",\"message\":\"connection limit reached\"}";

/// The longest pause after repeated accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then lets open
/// connections finish their requests (for at most [`HttpLimits::shutdown_timeout`]).
///
/// Accept errors are logged and waited out, never returned: a full descriptor table clears
/// when clients let go. HTTP upgrades (WebSocket) work.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with(listener, None, app, limits, shutdown).await;
}

/// [`serve`] over TLS: each connection's handshake must finish within the header timeout.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with(listener, Some(acceptor), app, limits, shutdown).await;
}

async fn serve_with(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Connections watch `closing` and finish their request in flight when it fires.
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    let service = TowerToHyperService::new(app);
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(ok) => {
                backoff = Duration::ZERO;
                ok
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                metrics::counter!("http_accept_errors_total").increment(1);
                tracing::warn!(error = %e, pause = ?backoff, "accept failed; pausing");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            tracing::debug!(%peer, limit = limits.max_connections, "connection limit reached; answering 503");
            connections.spawn(refuse(tcp));
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::trace!(error = %e, "could not set TCP_NODELAY");
        }
        let (builder, service, closing, tls) = (
            builder.clone(),
            service.clone(),
            closing.clone(),
            tls.clone(),
        );
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => drive(&builder, TokioIo::new(tcp), service, &closing).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            drive(&builder, TokioIo::new(stream), service, &closing).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    if tokio::time::timeout(limits.shutdown_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?limits.shutdown_timeout, "open connections did not finish in time; closing them");
    }
}

/// Runs one connection until it ends; once `closing` fires, it finishes the request in flight
/// and closes.
async fn drive<I>(
    builder: &hyper::server::conn::http1::Builder,
    io: I,
    service: TowerToHyperService<Router>,
    closing: &CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection closed with an error");
    }
}

/// Tells a connection past the cap to come back later, without reading its request.
async fn refuse(mut tcp: tokio::net::TcpStream) {
    let write = async {
        tcp.write_all(BUSY_RESPONSE).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Raises this process's soft open-file limit to its hard limit and logs what it got: each
/// connection and each SQLite file is a descriptor, and many systems start services at 1024.
pub fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_response_length_matches_its_body() {
        let text = std::str::from_utf8(BUSY_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
