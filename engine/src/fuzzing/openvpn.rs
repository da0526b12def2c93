//! OpenVPN targets: the gateway's session, the client's session and the control-channel
//! wrapper that authenticates a new peer's first packet.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use super::{Records, origin};
use crate::entropy::SeededEntropy;
use crate::openvpn::client::{ClientConfig, ClientSession};
use crate::openvpn::server::{Assignment, ServerConfig, ServerEvent, ServerSession};
use crate::openvpn::tls::{client_config, server_config};
use crate::openvpn::wrap::{
    ClientWrap, KeyDirection, ServerWrap, StaticKey, TlsAuthDigest, TlsCryptV2ClientKey,
    TlsCryptV2ServerKey, V2_METADATA_USER,
};
use crate::wire::openvpn::{Opcode, Packet};

/// Certificates valid 2026-12-03 to 2046-11-28 (ECDSA P-256), made once with openssl:
/// a CA, a gateway for `vpn.test` (serverAuth) and a client `alice` (clientAuth).
pub(super) const CA: &[u8] = include_bytes!("ca.der");
pub(super) const SERVER: &[u8] = include_bytes!("server.der");
pub(super) const SERVER_KEY: &[u8] = include_bytes!("server.key.der");
pub(super) const CLIENT: &[u8] = include_bytes!("client.der");
pub(super) const CLIENT_KEY: &[u8] = include_bytes!("client.key.der");

/// "Now" for certificate validity (2027-01-15).
pub(super) const WALL_CLOCK_SECS: u64 = 1_800_000_000;

/// The peer-id the gateway gives the client.
const PEER_ID: u32 = 7;

/// Most honest rounds in one pump (each round moves every queued datagram once).
const PUMP_ROUNDS: usize = 32;

#[derive(Debug)]
pub(super) struct FixedTime;
impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            WALL_CLOCK_SECS,
        )))
    }
}

/// Both ends' configurations, built once (certificate parsing is not what we fuzz).
pub(super) fn configs() -> &'static (Arc<ServerConfig>, Arc<ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = [CertificateDer::from(CA)];
        let server_tls = server_config(
            provider.clone(),
            Arc::new(FixedTime),
            &ca,
            Vec::new(),
            vec![CertificateDer::from(SERVER)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(SERVER_KEY)),
        )
        .expect("the fuzzing PKI makes a valid gateway TLS config");
        let client_tls = client_config(
            provider,
            Arc::new(FixedTime),
            &ca,
            vec![CertificateDer::from(CLIENT)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(CLIENT_KEY)),
        )
        .expect("the fuzzing PKI makes a valid client TLS config");
        let name = ServerName::try_from("vpn.test").expect("a valid DNS name");
        (
            Arc::new(ServerConfig::new(server_tls)),
            Arc::new(ClientConfig::new(client_tls, name)),
        )
    })
}

fn assignment() -> Assignment {
    use std::net::Ipv4Addr;
    Assignment {
        address: Ipv4Addr::new(172, 16, 201, 2),
        subnet: ipnet::Ipv4Net::new(Ipv4Addr::new(172, 16, 201, 0), 24).unwrap_or_default(),
        gateway: Ipv4Addr::new(172, 16, 201, 1),
        routes: Vec::new(),
        dns: Vec::new(),
        dns_domains: Vec::new(),
        redirect_gateway: false,
        ipv6: None,
    }
}

/// Which end the fuzzer plays against.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The fuzzer's datagrams go to the gateway's session.
    Server,
    /// The fuzzer's datagrams go to the client's session.
    Client,
}

/// A client and a gateway session in memory, as a driver would run them.
pub(crate) struct Duo {
    now: std::time::Instant,
    client: ClientSession,
    server: Option<ServerSession>,
    server_cfg: Arc<ServerConfig>,
    /// Every datagram the honest pump delivered, with its direction (for seed corpora).
    pub(crate) log: Vec<(Side, Vec<u8>)>,
}

impl Duo {
    pub(crate) fn new() -> Option<Self> {
        let (server_cfg, client_cfg) = configs();
        let now = origin();
        let client =
            ClientSession::new(client_cfg.clone(), Box::new(SeededEntropy::new(1)), now).ok()?;
        Some(Self {
            now,
            client,
            server: None,
            server_cfg: server_cfg.clone(),
            log: Vec::new(),
        })
    }

