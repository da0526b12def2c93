//! The road-warrior side of one IKE SA (RFC 7296): IKE_SA_INIT (with COOKIE and
//! INVALID_KE_PAYLOAD retries), IKE_AUTH with a certificate (RFC 7427 signatures, RFC 7383
//! fragments) asking for a virtual address, one CHILD SA (ESP-in-UDP on port 4500), CHILD SA
//! and IKE SA rekeying (by hand or when a lifetime elapses), liveness checks (DPD) both ways
//! and deletes. This is what
//! `gatehouse connect --protocol ikev2` drives, and what in-memory tests use to exercise
//! [`IkeResponder`](super::responder::IkeResponder).
//!
//! Inputs: [`IkeInitiator::new`] (queues IKE_SA_INIT), then
//! [`handle_message`](IkeInitiator::handle_message) for every IKE message from the gateway
//! (non-ESP marker removed), [`handle_timeout`](IkeInitiator::handle_timeout),
//! [`note_activity`](IkeInitiator::note_activity) (ESP from the gateway seen by the driver),
//! [`rekey_child`](IkeInitiator::rekey_child), [`rekey_ike`](IkeInitiator::rekey_ike) and
//! [`disconnect`](IkeInitiator::disconnect).
//! Outputs: [`poll_transmit`](IkeInitiator::poll_transmit),
//! [`poll_event`](IkeInitiator::poll_event), [`poll_timeout`](IkeInitiator::poll_timeout).
//! After every input, drain `poll_transmit` and `poll_event`, then sleep until
//! `poll_timeout`.
//!
//! The SA is over after [`InitiatorEvent::AuthFailed`] or [`InitiatorEvent::Closed`]; exactly
//! one of them is reported.
//!
//! # Rekeying
//!
//! [`InitiatorConfig::child_lifetime`] and [`InitiatorConfig::ike_lifetime`] start rekeys on
//! their own. An IKE SA rekey (RFC 7296 2.18) is a CREATE_CHILD_SA exchange on the current
//! IKE SA; the new SA continues under new SPIs ([`spis`](IkeInitiator::spis) changes) with
//! message IDs from 0, the CHILD SAs move to it untouched, and the old one is deleted with
//! an INFORMATIONAL exchange on the old SPIs. The driver needs to do nothing: every IKE
//! message from the gateway goes to [`handle_message`](IkeInitiator::handle_message), which
//! tells the SAs apart.
//!
//! The gateway may rekey too (strongSwan gateways rekey CHILD SAs after an hour and IKE SAs
//! after four by default): its CHILD SA rekeys are answered like ours end
//! ([`InitiatorEvent::ChildRekeyed`], then [`InitiatorEvent::ChildDeleted`] when it deletes
//! the old SA); after an IKE SA rekey it started, the gateway is the initiator of the new
//! IKE SA (RFC 7296 2.18) and we play the responder inside it. When both ends rekey the same
//! SA at once (RFC 7296 2.8.1, 2.8.2), both exchanges complete and the redundant SA is
//! deleted by the end that created it, so one new SA remains. Other CREATE_CHILD_SA requests
//! (additional CHILD SAs) are refused with NO_ADDITIONAL_SAS.

mod auth;
mod handoff;
mod peer_rekey;
mod rekey;
mod site;

pub use handoff::InitiatorHandoff;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ring::rand::SecureRandom;
use rustls::pki_types::CertificateDer;
use rustls::time_provider::TimeProvider;

use super::collision::ours_is_redundant;
use super::crypto::natd::{fake_source_hash, natd_hash};
use super::crypto::sign::{AuthMethod as SignMethod, SigningKey, signed_octets, verify_auth};
use super::crypto::sign::{psk_auth, verify_psk_auth};
use super::crypto::{ChildSaKeys, DhGroup, DhPrivate, IkeSaKeys, Prf, SkKeys};
use super::message::{self, Opened, Reassembly};
use super::peer_cert::{PeerTrust, id_matches_cert};
use super::proposal::{IkeChoice, IkeSuite, Policy, choose_esp, choose_ike, esp_offer, ike_offer};
use super::responder::Transmit;
use super::site::{SiteAuth, SitePeer, id_for, id_matches_text, selectors};
use crate::entropy::Entropy;
use crate::esp::{EspCipher, EspSa};
use crate::wire::ikev2::{
    AuthMethod, AuthPayload, CertEncoding, CertPayload, CertReqPayload, CfgAttrType, CfgAttribute,
    CfgType, CpPayload, DeletePayload, ExchangeType, IdPayload, IdType, KePayload, Message,
    NotifyPayload, NotifyType, Payload, ProtocolId, TrafficSelector, TsPayload, nonce_len_ok,
};

/// Client-side IKEv2 settings.
pub struct InitiatorConfig {
    /// What we offer, most preferred first; the first DH group goes into the first KE.
    pub policy: Policy,
    /// The gateway's CA and its CRLs.
    pub trust: PeerTrust,
    /// Wall clock for certificate validity.
    pub time: Arc<dyn TimeProvider>,
    /// Our certificate chain (end entity first).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Our private key.
    pub key: Arc<SigningKey>,
    /// ring's generator for DH and signatures (ring does not take ours).
    pub rng: Arc<dyn SecureRandom + Send + Sync>,
    /// The gateway's expected identity (host name or IP address, as the user typed it): it
    /// must be a subject alternative name of the gateway's certificate. `None` trusts any
    /// certificate of the CA with server authentication usage.
    pub remote_id: Option<String>,
    /// Send DPD after this long without anything from the gateway (zero: never).
    pub dpd_interval: Duration,
    /// Largest IKE datagram we send before fragmenting (when the gateway supports it).
    pub fragment_size: usize,
    /// Rekey the IKE SA when it is this old (zero: never); [`DEFAULT_IKE_LIFETIME`].
    pub ike_lifetime: Duration,
    /// Rekey the CHILD SA when it is this old (zero: never); [`DEFAULT_CHILD_LIFETIME`].
    pub child_lifetime: Duration,
    /// Site-to-site: our identity, the peer's, PSK or certificate, and the traffic
    /// selectors; no virtual address is asked for. `None`: a road-warrior client (a
    /// certificate, a virtual address, 0.0.0.0/0 selectors).
    pub site: Option<Arc<SitePeer>>,
    /// Remote access: also ask for an IPv6 address (INTERNAL_IP6_ADDRESS) and propose
    /// `::/0` selectors beside `0.0.0.0/0` (strongSwan's `vips = 0.0.0.0,::`).
    pub request_ipv6: bool,
}

