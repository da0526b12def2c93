//! IKEv2 targets: the gateway's responder and the client's initiator, each fed arbitrary
//! messages between (or instead of) an honest peer's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;

use super::openvpn::{CA, CLIENT, CLIENT_KEY, FixedTime, SERVER, SERVER_KEY, Side};
use super::{Records, origin};
use crate::entropy::SeededEntropy;
use crate::ikev2::crypto::SigningKey;
use crate::ikev2::initiator::{
    DEFAULT_CHILD_LIFETIME, DEFAULT_IKE_LIFETIME, IkeInitiator, InitiatorConfig,
};
use crate::ikev2::peer_cert::PeerTrust;
use crate::ikev2::proposal::Policy;
use crate::ikev2::responder::{
    DEFAULT_HARD_LIFETIME, IkeAssignment, IkeEvent, IkeResponder, InitOutcome, ResponderConfig,
    respond_to_init,
};
use crate::wire::ikev2::{ExchangeType, IkeHeader};

const GATEWAY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 500);
const CLIENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)), 500);

/// Most honest rounds in one pump.
const PUMP_ROUNDS: usize = 32;

/// ring takes its own generator for DH and signatures (it cannot take a seeded one), so the
/// IKE targets are deterministic only up to those values.
fn rng() -> Arc<ring::rand::SystemRandom> {
    #[allow(clippy::disallowed_methods)]
    Arc::new(ring::rand::SystemRandom::new())
}

fn spki_sha1(cert: &[u8]) -> Option<[u8; 20]> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, c.public_key().raw);
    d.as_ref().try_into().ok()
}

pub(super) fn configs() -> &'static (Arc<ResponderConfig>, Arc<InitiatorConfig>) {
    static CONFIGS: OnceLock<(Arc<ResponderConfig>, Arc<InitiatorConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let trust = || PeerTrust {
            roots: vec![CertificateDer::from(CA)],
            crls: Vec::new(),
        };
        let key = |pk8| {
            Arc::new(SigningKey::from_pkcs8(pk8, &*rng()).expect("the fuzzing keys are valid"))
        };
        let responder = ResponderConfig {
            policy: Policy::default(),
            trust: trust(),
            time: Arc::new(FixedTime),
            cert_chain: vec![CertificateDer::from(SERVER)],
            key: key(SERVER_KEY),
            rng: rng(),
            ca_hashes: spki_sha1(CA).into_iter().collect(),
            dpd_interval: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(30),
            fragment_size: 1280,
            hard_lifetime: DEFAULT_HARD_LIFETIME,
            sites: Vec::new(),
            offload: false,
        };
        let initiator = InitiatorConfig {
            policy: Policy::default(),
            trust: trust(),
            time: Arc::new(FixedTime),
            cert_chain: vec![CertificateDer::from(CLIENT)],
            key: key(CLIENT_KEY),
            rng: rng(),
            remote_id: None,
            dpd_interval: Duration::from_secs(30),
            fragment_size: 1280,
            ike_lifetime: DEFAULT_IKE_LIFETIME,
            request_ipv6: false,
            site: None,
            child_lifetime: DEFAULT_CHILD_LIFETIME,
        };
        (Arc::new(responder), Arc::new(initiator))
    })
}

fn assignment() -> IkeAssignment {
    IkeAssignment {
        address: Ipv4Addr::new(10, 9, 0, 2),
        dns: vec![IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1))],
        dns_domains: Vec::new(),
        subnets: Vec::new(),
        full_tunnel: false,
        ipv6: None,
    }
}

/// An initiator and a responder in memory, as the drivers would run them.
pub(crate) struct IkeDuo {
    now: Instant,
    initiator: IkeInitiator,
    responder: Option<Box<IkeResponder>>,
    /// Every message the honest pump delivered, with its direction (for seed corpora).
    pub(crate) log: Vec<(Side, Vec<u8>)>,
}

impl IkeDuo {
    pub(crate) fn new() -> Self {
        let now = origin();
        let initiator = IkeInitiator::new(
            configs().1.clone(),
            Box::new(SeededEntropy::new(1)),
            now,
            GATEWAY,
        );
        Self {
            now,
            initiator,
            responder: None,
            log: Vec::new(),
        }
    }

