//! MOBIKE (RFC 4555), the gateway's side: a remote-access client that changes its own
//! address (Wi-Fi to cellular) keeps its IKE SA and CHILD SAs.
//!
//! - IKE_AUTH: a client that offers MOBIKE_SUPPORTED gets MOBIKE_SUPPORTED back in the
//!   IKE_AUTH response ([`IkeResponder::accept`]); one that does not offer it never sees it.
//!   We send no address list (ADDITIONAL_*_ADDRESS / NO_ADDITIONAL_ADDRESSES are optional,
//!   and the engine does not know the gateway's addresses): the client keeps the one it dialled.
//! - INFORMATIONAL with UPDATE_SA_ADDRESSES, sent by the client from its new address: the
//!   SA's peer becomes the request's source address and port, and the socket it came in on
//!   (IKE responses, our DPD requests and ESP go there from now on). The move itself is the
//!   one every authenticated message makes ([`IkeResponder::handle_message`] sets the peer
//!   only after the message decrypted and its message ID was the expected one: RFC 7296
//!   2.23), so a message that fails decryption, replays an old message ID or comes too early
//!   moves nothing. The gateway core sees [`IkeResponder::peer`] change, moves the tunnel's
//!   ESP there and logs `peer moved to a new address`.
//! - The response carries what RFC 4555 asks of it: NAT_DETECTION_SOURCE_IP and
//!   NAT_DETECTION_DESTINATION_IP when the request had them (3.5; the destination hash is of
//!   the address and port the request came from; the source hash is a random value, as in
//!   IKE_SA_INIT, so the client keeps seeing a NAT and keeps ESP in UDP 4500, the only ESP
//!   the gateway handles), and the request's COOKIE2 echoed (3.7).
//! - ADDITIONAL_IP4_ADDRESS, ADDITIONAL_IP6_ADDRESS and NO_ADDITIONAL_ADDRESSES are accepted
//!   and ignored: the gateway never probes other paths itself, it follows the client. So is
//!   NO_NATS_ALLOWED (strongSwan never sends it).
//!
//! strongSwan 5.9 (`ike_mobike.c`) roams like this: a plain INFORMATIONAL request from the
//! new address (its path check; it already moves the SA here), then INFORMATIONAL with
//! UPDATE_SA_ADDRESSES, COOKIE2 (16 bytes) and both NAT_DETECTION notifies; it closes the
//! IKE SA if COOKIE2 does not come back, and reads the NAT_DETECTION notifies of the answer
//! to decide whether to keep UDP encapsulation. Without MOBIKE it reauthenticates instead
//! (a new IKE SA). A client behind a NAT also puts NAT_DETECTION notifies in its DPD
//! requests (no UPDATE_SA_ADDRESSES); they get the same answer.

use std::net::SocketAddr;

use super::super::crypto::natd::{fake_source_hash, natd_hash};
use super::IkeResponder;
use crate::wire::ikev2::{NotifyType, Payload};

/// Shortest and longest COOKIE2 data (RFC 4555 3.7).
const COOKIE2_LEN: std::ops::RangeInclusive<usize> = 8..=64;

/// What the SA knows about MOBIKE.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mobike {
    /// The client sent MOBIKE_SUPPORTED in IKE_AUTH.
    offered: bool,
    /// We answered it with MOBIKE_SUPPORTED: MOBIKE is in use on this SA.
    enabled: bool,
    /// UPDATE_SA_ADDRESSES requests answered.
    updates: u32,
}

/// The notifications an INFORMATIONAL response gets for the request's MOBIKE notifies.
impl Mobike {
    /// (offered, enabled, updates), for a handoff.
    pub(super) fn parts(&self) -> (bool, bool, u32) {
        (self.offered, self.enabled, self.updates)
    }

    /// The inverse of [`parts`](Self::parts).
    pub(super) fn from_parts((offered, enabled, updates): (bool, bool, u32)) -> Self {
        Self {
            offered,
            enabled,
            updates,
        }
    }
}

pub(super) type MobikeAnswer = Vec<(NotifyType, Vec<u8>)>;

impl IkeResponder {
    /// IKE_AUTH request: remembers whether the client offered MOBIKE.
    pub(super) fn note_mobike_offer(&mut self, payloads: &[Payload<'_>]) {
        self.mobike.offered = payloads.iter().any(
            |p| matches!(p, Payload::Notify(n) if n.notify_type == NotifyType::MOBIKE_SUPPORTED),
        );
    }

    /// IKE_AUTH response to a remote-access client: MOBIKE_SUPPORTED when the client offered
    /// it (MOBIKE is then in use).
    pub(super) fn mobike_auth_notify(&mut self) -> Option<NotifyType> {
        self.mobike.enabled = self.mobike.offered;
        self.mobike.enabled.then_some(NotifyType::MOBIKE_SUPPORTED)
    }

    /// Whether MOBIKE is in use on this SA (the client offered it and we answered).
    pub fn mobike(&self) -> bool {
        self.mobike.enabled
    }

    /// How many UPDATE_SA_ADDRESSES requests this SA answered.
    pub fn mobike_updates(&self) -> u32 {
        self.mobike.updates
    }

    /// An authentic INFORMATIONAL request: the MOBIKE notifies its response carries. Empty
    /// when MOBIKE is not in use or the request has none. The peer is already where the
    /// request came from (`handle_message` moved it).
    pub(super) fn on_mobike_informational(&mut self, payloads: &[Payload<'_>]) -> MobikeAnswer {
        let from: SocketAddr = self.peer;
        if !self.mobike.enabled {
            return Vec::new();
        }
        let mut update = false;
        let mut cookie2 = None;
        let (mut natd_src, mut natd_dst) = (false, false);
        for p in payloads {
            let Payload::Notify(n) = p else {
                continue;
            };
            match n.notify_type {
                NotifyType::UPDATE_SA_ADDRESSES => update = true,
                NotifyType::COOKIE2 if COOKIE2_LEN.contains(&n.data.len()) => {
                    cookie2 = Some(n.data.to_vec())
                }
                NotifyType::NAT_DETECTION_SOURCE_IP => natd_src |= n.nat_detection_hash().is_some(),
                NotifyType::NAT_DETECTION_DESTINATION_IP => {
                    natd_dst |= n.nat_detection_hash().is_some()
                }
                // ADDITIONAL_*_ADDRESS, NO_ADDITIONAL_ADDRESSES, NO_NATS_ALLOWED: ignored.
                _ => {}
            }
        }
        let mut answer = Vec::new();
        if update {
            self.mobike.updates = self.mobike.updates.saturating_add(1);
        }
        if natd_src && natd_dst {
            let fake = fake_source_hash(&mut *self.entropy);
            answer.push((NotifyType::NAT_DETECTION_SOURCE_IP, fake.to_vec()));
            let dst = natd_hash(self.spi_i, self.spi_r, from);
            answer.push((NotifyType::NAT_DETECTION_DESTINATION_IP, dst.to_vec()));
        }
        if let Some(c) = cookie2 {
            answer.push((NotifyType::COOKIE2, c));
        }
        answer
    }
}
