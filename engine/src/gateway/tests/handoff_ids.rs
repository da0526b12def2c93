//! Message IDs after a takeover (issue 17): a standby's copy is up to `ha.interval` old, and
//! the peer may have checked liveness with the previous gateway after it, so its next
//! request carries a message ID past the copied counter. The standby accepts such a
//! liveness check once (`HANDOFF_ID_SLACK`) instead of dropping it until the peer declares
//! it dead; both for site SAs the peer started and SAs we started.

use std::time::{Duration, Instant};

use super::alloc::{EAST, WEST, carry, seeded_core, site_pair, west_config};
use crate::gateway::{Event, GatewayCore};

/// Runs both cores for `span` in 1 s steps; the site events each reported.
fn run(a: &mut GatewayCore, b: &mut GatewayCore, now: &mut Instant, span: Duration) -> usize {
    let end = *now + span;
    let mut flaps = 0;
    while *now < end {
        for core in [&mut *a, &mut *b] {
            if core.poll_timeout().is_some_and(|t| t <= *now) {
                core.handle_timeout(*now);
            }
            flaps += std::iter::from_fn(|| core.poll_event())
                .filter(|e| matches!(e, Event::SiteDown { .. } | Event::SiteUp { .. }))
                .count();
        }
        while carry(a, WEST, b, *now) | carry(b, EAST, a, *now) {}
        *now += Duration::from_secs(1);
    }
    flaps
}

/// West (initiator) and east (responder) up; returns them and the time.
fn up(start: Instant) -> (GatewayCore, GatewayCore, Instant) {
    let (mut west, mut east) = site_pair(start);
    let mut now = start;
    run(&mut west, &mut east, &mut now, Duration::from_secs(5));
    assert_eq!(west.status(now).sites[0].state, "connected");
    (west, east, now)
}

#[test]
fn a_liveness_check_past_the_copy_is_answered_by_the_standby_of_the_responder() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let (mut west, mut east, mut now) = up(start);
    let copy = serde_json::to_string(&east.snapshot_for_standby(now)).unwrap();
    // Both check liveness (DPD every 30 s when idle) after the copy, with east.
    run(&mut west, &mut east, &mut now, Duration::from_secs(35));
    drop(east);
    let mut standby = super::alloc::site_core(
        start,
        EAST,
        "10.2.0.0/16",
        "172.16.201.0/24",
        WEST,
        "10.1.0.0/16",
        false,
    );
    assert_eq!(
        standby.import_handoff(now, serde_json::from_str(&copy).unwrap()),
        Ok(1)
    );
    let _ = std::iter::from_fn(|| standby.poll_event()).count();
    // West's next checks reach the standby with IDs past its copy; the SA lives on.
    let flaps = run(&mut west, &mut standby, &mut now, Duration::from_secs(150));
    assert_eq!(flaps, 0, "the connection went down after the takeover");
    assert_eq!(west.status(now).sites[0].state, "connected");
    assert_eq!(standby.status(now).sites[0].state, "connected");
}

#[test]
fn a_liveness_check_past_the_copy_is_answered_by_the_standby_of_the_initiator() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let (mut west, mut east, mut now) = up(start);
    let copy = serde_json::to_string(&west.snapshot_for_standby(now)).unwrap();
    run(&mut west, &mut east, &mut now, Duration::from_secs(35));
    drop(west);
    let mut standby = seeded_core(west_config(start), 9);
    standby.set_site_initiation(false);
    assert_eq!(
        standby.import_handoff(now, serde_json::from_str(&copy).unwrap()),
        Ok(1)
    );
    standby.set_site_initiation(true);
    let _ = std::iter::from_fn(|| standby.poll_event()).count();
    let flaps = run(&mut standby, &mut east, &mut now, Duration::from_secs(150));
    assert_eq!(flaps, 0, "the connection went down after the takeover");
    assert_eq!(east.status(now).sites[0].state, "connected");
    assert_eq!(standby.status(now).sites[0].state, "connected");
}
