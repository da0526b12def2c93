//! The harness: an [`IkeInitiator`] and the gateway's [`IkeResponder`] talking in memory on a
//! virtual clock, through a link that can lose, delay, reorder and duplicate datagrams (the
//! model of quinn's `Pair`). The gateway side is driven like the real driver drives it: a
//! new IKE_SA_INIT goes to [`respond_to_init`], everything else to the session by its SPI
//! pair (kept up to date from `IkeRekeyed` / `OldIkeSaGone` only, as the driver must), and
//! `Authenticated` is answered with `accept`. Everything random is seeded, so a failing seed
//! replays exactly (ring's own key generation aside, which changes no sizes that matter).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, UnixTime};

use crate::entropy::{Entropy, SeededEntropy};
use crate::esp::{EspCipher, EspSa};
use crate::ikev2::crypto::{ChildSaKeys, SigningKey};
use crate::ikev2::initiator::{
    DEFAULT_CHILD_LIFETIME, DEFAULT_IKE_LIFETIME, IkeInitiator, InitiatorConfig, InitiatorEvent,
};
use crate::ikev2::peer_cert::PeerTrust;
use crate::ikev2::proposal::Policy;
use crate::ikev2::responder::{
    DEFAULT_HARD_LIFETIME, IkeAssignment, IkeEvent, IkeResponder, InitOutcome, ResponderConfig,
    respond_to_init,
};
use crate::wire::ikev2::{ExchangeType, IkeHeader, payload_type};

/// "Now" for certificate validity (2027-01-15); the protocol clock is virtual and separate.
pub(super) const WALL_CLOCK_SECS: u64 = 1_800_000_000;

/// The gateway's public address: its certificate's SAN, where the client dials port 500.
pub(super) const GATEWAY_IP: &str = "198.51.100.1";

/// RSA-2048 PKCS#8 (rcgen with ring cannot generate RSA keys).
const RSA_PK8: &[u8] = include_bytes!("../crypto/testdata/rsa2048.pk8");

/// A certificate and its PKCS#8 private key.
pub(super) type Chain = (CertificateDer<'static>, Vec<u8>);

/// Tests may use the OS generator; the engine proper takes it as a parameter.
#[allow(clippy::disallowed_methods)]
pub(super) fn rng() -> Arc<ring::rand::SystemRandom> {
    Arc::new(ring::rand::SystemRandom::new())
}

/// A CA that can issue more certificates (and CRLs) in a test.
pub(super) struct Ca {
    pub cert: CertificateDer<'static>,
    pub issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert: cert.der().clone(),
            issuer: Issuer::new(p, key),
        }
    }

    /// Issues a leaf for `key`; `tweak` adjusts the parameters before signing.
    pub fn leaf_with_key(
        &self,
        key: KeyPair,
        cn: &str,
        eku: ExtendedKeyUsagePurpose,
        san: Option<&str>,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Chain {
        let mut p =
            CertificateParams::new(san.map(|s| vec![s.to_owned()]).unwrap_or_default()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        tweak(&mut p);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.der().clone(), key.serialize_der())
    }

    /// A client certificate (P-256 key) named `cn`.
    pub fn client(&self, cn: &str, tweak: impl FnOnce(&mut CertificateParams)) -> Chain {
        let key = KeyPair::generate().unwrap();
        self.leaf_with_key(key, cn, ExtendedKeyUsagePurpose::ClientAuth, None, tweak)
    }

    /// A client certificate with the RSA-2048 test key.
    pub fn rsa_client(&self, cn: &str) -> Chain {
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(RSA_PK8),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap();
        self.leaf_with_key(key, cn, ExtendedKeyUsagePurpose::ClientAuth, None, |_| {})
    }

    /// A gateway certificate as gatehouse-certs makes it: CN "gateway", SAN = `san`.
    pub fn gateway(&self, san: &str) -> Chain {
        let key = KeyPair::generate().unwrap();
        self.leaf_with_key(
            key,
            "gateway",
            ExtendedKeyUsagePurpose::ServerAuth,
            Some(san),
            |_| {},
        )
    }

    /// A CRL listing `serials` as revoked, valid around [`WALL_CLOCK_SECS`].
    pub fn crl(&self, serials: &[u64]) -> Vec<u8> {
        use rcgen::{
            CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams,
            date_time_ymd,
        };
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2026, 1, 1),
            next_update: date_time_ymd(2028, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: date_time_ymd(2026, 6, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().der().to_vec()
    }

    /// SHA-1 of the CA's SubjectPublicKeyInfo, as the gateway sends it in CERTREQ.
    pub fn spki_sha1(&self) -> [u8; 20] {
        let (_, c) = x509_parser::parse_x509_certificate(&self.cert).unwrap();
        let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, c.public_key().raw);
        d.as_ref().try_into().unwrap()
    }
}

