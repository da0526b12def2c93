//! One WireGuard peer: boringtun's `Tunn`, the peer's current endpoint and what went through.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};

use super::{WgKey, WgPeerConfig};

/// WireGuard message types (the first byte; the next three are zero).
const HANDSHAKE_INIT: u8 = 1;
const HANDSHAKE_RESP: u8 = 2;
const COOKIE_REPLY: u8 = 3;
const DATA: u8 = 4;

/// What a datagram was, once the session handled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WgInput {
    /// An authenticated inner IP packet, in `buf[..len]`.
    Packet(usize),
    /// An authenticated handshake message (answered, or it completed our handshake).
    Handshake,
    /// An authenticated keepalive (an empty data packet).
    Keepalive,
    /// A cookie reply, or a cookie we sent because we are under load: nothing authenticated.
    Cookie,
    /// Refused by boringtun (bad MAC or AEAD tag, replay, no session...): why.
    Rejected(&'static str),
}

impl WgInput {
    /// True when the datagram proved the peer's key: its source address is the peer's now
    /// (roaming).
    pub fn authenticated(&self) -> bool {
        matches!(
            self,
            WgInput::Packet(_) | WgInput::Handshake | WgInput::Keepalive
        )
    }
}

/// Why boringtun refused a datagram, without allocating (floods of bad packets are counted
/// per packet).
fn reason(e: &WireGuardError) -> &'static str {
    match e {
        WireGuardError::InvalidMac => "bad mac1",
        WireGuardError::InvalidAeadTag => "authentication failed",
        WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => "replayed",
        WireGuardError::NoCurrentSession => "no session for its index (the peer must handshake)",
        WireGuardError::WrongIndex | WireGuardError::WrongKey => "not for this session",
        WireGuardError::InvalidTai64nTimestamp | WireGuardError::WrongTai64nTimestamp => {
            "replayed handshake (old timestamp)"
        }
        WireGuardError::UnderLoad => "under load",
        WireGuardError::ConnectionExpired => "session expired",
        _ => "malformed",
    }
}

/// One peer's tunnel. See the module documentation of [`crate::wireguard`] for its clock.
pub struct WgSession {
    tunn: Tunn,
    /// Our 24-bit index: the high bits of every receiver index the peer sends us.
    index: u32,
    remote: Option<SocketAddr>,
    out: VecDeque<Vec<u8>>,
    up: bool,
    handshakes: u64,
    /// Inner traffic: bytes received, sent; packets received, sent.
    pub rx_bytes: u64,
    /// See `rx_bytes`.
    pub tx_bytes: u64,
    /// See `rx_bytes`.
    pub rx_packets: u64,
    /// See `rx_bytes`.
    pub tx_packets: u64,
}

impl WgSession {
    /// A session with `peer`, whose messages will carry `index` (24 bits) in their receiver
    /// index. `limiter` is shared by the core's sessions (one cookie secret; the core resets
    /// its count every second).
    pub fn new(key: &WgKey, peer: &WgPeerConfig, index: u32, limiter: Arc<RateLimiter>) -> Self {
        let tunn = Tunn::new(
            key.secret(),
            peer.public_key.key(),
            None,
            peer.persistent_keepalive.filter(|k| *k > 0),
            index & 0x00ff_ffff,
            Some(limiter),
        );
        WgSession {
            tunn,
            index: index & 0x00ff_ffff,
            remote: peer.endpoint,
            out: VecDeque::new(),
            up: false,
            handshakes: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
        }
    }

