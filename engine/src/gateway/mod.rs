//! The gateway core: every tunnel of a gateway as values, sans-IO.
//!
//! [`GatewayCore`] owns OpenVPN sessions (UDP and TCP), QUIC connections, IKEv2
//! remote-access SAs and site-to-site / VNet-to-VNet SAs, plus the router, the client address pool, the
//! one-session-per-certificate rule, the ESP SA table and the revoked-certificate list. The
//! driver (`gatehoused`) feeds it datagrams, TCP frames, TUN packets and time, and carries out
//! what it asks: [`GatewayCore::poll_transmit`] datagrams and frames,
//! [`GatewayCore::poll_event`] connections and disconnections, and one timer at
//! [`GatewayCore::poll_timeout`]. The driver takes no protocol decision; the same core runs in
//! the simulation tests on a virtual clock.
//!
//! Where a packet goes (docs/packet-path.md has the picture):
//! - datagram on the OpenVPN port: P_DATA_V2 -> tunnel by peer-id (an authenticated packet
//!   from a new address moves the tunnel there: float); P_DATA_V1 and control -> by address;
//!   a new client's hard reset -> wrapper check, then a new session.
//! - datagram on 500/4500: IKE -> SA by SPIs (IKE_SA_INIT: cookies, half-open limit); ESP ->
//!   the SPI's owner, decrypted; an authenticated ESP or IKE packet from a new address moves
//!   the SA (NAT rebinding, RFC 7296 2.23).
//! - datagram on the QUIC port: a short-header packet whose connection ID names another
//!   worker -> handed over (the client moved); else the worker's quinn-proto endpoint ->
//!   the connection (a packet from a new address migrates it: Roamed); DATAGRAM frames are
//!   inner packets (see [`crate::quic`] and `quic.rs`).
//! - a decrypted inner packet -> anti-spoofing (the router must route its source back to the
//!   same tunnel, or the site may send from that prefix) -> TUN.
//! - datagram on 51820 (WireGuard): data, handshake responses and cookies -> tunnel by the
//!   receiver index (its high bits name the worker); a handshake initiation -> the configured
//!   peer whose static key it carries; an authenticated packet from a new address moves the
//!   tunnel (roaming).
//! - a TUN packet -> router (longest prefix) -> tunnel -> encrypted datagram.

mod admission;
mod counters;
mod drops;
mod handoff;
mod handoff_initiated;
mod ike;
mod jobs;
mod openvpn;
mod quic;
mod reconfigure;
mod revocation;
mod shard;
mod site_iface;
mod sites;
mod status;
#[cfg(test)]
mod tests;
mod tunnel;
mod wireguard;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::deadlines::Deadlines;
use crate::entropy::Entropy;
use crate::esp::EspTable;
use crate::idhash::IdMap;
use crate::ikev2::responder::ResponderConfig;
use crate::ikev2::site::SitePeer;
use crate::openvpn::server::ServerConfig;
use crate::pool::PoolError;
use crate::router::Router;
pub use crate::router::TunnelId;

use admission::source_of;
pub use counters::{Counters, PerProtocol, Traffic, reason_class};
pub use drops::{Drop, Drops};
pub use handoff::{
    CommonHandoff, CoreHandoff, EspInHandoff, EspOutHandoff, HANDOFF_ESP_SKIP, HANDOFF_VERSION,
    IkeHandoff, OvpnHandoff, STANDBY_MARGIN,
};
pub use jobs::{HandshakeJob, JobDone};
pub use reconfigure::ReconfigureError;
pub use revocation::{RevokedSerials, cert_serial};
pub use shard::{Forward, STEER_MULTIPLIER, Shard, worker_of_ip};
pub use status::{CoreStatus, SaStatus, SiteStatus, TunnelSummary};
use tunnel::Tunnel;

/// The gateway's sockets, as the core names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The OpenVPN UDP port (1194).
    OpenVpnUdp,
    /// IKE (UDP 500).
    Ike,
    /// IKE with NAT traversal and ESP-in-UDP (UDP 4500).
    IkeNatT,
    /// WireGuard (UDP 51820).
    WireGuard,
    /// QUIC (UDP 443 by default).
    Quic,
}

/// One TCP connection of the OpenVPN TCP listener, numbered by the driver.
pub type StreamId = u64;

