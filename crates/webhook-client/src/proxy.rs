//! Egress through a proxy, for deliveries that must leave from a fixed address.
//!
//! reqwest on its own reads `HTTP_PROXY`/`HTTPS_PROXY` and then resolves only the proxy's
//! name, so the SSRF guard would see the proxy, never the target. The client therefore turns
//! reqwest's implicit proxies off, takes the proxy only from an [`EgressProxy`], lets the
//! proxy's own name resolve without the guard (the operator chose it), and checks every target
//! itself before handing the request to the proxy (see `WebhookClient`'s docs).

use url::Url;

use crate::error::{Error, Result};

/// Where deliveries go out when not directly: an `http://`, `https://` or `socks5://` proxy
/// (credentials in the URL: `http://user:pass@proxy:3128`), per target scheme, with hosts
/// that bypass it (`NO_PROXY` syntax: `localhost, .internal.example, 10.0.0.0/8`).
#[derive(Clone, PartialEq, Eq)]
pub struct EgressProxy {
    pub(crate) http: Option<Url>,
    pub(crate) https: Option<Url>,
    pub(crate) no_proxy: Option<String>,
}

impl std::fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressProxy")
            .field("http", &self.http.as_ref().map(redact))
            .field("https", &self.https.as_ref().map(redact))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl std::fmt::Display for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.http, &self.https) {
            (Some(a), Some(b)) if a == b => write!(f, "{}", redact(a)),
            (a, b) => write!(
                f,
                "http: {}, https: {}",
                a.as_ref().map_or("direct".into(), redact),
                b.as_ref().map_or("direct".into(), redact)
            ),
        }
    }
}

/// A proxy URL as logs may show it: the password replaced by `***`.
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

fn parse(url: &str) -> Result<Url> {
    let parsed = Url::parse(url.trim())
        .map_err(|_| Error::Build("egress proxy: not a URL (expected http://host:port)".into()))?;
    match parsed.scheme() {
        "http" | "https" | "socks5" | "socks5h" if parsed.host_str().is_some() => Ok(parsed),
        other => Err(Error::Build(format!(
            "egress proxy: scheme {other:?} is not supported (http, https, socks5 or socks5h)"
        ))),
    }
}

impl EgressProxy {
    /// Every delivery, http and https, through `url`.
    ///
    /// # Errors
    ///
    /// [`Error::Build`] for a URL that is not `http(s)://` or `socks5(h)://` with a host.
    pub fn all(url: &str) -> Result<EgressProxy> {
        let url = parse(url)?;
        Ok(EgressProxy {
            http: Some(url.clone()),
            https: Some(url),
            no_proxy: None,
        })
    }

