//! IKEv2 in the gateway core: UDP 500 and 4500, IKE SAs by SPI, cookies and the half-open
//! count, and the ESP-in-UDP data path with one inbound SA table (owner-checked, unique SPIs)
//! and make-before-break outbound switching on rekeys.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use tracing::{debug, warn};

use super::shard::DirKey;
use super::tunnel::{IkeSa, IkeTunnel, Tunnel, ike_transmit};
use super::{Dest, Drop, Event, Forward, GatewayCore, Listener, TunnelId, worker_of_ip};
use crate::esp::{EspSa, TableError};
use crate::ikev2::responder::{InitOutcome, respond_to_init};
use crate::wire::ikev2::{Classified, ExchangeType, IkeHeader, strip_non_esp_marker};

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
                if let Some(t) = self.ike_mut(id) {
                    t.sa.handle_message(now, from, nat_t, msg);
                }
                self.dirty.push(id);
                return;
            }
            let secret =
                (self.half_open >= self.cfg.cookie_threshold).then_some(&self.cfg.cookie_secret);
            let entropy = (self.entropy)();
            match respond_to_init(cfg, entropy, now, from, nat_t, msg, secret) {
                InitOutcome::Reply(reply) => {
                    self.transmits.push_back(ike_transmit(from, nat_t, &reply))
                }
                InitOutcome::Refused { reply, reason } => {
                    self.transmits.push_back(ike_transmit(from, nat_t, &reply));
                    let site = self.sites.iter().find(|s| s.cfg.remote.ip() == from.ip());
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
                InitOutcome::Session(mut s) => {
                    s.set_spi_table(self.shard.spis().clone());
                    let id = self.new_tunnel_id();
                    let spis = s.spis();
                    self.register_ike_spi(spis.1);
                    self.by_spis.insert(spis, id);
                    self.by_init.insert((from, h.initiator_spi), id);
                    let mut t = IkeTunnel::new(IkeSa::Responder(s), None, None);
                    t.init_key = Some((from, h.initiator_spi));
                    t.spi_pairs.push(spis);
                    t.common.handshaking = true;
                    self.half_open += 1;
                    self.tunnels.insert(id, Tunnel::Ike(Box::new(t)));
                    self.dirty.push(id);
                }
            }
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
        if before != after {
            // The responder moves only on an authenticated message (RFC 7296 2.23).
            self.roamed(id, before, after);
        }
        self.dirty.push(id);
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
        }
        let src = self
            .esp_buf
            .get(..len)
            .map_or(Err(Drop::Malformed), super::source_of);
        self.check_source(id, src).then_some(0..len)
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
