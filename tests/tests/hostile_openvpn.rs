//! `gatehoused` under spoofed OpenVPN floods, with stock OpenVPN 2.6 clients connecting and
//! pinging through it meanwhile (issue 14): a flood of hard resets from forged sources, one
//! aimed at a connected client's own address, and (tls-crypt-v2) a flood of V3 resets with
//! made-up client keys. Real clients get in within seconds, the connected one keeps its
//! session, the forged sources get no more bytes than they sent, memory stays bounded.
//!
//! The forged packets come from `spoof-flood` (this crate's raw-socket sender) in the
//! attacker's namespace, whose link the gateway routes the forged network back over, so its
//! interface counters measure what the gateway sent them. Tags `ho`/`hv`, subnets 202/203.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::gatehoused::{
    DISCONNECTED, Gatehoused, GatewayDir, drop_counters, spawn_stock_client, toml_str,
    wait_client_up,
};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::netns::{Netns, add_route};
use gatehouse_tests::openvpn::UP_TIMEOUT;
use gatehouse_tests::proc::rss_kb;
use gatehouse_tests::{GatewayTopology, Ipv4Cidr, Proc, require_commands, require_root};
use tempfile::TempDir;

/// How long a client may take to connect while the flood runs ("within a few seconds").
const CONNECT_UNDER_FLOOD: Duration = Duration::from_secs(10);
/// Forged packets per second (the rate that locked stock clients out for 30 s before).
const RATE: u64 = 4000;
/// Seconds of flood.
const FLOOD_SECS: u64 = 6;
/// What the flood may add to the gateway's resident memory.
const RSS_GROWTH_MAX_KB: u64 = 32 * 1024;

struct Setup {
    topo: GatewayTopology,
    gw_dir: GatewayDir,
    dir: TempDir,
}

