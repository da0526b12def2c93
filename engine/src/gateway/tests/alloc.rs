//! The steady-state data path allocates nothing (issue 13): once the tunnels are up and the
//! work buffers have grown, sealing and opening data packets happen in place in buffers
//! that are reused, on both ends, for every protocol:
//!
//! - OpenVPN over UDP: P_DATA_V2 client -> gateway ([`GatewayCore::handle_datagram`]) and
//!   TUN -> client ([`GatewayCore::handle_tun_packet`], a borrowed datagram);
//! - OpenVPN over TCP: [`GatewayCore::handle_stream_packet`] and TUN -> stream (the frame's
//!   packet is borrowed from the core as well, the driver frames it);
//! - IKEv2 remote access, ESP-in-UDP on 4500, both directions;
//! - a site-to-site SA between two gateway cores (PSK), both directions;
//! - the client ends: `ClientSession::encrypt` / `handle_data`, ESP SA seal / open;
//! - every OpenVPN data cipher and every ESP transform on their own, through [`EspTable`]
//!   as the gateway and the client use it.
//!
//! Allocations are counted by the test binary's global allocator (`crate::alloc_count`),
//! per thread, so the other tests running in parallel do not disturb the count.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::model::ipv4;
use super::pki::{self, GATEWAY_IP, WALL_CLOCK_SECS};
use super::sim::{Client, LAN_HOST, Proto, Sim};
use crate::alloc_count::count;
use crate::entropy::SeededEntropy;
use crate::esp::{EspCipher, EspInbound, EspOutbound, EspTable};
use crate::gateway::{CoreConfig, Dest, EntropyFactory, Event, GatewayCore, Listener, SiteConfig};
use crate::ikev2::crypto::Integ;
use crate::ikev2::initiator::{DEFAULT_CHILD_LIFETIME, DEFAULT_IKE_LIFETIME};
use crate::ikev2::proposal::Policy;
use crate::ikev2::site::{SiteAuth, SitePeer};
use crate::openvpn::DataOutcome;
use crate::openvpn::data::{Cipher, DataChannel, PING_PAYLOAD};
use crate::openvpn::keys::{DataKeys, KEY_BLOCK_LEN, Role};

/// Packets per direction and protocol.
const PACKETS: usize = 1000;
/// Packets sent first, so that every buffer reaches its steady size.
const WARM_UP: usize = 32;
/// Room for the largest packet the tests send plus any protocol's overhead.
const BUF: usize = 2048;

/// Inner packet sizes, cycled (small to a full 1400-byte MTU).
fn sizes() -> impl Iterator<Item = usize> {
    [0usize, 1, 40, 100, 500, 1000, 1368].into_iter().cycle()
}

/// Packets from a client's virtual address to the LAN and back.
fn packets(own: Ipv4Addr, n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let lan = Ipv4Addr::new(10, 1, 3, 4);
    let up = sizes()
        .take(n)
        .enumerate()
        .map(|(i, pad)| ipv4(own, lan, i as u64, pad))
        .collect();
    let down = sizes()
        .take(n)
        .enumerate()
        .map(|(i, pad)| ipv4(LAN_HOST, own, i as u64, pad))
        .collect();
    (up, down)
}

fn connected() -> (Sim, [usize; 3]) {
    Sim::one_of_each(13)
}

/// The client's buffers, reused for every packet.
struct Bufs {
    wire: Vec<u8>,
    plain: Vec<u8>,
}

impl Bufs {
    fn new() -> Self {
        Bufs {
            wire: Vec::with_capacity(BUF),
            plain: Vec::with_capacity(BUF),
        }
    }
}

/// Client `cl` seals `inner` and the core opens it; the core must hand back `inner` for TUN.
fn up(core: &mut GatewayCore, now: Instant, cl: &mut Client, b: &mut Bufs, inner: &[u8]) {
    let (addr, natt) = (cl.addr, cl.natt_addr);
    let tun = match &mut cl.proto {
        Proto::Ovpn(o) => {
            o.session.encrypt(now, inner, &mut b.wire).unwrap();
            match o.stream {
                Some(s) => core.handle_stream_packet(now, s, &b.wire),
                None => core.handle_datagram(now, Listener::OpenVpnUdp, addr, &b.wire),
            }
        }
        Proto::Ike(i) => {
            b.wire.resize(BUF, 0);
            let sa = i.outbound.as_mut().unwrap();
            let esp = sa.encrypt(inner, &mut b.wire).unwrap();
            core.handle_datagram(now, Listener::IkeNatT, natt, esp)
        }
    };
    assert_eq!(tun, Some(inner), "{}: the core did not deliver", cl.name);
}

