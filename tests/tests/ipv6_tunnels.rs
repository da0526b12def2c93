//! IPv6 inside tunnels (`client_pool_v6`), with the real stock peers, in namespaces: the
//! stock OpenVPN 2.6 client over UDP and over TCP, and a strongSwan swanctl road warrior
//! asking for both address families (`vips = 0.0.0.0,::`), each ping the LAN host behind the
//! gateway on IPv4 and on IPv6 through the tunnel. A client that sends from an IPv6 address
//! it was not given is dropped and counted (`spoofed`). Gatehouse's own client, pushed the
//! same IPv6 options, configures them on its TUN device and reaches the LAN on both too; with
//! a full tunnel it routes all IPv6 into the tunnel, or blocks it when the gateway gives no
//! IPv6 (never leaking around an IPv4-only tunnel).
//!
//! Tag `v6`, subnet index 227; the LAN gets `fd00:6a7e:e3:251::/64` beside 10.251.227.0/24.

use std::net::Ipv6Addr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use gatehouse_tests::client::{ClientHome, ClientService, DEFAULT_TUN};
use gatehouse_tests::gatehoused::{
    Gatehoused, STOPPED, cert_files_from_ovpn, drop_counters, toml_str, wait_client_up,
};
use gatehouse_tests::ipv6::{global_ipv6, lan_ipv6, ping6, wait_ping6};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::netns::Netns;
use gatehouse_tests::openvpn::{ClientConfig, Proto, UP_TIMEOUT, spawn_openvpn};
use gatehouse_tests::strongswan::{Charon, IPSEC_DEV, RoadWarrior, SwanctlCreds};
use gatehouse_tests::{GatewaySetup, Proc};

const POOL_V6: &str = "fd00:6a7e:e3:8::/64";
const LAN_V6: &str = "fd00:6a7e:e3:251::/64";
/// The gateway on the LAN, and the LAN host.
const GW_LAN_V6: &str = "fd00:6a7e:e3:251::1";
const LAN_HOST_V6: &str = "fd00:6a7e:e3:251::10";

/// Is `a` in [`POOL_V6`] (a /64)?
fn in_pool(a: &Ipv6Addr) -> bool {
    a.segments()[..4] == [0xfd00, 0x6a7e, 0xe3, 8]
}

/// Address `host` of [`POOL_V6`].
fn pool_addr(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x6a7e, 0xe3, 8, 0, 0, 0, host)
}

fn lan_host_v6() -> Ipv6Addr {
    LAN_HOST_V6.parse().expect("constant")
}

fn logs(gw: &Gatehoused, client: &str) -> String {
    format!(
        "gatehoused log:\n{}\nclient log:\n{client}",
        gw.log_tail(25)
    )
}

/// Client `i` reaches the LAN host on both families through `dev`, and `dev` carries an
/// address of the IPv6 pool.
fn dual_stack(
    s: &GatewaySetup,
    gw: &Gatehoused,
    i: usize,
    dev: &str,
    log: &dyn Fn() -> String,
) -> Result<Ipv6Addr> {
    let ns = s.ns(i);
    let mine = global_ipv6(ns, dev)?
        .into_iter()
        .find(in_pool)
        .with_context(|| format!("{dev} has no address of {POOL_V6}\n{}", logs(gw, &log())))?;
    ensure!(
        mine != pool_addr(1),
        "{dev} got the gateway's own IPv6 address {mine}"
    );
    wait_ping(ns, s.topo.lan_host, Duration::from_secs(10)).with_context(|| logs(gw, &log()))?;
    wait_ping6(ns, lan_host_v6(), Duration::from_secs(10)).with_context(|| logs(gw, &log()))?;
    let (sent, got) = ping6(ns, lan_host_v6(), 5, None)?;
    eprintln!(
        "{}: {dev} {mine}: IPv6 ping {LAN_HOST_V6}: {got}/{sent} replies",
        ns.name()
    );
    ensure!(
        got >= 4,
        "IPv6 pings lost: {got}/{sent}\n{}",
        logs(gw, &log())
    );
    Ok(mine)
}

fn openvpn_client(s: &GatewaySetup, i: usize, name: &str, proto: Proto, dev: &str) -> Result<Proc> {
    let profile = s.profile(name, i)?;
    let certs = cert_files_from_ovpn(&profile, s.dir.path(), name)?;
    let port = if proto == Proto::Tcp { 443 } else { 1194 };
    let mut config = ClientConfig::new(proto, s.topo.client(i).gateway_addr, port, certs);
    config.dev = dev.to_string();
    let path = s.path(&format!("{dev}.conf"));
    config.write(&path)?;
    spawn_openvpn(s.ns(i), &path, &[], &s.path(&format!("openvpn-{dev}.log")))
}

