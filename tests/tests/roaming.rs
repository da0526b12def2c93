//! NAT rebinding: a client behind a NAT whose mapping changes twice while it pings the LAN
//! host keeps its session. The NAT (tests/src/nat.rs) first maps the client's UDP flows to
//! outside address 0 (ports 20000-20999), then to outside address 1 (ports 21000-21999),
//! then back to address 0 but ports 22000-22999; each change flushes the NAT's conntrack
//! table, and the test reads it back to prove the client's next packets left with the new
//! source. The gateway must find the session by what authenticates it (OpenVPN peer-id, ESP
//! SPI / IKE SPIs), not by the source address, and send its replies to the new one.
//!
//! - OpenVPN (UDP): the stock OpenVPN 2.6 client, hand-written config (the same for both
//!   servers), against gatehoused and, in the same test, against the stock OpenVPN 2.6 server
//!   (which floats a client by its peer-id): no reconnect, and gatehoused loses no more pings
//!   than the stock server (+2).
//! - IKEv2: charon-cmd (NAT-T, ESP in UDP 4500) against gatehoused: no new IKE SA, at most
//!   3 pings lost out of 100, and once the client is idle the gateway's DPD (INFORMATIONAL
//!   request) reaches it at the newest mapping. charon-cmd itself does nothing about the new
//!   mapping (it cannot see it; its own DPD is 30 s and its NAT keepalive 20 s, both idle-only):
//!   the gateway must follow the authenticated ESP (and IKE) packets to their new source.
//!
//! Tags `rm-*`, subnet indexes 150..=159.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::gatehoused::{
    Gatehoused, GatewayDir, issue_rsa_client, times_up, wait_client_up,
};
use gatehouse_tests::nat::{Flow, Mapping, Nat};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::openssl_pki::OpensslPki;
use gatehouse_tests::openvpn::{
    ClientConfig, Proto, ServerConfig, UP, UP_TIMEOUT, spawn_openvpn, start_server,
};
use gatehouse_tests::strongswan::{
    CharonCmd, CharonCmdConfig, IKE_ESTABLISHED, parse_ping_summary, tail,
};
use gatehouse_tests::{GatewayTopology, Proc, require_commands, require_root};

/// Ping interval during the rebinding (seconds, as ping takes it).
const INTERVAL: &str = "0.2";
/// When, after the continuous ping starts, the NAT's mapping changes.
const SWITCHES: [Duration; 2] = [Duration::from_secs(6), Duration::from_millis(12_500)];
/// How long the NAT gets to show a flow in the new mapping after a change (the client
/// sends a ping every 0.2 s).
const FLOW_TIMEOUT: Duration = Duration::from_secs(3);

/// The three mappings, in order: outside address 0, outside address 1, outside address 0
/// again on other ports (so every change is a new source port, the first also a new
/// address).
fn mappings(nat: &Nat<'_>) -> [Mapping; 3] {
    [
        Mapping::new(nat.outside[0], 20000, 20999),
        Mapping::new(nat.outside[1], 21000, 21999),
        Mapping::new(nat.outside[0], 22000, 22999),
    ]
}

fn require() {
    require_root();
    require_commands(&["ip", "ping", "openssl", "nft", "conntrack"]);
}

/// What one rebinding run saw.
#[derive(Debug)]
struct Rebinding {
    sent: u32,
    received: u32,
    /// The client's flows to the gateway port in each mapping, as the NAT's conntrack showed
    /// them.
    flows: Vec<Vec<Flow>>,
    ping_output: String,
}

impl Rebinding {
    fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.received)
    }

    fn describe(&self) -> String {
        let flows: Vec<String> = self
            .flows
            .iter()
            .map(|f| f.iter().map(Flow::to_string).collect::<Vec<_>>().join(", "))
            .collect();
        format!(
            "{} sent, {} received, {} lost; the client's flow per mapping: {}",
            self.sent,
            self.received,
            self.lost(),
            flows.join(" | ")
        )
    }
}

