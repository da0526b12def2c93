//! One tunnel of the gateway, whatever its protocol: what the core keeps beside the
//! protocol's own state machine (who it is, its address, its transport, its ESP halves).
//! New kinds (QUIC) become new variants with the same handful of methods.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::{Dest, Listener, Protocol, StreamId, Transmit};
use crate::ikev2::initiator::{IkeInitiator, InitiatorEvent};
use crate::ikev2::responder::{IkeEvent, IkeResponder};
use crate::openvpn::server::{ServerEvent, ServerSession};
use crate::quic::{QuicSession, SessionEvent};

/// What every tunnel has.
#[derive(Debug, Default)]
pub(super) struct Common {
    /// The authenticated name (certificate CN, or the connection's name for sites).
    pub(super) client: Option<String>,
    /// Serial of the peer's certificate (live revocation).
    pub(super) serial: Option<Vec<u8>>,
    /// Its virtual address (remote-access clients).
    pub(super) address: Option<Ipv4Addr>,
    /// Counted as handshaking / half-open (until authenticated or gone).
    pub(super) handshaking: bool,
    /// When the tunnel came up.
    pub(super) connected_at: Option<Instant>,
    /// Ended because its certificate was revoked (it may still be closing).
    pub(super) revoked: bool,
    /// The data cipher it connected with (`AES-256-GCM`, ESP's suite name).
    pub(super) cipher: Option<String>,
    /// When its keys were last (re)negotiated.
    pub(super) last_handshake: Option<Instant>,
}

/// How an OpenVPN session reaches its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OvpnTransport {
    Udp,
    Stream(StreamId),
}

pub(super) struct OvpnTunnel {
    pub(super) session: ServerSession,
    pub(super) transport: OvpnTransport,
    /// The client's current address (UDP: where datagrams go).
    pub(super) remote: SocketAddr,
    pub(super) common: Common,
}

/// An IKE SA: a remote-access client's or a site's (which either end may start).
pub(super) enum IkeSa {
    Responder(Box<IkeResponder>),
    Initiator(Box<IkeInitiator>),
}

pub(super) struct IkeTunnel {
    pub(super) sa: IkeSa,
    /// Our inbound SPIs (the SAs themselves are in the core's `EspTable`).
    pub(super) our_spis: Vec<u32>,
    /// (peer address, SPIi) while half-open.
    pub(super) init_key: Option<(SocketAddr, u64)>,
    /// Every (SPIi, SPIr) pair routed to it.
    pub(super) spi_pairs: Vec<(u64, u64)>,
    /// Every SPI of ours it used as initiator.
    pub(super) local_spis: Vec<u64>,
    pub(super) rx_bytes: u64,
    pub(super) tx_bytes: u64,
    pub(super) rx_packets: u64,
    pub(super) tx_packets: u64,
    /// Its first CHILD SA is up.
    pub(super) connected: bool,
    /// The site connection (index) it belongs to.
    pub(super) site: Option<usize>,
    /// When its first CHILD SA came up.
    pub(super) established: Option<Instant>,
    /// Inbound ESP SAs the IKE SA deleted (the peer's Delete after its rekey, or ours), still
    /// opening packets that were in flight on them until the instant ([`ESP_LINGER`]).
    pub(super) lingering: Vec<(u32, Instant)>,
    pub(super) common: Common,
}

/// How long an inbound ESP SA keeps opening packets after its CHILD SA was deleted: a packet
/// the peer sent on it just before its rekey's Delete, reordered behind the Delete, is not
/// lost. Outbound traffic has moved to the new SA already.
pub(super) const ESP_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// A WireGuard peer (site, VNet or point-to-site client) and its boringtun session.
pub(super) struct WgTunnel {
    pub(super) session: crate::wireguard::WgSession,
    pub(super) peer: std::sync::Arc<crate::wireguard::WgPeerConfig>,
    /// Removed from the configuration (or revoked): the core drops it.
    pub(super) removed: bool,
    /// When the peer last sent an authenticated packet (the core's clock).
    pub(super) last_rx: Option<std::time::Instant>,
    pub(super) common: Common,
}

