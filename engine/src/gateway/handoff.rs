//! Handing a worker's tunnels to the next process (a restart for an upgrade, issue 17).
//!
//! The driver stops the worker, calls [`GatewayCore::prepare_handoff`] (tunnels that cannot
//! move are ended the way a shutdown ends them, so their clients reconnect at once) and sends
//! what that produced, then consumes the core with [`GatewayCore::into_handoff`]: nothing can
//! seal with its keys afterwards. The next process builds the same worker's core and calls
//! [`GatewayCore::import_handoff`] before it serves a packet.
//!
//! What moves, per protocol (docs/handoff.md has the reasons):
//! - OpenVPN over UDP, established (with its control-channel wrapper, if any): the session
//!   ([`crate::openvpn::server::SessionHandoff`]), its client's address, its virtual address,
//!   certificate serial and times. The TLS session cannot move: the new process renegotiates
//!   at once.
//! - IKEv2 remote-access SAs, established: the IKE SA
//!   ([`crate::ikev2::responder::ResponderHandoff`]) and its ESP SAs from the core's table
//!   (keys, outbound sequence numbers jumped by [`HANDOFF_ESP_SKIP`], replay windows), the
//!   SPIs claimed again in the new process's SPI table.
//! - Site SAs, established, whoever started them: as IKEv2 remote-access SAs, named by their
//!   connection (the gateway's own, [`crate::ikev2::initiator::InitiatorHandoff`], in
//!   [`CoreHandoff::initiated`]; see `handoff_initiated.rs`).
//! - OpenVPN over TCP, QUIC, WireGuard, sessions still handshaking: not moved.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::shard::{DirKey, Login};
use super::tunnel::{Common, IkeSa, IkeTunnel, OvpnTransport, OvpnTunnel, Tunnel};
use super::{GatewayCore, Protocol, TunnelId};
use crate::esp::table::OwnerSas;
use crate::esp::{
    EspCipher, EspInbound, EspInboundState, EspOutbound, EspOutboundState, KeyMaterial,
};
use crate::ikev2::initiator::InitiatorHandoff;
use crate::ikev2::responder::{IkeResponder, ResponderHandoff};
use crate::openvpn::replay::{REPLAY_WINDOW_WORDS, ReplayWindow};
use crate::openvpn::server::{ServerSession, SessionHandoff, back, ms_ago};

/// Sequence numbers a moved outbound ESP SA skips: as for OpenVPN's packet ids, the old
/// process stopped sealing before it exported, so this only guards against a bug; the
/// client's replay window takes the jump (1/65536 of the SA's 2^32 numbers).
pub const HANDOFF_ESP_SKIP: u64 = 1 << 16;

/// How far ahead of the live counters a standby's copy ([`GatewayCore::snapshot_for_standby`])
/// writes OpenVPN packet ids and outbound ESP sequence numbers: the active gateway keeps
/// sealing after a snapshot, and the standby seals from the copied value, so this must exceed
/// what one key can send between two snapshots plus the time the takeover takes (2^24:
/// 16.7 M packets, over 8 M packets a second per key at one snapshot a second). It costs
/// 1/256 of a key's 2^32 ids per takeover.
pub const STANDBY_MARGIN: u32 = 1 << 24;

/// The snapshot's format version; an importer refuses any other.
pub const HANDOFF_VERSION: u32 = 1;

/// What one worker's core hands to its successor.
#[derive(Serialize, Deserialize)]
pub struct CoreHandoff {
    /// [`HANDOFF_VERSION`].
    pub version: u32,
    /// The worker's index, and how many workers there were: tunnels are steered by these
    /// (peer-id residues, source-address hashing), so the successor must have as many.
    pub worker: usize,
    /// Number of workers.
    pub workers: usize,
    /// OpenVPN UDP sessions.
    pub openvpn: Vec<OvpnHandoff>,
    /// IKEv2 SAs the peer started (remote-access clients, sites).
    #[serde(default)]
    pub ike: Vec<IkeHandoff>,
    /// Site SAs this gateway started.
    #[serde(default)]
    pub initiated: Vec<IkeHandoff<InitiatorHandoff>>,
}

/// An inbound ESP SA.
#[derive(Serialize, Deserialize)]
pub struct EspInHandoff {
    /// Our SPI.
    pub spi: u32,
    /// The cipher.
    pub cipher: EspCipher,
    /// Key material.
    pub key: Vec<u8>,
    /// The replay window.
    pub replay_highest: u32,
    /// Its bitmap.
    pub replay_bits: Vec<u64>,
}

