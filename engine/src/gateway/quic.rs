//! QUIC in the gateway core (docs/quic.md): datagrams on the QUIC listener go to the
//! worker's [`QuicEndpoint`]; a connection whose TLS handshake verified the client's
//! certificate is admitted like every other client (pool lease, one session per
//! certificate) and gets its configuration as capsules on its control stream; DATAGRAM
//! frames go through anti-spoofing to TUN, TUN packets routed to the tunnel leave as DATAGRAM
//! frames. A client that migrates keeps its tunnel (Roamed); a short-header packet that
//! reaches another worker after the move is handed over, since our connection IDs name their
//! worker ([`crate::quic::cid`]).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use ipnet::{Ipv4Net, Ipv6Net};
use quinn_proto::ConnectionHandle;
use tracing::{debug, info};

use super::tunnel::{Common, QuicTunnel, Tunnel};
use super::{Dest, Drop, Event, Forward, GatewayCore, Listener, Transmit, TunnelId};
use crate::quic::endpoint::{Admission, Received};
use crate::quic::session::SendError;
use crate::quic::{CloseCode, QuicConfig, QuicEndpoint, SessionEvent, worker_of_datagram};
use crate::wire::capsule::{AssignedAddress, Capsule, DnsConfig, IpRange};
use crate::wire::mss::{clamp_mss, mss_above};

/// The worker's QUIC listener.
pub(super) struct QuicState {
    pub(super) endpoint: QuicEndpoint,
    pub(super) cfg: Arc<QuicConfig>,
    pub(super) by_handle: HashMap<ConnectionHandle, TunnelId>,
    /// Inner packets of the last datagram after the first (QUIC packs several DATAGRAM
    /// frames into one packet): [`GatewayCore::poll_tun_packet`].
    pub(super) rx: VecDeque<Vec<u8>>,
}

/// The TCP MSS that fits a tunnel of `mtu` (inner IPv4 and TCP headers).
fn mss_for(mtu: u16) -> u16 {
    mtu.saturating_sub(40)
}

impl GatewayCore {
    /// Serves QUIC with `cfg` (the first call opens the listener's endpoint; later ones - a
    /// new CRL, a reload - apply to new connections).
    pub fn set_quic_config(&mut self, cfg: Arc<QuicConfig>) {
        if let Some(q) = &mut self.quic {
            q.endpoint.set_config(&cfg);
            q.cfg = cfg;
            return;
        }
        let clock = crate::quic::clock::CoreClock::new(self.cfg.unix_time, self.cfg.start);
        let mut entropy = (self.entropy)();
        let endpoint = QuicEndpoint::new(self.shard.index() as u8, &cfg, &mut *entropy, clock);
        self.quic = Some(QuicState {
            endpoint,
            cfg,
            by_handle: HashMap::new(),
            rx: VecDeque::new(),
        });
    }

    /// Retry packets this worker's QUIC endpoint sent (address validation under load).
    pub fn quic_retries(&self) -> u64 {
        self.quic.as_ref().map_or(0, |q| q.endpoint.retries())
    }

    /// Whether QUIC is served.
    pub fn quic_enabled(&self) -> bool {
        self.quic.is_some()
    }

    /// More inner packets for TUN from the last datagram on the QUIC listener (one datagram
    /// may carry several; [`handle_datagram`](Self::handle_datagram) returns the first).
    pub fn poll_tun_packet(&mut self) -> Option<Vec<u8>> {
        self.quic.as_mut()?.rx.pop_front()
    }

    fn quic_tunnel(&mut self, id: TunnelId) -> Option<&mut QuicTunnel> {
        match self.tunnels.get_mut(&id) {
            Some(Tunnel::Quic(t)) => Some(t),
            _ => None,
        }
    }

