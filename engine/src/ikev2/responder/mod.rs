//! The gateway side of one IKE SA (RFC 7296) with remote-access clients: IKE_SA_INIT,
//! IKE_AUTH with certificates (RFC 7427 signatures, RFC 7383 fragments), a virtual address
//! through the configuration payload, one CHILD SA (ESP-in-UDP), CHILD SA and IKE SA
//! rekeying (RFC 7296 1.3.2, 2.18), liveness checks (DPD), a hard lifetime and deletes.
//!
//! Inputs: [`respond_to_init`] for a new IKE_SA_INIT request (it may answer statelessly:
//! COOKIE, INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN), then
//! [`handle_message`](IkeResponder::handle_message) for every later message of the SA,
//! [`accept`](IkeResponder::accept) / [`reject`](IkeResponder::reject) to answer
//! [`IkeEvent::Authenticated`], [`handle_timeout`](IkeResponder::handle_timeout) and
//! [`note_activity`](IkeResponder::note_activity) (ESP traffic seen by the driver). Outputs:
//! [`poll_transmit`](IkeResponder::poll_transmit), [`poll_event`](IkeResponder::poll_event),
//! [`poll_timeout`](IkeResponder::poll_timeout).
//!
//! # Rekeying
//!
//! The gateway only ever *answers* rekeys; it never starts one, so neither simultaneous
//! CHILD SA rekeys nor simultaneous IKE SA rekeys (RFC 7296 2.8.1) can happen with it: the
//! client's lifetimes drive every rekey. (Tests play a gateway that rekeys by itself, as
//! strongSwan does, through hidden hooks in `initiated.rs`; only they reach that code.) A client that never rekeys is cut off once its IKE
//! SA or its newest CHILD SA is older than [`ResponderConfig::hard_lifetime`].
//!
//! An IKE SA rekey changes the SPI pair naming the session. The driver routes IKE messages
//! by SPI pair, so:
//!
//! 1. On [`IkeEvent::IkeRekeyed`] it routes `new` to this session as well, and keeps `old`
//!    routed here: the client deletes the old IKE SA with an INFORMATIONAL exchange on the
//!    old SPIs (and may retransmit its rekey request there), which this session answers.
//!    [`spis`](IkeResponder::spis) returns the new pair from then on.
//! 2. On [`IkeEvent::OldIkeSaGone`] (the old SA was deleted, or 30 s passed) it removes
//!    that pair. Before [`IkeEvent::Closed`], every old pair still routed gets its
//!    `OldIkeSaGone`, so the driver then only needs to remove `spis()`.
//!
//! CHILD SAs belong to the session, not to one IKE SA: a rekey of the IKE SA leaves them
//! (and the data path) untouched.

mod auth;
mod auth_job;
mod cookies;
mod exchanges;
mod handoff;
mod init;
mod initiated;
mod mobike;
mod rekey;
mod site_auth;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use ring::rand::SecureRandom;
use rustls::pki_types::CertificateDer;
use rustls::time_provider::TimeProvider;

use super::crypto::natd::{fake_source_hash, natd_hash};
use super::crypto::sign::{AuthMethod as SignMethod, SigningKey};
use super::crypto::{DhGroup, DhPrivate, IkeSaKeys, SkKeys};
use super::message::{self, Opened, Reassembly};
use super::peer_cert::PeerTrust;
use super::proposal::{
    IkeChoice, IkeSuite, Policy, choose_ike, describe_offer, describe_policy, ike_sa_payload,
};
use super::site::SitePeer;
use crate::entropy::Entropy;
use crate::esp::{EspCipher, EspSa};
use crate::wire::ikev2::{
    CertEncoding, CertReqPayload, DeletePayload, ExchangeType, IdType, KePayload, Message,
    NotifyPayload, NotifyType, Payload, nonce_len_ok,
};
pub use auth_job::{AuthDone, AuthJob};
pub use cookies::{COOKIE_LEN, COOKIE_MAX_USES, COOKIE_ROTATION, CookieJar};
pub use handoff::{HANDOFF_ID_SLACK, HANDOFF_IV_SKIP, ResponderHandoff};
pub use init::{InitStep, InitWork, prepare_init, respond_to_init};

