//! The connection manager: connects a profile, keeps it connected, and reports status.
//!
//! [`Manager::spawn`] starts a task that owns the connection; the returned [`Manager`] handle
//! sends it commands and reads status snapshots (a `watch` channel) and log lines (a
//! `broadcast` channel). The client service wraps exactly this handle; so does
//! `gatehouse connect --foreground`.

mod ikev2;
mod io;
mod path;
mod quic;
mod routes;
mod sleep;
mod tunnel;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::platform::{KillSwitch, NetConfig, NetWatch};
use crate::profile::{ProtocolKind, StoredProfile};
use crate::status::{ConnectionState, Counters, Status};

/// OS randomness for the engine's state machines (the engine never reaches for it itself).
pub(crate) struct OsEntropy(pub(crate) ring::rand::SystemRandom);

impl gatehouse_engine::entropy::Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        use ring::rand::SecureRandom;
        if self.0.fill(buf).is_err() {
            panic!("OS random number generator failed");
        }
    }
}

/// The profile's CA, certificate chain and the request's private key, parsed; errors say
/// which part is broken and what to do.
pub(crate) type Credentials = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

pub(crate) fn credentials(req: &ConnectRequest) -> Result<Credentials, String> {
    use gatehouse_engine::openvpn::tls::{certs_from_pem, key_from_pem};
    let p = &req.profile;
    let broken = |what: &str, e: &dyn std::fmt::Display| {
        format!("profile {}: {what}: {e}; re-import the profile", p.name)
    };
    // A profile pinned with peer-fingerprint may have no CA at all.
    let ca = if p.ca_pem.trim().is_empty() && !p.peer_fingerprints.is_empty() {
        Vec::new()
    } else {
        certs_from_pem(p.ca_pem.as_bytes()).map_err(|e| broken("CA certificate", &e))?
    };
    let chain =
        certs_from_pem(p.cert_pem.as_bytes()).map_err(|e| broken("client certificate", &e))?;
    // The control-channel key, if any, follows the private key (see `crate::secrets`).
    let (key_pem, _) = crate::secrets::split(&req.key_pem);
    let key = key_from_pem(key_pem.as_bytes()).map_err(|e| broken("private key", &e))?;
    Ok((ca, chain, key))
}

/// Everything needed to connect: the profile, its private key, an optional protocol.
#[derive(Clone, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// The profile (no key inside).
    pub profile: StoredProfile,
    /// The client's private key (PEM), read from the user's keyring by the front end -
    /// followed by the control-channel key when the profile has one
    /// ([`ProfileStore::key_pem`](crate::ProfileStore::key_pem) returns both).
    pub key_pem: String,
    /// Use only this protocol (else the profile's order, then fallback).
    pub protocol: Option<ProtocolKind>,
    /// Let nothing out but the tunnel while connected or reconnecting (see
    /// [`KillSwitch`](crate::platform::KillSwitch)); it stays on after a crash until the
    /// user disconnects.
    #[serde(default)]
    pub kill_switch: bool,
    /// With the kill switch: still let out traffic to the private IPv4 ranges (the LAN).
    #[serde(default)]
    pub allow_lan: bool,
}

impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("profile", &self.profile.name)
            .field("protocol", &self.protocol)
            .field("kill_switch", &self.kill_switch)
            .finish_non_exhaustive()
    }
}

/// One server to try: a protocol, and the host and port to reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) kind: ProtocolKind,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// What one connection round tries, in order: an `.ovpn` profile's remotes (shuffled once
/// with `remote-random`, as OpenVPN does), else the gateway over each of the profile's
/// protocols. `--protocol` keeps only the targets of that protocol.
pub(crate) fn targets(req: &ConnectRequest) -> Vec<Target> {
    let p = &req.profile;
    let mut targets: Vec<Target> = if p.remotes.is_empty() {
        p.protocols
            .iter()
            .map(|proto| Target {
                kind: proto.kind,
                host: p.gateway.clone(),
                port: proto.port,
            })
            .collect()
    } else {
        p.remotes
            .iter()
            .map(|r| Target {
                kind: r.kind,
                host: r.host.clone(),
                port: r.port,
            })
            .collect()
    };
    if let Some(only) = req.protocol {
        targets.retain(|t| t.kind == only);
        if targets.is_empty() {
            let port = p.port(only).unwrap_or(tunnel::default_port(only));
            targets.push(Target {
                kind: only,
                host: p.gateway.clone(),
                port,
            });
        }
    }
    if p.remote_random {
        shuffle(&mut targets);
    }
    targets
}

