//! WireGuard point-to-site for stock WireGuard apps, end to end (tag `wg`, subnet 213): an
//! identity issued with `gatehouse-certs issue-wireguard` to a running gatehoused, exported as a `wg-quick` file (and
//! a QR code), loaded into wireguard-go with `wg setconf` (wg-quick's Address/DNS lines
//! applied by the test), reaches the LAN behind gatehoused from its pool address, over IPv4
//! and IPv6 (its IPv6 address follows its IPv4 one in `client_pool_v6`); revoking the
//! identity stops its traffic within 5 s.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::cidr::Ipv4Cidr;
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir, certs_cli};
use gatehouse_tests::ipv6::{lan_ipv6_between, wait_ping6};
use gatehouse_tests::net::{ping, wait_ping};
use gatehouse_tests::wireguard::{WgGo, address_of, ctl_json, setconf_of_wg_quick};
use gatehouse_tests::{GatewayTopology, require_commands, require_root};

#[test]
fn a_stock_wireguard_peer_reaches_the_lan_until_revoked() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping", "wg", "wireguard-go", "zbarimg"]);
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let logs = dir.path();
    let topo = GatewayTopology::new("wg", 213, 1)?;
    let gw = GatewayDir::for_topology(&logs.join("gw"), &topo, "ghwg213")?;
    let pki = gw.pki();
    // Dual stack: an IPv6 pool and an IPv6 LAN behind the gateway.
    gw.set("client_pool_v6", "\"fd00:213:8::/64\"")?;
    gw.set("address_space_v6", "[\"fd00:213:1::/64\"]")?;
    let lan_host6: std::net::Ipv6Addr = "fd00:213:1::10".parse()?;
    lan_ipv6_between(
        &topo.gateway,
        "lan0",
        "fd00:213:1::1".parse()?,
        &topo.lan,
        "gw0",
        lan_host6,
    )?;
    // The gateway runs before the first identity exists: issuing it turns WireGuard on.
    let gh = Gatehoused::start(&topo.gateway, &gw, &logs.join("gatehoused.log"))?;
    let issued = certs_cli(&pki, &["issue-wireguard", "phone"])?;
    ensure!(
        issued.contains("issued WireGuard identity phone"),
        "{issued}"
    );
    let conf_path = logs.join("phone.conf");
    let qr_path = logs.join("phone.png");
    let gateway = topo.client(0).gateway_addr.to_string();
    certs_cli(
        &pki,
        &[
            "export",
            "phone",
            "--gateway",
            &gateway,
            "--format",
            "wireguard",
            "-o",
            &conf_path.display().to_string(),
            "--qr",
            &qr_path.display().to_string(),
        ],
    )?;
    let conf = std::fs::read_to_string(&conf_path)?;
    let png = std::fs::read(&qr_path)?;
    ensure!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the QR code is not a PNG"
    );
    // The QR code holds exactly the file (what the phone apps scan).
    let scanned = std::process::Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&qr_path)
        .output()?;
    ensure!(
        scanned.status.success(),
        "zbarimg could not read the QR code"
    );
    ensure!(
        String::from_utf8_lossy(&scanned.stdout).trim_end() == conf.trim_end(),
        "the QR code does not hold the exported file"
    );
    let listing = certs_cli(&pki, &["list"])?;
    ensure!(listing.contains("phone"), "list:\n{listing}");

    gh.wait_event(
        "WireGuard started: the first WireGuard peer was configured",
        |_| true,
        Duration::from_secs(5),
    )?;
    let (setconf, addresses) = setconf_of_wg_quick(&conf);
    let address = address_of(addresses.first().context("no Address in the export")?)?;
    // Its IPv6 address is the IPv4 one's host part in the IPv6 pool.
    let address6: std::net::Ipv6Addr = format!("fd00:213:8::{:x}", address.octets()[3]).parse()?;
    ensure!(
        addresses.get(1) == Some(&format!("{address6}/128")),
        "the export's Address lacks {address6}/128: {addresses:?}"
    );
    ensure!(
        conf.lines().any(|l| l.starts_with("AllowedIPs = ")
            && l.contains("fd00:213:1::/64")
            && l.contains("fd00:213:8::/64")),
        "the export's AllowedIPs lack the IPv6 networks:\n{conf}"
    );
    ensure!(
        Ipv4Cidr::new(address, 24).network() == topo.vpn_pool.network(),
        "address {address} is outside the pool {}",
        topo.vpn_pool
    );
    let client = &topo.client(0).ns;
    let wg = WgGo::start(
        client,
        "wgwg213",
        &setconf,
        Ipv4Cidr::new(address, 32),
        &[topo.lan_net],
        logs,
    )?;
    let ctx = || {
        format!(
            "gatehoused:\n{}\nwg show:\n{}\nwireguard-go:\n{}",
            gh.log_tail(30),
            wg.show(),
            wg.log_tail(10)
        )
    };
    wait_ping(client, topo.lan_host, Duration::from_secs(20)).with_context(ctx)?;
    // IPv6 through the same tunnel (wg-quick would apply both Address entries and routes).
    client.exec_ok(
        "ip",
        [
            "-6",
            "addr",
            "add",
            &format!("{address6}/128"),
            "dev",
            &wg.iface,
            "nodad",
        ],
    )?;
    client.exec_ok(
        "ip",
        ["-6", "route", "add", "fd00:213:1::/64", "dev", &wg.iface],
    )?;
    wait_ping6(client, lan_host6, Duration::from_secs(10)).with_context(ctx)?;
    let up = gh
        .wait_connected("phone", Duration::from_secs(5))
        .with_context(ctx)?;
    ensure!(
        up.field("transport") == Some("wireguard") && up.address() == Some(address),
        "connected event: {up:?}"
    );
    let sessions = ctl_json(gw.path(), "sessions")?;
    ensure!(
        sessions
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["client"] == "phone"
                && x["protocol"] == "wireguard"
                && x["virtual_address"] == address.to_string())),
        "the admin API's sessions: {sessions}"
    );
    eprintln!(
        "wireguard-go reaches the LAN through gatehoused in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Roaming: the phone's underlay address changes (10.250.213.2 -> .6, the /30 next to its
    // link); its next packets move the tunnel and traffic goes on.
    let moved_at = Instant::now();
    let old_addr = topo.client(0).addr;
    let new_addr = std::net::Ipv4Addr::new(10, 250, 213, 6);
    topo.gateway
        .exec_ok("ip", ["addr", "add", "10.250.213.5/30", "dev", "cl0"])?;
    client.exec_ok(
        "ip",
        ["addr", "add", &format!("{new_addr}/30"), "dev", "up0"],
    )?;
    client.exec_ok(
        "ip",
        ["addr", "del", &format!("{old_addr}/30"), "dev", "up0"],
    )?;
    client.exec_ok(
        "ip",
        [
            "route",
            "add",
            &format!("{gateway}/32"),
            "dev",
            "up0",
            "src",
            &new_addr.to_string(),
        ],
    )?;
    // As the phone apps do on a network change: wireguard-go forgets the source address it
    // was sending from (else it keeps using the gone one until its next handshake, ~15 s).
    let server_key = conf
        .lines()
        .find_map(|l| l.strip_prefix("PublicKey = "))
        .context("no PublicKey in the export")?;
    client.exec_ok(
        "wg",
        [
            "set",
            &wg.iface,
            "peer",
            server_key,
            "endpoint",
            &format!("{gateway}:51820"),
        ],
    )?;
    wait_ping(client, topo.lan_host, Duration::from_secs(20)).with_context(ctx)?;
    let roamed = gh
        .wait_event(
            "WireGuard peer roamed to a new address",
            |e| e.field("peer") == Some("phone"),
            Duration::from_secs(5),
        )
        .with_context(ctx)?;
    ensure!(
        roamed
            .field("to")
            .is_some_and(|t| t.starts_with(&format!("{new_addr}:"))),
        "roamed: {roamed:?}"
    );
    eprintln!(
        "roamed to {new_addr}: traffic flows again {:.1} s after the address change",
        moved_at.elapsed().as_secs_f64()
    );

    // Anti-spoofing: the peer may send from its own address only.
    let spoofed = std::net::Ipv4Addr::new(10, 8, 213, 77);
    client.exec_ok(
        "ip",
        ["addr", "add", &format!("{spoofed}/32"), "dev", &wg.iface],
    )?;
    let spoofs = || -> u64 {
        ctl_json(gw.path(), "status")
            .ok()
            .and_then(|s| s["drops"]["spoofed"].as_u64())
            .unwrap_or(0)
    };
    let before = spoofs();
    let out = client.exec(
        "ping",
        [
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            &spoofed.to_string(),
            &topo.lan_host.to_string(),
        ],
    )?;
    ensure!(
        !out.status.success(),
        "a packet from {spoofed}, not the peer's address, reached the LAN"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while spoofs() < before + 2 {
        ensure!(
            Instant::now() < deadline,
            "the gateway did not count the spoofed packets (drops: {before} -> {})",
            spoofs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Revoke: its traffic stops within 5 s.
    certs_cli(&pki, &["revoke", "phone"])?;
    let revoked_at = Instant::now();
    let mut stopped = None;
    while revoked_at.elapsed() < Duration::from_secs(10) {
        if !ping(client, topo.lan_host, 1, Duration::from_millis(500)) {
            stopped = Some(revoked_at.elapsed());
            break;
        }
    }
    let stopped = stopped
        .context("the revoked peer still reaches the LAN 10 s after `revoke`")
        .with_context(ctx)?;
    ensure!(
        stopped <= Duration::from_secs(5),
        "traffic stopped only {stopped:?} after `revoke`"
    );
    // And it stays stopped (a new handshake is refused too).
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        !ping(client, topo.lan_host, 3, Duration::from_secs(3)),
        "the revoked peer reaches the LAN again"
    );
    gh.wait_event(
        "session ended: WireGuard identity revoked or removed",
        |e| e.field("client") == Some("phone"),
        Duration::from_secs(2),
    )
    .with_context(ctx)?;
    eprintln!(
        "revoked: traffic stopped {:.1} s after `gatehouse-certs revoke`; whole test {:.1} s",
        stopped.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    ensure!(gh.is_running());
    Ok(())
}