/// Gateway-wide IKEv2 settings.
pub struct ResponderConfig {
    /// Acceptable algorithms.
    pub policy: Policy,
    /// CA and CRLs for client certificates.
    pub trust: PeerTrust,
    /// Wall clock for certificate validity.
    pub time: Arc<dyn TimeProvider>,
    /// Our certificate chain (end entity first).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Our private key.
    pub key: Arc<SigningKey>,
    /// ring's generator for DH and signatures (ring does not take ours).
    pub rng: Arc<dyn SecureRandom + Send + Sync>,
    /// SHA-1 hashes of our CA's SubjectPublicKeyInfo, sent in CERTREQ.
    pub ca_hashes: Vec<[u8; 20]>,
    /// Send DPD after this long without traffic from the peer.
    pub dpd_interval: Duration,
    /// Give up when IKE_AUTH has not completed after this long.
    pub auth_timeout: Duration,
    /// Largest IKE datagram we send before fragmenting (when the peer supports it).
    pub fragment_size: usize,
    /// Delete the SA when the client has not rekeyed its IKE SA or its CHILD SA for this
    /// long (zero: never). Clients rekey well before ([`DEFAULT_HARD_LIFETIME`]: 24 h
    /// against strongSwan's 4 h IKE and 1 h CHILD rekey times).
    pub hard_lifetime: Duration,
    /// Site-to-site peers. An IKE_SA_INIT from a site's address is answered with that site's
    /// algorithms; an IKE_AUTH whose identity names a site authenticates as that site (PSK
    /// or certificate) and gets a CHILD SA between the configured prefixes, no address.
    pub sites: Vec<Arc<SitePeer>>,
    /// Hand the costly steps of a client's handshake (the IKE_SA_INIT key exchange, the
    /// IKE_AUTH certificate check and signature) to the driver as jobs to run on another
    /// thread ([`InitWork`], [`AuthJob`]) instead of doing them in the call.
    pub offload: bool,
}

/// A sane [`ResponderConfig::hard_lifetime`]: 24 hours.
pub const DEFAULT_HARD_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How long an IKE SA replaced by a rekey keeps answering (the client's Delete of it, a
/// retransmitted rekey request) when the client does not delete it.
const OLD_SA_RETENTION: Duration = Duration::from_secs(30);

/// Most replaced IKE SAs kept at once (a client rekeying in a tight loop gets no more).
const MAX_OLD_SAS: usize = 4;

/// How long a CHILD SA replaced by the peer's rekey keeps working (packets in flight on it)
/// when the peer does not delete it: then we delete it.
pub const CHILD_OVERLAP: Duration = Duration::from_secs(10);

/// Most CHILD SAs of one IKE SA (current and replaced ones still overlapping). A peer that
/// makes more (rekeying in a tight loop) has its IKE SA deleted.
pub const MAX_CHILDREN: usize = 8;

impl std::fmt::Debug for ResponderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponderConfig")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A datagram to send to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// From port 4500 with the non-ESP marker (true) or from port 500 (false).
    pub nat_t: bool,
    /// The IKE message.
    pub data: Vec<u8>,
}

/// What the gateway assigns to an authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeAssignment {
    /// The client's virtual address.
    pub address: Ipv4Addr,
    /// DNS servers.
    pub dns: Vec<IpAddr>,
    /// Split-DNS domains (normalized), sent as INTERNAL_DNS_DOMAIN (RFC 8598).
    pub dns_domains: Vec<String>,
    /// Networks behind the gateway (traffic selectors and INTERNAL_IP4_SUBNET).
    pub subnets: Vec<Ipv4Net>,
    /// Everything through the tunnel.
    pub full_tunnel: bool,
    /// IPv6 inside the tunnel (None: IPv4 only); given to a client that asks for
    /// INTERNAL_IP6_ADDRESS and proposes IPv6 selectors.
    pub ipv6: Option<crate::pool6::Ipv6Assignment>,
}

