//! The kill switch: while a profile with `kill_switch` is connected or reconnecting, nothing
//! leaves the host but the tunnel, the gateway's own address and ports (to (re)connect),
//! DHCP and loopback; DNS only through the tunnel (to its pushed servers once known); no IPv6
//! at all but neighbour discovery (tunnels carry IPv4 only today).
//!
//! On Linux it is one nftables table of our own, `inet gatehouse_ks`, replaced atomically
//! with `nft -f -`. It is deliberately *not* in the change journal that a crashed run's
//! successor undoes: the table is kernel state that outlives the service, so a SIGKILL or
//! an upgrade keeps the host closed (fail closed). Its description is kept in
//! `run/killswitch.json`; the next start loads the table again from it and keeps it until
//! the user disconnects (or connects without the kill switch).

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The nftables table (family `inet`) the kill switch owns.
pub const TABLE: &str = "gatehouse_ks";

/// What the kill switch lets out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    /// The tunnel interface: everything may leave through it.
    pub tun: String,
    /// The gateway's public addresses and the ports the profile uses (UDP and TCP).
    pub servers: Vec<(IpAddr, u16)>,
    /// DNS servers pushed by the gateway; empty until the tunnel is up (then DNS may only
    /// go into the tunnel, to any server).
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// Also let out traffic to the private IPv4 ranges (the local LAN, printers).
    #[serde(default)]
    pub allow_lan: bool,
}

fn set<T: std::fmt::Display>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    format!("{{ {} }}", items.join(", "))
}

impl KillSwitch {
    /// The `nft -f` script that replaces our table in one transaction (creating it first so
    /// the `delete` never fails).
    pub fn ruleset(&self) -> String {
        let mut s = String::new();
        let tun = &self.tun;
        let _ = writeln!(s, "table inet {TABLE}");
        let _ = writeln!(s, "delete table inet {TABLE}");
        let _ = writeln!(s, "table inet {TABLE} {{");
        let _ = writeln!(s, "\tchain output {{");
        let _ = writeln!(s, "\t\ttype filter hook output priority 0; policy drop;");
        let _ = writeln!(s, "\t\toifname \"lo\" accept");
        // Neighbour discovery and router solicitation only: IPv6 otherwise stays dark.
        let _ = writeln!(
            s,
            "\t\ticmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} ip6 hoplimit 255 accept"
        );
        // DHCP keeps the lease of the underlying network.
        let _ = writeln!(s, "\t\tudp sport 68 udp dport 67 accept");
        let mut v4: Vec<(IpAddr, u16)> = self.servers.clone();
        v4.sort();
        v4.dedup();
        for (addr, port) in &v4 {
            let family = if addr.is_ipv4() { "ip" } else { "ip6" };
            let _ = writeln!(
                s,
                "\t\t{family} daddr {addr} meta l4proto {{ tcp, udp }} th dport {port} accept"
            );
        }
        // DNS: only into the tunnel, and there only to the pushed servers.
        let _ = writeln!(
            s,
            "\t\toifname != \"{tun}\" meta l4proto {{ tcp, udp }} th dport 53 drop"
        );
        let dns4: Vec<IpAddr> = self.dns.iter().copied().filter(IpAddr::is_ipv4).collect();
        let dns6: Vec<IpAddr> = self.dns.iter().copied().filter(IpAddr::is_ipv6).collect();
        if !self.dns.is_empty() {
            for (family, list) in [("ip", &dns4), ("ip6", &dns6)] {
                if list.is_empty() {
                    let _ = writeln!(
                        s,
                        "\t\tmeta nfproto {} meta l4proto {{ tcp, udp }} th dport 53 drop",
                        if family == "ip" { "ipv4" } else { "ipv6" }
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "\t\t{family} daddr != {} meta l4proto {{ tcp, udp }} th dport 53 drop",
                        set(list)
                    );
                }
            }
        }
        // Tunnels are IPv4: IPv6 never goes out, not even into the tunnel.
        let _ = writeln!(s, "\t\toifname \"{tun}\" meta nfproto ipv4 accept");
        if self.allow_lan {
            let _ = writeln!(
                s,
                "\t\tip daddr {{ 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255 }} accept"
            );
        }
        let _ = writeln!(s, "\t}}");
        // Nothing is forwarded around the tunnel either (containers, VMs behind this host).
        let _ = writeln!(s, "\tchain forward {{");
        let _ = writeln!(s, "\t\ttype filter hook forward priority 0; policy drop;");
        let _ = writeln!(s, "\t\toifname \"{tun}\" meta nfproto ipv4 accept");
        let _ = writeln!(
            s,
            "\t\tiifname \"{tun}\" ct state established,related accept"
        );
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "}}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks() -> KillSwitch {
        KillSwitch {
            tun: "gatehouse-c0".into(),
            servers: vec![
                ("203.0.113.5".parse().unwrap(), 1194),
                ("203.0.113.5".parse().unwrap(), 443),
                ("203.0.113.5".parse().unwrap(), 1194),
            ],
            dns: vec![],
            allow_lan: false,
        }
    }