/// Client `cl` sends a keepalive (an OpenVPN ping through the data channel, a NAT-T
/// keepalive); the core takes it and has nothing for TUN.
fn keepalive(core: &mut GatewayCore, now: Instant, cl: &mut Client, b: &mut Bufs) {
    let (addr, natt) = (cl.addr, cl.natt_addr);
    let tun = match &mut cl.proto {
        Proto::Ovpn(o) => {
            o.session.encrypt(now, &PING_PAYLOAD, &mut b.wire).unwrap();
            match o.stream {
                Some(s) => core.handle_stream_packet(now, s, &b.wire),
                None => core.handle_datagram(now, Listener::OpenVpnUdp, addr, &b.wire),
            }
        }
        Proto::Ike(_) => core.handle_datagram(now, Listener::IkeNatT, natt, &[0xff]),
    };
    assert_eq!(tun, None, "{}", cl.name);
}

/// The core seals `inner` (from TUN) for client `cl`, which opens it.
fn down(
    core: &mut GatewayCore,
    now: Instant,
    cl: &mut Client,
    want: Dest,
    b: &mut Bufs,
    inner: &[u8],
) {
    let Some((dest, wire)) = core.handle_tun_packet(now, inner) else {
        panic!("{}: not routed: {}", cl.name, core.drops());
    };
    assert_eq!(dest, want, "{}", cl.name);
    match &mut cl.proto {
        Proto::Ovpn(o) => {
            let key_id = wire[0] & 7;
            let got = o.session.handle_data(now, wire, key_id, &mut b.plain);
            let Ok(DataOutcome::Packet(r)) = got else {
                panic!("{}: {got:?}", cl.name);
            };
            assert_eq!(&b.plain[r], inner);
        }
        Proto::Ike(i) => {
            let spi = EspInbound::packet_spi(wire);
            let sa = i.inbound.iter_mut().find(|s| Some(s.spi()) == spi).unwrap();
            b.plain.resize(BUF, 0);
            let d = sa.decrypt(wire, &mut b.plain).unwrap();
            assert_eq!(d.packet, inner);
        }
    }
}

/// Sends `PACKETS` packets each way between the core and client `c`, after a warm-up;
/// returns the allocations counted (up, down).
fn round_trips(sim: &mut Sim, c: usize) -> (u64, u64) {
    let own = sim.clients[c].address.unwrap();
    let want = sim.expected_dest(c);
    let (ups, downs) = packets(own, WARM_UP + PACKETS);
    let drops = sim.core.drops().total();
    let Sim {
        core, clients, now, ..
    } = sim;
    let core = core.only();
    let cl = &mut clients[c];
    let mut b = Bufs::new();
    let step = Duration::from_micros(100);
    for (u, d) in ups.iter().zip(&downs).take(WARM_UP) {
        *now += step;
        up(core, *now, cl, &mut b, u);
        down(core, *now, cl, want, &mut b, d);
    }
    keepalive(core, *now, cl, &mut b);
    let mut n_up = 0;
    let mut n_down = 0;
    for (u, d) in ups.iter().zip(&downs).skip(WARM_UP) {
        *now += step;
        n_up += count(|| up(core, *now, cl, &mut b, u)).1;
        n_down += count(|| down(core, *now, cl, want, &mut b, d)).1;
        if u[5] == 0 {
            // Every 256th packet: a keepalive too.
            n_up += count(|| keepalive(core, *now, cl, &mut b)).1;
        }
    }
    // Nothing else happened: no control traffic, no event, no drop.
    assert!(core.poll_transmit().is_none(), "{}", cl.name);
    assert!(core.poll_event().is_none(), "{}", cl.name);
    assert_eq!(core.drops().total(), drops, "{}: {}", cl.name, core.drops());
    (n_up, n_down)
}