/// A QUIC client's connection.
pub(super) struct QuicTunnel {
    pub(super) session: QuicSession,
    /// The client's current address (it moves with connection migration).
    pub(super) remote: SocketAddr,
    pub(super) common: Common,
}

pub(super) enum Tunnel {
    OpenVpn(Box<OvpnTunnel>),
    Ike(Box<IkeTunnel>),
    WireGuard(Box<WgTunnel>),
    Quic(Box<QuicTunnel>),
}

/// What a tunnel's state machine reported.
pub(super) enum TunnelEvent {
    OpenVpn(ServerEvent),
    Responder(IkeEvent),
    Initiator(InitiatorEvent),
    Quic(SessionEvent),
}

impl IkeSa {
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

    pub(super) fn responder(&mut self) -> Option<&mut IkeResponder> {
        match self {
            IkeSa::Responder(r) => Some(r),
            IkeSa::Initiator(_) => None,
        }
    }

    pub(super) fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        nat_t: bool,
        raw: &[u8],
    ) {
        match self {
            IkeSa::Responder(r) => r.handle_message(now, from, nat_t, raw),
            IkeSa::Initiator(i) => i.handle_message(now, raw),
        }
    }

    /// What the SA dropped unanswered since the last call.
    pub(super) fn take_discards(&mut self) -> crate::ikev2::responder::Discards {
        match self {
            IkeSa::Responder(r) => r.take_discards(),
            IkeSa::Initiator(i) => crate::ikev2::responder::Discards {
                integrity: i.take_integrity_failures(),
                psk_throttled: 0,
            },
        }
    }

    pub(super) fn note_activity(&mut self, now: Instant, from: SocketAddr) {
        match self {
            IkeSa::Responder(r) => r.note_activity(now, from),
            IkeSa::Initiator(i) => i.note_activity(now),
        }
    }

    pub(super) fn delete(&mut self, now: Instant, reason: &str) {
        match self {
            IkeSa::Responder(r) => r.delete(now, reason),
            IkeSa::Initiator(i) => i.disconnect(now),
        }
    }
}

impl IkeTunnel {
    pub(super) fn new(sa: IkeSa, site: Option<usize>, name: Option<String>) -> Self {
        IkeTunnel {
            sa,
            our_spis: Vec::new(),
            init_key: None,
            spi_pairs: Vec::new(),
            local_spis: Vec::new(),
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            connected: false,
            site,
            established: None,
            lingering: Vec::new(),
            common: Common {
                client: name,
                ..Common::default()
            },
        }
    }

    /// SPIs of ours this SA uses as the initiator (they change with rekeys).
    pub(super) fn local_spis(&mut self) -> Vec<u64> {
        let IkeSa::Initiator(i) = &self.sa else {
            return Vec::new();
        };
        let (a, b) = i.spis();
        let mut new = Vec::new();
        for spi in [a, b] {
            if spi != 0 && !self.local_spis.contains(&spi) {
                self.local_spis.push(spi);
                new.push(spi);
            }
        }
        new
    }
}

impl Tunnel {
    pub(super) fn common(&self) -> &Common {
        match self {
            Tunnel::OpenVpn(t) => &t.common,
            Tunnel::Ike(t) => &t.common,
            Tunnel::WireGuard(t) => &t.common,
            Tunnel::Quic(t) => &t.common,
        }
    }

    pub(super) fn common_mut(&mut self) -> &mut Common {
        match self {
            Tunnel::OpenVpn(t) => &mut t.common,
            Tunnel::Ike(t) => &mut t.common,
            Tunnel::WireGuard(t) => &mut t.common,
            Tunnel::Quic(t) => &mut t.common,
        }
    }

    pub(super) fn protocol(&self) -> Protocol {
        match self {
            Tunnel::OpenVpn(t) if t.transport == OvpnTransport::Udp => Protocol::OpenVpnUdp,
            Tunnel::OpenVpn(_) => Protocol::OpenVpnTcp,
            Tunnel::Ike(t) if t.site.is_some() => Protocol::Site,
            Tunnel::Ike(_) => Protocol::Ikev2,
            Tunnel::WireGuard(_) => Protocol::WireGuard,
            Tunnel::Quic(_) => Protocol::Quic,
        }
    }

