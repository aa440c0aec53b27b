//! Errors of the sender, carrying DingTalk's own `code`, `message` and `requestid`.

use std::fmt;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to DingTalk.
///
/// Never contains the app secret, an access token or a session-webhook URL (the URL carries the
/// session key): transport errors are stripped of their URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (missing credentials, bad base URL, TLS set-up).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The message cannot be sent as built (e.g. an action card with 7 buttons).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// `api.dingtalk.com` answered with its error body `{"code","message","requestid"}`.
    #[error("dingtalk answered {status} {code}: {message} (requestid {request_id})")]
    Api {
        /// HTTP status.
        status: u16,
        /// DingTalk's `code`, e.g. `invalidParameter.userIds.overMax` or
        /// `Forbidden.AccessDenied.QpsLimitForAppkeyAndApi`.
        code: String,
        /// DingTalk's `message`.
        message: String,
        /// DingTalk's `requestid` (or the `x-acs-request-id` header), empty if absent.
        request_id: String,
    },
    /// A session webhook answered `errcode` 300001 ("session 不存在"): it expired. Push through
    /// the OpenAPI instead ([`crate::DingTalkSender::send`]).
    #[error("session webhook expired (errcode 300001)")]
    SessionExpired,
    /// An `oapi` endpoint (session webhook) answered HTTP 200 with a non-zero `errcode`.
    #[error("dingtalk errcode {errcode}: {errmsg}")]
    Webhook {
        /// `errcode`.
        errcode: i64,
        /// `errmsg`.
        errmsg: String,
    },
    /// An answer that is neither a success nor a DingTalk error body (an HTML ban page, a proxy
    /// error, a success body without its fields).
    #[error("unexpected answer (HTTP {status}): {detail}")]
    UnexpectedResponse {
        /// HTTP status.
        status: u16,
        /// What was wrong, with at most 200 characters of the body.
        detail: String,
    },
    /// A one-to-one text could not reach its single user ([`crate::DingTalkSender::send_text_message`]).
    #[error("message not delivered to user {user_id}: {reason}")]
    NotDelivered {
        /// The user.
        user_id: String,
        /// `invalid user`, `filtered` or `flow-controlled`.
        reason: &'static str,
    },
    /// No answer: connection refused, DNS, TLS, timeout, or the body could not be read.
    #[error("request failed ({kind})")]
    Transport {
        /// What kind of failure.
        kind: TransportKind,
        /// The cause, without its URL.
        #[source]
        source: reqwest::Error,
    },
}

/// The kind of a [`Error::Transport`] failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// The request timed out: DingTalk may or may not have processed it.
    Timeout,
    /// The connection could not be made: DingTalk never saw the request.
    Connect,
    /// Anything else (TLS, body read, decode).
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Timeout => "timeout",
            TransportKind::Connect => "connect",
            TransportKind::Other => "other",
        })
    }
}

// === impl Error ===

impl Error {
    pub(crate) fn transport(e: reqwest::Error) -> Error {
        let kind = if e.is_timeout() {
            TransportKind::Timeout
        } else if e.is_connect() {
            TransportKind::Connect
        } else {
            TransportKind::Other
        };
        Error::Transport {
            kind,
            source: e.without_url(),
        }
    }

