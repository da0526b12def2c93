//! Fuzzes the gateway's IKEv2 responder: a session opened by `respond_to_init` with a fixed,
//! valid IKE_SA_INIT request (made once per process with real keys), optionally taken
//! through a genuine IKE_AUTH, then fed the fuzz input as further messages and clock ticks,
//! with every output drained as a driver would. Nothing may panic.
//!
//! Input: one mode byte, then records until the input ends:
//!
//! ```text
//! mode: 0x01 complete a valid IKE_AUTH first (0x02: and reject the client instead of
//!       accepting it), so the later records reach the established SA's exchanges
//! record: u8 flags | u8 len | len bytes (fewer if the input ends)
//! ```
//!
//! `flags & 0x0f`: advance the virtual clock by that many seconds (x64 with `0x10`, so DPD,
//! retransmissions, old-SA expiry and the hard lifetime fire) and call `handle_timeout`.
//! `flags & 0x20`: the bytes are *inner payloads* to be sealed with the SA's real keys
//! (initiator to responder), see [`sealed`]; otherwise they are sent raw, with the header's
//! SPIs set to the session's when `flags & 0x40`. `flags & 0x80`: reuse the last message ID
//! (a retransmission) instead of the next one.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gatehouse_engine::entropy::{Entropy, SeededEntropy};
use gatehouse_engine::ikev2::crypto::sign::signed_octets;
use gatehouse_engine::ikev2::crypto::{DhGroup, SigningKey, SkKeys};
use gatehouse_engine::ikev2::message;
use gatehouse_engine::ikev2::peer_cert::PeerTrust;
use gatehouse_engine::ikev2::proposal::{Policy, esp_offer, ike_offer};
use gatehouse_engine::ikev2::responder::{
    IkeAssignment, IkeEvent, IkeResponder, InitOutcome, ResponderConfig, respond_to_init,
};
use gatehouse_engine::wire::ikev2::sk::{emit_encrypted_header, emit_fragment_header};
use gatehouse_engine::wire::ikev2::{
    AuthMethod, AuthPayload, CertEncoding, CertPayload, CfgAttrType, CfgAttribute, CfgType,
    CpPayload, DeletePayload, ExchangeType, IdPayload, IdType, KePayload, Message, NotifyPayload,
    NotifyType, Payload, ProtocolId, TrafficSelector, TsPayload, emit_payloads,
};
use libfuzzer_sys::fuzz_target;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use ring::rand::SystemRandom;
use rustls::pki_types::{CertificateDer, UnixTime};

const CLIENT_SPI: u64 = 0x0102_0304_0506_0708;
/// The client's inbound ESP SPI offered in IKE_AUTH (what a CHILD rekey names).
const CLIENT_ESP_SPI: u32 = 0x0a0b_0c0d;
const CLIENT_ID: &str = "alice.fuzz.test";

#[derive(Debug)]
struct FixedTime;
impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            1_800_000_000,
        )))
    }
}

struct Fixture {
    cfg: Arc<ResponderConfig>,
    /// The IKE_SA_INIT request every session starts from.
    init: Vec<u8>,
    client_cert: CertificateDer<'static>,
    client_key: SigningKey,
    rng: Arc<SystemRandom>,
}