/// Where a [`Transmit`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// A datagram from `from` to `to`.
    Udp {
        /// The socket to send from.
        from: Listener,
        /// The peer.
        to: SocketAddr,
    },
    /// One OpenVPN packet on a TCP connection (the driver frames it).
    Stream(StreamId),
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub dest: Dest,
    /// The datagram (for 4500: with the non-ESP marker already in front of IKE messages).
    pub payload: Vec<u8>,
}

/// The protocol of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OpenVPN over UDP.
    OpenVpnUdp,
    /// OpenVPN over TCP.
    OpenVpnTcp,
    /// IKEv2 remote access.
    Ikev2,
    /// A site-to-site or VNet-to-VNet SA.
    Site,
    /// A WireGuard peer: site, VNet or point-to-site client.
    WireGuard,
    /// QUIC remote access (docs/quic.md).
    Quic,
}

impl Protocol {
    /// Every protocol, in a fixed order.
    pub const ALL: [Protocol; 6] = [
        Protocol::OpenVpnUdp,
        Protocol::OpenVpnTcp,
        Protocol::Ikev2,
        Protocol::Site,
        Protocol::WireGuard,
        Protocol::Quic,
    ];

    /// The name used in logs (`transport=`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::OpenVpnUdp => "udp",
            Protocol::OpenVpnTcp => "tcp",
            Protocol::Ikev2 => "ikev2",
            Protocol::Site => "site",
            Protocol::WireGuard => "wireguard",
            Protocol::Quic => "quic",
        }
    }
}

/// What the core reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A remote-access client's tunnel is up.
    Connected {
        /// Its tunnel.
        tunnel: TunnelId,
        /// The certificate's name.
        client: String,
        /// Its virtual address.
        address: Ipv4Addr,
        /// How it connected.
        protocol: Protocol,
    },
    /// A remote-access client's tunnel is gone.
    Disconnected {
        /// Its tunnel.
        tunnel: TunnelId,
        /// The certificate's name.
        client: String,
        /// Why.
        reason: String,
    },
    /// A client or site was refused.
    Refused {
        /// The certificate's or connection's name, when known.
        client: Option<String>,
        /// Its address.
        remote: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A tunnel's peer moved to a new address (float, NAT rebinding).
    Roamed {
        /// The tunnel.
        tunnel: TunnelId,
        /// The old address.
        from: SocketAddr,
        /// The new one.
        to: SocketAddr,
    },
    /// A tunnel ended because its certificate was revoked.
    Revoked {
        /// The tunnel.
        tunnel: TunnelId,
        /// The certificate's name.
        client: String,
    },
    /// A site connection has an SA carrying its prefixes.
    SiteUp {
        /// The connection.
        name: String,
    },
    /// A site connection has no SA any more.
    SiteDown {
        /// The connection.
        name: String,
        /// Why.
        reason: String,
    },
    /// The session on TCP connection `stream` ended while the connection is open (the
    /// client disconnected or was refused, revoked, replaced or timed out): the driver closes
    /// the connection once what is queued for it is sent, and then reports
    /// [`GatewayCore::handle_stream_closed`]. Not reported for connections the driver said
    /// were closed.
    StreamEnded {
        /// The connection.
        stream: StreamId,
    },
}

/// A `[[connection]]`: a site-to-site or VNet-to-VNet peer.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// `site-to-site` or `vnet-to-vnet` (logs and status).
    pub kind: &'static str,
    /// We start SAs (true) or wait for the peer.
    pub initiate: bool,
    /// The peer's IKE address and port.
    pub remote: SocketAddr,
    /// The address of ours its IKE and ESP-in-UDP datagrams leave from (`local_address`),
    /// for the driver: the core names only the listener ([`Dest::Udp`]).
    pub local_address: Option<IpAddr>,
    /// IPv4 prefixes behind the peer.
    pub remote_address_space: Vec<Ipv4Net>,
    /// IPv6 prefixes behind the peer (a dual-stack site).
    pub remote_address_space_v6: Vec<Ipv6Net>,
    /// Liveness check interval.
    pub dpd: Duration,
    /// IKE SA rekey interval.
    pub ike_lifetime: Duration,
    /// CHILD SA rekey interval.
    pub child_lifetime: Duration,
    /// Identities, authentication, selectors and algorithms (shared with the responder).
    pub peer: Arc<SitePeer>,
    /// The connection has its own interface (route-based, e.g. for BGP): the driver hands
    /// its packets in with [`GatewayCore::handle_interface_packet`] and writes what it
    /// decrypts to that interface ([`GatewayCore::poll_interface_packet`]); see `site_iface.rs`.
    pub own_interface: bool,
}

