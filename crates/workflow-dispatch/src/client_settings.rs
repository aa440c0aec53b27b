//! The delivery client from a service's settings ([`ClientSettings`]): the SSRF guard's
//! allowed CIDRs, fixed addresses (`HOST=IP:PORT`, like curl's `--resolve`), the egress proxy,
//! breakers and permanent statuses, checked at load time and built once at start.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use webhook_client::{Classifier, EgressProxy, WebhookClient};

/// What a service configures of its delivery client.
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    /// Total timeout of one delivery attempt.
    pub timeout: Duration,
    /// CIDRs a webhook may target even though they are not public (e.g. `127.0.0.0/8`).
    pub allowed_target_cidrs: Vec<String>,
    /// Fixed addresses for webhook hosts, `HOST=IP:PORT` each. The SSRF guard still checks
    /// the address.
    pub resolve: Vec<String>,
    /// Proxy for every delivery; `None`: direct (or as the client's defaults say).
    pub egress_proxy: Option<EgressProxy>,
    /// How long a target's breaker stays open after it trips (doubling on repeated trips, up
    /// to 20 times this).
    pub breaker_open_wait: Duration,
    /// HTTP statuses never retried.
    pub permanent_statuses: Vec<u16>,
    /// Idle keep-alive connections kept per target host: give it the most deliveries a target
    /// may have in flight, so the connections of a burst are used again instead of closed and
    /// opened anew (with 64 kept and 256 allowed in flight, connecting was 7 % of the
    /// dispatcher's CPU). 0 keeps none.
    pub idle_connections_per_target: usize,
}

/// Why [`ClientSettings`] gave no client.
#[derive(Debug, thiserror::Error)]
pub enum ClientSettingsError {
    /// A setting it cannot use, named as the configuration names it.
    #[error("{0}")]
    Invalid(String),
    /// The HTTP client could not be built.
    #[error("while building the HTTP client")]
    Build(#[source] webhook_client::Error),
}

/// `HOST=IP:PORT` entries parsed: `(host, address)` pairs, hosts lower-cased.
///
/// # Errors
///
/// An entry that is not `HOST=IP:PORT`, named (`resolve: "..." is not HOST=IP:PORT`).
pub fn resolve_overrides(
    entries: &[String],
) -> Result<Vec<(String, SocketAddr)>, ClientSettingsError> {
    entries
        .iter()
        .map(|entry| {
            entry
                .split_once('=')
                .and_then(|(host, addr)| {
                    let host = host.trim().to_ascii_lowercase();
                    let addr = addr.trim().parse().ok()?;
                    (!host.is_empty()).then_some((host, addr))
                })
                .ok_or_else(|| {
                    ClientSettingsError::Invalid(format!("resolve: {entry:?} is not HOST=IP:PORT"))
                })
        })
        .collect()
}

impl ClientSettings {
    /// The allowed CIDRs, parsed.
    ///
    /// # Errors
    ///
    /// One that is not a CIDR (`allowed_target_cidrs: "..." is not a CIDR`).
    pub fn cidrs(&self) -> Result<Vec<IpNet>, ClientSettingsError> {
        self.allowed_target_cidrs
            .iter()
            .map(|cidr| {
                cidr.parse().map_err(|_| {
                    ClientSettingsError::Invalid(format!(
                        "allowed_target_cidrs: {cidr:?} is not a CIDR"
                    ))
                })
            })
            .collect()
    }

    /// Checks the CIDRs and the fixed addresses, without building anything.
    ///
    /// # Errors
    ///
    /// The first bad one, named.
    pub fn check(&self) -> Result<(), ClientSettingsError> {
        self.cidrs()?;
        resolve_overrides(&self.resolve)?;
        Ok(())
    }

    /// The delivery client: SSRF guard (with the allowed CIDRs), fixed addresses, the proxy,
    /// breakers and permanent statuses as configured.
    ///
    /// # Errors
    ///
    /// A bad setting (see [`ClientSettings::check`]), or the HTTP client cannot be built.
    pub fn build(&self) -> Result<WebhookClient, ClientSettingsError> {
        let mut client = WebhookClient::builder()
            .timeout(self.timeout)
            .allow_cidrs(self.cidrs()?);
        for (host, addr) in resolve_overrides(&self.resolve)? {
            client = client.resolve(&host, addr);
        }
        if let Some(proxy) = &self.egress_proxy {
            tracing::info!(%proxy, "deliveries go out through the egress proxy");
            client = client.proxy(proxy.clone());
        }
        client
            .breaker(circuit_breaker::BreakerConfig {
                open_wait: self.breaker_open_wait,
                max_open_wait: self.breaker_open_wait.saturating_mul(20),
                ..circuit_breaker::BreakerConfig::default()
            })
            .classifier(
                Classifier::default()
                    .with_permanent_statuses(self.permanent_statuses.iter().copied()),
            )
            .pool_idle_per_host(self.idle_connections_per_target)
            .build()
            .map_err(ClientSettingsError::Build)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_addresses_parse_and_bad_ones_are_named() {
        let ok = resolve_overrides(&[" Hooks.Example.com = 127.0.0.1:9000".into()]).unwrap();
        assert_eq!(
            ok,
            [(
                "hooks.example.com".to_owned(),
                "127.0.0.1:9000".parse().unwrap()
            )]
        );
        for bad in ["no-equals", "=127.0.0.1:1", "h=not-an-address"] {
            let e = resolve_overrides(&[bad.into()]).unwrap_err().to_string();
            assert!(e.starts_with("resolve:") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn settings_are_checked_then_built() {
        let bad = ClientSettings {
            allowed_target_cidrs: vec!["300.0.0.0/8".into()],
            ..ClientSettings::default()
        };
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("allowed_target_cidrs")
        );
        let good = ClientSettings {
            timeout: Duration::from_secs(5),
            allowed_target_cidrs: vec!["127.0.0.0/8".into()],
            resolve: vec!["hooks.example.com=127.0.0.1:9".into()],
            breaker_open_wait: Duration::from_secs(30),
            permanent_statuses: vec![410],
            ..ClientSettings::default()
        };
        good.check().unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        good.build().unwrap();
    }
}
