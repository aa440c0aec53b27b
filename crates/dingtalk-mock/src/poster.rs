//! The plain-HTTP client the mock POSTs HTTP-mode callbacks with. A leaf module, so the state
//! that owns the client does not depend on the callback logic (which depends on the state).

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A plain-HTTP client (the callback URL is a local bot), on hyper-util so the mock does not
/// need reqwest and TLS.
pub(crate) type Poster = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn poster() -> Poster {
    Client::builder(TokioExecutor::new()).build_http()
}