    /// The standard variables, as curl reads them: `HTTPS_PROXY` for https targets,
    /// `HTTP_PROXY` for http ones (lowercase names too; `ALL_PROXY` for either when unset),
    /// `NO_PROXY` for the exceptions. `None` when no proxy variable is set.
    ///
    /// # Errors
    ///
    /// [`Error::Build`] for a variable that holds no usable proxy URL.
    pub fn from_env() -> Result<Option<EgressProxy>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`EgressProxy::from_env`] over any variable source (tests, a config layer).
    ///
    /// # Errors
    ///
    /// As [`EgressProxy::from_env`].
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<EgressProxy>> {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| get(n).filter(|v| !v.trim().is_empty()))
        };
        let all = var(&["ALL_PROXY", "all_proxy"]);
        let http = var(&["HTTP_PROXY", "http_proxy"]).or_else(|| all.clone());
        let https = var(&["HTTPS_PROXY", "https_proxy"]).or(all);
        if http.is_none() && https.is_none() {
            return Ok(None);
        }
        Ok(Some(EgressProxy {
            http: http.as_deref().map(parse).transpose()?,
            https: https.as_deref().map(parse).transpose()?,
            no_proxy: var(&["NO_PROXY", "no_proxy"]),
        }))
    }

    /// A service's proxy setting, in order: `url`; else the first line of `url_file` (so that
    /// credentials in the URL can live in a secret file, not the config or the environment);
    /// else the standard variables ([`EgressProxy::from_env`]). `no_proxy`, when given,
    /// replaces the `NO_PROXY` list (which otherwise applies to a configured proxy too).
    ///
    /// # Errors
    ///
    /// [`Error::Build`]: an unreadable or empty file, or no usable proxy URL (the message names
    /// the setting, never the password).
    pub fn from_settings(
        url: Option<&str>,
        url_file: Option<&std::path::Path>,
        no_proxy: Option<&str>,
    ) -> Result<Option<EgressProxy>> {
        let env_no_proxy = || std::env::var("NO_PROXY").or_else(|_| std::env::var("no_proxy"));
        let from_file = match url_file {
            Some(path) if url.is_none() => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::Build(format!("egress proxy file {}: {e}", path.display()))
                })?;
                let line = text.lines().next().unwrap_or_default().trim().to_owned();
                if line.is_empty() {
                    return Err(Error::Build(format!(
                        "egress proxy file {} is empty",
                        path.display()
                    )));
                }
                Some(line)
            }
            _ => None,
        };
        let proxy = match url.map(str::to_owned).or(from_file) {
            Some(url) => {
                let proxy = EgressProxy::all(&url)?;
                Some(match env_no_proxy() {
                    Ok(list) => proxy.no_proxy(&list),
                    Err(_) => proxy,
                })
            }
            None => EgressProxy::from_env()?,
        };
        Ok(proxy.map(|p| match no_proxy {
            Some(list) => p.no_proxy(list),
            None => p,
        }))
    }

    /// Hosts that bypass the proxy (`NO_PROXY` syntax).
    pub fn no_proxy(mut self, list: &str) -> EgressProxy {
        self.no_proxy = Some(list.to_owned()).filter(|l| !l.trim().is_empty());
        self
    }

    /// The proxy a request to `url` goes through: the scheme's proxy (`wss` counts as https,
    /// `ws` as http) unless the host is in the `NO_PROXY` list. For clients that open their own
    /// connections, such as a WebSocket.
    pub fn for_url(&self, url: &Url) -> Option<&Url> {
        let proxy = match url.scheme() {
            "https" | "wss" => self.https.as_ref(),
            "http" | "ws" => self.http.as_ref(),
            _ => None,
        }?;
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let bypass = self.no_proxy.as_deref().is_some_and(|list| {
            list.split(',')
                .any(|entry| no_proxy_matches(entry.trim(), host))
        });
        (!bypass).then_some(proxy)
    }

    /// The proxies' host names (lowercase), which resolve without the SSRF guard.
    pub(crate) fn hosts(&self) -> Vec<String> {
        [&self.http, &self.https]
            .into_iter()
            .flatten()
            .filter_map(|u| u.host_str().map(str::to_ascii_lowercase))
            .collect()
    }

    /// The reqwest proxies.
    pub(crate) fn reqwest_proxies(&self) -> Result<Vec<reqwest::Proxy>> {
        let no_proxy = || {
            self.no_proxy
                .as_deref()
                .and_then(reqwest::NoProxy::from_string)
        };
        let build = |e: reqwest::Error| Error::Build(format!("egress proxy: {}", e.without_url()));
        let mut out = Vec::new();
        if let Some(u) = &self.http {
            out.push(
                reqwest::Proxy::http(u.as_str())
                    .map_err(build)?
                    .no_proxy(no_proxy()),
            );
        }
        if let Some(u) = &self.https {
            out.push(
                reqwest::Proxy::https(u.as_str())
                    .map_err(build)?
                    .no_proxy(no_proxy()),
            );
        }
        Ok(out)
    }
}

