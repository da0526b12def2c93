//! The kill switch (issue 18): with `gatehouse connect --kill-switch`, nothing but the tunnel
//! leaves the client host - not while connected, not while the gateway is gone and the client
//! reconnects, not after the client service was killed with SIGKILL - until the user runs
//! `gatehouse disconnect`, which removes the nftables table and opens the host again.
//!
//! Topology: tag `ks`, subnet index 224 (10.250.224.0/24 underlay, 10.251.224.0/24 LAN behind
//! the gateway). The "outside host" is 198.18.224.1 (IPv4, TCP port 5224 served by iperf3) and
//! fd00:224::1 (IPv6 on the underlay link), both in the gateway's namespace but not the
//! gateway's public address: the client reaches them over its underlay, never the tunnel.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::client::{ClientHome, ClientService};
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir, toml_str};
use gatehouse_tests::net::{iperf3_server, ping, wait_ping};
use gatehouse_tests::{GatewayTopology, Netns, require_commands, require_root};

const NAME: &str = "alice";
const SUBNET: u8 = 224;
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 224, 1);
const OUTSIDE_PORT: u16 = 5224;
const OUTSIDE6: &str = "fd00:224::1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

fn ping6(ns: &Netns) -> bool {
    ns.exec("ping", ["-6", "-n", "-q", "-c", "1", "-W", "1", OUTSIDE6])
        .is_ok_and(|o| o.status.success())
}

/// A TCP connection to the outside host (iperf3 sends 1 KB).
fn tcp(ns: &Netns) -> bool {
    ns.exec(
        "iperf3",
        [
            "-c",
            &OUTSIDE.to_string(),
            "-p",
            &OUTSIDE_PORT.to_string(),
            "-n",
            "1K",
            "--connect-timeout",
            "2000",
        ],
    )
    .is_ok_and(|o| o.status.success())
}

/// Ping, TCP and IPv6 to the outside host: which of them got through.
fn outside(ns: &Netns) -> [bool; 3] {
    [
        ping(ns, OUTSIDE, 1, Duration::from_secs(2)),
        tcp(ns),
        ping6(ns),
    ]
}

fn table(ns: &Netns) -> Result<bool> {
    Ok(ns
        .exec_ok("nft", ["list", "tables"])?
        .contains("inet gatehouse_ks"))
}

fn logs(gw: &Gatehoused, svc: &ClientService) -> String {
    format!(
        "gatehoused log:\n{}\nclient service log:\n{}",
        gw.log_tail(20),
        svc.log_tail(40)
    )
}

