//! Hostile or broken input on the gateway's socket: control packets with random opcodes,
//! key ids, acks and payloads mixed into a real handshake, and garbage data packets. Nothing
//! may panic; what the gateway must ignore it ignores, and otherwise it closes cleanly.

use std::time::Duration;

use super::pair::{PEER_ID, Pair, connected, ip_packet, tag_of};
use crate::entropy::{Entropy, SeededEntropy};
use crate::openvpn::server::ServerEvent;
use crate::wire::openvpn::{AckList, ControlPacket, Opcode};

const CONTROL_OPCODES: [Opcode; 7] = [
    Opcode::ControlSoftResetV1,
    Opcode::ControlV1,
    Opcode::AckV1,
    Opcode::ControlHardResetClientV2,
    Opcode::ControlHardResetServerV2,
    Opcode::ControlHardResetClientV3,
    Opcode::ControlWkcV1,
];

fn below(rng: &mut SeededEntropy, n: u64) -> u64 {
    rng.next_u64() % n
}

/// What kind of nonsense to make.
#[derive(Clone, Copy)]
enum Nonsense {
    /// Packets a correct gateway must ignore without harm: foreign session ids, acks for ids
    /// it never sent, packet ids far outside the receive window, key ids with no key state.
    /// No soft resets: on an established tunnel those start a renegotiation.
    Ignorable,
    /// Anything that parses, using the real session ids most of the time.
    Anything,
}

fn random_control(rng: &mut SeededEntropy, p: &Pair, kind: Nonsense) -> Vec<u8> {
    let client_sid = p.client.session_id();
    let server_sid = p.server_sid.unwrap_or(0);
    let mut opcode = CONTROL_OPCODES[below(rng, CONTROL_OPCODES.len() as u64) as usize];
    if matches!(kind, Nonsense::Ignorable) && opcode == Opcode::ControlSoftResetV1 {
        // Once the tunnel is up a soft reset rightly starts a renegotiation.
        opcode = Opcode::ControlV1;
    }
    let mut acks = AckList::new();
    let mut payload = vec![0u8; below(rng, 300) as usize];
    rng.fill(&mut payload);
    let mut pkt = ControlPacket {
        opcode,
        key_id: below(rng, 8) as u8,
        session_id: client_sid,
        acks,
        remote_session_id: None,
        packet_id: Some(below(rng, 12) as u32),
        payload: &payload,
    };
    match kind {
        Nonsense::Ignorable => match below(rng, 4) {
            0 => pkt.session_id = rng.next_u64(),
            1 => {
                for _ in 0..=below(rng, 8) {
                    acks.push(1000 + below(rng, 1000) as u32);
                }
                pkt.acks = acks;
                pkt.remote_session_id = Some(server_sid);
                pkt.packet_id = Some(1000 + below(rng, 1 << 20) as u32);
            }
            2 => pkt.packet_id = Some(100 + below(rng, 1 << 30) as u32),
            _ => {
                // A key id nobody negotiated.
                pkt.key_id = 1 + below(rng, 7) as u8;
            }
        },
        Nonsense::Anything => {
            for _ in 0..below(rng, 9) {
                acks.push(below(rng, 16) as u32);
            }
            pkt.acks = acks;
            if !acks.is_empty() {
                pkt.remote_session_id = Some(if below(rng, 8) == 0 {
                    rng.next_u64()
                } else {
                    server_sid
                });
            }
            if below(rng, 8) == 0 {
                pkt.session_id = rng.next_u64();
            }
        }
    }
    let mut out = Vec::new();
    pkt.emit(&mut out);
    out
}

/// Runs the pair, slipping nonsense to the gateway every few milliseconds until `done`.
fn run_with_nonsense(
    p: &mut Pair,
    rng: &mut SeededEntropy,
    kind: Nonsense,
    limit: Duration,
    done: impl Fn(&Pair) -> bool,
) -> bool {
    let end = p.now + limit;
    while p.now < end {
        if p.run_until(Duration::from_millis(3), &done) {
            return true;
        }
        if p.server.is_some() {
            let d = random_control(rng, p, kind);
            p.deliver_to_server(&d);
        }
    }
    done(p)
}

fn closed_cleanly(p: &Pair) -> bool {
    p.server.as_ref().is_some_and(|s| s.is_closed())
}

/// After Closed, a session says nothing more.
fn assert_closed_is_last(p: &Pair, seed: u64) {
    if let Some(i) = p
        .server_events
        .iter()
        .position(|e| matches!(e, ServerEvent::Closed(_)))
    {
        assert_eq!(
            i + 1,
            p.server_events.len(),
            "seed={seed} {:?}",
            p.server_events
        );
    }
}

#[test]
fn ignorable_nonsense_does_not_disturb_the_handshake() {
    for seed in 0..30u64 {
        let mut p = Pair::new(seed.is_multiple_of(2));
        let mut rng = SeededEntropy::new(1000 + seed);
        assert!(
            run_with_nonsense(
                &mut p,
                &mut rng,
                Nonsense::Ignorable,
                Duration::from_secs(10),
                connected
            ),
            "seed={seed} {:?} {:?}",
            p.server_events,
            p.client_events
        );
        // And the tunnel keeps working while more of it arrives.
        run_with_nonsense(
            &mut p,
            &mut rng,
            Nonsense::Ignorable,
            Duration::from_secs(1),
            |_| false,
        );
        assert!(
            connected(&p),
            "seed={seed} {:?} {:?}",
            p.server_events,
            p.client_events
        );
        p.ping_through();
        p.run_for(Duration::from_millis(50));
        assert_eq!(
            (p.server_rx.len(), p.client_rx.len()),
            (1, 1),
            "seed={seed}"
        );
    }
}

