//! WireGuard through the gateway core: a stock peer (boringtun's `Tunn`, as wireguard-go
//! would behave) against the core, in memory. The core's `now` is a virtual clock; boringtun
//! keeps its own (see `crate::wireguard`), which these tests do not need to move.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use boringtun::noise::{Tunn, TunnResult};

use crate::entropy::SeededEntropy;
use crate::gateway::{
    CoreConfig, Dest, Drop, EntropyFactory, Event, GatewayCore, Listener, Shard, Transmit,
};
use crate::wire::mss::testing::{linux_syn_options, mss_of, tcp_checksum_ok, tcp_packet};
use crate::wireguard::{WgKey, WgPeerConfig, WgRole, WireGuardConfig};

pub(super) const GATEWAY: &str = "203.0.113.1:51820";
pub(super) const SITE: &str = "198.51.100.7:51820";
pub(super) const CLIENT: &str = "192.0.2.44:40000";

pub(super) fn config(start: Instant) -> CoreConfig {
    CoreConfig {
        client_pool: "172.16.201.0/24".parse().unwrap(),
        address_space: vec!["10.1.0.0/16".parse().unwrap()],
        client_pool_v6: None,
        address_space_v6: Vec::new(),
        dns: vec![],
        dns_domains: Vec::new(),
        full_tunnel: false,
        openvpn: None,
        ikev2: None,
        cookie_threshold: 1000,
        max_half_open: crate::gateway::DEFAULT_MAX_HALF_OPEN,
        max_half_open_per_ip: crate::gateway::DEFAULT_MAX_HALF_OPEN_PER_IP,
        max_handshaking: 16,
        sites: vec![],
        unix_time: 1_800_000_000,
        start,
    }
}

pub(super) fn entropy() -> EntropyFactory {
    let mut n = 0;
    Box::new(move || {
        n += 1;
        Box::new(SeededEntropy::new(7000 + n))
    })
}

pub(super) fn key(b: u8) -> WgKey {
    WgKey::from_random([b; 32])
}

/// The gateway's key, a site behind 10.2.0.0/16 (dialed at SITE) and a client at
/// 172.16.201.200 (dials in).
fn wg_config(with_client: bool) -> WireGuardConfig {
    let mut peers = vec![WgPeerConfig {
        name: "branch".into(),
        role: WgRole::Site { kind: "wireguard" },
        public_key: key(2).public_key(),
        endpoint: Some(SITE.parse().unwrap()),
        allowed: vec!["10.2.0.0/16".parse().unwrap()],
        persistent_keepalive: None,
    }];
    if with_client {
        peers.push(WgPeerConfig {
            name: "phone".into(),
            role: WgRole::Client {
                address: Ipv4Addr::new(172, 16, 201, 200),
            },
            public_key: key(3).public_key(),
            endpoint: None,
            allowed: vec!["172.16.201.200/32".parse().unwrap()],
            persistent_keepalive: None,
        });
    }
    WireGuardConfig {
        private_key: key(1),
        peers,
    }
}

/// A stock peer with key `k` that knows the gateway's public key.
pub(super) fn stock_peer(k: u8, index: u32) -> Tunn {
    Tunn::new(
        key(k).secret(),
        key(1).public_key().key(),
        None,
        None,
        index,
        None,
    )
}

fn ip_packet(src: [u8; 4], dst: [u8; 4], tag: u8) -> Vec<u8> {
    let mut p = vec![0u8; 60];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&60u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[59] = tag;
    p
}

pub(super) fn transmits(core: &mut GatewayCore) -> Vec<Transmit> {
    std::iter::from_fn(|| core.poll_transmit()).collect()
}

pub(super) fn events(core: &mut GatewayCore) -> Vec<Event> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

/// Hands every WireGuard datagram the core sent to `to` to `peer`; returns what the peer
/// answered (to the gateway) and the inner packets it got.
pub(super) fn deliver(
    core: &mut GatewayCore,
    peer: &mut Tunn,
    to: SocketAddr,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let gw: SocketAddr = GATEWAY.parse().unwrap();
    let mut answers = Vec::new();
    let mut inner = Vec::new();
    let mut buf = vec![0u8; 2048];
    for t in transmits(core) {
        let Dest::Udp { from, to: dst } = t.dest else {
            panic!("a stream transmit");
        };
        assert_eq!(from, Listener::WireGuard);
        assert_eq!(dst, to, "sent to the wrong address");
        match peer.decapsulate(Some(gw.ip()), &t.payload, &mut buf) {
            TunnResult::WriteToNetwork(p) => {
                answers.push(p.to_vec());
                while let TunnResult::WriteToNetwork(p) = peer.decapsulate(None, &[], &mut buf) {
                    answers.push(p.to_vec());
                }
            }
            TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                inner.push(p.to_vec())
            }
            _ => {}
        }
    }
    (answers, inner)
}

