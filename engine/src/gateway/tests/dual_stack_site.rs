//! A dual-stack site: two gateway cores whose connection lists IPv4 and IPv6 prefixes on
//! both sides (policy-based selectors of both families, then route-based 0.0.0.0/0 + ::/0)
//! carry both families both ways, with no IPv6 client pool; an IPv6 source outside the
//! site's prefixes is dropped as spoofed.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use ipnet::{IpNet, Ipv6Net};

use super::alloc::{EAST, WEST, seeded_core, site_config};
use super::ipv6::icmp6;
use super::model::ipv4;
use super::site_iface::bring_up;
use crate::gateway::{CoreConfig, Dest, GatewayCore};
use crate::ikev2::site::SitePeer;

const WEST_V6: &str = "fd00:1::/64";
const EAST_V6: &str = "fd00:2::/64";

/// `cfg` with `own` IPv6 prefix behind it and `peer` behind the site; the selectors are
/// the prefixes of both families (policy-based) or 0.0.0.0/0 + ::/0 (route-based).
fn dual_stack(mut cfg: CoreConfig, own: &str, peer: &str, policy_based: bool) -> CoreConfig {
    let own: Ipv6Net = own.parse().unwrap();
    let peer: Ipv6Net = peer.parse().unwrap();
    cfg.address_space_v6 = vec![own];
    let site = &mut cfg.sites[0];
    site.remote_address_space_v6 = vec![peer];
    let mut p: SitePeer = (*site.peer).clone();
    if policy_based {
        p.local_ts.push(IpNet::V6(own));
        p.remote_ts.push(IpNet::V6(peer));
    } else {
        let any: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        p.local_ts = any.clone();
        p.remote_ts = any;
    }
    let p = Arc::new(p);
    site.peer = p.clone();
    let mut rc = super::pki::responder_cfg();
    rc.sites = vec![p];
    cfg.ikev2 = Some(Arc::new(rc));
    cfg
}

fn pair(start: Instant, policy_based: bool) -> (GatewayCore, GatewayCore) {
    let west = site_config(
        start,
        WEST,
        "10.1.0.0/16",
        "172.16.200.0/24",
        EAST,
        "10.2.0.0/16",
        true,
    );
    let east = site_config(
        start,
        EAST,
        "10.2.0.0/16",
        "172.16.201.0/24",
        WEST,
        "10.1.0.0/16",
        false,
    );
    (
        seeded_core(dual_stack(west, WEST_V6, EAST_V6, policy_based), 31),
        seeded_core(dual_stack(east, EAST_V6, WEST_V6, policy_based), 32),
    )
}

/// Sends `p` from `a`'s TUN through the SA; what `b` hands its TUN (None: dropped).
fn through(
    a: &mut GatewayCore,
    a_ip: &str,
    b: &mut GatewayCore,
    now: Instant,
    p: &[u8],
) -> Option<Vec<u8>> {
    let (dest, esp) = a.handle_tun_packet(now, p)?;
    let Dest::Udp { from, to } = dest else {
        panic!("a site sent on a stream");
    };
    let (on, src) = super::alloc::arrival(a_ip, from, to);
    let esp = esp.to_vec();
    b.handle_datagram(now, on, src, &esp).map(<[u8]>::to_vec)
}

fn both_families_both_ways(policy_based: bool) {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let (mut west, mut east) = pair(start, policy_based);
    let now = bring_up(&mut west, &mut east, start);
    let (w4, e4) = (Ipv4Addr::new(10, 1, 0, 7), Ipv4Addr::new(10, 2, 0, 9));
    let w6: Ipv6Addr = "fd00:1::7".parse().unwrap();
    let e6: Ipv6Addr = "fd00:2::9".parse().unwrap();
    for (i, p) in [ipv4(w4, e4, 1, 40), icmp6(w6, e6, 2)].iter().enumerate() {
        let got = through(&mut west, WEST, &mut east, now, p);
        assert_eq!(
            got.as_deref(),
            Some(&p[..]),
            "west -> east #{i}: {}",
            east.drops()
        );
    }
    for (i, p) in [ipv4(e4, w4, 3, 40), icmp6(e6, w6, 4)].iter().enumerate() {
        let got = through(&mut east, EAST, &mut west, now, p);
        assert_eq!(
            got.as_deref(),
            Some(&p[..]),
            "east -> west #{i}: {}",
            west.drops()
        );
    }
    assert_eq!(west.drops().total(), 0, "{}", west.drops());
    // East sends from an IPv6 address outside its prefixes: west drops it as spoofed.
    let spoofed = icmp6("fd00:9::1".parse().unwrap(), w6, 5);
    assert_eq!(through(&mut east, EAST, &mut west, now, &spoofed), None);
    assert!(
        west.drops().to_string().contains("spoofed"),
        "{}",
        west.drops()
    );
    // An IPv6 destination no site has: not routed.
    assert!(
        west.handle_tun_packet(now, &icmp6(w6, "fd00:7::1".parse().unwrap(), 6))
            .is_none()
    );
}

#[test]
fn a_policy_based_dual_stack_site_carries_both_families() {
    both_families_both_ways(true);
}

#[test]
fn a_route_based_dual_stack_site_carries_both_families() {
    both_families_both_ways(false);
}