impl SiteConfig {
    /// The prefixes behind the peer, IPv4 then IPv6.
    pub fn prefixes(&self) -> Vec<ipnet::IpNet> {
        let v4 = self
            .remote_address_space
            .iter()
            .map(|n| ipnet::IpNet::V4(*n));
        let v6 = self
            .remote_address_space_v6
            .iter()
            .map(|n| ipnet::IpNet::V6(*n));
        v4.chain(v6).collect()
    }
}

/// Everything the core needs to know of `gateway.toml` and the PKI.
pub struct CoreConfig {
    /// The client pool (its first address is the gateway's).
    pub client_pool: Ipv4Net,
    /// Prefixes behind the gateway, pushed to clients.
    pub address_space: Vec<Ipv4Net>,
    /// The IPv6 client pool (`client_pool_v6`); None: clients get no IPv6 and inner IPv6
    /// is dropped. A client's IPv6 address follows its IPv4 lease ([`crate::pool6`]).
    pub client_pool_v6: Option<ipnet::Ipv6Net>,
    /// IPv6 prefixes behind the gateway, pushed to clients that have an IPv6 address.
    pub address_space_v6: Vec<ipnet::Ipv6Net>,
    /// DNS servers pushed to clients.
    pub dns: Vec<std::net::IpAddr>,
    /// Split-DNS domains pushed to clients (normalized); empty: all names go to `dns`.
    pub dns_domains: Vec<String>,
    /// Clients send all traffic through the gateway.
    pub full_tunnel: bool,
    /// OpenVPN (TLS, ciphers, wrapper); None: OpenVPN disabled.
    pub openvpn: Option<Arc<ServerConfig>>,
    /// IKEv2 (remote access and sites); None: IKEv2 disabled.
    pub ikev2: Option<Arc<ResponderConfig>>,
    /// Half-open IKE SAs beyond which IKE_SA_INIT needs a cookie (and MODP groups are
    /// rate-limited). Cookies come from secrets drawn from the entropy factory and rotated
    /// (see [`crate::ikev2::responder::CookieJar`]).
    pub cookie_threshold: usize,
    /// Most half-open IKE SAs of one worker; new IKE_SA_INIT requests beyond are dropped
    /// (`ikehalfopen`). [`DEFAULT_MAX_HALF_OPEN`].
    pub max_half_open: usize,
    /// Most half-open IKE SAs from one source address (an IPv6 /64); new IKE_SA_INIT
    /// requests from it beyond are dropped (`ikeperip`). [`DEFAULT_MAX_HALF_OPEN_PER_IP`].
    pub max_half_open_per_ip: usize,
    /// OpenVPN sessions still handshaking beyond which new hard resets are dropped.
    pub max_handshaking: usize,
    /// Site-to-site and VNet-to-VNet connections.
    pub sites: Vec<SiteConfig>,
    /// The wall clock at `start` (seconds since the Unix epoch), for OpenVPN packet ids.
    pub unix_time: u64,
    /// The `now` the wall clock above belongs to.
    pub start: Instant,
}

impl CoreConfig {
    /// Whether any tunnel may carry IPv6: an IPv6 client pool, or a site with IPv6 prefixes.
    pub fn carries_ipv6(&self) -> bool {
        self.client_pool_v6.is_some()
            || self
                .sites
                .iter()
                .any(|s| !s.remote_address_space_v6.is_empty())
    }
}

/// A sane [`CoreConfig::max_half_open`]: 1024 per worker (each may hold a DH exchange and up
/// to 64 KiB of IKE_AUTH fragments until `auth_timeout`).
pub const DEFAULT_MAX_HALF_OPEN: usize = 1024;

/// A sane [`CoreConfig::max_half_open_per_ip`]: 16 (a NAT with a few clients connecting at
/// once fits; one address cannot hold more).
pub const DEFAULT_MAX_HALF_OPEN_PER_IP: usize = 16;

