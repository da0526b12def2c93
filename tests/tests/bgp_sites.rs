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
//!
//! The failover test (lab index 232, [`BGP_FAILOVER_INDEX`]) runs two tunnels between two
//! Gatehouse gateways A and B over two underlay paths, a BGP session in each, and cuts the
//! first path: BGP moves both gateways' routes to the second tunnel.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::Ipv4Cidr;
use gatehouse_tests::frr::Frr;
use gatehouse_tests::gatehouse_site::{GhConnection, add_connections, site_gateway_dir};
use gatehouse_tests::gatehoused::Gatehoused;
use gatehouse_tests::gatehoused::GatewayDir;
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::netns::Netns;
use gatehouse_tests::ping_log::BackgroundPing;
use gatehouse_tests::sites::{BGP_FAILOVER_INDEX, BGP_SITE_INDEX, SiteId, SiteLab, UNDERLAY_IF};
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
    let frr_conf = checked_frr_config(&gw_a, A_ASN)?;

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
    // The learned prefix goes to remote-access clients that connect from now on.
    a.wait_event(
        "routes learned from sites changed: pushed to clients that connect from now on",
        |e| e.line.contains(&c_lan),
        Duration::from_secs(8),
    )
    .with_context(ctx)?;
    eprintln!(
        "A pushes {c_lan} to new clients from {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until A's main table has a route to `prefix`; returns it as `ip route` shows it.
fn wait_kernel_route(lab: &SiteLab, prefix: &str, timeout: Duration) -> Result<String> {
    wait_route_where(&lab.a.gw, prefix, timeout, |r| !r.is_empty())
}

/// Waits until `ns`'s main table shows a route to `prefix` that `ok` accepts (the text `ip
/// route show PREFIX` prints, trimmed; ECMP routes span several lines); returns that text.
fn wait_route_where(
    ns: &Netns,
    prefix: &str,
    timeout: Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<String> {
    let t0 = Instant::now();
    loop {
        let out = ns.exec_ok("ip", ["route", "show", prefix])?;
        let out = out.trim();
        if ok(out) {
            return Ok(out.to_owned());
        }
        ensure!(
            t0.elapsed() < timeout,
            "{}: no suitable route to {prefix} within {timeout:?}; now: {out:?}",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `gatehoused check` passes on the gateway's configuration; returns what `gatehoused
/// frr-config --asn ASN --timers 1 3` prints for it.
fn checked_frr_config(gw: &GatewayDir, asn: u32) -> Result<String> {
    let check = std::process::Command::new(bin("gatehoused"))
        .args(["check", "--config"])
        .arg(gw.config_path())
        .output()?;
    ensure!(
        check.status.success(),
        "gatehoused check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = std::process::Command::new(bin("gatehoused"))
        .args([
            "frr-config",
            "--asn",
            &asn.to_string(),
            "--timers",
            "1",
            "3",
            "--config",
        ])
        .arg(gw.config_path())
        .output()?;
    ensure!(
        out.status.success(),
        "gatehoused frr-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// One of the two tunnels of the failover test: its underlay addresses and the link inside.
struct Path {
    n: u8,
    a_addr: Ipv4Addr,
    b_addr: Ipv4Addr,
    a_inside: Ipv4Addr,
    b_inside: Ipv4Addr,
}

impl Path {
    fn iface(&self) -> String {
        format!("ghbgf-{}", self.n)
    }
}

/// Appends `conn` to `gw`'s configuration with its own interface and BGP peer (and our
/// identity, when this path is not the gateway's public address).
fn add_bgp_connection(
    gw: &GatewayDir,
    conn: GhConnection,
    iface: &str,
    inside: Ipv4Addr,
    peer: Ipv4Addr,
    peer_asn: u32,
    second_addr: Option<Ipv4Addr>,
) -> Result<()> {
    add_connections(gw, &[conn])?;
    let mut text = gw.config_text()?;
    if let Some(own) = second_addr {
        text.push_str(&format!(
            "local_id = \"{own}\"\nlocal_address = \"{own}\"\n"
        ));
    }
    text.push_str(&format!(
        "interface = \"{iface}\"\ninterface_address = \"{inside}/30\"\nbgp_peer = \"{peer}\"\nbgp_peer_asn = {peer_asn}\n"
    ));
    std::fs::write(gw.config_path(), text)?;
    Ok(())
}

/// A's and B's ASes in the failover test.
const B_ASN: u32 = 65002;

/// Two tunnels between Gatehouse gateways A and B, each over its own pair of underlay
/// addresses (A 10.232.0.1 <-> B 10.232.0.2, and A 10.232.0.11 <-> B 10.232.0.12, the
/// second pair chosen by `local_address`: A's first IKE_SA_INIT to B's second address
/// leaves from A's second one), each with its own interface and BGP
/// session, no static prefixes. A host behind A pings a host behind B every 100 ms while the
/// first path is cut (blackhole routes to the peer's first address on both gateways): the
/// BGP session in tunnel 1 times out (hold time 3 s), FRR withdraws its routes, and both
/// kernels route through tunnel 2.
#[test]
fn bgp_moves_the_routes_to_the_second_tunnel_when_the_first_path_fails() -> Result<()> {
    require_root();
    require_commands(&[
        "ip",
        "ping",
        "vtysh",
        "/usr/lib/frr/zebra",
        "/usr/lib/frr/bgpd",
    ]);
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let logs = dir.path();
    let lab = SiteLab::new("bgf", BGP_FAILOVER_INDEX)?;
    let k = lab.k;
    let paths = [
        Path {
            n: 1,
            a_addr: lab.a.underlay_addr,
            b_addr: lab.b.underlay_addr,
            a_inside: Ipv4Addr::new(169, 254, k, 1),
            b_inside: Ipv4Addr::new(169, 254, k, 2),
        },
        Path {
            n: 2,
            a_addr: Ipv4Addr::new(10, k, 0, 11),
            b_addr: Ipv4Addr::new(10, k, 0, 12),
            a_inside: Ipv4Addr::new(169, 254, k, 5),
            b_inside: Ipv4Addr::new(169, 254, k, 6),
        },
    ];
    // The second pair of underlay addresses: secondary addresses in the same subnet, so the
    // kernel would pick each gateway's first address as the source toward the peer's second
    // one. Only `local_address` makes the second tunnel's packets leave from the second
    // address, which the peer's PSK connection requires (`remote_gateway_any = false`).
    for (ns, own) in [(&lab.a.gw, paths[1].a_addr), (&lab.b.gw, paths[1].b_addr)] {
        ns.exec_ok(
            "ip",
            ["addr", "add", &format!("{own}/24"), "dev", UNDERLAY_IF],
        )?;
    }
    wait_ping(&lab.a.gw, paths[1].b_addr, Duration::from_secs(10))?;

    let gw_a = site_gateway_dir(&lab, SiteId::A, &logs.join("a"))?;
    let gw_b = site_gateway_dir(&lab, SiteId::B, &logs.join("b"))?;
    for p in &paths {
        let psk = format!("bgp failover key 232 path {}: Hx7Pq2Lm9Vd4", p.n);
        let second = p.n != 1;
        let mut ab = GhConnection::between(&lab, SiteId::A, SiteId::B, &psk);
        ab.name = format!("ab{}", p.n);
        ab.remote_gateway = p.b_addr;
        ab.remote_address_space.clear();
        let mut ba = GhConnection::between(&lab, SiteId::B, SiteId::A, &psk);
        ba.name = format!("ba{}", p.n);
        ba.remote_gateway = p.a_addr;
        ba.remote_address_space.clear();
        ba.initiate = false;
        let iface = p.iface();
        add_bgp_connection(
            &gw_a,
            ab,
            &iface,
            p.a_inside,
            p.b_inside,
            B_ASN,
            second.then_some(p.a_addr),
        )?;
        add_bgp_connection(
            &gw_b,
            ba,
            &iface,
            p.b_inside,
            p.a_inside,
            A_ASN,
            second.then_some(p.b_addr),
        )?;
    }
    let frr_conf_a = checked_frr_config(&gw_a, A_ASN)?;
    let frr_conf_b = checked_frr_config(&gw_b, B_ASN)?;
    let b = Gatehoused::start(&lab.b.gw, &gw_b, &logs.join("gatehoused-b.log"))?;
    let a = Gatehoused::start(&lab.a.gw, &gw_a, &logs.join("gatehoused-a.log"))?;
    let frr_a = Frr::start(&lab.a.gw, &frr_conf_a)?;
    let frr_b = Frr::start(&lab.b.gw, &frr_conf_b)?;
    let ctx = || {
        format!(
            "A:\n{}\nB:\n{}\nFRR A:\n{}\nFRR B:\n{}",
            a.log_tail(30),
            b.log_tail(30),
            frr_a.log_tail(15),
            frr_b.log_tail(15)
        )
    };
    for p in &paths {
        frr_a
            .wait_established(&p.b_inside.to_string(), UP)
            .with_context(ctx)?;
    }
    eprintln!(
        "both BGP sessions established in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let b_lan = lab.b.lan.network().to_string();
    let a_lan = lab.a.lan.network().to_string();
    let via = |p: &Path| format!("dev {}", p.iface());
    let before =
        wait_route_where(&lab.a.gw, &b_lan, UP, |r| r.contains("proto bgp")).with_context(ctx)?;
    wait_route_where(&lab.b.gw, &a_lan, UP, |r| r.contains("proto bgp")).with_context(ctx)?;
    eprintln!("A's route to B's LAN: {before}");
    wait_ping(&lab.a.host, lab.b.host_addr, Duration::from_secs(15)).with_context(ctx)?;

    // Cut path 1 while a host behind A pings one behind B.
    let ping = BackgroundPing::start(
        &lab.a.host,
        lab.b.host_addr,
        "0.1",
        150,
        &logs.join("ping.log"),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let cut = Instant::now();
    lab.a.gw.exec_ok(
        "ip",
        [
            "route",
            "add",
            "blackhole",
            &format!("{}/32", paths[0].b_addr),
        ],
    )?;
    lab.b.gw.exec_ok(
        "ip",
        [
            "route",
            "add",
            "blackhole",
            &format!("{}/32", paths[0].a_addr),
        ],
    )?;
    let moved = |r: &str| {
        r.contains("proto bgp") && !r.contains(&via(&paths[0])) && r.contains(&via(&paths[1]))
    };
    let after_a =
        wait_route_where(&lab.a.gw, &b_lan, Duration::from_secs(20), moved).with_context(ctx)?;
    let moved_a = cut.elapsed();
    let after_b =
        wait_route_where(&lab.b.gw, &a_lan, Duration::from_secs(20), moved).with_context(ctx)?;
    let moved_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    eprintln!(
        "path 1 cut: A's route moved after {:.1} s ({after_a}), B's after {:.1} s ({after_b})",
        moved_a.as_secs_f64(),
        cut.elapsed().as_secs_f64()
    );
    let log = ping.finish(Duration::from_secs(30))?;
    let (sent, received, gap) = log.counts_and_gap();
    eprintln!("pings through the failover: {received}/{sent}, longest gap {gap:.2} s");
    ensure!(
        gap < 10.0,
        "the hosts could not reach each other for {gap:.1} s:\n{}\n{}",
        log.output,
        ctx()
    );
    let after_move = log.reply_times.iter().filter(|&&t| t > moved_at).count();
    ensure!(
        after_move >= 20,
        "only {after_move} pings came back after the routes moved:\n{}",
        log.output
    );
    // The hosts still reach each other both ways, through tunnel 2 only.
    wait_ping(&lab.a.host, lab.b.host_addr, Duration::from_secs(10)).with_context(ctx)?;
    wait_ping(&lab.b.host, lab.a.host_addr, Duration::from_secs(10)).with_context(ctx)?;
    ensure!(
        a.is_running() && b.is_running(),
        "a gatehoused exited:\n{}",
        ctx()
    );
    eprintln!("failover test done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
