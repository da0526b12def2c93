//! The bad-certificate matrix (issue 14), shared by the OpenVPN and IKEv2 tests: every kind
//! of client certificate the gateway must refuse, with the words its refusal must contain, and
//! a chain through an intermediate CA that it must accept. Each protocol's test runs the same
//! table against its own gateway session.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber, SubjectPublicKeyInfo, date_time_ymd,
};
use rustls::pki_types::CertificateDer;

/// The serial of the revoked case: the tests' CRL lists it.
pub const REVOKED_SERIAL: u64 = 4242;

/// A 1024-bit RSA public key (SubjectPublicKeyInfo). Its private key is not needed: the
/// gateway refuses the certificate before any signature by that key is checked, and ring can
/// neither make nor load RSA keys that small.
const RSA1024_SPKI_B64: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDnkfcl1Fr9EPMOtHZdWfCkJKfeAc/tJT6HDeICAmkNCtxLp/OMueNdyghb/iPUZmIZjhPfqA4poMLFCm8UYkLFz841qFl+DGcExM/5V8aanFewoomPqhn+wjBO/yPtNDfDhCZHIAlKs+V6Vv8ifbkLTADH1B4QLjqDXeSlOp5KKQIDAQAB";

/// One row of the matrix.
pub struct Case {
    /// Short name (also the certificate's CN).
    pub name: &'static str,
    /// What the client presents, end entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The client's PKCS#8 key. For `rsa1024` a P-256 key that does not match the
    /// certificate (the refusal comes first).
    pub key: Vec<u8>,
    /// `None`: must be accepted; `Some(words)`: refused with a reason containing each word.
    pub refused: Option<&'static [&'static str]>,
    /// CRLs beside the root's that the gateway needs: an intermediate CA's (with a CRL in
    /// force, webpki wants the revocation status of every certificate in the chain).
    pub extra_crls: Vec<Vec<u8>>,
}

thread_local! {
    /// The EKU the matrix's good certificates carry: clientAuth (P2S clients) or serverAuth
    /// (certificate-authenticated sites).
    static SITE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn right_eku() -> ExtendedKeyUsagePurpose {
    if SITE.get() {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }
}

fn wrong_eku() -> ExtendedKeyUsagePurpose {
    if SITE.get() {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }
}

/// The matrix for certificate-authenticated sites: the good certificates carry serverAuth,
/// the wrong-EKU one clientAuth, and a CA certificate is "used as a gateway certificate".
pub fn site_cases(ca: &Issuer<'static, KeyPair>) -> Vec<Case> {
    SITE.set(true);
    let out = cases(ca);
    SITE.set(false);
    out.into_iter()
        .map(|mut c| {
            if c.name == "caclient" {
                c.refused = Some(&["CA certificate used as a gateway"]);
            }
            c
        })
        .collect()
}

fn client_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![right_eku()];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p
}

