//! OpenVPN over TCP (port 443) cannot be exhausted (issue 14): idle and dead connections do
//! not pile up, and a stock OpenVPN 2.6 client over TCP connects and pings through while
//! they are tried.
//!
//! - a flood of idle connections from several addresses: beyond `openvpn.tcp_max_per_ip`
//!   and `openvpn.tcp_max_connections` they are refused at once (and counted), the rest are
//!   closed when `openvpn.tcp_handshake_timeout` passes; a stock OpenVPN client over TCP and
//!   a strongSwan `charon-cmd` client connected before keep their sessions and ping the LAN
//!   across the flood, another of each connects while it runs, and a new one connects
//!   afterwards from a flooding address;
//! - a session the gateway ends (revoked) has its socket closed, though the client (stopped
//!   with SIGSTOP) neither answers nor closes it;
//! - a client that goes silent (SIGSTOP) has its connection closed after the idle timeout;
//! - under a low open-files limit the cap is lowered to fit, and at the limit (the process
//!   limit lowered to what it has open) new connections are shed while sessions keep working
//!   and the CRL keeps being read.
//!
//! The idle connections are `bash` holding `/dev/tcp` descriptors inside client namespaces;
//! what the gateway holds is read with `ss` in its namespace. Tags `tf`, `tf-rv`, `tf-idle`,
//! `tf-fd`; subnets 10.250.200.0/24 and 10.251.200.0/24 (index 200) for all four, so they
//! take turns.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::bystanders::{
    PingRun, charon_cmd_config, enable_openvpn_and_ikev2, expect_both_protocols, ike_session_kept,
    openvpn_session_kept, spawn_charon_cmd, wait_ike_up,
};
use gatehouse_tests::gatehoused::{
    DISCONNECTED, Gatehoused, GatewayDir, STOPPED, drop_counters, spawn_stock_client, toml_str,
    wait_client_up,
};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::openvpn::{ClientConfig, Proto, UP_TIMEOUT, spawn_openvpn};
use gatehouse_tests::{GatewayTopology, Proc, bin, require_commands, require_root};
use tempfile::TempDir;

/// The subnet index every test here uses (10.250.200.0/24, 10.251.200.0/24).
const SUBNET: u8 = 200;
/// One test at a time: same subnets, and each runs a gateway and stock clients on two cores.
static TURN: Mutex<()> = Mutex::new(());
const POLL: Duration = Duration::from_millis(100);

/// One test's world: namespaces, a temporary folder, a gateway data directory in it.
struct Setup {
    // Dropped in this order: the namespaces (and whatever still runs in them), then files.
    topo: GatewayTopology,
    gw_dir: GatewayDir,
    dir: TempDir,
}

