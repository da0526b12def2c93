//! Written once for every protocol: admission into the pool and router, one session per
//! certificate, release, connect/disconnect logging and events, anti-spoofing, routing TUN
//! packets, live revocation and configuration updates.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use ipnet::{Ipv4Net, Ipv6Net};
use tracing::{debug, info, warn};

use super::revocation::{RevokedSerials, cert_serial, hex};
use super::shard::{DirKey, Login};
use super::tunnel::{IkeSa, Tunnel, TunnelEvent};
use super::{Dest, Drop, Event, GatewayCore, Protocol, TunnelId};
use crate::ikev2::crypto::DhGroup;
use crate::ikev2::proposal_names::{esp_cipher_name, ike_suite_name};
use crate::ikev2::responder::{IkeAssignment, IkeEvent, ResponderConfig};
use crate::openvpn::server::{Assignment, CloseReason, ServerConfig, ServerEvent};
use crate::pool6::Ipv6Assignment;
use crate::wire::ip::IpHeader;
use crate::wire::mss::{clamp_mss, mss_above};

/// The source address of an inner packet, or why it is dropped.
pub(super) fn source_of(packet: &[u8]) -> Result<IpAddr, Drop> {
    match IpHeader::parse(packet) {
        Ok(IpHeader::V4 { src, .. }) => Ok(IpAddr::V4(src)),
        // Client TUNs send router solicitations and neighbour discovery (link-local
        // sources, multicast destinations): not for the gateway to forward.
        Ok(IpHeader::V6 { src, dst, .. }) if link_scoped(src) || dst.is_multicast() => {
            Err(Drop::Ipv6)
        }
        Ok(IpHeader::V6 { src, .. }) => Ok(IpAddr::V6(src)),
        Err(_) => Err(Drop::Malformed),
    }
}

/// fe80::/10 or the unspecified address: never a source the gateway forwards.
fn link_scoped(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80 || a.is_unspecified()
}

/// The reason every revoked tunnel ends with (clients read it in AUTH_FAILED).
const REVOKED: &str = "certificate revoked";
/// Why a session ended on an operator's `disconnect`.
const DISCONNECTED: &str = "disconnected by the operator";

impl GatewayCore {
    /// Anti-spoofing: may tunnel `id` send from `src`? Counts the drop when not.
    pub(super) fn check_source(&mut self, id: TunnelId, src: Result<IpAddr, Drop>) -> bool {
        let allowed = match src {
            Ok(IpAddr::V4(s)) => {
                self.router.may_send(id, s) || self.site_may_send(id, IpAddr::V4(s))
            }
            // Without an IPv6 pool or IPv6 site prefixes no tunnel carries IPv6 (not a
            // spoofing attempt).
            Ok(IpAddr::V6(_)) if !self.carries_ipv6() => {
                self.drops.count(Drop::Ipv6);
                return false;
            }
            Ok(IpAddr::V6(s)) => {
                self.router.lookup_v6(s) == Some(id) || self.site_may_send(id, IpAddr::V6(s))
            }
            Err(d) => {
                self.drops.count(d);
                return false;
            }
        };
        if !allowed {
            self.drops.count(Drop::Spoofed);
        }
        allowed
    }

