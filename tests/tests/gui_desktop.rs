//! The desktop app, `gatehouse-gui`, end to end: the real app under Xvfb, driven through the
//! accessibility tree (AT-SPI, as a screen reader would), against the real client service in
//! a client namespace, which connects to `gatehoused` in a gateway namespace; the tunnel then
//! reaches the host on the LAN behind the gateway.
//!
//! The app runs in the root namespace (the X server's abstract socket is per namespace); it
//! reaches the service through the service's socket file, which is not. A screenshot of the
//! connected window is saved as `target/gui-e2e/connected.png` (a CI artifact).
//!
//! Topology tag `gui*`, subnet indexes 80..=84.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::client::{ClientHome, ClientService, DEFAULT_TUN, link_exists};
use gatehouse_tests::desktop::{Desktop, target_dir};
use gatehouse_tests::gatehoused::{CONNECTED, Gatehoused, GatewayDir};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::{GatewayTopology, Ipv4Cidr, Proc, bin, require_commands, require_root};

/// The app's window title (`gatehouse_gui::TITLE`).
const TITLE: &str = "Gatehouse";
/// The client's name.
const NAME: &str = "alice";
const RESOLV_BEFORE: &str =
    "# scratch resolv.conf of a gatehouse desktop test\nnameserver 192.0.2.53\n";
/// How long the app gets to show its window, reach the service and enable Connect.
const APP_READY: Duration = Duration::from_secs(45);
/// How long connecting may take once Connect is pressed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// `gatehouse-gui` in `desktop`, on the client home's profiles and the service's socket.
fn start_app(desktop: &Desktop, client: &ClientHome, log: &Path) -> Result<Proc> {
    let mut cmd = desktop.command(bin("gatehouse-gui"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GATEHOUSE_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("GATEHOUSE_HOME", client.home())
        .env("GATEHOUSE_SOCKET", client.socket())
        .env("GATEHOUSE_KEYSTORE", "file")
        .env("GATEHOUSE_RESOLV_CONF", client.resolv_conf())
        .env("GATEHOUSE_LOG", "debug");
    Proc::spawn(cmd, log)
}

fn logs(gw: &Gatehoused, svc: &ClientService, app: &Proc) -> String {
    format!(
        "gatehoused log:\n{}\nclient service log:\n{}\ngatehouse-gui log {}:\n{}",
        gw.log_tail(20),
        svc.log_tail(30),
        app.log_path().display(),
        app.log_tail(30)
    )
}

#[test]
fn gui_connects_through_accessibility_and_the_tunnel_pings() -> Result<()> {
    let started = Instant::now();
    require_root();
    require_commands(&["ip", "ping", "kill"]);
    let dir = tempfile::tempdir()?;
    let subnet_index = 80;
    let topo = GatewayTopology::new("gui80", subnet_index, 1)?;
    let gw_dir = GatewayDir::for_topology(
        &dir.path().join("gateway"),
        &topo,
        &format!("ghd{subnet_index}"),
    )?;
    gw_dir.issue_client(NAME, &[])?;
    let client = ClientHome::new(&dir.path().join("client"), RESOLV_BEFORE)?;
    client.import_profile(&gw_dir, NAME, topo.client(0).gateway_addr)?;
    let ns = &topo.client(0).ns;

    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.path().join("gatehoused.log"))?;
    let svc = ClientService::start(ns, &client, &dir.path().join("service.log"))?;
    let desktop = Desktop::start(&dir.path().join("desktop"))?;
    let app = start_app(&desktop, &client, &dir.path().join("gui.log"))?;
    let ctx = || logs(&gw, &svc, &app);
    eprintln!(
        "desktop {} up, app started after {:.1} s",
        desktop.display(),
        started.elapsed().as_secs_f64()
    );

    // Connect is enabled once the app has reached the service; press it.
    desktop.press("Connect", APP_READY).with_context(ctx)?;
    let pressed = Instant::now();
    let (st, seen) = client
        .wait_status(ns, CONNECT_TIMEOUT, |s| s.state() == "connected", ctx)
        .context("after pressing Connect in the app")?;
    eprintln!(
        "connected {:.1} s after pressing Connect; states {seen:?}; {}",
        pressed.elapsed().as_secs_f64(),
        st.json
    );
    ensure!(
        st.str("profile") == Some(NAME),
        "connected, but not with {NAME}: {}",
        st.json
    );
    let addr: Ipv4Addr = st.address().context("connected status has no address")?;
    let pool = topo.vpn_pool;
    ensure!(
        Ipv4Cidr::new(addr, pool.prefix).network() == pool.network(),
        "address {addr} is outside the pool {pool}"
    );
    ensure!(
        link_exists(ns, DEFAULT_TUN)?,
        "no {DEFAULT_TUN} in {}",
        ns.name()
    );
    gw.wait_event(
        CONNECTED,
        |e| e.field("client") == Some(NAME),
        Duration::from_secs(5),
    )
    .with_context(ctx)?;

    // Through the tunnel to the LAN host behind the gateway.
    wait_ping(ns, topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;
    // The app shows it: its button now offers Disconnect. The picture is taken with traffic
    // flowing (1200-byte pings, 5 a second), so the rates and the graph show it.
    desktop
        .wait_for("push button", "Disconnect", Duration::from_secs(15))
        .with_context(ctx)?;
    let lan_host = topo.lan_host.to_string();
    let traffic = ns.spawn(
        "ping",
        ["-i", "0.2", "-s", "1200", "-c", "100", &lan_host],
        &dir.path().join("ping.log"),
    )?;
    std::thread::sleep(Duration::from_secs(5));
    let shot = screenshot_path();
    desktop.screenshot(TITLE, &shot).with_context(ctx)?;
    drop(traffic);
    eprintln!("screenshot of the connected window: {}", shot.display());

    // And back: Disconnect in the app undoes the connection.
    desktop
        .press("Disconnect", Duration::from_secs(15))
        .with_context(ctx)?;
    client
        .wait_status(
            ns,
            Duration::from_secs(20),
            |s| s.state() == "disconnected",
            ctx,
        )
        .context("after pressing Disconnect in the app")?;
    ensure!(
        !link_exists(ns, DEFAULT_TUN)?,
        "{DEFAULT_TUN} still exists after Disconnect"
    );
    desktop
        .wait_for("push button", "Connect", Duration::from_secs(15))
        .with_context(ctx)?;
    ensure!(app.is_running(), "the app exited:\n{}", ctx());
    ensure!(svc.proc().is_running(), "the service died:\n{}", ctx());
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `target/gui-e2e/connected.png` in the workspace's target folder.
fn screenshot_path() -> PathBuf {
    target_dir().join("gui-e2e").join("connected.png")
}
