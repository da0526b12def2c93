//! One session's wrapper: its keys for each direction, its packet-id counter and its replay
//! window; and the gateway's check of a new session's first packet.

use std::fmt;

use super::crypto::{aes256_ctr, hmac_digest, hmac_sha256, tags_equal};
use super::keys::{StaticKey, wipe};
use super::packet_id::{PacketIdSend, ReplayWindow};
use super::{ClientWrap, KeyDirection, ServerWrap, TlsAuthDigest, WrapError};
use crate::wire::openvpn::{Opcode, Packet, SESSION_ID_LEN};

/// opcode/key id byte + session id.
const HEAD: usize = 1 + SESSION_ID_LEN;
/// Long-form packet id: id (4) + time (4).
const PID: usize = 8;
/// tls-crypt's HMAC-SHA256 tag.
const TAG: usize = 32;
/// A tls-crypt-v2 client's first packet id announces early negotiation (ssl_pkt.h).
const EARLY_NEG_START: u32 = 0x0f00_0000;

#[derive(Clone)]
enum Mode {
    None,
    Auth {
        digest: TlsAuthDigest,
        send: Vec<u8>,
        recv: Vec<u8>,
    },
    Crypt {
        send_cipher: [u8; 32],
        send_hmac: [u8; 32],
        recv_cipher: [u8; 32],
        recv_hmac: [u8; 32],
    },
}

/// A gateway session's wrapper, exported for a handoff to another process: its keys (tls-auth
/// HMAC keys, or tls-crypt cipher and HMAC keys, each direction), its packet-id counter
/// (jumped by [`WRAP_PACKET_ID_SKIP`]) and replay window, tls-crypt-v2 metadata.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct WrapperHandoff {
    /// tls-auth: digest and the send and receive HMAC keys.
    pub auth: Option<(TlsAuthDigest, Vec<u8>, Vec<u8>)>,
    /// tls-crypt(-v2): send cipher, send HMAC, receive cipher, receive HMAC keys.
    pub crypt: Option<[Vec<u8>; 4]>,
    /// The last packet id sent (jumped) and the time sent with it.
    pub send: (u32, u32),
    /// The receive window: time, highest id, bitmap.
    pub recv: (Option<u32>, u32, u64),
    /// tls-crypt-v2: the client's metadata.
    pub metadata: Option<Vec<u8>>,
}

/// Control packet ids a moved wrapper skips: the old process stopped before it exported;
/// this guards against a bug only (tls-crypt's SIV construction would survive a repeat,
/// the client's replay window would not).
pub const WRAP_PACKET_ID_SKIP: u32 = 1 << 16;

/// Which end a wrapper is on: tls-crypt-v2 packets are only valid client -> server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Client,
    Server,
}

/// A session's control-channel wrapper (see the [module docs](super)).
#[derive(Clone)]
pub struct Wrapper {
    mode: Mode,
    end: End,
    send: PacketIdSend,
    recv: ReplayWindow,
    /// tls-crypt-v2 client: the wrapped key appended to V3 resets and WKC_V1 packets.
    wkc: Option<Vec<u8>>,
    /// tls-crypt-v2 server: the client's metadata from its wrapped key.
    metadata: Option<Vec<u8>>,
}

impl fmt::Debug for Wrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wrapper")
            .field("mode", &self.mode_name())
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Drop for Mode {
    fn drop(&mut self) {
        match self {
            Mode::None => {}
            Mode::Auth { send, recv, .. } => {
                wipe(send);
                wipe(recv);
            }
            Mode::Crypt {
                send_cipher,
                send_hmac,
                recv_cipher,
                recv_hmac,
            } => {
                wipe(send_cipher);
                wipe(send_hmac);
                wipe(recv_cipher);
                wipe(recv_hmac);
            }
        }
    }
}

