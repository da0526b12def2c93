//! More of `gatehoused` against the stock OpenVPN 2.6 client, in namespaces: data-key
//! renegotiation under traffic, refusal of a client without an AEAD cipher, a `comp-lzo`
//! client, anti-spoofing, graceful shutdown (RESTART to the clients), and several clients and
//! a duplicate login at once.
//!
//! Every test builds its own topology (its own tag `m*` and subnet index, 30..=36), its own
//! data directory and certificates, so the tests run in parallel with each other and with the
//! other suites (which use other indexes).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::gatehoused::{
    CONNECTED, DISCONNECTED, Gatehoused, LogEvent, REFUSED, RENEGOTIATED, REPLACED, STOPPED,
    drop_counters, export_ovpn, times_up, toml_str, tun_ipv4, wait_client_up,
};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::openvpn::UP_TIMEOUT;
use gatehouse_tests::proc::run_with_timeout;
use gatehouse_tests::{GatewaySetup, Ipv4Cidr, Netns, Proc};

/// How long the gateway gets to log `client connected` once the client says it is up.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a graceful stop may take (closing sessions, flushing RESTART to each client).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Topology `tag`/`subnet_index` with `n_clients` clients; `gatehoused init` for it (LAN
    /// as address space, the topology's VPN pool, TUN `ghd<subnet_index>`).
    fn new(tag: &str, subnet_index: u8, n_clients: usize) -> Result<Setup> {
        let commands = &["ip", "openvpn", "ping"];
        GatewaySetup::new(tag, subnet_index, n_clients, commands).map(Setup)
    }
}

/// Both logs, for the context of a failure.
fn logs(gw: &Gatehoused, client: &Proc) -> String {
    format!(
        "gatehoused log {}:\n{}\nclient log {}:\n{}",
        gw.proc().log_path().display(),
        gw.log_tail(25),
        client.log_path().display(),
        client.log_tail(25)
    )
}

/// Waits for the client's tunnel and the gateway's `client connected` for `name` from
/// client `i`'s underlay address, and checks the address the gateway logged is the one on
/// the client's TUN, inside the pool.
fn connected(
    s: &Setup,
    gw: &Gatehoused,
    client: &Proc,
    i: usize,
    name: &str,
    dev: &str,
) -> Result<LogEvent> {
    wait_client_up(client, gw, 1, UP_TIMEOUT)?;
    let from = s.topo.client(i).addr;
    let event = gw
        .wait_event(
            CONNECTED,
            |e| e.field("client") == Some(name) && e.remote_is(from),
            EVENT_TIMEOUT,
        )
        .with_context(|| logs(gw, client))?;
    eprintln!("{}", event.line);
    let tun = tun_ipv4(s.ns(i), dev)?;
    let pool = s.topo.vpn_pool;
    ensure!(
        Ipv4Cidr::new(tun.addr, pool.prefix).network() == pool.network(),
        "client {name}'s {dev} has {tun}, outside the pool {pool}"
    );
    ensure!(
        event.address() == Some(tun.addr),
        "gatehoused logged address {:?} for {name}, but its {dev} has {tun}: {}",
        event.field("address"),
        event.line
    );
    Ok(event)
}

/// What one `ping -c N` run reported.
#[derive(Debug)]
struct PingRun {
    transmitted: u32,
    received: u32,
    output: String,
}

impl PingRun {
    fn lost(&self) -> u32 {
        self.transmitted.saturating_sub(self.received)
    }
}

