//! Control-channel wrappers end to end in memory: our client and our gateway with each
//! wrapper, what happens to tampered, replayed, unwrapped and wrongly keyed packets, and our
//! client against a stock 2.6 server's recorded tls-crypt-v2 answer (early negotiation).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pair::{assignment, default_configs, ip_packet};
use crate::entropy::{Entropy, SeededEntropy};
use crate::openvpn::DataOutcome;
use crate::openvpn::client::{ClientConfig, ClientEvent, ClientSession};
use crate::openvpn::server::{ServerConfig, ServerEvent, ServerSession};
use crate::openvpn::wrap::{
    ClientWrap, KeyDirection, ServerWrap, StaticKey, TlsAuthDigest, TlsCryptV2ClientKey,
    TlsCryptV2ServerKey, WrapError, Wrapper,
};
use crate::wire::openvpn::{Opcode, Packet};

const TA: &str = include_str!("../wrap/testdata/ta.key");
const TC: &str = include_str!("../wrap/testdata/tc.key");
const STATIC: &str = include_str!("../wrap/testdata/static.key");
const V2_SERVER: &str = include_str!("../wrap/testdata/v2-server.key");
const V2_CLIENT: &str = include_str!("../wrap/testdata/v2-client.key");
const CAP_V2: &str = include_str!("../wrap/testdata/capture-v2.hex");

/// Applied to each datagram (to_server, bytes) before delivery; None drops it.
type Tamper = Box<dyn FnMut(bool, Vec<u8>) -> Option<Vec<u8>>>;

/// A client and a gateway joined by a perfect link; the gateway side does what the driver
/// does: authenticate a new session's first datagram, then feed datagrams to the session.
struct Duo {
    now: Instant,
    client: ClientSession,
    server_cfg: Arc<ServerConfig>,
    server: Option<ServerSession>,
    server_drops: Vec<WrapError>,
    client_drops: Vec<WrapError>,
    client_events: Vec<ClientEvent>,
    /// Every datagram, (to_server, bytes).
    wire: Vec<(bool, Vec<u8>)>,
    /// Applied to each datagram before delivery; None drops it.
    tamper: Tamper,
}

impl Duo {
    fn new(server: ServerWrap, client: ClientWrap) -> Duo {
        let (mut sc, mut cc): (ServerConfig, ClientConfig) = default_configs(true);
        sc.wrap = server;
        cc.wrap = client;
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut client =
            ClientSession::new(Arc::new(cc), Box::new(SeededEntropy::new(1)), now).unwrap();
        client.set_unix_time(1_800_000_000);
        Duo {
            now,
            client,
            server_cfg: Arc::new(sc),
            server: None,
            server_drops: vec![],
            client_drops: vec![],
            client_events: vec![],
            wire: vec![],
            tamper: Box::new(|_, d| Some(d)),
        }
    }

    fn deliver_up(&mut self, d: &[u8]) {
        let is_data = Packet::parse(d).is_ok_and(|p| p.opcode().is_data());
        if let Some(s) = self.server.as_mut() {
            if is_data {
                let mut out = Vec::new();
                let key_id = d[0] & 7;
                let _ = s.handle_data(self.now, d, key_id, &mut out);
            } else if let Err(e) = s.handle_control_datagram(self.now, d) {
                self.server_drops.push(e);
            }
            return;
        }
        match self.server_cfg.wrap.authenticate_first(d, 1_800_000_000) {
            Ok(first) => {
                let entropy = Box::new(SeededEntropy::new(2));
                let s = ServerSession::new_wrapped(
                    self.server_cfg.clone(),
                    entropy,
                    self.now,
                    7,
                    first,
                );
                self.server = Some(s.unwrap());
            }
            Err(e) => self.server_drops.push(e),
        }
    }

    fn deliver_down(&mut self, d: &[u8]) {
        if Packet::parse(d).is_ok_and(|p| p.opcode().is_data()) {
            let mut out = Vec::new();
            let _ = self.client.handle_data(self.now, d, d[0] & 7, &mut out);
        } else if let Err(e) = self.client.handle_control_datagram(self.now, d) {
            self.client_drops.push(e);
        }
    }

    /// Runs up to `limit` of virtual time; true once both ends have the tunnel up.
    fn connect(&mut self, limit: Duration) -> bool {
        self.run(limit, |d| {
            d.client.is_connected() && d.server.as_ref().is_some_and(|s| s.is_established())
        })
    }

