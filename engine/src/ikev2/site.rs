//! Site-to-site peers: another gateway (an on-premises VPN device, or another Gatehouse
//! gateway) at the other end of an IKE SA. Unlike remote-access clients they get no virtual
//! address; the CHILD SA carries traffic between two sets of prefixes (traffic selectors),
//! and either end may start it. They authenticate with a pre-shared key (RFC 7296 2.15) or
//! with a certificate of our CA.
//!
//! Policy-based connections use the configured prefixes as traffic selectors; route-based
//! ones use 0.0.0.0/0 on both sides and let the gateway's routing table decide what enters
//! the tunnel. Either way a responder narrows what the initiator proposes to what it is
//! configured for (RFC 7296 2.9).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::proposal::Policy;
use crate::wire::ikev2::{AddressRange, IdPayload, IdType, TrafficSelector};

/// How a site authenticates (and how we authenticate to it).
#[derive(Clone, PartialEq, Eq)]
pub enum SiteAuth {
    /// A pre-shared key, the same on both ends.
    Psk(Vec<u8>),
    /// A certificate of our CA, with the gateway's identity among its names.
    Certificate,
}

impl std::fmt::Debug for SiteAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SiteAuth::Psk(_) => f.write_str("Psk(<hidden>)"),
            SiteAuth::Certificate => f.write_str("Certificate"),
        }
    }
}

/// One configured site-to-site (or VNet-to-VNet) peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePeer {
    /// The connection's name (logs, status).
    pub name: String,
    /// The peer gateway's public address.
    pub remote_addr: IpAddr,
    /// The identity the peer must present (IP address, host name, e-mail or DN text).
    pub remote_id: String,
    /// Our identity towards it (IP address, host name or e-mail). With certificate
    /// authentication it must be a name in our certificate.
    pub local_id: String,
    /// How both ends authenticate.
    pub auth: SiteAuth,
    /// Our side's traffic selectors, either family (0.0.0.0/0, and ::/0 for a dual-stack
    /// connection, when route-based).
    pub local_ts: Vec<IpNet>,
    /// The peer's side's traffic selectors, either family (as `local_ts` when route-based).
    pub remote_ts: Vec<IpNet>,
    /// Algorithms accepted for this peer (IKE and ESP).
    pub policy: Policy,
    /// With a PSK: the peer may authenticate from any source address
    /// (`remote_gateway_any`); otherwise only from `remote_addr`. Certificate peers are
    /// accepted from any address.
    pub any_remote_addr: bool,
}

impl SitePeer {
    /// Whether the peer's identity payload names this site.
    pub fn id_matches(&self, id: &IdPayload<'_>) -> bool {
        id_matches_text(id, &self.remote_id)
    }
}

/// The identity payload for `name`: an IPv4/IPv6 address, an e-mail address (with `@`), or
/// a host name.
pub fn id_for(name: &str) -> (IdType, Vec<u8>) {
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => (IdType::IPV4_ADDR, a.octets().to_vec()),
        Ok(IpAddr::V6(a)) => (IdType::IPV6_ADDR, a.octets().to_vec()),
        Err(_) if name.contains('@') => (IdType::RFC822_ADDR, name.as_bytes().to_vec()),
        Err(_) => (IdType::FQDN, name.as_bytes().to_vec()),
    }
}

/// Whether `id` is the identity written as `want` (addresses compare as addresses, names
/// without regard to case, DNs as their text form).
pub fn id_matches_text(id: &IdPayload<'_>, want: &str) -> bool {
    match id.id_type {
        IdType::IPV4_ADDR => id.ipv4().is_some_and(|a| want.parse::<Ipv4Addr>() == Ok(a)),
        IdType::IPV6_ADDR => <[u8; 16]>::try_from(id.data)
            .is_ok_and(|b| want.parse::<std::net::Ipv6Addr>().map(|a| a.octets()) == Ok(b)),
        IdType::FQDN | IdType::RFC822_ADDR => id.text().is_some_and(|t| {
            t.trim_end_matches('.')
                .eq_ignore_ascii_case(want.trim_end_matches('.'))
        }),
        IdType::DER_ASN1_DN => {
            use x509_parser::prelude::FromDer;
            x509_parser::x509::X509Name::from_der(id.data)
                .is_ok_and(|(_, n)| normalise_dn(&n.to_string()) == normalise_dn(want))
        }
        _ => false,
    }
}

