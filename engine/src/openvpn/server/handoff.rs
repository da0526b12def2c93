//! Handing an established UDP session to another process (a restart for an upgrade): what
//! [`ServerSession::into_handoff`] exports and [`ServerSession::from_handoff`] rebuilds.
//!
//! Moved: the session ids, the peer-id, what was negotiated (client name, cipher, tls-ekm,
//! stub-v2 framing, push capabilities), the PUSH_REPLY, and every key state that carries
//! data keys (the current one and a lame duck during a renegotiation's overlap): its keys,
//! its packet-id counter (jumped ahead by [`HANDOFF_PACKET_ID_SKIP`]), its replay window and
//! its reliability-layer counters. Timers travel as durations relative to the export.
//!
//! The control-channel wrapper (tls-auth, tls-crypt, tls-crypt-v2) moves with its keys, its
//! packet-id counter (jumped) and its replay window.
//!
//! Not moved: the TLS sessions (rustls connections cannot be serialised), a renegotiation
//! still under way (the client's TLS handshake for it fails and it tries again, or the
//! session's own timers end it) and control messages not yet acknowledged. The rebuilt
//! session therefore has data keys without TLS; [`ServerSession::from_handoff`] starts a
//! renegotiation at once (`P_CONTROL_SOFT_RESET_V1` with the next key id), so a fresh TLS
//! session sits under the tunnel within a round trip or two while data keeps flowing on
//! the moved keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Negotiated, Phase, ServerConfig, ServerSession, SessionStats};
use crate::entropy::Entropy;
use crate::openvpn::data::{Cipher, DataChannel};
use crate::openvpn::export::DataChannelState;
use crate::openvpn::key_state::KeyState;
use crate::openvpn::keys::DataKeys;
use crate::openvpn::push::PushCaps;
use crate::openvpn::replay::{REPLAY_WINDOW_WORDS, ReplayWindow};
use crate::openvpn::wrap::{Wrapper, WrapperHandoff};

/// Packet ids a moved data channel skips before it seals again. The exporting process stops
/// sealing before it exports (its cores are consumed), so the exported counter is exact and
/// the skip is a second guard: should anything ever seal with the old copy after the
/// snapshot, it would have to seal more than this many packets to reach an id the new
/// process uses. The client's replay window takes the jump (its window only moves forward);
/// it costs 1/65536 of the key's 2^32 ids.
pub const HANDOFF_PACKET_ID_SKIP: u32 = 1 << 16;