impl Wrapper {
    /// A client's wrapper. `unix_time` goes into every packet id (OpenVPN sends the time the
    /// session started).
    pub fn client(wrap: &ClientWrap, unix_time: u32) -> Wrapper {
        let (mode, wkc, first) = match wrap {
            ClientWrap::None => (Mode::None, None, 0),
            ClientWrap::TlsAuth {
                key,
                direction,
                digest,
            } => (auth_mode(key, *direction, *digest), None, 0),
            ClientWrap::TlsCrypt { key } => (crypt_mode(key, KeyDirection::Inverse), None, 0),
            ClientWrap::TlsCryptV2 { key } => (
                crypt_mode(key.kc(), KeyDirection::Inverse),
                Some(key.wkc().to_vec()),
                EARLY_NEG_START,
            ),
        };
        Wrapper {
            mode,
            end: End::Client,
            send: PacketIdSend::new(first, unix_time),
            recv: ReplayWindow::default(),
            wkc,
            metadata: None,
        }
    }

    fn server(mode: Mode, unix_time: u32) -> Wrapper {
        Wrapper {
            mode,
            end: End::Server,
            send: PacketIdSend::new(0, unix_time),
            recv: ReplayWindow::default(),
            wkc: None,
            metadata: None,
        }
    }

    /// Exports a gateway session's wrapper (see [`WrapperHandoff`]).
    pub fn to_handoff(&self) -> WrapperHandoff {
        let (auth, crypt) = match &self.mode {
            Mode::None => (None, None),
            Mode::Auth { digest, send, recv } => {
                (Some((*digest, send.clone(), recv.clone())), None)
            }
            Mode::Crypt {
                send_cipher,
                send_hmac,
                recv_cipher,
                recv_hmac,
            } => (
                None,
                Some([
                    send_cipher.to_vec(),
                    send_hmac.to_vec(),
                    recv_cipher.to_vec(),
                    recv_hmac.to_vec(),
                ]),
            ),
        };
        let (id, time) = self.send.parts();
        WrapperHandoff {
            auth,
            crypt,
            send: (id.saturating_add(WRAP_PACKET_ID_SKIP), time),
            recv: self.recv.parts(),
            metadata: self.metadata.clone(),
        }
    }

    /// Rebuilds a gateway session's wrapper from [`to_handoff`](Self::to_handoff).
    pub fn from_handoff(h: WrapperHandoff) -> Option<Wrapper> {
        let key = |v: &[u8]| -> Option<[u8; 32]> { v.try_into().ok() };
        let mode = match (h.auth, h.crypt) {
            (None, None) => Mode::None,
            (Some((digest, send, recv)), None) => Mode::Auth { digest, send, recv },
            (None, Some([sc, sh, rc, rh])) => Mode::Crypt {
                send_cipher: key(&sc)?,
                send_hmac: key(&sh)?,
                recv_cipher: key(&rc)?,
                recv_hmac: key(&rh)?,
            },
            _ => return None,
        };
        let (id, time) = h.send;
        Some(Wrapper {
            mode,
            end: End::Server,
            send: PacketIdSend::new(id, time),
            recv: ReplayWindow::from_parts(h.recv),
            wkc: None,
            metadata: h.metadata,
        })
    }

    /// A gateway session's wrapper when the gateway uses none.
    pub fn server_none() -> Wrapper {
        Wrapper::server(Mode::None, 0)
    }

    /// True when packets pass unwrapped.
    pub fn is_none(&self) -> bool {
        matches!(self.mode, Mode::None)
    }

    /// Sets the UNIX time written into packet ids from now on.
    pub fn set_time(&mut self, unix_time: u32) {
        self.send.set_time(unix_time);
    }

    /// Bytes of the wrapped client key a tls-crypt-v2 client appends (0 otherwise).
    pub fn wkc_len(&self) -> usize {
        self.wkc.as_ref().map_or(0, Vec::len)
    }

