//! `remote_gateway` of a `[[connection]]`: an IPv4 address, an IPv6 address (also written
//! `[2001:db8::1]`) or a host name, which the driver resolves (never the engine).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// What `remote_gateway` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteGateway {
    /// An address.
    Addr(IpAddr),
    /// A DNS name, resolved at start (and by `gatehoused check`).
    Name(String),
}

/// Parses `remote_gateway`; the error says what is wrong and what to write.
pub fn parse(text: &str) -> Result<RemoteGateway, String> {
    let t = text.trim();
    let bare = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return check_unicast(ip).map(RemoteGateway::Addr);
    }
    if bare != t || t.contains(':') {
        return Err(format!(
            "{t:?} is not an address: give the peer's public IPv4 or IPv6 address or its DNS name (the port goes in `remote_port`)"
        ));
    }
    if valid_host_name(t) {
        return Ok(RemoteGateway::Name(t.to_ascii_lowercase()));
    }
    Err(format!(
        "{t:?} is neither an IP address nor a DNS name: give the peer's public IPv4 or IPv6 address or its DNS name"
    ))
}

/// Refuses addresses no peer can have.
pub fn check_unicast(ip: IpAddr) -> Result<IpAddr, String> {
    let bad = match ip {
        IpAddr::V4(a) => a.is_unspecified() || a.is_broadcast() || a.is_multicast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    };
    if bad {
        return Err(format!(
            "{ip} is not a unicast address: give the peer's public IPv4 or IPv6 address"
        ));
    }
    // An IPv4-mapped IPv6 address is the IPv4 peer.
    Ok(ip.to_canonical())
}

/// RFC 1123 host names: labels of letters, digits and inner hyphens, not all digits.
fn valid_host_name(t: &str) -> bool {
    let t = t.strip_suffix('.').unwrap_or(t);
    !t.is_empty()
        && t.len() <= 253
        && t.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !t.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// Resolves `name` (blocking: start-up, reload, `gatehoused check`) to the first unicast
/// address the system resolver gives, in its order of preference.
pub fn resolve(name: &str, port: u16) -> Result<IpAddr, String> {
    let addrs: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .map_err(|e| format!("{name:?} does not resolve ({e}): check the name and the host's DNS, or give the peer's address"))?
        .collect();
    addrs
        .iter()
        .find_map(|a| check_unicast(a.ip()).ok())
        .ok_or_else(|| format!("{name:?} resolves to no unicast address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_and_names() {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(parse(" 198.51.100.7 "), Ok(RemoteGateway::Addr(v4)));
        let v6: IpAddr = "2001:db8::1".parse().expect("v6");
        assert_eq!(parse("2001:db8::1"), Ok(RemoteGateway::Addr(v6)));
        assert_eq!(parse("[2001:db8::1]"), Ok(RemoteGateway::Addr(v6)));
        assert_eq!(parse("::ffff:198.51.100.7"), Ok(RemoteGateway::Addr(v4)));
        assert_eq!(
            parse("VPN.Example.net"),
            Ok(RemoteGateway::Name("vpn.example.net".into()))
        );
        assert_eq!(
            parse("vpn-1.example.net."),
            Ok(RemoteGateway::Name("vpn-1.example.net.".into()))
        );
    }

    #[test]
    fn bad_values_are_explained() {
        for (text, says) in [
            ("0.0.0.0", "not a unicast address"),
            ("::", "not a unicast address"),
            ("ff02::1", "not a unicast address"),
            ("255.255.255.255", "not a unicast address"),
            ("198.51.100.7:500", "the port goes in `remote_port`"),
            ("[2001:db8::1]:500", "not an address"),
            ("vpn_east.example", "neither an IP address nor a DNS name"),
            ("-bad.example", "neither"),
            ("1.2.3", "neither"),
            ("", "neither"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn localhost_resolves_to_loopback() {
        let ip = resolve("localhost", 500).expect("localhost resolves");
        assert!(ip.is_loopback(), "{ip}");
        assert_eq!(
            check_unicast(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Ok(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
    }
}