/// Fisher-Yates with the OS random number generator.
fn shuffle<T>(items: &mut [T]) {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    for i in (1..items.len()).rev() {
        let mut b = [0u8; 4];
        if rng.fill(&mut b).is_err() {
            return;
        }
        let j = u32::from_le_bytes(b) as usize % (i + 1);
        items.swap(i, j);
    }
}

/// A log line for front ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// "info", "warn" or "error".
    pub level: String,
    /// The message.
    pub message: String,
}

/// Knobs for the manager (tests shorten them).
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Name of the TUN device to create.
    pub tun_name: String,
    /// How long one connection attempt may take before the next protocol is tried.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self {
            tun_name: std::env::var("GATEHOUSE_TUN").unwrap_or_else(|_| "gatehouse-c0".into()),
            // GATEHOUSE_CONNECT_TIMEOUT (seconds) lets tests and slow links change it.
            connect_timeout: std::env::var("GATEHOUSE_CONNECT_TIMEOUT")
                .ok()
                .and_then(|v| v.parse().ok())
                .map_or(Duration::from_secs(15), Duration::from_secs),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

pub(crate) enum Command {
    Connect(Box<ConnectRequest>, oneshot::Sender<()>),
    Disconnect(oneshot::Sender<()>),
}

/// Handle to the running manager; cheap to clone.
#[derive(Clone)]
pub struct Manager {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    logs: broadcast::Sender<LogLine>,
}

/// The manager task is gone (the process is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the connection manager has stopped")]
pub struct ManagerGone;

impl Manager {
    /// Starts the manager task. `net` undoes any leftovers of a crashed run first.
    pub fn spawn(options: ManagerOptions, mut net: NetConfig) -> Manager {
        let (commands, rx) = mpsc::channel(16);
        let (status_tx, status) = watch::channel(Status::default());
        let (logs, _) = broadcast::channel(256);
        let log = Logger { tx: logs.clone() };
        for undone in net.recover() {
            log.warn(format!("undid a change left by a previous run: {undone}"));
        }
        // The kill switch is not a leftover: it stays until the user disconnects.
        match net.keep_kill_switch() {
            Ok(true) => {
                status_tx.send_modify(|s| s.kill_switch = true);
                log.warn(
                    "kept the kill switch of a previous run: nothing but the tunnel gets out \
                     until you connect again or run `gatehouse disconnect`"
                        .into(),
                );
            }
            Ok(false) => {}
            Err(e) => log.error(format!("could not restore the kill switch: {e}")),
        }
        tokio::spawn(run(options, net, rx, Arc::new(status_tx), log));
        Manager {
            commands,
            status,
            logs,
        }
    }

    /// Asks to connect (replacing any current connection). Returns once the manager took it.
    pub async fn connect(&self, req: ConnectRequest) -> Result<(), ManagerGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Connect(Box::new(req), tx))
            .await
            .map_err(|_| ManagerGone)?;
        rx.await.map_err(|_| ManagerGone)
    }

    /// Disconnects and undoes every host change. Returns when that is done.
    pub async fn disconnect(&self) -> Result<(), ManagerGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Disconnect(tx))
            .await
            .map_err(|_| ManagerGone)?;
        rx.await.map_err(|_| ManagerGone)
    }

    /// The latest status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Status updates.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Log lines from now on.
    pub fn logs(&self) -> broadcast::Receiver<LogLine> {
        self.logs.subscribe()
    }
}

