//! A gateway session and a client session talking in memory on a virtual clock, with a
//! lossy/reordering link between them (the model of quinn's `Pair`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use super::DataOutcome;
use super::client::{ClientConfig, ClientEvent, ClientSession};
use super::data::Cipher;
use super::server::{Assignment, ServerConfig, ServerEvent, ServerSession};
use super::tls::{client_config, server_config};
use crate::entropy::SeededEntropy;
use crate::wire::openvpn::{MAX_CONTROL_PACKET, Packet};

struct Pki {
    ca: CertificateDer<'static>,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    eku: ExtendedKeyUsagePurpose,
    san: Option<&str>,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(san.map(|s| vec![s.to_owned()]).unwrap_or_default()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![eku];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = p.signed_by(&key, issuer).unwrap();
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "Test CA");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = p.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(p, ca_key);
    Pki {
        ca: ca.der().clone(),
        server: leaf(
            &issuer,
            "gateway",
            ExtendedKeyUsagePurpose::ServerAuth,
            Some("vpn.test"),
        ),
        client: leaf(&issuer, "alice", ExtendedKeyUsagePurpose::ClientAuth, None),
    }
}

#[derive(Debug)]
struct FixedTime(UnixTime);
impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

fn configs(pki: &Pki, tls_ekm: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Wall-clock time for certificate validity only; the protocol clock is virtual.
    let time = Arc::new(FixedTime(UnixTime::since_unix_epoch(Duration::from_secs(
        1_800_000_000,
    ))));
    let server_tls = server_config(
        provider.clone(),
        time.clone(),
        std::slice::from_ref(&pki.ca),
        vec![],
        vec![pki.server.0.clone()],
        pki.server.1.clone_key(),
    )
    .unwrap();
    let client_tls = client_config(
        provider,
        time,
        std::slice::from_ref(&pki.ca),
        vec![pki.client.0.clone()],
        pki.client.1.clone_key(),
    )
    .unwrap();
    let mut sc = ServerConfig::new(server_tls);
    sc.tls_ekm = tls_ekm;
    let cc = ClientConfig::new(client_tls, ServerName::try_from("vpn.test").unwrap());
    (Arc::new(sc), Arc::new(cc))
}

/// The link: each direction a queue of (deliver_at, datagram).
struct Pair {
    now: Instant,
    server_cfg: Arc<ServerConfig>,
    server: Option<ServerSession>,
    client: ClientSession,
    to_server: VecDeque<(Instant, Vec<u8>)>,
    to_client: VecDeque<(Instant, Vec<u8>)>,
    latency: Duration,
    /// Percentage of datagrams lost (seeded, deterministic).
    loss_percent: u64,
    loss_rng: SeededEntropy,
    sent: usize,
    server_events: Vec<ServerEvent>,
    client_events: Vec<ClientEvent>,
    /// Packets that came out of the tunnel on the server's side.
    server_rx: Vec<Vec<u8>>,
    client_rx: Vec<Vec<u8>>,
    max_datagram: usize,
}

impl Pair {
    fn new(tls_ekm: bool) -> Self {
        let pki = pki();
        let (sc, cc) = configs(&pki, tls_ekm);
        // The virtual clock needs some origin; only differences from it matter.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let client = ClientSession::new(cc, Box::new(SeededEntropy::new(1)), now).unwrap();
        Pair {
            now,
            server_cfg: sc,
            server: None,
            client,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            latency: Duration::from_millis(10),
            loss_percent: 0,
            loss_rng: SeededEntropy::new(99),
            sent: 0,
            server_events: vec![],
            client_events: vec![],
            server_rx: vec![],
            client_rx: vec![],
            max_datagram: 0,
        }
    }

    fn lose(&mut self) -> bool {
        use crate::entropy::Entropy;
        self.sent += 1;
        self.loss_rng.next_u64() % 100 < self.loss_percent
    }

