//! The gateway core: one task owns the session table, router, pool, the UDP socket and the
//! TUN device, and drives the engine's sans-IO sessions. TCP connections feed it through a
//! channel. Timers come from a deadline heap over the sessions' `poll_timeout`.

mod ike;
mod site;
mod tcp;
pub mod wrap;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gatehouse_engine::entropy::Entropy;
use gatehouse_engine::openvpn::server::{
    Assignment, CloseReason, ServerConfig, ServerEvent, ServerSession,
};
use gatehouse_engine::openvpn::wrap::{FirstPacket, FirstPacketReplays, ServerWrap};
use gatehouse_engine::openvpn::{DataOutcome, DataPathError};
use gatehouse_engine::pool::AddressPool;
use gatehouse_engine::router::{Router, TunnelId};
use gatehouse_engine::wire::ip::IpHeader;
use gatehouse_engine::wire::openvpn::{Opcode, Packet};
use ipnet::Ipv4Net;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::GatewayConfig;
use crate::stats::{Drop, Stats};
use crate::tls::{FileStamp, PkiPaths, openvpn_server_config};
use tcp::TcpEvent;

/// Packets read per wake-up beyond the first, before other sources get a turn.
const BURST: usize = 64;
/// Socket buffer size asked of the kernel: bursts at Gbit/s overflow the 208 KiB default.
const SOCKET_BUFFER: usize = 4 << 20;

/// Sessions that have not authenticated yet, beyond which new hard resets are ignored.
const MAX_HANDSHAKING: usize = 4096;

/// OS randomness for the engine (the engine itself never reaches for it).
pub(super) struct OsEntropy(pub(super) ring::rand::SystemRandom);

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        use ring::rand::SecureRandom;
        if self.0.fill(buf).is_err() {
            // ring's OS RNG does not fail on Linux; if it ever did, refusing to continue is
            // the only safe answer.
            panic!("OS random number generator failed");
        }
    }
}

#[derive(Debug, Clone)]
enum Transport {
    Udp(SocketAddr),
    Tcp { tx: mpsc::Sender<Vec<u8>> },
}

impl Transport {
    fn name(&self) -> &'static str {
        match self {
            Transport::Udp(_) => "udp",
            Transport::Tcp { .. } => "tcp",
        }
    }
}

struct Entry {
    session: ServerSession,
    transport: Transport,
    remote: SocketAddr,
    client: Option<String>,
    address: Option<Ipv4Addr>,
    connected_at: Option<Instant>,
}

/// Everything the running gateway needs, built by [`Gateway::bind`].
pub struct Gateway {
    cfg: GatewayConfig,
    pki: PkiPaths,
    ovpn: Arc<ServerConfig>,
    crl_stamp: FileStamp,
    pool: AddressPool,
    router: Router,
    sessions: HashMap<TunnelId, Entry>,
    by_udp: HashMap<SocketAddr, TunnelId>,
    by_tcp: HashMap<u64, (TunnelId, SocketAddr, mpsc::Sender<Vec<u8>>)>,
    by_client: HashMap<String, TunnelId>,
    deadlines: BinaryHeap<Reverse<(Instant, TunnelId)>>,
    pending_drain: Vec<TunnelId>,
    next_id: TunnelId,
    next_peer_id: u32,
    stats: Stats,
    /// Session ids of recently accepted wrapped first packets (replays are dropped).
    first_replays: FirstPacketReplays,
    udp: Option<Arc<UdpSocket>>,
    tcp: Option<TcpListener>,
    tun: Arc<tun_rs::AsyncDevice>,
    ike: Option<ike::IkeState>,
    /// Where `gateway.toml` (and `status.json`) live.
    config_dir: PathBuf,
    out: Vec<u8>,
    dec: Vec<u8>,
}

