//! Gatehouse's client over QUIC (docs/quic.md) against `gatehoused` with `[quic] enabled =
//! true`, in namespaces: the client service in the remote-client namespace, `gatehouse
//! connect` talking to it, the tunnel reaching the host on the LAN.
//!
//! - Roaming: connected over QUIC and pinging the LAN host every 0.1 s, the client's underlay
//!   address is replaced twice (new address added, old one deleted, as when Wi-Fi gives way
//!   to cellular). The pings go on with no gap over 1 s, the status stays `connected` with
//!   the same address and counts two path changes, and neither log shows a second handshake.
//! - Fallback: with UDP 443 and 1194 dropped in the client's namespace (nftables), a profile
//!   that lists QUIC first ends up on OpenVPN over TCP by itself.
//! - Revocation: a revoked certificate is refused over QUIC with the reason ("revoked"), and
//!   the client does not try again; revoking the certificate of an open QUIC session ends it
//!   (application close 0x1) for good as well.
//! - IPv6 inside QUIC (in the revocation test, before the revocation): with `client_pool_v6`
//!   and `address_space_v6`, the client's TUN device gets an address of the IPv6 pool (the
//!   one the gateway logs as `address6`) and it pings the LAN host's IPv6 address through the
//!   tunnel.
//!
//! Tags `qr`, `qf`, `qv`, `qg`; subnet indexes 216, 217, 218, 219 (`qg`'s IPv6 LAN
//! `fd00:6a7e:db:251::/64`, pool `fd00:6a7e:db:8::/64`). The client edits only a scratch
//! resolv.conf in the test's folder.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::GatewaySetup;
use gatehouse_tests::client::{CliOutput, ClientHome, ClientService, ClientStatus, DEFAULT_TUN};
use gatehouse_tests::gatehoused::{CONNECTED, Gatehoused, REFUSED, certs_cli, toml_str, tun_ipv4};
use gatehouse_tests::ipv6::{check_tunnel_ipv6, lan_ipv6};
use gatehouse_tests::net::wait_ping;

/// What the scratch resolv.conf holds before the client touches it.
const RESOLV_BEFORE: &str =
    "# scratch resolv.conf of a gatehouse QUIC test\nnameserver 192.0.2.53\n";
/// How long `gatehouse connect` may run (it gives up waiting by itself after 60 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(50);
/// The client's name in every test.
const NAME: &str = "alice";
/// The client service's log line of a finished QUIC handshake (client-core manager/quic.rs).
const QUIC_HANDSHAKE: &str = "QUIC handshake with";
/// The client service's log line when the kernel picks a new source address.
const PATH_CHANGED: &str = "path changed";

/// One test's world: namespaces, gateway data directory with `[quic]` on, `alice` issued and
/// imported from a profile that lists QUIC first.
struct Setup {
    base: GatewaySetup,
    client: ClientHome,
}

impl std::ops::Deref for Setup {
    type Target = GatewaySetup;
    fn deref(&self) -> &GatewaySetup {
        &self.base
    }
}

impl Setup {
    fn new(tag: &str, subnet_index: u8, client_env: &[(&str, &str)]) -> Result<Setup> {
        let base = GatewaySetup::new(tag, subnet_index, 1, &["ip", "ping", "nft", "sysctl"])?;
        base.gw_dir.set("quic.enabled", "true")?;
        base.gw_dir.issue_client(NAME, &[])?;
        let mut client = ClientHome::new(&base.path("client"), RESOLV_BEFORE)?;
        for (k, v) in client_env {
            client.set_env(k, v);
        }
        let s = Setup { base, client };
        s.import_quic_first()?;
        Ok(s)
    }

    /// Exports alice's Gatehouse profile, puts QUIC (UDP 443) first in its protocol list,
    /// and imports it.
    fn import_quic_first(&self) -> Result<()> {
        let file = self.path(&format!("{NAME}.gatehouse"));
        let file_arg = file.display().to_string();
        let gateway = self.topo.client(0).gateway_addr.to_string();
        certs_cli(
            &self.gw_dir.pki(),
            &[
                "export",
                NAME,
                "--gateway",
                &gateway,
                "--format",
                "gatehouse",
                "-o",
                &file_arg,
            ],
        )?;
        let text = std::fs::read_to_string(&file)?;
        std::fs::write(&file, quic_first(&text)?)?;
        self.client.run_ok(None, &["import", &file_arg])?;
        Ok(())
    }

