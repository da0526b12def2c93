//! IKEv2 remote-access clients in the gateway core: UDP 500 and 4500, IKE SAs from the
//! engine's responder, and the ESP-in-UDP data path. IKEv2 clients share the pool, router,
//! one-session-per-certificate rule and anti-spoofing with OpenVPN clients.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use gatehouse_engine::esp::{EspInbound, EspOutbound};
use gatehouse_engine::ikev2::crypto::DhGroup;
use gatehouse_engine::ikev2::initiator::{IkeInitiator, InitiatorEvent};
use gatehouse_engine::ikev2::proposal_names::{esp_cipher_name, ike_suite_name};
use gatehouse_engine::ikev2::responder::{
    IkeAssignment, IkeEvent, IkeResponder, InitOutcome, ResponderConfig, Transmit, respond_to_init,
};
use gatehouse_engine::router::TunnelId;
use gatehouse_engine::wire::ikev2::{Classified, ExchangeType, IkeHeader, strip_non_esp_marker};
use gatehouse_engine::wire::ip::IpHeader;
use ipnet::Ipv4Net;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use super::{Gateway, OsEntropy};
use crate::stats::Drop;

/// One IKE SA: a remote-access client's or a site's (which either end may start).
pub(super) enum IkeSa {
    /// The peer started it.
    Responder(Box<IkeResponder>),
    /// We started it (site-to-site connections with `initiate = true`).
    Initiator(Box<IkeInitiator>),
}