    /// What the gateway's driver does with a datagram from the client.
    pub(crate) fn deliver_to_server(&mut self, d: &[u8]) {
        let Ok(pkt) = Packet::parse(d) else {
            return;
        };
        match (pkt, self.server.as_mut()) {
            (Packet::Control(_), Some(s)) => {
                let _ = s.handle_control_datagram(self.now, d);
            }
            (Packet::Control(c), None) if c.opcode == Opcode::ControlHardResetClientV2 => {
                self.server = ServerSession::new(
                    self.server_cfg.clone(),
                    Box::new(SeededEntropy::new(2)),
                    self.now,
                    PEER_ID,
                    &c,
                )
                .ok();
            }
            (Packet::Data(p), Some(s)) => {
                let mut out = Vec::new();
                let _ = s.handle_data(self.now, d, p.key_id, &mut out);
            }
            _ => {}
        }
        self.server_events();
    }

    /// What the client's driver does with a datagram from the gateway.
    pub(crate) fn deliver_to_client(&mut self, d: &[u8]) {
        match Packet::parse(d) {
            Ok(Packet::Control(_)) => {
                let _ = self.client.handle_control_datagram(self.now, d);
            }
            Ok(Packet::Data(p)) => {
                let mut out = Vec::new();
                let _ = self.client.handle_data(self.now, d, p.key_id, &mut out);
            }
            Err(_) => {}
        }
        while self.client.poll_event().is_some() {}
    }

    fn server_events(&mut self) {
        let Some(s) = self.server.as_mut() else {
            return;
        };
        while let Some(e) = s.poll_event() {
            if let ServerEvent::Authenticated { .. } = e {
                s.accept(self.now, assignment());
            }
        }
    }

    /// Moves the honest traffic both ways until it stops (or [`PUMP_ROUNDS`]).
    pub(crate) fn pump(&mut self) {
        let mut buf = Vec::new();
        for _ in 0..PUMP_ROUNDS {
            let mut up = Vec::new();
            while self.client.poll_transmit(self.now, &mut buf) {
                up.push(buf.clone());
            }
            let mut down = Vec::new();
            while let Some(s) = self.server.as_mut()
                && s.poll_transmit(self.now, &mut buf)
            {
                down.push(buf.clone());
            }
            if up.is_empty() && down.is_empty() {
                break;
            }
            for d in up {
                self.deliver_to_server(&d);
                self.log.push((Side::Server, d));
            }
            for d in down {
                self.deliver_to_client(&d);
                self.log.push((Side::Client, d));
            }
        }
    }

    /// Advances the clock by `steps` quarter seconds and runs both timers.
    pub(crate) fn tick(&mut self, steps: u8) {
        self.now += Duration::from_millis(250) * u32::from(steps);
        self.client.handle_timeout(self.now);
        if let Some(s) = self.server.as_mut() {
            s.handle_timeout(self.now);
        }
        self.server_events();
        while self.client.poll_event().is_some() {}
    }

    /// The honest side sends `ip` on the data channel to the side under test.
    pub(crate) fn data_to(&mut self, side: Side, ip: &[u8]) {
        let mut out = Vec::new();
        match side {
            Side::Server => {
                if self.client.encrypt(self.now, ip, &mut out).is_ok() {
                    self.deliver_to_server(&out);
                }
            }
            Side::Client => {
                if let Some(s) = self.server.as_mut()
                    && s.encrypt(self.now, ip, &mut out).is_ok()
                {
                    self.deliver_to_client(&out);
                }
            }
        }
    }

    /// Either end asks for new keys.
    pub(crate) fn renegotiate(&mut self, side: Side) {
        match side {
            Side::Server => {
                if let Some(s) = self.server.as_mut() {
                    s.renegotiate(self.now);
                }
            }
            Side::Client => self.client.renegotiate(self.now),
        }
    }

    /// Whether the tunnel is up on both ends.
    pub(crate) fn connected(&self) -> bool {
        self.client.is_connected() && self.server.as_ref().is_some_and(|s| s.is_established())
    }

