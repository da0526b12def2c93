//! A site-to-site SA this gateway started (`initiate = true`) moves to a standby (issue 17)
//! in memory: the peer carries on with the standby's core without a new IKE_SA_INIT, the
//! standby's own attempt at the connection gives way to the copy, traffic passes both ways,
//! the standby never seals with an ESP sequence number the first core used, and the
//! standby rekeys the CHILD SA itself when its lifetime (carried over) ends.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::alloc::{EAST, WEST, arrival, carry, seeded_core, site_pair, west_config};
use super::model::ipv4;
use crate::gateway::{Dest, Event, GatewayCore, Protocol};
use crate::ikev2::initiator::DEFAULT_CHILD_LIFETIME;

/// Runs both cores' timers and carries their datagrams for `span` in `step`s; returns the
/// events each reported.
fn run(
    west: &mut GatewayCore,
    east: &mut GatewayCore,
    now: &mut Instant,
    span: Duration,
    step: Duration,
) -> (Vec<Event>, Vec<Event>) {
    let end = *now + span;
    let mut events = (Vec::new(), Vec::new());
    while *now < end {
        for core in [&mut *west, &mut *east] {
            if core.poll_timeout().is_some_and(|t| t <= *now) {
                core.handle_timeout(*now);
            }
        }
        while carry(west, WEST, east, *now) | carry(east, EAST, west, *now) {}
        events.0.extend(std::iter::from_fn(|| west.poll_event()));
        events.1.extend(std::iter::from_fn(|| east.poll_event()));
        *now += step;
    }
    events
}

/// One packet from `a`'s TUN through the site SA to `b`'s TUN; the ESP sequence number.
fn send(a: &mut GatewayCore, a_ip: &str, b: &mut GatewayCore, now: Instant, p: &[u8]) -> u32 {
    let Some((Dest::Udp { from, to }, esp)) = a.handle_tun_packet(now, p) else {
        panic!("not routed to the site: {}", a.drops());
    };
    let esp = esp.to_vec();
    let (on, src) = arrival(a_ip, from, to);
    assert!(
        b.handle_datagram(now, on, src, &esp) == Some(p),
        "not delivered: {}",
        b.drops()
    );
    u32::from_be_bytes(esp[4..8].try_into().unwrap())
}

#[test]
fn a_site_sa_we_started_survives_a_standby_takeover() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let (mut west, mut east) = site_pair(start);
    let mut now = start;
    let (w, _) = run(
        &mut west,
        &mut east,
        &mut now,
        Duration::from_secs(5),
        Duration::from_millis(10),
    );
    assert!(w.iter().any(|e| matches!(e, Event::SiteUp { .. })), "{w:?}");
    let (west_host, east_host) = (Ipv4Addr::new(10, 1, 0, 7), Ipv4Addr::new(10, 2, 0, 9));
    for i in 0..20u64 {
        send(
            &mut east,
            EAST,
            &mut west,
            now,
            &ipv4(east_host, west_host, i, 40),
        );
        send(
            &mut west,
            WEST,
            &mut east,
            now,
            &ipv4(west_host, east_host, i, 40),
        );
    }
    // The copy, through JSON as through etcd: west's SA is its own (initiated).
    let copy = serde_json::to_string(&west.snapshot_for_standby(now)).unwrap();
    assert!(
        copy.contains("\"initiated\":[{"),
        "nothing initiated copied"
    );
    // West seals on after the copy, then dies without a word.
    let mut last_seq = 0;
    for i in 0..50u64 {
        last_seq = send(
            &mut west,
            WEST,
            &mut east,
            now,
            &ipv4(west_host, east_host, 100 + i, 40),
        );
    }
    drop(west);
    // The standby has started its own attempt at the connection (it initiates like any
    // gateway; the attempt gets nowhere while the address is not its own).
    let mut standby = seeded_core(west_config(start), 9);
    standby.handle_timeout(now);
    while standby.poll_transmit().is_some() {}
    let taken = standby
        .import_handoff(now, serde_json::from_str(&copy).unwrap())
        .expect("the copy imports");
    assert_eq!(taken, 1, "the site SA moved");
    standby.handle_timeout(now);
    while standby.poll_transmit().is_some() {}
    let status = standby.status(now);
    let site = &status.sites[0];
    assert_eq!(site.state, "connected", "{site:?}");
    assert_eq!(
        site.sas.len(),
        1,
        "the standby's own attempt gave way: {site:?}"
    );
    assert!(
        site.sas[0].established_secs.unwrap_or(0) >= 5,
        "the SA keeps its age: {site:?}"
    );
    assert_eq!(status.counters.handshakes_ok.get(Protocol::Site), &0);
    let up: Vec<Event> = std::iter::from_fn(|| standby.poll_event()).collect();
    assert!(
        up.iter().any(|e| matches!(e, Event::SiteUp { .. })),
        "{up:?}"
    );
    // Traffic both ways, sequence numbers above the first core's.
    for i in 0..20u64 {
        send(
            &mut east,
            EAST,
            &mut standby,
            now,
            &ipv4(east_host, west_host, 200 + i, 40),
        );
        let seq = send(
            &mut standby,
            WEST,
            &mut east,
            now,
            &ipv4(west_host, east_host, 200 + i, 40),
        );
        assert!(
            seq > last_seq,
            "sealed {seq} after the first core's {last_seq}"
        );
    }
    // The CHILD SA's lifetime (carried over) ends: the standby rekeys it, east answers;
    // DPDs on the way use the copied message IDs.
    let (s, e) = run(
        &mut standby,
        &mut east,
        &mut now,
        DEFAULT_CHILD_LIFETIME + Duration::from_secs(120),
        Duration::from_secs(1),
    );
    let flaps = |ev: &[Event]| {
        ev.iter()
            .filter(|e| matches!(e, Event::SiteDown { .. } | Event::SiteUp { .. }))
            .count()
    };
    assert_eq!(flaps(&s), 0, "the standby lost the connection: {s:?}");
    assert_eq!(flaps(&e), 0, "east saw the connection go down or up: {e:?}");
    let st = standby.status(now);
    assert!(
        *st.counters.rekeys.get(Protocol::Site) >= 1,
        "the standby did not rekey: {:?}",
        st.counters
    );
    let east_status = east.status(now);
    assert_eq!(
        east_status.counters.handshakes_ok.get(Protocol::Site),
        &1,
        "east saw a new IKE SA"
    );
    for i in 0..20u64 {
        send(
            &mut east,
            EAST,
            &mut standby,
            now,
            &ipv4(east_host, west_host, 300 + i, 40),
        );
        send(
            &mut standby,
            WEST,
            &mut east,
            now,
            &ipv4(west_host, east_host, 300 + i, 40),
        );
    }
}
