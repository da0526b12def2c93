//! One worker of the gateway: a thread with its own runtime, its own sockets (one per port,
//! in the ports' reuseport groups), its own TUN queue and its own [`GatewayCore`] over the
//! tunnels steered to it. I/O only, as the single-worker driver was.
//!
//! The loop serves its sources fairly: each turn serves one ready source, the next turn
//! starting the search one source further along (wake.rs), and each source gets at most
//! [`BURST`] reads per turn, so a flood on one port cannot starve TUN,
//! IKE, the other workers' hand-overs or the timers. Nothing awaits a full socket, TUN, TCP
//! or hand-over queue: the packet is dropped and counted, and every other session keeps
//! moving. Whatever a turn produced is written out before the loop waits again, so batching
//! adds no delay at low load.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use gatehouse_engine::gateway::{
    CoreStatus, Dest, Drop, Drops, Event, Forward, GatewayCore, HandshakeJob, JobDone, Listener,
    StreamId,
};
use gatehouse_engine::ikev2::responder::ResponderConfig;
use gatehouse_engine::openvpn::server::ServerConfig;
use gatehouse_netio::tun::{TunReader, TunWriter};
use gatehouse_netio::udp::{BatchSocket, RecvBatch, SendQueue};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::capture::CaptureTap;
use super::coalesce::Coalescer;
use super::handshakes::Handshakes;
use super::tcp::{OutSender, Permit, Queued, TcpEvent, TcpTimeouts};
use super::wake::Wakes;

/// Reads (each a batch) one source may hand the core per turn before the others get theirs.
const BURST: usize = 8;
/// Depth of a worker's inbox; when full, hand-overs are dropped (and counted).
pub(super) const INBOX: usize = 8192;

/// New configuration after the CRL changed.
pub(super) struct Reload {
    pub ovpn: Arc<ServerConfig>,
    pub ike: Option<Arc<ResponderConfig>>,
    /// The QUIC listener's TLS with the new CRL (QUIC enabled).
    pub quic: Option<Arc<gatehouse_engine::quic::QuicConfig>>,
    pub crls: Vec<Vec<u8>>,
}

/// What a worker is told.
pub(super) enum Msg {
    /// A packet or order from another worker.
    Forward(Forward),
    /// A new connection on the OpenVPN TCP port, for this worker to serve.
    TcpConn {
        /// Its number.
        conn: u64,
        /// The client's address.
        remote: SocketAddr,
        /// The socket (registered with this worker's runtime on arrival).
        stream: std::net::TcpStream,
        /// Its place under the connection caps, held until the socket is closed.
        permit: Permit,
    },
    /// Reload the CRL and the configurations that carry it.
    Reload(Arc<Reload>),
    /// This worker's WireGuard socket, bound after start (the first WireGuard identity was
    /// issued while the gateway ran without WireGuard).
    WireGuardSocket(std::net::UdpSocket),
    /// A new WireGuard configuration (a client identity issued or revoked, a reload).
    WireGuard(Arc<Option<gatehouse_engine::wireguard::WireGuardConfig>>),
    /// Apply a reloaded configuration; answers the tunnels it ended, or why it cannot.
    Reconfigure(
        Box<gatehouse_engine::gateway::CoreConfig>,
        oneshot::Sender<Result<usize, String>>,
    ),
    /// Report the status now (admin API).
    Query(oneshot::Sender<Report>),
    /// End the sessions of a certificate name (admin API); answers how many ended.
    Disconnect {
        /// The certificate name.
        client: String,
        /// Where the count goes.
        reply: oneshot::Sender<usize>,
    },
    /// A packet the kernel routed into a connection's own interface (`interfaces.rs`).
    Interface {
        /// The connection.
        connection: Arc<str>,
        /// The IP packet.
        packet: Vec<u8>,
    },
    /// Shut down.
    Stop,
    /// Stop for a handoff to the next process: end what cannot move, send the last
    /// datagrams, then answer the core's exported tunnels and how many tunnels were ended.
    Handoff(oneshot::Sender<(gatehouse_engine::gateway::CoreHandoff, usize)>),
    /// Answer a copy of the core's movable tunnels for the standby (`ha.rs`), serving on.
    Snapshot(oneshot::Sender<gatehouse_engine::gateway::CoreHandoff>),
    /// Prefixes learned from sites by a routing daemon, for new clients (`learned.rs`).
    LearnedRoutes(Vec<ipnet::Ipv4Net>),
    /// Start (or stop starting) SAs for `initiate = true` connections: on when this node
    /// of an active-standby pair becomes the active one (`ha.rs`).
    SiteInitiation(bool),
    /// Take over tunnels the active gateway copied (`ha.rs`); answers how many were taken.
    Import(
        Box<gatehouse_engine::gateway::CoreHandoff>,
        oneshot::Sender<Result<usize, String>>,
    ),
}

