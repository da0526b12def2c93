//! IKEv2 cannot be exhausted (issue 14): one address holds at most its share of half-open
//! IKE SAs and the worker a bounded number; cookie secrets come from the entropy factory and
//! rotate; under load a peer sending a MODP key exchange is asked for a cheap group it offers,
//! and MODP-only peers are rate-limited; IKE messages failing their integrity check and the
//! IKE_AUTH requests of a throttled PSK site are counted as drops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::pki::{self, GATEWAY_IP, WALL_CLOCK_SECS};
use super::sim::{Link, Options, Sim};
use crate::entropy::SeededEntropy;
use crate::gateway::{
    CoreConfig, Dest, Drop, EntropyFactory, Event, GatewayCore, Listener, SiteConfig,
};
use crate::ikev2::crypto::DhGroup;
use crate::ikev2::initiator::{
    DEFAULT_CHILD_LIFETIME, DEFAULT_IKE_LIFETIME, IkeInitiator, InitiatorConfig,
};
use crate::ikev2::message;
use crate::ikev2::proposal::Policy;
use crate::ikev2::psk_throttle::MAX_FAILURES;
use crate::ikev2::site::{SiteAuth, SitePeer};
use crate::wire::ikev2::{ExchangeType, Message, NotifyPayload, NotifyType, Payload};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn gw() -> SocketAddr {
    SocketAddr::new(GATEWAY_IP.parse().unwrap(), 500)
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// A single-worker simulation on a clean link.
fn sim(seed: u64, tweak: impl FnOnce(&mut Options)) -> Sim {
    let mut opts = Options {
        link: Link::clean(),
        workers: 1,
        ..Options::default()
    };
    tweak(&mut opts);
    Sim::new(seed, opts)
}

fn initiator(cfg: InitiatorConfig, seed: u64, now: Instant) -> IkeInitiator {
    IkeInitiator::new(Arc::new(cfg), Box::new(SeededEntropy::new(seed)), now, gw())
}

/// Plays `init` (at `from`; UDP 4500 from the same address, port + 1) against `core` until
/// neither side has anything to send. With `auth = false` the IKE_AUTH (UDP 4500) is never
/// delivered: the SA stays half-open.
fn exchange(
    core: &mut GatewayCore,
    now: Instant,
    init: &mut IkeInitiator,
    from: SocketAddr,
    auth: bool,
) {
    let natt = SocketAddr::new(from.ip(), from.port().wrapping_add(1));
    for _ in 0..20 {
        let mut any = false;
        while let Some(t) = init.poll_transmit() {
            if t.nat_t {
                if auth {
                    any = true;
                    let mut b = vec![0u8; 4];
                    b.extend_from_slice(&t.data);
                    core.handle_datagram(now, Listener::IkeNatT, natt, &b);
                }
            } else {
                any = true;
                core.handle_datagram(now, Listener::Ike, from, &t.data);
            }
        }
        run_jobs(core, now);
        while let Some(t) = core.poll_transmit() {
            let Dest::Udp { from: l, to } = t.dest else {
                continue;
            };
            if to.ip() != from.ip() {
                continue;
            }
            let msg = if l == Listener::IkeNatT {
                &t.payload[4..]
            } else {
                &t.payload[..]
            };
            init.handle_message(now, msg);
        }
        while core.poll_event().is_some() {}
        if !any {
            return;
        }
    }
}

/// The notify of `t` in the gateway's stateless answer `d`.
fn notify_data(d: &[u8], t: NotifyType) -> Option<Vec<u8>> {
    Message::parse(d).ok()?.notify(t).map(|n| n.data.to_vec())
}

/// Runs the handshake jobs the core handed out (odd seeds offload them), as a control
/// thread would.
fn run_jobs(core: &mut GatewayCore, now: Instant) {
    while let Some(j) = core.poll_job() {
        core.handle_job_done(now, j.run());
    }
}

fn answers(core: &mut GatewayCore, now: Instant) -> Vec<Vec<u8>> {
    run_jobs(core, now);
    std::iter::from_fn(|| core.poll_transmit())
        .map(|t| t.payload)
        .collect()
}

#[test]
fn one_address_holds_at_most_its_share_of_half_open_sas() {
    let mut sim = sim(41, |_| {});
    let now = sim.now;
    let core = sim.core.only();
    let before = core.tunnel_count();
    for i in 0..60u16 {
        let mut init = initiator(pki::ike_client_cfg(0), 1000 + u64::from(i), now);
        exchange(
            core,
            now,
            &mut init,
            addr("198.18.7.7", 20_000 + 2 * i),
            false,
        );
    }
    let per_ip = crate::gateway::DEFAULT_MAX_HALF_OPEN_PER_IP;
    assert_eq!(
        core.tunnel_count() - before,
        per_ip,
        "half-open SAs of one address"
    );
    assert_eq!(core.drops().get(Drop::IkePerIp), 60 - per_ip as u64);
    // Someone else connects meanwhile.
    let c = sim.add_ike(1);
    sim.connect_all(&[c], secs(20));
    // Once the half-open SAs time out (auth_timeout), the address may open new ones.
    sim.run_for(secs(31));
    let now = sim.now;
    let core = sim.core.only();
    let before = core.tunnel_count();
    let mut init = initiator(pki::ike_client_cfg(0), 999, now);
    exchange(core, now, &mut init, addr("198.18.7.7", 30_000), false);
    assert_eq!(core.tunnel_count(), before + 1);
    assert!(sim.is_up(c));
}

#[test]
fn a_spoofer_cannot_fill_an_addresss_share() {
    // Requests that never see our answers (a spoofed source) get cookies after the first few
    // half-open SAs of an address, so the address's real client still gets in.
    let mut sim = sim(42, |_| {});
    let now = sim.now;
    let core = sim.core.only();
    let before = core.tunnel_count();
    for i in 0..100u64 {
        let mut init = initiator(pki::ike_client_cfg(0), 2000 + i, now);
        let req = init.poll_transmit().expect("IKE_SA_INIT");
        core.handle_datagram(now, Listener::Ike, addr("198.18.8.8", 500), &req.data);
        answers(core, now);
    }
    let spoofed = core.tunnel_count() - before;
    assert!(
        spoofed <= 4,
        "{spoofed} half-open SAs from a spoofed source"
    );
    assert_eq!(core.drops().get(Drop::IkePerIp), 0);
    let mut init = initiator(pki::ike_client_cfg(1), 2500, now);
    exchange(core, now, &mut init, addr("198.18.8.8", 4000), true);
    assert!(
        init.is_established(),
        "the address's own client did not get in"
    );
}

#[test]
fn the_worker_holds_a_bounded_number_of_half_open_sas() {
    let mut sim = sim(43, |o| o.max_half_open = 8);
    let now = sim.now;
    let core = sim.core.only();
    let before = core.tunnel_count();
    for i in 0..12u16 {
        let mut init = initiator(pki::ike_client_cfg(0), 3000 + u64::from(i), now);
        let ip = format!("198.18.9.{}", i + 1);
        exchange(core, now, &mut init, addr(&ip, 500), false);
    }
    assert_eq!(core.tunnel_count() - before, 8);
    assert_eq!(core.drops().get(Drop::IkeHalfOpen), 4);
}

/// A gateway's COOKIE answer to SPIi `spi_i`.
fn cookie_reply(spi_i: u64, cookie: &[u8]) -> Vec<u8> {
    message::plain(
        message::header(spi_i, 0, ExchangeType::IKE_SA_INIT, false, true, 0),
        vec![Payload::Notify(NotifyPayload::new(
            NotifyType::COOKIE,
            cookie,
        ))],
    )
}

/// The COOKIE the core answers `req` with, from `from`, at `now`.
fn cookie(sim: &mut Sim, now: Instant, from: SocketAddr, req: &[u8]) -> Vec<u8> {
    let core = sim.core.only();
    core.handle_datagram(now, Listener::Ike, from, req);
    let out = answers(core, now);
    assert_eq!(out.len(), 1, "one stateless answer");
    notify_data(&out[0], NotifyType::COOKIE).expect("a COOKIE")
}

#[test]
fn cookie_secrets_come_from_the_entropy_factory_and_rotate() {
    let always = |o: &mut Options| o.cookie_threshold = 0;
    let mut a = sim(44, always);
    let mut b = sim(45, always);
    let t0 = a.now;
    let from = addr("198.18.10.1", 500);
    let mut init = initiator(pki::ike_client_cfg(0), 4000, t0);
    let req = init.poll_transmit().expect("IKE_SA_INIT").data;
    let c0 = cookie(&mut a, t0, from, &req);
    assert_eq!(c0, cookie(&mut a, t0, from, &req), "stable within a period");
    let tb = b.now;
    assert_ne!(
        c0,
        cookie(&mut b, tb, from, &req),
        "two gateways, two secrets"
    );
    // Five minutes later the secret is a new one.
    let t1 = t0 + secs(301);
    let c1 = cookie(&mut a, t1, from, &req);
    assert_ne!(c0, c1, "the cookie secret was not rotated");
    // A client holding a cookie of the previous secret still gets in.
    let core = a.core.only();
    let before = core.tunnel_count();
    init.handle_message(t1, &cookie_reply(init.spis().0, &c0));
    let with_c0 = init
        .poll_transmit()
        .expect("IKE_SA_INIT with the cookie")
        .data;
    core.handle_datagram(t1, Listener::Ike, from, &with_c0);
    run_jobs(core, t1);
    assert_eq!(core.tunnel_count(), before + 1, "previous secret refused");
    answers(core, t1);
    // Two rotations later it is refused (a new cookie instead of an SA).
    let mut late = initiator(pki::ike_client_cfg(1), 4001, t0);
    let req2 = late.poll_transmit().expect("IKE_SA_INIT").data;
    let from2 = addr("198.18.10.2", 500);
    let old = cookie(&mut a, t1, from2, &req2);
    let t2 = t1 + secs(301);
    let t3 = t2 + secs(301);
    // (Requests from elsewhere make the gateway rotate its secret.)
    let mut other = initiator(pki::ike_client_cfg(1), 4002, t0);
    let req3 = other.poll_transmit().expect("IKE_SA_INIT").data;
    let from3 = addr("198.18.10.3", 500);
    cookie(&mut a, t2, from3, &req3);
    cookie(&mut a, t3, from3, &req3);
    late.handle_message(t3, &cookie_reply(late.spis().0, &old));
    let with_old = late.poll_transmit().expect("with the old cookie").data;
    let core = a.core.only();
    let before = core.tunnel_count();
    core.handle_datagram(t3, Listener::Ike, from2, &with_old);
    run_jobs(core, t3);
    assert_eq!(
        core.tunnel_count(),
        before,
        "a cookie two secrets old was accepted"
    );
    let out = answers(core, t3);
    assert!(notify_data(&out[0], NotifyType::COOKIE).is_some());
}

fn modp_first(groups: &[DhGroup]) -> InitiatorConfig {
    let mut cfg = pki::ike_client_cfg(0);
    cfg.policy = Policy {
        dh_groups: groups.to_vec(),
        ..Policy::default()
    };
    cfg
}

#[test]
fn under_load_a_modp_key_exchange_is_asked_for_a_cheap_group() {
    let groups = [DhGroup::Modp2048, DhGroup::Curve25519];
    // Not under load: the client's MODP-2048 is taken (no extra round trip).
    let mut idle = sim(46, |_| {});
    let now = idle.now;
    let mut init = initiator(modp_first(&groups), 5000, now);
    exchange(
        idle.core.only(),
        now,
        &mut init,
        addr("198.18.11.1", 500),
        true,
    );
    assert!(init.is_established());
    assert_eq!(init.suite().map(|s| s.dh), Some(DhGroup::Modp2048));
    // Under load: INVALID_KE_PAYLOAD names x25519, which the client also offered.
    let mut busy = sim(47, |o| o.cookie_threshold = 0);
    let now = busy.now;
    let mut init = initiator(modp_first(&groups), 5001, now);
    exchange(
        busy.core.only(),
        now,
        &mut init,
        addr("198.18.11.2", 500),
        true,
    );
    assert!(init.is_established());
    assert_eq!(init.suite().map(|s| s.dh), Some(DhGroup::Curve25519));
}

#[test]
fn under_load_modp_only_peers_are_rate_limited() {
    let mut sim = sim(48, |o| o.cookie_threshold = 0);
    let now = sim.now;
    let core = sim.core.only();
    let before = core.tunnel_count();
    for i in 0..30u16 {
        let mut init = initiator(modp_first(&[DhGroup::Modp2048]), 6000 + u64::from(i), now);
        let ip = format!("198.18.12.{}", i + 1);
        exchange(core, now, &mut init, addr(&ip, 500), false);
    }
    assert_eq!(
        core.tunnel_count() - before,
        10,
        "MODP exchanges in one instant"
    );
    assert_eq!(core.drops().get(Drop::IkeModp), 20);
    // A second later the budget is back; an x25519 client never waits for it.
    let mut init = initiator(pki::ike_client_cfg(1), 6100, now);
    exchange(core, now, &mut init, addr("198.18.12.200", 500), true);
    assert!(init.is_established());
    let later = now + secs(1);
    let mut init = initiator(modp_first(&[DhGroup::Modp2048]), 6101, later);
    exchange(core, later, &mut init, addr("198.18.12.201", 500), false);
    assert_eq!(core.drops().get(Drop::IkeModp), 20);
}

#[test]
fn ike_messages_failing_their_integrity_check_are_counted() {
    let mut sim = sim(49, |_| {});
    let now = sim.now;
    let core = sim.core.only();
    let from = addr("198.18.13.1", 500);
    let mut init = initiator(pki::ike_client_cfg(0), 7000, now);
    exchange(core, now, &mut init, from, false);
    // The IKE_AUTH request, tampered with.
    let auth = init.poll_transmit();
    let auth = match auth {
        Some(a) => a,
        None => {
            // exchange() consumed it without delivering; make the client retransmit.
            init.handle_timeout(now + secs(2));
            init.poll_transmit().expect("IKE_AUTH")
        }
    };
    assert!(auth.nat_t);
    let mut b = vec![0u8; 4];
    b.extend_from_slice(&auth.data);
    let last = b.len() - 1;
    b[last] ^= 0x55;
    let natt = SocketAddr::new(from.ip(), 4500);
    core.handle_datagram(now, Listener::IkeNatT, natt, &b);
    assert_eq!(core.drops().get(Drop::IkeIntegrity), 1, "{}", core.drops());
}

const SITE_KEY: &[u8] = b"the site's strong key: 5Xq9wZr2";
const EAST: &str = "198.51.100.2";

/// A gateway with one PSK connection "east" at `EAST` (waiting for it).
fn site_gateway(any: bool) -> (GatewayCore, Instant) {
    // The virtual clock needs some origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let lan: Ipv4Net = "10.1.0.0/16".parse().unwrap();
    let east_lan: Ipv4Net = "10.2.0.0/16".parse().unwrap();
    let peer = Arc::new(SitePeer {
        name: "east".into(),
        remote_addr: EAST.parse().unwrap(),
        remote_id: "east.example".into(),
        local_id: GATEWAY_IP.into(),
        auth: SiteAuth::Psk(SITE_KEY.to_vec()),
        local_ts: vec![ipnet::IpNet::V4(lan)],
        remote_ts: vec![ipnet::IpNet::V4(east_lan)],
        policy: Policy::default(),
        any_remote_addr: any,
    });
    let mut rc = pki::responder_cfg();
    rc.sites = vec![peer.clone()];
    let cfg = CoreConfig {
        client_pool: "172.16.200.0/24".parse().unwrap(),
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
            initiate: false,
            remote: SocketAddr::new(EAST.parse().unwrap(), 500),
            remote_address_space: vec![east_lan],
            dpd: secs(30),
            ike_lifetime: DEFAULT_IKE_LIFETIME,
            child_lifetime: DEFAULT_CHILD_LIFETIME,
            peer,
            own_interface: false,
            local_address: None,
            remote_address_space_v6: Vec::new(),
        }],
        unix_time: WALL_CLOCK_SECS,
        start,
    };
    let mut n = 0u64;
    let entropy: EntropyFactory = Box::new(move || {
        n += 1;
        Box::new(SeededEntropy::new(9000 + n))
    });
    (GatewayCore::new(cfg, entropy).unwrap(), start)
}

