//! One client's QUIC connection on the gateway: the quinn-proto [`Connection`] plus what
//! docs/quic.md adds on top - the control stream and its capsules, the READY gate on
//! datagrams, and events the gateway core understands.
//!
//! The core calls, in this order after any input: [`QuicSession::handle_event`] /
//! [`QuicSession::handle_timeout`], then [`QuicSession::process`] (events), endpoint events
//! through [`QuicSession::poll_endpoint_event`], then [`QuicSession::poll_transmit`] and
//! [`QuicSession::poll_timeout`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use quinn_proto::{
    Connection, ConnectionError, ConnectionEvent, ConnectionHandle, Dir, EndpointEvent, Event,
    SendDatagramError, StreamEvent, StreamId,
};
use rustls::pki_types::CertificateDer;

use super::CloseCode;
use crate::openvpn::tls::{common_name, take_last_refusal};
use crate::wire::capsule::CapsuleDecoder;

/// What a session reports to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// TLS verified the client's certificate: admit it (or refuse it).
    Authenticated {
        /// The certificate's common name.
        client: String,
    },
    /// The client was refused (by TLS, with the verifier's reason, or by the gateway).
    Refused {
        /// The certificate's name, when known.
        client: Option<String>,
        /// Why.
        reason: String,
    },
    /// The connection ended (either side, idle timeout); reported once.
    Closed(String),
}

/// Why a datagram could not be sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Not admitted yet, or closing.
    NotReady,
    /// Larger than the path's current datagram size.
    TooLarge,
}

/// Inner traffic of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// IP bytes received from the client.
    pub rx_bytes: u64,
    /// IP bytes sent to the client.
    pub tx_bytes: u64,
    /// IP packets received.
    pub rx_packets: u64,
    /// IP packets sent.
    pub tx_packets: u64,
}

/// One client's connection. See the module documentation.
pub struct QuicSession {
    conn: Connection,
    handle: ConnectionHandle,
    /// The client's control stream, once it opened it.
    control: Option<StreamId>,
    /// Capsule bytes not yet accepted by the control stream.
    pending: Vec<u8>,
    /// The client's capsules (none are required; unknown ones are skipped).
    decoder: CapsuleDecoder,
    /// READY was queued: datagrams flow.
    ready: bool,
    authenticated: bool,
    closed: bool,
    drained: bool,
    /// The verifier's reason, when TLS refused the client's certificate.
    refusal: Option<(Option<String>, String)>,
    peer_cert: Option<Vec<u8>>,
    client: Option<String>,
    events: VecDeque<SessionEvent>,
    timeout: Option<Instant>,
    /// Inner traffic.
    pub stats: SessionStats,
}

impl QuicSession {
    /// A session for a connection the endpoint accepted.
    pub fn new(handle: ConnectionHandle, conn: Connection) -> Self {
        Self {
            conn,
            handle,
            control: None,
            pending: Vec::new(),
            decoder: CapsuleDecoder::new(),
            ready: false,
            authenticated: false,
            closed: false,
            drained: false,
            refusal: None,
            peer_cert: None,
            client: None,
            events: VecDeque::new(),
            timeout: None,
            stats: SessionStats::default(),
        }
    }

    /// The endpoint's handle of this connection.
    pub fn handle(&self) -> ConnectionHandle {
        self.handle
    }

    /// The client's current address (it changes when the client migrates).
    pub fn remote(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// The client's certificate (DER), once TLS verified it.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_cert.as_deref()
    }

