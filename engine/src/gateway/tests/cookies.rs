//! OpenVPN session cookies in the gateway core: a hard reset gets one stateless answer no
//! longer than itself and leaves nothing behind; a spoofed reset cannot end an established
//! session; only the client that echoes the cookie from its own address gets a session.

use std::net::SocketAddr;
use std::time::Duration;

use super::sim::{Options, Sim};
use crate::gateway::{Dest, Drop, Listener, Protocol};
use crate::wire::openvpn::{AckList, ControlPacket, Opcode, Packet};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn plain(opcode: Opcode, sid: u64, acks: &[u32], remote: Option<u64>, pid: Option<u32>) -> Vec<u8> {
    let mut out = Vec::new();
    ControlPacket {
        opcode,
        key_id: 0,
        session_id: sid,
        remote_session_id: remote,
        acks: acks.iter().copied().collect::<AckList>(),
        packet_id: pid,
        payload: &[],
    }
    .emit(&mut out);
    out
}

fn reset(sid: u64) -> Vec<u8> {
    plain(Opcode::ControlHardResetClientV2, sid, &[], None, Some(0))
}

/// Everything the core queued, as (destination, bytes).
fn transmits(sim: &mut Sim) -> Vec<(Dest, Vec<u8>)> {
    let mut v = Vec::new();
    while let Some(t) = sim.core.poll_transmit() {
        v.push((t.dest, t.payload));
    }
    v
}

fn connected_udp_client(seed: u64) -> (Sim, usize) {
    connected_on(seed, 0)
}

/// One connected OpenVPN UDP client on `workers` workers (0: as the seed picks).
fn connected_on(seed: u64, workers: usize) -> (Sim, usize) {
    let opts = Options {
        link: super::sim::Link::clean(),
        workers,
        ..Options::default()
    };
    let mut sim = Sim::new(seed, opts);
    let c = sim.add_ovpn_udp(0);
    sim.connect_all(&[c], secs(30));
    assert_eq!(sim.clients[c].protocol(), Protocol::OpenVpnUdp);
    (sim, c)
}

#[test]
fn a_reset_gets_one_answer_as_long_as_itself_and_no_state() {
    let (mut sim, _c) = connected_udp_client(11);
    let tunnels = sim.core.tunnel_count();
    let mut sent = 0usize;
    let mut answered = 0usize;
    for i in 0..500u64 {
        let from: SocketAddr = format!("198.18.{}.{}:{}", i / 200, i % 200 + 1, 1024 + i)
            .parse()
            .unwrap();
        let r = reset(0x1000 + i);
        sent += r.len();
        let now = sim.now;
        assert!(
            sim.core
                .handle_datagram(now, Listener::OpenVpnUdp, from, &r)
                .is_none()
        );
        for (dest, bytes) in transmits(&mut sim) {
            assert_eq!(
                dest,
                Dest::Udp {
                    from: Listener::OpenVpnUdp,
                    to: from
                }
            );
            assert!(
                bytes.len() <= r.len(),
                "answer {} > reset {}",
                bytes.len(),
                r.len()
            );
            let Ok(Packet::Control(p)) = Packet::parse(&bytes) else {
                panic!("not a control packet")
            };
            assert_eq!(p.opcode, Opcode::ControlHardResetServerV2);
            answered += bytes.len();
        }
    }
    assert!(
        answered > 0 && answered <= sent,
        "{answered} bytes answered for {sent}"
    );
    assert_eq!(
        sim.core.tunnel_count(),
        tunnels,
        "a reset left state behind"
    );
    // Nothing is retransmitted: time passes, nothing more goes to the spoofed sources.
    for _ in 0..20 {
        sim.now += secs(1);
        let now = sim.now;
        sim.core.handle_timeout(now);
        for (dest, _) in transmits(&mut sim) {
            if let Dest::Udp { to, .. } = dest {
                assert!(
                    !to.ip().to_string().starts_with("198.18."),
                    "retransmitted to {to}"
                );
            }
        }
    }
}

