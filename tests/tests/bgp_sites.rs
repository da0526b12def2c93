//! BGP on a route-based site connection (issue 17): Gatehouse gateway A with the
//! connection's own interface and FRR beside it, strongSwan site C (kernel-libipsec,
//! route-based, 0.0.0.0/0 selectors) with FRR too, the BGP session inside the tunnel. Tag
//! `bgp`, lab index 231 ([`BGP_SITE_INDEX`]).
//!
//! ```text
//!  hostA 10.231.1.10 -- gwA: gatehoused (TUN gh231a + own interface ghbgp-ac 169.254.31.1/30)
//!                            FRR AS 65001 (config from `gatehoused frr-config`)
//!                             |  IKEv2/ESP-in-UDP over the underlay, BGP inside it
//!  hostC 10.231.3.10 -- gwC: charon (ipsec0, route-based) + FRR AS 65003, 169.254.31.2 on lo
//! ```
//!
//! A's configuration lists no prefix for C (`remote_address_space = []`): A's kernel learns
//! C's LAN only by BGP, as a route through the connection's interface; C's FRR learns A's
//! address space and client pool.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::Ipv4Cidr;
use gatehouse_tests::frr::Frr;
use gatehouse_tests::gatehouse_site::{GhConnection, add_connections, site_gateway_dir};
use gatehouse_tests::gatehoused::Gatehoused;
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::sites::{BGP_SITE_INDEX, SiteId, SiteLab};
use gatehouse_tests::swan_site::{StartAction, SwanAuth, SwanMode, SwanSite, SwanSiteConfig};
use gatehouse_tests::{bin, require_commands, require_root};

/// The connection's own interface on A.
const IFACE: &str = "ghbgp-ac";
/// A's and C's ends of the link inside the tunnel.
const A_INSIDE: Ipv4Addr = Ipv4Addr::new(169, 254, 31, 1);
const C_INSIDE: Ipv4Addr = Ipv4Addr::new(169, 254, 31, 2);
const A_ASN: u32 = 65001;
const C_ASN: u32 = 65003;
/// Tunnel up, BGP up, routes exchanged (both ends started; two shared cores).
const UP: Duration = Duration::from_secs(30);

/// C's bgpd: announces its LAN, peers with A's inside address through the tunnel.
fn site_bgpd_conf(lab: &SiteLab) -> String {
    format!(
        "router bgp {C_ASN}
 bgp router-id {router_id}
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor {A_INSIDE} remote-as {A_ASN}
 neighbor {A_INSIDE} update-source {C_INSIDE}
 neighbor {A_INSIDE} disable-connected-check
 neighbor {A_INSIDE} timers 1 3
 neighbor {A_INSIDE} timers connect 1
 address-family ipv4 unicast
  network {lan}
 exit-address-family
!
",
        router_id = lab.c.underlay_addr,
        lan = lab.c.lan.network(),
    )
}

