//! OpenVPN packet codec (without tls-auth / tls-crypt wrapping).
//!
//! Every packet starts with one byte: `opcode << 3 | key_id`. Control packets carry the
//! sender's session id, piggy-backed acknowledgements and (except for `P_ACK_V1`) a
//! reliability-layer packet id and payload:
//!
//! ```text
//! op/key (1) | session_id (8) | n_acks (1, <= 8) | n_acks x packet_id (4 BE)
//!            | remote session_id (8, iff n_acks > 0) | packet_id (4 BE, not in P_ACK_V1)
//!            | payload (rest; empty in P_ACK_V1)
//! ```
//!
//! Data packets are `op/key (1) | body` (`P_DATA_V1`) or `op/key (1) | peer_id (3) | body`
//! (`P_DATA_V2`); the body is handled by [`crate::openvpn::data`].
//!
//! Over TCP every packet is preceded by a 2-byte big-endian length ([`tcp_frame`],
//! [`TcpDeframer`], [`tcp_complete_frames`]).
//!
//! [`Packet::parse`] borrows its input and never panics; a parsed control packet emitted
//! again with [`ControlPacket::emit`] gives back the same bytes.

use std::fmt;

/// Largest control packet (header, acks and payload) we send, in bytes. OpenVPN splits its
/// TLS flight to stay under this so that control packets are not IP-fragmented.
pub const MAX_CONTROL_PACKET: usize = 1250;

/// Most packet ids one control packet can acknowledge.
pub const MAX_ACKS: usize = 8;

/// Size of a session id on the wire.
pub const SESSION_ID_LEN: usize = 8;

/// Largest frame [`TcpDeframer`] accepts: whatever the 2-byte length prefix can express.
pub const MAX_TCP_FRAME: usize = u16::MAX as usize;

/// A malformed OpenVPN packet or TCP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The packet ends before a field it must contain.
    #[error("truncated OpenVPN packet")]
    Truncated,
    /// The opcode is not one this implementation speaks (this includes the obsolete
    /// key-method-1 hard resets 1 and 2).
    #[error("unknown OpenVPN opcode {0}")]
    UnknownOpcode(u8),
    /// A control packet claims more acknowledgements than the protocol allows.
    #[error("control packet carries {0} acks; at most 8 are allowed")]
    TooManyAcks(u8),
    /// A `P_ACK_V1` packet has bytes after its acknowledgements.
    #[error("trailing bytes after P_ACK_V1")]
    TrailingBytes,
    /// A TCP frame has length zero; the stream is out of sync and must be closed.
    #[error("zero-length frame on OpenVPN TCP stream; close the connection")]
    EmptyTcpFrame,
}

/// OpenVPN packet opcodes (the high 5 bits of the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// `P_CONTROL_SOFT_RESET_V1`: start renegotiation with a new key id.
    ControlSoftResetV1 = 3,
    /// `P_CONTROL_V1`: control channel packet carrying TLS records.
    ControlV1 = 4,
    /// `P_ACK_V1`: acknowledgements only.
    AckV1 = 5,
    /// `P_DATA_V1`: data channel packet without peer id.
    DataV1 = 6,
    /// `P_CONTROL_HARD_RESET_CLIENT_V2`: a client starts a session.
    ControlHardResetClientV2 = 7,
    /// `P_CONTROL_HARD_RESET_SERVER_V2`: the server answers a client's hard reset.
    ControlHardResetServerV2 = 8,
    /// `P_DATA_V2`: data channel packet with a 24-bit peer id.
    DataV2 = 9,
    /// `P_CONTROL_HARD_RESET_CLIENT_V3`: client hard reset with a tls-crypt-v2 key.
    ControlHardResetClientV3 = 10,
    /// `P_CONTROL_WKC_V1`: control packet carrying a wrapped client key (tls-crypt-v2).
    ControlWkcV1 = 11,
}