    /// A site or VNet connection's tunnel (not a remote-access client's).
    pub(super) fn is_site(&self) -> bool {
        match self {
            Tunnel::OpenVpn(_) => false,
            Tunnel::Ike(t) => t.site.is_some(),
            Tunnel::WireGuard(t) => t.peer.is_site(),
            Tunnel::Quic(_) => false,
        }
    }

    /// Its inner traffic so far.
    pub(super) fn traffic(&self) -> super::Traffic {
        match self {
            Tunnel::OpenVpn(t) => {
                let s = &t.session.stats;
                super::Traffic {
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                    rx_packets: s.rx_packets,
                    tx_packets: s.tx_packets,
                }
            }
            Tunnel::Ike(t) => super::Traffic {
                rx_bytes: t.rx_bytes,
                tx_bytes: t.tx_bytes,
                rx_packets: t.rx_packets,
                tx_packets: t.tx_packets,
            },
            Tunnel::WireGuard(t) => super::Traffic {
                rx_bytes: t.session.rx_bytes,
                tx_bytes: t.session.tx_bytes,
                rx_packets: t.session.rx_packets,
                tx_packets: t.session.tx_packets,
            },
            Tunnel::Quic(t) => {
                let s = &t.session.stats;
                super::Traffic {
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                    rx_packets: s.rx_packets,
                    tx_packets: s.tx_packets,
                }
            }
        }
    }

    /// The peer's current address.
    pub(super) fn remote(&self) -> SocketAddr {
        match self {
            Tunnel::OpenVpn(t) => t.remote,
            Tunnel::Ike(t) => t.sa.peer(),
            // A peer that has not dialed in yet, and has no endpoint: 0.0.0.0:0.
            Tunnel::WireGuard(t) => t
                .session
                .remote()
                .unwrap_or_else(|| SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
            Tunnel::Quic(t) => t.remote,
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        match self {
            Tunnel::OpenVpn(t) => t.session.handle_timeout(now),
            Tunnel::Ike(t) => match &mut t.sa {
                IkeSa::Responder(r) => r.handle_timeout(now),
                IkeSa::Initiator(i) => i.handle_timeout(now),
            },
            // boringtun's timers run from the core's WireGuard tick.
            Tunnel::WireGuard(_) => {}
            Tunnel::Quic(t) => t.session.handle_timeout(now),
        }
    }

    pub(super) fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        match self {
            Tunnel::OpenVpn(t) => t.session.poll_timeout(now),
            Tunnel::Ike(t) => {
                let sa = match &t.sa {
                    IkeSa::Responder(r) => r.poll_timeout(),
                    IkeSa::Initiator(i) => i.poll_timeout(),
                };
                let linger = t.lingering.iter().map(|(_, at)| *at).min();
                match (sa, linger) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Tunnel::WireGuard(_) => None,
            Tunnel::Quic(t) => t.session.poll_timeout(),
        }
    }

    /// Inbound ESP SAs whose linger time is over (removed from the list).
    pub(super) fn lingered(&mut self, now: Instant) -> Vec<u32> {
        let Tunnel::Ike(t) = self else {
            return Vec::new();
        };
        let mut due = Vec::new();
        t.lingering.retain(|&(spi, at)| {
            if at <= now {
                due.push(spi);
            }
            at > now
        });
        due
    }

    pub(super) fn is_closed(&self) -> bool {
        match self {
            Tunnel::OpenVpn(t) => t.session.is_closed(),
            Tunnel::Ike(t) => match &t.sa {
                IkeSa::Responder(r) => r.is_closed(),
                IkeSa::Initiator(i) => i.is_closed(),
            },
            Tunnel::WireGuard(t) => t.removed,
            Tunnel::Quic(t) => t.session.is_drained(),
        }
    }

    /// Ends the tunnel from the gateway's side, telling the peer.
    pub(super) fn close(&mut self, now: Instant, reason: &str) {
        match self {
            Tunnel::OpenVpn(t) => t.session.close(now, reason),
            Tunnel::Ike(t) => t.sa.delete(now, reason),
            // WireGuard has no goodbye: the core forgets the keys (see `wireguard.rs`).
            Tunnel::WireGuard(_) => {}
            Tunnel::Quic(t) => t.session.close(now, crate::quic::CloseCode::Normal, reason),
        }
    }

    /// The peer's certificate (DER), once verified.
    pub(super) fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            Tunnel::OpenVpn(t) => t.session.peer_certificate(),
            Tunnel::Ike(t) => match &t.sa {
                IkeSa::Responder(r) => r.peer_certificate(),
                IkeSa::Initiator(i) => i.peer_certificate(),
            },
            Tunnel::WireGuard(_) => None,
            Tunnel::Quic(t) => t.session.peer_certificate(),
        }
    }