/// Runs `ping -n -c COUNT -i INTERVAL -W 2 [-I SOURCE] ADDR` in `ns` and parses its summary
/// (`N packets transmitted, M received`). ping's exit status is ignored: 100% loss is a
/// result here, not an error.
fn ping_run(
    ns: &Netns,
    addr: Ipv4Addr,
    count: u32,
    interval: &str,
    source: Option<Ipv4Addr>,
) -> Result<PingRun> {
    let mut cmd = ns.command("ping");
    cmd.args(["-n", "-c", &count.to_string(), "-i", interval, "-W", "2"]);
    if let Some(src) = source {
        cmd.args(["-I", &src.to_string()]);
    }
    cmd.arg(addr.to_string());
    let limit = Duration::from_secs(u64::from(count) * 2 + 10);
    let out = run_with_timeout(cmd, limit)?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = output
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| {
            format!(
                "ping {addr} from {} printed no summary:\n{output}",
                ns.name()
            )
        })?;
    let number_before = |word: &str| -> Result<u32> {
        let words: Vec<&str> = summary.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| w.trim_end_matches(',') == word)
            .with_context(|| format!("no {word:?} in ping summary {summary:?}"))?;
        ensure!(at > 0, "ping summary {summary:?} starts with {word:?}");
        words[at - 1]
            .parse()
            .with_context(|| format!("ping summary {summary:?}"))
    };
    Ok(PingRun {
        transmitted: number_before("packets")?,
        received: number_before("received")?,
        output,
    })
}