/// One `NO_PROXY` entry against a host: `*`, a domain (itself and its subdomains, with or
/// without a leading dot), an IP address or a CIDR.
fn no_proxy_matches(entry: &str, host: &str) -> bool {
    if entry.is_empty() {
        return false;
    }
    if entry == "*" {
        return true;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return entry.parse::<std::net::IpAddr>().is_ok_and(|e| e == ip)
            || entry
                .parse::<ipnet::IpNet>()
                .is_ok_and(|net| net.contains(&ip));
    }
    let domain = entry.trim_start_matches('.').to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    host == domain || host.ends_with(&format!(".{domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_the_url_then_the_file_and_never_echo_the_password() {
        let dir = std::env::temp_dir().join(format!("egress-proxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("url");
        std::fs::write(&file, "http://ops:s3cret@proxy.internal:3128\nignored\n").unwrap();
        let target = Url::parse("https://hooks.example/x").unwrap();

        let p = EgressProxy::from_settings(None, Some(&file), Some(""))
            .unwrap()
            .unwrap();
        assert_eq!(
            p.for_url(&target).unwrap().host_str(),
            Some("proxy.internal")
        );
        assert!(!p.to_string().contains("s3cret"), "{p}");

        let p = EgressProxy::from_settings(Some("http://first:8080"), Some(&file), Some(""))
            .unwrap()
            .unwrap();
        assert_eq!(p.for_url(&target).unwrap().host_str(), Some("first"));

        let p = EgressProxy::from_settings(None, Some(&file), Some("hooks.example"))
            .unwrap()
            .unwrap();
        assert!(
            p.for_url(&target).is_none(),
            "no_proxy applies to the file's proxy"
        );

        std::fs::write(&file, "  \n").unwrap();
        let e = EgressProxy::from_settings(None, Some(&file), None).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        std::fs::write(&file, "ftp://ops:s3cret@proxy:21").unwrap();
        let e = EgressProxy::from_settings(None, Some(&file), None).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = EgressProxy::from_settings(None, Some(&dir.join("missing")), None).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_proxy_bypasses_domains_addresses_and_ranges() {
        let p = EgressProxy::all("http://proxy:3128")
            .unwrap()
            .no_proxy(" .internal.example, localhost,10.0.0.0/8, ::1");
        let via = |u: &str| p.for_url(&Url::parse(u).unwrap()).is_some();
        assert!(via("wss://wss-open-connection.dingtalk.com/connect"));
        assert!(via("https://example.com/"));
        for direct in [
            "https://a.internal.example/x",
            "https://internal.example/",
            "http://localhost:8080/",
            "ws://10.2.3.4:9000/",
            "http://[::1]:80/",
        ] {
            assert!(!via(direct), "{direct}");
        }
        assert!(via("https://notinternal.example/"));
        let everything = EgressProxy::all("http://proxy:3128").unwrap().no_proxy("*");
        assert!(
            everything
                .for_url(&Url::parse("https://x.y/").unwrap())
                .is_none()
        );
    }

    #[test]
    fn the_variables_are_read_as_curl_reads_them() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(EgressProxy::from_vars(vars(&[])).unwrap(), None);
        let p = EgressProxy::from_vars(vars(&[
            ("https_proxy", "http://user:pw@proxy.internal:3128"),
            ("ALL_PROXY", "socks5://egress:1080"),
            ("NO_PROXY", "localhost,.svc"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(p.https.as_ref().unwrap().host_str(), Some("proxy.internal"));
        assert_eq!(p.http.as_ref().unwrap().scheme(), "socks5");
        assert_eq!(p.no_proxy.as_deref(), Some("localhost,.svc"));
        assert_eq!(p.hosts(), ["egress", "proxy.internal"]);
        let shown = format!("{p} {p:?}");
        assert!(!shown.contains("pw"), "{shown}");
        assert!(shown.contains("user:***@proxy.internal"), "{shown}");
    }

    #[test]
    fn unusable_proxies_are_refused() {
        for bad in ["proxy:3128", "ftp://proxy", "http://", ""] {
            assert!(EgressProxy::all(bad).is_err(), "{bad}");
        }
        assert!(EgressProxy::all("socks5h://127.0.0.1:1080").is_ok());
    }
}
