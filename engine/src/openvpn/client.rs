//! The client side of an OpenVPN session: what `gatehouse connect` drives, and what the
//! gateway's in-memory tests talk to. Same shape as [`super::server::ServerSession`]:
//! `handle_*` inputs, `poll_*` outputs, time passed in.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::data::{Cipher, DataChannel, PING_PAYLOAD};
use super::datapath::{DataOutcome, DataPathError, open_data, tx_key};
use super::key_state::{ControlError, KeyState};
use super::keymethod::{
    ClientKeySource, IV_PROTO_CC_EXIT_NOTIFY, IV_PROTO_DATA_V2, IV_PROTO_REQUEST_PUSH,
    IV_PROTO_TLS_KEY_EXPORT, KeyMethod2, ServerKeySource,
};
use super::keys::{DataKeys, EKM_LABEL, KEY_BLOCK_LEN, Role, prf_key_block};
use super::push::PushReply;
use super::tls::{alert_refusal, refusal_of};
use super::wrap::{ClientWrap, WrapError, Wrapper};
use crate::entropy::Entropy;
use crate::wire::openvpn::{ControlPacket, Opcode, Packet};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// TLS 1.3 client configuration (gateway CA, our certificate and key).
    pub tls: Arc<rustls::ClientConfig>,
    /// The gateway's name or address, checked against its certificate's SANs.
    pub server_name: ServerName<'static>,
    /// Data ciphers we offer, in order.
    pub ciphers: Vec<Cipher>,
    /// Announce tls-ekm support (TLS_KEY_EXPORT). Off makes the gateway use the classic PRF.
    pub tls_ekm: bool,
    /// Renegotiate this often from our side.
    pub reneg_interval: Option<Duration>,
    /// Give up a handshake after this long.
    pub handshake_timeout: Duration,
    /// Keep a retired key this long after renegotiation.
    pub transition_window: Duration,
    /// Version string announced as IV_VER.
    pub version: String,
    /// Control-channel wrapper (`tls-auth`, `tls-crypt`, `tls-crypt-v2`).
    pub wrap: ClientWrap,
}

impl ClientConfig {
    /// Defaults like OpenVPN 2.6's client.
    pub fn new(tls: Arc<rustls::ClientConfig>, server_name: ServerName<'static>) -> Self {
        Self {
            tls,
            server_name,
            ciphers: vec![Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305],
            tls_ekm: true,
            reneg_interval: None,
            handshake_timeout: Duration::from_secs(60),
            transition_window: Duration::from_secs(60),
            version: "gatehouse".into(),
            wrap: ClientWrap::None,
        }
    }
}

/// Something the client's driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The tunnel is up: configure TUN, routes and DNS from the reply.
    Connected(PushReply),
    /// New data keys are in use.
    Rekeyed {
        /// The new key id.
        key_id: u8,
    },
    /// The gateway refused us.
    AuthFailed(String),
    /// The session ended; reconnect if appropriate.
    Closed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    AwaitingPush,
    Active,
    Closing,
    Closed,
}

/// One client session.
pub struct ClientSession {
    config: Arc<ClientConfig>,
    entropy: Box<dyn Entropy>,
    local_sid: u64,
    remote_sid: Option<u64>,
    keys: Vec<KeyState>,
    next_key_id: u8,
    phase: Phase,
    push: Option<PushReply>,
    client_sources: Vec<(u8, ClientKeySource)>,
    server_source: Option<ServerKeySource>,
    events: VecDeque<ClientEvent>,
    last_rx: Instant,
    last_tx: Instant,
    next_push_request: Option<Instant>,
    close_at: Option<Instant>,
    pending_ping: bool,
    /// Control-channel wrapper (tls-auth, tls-crypt, tls-crypt-v2 or none).
    wrap: Wrapper,
    /// Test hook: the options string and peer-info to announce instead of our own, so tests
    /// can play older or misconfigured clients (comp-lzo, no AEAD cipher).
    #[cfg(test)]
    pub(crate) key_method_override: Option<(String, String)>,
}

