//! The gateway side of one OpenVPN client session.
//!
//! Inputs: [`ServerSession::new`] with the client's first packet (P_CONTROL_HARD_RESET_CLIENT_V2),
//! then [`handle_control`](ServerSession::handle_control), [`handle_data`](ServerSession::handle_data),
//! [`encrypt`](ServerSession::encrypt) (a packet from TUN), [`accept`](ServerSession::accept) /
//! [`reject`](ServerSession::reject) (the driver's answer to [`ServerEvent::Authenticated`]) and
//! [`handle_timeout`](ServerSession::handle_timeout). Outputs: [`poll_transmit`](ServerSession::poll_transmit)
//! (one datagram at a time), [`poll_event`](ServerSession::poll_event) and
//! [`poll_timeout`](ServerSession::poll_timeout). After every input, drain transmits and events,
//! then sleep until the next timeout.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::data::{Cipher, DataChannel, PING_PAYLOAD};
use super::datapath::{DataOutcome, DataPathError, open_data, tx_key};
use super::key_state::{ControlError, KeyState};
use super::keymethod::{
    ClientKeySource, KeyMethod2, PeerInfo, ServerKeySource, choose_cipher, options_use_compression,
};
use super::keys::{DataKeys, EKM_LABEL, KEY_BLOCK_LEN, Role, prf_key_block};
use super::push::{PushCaps, PushReply};
use super::tls::{common_name, describe_session, refusal_of, version_refusal};
use super::tls_job::{TlsDone, TlsJob};
use super::wrap::{FirstPacket, ServerWrap, WrapError, Wrapper};
use crate::entropy::Entropy;
use crate::wire::openvpn::{ControlPacket, Opcode, Packet};

mod handoff;
pub use handoff::{HANDOFF_PACKET_ID_SKIP, HandoffError, KeyHandoff, SessionHandoff};
pub(crate) use handoff::{back, ms_ago};

/// Gateway-wide OpenVPN settings shared by every session.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TLS configuration with the client-certificate verifier (CA + CRL).
    pub tls: Arc<rustls::ServerConfig>,
    /// Derive data keys with the TLS exporter when the client supports it.
    pub tls_ekm: bool,
    /// Data ciphers in the gateway's order of preference.
    pub ciphers: Vec<Cipher>,
    /// Keepalive interval (pushed, and used for our own pings).
    pub ping: Duration,
    /// Pushed ping-restart: the client restarts after this long without traffic.
    pub ping_restart: Duration,
    /// The gateway drops a session after this long without traffic.
    pub inactivity_timeout: Duration,
    /// Renegotiate data keys this often (reneg-sec); None = never from our side.
    pub reneg_interval: Option<Duration>,
    /// A key state that is not up after this long is abandoned (hand-window).
    pub handshake_timeout: Duration,
    /// How long a retired key still decrypts after a renegotiation (tran-window).
    pub transition_window: Duration,
    /// Tunnel MTU pushed to clients.
    pub tun_mtu: u16,
    /// Control-channel wrapper clients must use (tls-auth, tls-crypt, tls-crypt-v2); the
    /// driver checks a new session's first packet with
    /// [`ServerWrap::authenticate_first`].
    pub wrap: ServerWrap,
    /// Sessions hand their TLS handshakes out as jobs
    /// ([`ServerSession::poll_tls_job`]) for the driver to run on another thread, instead of
    /// doing the handshake's crypto where their packets are handled.
    pub offload_handshakes: bool,
}

impl ServerConfig {
    /// Defaults matching a stock OpenVPN 2.6 server with `keepalive 10 60`.
    pub fn new(tls: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tls,
            tls_ekm: true,
            ciphers: Cipher::ALL.to_vec(),
            ping: Duration::from_secs(10),
            ping_restart: Duration::from_secs(60),
            inactivity_timeout: Duration::from_secs(120),
            reneg_interval: Some(Duration::from_secs(3600)),
            handshake_timeout: Duration::from_secs(60),
            transition_window: Duration::from_secs(60),
            tun_mtu: 1500,
            wrap: ServerWrap::None,
            offload_handshakes: false,
        }
    }
}

