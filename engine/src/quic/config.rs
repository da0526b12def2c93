//! What a gateway's QUIC listener needs that does not change per worker: the TLS
//! configuration (the OpenVPN path's client-certificate verifier, TLS 1.3 only, ALPN
//! `gatehouse-ip/1`, no 0-RTT, no resumption) and the transport parameters of docs/quic.md.

use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::QuicServerConfig;
use quinn_proto::{IdleTimeout, TransportConfig, VarInt};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::time_provider::TimeProvider;

use super::ALPN;
use crate::openvpn::tls::{TlsConfigError, TlsVersionMin, server_config_min_version};

/// The MTU the gateway tells clients by default (TUNNEL_MTU): it fits the DATAGRAM frames of
/// [`INITIAL_MTU`].
pub const DEFAULT_TUNNEL_MTU: u16 = 1280;

/// The UDP payload size the gateway's connections start with (path MTU discovery may raise
/// it): 1400 leaves room for a 1280-byte packet, QUIC's short header and the AEAD tag.
pub const INITIAL_MTU: u16 = 1400;

/// Idle timeout of a connection (the client pings every 10 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The QUIC listener's configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum QuicConfigError {
    /// The TLS material or verifier.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The crypto provider has no TLS_AES_128_GCM_SHA256, which QUIC's Initial packets need.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// The gateway's QUIC listener configuration (shared by every worker).
pub struct QuicConfig {
    /// TLS for QUIC.
    pub crypto: Arc<QuicServerConfig>,
    /// Transport parameters.
    pub transport: Arc<TransportConfig>,
    /// The MTU announced in TUNNEL_MTU; TCP SYNs in either direction are clamped to fit.
    pub tunnel_mtu: u16,
}

impl std::fmt::Debug for QuicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicConfig")
            .field("tunnel_mtu", &self.tunnel_mtu)
            .finish_non_exhaustive()
    }
}

impl QuicConfig {
    /// A configuration from the gateway's PKI: client certificates are mandatory and checked
    /// against `ca` and `crls` exactly as on the OpenVPN path (chain, validity, clientAuth
    /// EKU, CRL, [`crate::cert_policy`]), with the same refusal reasons.
    pub fn from_pki(
        provider: Arc<CryptoProvider>,
        time: Arc<dyn TimeProvider>,
        ca: &[CertificateDer<'static>],
        crls: Vec<CertificateRevocationListDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        tunnel_mtu: u16,
    ) -> Result<Self, QuicConfigError> {
        let tls =
            server_config_min_version(provider, time, ca, crls, chain, key, TlsVersionMin::Tls13)?;
        Self::from_tls(&tls, tunnel_mtu)
    }

    /// A configuration from a rustls server configuration with the gateway's verifier (as
    /// [`server_config_min_version`] makes it): ALPN, 0-RTT and resumption are set here.
    pub fn from_tls(tls: &rustls::ServerConfig, tunnel_mtu: u16) -> Result<Self, QuicConfigError> {
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        // No 0-RTT and no resumption: every connection presents its certificate and passes
        // the verifier (and the CRL) again.
        tls.max_early_data_size = 0;
        tls.send_tls13_tickets = 0;
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let crypto = QuicServerConfig::try_from(Arc::new(tls))
            .map_err(|e| QuicConfigError::Quic(e.to_string()))?;
        Ok(Self {
            crypto: Arc::new(crypto),
            transport: Arc::new(transport()),
            tunnel_mtu,
        })
    }
}

/// docs/quic.md: only the client's first bidirectional stream, DATAGRAM frames, a 30 s idle
/// timeout (the client keeps the connection alive), connection migration on.
fn transport() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok())
        .keep_alive_interval(None)
        .initial_mtu(INITIAL_MTU)
        .datagram_receive_buffer_size(Some(1 << 20))
        .datagram_send_buffer_size(1 << 20);
    t
}
