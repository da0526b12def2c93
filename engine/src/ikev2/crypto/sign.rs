//! AUTH payload computation and verification (RFC 7296 section 2.15, RFC 4754, RFC 7427).
//!
//! Signatures come from ring. ring's ECDSA and RSA signers need a
//! `ring::rand::SecureRandom`, which is sealed and so cannot wrap our
//! [`Entropy`](crate::entropy::Entropy): callers pass one (drivers: `SystemRandom`).
//!
//! ring has no P-521, so peers with P-521 keys (method 11, or method 14 with ECDSA) are
//! verified with the RustCrypto `p521` crate. We only verify P-521; we never sign with it.

use p521::ecdsa::signature::hazmat::PrehashVerifier;
use ring::digest;
use ring::rand::SecureRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_NIST_HASH_SHA256, OID_NIST_HASH_SHA384, OID_NIST_HASH_SHA512, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ECDSA_WITH_SHA512,
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
    /// The peer's public key is not an RSA, P-256, P-384 or P-521 SubjectPublicKeyInfo.
    #[error("unsupported or malformed public key in the peer's certificate")]
    BadPublicKey,
    /// The method does not fit this key or is not one we sign or verify with.
    #[error("authentication method {method:?} cannot be used with this key")]
    MethodMismatch {
        /// The requested or received method.
        method: AuthMethod,
    },
    /// RFC 7427 AUTH data names a signature algorithm we do not accept (SHA-1, a hash or
    /// padding that does not fit the key...).
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
    /// ECDSA with SHA-512 on P-521 (11), RFC 4754: raw r | s (66 + 66 bytes). Verified
    /// only; we never sign with P-521.
    EcdsaSha512P521,
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
            AuthMethod::EcdsaSha512P521 => 11,
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
            AuthMethod::EcdsaSha512P521,
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
    /// Verified with the `p521` crate, not ring.
    P521,
}