impl Setup {
    /// Clients 0 and 2 are stock clients, client 1 the attacker; the gateway routes the
    /// forged network 10.252.X.0/24 to the attacker and does not filter by reverse path.
    fn new(tag: &str, x: u8) -> Result<Setup> {
        require_root();
        require_commands(&["ip", "openvpn", "ping"]);
        let dir = tempfile::tempdir()?;
        let topo = GatewayTopology::new(tag, x, 3)?;
        let gw_dir =
            GatewayDir::for_topology(&dir.path().join("gateway"), &topo, &format!("ghd{x}"))?;
        add_route(
            &topo.gateway,
            Ipv4Cidr::new(Ipv4Addr::new(10, 252, x, 0), 24),
            topo.client(1).addr,
        )?;
        for k in ["all", "default", "cl1"] {
            topo.gateway.exec_ok(
                "sysctl",
                ["-q", "-w", &format!("net.ipv4.conf.{k}.rp_filter=0")],
            )?;
        }
        Ok(Setup { topo, gw_dir, dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn stock_client(&self, i: usize, name: &str) -> Result<Proc> {
        let gateway = self.topo.client(i).gateway_addr;
        let profile =
            self.gw_dir
                .client_profile(name, gateway, &self.path(&format!("{name}.ovpn")))?;
        let log = self.path(&format!("openvpn-{name}.log"));
        spawn_stock_client(
            &self.topo.client(i).ns,
            &profile,
            &format!("ho{i}"),
            &[],
            &log,
        )
    }

    /// `spoof-flood` in the attacker's namespace at the gateway's OpenVPN port.
    fn flood(&self, log: &str, from: &[&str], count: u64, rate: u64, v3: bool) -> Result<Proc> {
        let to = SocketAddrV4::new(self.topo.client(1).gateway_addr, 1194).to_string();
        let (count, rate) = (count.to_string(), rate.to_string());
        let mut args = vec!["--to", to.as_str(), "--count", &count, "--rate", &rate];
        args.extend_from_slice(from);
        if v3 {
            args.push("--v3");
        }
        self.topo
            .client(1)
            .ns
            .spawn(env!("CARGO_BIN_EXE_spoof-flood"), args, &self.path(log))
    }

    fn forged_net(&self) -> String {
        format!("10.252.{}.0/24", self.topo.subnet_index)
    }
}

/// (rx, tx) bytes of `dev` in `ns`.
fn link_bytes(ns: &Netns, dev: &str) -> Result<(u64, u64)> {
    let out = ns.exec_ok("ip", ["-s", "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let s = &v[0]["stats64"];
    let get = |d: &str| s[d]["bytes"].as_u64().context("no byte counter");
    Ok((get("rx")?, get("tx")?))
}

fn wait_done(p: &Proc, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while p.is_running() {
        ensure!(
            Instant::now() < deadline,
            "the flood did not finish: {}",
            p.log_tail(5)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        p.log_contents().contains("sent "),
        "flood failed: {}",
        p.log_tail(5)
    );
    Ok(())
}

fn logs(gw: &Gatehoused, clients: &[&Proc]) -> String {
    let mut s = format!("gatehoused log:\n{}\n", gw.log_tail(30));
    for c in clients {
        s += &format!(
            "client log {}:\n{}\n",
            c.log_path().display(),
            c.log_tail(15)
        );
    }
    s
}

/// Connects client 2 while the flood runs and checks client 0 keeps its session and
/// reaches the LAN throughout; returns how long client 2 took.
fn clients_under_flood(s: &Setup, gw: &Gatehoused, alice: &Proc) -> Result<Duration> {
    let started = Instant::now();
    let bob = s.stock_client(2, "bob")?;
    wait_client_up(&bob, gw, 1, CONNECT_UNDER_FLOOD).with_context(|| logs(gw, &[alice, &bob]))?;
    let took = started.elapsed();
    wait_ping(
        &s.topo.client(2).ns,
        s.topo.lan_host,
        Duration::from_secs(5),
    )
    .with_context(|| logs(gw, &[alice, &bob]))?;
    wait_ping(
        &s.topo.client(0).ns,
        s.topo.lan_host,
        Duration::from_secs(5),
    )
    .with_context(|| logs(gw, &[alice, &bob]))?;
    eprintln!("bob connected in {took:?} during the flood");
    Ok(took)
}

#[test]
fn a_spoofed_reset_flood_neither_locks_clients_out_nor_amplifies() -> Result<()> {
    let s = Setup::new("ho", 202)?;
    let gw = Gatehoused::start(&s.topo.gateway, &s.gw_dir, &s.path("gatehoused.log"))?;
    let alice = s.stock_client(0, "alice")?;
    wait_client_up(&alice, &gw, 1, UP_TIMEOUT)?;
    let event = gw.wait_connected("alice", Duration::from_secs(5))?;
    let alice_remote: SocketAddrV4 = event
        .field("remote")
        .context("no remote in the connect line")?
        .parse()?;
    wait_ping(
        &s.topo.client(0).ns,
        s.topo.lan_host,
        Duration::from_secs(10),
    )?;
    let rss0 = rss_kb(gw.proc().pid())?;
    let (rx0, tx0) = link_bytes(&s.topo.client(1).ns, "up0")?;

    let count = RATE * FLOOD_SECS;
    let net = s.forged_net();
    let random = s.flood(
        "flood-random.log",
        &["--from-net", &net],
        count,
        RATE,
        false,
    )?;
    // Resets forged with alice's own address and port: her session must survive them.
    let at_alice = alice_remote.to_string();
    let aimed = s.flood("flood-alice.log", &["--from", &at_alice], 1000, 200, false)?;
    std::thread::sleep(Duration::from_secs(1));
    clients_under_flood(&s, &gw, &alice)?;
    wait_done(&random, Duration::from_secs(FLOOD_SECS + 20))?;
    wait_done(&aimed, Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_millis(500));

    let (rx1, tx1) = link_bytes(&s.topo.client(1).ns, "up0")?;
    let (sent, answered) = (tx1 - tx0, rx1 - rx0);
    eprintln!(
        "flood: {} bytes out of the attacker, {} bytes back from the gateway",
        sent, answered
    );
    ensure!(sent > count * 40, "the flood did not go out: {sent} bytes");
    ensure!(
        answered > 0,
        "no answer reached the forged network: the measurement is broken"
    );
    ensure!(
        answered <= sent,
        "the gateway sent forged sources {answered} bytes for {sent} received"
    );
    let rss1 = rss_kb(gw.proc().pid())?;
    eprintln!("gatehoused RSS {rss0} kB before, {rss1} kB after");
    ensure!(
        rss1 <= rss0 + RSS_GROWTH_MAX_KB,
        "gatehoused grew from {rss0} kB to {rss1} kB"
    );
    let ended: Vec<_> = gw
        .events(DISCONNECTED)
        .into_iter()
        .filter(|e| e.field("client") == Some("alice"))
        .collect();
    ensure!(
        ended.is_empty(),
        "alice's session ended: {:?}\n{}",
        ended[0].line,
        logs(&gw, &[&alice])
    );
    ensure!(
        alice
            .log_contents()
            .matches("Initialization Sequence Completed")
            .count()
            == 1,
        "alice reconnected\n{}",
        logs(&gw, &[&alice])
    );
    wait_ping(
        &s.topo.client(0).ns,
        s.topo.lan_host,
        Duration::from_secs(5),
    )?;
    Ok(())
}

#[test]
fn tls_crypt_v2_drops_a_forged_v3_flood_before_any_answer() -> Result<()> {
    let s = Setup::new("hv", 203)?;
    s.gw_dir.set("openvpn.tls_crypt_v2", &toml_str("on"))?;
    let gw = Gatehoused::start(&s.topo.gateway, &s.gw_dir, &s.path("gatehoused.log"))?;
    let alice = s.stock_client(0, "alice")?;
    wait_client_up(&alice, &gw, 1, UP_TIMEOUT)?;
    let (rx0, tx0) = link_bytes(&s.topo.client(1).ns, "up0")?;
    let count = RATE * FLOOD_SECS;
    let net = s.forged_net();
    let flood = s.flood("flood-v3.log", &["--from-net", &net], count, RATE, true)?;
    std::thread::sleep(Duration::from_secs(1));
    clients_under_flood(&s, &gw, &alice)?;
    wait_done(&flood, Duration::from_secs(FLOOD_SECS + 20))?;
    std::thread::sleep(Duration::from_millis(500));
    let (rx1, tx1) = link_bytes(&s.topo.client(1).ns, "up0")?;
    let (sent, answered) = (tx1 - tx0, rx1 - rx0);
    eprintln!("v3 flood: {sent} bytes out, {answered} bytes back");
    // Nothing is answered; a few ARP exchanges at most.
    ensure!(sent > count * 300, "the flood did not go out: {sent} bytes");
    ensure!(
        answered < 4096,
        "forged V3 resets were answered: {answered} bytes"
    );
    gw.terminate(Duration::from_secs(10))?;
    let stopped = gw
        .log()
        .lines()
        .find(|l| l.contains("gateway stopped"))
        .map(str::to_string)
        .context("no `gateway stopped` line")?;
    let drops = drop_counters(&stopped);
    let refused =
        drops.get("wrapkey").copied().unwrap_or(0) + drops.get("malformed").copied().unwrap_or(0);
    ensure!(
        refused >= count * 9 / 10,
        "only {refused} of {count} forged resets were counted as refused: {stopped}"
    );
    Ok(())
}
