//! Gatehouse's gateway, `gatehoused`, against the stock OpenVPN 2.6 client, in namespaces:
//! the client on a remote-client namespace dials the gateway namespace over UDP 1194 or TCP
//! 443 and reaches the host on the LAN behind the gateway through the tunnel.
//!
//! Every test builds its own topology (its own tag and subnet index, 20..=25), its own data
//! directory (`gatehoused init` in a temporary folder) and certificates, so the tests run in
//! parallel with each other and with the baseline.

use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::gatehoused::{
    CONNECTED, Gatehoused, LogEvent, REFUSED, cert_files_from_ovpn, certs_cli, issue_client,
    times_up, toml_str, tun_ipv4, wait_client_up,
};
use gatehouse_tests::net::{iperf3_client, iperf3_server, wait_ping};
use gatehouse_tests::openvpn::{CertFiles, ClientConfig, Proto, UP_TIMEOUT, spawn_openvpn};
use gatehouse_tests::{GatewaySetup, Ipv4Cidr, Proc};

/// How long the gateway gets to log `client connected` once the client says it is up.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a refused client is watched: it must not come up, and the gateway must say why.
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// One test's world (namespaces, gateway data directory, scratch folder) and this
/// file's helpers on it.
struct Setup(GatewaySetup);

impl std::ops::Deref for Setup {
    type Target = GatewaySetup;

    fn deref(&self) -> &GatewaySetup {
        &self.0
    }
}

impl Setup {
    /// Topology `tag`/`subnet_index` with `n_clients` clients; `gatehoused init` for it (LAN as
    /// address space, the topology's VPN pool, TUN `ghd<subnet_index>`).
    fn new(tag: &str, subnet_index: u8, n_clients: usize) -> Result<Setup> {
        let commands = &["ip", "openvpn", "iperf3", "ping"];
        GatewaySetup::new(tag, subnet_index, n_clients, commands).map(Setup)
    }

    /// A hand-written client config (the harness's [`ClientConfig`]) in client `i`'s
    /// namespace.
    fn hand_written_client(&self, i: usize, config: &ClientConfig) -> Result<Proc> {
        let path = self.path(&format!("{}.conf", config.dev));
        config.write(&path)?;
        let log = self.path(&format!("openvpn-{}.log", config.dev));
        spawn_openvpn(&self.topo.client(i).ns, &path, &[], &log)
    }
}

/// Both logs, for the context of a failure.
fn logs(gw: &Gatehoused, client: &Proc) -> String {
    format!(
        "gatehoused log:\n{}\nclient log {}:\n{}",
        gw.log_tail(25),
        client.log_path().display(),
        client.log_tail(25)
    )
}

/// Waits for the client's tunnel and the gateway's `client connected` for `name`, and checks
/// the address the gateway logged is the one on the client's TUN, inside the pool.
fn connected(
    s: &Setup,
    gw: &Gatehoused,
    client: &Proc,
    i: usize,
    name: &str,
    dev: &str,
) -> Result<LogEvent> {
    wait_client_up(client, gw, 1, UP_TIMEOUT)?;
    let event = gw
        .wait_connected(name, EVENT_TIMEOUT)
        .with_context(|| logs(gw, client))?;
    eprintln!("{}", event.line);
    let tun = tun_ipv4(&s.topo.client(i).ns, dev)?;
    let pool = s.topo.vpn_pool;
    ensure!(
        Ipv4Cidr::new(tun.addr, pool.prefix).network() == pool.network(),
        "client {name}'s {dev} has {tun}, outside the pool {pool}"
    );
    ensure!(
        tun.addr != Ipv4Addr::from(u32::from(pool.network().addr) + 1),
        "client {name} got {tun}, the gateway's own address in the pool"
    );
    ensure!(
        event.address() == Some(tun.addr),
        "gatehoused logged address {:?} for {name}, but its {dev} has {tun}: {}",
        event.field("address"),
        event.line
    );
    ensure!(
        event.remote_is(s.topo.client(i).addr),
        "gatehoused logged remote {:?} for {name}, expected {}:PORT: {}",
        event.field("remote"),
        s.topo.client(i).addr,
        event.line
    );
    Ok(event)
}

/// Pings the LAN host from client `i` through the tunnel, then a 3 s iperf3 run.
fn reach_lan(s: &Setup, gw: &Gatehoused, client: &Proc, i: usize, port: u16) -> Result<()> {
    let ns = &s.topo.client(i).ns;
    wait_ping(ns, s.topo.lan_host, Duration::from_secs(10)).with_context(|| logs(gw, client))?;
    let _iperf = iperf3_server(
        &s.topo.lan,
        s.topo.lan_host,
        port,
        &s.path(&format!("iperf3-{port}.log")),
    )?;
    let result =
        iperf3_client(ns, s.topo.lan_host, port, 3, &[]).with_context(|| logs(gw, client))?;
    eprintln!(
        "through gatehoused from {}: {:.0} Mbit/s received, {} retransmits",
        ns.name(),
        result.bits_per_second_received / 1e6,
        result.retransmits
    );
    ensure!(
        result.bits_per_second_received > 0.0,
        "nothing got through: {result:?}\n{}",
        logs(gw, client)
    );
    ensure!(gw.is_running(), "gatehoused died\n{}", logs(gw, client));
    Ok(())
}