/// How to check a signature: with ring, or (P-521) with the `p521` crate over a digest
/// computed by ring.
enum Check {
    Ring(&'static dyn VerificationAlgorithm),
    P521 {
        hash: &'static digest::Algorithm,
        /// RFC 7427 DER `Ecdsa-Sig-Value`; otherwise RFC 4754 raw `r | s`.
        der: bool,
    },
}

/// Verifies a signature AUTH payload (methods 1, 9, 10, 11, 14) against the peer's public
/// key, given as the DER SubjectPublicKeyInfo from its certificate.
pub fn verify_auth(
    method: AuthMethod,
    spki_der: &[u8],
    octets: &[u8],
    auth_data: &[u8],
) -> Result<(), SignError> {
    let (key_kind, key_bytes) = parse_spki(spki_der)?;
    let mismatch = SignError::MethodMismatch { method };
    let (check, signature) = match (method, key_kind) {
        (AuthMethod::RsaSig, PeerKey::Rsa) => (
            Check::Ring(&signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY),
            auth_data,
        ),
        (AuthMethod::EcdsaSha256P256, PeerKey::P256) => {
            (Check::Ring(&signature::ECDSA_P256_SHA256_FIXED), auth_data)
        }
        (AuthMethod::EcdsaSha384P384, PeerKey::P384) => {
            (Check::Ring(&signature::ECDSA_P384_SHA384_FIXED), auth_data)
        }
        (AuthMethod::EcdsaSha512P521, PeerKey::P521) => (
            Check::P521 {
                hash: &digest::SHA512,
                der: false,
            },
            auth_data,
        ),
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
    match check {
        Check::Ring(alg) => UnparsedPublicKey::new(alg, key_bytes)
            .verify(octets, signature)
            .map_err(|_| SignError::BadSignature),
        Check::P521 { hash, der } => verify_p521(key_bytes, hash, der, octets, signature),
    }
}

/// ECDSA on P-521 over `hash(octets)`. `point` is the SEC1 point from the certificate.
fn verify_p521(
    point: &[u8],
    hash: &'static digest::Algorithm,
    der: bool,
    octets: &[u8],
    signature: &[u8],
) -> Result<(), SignError> {
    let key =
        p521::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| SignError::BadPublicKey)?;
    // Both parsers reject r or s out of range (zero or >= n); the raw form must be exactly
    // 2 * 66 bytes.
    let signature = if der {
        p521::ecdsa::Signature::from_der(signature)
    } else {
        p521::ecdsa::Signature::from_slice(signature)
    }
    .map_err(|_| SignError::BadSignature)?;
    key.verify_prehash(digest::digest(hash, octets).as_ref(), &signature)
        .map_err(|_| SignError::BadSignature)
}

/// The key type and its bytes: PKCS#1 RSAPublicKey or an uncompressed SEC1 point.
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
        } else if curve == OID_NIST_EC_P521 {
            PeerKey::P521
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

/// How to verify an RFC 7427 AlgorithmIdentifier's signature with this key type.
fn rfc7427_algorithm(alg_id: &[u8], key: PeerKey) -> Result<Check, SignError> {
    let (rest, alg) = AlgorithmIdentifier::from_der(alg_id).map_err(|_| SignError::Malformed)?;
    if !rest.is_empty() {
        return Err(SignError::Malformed);
    }
    let oid = &alg.algorithm;
    let unsupported = Err(SignError::UnsupportedAlgorithm);
    if key == PeerKey::P521 {
        // RFC 7427 lets the hash differ from the curve's; strongSwan picks SHA-512 for P-521
        // unless the peer's SIGNATURE_HASH_ALGORITHMS lacks it.
        let hash = if *oid == OID_SIG_ECDSA_WITH_SHA512 {
            &digest::SHA512
        } else if *oid == OID_SIG_ECDSA_WITH_SHA384 {
            &digest::SHA384
        } else if *oid == OID_SIG_ECDSA_WITH_SHA256 {
            &digest::SHA256
        } else {
            return unsupported;
        };
        return Ok(Check::P521 { hash, der: true });
    }
    Ok(Check::Ring(match key {
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
    }))
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
    /// `openssl ecparam -name secp521r1 -genkey`, public half (the private key is not kept:
    /// we never sign with P-521).
    const P521_SPKI: &[u8] = include_bytes!("testdata/p521.spki");
    /// `openssl dgst -sha512 -sign` (DER ECDSA) over [`MSG`] with the P-521 key.
    const P521_SHA512_SIG: &[u8] = include_bytes!("testdata/p521_sha512.sig");
    /// `openssl dgst -sha384 -sign` (DER ECDSA) over [`MSG`] with the P-521 key.
    const P521_SHA384_SIG: &[u8] = include_bytes!("testdata/p521_sha384.sig");
    /// Another `openssl dgst -sha512 -sign` over [`MSG`], converted from DER to RFC 4754
    /// raw r | s (66 + 66 bytes; its r was 65 bytes, so this also checks the zero padding).
    const P521_SHA512_RAW: &[u8] = include_bytes!("testdata/p521_sha512_raw.sig");
    /// Self-signed P-256 CA (`openssl req -x509`, 100 years from 2026-11-24).
    const P256_CA: &[u8] = include_bytes!("testdata/p256_ca.der");
    /// End-entity certificate for the P-521 key, issued by [`P256_CA`] (ecdsa-with-SHA256),
    /// CN "p521-peer", EKU clientAuth.
    const P521_EE: &[u8] = include_bytes!("testdata/p521_ee.der");

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

    /// Method 14 data with an AlgorithmIdentifier from the wire codec (we have no P-521
    /// [`SignatureScheme`]: we never sign with P-521).
    fn rfc7427_p521(alg_id: &[u8], sig: &[u8]) -> Vec<u8> {
        [&[alg_id.len() as u8][..], alg_id, sig].concat()
    }

    #[test]
    fn p521_method_11_verifies_openssl_signature() {
        use crate::wire::ikev2::AuthMethod as WireMethod;
        let method = AuthMethod::from_id(WireMethod::ECDSA_SHA512_P521.0).unwrap();
        assert_eq!(method, AuthMethod::EcdsaSha512P521);
        assert_eq!(P521_SHA512_RAW.len(), 132);
        verify_auth(method, P521_SPKI, MSG, P521_SHA512_RAW).unwrap();
        assert_eq!(
            verify_auth(method, P521_SPKI, b"other octets", P521_SHA512_RAW),
            Err(SignError::BadSignature)
        );
        // Any flipped bit in r or in s.
        for i in [0, 1, 65, 66, 67, 131] {
            let mut bad = P521_SHA512_RAW.to_vec();
            bad[i] ^= 1;
            assert_eq!(
                verify_auth(method, P521_SPKI, MSG, &bad),
                Err(SignError::BadSignature),
                "byte {i}"
            );
        }
        // Wrong length, the DER form, r and s out of range: rejected, no panic.
        let too_big = [0xff; 132];
        for bad in [
            &P521_SHA512_RAW[..131],
            &[P521_SHA512_RAW, &[0]].concat(),
            P521_SHA512_SIG,
            &[0; 132],
            &too_big,
            &[],
        ] {
            assert_eq!(
                verify_auth(method, P521_SPKI, MSG, bad),
                Err(SignError::BadSignature)
            );
        }
    }

    #[test]
    fn p521_method_14_verifies_openssl_der_signatures() {
        use crate::wire::ikev2::auth::{DER_ECDSA_WITH_SHA256, DER_ECDSA_WITH_SHA384};
        use crate::wire::ikev2::auth::{DER_ECDSA_WITH_SHA512, DER_SHA512_WITH_RSA};
        let m = AuthMethod::DigitalSignature;
        let sha512 = rfc7427_p521(DER_ECDSA_WITH_SHA512, P521_SHA512_SIG);
        verify_auth(m, P521_SPKI, MSG, &sha512).unwrap();
        // RFC 7427 allows another hash with the curve; strongSwan uses one when we do not
        // advertise SHA-512.
        let sha384 = rfc7427_p521(DER_ECDSA_WITH_SHA384, P521_SHA384_SIG);
        verify_auth(m, P521_SPKI, MSG, &sha384).unwrap();

        assert_eq!(
            verify_auth(m, P521_SPKI, b"other octets", &sha512),
            Err(SignError::BadSignature)
        );
        let mut bad = sha512.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            verify_auth(m, P521_SPKI, MSG, &bad),
            Err(SignError::BadSignature)
        );
        // The hash named must be the hash signed.
        for (alg, sig) in [
            (DER_ECDSA_WITH_SHA384, P521_SHA512_SIG),
            (DER_ECDSA_WITH_SHA256, P521_SHA512_SIG),
            (DER_ECDSA_WITH_SHA512, P521_SHA384_SIG),
        ] {
            assert_eq!(
                verify_auth(m, P521_SPKI, MSG, &rfc7427_p521(alg, sig)),
                Err(SignError::BadSignature)
            );
        }
        // A raw r | s where DER is expected, and DER with trailing garbage.
        for sig in [P521_SHA512_RAW, &[P521_SHA512_SIG, &[0]].concat()] {
            assert_eq!(
                verify_auth(m, P521_SPKI, MSG, &rfc7427_p521(DER_ECDSA_WITH_SHA512, sig)),
                Err(SignError::BadSignature)
            );
        }
        // An RSA algorithm on an EC key.
        assert_eq!(
            verify_auth(
                m,
                P521_SPKI,
                MSG,
                &rfc7427_p521(DER_SHA512_WITH_RSA, P521_SHA512_SIG)
            ),
            Err(SignError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn p521_wrong_method_or_key_is_refused() {
        use crate::wire::ikev2::auth::DER_ECDSA_WITH_SHA512;
        use p521::ecdsa::signature::Signer;
        let method_11 = AuthMethod::EcdsaSha512P521;
        // Method 11 needs a P-521 key, and a P-521 key no other classic method.
        for spki in [P256_SPKI, RSA_SPKI] {
            assert_eq!(
                verify_auth(method_11, spki, MSG, P521_SHA512_RAW),
                Err(SignError::MethodMismatch { method: method_11 })
            );
        }
        for method in [
            AuthMethod::RsaSig,
            AuthMethod::EcdsaSha256P256,
            AuthMethod::EcdsaSha384P384,
        ] {
            assert_eq!(
                verify_auth(method, P521_SPKI, MSG, P521_SHA512_RAW),
                Err(SignError::MethodMismatch { method })
            );
        }
        // A P-256 signature presented for the P-521 key, and the other way round.
        assert_eq!(
            verify_auth(
                AuthMethod::DigitalSignature,
                P521_SPKI,
                MSG,
                &rfc7427(SignatureScheme::EcdsaP256Sha256, P256_SIG)
            ),
            Err(SignError::BadSignature)
        );
        assert!(
            verify_auth(
                AuthMethod::DigitalSignature,
                P256_SPKI,
                MSG,
                &rfc7427_p521(DER_ECDSA_WITH_SHA512, P521_SHA512_SIG)
            )
            .is_err()
        );

        // Another P-521 key (fixed scalar): its own signatures verify, openssl's do not.
        let mut scalar = [7u8; 66];
        scalar[0] = 0;
        let other = p521::ecdsa::SigningKey::from_slice(&scalar).unwrap();
        let point = other.verifying_key().to_sec1_point(false);
        // The SPKI header (algorithm + BIT STRING tag, length, unused bits) is the same.
        let header = &P521_SPKI[..P521_SPKI.len() - point.as_bytes().len()];
        let other_spki = [header, point.as_bytes()].concat();
        let sig: p521::ecdsa::Signature = other.sign(MSG);
        verify_auth(method_11, &other_spki, MSG, sig.to_bytes().as_slice()).unwrap();
        let der = rfc7427_p521(DER_ECDSA_WITH_SHA512, sig.to_der().as_bytes());
        verify_auth(AuthMethod::DigitalSignature, &other_spki, MSG, &der).unwrap();
        assert_eq!(
            verify_auth(method_11, P521_SPKI, MSG, sig.to_bytes().as_slice()),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            verify_auth(method_11, &other_spki, MSG, P521_SHA512_RAW),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            verify_auth(
                AuthMethod::DigitalSignature,
                &other_spki,
                MSG,
                &rfc7427_p521(DER_ECDSA_WITH_SHA512, P521_SHA512_SIG)
            ),
            Err(SignError::BadSignature)
        );
        // A point not on the curve.
        let mut off_curve = other_spki.clone();
        *off_curve.last_mut().unwrap() ^= 1;
        assert_eq!(
            verify_auth(method_11, &off_curve, MSG, sig.to_bytes().as_slice()),
            Err(SignError::BadPublicKey)
        );
    }

    #[test]
    fn p521_end_entity_from_p256_ca_passes_webpki_and_verifies_auth() {
        use crate::ikev2::peer_cert::PeerTrust;
        use rustls::pki_types::{CertificateDer, UnixTime};
        // webpki (ring) cannot check signatures *made by* a P-521 key, but only the CA's
        // P-256 signature over the certificate is checked; the P-521 key is ours to use.
        let trust = PeerTrust {
            roots: vec![CertificateDer::from(P256_CA)],
            crls: vec![],
        };
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000));
        let peer = trust
            .verify(&[CertificateDer::from(P521_EE)], now, true)
            .unwrap();
        assert_eq!(peer.name, "p521-peer");
        assert_eq!(peer.spki, P521_SPKI);
        verify_auth(
            AuthMethod::EcdsaSha512P521,
            &peer.spki,
            MSG,
            P521_SHA512_RAW,
        )
        .unwrap();
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
        assert_eq!(AuthMethod::from_id(11), Some(AuthMethod::EcdsaSha512P521));
    }
}
