//! Real clients around a flood test (issue 14): a stock OpenVPN client and a strongSwan
//! `charon-cmd` client that are connected before a flood and must keep their sessions through
//! it, the same two connecting while it runs, and pings through the tunnels across the flood.
//!
//! "The same session" is checked on both ends: the gateway logged one `client connected` and
//! no `client disconnected` for the name, the OpenVPN client logged its
//! `Initialization Sequence Completed` once, and `charon-cmd` established one IKE SA, still
//! runs and keeps the virtual address it first got.

use std::net::Ipv4Addr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::gatehoused::{
    CONNECTED, DISCONNECTED, Gatehoused, GatewayDir, LogEvent, READY, issue_rsa_client, times_up,
};
use crate::netns::Netns;
use crate::proc::Proc;
use crate::strongswan::{
    CharonCmd, CharonCmdConfig, IKE_ESTABLISHED, VIRTUAL_IP, parse_ping_summary,
};

const POLL: Duration = Duration::from_millis(100);

/// Turns on both point-to-site protocols in `gw_dir`'s `gateway.toml`: OpenVPN on UDP 1194
/// and TCP 443, IKEv2 on UDP 500 and 4500 (the defaults, written out so the test does not
/// depend on them).
pub fn enable_openvpn_and_ikev2(gw_dir: &GatewayDir) -> Result<()> {
    gw_dir.set("openvpn.udp_port", "1194")?;
    gw_dir.set("openvpn.tcp_port", "443")?;
    gw_dir.set("ikev2.enabled", "true")
}

/// Fails unless the gateway's `gateway ready` line lists OpenVPN (UDP and TCP) and IKEv2
/// listeners.
pub fn expect_both_protocols(gw: &Gatehoused) -> Result<()> {
    let ready = gw.events(READY);
    let listening = ready
        .first()
        .and_then(|e| e.field("listening"))
        .with_context(|| format!("no `listening` in the ready line:\n{}", gw.log_tail(10)))?;
    for l in ["openvpn/udp", "openvpn/tcp", "ikev2/udp"] {
        ensure!(
            listening.contains(l),
            "the gateway does not listen on {l}: listening={listening}"
        );
    }
    Ok(())
}

/// Issues `name` an RSA certificate from `gw_dir`'s CA (key and CSR made with openssl in
/// `dir`) and returns the `charon-cmd` configuration dialling `gateway` with it, expecting
/// the gateway's identity `public_addr` (the SAN of its certificate, `gatehoused init
/// --public-addr`), which may differ from the address dialled.
pub fn charon_cmd_config(
    gw_dir: &GatewayDir,
    dir: &Path,
    gateway: Ipv4Addr,
    public_addr: Ipv4Addr,
    name: &str,
) -> Result<CharonCmdConfig> {
    let (cert, key) = issue_rsa_client(dir, &gw_dir.pki(), name, &[])?;
    let mut config = CharonCmdConfig::new(
        gateway,
        &format!("CN={name}"),
        &gw_dir.ca_cert(),
        &cert,
        &key,
    );
    config.remote_identity = Some(public_addr.to_string());
    Ok(config)
}

/// Starts `charon-cmd` with `config` in `ns` (files in `dir/charon-cmd-<name>`, `name` the
/// certificate's); does not wait.
pub fn spawn_charon_cmd(
    ns: &Netns,
    dir: &Path,
    name: &str,
    config: &CharonCmdConfig,
) -> Result<CharonCmd> {
    CharonCmd::spawn(ns, &dir.join(format!("charon-cmd-{name}")), config)
}

/// Waits until `cmd` has established its IKE SA and installed a virtual address, and the
/// gateway logged `client connected` for `name` over IKEv2; fails early if either exits.
/// Returns the gateway's event.
pub fn wait_ike_up(
    cmd: &CharonCmd,
    gw: &Gatehoused,
    name: &str,
    timeout: Duration,
) -> Result<LogEvent> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let logs = || ike_logs(gw, cmd);
    cmd.wait_log(IKE_ESTABLISHED, left()).with_context(logs)?;
    cmd.wait_log(VIRTUAL_IP, left()).with_context(logs)?;
    let event = gw.wait_connected(name, left()).with_context(logs)?;
    ensure!(
        event.field("transport") == Some("ikev2"),
        "{name} should be on IKEv2: {}",
        event.line
    );
    ensure!(
        event.address().is_some() && event.address() == cmd.virtual_ip(),
        "{name}: the gateway logged address {:?}, charon-cmd installed {:?}",
        event.field("address"),
        cmd.virtual_ip()
    );
    Ok(event)
}

