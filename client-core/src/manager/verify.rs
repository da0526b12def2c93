//! How a profile imported from an `.ovpn` file checks the server's certificate: the way
//! stock OpenVPN does, not the way a web browser does.
//!
//! OpenVPN never compares the server's host name with its certificate (install scripts
//! issue server certificates named `server_<random>` and hand out the server's IP address);
//! it checks the chain to `<ca>`, `remote-cert-tls server` (the serverAuth extended key
//! usage) and, if the file says so, `verify-x509-name`. Gatehouse profiles keep the stricter
//! check (the gateway's name or IP must be in its certificate).

use std::sync::Arc;

use gatehouse_engine::openvpn::tls::CertRefusal;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::profile::{X509NameCheck, X509NameKind};

/// Verifies a server certificate like OpenVPN 2.6 with `remote-cert-tls server`, the
/// profile's `verify-x509-name` and `peer-fingerprint`.
#[derive(Debug)]
pub(crate) struct OpenvpnServerVerifier {
    /// The chain check against `<ca>`; `None` for a profile pinned by fingerprint only.
    pub(crate) inner: Option<Arc<WebPkiServerVerifier>>,
    /// Signature algorithms for the handshake signature.
    pub(crate) algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    pub(crate) name: Option<X509NameCheck>,
    /// `peer-fingerprint`: SHA-256 of the certificates accepted (empty: no pinning).
    pub(crate) fingerprints: Vec<[u8; 32]>,
    /// Why the server was refused, for the connection to end with that instead of retrying.
    pub(crate) refusal: Refusal,
}

/// The reason the verifier refused the server, shared with the connection driving it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refusal(Arc<std::sync::Mutex<Option<String>>>);

impl Refusal {
    fn set(&self, reason: String) {
        if let Ok(mut r) = self.0.lock() {
            *r = Some(reason);
        }
    }

    /// The reason, if the server was refused.
    pub(crate) fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut r| r.take())
    }
}

fn refuse(name: Option<String>, reason: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(CertRefusal {
        name,
        reason,
    }))))
}

impl ServerCertVerifier for OpenvpnServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let result = self.check(end_entity, intermediates, server_name, ocsp_response, now);
        if let Err(e) = &result {
            let why = match e {
                Error::InvalidCertificate(CertificateError::Other(OtherError(o))) => o.to_string(),
                Error::InvalidCertificate(c) => {
                    gatehouse_engine::openvpn::tls::explain_cert_error(c)
                }
                other => other.to_string(),
            };
            self.refusal
                .set(format!("the server's certificate was refused: {why}"));
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl OpenvpnServerVerifier {
    /// The checks, in OpenVPN's order: chain to `<ca>`, pinned fingerprint, serverAuth,
    /// `verify-x509-name`.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if let Some(inner) = &self.inner {
            match inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                // webpki checks the name last, once the chain and key usage are good.
                Ok(_)
                | Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => {}
                Err(e) => return Err(e),
            }
        }
        let Ok((_, cert)) = X509Certificate::from_der(end_entity.as_ref()) else {
            return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
        };
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .map(str::to_owned);
        if !self.fingerprints.is_empty() {
            let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
            if !self.fingerprints.iter().any(|f| f[..] == *digest.as_ref()) {
                let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
                return Err(refuse(
                    cn,
                    format!(
                        "the server certificate's fingerprint {} is not one this profile pins (peer-fingerprint); the server or the profile changed - ask the administrator",
                        hex.join(":")
                    ),
                ));
            }
            if self.inner.is_none() {
                // Pinned exactly: usage and name checks add nothing (OpenVPN skips them too).
                return Ok(ServerCertVerified::assertion());
            }
        }
        // remote-cert-tls server: the extended key usage must be there and say serverAuth.
        let server_auth =
            matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.server_auth);
        if !server_auth {
            return Err(refuse(
                cn,
                "the server certificate lacks the serverAuth extended key usage (remote-cert-tls server); the server's administrator must issue it as a server certificate".into(),
            ));
        }
        if let Some(check) = &self.name {
            let ok = match check.kind {
                X509NameKind::Name => cn.as_deref() == Some(check.value.as_str()),
                X509NameKind::NamePrefix => {
                    cn.as_deref().is_some_and(|c| c.starts_with(&check.value))
                }
                X509NameKind::Subject => same_subject(&cert.subject().to_string(), &check.value),
            };
            if !ok {
                let actual = if check.kind == X509NameKind::Subject {
                    cert.subject().to_string()
                } else {
                    cn.clone().unwrap_or_default()
                };
                return Err(refuse(
                    cn,
                    format!(
                        "the server certificate's name is {actual:?}, not the {:?} this profile expects (verify-x509-name); the server or the profile changed - ask the administrator",
                        check.value
                    ),
                ));
            }
        }
        Ok(ServerCertVerified::assertion())
    }
}

/// Subjects compared the way OpenVPN prints them (`C=NL, O=Example, CN=vpn`), ignoring
/// spacing after commas and around `=`.
fn same_subject(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split(',')
            .map(|part| part.split('=').map(str::trim).collect::<Vec<_>>().join("="))
            .collect::<Vec<_>>()
            .join(",")
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_compare_like_openvpn_prints_them() {
        assert!(same_subject(
            "C=NL, O=Example, CN=vpn",
            "C=NL,O=Example,CN=vpn"
        ));
        assert!(same_subject("CN=vpn", "CN = vpn"));
        assert!(!same_subject("C=NL, CN=vpn", "CN=vpn"));
    }
}
