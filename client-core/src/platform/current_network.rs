//! Which network the host is on, as [`crate::trusted`] identifies it: the default route's
//! next hop and that neighbour's link-layer address. Linux reads them with iproute2
//! (`ip route show default`, `ip neigh show`); elsewhere there is no identity yet, so no
//! network counts as trusted.

#[cfg(target_os = "linux")]
use std::net::IpAddr;

use crate::trusted::NetworkId;

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
/// The next hop and device of the first (preferred) default route in `ip route show
/// default` output, skipping routes through `skip_dev` (the tunnel) and routes without a
/// next hop.
pub(crate) fn parse_default_route(out: &str, skip_dev: &str) -> Option<(std::net::IpAddr, String)> {
    let mut best: Option<(u32, std::net::IpAddr, String)> = None;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"default") {
            continue;
        }
        let word_after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let (Some(via), Some(dev)) = (word_after("via"), word_after("dev")) else {
            continue;
        };
        // `via inet6 fe80::1` (an IPv6 next hop of an IPv4 route) names the family first.
        let via = if via == "inet6" || via == "inet" {
            let Some(v) = word_after(via) else { continue };
            v
        } else {
            via
        };
        let Ok(gw) = via.parse::<std::net::IpAddr>() else {
            continue;
        };
        if dev == skip_dev {
            continue;
        }
        let metric = word_after("metric")
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if best.as_ref().is_none_or(|(m, _, _)| metric < *m) {
            best = Some((metric, gw, dev.to_owned()));
        }
    }
    best.map(|(_, gw, dev)| (gw, dev))
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
/// The link-layer address `ip neigh show ADDR dev DEV` gives, lower case; none while the
/// neighbour is unresolved (INCOMPLETE, FAILED) or absent.
pub(crate) fn parse_neighbour(out: &str) -> Option<String> {
    let words: Vec<&str> = out.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "lladdr")?;
    let mac = words.get(i + 1)?;
    if words.iter().any(|w| matches!(*w, "FAILED" | "INCOMPLETE")) {
        return None;
    }
    Some(mac.to_ascii_lowercase())
}

/// The network the host is on now, or none without a default route. `tun` is the client's
/// own device (a route through it is not the network's). When the gateway's MAC is not in
/// the neighbour table yet, one datagram to it (the discard port) makes the kernel resolve
/// it, and the table is read again for up to a second; after that the MAC stays empty and
/// the network is untrusted.
#[cfg(target_os = "linux")]
pub fn current_network(tun: &str) -> Option<NetworkId> {
    use std::process::Command;
    let run = |args: &[&str]| -> Option<String> {
        let out = Command::new("ip").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (gateway, dev) = ["-4", "-6"].into_iter().find_map(|family| {
        parse_default_route(&run(&[family, "route", "show", "default"])?, tun)
    })?;
    let gw = gateway.to_string();
    let neighbour = || {
        run(&["neigh", "show", &gw, "dev", &dev])
            .as_deref()
            .and_then(parse_neighbour)
    };
    let mut mac = neighbour();
    if mac.is_none() {
        let bind: std::net::SocketAddr = if gateway.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let target = match gateway {
            // A link-local next hop needs its interface.
            IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {
                let scope = std::fs::read_to_string(format!("/sys/class/net/{dev}/ifindex"))
                    .ok()
                    .and_then(|i| i.trim().parse().ok())
                    .unwrap_or(0);
                std::net::SocketAddr::V6(std::net::SocketAddrV6::new(a, 9, 0, scope))
            }
            a => (a, 9).into(),
        };
        if let Ok(sock) = std::net::UdpSocket::bind(bind) {
            let _ = sock.send_to(&[], target);
        }
        for _ in 0..10 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            mac = neighbour();
            if mac.is_some() {
                break;
            }
        }
    }
    Some(NetworkId {
        gateway,
        mac: mac.unwrap_or_default(),
    })
}

/// No identity outside Linux yet.
#[cfg(not(target_os = "linux"))]
pub fn current_network(_tun: &str) -> Option<NetworkId> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_default_route_is_found() {
        let out = "default via 10.0.0.1 dev wlan0 proto dhcp src 10.0.0.7 metric 600\n\
                   default via 192.168.1.1 dev eth0 proto dhcp metric 100\n";
        assert_eq!(
            parse_default_route(out, "gatehouse-c0"),
            Some(("192.168.1.1".parse().unwrap(), "eth0".into()))
        );
        // The tunnel's own default route and next-hop-less routes are not the network.
        let out = "default dev gatehouse-c0 scope link\ndefault dev ppp0\n\
                   default via fe80::1 dev eth0 proto ra metric 1024 pref medium\n";
        assert_eq!(
            parse_default_route(out, "gatehouse-c0"),
            Some(("fe80::1".parse().unwrap(), "eth0".into()))
        );
        assert_eq!(parse_default_route("", "gatehouse-c0"), None);
        assert_eq!(
            parse_default_route("default via inet6 fe80::1 dev eth0\n", "x"),
            Some(("fe80::1".parse().unwrap(), "eth0".into()))
        );
    }

    #[test]
    fn the_neighbour_mac_is_read_only_when_resolved() {
        assert_eq!(
            parse_neighbour("10.0.0.1 lladdr 02:AB:cd:00:00:01 REACHABLE\n").as_deref(),
            Some("02:ab:cd:00:00:01")
        );
        assert_eq!(
            parse_neighbour("10.0.0.1 lladdr 02:ab:cd:00:00:01 STALE\n").as_deref(),
            Some("02:ab:cd:00:00:01")
        );
        assert_eq!(parse_neighbour("10.0.0.1  INCOMPLETE\n"), None);
        assert_eq!(parse_neighbour("10.0.0.1  FAILED\n"), None);
        assert_eq!(parse_neighbour(""), None);
    }
}
