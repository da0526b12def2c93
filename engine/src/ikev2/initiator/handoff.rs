//! Handing an established site SA the gateway started to another process (a restart for an
//! upgrade, a standby taking over): [`IkeInitiator::snapshot_handoff`] /
//! [`IkeInitiator::from_handoff`], the initiator's counterpart of
//! [`ResponderHandoff`](crate::ikev2::responder::ResponderHandoff).
//!
//! What moves: the SPIs and which end initiated the current IKE SA (the peer becomes its
//! initiator when it rekeyed it), the suite and every SK_* key, the AEAD IV counters (ours
//! jumped by [`HANDOFF_IV_SKIP`]), both message-ID counters and the cache of our last
//! response, the CHILD SAs' SPIs, the narrowed traffic selectors, the peer's certificate, the
//! DH group for the next rekey and the timers (as durations). The ESP SAs themselves live in
//! the core's table and move with the core's tunnel. Not moved: SAs with an exchange of ours
//! under way other than a DPD (a rekey or a delete: the next snapshot has the result), IKE
//! SAs replaced by a rekey and still answering on their old SPIs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Child, IkeInitiator, InitiatorConfig, Request, SaKeys, State};
use crate::entropy::Entropy;
use crate::ikev2::crypto::DhGroup;
use crate::ikev2::crypto::keymat::IkeSaKeys;
use crate::ikev2::crypto::sk::SkKeys;
use crate::ikev2::message::Reassembly;
use crate::ikev2::proposal::IkeSuite;
use crate::ikev2::responder::HANDOFF_IV_SKIP;
use crate::openvpn::server::{back, ms_ago};
use crate::wire::ikev2::TsPayload;

/// An established IKE SA we started, exported. Holds keys: the driver keeps it private.
#[derive(Serialize, Deserialize)]
pub struct InitiatorHandoff {
    /// The site connection's name (the importing gateway must have one of that name).
    pub site: String,
    /// SPIi and SPIr of the current IKE SA.
    pub spi_i: u64,
    /// SPIr.
    pub spi_r: u64,
    /// Whether we are the current IKE SA's initiator (false after the peer rekeyed it).
    pub ike_initiator: bool,
    /// The negotiated suite.
    pub suite: IkeSuite,
    /// SK_d, SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr.
    pub keys: [Vec<u8>; 7],
    /// The AEAD IV counter of the peer's messages.
    pub iv_in: u64,
    /// Ours, jumped by [`HANDOFF_IV_SKIP`].
    pub iv_out: u64,
    /// The nonces of the current IKE SA.
    pub ni: Vec<u8>,
    /// The responder's nonce.
    pub nr: Vec<u8>,
    /// The DH group (IANA id) our next IKE rekey offers first.
    pub group: u16,
    /// Where IKE and ESP go, and whether over port 4500.
    pub gateway: std::net::SocketAddr,
    /// Port 4500 (UDP encapsulation).
    pub nat_t: bool,
    /// The peer fragments (RFC 7383) / signs with RFC 7427 hashes.
    pub peer_fragments: bool,
    /// RFC 7427.
    pub peer_sig_hash: bool,
    /// TSi and TSr bodies as narrowed at IKE_AUTH (a CHILD rekey asks for them again).
    pub child_ts: (Vec<u8>, Vec<u8>),
    /// CHILD SAs in use: our SPI, the peer's.
    pub children: Vec<(u32, u32)>,
    /// The message ID of our next request.
    pub next_our_id: u32,
    /// The message ID of the peer's next request.
    pub next_peer_id: u32,
    /// Our last response (its message ID and datagrams), resent when the request repeats.
    pub last_response: Option<(u32, Vec<Vec<u8>>)>,
    /// The peer's certificate (DER), for live revocation.
    pub peer_cert: Option<Vec<u8>>,
    /// ms until the lifetimes start the next IKE and CHILD rekeys (None: not scheduled).
    pub ike_rekey_in_ms: Option<u64>,
    /// The CHILD rekey.
    pub child_rekey_in_ms: Option<u64>,
    /// ms since the peer was last heard.
    pub last_rx_ms_ago: u64,
}

fn ahead(now: Instant, t: Option<Instant>) -> Option<u64> {
    t.map(|t| u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX))
}

fn ts_body(ts: &[crate::wire::ikev2::TrafficSelector]) -> Vec<u8> {
    let mut out = Vec::new();
    TsPayload::new(ts.to_vec()).emit_body(&mut out);
    out
}

impl IkeInitiator {
    /// Whether the SA can be handed over: an established site SA with no exchange of ours
    /// under way but a DPD, no collision being decided and no old IKE SA still answering.
    pub fn can_hand_over(&self) -> bool {
        self.state == State::Established
            && self.cfg.site.is_some()
            && self.sa.is_some()
            && !self.closing
            && self
                .outstanding
                .as_ref()
                .is_none_or(|o| matches!(o.request, Request::Dpd))
            && self.queue.is_empty()
            && self.child_collision.is_none()
            && self.peer_ike_rekey.is_none()
            && self.old_sas.is_empty()
    }