/// The default PKI: one CA, the gateway at [`GATEWAY_IP`], clients alice (ECDSA) and bob
/// (RSA). Made once and shared (key generation dominates a handshake test otherwise).
pub(super) struct Pki {
    pub ca: Ca,
    pub gateway: Chain,
    pub alice: Chain,
    pub bob_rsa: Chain,
}

pub(super) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Ca::new("Gatehouse Test CA");
        let gateway = ca.gateway(GATEWAY_IP);
        let alice = ca.client("alice", |_| {});
        let bob_rsa = ca.rsa_client("bob");
        Pki {
            ca,
            gateway,
            alice,
            bob_rsa,
        }
    })
}

#[derive(Debug)]
struct FixedTime(UnixTime);
impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

fn wall_clock() -> Arc<FixedTime> {
    Arc::new(FixedTime(UnixTime::since_unix_epoch(Duration::from_secs(
        WALL_CLOCK_SECS,
    ))))
}

fn signing_key(pk8: &[u8]) -> Arc<SigningKey> {
    Arc::new(SigningKey::from_pkcs8(pk8, &*rng()).unwrap())
}

/// A gateway trusting `ca` (with `crls`) for clients and presenting `chain`.
pub(super) fn responder_config(ca: &Ca, crls: Vec<Vec<u8>>, chain: &Chain) -> ResponderConfig {
    ResponderConfig {
        policy: Policy::default(),
        trust: PeerTrust {
            roots: vec![ca.cert.clone()],
            crls,
        },
        time: wall_clock(),
        cert_chain: vec![chain.0.clone()],
        key: signing_key(&chain.1),
        rng: rng(),
        ca_hashes: vec![ca.spki_sha1()],
        dpd_interval: Duration::from_secs(30),
        auth_timeout: Duration::from_secs(30),
        fragment_size: 1280,
        hard_lifetime: DEFAULT_HARD_LIFETIME,
        sites: Vec::new(),
        offload: false,
    }
}

/// A client trusting `ca` for the gateway, presenting `chain` and expecting `remote_id`.
pub(super) fn initiator_config(ca: &Ca, chain: &Chain, remote_id: Option<&str>) -> InitiatorConfig {
    InitiatorConfig {
        policy: Policy::default(),
        trust: PeerTrust {
            roots: vec![ca.cert.clone()],
            crls: vec![],
        },
        time: wall_clock(),
        cert_chain: vec![chain.0.clone()],
        key: signing_key(&chain.1),
        rng: rng(),
        remote_id: remote_id.map(str::to_owned),
        dpd_interval: Duration::from_secs(30),
        fragment_size: 1280,
        ike_lifetime: DEFAULT_IKE_LIFETIME,
        request_ipv6: false,
        site: None,
        child_lifetime: DEFAULT_CHILD_LIFETIME,
    }
}

/// Both ends with the default PKI; alice connects.
pub(super) fn default_configs() -> (ResponderConfig, InitiatorConfig) {
    let pki = pki();
    (
        responder_config(&pki.ca, vec![], &pki.gateway),
        initiator_config(&pki.ca, &pki.alice, Some(GATEWAY_IP)),
    )
}

/// What the test driver assigns.
pub(super) fn assignment() -> IkeAssignment {
    IkeAssignment {
        address: "10.9.0.2".parse().unwrap(),
        dns: vec!["10.9.0.1".parse().unwrap()],
        dns_domains: vec!["corp.example".into()],
        subnets: vec!["10.9.0.0/24".parse().unwrap()],
        full_tunnel: false,
        ipv6: None,
    }
}

