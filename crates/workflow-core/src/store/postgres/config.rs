//! How a PostgreSQL store connects: the URL, its TLS parameters (libpq's names, which the
//! driver does not all know, so they are taken out before it parses the rest), and redacting
//! the password from it.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::tls::MakeRustls;
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

    /// Checks the URL parses and its TLS settings can be used, without connecting (for
    /// configuration validation): `sslmode` is known, and the files `sslrootcert`, `sslcert`
    /// and `sslkey` name are read and hold what they should. The error never shows the
    /// password.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] naming the parameter at fault (`URL` when the string itself
    /// does not parse).
    pub fn validate(&self) -> StoreResult<()> {
        self.connector().map(drop)
    }

    /// The driver's configuration and the TLS connector every connection of a store shares
    /// (the pool's and the listener's), built once: the files are read here, not per
    /// connection.
    pub(crate) fn connector(&self) -> StoreResult<(tokio_postgres::Config, MakeRustls)> {
        let (pg, tls) = self.parse()?;
        let connector = MakeRustls::new(&tls)?;
        Ok((pg, connector))
    }

    /// The driver's configuration, and the TLS parameters it does not know (it parses
    /// `sslmode` only as `disable`, `prefer` or `require`, and no file parameter), taken out
    /// of the URL first.
    pub(super) fn parse(&self) -> StoreResult<(tokio_postgres::Config, TlsParams)> {
        let (rest, taken) = split_tls_params(&self.url);
        let mut c = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            // The driver's message is generic ("invalid connection string"); its cause says
            // which part, and neither holds the password.
            StoreError::config(
                "URL",
                format!(
                    "{} ({})",
                    crate::store::batch::error_chain(&e),
                    redact(&self.url)
                ),
            )
        })?;
        let tls = TlsParams::from_pairs(taken)?;
        c.ssl_mode(tls.mode.driver_mode());
        if c.get_connect_timeout().is_none() {
            c.connect_timeout(self.connect_timeout);
        }
        if c.get_application_name().is_none() {
            c.application_name("workflow-core");
        }
        Ok((c, tls))
    }
}

/// libpq's `sslmode` values this store supports (`allow` is not: the driver cannot try a
/// plain connection first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked (unless
    /// `sslrootcert` is given, as libpq does with a root file).
    Prefer,
    /// TLS or nothing; the certificate is not checked, unless `sslrootcert` is given: then
    /// as `VerifyCa` (libpq's rule).
    Require,
    /// TLS; the chain must lead to a trusted root, any host name.
    VerifyCa,
    /// TLS; the chain must lead to a trusted root and name the host connected to.
    VerifyFull,
}

impl SslMode {
    const EXPECTED: &str = "expected disable, prefer, require, verify-ca or verify-full";

    fn parse(value: &str) -> StoreResult<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(StoreError::config(
                    "sslmode",
                    format!("\"allow\" is not supported; {}", SslMode::EXPECTED),
                ));
            }
            other => {
                return Err(StoreError::config(
                    "sslmode",
                    format!("unknown value {other:?}; {}", SslMode::EXPECTED),
                ));
            }
        })
    }

    /// What the driver does: with verification the handshake is required, so a server that
    /// refuses TLS is an error, never a silent plain connection.
    fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// The TLS parameters of a URL, libpq's names: `sslmode` (default `prefer`, as libpq),
/// `sslrootcert`, `sslcert`, `sslkey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsParams {
    pub(crate) mode: SslMode,
    /// Trust exactly these roots (a PEM file) instead of the platform's.
    pub(crate) root_cert: Option<PathBuf>,
    /// The client certificate chain (PEM), with `key`.
    pub(crate) cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub(crate) key: Option<PathBuf>,
}

