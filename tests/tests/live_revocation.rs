//! Revoking a certificate ends the sessions that are open with it, within seconds: the admin
//! runs `gatehouse-certs revoke NAME`, the gateway picks up the new CRL (it checks the file
//! every ~2 s) and ends every open session whose certificate the CRL lists - OpenVPN and
//! IKEv2 alike - while everyone else's traffic goes on untouched. Reconnecting with the
//! revoked certificate is refused.
//!
//! One gatehoused (OpenVPN and IKEv2 on), three clients in their own namespaces:
//! A = stock OpenVPN 2.6 client `alice`, B = stock OpenVPN 2.6 client `bob`,
//! S = strongSwan `charon-cmd` `carol` (RSA key, certificate from a CSR). A and S are revoked
//! while all three ping the LAN host. Within 5 s of each `revoke` returning: gatehoused logs
//! `session ended: certificate revoked client=NAME`; A logs `AUTH_FAILED` and exits (the
//! stock client does without `auth-retry`); S logs `received DELETE for IKE_SA` (charon-cmd
//! 5.9 keeps running after a peer's DELETE - it only exits when an initiation fails - but its
//! virtual IP and routes are gone); neither tunnel carries a ping any more. B loses no ping
//! of its continuous run. Then A and S start again and are refused (`client refused`,
//! reason containing "revoked").
//!
//! Tags `lr` (140) and `lrc` (141); subnet indexes 140..=149.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::gatehoused::{
    CONNECTED, Gatehoused, LogEvent, REFUSED, issue_rsa_client, spawn_stock_client, times_up,
    wait_client_up,
};
use gatehouse_tests::net::wait_ping;
use gatehouse_tests::openvpn::UP_TIMEOUT;
use gatehouse_tests::ping_log::BackgroundPing;
use gatehouse_tests::strongswan::{
    AUTH_FAILED, CharonCmd, CharonCmdConfig, IKE_ESTABLISHED, parse_ping_summary, tail,
};
use gatehouse_tests::{GatewaySetup, Netns, Proc};

/// What gatehoused logs when it ends an open session because the CRL now lists its
/// certificate: `session ended: certificate revoked client=NAME ...`.
const SESSION_REVOKED: &str = "session ended: certificate revoked";
/// How long after `gatehouse-certs revoke` returns the session must be over.
const LIVE_WINDOW: Duration = Duration::from_secs(5);
/// How long a client that was told may take to exit after the window.
const EXIT_GRACE: Duration = Duration::from_secs(3);
/// How long a reconnect with a revoked certificate is watched for its refusal.
const REFUSAL_WINDOW: Duration = Duration::from_secs(15);
/// What strongSwan logs when the peer deletes the IKE SA: `received DELETE for IKE_SA cmd[1]`.
const IKE_DELETED: &str = "received DELETE for IKE_SA";
/// The continuous pings: 80 at 0.2 s (16 s), from 2 s before the revocation to well after the
/// live window and the checks that follow it.
const PINGS: u32 = 80;

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
    fn new(tag: &str, subnet_index: u8, n_clients: usize) -> Result<Setup> {
        let commands = &["ip", "ping", "openssl", "openvpn", "charon-cmd"];
        GatewaySetup::new(tag, subnet_index, n_clients, commands).map(Setup)
    }

    /// The stock client with `name`'s exported profile (dialling client `i`'s gateway
    /// address), in client `i`'s namespace; log `openvpn-LOG.log`.
    fn stock_client(
        &self,
        i: usize,
        profile: &Path,
        dev: &str,
        extra: &[&str],
        log: &str,
    ) -> Result<Proc> {
        spawn_stock_client(
            self.ns(i),
            profile,
            dev,
            extra,
            &self.path(&format!("openvpn-{log}.log")),
        )
    }

    /// A new RSA-2048 key and CSR (`openssl req`, `CN=name`; charon-cmd takes RSA keys only),
    /// certified by `gatehouse-certs issue-client NAME --csr`.
    fn rsa_client(&self, name: &str) -> Result<RsaClient> {
        let (cert, key) = issue_rsa_client(self.dir.path(), &self.gw_dir.pki(), name, &[])?;
        Ok(RsaClient {
            name: name.to_string(),
            cert,
            key,
        })
    }

    /// charon-cmd config for `c` dialling client `i`'s gateway address. The gateway's
    /// certificate names its public address (client 0's gateway address), which charon-cmd
    /// must then expect instead of the address it dials.
    fn cmd_config(&self, i: usize, c: &RsaClient) -> CharonCmdConfig {
        let mut config = CharonCmdConfig::new(
            self.topo.client(i).gateway_addr,
            &format!("CN={}", c.name),
            &self.gw_dir.ca_cert(),
            &c.cert,
            &c.key,
        );
        config.remote_identity = Some(self.topo.client(0).gateway_addr.to_string());
        config
    }
}

