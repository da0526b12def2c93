//! `gatehoused` under an IKE_SA_INIT flood from one real address (issue 14): `ike-flood` (this
//! crate's plain-UDP sender) in an attacker namespace sends thousands of IKE_SA_INIT requests
//! from one address and echoes every COOKIE, while a strongSwan road warrior (swanctl) whose
//! proposal puts MODP-2048 first connects and pings the LAN. The flooding address gets at most
//! its 16 half-open SAs, the rest is dropped (`ikeperip`); the gateway is under load (its
//! cookie threshold is set below 16), so the client has to return a COOKIE and is asked for
//! x25519 instead of MODP-2048 (INVALID_KE_PAYLOAD), and still gets in within seconds; so does
//! a stock OpenVPN 2.6 client (bob) started at the same time. A stock OpenVPN client (erin)
//! and a strongSwan `charon-cmd` client (carol) connected before the flood ping the LAN across
//! it and keep their sessions; the gateway's memory stays flat.
//!
//! Clients: 0 alice (swanctl, connects during the flood), 1 the attacker, 2 erin (stock
//! OpenVPN, connected before), 3 carol (charon-cmd, connected before), 4 bob (stock OpenVPN,
//! connects during the flood).
//!
//! Tag `hi`, subnets 10.250.204.0/24 and 10.251.204.0/24 (the client pool the topology gives
//! the gateway, 10.8.204.0/24, only exists inside the tunnel).

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::bystanders::{
    PingRun, charon_cmd_config, enable_openvpn_and_ikev2, expect_both_protocols, ike_session_kept,
    openvpn_session_kept, spawn_charon_cmd, wait_ike_up,
};
use gatehouse_tests::gatehoused::{
    Gatehoused, GatewayDir, drop_counters, spawn_stock_client, wait_client_up,
};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::openvpn::UP_TIMEOUT;
use gatehouse_tests::proc::rss_kb;
use gatehouse_tests::strongswan::{Charon, RoadWarrior, SwanctlCreds};
use gatehouse_tests::{GatewayTopology, Proc, require_commands, require_root};
use tempfile::TempDir;

/// Requests per second and how many.
const RATE: u64 = 2000;
const COUNT: u64 = 16_000;
/// How long the client may take to connect while the flood runs ("within a few seconds").
const CONNECT_UNDER_FLOOD: Duration = Duration::from_secs(10);
/// Half-open IKE SAs one address may hold (the engine's default).
const PER_IP: u64 = 16;
/// What the flood may add to the gateway's resident memory.
const RSS_GROWTH_MAX_KB: u64 = 16 * 1024;
/// Pings through a connected client's tunnel that may go unanswered across the flood.
const PING_LOSS_MAX_PCT: u32 = 10;

struct Setup {
    // Dropped in this order: the namespaces (and whatever still runs in them), then files.
    topo: GatewayTopology,
    gw_dir: GatewayDir,
    dir: TempDir,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A stock OpenVPN client in client `i`'s namespace with an exported profile for a new
    /// certificate `name`.
    fn stock_client(&self, i: usize, name: &str) -> Result<Proc> {
        let gateway = self.topo.client(i).gateway_addr;
        let profile =
            self.gw_dir
                .client_profile(name, gateway, &self.path(&format!("{name}.ovpn")))?;
        spawn_stock_client(
            &self.topo.client(i).ns,
            &profile,
            &format!("hi{i}"),
            &[],
            &self.path(&format!("openvpn-{name}.log")),
        )
    }
}