/// The rebinding scenario: with mapping 0 in place, a continuous ping (`count` at 0.2 s)
/// from the client behind `nat` to `target`; at each of [`SWITCHES`] the next mapping (and a
/// conntrack flush), each proven by the client's flow to `remote` showing up in it. Returns
/// what ping counted.
fn rebind_while_pinging(
    nat: &Nat<'_>,
    target: Ipv4Addr,
    remote: SocketAddrV4,
    count: u32,
    log: &Path,
) -> Result<Rebinding> {
    let maps = mappings(nat);
    let mut flows = vec![
        nat.wait_flow(remote, maps[0], FLOW_TIMEOUT)
            .with_context(|| nat.describe())?,
    ];
    let ping = nat.client.spawn(
        "ping",
        [
            "-n",
            "-D",
            "-O",
            "-i",
            INTERVAL,
            "-W",
            "1",
            "-c",
            &count.to_string(),
            &target.to_string(),
        ],
        log,
    )?;
    let start = Instant::now();
    for (at, m) in SWITCHES.iter().zip(&maps[1..]) {
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
        nat.set_mapping(*m)?;
        let flow = nat
            .wait_flow(remote, *m, FLOW_TIMEOUT)
            .with_context(|| nat.describe())?;
        eprintln!(
            "{:>5.1} s: NAT mapping now {m}; the client's flows: {flow:?}",
            start.elapsed().as_secs_f64()
        );
        flows.push(flow);
    }
    let interval: f64 = INTERVAL.parse()?;
    let limit = Duration::from_secs_f64(f64::from(count) * interval + 10.0);
    while ping.is_running() {
        if start.elapsed() > limit {
            bail!("ping still running after {limit:?}:\n{}", ping.log_tail(5));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let output = ping.log_contents();
    let (sent, received) = parse_ping_summary(&output)
        .with_context(|| format!("no ping summary in:\n{}", tail(&output, 5)))?;
    Ok(Rebinding {
        sent,
        received,
        flows,
        ping_output: output,
    })
}

/// Lines of ping's `-O` output for requests that got no answer, shortened to their
/// timestamps: where in the run the loss was.
fn unanswered(ping_output: &str) -> String {
    let lines: Vec<&str> = ping_output
        .lines()
        .filter(|l| l.contains("no answer yet"))
        .collect();
    match lines.len() {
        0 => "none".to_string(),
        n if n <= 6 => lines.join("\n"),
        n => format!(
            "{}\n... ({n} in all) ...\n{}",
            lines[..3].join("\n"),
            lines[n - 3..].join("\n")
        ),
    }
}

/// Lines of an OpenVPN client log that mean it restarted or reconnected.
fn restarts(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("SIGUSR1") || l.contains("Restart") || l.contains("SIGHUP"))
        .map(str::to_string)
        .collect()
}

/// One OpenVPN half of test (a).
#[derive(Debug)]
struct OpenvpnRun {
    server: &'static str,
    rebinding: Rebinding,
    client_ups: usize,
    client_restarts: Vec<String>,
    client_running: bool,
    client_log: String,
    server_log: String,
}

impl OpenvpnRun {
    fn ok(&self) -> bool {
        self.client_ups == 1 && self.client_restarts.is_empty() && self.client_running
    }

    fn summary(&self) -> String {
        format!(
            "{}: {}; client came up {} time(s), restarts: {:?}, still running: {}",
            self.server,
            self.rebinding.describe(),
            self.client_ups,
            self.client_restarts,
            self.client_running
        )
    }

    fn logs(&self) -> String {
        format!(
            "--- {} ---\nunanswered pings:\n{}\nclient log:\n{}\nserver log:\n{}",
            self.server,
            unanswered(&self.rebinding.ping_output),
            tail(&self.client_log, 15),
            tail(&self.server_log, 20)
        )
    }
}

/// 90 pings at 0.2 s: 18 s with the two changes at 6 s and 12.5 s.
const OPENVPN_PINGS: u32 = 90;

/// The same hand-written stock client config for both servers (UDP 1194, data ciphers as
/// Gatehouse offers them), dialling the gateway through the NAT.
fn client_config(nat: &Nat<'_>, certs: gatehouse_tests::openvpn::CertFiles) -> ClientConfig {
    let mut c = ClientConfig::new(Proto::Udp, nat.gateway_addr, 1194, certs);
    c.dev = "tun-rm".to_string();
    c
}

/// Starts `config` behind the NAT (does not wait).
fn spawn_client(nat: &Nat<'_>, dir: &Path, config: &ClientConfig) -> Result<Proc> {
    let path = dir.join("client.conf");
    config.write(&path)?;
    spawn_openvpn(&nat.client, &path, &[], &dir.join("client.log"))
}

fn finish_openvpn_run(
    server: &'static str,
    nat: &Nat<'_>,
    topo: &GatewayTopology,
    client: &Proc,
    server_log: &dyn Fn() -> String,
    dir: &Path,
) -> Result<OpenvpnRun> {
    wait_ping(&nat.client, topo.lan_host, Duration::from_secs(10)).with_context(|| {
        format!(
            "{server}: client log:\n{}\nserver log:\n{}",
            client.log_tail(20),
            tail(&server_log(), 20)
        )
    })?;
    let remote = SocketAddrV4::new(nat.gateway_addr, 1194);
    let rebinding = rebind_while_pinging(
        nat,
        topo.lan_host,
        remote,
        OPENVPN_PINGS,
        &dir.join("ping.log"),
    )
    .with_context(|| format!("{server}: client log:\n{}", client.log_tail(20)))?;
    let client_log = client.log_contents();
    Ok(OpenvpnRun {
        server,
        client_ups: times_up(client),
        client_restarts: restarts(&client_log),
        client_running: client.is_running(),
        rebinding,
        client_log,
        server_log: server_log(),
    })
}

/// The scenario against gatehoused (topology `rm-gh`, subnet 150).
fn openvpn_against_gatehoused(dir: &Path) -> Result<OpenvpnRun> {
    let topo = GatewayTopology::new("rm-gh", 150, 1)?;
    let nat = Nat::behind(
        &topo,
        0,
        "rm-gh-in",
        Mapping::new(topo.client(0).addr, 20000, 20999),
    )?;
    let gw_dir = GatewayDir::for_topology(&dir.join("gateway"), &topo, "ghd150")?;
    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.join("gatehoused.log"))?;
    let alice = gw_dir.issue_client("alice", &[])?;
    let config = client_config(&nat, alice.cert_files(&gw_dir.ca_cert()));
    let client = spawn_client(&nat, dir, &config)?;
    wait_client_up(&client, &gw, 1, UP_TIMEOUT)?;
    let run = finish_openvpn_run("gatehoused", &nat, &topo, &client, &|| gw.log(), dir)?;
    ensure!(gw.is_running(), "gatehoused died:\n{}", gw.log_tail(30));
    Ok(run)
}

