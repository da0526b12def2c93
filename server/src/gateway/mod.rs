//! The gateway's driver: I/O only. It owns the sockets (OpenVPN UDP and TCP, IKE 500 and
//! 4500), the TUN device, one timer, the CRL and status files, and feeds everything to the
//! engine's sans-IO [`GatewayCore`], which takes every protocol decision.
//!
//! The loop serves its sources fairly: `select!` picks a ready source at random and each
//! source gets at most [`BURST`] packets per turn, so a flood on one port cannot starve TUN,
//! IKE or the timers. Nothing awaits a full socket, TUN or TCP queue: the packet is dropped
//! and counted (as the network would drop it), and every other session keeps moving.

mod core_config;
mod tcp;
pub mod wrap;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gatehouse_engine::entropy::Entropy;
use gatehouse_engine::gateway::{CoreStatus, Dest, Drop, GatewayCore, Listener, StreamId};
use gatehouse_engine::openvpn::server::ServerConfig;
use ipnet::Ipv4Net;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::GatewayConfig;
use crate::status::{ConnectionStatus, GatewayStatus};
use crate::tls::{FileStamp, PkiPaths};
use tcp::TcpEvent;

pub use core_config::{check_enabled, site_peers};

/// Packets one source may hand the core per turn before the others get theirs.
const BURST: usize = 64;
/// Socket buffer size asked of the kernel: bursts at Gbit/s overflow the 208 KiB default.
const SOCKET_BUFFER: usize = 4 << 20;

/// OS randomness for the engine (the engine itself never reaches for it).
struct OsEntropy(ring::rand::SystemRandom);

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

/// The sockets.
struct Sockets {
    ovpn: Option<Arc<UdpSocket>>,
    ike: Option<Arc<UdpSocket>>,
    natt: Option<Arc<UdpSocket>>,
}

impl Sockets {
    fn get(&self, l: Listener) -> Option<&UdpSocket> {
        match l {
            Listener::OpenVpnUdp => self.ovpn.as_deref(),
            Listener::Ike => self.ike.as_deref(),
            Listener::IkeNatT => self.natt.as_deref(),
        }
    }
}

/// Everything the running gateway needs, built by [`Gateway::bind`].
pub struct Gateway {
    cfg: GatewayConfig,
    pki: PkiPaths,
    /// The OpenVPN configuration in force (reloaded with the CRL).
    ovpn: Arc<ServerConfig>,
    crl_stamp: FileStamp,
    core: GatewayCore,
    sockets: Sockets,
    tcp: Option<TcpListener>,
    /// TCP connections' send queues.
    streams: std::collections::HashMap<StreamId, mpsc::Sender<Vec<u8>>>,
    tun: Arc<tun_rs::AsyncDevice>,
    /// Where `gateway.toml` (and `status.json`) live.
    config_dir: PathBuf,
}

