//! Site-to-site and VNet-to-VNet tunnels end to end (issue 6), in a [`SiteLab`]: Gatehouse
//! gateways A and B, strongSwan gateway C (kernel-libipsec), a host behind each, and a
//! point-to-site client on the underlay. Each test has its own lab index (70..=78).
//! The dual-stack tests also put IPv6 on the LANs (A and C; A and B with an own interface).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::gatehouse_site::{GhConnection, add_connections, site_gateway_dir};
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir, spawn_stock_client, wait_client_up};
use gatehouse_tests::ipv6::{ping6, site_lan_v6, wait_ping6};
use gatehouse_tests::net::{iperf3_client, iperf3_server, wait_ping};
use gatehouse_tests::sites::{SiteId, SiteLab};
use gatehouse_tests::strongswan::ping_run;
use gatehouse_tests::swan_site::{StartAction, SwanAuth, SwanMode, SwanSite, SwanSiteConfig};
use gatehouse_tests::{require_commands, require_root};

/// A tunnel comes up (both ends started; two cores shared with everything else).
const UP: Duration = Duration::from_secs(40);

fn wait_up(gw: &Gatehoused, connection: &str) -> Result<()> {
    gw.wait_event(
        "connection up",
        |e| e.field("connection") == Some(connection),
        UP,
    )
    .map(|_| ())
}

fn start(lab: &SiteLab, id: SiteId, dir: &GatewayDir, logs: &Path) -> Result<Gatehoused> {
    let ns = &lab.site(id).gw;
    Gatehoused::start(ns, dir, &logs.join(format!("gatehoused-{}.log", id.name())))
}

#[test]
fn vnet_to_vnet_psk_between_two_gatehouse_gateways() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping"]);
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let lab = SiteLab::new("v2v", 70)?;
    let gw_a = site_gateway_dir(&lab, SiteId::A, &dir.path().join("a"))?;
    let gw_b = site_gateway_dir(&lab, SiteId::B, &dir.path().join("b"))?;
    let mut ab = GhConnection::between(&lab, SiteId::A, SiteId::B, "vnet key 70: Hq7Zr2Wm9Xb4");
    ab.kind = "vnet-to-vnet";
    let mut ba = GhConnection::between(&lab, SiteId::B, SiteId::A, "vnet key 70: Hq7Zr2Wm9Xb4");
    ba.kind = "vnet-to-vnet";
    add_connections(&gw_a, &[ab])?;
    add_connections(&gw_b, &[ba])?;
    let a = start(&lab, SiteId::A, &gw_a, dir.path())?;
    let b = start(&lab, SiteId::B, &gw_b, dir.path())?;
    let ctx = || format!("A:\n{}\nB:\n{}", a.log_tail(30), b.log_tail(30));
    wait_up(&a, "ab").with_context(ctx)?;
    wait_up(&b, "ba").with_context(ctx)?;
    wait_ping(&lab.a.host, lab.b.host_addr, Duration::from_secs(20)).with_context(ctx)?;
    wait_ping(&lab.b.host, lab.a.host_addr, Duration::from_secs(20)).with_context(ctx)?;
    eprintln!(
        "A<->B up and pinging in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    ensure!(a.is_running() && b.is_running());
    Ok(())
}

/// iperf3 from `from` to a server on `to` through a tunnel; the measured rate, Mbit/s.
fn iperf(
    lab_from: &gatehouse_tests::Netns,
    to: &gatehouse_tests::Netns,
    addr: std::net::Ipv4Addr,
    port: u16,
    log: &Path,
) -> Result<f64> {
    let _server = iperf3_server(to, addr, port, log)?;
    let r = iperf3_client(lab_from, addr, port, 3, &[])?;
    Ok(r.bits_per_second_received / 1e6)
}

