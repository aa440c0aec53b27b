//! Run with: cargo run -p example-webhook-client
//!
//! Starts a receiver on loopback that verifies Standard Webhooks signatures with
//! [`webhook_client::verify_headers`], sends it one signed delivery (two secrets, as during a key
//! rotation, of which the receiver knows only the new one), and prints the attempt report. Then
//! shows the default SSRF guard refusing the same loopback target, and a refused connection.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use webhook_client::{SigningSecret, WebhookClient, WebhookRequest, verify_headers};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let old_secret = SigningSecret::generate();
    let new_secret = SigningSecret::generate();
    let receiver_secret = new_secret.clone();
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
                        println!(
                            "receiver: verified delivery {:?} ({} bytes, signatures {:?})",
                            headers["webhook-id"],
                            body.len(),
                            headers["webhook-signature"]
                        );
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
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}/hook");
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Local development opens loopback explicitly: the guard refuses it by default.
    let client = WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse()?])
        .build()?;
    let body =
        Bytes::from_static(br#"{"task_type":"negative_evidence_intervention","evidence_data":{}}"#);
    let secrets = [old_secret, new_secret];
    let request = WebhookRequest {
        url: &url,
        msg_id: "wf_1732435200_0a1b2c3d",
        body,
        secrets: &secrets,
        headers: &[("x-tenant".to_owned(), "demo".to_owned())],
    };
    let report = client.send_webhook(&request).await;
    println!("sender: {report:#?}");

    let guarded = WebhookClient::builder().build()?;
    let report = guarded.send_webhook(&request).await;
    println!(
        "with the default SSRF guard: sent={}, {:?} ({})",
        report.sent,
        report.outcome,
        report.error_message().unwrap_or_default()
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let refused_url = format!("http://{closed}/hook?token=never-printed");
    let report = client
        .send_webhook(&WebhookRequest {
            url: &refused_url,
            ..request
        })
        .await;
    println!(
        "nothing listening: {:?} ({})",
        report.outcome,
        report.error_message().unwrap_or_default()
    );
    Ok(())
}