#[test]
fn arbitrary_control_packets_never_panic_and_end_cleanly() {
    let (mut up, mut closed) = (0, 0);
    for seed in 0..60u64 {
        let mut p = Pair::new(seed.is_multiple_of(2));
        let mut rng = SeededEntropy::new(5000 + seed);
        let finished = run_with_nonsense(
            &mut p,
            &mut rng,
            Nonsense::Anything,
            Duration::from_secs(150),
            |p| connected(p) || closed_cleanly(p),
        );
        assert!(
            finished,
            "seed={seed}: neither up nor closed: {:?} {:?}",
            p.server_events, p.client_events
        );
        if connected(&p) {
            up += 1;
            // Keep the nonsense coming over an established tunnel.
            run_with_nonsense(
                &mut p,
                &mut rng,
                Nonsense::Anything,
                Duration::from_secs(5),
                closed_cleanly,
            );
        } else {
            closed += 1;
        }
        assert_closed_is_last(&p, seed);
    }
    // Both outcomes occur, or the test is not testing what it says.
    assert!(up > 0 && closed > 0, "up={up} closed={closed}");
}

#[test]
fn garbage_data_packets_are_refused_and_change_nothing() {
    let mut p = Pair::new(true);
    p.connect();
    p.ping_through();
    p.run_for(Duration::from_millis(50));
    let stats = p.server().stats;
    let rx = p.server_rx.len();

    let mut rng = SeededEntropy::new(77);
    let mut out = Vec::new();
    let mut refused = 0;
    for i in 0..500u32 {
        let key_id = (i % 8) as u8;
        let mut d = vec![0u8; below(&mut rng, 120) as usize];
        rng.fill(&mut d);
        let header = if i % 5 == 0 {
            vec![Opcode::DataV1.header_byte(key_id)]
        } else {
            let pid = PEER_ID.to_be_bytes();
            vec![Opcode::DataV2.header_byte(key_id), pid[1], pid[2], pid[3]]
        };
        let packet: Vec<u8> = header.into_iter().chain(d).collect();
        let now = p.now;
        let r = p.server().handle_data(now, &packet, key_id, &mut out);
        assert!(r.is_err(), "garbage accepted: {packet:02x?}");
        refused += 1;
    }
    assert_eq!(refused, 500);

    // A real packet, tampered with or replayed, is refused too.
    let mut real = Vec::new();
    p.client
        .encrypt(
            p.now,
            &ip_packet([172, 16, 201, 2], [10, 1, 0, 10], 5),
            &mut real,
        )
        .unwrap();
    let mut flipped = real.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let now = p.now;
    assert!(p.server().handle_data(now, &flipped, 0, &mut out).is_err());
    assert!(
        p.server()
            .handle_data(now, &real[..20], 0, &mut out)
            .is_err()
    );
    assert_eq!(p.server().stats, stats, "refused packets must not count");
    assert!(p.server().handle_data(now, &real, 0, &mut out).is_ok());
    let replay = p.server().handle_data(now, &real, 0, &mut out);
    assert!(
        replay
            .as_ref()
            .is_err_and(|e| e.to_string().contains("replay")),
        "{replay:?}"
    );
    assert_eq!(p.server().stats.rx_packets, stats.rx_packets + 1);

    // The client refuses garbage from the gateway the same way.
    for i in 0..100u32 {
        let mut d = vec![0u8; below(&mut rng, 120) as usize];
        rng.fill(&mut d);
        let packet: Vec<u8> = [Opcode::DataV2.header_byte((i % 8) as u8), 0, 0, 7]
            .into_iter()
            .chain(d)
            .collect();
        assert!(
            p.client
                .handle_data(p.now, &packet, (i % 8) as u8, &mut out)
                .is_err()
        );
    }

    // The tunnel still works.
    p.send_up(1234);
    p.send_down(1234);
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.server_rx.len(), rx + 1);
    assert_eq!(tag_of(p.server_rx.last().unwrap()), 1234);
    assert_eq!(tag_of(p.client_rx.last().unwrap()), 1234);
    assert!(connected(&p));
}

/// Garbage TLS records on the control channel of the key that carries the traffic (as after
/// a renegotiation) must not leave the session without data keys: it ends with an error the
/// operator can read instead of black-holing traffic until a timeout.
#[test]
fn tls_garbage_on_the_key_in_use_closes_the_session() {
    let mut p = Pair::new(true);
    p.connect();
    let now = p.now;
    p.server().renegotiate(now);
    assert!(
        p.run_until(Duration::from_secs(5), |p| p.client_events.iter().any(
            |e| matches!(
                e,
                crate::openvpn::client::ClientEvent::Rekeyed { key_id: 1 }
            )
        ))
    );
    p.run_for(Duration::from_secs(1));
    p.ping_through();
    p.run_for(Duration::from_millis(50));
    assert_eq!((p.server_rx.len(), p.client_rx.len()), (1, 1));

    // Packet ids 0..8 cover the receive window whatever the key state has seen so far.
    let payload = [0x17u8, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5];
    let mut acks = AckList::new();
    acks.push(999);
    for pid in 0..8 {
        let pkt = ControlPacket {
            opcode: Opcode::ControlV1,
            key_id: 1,
            session_id: p.client.session_id(),
            acks,
            remote_session_id: p.server_sid,
            packet_id: Some(pid),
            payload: &payload,
        };
        let mut d = Vec::new();
        pkt.emit(&mut d);
        p.deliver_to_server(&d);
    }
    p.run_for(Duration::from_millis(50));
    assert!(
        matches!(
            p.server_events.last(),
            Some(ServerEvent::Closed(crate::openvpn::server::CloseReason::Error(e))) if e.contains("TLS")
        ),
        "{:?} {:?}",
        p.server_events,
        p.server_data_errors
    );
}
