//! SSRF guard: which addresses a merchant callback may connect to.
//!
//! Two places enforce it, because reqwest only asks a resolver for names: IP-literal URLs are
//! checked before anything is sent ([`AddressPolicy::check_url`]), and names go through
//! [`GuardedResolver`], which drops every address the policy refuses, so the connection can
//! only be made to an address that was checked (a name that re-resolves to a private address
//! later, DNS rebinding, is filtered again on that connection).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// Cloud instance metadata (169.254.169.254, fd00:ec2::254): refused even for merchants
    /// allowed on private networks, since no merchant lives there and it hands out credentials.
    Metadata,
    Loopback,
    /// RFC 1918 and IPv6 unique-local (fc00::/7).
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10 (carrier-grade NAT; Alibaba Cloud's metadata 100.100.100.200 is in it).
    SharedAddressSpace,
    Unspecified,
    Broadcast,
    Multicast,
    /// "This network" 0/8, IETF 192.0.0/24, benchmarking 198.18/15, reserved 240/4,
    /// documentation ranges: nothing a merchant can be reached at.
    Reserved,
}

impl Forbidden {
    fn as_str(self) -> &'static str {
        match self {
            Forbidden::Metadata => "cloud metadata",
            Forbidden::Loopback => "loopback",
            Forbidden::Private => "private",
            Forbidden::LinkLocal => "link-local",
            Forbidden::SharedAddressSpace => "shared address space (100.64/10)",
            Forbidden::Unspecified => "unspecified",
            Forbidden::Broadcast => "broadcast",
            Forbidden::Multicast => "multicast",
            Forbidden::Reserved => "reserved",
        }
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// The class of `ip` that callbacks must not reach, or `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let [a, b, c, _] = ip.octets();
    Some(if ip == METADATA_V4 {
        Forbidden::Metadata
    } else if ip.is_unspecified() {
        Forbidden::Unspecified
    } else if ip.is_broadcast() {
        Forbidden::Broadcast
    } else if ip.is_loopback() {
        Forbidden::Loopback
    } else if ip.is_private() {
        Forbidden::Private
    } else if ip.is_link_local() {
        Forbidden::LinkLocal
    } else if a == 100 && (b & 0xc0) == 64 {
        Forbidden::SharedAddressSpace
    } else if ip.is_multicast() {
        Forbidden::Multicast
    } else if a == 0
        || a >= 240
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b & 0xfe) == 18)
        || ip.is_documentation()
    {
        Forbidden::Reserved
    } else {
        return None;
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    // IPv4 carried in IPv6 (mapped ::ffff:a.b.c.d and NAT64 64:ff9b::a.b.c.d) reaches the
    // IPv4 address: judge that one.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let seg = ip.segments();
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    Some(if ip == METADATA_V6 {
        Forbidden::Metadata
    } else if ip.is_unspecified() {
        Forbidden::Unspecified
    } else if ip.is_loopback() {
        Forbidden::Loopback
    } else if ip.is_unique_local() {
        Forbidden::Private
    } else if ip.is_unicast_link_local() {
        Forbidden::LinkLocal
    } else if ip.is_multicast() {
        Forbidden::Multicast
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        Forbidden::Reserved
    } else {
        return None;
    })
}

/// A merchant's network policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddressPolicy {
    /// Loopback, private, link-local and the other non-public ranges are allowed (dev and test
    /// configs, or a merchant on a private line). Metadata addresses stay refused.
    pub allow_private_network: bool,
}

impl AddressPolicy {
    pub fn check(&self, ip: IpAddr) -> Result<(), Forbidden> {
        match classify(ip) {
            None => Ok(()),
            Some(Forbidden::Metadata) => Err(Forbidden::Metadata),
            Some(_) if self.allow_private_network => Ok(()),
            Some(why) => Err(why),
        }
    }

    /// Checks a URL whose host is an IP literal (the resolver never sees those); names pass
    /// here and are checked when resolved.
    pub fn check_url(&self, url: &url::Url) -> Result<(), AddressNotAllowed> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        self.check(ip).map_err(|why| AddressNotAllowed {
            host: ip.to_string(),
            refused: vec![(ip, why)],
        })
    }
}

/// A delivery refused because its host is (or resolves only to) addresses the merchant may
/// not reach. Kept as a distinct error so the deliverer can recognise it in reqwest's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressNotAllowed {
    pub host: String,
    pub refused: Vec<(IpAddr, Forbidden)>,
}