    /// What protects the tunnel, for status: quinn-proto does not expose the negotiated
    /// suite, only that it is TLS 1.3's (AES-GCM or ChaCha20-Poly1305 packet protection).
    pub fn cipher(&self) -> &'static str {
        "QUIC TLS1.3"
    }

    /// Datagrams flow (the configuration was sent).
    pub fn is_ready(&self) -> bool {
        self.ready && !self.closed
    }

    /// The connection is gone and the endpoint forgot it.
    pub fn is_drained(&self) -> bool {
        self.drained
    }

    /// A datagram (or endpoint message) for this connection.
    pub fn handle_event(&mut self, ev: ConnectionEvent) {
        self.conn.handle_event(ev);
        self.note_refusal();
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        self.note_refusal();
    }

    /// The certificate verifier runs inside rustls on this thread and leaves its reason
    /// behind (see [`crate::openvpn::tls`]); quinn-proto only carries the alert.
    fn note_refusal(&mut self) {
        if let Some(r) = take_last_refusal() {
            let reason = r.to_string();
            self.refusal = Some((r.name, reason));
        }
    }

    /// Turns the connection's events into session events; reads the control stream.
    pub fn process(&mut self, now: Instant) {
        while let Some(ev) = self.conn.poll() {
            match ev {
                Event::HandshakeDataReady | Event::DatagramReceived | Event::DatagramsUnblocked => {
                }
                Event::Connected => self.on_connected(now),
                Event::ConnectionLost { reason } => self.on_lost(reason),
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    while let Some(id) = self.conn.streams().accept(Dir::Bi) {
                        if self.control.is_none() {
                            self.control = Some(id);
                            self.flush_control();
                        }
                        self.read_control(now, id);
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => self.read_control(now, id),
                Event::Stream(StreamEvent::Writable { .. }) => self.flush_control(),
                Event::Stream(_) => {}
            }
        }
    }

    fn on_connected(&mut self, now: Instant) {
        let certs = self
            .conn
            .crypto_session()
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok());
        let Some(leaf) = certs.and_then(|c| c.first().map(|c| c.as_ref().to_vec())) else {
            self.refuse(now, CloseCode::Protocol, "peer presented no certificate");
            return;
        };
        let Some(name) = common_name(&leaf) else {
            self.refuse(
                now,
                CloseCode::Protocol,
                "client certificate has no common name",
            );
            return;
        };
        self.peer_cert = Some(leaf);
        self.client = Some(name.clone());
        self.authenticated = true;
        self.events
            .push_back(SessionEvent::Authenticated { client: name });
    }

    fn on_lost(&mut self, reason: ConnectionError) {
        if self.closed {
            return;
        }
        self.closed = true;
        if !self.authenticated {
            // A refusal: the verifier's reason, or a TLS/QUIC error of the handshake (no
            // ALPN, no certificate). A client that went away mid-handshake is no refusal.
            let refused = match (self.refusal.take(), &reason) {
                (Some((name, why)), _) => Some((name, why)),
                (None, ConnectionError::TransportError(e)) => {
                    Some((None, format!("QUIC handshake failed: {e}")))
                }
                _ => None,
            };
            if let Some((client, why)) = refused {
                self.events.push_back(SessionEvent::Refused {
                    client,
                    reason: why,
                });
            }
        }
        let why = match reason {
            ConnectionError::TimedOut => "QUIC idle timeout".to_owned(),
            ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == 0 => {
                "client disconnected".to_owned()
            }
            other => format!("QUIC: {other}"),
        };
        self.events.push_back(SessionEvent::Closed(why));
    }

    fn read_control(&mut self, now: Instant, id: StreamId) {
        if Some(id) != self.control {
            return;
        }
        let mut broken = false;
        {
            let mut recv = self.conn.recv_stream(id);
            let Ok(mut chunks) = recv.read(true) else {
                return;
            };
            while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
                self.decoder.push(&chunk.bytes);
            }
            let _ = chunks.finalize();
        }
        loop {
            match self.decoder.pop() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            self.close(
                now,
                CloseCode::Protocol,
                "malformed capsule on the control stream",
            );
        }
    }

    fn flush_control(&mut self) {
        let Some(id) = self.control else {
            return;
        };
        if self.pending.is_empty() {
            return;
        }
        if let Ok(n) = self.conn.send_stream(id).write(&self.pending) {
            self.pending.drain(..n);
        }
    }

    /// The client is admitted: sends its configuration (encoded capsules ending with READY)
    /// and lets datagrams flow.
    pub fn accept(&mut self, capsules: &[u8]) {
        self.pending.extend_from_slice(capsules);
        self.ready = true;
        self.flush_control();
    }

    /// Sends a new configuration (a reload changed DNS or routes).
    pub fn reconfigure(&mut self, capsules: &[u8]) {
        if self.ready {
            self.accept(capsules);
        }
    }

    /// Refuses the client: a Refused event, then the connection closes with `code`.
    pub fn refuse(&mut self, now: Instant, code: CloseCode, reason: &str) {
        if self.closed {
            return;
        }
        self.events.push_back(SessionEvent::Refused {
            client: self.client.clone(),
            reason: reason.to_owned(),
        });
        self.close(now, code, reason);
    }

    /// Closes the connection with application error `code` and `reason` (the client reads
    /// both); reports Closed.
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.ready = false;
        self.conn
            .close(now, code.varint(), reason.as_bytes().to_vec().into());
        self.events
            .push_back(SessionEvent::Closed(reason.to_owned()));
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// The next message for the endpoint (new connection IDs, retirement, drained).
    pub fn poll_endpoint_event(&mut self) -> Option<EndpointEvent> {
        let ev = self.conn.poll_endpoint_events()?;
        if ev.is_drained() {
            self.drained = true;
        }
        Some(ev)
    }

    /// The next datagram to send: its destination and length in `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        buf.clear();
        let t = self.conn.poll_transmit(now, 1, buf)?;
        buf.truncate(t.size);
        Some(t.destination)
    }

    /// Recomputes the deadline (after input, before [`poll_timeout`](Self::poll_timeout)).
    pub fn update_timeout(&mut self) {
        self.timeout = self.conn.poll_timeout();
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timeout
    }

    /// The next IP packet the client sent, if any. Before READY they are received and
    /// discarded (`Err`).
    pub fn recv_datagram(&mut self) -> Option<Result<impl AsRef<[u8]> + use<>, ()>> {
        let d = self.conn.datagrams().recv()?;
        if !self.is_ready() {
            return Some(Err(()));
        }
        self.stats.rx_bytes += d.len() as u64;
        self.stats.rx_packets += 1;
        Some(Ok(d))
    }

    /// Queues an IP packet for the client.
    pub fn send_datagram(&mut self, packet: &[u8]) -> Result<(), SendError> {
        if !self.is_ready() {
            return Err(SendError::NotReady);
        }
        match self.conn.datagrams().send(packet.to_vec().into(), true) {
            Ok(()) => {
                self.stats.tx_bytes += packet.len() as u64;
                self.stats.tx_packets += 1;
                Ok(())
            }
            Err(SendDatagramError::TooLarge) => Err(SendError::TooLarge),
            Err(_) => Err(SendError::NotReady),
        }
    }

    /// Whether the connection is closing or closed (no more traffic).
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}
