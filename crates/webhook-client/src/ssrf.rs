//! The SSRF guard: which addresses a webhook may reach.
//!
//! Checked at connect time by a DNS resolver plugged into the HTTP connector, so pooling keeps
//! working and DNS rebinding (a name that resolves to a public address when checked and to a
//! private one when connecting) cannot bypass it. Literal IPs in URLs skip DNS, so they are
//! checked before sending.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses are refused, and the CIDRs that open them again.
#[derive(Debug, Clone, Default)]
pub struct SsrfPolicy {
    enabled: bool,
    allow: Vec<IpNet>,
}

impl SsrfPolicy {
    /// A guard refusing every non-public address, except inside `allow`.
    pub fn new(enabled: bool, allow: Vec<IpNet>) -> SsrfPolicy {
        SsrfPolicy { enabled, allow }
    }

    /// Whether `ip` may be connected to. The allowlist also matches the IPv4-mapped IPv6 form
    /// of an allowed IPv4 address (`::ffff:127.0.0.1` is `127.0.0.1`).
    pub fn permits(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        !self.enabled
            || self
                .allow
                .iter()
                .any(|n| n.contains(&ip) || n.contains(&canonical))
            || !is_non_public(ip)
    }
}

/// Whether `ip` is loopback, private, link-local, CGNAT, multicast, broadcast, documentation,
/// benchmarking, reserved, unspecified or cloud metadata, or an IPv6 form of one of those
/// (IPv4-mapped, IPv4-compatible, NAT64, 6to4).
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || a >= 240 // reserved
}

fn non_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    // IPv4-compatible ::a.b.c.d (deprecated) and NAT64 64:ff9b::/96 embed an IPv4 address.
    let embedded = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return non_public_v4(embedded);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return non_public_v4(embedded);
    }
    // 6to4 2002:a.b.c.d::/48.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return non_public_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (incl. fd00:ec2::254 metadata)
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x2001 && seg[1] == 0) // Teredo tunnels to arbitrary IPv4
}

/// Every resolved address was refused by the guard.
#[derive(Debug, Clone, thiserror::Error)]
#[error("target address is not allowed (non-public address; see the SSRF allowlist)")]
pub struct BlockedAddress;

/// A resolver that drops refused addresses and fails if none is left.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub(crate) policy: Arc<SsrfPolicy>,
    /// Fixed addresses by lowercase host name, checked like resolved ones.
    pub(crate) overrides: Arc<std::collections::HashMap<String, Vec<SocketAddr>>>,
    /// Lowercase names that resolve without the guard: the egress proxies, which the operator
    /// chose (often on a private address).
    pub(crate) trusted: Arc<std::collections::HashSet<String>>,
}

/// Why a target was not handed to the proxy.
#[derive(Debug)]
pub(crate) enum TargetCheck {
    /// One of its addresses is refused by the guard.
    Blocked,
    /// Its name did not resolve here.
    Lookup(std::io::Error),
}

impl GuardedResolver {
    /// For a delivery through a proxy, which resolves the name itself: every address `host`
    /// has must be permitted (connecting directly, the refused ones would only be skipped).
    pub(crate) async fn check_every_address(&self, host: &str) -> Result<(), TargetCheck> {
        let addrs: Vec<SocketAddr> = match self.overrides.get(&host.to_ascii_lowercase()) {
            Some(fixed) => fixed.clone(),
            None => tokio::net::lookup_host((host, 0))
                .await
                .map_err(TargetCheck::Lookup)?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(TargetCheck::Lookup(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            )));
        }
        if addrs.iter().all(|a| self.policy.permits(a.ip())) {
            Ok(())
        } else {
            Err(TargetCheck::Blocked)
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let trusted = self.trusted.contains(&host.to_ascii_lowercase());
        let policy = if trusted {
            Arc::new(SsrfPolicy::new(false, Vec::new()))
        } else {
            self.policy.clone()
        };
        let fixed = self.overrides.get(&host.to_ascii_lowercase()).cloned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match fixed {
                Some(addrs) => addrs,
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(BlockedAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_every_non_public_range() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "0.0.0.0",
            "0.1.2.3",
            "198.18.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
            "2001:0:1::1",
        ] {
            assert!(is_non_public(ip(s)), "{s} should be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!is_non_public(ip(s)), "{s} should be allowed");
        }
    }

    #[test]
    fn allowlist_opens_a_range_and_disabled_guard_allows_all() {
        let p = SsrfPolicy::new(true, vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(p.permits(ip("127.0.0.1")));
        assert!(
            p.permits(ip("::ffff:127.0.0.1")),
            "mapped form of an allowed address"
        );
        assert!(!p.permits(ip("::1")));
        assert!(!p.permits(ip("10.0.0.1")));
        assert!(SsrfPolicy::new(false, vec![]).permits(ip("10.0.0.1")));
    }
}