#[test]
fn bgp_over_a_route_based_site_connection_with_its_own_interface() -> Result<()> {
    require_root();
    require_commands(&[
        "ip",
        "ping",
        "vtysh",
        "swanctl",
        "/usr/lib/frr/zebra",
        "/usr/lib/frr/bgpd",
    ]);
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let logs = dir.path();
    let lab = SiteLab::new("bgp", BGP_SITE_INDEX)?;

    // A: the connection to C with its own interface, no static prefixes.
    let gw_a = site_gateway_dir(&lab, SiteId::A, &logs.join("a"))?;
    let psk = "bgp site key 231: Tq4Wn8Zc2Rv6";
    let mut ac = GhConnection::between(&lab, SiteId::A, SiteId::C, psk);
    ac.remote_address_space.clear();
    add_connections(&gw_a, &[ac])?;
    let mut text = gw_a.config_text()?;
    text.push_str(&format!(
        "interface = \"{IFACE}\"\ninterface_address = \"{A_INSIDE}/30\"\nbgp_peer = \"{C_INSIDE}\"\nbgp_peer_asn = {C_ASN}\n"
    ));
    std::fs::write(gw_a.config_path(), text)?;
    let check = std::process::Command::new(bin("gatehoused"))
        .args(["check", "--config"])
        .arg(gw_a.config_path())
        .output()?;
    ensure!(
        check.status.success(),
        "gatehoused check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let frr_conf = std::process::Command::new(bin("gatehoused"))
        .args([
            "frr-config",
            "--asn",
            &A_ASN.to_string(),
            "--timers",
            "1",
            "3",
            "--config",
        ])
        .arg(gw_a.config_path())
        .output()?;
    ensure!(
        frr_conf.status.success(),
        "gatehoused frr-config: {}",
        String::from_utf8_lossy(&frr_conf.stderr)
    );
    let frr_conf = String::from_utf8(frr_conf.stdout)?;

    // C: route-based strongSwan; its BGP address on lo, routed (like A's prefixes) into
    // ipsec0.
    lab.c.gw.exec_ok(
        "ip",
        ["addr", "add", &format!("{C_INSIDE}/32"), "dev", "lo"],
    )?;
    let mut c_cfg = SwanSiteConfig::between(&lab, SiteId::C, SiteId::A, SwanAuth::Psk(psk.into()));
    c_cfg.mode = SwanMode::RouteBased;
    c_cfg.start_action = StartAction::None;
    c_cfg.remote_prefixes.push(lab.a.pool.network());
    c_cfg.remote_prefixes.push(Ipv4Cidr::new(A_INSIDE, 32));
    let c = SwanSite::start(&lab.c.gw, &logs.join("c"), &c_cfg)?;
    let a = Gatehoused::start(&lab.a.gw, &gw_a, &logs.join("gatehoused-a.log"))?;
    let frr_a = Frr::start(&lab.a.gw, &frr_conf)?;
    let frr_c = Frr::start(&lab.c.gw, &site_bgpd_conf(&lab))?;
    let ctx = || {
        format!(
            "A:\n{}\nC:\n{}\nFRR A:\n{}\nFRR C:\n{}",
            a.log_tail(30),
            c.log_tail(20),
            frr_a.log_tail(15),
            frr_c.log_tail(15)
        )
    };
    c.wait_child_installed(UP).with_context(ctx)?;
    eprintln!("tunnel up in {:.1} s", t0.elapsed().as_secs_f64());

    frr_a
        .wait_established(&C_INSIDE.to_string(), UP)
        .with_context(ctx)?;
    eprintln!("BGP established in {:.1} s", t0.elapsed().as_secs_f64());
    // C learns A's address space and client pool.
    for prefix in [lab.a.lan.network(), lab.a.pool.network()] {
        frr_c
            .wait_route(&prefix.to_string(), UP)
            .with_context(ctx)?;
    }
    // A learns C's LAN, and zebra installs it through the connection's interface.
    let c_lan = lab.c.lan.network().to_string();
    frr_a.wait_route(&c_lan, UP).with_context(ctx)?;
    let route = wait_kernel_route(&lab, &c_lan, UP).with_context(ctx)?;
    ensure!(
        route.contains(&format!("dev {IFACE}")) && route.contains("proto bgp"),
        "A's route to C's LAN is not a BGP route through {IFACE}: {route}"
    );
    eprintln!(
        "routes exchanged in {:.1} s: {route}",
        t0.elapsed().as_secs_f64()
    );
    // Hosts across the tunnel, both ways.
    wait_ping(&lab.a.host, lab.c.host_addr, Duration::from_secs(15)).with_context(ctx)?;
    wait_ping(&lab.c.host, lab.a.host_addr, Duration::from_secs(15)).with_context(ctx)?;
    ensure!(a.is_running(), "gatehoused exited:\n{}", a.log_tail(30));
    eprintln!("A<->C pinging in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Waits until A's main table has a route to `prefix`; returns it as `ip route` shows it.
fn wait_kernel_route(lab: &SiteLab, prefix: &str, timeout: Duration) -> Result<String> {
    let t0 = Instant::now();
    loop {
        let out = lab.a.gw.exec_ok("ip", ["route", "show", prefix])?;
        if !out.trim().is_empty() {
            return Ok(out.trim().to_owned());
        }
        ensure!(
            t0.elapsed() < timeout,
            "no kernel route to {prefix} on A within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