    /// DingTalk's `code`, for [`Error::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// DingTalk's `requestid`, for [`Error::Api`] (quote it to DingTalk support).
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api { request_id, .. } if !request_id.is_empty() => Some(request_id),
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::UnexpectedResponse { status, .. } => Some(*status),
            Error::SessionExpired | Error::Webhook { .. } => Some(200),
            _ => None,
        }
    }

    /// Throttling: `403 Forbidden.AccessDenied.QpsLimit*`, `400 send.too.fast`,
    /// `send.byToken.tooFast`, `too.many.*`, HTTP 429, or the old APIs' `errcode` 130101 / 90018 /
    /// 90002. Wait (at least a second, says DingTalk) and retry.
    pub fn is_throttled(&self) -> bool {
        match self {
            Error::Api { status, code, .. } => {
                *status == 429
                    || code.contains("QpsLimit")
                    || code == "send.too.fast"
                    || code == "send.byToken.tooFast"
                    || code.starts_with("too.many")
            }
            Error::Webhook { errcode, .. } => matches!(errcode, 130101 | 90018 | 90002),
            Error::UnexpectedResponse { status, .. } => *status == 429,
            _ => false,
        }
    }

    /// The access token was refused (`400 InvalidAuthentication` or 401). The sender refreshes
    /// the token and retries once by itself; seeing this means the fresh token was refused too.
    pub fn is_invalid_token(&self) -> bool {
        match self {
            Error::Api { status, code, .. } => *status == 401 || code == "InvalidAuthentication",
            Error::UnexpectedResponse { status, .. } => *status == 401,
            _ => false,
        }
    }

    /// The session webhook expired (`errcode` 300001): fall back to the OpenAPI push.
    pub fn is_session_expired(&self) -> bool {
        matches!(self, Error::SessionExpired)
    }

    /// The request timed out (it may have been processed).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Error::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        )
    }

    /// Whether the same call may succeed later: throttling, connection failures, timeouts,
    /// 5xx, and `errcode` -1 ("系统繁忙"). `invalidParameter.*`, bad credentials, invalid users
    /// and expired sessions are permanent.
    pub fn is_retryable(&self) -> bool {
        if self.is_throttled() {
            return true;
        }
        match self {
            Error::Transport { kind, .. } => {
                matches!(kind, TransportKind::Timeout | TransportKind::Connect)
            }
            Error::Api { status, code, .. } => *status >= 500 && !code.starts_with("invalid"),
            Error::UnexpectedResponse { status, .. } => *status >= 500,
            Error::Webhook { errcode, .. } => *errcode == -1,
            _ => false,
        }
    }

    /// Retryable without risk of a duplicate message: DingTalk surely did not act on the request
    /// (throttled, never connected, or a gateway 502/503/504). Timeouts are excluded.
    pub(crate) fn is_safe_to_retry(&self) -> bool {
        match self {
            Error::Transport { kind, .. } => *kind == TransportKind::Connect,
            Error::Api { status, .. } | Error::UnexpectedResponse { status, .. }
                if matches!(status, 502..=504) =>
            {
                true
            }
            _ => self.is_throttled(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> Error {
        Error::Api {
            status,
            code: code.to_owned(),
            message: "m".to_owned(),
            request_id: "R".to_owned(),
        }
    }

    #[test]
    fn throttling_codes_are_recognised_and_retryable() {
        for (status, code) in [
            (403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"),
            (403, "Forbidden.AccessDenied.QpsLimitForApi"),
            (400, "send.too.fast"),
            (400, "send.byToken.tooFast"),
            (400, "too.many.people"),
            (429, "whatever"),
        ] {
            let e = api(status, code);
            assert!(e.is_throttled(), "{code}");
            assert!(e.is_retryable(), "{code}");
            assert!(e.is_safe_to_retry(), "{code}");
        }
    }

    #[test]
    fn invalid_parameters_and_permissions_are_permanent() {
        for (status, code) in [
            (400, "invalidParameter.userIds.overMax"),
            (400, "invalidParameter.msgParam.invalid"),
            (403, "Forbidden.AccessDenied.ApiCountLimitForOrg"),
            (400, "invalidClientIdOrSecret"),
        ] {
            let e = api(status, code);
            assert!(!e.is_retryable(), "{code}");
            assert!(!e.is_throttled(), "{code}");
        }
        assert!(!Error::SessionExpired.is_retryable());
        assert!(Error::SessionExpired.is_session_expired());
    }

    #[test]
    fn token_refusal_is_recognised() {
        assert!(api(400, "InvalidAuthentication").is_invalid_token());
        assert!(api(401, "Unauthorized").is_invalid_token());
        assert!(!api(400, "send.too.fast").is_invalid_token());
        assert_eq!(api(400, "x").request_id(), Some("R"));
        assert_eq!(api(400, "x").code(), Some("x"));
    }
}
