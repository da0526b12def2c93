//! MOBIKE (RFC 4555): a strongSwan client (`charon-cmd`, which offers MOBIKE by default)
//! changes its own address while it pings the LAN host through gatehoused - the way a laptop
//! goes from Wi-Fi to cellular. The client namespace gets a second address on its underlay
//! interface, its route to the gateway takes that address as source, and the old address is
//! deleted. strongSwan notices (netlink), checks the new path with an INFORMATIONAL request
//! and sends UPDATE_SA_ADDRESSES (with COOKIE2 and NAT detection) from the new address; the
//! gateway moves the IKE SA and its ESP there and answers. Asserted: MOBIKE was negotiated
//! and used (charon's log), no second IKE SA (no reauthentication), at most a few pings
//! lost, gatehoused logs `peer moved to a new address` with the new address, and once the
//! client is idle the gateway's DPD reaches it at the new address.
//!
//! ```text
//!  client ns                                      gateway ns
//!  up0 10.250.X.2/30  (deleted)   ------------   cl0 10.250.X.1/30
//!      10.252.X.2/32  (added)                        route 10.252.X.2/32 dev cl0 src 10.250.X.1
//!      route 10.250.X.1/32 dev up0 src 10.252.X.2
//! ```
//!
//! The gateway keeps its address (the client dialled 10.250.X.1); its route to the new
//! address names that address as source, so its answers come from where the client expects.
//!
//! Tag `mb`, subnet index 160.

use std::net::Ipv4Addr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::gatehoused::{Gatehoused, GatewayDir, issue_rsa_client};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::netns::Netns;
use gatehouse_tests::strongswan::{
    CharonCmd, CharonCmdConfig, IKE_ESTABLISHED, parse_ping_summary, tail,
};
use gatehouse_tests::{GatewayTopology, require_commands, require_root};

const SUBNET: u8 = 160;
/// Ping interval (seconds, as ping takes it) and count: 12 s of pings.
const INTERVAL: &str = "0.2";
const PINGS: u32 = 60;
/// When, after the pings start, the client changes its address.
const MOVE_AT: Duration = Duration::from_secs(4);
/// Pings the move may cost: strongSwan notices the lost address after ~100 ms, then two
/// round trips (path check, UPDATE_SA_ADDRESSES).
const MAX_LOSS: u32 = 4;
/// How long strongSwan gets to finish the MOBIKE update after the move.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(5);
/// The gateway probes an idle client after this long (`ikev2.dpd`).
const DPD: &str = "\"3s\"";
/// How long the idle client waits for the gateway's DPD (3 s idle, plus slack).
const DPD_WAIT: Duration = Duration::from_secs(8);

/// What charon logs when the gateway answers MOBIKE_SUPPORTED in IKE_AUTH.
const PEER_SUPPORTS_MOBIKE: &str = "peer supports MOBIKE";
/// What charon logs when it moves the IKE SA with MOBIKE (and not by reauthenticating).
const REQUESTING_MOBIKE: &str = "requesting address change using MOBIKE";
/// What charon logs when it receives the gateway's DPD (an INFORMATIONAL request).
const GATEWAY_DPD: &str = "parsed INFORMATIONAL request";
/// gatehoused's roaming event.
const PEER_MOVED: &str = "peer moved to a new address";

/// The client's new underlay address: 10.252.X.2.
fn new_client_addr() -> Ipv4Addr {
    Ipv4Addr::new(10, 252, SUBNET, 2)
}

/// Moves the client from its topology address to [`new_client_addr`] (see the module
/// comment): new address and routes first, then the old address goes.
fn move_client(topo: &GatewayTopology) -> Result<()> {
    let c = topo.client(0);
    let (old, new, gw) = (c.addr, new_client_addr(), c.gateway_addr);
    topo.gateway.exec_ok(
        "ip",
        [
            "route",
            "add",
            &format!("{new}/32"),
            "dev",
            "cl0",
            "src",
            &gw.to_string(),
        ],
    )?;
    c.ns.exec_ok("ip", ["addr", "add", &format!("{new}/32"), "dev", "up0"])?;
    c.ns.exec_ok(
        "ip",
        [
            "route",
            "replace",
            &format!("{gw}/32"),
            "dev",
            "up0",
            "src",
            &new.to_string(),
        ],
    )?;
    c.ns.exec_ok("ip", ["addr", "del", &format!("{old}/30"), "dev", "up0"])?;
    Ok(())
}