    /// Our index (the receiver index of the peer's messages, shifted right by 8).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The index a peer's message is for (`receiver_index >> 8`), or None when the message
    /// names none (a handshake initiation) or is malformed.
    pub fn receiver_of(datagram: &[u8]) -> Option<u32> {
        let ty = *datagram.first()?;
        if !matches!(ty, HANDSHAKE_RESP | COOKIE_REPLY | DATA) {
            return None;
        }
        let at = if ty == HANDSHAKE_RESP { 8 } else { 4 };
        let b: [u8; 4] = datagram.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b) >> 8)
    }

    /// True for a handshake initiation (which names its sender, not us).
    pub fn is_initiation(datagram: &[u8]) -> bool {
        datagram.first() == Some(&HANDSHAKE_INIT)
    }

    /// Where the peer is now (None: it has not dialed in and has no configured endpoint).
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// The peer sent an authenticated message from `to`: send there from now on.
    pub fn set_remote(&mut self, to: SocketAddr) {
        self.remote = Some(to);
    }

    /// Whether data flows: a handshake completed and the peer proved it has the keys.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Handshakes completed so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes
    }

    /// A datagram from the peer (`from`); an inner packet lands in `buf` (which must hold
    /// the datagram). Answers (handshake responses, queued packets) wait in
    /// [`pop_transmit`](Self::pop_transmit).
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        buf: &mut [u8],
    ) -> WgInput {
        let ty = datagram.first().copied().unwrap_or(0);
        let r = match self.tunn.decapsulate(Some(from.ip()), datagram, buf) {
            TunnResult::Done if ty == DATA => WgInput::Keepalive,
            TunnResult::Done if ty == COOKIE_REPLY => WgInput::Cookie,
            TunnResult::Done => WgInput::Rejected("unexpected message"),
            TunnResult::Err(e) => return WgInput::Rejected(reason(&e)),
            TunnResult::WriteToNetwork(p) => {
                let cookie = p.first() == Some(&COOKIE_REPLY);
                self.out.push_back(p.to_vec());
                if cookie {
                    return WgInput::Cookie;
                }
                self.drain(buf);
                self.handshakes += 1;
                // The initiator's session is up with the response; the responder's once the
                // initiator's first data or keepalive arrives.
                if ty == HANDSHAKE_RESP {
                    self.up = true;
                }
                WgInput::Handshake
            }
            TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                WgInput::Packet(p.len())
            }
        };
        if matches!(r, WgInput::Packet(_) | WgInput::Keepalive) {
            self.up = true;
        }
        if let WgInput::Packet(n) = r {
            self.rx_packets += 1;
            self.rx_bytes += n as u64;
        }
        r
    }

    /// Sends what boringtun queued while there was no session.
    fn drain(&mut self, buf: &mut [u8]) {
        while let TunnResult::WriteToNetwork(p) = self.tunn.decapsulate(None, &[], buf) {
            self.out.push_back(p.to_vec());
        }
    }

    /// Encrypts inner packet `packet` into `buf` (at least `packet.len() + 32` and 148 bytes):
    /// the datagram's length. Without a session the packet waits and a handshake initiation
    /// is what goes out.
    pub fn encapsulate(&mut self, packet: &[u8], buf: &mut [u8]) -> Option<usize> {
        match self.tunn.encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(p) => {
                if p.first() == Some(&DATA) {
                    self.tx_packets += 1;
                    self.tx_bytes += packet.len() as u64;
                }
                Some(p.len())
            }
            _ => None,
        }
    }

    /// Starts a handshake now (a site with an endpoint, at start-up).
    pub fn initiate(&mut self, buf: &mut [u8]) {
        if let TunnResult::WriteToNetwork(p) = self.tunn.format_handshake_initiation(buf, false) {
            self.out.push_back(p.to_vec());
        }
    }

    /// Runs boringtun's timers (retransmits, rekeys, keepalives). Returns true when the
    /// session just expired (no handshake for too long): the tunnel is down.
    pub fn update_timers(&mut self, buf: &mut [u8]) -> bool {
        match self.tunn.update_timers(buf) {
            TunnResult::WriteToNetwork(p) => {
                self.out.push_back(p.to_vec());
                false
            }
            TunnResult::Err(WireGuardError::ConnectionExpired) => std::mem::take(&mut self.up),
            _ => false,
        }
    }

    /// Forgets the keys (an operator's disconnect): the peer must handshake again.
    pub fn reset(&mut self, key: &WgKey, peer: &WgPeerConfig, limiter: Arc<RateLimiter>) {
        let remote = self.remote;
        let (rx, tx, rp, tp, hs) = (
            self.rx_bytes,
            self.tx_bytes,
            self.rx_packets,
            self.tx_packets,
            self.handshakes,
        );
        *self = WgSession::new(key, peer, self.index, limiter);
        self.remote = remote;
        self.rx_bytes = rx;
        self.tx_bytes = tx;
        self.rx_packets = rp;
        self.tx_packets = tp;
        self.handshakes = hs;
    }

    /// The next datagram for the peer.
    pub fn pop_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }
}
