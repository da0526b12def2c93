//! The scenarios, each over many seeds. `SIM_SEEDS=n` runs n seeds instead of the default;
//! `SIM_SEED=s` runs only seed s (to replay a failure).

use std::time::{Duration, Instant};

use rand::Rng;

use super::model::Kind;
use super::sim::{Options, Sim, fail};
use crate::gateway::CoreConfig;
use crate::gateway::{Drop, Event, Protocol};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Runs `f` for each seed, reporting the time each took.
fn for_seeds(name: &str, default: u64, f: impl Fn(u64)) {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED")],
        Err(_) => {
            let n = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default);
            (1..=n).collect()
        }
    };
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    for &seed in &seeds {
        f(seed);
    }
    #[allow(clippy::disallowed_methods)]
    let took = t0.elapsed();
    eprintln!("{name}: {} seeds in {took:?}", seeds.len());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Udp,
    Tcp,
    Ike,
}

/// Starts clients of the given kinds (certificates from `first_cert` on) in a random order,
/// a few milliseconds apart.
fn start_clients(sim: &mut Sim, kinds: &[(Start, usize)], first_cert: usize) -> Vec<usize> {
    let mut plan: Vec<Start> = kinds
        .iter()
        .flat_map(|(k, n)| std::iter::repeat_n(*k, *n))
        .collect();
    // Fisher-Yates with the simulation's generator.
    for i in (1..plan.len()).rev() {
        let j = sim.rng().random_range(0..=i);
        plan.swap(i, j);
    }
    let mut cs = Vec::new();
    for (n, k) in plan.into_iter().enumerate() {
        let cert = first_cert + n;
        cs.push(match k {
            Start::Udp => sim.add_ovpn_udp(cert),
            Start::Tcp => sim.add_ovpn_tcp(cert),
            Start::Ike => sim.add_ike(cert),
        });
        let d = ms(sim.rng().random_range(0..80));
        sim.run_for(d);
    }
    cs
}

/// Every client's address is its own, and the client learnt the one the core reported.
fn check_addresses(sim: &Sim, cs: &[usize]) {
    let mut seen = std::collections::HashMap::new();
    for &c in cs {
        let cl = &sim.clients[c];
        let Some(a) = cl.address else {
            fail!(sim, "{} has no address", cl.name);
        };
        let t = cl.tunnel.and_then(|t| sim.model.tunnels.get(&t));
        if t.map(|t| t.address) != Some(a) {
            fail!(
                sim,
                "{} uses {a}, the core reported {:?}",
                cl.name,
                t.map(|t| t.address)
            );
        }
        if let Some(other) = seen.insert(a, c) {
            fail!(
                sim,
                "{a} given to {} and {}",
                sim.clients[other].name,
                cl.name
            );
        }
    }
}

/// At least `percent` of the packets of `kind` went all the way.
fn check_delivery(
    sim: &Sim,
    what: &str,
    kind: impl Fn(Kind) -> bool,
    to_client: bool,
    percent: usize,
) {
    let (sent, tun, rx) = sim.model.totals(kind);
    let got = if to_client { rx } else { tun };
    if sent == 0 || got * 100 < sent * percent {
        fail!(
            sim,
            "{what}: {got} of {sent} delivered (under {percent}%); drops {}",
            sim.core.drops()
        );
    }
}

/// Scenario 1: 24 OpenVPN UDP, 3 OpenVPN TCP and 8 IKEv2 clients through one core over a
/// lossy, reordering, duplicating link; LAN, client-to-client, LAN-to-client and spoofed
/// traffic; everything checked against the model.
fn mixed_fleet(seed: u64) {
    let mut sim = Sim::new(seed, Options::default());
    let cs = start_clients(
        &mut sim,
        &[(Start::Udp, 24), (Start::Tcp, 3), (Start::Ike, 8)],
        0,
    );
    sim.connect_all(&cs, secs(120));
    check_addresses(&sim, &cs);
    sim.check_status();
    for _ in 0..4 {
        sim.traffic_round(0.3);
        let d = ms(sim.rng().random_range(50..400));
        sim.run_for(d);
    }
    // A TUN packet for a pool address nobody holds goes nowhere, counted.
    let before = sim.core.drops().get(Drop::NoRoute);
    let now = sim.now;
    let stray = super::model::ipv4(
        super::sim::LAN_HOST,
        "172.16.200.250".parse().unwrap(),
        0,
        0,
    );
    if sim.core.handle_tun_packet(now, &stray).is_some() {
        fail!(sim, "a packet for an unleased address was routed");
    }
    if sim.core.drops().get(Drop::NoRoute) != before + 1 {
        fail!(sim, "NoRoute not counted");
    }
    sim.run_for(secs(2));
    if let Some(e) = sim.events.iter().find(|e| {
        matches!(
            e,
            Event::Disconnected { .. } | Event::Refused { .. } | Event::Revoked { .. }
        )
    }) {
        fail!(sim, "unexpected event {e:?}");
    }
    sim.check_status();
    sim.check_drops();
    check_delivery(&sim, "client to LAN", |k| k == Kind::Lan, false, 80);
    check_delivery(
        &sim,
        "client to client",
        |k| matches!(k, Kind::Peer(_)),
        true,
        75,
    );
    check_delivery(
        &sim,
        "LAN to client",
        |k| matches!(k, Kind::Down(_)),
        true,
        80,
    );
    if std::env::var("SIM_VERBOSE").is_ok() {
        eprintln!(
            "seed {seed}: t={:?} checked {} packets, {} tunnels, drops {}, unreachable {}, totals lan {:?} peer {:?} down {:?} spoofed {:?}",
            sim.now - sim.start,
            sim.checked,
            sim.core.tunnel_count(),
            sim.core.drops(),
            sim.unreachable,
            sim.model.totals(|k| k == Kind::Lan),
            sim.model.totals(|k| matches!(k, Kind::Peer(_))),
            sim.model.totals(|k| matches!(k, Kind::Down(_))),
            sim.model.totals(|k| k == Kind::Spoofed),
        );
    }
    let (spoofed, ..) = sim.model.totals(|k| k == Kind::Spoofed);
    if spoofed == 0 {
        fail!(sim, "no spoofed packet sent");
    }
}

#[test]
fn mixed_fleet_over_a_lossy_link() {
    for_seeds("mixed_fleet", 20, mixed_fleet);
}