#[derive(Clone)]
pub(crate) struct Logger {
    tx: broadcast::Sender<LogLine>,
}

impl Logger {
    fn line(&self, level: &str, message: String) {
        match level {
            "warn" => tracing::warn!("{message}"),
            "error" => tracing::error!("{message}"),
            _ => tracing::info!("{message}"),
        }
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _ = self.tx.send(LogLine {
            time,
            level: level.into(),
            message,
        });
    }
    pub(crate) fn info(&self, m: String) {
        self.line("info", m)
    }
    pub(crate) fn warn(&self, m: String) {
        self.line("warn", m)
    }
    pub(crate) fn error(&self, m: String) {
        self.line("error", m)
    }
}

pub(crate) struct StatusSink {
    tx: Arc<watch::Sender<Status>>,
}

impl StatusSink {
    pub(crate) fn set(&self, state: ConnectionState) {
        self.tx.send_modify(|s| {
            // A new connection starts with no path changes.
            if matches!(state, ConnectionState::Connected { .. }) {
                s.path_changes = 0;
            }
            s.state = state;
        });
    }

    /// The connection moved to a new local address and stayed up.
    pub(crate) fn path_changed(&self) {
        self.tx.send_modify(|s| s.path_changes += 1);
    }

    /// Counts a connect request the manager took, with the state it starts in.
    pub(crate) fn next_request(&self, state: Option<ConnectionState>) {
        self.tx.send_modify(|s| {
            s.request += 1;
            if let Some(state) = state {
                s.state = state;
            }
        });
    }

    /// Reports a new attempt: Connecting, unless a connection that was up is being
    /// restored, which stays Reconnecting until it is back.
    pub(crate) fn connecting(&self, profile: &str, protocol: ProtocolKind) {
        self.tx.send_if_modified(|s| {
            if matches!(s.state, ConnectionState::Reconnecting { .. }) {
                return false;
            }
            s.state = ConnectionState::Connecting {
                profile: profile.to_owned(),
                protocol,
            };
            true
        });
    }
    pub(crate) fn counters(&self, c: Counters) {
        self.tx.send_if_modified(|s| {
            let changed = s.counters != c;
            s.counters = c;
            changed
        });
    }
}

/// How a connection attempt ended.
pub(crate) enum Outcome {
    /// The user asked to disconnect.
    UserDisconnect(oneshot::Sender<()>),
    /// The user asked for another connection.
    Replaced(Box<ConnectRequest>, oneshot::Sender<()>),
    /// The gateway refused us: retrying will not help.
    Fatal(String),
    /// Lost or never established; try again.
    Lost(String),
    /// The network under the tunnel changed and moved its path (see `path.rs`): connect
    /// again at once, without backoff, the same server and protocol first.
    NetworkChanged(String),
}

