//! AUTH payload computation and verification (RFC 7296 section 2.15, RFC 4754, RFC 7427).
//!
//! Signatures come from ring. ring's ECDSA and RSA signers need a
//! `ring::rand::SecureRandom`, which is sealed and so cannot wrap our
//! [`Entropy`](crate::entropy::Entropy): callers pass one (drivers: `SystemRandom`).

use ring::rand::SecureRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_HASH_SHA256,
    OID_NIST_HASH_SHA384, OID_NIST_HASH_SHA512, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS,
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
};
use x509_parser::prelude::FromDer;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use super::prf::Prf;
use super::sk::ct_eq;

/// Why an AUTH payload could not be produced or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The private key is not PKCS#8 (or PKCS#1 for RSA) for P-256, P-384 or RSA 2048+.
    #[error("private key rejected: {0} (use an unencrypted PKCS#8 ECDSA P-256/P-384 or RSA key)")]
    BadPrivateKey(String),
    /// The peer's public key is not an RSA, P-256 or P-384 SubjectPublicKeyInfo.
    #[error("unsupported or malformed public key in the peer's certificate")]
    BadPublicKey,
    /// The method does not fit this key or is not one we sign or verify with.
    #[error("authentication method {method:?} cannot be used with this key")]
    MethodMismatch {
        /// The requested or received method.
        method: AuthMethod,
    },
    /// RFC 7427 AUTH data names a signature algorithm we do not accept (SHA-1, P-521...).
    #[error("unsupported signature algorithm in RFC 7427 AUTH data")]
    UnsupportedAlgorithm,
    /// The AUTH data is too short or its AlgorithmIdentifier is malformed.
    #[error("malformed AUTH payload data")]
    Malformed,
    /// The signature or MAC does not match: wrong key, wrong identity or tampering.
    #[error("AUTH payload does not verify")]
    BadSignature,
    /// ring failed to sign (random number generator failure).
    #[error("signing failed")]
    SigningFailed,
}

/// IKEv2 authentication methods (AUTH payload "Auth Method" field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// RSA Digital Signature (1): PKCS#1 v1.5 with SHA-1. Verified only; ring cannot
    /// sign with SHA-1.
    RsaSig,
    /// Shared Key Message Integrity Code (2).
    SharedKeyMic,
    /// ECDSA with SHA-256 on P-256 (9), RFC 4754: raw r | s.
    EcdsaSha256P256,
    /// ECDSA with SHA-384 on P-384 (10), RFC 4754: raw r | s.
    EcdsaSha384P384,
    /// Digital Signature (14), RFC 7427: AlgorithmIdentifier + DER/PKCS#1 signature.
    DigitalSignature,
}

impl AuthMethod {
    /// The IANA value of the Auth Method field.
    pub const fn id(self) -> u8 {
        match self {
            AuthMethod::RsaSig => 1,
            AuthMethod::SharedKeyMic => 2,
            AuthMethod::EcdsaSha256P256 => 9,
            AuthMethod::EcdsaSha384P384 => 10,
            AuthMethod::DigitalSignature => 14,
        }
    }

    /// The method for an Auth Method value, if we implement it.
    pub fn from_id(id: u8) -> Option<Self> {
        [
            AuthMethod::RsaSig,
            AuthMethod::SharedKeyMic,
            AuthMethod::EcdsaSha256P256,
            AuthMethod::EcdsaSha384P384,
            AuthMethod::DigitalSignature,
        ]
        .into_iter()
        .find(|m| m.id() == id)
    }
}

/// Signature schemes for RFC 7427 (method 14) AUTH payloads we can create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    /// ecdsa-with-SHA256 on P-256.
    EcdsaP256Sha256,
    /// ecdsa-with-SHA384 on P-384.
    EcdsaP384Sha384,
    /// sha256WithRSAEncryption (PKCS#1 v1.5).
    RsaPkcs1Sha256,
    /// sha384WithRSAEncryption.
    RsaPkcs1Sha384,
    /// sha512WithRSAEncryption.
    RsaPkcs1Sha512,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt.
    RsaPssSha256,
}