impl ClientSession {
    /// Starts a session: the first transmit is P_CONTROL_HARD_RESET_CLIENT_V2.
    pub fn new(
        config: Arc<ClientConfig>,
        mut entropy: Box<dyn Entropy>,
        now: Instant,
    ) -> Result<Self, ControlError> {
        let local_sid = entropy.next_u64();
        let tls = rustls::ClientConnection::new(config.tls.clone(), config.server_name.clone())?;
        let wrap = Wrapper::client(&config.wrap, 0);
        // tls-crypt-v2 clients open with P_CONTROL_HARD_RESET_CLIENT_V3 carrying their key.
        let mut key = KeyState::new(0, tls.into(), wrap.client_reset_opcode(), now);
        key.wkc_len = wrap.wkc_len();
        Ok(Self {
            wrap,
            config,
            entropy,
            local_sid,
            remote_sid: None,
            keys: vec![key],
            next_key_id: 1,
            phase: Phase::Handshake,
            push: None,
            client_sources: Vec::new(),
            server_source: None,
            events: VecDeque::new(),
            last_rx: now,
            last_tx: now,
            next_push_request: None,
            close_at: None,
            pending_ping: false,
            #[cfg(test)]
            key_method_override: None,
        })
    }

    /// Test hook: later key states use `config` (e.g. another certificate).
    #[cfg(test)]
    pub(crate) fn replace_config(&mut self, config: Arc<ClientConfig>) {
        self.config = config;
    }

    /// What the gateway pushed, once connected.
    pub fn push_reply(&self) -> Option<&PushReply> {
        self.push.as_ref()
    }