async fn run(
    options: ManagerOptions,
    mut net: NetConfig,
    mut rx: mpsc::Receiver<Command>,
    status_tx: Arc<watch::Sender<Status>>,
    log: Logger,
) {
    let status = StatusSink { tx: status_tx };
    let mut pending: Option<(Box<ConnectRequest>, oneshot::Sender<()>)> = None;
    loop {
        let (req, ack) = match pending.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(Command::Connect(req, ack)) => (req, ack),
                Some(Command::Disconnect(ack)) => {
                    release_kill_switch(&mut net, &status, &log);
                    status.set(ConnectionState::Disconnected);
                    let _ = ack.send(());
                    continue;
                }
                None => return,
            },
        };
        let profile = req.profile.name.clone();
        let mut targets = targets(&req);
        // Numbered before the requester hears it was taken (see `Status::request`), and in
        // the same update a new request starts from Connecting, even over a connection that
        // was being restored: no status with the new number shows the old connection.
        status.next_request(targets.first().map(|first| ConnectionState::Connecting {
            profile: profile.clone(),
            protocol: first.kind,
        }));
        let _ = ack.send(());
        // A routing choice the gateway forbids is refused before anything is dialled.
        let p = &req.profile;
        let routing_ok =
            crate::routing::check(&p.name, p.client_routing, p.routing, &p.extra_routes)
                .map_err(|e| e.to_string());
        if let Err(reason) = match routing_ok {
            Ok(()) => set_kill_switch(&options, &req, &targets, &mut net, &status, &log).await,
            Err(e) => Err(e),
        } {
            log.error(format!("{profile}: {reason}"));
            status.set(ConnectionState::Error {
                profile: Some(profile.clone()),
                reason,
            });
            continue;
        }
        let mut attempt = 0u32;
        let mut backoff = options.initial_backoff;
        'reconnect: loop {
            let mut last_reason = String::from("no usable protocol in the profile");
            let mut first_of_round = true;
            let round = targets.clone();
            // A network change ends the round: the next one starts at once.
            let mut again_now = false;
            for target in &round {
                let proto = &target.kind;
                let outcome = match proto {
                    ProtocolKind::Ikev2 => {
                        ikev2::run(&options, &req, &mut net, &mut rx, &status, &log).await
                    }
                    ProtocolKind::Quic => {
                        quic::run(&options, &req, target, &mut net, &mut rx, &status, &log).await
                    }
                    _ => {
                        tunnel::run(&options, &req, target, &mut net, &mut rx, &status, &log).await
                    }
                };
                net.undo();
                match outcome {
                    Outcome::UserDisconnect(ack) => {
                        release_kill_switch(&mut net, &status, &log);
                        status.set(ConnectionState::Disconnected);
                        log.info(format!("{profile}: disconnected"));
                        let _ = ack.send(());
                        break 'reconnect;
                    }
                    Outcome::Replaced(next, ack) => {
                        pending = Some((next, ack));
                        break 'reconnect;
                    }
                    Outcome::Fatal(reason) => {
                        log.error(format!("{profile}: {reason}"));
                        status.set(ConnectionState::Error {
                            profile: Some(profile.clone()),
                            reason,
                        });
                        break 'reconnect;
                    }
                    Outcome::NetworkChanged(reason) => {
                        log.info(format!("{profile} over {proto}: {reason}; reconnecting"));
                        backoff = options.initial_backoff;
                        attempt += 1;
                        status.set(ConnectionState::Reconnecting {
                            profile: profile.clone(),
                            attempt,
                            reason: reason.clone(),
                        });
                        if let Some(i) = targets.iter().position(|t| t == target) {
                            targets[..=i].rotate_right(1);
                        }
                        again_now = true;
                        break;
                    }
                    Outcome::Lost(reason) => {
                        log.warn(format!("{profile} over {proto}: {reason}"));
                        // The first failure of a round says why the connection went away;
                        // fallbacks failing after it are consequences.
                        if first_of_round {
                            last_reason = reason;
                            first_of_round = false;
                        }
                        // A connection that was up resets the backoff, and from now on the
                        // user sees Reconnecting (not Connecting) until it is back.
                        if let ConnectionState::Connected { .. } = status_state(&status) {
                            backoff = options.initial_backoff;
                            attempt += 1;
                            status.set(ConnectionState::Reconnecting {
                                profile: profile.clone(),
                                attempt,
                                reason: last_reason.clone(),
                            });
                            // Try the server and protocol that worked first.
                            if let Some(i) = targets.iter().position(|t| t == target) {
                                targets[..=i].rotate_right(1);
                            }
                        }
                    }
                }
            }
            if again_now {
                continue 'reconnect;
            }
            attempt += 1;
            status.set(ConnectionState::Reconnecting {
                profile: profile.clone(),
                attempt,
                reason: last_reason.clone(),
            });
            log.info(format!(
                "{profile}: reconnecting in {}s (attempt {attempt}): {last_reason}",
                backoff.as_secs_f32()
            ));
            // A network coming back (or changing) ends the wait: the attempt that failed on
            // the old one says nothing about the new one.
            let mut network = NetWatch::new(&options.tun_name);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                events = network_arrived(&mut network) => {
                    let events: Vec<String> = events.iter().map(|e| e.to_string()).collect();
                    log.info(format!(
                        "{profile}: network changed: {}; reconnecting now",
                        events.join(", ")
                    ));
                    backoff = options.initial_backoff;
                    continue 'reconnect;
                }
                cmd = rx.recv() => match cmd {
                    Some(Command::Disconnect(ack)) => {
                        release_kill_switch(&mut net, &status, &log);
                        status.set(ConnectionState::Disconnected);
                        let _ = ack.send(());
                        break 'reconnect;
                    }
                    Some(Command::Connect(next, ack)) => {
                        pending = Some((next, ack));
                        break 'reconnect;
                    }
                    None => return,
                }
            }
            backoff = (backoff * 2).min(options.max_backoff);
        }
    }
}