/// The same scenario against the stock OpenVPN 2.6 server (topology `rm-st`, subnet 151).
fn openvpn_against_stock_server(dir: &Path) -> Result<OpenvpnRun> {
    let topo = GatewayTopology::new("rm-st", 151, 1)?;
    let nat = Nat::behind(
        &topo,
        0,
        "rm-st-in",
        Mapping::new(topo.client(0).addr, 20000, 20999),
    )?;
    let pki = OpensslPki::create(&dir.join("pki"), &[nat.gateway_addr])?;
    let mut server = ServerConfig::new(Proto::Udp, 1194, pki.server.clone(), topo.vpn_pool);
    server.push_routes.push(topo.lan_net);
    let server = start_server(&topo.gateway, dir, &server)?;
    let config = client_config(&nat, pki.client.clone());
    let client = spawn_client(&nat, dir, &config)?;
    client
        .wait_for_log(UP, UP_TIMEOUT)
        .with_context(|| format!("stock server log:\n{}", server.log_tail(20)))?;
    let run = finish_openvpn_run(
        "stock openvpn server",
        &nat,
        &topo,
        &client,
        &|| server.log_contents(),
        dir,
    )?;
    ensure!(
        server.is_running(),
        "the stock server died:\n{}",
        server.log_tail(30)
    );
    Ok(run)
}