    /// A copy of the SA for another process (see the module documentation), leaving it in
    /// use here; None when [`can_hand_over`](Self::can_hand_over) is false. An outstanding
    /// DPD is not copied: the next one reuses its message ID (the peer answers from its
    /// cache if it had answered it).
    pub fn snapshot_handoff(&self, now: Instant) -> Option<InitiatorHandoff> {
        if !self.can_hand_over() {
            return None;
        }
        let sa = self.sa.as_ref()?;
        let k = &sa.keys;
        let next_our_id = self
            .outstanding
            .as_ref()
            .map_or(self.next_our_id, |o| o.message_id);
        Some(InitiatorHandoff {
            site: self.cfg.site.as_ref()?.name.clone(),
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            ike_initiator: self.ike_initiator,
            suite: sa.suite,
            keys: [
                k.sk_d.clone(),
                k.sk_ai.clone(),
                k.sk_ar.clone(),
                k.sk_ei.clone(),
                k.sk_er.clone(),
                k.sk_pi.clone(),
                k.sk_pr.clone(),
            ],
            iv_in: sa.sk_in.next_iv(),
            iv_out: sa.sk_out.next_iv().saturating_add(HANDOFF_IV_SKIP),
            ni: self.ni.clone(),
            nr: self.nr.clone(),
            group: self.group.transform_id(),
            gateway: self.gateway,
            nat_t: self.nat_t,
            peer_fragments: self.peer_fragments,
            peer_sig_hash: self.peer_sig_hash,
            child_ts: (ts_body(&self.child_ts.0), ts_body(&self.child_ts.1)),
            children: self
                .children
                .iter()
                .filter(|c| !c.replaced)
                .map(|c| (c.our_spi, c.peer_spi))
                .collect(),
            next_our_id,
            next_peer_id: self.next_peer_id,
            last_response: self.last_response.clone(),
            peer_cert: self.peer_cert.clone(),
            ike_rekey_in_ms: ahead(now, self.ike_rekey_at),
            child_rekey_in_ms: ahead(now, self.child_rekey_at),
            last_rx_ms_ago: ms_ago(now, self.last_rx),
        })
    }

    /// Consumes the SA and exports it; None when it cannot be handed over.
    pub fn into_handoff(self, now: Instant) -> Option<InitiatorHandoff> {
        self.snapshot_handoff(now)
    }

    /// Rebuilds an SA another process exported, established. `cfg` is the site
    /// connection's initiator configuration here (the caller found it by `h.site`).
    pub fn from_handoff(
        cfg: Arc<InitiatorConfig>,
        entropy: Box<dyn Entropy>,
        now: Instant,
        h: InitiatorHandoff,
    ) -> Result<Self, String> {
        if cfg.site.as_ref().is_none_or(|s| s.name != h.site) {
            return Err(format!("no site connection named {:?} here", h.site));
        }
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
        // The initiator of the IKE SA sends with SK_ei/SK_ai.
        let (inb, out) = if h.ike_initiator {
            ((&keys.sk_er, &keys.sk_ar), (&keys.sk_ei, &keys.sk_ai))
        } else {
            ((&keys.sk_ei, &keys.sk_ai), (&keys.sk_er, &keys.sk_ar))
        };
        let mut sk_in = SkKeys::new(h.suite.cipher, inb.0, inb.1).map_err(|e| e.to_string())?;
        let mut sk_out = SkKeys::new(h.suite.cipher, out.0, out.1).map_err(|e| e.to_string())?;
        sk_in.set_next_iv(h.iv_in);
        sk_out.set_next_iv(h.iv_out);
        let group = DhGroup::from_transform_id(h.group)
            .ok_or_else(|| format!("DH group {} is not implemented here", h.group))?;
        let ts = |b: &[u8]| {
            TsPayload::parse_body(b)
                .map(|t| t.selectors)
                .map_err(|e| e.to_string())
        };
        let child_ts = (ts(&h.child_ts.0)?, ts(&h.child_ts.1)?);
        let later = |ms: Option<u64>| ms.map(|ms| now + Duration::from_millis(ms));
        Ok(IkeInitiator {
            cfg,
            entropy,
            spis: None,
            peer_cert: h.peer_cert,
            state: State::Established,
            gateway: h.gateway,
            nat_t: h.nat_t,
            spi_i: h.spi_i,
            spi_r: h.spi_r,
            ike_initiator: h.ike_initiator,
            ni: h.ni,
            nr: h.nr,
            group,
            dh: None,
            cookie: None,
            init_restarts: 0,
            init_request: Vec::new(),
            init_response: Vec::new(),
            sa: Some(SaKeys {
                suite: h.suite,
                keys,
                sk_in,
                sk_out,
            }),
            peer_fragments: h.peer_fragments,
            peer_sig_hash: h.peer_sig_hash,
            auth_esp_spi: 0,
            child_ts,
            children: h
                .children
                .into_iter()
                .map(|(our_spi, peer_spi)| Child {
                    our_spi,
                    peer_spi,
                    replaced: false,
                    announced: true,
                    expires: None,
                })
                .collect(),
            next_our_id: h.next_our_id,
            next_peer_id: h.next_peer_id,
            id_slack: crate::ikev2::responder::HANDOFF_ID_SLACK,
            last_response: h.last_response,
            request_reassembly: Reassembly::default(),
            response_reassembly: Reassembly::default(),
            outstanding: None,
            queue: VecDeque::new(),
            closing: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_rx: back(now, h.last_rx_ms_ago),
            ike_rekey_at: later(h.ike_rekey_in_ms),
            child_rekey_at: later(h.child_rekey_in_ms),
            rekey_group: None,
            rekey_restarts: 0,
            old_sas: Vec::new(),
            child_collision: None,
            peer_ike_rekey: None,
            integrity_failures: 0,
        })
    }
}