/// An RSA client certificate for charon-cmd, with its key.
struct RsaClient {
    name: String,
    cert: PathBuf,
    key: PathBuf,
}

/// Wall-clock seconds since the epoch (what `ping -D` prints).
fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Sends 3 pings (0.2 s apart, 1 s to answer each) from `ns` to `addr`: how many came back.
fn replies(ns: &Netns, addr: Ipv4Addr) -> Result<u32> {
    let out = ns.exec(
        "ping",
        [
            "-n",
            "-q",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            &addr.to_string(),
        ],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // No summary: ping could not even send (the tunnel's route is gone).
    Ok(parse_ping_summary(&stdout).map_or(0, |(_, received)| received))
}

/// What became of one revoked client in the live window.
struct Revoked<'a> {
    name: &'static str,
    label: &'static str,
    /// When `gatehouse-certs revoke NAME` returned.
    revoked_at: Instant,
    revoked_epoch: f64,
    /// The client's log so far, and whether it still runs.
    log: Box<dyn Fn() -> String + 'a>,
    running: Box<dyn Fn() -> bool + 'a>,
    /// What the client logs once the gateway told it.
    told_marker: &'static str,
    /// Whether the client must exit once told (the stock OpenVPN client does on
    /// AUTH_FAILED; charon-cmd 5.9 exits only when its initiation fails, not when the peer
    /// deletes an established IKE SA, so for it the DELETE is the proof).
    must_exit: bool,
    ended: Option<(Duration, LogEvent)>,
    told: Option<Duration>,
    exited: Option<Duration>,
}

impl Revoked<'_> {
    fn poll(&mut self, gw: &Gatehoused) {
        let since = self.revoked_at.elapsed();
        if self.ended.is_none()
            && let Some(e) = gw
                .events(SESSION_REVOKED)
                .into_iter()
                .find(|e| e.field("client") == Some(self.name))
        {
            self.ended = Some((since, e));
        }
        if self.told.is_none() && (self.log)().contains(self.told_marker) {
            self.told = Some(since);
        }
        if self.exited.is_none() && !(self.running)() {
            self.exited = Some(since);
        }
    }

    fn done(&self) -> bool {
        self.ended.is_some() && self.told.is_some() && (self.exited.is_some() || !self.must_exit)
    }

    /// Every way this client's live revocation fell short, one line each.
    fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        match &self.ended {
            Some((at, e)) if *at <= LIVE_WINDOW => eprintln!("{} (+{})", e.line, secs(*at)),
            Some((at, e)) => f.push(format!(
                "{} ({}): gatehoused ended the session only {} after the revoke: {}",
                self.label,
                self.name,
                secs(*at),
                e.line
            )),
            None => f.push(format!(
                "{} ({}): gatehoused logged no `{SESSION_REVOKED}` with client={} within {} of \
                 the revoke",
                self.label,
                self.name,
                self.name,
                secs(LIVE_WINDOW)
            )),
        }
        match self.told {
            Some(at) if at <= LIVE_WINDOW => {}
            Some(at) => f.push(format!(
                "{}: the client logged {:?} only {} after the revoke",
                self.label,
                self.told_marker,
                secs(at)
            )),
            None => f.push(format!(
                "{}: the client never logged {:?} (it was not told its session ended)",
                self.label, self.told_marker
            )),
        }
        match self.exited {
            _ if !self.must_exit => eprintln!(
                "{}: {}",
                self.label,
                self.exited
                    .map_or("the client still runs (expected)".to_string(), |at| {
                        format!("the client exited {} after the revoke", secs(at))
                    })
            ),
            Some(at) if at <= LIVE_WINDOW + EXIT_GRACE => {}
            Some(at) => f.push(format!(
                "{}: the client exited only {} after the revoke",
                self.label,
                secs(at)
            )),
            None => f.push(format!(
                "{}: the client was still running {} after the revoke",
                self.label,
                secs(LIVE_WINDOW + EXIT_GRACE)
            )),
        }
        f
    }
}

