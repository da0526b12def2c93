//! Checks a peer's certificate for IKE_AUTH: chain to our CA, validity, extended key usage,
//! revocation (CRL), and that the peer's IKE identity is bound to the certificate.

use rustls::pki_types::{CertificateDer, UnixTime};
use webpki::{
    CertRevocationList, EndEntityCert, KeyUsage, OwnedCertRevocationList, RevocationOptionsBuilder,
};

use crate::wire::ikev2::{IdPayload, IdType};

/// Trust configuration for peer certificates.
#[derive(Debug, Clone)]
pub struct PeerTrust {
    /// Trusted CA certificates (DER).
    pub roots: Vec<CertificateDer<'static>>,
    /// CRLs of those CAs (DER).
    pub crls: Vec<Vec<u8>>,
}

/// What a verified peer certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPeer {
    /// The subject's common name (the client name used for pool leases and logs).
    pub name: String,
    /// The DER SubjectPublicKeyInfo, for checking the AUTH payload.
    pub spki: Vec<u8>,
}

/// Why a peer certificate was refused: the reason an operator reads in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PeerRefused {
    /// The certificate's common name, when it could be read.
    pub name: Option<String>,
    /// What is wrong with it.
    pub reason: String,
}

fn explain(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::CertRevoked => "certificate revoked (listed in the CRL)".into(),
        E::CertExpired { .. } => "certificate expired".into(),
        E::CertNotValidYet { .. } => "certificate not yet valid".into(),
        E::UnknownIssuer => {
            "certificate not issued by this gateway's CA (unknown issuer, foreign CA)".into()
        }
        E::RequiredEkuNotFoundContext(_) => {
            "certificate lacks the required extended key usage (EKU)".into()
        }
        E::CaUsedAsEndEntity => "CA certificate used as an end-entity certificate".into(),
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "certificate signature algorithm not accepted".into()
        }
        E::InvalidSignatureForPublicKey => "certificate signature does not verify".into(),
        E::UnknownRevocationStatus => "revocation status unknown (no CRL for its issuer)".into(),
        other => format!("certificate rejected: {other:?}"),
    }
}

impl PeerTrust {
    /// Verifies `chain` (end entity first) at `now` for `usage` (client or server auth).
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
        client: bool,
    ) -> Result<VerifiedPeer, PeerRefused> {
        let Some(ee_der) = chain.first() else {
            return Err(PeerRefused {
                name: None,
                reason: "peer sent no certificate".into(),
            });
        };
        let name = crate::openvpn::tls::common_name(ee_der);
        let refuse = |reason: String| PeerRefused {
            name: name.clone(),
            reason,
        };
        let role = if client {
            crate::cert_policy::Role::Client
        } else {
            crate::cert_policy::Role::Server
        };
        let intermediates: Vec<&[u8]> = chain[1..].iter().map(|c| c.as_ref()).collect();
        if let Some(reason) = crate::cert_policy::check_chain(ee_der, &intermediates, role) {
            return Err(refuse(reason));
        }
        let anchors = self
            .roots
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse(format!("our CA certificate does not parse: {e:?}")))?;
        let crls = self
            .crls
            .iter()
            .filter_map(|d| OwnedCertRevocationList::from_der(d).ok())
            .map(CertRevocationList::from)
            .collect::<Vec<_>>();
        let crl_refs: Vec<&CertRevocationList<'_>> = crls.iter().collect();
        let revocation = if crl_refs.is_empty() {
            None
        } else {
            RevocationOptionsBuilder::new(&crl_refs)
                .ok()
                .map(|b| b.build())
        };
        let ee = EndEntityCert::try_from(ee_der)
            .map_err(|e| refuse(format!("certificate does not parse: {e:?}")))?;
        let usage = if client {
            KeyUsage::client_auth()
        } else {
            KeyUsage::server_auth()
        };
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &chain[1..],
            now,
            usage,
            revocation,
            None,
        )
        .map_err(|e| refuse(explain(&e)))?;
        let (_, cert) = x509_parser::parse_x509_certificate(ee_der)
            .map_err(|_| refuse("certificate does not parse".into()))?;
        Ok(VerifiedPeer {
            name: name.clone().unwrap_or_default(),
            spki: cert.public_key().raw.to_vec(),
        })
    }
}

