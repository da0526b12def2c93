//! A profile's routing choice, extra routes, auto-connect and trusted networks, clicked
//! through on its card headless (kittest) against the fake client service: what is saved in
//! the profile file, and what the service is told.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{FakeService, World, step_until};
use egui_kittest::kittest::{NodeT, Queryable};
use gatehouse_client::ProfileStore;
use gatehouse_client::routing::Routing;
use gatehouse_client::trusted::{AutoConnect, NetworkId};
use gatehouse_gui::ServiceState;

fn import(world: &World, name: &str) {
    let file = world.profile_file(name);
    ProfileStore::open(&world.home, world.keys.clone())
        .unwrap()
        .import(&file, None)
        .unwrap();
}

fn stored(world: &World, name: &str) -> gatehouse_client::StoredProfile {
    ProfileStore::open(&world.home, world.keys.clone())
        .unwrap()
        .get(name)
        .unwrap()
}

#[test]
fn routing_extra_routes_auto_connect_and_trust_are_saved_and_sent() {
    let world = World::new();
    world.settings("theme = \"light\"\n");
    let service = FakeService::start(&world.socket);
    import(&world, "alice");
    let mut h = world.harness();
    step_until(&mut h, "the card and the service", |h| {
        *h.state().service() == ServiceState::Up && h.query_by_label("alice").is_some()
    });
    h.get_by_label("Routing and auto-connect").click();
    step_until(&mut h, "the routing choices", |h| {
        h.query_by_label("Full tunnel: all traffic").is_some()
    });
    let checked = |h: &egui_kittest::Harness<'_, gatehouse_gui::GatehouseApp>, label: &str| {
        h.get_by_label(label).accesskit_node().toggled() == Some(egui::accesskit::Toggled::True)
    };
    assert!(checked(&h, "As the gateway says"));
    assert!(!checked(&h, "Full tunnel: all traffic"));

    // Full tunnel: saved in the profile file.
    h.get_by_label("Full tunnel: all traffic").click();
    step_until(&mut h, "routing full saved", |h| {
        h.state().profiles()[0].routing == Routing::Full
    });
    assert_eq!(stored(&world, "alice").routing, Routing::Full);
    step_until(&mut h, "the radio follows", |h| {
        checked(h, "Full tunnel: all traffic")
    });

    // An extra route; a typo is explained and not saved.
    h.get_by_label("New route").focus();
    h.get_by_label("New route").type_text("banana");
    h.step();
    h.get_by_label("Add route").click();
    step_until(&mut h, "the typo explained", |h| {
        h.query_by_label("Route not added").is_some()
    });
    assert!(stored(&world, "alice").extra_routes.is_empty());
    h.get_by_label("New route").focus();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_label("New route").type_text("10.9.0.0/16");
    h.step();
    h.get_by_label("Add route").click();
    step_until(&mut h, "the extra route saved", |h| {
        h.query_by_label("Remove 10.9.0.0/16").is_some()
    });
    assert_eq!(
        stored(&world, "alice").extra_routes,
        vec!["10.9.0.0/16".parse::<ipnet::IpNet>().unwrap()]
    );
    h.get_by_label("Remove 10.9.0.0/16").click();
    step_until(&mut h, "the extra route removed", |h| {
        h.query_by_label("Remove 10.9.0.0/16").is_none()
    });
    assert!(stored(&world, "alice").extra_routes.is_empty());

    // Auto-connect: saved, and the service gets the profile with its key.
    h.get_by_label("Connect automatically on untrusted networks")
        .click();
    step_until(&mut h, "auto-connect sent to the service", |_| {
        service
            .auto_connects()
            .last()
            .is_some_and(|r| r.profile.auto_connect == AutoConnect::Untrusted)
    });
    assert_eq!(stored(&world, "alice").auto_connect, AutoConnect::Untrusted);
    assert!(
        service
            .auto_connects()
            .last()
            .unwrap()
            .key_pem
            .contains("PRIVATE KEY"),
        "the service needs the key to connect by itself"
    );

    // Trust this network: the network the computer is on joins the profile's list, and the
    // service hears of it.
    let here = NetworkId {
        gateway: "192.168.1.1".parse().unwrap(),
        mac: "02:00:5e:00:00:01".into(),
    };
    *world.network.lock().unwrap() = Some(here.clone());
    h.get_by_label("Trust this network").click();
    step_until(&mut h, "the trusted network sent", |_| {
        service
            .auto_connects()
            .last()
            .is_some_and(|r| r.profile.trusted_networks == [here.clone()])
    });
    assert_eq!(stored(&world, "alice").trusted_networks, [here]);
    step_until(&mut h, "the card counts it", |h| {
        h.query_by_label("1 trusted network(s)").is_some()
    });
}

#[test]
fn a_gateway_that_fixes_the_routes_leaves_no_choice() {
    let world = World::new();
    world.settings("theme = \"light\"\n");
    let _service = FakeService::start(&world.socket);
    // The gateway.toml beside the PKI says so; the exported profile carries it.
    std::fs::write(
        world.dir.path().join("gateway.toml"),
        "public_addr = \"vpn.example.com\"\nclient_routing = \"fixed\"\n",
    )
    .unwrap();
    import(&world, "carol");
    let mut h = world.harness();
    step_until(&mut h, "the card", |h| h.query_by_label("carol").is_some());
    h.get_by_label("Routing and auto-connect").click();
    step_until(&mut h, "the routing choices", |h| {
        h.query_by_label("Full tunnel: all traffic").is_some()
    });
    for label in [
        "Full tunnel: all traffic",
        "Split tunnel: only the gateway's networks",
    ] {
        assert!(
            h.get_by_label(label).accesskit_node().is_disabled(),
            "{label} must be disabled"
        );
    }
    assert!(
        !h.get_by_label("As the gateway says")
            .accesskit_node()
            .is_disabled()
    );
    assert!(h.query_by_label("New route").is_none());
    h.get_by_label("Full tunnel: all traffic").click();
    h.run_steps(5);
    assert_eq!(stored(&world, "carol").routing, Routing::Gateway);
}
