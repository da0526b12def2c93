//! Session cookies: the gateway answers an OpenVPN hard reset without keeping any state, as
//! OpenVPN 2.6 does (`calculate_session_id_hmac` / `check_session_hmac_and_pkt_id` in
//! `ssl_pkt.c`). Our reset's session id is a MAC over the client's address, its session id
//! and the time; only a packet that echoes it back (an acknowledgement of our reset, from the
//! same address, within the hand window) creates a session. A spoofed source never sees the
//! cookie, so a flood of resets costs one MAC and one small reply each, and nothing is kept
//! or retransmitted.
//!
//! Our reply to a `P_CONTROL_HARD_RESET_CLIENT_V2` carries no acknowledgement, which makes it
//! exactly as long as the reset it answers (with any wrapper): the gateway never sends a
//! spoofed source more bytes than it got. The client acknowledges our reset (`P_ACK_V1`), that
//! proves its address, and the new session acknowledges the client's reset. A tls-crypt-v2
//! client's `P_CONTROL_HARD_RESET_CLIENT_V3` carries its wrapped key (hundreds of bytes), so
//! there the reply acknowledges it and asks for the key again in the client's first control
//! packet (early negotiation), which is what makes that packet self-contained.

use std::net::{IpAddr, SocketAddr};

use super::wrap::crypto::{hmac_sha256, tags_equal};
use super::wrap::early_neg::{FLAG_RESEND_WKC, TLV_FLAGS};
use crate::wire::openvpn::{AckList, ControlPacket, Opcode};

/// The secret and time step behind the cookies of one gateway worker.
pub struct ResetCookies {
    key: [u8; 32],
    /// Seconds per time slot: half the hand window. A cookie is good in its own slot and the
    /// two after it (1 to 1.5 hand windows).
    slot: u32,
}

impl std::fmt::Debug for ResetCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetCookies")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl ResetCookies {
    /// Cookies under `key` (random, never leaves the process) for a `hand_window`-second
    /// handshake window (OpenVPN's `hand-window`, 60 s by default).
    pub fn new(key: [u8; 32], hand_window: u32) -> Self {
        Self {
            key,
            slot: hand_window.div_ceil(2).max(1),
        }
    }

    fn sid_in_slot(&self, slot: u32, from: SocketAddr, client_sid: u64) -> [u8; 8] {
        let mut ip = [0u8; 16];
        match from.ip() {
            IpAddr::V4(a) => ip[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => ip.copy_from_slice(&a.octets()),
        }
        let mac = hmac_sha256(
            &self.key,
            &[
                &slot.to_be_bytes(),
                &ip,
                &from.port().to_be_bytes(),
                &client_sid.to_be_bytes(),
            ],
        );
        let mut sid = [0u8; 8];
        sid.copy_from_slice(&mac[..8]);
        sid
    }

    /// The session id our stateless reset sends `from` at `unix_time`.
    pub fn issue(&self, unix_time: u32, from: SocketAddr, client_sid: u64) -> u64 {
        u64::from_be_bytes(self.sid_in_slot(unix_time / self.slot, from, client_sid))
    }

    /// Whether `sid` is a cookie we issued to `from` for `client_sid` within the window.
    pub fn check(&self, unix_time: u32, from: SocketAddr, client_sid: u64, sid: u64) -> bool {
        let now = unix_time / self.slot;
        let got = sid.to_be_bytes();
        (0..=2u32).any(|back| {
            now.checked_sub(back)
                .is_some_and(|slot| tags_equal(&self.sid_in_slot(slot, from, client_sid), &got))
        })
    }
}

/// Our stateless answer to a client hard reset (plain, before the wrapper): a
/// `P_CONTROL_HARD_RESET_SERVER_V2` with packet id 0 and session id `cookie`. `ack`: it
/// acknowledges the client's reset (packet 0); `resend_wkc`: it asks a tls-crypt-v2 client to
/// send its wrapped key again in its first control packet.
pub fn reset_reply(cookie: u64, client_sid: u64, ack: bool, resend_wkc: bool, out: &mut Vec<u8>) {
    let tlv: [u8; 6] = {
        let mut t = [0u8; 6];
        t[..2].copy_from_slice(&TLV_FLAGS.to_be_bytes());
        t[2..4].copy_from_slice(&2u16.to_be_bytes());
        t[4..].copy_from_slice(&FLAG_RESEND_WKC.to_be_bytes());
        t
    };
    let acks: AckList = if ack {
        [0u32].into_iter().collect()
    } else {
        AckList::default()
    };
    let pkt = ControlPacket {
        opcode: Opcode::ControlHardResetServerV2,
        key_id: 0,
        session_id: cookie,
        remote_session_id: ack.then_some(client_sid),
        acks,
        packet_id: Some(0),
        payload: if resend_wkc { &tlv } else { &[] },
    };
    out.clear();
    pkt.emit(out);
}