impl SignatureScheme {
    /// The DER AlgorithmIdentifier that precedes the signature (RFC 7427 appendix A).
    pub const fn algorithm_identifier(self) -> &'static [u8] {
        match self {
            SignatureScheme::EcdsaP256Sha256 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
            ],
            SignatureScheme::EcdsaP384Sha384 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
            ],
            SignatureScheme::RsaPkcs1Sha256 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
                0x00,
            ],
            SignatureScheme::RsaPkcs1Sha384 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05,
                0x00,
            ],
            SignatureScheme::RsaPkcs1Sha512 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05,
                0x00,
            ],
            // RSASSA-PSS-params { hashAlgorithm sha256, maskGenAlgorithm mgf1(sha256),
            // saltLength 32 }.
            SignatureScheme::RsaPssSha256 => &[
                0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30,
                0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                0x02, 0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
                0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x20,
            ],
        }
    }
}

/// The octets an AUTH payload signs or MACs (RFC 7296 2.15):
/// `message | peer nonce | prf(SK_p, ID payload body)`.
///
/// `sa_init_message` is our own IKE_SA_INIT message exactly as sent (request for the
/// initiator, response for the responder); `peer_nonce` is the peer's Nonce data;
/// `sk_p` is SK_pi for the initiator and SK_pr for the responder; `id_body` is our ID
/// payload without its generic header (ID type, three reserved bytes, identification data).
pub fn signed_octets(
    prf: Prf,
    sk_p: &[u8],
    sa_init_message: &[u8],
    peer_nonce: &[u8],
    id_body: &[u8],
) -> Vec<u8> {
    let maced_id = prf.prf(sk_p, id_body);
    let mut out = Vec::with_capacity(sa_init_message.len() + peer_nonce.len() + maced_id.len());
    out.extend_from_slice(sa_init_message);
    out.extend_from_slice(peer_nonce);
    out.extend_from_slice(&maced_id);
    out
}

/// Shared-key AUTH data: prf(prf(Shared Secret, "Key Pad for IKEv2"), octets).
pub fn psk_auth(prf: Prf, psk: &[u8], octets: &[u8]) -> Vec<u8> {
    let key = prf.prf(psk, b"Key Pad for IKEv2");
    prf.prf(&key, octets)
}

/// Checks shared-key AUTH data in constant time.
pub fn verify_psk_auth(
    prf: Prf,
    psk: &[u8],
    octets: &[u8],
    auth_data: &[u8],
) -> Result<(), SignError> {
    if ct_eq(&psk_auth(prf, psk, octets), auth_data) {
        Ok(())
    } else {
        Err(SignError::BadSignature)
    }
}

/// A private key for AUTH payloads.
pub struct SigningKey {
    kind: KeyKind,
}

