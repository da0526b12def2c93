//! Authentication payload (RFC 7296 section 3.8) and the Digital Signature method of
//! RFC 7427.
//!
//! ```text
//! AUTH:                auth method (1) | reserved (3) | authentication data
//! method 14 data:      ASN.1 length (1) | AlgorithmIdentifier (DER) | signature
//! ```

use super::{Reader, Result, WireError, registry};

registry! {
    /// Authentication method (IANA "IKEv2 Authentication Method").
    AuthMethod(u8) {
        /// RSA PKCS#1 v1.5 signature with SHA-1 (classic).
        RSA_DIGITAL_SIGNATURE = 1,
        /// Shared key message integrity code (PSK).
        SHARED_KEY_MIC = 2,
        /// DSS signature.
        DSS_DIGITAL_SIGNATURE = 3,
        /// ECDSA with SHA-256 on P-256 (RFC 4754).
        ECDSA_SHA256_P256 = 9,
        /// ECDSA with SHA-384 on P-384.
        ECDSA_SHA384_P384 = 10,
        /// ECDSA with SHA-512 on P-521.
        ECDSA_SHA512_P521 = 11,
        /// Generic secure password (RFC 6467).
        GENERIC_SECURE_PASSWORD = 12,
        /// NULL authentication (RFC 7619).
        NULL = 13,
        /// Digital signature with an explicit AlgorithmIdentifier (RFC 7427).
        DIGITAL_SIGNATURE = 14,
    }
}

registry! {
    /// Hash algorithm of the SIGNATURE_HASH_ALGORITHMS notification (RFC 7427).
    HashAlgorithm(u16) {
        /// SHA-1.
        SHA1 = 1,
        /// SHA-256.
        SHA2_256 = 2,
        /// SHA-384.
        SHA2_384 = 3,
        /// SHA-512.
        SHA2_512 = 4,
        /// Identity: the signature scheme hashes itself (Ed25519, RFC 8420).
        IDENTITY = 5,
    }
}

/// AlgorithmIdentifier of ecdsa-with-SHA256 (RFC 7427 appendix A.3; no parameters).
pub const DER_ECDSA_WITH_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
/// AlgorithmIdentifier of ecdsa-with-SHA384.
pub const DER_ECDSA_WITH_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
/// AlgorithmIdentifier of ecdsa-with-SHA512.
pub const DER_ECDSA_WITH_SHA512: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
];
/// AlgorithmIdentifier of sha256WithRSAEncryption (RFC 7427 appendix A.1; NULL
/// parameters).
pub const DER_SHA256_WITH_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
/// AlgorithmIdentifier of sha384WithRSAEncryption.
pub const DER_SHA384_WITH_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00,
];
/// AlgorithmIdentifier of sha512WithRSAEncryption.
pub const DER_SHA512_WITH_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00,
];

/// RSASSA-PSS AlgorithmIdentifier with explicit parameters as strongSwan and Windows
/// send them: hash `$h` (with NULL parameters), MGF1 with the same hash, salt length
/// `$salt` = the hash length, default trailer.
macro_rules! pss_der {
    ($h:literal, $salt:literal) => {
        &[
            0x30, 0x41, // AlgorithmIdentifier
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, // id-RSASSA-PSS
            0x30, 0x34, // RSASSA-PSS-params
            0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, $h,
            0x05, 0x00, // [0] hashAlgorithm
            0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
            0x08, // [1] maskGenAlgorithm: id-mgf1 ...
            0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, $h, 0x05,
            0x00, // ... with the hash
            0xa2, 0x03, 0x02, 0x01, $salt, // [2] saltLength
        ]
    };
}

/// The same, with the hash AlgorithmIdentifiers' parameters absent instead of NULL (both
/// encodings are allowed; we accept both and send [`pss_der`]).
macro_rules! pss_der_absent_params {
    ($h:literal, $salt:literal) => {
        &[
            0x30, 0x3d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30,
            0x30, 0xa0, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
            0x02, $h, 0xa1, 0x1a, 0x30, 0x18, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
            0x01, 0x08, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, $h,
            0xa2, 0x03, 0x02, 0x01, $salt,
        ]
    };
}