    /// Routes a TUN packet to its tunnel and encrypts it: (destination, in esp_buf, length).
    pub(super) fn route_tun(&mut self, now: Instant, packet: &[u8]) -> Option<(Dest, bool, usize)> {
        let dst = match IpHeader::parse(packet) {
            Ok(IpHeader::V4 { dst, .. }) => IpAddr::V4(dst),
            Ok(IpHeader::V6 { dst, .. }) if self.carries_ipv6() => IpAddr::V6(dst),
            Ok(IpHeader::V6 { .. }) => {
                self.drops.count(Drop::Ipv6);
                return None;
            }
            Err(_) => {
                self.drops.count(Drop::Malformed);
                return None;
            }
        };
        let Some(id) = self.router.lookup_ip(dst) else {
            match self.owner_of_dst(dst) {
                Some(worker) => self.forward(super::Forward::Tun {
                    worker,
                    packet: packet.to_vec(),
                }),
                None => self.drops.count(Drop::NoRoute),
            }
            return None;
        };
        match self.tunnels.get_mut(&id) {
            Some(Tunnel::OpenVpn(t)) => {
                // A TCP SYN(-ACK) whose MSS would not fit the tunnel is clamped in a copy
                // (rare: one per connection). The ESP work buffer is free on this path and
                // always large enough, so nothing is allocated.
                let max = super::openvpn::max_mss(t);
                let packet = match self.esp_buf.get_mut(..packet.len()) {
                    Some(copy) if mss_above(packet, max) => {
                        copy.copy_from_slice(packet);
                        clamp_mss(copy, max);
                        &*copy
                    }
                    _ => packet,
                };
                if t.session.encrypt(now, packet, &mut self.buf).is_err() {
                    self.drops.count(Drop::NotEstablished);
                    return None;
                }
                let dest = match t.transport {
                    super::tunnel::OvpnTransport::Udp => Dest::Udp {
                        from: super::Listener::OpenVpnUdp,
                        to: t.remote,
                    },
                    super::tunnel::OvpnTransport::Stream(s) => Dest::Stream(s),
                };
                Some((dest, false, self.buf.len()))
            }
            Some(Tunnel::Ike(_)) => self.esp_encrypt(id, packet),
            Some(Tunnel::WireGuard(_)) => self.wg_encrypt(id, packet),
            Some(Tunnel::Quic(_)) => self.quic_send(now, id, packet),
            None => {
                self.drops.count(Drop::NoRoute);
                None
            }
        }
    }

    /// The other worker whose tunnel a TUN packet for `dst` is for: the one leasing the
    /// client address, or holding the site whose prefix it is in.
    fn owner_of_dst(&self, dst: IpAddr) -> Option<usize> {
        let count = self.shard.count();
        if count == 1 {
            return None;
        }
        // A WireGuard peer's prefixes (a client's /32 and /128 too) route to its fixed worker.
        if let Some(w) = self.wg_owner_of_dst(dst) {
            return (w != self.shard.index()).then_some(w);
        }
        // A client's IPv6 address goes where its IPv4 address goes; a site's IPv6 prefix
        // where the site is.
        let dst = match dst {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => match self.pool6().and_then(|p| p.v4_of(a)) {
                Some(v4) => v4,
                None => {
                    let site = self
                        .cfg
                        .sites
                        .iter()
                        .find(|s| s.remote_address_space_v6.iter().any(|n| n.contains(&a)))?;
                    let w = super::worker_of_ip(site.remote.ip(), count);
                    return (w != self.shard.index()).then_some(w);
                }
            },
        };
        let pool = self.cfg.client_pool;
        if let Some(&w) = self.shard.directory().get(&DirKey::Addr(dst)) {
            return (w != self.shard.index()).then_some(w);
        }
        let w = if pool.contains(&dst) {
            (u32::from(dst) - u32::from(pool.network())) as usize % count
        } else {
            let site = self
                .cfg
                .sites
                .iter()
                .find(|s| s.remote_address_space.iter().any(|n| n.contains(&dst)))?;
            super::worker_of_ip(site.remote.ip(), count)
        };
        (w != self.shard.index()).then_some(w)
    }

    /// IPv6 routes pushed to remote-access clients (with an IPv6 pool): the IPv6 address
    /// space and every site's IPv6 prefixes.
    pub(super) fn client_routes_v6(&self) -> Vec<Ipv6Net> {
        let mut routes = self.cfg.address_space_v6.clone();
        for s in &self.cfg.sites {
            for n in &s.remote_address_space_v6 {
                if !routes.contains(n) {
                    routes.push(*n);
                }
            }
        }
        routes
    }

    /// Routes pushed to remote-access clients: the address space, every site's prefixes and
    /// the prefixes learned from sites by a routing daemon.
    pub(super) fn client_routes(&self) -> Vec<Ipv4Net> {
        let mut routes = self.cfg.address_space.clone();
        let learned = self.learned_routes.iter();
        for n in self
            .cfg
            .sites
            .iter()
            .flat_map(|s| s.remote_address_space.iter())
            .chain(learned)
        {
            if !routes.contains(n) {
                routes.push(*n);
            }
        }
        routes
    }

    /// The prefixes a routing daemon learned from sites with their own interface (BGP, read
    /// from the kernel by the driver): clients that connect from now on get them pushed
    /// beside `address_space` and the static site prefixes (connected clients keep what they
    /// got). Prefixes inside the gateway's own networks are left out.
    pub fn set_learned_routes(&mut self, routes: Vec<Ipv4Net>) {
        let ours = |n: &Ipv4Net| {
            self.cfg.client_pool.contains(n)
                || n.contains(&self.cfg.client_pool)
                || self.cfg.address_space.iter().any(|a| a.contains(n))
        };
        let mut kept: Vec<Ipv4Net> = routes
            .into_iter()
            .filter(|n| n.prefix_len() > 0 && !ours(n))
            .collect();
        kept.sort();
        kept.dedup();
        self.learned_routes = kept;
    }