/// An outbound ESP SA.
#[derive(Serialize, Deserialize)]
pub struct EspOutHandoff {
    /// The client's SPI.
    pub spi: u32,
    /// The cipher.
    pub cipher: EspCipher,
    /// Key material.
    pub key: Vec<u8>,
    /// The next sequence number, jumped by [`HANDOFF_ESP_SKIP`].
    pub next_seq: u64,
}

/// An IKEv2 tunnel: a remote-access client's or a site's SA the peer started
/// ([`ResponderHandoff`]), or a site SA we started ([`InitiatorHandoff`]).
#[derive(Serialize, Deserialize)]
pub struct IkeHandoff<S = ResponderHandoff> {
    /// The core's facts.
    pub common: CommonHandoff,
    /// The IKE SA.
    pub sa: S,
    /// Inbound ESP SAs.
    pub esp_in: Vec<EspInHandoff>,
    /// The outbound ESP SA in use.
    pub esp_out: Option<EspOutHandoff>,
    /// After a rekey, the next one (with its inbound SPI).
    pub esp_next: Option<(u32, EspOutHandoff)>,
    /// Inner bytes and packets: rx, tx, rx, tx.
    pub counters: (u64, u64, u64, u64),
}

fn esp_in_out(sa: EspInbound) -> EspInHandoff {
    esp_in_state(sa.into_state())
}

fn esp_in_state(st: EspInboundState) -> EspInHandoff {
    EspInHandoff {
        spi: st.spi,
        cipher: st.cipher,
        key: st.key.as_bytes().to_vec(),
        replay_highest: st.replay.highest(),
        replay_bits: st.replay.bitmap().to_vec(),
    }
}

fn esp_out_out(sa: EspOutbound) -> EspOutHandoff {
    esp_out_state(sa.into_state(), HANDOFF_ESP_SKIP)
}

fn esp_out_state(mut st: EspOutboundState, skip: u64) -> EspOutHandoff {
    st.skip(skip);
    EspOutHandoff {
        spi: st.spi,
        cipher: st.cipher,
        key: st.key.as_bytes().to_vec(),
        next_seq: st.next_seq,
    }
}

fn esp_in_in(h: EspInHandoff) -> Result<EspInbound, String> {
    let bits: [u64; REPLAY_WINDOW_WORDS] = h
        .replay_bits
        .as_slice()
        .try_into()
        .map_err(|_| "ESP replay window of the wrong size")?;
    let replay = ReplayWindow::from_parts(h.replay_highest, bits).ok_or("ESP replay window")?;
    EspInbound::restore(EspInboundState {
        spi: h.spi,
        cipher: h.cipher,
        key: KeyMaterial::new(&h.key),
        replay,
    })
    .map_err(|e| e.to_string())
}

fn esp_out_in(h: EspOutHandoff) -> Result<EspOutbound, String> {
    EspOutbound::restore(EspOutboundState {
        spi: h.spi,
        cipher: h.cipher,
        key: KeyMaterial::new(&h.key),
        next_seq: h.next_seq,
    })
    .map_err(|e| e.to_string())
}

/// Time-independent facts the core keeps about a tunnel (its `Common`).
#[derive(Serialize, Deserialize)]
pub struct CommonHandoff {
    /// The certificate's name.
    pub client: String,
    /// The certificate's serial (live revocation).
    pub serial: Option<Vec<u8>>,
    /// Its virtual address (None: a site SA).
    pub address: Option<Ipv4Addr>,
    /// The data cipher's name.
    pub cipher: Option<String>,
    /// Milliseconds since it connected.
    pub connected_ms_ago: u64,
    /// Milliseconds since its keys were last negotiated.
    pub last_handshake_ms_ago: u64,
}

/// An OpenVPN UDP tunnel.
#[derive(Serialize, Deserialize)]
pub struct OvpnHandoff {
    /// Where its datagrams go.
    pub remote: SocketAddr,
    /// The core's facts.
    pub common: CommonHandoff,
    /// The session.
    pub session: SessionHandoff,
}

impl CommonHandoff {
    fn of(now: Instant, c: &Common) -> Option<Self> {
        Some(Self {
            client: c.client.clone()?,
            serial: c.serial.clone(),
            address: c.address,
            cipher: c.cipher.clone(),
            connected_ms_ago: ms_ago(now, c.connected_at?),
            last_handshake_ms_ago: c.last_handshake.map_or(0, |t| ms_ago(now, t)),
        })
    }

