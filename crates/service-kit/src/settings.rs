//! The settings both services name the same way (`data_dir`, `database_url`,
//! `database_pool_size`, `sqlite_cache_mib`, `max_connections`, `header_timeout`,
//! `shutdown_grace`, `egress_proxy`, `egress_proxy_file`, `egress_no_proxy`): checked and
//! opened here, once.
//!
//! Each service keeps these fields in its own `Config`, at the top level where their keys
//! and environment variables have always been: `#[serde(flatten)]` would share the
//! declarations but not `#[serde(deny_unknown_fields)]`, which the services need to reject a
//! misspelt key. What is shared is what is done with the values: the functions below, and
//! [`service_settings!`](crate::service_settings) to give a `Config` its methods over them.

use std::path::PathBuf;

use figment::Figment;
use serde::de::DeserializeOwned;
use workflow_core::store::Database;

use crate::ConfigError;

/// Extracts a service's `Config` from `figment`, the error naming the bad setting.
///
/// # Errors
///
/// A missing, malformed or unknown setting.
pub fn extract<T: DeserializeOwned>(figment: &Figment) -> Result<T, ConfigError> {
    figment.extract().map_err(|e| ConfigError(e.to_string()))
}

/// The database `database_url` names ([`Database::from_url`]), `default_path` the SQLite file
/// when it is unset.
///
/// # Errors
///
/// An unsupported or malformed `database_url` (the message never shows a password).
pub fn database(
    url: Option<&str>,
    default_path: PathBuf,
    pool_size: usize,
) -> Result<Database, ConfigError> {
    Database::from_url(url, default_path, pool_size)
        .map_err(|e| ConfigError(format!("database_url: {e}")))
}

/// Checks that `database_pool_size` and `sqlite_cache_mib` are at least 1.
///
/// # Errors
///
/// A [`ConfigError`] naming both settings.
pub fn check_store_sizes(pool_size: usize, sqlite_cache_mib: u32) -> Result<(), ConfigError> {
    if pool_size == 0 || sqlite_cache_mib == 0 {
        return Err(ConfigError(
            "database_pool_size and sqlite_cache_mib must be at least 1".into(),
        ));
    }
    Ok(())
}

/// The egress proxy ([`webhook_client::EgressProxy::from_settings`]): `egress_proxy`, else
/// `egress_proxy_file`'s first line (with `egress_no_proxy`, else `NO_PROXY`), else the
/// standard proxy variables, else none.
///
/// # Errors
///
/// An unreadable proxy file, or a proxy URL that is not `http(s)://` or `socks5(h)://` with a
/// host (the password is never in the message).
pub fn egress_proxy(
    url: Option<&str>,
    url_file: Option<&std::path::Path>,
    no_proxy: Option<&str>,
) -> Result<Option<webhook_client::EgressProxy>, ConfigError> {
    webhook_client::EgressProxy::from_settings(url, url_file, no_proxy)
        .map_err(|e| ConfigError(format!("egress_proxy: {e}")))
}

/// Gives a service's `Config` the methods over the settings both services share:
/// `http_limits()`, `egress_proxy()`, `database()`, `database_only(figment)`, and the private
/// `check_store_sizes()` (for its validation) and `shown_database_url()` (for its `Debug`).
///
/// The `Config` must deserialize, and have the fields `data_dir: PathBuf`,
/// `database_url: Option<String>`, `database_pool_size: usize`, `sqlite_cache_mib: u32`,
/// `max_connections: usize`, `header_timeout: Duration`, `shutdown_grace: Duration`,
/// `egress_proxy: Option<String>`, `egress_proxy_file: Option<PathBuf>` and
/// `egress_no_proxy: Option<String>`; `database_file` is the SQLite file in `data_dir` when
/// `database_url` is unset.
///
/// ```
/// # use std::{path::PathBuf, time::Duration};
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config {
///     data_dir: PathBuf,
///     database_url: Option<String>,
///     database_pool_size: usize,
///     sqlite_cache_mib: u32,
///     max_connections: usize,
///     header_timeout: Duration,
///     shutdown_grace: Duration,
///     egress_proxy: Option<String>,
///     egress_proxy_file: Option<PathBuf>,
///     egress_no_proxy: Option<String>,
/// }
/// service_kit::service_settings!(Config, database_file = "app.db");
/// ```
#[macro_export]
macro_rules! service_settings {
    ($config:ty, database_file = $file:expr) => {
        impl $config {
            /// The HTTP listener's limits.
            ///
            /// # Errors
            ///
            /// A `ConfigError` naming `max_connections` or `header_timeout`.
            pub fn http_limits(
                &self,
            ) -> ::std::result::Result<$crate::HttpLimits, $crate::ConfigError> {
                $crate::HttpLimits::new(
                    self.max_connections,
                    self.header_timeout,
                    self.shutdown_grace,
                )
            }

            /// The egress proxy: `egress_proxy`, else `egress_proxy_file`'s (with
            /// `egress_no_proxy`, else `NO_PROXY`), else the standard proxy variables, else
            /// none.
            ///
            /// # Errors
            ///
            /// An unreadable proxy file, or a proxy URL that is not `http(s)://` or
            /// `socks5(h)://` with a host (the password is never in the message).
            pub fn egress_proxy(
                &self,
            ) -> ::std::result::Result<
                ::std::option::Option<$crate::__private::EgressProxy>,
                $crate::ConfigError,
            > {
                $crate::egress_proxy(
                    self.egress_proxy.as_deref(),
                    self.egress_proxy_file.as_deref(),
                    self.egress_no_proxy.as_deref(),
                )
            }

            /// Only the database settings (`data_dir`, `database_url`, `database_pool_size`),
            /// for administrative commands that need nothing else configured.
            ///
            /// # Errors
            ///
            /// A `ConfigError` naming the bad setting.
            pub fn database_only(
                figment: &$crate::__private::Figment,
            ) -> ::std::result::Result<$crate::__private::Database, $crate::ConfigError> {
                $crate::extract::<Self>(figment)?.database()
            }

            /// The database to use.
            ///
            /// # Errors
            ///
            /// An unsupported or malformed `database_url` (the message never shows a
            /// password).
            pub fn database(
                &self,
            ) -> ::std::result::Result<$crate::__private::Database, $crate::ConfigError> {
                $crate::database(
                    self.database_url.as_deref(),
                    self.data_dir.join($file),
                    self.database_pool_size,
                )
            }

            /// Checks `database_pool_size` and `sqlite_cache_mib`.
            #[allow(dead_code)] // a service that checks them otherwise needs no call
            fn check_store_sizes(&self) -> ::std::result::Result<(), $crate::ConfigError> {
                $crate::check_store_sizes(self.database_pool_size, self.sqlite_cache_mib)
            }

            /// `database_url` as `Debug` shows it: without its password.
            #[allow(dead_code)] // a service whose `Debug` leaves the URL out needs no call
            fn shown_database_url(&self) -> ::std::option::Option<::std::string::String> {
                self.database_url
                    .as_deref()
                    .map($crate::__private::redact_database_url)
            }
        }
    };
}