#[test]
fn a_spoofed_reset_from_a_connected_clients_address_does_not_end_its_session() {
    let (mut sim, c) = connected_udp_client(12);
    let from = sim.clients[c].core_remote;
    let tunnel = sim.clients[c].tunnel;
    for sid in 1..=20u64 {
        let now = sim.now;
        sim.core
            .handle_datagram(now, Listener::OpenVpnUdp, from, &reset(0xdead_0000 + sid));
        let out = transmits(&mut sim);
        assert!(
            out.is_empty(),
            "a reset forged with a live client's address was answered"
        );
    }
    assert_eq!(sim.core.drops().get(Drop::LiveReset), 20);
    // A forged acknowledgement with a made-up cookie from the same address.
    let now = sim.now;
    let forged = plain(Opcode::AckV1, 0xdead_0001, &[0], Some(0x1234_5678), None);
    sim.core
        .handle_datagram(now, Listener::OpenVpnUdp, from, &forged);
    assert_eq!(sim.core.drops().get(Drop::BadCookie), 1);
    sim.run_for(secs(90));
    assert!(sim.is_up(c), "the client lost its tunnel");
    assert_eq!(sim.clients[c].tunnel, tunnel, "the session was replaced");
    sim.traffic_round(0.0);
    sim.check_status();
}

#[test]
fn only_the_cookie_from_the_address_it_was_issued_to_opens_a_session() {
    let (mut sim, _c) = connected_udp_client(13);
    let tunnels = sim.core.tunnel_count();
    let a: SocketAddr = "198.18.9.1:5000".parse().unwrap();
    let b: SocketAddr = "198.18.9.2:5000".parse().unwrap();
    let now = sim.now;
    sim.core
        .handle_datagram(now, Listener::OpenVpnUdp, a, &reset(77));
    let out = transmits(&mut sim);
    let Ok(Packet::Control(p)) = Packet::parse(&out[0].1) else {
        panic!("no answer")
    };
    let cookie = p.session_id;
    // The right cookie from another address, a wrong one from the right address: dropped.
    let ack = plain(Opcode::AckV1, 77, &[0], Some(cookie), None);
    sim.core.handle_datagram(now, Listener::OpenVpnUdp, b, &ack);
    let wrong = plain(Opcode::AckV1, 77, &[0], Some(cookie ^ 1), None);
    sim.core
        .handle_datagram(now, Listener::OpenVpnUdp, a, &wrong);
    assert_eq!(sim.core.drops().get(Drop::BadCookie), 2);
    assert_eq!(sim.core.tunnel_count(), tunnels);
    // Too late: the window is over.
    let late = sim.now + secs(120);
    sim.core
        .handle_datagram(late, Listener::OpenVpnUdp, a, &ack);
    assert_eq!(sim.core.drops().get(Drop::BadCookie), 3);
    assert_eq!(sim.core.tunnel_count(), tunnels);
    // The right one in time: a session, which acknowledges the client's reset.
    sim.core.handle_datagram(now, Listener::OpenVpnUdp, a, &ack);
    assert_eq!(sim.core.tunnel_count(), tunnels + 1);
    let out = transmits(&mut sim);
    let acked = out.iter().any(|(_, b)| {
        matches!(Packet::parse(b), Ok(Packet::Control(p))
            if p.session_id == cookie && p.remote_session_id == Some(77) && p.acks.iter().any(|i| i == 0))
    });
    assert!(
        acked,
        "the new session did not acknowledge the reset: {out:?}"
    );
}

#[test]
fn one_address_cannot_hold_more_than_its_share_of_handshakes() {
    // One worker: the gateway steers by source address, so one address's handshakes all
    // land on one worker (the simulation steers by address and port).
    let (mut sim, _c) = connected_on(14, 1);
    let tunnels = sim.core.tunnel_count();
    let now = sim.now;
    for port in 0..100u16 {
        let from: SocketAddr = SocketAddr::new("198.18.7.7".parse().unwrap(), 10_000 + port);
        let sid = 500 + u64::from(port);
        sim.core
            .handle_datagram(now, Listener::OpenVpnUdp, from, &reset(sid));
        let out = transmits(&mut sim);
        let Ok(Packet::Control(p)) = Packet::parse(&out[0].1) else {
            panic!("no answer")
        };
        let ack = plain(Opcode::AckV1, sid, &[0], Some(p.session_id), None);
        sim.core
            .handle_datagram(now, Listener::OpenVpnUdp, from, &ack);
        transmits(&mut sim);
    }
    assert_eq!(sim.core.tunnel_count(), tunnels + 64);
    assert_eq!(sim.core.drops().get(Drop::Handshakes), 36);
}
