//! Standard Webhooks signatures: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a webhook's timestamp may be from the receiver's clock: 5 minutes, as the spec says.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// The secret prefix of Standard Webhooks.
const PREFIX: &str = "whsec_";

/// A signing key, from a `whsec_`-prefixed base64 secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    key: Vec<u8>,
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// The secret is not `whsec_` + base64 of at least 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing secret must be \"whsec_\" followed by base64 of at least 16 bytes")]
pub struct InvalidSecret;

impl SigningSecret {
    /// Parses `whsec_<base64>`. The prefix is required so a secret cannot be confused with
    /// another credential; the key must be 16 to 64 bytes.
    ///
    /// # Errors
    ///
    /// [`InvalidSecret`] otherwise (the message never contains the secret).
    pub fn parse(secret: &str) -> Result<SigningSecret, InvalidSecret> {
        let b64 = secret.trim().strip_prefix(PREFIX).ok_or(InvalidSecret)?;
        let key = B64.decode(b64).map_err(|_| InvalidSecret)?;
        if !(16..=64).contains(&key.len()) {
            return Err(InvalidSecret);
        }
        Ok(SigningSecret { key })
    }

    /// A new random secret of 24 bytes.
    pub fn generate() -> SigningSecret {
        let mut key = vec![0u8; 24];
        rand::rng().fill_bytes(&mut key);
        SigningSecret { key }
    }

    /// The secret in its `whsec_` form (to store or show once).
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", B64.encode(&self.key))
    }

    /// The raw key bytes (for deriving other keys).
    pub fn key_bytes(&self) -> &[u8] {
        &self.key
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

/// The `webhook-signature` value for one secret: `v1,<base64>`.
pub fn sign(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", B64.encode(secret.mac(msg_id, timestamp, body)))
}

/// The `webhook-signature` header for several secrets (key rotation): space-separated.
pub fn signature_header(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a received webhook was refused by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is missing or not text.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not a number.
    #[error("invalid webhook-timestamp")]
    InvalidTimestamp,
    /// The timestamp is more than 5 minutes away (replay protection).
    #[error("webhook-timestamp outside the 5-minute tolerance")]
    TimestampOutOfTolerance,
    /// No signature matches any secret.
    #[error("no matching signature")]
    NoMatchingSignature,
}

/// Verifies a received webhook, as a receiver would: `headers` are the request's
/// `webhook-id`, `webhook-timestamp` and `webhook-signature` (looked up case-insensitively by
/// name through `header`), `now` is the receiver's unix time. Any `v1` signature matching any
/// secret is accepted; comparison is constant-time.
///
/// # Errors
///
/// A [`VerifyError`] saying what failed.
pub fn verify<'h>(
    secrets: &[SigningSecret],
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let id = header("webhook-id").ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let ts = header("webhook-timestamp").ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let sigs =
        header("webhook-signature").ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let ts: i64 = ts
        .trim()
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    // abs_diff: a hostile timestamp near i64::MIN must not overflow the subtraction.
    if now.abs_diff(ts) > TIMESTAMP_TOLERANCE_SECS.unsigned_abs() {
        return Err(VerifyError::TimestampOutOfTolerance);
    }
    for secret in secrets {
        let expected = secret.mac(id, ts, body);
        for sig in sigs.split_whitespace() {
            let Some(b64) = sig.strip_prefix("v1,") else {
                continue;
            };
            if let Ok(got) = B64.decode(b64)
                && got.len() == expected.len()
                && bool::from(got.ct_eq(&expected))
            {
                return Ok(());
            }
        }
    }
    Err(VerifyError::NoMatchingSignature)
}

/// [`verify`] over an [`http::HeaderMap`].
///
/// # Errors
///
/// A [`VerifyError`] saying what failed.
pub fn verify_headers(
    secrets: &[SigningSecret],
    headers: &http::HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    verify(
        secrets,
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        body,
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's published test vector.
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    const SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> impl Fn(&str) -> Option<&'a str> {
        move |name| match name {
            "webhook-id" => Some(id),
            "webhook-timestamp" => Some(ts),
            "webhook-signature" => Some(sig),
            _ => None,
        }
    }

    #[test]
    fn matches_the_published_test_vector() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(sign(&secret, ID, TS, BODY.as_bytes()), SIG);
        let ts = TS.to_string();
        assert_eq!(
            verify(&[secret], headers(ID, &ts, SIG), BODY.as_bytes(), TS + 10),
            Ok(())
        );
    }

    #[test]
    fn rotation_signs_with_every_secret_and_verifies_with_any() {
        let old = SigningSecret::parse(SECRET).unwrap();
        let new = SigningSecret::generate();
        let header = signature_header(&[old.clone(), new.clone()], ID, TS, BODY.as_bytes());
        assert_eq!(header.split(' ').count(), 2);
        let ts = TS.to_string();
        assert!(verify(&[new], headers(ID, &ts, &header), BODY.as_bytes(), TS).is_ok());
        assert!(verify(&[old], headers(ID, &ts, &header), BODY.as_bytes(), TS).is_ok());
    }

    #[test]
    fn refuses_tampering_replays_and_garbage() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let s = std::slice::from_ref(&secret);
        let ts = TS.to_string();
        assert_eq!(
            verify(s, headers(ID, &ts, SIG), b"{}", TS),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            verify(s, headers("msg_other", &ts, SIG), BODY.as_bytes(), TS),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            verify(
                s,
                headers(ID, &ts, SIG),
                BODY.as_bytes(),
                TS + TIMESTAMP_TOLERANCE_SECS + 1
            ),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            verify(s, headers(ID, "x", SIG), BODY.as_bytes(), TS),
            Err(VerifyError::InvalidTimestamp)
        );
        assert_eq!(
            verify(s, headers(ID, &ts, "v1,@@@ v2,abc"), BODY.as_bytes(), TS),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            verify(s, |_| None, BODY.as_bytes(), TS),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
    }

    #[test]
    fn secrets_parse_strictly_and_never_print() {
        assert!(
            SigningSecret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_err(),
            "prefix required"
        );
        assert!(SigningSecret::parse("whsec_!!!").is_err());
        assert!(SigningSecret::parse("whsec_AAAA").is_err(), "too short");
        let s = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(s.expose(), SECRET);
        assert!(!format!("{s:?}").contains("C2FV"));
        let g = SigningSecret::generate();
        assert_eq!(SigningSecret::parse(&g.expose()).unwrap(), g);
    }
}