    /// What the gateway's driver does with a message from the client.
    pub(crate) fn deliver_to_server(&mut self, nat_t: bool, d: &[u8]) {
        let Ok(h) = IkeHeader::parse_prefix(d) else {
            return;
        };
        if let Some(r) = self.responder.as_mut() {
            r.handle_message(self.now, CLIENT_ADDR, nat_t, d);
        } else if h.responder_spi == 0
            && h.exchange == ExchangeType::IKE_SA_INIT
            && let InitOutcome::Session(r) = respond_to_init(
                configs().0.clone(),
                Box::new(SeededEntropy::new(2)),
                self.now,
                CLIENT_ADDR,
                nat_t,
                d,
                None,
            )
        {
            self.responder = Some(r);
        }
        self.server_events();
    }

    /// What the client's driver does with a message from the gateway.
    pub(crate) fn deliver_to_client(&mut self, d: &[u8]) {
        self.initiator.handle_message(self.now, d);
        while self.initiator.poll_event().is_some() {}
    }

    fn server_events(&mut self) {
        let Some(r) = self.responder.as_mut() else {
            return;
        };
        while let Some(e) = r.poll_event() {
            if let IkeEvent::Authenticated { .. } = e {
                r.accept(self.now, assignment());
            }
        }
    }

    /// Moves the honest traffic both ways until it stops (or [`PUMP_ROUNDS`]).
    pub(crate) fn pump(&mut self) {
        for _ in 0..PUMP_ROUNDS {
            let mut up = Vec::new();
            while let Some(t) = self.initiator.poll_transmit() {
                up.push((t.nat_t, t.data));
            }
            let mut down = Vec::new();
            while let Some(r) = self.responder.as_mut()
                && let Some(t) = r.poll_transmit()
            {
                down.push(t.data);
            }
            if up.is_empty() && down.is_empty() {
                break;
            }
            for (nat_t, d) in up {
                self.deliver_to_server(nat_t, &d);
                self.log.push((Side::Server, d));
            }
            for d in down {
                self.deliver_to_client(&d);
                self.log.push((Side::Client, d));
            }
        }
    }

    /// Advances the clock by `steps` seconds and runs both timers.
    pub(crate) fn tick(&mut self, steps: u8) {
        self.now += Duration::from_secs(u64::from(steps));
        self.initiator.handle_timeout(self.now);
        if let Some(r) = self.responder.as_mut() {
            r.handle_timeout(self.now);
        }
        self.server_events();
        while self.initiator.poll_event().is_some() {}
    }

    /// The client rekeys its CHILD SA (`ike`: its IKE SA).
    pub(crate) fn rekey(&mut self, ike: bool) {
        if ike {
            self.initiator.rekey_ike(self.now);
        } else {
            self.initiator.rekey_child(self.now);
        }
    }

    fn run(mut self, side: Side, data: &[u8]) {
        for (op, body) in Records::new(data) {
            match op % 5 {
                0 => match side {
                    Side::Server => self.deliver_to_server(op & 0x80 != 0, body),
                    Side::Client => self.deliver_to_client(body),
                },
                1 => self.tick(body.first().copied().unwrap_or(1)),
                2 => self.pump(),
                3 => self.rekey(op & 0x80 != 0),
                _ => {
                    if let Some(r) = self.responder.as_mut() {
                        r.delete(self.now, "fuzz");
                    }
                }
            }
        }
        self.pump();
    }
}

/// The gateway's IKEv2 responder: the fuzzer plays the client (records: 0 message to the
/// gateway, high bit = on port 4500; 1 clock in seconds; 2 honest exchange; 3 client
/// rekey, high bit = IKE SA; 4 gateway deletes).
pub fn ikev2_responder(data: &[u8]) {
    IkeDuo::new().run(Side::Server, data);
}

/// The client's IKEv2 initiator: the fuzzer plays the gateway (the same records as
/// [`ikev2_responder`], delivered to the initiator).
pub fn ikev2_initiator(data: &[u8]) {
    IkeDuo::new().run(Side::Client, data);
}
