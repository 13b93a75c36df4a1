//! Where providers may connect (against SSRF): a webhook's URL, a test send's address and a
//! provider's endpoint are chosen by tenants, so by default no connection goes to a
//! loopback, private, link-local (cloud metadata at `169.254.169.254`), carrier-grade NAT,
//! unique-local, multicast, documentation or otherwise reserved address. The check is made
//! on the address a name resolves to, when connecting ([`crate`]'s HTTP client resolves
//! through it), so a name that resolves to a private address, or starts to (DNS rebinding),
//! is refused too. Internal targets are allowed only by an explicit list
//! (`[automation] egress_allow`): CIDRs, addresses or host names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The allowlist of internal targets; empty (the default) allows public addresses only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
}

/// An allowlist entry that is neither a CIDR, an address nor a host name.
#[derive(Debug, thiserror::Error)]
#[error("egress_allow entry {0:?}: a CIDR (10.0.0.0/8), an address or a host name")]
pub struct EgressError(pub String);

impl Egress {
    /// The allowlist from its entries: `10.0.0.0/8`, `127.0.0.1`, `::1`, `hooks.internal`.
    pub fn allowing<I, S>(entries: I) -> Result<Self, EgressError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Self::default();
        for e in entries {
            let e = e.as_ref().trim();
            if let Ok(net) = e.parse::<IpNet>() {
                out.nets.push(net.trunc());
            } else if let Ok(ip) = e.trim_matches(['[', ']']).parse::<IpAddr>() {
                out.nets.push(IpNet::from(ip));
            } else {
                let host = e.trim_end_matches('.').to_ascii_lowercase();
                let valid = !host.is_empty()
                    && host.len() <= 253
                    && host.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    return Err(EgressError(e.to_owned()));
                }
                out.hosts.push(host);
            }
        }
        Ok(out)
    }

    /// Whether `host` (a name) is on the list: then whatever it resolves to is allowed.
    pub fn lists_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// Whether `ip` is on the list.
    pub fn lists_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether a connection to `ip` is allowed: a public address, or one on the list.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.lists_ip(ip)
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network"
        || a == 10 // private
        || a == 127 // loopback
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT (100.100.100.200: Alibaba metadata)
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 88 && c == 99) // 6to4 relay
        || (a == 192 && b == 168) // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224) // multicast, reserved, broadcast
}

/// Whether `ip` is a public unicast address (anything else needs the allowlist).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    // IPv4 inside IPv6: NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) carry an IPv4
    // address that is checked as such; 6to4 (2002::/16) too.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] || s[0..6] == [0; 6] {
        let o = ip.octets();
        return public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !((s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254: AWS metadata)
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments, Teredo
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 (RFC 8215)
        || (s[0..4] == [0; 4] && s[4] == 0xffff && s[5] == 0)) // IPv4-translated (RFC 2765)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn internal_addresses_are_refused_unless_listed() {
        for internal in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b:1::a9fe:a9fe",
            "::ffff:0:7f00:1",
        ] {
            assert!(!is_public(ip(internal)), "{internal}");
            assert!(!Egress::default().allows_ip(ip(internal)), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
        let e =
            Egress::allowing(["127.0.0.1", "10.0.0.0/8", "Hooks.Internal.", "::1"]).expect("list");
        assert!(e.allows_ip(ip("127.0.0.1")) && e.allows_ip(ip("::ffff:127.0.0.1")));
        assert!(e.allows_ip(ip("10.9.9.9")) && e.allows_ip(ip("::1")));
        assert!(!e.allows_ip(ip("127.0.0.2")) && !e.allows_ip(ip("169.254.169.254")));
        assert!(e.lists_host("hooks.internal") && !e.lists_host("other.internal"));
        assert!(Egress::allowing(["not a host/"]).is_err());
        assert!(Egress::allowing(["http://x"]).is_err());
    }
}
