//! IPv6 inside an IKEv2 tunnel: a client that asks for INTERNAL_IP6_ADDRESS and proposes
//! `::/0` (strongSwan's `vips = 0.0.0.0,::`) gets its IPv6 address and selectors narrowed to
//! its /128 === the gateway's IPv6 prefixes; one that does not ask, or a gateway without an
//! IPv6 pool, stays IPv4 only.

use super::pair::{Pair, default_configs};
use crate::ikev2::initiator::InitiatorEvent;
use crate::pool6::Ipv6Assignment;
use crate::wire::ikev2::TrafficSelector;

fn v6() -> Ipv6Assignment {
    Ipv6Assignment {
        address: "fd00:6a7e:1::2".parse().unwrap(),
        subnet: "fd00:6a7e:1::/64".parse().unwrap(),
        gateway: "fd00:6a7e:1::1".parse().unwrap(),
        routes: vec!["fd00:6a7e:2::/64".parse().unwrap()],
    }
}

fn ts(net: &str) -> TrafficSelector {
    TrafficSelector::from_net(net.parse().unwrap())
}

/// What the client was told: its IPv6 address and the IPv6 networks to route.
type ClientV6 = (Option<(std::net::Ipv6Addr, u8)>, Vec<ipnet::Ipv6Net>);

/// Connects a client (asking for IPv6 or not) to a gateway (with an IPv6 assignment or
/// not); returns the selectors the gateway narrowed to, whether it gave IPv6, and what the
/// client's `Connected` event says of IPv6.
fn connect(ask: bool, give: bool) -> (Vec<TrafficSelector>, Vec<TrafficSelector>, bool, ClientV6) {
    let (rc, mut ic) = default_configs();
    ic.request_ipv6 = ask;
    let mut p = Pair::with(rc, ic);
    p.assignment.ipv6 = give.then(v6);
    p.connect();
    let Some(InitiatorEvent::Connected {
        address6, subnets6, ..
    }) = p.client_connected()
    else {
        panic!("client not connected");
    };
    let client = (*address6, subnets6.clone());
    // IPv4 works as before, whatever happened to IPv6.
    p.ping(b"v4 still").unwrap();
    let r = p.responder.as_ref().unwrap();
    let (tsi, tsr) = r.narrowed_for_tests().unwrap();
    (tsi, tsr, r.has_ipv6(), client)
}

#[test]
fn a_client_asking_for_ipv6_gets_its_128_and_the_ipv6_prefixes() {
    let (tsi, tsr, v6, (address6, subnets6)) = connect(true, true);
    assert!(v6);
    // The client learns its address and what to route, as the gateway narrowed it.
    let (a, _) = address6.expect("no INTERNAL_IP6_ADDRESS for the client");
    assert_eq!(a, "fd00:6a7e:1::2".parse::<std::net::Ipv6Addr>().unwrap());
    assert!(
        subnets6.contains(&"fd00:6a7e:2::/64".parse().unwrap()),
        "{subnets6:?}"
    );
    assert_eq!(tsi, vec![ts("10.9.0.2/32"), ts("fd00:6a7e:1::2/128")]);
    assert!(tsr.contains(&ts("fd00:6a7e:2::/64")), "{tsr:?}");
    assert!(!tsr.contains(&TrafficSelector::any_v6()), "{tsr:?}");
}

#[test]
fn ipv4_only_unless_both_sides_want_ipv6() {
    for (ask, give) in [(false, true), (true, false), (false, false)] {
        let (tsi, tsr, v6, (address6, subnets6)) = connect(ask, give);
        assert!(!v6, "ask {ask} give {give}");
        assert!(
            address6.is_none() && subnets6.is_empty(),
            "ask {ask} give {give}: {address6:?} {subnets6:?}"
        );
        assert_eq!(tsi, vec![ts("10.9.0.2/32")], "ask {ask} give {give}");
        assert!(
            tsr.iter()
                .all(|t| matches!(t.range, crate::wire::ikev2::AddressRange::V4 { .. })),
            "ask {ask} give {give}: {tsr:?}"
        );
    }
}
