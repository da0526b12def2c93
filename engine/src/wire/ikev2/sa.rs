//! Security Association payload (RFC 7296 section 3.3): proposals, transforms and
//! transform attributes, with the transform ids Gatehouse negotiates.
//!
//! ```text
//! SA body:    proposal...
//! proposal:   last (0 or 2) | reserved | length (2) | number | protocol id | SPI size
//!             | #transforms | SPI | transform...
//! transform:  last (0 or 3) | reserved | length (2) | type | reserved | transform id (2)
//!             | attribute...
//! attribute:  AF (1 bit) type (15 bits) | value (2)              when AF = 1 (TV)
//!             AF (1 bit) type (15 bits) | length (2) | value     when AF = 0 (TLV)
//! ```

use super::{Reader, Result, WireError, patch_len16, registry};

/// Most proposals we accept in one SA payload (strongSwan sends 2; Windows 8).
pub const MAX_PROPOSALS: usize = 32;
/// Most transforms we accept in one proposal (strongSwan's default proposal has ~40).
pub const MAX_TRANSFORMS: usize = 64;
/// Most attributes we accept on one transform (only Key Length is defined).
pub const MAX_ATTRIBUTES: usize = 8;

/// Transform attribute type Key Length (in bits), always in TV format.
pub const ATTR_KEY_LENGTH: u16 = 14;

// Encryption algorithms (transform type 1).
/// ENCR_3DES.
pub const ENCR_3DES: u16 = 3;
/// ENCR_NULL (ESP only).
pub const ENCR_NULL: u16 = 11;
/// ENCR_AES_CBC; needs a Key Length attribute (128, 192, 256).
pub const ENCR_AES_CBC: u16 = 12;
/// ENCR_AES_CTR (RFC 5930); needs a Key Length attribute.
pub const ENCR_AES_CTR: u16 = 13;
/// ENCR_AES_CCM_8 (RFC 5282): AEAD with an 8-byte ICV.
pub const ENCR_AES_CCM_8: u16 = 14;
/// ENCR_AES_CCM_12.
pub const ENCR_AES_CCM_12: u16 = 15;
/// ENCR_AES_CCM_16: AEAD with a 16-byte ICV.
pub const ENCR_AES_CCM_16: u16 = 16;
/// ENCR_AES_GCM_8 (RFC 5282).
pub const ENCR_AES_GCM_8: u16 = 18;
/// ENCR_AES_GCM_12.
pub const ENCR_AES_GCM_12: u16 = 19;
/// ENCR_AES_GCM_16: AES-GCM with a 16-byte ICV; needs a Key Length attribute.
pub const ENCR_AES_GCM_16: u16 = 20;
/// ENCR_CHACHA20_POLY1305 (RFC 7634); no Key Length attribute.
pub const ENCR_CHACHA20_POLY1305: u16 = 28;

// Pseudorandom functions (transform type 2).
/// PRF_HMAC_MD5.
pub const PRF_HMAC_MD5: u16 = 1;
/// PRF_HMAC_SHA1.
pub const PRF_HMAC_SHA1: u16 = 2;
/// PRF_AES128_XCBC.
pub const PRF_AES128_XCBC: u16 = 4;
/// PRF_HMAC_SHA2_256.
pub const PRF_HMAC_SHA2_256: u16 = 5;
/// PRF_HMAC_SHA2_384.
pub const PRF_HMAC_SHA2_384: u16 = 6;
/// PRF_HMAC_SHA2_512.
pub const PRF_HMAC_SHA2_512: u16 = 7;

// Integrity algorithms (transform type 3).
/// NONE (with AEAD ciphers).
pub const AUTH_NONE: u16 = 0;
/// AUTH_HMAC_MD5_96.
pub const AUTH_HMAC_MD5_96: u16 = 1;
/// AUTH_HMAC_SHA1_96.
pub const AUTH_HMAC_SHA1_96: u16 = 2;
/// AUTH_AES_XCBC_96.
pub const AUTH_AES_XCBC_96: u16 = 5;
/// AUTH_HMAC_SHA2_256_128 (RFC 4868).
pub const AUTH_HMAC_SHA2_256_128: u16 = 12;
/// AUTH_HMAC_SHA2_384_192.
pub const AUTH_HMAC_SHA2_384_192: u16 = 13;
/// AUTH_HMAC_SHA2_512_256.
pub const AUTH_HMAC_SHA2_512_256: u16 = 14;

