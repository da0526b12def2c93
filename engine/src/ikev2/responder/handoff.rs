//! Handing an established IKE SA the peer started - a remote-access client's or a site's - to
//! another process (a restart for an upgrade, a standby): [`IkeResponder::into_handoff`] /
//! [`IkeResponder::from_handoff`]. (Site SAs the gateway started move with
//! [`crate::ikev2::initiator::InitiatorHandoff`].)
//!
//! Everything moves: the SPIs, the suite and every SK_* key, both message-ID counters,
//! the retransmission cache of the last response, the CHILD SAs' SPIs and times, the
//! narrowed traffic selectors, the client's identity and certificate, MOBIKE state and the
//! timers (as durations). The AEAD IV counter of our outgoing IKE messages is jumped by
//! [`HANDOFF_IV_SKIP`]. (The ESP SAs themselves live in the core's table and move with the
//! core's tunnel.) Not moved: a request of ours awaiting its answer (a DPD: the next one
//! reuses its message ID, so the client, which may have answered it already, answers from
//! its cache), IKE SAs replaced by a rekey and still answering on their old SPIs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Child, Discards, IkeResponder, ResponderConfig, State, mobike};
use crate::entropy::Entropy;
use crate::ikev2::crypto::keymat::IkeSaKeys;
use crate::ikev2::crypto::sk::SkKeys;
use crate::ikev2::message::Reassembly;
use crate::ikev2::proposal::IkeSuite;
use crate::openvpn::server::{back, ms_ago};
use crate::wire::ikev2::TsPayload;

/// IVs our outgoing IKE messages skip after a handoff: the exporting process stops before
/// it exports, so this guards against nothing but a bug, at no cost (2^64 IVs).
pub const HANDOFF_IV_SKIP: u64 = 1 << 32;

/// How many message IDs a peer's liveness check (an empty INFORMATIONAL request) may be
/// ahead of the copied counter after a takeover: the previous process answered that many
/// after its last copy (issue 17; a standby's copy is at most `ha.interval` old and peers
/// check liveness every 10 s or more). Accepted once: the first authentic request sets
/// the counter. Any other request past the counter is dropped as before.
pub const HANDOFF_ID_SLACK: u32 = 16;

/// An established IKE SA, exported. Holds keys: the driver writes it to a 0600 file.
#[derive(Serialize, Deserialize)]
pub struct ResponderHandoff {
    /// The initiator's and our SPI.
    pub spi_i: u64,
    /// Ours.
    pub spi_r: u64,
    /// The negotiated suite.
    pub suite: IkeSuite,
    /// SK_d, SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr.
    pub keys: [Vec<u8>; 7],
    /// The AEAD IV counters: the client's messages, ours (jumped).
    pub iv_in: u64,
    /// Ours, jumped by [`HANDOFF_IV_SKIP`].
    pub iv_out: u64,
    /// The nonces of IKE_SA_INIT (or the last IKE rekey).
    pub ni: Vec<u8>,
    /// Ours.
    pub nr: Vec<u8>,
    /// The client fragments (RFC 7383) / signs with RFC 7427 hashes.
    pub peer_fragments: bool,
    /// RFC 7427.
    pub peer_sig_hash: bool,
    /// The client's address, and whether it uses port 4500 (non-ESP marker).
    pub peer: SocketAddr,
    /// Port 4500.
    pub peer_nat_t: bool,
    /// The message ID of the client's next request.
    pub next_peer_id: u32,
    /// Our last response (its message ID and datagrams), resent when the request repeats.
    pub last_response: Option<(u32, Vec<Vec<u8>>)>,
    /// The message ID of our next request.
    pub next_our_id: u32,
    /// CHILD SAs: our SPI, the client's, ms since created, ms since superseded.
    pub children: Vec<(u32, u32, u64, Option<u64>)>,
    /// ms since the IKE SA was created, its keys made, the client last heard.
    pub created_ms_ago: u64,
    /// Its keys.
    pub keys_ms_ago: u64,
    /// The client last heard.
    pub last_rx_ms_ago: u64,
    /// The certificate's name.
    pub client: Option<String>,
    /// The client's certificate (DER).
    pub peer_cert: Option<Vec<u8>>,
    /// TSi and TSr bodies narrowed at IKE_AUTH.
    pub narrowed: Option<(Vec<u8>, Vec<u8>)>,
    /// MOBIKE: offered, enabled, updates answered.
    pub mobike: (bool, bool, u32),
    /// A site-to-site SA: the name of its connection (the importing gateway must have a
    /// connection of that name); None for a remote-access client.
    #[serde(default)]
    pub site: Option<String>,
}

impl IkeResponder {
    /// Whether the SA can be handed over: an established remote-access or site SA with
    /// nothing of its own under way (not being deleted, no IKE_AUTH in check).
    pub fn can_hand_over(&self) -> bool {
        self.state == State::Established
            && (self.site.is_none() || self.site_confirmed)
            && self.deleting.is_none()
            && !self.ike_initiator
            && self.child_collision.is_none()
    }

    /// Consumes the SA and exports it (see the module documentation); None when
    /// [`can_hand_over`](Self::can_hand_over) is false.
    pub fn into_handoff(self, now: Instant) -> Option<ResponderHandoff> {
        self.snapshot_handoff(now)
    }