    /// A datagram on the QUIC port. Returns the range of `esp_buf` holding the first inner
    /// packet for TUN (the flush after it reuses `buf`).
    pub(super) fn quic_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        bytes: &[u8],
    ) -> Option<(bool, Range<usize>)> {
        let count = self.shard.count();
        let me = self.shard.index();
        let q = self.quic.as_mut()?;
        q.rx.clear();
        if count > 1
            && let Some(w) = worker_of_datagram(bytes, count)
            && w != me
        {
            // The client moved and the kernel steered its packets here; our connection ID
            // names the worker that holds the connection.
            self.forward(Forward::Datagram {
                worker: w,
                listener: Listener::Quic,
                remote,
                bytes: bytes.to_vec(),
            });
            return None;
        }
        // Beyond half the handshake limit new clients prove their address first.
        let max = self.cfg.max_handshaking;
        let admission = if self.handshaking >= max {
            Admission::Refuse
        } else if self.handshaking >= max / 2 {
            Admission::Validate
        } else {
            Admission::Accept
        };
        let q = self.quic.as_mut()?;
        let got = q.endpoint.handle(now, remote, bytes, admission);
        match got {
            Received::Nothing => None,
            Received::Response { to } | Received::Refused { to } => {
                if matches!(got, Received::Refused { .. }) {
                    self.drops.count(Drop::Handshakes);
                }
                let payload = q.endpoint.response().to_vec();
                self.transmits.push_back(Transmit {
                    dest: Dest::Udp {
                        from: Listener::Quic,
                        to,
                    },
                    payload,
                });
                None
            }
            Received::Connection(h, ev) => {
                let Some(&id) = q.by_handle.get(&h) else {
                    self.drops.count(Drop::NoSession);
                    return None;
                };
                let t = self.quic_tunnel(id)?;
                t.session.handle_event(ev);
                self.quic_input(id)
            }
            Received::New(session) => {
                let handle = session.handle();
                let id = self.new_tunnel_id();
                if let Some(q) = self.quic.as_mut() {
                    q.by_handle.insert(handle, id);
                }
                self.handshaking += 1;
                debug!(remote = %remote, tunnel = id, "new QUIC connection");
                self.tunnels.insert(
                    id,
                    Tunnel::Quic(Box::new(QuicTunnel {
                        session: *session,
                        remote,
                        common: Common {
                            handshaking: true,
                            ..Common::default()
                        },
                    })),
                );
                self.quic_input(id)
            }
        }
    }

    /// After a connection took input: follows a migration, takes its datagrams (anti-spoofing
    /// first), marks it for output.
    fn quic_input(&mut self, id: TunnelId) -> Option<(bool, Range<usize>)> {
        self.dirty.push(id);
        let mss = mss_for(self.quic.as_ref()?.cfg.tunnel_mtu);
        let t = self.quic_tunnel(id)?;
        let to = t.session.remote();
        if to != t.remote {
            let from = std::mem::replace(&mut t.remote, to);
            if t.common.connected_at.is_some() {
                let client = t.common.client.clone().unwrap_or_default();
                info!(client = %client, from = %from, to = %to, transport = "quic", "client migrated to a new address");
                self.note_state_change();
                self.events.push_back(Event::Roamed {
                    tunnel: id,
                    from,
                    to,
                });
            }
        }
        let mut first: Option<usize> = None;
        while let Some(t) = self.quic_tunnel(id) {
            let Some(got) = t.session.recv_datagram() else {
                break;
            };
            let Ok(d) = got else {
                self.drops.count(Drop::NotEstablished);
                continue;
            };
            let p = d.as_ref();
            if !self.check_source(id, super::source_of(p)) {
                continue;
            }
            if first.is_none() && p.len() <= self.esp_buf.len() {
                let out = &mut self.esp_buf[..p.len()];
                out.copy_from_slice(p);
                clamp_mss(out, mss);
                first = Some(p.len());
            } else if let Some(q) = self.quic.as_mut() {
                let mut v = p.to_vec();
                clamp_mss(&mut v, mss);
                q.rx.push_back(v);
            }
        }
        first.map(|n| (true, 0..n))
    }

    /// Exchanges a connection's messages with the endpoint and turns its events into session
    /// events (called for every touched tunnel before its output is collected).
    pub(super) fn quic_pump(&mut self, now: Instant, id: TunnelId) {
        let Some(q) = self.quic.as_mut() else {
            return;
        };
        let Some(Tunnel::Quic(t)) = self.tunnels.get_mut(&id) else {
            return;
        };
        t.session.process(now);
        let h = t.session.handle();
        while let Some(ev) = t.session.poll_endpoint_event() {
            if let Some(back) = q.endpoint.handle_event(h, ev) {
                t.session.handle_event(back);
            }
        }
        t.session.process(now);
    }

    /// A TUN packet for QUIC tunnel `id`: queued as a DATAGRAM frame; returns the first
    /// datagram that carries it (more, if any, wait in [`poll_transmit`](Self::poll_transmit)).
    pub(super) fn quic_send(
        &mut self,
        now: Instant,
        id: TunnelId,
        packet: &[u8],
    ) -> Option<(Dest, bool, usize)> {
        let mss = mss_for(self.quic.as_ref()?.cfg.tunnel_mtu);
        let Some(Tunnel::Quic(t)) = self.tunnels.get_mut(&id) else {
            return None;
        };
        let packet = match self.esp_buf.get_mut(..packet.len()) {
            Some(copy) if mss_above(packet, mss) => {
                copy.copy_from_slice(packet);
                clamp_mss(copy, mss);
                &*copy
            }
            _ => packet,
        };
        match t.session.send_datagram(packet) {
            Ok(()) => {}
            Err(SendError::TooLarge) => {
                self.drops.count(Drop::TooLarge);
                return None;
            }
            Err(SendError::NotReady) => {
                self.drops.count(Drop::NotEstablished);
                return None;
            }
        }
        let before = self.transmits.len();
        self.dirty.push(id);
        self.flush(now);
        if self.transmits.len() <= before {
            return None;
        }
        let x = self.transmits.remove(before)?;
        self.buf.clear();
        self.buf.extend_from_slice(&x.payload);
        Some((x.dest, false, self.buf.len()))
    }

    /// What a QUIC session reported.
    pub(super) fn quic_event(&mut self, now: Instant, id: TunnelId, ev: SessionEvent) {
        match ev {
            SessionEvent::Authenticated { client } => {
                debug!(client = %client, "QUIC client authenticated");
                self.admit(now, id, client);
                let ready =
                    matches!(self.tunnels.get(&id), Some(Tunnel::Quic(t)) if t.session.is_ready());
                if ready {
                    let cipher = self
                        .quic_tunnel(id)
                        .map(|t| t.session.cipher())
                        .unwrap_or_default();
                    self.connected(now, id, cipher, "tls1.3", None);
                }
            }
            SessionEvent::Refused { client, reason } => self.refused(id, client, reason),
            SessionEvent::Closed(reason) => {
                self.log_disconnect(now, id, &reason);
                self.release(id);
            }
        }
    }

    /// The capsules that configure a client at `addr` (and `addr6`, with an IPv6 pool;
    /// docs/quic.md), ending with READY. The IPv6 ranges mirror what OpenVPN pushes
    /// (`route-ipv6`, `redirect-gateway def1 ipv6`): the IPv6 pool and prefixes behind the
    /// gateway, or all of IPv6 with a full tunnel.
    pub(super) fn quic_capsules(&self, addr: Ipv4Addr, addr6: Option<Ipv6Addr>) -> Vec<u8> {
        let mtu = self
            .quic
            .as_ref()
            .map_or(crate::quic::config::DEFAULT_TUNNEL_MTU, |q| {
                q.cfg.tunnel_mtu
            });
        let range = |start: IpAddr, end: IpAddr| IpRange {
            start,
            end,
            protocol: 0,
        };
        let mut routes: Vec<IpRange> = if self.cfg.full_tunnel {
            vec![range(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V4(Ipv4Addr::BROADCAST),
            )]
        } else {
            let mut nets: Vec<Ipv4Net> = vec![self.cfg.client_pool.trunc()];
            for n in self.client_routes() {
                if !nets.contains(&n) {
                    nets.push(n);
                }
            }
            nets.iter()
                .map(|n| range(IpAddr::V4(n.network()), IpAddr::V4(n.broadcast())))
                .collect()
        };
        let pool6 = self.pool6().filter(|_| addr6.is_some());
        if let Some(pool6) = pool6 {
            if self.cfg.full_tunnel {
                routes.push(range(
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    IpAddr::V6(Ipv6Addr::from(u128::MAX)),
                ));
            } else {
                let mut nets: Vec<Ipv6Net> = vec![pool6.network()];
                for n in self.client_routes_v6() {
                    let n = n.trunc();
                    if !nets.contains(&n) {
                        nets.push(n);
                    }
                }
                routes.extend(
                    nets.iter()
                        .map(|n| range(IpAddr::V6(n.network()), IpAddr::V6(n.broadcast()))),
                );
            }
        }
        let servers = self
            .cfg
            .dns
            .iter()
            .filter_map(|d| match d {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            })
            .collect();
        let mut addresses = vec![AssignedAddress {
            request_id: 0,
            address: IpAddr::V4(addr),
            prefix_len: 32,
        }];
        if let (Some(a), Some(_)) = (addr6, pool6) {
            addresses.push(AssignedAddress {
                request_id: 0,
                address: IpAddr::V6(a),
                prefix_len: 128,
            });
        }
        let mut out = Vec::with_capacity(128);
        for c in [
            Capsule::AddressAssign(addresses),
            Capsule::RouteAdvertisement(routes),
            Capsule::DnsConfig(DnsConfig {
                servers,
                search: Vec::new(),
            }),
            Capsule::TunnelMtu(mtu),
            Capsule::Ready,
        ] {
            c.encode(&mut out);
        }
        out
    }

    /// Sends every admitted QUIC client its configuration again (a reload changed routes or
    /// DNS).
    pub(super) fn quic_resend_config(&mut self) {
        let ids: Vec<(TunnelId, Ipv4Addr, Option<Ipv6Addr>)> = self
            .tunnels
            .iter()
            .filter_map(|(id, t)| match t {
                Tunnel::Quic(q) if q.session.is_ready() => {
                    let v6 = self.router.routes_v6_of(*id).next().map(|n| n.addr());
                    Some((*id, q.common.address?, v6))
                }
                _ => None,
            })
            .collect();
        for (id, addr, addr6) in ids {
            let caps = self.quic_capsules(addr, addr6);
            if let Some(t) = self.quic_tunnel(id) {
                t.session.reconfigure(&caps);
                self.dirty.push(id);
            }
        }
    }

    /// Forgets a removed QUIC connection's handle.
    pub(super) fn quic_forget(&mut self, t: &QuicTunnel, id: TunnelId) {
        if let Some(q) = self.quic.as_mut() {
            let h = t.session.handle();
            if q.by_handle.get(&h) == Some(&id) {
                q.by_handle.remove(&h);
            }
        }
    }
}

/// The close code for a refusal with `reason`.
pub(super) fn refusal_code(reason: &str) -> CloseCode {
    match super::reason_class(reason) {
        "revoked" => CloseCode::Revoked,
        "pool_exhausted" => CloseCode::PoolExhausted,
        _ => CloseCode::Protocol,
    }
}