    /// Runs up to `limit` of virtual time; true once `done` holds.
    fn run(&mut self, limit: Duration, done: impl Fn(&Duo) -> bool) -> bool {
        let end = self.now + limit;
        let mut buf = Vec::new();
        while self.now < end {
            let mut moved = false;
            while self.client.poll_transmit(self.now, &mut buf) {
                moved = true;
                self.wire.push((true, buf.clone()));
                if let Some(d) = (self.tamper)(true, buf.clone()) {
                    self.deliver_up(&d);
                }
            }
            while let Some(s) = self.server.as_mut() {
                if let Some(e) = s.poll_event() {
                    moved = true;
                    if let ServerEvent::Authenticated { .. } = e {
                        s.accept(self.now, assignment());
                    }
                    continue;
                }
                if !s.poll_transmit(self.now, &mut buf) {
                    break;
                }
                moved = true;
                self.wire.push((false, buf.clone()));
                if let Some(d) = (self.tamper)(false, buf.clone()) {
                    self.deliver_down(&d);
                }
            }
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
            if done(self) {
                return true;
            }
            if !moved {
                let next = [
                    self.client.poll_timeout(self.now),
                    self.server.as_ref().and_then(|s| s.poll_timeout(self.now)),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end);
                self.now = next.max(self.now + Duration::from_millis(1));
                self.client.handle_timeout(self.now);
                if let Some(s) = self.server.as_mut() {
                    s.handle_timeout(self.now);
                }
            }
        }
        false
    }

    /// An IP packet up and down the tunnel.
    fn data_flows(&mut self) -> bool {
        let mut buf = Vec::new();
        let up = ip_packet([172, 16, 201, 2], [10, 1, 0, 10], 5);
        self.client.encrypt(self.now, &up, &mut buf).unwrap();
        let mut out = Vec::new();
        let s = self.server.as_mut().unwrap();
        let got_up = matches!(s.handle_data(self.now, &buf, buf[0] & 7, &mut out), Ok(DataOutcome::Packet(r)) if out[r.clone()] == up[..]);
        let down = ip_packet([10, 1, 0, 10], [172, 16, 201, 2], 6);
        s.encrypt(self.now, &down, &mut buf).unwrap();
        let got_down = matches!(self.client.handle_data(self.now, &buf, buf[0] & 7, &mut out), Ok(DataOutcome::Packet(r)) if out[r.clone()] == down[..]);
        got_up && got_down
    }
}

fn static_key(text: &str) -> StaticKey {
    StaticKey::from_pem(text).unwrap()
}

fn v2_pair() -> (ServerWrap, ClientWrap) {
    (
        ServerWrap::TlsCryptV2 {
            key: TlsCryptV2ServerKey::from_pem(V2_SERVER).unwrap(),
        },
        ClientWrap::TlsCryptV2 {
            key: TlsCryptV2ClientKey::from_pem(V2_CLIENT).unwrap(),
        },
    )
}

fn every_wrapper() -> Vec<(&'static str, ServerWrap, ClientWrap)> {
    let ta = static_key(TA);
    let tc = static_key(TC);
    let (v2s, v2c) = v2_pair();
    vec![
        ("none", ServerWrap::None, ClientWrap::None),
        (
            "tls-auth SHA1 bidirectional",
            ServerWrap::TlsAuth {
                key: ta.clone(),
                direction: None,
                digest: TlsAuthDigest::Sha1,
            },
            ClientWrap::TlsAuth {
                key: ta.clone(),
                direction: None,
                digest: TlsAuthDigest::Sha1,
            },
        ),
        (
            "tls-auth SHA512 0/1",
            ServerWrap::TlsAuth {
                key: ta.clone(),
                direction: Some(KeyDirection::Normal),
                digest: TlsAuthDigest::Sha512,
            },
            ClientWrap::TlsAuth {
                key: ta,
                direction: Some(KeyDirection::Inverse),
                digest: TlsAuthDigest::Sha512,
            },
        ),
        (
            "tls-crypt",
            ServerWrap::TlsCrypt { key: tc.clone() },
            ClientWrap::TlsCrypt { key: tc },
        ),
        ("tls-crypt-v2", v2s, v2c),
    ]
}