/// Every socket the gateway serves, for the start-up log line: operators open these in their
/// firewall, so none may be missing (`openvpn/udp 0.0.0.0:1194, openvpn/tcp 0.0.0.0:443,
/// ikev2/udp 0.0.0.0:500, ikev2-natt/udp 0.0.0.0:4500`).
fn listeners(cfg: &GatewayConfig) -> String {
    let o = &cfg.openvpn;
    let mut l = Vec::new();
    if o.udp_port != 0 {
        l.push(format!(
            "openvpn/udp {}",
            SocketAddr::new(o.listen, o.udp_port)
        ));
    }
    if o.tcp_port != 0 {
        l.push(format!(
            "openvpn/tcp {}",
            SocketAddr::new(o.listen, o.tcp_port)
        ));
    }
    if cfg.ikev2.enabled {
        let i = &cfg.ikev2;
        l.push(format!(
            "ikev2/udp {}",
            SocketAddr::new(i.listen, i.ike_port)
        ));
        l.push(format!(
            "ikev2-natt/udp {}",
            SocketAddr::new(i.listen, i.natt_port)
        ));
    }
    l.join(", ")
}

impl Gateway {
    /// Loads TLS material, creates the TUN device and binds the listeners.
    pub async fn bind(cfg: GatewayConfig, config_dir: PathBuf) -> Result<Self> {
        let pki_dir = cfg.pki_path(&config_dir);
        let pki = PkiPaths::new(&pki_dir, &cfg.server_cert);
        let mut ovpn = openvpn_server_config(&pki, &cfg)?;
        Arc::make_mut(&mut ovpn).wrap = wrap::load(&cfg, &config_dir, true)?;
        let crl_stamp = FileStamp::of(&pki.crl);
        let pool = AddressPool::new(cfg.client_pool)?;
        let conns = cfg.connections(&config_dir)?;
        site::check_enabled(&cfg, &conns)?;
        let site_peers = site::site_peers(&cfg, &conns);
        let tun = crate::tun::create(
            &cfg.tun_name,
            pool.gateway_addr(),
            cfg.client_pool,
            cfg.tun_mtu,
        )?;
        let site_prefixes: Vec<Ipv4Net> = conns
            .iter()
            .flat_map(|c| c.remote_address_space.iter().copied())
            .collect();
        crate::tun::add_routes(&cfg.tun_name, &site_prefixes)?;
        let o = &cfg.openvpn;
        let udp = if o.udp_port != 0 {
            let addr = SocketAddr::new(o.listen, o.udp_port);
            Some(Arc::new(bind_udp(addr).with_context(|| {
                format!(
                    "cannot bind UDP {addr} (`openvpn.udp_port`); is another VPN server running?"
                )
            })?))
        } else {
            None
        };
        let tcp = if o.tcp_port != 0 {
            let addr = SocketAddr::new(o.listen, o.tcp_port);
            Some(TcpListener::bind(addr).await.with_context(|| {
                format!("cannot bind TCP {addr} (`openvpn.tcp_port`); is a web server using it?")
            })?)
        } else {
            None
        };
        let ike = if cfg.ikev2.enabled {
            let i = &cfg.ikev2;
            let bind = |port: u16| {
                let addr = SocketAddr::new(i.listen, port);
                bind_udp(addr).with_context(|| {
                    format!("cannot bind UDP {addr} for IKEv2 (`ikev2.ike_port`/`ikev2.natt_port`); is strongSwan running? set `ikev2.enabled = false` to run without IKEv2")
                })
            };
            let mut cookie_secret = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut cookie_secret)
                .map_err(|_| anyhow::anyhow!("OS random number generator failed"))?;
            Some(ike::IkeState {
                cfg: crate::tls::ike_responder_config(&pki, &cfg, &site_peers)?,
                ike: Arc::new(bind(i.ike_port)?),
                natt: Arc::new(bind(i.natt_port)?),
                entries: HashMap::new(),
                by_spis: HashMap::new(),
                by_init: HashMap::new(),
                by_local_spi: HashMap::new(),
                sites: site::site_conns(conns, &site_peers),
                esp_in: HashMap::new(),
                cookie_secret,
                cookie_threshold: i.cookie_threshold,
                esp_buf: vec![0; ike::ESP_BUF],
            })
        } else {
            None
        };
        Ok(Self {
            ike,
            config_dir,
            cfg,
            pki,
            ovpn,
            crl_stamp,
            pool,
            router: Router::new(),
            sessions: HashMap::new(),
            by_udp: HashMap::new(),
            by_tcp: HashMap::new(),
            by_client: HashMap::new(),
            deadlines: BinaryHeap::new(),
            pending_drain: Vec::new(),
            next_id: 1,
            next_peer_id: 0,
            stats: Stats::default(),
            first_replays: FirstPacketReplays::new(Duration::from_secs(120), MAX_HANDSHAKING * 4),
            udp,
            tcp,
            tun: Arc::new(tun),
            out: Vec::with_capacity(2048),
            dec: Vec::with_capacity(2048),
        })
    }

    /// Serves until SIGINT/SIGTERM.
    pub async fn run(mut self) -> Result<()> {
        let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpEvent>(4096);
        if let Some(listener) = self.tcp.take() {
            tokio::spawn(tcp::accept_loop(listener, tcp_tx));
        } else {
            drop(tcp_tx);
        }
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing SIGTERM handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm.recv() => {}
            }
            let _ = stop_tx.send(true);
        });
        let mut crl_tick = tokio::time::interval(Duration::from_secs(2));
        let mut stats_tick = tokio::time::interval(Duration::from_secs(60));
        let mut site_tick = tokio::time::interval(Duration::from_secs(1));
        // Both intervals fire at once on creation; the first real check is one period away.
        crl_tick.tick().await;
        stats_tick.tick().await;
        let udp = self.udp.clone();
        let ike_sock = self.ike.as_ref().map(|i| i.ike.clone());
        let natt_sock = self.ike.as_ref().map(|i| i.natt.clone());
        let mut ibuf = vec![0u8; 65536];
        let mut ibuf500 = vec![0u8; 4096];
        let tun = self.tun.clone();
        let mut ubuf = vec![0u8; 65536];
        let mut tbuf = vec![0u8; 65536];
        let mut tcp_open = true;
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        info!(
            listening = %listeners(&self.cfg),
            tun = %self.cfg.tun_name,
            tun_addr = %self.pool.gateway_addr(),
            client_pool = %self.cfg.client_pool,
            address_space = ?self.cfg.address_space.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            tls_ekm = self.cfg.openvpn.tls_ekm,
            openvpn_wrapper = self.ovpn.wrap.name(),
            "gateway ready"
        );
        loop {
            let deadline = self.next_deadline();
            if deadline != armed {
                // Re-arm the one timer only when the earliest deadline changed.
                let when = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                timer.as_mut().reset(tokio::time::Instant::from_std(when));
                armed = deadline;
            }
            tokio::select! {
                biased;
                _ = stop_rx.changed() => break,
                r = async { match &udp { Some(u) => u.recv_from(&mut ubuf).await, None => std::future::pending().await } } => {
                    match r {
                        Ok((n, from)) => {
                            let now = Instant::now();
                            self.handle_udp(now, from, n, &ubuf).await;
                            // Drain the burst that arrived meanwhile without re-entering select.
                            if let Some(u) = &udp {
                                for _ in 0..BURST {
                                    match u.try_recv_from(&mut ubuf) {
                                        Ok((n, from)) => self.handle_udp(now, from, n, &ubuf).await,
                                        Err(_) => break,
                                    }
                                }
                            }
                        }
                        Err(e) => debug!(error = %e, "UDP receive error"),
                    }
                }
                r = async { match &natt_sock { Some(u) => u.recv_from(&mut ibuf).await, None => std::future::pending().await } } => {
                    if let Ok((n, from)) = r {
                        let now = Instant::now();
                        self.handle_ike_datagram(now, from, true, &ibuf[..n]).await;
                        if let Some(u) = &natt_sock {
                            for _ in 0..BURST {
                                match u.try_recv_from(&mut ibuf) {
                                    Ok((n, from)) => self.handle_ike_datagram(now, from, true, &ibuf[..n]).await,
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                }
                r = async { match &ike_sock { Some(u) => u.recv_from(&mut ibuf500).await, None => std::future::pending().await } } => {
                    if let Ok((n, from)) = r {
                        self.handle_ike_datagram(Instant::now(), from, false, &ibuf500[..n]).await;
                    }
                }
                r = tun.recv(&mut tbuf) => {
                    match r {
                        Ok(n) => {
                            let now = Instant::now();
                            self.handle_tun(now, &tbuf[..n]).await;
                            for _ in 0..BURST {
                                match tun.try_recv(&mut tbuf) {
                                    Ok(n) => self.handle_tun(now, &tbuf[..n]).await,
                                    Err(_) => break,
                                }
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "TUN read failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                ev = tcp_rx.recv(), if tcp_open => {
                    match ev {
                        Some(ev) => self.handle_tcp(Instant::now(), ev).await,
                        None => tcp_open = false,
                    }
                }
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.handle_deadlines(Instant::now()).await;
                }
                _ = crl_tick.tick() => {
                    self.check_crl();
                    self.write_status(Instant::now());
                }
                _ = site_tick.tick() => self.site_tick(Instant::now()).await,
                _ = stats_tick.tick() => {
                    if self.stats.total() > 0 || !self.sessions.is_empty() {
                        info!(sessions = self.sessions.len(), leased = self.pool.leased_count(), drops = %self.stats, "status");
                    }
                    self.log_site_status(Instant::now());
                }
            }
        }
        self.shutdown().await;
        Ok(())
    }

    async fn shutdown(&mut self) {
        let now = Instant::now();
        let ids: Vec<TunnelId> = self.sessions.keys().copied().collect();
        for id in ids {
            if let Some(e) = self.sessions.get_mut(&id) {
                e.session.close(now, "gateway shutting down");
            }
            self.drain(now, id).await;
        }
        let ike_ids: Vec<TunnelId> = self
            .ike
            .as_ref()
            .map(|i| i.entries.keys().copied().collect())
            .unwrap_or_default();
        for id in ike_ids {
            if let Some(e) = self.ike.as_mut().and_then(|i| i.entries.get_mut(&id)) {
                e.session.delete(now, "gateway shutting down");
            }
            self.drain_ike(now, id).await;
        }
        // A status file left behind would show a stopped gateway as running for a while.
        let _ = std::fs::remove_file(crate::status::path(&self.config_dir));
        info!(drops = %self.stats, "gateway stopped");
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((t, _))| *t)
    }

    fn check_crl(&mut self) {
        let stamp = FileStamp::of(&self.pki.crl);
        if stamp == self.crl_stamp {
            return;
        }
        if let Some(ike) = self.ike.as_mut() {
            let peers: Vec<_> = ike.sites.iter().map(|s| s.peer.clone()).collect();
            match crate::tls::ike_responder_config(&self.pki, &self.cfg, &peers) {
                Ok(c) => ike.cfg = c,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "CRL changed but IKEv2 could not reload it; keeping the previous one");
                    return;
                }
            }
        }
        match openvpn_server_config(&self.pki, &self.cfg) {
            Ok(mut c) => {
                Arc::make_mut(&mut c).wrap = self.ovpn.wrap.clone();
                self.ovpn = c;
                self.crl_stamp = stamp;
                info!(crl = %self.pki.crl.display(), "CRL reloaded; new connections are checked against it");
            }
            Err(e) => {
                // Keep the previous configuration; try again on the next tick.
                warn!(error = %format!("{e:#}"), "CRL changed but could not be loaded; keeping the previous one");
            }
        }
    }

    async fn handle_udp(&mut self, now: Instant, from: SocketAddr, n: usize, buf: &[u8]) {
        let bytes = &buf[..n];
        let Some(opcode) = bytes.first().and_then(|b| Opcode::from_u8(b >> 3)) else {
            self.stats.drop(Drop::Malformed);
            return;
        };
        if opcode.is_data() {
            let Ok(Packet::Data(d)) = Packet::parse(bytes) else {
                self.stats.drop(Drop::Malformed);
                return;
            };
            let Some(&id) = self.by_udp.get(&from) else {
                self.stats.drop(Drop::NoSession);
                return;
            };
            self.handle_data(now, id, bytes, d.key_id).await;
            return;
        }
        // Control packets may be wrapped (tls-auth, tls-crypt, tls-crypt-v2): only the opcode
        // and the sender's session id are readable before the wrapper authenticates them.
        let existing = self.by_udp.get(&from).copied();
        let reset = matches!(
            opcode,
            Opcode::ControlHardResetClientV2 | Opcode::ControlHardResetClientV3
        );
        if let Some(id) = existing {
            let same = !reset
                || self
                    .sessions
                    .get(&id)
                    .is_some_and(|e| Some(e.session.remote_session_id()) == session_id_of(bytes));
            if same {
                self.control(now, id, bytes).await;
                return;
            }
        } else if !reset {
            self.stats.drop(Drop::NoSession);
            return;
        }
        // A new session: authenticate its first packet before creating any state.
        let Some(first) = self.authenticate_first(now, from, bytes) else {
            return;
        };
        if let Some(id) = existing {
            // The client restarted: its old session is gone for good.
            self.remove(id, "client restarted (new session from the same address)");
        }
        self.new_session(now, Transport::Udp(from), from, first)
            .await;
    }

    /// Checks a new session's first packet with the configured wrapper; counts and (rarely)
    /// logs refusals. Nothing is ever sent back to a packet that fails.
    fn authenticate_first(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<FirstPacket> {
        let checked = self
            .ovpn
            .wrap
            .authenticate_first(bytes, wrap::unix_now())
            .and_then(|first| {
                // Without a wrapper anyone can make a reset, so only wrapped ones are worth
                // remembering: a captured one must not open a second session.
                let wrapped = !matches!(self.ovpn.wrap, ServerWrap::None);
                if wrapped && !self.first_replays.accept(now, first.session_id()) {
                    return Err(gatehouse_engine::openvpn::wrap::WrapError::Replay);
                }
                Ok(first)
            });
        match checked {
            Ok(first) => Some(first),
            Err(e) => {
                let why = wrap::drop_reason(&e);
                self.stats.drop(why);
                // Log the 1st, 2nd, 4th, 8th... of each reason: visible, yet bounded under a flood.
                if self.stats.get(why).is_power_of_two() {
                    info!(remote = %from, error = %e, dropped = self.stats.get(why), "dropped an OpenVPN packet before TLS (control-channel wrapper)");
                }
                None
            }
        }
    }

    async fn handle_tcp(&mut self, now: Instant, ev: TcpEvent) {
        match ev {
            TcpEvent::Opened { conn, remote, tx } => {
                self.by_tcp.insert(conn, (0, remote, tx));
            }
            TcpEvent::Packet { conn, packet } => {
                let Some((id, remote, tx)) = self.by_tcp.get(&conn).cloned() else {
                    return;
                };
                let Some(opcode) = packet.first().and_then(|b| Opcode::from_u8(b >> 3)) else {
                    self.stats.drop(Drop::Malformed);
                    return;
                };
                if opcode.is_data() {
                    match Packet::parse(&packet) {
                        Ok(Packet::Data(d)) if id != 0 => {
                            self.handle_data(now, id, &packet, d.key_id).await
                        }
                        Ok(_) => self.stats.drop(Drop::NoSession),
                        Err(_) => self.stats.drop(Drop::Malformed),
                    }
                    return;
                }
                if id != 0 {
                    self.control(now, id, &packet).await;
                    return;
                }
                if !matches!(
                    opcode,
                    Opcode::ControlHardResetClientV2 | Opcode::ControlHardResetClientV3
                ) {
                    self.stats.drop(Drop::NoSession);
                    return;
                }
                let Some(first) = self.authenticate_first(now, remote, &packet) else {
                    return;
                };
                if let Some(new_id) = self
                    .new_session(now, Transport::Tcp { tx: tx.clone() }, remote, first)
                    .await
                {
                    self.by_tcp.insert(conn, (new_id, remote, tx));
                }
            }
            TcpEvent::Closed { conn, reason } => {
                if let Some((id, _, _)) = self.by_tcp.remove(&conn)
                    && id != 0
                {
                    if let Some(e) = self.sessions.get_mut(&id)
                        && e.session.is_established()
                    {
                        self.log_disconnect(id, &format!("TCP {reason}"));
                    }
                    self.remove(id, "TCP connection closed");
                }
            }
        }
    }

    async fn new_session(
        &mut self,
        now: Instant,
        transport: Transport,
        remote: SocketAddr,
        first: FirstPacket,
    ) -> Option<TunnelId> {
        let handshaking = self
            .sessions
            .values()
            .filter(|e| e.client.is_none())
            .count();
        if handshaking >= MAX_HANDSHAKING {
            self.stats.drop(Drop::NoSession);
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let peer_id = self.next_peer_id;
        self.next_peer_id = (self.next_peer_id + 1) & 0x00ff_fffe;
        let entropy = Box::new(OsEntropy(ring::rand::SystemRandom::new()));
        let wrapper = first.wrapper_name();
        if let Some(m) = first.metadata() {
            debug!(remote = %remote, metadata = %String::from_utf8_lossy(m.get(1..).unwrap_or_default()), "tls-crypt-v2 client key");
        }
        let session =
            match ServerSession::new_wrapped(self.ovpn.clone(), entropy, now, peer_id, first) {
                Ok(s) => s,
                Err(e) => {
                    warn!(remote = %remote, error = %e, "cannot start session");
                    return None;
                }
            };
        debug!(remote = %remote, transport = transport.name(), wrapper, "new session");
        if let Transport::Udp(addr) = &transport {
            self.by_udp.insert(*addr, id);
        }
        self.sessions.insert(
            id,
            Entry {
                session,
                transport,
                remote,
                client: None,
                address: None,
                connected_at: None,
            },
        );
        self.drain(now, id).await;
        Some(id)
    }

    async fn control(&mut self, now: Instant, id: TunnelId, bytes: &[u8]) {
        if let Some(e) = self.sessions.get_mut(&id)
            && let Err(err) = e.session.handle_control_datagram(now, bytes)
        {
            self.stats.drop(wrap::drop_reason(&err));
            return;
        }
        self.drain(now, id).await;
    }

    async fn handle_data(&mut self, now: Instant, id: TunnelId, bytes: &[u8], key_id: u8) {
        let Some(e) = self.sessions.get_mut(&id) else {
            self.stats.drop(Drop::NoSession);
            return;
        };
        let range = match e.session.handle_data(now, bytes, key_id, &mut self.dec) {
            Ok(DataOutcome::Packet(r)) => r,
            Ok(DataOutcome::Keepalive) => return,
            Err(DataPathError::NotEstablished) => {
                self.stats.drop(Drop::NotEstablished);
                return;
            }
            Err(_) => {
                self.stats.drop(Drop::BadData);
                return;
            }
        };
        let packet = &self.dec[range];
        match IpHeader::parse(packet) {
            Ok(IpHeader::V4 { src, .. }) => {
                if !self.router.may_send(id, src) {
                    self.stats.drop(Drop::Spoofed);
                    return;
                }
            }
            Ok(IpHeader::V6 { .. }) => {
                // IPv6 is not served yet; client TUNs send router solicitations regardless.
                self.stats.drop(Drop::Ipv6);
                return;
            }
            Err(_) => {
                self.stats.drop(Drop::Malformed);
                return;
            }
        }
        match self.tun.try_send(packet) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(e) = self.tun.send(packet).await {
                    debug!(error = %e, "TUN write failed");
                }
            }
            Err(e) => debug!(error = %e, "TUN write failed"),
        }
    }

    async fn handle_tun(&mut self, now: Instant, packet: &[u8]) {
        let dst = match IpHeader::parse(packet) {
            Ok(IpHeader::V4 { dst, .. }) => dst,
            Ok(IpHeader::V6 { .. }) => {
                self.stats.drop(Drop::Ipv6);
                return;
            }
            Err(_) => {
                self.stats.drop(Drop::Malformed);
                return;
            }
        };
        let Some(id) = self.router.lookup(dst) else {
            self.stats.drop(Drop::NoRoute);
            return;
        };
        let Some(e) = self.sessions.get_mut(&id) else {
            if !self.ike_encrypt(id, packet).await {
                self.stats.drop(Drop::NoRoute);
            }
            return;
        };
        if e.session.encrypt(now, packet, &mut self.out).is_err() {
            self.stats.drop(Drop::NotEstablished);
            return;
        }
        let transport = e.transport.clone();
        send(&self.udp, &transport, &self.out).await;
    }

    async fn handle_deadlines(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            let Some(e) = self.sessions.get_mut(&id) else {
                if let Some(s) = self.ike.as_mut().and_then(|i| i.entries.get_mut(&id)) {
                    match s.session.poll_timeout() {
                        Some(due) if due <= now => {
                            s.session.handle_timeout(now);
                            self.drain_ike(now, id).await;
                            self.drain_pending(now).await;
                        }
                        Some(later) => self.deadlines.push(Reverse((later, id))),
                        None => self.drain_ike(now, id).await,
                    }
                }
                continue;
            };
            match e.session.poll_timeout(now) {
                Some(due) if due <= now => {
                    e.session.handle_timeout(now);
                    self.drain(now, id).await;
                }
                // A stale entry: the session's deadline moved later.
                Some(later) => self.deadlines.push(Reverse((later, id))),
                None => {}
            }
        }
    }

    /// Sends what a session wants to send and acts on its events, until it is quiet; then
    /// the same for sessions its events touched (a replaced login's RESTART).
    async fn drain(&mut self, now: Instant, id: TunnelId) {
        self.drain_one(now, id).await;
        self.drain_pending(now).await;
    }

    /// Drains the sessions other sessions' events touched.
    async fn drain_pending(&mut self, now: Instant) {
        while let Some(other) = self.pending_drain.pop() {
            if self.sessions.contains_key(&other) {
                self.drain_one(now, other).await;
            } else {
                self.drain_ike(now, other).await;
            }
        }
    }

    async fn drain_one(&mut self, now: Instant, id: TunnelId) {
        loop {
            let Some(e) = self.sessions.get_mut(&id) else {
                return;
            };
            let transport = e.transport.clone();
            while e.session.poll_transmit(now, &mut self.out) {
                send(&self.udp, &transport, &self.out).await;
            }
            let mut events = Vec::new();
            while let Some(ev) = e.session.poll_event() {
                events.push(ev);
            }
            if events.is_empty() {
                let closed = e.session.is_closed();
                let next = e.session.poll_timeout(now);
                if closed {
                    self.remove(id, "closed");
                } else if let Some(t) = next {
                    self.deadlines.push(Reverse((t, id)));
                }
                return;
            }
            for ev in events {
                self.handle_event(now, id, ev);
            }
        }
    }

    fn handle_event(&mut self, now: Instant, id: TunnelId, ev: ServerEvent) {
        match ev {
            ServerEvent::Authenticated { client, peer_info } => {
                debug!(client = %client, version = ?peer_info.version, platform = ?peer_info.platform, "client authenticated");
                self.admit(now, id, client);
            }
            ServerEvent::Established { cipher, tls_ekm } => {
                let Some(e) = self.sessions.get_mut(&id) else {
                    return;
                };
                e.connected_at = Some(now);
                info!(
                    client = %e.client.as_deref().unwrap_or("?"),
                    remote = %e.remote,
                    address = %e.address.map(|a| a.to_string()).unwrap_or_default(),
                    cipher = %cipher.openvpn_name(),
                    keys = %if tls_ekm { "tls-ekm" } else { "prf" },
                    transport = %e.transport.name(),
                    "client connected"
                );
            }
            ServerEvent::Rekeyed { key_id } => {
                if let Some(e) = self.sessions.get(&id) {
                    debug!(client = %e.client.as_deref().unwrap_or("?"), key_id, "data keys renegotiated");
                }
            }
            ServerEvent::Refused { client, reason } => {
                let remote = self
                    .sessions
                    .get(&id)
                    .map(|e| e.remote.to_string())
                    .unwrap_or_default();
                warn!(client = %client.as_deref().unwrap_or("?"), remote = %remote, reason = %reason, "client refused");
            }
            ServerEvent::Closed(reason) => {
                if !matches!(reason, CloseReason::Refused(_)) {
                    self.log_disconnect(id, &reason.to_string());
                }
                self.release(id);
            }
        }
    }

    fn log_disconnect(&mut self, id: TunnelId, reason: &str) {
        let Some(e) = self.sessions.get(&id) else {
            return;
        };
        if e.client.is_none() {
            debug!(remote = %e.remote, reason, "handshake abandoned");
            return;
        }
        let s = e.session.stats;
        info!(
            client = %e.client.as_deref().unwrap_or("?"),
            remote = %e.remote,
            address = %e.address.map(|a| a.to_string()).unwrap_or_default(),
            reason = %reason,
            rx_bytes = s.rx_bytes,
            tx_bytes = s.tx_bytes,
            "client disconnected"
        );
    }

    /// Gives the authenticated client its address, replacing an older session of the same
    /// certificate.
    /// One session per certificate: a newer login of `client` (session `id`, any protocol)
    /// ends the older one.
    fn replace_login(&mut self, now: Instant, id: TunnelId, client: &str) {
        let Some(&old) = self.by_client.get(client) else {
            return;
        };
        if old == id {
            return;
        }
        if let Some(e) = self.sessions.get_mut(&old) {
            info!(client = %client, old_remote = %e.remote, "second login with the same certificate replaces the first session");
            e.session
                .close(now, "replaced by a newer login with the same certificate");
            self.pending_drain.push(old);
            self.release(old);
        } else if let Some(e) = self.ike.as_mut().and_then(|i| i.entries.get_mut(&old)) {
            info!(client = %client, old_remote = %e.session.peer(), "second login with the same certificate replaces the first session");
            e.session
                .delete(now, "replaced by a newer login with the same certificate");
            self.pending_drain.push(old);
            self.release_ike(old);
        }
    }

    /// Gives the authenticated client its address, replacing an older session of the same
    /// certificate.
    fn admit(&mut self, now: Instant, id: TunnelId, client: String) {
        self.replace_login(now, id, &client);
        let addr = match self.pool.lease(&client) {
            Ok(a) => a,
            Err(e) => {
                if let Some(entry) = self.sessions.get_mut(&id) {
                    entry.session.reject(now, &e.to_string());
                }
                return;
            }
        };
        self.router.insert(Ipv4Net::from(addr), id);
        self.by_client.insert(client.clone(), id);
        let routes = self.client_routes();
        let Some(e) = self.sessions.get_mut(&id) else {
            return;
        };
        e.client = Some(client);
        e.address = Some(addr);
        e.session.accept(
            now,
            Assignment {
                address: addr,
                subnet: self.cfg.client_pool,
                gateway: self.pool.gateway_addr(),
                routes,
                dns: self.cfg.dns.clone(),
                redirect_gateway: self.cfg.full_tunnel,
            },
        );
    }

    /// Returns a session's address and routes (only if they are still its own).
    fn release(&mut self, id: TunnelId) {
        let Some(e) = self.sessions.get_mut(&id) else {
            return;
        };
        if let (Some(client), Some(addr)) = (e.client.clone(), e.address.take()) {
            self.router.remove(Ipv4Net::from(addr), id);
            if self.by_client.get(&client) == Some(&id) {
                self.by_client.remove(&client);
                self.pool.release(&client, addr);
            }
        }
    }

    fn remove(&mut self, id: TunnelId, why: &str) {
        self.release(id);
        if let Some(e) = self.sessions.remove(&id) {
            debug!(remote = %e.remote, why, "session removed");
            if let Transport::Udp(a) = e.transport
                && self.by_udp.get(&a) == Some(&id)
            {
                self.by_udp.remove(&a);
            }
        }
    }
}

async fn send(udp: &Option<Arc<UdpSocket>>, transport: &Transport, bytes: &[u8]) {
    match transport {
        Transport::Udp(addr) => {
            if let Some(u) = udp {
                match u.try_send_to(bytes, *addr) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let _ = u.send_to(bytes, *addr).await;
                    }
                    Err(e) => debug!(error = %e, to = %addr, "UDP send failed"),
                }
            }
        }
        Transport::Tcp { tx, .. } => {
            // A full queue means the client is not reading; drop like UDP would.
            let _ = tx.try_send(bytes.to_vec());
        }
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// The sender's session id of a control packet (readable with every wrapper).
fn session_id_of(packet: &[u8]) -> Option<u64> {
    let b: [u8; 8] = packet.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}