pub(super) fn encapsulate(peer: &mut Tunn, packet: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    match peer.encapsulate(packet, &mut buf) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        r => panic!("peer could not encapsulate: {r:?}"),
    }
}

#[test]
fn a_site_comes_up_carries_traffic_drops_spoofs_and_roams() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut core = GatewayCore::new(config(now), entropy()).unwrap();
    core.set_wireguard(now, Some(wg_config(false)));
    let site: SocketAddr = SITE.parse().unwrap();
    let mut peer = stock_peer(2, 77);
    // The gateway dials the site; the site answers; the gateway's keepalive completes it.
    let (answers, _) = deliver(&mut core, &mut peer, site);
    assert_eq!(answers.len(), 1, "a handshake response");
    for a in &answers {
        assert!(
            core.handle_datagram(now, Listener::WireGuard, site, a)
                .is_none()
        );
    }
    assert!(events(&mut core).contains(&Event::SiteUp {
        name: "branch".into()
    }));
    let (answers, _) = deliver(&mut core, &mut peer, site);
    assert!(answers.is_empty());
    // Site -> LAN: decrypted and written to TUN.
    let up = ip_packet([10, 2, 0, 5], [10, 1, 0, 10], 1);
    let d = encapsulate(&mut peer, &up);
    assert_eq!(
        core.handle_datagram(now, Listener::WireGuard, site, &d),
        Some(&up[..])
    );
    // A source outside the site's prefixes: dropped and counted.
    let spoofed = ip_packet([10, 9, 0, 5], [10, 1, 0, 10], 2);
    let before = core.drops().get(Drop::Spoofed);
    let d = encapsulate(&mut peer, &spoofed);
    assert!(
        core.handle_datagram(now, Listener::WireGuard, site, &d)
            .is_none()
    );
    assert_eq!(core.drops().get(Drop::Spoofed), before + 1);
    // LAN -> site: routed by prefix, encrypted to the site.
    let down = ip_packet([10, 1, 0, 10], [10, 2, 0, 5], 3);
    let (dest, bytes) = core.handle_tun_packet(now, &down).expect("routed");
    assert_eq!(
        dest,
        Dest::Udp {
            from: Listener::WireGuard,
            to: site
        }
    );
    let mut buf = vec![0u8; 2048];
    match peer.decapsulate(Some(site.ip()), bytes, &mut buf) {
        TunnResult::WriteToTunnelV4(p, _) => assert_eq!(p, &down[..]),
        r => panic!("{r:?}"),
    }
    // TCP SYNs both ways leave with an MSS that fits the tunnel (1380), checksums intact.
    let lan = Ipv4Addr::new(10, 1, 0, 10);
    let far = Ipv4Addr::new(10, 2, 0, 5);
    let syn = tcp_packet(lan, far, 0x02, &[], &linux_syn_options(1460), &[]);
    let (_, bytes) = core.handle_tun_packet(now, &syn).expect("routed");
    let bytes = bytes.to_vec();
    match peer.decapsulate(Some(site.ip()), &bytes, &mut buf) {
        TunnResult::WriteToTunnelV4(p, _) => {
            assert_eq!(mss_of(p), Some(1380));
            assert!(tcp_checksum_ok(p));
        }
        r => panic!("{r:?}"),
    }
    let syn_ack = tcp_packet(far, lan, 0x12, &[], &linux_syn_options(1460), &[]);
    let d = encapsulate(&mut peer, &syn_ack);
    let got = core
        .handle_datagram(now, Listener::WireGuard, site, &d)
        .expect("to TUN");
    assert_eq!(mss_of(got), Some(1380));
    assert!(tcp_checksum_ok(got));
    // A replayed datagram is refused.
    let d = encapsulate(&mut peer, &up);
    assert!(
        core.handle_datagram(now, Listener::WireGuard, site, &d)
            .is_some()
    );
    let bad = core.drops().get(Drop::BadData);
    assert!(
        core.handle_datagram(now, Listener::WireGuard, site, &d)
            .is_none()
    );
    assert_eq!(core.drops().get(Drop::BadData), bad + 1);
    // The site moves: its next authenticated packet moves the tunnel.
    let moved: SocketAddr = "198.51.100.99:1234".parse().unwrap();
    let d = encapsulate(&mut peer, &up);
    assert!(
        core.handle_datagram(now, Listener::WireGuard, moved, &d)
            .is_some()
    );
    assert!(events(&mut core).iter().any(|e| matches!(
        e,
        Event::Roamed { from, to, .. } if *from == site && *to == moved
    )));
    let (dest, _) = core.handle_tun_packet(now, &down).expect("routed");
    assert_eq!(
        dest,
        Dest::Udp {
            from: Listener::WireGuard,
            to: moved
        }
    );
    let status = core.status(now);
    assert_eq!(status.sites.len(), 1);
    assert_eq!(status.sites[0].state, "connected");
    assert_eq!(status.sites[0].remote, moved.to_string());
    // An unauthenticated packet from elsewhere does not move it.
    let mut junk = d.clone();
    junk[40] ^= 1;
    let elsewhere: SocketAddr = "198.51.100.100:1".parse().unwrap();
    assert!(
        core.handle_datagram(now, Listener::WireGuard, elsewhere, &junk)
            .is_none()
    );
    let (dest, _) = core.handle_tun_packet(now, &down).expect("routed");
    assert!(matches!(dest, Dest::Udp { to, .. } if to == moved));
}