/// Is the IKE identity `id` bound to certificate `der`? A DN must equal the subject; an
/// e-mail, FQDN or IP must be in the subject alternative names (or, for e-mail and FQDN,
/// equal the common name, which is how Gatehouse names clients).
pub fn id_matches_cert(id: &IdPayload<'_>, der: &[u8]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_owned);
    let sans: Vec<GeneralName<'_>> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| s.value.general_names.clone())
        .unwrap_or_default();
    match id.id_type {
        IdType::DER_ASN1_DN => {
            // Compare names, not bytes: peers encode strings as PrintableString or UTF8String
            // as they like.
            use x509_parser::prelude::FromDer;
            id.data == cert.subject().as_raw()
                || x509_parser::x509::X509Name::from_der(id.data)
                    .is_ok_and(|(_, n)| n.to_string() == cert.subject().to_string())
        }
        IdType::RFC822_ADDR | IdType::FQDN => {
            let Ok(text) = std::str::from_utf8(id.data) else {
                return false;
            };
            let san_hit = sans.iter().any(|n| match n {
                GeneralName::RFC822Name(e) => {
                    id.id_type == IdType::RFC822_ADDR && e.eq_ignore_ascii_case(text)
                }
                GeneralName::DNSName(d) => {
                    id.id_type == IdType::FQDN && d.eq_ignore_ascii_case(text)
                }
                _ => false,
            });
            san_hit || cn.as_deref() == Some(text)
        }
        IdType::IPV4_ADDR | IdType::IPV6_ADDR => sans.iter().any(|n| match n {
            GeneralName::IPAddress(ip) => *ip == id.data,
            _ => false,
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::UnixTime;

    use super::PeerTrust;
    use crate::cert_matrix::{WALL_CLOCK_SECS, cases, crl, site_cases, test_ca};

    /// Runs the matrix `cases` through [`PeerTrust::verify`] as a client's (`client`) or a
    /// site's certificate.
    fn run_matrix(
        cases: fn(&rcgen::Issuer<'static, rcgen::KeyPair>) -> Vec<crate::cert_matrix::Case>,
        client: bool,
    ) {
        let (root, ca) = test_ca();
        let now = UnixTime::since_unix_epoch(Duration::from_secs(WALL_CLOCK_SECS));
        let mut failures = vec![];
        for c in cases(&ca) {
            let mut crls = vec![crl(&ca)];
            crls.extend(c.extra_crls.iter().cloned());
            let trust = PeerTrust {
                roots: vec![root.clone()],
                crls,
            };
            let got = trust.verify(&c.chain, now, client);
            match (c.refused, got) {
                (None, Ok(v)) => assert_eq!(v.name, c.name),
                (None, Err(e)) => failures.push(format!("{}: refused: {}", c.name, e.reason)),
                (Some(words), Err(e)) => {
                    assert_eq!(e.name.as_deref(), Some(c.name));
                    for w in words {
                        if !e.reason.contains(w) {
                            failures.push(format!("{}: {:?} lacks {w:?}", c.name, e.reason));
                        }
                    }
                }
                (Some(_), Ok(_)) => failures.push(format!("{}: accepted", c.name)),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    /// The bad-certificate matrix against the IKEv2 responder's check of a P2S client (its
    /// reason is the `client refused ... reason=` of the gateway's log): every bad kind
    /// refused with a precise reason, a chain through an intermediate CA accepted.
    #[test]
    fn bad_certificate_matrix() {
        run_matrix(cases, true);
    }

    /// The same matrix for a certificate-authenticated site (serverAuth certificates).
    #[test]
    fn bad_certificate_matrix_for_sites() {
        run_matrix(site_cases, false);
    }
}
