//! Loads the gateway's TLS material from its PKI folder and notices CRL updates.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use gatehouse_engine::openvpn::data::Cipher;
use gatehouse_engine::openvpn::server::ServerConfig;
use gatehouse_engine::openvpn::tls::{
    TlsVersionMin, certs_from_pem, crls_from_pem, key_from_pem, server_config_min_version,
};

use crate::config::{GatewayConfig, parse_duration};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// Where the TLS inputs live.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    /// CA certificate.
    pub ca: PathBuf,
    /// Gateway certificate.
    pub cert: PathBuf,
    /// Gateway key.
    pub key: PathBuf,
    /// Current CRL.
    pub crl: PathBuf,
}

impl PkiPaths {
    /// Paths inside a PKI folder for gateway certificate `name`.
    pub fn new(pki: &Path, name: &str) -> Self {
        Self {
            ca: pki.join("ca.crt"),
            cert: pki.join("server").join(format!("{name}.crt")),
            key: pki.join("server").join(format!("{name}.key")),
            crl: pki.join("crl.pem"),
        }
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "cannot read the {what} {}; is this a PKI folder made by `gatehoused init`?",
            path.display()
        )
    })
}

/// The CRL file's bytes; None only when there is no such file (no certificate revoked yet).
/// Any other failure is an error, never "nothing revoked": out of file descriptors, a
/// reload must keep the CRL it has instead of forgetting every revocation.
pub fn read_crl(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(pem) => Ok(Some(pem)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the CRL {}", path.display())),
    }
}

/// The gateway's PKI files, read and parsed: what every TLS listener is built from.
struct GatewayPki {
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl GatewayPki {
    fn load(paths: &PkiPaths) -> Result<Self> {
        let ca = certs_from_pem(&read(&paths.ca, "CA certificate")?)
            .with_context(|| format!("{}", paths.ca.display()))?;
        let chain = certs_from_pem(&read(&paths.cert, "gateway certificate")?)
            .with_context(|| format!("{}", paths.cert.display()))?;
        let key = key_from_pem(&read(&paths.key, "gateway key")?)
            .with_context(|| format!("{}", paths.key.display()))?;
        let crls = match read_crl(&paths.crl)? {
            Some(pem) => crls_from_pem(&pem).with_context(|| format!("{}", paths.crl.display()))?,
            None => Vec::new(),
        };
        Ok(Self {
            ca,
            chain,
            key,
            crls,
        })
    }
}

/// Builds the engine's OpenVPN server configuration from the PKI files and gateway.toml.
pub fn openvpn_server_config(paths: &PkiPaths, cfg: &GatewayConfig) -> Result<Arc<ServerConfig>> {
    let GatewayPki {
        ca,
        chain,
        key,
        crls,
    } = GatewayPki::load(paths)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let time = Arc::new(rustls::time_provider::DefaultTimeProvider);
    let o = &cfg.openvpn;
    let min = TlsVersionMin::parse(&o.tls_version_min).with_context(|| {
        format!(
            "`openvpn.tls_version_min` = {:?}: write \"1.2\" or \"1.3\"",
            o.tls_version_min
        )
    })?;
    let tls = server_config_min_version(provider, time, &ca, crls, chain, key, min)?;
    let mut sc = ServerConfig::new(tls);
    sc.tls_ekm = o.tls_ekm;
    sc.ciphers = o
        .ciphers
        .iter()
        .filter_map(|c| Cipher::from_openvpn_name(c))
        .collect();
    sc.ping = parse_duration(&o.ping).unwrap_or(Duration::from_secs(10));
    sc.ping_restart = parse_duration(&o.ping_restart).unwrap_or(Duration::from_secs(60));
    sc.inactivity_timeout = sc.ping_restart * 2;
    sc.reneg_interval = parse_duration(&o.reneg).filter(|d| !d.is_zero());
    sc.tun_mtu = cfg.tun_mtu;
    sc.offload_handshakes = cfg.handshake_threads > 0;
    Ok(Arc::new(sc))
}

/// Builds the engine's QUIC listener configuration from the same PKI files: TLS 1.3, the
/// client-certificate checks of the OpenVPN path (CA, validity, EKU, CRL).
pub fn quic_server_config(
    paths: &PkiPaths,
    cfg: &GatewayConfig,
) -> Result<Arc<gatehouse_engine::quic::QuicConfig>> {
    let GatewayPki {
        ca,
        chain,
        key,
        crls,
    } = GatewayPki::load(paths)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let time = Arc::new(rustls::time_provider::DefaultTimeProvider);
    // The tunnel's packets must fit a DATAGRAM frame; a smaller TUN MTU wins.
    let mtu = gatehouse_engine::quic::config::DEFAULT_TUNNEL_MTU.min(cfg.tun_mtu);
    let q =
        gatehouse_engine::quic::QuicConfig::from_pki(provider, time, &ca, crls, chain, key, mtu)
            .context("QUIC TLS configuration")?;
    Ok(Arc::new(q))
}

/// Remembers the CRL file's identity to notice when `gatehouse-certs revoke` rewrote it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileStamp(Option<(SystemTime, u64, u64)>);

impl FileStamp {
    /// The current stamp of `path` (modification time, size, inode).
    pub fn of(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileStamp(
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino()))),
        )
    }
}

