//! One client session per tokio task, each on its own UDP socket (its own source port, as
//! separate clients behind one address would be). The drivers follow client-core's
//! (`client-core/src/manager/tunnel.rs` and `ikev2.rs`): feed datagrams and timeouts to the
//! engine's state machine, drain its transmits and events, sleep until its next deadline -
//! without TUN, routes or DNS: inner packets are ICMP echo requests built here, and replies
//! are counted, not delivered anywhere.
//!
//! Receiving is `readable()` then `try_recv_from` into a per-thread scratch buffer, and
//! sending is `try_send_to`, so ten thousand idle sessions do not each hold 64 KiB buffers.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_engine::entropy::Entropy;
use gatehouse_engine::esp::EspTable;
use gatehouse_engine::ikev2::crypto::SigningKey;
use gatehouse_engine::ikev2::initiator::{
    DEFAULT_CHILD_LIFETIME, DEFAULT_IKE_LIFETIME, IkeInitiator, InitiatorConfig, InitiatorEvent,
};
use gatehouse_engine::ikev2::peer_cert::PeerTrust;
use gatehouse_engine::ikev2::proposal::Policy;
use gatehouse_engine::openvpn::DataOutcome;
use gatehouse_engine::openvpn::client::{ClientConfig, ClientEvent, ClientSession};
use gatehouse_engine::openvpn::tls::client_config;
use gatehouse_engine::wire::ikev2::{Classified, strip_non_esp_marker};
use gatehouse_engine::wire::openvpn::Packet;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::{Interval, MissedTickBehavior};

use crate::creds::Credential;
use crate::packet::{Inner, classify, echo_request};

/// Which protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Openvpn,
    Ikev2,
    /// A site-to-site peer (IKEv2, PSK).
    Site,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Openvpn => "openvpn",
            Proto::Ikev2 => "ikev2",
            Proto::Site => "site",
        })
    }
}

/// What the controller tells every session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Sessions are being established.
    Establish,
    /// Everyone is up: hold, and send traffic if asked to.
    Hold,
    /// Report whether you are still up, then disconnect.
    Stop,
}

/// What a session reports while it runs.
#[derive(Debug)]
pub enum SessionEvent {
    /// Connected after `latency`.
    Up { proto: Proto, latency: Duration },
    /// Never connected.
    Failed { proto: Proto, reason: String },
    /// Was up, then ended before the hold was over.
    Lost { proto: Proto, reason: String },
}

/// What a session reports when it ends.
#[derive(Debug, Clone, Copy)]
pub struct SessionEnd {
    pub proto: Proto,
    /// Up and not closed when the hold ended.
    pub held: bool,
    /// Held, but nothing arrived from the gateway for `silent_after`.
    pub silent: bool,
}

/// Traffic counters of all sessions (inner packets, hold phase only).
#[derive(Debug, Default)]
pub struct Counters {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub echo_replies: AtomicU64,
    /// Datagrams the socket would not take (full send buffer).
    pub send_drops: AtomicU64,
    /// Inner packets that did not parse.
    pub malformed: AtomicU64,
}

/// Settings and channels shared by every session.
pub struct Ctx {
    pub ca: Vec<CertificateDer<'static>>,
    pub openvpn_addr: SocketAddr,
    pub ike_addr: SocketAddr,
    /// The gateway's name in its certificate (TLS server name, IKEv2 remote identity).
    pub gateway_id: String,
    pub handshake_timeout: Duration,
    pub ike_dpd: Duration,
    pub silent_after: Duration,
    /// How long a session may take to disconnect cleanly at the end.
    pub linger: Duration,
    /// Inner packets per second per session during the hold (0: none).
    pub pps: f64,
    pub packet_size: usize,
    /// Where echo requests go; OpenVPN sessions default to the pushed gateway address.
    pub target: Option<Ipv4Addr>,
    pub counters: Counters,
    pub events: mpsc::UnboundedSender<SessionEvent>,
    pub phase: watch::Receiver<Phase>,
    pub rng: Arc<ring::rand::SystemRandom>,
    /// Site-to-site peers' settings and counters (with --sites).
    pub site: Option<crate::site_session::SiteCtx>,
    /// Source addresses for the sessions, taken in turn by session index (empty: any).
    pub sources: Vec<Ipv4Addr>,
}