/// Something the driver must act on.
#[derive(Debug)]
pub enum IkeEvent {
    /// The client's certificate and AUTH verified: answer with accept or reject.
    Authenticated {
        /// The certificate's common name.
        client: String,
        /// The IKE identity it used.
        id: String,
    },
    /// A CHILD SA is ready: install it in the data path.
    ChildUp {
        /// Our inbound SPI (ESP packets to us carry it).
        our_spi: u32,
        /// The peer's inbound SPI (we send with it).
        peer_spi: u32,
        /// The negotiated cipher.
        cipher: EspCipher,
        /// The SA itself.
        sa: Box<EspSa>,
        /// The inbound SPI of the CHILD SA this one replaces, when it is a rekey. Install
        /// the new SA for inbound at once and keep the old one until its
        /// [`IkeEvent::ChildDown`]. The client installs the new SA only when our answer
        /// reaches it, so send on the new SA once traffic arrives on it (RFC 7296 2.8), or
        /// when the old one goes down.
        rekey_of: Option<u32>,
    },
    /// A CHILD SA is gone (deleted by the peer).
    ChildDown {
        /// Our inbound SPI of it.
        our_spi: u32,
    },
    /// A site-to-site peer authenticated as the site `connection`: answer with
    /// [`accept_site`](IkeResponder::accept_site) or [`reject`](IkeResponder::reject).
    SiteAuthenticated {
        /// The site's name.
        connection: String,
        /// The IKE identity it used.
        id: String,
        /// It sent INITIAL_CONTACT: it has no other IKE SA with us (it restarted), so older
        /// SAs of this site are stale.
        initial_contact: bool,
    },
    /// The peer was refused before it got a tunnel.
    Refused {
        /// It identified as a site-to-site peer (`client` is then the connection's name).
        site: bool,
        /// Its certificate's name, when known.
        client: Option<String>,
        /// Why.
        reason: String,
    },
    /// The client rekeyed the IKE SA (RFC 7296 2.18): from now on the session is named `new`
    /// (what [`spis`](IkeResponder::spis) returns). Route both `new` and `old` to this
    /// session until [`IkeEvent::OldIkeSaGone`] names `old`. CHILD SAs are not affected.
    IkeRekeyed {
        /// The SPI pair (initiator's, ours) of the replaced IKE SA.
        old: (u64, u64),
        /// The SPI pair of the new IKE SA.
        new: (u64, u64),
    },
    /// An IKE SA replaced by a rekey is gone (the client deleted it, or it timed out): stop
    /// routing `spis` to this session.
    OldIkeSaGone {
        /// Its SPI pair (initiator's, ours).
        spis: (u64, u64),
    },
    /// The IKE SA is over.
    Closed(String),
}

/// The answer to an IKE_SA_INIT request.
pub enum InitOutcome {
    /// A stateless reply (COOKIE, INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN) and no SA.
    Reply(Vec<u8>),
    /// A new SA; its response is waiting in `poll_transmit`.
    Session(Box<IkeResponder>),
    /// Not a valid IKE_SA_INIT request: drop it.
    Drop(String),
    /// Refused (no acceptable proposal): send `reply` and log `reason`.
    Refused {
        /// The NO_PROPOSAL_CHOSEN answer.
        reply: Vec<u8>,
        /// Why, naming what the peer offered and what we accept.
        reason: String,
    },
    /// Under load, the peer offers only costly MODP groups and the caller's MODP budget is
    /// spent ([`InitGuard::modp_allowed`]): drop it (the peer retransmits).
    Throttled(String),
}

/// How [`prepare_init`] protects the gateway.
#[derive(Debug, Default)]
pub struct InitGuard<'a> {
    /// Require a COOKIE (RFC 7296 2.6): a request without one that this jar issued (current
    /// or previous secret) gets a fresh one and nothing else.
    pub cookies: Option<&'a mut CookieJar>,
    /// Under load: a peer whose KE payload is a MODP group (a costly exponentiation) is
    /// answered with INVALID_KE_PAYLOAD naming the cheap group (x25519, P-256, P-384) we
    /// prefer among those it offered - strongSwan and the other clients restart with that
    /// group; a peer offering only MODP groups gets an SA only while `modp_allowed`.
    pub prefer_cheap_groups: bool,
    /// With `prefer_cheap_groups`: whether a MODP exchange may be computed now (the caller's
    /// rate limit; it charges one when the SA is made with a MODP group).
    pub modp_allowed: bool,
}

/// What an SA dropped without answering since the last
/// [`take_discards`](IkeResponder::take_discards).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Discards {
    /// Messages whose integrity check (ICV) failed.
    pub integrity: u32,
    /// IKE_AUTH requests of a site whose PSK authentications are throttled.
    pub psk_throttled: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitAuth,
    /// The IKE_AUTH check ([`AuthJob`]) is out on another thread.
    AwaitCheck,
    AwaitDecision,
    Established,
    Closed,
}