/// Milliseconds from `t` to `now` (0 if `t` is later).
pub(crate) fn ms_ago(now: Instant, t: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds from `now` to `t` (0 if `t` has passed).
pub(crate) fn ms_until(now: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
}

/// `now` minus `ms` milliseconds (`now` when the clock cannot go back that far).
pub(crate) fn back(now: Instant, ms: u64) -> Instant {
    now.checked_sub(Duration::from_millis(ms)).unwrap_or(now)
}

/// One key state with data keys, exported. Key bytes: handle with care (the driver writes
/// them to a 0600 file it removes after reading).
#[derive(Serialize, Deserialize)]
pub struct KeyHandoff {
    /// The key id (0..=7).
    pub key_id: u8,
    /// [`DataKeys`]: our key and implicit IV, the client's key and implicit IV.
    pub encrypt_key: Vec<u8>,
    /// Implicit IV for packets we send.
    pub encrypt_iv: Vec<u8>,
    /// The client's key.
    pub decrypt_key: Vec<u8>,
    /// Implicit IV for packets we receive.
    pub decrypt_iv: Vec<u8>,
    /// The last packet id sealed, already jumped by [`HANDOFF_PACKET_ID_SKIP`].
    pub packets_sent: u32,
    /// The replay window: highest id accepted and its bitmap.
    pub replay_highest: u32,
    /// The replay window's bitmap.
    pub replay_bits: Vec<u64>,
    /// Our next control-packet id on this key.
    pub send_next: u32,
    /// The client's next control-packet id we expect.
    pub recv_next: u32,
    /// Milliseconds since the key state was created.
    pub created_ms_ago: u64,
    /// Milliseconds since its data keys were installed.
    pub active_ms_ago: u64,
    /// Milliseconds until it retires (a lame duck), if it does.
    pub retire_in_ms: Option<u64>,
}

/// An established OpenVPN UDP session, exported.
#[derive(Serialize, Deserialize)]
pub struct SessionHandoff {
    /// Our session id.
    pub local_sid: u64,
    /// The client's session id.
    pub remote_sid: u64,
    /// The peer-id in the client's P_DATA_V2 headers.
    pub peer_id: u32,
    /// The key id our next renegotiation uses.
    pub next_key_id: u8,
    /// The certificate's common name.
    pub client: String,
    /// The data cipher (`AES-256-GCM`...).
    pub cipher: String,
    /// Keys came from the TLS exporter (else the key-method-2 PRF).
    pub tls_ekm: bool,
    /// `compress stub-v2` framing.
    pub compress_stub_v2: bool,
    /// Push capabilities: ncp, cc-exit, mtu.
    pub caps: (bool, bool, bool),
    /// The PUSH_REPLY (answered again to a PUSH_REQUEST on a later key state).
    pub push_reply: Option<String>,
    /// Key states with data keys.
    pub keys: Vec<KeyHandoff>,
    /// Milliseconds since the client was last heard.
    pub last_rx_ms_ago: u64,
    /// Milliseconds since we last sent.
    pub last_tx_ms_ago: u64,
    /// Counters: rx bytes, tx bytes, rx packets, tx packets.
    pub stats: (u64, u64, u64, u64),
    /// The control-channel wrapper, if the session has one.
    #[serde(default)]
    pub wrap: Option<WrapperHandoff>,
}

/// Why a session cannot be handed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// Not established (handshaking, closing).
    #[error("the session is not established")]
    NotEstablished,
    /// The state does not make sense (a cipher we do not know, keys of the wrong length).
    #[error("invalid handoff state: {0}")]
    Invalid(&'static str),
}

fn array<const N: usize>(v: &[u8]) -> Result<[u8; N], HandoffError> {
    v.try_into()
        .map_err(|_| HandoffError::Invalid("key or IV of the wrong length"))
}

/// One key state's export, its data channel's state given (moved or copied, skipped).
fn key_handoff(now: Instant, k: &KeyState, state: DataChannelState, active: Instant) -> KeyHandoff {
    let (send_next, recv_next) = k.reliable_next();
    KeyHandoff {
        key_id: state.key_id,
        encrypt_key: state.keys.encrypt_key.to_vec(),
        encrypt_iv: state.keys.encrypt_iv.to_vec(),
        decrypt_key: state.keys.decrypt_key.to_vec(),
        decrypt_iv: state.keys.decrypt_iv.to_vec(),
        packets_sent: state.packets_sent,
        replay_highest: state.replay.highest(),
        replay_bits: state.replay.bitmap().to_vec(),
        send_next,
        recv_next,
        created_ms_ago: ms_ago(now, k.created),
        active_ms_ago: ms_ago(now, active),
        retire_in_ms: k.retire_at.map(|t| ms_until(now, t)),
    }
}

impl ServerSession {
    /// Consumes an established session and exports it (see the module documentation). The
    /// session cannot seal afterwards: there is nothing left to seal with.
    pub fn into_handoff(mut self, now: Instant) -> Result<SessionHandoff, HandoffError> {
        if self.phase != Phase::Active || self.negotiated.is_none() {
            return Err(HandoffError::NotEstablished);
        }
        let mut keys = Vec::new();
        for k in &mut self.keys {
            let (Some(data), Some(active)) = (k.data.take(), k.active_since) else {
                continue; // a renegotiation under way: not moved
            };
            let mut state: DataChannelState = data.into_state();
            state.skip(HANDOFF_PACKET_ID_SKIP);
            keys.push(key_handoff(now, k, state, active));
        }
        self.session_handoff(now, keys)
    }

    /// A copy of the established session for a standby gateway (issue 17), leaving the
    /// session running here. Its packet-id counters are written `margin` ids ahead: the
    /// standby seals from there, so this process may seal up to `margin` more packets per
    /// key after the snapshot without a nonce ever repeating. Packets opened here after the
    /// snapshot are not in the copied replay windows.
    pub fn snapshot_handoff(
        &self,
        now: Instant,
        margin: u32,
    ) -> Result<SessionHandoff, HandoffError> {
        if self.phase != Phase::Active || self.negotiated.is_none() {
            return Err(HandoffError::NotEstablished);
        }
        let mut keys = Vec::new();
        for k in &self.keys {
            let (Some(data), Some(active)) = (k.data.as_ref(), k.active_since) else {
                continue;
            };
            let mut state = data.export();
            state.skip(margin);
            keys.push(key_handoff(now, k, state, active));
        }
        self.session_handoff(now, keys)
    }

    fn session_handoff(
        &self,
        now: Instant,
        keys: Vec<KeyHandoff>,
    ) -> Result<SessionHandoff, HandoffError> {
        let Some(n) = &self.negotiated else {
            return Err(HandoffError::NotEstablished);
        };
        if keys.is_empty() {
            return Err(HandoffError::NotEstablished);
        }
        let s = &self.stats;
        Ok(SessionHandoff {
            local_sid: self.local_sid,
            remote_sid: self.remote_sid,
            peer_id: self.peer_id,
            next_key_id: self.next_key_id,
            client: n.client.clone(),
            cipher: n.cipher.openvpn_name().to_owned(),
            tls_ekm: n.tls_ekm,
            compress_stub_v2: n.compress_stub_v2,
            caps: (n.caps.ncp, n.caps.cc_exit, n.caps.mtu),
            push_reply: self.push_reply.clone(),
            keys,
            last_rx_ms_ago: ms_ago(now, self.last_rx),
            last_tx_ms_ago: ms_ago(now, self.last_tx),
            stats: (s.rx_bytes, s.tx_bytes, s.rx_packets, s.tx_packets),
            wrap: (!self.wrap.is_none()).then(|| self.wrap.to_handoff()),
        })
    }

    /// Rebuilds a session another process exported, established, and starts a
    /// renegotiation so that a new TLS session replaces the one that could not move.
    pub fn from_handoff(
        config: Arc<ServerConfig>,
        entropy: Box<dyn Entropy>,
        now: Instant,
        h: SessionHandoff,
    ) -> Result<Self, HandoffError> {
        let cipher =
            Cipher::from_openvpn_name(&h.cipher).ok_or(HandoffError::Invalid("unknown cipher"))?;
        let mut keys = Vec::with_capacity(h.keys.len());
        for k in h.keys {
            let bits: [u64; REPLAY_WINDOW_WORDS] = k
                .replay_bits
                .as_slice()
                .try_into()
                .map_err(|_| HandoffError::Invalid("replay window of the wrong size"))?;
            let replay = ReplayWindow::from_parts(k.replay_highest, bits)
                .ok_or(HandoffError::Invalid("replay window"))?;
            let data = DataChannel::restore(DataChannelState {
                cipher,
                key_id: k.key_id,
                peer_id: h.peer_id,
                keys: Box::new(DataKeys {
                    encrypt_key: array(&k.encrypt_key)?,
                    encrypt_iv: array(&k.encrypt_iv)?,
                    decrypt_key: array(&k.decrypt_key)?,
                    decrypt_iv: array(&k.decrypt_iv)?,
                }),
                packets_sent: k.packets_sent,
                replay,
            })
            .map_err(|_| HandoffError::Invalid("key id or peer-id out of range"))?;
            keys.push(KeyState::resumed(
                k.key_id,
                data,
                k.send_next,
                k.recv_next,
                back(now, k.created_ms_ago),
                back(now, k.active_ms_ago),
                k.retire_in_ms.map(|ms| now + Duration::from_millis(ms)),
            ));
        }
        if keys.is_empty() {
            return Err(HandoffError::Invalid("no data keys"));
        }
        let wrap = match h.wrap {
            Some(w) => Wrapper::from_handoff(w).ok_or(HandoffError::Invalid("wrapper keys"))?,
            None => Wrapper::server_none(),
        };
        let (ncp, cc_exit, mtu) = h.caps;
        let mut s = Self {
            config,
            entropy,
            local_sid: h.local_sid,
            remote_sid: h.remote_sid,
            peer_id: h.peer_id & 0x00ff_ffff,
            keys,
            next_key_id: if (1..=7).contains(&h.next_key_id) {
                h.next_key_id
            } else {
                1
            },
            phase: Phase::Active,
            negotiated: Some(Negotiated {
                client: h.client,
                cipher,
                tls_ekm: h.tls_ekm,
                compress_stub_v2: h.compress_stub_v2,
                caps: PushCaps { ncp, cc_exit, mtu },
            }),
            push_reply: h.push_reply,
            client_sources: Vec::new(),
            server_sources: Vec::new(),
            events: Default::default(),
            last_rx: back(now, h.last_rx_ms_ago),
            last_tx: back(now, h.last_tx_ms_ago),
            close_at: None,
            pending_ping: false,
            wrap,
            stats: SessionStats {
                rx_bytes: h.stats.0,
                tx_bytes: h.stats.1,
                rx_packets: h.stats.2,
                tx_packets: h.stats.3,
            },
            jobs_started: 0,
        };
        s.renegotiate(now);
        Ok(s)
    }
}