/// How the link treats datagrams (both directions). Percentages are per datagram.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub latency: Duration,
    pub loss_percent: u64,
    /// Datagrams held back by a random extra delay of up to `reorder_delay`.
    pub reorder_percent: u64,
    pub reorder_delay: Duration,
    /// Datagrams delivered twice (the copy with its own random extra delay).
    pub dup_percent: u64,
    /// Drop everything the client sends.
    pub block_to_gateway: bool,
    /// Drop everything the gateway sends.
    pub block_to_client: bool,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            latency: Duration::from_millis(10),
            loss_percent: 0,
            reorder_percent: 0,
            reorder_delay: Duration::from_millis(30),
            dup_percent: 0,
            block_to_gateway: false,
            block_to_client: false,
        }
    }
}

/// A datagram in flight: delivery time, UDP 4500 with non-ESP marker or not, the IKE message.
type InFlight = (Instant, bool, Vec<u8>);

/// Datagrams in flight in one direction, ordered by delivery time (ties keep send order).
#[derive(Default)]
struct Queue(VecDeque<InFlight>);

impl Queue {
    fn push(&mut self, item: InFlight) {
        let i = self.0.partition_point(|(t, _, _)| *t <= item.0);
        self.0.insert(i, item);
    }
    fn pop_due(&mut self, now: Instant) -> Option<(bool, Vec<u8>)> {
        if self.0.front().is_some_and(|(t, _, _)| *t <= now) {
            self.0.pop_front().map(|(_, n, d)| (n, d))
        } else {
            None
        }
    }
    fn next(&self) -> Option<Instant> {
        self.0.front().map(|(t, _, _)| *t)
    }
}

/// One IKE datagram as sent (before loss), for tests that look at SPIs and message IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sent {
    pub to_gateway: bool,
    pub header: IkeHeader,
}

/// Counters of what went over the link.
#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    /// Datagrams the client sent (before loss).
    pub to_gateway: usize,
    /// Datagrams the gateway sent (before loss).
    pub to_client: usize,
    /// SKF fragments among them.
    pub fragments_to_gateway: usize,
    pub fragments_to_client: usize,
    /// Largest datagram each way.
    pub max_to_gateway: usize,
    pub max_to_client: usize,
    /// Stateless IKE_SA_INIT answers (COOKIE, INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN).
    pub stateless_replies: usize,
    /// Client datagrams sent without UDP encapsulation after IKE_SA_INIT.
    pub late_plain_to_gateway: usize,
}

pub(super) struct Pair {
    pub now: Instant,
    pub responder_cfg: Arc<ResponderConfig>,
    pub responder: Option<Box<IkeResponder>>,
    pub initiator: IkeInitiator,
    pub link: Link,
    /// Set: the gateway is under load and demands a COOKIE.
    pub cookie_secret: Option<[u8; 32]>,
    /// Answer Authenticated with accept (the driver's usual answer).
    pub auto_accept: bool,
    pub assignment: IkeAssignment,
    rng: SeededEntropy,
    to_gateway: Queue,
    to_client: Queue,
    pub stats: Stats,
    pub gateway_events: Vec<IkeEvent>,
    pub client_events: Vec<InitiatorEvent>,
    /// Installed CHILD SAs by our inbound SPI, newest last (what each driver's data path
    /// would hold).
    pub client_sas: Vec<(u32, EspSa)>,
    pub gateway_sas: Vec<(u32, EspSa)>,
    /// The gateway SA it sends on: the newest one the client has used (RFC 7296 2.8: the
    /// responder of a rekey switches when traffic arrives on the new SA), else the newest.
    pub gateway_out: Option<u32>,
    /// SPI pairs the gateway's driver routes to the session, and its first SPIi (IKE_SA_INIT
    /// retransmissions).
    pub gateway_routes: Vec<(u64, u64)>,
    gateway_init_spi: Option<u64>,
    gateway_seed: u64,
    /// Every IKE datagram sent, in order.
    pub sent: Vec<Sent>,
    /// Reasons of IKE_SA_INIT requests the gateway refused statelessly.
    pub init_refusals: Vec<String>,
    /// The gateway's PSK throttle (shared between pairs by the tests that set it).
    pub psk_throttle: Option<Arc<crate::ikev2::psk_throttle::PskThrottle>>,
    /// With `offload` in the responder's config: how long an IKE_AUTH check takes to come
    /// back from the "handshake thread", the one out and when it is due, and how many ran.
    pub auth_job_delay: Duration,
    auth_job: Option<(Instant, crate::ikev2::responder::AuthJob)>,
    pub auth_jobs_run: usize,
}