/// charon's log lines about the IKE SA, MOBIKE, NAT detection, DPD and addresses.
fn ike_life(log: &str) -> String {
    let keys = [
        "IKE_SA",
        "MOBIKE",
        "NAT",
        "DPD",
        "address",
        "path",
        "UPDATE_SA",
        "INFORMATIONAL",
        "CREATE_CHILD_SA",
        "endpoint",
        "retransmit",
        "reauth",
        "deleting",
        "giving up",
    ];
    log.lines()
        .filter(|l| keys.iter().any(|k| l.contains(k)))
        .filter(|l| !l.contains("[CFG]"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Unanswered pings in `ping -O` output (timestamps show where the loss was).
fn unanswered(ping_output: &str) -> String {
    let lines: Vec<&str> = ping_output
        .lines()
        .filter(|l| l.contains("no answer yet"))
        .collect();
    if lines.is_empty() {
        "none".into()
    } else {
        lines.join("\n")
    }
}

/// Runs `count` pings from `ns` to `target` and calls `during` `at` after they start;
/// returns (sent, received, output).
fn ping_while(
    ns: &Netns,
    target: Ipv4Addr,
    log: &Path,
    at: Duration,
    during: impl FnOnce() -> Result<()>,
) -> Result<(u32, u32, String)> {
    let ping = ns.spawn(
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
            &PINGS.to_string(),
            &target.to_string(),
        ],
        log,
    )?;
    let start = Instant::now();
    thread::sleep(at);
    during()?;
    let limit = Duration::from_secs_f64(f64::from(PINGS) * INTERVAL.parse::<f64>()? + 10.0);
    while ping.is_running() {
        if start.elapsed() > limit {
            bail!("ping still running after {limit:?}:\n{}", ping.log_tail(5));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let output = ping.log_contents();
    let (sent, received) = parse_ping_summary(&output)
        .with_context(|| format!("no ping summary in:\n{}", tail(&output, 5)))?;
    Ok((sent, received, output))
}

#[test]
fn strongswan_client_moves_its_sa_to_a_new_address_with_mobike() -> Result<()> {
    require_root();
    require_commands(&["ip", "ping", "openssl", "charon-cmd"]);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let topo = GatewayTopology::new("mb", SUBNET, 1)?;
    let gw_dir = GatewayDir::for_topology(&dir.path().join("gateway"), &topo, "ghd160")?;
    gw_dir.set("ikev2.dpd", DPD)?;
    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.path().join("gatehoused.log"))?;
    let (cert, key) = issue_rsa_client(dir.path(), &gw_dir.pki(), "carol", &[])?;
    let client = topo.client(0);
    let config = CharonCmdConfig::new(
        client.gateway_addr,
        "CN=carol",
        &gw_dir.ca_cert(),
        &cert,
        &key,
    );
    let cmd = CharonCmd::start(&client.ns, &dir.path().join("charon-cmd"), &config)
        .with_context(|| format!("gatehoused log:\n{}", gw.log_tail(25)))?;
    let logs = || {
        format!(
            "gatehoused log:\n{}\ncharon-cmd log {}:\n{}\nclient addresses:\n{}",
            gw.log_tail(25),
            cmd.log_path().display(),
            ike_life(&cmd.log()),
            client
                .ns
                .exec_ok("ip", ["-4", "-br", "addr"])
                .unwrap_or_default()
        )
    };
    gw.wait_connected("carol", Duration::from_secs(5))
        .with_context(logs)?;
    ensure!(
        cmd.log().contains(PEER_SUPPORTS_MOBIKE),
        "the gateway did not answer MOBIKE_SUPPORTED (charon: no {PEER_SUPPORTS_MOBIKE:?})\n{}",
        logs()
    );
    wait_ping(&client.ns, topo.lan_host, Duration::from_secs(10)).with_context(logs)?;
    let log_before = cmd.log();

    let moved_at = std::cell::Cell::new(None);
    let (sent, received, ping_output) = ping_while(
        &client.ns,
        topo.lan_host,
        &dir.path().join("ping.log"),
        MOVE_AT,
        || {
            move_client(&topo)?;
            moved_at.set(Some(Instant::now()));
            Ok(())
        },
    )
    .with_context(logs)?;
    let moved_at = moved_at.get().context("the client never moved")?;
    let new = new_client_addr();
    let moved = gw
        .wait_event(
            PEER_MOVED,
            |e| {
                e.field("to")
                    .is_some_and(|t| t.starts_with(&format!("{new}:")))
            },
            UPDATE_TIMEOUT,
        )
        .with_context(logs)?;
    eprintln!("gatehoused: {}", moved.line);

    // Idle now: the gateway's DPD must reach the client at its new address.
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

    let log = cmd.log();
    let during = log.get(log_before.len()..).unwrap_or_default();
    eprintln!("charon-cmd during the move:\n{}", ike_life(during));
    // kernel-libipsec cannot change an installed SA's addresses: after the update strongSwan
    // rekeys its CHILD SA (CREATE_CHILD_SA on the moved IKE SA), which the gateway answers.
    eprintln!(
        "CHILD SA rekeys by the client after the move: {}",
        during.matches("generating CREATE_CHILD_SA request").count()
    );
    eprintln!("unanswered pings:\n{}", unanswered(&ping_output));
    eprintln!(
        "MOBIKE move: {sent} pings sent, {received} received; gateway DPD after it: {}; \
         took {:.1} s ({:.1} s since the move)",
        dpd_after.map_or("none".to_string(), |d| format!(
            "{:.1} s into the idle time",
            d.as_secs_f64()
        )),
        started.elapsed().as_secs_f64(),
        moved_at.elapsed().as_secs_f64()
    );
    ensure!(
        during.contains(REQUESTING_MOBIKE) && during.contains("N(UPD_SA_ADDR)"),
        "charon-cmd did not move its SA with MOBIKE (no {REQUESTING_MOBIKE:?} / \
         UPDATE_SA_ADDRESSES in its log)\n{}",
        logs()
    );
    let established = log.matches(IKE_ESTABLISHED).count();
    ensure!(
        established == 1
            && cmd.is_running()
            && !log.contains("reauthenticating")
            && !log.contains("deleting IKE_SA")
            && !log.contains("giving up")
            && !log.contains("COOKIE2 mismatch"),
        "charon-cmd replaced or lost its IKE SA on the move (established {established} time(s), \
         running: {})\n{}",
        cmd.is_running(),
        logs()
    );
    let lost = sent.saturating_sub(received);
    ensure!(
        lost <= MAX_LOSS,
        "{lost} of {sent} pings lost across the MOBIKE move (allowed {MAX_LOSS})\n\
         unanswered:\n{}\n{}",
        unanswered(&ping_output),
        logs()
    );
    ensure!(
        dpd_after.is_some(),
        "the gateway's DPD did not reach the client at its new address within {DPD_WAIT:?}\n{}",
        logs()
    );
    ensure!(gw.is_running(), "gatehoused died\n{}", logs());
    Ok(())
}