impl TlsParams {
    fn from_pairs(pairs: Vec<(&'static str, String)>) -> StoreResult<TlsParams> {
        let mut mode = None;
        let (mut root_cert, mut cert, mut key) = (None, None, None);
        // A repeated parameter: the last one counts, as in libpq.
        for (name, value) in pairs {
            let path = (!value.is_empty()).then(|| PathBuf::from(&value));
            match name {
                "sslmode" => mode = Some(SslMode::parse(&value)?),
                "sslrootcert" => root_cert = path,
                "sslcert" => cert = path,
                // The only other name split_tls_params takes.
                _ => key = path,
            }
        }
        match (&cert, &key) {
            (Some(_), None) => {
                return Err(StoreError::config(
                    "sslkey",
                    "sslcert is given without sslkey",
                ));
            }
            (None, Some(_)) => {
                return Err(StoreError::config(
                    "sslcert",
                    "sslkey is given without sslcert",
                ));
            }
            _ => {}
        }
        // libpq 16: `sslrootcert=system` is the platform's roots (our default anyway), makes
        // `verify-full` the default and refuses the modes that would not check the name.
        if root_cert.as_deref() == Some(std::path::Path::new("system")) {
            root_cert = None;
            match mode.get_or_insert(SslMode::VerifyFull) {
                SslMode::VerifyFull => {}
                weak => {
                    return Err(StoreError::config(
                        "sslmode",
                        format!("{weak} may not be used with sslrootcert=system (use verify-full)"),
                    ));
                }
            }
        }
        Ok(TlsParams {
            mode: mode.unwrap_or(SslMode::Prefer),
            root_cert,
            cert,
            key,
        })
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// The parameters taken out of the URL before the driver parses it.
const TLS_PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// `url` without [`TLS_PARAMS`], and their (decoded) values in order. Handles both forms the
/// driver accepts: `postgres://...?k=v&...` (values percent-encoded) and `k=v k='v' ...`
/// (values quoted, backslash escapes). A string that does not tokenise is returned as is, so
/// the driver reports what is wrong with it.
fn split_tls_params(url: &str) -> (String, Vec<(&'static str, String)>) {
    let mut taken = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), taken);
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match TLS_PARAMS.iter().find(|p| **p == key) {
                Some(p) => taken.push((*p, percent_decode(value))),
                None => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, taken);
    }
    let Some(pairs) = key_values(url) else {
        return (url.to_owned(), taken);
    };
    let mut kept = Vec::new();
    for (key, value, raw) in pairs {
        match TLS_PARAMS.iter().find(|p| **p == key) {
            Some(p) => taken.push((*p, value)),
            None => kept.push(raw),
        }
    }
    (kept.join(" "), taken)
}

/// `%XX` decoded; anything else (a bad escape, bytes that are not UTF-8) is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// libpq's `key = value` string as `(key, decoded value, the pair as written)`; `None` when
/// it is malformed.
fn key_values(s: &str) -> Option<Vec<(&str, String, &str)>> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let start = rest;
        let key_end = rest.find(|c: char| c == '=' || c.is_whitespace())?;
        let key = &rest[..key_end];
        rest = rest[key_end..].trim_start().strip_prefix('=')?.trim_start();
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let quoted = rest.starts_with('\'');
        if quoted {
            chars.next();
        }
        let mut end = rest.len();
        let mut closed = !quoted;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next()?.1),
                '\'' if quoted => {
                    end = i + 1;
                    closed = true;
                    break;
                }
                c if !quoted && c.is_whitespace() => {
                    end = i;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            return None;
        }
        let raw_len = start.len() - rest.len() + end;
        out.push((key, value, &start[..raw_len]));
        rest = rest[end..].trim_start();
    }
    Some(out)
}

