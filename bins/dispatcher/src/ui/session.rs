//! Dashboard sessions: an API key exchanged for a signed, expiring cookie, and CSRF tokens
//! bound to it.
//!
//! The cookie is stateless (`<expiry>.<key id>.<nonce>.<HMAC>`; the nonce makes each login's
//! cookie, and so its CSRF token, its own), so every instance sharing a
//! PostgreSQL database, and a restarted one, accepts it without a session table. Its MAC key
//! is derived from the signing secret (instances already share it); the key id is a short
//! hash of the API key that logged in, so removing that key from `api_keys` ends its sessions
//! at once. Logout clears the cookie in the browser; a copied cookie stays valid until it
//! expires ([`SESSION_TTL`]), which is why the cookie is HttpOnly, SameSite=Strict and, behind
//! https, Secure.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// The session cookie's name.
pub const COOKIE: &str = "dispatcher_ui";

/// Signs and checks session cookies and CSRF tokens.
#[derive(Clone)]
pub struct Sessions {
    mac_key: [u8; 32],
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions { .. }")
    }
}

/// A checked session cookie's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    value: String,
}

impl Session {
    /// The cookie value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

fn key_id(api_key: &str) -> String {
    hex::encode(&Sha256::digest(api_key.as_bytes())[..6])
}

impl Sessions {
    /// Sessions whose MAC key is derived from `secret` (the signing secret's key bytes).
    pub fn new(secret: &[u8]) -> Sessions {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"dispatcher-ui-session-v1");
        Sessions {
            mac_key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.mac_key).expect("32-byte key");
        for p in parts {
            mac.update(p);
            mac.update(b"\n");
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// A new session for `api_key` (already checked) that expires `SESSION_TTL` after `now`.
    pub fn issue(&self, api_key: &str, now: i64) -> Session {
        let nonce: [u8; 12] = rand::random();
        let body = format!(
            "{}.{}.{}",
            now + SESSION_TTL.as_secs() as i64,
            key_id(api_key),
            URL_SAFE_NO_PAD.encode(nonce)
        );
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&[b"session", body.as_bytes()]));
        Session {
            value: format!("{body}.{sig}"),
        }
    }

    /// The session in `value` if its MAC holds, it has not expired at `now`, and the key that
    /// opened it is still one of `api_keys`.
    pub fn check(&self, value: &str, api_keys: &[String], now: i64) -> Option<Session> {
        let (body, sig) = value.rsplit_once('.')?;
        let mut fields = body.split('.');
        let (expiry, id) = (fields.next()?, fields.next()?);
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let expected = self.mac(&[b"session", body.as_bytes()]);
        if !bool::from(expected.ct_eq(&sig)) {
            return None;
        }
        if expiry.parse::<i64>().ok()? <= now {
            return None;
        }
        api_keys.iter().any(|k| key_id(k) == id).then(|| Session {
            value: value.to_owned(),
        })
    }

    /// The CSRF token of `session`: forms carry it, and a request without it changes nothing.
    pub fn csrf(&self, session: &Session) -> String {
        URL_SAFE_NO_PAD.encode(&self.mac(&[b"csrf", session.value.as_bytes()])[..18])
    }

    /// Whether `token` is `session`'s CSRF token (constant time).
    pub fn csrf_matches(&self, session: &Session, token: &str) -> bool {
        bool::from(self.csrf(session).as_bytes().ct_eq(token.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        vec!["alpha".into(), "beta".into()]
    }

    #[test]
    fn a_session_holds_until_it_expires_or_its_key_is_removed() {
        let sessions = Sessions::new(b"secret");
        let s = sessions.issue("beta", 1_000);
        assert_eq!(sessions.check(s.value(), &keys(), 1_001), Some(s.clone()));
        let ttl = SESSION_TTL.as_secs() as i64;
        assert_eq!(sessions.check(s.value(), &keys(), 1_000 + ttl), None);
        assert_eq!(sessions.check(s.value(), &["alpha".into()], 1_001), None);
        // Another secret (another deployment) does not accept it.
        assert_eq!(
            Sessions::new(b"other").check(s.value(), &keys(), 1_001),
            None
        );
    }

    #[test]
    fn a_tampered_cookie_is_refused() {
        let sessions = Sessions::new(b"secret");
        let s = sessions.issue("alpha", 1_000);
        let (body, sig) = s.value().rsplit_once('.').unwrap();
        let rest = body.split_once('.').unwrap().1;
        let later = format!("99999999999.{rest}.{sig}");
        for bad in [
            later.as_str(),
            "",
            "...",
            "1.2",
            &s.value()[..s.value().len() - 1],
        ] {
            assert_eq!(sessions.check(bad, &keys(), 1_001), None, "{bad}");
        }
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let sessions = Sessions::new(b"secret");
        // Two logins with the same key in the same second are two sessions.
        let a = sessions.issue("alpha", 1_000);
        let b = sessions.issue("alpha", 1_000);
        assert_ne!(a, b);
        let token = sessions.csrf(&a);
        assert!(sessions.csrf_matches(&a, &token));
        assert!(!sessions.csrf_matches(&b, &token));
        assert!(!sessions.csrf_matches(&a, ""));
    }
}
