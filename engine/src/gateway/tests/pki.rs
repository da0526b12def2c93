//! Certificates and protocol configurations for the simulation: one CA, a gateway
//! certificate (SANs `vpn.test` and the gateway's address) and numbered client certificates
//! with known serials, made once and shared by every test (key generation dominates
//! otherwise). Client `i` is named `client-{i:02}` and has serial `SERIAL_BASE + i`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::ikev2::crypto::SigningKey;
use crate::ikev2::initiator::{DEFAULT_CHILD_LIFETIME, DEFAULT_IKE_LIFETIME, InitiatorConfig};
use crate::ikev2::peer_cert::PeerTrust;
use crate::ikev2::proposal::Policy;
use crate::ikev2::responder::{DEFAULT_HARD_LIFETIME, ResponderConfig};
use crate::openvpn::client::ClientConfig;
use crate::openvpn::server::ServerConfig;
use crate::openvpn::tls::{client_config, server_config};

/// "Now" for certificate validity (2027-01-15); the protocol clock is virtual and separate.
pub(super) const WALL_CLOCK_SECS: u64 = 1_800_000_000;

/// The gateway's public address (a SAN of its certificate).
pub(super) const GATEWAY_IP: &str = "198.51.100.1";

/// The gateway's DNS name (a SAN of its certificate), dialled by OpenVPN clients.
pub(super) const GATEWAY_NAME: &str = "vpn.test";

/// Number of client certificates made.
pub(super) const CLIENTS: usize = 48;

/// Serial of client certificate 0.
pub(super) const SERIAL_BASE: u64 = 0x1000;

/// A certificate and its PKCS#8 private key.
pub(super) struct Cred {
    pub cert: CertificateDer<'static>,
    pub pk8: Vec<u8>,
}

pub(super) struct Pki {
    pub ca_cert: CertificateDer<'static>,
    ca: Issuer<'static, KeyPair>,
    pub gateway: Cred,
    pub clients: Vec<Cred>,
}

/// The name of client certificate `i`.
pub(super) fn client_name(i: usize) -> String {
    format!("client-{i:02}")
}

fn leaf(
    ca: &Issuer<'static, KeyPair>,
    cn: &str,
    sans: Vec<String>,
    gateway: bool,
    serial: u64,
) -> Cred {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![if gateway {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.serial_number = Some(SerialNumber::from(serial));
    let cert = p.signed_by(&key, ca).unwrap();
    Cred {
        cert: cert.der().clone(),
        pk8: key.serialize_der(),
    }
}

pub(super) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "Simulation CA");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = p.self_signed(&key).unwrap().der().clone();
        let ca = Issuer::new(p, key);
        let gateway = leaf(
            &ca,
            "gateway",
            vec![GATEWAY_NAME.to_owned(), GATEWAY_IP.to_owned()],
            true,
            1,
        );
        let clients = (0..CLIENTS)
            .map(|i| leaf(&ca, &client_name(i), vec![], false, SERIAL_BASE + i as u64))
            .collect();
        Pki {
            ca_cert,
            ca,
            gateway,
            clients,
        }
    })
}

impl Pki {
    /// A CRL (DER) revoking client certificates `revoked` (by index).
    pub fn crl(&self, revoked: &[usize]) -> Vec<u8> {
        use rcgen::{
            CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams,
            date_time_ymd,
        };
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2026, 1, 1),
            next_update: date_time_ymd(2028, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|i| RevokedCertParams {
                    serial_number: SerialNumber::from(SERIAL_BASE + *i as u64),
                    revocation_time: date_time_ymd(2026, 6, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.ca).unwrap().der().to_vec()
    }
}

#[derive(Debug)]
struct FixedTime(UnixTime);
impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

fn wall_clock() -> Arc<FixedTime> {
    Arc::new(FixedTime(UnixTime::since_unix_epoch(Duration::from_secs(
        WALL_CLOCK_SECS,
    ))))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Tests may use the OS generator (ring's DH and signatures take no other).
#[allow(clippy::disallowed_methods)]
fn ring_rng() -> Arc<ring::rand::SystemRandom> {
    Arc::new(ring::rand::SystemRandom::new())
}

fn pkcs8(der: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()))
}

/// The gateway's OpenVPN configuration (no CRL: the core's `set_crls` is the only check).
pub(super) fn server_cfg() -> ServerConfig {
    let pki = pki();
    let tls = server_config(
        provider(),
        wall_clock(),
        std::slice::from_ref(&pki.ca_cert),
        vec![],
        vec![pki.gateway.cert.clone()],
        pkcs8(&pki.gateway.pk8),
    )
    .unwrap();
    ServerConfig::new(tls)
}

/// An OpenVPN client with certificate `i`.
pub(super) fn ovpn_client_cfg(i: usize) -> ClientConfig {
    let pki = pki();
    let cred = &pki.clients[i];
    let tls = client_config(
        provider(),
        wall_clock(),
        std::slice::from_ref(&pki.ca_cert),
        vec![cred.cert.clone()],
        pkcs8(&cred.pk8),
    )
    .unwrap();
    ClientConfig::new(tls, ServerName::try_from(GATEWAY_NAME.to_owned()).unwrap())
}

fn signing_key(pk8: &[u8]) -> Arc<SigningKey> {
    Arc::new(SigningKey::from_pkcs8(pk8, &*ring_rng()).unwrap())
}

fn ca_spki_sha1(ca: &CertificateDer<'_>) -> [u8; 20] {
    let (_, c) = x509_parser::parse_x509_certificate(ca).unwrap();
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, c.public_key().raw);
    d.as_ref().try_into().unwrap()
}