/// What a packet that may answer our stateless reset claims: (client session id, our
/// session id = the cookie). Only key id 0 and packet ids of the three-way handshake (at
/// most 1, acknowledged or sent) qualify, with at least one acknowledgement (it carries our
/// session id), as in OpenVPN 2.6.
pub fn proof_of(pkt: &ControlPacket<'_>) -> Option<(u64, u64)> {
    if pkt.key_id != 0 || pkt.acks.is_empty() || pkt.acks.iter().any(|id| id > 1) {
        return None;
    }
    if pkt.packet_id.is_some_and(|id| id > 1) {
        return None;
    }
    Some((pkt.session_id, pkt.remote_session_id?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::openvpn::Packet;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_cookie_is_good_for_its_address_session_and_window_only() {
        let c = ResetCookies::new([7; 32], 60);
        let from = addr("10.0.0.2:40000");
        let sid = c.issue(1_000_000, from, 42);
        assert!(c.check(1_000_000, from, 42, sid));
        assert!(
            c.check(1_000_000 + 59, from, 42, sid),
            "within the hand window"
        );
        assert!(!c.check(1_000_000 + 91, from, 42, sid), "expired");
        assert!(
            !c.check(1_000_000, addr("10.0.0.3:40000"), 42, sid),
            "other address"
        );
        assert!(
            !c.check(1_000_000, addr("10.0.0.2:40001"), 42, sid),
            "other port"
        );
        assert!(!c.check(1_000_000, from, 43, sid), "other client session");
        assert!(!c.check(1_000_000, from, 42, sid ^ 1));
        let other_key = ResetCookies::new([8; 32], 60);
        assert!(!other_key.check(1_000_000, from, 42, sid), "other secret");
        assert_ne!(
            c.issue(1_000_000, from, 42),
            c.issue(1_000_000 + 30, from, 42)
        );
    }

    #[test]
    fn the_reply_without_ack_is_as_long_as_a_plain_reset() {
        let reset = ControlPacket {
            opcode: Opcode::ControlHardResetClientV2,
            key_id: 0,
            session_id: 1,
            remote_session_id: None,
            acks: AckList::default(),
            packet_id: Some(0),
            payload: &[],
        };
        let mut a = Vec::new();
        reset.emit(&mut a);
        let mut b = Vec::new();
        reset_reply(9, 1, false, false, &mut b);
        assert_eq!(a.len(), b.len());
        let Ok(Packet::Control(p)) = Packet::parse(&b) else {
            panic!("unparsable reply")
        };
        assert_eq!(p.opcode, Opcode::ControlHardResetServerV2);
        assert_eq!((p.session_id, p.packet_id), (9, Some(0)));
        reset_reply(9, 1, true, true, &mut b);
        let Ok(Packet::Control(p)) = Packet::parse(&b) else {
            panic!("unparsable reply")
        };
        assert_eq!(p.remote_session_id, Some(1));
        assert_eq!(p.acks.iter().collect::<Vec<_>>(), vec![0]);
        assert_eq!(p.payload, &[0, 1, 0, 2, 0, 1]);
    }

    #[test]
    fn only_handshake_packets_acking_our_reset_are_proofs() {
        let mk = |acks: &[u32], pid: Option<u32>, key_id: u8| ControlPacket {
            opcode: if pid.is_some() {
                Opcode::ControlV1
            } else {
                Opcode::AckV1
            },
            key_id,
            session_id: 5,
            remote_session_id: (!acks.is_empty()).then_some(77),
            acks: acks.iter().copied().collect(),
            packet_id: pid,
            payload: &[],
        };
        assert_eq!(proof_of(&mk(&[0], None, 0)), Some((5, 77)));
        assert_eq!(proof_of(&mk(&[0], Some(1), 0)), Some((5, 77)));
        assert_eq!(proof_of(&mk(&[1, 0], Some(1), 0)), Some((5, 77)));
        assert_eq!(proof_of(&mk(&[], Some(1), 0)), None, "no ack");
        assert_eq!(
            proof_of(&mk(&[0, 2], Some(1), 0)),
            None,
            "acks a later packet"
        );
        assert_eq!(proof_of(&mk(&[0], Some(2), 0)), None, "a later packet");
        assert_eq!(proof_of(&mk(&[0], Some(1), 1)), None, "another key");
    }
}