impl Opcode {
    /// The opcode with this numeric value, if it is one we know.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            3 => Self::ControlSoftResetV1,
            4 => Self::ControlV1,
            5 => Self::AckV1,
            6 => Self::DataV1,
            7 => Self::ControlHardResetClientV2,
            8 => Self::ControlHardResetServerV2,
            9 => Self::DataV2,
            10 => Self::ControlHardResetClientV3,
            11 => Self::ControlWkcV1,
            _ => return None,
        })
    }

    /// The numeric value (0..=31).
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether this opcode is a data channel packet (`P_DATA_V1` / `P_DATA_V2`).
    pub fn is_data(self) -> bool {
        matches!(self, Self::DataV1 | Self::DataV2)
    }

    /// Whether this opcode is a control channel packet (everything but data).
    pub fn is_control(self) -> bool {
        !self.is_data()
    }

    /// The first byte of a packet with this opcode and key id (only the low 3 bits of
    /// `key_id` are used).
    pub fn header_byte(self, key_id: u8) -> u8 {
        (self.as_u8() << 3) | (key_id & 0x07)
    }
}

/// Up to [`MAX_ACKS`] acknowledged packet ids, stored inline (no heap).
#[derive(Clone, Copy, Default)]
pub struct AckList {
    len: u8,
    ids: [u32; MAX_ACKS],
}

impl AckList {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            len: 0,
            ids: [0; MAX_ACKS],
        }
    }

    /// Appends `id`; returns `false` (and leaves the list unchanged) when it is full.
    pub fn push(&mut self, id: u32) -> bool {
        let Some(slot) = self.ids.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = id;
        self.len += 1;
        true
    }

    /// The ids in order.
    pub fn as_slice(&self) -> &[u32] {
        &self.ids[..usize::from(self.len)]
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether there are no ids.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the list holds [`MAX_ACKS`] ids.
    pub fn is_full(&self) -> bool {
        self.len() == MAX_ACKS
    }

    /// Iterates over the ids.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.as_slice().iter().copied()
    }
}

impl PartialEq for AckList {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for AckList {}

impl fmt::Debug for AckList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl FromIterator<u32> for AckList {
    /// Collects at most [`MAX_ACKS`] ids; the rest are ignored.
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut list = AckList::new();
        for id in iter.into_iter().take(MAX_ACKS) {
            list.push(id);
        }
        list
    }
}

/// A parsed OpenVPN packet borrowing the datagram (or TCP frame) it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A control channel packet (including `P_ACK_V1`).
    Control(ControlPacket<'a>),
    /// A data channel packet; the body is still encrypted.
    Data(DataPacket<'a>),
}

impl<'a> Packet<'a> {
    /// Parses one packet. Rejects truncated packets, unknown opcodes, more than 8 acks and
    /// trailing bytes after a `P_ACK_V1`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let first = r.u8()?;
        let raw_op = first >> 3;
        let key_id = first & 0x07;
        let opcode = Opcode::from_u8(raw_op).ok_or(WireError::UnknownOpcode(raw_op))?;
        match opcode {
            Opcode::DataV1 => Ok(Packet::Data(DataPacket {
                opcode,
                key_id,
                peer_id: None,
                header: r.consumed(),
                body: r.rest(),
            })),
            Opcode::DataV2 => {
                let p = r.take(3)?;
                let peer_id = u32::from_be_bytes([0, p[0], p[1], p[2]]);
                Ok(Packet::Data(DataPacket {
                    opcode,
                    key_id,
                    peer_id: Some(peer_id),
                    header: r.consumed(),
                    body: r.rest(),
                }))
            }
            _ => {
                let session_id = r.u64()?;
                let n = r.u8()?;
                if usize::from(n) > MAX_ACKS {
                    return Err(WireError::TooManyAcks(n));
                }
                let mut acks = AckList::new();
                for _ in 0..n {
                    acks.push(r.u32()?);
                }
                let remote_session_id = if n > 0 { Some(r.u64()?) } else { None };
                let (packet_id, payload) = if opcode == Opcode::AckV1 {
                    if !r.rest().is_empty() {
                        return Err(WireError::TrailingBytes);
                    }
                    (None, &[][..])
                } else {
                    (Some(r.u32()?), r.rest())
                };
                Ok(Packet::Control(ControlPacket {
                    opcode,
                    key_id,
                    session_id,
                    acks,
                    remote_session_id,
                    packet_id,
                    payload,
                }))
            }
        }
    }

    /// The packet's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Packet::Control(c) => c.opcode,
            Packet::Data(d) => d.opcode,
        }
    }

    /// The packet's key id (0..=7).
    pub fn key_id(&self) -> u8 {
        match self {
            Packet::Control(c) => c.key_id,
            Packet::Data(d) => d.key_id,
        }
    }
}