/// Polls `proc`'s log until `pred` accepts it; returns how long that took. Fails, with the
/// log's tail, when `timeout` passes.
fn wait_log(
    proc: &Proc,
    what: &str,
    pred: impl Fn(&str) -> bool,
    timeout: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if pred(&proc.log_contents()) {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            bail!(
                "{} did not log {what} within {timeout:?}:\n{}",
                proc.log_path().display(),
                proc.log_tail(30)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for gatehoused's [`REPLACED`] for `name` whose `old_remote` is `old` (the first
/// session's underlay address).
fn wait_replaced(gw: &Gatehoused, new: &Proc, name: &str, old: Ipv4Addr) -> Result<LogEvent> {
    gw.wait_event(
        REPLACED,
        |e| {
            e.field("client") == Some(name)
                && e.field("old_remote")
                    .is_some_and(|r| r.contains(&format!("{old}:")))
        },
        UP_TIMEOUT,
    )
    .with_context(|| logs(gw, new))
}

#[test]
fn renegotiation_by_time_loses_no_ping() -> Result<()> {
    let s = Setup::new("mr", 30, 1)?;
    s.gw_dir.set("openvpn.reneg", &toml_str("8s"))?;
    let gw = s.start_gateway_debug("gatehoused.log")?;
    let profile = s.profile("alice", 0)?;
    let client = s.stock_client(0, &profile, "tun-alice", &[])?;
    connected(&s, &gw, &client, 0, "alice", "tun-alice")?;
    let lan = s.topo.lan_host;
    wait_ping(s.ns(0), lan, Duration::from_secs(10)).with_context(|| logs(&gw, &client))?;
    let handshakes_before = client
        .log_contents()
        .matches("Control Channel: TLS")
        .count();

    // 25 s of pings, one a second: three renegotiations (every 8 s) fall inside.
    let run = ping_run(s.ns(0), lan, 25, "1", None)?;
    eprintln!(
        "{} of {} pings answered across renegotiations",
        run.received, run.transmitted
    );
    ensure!(
        run.transmitted == 25 && run.lost() <= 1,
        "pings were lost across data-key renegotiations ({} of {} answered):\n{}\n{}",
        run.received,
        run.transmitted,
        run.output,
        logs(&gw, &client)
    );

    let rekeys: Vec<LogEvent> = gw
        .events(RENEGOTIATED)
        .into_iter()
        .filter(|e| e.field("client") == Some("alice"))
        .collect();
    for e in &rekeys {
        eprintln!("{}", e.line);
    }
    ensure!(
        rekeys.len() >= 2,
        "with reneg = \"8s\" gatehoused logged {} `{RENEGOTIATED}` in ~27 s (want >= 2)\n{}",
        rekeys.len(),
        logs(&gw, &client)
    );
    // Each renegotiation uses the next key id (1..=7, then wrapping to 1; 0 is the first).
    let ids: Vec<&str> = rekeys.iter().filter_map(|e| e.field("key_id")).collect();
    ensure!(
        !ids.contains(&"0") && ids.windows(2).all(|w| w[0] != w[1]),
        "renegotiations should move to a new key id each time, got {ids:?}"
    );

    // The stock client went through a full TLS handshake for each one ...
    let client_log = client.log_contents();
    let handshakes = client_log.matches("Control Channel: TLS").count();
    ensure!(
        handshakes >= handshakes_before + 2,
        "the client logged {handshakes} `Control Channel: TLS...` handshakes in all, \
         {handshakes_before} before the ping run; expected >= 2 more from renegotiations\n{}",
        client.log_tail(40)
    );
    // ... verifying the gateway's certificate again each time (2.6 at verb 3 logs no line
    // about the new data keys themselves), and without a TLS error.
    let verified = client_log.matches("VERIFY OK: depth=0, CN=gateway").count();
    ensure!(
        verified >= 3,
        "the client verified the gateway's certificate {verified} times (first connect + \
         renegotiations, want >= 3)\n{}",
        client.log_tail(40)
    );
    ensure!(
        !client_log.contains("TLS Error") && !client_log.contains("TLS_ERROR"),
        "the client logged a TLS error during renegotiation\n{}",
        client.log_tail(40)
    );
    ensure!(
        times_up(&client) == 1 && client.is_running(),
        "the client restarted instead of renegotiating\n{}",
        logs(&gw, &client)
    );
    ensure!(
        gw.events(CONNECTED).len() == 1,
        "a renegotiation must not look like a new connection:\n{}",
        gw.log_tail(30)
    );
    Ok(())
}

#[test]
fn client_without_aead_cipher_is_refused() -> Result<()> {
    let s = Setup::new("mc", 31, 1)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let profile = s.profile("alice", 0)?;
    let client = s.stock_client(
        0,
        &profile,
        "tun-cbc",
        &[
            "--data-ciphers",
            "AES-256-CBC",
            "--data-ciphers-fallback",
            "AES-256-CBC",
            "--connect-retry-max",
            "1",
        ],
    )?;
    let from = s.topo.client(0).addr;
    let refused = gw
        .wait_event(REFUSED, |e| e.remote_is(from), Duration::from_secs(15))
        .with_context(|| logs(&gw, &client))?;
    eprintln!("{}", refused.line);
    let reason = refused.field("reason").unwrap_or_default().to_string();
    ensure!(
        reason.contains("no shared cipher") && reason.contains("AES-256-CBC"),
        "the refusal should say there is no shared cipher (and what the client offered): {}",
        refused.line
    );
    ensure!(
        refused.field("client") == Some("alice"),
        "the refusal should name the certificate: {}",
        refused.line
    );
    wait_log(
        &client,
        "AUTH_FAILED",
        |l| l.contains("AUTH_FAILED"),
        Duration::from_secs(10),
    )?;
    // Give it a moment to (wrongly) carry on, then check it never came up.
    thread::sleep(Duration::from_secs(2));
    ensure!(
        times_up(&client) == 0 && gw.events(CONNECTED).is_empty(),
        "a client without an AEAD cipher got connected\n{}",
        logs(&gw, &client)
    );
    let auth_failed = client
        .log_contents()
        .lines()
        .find(|l| l.contains("AUTH_FAILED"))
        .unwrap_or_default()
        .to_string();
    eprintln!("client: {auth_failed}");
    ensure!(
        auth_failed.contains("no shared cipher")
            && auth_failed.contains("data-ciphers AES-256-GCM"),
        "the AUTH_FAILED message should tell the user what is wrong and what to set: {auth_failed}"
    );
    // Without auth-retry the stock client gives up on AUTH_FAILED.
    wait_log(
        &client,
        "its exit on auth-failure",
        |l| l.contains("auth-failure"),
        Duration::from_secs(5),
    )?;
    ensure!(gw.is_running(), "gatehoused died\n{}", logs(&gw, &client));
    Ok(())
}

#[test]
fn comp_lzo_client_gets_stub_v2() -> Result<()> {
    let s = Setup::new("ml", 32, 1)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let profile = s.profile("alice", 0)?;
    let client = s.stock_client(0, &profile, "tun-lzo", &["--comp-lzo"])?;
    connected(&s, &gw, &client, 0, "alice", "tun-lzo")?;
    let log = client.log_contents();
    let push = log
        .lines()
        .find(|l| l.contains("PUSH_REPLY"))
        .with_context(|| format!("client logged no PUSH_REPLY:\n{}", client.log_tail(40)))?;
    eprintln!("client: {push}");
    // 2.6 takes `comp-lzo` with a warning (it only decompresses unless allow-compression
    // yes), and then frames its data packets with the stub the gateway asked for.
    ensure!(
        log.contains("compression: 'stubv2'"),
        "the client's data channel should use compression 'stubv2'\n{}",
        client.log_tail(30)
    );
    ensure!(
        push.contains("compress stub-v2"),
        "a comp-lzo client must be pushed `compress stub-v2`: {push}"
    );
    wait_ping(s.ns(0), s.topo.lan_host, Duration::from_secs(10))
        .with_context(|| logs(&gw, &client))?;
    // And in bulk: a few hundred full-size packets both ways, all framed with the stub.
    let run = ping_run(s.ns(0), s.topo.lan_host, 20, "0.05", None)?;
    ensure!(
        run.lost() <= 1,
        "pings lost through a comp-lzo tunnel:\n{}\n{}",
        run.output,
        logs(&gw, &client)
    );
    Ok(())
}

#[test]
fn spoofed_source_is_dropped() -> Result<()> {
    let s = Setup::new("ms", 33, 1)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let profile = s.profile("alice", 0)?;
    let client = s.stock_client(0, &profile, "tun-spoof", &[])?;
    let event = connected(&s, &gw, &client, 0, "alice", "tun-spoof")?;
    let ns = s.ns(0);
    let lan = s.topo.lan_host;
    wait_ping(ns, lan, Duration::from_secs(10)).with_context(|| logs(&gw, &client))?;

    // An address in the pool that the gateway did not give to this client.
    let pool = u32::from(s.topo.vpn_pool.network().addr);
    let spoofed = Ipv4Addr::from(pool + 77);
    ensure!(
        event.address() != Some(spoofed),
        "the client was given {spoofed} itself; pick another"
    );
    ns.exec_ok(
        "ip",
        ["addr", "add", &format!("{spoofed}/32"), "dev", "tun-spoof"],
    )?;
    let run = ping_run(ns, lan, 3, "0.5", Some(spoofed))?;
    ensure!(
        run.transmitted == 3 && run.received == 0,
        "pings from the spoofed source {spoofed} got answers:\n{}",
        run.output
    );
    let ok = ping_run(ns, lan, 3, "0.5", None)?;
    ensure!(
        ok.received >= 2,
        "pings from the client's own address stopped working:\n{}\n{}",
        ok.output,
        logs(&gw, &client)
    );

    gw.terminate(STOP_TIMEOUT)?;
    let log = gw.log();
    let last = log.lines().last().unwrap_or_default();
    eprintln!("{last}");
    ensure!(
        last.contains(STOPPED),
        "gatehoused's last line after SIGTERM should be `{STOPPED} drops=..`:\n{}",
        gw.log_tail(20)
    );
    let drops = drop_counters(last);
    ensure!(
        drops.get("spoofed").copied().unwrap_or(0) >= 3,
        "expected spoofed >= 3 in {drops:?}: {last}"
    );
    Ok(())
}

#[test]
fn graceful_shutdown_tells_clients_to_restart() -> Result<()> {
    let s = Setup::new("mg", 34, 1)?;
    // Keepalive far longer than the test's windows: only a RESTART explains a quick restart.
    s.gw_dir.set("openvpn.ping", &toml_str("10s"))?;
    s.gw_dir.set("openvpn.ping_restart", &toml_str("60s"))?;
    let gw = s.start_gateway("gatehoused-1.log")?;
    let profile = s.profile("alice", 0)?;
    let client = s.stock_client(0, &profile, "tun-alice", &[])?;
    connected(&s, &gw, &client, 0, "alice", "tun-alice")?;
    let ns = s.ns(0);
    wait_ping(ns, s.topo.lan_host, Duration::from_secs(10)).with_context(|| logs(&gw, &client))?;

    let stopping = Instant::now();
    gw.terminate(STOP_TIMEOUT)?;
    let stopped = gw
        .events(STOPPED)
        .pop()
        .with_context(|| format!("no `{STOPPED}` after SIGTERM:\n{}", gw.log_tail(20)))?;
    eprintln!("{}", stopped.line);
    let restart_marker = "server-pushed-connection-reset";
    wait_log(
        &client,
        restart_marker,
        |l| l.contains(restart_marker),
        Duration::from_secs(5).saturating_sub(stopping.elapsed()),
    )
    .with_context(|| format!("gatehoused log:\n{}", gw.log_tail(20)))?;
    eprintln!(
        "client restarting {:.1} s after SIGTERM: {}",
        stopping.elapsed().as_secs_f64(),
        client
            .log_contents()
            .lines()
            .find(|l| l.contains(restart_marker))
            .unwrap_or_default()
    );
    ensure!(
        client.is_running(),
        "the client exited instead of restarting\n{}",
        client.log_tail(30)
    );

    let gw = s
        .start_gateway("gatehoused-2.log")
        .context("gatehoused did not start again on the same data directory")?;
    wait_client_up(&client, &gw, 2, Duration::from_secs(30))
        .context("the stock client did not reconnect to the restarted gateway")?;
    gw.wait_connected("alice", EVENT_TIMEOUT)
        .with_context(|| logs(&gw, &client))?;
    wait_ping(ns, s.topo.lan_host, Duration::from_secs(10)).with_context(|| logs(&gw, &client))?;
    eprintln!(
        "client back through the restarted gateway {:.1} s after SIGTERM",
        stopping.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn many_clients_at_once() -> Result<()> {
    const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];
    // Clients 0..=3 for the four, client 4 for a second login with alice's certificate.
    let s = Setup::new("mm", 35, 5)?;
    let gw = s.start_gateway("gatehoused.log")?;
    let mut profiles = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        profiles.push(s.profile(name, i)?);
    }
    // All four at once.
    let mut clients = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        clients.push(s.stock_client(i, &profiles[i], &format!("tun-{name}"), &[])?);
    }
    let mut addresses = BTreeSet::new();
    for (i, name) in NAMES.iter().enumerate() {
        let e = connected(&s, &gw, &clients[i], i, name, &format!("tun-{name}"))?;
        let addr = e.address().context("no address")?;
        ensure!(
            addresses.insert(addr),
            "{name} got {addr}, already given to another client:\n{}",
            gw.log_tail(20)
        );
    }
    for (i, client) in clients.iter().enumerate() {
        wait_ping(s.ns(i), s.topo.lan_host, Duration::from_secs(10))
            .with_context(|| logs(&gw, client))?;
    }
    // And still all four, after the others joined.
    for (i, client) in clients.iter().enumerate() {
        let run = ping_run(s.ns(i), s.topo.lan_host, 3, "0.2", None)?;
        ensure!(
            run.received >= 2,
            "{} lost its tunnel once the others were up:\n{}\n{}",
            NAMES[i],
            run.output,
            logs(&gw, client)
        );
    }

    // alice's certificate again, from another namespace.
    let second_profile = export_ovpn(
        &s.gw_dir.pki(),
        "alice",
        s.topo.client(4).gateway_addr,
        &s.path("alice-second.ovpn"),
    )?;
    let second = s.stock_client(4, &second_profile, "tun-alice2", &[])?;
    let replaced = wait_replaced(&gw, &second, "alice", s.topo.client(0).addr)?;
    eprintln!("{}", replaced.line);
    // The first device is gone for good (its owner moved on); were it to reconnect, the
    // two would take the session from each other in turn.
    clients[0].stop();
    connected(&s, &gw, &second, 4, "alice", "tun-alice2")?;
    wait_ping(s.ns(4), s.topo.lan_host, Duration::from_secs(10))
        .with_context(|| logs(&gw, &second))?;
    // The others are untouched by alice's replacement.
    for (i, client) in clients.iter().enumerate().skip(1) {
        wait_ping(s.ns(i), s.topo.lan_host, Duration::from_secs(5))
            .with_context(|| logs(&gw, client))?;
    }
    Ok(())
}

#[test]
fn replaced_session_is_told_to_restart() -> Result<()> {
    // Keepalive far longer than the test's windows: only a RESTART explains a quick restart.
    let s = Setup::new("md", 36, 2)?;
    s.gw_dir.set("openvpn.ping", &toml_str("10s"))?;
    s.gw_dir.set("openvpn.ping_restart", &toml_str("60s"))?;
    let gw = s.start_gateway("gatehoused.log")?;
    let first_profile = s.profile("alice", 0)?;
    let first = s.stock_client(0, &first_profile, "tun-first", &[])?;
    connected(&s, &gw, &first, 0, "alice", "tun-first")?;
    wait_ping(s.ns(0), s.topo.lan_host, Duration::from_secs(10))
        .with_context(|| logs(&gw, &first))?;

    // The same certificate from a second device.
    let second_profile = export_ovpn(
        &s.gw_dir.pki(),
        "alice",
        s.topo.client(1).gateway_addr,
        &s.path("alice-second.ovpn"),
    )?;
    let second = s.stock_client(1, &second_profile, "tun-second", &[])?;
    let old = s.topo.client(0).addr;
    let replaced = wait_replaced(&gw, &second, "alice", old)?;
    let at = Instant::now();
    eprintln!("{}", replaced.line);

    // The first session ends now (not at its next keepalive), and its client is told so:
    // the gateway's close sends RESTART, as it does on shutdown.
    let restart_marker = "server-pushed-connection-reset";
    let window = Duration::from_secs(5);
    let mut disconnected: Option<LogEvent> = None;
    let mut restarted = false;
    while at.elapsed() < window && !(restarted && disconnected.is_some()) {
        if disconnected.is_none() {
            disconnected = gw
                .events(DISCONNECTED)
                .into_iter()
                .find(|e| e.remote_is(old));
        }
        restarted = first.log_contents().contains(restart_marker);
        thread::sleep(Duration::from_millis(100));
    }
    // Stop the first device before it reconnects and takes the session back.
    first.stop();
    let mut problems = Vec::new();
    match &disconnected {
        Some(e) => {
            eprintln!("{}", e.line);
            if !e.field("reason").unwrap_or_default().contains("replaced") {
                problems.push(format!(
                    "the disconnect reason does not say replaced: {}",
                    e.line
                ));
            }
        }
        None => problems.push(format!(
            "gatehoused logged no `{DISCONNECTED}` for the replaced session ({old}) within \
             {window:?} of `{REPLACED}`"
        )),
    }
    if !restarted {
        problems.push(format!(
            "the replaced client ({}) was not told to restart ({restart_marker:?}) within \
             {window:?}; it only finds out at its ping-restart (60 s)",
            first.log_path().display()
        ));
    }
    ensure!(
        problems.is_empty(),
        "{}\ngatehoused log:\n{}\nfirst client log:\n{}",
        problems.join("\n"),
        gw.log_tail(15),
        first.log_tail(12)
    );

    connected(&s, &gw, &second, 1, "alice", "tun-second")?;
    wait_ping(s.ns(1), s.topo.lan_host, Duration::from_secs(10))
        .with_context(|| logs(&gw, &second))?;
    Ok(())
}
