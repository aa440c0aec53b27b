//! Attempts against real loopback servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use bytes::Bytes;
use circuit_breaker::BreakerConfig;
use webhook_client::{
    Classifier, Outcome, SigningSecret, TransportErrorKind, WebhookClient, WebhookRequest,
    verify_headers,
};

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn local_client() -> WebhookClient {
    WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse().unwrap()])
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
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

fn status_app(status: StatusCode, headers: &'static [(&'static str, &'static str)]) -> Router {
    Router::new().route(
        "/",
        any(move || async move {
            let mut r = Response::builder().status(status);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.body(Body::from("answer")).unwrap()
        }),
    )
}

#[tokio::test]
async fn success_is_classified_with_status_and_body() {
    let addr = serve(status_app(StatusCode::OK, &[])).await;
    let r = send(&local_client(), &format!("http://{addr}/")).await;
    assert!(r.sent);
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(r.status, Some(200));
    assert_eq!(r.response_body.as_deref(), Some("answer"));
    assert!(r.error.is_none());
}

#[tokio::test]
async fn server_errors_and_throttles_are_retryable_with_retry_after() {
    let client = local_client();
    let a = serve(status_app(StatusCode::INTERNAL_SERVER_ERROR, &[])).await;
    assert_eq!(
        send(&client, &format!("http://{a}/")).await.outcome,
        Outcome::Retryable { retry_after: None }
    );

    let b = serve(status_app(
        StatusCode::SERVICE_UNAVAILABLE,
        &[("retry-after", "120")],
    ))
    .await;
    let r = send(&client, &format!("http://{b}/")).await;
    assert_eq!(
        r.outcome,
        Outcome::Retryable {
            retry_after: Some(Duration::from_secs(120))
        }
    );

    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    let date: &'static str = Box::leak(date.into_boxed_str());
    let c = serve(status_app(
        StatusCode::SERVICE_UNAVAILABLE,
        Box::leak(Box::new([("retry-after", date)])),
    ))
    .await;
    match send(&client, &format!("http://{c}/")).await.outcome {
        Outcome::Retryable {
            retry_after: Some(d),
        } => assert!(
            d > Duration::from_secs(3500) && d <= Duration::from_secs(3600),
            "{d:?}"
        ),
        other => panic!("{other:?}"),
    }

    let d = serve(status_app(
        StatusCode::TOO_MANY_REQUESTS,
        &[("retry-after", "7")],
    ))
    .await;
    assert_eq!(
        send(&client, &format!("http://{d}/")).await.outcome,
        Outcome::Retryable {
            retry_after: Some(Duration::from_secs(7))
        }
    );
}

#[tokio::test]
async fn gone_is_retryable_by_the_seed_rule_and_permanent_when_configured() {
    let addr = serve(status_app(StatusCode::GONE, &[])).await;
    let url = format!("http://{addr}/");
    assert!(send(&local_client(), &url).await.outcome.is_retryable());
    let strict = WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse().unwrap()])
        .classifier(Classifier::conventional())
        .build()
        .unwrap();
    assert_eq!(send(&strict, &url).await.outcome, Outcome::Permanent);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/",
            any(|| async { (StatusCode::MOVED_PERMANENTLY, [("location", "/elsewhere")]) }),
        )
        .route(
            "/elsewhere",
            any(move || {
                h.fetch_add(1, Ordering::SeqCst);
                async { "moved" }
            }),
        );
    let addr = serve(app).await;
    let r = send(&local_client(), &format!("http://{addr}/")).await;
    assert_eq!(r.status, Some(301));
    assert!(r.outcome.is_retryable(), "a 3xx is a failed attempt");
    assert_eq!(r.error.unwrap().kind(), TransportErrorKind::Redirect);
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_target_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold connections without answering.
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let r = send(&local_client(), &format!("http://{addr}/")).await;
    assert!(r.outcome.is_retryable());
    assert!(r.error.as_ref().unwrap().is_timeout(), "{:?}", r.error);
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let r = send(&local_client(), &format!("http://{addr}/")).await;
    assert!(r.outcome.is_retryable());
    assert_eq!(r.error.unwrap().kind(), TransportErrorKind::Connect);
}

