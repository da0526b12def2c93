//! Site-to-site and VNet-to-VNet tunnels end to end (issue 6), in a [`SiteLab`]: Gatehouse
//! gateways A and B, strongSwan gateway C (kernel-libipsec), a host behind each, and a
//! point-to-site client on the underlay. Each test has its own lab index (70..=78).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::gatehouse_site::{GhConnection, add_connections, site_gateway_dir};
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::sites::{SiteId, SiteLab};
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
    let mut ab = GhConnection::between(&lab, SiteId::A, SiteId::B, "vnet key 70");
    ab.kind = "vnet-to-vnet";
    let mut ba = GhConnection::between(&lab, SiteId::B, SiteId::A, "vnet key 70");
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
