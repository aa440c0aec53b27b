//! Configuration layering: defaults < TOML file < environment < command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

/// A setting that is missing, malformed or out of range; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// The layered figment every service loads its settings from: `defaults`, then the TOML file
/// at `file` (if given; it must exist), then each of `env` in order, then `flags` (a clap
/// struct serialised with `skip_serializing_if = "Option::is_none"`, so only the flags given
/// override).
pub fn layered(
    defaults: impl Serialize,
    file: Option<&Path>,
    env: impl IntoIterator<Item = Env>,
    flags: impl Serialize,
) -> Figment {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        figment = figment.merge(Toml::file_exact(path));
    }
    for provider in env {
        figment = figment.merge(provider);
    }
    figment.merge(Serialized::defaults(flags))
}

/// A list given as a TOML array or as one comma-separated string (environment variables and
/// flags can only hold strings). Items are trimmed; empty items are dropped.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let items = match Raw::deserialize(d)? {
            Raw::One(s) => s.split(',').map(str::to_owned).collect(),
            Raw::Many(v) => v,
        };
        Ok(OneOrMany(
            items
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        ))
    }
}

impl std::fmt::Debug for OneOrMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The command-line flags every service takes: where it listens, keeps its data and its tasks,
/// and its administrative subcommands. Flatten it into a service's clap `Cli`
/// (`#[command(flatten)]` and `#[serde(flatten)]`): each flag given overrides the setting of the
/// same name from the file and the environment.
#[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args, Serialize)]
pub struct ServiceFlags {
    /// An administrative task instead of running the service.
    #[cfg(feature = "store")]
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<crate::AdminCommand>,
    /// Address to listen on (the dispatcher's API; the bot's HTTP callback mode).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Data directory: generated secrets and the default SQLite database.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Task database: sqlite://PATH [default: a file in DATA_DIR] or
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE (instances sharing one database).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// PostgreSQL connections per instance.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_pool_size: Option<usize>,
    /// Most open HTTP connections; more are answered 503 and closed [default: 4096].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// How long a connection may take to send a request's headers, from when it opened or
    /// finished its previous request; also the idle keep-alive timeout [default: 10s].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<String>,
    /// Proxy for outgoing calls: http://, https:// or socks5:// (default: HTTPS_PROXY,
    /// HTTP_PROXY, ALL_PROXY).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<String>,
    /// File whose first line is the proxy URL (credentials kept out of flags and env).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_proxy_file: Option<PathBuf>,
    /// Hosts that bypass the proxy, comma-separated (default: NO_PROXY).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_no_proxy: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Settings {
        name: String,
        port: u16,
        keys: OneOrMany,
    }

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    }

    #[test]
    // figment's Jail returns its own large error type; this is its documented test pattern.
    #[allow(clippy::result_large_err)]
    fn precedence_is_defaults_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("s.toml", "name = \"file\"\nport = 1\nkeys = [\"a\", \"b\"]")?;
            jail.set_env("T_NAME", "env");
            jail.set_env("T_PORT", "2");
            let s: Settings = layered(
                Settings::default(),
                Some(Path::new("s.toml")),
                [Env::prefixed("T_")],
                Flags { port: Some(3) },
            )
            .extract()?;
            assert_eq!(s.name, "env");
            assert_eq!(s.port, 3);
            assert_eq!(s.keys, OneOrMany(vec!["a".into(), "b".into()]));
            let s: Settings = layered(
                Settings::default(),
                None,
                [Env::prefixed("T_")],
                Flags { port: None },
            )
            .extract()?;
            assert_eq!(s.port, 2);
            Ok(())
        });
    }

    #[test]
    fn a_list_is_an_array_or_a_comma_separated_string() {
        let one: OneOrMany = serde_json::from_str("\" a, ,b \"").unwrap();
        assert_eq!(one, OneOrMany(vec!["a".into(), "b".into()]));
        let many: OneOrMany = serde_json::from_str("[\"a\", \" \"]").unwrap();
        assert_eq!(many, OneOrMany(vec!["a".into()]));
    }
}
