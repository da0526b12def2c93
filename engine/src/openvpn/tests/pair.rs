//! The harness: a gateway session and a client session talking in memory on a virtual clock,
//! through a link that can lose, delay, reorder and duplicate datagrams (the model of quinn's
//! `Pair`). Everything random is seeded, so a failing seed replays exactly.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
    UnixTime,
};

use crate::entropy::{Entropy, SeededEntropy};
use crate::openvpn::DataOutcome;
use crate::openvpn::client::{ClientConfig, ClientEvent, ClientSession};
use crate::openvpn::server::{Assignment, ServerConfig, ServerEvent, ServerSession};
use crate::openvpn::tls::{client_config, server_config};
use crate::wire::openvpn::{Opcode, Packet};

/// "Now" for certificate validity (2027-01-15); the protocol clock is virtual and separate.
pub(super) const WALL_CLOCK_SECS: u64 = 1_800_000_000;

/// The peer-id the harness gives the client.
pub(super) const PEER_ID: u32 = 7;

pub(super) type Chain = (CertificateDer<'static>, PrivateKeyDer<'static>);

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

    /// Issues a leaf; `tweak` adjusts the parameters (validity, serial...) before signing.
    pub fn leaf(
        &self,
        cn: &str,
        eku: ExtendedKeyUsagePurpose,
        san: Option<&str>,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Chain {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(san.map(|s| vec![s.to_owned()]).unwrap_or_default()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        tweak(&mut p);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    pub fn client(&self, cn: &str) -> Chain {
        self.leaf(cn, ExtendedKeyUsagePurpose::ClientAuth, None, |_| {})
    }

    pub fn gateway(&self, san: &str) -> Chain {
        self.leaf(
            "gateway",
            ExtendedKeyUsagePurpose::ServerAuth,
            Some(san),
            |_| {},
        )
    }

    /// A CRL listing `serials` as revoked, valid around [`WALL_CLOCK_SECS`].
    pub fn crl(&self, serials: &[u64]) -> CertificateRevocationListDer<'static> {
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
        params.signed_by(&self.issuer).unwrap().der().clone()
    }
}

/// The default PKI: one CA, a gateway named vpn.test and a client named alice. Made once,
/// shared by every test (key generation dominates the cost of a handshake test otherwise).
pub(super) struct Pki {
    pub ca: Ca,
    pub server: Chain,
    pub client: Chain,
}

pub(super) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Ca::new("Test CA");
        let server = ca.gateway("vpn.test");
        let client = ca.client("alice");
        Pki { ca, server, client }
    })
}

#[derive(Debug)]
pub(super) struct FixedTime(UnixTime);
impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

pub(super) fn wall_clock() -> Arc<FixedTime> {
    Arc::new(FixedTime(UnixTime::since_unix_epoch(Duration::from_secs(
        WALL_CLOCK_SECS,
    ))))
}

/// A gateway trusting `ca` (with `crls`) and presenting `chain`.
pub(super) fn gateway_config(
    ca: &CertificateDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    chain: &Chain,
) -> ServerConfig {
    let tls = server_config(
        Arc::new(rustls::crypto::ring::default_provider()),
        wall_clock(),
        std::slice::from_ref(ca),
        crls,
        vec![chain.0.clone()],
        chain.1.clone_key(),
    )
    .unwrap();
    ServerConfig::new(tls)
}

/// A client trusting `ca`, presenting `chain` and dialling `name`.
pub(super) fn client_cfg(ca: &CertificateDer<'static>, chain: &Chain, name: &str) -> ClientConfig {
    let tls = client_config(
        Arc::new(rustls::crypto::ring::default_provider()),
        wall_clock(),
        std::slice::from_ref(ca),
        vec![chain.0.clone()],
        chain.1.clone_key(),
    )
    .unwrap();
    ClientConfig::new(tls, ServerName::try_from(name.to_owned()).unwrap())
}

