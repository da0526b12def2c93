//! One key state of an OpenVPN session: its reliable control channel, its TLS session and,
//! once keys are exchanged, its data channel. A session holds the current key state and,
//! during renegotiation, the previous one for a short overlap.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::data::DataChannel;
use super::reliable::{RecvOutcome, ReliableRecv, ReliableSend};
use super::tls_job::{TlsDone, TlsJob};
use super::wrap::early_neg;
use crate::wire::openvpn::{ControlPacket, MAX_CONTROL_PACKET, Opcode, max_control_payload};

/// Retransmission timeout for the first send of a control packet.
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// Most acks piggybacked on one control packet (so chunk sizes leave room for them).
const MAX_ACKS: usize = 8;

/// What went wrong on a key state's control channel.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The TLS layer failed (bad certificate, protocol error, alert...).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The peer closed TLS.
    #[error("peer closed the TLS session")]
    TlsClosed,
    /// The peer made this key state hold more than it may: control-channel text without a
    /// message end, or our control packets it never acknowledges.
    #[error("control channel limit: {0}")]
    Limit(&'static str),
}

/// Control-channel text (after TLS) buffered without a complete message before the session
/// is closed. The largest real message, the key-method-2 exchange, is a few KiB.
pub(crate) const MAX_PLAINTEXT: usize = 64 * 1024;
/// Our control messages queued and not acknowledged before the session is closed (a peer
/// asking for PUSH_REPLY again and again without acknowledging any).
pub(crate) const MAX_SEND_QUEUE: usize = 256;

/// One key_id's control and data state.
pub(crate) struct KeyState {
    pub key_id: u8,
    /// The TLS connection; `None` while a [`TlsJob`] has it (see `away`).
    tls: Option<rustls::Connection>,
    /// Hand handshake records to a [`TlsJob`] for another thread instead of processing them
    /// here.
    pub offload: bool,
    /// The sequence number of the job that has the connection.
    away: Option<u64>,
    /// A job made and not yet taken by the session.
    job: Option<TlsJob>,
    /// TLS records delivered in order and not yet fed to the connection (it is away).
    tls_in: Vec<u8>,
    /// Plaintext to write once the connection is back.
    plain_out: Vec<u8>,
    send: ReliableSend,
    recv: ReliableRecv,
    /// The peer's reset (hard or soft) for this key id arrived.
    pub peer_reset_seen: bool,
    /// Plaintext received over TLS, not yet consumed.
    pub plaintext: Vec<u8>,
    pub km_sent: bool,
    pub km_received: bool,
    pub data: Option<DataChannel>,
    pub created: Instant,
    pub active_since: Option<Instant>,
    /// When this (retired) key stops being accepted.
    pub retire_at: Option<Instant>,
    tls_out: Vec<u8>,
    tls_eof: bool,
    /// tls-crypt-v2 client: bytes of the wrapped key appended to a P_CONTROL_WKC_V1 (0 =
    /// not a tls-crypt-v2 client).
    pub wkc_len: usize,
    /// The peer's reset asked for our wrapped key again (early negotiation): our packet 1
    /// goes out as P_CONTROL_WKC_V1.
    wkc_requested: bool,
}

impl KeyState {
    /// A key state that starts by sending `reset` (a hard or soft reset) as packet 0.
    pub fn new(key_id: u8, tls: rustls::Connection, reset: Opcode, now: Instant) -> Self {
        let mut send = ReliableSend::new(INITIAL_RTO);
        send.push(reset, Vec::new());
        Self {
            key_id,
            tls: Some(tls),
            offload: false,
            away: None,
            job: None,
            tls_in: Vec::new(),
            plain_out: Vec::new(),
            send,
            recv: ReliableRecv::new(),
            peer_reset_seen: false,
            plaintext: Vec::new(),
            km_sent: false,
            km_received: false,
            data: None,
            created: now,
            active_since: None,
            retire_at: None,
            tls_out: Vec::new(),
            tls_eof: false,
            wkc_len: 0,
            wkc_requested: false,
        }
    }

    /// Key state 0 of a gateway session created from a session cookie: the client's hard
    /// reset (packet 0) was taken and our reset (packet 0) answered it statelessly and was
    /// acknowledged; `ack_reset`: that answer did not acknowledge the client's reset.
    pub fn after_cookie(tls: rustls::Connection, now: Instant, ack_reset: bool) -> Self {
        let mut k = Self::new(0, tls, Opcode::ControlHardResetServerV2, now);
        k.send = ReliableSend::after_stateless_reset(INITIAL_RTO);
        k.recv = ReliableRecv::after_stateless_reset(ack_reset);
        k.peer_reset_seen = true;
        k
    }