#[test]
fn nothing_but_the_tunnel_gets_out_until_the_user_disconnects() -> Result<()> {
    let started = Instant::now();
    require_root();
    require_commands(&["ip", "ping", "nft", "iperf3"]);
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("ks", SUBNET, 1)?;
    let gw_dir =
        GatewayDir::for_topology(&dir.path().join("gateway"), &topo, &format!("ghd{SUBNET}"))?;
    gw_dir.set("openvpn.ping", &toml_str("2s"))?;
    gw_dir.set("openvpn.ping_restart", &toml_str("6s"))?;
    gw_dir.issue_client(NAME, &[])?;
    let client = ClientHome::new(
        &dir.path().join("client"),
        "# scratch resolv.conf of kill_switch\nnameserver 192.0.2.53\n",
    )?;
    let up = topo.client(0).gateway_addr;
    client.import_profile(&gw_dir, NAME, up)?;
    let ns = &topo.client(0).ns;

    // The outside host: an address of the gateway's namespace that is not its public one.
    topo.gateway
        .exec_ok("ip", ["addr", "add", &format!("{OUTSIDE}/32"), "dev", "lo"])?;
    ns.exec_ok(
        "ip",
        ["route", "add", "198.18.224.0/24", "via", &up.to_string()],
    )?;
    topo.gateway.exec_ok(
        "ip",
        [
            "addr",
            "add",
            &format!("{OUTSIDE6}/64"),
            "dev",
            "cl0",
            "nodad",
        ],
    )?;
    ns.exec_ok(
        "ip",
        ["addr", "add", "fd00:224::2/64", "dev", "up0", "nodad"],
    )?;
    let _iperf = iperf3_server(
        &topo.gateway,
        OUTSIDE,
        OUTSIDE_PORT,
        &dir.path().join("iperf3.log"),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    wait_ping(ns, OUTSIDE, Duration::from_secs(5))?;
    ensure!(
        outside(ns) == [true; 3],
        "the outside host is not reachable before connecting: {:?}",
        outside(ns)
    );

    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.path().join("gatehoused-1.log"))?;
    let svc = ClientService::start(ns, &client, &dir.path().join("service-1.log"))?;
    let ctx = || logs(&gw, &svc);
    let out = client.run(
        Some(ns),
        &[
            "connect",
            NAME,
            "--protocol",
            "openvpn-udp",
            "--kill-switch",
        ],
        CONNECT_TIMEOUT,
    )?;
    eprintln!("{out}");
    ensure!(
        out.success() && out.stdout.contains("Connected"),
        "{out}\n{}",
        ctx()
    );
    ensure!(
        out.stdout.contains("kill switch on"),
        "connect did not say the kill switch is on:\n{out}"
    );
    let st = client.status(ns)?;
    ensure!(
        st.json.get("kill_switch") == Some(&serde_json::Value::Bool(true)),
        "status --json: {}",
        st.json
    );
    ensure!(table(ns)?, "no nft table while connected");

    // Connected: the LAN through the tunnel, nothing outside it.
    wait_ping(ns, topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;
    let seen = outside(ns);
    ensure!(
        seen == [false; 3],
        "connected with the kill switch: ping/TCP/IPv6 to the outside host got through: {seen:?}"
    );
    eprintln!(
        "connected: LAN reachable, outside blocked ({:.1} s)",
        started.elapsed().as_secs_f64()
    );

    // The gateway dies: while the client reconnects, still nothing gets out.
    gw.kill_hard()?;
    let killed = Instant::now();
    client.wait_status(
        ns,
        Duration::from_secs(20),
        |st| st.state() == "reconnecting",
        || svc.log_tail(30),
    )?;
    eprintln!(
        "reconnecting {:.1} s after the gateway was killed",
        killed.elapsed().as_secs_f64()
    );
    let seen = outside(ns);
    ensure!(
        seen == [false; 3],
        "reconnecting with the kill switch: the outside host got through: {seen:?}"
    );
    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.path().join("gatehoused-2.log"))?;
    let restarted = Instant::now();
    client.wait_status(
        ns,
        Duration::from_secs(40),
        |st| st.state() == "connected",
        || logs(&gw, &svc),
    )?;
    eprintln!(
        "connected again {:.1} s after the gateway restarted",
        restarted.elapsed().as_secs_f64()
    );
    wait_ping(ns, topo.lan_host, Duration::from_secs(10)).with_context(|| logs(&gw, &svc))?;

    // The client service is killed: the host stays closed, also after the next start.
    svc.kill_hard()?;
    drop(svc);
    let seen = outside(ns);
    ensure!(
        seen == [false; 3],
        "after SIGKILL of the client service: the outside host got through: {seen:?}"
    );
    ensure!(table(ns)?, "the nft table went away with the service");
    let svc = ClientService::start(ns, &client, &dir.path().join("service-2.log"))?;
    let st = client.status(ns)?;
    ensure!(
        st.json.get("kill_switch") == Some(&serde_json::Value::Bool(true)),
        "the next start dropped the kill switch: {}\n{}",
        st.json,
        svc.log_tail(20)
    );
    let seen = outside(ns);
    ensure!(
        seen == [false; 3],
        "after the service started again: the outside host got through: {seen:?}"
    );

    // The user disconnects: open again, table gone.
    let out = client.run_ok(Some(ns), &["disconnect"])?;
    eprintln!("{out}");
    ensure!(!table(ns)?, "the nft table is still there after disconnect");
    let seen = outside(ns);
    ensure!(
        seen == [true; 3],
        "after disconnect the outside host is not reachable: {seen:?}\n{}",
        svc.log_tail(20)
    );
    ensure!(gw.is_running(), "gatehoused died:\n{}", gw.log_tail(30));
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