/// Watches a client whose certificate the gateway must refuse: it must never come up, and
/// within [`REFUSAL_WINDOW`] the gateway must log `client refused` for its underlay address
/// `from`, with a reason containing `why` (and `client=name` when `name` is given). After
/// the refusal the client is watched 3 s more.
fn expect_refused(
    gw: &Gatehoused,
    client: &Proc,
    from: Ipv4Addr,
    name: Option<&str>,
    why: &str,
) -> Result<LogEvent> {
    let deadline = Instant::now() + REFUSAL_WINDOW;
    let mut refused: Option<(Instant, LogEvent)> = None;
    loop {
        if times_up(client) > 0 || gw.events(CONNECTED).iter().any(|e| e.remote_is(from)) {
            bail!(
                "a client whose certificate is {why} got connected\n{}",
                logs(gw, client)
            );
        }
        if refused.is_none()
            && let Some(e) = gw.events(REFUSED).into_iter().find(|e| e.remote_is(from))
        {
            let reason = e.field("reason").unwrap_or_default().to_lowercase();
            ensure!(
                reason.contains(why),
                "gatehoused refused {from} but the reason {reason:?} does not say {why:?}: {}",
                e.line
            );
            if let Some(name) = name {
                ensure!(
                    e.field("client") == Some(name),
                    "refusal of {from} names client {:?}, expected {name:?}: {}",
                    e.field("client"),
                    e.line
                );
            }
            eprintln!("{}", e.line);
            refused = Some((Instant::now(), e));
        }
        if let Some((at, e)) = &refused
            && at.elapsed() >= Duration::from_secs(3)
        {
            return Ok(e.clone());
        }
        if !gw.is_running() {
            bail!(
                "gatehoused exited while refusing a client\n{}",
                logs(gw, client)
            );
        }
        if refused.is_none() && Instant::now() >= deadline {
            bail!(
                "gatehoused logged no `client refused` for {from} ({why}) within {REFUSAL_WINDOW:?}\n{}",
                logs(gw, client)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn udp_stock_client_with_exported_ovpn() -> Result<()> {
    let s = Setup::new("gu", 20, 1)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let profile = s.profile("alice", 0)?;
    let client = s.stock_client(0, &profile, "tun-alice", &[])?;
    let event = connected(&s, &gw, &client, 0, "alice", "tun-alice")?;
    ensure!(
        event.field("transport") == Some("udp"),
        "expected transport=udp: {}",
        event.line
    );
    ensure!(
        event.field("keys") == Some("tls-ekm"),
        "a 2.6 client with tls_ekm on should get keys=tls-ekm: {}",
        event.line
    );
    reach_lan(&s, &gw, &client, 0, 5201)
}

#[test]
fn tcp_stock_client_hand_written_config() -> Result<()> {
    let s = Setup::new("gt", 21, 1)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let profile = s.profile("alice", 0)?;
    let certs = cert_files_from_ovpn(&profile, s.dir.path(), "alice")?;
    let mut config = ClientConfig::new(Proto::Tcp, s.topo.client(0).gateway_addr, 443, certs);
    config.dev = "tun-tcp".to_string();
    let client = s.hand_written_client(0, &config)?;
    let event = connected(&s, &gw, &client, 0, "alice", "tun-tcp")?;
    ensure!(
        event.field("transport") == Some("tcp"),
        "expected transport=tcp: {}",
        event.line
    );
    reach_lan(&s, &gw, &client, 0, 5201)
}

#[test]
fn two_clients_get_different_addresses() -> Result<()> {
    let s = Setup::new("g2", 22, 2)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let alice_profile = s.profile("alice", 0)?;
    let bob_profile = s.profile("bob", 1)?;
    // Both at once.
    let alice = s.stock_client(0, &alice_profile, "tun-alice", &[])?;
    let bob = s.stock_client(1, &bob_profile, "tun-bob", &[])?;
    let a = connected(&s, &gw, &alice, 0, "alice", "tun-alice")?;
    let b = connected(&s, &gw, &bob, 1, "bob", "tun-bob")?;
    ensure!(
        a.address() != b.address(),
        "alice and bob got the same address: {}\n{}",
        a.line,
        b.line
    );
    for (i, client) in [(0, &alice), (1, &bob)] {
        wait_ping(
            &s.topo.client(i).ns,
            s.topo.lan_host,
            Duration::from_secs(10),
        )
        .with_context(|| logs(&gw, client))?;
    }
    // Still both: the second session did not replace the first.
    for (i, client) in [(0, &alice), (1, &bob)] {
        wait_ping(
            &s.topo.client(i).ns,
            s.topo.lan_host,
            Duration::from_secs(5),
        )
        .with_context(|| logs(&gw, client))?;
    }
    Ok(())
}

#[test]
fn prf_keys_when_tls_ekm_off() -> Result<()> {
    let s = Setup::new("gp", 23, 1)?;
    s.gw_dir.set("openvpn.tls_ekm", "false")?;
    let gw = s.start_gateway("gatehoused.log")?;
    let profile = s.profile("alice", 0)?;
    let client = s.stock_client(0, &profile, "tun-alice", &[])?;
    let event = connected(&s, &gw, &client, 0, "alice", "tun-alice")?;
    ensure!(
        event.field("keys") == Some("prf"),
        "with tls_ekm = false the keys must come from the PRF: {}",
        event.line
    );
    wait_ping(
        &s.topo.client(0).ns,
        s.topo.lan_host,
        Duration::from_secs(10),
    )
    .with_context(|| logs(&gw, &client))?;
    Ok(())
}

#[test]
fn refused_revoked_foreign_expired() -> Result<()> {
    let s = Setup::new("gr", 24, 3)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let gateway_ca = s.gw_dir.ca_cert();

    // (a) Revoked while the gateway runs: it polls crl.pem every ~2 s.
    let carol_profile = s.profile("carol", 0)?;
    s.gw_dir.revoke("carol")?;
    thread::sleep(Duration::from_secs(3));
    let carol = s.stock_client(
        0,
        &carol_profile,
        "tun-carol",
        &["--connect-retry-max", "1"],
    )?;
    expect_refused(&gw, &carol, s.topo.client(0).addr, Some("carol"), "revoked")?;
    drop(carol);

    // (b) A certificate from another CA; the client itself trusts the gateway's CA.
    let other = s.path("other-pki");
    certs_cli(&other, &["init-ca", "--name", "Some Other CA"])?;
    let other_out = s.path("other-certs");
    std::fs::create_dir_all(&other_out)?;
    let mallory = issue_client(&other, "mallory", &other_out, &[])?;
    let mut config = ClientConfig::new(
        Proto::Udp,
        s.topo.client(1).gateway_addr,
        1194,
        mallory.cert_files(&gateway_ca),
    );
    config.dev = "tun-foreign".to_string();
    let foreign = s.hand_written_client(1, &config)?;
    expect_refused(&gw, &foreign, s.topo.client(1).addr, None, "unknown issuer")?;
    drop(foreign);

    // (c) Expired: the export refuses an expired certificate, so the files go by hand.
    let dave = s.gw_dir.issue_client(
        "dave",
        &[
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--not-after",
            "2020-02-01T00:00:00Z",
        ],
    )?;
    let certs: CertFiles = dave.cert_files(&gateway_ca);
    let mut config = ClientConfig::new(Proto::Udp, s.topo.client(2).gateway_addr, 1194, certs);
    config.dev = "tun-dave".to_string();
    let expired = s.hand_written_client(2, &config)?;
    expect_refused(
        &gw,
        &expired,
        s.topo.client(2).addr,
        Some("dave"),
        "expired",
    )?;
    drop(expired);

    ensure!(gw.is_running(), "gatehoused died:\n{}", gw.log_tail(30));
    Ok(())
}

#[test]
fn client_reconnects_after_gateway_restart() -> Result<()> {
    let s = Setup::new("gx", 25, 1)?;
    s.gw_dir.set("openvpn.ping", &toml_str("2s"))?;
    s.gw_dir.set("openvpn.ping_restart", &toml_str("8s"))?;
    let gw = s.start_gateway("gatehoused-1.log")?;
    let profile = s.profile("alice", 0)?;
    let client = s.stock_client(0, &profile, "tun-alice", &[])?;
    connected(&s, &gw, &client, 0, "alice", "tun-alice")?;
    let ns = &s.topo.client(0).ns;
    wait_ping(ns, s.topo.lan_host, Duration::from_secs(10)).with_context(|| logs(&gw, &client))?;

    // No goodbye to the client: it must notice by itself (ping-restart 8 s, pushed).
    gw.kill_hard()?;
    let killed = Instant::now();
    let gw = s
        .start_gateway("gatehoused-2.log")
        .context("gatehoused did not start again on the same data directory")?;
    wait_client_up(&client, &gw, 2, Duration::from_secs(40))
        .context("the stock client did not reconnect to the restarted gateway")?;
    gw.wait_connected("alice", EVENT_TIMEOUT)
        .with_context(|| logs(&gw, &client))?;
    wait_ping(ns, s.topo.lan_host, Duration::from_secs(10)).with_context(|| logs(&gw, &client))?;
    eprintln!(
        "client back through the restarted gateway {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    Ok(())
}
