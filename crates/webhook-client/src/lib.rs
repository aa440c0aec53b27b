//! One signed webhook delivery attempt, with SSRF guard and classification.
//!
//! The engine owns scheduling and retries; this crate owns the attempt:
//! - a [`WebhookClient`] built once (pooled keep-alive connections, rustls), cheap to clone;
//! - signatures per the [Standard Webhooks] spec (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature: v1,<base64>`), several secrets for rotation, and [`verify`] for receivers;
//! - redirects never followed, bodies read up to a cap, connect and total timeouts;
//! - an SSRF guard in the DNS resolver (connect time: pooling keeps working and DNS rebinding
//!   cannot bypass it), with an allowlist of CIDRs;
//! - a circuit breaker per endpoint ([`endpoint_key`]): while open, nothing is sent and the
//!   report says when a probe may go. The sends are a
//!   [`circuit_breaker::KeyedCircuitBreakerLayer`] over the transport, reading each report's
//!   [`AttemptReport::verdict`]; a caller with steps of its own to put behind the breaker (a rate
//!   limiter) wraps [`WebhookClient::send_chat_unguarded`] in the same layer over
//!   [`WebhookClient::breakers`];
//! - a classified [`AttemptReport`]: success, retryable (with `Retry-After`) or permanent;
//! - enterprise chat platforms' wire rules ([`chat`]: DingTalk custom robot, WeCom,
//!   Feishu/Lark, Slack): a caller's message body signed per platform and sent with
//!   [`WebhookClient::send_chat`] through the same guard and breakers, the platform's answer
//!   classified. What the message says is the caller's.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/
//!
//! Why our own rather than a crate: the `standardwebhooks` crate signs and verifies but does not
//! send, and svix's sender lives inside svix-server. What we need around reqwest (the SSRF
//! resolver, the body cap, per-target breakers and the retry classification in one report) is
//! a few hundred lines; the signature itself is an HMAC pinned to the spec's published vector.
//!
//! # Example
//!
//! ```no_run
//! use webhook_client::{SigningSecret, WebhookClient, WebhookRequest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = WebhookClient::builder().build()?;
//! let secret = SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")?;
//! let report = client
//!     .send_webhook(&WebhookRequest {
//!         url: "https://receiver.example.com/hook",
//!         msg_id: "wf_1732435200_0a1b2c3d",
//!         body: bytes::Bytes::from_static(br#"{"task_type":"negative_evidence_intervention"}"#),
//!         secrets: &[secret],
//!         headers: &[],
//!     })
//!     .await;
//! println!("{:?} in {:?}", report.outcome, report.duration);
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! None.

pub mod chat;
mod client;
mod error;
mod proxy;
mod signing;
mod ssrf;

pub use chat::dingtalk_sign;
pub use client::{
    AttemptReport, ChatRequest, USER_AGENT, WebhookClient, WebhookClientBuilder, WebhookRequest,
    endpoint_key, target_key,
};
pub use error::{Error, Result};
pub use proxy::{EgressProxy, redact as redact_proxy_url};
pub use retry_policy::{Classifier, Outcome, TransportErrorKind};
pub use signing::{
    InvalidSecret, SigningSecret, TIMESTAMP_TOLERANCE_SECS, VerifyError, sign, signature_header,
    verify, verify_headers,
};
pub use ssrf::{BlockedAddress, SsrfPolicy, is_non_public};