fn normalise_dn(dn: &str) -> String {
    dn.split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

/// Selectors covering exactly `nets` (either family).
pub fn selectors(nets: &[IpNet]) -> Vec<TrafficSelector> {
    nets.iter()
        .map(|n| TrafficSelector::from_net(n.trunc()))
        .collect()
}

/// A selector's range as numbers, with its family (false: IPv4).
fn bounds(r: &AddressRange) -> (bool, u128, u128) {
    match *r {
        AddressRange::V4 { start, end } => (
            false,
            u128::from(u32::from(start)),
            u128::from(u32::from(end)),
        ),
        AddressRange::V6 { start, end } => (true, u128::from(start), u128::from(end)),
    }
}

/// A prefix's range as numbers, with its family (false: IPv4).
fn net_bounds(n: &IpNet) -> (bool, u128, u128) {
    match n {
        IpNet::V4(n) => (
            false,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (true, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// The range `[s, e]` of the family (`v6`) as a selector range.
fn range_of(v6: bool, s: u128, e: u128) -> AddressRange {
    if v6 {
        AddressRange::V6 {
            start: Ipv6Addr::from(s),
            end: Ipv6Addr::from(e),
        }
    } else {
        // IPv4 bounds came from u32s.
        AddressRange::V4 {
            start: Ipv4Addr::from(s as u32),
            end: Ipv4Addr::from(e as u32),
        }
    }
}

/// Narrows the selectors a peer proposed to those we are configured for (RFC 7296 2.9):
/// every non-empty intersection of a proposed range with a configured prefix of the same
/// family, for any protocol and port the proposal allowed. Empty when nothing overlaps
/// (TS_UNACCEPTABLE).
pub fn narrow(proposed: &[TrafficSelector], configured: &[IpNet]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for p in proposed {
        let (pv6, ps, pe) = bounds(&p.range);
        for c in configured {
            let (cv6, cs, ce) = net_bounds(c);
            let (s, e) = (ps.max(cs), pe.min(ce));
            if pv6 != cv6 || s > e {
                continue;
            }
            let ts = TrafficSelector {
                ip_protocol: p.ip_protocol,
                start_port: p.start_port,
                end_port: p.end_port,
                range: range_of(pv6, s, e),
            };
            if !out.contains(&ts) {
                out.push(ts);
            }
        }
    }
    out
}

/// The prefixes a list of selectors covers, IPv4 then IPv6 as listed (ranges that are not
/// prefixes are split into the fewest aligned blocks).
pub fn nets_of(selectors: &[TrafficSelector]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for t in selectors {
        let (v6, mut s, e) = bounds(&t.range);
        let bits: u32 = if v6 { 128 } else { 32 };
        loop {
            // The largest aligned block starting at s that fits in [s, e]: its size is
            // 2^k with k <= trailing zeros of s and s + 2^k - 1 <= e.
            let span = e - s; // size - 1 of the rest
            let fits = |k: u32| {
                if k >= 128 {
                    span == u128::MAX
                } else {
                    (1u128 << k) - 1 <= span
                }
            };
            let mut k = s.trailing_zeros().min(bits);
            while k > 0 && !fits(k) {
                k -= 1;
            }
            let len = (bits - k) as u8;
            let net = if v6 {
                Ipv6Net::new(Ipv6Addr::from(s), len).ok().map(IpNet::V6)
            } else {
                Ipv4Net::new(Ipv4Addr::from(s as u32), len)
                    .ok()
                    .map(IpNet::V4)
            };
            out.extend(net);
            // The block's last address; done when it is the range's.
            let last = if k >= 128 {
                u128::MAX
            } else {
                s + ((1u128 << k) - 1)
            };
            if last >= e {
                break;
            }
            s = last + 1;
        }
    }
    out
}

/// Only the IPv4 prefixes of `nets`.
pub fn v4_only(nets: &[IpNet]) -> Vec<Ipv4Net> {
    nets.iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        })
        .collect()
}

/// An identity payload as text for logs.
pub fn describe_id(id: &IdPayload<'_>) -> String {
    match id.id_type {
        IdType::IPV4_ADDR => id.ipv4().map_or_else(|| "IPv4 ?".into(), |a| a.to_string()),
        IdType::FQDN | IdType::RFC822_ADDR => id.text().unwrap_or("?").to_owned(),
        IdType::DER_ASN1_DN => {
            use x509_parser::prelude::FromDer;
            x509_parser::x509::X509Name::from_der(id.data)
                .map(|(_, n)| n.to_string())
                .unwrap_or_else(|_| "DN ?".into())
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }

    #[test]
    fn narrowing_any_to_configured() {
        let got = narrow(&[TrafficSelector::any_v4()], &[net("10.1.0.0/24")]);
        assert_eq!(got, selectors(&[net("10.1.0.0/24")]));
    }

    #[test]
    fn narrowing_keeps_the_smaller_side() {
        // The peer proposes one host of our prefix: that host.
        let got = narrow(&selectors(&[net("10.1.0.7/32")]), &[net("10.1.0.0/24")]);
        assert_eq!(got, selectors(&[net("10.1.0.7/32")]));
        // Route-based (0/0) configured, the peer proposes its prefixes: those.
        let got = narrow(
            &selectors(&[net("192.168.1.0/24"), net("192.168.2.0/24")]),
            &[net("0.0.0.0/0")],
        );
        assert_eq!(
            got,
            selectors(&[net("192.168.1.0/24"), net("192.168.2.0/24")])
        );
    }

    #[test]
    fn disjoint_selectors_narrow_to_nothing() {
        assert!(narrow(&selectors(&[net("10.2.0.0/16")]), &[net("10.1.0.0/24")]).is_empty());
        assert!(narrow(&[TrafficSelector::any_v6()], &[net("0.0.0.0/0")]).is_empty());
    }

    #[test]
    fn ranges_become_prefixes() {
        assert_eq!(
            nets_of(&[TrafficSelector::any_v4()]),
            vec![net("0.0.0.0/0")]
        );
        let odd = TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            range: AddressRange::V4 {
                start: "10.0.0.1".parse().expect("a"),
                end: "10.0.0.6".parse().expect("a"),
            },
        };
        assert_eq!(
            nets_of(&[odd]),
            vec![
                net("10.0.0.1/32"),
                net("10.0.0.2/31"),
                net("10.0.0.4/31"),
                net("10.0.0.6/32")
            ]
        );
    }

    #[test]
    fn both_families_narrow_each_to_its_own() {
        let configured = [net("0.0.0.0/0"), net("::/0")];
        let proposed = selectors(&[net("192.168.1.0/24"), net("fd00:1::/64")]);
        assert_eq!(narrow(&proposed, &configured), proposed);
        // An IPv4-only configuration keeps only the IPv4 selector.
        assert_eq!(
            narrow(&proposed, &[net("0.0.0.0/0")]),
            selectors(&[net("192.168.1.0/24")])
        );
        // The peer proposes ::/0: narrowed to our IPv6 prefix.
        assert_eq!(
            narrow(
                &[TrafficSelector::any_v4(), TrafficSelector::any_v6()],
                &[net("10.1.0.0/24"), net("fd00:2::/48")]
            ),
            selectors(&[net("10.1.0.0/24"), net("fd00:2::/48")])
        );
        assert!(narrow(&selectors(&[net("fd00:1::/64")]), &[net("fd00:2::/64")]).is_empty());
    }

    #[test]
    fn ipv6_ranges_become_prefixes() {
        assert_eq!(nets_of(&[TrafficSelector::any_v6()]), vec![net("::/0")]);
        let odd = TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            range: AddressRange::V6 {
                start: "fd00::1".parse().expect("a"),
                end: "fd00::6".parse().expect("a"),
            },
        };
        assert_eq!(
            nets_of(&[odd]),
            vec![
                net("fd00::1/128"),
                net("fd00::2/127"),
                net("fd00::4/127"),
                net("fd00::6/128")
            ]
        );
        let top = TrafficSelector::from_net(net("ffff::/16"));
        assert_eq!(nets_of(&[top]), vec![net("ffff::/16")]);
        assert_eq!(
            v4_only(&[net("10.0.0.0/8"), net("fd00::/8")]),
            vec!["10.0.0.0/8".parse::<Ipv4Net>().expect("p")]
        );
    }

    #[test]
    fn identities() {
        let (t, d) = id_for("198.51.100.7");
        assert!(id_matches_text(&IdPayload::new(t, &d), "198.51.100.7"));
        assert!(!id_matches_text(&IdPayload::new(t, &d), "198.51.100.8"));
        let (t, d) = id_for("OnPrem.Example");
        assert_eq!(t, IdType::FQDN);
        assert!(id_matches_text(&IdPayload::new(t, &d), "onprem.example"));
        let (t, d) = id_for("gw@example.com");
        assert_eq!(t, IdType::RFC822_ADDR);
        assert!(id_matches_text(&IdPayload::new(t, &d), "gw@example.com"));
        assert!(!id_matches_text(&IdPayload::new(t, &d), "198.51.100.7"));
    }
}
