//! The simulation: one [`GatewayCore`], many clients (OpenVPN over UDP and TCP, IKEv2
//! road warriors), a simulated network between them that loses, delays, reorders and
//! duplicates datagrams (TCP streams are reliable and ordered), and a virtual clock. Every
//! random choice comes from the seed; a failure names it, so it replays exactly (ring's own
//! key generation aside, which changes no decision the core makes).
//!
//! The driver loop is the one `gatehoused` runs: deliver what is due, collect
//! `poll_transmit` / `poll_event`, sleep until the earliest of `poll_timeout` and the next
//! arrival, call `handle_timeout`. Every inner packet and event is checked against the
//! [`Model`] as it happens.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::cores::Cores;
use super::model::{Expect, Kind, Model, ModelTunnel, ipv4, tag_of};
use super::pki::{self, GATEWAY_IP, WALL_CLOCK_SECS, client_name};
use crate::entropy::SeededEntropy;
use crate::esp::{EspInbound, EspOutbound};
use crate::gateway::{
    CoreConfig, Dest, Drop, Drops, EntropyFactory, Event, Listener, Protocol, StreamId, TunnelId,
};
use crate::ikev2::initiator::{IkeInitiator, InitiatorEvent};
use crate::openvpn::DataOutcome;
use crate::openvpn::client::{ClientEvent, ClientSession};
use crate::wire::ikev2::{Classified, strip_non_esp_marker};
use crate::wire::openvpn::Opcode;

/// The client pool.
pub(super) const POOL: &str = "172.16.200.0/24";
/// The address space behind the gateway.
pub(super) const LAN: &str = "10.1.0.0/16";
/// The IPv6 network behind the gateway (with `Options::pool_v6`).
pub(super) const LAN_V6: &str = "fd00:1::/64";
/// A host on the LAN.
pub(super) const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 7);

/// How the network treats datagrams (both directions). Percentages are per datagram.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub latency: Duration,
    pub loss_percent: u32,
    /// Datagrams held back by a random extra delay of up to `reorder_delay`.
    pub reorder_percent: u32,
    pub reorder_delay: Duration,
    /// Datagrams delivered twice (the copy with its own random extra delay).
    pub dup_percent: u32,
}

impl Link {
    pub fn lossy() -> Self {
        Link {
            latency: Duration::from_millis(20),
            loss_percent: 5,
            reorder_percent: 10,
            reorder_delay: Duration::from_millis(40),
            dup_percent: 2,
        }
    }

    pub fn clean() -> Self {
        Link {
            latency: Duration::from_millis(20),
            loss_percent: 0,
            reorder_percent: 0,
            reorder_delay: Duration::from_millis(1),
            dup_percent: 0,
        }
    }
}

/// Something in flight.
#[derive(Debug)]
enum Wire {
    Core {
        listener: Listener,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    CoreStream {
        stream: StreamId,
        bytes: Vec<u8>,
    },
    Client {
        to: SocketAddr,
        from: Listener,
        bytes: Vec<u8>,
    },
    ClientStream {
        stream: StreamId,
        bytes: Vec<u8>,
    },
}

pub(super) struct OvpnClient {
    pub session: ClientSession,
    /// TCP: the connection.
    pub stream: Option<StreamId>,
    pub events: Vec<ClientEvent>,
    pub data_errors: u32,
}

pub(super) struct IkeClient {
    pub init: IkeInitiator,
    /// Inbound SAs (by their SPI), newest last.
    pub inbound: Vec<EspInbound>,
    pub outbound: Option<EspOutbound>,
    pub events: Vec<String>,
    pub closed: Option<String>,
    /// The virtual address the gateway assigned (CP).
    pub address: Option<Ipv4Addr>,
}

pub(super) enum Proto {
    Ovpn(Box<OvpnClient>),
    Ike(Box<IkeClient>),
}

pub(super) struct Client {
    /// Certificate index.
    pub cert: usize,
    pub name: String,
    pub proto: Proto,
    /// Where it sends from: OpenVPN (UDP and TCP), IKE on port 500.
    pub addr: SocketAddr,
    /// IKE: where it sends UDP 4500 from.
    pub natt_addr: SocketAddr,
    /// Where the core must believe it is (what it sends to), updated by accepted roams.
    pub core_remote: SocketAddr,
    /// Its virtual address, as the client learnt it.
    pub address: Option<Ipv4Addr>,
    /// Its tunnel in the core, once Connected.
    pub tunnel: Option<TunnelId>,
    /// Removed from the simulation (its packets go nowhere).
    pub gone: bool,
    /// Addresses it sent from before (a late packet from one may still arrive).
    pub past: Vec<SocketAddr>,
    /// Tags of inner packets it received.
    pub rx: Vec<u64>,
}

impl Client {
    pub fn protocol(&self) -> Protocol {
        match &self.proto {
            Proto::Ovpn(o) if o.stream.is_some() => Protocol::OpenVpnTcp,
            Proto::Ovpn(_) => Protocol::OpenVpnUdp,
            Proto::Ike(_) => Protocol::Ikev2,
        }
    }

    /// The client thinks its tunnel is up.
    pub fn is_up(&self) -> bool {
        match &self.proto {
            Proto::Ovpn(o) => o.session.is_connected(),
            Proto::Ike(i) => i.init.is_established() && i.outbound.is_some(),
        }
    }

    pub fn ovpn(&mut self) -> &mut OvpnClient {
        match &mut self.proto {
            Proto::Ovpn(o) => o,
            Proto::Ike(_) => panic!("{} is not an OpenVPN client", self.name),
        }
    }

    pub fn ike(&mut self) -> &mut IkeClient {
        match &mut self.proto {
            Proto::Ike(i) => i,
            Proto::Ovpn(_) => panic!("{} is not an IKEv2 client", self.name),
        }
    }