/// The client's address as the gateway sees it: port 500 traffic from one port, UDP 4500
/// (NAT-T) from another, as behind a NAT.
pub(super) fn client_addr(nat_t: bool) -> SocketAddr {
    let port = if nat_t { 4500 } else { 50_000 };
    SocketAddr::new("192.0.2.10".parse().unwrap(), port)
}

pub(super) fn gateway_addr() -> SocketAddr {
    SocketAddr::new(GATEWAY_IP.parse().unwrap(), 500)
}

impl Pair {
    pub fn new() -> Self {
        let (rc, ic) = default_configs();
        Self::with(rc, ic)
    }

    pub fn with(rc: ResponderConfig, ic: InitiatorConfig) -> Self {
        Self::with_seeds(rc, ic, 1, 2)
    }

    /// Like [`Pair::with`], with the seeds of the client's and the gateway's entropy (their
    /// SPIs and nonces).
    pub fn with_seeds(rc: ResponderConfig, ic: InitiatorConfig, client: u64, gateway: u64) -> Self {
        // The virtual clock needs some origin; only differences from it matter.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let initiator = IkeInitiator::new(
            Arc::new(ic),
            Box::new(SeededEntropy::new(client)),
            now,
            gateway_addr(),
        );
        Pair {
            now,
            responder_cfg: Arc::new(rc),
            responder: None,
            initiator,
            link: Link::default(),
            cookie_secret: None,
            auto_accept: true,
            assignment: assignment(),
            rng: SeededEntropy::new(99),
            to_gateway: Queue::default(),
            to_client: Queue::default(),
            stats: Stats::default(),
            gateway_events: vec![],
            client_events: vec![],
            client_sas: vec![],
            gateway_sas: vec![],
            gateway_out: None,
            gateway_routes: vec![],
            gateway_init_spi: None,
            gateway_seed: gateway,
            sent: vec![],
            init_refusals: vec![],
            psk_throttle: None,
            auth_job_delay: Duration::ZERO,
            auth_job: None,
            auth_jobs_run: 0,
        }
    }

    /// Reseeds the link's randomness (loss, reordering, duplication).
    pub fn seed(&mut self, seed: u64) {
        self.rng = SeededEntropy::new(seed);
    }

    fn roll(&mut self, percent: u64) -> bool {
        percent > 0 && self.rng.next_u64() % 100 < percent
    }

    fn jitter(&mut self) -> Duration {
        let max = self.link.reorder_delay.as_micros().max(1) as u64;
        Duration::from_micros(self.rng.next_u64() % max)
    }

    fn transmit(&mut self, to_gateway: bool, nat_t: bool, d: Vec<u8>) {
        if let Ok(header) = IkeHeader::parse_prefix(&d) {
            self.sent.push(Sent { to_gateway, header });
        }
        let fragment =
            IkeHeader::parse_prefix(&d).is_ok_and(|h| h.next_payload == payload_type::SKF);
        if to_gateway {
            self.stats.to_gateway += 1;
            self.stats.max_to_gateway = self.stats.max_to_gateway.max(d.len());
            self.stats.fragments_to_gateway += usize::from(fragment);
        } else {
            self.stats.to_client += 1;
            self.stats.max_to_client = self.stats.max_to_client.max(d.len());
            self.stats.fragments_to_client += usize::from(fragment);
        }
        let blocked = if to_gateway {
            self.link.block_to_gateway
        } else {
            self.link.block_to_client
        };
        if blocked || self.roll(self.link.loss_percent) {
            return;
        }
        let mut at = self.now + self.link.latency;
        if self.roll(self.link.reorder_percent) {
            at += self.jitter();
        }
        if self.roll(self.link.dup_percent) {
            let copy_at = self.now + self.link.latency + self.jitter();
            self.queue(to_gateway).push((copy_at, nat_t, d.clone()));
        }
        self.queue(to_gateway).push((at, nat_t, d));
    }

    fn queue(&mut self, to_gateway: bool) -> &mut Queue {
        if to_gateway {
            &mut self.to_gateway
        } else {
            &mut self.to_client
        }
    }

    /// Moves everything that can move at `now`.
    pub fn drive(&mut self) {
        loop {
            let mut progress = false;
            while let Some(t) = self.initiator.poll_transmit() {
                progress = true;
                if !t.nat_t && self.initiator.suite().is_some() {
                    self.stats.late_plain_to_gateway += 1;
                }
                self.transmit(true, t.nat_t, t.data);
            }
            while let Some(e) = self.initiator.poll_event() {
                progress = true;
                // The data path takes the SA; the log keeps the event with a stand-in.
                let e = match e {
                    InitiatorEvent::Connected {
                        address,
                        dns,
                        dns_domains,
                        subnets,
                        address6,
                        subnets6,
                        our_spi,
                        peer_spi,
                        cipher,
                        sa,
                    } => {
                        self.client_sas.push((our_spi, *sa));
                        InitiatorEvent::Connected {
                            address,
                            dns,
                            dns_domains,
                            subnets,
                            address6,
                            subnets6,
                            our_spi,
                            peer_spi,
                            cipher,
                            sa: Box::new(placeholder_sa(cipher)),
                        }
                    }
                    InitiatorEvent::ChildRekeyed {
                        old_our_spi,
                        our_spi,
                        peer_spi,
                        cipher,
                        sa,
                    } => {
                        self.client_sas.push((our_spi, *sa));
                        InitiatorEvent::ChildRekeyed {
                            old_our_spi,
                            our_spi,
                            peer_spi,
                            cipher,
                            sa: Box::new(placeholder_sa(cipher)),
                        }
                    }
                    InitiatorEvent::ChildDeleted { our_spi } => {
                        self.client_sas.retain(|(s, _)| *s != our_spi);
                        InitiatorEvent::ChildDeleted { our_spi }
                    }
                    other => other,
                };
                self.client_events.push(e);
            }
            if let Some(r) = self.responder.as_mut()
                && let Some(j) = r.poll_auth_job()
            {
                progress = true;
                assert!(self.auth_job.is_none(), "a second IKE_AUTH job");
                self.auth_job = Some((self.now + self.auth_job_delay, j));
            }
            if self
                .auth_job
                .as_ref()
                .is_some_and(|(at, _)| *at <= self.now)
                && let Some((_, j)) = self.auth_job.take()
            {
                progress = true;
                self.auth_jobs_run += 1;
                // On another thread, as in the gateway.
                let done = std::thread::scope(|s| s.spawn(|| j.run()).join())
                    .expect("the IKE_AUTH job panicked");
                if let Some(r) = self.responder.as_mut() {
                    r.auth_job_done(self.now, done);
                }
            }
            while let Some(r) = self.responder.as_mut()
                && let Some(t) = r.poll_transmit()
            {
                progress = true;
                self.transmit(false, t.nat_t, t.data);
            }
            while let Some(r) = self.responder.as_mut()
                && let Some(e) = r.poll_event()
            {
                progress = true;
                match &e {
                    IkeEvent::Authenticated { .. } if self.auto_accept => {
                        r.accept(self.now, self.assignment.clone())
                    }
                    IkeEvent::SiteAuthenticated { .. } if self.auto_accept => {
                        r.accept_site(self.now)
                    }
                    IkeEvent::ChildDown { our_spi } => {
                        self.gateway_sas.retain(|(s, _)| s != our_spi);
                        if self.gateway_out == Some(*our_spi) {
                            self.gateway_out = self.gateway_sas.last().map(|(s, _)| *s);
                        }
                    }
                    IkeEvent::IkeRekeyed { old, new } => {
                        assert!(
                            self.gateway_routes.contains(old),
                            "rekey of unrouted {old:x?}"
                        );
                        assert_eq!(r.spis(), *new);
                        self.gateway_routes.push(*new);
                    }
                    IkeEvent::OldIkeSaGone { spis } => {
                        assert_ne!(r.spis(), *spis, "the current SA is not old");
                        let before = self.gateway_routes.len();
                        self.gateway_routes.retain(|s| s != spis);
                        assert_eq!(
                            self.gateway_routes.len() + 1,
                            before,
                            "{spis:x?} gone twice"
                        );
                    }
                    IkeEvent::Closed(_) => {
                        // Old pairs were reported gone before Closed: only the current one
                        // is left.
                        assert_eq!(self.gateway_routes, vec![r.spis()]);
                        self.gateway_routes.clear();
                    }
                    _ => {}
                }
                let e = match e {
                    IkeEvent::ChildUp {
                        our_spi,
                        peer_spi,
                        cipher,
                        sa,
                        rekey_of,
                    } => {
                        self.gateway_sas.push((our_spi, *sa));
                        if rekey_of.is_none() {
                            self.gateway_out = Some(our_spi);
                        }
                        IkeEvent::ChildUp {
                            our_spi,
                            peer_spi,
                            cipher,
                            sa: Box::new(placeholder_sa(cipher)),
                            rekey_of,
                        }
                    }
                    other => other,
                };
                self.gateway_events.push(e);
            }
            while let Some((nat_t, d)) = self.to_gateway.pop_due(self.now) {
                progress = true;
                self.deliver_to_gateway(nat_t, &d);
            }
            while let Some((_, d)) = self.to_client.pop_due(self.now) {
                progress = true;
                self.initiator.handle_message(self.now, &d);
            }
            if !progress {
                break;
            }
        }
    }

    /// What the gateway's driver does with a datagram from the client.
    fn deliver_to_gateway(&mut self, nat_t: bool, d: &[u8]) {
        let Ok(h) = IkeHeader::parse_prefix(d) else {
            return;
        };
        let from = client_addr(nat_t);
        let routed = self
            .gateway_routes
            .contains(&(h.initiator_spi, h.responder_spi))
            || (h.responder_spi == 0 && self.gateway_init_spi == Some(h.initiator_spi));
        if routed && let Some(r) = self.responder.as_mut() {
            r.handle_message(self.now, from, nat_t, d);
            return;
        }
        if h.responder_spi != 0 || h.exchange != ExchangeType::IKE_SA_INIT {
            return;
        }
        match respond_to_init(
            self.responder_cfg.clone(),
            Box::new(SeededEntropy::new(self.gateway_seed)),
            self.now,
            from,
            nat_t,
            d,
            self.cookie_secret.as_ref(),
        ) {
            InitOutcome::Reply(b) => {
                self.stats.stateless_replies += 1;
                self.transmit(false, nat_t, b);
            }
            InitOutcome::Refused { reply, reason } => {
                self.stats.stateless_replies += 1;
                self.init_refusals.push(reason);
                self.transmit(false, nat_t, reply);
            }
            InitOutcome::Session(mut s) => {
                if let Some(t) = &self.psk_throttle {
                    s.set_psk_throttle(t.clone());
                }
                self.gateway_routes = vec![s.spis()];
                self.gateway_init_spi = Some(h.initiator_spi);
                self.responder = Some(s);
            }
            InitOutcome::Drop(_) | InitOutcome::Throttled(_) => {}
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        [
            self.initiator.poll_timeout(),
            self.responder.as_ref().and_then(|r| r.poll_timeout()),
            self.to_gateway.next(),
            self.to_client.next(),
            self.auth_job.as_ref().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs until `done` holds (true) or `limit` of virtual time passed (false).
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let end = self.now + limit;
        let mut spins = 0u32;
        loop {
            self.drive();
            if done(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            let next = self.next_wakeup().map_or(end, |t| t.min(end));
            if next <= self.now {
                spins += 1;
                assert!(
                    spins < 10_000,
                    "timer stuck: client {:?} gateway {:?} (now {:?})",
                    self.initiator.poll_timeout(),
                    self.responder.as_ref().and_then(|r| r.poll_timeout()),
                    self.now
                );
            } else {
                spins = 0;
                self.now = next;
            }
            self.initiator.handle_timeout(self.now);
            if let Some(r) = self.responder.as_mut() {
                r.handle_timeout(self.now);
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    /// Runs the handshake to the end and asserts the tunnel is up on both sides.
    pub fn connect(&mut self) {
        let up = self.run_until(Duration::from_secs(120), |p| {
            p.initiator.is_established() && !p.gateway_sas.is_empty()
        });
        assert!(
            up,
            "no tunnel: client {:?} gateway {:?}",
            self.client_events, self.gateway_events
        );
    }

    pub fn client_connected(&self) -> Option<&InitiatorEvent> {
        self.client_events
            .iter()
            .find(|e| matches!(e, InitiatorEvent::Connected { .. }))
    }

    pub fn client_closed(&self) -> Option<&str> {
        self.client_events.iter().find_map(|e| match e {
            InitiatorEvent::Closed(r) => Some(r.as_str()),
            _ => None,
        })
    }

    pub fn client_auth_failed(&self) -> Option<&str> {
        self.client_events.iter().find_map(|e| match e {
            InitiatorEvent::AuthFailed(r) => Some(r.as_str()),
            _ => None,
        })
    }

    pub fn gateway_closed(&self) -> Option<&str> {
        self.gateway_events.iter().find_map(|e| match e {
            IkeEvent::Closed(r) => Some(r.as_str()),
            _ => None,
        })
    }

    pub fn gateway_refused(&self) -> Option<&str> {
        self.gateway_events.iter().find_map(|e| match e {
            IkeEvent::Refused { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
    }

    /// An IPv4 packet from the client's virtual address, through the client's newest CHILD
    /// SA, opened by the gateway SA its SPI names. The inner packet as the gateway got it.
    pub fn client_to_gateway(&mut self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let inner = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], payload);
        let (_, tx) = self.client_sas.last_mut().ok_or("client has no SA")?;
        let mut buf = vec![0u8; 2048];
        let esp = tx
            .outbound
            .encrypt(&inner, &mut buf)
            .map_err(|e| e.to_string())?
            .to_vec();
        let got = open(&mut self.gateway_sas, &esp)?;
        self.gateway_out = crate::esp::EspInbound::packet_spi(&esp);
        Ok(got)
    }

    /// A ping: client to gateway on the client's newest SA, the answer on the SA the gateway
    /// sends on ([`Pair::gateway_out`]).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), String> {
        let up = self.client_to_gateway(payload)?;
        if up[20..] != *payload {
            return Err("request garbled".into());
        }
        let down = self.gateway_to_client(self.gateway_out, payload)?;
        if down[20..] != *payload {
            return Err("reply garbled".into());
        }
        Ok(())
    }

    /// The reverse direction, through the gateway SA with our inbound SPI `via` (its newest
    /// one when `None`).
    pub fn gateway_to_client(
        &mut self,
        via: Option<u32>,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let inner = ipv4_packet([10, 9, 0, 1], [10, 9, 0, 2], payload);
        let (_, tx) = match via {
            Some(spi) => self
                .gateway_sas
                .iter_mut()
                .find(|(s, _)| *s == spi)
                .ok_or("no such gateway SA")?,
            None => self.gateway_sas.last_mut().ok_or("gateway has no SA")?,
        };
        let mut buf = vec![0u8; 2048];
        let esp = tx
            .outbound
            .encrypt(&inner, &mut buf)
            .map_err(|e| e.to_string())?
            .to_vec();
        open(&mut self.client_sas, &esp)
    }
}

/// An SA with all-zero keys, standing in for one the data path took.
fn placeholder_sa(cipher: EspCipher) -> EspSa {
    let sizes = cipher.key_sizes();
    let keys = ChildSaKeys {
        encr_i: vec![0; sizes.encr],
        integ_i: vec![0; sizes.integ],
        encr_r: vec![0; sizes.encr],
        integ_r: vec![0; sizes.integ],
    };
    EspSa::from_child_keys(cipher, &keys, true, 1, 1).unwrap()
}

fn open(sas: &mut [(u32, EspSa)], esp: &[u8]) -> Result<Vec<u8>, String> {
    let spi = crate::esp::EspInbound::packet_spi(esp).ok_or("short ESP")?;
    let (_, rx) = sas
        .iter_mut()
        .find(|(s, _)| *s == spi)
        .ok_or_else(|| format!("no inbound SA {spi:#010x}"))?;
    let mut plain = vec![0u8; 2048];
    let got = rx
        .inbound
        .decrypt(esp, &mut plain)
        .map_err(|e| e.to_string())?;
    Ok(got.packet.to_vec())
}

/// A minimal IPv4 header (protocol 253, experimental) around `payload`.
pub(super) fn ipv4_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        253,
        0,
        0,
    ];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}
