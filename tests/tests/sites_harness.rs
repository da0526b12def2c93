//! The site-to-site harness with strongSwan at both ends: a `SiteLab` with a strongSwan
//! gateway standing in for Gatehouse gateway A and the strongSwan gateway C, in the variants
//! the site-to-site tests use (PSK policy-based, PSK route-based, certificates, a wrong PSK, a
//! proposal mismatch). This proves the topology and `SwanSite` work before Gatehouse's side
//! exists, and stays as the baseline Gatehouse's site-to-site tunnels are compared with.
//!
//! One lab, the variants in sequence (each starts and stops its own two daemons).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::net::{iperf3_client, iperf3_server, wait_ping};
use gatehouse_tests::sites::{SiteId, SiteLab};
use gatehouse_tests::strongswan::ping_run;
use gatehouse_tests::swan_site::{
    AUTH_FAILED_RECEIVED, ESP_NO_PROPOSAL, ESP_NO_PROPOSAL_RECEIVED, IKE_NO_PROPOSAL,
    IKE_NO_PROPOSAL_RECEIVED, PSK_MISMATCH, StartAction, SwanAuth, SwanMode, SwanSite,
    SwanSiteConfig, issue_site_cert,
};
use gatehouse_tests::{require_commands, require_root};

const K: u8 = 79;
const PSK: &str = "site-to-site test key 79";
/// Both ends' tunnel up (two cores, shared with compilers).
const UP: Duration = Duration::from_secs(20);
/// A refusal reaches both logs.
const REFUSED: Duration = Duration::from_secs(15);