#[test]
fn steady_state_data_path_does_not_allocate() {
    let (mut sim, clients) = connected();
    // The counter does see the core's allocations (a status report builds strings).
    let now = sim.now;
    assert!(count(|| sim.core.status(now)).1 > 0);
    for c in clients {
        let (n_up, n_down) = round_trips(&mut sim, c);
        let cl = &sim.clients[c];
        eprintln!(
            "{:?}: {PACKETS} packets each way: {n_up} allocations up, {n_down} down",
            cl.protocol()
        );
        assert_eq!(
            (n_up, n_down),
            (0, 0),
            "{:?} ({}) allocates on the data path (up, down)",
            cl.protocol(),
            cl.name
        );
    }
}

/// One end of a site-to-site connection: a gateway core at `ip` whose LAN is `lan`, with one
/// connection (PSK) to the gateway at `peer` whose LAN is `peer_lan`.
pub(super) fn site_core(
    start: Instant,
    ip: &str,
    lan: &str,
    pool: &str,
    peer: &str,
    peer_lan: &str,
    initiate: bool,
) -> GatewayCore {
    let cfg = site_config(start, ip, lan, pool, peer, peer_lan, initiate);
    seeded_core(cfg, u64::from(initiate) + 1)
}

/// A gateway core for `cfg` whose entropy is seeded from `seed` (deterministic runs).
pub(super) fn seeded_core(cfg: CoreConfig, seed: u64) -> GatewayCore {
    let mut n = 0u64;
    let entropy: EntropyFactory = Box::new(move || {
        n += 1;
        Box::new(SeededEntropy::new(seed * 1000 + n))
    });
    GatewayCore::new(cfg, entropy).unwrap()
}

/// The configuration of [`site_core`].
pub(super) fn site_config(
    start: Instant,
    ip: &str,
    lan: &str,
    pool: &str,
    peer: &str,
    peer_lan: &str,
    initiate: bool,
) -> CoreConfig {
    let lan: Ipv4Net = lan.parse().unwrap();
    let peer_lan: Ipv4Net = peer_lan.parse().unwrap();
    let site = Arc::new(SitePeer {
        name: format!("to-{peer}"),
        remote_addr: peer.parse().unwrap(),
        remote_id: peer.into(),
        local_id: ip.into(),
        auth: SiteAuth::Psk(b"issue 13 site key".to_vec()),
        local_ts: vec![ipnet::IpNet::V4(lan)],
        remote_ts: vec![ipnet::IpNet::V4(peer_lan)],
        policy: Policy::default(),
        any_remote_addr: false,
    });
    let mut rc = pki::responder_cfg();
    rc.sites = vec![site.clone()];
    CoreConfig {
        client_pool: pool.parse().unwrap(),
        address_space: vec![lan],
        client_pool_v6: None,
        address_space_v6: Vec::new(),
        dns: vec![],
        dns_domains: Vec::new(),
        full_tunnel: false,
        openvpn: None,
        ikev2: Some(Arc::new(rc)),
        cookie_threshold: 1000,
        max_half_open: crate::gateway::DEFAULT_MAX_HALF_OPEN,
        max_half_open_per_ip: crate::gateway::DEFAULT_MAX_HALF_OPEN_PER_IP,
        max_handshaking: 16,
        sites: vec![SiteConfig {
            kind: "site-to-site",
            initiate,
            remote: SocketAddr::new(peer.parse().unwrap(), 500),
            remote_address_space: vec![peer_lan],
            dpd: Duration::from_secs(30),
            ike_lifetime: DEFAULT_IKE_LIFETIME,
            child_lifetime: DEFAULT_CHILD_LIFETIME,
            peer: site,
            own_interface: false,
            local_address: None,
            remote_address_space_v6: Vec::new(),
        }],
        unix_time: WALL_CLOCK_SECS,
        start,
    }
}

/// West of a site pair: the initiating gateway (LAN 10.1.0.0/16).
pub(super) const WEST: &str = GATEWAY_IP;
/// East: the responding gateway (LAN 10.2.0.0/16).
pub(super) const EAST: &str = "198.51.100.2";