/// The gateway's and charon-cmd's log tails, for error messages.
pub fn ike_logs(gw: &Gatehoused, cmd: &CharonCmd) -> String {
    format!(
        "gatehoused log:\n{}\ncharon-cmd log {}:\n{}",
        gw.log_tail(30),
        cmd.log_path().display(),
        cmd.log_tail(30)
    )
}

/// Fails unless the gateway logged exactly one `client connected` and no
/// `client disconnected` for `name`.
pub fn one_gateway_session(gw: &Gatehoused, name: &str) -> Result<()> {
    let of = |message: &str| -> Vec<LogEvent> {
        gw.events(message)
            .into_iter()
            .filter(|e| e.field("client") == Some(name))
            .collect()
    };
    let ended = of(DISCONNECTED);
    ensure!(
        ended.is_empty(),
        "{name}'s session ended: {}\ngatehoused log:\n{}",
        ended[0].line,
        gw.log_tail(30)
    );
    let connected = of(CONNECTED);
    ensure!(
        connected.len() == 1,
        "{name} connected {} times:\n{}",
        connected.len(),
        connected
            .iter()
            .map(|e| e.line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// The stock OpenVPN client `client` (certificate `name`) still runs its first session: it
/// came up once, the gateway holds one session for it.
pub fn openvpn_session_kept(client: &Proc, gw: &Gatehoused, name: &str) -> Result<()> {
    ensure!(
        client.is_running(),
        "{name}'s openvpn exited:\n{}",
        client.log_tail(20)
    );
    let up = times_up(client);
    ensure!(
        up == 1,
        "{name}'s openvpn came up {up} times (it reconnected):\n{}",
        client.log_tail(30)
    );
    one_gateway_session(gw, name)
}

/// `cmd` (certificate `name`) still runs its first IKE SA with the virtual address `vip`,
/// and the gateway holds one session for it.
pub fn ike_session_kept(cmd: &CharonCmd, gw: &Gatehoused, name: &str, vip: Ipv4Addr) -> Result<()> {
    ensure!(
        cmd.is_running(),
        "{name}'s charon-cmd exited\n{}",
        ike_logs(gw, cmd)
    );
    let log = cmd.log();
    let sas = log.matches(IKE_ESTABLISHED).count();
    let vips = log.matches(VIRTUAL_IP).count();
    ensure!(
        sas == 1 && vips == 1 && cmd.virtual_ip() == Some(vip),
        "{name}'s charon-cmd established {sas} IKE SAs and installed {vips} virtual IPs \
         (last {:?}, first {vip})\n{}",
        cmd.virtual_ip(),
        ike_logs(gw, cmd)
    );
    one_gateway_session(gw, name)
}

/// A `ping` running in the background from a namespace: one request every 0.2 s, each
/// waiting up to 1 s for its reply.
pub struct PingRun {
    proc: Proc,
    count: u32,
}

impl PingRun {
    /// Starts pinging `addr` from `ns` for about `duration` (`ping -n -i 0.2 -W 1 -c N`).
    pub fn start(ns: &Netns, addr: Ipv4Addr, duration: Duration, log: &Path) -> Result<PingRun> {
        let count = ((duration.as_secs_f64() / 0.2).ceil() as u32).max(1);
        let proc = ns.spawn(
            "ping",
            [
                "-n",
                "-i",
                "0.2",
                "-W",
                "1",
                "-c",
                &count.to_string(),
                &addr.to_string(),
            ],
            log,
        )?;
        Ok(PingRun { proc, count })
    }

    /// Waits for ping to finish and returns (transmitted, received).
    pub fn finish(&self) -> Result<(u32, u32)> {
        let deadline = Instant::now() + Duration::from_secs_f64(f64::from(self.count) * 0.2 + 15.0);
        while self.proc.is_running() {
            if Instant::now() >= deadline {
                bail!("ping did not finish: {}", self.proc.log_path().display());
            }
            thread::sleep(POLL);
        }
        let out = self.proc.log_contents();
        parse_ping_summary(&out)
            .with_context(|| format!("no ping summary in:\n{}", self.proc.log_tail(5)))
    }

    /// [`PingRun::finish`], then fails if more than `max_lost_pct` percent of the requests
    /// went unanswered, or none was sent. `who` names the pinging client in messages.
    pub fn expect(&self, who: &str, max_lost_pct: u32) -> Result<(u32, u32)> {
        let (sent, received) = self.finish()?;
        eprintln!("{who}: {received} of {sent} pings answered across the flood");
        ensure!(
            sent >= self.count,
            "{who}: ping sent {sent} of {} requests:\n{}",
            self.count,
            self.proc.log_tail(5)
        );
        ensure!(
            (sent - received) * 100 <= sent * max_lost_pct,
            "{who}: {received} of {sent} pings answered across the flood (at most \
             {max_lost_pct}% may be lost):\n{}",
            self.proc.log_tail(8)
        );
        Ok((sent, received))
    }
}