/// The gateway configuration, a client certificate of its CA and the IKE_SA_INIT request,
/// made once per process.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rng = Arc::new(SystemRandom::new());
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(vec![]).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Fuzz CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |cn: &str, san: &str, eku| {
            let key = KeyPair::generate().expect("leaf key");
            let mut p = CertificateParams::new(vec![san.to_owned()]).expect("params");
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![eku];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let cert = p.signed_by(&key, &issuer).expect("leaf cert");
            let signing = SigningKey::from_pkcs8(&key.serialize_der(), &*rng).expect("key");
            (CertificateDer::from(cert.der().to_vec()), signing)
        };
        let (gw_cert, gw_key) = leaf(
            "gateway",
            "vpn.fuzz.test",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            leaf("alice", CLIENT_ID, ExtendedKeyUsagePurpose::ClientAuth);
        let cfg = ResponderConfig {
            policy: Policy::default(),
            trust: PeerTrust {
                roots: vec![CertificateDer::from(ca.der().to_vec())],
                crls: vec![],
            },
            time: Arc::new(FixedTime),
            cert_chain: vec![gw_cert],
            key: Arc::new(gw_key),
            rng: rng.clone(),
            ca_hashes: vec![[7; 20]],
            dpd_interval: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(30),
            fragment_size: 576,
            hard_lifetime: Duration::from_secs(600),
            sites: Vec::new(),
            offload: false,
        };

        let mut entropy = SeededEntropy::new(1);
        let (_, public) = DhGroup::Curve25519
            .generate(&mut entropy, &*rng)
            .expect("x25519");
        let ni = [0x11u8; 32];
        let init = message::plain(
            message::header(CLIENT_SPI, 0, ExchangeType::IKE_SA_INIT, true, false, 0),
            vec![
                Payload::Sa(ike_offer(&Policy::default(), &[])),
                Payload::Ke(KePayload {
                    dh_group: DhGroup::Curve25519.transform_id(),
                    data: &public,
                }),
                Payload::Nonce(&ni),
                Payload::Notify(NotifyPayload::new(
                    NotifyType::NAT_DETECTION_SOURCE_IP,
                    &[1; 20],
                )),
                Payload::Notify(NotifyPayload::new(
                    NotifyType::NAT_DETECTION_DESTINATION_IP,
                    &[2; 20],
                )),
                Payload::Notify(NotifyPayload::new(
                    NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
                    &[],
                )),
                Payload::Notify(NotifyPayload::new(
                    NotifyType::SIGNATURE_HASH_ALGORITHMS,
                    &[0, 2, 0, 3, 0, 4],
                )),
            ],
        );
        Fixture {
            cfg: Arc::new(cfg),
            init,
            client_cert,
            client_key,
            rng,
        }
    })
}

fn peer() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10], 4500))
}

/// The driver's side: drain transmits and events, answer `Authenticated`, check invariants.
/// Returns true when the SA moved to new SPIs (message IDs restart at 0).
fn drain(s: &mut IkeResponder, now: Instant, reject: bool) -> bool {
    let mut rekeyed = false;
    while s.poll_transmit().is_some() {}
    while let Some(e) = s.poll_event() {
        match e {
            IkeEvent::Authenticated { .. } if reject => s.reject(now, "fuzz says no"),
            IkeEvent::Authenticated { .. } => s.accept(
                now,
                IkeAssignment {
                    address: [10, 9, 0, 2].into(),
                    dns: vec![],
                    dns_domains: Vec::new(),
                    subnets: vec![],
                    full_tunnel: true,
                    ipv6: None,
                },
            ),
            IkeEvent::IkeRekeyed { old, new } => {
                assert_eq!(s.spis(), new);
                assert!(s.owns_spis(old.0, old.1) || s.is_closed());
                rekeyed = true;
            }
            _ => {}
        }
        while s.poll_transmit().is_some() {}
    }
    if s.is_closed() {
        assert_eq!(s.poll_timeout(), None, "a closed SA wants no timer");
        assert_eq!(s.old_spis().count(), 0);
    }
    rekeyed
}