enum KeyKind {
    /// ring binds the signature encoding to the key pair, so keep one of each.
    Ecdsa {
        p384: bool,
        der: Box<EcdsaKeyPair>,
        fixed: Box<EcdsaKeyPair>,
    },
    Rsa(Box<RsaKeyPair>),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            KeyKind::Ecdsa { p384: false, .. } => "ECDSA P-256",
            KeyKind::Ecdsa { p384: true, .. } => "ECDSA P-384",
            KeyKind::Rsa(_) => "RSA",
        };
        f.debug_struct("SigningKey")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from unencrypted PKCS#8 DER: ECDSA P-256, ECDSA P-384 or RSA (2048-8192 bits).
    pub fn from_pkcs8(der: &[u8], rng: &dyn SecureRandom) -> Result<Self, SignError> {
        for (p384, der_alg, fixed_alg) in [
            (
                false,
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            ),
            (
                true,
                &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            ),
        ] {
            if let Ok(der_key) = EcdsaKeyPair::from_pkcs8(der_alg, der, rng) {
                let fixed = EcdsaKeyPair::from_pkcs8(fixed_alg, der, rng)
                    .map_err(|e| SignError::BadPrivateKey(e.to_string()))?;
                return Ok(Self {
                    kind: KeyKind::Ecdsa {
                        p384,
                        der: Box::new(der_key),
                        fixed: Box::new(fixed),
                    },
                });
            }
        }
        RsaKeyPair::from_pkcs8(der)
            .map(|k| Self {
                kind: KeyKind::Rsa(Box::new(k)),
            })
            .map_err(|e| SignError::BadPrivateKey(e.to_string()))
    }

    /// An RSA key from PKCS#1 RSAPrivateKey DER.
    pub fn from_rsa_der(der: &[u8]) -> Result<Self, SignError> {
        RsaKeyPair::from_der(der)
            .map(|k| Self {
                kind: KeyKind::Rsa(Box::new(k)),
            })
            .map_err(|e| SignError::BadPrivateKey(e.to_string()))
    }

    /// The RFC 7427 scheme used by [`SigningKey::auth_data`] for method 14: the curve's own
    /// hash for ECDSA, PKCS#1 v1.5 with SHA-256 for RSA (what strongSwan sends by default).
    pub fn default_scheme(&self) -> SignatureScheme {
        match &self.kind {
            KeyKind::Ecdsa { p384: false, .. } => SignatureScheme::EcdsaP256Sha256,
            KeyKind::Ecdsa { p384: true, .. } => SignatureScheme::EcdsaP384Sha384,
            KeyKind::Rsa(_) => SignatureScheme::RsaPkcs1Sha256,
        }
    }

    /// The classic method for this key (9 or 10 for ECDSA), or method 14 when there is none
    /// we can sign with (RSA: method 1 needs SHA-1).
    pub fn preferred_method(&self) -> AuthMethod {
        match &self.kind {
            KeyKind::Ecdsa { p384: false, .. } => AuthMethod::EcdsaSha256P256,
            KeyKind::Ecdsa { p384: true, .. } => AuthMethod::EcdsaSha384P384,
            KeyKind::Rsa(_) => AuthMethod::DigitalSignature,
        }
    }

    /// AUTH payload data (everything after the Auth Method and reserved bytes) for `method`
    /// over `octets` from [`signed_octets`]. Method 14 uses [`SigningKey::default_scheme`].
    pub fn auth_data(
        &self,
        method: AuthMethod,
        octets: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, SignError> {
        match (method, &self.kind) {
            (AuthMethod::DigitalSignature, _) => {
                self.auth_data_rfc7427(self.default_scheme(), octets, rng)
            }
            (
                AuthMethod::EcdsaSha256P256,
                KeyKind::Ecdsa {
                    p384: false, fixed, ..
                },
            )
            | (
                AuthMethod::EcdsaSha384P384,
                KeyKind::Ecdsa {
                    p384: true, fixed, ..
                },
            ) => fixed
                .sign(rng, octets)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignError::SigningFailed),
            _ => Err(SignError::MethodMismatch { method }),
        }
    }

    /// Method 14 AUTH data with an explicit scheme: `len | AlgorithmIdentifier | signature`.
    pub fn auth_data_rfc7427(
        &self,
        scheme: SignatureScheme,
        octets: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, SignError> {
        let mismatch = SignError::MethodMismatch {
            method: AuthMethod::DigitalSignature,
        };
        let signature = match (&self.kind, scheme) {
            (
                KeyKind::Ecdsa {
                    p384: false, der, ..
                },
                SignatureScheme::EcdsaP256Sha256,
            )
            | (
                KeyKind::Ecdsa {
                    p384: true, der, ..
                },
                SignatureScheme::EcdsaP384Sha384,
            ) => der
                .sign(rng, octets)
                .map_err(|_| SignError::SigningFailed)?
                .as_ref()
                .to_vec(),
            (KeyKind::Rsa(key), _) => {
                let padding: &'static dyn signature::RsaEncoding = match scheme {
                    SignatureScheme::RsaPkcs1Sha256 => &signature::RSA_PKCS1_SHA256,
                    SignatureScheme::RsaPkcs1Sha384 => &signature::RSA_PKCS1_SHA384,
                    SignatureScheme::RsaPkcs1Sha512 => &signature::RSA_PKCS1_SHA512,
                    SignatureScheme::RsaPssSha256 => &signature::RSA_PSS_SHA256,
                    _ => return Err(mismatch),
                };
                let mut sig = vec![0u8; key.public().modulus_len()];
                key.sign(padding, rng, octets, &mut sig)
                    .map_err(|_| SignError::SigningFailed)?;
                sig
            }
            _ => return Err(mismatch),
        };
        let alg_id = scheme.algorithm_identifier();
        let mut out = Vec::with_capacity(1 + alg_id.len() + signature.len());
        out.push(alg_id.len() as u8);
        out.extend_from_slice(alg_id);
        out.extend_from_slice(&signature);
        Ok(out)
    }
}

/// The kind of public key in a peer's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerKey {
    Rsa,
    P256,
    P384,
}

