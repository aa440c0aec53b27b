//! Errors of the sender, with DingTalk's own `code`, `message` and `requestid`.

/// What went wrong talking to DingTalk. Never contains the app secret or an access token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// DingTalk answered with an error body.
    #[error("dingtalk error {status} {code}: {message} (requestid {request_id})")]
    Api {
        /// HTTP status.
        status: u16,
        /// DingTalk's `code` (e.g. `invalidParameter.userIds.overMax`).
        code: String,
        /// DingTalk's `message`.
        message: String,
        /// DingTalk's `requestid`.
        request_id: String,
    },
    /// A session webhook answered `errcode` 300001: it expired; push through the OpenAPI instead.
    #[error("session webhook expired (errcode 300001)")]
    SessionExpired,
    /// A webhook answered another non-zero `errcode`.
    #[error("dingtalk errcode {errcode}: {errmsg}")]
    Errcode {
        /// `errcode`.
        errcode: i64,
        /// `errmsg`.
        errmsg: String,
    },
    /// No answer, or an unreadable one.
    #[error("request failed: {0}")]
    Transport(String),
}

impl Error {
    /// Throttling (`403 Forbidden.AccessDenied.QpsLimit*`, `send.too.fast`, `too.many.*`, 429,
    /// errcode 130101/90018/90002): retry later.
    pub fn is_throttled(&self) -> bool {
        match self {
            Error::Api { status, code, .. } => {
                *status == 429
                    || code.contains("QpsLimit")
                    || code == "send.too.fast"
                    || code == "send.byToken.tooFast"
                    || code.starts_with("too.many")
            }
            Error::Errcode { errcode, .. } => matches!(errcode, 130101 | 90018 | 90002),
            _ => false,
        }
    }

    /// The access token was refused (`InvalidAuthentication` or 401).
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Api { status: 401, .. })
            || matches!(self, Error::Api { code, .. } if code == "InvalidAuthentication")
    }

    /// The session webhook expired.
    pub fn is_session_expired(&self) -> bool {
        matches!(self, Error::SessionExpired)
    }

    /// Whether trying again later may work (throttling, transport failures, 5xx, `-1` busy).
    pub fn is_retryable(&self) -> bool {
        self.is_throttled()
            || matches!(self, Error::Transport(_))
            || matches!(self, Error::Api { status, .. } if *status >= 500)
            || matches!(self, Error::Errcode { errcode: -1, .. })
    }
}
