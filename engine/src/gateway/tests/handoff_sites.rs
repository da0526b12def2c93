//! A site-to-site SA the peer started moves to a standby (issue 17) in memory: the peer
//! gateway carries on with the standby's core without a new IKE_SA_INIT, traffic passes both
//! ways, the standby never seals with an ESP sequence number the first core used, and the
//! peer's CHILD and IKE rekeys later are answered by the standby.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::alloc::{EAST, WEST, arrival, carry, site_core, site_pair};
use super::model::ipv4;
use crate::gateway::{Dest, Event, GatewayCore, Protocol};
use crate::ikev2::initiator::DEFAULT_CHILD_LIFETIME;

/// Runs both cores' timers and carries their datagrams for `span`, in 10 ms steps; returns
/// the events each core reported meanwhile.
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
        while let Some(e) = west.poll_event() {
            events.0.push(e);
        }
        while let Some(e) = east.poll_event() {
            events.1.push(e);
        }
        *now += step;
    }
    events
}

/// One packet from `a`'s TUN through the site SA to `b`'s TUN; the ESP datagram on the way.
fn send(a: &mut GatewayCore, a_ip: &str, b: &mut GatewayCore, now: Instant, p: &[u8]) -> Vec<u8> {
    let Some((Dest::Udp { from, to }, esp)) = a.handle_tun_packet(now, p) else {
        panic!("not routed to the site: {}", a.drops());
    };
    let esp = esp.to_vec();
    let (on, src) = arrival(a_ip, from, to);
    let delivered = b.handle_datagram(now, on, src, &esp) == Some(p);
    assert!(delivered, "not delivered: {}", b.drops());
    esp
}

/// The sequence number of an ESP-in-UDP datagram.
fn esp_seq(esp: &[u8]) -> u32 {
    u32::from_be_bytes(esp[4..8].try_into().unwrap())
}

#[test]
fn a_site_sa_the_peer_started_survives_a_standby_takeover() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let (mut west, mut east) = site_pair(start);
    let mut now = start;
    let (w, e) = run(
        &mut west,
        &mut east,
        &mut now,
        Duration::from_secs(5),
        Duration::from_millis(10),
    );
    assert!(w.iter().any(|e| matches!(e, Event::SiteUp { .. })), "{w:?}");
    assert!(e.iter().any(|e| matches!(e, Event::SiteUp { .. })), "{e:?}");
    let west_host = Ipv4Addr::new(10, 1, 0, 7);
    let east_host = Ipv4Addr::new(10, 2, 0, 9);
    let mut last_seq = 0;
    for i in 0..20u64 {
        send(
            &mut west,
            WEST,
            &mut east,
            now,
            &ipv4(west_host, east_host, i, 40),
        );
        let esp = send(
            &mut east,
            EAST,
            &mut west,
            now,
            &ipv4(east_host, west_host, i, 40),
        );
        last_seq = esp_seq(&esp);
    }
    // An ESP packet west sent before the copy, to replay later.
    let before = ipv4(west_host, east_host, 99, 10);
    let Some((Dest::Udp { from, to }, replay)) = west.handle_tun_packet(now, &before) else {
        panic!("not routed");
    };
    let replay = replay.to_vec();
    let (on, src) = arrival(WEST, from, to);
    assert_eq!(
        east.handle_datagram(now, on, src, &replay),
        Some(&before[..])
    );

    // The copy, through JSON as through etcd.
    let copy = serde_json::to_vec(&east.snapshot_for_standby(now)).unwrap();
    // East serves on after the copy (sealing more), then dies without a word.
    for i in 0..50u64 {
        let esp = send(
            &mut east,
            EAST,
            &mut west,
            now,
            &ipv4(east_host, west_host, 100 + i, 40),
        );
        last_seq = esp_seq(&esp);
    }
    drop(east);
    let mut standby = site_core(
        start,
        EAST,
        "10.2.0.0/16",
        "172.16.201.0/24",
        WEST,
        "10.1.0.0/16",
        false,
    );
    let taken = standby
        .import_handoff(now, serde_json::from_slice(&copy).unwrap())
        .expect("the copy imports");
    assert_eq!(taken, 1, "the site SA moved");
    let status = standby.status(now);
    let site = &status.sites[0];
    assert_eq!(site.state, "connected", "{site:?}");
    assert_eq!(site.sas.len(), 1);
    assert!(
        site.sas[0].established_secs.unwrap_or(0) >= 5,
        "the SA keeps its age: {site:?}"
    );
    assert_eq!(status.counters.handshakes_ok.get(Protocol::Site), &0);
    let mut standby_events = Vec::new();
    while let Some(e) = standby.poll_event() {
        standby_events.push(e);
    }
    assert!(
        standby_events
            .iter()
            .any(|e| matches!(e, Event::SiteUp { .. })),
        "{standby_events:?}"
    );

    // The replay from before the copy is refused; traffic passes both ways.
    assert_eq!(standby.handle_datagram(now, on, src, &replay), None);
    for i in 0..20u64 {
        send(
            &mut west,
            WEST,
            &mut standby,
            now,
            &ipv4(west_host, east_host, 200 + i, 40),
        );
        let esp = send(
            &mut standby,
            EAST,
            &mut west,
            now,
            &ipv4(east_host, west_host, 200 + i, 40),
        );
        assert!(
            esp_seq(&esp) > last_seq,
            "the standby sealed sequence number {} after the first core's {last_seq}",
            esp_seq(&esp)
        );
    }

    // West's CHILD SA reaches its lifetime: west rekeys it with the standby (DPDs on the way).
    let (w, s) = run(
        &mut west,
        &mut standby,
        &mut now,
        DEFAULT_CHILD_LIFETIME + Duration::from_secs(120),
        Duration::from_secs(1),
    );
    let downs = |ev: &[Event]| {
        ev.iter()
            .filter(|e| matches!(e, Event::SiteDown { .. } | Event::SiteUp { .. }))
            .count()
    };
    assert_eq!(
        downs(&w),
        0,
        "west saw the connection go down or come up: {w:?}"
    );
    assert_eq!(downs(&s), 0, "the standby lost the connection: {s:?}");
    let west_status = west.status(now);
    assert!(
        *west_status.counters.rekeys.get(Protocol::Site) >= 1,
        "west did not rekey: {:?}",
        west_status.counters
    );
    assert_eq!(
        west_status.counters.handshakes_ok.get(Protocol::Site),
        &1,
        "west made a new IKE SA"
    );
    for i in 0..20u64 {
        send(
            &mut west,
            WEST,
            &mut standby,
            now,
            &ipv4(west_host, east_host, 300 + i, 40),
        );
        send(
            &mut standby,
            EAST,
            &mut west,
            now,
            &ipv4(east_host, west_host, 300 + i, 40),
        );
    }
    assert_eq!(
        standby.drops().total(),
        1,
        "only the replay: {}",
        standby.drops()
    );
}