/// The URL with any password replaced by `***`, for logs and errors: the one in the user
/// part, and a `password` parameter (which the driver accepts in the query too).
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
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let rest = &base[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &base[..scheme_end + 3],
                    &userinfo[..colon],
                    &base[scheme_end + 3 + at..]
                ),
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<&str> = query
            .split('&')
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
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
        assert_eq!(
            redact("postgres://app@db/x?sslmode=require&password=s3cret&user=app"),
            "postgres://app@db/x?sslmode=require&password=***&user=app"
        );
        assert_eq!(redact("postgres://db?x=a@b:c"), "postgres://db?x=a@b:c");
    }

    #[test]
    fn config_debug_never_shows_the_password() {
        let c = PostgresConfig::new("postgres://app:s3cret@db/x");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn bad_urls_are_a_config_error_without_the_password() {
        let c = PostgresConfig::new("postgres://app:s3cret@db:notaport/x");
        let err = c.validate().expect_err("invalid");
        assert!(err.is_config(), "{err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    fn tls(url: &str) -> StoreResult<TlsParams> {
        PostgresConfig::new(url).parse().map(|(_, tls)| tls)
    }

    #[test]
    fn tls_defaults_to_libpq_prefer() {
        let (pg, t) = PostgresConfig::new("postgres://app@db/x").parse().unwrap();
        assert_eq!(t.mode, SslMode::Prefer);
        assert_eq!((t.root_cert, t.cert, t.key), (None, None, None));
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Prefer);
        assert_eq!(tls("host=db user=app").unwrap().mode, SslMode::Prefer);
    }

    #[test]
    fn libpq_tls_parameters_are_taken_out_of_the_url() {
        let url = "postgres://app:pw@db:5433/x?application_name=a&sslmode=verify-full\
                   &sslrootcert=%2Fetc%2Fca.pem&sslcert=/c.pem&sslkey=/k.pem&connect_timeout=3";
        let (pg, t) = PostgresConfig::new(url).parse().unwrap();
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(
            t.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(t.cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(t.key.as_deref(), Some(std::path::Path::new("/k.pem")));
        // Verification needs the handshake: the driver must not fall back to plain.
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(pg.get_application_name(), Some("a"));
        assert_eq!(pg.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(pg.get_ports(), &[5433]);

        let kv = "host=db sslmode = verify-ca sslrootcert='/etc/my ca.pem' user=app";
        let (pg, t) = PostgresConfig::new(kv).parse().unwrap();
        assert_eq!(t.mode, SslMode::VerifyCa);
        assert_eq!(
            t.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/my ca.pem"))
        );
        assert_eq!(pg.get_user(), Some("app"));
    }

    #[test]
    fn every_mode_maps_to_the_driver() {
        use tokio_postgres::config::SslMode as Driver;
        for (value, mode, driver) in [
            ("disable", SslMode::Disable, Driver::Disable),
            ("prefer", SslMode::Prefer, Driver::Prefer),
            ("require", SslMode::Require, Driver::Require),
            ("verify-ca", SslMode::VerifyCa, Driver::Require),
            ("verify-full", SslMode::VerifyFull, Driver::Require),
        ] {
            let (pg, t) = PostgresConfig::new(format!("postgres://db/x?sslmode={value}"))
                .parse()
                .unwrap();
            assert_eq!((t.mode, pg.get_ssl_mode()), (mode, driver), "{value}");
            assert_eq!(mode.to_string(), value);
        }
    }

    #[test]
    fn an_unknown_sslmode_is_refused_naming_it() {
        for url in [
            "postgres://app:s3cret@db/x?sslmode=verify-hostname",
            "host=db password=s3cret sslmode=verify-hostname",
        ] {
            let err = PostgresConfig::new(url).validate().unwrap_err();
            assert!(err.is_config(), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("sslmode") && msg.contains("verify-hostname"),
                "{msg}"
            );
            assert!(!msg.contains("s3cret"), "{msg}");
        }
        let err = tls("postgres://db/x?sslmode=allow").unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
    }

    #[test]
    fn an_unreadable_tls_file_is_refused_naming_the_parameter() {
        let missing = "/nonexistent/workflow-core-test/ca.pem";
        for (param, url) in [
            (
                "sslrootcert",
                format!("postgres://db/x?sslmode=verify-full&sslrootcert={missing}"),
            ),
            (
                "sslcert",
                format!("postgres://db/x?sslmode=require&sslcert={missing}&sslkey={missing}"),
            ),
        ] {
            let err = PostgresConfig::new(url).validate().unwrap_err();
            match &err {
                StoreError::Config { parameter, message } => {
                    assert_eq!(parameter, param);
                    assert!(message.contains(missing), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let url = format!(
            "postgres://db/x?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        );
        let err = PostgresConfig::new(url).validate().unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        // With TLS off nothing is read, as in libpq.
        let url = format!("postgres://db/x?sslmode=disable&sslrootcert={missing}");
        PostgresConfig::new(url).validate().unwrap();
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_the_key_its_certificate() {
        let err = tls("postgres://db/x?sslcert=/c.pem").unwrap_err();
        assert!(matches!(&err, StoreError::Config { parameter, .. } if parameter == "sslkey"));
        let err = tls("postgres://db/x?sslkey=/k.pem").unwrap_err();
        assert!(matches!(&err, StoreError::Config { parameter, .. } if parameter == "sslcert"));
    }

    #[test]
    fn sslrootcert_system_means_the_platform_roots_and_verify_full() {
        let t = tls("postgres://db/x?sslrootcert=system").unwrap();
        assert_eq!((t.mode, t.root_cert), (SslMode::VerifyFull, None));
        let err = tls("postgres://db/x?sslrootcert=system&sslmode=require").unwrap_err();
        assert!(err.to_string().contains("verify-full"), "{err}");
    }

    #[test]
    fn tls_settings_build_without_a_process_default_provider() {
        for mode in ["prefer", "require", "verify-ca", "verify-full"] {
            PostgresConfig::new(format!("postgres://db/x?sslmode={mode}"))
                .validate()
                .unwrap();
        }
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }

    #[test]
    fn redaction_still_hides_the_password_with_tls_parameters() {
        let url = "postgres://app:s3cret@db/x?sslmode=verify-full&sslrootcert=/ca.pem";
        assert_eq!(
            redact(url),
            "postgres://app:***@db/x?sslmode=verify-full&sslrootcert=/ca.pem"
        );
        let c = PostgresConfig::new(url);
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
