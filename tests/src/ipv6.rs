//! IPv6 helpers shared by the IPv6 end-to-end tests: `ping -6` and IPv6 on a
//! [`GatewaySetup`]'s LAN.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::GatewaySetup;
use crate::gatehoused::LogEvent;
use crate::netns::Netns;

/// The global (not link-local) IPv6 addresses of `dev` in `ns`.
pub fn global_ipv6(ns: &Netns, dev: &str) -> Result<Vec<Ipv6Addr>> {
    let out = ns.exec_ok("ip", ["-6", "-br", "addr", "show", "dev", dev])?;
    Ok(out
        .split_whitespace()
        .filter_map(|w| w.split_once('/'))
        .filter_map(|(a, _)| a.parse::<Ipv6Addr>().ok())
        .filter(|a| a.segments()[0] & 0xffc0 != 0xfe80)
        .collect())
}

/// `ping -6` from `ns` to `addr` (optionally from `src`): (transmitted, received).
pub fn ping6(ns: &Netns, addr: Ipv6Addr, count: u32, src: Option<Ipv6Addr>) -> Result<(u32, u32)> {
    let mut args = vec![
        "-6".to_string(),
        "-n".into(),
        "-i".into(),
        "0.2".into(),
        "-W".into(),
        "1".into(),
        "-c".into(),
        count.to_string(),
    ];
    if let Some(s) = src {
        args.extend(["-I".into(), s.to_string()]);
    }
    args.push(addr.to_string());
    let out = ns.exec("ping", &args)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no ping summary: {text}"))?;
    let mut nums = line
        .split(',')
        .filter_map(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()));
    Ok((nums.next().unwrap_or(0), nums.next().unwrap_or(0)))
}

/// Pings `addr` over IPv6 until one reply comes back or `overall` passes.
pub fn wait_ping6(ns: &Netns, addr: Ipv6Addr, overall: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < overall {
        if ping6(ns, addr, 1, None).is_ok_and(|(_, r)| r == 1) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "no IPv6 ping reply from {addr} in {} within {overall:?}",
        ns.name()
    )
}

/// IPv6 on the setup's LAN: `gw_lan`/64 on the gateway's `lan0` and `host`/64 on the LAN
/// host's `gw0` (no duplicate detection), the host's default route via the gateway, and IPv6
/// forwarding in the gateway's namespace. Returns once the gateway reaches the host.
pub fn lan_ipv6(s: &GatewaySetup, gw_lan: Ipv6Addr, host: Ipv6Addr) -> Result<()> {
    lan_ipv6_between(&s.topo.gateway, "lan0", gw_lan, &s.topo.lan, "gw0", host)
}

/// IPv6 on a LAN between router `gw` (`gw_addr`/64 on `gw_dev`, IPv6 forwarding on) and
/// `host` (`host_addr`/64 on `host_dev`, default route via the router), no duplicate
/// detection. Returns once the router reaches the host.
pub fn lan_ipv6_between(
    gw: &Netns,
    gw_dev: &str,
    gw_addr: Ipv6Addr,
    host: &Netns,
    host_dev: &str,
    host_addr: Ipv6Addr,
) -> Result<()> {
    gw.exec_ok("sysctl", ["-q", "-w", "net.ipv6.conf.all.forwarding=1"])?;
    for (ns, addr, dev) in [(gw, gw_addr, gw_dev), (host, host_addr, host_dev)] {
        ns.exec_ok(
            "ip",
            [
                "-6",
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                dev,
                "nodad",
            ],
        )?;
    }
    host.exec_ok(
        "ip",
        ["-6", "route", "add", "default", "via", &gw_addr.to_string()],
    )?;
    wait_ping6(gw, host_addr, Duration::from_secs(5))
}

/// IPv6 on a site's LAN: `prefix::1/64` on the gateway's `lan0`, `prefix::10/64` on the
/// host with a default route via the gateway, IPv6 forwarding in the gateway's namespace.
/// Returns the host's address.
pub fn site_lan_v6(site: &crate::sites::Site, prefix: &str) -> Result<Ipv6Addr> {
    let gw_addr: Ipv6Addr = format!("{prefix}::1").parse()?;
    let host_addr: Ipv6Addr = format!("{prefix}::10").parse()?;
    lan_ipv6_between(
        &site.gw,
        crate::sites::LAN_IF,
        gw_addr,
        &site.host,
        crate::sites::HOST_IF,
        host_addr,
    )?;
    Ok(host_addr)
}

/// A client tunnel carries IPv6: `dev` in `ns` has an address of `pool` (a /64: its first
/// four segments), the one gatehoused logged as `address6` in `connected`, and `host`
/// answers at least 2 of 3 pings through it. Returns the address. `ctx` adds logs to errors.
pub fn check_tunnel_ipv6(
    ns: &Netns,
    dev: &str,
    pool: &str,
    connected: &LogEvent,
    host: Ipv6Addr,
    ctx: impl Fn() -> String,
) -> Result<Ipv6Addr> {
    let prefix: Ipv6Addr = pool
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("{pool} is not an IPv6 prefix"))?;
    let mine = global_ipv6(ns, dev)?
        .into_iter()
        .find(|a| a.segments()[..4] == prefix.segments()[..4])
        .with_context(|| format!("{dev} has no address of {pool}\n{}", ctx()))?;
    ensure!(
        connected.field("address6") == Some(mine.to_string().as_str()),
        "gatehoused logged address6 {:?}, {dev} has {mine}: {}",
        connected.field("address6"),
        connected.line
    );
    wait_ping6(ns, host, Duration::from_secs(5)).with_context(&ctx)?;
    let (sent, got) = ping6(ns, host, 3, None)?;
    eprintln!("{dev} {mine}: IPv6 ping {host}: {got}/{sent} replies");
    ensure!(got >= 2, "IPv6 pings lost: {got}/{sent}\n{}", ctx());
    Ok(mine)
}