    /// A copy of the SA for a standby gateway (issue 17), leaving it in use here. Our IV
    /// counter is written [`HANDOFF_IV_SKIP`] ahead, which no SA reaches in a snapshot
    /// period. Requests the client makes after the snapshot are not in the copy: the
    /// standby expects their message IDs again.
    pub fn snapshot_handoff(&self, now: Instant) -> Option<ResponderHandoff> {
        if !self.can_hand_over() {
            return None;
        }
        let k = &self.keys;
        let next_our_id = self
            .outstanding
            .as_ref()
            .map_or(self.next_our_id, |o| o.message_id);
        let narrowed = self.narrowed.as_ref().map(|(i, r)| {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            i.emit_body(&mut a);
            r.emit_body(&mut b);
            (a, b)
        });
        Some(ResponderHandoff {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            suite: self.suite,
            keys: [
                k.sk_d.clone(),
                k.sk_ai.clone(),
                k.sk_ar.clone(),
                k.sk_ei.clone(),
                k.sk_er.clone(),
                k.sk_pi.clone(),
                k.sk_pr.clone(),
            ],
            iv_in: self.sk_in.next_iv(),
            iv_out: self.sk_out.next_iv().saturating_add(HANDOFF_IV_SKIP),
            ni: self.ni.clone(),
            nr: self.nr.clone(),
            peer_fragments: self.peer_fragments,
            peer_sig_hash: self.peer_sig_hash,
            peer: self.peer,
            peer_nat_t: self.peer_nat_t,
            next_peer_id: self.next_peer_id,
            last_response: self.last_response.clone(),
            next_our_id,
            children: self
                .children
                .iter()
                .filter(|c| !c.replaced)
                .map(|c| {
                    (
                        c.our_spi,
                        c.peer_spi,
                        ms_ago(now, c.created),
                        c.superseded.map(|t| ms_ago(now, t)),
                    )
                })
                .collect(),
            created_ms_ago: ms_ago(now, self.created),
            keys_ms_ago: ms_ago(now, self.keys_created),
            last_rx_ms_ago: ms_ago(now, self.last_rx),
            client: self.client.clone(),
            peer_cert: self.peer_cert.clone(),
            narrowed,
            mobike: self.mobike.parts(),
            site: self.site().map(|s| s.name.clone()),
        })
    }

    /// Rebuilds an SA another process exported, established.
    pub fn from_handoff(
        cfg: Arc<ResponderConfig>,
        entropy: Box<dyn Entropy>,
        now: Instant,
        h: ResponderHandoff,
    ) -> Result<Self, String> {
        let [sk_d, sk_ai, sk_ar, sk_ei, sk_er, sk_pi, sk_pr] = h.keys;
        let keys = IkeSaKeys {
            sk_d,
            sk_ai,
            sk_ar,
            sk_ei,
            sk_er,
            sk_pi,
            sk_pr,
        };
        let mut sk_in =
            SkKeys::new(h.suite.cipher, &keys.sk_ei, &keys.sk_ai).map_err(|e| e.to_string())?;
        let mut sk_out =
            SkKeys::new(h.suite.cipher, &keys.sk_er, &keys.sk_ar).map_err(|e| e.to_string())?;
        sk_in.set_next_iv(h.iv_in);
        sk_out.set_next_iv(h.iv_out);
        let site = match &h.site {
            Some(name) => Some(
                cfg.sites
                    .iter()
                    .find(|s| s.name == *name)
                    .cloned()
                    .ok_or_else(|| format!("no site connection named {name:?} here"))?,
            ),
            None => None,
        };
        let narrowed = match h.narrowed {
            Some((i, r)) => Some((
                TsPayload::parse_body(&i).map_err(|e| e.to_string())?,
                TsPayload::parse_body(&r).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        Ok(IkeResponder {
            cfg,
            entropy,
            state: State::Established,
            spi_i: h.spi_i,
            spi_r: h.spi_r,
            suite: h.suite,
            keys,
            sk_in,
            sk_out,
            ni: h.ni,
            nr: h.nr,
            init_request: Vec::new(),
            init_response: Vec::new(),
            peer_fragments: h.peer_fragments,
            peer_sig_hash: h.peer_sig_hash,
            peer: h.peer,
            peer_nat_t: h.peer_nat_t,
            next_peer_id: h.next_peer_id,
            id_slack: HANDOFF_ID_SLACK,
            last_response: h.last_response,
            reassembly: Reassembly::default(),
            pending: None,
            checking: None,
            auth_job: None,
            children: h
                .children
                .into_iter()
                .map(|(our_spi, peer_spi, created, superseded)| Child {
                    our_spi,
                    peer_spi,
                    created: back(now, created),
                    replaced: false,
                    superseded: superseded.map(|ms| back(now, ms)),
                })
                .collect(),
            next_our_id: h.next_our_id,
            outstanding: None,
            deleting: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            created: back(now, h.created_ms_ago),
            keys_created: back(now, h.keys_ms_ago),
            old_sas: Vec::new(),
            last_rx: back(now, h.last_rx_ms_ago),
            client: h.client,
            peer_cert: h.peer_cert,
            spis: None,
            narrowed,
            ike_initiator: false,
            child_collision: None,
            site_confirmed: site.is_some(),
            site_claimed: site.is_some(),
            site,
            mobike: mobike::Mobike::from_parts(h.mobike),
            psk_throttle: None,
            discards: Discards::default(),
        })
    }
}