    /// Runs `data` (records) with the fuzzer playing against `side`.
    fn run(mut self, side: Side, data: &[u8]) {
        for (op, body) in Records::new(data) {
            match op % 6 {
                0 => match side {
                    Side::Server => self.deliver_to_server(body),
                    Side::Client => self.deliver_to_client(body),
                },
                1 => self.tick(body.first().copied().unwrap_or(1)),
                2 => self.pump(),
                3 => self.data_to(side, body),
                4 => self.renegotiate(if op & 0x80 == 0 { side } else { other(side) }),
                _ => match side {
                    Side::Server => self.client.disconnect(self.now),
                    Side::Client => {
                        if let Some(s) = self.server.as_mut() {
                            s.close(self.now, "fuzz");
                        }
                    }
                },
            }
        }
        self.pump();
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Server => Side::Client,
        Side::Client => Side::Server,
    }
}

/// The gateway's OpenVPN session: the fuzzer plays the client (records, see the module
/// doc: 0 datagram to the gateway, 1 clock, 2 honest exchange, 3 data from the honest
/// client, 4 renegotiate, 5 client exit).
pub fn openvpn_server(data: &[u8]) {
    if let Some(duo) = Duo::new() {
        duo.run(Side::Server, data);
    }
}

/// The client's OpenVPN session: the fuzzer plays the gateway (the same records as
/// [`openvpn_server`], delivered to the client).
pub fn openvpn_client(data: &[u8]) {
    if let Some(duo) = Duo::new() {
        duo.run(Side::Client, data);
    }
}

/// The gateway's wrappers, fixed keys (index = first byte of a [`server_wrap`] input % 5).
pub(crate) fn wraps() -> &'static [(ServerWrap, ClientWrap); 5] {
    static WRAPS: OnceLock<[(ServerWrap, ClientWrap); 5]> = OnceLock::new();
    WRAPS.get_or_init(|| {
        let key = StaticKey::from_bytes(std::array::from_fn(|i| i as u8));
        let v2 = TlsCryptV2ServerKey::from_bytes(std::array::from_fn(|i| (i as u8) ^ 0x5a));
        let v2_client = TlsCryptV2ClientKey::wrap_new(
            &v2,
            StaticKey::from_bytes(std::array::from_fn(|i| (i as u8).wrapping_mul(3))),
            &[V2_METADATA_USER, b'f', b'u', b'z', b'z'],
        )
        .expect("metadata within bounds");
        [
            (ServerWrap::None, ClientWrap::None),
            (
                ServerWrap::TlsAuth {
                    key: key.clone(),
                    direction: Some(KeyDirection::Normal),
                    digest: TlsAuthDigest::Sha256,
                },
                ClientWrap::TlsAuth {
                    key: key.clone(),
                    direction: Some(KeyDirection::Inverse),
                    digest: TlsAuthDigest::Sha256,
                },
            ),
            (
                ServerWrap::TlsAuth {
                    key: key.clone(),
                    direction: None,
                    digest: TlsAuthDigest::Sha1,
                },
                ClientWrap::TlsAuth {
                    key: key.clone(),
                    direction: None,
                    digest: TlsAuthDigest::Sha1,
                },
            ),
            (
                ServerWrap::TlsCrypt { key: key.clone() },
                ClientWrap::TlsCrypt { key },
            ),
            (
                ServerWrap::TlsCryptV2 { key: v2 },
                ClientWrap::TlsCryptV2 { key: v2_client },
            ),
        ]
    })
}

/// The client config with the client half of wrapper `index`.
pub(crate) fn client_config_wrapped(index: usize) -> Arc<ClientConfig> {
    let mut cfg = (*configs().1).clone();
    cfg.wrap = wraps()[index % 5].1.clone();
    Arc::new(cfg)
}

/// `ServerWrap::authenticate_first` and `authenticate_proof`: the first byte picks the
/// wrapper (none, tls-auth SHA256 with direction, tls-auth SHA1 bidirectional, tls-crypt,
/// tls-crypt-v2), the rest is the datagram from an unknown peer. A packet that
/// authenticates opens a gateway session, as the driver would.
pub fn server_wrap(data: &[u8]) {
    let Some((&pick, datagram)) = data.split_first() else {
        return;
    };
    let wrap = &wraps()[usize::from(pick) % 5].0;
    let unix_time = WALL_CLOCK_SECS as u32;
    if let Ok(first) = wrap.authenticate_first(datagram, unix_time) {
        let _ = first.session_id();
        let _ = first.metadata();
        let _ = ServerSession::new_wrapped(
            configs().0.clone(),
            Box::new(SeededEntropy::new(2)),
            origin(),
            PEER_ID,
            first,
        );
    }
    if let Ok(proof) = wrap.authenticate_proof(datagram, unix_time) {
        let _ = proof.packet();
    }
}
