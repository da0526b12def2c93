//! Delete payload (RFC 7296 section 3.11).
//!
//! ```text
//! protocol id (1) | SPI size (1) | number of SPIs (2) | SPI...
//! ```

use super::{ProtocolId, Reader, Result, WireError};

/// A Delete payload: the SAs (all of one protocol) the sender has deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletePayload<'a> {
    /// IKE (the SA the message travels on; no SPIs) or ESP/AH.
    pub protocol_id: ProtocolId,
    /// Size of each SPI: 0 for IKE, 4 for ESP/AH.
    pub spi_size: u8,
    /// The SPIs, concatenated; a multiple of `spi_size` (empty when it is 0).
    pub spis: &'a [u8],
}

impl<'a> DeletePayload<'a> {
    /// Deletes the IKE SA this message travels on.
    pub fn ike() -> Self {
        Self {
            protocol_id: ProtocolId::IKE,
            spi_size: 0,
            spis: &[],
        }
    }

    /// Deletes ESP SAs: `spis` holds 4-byte SPIs (the sender's inbound SPIs), concatenated.
    pub fn esp(spis: &'a [u8]) -> Self {
        Self {
            protocol_id: ProtocolId::ESP,
            spi_size: 4,
            spis,
        }
    }

    /// Parses the payload body (after the generic header). The SPI count must match the
    /// bytes present exactly.
    pub fn parse_body(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let protocol_id = ProtocolId(r.u8()?);
        let spi_size = r.u8()?;
        let count = r.u16()?;
        let len = usize::from(spi_size) * usize::from(count);
        if spi_size == 0 && count != 0 {
            return Err(WireError::Invalid("Delete payload counts SPIs of size 0"));
        }
        let spis = r.take(len)?;
        r.finish()?;
        Ok(Self {
            protocol_id,
            spi_size,
            spis,
        })
    }

    /// Number of SPIs.
    pub fn count(&self) -> usize {
        match self.spi_size {
            0 => 0,
            size => self.spis.len() / usize::from(size),
        }
    }

    /// Iterates over the SPIs.
    pub fn spis(&self) -> impl Iterator<Item = &'a [u8]> {
        let size = usize::from(self.spi_size).max(1);
        let spis = if self.spi_size == 0 {
            &[][..]
        } else {
            self.spis
        };
        spis.chunks_exact(size)
    }

    /// Iterates over 4-byte SPIs as numbers (ESP/AH); empty for other sizes.
    pub fn spis_u32(&self) -> impl Iterator<Item = u32> + 'a {
        let spis = if self.spi_size == 4 { self.spis } else { &[] };
        let (spis, _) = spis.as_chunks::<4>();
        spis.iter().map(|s| u32::from_be_bytes(*s))
    }

    /// Size of the body.
    pub fn body_len(&self) -> usize {
        4 + self.spis.len()
    }

    /// Appends the body. The count written is `spis.len() / spi_size`.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        out.push(self.protocol_id.0);
        out.push(self.spi_size);
        out.extend_from_slice(&super::len16(self.count()).to_be_bytes());
        out.extend_from_slice(self.spis);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bytes: &[u8]) -> DeletePayload<'_> {
        let d = DeletePayload::parse_body(bytes).unwrap();
        let mut out = Vec::new();
        d.emit_body(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(out.len(), d.body_len());
        d
    }

    #[test]
    fn delete_ike_sa() {
        let d = round_trip(&[1, 0, 0, 0]);
        assert_eq!(d, DeletePayload::ike());
        assert_eq!(d.count(), 0);
        assert_eq!(d.spis().count(), 0);
    }

    #[test]
    fn delete_two_esp_sas() {
        let d = round_trip(&[3, 4, 0, 2, 0xc1, 0xc2, 0xc3, 0xc4, 0, 0, 0, 7]);
        assert_eq!(d.protocol_id, ProtocolId::ESP);
        assert_eq!(d.count(), 2);
        assert_eq!(d.spis_u32().collect::<Vec<_>>(), [0xc1c2_c3c4, 7]);
        assert_eq!(d.spis().next(), Some(&[0xc1, 0xc2, 0xc3, 0xc4][..]));
        assert_eq!(d, DeletePayload::esp(&[0xc1, 0xc2, 0xc3, 0xc4, 0, 0, 0, 7]));
    }

    #[test]
    fn count_must_match() {
        assert_eq!(
            DeletePayload::parse_body(&[3, 4, 0, 2, 1, 2, 3, 4]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            DeletePayload::parse_body(&[3, 4, 0, 1, 1, 2, 3, 4, 5]),
            Err(WireError::TrailingBytes)
        );
        assert!(matches!(
            DeletePayload::parse_body(&[1, 0, 0, 3]),
            Err(WireError::Invalid(_))
        ));
        // A huge count cannot make us allocate: it is only compared with the bytes present.
        assert_eq!(
            DeletePayload::parse_body(&[3, 255, 255, 255]),
            Err(WireError::Truncated)
        );
    }
}