fn issue(
    issuer: &Issuer<'static, KeyPair>,
    cn: &'static str,
    tweak: impl FnOnce(&mut CertificateParams),
    refused: Option<&'static [&'static str]>,
) -> Case {
    let key = KeyPair::generate().unwrap();
    let mut p = client_params(cn);
    tweak(&mut p);
    let cert = p.signed_by(&key, issuer).unwrap();
    Case {
        name: cn,
        chain: vec![cert.der().clone()],
        key: key.serialize_der(),
        refused,
        extra_crls: vec![],
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// The matrix for a gateway whose CA is `ca` (the tests' CRL must list [`REVOKED_SERIAL`]).
pub fn cases(ca: &Issuer<'static, KeyPair>) -> Vec<Case> {
    let mut out = vec![
        issue(
            ca,
            "revoked",
            |p| p.serial_number = Some(SerialNumber::from(REVOKED_SERIAL)),
            Some(&["revoked"]),
        ),
        issue(
            ca,
            "expired",
            |p| {
                p.not_before = date_time_ymd(2025, 1, 1);
                p.not_after = date_time_ymd(2026, 1, 1);
            },
            Some(&["expired"]),
        ),
        issue(
            ca,
            "notyet",
            |p| {
                p.not_before = date_time_ymd(2028, 1, 1);
                p.not_after = date_time_ymd(2029, 1, 1);
            },
            Some(&["not yet valid"]),
        ),
        issue(
            ca,
            "wrongeku",
            |p| p.extended_key_usages = vec![wrong_eku()],
            Some(&["extended key usage", "EKU"]),
        ),
        issue(
            ca,
            "caclient",
            |p| {
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
            },
            Some(&["CA certificate used as a client"]),
        ),
    ];
    // Foreign CA.
    let other_key = KeyPair::generate().unwrap();
    let other = Issuer::new(ca_params("Other CA"), other_key);
    out.push(issue(
        &other,
        "foreign",
        |_| {},
        Some(&["unknown issuer", "foreign CA"]),
    ));
    // Self-signed.
    let key = KeyPair::generate().unwrap();
    let cert = client_params("selfsigned").self_signed(&key).unwrap();
    out.push(Case {
        name: "selfsigned",
        chain: vec![cert.der().clone()],
        key: key.serialize_der(),
        refused: Some(&["self-signed"]),
        extra_crls: vec![],
    });
    // RSA-1024.
    use base64_engine::decode;
    let spki = SubjectPublicKeyInfo::from_der(&decode(RSA1024_SPKI_B64)).unwrap();
    let cert = client_params("rsa1024").signed_by(&spki, ca).unwrap();
    out.push(Case {
        name: "rsa1024",
        chain: vec![cert.der().clone()],
        key: KeyPair::generate().unwrap().serialize_der(),
        refused: Some(&["RSA key too small", "1024 bits"]),
        extra_crls: vec![],
    });
    // SHA-1: rcgen (ring) cannot sign with SHA-1, so the certificate is issued with SHA-256
    // and its signature algorithm relabelled ecdsa-with-SHA1. The signature then does not
    // verify either; the gateway must name the hash, which it checks first.
    let good = issue(ca, "sha1", |_| {}, None);
    out.push(Case {
        chain: vec![CertificateDer::from(relabel_sha1(&good.chain[0]))],
        refused: Some(&["SHA-1"]),
        ..good
    });
    // Accepted: a chain through an intermediate CA.
    let inter_key = KeyPair::generate().unwrap();
    let mut ip = ca_params("Intermediate CA");
    ip.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let inter_cert = ip.signed_by(&inter_key, ca).unwrap();
    let inter = Issuer::new(ip, inter_key);
    let mut leaf = issue(&inter, "viainter", |_| {}, None);
    leaf.chain.push(inter_cert.der().clone());
    leaf.extra_crls.push(crl(&inter));
    out.push(leaf);
    out
}

/// ecdsa-with-SHA1 (1.2.840.10045.4.1).
const ECDSA_SHA1: &[u8] = &[
    0x30, 0x09, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01,
];

/// Splits DER TLVs: returns (tag, header + content) for each element of `content`.
fn elements(mut content: &[u8]) -> Vec<&[u8]> {
    let mut out = vec![];
    while !content.is_empty() {
        let (hdr, len) = header(content);
        out.push(&content[..hdr + len]);
        content = &content[hdr + len..];
    }
    out
}

fn header(tlv: &[u8]) -> (usize, usize) {
    let b = tlv[1] as usize;
    if b < 0x80 {
        (2, b)
    } else {
        let n = b & 0x7f;
        let len = tlv[2..2 + n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | x as usize);
        (2 + n, len)
    }
}

fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = parts.concat();
    let mut out = vec![0x30];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend(body);
    out
}

/// The certificate with its signature algorithm (in the TBS and outside it) relabelled as
/// ecdsa-with-SHA1.
fn relabel_sha1(der: &[u8]) -> Vec<u8> {
    let (h, _) = header(der);
    let outer = elements(&der[h..]);
    let (th, _) = header(outer[0]);
    let mut tbs = elements(&outer[0][th..]);
    // version [0], serial, signature algorithm, ...
    tbs[2] = ECDSA_SHA1;
    let tbs = sequence(&tbs);
    sequence(&[&tbs, ECDSA_SHA1, outer[2]])
}

/// Just enough base64 for one constant (the engine has no base64 dependency).
mod base64_engine {
    pub fn decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64"),
        };
        let mut out = vec![];
        let (mut acc, mut bits) = (0u32, 0);
        for c in s.bytes().filter(|&c| c != b'=') {
            acc = (acc << 6) | u32::from(val(c));
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}

#[test]
fn every_case_is_judged_by_the_policy_as_expected() {
    // The checks cert_policy adds; the rest are webpki's, tested per protocol.
    let (_, ca) = test_ca();
    for c in cases(&ca) {
        let inters: Vec<&[u8]> = c.chain[1..].iter().map(|d| d.as_ref()).collect();
        let got =
            crate::cert_policy::check_chain(&c.chain[0], &inters, crate::cert_policy::Role::Client);
        let ours = ["caclient", "selfsigned", "rsa1024", "sha1"].contains(&c.name);
        assert_eq!(got.is_some(), ours, "{}: {got:?}", c.name);
        if let (Some(got), Some(words)) = (&got, c.refused) {
            for w in words {
                assert!(got.contains(w), "{}: {got}", c.name);
            }
        }
    }
}

/// "Now" for the matrix's validity periods (2027-01-15).
pub const WALL_CLOCK_SECS: u64 = 1_800_000_000;

/// A CA for the matrix: its certificate and issuer.
pub fn test_ca() -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let p = ca_params("Test CA");
    let cert = p.self_signed(&key).unwrap();
    (cert.der().clone(), Issuer::new(p, key))
}

/// A CRL of `ca` listing [`REVOKED_SERIAL`], valid around [`WALL_CLOCK_SECS`].
pub fn crl(ca: &Issuer<'static, KeyPair>) -> Vec<u8> {
    use rcgen::{
        CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams,
    };
    let params = CertificateRevocationListParams {
        this_update: date_time_ymd(2026, 1, 1),
        next_update: date_time_ymd(2028, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(REVOKED_SERIAL),
            revocation_time: date_time_ymd(2026, 6, 1),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(ca).unwrap().der().to_vec()
}

#[test]
fn a_client_named_like_its_ca_is_not_self_signed() {
    let key = KeyPair::generate().unwrap();
    let p = ca_params("Test CA");
    let ca = Issuer::new(p, key);
    let twin = issue(&ca, "Test CA", |_| {}, None);
    let got =
        crate::cert_policy::check_chain(&twin.chain[0], &[], crate::cert_policy::Role::Client);
    assert_eq!(got, None);
}
