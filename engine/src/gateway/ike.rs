//! IKEv2 in the gateway core: UDP 500 and 4500, IKE SAs by SPI, cookies and the half-open
//! count, and the ESP-in-UDP data path with one inbound SA table (owner-checked, unique SPIs)
//! and make-before-break outbound switching on rekeys.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::shard::DirKey;
use super::tunnel::{IkeSa, IkeTunnel, Tunnel, ike_transmit};
use super::{Dest, Drop, Event, Forward, GatewayCore, Listener, TunnelId, worker_of_ip};
use crate::esp::{EspSa, TableError};
use crate::ikev2::responder::{InitGuard, InitOutcome, InitStep, prepare_init};
use crate::wire::ikev2::{Classified, ExchangeType, IkeHeader, strip_non_esp_marker};

/// Half-open IKE SAs from one address beyond which its IKE_SA_INIT requests need a cookie
/// even when the gateway is not under load: a spoofer cannot fill an address's share.
const PER_IP_COOKIE_AFTER: u32 = 4;

/// MODP exchanges (a costly exponentiation each) allowed per second under load, for peers
/// that offer no cheaper group (Windows' built-in client on its defaults).
const MODP_PER_SECOND: u32 = 10;

/// A token bucket of MODP exchanges: [`MODP_PER_SECOND`], bursts of as many.
#[derive(Debug, Default)]
pub(super) struct ModpBudget {
    tokens: u32,
    refilled: Option<Instant>,
}

impl ModpBudget {
    fn refill(&mut self, now: Instant) {
        let Some(last) = self.refilled else {
            self.tokens = MODP_PER_SECOND;
            self.refilled = Some(now);
            return;
        };
        let step = Duration::from_secs(1) / MODP_PER_SECOND;
        let elapsed = now.saturating_duration_since(last);
        let n = (elapsed.as_nanos() / step.as_nanos()).min(u128::from(MODP_PER_SECOND)) as u32;
        if n > 0 {
            self.tokens = (self.tokens + n).min(MODP_PER_SECOND);
            self.refilled = Some(if self.tokens == MODP_PER_SECOND {
                now
            } else {
                last + step * n
            });
        }
    }

    /// Whether one may be spent now.
    fn available(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0
    }

    fn spend(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.saturating_sub(1);
    }
}

/// What half-open SAs are counted by: the address, or an IPv6 address's /64.
pub(super) fn half_open_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => {
            let o = u128::from(a) & !((1u128 << 64) - 1);
            IpAddr::V6(o.into())
        }
    }
}

fn is_modp(g: crate::ikev2::crypto::DhGroup) -> bool {
    use crate::ikev2::crypto::DhGroup;
    matches!(g, DhGroup::Modp1024 | DhGroup::Modp2048 | DhGroup::Modp3072)
}

impl GatewayCore {
    pub(super) fn ike(&self, id: TunnelId) -> Option<&IkeTunnel> {
        match self.tunnels.get(&id) {
            Some(Tunnel::Ike(t)) => Some(t),
            _ => None,
        }
    }

    pub(super) fn ike_mut(&mut self, id: TunnelId) -> Option<&mut IkeTunnel> {
        match self.tunnels.get_mut(&id) {
            Some(Tunnel::Ike(t)) => Some(t),
            _ => None,
        }
    }

    /// A datagram on 4500: IKE behind the non-ESP marker, ESP, or a NAT keepalive.
    pub(super) fn natt_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<(bool, Range<usize>)> {
        match strip_non_esp_marker(bytes) {
            Classified::Ike(m) => {
                self.ike_message(now, from, true, m);
                None
            }
            Classified::Esp(p) => self.esp_datagram(now, from, p).map(|r| (true, r)),
            Classified::Keepalive => None,
        }
    }

