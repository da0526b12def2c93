//! The fixed IKE header (RFC 7296 section 3.1).
//!
//! ```text
//! IKE SA initiator's SPI (8) | IKE SA responder's SPI (8)
//! next payload (1) | major version (4 bits) minor version (4 bits) | exchange type (1)
//! flags (1: R V I, 5 reserved bits) | message id (4) | length (4, whole message)
//! ```

use super::{Reader, Result, WireError, registry};

/// Size of the IKE header in bytes.
pub const HEADER_LEN: usize = 28;

/// The version byte we send: major version 2, minor version 0.
pub const IKE_VERSION: u8 = 0x20;

registry! {
    /// The exchange type of a message (IANA "IKEv2 Exchange Types").
    ExchangeType(u8) {
        /// IKE_SA_INIT: negotiates the IKE SA's algorithms, nonces and key exchange.
        IKE_SA_INIT = 34,
        /// IKE_AUTH: authenticates both ends and creates the first CHILD SA.
        IKE_AUTH = 35,
        /// CREATE_CHILD_SA: creates or rekeys a CHILD SA, or rekeys the IKE SA.
        CREATE_CHILD_SA = 36,
        /// INFORMATIONAL: deletes, notifications, liveness checks (DPD).
        INFORMATIONAL = 37,
        /// IKE_SESSION_RESUME (RFC 5723).
        IKE_SESSION_RESUME = 38,
        /// IKE_INTERMEDIATE (RFC 9242).
        IKE_INTERMEDIATE = 43,
    }
}

/// The flags byte of the IKE header. Reserved bits are kept as received.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// I: set in messages sent by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// V: the sender can speak a higher major version (never set by IKEv2 implementations).
    pub const VERSION: u8 = 0x10;
    /// R: this message is a response.
    pub const RESPONSE: u8 = 0x20;

    /// Flags for a message with the given roles.
    pub fn new(initiator: bool, response: bool) -> Self {
        let mut bits = 0;
        if initiator {
            bits |= Self::INITIATOR;
        }
        if response {
            bits |= Self::RESPONSE;
        }
        Self(bits)
    }

    /// Whether the sender is the original initiator of the IKE SA.
    pub fn initiator(self) -> bool {
        self.0 & Self::INITIATOR != 0
    }

    /// Whether the message is a response.
    pub fn response(self) -> bool {
        self.0 & Self::RESPONSE != 0
    }

    /// Whether the version bit is set.
    pub fn version(self) -> bool {
        self.0 & Self::VERSION != 0
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flags({:#04x}", self.0)?;
        if self.initiator() {
            f.write_str(" I")?;
        }
        if self.response() {
            f.write_str(" R")?;
        }
        if self.version() {
            f.write_str(" V")?;
        }
        f.write_str(")")
    }
}

/// The IKE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeHeader {
    /// SPI chosen by the original initiator; never zero.
    pub initiator_spi: u64,
    /// SPI chosen by the original responder; zero in the first IKE_SA_INIT request.
    pub responder_spi: u64,
    /// Type of the first payload (see [`super::payload_type`]); 0 for none.
    pub next_payload: u8,
    /// Major version in the high 4 bits, minor in the low 4 ([`IKE_VERSION`]).
    pub version: u8,
    /// The exchange this message belongs to.
    pub exchange: ExchangeType,
    /// Initiator / response / version bits.
    pub flags: Flags,
    /// Message id: orders requests and matches responses to them.
    pub message_id: u32,
    /// Length of the whole message, header included.
    pub length: u32,
}

impl IkeHeader {
    /// Parses the header of a complete message. The Length field must equal
    /// `message.len()` (and so be at least [`HEADER_LEN`]). The version is not checked
    /// here, so that a responder can still read the SPIs and message id it needs to answer
    /// INVALID_MAJOR_VERSION; [`super::Message::parse`] checks it.
    pub fn parse(message: &[u8]) -> Result<Self> {
        let header = Self::parse_prefix(message)?;
        if usize::try_from(header.length).ok() != Some(message.len()) {
            return Err(WireError::LengthMismatch {
                header: header.length,
                actual: message.len(),
            });
        }
        Ok(header)
    }