struct PendingAuth {
    message_id: u32,
    /// Remote access: our identity, and our AUTH payload (method and data) signing it.
    idr: Option<OurAuth>,
    client: String,
    peer_esp_spi: u32,
    esp: Option<(u8, EspCipher)>,
    wants_address: bool,
    /// The client asked for INTERNAL_IP6_ADDRESS and proposed IPv6 selectors.
    wants_v6: bool,
    /// Site-to-site: the site and the narrowed selectors (initiator's, ours).
    site: Option<SitePending>,
}

/// Our identity (IDr type and data), and the method and data of the AUTH payload signing it.
type OurAuth = ((IdType, Vec<u8>), SignMethod, Vec<u8>);

/// A client's IKE_AUTH while its [`AuthJob`] runs: what the answer needs besides the job's
/// verdict.
struct Checking {
    message_id: u32,
    id_text: String,
    idr: (IdType, Vec<u8>),
    our_method: SignMethod,
    peer_cert: Vec<u8>,
    peer_esp_spi: u32,
    esp: Option<(u8, EspCipher)>,
    wants_address: bool,
    wants_v6: bool,
}

struct SitePending {
    site: Arc<SitePeer>,
    tsi: Vec<crate::wire::ikev2::TrafficSelector>,
    tsr: Vec<crate::wire::ikev2::TrafficSelector>,
}

struct Child {
    our_spi: u32,
    peer_spi: u32,
    created: Instant,
    /// Replaced by a rekey we started (tests only), waiting for our Delete.
    replaced: bool,
    /// Replaced by the peer's rekey at this time: deleted after [`CHILD_OVERLAP`] unless the
    /// peer deletes it first.
    superseded: Option<Instant>,
}

/// An IKE SA replaced by a rekey: enough to answer the client's requests on it (the Delete,
/// a retransmitted rekey request) until it is deleted or expires.
struct OldSa {
    spi_i: u64,
    spi_r: u64,
    /// Whether we are its initiator (only after a rekey we started; tests only).
    initiator: bool,
    sk_in: SkKeys,
    sk_out: SkKeys,
    next_peer_id: u32,
    last_response: Option<(u32, Vec<Vec<u8>>)>,
    reassembly: Reassembly,
    expires: Instant,
    /// Requests of ours on it (tests only): the message ID of our Delete of it, and an IKE
    /// rekey of ours that the client's rekey overtook.
    delete_id: Option<u32>,
    own_rekey: Option<initiated::OwnIkeRekey>,
    response_reassembly: Reassembly,
}

/// A gateway-side Delete of the IKE SA.
#[derive(Debug, Clone, Copy)]
struct Deleting {
    /// Its message id, once sent (None: waiting for an outstanding request's answer).
    sent: Option<u32>,
}

struct Outstanding {
    message_id: u32,
    request: initiated::Request,
    datagrams: Vec<Vec<u8>>,
    next_send: Instant,
    tries: u32,
}

