//! Wakeups between instances: one `NOTIFY` per burst of work made due, and one connection
//! that `LISTEN`s for the other instances' notifications.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::tls::MakeRustls;
use crate::store::batch::error_chain;

/// The `NOTIFY` channel every instance listens on.
pub const NOTIFY_CHANNEL: &str = "workflow_tasks";

/// Sends one `NOTIFY` per request, coalescing the requests that arrive while one is in flight.
///
/// Not inside the writing transaction: PostgreSQL serialises the commits of every transaction
/// that sent a `NOTIFY` (a cluster-wide lock held through the commit's WAL flush), which capped
/// enqueues at one fsync each, where plain commits group (figures in `docs/BENCHMARKS.md`).
/// After the commit is as safe (nobody is woken before the row is visible) and costs one tiny
/// statement per burst of enqueues.
pub(super) async fn notify_loop(
    pool: Pool,
    instance: String,
    outgoing: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = outgoing.notified() => {}
            () = stop.cancelled() => return,
        }
        let sent = match pool.get().await {
            Ok(client) => client
                .execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &instance])
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            // The other instances still find the work at their next poll.
            tracing::warn!(error = %e, "postgres NOTIFY failed");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Keeps one connection `LISTEN`ing and wakes the engine on other instances' notifications.
pub(super) async fn listen_loop(
    config: tokio_postgres::Config,
    tls: MakeRustls,
    instance: String,
    wakeup: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    let mut first = true;
    while !stop.is_cancelled() {
        match listen_once(&config, &tls, &instance, &wakeup, &stop, first).await {
            Ok(()) => return, // stopped
            Err(e) => {
                if !stop.is_cancelled() {
                    metrics::counter!("workflow_store_listener_reconnects_total").increment(1);
                    tracing::warn!(error = %e, retry_in = ?backoff, "postgres listener lost; reconnecting");
                }
            }
        }
        first = false;
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &MakeRustls,
    instance: &str,
    wakeup: &Notify,
    stop: &CancellationToken,
    first: bool,
) -> Result<(), String> {
    // The same TLS settings as the pool's connections (one shared configuration).
    let (client, mut conn) = config
        .connect(tls.clone())
        .await
        .map_err(|e| error_chain(&e))?;
    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    let closed = || "connection closed by the server".to_owned();
    let listen_sql = format!("LISTEN {NOTIFY_CHANNEL}");
    let listen = client.batch_execute(&listen_sql);
    tokio::pin!(listen);
    // The connection must be driven while LISTEN runs.
    loop {
        tokio::select! {
            r = &mut listen => { r.map_err(|e| e.to_string())?; break; }
            m = futures::StreamExt::next(&mut messages) => match m {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err(closed()),
            },
        }
    }
    if !first {
        // Notifications sent while we were away are lost: look for work now.
        wakeup.notify_one();
    }
    tracing::debug!("postgres listener connected");
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            m = futures::StreamExt::next(&mut messages) => match m {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if n.payload() != instance {
                        wakeup.notify_one();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err(closed()),
            },
        }
    }
}
