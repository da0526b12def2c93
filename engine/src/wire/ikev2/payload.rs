//! The generic payload chain, the [`Payload`] enum and whole [`Message`]s.

use super::header::{HEADER_LEN, IkeHeader};
use super::{
    AuthPayload, CertPayload, CertReqPayload, CpPayload, DeletePayload, IdPayload, KePayload,
    NotifyPayload, NotifyType, Reader, Result, SaPayload, TsPayload, WireError, patch_len16,
};

pub use super::sa::ProtocolId;

/// Most payloads we accept in one message, and separately inside one Encrypted payload.
/// strongSwan's largest messages (IKE_AUTH with CP, three TS, and a handful of notifies)
/// carry about 16.
pub const MAX_PAYLOADS: usize = 64;

/// Size of the generic payload header.
const GENERIC_HEADER_LEN: usize = 4;

/// The critical bit in the second byte of the generic payload header.
const CRITICAL: u8 = 0x80;

/// Payload type numbers (IANA "IKEv2 Payload Types"), as used in "next payload" fields.
pub mod payload_type {
    /// No next payload: ends the chain.
    pub const NONE: u8 = 0;
    /// Security Association.
    pub const SA: u8 = 33;
    /// Key Exchange.
    pub const KE: u8 = 34;
    /// Identification - Initiator.
    pub const IDI: u8 = 35;
    /// Identification - Responder.
    pub const IDR: u8 = 36;
    /// Certificate.
    pub const CERT: u8 = 37;
    /// Certificate Request.
    pub const CERTREQ: u8 = 38;
    /// Authentication.
    pub const AUTH: u8 = 39;
    /// Nonce.
    pub const NONCE: u8 = 40;
    /// Notify.
    pub const NOTIFY: u8 = 41;
    /// Delete.
    pub const DELETE: u8 = 42;
    /// Vendor ID.
    pub const VENDOR_ID: u8 = 43;
    /// Traffic Selector - Initiator.
    pub const TSI: u8 = 44;
    /// Traffic Selector - Responder.
    pub const TSR: u8 = 45;
    /// Encrypted and Authenticated.
    pub const SK: u8 = 46;
    /// Configuration.
    pub const CP: u8 = 47;
    /// Extensible Authentication (not decoded here: kept as [`super::Payload::Unknown`]).
    pub const EAP: u8 = 48;
    /// Generic Secure Password Method (RFC 6467; kept as unknown).
    pub const GSPM: u8 = 49;
    /// Encrypted and Authenticated Fragment (RFC 7383).
    pub const SKF: u8 = 53;

    /// The short name of a payload type we know.
    pub fn name(payload_type: u8) -> Option<&'static str> {
        Some(match payload_type {
            NONE => "NONE",
            SA => "SA",
            KE => "KE",
            IDI => "IDi",
            IDR => "IDr",
            CERT => "CERT",
            CERTREQ => "CERTREQ",
            AUTH => "AUTH",
            NONCE => "Ni/Nr",
            NOTIFY => "N",
            DELETE => "D",
            VENDOR_ID => "V",
            TSI => "TSi",
            TSR => "TSr",
            SK => "SK",
            CP => "CP",
            EAP => "EAP",
            GSPM => "GSPM",
            SKF => "SKF",
            _ => return None,
        })
    }
}