/// Inner payloads sealed into an SK (or SKF) message of the session's current SA, as the
/// client would send it. `body` is `selector | [fragment byte] | bytes`:
///
/// - selector bits 0-1: exchange (IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL, IKE_SA_INIT);
///   bit 2: response flag; bit 3: an SKF fragment, numbered by the next byte's high nibble
///   out of its low nibble.
/// - bits 4-5: 0: `bytes` are the inner payloads, first payload type from its first byte;
///   1, 2, 3: a well-formed IKE rekey, CHILD rekey or IKE Delete, with `bytes` XORed into
///   its encoding from the offset in its first byte.
fn sealed(s: &IkeResponder, rng: &SystemRandom, message_id: u32, body: &[u8]) -> Option<Vec<u8>> {
    let (&sel, mut rest) = body.split_first()?;
    let exchange = [
        ExchangeType::IKE_AUTH,
        ExchangeType::CREATE_CHILD_SA,
        ExchangeType::INFORMATIONAL,
        ExchangeType::IKE_SA_INIT,
    ][usize::from(sel & 3)];
    let fragment = if sel & 8 != 0 {
        let (&f, r) = rest.split_first()?;
        rest = r;
        Some((u16::from(f >> 4), u16::from(f & 0x0f)))
    } else {
        None
    };
    let mut entropy = SeededEntropy::new(u64::from(message_id));
    let (first, plaintext) = match (sel >> 4) & 3 {
        0 => {
            let (&first, inner) = rest.split_first()?;
            (first, inner.to_vec())
        }
        template => {
            let ni = [0x22u8; 32];
            let spi = 0x1122_3344_5566_7788u64.to_be_bytes();
            let esp_spi = 0x5566_7788u32.to_be_bytes();
            let old_esp = CLIENT_ESP_SPI.to_be_bytes();
            let public;
            let payloads = match template {
                1 => {
                    public = DhGroup::Curve25519.generate(&mut entropy, rng).ok()?.1;
                    vec![
                        Payload::Sa(ike_offer(&Policy::default(), &spi)),
                        Payload::Nonce(&ni),
                        Payload::Ke(KePayload {
                            dh_group: DhGroup::Curve25519.transform_id(),
                            data: &public,
                        }),
                    ]
                }
                2 => vec![
                    Payload::Notify(NotifyPayload {
                        protocol_id: ProtocolId::ESP,
                        spi: &old_esp,
                        notify_type: NotifyType::REKEY_SA,
                        data: &[],
                    }),
                    Payload::Sa(esp_offer(&Policy::default(), &esp_spi)),
                    Payload::Nonce(&ni),
                    Payload::TsI(TsPayload::new(vec![TrafficSelector::any_v4()])),
                    Payload::TsR(TsPayload::new(vec![TrafficSelector::any_v4()])),
                ],
                _ => vec![Payload::Delete(DeletePayload::ike())],
            };
            let mut plain = Vec::new();
            let first = emit_payloads(&payloads, &mut plain);
            if let Some((&offset, xor)) = rest.split_first() {
                for (i, b) in xor.iter().enumerate() {
                    if let Some(p) = plain.get_mut(usize::from(offset) + i) {
                        *p ^= b;
                    }
                }
            }
            (first, plain)
        }
    };
    let (spi_i, spi_r) = s.spis();
    let header = message::header(spi_i, spi_r, exchange, true, sel & 4 != 0, message_id);
    let (suite, keys) = s.sa_keys_for_fuzzing();
    let mut sk = SkKeys::new(suite.cipher, &keys.sk_ei, &keys.sk_ai).ok()?;
    let body_len = sk.sealed_len(plaintext.len());
    let mut out = Vec::new();
    let aad = match fragment {
        None => emit_encrypted_header(&header, first, body_len, &mut out),
        Some((n, total)) => emit_fragment_header(&header, n, total, first, body_len, &mut out),
    };
    let aad = out[aad].to_vec();
    sk.seal(&mut entropy, &aad, &plaintext, &mut out).ok()?;
    Some(out)
}