    /// The OpenVPN client's pushed peer-id.
    pub fn peer_id(&self) -> Option<u32> {
        match &self.proto {
            Proto::Ovpn(o) => o.session.push_reply().map(|p| p.peer_id),
            Proto::Ike(_) => None,
        }
    }
}

/// Options of a simulation.
#[derive(Debug, Clone)]
pub(super) struct Options {
    pub link: Link,
    pub cookie_threshold: usize,
    /// Half-open IKE SAs per worker, and per source address.
    pub max_half_open: usize,
    pub max_half_open_per_ip: usize,
    /// OpenVPN keepalive pushed to clients (ping, ping-restart).
    pub ping: Option<(Duration, Duration)>,
    /// The client pool.
    pub pool: Ipv4Net,
    /// Gateway workers (cores sharing one pool; see cores.rs); 0: `SIM_WORKERS`, else 1, 2
    /// or 3 by seed, so every scenario runs on one worker and on several.
    pub workers: usize,
    /// OpenVPN TLS handshakes run as jobs, delivered back after a random delay (as from a
    /// control thread); None: by seed (odd seeds) or `SIM_OFFLOAD=0|1`.
    pub offload: Option<bool>,
    /// How long a job takes to come back; None: 0-3 ms at random.
    pub job_delay: Option<Duration>,
    /// `client_pool_v6` (None: IPv4 only).
    pub pool_v6: Option<ipnet::Ipv6Net>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            link: Link::lossy(),
            cookie_threshold: 1000,
            max_half_open: crate::gateway::DEFAULT_MAX_HALF_OPEN,
            max_half_open_per_ip: crate::gateway::DEFAULT_MAX_HALF_OPEN_PER_IP,
            ping: None,
            pool: POOL.parse().unwrap(),
            workers: 0,
            offload: None,
            job_delay: None,
            pool_v6: None,
        }
    }
}

pub(super) struct Sim {
    /// Makes the cores' configuration (a reload builds a changed copy).
    pub config: Box<dyn Fn() -> CoreConfig>,
    pub seed: u64,
    pub start: Instant,
    pub now: Instant,
    pub core: Cores,
    pub link: Link,
    rng: StdRng,
    net: BTreeMap<(Instant, u64), Wire>,
    net_seq: u64,
    pub clients: Vec<Client>,
    /// UDP address -> client.
    addrs: HashMap<SocketAddr, usize>,
    streams: HashMap<StreamId, usize>,
    next_stream: StreamId,
    next_ip: u32,
    pub events: Vec<Event>,
    pub model: Model,
    /// A legitimate packet the core drops (without counting it) fails the test.
    pub strict: bool,
    /// Datagrams the core sent to an address no client has (any more).
    pub unreachable: u64,
    /// Data datagrams the core sent, per destination (for tests that look at them).
    pub last_to_client: HashMap<usize, Vec<u8>>,
    /// Packets checked end to end.
    pub checked: u64,
    /// Roamed events for IKEv2 handshakes moving to port 4500.
    pub natt_roams: u64,
    /// Every datagram towards the clients is lost.
    pub block_to_clients: bool,
    /// Roams back to an address the client had left (a late packet from there).
    pub late_roams: u64,
    pub pool: Ipv4Net,
    /// Handshake jobs "on the control thread": (core, job) by when they finish.
    jobs: BTreeMap<(Instant, u64), (usize, crate::gateway::HandshakeJob)>,
    /// Handshake jobs run so far, and by [`kind`](crate::gateway::HandshakeJob::kind).
    pub jobs_run: u64,
    pub jobs_by_kind: std::collections::HashMap<&'static str, u64>,
    /// The control thread's delays (apart from `rng`, so that offloading leaves the
    /// network's random choices as they were).
    job_rng: StdRng,
    job_delay: Option<Duration>,
}

/// Fails the test, naming the seed.
macro_rules! fail {
    ($sim:expr, $($arg:tt)*) => {
        panic!("seed {}: t={:?}: {}", $sim.seed, $sim.now - $sim.start, format!($($arg)*))
    };
}
pub(super) use fail;