/// The whole picture: A (Gatehouse) <-> B (Gatehouse) VNet-to-VNet with a PSK, A <-> C
/// (strongSwan, route-based, PSK) site-to-site; hosts ping and iperf3 across both; a P2S
/// client of A reaches the hosts of B and C; B restarts and comes back by itself while
/// A <-> C does not lose a ping.
#[test]
fn three_sites_transit_and_a_gateway_restart() -> Result<()> {
    require_root();
    require_commands(&[
        "ip",
        "ping",
        "iperf3",
        "openvpn",
        "charon-systemd",
        "swanctl",
    ]);
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let lab = SiteLab::new("s3", 71)?;
    let logs = dir.path();
    let gw_a = site_gateway_dir(&lab, SiteId::A, &logs.join("a"))?;
    let gw_b = site_gateway_dir(&lab, SiteId::B, &logs.join("b"))?;
    let mut ab = GhConnection::between(&lab, SiteId::A, SiteId::B, "vnet key 71: Hq7Zr2Wm9Xb4");
    ab.kind = "vnet-to-vnet";
    let mut ba = GhConnection::between(&lab, SiteId::B, SiteId::A, "vnet key 71: Hq7Zr2Wm9Xb4");
    ba.kind = "vnet-to-vnet";
    let mut ac = GhConnection::between(&lab, SiteId::A, SiteId::C, "site key 71: Hq7Zr2Wm9Xb4");
    ac.remote_address_space = vec![lab.c.lan.network()];
    add_connections(&gw_a, &[ab, ac])?;
    add_connections(&gw_b, &[ba])?;
    // C: strongSwan, route-based, waits for A; reaches A's LAN and A's P2S pool.
    let mut c_cfg = SwanSiteConfig::between(
        &lab,
        SiteId::C,
        SiteId::A,
        SwanAuth::Psk("site key 71: Hq7Zr2Wm9Xb4".into()),
    );
    c_cfg.mode = SwanMode::RouteBased;
    c_cfg.start_action = StartAction::None;
    c_cfg.remote_prefixes.push(lab.a.pool.network());
    let c = SwanSite::start(&lab.c.gw, &logs.join("c"), &c_cfg)?;
    let a = start(&lab, SiteId::A, &gw_a, logs)?;
    let b = start(&lab, SiteId::B, &gw_b, logs)?;
    let ctx = || {
        format!(
            "A:\n{}\nB:\n{}\nC:\n{}",
            a.log_tail(30),
            b.log_tail(20),
            c.log_tail(20)
        )
    };
    wait_up(&a, "ab").with_context(ctx)?;
    wait_up(&a, "ac").with_context(ctx)?;
    wait_up(&b, "ba").with_context(ctx)?;
    c.wait_child_installed(UP).with_context(ctx)?;
    eprintln!("tunnels up in {:.1} s", t0.elapsed().as_secs_f64());

    // Hosts across every connected pair, both ways.
    for (from, to) in [
        (&lab.a, &lab.b),
        (&lab.b, &lab.a),
        (&lab.a, &lab.c),
        (&lab.c, &lab.a),
    ] {
        wait_ping(&from.host, to.host_addr, Duration::from_secs(20))
            .with_context(|| format!("{:?} -> {:?}", from.id, to.id))
            .with_context(ctx)?;
    }
    // B and C have no tunnel between them: nothing crosses.
    ensure!(
        !gatehouse_tests::net::ping(&lab.b.host, lab.c.host_addr, 2, Duration::from_secs(3)),
        "B reached C without a tunnel"
    );
    let ab_rate = iperf(
        &lab.a.host,
        &lab.b.host,
        lab.b.host_addr,
        5201,
        &logs.join("iperf-b.log"),
    )
    .with_context(ctx)?;
    let ac_rate = iperf(
        &lab.a.host,
        &lab.c.host,
        lab.c.host_addr,
        5202,
        &logs.join("iperf-c.log"),
    )
    .with_context(ctx)?;
    eprintln!("iperf3 A->B {ab_rate:.0} Mbit/s, A->C {ac_rate:.0} Mbit/s");
    ensure!(
        ab_rate > 1.0 && ac_rate > 1.0,
        "no throughput: {ab_rate} {ac_rate}"
    );

    // A point-to-site client of A reaches B's and C's hosts through A.
    let profile = gw_a.client_profile("alice", lab.a.underlay_addr, &logs.join("alice.ovpn"))?;
    let client = spawn_stock_client(
        &lab.client,
        &profile,
        "tun71",
        &[],
        &logs.join("openvpn-alice.log"),
    )?;
    wait_client_up(&client, &a, 1, UP)?;
    for to in [lab.a.host_addr, lab.b.host_addr, lab.c.host_addr] {
        wait_ping(&lab.client, to, Duration::from_secs(20))
            .with_context(|| format!("P2S client -> {to}"))
            .with_context(ctx)?;
    }

    // Restart B: A <-> C keeps every ping meanwhile; A <-> B comes back by itself.
    let ups_before = a
        .events("connection up")
        .iter()
        .filter(|e| e.field("connection") == Some("ab"))
        .count();
    let (pings, b2) = std::thread::scope(|sc| -> Result<_> {
        let run = sc.spawn(|| ping_run(&lab.a.host, lab.c.host_addr, 60, "0.2"));
        std::thread::sleep(Duration::from_secs(1));
        b.terminate(Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_secs(2));
        let b2 = Gatehoused::start(&lab.b.gw, &gw_b, &logs.join("gatehoused-b2.log"))?;
        let pings = run
            .join()
            .map_err(|_| anyhow::anyhow!("ping thread panicked"))??;
        Ok((pings, b2))
    })?;
    let ((sent, got), out) = pings;
    ensure!(
        sent == 60 && got == sent,
        "A -> C lost pings while B restarted: {got}/{sent}\n{out}"
    );
    wait_up(&b2, "ba").with_context(ctx)?;
    a.wait_event("connection up", |e| e.field("connection") == Some("ab"), UP)?;
    let deadline = Instant::now() + UP;
    while a
        .events("connection up")
        .iter()
        .filter(|e| e.field("connection") == Some("ab"))
        .count()
        <= ups_before
    {
        ensure!(
            Instant::now() < deadline,
            "A never brought ab up again:\n{}",
            a.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_ping(&lab.a.host, lab.b.host_addr, Duration::from_secs(30)).with_context(|| {
        format!(
            "after B's restart\nA:\n{}\nB2:\n{}",
            a.log_tail(30),
            b2.log_tail(30)
        )
    })?;
    wait_ping(&lab.client, lab.b.host_addr, Duration::from_secs(20))
        .context("P2S client -> B after B's restart")?;
    eprintln!(
        "B restarted; A<->B back; A<->C {got}/{sent} pings; total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    drop(client);
    ensure!(a.is_running() && b2.is_running() && c.is_running());
    Ok(())
}

/// A <-> C with certificates (C's issued by A's CA) and policy-based selectors on both
/// ends; C starts the SA, A answers as responder.
#[test]
fn strongswan_site_with_certificates_policy_based() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping", "charon-systemd", "swanctl"]);
    let dir = tempfile::tempdir()?;
    let lab = SiteLab::new("sc", 73)?;
    let logs = dir.path();
    let gw_a = site_gateway_dir(&lab, SiteId::A, &logs.join("a"))?;
    let mut ac = GhConnection::between(&lab, SiteId::A, SiteId::C, "unused");
    ac.psk = None;
    ac.policy_based = true;
    ac.initiate = false;
    ac.remote_address_space = vec![lab.c.lan.network()];
    add_connections(&gw_a, &[ac])?;
    let creds =
        gatehouse_tests::swan_site::issue_site_cert(&gw_a.pki(), "gwc", lab.c.underlay_addr)?;
    let mut c_cfg = SwanSiteConfig::between(&lab, SiteId::C, SiteId::A, SwanAuth::Pubkey(creds));
    c_cfg.start_action = StartAction::Start;
    c_cfg.remote_prefixes.push(lab.a.pool.network());
    let a = start(&lab, SiteId::A, &gw_a, logs)?;
    let c = SwanSite::start(&lab.c.gw, &logs.join("c"), &c_cfg)?;
    let ctx = || format!("A:\n{}\nC:\n{}", a.log_tail(30), c.log_tail(30));
    let up = a
        .wait_event("connection up", |e| e.field("connection") == Some("ac"), UP)
        .with_context(ctx)?;
    ensure!(up.field("role") == Some("responder"), "{}", up.line);
    let child = c.wait_child_installed(UP).with_context(ctx)?;
    // Policy-based: the selectors are the prefixes, not 0.0.0.0/0.
    ensure!(
        child
            .local_ts
            .iter()
            .any(|t| t.contains(&lab.c.lan.network().to_string()))
            && child
                .remote_ts
                .iter()
                .any(|t| t.contains(&lab.a.lan.network().to_string())),
        "selectors {:?} === {:?}",
        child.local_ts,
        child.remote_ts
    );
    ensure!(
        c.log().contains("authentication of '10.73.0.1' with ECDSA")
            || c.log()
                .contains(&format!("authentication of '{}'", lab.a.underlay_addr)),
        "C did not log A's certificate authentication:\n{}",
        c.log_tail(30)
    );
    for (from, to) in [(&lab.a, &lab.c), (&lab.c, &lab.a)] {
        wait_ping(&from.host, to.host_addr, Duration::from_secs(20))
            .with_context(|| format!("{:?} -> {:?}", from.id, to.id))
            .with_context(ctx)?;
    }
    Ok(())
}

/// A wrong PSK (A <-> B, both Gatehouse) and mismatched IKE proposals (A <-> C) are
/// refused, and the logs at both ends say why.
#[test]
fn wrong_psk_and_mismatched_proposals_are_refused_with_reasons() -> Result<()> {
    require_root();
    require_commands(&["ip", "charon-systemd", "swanctl"]);
    let dir = tempfile::tempdir()?;
    let lab = SiteLab::new("sr", 72)?;
    let logs = dir.path();
    let gw_a = site_gateway_dir(&lab, SiteId::A, &logs.join("a"))?;
    let gw_b = site_gateway_dir(&lab, SiteId::B, &logs.join("b"))?;
    let ab = GhConnection::between(&lab, SiteId::A, SiteId::B, "the right key: Hq7Zr2Wm9Xb4");
    let ba = GhConnection::between(&lab, SiteId::B, SiteId::A, "a wrong key: Hq7Zr2Wm9Xb4");
    let mut ac = GhConnection::between(&lab, SiteId::A, SiteId::C, "site key 72: Hq7Zr2Wm9Xb4");
    ac.remote_address_space = vec![lab.c.lan.network()];
    ac.ike_proposals = Some(vec!["aes256gcm16-prfsha384-x25519".into()]);
    add_connections(&gw_a, &[ab, ac])?;
    add_connections(&gw_b, &[ba])?;
    // C offers and accepts only AES-CBC-128/SHA-256/MODP-2048, and initiates too.
    let mut c_cfg = SwanSiteConfig::between(
        &lab,
        SiteId::C,
        SiteId::A,
        SwanAuth::Psk("site key 72: Hq7Zr2Wm9Xb4".into()),
    );
    c_cfg.start_action = StartAction::Start;
    c_cfg.ike_proposals = "aes128-sha256-modp2048".into();
    let a = start(&lab, SiteId::A, &gw_a, logs)?;
    let b = start(&lab, SiteId::B, &gw_b, logs)?;
    let c = SwanSite::start(&lab.c.gw, &logs.join("c"), &c_cfg)?;
    let ctx = || {
        format!(
            "A:\n{}\nB:\n{}\nC:\n{}",
            a.log_tail(30),
            b.log_tail(20),
            c.log_tail(20)
        )
    };
    let refused = |gw: &Gatehoused, conn: &'static str, needle: &'static str| {
        gw.wait_event(
            "connection refused",
            move |e| {
                e.field("connection") == Some(conn)
                    && e.field("reason").is_some_and(|r| r.contains(needle))
            },
            UP,
        )
    };
    // Each side, as responder, checks the other's AUTH and names the key; as initiator it
    // is told AUTHENTICATION_FAILED.
    refused(&a, "ab", "pre-shared key mismatch").with_context(ctx)?;
    refused(&b, "ba", "pre-shared key mismatch").with_context(ctx)?;
    refused(&a, "ab", "AUTHENTICATION_FAILED").with_context(ctx)?;
    refused(&b, "ba", "AUTHENTICATION_FAILED").with_context(ctx)?;
    // C's proposal reaches A: A names both sides' algorithms; C is told NO_PROPOSAL_CHOSEN.
    let e = refused(&a, "ac", "no proposal chosen").with_context(ctx)?;
    let why = e.field("reason").unwrap_or_default();
    ensure!(
        why.contains("aes128") && why.contains("aes256gcm16"),
        "reason names both offers: {why}"
    );
    c.wait_log(gatehouse_tests::swan_site::IKE_NO_PROPOSAL_RECEIVED, UP)
        .with_context(ctx)?;
    // A's proposal reaches C: C logs it unacceptable; A's attempt fails with the notify.
    c.wait_log(gatehouse_tests::swan_site::IKE_NO_PROPOSAL, UP)
        .with_context(ctx)?;
    a.wait_event(
        "connection attempt failed",
        |e| {
            e.field("connection") == Some("ac")
                && e.field("reason")
                    .is_some_and(|r| r.contains("NO_PROPOSAL_CHOSEN"))
        },
        UP,
    )
    .with_context(ctx)?;
    ensure!(
        a.events("connection up").is_empty(),
        "A brought a tunnel up:\n{}",
        a.log_tail(30)
    );
    ensure!(
        b.events("connection up").is_empty(),
        "B brought a tunnel up:\n{}",
        b.log_tail(30)
    );
    Ok(())
}

/// `gatehoused status --data-dir DIR` of a running gateway.
fn gatehoused_status(dir: &GatewayDir) -> Result<String> {
    let out = std::process::Command::new(gatehouse_tests::bin("gatehoused"))
        .args(["status", "--data-dir"])
        .arg(dir.path())
        .output()?;
    ensure!(
        out.status.success(),
        "gatehoused status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The status table's row for `connection`, once it says `state`.
fn wait_status_row(dir: &GatewayDir, connection: &str, state: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = gatehoused_status(dir).unwrap_or_default();
        if let Some(row) = table.lines().find(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.first() == Some(&connection) && cells.contains(&state)
        }) {
            return Ok(row.to_owned());
        }
        ensure!(
            Instant::now() < deadline,
            "gatehoused status shows no {state} row for {connection}:\n{table}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A <-> C with a PSK and policy-based selectors, A initiating with short lifetimes: CHILD
/// and IKE SA rekeys lose no ping; `gatehoused status` shows the connection; C dies without
/// a word (SIGKILL) and comes back: A's DPD notices and A brings the tunnel back itself.
#[test]
fn strongswan_site_psk_policy_based_rekeys_dpd_and_status() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping", "charon-systemd", "swanctl"]);
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let lab = SiteLab::new("sp", 74)?;
    let logs = dir.path();
    let gw_a = site_gateway_dir(&lab, SiteId::A, &logs.join("a"))?;
    let mut ac = GhConnection::between(&lab, SiteId::A, SiteId::C, "site key 74: Hq7Zr2Wm9Xb4");
    ac.policy_based = true;
    ac.remote_address_space = vec![lab.c.lan.network()];
    ac.child_lifetime = Some("8s".into());
    ac.ike_lifetime = Some("20s".into());
    ac.dpd = Some("3s".into());
    add_connections(&gw_a, &[ac])?;
    let mut c_cfg = SwanSiteConfig::between(
        &lab,
        SiteId::C,
        SiteId::A,
        SwanAuth::Psk("site key 74: Hq7Zr2Wm9Xb4".into()),
    );
    c_cfg.start_action = StartAction::None;
    c_cfg.remote_prefixes.push(lab.a.pool.network());
    let mut c = SwanSite::start(&lab.c.gw, &logs.join("c"), &c_cfg)?;
    let a = start(&lab, SiteId::A, &gw_a, logs)?;
    let ctx = || format!("A:\n{}\nC:\n{}", a.log_tail(30), c.log_tail(30));
    wait_up(&a, "ac").with_context(ctx)?;
    let child = c.wait_child_installed(UP).with_context(ctx)?;
    ensure!(
        child
            .local_ts
            .iter()
            .any(|t| t.contains(&lab.c.lan.network().to_string())),
        "policy-based selectors expected: {:?} === {:?}",
        child.local_ts,
        child.remote_ts
    );
    wait_ping(&lab.a.host, lab.c.host_addr, Duration::from_secs(20)).with_context(ctx)?;
    // 25 s of pings across three CHILD rekeys and an IKE rekey (A's lifetimes).
    let ((sent, got), out) = ping_run(&lab.a.host, lab.c.host_addr, 50, "0.5")?;
    ensure!(
        got == sent,
        "pings lost across rekeys: {got}/{sent}\n{out}\n{}",
        ctx()
    );
    let requests = c.log().matches("CREATE_CHILD_SA request").count();
    eprintln!(
        "C answered {requests} CREATE_CHILD_SA requests (rekeys) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    ensure!(
        requests >= 3,
        "C answered fewer than three CREATE_CHILD_SA requests:\n{}",
        c.log_tail(40)
    );
    let row = wait_status_row(&gw_a, "ac", "connected")?;
    eprintln!("status: {row}");

    // C vanishes without a Delete; it comes back empty. A notices by DPD and re-initiates.
    c.kill_hard();
    c.restart()?;
    let t_kill = Instant::now();
    let ctx = || format!("A:\n{}\nC:\n{}", a.log_tail(30), c.log_tail(30));
    a.wait_event(
        "connection down",
        |e| e.field("connection") == Some("ac"),
        Duration::from_secs(60),
    )
    .with_context(ctx)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while a
        .events("connection up")
        .iter()
        .filter(|e| e.field("connection") == Some("ac"))
        .count()
        < 2
    {
        ensure!(
            Instant::now() < deadline,
            "A did not bring ac back:\n{}",
            ctx()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_ping(&lab.a.host, lab.c.host_addr, Duration::from_secs(20)).with_context(ctx)?;
    eprintln!(
        "C killed and restarted: A back in {:.1} s; total {:.1} s",
        t_kill.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    wait_status_row(&gw_a, "ac", "connected")?;
    Ok(())
}

/// A dual-stack site (issue 18): Gatehouse gateway A and strongSwan gateway C, each with an
/// IPv4 and an IPv6 LAN, policy-based. A initiates with selectors of both families, C
/// narrows to its configuration and installs both, and the hosts behind them reach each
/// other over IPv4 and IPv6, both ways. A has no IPv6 client pool: the IPv6 comes from the
/// site alone.
#[test]
fn strongswan_dual_stack_site_carries_ipv4_and_ipv6() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping", "charon-systemd", "swanctl"]);
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let lab = SiteLab::new("ds", 75)?;
    let logs = dir.path();
    let (a6, c6) = ("fd00:75:1::/64", "fd00:75:3::/64");
    let a_host6 = site_lan_v6(&lab.a, "fd00:75:1")?;
    let c_host6 = site_lan_v6(&lab.c, "fd00:75:3")?;
    let psk = "dual-stack site key 75: Rw3Tq8Zm2Kp6";
    let gw_a = site_gateway_dir(&lab, SiteId::A, &logs.join("a"))?;
    gw_a.set("address_space_v6", &format!("[\"{a6}\"]"))?;
    let mut ac = GhConnection::between(&lab, SiteId::A, SiteId::C, psk);
    ac.policy_based = true;
    ac.remote_address_space = vec![lab.c.lan.network()];
    ac.remote_address_space_v6 = vec![c6.into()];
    add_connections(&gw_a, &[ac])?;
    let mut c_cfg = SwanSiteConfig::between(&lab, SiteId::C, SiteId::A, SwanAuth::Psk(psk.into()));
    c_cfg.start_action = StartAction::None;
    c_cfg.remote_prefixes.push(lab.a.pool.network());
    c_cfg.local_prefixes_v6 = vec![c6.into()];
    c_cfg.remote_prefixes_v6 = vec![a6.into()];
    let c = SwanSite::start(&lab.c.gw, &logs.join("c"), &c_cfg)?;
    let a = start(&lab, SiteId::A, &gw_a, logs)?;
    let ctx = || format!("A:\n{}\nC:\n{}", a.log_tail(30), c.log_tail(30));
    let up = a
        .wait_event("connection up", |e| e.field("connection") == Some("ac"), UP)
        .with_context(ctx)?;
    ensure!(
        up.line.contains(c6),
        "A's connection line lacks {c6}: {}",
        up.line
    );
    let child = c.wait_child_installed(UP).with_context(ctx)?;
    for (side, ts, want) in [
        ("local", &child.local_ts, c6),
        ("remote", &child.remote_ts, a6),
        ("local", &child.local_ts, &lab.c.lan.network().to_string()),
        ("remote", &child.remote_ts, &lab.a.lan.network().to_string()),
    ] {
        ensure!(
            ts.iter().any(|t| t.contains(want)),
            "C's {side} selectors {ts:?} lack {want}"
        );
    }
    for (from, to4, to6) in [
        (&lab.a.host, lab.c.host_addr, c_host6),
        (&lab.c.host, lab.a.host_addr, a_host6),
    ] {
        wait_ping(from, to4, Duration::from_secs(20)).with_context(ctx)?;
        wait_ping6(from, to6, Duration::from_secs(20)).with_context(ctx)?;
        let (sent, got) = ping6(from, to6, 5, None)?;
        ensure!(got == sent, "IPv6 pings to {to6}: {got}/{sent}");
    }
    eprintln!(
        "dual-stack site test done in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A route-based connection with its own interface (the BGP path, docs/bgp.md) carries both
/// families with static prefixes: Gatehouse A's connection to B has `interface` and lists
/// B's IPv4 and IPv6 prefixes, which gatehoused routes into that interface; B is a plain
/// dual-stack connection. Hosts ping across both ways over IPv4 and IPv6; a reload that swaps
/// B's IPv6 prefix for another moves the route on the interface. Lab 76.
#[test]
fn an_own_interface_connection_carries_ipv4_and_ipv6() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping"]);
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let lab = SiteLab::new("oi", 76)?;
    let logs = dir.path();
    let (a6, b6) = ("fd00:76:1::/64", "fd00:76:2::/64");
    let a_host6 = site_lan_v6(&lab.a, "fd00:76:1")?;
    let b_host6 = site_lan_v6(&lab.b, "fd00:76:2")?;
    let psk = "own interface key 76: Vb5Nq9Xc3Lt7";
    let iface = "ghoi-ab";
    let gw_a = site_gateway_dir(&lab, SiteId::A, &logs.join("a"))?;
    let gw_b = site_gateway_dir(&lab, SiteId::B, &logs.join("b"))?;
    gw_a.set("address_space_v6", &format!("[\"{a6}\"]"))?;
    gw_b.set("address_space_v6", &format!("[\"{b6}\"]"))?;
    let mut ab = GhConnection::between(&lab, SiteId::A, SiteId::B, psk);
    ab.remote_address_space_v6 = vec![b6.into()];
    let mut ba = GhConnection::between(&lab, SiteId::B, SiteId::A, psk);
    ba.remote_address_space_v6 = vec![a6.into()];
    add_connections(&gw_a, &[ab])?;
    add_connections(&gw_b, &[ba])?;
    // The interface keys go into A's (last) [[connection]] table.
    let mut text = gw_a.config_text()?;
    text.push_str(&format!(
        "interface = \"{iface}\"\ninterface_address = \"169.254.76.1/30\"\n"
    ));
    std::fs::write(gw_a.config_path(), text)?;
    let a = start(&lab, SiteId::A, &gw_a, logs)?;
    let b = start(&lab, SiteId::B, &gw_b, logs)?;
    let ctx = || format!("A:\n{}\nB:\n{}", a.log_tail(30), b.log_tail(30));
    wait_up(&a, "ab").with_context(ctx)?;
    wait_up(&b, "ba").with_context(ctx)?;
    // A routes B's prefixes of both families into the connection's interface.
    for (family, prefix) in [
        ("-4", lab.b.lan.network().to_string()),
        ("-6", b6.to_owned()),
    ] {
        let route = lab
            .a
            .gw
            .exec_ok("ip", [family, "route", "show", prefix.as_str()])?;
        ensure!(
            route.contains(&format!("dev {iface}")),
            "A's route to {prefix} is not through {iface}: {route:?}"
        );
    }
    for (from, to4, to6) in [
        (&lab.a.host, lab.b.host_addr, b_host6),
        (&lab.b.host, lab.a.host_addr, a_host6),
    ] {
        wait_ping(from, to4, Duration::from_secs(20)).with_context(ctx)?;
        wait_ping6(from, to6, Duration::from_secs(20)).with_context(ctx)?;
        let (sent, got) = ping6(from, to6, 5, None)?;
        ensure!(got == sent, "IPv6 pings to {to6}: {got}/{sent}");
    }
    // A reload that swaps B's IPv6 prefix for another moves the routes on the interface.
    let other6 = "fd00:76:9::/64";
    let text = gw_a.config_text()?;
    let swapped = text.replace(&format!("\"{b6}\""), &format!("\"{other6}\""));
    ensure!(swapped != text, "no {b6} in A's configuration:\n{text}");
    std::fs::write(gw_a.config_path(), swapped)?;
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &a.pid().to_string()])
        .status();
    a.wait_event(
        "SIGHUP: configuration reloaded",
        |_| true,
        Duration::from_secs(10),
    )
    .with_context(ctx)?;
    let old_route = lab.a.gw.exec_ok("ip", ["-6", "route", "show", b6])?;
    let new_route = lab.a.gw.exec_ok("ip", ["-6", "route", "show", other6])?;
    ensure!(
        old_route.trim().is_empty() && new_route.contains(&format!("dev {iface}")),
        "after the reload A routes {b6}: {old_route:?}, {other6}: {new_route:?}"
    );
    ensure!(a.is_running() && b.is_running());
    eprintln!(
        "own-interface dual-stack test done in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