/// Turns the kill switch on for `req` (the gateway's addresses resolved now, once: DNS is
/// closed while it is on), or off when `req` does not want it.
async fn set_kill_switch(
    options: &ManagerOptions,
    req: &ConnectRequest,
    targets: &[Target],
    net: &mut NetConfig,
    status: &StatusSink,
    log: &Logger,
) -> Result<(), String> {
    if !req.kill_switch {
        if net.kill_switch().is_some() {
            release_kill_switch(net, status, log);
        }
        return Ok(());
    }
    let mut servers = Vec::new();
    for t in targets {
        let mut ports = vec![t.port];
        // IKEv2 moves to 4500 behind NAT.
        if t.kind == ProtocolKind::Ikev2 {
            ports.push(4500);
        }
        // The tunnel is down while (re)connecting: with an older kill switch in force the
        // name can only resolve from /etc/hosts or an address literal.
        let addrs = tokio::net::lookup_host((tunnel::unbracket(&t.host), t.port))
            .await
            .map_err(|e| format!("kill switch: cannot resolve the gateway {}: {e}", t.host))?;
        for a in addrs {
            for p in &ports {
                servers.push((a.ip(), *p));
            }
        }
    }
    let ks = KillSwitch {
        tun: options.tun_name.clone(),
        servers,
        dns: Vec::new(),
        allow_lan: req.allow_lan,
    };
    net.engage_kill_switch(ks)
        .map_err(|e| format!("kill switch: {e}"))?;
    status.tx.send_modify(|s| s.kill_switch = true);
    log.info(format!(
        "{}: kill switch on: nothing but the tunnel gets out until you disconnect",
        req.profile.name
    ));
    Ok(())
}

fn release_kill_switch(net: &mut NetConfig, status: &StatusSink, log: &Logger) {
    if net.kill_switch().is_none() {
        return;
    }
    match net.release_kill_switch() {
        Ok(()) => {
            status.tx.send_modify(|s| s.kill_switch = false);
            log.info("kill switch off".into());
        }
        Err(e) => log.error(format!("could not turn the kill switch off: {e}")),
    }
}

/// The next burst of network changes that brings something new (an address, a default
/// route): a removal alone gives a failed attempt no better chance.
async fn network_arrived(watch: &mut NetWatch) -> Vec<crate::platform::UnderlayEvent> {
    use crate::platform::UnderlayEvent;
    loop {
        let events = watch.settled().await;
        if events.iter().any(|e| match e {
            UnderlayEvent::Address { added, .. } | UnderlayEvent::DefaultRoute { added, .. } => {
                *added
            }
            UnderlayEvent::Overrun => true,
        }) {
            return events;
        }
    }
}