/// Makes an entropy source for each new session (the OS RNG in the gateway, seeded
/// generators in tests).
pub type EntropyFactory = Box<dyn FnMut() -> Box<dyn Entropy> + Send>;

/// The gateway core. See the module documentation.
pub struct GatewayCore {
    cfg: CoreConfig,
    entropy: EntropyFactory,
    tunnels: IdMap<TunnelId, Tunnel>,
    router: Router,
    /// This worker's place; the pool, logins and SPI set it shares with the others.
    shard: Shard,
    /// Work for other workers.
    forwards: VecDeque<Forward>,
    /// Handling another worker's forward: a miss now is a drop, never a second forward.
    forwarded: bool,
    /// Changes a standby's copy of the tunnels must see soon: see [`GatewayCore::state_changes`].
    state_changes: u64,
    /// Packets decrypted from own-interface connections, for their interfaces
    /// ([`GatewayCore::poll_interface_packet`]).
    iface_out: VecDeque<(String, Vec<u8>)>,
    /// OpenVPN over UDP, by the client's address (control, P_DATA_V1).
    by_udp: HashMap<SocketAddr, TunnelId>,
    /// OpenVPN over UDP: a new session from an address that has an established one, kept
    /// apart until it authenticates and replaces it.
    replacing_udp: HashMap<SocketAddr, TunnelId>,
    /// OpenVPN handshakes in progress by client address (capped per address).
    handshakes_by_ip: HashMap<std::net::IpAddr, u32>,
    /// The secret behind OpenVPN session cookies (stateless answers to hard resets).
    cookies: crate::openvpn::cookie::ResetCookies,
    /// OpenVPN by peer-id (P_DATA_V2, float).
    by_peer_id: IdMap<u32, TunnelId>,
    /// OpenVPN over TCP: stream -> (tunnel if any, client address).
    streams: HashMap<StreamId, (Option<TunnelId>, SocketAddr)>,
    /// IKE SAs by (SPIi, SPIr), every pair they answer to.
    by_spis: HashMap<(u64, u64), TunnelId>,
    /// Half-open IKE SAs by (peer address, SPIi), for retransmitted IKE_SA_INIT.
    by_init: HashMap<(SocketAddr, u64), TunnelId>,
    /// IKE_SA_INIT key exchanges out as jobs: the tunnel id each will get, and the request's
    /// source, port (4500 or not) and SPIi.
    init_jobs: HashMap<TunnelId, (SocketAddr, bool, u64)>,
    /// SAs we started, by any SPI of ours they have used.
    by_local_spi: HashMap<u64, TunnelId>,
    /// Whether connections with `initiate` start SAs (an HA standby's do not until it takes
    /// over: [`GatewayCore::set_site_initiation`]).
    initiating: bool,
    /// Prefixes a routing daemon learned from sites (BGP), pushed to new remote-access
    /// clients beside the static ones ([`GatewayCore::set_learned_routes`]).
    learned_routes: Vec<Ipv4Net>,
    /// ESP SAs: inbound by our SPI (owner-checked), outbound by tunnel.
    esp: EspTable<TunnelId>,
    /// The sites this worker holds (those whose peer address steers here).
    sites: Vec<sites::SiteConn>,
    deadlines: Deadlines,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    drops: Drops,
    counters: Counters,
    revoked: RevokedSerials,
    /// OpenVPN sessions not yet authenticated.
    handshaking: usize,
    /// IKE SAs not yet authenticated.
    half_open: usize,
    /// ... by source address (IPv6: by /64).
    half_open_by_ip: HashMap<std::net::IpAddr, u32>,
    /// IKE cookie secrets (rotated).
    ike_cookies: crate::ikev2::responder::CookieJar,
    /// MODP exchanges allowed under load.
    modp_budget: ike::ModpBudget,
    next_id: TunnelId,
    next_peer_id: u32,
    /// Tunnels whose output and events are still to be collected.
    dirty: Vec<TunnelId>,
    /// Handshake jobs to run off the worker, and how many are out.
    jobs: VecDeque<jobs::HandshakeJob>,
    jobs_out: usize,
    /// WireGuard: the gateway's key, its peers and their tunnels (None: WireGuard is off).
    wg: Option<wireguard::WgState>,
    /// QUIC: the worker's endpoint and its connections; None until configured.
    quic: Option<quic::QuicState>,
    /// Work buffers (no allocation per packet).
    buf: Vec<u8>,
    esp_buf: Vec<u8>,
}

