//! QUIC in the desktop app: a profile that offers QUIC is connected over it first, the card
//! says QUIC, and when the connection moves to a new network (QUIC migration: the service
//! keeps the state Connected and counts the change) the card stays Connected - same
//! address, same "connected since" - and says the tunnel moved along.
#![cfg(unix)]
// Test helpers panic on purpose.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{FakeService, T0, World, step_until};
use egui_kittest::kittest::Queryable;
use gatehouse_certs::Profile;
use gatehouse_certs::profile::{ProtocolEntry, ProtocolKind as Offered};
use gatehouse_client::status::ConnectionState;
use gatehouse_client::{ProfileStore, ProtocolKind};

fn connected_over_quic() -> ConnectionState {
    ConnectionState::Connected {
        profile: "alice".into(),
        since: T0,
        address: Ipv4Addr::new(10, 219, 0, 6),
        gateway: "vpn.example.com:443".into(),
        protocol: ProtocolKind::Quic,
    }
}

#[test]
fn quic_comes_first_and_a_network_change_stays_connected() {
    let world = World::new();
    world.settings("auto_connect = true\nlast_profile = \"alice\"\n");
    let service = FakeService::start(&world.socket);
    // The profile lists QUIC last; the app's default order puts it first.
    let file = world.profile_file("alice");
    let mut profile = Profile::from_toml(&std::fs::read_to_string(&file).unwrap()).unwrap();
    profile.protocols.retain(|p| p.kind != Offered::Quic);
    profile.protocols.push(ProtocolEntry {
        kind: Offered::Quic,
        port: 443,
    });
    std::fs::write(&file, profile.to_toml().unwrap()).unwrap();
    ProfileStore::open(&world.home, world.keys.clone())
        .unwrap()
        .import(&file, None)
        .unwrap();
    let mut h = world.harness();

    step_until(&mut h, "the auto-connect", |h| {
        h.query_by_label("Connecting").is_some()
    });
    let order: Vec<ProtocolKind> = service.connects()[0]
        .profile
        .protocols
        .iter()
        .map(|p| p.kind)
        .collect();
    assert_eq!(order.first(), Some(&ProtocolKind::Quic), "{order:?}");

    service.set_state(connected_over_quic());
    step_until(&mut h, "Connected over QUIC", |h| {
        h.query_by_label("Connected").is_some() && h.query_by_label("QUIC").is_some()
    });
    assert!(h.query_by_label("Network changes").is_none());

    // Two network changes: a log line each, the state untouched but for the count.
    for (n, (from, to)) in [("10.219.1.2", "10.219.2.2"), ("10.219.2.2", "10.219.3.2")]
        .into_iter()
        .enumerate()
    {
        world.clock.advance(Duration::from_secs(5));
        service.log(
            T0 + 5 * (n as u64 + 1),
            "info",
            &format!(
                "alice: path changed: local address {from} -> {to}; the QUIC connection migrates (no new handshake)"
            ),
        );
        service.set_path_changes(n as u32 + 1);
        let expected = if n == 0 {
            "once, still connected"
        } else {
            "2 times, still connected"
        };
        step_until(&mut h, expected, |h| h.query_by_label(expected).is_some());
        assert!(h.query_by_label("Connected").is_some());
        assert!(h.query_by_label("Reconnecting").is_none());
        assert!(h.query_by_label("10.219.0.6").is_some(), "same address");
        assert!(h.query_by_label("QUIC").is_some());
    }
    assert!(
        h.query_by_label_contains("(10 s)").is_some(),
        "connected since the start, not since the last change"
    );
    h.get_by_label("Log").click();
    step_until(&mut h, "the path change in the log", |h| {
        h.query_by_label_contains("path changed: local address 10.219.2.2")
            .is_some()
    });
}