/// What a worker publishes for the status file and the periodic log line.
#[derive(Default)]
pub(super) struct Published {
    pub status: Option<CoreStatus>,
    pub drops: Drops,
    pub leased: usize,
}

/// A worker's answer to [`Msg::Query`].
pub(crate) struct Report {
    pub status: CoreStatus,
    pub drops: Drops,
    pub leased: usize,
}

/// A worker's sockets before its runtime exists.
pub(super) struct WorkerSockets {
    pub ovpn: Option<std::net::UdpSocket>,
    pub ike: Option<std::net::UdpSocket>,
    pub natt: Option<std::net::UdpSocket>,
    pub wg: Option<std::net::UdpSocket>,
    pub quic: Option<std::net::UdpSocket>,
}

/// Everything one worker owns, built on the main thread and moved to its own.
pub(super) struct WorkerSetup {
    pub index: usize,
    pub core: GatewayCore,
    pub sockets: WorkerSockets,
    pub tun: tun_rs::SyncDevice,
    pub tun_mtu: usize,
    pub inbox: mpsc::Receiver<Msg>,
    pub peers: Arc<Vec<mpsc::Sender<Msg>>>,
    pub published: Arc<Mutex<Published>>,
    pub tcp_timeouts: TcpTimeouts,
    /// The handshake threads (None: handshakes run on the worker).
    pub handshakes: Option<Handshakes>,
    /// Packet captures.
    pub tap: Arc<CaptureTap>,
    /// The longest nap for receive coalescing (`coalesce_us`; zero: off).
    pub coalesce: Duration,
    /// The own interfaces of the connections this worker holds.
    pub interfaces: Vec<super::interfaces::NewInterface>,
    /// Site peers' configured source addresses (`local_address`).
    pub source_pins: HashMap<IpAddr, IpAddr>,
    /// Poked when the core's tunnels changed for the HA standby (see `ha.rs`).
    pub replicate: Arc<tokio::sync::Notify>,
}

/// A TCP connection as the worker holds it: dropping it closes the connection (once what is
/// queued is written).
struct Stream {
    /// Its send queue.
    tx: OutSender,
    /// The client.
    remote: SocketAddr,
}

type Streams = std::collections::HashMap<StreamId, Stream>;

/// The sockets and their send queues.
struct Sockets {
    ovpn: Option<Arc<BatchSocket>>,
    ike: Option<Arc<BatchSocket>>,
    natt: Option<Arc<BatchSocket>>,
    wg: Option<Arc<BatchSocket>>,
    quic: Option<Arc<BatchSocket>>,
    queues: [SendQueue; 5],
    /// TCP connections with packets queued this turn (written at its end).
    streams_queued: Vec<StreamId>,
}

impl Sockets {
    fn get(&mut self, l: Listener) -> Option<(&BatchSocket, &mut SendQueue)> {
        let (s, i) = match l {
            Listener::OpenVpnUdp => (self.ovpn.as_deref(), 0),
            Listener::Ike => (self.ike.as_deref(), 1),
            Listener::IkeNatT => (self.natt.as_deref(), 2),
            Listener::WireGuard => (self.wg.as_deref(), 3),
            Listener::Quic => (self.quic.as_deref(), 4),
        };
        Some((s?, &mut self.queues[i]))
    }

    /// Datagrams to these site peers leave the IKE and NAT-T sockets from the given address
    /// until the peer is heard from (see `BatchSocket::set_source_pins`).
    fn pin_sources(&self, pins: HashMap<IpAddr, IpAddr>) {
        for s in [&self.ike, &self.natt].into_iter().flatten() {
            s.set_source_pins(pins.clone());
        }
    }

    /// Sends every queued datagram; returns how many a full socket dropped.
    fn flush(&mut self) -> usize {
        let mut dropped = 0;
        let socks = [&self.ovpn, &self.ike, &self.natt, &self.wg, &self.quic];
        for (s, q) in socks.into_iter().zip(self.queues.iter_mut()) {
            if let Some(s) = s {
                q.flush(s);
            }
            dropped += q.take_drops();
        }
        dropped
    }
}

