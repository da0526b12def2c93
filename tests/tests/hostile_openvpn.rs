//! `gatehoused` under spoofed OpenVPN floods, with real clients of both protocols connected
//! and connecting meanwhile (issue 14): a flood of hard resets from forged sources, two aimed
//! at connected clients' own addresses (the OpenVPN client's and the IKEv2 client's), and
//! (tls-crypt-v2) a flood of V3 resets with made-up client keys. A stock OpenVPN 2.6 client
//! and a strongSwan `charon-cmd` client connected before the flood ping the LAN across it and
//! keep their sessions; another of each connects during the flood within seconds; the forged
//! sources get no more bytes than they sent; memory stays bounded.
//!
//! Clients: 0 alice (stock OpenVPN, connected before), 1 the attacker, 2 bob (stock OpenVPN,
//! connects during the flood), 3 carol (charon-cmd, connected before), 4 dave (charon-cmd,
//! connects during the flood).
//!
//! The forged packets come from `spoof-flood` (this crate's raw-socket sender) in the
//! attacker's namespace, whose link the gateway routes the forged network back over, so its
//! interface counters measure what the gateway sent them. Tags `ho`/`hv`, subnets 202/203.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::bystanders::{
    PingRun, charon_cmd_config, enable_openvpn_and_ikev2, expect_both_protocols, ike_logs,
    ike_session_kept, openvpn_session_kept, spawn_charon_cmd, wait_ike_up,
};
use gatehouse_tests::gatehoused::{
    Gatehoused, GatewayDir, READY, drop_counters, spawn_stock_client, toml_str, wait_client_up,
};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::netns::{Netns, add_route};
use gatehouse_tests::openvpn::UP_TIMEOUT;
use gatehouse_tests::proc::rss_kb;
use gatehouse_tests::strongswan::{CharonCmd, CharonCmdConfig};
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
/// Pings through a connected client's tunnel that may go unanswered across the flood.
const PING_LOSS_MAX_PCT: u32 = 10;

struct Setup {
    topo: GatewayTopology,
    gw_dir: GatewayDir,
    dir: TempDir,
}