/// Scenario 6: every OpenVPN session has its own peer-id, and data packets carry it.
fn unique_peer_ids(seed: u64) {
    let mut sim = Sim::new(seed, Options::default());
    let cs = start_clients(&mut sim, &[(Start::Udp, 6), (Start::Tcp, 2)], 0);
    sim.connect_all(&cs, secs(60));
    let mut ids = std::collections::HashMap::new();
    for &c in &cs {
        let Some(p) = sim.clients[c].peer_id() else {
            fail!(sim, "{} got no peer-id", sim.clients[c].name);
        };
        if p >= 0x00ff_ffff {
            fail!(sim, "{} got peer-id {p:#x}", sim.clients[c].name);
        }
        if let Some(o) = ids.insert(p, c) {
            fail!(
                sim,
                "peer-id {p} given to {} and {}",
                sim.clients[o].name,
                sim.clients[c].name
            );
        }
        // The client's data packets are P_DATA_V2 with that peer-id.
        let own = sim.clients[c].address.unwrap();
        let pkt = super::model::ipv4(own, super::sim::LAN_HOST, 0, 0);
        let wire = sim.encrypt_up(c, &pkt);
        let (op, pid) = (
            wire[0] >> 3,
            u32::from_be_bytes([0, wire[1], wire[2], wire[3]]),
        );
        if op != 9 || pid != p {
            fail!(
                sim,
                "{} sends opcode {op} peer-id {pid}, pushed {p}",
                sim.clients[c].name
            );
        }
    }
    sim.traffic_round(0.0);
    sim.run_for(secs(1));
    sim.check_drops();
    let protocols: Vec<Protocol> = cs.iter().map(|&c| sim.clients[c].protocol()).collect();
    assert!(protocols.contains(&Protocol::OpenVpnTcp));
}

#[test]
fn openvpn_sessions_have_unique_peer_ids() {
    for_seeds("unique_peer_ids", 20, unique_peer_ids);
}

fn ovpn_events(sim: &mut Sim, c: usize) -> Vec<crate::openvpn::client::ClientEvent> {
    sim.clients[c].ovpn().events.clone()
}

/// The core's route for client `c`'s address: None and a NoRoute drop expected when `gone`.
fn check_no_route(sim: &mut Sim, c: usize) {
    let addr = sim.clients[c].address.unwrap();
    let pkt = super::model::ipv4(super::sim::LAN_HOST, addr, 0, 0);
    let before = sim.core.drops().get(Drop::NoRoute);
    let now = sim.now;
    if let Some((dest, _)) = sim.core.handle_tun_packet(now, &pkt) {
        fail!(
            sim,
            "a packet for {} ({addr}) still goes to {dest:?} after its tunnel ended",
            sim.clients[c].name
        );
    }
    if sim.core.drops().get(Drop::NoRoute) != before + 1 {
        fail!(sim, "no NoRoute drop for {addr}: {}", sim.core.drops());
    }
}

/// One round of traffic on a clean link: everything must arrive.
fn round_all_delivered(sim: &mut Sim) {
    let before = (
        sim.model.totals(|k| k == Kind::Lan),
        sim.model
            .totals(|k| matches!(k, Kind::Peer(_) | Kind::Down(_))),
    );
    sim.traffic_round(0.2);
    sim.run_for(secs(1));
    let after = (
        sim.model.totals(|k| k == Kind::Lan),
        sim.model
            .totals(|k| matches!(k, Kind::Peer(_) | Kind::Down(_))),
    );
    let lan = (after.0.0 - before.0.0, after.0.1 - before.0.1);
    let to_clients = (after.1.0 - before.1.0, after.1.2 - before.1.2);
    if lan.0 != lan.1 || to_clients.0 != to_clients.1 || lan.0 == 0 {
        let lost: Vec<String> = sim
            .model
            .packets
            .iter()
            .filter(|(_, e)| match e.kind {
                Kind::Lan => e.tun == 0,
                Kind::Peer(_) | Kind::Down(_) => e.rx == 0,
                Kind::Spoofed => false,
            })
            .map(|(t, e)| {
                let from = e
                    .src
                    .map(|s| format!("{} {:?}", sim.clients[s].name, sim.clients[s].protocol()));
                format!("{t} {:?} from {from:?} (tun {})", e.kind, e.tun)
            })
            .collect();
        fail!(
            sim,
            "on a clean link: LAN {}/{} and to clients {}/{} delivered; never arrived: {lost:?}; drops {}",
            lan.1,
            lan.0,
            to_clients.1,
            to_clients.0,
            sim.core.drops()
        );
    }
}

/// Scenario 2: live revocation of one OpenVPN and one IKEv2 client among several.
fn revocation(seed: u64) {
    let mut sim = Sim::new(seed, Options::default());
    let cs = start_clients(
        &mut sim,
        &[(Start::Udp, 4), (Start::Tcp, 2), (Start::Ike, 3)],
        0,
    );
    sim.connect_all(&cs, secs(60));
    sim.traffic_round(0.2);
    sim.run_for(secs(1));
    // The end of a revoked tunnel must reach its client: no loss from here on.
    sim.link = super::sim::Link::clean();
    sim.run_for(secs(1));
    let ovpn: Vec<usize> = cs
        .iter()
        .copied()
        .filter(|&c| sim.clients[c].protocol() != Protocol::Ikev2)
        .collect();
    let ike: Vec<usize> = cs
        .iter()
        .copied()
        .filter(|&c| sim.clients[c].protocol() == Protocol::Ikev2)
        .collect();
    let v_ovpn = ovpn[sim.rng().random_range(0..ovpn.len())];
    let v_ike = ike[sim.rng().random_range(0..ike.len())];
    let victims = [v_ovpn, v_ike];
    let crl = super::pki::pki().crl(&[sim.clients[v_ovpn].cert, sim.clients[v_ike].cert]);
    let tunnels: Vec<_> = victims
        .iter()
        .map(|&v| sim.clients[v].tunnel.unwrap())
        .collect();
    let now = sim.now;
    let hits = sim.core.set_crls(now, &[crl]).unwrap();
    if hits != 2 {
        fail!(sim, "set_crls ended {hits} tunnels, expected 2");
    }
    // At once: no route to them any more.
    for &v in &victims {
        check_no_route(&mut sim, v);
    }
    sim.strict = false;
    sim.run_for(secs(5));
    for (&v, &t) in victims.iter().zip(&tunnels) {
        let name = sim.clients[v].name.clone();
        let revoked = sim.events.iter().any(
            |e| matches!(e, Event::Revoked { tunnel, client } if *tunnel == t && *client == name),
        );
        let disconnected = sim
            .events
            .iter()
            .any(|e| matches!(e, Event::Disconnected { tunnel, .. } if *tunnel == t));
        if !revoked || !disconnected {
            fail!(
                sim,
                "{name}: Revoked {revoked} Disconnected {disconnected}: {:?}",
                sim.events
            );
        }
        check_no_route(&mut sim, v);
    }
    let ev = ovpn_events(&mut sim, v_ovpn);
    if !ev.iter().any(|e| {
        matches!(e, crate::openvpn::client::ClientEvent::AuthFailed(r) if r.contains("revoked"))
    }) {
        fail!(sim, "{} was not told AUTH_FAILED: {ev:?}", sim.clients[v_ovpn].name);
    }
    let ike_client = sim.clients[v_ike].ike();
    if ike_client.closed.is_none() || ike_client.outbound.is_some() {
        let ev = ike_client.events.clone();
        fail!(
            sim,
            "{} did not get the Delete: {ev:?}",
            sim.clients[v_ike].name
        );
    }
    // The others keep working.
    for &v in &victims {
        sim.remove_client(v);
    }
    sim.strict = true;
    round_all_delivered(&mut sim);
    sim.check_status();
    // Coming back with a revoked certificate is refused, on either protocol.
    let again_ovpn = sim.add_ovpn_udp(sim.clients[v_ovpn].cert);
    let again_ike = sim.add_ike(sim.clients[v_ike].cert);
    sim.run_for(secs(10));
    for c in [again_ovpn, again_ike] {
        let name = sim.clients[c].name.clone();
        if sim.clients[c].tunnel.is_some() || sim.clients[c].is_up() {
            fail!(sim, "{name} connected with a revoked certificate");
        }
        let refused = sim
            .events
            .iter()
            .any(|e| matches!(e, Event::Refused { client: Some(n), .. } if *n == name));
        if !refused {
            fail!(sim, "no Refused for {name}: {:?}", sim.events);
        }
    }
    let ev = ovpn_events(&mut sim, again_ovpn);
    if !ev
        .iter()
        .any(|e| matches!(e, crate::openvpn::client::ClientEvent::AuthFailed(_)))
    {
        fail!(sim, "refused OpenVPN client not told: {ev:?}");
    }
    if sim.clients[again_ike].ike().closed.is_none() {
        fail!(sim, "refused IKEv2 client not told");
    }
    sim.run_for(secs(60));
    let live = sim.model.live().count();
    if sim.core.tunnel_count() != live {
        fail!(
            sim,
            "{} tunnels left for {live} clients",
            sim.core.tunnel_count()
        );
    }
    sim.check_status();
    sim.check_drops();
}

