//! One worker's QUIC endpoint: quinn-proto's [`Endpoint`] seeded from the core's entropy,
//! with connection IDs that name the worker ([`ShardCids`]) and the core's clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use quinn_proto::{
    ConnectionEvent, ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig, EndpointEvent,
    ServerConfig,
};
use ring::{hkdf, hmac};

use super::cid::ShardCids;
use super::clock::CoreClock;
use super::config::QuicConfig;
use super::session::QuicSession;
use crate::entropy::Entropy;

/// What a datagram on the QUIC port turned out to be.
pub enum Received {
    /// A packet of connection `handle`: hand the event to its session.
    Connection(ConnectionHandle, ConnectionEvent),
    /// A new connection, accepted.
    New(Box<QuicSession>),
    /// A stateless answer (version negotiation, retry, reset, refusal): send the bytes in
    /// the endpoint's buffer ([`QuicEndpoint::response`]) to `to`.
    Response {
        /// The peer.
        to: SocketAddr,
    },
    /// A new connection refused (CONNECTION_REFUSED, the core's handshake limit): send the
    /// bytes in [`QuicEndpoint::response`] to `to`.
    Refused {
        /// The peer.
        to: SocketAddr,
    },
    /// Nothing to do (dropped).
    Nothing,
}

/// How a new connection is let in, by the core's count of handshakes in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Accepted at once.
    Accept,
    /// Busy: a client whose address is not validated yet is sent a Retry first (RFC 9000
    /// 8.1.2), so a forged source address cannot hold a handshake.
    Validate,
    /// Full: refused (CONNECTION_REFUSED).
    Refuse,
}

/// One worker's QUIC endpoint.
pub struct QuicEndpoint {
    endpoint: Endpoint,
    token_key: Arc<hkdf::Prk>,
    clock: CoreClock,
    server: Arc<ServerConfig>,
    buf: Vec<u8>,
    retries: u64,
}

impl QuicEndpoint {
    /// The endpoint of worker `worker`: every secret quinn-proto needs (RNG seed, stateless
    /// reset key, token key, connection-ID key) is drawn from `entropy`.
    pub fn new(worker: u8, cfg: &QuicConfig, entropy: &mut dyn Entropy, clock: CoreClock) -> Self {
        let mut reset = [0u8; 64];
        entropy.fill(&mut reset);
        let mut cid_key = [0u8; 32];
        entropy.fill(&mut cid_key);
        let mut token = [0u8; 64];
        entropy.fill(&mut token);
        let mut seed = [0u8; 32];
        entropy.fill(&mut seed);
        let mut ec = EndpointConfig::new(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &reset)));
        ec.cid_generator(move || Box::new(ShardCids::new(worker, &cid_key)));
        let token_key = Arc::new(hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&token));
        let server = Arc::new(server_config(cfg, token_key.clone(), &clock));
        let endpoint = Endpoint::new(Arc::new(ec), Some(server.clone()), true, Some(seed));
        Self {
            endpoint,
            token_key,
            clock,
            server,
            buf: Vec::with_capacity(1500),
            retries: 0,
        }
    }

    /// Uses `cfg` for new connections (a new CRL, a reload); open ones keep theirs.
    pub fn set_config(&mut self, cfg: &QuicConfig) {
        self.server = Arc::new(server_config(cfg, self.token_key.clone(), &self.clock));
        self.endpoint.set_server_config(Some(self.server.clone()));
    }

    /// The clock quinn-proto reads.
    pub fn clock(&self) -> &CoreClock {
        &self.clock
    }

    /// A datagram from `remote`. `admission`: how a new connection may start (the core's
    /// handshake limits).
    pub fn handle(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        bytes: &[u8],
        admission: Admission,
    ) -> Received {
        self.clock.set(now);
        self.buf.clear();
        let ev = self
            .endpoint
            .handle(now, remote, None, None, bytes.into(), &mut self.buf);
        match ev {
            None => Received::Nothing,
            Some(DatagramEvent::ConnectionEvent(h, e)) => Received::Connection(h, e),
            Some(DatagramEvent::Response(t)) => {
                self.buf.truncate(t.size);
                Received::Response { to: t.destination }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.buf.clear();
                if admission == Admission::Refuse {
                    let t = self.endpoint.refuse(incoming, &mut self.buf);
                    self.buf.truncate(t.size);
                    return Received::Refused { to: t.destination };
                }
                if admission == Admission::Validate
                    && !incoming.remote_address_validated()
                    && incoming.may_retry()
                {
                    return match self.endpoint.retry(incoming, &mut self.buf) {
                        Ok(t) => {
                            self.retries += 1;
                            self.buf.truncate(t.size);
                            Received::Response { to: t.destination }
                        }
                        Err(e) => {
                            self.endpoint.ignore(e.into_incoming());
                            Received::Nothing
                        }
                    };
                }
                match self.endpoint.accept(incoming, now, &mut self.buf, None) {
                    Ok((h, conn)) => Received::New(Box::new(QuicSession::new(h, conn))),
                    Err(e) => match e.response {
                        Some(t) => {
                            self.buf.truncate(t.size);
                            Received::Response { to: t.destination }
                        }
                        None => Received::Nothing,
                    },
                }
            }
        }
    }

    /// The bytes of the last [`Received::Response`].
    pub fn response(&self) -> &[u8] {
        &self.buf
    }

    /// A connection's message for the endpoint; maybe an answer for the connection.
    pub fn handle_event(
        &mut self,
        handle: ConnectionHandle,
        ev: EndpointEvent,
    ) -> Option<ConnectionEvent> {
        self.endpoint.handle_event(handle, ev)
    }

    /// Retry packets sent so far.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Connections the endpoint knows (tests).
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }
}

fn server_config(cfg: &QuicConfig, token_key: Arc<hkdf::Prk>, clock: &CoreClock) -> ServerConfig {
    let mut s = ServerConfig::new(cfg.crypto.clone(), token_key);
    s.transport_config(cfg.transport.clone())
        .migration(true)
        .time_source(Arc::new(clock.clone()));
    s
}