    /// A key state taken over from another process (a restart handing its sessions over):
    /// the data channel and the reliability layer's counters carry on, but the TLS session
    /// could not be moved, so this key state has none. Control packets for it are still
    /// acknowledged (the peer stops resending them); text it would carry is lost. The next
    /// renegotiation (a new key id, a new TLS session) brings the session back to normal.
    pub fn resumed(
        key_id: u8,
        data: DataChannel,
        send_next: u32,
        recv_next: u32,
        created: Instant,
        active_since: Instant,
        retire_at: Option<Instant>,
    ) -> Self {
        Self {
            key_id,
            tls: None,
            offload: false,
            away: None,
            job: None,
            tls_in: Vec::new(),
            plain_out: Vec::new(),
            send: ReliableSend::resume(INITIAL_RTO, send_next),
            recv: ReliableRecv::resume(recv_next),
            peer_reset_seen: true,
            plaintext: Vec::new(),
            km_sent: true,
            km_received: true,
            data: Some(data),
            created,
            active_since: Some(active_since),
            retire_at,
            tls_out: Vec::new(),
            tls_eof: false,
            wkc_len: 0,
            wkc_requested: false,
        }
    }

    /// The reliability layer's next ids: (ours to send, the peer's we expect).
    pub fn reliable_next(&self) -> (u32, u32) {
        (self.send.next_packet_id(), self.recv.next_expected())
    }

    /// Feeds a control packet for this key id. Delivers TLS records in order to rustls and
    /// collects decrypted plaintext.
    pub fn handle_control(&mut self, pkt: &ControlPacket<'_>) -> Result<(), ControlError> {
        for id in pkt.acks.iter() {
            self.send.handle_ack(id);
        }
        if self.send.queued() > MAX_SEND_QUEUE {
            return Err(ControlError::Limit(
                "the peer does not acknowledge our control packets",
            ));
        }
        if let Some(pid) = pkt.packet_id
            && let RecvOutcome::OutOfWindow = self.recv.handle_packet(pid, pkt.opcode, pkt.payload)
        {
            return Ok(());
        }
        while let Some((opcode, payload)) = self.recv.poll_delivered() {
            match opcode {
                Opcode::ControlV1 => {
                    self.tls_in.extend_from_slice(&payload);
                    if self.tls_in.len() > MAX_PLAINTEXT {
                        return Err(ControlError::Limit(
                            "more than 64 KiB of TLS records waiting for the handshake",
                        ));
                    }
                }
                _ => {
                    self.peer_reset_seen = true;
                    // A hard reset's payload carries early-negotiation TLVs (OpenVPN 2.6).
                    let flags = early_neg::parse_flags(&payload);
                    if self.wkc_len > 0 && flags & early_neg::FLAG_RESEND_WKC != 0 {
                        self.wkc_requested = true;
                    }
                }
            }
        }
        self.feed_tls()
    }

    /// Feeds the records received so far to the connection, in place or (handshaking, with
    /// `offload`) as a job; then collects plaintext and what TLS wants to send.
    fn feed_tls(&mut self) -> Result<(), ControlError> {
        let Some(conn) = self.tls.take() else {
            return Ok(()); // away: the records wait for it
        };
        if self.tls_in.is_empty() {
            self.tls = Some(conn);
        } else {
            let handshaking = conn.is_handshaking();
            let job = TlsJob::new(conn, std::mem::take(&mut self.tls_in));
            if self.offload && handshaking {
                self.job = Some(job);
                return Ok(());
            }
            let done = job.run();
            self.tls = Some(done.conn);
            if let Err(e) = done.result {
                super::tls::restore_last_refusal(done.refusal);
                // Let the alert rustls queued reach the peer.
                self.flush_tls();
                return Err(e.into());
            }
        }
        self.read_plaintext()?;
        self.flush_tls();
        Ok(())
    }

    /// A job made by the last packets, to run elsewhere; the key state waits for it
    /// ([`finish_job`](Self::finish_job)) under the sequence number `seq`.
    pub fn take_job(&mut self, seq: u64) -> Option<TlsJob> {
        let job = self.job.take()?;
        self.away = Some(seq);
        Some(job)
    }

    /// A job is ready to be taken.
    pub fn has_job(&self) -> bool {
        self.job.is_some()
    }

    /// True while a job has the connection under `seq`.
    pub fn waits_for(&self, seq: u64) -> bool {
        self.away == Some(seq)
    }

    /// The connection is back from job `seq`: carry on as if it had been processed here.
    pub fn finish_job(&mut self, done: TlsDone) -> Result<(), ControlError> {
        self.away = None;
        self.tls = Some(done.conn);
        if let Err(e) = done.result {
            super::tls::restore_last_refusal(done.refusal);
            self.flush_tls();
            return Err(e.into());
        }
        if !self.plain_out.is_empty() {
            let msg = std::mem::take(&mut self.plain_out);
            self.write_plaintext(&msg);
        }
        self.feed_tls()
    }