struct Worker {
    index: usize,
    core: GatewayCore,
    sockets: Sockets,
    /// TCP connections.
    streams: Streams,
    tun: Arc<tun_rs::AsyncDevice>,
    /// Decrypted packets on their way to TUN.
    tun_out: TunWriter,
    /// The own interfaces of this worker's connections, by connection name.
    ifaces: super::interfaces::Interfaces,
    peers: Arc<Vec<mpsc::Sender<Msg>>>,
    published: Arc<Mutex<Published>>,
    /// Events of this worker's TCP connections.
    tcp_tx: mpsc::Sender<TcpEvent>,
    tcp_timeouts: TcpTimeouts,
    /// Where handshake jobs go, and where their results come back.
    handshakes: Option<Handshakes>,
    done_tx: mpsc::UnboundedSender<JobDone>,
    tap: Arc<CaptureTap>,
    /// Receive coalescing under load.
    coalesce: Coalescer,
    /// Where the exported tunnels go when the worker stops for a handoff.
    handoff: Option<oneshot::Sender<(gatehouse_engine::gateway::CoreHandoff, usize)>>,
    /// Poked when [`GatewayCore::state_changes`] moved since `replicated`.
    replicate: Arc<tokio::sync::Notify>,
    replicated: u64,
}

/// Runs a worker on the calling thread until it is told to stop.
pub(super) fn run(setup: WorkerSetup) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let wrap = |s: Option<std::net::UdpSocket>| -> std::io::Result<Option<Arc<BatchSocket>>> {
            s.map(|s| BatchSocket::new(s).map(Arc::new)).transpose()
        };
        let (tcp_tx, tcp_rx) = mpsc::channel::<TcpEvent>(4096);
        // Unbounded, but never longer than the jobs handed out: one result per job, and
        // jobs only come from sessions past the cookie check and the handshake caps.
        let (done_tx, done_rx) = mpsc::unbounded_channel::<JobDone>();
        let WorkerSetup {
            index,
            core,
            sockets,
            tun,
            tun_mtu,
            inbox,
            peers,
            published,
            tcp_timeouts,
            handshakes,
            tap,
            coalesce,
            interfaces,
            source_pins,
            replicate,
        } = setup;
        if !coalesce.is_zero() {
            super::coalesce::fine_timer_slack();
        }
        let ifaces = match peers.get(index) {
            Some(me) => super::interfaces::start(interfaces, me.clone(), tun_mtu),
            None => Default::default(),
        };
        let worker = Worker {
            index,
            core,
            sockets: Sockets {
                ovpn: wrap(sockets.ovpn)?,
                ike: wrap(sockets.ike)?,
                natt: wrap(sockets.natt)?,
                wg: wrap(sockets.wg)?,
                quic: wrap(sockets.quic)?,
                queues: Default::default(),
                streams_queued: Vec::new(),
            },
            streams: std::collections::HashMap::new(),
            tun: Arc::new(tun_rs::AsyncDevice::new(tun)?),
            tun_out: TunWriter::new(),
            ifaces,
            peers,
            published,
            tcp_tx,
            tcp_timeouts,
            handshakes,
            done_tx,
            tap,
            coalesce: Coalescer::new(coalesce),
            handoff: None,
            replicate,
            replicated: 0,
        };
        worker.sockets.pin_sources(source_pins);
        worker.serve(inbox, tcp_rx, done_rx, tun_mtu).await;
        Ok(())
    })
}

