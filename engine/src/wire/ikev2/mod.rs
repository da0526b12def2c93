//! IKEv2 message and payload codecs (RFC 7296), with the Encrypted Fragment payload of
//! RFC 7383, the Digital Signature authentication data of RFC 7427 and the non-ESP marker
//! of RFC 3948 (UDP encapsulation on port 4500).
//!
//! A message is a fixed 28-byte header ([`IkeHeader`]) followed by a chain of payloads.
//! Every payload starts with the same generic header:
//!
//! ```text
//! next payload (1) | C (1 bit) reserved (7 bits) | payload length (2, includes these 4)
//! ```
//!
//! [`Message::parse`] walks that chain and decodes each payload into a [`Payload`] that
//! borrows the input. The Encrypted payload (SK) and its fragment form (SKF) end the walk:
//! their "next payload" field names the first payload *inside* the ciphertext, which the
//! caller decrypts (see [`sk`]) and hands to [`parse_inner`].
//!
//! Parsing never panics and never allocates without bound: every list has a count limit
//! ([`MAX_PAYLOADS`], [`sa::MAX_PROPOSALS`], [`sa::MAX_TRANSFORMS`], ...), every structure
//! must fill its length exactly (no trailing bytes), and lengths that point outside their
//! container are errors. A message parsed and emitted again gives back the same bytes,
//! except for fields RFC 7296 tells receivers to ignore (reserved bits and bytes, the
//! critical bit of a known payload, the "last substructure" bytes of proposals and
//! transforms), which are emitted as the RFC says senders must set them.
//!
//! [`strip_non_esp_marker`] sorts what arrives on UDP port 4500 into IKE, ESP and NAT
//! keepalives.

pub mod auth;
mod cert;
mod cp;
mod delete;
mod header;
mod id;
mod ke;
mod natt;
mod nonce;
mod notify;
mod payload;
pub mod sa;
pub mod sk;
mod ts;
mod vendor;

pub use auth::{
    AuthMethod, AuthPayload, DigitalSignature, HashAlgorithm, SignatureAlgorithm,
    emit_digital_signature_data,
};
pub use cert::{CertEncoding, CertPayload, CertReqPayload, SHA1_HASH_LEN};
pub use cp::{CfgAttrType, CfgAttribute, CfgType, CpPayload, MAX_CFG_ATTRIBUTES};
pub use delete::DeletePayload;
pub use header::{ExchangeType, Flags, HEADER_LEN, IKE_VERSION, IkeHeader};
pub use id::{IdPayload, IdType};
pub use ke::KePayload;
pub use natt::{Classified, NAT_KEEPALIVE, NON_ESP_MARKER, strip_non_esp_marker};
pub use nonce::{NONCE_MAX_LEN, NONCE_MIN_LEN, nonce_len_ok};
pub use notify::{NAT_DETECTION_HASH_LEN, NotifyPayload, NotifyType};
pub use payload::{
    MAX_PAYLOADS, Message, Payload, ProtocolId, emit_payloads, parse_inner, payload_type,
};
pub use sa::{AttributeValue, Proposal, SaPayload, Transform, TransformAttribute, TransformType};
pub use ts::{AddressRange, TrafficSelector, TsPayload, TsType};
pub use vendor::STRONGSWAN_VENDOR_ID;

/// A malformed or unsupported IKEv2 message.
///
/// [`WireError::notify_type`] names the error notification a responder would answer
/// with (RFC 7296 section 3.10.1; whether to answer an unauthenticated message at all is
/// the state machine's decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message or one of its structures ends before a field it must contain.
    #[error("truncated IKEv2 message")]
    Truncated,
    /// The Length field of the IKE header differs from the size of the datagram.
    #[error("IKE header says {header} bytes but the datagram has {actual}")]
    LengthMismatch {
        /// The Length field.
        header: u32,
        /// The number of bytes received.
        actual: usize,
    },
    /// The major version is not 2; answer INVALID_MAJOR_VERSION.
    #[error("IKE major version {0} is not supported (only 2)")]
    UnsupportedMajorVersion(u8),
    /// A payload's length field is below 4 or runs past the end of the message.
    #[error("payload type {payload_type} has invalid length {length}")]
    BadPayloadLength {
        /// The payload's type.
        payload_type: u8,
        /// Its Payload Length field.
        length: u16,
    },
    /// A payload we do not understand carries the critical bit; answer
    /// UNSUPPORTED_CRITICAL_PAYLOAD with this type as data.
    #[error("unsupported critical payload type {0}")]
    UnsupportedCriticalPayload(u8),
    /// A traffic selector of a type other than IPv4 or IPv6 address range.
    #[error("unsupported traffic selector type {0}")]
    UnsupportedTrafficSelector(u8),
    /// A list holds more entries than we accept.
    #[error("too many {what} (at most {limit})")]
    TooMany {
        /// What was counted ("payloads", "proposals", ...).
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A field holds a value its structure does not allow.
    #[error("invalid IKEv2 message: {0}")]
    Invalid(&'static str),
    /// A structure is followed by bytes its length does not account for.
    #[error("trailing bytes in IKEv2 structure")]
    TrailingBytes,
}

impl WireError {
    /// The error notification that reports this problem to the peer:
    /// UNSUPPORTED_CRITICAL_PAYLOAD, INVALID_MAJOR_VERSION, TS_UNACCEPTABLE or
    /// INVALID_SYNTAX.
    pub fn notify_type(&self) -> NotifyType {
        match self {
            Self::UnsupportedCriticalPayload(_) => NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD,
            Self::UnsupportedMajorVersion(_) => NotifyType::INVALID_MAJOR_VERSION,
            Self::UnsupportedTrafficSelector(_) => NotifyType::TS_UNACCEPTABLE,
            _ => NotifyType::INVALID_SYNTAX,
        }
    }
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, WireError>;

/// Defines a newtype over an IANA registry value with named constants, a `name()` lookup
/// and a `Debug` that prints the name. Unknown values are kept, not rejected.
macro_rules! registry {
    (
        $(#[$meta:meta])*
        $name:ident($repr:ty) {
            $( $(#[$cmeta:meta])* $cname:ident = $val:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $repr);

        impl $name {
            $( $(#[$cmeta])* pub const $cname: Self = Self($val); )*

            /// The registry name of this value, if it is one we know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some(stringify!($cname)), )*
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl From<$repr> for $name {
            fn from(value: $repr) -> Self {
                Self(value)
            }
        }

        impl From<$name> for $repr {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}
pub(crate) use registry;

/// A cursor over untrusted bytes: every read is bounds-checked and returns
/// [`WireError::Truncated`] instead of panicking.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let Some((head, tail)) = self.buf.split_at_checked(n) else {
            return Err(WireError::Truncated);
        };
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| WireError::Truncated)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<()> {
        self.take(n).map(|_| ())
    }

    /// Everything not read yet; the reader is empty afterwards.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Succeeds only if every byte was read.
    pub(crate) fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

/// Converts a length we emit into a 16-bit field. Only a caller that builds a structure
/// larger than any UDP datagram reaches the saturation, and the peer then rejects it.
pub(crate) fn len16(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

/// Writes a 16-bit length at `at` in `out` (a placeholder written earlier).
pub(crate) fn patch_len16(out: &mut [u8], at: usize, len: usize) {
    if let Some(slot) = out.get_mut(at..at + 2) {
        slot.copy_from_slice(&len16(len).to_be_bytes());
    }
}

#[cfg(test)]
mod tests;
