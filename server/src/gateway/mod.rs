//! The gateway's driver: I/O only. It owns the sockets (OpenVPN UDP and TCP, IKE 500 and
//! 4500), the TUN device, one timer, the CRL and status files, and feeds everything to the
//! engine's sans-IO [`GatewayCore`], which takes every protocol decision.
//!
//! The loop serves its sources fairly: `select!` picks a ready source at random and each
//! source gets at most [`BURST`] reads per turn, so a flood on one port cannot starve TUN,
//! IKE or the timers. Nothing awaits a full socket, TUN or TCP queue: the packet is dropped
//! and counted (as the network would drop it), and every other session keeps moving.
//!
//! Packets move in batches (`gatehouse-netio`): a UDP read takes up to 32 datagrams
//! (`recvmmsg`, UDP GRO), a TUN read a whole TSO segment train; the core's output for one
//! peer leaves in one GSO `sendmsg`, and decrypted packets reach TUN coalesced (GRO). Every
//! batch is written out before the loop waits again, so batching adds no delay at low load.

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
use gatehouse_netio::tun::{TunReader, TunWriter};
use gatehouse_netio::udp::{BatchSocket, RecvBatch, SendQueue};
use ipnet::Ipv4Net;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::GatewayConfig;
use crate::status::{ConnectionStatus, GatewayStatus};
use crate::tls::{FileStamp, PkiPaths};
use tcp::TcpEvent;

pub use core_config::{check_enabled, site_peers};

/// Reads (each a batch) one source may hand the core per turn before the others get theirs.
const BURST: usize = 8;
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

/// The sockets and their send queues.
struct Sockets {
    ovpn: Option<Arc<BatchSocket>>,
    ike: Option<Arc<BatchSocket>>,
    natt: Option<Arc<BatchSocket>>,
    queues: [SendQueue; 3],
}

impl Sockets {
    fn get(&mut self, l: Listener) -> Option<(&BatchSocket, &mut SendQueue)> {
        let (s, i) = match l {
            Listener::OpenVpnUdp => (self.ovpn.as_deref(), 0),
            Listener::Ike => (self.ike.as_deref(), 1),
            Listener::IkeNatT => (self.natt.as_deref(), 2),
        };
        Some((s?, &mut self.queues[i]))
    }