// Key exchange methods / Diffie-Hellman groups (transform type 4).
/// NONE (in CREATE_CHILD_SA proposals without PFS).
pub const DH_NONE: u16 = 0;
/// 1024-bit MODP group (group 2).
pub const DH_MODP_1024: u16 = 2;
/// 2048-bit MODP group (group 14).
pub const DH_MODP_2048: u16 = 14;
/// 3072-bit MODP group (group 15).
pub const DH_MODP_3072: u16 = 15;
/// 4096-bit MODP group (group 16).
pub const DH_MODP_4096: u16 = 16;
/// NIST P-256 (group 19, RFC 5903).
pub const DH_ECP_256: u16 = 19;
/// NIST P-384 (group 20).
pub const DH_ECP_384: u16 = 20;
/// NIST P-521 (group 21).
pub const DH_ECP_521: u16 = 21;
/// Curve25519 (group 31, RFC 8031): 32-byte public values.
pub const DH_CURVE25519: u16 = 31;
/// Curve448 (group 32, RFC 8031): 56-byte public values.
pub const DH_CURVE448: u16 = 32;

// Extended sequence numbers (transform type 5).
/// No extended sequence numbers.
pub const ESN_NONE: u16 = 0;
/// Extended sequence numbers.
pub const ESN_ENABLED: u16 = 1;

registry! {
    /// Security protocol identifier (IANA "IKEv2 Security Protocol Identifiers").
    ProtocolId(u8) {
        /// Not an SA (in notifications about the IKE SA, which carry no SPI).
        NONE = 0,
        /// IKE.
        IKE = 1,
        /// AH.
        AH = 2,
        /// ESP.
        ESP = 3,
    }
}

registry! {
    /// Transform type (IANA "Transform Type Values").
    TransformType(u8) {
        /// Encryption algorithm (ENCR).
        ENCR = 1,
        /// Pseudorandom function (PRF).
        PRF = 2,
        /// Integrity algorithm (INTEG).
        INTEG = 3,
        /// Diffie-Hellman group / key exchange method (DH).
        DH = 4,
        /// Extended sequence numbers (ESN).
        ESN = 5,
    }
}

/// The value of a transform attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeValue<'a> {
    /// TV format (AF = 1): a 2-byte value.
    Short(u16),
    /// TLV format (AF = 0): a variable-length value.
    Long(&'a [u8]),
}

/// A transform attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformAttribute<'a> {
    /// Attribute type (15 bits; [`ATTR_KEY_LENGTH`]).
    pub attr_type: u16,
    /// The value and its format.
    pub value: AttributeValue<'a>,
}

/// A transform: one algorithm choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform<'a> {
    /// Which kind of algorithm.
    pub transform_type: TransformType,
    /// The algorithm (`ENCR_*`, `PRF_*`, `AUTH_*`, `DH_*`, `ESN_*`).
    pub id: u16,
    /// Attributes in wire order.
    pub attributes: Vec<TransformAttribute<'a>>,
}

impl<'a> Transform<'a> {
    /// A transform without attributes.
    pub fn new(transform_type: TransformType, id: u16) -> Self {
        Self {
            transform_type,
            id,
            attributes: Vec::new(),
        }
    }

    /// An encryption transform with a Key Length attribute (`bits`: 128, 192, 256).
    pub fn with_key_length(transform_type: TransformType, id: u16, bits: u16) -> Self {
        Self {
            transform_type,
            id,
            attributes: vec![TransformAttribute {
                attr_type: ATTR_KEY_LENGTH,
                value: AttributeValue::Short(bits),
            }],
        }
    }