/// What the gateway assigns to an authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The client's virtual address.
    pub address: Ipv4Addr,
    /// The tunnel subnet (the client pool).
    pub subnet: Ipv4Net,
    /// The gateway's own address in the subnet.
    pub gateway: Ipv4Addr,
    /// Prefixes routed into the tunnel.
    pub routes: Vec<Ipv4Net>,
    /// DNS servers.
    pub dns: Vec<IpAddr>,
    /// Split-DNS domains (normalized); empty: all names go to `dns`.
    pub dns_domains: Vec<String>,
    /// Full tunnel.
    pub redirect_gateway: bool,
    /// IPv6 inside the tunnel (None: IPv4 only).
    pub ipv6: Option<crate::pool6::Ipv6Assignment>,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client said EXIT.
    ClientExit,
    /// Nothing received for the inactivity timeout.
    Inactive,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// TLS or protocol failure.
    Error(String),
    /// The gateway refused the client (reason sent as AUTH_FAILED).
    Refused(String),
    /// The driver closed it (shutdown, replaced by a newer login).
    Local(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ClientExit => f.write_str("client disconnected (EXIT)"),
            CloseReason::Inactive => f.write_str("no traffic from client (ping timeout)"),
            CloseReason::HandshakeTimeout => f.write_str("handshake timed out"),
            CloseReason::Error(e) => write!(f, "error: {e}"),
            CloseReason::Refused(r) => write!(f, "refused: {r}"),
            CloseReason::Local(r) => f.write_str(r),
        }
    }
}

/// Something the driver must know or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// TLS verified the client certificate and key-method 2 arrived. Answer with
    /// [`ServerSession::accept`] or [`ServerSession::reject`].
    Authenticated {
        /// The certificate's common name.
        client: String,
        /// What the client told about itself.
        peer_info: PeerInfo,
    },
    /// PUSH_REPLY sent and data keys installed: the tunnel is up.
    Established {
        /// Negotiated data cipher.
        cipher: Cipher,
        /// Keys from the TLS exporter (true) or the classic PRF (false).
        tls_ekm: bool,
    },
    /// A renegotiation installed new data keys.
    Rekeyed {
        /// The new key id.
        key_id: u8,
    },
    /// The client was refused before a tunnel came up.
    Refused {
        /// The client's name, when its certificate could be read.
        client: Option<String>,
        /// Why.
        reason: String,
    },
    /// The session is over; drop it after draining transmits.
    Closed(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TLS and key-method 2 in progress.
    Handshake,
    /// Waiting for the driver's accept/reject.
    AwaitingDecision,
    /// Tunnel up.
    Active,
    /// Flushing final messages (AUTH_FAILED, RESTART), then gone.
    Closing,
    /// Gone.
    Closed,
}

struct Negotiated {
    client: String,
    cipher: Cipher,
    tls_ekm: bool,
    compress_stub_v2: bool,
    caps: PushCaps,
}

/// One client session on the gateway.
pub struct ServerSession {
    config: Arc<ServerConfig>,
    entropy: Box<dyn Entropy>,
    local_sid: u64,
    remote_sid: u64,
    peer_id: u32,
    keys: Vec<KeyState>,
    next_key_id: u8,
    phase: Phase,
    negotiated: Option<Negotiated>,
    push_reply: Option<String>,
    client_sources: Vec<(u8, ClientKeySource)>,
    server_sources: Vec<(u8, ServerKeySource)>,
    events: VecDeque<ServerEvent>,
    last_rx: Instant,
    last_tx: Instant,
    close_at: Option<Instant>,
    pending_ping: bool,
    /// Control-channel wrapper of this session.
    wrap: Wrapper,
    /// Packets accepted and sent on the data channel.
    pub stats: SessionStats,
    /// TLS jobs handed out so far (each key state waits for its job by number).
    jobs_started: u64,
}

/// Byte and packet counters of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// IP bytes received from the client (decrypted).
    pub rx_bytes: u64,
    /// IP bytes sent to the client (before encryption).
    pub tx_bytes: u64,
    /// IP packets received.
    pub rx_packets: u64,
    /// IP packets sent.
    pub tx_packets: u64,
}

const OPTIONS_STRING: &str = "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,cipher AES-256-GCM,auth [null-digest],keysize 256,key-method 2,tls-server";

impl ServerSession {
    /// Starts a session from a client's hard reset.
    ///
    /// `peer_id` is the id the client will put in P_DATA_V2 headers (unique per gateway).
    pub fn new(
        config: Arc<ServerConfig>,
        mut entropy: Box<dyn Entropy>,
        now: Instant,
        peer_id: u32,
        first: &ControlPacket<'_>,
    ) -> Result<Self, ControlError> {
        let local_sid = entropy.next_u64();
        let tls = rustls::ServerConnection::new(config.tls.clone())?;
        let key = KeyState::new(0, tls.into(), Opcode::ControlHardResetServerV2, now);
        let mut s = Self::with_key(
            config,
            entropy,
            now,
            peer_id,
            local_sid,
            first.session_id,
            key,
        );
        s.handle_control(now, first);
        Ok(s)
    }

