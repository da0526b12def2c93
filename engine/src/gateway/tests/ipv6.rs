//! IPv6 inside tunnels (`client_pool_v6`): an OpenVPN client's IPv6 packets reach TUN and
//! TUN's reach it, both families share one tunnel, a source the client does not own is
//! dropped as spoofed, link-local chatter as `ipv6`; an IKEv2 client that did not ask for
//! IPv6 gets none; without the pool every IPv6 packet is an `ipv6` drop.

use std::net::Ipv6Addr;
use std::time::Duration;

use super::sim::{Client, LAN, Link, Options, Proto, Sim};
use crate::gateway::{CoreConfig, Drop, GatewayCore, Listener};
use crate::openvpn::DataOutcome;
use crate::pool6::Ipv6Pool;

const POOL_V6: &str = "fd00:6a7e:1::/64";
const LAN_HOST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 7);

/// An ICMPv6 echo request (checksum not filled: the gateway does not look at it).
pub(super) fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, tag: u8) -> Vec<u8> {
    let payload = [128, 0, 0, 0, 0, 1, 0, tag];
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[58, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&payload);
    p
}

fn sim(seed: u64, pool_v6: Option<&str>) -> (Sim, [usize; 3]) {
    let mut sim = Sim::new(
        seed,
        Options {
            link: Link::clean(),
            workers: 1,
            pool_v6: pool_v6.map(|p| p.parse().unwrap()),
            ..Options::default()
        },
    );
    let udp = sim.add_ovpn_udp(0);
    let tcp = sim.add_ovpn_tcp(1);
    let ike = sim.add_ike(2);
    sim.connect_all(&[udp, tcp, ike], Duration::from_secs(30));
    sim.run_for(Duration::from_secs(1));
    (sim, [udp, tcp, ike])
}