    /// Parses the first [`HEADER_LEN`] bytes without comparing the Length field to the
    /// buffer (for peeking at a message before it is complete).
    pub fn parse_prefix(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        Ok(Self {
            initiator_spi: r.u64()?,
            responder_spi: r.u64()?,
            next_payload: r.u8()?,
            version: r.u8()?,
            exchange: ExchangeType(r.u8()?),
            flags: Flags(r.u8()?),
            message_id: r.u32()?,
            length: r.u32()?,
        })
    }

    /// The major version (2 for IKEv2).
    pub fn major_version(&self) -> u8 {
        self.version >> 4
    }

    /// The minor version (0; receivers ignore it).
    pub fn minor_version(&self) -> u8 {
        self.version & 0x0f
    }

    /// Appends the 28 header bytes exactly as the fields say.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.initiator_spi.to_be_bytes());
        out.extend_from_slice(&self.responder_spi.to_be_bytes());
        out.push(self.next_payload);
        out.push(self.version);
        out.push(self.exchange.0);
        out.push(self.flags.0);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: [u8; 28] = [
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // initiator SPI
        0, 0, 0, 0, 0, 0, 0, 0,    // responder SPI
        33,   // next payload: SA
        0x20, // version 2.0
        34,   // IKE_SA_INIT
        0x08, // I
        0, 0, 0, 0, // message id
        0, 0, 0, 28, // length
    ];

    #[test]
    fn parses_and_emits_header_bytes() {
        let h = IkeHeader::parse(&BYTES).unwrap();
        assert_eq!(h.initiator_spi, 0x1122_3344_5566_7788);
        assert_eq!(h.responder_spi, 0);
        assert_eq!(h.next_payload, 33);
        assert_eq!((h.major_version(), h.minor_version()), (2, 0));
        assert_eq!(h.exchange, ExchangeType::IKE_SA_INIT);
        assert!(h.flags.initiator() && !h.flags.response() && !h.flags.version());
        assert_eq!(h.message_id, 0);
        assert_eq!(h.length, 28);
        let mut out = Vec::new();
        h.emit(&mut out);
        assert_eq!(out, BYTES);
    }

    #[test]
    fn length_must_match_datagram() {
        assert_eq!(IkeHeader::parse(&BYTES[..27]), Err(WireError::Truncated));
        let mut longer = BYTES.to_vec();
        longer.push(0);
        assert_eq!(
            IkeHeader::parse(&longer),
            Err(WireError::LengthMismatch {
                header: 28,
                actual: 29
            })
        );
        let mut short = BYTES;
        short[27] = 20;
        assert!(matches!(
            IkeHeader::parse(&short),
            Err(WireError::LengthMismatch { header: 20, .. })
        ));
        assert_eq!(IkeHeader::parse_prefix(&short).unwrap().length, 20);
    }

    #[test]
    fn unknown_exchange_and_reserved_flags_are_kept() {
        let mut bytes = BYTES;
        bytes[18] = 99;
        bytes[19] = 0x28 | 0x01;
        let h = IkeHeader::parse(&bytes).unwrap();
        assert_eq!(h.exchange, ExchangeType(99));
        assert_eq!(h.exchange.name(), None);
        assert_eq!(format!("{:?}", h.exchange), "ExchangeType(99)");
        assert!(h.flags.initiator() && h.flags.response());
        let mut out = Vec::new();
        h.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn flags_constructor() {
        assert_eq!(Flags::new(true, false).0, 0x08);
        assert_eq!(Flags::new(false, true).0, 0x20);
        assert_eq!(Flags::new(true, true).0, 0x28);
        assert_eq!(format!("{:?}", Flags(0x28)), "Flags(0x28 I R)");
    }
}