    /// Starts a session from the packet that proved the client got our stateless reset
    /// (authenticated with [`ServerWrap::authenticate_proof`]; its cookie checked by the
    /// driver, see [`crate::openvpn::cookie`]). `local_sid` is the cookie our reset carried;
    /// `ack_reset`: our reset did not acknowledge the client's, so this session does.
    pub fn from_cookie(
        config: Arc<ServerConfig>,
        entropy: Box<dyn Entropy>,
        now: Instant,
        peer_id: u32,
        local_sid: u64,
        proof: FirstPacket,
        ack_reset: bool,
    ) -> Result<Self, ControlError> {
        let plain = proof.packet.clone();
        let Ok(Packet::Control(pkt)) = Packet::parse(&plain) else {
            return Err(rustls::Error::General("not a control packet".into()).into());
        };
        let tls = rustls::ServerConnection::new(config.tls.clone())?;
        let key = KeyState::after_cookie(tls.into(), now, ack_reset);
        let mut s = Self::with_key(
            config,
            entropy,
            now,
            peer_id,
            local_sid,
            pkt.session_id,
            key,
        );
        s.wrap = proof.into_wrapper();
        s.handle_plain_control(now, &pkt);
        Ok(s)
    }

    fn with_key(
        config: Arc<ServerConfig>,
        entropy: Box<dyn Entropy>,
        now: Instant,
        peer_id: u32,
        local_sid: u64,
        remote_sid: u64,
        mut key: KeyState,
    ) -> Self {
        key.offload = config.offload_handshakes;
        Self {
            config,
            entropy,
            local_sid,
            remote_sid,
            peer_id: peer_id & 0x00ff_ffff,
            keys: vec![key],
            next_key_id: 1,
            phase: Phase::Handshake,
            negotiated: None,
            push_reply: None,
            client_sources: Vec::new(),
            server_sources: Vec::new(),
            events: VecDeque::new(),
            last_rx: now,
            last_tx: now,
            close_at: None,
            pending_ping: false,
            wrap: Wrapper::server_none(),
            stats: SessionStats::default(),
            jobs_started: 0,
        }
    }

    /// Starts a session from a first packet the driver authenticated with
    /// [`ServerWrap::authenticate_first`]; the session keeps its wrapper (and, for
    /// tls-crypt-v2, the client's key) for all later control packets.
    pub fn new_wrapped(
        config: Arc<ServerConfig>,
        entropy: Box<dyn Entropy>,
        now: Instant,
        peer_id: u32,
        first: FirstPacket,
    ) -> Result<Self, ControlError> {
        let mut s = {
            let pkt = first
                .packet()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            Self::new(config, entropy, now, peer_id, &pkt)?
        };
        s.wrap = first.into_wrapper();
        Ok(s)
    }

    /// Feeds a control datagram from the client as it came off the wire: unwrapped and
    /// authenticated first; a packet that fails is dropped (never answered) and the reason
    /// returned for the driver's drop counters.
    pub fn handle_control_datagram(&mut self, now: Instant, wire: &[u8]) -> Result<(), WrapError> {
        let mut plain = Vec::with_capacity(wire.len());
        self.wrap.unwrap(wire, &mut plain)?;
        let Ok(Packet::Control(pkt)) = Packet::parse(&plain) else {
            return Err(WrapError::Malformed);
        };
        self.handle_plain_control(now, &pkt);
        Ok(())
    }