#[test]
fn dual_stack_through_stock_openvpn_and_strongswan() -> Result<()> {
    let commands = &[
        "ip",
        "openvpn",
        "ping",
        "sysctl",
        "charon-systemd",
        "swanctl",
    ];
    let s = GatewaySetup::new("v6", 227, 3, commands)?;
    lan_ipv6(&s, GW_LAN_V6.parse()?, lan_host_v6())?;
    s.gw_dir.set("client_pool_v6", &toml_str(POOL_V6))?;
    s.gw_dir
        .set("address_space_v6", &format!("[{}]", toml_str(LAN_V6)))?;
    let gw = s.start_gateway("gatehoused.log")?;

    // The stock OpenVPN 2.6 client, over UDP and over TCP.
    let udp = openvpn_client(&s, 0, "alice", Proto::Udp, "tun-v6u")?;
    let tcp = openvpn_client(&s, 1, "bob", Proto::Tcp, "tun-v6t")?;
    for c in [&udp, &tcp] {
        wait_client_up(c, &gw, 1, UP_TIMEOUT)?;
    }
    let alice = dual_stack(&s, &gw, 0, "tun-v6u", &|| udp.log_tail(25))?;
    let event = gw.wait_connected("alice", Duration::from_secs(5))?;
    ensure!(
        event.field("address6") == Some(alice.to_string().as_str()),
        "gatehoused logged address6 {:?} for alice, her TUN has {alice}: {}",
        event.field("address6"),
        event.line
    );
    dual_stack(&s, &gw, 1, "tun-v6t", &|| tcp.log_tail(25))?;

    // strongSwan asking for an IPv4 and an IPv6 address, all of both families routed.
    let issued = s.gw_dir.issue_client("carol", &[])?;
    let charon = Charon::start(s.ns(2), &s.path("swanctl-carol"), "")?;
    let cert = charon.install_creds(
        "carol",
        &SwanctlCreds {
            ca: s.gw_dir.ca_cert(),
            cert: issued.cert,
            key: issued.key,
        },
    )?;
    let mut rw = RoadWarrior::new("gh", s.topo.client(2).gateway_addr, &cert);
    // The gateway's certificate names the address client 0 dials (`public_addr`).
    rw.remote_id = s.topo.client(0).gateway_addr.to_string();
    rw.vips = "0.0.0.0,::".into();
    rw.remote_ts = "0.0.0.0/0,::/0".into();
    charon.write_conns(&[&rw], "")?;
    let clog = || charon.log_tail(30);
    charon.load_all().with_context(|| logs(&gw, &clog()))?;
    charon
        .initiate(&rw.child())
        .with_context(|| logs(&gw, &clog()))?;
    dual_stack(&s, &gw, 2, IPSEC_DEV, &clog)?;

    // alice sends from an IPv6 address of the pool that is not hers: dropped, counted.
    let spoofed = pool_addr(77);
    ensure!(spoofed != alice, "alice was given {spoofed} itself");
    s.ns(0).exec_ok(
        "ip",
        [
            "-6",
            "addr",
            "add",
            &format!("{spoofed}/128"),
            "dev",
            "tun-v6u",
            "nodad",
        ],
    )?;
    let (sent, got) = ping6(s.ns(0), lan_host_v6(), 3, Some(spoofed))?;
    ensure!(
        sent == 3 && got == 0,
        "pings from the spoofed source {spoofed} got {got} answers"
    );
    let (_, ok) = ping6(s.ns(0), lan_host_v6(), 3, Some(alice))?;
    ensure!(
        ok >= 2,
        "pings from alice's own IPv6 address stopped working"
    );

    // Gatehouse's own client, pushed the same IPv6 options, in alice's namespace once she is
    // gone.
    udp.stop();
    let home = ClientHome::new(&s.path("client"), "nameserver 192.0.2.53\n")?;
    s.gw_dir.issue_client("dave", &[])?;
    home.import_profile(&s.gw_dir, "dave", s.topo.client(0).gateway_addr)?;
    let svc = ClientService::start(s.ns(0), &home, &s.path("service.log"))?;
    let out = home.run(
        Some(s.ns(0)),
        &["connect", "dave", "--protocol", "openvpn-udp"],
        Duration::from_secs(45),
    )?;
    ensure!(
        out.success(),
        "{out}
{}",
        logs(&gw, &svc.log_tail(30))
    );
    let st = home.status(s.ns(0))?;
    ensure!(st.state() == "connected", "{}", st.label());
    gw.wait_connected("dave", Duration::from_secs(5))?;
    wait_ping(s.ns(0), s.topo.lan_host, Duration::from_secs(10))
        .with_context(|| logs(&gw, &svc.log_tail(30)))?;
    // It puts the pushed IPv6 address on its TUN device and routes the IPv6 LAN there.
    let dave = dual_stack(&s, &gw, 0, DEFAULT_TUN, &|| svc.log_tail(30))?;
    eprintln!(
        "Gatehouse client dave: {}, {dave} on {DEFAULT_TUN}",
        st.label()
    );
    home.run_ok(Some(s.ns(0)), &["disconnect"])?;

    charon.stop();
    gw.terminate(Duration::from_secs(5))?;
    let log = gw.log();
    let last = log.lines().last().unwrap_or_default();
    eprintln!("{last}");
    ensure!(
        last.contains(STOPPED),
        "no `{STOPPED}` line:\n{}",
        gw.log_tail(20)
    );
    let drops = drop_counters(last);
    ensure!(
        drops.get("spoofed").copied().unwrap_or(0) >= 3,
        "expected spoofed >= 3 in {drops:?}: {last}"
    );
    full_tunnel_ipv6(&s, &home, &svc)
}