#[test]
fn client_and_gateway_connect_with_each_wrapper() {
    for (name, s, c) in every_wrapper() {
        let mut duo = Duo::new(s, c);
        assert!(duo.connect(Duration::from_secs(10)), "{name}: no tunnel");
        assert!(duo.data_flows(), "{name}: data");
        assert!(
            duo.server_drops.is_empty() && duo.client_drops.is_empty(),
            "{name}: drops"
        );
        // With tls-crypt the TLS records never show on the wire. Look for the ClientHello's
        // record and handshake headers (0x16 0x03 0x01|0x03 len len 0x01): four fixed bytes,
        // so ciphertext matches by chance about once in 2^31 positions (a two-byte pattern
        // showed up in tls-crypt ciphertext in about one run in ten).
        let plain_tls = duo.wire.iter().any(|(_, d)| {
            d.windows(6).any(|w| {
                w[0] == 0x16 && w[1] == 0x03 && matches!(w[2], 0x01 | 0x03) && w[5] == 0x01
            })
        });
        if name.starts_with("tls-crypt") {
            assert!(!plain_tls, "{name}: TLS visible");
        } else {
            assert!(plain_tls, "{name}: expected visible TLS records");
        }
        let first = &duo.wire[0].1;
        let v3 = Opcode::ControlHardResetClientV3.as_u8();
        assert_eq!(
            first[0] >> 3 == v3,
            name == "tls-crypt-v2",
            "{name}: reset opcode"
        );
    }
}

#[test]
fn tampered_and_replayed_packets_are_dropped_and_the_handshake_recovers() {
    for (name, s, c) in every_wrapper().into_iter().skip(1) {
        let mut duo = Duo::new(s, c);
        let mut n = 0;
        duo.tamper = Box::new(move |to_server, mut d| {
            n += 1;
            // Damage the second datagram each way once (the retransmission gets through).
            if n == 3 {
                let last = d.len() - 1;
                d[last] ^= 1;
            }
            let _ = to_server;
            Some(d)
        });
        assert!(
            duo.connect(Duration::from_secs(20)),
            "{name}: no tunnel after a damaged packet"
        );
        let drops = [duo.server_drops.clone(), duo.client_drops.clone()].concat();
        assert!(drops.contains(&WrapError::BadAuth), "{name}: {drops:?}");
        // Replaying a control packet the gateway already took is refused.
        let again = duo
            .wire
            .iter()
            .rev()
            .find(|(up, d)| *up && d[0] >> 3 == Opcode::ControlV1.as_u8());
        let again = again.unwrap().1.clone();
        let s = duo.server.as_mut().unwrap();
        assert_eq!(
            s.handle_control_datagram(duo.now, &again),
            Err(WrapError::Replay),
            "{name}"
        );
    }
}

#[test]
fn clients_without_the_wrapper_or_with_the_wrong_key_never_reach_tls() {
    let ta = static_key(TA);
    let wrong = static_key(STATIC);
    let (v2s, v2c) = v2_pair();
    let other_v2 = TlsCryptV2ServerKey::from_bytes([5; 128]);
    let cases = vec![
        (
            "unwrapped -> tls-crypt",
            ServerWrap::TlsCrypt { key: ta.clone() },
            ClientWrap::None,
        ),
        ("unwrapped -> tls-crypt-v2", v2s.clone(), ClientWrap::None),
        ("tls-crypt-v2 -> none", ServerWrap::None, v2c.clone()),
        (
            "wrong tls-crypt key",
            ServerWrap::TlsCrypt { key: ta.clone() },
            ClientWrap::TlsCrypt { key: wrong.clone() },
        ),
        (
            "wrong tls-auth key",
            ServerWrap::TlsAuth {
                key: ta.clone(),
                direction: None,
                digest: TlsAuthDigest::Sha1,
            },
            ClientWrap::TlsAuth {
                key: wrong,
                direction: None,
                digest: TlsAuthDigest::Sha1,
            },
        ),
        (
            "same tls-auth direction both ends",
            ServerWrap::TlsAuth {
                key: ta.clone(),
                direction: Some(KeyDirection::Normal),
                digest: TlsAuthDigest::Sha1,
            },
            ClientWrap::TlsAuth {
                key: ta,
                direction: Some(KeyDirection::Normal),
                digest: TlsAuthDigest::Sha1,
            },
        ),
        (
            "v2 key of another gateway",
            ServerWrap::TlsCryptV2 { key: other_v2 },
            v2c,
        ),
    ];
    for (name, s, c) in cases {
        let mut duo = Duo::new(s, c);
        assert!(!duo.connect(Duration::from_secs(5)), "{name}: connected");
        assert!(duo.server.is_none(), "{name}: a session was created");
        assert!(!duo.server_drops.is_empty(), "{name}: nothing counted");
        assert!(
            duo.wire.iter().all(|(up, _)| *up),
            "{name}: the gateway answered"
        );
    }
}

