//! IPv6 through WireGuard tunnels in the gateway core: a dual-stack site (IPv4 and IPv6
//! prefixes) and a point-to-site client with an IPv6 /128 beside its IPv4 /32, against stock
//! peers (boringtun's `Tunn`) in memory.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Instant;

use boringtun::noise::{Tunn, TunnResult};

use super::ipv6::icmp6;
use super::wireguard::{
    CLIENT, SITE, config, deliver, encapsulate, entropy, events, key, stock_peer, transmits,
};
use crate::gateway::{Dest, Drop, Event, GatewayCore, Listener, Shard};
use crate::wireguard::{WgPeerConfig, WgRole, WireGuardConfig};

const LAN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 10);
const SITE_HOST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 5);
/// 172.16.201.200 in `client_pool_v6` fd00:6a7e:1::/64.
const PHONE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6a7e, 1, 0, 0, 0, 0, 0xc8);

/// A dual-stack site (10.2.0.0/16 and fd00:2::/64) and, with `client`, a phone at
/// 172.16.201.200 and its IPv6 address.
fn dual_stack(client: bool) -> WireGuardConfig {
    let mut peers = vec![WgPeerConfig {
        name: "branch".into(),
        role: WgRole::Site { kind: "wireguard" },
        public_key: key(2).public_key(),
        endpoint: Some(SITE.parse().unwrap()),
        allowed: vec![
            "10.2.0.0/16".parse().unwrap(),
            "fd00:2::/64".parse().unwrap(),
        ],
        persistent_keepalive: None,
    }];
    if client {
        peers.push(WgPeerConfig {
            name: "phone".into(),
            role: WgRole::Client {
                address: "172.16.201.200".parse().unwrap(),
            },
            public_key: key(3).public_key(),
            endpoint: None,
            allowed: vec![
                "172.16.201.200/32".parse().unwrap(),
                "fd00:6a7e:1::c8/128".parse().unwrap(),
            ],
            persistent_keepalive: None,
        });
    }
    WireGuardConfig {
        private_key: key(1),
        peers,
    }
}

/// The site comes up on `core` (the gateway dials it).
fn site_up(core: &mut GatewayCore, now: Instant) -> Tunn {
    let site: SocketAddr = SITE.parse().unwrap();
    let mut peer = stock_peer(2, 77);
    let (answers, _) = deliver(core, &mut peer, site);
    for a in &answers {
        assert!(
            core.handle_datagram(now, Listener::WireGuard, site, a)
                .is_none()
        );
    }
    let _ = deliver(core, &mut peer, site);
    assert!(events(core).contains(&Event::SiteUp {
        name: "branch".into()
    }));
    peer
}

fn decrypt(peer: &mut Tunn, from: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    match peer.decapsulate(Some(from.ip()), bytes, &mut buf) {
        TunnResult::WriteToTunnelV6(p, _) => p.to_vec(),
        r => panic!("{r:?}"),
    }
}

#[test]
fn a_dual_stack_wireguard_site_carries_ipv6_without_an_ipv6_pool() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    // No `client_pool_v6`: the site's IPv6 prefix alone makes the core carry IPv6.
    let mut core = GatewayCore::new(config(now), entropy()).unwrap();
    assert!(!core.carries_ipv6());
    core.set_wireguard(now, Some(dual_stack(false)));
    assert!(core.carries_ipv6());
    let site: SocketAddr = SITE.parse().unwrap();
    let mut peer = site_up(&mut core, now);
    // Site -> LAN over IPv6: decrypted and written to TUN.
    let up = icmp6(SITE_HOST_V6, LAN_V6, 1);
    let d = encapsulate(&mut peer, &up);
    assert_eq!(
        core.handle_datagram(now, Listener::WireGuard, site, &d),
        Some(&up[..])
    );
    // An IPv6 source outside its prefixes is spoofing, not "IPv6 off".
    let spoofed = icmp6("fd00:9::5".parse().unwrap(), LAN_V6, 2);
    let d = encapsulate(&mut peer, &spoofed);
    assert!(
        core.handle_datagram(now, Listener::WireGuard, site, &d)
            .is_none()
    );
    assert_eq!(core.drops().get(Drop::Spoofed), 1);
    assert_eq!(core.drops().get(Drop::Ipv6), 0);
    // LAN -> site over IPv6: routed by its IPv6 prefix.
    let down = icmp6(LAN_V6, SITE_HOST_V6, 3);
    let (dest, bytes) = core.handle_tun_packet(now, &down).expect("routed");
    assert_eq!(
        dest,
        Dest::Udp {
            from: Listener::WireGuard,
            to: site
        }
    );
    let bytes = bytes.to_vec();
    assert_eq!(decrypt(&mut peer, site, &bytes), down);
    assert!(
        core.wireguard_routes()
            .contains(&"fd00:2::/64".parse().unwrap())
    );
    // The site loses its IPv6 prefix in a reload: IPv6 is off again, routes gone.
    let mut v4_only = dual_stack(false);
    v4_only.peers[0].allowed.truncate(1);
    core.set_wireguard(now, Some(v4_only));
    assert!(!core.carries_ipv6());
    assert!(core.handle_tun_packet(now, &down).is_none());
    assert_eq!(core.drops().get(Drop::Ipv6), 1);
}