/// A control channel packet.
///
/// When emitting, the fields are written as the opcode implies: `remote_session_id` is
/// written iff `acks` is non-empty (as 0 if it is `None`), and for every opcode except
/// `P_ACK_V1` the `packet_id` (0 if `None`) and `payload` follow; a `P_ACK_V1` ignores both.
/// [`Packet::parse`] only produces packets that obey these rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket<'a> {
    /// Control opcode (not `DataV1`/`DataV2`).
    pub opcode: Opcode,
    /// Key id, 0..=7.
    pub key_id: u8,
    /// The sender's session id.
    pub session_id: u64,
    /// Packet ids of the peer's control packets that the sender acknowledges.
    pub acks: AckList,
    /// The session id of the peer whose packets are acknowledged (present iff `acks` is
    /// non-empty).
    pub remote_session_id: Option<u64>,
    /// Reliability-layer packet id (absent in `P_ACK_V1`).
    pub packet_id: Option<u32>,
    /// The message (usually TLS records; empty in hard resets and `P_ACK_V1`).
    pub payload: &'a [u8],
}

impl ControlPacket<'_> {
    /// Number of bytes [`emit`](Self::emit) writes.
    pub fn encoded_len(&self) -> usize {
        let body = if self.opcode == Opcode::AckV1 {
            0
        } else {
            4 + self.payload.len()
        };
        header_len(self.acks.len()) + body
    }

    /// Appends the encoded packet to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(self.opcode.header_byte(self.key_id));
        out.extend_from_slice(&self.session_id.to_be_bytes());
        // AckList holds at most 8 ids, so its length fits a byte.
        out.push(self.acks.len);
        for id in self.acks.iter() {
            out.extend_from_slice(&id.to_be_bytes());
        }
        if !self.acks.is_empty() {
            out.extend_from_slice(&self.remote_session_id.unwrap_or(0).to_be_bytes());
        }
        if self.opcode != Opcode::AckV1 {
            out.extend_from_slice(&self.packet_id.unwrap_or(0).to_be_bytes());
            out.extend_from_slice(self.payload);
        }
    }
}

/// Bytes of a control packet before its packet id: op/key, session id, ack count, acks and
/// remote session id.
fn header_len(n_acks: usize) -> usize {
    let remote = if n_acks > 0 { SESSION_ID_LEN } else { 0 };
    1 + SESSION_ID_LEN + 1 + 4 * n_acks + remote
}

/// Largest payload of a `P_CONTROL_V1` (or other non-ack control packet) carrying `n_acks`
/// acknowledgements that keeps the packet within [`MAX_CONTROL_PACKET`].
pub fn max_control_payload(n_acks: usize) -> usize {
    MAX_CONTROL_PACKET.saturating_sub(header_len(n_acks.min(MAX_ACKS)) + 4)
}

/// A data channel packet; decrypt `body` with [`crate::openvpn::data::DataChannel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPacket<'a> {
    /// `DataV1` or `DataV2`.
    pub opcode: Opcode,
    /// Key id, 0..=7: selects the data channel key.
    pub key_id: u8,
    /// The 24-bit peer id of a `P_DATA_V2` packet.
    pub peer_id: Option<u32>,
    /// The header bytes: 1 for `P_DATA_V1`, 4 for `P_DATA_V2`.
    pub header: &'a [u8],
    /// Everything after the header (packet id, tag, ciphertext).
    pub body: &'a [u8],
}