#[test]
fn revocation_ends_exactly_the_revoked_tunnels() {
    for_seeds("revocation", 20, revocation);
}

/// Scenario 2b: an operator disconnects one OpenVPN and one IKEv2 client by name; the
/// others keep working; the running totals count handshakes, traffic (never going down when
/// a session ends) and the disconnects.
fn operator_disconnect(seed: u64) {
    let mut sim = Sim::new(seed, Options::default());
    let cs = start_clients(
        &mut sim,
        &[(Start::Udp, 2), (Start::Tcp, 1), (Start::Ike, 2)],
        0,
    );
    sim.connect_all(&cs, secs(60));
    sim.link = super::sim::Link::clean();
    round_all_delivered(&mut sim);
    let before = sim.core.status(sim.now);
    let ok = |p| *before.counters.handshakes_ok.get(p);
    if ok(Protocol::OpenVpnUdp) < 2 || ok(Protocol::OpenVpnTcp) < 1 || ok(Protocol::Ikev2) < 2 {
        fail!(
            sim,
            "handshakes counted: {:?}",
            before.counters.handshakes_ok
        );
    }
    for c in &before.clients {
        if c.cipher.is_empty() || c.last_handshake_secs.is_none() || c.traffic.rx_packets == 0 {
            fail!(sim, "session detail missing: {c:?}");
        }
    }
    let rx_before: u64 = before
        .counters
        .ended_traffic
        .0
        .iter()
        .map(|t| t.rx_bytes)
        .sum();
    let v_ovpn = *cs
        .iter()
        .find(|&&c| sim.clients[c].protocol() != Protocol::Ikev2)
        .unwrap();
    let v_ike = *cs
        .iter()
        .find(|&&c| sim.clients[c].protocol() == Protocol::Ikev2)
        .unwrap();
    let victims = [v_ovpn, v_ike];
    let tunnels: Vec<_> = victims
        .iter()
        .map(|&v| sim.clients[v].tunnel.unwrap())
        .collect();
    sim.strict = false;
    for &v in &victims {
        let name = sim.clients[v].name.clone();
        let now = sim.now;
        let n = sim.core.disconnect(now, &name);
        if n != 1 {
            fail!(
                sim,
                "disconnect {name} ended {n} sessions, not 1: {:?}",
                sim.core.status(now).clients
            );
        }
        check_no_route(&mut sim, v);
    }
    let now = sim.now;
    if sim.core.disconnect(now, "nobody") != 0 {
        fail!(sim, "disconnect of an unknown name ended a session");
    }
    sim.run_for(secs(5));
    for (&v, &t) in victims.iter().zip(&tunnels) {
        let ended = sim.events.iter().any(|e| {
            matches!(e, Event::Disconnected { tunnel, reason, .. } if *tunnel == t && reason.contains("operator"))
        });
        if !ended {
            fail!(
                sim,
                "{}: no Disconnected by the operator",
                sim.clients[v].name
            );
        }
    }
    if !ovpn_events(&mut sim, v_ovpn)
        .iter()
        .any(|e| matches!(e, crate::openvpn::client::ClientEvent::Closed(_)))
    {
        fail!(sim, "{} was not told to go", sim.clients[v_ovpn].name);
    }
    if sim.clients[v_ike].ike().closed.is_none() {
        fail!(sim, "{} did not get the Delete", sim.clients[v_ike].name);
    }
    for &v in &victims {
        sim.remove_client(v);
    }
    sim.strict = true;
    round_all_delivered(&mut sim);
    sim.check_status();
    let after = sim.core.status(sim.now);
    let rx_after: u64 = after
        .counters
        .ended_traffic
        .0
        .iter()
        .map(|t| t.rx_bytes)
        .sum();
    if after.counters.disconnected != 2 || rx_after <= rx_before {
        fail!(
            sim,
            "disconnected {} (want 2), rx bytes {rx_before} -> {rx_after}",
            after.counters.disconnected
        );
    }
}

#[test]
fn an_operator_disconnect_ends_exactly_that_session() {
    for_seeds("operator_disconnect", 10, operator_disconnect);
}

