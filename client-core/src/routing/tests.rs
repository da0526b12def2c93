use super::*;

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// One line per plan, so a table row says exactly what the platform layer is asked for.
fn show(p: &RoutePlan) -> String {
    let join = |v: Vec<String>| v.join(",");
    format!(
        "full={} v4=[{}] v6=[{}] v6default={:?} skipped=[{}]",
        p.full,
        join(p.routes.iter().map(ToString::to_string).collect()),
        join(p.routes_v6.iter().map(ToString::to_string).collect()),
        p.ipv6_default,
        join(p.skipped.iter().map(ToString::to_string).collect()),
    )
}

fn pushed(full: bool, ipv6: bool) -> Pushed {
    Pushed {
        // OpenVPN pushes the address space with redirect-gateway as well.
        routes: vec!["10.1.0.0/16".parse().unwrap()],
        routes_v6: if ipv6 {
            vec!["fd00:2::/64".parse().unwrap()]
        } else {
            Vec::new()
        },
        full,
        ipv6,
    }
}

#[test]
fn every_combination_installs_exactly_these_routes() {
    use Routing::*;
    let extra = nets(&["10.9.0.0/16", "fd00:9::/48"]);
    // (gateway pushes full, user's choice, extra routes, tunnel has IPv6) -> plan
    let table: [(bool, Routing, bool, bool, &str); 24] = [
        (
            false,
            Gateway,
            false,
            false,
            "full=false v4=[10.1.0.0/16] v6=[] v6default=Untouched skipped=[]",
        ),
        (
            false,
            Gateway,
            false,
            true,
            "full=false v4=[10.1.0.0/16] v6=[fd00:2::/64] v6default=Untouched skipped=[]",
        ),
        (
            false,
            Gateway,
            true,
            false,
            "full=false v4=[10.1.0.0/16,10.9.0.0/16] v6=[] v6default=Untouched skipped=[fd00:9::/48]",
        ),
        (
            false,
            Gateway,
            true,
            true,
            "full=false v4=[10.1.0.0/16,10.9.0.0/16] v6=[fd00:2::/64,fd00:9::/48] v6default=Untouched skipped=[]",
        ),
        (
            false,
            Full,
            false,
            false,
            "full=true v4=[10.1.0.0/16] v6=[] v6default=Blocked skipped=[]",
        ),
        (
            false,
            Full,
            false,
            true,
            "full=true v4=[10.1.0.0/16] v6=[fd00:2::/64] v6default=Tunnel skipped=[]",
        ),
        (
            false,
            Full,
            true,
            false,
            "full=true v4=[10.1.0.0/16,10.9.0.0/16] v6=[] v6default=Blocked skipped=[fd00:9::/48]",
        ),
        (
            false,
            Full,
            true,
            true,
            "full=true v4=[10.1.0.0/16,10.9.0.0/16] v6=[fd00:2::/64,fd00:9::/48] v6default=Tunnel skipped=[]",
        ),
        (
            false,
            Split,
            false,
            false,
            "full=false v4=[10.1.0.0/16] v6=[] v6default=Untouched skipped=[]",
        ),
        (
            false,
            Split,
            false,
            true,
            "full=false v4=[10.1.0.0/16] v6=[fd00:2::/64] v6default=Untouched skipped=[]",
        ),
        (
            false,
            Split,
            true,
            false,
            "full=false v4=[10.1.0.0/16,10.9.0.0/16] v6=[] v6default=Untouched skipped=[fd00:9::/48]",
        ),
        (
            false,
            Split,
            true,
            true,
            "full=false v4=[10.1.0.0/16,10.9.0.0/16] v6=[fd00:2::/64,fd00:9::/48] v6default=Untouched skipped=[]",
        ),
        (
            true,
            Gateway,
            false,
            false,
            "full=true v4=[10.1.0.0/16] v6=[] v6default=Blocked skipped=[]",
        ),
        (
            true,
            Gateway,
            false,
            true,
            "full=true v4=[10.1.0.0/16] v6=[fd00:2::/64] v6default=Tunnel skipped=[]",
        ),
        (
            true,
            Gateway,
            true,
            false,
            "full=true v4=[10.1.0.0/16,10.9.0.0/16] v6=[] v6default=Blocked skipped=[fd00:9::/48]",
        ),
        (
            true,
            Gateway,
            true,
            true,
            "full=true v4=[10.1.0.0/16,10.9.0.0/16] v6=[fd00:2::/64,fd00:9::/48] v6default=Tunnel skipped=[]",
        ),
        (
            true,
            Full,
            false,
            false,
            "full=true v4=[10.1.0.0/16] v6=[] v6default=Blocked skipped=[]",
        ),
        (
            true,
            Full,
            false,
            true,
            "full=true v4=[10.1.0.0/16] v6=[fd00:2::/64] v6default=Tunnel skipped=[]",
        ),
        (
            true,
            Full,
            true,
            false,
            "full=true v4=[10.1.0.0/16,10.9.0.0/16] v6=[] v6default=Blocked skipped=[fd00:9::/48]",
        ),
        (
            true,
            Full,
            true,
            true,
            "full=true v4=[10.1.0.0/16,10.9.0.0/16] v6=[fd00:2::/64,fd00:9::/48] v6default=Tunnel skipped=[]",
        ),
        (
            true,
            Split,
            false,
            false,
            "full=false v4=[10.1.0.0/16] v6=[] v6default=Untouched skipped=[]",
        ),
        (
            true,
            Split,
            false,
            true,
            "full=false v4=[10.1.0.0/16] v6=[fd00:2::/64] v6default=Untouched skipped=[]",
        ),
        (
            true,
            Split,
            true,
            false,
            "full=false v4=[10.1.0.0/16,10.9.0.0/16] v6=[] v6default=Untouched skipped=[fd00:9::/48]",
        ),
        (
            true,
            Split,
            true,
            true,
            "full=false v4=[10.1.0.0/16,10.9.0.0/16] v6=[fd00:2::/64,fd00:9::/48] v6default=Untouched skipped=[]",
        ),
    ];
    for (push_full, routing, with_extra, ipv6, want) in table {
        let extra: &[IpNet] = if with_extra { &extra } else { &[] };
        let got = plan(
            "work",
            ClientRouting::User,
            routing,
            extra,
            &pushed(push_full, ipv6),
        )
        .unwrap();
        assert_eq!(
            show(&got),
            want,
            "gateway full={push_full} routing={routing} extra={with_extra} ipv6={ipv6}"
        );
    }
}