    pub(super) fn handle_tunnel_event(&mut self, now: Instant, id: TunnelId, ev: TunnelEvent) {
        match ev {
            TunnelEvent::OpenVpn(e) => self.openvpn_event(now, id, e),
            TunnelEvent::Responder(e) => self.responder_event(now, id, e),
            TunnelEvent::Initiator(e) => self.initiator_event(now, id, e),
            TunnelEvent::Quic(e) => self.quic_event(now, id, e),
        }
    }

    fn openvpn_event(&mut self, now: Instant, id: TunnelId, ev: ServerEvent) {
        match ev {
            ServerEvent::Authenticated { client, peer_info } => {
                debug!(client = %client, version = ?peer_info.version, platform = ?peer_info.platform, "client authenticated");
                self.admit(now, id, client);
                if self.tunnels.contains_key(&id) {
                    self.replace_at_address(now, id);
                }
            }
            ServerEvent::Established { cipher, tls_ekm } => {
                let keys = if tls_ekm { "tls-ekm" } else { "prf" };
                self.connected(now, id, cipher.openvpn_name(), keys, None);
            }
            ServerEvent::Rekeyed { key_id } => {
                self.note_state_change();
                if let Some(t) = self.tunnels.get_mut(&id) {
                    t.common_mut().last_handshake = Some(now);
                    *self.counters.rekeys.get_mut(t.protocol()) += 1;
                    debug!(client = %t.common().client.as_deref().unwrap_or("?"), key_id, "data keys renegotiated");
                }
            }
            ServerEvent::Refused { client, reason } => self.refused(id, client, reason),
            ServerEvent::Closed(reason) => {
                if !matches!(reason, CloseReason::Refused(_)) {
                    self.log_disconnect(now, id, &reason.to_string());
                }
                self.release(id);
            }
        }
    }

    fn responder_event(&mut self, now: Instant, id: TunnelId, ev: IkeEvent) {
        match ev {
            IkeEvent::Authenticated { client, id: ike_id } => {
                debug!(client = %client, ike_id = %ike_id, "IKEv2 client authenticated");
                self.admit(now, id, client);
            }
            IkeEvent::SiteAuthenticated {
                connection,
                id: ike_id,
                initial_contact,
            } => {
                self.authenticated(id);
                self.admit_site(now, id, &connection, &ike_id, initial_contact);
            }
            IkeEvent::ChildUp {
                our_spi,
                peer_spi,
                cipher,
                sa,
                rekey_of,
            } => {
                self.note_state_change();
                self.esp_install(id, our_spi, *sa, rekey_of.is_some());
                let Some(t) = self.ike_mut(id) else {
                    return;
                };
                if t.site.is_some() {
                    if rekey_of.is_none() {
                        self.site_sa_up(now, id, cipher);
                    } else {
                        t.common.last_handshake = Some(now);
                        debug!(connection = %t.common.client.as_deref().unwrap_or("?"), our_spi, peer_spi, "CHILD SA rekeyed");
                        *self.counters.rekeys.get_mut(Protocol::Site) += 1;
                    }
                    return;
                }
                if rekey_of.is_some() || t.connected {
                    t.common.last_handshake = Some(now);
                    debug!(client = %t.common.client.as_deref().unwrap_or("?"), our_spi, peer_spi, "CHILD SA rekeyed");
                    *self.counters.rekeys.get_mut(Protocol::Ikev2) += 1;
                    return;
                }
                t.connected = true;
                let suite = t.sa.responder().map(|r| r.suite());
                if suite.is_some_and(|s| s.dh == DhGroup::Modp1024) {
                    warn!(
                        client = %t.common.client.as_deref().unwrap_or("?"),
                        "client negotiated the weak MODP-1024 group (Windows' default): run the script `gatehouse-certs export --format windows` writes on it, then set `ikev2.allow_modp1024 = false`"
                    );
                }
                let ike = suite.map(ike_suite_name).unwrap_or_default();
                let name = crate::ikev2::proposal_names::esp_display_name(cipher);
                let esp = esp_cipher_name(cipher);
                self.connected(now, id, &name, "ike", Some((ike, esp)));
            }
            // The old SA is gone: a waiting new one takes over (the peer surely has it).
            IkeEvent::ChildDown { our_spi } => self.esp_linger(now, id, our_spi),
            IkeEvent::Refused {
                client,
                reason,
                site,
            } => {
                if site {
                    self.counters.refused(&reason);
                    let remote = self.tunnels.get(&id).map(|t| t.remote());
                    warn!(connection = %client.as_deref().unwrap_or("?"), remote = ?remote, reason = %reason, "connection refused");
                    if let Some(remote) = remote {
                        self.events.push_back(Event::Refused {
                            client,
                            remote,
                            reason,
                        });
                    }
                    return;
                }
                self.refused(id, client, reason);
            }
            IkeEvent::IkeRekeyed { old, new } => {
                self.note_state_change();
                self.by_spis.insert(new, id);
                // Either SPI may be ours (the gateway may have started the rekey).
                self.register_ike_spi(new.0);
                self.register_ike_spi(new.1);
                if let Some(t) = self.ike_mut(id) {
                    t.spi_pairs.push(new);
                }
                debug!(?old, ?new, "IKE SA rekeyed");
            }
            IkeEvent::OldIkeSaGone { spis } => {
                if self.by_spis.get(&spis) == Some(&id) {
                    self.by_spis.remove(&spis);
                }
            }
            IkeEvent::Closed(reason) => {
                // The SA may linger to retransmit its Delete; it carries no more traffic.
                self.drop_esp(id);
                if self.ike(id).is_some_and(|t| t.site.is_some()) {
                    self.site_sa_gone(now, id, &reason);
                    return;
                }
                self.log_disconnect(now, id, &reason);
                self.release(id);
            }
        }
    }