#[test]
fn a_client_dials_in_gets_its_address_checked_and_is_revoked_live() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut core = GatewayCore::new(config(now), entropy()).unwrap();
    core.set_wireguard(now, Some(wg_config(true)));
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
    assert_eq!(answers.len(), 1, "the phone's keepalive");
    assert!(
        core.handle_datagram(now, Listener::WireGuard, client, &answers[0])
            .is_none()
    );
    let ev = events(&mut core);
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Event::Connected { client, address, protocol, .. }
                if client == "phone"
                    && *address == Ipv4Addr::new(172, 16, 201, 200)
                    && *protocol == crate::gateway::Protocol::WireGuard
        )),
        "{ev:?}"
    );
    let s = core.status(now);
    assert_eq!(s.clients.len(), 1);
    assert_eq!(s.clients[0].protocol.name(), "wireguard");
    // Its own address passes; any other is spoofing.
    let ok = ip_packet([172, 16, 201, 200], [10, 1, 0, 10], 1);
    let d = encapsulate(&mut phone, &ok);
    assert_eq!(
        core.handle_datagram(now, Listener::WireGuard, client, &d),
        Some(&ok[..])
    );
    let other = ip_packet([172, 16, 201, 7], [10, 1, 0, 10], 2);
    let d = encapsulate(&mut phone, &other);
    assert!(
        core.handle_datagram(now, Listener::WireGuard, client, &d)
            .is_none()
    );
    assert_eq!(core.drops().get(Drop::Spoofed), 1);
    // A key nobody configured is ignored.
    let mut stranger = stock_peer(9, 6);
    let init = match stranger.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        r => panic!("{r:?}"),
    };
    assert!(
        core.handle_datagram(now, Listener::WireGuard, client, &init)
            .is_none()
    );
    assert!(transmits(&mut core).is_empty());
    // Issued again under the same name (a new key, the same address): the old tunnel ends,
    // the new one keeps the address reserved.
    let mut renewed = wg_config(true);
    renewed.peers[1].public_key = key(4).public_key();
    assert_eq!(core.set_wireguard(now, Some(renewed)), 1);
    assert_eq!(core.leased_count(), 1, "the address stays reserved");
    let d = encapsulate(&mut phone, &ok);
    assert!(
        core.handle_datagram(now, Listener::WireGuard, client, &d)
            .is_none()
    );
    let _ = events(&mut core);
    // Revoked: the peer leaves the list; its tunnel ends at once and its packets drop.
    assert_eq!(core.set_wireguard(now, Some(wg_config(false))), 1);
    assert!(
        events(&mut core)
            .iter()
            .any(|e| matches!(e, Event::Revoked { client, .. } if client == "phone"))
    );
    let d = encapsulate(&mut phone, &ok);
    assert!(
        core.handle_datagram(now, Listener::WireGuard, client, &d)
            .is_none()
    );
    assert!(core.status(now).clients.is_empty());
    assert_eq!(core.leased_count(), 0, "the reserved address is free again");
    // The LAN cannot reach its address any more.
    let down = ip_packet([10, 1, 0, 10], [172, 16, 201, 200], 3);
    assert!(core.handle_tun_packet(now, &down).is_none());
}