impl Gateway {
    /// Loads TLS material, creates the TUN device and binds the listeners.
    pub async fn bind(cfg: GatewayConfig, config_dir: PathBuf) -> Result<Self> {
        let pki_dir = cfg.pki_path(&config_dir);
        let pki = PkiPaths::new(&pki_dir, &cfg.server_cert);
        let conns = cfg.connections(&config_dir)?;
        let crl_stamp = FileStamp::of(&pki.crl);
        let now = Instant::now();
        let core_cfg = core_config::build(&cfg, &config_dir, &pki, &conns, now)?;
        let ovpn = match &core_cfg.openvpn {
            Some(o) => o.clone(),
            None => crate::tls::openvpn_server_config(&pki, &cfg)?,
        };
        let mut core = GatewayCore::new(
            core_cfg,
            Box::new(|| Box::new(OsEntropy(ring::rand::SystemRandom::new())) as Box<dyn Entropy>),
        )?;
        let crls = core_config::read_crls(&pki)?;
        core.set_crls(now, &crls)
            .map_err(|e| anyhow::anyhow!("{}: {e}", pki.crl.display()))?;
        let tun = crate::tun::create(
            &cfg.tun_name,
            core.gateway_addr(),
            cfg.client_pool,
            cfg.tun_mtu,
        )?;
        let site_prefixes: Vec<Ipv4Net> = conns
            .iter()
            .flat_map(|c| c.remote_address_space.iter().copied())
            .collect();
        crate::tun::add_routes(&cfg.tun_name, &site_prefixes)?;
        let o = &cfg.openvpn;
        let ovpn_sock = if o.udp_port != 0 {
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
        let (ike, natt) = if cfg.ikev2.enabled {
            let i = &cfg.ikev2;
            let bind = |port: u16| {
                let addr = SocketAddr::new(i.listen, port);
                bind_udp(addr).map(Arc::new).with_context(|| {
                    format!("cannot bind UDP {addr} for IKEv2 (`ikev2.ike_port`/`ikev2.natt_port`); is strongSwan running? set `ikev2.enabled = false` to run without IKEv2")
                })
            };
            (Some(bind(i.ike_port)?), Some(bind(i.natt_port)?))
        } else {
            (None, None)
        };
        Ok(Self {
            cfg,
            pki,
            ovpn,
            crl_stamp,
            core,
            sockets: Sockets {
                ovpn: ovpn_sock,
                ike,
                natt,
            },
            tcp,
            streams: std::collections::HashMap::new(),
            tun: Arc::new(tun),
            config_dir,
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
        let mut files_tick = tokio::time::interval(Duration::from_secs(2));
        let mut stats_tick = tokio::time::interval(Duration::from_secs(60));
        files_tick.tick().await;
        stats_tick.tick().await;
        let ovpn = self.sockets.ovpn.clone();
        let ike = self.sockets.ike.clone();
        let natt = self.sockets.natt.clone();
        let tun = self.tun.clone();
        let mut ubuf = vec![0u8; 65536];
        let mut ibuf = vec![0u8; 65536];
        let mut nbuf = vec![0u8; 65536];
        let mut tbuf = vec![0u8; 65536];
        let mut tcp_open = true;
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        info!(
            listening = %listeners(&self.cfg),
            tun = %self.cfg.tun_name,
            tun_addr = %self.core.gateway_addr(),
            client_pool = %self.cfg.client_pool,
            address_space = ?self.cfg.address_space.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            tls_ekm = self.cfg.openvpn.tls_ekm,
            openvpn_wrapper = self.ovpn.wrap.name(),
            "gateway ready"
        );
        // Sites that initiate start now.
        self.core.handle_timeout(Instant::now());
        self.flush();
        loop {
            let deadline = self.core.poll_timeout();
            if deadline != armed {
                // Re-arm the one timer only when the earliest deadline changed.
                let when = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                timer.as_mut().reset(tokio::time::Instant::from_std(when));
                armed = deadline;
            }
            // Not biased: a ready source is picked at random, so none starves the others.
            tokio::select! {
                _ = stop_rx.changed() => break,
                r = recv(&ovpn, &mut ubuf) => {
                    if let Ok((n, from)) = r {
                        let now = Instant::now();
                        self.datagram(now, Listener::OpenVpnUdp, from, &ubuf[..n]);
                        drain_socket(&mut self, now, &ovpn, Listener::OpenVpnUdp, &mut ubuf);
                    }
                }
                r = recv(&natt, &mut nbuf) => {
                    if let Ok((n, from)) = r {
                        let now = Instant::now();
                        self.datagram(now, Listener::IkeNatT, from, &nbuf[..n]);
                        drain_socket(&mut self, now, &natt, Listener::IkeNatT, &mut nbuf);
                    }
                }
                r = recv(&ike, &mut ibuf) => {
                    if let Ok((n, from)) = r {
                        let now = Instant::now();
                        self.datagram(now, Listener::Ike, from, &ibuf[..n]);
                        drain_socket(&mut self, now, &ike, Listener::Ike, &mut ibuf);
                    }
                }
                r = tun.recv(&mut tbuf) => {
                    match r {
                        Ok(n) => {
                            let now = Instant::now();
                            self.tun_packet(now, &tbuf[..n]);
                            for _ in 0..BURST {
                                match tun.try_recv(&mut tbuf) {
                                    Ok(n) => self.tun_packet(now, &tbuf[..n]),
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
                        Some(ev) => {
                            self.tcp_event(ev);
                            for _ in 0..BURST {
                                match tcp_rx.try_recv() {
                                    Ok(ev) => self.tcp_event(ev),
                                    Err(_) => break,
                                }
                            }
                        }
                        None => tcp_open = false,
                    }
                }
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.core.handle_timeout(Instant::now());
                    self.flush();
                }
                _ = files_tick.tick() => {
                    self.check_crl();
                    self.write_status(Instant::now());
                }
                _ = stats_tick.tick() => {
                    let s = self.core.status(Instant::now());
                    if self.core.drops().total() > 0 || s.tunnels > 0 {
                        info!(sessions = s.tunnels, clients = s.clients.len(), leased = self.core.leased_count(), drops = %self.core.drops(), "status");
                    }
                    for c in &s.sites {
                        info!(connection = %c.name, state = %c.state, detail = %c.detail, rx_bytes = c.rx_bytes, tx_bytes = c.tx_bytes, "connection status");
                    }
                }
            }
        }
        self.core.shutdown(Instant::now());
        self.flush();
        // A status file left behind would show a stopped gateway as running for a while.
        let _ = std::fs::remove_file(crate::status::path(&self.config_dir));
        info!(drops = %self.core.drops(), "gateway stopped");
        Ok(())
    }

    fn datagram(&mut self, now: Instant, l: Listener, from: SocketAddr, bytes: &[u8]) {
        if let Some(p) = self.core.handle_datagram(now, l, from, bytes)
            && let Err(why) = write_tun(&self.tun, p)
        {
            self.core.count_drop(why);
        }
        self.flush();
    }

    fn tun_packet(&mut self, now: Instant, packet: &[u8]) {
        let Some((dest, bytes)) = self.core.handle_tun_packet(now, packet) else {
            return;
        };
        let r = send_to(&self.sockets, &self.streams, dest, bytes);
        if let Err(why) = r {
            self.core.count_drop(why);
        }
    }

    fn tcp_event(&mut self, ev: TcpEvent) {
        let now = Instant::now();
        match ev {
            TcpEvent::Opened { conn, remote, tx } => {
                self.streams.insert(conn, tx);
                self.core.handle_stream_open(conn, remote);
            }
            TcpEvent::Packet { conn, packet } => {
                if let Some(p) = self.core.handle_stream_packet(now, conn, &packet)
                    && let Err(why) = write_tun(&self.tun, p)
                {
                    self.core.count_drop(why);
                }
            }
            TcpEvent::Closed { conn, reason } => {
                if reason.starts_with("bad framing") {
                    self.core.count_drop(Drop::TcpFraming);
                }
                self.streams.remove(&conn);
                self.core.handle_stream_closed(now, conn, &reason);
            }
        }
        self.flush();
    }

    /// Sends what the core queued; logs nothing per packet (the core logs what matters).
    fn flush(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            if let Err(why) = send_to(&self.sockets, &self.streams, t.dest, &t.payload) {
                self.core.count_drop(why);
            }
        }
        while let Some(ev) = self.core.poll_event() {
            // The core logs what operators read (connects, refusals, revocations, roaming).
            debug!(event = ?ev, "core event");
        }
    }

    /// Reloads the CRL when `gatehouse-certs revoke` rewrote it: new sessions are checked
    /// against it and open ones with a revoked certificate end at once.
    fn check_crl(&mut self) {
        let stamp = FileStamp::of(&self.pki.crl);
        if stamp == self.crl_stamp {
            return;
        }
        let now = Instant::now();
        if self.cfg.ikev2.enabled {
            let conns = self.cfg.connections(&self.config_dir).unwrap_or_default();
            let peers = site_peers(&self.cfg, &conns);
            match crate::tls::ike_responder_config(&self.pki, &self.cfg, &peers) {
                Ok(c) => self.core.set_ikev2_config(c),
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "CRL changed but IKEv2 could not reload it; keeping the previous one");
                    return;
                }
            }
        }
        let crls = match core_config::read_crls(&self.pki) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "CRL changed but could not be read; keeping the previous one");
                return;
            }
        };
        match core_config::reload_openvpn(&self.pki, &self.cfg, &self.ovpn) {
            Ok(c) => {
                self.ovpn = c.clone();
                self.core.set_openvpn_config(c);
            }
            Err(e) => {
                // Keep the previous configuration; try again on the next tick.
                warn!(error = %format!("{e:#}"), "CRL changed but could not be loaded; keeping the previous one");
                return;
            }
        }
        match self.core.set_crls(now, &crls) {
            Ok(ended) => {
                self.crl_stamp = stamp;
                info!(crl = %self.pki.crl.display(), sessions_ended = ended, "CRL reloaded; open sessions and new connections are checked against it");
            }
            Err(e) => {
                warn!(error = %e, "CRL changed but could not be parsed; keeping the previous one")
            }
        }
        self.flush();
    }

    /// Rewrites `status.json` for `gatehoused status`.
    fn write_status(&self, now: Instant) {
        let s: CoreStatus = self.core.status(now);
        let status = GatewayStatus {
            updated: crate::status::now_secs(),
            clients: s.clients.len(),
            connections: s
                .sites
                .into_iter()
                .map(|c| ConnectionStatus {
                    name: c.name,
                    kind: c.kind,
                    remote: c.remote,
                    state: c.state,
                    detail: c.detail,
                    rx_bytes: c.rx_bytes,
                    tx_bytes: c.tx_bytes,
                })
                .collect(),
        };
        if let Err(e) = crate::status::write(&self.config_dir, &status) {
            debug!(error = %format!("{e:#}"), "cannot write the status file");
        }
    }
}

