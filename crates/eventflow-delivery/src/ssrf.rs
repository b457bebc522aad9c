//! The SSRF guard: the addresses a webhook delivery must not reach unless
//! `allow_private_endpoints` is on. Applied to IP literals when an endpoint
//! is saved, and to every resolved address when a delivery connects.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is off limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    Loopback,
    Private,
    LinkLocal,
    /// Cloud metadata services (169.254.169.254, fd00:ec2::254, …).
    Metadata,
    /// 0.0.0.0/8, `::`.
    Unspecified,
    Multicast,
    /// Broadcast, reserved, shared (CGNAT) and other non-public ranges.
    Reserved,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forbidden::Loopback => "loopback",
            Forbidden::Private => "private",
            Forbidden::LinkLocal => "link-local",
            Forbidden::Metadata => "cloud metadata",
            Forbidden::Unspecified => "unspecified",
            Forbidden::Multicast => "multicast",
            Forbidden::Reserved => "reserved",
        })
    }
}

/// `Some(reason)` when a delivery must not connect to `ip`.
pub fn forbidden(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let [a, b, c, _] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Some(Forbidden::Metadata);
    }
    match (a, b, c) {
        (0, _, _) => Some(Forbidden::Unspecified),
        (127, _, _) => Some(Forbidden::Loopback),
        (10, _, _) => Some(Forbidden::Private),
        (172, 16..=31, _) => Some(Forbidden::Private),
        (192, 168, _) => Some(Forbidden::Private),
        (169, 254, _) => Some(Forbidden::LinkLocal),
        // Shared address space (carrier-grade NAT).
        (100, 64..=127, _) => Some(Forbidden::Reserved),
        // IETF protocol assignments, benchmarking, documentation.
        (192, 0, 0) | (192, 0, 2) | (198, 18..=19, _) | (198, 51, 100) | (203, 0, 113) => {
            Some(Forbidden::Reserved)
        }
        (224..=239, _, _) => Some(Forbidden::Multicast),
        (240..=255, _, _) => Some(Forbidden::Reserved),
        _ => None,
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    if ip.is_loopback() {
        return Some(Forbidden::Loopback);
    }
    if ip.is_unspecified() {
        return Some(Forbidden::Unspecified);
    }
    // An IPv4 address in IPv6 clothing is judged as that IPv4 address:
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible), 64:ff9b::/96 (NAT64).
    let seg = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if seg[..6] == [0, 0, 0, 0, 0, 0] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let o = ip.octets();
        return forbidden_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    // 6to4 (2002::/16) embeds an IPv4 address in the next 32 bits.
    if seg[0] == 0x2002 {
        let o = ip.octets();
        return forbidden_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(Forbidden::Metadata);
    }
    match seg[0] {
        0xfc00..=0xfdff => Some(Forbidden::Private),
        0xfe80..=0xfebf => Some(Forbidden::LinkLocal),
        // Deprecated site-local.
        0xfec0..=0xfeff => Some(Forbidden::Private),
        0xff00..=0xffff => Some(Forbidden::Multicast),
        // Documentation.
        0x2001 if seg[1] == 0x0db8 => Some(Forbidden::Reserved),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> Option<Forbidden> {
        forbidden(s.parse().unwrap())
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert_eq!(check(ip), None, "{ip}");
        }
    }

    #[test]
    fn every_non_public_range_is_refused_with_its_reason() {
        let cases = [
            ("127.0.0.1", Forbidden::Loopback),
            ("127.255.255.254", Forbidden::Loopback),
            ("10.0.0.1", Forbidden::Private),
            ("172.16.0.1", Forbidden::Private),
            ("172.31.255.255", Forbidden::Private),
            ("192.168.1.1", Forbidden::Private),
            ("169.254.0.1", Forbidden::LinkLocal),
            ("169.254.169.254", Forbidden::Metadata),
            ("100.100.100.200", Forbidden::Metadata),
            ("0.0.0.0", Forbidden::Unspecified),
            ("100.64.0.1", Forbidden::Reserved),
            ("224.0.0.1", Forbidden::Multicast),
            ("255.255.255.255", Forbidden::Reserved),
            ("::1", Forbidden::Loopback),
            ("::", Forbidden::Unspecified),
            ("fc00::1", Forbidden::Private),
            ("fd12:3456::1", Forbidden::Private),
            ("fe80::1", Forbidden::LinkLocal),
            ("ff02::1", Forbidden::Multicast),
            ("fd00:ec2::254", Forbidden::Metadata),
            ("::ffff:127.0.0.1", Forbidden::Loopback),
            ("::ffff:169.254.169.254", Forbidden::Metadata),
            ("::127.0.0.1", Forbidden::Loopback),
            ("64:ff9b::10.0.0.1", Forbidden::Private),
            ("2002:7f00:1::", Forbidden::Loopback),
            ("2001:db8::1", Forbidden::Reserved),
        ];
        for (ip, reason) in cases {
            assert_eq!(check(ip), Some(reason), "{ip}");
        }
    }
}