impl Ctx {
    /// Where session `index` sends from: one of `sources` in turn, or any address.
    pub fn source(&self, index: usize) -> SocketAddr {
        let ip = match self.sources.len() {
            0 => Ipv4Addr::UNSPECIFIED,
            n => self.sources[index % n],
        };
        SocketAddr::new(ip.into(), 0)
    }
}

/// OS randomness for the engine's state machines.
pub(crate) struct OsEntropy(pub(crate) Arc<ring::rand::SystemRandom>);

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        use ring::rand::SecureRandom;
        if self.0.fill(buf).is_err() {
            // No keys without randomness; the OS generator does not fail on Linux.
            panic!("OS random number generator failed");
        }
    }
}

/// Per-thread buffers: one datagram in, one decrypted packet, one datagram out.
pub(crate) struct Scratch {
    pub(crate) rx: Vec<u8>,
    pub(crate) dec: Vec<u8>,
    pub(crate) out: Vec<u8>,
    pub(crate) inner: Vec<u8>,
}

thread_local! {
    pub(crate) static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        rx: vec![0; 65536],
        dec: vec![0; 65536],
        out: Vec::with_capacity(65536),
        inner: Vec::with_capacity(2048),
    });
}

/// At most this many datagrams per wake-up, so one busy session does not starve the others.
pub(crate) const RECV_BURST: usize = 64;