/// East's side (or someone claiming to be east) with `key`.
fn east(key: &[u8]) -> InitiatorConfig {
    let mut cfg = pki::ike_client_cfg(0);
    cfg.cert_chain = vec![];
    cfg.remote_id = None;
    cfg.site = Some(Arc::new(SitePeer {
        name: "west".into(),
        remote_addr: GATEWAY_IP.parse().unwrap(),
        remote_id: GATEWAY_IP.into(),
        local_id: "east.example".into(),
        auth: SiteAuth::Psk(key.to_vec()),
        local_ts: vec!["10.2.0.0/16".parse().unwrap()],
        remote_ts: vec!["10.1.0.0/16".parse().unwrap()],
        policy: Policy::default(),
        any_remote_addr: false,
    }));
    cfg
}

fn refusals(core: &mut GatewayCore) -> Vec<String> {
    std::iter::from_fn(|| core.poll_event())
        .filter_map(|e| match e {
            Event::Refused { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

/// Runs one attempt of `cfg` from `from`; returns whether it connected.
fn attempt(
    core: &mut GatewayCore,
    now: Instant,
    cfg: InitiatorConfig,
    seed: u64,
    from: SocketAddr,
) -> bool {
    let mut init = initiator(cfg, seed, now);
    let natt = SocketAddr::new(from.ip(), from.port().wrapping_add(1));
    for _ in 0..20 {
        let mut any = false;
        while let Some(t) = init.poll_transmit() {
            any = true;
            if t.nat_t {
                let mut b = vec![0u8; 4];
                b.extend_from_slice(&t.data);
                core.handle_datagram(now, Listener::IkeNatT, natt, &b);
            } else {
                core.handle_datagram(now, Listener::Ike, from, &t.data);
            }
        }
        run_jobs(core, now);
        while let Some(t) = core.poll_transmit() {
            let Dest::Udp { from: l, to } = t.dest else {
                continue;
            };
            if to.ip() == from.ip() {
                let m = if l == Listener::IkeNatT {
                    &t.payload[4..]
                } else {
                    &t.payload[..]
                };
                init.handle_message(now, m);
            }
        }
        if !any {
            break;
        }
    }
    init.is_established()
}

#[test]
fn a_psk_site_is_not_guessed_from_another_address() {
    let (mut core, now) = site_gateway(false);
    let attacker = addr("203.0.113.9", 500);
    for i in 0..20u64 {
        assert!(!attempt(
            &mut core,
            now,
            east(b"guess number 1: abcdefghij"),
            100 + i,
            attacker
        ));
        let r = refusals(&mut core);
        assert!(
            r.iter()
                .any(|w| w.contains("not from the connection's remote_gateway")),
            "{r:?}"
        );
    }
    assert_eq!(core.drops().get(Drop::PskBackoff), 0, "nothing was guessed");
    // East itself, from its address, with the key.
    assert!(attempt(
        &mut core,
        now,
        east(SITE_KEY),
        200,
        addr(EAST, 500)
    ));
}

#[test]
fn failed_psk_authentications_of_a_site_are_throttled() {
    let (mut core, now) = site_gateway(true);
    let attacker = addr("203.0.113.9", 500);
    for i in 0..MAX_FAILURES as u64 {
        assert!(!attempt(
            &mut core,
            now,
            east(b"guess number 1: abcdefghij"),
            300 + i,
            attacker
        ));
        let r = refusals(&mut core);
        assert!(r.iter().any(|w| w.contains("mismatch")), "{r:?}");
    }
    // Guessing on, even right: dropped, counted.
    for i in 0..3u64 {
        let t = now + secs(i);
        assert!(!attempt(&mut core, t, east(SITE_KEY), 400 + i, attacker));
    }
    assert_eq!(core.drops().get(Drop::PskBackoff), 3, "{}", core.drops());
    // After the backoff the site gets in.
    let t = now + secs(61);
    assert!(attempt(&mut core, t, east(SITE_KEY), 500, addr(EAST, 500)));
}