/// Verifies a signature AUTH payload (methods 1, 9, 10, 14) against the peer's public key,
/// given as the DER SubjectPublicKeyInfo from its certificate.
pub fn verify_auth(
    method: AuthMethod,
    spki_der: &[u8],
    octets: &[u8],
    auth_data: &[u8],
) -> Result<(), SignError> {
    let (key_kind, key_bytes) = parse_spki(spki_der)?;
    let mismatch = SignError::MethodMismatch { method };
    let (alg, signature): (&'static dyn VerificationAlgorithm, &[u8]) = match (method, key_kind) {
        (AuthMethod::RsaSig, PeerKey::Rsa) => (
            &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            auth_data,
        ),
        (AuthMethod::EcdsaSha256P256, PeerKey::P256) => {
            (&signature::ECDSA_P256_SHA256_FIXED, auth_data)
        }
        (AuthMethod::EcdsaSha384P384, PeerKey::P384) => {
            (&signature::ECDSA_P384_SHA384_FIXED, auth_data)
        }
        (AuthMethod::DigitalSignature, _) => {
            let (&len, rest) = auth_data.split_first().ok_or(SignError::Malformed)?;
            if rest.len() < usize::from(len) {
                return Err(SignError::Malformed);
            }
            let (alg_id, signature) = rest.split_at(usize::from(len));
            (rfc7427_algorithm(alg_id, key_kind)?, signature)
        }
        _ => return Err(mismatch),
    };
    UnparsedPublicKey::new(alg, key_bytes)
        .verify(octets, signature)
        .map_err(|_| SignError::BadSignature)
}

/// The key type and the bytes ring wants: PKCS#1 RSAPublicKey or an uncompressed point.
fn parse_spki(spki_der: &[u8]) -> Result<(PeerKey, &[u8]), SignError> {
    let (rest, spki) =
        SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| SignError::BadPublicKey)?;
    if !rest.is_empty() {
        return Err(SignError::BadPublicKey);
    }
    let alg = &spki.algorithm.algorithm;
    let kind = if *alg == OID_PKCS1_RSAENCRYPTION {
        PeerKey::Rsa
    } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or(SignError::BadPublicKey)?;
        if curve == OID_EC_P256 {
            PeerKey::P256
        } else if curve == OID_NIST_EC_P384 {
            PeerKey::P384
        } else {
            return Err(SignError::BadPublicKey);
        }
    } else {
        return Err(SignError::BadPublicKey);
    };
    // Borrow from the input rather than the parsed structure.
    let bits = spki.subject_public_key.data.len();
    let key = spki_der
        .get(spki_der.len().saturating_sub(bits)..)
        .filter(|k| *k == &*spki.subject_public_key.data)
        .ok_or(SignError::BadPublicKey)?;
    Ok((kind, key))
}