    pub(super) fn into_common(self, now: Instant) -> Common {
        Common {
            client: Some(self.client),
            serial: self.serial,
            address: self.address,
            handshaking: false,
            connected_at: Some(back(now, self.connected_ms_ago)),
            revoked: false,
            cipher: self.cipher,
            last_handshake: Some(back(now, self.last_handshake_ms_ago)),
        }
    }
}

/// A moved tunnel's ESP SAs, rebuilt, with our inbound SPIs (claimed).
pub(super) struct ClaimedEsp {
    pub(super) inbound: Vec<EspInbound>,
    pub(super) current: Option<EspOutbound>,
    pub(super) next: Option<(u32, EspOutbound)>,
    pub(super) our_spis: Vec<u32>,
}

/// What an imported IKE SA belongs to.
#[derive(Clone, Copy)]
enum ImportAs {
    /// A remote-access client, with its address (claimed from the pool).
    Client(Ipv4Addr),
    /// The site connection of this index.
    Site(usize),
}

/// Whether the tunnel moves to the next process.
fn movable(t: &Tunnel) -> bool {
    match t {
        Tunnel::OpenVpn(o) => {
            o.transport == OvpnTransport::Udp
                && o.session.is_established()
                && o.common.address.is_some()
                && o.common.connected_at.is_some()
                && !o.common.revoked
        }
        Tunnel::Ike(i) => {
            i.connected
                && match &i.sa {
                    // A client has its address; a site SA has none but its connection.
                    IkeSa::Responder(r) => {
                        r.can_hand_over() && (i.common.address.is_some() || i.site.is_some())
                    }
                    IkeSa::Initiator(s) => s.can_hand_over() && i.site.is_some(),
                }
                && i.common.connected_at.is_some()
                && !i.common.revoked
        }
        _ => false,
    }
}