async fn recv(
    sock: &Option<Arc<UdpSocket>>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Hands the core up to [`BURST`] more datagrams that are already waiting on `sock` (one
/// clock reading per burst).
fn drain_socket(
    gw: &mut Gateway,
    now: Instant,
    sock: &Option<Arc<UdpSocket>>,
    l: Listener,
    buf: &mut [u8],
) {
    let Some(s) = sock else {
        return;
    };
    for _ in 0..BURST {
        match s.try_recv_from(buf) {
            Ok((n, from)) => gw.datagram(now, l, from, &buf[..n]),
            Err(_) => break,
        }
    }
}

/// Writes one packet to TUN without waiting: a full queue drops it.
fn write_tun(tun: &tun_rs::AsyncDevice, packet: &[u8]) -> Result<(), Drop> {
    match tun.try_send(packet) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Drop::TunFull),
        Err(e) => {
            debug!(error = %e, "TUN write failed");
            Err(Drop::TunFull)
        }
    }
}

/// Sends one datagram or TCP frame without waiting: a full buffer drops it.
fn send_to(
    sockets: &Sockets,
    streams: &std::collections::HashMap<StreamId, mpsc::Sender<Vec<u8>>>,
    dest: Dest,
    bytes: &[u8],
) -> Result<(), Drop> {
    match dest {
        Dest::Udp { from, to } => {
            let Some(s) = sockets.get(from) else {
                return Ok(());
            };
            match s.try_send_to(bytes, to) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Drop::SocketFull),
                Err(e) => {
                    debug!(error = %e, to = %to, "UDP send failed");
                    Ok(())
                }
            }
        }
        Dest::Stream(id) => match streams.get(&id) {
            // A full queue means the client is not reading; drop like UDP would.
            Some(tx) => tx.try_send(bytes.to_vec()).map_err(|_| Drop::StreamFull),
            None => Ok(()),
        },
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