    /// True when the tunnel is up.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Active
    }

    /// True when the session is over.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Our session id.
    pub fn session_id(&self) -> u64 {
        self.local_sid
    }

    /// Sets the UNIX time (seconds) the control-channel wrapper writes into its packet ids.
    /// Call it before the first [`poll_transmit`](Self::poll_transmit) (OpenVPN sends the
    /// time its session started); without it the field is 0, which peers accept too.
    pub fn set_unix_time(&mut self, unix_secs: u64) {
        self.wrap.set_time(unix_secs as u32);
    }

    /// Feeds a control datagram from the gateway as it came off the wire. It is unwrapped
    /// and authenticated first (tls-auth, tls-crypt, tls-crypt-v2); a packet that fails is
    /// dropped and the reason returned, for the driver's drop counters.
    pub fn handle_control_datagram(&mut self, now: Instant, wire: &[u8]) -> Result<(), WrapError> {
        let mut plain = Vec::with_capacity(wire.len());
        self.wrap.unwrap(wire, &mut plain)?;
        let Ok(Packet::Control(pkt)) = Packet::parse(&plain) else {
            return Err(WrapError::Malformed);
        };
        self.handle_plain_control(now, &pkt);
        Ok(())
    }

    /// Feeds a control packet from the gateway, already parsed. Only for sessions without a
    /// control-channel wrapper (with one, nothing unauthenticated may reach TLS: use
    /// [`handle_control_datagram`](Self::handle_control_datagram)).
    pub fn handle_control(&mut self, now: Instant, pkt: &ControlPacket<'_>) {
        if self.wrap.is_none() {
            self.handle_plain_control(now, pkt);
        }
    }

    fn handle_plain_control(&mut self, now: Instant, pkt: &ControlPacket<'_>) {
        if self.phase == Phase::Closed {
            return;
        }
        match self.remote_sid {
            Some(r) if r != pkt.session_id => return,
            None if pkt.opcode != Opcode::ControlHardResetServerV2 => return,
            _ => {}
        }
        if pkt.remote_session_id.is_some_and(|r| r != self.local_sid) {
            return;
        }
        self.remote_sid = Some(pkt.session_id);
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
            let reason = match &e {
                ControlError::Tls(t) => {
                    if let Some(why) = alert_refusal(t) {
                        self.events.push_back(ClientEvent::AuthFailed(why));
                    }
                    refusal_of(t)
                        .map(|r| format!("gateway {r}"))
                        .unwrap_or_else(|| e.to_string())
                }
                ControlError::TlsClosed | ControlError::Limit(_) => e.to_string(),
            };
            // As on the gateway: only a key state that carries no traffic may fail alone.
            let newest_active = self.keys.iter().filter_map(|k| k.active_since).max();
            let in_use = self.keys[idx]
                .active_since
                .is_some_and(|t| Some(t) == newest_active);
            if self.keys[idx].key_id == 0 || self.phase != Phase::Active || in_use {
                self.begin_close(now, reason);
            } else {
                self.keys.remove(idx);
            }
            return;
        }
        self.process_key(now, idx);
    }

    fn start_key_state(&mut self, now: Instant, key_id: u8) -> Option<usize> {
        if key_id == 0 || key_id > 7 {
            return None;
        }
        self.keys.retain(|k| k.active_since.is_some());
        if self.keys.len() > 2 {
            self.keys.remove(0);
        }
        let tls =
            rustls::ClientConnection::new(self.config.tls.clone(), self.config.server_name.clone())
                .ok()?;
        self.keys.push(KeyState::new(
            key_id,
            tls.into(),
            Opcode::ControlSoftResetV1,
            now,
        ));
        self.next_key_id = if key_id >= 7 { 1 } else { key_id + 1 };
        Some(self.keys.len() - 1)
    }

    /// Starts a renegotiation from the client's side.
    pub fn renegotiate(&mut self, now: Instant) {
        if self.phase != Phase::Active || self.keys.iter().any(|k| k.active_since.is_none()) {
            return;
        }
        let id = self.next_key_id;
        self.start_key_state(now, id);
    }

    fn peer_info(&self) -> String {
        let mut proto = IV_PROTO_DATA_V2 | IV_PROTO_REQUEST_PUSH | IV_PROTO_CC_EXIT_NOTIFY;
        if self.config.tls_ekm {
            proto |= IV_PROTO_TLS_KEY_EXPORT;
        }
        let ciphers: Vec<&str> = self
            .config
            .ciphers
            .iter()
            .map(|c| c.openvpn_name())
            .collect();
        format!(
            "IV_VER={}\nIV_PLAT={}\nIV_TCPNL=1\nIV_MTU=1600\nIV_CIPHERS={}\nIV_PROTO={proto}\n",
            self.config.version,
            std::env::consts::OS,
            ciphers.join(":")
        )
    }

    /// Test hook: sends `bytes` as control-channel text on the newest key (a misbehaving
    /// client's messages).
    #[cfg(test)]
    pub(crate) fn send_control_text(&mut self, bytes: &[u8]) {
        if let Some(k) = self.keys.last_mut() {
            k.write_plaintext(bytes);
        }
    }

    fn process_key(&mut self, now: Instant, idx: usize) {
        if !self.keys[idx].tls_done() || !self.keys[idx].peer_reset_seen {
            return;
        }
        if !self.keys[idx].km_sent {
            let mut src = ClientKeySource {
                pre_master: [0; 48],
                random1: [0; 32],
                random2: [0; 32],
            };
            self.entropy.fill(&mut src.pre_master);
            self.entropy.fill(&mut src.random1);
            self.entropy.fill(&mut src.random2);
            #[allow(unused_mut)]
            let mut msg = KeyMethod2 {
                key_source: src.clone(),
                options: "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,cipher AES-256-GCM,auth [null-digest],keysize 256,key-method 2,tls-client".into(),
                username: None,
                password: None,
                peer_info: Some(self.peer_info()),
            };
            #[cfg(test)]
            if let Some((options, peer_info)) = &self.key_method_override {
                msg.options = options.clone();
                msg.peer_info = Some(peer_info.clone());
            }
            let mut buf = Vec::new();
            msg.encode(&mut buf);
            let key = &mut self.keys[idx];
            key.write_plaintext(&buf);
            key.km_sent = true;
            let key_id = key.key_id;
            self.client_sources.retain(|(k, _)| *k != key_id);
            self.client_sources.push((key_id, src));
        }
        if !self.keys[idx].km_received {
            let Ok((msg, used)) = KeyMethod2::parse_server(&self.keys[idx].plaintext) else {
                return;
            };
            let key = &mut self.keys[idx];
            key.plaintext.drain(..used);
            key.km_received = true;
            let key_id = key.key_id;
            if key_id == 0 && self.phase == Phase::Handshake {
                self.phase = Phase::AwaitingPush;
                self.server_source = Some(msg.key_source);
                self.send_push_request(now);
            } else if self.phase == Phase::Active {
                self.server_source = Some(msg.key_source);
                self.install_keys(now, idx);
            }
        }
        while let Some(msg) = self.keys[idx].next_text_message() {
            self.handle_text(now, idx, &msg);
        }
    }

    fn send_push_request(&mut self, now: Instant) {
        if let Some(k) = self.keys.iter_mut().find(|k| k.key_id == 0) {
            k.write_plaintext(b"PUSH_REQUEST\0");
        }
        self.next_push_request = Some(now + Duration::from_secs(2));
    }

    fn handle_text(&mut self, now: Instant, idx: usize, msg: &str) {
        if msg.starts_with("PUSH_REPLY") {
            if self.phase != Phase::AwaitingPush {
                return;
            }
            match PushReply::parse(msg) {
                Ok((reply, _ignored)) => {
                    self.push = Some(reply.clone());
                    self.next_push_request = None;
                    if self.install_keys(now, idx) {
                        self.phase = Phase::Active;
                        self.events.push_back(ClientEvent::Connected(reply));
                    }
                }
                Err(e) => self.begin_close(now, format!("unusable PUSH_REPLY: {e}")),
            }
        } else if let Some(reason) = msg.strip_prefix("AUTH_FAILED") {
            let reason = reason.trim_start_matches(',').to_owned();
            self.events
                .push_back(ClientEvent::AuthFailed(reason.clone()));
            self.begin_close(now, format!("authentication failed: {reason}"));
        } else if msg.starts_with("RESTART") || msg.starts_with("HALT") || msg.starts_with("EXIT") {
            self.begin_close(now, format!("gateway sent {msg}"));
        }
    }

    fn install_keys(&mut self, now: Instant, idx: usize) -> bool {
        let Some(push) = &self.push else {
            return false;
        };
        let (cipher, tls_ekm, peer_id) = (push.cipher, push.tls_ekm, push.peer_id);
        let key_id = self.keys[idx].key_id;
        let mut block = [0u8; KEY_BLOCK_LEN];
        if tls_ekm {
            if self.keys[idx].tls().is_none_or(|t| {
                t.export_keying_material(&mut block, EKM_LABEL.as_bytes(), None)
                    .is_err()
            }) {
                self.begin_close(now, "TLS exporter failed".into());
                return false;
            }
        } else {
            let c = self.client_sources.iter().find(|(k, _)| *k == key_id);
            let (Some((_, c)), Some(s), Some(remote)) =
                (c, self.server_source.as_ref(), self.remote_sid)
            else {
                return false;
            };
            block = prf_key_block(
                &c.pre_master,
                &c.random1,
                &c.random2,
                &s.random1,
                &s.random2,
                self.local_sid,
                remote,
            );
        }
        let keys = DataKeys::from_key_block(&block, Role::Client);
        match DataChannel::new(cipher, &keys, key_id, peer_id) {
            Ok(dc) => self.keys[idx].data = Some(dc),
            Err(e) => {
                self.begin_close(now, format!("data channel: {e}"));
                return false;
            }
        }
        self.keys[idx].active_since = Some(now);
        self.client_sources.retain(|(k, _)| *k != key_id);
        self.server_source = None;
        let retire = now + self.config.transition_window;
        for k in self.keys.iter_mut() {
            if k.key_id != key_id && k.data.is_some() && k.retire_at.is_none() {
                k.retire_at = Some(retire);
            }
        }
        if key_id != 0 {
            self.events.push_back(ClientEvent::Rekeyed { key_id });
        }
        true
    }

    fn begin_close(&mut self, now: Instant, reason: String) {
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        self.phase = Phase::Closing;
        self.close_at = Some(now + Duration::from_secs(2));
        self.events.push_back(ClientEvent::Closed(reason));
    }

    /// Disconnects cleanly: tells the gateway EXIT, then closes.
    pub fn disconnect(&mut self, now: Instant) {
        if let Some(k) = tx_key(&mut self.keys) {
            k.write_plaintext(b"EXIT\0");
        }
        self.begin_close(now, "disconnected by user".into());
    }

    /// Feeds a data packet from the gateway; the IP packet lands at `out[range]`.
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
        let compress = self.push.as_ref().is_some_and(|p| p.compress_stub_v2);
        let outcome = open_data(&mut self.keys, key_id, packet, out, compress)?;
        self.last_rx = now;
        Ok(outcome)
    }

    /// Encrypts an IP packet for the gateway into `out`.
    pub fn encrypt(
        &mut self,
        now: Instant,
        ip_packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DataPathError> {
        if self.phase != Phase::Active {
            return Err(DataPathError::NotEstablished);
        }
        let key = tx_key(&mut self.keys).ok_or(DataPathError::NotEstablished)?;
        let Some(dc) = key.data.as_mut() else {
            return Err(DataPathError::NotEstablished);
        };
        dc.encrypt(ip_packet, out)?;
        self.last_tx = now;
        Ok(())
    }

    /// Advances timers.
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
            Phase::Handshake | Phase::AwaitingPush => {
                if let Some(k) = self.keys.first()
                    && now >= k.created + self.config.handshake_timeout
                {
                    self.begin_close(now, "handshake with the gateway timed out".into());
                    return;
                }
                if self.next_push_request.is_some_and(|t| now >= t) {
                    self.send_push_request(now);
                }
                return;
            }
            Phase::Active => {}
        }
        let (ping, restart) = self
            .push
            .as_ref()
            .map_or((Duration::from_secs(10), Duration::from_secs(60)), |p| {
                (p.ping, p.ping_restart)
            });
        if now >= self.last_rx + restart {
            self.begin_close(now, "no traffic from the gateway (ping-restart)".into());
            return;
        }
        let hs = self.config.handshake_timeout;
        self.keys.retain(|k| {
            let retired = k.retire_at.is_some_and(|t| now >= t);
            let stalled = k.active_since.is_none() && now >= k.created + hs;
            !(retired || stalled)
        });
        if self.keys.is_empty() {
            self.begin_close(now, "renegotiation failed".into());
            return;
        }
        if now >= self.last_tx + ping {
            self.pending_ping = true;
        }
        if let Some(interval) = self.config.reneg_interval {
            let newest = self.keys.iter().filter_map(|k| k.active_since).max();
            if newest.is_some_and(|t| now >= t + interval) {
                self.renegotiate(now);
            }
        }
    }

    /// The next datagram to send to the gateway.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.phase == Phase::Closed {
            return false;
        }
        let local = self.local_sid;
        let remote = self.remote_sid;
        for k in self.keys.iter_mut() {
            if k.poll_transmit(now, local, remote, out) {
                // A packet the wrapper cannot send (packet ids used up) is dropped.
                return self.wrap.wrap(out);
            }
        }
        if self.pending_ping && self.phase == Phase::Active {
            self.pending_ping = false;
            if let Some(k) = tx_key(&mut self.keys)
                && let Some(dc) = k.data.as_mut()
                && dc.encrypt(&PING_PAYLOAD, out).is_ok()
            {
                self.last_tx = now;
                return true;
            }
        }
        false
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
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
        if let Some(p) = self.next_push_request {
            consider(p);
        }
        if let Some(k) = self.keys.first()
            && self.phase != Phase::Active
        {
            consider(k.created + self.config.handshake_timeout);
        }
        if self.phase == Phase::Active {
            let (ping, restart) = self
                .push
                .as_ref()
                .map_or((Duration::from_secs(10), Duration::from_secs(60)), |p| {
                    (p.ping, p.ping_restart)
                });
            consider(self.last_tx + ping);
            consider(self.last_rx + restart);
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
