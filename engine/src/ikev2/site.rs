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

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

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
    /// Our side's traffic selectors (0.0.0.0/0 for route-based).
    pub local_ts: Vec<Ipv4Net>,
    /// The peer's side's traffic selectors (0.0.0.0/0 for route-based).
    pub remote_ts: Vec<Ipv4Net>,
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

/// Selectors covering exactly `nets`.
pub fn selectors(nets: &[Ipv4Net]) -> Vec<TrafficSelector> {
    nets.iter()
        .map(|n| TrafficSelector::from_net(IpNet::V4(n.trunc())))
        .collect()
}

/// Narrows the selectors a peer proposed to those we are configured for (RFC 7296 2.9):
/// every non-empty intersection of a proposed IPv4 range with a configured prefix, for any
/// protocol and port the proposal allowed. Empty when nothing overlaps (TS_UNACCEPTABLE).
pub fn narrow(proposed: &[TrafficSelector], configured: &[Ipv4Net]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for p in proposed {
        let AddressRange::V4 { start, end } = p.range else {
            continue;
        };
        let (ps, pe) = (u32::from(start), u32::from(end));
        for c in configured {
            let (cs, ce) = (u32::from(c.network()), u32::from(c.broadcast()));
            let (s, e) = (ps.max(cs), pe.min(ce));
            if s > e {
                continue;
            }
            let ts = TrafficSelector {
                ip_protocol: p.ip_protocol,
                start_port: p.start_port,
                end_port: p.end_port,
                range: AddressRange::V4 {
                    start: Ipv4Addr::from(s),
                    end: Ipv4Addr::from(e),
                },
            };
            if !out.contains(&ts) {
                out.push(ts);
            }
        }
    }
    out
}

/// The IPv4 prefixes a list of selectors covers (ranges that are not prefixes are split).
pub fn nets_of(selectors: &[TrafficSelector]) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    for t in selectors {
        let AddressRange::V4 { start, end } = t.range else {
            continue;
        };
        let (mut s, e) = (u64::from(u32::from(start)), u64::from(u32::from(end)));
        while s <= e {
            // The largest aligned block starting at s that fits in [s, e].
            let mut len = 32u32;
            while len > 0 {
                let size = 1u64 << (33 - len);
                if s % size != 0 || s + size - 1 > e {
                    break;
                }
                len -= 1;
            }
            let size = 1u64 << (32 - len);
            if let Ok(n) = Ipv4Net::new(Ipv4Addr::from(s as u32), len as u8) {
                out.push(n);
            }
            s += size;
        }
    }
    out
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

    fn net(s: &str) -> Ipv4Net {
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
