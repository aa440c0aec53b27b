//! Authentication of API clients (`Authorization: Bearer <key>`), compared in constant time.
//! Receivers' callback tokens are `workflow_dispatch::CallbackTokens`.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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
}