    /// Sends every queued datagram; returns how many a full socket dropped.
    fn flush(&mut self) -> usize {
        let mut dropped = 0;
        let socks = [&self.ovpn, &self.ike, &self.natt];
        for (s, q) in socks.into_iter().zip(self.queues.iter_mut()) {
            if let Some(s) = s {
                q.flush(s);
            }
            dropped += q.take_drops();
        }
        dropped
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
    /// Decrypted packets on their way to TUN.
    tun_out: TunWriter,
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
        let (tun, offload) = crate::tun::create(
            &cfg.tun_name,
            core.gateway_addr(),
            cfg.client_pool,
            cfg.tun_mtu,
        )?;
        if !offload {
            warn!(tun = %cfg.tun_name, "the kernel refused TUN offload (virtio-net headers); packets move one per read");
        }
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
                queues: Default::default(),
            },
            tcp,
            streams: std::collections::HashMap::new(),
            tun: Arc::new(tun),
            tun_out: TunWriter::new(),
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
        let mut ubatch = RecvBatch::new();
        let mut ibatch = RecvBatch::new();
        let mut nbatch = RecvBatch::new();
        let mut tun_in = TunReader::new(usize::from(self.cfg.tun_mtu));
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
        self.write_out().await;
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
                r = recv(&ovpn, &mut ubatch) => {
                    if r.is_ok() {
                        self.udp_batches(Listener::OpenVpnUdp, &ovpn, &mut ubatch).await;
                    }
                }
                r = recv(&natt, &mut nbatch) => {
                    if r.is_ok() {
                        self.udp_batches(Listener::IkeNatT, &natt, &mut nbatch).await;
                    }
                }
                r = recv(&ike, &mut ibatch) => {
                    if r.is_ok() {
                        self.udp_batches(Listener::Ike, &ike, &mut ibatch).await;
                    }
                }
                r = tun_in.recv(&tun) => {
                    match r {
                        Ok(()) => {
                            let now = Instant::now();
                            for p in tun_in.iter() {
                                self.tun_packet(now, p);
                            }
                            for _ in 0..BURST {
                                if tun_in.try_recv(&tun).is_err() {
                                    break;
                                }
                                for p in tun_in.iter() {
                                    self.tun_packet(now, p);
                                }
                            }
                        }
                        Err(e) => {
                            debug!(error = %e, "TUN read failed");
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                ev = tcp_rx.recv(), if tcp_open => {
                    match ev {
                        Some(ev) => {
                            self.tcp_event(ev).await;
                            for _ in 0..BURST * 8 {
                                match tcp_rx.try_recv() {
                                    Ok(ev) => self.tcp_event(ev).await,
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
            // Whatever the turn produced leaves now: batching never holds a packet back.
            self.write_out().await;
        }
        self.core.shutdown(Instant::now());
        self.flush();
        self.write_out().await;
        // A status file left behind would show a stopped gateway as running for a while.
        let _ = std::fs::remove_file(crate::status::path(&self.config_dir));
        info!(drops = %self.core.drops(), "gateway stopped");
        Ok(())
    }

    /// Hands the core the datagrams of `batch` and of up to [`BURST`] more reads waiting on
    /// `sock` (one clock reading per read).
    async fn udp_batches(
        &mut self,
        l: Listener,
        sock: &Option<Arc<BatchSocket>>,
        batch: &mut RecvBatch,
    ) {
        let Some(s) = sock else {
            return;
        };
        for i in 0..=BURST {
            if i > 0 && s.try_recv(batch).is_err() {
                break;
            }
            let now = Instant::now();
            for (from, d) in batch.iter() {
                if self.tun_out.is_full() {
                    self.tun_out.flush(&self.tun).await;
                }
                self.datagram(now, l, from, d);
            }
        }
    }

    fn datagram(&mut self, now: Instant, l: Listener, from: SocketAddr, bytes: &[u8]) {
        if let Some(p) = self.core.handle_datagram(now, l, from, bytes) {
            self.tun_out.push(p);
        }
        self.flush();
    }

    fn tun_packet(&mut self, now: Instant, packet: &[u8]) {
        let Some((dest, bytes)) = self.core.handle_tun_packet(now, packet) else {
            return;
        };
        let r = send_to(&mut self.sockets, &self.streams, dest, bytes);
        if let Err(why) = r {
            self.core.count_drop(why);
        }
    }

    /// Writes out the batches: decrypted packets to TUN, datagrams to the sockets; counts
    /// what a full socket or a TUN write error lost.
    async fn write_out(&mut self) {
        self.tun_out.flush(&self.tun).await;
        for _ in 0..self.tun_out.take_drops() {
            self.core.count_drop(Drop::TunFull);
        }
        for _ in 0..self.sockets.flush() {
            self.core.count_drop(Drop::SocketFull);
        }
    }

    async fn tcp_event(&mut self, ev: TcpEvent) {
        let now = Instant::now();
        match ev {
            TcpEvent::Opened { conn, remote, tx } => {
                self.streams.insert(conn, tx);
                self.core.handle_stream_open(conn, remote);
            }
            TcpEvent::Packets { conn, frames } => {
                let mut rest = &frames[..];
                while let [hi, lo, tail @ ..] = rest {
                    let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
                    let (packet, next) = tail.split_at(n);
                    rest = next;
                    if self.tun_out.is_full() {
                        self.tun_out.flush(&self.tun).await;
                    }
                    if let Some(p) = self.core.handle_stream_packet(now, conn, packet) {
                        self.tun_out.push(p);
                    }
                    self.flush();
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
            if let Err(why) = send_to(&mut self.sockets, &self.streams, t.dest, &t.payload) {
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

async fn recv(sock: &Option<Arc<BatchSocket>>, batch: &mut RecvBatch) -> std::io::Result<()> {
    match sock {
        Some(s) => s.recv(batch).await,
        None => std::future::pending().await,
    }
}

/// Queues one datagram (sent at the end of the batch) or sends one TCP frame without
/// waiting: a full buffer drops it.
fn send_to(
    sockets: &mut Sockets,
    streams: &std::collections::HashMap<StreamId, mpsc::Sender<Vec<u8>>>,
    dest: Dest,
    bytes: &[u8],
) -> Result<(), Drop> {
    match dest {
        Dest::Udp { from, to } => {
            if let Some((s, q)) = sockets.get(from) {
                q.push(s, to, bytes);
            }
            Ok(())
        }
        Dest::Stream(id) => match streams.get(&id) {
            // A full queue means the client is not reading; drop like UDP would.
            Some(tx) => tx.try_send(bytes.to_vec()).map_err(|_| Drop::StreamFull),
            None => Ok(()),
        },
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<BatchSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    BatchSocket::new(sock.into())
}