/// Our client against the first answer of a stock 2.6.14 server with tls-crypt-v2 (recorded):
/// with the stock client's session id and time our reset is byte-identical to the stock
/// client's; the server's stateless reset asks for the wrapped key again, and our next packet
/// is a P_CONTROL_WKC_V1 carrying the ClientHello and the key, which the server side opens.
#[test]
fn our_v2_client_resends_its_key_when_a_stock_server_asks() {
    struct Fixed(u64, SeededEntropy);
    impl Entropy for Fixed {
        fn fill(&mut self, buf: &mut [u8]) {
            self.1.fill(buf)
        }
        fn next_u64(&mut self) -> u64 {
            std::mem::replace(&mut self.0, 0)
        }
    }
    let cap = crate::openvpn::wrap::tests::capture(CAP_V2);
    let sid = u64::from_be_bytes(cap[0].1[1..9].try_into().unwrap());
    let time = u32::from_be_bytes(cap[0].1[13..17].try_into().unwrap());
    let (v2s, v2c) = v2_pair();
    let (_, mut cc) = default_configs(true);
    cc.wrap = v2c;
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let entropy = Box::new(Fixed(sid, SeededEntropy::new(3)));
    let mut client = ClientSession::new(Arc::new(cc), entropy, now).unwrap();
    client.set_unix_time(u64::from(time));
    let mut buf = Vec::new();
    assert!(client.poll_transmit(now, &mut buf));
    assert_eq!(buf, cap[0].1, "reset byte-identical to the stock client's");
    client
        .handle_control_datagram(now, &cap[1].1)
        .expect("stock server reset");
    assert!(client.poll_transmit(now, &mut buf));
    assert_eq!(buf[0] >> 3, Opcode::ControlWkcV1.as_u8());
    let ServerWrap::TlsCryptV2 { .. } = &v2s else {
        unreachable!()
    };
    let first = v2s.authenticate_first(&cap[0].1, 0).unwrap();
    let mut sw: Wrapper = first_wrapper(first);
    let mut plain = Vec::new();
    sw.unwrap(&buf, &mut plain)
        .expect("the gateway opens our WKC_V1");
    let Ok(Packet::Control(c)) = Packet::parse(&plain) else {
        panic!()
    };
    assert_eq!(c.opcode, Opcode::ControlV1);
    assert_eq!(c.packet_id, Some(1));
    assert_eq!(c.acks.as_slice(), &[0]);
    assert_eq!(
        c.remote_session_id,
        Some(u64::from_be_bytes(cap[1].1[1..9].try_into().unwrap()))
    );
    assert_eq!(&c.payload[..2], &[0x16, 0x03]);
}

fn first_wrapper(first: crate::openvpn::wrap::FirstPacket) -> Wrapper {
    first.into_wrapper()
}

#[test]
fn renegotiation_runs_through_the_wrapper() {
    for (name, s, c) in every_wrapper().into_iter().skip(1) {
        let mut duo = Duo::new(s, c);
        assert!(duo.connect(Duration::from_secs(10)), "{name}: no tunnel");
        duo.now += Duration::from_secs(30);
        let now = duo.now;
        duo.client.renegotiate(now);
        let rekeyed = |d: &Duo| {
            d.client_events
                .iter()
                .any(|e| matches!(e, ClientEvent::Rekeyed { key_id: 1 }))
        };
        assert!(
            duo.run(Duration::from_secs(10), rekeyed),
            "{name}: no new keys"
        );
        assert!(duo.data_flows(), "{name}: data after the rekey");
        assert!(
            duo.server_drops.is_empty() && duo.client_drops.is_empty(),
            "{name}"
        );
    }
}