    fn ns(&self) -> &gatehouse_tests::Netns {
        self.base.ns(0)
    }

    fn start_gateway(&self) -> Result<Gatehoused> {
        self.base.start_gateway("gatehoused.log")
    }

    fn start_service(&self) -> Result<ClientService> {
        ClientService::start(self.ns(), &self.client, &self.path("service.log"))
    }

    /// `gatehouse connect alice EXTRA...` in the client namespace.
    fn connect(&self, extra: &[&str], gw: &Gatehoused, svc: &ClientService) -> Result<CliOutput> {
        let mut args = vec!["connect", NAME];
        args.extend_from_slice(extra);
        let out = self
            .client
            .run(Some(self.ns()), &args, CONNECT_TIMEOUT)
            .with_context(|| logs(gw, svc))?;
        eprintln!("{out}");
        Ok(out)
    }

    fn status(&self) -> Result<ClientStatus> {
        self.client.status(self.ns())
    }

    /// A connected status over `protocol` whose address is the one on the TUN device.
    fn check_connected(&self, st: &ClientStatus, protocol: &str, ctx: &str) -> Result<Ipv4Addr> {
        ensure!(
            st.state() == "connected" && st.protocol() == Some(protocol),
            "expected connected over {protocol}: {}\n{ctx}",
            st.json
        );
        let addr = st.address().context("no address in the status")?;
        let tun = tun_ipv4(self.ns(), DEFAULT_TUN)?;
        ensure!(
            tun.addr == addr,
            "status says {addr}, {DEFAULT_TUN} has {tun}"
        );
        Ok(addr)
    }
}

/// `text` (a Gatehouse profile) with QUIC on port 443 as its first protocol, whether or not
/// the export listed QUIC.
fn quic_first(text: &str) -> Result<String> {
    const HEADER: &str = "[[protocols]]";
    let Some(first) = text.find(HEADER) else {
        bail!("the exported profile lists no protocols:\n{text}");
    };
    let (head, tables) = text.split_at(first);
    let blocks: Vec<&str> = tables
        .split(HEADER)
        .filter(|b| !b.trim().is_empty())
        .filter(|b| !b.contains("\"quic\""))
        .collect();
    // Protocol tables come last in the file (arrays of tables follow plain keys).
    ensure!(
        blocks.iter().all(|b| !b.contains('[')),
        "unexpected table after the protocols:\n{text}"
    );
    let mut out = head.to_string();
    out.push_str(&format!("{HEADER}\nkind = \"quic\"\nport = 443\n\n"));
    for b in blocks {
        out.push_str(HEADER);
        out.push_str(b);
    }
    Ok(out)
}

/// The gateway's and the client service's logs, for the context of a failure.
fn logs(gw: &Gatehoused, svc: &ClientService) -> String {
    format!(
        "gatehoused log:\n{}\nclient service log {}:\n{}",
        gw.log_tail(30),
        svc.proc().log_path().display(),
        svc.log_tail(40)
    )
}

/// Times (seconds, from `ping -D`) of the echo replies in `ping`'s output.
fn reply_times(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            let stamp = l.strip_prefix('[')?.split(']').next()?;
            stamp.parse().ok()
        })
        .collect()
}

/// The longest time between two replies in a row.
fn longest_gap(times: &[f64]) -> f64 {
    times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// Client address `i` on `up0` (`i` = 0 is the topology's own, 10.250.X.2).
fn client_addr(x: u8, i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 250, x, 4 * i + 2)
}