impl GatewayCore {
    /// First step of a handoff: ends every tunnel that will not move (OpenVPN over TCP gets
    /// RESTART, QUIC a CONNECTION_CLOSE, sites a Delete; WireGuard peers
    /// re-handshake by themselves) so their clients reconnect to the next process at once.
    /// Send what [`poll_transmit`](Self::poll_transmit) has afterwards, then call
    /// [`into_handoff`](Self::into_handoff). Returns how many tunnels were ended.
    pub fn prepare_handoff(&mut self, now: Instant) -> usize {
        let ids: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|(_, t)| !movable(t) && !t.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            if let Some(t) = self.tunnels.get_mut(&id) {
                t.close(now, "gateway restarting for an upgrade");
                self.dirty.push(id);
            }
        }
        self.flush(now);
        ids.len()
    }

    /// Consumes the core and exports every tunnel that can move. The core is gone
    /// afterwards, so nothing seals with the exported keys here again.
    pub fn into_handoff(mut self, now: Instant) -> CoreHandoff {
        let mut openvpn = Vec::new();
        let mut ike = Vec::new();
        let mut initiated = Vec::new();
        let ids: Vec<TunnelId> = self.tunnels.keys().copied().collect();
        for id in ids {
            let Some(t) = self.tunnels.remove(&id) else {
                continue;
            };
            if !movable(&t) {
                continue;
            }
            if let Tunnel::Ike(i) = t {
                let mut sas = self.esp.take_owner(id);
                let i = *i;
                let Some(common) = CommonHandoff::of(now, &i.common) else {
                    continue;
                };
                // Inbound SAs already deleted (lingering for packets in flight) stay behind.
                sas.inbound
                    .retain(|s| !i.lingering.iter().any(|(spi, _)| *spi == s.spi()));
                let counters = (i.rx_bytes, i.tx_bytes, i.rx_packets, i.tx_packets);
                let esp_in: Vec<EspInHandoff> = sas.inbound.into_iter().map(esp_in_out).collect();
                let esp_out = sas.current.map(esp_out_out);
                let esp_next = sas.next.map(|(spi, o)| (spi, esp_out_out(o)));
                match i.sa {
                    IkeSa::Responder(r) => {
                        if let Some(sa) = r.into_handoff(now) {
                            ike.push(IkeHandoff {
                                common,
                                sa,
                                esp_in,
                                esp_out,
                                esp_next,
                                counters,
                            });
                        }
                    }
                    IkeSa::Initiator(s) => {
                        if let Some(sa) = s.into_handoff(now) {
                            initiated.push(IkeHandoff {
                                common,
                                sa,
                                esp_in,
                                esp_out,
                                esp_next,
                                counters,
                            });
                        }
                    }
                }
                continue;
            }
            if let Tunnel::OpenVpn(o) = t {
                let OvpnTunnel {
                    session,
                    remote,
                    common,
                    ..
                } = *o;
                let Some(common) = CommonHandoff::of(now, &common) else {
                    continue;
                };
                match session.into_handoff(now) {
                    Ok(session) => openvpn.push(OvpnHandoff {
                        remote,
                        common,
                        session,
                    }),
                    Err(e) => {
                        warn!(client = %common.client, error = %e, "session not handed over")
                    }
                }
            }
        }
        CoreHandoff {
            version: HANDOFF_VERSION,
            worker: self.shard.index(),
            workers: self.shard.count(),
            openvpn,
            ike,
            initiated,
        }
    }

    /// A copy of every tunnel that can move, for a standby gateway (issue 17, active-standby),
    /// leaving the core serving. Counters that seal (OpenVPN packet ids, outbound ESP
    /// sequence numbers) are written [`STANDBY_MARGIN`] ahead, IKE IVs
    /// [`crate::ikev2::responder::HANDOFF_IV_SKIP`] ahead, so that the standby, which
    /// continues from the copy, never repeats a nonce this core used after the snapshot
    /// (as long as no key seals more than the margin before the standby takes over). What
    /// this core receives after the snapshot is not in the copied replay windows: the
    /// standby would accept such a packet once more if an attacker replayed it.
    pub fn snapshot_for_standby(&self, now: Instant) -> CoreHandoff {
        let mut openvpn = Vec::new();
        let mut ike = Vec::new();
        let mut initiated = Vec::new();
        for (&id, t) in self.tunnels.iter() {
            if !movable(t) {
                continue;
            }
            match t {
                Tunnel::Ike(i) => {
                    let Some(common) = CommonHandoff::of(now, &i.common) else {
                        continue;
                    };
                    let sas = self.esp.export_owner(id);
                    let margin = u64::from(STANDBY_MARGIN);
                    let esp_in: Vec<EspInHandoff> = sas
                        .inbound
                        .into_iter()
                        .filter(|s| !i.lingering.iter().any(|(spi, _)| *spi == s.spi))
                        .map(esp_in_state)
                        .collect();
                    let esp_out = sas.current.map(|o| esp_out_state(o, margin));
                    let esp_next = sas.next.map(|(spi, o)| (spi, esp_out_state(o, margin)));
                    let counters = (i.rx_bytes, i.tx_bytes, i.rx_packets, i.tx_packets);
                    match &i.sa {
                        IkeSa::Responder(r) => {
                            if let Some(sa) = r.snapshot_handoff(now) {
                                ike.push(IkeHandoff {
                                    common,
                                    sa,
                                    esp_in,
                                    esp_out,
                                    esp_next,
                                    counters,
                                });
                            }
                        }
                        IkeSa::Initiator(s) => {
                            if let Some(sa) = s.snapshot_handoff(now) {
                                initiated.push(IkeHandoff {
                                    common,
                                    sa,
                                    esp_in,
                                    esp_out,
                                    esp_next,
                                    counters,
                                });
                            }
                        }
                    }
                }
                Tunnel::OpenVpn(o) => {
                    let Some(common) = CommonHandoff::of(now, &o.common) else {
                        continue;
                    };
                    match o.session.snapshot_handoff(now, STANDBY_MARGIN) {
                        Ok(session) => openvpn.push(OvpnHandoff {
                            remote: o.remote,
                            common,
                            session,
                        }),
                        Err(e) => {
                            warn!(client = %common.client, error = %e, "session not copied for the standby")
                        }
                    }
                }
                _ => {}
            }
        }
        CoreHandoff {
            version: HANDOFF_VERSION,
            worker: self.shard.index(),
            workers: self.shard.count(),
            openvpn,
            ike,
            initiated,
        }
    }

    /// Takes over the tunnels of `h` (exported by the previous process's worker of the same
    /// index) before this core serves anything. Returns how many it took; a tunnel it cannot
    /// take (its address is leased already, a peer-id in use, no OpenVPN configured) is
    /// skipped with a warning, and its client reconnects by itself.
    pub fn import_handoff(&mut self, now: Instant, h: CoreHandoff) -> Result<usize, String> {
        if h.version != HANDOFF_VERSION {
            return Err(format!(
                "handoff state version {} (this gatehoused reads {HANDOFF_VERSION})",
                h.version
            ));
        }
        if h.workers != self.shard.count() || h.worker != self.shard.index() {
            return Err(format!(
                "handoff state of worker {} of {} given to worker {} of {}: keep `workers` unchanged across an upgrade",
                h.worker,
                h.workers,
                self.shard.index(),
                self.shard.count()
            ));
        }
        let mut taken = 0;
        for o in h.openvpn {
            let client = o.common.client.clone();
            match self.import_openvpn(now, o) {
                Ok(()) => taken += 1,
                Err(e) => warn!(client = %client, error = %e, "session not taken over"),
            }
        }
        for i in h.ike {
            let client = i.common.client.clone();
            match self.import_ike(now, i) {
                Ok(()) => taken += 1,
                Err(e) => warn!(client = %client, error = %e, "IKE SA not taken over"),
            }
        }
        for i in h.initiated {
            let name = i.common.client.clone();
            match self.import_initiated(now, i) {
                Ok(()) => taken += 1,
                Err(e) => warn!(connection = %name, error = %e, "site SA not taken over"),
            }
        }
        self.flush(now);
        Ok(taken)
    }

    fn import_ike(&mut self, now: Instant, i: IkeHandoff) -> Result<(), String> {
        let cfg = self
            .cfg
            .ikev2
            .clone()
            .ok_or("IKEv2 is not configured any more")?;
        let spis = (i.sa.spi_i, i.sa.spi_r);
        if self.by_spis.contains_key(&spis) {
            return Err("its IKE SPIs are in use".into());
        }
        let ClaimedEsp {
            inbound,
            current,
            next,
            our_spis,
        } = self.claim_esp(i.esp_in, i.esp_out, i.esp_next)?;
        let table = self.shard.spis().clone();
        let release = |table: &crate::esp::SpiTable| {
            for &s in &our_spis {
                table.release(s);
            }
        };
        // A client's address, or a site SA's connection.
        let target = match (&i.sa.site, i.common.address) {
            (Some(name), _) => self
                .sites
                .iter()
                .position(|c| c.cfg.peer.name == *name && !c.retired)
                .map(ImportAs::Site)
                .ok_or_else(|| format!("no site connection named {name:?} here")),
            (None, Some(addr)) => self
                .claim_address(&i.common.client, addr)
                .map(|()| ImportAs::Client(addr)),
            (None, None) => Err("a client SA without its address".into()),
        };
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                release(&table);
                return Err(e);
            }
        };
        let unclaim = |core: &mut Self| {
            if let ImportAs::Client(addr) = target {
                core.shard.pool().release(&i.common.client, addr);
            }
        };
        let mut r = match IkeResponder::from_handoff(cfg, (self.entropy)(), now, i.sa) {
            Ok(r) => r,
            Err(e) => {
                release(&table);
                unclaim(self);
                return Err(e);
            }
        };
        r.set_spi_table(table.clone());
        r.set_psk_throttle(self.shard.psk_throttle().clone());
        let remote = r.peer();
        let id = self.new_tunnel_id();
        let cipher = current.as_ref().map(EspOutbound::cipher);
        if !self.esp.restore_owner(
            id,
            OwnerSas {
                inbound,
                current,
                next,
            },
        ) {
            release(&table);
            unclaim(self);
            return Err("an ESP SPI is in use".into());
        }
        let client = i.common.client.clone();
        self.register_ike_spi(spis.1);
        self.by_spis.insert(spis, id);
        let site = match target {
            ImportAs::Client(addr) => {
                self.register_login(id, &client, addr, r.has_ipv6());
                info!(client = %client, remote = %remote, address = %addr, transport = "ikev2", "session taken over from the previous process");
                None
            }
            ImportAs::Site(idx) => {
                info!(connection = %client, remote = %remote, "site SA taken over from the previous process");
                Some(idx)
            }
        };
        let mut t = IkeTunnel::new(IkeSa::Responder(Box::new(r)), site, Some(client.clone()));
        t.our_spis = our_spis;
        t.spi_pairs.push(spis);
        t.connected = true;
        t.established = Some(back(now, i.common.connected_ms_ago));
        (t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets) = i.counters;
        t.common = i.common.into_common(now);
        self.tunnels.insert(id, Tunnel::Ike(Box::new(t)));
        self.dirty.push(id);
        if let (Some(idx), Some(cipher)) = (site, cipher) {
            self.sites[idx].sas.push(id);
            // Routes the connection's prefixes to it and marks the connection up; the SA
            // keeps the times it came with, and no handshake is counted.
            let kept = self.ike(id).map(|e| {
                (
                    e.established,
                    e.common.connected_at,
                    e.common.last_handshake,
                )
            });
            self.site_sa_up(now, id, cipher);
            let c = self.counters.handshakes_ok.get_mut(Protocol::Site);
            *c = c.saturating_sub(1);
            if let (Some((established, connected, handshake)), Some(e)) = (kept, self.ike_mut(id)) {
                e.established = established;
                e.common.connected_at = connected;
                e.common.last_handshake = handshake;
            }
        }
        Ok(())
    }

    fn import_openvpn(&mut self, now: Instant, o: OvpnHandoff) -> Result<(), String> {
        let cfg = self
            .cfg
            .openvpn
            .clone()
            .ok_or("OpenVPN is not configured any more")?;
        let peer_id = o.session.peer_id;
        if self.by_peer_id.contains_key(&peer_id) || !self.shard.owns_id(peer_id) {
            return Err(format!("peer-id {peer_id} is not free on this worker"));
        }
        let addr = o
            .common
            .address
            .ok_or("an OpenVPN session without its address")?;
        self.claim_address(&o.common.client, addr)?;
        let session = match ServerSession::from_handoff(cfg, (self.entropy)(), now, o.session) {
            Ok(s) => s,
            Err(e) => {
                self.shard.pool().release(&o.common.client, addr);
                return Err(e.to_string());
            }
        };
        let id = self.new_tunnel_id();
        let client = o.common.client.clone();
        self.register_login(id, &client, addr, true);
        self.by_udp.insert(o.remote, id);
        self.by_peer_id.insert(peer_id, id);
        info!(client = %client, remote = %o.remote, address = %addr, peer_id, transport = "openvpn-udp", "session taken over from the previous process");
        self.tunnels.insert(
            id,
            Tunnel::OpenVpn(Box::new(OvpnTunnel {
                session,
                transport: OvpnTransport::Udp,
                remote: o.remote,
                common: o.common.into_common(now),
            })),
        );
        self.dirty.push(id);
        Ok(())
    }

    /// Rebuilds a moved tunnel's ESP SAs and claims their inbound SPIs in the worker's
    /// table (released again when one is in use).
    pub(super) fn claim_esp(
        &self,
        esp_in: Vec<EspInHandoff>,
        esp_out: Option<EspOutHandoff>,
        esp_next: Option<(u32, EspOutHandoff)>,
    ) -> Result<ClaimedEsp, String> {
        let inbound: Vec<EspInbound> = esp_in
            .into_iter()
            .map(esp_in_in)
            .collect::<Result<_, _>>()?;
        let current = esp_out.map(esp_out_in).transpose()?;
        let next = match esp_next {
            Some((spi, o)) => Some((spi, esp_out_in(o)?)),
            None => None,
        };
        let our_spis: Vec<u32> = inbound.iter().map(EspInbound::spi).collect();
        let table = self.shard.spis().clone();
        let mut claimed = Vec::new();
        for &spi in &our_spis {
            if !table.claim_exact(spi) {
                for s in claimed {
                    table.release(s);
                }
                return Err(format!("ESP SPI {spi:#010x} is in use"));
            }
            claimed.push(spi);
        }
        Ok(ClaimedEsp {
            inbound,
            current,
            next,
            our_spis,
        })
    }

    /// Holds `addr` for `client` in the shared pool (it held it in the previous process).
    fn claim_address(&mut self, client: &str, addr: Ipv4Addr) -> Result<(), String> {
        self.shard.pool().reserve(client, addr)
    }

    /// Routes `addr` to tunnel `id` and records the login (one session per certificate).
    /// With `v6`, its IPv6 address too (it follows the IPv4 one: not in the snapshot).
    fn register_login(&mut self, id: TunnelId, client: &str, addr: Ipv4Addr, v6: bool) {
        self.router.insert(Ipv4Net::from(addr), id);
        if let Some(p) = self.pool6().filter(|_| v6) {
            self.router
                .insert_v6(ipnet::Ipv6Net::from(p.address_of(addr)), id);
        }
        self.shard.logins().insert(
            client.to_owned(),
            Login {
                worker: self.shard.index(),
                tunnel: id,
                addr,
            },
        );
        let pool = self.cfg.client_pool;
        if self.shard.count() > 1 && !self.shard.may_lease(pool, addr) {
            let w = self.shard.index();
            self.shard.directory().insert(DirKey::Addr(addr), w);
        }
    }
}
