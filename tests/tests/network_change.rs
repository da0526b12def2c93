//! Network changes (issue 18): when the client's underlay address goes away and another one
//! takes over with a new default route, Gatehouse's own client (`gatehouse connect`) notices it
//! from the kernel's announcements (netlink) and connects again from the new address at once -
//! not after its keepalive timeout, which here is a full minute (OpenVPN `ping_restart` 60 s,
//! IKEv2 DPD 30 s), so only the network-change path can explain a tunnel that is back within
//! seconds.
//!
//! Scenario, per protocol: connected, pinging the LAN host behind the gateway; then in the
//! client's namespace `ip addr del 10.250.225.2/30`, `ip addr add 10.250.225.6/30`, `ip route
//! add default via 10.250.225.5` (the gateway's side of the new network is a second address
//! on its end of the link). The client must log `network changed: ... reconnecting`, the
//! gateway must log a new `client connected` from 10.250.225.6, and a ping through the tunnel
//! must be answered, all within [`BACK_WITHIN`] of the change. The time is printed.
//!
//! Topology: tag `nc`, subnet index 225. The tests share both, so they take turns (one lock).

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::client::{ClientHome, ClientService};
use gatehouse_tests::gatehoused::{CONNECTED, Gatehoused, GatewayDir, toml_str};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::{GatewayTopology, Netns, require_commands, require_root};

const NAME: &str = "alice";
const SUBNET: u8 = 225;
/// The client's new underlay address, and the gateway's address on that new network.
const NEW_ADDR: Ipv4Addr = Ipv4Addr::new(10, 250, SUBNET, 6);
const NEW_ROUTER: Ipv4Addr = Ipv4Addr::new(10, 250, SUBNET, 5);
/// How soon after the change the tunnel must be back (issue 18 asks for 2 s; this leaves
/// room for two busy cores). Far below every keepalive timeout configured here.
const BACK_WITHIN: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// The tests share the tag and the subnet: one at a time.
static TURN: Mutex<()> = Mutex::new(());

fn logs(gw: &Gatehoused, svc: &ClientService) -> String {
    format!(
        "gatehoused log:\n{}\nclient service log:\n{}",
        gw.log_tail(30),
        svc.log_tail(40)
    )
}

/// One ping through the tunnel with a short wait, so the time it is first answered is
/// measured to a few hundred milliseconds.
fn ping_once(ns: &Netns, addr: Ipv4Addr) -> bool {
    ns.exec(
        "ping",
        ["-n", "-q", "-c", "1", "-W", "0.3", &addr.to_string()],
    )
    .is_ok_and(|o| o.status.success())
}

/// What one change measured, from the moment the old address was deleted.
#[derive(Debug)]
struct Measured {
    /// The client logged `network changed`.
    noticed: Duration,
    /// The gateway logged the new session from the new address.
    reconnected: Duration,
    /// A ping through the tunnel was answered after that.
    answered: Duration,
}