#[test]
fn a_datagram_for_another_workers_tunnel_is_handed_over() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let shards = Shard::split("172.16.201.0/24".parse().unwrap(), 2).unwrap();
    let mut cores: Vec<GatewayCore> = shards
        .into_iter()
        .map(|s| GatewayCore::new_shard(config(now), entropy(), s))
        .collect();
    for c in &mut cores {
        c.set_wireguard(now, Some(wg_config(true)));
    }
    let site: SocketAddr = SITE.parse().unwrap();
    let owner = crate::gateway::worker_of_ip(site.ip(), 2);
    let other = 1 - owner;
    let mut peer = stock_peer(2, 77);
    assert!(transmits(&mut cores[other]).iter().all(|t| !matches!(
        t.dest,
        Dest::Udp { to, .. } if to == site
    )));
    let (answers, _) = deliver(&mut cores[owner], &mut peer, site);
    // The response arrives at the other worker (the kernel's choice): handed over by index.
    assert!(
        cores[other]
            .handle_datagram(now, Listener::WireGuard, site, &answers[0])
            .is_none()
    );
    let f = cores[other].poll_forward().expect("handed over");
    assert_eq!(f.worker(), owner);
    let crate::gateway::Forward::Datagram { bytes, remote, .. } = f else {
        panic!("{f:?}");
    };
    assert!(
        cores[owner]
            .handle_forwarded_datagram(now, Listener::WireGuard, remote, &bytes)
            .is_none()
    );
    assert!(events(&mut cores[owner]).contains(&Event::SiteUp {
        name: "branch".into()
    }));
    // A TUN packet for the site read by the other worker goes to the owner too.
    let down = ip_packet([10, 1, 0, 10], [10, 2, 0, 5], 3);
    assert!(cores[other].handle_tun_packet(now, &down).is_none());
    assert_eq!(cores[other].poll_forward().map(|f| f.worker()), Some(owner));
}

#[test]
fn the_wireguard_data_path_does_not_allocate() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut core = GatewayCore::new(config(now), entropy()).unwrap();
    core.set_wireguard(now, Some(wg_config(false)));
    let site: SocketAddr = SITE.parse().unwrap();
    let mut peer = stock_peer(2, 77);
    let (answers, _) = deliver(&mut core, &mut peer, site);
    for a in &answers {
        core.handle_datagram(now, Listener::WireGuard, site, a);
    }
    let _ = deliver(&mut core, &mut peer, site);
    let up = ip_packet([10, 2, 0, 5], [10, 1, 0, 10], 1);
    let down = ip_packet([10, 1, 0, 10], [10, 2, 0, 5], 2);
    let mut buf = vec![0u8; 2048];
    let (mut n_up, mut n_down) = (0, 0);
    for i in 0..200 {
        let d = encapsulate(&mut peer, &up);
        let (got, allocs) = crate::alloc_count::count(|| {
            core.handle_datagram(now, Listener::WireGuard, site, &d)
                .map(<[u8]>::len)
        });
        assert_eq!(got, Some(up.len()));
        let (len, allocs_down) = crate::alloc_count::count(|| {
            let (_, bytes) = core.handle_tun_packet(now, &down).expect("routed");
            let n = bytes.len();
            buf[..n].copy_from_slice(bytes);
            n
        });
        assert!(matches!(
            peer.decapsulate(Some(site.ip()), &buf[..len], &mut vec![0u8; 2048]),
            TunnResult::WriteToTunnelV4(..)
        ));
        // The first packets size the work buffers.
        if i >= 8 {
            n_up += allocs;
            n_down += allocs_down;
        }
    }
    assert_eq!(
        (n_up, n_down),
        (0, 0),
        "allocations per 192 packets up, down"
    );
}

#[test]
fn a_silent_site_with_keepalives_goes_down_and_comes_back() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut core = GatewayCore::new(config(start), entropy()).unwrap();
    let mut cfg = wg_config(false);
    cfg.peers[0].persistent_keepalive = Some(5);
    core.set_wireguard(start, Some(cfg));
    let site: SocketAddr = SITE.parse().unwrap();
    let mut peer = stock_peer(2, 77);
    let (answers, _) = deliver(&mut core, &mut peer, site);
    core.handle_datagram(start, Listener::WireGuard, site, &answers[0]);
    assert!(events(&mut core).contains(&Event::SiteUp {
        name: "branch".into()
    }));
    // The gateway's keepalive completes the peer's side.
    let _ = deliver(&mut core, &mut peer, site);
    // 24 s of silence: three keepalive intervals and the keepalive timeout are not over.
    let mut now = start;
    while now < start + std::time::Duration::from_secs(24) {
        now += std::time::Duration::from_millis(250);
        core.handle_timeout(now);
    }
    assert!(events(&mut core).is_empty());
    assert_eq!(core.status(now).sites[0].state, "connected");
    // 26 s: down.
    while now < start + std::time::Duration::from_secs(26) {
        now += std::time::Duration::from_millis(250);
        core.handle_timeout(now);
    }
    let ev = events(&mut core);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::SiteDown { name, .. } if name == "branch")),
        "{ev:?}"
    );
    assert_eq!(core.status(now).sites[0].state, "connecting");
    // The peer speaks again: up again, and its packets pass.
    let up = ip_packet([10, 2, 0, 5], [10, 1, 0, 10], 1);
    let d = encapsulate(&mut peer, &up);
    assert_eq!(
        core.handle_datagram(now, Listener::WireGuard, site, &d),
        Some(&up[..])
    );
    assert!(events(&mut core).contains(&Event::SiteUp {
        name: "branch".into()
    }));
}
