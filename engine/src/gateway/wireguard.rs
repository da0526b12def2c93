//! WireGuard in the gateway core: every configured peer (a `[[connection]] type =
//! "wireguard"` site or VNet, or a point-to-site client with a WireGuard identity) is one
//! [`Tunnel::WireGuard`] on one worker, created when the configuration arrives
//! ([`GatewayCore::set_wireguard`]) and kept while the peer is configured.
//!
//! - Which worker: a peer with an endpoint lives on the worker its endpoint steers to, one
//!   that only dials in on the worker its public key hashes to. Each worker's tunnels get
//!   24-bit indexes `index % workers == worker` (as OpenVPN peer-ids), and every message but
//!   a handshake initiation carries our index in its receiver index, so a datagram that
//!   reaches another worker (the peer moved) is handed over by its index.
//! - A handshake initiation names no index of ours: its sender is found by decrypting its
//!   static key (`parse_handshake_anon`) and looking it up among the configured peers.
//! - Routing and anti-spoofing: a peer's prefixes, IPv4 and IPv6 (a client's /32 and, with
//!   an IPv6 pool, its /128), are routed to its tunnel, and a decrypted packet must come
//!   from them (the router check every tunnel gets).
//! - An authenticated packet from a new address moves the tunnel there (roaming: `Roamed`).
//! - boringtun's timers run every [`TIMER_TICK`] from `handle_timeout` (see
//!   [`crate::wireguard`] for why WireGuard brings its own clock).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, TunnResult};
use ipnet::IpNet;
use tracing::{debug, info, warn};

use super::tunnel::{Common, Tunnel, WgTunnel};
use super::{
    Dest, Drop, Event, Forward, GatewayCore, Listener, Protocol, SiteStatus, Traffic, TunnelId,
};
use crate::idhash::IdMap;
use crate::wire::mss::{clamp_mss, mss_above};
use crate::wireguard::{
    HANDSHAKES_PER_SECOND, TIMER_TICK, WgInput, WgKey, WgPeerConfig, WgPublicKey, WgRole,
    WgSession, WireGuardConfig, x25519,
};

/// The cipher WireGuard always uses (status, logs).
const CIPHER: &str = "ChaCha20-Poly1305";
/// The largest TCP MSS through a WireGuard tunnel: wg-quick's default MTU, 1420 (1500 less
/// the outer IPv6 and UDP headers and WireGuard's 32 bytes), less 40 for the inner IPv4 and
/// TCP headers. SYNs both ways are clamped to it, so full-size segments are not fragmented on
/// the underlay whatever the peer's interface MTU.
const MAX_MSS: u16 = 1380;
/// How long a peer with `persistent_keepalive = k` may stay silent before its tunnel counts
/// as down: three intervals and WireGuard's keepalive timeout.
fn silence_limit(k: u16) -> std::time::Duration {
    std::time::Duration::from_secs(3 * u64::from(k) + 10)
}

/// Indexes are 24 bits (boringtun puts a session counter in the low 8 bits).
const INDEX_LIMIT: u32 = 1 << 24;

/// The core's WireGuard state.
pub(super) struct WgState {
    key: WgKey,
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    peers: Vec<Arc<WgPeerConfig>>,
    limiter: Arc<RateLimiter>,
    by_index: IdMap<u32, TunnelId>,
    by_name: HashMap<String, TunnelId>,
    next_index: u32,
    next_tick: Option<Instant>,
    /// When the rate limiter's count was last reset (each second).
    last_reset: Option<Instant>,
    /// Scratch for timer and handshake output.
    buf: Vec<u8>,
    /// Whether any peer has an IPv6 prefix (then the core carries IPv6).
    ipv6: bool,
}

