//! WireGuard site tunnels end to end, in a [`SiteLab`]: gatehoused A with a stock WireGuard
//! gateway C (wireguard-go configured by `wg`, tag `ws`, lab 214; a dual-stack site: IPv4
//! and IPv6 LANs), and two gatehoused gateways A and B over a WireGuard VNet tunnel (tag
//! `wv`, lab 215). Hosts behind each end ping each other both ways.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::cidr::Ipv4Cidr;
use gatehouse_tests::gatehouse_site::site_gateway_dir;
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir};
use gatehouse_tests::ipv6::{site_lan_v6, wait_ping6};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::sites::{SiteId, SiteLab};
use gatehouse_tests::wireguard::{WgGo, ctl_json, site_setconf, wg_connection, wg_keypair};
use gatehouse_tests::{bin, require_commands, require_root};

/// A tunnel comes up (two cores shared with everything else).
const UP: Duration = Duration::from_secs(30);
const PORT: u16 = 51820;

/// `gatehoused wireguard-pubkey --data-dir DIR` (creates the key).
fn gateway_pubkey(dir: &GatewayDir) -> Result<String> {
    let out = Command::new(bin("gatehoused"))
        .args(["wireguard-pubkey", "--data-dir"])
        .arg(dir.path())
        .output()?;
    if !out.status.success() {
        bail!(
            "gatehoused wireguard-pubkey failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn append(dir: &GatewayDir, table: &str) -> Result<()> {
    let mut text = dir.config_text()?;
    text.push_str(table);
    std::fs::write(dir.config_path(), text).context("writing gateway.toml")
}

fn start(lab: &SiteLab, id: SiteId, dir: &GatewayDir, logs: &Path) -> Result<Gatehoused> {
    Gatehoused::start(
        &lab.site(id).gw,
        dir,
        &logs.join(format!("gatehoused-{}.log", id.name())),
    )
}

fn wait_up(gw: &Gatehoused, connection: &str) -> Result<()> {
    gw.wait_event(
        "connection up",
        |e| e.field("connection") == Some(connection) && e.field("transport") == Some("wireguard"),
        UP,
    )
    .map(|_| ())
}

#[test]
fn a_site_tunnel_to_wireguard_go_carries_traffic_both_ways() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping", "wg", "wireguard-go"]);
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let logs = dir.path();
    let lab = SiteLab::new("ws", 214)?;
    let gw_a = site_gateway_dir(&lab, SiteId::A, &logs.join("a"))?;
    let a_pub = gateway_pubkey(&gw_a)?;
    let (c_priv, c_pub) = wg_keypair()?;
    let a_ep = SocketAddr::new(lab.a.underlay_addr.into(), PORT);
    let c_ep = SocketAddr::new(lab.c.underlay_addr.into(), PORT);
    // Dual stack: IPv6 LANs behind both (A has no IPv6 client pool: the site's prefix alone
    // makes it carry IPv6).
    let (a6, c6) = ("fd00:214:1::/64", "fd00:214:3::/64");
    let a_host6 = site_lan_v6(&lab.a, "fd00:214:1")?;
    let c_host6 = site_lan_v6(&lab.c, "fd00:214:3")?;
    gw_a.set("address_space_v6", &format!("[\"{a6}\"]"))?;
    // A dials C; C knows A's endpoint too (either may start).
    let c_conn = wg_connection("c", &c_pub, Some(c_ep), &[lab.c.lan], Some(5));
    let c_conn = c_conn.replace(
        "remote_address_space = [",
        &format!("remote_address_space = [\"{c6}\", "),
    );
    append(&gw_a, &c_conn)?;
    let a_side = [lab.a.lan, lab.a.pool];
    let setconf = site_setconf(&c_priv, PORT, &a_pub, Some(a_ep), &a_side);
    let setconf = setconf.replace("AllowedIPs = ", &format!("AllowedIPs = {a6}, "));
    let c = WgGo::start(
        &lab.c.gw,
        "wgws214",
        &setconf,
        Ipv4Cidr::new(std::net::Ipv4Addr::new(10, 214, 200, 3), 32),
        &a_side,
        logs,
    )?;
    lab.c
        .gw
        .exec_ok("ip", ["-6", "route", "add", a6, "dev", "wgws214"])?;
    let a = start(&lab, SiteId::A, &gw_a, logs)?;
    let ctx = || {
        format!(
            "A:\n{}\nwg show:\n{}\nwireguard-go:\n{}",
            a.log_tail(30),
            c.show(),
            c.log_tail(10)
        )
    };
    wait_up(&a, "c").with_context(ctx)?;
    wait_ping(&lab.a.host, lab.c.host_addr, Duration::from_secs(15)).with_context(ctx)?;
    wait_ping(&lab.c.host, lab.a.host_addr, Duration::from_secs(15)).with_context(ctx)?;
    wait_ping6(&lab.a.host, c_host6, Duration::from_secs(10)).with_context(ctx)?;
    wait_ping6(&lab.c.host, a_host6, Duration::from_secs(10)).with_context(ctx)?;
    // The admin API lists it.
    let conns = ctl_json(gw_a.path(), "connections")?;
    let c_conn = conns
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "c"))
        .with_context(|| format!("no connection c in {conns}"))?;
    ensure!(
        c_conn["kind"] == "wireguard"
            && c_conn["state"] == "connected"
            && c_conn["remote"] == c_ep.to_string(),
        "{c_conn}"
    );
    eprintln!(
        "gatehoused <-> wireguard-go up and pinging both ways in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    ensure!(a.is_running());
    Ok(())
}

#[test]
fn a_wireguard_vnet_tunnel_between_two_gatehoused_carries_traffic_both_ways() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping"]);
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let logs = dir.path();
    let lab = SiteLab::new("wv", 215)?;
    let gw_a = site_gateway_dir(&lab, SiteId::A, &logs.join("a"))?;
    let gw_b = site_gateway_dir(&lab, SiteId::B, &logs.join("b"))?;
    let a_pub = gateway_pubkey(&gw_a)?;
    let b_pub = gateway_pubkey(&gw_b)?;
    let b_ep = SocketAddr::new(lab.b.underlay_addr.into(), PORT);
    // A dials B; B has no endpoint for A: it waits for A to dial in.
    append(
        &gw_a,
        &wg_connection("b", &b_pub, Some(b_ep), &[lab.b.lan, lab.b.pool], None),
    )?;
    append(
        &gw_b,
        &wg_connection("a", &a_pub, None, &[lab.a.lan, lab.a.pool], None),
    )?;
    let a = start(&lab, SiteId::A, &gw_a, logs)?;
    let b = start(&lab, SiteId::B, &gw_b, logs)?;
    let ctx = || format!("A:\n{}\nB:\n{}", a.log_tail(30), b.log_tail(30));
    wait_up(&a, "b").with_context(ctx)?;
    wait_up(&b, "a").with_context(ctx)?;
    wait_ping(&lab.a.host, lab.b.host_addr, Duration::from_secs(15)).with_context(ctx)?;
    wait_ping(&lab.b.host, lab.a.host_addr, Duration::from_secs(15)).with_context(ctx)?;
    eprintln!(
        "gatehoused <-> gatehoused WireGuard VNet up and pinging both ways in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    ensure!(a.is_running() && b.is_running());
    Ok(())
}
