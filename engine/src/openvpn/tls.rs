//! TLS for the OpenVPN control channel: rustls configurations (TLS 1.2 and 1.3 like a stock
//! OpenVPN 2.6, or 1.3 only when the operator asks; ring provider, time provider passed in)
//! and certificate checks that say *why* a peer was refused.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::time_provider::TimeProvider;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};

/// Failure to build a TLS configuration from PEM material.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A PEM file held no certificate / key / CRL, or was malformed.
    #[error("{what}: {detail}")]
    Pem {
        /// What was being read.
        what: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] Error),
    /// The verifier could not be built (e.g. a CRL that does not parse).
    #[error("certificate verifier: {0}")]
    Verifier(String),
}

fn pem_err(what: &'static str) -> impl Fn(rustls::pki_types::pem::Error) -> TlsConfigError {
    move |e| TlsConfigError::Pem {
        what,
        detail: e.to_string(),
    }
}

/// Parses every certificate in a PEM buffer.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err("certificate PEM"))?;
    if certs.is_empty() {
        return Err(TlsConfigError::Pem {
            what: "certificate PEM",
            detail: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// Parses a private key (PKCS#8, SEC1 or PKCS#1) from PEM.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(pem_err("private key PEM"))
}

/// Parses every CRL in a PEM buffer (an empty buffer means no CRLs).
pub fn crls_from_pem(
    pem: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsConfigError> {
    CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err("CRL PEM"))
}

/// The oldest TLS version a gateway accepts on the control channel (`tls-version-min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsVersionMin {
    /// TLS 1.2 and 1.3: a stock OpenVPN 2.6 server's default (options.c
    /// `options_set_backwards_compatible_options`: "Use TLS 1.2 as proper default").
    #[default]
    Tls12,
    /// TLS 1.3 only: stricter; refuses clients configured with `tls-version-max 1.2` and
    /// OpenVPN builds whose TLS library lacks 1.3.
    Tls13,
}

impl TlsVersionMin {
    /// Parses `"1.2"` or `"1.3"` (the values of OpenVPN's `tls-version-min`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "1.2" => Some(Self::Tls12),
            "1.3" => Some(Self::Tls13),
            _ => None,
        }
    }

    /// `"1.2"` or `"1.3"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        }
    }

    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            Self::Tls12 => rustls::ALL_VERSIONS,
            Self::Tls13 => &TLS13_ONLY,
        }
    }
}

/// The rustls server configuration a gateway uses, accepting TLS 1.2 and 1.3 as a stock
/// OpenVPN 2.6 server does: client certificates are mandatory and checked against `ca` and
/// `crls` (chain, validity, clientAuth EKU, revocation).
pub fn server_config(
    provider: Arc<CryptoProvider>,
    time: Arc<dyn TimeProvider>,
    ca: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    server_config_min_version(provider, time, ca, crls, chain, key, TlsVersionMin::Tls12)
}

/// [`server_config`] with the oldest TLS version the gateway accepts.
///
/// With TLS 1.2 the suites are ring's ECDHE + AEAD ones (ECDSA and RSA certificates, AES-GCM
/// and ChaCha20-Poly1305), which OpenSSL 3's default list offers too.
pub fn server_config_min_version(
    provider: Arc<CryptoProvider>,
    time: Arc<dyn TimeProvider>,
    ca: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    min: TlsVersionMin,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c.clone())?;
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .build()
        .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
    let verifier = Arc::new(ExplainingClientVerifier { inner });
    let config = rustls::ServerConfig::builder_with_details(provider, time)
        .with_protocol_versions(min.versions())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// The rustls client configuration: TLS 1.3 preferred, TLS 1.2 accepted (stock servers may be
/// limited to it with `tls-version-max 1.2`); the gateway's certificate must chain to `ca`,
/// carry serverAuth and name the gateway we dialled. No SNI (OpenVPN sends none).
pub fn client_config(
    provider: Arc<CryptoProvider>,
    time: Arc<dyn TimeProvider>,
    ca: &[CertificateDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c.clone())?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
    let mut config = rustls::ClientConfig::builder_with_details(provider, time)
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExplainingServerVerifier { inner }))
        .with_client_auth_cert(chain, key)?;
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// If a TLS error means the peer only speaks a TLS version older than we accept, what to
/// tell the operator.
pub fn version_refusal(err: &Error) -> Option<String> {
    use rustls::PeerIncompatible as P;
    match err {
        Error::PeerIncompatible(
            P::SupportedVersionsExtensionRequired
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled,
        ) => Some(
            "client offers no TLS version this gateway accepts (it is limited to TLS 1.2 or \
             older, e.g. `tls-version-max 1.2`, and `openvpn.tls_version_min` is \"1.3\"); set \
             tls_version_min = \"1.2\" to accept it"
                .into(),
        ),
        _ => None,
    }
}

/// The negotiated TLS version and cipher suite, as OpenSSL and OpenVPN name them
/// (`TLSv1.3 TLS_AES_256_GCM_SHA384`), once the handshake is done.
pub fn describe_session(state: &rustls::CommonState) -> Option<(&'static str, String)> {
    let version = match state.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS (other)",
    };
    let suite = state.negotiated_cipher_suite()?.suite();
    let name = suite
        .as_str()
        .map_or_else(|| format!("{suite:?}"), str::to_owned);
    Some((version, name))
}