/// Connects over `protocol`, moves the client to a new underlay address and measures how
/// soon the tunnel is back.
fn moves_to_the_new_network(protocol: &str) -> Result<Measured> {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    require_commands(&["ip", "ping"]);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("nc", SUBNET, 1)?;
    let gw_dir =
        GatewayDir::for_topology(&dir.path().join("gateway"), &topo, &format!("ghd{SUBNET}"))?;
    // A dead path would take a minute to notice by keepalive (OpenVPN pushes these to the
    // client; IKEv2's DPD is 30 s in the client).
    gw_dir.set("openvpn.ping", &toml_str("10s"))?;
    gw_dir.set("openvpn.ping_restart", &toml_str("60s"))?;
    gw_dir.issue_client(NAME, &[])?;
    let client = ClientHome::new(
        &dir.path().join("client"),
        "# scratch resolv.conf of network_change\nnameserver 192.0.2.53\n",
    )?;
    let gateway = topo.client(0).gateway_addr;
    client.import_profile(&gw_dir, NAME, gateway)?;
    let ns = &topo.client(0).ns;
    let old_addr = topo.client(0).addr;
    // The router of the network the client moves to (here the gateway's host itself, a
    // second address on its end of the link). Its route to that network keeps the public
    // address as the source, as a gateway behind a separate router would answer: gatehoused
    // answers UDP from the address the kernel picks for the client, and the client takes
    // answers only from the address it dialled.
    topo.gateway.exec_ok(
        "ip",
        ["addr", "add", &format!("{NEW_ROUTER}/30"), "dev", "cl0"],
    )?;
    topo.gateway.exec_ok(
        "ip",
        [
            "route",
            "replace",
            &format!("{}/30", Ipv4Addr::from(u32::from(NEW_ROUTER) - 1)),
            "dev",
            "cl0",
            "src",
            &gateway.to_string(),
        ],
    )?;

    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.path().join("gatehoused.log"))?;
    let svc = ClientService::start(ns, &client, &dir.path().join("service.log"))?;
    let ctx = || logs(&gw, &svc);
    let out = client.run(
        Some(ns),
        &["connect", NAME, "--protocol", protocol],
        CONNECT_TIMEOUT,
    )?;
    eprintln!("{out}");
    ensure!(
        out.success() && out.stdout.contains("Connected"),
        "{out}\n{}",
        ctx()
    );
    let first = gw.wait_connected(NAME, Duration::from_secs(10))?;
    ensure!(
        first.remote_is(old_addr),
        "first session not from {old_addr}: {}",
        first.line
    );
    wait_ping(ns, topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;
    // The client's own TUN device, address and routes came up with the connection: they
    // are not a network change.
    let changes_before = svc.log().matches("network changed").count();
    ensure!(
        changes_before == 0,
        "connecting counted as a network change:\n{}",
        ctx()
    );

    // The move: the old address goes, a new one and a default route through it come.
    let moved = Instant::now();
    ns.exec_ok(
        "ip",
        ["addr", "del", &format!("{old_addr}/30"), "dev", "up0"],
    )?;
    ns.exec_ok(
        "ip",
        ["addr", "add", &format!("{NEW_ADDR}/30"), "dev", "up0"],
    )?;
    ns.exec_ok(
        "ip",
        ["route", "add", "default", "via", &NEW_ROUTER.to_string()],
    )?;

    let mut noticed = None;
    let mut reconnected = None;
    let mut answered = None;
    let deadline = moved + BACK_WITHIN;
    while answered.is_none() {
        if Instant::now() >= deadline {
            bail!(
                "{protocol}: the tunnel was not back within {BACK_WITHIN:?} of the change \
                 (client noticed: {noticed:?}, new session at the gateway: {reconnected:?})\n{}",
                ctx()
            );
        }
        if noticed.is_none() && svc.log().matches("network changed").count() > changes_before {
            noticed = Some(moved.elapsed());
        }
        if reconnected.is_none()
            && gw
                .events(CONNECTED)
                .iter()
                .any(|e| e.field("client") == Some(NAME) && e.remote_is(NEW_ADDR))
        {
            reconnected = Some(moved.elapsed());
        }
        // Answered after the new session: the tunnel from the new address carries traffic.
        if reconnected.is_some() && ping_once(ns, topo.lan_host) {
            answered = Some(moved.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = svc.log();
    let line = log
        .lines()
        .find(|l| l.contains("network changed") && l.contains("reconnecting"))
        .with_context(|| format!("no `network changed ... reconnecting` line\n{}", ctx()))?;
    eprintln!("client: {line}");
    ensure!(
        line.contains(&NEW_ADDR.to_string()),
        "the line does not name the new address {NEW_ADDR}: {line}"
    );
    let st = client.status(ns)?;
    ensure!(
        st.state() == "connected" && st.protocol() == Some(protocol),
        "status after the move: {}\n{}",
        st.json,
        ctx()
    );
    let measured = Measured {
        noticed: noticed.context("the client never logged `network changed`")?,
        reconnected: reconnected.context("no new session")?,
        answered: answered.context("no answer")?,
    };
    eprintln!(
        "{protocol}: network changed -> noticed {} ms, new session {} ms, ping answered {} ms",
        measured.noticed.as_millis(),
        measured.reconnected.as_millis(),
        measured.answered.as_millis()
    );

    // Once, not a loop: the new connection's own TUN and routes (and the old ones going)
    // start nothing more. Two settle periods and then some.
    std::thread::sleep(Duration::from_millis(1500));
    let changes = svc.log().matches("network changed").count();
    let sessions = gw
        .events(CONNECTED)
        .iter()
        .filter(|e| e.field("client") == Some(NAME))
        .count();
    ensure!(
        changes == 1 && sessions == 2,
        "expected one network change and one new session, saw {changes} and {} new\n{}",
        sessions.saturating_sub(1),
        ctx()
    );
    wait_ping(ns, topo.lan_host, Duration::from_secs(2)).with_context(ctx)?;

    client.run_ok(Some(ns), &["disconnect"])?;
    ensure!(gw.is_running(), "gatehoused died:\n{}", gw.log_tail(30));
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(measured)
}

#[test]
fn openvpn_udp_reconnects_at_once_when_the_network_changes() -> Result<()> {
    moves_to_the_new_network("openvpn-udp").map(drop)
}

#[test]
fn openvpn_tcp_reconnects_at_once_when_the_network_changes() -> Result<()> {
    moves_to_the_new_network("openvpn-tcp").map(drop)
}

#[test]
fn ikev2_reconnects_at_once_when_the_network_changes() -> Result<()> {
    moves_to_the_new_network("ikev2").map(drop)
}