/// Waits for a `client refused` event newer than the first `before` ones that `pred`
/// accepts, while `up` says the reconnecting client has not come up. Fails, with `logs`,
/// when the client comes up, gatehoused logs a new `client connected` matching `pred`, or
/// [`REFUSAL_WINDOW`] passes.
fn wait_refused(
    gw: &Gatehoused,
    before: usize,
    pred: impl Fn(&LogEvent) -> bool,
    up: impl Fn() -> bool,
    connected_before: usize,
    what: &str,
    logs: &dyn Fn() -> String,
) -> Result<LogEvent> {
    let deadline = Instant::now() + REFUSAL_WINDOW;
    loop {
        let connected_now = gw.events(CONNECTED).into_iter().filter(|e| pred(e)).count();
        if up() || connected_now > connected_before {
            bail!(
                "{what} with a revoked certificate got connected\n{}",
                logs()
            );
        }
        if let Some(e) = gw
            .events(REFUSED)
            .into_iter()
            .skip(before)
            .find(|e| pred(e))
        {
            return Ok(e);
        }
        if Instant::now() >= deadline {
            bail!(
                "gatehoused logged no `client refused` for {what} within {REFUSAL_WINDOW:?}\n{}",
                logs()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn revoking_ends_open_sessions_within_5s() -> Result<()> {
    let started = Instant::now();
    let s = Setup::new("lr", 140, 3)?;
    let lan = s.topo.lan_host;
    let gw = Gatehoused::start(&s.topo.gateway, &s.gw_dir, &s.path("gatehoused.log"))?;

    // A (client 0) and B (client 1): stock OpenVPN clients with exported profiles.
    let a_profile = s.gw_dir.client_profile(
        "alice",
        s.topo.client(0).gateway_addr,
        &s.path("alice.ovpn"),
    )?;
    let b_profile =
        s.gw_dir
            .client_profile("bob", s.topo.client(1).gateway_addr, &s.path("bob.ovpn"))?;
    let a = s.stock_client(0, &a_profile, "tun-a", &[], "alice")?;
    let b = s.stock_client(1, &b_profile, "tun-b", &[], "bob")?;
    // S (client 2): charon-cmd.
    let carol = s.rsa_client("carol")?;
    let cmd = CharonCmd::start(
        s.ns(2),
        &s.path("charon-cmd-carol"),
        &s.cmd_config(2, &carol),
    )
    .with_context(|| format!("gatehoused log:\n{}", gw.log_tail(25)))?;
    let logs = || {
        format!(
            "gatehoused log {}:\n{}\nA (alice) log {}:\n{}\nB (bob) log:\n{}\nS (carol) log {}:\n{}",
            gw.proc().log_path().display(),
            gw.log_tail(30),
            a.log_path().display(),
            a.log_tail(15),
            b.log_tail(8),
            cmd.log_path().display(),
            cmd.log_tail(15)
        )
    };
    wait_client_up(&a, &gw, 1, UP_TIMEOUT).with_context(logs)?;
    wait_client_up(&b, &gw, 1, UP_TIMEOUT).with_context(logs)?;
    for name in ["alice", "bob", "carol"] {
        let e = gw
            .wait_connected(name, Duration::from_secs(5))
            .with_context(logs)?;
        eprintln!("{}", e.line);
    }
    for i in 0..3 {
        wait_ping(s.ns(i), lan, Duration::from_secs(10)).with_context(logs)?;
    }

    // Everyone pings continuously; 2 s later A and S are revoked.
    let pings: Vec<BackgroundPing> = (0..3)
        .map(|i| {
            BackgroundPing::start(
                s.ns(i),
                lan,
                "0.2",
                PINGS,
                &s.path(&format!("ping-{i}.log")),
            )
        })
        .collect::<Result<_>>()?;
    thread::sleep(Duration::from_secs(2));
    s.gw_dir.revoke("alice")?;
    let (alice_at, alice_epoch) = (Instant::now(), epoch_now());
    s.gw_dir.revoke("carol")?;
    let (carol_at, carol_epoch) = (Instant::now(), epoch_now());
    eprintln!(
        "revoked alice and carol {:.1} s into the test",
        started.elapsed().as_secs_f64()
    );

    let mut revoked = [
        Revoked {
            name: "alice",
            label: "A (OpenVPN)",
            revoked_at: alice_at,
            revoked_epoch: alice_epoch,
            log: Box::new(|| a.log_contents()),
            running: Box::new(|| a.is_running()),
            told_marker: "AUTH_FAILED",
            must_exit: true,
            ended: None,
            told: None,
            exited: None,
        },
        Revoked {
            name: "carol",
            label: "S (IKEv2)",
            revoked_at: carol_at,
            revoked_epoch: carol_epoch,
            log: Box::new(|| cmd.log()),
            running: Box::new(|| cmd.is_running()),
            told_marker: IKE_DELETED,
            must_exit: false,
            ended: None,
            told: None,
            exited: None,
        },
    ];
    // Watch both until everything happened or the window (and the grace to exit) is over.
    while !revoked.iter().all(Revoked::done)
        && revoked
            .iter()
            .any(|r| r.revoked_at.elapsed() < LIVE_WINDOW + EXIT_GRACE)
    {
        for r in &mut revoked {
            r.poll(&gw);
        }
        thread::sleep(Duration::from_millis(100));
    }
    for r in &mut revoked {
        r.poll(&gw);
    }
    // Past the live window at least: through A and S nothing gets through any more.
    if let Some(wait) = LIVE_WINDOW.checked_sub(alice_at.elapsed()) {
        thread::sleep(wait);
    }
    let mut live_failures: Vec<String> = revoked.iter().flat_map(Revoked::failures).collect();
    for (i, r) in [(0, &revoked[0]), (2, &revoked[1])] {
        let got = replies(s.ns(i), lan)?;
        eprintln!(
            "{} after the live window: {got} of 3 pings answered",
            r.label
        );
        if got > 0 {
            live_failures.push(format!(
                "{}: its tunnel still carries traffic {:.1} s after the revoke ({got} of 3 pings \
                 to {lan} answered)",
                r.label,
                r.revoked_at.elapsed().as_secs_f64()
            ));
        }
    }

    // The continuous pings: B lost nothing; A and S got no reply later than the window.
    let ping_limit = Duration::from_secs(u64::from(PINGS) / 5 + 15);
    let mut results = Vec::new();
    for p in &pings {
        results.push(p.finish(ping_limit)?);
    }
    for (i, r) in [(0, &revoked[0]), (2, &revoked[1])] {
        let (sent, received) = (results[i].sent, results[i].received);
        let last = results[i].last_reply().unwrap_or(f64::NEG_INFINITY);
        let after = last - r.revoked_epoch;
        eprintln!(
            "{}: {received} of {sent} continuous pings answered, the last {after:+.1} s from the \
             revoke",
            r.label
        );
        if after > LIVE_WINDOW.as_secs_f64() {
            live_failures.push(format!(
                "{}: its continuous ping got a reply {after:.1} s after the revoke \
                 ({received} of {sent} answered)",
                r.label
            ));
        }
    }
    let (b_sent, b_received, b_out) = (results[1].sent, results[1].received, &results[1].output);
    eprintln!("B (bob, not revoked): {b_received} of {b_sent} continuous pings answered");
    ensure!(
        b_sent == PINGS && b_received == b_sent,
        "B (bob, not revoked) lost pings across the revocation of A and S: {b_received} of \
         {b_sent} answered\n{}\n{}",
        tail(b_out, 6),
        logs()
    );
    ensure!(
        b.is_running() && times_up(&b) == 1,
        "B (bob, not revoked) lost its session\n{}",
        logs()
    );
    ensure!(gw.is_running(), "gatehoused died\n{}", logs());

    // Whatever the live part did, the old clients go now: a reconnect must be refused.
    a.stop();
    cmd.stop();

    // A again: its stock client with the same profile, one try.
    let refused_before = gw.events(REFUSED).len();
    let connected_alice = gw
        .events(CONNECTED)
        .into_iter()
        .filter(|e| e.field("client") == Some("alice"))
        .count();
    let a2 = s.stock_client(
        0,
        &a_profile,
        "tun-a",
        &["--connect-retry-max", "1"],
        "alice-2",
    )?;
    let a2_logs = || {
        format!(
            "gatehoused log:\n{}\nA again (alice) log {}:\n{}",
            gw.log_tail(25),
            a2.log_path().display(),
            a2.log_tail(20)
        )
    };
    let a_refused = wait_refused(
        &gw,
        refused_before,
        |e| e.field("client") == Some("alice"),
        || times_up(&a2) > 0,
        connected_alice,
        "A (alice) reconnecting",
        &a2_logs,
    )?;
    eprintln!("A again: {}", a_refused.line);
    let reason = a_refused.field("reason").unwrap_or_default().to_lowercase();
    ensure!(
        reason.contains("revoked") && a_refused.remote_is(s.topo.client(0).addr),
        "gatehoused refused A's reconnect, but not as revoked (or not from A's address): {}",
        a_refused.line
    );
    // Watched a moment longer: it never comes up.
    thread::sleep(Duration::from_secs(2));
    ensure!(
        times_up(&a2) == 0,
        "A (alice) came up with a revoked certificate\n{}",
        a2_logs()
    );
    drop(a2);

    // S again: a new charon-cmd with the same certificate.
    let refused_before = gw.events(REFUSED).len();
    let from = s.topo.client(2).addr;
    let connected_carol = gw
        .events(CONNECTED)
        .into_iter()
        .filter(|e| e.remote_is(from))
        .count();
    let cmd2 = CharonCmd::spawn(
        s.ns(2),
        &s.path("charon-cmd-carol-2"),
        &s.cmd_config(2, &carol),
    )?;
    let s2_logs = || {
        format!(
            "gatehoused log:\n{}\nS again (carol) log {}:\n{}",
            gw.log_tail(25),
            cmd2.log_path().display(),
            cmd2.log_tail(20)
        )
    };
    let s_refused = wait_refused(
        &gw,
        refused_before,
        |e| e.remote_is(from),
        || cmd2.log().contains(IKE_ESTABLISHED),
        connected_carol,
        "S (carol) reconnecting",
        &s2_logs,
    )?;
    eprintln!("S again: {}", s_refused.line);
    let reason = s_refused.field("reason").unwrap_or_default().to_lowercase();
    ensure!(
        reason.contains("revoked") && s_refused.field("transport") == Some("ikev2"),
        "gatehoused refused S's reconnect, but not as a revoked IKEv2 client: {}",
        s_refused.line
    );
    cmd2.wait_log(AUTH_FAILED, Duration::from_secs(10))
        .with_context(s2_logs)?;
    cmd2.wait_exit(Duration::from_secs(10))
        .with_context(s2_logs)?;
    ensure!(
        !cmd2.log().contains(IKE_ESTABLISHED) && cmd2.virtual_ip().is_none(),
        "S (carol) got an IKE SA with a revoked certificate\n{}",
        s2_logs()
    );
    ensure!(gw.is_running(), "gatehoused died\n{}", gw.log_tail(30));
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());

    if !live_failures.is_empty() {
        bail!(
            "revocation did not end the open sessions (B kept pinging without loss and the \
             reconnects were refused, as they must):\n- {}\n{}",
            live_failures.join("\n- "),
            logs()
        );
    }
    Ok(())
}

/// Deleting crl.pem under a running gateway does not turn revocation off: the gateway signs it
/// again from the certificate registry, and a revoked client is still refused.
#[test]
fn a_deleted_crl_is_signed_again_and_revocations_hold() -> Result<()> {
    let s = Setup::new("lrc", 141, 1)?;
    let gw = Gatehoused::start(&s.topo.gateway, &s.gw_dir, &s.path("gatehoused.log"))?;
    let profile = s.gw_dir.client_profile(
        "mallory",
        s.topo.client(0).gateway_addr,
        &s.path("mallory.ovpn"),
    )?;
    s.gw_dir.revoke("mallory")?;
    let crl = s.gw_dir.pki().join("crl.pem");
    // Let the gateway load the CRL with the revocation, then take the file away.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("CRL reloaded") {
        ensure!(
            Instant::now() < deadline,
            "the CRL was not reloaded\n{}",
            gw.log_tail(20)
        );
        thread::sleep(Duration::from_millis(100));
    }
    std::fs::remove_file(&crl)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !crl.exists() {
        ensure!(
            Instant::now() < deadline,
            "crl.pem was not signed again\n{}",
            gw.log_tail(20)
        );
        thread::sleep(Duration::from_millis(100));
    }
    // The gateway logs once the file is written: wait for the line too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw
        .log()
        .contains("signed it again from the certificate registry")
    {
        ensure!(
            Instant::now() < deadline,
            "no log line says the CRL was signed again\n{}",
            gw.log_tail(20)
        );
        thread::sleep(Duration::from_millis(100));
    }
    // After the next reload mallory is refused as revoked.
    thread::sleep(Duration::from_secs(3));
    let before = gw.events(REFUSED).len();
    let client = s.stock_client(0, &profile, "tun-m", &[], "mallory")?;
    let logs = || {
        format!(
            "gatehoused log:\n{}\nclient log:\n{}",
            gw.log_tail(25),
            client.log_tail(15)
        )
    };
    let refused = wait_refused(
        &gw,
        before,
        |e| e.field("client") == Some("mallory") || e.remote_is(s.topo.client(0).addr),
        || times_up(&client) > 0,
        0,
        "mallory",
        &logs,
    )?;
    let reason = refused.field("reason").unwrap_or_default().to_lowercase();
    ensure!(
        reason.contains("revoked"),
        "refused for {reason:?}: {}",
        refused.line
    );
    Ok(())
}