    /// An IKE message from `from` (`nat_t`: it came on 4500).
    pub(super) fn ike_message(&mut self, now: Instant, from: SocketAddr, nat_t: bool, msg: &[u8]) {
        let Some(cfg) = self.cfg.ikev2.clone() else {
            return;
        };
        let Ok(h) = IkeHeader::parse_prefix(msg) else {
            self.drops.count(Drop::Malformed);
            return;
        };
        // A site's IKE belongs to the worker its peer address steers to.
        if self.shard.count() > 1 && self.cfg.sites.iter().any(|s| s.remote.ip() == from.ip()) {
            let w = worker_of_ip(from.ip(), self.shard.count());
            if w != self.shard.index() {
                self.forward_ike(w, from, nat_t, msg);
                return;
            }
        }
        if h.responder_spi == 0 && h.exchange == ExchangeType::IKE_SA_INIT && !h.flags.response() {
            if let Some(&id) = self.by_init.get(&(from, h.initiator_spi)) {
                // None: its key exchange is still out as a job; the answer follows.
                if let Some(t) = self.ike_mut(id) {
                    t.sa.handle_message(now, from, nat_t, msg);
                    self.count_discards(id);
                    self.dirty.push(id);
                }
                return;
            }
            let key = half_open_key(from.ip());
            let from_ip = self.half_open_by_ip.get(&key).copied().unwrap_or(0);
            if self.half_open >= self.cfg.max_half_open {
                self.drops.count(Drop::IkeHalfOpen);
                let n = self.drops.get(Drop::IkeHalfOpen);
                if n.is_power_of_two() {
                    warn!(remote = %from, limit = self.cfg.max_half_open, dropped = n, "too many half-open IKE SAs: IKE_SA_INIT dropped");
                }
                return;
            }
            if from_ip as usize >= self.cfg.max_half_open_per_ip {
                self.drops.count(Drop::IkePerIp);
                let n = self.drops.get(Drop::IkePerIp);
                if n.is_power_of_two() {
                    warn!(remote = %from, limit = self.cfg.max_half_open_per_ip, dropped = n, "too many half-open IKE SAs from one address: IKE_SA_INIT dropped");
                }
                return;
            }
            let loaded = self.half_open >= self.cfg.cookie_threshold;
            let cookies = loaded || from_ip >= PER_IP_COOKIE_AFTER;
            if cookies && self.ike_cookies.due(now) {
                let mut e = (self.entropy)();
                self.ike_cookies.rotate(now, &mut *e);
                debug!(
                    version = self.ike_cookies.version(),
                    "IKE cookie secret rotated"
                );
            }
            let modp_allowed = !loaded || self.modp_budget.available(now);
            let guard = InitGuard {
                cookies: cookies.then_some(&mut self.ike_cookies),
                prefer_cheap_groups: loaded,
                modp_allowed,
            };
            let offload = cfg.offload;
            let entropy = (self.entropy)();
            let outcome = match prepare_init(cfg, entropy, now, from, nat_t, msg, guard) {
                InitStep::Done(o) => o,
                InitStep::Work(w) => {
                    if loaded && is_modp(w.suite().dh) {
                        self.modp_budget.spend(now);
                    }
                    if offload {
                        // Counted as half-open while the key exchange runs elsewhere;
                        // retransmissions meanwhile find the reservation and are dropped.
                        let id = self.new_tunnel_id();
                        self.reserve_init(id, from, nat_t, h.initiator_spi);
                        self.push_init_job(id, w);
                        return;
                    }
                    w.run()
                }
            };
            self.init_outcome(from, nat_t, h.initiator_spi, None, outcome);
            return;
        }
        // Our SPI in the message: the responder's when the sender is the original initiator
        // of its IKE SA, else the initiator's.
        let ours = if h.flags.initiator() {
            h.responder_spi
        } else {
            h.initiator_spi
        };
        let Some(&id) = self
            .by_spis
            .get(&(h.initiator_spi, h.responder_spi))
            .or_else(|| self.by_local_spi.get(&ours))
        else {
            // Another worker's SA (its peer moved, or the kernel steered this elsewhere).
            let owner = (self.shard.count() > 1)
                .then(|| self.shard.directory().get(&DirKey::IkeSpi(ours)).copied())
                .flatten();
            match owner {
                Some(w) => self.forward_ike(w, from, nat_t, msg),
                None => self.drops.count(Drop::NoSession),
            }
            return;
        };
        let Some(t) = self.ike_mut(id) else {
            return;
        };
        let before = t.sa.peer();
        t.sa.handle_message(now, from, nat_t, msg);
        let after = t.sa.peer();
        self.count_discards(id);
        if before != after {
            // The responder moves only on an authenticated message (RFC 7296 2.23).
            self.roamed(id, before, after);
        }
        self.dirty.push(id);
    }