impl fmt::Display for AddressNotAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "address not allowed: {}", self.host)?;
        match self.refused.as_slice() {
            [] => f.write_str(" has no address"),
            // An IP literal: say what it is.
            [(ip, why)] if ip.to_string() == self.host => write!(f, " is {why}"),
            refused => {
                f.write_str(" resolves to ")?;
                for (i, (ip, why)) in refused.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{ip} ({why})")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for AddressNotAllowed {}

/// A reqwest resolver that resolves with the system resolver and keeps only the addresses
/// the policy allows. `trusted_host` (the merchant's configured proxy) is exempt: the proxy is
/// operator configuration, and through it the target is resolved by the proxy, not here.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: AddressPolicy,
    trusted_host: Option<String>,
}

impl GuardedResolver {
    pub fn new(policy: AddressPolicy, trusted_host: Option<String>) -> Self {
        GuardedResolver {
            policy,
            trusted_host: trusted_host.map(|h| h.to_ascii_lowercase()),
        }
    }

    /// Keeps the allowed addresses; refuses when none is left.
    pub fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, AddressNotAllowed> {
        let trusted = self
            .trusted_host
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(host));
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        for addr in addrs {
            match self.policy.check(addr.ip()) {
                Err(why) if !trusted => refused.push((addr.ip(), why)),
                _ => kept.push(addr),
            }
        }
        if kept.is_empty() {
            return Err(AddressNotAllowed {
                host: host.to_string(),
                refused,
            });
        }
        Ok(kept)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            // Port 0: reqwest puts the URL's port on the addresses it gets back.
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept = this.filter(&host, resolved)?;
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
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
    fn classifies_the_ranges_callbacks_must_not_reach() {
        for (addr, want) in [
            ("127.0.0.1", Forbidden::Loopback),
            ("127.255.0.9", Forbidden::Loopback),
            ("::1", Forbidden::Loopback),
            ("10.1.2.3", Forbidden::Private),
            ("172.16.0.1", Forbidden::Private),
            ("172.31.255.255", Forbidden::Private),
            ("192.168.1.1", Forbidden::Private),
            ("fc00::1", Forbidden::Private),
            ("fd12:3456::1", Forbidden::Private),
            ("169.254.1.1", Forbidden::LinkLocal),
            ("fe80::1", Forbidden::LinkLocal),
            ("169.254.169.254", Forbidden::Metadata),
            ("fd00:ec2::254", Forbidden::Metadata),
            ("100.64.0.1", Forbidden::SharedAddressSpace),
            ("100.100.100.200", Forbidden::SharedAddressSpace),
            ("100.127.255.255", Forbidden::SharedAddressSpace),
            ("0.0.0.0", Forbidden::Unspecified),
            ("::", Forbidden::Unspecified),
            ("255.255.255.255", Forbidden::Broadcast),
            ("224.0.0.1", Forbidden::Multicast),
            ("ff02::1", Forbidden::Multicast),
            ("0.1.2.3", Forbidden::Reserved),
            ("240.0.0.1", Forbidden::Reserved),
            ("198.18.0.1", Forbidden::Reserved),
            ("192.0.2.1", Forbidden::Reserved),
            // IPv4 inside IPv6 is judged as the IPv4 address it reaches.
            ("::ffff:127.0.0.1", Forbidden::Loopback),
            ("::ffff:169.254.169.254", Forbidden::Metadata),
            ("64:ff9b::10.0.0.1", Forbidden::Private),
        ] {
            assert_eq!(classify(ip(addr)), Some(want), "{addr}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "11.0.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert_eq!(classify(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn private_networks_only_when_allowed_and_metadata_never() {
        let strict = AddressPolicy::default();
        let open = AddressPolicy {
            allow_private_network: true,
        };
        assert_eq!(strict.check(ip("127.0.0.1")), Err(Forbidden::Loopback));
        assert_eq!(open.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(open.check(ip("10.0.0.1")), Ok(()));
        assert_eq!(
            strict.check(ip("169.254.169.254")),
            Err(Forbidden::Metadata)
        );
        assert_eq!(open.check(ip("169.254.169.254")), Err(Forbidden::Metadata));
        assert_eq!(open.check(ip("fd00:ec2::254")), Err(Forbidden::Metadata));
        assert_eq!(strict.check(ip("93.184.216.34")), Ok(()));
    }

    #[test]
    fn ip_literal_urls_are_checked_up_front_and_names_are_left_to_the_resolver() {
        let strict = AddressPolicy::default();
        let url = |s: &str| url::Url::parse(s).unwrap();
        let err = strict
            .check_url(&url("http://127.0.0.1:8080/notify"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "address not allowed: 127.0.0.1 is loopback"
        );
        let err = strict
            .check_url(&url("http://169.254.169.254/latest/meta-data"))
            .unwrap_err();
        assert!(err.to_string().contains("cloud metadata"), "{err}");
        assert!(strict.check_url(&url("https://[::1]/x")).is_err());
        // WHATWG URL parsing turns these spellings into the IPv4 address they mean.
        assert!(strict.check_url(&url("http://2130706433/x")).is_err());
        assert!(strict.check_url(&url("http://0x7f.1/x")).is_err());
        assert!(strict.check_url(&url("https://8.8.8.8/x")).is_ok());
        assert!(strict.check_url(&url("https://localhost/x")).is_ok());
    }

    #[test]
    fn the_resolver_keeps_only_allowed_addresses() {
        let strict = GuardedResolver::new(AddressPolicy::default(), None);
        let sa = |s: &str| SocketAddr::new(ip(s), 0);
        let kept = strict
            .filter("mixed.example", [sa("10.0.0.1"), sa("93.184.216.34")])
            .unwrap();
        assert_eq!(kept, vec![sa("93.184.216.34")]);
        let err = strict
            .filter("rebind.example", [sa("127.0.0.1"), sa("169.254.169.254")])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "address not allowed: rebind.example resolves to 127.0.0.1 (loopback), \
             169.254.169.254 (cloud metadata)"
        );
        // The configured proxy is trusted even on a private address.
        let proxied = GuardedResolver::new(AddressPolicy::default(), Some("Proxy.Internal".into()));
        assert_eq!(
            proxied.filter("proxy.internal", [sa("10.0.0.5")]).unwrap(),
            vec![sa("10.0.0.5")]
        );
        assert!(proxied.filter("other.internal", [sa("10.0.0.5")]).is_err());
    }

    #[tokio::test]
    async fn resolving_localhost_is_refused_unless_allowed() {
        let name: Name = "localhost".parse().unwrap();
        let strict = GuardedResolver::new(AddressPolicy::default(), None);
        let err = strict.resolve(name).await.err().expect("refused");
        let err = err.downcast::<AddressNotAllowed>().expect("our error");
        assert!(err.to_string().contains("loopback"), "{err}");
        let open = GuardedResolver::new(
            AddressPolicy {
                allow_private_network: true,
            },
            None,
        );
        let addrs: Vec<_> = open
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert!(!addrs.is_empty());
    }
}