/// The flooder's summary: (requests sent, cookies echoed, half-open SAs it got).
fn flood_result(p: &Proc, timeout: Duration) -> Result<(u64, u64, u64)> {
    let deadline = Instant::now() + timeout;
    while p.is_running() {
        ensure!(
            Instant::now() < deadline,
            "the flood did not finish: {}",
            p.log_tail(5)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = p.log_contents();
    let line = log
        .lines()
        .find(|l| l.starts_with("sent "))
        .with_context(|| format!("flood failed: {}", p.log_tail(5)))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| -> Result<u64> {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .with_context(|| format!("cannot read {line:?}"))
    };
    // sent N requests C cookies echoed S half-open SAs B bytes back
    Ok((num(1)?, num(3)?, num(6)?))
}

#[test]
fn an_ike_sa_init_flood_from_one_address_is_capped_and_clients_get_in() -> Result<()> {
    require_root();
    require_commands(&[
        "ip",
        "ping",
        "openssl",
        "openvpn",
        "charon-cmd",
        "charon-systemd",
        "swanctl",
    ]);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("hi", 204, 5)?;
    let gw_dir = GatewayDir::for_topology(&dir.path().join("gateway"), &topo, "ghd204")?;
    enable_openvpn_and_ikev2(&gw_dir)?;
    let s = Setup { topo, gw_dir, dir };
    // Two workers (the client's and the attacker's addresses steer to the same one), and a
    // cookie threshold the attacker's 16 half-open SAs exceed: the gateway is "under load".
    s.gw_dir.set("workers", "2")?;
    s.gw_dir.set("ikev2.cookie_threshold", "8")?;
    let gw = Gatehoused::start(&s.topo.gateway, &s.gw_dir, &s.path("gatehoused.log"))?;
    expect_both_protocols(&gw)?;

    // erin (stock OpenVPN) and carol (charon-cmd), connected before the flood.
    let carol_config = charon_cmd_config(
        &s.gw_dir,
        s.dir.path(),
        s.topo.client(3).gateway_addr,
        s.topo.client(0).gateway_addr,
        "carol",
    )?;
    let erin = s.stock_client(2, "erin")?;
    let carol = spawn_charon_cmd(&s.topo.client(3).ns, s.dir.path(), "carol", &carol_config)?;
    wait_client_up(&erin, &gw, 1, UP_TIMEOUT)?;
    wait_ike_up(&carol, &gw, "carol", UP_TIMEOUT)?;
    let carol_vip = carol.virtual_ip().context("carol has no virtual IP")?;
    for i in [2, 3] {
        wait_ping(
            &s.topo.client(i).ns,
            s.topo.lan_host,
            Duration::from_secs(10),
        )?;
    }

    // alice: swanctl, MODP-2048 first in her proposal (x25519 offered too).
    let issued = s.gw_dir.issue_client("alice", &[])?;
    let charon = Charon::start(&s.topo.client(0).ns, &s.path("swanctl-alice"), "")?;
    let cert = charon.install_creds(
        "alice",
        &SwanctlCreds {
            ca: s.gw_dir.ca_cert(),
            cert: issued.cert,
            key: issued.key,
        },
    )?;
    let mut rw = RoadWarrior::new("gh", s.topo.client(0).gateway_addr, &cert);
    rw.proposals = "aes256gcm16-prfsha256-modp2048-x25519".into();
    charon.write_conns(&[&rw], "")?;
    charon.load_all()?;
    let logs = || {
        format!(
            "gatehoused log:\n{}\ncharon log:\n{}",
            gw.log_tail(30),
            charon.log_tail(40)
        )
    };

    let rss0 = rss_kb(gw.proc().pid())?;
    let flood_secs = Duration::from_secs(COUNT / RATE + 1);
    let pings = [
        PingRun::start(
            &s.topo.client(2).ns,
            s.topo.lan_host,
            flood_secs,
            &s.path("ping-erin.log"),
        )?,
        PingRun::start(
            &s.topo.client(3).ns,
            s.topo.lan_host,
            flood_secs,
            &s.path("ping-carol.log"),
        )?,
    ];
    let to = SocketAddrV4::new(s.topo.client(1).gateway_addr, 500).to_string();
    let (count, rate) = (COUNT.to_string(), RATE.to_string());
    let flood = s.topo.client(1).ns.spawn(
        env!("CARGO_BIN_EXE_ike-flood"),
        ["--to", &to, "--count", &count, "--rate", &rate],
        &s.path("ike-flood.log"),
    )?;
    // Let the attacker take its share first.
    std::thread::sleep(Duration::from_secs(1));

    let t0 = Instant::now();
    // bob (stock OpenVPN) starts at the same time; swanctl's initiate blocks until alice is in.
    let bob = s.stock_client(4, "bob")?;
    let out = charon.initiate(&rw.child()).with_context(logs)?;
    // strongSwan's own account: a COOKIE round trip, then INVALID_KE_PAYLOAD (it keeps the
    // cookie and restarts with x25519).
    ensure!(
        out.contains("parsed IKE_SA_INIT response 0 [ N(COOKIE) ]")
            && out.contains("it requested CURVE_25519"),
        "no COOKIE and INVALID_KE_PAYLOAD round trips:\n{out}"
    );
    let event = gw
        .wait_connected("alice", CONNECT_UNDER_FLOOD)
        .with_context(logs)?;
    let took = t0.elapsed();
    eprintln!(
        "alice connected in {took:?} during the flood: {}",
        event.line
    );
    ensure!(
        took < CONNECT_UNDER_FLOOD,
        "alice took {took:?} to connect\n{}",
        logs()
    );
    ensure!(
        event
            .field("ike")
            .is_some_and(|i| i.ends_with("curve25519")),
        "under load alice should have been asked for x25519 instead of MODP-2048: {}",
        event.line
    );
    wait_ping(
        &s.topo.client(0).ns,
        s.topo.lan_host,
        Duration::from_secs(5),
    )
    .with_context(logs)?;
    wait_client_up(
        &bob,
        &gw,
        1,
        CONNECT_UNDER_FLOOD.saturating_sub(t0.elapsed()),
    )?;
    let bob_took = t0.elapsed();
    eprintln!("bob (OpenVPN) connected by {bob_took:?} during the flood");
    wait_ping(
        &s.topo.client(4).ns,
        s.topo.lan_host,
        Duration::from_secs(5),
    )
    .with_context(logs)?;

    let (sent, echoed, half_open) =
        flood_result(&flood, Duration::from_secs(COUNT / RATE + 20)).with_context(logs)?;
    eprintln!("flood: {sent} requests, {echoed} cookies echoed, {half_open} half-open SAs");
    ensure!(sent >= COUNT, "the flood did not go out: {sent} requests");
    ensure!(
        (1..=PER_IP).contains(&half_open),
        "one address got {half_open} half-open IKE SAs (cap {PER_IP})"
    );
    let rss1 = rss_kb(gw.proc().pid())?;
    eprintln!("gatehoused RSS {rss0} kB before, {rss1} kB after");
    ensure!(
        rss1 <= rss0 + RSS_GROWTH_MAX_KB,
        "gatehoused grew from {rss0} kB to {rss1} kB"
    );
    // Still up and passing traffic after the flood; erin and carol kept their sessions.
    pings[0].expect("erin (OpenVPN)", PING_LOSS_MAX_PCT)?;
    pings[1].expect("carol (IKEv2)", PING_LOSS_MAX_PCT)?;
    openvpn_session_kept(&erin, &gw, "erin")?;
    ike_session_kept(&carol, &gw, "carol", carol_vip)?;
    openvpn_session_kept(&bob, &gw, "bob")?;
    for i in [0, 2, 3, 4] {
        wait_ping(
            &s.topo.client(i).ns,
            s.topo.lan_host,
            Duration::from_secs(5),
        )
        .with_context(logs)?;
    }
    let capped = gw
        .events("too many half-open IKE SAs from one address: IKE_SA_INIT dropped")
        .len();
    ensure!(
        capped >= 1,
        "no log line for the capped address\n{}",
        logs()
    );

    gw.terminate(Duration::from_secs(10))?;
    let stopped = gw
        .log()
        .lines()
        .find(|l| l.contains("gateway stopped"))
        .map(str::to_string)
        .context("no `gateway stopped` line")?;
    eprintln!("{stopped}");
    let drops = drop_counters(&stopped);
    let per_ip = drops.get("ikeperip").copied().unwrap_or(0);
    ensure!(
        per_ip >= COUNT / 2,
        "only {per_ip} of {COUNT} flood requests counted as ikeperip: {stopped}"
    );
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