/// Both ends with the default PKI.
pub(super) fn default_configs(tls_ekm: bool) -> (ServerConfig, ClientConfig) {
    let pki = pki();
    let mut sc = gateway_config(&pki.ca.cert, vec![], &pki.server);
    sc.tls_ekm = tls_ekm;
    (sc, client_cfg(&pki.ca.cert, &pki.client, "vpn.test"))
}

pub(super) fn assignment() -> Assignment {
    Assignment {
        address: "172.16.201.2".parse().unwrap(),
        subnet: "172.16.201.0/24".parse().unwrap(),
        gateway: "172.16.201.1".parse().unwrap(),
        routes: vec!["10.1.0.0/16".parse().unwrap()],
        dns: vec![],
        dns_domains: Vec::new(),
        redirect_gateway: false,
        ipv6: None,
    }
}

/// How the link treats datagrams (both directions). Percentages are per datagram.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub latency: Duration,
    pub loss_percent: u64,
    /// Datagrams held back by a random extra delay of up to `reorder_delay`, so later ones
    /// overtake them.
    pub reorder_percent: u64,
    pub reorder_delay: Duration,
    /// Datagrams delivered twice (the copy with its own random extra delay).
    pub dup_percent: u64,
    /// Drop everything the client sends (the client went silent).
    pub block_to_server: bool,
    /// Drop everything the gateway sends.
    pub block_to_client: bool,
    /// The client acknowledges nothing: its P_ACK_V1 are dropped and the ack lists of its
    /// other control packets removed (a misbehaving client).
    pub strip_client_acks: bool,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            latency: Duration::from_millis(10),
            loss_percent: 0,
            reorder_percent: 0,
            reorder_delay: Duration::from_millis(30),
            dup_percent: 0,
            block_to_server: false,
            block_to_client: false,
            strip_client_acks: false,
        }
    }
}

/// Datagrams in flight in one direction, ordered by delivery time (ties keep send order).
#[derive(Default)]
struct Queue(VecDeque<(Instant, Vec<u8>)>);

impl Queue {
    fn push(&mut self, at: Instant, d: Vec<u8>) {
        let i = self.0.partition_point(|(t, _)| *t <= at);
        self.0.insert(i, (at, d));
    }
    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.0.front().is_some_and(|(t, _)| *t <= now) {
            self.0.pop_front().map(|(_, d)| d)
        } else {
            None
        }
    }
    fn next(&self) -> Option<Instant> {
        self.0.front().map(|(t, _)| *t)
    }
}

pub(super) struct Pair {
    pub now: Instant,
    pub server_cfg: Arc<ServerConfig>,
    pub server: Option<ServerSession>,
    pub client: ClientSession,
    pub link: Link,
    rng: SeededEntropy,
    to_server: Queue,
    to_client: Queue,
    /// Datagrams put on the link (before loss).
    pub sent: usize,
    pub max_datagram: usize,
    /// Answer Authenticated with accept (the driver's usual answer).
    pub auto_accept: bool,
    pub server_events: Vec<ServerEvent>,
    pub client_events: Vec<ClientEvent>,
    /// IP packets that came out of the tunnel on each side.
    pub server_rx: Vec<Vec<u8>>,
    pub client_rx: Vec<Vec<u8>>,
    /// Data packets each side refused (rendered errors).
    pub server_data_errors: Vec<String>,
    pub client_data_errors: Vec<String>,
    /// The gateway's session id, learnt from its packets.
    pub server_sid: Option<u64>,
}

impl Pair {
    pub fn new(tls_ekm: bool) -> Self {
        let (sc, cc) = default_configs(tls_ekm);
        Self::with(sc, cc)
    }