    /// "none", "tls-auth", "tls-crypt" or "tls-crypt-v2", for logs.
    pub fn mode_name(&self) -> &'static str {
        match (&self.mode, self.wkc.is_some() || self.metadata.is_some()) {
            (Mode::None, _) => "none",
            (Mode::Auth { .. }, _) => "tls-auth",
            (Mode::Crypt { .. }, false) => "tls-crypt",
            (Mode::Crypt { .. }, true) => "tls-crypt-v2",
        }
    }

    /// True for a tls-crypt-v2 client (its first control packet may carry `WKc`).
    pub fn is_v2_client(&self) -> bool {
        self.wkc.is_some()
    }

    /// The opcode of this client's first packet.
    pub fn client_reset_opcode(&self) -> Opcode {
        if self.wkc.is_some() {
            Opcode::ControlHardResetClientV3
        } else {
            Opcode::ControlHardResetClientV2
        }
    }

    /// The tls-crypt-v2 metadata of the client (server side).
    pub fn metadata(&self) -> Option<&[u8]> {
        self.metadata.as_deref()
    }

    /// Wraps the plain control packet in `packet` (as emitted by the codec) in place.
    /// Returns false if it cannot be sent (packet ids used up): drop it.
    pub fn wrap(&mut self, packet: &mut Vec<u8>) -> bool {
        if matches!(self.mode, Mode::None) {
            return true;
        }
        if packet.len() < HEAD {
            return false;
        }
        let Some((id, time)) = self.send.next() else {
            return false;
        };
        let mut pid = [0u8; PID];
        pid[..4].copy_from_slice(&id.to_be_bytes());
        pid[4..].copy_from_slice(&time.to_be_bytes());
        let opcode = packet[0] >> 3;
        let plain = std::mem::take(packet);
        let (head, body) = plain.split_at(HEAD);
        match &self.mode {
            Mode::None => {}
            Mode::Auth { digest, send, .. } => {
                let tag = hmac_digest(*digest, send, &[&pid, head, body]);
                packet.extend_from_slice(head);
                packet.extend_from_slice(tag.as_ref());
                packet.extend_from_slice(&pid);
                packet.extend_from_slice(body);
            }
            Mode::Crypt {
                send_cipher,
                send_hmac,
                ..
            } => {
                let tag = hmac_sha256(send_hmac, &[head, &pid, body]);
                packet.extend_from_slice(head);
                packet.extend_from_slice(&pid);
                packet.extend_from_slice(&tag);
                let start = packet.len();
                packet.extend_from_slice(body);
                aes256_ctr(send_cipher, &tag, &mut packet[start..]);
                if let Some(wkc) = &self.wkc
                    && (opcode == Opcode::ControlHardResetClientV3.as_u8()
                        || opcode == Opcode::ControlWkcV1.as_u8())
                {
                    packet.extend_from_slice(wkc);
                }
            }
        }
        true
    }

    /// Authenticates and unwraps a control packet from the wire into `out` (the plain control
    /// packet; P_CONTROL_WKC_V1 comes out as P_CONTROL_V1). Nothing is recorded on failure.
    pub fn unwrap(&mut self, wire: &[u8], out: &mut Vec<u8>) -> Result<(), WrapError> {
        let first = *wire.first().ok_or(WrapError::Malformed)?;
        let opcode = Opcode::from_u8(first >> 3).ok_or(WrapError::Malformed)?;
        if !opcode.is_control() || wire.len() < HEAD {
            return Err(WrapError::Malformed);
        }
        let v2_only = matches!(
            opcode,
            Opcode::ControlHardResetClientV3 | Opcode::ControlWkcV1
        );
        if v2_only && (self.end == End::Client || self.metadata.is_none()) {
            return Err(WrapError::UnexpectedOpcode(opcode.as_u8()));
        }
        let wire = if v2_only { strip_wkc(wire)? } else { wire };
        out.clear();
        match &self.mode {
            Mode::None => {
                out.extend_from_slice(wire);
                return Ok(());
            }
            Mode::Auth { digest, recv, .. } => {
                let hlen = digest.tag_len();
                // Too short to hold the HMAC: not wrapped (a client without the key).
                if wire.len() < HEAD + hlen + PID {
                    return Err(WrapError::BadAuth);
                }
                let (head, rest) = wire.split_at(HEAD);
                let (tag, rest) = rest.split_at(hlen);
                let (pid, body) = rest.split_at(PID);
                let check = hmac_digest(*digest, recv, &[pid, head, body]);
                if !tags_equal(check.as_ref(), tag) {
                    return Err(WrapError::BadAuth);
                }
                let (id, time) = read_pid(pid);
                if !self.recv.check(id, time) {
                    return Err(WrapError::Replay);
                }
                self.recv.commit(id, time);
                out.extend_from_slice(head);
                out.extend_from_slice(body);
            }
            Mode::Crypt {
                recv_cipher,
                recv_hmac,
                ..
            } => {
                if wire.len() < HEAD + PID + TAG {
                    return Err(WrapError::BadAuth);
                }
                let (head, rest) = wire.split_at(HEAD);
                let (pid, rest) = rest.split_at(PID);
                let (tag, ct) = rest.split_at(TAG);
                out.extend_from_slice(head);
                out.extend_from_slice(ct);
                aes256_ctr(recv_cipher, tag, &mut out[HEAD..]);
                let check = hmac_sha256(recv_hmac, &[head, pid, &out[HEAD..]]);
                if !tags_equal(&check, tag) {
                    out.clear();
                    return Err(WrapError::BadAuth);
                }
                let (id, time) = read_pid(pid);
                if !self.recv.check(id, time) {
                    out.clear();
                    return Err(WrapError::Replay);
                }
                self.recv.commit(id, time);
                if opcode == Opcode::ControlWkcV1 {
                    out[0] = Opcode::ControlV1.header_byte(first & 0x07);
                }
            }
        }
        Ok(())
    }
}