/// Size of the ESP work buffer: the largest UDP payload plus ESP overhead.
const ESP_BUF: usize = 65536 + 256;

impl GatewayCore {
    /// A core with no tunnel yet. Fails only when the client pool is unusable.
    pub fn new(cfg: CoreConfig, entropy: EntropyFactory) -> Result<Self, PoolError> {
        let mut shards = Shard::split(cfg.client_pool, 1)?;
        let shard = shards.pop().ok_or(PoolError::TooSmall(cfg.client_pool))?;
        Ok(Self::new_shard(cfg, entropy, shard))
    }

    /// One worker's core of a gateway spread over [`Shard::count`] workers (see
    /// [`Shard`]): it holds the tunnels steered to it and hands the rest over through
    /// [`poll_forward`](Self::poll_forward).
    pub fn new_shard(cfg: CoreConfig, mut entropy: EntropyFactory, shard: Shard) -> Self {
        let mine: Vec<SiteConfig> = cfg
            .sites
            .iter()
            .filter(|s| worker_of_ip(s.remote.ip(), shard.count()) == shard.index())
            .cloned()
            .collect();
        let sites = sites::site_conns(&mine);
        let mut key = [0u8; 32];
        entropy().fill(&mut key);
        // OpenVPN's default hand window: a cookie answers within 60-90 s.
        let cookies = crate::openvpn::cookie::ResetCookies::new(key, 60);
        let ike_cookies = crate::ikev2::responder::CookieJar::new(cfg.start, &mut *entropy());
        let next_peer_id = shard.index() as u32;
        // Tunnel ids are unique gateway-wide (logs, hand-overs name them).
        let next_id = shard.index() as TunnelId + 1;
        Self {
            cfg,
            entropy,
            tunnels: IdMap::default(),
            router: Router::new(),
            shard,
            forwards: VecDeque::new(),
            forwarded: false,
            state_changes: 0,
            iface_out: VecDeque::new(),
            by_udp: HashMap::new(),
            replacing_udp: HashMap::new(),
            handshakes_by_ip: HashMap::new(),
            cookies,
            by_peer_id: IdMap::default(),
            streams: HashMap::new(),
            by_spis: HashMap::new(),
            by_init: HashMap::new(),
            init_jobs: HashMap::new(),
            by_local_spi: HashMap::new(),
            initiating: true,
            learned_routes: Vec::new(),
            esp: EspTable::new(),
            sites,
            deadlines: Deadlines::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            drops: Drops::default(),
            counters: Counters::default(),
            revoked: RevokedSerials::default(),
            handshaking: 0,
            half_open: 0,
            half_open_by_ip: HashMap::new(),
            ike_cookies,
            modp_budget: ike::ModpBudget::default(),
            next_id,
            next_peer_id,
            dirty: Vec::new(),
            jobs: VecDeque::new(),
            jobs_out: 0,
            wg: None,
            quic: None,
            buf: Vec::with_capacity(2048),
            esp_buf: vec![0; ESP_BUF],
        }
    }

    /// The gateway's own tunnel address (first of the pool).
    pub fn gateway_addr(&self) -> Ipv4Addr {
        self.shard.pool().gateway_addr()
    }

    /// Whether any tunnel may carry IPv6: an IPv6 client pool, or a site (IKEv2 or
    /// WireGuard) with IPv6 prefixes. Otherwise inner IPv6 is dropped (`ipv6`).
    pub fn carries_ipv6(&self) -> bool {
        self.cfg.carries_ipv6() || self.wg_carries_ipv6()
    }

    /// The IPv6 pool beside the IPv4 one, when `client_pool_v6` is set (and fits it).
    pub fn pool6(&self) -> Option<crate::pool6::Ipv6Pool> {
        let v6 = self.cfg.client_pool_v6?;
        crate::pool6::Ipv6Pool::new(self.cfg.client_pool, v6).ok()
    }

    /// Work for other workers (packets that belong to their tunnels); always empty with one
    /// worker.
    pub fn poll_forward(&mut self) -> Option<Forward> {
        self.forwards.pop_front()
    }

