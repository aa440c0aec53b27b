//! Authentication: API keys for clients (`Authorization: Bearer <key>`) and per-task callback
//! tokens for receivers. Both compare in constant time.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use webhook_client::SigningSecret;

use crate::AppState;
use crate::error::ApiError;

/// Checks a presented API key against the accepted ones in constant time (both sides hashed
/// first, so lengths leak nothing either, and every key is compared).
pub fn key_matches(presented: &str, keys: &[String]) -> bool {
    let p = Sha256::digest(presented.as_bytes());
    keys.iter().fold(false, |found, k| {
        found | bool::from(Sha256::digest(k.as_bytes()).ct_eq(&p))
    })
}

/// Proof that the request carried an accepted API key; handlers take it as their first argument.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiKey;

impl FromRequestParts<AppState> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <api key>"))?;
        let (scheme, key) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::unauthorized(
                "Authorization must be Bearer <api key>",
            ));
        }
        if key_matches(key.trim(), &state.api_keys) {
            Ok(ApiKey)
        } else {
            Err(ApiError::unauthorized("invalid API key"))
        }
    }
}

/// Derives per-task callback tokens: an HMAC-SHA256 of the task id under a key derived from the
/// signing secret, so there is nothing to store and nothing to look up.
///
/// Rotating the first signing secret changes every token; receivers holding an old package
/// then get 401 for its callback.
#[derive(Clone)]
pub struct CallbackTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for CallbackTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackTokens(<redacted>)")
    }
}

impl CallbackTokens {
    /// Tokens keyed from `secret` (domain-separated, so a token never equals a signature).
    pub fn new(secret: &SigningSecret) -> CallbackTokens {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.key_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(b"dispatcher callback token v1");
        CallbackTokens {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// The token of `task_id` (43 characters of base64url).
    pub fn token(&self, task_id: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(task_id.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `token` is `task_id`'s (constant-time).
    pub fn verify(&self, task_id: &str, token: &str) -> bool {
        self.token(task_id)
            .as_bytes()
            .ct_eq(token.trim().as_bytes())
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        let keys = vec!["alpha".to_owned(), "beta".to_owned()];
        assert!(key_matches("beta", &keys));
        assert!(!key_matches("bet", &keys));
        assert!(!key_matches("betaa", &keys));
        assert!(!key_matches("", &keys));
        assert!(!key_matches("alpha", &[]));
    }

    #[test]
    fn callback_tokens_are_per_task_and_per_secret() {
        let t = CallbackTokens::new(&SigningSecret::generate());
        let tok = t.token("wf_1_aaaaaaaa");
        assert_eq!(tok.len(), 43);
        assert!(t.verify("wf_1_aaaaaaaa", &tok));
        assert!(!t.verify("wf_1_bbbbbbbb", &tok));
        assert!(!t.verify("wf_1_aaaaaaaa", "nope"));
        let other = CallbackTokens::new(&SigningSecret::generate());
        assert!(!other.verify("wf_1_aaaaaaaa", &tok));
    }
}
