//! OpenVPN in the gateway core: demultiplexing UDP datagrams and TCP frames to sessions,
//! new sessions behind the control-channel wrapper, the data path, and float (a client
//! whose address changed keeps its session when an authenticated P_DATA_V2 arrives from
//! the new address, found by its peer-id - as a stock OpenVPN 2.6 server does).

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::shard::DirKey;
use super::tunnel::{Common, OvpnTransport, OvpnTunnel, Tunnel};
use super::{Dest, Drop, Event, Forward, GatewayCore, StreamId, Transmit, TunnelId};
use crate::openvpn::cookie::{proof_of, reset_reply};
use crate::openvpn::data::DATA_V2_OVERHEAD;
use crate::openvpn::server::ServerSession;
use crate::openvpn::wrap::{FirstPacket, ServerWrap, WrapError};
use crate::openvpn::{DataOutcome, DataPathError};
use crate::wire::mss::clamp_mss;
use crate::wire::openvpn::{Opcode, Packet};

/// Peer-ids are 24 bits; 0xffffff means "none" in P_DATA_V2.
const PEER_ID_MASK: u32 = 0x00ff_ffff;

/// The packet size `mssfix` keeps encapsulated full-size TCP segments within: OpenVPN
/// 2.6's default `mssfix 1492 mtu` (the whole datagram, its IP and UDP headers included).
const MSSFIX: usize = 1492;

/// The largest TCP MSS for session `t`, as OpenVPN 2.6 computes it for `mssfix 1492 mtu`
/// (mss.c `frame_calculate_mssfix`): 1492 minus the outer IP and UDP/TCP headers, the TCP
/// transport's 2-byte frame length, the data channel's overhead (`P_DATA_V2`: opcode and
/// peer-id 4, packet id 4, AEAD tag 16 - every cipher we offer is an AEAD) and 40 for the
/// inner IPv4 and TCP headers. UDP over IPv4: 1400; over IPv6: 1380; TCP over IPv4:
/// 1386; over IPv6: 1366.
pub(super) fn max_mss(t: &OvpnTunnel) -> u16 {
    let v6 = t.remote.ip().to_canonical().is_ipv6();
    let ip = if v6 { 40 } else { 20 };
    let (transport, framing) = match t.transport {
        OvpnTransport::Udp => (8, 0),
        OvpnTransport::Stream(_) => (20, 2),
    };
    let mss = MSSFIX - ip - transport - framing - DATA_V2_OVERHEAD - 40;
    mss as u16
}

/// The drop counter of a packet the wrapper refused.
pub(super) fn wrap_drop(e: &WrapError) -> Drop {
    match e {
        WrapError::Malformed => Drop::Malformed,
        WrapError::UnexpectedOpcode(_) => Drop::Unwrapped,
        WrapError::BadAuth => Drop::WrapAuth,
        WrapError::Replay => Drop::WrapReplay,
        WrapError::ClientKey(_) => Drop::WrapKey,
    }
}