/// One payload, borrowing the message it was parsed from (or the data it will be built
/// from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Security Association: proposals.
    Sa(SaPayload<'a>),
    /// Key Exchange: group and public value.
    Ke(KePayload<'a>),
    /// Identification of the initiator.
    IdI(IdPayload<'a>),
    /// Identification of the responder.
    IdR(IdPayload<'a>),
    /// A certificate.
    Cert(CertPayload<'a>),
    /// A certificate request (trusted CA hashes).
    CertReq(CertReqPayload<'a>),
    /// Authentication data.
    Auth(AuthPayload<'a>),
    /// Nonce data (16 to 256 bytes when well-formed; see [`super::nonce_len_ok`]).
    Nonce(&'a [u8]),
    /// A notification (status or error).
    Notify(NotifyPayload<'a>),
    /// Delete: SAs the sender has deleted.
    Delete(DeletePayload<'a>),
    /// Vendor ID: opaque bytes.
    VendorId(&'a [u8]),
    /// Traffic selectors of the initiator.
    TsI(TsPayload),
    /// Traffic selectors of the responder.
    TsR(TsPayload),
    /// Configuration (CP).
    Cp(CpPayload<'a>),
    /// Encrypted and Authenticated (SK). Always the last payload of a message.
    Encrypted {
        /// Type of the first payload inside the plaintext (the SK "next payload" field).
        first_inner: u8,
        /// IV, ciphertext and ICV; [`super::sk::split`] cuts it given the algorithm's
        /// lengths.
        body: &'a [u8],
    },
    /// Encrypted and Authenticated Fragment (SKF, RFC 7383). Always the last payload.
    EncryptedFragment {
        /// Fragment number, starting at 1.
        fragment_number: u16,
        /// Number of fragments of the original message.
        total_fragments: u16,
        /// Type of the first inner payload; set in fragment 1 only, 0 in the others.
        first_inner: u8,
        /// IV, ciphertext and ICV of this fragment.
        body: &'a [u8],
    },
    /// A payload this codec does not decode (EAP among them), kept verbatim.
    Unknown {
        /// The payload type.
        payload_type: u8,
        /// The critical bit. A message with a critical unknown payload does not parse
        /// ([`WireError::UnsupportedCriticalPayload`]); this is `true` only in payloads
        /// built for emission.
        critical: bool,
        /// The bytes after the generic payload header.
        body: &'a [u8],
    },
}

impl<'a> Payload<'a> {
    /// The payload type number ([`payload_type`]).
    pub fn payload_type(&self) -> u8 {
        match self {
            Self::Sa(_) => payload_type::SA,
            Self::Ke(_) => payload_type::KE,
            Self::IdI(_) => payload_type::IDI,
            Self::IdR(_) => payload_type::IDR,
            Self::Cert(_) => payload_type::CERT,
            Self::CertReq(_) => payload_type::CERTREQ,
            Self::Auth(_) => payload_type::AUTH,
            Self::Nonce(_) => payload_type::NONCE,
            Self::Notify(_) => payload_type::NOTIFY,
            Self::Delete(_) => payload_type::DELETE,
            Self::VendorId(_) => payload_type::VENDOR_ID,
            Self::TsI(_) => payload_type::TSI,
            Self::TsR(_) => payload_type::TSR,
            Self::Cp(_) => payload_type::CP,
            Self::Encrypted { .. } => payload_type::SK,
            Self::EncryptedFragment { .. } => payload_type::SKF,
            Self::Unknown { payload_type, .. } => *payload_type,
        }
    }

    /// Whether this is an SK or SKF payload.
    pub fn is_encrypted(&self) -> bool {
        matches!(
            self,
            Self::Encrypted { .. } | Self::EncryptedFragment { .. }
        )
    }

    /// Size of the payload on the wire, generic header included.
    pub fn encoded_len(&self) -> usize {
        GENERIC_HEADER_LEN + self.body_len()
    }

    /// Size of the payload after the generic header.
    pub fn body_len(&self) -> usize {
        match self {
            Self::Sa(p) => p.body_len(),
            Self::Ke(p) => p.body_len(),
            Self::IdI(p) | Self::IdR(p) => p.body_len(),
            Self::Cert(p) => p.body_len(),
            Self::CertReq(p) => p.body_len(),
            Self::Auth(p) => p.body_len(),
            Self::Notify(p) => p.body_len(),
            Self::Delete(p) => p.body_len(),
            Self::TsI(p) | Self::TsR(p) => p.body_len(),
            Self::Cp(p) => p.body_len(),
            Self::Nonce(body) | Self::VendorId(body) => body.len(),
            Self::Encrypted { body, .. } | Self::Unknown { body, .. } => body.len(),
            Self::EncryptedFragment { body, .. } => 4 + body.len(),
        }
    }

    /// Appends the payload after the generic header.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::Sa(p) => p.emit_body(out),
            Self::Ke(p) => p.emit_body(out),
            Self::IdI(p) | Self::IdR(p) => p.emit_body(out),
            Self::Cert(p) => p.emit_body(out),
            Self::CertReq(p) => p.emit_body(out),
            Self::Auth(p) => p.emit_body(out),
            Self::Notify(p) => p.emit_body(out),
            Self::Delete(p) => p.emit_body(out),
            Self::TsI(p) | Self::TsR(p) => p.emit_body(out),
            Self::Cp(p) => p.emit_body(out),
            Self::Nonce(body) | Self::VendorId(body) => out.extend_from_slice(body),
            Self::Encrypted { body, .. } | Self::Unknown { body, .. } => {
                out.extend_from_slice(body)
            }
            Self::EncryptedFragment {
                fragment_number,
                total_fragments,
                body,
                ..
            } => {
                out.extend_from_slice(&fragment_number.to_be_bytes());
                out.extend_from_slice(&total_fragments.to_be_bytes());
                out.extend_from_slice(body);
            }
        }
    }

    /// Appends the generic header and the body. `next` is the type of the payload that
    /// follows; for SK and SKF the field holds the first inner payload instead.
    fn emit(&self, next: u8, out: &mut Vec<u8>) {
        let (next, critical) = match self {
            Self::Encrypted { first_inner, .. } | Self::EncryptedFragment { first_inner, .. } => {
                (*first_inner, false)
            }
            Self::Unknown { critical, .. } => (next, *critical),
            _ => (next, false),
        };
        let start = out.len();
        out.push(next);
        out.push(if critical { CRITICAL } else { 0 });
        out.extend_from_slice(&[0, 0]);
        self.emit_body(out);
        let len = out.len() - start;
        patch_len16(out, start + 2, len);
    }

    /// Decodes one payload body of type `payload_type` (not SK/SKF).
    fn parse_body(payload_type: u8, critical: bool, body: &'a [u8]) -> Result<Self> {
        Ok(match payload_type {
            payload_type::SA => Self::Sa(SaPayload::parse_body(body)?),
            payload_type::KE => Self::Ke(KePayload::parse_body(body)?),
            payload_type::IDI => Self::IdI(IdPayload::parse_body(body)?),
            payload_type::IDR => Self::IdR(IdPayload::parse_body(body)?),
            payload_type::CERT => Self::Cert(CertPayload::parse_body(body)?),
            payload_type::CERTREQ => Self::CertReq(CertReqPayload::parse_body(body)?),
            payload_type::AUTH => Self::Auth(AuthPayload::parse_body(body)?),
            payload_type::NONCE => Self::Nonce(body),
            payload_type::NOTIFY => Self::Notify(NotifyPayload::parse_body(body)?),
            payload_type::DELETE => Self::Delete(DeletePayload::parse_body(body)?),
            payload_type::VENDOR_ID => Self::VendorId(body),
            payload_type::TSI => Self::TsI(TsPayload::parse_body(body)?),
            payload_type::TSR => Self::TsR(TsPayload::parse_body(body)?),
            payload_type::CP => Self::Cp(CpPayload::parse_body(body)?),
            _ if critical => return Err(WireError::UnsupportedCriticalPayload(payload_type)),
            _ => Self::Unknown {
                payload_type,
                critical: false,
                body,
            },
        })
    }
}

/// Walks a payload chain that starts with type `next` and fills `bytes` exactly.
fn parse_chain<'a>(
    mut next: u8,
    bytes: &'a [u8],
    allow_encrypted: bool,
    payloads: &mut Vec<Payload<'a>>,
) -> Result<()> {
    let mut r = Reader::new(bytes);
    while next != payload_type::NONE {
        if payloads.len() >= MAX_PAYLOADS {
            return Err(WireError::TooMany {
                what: "payloads",
                limit: MAX_PAYLOADS,
            });
        }
        let this = next;
        next = r.u8()?;
        let critical = r.u8()? & CRITICAL != 0;
        let length = r.u16()?;
        let body_len = usize::from(length).checked_sub(GENERIC_HEADER_LEN).ok_or(
            WireError::BadPayloadLength {
                payload_type: this,
                length,
            },
        )?;
        let body = r.take(body_len).map_err(|_| WireError::BadPayloadLength {
            payload_type: this,
            length,
        })?;
        if this == payload_type::SK || this == payload_type::SKF {
            if !allow_encrypted {
                return Err(WireError::Invalid(
                    "Encrypted payload inside an Encrypted payload",
                ));
            }
            if !r.is_empty() {
                return Err(WireError::Invalid(
                    "Encrypted payload is not the last payload",
                ));
            }
            payloads.push(parse_encrypted(this, next, body)?);
            return Ok(());
        }
        payloads.push(Payload::parse_body(this, critical, body)?);
    }
    r.finish()
}

fn parse_encrypted(this: u8, first_inner: u8, body: &[u8]) -> Result<Payload<'_>> {
    if this == payload_type::SK {
        return Ok(Payload::Encrypted { first_inner, body });
    }
    let mut r = Reader::new(body);
    let fragment_number = r.u16()?;
    let total_fragments = r.u16()?;
    if fragment_number == 0 || fragment_number > total_fragments {
        return Err(WireError::Invalid("SKF fragment number outside 1..=total"));
    }
    Ok(Payload::EncryptedFragment {
        fragment_number,
        total_fragments,
        first_inner,
        body: r.rest(),
    })
}

/// Parses the payloads inside a decrypted SK payload (padding and pad length already
/// removed, see [`super::sk::strip_padding`]). `first_inner` is the SK payload's "next
/// payload" field. Another SK or SKF inside is an error.
pub fn parse_inner(first_inner: u8, plaintext: &[u8]) -> Result<Vec<Payload<'_>>> {
    let mut payloads = Vec::new();
    parse_chain(first_inner, plaintext, false, &mut payloads)?;
    Ok(payloads)
}

/// Appends `payloads` as a chain (each generic header naming the next type) and returns
/// the type of the first one (0 for none): the inner plaintext of an SK payload and the
/// value of its "next payload" field.
pub fn emit_payloads(payloads: &[Payload<'_>], out: &mut Vec<u8>) -> u8 {
    let mut iter = payloads.iter().peekable();
    while let Some(p) = iter.next() {
        let next = iter.peek().map_or(payload_type::NONE, |n| n.payload_type());
        p.emit(next, out);
    }
    payloads
        .first()
        .map_or(payload_type::NONE, Payload::payload_type)
}

/// A whole IKE message: the header and its payloads in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The header. [`Message::emit`] overwrites `next_payload` and `length`.
    pub header: IkeHeader,
    /// The payloads; an SK or SKF payload, if any, is the last one.
    pub payloads: Vec<Payload<'a>>,
}

impl<'a> Message<'a> {
    /// Parses a whole datagram (after the non-ESP marker, if any): the header's Length
    /// must equal `bytes.len()`, the major version must be 2, every payload must fill its
    /// length exactly and the chain must end exactly at the end of the message (or with an
    /// SK/SKF payload that does).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let header = IkeHeader::parse(bytes)?;
        if header.major_version() != 2 {
            return Err(WireError::UnsupportedMajorVersion(header.major_version()));
        }
        let rest = bytes.get(HEADER_LEN..).ok_or(WireError::Truncated)?;
        let mut payloads = Vec::new();
        parse_chain(header.next_payload, rest, true, &mut payloads)?;
        Ok(Self { header, payloads })
    }

    /// Size of the emitted message.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + self
                .payloads
                .iter()
                .map(Payload::encoded_len)
                .sum::<usize>()
    }

    /// Appends the message. The header's `next_payload` and `length` are computed from the
    /// payloads; every other header field is written as it is.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let header = IkeHeader {
            next_payload: self
                .payloads
                .first()
                .map_or(payload_type::NONE, Payload::payload_type),
            length: u32::try_from(self.encoded_len()).unwrap_or(u32::MAX),
            ..self.header
        };
        header.emit(out);
        emit_payloads(&self.payloads, out);
    }

    /// Offset from the start of the message of the SK or SKF payload's generic header.
    /// The AEAD's associated data is the message up to the end of that payload's fixed
    /// header (see [`super::sk::associated_data`]); integrity covers everything before
    /// the ICV.
    pub fn encrypted_offset(&self) -> Option<usize> {
        let mut offset = HEADER_LEN;
        for p in &self.payloads {
            if p.is_encrypted() {
                return Some(offset);
            }
            offset += p.encoded_len();
        }
        None
    }

    /// The first notification of type `notify_type`.
    pub fn notify(&self, notify_type: NotifyType) -> Option<&NotifyPayload<'a>> {
        self.notifies().find(|n| n.notify_type == notify_type)
    }

    /// All notifications, in order.
    pub fn notifies(&self) -> impl Iterator<Item = &NotifyPayload<'a>> {
        self.payloads.iter().filter_map(|p| match p {
            Payload::Notify(n) => Some(n),
            _ => None,
        })
    }
}