    /// The TLS connection, unless a job has it.
    pub fn tls(&self) -> Option<&rustls::Connection> {
        self.tls.as_ref()
    }

    fn read_plaintext(&mut self) -> Result<(), ControlError> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 4096];
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => {
                    self.tls_eof = true;
                    return Err(ControlError::TlsClosed);
                }
                Ok(n) => {
                    self.plaintext.extend_from_slice(&buf[..n]);
                    if self.plaintext.len() > MAX_PLAINTEXT {
                        return Err(ControlError::Limit(
                            "more than 64 KiB of control-channel text without a message end",
                        ));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(rustls::Error::General(e.to_string()).into()),
            }
        }
    }

    /// Sends `msg` as TLS plaintext.
    pub fn write_plaintext(&mut self, msg: &[u8]) {
        let Some(tls) = self.tls.as_mut() else {
            self.plain_out.extend_from_slice(msg);
            return;
        };
        // Writing to rustls' buffer cannot fail short of a bug; the message is re-sent by the
        // peer's request (PUSH_REQUEST) in the worst case.
        let _ = tls.writer().write_all(msg);
        self.flush_tls();
    }

    /// Moves TLS records rustls wants to send into the reliable send queue, split so every
    /// control packet stays within [`MAX_CONTROL_PACKET`].
    pub fn flush_tls(&mut self) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        while tls.wants_write() {
            if tls.write_tls(&mut self.tls_out).is_err() {
                break;
            }
        }
        let chunk = max_control_payload(MAX_ACKS);
        debug_assert!(chunk < MAX_CONTROL_PACKET);
        let mut rest: &[u8] = &self.tls_out;
        while !rest.is_empty() {
            let (opcode, room) = if self.wkc_due() {
                // The wrapped key rides along: leave room for it (as OpenVPN does).
                (
                    Opcode::ControlWkcV1,
                    chunk.saturating_sub(self.wkc_len).max(16),
                )
            } else {
                (Opcode::ControlV1, chunk)
            };
            let (piece, tail) = rest.split_at(room.min(rest.len()));
            self.send.push(opcode, piece.to_vec());
            rest = tail;
        }
        self.tls_out.clear();
    }

    /// Our next reliable packet is the first after the reset and must carry our wrapped key.
    fn wkc_due(&self) -> bool {
        self.wkc_requested && self.send.next_packet_id() == 1
    }

    /// Takes the next NUL-terminated control message out of the plaintext buffer.
    pub fn next_text_message(&mut self) -> Option<String> {
        let end = self.plaintext.iter().position(|b| *b == 0)?;
        let msg: Vec<u8> = self.plaintext.drain(..=end).collect();
        Some(String::from_utf8_lossy(&msg[..end]).into_owned())
    }

    /// Writes the next control packet (new, retransmitted or a bare ACK) into `out`.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        local_sid: u64,
        remote_sid: Option<u64>,
        out: &mut Vec<u8>,
    ) -> bool {
        // Until we know the peer's session id we cannot ack (acks carry it).
        let can_ack = remote_sid.is_some();
        if can_ack && self.recv.has_pending_acks() && self.wkc_due() {
            // A bare ACK would not carry the wrapped key a stateless server needs: send an
            // empty P_CONTROL_WKC_V1 instead, which is retransmitted until acknowledged.
            self.send.push(Opcode::ControlWkcV1, Vec::new());
        }
        if let Some(o) = self.send.poll_transmit(now) {
            let acks = if can_ack {
                self.recv.take_acks(MAX_ACKS)
            } else {
                Default::default()
            };
            let pkt = ControlPacket {
                opcode: o.opcode,
                key_id: self.key_id,
                session_id: local_sid,
                remote_session_id: if acks.is_empty() { None } else { remote_sid },
                acks,
                packet_id: Some(o.packet_id),
                payload: o.payload,
            };
            out.clear();
            pkt.emit(out);
            return true;
        }
        if can_ack && self.recv.has_pending_acks() {
            let acks = self.recv.take_acks(MAX_ACKS);
            let pkt = ControlPacket {
                opcode: Opcode::AckV1,
                key_id: self.key_id,
                session_id: local_sid,
                remote_session_id: remote_sid,
                acks,
                packet_id: None,
                payload: &[],
            };
            out.clear();
            pkt.emit(out);
            return true;
        }
        false
    }

    /// Next retransmission deadline, or now if acks are waiting.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.recv.has_pending_acks() {
            return Some(now);
        }
        self.send.poll_timeout()
    }

    /// True once the TLS handshake completed.
    pub fn tls_done(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| !t.is_handshaking())
    }

    /// Everything we sent was acknowledged.
    pub fn send_idle(&self) -> bool {
        self.send.is_idle()
    }
}
