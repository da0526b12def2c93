//! Certificate signing requests: the key stays on the device, we only sign its public half.

use rcgen::SubjectPublicKeyInfo;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::error::{PkiError, Result};

/// Smallest RSA modulus we sign.
const MIN_RSA_BITS: usize = 2048;

/// Parses a PKCS#10 request (PEM or DER), verifies its self-signature - proof that the
/// requester holds the private key - and returns its public key.
///
/// The subject and requested extensions are ignored on purpose: the CA decides the name,
/// key usages and lifetime of every certificate it issues.
pub fn verified_public_key(csr: &[u8]) -> Result<SubjectPublicKeyInfo> {
    let der = to_der(csr)?;
    let (rest, request) =
        X509CertificationRequest::from_der(&der).map_err(|e| PkiError::CsrUnreadable {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(PkiError::CsrUnreadable {
            reason: "trailing bytes after the request".into(),
        });
    }
    let spki = &request.certification_request_info.subject_pki;
    let unsupported = |reason: String| PkiError::CsrUnsupportedKey { reason };
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(unsupported("malformed RSA key".into()));
        };
        let modulus = rsa.modulus;
        let first = modulus
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(modulus.len());
        let bits = (modulus.len() - first) * 8;
        if bits < MIN_RSA_BITS {
            return Err(unsupported(format!("RSA key of {bits} bits")));
        }
    } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 => {}
            Some(c) => return Err(unsupported(format!("ECDSA key on curve {c}"))),
            None => return Err(unsupported("ECDSA key without a named curve".into())),
        }
    } else if *alg != OID_SIG_ED25519 {
        return Err(unsupported(format!("key algorithm {alg}")));
    }
    // Key checks first: ring refuses to verify signatures of RSA keys under 2048 bits, and
    // "key too small" is the useful message for those.
    request
        .verify_signature()
        .map_err(|_| PkiError::CsrBadSignature)?;
    SubjectPublicKeyInfo::from_der(spki.raw).map_err(|e| unsupported(e.to_string()))
}

/// PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) or DER in, DER out.
fn to_der(csr: &[u8]) -> Result<Vec<u8>> {
    let trimmed = csr.trim_ascii_start();
    if !trimmed.starts_with(b"-----BEGIN") {
        return Ok(csr.to_vec());
    }
    let block = pem::parse(trimmed).map_err(|e| PkiError::CsrUnreadable {
        reason: e.to_string(),
    })?;
    match block.tag() {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => Ok(block.into_contents()),
        other => Err(PkiError::CsrUnreadable {
            reason: format!("the PEM block is a {other:?}, not a CERTIFICATE REQUEST"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        CertificateParams, CertificateSigningRequestParams, KeyPair, PKCS_ECDSA_P384_SHA384,
    };

    fn csr_der(key: &KeyPair) -> Vec<u8> {
        let params = CertificateParams::new(vec!["device.example".to_string()]).unwrap();
        params.serialize_request(key).unwrap().der().to_vec()
    }

    /// Flips a bit in the signature (the last bytes of the DER).
    fn tamper(mut der: Vec<u8>) -> Vec<u8> {
        let last = der.len() - 1;
        der[last] ^= 0x01;
        der
    }

    #[test]
    fn a_valid_csr_yields_its_key() {
        let key = KeyPair::generate().unwrap();
        let der = csr_der(&key);
        let spki = verified_public_key(&der).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(spki.der_bytes(), key.public_key_raw());

        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", csr_der(&key)));
        verified_public_key(pem.as_bytes()).unwrap();
    }

    #[test]
    fn a_tampered_csr_is_rejected() {
        let key = KeyPair::generate().unwrap();
        let bad = tamper(csr_der(&key));
        assert!(matches!(
            verified_public_key(&bad),
            Err(PkiError::CsrBadSignature)
        ));
        // rcgen's own parser verifies too (with the x509-parser + ring features).
        assert!(CertificateSigningRequestParams::from_der(&bad.as_slice().into()).is_err());
        let good = csr_der(&key);
        assert!(CertificateSigningRequestParams::from_der(&good.as_slice().into()).is_ok());
    }

    #[test]
    fn garbage_is_unreadable() {
        assert!(matches!(
            verified_public_key(b"hello"),
            Err(PkiError::CsrUnreadable { .. })
        ));
        assert!(matches!(
            verified_public_key(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(PkiError::CsrUnreadable { .. })
        ));
    }
}