impl Setup {
    /// Clients 0 and 2 are stock OpenVPN clients, 3 and 4 charon-cmd, client 1 the attacker;
    /// the gateway routes the forged network 10.252.X.0/24 to the attacker and does not filter
    /// by reverse path.
    fn new(tag: &str, x: u8) -> Result<Setup> {
        require_root();
        require_commands(&["ip", "openvpn", "ping", "openssl", "charon-cmd"]);
        let dir = tempfile::tempdir()?;
        let topo = GatewayTopology::new(tag, x, 5)?;
        let gw_dir =
            GatewayDir::for_topology(&dir.path().join("gateway"), &topo, &format!("ghd{x}"))?;
        enable_openvpn_and_ikev2(&gw_dir)?;
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

    /// A stock OpenVPN client in client `i`'s namespace with the profile `gatehouse-certs
    /// export --format ovpn` wrote for a new certificate `name` (`<dir>/<name>.ovpn`).
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

    /// A charon-cmd configuration for a new RSA certificate `name`, dialling client `i`'s
    /// gateway address.
    fn ike_config(&self, i: usize, name: &str) -> Result<CharonCmdConfig> {
        charon_cmd_config(
            &self.gw_dir,
            self.dir.path(),
            self.topo.client(i).gateway_addr,
            self.topo.client(0).gateway_addr,
            name,
        )
    }

    /// Starts the gateway (OpenVPN and IKEv2 both listening) and connects alice (stock
    /// OpenVPN, client 0) and carol (charon-cmd, client 3); both reach the LAN.
    fn gateway_and_clients(&self) -> Result<(Gatehoused, Connected)> {
        let gw = Gatehoused::start(
            &self.topo.gateway,
            &self.gw_dir,
            &self.path("gatehoused.log"),
        )?;
        expect_both_protocols(&gw)?;
        let carol_config = self.ike_config(3, "carol")?;
        let alice = self.stock_client(0, "alice")?;
        let carol = spawn_charon_cmd(
            &self.topo.client(3).ns,
            self.dir.path(),
            "carol",
            &carol_config,
        )?;
        wait_client_up(&alice, &gw, 1, UP_TIMEOUT)?;
        wait_ike_up(&carol, &gw, "carol", UP_TIMEOUT)?;
        let carol_vip = carol.virtual_ip().context("carol has no virtual IP")?;
        for i in [0, 3] {
            wait_ping(
                &self.topo.client(i).ns,
                self.topo.lan_host,
                Duration::from_secs(10),
            )
            .with_context(|| logs(&gw, &[&alice], &[&carol]))?;
        }
        Ok((
            gw,
            Connected {
                alice,
                carol,
                carol_vip,
            },
        ))
    }

    /// Pings from alice's and carol's namespaces for the next `secs` seconds.
    fn pings(&self, secs: u64) -> Result<[PingRun; 2]> {
        let d = Duration::from_secs(secs);
        Ok([
            PingRun::start(
                &self.topo.client(0).ns,
                self.topo.lan_host,
                d,
                &self.path("ping-alice.log"),
            )?,
            PingRun::start(
                &self.topo.client(3).ns,
                self.topo.lan_host,
                d,
                &self.path("ping-carol.log"),
            )?,
        ])
    }
}

/// The clients connected before the flood.
struct Connected {
    alice: Proc,
    carol: CharonCmd,
    carol_vip: Ipv4Addr,
}

impl Connected {
    /// alice and carol still run their first sessions and reach the LAN; their pings across
    /// the flood were answered.
    fn kept(&self, s: &Setup, gw: &Gatehoused, pings: &[PingRun; 2]) -> Result<()> {
        pings[0].expect("alice (OpenVPN)", PING_LOSS_MAX_PCT)?;
        pings[1].expect("carol (IKEv2)", PING_LOSS_MAX_PCT)?;
        openvpn_session_kept(&self.alice, gw, "alice")?;
        ike_session_kept(&self.carol, gw, "carol", self.carol_vip)?;
        for i in [0, 3] {
            wait_ping(
                &s.topo.client(i).ns,
                s.topo.lan_host,
                Duration::from_secs(5),
            )
            .with_context(|| logs(gw, &[&self.alice], &[&self.carol]))?;
        }
        Ok(())
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

fn logs(gw: &Gatehoused, clients: &[&Proc], ike: &[&CharonCmd]) -> String {
    let mut s = format!("gatehoused log:\n{}\n", gw.log_tail(30));
    for c in clients {
        s += &format!(
            "client log {}:\n{}\n",
            c.log_path().display(),
            c.log_tail(15)
        );
    }
    for c in ike {
        s += &format!(
            "charon-cmd log {}:\n{}\n",
            c.log_path().display(),
            c.log_tail(20)
        );
    }
    s
}

/// The clients that connected during the flood.
struct Fresh {
    bob: Proc,
    dave: CharonCmd,
}

/// Connects bob (stock OpenVPN, client 2) and dave (charon-cmd, client 4) at once while the
/// flood runs: both must be up within [`CONNECT_UNDER_FLOOD`] and reach the LAN.
fn clients_under_flood(
    s: &Setup,
    gw: &Gatehoused,
    before: &Connected,
    dave_config: &CharonCmdConfig,
) -> Result<Fresh> {
    let started = Instant::now();
    let bob = s.stock_client(2, "bob")?;
    let dave = spawn_charon_cmd(&s.topo.client(4).ns, s.dir.path(), "dave", dave_config)?;
    let all = || logs(gw, &[&before.alice, &bob], &[&before.carol, &dave]);
    wait_client_up(&bob, gw, 1, CONNECT_UNDER_FLOOD).with_context(all)?;
    let bob_took = started.elapsed();
    wait_ike_up(
        &dave,
        gw,
        "dave",
        CONNECT_UNDER_FLOOD.saturating_sub(bob_took),
    )
    .with_context(all)?;
    let dave_took = started.elapsed();
    eprintln!(
        "during the flood: bob (OpenVPN) connected in {bob_took:?}, dave (IKEv2) by {dave_took:?}"
    );
    ensure!(
        dave_took < CONNECT_UNDER_FLOOD,
        "dave took {dave_took:?} to connect\n{}",
        all()
    );
    for i in [2, 4] {
        wait_ping(
            &s.topo.client(i).ns,
            s.topo.lan_host,
            Duration::from_secs(5),
        )
        .with_context(all)?;
    }
    Ok(Fresh { bob, dave })
}

#[test]
fn a_spoofed_reset_flood_neither_locks_clients_out_nor_amplifies() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("ho", 202)?;
    let (gw, before) = s.gateway_and_clients()?;
    let alice_remote: SocketAddrV4 = gw
        .wait_connected("alice", Duration::from_secs(5))?
        .field("remote")
        .context("no remote in the connect line")?
        .parse()?;
    // carol's IKE socket (charon-cmd binds a random port).
    let carol_remote: SocketAddrV4 = gw
        .wait_connected("carol", Duration::from_secs(5))?
        .field("remote")
        .context("no remote in the connect line")?
        .parse()?;
    let dave_config = s.ike_config(4, "dave")?;
    let rss0 = rss_kb(gw.proc().pid())?;
    let (rx0, tx0) = link_bytes(&s.topo.client(1).ns, "up0")?;

    let pings = s.pings(FLOOD_SECS + 1)?;
    let count = RATE * FLOOD_SECS;
    let net = s.forged_net();
    let random = s.flood(
        "flood-random.log",
        &["--from-net", &net],
        count,
        RATE,
        false,
    )?;
    // Resets forged with alice's own address and port, and with carol's IKE address and
    // port: both sessions must survive them.
    let at_alice = alice_remote.to_string();
    let aimed = s.flood("flood-alice.log", &["--from", &at_alice], 1000, 200, false)?;
    let at_carol = carol_remote.to_string();
    let aimed_ike = s.flood("flood-carol.log", &["--from", &at_carol], 1000, 200, false)?;
    std::thread::sleep(Duration::from_secs(1));
    let fresh = clients_under_flood(&s, &gw, &before, &dave_config)?;
    wait_done(&random, Duration::from_secs(FLOOD_SECS + 20))?;
    wait_done(&aimed, Duration::from_secs(20))?;
    wait_done(&aimed_ike, Duration::from_secs(20))?;
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
    before.kept(&s, &gw, &pings)?;
    openvpn_session_kept(&fresh.bob, &gw, "bob")?;
    ensure!(
        fresh.dave.is_running(),
        "dave's charon-cmd exited\n{}",
        ike_logs(&gw, &fresh.dave)
    );
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn tls_crypt_v2_drops_a_forged_v3_flood_before_any_answer() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("hv", 203)?;
    s.gw_dir.set("openvpn.tls_crypt_v2", &toml_str("on"))?;
    let (gw, before) = s.gateway_and_clients()?;
    let wrapper = gw
        .events(READY)
        .first()
        .and_then(|e| e.field("openvpn_wrapper").map(str::to_string));
    ensure!(
        wrapper.as_deref() == Some("tls-crypt-v2"),
        "the gateway should require tls-crypt-v2: openvpn_wrapper={wrapper:?}"
    );
    let dave_config = s.ike_config(4, "dave")?;
    let (rx0, tx0) = link_bytes(&s.topo.client(1).ns, "up0")?;
    let pings = s.pings(FLOOD_SECS + 1)?;
    let count = RATE * FLOOD_SECS;
    let net = s.forged_net();
    let flood = s.flood("flood-v3.log", &["--from-net", &net], count, RATE, true)?;
    std::thread::sleep(Duration::from_secs(1));
    let fresh = clients_under_flood(&s, &gw, &before, &dave_config)?;
    // bob's profile is the one `gatehouse-certs export --format ovpn` wrote: with the
    // gateway requiring tls-crypt-v2 it carries bob's own client key, which the stock client
    // used (the gateway drops anything else before the TLS handshake).
    let profile = std::fs::read_to_string(s.path("bob.ovpn"))?;
    ensure!(
        profile.contains("<tls-crypt-v2>")
            && profile.contains("-----BEGIN OpenVPN tls-crypt-v2 client key-----"),
        "bob's exported profile has no tls-crypt-v2 client key:\n{profile}"
    );
    ensure!(
        !profile.contains("<tls-auth>") && !profile.contains("<tls-crypt>"),
        "bob's exported profile carries another wrapper:\n{profile}"
    );
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
    before.kept(&s, &gw, &pings)?;
    openvpn_session_kept(&fresh.bob, &gw, "bob")?;
    ensure!(
        fresh.dave.is_running(),
        "dave's charon-cmd exited\n{}",
        ike_logs(&gw, &fresh.dave)
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
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