    /// The Key Length attribute in bits, if present in TV format.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a.value {
            AttributeValue::Short(v) if a.attr_type == ATTR_KEY_LENGTH => Some(v),
            _ => None,
        })
    }

    /// Whether the transform carries an attribute other than Key Length. RFC 7296 says
    /// a transform with an attribute we do not understand must not be chosen.
    pub fn has_unknown_attributes(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| a.attr_type != ATTR_KEY_LENGTH)
    }

    fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let transform_type = TransformType(r.u8()?);
        r.skip(1)?;
        let id = r.u16()?;
        let mut attributes = Vec::new();
        while !r.is_empty() {
            if attributes.len() >= MAX_ATTRIBUTES {
                return Err(WireError::TooMany {
                    what: "transform attributes",
                    limit: MAX_ATTRIBUTES,
                });
            }
            let first = r.u16()?;
            let attr_type = first & 0x7fff;
            let value = if first & 0x8000 != 0 {
                AttributeValue::Short(r.u16()?)
            } else {
                let len = r.u16()?;
                AttributeValue::Long(r.take(usize::from(len))?)
            };
            attributes.push(TransformAttribute { attr_type, value });
        }
        Ok(Self {
            transform_type,
            id,
            attributes,
        })
    }

    fn encoded_len(&self) -> usize {
        8 + self
            .attributes
            .iter()
            .map(|a| match a.value {
                AttributeValue::Short(_) => 4,
                AttributeValue::Long(v) => 4 + v.len(),
            })
            .sum::<usize>()
    }

    fn emit(&self, last: bool, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(if last { 0 } else { 3 });
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        out.push(self.transform_type.0);
        out.push(0);
        out.extend_from_slice(&self.id.to_be_bytes());
        for a in &self.attributes {
            match a.value {
                AttributeValue::Short(v) => {
                    out.extend_from_slice(&(a.attr_type | 0x8000).to_be_bytes());
                    out.extend_from_slice(&v.to_be_bytes());
                }
                AttributeValue::Long(v) => {
                    out.extend_from_slice(&(a.attr_type & 0x7fff).to_be_bytes());
                    out.extend_from_slice(&super::len16(v.len()).to_be_bytes());
                    out.extend_from_slice(v);
                }
            }
        }
        let len = out.len() - start;
        patch_len16(out, start + 2, len);
    }
}

/// A proposal: one complete set of algorithms for one protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal<'a> {
    /// Proposal number: 1 for the first, counting up; the responder echoes the one it
    /// chose.
    pub number: u8,
    /// IKE, AH or ESP.
    pub protocol: ProtocolId,
    /// The sender's SPI: empty in IKE_SA_INIT, 8 bytes when rekeying the IKE SA, 4 for
    /// ESP/AH.
    pub spi: &'a [u8],
    /// The transforms, in wire order.
    pub transforms: Vec<Transform<'a>>,
}

impl<'a> Proposal<'a> {
    /// The transforms of one type, in order.
    pub fn transforms_of(
        &self,
        transform_type: TransformType,
    ) -> impl Iterator<Item = &Transform<'a>> {
        self.transforms
            .iter()
            .filter(move |t| t.transform_type == transform_type)
    }

    /// The SPI as a 32-bit number when it is 4 bytes long (ESP, AH).
    pub fn spi_u32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.spi.try_into().ok()?))
    }

    /// The SPI as a 64-bit number when it is 8 bytes long (IKE SA rekey).
    pub fn spi_u64(&self) -> Option<u64> {
        Some(u64::from_be_bytes(self.spi.try_into().ok()?))
    }

    fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let number = r.u8()?;
        let protocol = ProtocolId(r.u8()?);
        let spi_size = r.u8()?;
        let count = r.u8()?;
        if usize::from(count) > MAX_TRANSFORMS {
            return Err(WireError::TooMany {
                what: "transforms",
                limit: MAX_TRANSFORMS,
            });
        }
        let spi = r.take(usize::from(spi_size))?;
        let mut transforms = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            transforms.push(Transform::parse(substructure(&mut r)?)?);
        }
        r.finish()?;
        Ok(Self {
            number,
            protocol,
            spi,
            transforms,
        })
    }

    fn encoded_len(&self) -> usize {
        8 + self.spi.len()
            + self
                .transforms
                .iter()
                .map(Transform::encoded_len)
                .sum::<usize>()
    }

    fn emit(&self, last: bool, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(if last { 0 } else { 2 });
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        out.push(self.number);
        out.push(self.protocol.0);
        out.push(u8::try_from(self.spi.len()).unwrap_or(u8::MAX));
        out.push(u8::try_from(self.transforms.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.spi);
        let count = self.transforms.len();
        for (i, t) in self.transforms.iter().enumerate() {
            t.emit(i + 1 == count, out);
        }
        let len = out.len() - start;
        patch_len16(out, start + 2, len);
    }
}