    /// The control-channel wrapper in use ("none", "tls-auth", "tls-crypt", "tls-crypt-v2").
    pub fn wrapper_name(&self) -> &'static str {
        self.wrap.mode_name()
    }

    /// The metadata in the client's tls-crypt-v2 key (first byte its type).
    pub fn tls_crypt_v2_metadata(&self) -> Option<&[u8]> {
        self.wrap.metadata()
    }

    /// The client's session id (from its hard reset).
    pub fn remote_session_id(&self) -> u64 {
        self.remote_sid
    }

    /// The peer-id assigned to this session.
    pub fn peer_id(&self) -> u32 {
        self.peer_id
    }

    /// The client's end-entity certificate (DER), once TLS verified it.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.keys
            .iter()
            .find_map(|k| k.tls()?.peer_certificates().and_then(|c| c.first()))
            .map(|c| c.as_ref())
    }

    /// Replaces the configuration used from now on: renegotiations verify the client against
    /// the new one (a CRL that changed since the session started).
    pub fn set_config(&mut self, config: Arc<ServerConfig>) {
        self.config = config;
    }

    /// Ends an established session whose certificate was revoked: the client is told with
    /// `AUTH_FAILED,<reason>` (a stock client then stops instead of retrying), then the
    /// session closes.
    pub fn end_revoked(&mut self, now: Instant, reason: &str) {
        if let Some(k) = self.primary_mut() {
            k.write_plaintext(format!("AUTH_FAILED,{reason}\0").as_bytes());
        }
        self.begin_close(now, CloseReason::Local(reason.to_owned()));
    }

    /// The authenticated client name, once known.
    pub fn client_name(&self) -> Option<&str> {
        self.negotiated.as_ref().map(|n| n.client.as_str())
    }

    /// The TLS version and cipher suite of the first handshake (`("TLSv1.2",
    /// "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")`), once it finished.
    pub fn tls_session(&self) -> Option<(&'static str, String)> {
        self.keys.iter().find_map(|k| describe_session(k.tls()?))
    }

    /// The PUSH_REPLY sent to the client (without the trailing NUL), once accepted.
    pub fn push_reply(&self) -> Option<&str> {
        self.push_reply.as_deref()
    }

    /// True when the tunnel is up.
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Active
    }

    /// Whether the client was heard (an authenticated packet) within the last two keepalive
    /// intervals, and at least 15 s: the session is alive and a hard reset from its address
    /// is not its client restarting.
    pub fn is_live(&self, now: Instant) -> bool {
        now < self.last_rx + (self.config.ping * 2).max(Duration::from_secs(15))
    }

    /// True when the session is over and can be dropped.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Feeds a control packet that belongs to this session, already parsed. Only for
    /// sessions without a wrapper (with one, nothing unauthenticated may reach TLS: use
    /// [`handle_control_datagram`](Self::handle_control_datagram)).
    pub fn handle_control(&mut self, now: Instant, pkt: &ControlPacket<'_>) {
        if self.wrap.is_none() {
            self.handle_plain_control(now, pkt);
        }
    }

    fn handle_plain_control(&mut self, now: Instant, pkt: &ControlPacket<'_>) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if pkt.session_id != self.remote_sid {
            return;
        }
        if let Some(r) = pkt.remote_session_id
            && r != self.local_sid
        {
            return;
        }
        self.last_rx = now;
        let idx = match self.keys.iter().position(|k| k.key_id == pkt.key_id) {
            Some(i) => i,
            None if pkt.opcode == Opcode::ControlSoftResetV1 && self.phase == Phase::Active => {
                match self.start_key_state(now, pkt.key_id) {
                    Some(i) => i,
                    None => return,
                }
            }
            None => return,
        };
        if let Err(e) = self.keys[idx].handle_control(pkt) {
            self.fail_key(now, idx, e);
            return;
        }
        self.process_key(now, idx);
    }

    fn start_key_state(&mut self, now: Instant, key_id: u8) -> Option<usize> {
        if key_id == 0 || key_id > 7 {
            return None;
        }
        // At most one renegotiation in flight besides the active key and one retiring key.
        self.keys.retain(|k| k.active_since.is_some());
        if self.keys.len() > 2 {
            self.keys.remove(0);
        }
        let tls = rustls::ServerConnection::new(self.config.tls.clone()).ok()?;
        let mut key = KeyState::new(key_id, tls.into(), Opcode::ControlSoftResetV1, now);
        key.offload = self.config.offload_handshakes;
        self.keys.push(key);
        self.next_key_id = if key_id >= 7 { 1 } else { key_id + 1 };
        Some(self.keys.len() - 1)
    }

    /// A TLS handshake step to run elsewhere (only with
    /// [`ServerConfig::offload_handshakes`]): `(key id, job number, job)`. Hand the result
    /// back with [`tls_job_done`](Self::tls_job_done); until then that key state waits
    /// (records for it are kept) and the session's other key states work as usual.
    pub fn poll_tls_job(&mut self) -> Option<(u8, u64, TlsJob)> {
        let seq = self.jobs_started;
        let key = self.keys.iter_mut().find(|k| k.has_job())?;
        let job = key.take_job(seq)?;
        self.jobs_started += 1;
        Some((key.key_id, seq, job))
    }

    /// The result of job `seq` for key id `key_id`: the handshake carries on. A result
    /// nobody waits for any more (the key state failed or was replaced meanwhile) is
    /// dropped.
    pub fn tls_job_done(&mut self, now: Instant, key_id: u8, seq: u64, done: TlsDone) {
        let Some(idx) = self
            .keys
            .iter()
            .position(|k| k.key_id == key_id && k.waits_for(seq))
        else {
            return;
        };
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if let Err(e) = self.keys[idx].finish_job(done) {
            self.fail_key(now, idx, e);
            return;
        }
        self.process_key(now, idx);
    }

    /// Starts a renegotiation from the gateway's side (also triggered by reneg-sec).
    pub fn renegotiate(&mut self, now: Instant) {
        if self.phase != Phase::Active || self.keys.iter().any(|k| k.active_since.is_none()) {
            return;
        }
        let id = self.next_key_id;
        self.start_key_state(now, id);
    }

    fn fail_key(&mut self, now: Instant, idx: usize, e: ControlError) {
        // Once closing, later packets hit the same TLS error again; the refusal and the
        // Closed event were already reported.
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        // Dropping just the failed key state is right for a renegotiation that did not finish
        // or a retiring key; the key carrying the traffic cannot go without taking the
        // tunnel with it (the peer keeps sending on it).
        let newest_active = self.keys.iter().filter_map(|k| k.active_since).max();
        let in_use = self.keys[idx]
            .active_since
            .is_some_and(|t| Some(t) == newest_active);
        let primary = self.keys[idx].key_id == 0 || self.phase != Phase::Active || in_use;
        let reason = match &e {
            ControlError::Tls(t) => match refusal_of(t) {
                Some(r) => {
                    if primary {
                        self.events.push_back(ServerEvent::Refused {
                            client: r.name.clone(),
                            reason: r.reason.clone(),
                        });
                    }
                    CloseReason::Refused(r.to_string())
                }
                None => match version_refusal(t) {
                    Some(reason) => {
                        if primary {
                            self.events.push_back(ServerEvent::Refused {
                                client: None,
                                reason: reason.clone(),
                            });
                        }
                        CloseReason::Refused(reason)
                    }
                    None => CloseReason::Error(e.to_string()),
                },
            },
            ControlError::TlsClosed => CloseReason::Error(e.to_string()),
            // The gateway logs the disconnect with this reason.
            ControlError::Limit(_) => CloseReason::Error(e.to_string()),
        };
        if primary || matches!(reason, CloseReason::Refused(_)) {
            self.begin_close(now, reason);
        } else {
            self.keys.remove(idx);
        }
    }

    fn begin_close(&mut self, now: Instant, reason: CloseReason) {
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        self.phase = Phase::Closing;
        self.close_at = Some(now + Duration::from_secs(2));
        self.events.push_back(ServerEvent::Closed(reason));
    }

    fn process_key(&mut self, now: Instant, idx: usize) {
        let key = &mut self.keys[idx];
        if !key.tls_done() || !key.peer_reset_seen {
            return;
        }
        if !key.km_received {
            // Key-method 2 is binary; it is the first plaintext after the handshake.
            let Ok((msg, used)) = KeyMethod2::parse_client(&key.plaintext) else {
                return; // wait for more (or garbage; the handshake timer ends it)
            };
            key.plaintext.drain(..used);
            key.km_received = true;
            let key_id = key.key_id;
            let mut src = ServerKeySource {
                random1: [0; 32],
                random2: [0; 32],
            };
            self.entropy.fill(&mut src.random1);
            self.entropy.fill(&mut src.random2);
            let reply = KeyMethod2 {
                key_source: src.clone(),
                options: OPTIONS_STRING.into(),
                username: None,
                password: None,
                peer_info: None,
            };
            let mut buf = Vec::new();
            reply.encode(&mut buf);
            let key = &mut self.keys[idx];
            key.write_plaintext(&buf);
            key.km_sent = true;
            self.client_sources.retain(|(k, _)| *k != key_id);
            self.server_sources.retain(|(k, _)| *k != key_id);
            self.client_sources.push((key_id, msg.key_source.clone()));
            self.server_sources.push((key_id, src));
            if key_id == 0 && self.phase == Phase::Handshake {
                self.on_first_key_method(now, idx, msg);
            } else if self.phase == Phase::Active {
                // The session's identity was settled at the first handshake (and the driver
                // assigned its address by it): like OpenVPN, refuse a renegotiation that
                // presents someone else's certificate.
                let name = self.keys[idx]
                    .tls()
                    .and_then(|t| t.peer_certificates())
                    .and_then(|c| c.first())
                    .and_then(|c| common_name(c))
                    .unwrap_or_default();
                let before = self.client_name().unwrap_or_default().to_owned();
                if name != before {
                    self.begin_close(
                        now,
                        CloseReason::Refused(format!(
                            "client certificate changed from {before} to {name} during renegotiation"
                        )),
                    );
                    return;
                }
                self.install_keys(now, idx);
            }
        }
        // Text control messages after key-method 2.
        while let Some(msg) = self.keys[idx].next_text_message() {
            self.handle_text(now, idx, &msg);
        }
    }

    fn on_first_key_method(&mut self, _now: Instant, idx: usize, msg: KeyMethod2<ClientKeySource>) {
        let key = &self.keys[idx];
        let client = key
            .tls()
            .and_then(|t| t.peer_certificates())
            .and_then(|c| c.first())
            .and_then(|c| common_name(c))
            .unwrap_or_default();
        let peer_info = PeerInfo::parse(msg.peer_info.as_deref().unwrap_or(""));
        let cipher = choose_cipher(&self.config.ciphers, &peer_info, &msg.options);
        // Any compression setting on the client (`comp-lzo`, `compress ...`) shows as
        // `,comp-lzo` in its options string. Like a stock server with `compress migrate`, we
        // push `compress stub-v2`: the client then frames without compressing.
        let compress_stub_v2 = options_use_compression(&msg.options);
        let tls_ekm = self.config.tls_ekm && peer_info.supports_tls_ekm();
        let caps = PushCaps::of(&peer_info);
        let (tls_version, tls_suite) = key
            .tls()
            .and_then(|t| describe_session(t))
            .unwrap_or(("?", "?".into()));
        tracing::debug!(
            client = %client,
            options = %msg.options,
            peer_info = %msg.peer_info.as_deref().unwrap_or("").replace('\n', " "),
            "key-method 2 from client"
        );
        tracing::info!(
            client = %client,
            version = peer_info.version.as_deref().unwrap_or("?"),
            tls = tls_version,
            tls_cipher = %tls_suite,
            data_cipher = cipher.map_or("none", |c| c.openvpn_name()),
            keys = if tls_ekm { "tls-ekm" } else { "prf" },
            compress = if compress_stub_v2 { "stub-v2" } else { "none" },
            "OpenVPN control channel up"
        );
        self.phase = Phase::AwaitingDecision;
        let Some(cipher) = cipher else {
            let mut offered = peer_info.ncp_ciphers().join(":");
            if !peer_info.announces_ciphers
                && let Some(c) = super::keymethod::options_cipher(&msg.options)
            {
                if !offered.is_empty() {
                    offered.push(':');
                }
                offered.push_str(c);
            }
            if offered.is_empty() {
                offered = "none".to_owned();
            }
            self.negotiated = Some(Negotiated {
                client: client.clone(),
                cipher: Cipher::Aes256Gcm,
                tls_ekm,
                compress_stub_v2,
                caps,
            });
            let ours: Vec<&str> = self
                .config
                .ciphers
                .iter()
                .map(|c| c.openvpn_name())
                .collect();
            let ours = ours.join(":");
            self.events.push_back(ServerEvent::Refused {
                client: Some(client),
                reason: format!(
                    "data channel cipher negotiation failed: no shared cipher (client offers {offered}; gateway's openvpn.ciphers: {ours})"
                ),
            });
            self.send_auth_failed(
                _now,
                &format!(
                    "Data channel cipher negotiation failed (no shared cipher); set data-ciphers {ours}"
                ),
            );
            return;
        };
        self.events.push_back(ServerEvent::Authenticated {
            client: client.clone(),
            peer_info,
        });
        self.negotiated = Some(Negotiated {
            client,
            cipher,
            tls_ekm,
            compress_stub_v2,
            caps,
        });
    }

    /// Admits the authenticated client with its address and routes: sends PUSH_REPLY and
    /// installs the data keys.
    pub fn accept(&mut self, now: Instant, a: Assignment) {
        if self.phase != Phase::AwaitingDecision {
            return;
        }
        let Some(n) = &self.negotiated else {
            return;
        };
        let reply = PushReply {
            address: a.address,
            netmask: a.subnet.netmask(),
            gateway: a.gateway,
            routes: a.routes,
            redirect_gateway: a.redirect_gateway,
            dns: a.dns,
            dns_domains: a.dns_domains,
            peer_id: self.peer_id,
            cipher: n.cipher,
            tls_ekm: n.tls_ekm,
            ping: self.config.ping,
            ping_restart: self.config.ping_restart,
            tun_mtu: self.config.tun_mtu,
            compress_stub_v2: n.compress_stub_v2,
            caps: n.caps,
            ipv6: a.ipv6,
        };
        let (cipher, tls_ekm) = (n.cipher, n.tls_ekm);
        let msg = reply.to_message();
        let Some(idx) = self.keys.iter().position(|k| k.key_id == 0) else {
            return;
        };
        let mut bytes = msg.clone().into_bytes();
        bytes.push(0);
        self.keys[idx].write_plaintext(&bytes);
        self.push_reply = Some(msg);
        self.phase = Phase::Active;
        if self.install_keys(now, idx) {
            self.events
                .push_back(ServerEvent::Established { cipher, tls_ekm });
        }
    }

    /// Refuses the authenticated client: AUTH_FAILED with `reason`, then the session closes.
    pub fn reject(&mut self, now: Instant, reason: &str) {
        let client = self.client_name().map(str::to_owned);
        self.events.push_back(ServerEvent::Refused {
            client,
            reason: reason.to_owned(),
        });
        self.send_auth_failed(now, reason);
    }

    fn send_auth_failed(&mut self, now: Instant, reason: &str) {
        if let Some(k) = self.keys.first_mut() {
            k.write_plaintext(format!("AUTH_FAILED,{reason}\0").as_bytes());
        }
        self.begin_close(now, CloseReason::Refused(reason.to_owned()));
    }

    /// Ends the session from the gateway's side, telling the client to reconnect (RESTART).
    pub fn close(&mut self, now: Instant, reason: &str) {
        if self.phase == Phase::Active
            && let Some(k) = self.primary_mut()
        {
            k.write_plaintext(b"RESTART\0");
        }
        self.begin_close(now, CloseReason::Local(reason.to_owned()));
    }

    /// The key to encrypt with: the newest one whose key-method reply the client has
    /// acknowledged (so it can decrypt), else the newest one with keys (as OpenVPN's S_ACTIVE).
    fn primary_mut(&mut self) -> Option<&mut KeyState> {
        tx_key(&mut self.keys)
    }

    fn install_keys(&mut self, now: Instant, idx: usize) -> bool {
        let Some(n) = &self.negotiated else {
            return false;
        };
        let (cipher, tls_ekm) = (n.cipher, n.tls_ekm);
        let key_id = self.keys[idx].key_id;
        let mut block = [0u8; KEY_BLOCK_LEN];
        if tls_ekm {
            if self.keys[idx].tls().is_none_or(|t| {
                t.export_keying_material(&mut block, EKM_LABEL.as_bytes(), None)
                    .is_err()
            }) {
                self.begin_close(now, CloseReason::Error("TLS exporter failed".into()));
                return false;
            }
        } else {
            let c = self.client_sources.iter().find(|(k, _)| *k == key_id);
            let s = self.server_sources.iter().find(|(k, _)| *k == key_id);
            let (Some((_, c)), Some((_, s))) = (c, s) else {
                return false;
            };
            block = prf_key_block(
                &c.pre_master,
                &c.random1,
                &c.random2,
                &s.random1,
                &s.random2,
                self.remote_sid,
                self.local_sid,
            );
        }
        let keys = DataKeys::from_key_block(&block, Role::Server);
        match DataChannel::new(cipher, &keys, key_id, self.peer_id) {
            Ok(dc) => self.keys[idx].data = Some(dc),
            Err(e) => {
                self.begin_close(now, CloseReason::Error(format!("data channel: {e}")));
                return false;
            }
        }
        self.keys[idx].active_since = Some(now);
        self.client_sources.retain(|(k, _)| *k != key_id);
        self.server_sources.retain(|(k, _)| *k != key_id);
        // Retire older keys after the transition window.
        let retire = now + self.config.transition_window;
        for k in self.keys.iter_mut() {
            if k.key_id != key_id && k.data.is_some() && k.retire_at.is_none() {
                k.retire_at = Some(retire);
            }
        }
        if key_id != 0 {
            self.events.push_back(ServerEvent::Rekeyed { key_id });
        }
        true
    }

    fn handle_text(&mut self, now: Instant, idx: usize, msg: &str) {
        if msg == "PUSH_REQUEST" {
            if let Some(reply) = self.push_reply.clone() {
                let mut b = reply.into_bytes();
                b.push(0);
                self.keys[idx].write_plaintext(&b);
            }
        } else if msg.starts_with("EXIT") {
            self.begin_close(now, CloseReason::ClientExit);
        }
        // Anything else (INFO, ACC...) is ignored, as OpenVPN does for unknown messages.
    }

    /// Feeds a data packet (P_DATA_V1/V2) from this client. On success the decrypted IP packet
    /// is at `out[range]`; the driver checks its source address before writing it to TUN.
    pub fn handle_data(
        &mut self,
        now: Instant,
        packet: &[u8],
        key_id: u8,
        out: &mut Vec<u8>,
    ) -> Result<DataOutcome, DataPathError> {
        if self.phase != Phase::Active {
            return Err(DataPathError::NotEstablished);
        }
        let compress = self.negotiated.as_ref().is_some_and(|n| n.compress_stub_v2);
        let outcome = open_data(&mut self.keys, key_id, packet, out, compress)?;
        self.last_rx = now;
        if let DataOutcome::Packet(r) = &outcome {
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += r.len() as u64;
        }
        Ok(outcome)
    }

    /// Encrypts an IP packet for this client into `out` (a complete P_DATA_V2 datagram).
    pub fn encrypt(
        &mut self,
        now: Instant,
        ip_packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DataPathError> {
        if self.phase != Phase::Active {
            return Err(DataPathError::NotEstablished);
        }
        // stub-v2 framing escapes a payload starting with 0x50 (never an IPv4/IPv6 packet).
        let escape = self.negotiated.as_ref().is_some_and(|n| n.compress_stub_v2)
            && ip_packet.first() == Some(&0x50);
        let key = self.primary_mut().ok_or(DataPathError::NotEstablished)?;
        let Some(dc) = key.data.as_mut() else {
            return Err(DataPathError::NotEstablished);
        };
        let prefix: &[u8] = if escape { &[0x50, 0x00] } else { &[] };
        dc.encrypt_framed(prefix, ip_packet, out)?;
        self.last_tx = now;
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += ip_packet.len() as u64;
        Ok(())
    }

    /// Advances timers: retransmissions, keepalive, inactivity, renegotiation, key expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed => return,
            Phase::Closing => {
                let flushed = self.keys.iter().all(|k| k.send_idle());
                if flushed || self.close_at.is_some_and(|t| now >= t) {
                    self.phase = Phase::Closed;
                }
                return;
            }
            Phase::Handshake | Phase::AwaitingDecision => {
                if let Some(k) = self.keys.first()
                    && now >= k.created + self.config.handshake_timeout
                {
                    self.begin_close(now, CloseReason::HandshakeTimeout);
                    return;
                }
            }
            Phase::Active => {}
        }
        if now >= self.last_rx + self.config.inactivity_timeout {
            self.begin_close(now, CloseReason::Inactive);
            return;
        }
        if self.phase != Phase::Active {
            return;
        }
        // Retire keys whose overlap ended; abandon renegotiations that stalled.
        let hs = self.config.handshake_timeout;
        self.keys.retain(|k| {
            let retired = k.retire_at.is_some_and(|t| now >= t);
            let stalled = k.active_since.is_none() && now >= k.created + hs;
            !(retired || stalled)
        });
        if self.keys.is_empty() {
            self.begin_close(now, CloseReason::Error("renegotiation failed".into()));
            return;
        }
        if now >= self.last_tx + self.config.ping {
            self.pending_ping = true;
        }
        if let Some(interval) = self.config.reneg_interval {
            let newest = self.keys.iter().filter_map(|k| k.active_since).max();
            if newest.is_some_and(|t| now >= t + interval) {
                self.renegotiate(now);
            }
        }
    }

    /// The next datagram to send to the client, written into `out`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.phase == Phase::Closed {
            return false;
        }
        let (local, remote) = (self.local_sid, Some(self.remote_sid));
        for k in self.keys.iter_mut() {
            if k.poll_transmit(now, local, remote, out) {
                // A packet the wrapper cannot send (packet ids used up) is dropped.
                return self.wrap.wrap(out);
            }
        }
        if self.pending_ping && self.phase == Phase::Active {
            self.pending_ping = false;
            if let Some(k) = self.primary_mut()
                && let Some(dc) = k.data.as_mut()
                && dc.encrypt(&PING_PAYLOAD, out).is_ok()
            {
                self.last_tx = now;
                return true;
            }
        }
        false
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        let mut t = self.keys.iter().filter_map(|k| k.poll_timeout(now)).min();
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(c) = self.close_at {
            consider(c);
        }
        if self.phase == Phase::Closing {
            return t;
        }
        consider(self.last_rx + self.config.inactivity_timeout);
        if let Some(k) = self.keys.first()
            && self.phase != Phase::Active
        {
            consider(k.created + self.config.handshake_timeout);
        }
        if self.phase == Phase::Active {
            consider(self.last_tx + self.config.ping);
            for k in &self.keys {
                if let Some(r) = k.retire_at {
                    consider(r);
                }
                if k.active_since.is_none() {
                    consider(k.created + self.config.handshake_timeout);
                }
            }
            // While a renegotiation is under way the interval has passed but `renegotiate`
            // does nothing: waking up for it would spin until the new key is up.
            if let Some(i) = self.config.reneg_interval
                && self.keys.iter().all(|k| k.active_since.is_some())
                && let Some(n) = self.keys.iter().filter_map(|k| k.active_since).max()
            {
                consider(n + i);
            }
        }
        t
    }
}
