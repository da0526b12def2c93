//! What the gateway refuses in a peer's certificate beyond what webpki checks, with the reason
//! an operator reads in the log: a SHA-1 (or MD5) signature, an RSA key under 2048 bits, a CA
//! certificate presented as a client's (or a gateway's), a self-signed certificate.
//!
//! webpki alone would refuse a SHA-1 signature as an "unsupported signature algorithm", a CA
//! certificate as `CaUsedAsEndEntity` and a self-signed certificate as "unknown issuer", and it
//! accepts an RSA-1024 key certified by an ECDSA CA (the refusal then comes later, as a bad
//! handshake signature). Both OpenVPN's TLS verifier and IKEv2's peer-certificate check run
//! [`check_chain`] first, so every protocol gives the same precise reason.

use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;

/// Smallest RSA modulus the gateway accepts, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Signature algorithms refused for their broken hash: (OID, name).
const WEAK_SIGNATURES: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.5", "SHA-1"), // sha1WithRSAEncryption
    ("1.2.840.10045.4.1", "SHA-1"),    // ecdsa-with-SHA1
    ("1.2.840.10040.4.3", "SHA-1"),    // dsa-with-sha1
    ("1.3.14.3.2.29", "SHA-1"),        // sha1WithRSASignature (OIW)
    ("1.2.840.113549.1.1.4", "MD5"),   // md5WithRSAEncryption
    ("1.2.840.113549.1.1.2", "MD2"),   // md2WithRSAEncryption
];

/// Whose certificate is checked: it decides the words of the CA-certificate refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A P2S client's (OpenVPN, IKEv2).
    Client,
    /// A gateway's or a certificate-authenticated site's.
    Server,
}

/// Checks `end_entity` and `intermediates` (DER) for what webpki does not explain well. Returns
/// the refusal reason, or `None` when webpki's own checks (chain, validity, EKU, CRL) should
/// decide. Certificates that do not parse are left to webpki.
pub fn check_chain(end_entity: &[u8], intermediates: &[&[u8]], role: Role) -> Option<String> {
    let Ok((_, ee)) = x509_parser::parse_x509_certificate(end_entity) else {
        return None;
    };
    if is_ca(&ee) {
        return Some(match role {
            Role::Client => "CA certificate used as a client certificate".into(),
            Role::Server => "CA certificate used as a gateway certificate".into(),
        });
    }
    if ee.subject().as_raw() == ee.issuer().as_raw() && signs_itself(&ee) {
        return Some("self-signed certificate (not issued by this gateway's CA)".into());
    }
    if let Some(reason) = weak_key(&ee) {
        return Some(reason);
    }
    if let Some(hash) = weak_signature(&ee) {
        return Some(format!(
            "certificate signed with {hash} (a broken hash; reissue it with SHA-256)"
        ));
    }
    for der in intermediates {
        let Ok((_, ca)) = x509_parser::parse_x509_certificate(der) else {
            continue;
        };
        if let Some(hash) = weak_signature(&ca) {
            return Some(format!(
                "intermediate CA certificate signed with {hash} (a broken hash)"
            ));
        }
        if let Some(reason) = weak_key(&ca) {
            return Some(format!("intermediate CA: {reason}"));
        }
    }
    None
}

/// Does the certificate's own key verify its signature? (A leaf whose subject merely equals
/// its issuer - a client named like the CA - is not self-signed.) Signature algorithms this
/// cannot check count as self-signed: the names already match.
fn signs_itself(cert: &X509Certificate<'_>) -> bool {
    use ring::signature as sig;
    let algs: &[&'static dyn sig::VerificationAlgorithm] =
        match cert.signature_algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.10045.4.3.2" => &[&sig::ECDSA_P256_SHA256_ASN1, &sig::ECDSA_P384_SHA256_ASN1],
            "1.2.840.10045.4.3.3" => &[&sig::ECDSA_P384_SHA384_ASN1, &sig::ECDSA_P256_SHA384_ASN1],
            "1.2.840.113549.1.1.11" => &[&sig::RSA_PKCS1_2048_8192_SHA256],
            "1.2.840.113549.1.1.12" => &[&sig::RSA_PKCS1_2048_8192_SHA384],
            "1.2.840.113549.1.1.13" => &[&sig::RSA_PKCS1_2048_8192_SHA512],
            "1.3.101.112" => &[&sig::ED25519],
            _ => return true,
        };
    let key = &cert.public_key().subject_public_key.data;
    let signed: &[u8] = cert.tbs_certificate.as_ref();
    let signature = &cert.signature_value.data;
    algs.iter().any(|alg| {
        sig::UnparsedPublicKey::new(*alg, key.as_ref())
            .verify(signed, signature)
            .is_ok()
    })
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
}

fn weak_signature(cert: &X509Certificate<'_>) -> Option<&'static str> {
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    WEAK_SIGNATURES
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, name)| *name)
}

fn weak_key(cert: &X509Certificate<'_>) -> Option<String> {
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            (bits < MIN_RSA_BITS)
                .then(|| format!("RSA key too small ({bits} bits; at least {MIN_RSA_BITS})"))
        }
        Ok(PublicKey::DSA(_)) => Some("DSA keys are not accepted".into()),
        _ => None,
    }
}