/// One IKE SA on the gateway.
pub struct IkeResponder {
    cfg: Arc<ResponderConfig>,
    entropy: Box<dyn Entropy>,
    state: State,
    spi_i: u64,
    spi_r: u64,
    suite: IkeSuite,
    keys: IkeSaKeys,
    sk_in: SkKeys,
    sk_out: SkKeys,
    ni: Vec<u8>,
    nr: Vec<u8>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    peer_fragments: bool,
    peer_sig_hash: bool,
    peer: SocketAddr,
    peer_nat_t: bool,
    next_peer_id: u32,
    /// After a handoff: how far ahead of `next_peer_id` a liveness check may be (requests
    /// the previous process answered after its copy); 0 once an authentic request arrived.
    id_slack: u32,
    last_response: Option<(u32, Vec<Vec<u8>>)>,
    reassembly: Reassembly,
    pending: Option<PendingAuth>,
    /// A client's IKE_AUTH being checked, and its job until the driver takes it.
    checking: Option<Box<Checking>>,
    auth_job: Option<Box<AuthJob>>,
    children: Vec<Child>,
    next_our_id: u32,
    outstanding: Option<Outstanding>,
    /// The gateway ended the SA: its Delete is sent (or waits for `outstanding`) and
    /// retransmitted until answered; nothing else happens on the SA meanwhile.
    deleting: Option<Deleting>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<IkeEvent>,
    created: Instant,
    /// When the current IKE SA's keys were made (IKE_SA_INIT or the last rekey).
    keys_created: Instant,
    /// IKE SAs replaced by rekeys, still answering on their old SPIs.
    old_sas: Vec<OldSa>,
    last_rx: Instant,
    client: Option<String>,
    /// The peer's verified end-entity certificate (DER), for live revocation.
    peer_cert: Option<Vec<u8>>,
    /// The gateway's SPI table: our CHILD SA SPIs come from it (unique gateway-wide).
    spis: Option<Arc<crate::esp::SpiTable>>,
    /// The traffic selectors narrowed at IKE_AUTH (client address === address space); CHILD
    /// SA rekeys get exactly these, whatever the client asks for.
    narrowed: Option<(crate::wire::ikev2::TsPayload, crate::wire::ikev2::TsPayload)>,
    /// Whether we are the initiator of the current IKE SA: only after an IKE rekey we
    /// started, which only tests do.
    ike_initiator: bool,
    /// A client CHILD rekey that crossed one of ours (tests only).
    child_collision: Option<initiated::ChildCollision>,
    /// The site-to-site peer this SA belongs to: a candidate by address after
    /// IKE_SA_INIT, confirmed by IKE_AUTH ([`IkeResponder::site`]).
    site: Option<Arc<SitePeer>>,
    site_confirmed: bool,
    /// IKE_AUTH named a site (refusals are then the site's).
    site_claimed: bool,
    /// MOBIKE (RFC 4555): offered by the client, in use (`mobike.rs`).
    mobike: mobike::Mobike,
    /// Failed PSK authentications per site, gateway-wide (None: not throttled).
    psk_throttle: Option<Arc<crate::ikev2::psk_throttle::PskThrottle>>,
    /// Dropped since the driver last asked.
    discards: Discards,
}

fn notify(t: NotifyType, data: &[u8]) -> Payload<'_> {
    Payload::Notify(NotifyPayload::new(t, data))
}