pub(crate) fn send(sock: &UdpSocket, data: &[u8], to: SocketAddr, counters: &Counters) {
    match sock.try_send_to(data, to) {
        Ok(_) => {}
        // The gateway's port is closed (ICMP error from an earlier datagram): the state
        // machines time out by themselves.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        Err(_) => {
            counters.send_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Traffic state of one session.
pub(crate) struct Traffic {
    tick: Option<Interval>,
    seq: u16,
    pub(crate) id: u16,
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Option<Ipv4Addr>,
}

impl Traffic {
    pub(crate) fn new(index: usize) -> Self {
        Traffic {
            tick: None,
            seq: 0,
            id: index as u16,
            src: Ipv4Addr::UNSPECIFIED,
            dst: None,
        }
    }

    /// Starts the ticker (hold phase, session up, traffic asked for), spread over one
    /// period by the session's index so the sessions do not send in lockstep.
    pub(crate) fn start(&mut self, ctx: &Ctx) {
        if self.tick.is_some() || ctx.pps <= 0.0 || self.dst.is_none() {
            return;
        }
        let period = Duration::from_secs_f64(1.0 / ctx.pps);
        let offset = period.mul_f64(f64::from(self.id % 1000) / 1000.0);
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        t.set_missed_tick_behavior(MissedTickBehavior::Skip);
        self.tick = Some(t);
    }

    pub(crate) async fn next(&mut self) {
        match &mut self.tick {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Builds the next echo request into `out`.
    pub(crate) fn build(&mut self, out: &mut Vec<u8>, size: usize) -> bool {
        let Some(dst) = self.dst else { return false };
        self.seq = self.seq.wrapping_add(1);
        echo_request(out, self.src, dst, self.id, self.seq, size);
        true
    }
}

/// Counts an inner packet that came out of the tunnel (hold phase only); true when it is an
/// echo reply to us.
pub(crate) fn count_rx(ctx: &Ctx, holding: bool, packet: &[u8], ours: Ipv4Addr, id: u16) -> bool {
    if !holding {
        return false;
    }
    ctx.counters.rx_packets.fetch_add(1, Ordering::Relaxed);
    ctx.counters
        .rx_bytes
        .fetch_add(packet.len() as u64, Ordering::Relaxed);
    match classify(packet) {
        Inner::EchoReply { dst, id: rid } if dst == ours && rid == id => {
            ctx.counters.echo_replies.fetch_add(1, Ordering::Relaxed);
            true
        }
        Inner::Malformed => {
            ctx.counters.malformed.fetch_add(1, Ordering::Relaxed);
            false
        }
        _ => false,
    }
}

pub(crate) fn count_tx(ctx: &Ctx, len: usize) {
    ctx.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
    ctx.counters
        .tx_bytes
        .fetch_add(len as u64, Ordering::Relaxed);
}

/// Bookkeeping common to both drivers: handshake outcome, stop, the end report.
pub(crate) struct Life {
    proto: Proto,
    started: Instant,
    pub(crate) up: bool,
    permit: Option<OwnedSemaphorePermit>,
    /// When the hold ended (Stop seen): whether we were held then.
    pub(crate) end: Option<SessionEnd>,
    pub(crate) stop_deadline: Option<Instant>,
    pub(crate) last_rx: Instant,
}

impl Life {
    pub(crate) fn new(proto: Proto, permit: OwnedSemaphorePermit) -> Self {
        let now = Instant::now();
        Life {
            proto,
            started: now,
            up: false,
            permit: Some(permit),
            end: None,
            stop_deadline: None,
            last_rx: now,
        }
    }

    pub(crate) fn connected(&mut self, ctx: &Ctx, now: Instant) {
        self.up = true;
        self.permit = None;
        let _ = ctx.events.send(SessionEvent::Up {
            proto: self.proto,
            latency: now - self.started,
        });
    }

    /// The session ended (or cannot start): report it and give the result to return.
    pub(crate) fn ended(&mut self, ctx: &Ctx, reason: String) -> SessionEnd {
        if let Some(end) = self.end {
            return end;
        }
        let ev = if self.up {
            SessionEvent::Lost {
                proto: self.proto,
                reason,
            }
        } else {
            SessionEvent::Failed {
                proto: self.proto,
                reason,
            }
        };
        let _ = ctx.events.send(ev);
        SessionEnd {
            proto: self.proto,
            held: false,
            silent: false,
        }
    }

    /// The hold is over: note whether we are held. False when not up (the caller ends).
    pub(crate) fn stop(&mut self, ctx: &Ctx, now: Instant) -> bool {
        if self.end.is_some() {
            return true;
        }
        if !self.up {
            return false;
        }
        self.end = Some(SessionEnd {
            proto: self.proto,
            held: true,
            silent: now.saturating_duration_since(self.last_rx) > ctx.silent_after,
        });
        self.stop_deadline = Some(now + ctx.linger);
        true
    }

    pub(crate) fn handshake_overdue(&self, ctx: &Ctx, now: Instant) -> bool {
        !self.up && now >= self.started + ctx.handshake_timeout + Duration::from_secs(1)
    }
}

/// Runs one OpenVPN-over-UDP session to the end.
pub async fn openvpn(
    index: usize,
    cred: Arc<Credential>,
    ctx: Arc<Ctx>,
    permit: OwnedSemaphorePermit,
) -> SessionEnd {
    let mut life = Life::new(Proto::Openvpn, permit);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let time = Arc::new(rustls::time_provider::DefaultTimeProvider);
    let tls = match client_config(provider, time, &ctx.ca, cred.chain.clone(), cred.key()) {
        Ok(t) => t,
        Err(e) => return life.ended(&ctx, format!("TLS configuration: {e}")),
    };
    let Ok(name) = ServerName::try_from(ctx.gateway_id.clone()) else {
        return life.ended(
            &ctx,
            format!("{:?} is not a host name or IP", ctx.gateway_id),
        );
    };
    let mut cfg = ClientConfig::new(tls, name);
    cfg.handshake_timeout = ctx.handshake_timeout;
    cfg.version = format!("gatehouse-loadgen-{}", env!("CARGO_PKG_VERSION"));
    let sock = match UdpSocket::bind(ctx.source(index)).await {
        Ok(s) => s,
        Err(e) => return life.ended(&ctx, format!("UDP socket: {e}")),
    };
    // Sends are `try_send_to` (no await): let the reactor see the socket writable first.
    if let Err(e) = sock.writable().await {
        return life.ended(&ctx, format!("UDP socket: {e}"));
    }
    let gw = ctx.openvpn_addr;
    let mut session = match ClientSession::new(
        Arc::new(cfg),
        Box::new(OsEntropy(ctx.rng.clone())),
        Instant::now(),
    ) {
        Ok(s) => s,
        Err(e) => return life.ended(&ctx, format!("TLS setup: {e}")),
    };
    let mut phase_rx = ctx.phase.clone();
    let mut phase = *phase_rx.borrow_and_update();
    let mut traffic = Traffic::new(index);
    loop {
        let now = Instant::now();
        SCRATCH.with_borrow_mut(|s| {
            while session.poll_transmit(now, &mut s.out) {
                send(&sock, &s.out, gw, &ctx.counters);
            }
        });
        while let Some(ev) = session.poll_event() {
            match ev {
                ClientEvent::Connected(push) => {
                    traffic.src = push.address;
                    traffic.dst = ctx.target.or(Some(push.gateway));
                    life.connected(&ctx, now);
                    if phase == Phase::Hold {
                        traffic.start(&ctx);
                    }
                }
                ClientEvent::Rekeyed { .. } => {}
                ClientEvent::AuthFailed(reason) => {
                    return life.ended(&ctx, format!("refused by the gateway: {reason}"));
                }
                ClientEvent::Closed(reason) => {
                    if life.end.is_none() {
                        return life.ended(&ctx, reason);
                    }
                }
            }
        }
        if session.is_closed() {
            return life.ended(&ctx, "session closed".into());
        }
        if life.handshake_overdue(&ctx, now) {
            return life.ended(&ctx, "handshake timed out".into());
        }
        if life.stop_deadline.is_some_and(|t| now >= t) {
            return life.ended(&ctx, "did not close in time".into());
        }
        let deadline = session
            .poll_timeout(now)
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(5));
        tokio::select! {
            r = sock.readable() => {
                if let Err(e) = r {
                    return life.ended(&ctx, format!("socket: {e}"));
                }
                let now = Instant::now();
                let holding = phase == Phase::Hold;
                SCRATCH.with_borrow_mut(|s| {
                    for _ in 0..RECV_BURST {
                        let n = match sock.try_recv_from(&mut s.rx) {
                            Ok((n, from)) if from == gw => n,
                            Ok(_) => continue,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => continue,
                        };
                        life.last_rx = now;
                        let bytes = &s.rx[..n];
                        let is_data = bytes.first().is_some_and(|b| matches!(b >> 3, 6 | 9));
                        if !is_data {
                            // Control packets: authenticated (if wrapped) and parsed inside.
                            let _ = session.handle_control_datagram(now, bytes);
                            continue;
                        }
                        let Ok(Packet::Data(d)) = Packet::parse(bytes) else { continue };
                        if let Ok(DataOutcome::Packet(r)) = session.handle_data(now, bytes, d.key_id, &mut s.out)
                            && let Some(p) = s.out.get(r)
                        {
                            let _ = count_rx(&ctx, holding, p, traffic.src, traffic.id);
                        }
                    }
                });
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                session.handle_timeout(Instant::now());
            }
            _ = traffic.next(), if phase == Phase::Hold => {
                let now = Instant::now();
                SCRATCH.with_borrow_mut(|s| {
                    if traffic.build(&mut s.inner, ctx.packet_size)
                        && session.encrypt(now, &s.inner, &mut s.out).is_ok()
                    {
                        count_tx(&ctx, s.inner.len());
                        send(&sock, &s.out, gw, &ctx.counters);
                    }
                });
            }
            r = phase_rx.changed(), if phase != Phase::Stop => {
                phase = if r.is_ok() { *phase_rx.borrow_and_update() } else { Phase::Stop };
                let now = Instant::now();
                match phase {
                    Phase::Hold if life.up => traffic.start(&ctx),
                    Phase::Stop => {
                        if !life.stop(&ctx, now) {
                            return life.ended(&ctx, "not connected when the run stopped".into());
                        }
                        session.disconnect(now);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn ike_config(ctx: &Ctx, cred: &Credential) -> Result<Arc<InitiatorConfig>, String> {
    let key = SigningKey::from_pkcs8(cred.pkcs8(), &*ctx.rng)
        .map_err(|e| format!("private key of {}: {e}", cred.name))?;
    Ok(Arc::new(InitiatorConfig {
        policy: Policy::default(),
        trust: PeerTrust {
            roots: ctx.ca.clone(),
            crls: Vec::new(),
        },
        time: Arc::new(rustls::time_provider::DefaultTimeProvider),
        cert_chain: cred.chain.clone(),
        key: Arc::new(key),
        rng: ctx.rng.clone(),
        remote_id: Some(ctx.gateway_id.clone()),
        dpd_interval: ctx.ike_dpd,
        fragment_size: 1280,
        ike_lifetime: DEFAULT_IKE_LIFETIME,
        child_lifetime: DEFAULT_CHILD_LIFETIME,
        request_ipv6: false,
        site: None,
    }))
}

/// ESP carries this in its next-header field for dummy packets (RFC 4303).
pub(crate) const NO_NEXT_HEADER: u8 = 59;

/// Reads up to [`RECV_BURST`] datagrams the gateway sent to `sock` (IKE on 500 or 4500, ESP
/// in UDP on 4500) into the IKE SA and the ESP table; returns how many decrypted ESP packets
/// were replies to our echo requests during the hold (see [`count_rx`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn recv_ike_burst(
    sock: &UdpSocket,
    gw: SocketAddr,
    ike: &mut IkeInitiator,
    esp: &mut EspTable<()>,
    ctx: &Ctx,
    holding: bool,
    traffic: &Traffic,
    life: &mut Life,
) -> u64 {
    let now = Instant::now();
    let mut replies = 0;
    SCRATCH.with_borrow_mut(|s| {
        let Scratch { rx, dec, .. } = s;
        for _ in 0..RECV_BURST {
            let (n, from) = match sock.try_recv_from(rx) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => continue,
            };
            if from.ip() != gw.ip() {
                continue;
            }
            life.last_rx = now;
            let bytes = &rx[..n];
            if from.port() == gw.port() && gw.port() != 4500 {
                ike.handle_message(now, bytes);
                continue;
            }
            match strip_non_esp_marker(bytes) {
                Classified::Ike(m) => ike.handle_message(now, m),
                Classified::Keepalive => {}
                Classified::Esp(p) => {
                    if dec.len() < p.len() {
                        continue;
                    }
                    if let Ok(((), payload)) = esp.decrypt(p, dec) {
                        ike.note_activity(now);
                        if payload.next_header != NO_NEXT_HEADER
                            && count_rx(ctx, holding, payload.packet, traffic.src, traffic.id)
                        {
                            replies += 1;
                        }
                    }
                }
            }
        }
    });
    replies
}

/// Runs one IKEv2 session (IKE SA + one CHILD SA, ESP in UDP 4500) to the end.
pub async fn ikev2(
    index: usize,
    cred: Arc<Credential>,
    ctx: Arc<Ctx>,
    permit: OwnedSemaphorePermit,
) -> SessionEnd {
    let mut life = Life::new(Proto::Ikev2, permit);
    let cfg = match ike_config(&ctx, &cred) {
        Ok(c) => c,
        Err(reason) => return life.ended(&ctx, reason),
    };
    let sock = match UdpSocket::bind(ctx.source(index)).await {
        Ok(s) => s,
        Err(e) => return life.ended(&ctx, format!("UDP socket: {e}")),
    };
    // Sends are `try_send_to` (no await): let the reactor see the socket writable first.
    if let Err(e) = sock.writable().await {
        return life.ended(&ctx, format!("UDP socket: {e}"));
    }
    let gw = ctx.ike_addr;
    let natt = SocketAddr::new(gw.ip(), 4500);
    let mut ike = IkeInitiator::new(
        cfg,
        Box::new(OsEntropy(ctx.rng.clone())),
        Instant::now(),
        gw,
    );
    // One owner (this SA), as client-core keeps it.
    let mut esp: EspTable<()> = EspTable::new();
    let mut phase_rx = ctx.phase.clone();
    let mut phase = *phase_rx.borrow_and_update();
    let mut traffic = Traffic::new(index);
    loop {
        let now = Instant::now();
        SCRATCH.with_borrow_mut(|s| {
            while let Some(t) = ike.poll_transmit() {
                s.out.clear();
                if t.nat_t {
                    s.out.extend_from_slice(&[0, 0, 0, 0]);
                }
                s.out.extend_from_slice(&t.data);
                send(&sock, &s.out, t.to, &ctx.counters);
            }
        });
        while let Some(ev) = ike.poll_event() {
            match ev {
                InitiatorEvent::Connected {
                    address,
                    our_spi,
                    sa,
                    ..
                } => {
                    let Some(address) = address else {
                        return life.ended(&ctx, "the gateway assigned no virtual address".into());
                    };
                    let sa = *sa;
                    esp.install((), our_spi, sa.inbound, sa.outbound, false);
                    traffic.src = address;
                    traffic.dst = ctx.target;
                    life.connected(&ctx, now);
                    if phase == Phase::Hold {
                        traffic.start(&ctx);
                    }
                }
                InitiatorEvent::ChildRekeyed { our_spi, sa, .. } => {
                    let sa = *sa;
                    esp.install((), our_spi, sa.inbound, sa.outbound, false);
                }
                InitiatorEvent::ChildDeleted { our_spi } => {
                    esp.remove((), our_spi);
                }
                InitiatorEvent::AuthFailed(reason) => {
                    return life.ended(&ctx, format!("refused by the gateway: {reason}"));
                }
                InitiatorEvent::Closed(reason) => {
                    return life.ended(&ctx, reason);
                }
            }
        }
        if ike.is_closed() {
            return life.ended(&ctx, "IKE SA closed".into());
        }
        if life.handshake_overdue(&ctx, now) {
            return life.ended(&ctx, "handshake timed out".into());
        }
        if life.stop_deadline.is_some_and(|t| now >= t) {
            return life.ended(&ctx, "did not close in time".into());
        }
        let deadline = ike
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(5));
        tokio::select! {
            r = sock.readable() => {
                if let Err(e) = r {
                    return life.ended(&ctx, format!("socket: {e}"));
                }
                let holding = phase == Phase::Hold;
                recv_ike_burst(&sock, gw, &mut ike, &mut esp, &ctx, holding, &traffic, &mut life);
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                ike.handle_timeout(Instant::now());
            }
            _ = traffic.next(), if phase == Phase::Hold => {
                SCRATCH.with_borrow_mut(|s| {
                    if !traffic.build(&mut s.inner, ctx.packet_size) {
                        return;
                    }
                    s.out.resize(s.inner.len() + 128, 0);
                    if let Ok(len) = esp.encrypt((), &s.inner, &mut s.out) {
                        count_tx(&ctx, s.inner.len());
                        send(&sock, &s.out[..len], natt, &ctx.counters);
                    }
                });
            }
            r = phase_rx.changed(), if phase != Phase::Stop => {
                phase = if r.is_ok() { *phase_rx.borrow_and_update() } else { Phase::Stop };
                let now = Instant::now();
                match phase {
                    Phase::Hold if life.up => traffic.start(&ctx),
                    Phase::Stop => {
                        if !life.stop(&ctx, now) {
                            return life.ended(&ctx, "not connected when the run stopped".into());
                        }
                        ike.disconnect(now);
                    }
                    _ => {}
                }
            }
        }
    }
}