/// The first packet of a new session, authenticated by the gateway's wrapper before any
/// session state exists. Hand it to [`ServerSession::new_wrapped`](crate::openvpn::server::ServerSession::new_wrapped).
#[derive(Debug)]
pub struct FirstPacket {
    pub(crate) wrapper: Wrapper,
    pub(crate) packet: Vec<u8>,
}

impl FirstPacket {
    /// The unwrapped packet (a client hard reset, or the proof after a stateless reset).
    pub fn packet(&self) -> Result<crate::wire::openvpn::ControlPacket<'_>, WrapError> {
        match Packet::parse(&self.packet) {
            Ok(Packet::Control(c)) => Ok(c),
            _ => Err(WrapError::Malformed),
        }
    }

    /// The client's session id.
    pub fn session_id(&self) -> u64 {
        self.packet().map(|c| c.session_id).unwrap_or(0)
    }

    /// The tls-crypt-v2 metadata from the client's key (first byte its type).
    pub fn metadata(&self) -> Option<&[u8]> {
        self.wrapper.metadata()
    }

    /// Wraps `packet` (a plain control packet) for the client this packet came from.
    pub(crate) fn wrap_reply(&mut self, packet: &mut Vec<u8>) -> bool {
        self.wrapper.wrap(packet)
    }

    /// The wrapper the session continues with.
    pub(crate) fn into_wrapper(self) -> Wrapper {
        self.wrapper
    }

    /// The name of the wrapper the session continues with.
    pub fn wrapper_name(&self) -> &'static str {
        self.wrapper.mode_name()
    }
}

impl ServerWrap {
    /// Authenticates a datagram from an unknown peer: it must be a client hard reset wrapped
    /// as this gateway requires (for tls-crypt-v2: a P_CONTROL_HARD_RESET_CLIENT_V3 whose
    /// wrapped client key opens with the server key). Only then may the driver create a
    /// session. `unix_time` is the time the gateway will send in its packet ids.
    pub fn authenticate_first(
        &self,
        datagram: &[u8],
        unix_time: u32,
    ) -> Result<FirstPacket, WrapError> {
        let expected = match self {
            ServerWrap::TlsCryptV2 { .. } => Opcode::ControlHardResetClientV3,
            _ => Opcode::ControlHardResetClientV2,
        };
        self.authenticate_opening(datagram, unix_time, &[expected])
    }

