//! Seed corpora for the engine's targets, made from real exchanges in memory:
//! `tests/fuzz_corpus.rs` writes them to `fuzz/corpus/<target>/` when asked
//! (`GATEHOUSE_WRITE_FUZZ_SEEDS=1`).

use super::Records;
use super::ikev2::IkeDuo;
use super::openvpn::{Duo, Side, client_config_wrapped};
use crate::entropy::SeededEntropy;
use crate::esp::{EspCipher, EspOutbound};
use crate::openvpn::client::ClientSession;
use crate::wire::openvpn::tcp_frame;

/// The SPI of the [`super::esp`] target's SAs.
pub const ESP_SPI: u32 = 0xc0ff_ee01;

/// The key of the [`super::esp`] target's SA for `cipher` (fixed bytes).
pub fn esp_key(cipher: EspCipher) -> Vec<u8> {
    (0..cipher.key_material_len()).map(|i| i as u8).collect()
}

/// A small IPv4/UDP packet whose payload carries `tag`.
fn ip_packet(tag: u8) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, 172, 16, 201, 2, 10, 1, 0, 1,
    ];
    p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0, tag, tag, tag, tag]);
    p
}

/// Datagrams of a whole OpenVPN session: handshake, data both ways, a renegotiation and
/// the client's exit. `(to, datagram)` in delivery order.
fn openvpn_transcript() -> Vec<(Side, Vec<u8>)> {
    let Some(mut duo) = Duo::new() else {
        return Vec::new();
    };
    duo.pump();
    for tag in 0..3 {
        duo.data_to(Side::Server, &ip_packet(tag));
        duo.data_to(Side::Client, &ip_packet(tag + 10));
    }
    duo.pump();
    duo.renegotiate(Side::Client);
    duo.pump();
    duo.data_to(Side::Server, &ip_packet(20));
    duo.tick(40);
    duo.pump();
    let mut log = std::mem::take(&mut duo.log);
    // The datagrams above went through the pump; data sent directly is not logged, so log a
    // few more encrypted packets by hand.
    let mut capture = Duo::new();
    if let Some(c) = capture.as_mut() {
        c.pump();
        if c.connected() {
            c.data_to(Side::Server, &ip_packet(30));
        }
    }
    log.extend(capture.map(|c| c.log).unwrap_or_default());
    log
}

/// Seed files for every engine target: `(target, files)`.
pub fn corpus() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let transcript = openvpn_transcript();
    let mut wire_openvpn: Vec<Vec<u8>> =
        transcript.iter().map(|(_, d)| d.clone()).take(40).collect();
    let mut framed = Vec::new();
    for (_, d) in transcript.iter().take(4) {
        tcp_frame(d, &mut framed);
    }
    wire_openvpn.push(framed);

    // Session inputs: the honest script, and each peer's real datagrams replayed as the
    // fuzzer's (in a new session they fail authentication or TLS, which is the point).
    let script = |side: Side| {
        let mut s = Vec::new();
        Records::encode(2, &[], &mut s);
        Records::encode(3, &ip_packet(1), &mut s);
        Records::encode(1, &[8], &mut s);
        Records::encode(2, &[], &mut s);
        Records::encode(4, &[], &mut s);
        Records::encode(2, &[], &mut s);
        Records::encode(3, &ip_packet(2), &mut s);
        Records::encode(0x84, &[], &mut s);
        Records::encode(2, &[], &mut s);
        Records::encode(1, &[255], &mut s);
        Records::encode(5, &[], &mut s);
        Records::encode(2, &[], &mut s);
        let _ = side;
        s
    };
    let replay = |side: Side| {
        let mut seeds = vec![script(side)];
        let mine: Vec<&Vec<u8>> = transcript
            .iter()
            .filter(|(to, _)| *to == side)
            .map(|(_, d)| d)
            .collect();
        // All of this side's datagrams in order, then each after an honest handshake.
        let mut all = Vec::new();
        for d in &mine {
            Records::encode(0, d, &mut all);
            Records::encode(1, &[1], &mut all);
        }
        seeds.push(all);
        for d in mine.iter().take(30) {
            let mut s = Vec::new();
            Records::encode(2, &[], &mut s);
            Records::encode(0, d, &mut s);
            Records::encode(2, &[], &mut s);
            seeds.push(s);
        }
        seeds
    };

    let mut server_wrap = Vec::new();
    for index in 0..5u8 {
        let cfg = client_config_wrapped(usize::from(index));
        let Ok(mut client) =
            ClientSession::new(cfg, Box::new(SeededEntropy::new(1)), super::origin())
        else {
            continue;
        };
        let mut buf = Vec::new();
        if client.poll_transmit(super::origin(), &mut buf) {
            let mut seed = vec![index];
            seed.extend_from_slice(&buf);
            server_wrap.push(seed);
        }
    }

    let mut esp = Vec::new();
    for pick in 0..4u8 {
        let cipher = super::esp_cipher(pick);
        let Ok(mut sa) = EspOutbound::new(ESP_SPI, cipher, &esp_key(cipher)) else {
            continue;
        };
        for tag in 0..3 {
            let inner = ip_packet(tag);
            let mut out = vec![0u8; sa.encrypted_len(inner.len())];
            if let Ok(packet) = sa.encrypt(&inner, &mut out) {
                let mut seed = vec![pick];
                seed.extend_from_slice(packet);
                esp.push(seed);
            }
        }
    }

    let ike = ike_transcript();
    let wire_ikev2: Vec<Vec<u8>> = ike.iter().map(|(_, d)| d.clone()).take(40).collect();

    // The gateway core: a client's opening on each listener, alone and after the others.
    let mut gateway_core = Vec::new();
    let first_ovpn = transcript.iter().find(|(to, _)| *to == Side::Server);
    let first_ike = ike.iter().find(|(to, _)| *to == Side::Server);
    let mut all = Vec::new();
    for (op, first) in [(0u8, first_ovpn), (1, first_ike)] {
        if let Some((_, d)) = first {
            let mut s = Vec::new();
            Records::encode(op, d, &mut s);
            Records::encode(op, d, &mut all);
            gateway_core.push(s);
        }
    }
    for (_, d) in ike
        .iter()
        .filter(|(to, _)| *to == Side::Server)
        .skip(1)
        .take(4)
    {
        let mut marked = vec![0u8; 4];
        marked.extend_from_slice(d);
        Records::encode(0x12, &marked, &mut all);
    }
    Records::encode(3, &[30], &mut all);
    gateway_core.push(all);

    vec![
        ("gateway_core", gateway_core),
        ("wire_ikev2", wire_ikev2),
        ("ikev2_responder", ike_replay(&ike, Side::Server)),
        ("ikev2_initiator", ike_replay(&ike, Side::Client)),
        ("wire_openvpn", wire_openvpn),
        ("openvpn_server", replay(Side::Server)),
        ("openvpn_client", replay(Side::Client)),
        ("server_wrap", server_wrap),
        ("esp", esp),
        ("capsule", capsule_seeds()),
        ("dns", dns_seeds()),
    ]
}