#[test]
fn quic_session_survives_two_underlay_address_changes() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("qr", 216, &[])?;
    let x = s.topo.subnet_index;
    let gateway_addr = s.topo.client(0).gateway_addr;
    // The gateway keeps its address; the client's next addresses sit on the same link in
    // other /30s: the gateway reaches them on-link, the client reaches the gateway through a
    // device route that does not depend on any of its addresses.
    s.ns().exec_ok(
        "ip",
        ["route", "add", &format!("{gateway_addr}/32"), "dev", "up0"],
    )?;
    for i in 1..=2u8 {
        let net = Ipv4Addr::new(10, 250, x, 4 * i);
        s.topo
            .gateway
            .exec_ok("ip", ["route", "add", &format!("{net}/30"), "dev", "cl0"])?;
    }
    let gw = s.start_gateway()?;
    let svc = s.start_service()?;
    let ctx = || logs(&gw, &svc);

    let out = s.connect(&["--protocol", "quic"], &gw, &svc)?;
    ensure!(out.success(), "{out}\n{}", ctx());
    let st = s.status()?;
    let addr = s.check_connected(&st, "quic", &ctx())?;
    let since = st.json["since"].clone();
    let event = gw
        .wait_event(
            CONNECTED,
            |e| e.field("client") == Some(NAME),
            Duration::from_secs(5),
        )
        .with_context(ctx)?;
    eprintln!("{}", event.line);
    ensure!(
        event.line.contains("quic"),
        "the gateway logged the session as something else than QUIC: {}",
        event.line
    );
    wait_ping(s.ns(), s.topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;

    // Ping every 0.1 s for 12 s; replace the underlay address at 3 s and at 7 s.
    let mut ping = s.ns().command("ping");
    ping.args([
        "-D",
        "-n",
        "-i",
        "0.1",
        "-w",
        "12",
        &s.topo.lan_host.to_string(),
    ]);
    let pinger = thread::spawn(move || ping.output());
    let moves = [(0u8, 1u8, 3u64), (1, 2, 7)];
    let t0 = Instant::now();
    for (from, to, at) in moves {
        let wait = Duration::from_secs(at).saturating_sub(t0.elapsed());
        thread::sleep(wait);
        let (old, new) = (client_addr(x, from), client_addr(x, to));
        s.ns()
            .exec_ok("ip", ["addr", "add", &format!("{new}/30"), "dev", "up0"])?;
        s.ns()
            .exec_ok("ip", ["addr", "del", &format!("{old}/30"), "dev", "up0"])?;
        eprintln!(
            "{:.1} s: the client's underlay address is now {new} (was {old})",
            t0.elapsed().as_secs_f64()
        );
        // Still connected, same address, at once and throughout.
        let st = s.status()?;
        ensure!(
            st.state() == "connected" && st.address() == Some(addr),
            "after the move to {new}: {}\n{}",
            st.json,
            ctx()
        );
    }
    let output = pinger
        .join()
        .map_err(|_| anyhow::anyhow!("the ping thread panicked"))??;
    let text = String::from_utf8_lossy(&output.stdout);
    let times = reply_times(&text);
    let gap = longest_gap(&times);
    eprintln!(
        "{} replies, longest gap {gap:.2} s; ping summary: {}",
        times.len(),
        text.lines().rev().take(2).collect::<Vec<_>>().join(" / ")
    );
    ensure!(
        times.len() >= 100,
        "only {} replies in 12 s:\n{text}\n{}",
        times.len(),
        ctx()
    );
    ensure!(
        gap <= 1.0,
        "a gap of {gap:.2} s in the replies:\n{text}\n{}",
        ctx()
    );

    // One connection throughout: same session, two path changes, one handshake each side.
    let st = s.status()?;
    ensure!(
        st.state() == "connected" && st.address() == Some(addr) && st.json["since"] == since,
        "the connection was replaced: {}\n{}",
        st.json,
        ctx()
    );
    ensure!(
        st.json["path_changes"] == 2,
        "expected 2 path changes: {}\n{}",
        st.json,
        ctx()
    );
    let client_log = svc.log();
    let handshakes = client_log.matches(QUIC_HANDSHAKE).count();
    let changes = client_log.matches(PATH_CHANGED).count();
    ensure!(
        handshakes == 1 && changes == 2 && !client_log.contains("reconnecting"),
        "client: {handshakes} handshakes, {changes} path changes:\n{}",
        ctx()
    );
    let sessions = gw
        .events(CONNECTED)
        .into_iter()
        .filter(|e| e.field("client") == Some(NAME))
        .count();
    ensure!(
        sessions == 1,
        "the gateway logged {sessions} sessions for {NAME}:\n{}",
        ctx()
    );
    ensure!(
        wait_ping(s.ns(), s.topo.lan_host, Duration::from_secs(3)).is_ok(),
        "the tunnel no longer carries pings:\n{}",
        ctx()
    );
    s.client.run_ok(Some(s.ns()), &["disconnect"])?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn blocked_udp_falls_back_to_openvpn_tcp() -> Result<()> {
    let started = Instant::now();
    // The client's own timeouts: QUIC's handshake gets 5 s, OpenVPN over UDP 15 s.
    let s = Setup::new("qf", 217, &[])?;
    for rule in [
        vec!["add", "table", "inet", "qfblock"],
        vec![
            "add",
            "chain",
            "inet",
            "qfblock",
            "out",
            "{ type filter hook output priority 0 ; policy accept ; }",
        ],
        vec![
            "add",
            "rule",
            "inet",
            "qfblock",
            "out",
            "udp",
            "dport",
            "{ 443, 1194 }",
            "drop",
        ],
    ] {
        s.ns().exec_ok("nft", &rule)?;
    }
    let gw = s.start_gateway()?;
    let svc = s.start_service()?;
    let ctx = || logs(&gw, &svc);

    let out = s.connect(&[], &gw, &svc)?;
    ensure!(out.success(), "{out}\n{}", ctx());
    let st = s.status()?;
    s.check_connected(&st, "openvpn-tcp", &ctx())?;
    wait_ping(s.ns(), s.topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;
    let client_log = svc.log();
    for tried in ["over quic", "over openvpn-udp"] {
        ensure!(
            client_log.contains(&format!("{tried}:")),
            "the client never reported a failure {tried}:\n{}",
            ctx()
        );
    }
    ensure!(
        !client_log.contains(QUIC_HANDSHAKE),
        "a QUIC handshake through a blocked port?\n{}",
        ctx()
    );
    ensure!(
        out.elapsed < Duration::from_secs(30),
        "the fallback took {:.1} s",
        out.elapsed.as_secs_f64()
    );
    let nft = s
        .ns()
        .exec_ok("nft", ["list", "table", "inet", "qfblock"])?;
    eprintln!("{nft}");
    eprintln!(
        "connected over openvpn-tcp in {:.1} s; done in {:.1} s",
        out.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    s.client.run_ok(Some(s.ns()), &["disconnect"])?;
    Ok(())
}

#[test]
fn revoked_certificate_is_refused_over_quic_with_the_reason() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("qv", 218, &[])?;
    s.gw_dir.revoke(NAME)?;
    let gw = s.start_gateway()?;
    let svc = s.start_service()?;
    let ctx = || logs(&gw, &svc);

    let out = s.connect(&[], &gw, &svc)?;
    ensure!(
        !out.success(),
        "connect succeeded with a revoked certificate:\n{out}\n{}",
        ctx()
    );
    ensure!(
        out.stderr.contains("revoked") || out.stdout.contains("revoked"),
        "the refusal does not say revoked:\n{out}\n{}",
        ctx()
    );
    let refused = gw
        .wait_event(REFUSED, |_| true, Duration::from_secs(5))
        .with_context(ctx)?;
    eprintln!("{}", refused.line);
    ensure!(
        refused.line.contains("revoked"),
        "the gateway's refusal does not name the reason: {}",
        refused.line
    );
    // No retry: the status stays an error and the gateway sees no second attempt.
    thread::sleep(Duration::from_secs(4));
    let st = s.status()?;
    ensure!(
        st.state() == "error" && st.reason().is_some_and(|r| r.contains("revoked")),
        "expected a final error naming the revocation: {}\n{}",
        st.json,
        ctx()
    );
    let attempts = gw.events(REFUSED).len();
    ensure!(
        attempts == 1,
        "the gateway refused {attempts} attempts:\n{}",
        ctx()
    );
    let quic_tries = svc.log().matches("over quic").count();
    ensure!(
        !svc.log().contains("over openvpn"),
        "the client fell back after a revocation:\n{}",
        ctx()
    );
    eprintln!(
        "refused with {:?} ({quic_tries} QUIC log lines); done in {:.1} s",
        st.reason(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The IPv6 client pool of the `qg` test, and its LAN (the gateway `::1`, the host `::10`).
const QG_POOL_V6: &str = "fd00:6a7e:db:8::/64";
const QG_LAN_V6: &str = "fd00:6a7e:db:251::/64";
const QG_GW_LAN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6a7e, 0xdb, 0x251, 0, 0, 0, 1);
const QG_LAN_HOST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6a7e, 0xdb, 0x251, 0, 0, 0, 0x10);

#[test]
fn revoking_an_open_quic_session_ends_it_for_good() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("qg", 219, &[])?;
    // Dual stack: the QUIC session carries IPv6 too.
    let v6_setup = Instant::now();
    lan_ipv6(&s.base, QG_GW_LAN_V6, QG_LAN_HOST_V6)?;
    let mut v6_time = v6_setup.elapsed();
    s.gw_dir.set("client_pool_v6", &toml_str(QG_POOL_V6))?;
    s.gw_dir
        .set("address_space_v6", &format!("[{}]", toml_str(QG_LAN_V6)))?;
    let gw = s.start_gateway()?;
    let svc = s.start_service()?;
    let ctx = || logs(&gw, &svc);

    let out = s.connect(&[], &gw, &svc)?;
    ensure!(out.success(), "{out}\n{}", ctx());
    s.check_connected(&s.status()?, "quic", &ctx())?;
    wait_ping(s.ns(), s.topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;

    // IPv6: an address of the pool on the TUN device, the one the gateway logged, and the
    // LAN host's IPv6 address answers through the tunnel.
    let v6_checks = Instant::now();
    let event = gw.wait_connected(NAME, Duration::from_secs(5))?;
    check_tunnel_ipv6(s.ns(), DEFAULT_TUN, QG_POOL_V6, &event, QG_LAN_HOST_V6, ctx)?;
    v6_time += v6_checks.elapsed();
    eprintln!("IPv6 setup and checks took {:.1} s", v6_time.as_secs_f64());

    // The gateway polls the CRL every ~2 s and closes the session with code 0x1.
    s.gw_dir.revoke(NAME)?;
    let revoked = Instant::now();
    let (st, seen) = s.client.wait_status(
        s.ns(),
        Duration::from_secs(8),
        |st| st.state() == "error",
        ctx,
    )?;
    eprintln!(
        "error {:.1} s after the revocation; states: {seen:?}",
        revoked.elapsed().as_secs_f64()
    );
    ensure!(
        st.reason().is_some_and(|r| r.contains("revoked")),
        "the error does not name the revocation: {}\n{}",
        st.json,
        ctx()
    );
    ensure!(
        !seen.iter().any(|l| l.starts_with("reconnecting")),
        "the client tried to reconnect: {seen:?}\n{}",
        ctx()
    );
    thread::sleep(Duration::from_secs(3));
    ensure!(s.status()?.state() == "error", "{}", ctx());
    let attempts = svc.log().matches("connecting to").count();
    ensure!(
        attempts == 1,
        "{attempts} connection attempts (expected the first only):\n{}",
        ctx()
    );
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn profile_rewrite_puts_quic_first() -> Result<()> {
    let exported = "format = \"gatehouse-profile\"\nname = \"alice\"\n\n[[protocols]]\nkind = \"openvpn-udp\"\nport = 1194\n\n[[protocols]]\nkind = \"quic\"\nport = 443\n\n[[protocols]]\nkind = \"openvpn-tcp\"\nport = 443\n";
    let out = quic_first(exported)?;
    let kinds: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("kind = "))
        .collect();
    assert_eq!(kinds, ["\"quic\"", "\"openvpn-udp\"", "\"openvpn-tcp\""]);
    assert!(out.starts_with(
        "format = \"gatehouse-profile\"\nname = \"alice\"\n\n[[protocols]]\nkind = \"quic\""
    ));
    let gaps = longest_gap(&reply_times(
        "[100.0] 64 bytes from x: icmp_seq=1\n[100.1] 64 bytes from x: icmp_seq=2\nno answer\n[101.5] 64 bytes from x: icmp_seq=3\n",
    ));
    assert!((gaps - 1.4).abs() < 1e-9);
    Ok(())
}
