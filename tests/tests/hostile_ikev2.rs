//! `gatehoused` under an IKE_SA_INIT flood from one real address (issue 14): `ike-flood` (this
//! crate's plain-UDP sender) in an attacker namespace sends thousands of IKE_SA_INIT requests
//! from one address and echoes every COOKIE, while a strongSwan road warrior (swanctl) whose
//! proposal puts MODP-2048 first connects and pings the LAN. The flooding address gets at most
//! its 16 half-open SAs, the rest is dropped (`ikeperip`); the gateway is under load (its
//! cookie threshold is set below 16), so the client has to return a COOKIE and is asked for
//! x25519 instead of MODP-2048 (INVALID_KE_PAYLOAD), and still gets in within seconds; the
//! gateway's memory stays flat.
//!
//! Tag `hi`, subnets 10.250.204.0/24 and 10.251.204.0/24 (the client pool the topology gives
//! the gateway, 10.8.204.0/24, only exists inside the tunnel).

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir, drop_counters};
use gatehouse_tests::net::wait_ping;
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
    require_commands(&["ip", "ping", "charon-systemd", "swanctl"]);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("hi", 204, 2)?;
    let gw_dir = GatewayDir::for_topology(&dir.path().join("gateway"), &topo, "ghd204")?;
    let s = Setup { topo, gw_dir, dir };
    // Two workers (the client's and the attacker's addresses steer to the same one), and a
    // cookie threshold the attacker's 16 half-open SAs exceed: the gateway is "under load".
    s.gw_dir.set("workers", "2")?;
    s.gw_dir.set("ikev2.cookie_threshold", "8")?;
    let gw = Gatehoused::start(&s.topo.gateway, &s.gw_dir, &s.path("gatehoused.log"))?;

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
    // Still up and passing traffic after the flood.
    wait_ping(
        &s.topo.client(0).ns,
        s.topo.lan_host,
        Duration::from_secs(5),
    )
    .with_context(logs)?;
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
