//! The receiving side: check a delivery's Standard Webhooks signature.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use webhook_client::{SigningSecret, VerifyError};

/// Verifies a delivery the dispatcher signed: `headers` and the raw `body` of the request as
/// received, and the dispatcher's signing secret (`whsec_...`, see
/// [`SigningSecret::parse`]). Checks the `webhook-id`, `webhook-timestamp` (within 5 minutes
/// of this machine's clock, against replays) and `webhook-signature` headers, in constant
/// time, with the dispatcher's own code (`webhook_client::verify_headers`).
///
/// Verify the exact bytes received, before parsing them: re-serialised JSON would not match.
///
/// # Errors
///
/// A [`VerifyError`] saying what failed: a missing header, a bad or stale timestamp, no
/// matching signature.
pub fn verify_webhook(
    headers: &HeaderMap,
    body: &[u8],
    secret: &SigningSecret,
) -> Result<(), VerifyError> {
    verify_webhook_any(headers, body, std::slice::from_ref(secret))
}

/// [`verify_webhook`] accepting any of several secrets, as during a key rotation.
///
/// # Errors
///
/// As [`verify_webhook`].
pub fn verify_webhook_any(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SigningSecret],
) -> Result<(), VerifyError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    webhook_client::verify_headers(secrets, headers, body, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_by_the_dispatchers_code_verifies() {
        let secret = SigningSecret::generate();
        let body = br#"{"task_type":"x"}"#;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "wf_1_aaaaaaaa".parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        let sig = webhook_client::sign(&secret, "wf_1_aaaaaaaa", now, body);
        headers.insert("webhook-signature", sig.parse().unwrap());
        verify_webhook(&headers, body, &secret).unwrap();
        assert_eq!(
            verify_webhook(&headers, b"{}", &secret),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            verify_webhook(&headers, body, &SigningSecret::generate()),
            Err(VerifyError::NoMatchingSignature)
        );
        headers.remove("webhook-id");
        assert_eq!(
            verify_webhook(&headers, body, &secret),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
    }
}
