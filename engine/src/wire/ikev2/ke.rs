//! Key Exchange payload (RFC 7296 section 3.4).
//!
//! ```text
//! Diffie-Hellman group (2) | reserved (2) | key exchange data
//! ```

use super::{Reader, Result};

/// Key Exchange payload: the sender's public value for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KePayload<'a> {
    /// The group (`sa::DH_*`); must match the DH transform of the proposal it goes with,
    /// else the responder answers INVALID_KE_PAYLOAD.
    pub dh_group: u16,
    /// The public value (32 bytes for x25519, 64 for P-256 x||y, 256 for MODP-2048).
    pub data: &'a [u8],
}

impl<'a> KePayload<'a> {
    /// Parses the payload body (after the generic header).
    pub fn parse_body(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let dh_group = r.u16()?;
        r.skip(2)?;
        Ok(Self {
            dh_group,
            data: r.rest(),
        })
    }

    /// Size of the body.
    pub fn body_len(&self) -> usize {
        4 + self.data.len()
    }

    /// Appends the body.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dh_group.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{WireError, sa::DH_CURVE25519};
    use super::*;

    #[test]
    fn x25519_bytes() {
        let mut bytes = vec![0, 31, 0, 0];
        bytes.extend(1..=32u8);
        let ke = KePayload::parse_body(&bytes).unwrap();
        assert_eq!(ke.dh_group, DH_CURVE25519);
        assert_eq!(ke.data.len(), 32);
        assert_eq!(ke.data[0], 1);
        let mut out = Vec::new();
        ke.emit_body(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(out.len(), ke.body_len());
    }

    #[test]
    fn truncated() {
        assert_eq!(
            KePayload::parse_body(&[0, 31, 0]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            KePayload::parse_body(&[0, 31, 0, 0]).unwrap().data,
            &[] as &[u8]
        );
    }
}