/// Two gateway cores with a PSK site connection to each other, west initiating: west's
/// configuration is [`west_config`].
pub(super) fn site_pair(start: Instant) -> (GatewayCore, GatewayCore) {
    let west = site_core(
        start,
        WEST,
        "10.1.0.0/16",
        "172.16.200.0/24",
        EAST,
        "10.2.0.0/16",
        true,
    );
    let east = site_core(
        start,
        EAST,
        "10.2.0.0/16",
        "172.16.201.0/24",
        WEST,
        "10.1.0.0/16",
        false,
    );
    (west, east)
}

/// The configuration west of [`site_pair`] starts with.
pub(super) fn west_config(start: Instant) -> CoreConfig {
    site_config(
        start,
        WEST,
        "10.1.0.0/16",
        "172.16.200.0/24",
        EAST,
        "10.2.0.0/16",
        true,
    )
}

/// Where a datagram from core `from_ip` sent from `listener` arrives at the other core: its
/// listener and source address.
pub(super) fn arrival(from_ip: &str, listener: Listener, to: SocketAddr) -> (Listener, SocketAddr) {
    let port = if listener == Listener::Ike { 500 } else { 4500 };
    let on = if to.port() == 500 {
        Listener::Ike
    } else {
        Listener::IkeNatT
    };
    (on, SocketAddr::new(from_ip.parse().unwrap(), port))
}

/// Moves every datagram `a` (at `a_ip`) has for `b`; true if there was one.
pub(super) fn carry(a: &mut GatewayCore, a_ip: &str, b: &mut GatewayCore, now: Instant) -> bool {
    let mut any = false;
    while let Some(t) = a.poll_transmit() {
        any = true;
        let Dest::Udp { from, to } = t.dest else {
            panic!("a site sent on a stream");
        };
        let (on, src) = arrival(a_ip, from, to);
        b.handle_datagram(now, on, src, &t.payload);
    }
    any
}

#[test]
fn site_to_site_data_path_does_not_allocate() {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let (mut west, mut east) = site_pair(start);
    let mut now = start;
    let mut up = (false, false);
    let end = start + Duration::from_secs(30);
    while !(up.0 && up.1) {
        assert!(now < end, "the site SA did not come up: {up:?}");
        for core in [&mut west, &mut east] {
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now);
            }
        }
        while carry(&mut west, WEST, &mut east, now) | carry(&mut east, EAST, &mut west, now) {}
        for (core, up) in [(&mut west, &mut up.0), (&mut east, &mut up.1)] {
            while let Some(e) = core.poll_event() {
                *up |= matches!(e, Event::SiteUp { .. });
            }
        }
        now += Duration::from_millis(10);
    }
    let west_host = Ipv4Addr::new(10, 1, 0, 7);
    let east_host = Ipv4Addr::new(10, 2, 0, 9);
    let n = WARM_UP + PACKETS;
    let to_east: Vec<Vec<u8>> = sizes()
        .take(n)
        .enumerate()
        .map(|(i, pad)| ipv4(west_host, east_host, i as u64, pad))
        .collect();
    let to_west: Vec<Vec<u8>> = sizes()
        .take(n)
        .enumerate()
        .map(|(i, pad)| ipv4(east_host, west_host, i as u64, pad))
        .collect();
    // TUN of one core -> ESP-in-UDP -> the other core -> its TUN.
    let send = |a: &mut GatewayCore, a_ip: &str, b: &mut GatewayCore, now, p: &[u8]| {
        let Some((Dest::Udp { from, to }, esp)) = a.handle_tun_packet(now, p) else {
            panic!("not routed to the site: {}", a.drops());
        };
        let (on, src) = arrival(a_ip, from, to);
        assert_eq!(on, Listener::IkeNatT);
        assert_eq!(b.handle_datagram(now, on, src, esp), Some(p));
    };
    let (mut n_out, mut n_in) = (0, 0);
    for (i, (e, w)) in to_east.iter().zip(&to_west).enumerate() {
        now += Duration::from_micros(100);
        if i < WARM_UP {
            send(&mut west, WEST, &mut east, now, e);
            send(&mut east, EAST, &mut west, now, w);
        } else {
            n_out += count(|| send(&mut west, WEST, &mut east, now, e)).1;
            n_in += count(|| send(&mut east, EAST, &mut west, now, w)).1;
        }
    }
    for core in [&mut west, &mut east] {
        assert!(core.poll_transmit().is_none());
        assert!(core.poll_event().is_none());
        assert_eq!(core.drops().total(), 0, "{}", core.drops());
        let st = core.status(now);
        assert!(
            st.sites.iter().all(|s| s.rx_bytes > 0 && s.tx_bytes > 0),
            "{:?}",
            st.sites
        );
    }
    eprintln!(
        "Site: {PACKETS} packets each way: {n_out} allocations west -> east, {n_in} east -> west"
    );
    assert_eq!((n_out, n_in), (0, 0), "the site data path allocates");
}