/// AlgorithmIdentifier of RSASSA-PSS with SHA-256, MGF1-SHA-256, salt length 32.
pub const DER_RSASSA_PSS_SHA256: &[u8] = pss_der!(0x01, 0x20);
/// AlgorithmIdentifier of RSASSA-PSS with SHA-384, MGF1-SHA-384, salt length 48.
pub const DER_RSASSA_PSS_SHA384: &[u8] = pss_der!(0x02, 0x30);
/// AlgorithmIdentifier of RSASSA-PSS with SHA-512, MGF1-SHA-512, salt length 64.
pub const DER_RSASSA_PSS_SHA512: &[u8] = pss_der!(0x03, 0x40);
/// AlgorithmIdentifier of Ed25519 (RFC 8420).
pub const DER_ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

/// Other encodings of the same algorithms that peers may send: PKCS#1 v1.5 without the
/// NULL parameters, PSS with absent hash parameters.
const DER_ALIASES: &[(&[u8], SignatureAlgorithm)] = &[
    (
        &[
            0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b,
        ],
        SignatureAlgorithm::RsaPkcs1Sha256,
    ),
    (
        &[
            0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c,
        ],
        SignatureAlgorithm::RsaPkcs1Sha384,
    ),
    (
        &[
            0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d,
        ],
        SignatureAlgorithm::RsaPkcs1Sha512,
    ),
    (
        pss_der_absent_params!(0x01, 0x20),
        SignatureAlgorithm::RsaPssSha256,
    ),
    (
        pss_der_absent_params!(0x02, 0x30),
        SignatureAlgorithm::RsaPssSha384,
    ),
    (
        pss_der_absent_params!(0x03, 0x40),
        SignatureAlgorithm::RsaPssSha512,
    ),
];

/// A signature algorithm named by an RFC 7427 AlgorithmIdentifier that we recognize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// ecdsa-with-SHA256 (P-256 keys).
    EcdsaSha256,
    /// ecdsa-with-SHA384 (P-384 keys).
    EcdsaSha384,
    /// ecdsa-with-SHA512 (P-521 keys).
    EcdsaSha512,
    /// sha256WithRSAEncryption (PKCS#1 v1.5).
    RsaPkcs1Sha256,
    /// sha384WithRSAEncryption.
    RsaPkcs1Sha384,
    /// sha512WithRSAEncryption.
    RsaPkcs1Sha512,
    /// RSASSA-PSS with SHA-256 (MGF1-SHA-256, 32-byte salt).
    RsaPssSha256,
    /// RSASSA-PSS with SHA-384 (MGF1-SHA-384, 48-byte salt).
    RsaPssSha384,
    /// RSASSA-PSS with SHA-512 (MGF1-SHA-512, 64-byte salt).
    RsaPssSha512,
    /// Ed25519.
    Ed25519,
}

impl SignatureAlgorithm {
    /// Every algorithm we recognize.
    pub const ALL: [Self; 10] = [
        Self::EcdsaSha256,
        Self::EcdsaSha384,
        Self::EcdsaSha512,
        Self::RsaPkcs1Sha256,
        Self::RsaPkcs1Sha384,
        Self::RsaPkcs1Sha512,
        Self::RsaPssSha256,
        Self::RsaPssSha384,
        Self::RsaPssSha512,
        Self::Ed25519,
    ];

    /// The AlgorithmIdentifier we send for this algorithm.
    pub fn der(self) -> &'static [u8] {
        match self {
            Self::EcdsaSha256 => DER_ECDSA_WITH_SHA256,
            Self::EcdsaSha384 => DER_ECDSA_WITH_SHA384,
            Self::EcdsaSha512 => DER_ECDSA_WITH_SHA512,
            Self::RsaPkcs1Sha256 => DER_SHA256_WITH_RSA,
            Self::RsaPkcs1Sha384 => DER_SHA384_WITH_RSA,
            Self::RsaPkcs1Sha512 => DER_SHA512_WITH_RSA,
            Self::RsaPssSha256 => DER_RSASSA_PSS_SHA256,
            Self::RsaPssSha384 => DER_RSASSA_PSS_SHA384,
            Self::RsaPssSha512 => DER_RSASSA_PSS_SHA512,
            Self::Ed25519 => DER_ED25519,
        }
    }

    /// Recognizes an AlgorithmIdentifier (the canonical encodings above and the common
    /// variants of them); `None` for anything else.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.der() == der).or_else(|| {
            DER_ALIASES
                .iter()
                .find(|(alias, _)| *alias == der)
                .map(|(_, a)| *a)
        })
    }

    /// The hash this algorithm uses, as announced in SIGNATURE_HASH_ALGORITHMS.
    pub fn hash(self) -> HashAlgorithm {
        match self {
            Self::EcdsaSha256 | Self::RsaPkcs1Sha256 | Self::RsaPssSha256 => {
                HashAlgorithm::SHA2_256
            }
            Self::EcdsaSha384 | Self::RsaPkcs1Sha384 | Self::RsaPssSha384 => {
                HashAlgorithm::SHA2_384
            }
            Self::EcdsaSha512 | Self::RsaPkcs1Sha512 | Self::RsaPssSha512 => {
                HashAlgorithm::SHA2_512
            }
            Self::Ed25519 => HashAlgorithm::IDENTITY,
        }
    }
}