impl IkeSa {
    fn handle_message(&mut self, now: Instant, from: SocketAddr, nat_t: bool, raw: &[u8]) {
        match self {
            IkeSa::Responder(r) => r.handle_message(now, from, nat_t, raw),
            IkeSa::Initiator(i) => i.handle_message(now, raw),
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        match self {
            IkeSa::Responder(r) => r.handle_timeout(now),
            IkeSa::Initiator(i) => i.handle_timeout(now),
        }
    }

    fn note_activity(&mut self, now: Instant, from: SocketAddr) {
        match self {
            IkeSa::Responder(r) => r.note_activity(now, from),
            IkeSa::Initiator(i) => i.note_activity(now),
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            IkeSa::Responder(r) => r.poll_transmit(),
            IkeSa::Initiator(i) => i.poll_transmit(),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            IkeSa::Responder(r) => r.poll_timeout(),
            IkeSa::Initiator(i) => i.poll_timeout(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            IkeSa::Responder(r) => r.is_closed(),
            IkeSa::Initiator(i) => i.is_closed(),
        }
    }

    /// The peer's address (IKE and ESP-in-UDP).
    pub(super) fn peer(&self) -> SocketAddr {
        match self {
            IkeSa::Responder(r) => r.peer(),
            IkeSa::Initiator(i) => i.gateway(),
        }
    }

    pub(super) fn spis(&self) -> (u64, u64) {
        match self {
            IkeSa::Responder(r) => r.spis(),
            IkeSa::Initiator(i) => i.spis(),
        }
    }

    /// Ends the SA with a Delete to the peer.
    pub(super) fn delete(&mut self, now: Instant, reason: &str) {
        match self {
            IkeSa::Responder(r) => r.delete(now, reason),
            IkeSa::Initiator(i) => i.disconnect(now),
        }
    }

    fn responder(&mut self) -> Option<&mut IkeResponder> {
        match self {
            IkeSa::Responder(r) => Some(r),
            IkeSa::Initiator(_) => None,
        }
    }
}

/// What an IKE SA reported.
enum AnyEvent {
    Responder(IkeEvent),
    Initiator(InitiatorEvent),
}

/// One IKE SA in the gateway: a remote-access client's or a site connection's.
pub(super) struct IkeEntry {
    pub(super) session: IkeSa,
    pub(super) client: Option<String>,
    pub(super) address: Option<Ipv4Addr>,
    pub(super) esp_out: Option<EspOutbound>,
    /// A rekeyed CHILD SA's outbound half, used once the client shows it has the new SA
    /// (traffic arrives on it, or the old one is deleted) - RFC 7296 2.8.
    pub(super) next_out: Option<(u32, EspOutbound)>,
    pub(super) our_spis: Vec<u32>,
    pub(super) rx_bytes: u64,
    pub(super) tx_bytes: u64,
    pub(super) connected: bool,
    /// The site connection (index into [`IkeState::sites`]) this SA belongs to.
    pub(super) site: Option<usize>,
    /// When its first CHILD SA came up.
    pub(super) established: Option<Instant>,
}

impl IkeEntry {
    pub(super) fn new(session: IkeSa, site: Option<usize>, name: Option<String>) -> Self {
        IkeEntry {
            session,
            client: name,
            address: None,
            esp_out: None,
            next_out: None,
            our_spis: Vec::new(),
            rx_bytes: 0,
            tx_bytes: 0,
            connected: false,
            site,
            established: None,
        }
    }
}

/// IKEv2 state of the gateway.
pub(super) struct IkeState {
    pub(super) cfg: Arc<ResponderConfig>,
    pub(super) ike: Arc<UdpSocket>,
    pub(super) natt: Arc<UdpSocket>,
    pub(super) entries: HashMap<TunnelId, IkeEntry>,
    pub(super) by_spis: HashMap<(u64, u64), TunnelId>,
    pub(super) by_init: HashMap<(SocketAddr, u64), TunnelId>,
    /// SAs we started, by any SPI they have used (our initiator SPI first; the peer's
    /// after it answered; new ones after rekeys).
    pub(super) by_local_spi: HashMap<u64, TunnelId>,
    /// Site-to-site and VNet-to-VNet connections.
    pub(super) sites: Vec<super::site::SiteConn>,
    pub(super) esp_in: HashMap<u32, (TunnelId, EspInbound)>,
    pub(super) cookie_secret: [u8; 32],
    pub(super) cookie_threshold: usize,
    /// ESP work buffer, allocated once at its full size so the data path neither allocates
    /// nor zero-fills per packet (the OpenVPN buffers change length with every packet).
    pub(super) esp_buf: Vec<u8>,
}

/// Size of [`IkeState::esp_buf`]: the largest UDP payload plus ESP overhead.
pub(super) const ESP_BUF: usize = 65536 + 256;

impl Gateway {
    /// A datagram on port 500 (`nat_t` false) or 4500 (`nat_t` true).
    pub(super) async fn handle_ike_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        nat_t: bool,
        bytes: &[u8],
    ) {
        let msg = if nat_t {
            match strip_non_esp_marker(bytes) {
                Classified::Ike(m) => m,
                Classified::Esp(p) => {
                    self.handle_esp(now, from, p).await;
                    return;
                }
                Classified::Keepalive => return,
            }
        } else {
            bytes
        };
        let Ok(h) = IkeHeader::parse_prefix(msg) else {
            self.stats.drop(Drop::Malformed);
            return;
        };
        let Some(ike) = self.ike.as_mut() else {
            return;
        };
        if h.responder_spi == 0 && h.exchange == ExchangeType::IKE_SA_INIT && !h.flags.response() {
            if let Some(&id) = ike.by_init.get(&(from, h.initiator_spi)) {
                if let Some(e) = ike.entries.get_mut(&id) {
                    e.session.handle_message(now, from, nat_t, msg);
                }
                self.drain_ike(now, id).await;
                self.drain_pending(now).await;
                return;
            }
            let half_open = ike.entries.values().filter(|e| e.client.is_none()).count();
            let by_addr = ike
                .sites
                .iter()
                .position(|s| s.peer.remote_addr == from.ip());
            let secret = (half_open >= ike.cookie_threshold).then_some(&ike.cookie_secret);
            let entropy = Box::new(OsEntropy(ring::rand::SystemRandom::new()));
            match respond_to_init(ike.cfg.clone(), entropy, now, from, nat_t, msg, secret) {
                InitOutcome::Reply(reply) => {
                    send_ike(ike, from, nat_t, &reply).await;
                }
                InitOutcome::Refused { reply, reason } => {
                    send_ike(ike, from, nat_t, &reply).await;
                    match by_addr.and_then(|i| ike.sites.get(i)) {
                        Some(s) => {
                            warn!(connection = %s.conn.name, remote = %from, reason = %reason, "connection refused")
                        }
                        None => {
                            warn!(client = "?", remote = %from, reason = %reason, transport = "ikev2", "client refused")
                        }
                    }
                }
                InitOutcome::Drop(why) => {
                    debug!(remote = %from, why, "IKE_SA_INIT dropped");
                    self.stats.drop(Drop::Malformed);
                }
                InitOutcome::Session(s) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    ike.by_spis.insert(s.spis(), id);
                    ike.by_init.insert((from, h.initiator_spi), id);
                    ike.entries
                        .insert(id, IkeEntry::new(IkeSa::Responder(s), None, None));
                    self.drain_ike(now, id).await;
                    self.drain_pending(now).await;
                }
            }
            return;
        }
        // Our SPI in the message: the responder's when the sender is the original
        // initiator of its IKE SA, else the initiator's.
        let ours = if h.flags.initiator() {
            h.responder_spi
        } else {
            h.initiator_spi
        };
        let Some(&id) = ike
            .by_spis
            .get(&(h.initiator_spi, h.responder_spi))
            .or_else(|| ike.by_local_spi.get(&ours))
        else {
            self.stats.drop(Drop::NoSession);
            return;
        };
        if let Some(e) = ike.entries.get_mut(&id) {
            e.session.handle_message(now, from, nat_t, msg);
        }
        self.drain_ike(now, id).await;
        self.drain_pending(now).await;
    }