    /// A datagram another worker received for one of this worker's tunnels (a
    /// [`Forward::Datagram`]): as [`handle_datagram`](Self::handle_datagram), but a packet
    /// that is not ours after all is dropped, never forwarded again.
    pub fn handle_forwarded_datagram(
        &mut self,
        now: Instant,
        listener: Listener,
        remote: SocketAddr,
        bytes: &[u8],
    ) -> Option<&[u8]> {
        self.forwarded = true;
        let range = self.datagram_range(now, listener, remote, bytes);
        self.forwarded = false;
        self.flush(now);
        let (which, r) = range?;
        let buf = if which { &self.esp_buf } else { &self.buf };
        buf.get(r)
    }

    /// A TUN packet another worker read for one of this worker's tunnels
    /// ([`Forward::Tun`]).
    pub fn handle_forwarded_tun(&mut self, now: Instant, packet: &[u8]) -> Option<(Dest, &[u8])> {
        self.forwarded = true;
        let r = self.route_tun(now, packet);
        self.forwarded = false;
        let (dest, esp, len) = r?;
        let buf = if esp { &self.esp_buf } else { &self.buf };
        Some((dest, buf.get(..len)?))
    }

    /// A newer login of `client` on another worker replaces tunnel `id` here
    /// ([`Forward::EndLogin`]).
    pub fn end_login(&mut self, now: Instant, id: TunnelId, client: &str) {
        self.end_replaced(now, id, client);
        self.flush(now);
    }

    /// Hands `f` to another worker, unless this is already a handed-over packet.
    fn forward(&mut self, f: Forward) {
        if self.forwarded || f.worker() == self.shard.index() {
            self.drops.count(Drop::NoSession);
        } else {
            self.forwards.push_back(f);
        }
    }