fn key_block() -> [u8; KEY_BLOCK_LEN] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(13).wrapping_add(5))
}

#[test]
fn openvpn_data_channels_do_not_allocate() {
    let block = key_block();
    let (ups, _) = packets(Ipv4Addr::new(172, 16, 200, 2), PACKETS);
    for cipher in Cipher::ALL {
        let keys = |r| DataKeys::from_key_block(&block, r);
        let mut client = DataChannel::new(cipher, &keys(Role::Client), 0, 7).unwrap();
        let mut server = DataChannel::new(cipher, &keys(Role::Server), 0, 7).unwrap();
        let mut b = Bufs::new();
        let ((), n) = count(|| {
            for p in &ups {
                client.encrypt(p, &mut b.wire).unwrap();
                assert_eq!(server.decrypt(&b.wire, &mut b.plain).unwrap(), &p[..]);
                server.encrypt_framed(&[0x50, 0], p, &mut b.wire).unwrap();
                let plain = client.decrypt(&b.wire, &mut b.plain).unwrap();
                assert_eq!(&plain[2..], &p[..]);
            }
        });
        assert_eq!(
            n, 0,
            "{cipher:?}: {n} allocations for {PACKETS} round trips"
        );
    }
}

#[test]
fn esp_tables_do_not_allocate() {
    let ciphers = [
        EspCipher::AesGcm16 { key_bits: 128 },
        EspCipher::AesGcm16 { key_bits: 256 },
        EspCipher::ChaCha20Poly1305,
        EspCipher::AesCbc {
            key_bits: 128,
            integ: Integ::HmacSha1_96,
        },
        EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha256_128,
        },
        EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha384_192,
        },
        EspCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha512_256,
        },
    ];
    let (ups, _) = packets(Ipv4Addr::new(172, 16, 200, 2), PACKETS);
    for cipher in ciphers {
        let key = |seed: u8| -> Vec<u8> {
            (0..cipher.key_material_len())
                .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
                .collect()
        };
        let (a_to_b, b_to_a) = (key(1), key(2));
        // Two ends (a gateway's table, a client's table), one SA each way.
        let mut a = EspTable::new();
        let mut b = EspTable::new();
        assert!(a.install(
            1u64,
            0xa000_0001,
            EspInbound::new(0xa000_0001, cipher, &b_to_a).unwrap(),
            EspOutbound::new(0xb000_0001, cipher, &a_to_b).unwrap(),
            false,
        ));
        assert!(b.install(
            2u64,
            0xb000_0001,
            EspInbound::new(0xb000_0001, cipher, &a_to_b).unwrap(),
            EspOutbound::new(0xa000_0001, cipher, &b_to_a).unwrap(),
            false,
        ));
        let mut wire = vec![0u8; BUF];
        let mut plain = vec![0u8; BUF];
        let ((), n) = count(|| {
            for p in &ups {
                let len = a.encrypt(1, p, &mut wire).unwrap();
                let (owner, d) = b.decrypt(&wire[..len], &mut plain).unwrap();
                assert_eq!((owner, d.packet), (2, &p[..]));
                let len = b.encrypt(2, p, &mut wire).unwrap();
                let (owner, d) = a.decrypt(&wire[..len], &mut plain).unwrap();
                assert_eq!((owner, d.packet), (1, &p[..]));
            }
        });
        assert_eq!(
            n, 0,
            "{cipher:?}: {n} allocations for {PACKETS} round trips"
        );
    }
}