/// The gateway's IKEv2 configuration.
pub(super) fn responder_cfg() -> ResponderConfig {
    let pki = pki();
    ResponderConfig {
        policy: Policy::default(),
        trust: PeerTrust {
            roots: vec![pki.ca_cert.clone()],
            crls: vec![],
        },
        time: wall_clock(),
        cert_chain: vec![pki.gateway.cert.clone()],
        key: signing_key(&pki.gateway.pk8),
        rng: ring_rng(),
        ca_hashes: vec![ca_spki_sha1(&pki.ca_cert)],
        dpd_interval: Duration::from_secs(30),
        auth_timeout: Duration::from_secs(30),
        fragment_size: 1280,
        hard_lifetime: DEFAULT_HARD_LIFETIME,
        sites: Vec::new(),
        offload: false,
    }
}

/// An IKEv2 road-warrior client with certificate `i`.
pub(super) fn ike_client_cfg(i: usize) -> InitiatorConfig {
    let pki = pki();
    let cred = &pki.clients[i];
    InitiatorConfig {
        policy: Policy::default(),
        trust: PeerTrust {
            roots: vec![pki.ca_cert.clone()],
            crls: vec![],
        },
        time: wall_clock(),
        cert_chain: vec![cred.cert.clone()],
        key: signing_key(&cred.pk8),
        rng: ring_rng(),
        remote_id: Some(GATEWAY_IP.to_owned()),
        dpd_interval: Duration::from_secs(30),
        fragment_size: 1280,
        ike_lifetime: DEFAULT_IKE_LIFETIME,
        child_lifetime: DEFAULT_CHILD_LIFETIME,
        request_ipv6: false,
        site: None,
    }
}

/// The gateway's QUIC configuration; `crls` are checked in the TLS handshake (the verifier
/// the OpenVPN path uses).
pub(super) fn quic_server_cfg(crls: Vec<Vec<u8>>) -> crate::quic::QuicConfig {
    let pki = pki();
    crate::quic::QuicConfig::from_pki(
        provider(),
        wall_clock(),
        std::slice::from_ref(&pki.ca_cert),
        crls.into_iter()
            .map(rustls::pki_types::CertificateRevocationListDer::from)
            .collect(),
        vec![pki.gateway.cert.clone()],
        pkcs8(&pki.gateway.pk8),
        crate::quic::config::DEFAULT_TUNNEL_MTU,
    )
    .unwrap()
}

/// A QUIC client (quinn-proto) with certificate `i`: ALPN `gatehouse-ip/1`, the gateway
/// checked against the CA, a PING every 10 s.
pub(super) fn quic_client_cfg(i: usize) -> quinn_proto::ClientConfig {
    let pki = pki();
    let cred = &pki.clients[i];
    let tls = client_config(
        provider(),
        wall_clock(),
        std::slice::from_ref(&pki.ca_cert),
        vec![cred.cert.clone()],
        pkcs8(&cred.pk8),
    )
    .unwrap();
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![crate::quic::ALPN.to_vec()];
    let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
    let mut c = quinn_proto::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn_proto::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(10)))
        .initial_mtu(crate::quic::config::INITIAL_MTU);
    c.transport_config(Arc::new(t));
    c
}