/// Scenario 2c: a reload moves the client pool: every remote-access session is told to
/// reconnect, and clients that come back lease from the new pool; the old addresses route
/// nowhere.
fn pool_reload(seed: u64) {
    let mut sim = Sim::new(seed, Options::default());
    let cs = start_clients(
        &mut sim,
        &[(Start::Udp, 2), (Start::Tcp, 1), (Start::Ike, 2)],
        0,
    );
    sim.connect_all(&cs, secs(60));
    sim.link = super::sim::Link::clean();
    round_all_delivered(&mut sim);
    let new_pool: ipnet::Ipv4Net = "172.16.77.0/24".parse().unwrap();
    let make = |p: ipnet::Ipv4Net| {
        let base = &sim.config;
        let mut c = base();
        c.client_pool = p;
        c
    };
    let cfgs: Vec<CoreConfig> = (0..8).map(|_| make(new_pool)).collect();
    let cfgs = std::cell::RefCell::new(cfgs);
    let now = sim.now;
    sim.strict = false;
    let ended = sim
        .core
        .reconfigure(now, || cfgs.borrow_mut().pop().unwrap())
        .unwrap();
    if ended != cs.len() {
        fail!(sim, "a new pool ended {ended} sessions, not {}", cs.len());
    }
    sim.pool = new_pool;
    if sim.core.gateway_addr() != std::net::Ipv4Addr::new(172, 16, 77, 1) {
        fail!(
            sim,
            "gateway address {} after the pool change",
            sim.core.gateway_addr()
        );
    }
    for &c in &cs {
        check_no_route(&mut sim, c);
    }
    sim.run_for(secs(5));
    for &c in &cs {
        sim.remove_client(c);
    }
    // Clients with the same certificates come back into the new pool.
    let again: Vec<usize> = cs
        .iter()
        .map(|&c| {
            let cert = sim.clients[c].cert;
            match sim.clients[c].protocol() {
                Protocol::Ikev2 => sim.add_ike(cert),
                _ => sim.add_ovpn_udp(cert),
            }
        })
        .collect();
    sim.strict = true;
    sim.connect_all(&again, secs(60));
    for &c in &again {
        let a = sim.clients[c].address.unwrap();
        if !new_pool.contains(&a) {
            fail!(
                sim,
                "{} got {a}, outside the new pool {new_pool}",
                sim.clients[c].name
            );
        }
    }
    round_all_delivered(&mut sim);
    sim.check_status();
}

#[test]
fn a_new_pool_moves_every_client_into_it() {
    for_seeds("pool_reload", 8, pool_reload);
}

/// Scenario 3: an OpenVPN UDP client and an IKEv2 client change address mid-session; forged
/// and replayed packets from a third address move nothing.
fn roaming(seed: u64) {
    let opts = Options {
        link: super::sim::Link::clean(),
        ..Options::default()
    };
    let mut sim = Sim::new(seed, opts);
    let cs = start_clients(&mut sim, &[(Start::Udp, 3), (Start::Ike, 2)], 0);
    sim.connect_all(&cs, secs(60));
    round_all_delivered(&mut sim);
    let udp: Vec<usize> = cs
        .iter()
        .copied()
        .filter(|&c| sim.clients[c].protocol() == Protocol::OpenVpnUdp)
        .collect();
    let ike: Vec<usize> = cs
        .iter()
        .copied()
        .filter(|&c| sim.clients[c].protocol() == Protocol::Ikev2)
        .collect();
    for (c, other) in [(udp[0], udp[1]), (ike[0], ike[1])] {
        let name = sim.clients[c].name.clone();
        let tunnel = sim.clients[c].tunnel.unwrap();
        let home = sim.clients[c].core_remote;
        let listener = match sim.clients[c].protocol() {
            Protocol::Ikev2 => crate::gateway::Listener::IkeNatT,
            _ => crate::gateway::Listener::OpenVpnUdp,
        };
        let third: std::net::SocketAddr = "203.0.113.66:4444".parse().unwrap();
        let roams_before = sim
            .events
            .iter()
            .filter(|e| matches!(e, Event::Roamed { tunnel: t, .. } if *t == tunnel))
            .count();
        let roams = |sim: &Sim| {
            sim.events
                .iter()
                .filter(|e| matches!(e, Event::Roamed { tunnel: t, .. } if *t == tunnel))
                .count()
                - roams_before
        };
        // A valid packet, then the same bytes again from a third address (a replay).
        let own = sim.clients[c].address.unwrap();
        let tag = sim.model.tag();
        let inner = super::model::ipv4(own, super::sim::LAN_HOST, tag, 10);
        let wire = sim.encrypt_up(c, &inner);
        sim.model.cipher.insert(wire.clone(), (tag, 0));
        sim.model.packets.insert(
            tag,
            super::model::Expect {
                src: Some(c),
                kind: Kind::Lan,
                bytes: inner,
                tun: 0,
                rx: 0,
            },
        );
        if sim.deliver_to_core(listener, home, &wire, None).is_none() {
            fail!(sim, "{name}: a valid packet did not reach TUN");
        }
        // The model expects BadData for the second copy.
        sim.deliver_to_core(listener, third, &wire, None);
        // Garbage behind a valid header (peer-id / SPI), and another client's valid packet
        // with this client's header.
        let mut garbage = wire.clone();
        for b in garbage.iter_mut().skip(8) {
            *b = sim.rng().random();
        }
        let before = sim.core.drops().total();
        let now = sim.now;
        if sim
            .core
            .handle_datagram(now, listener, third, &garbage)
            .is_some()
        {
            fail!(sim, "{name}: garbage reached TUN");
        }
        let pkt = super::model::ipv4(
            sim.clients[other].address.unwrap(),
            super::sim::LAN_HOST,
            0,
            0,
        );
        let mut foreign = sim.encrypt_up(other, &pkt);
        foreign[..4].copy_from_slice(&wire[..4]);
        if sim
            .core
            .handle_datagram(now, listener, third, &foreign)
            .is_some()
        {
            fail!(
                sim,
                "{name}: another client's packet under its header reached TUN"
            );
        }
        if sim.core.drops().total() != before + 2 {
            fail!(
                sim,
                "{name}: forged packets not counted: {}",
                sim.core.drops()
            );
        }
        if listener == crate::gateway::Listener::IkeNatT {
            // An IKE message with the SA's SPIs and a forged SK payload.
            let ike = sim.clients[c].ike();
            let (spi_i, spi_r) = ike.init.spis();
            let flags = if ike.init.is_ike_initiator() { 0x08 } else { 0 };
            let mut m = vec![0u8; 4];
            m.extend_from_slice(&spi_i.to_be_bytes());
            m.extend_from_slice(&spi_r.to_be_bytes());
            m.extend_from_slice(&[46, 0x20, 37, flags, 0, 0, 0, 50]);
            let total = 28 + 4 + 64u32;
            m.extend_from_slice(&total.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 68]);
            for _ in 0..64 {
                let b = sim.rng().random();
                m.push(b);
            }
            let now = sim.now;
            sim.core.handle_datagram(now, listener, third, &m);
        }
        sim.drive();
        if roams(&sim) != 0 || sim.core.tunnel_remote(tunnel) != Some(home) {
            fail!(
                sim,
                "{name}: forged packets moved the tunnel to {:?}: {:?}",
                sim.core.tunnel_remote(tunnel),
                sim.events
            );
        }
        // Now the client really moves (new address; for IKEv2 a NAT rebinding: new port).
        let new_ip = listener == crate::gateway::Listener::OpenVpnUdp;
        let new = sim.rebind(c, new_ip);
        sim.send_up(c, Kind::Lan);
        sim.run_for(secs(1));
        if roams(&sim) != 1 || sim.core.tunnel_remote(tunnel) != Some(new) {
            fail!(
                sim,
                "{name} moved to {new}, the core has {:?}: {:?}",
                sim.core.tunnel_remote(tunnel),
                sim.events
            );
        }
        // Traffic to it goes to the new address, and it keeps working both ways.
        let rx = sim.clients[c].rx.len();
        sim.send_down(c);
        sim.run_for(secs(1));
        if sim.clients[c].rx.len() != rx + 1 {
            fail!(sim, "{name} got nothing at its new address");
        }
        round_all_delivered(&mut sim);
    }
    // Keepalives and DPD keep finding the moved clients.
    sim.run_for(secs(300));
    if let Some(e) = sim
        .events
        .iter()
        .find(|e| matches!(e, Event::Disconnected { .. }))
    {
        fail!(sim, "unexpected {e:?}");
    }
    round_all_delivered(&mut sim);
    sim.check_status();
    sim.check_drops();
}

