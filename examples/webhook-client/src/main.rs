//! Run with: cargo run -p example-webhook-client
//!
//! Starts a receiver on loopback that verifies Standard Webhooks signatures, sends it one signed
//! delivery, and prints the attempt report. Then shows the SSRF guard refusing the same target
//! when loopback is not allowlisted.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use webhook_client::{SigningSecret, WebhookClient, WebhookRequest, verify_headers};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = SigningSecret::generate();
    let receiver_secret = secret.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let secret = receiver_secret.clone();
            async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                match verify_headers(&[secret], &headers, &body, now) {
                    Ok(()) => {
                        println!("receiver: verified delivery {:?}", headers["webhook-id"]);
                        (StatusCode::OK, "received")
                    }
                    Err(e) => {
                        println!("receiver: refused: {e}");
                        (StatusCode::UNAUTHORIZED, "bad signature")
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse()?])
        .build()?;
    let body =
        Bytes::from_static(br#"{"task_type":"negative_evidence_intervention","evidence_data":{}}"#);
    let request = WebhookRequest {
        url: &url,
        msg_id: "wf_1732435200_0a1b2c3d",
        body,
        secrets: std::slice::from_ref(&secret),
        headers: &[],
    };
    let report = client.send_webhook(&request).await;
    println!(
        "sender: {:?}, status {:?}, body {:?}, took {:?}",
        report.outcome, report.status, report.response_body, report.duration
    );

    let guarded = WebhookClient::builder().build()?;
    let report = guarded.send_webhook(&request).await;
    println!(
        "with the default SSRF guard: {:?} ({})",
        report.outcome,
        report.error_message().unwrap_or_default()
    );
    Ok(())
}