#[test]
fn a_wireguard_client_sends_from_its_ipv6_address_only() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut cfg = config(now);
    cfg.client_pool_v6 = Some("fd00:6a7e:1::/64".parse().unwrap());
    cfg.address_space_v6 = vec!["fd00:1::/64".parse().unwrap()];
    let mut core = GatewayCore::new(cfg, entropy()).unwrap();
    core.set_wireguard(now, Some(dual_stack(true)));
    let _ = transmits(&mut core); // the site's handshake
    let client: SocketAddr = CLIENT.parse().unwrap();
    let mut phone = stock_peer(3, 5);
    let mut buf = vec![0u8; 2048];
    let init = match phone.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        r => panic!("{r:?}"),
    };
    assert!(
        core.handle_datagram(now, Listener::WireGuard, client, &init)
            .is_none()
    );
    let (answers, _) = deliver(&mut core, &mut phone, client);
    assert!(
        core.handle_datagram(now, Listener::WireGuard, client, &answers[0])
            .is_none()
    );
    // Its IPv6 address passes, another address of the IPv6 pool (another client's) does not.
    let ok = icmp6(PHONE_V6, LAN_V6, 1);
    let d = encapsulate(&mut phone, &ok);
    assert_eq!(
        core.handle_datagram(now, Listener::WireGuard, client, &d),
        Some(&ok[..])
    );
    let other = icmp6("fd00:6a7e:1::7".parse().unwrap(), LAN_V6, 2);
    let d = encapsulate(&mut phone, &other);
    assert!(
        core.handle_datagram(now, Listener::WireGuard, client, &d)
            .is_none()
    );
    // Nor the site's prefix.
    let site_src = icmp6(SITE_HOST_V6, LAN_V6, 3);
    let d = encapsulate(&mut phone, &site_src);
    assert!(
        core.handle_datagram(now, Listener::WireGuard, client, &d)
            .is_none()
    );
    assert_eq!(core.drops().get(Drop::Spoofed), 2);
    // The LAN reaches it over IPv6.
    let down = icmp6(LAN_V6, PHONE_V6, 4);
    let (dest, bytes) = core.handle_tun_packet(now, &down).expect("routed");
    assert!(matches!(dest, Dest::Udp { to, .. } if to == client));
    let bytes = bytes.to_vec();
    assert_eq!(decrypt(&mut phone, client, &bytes), down);
    // Revoked: its IPv6 route goes with it.
    core.set_wireguard(now, Some(dual_stack(false)));
    assert!(core.handle_tun_packet(now, &down).is_none());
    assert!(
        !core
            .wireguard_routes()
            .contains(&"fd00:6a7e:1::c8/128".parse().unwrap())
    );
}

#[test]
fn an_ipv6_packet_for_another_workers_wireguard_peer_is_handed_over() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let shards = Shard::split("172.16.201.0/24".parse().unwrap(), 2).unwrap();
    let mut cores: Vec<GatewayCore> = shards
        .into_iter()
        .map(|s| GatewayCore::new_shard(config(now), entropy(), s))
        .collect();
    for c in &mut cores {
        c.set_wireguard(now, Some(dual_stack(false)));
    }
    let site: SocketAddr = SITE.parse().unwrap();
    let owner = crate::gateway::worker_of_ip(site.ip(), 2);
    let other = 1 - owner;
    let down = icmp6(LAN_V6, SITE_HOST_V6, 3);
    assert!(cores[other].handle_tun_packet(now, &down).is_none());
    assert_eq!(cores[other].poll_forward().map(|f| f.worker()), Some(owner));
}