#[test]
fn roaming_follows_authenticated_packets_only() {
    for_seeds("roaming", 20, roaming);
}

/// Scenario 4: a simulated week of keepalives, DPD, renegotiations and rekeys: nothing
/// ends, nothing accumulates; then every client vanishes and the core forgets them all.
fn week_of_timers(seed: u64) {
    let opts = Options {
        link: super::sim::Link {
            loss_percent: 1,
            reorder_percent: 5,
            dup_percent: 1,
            ..super::sim::Link::lossy()
        },
        ..Options::default()
    };
    let mut sim = Sim::new(seed, opts);
    let cs = start_clients(
        &mut sim,
        &[(Start::Udp, 3), (Start::Tcp, 1), (Start::Ike, 2)],
        0,
    );
    sim.connect_all(&cs, secs(60));
    let tunnels = sim.core.tunnel_count();
    if tunnels != cs.len() {
        fail!(sim, "{tunnels} tunnels for {} clients", cs.len());
    }
    for day in 0..7 {
        sim.run_for(secs(24 * 3600));
        if let Some(e) = sim
            .events
            .iter()
            .find(|e| matches!(e, Event::Disconnected { .. } | Event::Refused { .. }))
        {
            fail!(sim, "day {day}: {e:?} drops {}", sim.core.drops());
        }
        if sim.core.tunnel_count() != tunnels || sim.core.deadline_count() > tunnels {
            fail!(
                sim,
                "day {day}: {} tunnels, {} deadlines (started with {tunnels})",
                sim.core.tunnel_count(),
                sim.core.deadline_count()
            );
        }
        for &c in &cs {
            if !sim.is_up(c) {
                fail!(sim, "day {day}: {} is down", sim.clients[c].name);
            }
        }
        sim.check_status();
        sim.traffic_round(0.1);
        sim.run_for(secs(2));
    }
    // Renegotiations and rekeys happened all week.
    for &c in &cs {
        let n = match &sim.clients[c].proto {
            super::sim::Proto::Ovpn(o) => o
                .events
                .iter()
                .filter(|e| matches!(e, crate::openvpn::client::ClientEvent::Rekeyed { .. }))
                .count(),
            super::sim::Proto::Ike(i) => {
                i.events.iter().filter(|e| e.starts_with("rekeyed")).count()
            }
        };
        if n < 100 {
            fail!(sim, "{}: only {n} rekeys in a week", sim.clients[c].name);
        }
    }
    // Everyone vanishes without a word: the core ends every tunnel by itself.
    sim.strict = false;
    for &c in &cs {
        sim.remove_client(c);
    }
    sim.run_for(secs(600));
    if sim.core.tunnel_count() != 0
        || sim.core.deadline_count() != 0
        || sim.core.leased_count() != 0
    {
        fail!(
            sim,
            "after every client vanished: {} tunnels, {} deadlines, {} leases",
            sim.core.tunnel_count(),
            sim.core.deadline_count(),
            sim.core.leased_count()
        );
    }
    if sim.model.live().count() != 0 {
        let live: Vec<String> = sim.model.live().map(|(_, t)| t.name.clone()).collect();
        fail!(sim, "no Disconnected for {live:?}");
    }
    if sim.core.poll_timeout().is_some() {
        fail!(sim, "a timer is left with no tunnel");
    }
    sim.check_drops();
}

#[test]
fn a_week_of_timers_leaves_nothing_behind() {
    for_seeds("week_of_timers", 3, week_of_timers);
}

/// Scenario 5: a second login with the same certificate (another protocol) replaces the
/// first; the name never holds two addresses.
fn one_session_per_certificate(seed: u64) {
    let mut sim = Sim::new(seed, Options::default());
    let others = start_clients(&mut sim, &[(Start::Udp, 2), (Start::Ike, 1)], 1);
    let kinds = [Start::Udp, Start::Tcp, Start::Ike];
    let first_kind = kinds[sim.rng().random_range(0..3)];
    let second_kind = loop {
        let k = kinds[sim.rng().random_range(0..3)];
        if k != first_kind {
            break k;
        }
    };
    let add = |sim: &mut Sim, k: Start| match k {
        Start::Udp => sim.add_ovpn_udp(0),
        Start::Tcp => sim.add_ovpn_tcp(0),
        Start::Ike => sim.add_ike(0),
    };
    let first = add(&mut sim, first_kind);
    let mut all = others.clone();
    all.push(first);
    sim.connect_all(&all, secs(60));
    let addr = sim.clients[first].address.unwrap();
    let old_tunnel = sim.clients[first].tunnel.unwrap();
    sim.traffic_round(0.0);
    sim.run_for(secs(1));
    // The first client must hear that it was replaced (a lost IKEv2 Delete is not sent
    // again: see `a_lost_delete_is_sent_again`).
    sim.link = super::sim::Link::clean();
    sim.run_for(secs(1));
    let second = add(&mut sim, second_kind);
    sim.strict = false;
    let mut now_up = others.clone();
    now_up.push(second);
    sim.connect_all(&now_up, secs(60));
    sim.run_for(secs(3));
    let name = sim.clients[first].name.clone();
    if !sim
        .events
        .iter()
        .any(|e| matches!(e, Event::Disconnected { tunnel, reason, .. } if *tunnel == old_tunnel && reason.contains("replaced")))
    {
        fail!(sim, "{name}'s first session ({first_kind:?}) not replaced by the second ({second_kind:?}): {:?}", sim.events);
    }
    if sim.clients[second].address != Some(addr) {
        fail!(
            sim,
            "{name} got {:?} the second time, {addr} the first",
            sim.clients[second].address
        );
    }
    // The first client was told (RESTART / Delete).
    let told = match &sim.clients[first].proto {
        super::sim::Proto::Ovpn(o) => o.session.is_closed() || !o.session.is_connected(),
        super::sim::Proto::Ike(i) => i.closed.is_some(),
    };
    if !told {
        fail!(
            sim,
            "{name}'s first client ({first_kind:?}) still thinks it is connected"
        );
    }
    sim.remove_client(first);
    let holders = sim
        .core
        .status(sim.now)
        .clients
        .iter()
        .filter(|c| c.client == name)
        .count();
    if holders != 1 {
        fail!(sim, "{name} has {holders} sessions");
    }
    sim.strict = true;
    round_all_delivered(&mut sim);
    sim.check_status();
    sim.check_drops();
    sim.run_for(secs(120));
    let live = sim.model.live().count();
    if sim.core.tunnel_count() != live {
        fail!(
            sim,
            "{} tunnels left for {live} clients",
            sim.core.tunnel_count()
        );
    }
}