#[test]
fn openvpn_client_keeps_its_session_across_nat_rebinding() -> Result<()> {
    require();
    require_commands(&["openvpn"]);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let (gh_dir, st_dir) = (dir.path().join("gatehoused"), dir.path().join("stock"));
    std::fs::create_dir_all(&gh_dir)?;
    std::fs::create_dir_all(&st_dir)?;
    // Both halves at once, each in its own namespaces: the test stays well under a minute.
    let (gh, stock) = thread::scope(|s| {
        let gh = s.spawn(|| openvpn_against_gatehoused(&gh_dir));
        let stock = s.spawn(|| openvpn_against_stock_server(&st_dir));
        (join(gh), join(stock))
    });
    let stock = stock.context("the stock-server half (the baseline) failed")?;
    eprintln!("{}", stock.summary());
    let float_lines: Vec<&str> = stock
        .server_log
        .lines()
        .filter(|l| l.to_lowercase().contains("float"))
        .collect();
    if !float_lines.is_empty() {
        eprintln!("stock server on the rebinding:\n{}", float_lines.join("\n"));
    }
    ensure!(
        stock.ok(),
        "the stock server lost the client across the NAT rebinding (the baseline is broken): {}\n{}",
        stock.summary(),
        stock.logs()
    );
    let gh = gh.context("the gatehoused half failed")?;
    eprintln!("{}", gh.summary());
    eprintln!(
        "pings lost across two NAT rebindings: gatehoused {} of {}, stock openvpn server {} of {} \
         (took {:.1} s)",
        gh.rebinding.lost(),
        gh.rebinding.sent,
        stock.rebinding.lost(),
        stock.rebinding.sent,
        started.elapsed().as_secs_f64()
    );
    ensure!(
        gh.ok() && gh.rebinding.lost() <= stock.rebinding.lost() + 2,
        "gatehoused did not keep the session across the NAT rebinding as well as the stock \
         server: gatehoused lost {} of {} pings, the stock server {} of {} (allowed: stock + 2)\n\
         {}\n{}\n{}",
        gh.rebinding.lost(),
        gh.rebinding.sent,
        stock.rebinding.lost(),
        stock.rebinding.sent,
        gh.summary(),
        stock.summary(),
        gh.logs()
    );
    Ok(())
}

fn join<T>(h: thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread panicked")))
}

