//! `gatehoused frr-config`: the bgpd configuration for FRR beside the gateway (docs/bgp.md).
//! It announces the gateway's `address_space` and `client_pool` and peers with every
//! connection that has a `bgp_peer`, over that connection's own interface. gatehoused
//! itself speaks no BGP: FRR's bgpd does, and FRR's zebra installs what it learns as kernel
//! routes through the connections' interfaces.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyhow::{Result, bail};

use crate::config::{Connection, GatewayConfig};

/// BGP timers written for every neighbor: keepalive and hold time, seconds.
pub const DEFAULT_TIMERS: (u16, u16) = (3, 9);

/// Renders the FRR configuration (`frr.conf` / `bgpd.conf` syntax) for AS `asn` with router
/// id `router_id` and neighbor timers `timers` (keepalive, hold).
pub fn render(
    cfg: &GatewayConfig,
    conns: &[Connection],
    asn: u32,
    router_id: Ipv4Addr,
    timers: (u16, u16),
) -> Result<String> {
    if asn == 0 {
        bail!("--asn 0 is not an AS number: use 1-4294967295 (64512-65534 are private)");
    }
    if timers.0 == 0 || timers.1 < 3 * timers.0 {
        bail!(
            "--timers {} {}: the keepalive must be at least 1 s and the hold time at least three keepalives",
            timers.0,
            timers.1
        );
    }
    let peers: Vec<(&Connection, Ipv4Addr, u32, &str)> = conns
        .iter()
        .filter_map(|c| {
            let i = c.interface.as_ref()?;
            Some((c, i.bgp_peer?, i.bgp_peer_asn?, i.name.as_str()))
        })
        .collect();
    if peers.is_empty() {
        bail!(
            "no [[connection]] has a `bgp_peer`: give a route-based connection `interface`, `interface_address`, `bgp_peer` and `bgp_peer_asn` (docs/bgp.md)"
        );
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "! FRR configuration for gatehoused (gatehoused frr-config)"
    );
    let _ = writeln!(
        out,
        "! Announces address_space and client_pool; peers over the connections' own interfaces."
    );
    let _ = writeln!(out, "frr defaults traditional");
    let _ = writeln!(out, "!");
    let _ = writeln!(out, "router bgp {asn}");
    let _ = writeln!(out, " bgp router-id {router_id}");
    let _ = writeln!(out, " no bgp ebgp-requires-policy");
    let _ = writeln!(out, " no bgp network import-check");
    let _ = writeln!(out, " bgp bestpath as-path multipath-relax");
    for (c, peer, peer_asn, iface) in &peers {
        let _ = writeln!(out, " neighbor {peer} remote-as {peer_asn}");
        let _ = writeln!(out, " neighbor {peer} description {}", c.name);
        let _ = writeln!(out, " neighbor {peer} update-source {iface}");
        let _ = writeln!(out, " neighbor {peer} timers {} {}", timers.0, timers.1);
        let _ = writeln!(out, " neighbor {peer} timers connect 1");
        let _ = writeln!(out, " neighbor {peer} disable-connected-check");
    }
    let _ = writeln!(out, " !");
    let _ = writeln!(out, " address-family ipv4 unicast");
    let mut nets = cfg.address_space.clone();
    if !nets.contains(&cfg.client_pool) {
        nets.push(cfg.client_pool);
    }
    for n in &nets {
        let _ = writeln!(out, "  network {n}");
    }
    for (_, peer, _, _) in &peers {
        let _ = writeln!(out, "  neighbor {peer} activate");
        let _ = writeln!(out, "  neighbor {peer} prefix-list gatehouse-out out");
        let _ = writeln!(out, "  neighbor {peer} prefix-list gatehouse-in in");
    }
    let _ = writeln!(out, " exit-address-family");
    let _ = writeln!(out, "!");
    // Out: only our prefixes (never re-announce one site's routes to another, nor a default).
    for (k, n) in nets.iter().enumerate() {
        let _ = writeln!(
            out,
            "ip prefix-list gatehouse-out seq {} permit {n}",
            5 * (k + 1)
        );
    }
    // In: anything but our own prefixes, the links and a default route.
    let mut seq = 5;
    for n in &nets {
        let _ = writeln!(out, "ip prefix-list gatehouse-in seq {seq} deny {n} le 32");
        seq += 5;
    }
    for (c, _, _, _) in &peers {
        if let Some(i) = &c.interface {
            let _ = writeln!(
                out,
                "ip prefix-list gatehouse-in seq {seq} deny {} le 32",
                i.address.trunc()
            );
            seq += 5;
        }
    }
    let _ = writeln!(out, "ip prefix-list gatehouse-in seq {seq} deny 0.0.0.0/0");
    seq += 5;
    let _ = writeln!(
        out,
        "ip prefix-list gatehouse-in seq {seq} permit 0.0.0.0/0 le 32"
    );
    let _ = writeln!(out, "!");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
public_addr = "203.0.113.1"
address_space = ["10.231.1.0/24"]
client_pool = "172.16.231.0/24"

[[connection]]
name = "site1"
type = "site-to-site"
remote_gateway = "198.51.100.7"
remote_address_space = []
auth = "psk"
psk_file = "site1.psk"
interface = "gh-site1"
interface_address = "169.254.31.1/30"
bgp_peer = "169.254.31.2"
bgp_peer_asn = 65020
"#;

    #[test]
    fn announces_our_prefixes_and_peers_over_the_interface() {
        let cfg: GatewayConfig = toml::from_str(CFG).unwrap();
        cfg.validate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let psk = dir.path().join("site1.psk");
        std::fs::write(&psk, "k7Qz2Xw9Lm4Pv8Rt1Yb6Nc3Hd5Fg0Js\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let conns = cfg.connections(dir.path()).unwrap();
        let i = conns[0].interface.as_ref().unwrap();
        assert_eq!(i.name, "gh-site1");
        assert_eq!(i.bgp_peer, Some("169.254.31.2".parse().unwrap()));
        let text = render(&cfg, &conns, 65010, "203.0.113.1".parse().unwrap(), (1, 3)).unwrap();
        for line in [
            "router bgp 65010",
            " neighbor 169.254.31.2 remote-as 65020",
            " neighbor 169.254.31.2 update-source gh-site1",
            " neighbor 169.254.31.2 timers 1 3",
            "  network 10.231.1.0/24",
            "  network 172.16.231.0/24",
            " no bgp ebgp-requires-policy",
            "ip prefix-list gatehouse-in seq 5 deny 10.231.1.0/24 le 32",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        assert!(render(&cfg, &conns, 0, "1.1.1.1".parse().unwrap(), (1, 3)).is_err());
    }

    #[test]
    fn bad_interface_values_are_explained() {
        let cases = [
            (
                r#"bgp_peer = "169.254.31.2""#,
                r#"bgp_peer = "169.254.31.9""#,
                "must be another host address",
            ),
            (
                r#"interface = "gh-site1""#,
                r#"interface = "a-very-long-interface-name""#,
                "not a valid interface name",
            ),
            ("bgp_peer_asn = 65020", "", "bgp_peer_asn` is missing"),
            (
                r#"interface_address = "169.254.31.1/30""#,
                r#"interface_address = "10.231.1.1/30""#,
                "overlaps `address_space`",
            ),
            (
                "remote_address_space = []",
                "remote_address_space = []\npolicy_based = true",
                "route-based",
            ),
        ];
        for (from, to, want) in cases {
            let cfg: GatewayConfig = toml::from_str(&CFG.replace(from, to)).unwrap();
            let e = format!("{:#}", cfg.validate().unwrap_err());
            assert!(e.contains(want), "{to}: {e}");
        }
        let text = CFG.replace("interface = \"gh-site1\"\n", "").replace(
            "remote_address_space = []",
            "remote_address_space = [\"10.50.0.0/24\"]",
        );
        let cfg: GatewayConfig = toml::from_str(&text).unwrap();
        let e = format!("{:#}", cfg.validate().unwrap_err());
        assert!(e.contains("needs `interface`"), "{e}");
    }
}