    /// Moves everything that can move at `now`, answering Authenticated with accept.
    fn drive(&mut self) {
        let mut buf = Vec::new();
        loop {
            let mut progress = false;
            while self.client.poll_transmit(self.now, &mut buf) {
                progress = true;
                self.max_datagram = self.max_datagram.max(buf.len());
                if !self.lose() {
                    self.to_server
                        .push_back((self.now + self.latency, buf.clone()));
                }
            }
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
            if let Some(s) = self.server.as_mut() {
                while s.poll_transmit(self.now, &mut buf) {
                    progress = true;
                    self.max_datagram = self.max_datagram.max(buf.len());
                    self.sent += 1;
                    let lost = {
                        use crate::entropy::Entropy;
                        self.loss_rng.next_u64() % 100 < self.loss_percent
                    };
                    if !lost {
                        self.to_client
                            .push_back((self.now + self.latency, buf.clone()));
                    }
                }
                while let Some(e) = s.poll_event() {
                    progress = true;
                    if let ServerEvent::Authenticated { .. } = &e {
                        s.accept(
                            self.now,
                            Assignment {
                                address: "172.16.201.2".parse().unwrap(),
                                subnet: "172.16.201.0/24".parse().unwrap(),
                                gateway: "172.16.201.1".parse().unwrap(),
                                routes: vec!["10.1.0.0/16".parse().unwrap()],
                                dns: vec![],
                                redirect_gateway: false,
                            },
                        );
                    }
                    self.server_events.push(e);
                }
            }
            // Deliver what is due.
            while self.to_server.front().is_some_and(|(t, _)| *t <= self.now) {
                let (_, d) = self.to_server.pop_front().unwrap();
                progress = true;
                self.deliver_to_server(&d);
            }
            while self.to_client.front().is_some_and(|(t, _)| *t <= self.now) {
                let (_, d) = self.to_client.pop_front().unwrap();
                progress = true;
                self.deliver_to_client(&d);
            }
            if !progress {
                break;
            }
        }
    }

    fn deliver_to_server(&mut self, d: &[u8]) {
        let mut out = Vec::new();
        match Packet::parse(d).unwrap() {
            Packet::Control(c) => match self.server.as_mut() {
                Some(s) => s.handle_control(self.now, &c),
                None => {
                    self.server = Some(
                        ServerSession::new(
                            self.server_cfg.clone(),
                            Box::new(SeededEntropy::new(2)),
                            self.now,
                            7,
                            &c,
                        )
                        .unwrap(),
                    )
                }
            },
            Packet::Data(p) => {
                let s = self.server.as_mut().unwrap();
                if let Ok(DataOutcome::Packet(r)) = s.handle_data(self.now, d, p.key_id, &mut out) {
                    self.server_rx.push(out[r].to_vec());
                }
            }
        }
    }

    fn deliver_to_client(&mut self, d: &[u8]) {
        let mut out = Vec::new();
        match Packet::parse(d).unwrap() {
            Packet::Control(c) => self.client.handle_control(self.now, &c),
            Packet::Data(p) => {
                if let Ok(DataOutcome::Packet(r)) =
                    self.client.handle_data(self.now, d, p.key_id, &mut out)
                {
                    self.client_rx.push(out[r].to_vec());
                }
            }
        }
    }