/// charon-cmd log lines about the IKE SA's life, NAT-T, DPD and addresses.
fn ike_life(log: &str) -> String {
    let keys = [
        "IKE_SA",
        "DPD",
        "NAT",
        "keep",
        "address",
        "retransmit",
        "INFORMATIONAL",
        "MOBIKE",
        "deleting",
        "giving up",
    ];
    log.lines()
        .filter(|l| keys.iter().any(|k| l.contains(k)))
        .filter(|l| !l.contains("[CFG]"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What charon logs when the gateway sends it an INFORMATIONAL request (a DPD probe).
const GATEWAY_DPD: &str = "parsed INFORMATIONAL request";
/// How long the idle client waits for the gateway's DPD (3 s idle, plus slack).
const DPD_WAIT: Duration = Duration::from_secs(8);

/// 100 pings at 0.2 s: 20 s with the two changes at 6 s and 12.5 s.
const IKEV2_PINGS: u32 = 100;
const IKEV2_MAX_LOSS: u32 = 3;

#[test]
fn strongswan_client_keeps_its_session_across_nat_rebinding() -> Result<()> {
    require();
    require_commands(&["charon-cmd"]);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("rm-sw", 152, 1)?;
    let nat = Nat::behind(
        &topo,
        0,
        "rm-sw-in",
        Mapping::new(topo.client(0).addr, 20000, 20999),
    )?;
    let gw_dir = GatewayDir::for_topology(&dir.path().join("gateway"), &topo, "ghd152")?;
    // The gateway probes an idle client after 3 s: once the pings stop, its DPD shows whether
    // its IKE messages reach the client at the NAT's newest mapping.
    gw_dir.set("ikev2.dpd", "\"3s\"")?;
    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.path().join("gatehoused.log"))?;
    let (cert, key) = issue_rsa_client(dir.path(), &gw_dir.pki(), "carol", &[])?;
    let config = CharonCmdConfig::new(nat.gateway_addr, "CN=carol", &gw_dir.ca_cert(), &cert, &key);
    let cmd = CharonCmd::start(&nat.client, &dir.path().join("charon-cmd"), &config)
        .with_context(|| format!("gatehoused log:\n{}", gw.log_tail(25)))?;
    let logs = || {
        format!(
            "gatehoused log:\n{}\ncharon-cmd log {}:\n{}\n{}",
            gw.log_tail(25),
            cmd.log_path().display(),
            cmd.log_tail(40),
            nat.describe()
        )
    };
    let connected = gw
        .wait_connected("carol", Duration::from_secs(5))
        .with_context(logs)?;
    eprintln!("{}", connected.line);
    wait_ping(&nat.client, topo.lan_host, Duration::from_secs(10)).with_context(logs)?;
    let log_before = cmd.log();
    let remote = SocketAddrV4::new(nat.gateway_addr, 4500);
    let r = rebind_while_pinging(
        &nat,
        topo.lan_host,
        remote,
        IKEV2_PINGS,
        &dir.path().join("ping.log"),
    )
    .with_context(logs)?;
    // Idle now: the gateway's DPD (INFORMATIONAL request) must reach the client through the
    // NAT's current mapping, and be answered.
    let idle = Instant::now();
    let requests_before = cmd.log().matches(GATEWAY_DPD).count();
    let mut dpd_after = None;
    while idle.elapsed() < DPD_WAIT {
        if cmd.log().matches(GATEWAY_DPD).count() > requests_before {
            dpd_after = Some(idle.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "gateway DPD after the rebinding: {}",
        dpd_after.map_or(
            format!("none reached the client within {DPD_WAIT:?}"),
            |d| {
                format!(
                    "reached the client {:.1} s into the idle time",
                    d.as_secs_f64()
                )
            }
        )
    );
    let log = cmd.log();
    let during = log.get(log_before.len()..).unwrap_or_default();
    eprintln!("charon-cmd during the rebinding:\n{}", ike_life(during));
    eprintln!("unanswered pings:\n{}", unanswered(&r.ping_output));
    eprintln!(
        "IKEv2 across two NAT rebindings: {}; took {:.1} s",
        r.describe(),
        started.elapsed().as_secs_f64()
    );
    let established = log.matches(IKE_ESTABLISHED).count();
    ensure!(
        established == 1
            && cmd.is_running()
            && !log.contains("deleting IKE_SA")
            && !log.contains("giving up")
            && !log.contains("reauthenticating"),
        "charon-cmd lost or replaced its IKE SA across the NAT rebinding (established {established} \
         time(s), running: {})\n{}",
        cmd.is_running(),
        logs()
    );
    ensure!(
        r.lost() <= IKEV2_MAX_LOSS,
        "IKEv2 through gatehoused lost {} of {} pings across two NAT rebindings (allowed \
         {IKEV2_MAX_LOSS}): {}\nunanswered:\n{}\n{}",
        r.lost(),
        r.sent,
        r.describe(),
        unanswered(&r.ping_output),
        logs()
    );
    ensure!(
        dpd_after.is_some(),
        "the gateway's DPD did not reach the client within {DPD_WAIT:?} of the pings stopping: \
         its IKE messages go to a stale address after the NAT rebinding\n{}",
        logs()
    );
    ensure!(gw.is_running(), "gatehoused died\n{}", logs());
    Ok(())
}
