//! A site connection with its own interface (`site_iface.rs`): packets from the interface go
//! to the connection's SA whatever their destination, decrypted packets come out for the
//! interface (not the gateway's TUN), and sources in the gateway's own space are refused.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::alloc::{EAST, WEST, carry, site_config, site_core};
use super::model::ipv4;
use crate::entropy::SeededEntropy;
use crate::gateway::{Dest, Drop, EntropyFactory, Event, GatewayCore, Listener};

/// The connection's name at west (`site_config` names it after the peer).
const CONN: &str = "to-198.51.100.2";

/// West with an own-interface connection to east (no static prefixes), and east.
fn pair(start: Instant) -> (GatewayCore, GatewayCore) {
    let mut cfg = site_config(
        start,
        WEST,
        "10.1.0.0/16",
        "172.16.200.0/24",
        EAST,
        "10.2.0.0/16",
        true,
    );
    cfg.sites[0].own_interface = true;
    cfg.sites[0].remote_address_space.clear();
    let mut n = 0u64;
    let entropy: EntropyFactory = Box::new(move || {
        n += 1;
        Box::new(SeededEntropy::new(7000 + n))
    });
    let west = GatewayCore::new(cfg, entropy).unwrap();
    let east = site_core(
        start,
        EAST,
        "10.2.0.0/16",
        "172.16.201.0/24",
        WEST,
        "10.1.0.0/16",
        false,
    );
    (west, east)
}

/// Runs both cores on a virtual clock until each reports its site up; returns the time.
pub(super) fn bring_up(west: &mut GatewayCore, east: &mut GatewayCore, start: Instant) -> Instant {
    let mut now = start;
    let mut up = (false, false);
    while !(up.0 && up.1) {
        assert!(now < start + Duration::from_secs(30), "no SA: {up:?}");
        for core in [&mut *west, &mut *east] {
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now);
            }
        }
        while carry(west, WEST, east, now) | carry(east, EAST, west, now) {}
        for (core, up) in [(&mut *west, &mut up.0), (&mut *east, &mut up.1)] {
            while let Some(e) = core.poll_event() {
                *up |= matches!(e, Event::SiteUp { .. });
            }
        }
        now += Duration::from_millis(10);
    }
    now
}

/// East seals `p` (read from its TUN) and west opens it: what west returns for its TUN.
fn east_to_west(east: &mut GatewayCore, west: &mut GatewayCore, now: Instant, p: &[u8]) -> bool {
    let Some((Dest::Udp { to, .. }, esp)) = east.handle_tun_packet(now, p) else {
        panic!("east did not route it: {}", east.drops());
    };
    assert_eq!(to.port(), 4500);
    let src = std::net::SocketAddr::new(EAST.parse().unwrap(), 4500);
    west.handle_datagram(now, Listener::IkeNatT, src, esp)
        .is_some()
}

#[test]
fn own_interface_packets_go_to_the_sa_and_come_back_for_the_interface() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let (mut west, mut east) = pair(start);
    let now = bring_up(&mut west, &mut east, start);
    let west_host = Ipv4Addr::new(10, 1, 0, 7);
    let east_host = Ipv4Addr::new(10, 2, 0, 9);

    // West's kernel routed it into the interface: no router entry needed.
    let out = ipv4(west_host, east_host, 1, 40);
    assert!(
        west.handle_tun_packet(now, &out).is_none(),
        "the router knows no site prefix"
    );
    assert_eq!(west.drops().get(Drop::NoRoute), 1);
    let Some((Dest::Udp { to, .. }, esp)) = west.handle_interface_packet(now, CONN, &out) else {
        panic!("not sealed for the connection: {}", west.drops());
    };
    let esp = esp.to_vec();
    let src = std::net::SocketAddr::new(WEST.parse().unwrap(), 4500);
    assert_eq!(to.port(), 4500);
    assert_eq!(
        east.handle_datagram(now, Listener::IkeNatT, src, &esp),
        Some(&out[..])
    );

    // Back: for the interface, not for the gateway's TUN.
    let back = ipv4(east_host, west_host, 2, 100);
    assert!(!east_to_west(&mut east, &mut west, now, &back));
    assert_eq!(west.poll_interface_packet(), Some((CONN.to_owned(), back)));
    assert_eq!(west.poll_interface_packet(), None);

    // A source the site might have learned by BGP (outside its selectors' narrowing is
    // east's business): accepted; the kernel's rp_filter judges it.
    let other = ipv4(Ipv4Addr::new(10, 2, 200, 1), west_host, 3, 0);
    assert!(!east_to_west(&mut east, &mut west, now, &other));
    assert_eq!(west.poll_interface_packet(), Some((CONN.to_owned(), other)));

    // A source in west's own address space or pool: refused.
    for spoof in [Ipv4Addr::new(10, 1, 9, 9), Ipv4Addr::new(172, 16, 200, 5)] {
        let p = ipv4(spoof, west_host, 4, 0);
        assert!(!east_to_west(&mut east, &mut west, now, &p));
        assert_eq!(west.poll_interface_packet(), None);
    }
    assert_eq!(west.drops().get(Drop::Spoofed), 2);

    // An unknown connection name.
    assert!(west.handle_interface_packet(now, "nope", &out).is_none());
    assert_eq!(west.drops().get(Drop::NoRoute), 2);
}