/// Builds the engine's IKEv2 responder configuration from the same PKI files.
pub fn ike_responder_config(
    paths: &PkiPaths,
    cfg: &GatewayConfig,
    sites: &[Arc<gatehouse_engine::ikev2::site::SitePeer>],
) -> Result<Arc<gatehouse_engine::ikev2::responder::ResponderConfig>> {
    use gatehouse_engine::ikev2::crypto::SigningKey;
    use gatehouse_engine::ikev2::peer_cert::PeerTrust;
    use gatehouse_engine::ikev2::proposal::Policy;
    use gatehouse_engine::ikev2::responder::ResponderConfig;

    let ca = certs_from_pem(&read(&paths.ca, "CA certificate")?)
        .with_context(|| format!("{}", paths.ca.display()))?;
    let chain = certs_from_pem(&read(&paths.cert, "gateway certificate")?)
        .with_context(|| format!("{}", paths.cert.display()))?;
    let key = key_from_pem(&read(&paths.key, "gateway key")?)
        .with_context(|| format!("{}", paths.key.display()))?;
    let crls = match read_crl(&paths.crl)? {
        Some(pem) => crls_from_pem(&pem)
            .with_context(|| format!("{}", paths.crl.display()))?
            .into_iter()
            .map(|c| c.as_ref().to_vec())
            .collect(),
        None => Vec::new(),
    };
    let rng: Arc<dyn ring::rand::SecureRandom + Send + Sync> =
        Arc::new(ring::rand::SystemRandom::new());
    let key = SigningKey::from_pkcs8(key.secret_der(), &*rng)
        .map_err(|e| anyhow::anyhow!("{}: {e}", paths.key.display()))?;
    let ca_hashes = ca
        .iter()
        .filter_map(|c| {
            let (_, cert) = x509_parser::parse_x509_certificate(c.as_ref()).ok()?;
            let d = ring::digest::digest(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                cert.public_key().raw,
            );
            let mut h = [0u8; 20];
            h.copy_from_slice(d.as_ref());
            Some(h)
        })
        .collect();
    Ok(Arc::new(ResponderConfig {
        policy: Policy::remote_access(cfg.ikev2.allow_modp1024),
        trust: PeerTrust { roots: ca, crls },
        time: Arc::new(rustls::time_provider::DefaultTimeProvider),
        cert_chain: chain,
        key: Arc::new(key),
        rng,
        ca_hashes,
        dpd_interval: parse_duration(&cfg.ikev2.dpd).unwrap_or(Duration::from_secs(30)),
        auth_timeout: Duration::from_secs(30),
        fragment_size: 1280,
        hard_lifetime: parse_duration(&cfg.ikev2.hard_lifetime)
            .unwrap_or(gatehouse_engine::ikev2::responder::DEFAULT_HARD_LIFETIME),
        sites: sites.to_vec(),
        offload: cfg.handshake_threads > 0,
    }))
}