impl Sim {
    pub fn new(seed: u64, opts: Options) -> Self {
        // The virtual clock needs some origin; only differences from it matter.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut sc = pki::server_cfg();
        sc.offload_handshakes = opts.offload.unwrap_or_else(|| {
            std::env::var("SIM_OFFLOAD")
                .ok()
                .map_or(seed % 2 == 1, |v| v == "1")
        });
        if let Some((ping, restart)) = opts.ping {
            sc.ping = ping;
            sc.ping_restart = restart;
            sc.inactivity_timeout = restart * 2;
        }
        let offload = sc.offload_handshakes;
        let ovpn_cfg = Arc::new(sc);
        let mut ike = pki::responder_cfg();
        ike.offload = offload;
        let ike_cfg = Arc::new(ike);
        let make = move || CoreConfig {
            client_pool: opts.pool,
            address_space: vec![LAN.parse().unwrap()],
            client_pool_v6: opts.pool_v6,
            address_space_v6: opts
                .pool_v6
                .map(|_| vec![LAN_V6.parse().unwrap()])
                .unwrap_or_default(),
            dns: vec![],
            dns_domains: Vec::new(),
            full_tunnel: false,
            openvpn: Some(ovpn_cfg.clone()),
            ikev2: Some(ike_cfg.clone()),
            cookie_threshold: opts.cookie_threshold,
            max_half_open: opts.max_half_open,
            max_half_open_per_ip: opts.max_half_open_per_ip,
            max_handshaking: 256,
            sites: vec![],
            unix_time: WALL_CLOCK_SECS,
            start,
        };
        let entropy = |worker: usize| -> EntropyFactory {
            let mut n = (worker as u64) << 32;
            Box::new(move || {
                n += 1;
                Box::new(SeededEntropy::new(
                    seed.wrapping_mul(1_000_003).wrapping_add(n),
                ))
            })
        };
        let workers = match opts.workers {
            0 => std::env::var("SIM_WORKERS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1 + (seed % 3) as usize),
            n => n,
        };
        let config: Box<dyn Fn() -> CoreConfig> = Box::new(make.clone());
        let core = Cores::new(workers, make, entropy);
        Sim {
            seed,
            start,
            now: start,
            core,
            link: opts.link,
            rng: StdRng::seed_from_u64(seed),
            net: BTreeMap::new(),
            net_seq: 0,
            clients: Vec::new(),
            addrs: HashMap::new(),
            streams: HashMap::new(),
            next_stream: 1,
            next_ip: 0,
            events: Vec::new(),
            model: Model::default(),
            strict: true,
            unreachable: 0,
            last_to_client: HashMap::new(),
            checked: 0,
            natt_roams: 0,
            block_to_clients: false,
            late_roams: 0,
            pool: opts.pool,
            jobs: BTreeMap::new(),
            jobs_run: 0,
            jobs_by_kind: Default::default(),
            job_rng: StdRng::seed_from_u64(seed ^ 0x6a6f_6273),
            job_delay: opts.job_delay,
            config,
        }
    }

    /// One client of every remote-access kind (OpenVPN UDP, OpenVPN TCP, IKEv2), connected
    /// to a single-worker core over a clean link, the handshakes' last packets settled.
    pub fn one_of_each(seed: u64) -> (Self, [usize; 3]) {
        let mut sim = Sim::new(
            seed,
            Options {
                link: Link::clean(),
                workers: 1,
                ..Options::default()
            },
        );
        let udp = sim.add_ovpn_udp(0);
        let tcp = sim.add_ovpn_tcp(1);
        let ike = sim.add_ike(2);
        sim.connect_all(&[udp, tcp, ike], Duration::from_secs(30));
        sim.run_for(Duration::from_secs(1));
        (sim, [udp, tcp, ike])
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// A fresh public address for a client.
    pub fn fresh_ip(&mut self) -> IpAddr {
        self.next_ip += 1;
        let n = self.next_ip;
        IpAddr::V4(Ipv4Addr::new(100, 64, (n >> 8) as u8, n as u8))
    }

    fn client_seed(&self, idx: usize) -> u64 {
        self.seed
            .wrapping_mul(7919)
            .wrapping_add(idx as u64 * 104_729 + 17)
    }

    fn push_client(
        &mut self,
        cert: usize,
        proto: Proto,
        addr: SocketAddr,
        natt: SocketAddr,
    ) -> usize {
        let idx = self.clients.len();
        self.clients.push(Client {
            cert,
            name: client_name(cert),
            proto,
            addr,
            natt_addr: natt,
            core_remote: if natt.port() == 0 { addr } else { natt },
            address: None,
            tunnel: None,
            gone: false,
            past: Vec::new(),
            rx: Vec::new(),
        });
        idx
    }

    /// Starts an OpenVPN client over UDP with certificate `cert`.
    pub fn add_ovpn_udp(&mut self, cert: usize) -> usize {
        let idx = self.clients.len();
        let session = ClientSession::new(
            Arc::new(pki::ovpn_client_cfg(cert)),
            Box::new(SeededEntropy::new(self.client_seed(idx))),
            self.now,
        )
        .unwrap();
        let addr = SocketAddr::new(self.fresh_ip(), 40_000 + idx as u16);
        self.addrs.insert(addr, idx);
        let o = OvpnClient {
            session,
            stream: None,
            events: vec![],
            data_errors: 0,
        };
        let none = SocketAddr::new(addr.ip(), 0);
        self.push_client(cert, Proto::Ovpn(Box::new(o)), addr, none)
    }

    /// Starts an OpenVPN client over TCP with certificate `cert`.
    pub fn add_ovpn_tcp(&mut self, cert: usize) -> usize {
        let idx = self.clients.len();
        let session = ClientSession::new(
            Arc::new(pki::ovpn_client_cfg(cert)),
            Box::new(SeededEntropy::new(self.client_seed(idx))),
            self.now,
        )
        .unwrap();
        let addr = SocketAddr::new(self.fresh_ip(), 50_000 + idx as u16);
        let stream = self.next_stream;
        self.next_stream += 1;
        self.streams.insert(stream, idx);
        self.core.handle_stream_open(stream, addr);
        let o = OvpnClient {
            session,
            stream: Some(stream),
            events: vec![],
            data_errors: 0,
        };
        let none = SocketAddr::new(addr.ip(), 0);
        self.push_client(cert, Proto::Ovpn(Box::new(o)), addr, none)
    }

    /// Starts an IKEv2 client with certificate `cert` (behind a NAT: port 500 and 4500
    /// traffic leave from different ports).
    pub fn add_ike(&mut self, cert: usize) -> usize {
        let idx = self.clients.len();
        let gw = SocketAddr::new(GATEWAY_IP.parse().unwrap(), 500);
        let init = IkeInitiator::new(
            Arc::new(pki::ike_client_cfg(cert)),
            Box::new(SeededEntropy::new(self.client_seed(idx))),
            self.now,
            gw,
        );
        let ip = self.fresh_ip();
        let addr = SocketAddr::new(ip, 60_000 + idx as u16);
        let natt = SocketAddr::new(ip, 4500 + idx as u16);
        self.addrs.insert(addr, idx);
        self.addrs.insert(natt, idx);
        let i = IkeClient {
            init,
            inbound: vec![],
            outbound: None,
            events: vec![],
            closed: None,
            address: None,
        };
        self.push_client(cert, Proto::Ike(Box::new(i)), addr, natt)
    }

    /// The OpenVPN client `c` restarts (a new session, same certificate, same address).
    pub fn restart_ovpn(&mut self, c: usize) {
        let seed = self.client_seed(c) ^ 0x5eed;
        let cert = self.clients[c].cert;
        let now = self.now;
        let session = ClientSession::new(
            Arc::new(pki::ovpn_client_cfg(cert)),
            Box::new(SeededEntropy::new(seed)),
            now,
        )
        .unwrap();
        let cl = &mut self.clients[c];
        let o = cl.ovpn();
        o.session = session;
        o.events.clear();
        cl.address = None;
        cl.tunnel = None;
    }

    /// Client `c` ends its tunnel cleanly (OpenVPN EXIT, IKEv2 Delete).
    pub fn disconnect_client(&mut self, c: usize) {
        let now = self.now;
        match &mut self.clients[c].proto {
            Proto::Ovpn(o) => o.session.disconnect(now),
            Proto::Ike(i) => i.init.disconnect(now),
        }
    }

    /// Client `c` leaves the network (its tunnel is not told; a TCP connection closes).
    pub fn remove_client(&mut self, c: usize) {
        let cl = &mut self.clients[c];
        cl.gone = true;
        self.addrs.retain(|_, v| *v != c);
        if let Proto::Ovpn(o) = &cl.proto
            && let Some(s) = o.stream
        {
            self.streams.remove(&s);
            self.core
                .handle_stream_closed(self.now, s, "closed by the client");
        }
    }

    /// Client `c` now sends from a new address (NAT rebinding / new network). The old
    /// address no longer reaches it. Returns the new address.
    pub fn rebind(&mut self, c: usize, new_ip: bool) -> SocketAddr {
        let ip = if new_ip {
            self.fresh_ip()
        } else {
            self.clients[c].addr.ip()
        };
        let port = 20_000 + self.rng.random_range(0..10_000u16);
        let new = SocketAddr::new(ip, port);
        let cl = &mut self.clients[c];
        let old = match cl.proto {
            Proto::Ike(_) => std::mem::replace(&mut cl.natt_addr, new),
            Proto::Ovpn(_) => std::mem::replace(&mut cl.addr, new),
        };
        self.addrs.remove(&old);
        self.addrs.insert(new, c);
        self.clients[c].past.push(old);
        new
    }

    // ---- the network ----

    fn roll(&mut self, percent: u32) -> bool {
        percent > 0 && self.rng.random_range(0..100) < percent
    }

    fn jitter(&mut self) -> Duration {
        let max = self.link.reorder_delay.as_micros().max(1) as u64;
        Duration::from_micros(self.rng.random_range(0..max))
    }

    fn enqueue(&mut self, at: Instant, w: Wire) {
        self.net_seq += 1;
        self.net.insert((at, self.net_seq), w);
    }

    /// A datagram onto the lossy network.
    fn send_udp(&mut self, w: Wire) {
        if self.block_to_clients && matches!(w, Wire::Client { .. }) {
            return;
        }
        if self.roll(self.link.loss_percent) {
            return;
        }
        let mut at = self.now + self.link.latency;
        if self.roll(self.link.reorder_percent) {
            at += self.jitter();
        }
        if self.roll(self.link.dup_percent) {
            let copy_at = self.now + self.link.latency + self.jitter();
            let copy = match &w {
                Wire::Core {
                    listener,
                    from,
                    bytes,
                } => Wire::Core {
                    listener: *listener,
                    from: *from,
                    bytes: bytes.clone(),
                },
                Wire::Client { to, from, bytes } => Wire::Client {
                    to: *to,
                    from: *from,
                    bytes: bytes.clone(),
                },
                _ => unreachable!("streams are not datagrams"),
            };
            self.enqueue(copy_at, copy);
        }
        self.enqueue(at, w);
    }

    /// A frame onto a TCP connection: never lost, in order.
    fn send_stream(&mut self, w: Wire) {
        let at = self.now + self.link.latency;
        self.enqueue(at, w);
    }

    /// What the core sends, onto the network.
    fn core_out(&mut self, dest: Dest, bytes: Vec<u8>) {
        match dest {
            Dest::Udp { from, to } => self.send_udp(Wire::Client { to, from, bytes }),
            Dest::Stream(stream) => self.send_stream(Wire::ClientStream { stream, bytes }),
        }
    }

    /// A client's datagram or frame towards the core.
    fn client_out(&mut self, c: usize, nat_t: Option<bool>, bytes: Vec<u8>) {
        let cl = &self.clients[c];
        if cl.gone {
            return;
        }
        match (&cl.proto, nat_t) {
            (Proto::Ovpn(o), _) => match o.stream {
                Some(stream) => self.send_stream(Wire::CoreStream { stream, bytes }),
                None => {
                    let from = cl.addr;
                    self.send_udp(Wire::Core {
                        listener: Listener::OpenVpnUdp,
                        from,
                        bytes,
                    })
                }
            },
            (Proto::Ike(_), Some(true)) => {
                let from = cl.natt_addr;
                self.send_udp(Wire::Core {
                    listener: Listener::IkeNatT,
                    from,
                    bytes,
                })
            }
            (Proto::Ike(_), _) => {
                let from = cl.addr;
                self.send_udp(Wire::Core {
                    listener: Listener::Ike,
                    from,
                    bytes,
                })
            }
        }
    }

    // ---- the driver ----

    /// Moves everything that can move at `now`. True when anything moved.
    pub fn drive(&mut self) -> bool {
        let mut any = false;
        loop {
            let mut progress = false;
            while let Some(t) = self.core.poll_transmit() {
                progress = true;
                self.core_out(t.dest, t.payload);
            }
            while let Some(e) = self.core.poll_event() {
                progress = true;
                self.on_core_event(e);
            }
            for c in 0..self.clients.len() {
                progress |= self.pump_client(c);
            }
            while let Some((core, job)) = self.core.poll_job() {
                progress = true;
                // A control thread takes up to 3 ms to get to it and run it.
                let delay = self
                    .job_delay
                    .unwrap_or_else(|| Duration::from_micros(self.job_rng.random_range(0..3000)));
                let at = self.now + delay;
                self.net_seq += 1;
                self.jobs.insert((at, self.net_seq), (core, job));
            }
            let due: Vec<(Instant, u64)> = self
                .jobs
                .range(..=(self.now, u64::MAX))
                .map(|(k, _)| *k)
                .collect();
            for k in due {
                progress = true;
                let (core, job) = self.jobs.remove(&k).unwrap();
                self.jobs_run += 1;
                *self.jobs_by_kind.entry(job.kind()).or_default() += 1;
                let now = self.now;
                // On another thread, as in the gateway (thread-local state must not matter).
                let done = std::thread::scope(|s| s.spawn(|| job.run()).join())
                    .expect("a handshake job panicked");
                self.core.handle_job_done(now, core, done);
            }
            let due: Vec<(Instant, u64)> = self
                .net
                .range(..=(self.now, u64::MAX))
                .map(|(k, _)| *k)
                .collect();
            for k in due {
                progress = true;
                let w = self.net.remove(&k).unwrap();
                self.deliver(w);
            }
            if !progress {
                return any;
            }
            any = true;
        }
    }

    fn pump_client(&mut self, c: usize) -> bool {
        if self.clients[c].gone {
            return false;
        }
        let now = self.now;
        let mut progress = false;
        let mut out: Vec<(Option<bool>, Vec<u8>)> = Vec::new();
        match &mut self.clients[c].proto {
            Proto::Ovpn(o) => {
                let mut buf = Vec::new();
                while o.session.poll_transmit(now, &mut buf) {
                    out.push((None, buf.clone()));
                }
                while let Some(e) = o.session.poll_event() {
                    progress = true;
                    o.events.push(e);
                }
            }
            Proto::Ike(i) => {
                while let Some(t) = i.init.poll_transmit() {
                    let port = if t.nat_t { 4500 } else { 500 };
                    assert_eq!(t.to, SocketAddr::new(GATEWAY_IP.parse().unwrap(), port));
                    let bytes = if t.nat_t {
                        let mut b = vec![0u8; 4];
                        b.extend_from_slice(&t.data);
                        b
                    } else {
                        t.data
                    };
                    out.push((Some(t.nat_t), bytes));
                }
                while let Some(e) = i.init.poll_event() {
                    progress = true;
                    match e {
                        InitiatorEvent::Connected {
                            address,
                            our_spi,
                            sa,
                            ..
                        } => {
                            i.events
                                .push(format!("connected {address:?} spi {our_spi:08x}"));
                            i.address = address;
                            let sa = *sa;
                            assert_eq!(sa.inbound.spi(), our_spi);
                            i.inbound.push(sa.inbound);
                            i.outbound = Some(sa.outbound);
                        }
                        InitiatorEvent::ChildRekeyed { our_spi, sa, .. } => {
                            i.events.push(format!("rekeyed spi {our_spi:08x}"));
                            let sa = *sa;
                            i.inbound.push(sa.inbound);
                            i.outbound = Some(sa.outbound);
                        }
                        InitiatorEvent::ChildDeleted { our_spi } => {
                            i.events.push(format!("child deleted {our_spi:08x}"));
                            i.inbound.retain(|s| s.spi() != our_spi);
                        }
                        InitiatorEvent::AuthFailed(r) => {
                            i.events.push(format!("auth failed: {r}"));
                            i.closed = Some(r);
                            i.outbound = None;
                        }
                        InitiatorEvent::Closed(r) => {
                            i.events.push(format!("closed: {r}"));
                            i.closed = Some(r);
                            i.outbound = None;
                        }
                    }
                }
            }
        }
        // The client's own view of its address.
        let learnt = match &self.clients[c].proto {
            Proto::Ovpn(o) => o.session.push_reply().map(|p| p.address),
            Proto::Ike(i) => i.address,
        };
        if learnt.is_some() {
            self.clients[c].address = learnt;
        }
        for (nat_t, b) in out {
            progress = true;
            self.client_out(c, nat_t, b);
        }
        progress
    }

    fn deliver(&mut self, w: Wire) {
        match w {
            Wire::Core {
                listener,
                from,
                bytes,
            } => {
                self.deliver_to_core(listener, from, &bytes, None);
            }
            Wire::CoreStream { stream, bytes } => {
                if self.streams.contains_key(&stream) {
                    self.deliver_to_core(
                        Listener::OpenVpnUdp,
                        SocketAddr::new([0, 0, 0, 0].into(), 0),
                        &bytes,
                        Some(stream),
                    );
                }
            }
            Wire::Client { to, from, bytes } => {
                let Some(&c) = self.addrs.get(&to) else {
                    self.unreachable += 1;
                    return;
                };
                self.deliver_to_client(c, Some(from), &bytes);
            }
            Wire::ClientStream { stream, bytes } => {
                if let Some(&c) = self.streams.get(&stream) {
                    self.deliver_to_client(c, None, &bytes);
                }
            }
        }
    }

    /// Feeds a datagram (or TCP frame) to the core and checks what comes out against the
    /// model.
    pub fn deliver_to_core(
        &mut self,
        listener: Listener,
        from: SocketAddr,
        bytes: &[u8],
        stream: Option<StreamId>,
    ) -> Option<Vec<u8>> {
        let tagged = self.model.cipher.get_mut(bytes).map(|e| {
            e.1 += 1;
            (e.0, e.1)
        });
        let before = self.core.drops().clone();
        let now = self.now;
        let out = match stream {
            Some(s) => self.core.handle_stream_packet(now, s, bytes),
            None => self.core.handle_datagram(now, listener, from, bytes),
        }
        .map(<[u8]>::to_vec);
        let after = self.core.drops().clone();
        // Events first (a roam changes where the answer must go).
        while let Some(e) = self.core.poll_event() {
            self.on_core_event(e);
        }
        self.check_inbound(tagged, out.as_deref(), &before, &after);
        out
    }

    fn check_inbound(
        &mut self,
        tagged: Option<(u64, u32)>,
        out: Option<&[u8]>,
        before: &Drops,
        after: &Drops,
    ) {
        let delta = |d: Drop| after.get(d) - before.get(d);
        if let Some(pkt) = out {
            let Some(tag) = tag_of(pkt) else {
                fail!(
                    self,
                    "TUN got a packet the simulation never made: {pkt:02x?}"
                );
            };
            let Some((sent_tag, n)) = tagged else {
                fail!(
                    self,
                    "TUN got packet {tag} out of a datagram that did not carry it"
                );
            };
            if tag != sent_tag {
                fail!(
                    self,
                    "TUN got packet {tag} out of the datagram carrying {sent_tag}"
                );
            }
            if n > 1 {
                fail!(
                    self,
                    "a replayed datagram (copy {n}) reached TUN again (packet {tag})"
                );
            }
            let e = self.model.packets.get_mut(&tag).unwrap();
            e.tun += 1;
            if e.bytes != pkt {
                fail!(self, "packet {tag} changed on the way to TUN");
            }
            let e = e.clone();
            match e.kind {
                Kind::Lan => self.checked += 1,
                Kind::Peer(_) => self.route_back(tag, &e),
                Kind::Spoofed => fail!(
                    self,
                    "spoofed packet {tag} from {} reached TUN",
                    self.clients[e.src.unwrap()].name
                ),
                Kind::Down(_) => fail!(self, "packet {tag} for a client came from a client"),
            }
            return;
        }
        let Some((tag, n)) = tagged else {
            return;
        };
        let kind = self.model.packets[&tag].kind;
        if n > 1 {
            if !self.strict && delta(Drop::BadData) == 0 {
                if after.total() <= before.total() {
                    fail!(
                        self,
                        "replayed datagram of packet {tag} dropped without a count"
                    );
                }
                return;
            }
            if delta(Drop::BadData) != 1 {
                fail!(
                    self,
                    "replayed datagram of packet {tag} not counted as BadData: {before} -> {after}"
                );
            }
            self.model.expect_replayed += 1;
            return;
        }
        match kind {
            Kind::Spoofed => {
                if !self.strict && delta(Drop::Spoofed) == 0 {
                    if after.total() <= before.total() {
                        fail!(self, "spoofed packet {tag} dropped without a count");
                    }
                    return;
                }
                if delta(Drop::Spoofed) != 1 {
                    fail!(
                        self,
                        "spoofed packet {tag} dropped but not counted as Spoofed: {before} -> {after}"
                    );
                }
                self.model.expect_spoofed += 1;
            }
            _ => {
                if self.strict {
                    let src = self.model.packets[&tag]
                        .src
                        .map(|s| self.clients[s].name.clone());
                    fail!(
                        self,
                        "packet {tag} ({kind:?}) from {src:?} dropped by the core: {before} -> {after}"
                    );
                }
                if after.total() <= before.total() {
                    fail!(self, "packet {tag} ({kind:?}) dropped without a count");
                }
                self.model.legit_dropped += 1;
            }
        }
    }

    /// Where the core must send a packet for client `c`.
    pub fn expected_dest(&self, c: usize) -> Dest {
        let cl = &self.clients[c];
        match &cl.proto {
            Proto::Ovpn(o) => match o.stream {
                Some(s) => Dest::Stream(s),
                None => Dest::Udp {
                    from: Listener::OpenVpnUdp,
                    to: cl.core_remote,
                },
            },
            Proto::Ike(_) => Dest::Udp {
                from: Listener::IkeNatT,
                to: cl.core_remote,
            },
        }
    }

    /// A TUN packet (tag `tag`): the model finds the live tunnel holding its destination
    /// (not necessarily the client it was meant for: a newer login of the same certificate
    /// took the address over); the core must encrypt it for exactly that client, or drop it
    /// (counted) when no live tunnel holds the address.
    fn route_back(&mut self, tag: u64, e: &Expect) {
        let now = self.now;
        let dst_ip = Ipv4Addr::new(e.bytes[16], e.bytes[17], e.bytes[18], e.bytes[19]);
        let holder = self
            .model
            .live()
            .find(|(_, t)| t.address == dst_ip)
            .map(|(_, t)| t.client);
        let before = self.core.drops().clone();
        let routed = self
            .core
            .handle_tun_packet(now, &e.bytes)
            .map(|(d, b)| (d, b.to_vec()));
        match (holder, routed) {
            (Some(dst), Some((dest, bytes))) => {
                let want = self.expected_dest(dst);
                if dest != want {
                    fail!(
                        self,
                        "TUN packet {tag} for {} ({dst_ip}) went to {dest:?}, expected {want:?}",
                        self.clients[dst].name
                    );
                }
                if let Some(m) = self.model.packets.get_mut(&tag) {
                    m.kind = match m.kind {
                        Kind::Peer(_) => Kind::Peer(dst),
                        _ => Kind::Down(dst),
                    };
                }
                self.last_to_client.insert(dst, bytes.clone());
                self.core_out(dest, bytes);
            }
            (Some(dst), None) => {
                if self.strict {
                    fail!(
                        self,
                        "TUN packet {tag} for {} ({dst_ip}) not routed: {}",
                        self.clients[dst].name,
                        self.core.drops()
                    );
                }
                if self.core.drops().total() <= before.total() {
                    fail!(
                        self,
                        "TUN packet {tag} for {dst_ip} dropped without a count"
                    );
                }
            }
            (None, Some((dest, _))) => fail!(
                self,
                "TUN packet {tag} for {dst_ip}, which no live tunnel holds, went to {dest:?}"
            ),
            (None, None) => {
                let after = self.core.drops();
                let counted = after.get(Drop::NoRoute) > before.get(Drop::NoRoute)
                    || after.get(Drop::NotEstablished) > before.get(Drop::NotEstablished);
                if !counted {
                    fail!(
                        self,
                        "TUN packet {tag} for {dst_ip} dropped without NoRoute: {before} -> {after}"
                    );
                }
            }
        }
    }

    /// A packet from the LAN host to client `dst`.
    pub fn send_down(&mut self, dst: usize) {
        let Some(addr) = self.clients[dst].address else {
            fail!(self, "{} has no address", self.clients[dst].name);
        };
        let tag = self.model.tag();
        let pad = self.rng.random_range(0..100);
        let bytes = ipv4(LAN_HOST, addr, tag, pad);
        let e = Expect {
            src: None,
            kind: Kind::Down(dst),
            bytes,
            tun: 0,
            rx: 0,
        };
        self.model.packets.insert(tag, e.clone());
        self.route_back(tag, &e);
    }

    /// Client `c` sends an inner packet of `kind` (its own source address unless spoofed).
    pub fn send_up(&mut self, c: usize, kind: Kind) -> u64 {
        let Some(own) = self.clients[c].address else {
            fail!(self, "{} has no address", self.clients[c].name);
        };
        let (src, dst) = match kind {
            Kind::Lan => (
                own,
                Ipv4Addr::new(10, 1, self.rng.random(), self.rng.random()),
            ),
            Kind::Peer(d) => (own, self.clients[d].address.unwrap()),
            Kind::Spoofed => {
                let others: Vec<Ipv4Addr> = self
                    .clients
                    .iter()
                    .enumerate()
                    .filter(|(i, cl)| *i != c && cl.address.is_some_and(|a| a != own))
                    .filter_map(|(_, cl)| cl.address)
                    .collect();
                let src = if others.is_empty() || self.rng.random_bool(0.2) {
                    // Not in the pool at all.
                    Ipv4Addr::new(10, 1, 2, 3)
                } else {
                    others[self.rng.random_range(0..others.len())]
                };
                (src, LAN_HOST)
            }
            Kind::Down(_) => unreachable!(),
        };
        let tag = self.model.tag();
        let pad = self.rng.random_range(0..200);
        let bytes = ipv4(src, dst, tag, pad);
        let cipher = self.encrypt_up(c, &bytes);
        self.model.cipher.insert(cipher.clone(), (tag, 0));
        self.model.packets.insert(
            tag,
            Expect {
                src: Some(c),
                kind,
                bytes,
                tun: 0,
                rx: 0,
            },
        );
        let nat_t = matches!(self.clients[c].proto, Proto::Ike(_)).then_some(true);
        self.client_out(c, nat_t, cipher);
        tag
    }

    /// Client `c` seals an inner packet (OpenVPN data packet, or ESP).
    pub fn encrypt_up(&mut self, c: usize, inner: &[u8]) -> Vec<u8> {
        let now = self.now;
        let name = self.clients[c].name.clone();
        match &mut self.clients[c].proto {
            Proto::Ovpn(o) => {
                let mut out = Vec::new();
                if let Err(e) = o.session.encrypt(now, inner, &mut out) {
                    fail!(self, "{name} cannot encrypt: {e}");
                }
                out
            }
            Proto::Ike(i) => {
                let Some(sa) = i.outbound.as_mut() else {
                    fail!(self, "{name} has no outbound SA");
                };
                let mut buf = vec![0u8; inner.len() + 256];
                sa.encrypt(inner, &mut buf).unwrap().to_vec()
            }
        }
    }

    fn deliver_to_client(&mut self, c: usize, from: Option<Listener>, bytes: &[u8]) {
        let now = self.now;
        let name = self.clients[c].name.clone();
        let mut inner: Option<Vec<u8>> = None;
        match &mut self.clients[c].proto {
            Proto::Ovpn(o) => {
                if from.is_some_and(|l| l != Listener::OpenVpnUdp) {
                    fail!(self, "{name} (OpenVPN) got a datagram from {from:?}");
                }
                let Some(op) = bytes.first().and_then(|b| Opcode::from_u8(b >> 3)) else {
                    fail!(self, "{name} got a datagram that is no OpenVPN packet");
                };
                if op.is_data() {
                    let key_id = bytes[0] & 7;
                    let mut out = Vec::new();
                    match o.session.handle_data(now, bytes, key_id, &mut out) {
                        Ok(DataOutcome::Packet(r)) => inner = Some(out[r].to_vec()),
                        Ok(DataOutcome::Keepalive) => {}
                        Err(_) => o.data_errors += 1,
                    }
                } else {
                    let _ = o.session.handle_control_datagram(now, bytes);
                }
            }
            Proto::Ike(i) => match from {
                Some(Listener::Ike) => i.init.handle_message(now, bytes),
                Some(Listener::IkeNatT) => match strip_non_esp_marker(bytes) {
                    Classified::Ike(m) => i.init.handle_message(now, m),
                    Classified::Esp(p) => {
                        let spi = EspInbound::packet_spi(p);
                        let Some(sa) = i.inbound.iter_mut().find(|s| Some(s.spi()) == spi) else {
                            return;
                        };
                        let mut buf = vec![0u8; p.len()];
                        if let Ok(d) = sa.decrypt(p, &mut buf) {
                            i.init.note_activity(now);
                            if d.next_header == 4 {
                                inner = Some(d.packet.to_vec());
                            }
                        }
                    }
                    Classified::Keepalive => {}
                },
                other => fail!(self, "{name} (IKEv2) got a datagram from {other:?}"),
            },
        }
        if let Some(p) = inner {
            self.client_received(c, &p);
        }
    }

    fn client_received(&mut self, c: usize, p: &[u8]) {
        let name = self.clients[c].name.clone();
        let Some(tag) = tag_of(p) else {
            fail!(self, "{name} received a packet the simulation never made");
        };
        let Some(e) = self.model.packets.get_mut(&tag) else {
            fail!(self, "{name} received unknown packet {tag}");
        };
        let dst = match e.kind {
            Kind::Peer(d) | Kind::Down(d) => d,
            k => fail!(self, "{name} received packet {tag} of kind {k:?}"),
        };
        if dst != c {
            fail!(
                self,
                "packet {tag} for {} was delivered to {name}",
                self.clients[dst].name
            );
        }
        e.rx += 1;
        if e.rx > 1 {
            fail!(self, "{name} received packet {tag} twice");
        }
        if e.bytes != p {
            fail!(self, "packet {tag} changed on the way to {name}");
        }
        self.clients[c].rx.push(tag);
        self.checked += 1;
    }

    fn on_core_event(&mut self, e: Event) {
        match &e {
            Event::Connected {
                tunnel,
                client,
                address,
                protocol,
            } => {
                let remote = self.core.tunnel_remote(*tunnel);
                let Some(c) = (0..self.clients.len()).find(|&i| {
                    let cl = &self.clients[i];
                    // A client that vanished may still complete its handshake with what
                    // it sent before.
                    cl.name == *client
                        && cl.protocol() == *protocol
                        && remote.is_some_and(|r| r.ip() == cl.addr.ip() || r == cl.natt_addr)
                }) else {
                    fail!(
                        self,
                        "Connected for no client of the simulation: {e:?} (remote {remote:?})"
                    );
                };
                let pool = self.pool;
                if !pool.contains(address)
                    || *address == self.core.gateway_addr()
                    || *address == pool.network()
                    || *address == pool.broadcast()
                {
                    fail!(self, "{client} got address {address} (pool {pool})");
                }
                if let Some((other, t)) = self
                    .model
                    .live()
                    .find(|(_, t)| t.address == *address && t.name != *client)
                {
                    fail!(
                        self,
                        "{client} got {address}, which tunnel {other} ({}) holds",
                        t.name
                    );
                }
                // One session per certificate: an older tunnel of the name is replaced.
                for t in self.model.tunnels.values_mut() {
                    if t.live && t.name == *client {
                        t.replaced = true;
                    }
                }
                if self.model.tunnels.contains_key(tunnel) {
                    fail!(self, "Connected twice for tunnel {tunnel}");
                }
                self.model.tunnels.insert(
                    *tunnel,
                    ModelTunnel {
                        client: c,
                        name: client.clone(),
                        address: *address,
                        live: true,
                        replaced: false,
                        disconnect_reason: None,
                    },
                );
                self.clients[c].tunnel = Some(*tunnel);
            }
            Event::Disconnected {
                tunnel,
                client,
                reason,
            } => {
                let Some(t) = self.model.tunnels.get_mut(tunnel) else {
                    fail!(self, "Disconnected for a tunnel never connected: {e:?}");
                };
                if !t.live || t.name != *client {
                    fail!(
                        self,
                        "Disconnected twice or for the wrong name: {e:?} ({t:?})"
                    );
                }
                t.live = false;
                t.disconnect_reason = Some(reason.clone());
            }
            Event::Roamed { tunnel, from, to } => {
                let Some(c) = self
                    .clients
                    .iter()
                    .position(|cl| cl.tunnel == Some(*tunnel))
                else {
                    // An IKEv2 client moving from port 500 to 4500 during its handshake
                    // (NAT traversal, RFC 7296 2.23) is reported too.
                    let natt = self.clients.iter().any(|cl| {
                        matches!(cl.proto, Proto::Ike(_)) && cl.addr == *from && cl.natt_addr == *to
                    });
                    if !natt {
                        fail!(self, "Roamed for an unknown tunnel: {e:?}");
                    }
                    self.natt_roams += 1;
                    self.events.push(e);
                    return;
                };
                let cl = &self.clients[c];
                let current = match cl.proto {
                    Proto::Ike(_) => cl.natt_addr,
                    Proto::Ovpn(_) => cl.addr,
                };
                // A late (reordered) authentic packet from an address the client left
                // moves the tunnel back there until its next packet: allowed while clients
                // come and go (`strict` off), counted.
                let late = !self.strict && cl.past.contains(to);
                if late {
                    self.late_roams += 1;
                }
                if *from != cl.core_remote || (*to != current && !late) {
                    fail!(
                        self,
                        "{} roamed {from} -> {to}; it was at {} and is at {current}",
                        cl.name,
                        cl.core_remote
                    );
                }
                self.clients[c].core_remote = *to;
            }
            _ => {}
        }
        self.events.push(e);
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let mut t = self.core.poll_timeout();
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.net.keys().next().map(|k| k.0));
        consider(self.jobs.keys().next().map(|k| k.0));
        for cl in self.clients.iter().filter(|c| !c.gone) {
            consider(match &cl.proto {
                Proto::Ovpn(o) => o.session.poll_timeout(self.now),
                Proto::Ike(i) => i.init.poll_timeout(),
            });
        }
        t
    }

    /// Runs until `done` holds (true) or `limit` of virtual time passed (false).
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        let mut spins = 0u32;
        loop {
            self.drive();
            self.check_invariants();
            if done(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            let next = self.next_wakeup().map_or(end, |t| t.min(end));
            if next <= self.now {
                spins += 1;
                if spins > 10_000 {
                    fail!(
                        self,
                        "timer stuck at the same instant: core {:?}",
                        self.core.poll_timeout().map(|t| t - self.start)
                    );
                }
            } else {
                spins = 0;
                self.now = next;
            }
            let now = self.now;
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now);
            }
            for cl in self.clients.iter_mut().filter(|c| !c.gone) {
                match &mut cl.proto {
                    Proto::Ovpn(o) => {
                        if o.session.poll_timeout(now).is_some_and(|t| t <= now) {
                            o.session.handle_timeout(now)
                        }
                    }
                    Proto::Ike(i) => {
                        if i.init.poll_timeout().is_some_and(|t| t <= now) {
                            i.init.handle_timeout(now)
                        }
                    }
                }
            }
        }
    }

    /// The gateway restarts for an upgrade and hands its tunnels to the new process (see
    /// [`Cores::hand_over`]); returns how many tunnels moved and how many datagrams the old
    /// process sent last (tunnels it ended).
    pub fn hand_over(&mut self) -> (usize, usize) {
        let seed = self.seed ^ 0x6861_6e64;
        let entropy = |worker: usize| -> EntropyFactory {
            let mut n = (worker as u64) << 32;
            Box::new(move || {
                n += 1;
                Box::new(SeededEntropy::new(
                    seed.wrapping_mul(1_000_003).wrapping_add(n),
                ))
            })
        };
        let (last, taken) = self.core.hand_over(self.now, &*self.config, entropy);
        (taken, last.len())
    }

    /// The active gateway's copy for a standby (see [`Cores::standby_copy`]).
    pub fn standby_copy(&self) -> Vec<Vec<u8>> {
        self.core.standby_copy(self.now)
    }

    /// The gateway dies and a standby takes over from `copies` (see [`Cores::fail_over`]);
    /// returns how many tunnels it took.
    pub fn fail_over(&mut self, copies: &[Vec<u8>]) -> usize {
        let seed = self.seed ^ 0x7374_6e64;
        let entropy = |worker: usize| -> EntropyFactory {
            let mut n = (worker as u64) << 32;
            Box::new(move || {
                n += 1;
                Box::new(SeededEntropy::new(
                    seed.wrapping_mul(1_000_003).wrapping_add(n),
                ))
            })
        };
        self.core
            .fail_over(self.now, &*self.config, entropy, copies)
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    /// Cheap invariants, after every step.
    pub fn check_invariants(&self) {
        if self.core.deadline_count() > self.core.tunnel_count() {
            fail!(
                self,
                "{} deadlines for {} tunnels",
                self.core.deadline_count(),
                self.core.tunnel_count()
            );
        }
        // Every tunnel the core reported Connected is either still there or was reported
        // Disconnected.
        if let Some((id, t)) = self
            .model
            .tunnels
            .iter()
            .find(|(id, t)| t.live && self.core.tunnel_remote(**id).is_none())
        {
            fail!(
                self,
                "tunnel {id} of {} (connected, {}) is gone from the core without Event::Disconnected",
                t.name,
                if t.replaced { "replaced" } else { "live" }
            );
        }
        let live: std::collections::HashSet<&str> =
            self.model.live().map(|(_, t)| t.name.as_str()).collect();
        if self.core.leased_count() < live.len() {
            fail!(
                self,
                "{} addresses leased for {} live clients",
                self.core.leased_count(),
                live.len()
            );
        }
    }

    /// Client `c` is up on both ends.
    pub fn is_up(&self, c: usize) -> bool {
        let cl = &self.clients[c];
        cl.is_up()
            && cl.tunnel.is_some_and(|t| {
                self.model
                    .tunnels
                    .get(&t)
                    .is_some_and(|m| m.live && !m.replaced)
            })
    }

    /// Runs until every client in `cs` is up; fails after `limit`.
    pub fn connect_all(&mut self, cs: &[usize], limit: Duration) {
        let cs = cs.to_vec();
        if !self.run_until(limit, |s| cs.iter().all(|&c| s.is_up(c))) {
            let down: Vec<String> = cs
                .iter()
                .filter(|&&c| !self.is_up(c))
                .map(|&c| {
                    let cl = &self.clients[c];
                    let ev = match &cl.proto {
                        Proto::Ovpn(o) => format!("{:?}", o.events),
                        Proto::Ike(i) => format!("{:?}", i.events),
                    };
                    format!("{} ({:?}): {ev}", cl.name, cl.protocol())
                })
                .collect();
            fail!(
                self,
                "not connected after {limit:?}: {down:?}; core events {:?}; drops {}",
                self.events,
                self.core.drops()
            );
        }
    }

    /// The core's status agrees with the model: every live tunnel, with its address,
    /// protocol and where its client is.
    pub fn check_status(&self) {
        let st = self.core.status(self.now);
        let mut want: Vec<(TunnelId, String, Option<Ipv4Addr>, Protocol, SocketAddr)> = self
            .model
            .live()
            .map(|(id, t)| {
                let cl = &self.clients[t.client];
                (
                    *id,
                    t.name.clone(),
                    Some(t.address),
                    cl.protocol(),
                    cl.core_remote,
                )
            })
            .collect();
        want.sort_by_key(|w| w.0);
        let got: Vec<_> = st
            .clients
            .iter()
            .map(|c| (c.tunnel, c.client.clone(), c.address, c.protocol, c.remote))
            .collect();
        if got != want {
            fail!(
                self,
                "status disagrees with the model:\n core  {got:?}\n model {want:?}"
            );
        }
        let names: std::collections::HashSet<&str> =
            self.model.live().map(|(_, t)| t.name.as_str()).collect();
        if self.core.leased_count() != names.len() {
            fail!(
                self,
                "{} addresses leased for {} live clients",
                self.core.leased_count(),
                names.len()
            );
        }
    }

    /// Drop counters agree with the model where it knows them exactly.
    pub fn check_drops(&self) {
        let d = self.core.drops();
        if d.get(Drop::Spoofed) != self.model.expect_spoofed {
            fail!(
                self,
                "Spoofed drops: core {} model {}",
                d.get(Drop::Spoofed),
                self.model.expect_spoofed
            );
        }
        if d.get(Drop::BadData) < self.model.expect_replayed {
            fail!(
                self,
                "BadData drops: core {} < model's replays {}",
                d.get(Drop::BadData),
                self.model.expect_replayed
            );
        }
        for why in [
            Drop::Malformed,
            Drop::Ipv6,
            Drop::Unwrapped,
            Drop::WrapAuth,
            Drop::WrapKey,
            Drop::Handshakes,
        ] {
            if d.get(why) != 0 {
                fail!(self, "unexpected drops: {d}");
            }
        }
    }

    /// One round of traffic: every up client sends to the LAN, to a random other up client,
    /// and (with probability `spoof`) a spoofed packet; the LAN answers each.
    pub fn traffic_round(&mut self, spoof: f64) {
        let up: Vec<usize> = (0..self.clients.len()).filter(|&c| self.is_up(c)).collect();
        for &c in &up {
            self.send_up(c, Kind::Lan);
            if up.len() > 1 {
                let mut d = up[self.rng.random_range(0..up.len())];
                if d == c {
                    d = up[(up.iter().position(|&x| x == c).unwrap() + 1) % up.len()];
                }
                self.send_up(c, Kind::Peer(d));
            }
            if self.rng.random_bool(spoof) {
                self.send_up(c, Kind::Spoofed);
            }
            self.send_down(c);
        }
    }
}