/// A sane [`InitiatorConfig::ike_lifetime`]: 4 hours, strongSwan's default `rekey_time`.
pub const DEFAULT_IKE_LIFETIME: Duration = Duration::from_secs(4 * 3600);
/// A sane [`InitiatorConfig::child_lifetime`]: 1 hour, strongSwan's default.
pub const DEFAULT_CHILD_LIFETIME: Duration = Duration::from_secs(3600);

impl std::fmt::Debug for InitiatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitiatorConfig")
            .field("policy", &self.policy)
            .field("remote_id", &self.remote_id)
            .finish_non_exhaustive()
    }
}

/// Something the driver must act on.
#[derive(Debug)]
pub enum InitiatorEvent {
    /// The gateway authenticated and gave us an address and a CHILD SA: configure the tunnel
    /// and install the SA.
    Connected {
        /// Our virtual address (none for site-to-site SAs).
        address: Option<Ipv4Addr>,
        /// DNS servers to use.
        dns: Vec<IpAddr>,
        /// Split DNS (RFC 8598 INTERNAL_DNS_DOMAIN, normalized): only names at or under
        /// these go to `dns`; empty: all names do.
        dns_domains: Vec<String>,
        /// Networks to route through the tunnel (INTERNAL_IP4_SUBNET and the responder's
        /// traffic selectors; 0.0.0.0/0 means everything).
        subnets: Vec<Ipv4Net>,
        /// Our IPv6 address and its prefix length (INTERNAL_IP6_ADDRESS), when we asked for
        /// one ([`InitiatorConfig::request_ipv6`]) and the gateway gave it.
        address6: Option<(Ipv6Addr, u8)>,
        /// IPv6 networks to route through the tunnel (the responder's IPv6 traffic
        /// selectors; ::/0 means all of IPv6). Empty without `address6`.
        subnets6: Vec<Ipv6Net>,
        /// Our inbound SPI (ESP packets to us carry it).
        our_spi: u32,
        /// The gateway's inbound SPI (we send with it).
        peer_spi: u32,
        /// The negotiated cipher.
        cipher: EspCipher,
        /// The SA itself.
        sa: Box<EspSa>,
    },
    /// A new CHILD SA replaces the one with inbound SPI `old_our_spi`: send with the new one
    /// at once, keep receiving on the old one until [`InitiatorEvent::ChildDeleted`]. Both
    /// ends may rekey the same SA at once; then two of these can name the same old SA, and
    /// the latest one is the SA to send with (the other is deleted shortly).
    ChildRekeyed {
        /// Our inbound SPI of the SA being replaced.
        old_our_spi: u32,
        /// Our inbound SPI of the new SA.
        our_spi: u32,
        /// The gateway's inbound SPI of the new SA.
        peer_spi: u32,
        /// The negotiated cipher.
        cipher: EspCipher,
        /// The new SA.
        sa: Box<EspSa>,
    },
    /// A CHILD SA is gone (after a rekey, or deleted by the gateway): drop it.
    ChildDeleted {
        /// Our inbound SPI of it.
        our_spi: u32,
    },
    /// Authentication failed, on either side: the gateway refused us (AUTHENTICATION_FAILED)
    /// or its certificate, identity or signature did not verify. Retrying will not help.
    AuthFailed(String),
    /// The IKE SA is over (disconnect, gateway delete, dead peer, protocol failure).
    Closed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// IKE_SA_INIT sent.
    Init,
    /// IKE_AUTH sent.
    Auth,
    Established,
    Closed,
}

/// The exchange an outstanding request of ours belongs to.
enum Request {
    Init,
    Auth,
    Dpd,
    RekeyChild {
        old_our_spi: u32,
        our_spi: u32,
        ni: Vec<u8>,
    },
    DeleteChild {
        our_spi: u32,
    },
    DeleteIke,
    RekeyIke {
        /// Our SPI of the new IKE SA.
        spi_i: u64,
        ni: Vec<u8>,
        dh: DhPrivate,
    },
}

/// Requests waiting for the window (one outstanding request at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    RekeyChild,
    RekeyIke,
    DeleteChild(u32),
    DeleteIke,
}

struct Outstanding {
    message_id: u32,
    request: Request,
    datagrams: Vec<Vec<u8>>,
    next_send: Instant,
    sends: u32,
}

/// Keys of the IKE SA, known once IKE_SA_INIT completed.
struct SaKeys {
    suite: IkeSuite,
    keys: IkeSaKeys,
    sk_in: SkKeys,
    sk_out: SkKeys,
}

struct Child {
    our_spi: u32,
    peer_spi: u32,
    /// A rekey replaced it (or it lost a rekey collision): it waits for a Delete, and a
    /// request to rekey it gets TEMPORARY_FAILURE (RFC 7296 2.25.1).
    replaced: bool,
    /// The driver got it (a CHILD SA that lost a collision before it was ever used is not
    /// announced, so the driver never switches to it).
    announced: bool,
    /// Replaced by the gateway's rekey: we delete it at this time unless the gateway (the
    /// rekey's initiator) did.
    expires: Option<Instant>,
}

/// A CHILD SA rekey the gateway started while ours of the same SA was in flight (RFC 7296
/// 2.8.1): decided when our answer arrives.
struct ChildCollision {
    /// Our inbound SPI of the SA both rekey.
    old_our_spi: u32,
    /// Our inbound SPI of the SA the gateway's exchange created.
    our_spi: u32,
    /// The nonces of the gateway's exchange.
    ni: Vec<u8>,
    nr: Vec<u8>,
}

/// A new IKE SA from a rekey exchange, before it becomes the current one.
struct NewIke {
    spi_i: u64,
    spi_r: u64,
    /// Whether we started the exchange that made it (and so are its initiator).
    initiator: bool,
    sa: SaKeys,
    /// The nonces of that exchange.
    ni: Vec<u8>,
    nr: Vec<u8>,
}

/// An IKE SA replaced by a rekey (or a redundant one from a rekey collision), until it is
/// deleted: by us (`delete` set) or by the gateway. It answers the gateway meanwhile.
struct OldIke {
    spi_i: u64,
    spi_r: u64,
    /// Whether we are its initiator (the IKE header's initiator flag on our messages).
    initiator: bool,
    sk_in: SkKeys,
    sk_out: SkKeys,
    next_peer_id: u32,
    last_response: Option<(u32, Vec<Vec<u8>>)>,
    request_reassembly: Reassembly,
    response_reassembly: Reassembly,
    /// Our Delete of it: message ID, datagrams (none when the gateway deletes it), next
    /// retransmission (or when we stop waiting for the gateway), transmissions so far.
    delete_id: u32,
    delete: Vec<Vec<u8>>,
    next_send: Instant,
    sends: u32,
}

