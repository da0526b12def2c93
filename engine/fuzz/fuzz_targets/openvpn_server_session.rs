//! Fuzzes the gateway's control-channel state machine: a `ServerSession` opened by a valid
//! hard reset, then fed the fuzz input as a sequence of packets and clock ticks, with every
//! output drained as a driver would. Nothing may panic, whatever arrives in whatever order.
//!
//! Input format, repeated until the input ends:
//!
//! ```text
//! u8 flags | u8 len | len bytes (fewer if the input ends)
//! ```
//!
//! `flags & 0x0f`: advance the virtual clock by that many quarter seconds (x16 when
//! `flags & 0x10`, so timeouts and retransmissions fire) and call `handle_timeout`.
//! `flags & 0x20`: rewrite the packet's session ids to this session's, so the fuzzer gets
//! past the session check without having to discover the ids.
//! `flags & 0x40`: call `renegotiate`; `flags & 0x80`: encrypt a packet towards the client.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gatehouse_engine::entropy::SeededEntropy;
use gatehouse_engine::openvpn::server::{Assignment, ServerConfig, ServerEvent, ServerSession};
use gatehouse_engine::openvpn::tls::server_config;
use gatehouse_engine::wire::openvpn::{AckList, ControlPacket, Opcode, Packet};
use libfuzzer_sys::fuzz_target;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};

const CLIENT_SID: u64 = 0x0102_0304_0506_0708;

#[derive(Debug)]
struct FixedTime;
impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            1_800_000_000,
        )))
    }
}

/// The gateway configuration, with its CA and certificate generated once per process.
fn config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let ca_key = KeyPair::generate().expect("CA key");
            let mut ca_params = CertificateParams::new(vec![]).expect("CA params");
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca_params
                .distinguished_name
                .push(DnType::CommonName, "Fuzz CA");
            ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let ca = ca_params.self_signed(&ca_key).expect("CA cert");
            let issuer = Issuer::new(ca_params, ca_key);
            let key = KeyPair::generate().expect("gateway key");
            let mut p = CertificateParams::new(vec!["vpn.test".into()]).expect("params");
            p.distinguished_name.push(DnType::CommonName, "gateway");
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let cert = p.signed_by(&key, &issuer).expect("gateway cert");
            let tls = server_config(
                Arc::new(rustls::crypto::ring::default_provider()),
                Arc::new(FixedTime),
                &[CertificateDer::from(ca.der().to_vec())],
                vec![],
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
            let mut c = ServerConfig::new(tls);
            c.reneg_interval = Some(Duration::from_secs(30));
            Arc::new(c)
        })
        .clone()
}

fn assignment() -> Assignment {
    Assignment {
        address: [172, 16, 201, 2].into(),
        subnet: "172.16.201.0/24".parse().expect("subnet"),
        gateway: [172, 16, 201, 1].into(),
        routes: vec![],
        dns: vec![],
        dns_domains: Vec::new(),
        redirect_gateway: false,
        ipv6: None,
    }
}

/// Drains everything the session wants to say, as a driver does after every input, and notes
/// the gateway's session id when a control packet reveals it.
fn drain(s: &mut ServerSession, now: Instant, server_sid: &mut Option<u64>) {
    let mut out = Vec::new();
    // Bounded: a session that never stops transmitting is a bug worth a crash.
    for _ in 0..10_000 {
        if !s.poll_transmit(now, &mut out) {
            break;
        }
        assert!(!out.is_empty());
        if let Ok(Packet::Control(c)) = Packet::parse(&out) {
            *server_sid = Some(c.session_id);
        }
    }
    while let Some(e) = s.poll_event() {
        if let ServerEvent::Authenticated { .. } = e {
            s.accept(now, assignment());
        }
    }
    if let Some(t) = s.poll_timeout(now) {
        assert!(t + Duration::from_secs(3600 * 24) > now);
    }
}

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let hard_reset = ControlPacket {
        opcode: Opcode::ControlHardResetClientV2,
        key_id: 0,
        session_id: CLIENT_SID,
        acks: AckList::new(),
        remote_session_id: None,
        packet_id: Some(0),
        payload: &[],
    };
    let Ok(mut s) = ServerSession::new(
        config(),
        Box::new(SeededEntropy::new(7)),
        now,
        3,
        &hard_reset,
    ) else {
        return;
    };
    let mut server_sid = None;
    drain(&mut s, now, &mut server_sid);

    let mut rest = data;
    let mut fixed = Vec::new();
    let mut out = Vec::new();
    while let [flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, tail) = tail.split_at(n);
        rest = tail;

        let ticks = u64::from(flags & 0x0f) * if flags & 0x10 != 0 { 16 } else { 1 };
        if ticks > 0 {
            now += Duration::from_millis(250 * ticks);
            s.handle_timeout(now);
            drain(&mut s, now, &mut server_sid);
        }
        if flags & 0x40 != 0 {
            s.renegotiate(now);
        }
        if flags & 0x80 != 0 {
            let _ = s.encrypt(now, &[0x45; 40], &mut out);
        }
        match Packet::parse(bytes) {
            Ok(Packet::Control(mut c)) => {
                if flags & 0x20 != 0 {
                    c.session_id = CLIENT_SID;
                    if !c.acks.is_empty() {
                        c.remote_session_id = server_sid;
                    }
                    fixed.clear();
                    c.emit(&mut fixed);
                    // Re-parse so the session only ever sees what the wire can carry.
                    if let Ok(Packet::Control(c)) = Packet::parse(&fixed) {
                        s.handle_control(now, &c);
                    }
                } else {
                    s.handle_control(now, &c);
                }
            }
            Ok(Packet::Data(d)) => {
                let before = s.stats;
                if s.handle_data(now, bytes, d.key_id, &mut out).is_err() {
                    assert_eq!(
                        s.stats, before,
                        "a refused data packet changed the counters"
                    );
                }
            }
            Err(_) => {}
        }
        drain(&mut s, now, &mut server_sid);
        if s.is_closed() {
            assert!(s.poll_timeout(now).is_none());
            break;
        }
    }
});