    /// Authenticates the packet that answers a stateless reset (the client's proof that it
    /// got our session cookie): `P_ACK_V1` or `P_CONTROL_V1`, or with tls-crypt-v2 the
    /// `P_CONTROL_WKC_V1` that carries the client's wrapped key again (we asked for it in the
    /// reset). The wrapper the session continues with sends packet id 2 next: id 1 went out
    /// in the stateless reset.
    pub fn authenticate_proof(
        &self,
        datagram: &[u8],
        unix_time: u32,
    ) -> Result<FirstPacket, WrapError> {
        let allowed: &[Opcode] = match self {
            ServerWrap::TlsCryptV2 { .. } => &[Opcode::ControlWkcV1],
            _ => &[Opcode::ControlV1, Opcode::AckV1],
        };
        let mut first = self.authenticate_opening(datagram, unix_time, allowed)?;
        first.wrapper.send = PacketIdSend::new(1, unix_time);
        Ok(first)
    }

    fn authenticate_opening(
        &self,
        datagram: &[u8],
        unix_time: u32,
        allowed: &[Opcode],
    ) -> Result<FirstPacket, WrapError> {
        let first = *datagram.first().ok_or(WrapError::Malformed)?;
        let opcode = Opcode::from_u8(first >> 3).ok_or(WrapError::Malformed)?;
        if !allowed.contains(&opcode) {
            return Err(WrapError::UnexpectedOpcode(opcode.as_u8()));
        }
        let mut wrapper = match self {
            ServerWrap::None => Wrapper::server(Mode::None, unix_time),
            ServerWrap::TlsAuth {
                key,
                direction,
                digest,
            } => Wrapper::server(auth_mode(key, *direction, *digest), unix_time),
            ServerWrap::TlsCrypt { key } => {
                Wrapper::server(crypt_mode(key, KeyDirection::Normal), unix_time)
            }
            ServerWrap::TlsCryptV2 { key } => {
                let tail = wkc_of(datagram)?;
                let (kc, metadata) = key.unwrap_client_key(tail)?;
                let mut w = Wrapper::server(crypt_mode(&kc, KeyDirection::Normal), unix_time);
                w.metadata = Some(metadata);
                w
            }
        };
        let mut packet = Vec::with_capacity(datagram.len());
        wrapper.unwrap(datagram, &mut packet)?;
        let first = FirstPacket { wrapper, packet };
        first.packet()?;
        Ok(first)
    }
}

/// The wrapped client key at the end of a V3 reset or WKC_V1 packet.
fn wkc_of(wire: &[u8]) -> Result<&[u8], WrapError> {
    let n = wire.len();
    if n < HEAD + 2 {
        return Err(WrapError::Malformed);
    }
    let len = usize::from(u16::from_be_bytes([wire[n - 2], wire[n - 1]]));
    if len < 2 || len > n - HEAD {
        return Err(WrapError::Malformed);
    }
    Ok(&wire[n - len..])
}

/// The packet without its trailing wrapped client key.
fn strip_wkc(wire: &[u8]) -> Result<&[u8], WrapError> {
    let wkc = wkc_of(wire)?;
    Ok(&wire[..wire.len() - wkc.len()])
}

fn read_pid(pid: &[u8]) -> (u32, u32) {
    let mut id = [0u8; 4];
    let mut time = [0u8; 4];
    id.copy_from_slice(&pid[..4]);
    time.copy_from_slice(&pid[4..8]);
    (u32::from_be_bytes(id), u32::from_be_bytes(time))
}

fn auth_mode(key: &StaticKey, direction: Option<KeyDirection>, digest: TlsAuthDigest) -> Mode {
    let (out, inn) = KeyDirection::indices(direction);
    Mode::Auth {
        digest,
        send: key.key(out).1[..digest.tag_len()].to_vec(),
        recv: key.key(inn).1[..digest.tag_len()].to_vec(),
    }
}

fn crypt_mode(key: &StaticKey, direction: KeyDirection) -> Mode {
    let (out, inn) = KeyDirection::indices(Some(direction));
    let take = |k: &[u8]| {
        let mut a = [0u8; 32];
        a.copy_from_slice(&k[..32]);
        a
    };
    Mode::Crypt {
        send_cipher: take(key.key(out).0),
        send_hmac: take(key.key(out).1),
        recv_cipher: take(key.key(inn).0),
        recv_hmac: take(key.key(inn).1),
    }
}
