//! Identification payloads IDi and IDr (RFC 7296 section 3.5).
//!
//! ```text
//! ID type (1) | reserved (3) | identification data
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Reader, Result, registry};

registry! {
    /// Identification type (IANA "IKEv2 Identification Payload ID Types").
    IdType(u8) {
        /// A single IPv4 address (4 bytes).
        IPV4_ADDR = 1,
        /// A fully-qualified domain name (ASCII, no terminator).
        FQDN = 2,
        /// An RFC 822 email address, e.g. `client1@x` from charon-cmd.
        RFC822_ADDR = 3,
        /// A single IPv6 address (16 bytes).
        IPV6_ADDR = 5,
        /// A DER-encoded X.500 distinguished name.
        DER_ASN1_DN = 9,
        /// A DER-encoded X.509 GeneralName.
        DER_ASN1_GN = 10,
        /// Opaque bytes (often a key identifier).
        KEY_ID = 11,
        /// A Fibre Channel name.
        FC_NAME = 12,
        /// No identity (RFC 7619).
        NULL = 13,
    }
}

/// An identification payload (IDi or IDr; the [`super::Payload`] variant says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPayload<'a> {
    /// How `data` is to be read.
    pub id_type: IdType,
    /// The three reserved bytes as received (zero when we send). They are part of the
    /// bytes the AUTH payload signs ("RestOfInitIDPayload"), so they are kept.
    pub reserved: [u8; 3],
    /// The identity.
    pub data: &'a [u8],
}

impl<'a> IdPayload<'a> {
    /// An identity with zero reserved bytes.
    pub fn new(id_type: IdType, data: &'a [u8]) -> Self {
        Self {
            id_type,
            reserved: [0; 3],
            data,
        }
    }

    /// Parses the payload body (after the generic header).
    pub fn parse_body(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        Ok(Self {
            id_type: IdType(r.u8()?),
            reserved: r.array()?,
            data: r.rest(),
        })
    }

    /// Size of the body.
    pub fn body_len(&self) -> usize {
        4 + self.data.len()
    }

    /// Appends the body: exactly the bytes that enter the AUTH computation as
    /// RestOfInitIDPayload / RestOfRespIDPayload (RFC 7296 section 2.15).
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        out.push(self.id_type.0);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(self.data);
    }

    /// The address of an [`IdType::IPV4_ADDR`] identity.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        if self.id_type != IdType::IPV4_ADDR {
            return None;
        }
        <[u8; 4]>::try_from(self.data).ok().map(Ipv4Addr::from)
    }

    /// The address of an [`IdType::IPV6_ADDR`] identity.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        if self.id_type != IdType::IPV6_ADDR {
            return None;
        }
        <[u8; 16]>::try_from(self.data).ok().map(Ipv6Addr::from)
    }

    /// The text of an FQDN or RFC 822 identity, if it is UTF-8.
    pub fn text(&self) -> Option<&'a str> {
        if self.id_type != IdType::FQDN && self.id_type != IdType::RFC822_ADDR {
            return None;
        }
        std::str::from_utf8(self.data).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::WireError;
    use super::*;

    fn round_trip(bytes: &[u8]) -> IdPayload<'_> {
        let id = IdPayload::parse_body(bytes).unwrap();
        let mut out = Vec::new();
        id.emit_body(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(out.len(), id.body_len());
        id
    }

    #[test]
    fn rfc822_identity() {
        let id = round_trip(b"\x03\0\0\0client1@x");
        assert_eq!(id.id_type, IdType::RFC822_ADDR);
        assert_eq!(id.text(), Some("client1@x"));
        assert_eq!(id.ipv4(), None);
        assert_eq!(id, IdPayload::new(IdType::RFC822_ADDR, b"client1@x"));
    }

    #[test]
    fn address_identities() {
        let id = round_trip(&[1, 0, 0, 0, 192, 0, 2, 1]);
        assert_eq!(id.ipv4(), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(id.text(), None);
        let mut v6 = vec![5, 0, 0, 0];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(round_trip(&v6).ipv6(), Some(Ipv6Addr::LOCALHOST));
        // An IPv4 identity of the wrong length is kept but has no address.
        assert_eq!(round_trip(&[1, 0, 0, 0, 1, 2]).ipv4(), None);
    }

    #[test]
    fn reserved_bytes_are_kept_for_auth() {
        let id = round_trip(&[2, 1, 2, 3, b'g', b'w']);
        assert_eq!(id.reserved, [1, 2, 3]);
        assert_eq!(id.text(), Some("gw"));
    }

    #[test]
    fn truncated() {
        assert_eq!(IdPayload::parse_body(&[9, 0, 0]), Err(WireError::Truncated));
    }
}