    /// A tunnel stopped counting as a handshake in progress.
    pub(super) fn authenticated(&mut self, id: TunnelId) {
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        let ike = matches!(t, Tunnel::Ike(_));
        let ovpn_ip = match t {
            Tunnel::OpenVpn(o) => Some(o.remote.ip()),
            _ => None,
        };
        let ike_ip = match t {
            Tunnel::Ike(i) => i.init_key.map(|(a, _)| super::ike::half_open_key(a.ip())),
            _ => None,
        };
        let c = t.common_mut();
        if std::mem::take(&mut c.handshaking) {
            if ike {
                self.half_open = self.half_open.saturating_sub(1);
                if let Some(ip) = ike_ip
                    && let Some(n) = self.half_open_by_ip.get_mut(&ip)
                {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.half_open_by_ip.remove(&ip);
                    }
                }
            } else {
                self.handshaking = self.handshaking.saturating_sub(1);
            }
            if let Some(ip) = ovpn_ip
                && let Some(n) = self.handshakes_by_ip.get_mut(&ip)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.handshakes_by_ip.remove(&ip);
                }
            }
        }
        if let Some(Tunnel::Ike(t)) = self.tunnels.get_mut(&id)
            && let Some(k) = t.init_key.take()
            && self.by_init.get(&k) == Some(&id)
        {
            self.by_init.remove(&k);
        }
    }

    pub(super) fn refused(&mut self, id: TunnelId, client: Option<String>, reason: String) {
        let Some(t) = self.tunnels.get(&id) else {
            return;
        };
        let remote = t.remote();
        let transport = t.protocol().name();
        warn!(client = %client.as_deref().unwrap_or("?"), remote = %remote, reason = %reason, transport, "client refused");
        self.counters.refused(&reason);
        self.events.push_back(Event::Refused {
            client,
            remote,
            reason,
        });
    }

    /// Admits an authenticated remote-access client: refuses a revoked certificate, ends an
    /// older session of the same certificate, leases its address and routes it.
    pub(super) fn admit(&mut self, now: Instant, id: TunnelId, client: String) {
        self.authenticated(id);
        let serial = self
            .tunnels
            .get(&id)
            .and_then(|t| t.peer_certificate())
            .and_then(cert_serial);
        if serial.as_deref().is_some_and(|s| self.revoked.contains(s)) {
            // The CRL changed while this handshake was under way (TLS checked the old one).
            self.reject(now, id, "certificate revoked (listed in the CRL)");
            return;
        }
        self.replace_login(now, id, &client);
        let pool = self.cfg.client_pool;
        let leased = {
            let shard = &self.shard;
            let mut p = shard.pool();
            let sticky = p.sticky_of(&client);
            // Its own address again if it is free (or still its own: the older session is
            // ending), else one of this worker's share, else any.
            // (One call: `lease_where` tries the sticky address before it scans; a
            // predicate matching only that address would scan the whole pool twice in vain.)
            let r = p
                .lease_where(&client, |a| Some(a) == sticky || shard.may_lease(pool, a))
                .or_else(|_| p.lease(&client));
            r.map(|a| (a, p.gateway_addr()))
        };
        let (addr, gateway) = match leased {
            Ok(a) => a,
            Err(e) => {
                self.reject(now, id, &e.to_string());
                return;
            }
        };
        self.router.insert(Ipv4Net::from(addr), id);
        // IPv6 for OpenVPN clients (pushed), QUIC clients (ADDRESS_ASSIGN) and IKEv2
        // clients that asked for it; WireGuard peers are not admitted here (their IPv6
        // address comes with their configured allowed IPs).
        let gets_v6 = match self.tunnels.get_mut(&id) {
            Some(Tunnel::OpenVpn(_)) => true,
            Some(Tunnel::Quic(_)) => true,
            Some(Tunnel::Ike(t)) => t.sa.responder().is_some_and(|r| r.wants_ipv6()),
            _ => false,
        };
        let pool6 = self.pool6().filter(|_| gets_v6);
        let addr6 = pool6.map(|p| p.address_of(addr));
        if let Some(a) = addr6 {
            self.router.insert_v6(Ipv6Net::from(a), id);
        }
        let me = Login {
            worker: self.shard.index(),
            tunnel: id,
            addr,
        };
        self.shard.logins().insert(client.clone(), me);
        if self.shard.count() > 1 {
            // Outside this worker's share: tell the others where it routes now.
            let w = self.shard.index();
            let mut dir = self.shard.directory();
            if self.shard.may_lease(pool, addr) {
                dir.remove(&DirKey::Addr(addr));
            } else {
                dir.insert(DirKey::Addr(addr), w);
            }
        }
        let routes = self.client_routes();
        let ipv6 = pool6.zip(addr6).map(|(p, a)| Ipv6Assignment {
            address: a,
            subnet: p.network(),
            gateway: p.gateway_addr(),
            routes: self.client_routes_v6(),
        });
        let (dns, full) = (self.cfg.dns.clone(), self.cfg.full_tunnel);
        let dns_domains = self.cfg.dns_domains.clone();
        let capsules = matches!(self.tunnels.get(&id), Some(Tunnel::Quic(_)))
            .then(|| self.quic_capsules(addr, addr6));
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        let c = t.common_mut();
        c.client = Some(client);
        c.address = Some(addr);
        c.serial = serial;
        match t {
            Tunnel::OpenVpn(t) => t.session.accept(
                now,
                Assignment {
                    address: addr,
                    subnet: pool,
                    gateway,
                    routes,
                    dns,
                    dns_domains,
                    redirect_gateway: full,
                    ipv6,
                },
            ),
            Tunnel::Ike(t) => {
                if let Some(r) = t.sa.responder() {
                    r.accept(
                        now,
                        IkeAssignment {
                            address: addr,
                            dns,
                            dns_domains,
                            subnets: routes,
                            full_tunnel: full,
                            ipv6,
                        },
                    );
                }
            }
            Tunnel::WireGuard(_) => {}
            Tunnel::Quic(t) => t.session.accept(&capsules.unwrap_or_default()),
        }
        self.dirty.push(id);
    }

    fn reject(&mut self, now: Instant, id: TunnelId, reason: &str) {
        match self.tunnels.get_mut(&id) {
            Some(Tunnel::OpenVpn(t)) => t.session.reject(now, reason),
            Some(Tunnel::Ike(t)) => {
                if let Some(r) = t.sa.responder() {
                    r.reject(now, reason);
                }
            }
            Some(Tunnel::WireGuard(_)) => {}
            Some(Tunnel::Quic(t)) => {
                t.session
                    .refuse(now, super::quic::refusal_code(reason), reason)
            }
            None => {}
        }
        self.dirty.push(id);
    }

    /// One session per certificate: a newer login of `client` (tunnel `id`, any protocol)
    /// ends the older one.
    fn replace_login(&mut self, now: Instant, id: TunnelId, client: &str) {
        let Some(old) = self.shard.logins().get(client).copied() else {
            return;
        };
        if old.worker != self.shard.index() {
            // The older session lives on another worker: it ends there.
            self.forwards.push_back(super::Forward::EndLogin {
                worker: old.worker,
                tunnel: old.tunnel,
                client: client.to_owned(),
            });
            return;
        }
        if old.tunnel != id {
            self.end_replaced(now, old.tunnel, client);
        }
    }

    /// Ends tunnel `old` of `client`: a newer login with the same certificate replaced it.
    pub(super) fn end_replaced(&mut self, now: Instant, old: TunnelId, client: &str) {
        if let Some(t) = self.tunnels.get_mut(&old) {
            if t.common().client.as_deref() != Some(client) {
                return;
            }
            info!(client = %client, old_remote = %t.remote(), "second login with the same certificate replaces the first session");
            let why = "replaced by a newer login with the same certificate";
            match t {
                Tunnel::Quic(q) => q.session.close(now, crate::quic::CloseCode::Replaced, why),
                _ => t.close(now, why),
            }
            self.dirty.push(old);
        }
        self.release(old);
    }

    /// The tunnel is up: log and report it (every protocol the same way).
    pub(super) fn connected(
        &mut self,
        now: Instant,
        id: TunnelId,
        cipher: &str,
        keys: &str,
        ike: Option<(String, String)>,
    ) {
        self.note_state_change();
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        let remote = t.remote();
        let protocol = t.protocol();
        let c = t.common_mut();
        c.connected_at = Some(now);
        c.last_handshake = Some(now);
        c.cipher = Some(cipher.to_owned());
        *self.counters.handshakes_ok.get_mut(protocol) += 1;
        let client = c.client.clone().unwrap_or_default();
        let address = c.address;
        let (ike_suite, esp) = ike.unwrap_or_default();
        let address6 = self.router.routes_v6_of(id).next().map(|n| n.addr());
        info!(
            client = %client,
            remote = %remote,
            address = %address.map(|a| a.to_string()).unwrap_or_default(),
            address6 = %address6.map(|a| a.to_string()).unwrap_or_default(),
            cipher = %cipher,
            ike = %ike_suite,
            esp = %esp,
            keys = %keys,
            transport = %protocol.name(),
            "client connected"
        );
        if let Some(address) = address {
            self.events.push_back(Event::Connected {
                tunnel: id,
                client,
                address,
                protocol,
            });
        }
    }

    /// Logs and reports the end of a client's tunnel (once).
    pub(super) fn log_disconnect(&mut self, _now: Instant, id: TunnelId, reason: &str) {
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        let remote = t.remote();
        let (rx, tx) = match &*t {
            Tunnel::OpenVpn(o) => (o.session.stats.rx_bytes, o.session.stats.tx_bytes),
            Tunnel::Ike(i) => (i.rx_bytes, i.tx_bytes),
            Tunnel::WireGuard(w) => (w.session.rx_bytes, w.session.tx_bytes),
            Tunnel::Quic(q) => (q.session.stats.rx_bytes, q.session.stats.tx_bytes),
        };
        let c = t.common_mut();
        let Some(_) = c.connected_at.take() else {
            if c.client.is_none() {
                debug!(remote = %remote, reason, "handshake abandoned");
            }
            return;
        };
        let client = c.client.clone().unwrap_or_default();
        info!(
            client = %client,
            remote = %remote,
            address = %c.address.map(|a| a.to_string()).unwrap_or_default(),
            reason = %reason,
            rx_bytes = rx,
            tx_bytes = tx,
            "client disconnected"
        );
        self.events.push_back(Event::Disconnected {
            tunnel: id,
            client,
            reason: reason.to_owned(),
        });
    }

    /// Returns a client's address and routes (only if they are still its own).
    pub(super) fn release(&mut self, id: TunnelId) {
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        // Sites lease nothing; a WireGuard client's address is reserved for as long as its
        // identity is configured (wireguard.rs releases it).
        if t.is_site() || matches!(t, Tunnel::WireGuard(_)) {
            return;
        }
        let c = t.common_mut();
        if let (Some(client), Some(addr)) = (c.client.clone(), c.address.take()) {
            self.router.remove(Ipv4Net::from(addr), id);
            // Its IPv6 address (if any), even when a reload changed the IPv6 pool since.
            let v6: Vec<Ipv6Net> = self.router.routes_v6_of(id).collect();
            for n in v6 {
                self.router.remove_v6(n, id);
            }
            let me = Login {
                worker: self.shard.index(),
                tunnel: id,
                addr,
            };
            let current = {
                let mut logins = self.shard.logins();
                let current = logins.get(&client).copied();
                if current == Some(me) {
                    logins.remove(&client);
                }
                current
            };
            // The address goes back to the pool unless the client's newer session holds it
            // now.
            let taken_over = current.is_some_and(|l| l != me && l.addr == addr);
            if !taken_over {
                self.shard.pool().release(&client, addr);
                if self.shard.count() > 1 {
                    let mut dir = self.shard.directory();
                    if dir.get(&DirKey::Addr(addr)) == Some(&me.worker) {
                        dir.remove(&DirKey::Addr(addr));
                    }
                }
            }
        }
    }

    /// Forgets a tunnel and every index entry that points at it.
    pub(super) fn remove_tunnel(&mut self, id: TunnelId) {
        self.authenticated(id);
        self.release(id);
        self.deadlines.remove(id);
        let Some(t) = self.tunnels.remove(&id) else {
            return;
        };
        self.counters
            .ended_traffic
            .get_mut(t.protocol())
            .add(&t.traffic());
        match t {
            Tunnel::OpenVpn(o) => {
                if self.by_udp.get(&o.remote) == Some(&id) {
                    self.by_udp.remove(&o.remote);
                }
                if self.replacing_udp.get(&o.remote) == Some(&id) {
                    self.replacing_udp.remove(&o.remote);
                }
                if self.shard.count() > 1 {
                    let me = self.shard.index();
                    let mut dir = self.shard.directory();
                    if dir.get(&DirKey::OpenVpn(o.remote)) == Some(&me) {
                        dir.remove(&DirKey::OpenVpn(o.remote));
                    }
                }
                let p = o.session.peer_id();
                if self.by_peer_id.get(&p) == Some(&id) {
                    self.by_peer_id.remove(&p);
                }
                if let super::tunnel::OvpnTransport::Stream(s) = o.transport
                    && let Some(x) = self.streams.get_mut(&s)
                    && x.0 == Some(id)
                {
                    // The connection is still open: the driver closes it.
                    x.0 = None;
                    self.events.push_back(Event::StreamEnded { stream: s });
                }
                debug!(remote = %o.remote, "session removed");
            }
            Tunnel::Ike(i) => {
                for pair in i.spi_pairs.iter().chain([i.sa.spis()].iter()) {
                    if self.by_spis.get(pair) == Some(&id) {
                        self.by_spis.remove(pair);
                    }
                }
                for spi in &i.local_spis {
                    if self.by_local_spi.get(spi) == Some(&id) {
                        self.by_local_spi.remove(spi);
                    }
                }
                if self.shard.count() > 1 {
                    let me = self.shard.index();
                    let mut dir = self.shard.directory();
                    let pairs = i.spi_pairs.iter().flat_map(|p| [p.0, p.1]);
                    for spi in i.local_spis.iter().copied().chain(pairs) {
                        if dir.get(&DirKey::IkeSpi(spi)) == Some(&me) {
                            dir.remove(&DirKey::IkeSpi(spi));
                        }
                    }
                }
                for spi in self.esp.remove_owner(id) {
                    self.shard.spis().release(spi);
                }
                if let Some(site) = i.site {
                    self.forget_site_sa(site, id);
                }
            }
            Tunnel::WireGuard(w) => self.wg_forget(id, &w),
            Tunnel::Quic(q) => {
                self.quic_forget(&q, id);
                debug!(remote = %q.remote, "QUIC connection removed");
            }
        }
    }

    /// A new CRL (DER): open tunnels whose certificate it lists end now (clients are told;
    /// IKE peers get a Delete), and new ones are checked against it.
    pub fn set_crls(&mut self, now: Instant, crls: &[Vec<u8>]) -> Result<usize, String> {
        self.revoked = RevokedSerials::from_crls(crls)?;
        let hits: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|(_, t)| !t.common().revoked && !t.is_closed())
            .filter(|(_, t)| {
                let serial = t
                    .common()
                    .serial
                    .clone()
                    .or_else(|| t.peer_certificate().and_then(cert_serial));
                serial.is_some_and(|s| self.revoked.contains(&s))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &hits {
            self.end_revoked(now, *id);
        }
        self.flush(now);
        Ok(hits.len())
    }

    fn end_revoked(&mut self, now: Instant, id: TunnelId) {
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        let client = t.common().client.clone().unwrap_or_default();
        let serial = t
            .common()
            .serial
            .clone()
            .or_else(|| t.peer_certificate().and_then(cert_serial))
            .map(|s| hex(&s))
            .unwrap_or_default();
        let transport = t.protocol().name();
        t.common_mut().revoked = true;
        self.counters.revoked += 1;
        info!(client = %client, serial = %serial, transport, remote = %t.remote(), "session ended: certificate revoked");
        match t {
            Tunnel::OpenVpn(o) => {
                if o.session.is_established() {
                    o.session.end_revoked(now, REVOKED);
                } else {
                    o.session.reject(now, REVOKED);
                }
            }
            Tunnel::Ike(i) => match &mut i.sa {
                IkeSa::Responder(r) => r.delete(now, REVOKED),
                IkeSa::Initiator(s) => s.disconnect(now),
            },
            Tunnel::WireGuard(w) => w.removed = true,
            Tunnel::Quic(q) => {
                if q.common.connected_at.is_some() {
                    q.session
                        .close(now, crate::quic::CloseCode::Revoked, REVOKED);
                } else {
                    q.session
                        .refuse(now, crate::quic::CloseCode::Revoked, REVOKED);
                }
            }
        }
        self.log_disconnect(now, id, REVOKED);
        self.events.push_back(Event::Revoked { tunnel: id, client });
        self.dirty.push(id);
    }

    /// Ends the remote-access sessions of certificate name `client` on an operator's order:
    /// an OpenVPN client is told to RESTART (a stock client reconnects), an IKEv2 client gets
    /// a Delete. Returns how many sessions ended.
    pub fn disconnect(&mut self, now: Instant, client: &str) -> usize {
        let n = self.end_clients(now, Some(client), DISCONNECTED);
        self.counters.disconnected += n as u64;
        n
    }

    /// Ends every remote-access session (RESTART / Delete with `reason`); how many.
    pub(super) fn end_all_clients(&mut self, now: Instant, reason: &str) -> usize {
        self.end_clients(now, None, reason)
    }

    fn end_clients(&mut self, now: Instant, client: Option<&str>, reason: &str) -> usize {
        let hits: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|(_, t)| !t.is_site() && !t.is_closed())
            .filter(|(_, t)| {
                t.common().connected_at.is_some()
                    && client.is_none_or(|c| t.common().client.as_deref() == Some(c))
            })
            .map(|(id, _)| *id)
            .collect();
        for &id in &hits {
            let Some(t) = self.tunnels.get_mut(&id) else {
                continue;
            };
            let name = t.common().client.clone().unwrap_or_default();
            info!(client = %name, transport = t.protocol().name(), remote = %t.remote(), reason, "session ended by the operator");
            match t {
                Tunnel::OpenVpn(o) => o.session.close(now, reason),
                Tunnel::Ike(i) => match &mut i.sa {
                    IkeSa::Responder(r) => r.delete(now, reason),
                    IkeSa::Initiator(s) => s.disconnect(now),
                },
                Tunnel::WireGuard(_) => {}
                Tunnel::Quic(q) => q
                    .session
                    .close(now, crate::quic::CloseCode::Operator, reason),
            }
            self.wg_reset(id);
            self.log_disconnect(now, id, reason);
            self.dirty.push(id);
        }
        self.flush(now);
        hits.len()
    }

    /// Uses `cfg` for new OpenVPN sessions and for renegotiations of open ones.
    pub fn set_openvpn_config(&mut self, cfg: Arc<ServerConfig>) {
        for t in self.tunnels.values_mut() {
            if let Tunnel::OpenVpn(o) = t {
                o.session.set_config(cfg.clone());
            }
        }
        self.cfg.openvpn = Some(cfg);
    }

    /// Uses `cfg` for new IKE SAs and for later exchanges of open ones.
    pub fn set_ikev2_config(&mut self, cfg: Arc<ResponderConfig>) {
        for t in self.tunnels.values_mut() {
            if let Tunnel::Ike(i) = t
                && let IkeSa::Responder(r) = &mut i.sa
            {
                r.update_config(cfg.clone());
            }
        }
        self.cfg.ikev2 = Some(cfg);
    }

    /// The peer address of a tunnel (tests, status).
    pub fn tunnel_remote(&self, id: TunnelId) -> Option<SocketAddr> {
        self.tunnels.get(&id).map(|t| t.remote())
    }
}