    #[test]
    fn blocks_everything_but_the_tunnel_the_gateway_dhcp_and_loopback() {
        let text = ks().ruleset();
        let expected = "table inet gatehouse_ks
delete table inet gatehouse_ks
table inet gatehouse_ks {
\tchain output {
\t\ttype filter hook output priority 0; policy drop;
\t\toifname \"lo\" accept
\t\ticmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
\t\tudp sport 68 udp dport 67 accept
\t\tip daddr 203.0.113.5 meta l4proto { tcp, udp } th dport 443 accept
\t\tip daddr 203.0.113.5 meta l4proto { tcp, udp } th dport 1194 accept
\t\toifname != \"gatehouse-c0\" meta l4proto { tcp, udp } th dport 53 drop
\t\toifname \"gatehouse-c0\" meta nfproto ipv4 accept
\t}
\tchain forward {
\t\ttype filter hook forward priority 0; policy drop;
\t\toifname \"gatehouse-c0\" meta nfproto ipv4 accept
\t\tiifname \"gatehouse-c0\" ct state established,related accept
\t}
}
";
        assert_eq!(text, expected);
    }

    #[test]
    fn dns_only_to_the_pushed_servers_and_lan_only_when_asked() {
        let mut k = ks();
        k.dns = vec!["10.8.0.1".parse().unwrap(), "10.8.0.2".parse().unwrap()];
        let text = k.ruleset();
        assert!(text.contains(
            "ip daddr != { 10.8.0.1, 10.8.0.2 } meta l4proto { tcp, udp } th dport 53 drop"
        ));
        // No IPv6 DNS server pushed: no IPv6 DNS at all.
        assert!(text.contains("meta nfproto ipv6 meta l4proto { tcp, udp } th dport 53 drop"));
        // The DNS drops come before the tunnel's accept.
        let drop = text.find("ip daddr != {").unwrap();
        let accept = text
            .find("oifname \"gatehouse-c0\" meta nfproto ipv4 accept")
            .unwrap();
        assert!(drop < accept);
        assert!(!text.contains("192.168.0.0/16"));
        k.allow_lan = true;
        let text = k.ruleset();
        assert!(text.contains("ip daddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16"));
        // The LAN never gets DNS around the tunnel.
        assert!(text.find("th dport 53 drop").unwrap() < text.find("10.0.0.0/8").unwrap());
    }

    #[test]
    fn an_ipv6_gateway_is_reachable() {
        let mut k = ks();
        k.servers = vec![("2001:db8::1".parse().unwrap(), 443)];
        assert!(
            k.ruleset()
                .contains("ip6 daddr 2001:db8::1 meta l4proto { tcp, udp } th dport 443 accept")
        );
    }
}