#[test]
fn strongswan_site_to_site_variants() -> Result<()> {
    require_root();
    require_commands(&["ip", "charon-systemd", "swanctl", "iperf3", "ping"]);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let lab = SiteLab::new("sh", K)?;
    eprintln!(
        "lab up in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        lab.namespaces().join(" ")
    );

    timed("a: PSK, policy-based", || {
        psk_policy_based(&lab, &dir.path().join("a"))
    })?;
    timed("b: PSK, route-based, iperf3, restart", || {
        psk_route_based(&lab, &dir.path().join("b"))
    })?;
    timed("c: certificates, policy-based, C initiates", || {
        certificates(&lab, &dir.path().join("c"))
    })?;
    timed("d: wrong PSK", || wrong_psk(&lab, &dir.path().join("d")))?;
    timed("e: proposal mismatch", || {
        proposal_mismatch(&lab, &dir.path().join("e"))
    })?;
    eprintln!("all variants in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn timed(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let t = Instant::now();
    f().with_context(|| format!("variant {name}"))?;
    eprintln!("variant {name}: {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// C (responder) first, then A (initiator, `start_action = start`).
fn pair<'a>(
    lab: &'a SiteLab,
    dir: &Path,
    a: &SwanSiteConfig,
    c: &SwanSiteConfig,
) -> Result<(SwanSite<'a>, SwanSite<'a>)> {
    let gw_c = SwanSite::start(&lab.c.gw, &dir.join("gwc"), c)?;
    let gw_a = SwanSite::start(&lab.a.gw, &dir.join("gwa"), a)?;
    Ok((gw_a, gw_c))
}

/// A's and C's configs for `auth` and `mode`: A initiates, C responds.
fn configs(
    lab: &SiteLab,
    auth_a: SwanAuth,
    auth_c: SwanAuth,
    mode: SwanMode,
) -> [SwanSiteConfig; 2] {
    let mut a = SwanSiteConfig::between(lab, SiteId::A, SiteId::C, auth_a);
    a.start_action = StartAction::Start;
    a.mode = mode;
    let mut c = SwanSiteConfig::between(lab, SiteId::C, SiteId::A, auth_c);
    c.mode = mode;
    [a, c]
}

fn logs(a: &SwanSite, c: &SwanSite) -> String {
    format!(
        "--- gateway A log:\n{}\n--- gateway C log:\n{}",
        a.log_tail(40),
        c.log_tail(40)
    )
}

/// Both CHILD SAs installed, then hostA <-> hostC both ways, every ping answered.
fn tunnel_up_and_pinging(lab: &SiteLab, a: &SwanSite, c: &SwanSite) -> Result<()> {
    let t = Instant::now();
    let ca = a.wait_child_installed(UP)?;
    let cc = c.wait_child_installed(UP)?;
    eprintln!(
        "  CHILD SAs installed after {:.2} s: A {:?} === {:?}, C {:?} === {:?}",
        t.elapsed().as_secs_f64(),
        ca.local_ts,
        ca.remote_ts,
        cc.local_ts,
        cc.remote_ts
    );
    let ctx = || logs(a, c);
    wait_ping(&lab.a.host, lab.c.host_addr, Duration::from_secs(10)).with_context(ctx)?;
    eprintln!(
        "  first ping A -> C after {:.2} s",
        t.elapsed().as_secs_f64()
    );
    for (from, to) in [
        (&lab.a.host, lab.c.host_addr),
        (&lab.c.host, lab.a.host_addr),
    ] {
        let ((sent, got), out) = ping_run(from, to, 10, "0.1")?;
        ensure!(
            sent == 10 && got == 10,
            "{} -> {to}: {got} of {sent} answered:\n{out}\n{}",
            from.name(),
            ctx()
        );
    }
    let child = a.installed_child()?.context("A's child went away")?;
    ensure!(
        child.packets_out >= 10 && child.packets_in >= 10,
        "the pings did not go through A's CHILD SA: {child:?}"
    );
    Ok(())
}

fn psk_policy_based(lab: &SiteLab, dir: &Path) -> Result<()> {
    let psk = SwanAuth::Psk(PSK.to_string());
    let [a, c] = configs(lab, psk.clone(), psk, SwanMode::PolicyBased);
    let (gw_a, gw_c) = pair(lab, dir, &a, &c)?;
    tunnel_up_and_pinging(lab, &gw_a, &gw_c)?;
    let child = gw_c.installed_child()?.context("C's child")?;
    ensure!(
        child.local_ts == [lab.c.lan.to_string()] && child.remote_ts == [lab.a.lan.to_string()],
        "policy-based traffic selectors are the LANs: {child:?}"
    );
    Ok(())
}

fn psk_route_based(lab: &SiteLab, dir: &Path) -> Result<()> {
    let psk = SwanAuth::Psk(PSK.to_string());
    let [a, c] = configs(lab, psk.clone(), psk, SwanMode::RouteBased);
    let (gw_a, mut gw_c) = pair(lab, dir, &a, &c)?;
    tunnel_up_and_pinging(lab, &gw_a, &gw_c)?;
    let child = gw_c.installed_child()?.context("C's child")?;
    ensure!(
        child.local_ts == ["0.0.0.0/0"] && child.remote_ts == ["0.0.0.0/0"],
        "route-based traffic selectors are 0.0.0.0/0: {child:?}"
    );
    // The tunnel carries only what is routed into it: the underlay still works directly.
    wait_ping(&lab.client, lab.c.underlay_addr, Duration::from_secs(5))
        .context("client -> gateway C on the underlay, with a route-based tunnel up")?;
    wait_ping(&lab.c.gw, lab.b.underlay_addr, Duration::from_secs(5))
        .context("gateway C -> gateway B on the underlay")?;

    let _server = iperf3_server(&lab.c.host, lab.c.host_addr, 5201, &dir.join("iperf3.log"))?;
    for extra in [&[][..], &["-R"][..]] {
        let r = iperf3_client(&lab.a.host, lab.c.host_addr, 5201, 3, extra)
            .with_context(|| logs(&gw_a, &gw_c))?;
        eprintln!(
            "  iperf3 hostA -> hostC {extra:?} through strongSwan route-based: {:.0} Mbit/s, \
             {} retransmits",
            r.bits_per_second_received / 1e6,
            r.retransmits
        );
        ensure!(
            r.bits_per_second_received > 1e6,
            "almost nothing got through: {r:?}"
        );
    }

    // Restart C: it tells A (DELETE), comes back with routes and rule handled again, and
    // initiates itself.
    let t = Instant::now();
    gw_c.restart()?;
    gw_a.wait_child_gone(Duration::from_secs(10))?;
    gw_c.initiate()?;
    eprintln!(
        "  C restarted and its CHILD SA back (C initiating) in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    tunnel_up_and_pinging(lab, &gw_a, &gw_c)?;
    ensure!(
        gw_a.log().contains("received DELETE for IKE_SA"),
        "A heard nothing of C going down:\n{}",
        logs(&gw_a, &gw_c)
    );
    Ok(())
}

fn certificates(lab: &SiteLab, dir: &Path) -> Result<()> {
    let pki = dir.join("pki");
    let creds_a = issue_site_cert(&pki, "gwa", lab.a.underlay_addr)?;
    let creds_c = issue_site_cert(&pki, "gwc", lab.c.underlay_addr)?;
    let [mut a, mut c] = configs(
        lab,
        SwanAuth::Pubkey(creds_a),
        SwanAuth::Pubkey(creds_c),
        SwanMode::PolicyBased,
    );
    // This time C initiates (kernel-libipsec has no acquires, so no trap policies: `start`).
    a.start_action = StartAction::None;
    c.start_action = StartAction::Start;
    let gw_a = SwanSite::start(&lab.a.gw, &dir.join("gwa"), &a)?;
    let gw_c = SwanSite::start(&lab.c.gw, &dir.join("gwc"), &c)?;
    tunnel_up_and_pinging(lab, &gw_a, &gw_c)?;
    for (gw, peer) in [(&gw_a, lab.c.underlay_addr), (&gw_c, lab.a.underlay_addr)] {
        let pat = format!("authentication of '{peer}' with ECDSA");
        ensure!(
            gw.log().contains(&pat),
            "{} did not log {pat:?}:\n{}",
            gw.config().name,
            gw.log_tail(40)
        );
    }
    Ok(())
}

fn wrong_psk(lab: &SiteLab, dir: &Path) -> Result<()> {
    let [a, c] = configs(
        lab,
        SwanAuth::Psk("not the right key".to_string()),
        SwanAuth::Psk(PSK.to_string()),
        SwanMode::PolicyBased,
    );
    refused(lab, dir, &a, &c, PSK_MISMATCH, AUTH_FAILED_RECEIVED)
}

fn proposal_mismatch(lab: &SiteLab, dir: &Path) -> Result<()> {
    let psk = SwanAuth::Psk(PSK.to_string());
    let [mut a, mut c] = configs(lab, psk.clone(), psk, SwanMode::PolicyBased);
    a.ike_proposals = "aes128-sha256-modp3072".to_string();
    c.ike_proposals = "aes256gcm16-prfsha384-ecp384".to_string();
    refused(
        lab,
        &dir.join("ike"),
        &a,
        &c,
        IKE_NO_PROPOSAL,
        IKE_NO_PROPOSAL_RECEIVED,
    )?;

    let [mut a, mut c] = configs(lab, a.auth.clone(), c.auth.clone(), SwanMode::PolicyBased);
    a.esp_proposals = "aes128gcm16".to_string();
    c.esp_proposals = "aes256-sha512".to_string();
    refused(
        lab,
        &dir.join("esp"),
        &a,
        &c,
        ESP_NO_PROPOSAL,
        ESP_NO_PROPOSAL_RECEIVED,
    )
}

/// A initiates, C refuses: both logs say why, and no CHILD SA is installed.
fn refused(
    lab: &SiteLab,
    dir: &Path,
    a: &SwanSiteConfig,
    c: &SwanSiteConfig,
    c_says: &str,
    a_says: &str,
) -> Result<()> {
    let (gw_a, gw_c) = pair(lab, dir, a, c)?;
    let ctx = || logs(&gw_a, &gw_c);
    gw_c.wait_log(c_says, REFUSED).with_context(ctx)?;
    gw_a.wait_log(a_says, REFUSED).with_context(ctx)?;
    eprintln!(
        "  C: {}\n  A: {}",
        gw_c.log_lines(c_says).join(" | "),
        gw_a.log_lines(a_says).join(" | ")
    );
    ensure!(
        gw_a.installed_child()?.is_none() && gw_c.installed_child()?.is_none(),
        "a tunnel after a refusal:\n{}",
        ctx()
    );
    Ok(())
}