#[test]
fn split_on_a_full_tunnel_selector_keeps_only_the_extra_routes() {
    // IKEv2 full tunnel: one 0.0.0.0/0 selector and nothing else.
    let p = Pushed {
        routes: vec!["0.0.0.0/0".parse().unwrap()],
        full: true,
        ..Pushed::default()
    };
    let got = plan(
        "work",
        ClientRouting::User,
        Routing::Split,
        &nets(&["10.9.0.0/16"]),
        &p,
    )
    .unwrap();
    assert_eq!(
        show(&got),
        "full=false v4=[10.9.0.0/16] v6=[] v6default=Untouched skipped=[]"
    );
}

#[test]
fn extra_routes_are_truncated_and_not_repeated() {
    let got = plan(
        "work",
        ClientRouting::User,
        Routing::Gateway,
        &nets(&["10.1.2.3/16", "10.9.0.0/16", "10.9.1.0/16"]),
        &pushed(false, false),
    )
    .unwrap();
    assert_eq!(got.routes.len(), 2, "{}", show(&got));
}

#[test]
fn a_fixed_gateway_refuses_other_choices_by_name() {
    let p = pushed(true, false);
    for routing in [Routing::Full, Routing::Split] {
        let err = plan("work", ClientRouting::Fixed, routing, &[], &p).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("client_routing = \"fixed\""), "{msg}");
        assert!(msg.contains(&format!("routing = \"{routing}\"")), "{msg}");
        assert!(
            msg.contains("gatehouse profile set work --routing gateway"),
            "{msg}"
        );
    }
    let err = plan(
        "work",
        ClientRouting::Fixed,
        Routing::Gateway,
        &nets(&["10.9.0.0/16"]),
        &p,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("extra_routes = [\"10.9.0.0/16\"]"),
        "{err}"
    );
    // What the gateway pushes is always allowed.
    let ok = plan("work", ClientRouting::Fixed, Routing::Gateway, &[], &p).unwrap();
    assert_eq!(
        show(&ok),
        "full=true v4=[10.1.0.0/16] v6=[] v6default=Blocked skipped=[]"
    );
}

#[test]
fn routing_names_round_trip() {
    for r in Routing::ALL {
        assert_eq!(r.as_str().parse::<Routing>().unwrap(), r);
    }
    assert!("everything".parse::<Routing>().is_err());
}