    async fn handle_esp(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) {
        let Some(ike) = self.ike.as_mut() else {
            return;
        };
        let Some(spi) = packet
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            self.stats.drop(Drop::Malformed);
            return;
        };
        let Some((id, inbound)) = ike.esp_in.get_mut(&spi) else {
            self.stats.drop(Drop::NoSession);
            return;
        };
        let id = *id;
        let inner = match inbound.decrypt(packet, &mut ike.esp_buf) {
            // 59: a dummy packet (TFC); nothing to forward.
            Ok(p) if p.next_header == 59 => return,
            Ok(p) => p.packet.len(),
            Err(_) => {
                self.stats.drop(Drop::BadData);
                return;
            }
        };
        if let Some(e) = ike.entries.get_mut(&id) {
            e.session.note_activity(now, from);
            e.rx_bytes += inner as u64;
            if e.next_out.as_ref().is_some_and(|(s, _)| *s == spi) {
                e.esp_out = e.next_out.take().map(|(_, o)| o);
            }
        }
        // The decrypted packet sits at the front of the buffer.
        let Some(packet) = ike.esp_buf.get(..inner) else {
            self.stats.drop(Drop::Malformed);
            return;
        };
        let site_ok = |src: Ipv4Addr| {
            let site = ike.entries.get(&id).and_then(|e| e.site);
            site.and_then(|i| ike.sites.get(i))
                .is_some_and(|s| s.may_send(src))
        };
        match IpHeader::parse(packet) {
            Ok(IpHeader::V4 { src, .. }) if self.router.may_send(id, src) || site_ok(src) => {}
            Ok(IpHeader::V4 { .. }) => {
                self.stats.drop(Drop::Spoofed);
                return;
            }
            Ok(IpHeader::V6 { .. }) => {
                self.stats.drop(Drop::Ipv6);
                return;
            }
            Err(_) => {
                self.stats.drop(Drop::Malformed);
                return;
            }
        }
        if self.tun.try_send(packet).is_err() {
            let _ = self.tun.send(packet).await;
        }
    }

    /// A packet from TUN for an IKEv2 client: seal it into ESP and send it.
    pub(super) async fn ike_encrypt(&mut self, id: TunnelId, packet: &[u8]) -> bool {
        let Some(ike) = self.ike.as_mut() else {
            return false;
        };
        let Some(e) = ike.entries.get_mut(&id) else {
            return false;
        };
        let Some(out) = e.esp_out.as_mut() else {
            self.stats.drop(Drop::NotEstablished);
            return true;
        };
        let len = match out.encrypt(packet, &mut ike.esp_buf) {
            Ok(b) => b.len(),
            Err(_) => {
                self.stats.drop(Drop::NotEstablished);
                return true;
            }
        };
        e.tx_bytes += packet.len() as u64;
        let to = e.session.peer();
        let bytes = &ike.esp_buf[..len];
        if ike.natt.try_send_to(bytes, to).is_err() {
            let _ = ike.natt.send_to(bytes, to).await;
        }
        true
    }

    /// Sends an IKE SA's datagrams and acts on its events.
    pub(super) async fn drain_ike(&mut self, now: Instant, id: TunnelId) {
        loop {
            let Some(ike) = self.ike.as_mut() else {
                return;
            };
            let Some(e) = ike.entries.get_mut(&id) else {
                return;
            };
            let mut tx: Vec<Transmit> = Vec::new();
            while let Some(t) = e.session.poll_transmit() {
                tx.push(t);
            }
            let mut events = Vec::new();
            match &mut e.session {
                IkeSa::Responder(r) => {
                    while let Some(ev) = r.poll_event() {
                        events.push(AnyEvent::Responder(ev));
                    }
                }
                IkeSa::Initiator(i) => {
                    while let Some(ev) = i.poll_event() {
                        events.push(AnyEvent::Initiator(ev));
                    }
                    // Route every SPI this SA has used (they change with rekeys).
                    let (a, b) = i.spis();
                    for spi in [a, b] {
                        if spi != 0 {
                            ike.by_local_spi.insert(spi, id);
                        }
                    }
                }
            }
            let closed = e.session.is_closed();
            let next = e.session.poll_timeout();
            for t in tx {
                send_ike(ike, t.to, t.nat_t, &t.data).await;
            }
            if events.is_empty() {
                if closed {
                    self.remove_ike(id);
                } else if let Some(t) = next {
                    self.deadlines.push(std::cmp::Reverse((t, id)));
                }
                return;
            }
            for ev in events {
                match ev {
                    AnyEvent::Responder(ev) => self.handle_ike_event(now, id, ev),
                    AnyEvent::Initiator(ev) => self.handle_initiator_event(now, id, ev),
                }
            }
        }
    }

    fn handle_ike_event(&mut self, now: Instant, id: TunnelId, ev: IkeEvent) {
        match ev {
            IkeEvent::Authenticated { client, id: ike_id } => {
                debug!(client = %client, ike_id = %ike_id, "IKEv2 client authenticated");
                self.admit_ike(now, id, client);
            }
            IkeEvent::SiteAuthenticated {
                connection,
                id: ike_id,
                initial_contact,
            } => {
                self.admit_site(now, id, &connection, &ike_id, initial_contact);
            }
            IkeEvent::ChildUp {
                our_spi,
                peer_spi,
                cipher,
                sa,
                rekey_of,
            } => {
                let Some(ike) = self.ike.as_mut() else {
                    return;
                };
                let sa = *sa;
                ike.esp_in.insert(our_spi, (id, sa.inbound));
                let Some(e) = ike.entries.get_mut(&id) else {
                    return;
                };
                if rekey_of.is_some() && e.esp_out.is_some() {
                    e.next_out = Some((our_spi, sa.outbound));
                } else {
                    e.esp_out = Some(sa.outbound);
                }
                e.our_spis.push(our_spi);
                if e.site.is_some() {
                    if rekey_of.is_none() {
                        self.site_sa_up(now, id, cipher);
                    } else {
                        debug!(connection = %e.client.as_deref().unwrap_or("?"), our_spi, peer_spi, "CHILD SA rekeyed");
                    }
                    return;
                }
                if rekey_of.is_none() && !e.connected {
                    e.connected = true;
                    let ike_suite = e.session.responder().map(|r| r.suite());
                    if ike_suite.is_some_and(|s| s.dh == DhGroup::Modp1024) {
                        warn!(
                            client = %e.client.as_deref().unwrap_or("?"),
                            "client negotiated the weak MODP-1024 group (Windows' default): run the script `gatehouse-certs export --format windows` writes on it, then set `ikev2.allow_modp1024 = false`"
                        );
                    }
                    info!(
                        client = %e.client.as_deref().unwrap_or("?"),
                        remote = %e.session.peer(),
                        address = %e.address.map(|a| a.to_string()).unwrap_or_default(),
                        cipher = %esp_name(cipher),
                        ike = %ike_suite.map(ike_suite_name).unwrap_or_default(),
                        esp = %esp_cipher_name(cipher),
                        keys = "ike",
                        transport = "ikev2",
                        "client connected"
                    );
                } else {
                    debug!(client = %e.client.as_deref().unwrap_or("?"), our_spi, peer_spi, "CHILD SA rekeyed");
                }
            }
            IkeEvent::ChildDown { our_spi } => {
                if let Some(ike) = self.ike.as_mut() {
                    ike.esp_in.remove(&our_spi);
                    if let Some(e) = ike.entries.get_mut(&id) {
                        e.our_spis.retain(|s| *s != our_spi);
                        // The old SA is gone: the client surely has the new one.
                        if let Some((_, out)) = e.next_out.take() {
                            e.esp_out = Some(out);
                        }
                    }
                }
            }
            IkeEvent::Refused {
                client,
                reason,
                site,
            } => {
                let remote = self
                    .ike
                    .as_ref()
                    .and_then(|i| i.entries.get(&id))
                    .map(|e| e.session.peer().to_string())
                    .unwrap_or_default();
                if site {
                    warn!(connection = %client.as_deref().unwrap_or("?"), remote = %remote, reason = %reason, "connection refused");
                    return;
                }
                warn!(client = %client.as_deref().unwrap_or("?"), remote = %remote, reason = %reason, transport = "ikev2", "client refused");
            }
            IkeEvent::IkeRekeyed { old, new } => {
                if let Some(ike) = self.ike.as_mut() {
                    ike.by_spis.insert(new, id);
                    debug!(?old, ?new, "IKE SA rekeyed");
                }
            }
            IkeEvent::OldIkeSaGone { spis } => {
                if let Some(ike) = self.ike.as_mut()
                    && ike.by_spis.get(&spis) == Some(&id)
                {
                    ike.by_spis.remove(&spis);
                }
            }
            IkeEvent::Closed(reason) => {
                if self.is_site_sa(id) {
                    self.site_sa_gone(now, id, &reason);
                    return;
                }
                if let Some(e) = self.ike.as_ref().and_then(|i| i.entries.get(&id))
                    && e.connected
                {
                    info!(
                        client = %e.client.as_deref().unwrap_or("?"),
                        remote = %e.session.peer(),
                        address = %e.address.map(|a| a.to_string()).unwrap_or_default(),
                        reason = %reason,
                        rx_bytes = e.rx_bytes,
                        tx_bytes = e.tx_bytes,
                        "client disconnected"
                    );
                }
                self.release_ike(id);
            }
        }
    }

    fn admit_ike(&mut self, now: Instant, id: TunnelId, client: String) {
        self.replace_login(now, id, &client);
        let addr = match self.pool.lease(&client) {
            Ok(a) => a,
            Err(e) => {
                if let Some(r) = self
                    .ike
                    .as_mut()
                    .and_then(|i| i.entries.get_mut(&id))
                    .and_then(|entry| entry.session.responder())
                {
                    r.reject(now, &e.to_string());
                }
                return;
            }
        };
        self.router.insert(Ipv4Net::from(addr), id);
        self.by_client.insert(client.clone(), id);
        let assignment = IkeAssignment {
            address: addr,
            dns: self.cfg.dns.clone(),
            subnets: self.client_routes(),
            full_tunnel: self.cfg.full_tunnel,
        };
        let Some(e) = self.ike.as_mut().and_then(|i| i.entries.get_mut(&id)) else {
            return;
        };
        e.client = Some(client);
        e.address = Some(addr);
        if let Some(r) = e.session.responder() {
            r.accept(now, assignment);
        }
    }

    /// Returns an IKEv2 client's address and routes (only if still its own).
    pub(super) fn release_ike(&mut self, id: TunnelId) {
        let Some(e) = self.ike.as_mut().and_then(|i| i.entries.get_mut(&id)) else {
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

    fn remove_ike(&mut self, id: TunnelId) {
        self.release_ike(id);
        let Some(ike) = self.ike.as_mut() else {
            return;
        };
        if let Some(e) = ike.entries.remove(&id) {
            ike.by_spis.remove(&e.session.spis());
            ike.by_init.retain(|_, v| *v != id);
            ike.by_local_spi.retain(|_, v| *v != id);
            for spi in e.our_spis {
                ike.esp_in.remove(&spi);
            }
        }
    }
}

async fn send_ike(ike: &IkeState, to: SocketAddr, nat_t: bool, data: &[u8]) {
    if nat_t {
        let mut d = Vec::with_capacity(data.len() + 4);
        d.extend_from_slice(&[0, 0, 0, 0]);
        d.extend_from_slice(data);
        let _ = ike.natt.send_to(&d, to).await;
    } else {
        let _ = ike.ike.send_to(data, to).await;
    }
}

pub(super) fn esp_name(c: gatehouse_engine::esp::EspCipher) -> String {
    match c {
        gatehouse_engine::esp::EspCipher::AesGcm16 { key_bits } => format!("AES-GCM-16-{key_bits}"),
        gatehouse_engine::esp::EspCipher::ChaCha20Poly1305 => "CHACHA20-POLY1305".into(),
        gatehouse_engine::esp::EspCipher::AesCbc { key_bits, integ } => format!(
            "AES-CBC-{key_bits}/{}",
            gatehouse_engine::ikev2::proposal_names::integ_name(integ).to_uppercase()
        ),
    }
}
