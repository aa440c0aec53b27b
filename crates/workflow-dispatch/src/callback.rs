//! Callback tokens: how a receiver proves it may report on a task (the closed loop).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use task_package::{FieldError, ValidationErrors};
use webhook_client::SigningSecret;

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

/// The statuses a receiver may report.
pub const CALLBACK_STATUSES: [&str; 4] = ["accepted", "in_progress", "resolved", "rejected"];

/// What a receiver reports on a task: how it ended, and a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackReport {
    /// `accepted`, `in_progress`, `resolved` or `rejected`.
    pub status: String,
    /// Free text (at most 2,000 characters).
    pub note: Option<String>,
}

impl CallbackReport {
    /// The report in a callback body (`{"status": ..., "note": ...}`; other fields ignored).
    ///
    /// # Errors
    ///
    /// Every invalid field: a missing or unknown `status`, a `note` that is not a string of at
    /// most 2,000 characters.
    pub fn from_json(value: &serde_json::Value) -> Result<CallbackReport, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let mut bad = |field: &str, reason: &str| {
            errors.errors.push(FieldError {
                field: field.to_owned(),
                reason: reason.to_owned(),
            });
        };
        let status = match value.get("status") {
            Some(serde_json::Value::String(s)) if CALLBACK_STATUSES.contains(&s.as_str()) => {
                Some(s.clone())
            }
            Some(_) => {
                bad(
                    "status",
                    "expected accepted, in_progress, resolved or rejected",
                );
                None
            }
            None => {
                bad("status", "is required");
                None
            }
        };
        let note = match value.get("note") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s.chars().count() <= 2000 => Some(s.clone()),
            Some(_) => {
                bad("note", "must be a string of at most 2000 characters");
                None
            }
        };
        match status {
            Some(status) if errors.is_empty() => Ok(CallbackReport { status, note }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