/// Reads one proposal or transform substructure (`last | reserved | length (2) | ...`)
/// and returns what follows its 4-byte header. The "last" byte is redundant with the
/// lengths and, like strongSwan, we do not check it.
fn substructure<'a>(r: &mut Reader<'a>) -> Result<&'a [u8]> {
    r.skip(2)?;
    let len = r.u16()?;
    let body_len = usize::from(len)
        .checked_sub(4)
        .ok_or(WireError::Invalid("substructure length below 4"))?;
    r.take(body_len)
}

/// Security Association payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaPayload<'a> {
    /// The proposals in order of the sender's preference.
    pub proposals: Vec<Proposal<'a>>,
}

impl<'a> SaPayload<'a> {
    /// Parses the payload body (after the generic header). At least one proposal.
    pub fn parse_body(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let mut proposals = Vec::new();
        while !r.is_empty() {
            if proposals.len() >= MAX_PROPOSALS {
                return Err(WireError::TooMany {
                    what: "proposals",
                    limit: MAX_PROPOSALS,
                });
            }
            proposals.push(Proposal::parse(substructure(&mut r)?)?);
        }
        if proposals.is_empty() {
            return Err(WireError::Invalid("SA payload without proposals"));
        }
        Ok(Self { proposals })
    }

    /// Size of the body.
    pub fn body_len(&self) -> usize {
        self.proposals.iter().map(Proposal::encoded_len).sum()
    }

