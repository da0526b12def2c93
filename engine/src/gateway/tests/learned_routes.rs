//! Prefixes a routing daemon learned from sites (BGP on connections with their own
//! interface) are pushed to remote-access clients that connect afterwards, beside the
//! address space; the gateway's own networks and a default route never are.

use std::time::Duration;

use super::sim::{LAN, Link, Options, Sim};
use crate::openvpn::client::ClientEvent;

fn pushed(sim: &mut Sim, c: usize) -> Vec<ipnet::Ipv4Net> {
    sim.clients[c]
        .ovpn()
        .events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Connected(reply) => Some(reply.routes.clone()),
            _ => None,
        })
        .expect("the client connected")
}

#[test]
fn routes_learned_from_sites_are_pushed_to_clients_that_connect_later() {
    let mut sim = Sim::new(
        7101,
        Options {
            link: Link::clean(),
            workers: 1,
            ..Options::default()
        },
    );
    let before = sim.add_ovpn_udp(0);
    sim.connect_all(&[before], Duration::from_secs(30));
    let lan: ipnet::Ipv4Net = LAN.parse().unwrap();
    let learned: ipnet::Ipv4Net = "10.77.0.0/16".parse().unwrap();
    assert_eq!(pushed(&mut sim, before), vec![lan]);
    let pool = sim.pool;
    sim.core.only().set_learned_routes(vec![
        learned,
        learned,
        "0.0.0.0/0".parse().unwrap(),
        "10.1.2.0/24".parse().unwrap(),
        pool,
    ]);
    let after = sim.add_ovpn_udp(1);
    sim.connect_all(&[after], Duration::from_secs(30));
    assert_eq!(pushed(&mut sim, after), vec![lan, learned]);
    // The daemon withdrew it: the next client does not get it.
    sim.core.only().set_learned_routes(Vec::new());
    let last = sim.add_ovpn_udp(2);
    sim.connect_all(&[last], Duration::from_secs(30));
    assert_eq!(pushed(&mut sim, last), vec![lan]);
}
