//! The receiver: a local HTTP server that verifies every delivery's signature and records, per
//! task id, when it first arrived, how often it was tried and the gaps between a failure and the
//! next try. It can answer slowly (`delay`) and fail a share of requests with 500 (`fail_rate`).

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How the receiver behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Behaviour {
    /// Time taken before answering each request.
    pub(crate) delay: Duration,
    /// Share of requests answered 500 (0.0 to 1.0), chosen by a hash of (task id, try number).
    pub(crate) fail_rate: f64,
    /// Down (every request answered 503) for `down` at the end of every `period`, counted
    /// from the receiver's start, until [`Receiver::stop_flapping`].
    pub(crate) flap: Option<Flap>,
}

/// A receiver that goes down on a schedule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flap {
    /// One up-then-down cycle.
    pub(crate) period: Duration,
    /// The down part of each cycle (its end).
    pub(crate) down: Duration,
}

/// What happened to one task id.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    /// When its first successful delivery arrived.
    pub(crate) delivered_at: Option<Instant>,
    /// Requests received for it (successes and failures).
    pub(crate) requests: u32,
    /// When the last request answered 500 arrived, until the next request.
    last_failure: Option<Instant>,
}

/// Everything the receiver saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// By `webhook-id` (the task id).
    pub(crate) by_id: HashMap<String, Delivery>,
    /// Successful deliveries of an id already delivered.
    pub(crate) duplicates: usize,
    /// Requests whose signature did not verify.
    pub(crate) bad_signatures: usize,
    /// Requests answered 500 on purpose.
    pub(crate) failures_sent: usize,
    /// Milliseconds between a 500 and the next request for the same task.
    pub(crate) retry_gaps_ms: Vec<f64>,
}

/// The running receiver's shared state.
#[derive(Debug, Default)]
pub(crate) struct Receiver {
    /// Per-id records.
    pub(crate) seen: Mutex<Seen>,
    /// Distinct ids delivered successfully (for cheap polling).
    pub(crate) delivered: AtomicUsize,
    /// Requests being answered right now.
    in_flight: AtomicUsize,
    /// The most requests answered at once.
    pub(crate) max_in_flight: AtomicUsize,
    /// When the last response was sent.
    pub(crate) last_response: Mutex<Option<Instant>>,
    /// Set once the flapping is over: the receiver stays up.
    flapping_over: std::sync::atomic::AtomicBool,
    /// Requests to `/sink`: the reference run's forwarded tasks (unsigned, not recorded per id).
    pub(crate) forwarded: AtomicUsize,
}

impl Receiver {
    /// Ends the down periods: from now on the receiver stays up.
    pub(crate) fn stop_flapping(&self) {
        self.flapping_over.store(true, Ordering::Relaxed);
    }
}

/// Starts the receiver on 127.0.0.1 (port chosen by the OS); returns its state, its address
/// and the hook URL. `/sink` answers every POST at once with a new task id and only counts it:
/// the far end of the reference forwarder ([`crate::reference`]).
pub(crate) async fn start(
    secret: webhook_client::SigningSecret,
    behaviour: Behaviour,
) -> anyhow::Result<(Arc<Receiver>, std::net::SocketAddr, String)> {
    let state = Arc::new(Receiver::default());
    let born = Instant::now();
    let hasher = std::hash::RandomState::new();
    let s = state.clone();
    let sink = state.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (s, secret, hasher) = (s.clone(), secret.clone(), hasher.clone());
                async move {
                    let arrived = Instant::now();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    let ok =
                        webhook_client::verify_headers(&[secret], &headers, &body, now).is_ok();
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let n = s.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                    s.max_in_flight.fetch_max(n, Ordering::Relaxed);
                    if !behaviour.delay.is_zero() {
                        tokio::time::sleep(behaviour.delay).await;
                    }
                    let status = {
                        let mut seen = s.seen.lock();
                        if !ok {
                            seen.bad_signatures += 1;
                        }
                        let d = seen.by_id.entry(id.clone()).or_default();
                        d.requests += 1;
                        let tries = d.requests;
                        let gap = d
                            .last_failure
                            .take()
                            .map(|f| arrived.duration_since(f).as_secs_f64() * 1000.0);
                        // A deterministic share of (id, try) pairs fails: exactly `fail_rate` on
                        // average, independent of arrival order and concurrency.
                        let roll = (hasher.hash_one((&id, tries)) % 10_000) as f64 / 10_000.0;
                        let down = behaviour.flap.is_some_and(|f| {
                            let phase = arrived.duration_since(born).as_nanos()
                                % f.period.as_nanos().max(1);
                            !s.flapping_over.load(Ordering::Relaxed)
                                && phase >= (f.period - f.down).as_nanos()
                        });
                        let fail = down || roll < behaviour.fail_rate;
                        let mut duplicate = false;
                        if fail {
                            d.last_failure = Some(arrived);
                        } else if d.delivered_at.is_none() {
                            d.delivered_at = Some(arrived);
                            s.delivered.fetch_add(1, Ordering::Relaxed);
                        } else {
                            duplicate = true;
                        }
                        if let Some(g) = gap {
                            seen.retry_gaps_ms.push(g);
                        }
                        if down {
                            seen.failures_sent += 1;
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        } else if fail {
                            seen.failures_sent += 1;
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            if duplicate {
                                seen.duplicates += 1;
                            }
                            axum::http::StatusCode::OK
                        }
                    };
                    s.in_flight.fetch_sub(1, Ordering::Relaxed);
                    *s.last_response.lock() = Some(Instant::now());
                    (status, "ok")
                }
            },
        ),
    );
    let app = app.route(
        "/sink",
        axum::routing::post(move || {
            let n = sink.forwarded.fetch_add(1, Ordering::Relaxed) + 1;
            async move { format!(r#"{{"status":"success","task_id":"ref-{n}"}}"#) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hook = format!("http://{addr}/hook");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((state, addr, hook))
}
