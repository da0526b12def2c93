//! A restart for an upgrade loses no session (issue 17): `gatehoused` on SIGUSR2 hands its
//! sockets and tunnels to the binary on disk (same PID, see server/src/gateway/handoff.rs).
//!
//! `sessions_survive_a_handoff`: a stock OpenVPN 2.6 client over UDP and a strongSwan
//! `charon-cmd` (IKEv2, kernel-libipsec) ping the LAN host every 0.1 s; the gateway is handed
//! over; the longest gap between replies must stay under 5 s (it is reported), neither client
//! may handshake again (OpenVPN: one `Initialization Sequence Completed`, no new `TLS: Initial
//! packet`; strongSwan: no new IKE_SA_INIT), `ctl sessions` lists both sessions with the same
//! virtual addresses, and the gateway logs that it took them over. A stock client over TCP
//! (its connection cannot move) reconnects by itself within seconds.
//!
//! `quic_client_reconnects_by_itself_after_a_handoff`: a QUIC connection cannot move; our
//! client, closed by the handoff, is connected again over QUIC with the same address within
//! seconds.
//!
//! `tls_crypt_v2_session_survives_a_handoff`: the same for a stock client with its own
//! tls-crypt-v2 key (the wrapper's state moves with the session).
//!
//! Tags `hr`, `hs` and `hrw`, subnet indexes 220, 221 and 222.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::GatewaySetup;
use gatehouse_tests::gatehoused::{
    Gatehoused, RENEGOTIATED, issue_rsa_client, times_up, wait_client_up,
};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::openvpn::UP_TIMEOUT;
use gatehouse_tests::ping_log::BackgroundPing;
use gatehouse_tests::strongswan::{CharonCmd, CharonCmdConfig};
use gatehouse_tests::wireguard::ctl_json;

/// What gatehoused logs in the new process once it imported the sessions.
const TAKEN_OVER: &str = "handoff: took over the previous process's sessions";
/// The longest silence a client may notice.
const MAX_GAP: f64 = 5.0;
/// Pings at 0.1 s: 12 s in all, the handoff 3 s in.
const PINGS: u32 = 120;

/// Sends SIGUSR2 to `pid` (the handoff).
fn signal_handoff(pid: u32) -> Result<()> {
    let st = std::process::Command::new("kill")
        .args(["-USR2", &pid.to_string()])
        .status()?;
    ensure!(st.success(), "kill -USR2 {pid} failed");
    Ok(())
}

/// The virtual address `ctl sessions` lists for `client` over `protocol`.
fn listed_address(data_dir: &Path, client: &str, protocol: &str) -> Result<Option<String>> {
    let v = ctl_json(data_dir, "sessions")?;
    Ok(v.as_array().into_iter().flatten().find_map(|s| {
        (s["client"] == client && s["protocol"] == protocol)
            .then(|| s["virtual_address"].as_str().map(str::to_owned))
            .flatten()
    }))
}

/// What charon-cmd logs for each IKE_SA_INIT it sends.
const IKE_SA_INIT: &str = "IKE_SA_INIT request";