/// A genuine IKE_AUTH request for the fixture's client (message ID 1).
fn ike_auth(s: &IkeResponder, f: &Fixture, init_response: &[u8]) -> Option<Vec<u8>> {
    let nr = Message::parse(init_response)
        .ok()?
        .payloads
        .iter()
        .find_map(|p| match p {
            Payload::Nonce(n) => Some(n.to_vec()),
            _ => None,
        })?;
    let (suite, keys) = s.sa_keys_for_fuzzing();
    let idi = IdPayload::new(IdType::FQDN, CLIENT_ID.as_bytes());
    let mut idi_body = Vec::new();
    idi.emit_body(&mut idi_body);
    let octets = signed_octets(suite.prf, &keys.sk_pi, &f.init, &nr, &idi_body);
    let method = gatehouse_engine::ikev2::crypto::AuthMethod::DigitalSignature;
    let auth = f.client_key.auth_data(method, &octets, &*f.rng).ok()?;
    let esp_spi = CLIENT_ESP_SPI.to_be_bytes();
    let payloads = [
        Payload::IdI(idi),
        Payload::Cert(CertPayload {
            encoding: CertEncoding::X509_SIGNATURE,
            data: f.client_cert.as_ref(),
        }),
        Payload::Auth(AuthPayload {
            method: AuthMethod(method.id()),
            data: &auth,
        }),
        Payload::Cp(CpPayload {
            cfg_type: CfgType::CFG_REQUEST,
            attributes: vec![CfgAttribute::request(CfgAttrType::INTERNAL_IP4_ADDRESS)],
        }),
        Payload::Sa(esp_offer(&Policy::default(), &esp_spi)),
        Payload::TsI(TsPayload::new(vec![TrafficSelector::any_v4()])),
        Payload::TsR(TsPayload::new(vec![TrafficSelector::any_v4()])),
    ];
    let (spi_i, spi_r) = s.spis();
    let mut sk = SkKeys::new(suite.cipher, &keys.sk_ei, &keys.sk_ai).ok()?;
    let header = message::header(spi_i, spi_r, ExchangeType::IKE_AUTH, true, false, 1);
    let mut entropy = SeededEntropy::new(3);
    // Unfragmented: the fixture's 576-byte fragment size is for the gateway's answers.
    message::seal(&mut sk, &mut entropy, header, &payloads, false, 65535)
        .into_iter()
        .next()
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, mut input)) = data.split_first() else {
        return;
    };
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let mut s = match respond_to_init(
        f.cfg.clone(),
        Box::new(SeededEntropy::new(2)),
        now,
        peer(),
        false,
        &f.init,
        None,
    ) {
        InitOutcome::Session(s) => s,
        _ => panic!("the fixed IKE_SA_INIT must open a session"),
    };
    let Some(init_response) = s.poll_transmit() else {
        panic!("no IKE_SA_INIT response");
    };
    let reject = mode & 2 != 0;
    let mut next_id = 1u32;
    if mode & 1 != 0 {
        let auth = ike_auth(&s, f, &init_response.data).expect("IKE_AUTH builds");
        s.handle_message(now, peer(), true, &auth);
        drain(&mut s, now, reject);
        next_id = 2;
    }
    let mut entropy = SeededEntropy::new(4);
    while let Some((&flags, rest)) = input.split_first() {
        let Some((&len, rest)) = rest.split_first() else {
            break;
        };
        let (body, rest) = rest.split_at(usize::from(len).min(rest.len()));
        input = rest;

        let tick = u64::from(flags & 0x0f) * if flags & 0x10 != 0 { 64 } else { 1 };
        if tick > 0 {
            now += Duration::from_secs(tick);
            s.handle_timeout(now);
            if drain(&mut s, now, reject) {
                next_id = 0;
            }
        }
        let message_id = if flags & 0x80 != 0 {
            next_id.wrapping_sub(1)
        } else {
            let id = next_id;
            next_id = next_id.wrapping_add(1);
            id
        };
        let msg = if flags & 0x20 != 0 {
            match sealed(&s, &f.rng, message_id, body) {
                Some(m) => m,
                None => continue,
            }
        } else {
            let mut m = body.to_vec();
            if flags & 0x40 != 0 && m.len() >= 16 {
                let (spi_i, spi_r) = s.spis();
                m[..8].copy_from_slice(&spi_i.to_be_bytes());
                m[8..16].copy_from_slice(&spi_r.to_be_bytes());
            }
            m
        };
        let nat_t = entropy.next_u64() & 1 == 0;
        s.handle_message(now, peer(), nat_t, &msg);
        if drain(&mut s, now, reject) {
            next_id = 0;
        }
        // Messages on the old SA after a rekey go through the same entry point.
        let old = s.old_spis().next();
        if let Some(old) = old
            && flags & 0x40 != 0
            && msg.len() >= 16
        {
            let mut m = msg.clone();
            m[..8].copy_from_slice(&old.0.to_be_bytes());
            m[8..16].copy_from_slice(&old.1.to_be_bytes());
            s.handle_message(now, peer(), nat_t, &m);
            drain(&mut s, now, reject);
        }
    }
});