#[test]
fn a_second_login_replaces_the_first() {
    for_seeds(
        "one_session_per_certificate",
        30,
        one_session_per_certificate,
    );
}

/// An OpenVPN client restarts behind the same address (same NAT mapping, new session): the
/// new session replaces the old one, and the old one is reported Disconnected like any
/// other replaced session (every Connected has its Disconnected).
fn restart_from_the_same_address(seed: u64) {
    let opts = Options {
        link: super::sim::Link::clean(),
        ..Options::default()
    };
    let mut sim = Sim::new(seed, opts);
    let cs = start_clients(&mut sim, &[(Start::Udp, 2), (Start::Ike, 1)], 0);
    sim.connect_all(&cs, secs(30));
    let c = cs
        .iter()
        .copied()
        .find(|&c| sim.clients[c].protocol() == Protocol::OpenVpnUdp)
        .unwrap();
    let old = sim.clients[c].tunnel.unwrap();
    let addr = sim.clients[c].address;
    sim.restart_ovpn(c);
    sim.connect_all(&[c], secs(30));
    sim.run_for(secs(3));
    if sim.clients[c].address != addr {
        fail!(
            sim,
            "the restarted client got {:?}, had {addr:?}",
            sim.clients[c].address
        );
    }
    round_all_delivered(&mut sim);
    sim.check_status();
    let disconnected = sim
        .events
        .iter()
        .any(|e| matches!(e, Event::Disconnected { tunnel, .. } if *tunnel == old));
    if !disconnected {
        fail!(
            sim,
            "the old session (tunnel {old}) of {} ended without Event::Disconnected: {:?}",
            sim.clients[c].name,
            sim.events
        );
    }
}

#[test]
fn a_restart_from_the_same_address_reports_the_old_session_gone() {
    for_seeds(
        "restart_from_the_same_address",
        5,
        restart_from_the_same_address,
    );
}

/// The driver hands the same CRL twice (a file watcher firing twice): the second call
/// ends nothing more and reports nothing twice.
fn same_crl_twice(seed: u64) {
    let opts = Options {
        link: super::sim::Link::clean(),
        ..Options::default()
    };
    let mut sim = Sim::new(seed, opts);
    let cs = start_clients(
        &mut sim,
        &[(Start::Udp, 2), (Start::Tcp, 1), (Start::Ike, 2)],
        0,
    );
    sim.connect_all(&cs, secs(30));
    let victims: Vec<usize> = vec![cs[0], cs[1]];
    let certs: Vec<usize> = victims.iter().map(|&v| sim.clients[v].cert).collect();
    let crl = super::pki::pki().crl(&certs);
    let now = sim.now;
    let first = sim.core.set_crls(now, std::slice::from_ref(&crl)).unwrap();
    sim.drive();
    sim.strict = false;
    sim.run_for(ms(500));
    let now = sim.now;
    let second = sim.core.set_crls(now, &[crl]).unwrap();
    sim.run_for(secs(5));
    let revoked: Vec<&Event> = sim
        .events
        .iter()
        .filter(|e| matches!(e, Event::Revoked { .. }))
        .collect();
    if first != 2 || second != 0 || revoked.len() != 2 {
        let kinds: Vec<Protocol> = victims.iter().map(|&v| sim.clients[v].protocol()).collect();
        fail!(
            sim,
            "revoking {kinds:?}: set_crls returned {first} then {second} for the same CRL; events {revoked:?}"
        );
    }
}

#[test]
fn the_same_crl_twice_revokes_once() {
    for_seeds("same_crl_twice", 10, same_crl_twice);
}

/// Random operations against the core, firezone style: clients of every protocol come
/// (certificates drawn from a small set, so second logins happen), vanish, disconnect
/// cleanly, move, get revoked and unrevoked, and send traffic, on a lossy link, with IKE
/// cookies demanded on even seeds. Every step is checked against the model; at the end every
/// client vanishes and the core must forget everything.
fn churn(seed: u64) {
    let opts = Options {
        cookie_threshold: if seed.is_multiple_of(2) { 2 } else { 1000 },
        ..Options::default()
    };
    let mut sim = Sim::new(seed, opts);
    sim.strict = false;
    let mut revoked: Vec<usize> = Vec::new();
    for _ in 0..120 {
        let op = sim.rng().random_range(0..100);
        let present: Vec<usize> = (0..sim.clients.len())
            .filter(|&c| !sim.clients[c].gone)
            .collect();
        let up: Vec<usize> = present.iter().copied().filter(|&c| sim.is_up(c)).collect();
        let pick = |sim: &mut Sim, v: &[usize]| -> Option<usize> {
            (!v.is_empty()).then(|| v[sim.rng().random_range(0..v.len())])
        };
        match op {
            0..=29 => {
                let cert = sim.rng().random_range(0..12);
                match sim.rng().random_range(0..4) {
                    0 | 1 => sim.add_ovpn_udp(cert),
                    2 => sim.add_ovpn_tcp(cert),
                    _ => sim.add_ike(cert),
                };
            }
            30..=39 => {
                if let Some(c) = pick(&mut sim, &present) {
                    sim.remove_client(c);
                }
            }
            40..=49 => {
                if let Some(c) = pick(&mut sim, &up) {
                    sim.disconnect_client(c);
                }
            }
            50..=59 => {
                let movable: Vec<usize> = up
                    .iter()
                    .copied()
                    .filter(|&c| sim.clients[c].protocol() != Protocol::OpenVpnTcp)
                    .collect();
                if let Some(c) = pick(&mut sim, &movable) {
                    let new_ip = sim.rng().random_bool(0.5);
                    sim.rebind(c, new_ip);
                }
            }
            60..=64 => {
                if revoked.is_empty() || sim.rng().random_bool(0.6) {
                    revoked.push(sim.rng().random_range(0..12));
                } else {
                    revoked.clear();
                }
                let crl = super::pki::pki().crl(&revoked);
                let now = sim.now;
                sim.core.set_crls(now, &[crl]).unwrap();
            }
            _ => sim.traffic_round(0.2),
        }
        let d = ms(sim.rng().random_range(0..3000));
        sim.run_for(d);
        // Nobody connected with a revoked certificate stays connected.
        for (_, t) in sim.model.live() {
            let cert = sim.clients[t.client].cert;
            if revoked.contains(&cert) {
                fail!(sim, "{} is connected with a revoked certificate", t.name);
            }
        }
    }
    sim.run_for(secs(5));
    sim.check_status();
    sim.check_drops();
    if std::env::var("SIM_VERBOSE").is_ok() {
        let count = |f: fn(&Event) -> bool| sim.events.iter().filter(|e| f(e)).count();
        eprintln!(
            "seed {seed}: {} clients, connected {} disconnected {} refused {} revoked {} roamed {}, {} packets checked, {} legit drops, drops {}",
            sim.clients.len(),
            count(|e| matches!(e, Event::Connected { .. })),
            count(|e| matches!(e, Event::Disconnected { .. })),
            count(|e| matches!(e, Event::Refused { .. })),
            count(|e| matches!(e, Event::Revoked { .. })),
            count(|e| matches!(e, Event::Roamed { .. })),
            sim.checked,
            sim.model.legit_dropped,
            sim.core.drops()
        );
    }
    // Everyone vanishes: the core ends every tunnel by itself.
    for c in 0..sim.clients.len() {
        if !sim.clients[c].gone {
            sim.remove_client(c);
        }
    }
    sim.run_for(secs(900));
    if sim.core.tunnel_count() != 0
        || sim.core.deadline_count() != 0
        || sim.core.leased_count() != 0
        || sim.core.poll_timeout().is_some()
    {
        fail!(
            sim,
            "after every client vanished: {} tunnels, {} deadlines, {} leases, timer {:?}",
            sim.core.tunnel_count(),
            sim.core.deadline_count(),
            sim.core.leased_count(),
            sim.core.poll_timeout().map(|t| t - sim.now)
        );
    }
    if let Some((id, t)) = sim.model.tunnels.iter().find(|(_, t)| t.live) {
        fail!(sim, "tunnel {id} of {} never reported Disconnected", t.name);
    }
    sim.check_drops();
}