    /// Appends the body.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        let count = self.proposals.len();
        for (i, p) in self.proposals.iter().enumerate() {
            p.emit(i + 1 == count, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(sa: &SaPayload<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        sa.emit_body(&mut out);
        assert_eq!(out.len(), sa.body_len());
        out
    }

    /// One IKE proposal: AES-GCM-16-256, PRF-HMAC-SHA2-256, x25519.
    const ONE_PROPOSAL: [u8; 36] = [
        0, 0, 0, 36, // last proposal, reserved, length 36
        1, 1, 0, 3, // #1, IKE, SPI size 0, 3 transforms
        3, 0, 0, 12, 1, 0, 0, 20, // transform ENCR 20 ...
        0x80, 14, 1, 0, // ... key length 256 (TV)
        3, 0, 0, 8, 2, 0, 0, 5, // PRF 5
        0, 0, 0, 8, 4, 0, 0, 31, // last: DH 31
    ];

    #[test]
    fn ike_proposal_bytes() {
        let sa = SaPayload::parse_body(&ONE_PROPOSAL).unwrap();
        assert_eq!(sa.proposals.len(), 1);
        let p = &sa.proposals[0];
        assert_eq!(p.number, 1);
        assert_eq!(p.protocol, ProtocolId::IKE);
        assert!(p.spi.is_empty());
        assert_eq!(
            p.transforms,
            vec![
                Transform::with_key_length(TransformType::ENCR, ENCR_AES_GCM_16, 256),
                Transform::new(TransformType::PRF, PRF_HMAC_SHA2_256),
                Transform::new(TransformType::DH, DH_CURVE25519),
            ]
        );
        assert_eq!(p.transforms[0].key_length(), Some(256));
        assert_eq!(p.transforms[1].key_length(), None);
        assert_eq!(p.transforms_of(TransformType::DH).count(), 1);
        assert_eq!(emit(&sa), ONE_PROPOSAL);
    }

    #[test]
    fn esp_proposal_with_spi_and_two_proposals() {
        let sa = SaPayload {
            proposals: vec![
                Proposal {
                    number: 1,
                    protocol: ProtocolId::ESP,
                    spi: &[0xc1, 0xc2, 0xc3, 0xc4],
                    transforms: vec![
                        Transform::with_key_length(TransformType::ENCR, ENCR_AES_GCM_16, 128),
                        Transform::new(TransformType::ESN, ESN_NONE),
                    ],
                },
                Proposal {
                    number: 2,
                    protocol: ProtocolId::ESP,
                    spi: &[0xc1, 0xc2, 0xc3, 0xc4],
                    transforms: vec![Transform::new(TransformType::ENCR, ENCR_CHACHA20_POLY1305)],
                },
            ],
        };
        let bytes = emit(&sa);
        #[rustfmt::skip]
        let expected = [
            2, 0, 0, 32, 1, 3, 4, 2, 0xc1, 0xc2, 0xc3, 0xc4,
            3, 0, 0, 12, 1, 0, 0, 20, 0x80, 14, 0, 128,
            0, 0, 0, 8, 5, 0, 0, 0,
            0, 0, 0, 20, 2, 3, 4, 1, 0xc1, 0xc2, 0xc3, 0xc4,
            0, 0, 0, 8, 1, 0, 0, 28,
        ];
        assert_eq!(bytes, expected);
        let back = SaPayload::parse_body(&bytes).unwrap();
        assert_eq!(back, sa);
        assert_eq!(back.proposals[0].spi_u32(), Some(0xc1c2_c3c4));
        assert_eq!(back.proposals[0].spi_u64(), None);
    }

    #[test]
    fn tlv_attribute_round_trips() {
        #[rustfmt::skip]
        let bytes = [
            0, 0, 0, 22, 1, 1, 0, 1,
            0, 0, 0, 14, 1, 0, 0, 12, 0x00, 0x99, 0, 2, 0xab, 0xcd,
        ];
        let sa = SaPayload::parse_body(&bytes).unwrap();
        let t = &sa.proposals[0].transforms[0];
        assert_eq!(
            t.attributes,
            vec![TransformAttribute {
                attr_type: 0x99,
                value: AttributeValue::Long(&[0xab, 0xcd])
            }]
        );
        assert!(t.has_unknown_attributes());
        assert_eq!(emit(&sa), bytes);
    }

    #[test]
    fn rejects_malformed() {
        // Empty SA.
        assert!(SaPayload::parse_body(&[]).is_err());
        // Transform count says 4, only 3 present.
        let mut bytes = ONE_PROPOSAL.to_vec();
        bytes[7] = 4;
        assert!(SaPayload::parse_body(&bytes).is_err());
        // Transform count says 2 but 3 are present: trailing bytes in the proposal.
        bytes[7] = 2;
        assert_eq!(SaPayload::parse_body(&bytes), Err(WireError::TrailingBytes));
        // Proposal length 3.
        bytes[7] = 3;
        bytes[3] = 3;
        assert!(SaPayload::parse_body(&bytes).is_err());
        // Proposal length past the end.
        bytes[3] = 200;
        assert_eq!(SaPayload::parse_body(&bytes), Err(WireError::Truncated));
        // TLV attribute running past its transform.
        bytes[3] = 36;
        bytes[16] = 0x00;
        assert!(SaPayload::parse_body(&bytes).is_err());
    }

    #[test]
    fn count_limits() {
        let t = Transform::new(TransformType::ENCR, ENCR_AES_CBC);
        let many = SaPayload {
            proposals: vec![Proposal {
                number: 1,
                protocol: ProtocolId::IKE,
                spi: &[],
                transforms: vec![t.clone(); MAX_TRANSFORMS + 1],
            }],
        };
        assert!(matches!(
            SaPayload::parse_body(&emit(&many)),
            Err(WireError::TooMany {
                what: "transforms",
                ..
            })
        ));
        let p = Proposal {
            number: 1,
            protocol: ProtocolId::IKE,
            spi: &[],
            transforms: vec![t],
        };
        let many = SaPayload {
            proposals: vec![p; MAX_PROPOSALS + 1],
        };
        assert!(matches!(
            SaPayload::parse_body(&emit(&many)),
            Err(WireError::TooMany {
                what: "proposals",
                ..
            })
        ));
    }
}