    /// Moves what the state machine wants to send into the core's queue.
    pub(super) fn collect_transmits(
        &mut self,
        now: Instant,
        out: &mut VecDeque<Transmit>,
        buf: &mut Vec<u8>,
    ) {
        match self {
            Tunnel::OpenVpn(t) => {
                let dest = match t.transport {
                    OvpnTransport::Udp => Dest::Udp {
                        from: Listener::OpenVpnUdp,
                        to: t.remote,
                    },
                    OvpnTransport::Stream(s) => Dest::Stream(s),
                };
                while t.session.poll_transmit(now, buf) {
                    out.push_back(Transmit {
                        dest,
                        payload: buf.clone(),
                    });
                }
            }
            Tunnel::Ike(t) => loop {
                let next = match &mut t.sa {
                    IkeSa::Responder(r) => r.poll_transmit(),
                    IkeSa::Initiator(i) => i.poll_transmit(),
                };
                let Some(x) = next else {
                    break;
                };
                out.push_back(ike_transmit(x.to, x.nat_t, &x.data));
            },
            Tunnel::WireGuard(t) => {
                while let Some(payload) = t.session.pop_transmit() {
                    // Nowhere to send before the peer dialed in (or has an endpoint).
                    if let Some(to) = t.session.remote() {
                        out.push_back(Transmit {
                            dest: Dest::Udp {
                                from: Listener::WireGuard,
                                to,
                            },
                            payload,
                        });
                    }
                }
            }
            Tunnel::Quic(t) => {
                while let Some(to) = t.session.poll_transmit(now, buf) {
                    out.push_back(Transmit {
                        dest: Dest::Udp {
                            from: Listener::Quic,
                            to,
                        },
                        payload: buf.clone(),
                    });
                }
                t.session.update_timeout();
            }
        }
    }

    pub(super) fn take_events(&mut self) -> Vec<TunnelEvent> {
        let mut v = Vec::new();
        match self {
            Tunnel::OpenVpn(t) => {
                while let Some(e) = t.session.poll_event() {
                    v.push(TunnelEvent::OpenVpn(e));
                }
            }
            Tunnel::Ike(t) => match &mut t.sa {
                IkeSa::Responder(r) => {
                    while let Some(e) = r.poll_event() {
                        v.push(TunnelEvent::Responder(e));
                    }
                }
                IkeSa::Initiator(i) => {
                    while let Some(e) = i.poll_event() {
                        v.push(TunnelEvent::Initiator(e));
                    }
                }
            },
            // The core reports WireGuard's changes as it sees them (wireguard.rs).
            Tunnel::WireGuard(_) => {}
            Tunnel::Quic(t) => {
                while let Some(e) = t.session.poll_event() {
                    v.push(TunnelEvent::Quic(e));
                }
            }
        }
        v
    }
}

/// An IKE message as a datagram: on 4500 behind the non-ESP marker (RFC 3948 2.2).
pub(super) fn ike_transmit(to: SocketAddr, nat_t: bool, data: &[u8]) -> Transmit {
    if nat_t {
        let mut payload = Vec::with_capacity(data.len() + 4);
        payload.extend_from_slice(&[0, 0, 0, 0]);
        payload.extend_from_slice(data);
        Transmit {
            dest: Dest::Udp {
                from: Listener::IkeNatT,
                to,
            },
            payload,
        }
    } else {
        Transmit {
            dest: Dest::Udp {
                from: Listener::Ike,
                to,
            },
            payload: data.to_vec(),
        }
    }
}
