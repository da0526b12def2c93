//! TLS for the TCP admin listener: the gateway's own certificate and key; handshakes run in
//! their own tasks (10 s each at most) so a slow client cannot hold up the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::tls::PkiPaths;

/// The longest a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// A TLS acceptor with the gateway certificate (and its chain) from `pki`.
pub fn acceptor(pki: &PkiPaths) -> Result<TlsAcceptor> {
    use gatehouse_engine::openvpn::tls::{certs_from_pem, key_from_pem};
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let certs = certs_from_pem(&read(&pki.cert)?)?;
    let key = key_from_pem(&read(&pki.key)?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Accepted, handshaken connections, as axum's `serve` wants them.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Binds `addr` and starts accepting.
    pub async fn bind(addr: SocketAddr, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let l = TcpListener::bind(addr).await?;
        let local = l.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((s, peer)) = l.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (a, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(t)) = tokio::time::timeout(HANDSHAKE, a.accept(s)).await {
                        let _ = tx.send((t, peer)).await;
                    }
                });
            }
        });
        Ok(Self { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