#[test]
fn churn_against_the_model() {
    for_seeds("churn", 50, churn);
}

/// A pool with room for 5 clients and 8 clients of every protocol: 5 connect, 3 are refused
/// (told so, nothing leaked); when 2 leave, 2 of the refused get their addresses.
fn pool_exhaustion(seed: u64) {
    let opts = Options {
        pool: "172.16.200.0/29".parse().unwrap(),
        link: super::sim::Link::clean(),
        ..Options::default()
    };
    let mut sim = Sim::new(seed, opts);
    let cs = start_clients(
        &mut sim,
        &[(Start::Udp, 3), (Start::Tcp, 2), (Start::Ike, 3)],
        0,
    );
    sim.run_for(secs(20));
    let up: Vec<usize> = cs.iter().copied().filter(|&c| sim.is_up(c)).collect();
    let down: Vec<usize> = cs.iter().copied().filter(|&c| !sim.is_up(c)).collect();
    if up.len() != 5 {
        fail!(
            sim,
            "{} clients up in a pool of 5: {:?}",
            up.len(),
            sim.events
        );
    }
    for &c in &down {
        let name = sim.clients[c].name.clone();
        let refused = sim
            .events
            .iter()
            .any(|e| matches!(e, Event::Refused { client: Some(n), .. } if *n == name));
        let told = match &sim.clients[c].proto {
            super::sim::Proto::Ovpn(o) => o
                .events
                .iter()
                .any(|e| matches!(e, crate::openvpn::client::ClientEvent::AuthFailed(_))),
            super::sim::Proto::Ike(i) => i.closed.is_some(),
        };
        if !refused || !told {
            fail!(
                sim,
                "{name} ({:?}): refused {refused}, told {told}: {:?}",
                sim.clients[c].protocol(),
                sim.events
            );
        }
    }
    check_addresses(&sim, &up);
    round_all_delivered(&mut sim);
    sim.run_for(secs(60));
    if sim.core.tunnel_count() != 5 || sim.core.leased_count() != 5 {
        fail!(
            sim,
            "{} tunnels, {} leases for 5 clients",
            sim.core.tunnel_count(),
            sim.core.leased_count()
        );
    }
    // Two leave; two of the refused come back and get the freed addresses.
    let freed: Vec<_> = up[..2]
        .iter()
        .map(|&c| sim.clients[c].address.unwrap())
        .collect();
    for &c in &up[..2] {
        sim.disconnect_client(c);
    }
    sim.run_for(secs(10));
    for &c in &down {
        sim.remove_client(c);
    }
    let back = vec![
        sim.add_ovpn_udp(sim.clients[down[0]].cert),
        sim.add_ike(sim.clients[down[1]].cert),
    ];
    sim.connect_all(&back, secs(30));
    for &c in &back {
        let a = sim.clients[c].address.unwrap();
        if !freed.contains(&a) {
            fail!(
                sim,
                "{} got {a}, the free ones were {freed:?}",
                sim.clients[c].name
            );
        }
    }
    round_all_delivered(&mut sim);
    sim.run_for(secs(60));
    sim.check_status();
    if sim.core.tunnel_count() != 5 {
        fail!(sim, "{} tunnels for 5 clients", sim.core.tunnel_count());
    }
    sim.check_drops();
}

#[test]
fn a_full_pool_refuses_and_recovers() {
    for_seeds("pool_exhaustion", 20, pool_exhaustion);
}

/// The gateway ends an IKEv2 client's SA (revocation here; a replaced login and shutdown
/// do the same) while the way to the client loses packets: the Delete is an INFORMATIONAL
/// request (RFC 7296 1.4.1, 2.1) and must be sent again until answered, so the client
/// learns within seconds instead of when its own DPD gives up minutes later.
fn lost_delete(seed: u64) {
    let opts = Options {
        link: super::sim::Link::clean(),
        ..Options::default()
    };
    let mut sim = Sim::new(seed, opts);
    let cs = start_clients(&mut sim, &[(Start::Ike, 2), (Start::Udp, 1)], 0);
    sim.connect_all(&cs, secs(30));
    let v = cs
        .iter()
        .copied()
        .find(|&c| sim.clients[c].protocol() == Protocol::Ikev2)
        .unwrap();
    let crl = super::pki::pki().crl(&[sim.clients[v].cert]);
    // The first Delete is lost.
    sim.block_to_clients = true;
    let now = sim.now;
    sim.core.set_crls(now, &[crl]).unwrap();
    sim.drive();
    sim.run_for(ms(200));
    sim.block_to_clients = false;
    sim.strict = false;
    sim.run_for(secs(15));
    let ike = sim.clients[v].ike();
    if ike.closed.is_none() {
        let ev = ike.events.clone();
        fail!(
            sim,
            "{}: its SA was deleted by the gateway 15 s ago; the only Delete was lost and \
             none followed (the client still thinks it is connected): {ev:?}",
            sim.clients[v].name
        );
    }
}

