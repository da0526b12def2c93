//! The reference peers against each other: a stock OpenVPN 2.6 server on the gateway and a
//! stock client on a remote client, in namespaces. The client reaches the LAN host behind the
//! gateway through the tunnel. These prove the harness and the real peer setup work, and stay
//! as the baseline Gatehouse's own gateway is compared with.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use gatehouse_tests::net::{iperf3_client, iperf3_server, wait_ping};
use gatehouse_tests::openssl_pki::OpensslPki;
use gatehouse_tests::openvpn::{ClientConfig, Proto, ServerConfig, start_client, start_server};
use gatehouse_tests::{GatewayTopology, require_commands, require_root};

#[test]
fn stock_openvpn_udp_client_reaches_lan_through_stock_server() -> Result<()> {
    baseline("bu", 1, Proto::Udp, 1194)
}

#[test]
fn stock_openvpn_tcp_client_reaches_lan_through_stock_server() -> Result<()> {
    baseline("bt", 2, Proto::Tcp, 443)
}

fn baseline(tag: &str, subnet_index: u8, proto: Proto, port: u16) -> Result<()> {
    require_root();
    require_commands(&["ip", "openvpn", "openssl", "iperf3", "ping"]);
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new(tag, subnet_index, 1)?;
    let namespaces: Vec<String> = topo.namespaces().iter().map(|n| n.to_string()).collect();
    let client_ns = &topo.client(0).ns;
    let gateway_addr = topo.client(0).gateway_addr;

    let pki = OpensslPki::create(&dir.path().join("pki"), &[gateway_addr])?;
    let mut server = ServerConfig::new(proto, port, pki.server.clone(), topo.vpn_pool);
    server.push_routes.push(topo.lan_net);
    let server = start_server(&topo.gateway, dir.path(), &server)?;
    let client = start_client(
        client_ns,
        dir.path(),
        &ClientConfig::new(proto, gateway_addr, port, pki.client.clone()),
    )?;

    // The client got its address from the server's pool: 10.8.X.2 is the first lease.
    let pool_addr = Ipv4Addr::new(10, 8, subnet_index, 2);
    let addrs = client_ns.exec_ok("ip", ["-4", "-br", "addr", "show", "dev", "tun-ovpnc"])?;
    ensure!(
        addrs.contains(&format!("{pool_addr}/24")),
        "client tun has {addrs:?}, expected {pool_addr}/24"
    );

    // The client namespace has no route to the LAN but the pushed one through the tunnel.
    wait_ping(client_ns, topo.lan_host, Duration::from_secs(10)).with_context(|| {
        format!(
            "server log:\n{}\nclient log:\n{}",
            server.log_tail(20),
            client.log_tail(20)
        )
    })?;

    let _iperf = iperf3_server(
        &topo.lan,
        topo.lan_host,
        5201,
        &dir.path().join("iperf3.log"),
    )?;
    let result = iperf3_client(client_ns, topo.lan_host, 5201, 3, &[])?;
    eprintln!(
        "{proto:?} baseline through stock openvpn: {:.0} Mbit/s received, {} retransmits",
        result.bits_per_second_received / 1e6,
        result.retransmits
    );
    ensure!(
        result.bits_per_second_received > 0.0,
        "nothing got through: {result:?}"
    );
    ensure!(server.is_running() && client.is_running(), "a peer died");

    drop(client);
    drop(server);
    drop(topo);
    let left = Command::new("ip").args(["netns", "list"]).output()?;
    let left = String::from_utf8_lossy(&left.stdout);
    for ns in &namespaces {
        ensure!(
            !left
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} still exists after the topology was dropped"
        );
    }
    Ok(())
}
