//! TCP MSS clamping on OpenVPN tunnels (`mssfix 1492 mtu`, as a stock OpenVPN 2.6 server):
//! a client's SYN comes out of TUN with its MSS lowered, a LAN host's SYN-ACK reaches the
//! client lowered too, both with correct TCP checksums; everything else passes unchanged,
//! IKEv2 tunnels are not clamped, and a clamped SYN allocates nothing once warm.

use super::sim::{Client, LAN_HOST, Proto, Sim};
use crate::alloc_count::count;
use crate::gateway::{Dest, GatewayCore, Listener};
use crate::openvpn::DataOutcome;
use crate::wire::mss::testing::{linux_syn_options, mss_of, tcp_checksum_ok, tcp_packet};

const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;

/// `mssfix 1492 mtu` over IPv4 (the simulated clients' addresses): UDP, TCP transport.
const UDP_MSS: u16 = 1492 - 20 - 8 - 24 - 40;
const TCP_MSS: u16 = 1492 - 20 - 20 - 2 - 24 - 40;

fn connected() -> (Sim, [usize; 3]) {
    Sim::one_of_each(1624)
}

/// Client `cl` sends `inner`; what the core writes to TUN.
fn up(
    core: &mut GatewayCore,
    sim_now: std::time::Instant,
    cl: &mut Client,
    inner: &[u8],
) -> Vec<u8> {
    let addr = cl.addr;
    let natt = cl.natt_addr;
    let mut wire = Vec::new();
    let tun = match &mut cl.proto {
        Proto::Ovpn(o) => {
            o.session.encrypt(sim_now, inner, &mut wire).unwrap();
            match o.stream {
                Some(s) => core.handle_stream_packet(sim_now, s, &wire),
                None => core.handle_datagram(sim_now, Listener::OpenVpnUdp, addr, &wire),
            }
        }
        Proto::Ike(i) => {
            wire.resize(inner.len() + 256, 0);
            let esp = i
                .outbound
                .as_mut()
                .unwrap()
                .encrypt(inner, &mut wire)
                .unwrap();
            core.handle_datagram(sim_now, Listener::IkeNatT, natt, esp)
        }
    };
    let Some(tun) = tun else {
        panic!("{}: nothing for TUN: {}", cl.name, core.drops());
    };
    tun.to_vec()
}

/// The core routes `inner` from TUN to client `cl`; what the client opens.
fn down(
    core: &mut GatewayCore,
    now: std::time::Instant,
    cl: &mut Client,
    want: Dest,
    inner: &[u8],
) -> Vec<u8> {
    let Some((dest, wire)) = core.handle_tun_packet(now, inner) else {
        panic!("{}: not routed: {}", cl.name, core.drops());
    };
    assert_eq!(dest, want, "{}", cl.name);
    let mut plain = Vec::new();
    match &mut cl.proto {
        Proto::Ovpn(o) => {
            let got = o.session.handle_data(now, wire, wire[0] & 7, &mut plain);
            let Ok(DataOutcome::Packet(r)) = got else {
                panic!("{}: {got:?}", cl.name);
            };
            plain[r].to_vec()
        }
        Proto::Ike(i) => {
            let spi = crate::esp::EspInbound::packet_spi(wire);
            let sa = i.inbound.iter_mut().find(|s| Some(s.spi()) == spi).unwrap();
            plain.resize(wire.len(), 0);
            sa.decrypt(wire, &mut plain).unwrap().packet.to_vec()
        }
    }
}

/// Only the MSS value and the TCP checksum differ between `a` and `b` (4 bytes at most).
fn only_mss_changed(a: &[u8], b: &[u8]) {
    assert_eq!(a.len(), b.len());
    let diffs = a.iter().zip(b).filter(|(x, y)| x != y).count();
    assert!(diffs <= 4, "{diffs} bytes changed");
}

#[test]
fn openvpn_syn_and_syn_ack_are_clamped_both_ways() {
    let (mut sim, clients) = connected();
    for (c, want_mss) in [(clients[0], UDP_MSS), (clients[1], TCP_MSS)] {
        assert_eq!(want_mss, if c == clients[0] { 1400 } else { 1386 });
        let own = sim.clients[c].address.unwrap();
        let want = sim.expected_dest(c);
        let now = sim.now;
        let core = sim.core.only();
        let cl = &mut sim.clients[c];

        // Client -> LAN: a SYN advertising 1460 (a client that does not clamp itself).
        let syn = tcp_packet(own, LAN_HOST, SYN, &[], &linux_syn_options(1460), &[]);
        let tun = up(core, now, cl, &syn);
        assert_eq!(mss_of(&tun), Some(want_mss), "{}", cl.name);
        assert!(tcp_checksum_ok(&tun), "{}", cl.name);
        only_mss_changed(&syn, &tun);

        // LAN -> client: the SYN-ACK advertising 1460.
        let syn_ack = tcp_packet(LAN_HOST, own, SYN_ACK, &[], &linux_syn_options(1460), &[]);
        let got = down(core, now, cl, want, &syn_ack);
        assert_eq!(mss_of(&got), Some(want_mss), "{}", cl.name);
        assert!(tcp_checksum_ok(&got), "{}", cl.name);
        only_mss_changed(&syn_ack, &got);

        // Already small enough, or not a SYN: unchanged both ways.
        for p in [
            tcp_packet(own, LAN_HOST, SYN, &[], &linux_syn_options(1200), &[]),
            tcp_packet(own, LAN_HOST, ACK, &[], &linux_syn_options(1460), b"data"),
        ] {
            assert_eq!(up(core, now, cl, &p), p, "{}", cl.name);
        }
        for p in [
            tcp_packet(
                LAN_HOST,
                own,
                SYN_ACK,
                &[],
                &linux_syn_options(want_mss),
                &[],
            ),
            tcp_packet(LAN_HOST, own, ACK, &[], &linux_syn_options(1460), b"data"),
        ] {
            assert_eq!(down(core, now, cl, want, &p), p, "{}", cl.name);
        }

        // A clamped SYN-ACK from TUN allocates nothing in the core (the work buffers are
        // warm now).
        let (_, n) = count(|| {
            let (_, wire) = core.handle_tun_packet(now, &syn_ack).unwrap();
            wire.len()
        });
        assert_eq!(n, 0, "{}: clamping TUN -> client allocates", cl.name);
        // The packet still reaches the client (the count above used a packet id).
        let got = down(core, now, cl, want, &syn_ack);
        assert_eq!(mss_of(&got), Some(want_mss));
    }
    let drops = sim.core.only().drops().total();
    assert_eq!(drops, 0, "{}", sim.core.only().drops());
}

#[test]
fn ikev2_tunnels_are_not_clamped() {
    let (mut sim, clients) = connected();
    let c = clients[2];
    let own = sim.clients[c].address.unwrap();
    let want = sim.expected_dest(c);
    let now = sim.now;
    let core = sim.core.only();
    let cl = &mut sim.clients[c];
    let syn = tcp_packet(own, LAN_HOST, SYN, &[], &linux_syn_options(1460), &[]);
    assert_eq!(up(core, now, cl, &syn), syn);
    let syn_ack = tcp_packet(LAN_HOST, own, SYN_ACK, &[], &linux_syn_options(1460), &[]);
    assert_eq!(down(core, now, cl, want, &syn_ack), syn_ack);
}