impl Worker {
    async fn serve(
        mut self,
        mut inbox: mpsc::Receiver<Msg>,
        mut tcp_rx: mpsc::Receiver<TcpEvent>,
        mut done_rx: mpsc::UnboundedReceiver<JobDone>,
        tun_mtu: usize,
    ) {
        let mut publish_tick = tokio::time::interval(Duration::from_secs(2));
        let mut stats_tick = tokio::time::interval(Duration::from_secs(60));
        publish_tick.tick().await;
        stats_tick.tick().await;
        // (The gateway-wide status line comes from the control thread.)
        let ovpn = self.sockets.ovpn.clone();
        let ike = self.sockets.ike.clone();
        let natt = self.sockets.natt.clone();
        let mut wg = self.sockets.wg.clone();
        let quic = self.sockets.quic.clone();
        let tun = self.tun.clone();
        let mut qbatch = RecvBatch::new();
        let mut ubatch = RecvBatch::new();
        let mut ibatch = RecvBatch::new();
        let mut nbatch = RecvBatch::new();
        let mut wbatch = RecvBatch::new();
        let mut tun_in = TunReader::new(tun_mtu);
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut wakes = Wakes::<SOURCES>::new();
        // Sites that initiate start now.
        self.core.handle_timeout(Instant::now());
        self.flush();
        self.publish();
        self.write_out().await;
        loop {
            if wg.is_none() && self.sockets.wg.is_some() {
                wg = self.sockets.wg.clone();
                wakes.mark(WG);
            }
            // Re-arm the one timer only when the earliest deadline moved earlier: a busy
            // tunnel's keepalive deadline moves later with every packet, and re-arming takes
            // the timer driver's lock. A timer that fires early finds nothing due (the core
            // only acts on what is due) and is armed again for the later deadline.
            if let Some(when) = self.core.poll_timeout()
                && armed.is_none_or(|a| when < a)
            {
                timer.as_mut().reset(tokio::time::Instant::from_std(when));
                armed = Some(when);
                wakes.mark(TIMER);
            }
            // At a low rate a turn's first read asks for two datagrams (one back: the socket
            // is drained; two: the rest follows at once); under load for a whole batch.
            let first = if self.coalesce.low_rate() {
                2
            } else {
                usize::MAX
            };
            // Each source is polled with a waker of its own; a wait polls those that woke
            // (wake.rs), a ready one per turn, starting one further along each time.
            let woke = std::future::poll_fn(|cx| {
                wakes.poll(cx, |i, cx| match i {
                    INBOX_SRC => inbox.poll_recv(cx).map(Woke::Inbox),
                    DONE => done_rx.poll_recv(cx).map(Woke::Done),
                    TCP => tcp_rx.poll_recv(cx).map(Woke::Tcp),
                    OVPN => read_udp(&ovpn, &mut ubatch, first, cx, Listener::OpenVpnUdp),
                    NATT => read_udp(&natt, &mut nbatch, first, cx, Listener::IkeNatT),
                    IKE => read_udp(&ike, &mut ibatch, first, cx, Listener::Ike),
                    WG => read_udp(&wg, &mut wbatch, first, cx, Listener::WireGuard),
                    QUIC => read_udp(&quic, &mut qbatch, first, cx, Listener::Quic),
                    TUN => read_tun(&tun, &mut tun_in, cx),
                    TIMER if armed.is_some() => timer.as_mut().poll(cx).map(|()| Woke::Timer),
                    PUBLISH => publish_tick.poll_tick(cx).map(|_| Woke::Publish),
                    STATS => stats_tick.poll_tick(cx).map(|_| Woke::Stats),
                    _ => Poll::Pending,
                })
            })
            .await;
            match woke {
                Woke::Inbox(msg) => {
                    let Some(msg) = msg else { break };
                    if !self.message(msg).await {
                        break;
                    }
                    for _ in 0..BURST * 32 {
                        match inbox.try_recv() {
                            Ok(msg) => {
                                if !self.message(msg).await {
                                    self.finish().await;
                                    return;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Woke::Done(done) => {
                    if let Some(done) = done {
                        let now = Instant::now();
                        self.core.handle_job_done(now, done);
                        for _ in 0..BURST {
                            match done_rx.try_recv() {
                                Ok(done) => self.core.handle_job_done(now, done),
                                Err(_) => break,
                            }
                        }
                        self.flush();
                    }
                }
                Woke::Tcp(ev) => {
                    if let Some(ev) = ev {
                        self.tcp_event(ev).await;
                        for _ in 0..BURST * 8 {
                            match tcp_rx.try_recv() {
                                Ok(ev) => self.tcp_event(ev).await,
                                Err(_) => break,
                            }
                        }
                    }
                }
                Woke::Udp(listener) => {
                    let (sock, batch) = match listener {
                        Listener::OpenVpnUdp => (&ovpn, &mut ubatch),
                        Listener::IkeNatT => (&natt, &mut nbatch),
                        Listener::Ike => (&ike, &mut ibatch),
                        Listener::WireGuard => (&wg, &mut wbatch),
                        _ => (&quic, &mut qbatch),
                    };
                    if let Some(sock) = sock {
                        self.udp_batches(listener, sock, batch).await;
                    }
                }
                Woke::UdpFailed => {}
                Woke::Tun(r) => match r {
                    Ok(()) => {
                        let now = Instant::now();
                        for p in tun_in.iter() {
                            self.coalesce.count_tun(1);
                            self.tun_packet(now, p);
                        }
                        // Under load, read on while TUN has packets (one batch out);
                        // at a low rate the packet's answer leaves first, and the
                        // next turn's read finds what came meanwhile (coalesce.rs).
                        let more = if self.coalesce.low_rate() { 0 } else { BURST };
                        for _ in 0..more {
                            if tun_in.try_recv(&tun).is_err() {
                                break;
                            }
                            for p in tun_in.iter() {
                                self.coalesce.count_tun(1);
                                self.tun_packet(now, p);
                            }
                        }
                        // QUIC may hold datagrams back (pacing) and queue ACKs.
                        self.flush();
                    }
                    Err(e) => {
                        debug!(error = %e, "TUN read failed");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                },
                Woke::Timer => {
                    armed = None;
                    self.core.handle_timeout(Instant::now());
                    self.flush();
                }
                Woke::Publish => self.publish(),
                Woke::Stats => {
                    let s = self.core.status(Instant::now());
                    for c in &s.sites {
                        info!(connection = %c.name, state = %c.state, detail = %c.detail, rx_bytes = c.rx_bytes, tx_bytes = c.tx_bytes, "connection status");
                    }
                }
            }
            self.write_out().await;
            if let Some(nap) = self.coalesce.turn_ended(Instant::now()) {
                // Packets keep coming but this turn found few: let a batch gather (the
                // sockets and TUN queue them meanwhile). Only under load (coalesce.rs).
                std::thread::sleep(nap);
            }
        }
        self.finish().await;
    }

    /// Stops: a shutdown (clients told to reconnect), or a handoff.
    async fn finish(mut self) {
        let Some(reply) = self.handoff.take() else {
            self.shutdown().await;
            return;
        };
        let now = Instant::now();
        let ended = self.core.prepare_handoff(now);
        self.flush();
        self.write_out().await;
        self.publish();
        if !self.streams.is_empty() {
            // Let the connections' writers send the RESTARTs and FINs.
            self.streams.clear();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The core is consumed: nothing on this worker seals with its keys again.
        let state = self.core.into_handoff(now);
        debug!(worker = self.index, ended, "worker stopped for a handoff");
        let _ = reply.send((state, ended));
    }

    async fn shutdown(&mut self) {
        self.core.shutdown(Instant::now());
        self.flush();
        self.write_out().await;
        self.publish();
        debug!(worker = self.index, drops = %self.core.drops(), "worker stopped");
    }

    /// Handles one message; false: stop.
    async fn message(&mut self, msg: Msg) -> bool {
        let now = Instant::now();
        match msg {
            Msg::Stop => return false,
            Msg::Handoff(reply) => {
                self.handoff = Some(reply);
                return false;
            }
            Msg::Forward(Forward::Datagram {
                listener,
                remote,
                bytes,
                ..
            }) => {
                if self.tun_out.is_full() {
                    self.tun_out.flush(&self.tun).await;
                }
                if let Some(p) = self
                    .core
                    .handle_forwarded_datagram(now, listener, remote, &bytes)
                {
                    if self.tap.is_on() {
                        self.tap.offer(p);
                    }
                    self.tun_out.push(p);
                }
                self.more_tun_packets().await;
                self.flush();
            }
            Msg::Forward(Forward::Tun { packet, .. }) => {
                if let Some((dest, bytes)) = self.core.handle_forwarded_tun(now, &packet)
                    && let Err(why) = send_to(&mut self.sockets, &self.streams, dest, bytes)
                {
                    self.core.count_drop(why);
                }
                self.flush();
            }
            Msg::Interface { connection, packet } => {
                if let Some((dest, bytes)) =
                    self.core.handle_interface_packet(now, &connection, &packet)
                    && let Err(why) = send_to(&mut self.sockets, &self.streams, dest, bytes)
                {
                    self.core.count_drop(why);
                }
                self.flush();
            }
            Msg::Forward(Forward::EndLogin { tunnel, client, .. }) => {
                self.core.end_login(now, tunnel, &client);
                self.flush();
            }
            Msg::TcpConn {
                conn,
                remote,
                stream,
                permit,
            } => match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => super::tcp::spawn_conn(
                    s,
                    conn,
                    remote,
                    self.tcp_tx.clone(),
                    permit,
                    self.tcp_timeouts,
                ),
                Err(e) => warn!(error = %e, "cannot serve a TCP connection"),
            },
            Msg::Reconfigure(cfg, reply) => {
                let pins = super::core_config::source_pins(&cfg);
                let r = self.core.reconfigure(now, *cfg).map_err(|e| e.to_string());
                if r.is_ok() {
                    self.sockets.pin_sources(pins);
                }
                self.flush();
                let _ = reply.send(r);
            }
            Msg::Query(reply) => {
                let _ = reply.send(Report {
                    status: self.core.status(now),
                    drops: self.core.drops().clone(),
                    leased: self.core.leased_count(),
                });
            }
            Msg::Snapshot(reply) => {
                let _ = reply.send(self.core.snapshot_for_standby(now));
            }
            Msg::LearnedRoutes(routes) => self.core.set_learned_routes(routes),
            Msg::SiteInitiation(on) => {
                self.core.set_site_initiation(on);
                self.flush();
            }
            Msg::Import(h, reply) => {
                let r = self.core.import_handoff(now, *h);
                self.flush();
                self.publish();
                let _ = reply.send(r);
            }
            Msg::Disconnect { client, reply } => {
                let n = self.core.disconnect(now, &client);
                self.flush();
                let _ = reply.send(n);
            }
            Msg::WireGuardSocket(s) => match BatchSocket::new(s) {
                Ok(b) => self.sockets.wg = Some(Arc::new(b)),
                Err(e) => {
                    warn!(worker = self.index, error = %e, "cannot serve the WireGuard socket")
                }
            },
            Msg::WireGuard(cfg) => {
                let ended = self.core.set_wireguard(now, (*cfg).clone());
                if ended > 0 {
                    info!(
                        worker = self.index,
                        tunnels_ended = ended,
                        "WireGuard peers reloaded"
                    );
                }
                self.flush();
            }
            Msg::Reload(r) => {
                if let Some(ike) = &r.ike {
                    self.core.set_ikev2_config(ike.clone());
                }
                self.core.set_openvpn_config(r.ovpn.clone());
                if let Some(q) = &r.quic {
                    self.core.set_quic_config(q.clone());
                }
                match self.core.set_crls(now, &r.crls) {
                    Ok(ended) if ended > 0 => {
                        info!(worker = self.index, sessions_ended = ended, "CRL reloaded")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "CRL could not be parsed; keeping the previous one")
                    }
                }
                self.flush();
            }
        }
        true
    }

    /// Hands the core the datagrams of `batch` and of up to [`BURST`] more reads waiting on
    /// `sock` (one clock reading per read).
    async fn udp_batches(&mut self, l: Listener, s: &BatchSocket, batch: &mut RecvBatch) {
        for i in 0..=BURST {
            // A batch that did not fill every buffer drained the socket: the next turn reads
            // again after this one's output is out, which keeps that read off a lone
            // packet's path.
            if i > 0 && (!batch.is_full() || s.try_recv(batch).is_err()) {
                break;
            }
            let now = Instant::now();
            for (from, d) in batch.iter() {
                self.coalesce.count(1);
                if self.tun_out.is_full() {
                    self.tun_out.flush(&self.tun).await;
                }
                if let Some(p) = self.core.handle_datagram(now, l, from, d) {
                    if self.tap.is_on() {
                        self.tap.offer(p);
                    }
                    self.tun_out.push(p);
                }
                if l == Listener::Quic {
                    self.more_tun_packets().await;
                }
                self.flush();
            }
        }
    }

    /// The other inner packets of the last QUIC datagram (one carries several DATAGRAM
    /// frames when the client packs them).
    async fn more_tun_packets(&mut self) {
        while let Some(p) = self.core.poll_tun_packet() {
            if self.tun_out.is_full() {
                self.tun_out.flush(&self.tun).await;
            }
            if self.tap.is_on() {
                self.tap.offer(&p);
            }
            self.tun_out.push(&p);
        }
    }

    fn tun_packet(&mut self, now: Instant, packet: &[u8]) {
        if self.tap.is_on() {
            self.tap.offer(packet);
        }
        let Some((dest, bytes)) = self.core.handle_tun_packet(now, packet) else {
            return;
        };
        let r = send_to(&mut self.sockets, &self.streams, dest, bytes);
        if let Err(why) = r {
            self.core.count_drop(why);
        }
    }

    /// Writes out the batches: decrypted packets to TUN, datagrams to the sockets, packets
    /// for other workers to their inboxes; counts what a full queue or a write error lost.
    async fn write_out(&mut self) {
        self.forward();
        self.tun_out.flush(&self.tun).await;
        for _ in 0..self.tun_out.take_drops() {
            self.core.count_drop(Drop::TunFull);
        }
        for _ in 0..super::interfaces::write(&mut self.core, &self.ifaces) {
            self.core.count_drop(Drop::TunFull);
        }
        for _ in 0..self.sockets.flush() {
            self.core.count_drop(Drop::SocketFull);
        }
        for id in self.sockets.streams_queued.drain(..) {
            if let Some(s) = self.streams.get(&id) {
                s.tx.send_now();
            }
        }
    }

    /// Hands other workers what the core found to be theirs.
    fn forward(&mut self) {
        while let Some(f) = self.core.poll_forward() {
            let Some(tx) = self.peers.get(f.worker()) else {
                continue;
            };
            if tx.try_send(Msg::Forward(f)).is_err() {
                self.core.count_drop(Drop::SocketFull);
            }
        }
    }

    async fn tcp_event(&mut self, ev: TcpEvent) {
        let now = Instant::now();
        match ev {
            TcpEvent::Opened { conn, remote, tx } => {
                self.streams.insert(conn, Stream { tx, remote });
                self.core.handle_stream_open(conn, remote);
            }
            TcpEvent::Packets { conn, frames } => {
                if !self.streams.contains_key(&conn) {
                    // Closed by the gateway; the reader had these on the way.
                    return;
                }
                let mut rest = &frames[..];
                while let [hi, lo, tail @ ..] = rest {
                    let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
                    let (packet, next) = tail.split_at(n);
                    rest = next;
                    self.coalesce.count(1);
                    if self.tun_out.is_full() {
                        self.tun_out.flush(&self.tun).await;
                    }
                    if let Some(p) = self.core.handle_stream_packet(now, conn, packet) {
                        if self.tap.is_on() {
                            self.tap.offer(p);
                        }
                        self.tun_out.push(p);
                    }
                    self.flush();
                }
            }
            TcpEvent::HandshakeDeadline { conn } => {
                let Some(remote) = self.streams.get(&conn).map(|s| s.remote) else {
                    return;
                };
                if !self.core.stream_established(conn) {
                    self.core.count_drop(Drop::TcpHandshake);
                    let n = self.core.drops().get(Drop::TcpHandshake);
                    // The 1st, 2nd, 4th, 8th...: visible, bounded under a flood.
                    if n.is_power_of_two() {
                        info!(remote = %remote, timeout = ?self.tcp_timeouts.handshake, closed = n, worker = self.index, "TCP connection closed: no OpenVPN handshake in time (`openvpn.tcp_handshake_timeout`)");
                    }
                    self.close_stream(now, conn, "TCP handshake timeout");
                }
            }
            TcpEvent::Closed { conn, ended } => {
                // A connection the gateway closed was already reported to the core.
                let Some(s) = self.streams.remove(&conn) else {
                    return;
                };
                if let Some(why) = ended.drop_reason() {
                    self.core.count_drop(why);
                    if why == Drop::TcpIdle && self.core.drops().get(why).is_power_of_two() {
                        info!(remote = %s.remote, reason = %ended.reason(), closed = self.core.drops().get(why), worker = self.index, "TCP connection closed");
                    }
                }
                self.core.handle_stream_closed(now, conn, &ended.reason());
            }
        }
        self.flush();
    }

    /// Closes TCP connection `conn` from the gateway's side: its writer sends what is queued,
    /// then the FIN, and the socket is closed; the core forgets the connection.
    fn close_stream(&mut self, now: Instant, conn: StreamId, reason: &str) {
        if self.streams.remove(&conn).is_some() {
            debug!(worker = self.index, conn, reason, "closing TCP connection");
        }
        self.core.handle_stream_closed(now, conn, reason);
    }

    /// Sends what the core queued; logs nothing per packet (the core logs what matters).
    fn flush(&mut self) {
        loop {
            while let Some(t) = self.core.poll_transmit() {
                if let Err(why) = send_to(&mut self.sockets, &self.streams, t.dest, &t.payload) {
                    self.core.count_drop(why);
                }
            }
            if let Some(job) = self.core.poll_job() {
                self.hand_out(job);
                continue;
            }
            let Some(ev) = self.core.poll_event() else {
                break;
            };
            // The core logs what operators read (connects, refusals, revocations, roaming).
            debug!(worker = self.index, event = ?ev, "core event");
            if let Event::StreamEnded { stream } = ev {
                // Its last packets (AUTH_FAILED, RESTART...) are queued already: every
                // transmit before the event is out.
                self.close_stream(Instant::now(), stream, "session ended");
            }
        }
        self.poke_replication();
    }

    /// Wakes the HA replication task when the tunnels changed since it last heard (one
    /// comparison per flush; without HA nobody waits on it).
    fn poke_replication(&mut self) {
        let changes = self.core.state_changes();
        if changes != self.replicated {
            self.replicated = changes;
            self.replicate.notify_one();
        }
    }

    /// Sends a handshake job to the handshake threads, or runs it here when there are none.
    fn hand_out(&mut self, job: HandshakeJob) {
        let job = match &self.handshakes {
            Some(h) => match h.send(job, &self.done_tx) {
                Ok(()) => return,
                Err(job) => job,
            },
            None => job,
        };
        self.core.handle_job_done(Instant::now(), job.run());
    }

    /// Publishes this worker's status for the status file.
    fn publish(&self) {
        let status = self.core.status(Instant::now());
        let mut p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        p.status = Some(status);
        p.drops = self.core.drops().clone();
        p.leased = self.core.leased_count();
    }
}

/// Waits for and reads up to `max` datagrams (a whole batch after that: `try_recv`).
/// The worker's sources, by their place in [`Wakes`].
const INBOX_SRC: usize = 0;
const DONE: usize = 1;
const TCP: usize = 2;
const OVPN: usize = 3;
const NATT: usize = 4;
const IKE: usize = 5;
const WG: usize = 6;
const QUIC: usize = 7;
const TUN: usize = 8;
const TIMER: usize = 9;
const PUBLISH: usize = 10;
const STATS: usize = 11;
const SOURCES: usize = 12;

/// The source that was ready, with what it gave.
enum Woke {
    Inbox(Option<Msg>),
    Done(Option<JobDone>),
    Tcp(Option<TcpEvent>),
    /// A batch was read from this listener's socket.
    Udp(Listener),
    /// A socket's read failed (other than finding nothing).
    UdpFailed,
    /// A TUN read: a packet or batch in the reader, or why not.
    Tun(std::io::Result<()>),
    Timer,
    Publish,
    Stats,
}

/// Ready when a read from the socket (if there is one) brought datagrams (or failed): the
/// read happens here, so that readiness that turns out stale (the read finds nothing and
/// clears it) does not take a turn; the socket then holds its waker.
fn read_udp(
    sock: &Option<Arc<BatchSocket>>,
    batch: &mut RecvBatch,
    max: usize,
    cx: &mut Context<'_>,
    listener: Listener,
) -> Poll<Woke> {
    let Some(s) = sock else {
        return Poll::Pending;
    };
    loop {
        match s.poll_readable(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Woke::UdpFailed),
            Poll::Ready(Ok(())) => match s.try_recv_up_to(batch, max) {
                Ok(()) => return Poll::Ready(Woke::Udp(listener)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return Poll::Ready(Woke::UdpFailed),
            },
        }
    }
}

/// [`read_udp`] for the TUN queue.
fn read_tun(tun: &tun_rs::AsyncDevice, reader: &mut TunReader, cx: &mut Context<'_>) -> Poll<Woke> {
    loop {
        match tun.poll_readable(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Woke::Tun(Err(e))),
            Poll::Ready(Ok(())) => match reader.try_recv(tun) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(Woke::Tun(r)),
            },
        }
    }
}

/// Queues one datagram (sent at the end of the batch) or sends one TCP frame without
/// waiting: a full buffer drops it.
fn send_to(sockets: &mut Sockets, streams: &Streams, dest: Dest, bytes: &[u8]) -> Result<(), Drop> {
    match dest {
        Dest::Udp { from, to } => {
            if let Some((s, q)) = sockets.get(from) {
                q.push(s, to, bytes);
            }
            Ok(())
        }
        Dest::Stream(id) => match streams.get(&id).map(|s| s.tx.push(bytes)) {
            Some(Queued::First) => {
                sockets.streams_queued.push(id);
                Ok(())
            }
            // A full queue means the client is not reading; drop like UDP would.
            Some(Queued::Dropped) => Err(Drop::StreamFull),
            Some(Queued::Behind) | None => Ok(()),
        },
    }
}

/// The peer address a TCP connection's events are routed by.
pub(super) fn conn_worker(remote: SocketAddr, workers: usize) -> usize {
    gatehouse_engine::gateway::worker_of_ip(remote.ip(), workers)
}
