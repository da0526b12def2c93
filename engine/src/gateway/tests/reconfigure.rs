//! A reloaded configuration on a running core: an unchanged site connection keeps its SA and
//! its traffic, a removed one ends (and stops routing), one added back comes up again; a new
//! client pool does not touch sites, and remote-access clients reconnect into it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::alloc::{EAST, WEST, carry, site_pair, west_config as west_cfg};
use crate::gateway::{Dest, Event, GatewayCore, ReconfigureError};

/// Runs both cores for `span`; returns the site events each saw (up, down).
fn run(
    west: &mut GatewayCore,
    east: &mut GatewayCore,
    now: &mut Instant,
    span: Duration,
) -> [(usize, usize); 2] {
    let end = *now + span;
    let mut seen = [(0, 0); 2];
    while *now < end {
        for core in [&mut *west, &mut *east] {
            if core.poll_timeout().is_some_and(|t| t <= *now) {
                core.handle_timeout(*now);
            }
        }
        while carry(west, WEST, east, *now) | carry(east, EAST, west, *now) {}
        let [sw, se] = &mut seen;
        for (core, s) in [(&mut *west, sw), (&mut *east, se)] {
            while let Some(e) = core.poll_event() {
                match e {
                    Event::SiteUp { .. } => s.0 += 1,
                    Event::SiteDown { .. } => s.1 += 1,
                    _ => {}
                }
            }
        }
        *now += Duration::from_millis(10);
    }
    seen
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

fn routed_to_east(west: &mut GatewayCore, now: Instant) -> bool {
    let p = ipv4(Ipv4Addr::new(10, 1, 0, 7), Ipv4Addr::new(10, 2, 0, 9));
    matches!(west.handle_tun_packet(now, &p), Some((Dest::Udp { .. }, _)))
}

#[test]
fn a_reload_keeps_untouched_sites_ends_removed_ones_and_moves_the_pool() {
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let (mut west, mut east) = site_pair(start);
    let mut now = start;
    let seen = run(&mut west, &mut east, &mut now, Duration::from_secs(5));
    assert_eq!((seen[0].0, seen[1].0), (1, 1), "the site did not come up");
    assert!(routed_to_east(&mut west, now));

    // The same configuration again (and new DNS): nothing ends.
    let mut same = west_cfg(start);
    same.dns = vec!["10.1.0.53".parse().unwrap()];
    assert_eq!(west.reconfigure(now, same), Ok(0));
    let seen = run(&mut west, &mut east, &mut now, Duration::from_secs(3));
    assert_eq!(seen, [(0, 0); 2], "an untouched site went down or up again");
    assert!(routed_to_east(&mut west, now));
    assert_eq!(west.status(now).sites[0].state, "connected");

    // An unusable pool is refused whole.
    let mut pool = west_cfg(start);
    pool.client_pool = "172.16.50.0/31".parse().unwrap();
    pool.sites.clear();
    assert!(matches!(
        west.reconfigure(now, pool),
        Err(ReconfigureError::Pool(..))
    ));
    assert_eq!(west.status(now).sites.len(), 1);
    // A new pool: the gateway takes its first address; the site is not touched.
    let mut pool = west_cfg(start);
    pool.client_pool = "172.16.50.0/24".parse().unwrap();
    assert_eq!(west.reconfigure(now, pool), Ok(0));
    assert_eq!(west.gateway_addr(), Ipv4Addr::new(172, 16, 50, 1));
    let seen = run(&mut west, &mut east, &mut now, Duration::from_secs(3));
    assert_eq!(seen, [(0, 0); 2], "a pool change touched the site");
    assert!(routed_to_east(&mut west, now));

    // The connection removed: its SA ends, the peer is told, nothing routes there.
    let mut removed = west_cfg(start);
    removed.sites.clear();
    assert_eq!(west.reconfigure(now, removed), Ok(1));
    let seen = run(&mut west, &mut east, &mut now, Duration::from_secs(3));
    assert!(west.status(now).sites.is_empty());
    assert!(!routed_to_east(&mut west, now));
    assert_eq!(seen[1].1, 1, "east was not told its SA is gone: {seen:?}");
    // Nor does it come back by itself.
    let seen = run(&mut west, &mut east, &mut now, Duration::from_secs(40));
    assert_eq!(seen[0], (0, 0), "a removed connection started again");

    // Added back: it comes up again.
    assert_eq!(west.reconfigure(now, west_cfg(start)), Ok(0));
    let seen = run(&mut west, &mut east, &mut now, Duration::from_secs(5));
    assert_eq!(
        (seen[0].0, seen[1].0),
        (1, 1),
        "the re-added site did not come up"
    );
    assert!(routed_to_east(&mut west, now));
    assert_eq!(west.status(now).sites.len(), 1);
}