/// A stateless cookie (RFC 7296 2.6): SHA-256 of a gateway secret, Ni, the peer's address and
/// SPIi. The driver rotates the secret.
pub fn cookie_for(secret: &[u8; 32], ni: &[u8], peer: SocketAddr, spi_i: u64) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(secret);
    ctx.update(ni);
    match peer.ip() {
        IpAddr::V4(a) => ctx.update(&a.octets()),
        IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&peer.port().to_be_bytes());
    ctx.update(&spi_i.to_be_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl IkeResponder {
    /// The SPI pair naming this SA: the current IKE SA's (it changes with
    /// [`IkeEvent::IkeRekeyed`]).
    pub fn spis(&self) -> (u64, u64) {
        (self.spi_i, self.spi_r)
    }

    /// SPI pairs of replaced IKE SAs this session still answers on (each is reported by
    /// [`IkeEvent::OldIkeSaGone`] when it goes).
    pub fn old_spis(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.old_sas.iter().map(|o| (o.spi_i, o.spi_r))
    }

    /// Whether a message with this SPI pair belongs to this session (current or old SA).
    pub fn owns_spis(&self, spi_i: u64, spi_r: u64) -> bool {
        (spi_i, spi_r) == (self.spi_i, self.spi_r) || self.old_spis().any(|s| s == (spi_i, spi_r))
    }

    /// The current IKE SA's suite and keys, for the fuzz target (it encrypts its input like
    /// a client would). Not for anything else.
    #[doc(hidden)]
    pub fn sa_keys_for_fuzzing(&self) -> (IkeSuite, &IkeSaKeys) {
        (self.suite, &self.keys)
    }

    /// Replaces the configuration (tests: a gateway reconfigured under a running SA).
    #[cfg(test)]
    pub(crate) fn set_config(&mut self, cfg: Arc<ResponderConfig>) {
        self.cfg = cfg;
    }

    /// Where the peer is now (IKE and ESP go there).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The site-to-site peer this SA authenticated as (None for remote-access clients and
    /// before IKE_AUTH).
    pub fn site(&self) -> Option<&Arc<SitePeer>> {
        self.site.as_ref().filter(|_| self.site_confirmed)
    }

    /// Whether IKE_AUTH gave the client an IPv6 address (its narrowed selectors hold one).
    pub fn has_ipv6(&self) -> bool {
        self.narrowed.as_ref().is_some_and(|(i, _)| {
            i.selectors
                .iter()
                .any(|t| matches!(t.range, crate::wire::ikev2::AddressRange::V6 { .. }))
        })
    }

    /// The selectors IKE_AUTH narrowed to (initiator's, ours).
    #[cfg(test)]
    pub(crate) fn narrowed_for_tests(
        &self,
    ) -> Option<(
        Vec<crate::wire::ikev2::TrafficSelector>,
        Vec<crate::wire::ikev2::TrafficSelector>,
    )> {
        self.narrowed
            .as_ref()
            .map(|(i, r)| (i.selectors.clone(), r.selectors.clone()))
    }

    /// The algorithms for this SA: its site's, or the gateway's.
    pub(crate) fn policy(&self) -> &Policy {
        self.site.as_ref().map_or(&self.cfg.policy, |s| &s.policy)
    }

    /// The authenticated client's name.
    pub fn client(&self) -> Option<&str> {
        self.client.as_deref()
    }

    /// The peer's verified end-entity certificate (DER), if it authenticated with one.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_cert.as_deref()
    }

    /// Draws our CHILD SA SPIs from `table` (the gateway's, so they are unique).
    pub fn set_spi_table(&mut self, table: Arc<crate::esp::SpiTable>) {
        self.spis = Some(table);
    }

    /// Throttles online guessing of site PSKs with `throttle` (shared by the gateway's SAs):
    /// an IKE_AUTH naming a site in backoff is dropped unanswered and the SA closed.
    pub fn set_psk_throttle(&mut self, throttle: Arc<crate::ikev2::psk_throttle::PskThrottle>) {
        self.psk_throttle = Some(throttle);
    }

    /// What the SA dropped without answering since the last call (the driver counts it).
    pub fn take_discards(&mut self) -> Discards {
        std::mem::take(&mut self.discards)
    }

    pub(super) fn count_open_error(&mut self, e: &message::OpenError) {
        if *e == message::OpenError::Integrity {
            self.discards.integrity = self.discards.integrity.saturating_add(1);
        }
    }

    /// The CHILD SAs it holds (current and overlapping replaced ones).
    pub fn child_count(&self) -> usize {
        self.children.len()
    }

    pub(super) fn new_child_spi(&mut self) -> u32 {
        crate::esp::spis::claim_or_draw(self.spis.as_deref(), &mut *self.entropy)
    }

    /// Uses `cfg` from now on (a reloaded CRL, for example).
    pub fn update_config(&mut self, cfg: Arc<ResponderConfig>) {
        self.cfg = cfg;
    }

    /// The negotiated IKE suite.
    pub fn suite(&self) -> IkeSuite {
        self.suite
    }

    /// True once the SA is gone.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// ESP from the peer arrived (the driver saw it); DPD waits longer.
    pub fn note_activity(&mut self, now: Instant, from: SocketAddr) {
        self.last_rx = now;
        self.peer = from;
        self.peer_nat_t = true;
    }

    pub(super) fn send_response(
        &mut self,
        exchange: ExchangeType,
        message_id: u32,
        payloads: &[Payload<'_>],
    ) {
        let header = message::header(
            self.spi_i,
            self.spi_r,
            exchange,
            self.ike_initiator,
            true,
            message_id,
        );
        let datagrams = message::seal(
            &mut self.sk_out,
            &mut *self.entropy,
            header,
            payloads,
            self.peer_fragments,
            self.cfg.fragment_size,
        );
        for d in &datagrams {
            self.transmits.push_back(Transmit {
                to: self.peer,
                nat_t: self.peer_nat_t,
                data: d.clone(),
            });
        }
        self.last_response = Some((message_id, datagrams));
    }

    pub(super) fn send_request(&mut self, now: Instant, payloads: &[Payload<'_>]) {
        self.send_request_for(
            now,
            ExchangeType::INFORMATIONAL,
            initiated::Request::Informational,
            payloads,
        );
    }

    fn send_request_for(
        &mut self,
        now: Instant,
        exchange: ExchangeType,
        request: initiated::Request,
        payloads: &[Payload<'_>],
    ) {
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
            &mut self.sk_out,
            &mut *self.entropy,
            header,
            payloads,
            false,
            self.cfg.fragment_size,
        );
        for d in &datagrams {
            self.transmits.push_back(Transmit {
                to: self.peer,
                nat_t: self.peer_nat_t,
                data: d.clone(),
            });
        }
        self.outstanding = Some(Outstanding {
            message_id: id,
            request,
            datagrams,
            next_send: now + Duration::from_secs(2),
            tries: 1,
        });
    }

    pub(super) fn close(&mut self, reason: String) {
        if self.deleting.is_some() {
            // Closed was reported when the delete began; now the SA is really gone.
            self.state = State::Closed;
            return;
        }
        if self.state != State::Closed {
            self.state = State::Closed;
            for o in std::mem::take(&mut self.old_sas) {
                self.events.push_back(IkeEvent::OldIkeSaGone {
                    spis: (o.spi_i, o.spi_r),
                });
            }
            self.events.push_back(IkeEvent::Closed(reason));
        }
    }

    /// Deletes the SA from the gateway's side: reports it closed at once (the gateway frees
    /// its address and routes), then tells the peer with a Delete that is retransmitted until
    /// answered (or the retransmissions give up), so a lost datagram does not leave the peer
    /// with a dead SA until its own DPD notices.
    pub fn delete(&mut self, now: Instant, reason: &str) {
        if self.state != State::Established || self.deleting.is_some() {
            self.close(reason.to_owned());
            return;
        }
        for o in std::mem::take(&mut self.old_sas) {
            self.events.push_back(IkeEvent::OldIkeSaGone {
                spis: (o.spi_i, o.spi_r),
            });
        }
        self.events.push_back(IkeEvent::Closed(reason.to_owned()));
        if self.outstanding.is_some() {
            // One request at a time: the Delete follows the answer (or the give-up).
            self.deleting = Some(Deleting { sent: None });
        } else {
            self.send_delete(now);
        }
    }

    fn send_delete(&mut self, now: Instant) {
        let id = self.next_our_id;
        self.deleting = Some(Deleting { sent: Some(id) });
        self.send_request(now, &[Payload::Delete(DeletePayload::ike())]);
    }

    /// After an answer to one of our requests: ends a delete, or sends the waiting Delete.
    pub(super) fn after_own_response(&mut self, now: Instant, answered: u32) {
        match self.deleting {
            Some(Deleting { sent: Some(id) }) if id == answered => self.state = State::Closed,
            Some(Deleting { sent: None }) => self.send_delete(now),
            _ => {}
        }
    }

    /// Feeds a message of this SA (already matched by SPIs) from `from`.
    pub fn handle_message(&mut self, now: Instant, from: SocketAddr, nat_t: bool, raw: &[u8]) {
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
            self.handle_old_message(now, i, &msg, raw, from, nat_t);
            return;
        }
        // A retransmitted IKE_SA_INIT request still carries SPIr = 0 (and the first SPIi).
        let init_again = h.exchange == ExchangeType::IKE_SA_INIT
            && h.responder_spi == 0
            && self.keys_created == self.created;
        if h.initiator_spi != self.spi_i || (h.responder_spi != self.spi_r && !init_again) {
            return;
        }
        if h.flags.response() {
            self.handle_response(now, &msg, raw);
            return;
        }
        if self.deleting.is_some() && h.exchange != ExchangeType::INFORMATIONAL {
            // Going away: no new CHILD SAs or rekeys.
            return;
        }
        if h.exchange == ExchangeType::IKE_SA_INIT {
            // A retransmitted IKE_SA_INIT: the stored answer again.
            if let Some((0, d)) = &self.last_response {
                for x in d.clone() {
                    self.transmits.push_back(Transmit {
                        to: from,
                        nat_t,
                        data: x,
                    });
                }
            }
            return;
        }
        if h.message_id.wrapping_add(1) == self.next_peer_id {
            // Retransmission: answer from the cache, never process twice.
            if let Some((id, d)) = &self.last_response
                && *id == h.message_id
            {
                let last = msg.payloads.last();
                // Resend once per request (the last fragment of a fragmented one).
                let resend = match last {
                    Some(Payload::EncryptedFragment {
                        fragment_number,
                        total_fragments,
                        ..
                    }) => fragment_number == total_fragments,
                    _ => true,
                };
                if resend {
                    for x in d.clone() {
                        self.transmits.push_back(Transmit {
                            to: from,
                            nat_t,
                            data: x,
                        });
                    }
                }
            }
            return;
        }
        let ahead = h.message_id.wrapping_sub(self.next_peer_id);
        if ahead != 0 && !(h.exchange == ExchangeType::INFORMATIONAL && ahead <= self.id_slack) {
            return;
        }
        let (first_inner, plaintext) = match self.reassembly.open(&self.sk_in, &msg, raw) {
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
        // A request past the expected ID after a handoff: only a liveness check (no
        // payloads) the previous process's last copy did not see; anything else waits.
        if ahead != 0 && !message::inner(first_inner, &plaintext).is_ok_and(|p| p.is_empty()) {
            return;
        }
        self.id_slack = 0;
        // Authentic: the peer may have moved (charon-cmd sends IKE_AUTH from a new port).
        self.peer = from;
        self.peer_nat_t = nat_t;
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
            ExchangeType::IKE_AUTH if self.state == State::AwaitAuth => {
                self.on_ike_auth(now, h.message_id, &payloads)
            }
            ExchangeType::INFORMATIONAL => self.on_informational(h.message_id, &payloads),
            ExchangeType::CREATE_CHILD_SA if self.state == State::Established => {
                self.on_create_child(now, h.message_id, &payloads)
            }
            other => {
                let t = if other == ExchangeType::CREATE_CHILD_SA {
                    NotifyType::TEMPORARY_FAILURE
                } else {
                    NotifyType::INVALID_SYNTAX
                };
                self.send_response(other, h.message_id, &[notify(t, &[])]);
            }
        }
    }

    /// Advances timers: DPD, retransmissions of our requests, the IKE_AUTH deadline, the
    /// hard lifetime and the expiry of replaced IKE SAs.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if self.deleting.is_some() {
            // Only the Delete is left: send it once the previous request is done; the
            // retransmissions below give up silently (Closed was reported already).
            if self.outstanding.is_none() {
                self.send_delete(now);
                return;
            }
        } else {
            if matches!(
                self.state,
                State::AwaitAuth | State::AwaitCheck | State::AwaitDecision
            ) && now >= self.created + self.cfg.auth_timeout
            {
                self.close("IKE_AUTH did not complete in time".into());
                return;
            }
            self.expire_old_sas(now);
            self.expire_superseded_children(now);
            if self.state == State::Established
                && let Some(t) = self.hard_deadline()
                && now >= t
            {
                self.delete(
                    now,
                    "the client did not rekey its SA within the hard lifetime",
                );
                return;
            }
        }
        if let Some(o) = &mut self.outstanding {
            if now >= o.next_send {
                if o.tries >= 5 {
                    self.close("peer stopped answering (dead peer detection)".into());
                    return;
                }
                o.tries += 1;
                o.next_send = now + Duration::from_secs(1 << o.tries.min(5));
                for d in o.datagrams.clone() {
                    self.transmits.push_back(Transmit {
                        to: self.peer,
                        nat_t: self.peer_nat_t,
                        data: d,
                    });
                }
            }
            return;
        }
        if self.state == State::Established
            && self.deleting.is_none()
            && now >= self.last_rx + self.cfg.dpd_interval
        {
            self.send_request(now, &[]);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<IkeEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != State::Closed && self.deleting.is_some() {
            // Only the Delete's retransmissions are left (or sending it, at once).
            return Some(
                self.outstanding
                    .as_ref()
                    .map_or(self.last_rx, |o| o.next_send),
            );
        }
        let main = match self.state {
            State::Closed => return None,
            State::AwaitAuth | State::AwaitCheck | State::AwaitDecision => {
                self.created + self.cfg.auth_timeout
            }
            State::Established => {
                let t = match &self.outstanding {
                    Some(o) => o.next_send,
                    None => self.last_rx + self.cfg.dpd_interval,
                };
                self.hard_deadline().map_or(t, |h| t.min(h))
            }
        };
        let overlaps = self
            .children
            .iter()
            .filter_map(|c| c.superseded)
            .map(|t| t + CHILD_OVERLAP);
        self.old_sas
            .iter()
            .map(|o| o.expires)
            .chain(overlaps)
            .chain([main])
            .min()
    }

    /// When the SA is deleted unless the client rekeys: the hard lifetime after the current
    /// IKE SA's keys or the newest CHILD SA's, whichever is older.
    fn hard_deadline(&self) -> Option<Instant> {
        if self.cfg.hard_lifetime.is_zero() {
            return None;
        }
        let newest_child = self.children.iter().map(|c| c.created).max();
        let oldest = newest_child.map_or(self.keys_created, |c| c.min(self.keys_created));
        Some(oldest + self.cfg.hard_lifetime)
    }
}