#[test]
fn a_lost_delete_is_sent_again() {
    for_seeds("lost_delete", 5, lost_delete);
}

/// Scenario: OpenVPN and IKEv2 handshakes run as jobs that come back late (1.5 s, after the
/// clients' first retransmission): the records that arrive meanwhile wait for the
/// connection, IKE retransmissions are answered once the job is back, every client gets in,
/// and tunnels already up carry traffic while other clients' jobs are out.
fn offloaded_handshakes(seed: u64) {
    let opts = Options {
        offload: Some(true),
        job_delay: Some(ms(1500)),
        ..Options::default()
    };
    let mut sim = Sim::new(seed, opts);
    let first = start_clients(
        &mut sim,
        &[(Start::Udp, 3), (Start::Tcp, 1), (Start::Ike, 1)],
        0,
    );
    sim.connect_all(&first, secs(120));
    // Two steps per TLS handshake at least (the ClientHello, the client's certificate), and
    // IKE_SA_INIT's key exchange and IKE_AUTH's check.
    if sim.jobs_run < 10 {
        fail!(
            sim,
            "only {} handshake jobs for 4 OpenVPN clients and an IKEv2 one",
            sim.jobs_run
        );
    }
    for kind in ["tls", "ike-init", "ike-auth"] {
        if sim.jobs_by_kind.get(kind).copied().unwrap_or(0) == 0 {
            fail!(sim, "no {kind} job: {:?}", sim.jobs_by_kind);
        }
    }
    let more = start_clients(
        &mut sim,
        &[(Start::Udp, 3), (Start::Tcp, 1), (Start::Ike, 1)],
        10,
    );
    let before = sim.jobs_run;
    for _ in 0..6 {
        sim.traffic_round(0.3);
        sim.run_for(ms(500));
    }
    if sim.jobs_run == before && sim.core.jobs_out() == 0 {
        fail!(sim, "the new clients' handshakes made no job");
    }
    sim.connect_all(&more, secs(120));
    sim.traffic_round(0.3);
    sim.run_for(secs(3));
    if let Some(e) = sim
        .events
        .iter()
        .find(|e| matches!(e, Event::Disconnected { .. } | Event::Refused { .. }))
    {
        fail!(sim, "unexpected event {e:?}");
    }
    if sim.core.jobs_out() != 0 {
        fail!(
            sim,
            "{} jobs still out with every client up",
            sim.core.jobs_out()
        );
    }
    sim.check_status();
    sim.check_drops();
    check_delivery(&sim, "client to LAN", |k| k == Kind::Lan, false, 80);
}

#[test]
fn offloaded_handshakes_wait_for_their_jobs() {
    for_seeds("offloaded_handshakes", 4, offloaded_handshakes);
}

/// Scenario: handshake jobs that come back after the session gave up (70 s, past the 60 s
/// hand window and the 30 s IKE_AUTH deadline): the late results are dropped or expire,
/// nothing is left behind (no half-open SA, reservation, lease or deadline).
fn late_jobs(seed: u64) {
    let opts = Options {
        offload: Some(true),
        job_delay: Some(secs(70)),
        workers: 1,
        ..Options::default()
    };
    let mut sim = Sim::new(seed, opts);
    let cs = start_clients(
        &mut sim,
        &[(Start::Udp, 2), (Start::Tcp, 1), (Start::Ike, 1)],
        0,
    );
    sim.run_for(secs(65));
    if cs.iter().any(|&c| sim.is_up(c)) {
        fail!(sim, "a client got in without its handshake job");
    }
    if sim.core.jobs_out() == 0 {
        fail!(sim, "no job out");
    }
    sim.strict = false;
    for &c in &cs {
        sim.remove_client(c);
    }
    sim.run_for(secs(300));
    if sim.core.jobs_out() != 0 || sim.core.tunnel_count() != 0 || sim.core.deadline_count() != 0 {
        fail!(
            sim,
            "after the late jobs: {} out, {} tunnels, {} deadlines",
            sim.core.jobs_out(),
            sim.core.tunnel_count(),
            sim.core.deadline_count()
        );
    }
    if sim.core.leased_count() != 0 {
        fail!(sim, "{} leases left", sim.core.leased_count());
    }
}

#[test]
fn jobs_that_come_back_too_late_are_dropped() {
    for_seeds("late_jobs", 3, late_jobs);
}

/// Scenario: packets an IKEv2 client sent on its CHILD SA just before rekeying it, reordered
/// behind its Delete of that SA: one arriving within `ESP_LINGER` still reaches the LAN, one
/// arriving later is dropped and counted.
fn in_flight_across_a_child_rekey(seed: u64) {
    let (mut sim, [_, _, ike]) = Sim::one_of_each(seed);
    let own = sim.clients[ike].address.unwrap();
    let home = sim.clients[ike].core_remote;
    let on_old_sa = |sim: &mut Sim| {
        let tag = sim.model.tag();
        let inner = super::model::ipv4(own, super::sim::LAN_HOST, tag, 10);
        let wire = sim.encrypt_up(ike, &inner);
        sim.model.cipher.insert(wire.clone(), (tag, 0));
        sim.model.packets.insert(
            tag,
            super::model::Expect {
                src: Some(ike),
                kind: Kind::Lan,
                bytes: inner,
                tun: 0,
                rx: 0,
            },
        );
        wire
    };
    let early = on_old_sa(&mut sim);
    let late = on_old_sa(&mut sim);
    let now = sim.now;
    if !sim.clients[ike].ike().init.rekey_child(now) {
        fail!(sim, "the client could not start a CHILD SA rekey");
    }
    // Rekey and Delete go through (20 ms each way); the SA is gone on both sides.
    sim.run_for(ms(500));
    let deleted = sim.clients[ike]
        .ike()
        .events
        .iter()
        .any(|e| e.starts_with("child deleted"));
    if !deleted {
        fail!(
            sim,
            "no CHILD SA deleted: {:?}",
            sim.clients[ike].ike().events
        );
    }
    let l = crate::gateway::Listener::IkeNatT;
    if sim.deliver_to_core(l, home, &early, None).is_none() {
        fail!(
            sim,
            "a packet sent on the old SA before its Delete was lost"
        );
    }
    sim.run_for(secs(3));
    sim.strict = false;
    let before = sim.core.drops().get(Drop::NoSession);
    if sim.deliver_to_core(l, home, &late, None).is_some() {
        fail!(sim, "the deleted SA still opened a packet 3 s later");
    }
    if sim.core.drops().get(Drop::NoSession) != before + 1 {
        fail!(sim, "the late packet was not counted as nosession");
    }
    sim.strict = true;
    round_all_delivered(&mut sim);
}

#[test]
fn packets_in_flight_on_a_rekeyed_child_sa_are_not_lost() {
    for_seeds(
        "in_flight_across_a_child_rekey",
        3,
        in_flight_across_a_child_rekey,
    );
}