/// The parts of RFC 7427 authentication data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitalSignature<'a> {
    /// The DER AlgorithmIdentifier, as received.
    pub algorithm_der: &'a [u8],
    /// The signature value.
    pub signature: &'a [u8],
}

impl DigitalSignature<'_> {
    /// The algorithm, if we recognize its AlgorithmIdentifier.
    pub fn algorithm(&self) -> Option<SignatureAlgorithm> {
        SignatureAlgorithm::from_der(self.algorithm_der)
    }
}

/// Appends RFC 7427 authentication data: the AlgorithmIdentifier's length (one byte),
/// the AlgorithmIdentifier and the signature. `algorithm_der` is at most 255 bytes (every
/// [`SignatureAlgorithm::der`] is).
pub fn emit_digital_signature_data(algorithm_der: &[u8], signature: &[u8], out: &mut Vec<u8>) {
    out.push(u8::try_from(algorithm_der.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(algorithm_der);
    out.extend_from_slice(signature);
}

/// An Authentication payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthPayload<'a> {
    /// How `data` proves the sender's identity.
    pub method: AuthMethod,
    /// The signature or MIC (for [`AuthMethod::DIGITAL_SIGNATURE`], see
    /// [`AuthPayload::digital_signature`]).
    pub data: &'a [u8],
}

impl<'a> AuthPayload<'a> {
    /// Parses the payload body (after the generic header).
    pub fn parse_body(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let method = AuthMethod(r.u8()?);
        r.skip(3)?;
        Ok(Self {
            method,
            data: r.rest(),
        })
    }

    /// Size of the body.
    pub fn body_len(&self) -> usize {
        4 + self.data.len()
    }

    /// Appends the body.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        out.push(self.method.0);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(self.data);
    }

    /// Splits RFC 7427 authentication data into AlgorithmIdentifier and signature. Fails
    /// if the method is not [`AuthMethod::DIGITAL_SIGNATURE`], the AlgorithmIdentifier is
    /// empty or runs past the data, or the signature is empty.
    pub fn digital_signature(&self) -> Result<DigitalSignature<'a>> {
        if self.method != AuthMethod::DIGITAL_SIGNATURE {
            return Err(WireError::Invalid("AUTH method is not Digital Signature"));
        }
        let mut r = Reader::new(self.data);
        let len = r.u8()?;
        if len == 0 {
            return Err(WireError::Invalid("empty signature AlgorithmIdentifier"));
        }
        let algorithm_der = r.take(usize::from(len))?;
        let signature = r.rest();
        if signature.is_empty() {
            return Err(WireError::Invalid("empty signature"));
        }
        Ok(DigitalSignature {
            algorithm_der,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;
    use x509_parser::signature_algorithm::SignatureAlgorithm as X509Alg;
    use x509_parser::x509::AlgorithmIdentifier;

    #[test]
    fn auth_payload_bytes() {
        let bytes = [2, 0, 0, 0, 0xde, 0xad];
        let auth = AuthPayload::parse_body(&bytes).unwrap();
        assert_eq!(auth.method, AuthMethod::SHARED_KEY_MIC);
        assert_eq!(auth.data, &[0xde, 0xad]);
        let mut out = Vec::new();
        auth.emit_body(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(out.len(), auth.body_len());
        assert_eq!(
            AuthPayload::parse_body(&[2, 0, 0]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            auth.digital_signature(),
            Err(WireError::Invalid("AUTH method is not Digital Signature"))
        );
    }

    #[test]
    fn rfc7427_ecdsa_sha256_data() {
        // What strongSwan sends with an ECDSA P-256 certificate: 12-byte
        // AlgorithmIdentifier, then the DER ECDSA signature.
        let mut bytes = vec![14, 0, 0, 0, 12];
        bytes.extend_from_slice(&[
            0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
        ]);
        bytes.extend_from_slice(&[0x30, 0x44, 0x02, 0x20]);
        let auth = AuthPayload::parse_body(&bytes).unwrap();
        let sig = auth.digital_signature().unwrap();
        assert_eq!(sig.algorithm(), Some(SignatureAlgorithm::EcdsaSha256));
        assert_eq!(sig.signature, &[0x30, 0x44, 0x02, 0x20]);

        let mut data = Vec::new();
        emit_digital_signature_data(DER_ECDSA_WITH_SHA256, sig.signature, &mut data);
        assert_eq!(data, &bytes[4..]);
    }

    #[test]
    fn rfc7427_malformed_data() {
        let ds = |data: &'static [u8]| {
            AuthPayload {
                method: AuthMethod::DIGITAL_SIGNATURE,
                data,
            }
            .digital_signature()
        };
        assert_eq!(ds(&[]), Err(WireError::Truncated));
        assert!(matches!(ds(&[0, 1, 2]), Err(WireError::Invalid(_))));
        assert_eq!(ds(&[5, 1, 2]), Err(WireError::Truncated));
        assert!(matches!(ds(&[2, 1, 2]), Err(WireError::Invalid(_))));
        let ok = ds(&[2, 0x30, 0x00, 9]).unwrap();
        assert_eq!(ok.algorithm(), None);
    }

    #[test]
    fn der_constants_decode_to_their_algorithms() {
        // Cross-check every hand-written AlgorithmIdentifier with an independent DER
        // parser, including the PSS parameters.
        for alg in SignatureAlgorithm::ALL {
            let (rest, id) =
                AlgorithmIdentifier::from_der(alg.der()).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert!(rest.is_empty(), "{alg:?}: trailing bytes");
            check_x509_alg(alg, &id);
            assert_eq!(SignatureAlgorithm::from_der(alg.der()), Some(alg));
        }
        for (der, alg) in DER_ALIASES {
            let (rest, id) = AlgorithmIdentifier::from_der(der).unwrap();
            assert!(rest.is_empty());
            check_x509_alg(*alg, &id);
            assert_eq!(SignatureAlgorithm::from_der(der), Some(*alg));
        }
        assert_eq!(SignatureAlgorithm::from_der(&[0x30, 0x00]), None);
        assert_eq!(
            SignatureAlgorithm::RsaPssSha384.hash(),
            HashAlgorithm::SHA2_384
        );
        assert_eq!(SignatureAlgorithm::Ed25519.hash(), HashAlgorithm::IDENTITY);
    }

    fn check_x509_alg(alg: SignatureAlgorithm, id: &AlgorithmIdentifier<'_>) {
        use SignatureAlgorithm::*;
        let parsed = X509Alg::try_from(id).unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
        let oid = id.algorithm.to_id_string();
        let (want_oid, hash) = match alg {
            EcdsaSha256 => ("1.2.840.10045.4.3.2", None),
            EcdsaSha384 => ("1.2.840.10045.4.3.3", None),
            EcdsaSha512 => ("1.2.840.10045.4.3.4", None),
            RsaPkcs1Sha256 => ("1.2.840.113549.1.1.11", None),
            RsaPkcs1Sha384 => ("1.2.840.113549.1.1.12", None),
            RsaPkcs1Sha512 => ("1.2.840.113549.1.1.13", None),
            RsaPssSha256 => (
                "1.2.840.113549.1.1.10",
                Some(("2.16.840.1.101.3.4.2.1", 32)),
            ),
            RsaPssSha384 => (
                "1.2.840.113549.1.1.10",
                Some(("2.16.840.1.101.3.4.2.2", 48)),
            ),
            RsaPssSha512 => (
                "1.2.840.113549.1.1.10",
                Some(("2.16.840.1.101.3.4.2.3", 64)),
            ),
            Ed25519 => ("1.3.101.112", None),
        };
        assert_eq!(oid, want_oid, "{alg:?}");
        if let Some((hash_oid, salt)) = hash {
            let X509Alg::RSASSA_PSS(params) = parsed else {
                panic!("{alg:?}: not parsed as PSS");
            };
            let params = &*params;
            assert_eq!(params.hash_algorithm_oid().to_id_string(), hash_oid);
            let mgf = params.mask_gen_algorithm().unwrap();
            assert_eq!(mgf.mgf.to_id_string(), "1.2.840.113549.1.1.8");
            assert_eq!(mgf.hash.to_id_string(), hash_oid);
            assert_eq!(params.salt_length(), salt);
        }
    }
}