/// The sender's session id of a control packet (readable with every wrapper).
fn session_id_of(packet: &[u8]) -> Option<u64> {
    let b: [u8; 8] = packet.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// OpenVPN handshakes one address may have in progress at once (a NATed office's clients
/// all share one address; a single host opening more is an attack).
const MAX_HANDSHAKES_PER_IP: u32 = 64;

/// How a new session starts.
enum Start {
    /// From a hard reset (TCP: the connection proved the address).
    Reset(FirstPacket),
    /// From the packet that echoed our session cookie (UDP).
    Cookie {
        cookie: u64,
        proof: FirstPacket,
        ack_reset: bool,
    },
}

fn is_reset(op: Opcode) -> bool {
    matches!(
        op,
        Opcode::ControlHardResetClientV2 | Opcode::ControlHardResetClientV3
    )
}

impl GatewayCore {
    pub(super) fn ovpn(&mut self, id: TunnelId) -> Option<&mut OvpnTunnel> {
        match self.tunnels.get_mut(&id) {
            Some(Tunnel::OpenVpn(t)) => Some(t),
            _ => None,
        }
    }

    /// A datagram on the OpenVPN UDP port. Returns the range of `self.buf` to write to TUN.
    pub(super) fn openvpn_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<(bool, Range<usize>)> {
        self.cfg.openvpn.as_ref()?;
        let Some(opcode) = bytes.first().and_then(|b| Opcode::from_u8(b >> 3)) else {
            self.drops.count(Drop::Malformed);
            return None;
        };
        if opcode.is_data() {
            let Ok(Packet::Data(d)) = Packet::parse(bytes) else {
                self.drops.count(Drop::Malformed);
                return None;
            };
            // P_DATA_V2 names its session by peer-id; V1 (and "no peer-id") by address.
            let peer_id = d.peer_id.filter(|p| *p != PEER_ID_MASK);
            let id = match peer_id {
                Some(p) => self.by_peer_id.get(&p).copied(),
                None => self.by_udp.get(&from).copied(),
            };
            let Some(id) = id else {
                // Another worker's session (the client moved): its peer-id or the
                // directory says whose.
                let owner = match peer_id {
                    Some(p) => Some(self.shard.owner_of_id(p)),
                    None => self.moved_owner(from),
                };
                match owner {
                    Some(w) => self.forward_datagram(w, from, bytes),
                    None => self.drops.count(Drop::NoSession),
                }
                return None;
            };
            if self.ovpn(id).map(|t| t.transport) != Some(OvpnTransport::Udp) {
                self.drops.count(Drop::NoSession);
                return None;
            }
            let r = self.openvpn_data(now, id, bytes, d.key_id).ok()?;
            // Authenticated (a keepalive too): the client may have moved (NAT rebinding,
            // a new network).
            self.float(id, from);
            return r.map(|r| (false, r));
        }
        // Control packets may be wrapped: only the opcode and the sender's session id are
        // readable before the wrapper authenticates them. They go to the session at this
        // address whose client session id they carry: the established one, or a new
        // handshake from the same address that may replace it once it authenticates.
        let existing = self.by_udp.get(&from).copied();
        let replacing = self.replacing_udp.get(&from).copied();
        let sid = session_id_of(bytes);
        for id in [existing, replacing].into_iter().flatten() {
            if self
                .ovpn(id)
                .is_some_and(|t| Some(t.session.remote_session_id()) == sid)
            {
                self.openvpn_control(now, id, bytes);
                return None;
            }
        }
        if existing.is_none()
            && let Some(w) = self.moved_owner(from)
        {
            self.forward_datagram(w, from, bytes);
            return None;
        }
        // Nothing is kept for a reset: it gets a stateless answer carrying a cookie, and only
        // the packet that echoes the cookie from this address starts a session. An
        // established session at this address is not touched by either (a spoofed reset
        // cannot end it; a restarted client's new session replaces it once authenticated).
        if is_reset(opcode) {
            // A stock client answers every server reset with a new session of its own, so
            // answering resets forged with a live client's address would churn its session:
            // they get an answer only once that session falls silent (its client restarted).
            if let Some(id) = existing
                && self.ovpn(id).is_some_and(|t| t.session.is_live(now))
            {
                self.drops.count(Drop::LiveReset);
                if self.drops.get(Drop::LiveReset).is_power_of_two() {
                    info!(remote = %from, dropped = self.drops.get(Drop::LiveReset), "ignored an OpenVPN hard reset from the address of a live session (forged, or a restart answered once the old session falls silent)");
                }
                return None;
            }
            self.answer_reset(now, from, bytes);
        } else {
            self.openvpn_proof(now, from, bytes, existing.is_some());
        }
        None
    }

    /// Answers a client's hard reset statelessly (see [`crate::openvpn::cookie`]).
    fn answer_reset(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Some(cfg) = self.cfg.openvpn.clone() else {
            return;
        };
        let unix = self.unix_time(now);
        let checked = cfg.wrap.authenticate_first(bytes, unix);
        let Some(mut first) = self.count_wrap_result(from, checked) else {
            return;
        };
        let client_sid = first.session_id();
        // tls-crypt-v2: the reset carried the client's key, so the answer may acknowledge it
        // and ask for the key again (early negotiation); other resets are answered with no
        // acknowledgement, exactly as long as they are.
        let v2 = matches!(cfg.wrap, ServerWrap::TlsCryptV2 { .. });
        let cookie = self.cookies.issue(unix, from, client_sid);
        let mut out = Vec::with_capacity(bytes.len());
        reset_reply(cookie, client_sid, v2, v2, &mut out);
        if !first.wrap_reply(&mut out) {
            return;
        }
        self.transmits.push_back(Transmit {
            dest: Dest::Udp {
                from: super::Listener::OpenVpnUdp,
                to: from,
            },
            payload: out,
        });
    }

    /// A control packet from an address with no session of its client: the answer to our
    /// stateless reset, or dropped.
    fn openvpn_proof(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], replaces: bool) {
        let Some(cfg) = self.cfg.openvpn.clone() else {
            return;
        };
        let unix = self.unix_time(now);
        let checked = cfg.wrap.authenticate_proof(bytes, unix);
        let Some(proof) = self.count_wrap_result(from, checked) else {
            return;
        };
        let Some((client_sid, cookie)) = proof.packet().ok().as_ref().and_then(proof_of) else {
            self.drops.count(Drop::NoSession);
            return;
        };
        if !self.cookies.check(unix, from, client_sid, cookie) {
            self.drops.count(Drop::BadCookie);
            if self.drops.get(Drop::BadCookie).is_power_of_two() {
                info!(remote = %from, dropped = self.drops.get(Drop::BadCookie), "dropped an OpenVPN packet with a wrong or expired session cookie");
            }
            return;
        }
        if self.handshakes_from(from.ip()) >= MAX_HANDSHAKES_PER_IP {
            self.drops.count(Drop::Handshakes);
            if self.drops.get(Drop::Handshakes).is_power_of_two() {
                warn!(remote = %from, limit = MAX_HANDSHAKES_PER_IP, "too many OpenVPN handshakes from one address; refusing more");
            }
            return;
        }
        let v2 = matches!(cfg.wrap, ServerWrap::TlsCryptV2 { .. });
        let start = Start::Cookie {
            cookie,
            proof,
            ack_reset: !v2,
        };
        if let Some(id) = self.new_openvpn_session(now, OvpnTransport::Udp, from, start)
            && replaces
        {
            // Kept apart until it authenticates; then it replaces the session at `from`.
            let old = self.replacing_udp.insert(from, id);
            if let Some(old) = old.filter(|o| *o != id) {
                self.remove_tunnel(old);
            }
        }
    }

    /// A new session at `from` (replacing the one there) authenticated: the old one ends.
    pub(super) fn replace_at_address(&mut self, now: Instant, id: TunnelId) {
        let Some(remote) = self.ovpn(id).map(|t| t.remote) else {
            return;
        };
        if self.replacing_udp.get(&remote) != Some(&id) {
            return;
        }
        self.replacing_udp.remove(&remote);
        if let Some(old) = self.by_udp.insert(remote, id)
            && old != id
        {
            debug!(remote = %remote, "client restarted (new session from the same address)");
            self.log_disconnect(now, old, "client restarted (new session)");
            self.remove_tunnel(old);
            self.by_udp.insert(remote, id);
        }
    }

    /// OpenVPN handshakes in progress from `ip`.
    fn handshakes_from(&self, ip: IpAddr) -> u32 {
        self.handshakes_by_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Moves a UDP session to `to` after an authenticated packet came from there.
    fn float(&mut self, id: TunnelId, to: SocketAddr) {
        let Some(t) = self.ovpn(id) else {
            return;
        };
        let from = t.remote;
        if from == to {
            return;
        }
        t.remote = to;
        let client = t.common.client.clone().unwrap_or_default();
        if self.by_udp.get(&from) == Some(&id) {
            self.by_udp.remove(&from);
        }
        // A stale session of another client at the new address loses the address map
        // entry (it is gone from there), not its session.
        self.by_udp.insert(to, id);
        if self.shard.count() > 1 {
            // Its control packets may now reach another worker: tell them where it is.
            let me = self.shard.index();
            let mut dir = self.shard.directory();
            if dir.get(&DirKey::OpenVpn(from)) == Some(&me) {
                dir.remove(&DirKey::OpenVpn(from));
            }
            dir.insert(DirKey::OpenVpn(to), me);
        }
        info!(client = %client, from = %from, to = %to, transport = "udp", "client floated to a new address");
        self.note_state_change();
        self.events.push_back(Event::Roamed {
            tunnel: id,
            from,
            to,
        });
    }

    /// One deframed OpenVPN packet on TCP connection `stream`.
    pub(super) fn openvpn_stream_packet(
        &mut self,
        now: Instant,
        stream: StreamId,
        packet: &[u8],
    ) -> Option<Range<usize>> {
        let (tid, remote) = *self.streams.get(&stream)?;
        let Some(opcode) = packet.first().and_then(|b| Opcode::from_u8(b >> 3)) else {
            self.drops.count(Drop::Malformed);
            return None;
        };
        if opcode.is_data() {
            match (Packet::parse(packet), tid) {
                (Ok(Packet::Data(d)), Some(id)) => {
                    return self.openvpn_data(now, id, packet, d.key_id).ok().flatten();
                }
                (Ok(_), None) => self.drops.count(Drop::NoSession),
                _ => self.drops.count(Drop::Malformed),
            }
            return None;
        }
        if let Some(id) = tid {
            self.openvpn_control(now, id, packet);
            return None;
        }
        if !is_reset(opcode) {
            self.drops.count(Drop::NoSession);
            return None;
        }
        let first = self.authenticate_first(now, remote, packet)?;
        if let Some(id) = self.new_openvpn_session(
            now,
            OvpnTransport::Stream(stream),
            remote,
            Start::Reset(first),
        ) && let Some(s) = self.streams.get_mut(&stream)
        {
            s.0 = Some(id);
        }
        None
    }

    pub(super) fn openvpn_stream_closed(&mut self, now: Instant, stream: StreamId, reason: &str) {
        let Some((Some(id), _)) = self.streams.remove(&stream) else {
            return;
        };
        let Some(t) = self.ovpn(id) else {
            return;
        };
        if t.session.is_established() {
            let reason = format!("TCP {reason}");
            self.log_disconnect(now, id, &reason);
        }
        self.remove_tunnel(id);
    }

    /// Checks a new session's first packet with the configured wrapper; counts and (rarely)
    /// logs refusals. Nothing is ever sent back to a packet that fails.
    fn authenticate_first(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<FirstPacket> {
        let cfg = self.cfg.openvpn.clone()?;
        let unix = self.unix_time(now);
        let checked = cfg.wrap.authenticate_first(bytes, unix).and_then(|first| {
            // Without a wrapper anyone can make a reset, so only wrapped ones are worth
            // remembering: a captured one must not open a second session.
            let wrapped = !matches!(cfg.wrap, ServerWrap::None);
            if wrapped && !self.shard.first_replays().accept(now, first.session_id()) {
                return Err(WrapError::Replay);
            }
            Ok(first)
        });
        self.count_wrap_result(from, checked)
    }

    /// Counts (and rarely logs) a packet the wrapper refused.
    fn count_wrap_result(
        &mut self,
        from: SocketAddr,
        checked: Result<FirstPacket, WrapError>,
    ) -> Option<FirstPacket> {
        match checked {
            Ok(first) => Some(first),
            Err(e) => {
                let why = wrap_drop(&e);
                self.drops.count(why);
                // Log the 1st, 2nd, 4th, 8th... of each reason: visible, bounded under a flood.
                if self.drops.get(why).is_power_of_two() {
                    info!(remote = %from, error = %e, dropped = self.drops.get(why), "dropped an OpenVPN packet before TLS (control-channel wrapper)");
                }
                None
            }
        }
    }

    /// A unique peer-id (24 bits, never 0xffffff, never one in use) of this worker's
    /// residue, so that a packet carrying it names this worker.
    fn new_peer_id(&mut self) -> u32 {
        let step = self.shard.count() as u32;
        loop {
            let p = self.next_peer_id;
            self.next_peer_id += step;
            if self.next_peer_id >= PEER_ID_MASK {
                self.next_peer_id = self.shard.index() as u32;
            }
            if !self.by_peer_id.contains_key(&p) {
                return p;
            }
        }
    }

    /// The worker holding the session of a client that moved to `from`, if not this one.
    fn moved_owner(&self, from: SocketAddr) -> Option<usize> {
        if self.shard.count() == 1 {
            return None;
        }
        let w = *self.shard.directory().get(&DirKey::OpenVpn(from))?;
        (w != self.shard.index()).then_some(w)
    }

    fn forward_datagram(&mut self, worker: usize, from: SocketAddr, bytes: &[u8]) {
        self.forward(Forward::Datagram {
            worker,
            listener: super::Listener::OpenVpnUdp,
            remote: from,
            bytes: bytes.to_vec(),
        });
    }

    fn new_openvpn_session(
        &mut self,
        now: Instant,
        transport: OvpnTransport,
        remote: SocketAddr,
        start: Start,
    ) -> Option<TunnelId> {
        let cfg = self.cfg.openvpn.clone()?;
        if self.handshaking >= self.cfg.max_handshaking {
            self.drops.count(Drop::Handshakes);
            return None;
        }
        let peer_id = self.new_peer_id();
        let entropy = (self.entropy)();
        let first = match &start {
            Start::Reset(f) => f,
            Start::Cookie { proof, .. } => proof,
        };
        let wrapper = first.wrapper_name();
        if let Some(m) = first.metadata() {
            debug!(remote = %remote, metadata = %String::from_utf8_lossy(m.get(1..).unwrap_or_default()), "tls-crypt-v2 client key");
        }
        let session = match start {
            Start::Reset(first) => ServerSession::new_wrapped(cfg, entropy, now, peer_id, first),
            Start::Cookie {
                cookie,
                proof,
                ack_reset,
            } => ServerSession::from_cookie(cfg, entropy, now, peer_id, cookie, proof, ack_reset),
        };
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                warn!(remote = %remote, error = %e, "cannot start session");
                return None;
            }
        };
        let id = self.new_tunnel_id();
        debug!(remote = %remote, transport = ?transport, wrapper, peer_id, "new session");
        if transport == OvpnTransport::Udp {
            // A replacement for an established session stays out of the map until it
            // authenticates (the caller keeps it apart).
            self.by_udp.entry(remote).or_insert(id);
        }
        self.by_peer_id.insert(peer_id, id);
        self.handshaking += 1;
        *self.handshakes_by_ip.entry(remote.ip()).or_default() += 1;
        self.tunnels.insert(
            id,
            Tunnel::OpenVpn(Box::new(OvpnTunnel {
                session,
                transport,
                remote,
                common: Common {
                    handshaking: true,
                    ..Common::default()
                },
            })),
        );
        self.dirty.push(id);
        Some(id)
    }

    fn openvpn_control(&mut self, now: Instant, id: TunnelId, bytes: &[u8]) {
        let Some(t) = self.ovpn(id) else {
            return;
        };
        if let Err(err) = t.session.handle_control_datagram(now, bytes) {
            self.drops.count(wrap_drop(&err));
            return;
        }
        self.dirty.push(id);
    }

    /// Decrypts a data packet into `self.buf`: Err when it did not authenticate, Ok(None) for
    /// a keepalive or a packet anti-spoofing dropped, Ok(range) for TUN (a TCP SYN's MSS
    /// clamped to [`max_mss`]).
    fn openvpn_data(
        &mut self,
        now: Instant,
        id: TunnelId,
        bytes: &[u8],
        key_id: u8,
    ) -> Result<Option<Range<usize>>, ()> {
        let Some(Tunnel::OpenVpn(t)) = self.tunnels.get_mut(&id) else {
            self.drops.count(Drop::NoSession);
            return Err(());
        };
        let mss = max_mss(t);
        let range = match t.session.handle_data(now, bytes, key_id, &mut self.buf) {
            Ok(DataOutcome::Packet(r)) => r,
            Ok(DataOutcome::Keepalive) => return Ok(None),
            Err(DataPathError::NotEstablished) => {
                self.drops.count(Drop::NotEstablished);
                return Err(());
            }
            Err(_) => {
                self.drops.count(Drop::BadData);
                return Err(());
            }
        };
        let src = self
            .buf
            .get(range.clone())
            .map_or(Err(Drop::Malformed), super::source_of);
        if !self.check_source(id, src) {
            return Ok(None);
        }
        // The client may not clamp its SYNs itself (stock OpenVPN clients do, ours does
        // not): the LAN host's replies must fit the tunnel too.
        if let Some(p) = self.buf.get_mut(range.clone()) {
            clamp_mss(p, mss);
        }
        Ok(Some(range))
    }
}