#[test]
fn sessions_survive_a_handoff() -> Result<()> {
    let s = GatewaySetup::new(
        "hr",
        220,
        3,
        &["ip", "ping", "openvpn", "kill", "openssl", "charon-cmd"],
    )?;
    let lan = s.topo.lan_host;
    let gw = Gatehoused::start_with_env(
        &s.topo.gateway,
        &s.gw_dir,
        &s.path("gatehoused.log"),
        &[("GATEHOUSE_LOG", "debug")],
    )?;
    let udp_profile = s.profile("alice", 0)?;
    let udp = s.stock_client(0, &udp_profile, "tun-hru", &[])?;
    let tcp_profile = s.profile("bob", 1)?;
    let tcp_text = std::fs::read_to_string(&tcp_profile)?
        .replace("proto udp", "proto tcp-client")
        .replace(" 1194\n", " 443\n");
    let tcp_profile = s.path("bob-tcp.ovpn");
    std::fs::write(&tcp_profile, tcp_text)?;
    let tcp = s.stock_client(1, &tcp_profile, "tun-hrt", &[])?;
    // charon-cmd takes RSA keys only: a key and CSR from openssl, certified by the gateway.
    let (cert, key) = issue_rsa_client(s.dir.path(), &s.gw_dir.pki(), "carol", &[])?;
    let mut config = CharonCmdConfig::new(
        s.topo.client(2).gateway_addr,
        "CN=carol",
        &s.gw_dir.ca_cert(),
        &cert,
        &key,
    );
    config.remote_identity = Some(s.topo.client(0).gateway_addr.to_string());
    let cmd = CharonCmd::start(s.ns(2), &s.path("charon-cmd-carol"), &config)
        .with_context(|| format!("gatehoused log:\n{}", gw.log_tail(25)))?;
    let logs = || {
        format!(
            "gatehoused log {}:\n{}\nUDP client log:\n{}\nTCP client log:\n{}\ncharon-cmd log {}:\n{}",
            gw.proc().log_path().display(),
            gw.log_tail(40),
            udp.log_tail(20),
            tcp.log_tail(20),
            cmd.log_path().display(),
            cmd.log_tail(20)
        )
    };
    wait_client_up(&udp, &gw, 1, UP_TIMEOUT).with_context(logs)?;
    wait_client_up(&tcp, &gw, 1, UP_TIMEOUT).with_context(logs)?;
    for i in 0..3 {
        wait_ping(s.ns(i), lan, Duration::from_secs(10)).with_context(logs)?;
    }
    let data_dir = s.gw_dir.path();
    let before = listed_address(data_dir, "alice", "openvpn-udp")?;
    ensure!(before.is_some(), "alice is not listed before the handoff");
    let carol_before = listed_address(data_dir, "carol", "ikev2")?;
    ensure!(
        carol_before.is_some(),
        "carol is not listed before the handoff"
    );
    let initial_packets = udp.log_contents().matches("TLS: Initial packet").count();
    let inits = cmd.log().matches(IKE_SA_INIT).count();
    ensure!(
        inits >= 1,
        "no {IKE_SA_INIT:?} in charon-cmd's log\n{}",
        logs()
    );

    let pid = gw.pid();
    let ping = BackgroundPing::start(s.ns(0), lan, "0.1", PINGS, &s.path("ping-udp.log"))?;
    let ping_ike = BackgroundPing::start(s.ns(2), lan, "0.1", PINGS, &s.path("ping-ike.log"))?;
    thread::sleep(Duration::from_secs(3));
    let signalled = Instant::now();
    signal_handoff(pid)?;
    gw.wait_event(TAKEN_OVER, |_| true, Duration::from_secs(20))
        .with_context(logs)?;
    let took = signalled.elapsed();
    let taken = gw.events(TAKEN_OVER);
    let sessions = taken.last().and_then(|e| e.field("sessions"));
    ensure!(
        sessions == Some("2"),
        "the new process took over {sessions:?} sessions, not 2 (alice over UDP, carol over IKEv2)\n{}",
        logs()
    );
    eprintln!(
        "the new process took over {:.0} ms after SIGUSR2",
        took.as_secs_f64() * 1000.0
    );
    ensure!(gw.is_running() && gw.pid() == pid, "the PID changed");

    // The TCP client: its connection was closed; it reconnects by itself.
    wait_client_up(&tcp, &gw, 2, Duration::from_secs(30)).with_context(logs)?;
    let tcp_back = signalled.elapsed();
    eprintln!(
        "the TCP client was up again {:.1} s after SIGUSR2",
        tcp_back.as_secs_f64()
    );
    wait_ping(s.ns(1), lan, Duration::from_secs(10)).with_context(logs)?;

    let (sent, got, gap) = ping.finish(Duration::from_secs(30))?.counts_and_gap();
    eprintln!("OpenVPN UDP client: {got}/{sent} pings answered, longest gap {gap:.2} s");
    ensure!(
        gap < MAX_GAP,
        "a gap of {gap:.2} s in the UDP client's pings\n{}",
        logs()
    );
    ensure!(got + 10 >= sent, "{got}/{sent} pings answered\n{}", logs());
    let (sent, got, gap) = ping_ike.finish(Duration::from_secs(30))?.counts_and_gap();
    eprintln!("strongSwan IKEv2 client: {got}/{sent} pings answered, longest gap {gap:.2} s");
    ensure!(
        gap < MAX_GAP,
        "a gap of {gap:.2} s in the IKEv2 client's pings\n{}",
        logs()
    );
    ensure!(
        got + 10 >= sent,
        "{got}/{sent} IKEv2 pings answered\n{}",
        logs()
    );
    ensure!(
        cmd.log().matches(IKE_SA_INIT).count() == inits,
        "charon-cmd started a new IKE SA\n{}",
        logs()
    );
    ensure!(cmd.is_running(), "charon-cmd exited\n{}", logs());
    let carol_after = listed_address(data_dir, "carol", "ikev2")?;
    ensure!(
        carol_after == carol_before,
        "carol's address changed: {carol_before:?} -> {carol_after:?}"
    );
    ensure!(
        times_up(&udp) == 1,
        "the UDP client connected again\n{}",
        logs()
    );
    ensure!(
        udp.log_contents().matches("TLS: Initial packet").count() == initial_packets,
        "the UDP client started a new session\n{}",
        logs()
    );
    // The TLS session could not move: the new process renegotiated at once, and the stock
    // client took it as an ordinary renegotiation.
    let reneg = gw
        .wait_event(RENEGOTIATED, |_| true, Duration::from_secs(10))
        .with_context(logs)?;
    eprintln!("{}", reneg.line);
    ensure!(
        !udp.log_contents().contains("TLS Error"),
        "the UDP client logged a TLS error\n{}",
        logs()
    );
    let after = listed_address(data_dir, "alice", "openvpn-udp")?;
    ensure!(
        after == before,
        "alice's address changed: {before:?} -> {after:?}"
    );
    ensure!(
        !data_dir.join("handoff.state").exists(),
        "the handoff state (it holds keys) is still on disk"
    );
    // The renegotiation gave the moved session a TLS session again: a revocation reaches
    // the client as AUTH_FAILED, as before the handoff.
    s.gw_dir.revoke("alice")?;
    let deadline = Instant::now() + Duration::from_secs(6);
    while !udp.log_contents().contains("AUTH_FAILED") {
        ensure!(
            Instant::now() < deadline,
            "the UDP client was not told AUTH_FAILED within 6 s of the revocation\n{}",
            logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        tcp_back < Duration::from_secs(15),
        "the TCP client took {tcp_back:?} to come back"
    );
    Ok(())
}

/// A QUIC connection cannot move (quinn-proto cannot export it): the handoff closes it with
/// the normal close code, and our client reconnects by itself within seconds, over QUIC
/// again, with the same virtual address.
///
/// Tag `hs`, subnet index 221.
#[test]
fn quic_client_reconnects_by_itself_after_a_handoff() -> Result<()> {
    use gatehouse_tests::client::{ClientHome, ClientService};
    use gatehouse_tests::gatehoused::certs_cli;

    let s = GatewaySetup::new("hs", 221, 1, &["ip", "ping", "kill"])?;
    s.gw_dir.set("quic.enabled", "true")?;
    s.gw_dir.issue_client("dave", &[])?;
    let client = ClientHome::new(&s.path("client"), "nameserver 192.0.2.53\n")?;
    let file = s.path("dave.gatehouse");
    let file_arg = file.display().to_string();
    let gateway = s.topo.client(0).gateway_addr.to_string();
    certs_cli(
        &s.gw_dir.pki(),
        &[
            "export",
            "dave",
            "--gateway",
            &gateway,
            "--format",
            "gatehouse",
            "-o",
            &file_arg,
        ],
    )?;
    client.run_ok(None, &["import", &file_arg])?;
    let gw = s.start_gateway("gatehoused.log")?;
    let svc = ClientService::start(s.ns(0), &client, &s.path("service.log"))?;
    let ctx = || {
        format!(
            "gatehoused log:\n{}\nclient service log {}:\n{}",
            gw.log_tail(30),
            svc.proc().log_path().display(),
            svc.log_tail(40)
        )
    };
    let out = client
        .run(
            Some(s.ns(0)),
            &["connect", "dave", "--protocol", "quic"],
            Duration::from_secs(50),
        )
        .with_context(ctx)?;
    ensure!(out.success(), "{out}\n{}", ctx());
    let st = client.status(s.ns(0))?;
    ensure!(
        st.state() == "connected" && st.protocol() == Some("quic"),
        "not connected over QUIC: {}\n{}",
        st.json,
        ctx()
    );
    let addr = st.address();
    wait_ping(s.ns(0), s.topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;
    let handshakes = svc.log().matches("QUIC handshake with").count();

    // This time through the admin API: `gatehoused ctl handoff`.
    let signalled = Instant::now();
    let out = std::process::Command::new(gatehouse_tests::bin("gatehoused"))
        .arg("ctl")
        .arg("--data-dir")
        .arg(s.gw_dir.path())
        .arg("handoff")
        .output()?;
    ensure!(
        out.status.success(),
        "gatehoused ctl handoff failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    gw.wait_event(TAKEN_OVER, |_| true, Duration::from_secs(20))
        .with_context(ctx)?;
    // The client notices the close, reconnects and is connected again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = svc.log().matches("QUIC handshake with").count();
        let st = client.status(s.ns(0))?;
        if n > handshakes && st.state() == "connected" {
            ensure!(
                st.protocol() == Some("quic"),
                "reconnected over {:?}",
                st.protocol()
            );
            ensure!(
                st.address() == addr,
                "the address changed: {addr:?} -> {:?}",
                st.address()
            );
            break;
        }
        if Instant::now() >= deadline {
            bail!("the QUIC client did not reconnect within 20 s\n{}", ctx());
        }
        thread::sleep(Duration::from_millis(100));
    }
    let back = signalled.elapsed();
    ensure!(gw.is_running(), "gatehoused is gone");
    wait_ping(s.ns(0), s.topo.lan_host, Duration::from_secs(10)).with_context(ctx)?;
    eprintln!(
        "the QUIC client was connected again {:.1} s after `ctl handoff`",
        back.as_secs_f64()
    );
    ensure!(
        back < Duration::from_secs(15),
        "the QUIC client took {back:?}"
    );
    Ok(())
}

/// A session with a control-channel wrapper (tls-crypt-v2: the client's own key) moves too,
/// wrapper state included: the stock client keeps pinging, does not handshake again, and
/// the renegotiation the new process starts passes the moved wrapper both ways. Then the
/// gateway is handed over a second time (two upgrades in a row).
///
/// Tag `hrw`, subnet index 222.
#[test]
fn tls_crypt_v2_session_survives_a_handoff() -> Result<()> {
    use gatehouse_tests::gatehoused::toml_str;

    let s = GatewaySetup::new("hrw", 222, 1, &["ip", "ping", "openvpn", "kill"])?;
    s.gw_dir.set("openvpn.tls_crypt_v2", &toml_str("on"))?;
    let gw = s.start_gateway_debug("gatehoused.log")?;
    let profile = s.profile("erin", 0)?;
    ensure!(
        std::fs::read_to_string(&profile)?.contains("<tls-crypt-v2>"),
        "the exported profile has no tls-crypt-v2 key"
    );
    let udp = s.stock_client(0, &profile, "tun-hrw", &[])?;
    let logs = || {
        format!(
            "gatehoused log:\n{}\nclient log:\n{}",
            gw.log_tail(40),
            udp.log_tail(25)
        )
    };
    wait_client_up(&udp, &gw, 1, UP_TIMEOUT).with_context(logs)?;
    wait_ping(s.ns(0), s.topo.lan_host, Duration::from_secs(10)).with_context(logs)?;
    let initial_packets = udp.log_contents().matches("TLS: Initial packet").count();
    let ping = BackgroundPing::start(s.ns(0), s.topo.lan_host, "0.1", 80, &s.path("ping.log"))?;
    thread::sleep(Duration::from_secs(2));
    signal_handoff(gw.pid())?;
    let taken = gw
        .wait_event(TAKEN_OVER, |_| true, Duration::from_secs(20))
        .with_context(logs)?;
    ensure!(
        taken.field("sessions") == Some("1"),
        "not taken over: {}\n{}",
        taken.line,
        logs()
    );
    gw.wait_event(RENEGOTIATED, |_| true, Duration::from_secs(10))
        .with_context(logs)?;
    // A second upgrade right after the first: the new process hands over in turn.
    thread::sleep(Duration::from_secs(1));
    signal_handoff(gw.pid())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.events(TAKEN_OVER).len() < 2 {
        ensure!(Instant::now() < deadline, "no second takeover\n{}", logs());
        thread::sleep(Duration::from_millis(100));
    }
    let second = gw
        .events(TAKEN_OVER)
        .pop()
        .map(|e| e.line)
        .unwrap_or_default();
    ensure!(
        second.contains("sessions=1"),
        "second takeover: {second}\n{}",
        logs()
    );
    let (sent, got, gap) = ping.finish(Duration::from_secs(30))?.counts_and_gap();
    eprintln!(
        "tls-crypt-v2 client, two handoffs: {got}/{sent} pings answered, longest gap {gap:.2} s"
    );
    ensure!(gap < MAX_GAP, "a gap of {gap:.2} s\n{}", logs());
    ensure!(got + 10 >= sent, "{got}/{sent} pings answered\n{}", logs());
    ensure!(
        times_up(&udp) == 1,
        "the client connected again\n{}",
        logs()
    );
    ensure!(
        udp.log_contents().matches("TLS: Initial packet").count() == initial_packets,
        "the client started a new session\n{}",
        logs()
    );
    let log = udp.log_contents();
    ensure!(
        !log.contains("TLS Error") && !log.contains("packet replay"),
        "the client logged a TLS error or a replay\n{}",
        logs()
    );
    Ok(())
}