/// Why a peer certificate was refused, with the peer's name when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRefusal {
    /// Common name of the refused certificate, if it parsed.
    pub name: Option<String>,
    /// Human-readable reason ("certificate revoked", ...).
    pub reason: String,
}

impl fmt::Display for CertRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "certificate of {n}: {}", self.reason),
            None => write!(f, "certificate: {}", self.reason),
        }
    }
}

impl std::error::Error for CertRefusal {}

/// Explains a rustls certificate error in words an operator understands.
pub fn explain_cert_error(err: &CertificateError) -> String {
    match err {
        CertificateError::Revoked => "certificate revoked (listed in the CRL)".into(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate not yet valid".into()
        }
        CertificateError::UnknownIssuer => {
            "certificate not issued by this gateway's CA (unknown issuer, foreign CA)".into()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate lacks the required extended key usage (EKU)".into()
        }
        CertificateError::BadSignature => "certificate signature does not verify".into(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "certificate does not name this host".into()
        }
        CertificateError::UnknownRevocationStatus => "revocation status unknown".into(),
        other => format!("{other:?}"),
    }
}

/// Common name of a certificate's subject.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// If a TLS error is a certificate refusal, the refusal with the peer's name.
pub fn refusal_of(err: &Error) -> Option<CertRefusal> {
    let last = LAST_REFUSAL.with(|l| l.borrow_mut().take());
    match err {
        Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<CertRefusal>().cloned().or(last)
        }
        Error::InvalidCertificate(e) => Some(CertRefusal {
            name: last.and_then(|l| l.name),
            reason: explain_cert_error(e),
        }),
        Error::NoCertificatesPresented => Some(CertRefusal {
            name: None,
            reason: "peer presented no certificate".into(),
        }),
        _ => None,
    }
}

thread_local! {
    /// The refusal the verifier produced last on this thread. rustls calls the verifier
    /// synchronously inside `process_new_packets`, so the session that sees the error reads
    /// it right after, on the same thread. Passing the error through unchanged keeps rustls'
    /// precise alert (certificate_revoked, certificate_expired, unknown_ca) for the peer.
    static LAST_REFUSAL: std::cell::RefCell<Option<CertRefusal>> = const { std::cell::RefCell::new(None) };
}

/// Takes the refusal the verifier left on this thread (a TLS job carries it back to the
/// session's thread, see [`crate::openvpn::tls_job`]).
pub(crate) fn take_last_refusal() -> Option<CertRefusal> {
    LAST_REFUSAL.with(|l| l.borrow_mut().take())
}

/// Puts a refusal taken on another thread back for [`refusal_of`] on this one.
pub(crate) fn restore_last_refusal(r: Option<CertRefusal>) {
    LAST_REFUSAL.with(|l| *l.borrow_mut() = r);
}

fn refuse(end_entity: &CertificateDer<'_>, err: Error) -> Error {
    let reason = match &err {
        Error::InvalidCertificate(e) => explain_cert_error(e),
        other => other.to_string(),
    };
    let refusal = CertRefusal {
        name: common_name(end_entity),
        reason,
    };
    match err {
        Error::InvalidCertificate(_) => {
            LAST_REFUSAL.with(|l| *l.borrow_mut() = Some(refusal));
            err
        }
        _ => Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(refusal)))),
    }
}

/// If the peer ended TLS with an alert saying it refused our certificate, what to tell the
/// user.
pub fn alert_refusal(err: &Error) -> Option<String> {
    use rustls::AlertDescription as A;
    let Error::AlertReceived(a) = err else {
        return None;
    };
    Some(match a {
        A::CertificateRevoked => "the gateway says this client's certificate was revoked".into(),
        A::CertificateExpired => "the gateway says this client's certificate has expired".into(),
        A::UnknownCA => "the gateway does not trust this client's certificate (unknown CA)".into(),
        A::BadCertificate | A::CertificateUnknown | A::UnsupportedCertificate | A::AccessDenied => {
            format!("the gateway refused this client's certificate ({a:?})")
        }
        _ => return None,
    })
}

/// Wraps webpki's client verifier so a refusal carries the client's name and a reason.
#[derive(Debug)]
struct ExplainingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ExplainingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let inters: Vec<&[u8]> = intermediates.iter().map(|c| c.as_ref()).collect();
        if let Some(reason) =
            crate::cert_policy::check_chain(end_entity, &inters, crate::cert_policy::Role::Client)
        {
            let refusal = CertRefusal {
                name: common_name(end_entity),
                reason,
            };
            // QUIC carries only the alert out of rustls: it reads the reason here.
            LAST_REFUSAL.with(|l| *l.borrow_mut() = Some(refusal.clone()));
            return Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(refusal)),
            )));
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| refuse(end_entity, e))
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Wraps webpki's server verifier the same way, for the client side.
#[derive(Debug)]
struct ExplainingServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ExplainingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| refuse(end_entity, e))
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