/// How many transmissions of a request before the gateway counts as gone: after 1, 2, 4, 8
/// and 16 seconds (31 s in all).
const MAX_SENDS: u32 = 5;
/// A disconnect does not wait that long for the gateway's confirmation (7 s).
const MAX_DELETE_SENDS: u32 = 3;
/// IKE_SA_INIT restarts (COOKIE, INVALID_KE_PAYLOAD) before giving up: a gateway that keeps
/// asking is broken or hostile.
const MAX_INIT_RESTARTS: u32 = 4;
/// Longest COOKIE we echo (RFC 7296 3.10.1: 1 to 64 bytes).
const MAX_COOKIE_LEN: usize = 64;
/// A rekey the gateway refused for now (TEMPORARY_FAILURE, a lost answer) is tried again
/// after this long (or the lifetime, when shorter).
const REKEY_RETRY: Duration = Duration::from_secs(30);
/// INVALID_KE_PAYLOAD answers to one IKE rekey before we wait for the next attempt.
const MAX_REKEY_RESTARTS: u32 = 2;
/// How long an IKE SA the gateway should delete (it rekeyed it, or created it redundantly)
/// keeps answering on its SPIs when the gateway does not delete it.
const OLD_SA_WAIT: Duration = Duration::from_secs(30);

/// One IKE SA of a road-warrior client.
pub struct IkeInitiator {
    cfg: Arc<InitiatorConfig>,
    entropy: Box<dyn Entropy>,
    /// The gateway's SPI table, when a gateway runs this SA (unique inbound SPIs).
    pub(super) spis: Option<Arc<crate::esp::SpiTable>>,
    /// The peer's verified end-entity certificate (DER), for live revocation.
    pub(super) peer_cert: Option<Vec<u8>>,
    state: State,
    gateway: SocketAddr,
    nat_t: bool,
    spi_i: u64,
    spi_r: u64,
    /// Whether we are the initiator of the current IKE SA: true until the gateway rekeys it
    /// (RFC 7296 2.18: whoever starts an IKE rekey is the new SA's initiator).
    ike_initiator: bool,
    ni: Vec<u8>,
    nr: Vec<u8>,
    group: DhGroup,
    dh: Option<DhPrivate>,
    cookie: Option<Vec<u8>>,
    init_restarts: u32,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    sa: Option<SaKeys>,
    peer_fragments: bool,
    peer_sig_hash: bool,
    auth_esp_spi: u32,
    /// The selectors the gateway narrowed ours to at IKE_AUTH; a rekey asks for them again.
    child_ts: (Vec<TrafficSelector>, Vec<TrafficSelector>),
    children: Vec<Child>,
    next_our_id: u32,
    next_peer_id: u32,
    /// After a handoff: see [`crate::ikev2::responder::HANDOFF_ID_SLACK`].
    id_slack: u32,
    last_response: Option<(u32, Vec<Vec<u8>>)>,
    request_reassembly: Reassembly,
    response_reassembly: Reassembly,
    outstanding: Option<Outstanding>,
    queue: VecDeque<Queued>,
    closing: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<InitiatorEvent>,
    last_rx: Instant,
    /// When the lifetimes start the next rekeys (None: not scheduled, or one under way).
    ike_rekey_at: Option<Instant>,
    child_rekey_at: Option<Instant>,
    /// The group the gateway asked for (INVALID_KE_PAYLOAD) in the IKE rekey under way.
    rekey_group: Option<DhGroup>,
    rekey_restarts: u32,
    /// IKE SAs replaced by rekeys and not yet deleted.
    old_sas: Vec<OldIke>,
    /// See [`ChildCollision`].
    child_collision: Option<ChildCollision>,
    /// An IKE SA rekey the gateway started while ours was in flight (RFC 7296 2.8.2),
    /// answered but not yet in use: decided when our answer arrives.
    peer_ike_rekey: Option<NewIke>,
    /// Messages whose integrity check failed since the driver last asked.
    integrity_failures: u32,
}

fn notify(t: NotifyType, data: &[u8]) -> Payload<'_> {
    Payload::Notify(NotifyPayload::new(t, data))
}