    /// A datagram arrived on `listener` from `remote`. Returns an inner IP packet to write
    /// to TUN, if the datagram carried one; then collect [`poll_transmit`](Self::poll_transmit).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        listener: Listener,
        remote: SocketAddr,
        bytes: &[u8],
    ) -> Option<&[u8]> {
        let range = self.datagram_range(now, listener, remote, bytes);
        self.flush(now);
        let (which, r) = range?;
        let buf = if which { &self.esp_buf } else { &self.buf };
        buf.get(r)
    }

    fn datagram_range(
        &mut self,
        now: Instant,
        listener: Listener,
        remote: SocketAddr,
        bytes: &[u8],
    ) -> Option<(bool, std::ops::Range<usize>)> {
        match listener {
            Listener::OpenVpnUdp => self.openvpn_datagram(now, remote, bytes),
            Listener::Ike => {
                self.ike_message(now, remote, false, bytes);
                None
            }
            Listener::IkeNatT => self.natt_datagram(now, remote, bytes),
            Listener::WireGuard => self.wg_datagram(now, remote, bytes),
            Listener::Quic => self.quic_datagram(now, remote, bytes),
        }
    }

    /// A TCP connection of the OpenVPN listener opened.
    pub fn handle_stream_open(&mut self, stream: StreamId, remote: SocketAddr) {
        self.streams.insert(stream, (None, remote));
    }

    /// One OpenVPN packet (deframed) on a TCP connection. Returns an inner IP packet for TUN.
    pub fn handle_stream_packet(
        &mut self,
        now: Instant,
        stream: StreamId,
        bytes: &[u8],
    ) -> Option<&[u8]> {
        let range = self.openvpn_stream_packet(now, stream, bytes);
        self.flush(now);
        self.buf.get(range?)
    }

    /// Whether the OpenVPN session on TCP connection `stream` completed its handshake (the
    /// client is admitted and has its address). The driver closes connections that are not
    /// established after its handshake timeout.
    pub fn stream_established(&self, stream: StreamId) -> bool {
        let Some((Some(id), _)) = self.streams.get(&stream) else {
            return false;
        };
        matches!(self.tunnels.get(id), Some(Tunnel::OpenVpn(t)) if t.session.is_established())
    }

    /// A TCP connection closed (or broke framing).
    pub fn handle_stream_closed(&mut self, now: Instant, stream: StreamId, reason: &str) {
        self.openvpn_stream_closed(now, stream, reason);
        self.flush(now);
    }

    /// A packet read from TUN: returns where to send its encrypted form and the bytes.
    pub fn handle_tun_packet(&mut self, now: Instant, packet: &[u8]) -> Option<(Dest, &[u8])> {
        let (dest, esp, len) = self.route_tun(now, packet)?;
        let buf = if esp { &self.esp_buf } else { &self.buf };
        Some((dest, buf.get(..len)?))
    }

    /// Time passed: runs every tunnel whose deadline is due, starts site SAs.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(q) = &self.quic {
            q.endpoint.clock().set(now);
        }
        while let Some(id) = self.deadlines.pop_due(now) {
            if let Some(t) = self.tunnels.get_mut(&id) {
                t.handle_timeout(now);
                for spi in t.lingered(now) {
                    self.esp_remove(id, spi);
                }
                self.dirty.push(id);
            }
        }
        self.start_site_sas(now);
        self.wg_timers(now);
        self.flush(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.deadlines.next(),
            self.next_site_attempt(),
            self.wg_next_tick(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next datagram or TCP frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// How many times the tunnels changed in a way a standby's copy must see soon: a new
    /// session, new keys (an OpenVPN renegotiation, an IKE or CHILD SA rekey), a peer that
    /// moved. A driver that replicates (HA) copies the state again when this grew, instead of
    /// waiting for its interval, so a failover right after such a change loses nothing.
    pub fn state_changes(&self) -> u64 {
        self.state_changes
    }

    /// See [`GatewayCore::state_changes`].
    pub(super) fn note_state_change(&mut self) {
        self.state_changes = self.state_changes.wrapping_add(1);
    }

    /// Drop counters, by reason.
    pub fn drops(&self) -> &Drops {
        &self.drops
    }

    /// Counts a drop the driver saw (a full socket or TUN, bad TCP framing).
    pub fn count_drop(&mut self, why: Drop) {
        self.drops.count(why);
    }

    /// Number of tunnels of every kind, in any state.
    pub fn tunnel_count(&self) -> usize {
        self.tunnels.len()
    }

    /// Number of pending deadlines (one per tunnel at most).
    pub fn deadline_count(&self) -> usize {
        self.deadlines.len()
    }

    /// Addresses leased to clients.
    pub fn leased_count(&self) -> usize {
        self.shard.pool().leased_count()
    }

    /// Ends every tunnel (the gateway stops): clients are told, sites get a Delete.
    pub fn shutdown(&mut self, now: Instant) {
        let ids: Vec<TunnelId> = self.tunnels.keys().copied().collect();
        for id in ids {
            if let Some(t) = self.tunnels.get_mut(&id) {
                t.close(now, "gateway shutting down");
                self.dirty.push(id);
            }
        }
        self.flush(now);
    }

    fn new_tunnel_id(&mut self) -> TunnelId {
        let id = self.next_id;
        self.next_id += self.shard.count() as TunnelId;
        id
    }

    /// The wall clock at `now`, for OpenVPN packet ids.
    fn unix_time(&self, now: Instant) -> u32 {
        let secs = self.cfg.unix_time + now.saturating_duration_since(self.cfg.start).as_secs();
        secs as u32
    }

    /// Collects output and events of every tunnel touched since the last call, until quiet;
    /// sets each one's deadline; removes closed tunnels.
    fn flush(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            self.drain(now, id);
        }
    }

    fn drain(&mut self, now: Instant, id: TunnelId) {
        loop {
            self.quic_pump(now, id);
            let Some(t) = self.tunnels.get_mut(&id) else {
                self.deadlines.remove(id);
                return;
            };
            t.collect_transmits(now, &mut self.transmits, &mut self.buf);
            let events = t.take_events();
            self.collect_jobs(id);
            let Some(t) = self.tunnels.get_mut(&id) else {
                continue;
            };
            if events.is_empty() {
                if t.is_closed() {
                    self.remove_tunnel(id);
                } else {
                    let at = t.poll_timeout(now);
                    self.deadlines.set(id, at);
                    if let Tunnel::Ike(e) = t {
                        for spi in e.local_spis() {
                            if self.by_local_spi.insert(spi, id).is_none() && self.shard.count() > 1
                            {
                                let me = self.shard.index();
                                self.shard
                                    .directory()
                                    .insert(shard::DirKey::IkeSpi(spi), me);
                            }
                        }
                    }
                }
                return;
            }
            for ev in events {
                self.handle_tunnel_event(now, id, ev);
            }
        }
    }
}