#[tokio::test]
async fn a_fifty_megabyte_answer_is_capped() {
    let app = Router::new().route(
        "/",
        post(|| async {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures::stream::iter(
                (0..800).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            Body::from_stream(stream).into_response()
        }),
    );
    let addr = serve(app).await;
    let r = send(&local_client(), &format!("http://{addr}/")).await;
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(r.response_body.unwrap().len(), 4096);
}

#[tokio::test]
async fn loopback_targets_are_refused_by_default_and_allowed_by_the_allowlist() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let addr = serve(Router::new().route(
        "/",
        any(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        }),
    ))
    .await;
    let guarded = WebhookClient::builder().build().unwrap();
    for url in [
        format!("http://{addr}/"),
        format!("http://localhost:{}/", addr.port()),
    ] {
        let r = send(&guarded, &url).await;
        assert_eq!(r.outcome, Outcome::Permanent, "{url}");
        assert!(r.error.unwrap().is_blocked(), "{url}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the server");
    let r = send(
        &local_client(),
        &format!("http://localhost:{}/", addr.port()),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn signatures_verify_with_the_receivers_check() {
    let secret = SigningSecret::generate();
    let s = secret.clone();
    let seen = Arc::new(parking_lot_free::Slot::default());
    let seen2 = seen.clone();
    let app = Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            let seen = seen2.clone();
            async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let ok = verify_headers(std::slice::from_ref(&s), &headers, &body, now).is_ok();
                seen.set(format!(
                    "{}|{}|{}",
                    headers["webhook-id"].to_str().unwrap(),
                    headers["content-type"].to_str().unwrap(),
                    headers["user-agent"].to_str().unwrap()
                ));
                if ok {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }
        }),
    );
    let addr = serve(app).await;
    let r = local_client()
        .send_webhook(&WebhookRequest {
            url: &format!("http://{addr}/"),
            msg_id: "wf_1732435200_0a1b2c3d",
            body: Bytes::from_static(br#"{"a":1}"#),
            secrets: &[SigningSecret::generate(), secret],
            headers: &[("x-extra".into(), "1".into())],
        })
        .await;
    assert_eq!(
        r.status,
        Some(204),
        "receiver verified the rotated signature"
    );
    let got = seen.get();
    assert!(
        got.starts_with("wf_1732435200_0a1b2c3d|application/json|closed-loop-webhook/"),
        "{got}"
    );
}

#[tokio::test]
async fn the_breaker_opens_after_failures_and_the_next_attempt_is_not_sent() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let addr = serve(Router::new().route(
        "/",
        any(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::BAD_GATEWAY }
        }),
    ))
    .await;
    let client = WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse().unwrap()])
        .breaker(BreakerConfig {
            consecutive_failures: 3,
            ..BreakerConfig::default()
        })
        .build()
        .unwrap();
    let url = format!("http://{addr}/");
    for _ in 0..3 {
        assert!(send(&client, &url).await.sent);
    }
    let r = send(&client, &url).await;
    assert!(!r.sent);
    assert!(r.breaker_retry_in.is_some());
    assert!(r.outcome.is_retryable());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "the fourth attempt never reached the target"
    );
    assert!(client.breaker_retry_in(&url).is_some());
    assert!(client.breaker_retry_in("http://other.example/").is_none());
}

#[tokio::test]
async fn invalid_urls_are_permanent_and_not_sent() {
    let r = send(&local_client(), "not a url").await;
    assert!(!r.sent);
    assert_eq!(r.outcome, Outcome::Permanent);
}

/// A tiny shared string slot (no extra dependency for one test).
mod parking_lot_free {
    #[derive(Default)]
    pub(crate) struct Slot(std::sync::Mutex<String>);
    impl Slot {
        pub(crate) fn set(&self, s: String) {
            *self.0.lock().unwrap() = s;
        }
        pub(crate) fn get(&self) -> String {
            self.0.lock().unwrap().clone()
        }
    }
}

/// How many connections a server saw (by the client's port) after `rounds` bursts of `burst`
/// sends held in flight together.
async fn connections_after_bursts(idle_per_host: usize, burst: usize, rounds: usize) -> usize {
    use axum::extract::ConnectInfo;
    use std::collections::HashSet;
    // The client ports the server saw.
    let peers: Arc<std::sync::Mutex<HashSet<u16>>> = Arc::default();
    let barrier = Arc::new(tokio::sync::Barrier::new(burst));
    let app = Router::new().route(
        "/",
        post({
            let peers = peers.clone();
            move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
                let (peers, barrier) = (peers.clone(), barrier.clone());
                async move {
                    peers.lock().unwrap().insert(peer.port());
                    // Every send of the burst is in flight at once: one connection each.
                    barrier.wait().await;
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    let client = WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse().unwrap()])
        .timeout(Duration::from_secs(5))
        .pool_idle_per_host(idle_per_host)
        .build()
        .unwrap();
    let url = format!("http://{addr}/");
    for _ in 0..rounds {
        let sends = (0..burst).map(|_| send(&client, &url));
        for r in futures::future::join_all(sends).await {
            assert_eq!(r.outcome, Outcome::Success);
        }
        // Let the connections go back to the pool.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peers.lock().unwrap().len()
}

#[tokio::test]
async fn a_burst_as_large_as_the_idle_pool_reuses_its_connections() {
    // Kept: the second and third bursts go over the first burst's connections.
    assert_eq!(connections_after_bursts(8, 8, 3).await, 8);
    // Two kept: each later burst opens six new connections.
    assert_eq!(connections_after_bursts(2, 8, 3).await, 8 + 6 + 6);
}