    /// Answers an IKE_SA_INIT request as `outcome` says (`reserved`: the tunnel id its
    /// offloaded key exchange was given).
    fn init_outcome(
        &mut self,
        from: SocketAddr,
        nat_t: bool,
        spi_i: u64,
        reserved: Option<TunnelId>,
        outcome: InitOutcome,
    ) {
        let key = half_open_key(from.ip());
        match outcome {
            InitOutcome::Reply(reply) => {
                self.transmits.push_back(ike_transmit(from, nat_t, &reply))
            }
            InitOutcome::Refused { reply, reason } => {
                self.transmits.push_back(ike_transmit(from, nat_t, &reply));
                let site = self
                    .sites
                    .iter()
                    .find(|s| !s.retired && s.cfg.remote.ip() == from.ip());
                match site {
                    Some(s) => {
                        warn!(connection = %s.cfg.peer.name, remote = %from, reason = %reason, "connection refused")
                    }
                    None => {
                        warn!(client = "?", remote = %from, reason = %reason, transport = "ikev2", "client refused")
                    }
                }
                self.events.push_back(Event::Refused {
                    client: None,
                    remote: from,
                    reason,
                });
            }
            InitOutcome::Drop(why) => {
                debug!(remote = %from, why, "IKE_SA_INIT dropped");
                self.drops.count(Drop::Malformed);
            }
            InitOutcome::Throttled(why) => {
                self.drops.count(Drop::IkeModp);
                let n = self.drops.get(Drop::IkeModp);
                if n.is_power_of_two() {
                    info!(remote = %from, why, per_second = MODP_PER_SECOND, dropped = n, "IKE_SA_INIT with a MODP group dropped under load (rate-limited)");
                }
            }
            InitOutcome::Session(mut s) => {
                s.set_spi_table(self.shard.spis().clone());
                s.set_psk_throttle(self.shard.psk_throttle().clone());
                let id = reserved.unwrap_or_else(|| self.new_tunnel_id());
                let spis = s.spis();
                self.register_ike_spi(spis.1);
                self.by_spis.insert(spis, id);
                self.by_init.insert((from, spi_i), id);
                let mut t = IkeTunnel::new(IkeSa::Responder(s), None, None);
                t.init_key = Some((from, spi_i));
                t.spi_pairs.push(spis);
                t.common.handshaking = true;
                self.half_open += 1;
                *self.half_open_by_ip.entry(key).or_default() += 1;
                self.tunnels.insert(id, Tunnel::Ike(Box::new(t)));
                self.dirty.push(id);
            }
        }
    }

    /// Holds the place of an IKE_SA_INIT whose key exchange runs as a job.
    fn reserve_init(&mut self, id: TunnelId, from: SocketAddr, nat_t: bool, spi_i: u64) {
        self.by_init.insert((from, spi_i), id);
        self.half_open += 1;
        *self
            .half_open_by_ip
            .entry(half_open_key(from.ip()))
            .or_default() += 1;
        self.init_jobs.insert(id, (from, nat_t, spi_i));
    }