/// An address on the (IPv6) Internet, reachable from client 0 only through the way IPv6
/// goes; nothing answers there.
const OUTSIDE_V6: &str = "2001:db8:77::1";

/// Where client 0 sends IPv6 for [`OUTSIDE_V6`]: `ip -6 route get` (or its error).
fn v6_route(ns: &Netns) -> Result<String> {
    let out = ns.exec("ip", ["-6", "route", "get", OUTSIDE_V6])?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Gatehouse's client with a full tunnel on a host that has IPv6 outside it (client 0 gets an
/// IPv6 underlay with a default route): with an IPv6 address from the gateway, IPv6 goes into
/// the tunnel (`::/1` and `8000::/1`); from a gateway without IPv6, IPv6 is refused while
/// connected (unreachable routes) instead of leaking around the tunnel. Disconnecting gives
/// the host its IPv6 path back.
fn full_tunnel_ipv6(s: &GatewaySetup, home: &ClientHome, svc: &ClientService) -> Result<()> {
    let ns = s.ns(0);
    s.topo.gateway.exec_ok(
        "ip",
        [
            "-6",
            "addr",
            "add",
            "fd00:6a7e:e3:99::1/64",
            "dev",
            "cl0",
            "nodad",
        ],
    )?;
    ns.exec_ok(
        "ip",
        [
            "-6",
            "addr",
            "add",
            "fd00:6a7e:e3:99::2/64",
            "dev",
            "up0",
            "nodad",
        ],
    )?;
    ns.exec_ok(
        "ip",
        ["-6", "route", "add", "default", "via", "fd00:6a7e:e3:99::1"],
    )?;
    let before = v6_route(ns)?;
    ensure!(before.contains("dev up0"), "IPv6 underlay: {before}");
    s.gw_dir.set("full_tunnel", "true")?;
    for (phase, with_v6) in [
        ("gatehoused-full6.log", true),
        ("gatehoused-full4.log", false),
    ] {
        if !with_v6 {
            // The same gateway without IPv6 inside tunnels.
            let text = s.gw_dir.config_text()?;
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("client_pool_v6") && !l.starts_with("address_space_v6"))
                .collect();
            std::fs::write(s.gw_dir.config_path(), kept.join("\n") + "\n")?;
        }
        let gw = s.start_gateway(phase)?;
        let ctx = || logs(&gw, &svc.log_tail(30));
        let out = home.run(
            Some(ns),
            &["connect", "dave", "--protocol", "openvpn-udp"],
            Duration::from_secs(45),
        )?;
        ensure!(out.success(), "{out}\n{}", ctx());
        wait_ping(ns, s.topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;
        let during = v6_route(ns)?;
        if with_v6 {
            ensure!(
                during.contains(&format!("dev {DEFAULT_TUN}")),
                "full tunnel with IPv6: {OUTSIDE_V6} goes {during}"
            );
            wait_ping6(ns, lan_host_v6(), Duration::from_secs(10)).with_context(ctx)?;
        } else {
            ensure!(
                during.contains("No route to host"),
                "full tunnel without IPv6: {OUTSIDE_V6} goes {during} (leaks around the tunnel)"
            );
            let ping = ns.exec("ping", ["-6", "-n", "-c", "1", "-W", "1", OUTSIDE_V6])?;
            let said = String::from_utf8_lossy(&ping.stderr);
            ensure!(
                !ping.status.success() && said.contains("No route to host"),
                "IPv6 ping to {OUTSIDE_V6} was not refused at once: {said}"
            );
        }
        eprintln!(
            "full tunnel, IPv6 inside: {with_v6}: {OUTSIDE_V6} -> {}",
            during.trim()
        );
        home.run_ok(Some(ns), &["disconnect"])?;
        let after = v6_route(ns)?;
        ensure!(after.contains("dev up0"), "after disconnect: {after}");
        let halves = ns.exec_ok("ip", ["-6", "route", "show", "table", "all", "::/1"])?;
        ensure!(halves.trim().is_empty(), "left behind: {halves}");
        gw.terminate(Duration::from_secs(5))?;
    }
    Ok(())
}