impl GatewayCore {
    /// Turns WireGuard on with `cfg`, applies a changed peer list (a reload, a revoked client
    /// identity), or turns it off (None). Peers removed or changed lose their tunnel at once
    /// (a client's traffic stops; it counts as revoked), new ones get one; untouched ones
    /// keep theirs. Returns the tunnels ended.
    pub fn set_wireguard(&mut self, now: Instant, cfg: Option<WireGuardConfig>) -> usize {
        let key_changed = match (&self.wg, &cfg) {
            (Some(w), Some(c)) => w.key != c.private_key,
            (None, None) => return 0,
            _ => true,
        };
        let keep: Vec<Arc<WgPeerConfig>> = match (&cfg, key_changed) {
            (Some(c), false) => c.peers.iter().cloned().map(Arc::new).collect(),
            _ => Vec::new(),
        };
        // End the tunnels of peers that are gone or changed.
        let ended: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter_map(|(id, t)| match t {
                Tunnel::WireGuard(w) if !w.removed && !keep.iter().any(|p| **p == *w.peer) => {
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        for id in &ended {
            self.wg_end(now, *id);
        }
        let Some(cfg) = cfg else {
            self.flush(now);
            self.wg = None;
            return ended.len();
        };
        if key_changed || self.wg.is_none() {
            let secret = cfg.private_key.secret();
            let public = x25519::PublicKey::from(&secret);
            let (by_index, by_name) = match self.wg.take() {
                // Ended tunnels still leave these maps when they are removed.
                Some(w) => (w.by_index, w.by_name),
                None => (IdMap::default(), HashMap::new()),
            };
            self.wg = Some(WgState {
                key: cfg.private_key.clone(),
                secret,
                public,
                peers: Vec::new(),
                limiter: Arc::new(RateLimiter::new(&public, HANDSHAKES_PER_SECOND)),
                by_index,
                by_name,
                next_index: self.shard.index() as u32,
                next_tick: None,
                last_reset: None,
                buf: vec![0; super::ESP_BUF],
                ipv6: false,
            });
            info!(public_key = %cfg.private_key.public_key(), peers = cfg.peers.len(), "WireGuard on");
        }
        let peers: Vec<Arc<WgPeerConfig>> = cfg.peers.into_iter().map(Arc::new).collect();
        if let Some(w) = self.wg.as_mut() {
            w.ipv6 = peers.iter().any(|p| p.has_ipv6());
            w.peers = peers.clone();
            w.next_tick = Some(now);
        }
        for p in peers {
            if self.wg_owner(&p) != self.shard.index() {
                continue;
            }
            let exists = self.wg.as_ref().is_some_and(|w| {
                w.by_name.get(&p.name).is_some_and(|id| {
                    matches!(self.tunnels.get(id), Some(Tunnel::WireGuard(t)) if !t.removed && t.peer == p)
                })
            });
            if !exists {
                self.wg_create(p);
            } else if let WgRole::Client { address } = p.role {
                // Held already; again after a reload replaced the pool (idempotent).
                let _ = self.shard.pool().reserve(&p.name, address);
            }
        }
        self.flush(now);
        ended.len()
    }

    /// The gateway's WireGuard public key (None: WireGuard is off).
    pub fn wireguard_public_key(&self) -> Option<WgPublicKey> {
        self.wg.as_ref().map(|w| w.key.public_key())
    }

    /// The worker that holds `peer`'s tunnel.
    fn wg_owner(&self, peer: &WgPeerConfig) -> usize {
        let n = self.shard.count();
        match peer.endpoint {
            Some(e) => super::worker_of_ip(e.ip(), n),
            None => {
                let k = peer.public_key.0;
                u32::from_le_bytes([k[0], k[1], k[2], k[3]]) as usize % n.max(1)
            }
        }
    }

    /// Whether a WireGuard peer has IPv6 prefixes (see [`GatewayCore::carries_ipv6`]).
    pub(super) fn wg_carries_ipv6(&self) -> bool {
        self.wg.as_ref().is_some_and(|w| w.ipv6)
    }

    /// The worker of the WireGuard peer whose prefixes hold `dst`, if one does.
    pub(super) fn wg_owner_of_dst(&self, dst: IpAddr) -> Option<usize> {
        let w = self.wg.as_ref()?;
        let p = w
            .peers
            .iter()
            .filter(|p| p.allowed.iter().any(|n| n.contains(&dst)))
            .max_by_key(|p| {
                p.allowed
                    .iter()
                    .filter(|n| n.contains(&dst))
                    .map(|n| n.prefix_len())
                    .max()
            })?;
        Some(self.wg_owner(p))
    }

    fn wg_create(&mut self, peer: Arc<WgPeerConfig>) {
        let count = self.shard.count() as u32;
        let Some(w) = self.wg.as_mut() else {
            return;
        };
        // Indexes of this worker: index % count == worker; skip ones in use after a wrap.
        let mut index = w.next_index;
        while w.by_index.contains_key(&index) {
            index = (index + count) % INDEX_LIMIT;
        }
        w.next_index = (index + count) % INDEX_LIMIT;
        let address = match peer.role {
            WgRole::Client { address } => {
                if let Err(why) = self.shard.pool().reserve(&peer.name, address) {
                    warn!(client = %peer.name, address = %address, reason = %why, "WireGuard client not served: its address cannot be reserved (issue it a free address of `client_pool`)");
                    return;
                }
                Some(address)
            }
            WgRole::Site { .. } => None,
        };
        let Some(w) = self.wg.as_mut() else {
            return;
        };
        let mut session = WgSession::new(&w.key, &peer, index, w.limiter.clone());
        if peer.is_site() && peer.endpoint.is_some() {
            session.initiate(&mut w.buf);
        }
        let id = self.new_tunnel_id();
        let Some(w) = self.wg.as_mut() else {
            return;
        };
        w.by_index.insert(index, id);
        w.by_name.insert(peer.name.clone(), id);
        for p in &peer.allowed {
            self.router.insert_net(*p, id);
        }
        debug!(peer = %peer.name, index, endpoint = ?peer.endpoint, "WireGuard peer ready");
        if let (true, Some(e)) = (peer.is_site(), peer.endpoint) {
            info!(connection = %peer.name, remote = %e, "connection initiating");
        }
        let t = WgTunnel {
            session,
            peer: peer.clone(),
            removed: false,
            last_rx: None,
            common: Common {
                client: Some(peer.name.clone()),
                address,
                ..Common::default()
            },
        };
        self.tunnels.insert(id, Tunnel::WireGuard(Box::new(t)));
        self.dirty.push(id);
    }

    /// Ends tunnel `id` (its peer was removed or revoked): routes go now, the tunnel when it
    /// is drained.
    fn wg_end(&mut self, now: Instant, id: TunnelId) {
        let Some(Tunnel::WireGuard(t)) = self.tunnels.get_mut(&id) else {
            return;
        };
        t.removed = true;
        let peer = t.peer.clone();
        self.router.remove_tunnel(id);
        if peer.is_site() {
            info!(connection = %peer.name, "connection removed or changed by a reload: its tunnel ends");
            if self
                .tunnels
                .get(&id)
                .is_some_and(|t| t.common().connected_at.is_some())
            {
                self.events.push_back(Event::SiteDown {
                    name: peer.name.clone(),
                    reason: "the connection was removed or changed".into(),
                });
            }
        } else {
            // A client identity leaves the list only when it is revoked (or deleted).
            info!(client = %peer.name, transport = "wireguard", "session ended: WireGuard identity revoked or removed");
            self.counters.revoked += 1;
            self.log_disconnect(now, id, "WireGuard identity revoked");
            self.events.push_back(Event::Revoked {
                tunnel: id,
                client: peer.name.clone(),
            });
        }
        self.dirty.push(id);
    }

    /// A removed tunnel leaves the WireGuard maps and gives its address back.
    pub(super) fn wg_forget(&mut self, id: TunnelId, t: &WgTunnel) {
        self.router.remove_tunnel(id);
        // The identity's new tunnel (a changed peer of the same name) may hold the address.
        let successor = self
            .wg
            .as_ref()
            .and_then(|w| w.by_name.get(&t.peer.name))
            .is_some_and(|o| *o != id);
        if let (WgRole::Client { address }, false) = (&t.peer.role, successor) {
            self.shard.pool().release(&t.peer.name, *address);
        }
        let Some(w) = self.wg.as_mut() else {
            return;
        };
        let index = t.session.index();
        if w.by_index.get(&index) == Some(&id) {
            w.by_index.remove(&index);
        }
        if w.by_name.get(&t.peer.name) == Some(&id) {
            w.by_name.remove(&t.peer.name);
        }
    }

    /// Forgets a tunnel's keys (an operator's disconnect): its peer handshakes again.
    pub(super) fn wg_reset(&mut self, id: TunnelId) {
        let Some(w) = self.wg.as_ref() else {
            return;
        };
        let (key, limiter) = (w.key.clone(), w.limiter.clone());
        if let Some(Tunnel::WireGuard(t)) = self.tunnels.get_mut(&id) {
            let peer = t.peer.clone();
            t.session.reset(&key, &peer, limiter);
        }
    }

    /// A datagram on the WireGuard port: the range of `esp_buf` to write to TUN, if any.
    pub(super) fn wg_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<(bool, Range<usize>)> {
        let Some(w) = self.wg.as_mut() else {
            self.drops.count(Drop::NoSession);
            return None;
        };
        let id = if WgSession::is_initiation(bytes) {
            let init = w.limiter.verify_packet(Some(from.ip()), bytes, &mut w.buf);
            let peer_key = match init {
                Ok(Packet::HandshakeInit(p)) => parse_handshake_anon(&w.secret, &w.public, &p)
                    .ok()
                    .map(|h| h.peer_static_public),
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    // Under load: prove your address first (mac2).
                    let payload = cookie.to_vec();
                    self.transmits.push_back(super::Transmit {
                        dest: Dest::Udp {
                            from: Listener::WireGuard,
                            to: from,
                        },
                        payload,
                    });
                    return None;
                }
                _ => None,
            };
            let Some(peer_key) = peer_key else {
                self.drops.count(Drop::BadData);
                return None;
            };
            let Some(peer) = w.peers.iter().find(|p| p.public_key.0 == peer_key).cloned() else {
                self.drops.count(Drop::BadData);
                let n = self.drops.get(Drop::BadData);
                if n.is_power_of_two() {
                    info!(remote = %from, public_key = %WgPublicKey(peer_key), "WireGuard handshake from an unknown key ignored");
                }
                return None;
            };
            let owner = self.wg_owner(&peer);
            if owner != self.shard.index() {
                self.forward(Forward::Datagram {
                    worker: owner,
                    listener: Listener::WireGuard,
                    remote: from,
                    bytes: bytes.to_vec(),
                });
                return None;
            }
            match self.wg.as_ref().and_then(|w| w.by_name.get(&peer.name)) {
                Some(id) => *id,
                None => {
                    self.drops.count(Drop::NoSession);
                    return None;
                }
            }
        } else {
            let Some(index) = WgSession::receiver_of(bytes) else {
                self.drops.count(Drop::Malformed);
                return None;
            };
            match w.by_index.get(&index) {
                Some(id) => *id,
                None => {
                    let owner = self.shard.owner_of_id(index);
                    if owner != self.shard.index() {
                        self.forward(Forward::Datagram {
                            worker: owner,
                            listener: Listener::WireGuard,
                            remote: from,
                            bytes: bytes.to_vec(),
                        });
                    } else {
                        self.drops.count(Drop::NoSession);
                    }
                    return None;
                }
            }
        };
        let Some(Tunnel::WireGuard(t)) = self.tunnels.get_mut(&id) else {
            self.drops.count(Drop::NoSession);
            return None;
        };
        if t.removed {
            self.drops.count(Drop::NoSession);
            return None;
        }
        let handshakes = t.session.handshakes();
        let r = t.session.handle_datagram(from, bytes, &mut self.esp_buf);
        // Answers go where the message came from (a cookie too: it proves that address).
        let reply_to = if r.authenticated() || matches!(r, WgInput::Cookie) {
            Some(from)
        } else {
            t.session.remote()
        };
        while let Some(payload) = t.session.pop_transmit() {
            if let Some(to) = reply_to {
                self.transmits.push_back(super::Transmit {
                    dest: Dest::Udp {
                        from: Listener::WireGuard,
                        to,
                    },
                    payload,
                });
            }
        }
        let rekeyed = t.session.handshakes() > handshakes && handshakes > 0;
        if r.authenticated() {
            t.last_rx = Some(now);
        }
        // Up: a session with proof from the peer, and not reported up yet (first time, or
        // again after it was down).
        let now_up = t.session.is_up() && t.common.connected_at.is_none();
        if r.authenticated() {
            self.wg_roam(id, from);
        }
        if rekeyed && let Some(t) = self.tunnels.get_mut(&id) {
            t.common_mut().last_handshake = Some(now);
            *self.counters.rekeys.get_mut(Protocol::WireGuard) += 1;
        }
        if now_up {
            self.wg_up(now, id);
        }
        self.dirty.push(id);
        match r {
            WgInput::Packet(n) => {
                let src = self
                    .esp_buf
                    .get(..n)
                    .map_or(Err(Drop::Malformed), super::source_of);
                if !self.check_source(id, src) {
                    return None;
                }
                if let Some(p) = self.esp_buf.get_mut(..n) {
                    clamp_mss(p, MAX_MSS);
                }
                Some((true, 0..n))
            }
            WgInput::Rejected(why) => {
                self.drops.count(Drop::BadData);
                debug!(remote = %from, reason = %why, "WireGuard datagram refused");
                None
            }
            _ => None,
        }
    }

    /// The peer proved its key from `to`: the tunnel moves there.
    fn wg_roam(&mut self, id: TunnelId, to: SocketAddr) {
        let Some(Tunnel::WireGuard(t)) = self.tunnels.get_mut(&id) else {
            return;
        };
        let from = t.session.remote();
        if from == Some(to) {
            return;
        }
        t.session.set_remote(to);
        let name = t.peer.name.clone();
        let Some(from) = from else {
            return;
        };
        info!(peer = %name, from = %from, to = %to, transport = "wireguard", "WireGuard peer roamed to a new address");
        self.note_state_change();
        self.events.push_back(Event::Roamed {
            tunnel: id,
            from,
            to,
        });
    }

    /// A session came up (its first handshake, or again after it expired).
    fn wg_up(&mut self, now: Instant, id: TunnelId) {
        let Some(Tunnel::WireGuard(t)) = self.tunnels.get_mut(&id) else {
            return;
        };
        let peer = t.peer.clone();
        let remote = t.session.remote();
        match &peer.role {
            WgRole::Site { kind } => {
                let c = &mut t.common;
                c.connected_at = Some(now);
                c.last_handshake = Some(now);
                c.cipher = Some(CIPHER.into());
                *self.counters.handshakes_ok.get_mut(Protocol::WireGuard) += 1;
                info!(
                    connection = %peer.name,
                    kind = %kind,
                    remote = %remote.map(|r| r.to_string()).unwrap_or_default(),
                    transport = "wireguard",
                    cipher = CIPHER,
                    prefixes = ?peer.allowed.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    "connection up"
                );
                self.events.push_back(Event::SiteUp {
                    name: peer.name.clone(),
                });
            }
            WgRole::Client { .. } => self.connected(now, id, CIPHER, "wireguard", None),
        }
    }

    /// Runs boringtun's timers of every WireGuard tunnel when the tick is due.
    pub(super) fn wg_timers(&mut self, now: Instant) {
        let Some(w) = self.wg.as_mut() else {
            return;
        };
        if w.next_tick.is_some_and(|t| t > now) {
            return;
        }
        w.next_tick = Some(now + TIMER_TICK);
        if w.last_reset
            .is_none_or(|t| now.saturating_duration_since(t).as_secs() >= 1)
        {
            w.limiter.reset_count();
            w.last_reset = Some(now);
        }
        let ids: Vec<TunnelId> = w.by_name.values().copied().collect();
        for id in ids {
            let Some(w) = self.wg.as_mut() else {
                return;
            };
            let Some(Tunnel::WireGuard(t)) = self.tunnels.get_mut(&id) else {
                continue;
            };
            if t.removed {
                continue;
            }
            let expired = t.session.update_timers(&mut w.buf);
            // With keepalives configured the peer's silence is news well before WireGuard's
            // own expiry (9 minutes without a handshake).
            let silent = match (t.peer.persistent_keepalive, t.last_rx) {
                (Some(k), Some(at)) if t.common.connected_at.is_some() => {
                    now.saturating_duration_since(at) > silence_limit(k)
                }
                _ => false,
            };
            if expired {
                self.wg_down(now, id, "no handshake for too long (the peer is gone)");
            } else if silent {
                self.wg_down(now, id, "no keepalive from the peer for 3 intervals");
            }
            self.dirty.push(id);
        }
    }

    /// When the WireGuard timers run next.
    pub(super) fn wg_next_tick(&self) -> Option<Instant> {
        let w = self.wg.as_ref()?;
        if w.by_name.is_empty() {
            return None;
        }
        w.next_tick
    }

    /// A session expired: the site is down, the client disconnected (both come back with
    /// the peer's next handshake).
    fn wg_down(&mut self, now: Instant, id: TunnelId, reason: &str) {
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        if !t.is_site() {
            self.log_disconnect(now, id, reason);
            return;
        }
        let c = t.common_mut();
        if c.connected_at.take().is_none() {
            return;
        }
        let name = c.client.clone().unwrap_or_default();
        let traffic = t.traffic();
        info!(connection = %name, reason, rx_bytes = traffic.rx_bytes, tx_bytes = traffic.tx_bytes, "connection down");
        self.events.push_back(Event::SiteDown {
            name,
            reason: reason.to_owned(),
        });
    }

    /// Encrypts a TUN packet for WireGuard tunnel `id`: (destination, in esp_buf, length).
    pub(super) fn wg_encrypt(
        &mut self,
        id: TunnelId,
        packet: &[u8],
    ) -> Option<(Dest, bool, usize)> {
        let (Some(Tunnel::WireGuard(t)), Some(w)) = (self.tunnels.get_mut(&id), self.wg.as_mut())
        else {
            return None;
        };
        let Some(to) = t.session.remote() else {
            // A dial-in peer that has not dialed in.
            self.drops.count(Drop::NotEstablished);
            return None;
        };
        // A SYN whose MSS would not fit is clamped in a copy (one per connection).
        let packet = match w.buf.get_mut(..packet.len()) {
            Some(copy) if mss_above(packet, MAX_MSS) => {
                copy.copy_from_slice(packet);
                clamp_mss(copy, MAX_MSS);
                &*copy
            }
            _ => packet,
        };
        let n = t.session.encapsulate(packet, &mut self.esp_buf)?;
        Some((
            Dest::Udp {
                from: Listener::WireGuard,
                to,
            },
            true,
            n,
        ))
    }

    /// Status lines of the WireGuard sites and VNets this worker holds.
    pub(super) fn wg_site_status(&self, now: Instant) -> Vec<SiteStatus> {
        let mut v: Vec<SiteStatus> = self
            .tunnels
            .values()
            .filter_map(|t| match t {
                Tunnel::WireGuard(w) if !w.removed => Some(w),
                _ => None,
            })
            .filter_map(|w| {
                let WgRole::Site { kind } = w.peer.role else {
                    return None;
                };
                let (state, detail) = match w.common.connected_at {
                    Some(since) => (
                        "connected",
                        format!("for {}s", now.saturating_duration_since(since).as_secs()),
                    ),
                    None => ("connecting", String::new()),
                };
                let t = Traffic {
                    rx_bytes: w.session.rx_bytes,
                    tx_bytes: w.session.tx_bytes,
                    rx_packets: w.session.rx_packets,
                    tx_packets: w.session.tx_packets,
                };
                Some(SiteStatus {
                    name: w.peer.name.clone(),
                    kind: kind.to_owned(),
                    remote: w
                        .session
                        .remote()
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "(dials in)".into()),
                    state: state.into(),
                    detail,
                    rx_bytes: t.rx_bytes,
                    tx_bytes: t.tx_bytes,
                    sas: Vec::new(),
                })
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Prefixes routed to WireGuard peers, both families (tests).
    pub fn wireguard_routes(&self) -> Vec<IpNet> {
        let wg = |id: &TunnelId| matches!(self.tunnels.get(id), Some(Tunnel::WireGuard(_)));
        let v4 = self
            .router
            .iter()
            .filter(|(_, id)| wg(id))
            .map(|(p, _)| IpNet::V4(p));
        let v6 = self
            .router
            .iter_v6()
            .filter(|(_, id)| wg(id))
            .map(|(p, _)| IpNet::V6(p));
        v4.chain(v6).collect()
    }
}
