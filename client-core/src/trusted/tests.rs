use super::*;

fn net(gw: &str, mac: &str) -> NetworkId {
    NetworkId {
        gateway: gw.parse().unwrap(),
        mac: mac.into(),
    }
}

#[test]
fn a_network_matches_by_gateway_address_and_mac() {
    let office = net("192.168.1.1", "02:00:5e:00:00:01");
    assert!(net("192.168.1.1", "02:00:5E:00:00:01").matches(&office));
    // Same address, another router (a café with the same private range).
    assert!(!net("192.168.1.1", "02:00:5e:00:00:99").matches(&office));
    // Same router, another address (another network behind it).
    assert!(!net("192.168.2.1", "02:00:5e:00:00:01").matches(&office));
    // Gateway MAC not known: never trusted, even against an entry without one.
    assert!(!net("192.168.1.1", "").matches(&office));
    assert!(!net("192.168.1.1", "").matches(&net("192.168.1.1", "")));
    let v6 = net("fe80::1", "02:00:5e:00:00:01");
    assert!(v6.is_trusted(&[office.clone(), v6.clone()]));
    assert!(!v6.is_trusted(&[office]));
}

#[test]
fn auto_connect_connects_only_on_untrusted_networks_when_idle() {
    let home = net("192.168.1.1", "02:00:00:00:00:01");
    let cafe = net("10.0.0.1", "02:00:00:00:00:02");
    let unknown_mac = net("192.168.1.1", "");
    let trusted = [home.clone()];
    let base = Situation {
        auto_connect: AutoConnect::Untrusted,
        trusted: &trusted,
        current: Some(&cafe),
        busy: false,
        user_disconnected_on: None,
    };
    assert!(should_connect(base));
    assert!(!should_connect(Situation {
        current: Some(&home),
        ..base
    }));
    assert!(should_connect(Situation {
        current: Some(&unknown_mac),
        ..base
    }));
    assert!(!should_connect(Situation {
        current: None,
        ..base
    }));
    assert!(!should_connect(Situation { busy: true, ..base }));
    assert!(!should_connect(Situation {
        auto_connect: AutoConnect::Off,
        ..base
    }));
    // The user disconnected on this network: leave it be.
    assert!(!should_connect(Situation {
        user_disconnected_on: Some(&cafe),
        ..base
    }));
    // ... but not on another one.
    assert!(should_connect(Situation {
        user_disconnected_on: Some(&home),
        ..base
    }));
}

#[test]
fn a_manual_disconnect_is_remembered_until_the_network_changes() {
    let a = net("10.0.0.1", "02:00:00:00:00:01");
    let b = net("10.0.1.1", "02:00:00:00:00:02");
    assert_eq!(after_change(Some(a.clone()), Some(&a)), Some(a.clone()));
    // A moment without a network (a link flap) is not another network.
    assert_eq!(after_change(Some(a.clone()), None), Some(a.clone()));
    assert_eq!(after_change(Some(a), Some(&b)), None);
    assert_eq!(after_change(None, Some(&b)), None);
}

#[test]
fn auto_connect_names_round_trip() {
    for a in [AutoConnect::Off, AutoConnect::Untrusted] {
        assert_eq!(a.as_str().parse::<AutoConnect>().unwrap(), a);
    }
    assert!("always".parse::<AutoConnect>().is_err());
}