/// The ring verification algorithm for an RFC 7427 AlgorithmIdentifier and key type.
fn rfc7427_algorithm(
    alg_id: &[u8],
    key: PeerKey,
) -> Result<&'static dyn VerificationAlgorithm, SignError> {
    let (rest, alg) = AlgorithmIdentifier::from_der(alg_id).map_err(|_| SignError::Malformed)?;
    if !rest.is_empty() {
        return Err(SignError::Malformed);
    }
    let oid = &alg.algorithm;
    let unsupported = Err(SignError::UnsupportedAlgorithm);
    Ok(match key {
        PeerKey::P256 if *oid == OID_SIG_ECDSA_WITH_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
        PeerKey::P256 if *oid == OID_SIG_ECDSA_WITH_SHA384 => &signature::ECDSA_P256_SHA384_ASN1,
        PeerKey::P384 if *oid == OID_SIG_ECDSA_WITH_SHA256 => &signature::ECDSA_P384_SHA256_ASN1,
        PeerKey::P384 if *oid == OID_SIG_ECDSA_WITH_SHA384 => &signature::ECDSA_P384_SHA384_ASN1,
        PeerKey::Rsa if *oid == OID_PKCS1_SHA256WITHRSA => &signature::RSA_PKCS1_2048_8192_SHA256,
        PeerKey::Rsa if *oid == OID_PKCS1_SHA384WITHRSA => &signature::RSA_PKCS1_2048_8192_SHA384,
        PeerKey::Rsa if *oid == OID_PKCS1_SHA512WITHRSA => &signature::RSA_PKCS1_2048_8192_SHA512,
        PeerKey::Rsa if *oid == OID_PKCS1_RSASSAPSS => {
            let Ok(SignatureAlgorithm::RSASSA_PSS(params)) = SignatureAlgorithm::try_from(&alg)
            else {
                return Err(SignError::Malformed);
            };
            let hash = params.hash_algorithm_oid();
            let mgf_hash_matches = params
                .mask_gen_algorithm()
                .is_ok_and(|mgf| mgf.hash == *hash);
            // ring verifies PSS with MGF1 over the same hash and salt length = hash length.
            match (params.salt_length(), mgf_hash_matches) {
                (32, true) if *hash == OID_NIST_HASH_SHA256 => &signature::RSA_PSS_2048_8192_SHA256,
                (48, true) if *hash == OID_NIST_HASH_SHA384 => &signature::RSA_PSS_2048_8192_SHA384,
                (64, true) if *hash == OID_NIST_HASH_SHA512 => &signature::RSA_PSS_2048_8192_SHA512,
                _ => return unsupported,
            }
        }
        _ => return unsupported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PK8: &[u8] = include_bytes!("testdata/rsa2048.pk8");
    const RSA_PK1: &[u8] = include_bytes!("testdata/rsa2048.pk1");
    const RSA_SPKI: &[u8] = include_bytes!("testdata/rsa2048.spki");
    /// `openssl dgst -sha256 -sign` over [`MSG`].
    const RSA_SIG: &[u8] = include_bytes!("testdata/rsa2048_pkcs1_sha256.sig");
    const P256_PK8: &[u8] = include_bytes!("testdata/p256.pk8");
    const P256_SPKI: &[u8] = include_bytes!("testdata/p256.spki");
    /// `openssl dgst -sha256 -sign` (DER ECDSA) over [`MSG`].
    const P256_SIG: &[u8] = include_bytes!("testdata/p256_sha256.sig");
    const MSG: &[u8] = b"IKE_SA_INIT message | Nonce | prf(SK_p, ID)";

    // Tests may use the OS generator; the engine proper takes it as a parameter.
    #[allow(clippy::disallowed_methods)]
    fn rng() -> ring::rand::SystemRandom {
        ring::rand::SystemRandom::new()
    }

    fn rfc7427(scheme: SignatureScheme, sig: &[u8]) -> Vec<u8> {
        let id = scheme.algorithm_identifier();
        [&[id.len() as u8][..], id, sig].concat()
    }

    #[test]
    fn signed_octets_layout() {
        let prf = Prf::HmacSha256;
        let octets = signed_octets(prf, b"skp", b"message", b"nonce", b"\x03\0\0\0id");
        let mac = prf.prf(b"skp", b"\x03\0\0\0id");
        assert_eq!(octets, [&b"messagenonce"[..], &mac].concat());
    }

    #[test]
    fn psk_auth_matches_rfc7296_formula() {
        let prf = Prf::HmacSha1;
        let key = prf.prf(b"secret", b"Key Pad for IKEv2");
        let expected = prf.prf(&key, b"octets");
        assert_eq!(psk_auth(prf, b"secret", b"octets"), expected);
        verify_psk_auth(prf, b"secret", b"octets", &expected).unwrap();
        assert_eq!(
            verify_psk_auth(prf, b"Secret", b"octets", &expected),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            verify_psk_auth(prf, b"secret", b"octets", &expected[..19]),
            Err(SignError::BadSignature)
        );
    }

    #[test]
    fn rsa_pkcs1_known_answer_from_openssl() {
        let key = SigningKey::from_pkcs8(RSA_PK8, &rng()).unwrap();
        let ours = key
            .auth_data(AuthMethod::DigitalSignature, MSG, &rng())
            .unwrap();
        // PKCS#1 v1.5 is deterministic: byte-identical to OpenSSL's signature.
        assert_eq!(ours, rfc7427(SignatureScheme::RsaPkcs1Sha256, RSA_SIG));
        let pkcs1 = SigningKey::from_rsa_der(RSA_PK1).unwrap();
        assert_eq!(
            pkcs1
                .auth_data(AuthMethod::DigitalSignature, MSG, &rng())
                .unwrap(),
            ours
        );
        verify_auth(AuthMethod::DigitalSignature, RSA_SPKI, MSG, &ours).unwrap();
        assert_eq!(
            verify_auth(AuthMethod::DigitalSignature, RSA_SPKI, b"other", &ours),
            Err(SignError::BadSignature)
        );
    }

    #[test]
    fn rsa_all_schemes_round_trip() {
        let key = SigningKey::from_pkcs8(RSA_PK8, &rng()).unwrap();
        for scheme in [
            SignatureScheme::RsaPkcs1Sha256,
            SignatureScheme::RsaPkcs1Sha384,
            SignatureScheme::RsaPkcs1Sha512,
            SignatureScheme::RsaPssSha256,
        ] {
            let data = key.auth_data_rfc7427(scheme, MSG, &rng()).unwrap();
            verify_auth(AuthMethod::DigitalSignature, RSA_SPKI, MSG, &data)
                .unwrap_or_else(|e| panic!("{scheme:?}: {e}"));
            let mut bad = data.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert_eq!(
                verify_auth(AuthMethod::DigitalSignature, RSA_SPKI, MSG, &bad),
                Err(SignError::BadSignature)
            );
        }
        assert!(matches!(
            key.auth_data_rfc7427(SignatureScheme::EcdsaP256Sha256, MSG, &rng()),
            Err(SignError::MethodMismatch { .. })
        ));
        assert!(matches!(
            key.auth_data(AuthMethod::RsaSig, MSG, &rng()),
            Err(SignError::MethodMismatch { .. })
        ));
    }

    #[test]
    fn ecdsa_verifies_openssl_signature_and_round_trips() {
        let data = rfc7427(SignatureScheme::EcdsaP256Sha256, P256_SIG);
        verify_auth(AuthMethod::DigitalSignature, P256_SPKI, MSG, &data).unwrap();

        let key = SigningKey::from_pkcs8(P256_PK8, &rng()).unwrap();
        assert_eq!(key.preferred_method(), AuthMethod::EcdsaSha256P256);
        let classic = key
            .auth_data(AuthMethod::EcdsaSha256P256, MSG, &rng())
            .unwrap();
        assert_eq!(classic.len(), 64, "RFC 4754: raw r | s");
        verify_auth(AuthMethod::EcdsaSha256P256, P256_SPKI, MSG, &classic).unwrap();
        let modern = key
            .auth_data(AuthMethod::DigitalSignature, MSG, &rng())
            .unwrap();
        verify_auth(AuthMethod::DigitalSignature, P256_SPKI, MSG, &modern).unwrap();
        // Wrong method for the key, and a raw signature presented as method 14.
        assert!(matches!(
            verify_auth(AuthMethod::EcdsaSha384P384, P256_SPKI, MSG, &classic),
            Err(SignError::MethodMismatch { .. })
        ));
        assert!(verify_auth(AuthMethod::DigitalSignature, P256_SPKI, MSG, &classic).is_err());
        assert!(matches!(
            verify_auth(AuthMethod::DigitalSignature, RSA_SPKI, MSG, &modern),
            Err(SignError::UnsupportedAlgorithm)
        ));
    }

    #[test]
    fn ecdsa_p384_from_rcgen_key() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let key = SigningKey::from_pkcs8(&kp.serialize_der(), &rng()).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
        for method in [AuthMethod::EcdsaSha384P384, AuthMethod::DigitalSignature] {
            let data = key.auth_data(method, MSG, &rng()).unwrap();
            verify_auth(method, &spki, MSG, &data).unwrap();
            assert_eq!(
                verify_auth(method, &spki, b"tampered", &data),
                Err(SignError::BadSignature)
            );
        }
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        for data in [&[][..], &[200, 1, 2], &[3, 0x30, 0x01, 0x00], &[0]] {
            assert!(verify_auth(AuthMethod::DigitalSignature, P256_SPKI, MSG, data).is_err());
        }
        assert_eq!(
            verify_auth(AuthMethod::DigitalSignature, b"\x30\x00", MSG, &[0]),
            Err(SignError::BadPublicKey)
        );
        assert_eq!(
            verify_auth(AuthMethod::SharedKeyMic, P256_SPKI, MSG, &[0; 32]),
            Err(SignError::MethodMismatch {
                method: AuthMethod::SharedKeyMic
            })
        );
        assert!(SigningKey::from_pkcs8(b"not a key", &rng()).is_err());
        // SHA-1 RSA under method 14 is refused.
        let sha1_rsa = [
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05,
            0x00,
        ];
        let data = [&[15u8][..], &sha1_rsa, RSA_SIG].concat();
        assert_eq!(
            verify_auth(AuthMethod::DigitalSignature, RSA_SPKI, MSG, &data),
            Err(SignError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn auth_method_ids() {
        for id in 0..=255u8 {
            if let Some(m) = AuthMethod::from_id(id) {
                assert_eq!(m.id(), id);
            }
        }
        assert_eq!(AuthMethod::from_id(14), Some(AuthMethod::DigitalSignature));
    }
}