impl IkeInitiator {
    /// Starts an IKE SA with the gateway at `gateway` (usually port 500; port 4500 starts
    /// with UDP encapsulation at once): IKE_SA_INIT waits in `poll_transmit`.
    pub fn new(
        cfg: Arc<InitiatorConfig>,
        mut entropy: Box<dyn Entropy>,
        now: Instant,
        gateway: SocketAddr,
    ) -> Self {
        let mut spi_i = 0;
        while spi_i == 0 {
            spi_i = entropy.next_u64();
        }
        let mut ni = vec![0u8; 32];
        entropy.fill(&mut ni);
        let group = cfg
            .policy
            .dh_groups
            .first()
            .copied()
            .unwrap_or(DhGroup::Curve25519);
        let child_ts = match &cfg.site {
            Some(s) => (selectors(&s.local_ts), selectors(&s.remote_ts)),
            None if cfg.request_ipv6 => {
                let both = vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()];
                (both.clone(), both)
            }
            None => (
                vec![TrafficSelector::any_v4()],
                vec![TrafficSelector::any_v4()],
            ),
        };
        let mut me = IkeInitiator {
            cfg,
            entropy,
            spis: None,
            peer_cert: None,
            state: State::Init,
            gateway,
            nat_t: gateway.port() == 4500,
            spi_i,
            spi_r: 0,
            ike_initiator: true,
            ni,
            nr: Vec::new(),
            group,
            dh: None,
            cookie: None,
            init_restarts: 0,
            init_request: Vec::new(),
            init_response: Vec::new(),
            sa: None,
            peer_fragments: false,
            peer_sig_hash: false,
            auth_esp_spi: 0,
            child_ts,
            children: Vec::new(),
            next_our_id: 0,
            next_peer_id: 0,
            id_slack: 0,
            last_response: None,
            request_reassembly: Reassembly::default(),
            response_reassembly: Reassembly::default(),
            outstanding: None,
            queue: VecDeque::new(),
            closing: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_rx: now,
            ike_rekey_at: None,
            child_rekey_at: None,
            rekey_group: None,
            rekey_restarts: 0,
            old_sas: Vec::new(),
            child_collision: None,
            peer_ike_rekey: None,
            integrity_failures: 0,
        };
        if me.cfg.policy.dh_groups.is_empty() || me.cfg.policy.ike_ciphers.is_empty() {
            me.close("the IKE policy offers no cipher or no DH group".into());
        } else if me.cfg.cert_chain.is_empty()
            && !me
                .cfg
                .site
                .as_ref()
                .is_some_and(|s| matches!(s.auth, SiteAuth::Psk(_)))
        {
            me.close("no client certificate configured".into());
        } else {
            me.send_init(now);
        }
        me
    }

    /// The peer's verified end-entity certificate (DER), once it authenticated with one.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_cert.as_deref()
    }

    /// Draws our CHILD SA SPIs from `table` (the gateway's, so they are unique).
    pub fn set_spi_table(&mut self, table: Arc<crate::esp::SpiTable>) {
        self.spis = Some(table);
    }

    /// Messages of this SA whose integrity check (ICV) failed since the last call (the
    /// driver counts them as drops).
    pub fn take_integrity_failures(&mut self) -> u32 {
        std::mem::take(&mut self.integrity_failures)
    }

    pub(super) fn count_open_error(&mut self, e: &message::OpenError) {
        if *e == message::OpenError::Integrity {
            self.integrity_failures = self.integrity_failures.saturating_add(1);
        }
    }

    fn new_child_spi(&mut self) -> u32 {
        crate::esp::spis::claim_or_draw(self.spis.as_deref(), &mut *self.entropy)
    }

    /// The SPI pair (SPIi, SPIr) naming this SA (SPIr is 0 until the gateway answered). It
    /// changes when the IKE SA is rekeyed; after a rekey the gateway started, SPIi is the
    /// gateway's.
    pub fn spis(&self) -> (u64, u64) {
        (self.spi_i, self.spi_r)
    }

    /// Where IKE (and ESP) goes now: the gateway, on port 4500 once NAT traversal started.
    pub fn gateway(&self) -> SocketAddr {
        self.gateway
    }

    /// The negotiated IKE suite, once IKE_SA_INIT completed.
    pub fn suite(&self) -> Option<IkeSuite> {
        self.sa.as_ref().map(|s| s.suite)
    }

    /// True once the tunnel is up (and not closed).
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// True once the SA is gone.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Replaced or redundant IKE SAs still kept (tests: nothing lingers after rekeys).
    #[cfg(test)]
    pub(crate) fn old_ike_sas(&self) -> usize {
        self.old_sas.len()
    }

    /// Whether we are the initiator of the current IKE SA (tests).
    #[cfg(test)]
    pub(crate) fn is_ike_initiator(&self) -> bool {
        self.ike_initiator
    }

    /// ESP from the gateway arrived (the driver saw it); DPD waits longer.
    pub fn note_activity(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// Replaces the CHILD SA with a fresh one (CREATE_CHILD_SA with REKEY_SA), then deletes
    /// the old one. False when there is nothing to rekey or a rekey is already under way.
    pub fn rekey_child(&mut self, now: Instant) -> bool {
        if self.state != State::Established
            || self.closing
            || self.children.iter().all(|c| c.replaced)
        {
            return false;
        }
        let busy = self.queue.contains(&Queued::RekeyChild)
            || matches!(
                self.outstanding,
                Some(Outstanding {
                    request: Request::RekeyChild { .. },
                    ..
                })
            );
        if busy {
            return false;
        }
        self.child_rekey_at = None;
        self.queue.push_back(Queued::RekeyChild);
        self.start_next(now);
        true
    }

    /// Replaces the IKE SA with a fresh one (CREATE_CHILD_SA with an IKE proposal, new SPIs,
    /// new keys), then deletes the old one; the CHILD SAs stay. False when the tunnel is not
    /// up or an IKE rekey is already under way.
    pub fn rekey_ike(&mut self, now: Instant) -> bool {
        if self.state != State::Established || self.closing {
            return false;
        }
        let busy = self.queue.contains(&Queued::RekeyIke)
            || matches!(
                self.outstanding,
                Some(Outstanding {
                    request: Request::RekeyIke { .. },
                    ..
                })
            );
        if busy {
            return false;
        }
        self.ike_rekey_at = None;
        self.rekey_restarts = 0;
        self.queue.push_back(Queued::RekeyIke);
        self.start_next(now);
        true
    }

    /// Ends the SA: an INFORMATIONAL Delete of the IKE SA (after a request already in
    /// flight), then [`InitiatorEvent::Closed`] when the gateway confirms or after 7 s.
    /// Before the tunnel is up there is nothing to delete and the SA closes at once.
    pub fn disconnect(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::Init | State::Auth => self.close("disconnected".into()),
            State::Established => {
                if self.closing {
                    return;
                }
                self.closing = true;
                self.queue.clear();
                self.queue.push_back(Queued::DeleteIke);
                self.start_next(now);
            }
        }
    }

    /// Feeds an IKE message from the gateway (non-ESP marker already removed).
    pub fn handle_message(&mut self, now: Instant, raw: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        let Ok(msg) = Message::parse(raw) else {
            return;
        };
        let h = msg.header;
        if let Some(i) = self
            .old_sas
            .iter()
            .position(|o| (o.spi_i, o.spi_r) == (h.initiator_spi, h.responder_spi))
        {
            self.on_old_message(now, i, &msg, raw);
            return;
        }
        // The gateway's messages carry the initiator flag exactly when it is the initiator
        // of the SA (RFC 7296 3.1), whatever the exchange.
        if h.flags.initiator() == self.ike_initiator {
            return;
        }
        if h.initiator_spi != self.spi_i {
            return;
        }
        if self.state == State::Init {
            if h.flags.response() && h.exchange == ExchangeType::IKE_SA_INIT && h.message_id == 0 {
                self.on_init_response(now, &msg, raw);
            }
            return;
        }
        if h.responder_spi != self.spi_r {
            return;
        }
        if h.flags.response() {
            self.on_response(now, &msg, raw);
        } else {
            self.on_request(now, &msg, raw);
        }
    }

    /// Advances timers: retransmissions of our requests, our DPD, rekeys when a lifetime
    /// elapsed, the deletes of replaced IKE SAs.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.old_sa_timeouts(now);
        self.expire_replaced_children(now);
        if self.state == State::Established && !self.closing {
            if self.ike_rekey_at.is_some_and(|t| now >= t) {
                self.ike_rekey_at = None;
                self.rekey_ike(now);
            }
            if self.child_rekey_at.is_some_and(|t| now >= t) {
                self.child_rekey_at = None;
                self.rekey_child(now);
            }
        }
        if let Some(o) = &mut self.outstanding {
            if now < o.next_send {
                return;
            }
            let limit = match o.request {
                Request::DeleteIke => MAX_DELETE_SENDS,
                _ => MAX_SENDS,
            };
            if o.sends >= limit {
                let reason = match o.request {
                    Request::Init => format!(
                        "gateway {} did not answer IKE_SA_INIT: check the address and that \
                         UDP ports 500 and 4500 are open",
                        self.gateway.ip()
                    ),
                    Request::Auth => "gateway did not answer IKE_AUTH (UDP 4500 blocked, or \
                                      fragments dropped on the way?)"
                        .into(),
                    Request::DeleteIke => "disconnected (the gateway did not confirm)".into(),
                    _ => "gateway stopped answering (dead peer detection)".into(),
                };
                self.close(reason);
                return;
            }
            o.next_send = now + Duration::from_secs(1 << o.sends);
            o.sends += 1;
            for d in o.datagrams.clone() {
                self.transmits.push_back(Transmit {
                    to: self.gateway,
                    nat_t: self.nat_t,
                    data: d,
                });
            }
            return;
        }
        if self.state == State::Established
            && !self.cfg.dpd_interval.is_zero()
            && now >= self.last_rx + self.cfg.dpd_interval
        {
            self.send_request(now, ExchangeType::INFORMATIONAL, Request::Dpd, &[]);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<InitiatorEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let main = match &self.outstanding {
            Some(o) => Some(o.next_send),
            None => (self.state == State::Established && !self.cfg.dpd_interval.is_zero())
                .then(|| self.last_rx + self.cfg.dpd_interval),
        };
        let rekeys = (self.state == State::Established && !self.closing)
            .then_some([self.ike_rekey_at, self.child_rekey_at])
            .into_iter()
            .flatten()
            .flatten();
        let replaced = self.children.iter().filter_map(|c| c.expires);
        main.into_iter()
            .chain(rekeys)
            .chain(self.old_sas.iter().map(|o| o.next_send))
            .chain(replaced)
            .min()
    }

    /// Deletes CHILD SAs the gateway replaced by a rekey but did not delete within
    /// [`CHILD_OVERLAP`](crate::ikev2::responder::CHILD_OVERLAP).
    fn expire_replaced_children(&mut self, now: Instant) {
        let mut due = Vec::new();
        for c in &mut self.children {
            if c.expires.is_some_and(|t| now >= t) {
                c.expires = None;
                due.push(c.our_spi);
            }
        }
        if due.is_empty() || self.state != State::Established || self.closing {
            return;
        }
        for spi in due {
            self.queue.push_back(Queued::DeleteChild(spi));
        }
        self.start_next(now);
    }

    fn close(&mut self, reason: String) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.outstanding = None;
            self.queue.clear();
            self.old_sas.clear();
            self.peer_ike_rekey = None;
            self.events.push_back(InitiatorEvent::Closed(reason));
        }
    }

    /// Authentication failed: report it, tell the gateway (best effort, when we have keys
    /// and it does not already know) and stop.
    fn auth_failed(&mut self, now: Instant, reason: String, tell_gateway: bool) {
        if self.state == State::Closed {
            return;
        }
        if tell_gateway && self.sa.is_some() {
            self.outstanding = None;
            self.send_request(
                now,
                ExchangeType::INFORMATIONAL,
                Request::DeleteIke,
                &[Payload::Delete(DeletePayload::ike())],
            );
        }
        self.state = State::Closed;
        self.outstanding = None;
        self.queue.clear();
        self.old_sas.clear();
        self.events.push_back(InitiatorEvent::AuthFailed(reason));
    }

    // ---- IKE_SA_INIT ----

    fn send_init(&mut self, now: Instant) {
        let (dh, public) = match self.group.generate(&mut *self.entropy, &*self.cfg.rng) {
            Ok(x) => x,
            Err(e) => {
                self.close(format!("key generation failed: {e}"));
                return;
            }
        };
        self.dh = Some(dh);
        // A source hash that cannot match: the gateway sees a NAT and both ends use UDP 4500
        // with ESP in UDP (a userspace client cannot send raw ESP).
        let fake_src = fake_source_hash(&mut *self.entropy);
        let dst = natd_hash(self.spi_i, 0, self.gateway);
        // SHA2-256, SHA2-384, SHA2-512 (RFC 7427).
        let sig_algs = [0u8, 2, 0, 3, 0, 4];
        let mut payloads = Vec::new();
        if let Some(c) = &self.cookie {
            payloads.push(notify(NotifyType::COOKIE, c));
        }
        payloads.push(Payload::Sa(ike_offer(&self.cfg.policy, &[])));
        payloads.push(Payload::Ke(KePayload {
            dh_group: self.group.transform_id(),
            data: &public,
        }));
        payloads.push(Payload::Nonce(&self.ni));
        payloads.push(notify(NotifyType::NAT_DETECTION_SOURCE_IP, &fake_src));
        payloads.push(notify(NotifyType::NAT_DETECTION_DESTINATION_IP, &dst));
        payloads.push(notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED, &[]));
        payloads.push(notify(NotifyType::SIGNATURE_HASH_ALGORITHMS, &sig_algs));
        let request = message::plain(
            message::header(self.spi_i, 0, ExchangeType::IKE_SA_INIT, true, false, 0),
            payloads,
        );
        self.init_request = request.clone();
        self.transmits.push_back(Transmit {
            to: self.gateway,
            nat_t: self.nat_t,
            data: request.clone(),
        });
        self.outstanding = Some(Outstanding {
            message_id: 0,
            request: Request::Init,
            datagrams: vec![request],
            next_send: now + Duration::from_secs(1),
            sends: 1,
        });
    }

    fn restart_init(&mut self, now: Instant) {
        self.init_restarts += 1;
        if self.init_restarts > MAX_INIT_RESTARTS {
            self.close(
                "gateway keeps restarting IKE_SA_INIT (COOKIE / INVALID_KE_PAYLOAD loop)".into(),
            );
            return;
        }
        self.send_init(now);
    }

    fn on_init_response(&mut self, now: Instant, msg: &Message<'_>, raw: &[u8]) {
        // Unauthenticated: believe an error only if it makes sense for what we sent, and
        // ignore stale answers to an earlier attempt (duplicates, reordering).
        if let Some(c) = msg.notify(NotifyType::COOKIE) {
            if c.data.is_empty() || c.data.len() > MAX_COOKIE_LEN {
                return;
            }
            if self.cookie.as_deref() == Some(c.data) {
                return;
            }
            self.cookie = Some(c.data.to_vec());
            self.restart_init(now);
            return;
        }
        if let Some(n) = msg.notify(NotifyType::INVALID_KE_PAYLOAD) {
            let Some(id) = n.invalid_ke_group() else {
                return;
            };
            if id == self.group.transform_id() {
                return;
            }
            match DhGroup::from_transform_id(id).filter(|g| self.cfg.policy.dh_groups.contains(g)) {
                Some(g) => {
                    self.group = g;
                    self.restart_init(now);
                }
                None => self.close(format!(
                    "gateway insists on DH group {id}, which our policy does not offer"
                )),
            }
            return;
        }
        if msg.notify(NotifyType::NO_PROPOSAL_CHOSEN).is_some() {
            self.close(
                "gateway accepted none of our IKE proposals (NO_PROPOSAL_CHOSEN): it needs \
                 ciphers or DH groups our policy does not offer"
                    .into(),
            );
            return;
        }
        if let Some(e) = msg.notifies().find(|n| n.notify_type.is_error()) {
            self.close(format!("gateway refused IKE_SA_INIT: {:?}", e.notify_type));
            return;
        }
        let mut sa = None;
        let mut ke = None;
        let mut nr = None;
        for p in &msg.payloads {
            match p {
                Payload::Sa(s) => sa = Some(s),
                Payload::Ke(k) => ke = Some(k),
                Payload::Nonce(n) => nr = Some(*n),
                _ => {}
            }
        }
        let (Some(sa), Some(ke), Some(nr)) = (sa, ke, nr) else {
            return;
        };
        if msg.header.responder_spi == 0 || !nonce_len_ok(nr) {
            return;
        }
        let suite = match (
            sa.proposals.len(),
            choose_ike(&self.cfg.policy, sa, ke.dh_group),
        ) {
            (1, IkeChoice::Chosen { suite, .. })
                if suite.dh == self.group && ke.dh_group == self.group.transform_id() =>
            {
                suite
            }
            _ => {
                self.close("gateway chose an IKE proposal we did not offer".into());
                return;
            }
        };
        if msg.notify(NotifyType::NAT_DETECTION_SOURCE_IP).is_none() {
            self.close(
                "gateway does not support NAT traversal (no NAT_DETECTION notify); Gatehouse \
                 needs ESP in UDP"
                    .into(),
            );
            return;
        }
        let Some(dh) = self.dh.take() else {
            return;
        };
        let g_ir = match dh.shared_secret(ke.data) {
            Ok(s) => s,
            Err(e) => {
                self.close(format!("gateway's KE value is invalid: {e}"));
                return;
            }
        };
        self.spi_r = msg.header.responder_spi;
        let keys = match IkeSaKeys::from_ike_sa_init(
            suite.prf,
            suite.cipher.key_sizes(),
            &self.ni,
            nr,
            &g_ir,
            self.spi_i,
            self.spi_r,
        ) {
            Ok(k) => k,
            Err(e) => {
                self.close(format!("key derivation failed: {e}"));
                return;
            }
        };
        let (sk_in, sk_out) = match (
            SkKeys::new(suite.cipher, &keys.sk_er, &keys.sk_ar),
            SkKeys::new(suite.cipher, &keys.sk_ei, &keys.sk_ai),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                self.close("cannot build SK keys".into());
                return;
            }
        };
        self.sa = Some(SaKeys {
            suite,
            keys,
            sk_in,
            sk_out,
        });
        self.nr = nr.to_vec();
        self.init_response = raw.to_vec();
        self.peer_fragments = msg
            .notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED)
            .is_some();
        self.peer_sig_hash = msg.notify(NotifyType::SIGNATURE_HASH_ALGORITHMS).is_some();
        // Our fake source hash always reports a NAT: float to 4500 (RFC 7296 2.23).
        self.gateway.set_port(4500);
        self.nat_t = true;
        self.last_rx = now;
        self.outstanding = None;
        self.next_our_id = 1;
        self.state = State::Auth;
        self.send_auth(now);
    }

    /// The IKE SA is authenticated but unusable: delete it properly, then close.
    fn fail_established(&mut self, now: Instant, reason: String) {
        self.send_request(
            now,
            ExchangeType::INFORMATIONAL,
            Request::DeleteIke,
            &[Payload::Delete(DeletePayload::ike())],
        );
        self.close(reason);
    }

    // ---- later exchanges ----

    fn send_request(
        &mut self,
        now: Instant,
        exchange: ExchangeType,
        request: Request,
        payloads: &[Payload<'_>],
    ) {
        let Some(sa) = &mut self.sa else {
            return;
        };
        let id = self.next_our_id;
        let header = message::header(
            self.spi_i,
            self.spi_r,
            exchange,
            self.ike_initiator,
            false,
            id,
        );
        let datagrams = message::seal(
            &mut sa.sk_out,
            &mut *self.entropy,
            header,
            payloads,
            self.peer_fragments,
            self.cfg.fragment_size,
        );
        for d in &datagrams {
            self.transmits.push_back(Transmit {
                to: self.gateway,
                nat_t: self.nat_t,
                data: d.clone(),
            });
        }
        self.outstanding = Some(Outstanding {
            message_id: id,
            request,
            datagrams,
            next_send: now + Duration::from_secs(1),
            sends: 1,
        });
    }

    fn send_response(&mut self, exchange: ExchangeType, message_id: u32, payloads: &[Payload<'_>]) {
        let Some(sa) = &mut self.sa else {
            return;
        };
        let header = message::header(
            self.spi_i,
            self.spi_r,
            exchange,
            self.ike_initiator,
            true,
            message_id,
        );
        let datagrams = message::seal(
            &mut sa.sk_out,
            &mut *self.entropy,
            header,
            payloads,
            self.peer_fragments,
            self.cfg.fragment_size,
        );
        for d in &datagrams {
            self.transmits.push_back(Transmit {
                to: self.gateway,
                nat_t: self.nat_t,
                data: d.clone(),
            });
        }
        self.last_response = Some((message_id, datagrams));
    }

    /// Sends the next queued request when the window is free.
    fn start_next(&mut self, now: Instant) {
        while self.outstanding.is_none() && self.state == State::Established {
            let Some(q) = self.queue.pop_front() else {
                return;
            };
            match q {
                Queued::RekeyChild => self.send_rekey(now),
                Queued::RekeyIke => self.send_ike_rekey(now),
                Queued::DeleteChild(our_spi) => {
                    if self.children.iter().any(|c| c.our_spi == our_spi) {
                        let spi = our_spi.to_be_bytes();
                        self.send_request(
                            now,
                            ExchangeType::INFORMATIONAL,
                            Request::DeleteChild { our_spi },
                            &[Payload::Delete(DeletePayload::esp(&spi))],
                        );
                    }
                }
                Queued::DeleteIke => self.send_request(
                    now,
                    ExchangeType::INFORMATIONAL,
                    Request::DeleteIke,
                    &[Payload::Delete(DeletePayload::ike())],
                ),
            }
        }
    }

    fn send_rekey(&mut self, now: Instant) {
        let Some(old) = self.children.iter().rev().find(|c| !c.replaced) else {
            return;
        };
        let old_our_spi = old.our_spi;
        let our_spi = self.new_child_spi();
        let spi_bytes = our_spi.to_be_bytes();
        let old_bytes = old_our_spi.to_be_bytes();
        let mut ni = vec![0u8; 32];
        self.entropy.fill(&mut ni);
        let payloads = [
            Payload::Notify(NotifyPayload {
                protocol_id: ProtocolId::ESP,
                spi: &old_bytes,
                notify_type: NotifyType::REKEY_SA,
                data: &[],
            }),
            Payload::Sa(esp_offer(&self.cfg.policy, &spi_bytes)),
            Payload::Nonce(&ni),
            Payload::TsI(TsPayload::new(self.child_ts.0.clone())),
            Payload::TsR(TsPayload::new(self.child_ts.1.clone())),
        ];
        let request = Request::RekeyChild {
            old_our_spi,
            our_spi,
            ni: ni.clone(),
        };
        self.send_request(now, ExchangeType::CREATE_CHILD_SA, request, &payloads);
    }

    fn on_response(&mut self, now: Instant, msg: &Message<'_>, raw: &[u8]) {
        let Some(o) = &self.outstanding else {
            return;
        };
        if msg.header.message_id != o.message_id {
            return;
        }
        let Some(sa) = &self.sa else {
            return;
        };
        let (first_inner, plaintext) = match self.response_reassembly.open(&sa.sk_in, msg, raw) {
            Ok(Opened::Complete {
                first_inner,
                plaintext,
            }) => (first_inner, plaintext),
            Ok(Opened::Partial) => {
                self.last_rx = now;
                return;
            }
            Err(e) => {
                self.count_open_error(&e);
                return;
            }
        };
        let Some(o) = self.outstanding.take() else {
            return;
        };
        self.next_our_id = self.next_our_id.wrapping_add(1);
        self.last_rx = now;
        let Ok(payloads) = message::inner(first_inner, &plaintext) else {
            self.close("gateway sent a malformed response".into());
            return;
        };
        match o.request {
            Request::Init => {}
            Request::Auth => self.on_auth_response(now, &payloads),
            Request::Dpd => {}
            Request::RekeyChild {
                old_our_spi,
                our_spi,
                ni,
            } => self.on_rekey_response(now, old_our_spi, our_spi, &ni, &payloads),
            Request::RekeyIke { spi_i, ni, dh } => {
                self.on_ike_rekey_response(now, spi_i, &ni, dh, &payloads)
            }
            Request::DeleteChild { our_spi } => {
                // The gateway may have deleted it meanwhile (and we reported it then).
                if let Some(i) = self.children.iter().position(|c| c.our_spi == our_spi)
                    && self.children.remove(i).announced
                {
                    self.events
                        .push_back(InitiatorEvent::ChildDeleted { our_spi });
                }
            }
            Request::DeleteIke => {
                self.close("disconnected".into());
                return;
            }
        }
        self.start_next(now);
    }

    fn on_rekey_response(
        &mut self,
        now: Instant,
        old_our_spi: u32,
        our_spi: u32,
        ni: &[u8],
        payloads: &[Payload<'_>],
    ) {
        // The gateway rekeyed the same SA meanwhile (we answered it): decide now.
        let collision = self
            .child_collision
            .take_if(|c| c.old_our_spi == old_our_spi);
        let mut sa = None;
        let mut nr = None;
        for p in payloads {
            match p {
                Payload::Notify(n) if n.notify_type.is_error() => {
                    if collision.is_some() {
                        // Its exchange replaced the SA; the next rekey is a lifetime away.
                        tracing::debug!(
                            notify = ?n.notify_type,
                            "gateway refused our CHILD rekey; it rekeyed the SA itself"
                        );
                        return;
                    }
                    // The old CHILD SA keeps working; try again later (TEMPORARY_FAILURE: the
                    // gateway is busy rekeying or deleting something).
                    tracing::warn!(
                        notify = ?n.notify_type,
                        "gateway refused to rekey the CHILD SA"
                    );
                    self.child_rekey_at =
                        retry_deadline(now, self.cfg.child_lifetime, n.notify_type);
                    return;
                }
                Payload::Sa(s) => sa = Some(s),
                Payload::Nonce(n) => nr = Some(*n),
                _ => {}
            }
        }
        // The next rekey is a lifetime away, whether this one works or its answer is unusable
        // (then the old CHILD SA keeps working until then).
        self.child_rekey_at = deadline(now, self.cfg.child_lifetime);
        let (Some(sa), Some(nr)) = (sa, nr) else {
            tracing::warn!("gateway's CREATE_CHILD_SA answer lacks SA or Nonce");
            return;
        };
        let Some((_, peer_spi, cipher, None)) = choose_esp(&self.cfg.policy, sa, &[]) else {
            tracing::warn!("gateway chose no ESP proposal we offered for the rekey");
            return;
        };
        if !nonce_len_ok(nr) {
            return;
        }
        let Some(keys) = &self.sa else {
            return;
        };
        let esp = ChildSaKeys::derive(
            keys.suite.prf,
            &keys.keys.sk_d,
            None,
            ni,
            nr,
            cipher.key_sizes(),
        )
        .ok()
        .and_then(|k| EspSa::from_child_keys(cipher, &k, true, our_spi, peer_spi).ok());
        let Some(esp) = esp else {
            return;
        };
        if let Some(c) = collision {
            if ours_is_redundant([ni, nr], [&c.ni, &c.nr]) {
                // Ours holds the lowest nonce: we delete it, unused; the gateway deletes the
                // old SA. The driver already sends on the gateway's.
                tracing::debug!(our_spi, "simultaneous CHILD rekey: ours is redundant");
                self.children.push(Child {
                    our_spi,
                    peer_spi,
                    replaced: true,
                    announced: false,
                    expires: None,
                });
                self.queue.push_back(Queued::DeleteChild(our_spi));
                return;
            }
            // The gateway's holds it: the gateway deletes that one, we the old SA.
            tracing::debug!(our_spi, "simultaneous CHILD rekey: ours survives");
            if let Some(theirs) = self.children.iter_mut().find(|x| x.our_spi == c.our_spi) {
                theirs.replaced = true;
            }
        }
        if let Some(old) = self.children.iter_mut().find(|c| c.our_spi == old_our_spi) {
            old.replaced = true;
        }
        self.children.push(Child {
            our_spi,
            peer_spi,
            replaced: false,
            announced: true,
            expires: None,
        });
        self.events.push_back(InitiatorEvent::ChildRekeyed {
            old_our_spi,
            our_spi,
            peer_spi,
            cipher,
            sa: Box::new(esp),
        });
        self.queue.push_back(Queued::DeleteChild(old_our_spi));
    }

    fn on_request(&mut self, now: Instant, msg: &Message<'_>, raw: &[u8]) {
        if self.state != State::Established {
            return;
        }
        let h = msg.header;
        if h.message_id.wrapping_add(1) == self.next_peer_id {
            // A retransmission: answer from the cache (once per fragmented request).
            let resend = match msg.payloads.last() {
                Some(Payload::EncryptedFragment {
                    fragment_number,
                    total_fragments,
                    ..
                }) => fragment_number == total_fragments,
                _ => true,
            };
            if let Some((id, d)) = &self.last_response
                && *id == h.message_id
                && resend
            {
                for x in d.clone() {
                    self.transmits.push_back(Transmit {
                        to: self.gateway,
                        nat_t: self.nat_t,
                        data: x,
                    });
                }
            }
            return;
        }
        let ahead = h.message_id.wrapping_sub(self.next_peer_id);
        if ahead != 0 && !(h.exchange == ExchangeType::INFORMATIONAL && ahead <= self.id_slack) {
            return;
        }
        let Some(sa) = &self.sa else {
            return;
        };
        let (first_inner, plaintext) = match self.request_reassembly.open(&sa.sk_in, msg, raw) {
            Ok(Opened::Complete {
                first_inner,
                plaintext,
            }) => (first_inner, plaintext),
            Ok(Opened::Partial) => {
                self.last_rx = now;
                return;
            }
            Err(e) => {
                self.count_open_error(&e);
                return;
            }
        };
        // Past the expected ID after a handoff: only a liveness check.
        if ahead != 0 && !message::inner(first_inner, &plaintext).is_ok_and(|p| p.is_empty()) {
            return;
        }
        self.id_slack = 0;
        self.last_rx = now;
        self.next_peer_id = h.message_id.wrapping_add(1);
        let Ok(payloads) = message::inner(first_inner, &plaintext) else {
            self.send_response(
                h.exchange,
                h.message_id,
                &[notify(NotifyType::INVALID_SYNTAX, &[])],
            );
            return;
        };
        match h.exchange {
            ExchangeType::INFORMATIONAL => self.on_informational(now, h.message_id, &payloads),
            ExchangeType::CREATE_CHILD_SA => {
                self.on_peer_create_child(now, h.message_id, &payloads);
                self.start_next(now);
            }
            other => self.send_response(
                other,
                h.message_id,
                &[notify(NotifyType::INVALID_SYNTAX, &[])],
            ),
        }
    }

    fn on_informational(&mut self, now: Instant, message_id: u32, payloads: &[Payload<'_>]) {
        let delete_ike = payloads
            .iter()
            .any(|p| matches!(p, Payload::Delete(d) if d.protocol_id == ProtocolId::IKE));
        if delete_ike {
            self.send_response(ExchangeType::INFORMATIONAL, message_id, &[]);
            if let Some(theirs) = self.peer_ike_rekey.take() {
                // A simultaneous IKE rekey the gateway decided before our answer reached
                // us (reordering): its new SA won, and it deletes the SA both replaced.
                // Ours is abandoned; the gateway forgets its half of it.
                tracing::debug!("gateway deleted the rekeyed IKE SA first; its new SA wins");
                self.outstanding = None;
                self.switch_ike(now, theirs, false);
                self.ike_rekey_at = deadline(now, self.cfg.ike_lifetime);
                self.start_next(now);
                return;
            }
            self.close("the gateway ended the connection (deleted the IKE SA)".into());
            return;
        }
        let ours = self.delete_children(payloads);
        if ours.is_empty() {
            self.send_response(ExchangeType::INFORMATIONAL, message_id, &[]);
        } else {
            self.send_response(
                ExchangeType::INFORMATIONAL,
                message_id,
                &[Payload::Delete(DeletePayload::esp(&ours))],
            );
        }
    }

    /// Removes the CHILD SAs the gateway's Delete payloads name (by its inbound SPIs) and
    /// reports them; returns our inbound SPIs of them for the answer's Delete payload.
    fn delete_children(&mut self, payloads: &[Payload<'_>]) -> Vec<u8> {
        let mut ours: Vec<u8> = Vec::new();
        for p in payloads {
            let Payload::Delete(d) = p else {
                continue;
            };
            if d.protocol_id != ProtocolId::ESP {
                continue;
            }
            for spi in d.spis_u32() {
                if let Some(i) = self.children.iter().position(|c| c.peer_spi == spi) {
                    let c = self.children.remove(i);
                    ours.extend_from_slice(&c.our_spi.to_be_bytes());
                    if c.announced {
                        self.events
                            .push_back(InitiatorEvent::ChildDeleted { our_spi: c.our_spi });
                    }
                }
            }
        }
        ours
    }
}

/// `now + lifetime`, or never for a zero lifetime.
fn deadline(now: Instant, lifetime: Duration) -> Option<Instant> {
    (!lifetime.is_zero()).then(|| now + lifetime)
}

/// When to try a rekey the gateway refused with `why` again: soon after a temporary failure,
/// never when it does not do such rekeys at all, after another lifetime otherwise.
fn retry_deadline(now: Instant, lifetime: Duration, why: NotifyType) -> Option<Instant> {
    match why {
        NotifyType::NO_ADDITIONAL_SAS => None,
        NotifyType::TEMPORARY_FAILURE => deadline(now, REKEY_RETRY.min(lifetime)),
        _ => deadline(now, lifetime),
    }
}

fn subject_der(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(c.subject().as_raw().to_vec())
}

/// SHA-1 of a CA certificate's SubjectPublicKeyInfo: how CERTREQ names it.
fn spki_sha1(cert: &CertificateDer<'_>) -> Option<[u8; 20]> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, c.public_key().raw);
    d.as_ref().try_into().ok()
}

/// IDr for the identity the user expects: an address or a host name.
fn remote_id_payload(name: &str) -> (IdType, Vec<u8>) {
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => (IdType::IPV4_ADDR, a.octets().to_vec()),
        Ok(IpAddr::V6(a)) => (IdType::IPV6_ADDR, a.octets().to_vec()),
        Err(_) => (IdType::FQDN, name.as_bytes().to_vec()),
    }
}

/// Whether `name` (host name or IP address) is a subject alternative name of `der`. Unlike
/// [`id_matches_cert`] the common name does not count: every Gatehouse gateway certificate
/// has CN "gateway", so only the SANs tell gateways apart.
fn name_in_sans(name: &str, der: &[u8]) -> bool {
    let (t, data) = remote_id_payload(name);
    if t == IdType::FQDN {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return false;
        };
        let Ok(Some(sans)) = cert.subject_alternative_name() else {
            return false;
        };
        let name = name.trim_end_matches('.');
        return sans.value.general_names.iter().any(|n| {
            matches!(n, x509_parser::extensions::GeneralName::DNSName(d)
                if d.trim_end_matches('.').eq_ignore_ascii_case(name))
        });
    }
    id_matches_cert(&IdPayload::new(t, &data), der)
}
