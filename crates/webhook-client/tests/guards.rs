//! The published signature vector, secrets kept out of errors, the SSRF guard on literal IPv6
//! forms, body capping without downloading, and breaker timing under paused time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::{any, post};
use bytes::Bytes;
use circuit_breaker::BreakerConfig;
use futures::StreamExt;
use webhook_client::{
    AttemptReport, Outcome, SigningSecret, TransportErrorKind, VerifyError, WebhookClient,
    WebhookRequest, sign, verify,
};

// The Standard Webhooks specification's published test vector.
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const TIMESTAMP: i64 = 1649367553;
const BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
    // dropped here: nothing listens on the port any more
}

fn local_client() -> WebhookClient {
    WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse().unwrap()])
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

async fn send(client: &WebhookClient, url: &str, secrets: &[SigningSecret]) -> AttemptReport {
    client
        .send_webhook(&WebhookRequest {
            url,
            msg_id: MSG_ID,
            body: Bytes::from_static(BODY.as_bytes()),
            secrets,
            headers: &[],
        })
        .await
}

#[test]
fn sign_and_verify_reproduce_the_published_test_vector() {
    let secret = SigningSecret::parse(SECRET).unwrap();
    assert_eq!(sign(&secret, MSG_ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);

    let ts = TIMESTAMP.to_string();
    let headers = |name: &str| match name {
        "webhook-id" => Some(MSG_ID),
        "webhook-timestamp" => Some(ts.as_str()),
        "webhook-signature" => Some(SIGNATURE),
        _ => None,
    };
    let secrets = std::slice::from_ref(&secret);
    assert_eq!(verify(secrets, headers, BODY.as_bytes(), TIMESTAMP), Ok(()));
    // Within the 5-minute tolerance either way, refused beyond it.
    assert_eq!(
        verify(secrets, headers, BODY.as_bytes(), TIMESTAMP + 300),
        Ok(())
    );
    assert_eq!(
        verify(secrets, headers, BODY.as_bytes(), TIMESTAMP - 301),
        Err(VerifyError::TimestampOutOfTolerance)
    );
    // Another secret does not verify it.
    assert_eq!(
        verify(
            &[SigningSecret::generate()],
            headers,
            BODY.as_bytes(),
            TIMESTAMP
        ),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn an_invalid_secret_converts_into_the_crate_error_without_echoing_it() {
    let err: webhook_client::Error = SigningSecret::parse("whsec_not base64 hunter2")
        .unwrap_err()
        .into();
    assert_eq!(err.kind(), TransportErrorKind::Other);
    assert!(!err.to_string().contains("hunter2"));
    assert!(!format!("{err:?}").contains("hunter2"));
}

#[tokio::test]
async fn credentials_and_queries_never_appear_in_errors_or_reports() {
    let client = local_client();
    let secret = SigningSecret::parse(SECRET).unwrap();

    // Connection refused.
    let refused = refused_addr();
    let url = format!("http://user:hunter2@{refused}/hook?token=s3cr3t");
    let r = send(&client, &url, std::slice::from_ref(&secret)).await;
    let err = r.error.as_ref().expect("a transport error");
    assert_eq!(err.kind(), TransportErrorKind::Connect, "{err}");
    assert!(err.to_string().contains("refused"), "says why: {err}");

    // Timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let url = format!("http://user:hunter2@{silent}/hook?token=s3cr3t");
    let t = send(&client, &url, std::slice::from_ref(&secret)).await;
    assert!(t.error.as_ref().unwrap().is_timeout());

    for report in [&r, &t] {
        let texts = [
            format!("{report:?}"),
            report.error.as_ref().unwrap().to_string(),
            report.error_message().unwrap(),
        ];
        for text in texts {
            for secret in ["hunter2", "s3cr3t", "C2FVsBQIhrsc", "/hook"] {
                assert!(!text.contains(secret), "{secret:?} leaked in {text}");
            }
        }
    }
    assert!(!format!("{secret:?}").contains("C2FVsBQIhrsc"));
}

#[tokio::test]
async fn literal_ipv6_forms_of_loopback_are_refused_without_a_connection() {
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
    let port = addr.port();
    for url in [
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://2130706433:{port}/"), // 127.0.0.1 as a number
        format!("http://0x7f.1:{port}/"),     // 127.0.0.1 in hex shorthand
        format!("http://169.254.169.254:{port}/latest/meta-data/"),
    ] {
        let r = send(&guarded, &url, &[]).await;
        assert!(!r.sent, "{url}");
        assert_eq!(r.outcome, Outcome::Permanent, "{url}");
        assert!(r.error.unwrap().is_blocked(), "{url}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // A disabled guard lets everything through.
    let open = WebhookClient::builder().ssrf_guard(false).build().unwrap();
    let r = send(&open, &format!("http://127.0.0.1:{port}/"), &[]).await;
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// Fires when the response stream is dropped, i.e. when the server gave up sending.
struct DropSignal(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn a_fifty_megabyte_answer_is_not_downloaded() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 800; // 50 MiB
    let produced = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let p = produced.clone();
    let app = Router::new().route(
        "/",
        post(move || {
            let p = p.clone();
            let signal = DropSignal(tx.lock().unwrap().take());
            async move {
                let chunk = Bytes::from(vec![b'x'; CHUNK]);
                let stream = futures::stream::iter(0..CHUNKS).map(move |_| {
                    let _keep = &signal;
                    p.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(chunk.clone())
                });
                Body::from_stream(stream).into_response()
            }
        }),
    );
    let addr = serve(app).await;
    let r = send(&local_client(), &format!("http://{addr}/"), &[]).await;
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(r.response_body.as_deref().map(str::len), Some(4096));

    // The client hung up: the server's stream ends early (a bound, not a timing assertion).
    tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("the server stopped streaming")
        .unwrap();
    let sent = produced.load(Ordering::SeqCst);
    assert!(
        sent < CHUNKS,
        "the server produced {sent} of {CHUNKS} chunks: the body was downloaded"
    );
}

#[tokio::test(start_paused = true)]
async fn the_open_breaker_counts_down_with_time_then_lets_a_probe_through() {
    let refused = refused_addr();
    let url = format!("http://{refused}/");
    let client = WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse().unwrap()])
        .breaker(BreakerConfig {
            consecutive_failures: 2,
            open_wait: Duration::from_secs(30),
            ..BreakerConfig::default()
        })
        .build()
        .unwrap();
    for _ in 0..2 {
        let r = send(&client, &url, &[]).await;
        assert!(r.sent);
        assert!(r.outcome.is_retryable());
    }
    let r = send(&client, &url, &[]).await;
    assert!(!r.sent);
    assert_eq!(r.breaker_retry_in, Some(Duration::from_secs(30)));
    assert_eq!(
        r.outcome,
        Outcome::Retryable {
            retry_after: Some(Duration::from_secs(30))
        }
    );

    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(client.breaker_retry_in(&url), Some(Duration::from_secs(10)));
    // Breakers are per endpoint: another path, or another query, on the same host:port has
    // its own (closed) breaker; the same endpoint spelled differently shares this one.
    assert_eq!(
        client.breaker_retry_in(&format!("http://{refused}/other?x=1")),
        None
    );
    assert_eq!(
        client.breaker_retry_in(&format!("http://{refused}/?x=1")),
        None
    );
    assert_eq!(
        client.breaker_retry_in(&format!("HTTP://{refused}/")),
        Some(Duration::from_secs(10))
    );

    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(client.breaker_retry_in(&url), None);
    let probe = send(&client, &url, &[]).await;
    assert!(probe.sent, "half-open lets a probe through");
}

#[tokio::test]
async fn a_retry_after_on_503_pins_the_breaker_wait() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let addr = serve(Router::new().route(
        "/",
        any(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "600")],
                )
            }
        }),
    ))
    .await;
    let url = format!("http://{addr}/");
    let client = local_client();
    let r = send(&client, &url, &[]).await;
    assert!(r.sent);
    let retry_in = client.breaker_retry_in(&url).expect("the breaker opened");
    assert!(
        retry_in > Duration::from_secs(500) && retry_in <= Duration::from_secs(600),
        "{retry_in:?}"
    );
    assert!(!send(&client, &url, &[]).await.sent);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn client_errors_other_than_408_and_429_keep_the_breaker_closed() {
    let addr =
        serve(Router::new().route("/", any(|| async { axum::http::StatusCode::BAD_REQUEST })))
            .await;
    let url = format!("http://{addr}/");
    let client = WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse().unwrap()])
        .breaker(BreakerConfig {
            consecutive_failures: 2,
            ..BreakerConfig::default()
        })
        .build()
        .unwrap();
    for _ in 0..5 {
        let r = send(&client, &url, &[]).await;
        assert!(r.sent, "the receiver is up: its breaker stays closed");
        assert_eq!(r.status, Some(400));
    }
    assert_eq!(client.breaker_retry_in(&url), None);
}

#[tokio::test]
async fn an_endpoint_is_the_sole_one_of_its_host_until_another_of_the_host_is_sent_to() {
    // Ports 1 and 10 of loopback: nothing listens, every send is refused, and each endpoint
    // sent to gets its breaker. "127.0.0.1:10" starts like "127.0.0.1:1" and is another host.
    let client = local_client();
    let first = "http://127.0.0.1:1/hook";
    // Before any send there is no breaker at all: nothing else on the host either.
    assert!(client.sole_endpoint_of_host(first));
    let _ = send(&client, first, &[]).await;
    assert!(client.sole_endpoint_of_host(first));
    let _ = send(&client, "http://127.0.0.1:10/x", &[]).await;
    let _ = send(&client, "http://127.0.0.2:1/x", &[]).await;
    assert_eq!(
        client.breakers().len(),
        3,
        "each endpoint sent to has its breaker"
    );
    assert!(client.sole_endpoint_of_host(first));
    // A second endpoint on the same host: an open breaker no longer speaks for the host.
    let _ = send(&client, "http://127.0.0.1:1/other?token=t", &[]).await;
    assert!(!client.sole_endpoint_of_host(first));
    assert!(!client.sole_endpoint_of_host("not a url"));
}