fn status_state(s: &StatusSink) -> ConnectionState {
    s.tx.borrow().state.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{KeyLocation, PROFILE_VERSION, Protocol, Remote, Source};

    fn request(remotes: &[(&str, u16, ProtocolKind)], random: bool) -> ConnectRequest {
        ConnectRequest {
            profile: StoredProfile {
                version: PROFILE_VERSION,
                name: "p".into(),
                gateway: "gw".into(),
                key_location: KeyLocation::Keyring,
                source: Source::Ovpn,
                ciphers: vec![],
                ca_pem: String::new(),
                cert_pem: String::new(),
                redirect_gateway: false,
                remote_random: random,
                protocols: vec![Protocol {
                    kind: ProtocolKind::OpenvpnUdp,
                    port: 1194,
                }],
                remotes: remotes
                    .iter()
                    .map(|(h, p, k)| Remote {
                        host: (*h).into(),
                        port: *p,
                        kind: *k,
                    })
                    .collect(),
                control_wrap: None,
                verify_x509_name: None,
                peer_fingerprints: vec![],
                tls_version_min: None,
                tls_version_max: None,
                client_routing: Default::default(),
                routing: Default::default(),
                extra_routes: Vec::new(),
                auto_connect: Default::default(),
                trusted_networks: Vec::new(),
            },
            key_pem: String::new(),
            protocol: None,
            kill_switch: false,
            allow_lan: false,
        }
    }

    fn hosts(targets: &[Target]) -> Vec<String> {
        targets
            .iter()
            .map(|t| format!("{}:{}", t.host, t.port))
            .collect()
    }

    #[test]
    fn remotes_are_tried_in_order_and_filtered_by_protocol() {
        use ProtocolKind::{OpenvpnTcp as Tcp, OpenvpnUdp as Udp};
        let mut req = request(&[("a", 1194, Udp), ("b", 443, Tcp), ("c", 53, Udp)], false);
        assert_eq!(hosts(&targets(&req)), ["a:1194", "b:443", "c:53"]);
        req.protocol = Some(Tcp);
        assert_eq!(hosts(&targets(&req)), ["b:443"]);

        // A Gatehouse profile: the gateway over each protocol.
        let req = request(&[], false);
        assert_eq!(hosts(&targets(&req)), ["gw:1194"]);
    }

    /// The status that answers a Connect carries the request's number (what `gatehouse
    /// connect` waits for; it used to wait for a Connecting that the watch channel could
    /// skip, and hung when a refusal came fast - client_gatehouse's e2e tests showed it),
    /// and a disconnect does not count as a request.
    #[tokio::test]
    async fn a_connect_request_is_numbered_with_its_first_state() {
        use ProtocolKind::OpenvpnUdp as Udp;
        let dir = tempfile::tempdir().unwrap();
        let m = Manager::spawn(ManagerOptions::default(), NetConfig::new(dir.path()));
        assert_eq!(m.status().request, 0);
        // No CA: the attempt fails before sending anything (to loopback's discard port if
        // it did).
        for n in 1..=3u64 {
            m.connect(request(&[("127.0.0.1", 9, Udp)], false))
                .await
                .unwrap();
            let now = m.status();
            assert_eq!(now.request, n);
            assert!(
                !matches!(now.state, ConnectionState::Disconnected),
                "request {n} answered with {now:?}"
            );
        }
        m.disconnect().await.unwrap();
        assert_eq!(m.status().state, ConnectionState::Disconnected);
        assert_eq!(
            m.status().request,
            3,
            "a disconnect is not a connect request"
        );
    }

    #[test]
    fn remote_random_shuffles_every_remote_once() {
        use ProtocolKind::OpenvpnUdp as Udp;
        let all: Vec<(String, u16, ProtocolKind)> =
            (0..8).map(|i| (format!("h{i}"), 1194, Udp)).collect();
        let refs: Vec<(&str, u16, ProtocolKind)> =
            all.iter().map(|(h, p, k)| (h.as_str(), *p, *k)).collect();
        let req = request(&refs, true);
        let in_order = hosts(&targets(&request(&refs, false)));
        let mut seen_other_order = false;
        for _ in 0..20 {
            let mut got = hosts(&targets(&req));
            seen_other_order |= got != in_order;
            got.sort();
            assert_eq!(got, in_order, "a shuffle is a permutation");
        }
        // 20 shuffles of 8 all in file order: chance 1 in 40320^20.
        assert!(seen_other_order);
    }
}