/// Appends `packet` to `out` with the 2-byte big-endian length prefix of OpenVPN over TCP.
///
/// Packets longer than [`MAX_TCP_FRAME`] cannot be framed and callers never build them (a
/// control packet is at most [`MAX_CONTROL_PACKET`], a data packet the tunnel MTU plus
/// overhead); for such a packet this writes nothing (and asserts in debug builds).
pub fn tcp_frame(packet: &[u8], out: &mut Vec<u8>) {
    let Ok(len) = u16::try_from(packet.len()) else {
        debug_assert!(
            false,
            "packet of {} bytes cannot be TCP-framed",
            packet.len()
        );
        return;
    };
    out.reserve(2 + packet.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
}

/// Splits an OpenVPN TCP byte stream into packets.
///
/// Feed it whatever the socket returned with [`push`](Self::push), then call
/// [`pop`](Self::pop) until it returns `Ok(None)`. It buffers at most one incomplete frame
/// plus whatever was pushed and not yet popped. A zero-length frame means the stream is out
/// of sync: `pop` returns an error from then on and the connection should be closed.
#[derive(Debug, Default, Clone)]
pub struct TcpDeframer {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    broken: bool,
}

impl TcpDeframer {
    /// An empty deframer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            // Drop what earlier pops consumed before growing the buffer.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete packet (without its length prefix), `Ok(None)` if more bytes are
    /// needed, or an error if the stream is corrupt.
    pub fn pop(&mut self) -> Result<Option<&[u8]>, WireError> {
        if self.broken {
            return Err(WireError::EmptyTcpFrame);
        }
        let pending = &self.buf[self.start..];
        let [hi, lo, ..] = *pending else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            self.broken = true;
            return Err(WireError::EmptyTcpFrame);
        }
        if pending.len() < 2 + len {
            return Ok(None);
        }
        let begin = self.start + 2;
        self.start = begin + len;
        Ok(Some(&self.buf[begin..begin + len]))
    }

    /// Number of buffered bytes not yet returned by [`pop`](Self::pop).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// How far the complete frames at the start of `stream` reach, for readers that hand on
/// whole frames without copying them out one by one: the byte length of the longest prefix
/// made of complete length-prefixed frames, and whether a zero-length frame (a corrupt
/// stream, as for [`TcpDeframer`]) stopped the scan there. What follows the prefix is an
/// incomplete frame to keep for the next read (or, when broken, garbage).
pub fn tcp_complete_frames(stream: &[u8]) -> (usize, bool) {
    let mut at = 0;
    while let [hi, lo, ..] = stream[at..] {
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            return (at, true);
        }
        if stream.len() - at < 2 + len {
            break;
        }
        at += 2 + len;
    }
    (at, false)
}

/// Bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.bytes.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn consumed(&self) -> &'a [u8] {
        &self.bytes[..self.pos]
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: u64 = 0x0102_0304_0506_0708;
    const RSID: u64 = 0xa1a2_a3a4_a5a6_a7a8;

    fn control(bytes: &[u8]) -> ControlPacket<'_> {
        match Packet::parse(bytes).unwrap() {
            Packet::Control(c) => c,
            other => panic!("expected control packet, got {other:?}"),
        }
    }

    fn data(bytes: &[u8]) -> DataPacket<'_> {
        match Packet::parse(bytes).unwrap() {
            Packet::Data(d) => d,
            other => panic!("expected data packet, got {other:?}"),
        }
    }

    fn emit(c: &ControlPacket<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        c.emit(&mut out);
        assert_eq!(out.len(), c.encoded_len());
        out
    }

    #[test]
    fn hard_reset_client_v2_without_acks() {
        // What an OpenVPN 2.6 client sends first: opcode 7, key 0, no acks, packet id 0.
        let bytes = [
            0x38, 1, 2, 3, 4, 5, 6, 7, 8,    // op/key, session id
            0x00, // no acks
            0, 0, 0, 0, // packet id 0
        ];
        let c = control(&bytes);
        assert_eq!(c.opcode, Opcode::ControlHardResetClientV2);
        assert_eq!(c.key_id, 0);
        assert_eq!(c.session_id, SID);
        assert!(c.acks.is_empty());
        assert_eq!(c.remote_session_id, None);
        assert_eq!(c.packet_id, Some(0));
        assert!(c.payload.is_empty());
        assert_eq!(emit(&c), bytes);
    }

    #[test]
    fn hard_reset_server_v2_with_ack() {
        let bytes = [
            0x40, 1, 2, 3, 4, 5, 6, 7, 8, // op 8, key 0, session id
            0x01, 0, 0, 0, 0, // one ack: id 0
            0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, // remote session id
            0, 0, 0, 0, // packet id 0
        ];
        let c = control(&bytes);
        assert_eq!(c.opcode, Opcode::ControlHardResetServerV2);
        assert_eq!(c.acks.as_slice(), &[0]);
        assert_eq!(c.remote_session_id, Some(RSID));
        assert_eq!(c.packet_id, Some(0));
        assert_eq!(emit(&c), bytes);
    }

    #[test]
    fn control_v1_with_acks_and_payload() {
        let bytes = [
            0x20, 1, 2, 3, 4, 5, 6, 7, 8, // op 4, key 0
            0x02, 0, 0, 0, 1, 0, 0, 0, 2, // acks 1, 2
            0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, // remote session id
            0, 0, 0, 5, // packet id 5
            0x16, 0x03, 0x01, // payload (start of a TLS record)
        ];
        let c = control(&bytes);
        assert_eq!(c.opcode, Opcode::ControlV1);
        assert_eq!(c.acks.as_slice(), &[1, 2]);
        assert_eq!(c.packet_id, Some(5));
        assert_eq!(c.payload, &[0x16, 0x03, 0x01]);
        assert_eq!(emit(&c), bytes);
    }

    #[test]
    fn soft_reset_with_key_id() {
        let bytes = [0x1a, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 9];
        let c = control(&bytes);
        assert_eq!(c.opcode, Opcode::ControlSoftResetV1);
        assert_eq!(c.key_id, 2);
        assert_eq!(c.packet_id, Some(9));
        assert_eq!(emit(&c), bytes);
    }

    #[test]
    fn ack_v1() {
        let bytes = [
            0x28, 1, 2, 3, 4, 5, 6, 7, 8, // op 5
            0x01, 0, 0, 0, 3, // ack 3
            0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8,
        ];
        let c = control(&bytes);
        assert_eq!(c.opcode, Opcode::AckV1);
        assert_eq!(c.acks.as_slice(), &[3]);
        assert_eq!(c.packet_id, None);
        assert!(c.payload.is_empty());
        assert_eq!(emit(&c), bytes);
    }

    #[test]
    fn ack_v1_rejects_trailing_bytes() {
        let bytes = [
            0x28, 1, 2, 3, 4, 5, 6, 7, 8, 0x01, 0, 0, 0, 3, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6,
            0xa7, 0xa8, 0xff,
        ];
        assert_eq!(Packet::parse(&bytes), Err(WireError::TrailingBytes));
    }

    #[test]
    fn hard_reset_client_v3_and_wkc() {
        for (op, opcode) in [
            (10u8, Opcode::ControlHardResetClientV3),
            (11, Opcode::ControlWkcV1),
        ] {
            let bytes = [op << 3 | 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 1, 0xee];
            let c = control(&bytes);
            assert_eq!(c.opcode, opcode);
            assert_eq!(c.key_id, 1);
            assert_eq!(c.payload, &[0xee]);
            assert_eq!(emit(&c), bytes);
        }
    }

    #[test]
    fn data_v2_header_and_peer_id() {
        let bytes = [0x48, 0x00, 0x01, 0x02, 0, 0, 0, 1, 0xaa, 0xbb];
        let d = data(&bytes);
        assert_eq!(d.opcode, Opcode::DataV2);
        assert_eq!(d.key_id, 0);
        assert_eq!(d.peer_id, Some(0x000102));
        assert_eq!(d.header, &bytes[..4]);
        assert_eq!(d.body, &bytes[4..]);
        let d = data(&[0x4f, 0xff, 0xff, 0xff]);
        assert_eq!(d.key_id, 7);
        assert_eq!(d.peer_id, Some(0xff_ffff));
        assert!(d.body.is_empty());
    }

    #[test]
    fn data_v1_header() {
        let bytes = [0x31, 0, 0, 0, 1, 0xaa];
        let d = data(&bytes);
        assert_eq!(d.opcode, Opcode::DataV1);
        assert_eq!(d.key_id, 1);
        assert_eq!(d.peer_id, None);
        assert_eq!(d.header, &[0x31]);
        assert_eq!(d.body, &bytes[1..]);
    }

    #[test]
    fn rejects_unknown_opcodes() {
        for op in [0u8, 1, 2, 12, 31] {
            assert_eq!(
                Packet::parse(&[op << 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                Err(WireError::UnknownOpcode(op))
            );
        }
    }

    #[test]
    fn rejects_more_than_eight_acks() {
        let mut bytes = vec![0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        bytes.extend_from_slice(&[0; 9 * 4 + 8 + 4]);
        assert_eq!(Packet::parse(&bytes), Err(WireError::TooManyAcks(9)));
    }

    #[test]
    fn eight_acks_round_trip() {
        let c = ControlPacket {
            opcode: Opcode::ControlV1,
            key_id: 3,
            session_id: SID,
            acks: (10..20).collect(),
            remote_session_id: Some(RSID),
            packet_id: Some(77),
            payload: b"hello",
        };
        assert_eq!(c.acks.len(), 8);
        let bytes = emit(&c);
        assert_eq!(bytes.len(), 1 + 8 + 1 + 32 + 8 + 4 + 5);
        assert_eq!(control(&bytes), c);
    }

    #[test]
    fn every_truncation_of_valid_control_packets_is_an_error() {
        let packets: [&[u8]; 3] = [
            &[
                0x20, 1, 2, 3, 4, 5, 6, 7, 8, 0x02, 0, 0, 0, 1, 0, 0, 0, 2, 0xa1, 0xa2, 0xa3, 0xa4,
                0xa5, 0xa6, 0xa7, 0xa8, 0, 0, 0, 5,
            ],
            &[
                0x28, 1, 2, 3, 4, 5, 6, 7, 8, 0x01, 0, 0, 0, 3, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6,
                0xa7, 0xa8,
            ],
            &[0x38, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0],
        ];
        for p in packets {
            assert!(Packet::parse(p).is_ok());
            for cut in 0..p.len() {
                assert_eq!(
                    Packet::parse(&p[..cut]),
                    Err(WireError::Truncated),
                    "cut at {cut} of {p:02x?}"
                );
            }
        }
        // P_DATA_V2 needs its peer id.
        for cut in 0..4 {
            assert_eq!(
                Packet::parse(&[0x48, 0, 0, 1][..cut]),
                Err(WireError::Truncated)
            );
        }
    }

    #[test]
    fn garbage_never_panics_and_control_round_trips() {
        // A cheap deterministic sweep; the fuzz target does the thorough job.
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(b) = bytes.first_mut() {
                // Bias towards known opcodes and small ack counts.
                *b = ((3 + next() % 9) as u8) << 3 | (*b & 7);
            }
            if let Some(b) = bytes.get_mut(9) {
                *b %= 10;
            }
            if let Ok(Packet::Control(c)) = Packet::parse(&bytes) {
                assert_eq!(emit(&c), bytes);
            }
        }
    }

    #[test]
    fn max_control_payload_fills_exactly_1250_bytes() {
        for n in 0..=MAX_ACKS {
            let payload = vec![0u8; max_control_payload(n)];
            let c = ControlPacket {
                opcode: Opcode::ControlV1,
                key_id: 0,
                session_id: SID,
                acks: (0..n as u32).collect(),
                remote_session_id: if n > 0 { Some(RSID) } else { None },
                packet_id: Some(1),
                payload: &payload,
            };
            assert_eq!(c.encoded_len(), MAX_CONTROL_PACKET, "n_acks = {n}");
        }
        assert_eq!(max_control_payload(0), 1250 - 14);
    }

    #[test]
    fn ack_list_is_bounded() {
        let mut l = AckList::new();
        for i in 0..8 {
            assert!(l.push(i));
        }
        assert!(l.is_full());
        assert!(!l.push(8));
        assert_eq!(l.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(format!("{:?}", AckList::from_iter([1, 2])), "[1, 2]");
    }

    #[test]
    fn tcp_frame_and_deframe_byte_by_byte() {
        let mut stream = Vec::new();
        tcp_frame(&[1, 2, 3], &mut stream);
        tcp_frame(&[4], &mut stream);
        assert_eq!(stream, [0, 3, 1, 2, 3, 0, 1, 4]);

        let mut d = TcpDeframer::new();
        let mut frames = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.pop().unwrap() {
                frames.push(f.to_vec());
            }
        }
        assert_eq!(frames, [vec![1, 2, 3], vec![4]]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn tcp_deframer_handles_many_frames_in_one_read() {
        let mut stream = Vec::new();
        for i in 0..10u8 {
            tcp_frame(&vec![i; usize::from(i) + 1], &mut stream);
        }
        stream.extend_from_slice(&[0x01]); // half a length prefix
        let mut d = TcpDeframer::new();
        d.push(&stream);
        for i in 0..10u8 {
            assert_eq!(d.pop().unwrap().unwrap(), vec![i; usize::from(i) + 1]);
        }
        assert_eq!(d.pop().unwrap(), None);
        assert_eq!(d.buffered(), 1);
        d.push(&[0x00]);
        assert_eq!(d.pop().unwrap(), None);
        let big = vec![7u8; 256];
        d.push(&big);
        assert_eq!(d.pop().unwrap().unwrap(), &big[..]);
    }

    #[test]
    fn complete_frames_stop_at_a_partial_frame_or_a_zero_length() {
        let mut stream = Vec::new();
        tcp_frame(&[1, 2, 3], &mut stream);
        tcp_frame(&[4], &mut stream);
        assert_eq!(tcp_complete_frames(&stream), (8, false));
        // Half a length prefix, then a frame whose body is not all there.
        assert_eq!(tcp_complete_frames(&stream[..7]), (5, false));
        assert_eq!(tcp_complete_frames(&stream[..6]), (5, false));
        assert_eq!(tcp_complete_frames(&[0]), (0, false));
        assert_eq!(tcp_complete_frames(&[]), (0, false));
        stream.extend_from_slice(&[0, 0, 0, 1, 9]);
        assert_eq!(tcp_complete_frames(&stream), (8, true));
        assert_eq!(tcp_complete_frames(&[0, 0]), (0, true));
    }

    #[test]
    fn complete_frames_agree_with_the_deframer() {
        // Every cut of a stream of mixed frames: the prefix is exactly the frames the
        // deframer pops from the same bytes.
        let mut stream = Vec::new();
        for i in 0..20u16 {
            tcp_frame(&vec![i as u8; usize::from(i * 37 % 300) + 1], &mut stream);
        }
        for cut in 0..=stream.len() {
            let mut d = TcpDeframer::new();
            d.push(&stream[..cut]);
            let mut popped = 0;
            while let Some(f) = d.pop().unwrap() {
                popped += 2 + f.len();
            }
            assert_eq!(tcp_complete_frames(&stream[..cut]), (popped, false));
        }
    }

    #[test]
    fn tcp_deframer_rejects_zero_length_for_good() {
        let mut d = TcpDeframer::new();
        d.push(&[0, 1, 9, 0, 0, 0, 1, 9]);
        assert_eq!(d.pop().unwrap().unwrap(), &[9]);
        assert_eq!(d.pop(), Err(WireError::EmptyTcpFrame));
        assert_eq!(d.pop(), Err(WireError::EmptyTcpFrame));
    }

    #[test]
    fn tcp_deframer_accepts_maximum_frame() {
        let big = vec![0x5au8; MAX_TCP_FRAME];
        let mut stream = Vec::new();
        tcp_frame(&big, &mut stream);
        assert_eq!(&stream[..2], &[0xff, 0xff]);
        let mut d = TcpDeframer::new();
        d.push(&stream);
        assert_eq!(d.pop().unwrap().unwrap().len(), MAX_TCP_FRAME);
    }
}