impl Setup {
    fn new(tag: &str, n_clients: usize) -> Result<Setup> {
        require_root();
        require_commands(&["ip", "openvpn", "ping", "ss", "bash", "prlimit", "kill"]);
        let dir = tempfile::tempdir()?;
        let topo = GatewayTopology::new(tag, SUBNET, n_clients)?;
        let gw_dir =
            GatewayDir::for_topology(&dir.path().join("gateway"), &topo, &format!("ghd{SUBNET}"))?;
        enable_openvpn_and_ikev2(&gw_dir)?;
        Ok(Setup { topo, gw_dir, dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_gateway(&self) -> Result<Gatehoused> {
        Gatehoused::start(
            &self.topo.gateway,
            &self.gw_dir,
            &self.path("gatehoused.log"),
        )
    }

    /// A stock client over TCP 443 in client `i`'s namespace, with a new certificate `name`.
    fn tcp_client(&self, i: usize, name: &str) -> Result<Proc> {
        let issued = self.gw_dir.issue_client(name, &[])?;
        let certs = issued.cert_files(&self.gw_dir.ca_cert());
        let mut config =
            ClientConfig::new(Proto::Tcp, self.topo.client(i).gateway_addr, 443, certs);
        config.dev = format!("tf-{name}");
        let path = self.path(&format!("{name}.conf"));
        config.write(&path)?;
        let log = self.path(&format!("openvpn-{name}.log"));
        spawn_openvpn(&self.topo.client(i).ns, &path, &[], &log)
    }

    /// A stock client over UDP 1194 (the exported profile) in client `i`'s namespace.
    fn udp_client(&self, i: usize, name: &str) -> Result<Proc> {
        let gateway = self.topo.client(i).gateway_addr;
        let profile =
            self.gw_dir
                .client_profile(name, gateway, &self.path(&format!("{name}.ovpn")))?;
        let log = self.path(&format!("openvpn-{name}.log"));
        spawn_stock_client(
            &self.topo.client(i).ns,
            &profile,
            &format!("tf-{name}"),
            &[],
            &log,
        )
    }

    /// `bash` in client `i`'s namespace opening `n` TCP connections to the gateway's port 443
    /// one after the other and holding them, silent; returns once all were opened.
    fn hold(&self, i: usize, n: usize) -> Result<Proc> {
        let gw = self.topo.client(i).gateway_addr;
        let script = format!(
            "for i in $(seq 1 {n}); do exec {{fd}}<>/dev/tcp/{gw}/443 || echo \"connect $i failed\"; done; echo opened; exec sleep 300"
        );
        let log = self.path(&format!(
            "hold-{i}-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let p = self
            .topo
            .client(i)
            .ns
            .spawn("bash", ["-c", &script], &log)?;
        p.wait_for_log("opened", Duration::from_secs(10))?;
        ensure!(
            !p.log_contents().contains("failed"),
            "connections from client {i} failed to open: {}",
            p.log_tail(5)
        );
        Ok(p)
    }

    /// The gateway's ESTABLISHED connections on port 443, by peer address.
    fn established(&self) -> Result<BTreeMap<Ipv4Addr, usize>> {
        established_443(&self.topo.gateway)
    }

    /// Client `i`'s ESTABLISHED connections to the gateway's port 443.
    fn established_from(&self, i: usize) -> Result<usize> {
        let addr = self.topo.client(i).addr;
        Ok(self.established()?.get(&addr).copied().unwrap_or(0))
    }

    /// `gatehoused status --json` (from the admin API).
    fn status(&self) -> Result<serde_json::Value> {
        let out = Command::new(bin("gatehoused"))
            .args(["status", "--json", "--data-dir"])
            .arg(self.gw_dir.path())
            .output()?;
        ensure!(
            out.status.success(),
            "gatehoused status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// `gatehoused status` as the operator reads it.
    fn status_text(&self) -> Result<String> {
        let out = Command::new(bin("gatehoused"))
            .args(["status", "--data-dir"])
            .arg(self.gw_dir.path())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `ss -Htn state established ( sport = :443 )` in `ns`, counted by peer address.
fn established_443(ns: &gatehouse_tests::Netns) -> Result<BTreeMap<Ipv4Addr, usize>> {
    let out = ns.exec_ok("ss", ["-Htn", "state", "established", "( sport = :443 )"])?;
    let mut by_peer = BTreeMap::new();
    for line in out.lines() {
        // Recv-Q Send-Q Local:Port Peer:Port (the state column is left out with a filter).
        let Some(peer) = line.split_whitespace().nth(3) else {
            continue;
        };
        // The listener is dual-stack by default: IPv4 peers show as `[::ffff:a.b.c.d]`.
        let ip = peer
            .rsplit_once(':')
            .map(|(a, _)| a.trim_start_matches('[').trim_end_matches(']'))
            .map(|a| a.strip_prefix("::ffff:").unwrap_or(a))
            .and_then(|a| a.parse::<Ipv4Addr>().ok())
            .with_context(|| format!("unexpected ss line {line:?}"))?;
        *by_peer.entry(ip).or_default() += 1;
    }
    Ok(by_peer)
}

/// Polls `f` until it returns true; fails with `what` and `context()` after `timeout`.
fn wait_until(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<bool>,
    context: impl Fn() -> String,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if f()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("{what} within {timeout:?}\n{}", context());
        }
        thread::sleep(POLL);
    }
}

/// The drop counters `gatehoused status --json` shows (`drops: "tcpperip=4 ..."`).
fn status_drops(status: &serde_json::Value) -> BTreeMap<String, u64> {
    let text = status["drops"].as_str().unwrap_or_default();
    drop_counters(&format!("drops={text}"))
}

fn signal(p: &Proc, sig: &str) -> Result<()> {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(p.pid().to_string())
        .status()?
        .success();
    ensure!(ok, "kill -{sig} {} failed", p.pid());
    Ok(())
}

/// The counters of the gateway's `gateway stopped drops=...` line, after SIGTERM.
fn stopped_drops(gw: &Gatehoused) -> Result<BTreeMap<String, u64>> {
    gw.terminate(Duration::from_secs(10))?;
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains(STOPPED))
        .with_context(|| format!("no {STOPPED:?} line:\n{}", gw.log_tail(20)))?;
    eprintln!("{}", line.trim());
    Ok(drop_counters(line))
}

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a client may take to connect while the flood runs ("within a few seconds").
const CONNECT_UNDER_FLOOD: Duration = Duration::from_secs(10);
/// Pings through a connected client's tunnel that may go unanswered across the flood.
const PING_LOSS_MAX_PCT: u32 = 10;

/// Clients: 0 and 1 flood, 2 alice (stock OpenVPN over TCP) and 3 carol (charon-cmd) are
/// connected before, 4 bob (stock OpenVPN over TCP) and 5 dave (charon-cmd) connect during the
/// flood, erin (TCP) connects from client 0 afterwards.
#[test]
fn a_flood_of_idle_connections_is_capped_and_timed_out_while_a_client_gets_through() -> Result<()> {
    let _turn = turn();
    let started = Instant::now();
    let s = Setup::new("tf", 6)?;
    require_commands(&["openssl", "charon-cmd"]);
    s.gw_dir.set("openvpn.tcp_max_connections", "13")?;
    s.gw_dir.set("openvpn.tcp_max_per_ip", "8")?;
    s.gw_dir
        .set("openvpn.tcp_handshake_timeout", &toml_str("8s"))?;
    let gw = s.start_gateway()?;
    expect_both_protocols(&gw)?;
    let ready = gw.events("gateway ready");
    ensure!(
        ready.first().and_then(|e| e.field("tcp_max_connections")) == Some("13"),
        "the ready line does not show the cap: {ready:?}"
    );
    let ike_config = |i: usize, name: &str| {
        charon_cmd_config(
            &s.gw_dir,
            s.dir.path(),
            s.topo.client(i).gateway_addr,
            s.topo.client(0).gateway_addr,
            name,
        )
    };
    let carol_config = ike_config(3, "carol")?;
    let dave_config = ike_config(5, "dave")?;

    // A stock client over TCP from client 2 and charon-cmd from client 3, up and pinging
    // through before the flood.
    let alice = s.tcp_client(2, "alice")?;
    let carol = spawn_charon_cmd(&s.topo.client(3).ns, s.dir.path(), "carol", &carol_config)?;
    wait_client_up(&alice, &gw, 1, UP_TIMEOUT)?;
    gw.wait_connected("alice", Duration::from_secs(5))?;
    wait_ike_up(&carol, &gw, "carol", UP_TIMEOUT)?;
    let carol_vip = carol.virtual_ip().context("carol has no virtual IP")?;
    for i in [2, 3] {
        wait_ping(
            &s.topo.client(i).ns,
            s.topo.lan_host,
            Duration::from_secs(10),
        )?;
    }
    let ctx = || {
        format!(
            "ss: {:?}\ngatehoused log:\n{}\nalice:\n{}\ncarol:\n{}",
            s.established(),
            gw.log_tail(30),
            alice.log_tail(10),
            carol.log_tail(10)
        )
    };
    // Across the whole flood: until its connections are closed, 8 s after the last opened.
    let pings = [
        PingRun::start(
            &s.topo.client(2).ns,
            s.topo.lan_host,
            Duration::from_secs(10),
            &s.path("ping-alice.log"),
        )?,
        PingRun::start(
            &s.topo.client(3).ns,
            s.topo.lan_host,
            Duration::from_secs(10),
            &s.path("ping-carol.log"),
        )?,
    ];

    // Client 0 opens 12: 8 are held (the per-address cap), 4 refused at once.
    let flood_start = Instant::now();
    let _flood0 = s.hold(0, 12)?;
    gw.wait_event(
        "TCP connection refused",
        |e| e.field("refused") == Some("4"),
        Duration::from_secs(3),
    )?;
    // While those are held, bob (TCP) and dave (IKEv2) connect: within seconds.
    let t0 = Instant::now();
    let bob = s.tcp_client(4, "bob")?;
    let dave = spawn_charon_cmd(&s.topo.client(5).ns, s.dir.path(), "dave", &dave_config)?;
    wait_client_up(&bob, &gw, 1, CONNECT_UNDER_FLOOD).with_context(ctx)?;
    let bob_took = t0.elapsed();
    wait_ike_up(
        &dave,
        &gw,
        "dave",
        CONNECT_UNDER_FLOOD.saturating_sub(bob_took),
    )
    .with_context(ctx)?;
    eprintln!(
        "during the flood: bob (OpenVPN/TCP) connected in {bob_took:?}, dave (IKEv2) by {:?}",
        t0.elapsed()
    );
    // Client 1 opens 12: the gateway-wide cap (13) leaves room for 3 (alice, bob + 8).
    let _flood1 = s.hold(1, 12)?;
    wait_until(
        Duration::from_secs(3),
        "the gateway did not settle at 8 + 3 + 1 + 1 connections",
        || {
            let e = s.established()?;
            let n = |i: usize| e.get(&s.topo.client(i).addr).copied().unwrap_or(0);
            Ok(n(0) == 8 && n(1) == 3 && n(2) == 1 && n(4) == 1)
        },
        ctx,
    )?;
    // The established clients are not disturbed by the flood.
    for i in [2, 3, 4, 5] {
        wait_ping(
            &s.topo.client(i).ns,
            s.topo.lan_host,
            Duration::from_secs(5),
        )
        .with_context(ctx)?;
    }
    let refusals = gw.events("TCP connection refused");
    ensure!(
        refusals
            .iter()
            .any(|e| e.field("limit") == Some("openvpn.tcp_max_per_ip = 8")),
        "no refusal names the per-address cap: {refusals:?}"
    );
    ensure!(
        refusals
            .iter()
            .any(|e| e.field("limit") == Some("openvpn.tcp_max_connections = 13")),
        "no refusal names the gateway-wide cap: {refusals:?}"
    );
    // Logged 1st, 2nd, 4th, 8th...: 4 per-address refusals give 3 lines, 9 gateway-wide 4.
    ensure!(
        refusals.len() == 7,
        "expected 7 rate-limited refusal lines (1, 2, 4 of 4; 1, 2, 4, 8 of 9), got {}: {refusals:?}",
        refusals.len()
    );
    wait_until(
        Duration::from_secs(5),
        "gatehoused status did not show 13 connections and the refusals",
        || {
            // The counters come from the workers (asked on each status call).
            let Ok(st) = s.status() else {
                return Ok(false);
            };
            let d = status_drops(&st);
            Ok(st["tcp_connections"] == 13
                && d.get("tcpperip") == Some(&4)
                && d.get("tcplimit") == Some(&9))
        },
        || format!("{:?}", s.status()),
    )?;
    let text = s.status_text()?;
    ensure!(
        text.contains("openvpn tcp connections: 13") && text.contains("tcplimit=9"),
        "gatehoused status:\n{text}"
    );

    // None of the flood completes a handshake: all 11 are closed when the timeout passes,
    // and not before; alice's and bob's established connections stay.
    wait_until(
        Duration::from_secs(15),
        "the idle connections were not closed after the handshake timeout",
        || Ok(s.established_from(0)? == 0 && s.established_from(1)? == 0),
        ctx,
    )?;
    let after = flood_start.elapsed();
    ensure!(
        after >= Duration::from_secs(7),
        "the idle connections were closed after {after:?}, before the 8 s handshake timeout"
    );
    ensure!(
        s.established_from(2)? == 1 && s.established_from(4)? == 1,
        "alice's or bob's connection was closed too\n{}",
        ctx()
    );
    pings[0].expect("alice (OpenVPN/TCP)", PING_LOSS_MAX_PCT)?;
    pings[1].expect("carol (IKEv2)", PING_LOSS_MAX_PCT)?;
    openvpn_session_kept(&alice, &gw, "alice")?;
    ike_session_kept(&carol, &gw, "carol", carol_vip)?;
    openvpn_session_kept(&bob, &gw, "bob")?;
    for i in [2, 3, 4, 5] {
        wait_ping(
            &s.topo.client(i).ns,
            s.topo.lan_host,
            Duration::from_secs(5),
        )
        .with_context(ctx)?;
    }

    // The places are given back: a client connects from the address that was at its cap.
    let erin = s.tcp_client(0, "erin")?;
    wait_client_up(&erin, &gw, 1, UP_TIMEOUT)?;
    wait_ping(
        &s.topo.client(0).ns,
        s.topo.lan_host,
        Duration::from_secs(10),
    )
    .with_context(ctx)?;
    ensure!(dave.is_running(), "dave's charon-cmd exited\n{}", ctx());

    let drops = stopped_drops(&gw)?;
    for (k, v) in [("tcpperip", 4), ("tcplimit", 9), ("tcphandshake", 11)] {
        ensure!(
            drops.get(k) == Some(&v),
            "stopped line: {k} should be {v}: {drops:?}\n{}",
            gw.log_tail(10)
        );
    }
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn a_session_the_gateway_ends_has_its_connection_closed() -> Result<()> {
    let _turn = turn();
    let s = Setup::new("tf-rv", 1)?;
    let gw = s.start_gateway()?;
    let carol = s.tcp_client(0, "carol")?;
    wait_client_up(&carol, &gw, 1, UP_TIMEOUT)?;
    gw.wait_connected("carol", Duration::from_secs(5))?;
    ensure!(
        s.established_from(0)? == 1,
        "carol's connection: {:?}",
        s.established()
    );
    // Stopped, the client neither acknowledges AUTH_FAILED nor closes its end: only the
    // gateway can close the connection. (Idle timeout: 90 s, far beyond this test.)
    signal(&carol, "STOP")?;
    s.gw_dir.revoke("carol")?;
    gw.wait_event(
        "session ended: certificate revoked",
        |e| e.field("client") == Some("carol"),
        Duration::from_secs(6),
    )?;
    let closed = wait_until(
        Duration::from_secs(8),
        "the revoked session's connection is still ESTABLISHED on the gateway",
        || Ok(s.established_from(0)? == 0),
        || format!("ss: {:?}\n{}", s.established(), gw.log_tail(20)),
    )?;
    eprintln!("connection closed {closed:?} after the session ended");
    // What was queued for the client before the close (AUTH_FAILED, written while it was
    // stopped) still reaches it.
    signal(&carol, "CONT")?;
    carol.wait_for_log("AUTH_FAILED", Duration::from_secs(10))?;
    let drops = stopped_drops(&gw)?;
    ensure!(
        !drops.contains_key("tcpidle") && !drops.contains_key("tcphandshake"),
        "closed by a timeout, not by the session's end: {drops:?}"
    );
    Ok(())
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout() -> Result<()> {
    let _turn = turn();
    let s = Setup::new("tf-idle", 1)?;
    // Idle timeout 1.5 x ping_restart = 6 s; the core would end the session after 8 s.
    s.gw_dir.set("openvpn.ping", &toml_str("1s"))?;
    s.gw_dir.set("openvpn.ping_restart", &toml_str("4s"))?;
    let gw = s.start_gateway()?;
    let dave = s.tcp_client(0, "dave")?;
    wait_client_up(&dave, &gw, 1, UP_TIMEOUT)?;
    gw.wait_connected("dave", Duration::from_secs(5))?;
    // Connected for longer than the idle timeout while the client pings: not idle.
    thread::sleep(Duration::from_secs(7));
    ensure!(
        s.established_from(0)? == 1,
        "a client that pings was closed: {:?}\n{}",
        s.established(),
        gw.log_tail(20)
    );
    signal(&dave, "STOP")?;
    let closed = wait_until(
        Duration::from_secs(12),
        "the silent connection was not closed",
        || Ok(s.established_from(0)? == 0),
        || format!("ss: {:?}\n{}", s.established(), gw.log_tail(20)),
    )?;
    ensure!(
        closed >= Duration::from_secs(4),
        "closed {closed:?} after the client went silent, before the 6 s idle timeout"
    );
    let gone = gw.wait_event(
        DISCONNECTED,
        |e| e.field("client") == Some("dave"),
        Duration::from_secs(5),
    )?;
    ensure!(
        gone.field("reason")
            .is_some_and(|r| r.contains("idle timeout")),
        "dave's session should end with the connection's idle timeout: {}",
        gone.line
    );
    signal(&dave, "CONT")?;
    let drops = stopped_drops(&gw)?;
    ensure!(drops.get("tcpidle") == Some(&1), "{drops:?}");
    Ok(())
}

#[test]
fn out_of_file_descriptors_the_gateway_keeps_serving_and_reading_the_crl() -> Result<()> {
    let _turn = turn();
    let s = Setup::new("tf-fd", 3)?;
    // The flood must stay for the whole test; only the gateway-wide cap counts.
    s.gw_dir
        .set("openvpn.tcp_handshake_timeout", &toml_str("60s"))?;
    s.gw_dir.set("openvpn.tcp_max_per_ip", "1000")?;
    let gw = Gatehoused::start_wrapped(
        &s.topo.gateway,
        &s.gw_dir,
        &s.path("gatehoused.log"),
        &["prlimit", "--nofile=200:200", "--"],
    )?;
    let cap: usize = gw
        .events("gateway ready")
        .first()
        .and_then(|e| e.field("tcp_max_connections")?.parse().ok())
        .with_context(|| gw.log_tail(10))?;
    ensure!(
        (20..200).contains(&cap),
        "with 200 descriptors the TCP cap should be lowered below 200, not {cap}"
    );
    ensure!(
        gw.log().contains("open-files limit"),
        "no warning that the cap was lowered:\n{}",
        gw.log_tail(10)
    );
    // Two stock clients over UDP.
    let erin = s.udp_client(0, "erin")?;
    let frank = s.udp_client(0, "frank")?;
    wait_client_up(&erin, &gw, 1, UP_TIMEOUT)?;
    wait_client_up(&frank, &gw, 1, UP_TIMEOUT)?;
    let ctx = || {
        format!(
            "ss: {:?}\ngatehoused log:\n{}",
            s.established(),
            gw.log_tail(30)
        )
    };

    // 240 idle connections from two addresses: more than the descriptors the gateway has.
    let _flood1 = s.hold(1, 120)?;
    let _flood2 = s.hold(2, 120)?;
    wait_until(
        Duration::from_secs(5),
        "the gateway did not settle at its cap",
        || Ok(s.established()?.values().sum::<usize>() == cap),
        ctx,
    )?;
    wait_ping(
        &s.topo.client(0).ns,
        s.topo.lan_host,
        Duration::from_secs(10),
    )
    .with_context(ctx)?;
    // The CRL is still read: revoking frank ends his session at once.
    s.gw_dir.revoke("frank")?;
    gw.wait_event(
        "session ended: certificate revoked",
        |e| e.field("client") == Some("frank"),
        Duration::from_secs(6),
    )
    .with_context(ctx)?;
    ensure!(
        !gw.log().contains("could not be read"),
        "a CRL reload failed:\n{}",
        gw.log_tail(20)
    );

    // Now at the limit itself: the process may open nothing more. (The limit is on
    // descriptor numbers: set it at the first free one.)
    let pid = gw.proc().pid();
    let mut fds: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let first_free = (0u64..)
        .find(|n| fds.binary_search(n).is_err())
        .unwrap_or(0);
    eprintln!(
        "{} descriptors open, the first free is {first_free}",
        fds.len()
    );
    // The soft limit only: a container's root may not raise the hard one back.
    let limit = format!("--nofile={first_free}:");
    let pid_arg = pid.to_string();
    let out = Command::new("prlimit")
        .args(["--pid", &pid_arg, &limit])
        .output()?;
    ensure!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _flood0 = s.hold(0, 10)?;
    gw.wait_event(
        "out of file descriptors: TCP connections are shed",
        |_| true,
        Duration::from_secs(5),
    )?;
    // The shed ones are gone (reset), not left in the backlog; sessions keep working.
    wait_until(
        Duration::from_secs(5),
        "connections at the descriptor limit were not shed",
        || Ok(s.established_from(0)? == 0),
        ctx,
    )?;
    wait_ping(
        &s.topo.client(0).ns,
        s.topo.lan_host,
        Duration::from_secs(10),
    )
    .with_context(ctx)?;
    ensure!(gw.is_running(), "gatehoused died\n{}", ctx());
    let out = Command::new("prlimit")
        .args(["--pid", &pid_arg, "--nofile=200:"])
        .output()?;
    ensure!(
        out.status.success(),
        "prlimit back to 200: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drops = stopped_drops(&gw)?;
    ensure!(
        drops.get("tcpaccept").is_some_and(|n| *n >= 1)
            && drops.get("tcplimit") == Some(&(240 - cap as u64)),
        "expected tcpaccept >= 1 and tcplimit = {}: {drops:?}",
        240 - cap
    );
    Ok(())
}
