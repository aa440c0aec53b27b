//! How a PostgreSQL store connects, and redacting the password from its URL.

use std::str::FromStr;
use std::time::Duration;

use crate::error::StoreError;
use crate::store::StoreResult;

/// How to connect.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?...` (libpq URL or key=value form).
    pub url: String,
    /// Connections in the pool (default 16). Each in-flight store call holds one for the
    /// length of its transaction; the listener has its own connection on top.
    pub pool_size: usize,
    /// How long a call waits for a free pooled connection before failing (default 30 s).
    pub pool_wait: Duration,
    /// Connect timeout of each new connection (default 10 s).
    pub connect_timeout: Duration,
    /// Listen for other instances' `NOTIFY` (default true).
    pub listen: bool,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("pool_wait", &self.pool_wait)
            .field("connect_timeout", &self.connect_timeout)
            .field("listen", &self.listen)
            .finish()
    }
}

impl PostgresConfig {
    /// Defaults for a URL.
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            pool_size: 16,
            pool_wait: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            listen: true,
        }
    }

    /// Checks the URL parses, without connecting (for configuration validation). The error
    /// never shows the password.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] naming what is wrong.
    pub fn validate(&self) -> StoreResult<()> {
        self.pg_config().map(drop)
    }

    pub(super) fn pg_config(&self) -> StoreResult<tokio_postgres::Config> {
        let mut c = tokio_postgres::Config::from_str(&self.url).map_err(|e| {
            StoreError::backend(format!("invalid PostgreSQL URL {}: {e}", redact(&self.url)))
        })?;
        if c.get_connect_timeout().is_none() {
            c.connect_timeout(self.connect_timeout);
        }
        if c.get_application_name().is_none() {
            c.application_name("workflow-core");
        }
        Ok(c)
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // key=value form
        return url
            .split(' ')
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[scheme_end + 3 + at..]
                ),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x?sslmode=disable"),
            "postgres://app:***@db:5432/x?sslmode=disable"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("host=db user=app"), "host=db user=app");
        assert_eq!(
            redact("host=db password=x user=app"),
            "host=db password=*** user=app"
        );
        assert_eq!(redact("postgresql://a:b:c@h/d"), "postgresql://a:***@h/d");
    }

    #[test]
    fn config_debug_never_shows_the_password() {
        let c = PostgresConfig::new("postgres://app:s3cret@db/x");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn bad_urls_are_a_backend_error() {
        let c = PostgresConfig::new("postgres://app:s3cret@db:notaport/x");
        let err = c.pg_config().expect_err("invalid");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