/// Queries as stub resolvers send them, and pushed domains with names (split at a NUL).
fn dns_seeds() -> Vec<Vec<u8>> {
    vec![
        // `dig host.Corp.Example A`: id 0x1234, RD, one question.
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04host\x04Corp\x07Example\x00\x00\x01\x00\x01"
            .to_vec(),
        // AAAA for www.other.test with an EDNS OPT record (ARCOUNT 1).
        b"\xab\xcd\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01\x03www\x05other\x04test\x00\x00\x1c\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
            .to_vec(),
        b"corp.example\0host.corp.example".to_vec(),
        b"Corp.Example.\0notcorp.example".to_vec(),
        b"xn--bcher-kva.example\0a.xn--bcher-kva.example".to_vec(),
    ]
}

/// What a gateway sends on a QUIC control stream (HELLO from the client, then the whole
/// configuration), whole and cut in small pieces.
fn capsule_seeds() -> Vec<Vec<u8>> {
    use crate::wire::capsule::{AssignedAddress, Capsule, DnsConfig, IpRange};
    use std::net::{IpAddr, Ipv4Addr};
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let config = [
        Capsule::Hello,
        Capsule::AddressAssign(vec![AssignedAddress {
            request_id: 0,
            address: v4(10, 8, 0, 2),
            prefix_len: 32,
        }]),
        Capsule::RouteAdvertisement(vec![IpRange {
            start: v4(10, 251, 0, 0),
            end: v4(10, 251, 0, 255),
            protocol: 0,
        }]),
        Capsule::DnsConfig(DnsConfig {
            servers: vec![Ipv4Addr::new(10, 251, 0, 53)],
            search: vec!["corp.example".into()],
        }),
        Capsule::TunnelMtu(1280),
        Capsule::Ready,
    ];
    let mut stream = Vec::new();
    for c in &config {
        c.encode(&mut stream);
    }
    let mut seeds = Vec::new();
    for piece in [0u8, 1, 3, 7] {
        let mut s = vec![piece];
        s.extend_from_slice(&stream);
        seeds.push(s);
    }
    seeds
}

/// Messages of a whole IKEv2 session: IKE_SA_INIT, IKE_AUTH, a CHILD SA and an IKE SA
/// rekey, DPD and the gateway's Delete.
fn ike_transcript() -> Vec<(Side, Vec<u8>)> {
    let mut duo = IkeDuo::new();
    duo.pump();
    duo.rekey(false);
    duo.pump();
    duo.rekey(true);
    duo.pump();
    duo.tick(60);
    duo.pump();
    duo.log
}

/// IKE session inputs: the honest script, and one side's real messages replayed.
fn ike_replay(transcript: &[(Side, Vec<u8>)], side: Side) -> Vec<Vec<u8>> {
    let mut script = Vec::new();
    for (op, body) in [
        (2, &[][..]),
        (3, &[]),
        (2, &[]),
        (0x83, &[]),
        (2, &[]),
        (1, &[60]),
        (2, &[]),
        (4, &[]),
        (2, &[]),
    ] {
        Records::encode(op, body, &mut script);
    }
    let mut seeds = vec![script];
    let mine: Vec<&Vec<u8>> = transcript
        .iter()
        .filter(|(to, _)| *to == side)
        .map(|(_, d)| d)
        .collect();
    let mut all = Vec::new();
    for d in &mine {
        Records::encode(0, d, &mut all);
    }
    seeds.push(all);
    for d in mine.iter().take(30) {
        let mut s = Vec::new();
        Records::encode(2, &[], &mut s);
        Records::encode(0, d, &mut s);
        Records::encode(2, &[], &mut s);
        seeds.push(s);
    }
    seeds
}