/// Client `cl` sends `inner`; what the core writes to TUN, if anything.
fn up(
    core: &mut GatewayCore,
    now: std::time::Instant,
    cl: &mut Client,
    inner: &[u8],
) -> Option<Vec<u8>> {
    let mut wire = Vec::new();
    match &mut cl.proto {
        Proto::Ovpn(o) => {
            o.session.encrypt(now, inner, &mut wire).unwrap();
            match o.stream {
                Some(s) => core.handle_stream_packet(now, s, &wire),
                None => core.handle_datagram(now, Listener::OpenVpnUdp, cl.addr, &wire),
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
            core.handle_datagram(now, Listener::IkeNatT, cl.natt_addr, esp)
        }
    }
    .map(<[u8]>::to_vec)
}

/// The core routes `inner` from TUN; what OpenVPN client `cl` opens, if it got there.
fn down(
    core: &mut GatewayCore,
    now: std::time::Instant,
    cl: &mut Client,
    inner: &[u8],
) -> Option<Vec<u8>> {
    let (_, wire) = core.handle_tun_packet(now, inner)?;
    let Proto::Ovpn(o) = &mut cl.proto else {
        panic!("{}: not an OpenVPN client", cl.name);
    };
    let mut plain = Vec::new();
    let got = o.session.handle_data(now, wire, wire[0] & 7, &mut plain);
    let Ok(DataOutcome::Packet(r)) = got else {
        panic!("{}: {got:?}", cl.name);
    };
    Some(plain[r].to_vec())
}

#[test]
fn openvpn_clients_carry_ipv6_both_ways_and_spoofing_is_dropped() {
    let (mut sim, [udp, tcp, ike]) = sim(6001, Some(POOL_V6));
    let pool = Ipv6Pool::new(sim.pool, POOL_V6.parse().unwrap()).unwrap();
    let now = sim.now;
    let v6 = |sim: &Sim, c: usize| pool.address_of(sim.clients[c].address.unwrap());
    let (a, b) = (v6(&sim, udp), v6(&sim, tcp));
    assert_ne!(a, b);
    for (c, own, other) in [(udp, a, b), (tcp, b, a)] {
        let core = sim.core.only();
        let cl = &mut sim.clients[c];
        // Up: its own address passes unchanged.
        let p = icmp6(own, LAN_HOST_V6, 1);
        assert_eq!(
            up(core, now, cl, &p).as_deref(),
            Some(&p[..]),
            "{}",
            cl.name
        );
        // Down: the LAN host's reply reaches it.
        let reply = icmp6(LAN_HOST_V6, own, 2);
        assert_eq!(
            down(core, now, cl, &reply).as_deref(),
            Some(&reply[..]),
            "{}",
            cl.name
        );
        // Another client's address, or one outside the pool: spoofed.
        let spoofed = core.drops().get(Drop::Spoofed);
        for src in [
            other,
            "fd00:6a7e:1::77".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ] {
            assert_eq!(
                up(core, now, cl, &icmp6(src, LAN_HOST_V6, 3)),
                None,
                "{}",
                cl.name
            );
        }
        assert_eq!(core.drops().get(Drop::Spoofed), spoofed + 3, "{}", cl.name);
        // A router solicitation (link-local source, multicast destination): `ipv6`.
        let ipv6 = core.drops().get(Drop::Ipv6);
        let rs = icmp6("fe80::1".parse().unwrap(), "ff02::2".parse().unwrap(), 4);
        assert_eq!(up(core, now, cl, &rs), None);
        assert_eq!(core.drops().get(Drop::Ipv6), ipv6 + 1);
        // A truncated IPv6 header: malformed, no panic.
        let malformed = core.drops().get(Drop::Malformed);
        assert_eq!(up(core, now, cl, &p[..20]), None);
        assert_eq!(core.drops().get(Drop::Malformed), malformed + 1);
        // IPv4 still works through the same tunnel.
        let own4 = cl.address.unwrap();
        let lan4 = LAN.parse::<ipnet::Ipv4Net>().unwrap().network();
        let p4 = super::model::ipv4(own4, lan4, 7, 0);
        assert_eq!(up(core, now, cl, &p4).as_deref(), Some(&p4[..]));
    }
    // The IKEv2 client did not ask for IPv6 (our initiator requests IPv4 only): nothing
    // routes to its would-be IPv6 address, and it may not send from it.
    let ike6 = v6(&sim, ike);
    let core = sim.core.only();
    let noroute = core.drops().get(Drop::NoRoute);
    assert!(
        core.handle_tun_packet(now, &icmp6(LAN_HOST_V6, ike6, 5))
            .is_none()
    );
    assert_eq!(core.drops().get(Drop::NoRoute), noroute + 1);
    let spoofed = core.drops().get(Drop::Spoofed);
    assert_eq!(
        up(
            core,
            now,
            &mut sim.clients[ike],
            &icmp6(ike6, LAN_HOST_V6, 6)
        ),
        None
    );
    assert_eq!(core.drops().get(Drop::Spoofed), spoofed + 1);
}

#[test]
fn without_an_ipv6_pool_ipv6_is_dropped_as_ipv6() {
    let (mut sim, [udp, ..]) = sim(6002, None);
    let now = sim.now;
    let core = sim.core.only();
    let ipv6 = core.drops().get(Drop::Ipv6);
    let p = icmp6("fd00:6a7e:1::2".parse().unwrap(), LAN_HOST_V6, 1);
    assert_eq!(up(core, now, &mut sim.clients[udp], &p), None);
    assert!(
        core.handle_tun_packet(
            now,
            &icmp6(LAN_HOST_V6, "fd00:6a7e:1::2".parse().unwrap(), 2)
        )
        .is_none()
    );
    assert_eq!(core.drops().get(Drop::Ipv6), ipv6 + 2);
    assert_eq!(core.drops().get(Drop::Spoofed), 0);
}

#[test]
fn ipv6_for_a_client_reaches_it_from_every_worker() {
    // Three workers: a TUN packet lands on any of them (by its hash here, by the kernel's
    // queue choice in gatehoused); one for a client's IPv6 address goes to the worker that
    // holds the client, as its IPv4 packets do.
    let mut sim = Sim::new(
        6003,
        Options {
            link: Link::clean(),
            workers: 3,
            pool_v6: Some(POOL_V6.parse().unwrap()),
            ..Options::default()
        },
    );
    let clients: Vec<usize> = (0..4)
        .map(|i| {
            if i % 2 == 0 {
                sim.add_ovpn_udp(i)
            } else {
                sim.add_ovpn_tcp(i)
            }
        })
        .collect();
    sim.connect_all(&clients, Duration::from_secs(30));
    sim.run_for(Duration::from_secs(1));
    let pool = Ipv6Pool::new(sim.pool, POOL_V6.parse().unwrap()).unwrap();
    let now = sim.now;
    for &c in &clients {
        let own = pool.address_of(sim.clients[c].address.unwrap());
        let want = sim.expected_dest(c);
        for tag in 0..24u8 {
            let p = icmp6(LAN_HOST_V6, own, tag);
            let Some((dest, wire)) = sim.core.handle_tun_packet(now, &p) else {
                panic!("{own} (tag {tag}) not routed: {}", sim.core.drops());
            };
            assert_eq!(dest, want, "{own}");
            let wire = wire.to_vec();
            let Proto::Ovpn(o) = &mut sim.clients[c].proto else {
                unreachable!()
            };
            let mut plain = Vec::new();
            let got = o.session.handle_data(now, &wire, wire[0] & 7, &mut plain);
            let Ok(DataOutcome::Packet(r)) = got else {
                panic!("{own}: {got:?}");
            };
            assert_eq!(&plain[r], &p[..]);
        }
    }
    assert_eq!(sim.core.drops().get(Drop::NoRoute), 0);
}

#[test]
fn a_reload_with_another_ipv6_pool_ends_the_sessions_and_their_ipv6_routes() {
    let (mut sim, [udp, tcp, _ike]) = sim(6004, Some(POOL_V6));
    let pool = Ipv6Pool::new(sim.pool, POOL_V6.parse().unwrap()).unwrap();
    let old: Vec<Ipv6Addr> = [udp, tcp]
        .iter()
        .map(|&c| pool.address_of(sim.clients[c].address.unwrap()))
        .collect();
    let now = sim.now;
    // An invalid IPv6 pool is refused, naming the key.
    let bad = sim.core.reconfigure(now, || CoreConfig {
        client_pool_v6: Some("fe80::/64".parse().unwrap()),
        ..(sim.config)()
    });
    let e = bad.unwrap_err().to_string();
    assert!(e.contains("`client_pool_v6`"), "{e}");
    // The same configuration again ends nothing.
    assert_eq!(sim.core.reconfigure(now, || (sim.config)()).unwrap(), 0);
    // Another IPv6 pool: every remote-access session is told to reconnect.
    let ended = sim
        .core
        .reconfigure(now, || CoreConfig {
            client_pool_v6: Some("fd00:6a7e:9::/64".parse().unwrap()),
            ..(sim.config)()
        })
        .unwrap();
    assert_eq!(ended, 3);
    sim.run_for(Duration::from_secs(1));
    let noroute = sim.core.drops().get(Drop::NoRoute);
    for a in &old {
        assert!(
            sim.core
                .handle_tun_packet(now, &icmp6(LAN_HOST_V6, *a, 9))
                .is_none()
        );
    }
    assert_eq!(sim.core.drops().get(Drop::NoRoute), noroute + 2);
}