    /// An offloaded IKE_SA_INIT key exchange came back: the reservation ends and the request
    /// is answered as if just computed.
    pub(super) fn ike_init_done(&mut self, id: TunnelId, outcome: InitOutcome) {
        let Some((from, nat_t, spi_i)) = self.init_jobs.remove(&id) else {
            return;
        };
        if self.by_init.get(&(from, spi_i)) == Some(&id) {
            self.by_init.remove(&(from, spi_i));
        }
        self.half_open = self.half_open.saturating_sub(1);
        let key = half_open_key(from.ip());
        if let Some(n) = self.half_open_by_ip.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.half_open_by_ip.remove(&key);
            }
        }
        self.init_outcome(from, nat_t, spi_i, Some(id), outcome);
    }

    /// Counts what IKE SA `id` dropped while handling a message: messages failing the
    /// integrity check, IKE_AUTH requests of a throttled PSK site.
    fn count_discards(&mut self, id: TunnelId) {
        let Some(t) = self.ike_mut(id) else {
            return;
        };
        let d = t.sa.take_discards();
        for _ in 0..d.integrity {
            self.drops.count(Drop::IkeIntegrity);
            let n = self.drops.get(Drop::IkeIntegrity);
            if n.is_power_of_two() {
                debug!(
                    tunnel = id,
                    dropped = n,
                    "IKE message failed its integrity check"
                );
            }
        }
        for _ in 0..d.psk_throttled {
            self.drops.count(Drop::PskBackoff);
        }
    }

    /// An ESP packet on 4500: decrypted into `self.esp_buf`; returns the inner packet's range.
    fn esp_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &[u8],
    ) -> Option<Range<usize>> {
        let (id, next_header, len) = match self.esp.decrypt(packet, &mut self.esp_buf) {
            Ok((id, p)) => (id, p.next_header, p.packet.len()),
            Err(TableError::Malformed) => {
                self.drops.count(Drop::Malformed);
                return None;
            }
            Err(TableError::UnknownSpi(spi)) => {
                // Our SPIs name the worker holding the SA (the peer moved to an address
                // steered elsewhere).
                self.forward(Forward::Datagram {
                    worker: self.shard.owner_of_id(spi),
                    listener: Listener::IkeNatT,
                    remote: from,
                    bytes: packet.to_vec(),
                });
                return None;
            }
            Err(_) => {
                self.drops.count(Drop::BadData);
                return None;
            }
        };
        let Some(Tunnel::Ike(t)) = self.tunnels.get_mut(&id) else {
            return None;
        };
        // Authentic: the peer may have moved (NAT rebinding).
        let before = t.sa.peer();
        t.sa.note_activity(now, from);
        let after = t.sa.peer();
        if before != after {
            self.roamed(id, before, after);
        }
        // 59: a dummy packet (TFC); nothing to forward.
        if next_header == 59 {
            return None;
        }
        if let Some(t) = self.ike_mut(id) {
            t.rx_bytes += len as u64;
            t.rx_packets += 1;
        }
        let src = self
            .esp_buf
            .get(..len)
            .map_or(Err(Drop::Malformed), super::source_of);
        if !self.check_source(id, src) {
            return None;
        }
        if let Some(name) = self.own_interface_of(id) {
            let packet = self.esp_buf.get(..len)?.to_vec();
            self.iface_out.push_back((name, packet));
            return None;
        }
        Some(0..len)
    }

    /// Seals a TUN packet for IKE tunnel `id` into `self.esp_buf`.
    pub(super) fn esp_encrypt(
        &mut self,
        id: TunnelId,
        packet: &[u8],
    ) -> Option<(Dest, bool, usize)> {
        let len = match self.esp.encrypt(id, packet, &mut self.esp_buf) {
            Ok(n) => n,
            Err(_) => {
                self.drops.count(Drop::NotEstablished);
                return None;
            }
        };
        let Some(Tunnel::Ike(t)) = self.tunnels.get_mut(&id) else {
            return None;
        };
        t.tx_bytes += packet.len() as u64;
        t.tx_packets += 1;
        let dest = Dest::Udp {
            from: Listener::IkeNatT,
            to: t.sa.peer(),
        };
        Some((dest, true, len))
    }

    /// Hands an IKE message to worker `w` (with the non-ESP marker again if it came on 4500).
    fn forward_ike(&mut self, w: usize, from: SocketAddr, nat_t: bool, msg: &[u8]) {
        let (listener, bytes) = if nat_t {
            let mut b = Vec::with_capacity(msg.len() + 4);
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(msg);
            (Listener::IkeNatT, b)
        } else {
            (Listener::Ike, msg.to_vec())
        };
        self.forward(Forward::Datagram {
            worker: w,
            listener,
            remote: from,
            bytes,
        });
    }

    /// Tells the other workers that IKE SPI `spi` of ours lives here.
    pub(super) fn register_ike_spi(&mut self, spi: u64) {
        if self.shard.count() > 1 {
            let me = self.shard.index();
            self.shard.directory().insert(DirKey::IkeSpi(spi), me);
        }
    }

    /// An IKE tunnel's peer moved.
    /// The switch from port 500 to 4500 during the handshake (NAT-T, RFC 7296 2.23) is not
    /// roaming and is not reported.
    fn roamed(&mut self, id: TunnelId, from: SocketAddr, to: SocketAddr) {
        let Some(t) = self.ike(id) else {
            return;
        };
        if !t.connected {
            return;
        }
        let name = t.common.client.clone().unwrap_or_default();
        tracing::info!(client = %name, from = %from, to = %to, transport = "ikev2", "peer moved to a new address");
        self.note_state_change();
        self.events.push_back(Event::Roamed {
            tunnel: id,
            from,
            to,
        });
    }

    /// Installs a new CHILD SA of tunnel `id` (with `rekey`, make before break).
    pub(super) fn esp_install(&mut self, id: TunnelId, spi: u32, sa: EspSa, rekey: bool) {
        if !self.esp.install(id, spi, sa.inbound, sa.outbound, rekey) {
            // Cannot happen with the SPI table; never let one SA take another's traffic.
            warn!(
                spi,
                id, "ESP SPI already in use by another SA; not installed"
            );
            return;
        }
        if let Some(t) = self.ike_mut(id) {
            t.our_spis.push(spi);
        }
    }

    /// Removes every ESP SA of tunnel `id` (it is closing).
    pub(super) fn drop_esp(&mut self, id: TunnelId) {
        for spi in self.esp.remove_owner(id) {
            self.shard.spis().release(spi);
        }
        if let Some(t) = self.ike_mut(id) {
            t.our_spis.clear();
        }
    }

    /// CHILD SA `spi` of tunnel `id` was deleted: its inbound half still opens packets in
    /// flight for [`ESP_LINGER`](super::tunnel::ESP_LINGER), then goes.
    pub(super) fn esp_linger(&mut self, now: Instant, id: TunnelId, spi: u32) {
        match self.ike_mut(id) {
            Some(t) if t.our_spis.contains(&spi) => {
                t.lingering.push((spi, now + super::tunnel::ESP_LINGER));
                self.dirty.push(id);
            }
            _ => self.esp_remove(id, spi),
        }
    }

    /// Removes inbound ESP SA `spi` if tunnel `id` owns it.
    pub(super) fn esp_remove(&mut self, id: TunnelId, spi: u32) {
        if self.esp.remove(id, spi) {
            self.shard.spis().release(spi);
        }
        if let Some(t) = self.ike_mut(id) {
            t.our_spis.retain(|s| *s != spi);
        }
    }
}