    pub fn with(sc: ServerConfig, cc: ClientConfig) -> Self {
        // The virtual clock needs some origin; only differences from it matter.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let client =
            ClientSession::new(Arc::new(cc), Box::new(SeededEntropy::new(1)), now).unwrap();
        Pair {
            now,
            server_cfg: Arc::new(sc),
            server: None,
            client,
            link: Link::default(),
            rng: SeededEntropy::new(99),
            to_server: Queue::default(),
            to_client: Queue::default(),
            sent: 0,
            max_datagram: 0,
            auto_accept: true,
            server_events: vec![],
            client_events: vec![],
            server_rx: vec![],
            client_rx: vec![],
            server_data_errors: vec![],
            client_data_errors: vec![],
            server_sid: None,
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

    /// Puts a datagram on the link towards the gateway (`to_server`) or the client.
    pub fn transmit(&mut self, to_server: bool, d: Vec<u8>) {
        self.sent += 1;
        self.max_datagram = self.max_datagram.max(d.len());
        let blocked = if to_server {
            self.link.block_to_server
        } else {
            self.link.block_to_client
        };
        if blocked || self.roll(self.link.loss_percent) {
            return;
        }
        let d = if to_server && self.link.strip_client_acks {
            match Packet::parse(&d) {
                Ok(Packet::Control(c)) if c.opcode == Opcode::AckV1 => return,
                Ok(Packet::Control(mut c)) => {
                    c.acks = Default::default();
                    c.remote_session_id = None;
                    let mut out = Vec::new();
                    c.emit(&mut out);
                    out
                }
                _ => d,
            }
        } else {
            d
        };
        let mut at = self.now + self.link.latency;
        if self.roll(self.link.reorder_percent) {
            at += self.jitter();
        }
        if self.roll(self.link.dup_percent) {
            let copy_at = self.now + self.link.latency + self.jitter();
            self.queue(to_server).push(copy_at, d.clone());
        }
        self.queue(to_server).push(at, d);
    }

    fn queue(&mut self, to_server: bool) -> &mut Queue {
        if to_server {
            &mut self.to_server
        } else {
            &mut self.to_client
        }
    }

    /// Moves everything that can move at `now`.
    pub fn drive(&mut self) {
        let mut buf = Vec::new();
        loop {
            let mut progress = false;
            while self.client.poll_transmit(self.now, &mut buf) {
                progress = true;
                self.transmit(true, buf.clone());
            }
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
            while let Some(s) = self.server.as_mut()
                && s.poll_transmit(self.now, &mut buf)
            {
                progress = true;
                self.transmit(false, buf.clone());
            }
            while let Some(s) = self.server.as_mut()
                && let Some(e) = s.poll_event()
            {
                progress = true;
                if let ServerEvent::Authenticated { .. } = &e
                    && self.auto_accept
                {
                    s.accept(self.now, assignment());
                }
                self.server_events.push(e);
            }
            // Handshake jobs (a gateway with `offload_handshakes`) run on another thread, as
            // on the gateway's handshake threads.
            while let Some(s) = self.server.as_mut()
                && let Some((key_id, seq, job)) = s.poll_tls_job()
            {
                progress = true;
                let done = std::thread::scope(|t| t.spawn(|| job.run()).join())
                    .expect("a TLS job panicked");
                s.tls_job_done(self.now, key_id, seq, done);
            }
            while let Some(d) = self.to_server.pop_due(self.now) {
                progress = true;
                self.deliver_to_server(&d);
            }
            while let Some(d) = self.to_client.pop_due(self.now) {
                progress = true;
                self.deliver_to_client(&d);
            }
            if !progress {
                break;
            }
        }
    }

    /// What the gateway's driver does with a datagram from this client.
    pub fn deliver_to_server(&mut self, d: &[u8]) {
        let Ok(pkt) = Packet::parse(d) else {
            return;
        };
        match pkt {
            Packet::Control(c) => match self.server.as_mut() {
                Some(s) => s.handle_control(self.now, &c),
                // The driver only opens a session for a client's hard reset.
                None if c.opcode == Opcode::ControlHardResetClientV2 => {
                    self.server = Some(
                        ServerSession::new(
                            self.server_cfg.clone(),
                            Box::new(SeededEntropy::new(2)),
                            self.now,
                            PEER_ID,
                            &c,
                        )
                        .unwrap(),
                    )
                }
                None => {}
            },
            Packet::Data(p) => {
                let Some(s) = self.server.as_mut() else {
                    return;
                };
                let mut out = Vec::new();
                match s.handle_data(self.now, d, p.key_id, &mut out) {
                    Ok(DataOutcome::Packet(r)) => self.server_rx.push(out[r].to_vec()),
                    Ok(DataOutcome::Keepalive) => {}
                    Err(e) => self.server_data_errors.push(e.to_string()),
                }
            }
        }
    }

    fn deliver_to_client(&mut self, d: &[u8]) {
        let mut out = Vec::new();
        match Packet::parse(d).unwrap() {
            Packet::Control(c) => {
                self.server_sid = Some(c.session_id);
                self.client.handle_control(self.now, &c)
            }
            Packet::Data(p) => match self.client.handle_data(self.now, d, p.key_id, &mut out) {
                Ok(DataOutcome::Packet(r)) => self.client_rx.push(out[r].to_vec()),
                Ok(DataOutcome::Keepalive) => {}
                Err(e) => self.client_data_errors.push(e.to_string()),
            },
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        [
            self.client.poll_timeout(self.now),
            self.server.as_ref().and_then(|s| s.poll_timeout(self.now)),
            self.to_server.next(),
            self.to_client.next(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs until `done` holds (true) or `limit` of virtual time passed (false). When nothing
    /// is scheduled the clock jumps to the end.
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
                // A deadline that is already due and stays due would spin a real driver.
                spins += 1;
                assert!(
                    spins < 10_000,
                    "timer stuck at the same instant: client {:?} server {:?} (now {:?})",
                    self.client.poll_timeout(self.now),
                    self.server.as_ref().and_then(|s| s.poll_timeout(self.now)),
                    self.now
                );
            } else {
                spins = 0;
                self.now = next;
            }
            self.client.handle_timeout(self.now);
            if let Some(s) = self.server.as_mut() {
                s.handle_timeout(self.now);
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    pub fn connect(&mut self) {
        assert!(
            self.run_until(Duration::from_secs(10), connected),
            "no tunnel: {:?} {:?}",
            self.server_events,
            self.client_events
        );
    }

    pub fn server(&mut self) -> &mut ServerSession {
        self.server.as_mut().unwrap()
    }

    /// Sends a tagged IP packet client -> gateway through the tunnel.
    pub fn send_up(&mut self, tag: u32) {
        let mut buf = Vec::new();
        let up = ip_packet([172, 16, 201, 2], [10, 1, 0, 10], tag);
        self.client.encrypt(self.now, &up, &mut buf).unwrap();
        self.transmit(true, buf);
    }

    /// Sends a tagged IP packet gateway -> client through the tunnel.
    pub fn send_down(&mut self, tag: u32) {
        let mut buf = Vec::new();
        let down = ip_packet([10, 1, 0, 10], [172, 16, 201, 2], tag);
        let now = self.now;
        self.server().encrypt(now, &down, &mut buf).unwrap();
        self.transmit(false, buf);
    }

    pub fn ping_through(&mut self) {
        let tag = self.sent as u32;
        self.send_up(tag);
        self.send_down(tag);
    }
}

/// A minimal IPv4 packet carrying `tag` so received packets can be matched to sent ones.
pub(super) fn ip_packet(src: [u8; 4], dst: [u8; 4], tag: u32) -> Vec<u8> {
    let mut p = vec![0u8; 60];
    p[0] = 0x45;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[56..60].copy_from_slice(&tag.to_be_bytes());
    p
}

pub(super) fn tag_of(p: &[u8]) -> u32 {
    u32::from_be_bytes(p[56..60].try_into().unwrap())
}

pub(super) fn connected(p: &Pair) -> bool {
    p.client.is_connected() && p.server.as_ref().is_some_and(|s| s.is_established())
}