    /// Advances the virtual clock to the next event and drives; returns false when idle.
    fn step(&mut self) -> bool {
        self.drive();
        let mut next = [
            self.client.poll_timeout(self.now),
            self.server.as_ref().and_then(|s| s.poll_timeout(self.now)),
            self.to_server.front().map(|(t, _)| *t),
            self.to_client.front().map(|(t, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(t) = next.take() {
            if t > self.now {
                self.now = t;
            }
            self.client.handle_timeout(self.now);
            if let Some(s) = self.server.as_mut() {
                s.handle_timeout(self.now);
            }
            true
        } else {
            false
        }
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            if !self.step() {
                break;
            }
        }
        done(self)
    }

    fn ping_through(&mut self) {
        let mut buf = Vec::new();
        let up = ip_packet([172, 16, 201, 2], [10, 1, 0, 10], self.sent as u8);
        self.client.encrypt(self.now, &up, &mut buf).unwrap();
        self.to_server
            .push_back((self.now + self.latency, buf.clone()));
        let down = ip_packet([10, 1, 0, 10], [172, 16, 201, 2], self.sent as u8);
        self.server
            .as_mut()
            .unwrap()
            .encrypt(self.now, &down, &mut buf)
            .unwrap();
        self.to_client.push_back((self.now + self.latency, buf));
    }
}

fn ip_packet(src: [u8; 4], dst: [u8; 4], tag: u8) -> Vec<u8> {
    let mut p = vec![0u8; 60];
    p[0] = 0x45;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[59] = tag;
    p
}

fn connected(p: &Pair) -> bool {
    p.client.is_connected() && p.server.as_ref().is_some_and(|s| s.is_established())
}

#[test]
fn handshake_with_tls_ekm_and_data_both_ways() {
    let mut p = Pair::new(true);
    assert!(p.run_until(Duration::from_secs(10), connected));
    let reply = p.client.push_reply().unwrap().clone();
    assert_eq!(reply.address.to_string(), "172.16.201.2");
    assert!(reply.tls_ekm);
    assert_eq!(reply.cipher, Cipher::Aes256Gcm);
    assert!(p.max_datagram <= MAX_CONTROL_PACKET, "{}", p.max_datagram);
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Established { tls_ekm: true, .. }))
    );
    assert!(matches!(
        p.server_events.first(),
        Some(ServerEvent::Authenticated { client, .. }) if client == "alice"
    ));
    p.ping_through();
    p.run_until(Duration::from_secs(1), |p| {
        !p.server_rx.is_empty() && !p.client_rx.is_empty()
    });
    assert_eq!(p.server_rx.len(), 1);
    assert_eq!(p.client_rx.len(), 1);
    assert_eq!(&p.server_rx[0][16..20], &[10, 1, 0, 10]);
}

#[test]
fn handshake_with_prf_keys() {
    let mut p = Pair::new(false);
    assert!(p.run_until(Duration::from_secs(10), connected));
    assert!(!p.client.push_reply().unwrap().tls_ekm);
    p.ping_through();
    p.run_until(Duration::from_secs(1), |p| {
        !p.server_rx.is_empty() && !p.client_rx.is_empty()
    });
    assert_eq!((p.server_rx.len(), p.client_rx.len()), (1, 1));
}

#[test]
fn handshake_survives_loss() {
    for (seed, loss) in [(1, 10), (2, 20), (3, 30), (4, 40), (5, 30), (6, 30)] {
        let mut p = Pair::new(true);
        p.loss_percent = loss;
        p.loss_rng = SeededEntropy::new(seed);
        assert!(
            p.run_until(Duration::from_secs(60), connected),
            "loss={loss}% seed={seed} {:?} {:?} sent={}",
            p.server_events,
            p.client_events,
            p.sent
        );
    }
}

#[test]
fn renegotiation_by_server_keeps_traffic_flowing() {
    let mut p = Pair::new(true);
    assert!(p.run_until(Duration::from_secs(10), connected));
    p.server.as_mut().unwrap().renegotiate(p.now);
    assert!(p.run_until(Duration::from_secs(10), |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Rekeyed { key_id: 1 }))
            && p.client_events
                .iter()
                .any(|e| matches!(e, ClientEvent::Rekeyed { key_id: 1 }))
    }));
    for _ in 0..3 {
        p.ping_through();
        p.run_until(Duration::from_millis(50), |_| false);
    }
    assert_eq!((p.server_rx.len(), p.client_rx.len()), (3, 3));
}

#[test]
fn renegotiation_by_client() {
    let mut p = Pair::new(false);
    assert!(p.run_until(Duration::from_secs(10), connected));
    p.client.renegotiate(p.now);
    assert!(p.run_until(Duration::from_secs(10), |p| {
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Rekeyed { key_id: 1 }))
    }));
    p.ping_through();
    p.run_until(Duration::from_millis(50), |_| false);
    assert_eq!((p.server_rx.len(), p.client_rx.len()), (1, 1));
}

#[test]
fn keepalive_holds_an_idle_tunnel_and_exit_closes() {
    let mut p = Pair::new(true);
    assert!(p.run_until(Duration::from_secs(10), connected));
    // Five minutes idle: pings keep both ends alive.
    p.run_until(Duration::from_secs(300), |_| false);
    assert!(connected(&p), "{:?} {:?}", p.server_events, p.client_events);
    p.client.disconnect(p.now);
    assert!(p.run_until(Duration::from_secs(5), |p| {
        p.server_events.iter().any(|e| {
            matches!(
                e,
                ServerEvent::Closed(super::server::CloseReason::ClientExit)
            )
        })
    }));
}
