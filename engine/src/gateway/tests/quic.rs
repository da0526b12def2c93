//! QUIC clients (quinn-proto endpoints, as the Gatehouse client runs them under quinn)
//! against the gateway core in memory, Pair style: every datagram is delivered at once, the
//! clock is virtual and only moves to the next deadline.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_proto::{
    ClientConfig, Connection, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint,
    EndpointConfig, Event as QEvent, StreamEvent, StreamId,
};

use super::cores::Cores;
use super::model::ipv4;
use super::pki::{self, GATEWAY_IP, WALL_CLOCK_SECS, client_name, quic_client_cfg};
use super::sim::{LAN, LAN_HOST, POOL};
use crate::entropy::SeededEntropy;
use crate::gateway::{CoreConfig, Dest, Drop, EntropyFactory, Event, Listener, Protocol};
use crate::wire::capsule::{Capsule, CapsuleDecoder};

fn gateway() -> SocketAddr {
    SocketAddr::new(GATEWAY_IP.parse().unwrap(), 443)
}

struct QClient {
    ep: Endpoint,
    ch: ConnectionHandle,
    conn: Connection,
    /// Where its datagrams come from, as the gateway sees them (a NAT may change it).
    addr: SocketAddr,
    control: Option<StreamId>,
    decoder: CapsuleDecoder,
    capsules: Vec<Capsule>,
    received: Vec<Vec<u8>>,
    lost: Option<ConnectionError>,
}

impl QClient {
    fn new(now: Instant, cfg: ClientConfig, addr: SocketAddr, seed: u8) -> Self {
        let mut ep = Endpoint::new(
            Arc::new(EndpointConfig::default()),
            None,
            false,
            Some([seed; 32]),
        );
        let (ch, conn) = ep.connect(now, cfg, gateway(), pki::GATEWAY_NAME).unwrap();
        QClient {
            ep,
            ch,
            conn,
            addr,
            control: None,
            decoder: CapsuleDecoder::new(),
            capsules: Vec::new(),
            received: Vec::new(),
            lost: None,
        }
    }

    fn address(&self) -> Option<Ipv4Addr> {
        self.capsules.iter().find_map(|c| match c {
            Capsule::AddressAssign(a) => match a.first()?.address {
                std::net::IpAddr::V4(v) => Some(v),
                _ => None,
            },
            _ => None,
        })
    }

    fn ready(&self) -> bool {
        self.capsules.contains(&Capsule::Ready)
    }

    fn process(&mut self) {
        loop {
            let mut any = false;
            while let Some(ev) = self.conn.poll_endpoint_events() {
                any = true;
                if let Some(back) = self.ep.handle_event(self.ch, ev) {
                    self.conn.handle_event(back);
                }
            }
            while let Some(ev) = self.conn.poll() {
                any = true;
                match ev {
                    QEvent::Connected => {
                        let id = self.conn.streams().open(Dir::Bi).unwrap();
                        let mut hello = Vec::new();
                        Capsule::Hello.encode(&mut hello);
                        self.conn.send_stream(id).write(&hello).unwrap();
                        self.control = Some(id);
                    }
                    QEvent::Stream(StreamEvent::Readable { id }) if Some(id) == self.control => {
                        let mut recv = self.conn.recv_stream(id);
                        let mut chunks = recv.read(true).unwrap();
                        while let Ok(Some(c)) = chunks.next(usize::MAX) {
                            self.decoder.push(&c.bytes);
                        }
                        let _ = chunks.finalize();
                        while let Some(c) = self.decoder.pop().unwrap() {
                            self.capsules.push(c);
                        }
                    }
                    QEvent::DatagramReceived => {
                        while let Some(d) = self.conn.datagrams().recv() {
                            self.received.push(d.to_vec());
                        }
                    }
                    QEvent::ConnectionLost { reason } => self.lost = Some(reason),
                    _ => {}
                }
            }
            if !any {
                return;
            }
        }
    }

    fn send(&mut self, packet: &[u8]) {
        self.conn
            .datagrams()
            .send(packet.to_vec().into(), false)
            .unwrap();
    }

    /// The application close code the gateway ended the connection with.
    fn close_code(&self) -> Option<u64> {
        match &self.lost {
            Some(ConnectionError::ApplicationClosed(c)) => Some(c.error_code.into_inner()),
            _ => None,
        }
    }
}

struct World {
    start: Instant,
    now: Instant,
    cores: Cores,
    clients: Vec<QClient>,
    events: Vec<Event>,
    tun: Vec<Vec<u8>>,
    /// Drop every `lose_every`-th datagram in each direction (0: none).
    lose_every: u32,
    sent: u32,
}

fn core_config(start: Instant) -> CoreConfig {
    CoreConfig {
        client_pool: POOL.parse().unwrap(),
        address_space: vec![LAN.parse().unwrap()],
        client_pool_v6: None,
        address_space_v6: Vec::new(),
        dns: vec!["10.1.0.53".parse().unwrap()],
        dns_domains: Vec::new(),
        full_tunnel: false,
        openvpn: None,
        ikev2: None,
        cookie_threshold: 64,
        max_half_open: 64,
        max_half_open_per_ip: 16,
        max_handshaking: 64,
        sites: vec![],
        unix_time: WALL_CLOCK_SECS,
        start,
    }
}

impl World {
    fn new(workers: usize, crls: Vec<Vec<u8>>) -> Self {
        Self::with_pool(workers, crls, POOL)
    }

    fn with_pool(workers: usize, crls: Vec<Vec<u8>>, pool: &'static str) -> Self {
        Self::with_cfg(workers, crls, move |c| {
            c.client_pool = pool.parse().unwrap()
        })
    }

    fn with_cfg(
        workers: usize,
        crls: Vec<Vec<u8>>,
        change: impl Fn(&mut CoreConfig) + Clone + 'static,
    ) -> Self {
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let entropy = |worker: usize| -> EntropyFactory {
            let mut n = (worker as u64) << 32;
            Box::new(move || {
                n += 1;
                Box::new(SeededEntropy::new(0x5155_4943 + n))
            })
        };
        let cfg = move || {
            let mut c = core_config(start);
            change(&mut c);
            c
        };
        let mut cores = Cores::new(workers, cfg, entropy);
        cores.set_quic_config(Arc::new(pki::quic_server_cfg(crls)));
        World {
            start,
            now: start,
            cores,
            clients: Vec::new(),
            events: Vec::new(),
            tun: Vec::new(),
            lose_every: 0,
            sent: 0,
        }
    }

    fn add_client(&mut self, cert: usize, addr: &str) -> usize {
        let c = QClient::new(
            self.now,
            quic_client_cfg(cert),
            addr.parse().unwrap(),
            self.clients.len() as u8 + 1,
        );
        self.clients.push(c);
        self.clients.len() - 1
    }

    /// Delivers everything until nobody has anything to send.
    fn settle(&mut self) {
        let now = self.now;
        let mut buf = Vec::new();
        loop {
            let mut any = false;
            for c in &mut self.clients {
                c.process();
                loop {
                    buf.clear();
                    let Some(t) = c.conn.poll_transmit(now, 1, &mut buf) else {
                        break;
                    };
                    any = true;
                    self.sent += 1;
                    if self.lose_every > 0 && self.sent.is_multiple_of(self.lose_every) {
                        continue;
                    }
                    if let Some(p) =
                        self.cores
                            .handle_datagram(now, Listener::Quic, c.addr, &buf[..t.size])
                    {
                        self.tun.push(p.to_vec());
                    }
                    while let Some(p) = self.cores.poll_tun_packet() {
                        self.tun.push(p);
                    }
                }
            }
            while let Some(t) = self.cores.poll_transmit() {
                any = true;
                self.sent += 1;
                if self.lose_every > 0 && self.sent.is_multiple_of(self.lose_every) {
                    continue;
                }
                self.deliver(t.dest, &t.payload);
            }
            while let Some(e) = self.cores.poll_event() {
                self.events.push(e);
            }
            if !any {
                return;
            }
        }
    }

    /// A gateway datagram reaches the client whose current address it is for.
    fn deliver(&mut self, dest: Dest, payload: &[u8]) {
        let Dest::Udp {
            from: Listener::Quic,
            to,
        } = dest
        else {
            panic!("QUIC output on {dest:?}");
        };
        let now = self.now;
        let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) else {
            return;
        };
        let mut buf = Vec::new();
        match c
            .ep
            .handle(now, gateway(), None, None, payload.into(), &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(_, ev)) => c.conn.handle_event(ev),
            Some(DatagramEvent::Response(_)) | Some(DatagramEvent::NewConnection(_)) | None => {}
        }
        c.process();
    }

    /// Runs the clock for `d`, waking at every deadline.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.settle();
            let mut next = self.cores.poll_timeout();
            for c in &mut self.clients {
                if let Some(t) = c.conn.poll_timeout() {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            let Some(next) = next.filter(|n| *n <= end) else {
                self.now = end;
                self.settle();
                return;
            };
            self.now = next.max(self.now);
            self.cores.handle_timeout(self.now);
            for c in &mut self.clients {
                if c.conn.poll_timeout().is_some_and(|t| t <= self.now) {
                    c.conn.handle_timeout(self.now);
                }
            }
        }
    }

    fn connected(&self, client: usize) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Connected { client: c, protocol: Protocol::Quic, .. } if *c == client_name(client)))
            .count()
    }

    /// Sends `packet` down the tunnel as if read from TUN: the datagram goes to the client.
    fn down_from_tun(&mut self, packet: &[u8]) -> Option<Dest> {
        let (dest, bytes) = self.cores.handle_tun_packet(self.now, packet)?;
        let bytes = bytes.to_vec();
        self.deliver(dest, &bytes);
        self.settle();
        Some(dest)
    }
}

/// One client connected with certificate `cert` from `addr`.
fn connected_world(workers: usize, cert: usize, addr: &str) -> (World, usize) {
    let mut w = World::new(workers, vec![]);
    let c = w.add_client(cert, addr);
    w.run_for(Duration::from_millis(200));
    assert!(w.clients[c].ready(), "no READY; events {:?}", w.events);
    assert_eq!(w.connected(cert), 1, "events {:?}", w.events);
    (w, c)
}

#[test]
fn quic_client_gets_its_configuration_and_traffic_flows_both_ways() {
    let (mut w, c) = connected_world(1, 0, "203.0.113.10:50000");
    let caps = &w.clients[c].capsules;
    let addr = w.clients[c].address().expect("ADDRESS_ASSIGN");
    assert!(POOL.parse::<ipnet::Ipv4Net>().unwrap().contains(&addr));
    assert!(
        matches!(caps[1], Capsule::RouteAdvertisement(ref r) if r.iter().any(|r| r.start == std::net::IpAddr::V4("10.1.0.0".parse().unwrap()) && r.end == std::net::IpAddr::V4("10.1.255.255".parse().unwrap()))),
        "{caps:?}"
    );
    assert!(
        matches!(caps[2], Capsule::DnsConfig(ref d) if d.servers == vec!["10.1.0.53".parse::<Ipv4Addr>().unwrap()]),
        "{caps:?}"
    );
    assert_eq!(caps[3], Capsule::TunnelMtu(1280));
    assert_eq!(caps.last(), Some(&Capsule::Ready));
    assert_eq!(caps.len(), 5, "{caps:?}");

    // Up: a datagram reaches TUN unchanged.
    let up = ipv4(addr, LAN_HOST, 1, 100);
    w.clients[c].send(&up);
    w.settle();
    assert_eq!(w.tun, vec![up.clone()]);

    // Down: a TUN packet for the client's address leaves as a datagram to it.
    let down = ipv4(LAN_HOST, addr, 2, 1000);
    let dest = w.down_from_tun(&down).expect("routed to the QUIC tunnel");
    assert_eq!(
        dest,
        Dest::Udp {
            from: Listener::Quic,
            to: w.clients[c].addr
        }
    );
    assert_eq!(w.clients[c].received, vec![down.clone()]);

    // Status lists it as a QUIC session with its traffic.
    let st = w.cores.status(w.now);
    assert_eq!(st.clients.len(), 1);
    let s = &st.clients[0];
    assert_eq!(s.protocol, Protocol::Quic);
    assert_eq!(s.protocol.name(), "quic");
    assert_eq!(s.address, Some(addr));
    assert!(!s.cipher.is_empty());
    assert_eq!(s.traffic.rx_bytes, up.len() as u64);
    assert_eq!(s.traffic.tx_bytes, down.len() as u64);
    assert_eq!(*st.counters.handshakes_ok.get(Protocol::Quic), 1);

    // Keepalives hold it past the idle timeout.
    w.run_for(Duration::from_secs(95));
    assert!(w.clients[c].lost.is_none(), "{:?}", w.clients[c].lost);
    assert_eq!(w.cores.status(w.now).clients.len(), 1);
}

#[test]
fn quic_spoofed_source_is_dropped_and_counted() {
    let (mut w, c) = connected_world(1, 1, "203.0.113.11:50000");
    let addr = w.clients[c].address().unwrap();
    w.clients[c].send(&ipv4("10.9.9.9".parse().unwrap(), LAN_HOST, 1, 40));
    w.settle();
    assert!(w.tun.is_empty());
    assert_eq!(w.cores.drops().get(Drop::Spoofed), 1);
    // Its own address still passes.
    w.clients[c].send(&ipv4(addr, LAN_HOST, 2, 40));
    w.settle();
    assert_eq!(w.tun.len(), 1);
}

#[test]
fn quic_revoked_certificate_is_refused_at_admission() {
    let mut w = World::new(1, vec![]);
    let crl = pki::pki().crl(&[2]);
    w.cores.set_crls(w.now, &[crl]).unwrap();
    let c = w.add_client(2, "203.0.113.12:50000");
    w.run_for(Duration::from_millis(300));
    let refused = w.events.iter().find_map(|e| match e {
        Event::Refused { reason, client, .. } => Some((client.clone(), reason.clone())),
        _ => None,
    });
    let (who, reason) = refused.expect("refused");
    assert_eq!(who.as_deref(), Some("client-02"));
    assert!(reason.contains("revoked"), "{reason}");
    assert_eq!(w.connected(2), 0);
    assert_eq!(
        w.clients[c].close_code(),
        Some(0x1),
        "{:?}",
        w.clients[c].lost
    );
    assert!(!w.clients[c].ready());
    assert_eq!(w.cores.leased_count(), 0);
}

#[test]
fn quic_revoked_certificate_is_refused_by_the_tls_verifier() {
    let crl = pki::pki().crl(&[3]);
    let mut w = World::new(1, vec![crl]);
    let c = w.add_client(3, "203.0.113.13:50000");
    w.run_for(Duration::from_millis(300));
    let reason = w
        .events
        .iter()
        .find_map(|e| match e {
            Event::Refused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("refused");
    // The OpenVPN path's words, with the certificate's name.
    assert!(reason.contains("revoked"), "{reason}");
    assert!(reason.contains("client-03"), "{reason}");
    assert!(w.clients[c].lost.is_some());
    assert_eq!(w.connected(3), 0);
}

#[test]
fn quic_revoking_a_connected_client_closes_it_with_code_1() {
    let (mut w, c) = connected_world(1, 4, "203.0.113.14:50000");
    let crl = pki::pki().crl(&[4]);
    assert_eq!(w.cores.set_crls(w.now, &[crl]).unwrap(), 1);
    w.run_for(Duration::from_millis(100));
    assert!(
        w.events
            .iter()
            .any(|e| matches!(e, Event::Revoked { client, .. } if client == "client-04"))
    );
    assert!(
        w.events
            .iter()
            .any(|e| matches!(e, Event::Disconnected { reason, .. } if reason.contains("revoked")))
    );
    assert_eq!(
        w.clients[c].close_code(),
        Some(0x1),
        "{:?}",
        w.clients[c].lost
    );
    w.run_for(Duration::from_secs(5));
    assert_eq!(w.cores.tunnel_count(), 0, "the closed connection is gone");
    assert_eq!(w.cores.leased_count(), 0);
}

#[test]
fn quic_operator_disconnect_and_replaced_logins_have_their_codes() {
    let (mut w, a) = connected_world(1, 5, "203.0.113.15:50000");
    // The same certificate from elsewhere replaces the first session (0x3).
    let b = w.add_client(5, "198.18.0.15:40000");
    w.run_for(Duration::from_millis(200));
    assert_eq!(
        w.clients[a].close_code(),
        Some(0x3),
        "{:?}",
        w.clients[a].lost
    );
    assert!(w.clients[b].ready());
    assert_eq!(w.connected(5), 2);
    // The operator ends the second (0x4).
    assert_eq!(w.cores.disconnect(w.now, "client-05"), 1);
    w.run_for(Duration::from_millis(100));
    assert_eq!(
        w.clients[b].close_code(),
        Some(0x4),
        "{:?}",
        w.clients[b].lost
    );
}

/// Moves client `c` to a new source address (a NAT rebinding, Wi-Fi to cellular) and checks
/// the tunnel follows without a new handshake. Returns the new address.
fn roam(w: &mut World, c: usize, to: SocketAddr) {
    let addr = w.clients[c].address().unwrap();
    let old = w.clients[c].addr;
    let handshakes = w.cores.status(w.now).counters.handshakes_ok;
    let connected = w.connected(0);
    w.clients[c].addr = to;
    w.tun.clear();
    let up = ipv4(addr, LAN_HOST, 7, 200);
    w.clients[c].send(&up);
    w.run_for(Duration::from_millis(300));
    assert_eq!(
        w.tun,
        vec![up],
        "the packet from the new address reached TUN"
    );
    assert!(
        w.events
            .iter()
            .any(|e| matches!(e, Event::Roamed { from, to: t, .. } if *from == old && *t == to)),
        "{:?}",
        w.events
    );
    let down = ipv4(LAN_HOST, addr, 8, 300);
    let dest = w
        .down_from_tun(&down)
        .unwrap_or_else(|| panic!("routed; drops {}", w.cores.drops()));
    assert_eq!(
        dest,
        Dest::Udp {
            from: Listener::Quic,
            to
        }
    );
    assert_eq!(w.clients[c].received.last(), Some(&down));
    let st = w.cores.status(w.now);
    assert_eq!(st.counters.handshakes_ok, handshakes, "no new handshake");
    assert_eq!(w.connected(0), connected, "no new Connected event");
    assert_eq!(
        st.clients[0].address,
        Some(addr),
        "the tunnel keeps its address"
    );
    assert_eq!(st.clients[0].remote, to);
    assert!(w.clients[c].lost.is_none());
}

#[test]
fn quic_client_migrates_and_keeps_its_tunnel() {
    let (mut w, c) = connected_world(1, 0, "203.0.113.20:50000");
    roam(&mut w, c, "198.18.7.7:61000".parse().unwrap());
    roam(&mut w, c, "192.0.2.99:1234".parse().unwrap());
    // Still alive well past the idle timeout at the last address.
    w.run_for(Duration::from_secs(40));
    assert!(w.clients[c].lost.is_none());
}

#[test]
fn quic_moved_client_is_forwarded_to_the_worker_that_holds_it() {
    let (mut w, c) = connected_world(2, 0, "203.0.113.30:50000");
    let tunnel = w.cores.status(w.now).clients[0].tunnel;
    let owner = w.cores.worker_of_tunnel(tunnel).unwrap();
    // An address the kernel steers to the other worker.
    let to = (1..200u16)
        .map(|i| SocketAddr::new([198, 18, 0, i as u8].into(), 40000 + i))
        .find(|a| w.cores.steer(*a) != owner)
        .unwrap();
    let before = w.cores.forwarded_datagrams;
    roam(&mut w, c, to);
    assert!(w.cores.forwarded_datagrams > before, "handed over");
    assert_eq!(w.cores.worker_of_tunnel(tunnel), Some(owner));
    assert_eq!(w.cores.drops().get(Drop::NoSession), 0);
    let _ = w.start;
}

#[test]
fn quic_client_refused_when_the_pool_is_empty_gets_code_2() {
    // A /30: the gateway's address and one client's.
    let mut w = World::with_pool(1, vec![], "172.16.9.0/30");
    let a = w.add_client(6, "203.0.113.16:50000");
    w.run_for(Duration::from_millis(200));
    assert!(w.clients[a].ready());
    let b = w.add_client(7, "203.0.113.17:50000");
    w.run_for(Duration::from_millis(200));
    assert_eq!(
        w.clients[b].close_code(),
        Some(0x2),
        "{:?}",
        w.clients[b].lost
    );
    assert!(
        w.events.iter().any(|e| matches!(e, Event::Refused { reason, client: Some(c), .. } if reason.contains("pool") && c == "client-07")),
        "{:?}",
        w.events
    );
    assert!(w.clients[a].lost.is_none(), "the first client stays");
    let st = w.cores.status(w.now);
    assert_eq!(
        st.counters.handshakes_failed.get("pool_exhausted"),
        Some(&1)
    );
}

#[test]
fn quic_reload_sends_the_new_configuration() {
    let (mut w, c) = connected_world(1, 8, "203.0.113.18:50000");
    let before = w.clients[c].capsules.len();
    let start = w.start;
    let n = w
        .cores
        .reconfigure(w.now, || CoreConfig {
            dns_domains: Vec::new(),
            dns: vec!["10.1.0.54".parse().unwrap()],
            ..core_config(start)
        })
        .unwrap();
    assert_eq!(n, 0, "nothing ended");
    w.run_for(Duration::from_millis(100));
    let again = &w.clients[c].capsules[before..];
    assert_eq!(again.len(), 5, "{again:?}");
    assert!(
        matches!(again[2], Capsule::DnsConfig(ref d) if d.servers == vec!["10.1.0.54".parse::<Ipv4Addr>().unwrap()]),
        "{again:?}"
    );
    assert_eq!(again.last(), Some(&Capsule::Ready));
    assert!(w.clients[c].lost.is_none());
}

#[test]
fn quic_handshake_configuration_and_migration_survive_loss() {
    // Every 4th datagram lost, both ways: the handshake, the capsules (a stream: resent)
    // and the path validation after a move all complete on the gateway's timers.
    let mut w = World::new(2, vec![]);
    w.lose_every = 4;
    let c = w.add_client(9, "203.0.113.19:50000");
    w.run_for(Duration::from_secs(5));
    assert!(w.clients[c].ready(), "{:?}", w.clients[c].capsules);
    assert_eq!(w.connected(9), 1);
    let addr = w.clients[c].address().unwrap();
    w.clients[c].addr = "198.18.9.9:7000".parse().unwrap();
    for i in 0..20 {
        w.clients[c].send(&ipv4(addr, LAN_HOST, i, 64));
        w.run_for(Duration::from_millis(50));
    }
    w.run_for(Duration::from_secs(2));
    // Datagrams are not resent: most, not all, arrive.
    assert!(w.tun.len() >= 10, "{}", w.tun.len());
    assert!(w.events.iter().any(|e| matches!(e, Event::Roamed { .. })));
    let st = w.cores.status(w.now);
    assert_eq!(st.clients[0].remote, w.clients[c].addr);
    assert_eq!(*st.counters.handshakes_ok.get(Protocol::Quic), 1);
    w.run_for(Duration::from_secs(60));
    assert!(w.clients[c].lost.is_none(), "{:?}", w.clients[c].lost);
}

#[test]
fn quic_connections_beyond_the_handshake_limit_are_refused_and_counted() {
    let mut w = World::with_cfg(1, vec![], |c| c.max_handshaking = 0);
    let c = w.add_client(10, "203.0.113.21:50000");
    w.run_for(Duration::from_secs(1));
    assert!(
        matches!(
            w.clients[c].lost,
            Some(ConnectionError::ConnectionClosed(_))
        ),
        "{:?}",
        w.clients[c].lost
    );
    assert!(w.cores.drops().get(Drop::Handshakes) >= 1);
    assert_eq!(w.cores.tunnel_count(), 0);
    assert_eq!(w.connected(10), 0);
}

#[test]
fn quic_clients_prove_their_address_when_the_gateway_is_busy() {
    // Limit 2: beyond one handshake in progress, a Retry first; the client follows it.
    let mut w = World::with_cfg(1, vec![], |c| c.max_handshaking = 2);
    let a = w.add_client(11, "203.0.113.22:50000");
    let b = w.add_client(12, "203.0.113.23:50000");
    w.run_for(Duration::from_millis(500));
    assert!(
        w.clients[a].ready() && w.clients[b].ready(),
        "{:?}",
        w.events
    );
    assert_eq!(w.cores.only().quic_retries(), 1);
    // Quiet again: no Retry.
    let c = w.add_client(13, "203.0.113.24:50000");
    w.run_for(Duration::from_millis(500));
    assert!(w.clients[c].ready());
    assert_eq!(w.cores.only().quic_retries(), 1);
}

/// The IPv6 pool and the IPv6 prefix behind the gateway in the dual-stack QUIC tests.
const POOL_V6: &str = "fd00:6a7e:51::/64";
const LAN_V6: &str = "fd00:1::/64";

impl QClient {
    /// The IPv6 address of the last ADDRESS_ASSIGN, with its prefix length.
    fn address6(&self) -> Option<(std::net::Ipv6Addr, u8)> {
        self.capsules.iter().rev().find_map(|c| match c {
            Capsule::AddressAssign(list) => Some(list.iter().find_map(|a| match a.address {
                std::net::IpAddr::V6(v) => Some((v, a.prefix_len)),
                _ => None,
            })),
            _ => None,
        })?
    }

    /// The IPv6 ranges of the last ROUTE_ADVERTISEMENT.
    fn routes6(&self) -> Vec<(std::net::IpAddr, std::net::IpAddr)> {
        let last = self.capsules.iter().rev().find_map(|c| match c {
            Capsule::RouteAdvertisement(r) => Some(r),
            _ => None,
        });
        last.into_iter()
            .flatten()
            .filter(|r| r.start.is_ipv6() && r.protocol == 0)
            .map(|r| (r.start, r.end))
            .collect()
    }
}

fn dual_stack_world(workers: usize, full_tunnel: bool) -> World {
    World::with_cfg(workers, vec![], move |c| {
        c.client_pool_v6 = Some(POOL_V6.parse().unwrap());
        c.address_space_v6 = vec![LAN_V6.parse().unwrap()];
        c.full_tunnel = full_tunnel;
    })
}

#[test]
fn quic_client_gets_ipv6_beside_ipv4_and_both_flow_both_ways() {
    use super::ipv6::icmp6;
    use crate::pool6::Ipv6Pool;
    use std::net::{IpAddr, Ipv6Addr};

    // Two workers: a TUN packet for the client's IPv6 address may land on the other one.
    let mut w = dual_stack_world(2, false);
    let (a, b) = (
        w.add_client(20, "203.0.113.40:50000"),
        w.add_client(21, "203.0.113.41:50000"),
    );
    w.run_for(Duration::from_millis(300));
    assert!(
        w.clients[a].ready() && w.clients[b].ready(),
        "{:?}",
        w.events
    );
    let pool6 = Ipv6Pool::new(POOL.parse().unwrap(), POOL_V6.parse().unwrap()).unwrap();
    let lan_host6: Ipv6Addr = "fd00:1::7".parse().unwrap();

    // ADDRESS_ASSIGN carries both addresses; the IPv6 one follows the IPv4 lease.
    let addr = w.clients[a].address().unwrap();
    let (addr6, len) = w.clients[a].address6().expect("an IPv6 address assigned");
    assert_eq!((addr6, len), (pool6.address_of(addr), 128));
    let other6 = w.clients[b].address6().unwrap().0;
    assert_ne!(addr6, other6);
    // ROUTE_ADVERTISEMENT: the IPv6 pool and the IPv6 address space, beside the IPv4 ones.
    let v6 = |s: &str| IpAddr::V6(s.parse().unwrap());
    assert_eq!(
        w.clients[a].routes6(),
        vec![
            (
                v6("fd00:6a7e:51::"),
                v6("fd00:6a7e:51::ffff:ffff:ffff:ffff")
            ),
            (v6("fd00:1::"), v6("fd00:1::ffff:ffff:ffff:ffff")),
        ]
    );
    assert_eq!(
        w.clients[a].capsules.len(),
        5,
        "{:?}",
        w.clients[a].capsules
    );

    // Up, both families: unchanged to TUN.
    let up4 = ipv4(addr, LAN_HOST, 1, 100);
    let up6 = icmp6(addr6, lan_host6, 2);
    w.clients[a].send(&up4);
    w.clients[a].send(&up6);
    w.settle();
    assert_eq!(w.tun, vec![up4, up6]);

    // Down, both families, whichever worker TUN hands them to.
    for tag in 0..8u8 {
        let down6 = icmp6(lan_host6, addr6, tag);
        let dest = w
            .down_from_tun(&down6)
            .unwrap_or_else(|| panic!("IPv6 not routed: {}", w.cores.drops()));
        assert_eq!(
            dest,
            Dest::Udp {
                from: Listener::Quic,
                to: w.clients[a].addr
            }
        );
        assert_eq!(w.clients[a].received.last(), Some(&down6));
    }
    let down4 = ipv4(LAN_HOST, addr, 3, 500);
    w.down_from_tun(&down4).expect("IPv4 routed");
    assert_eq!(w.clients[a].received.last(), Some(&down4));
    assert!(w.clients[b].received.is_empty());

    // A source it was not given (the other client's, another of the pool, outside it):
    // dropped and counted as spoofed, nothing reaches TUN.
    w.tun.clear();
    let spoofed = w.cores.drops().get(Drop::Spoofed);
    for src in [
        other6,
        "fd00:6a7e:51::77".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    ] {
        w.clients[a].send(&icmp6(src, lan_host6, 9));
    }
    w.settle();
    assert!(w.tun.is_empty(), "{:?}", w.tun);
    assert_eq!(w.cores.drops().get(Drop::Spoofed), spoofed + 3);

    // The session ends: its IPv6 address is released with its IPv4 one.
    let now = w.now;
    w.clients[a]
        .conn
        .close(now, quinn_proto::VarInt::from_u32(0), "bye".into());
    w.run_for(Duration::from_secs(3));
    assert!(
        w.events
            .iter()
            .any(|e| matches!(e, Event::Disconnected { client, .. } if *client == client_name(20))),
        "{:?}",
        w.events
    );
    assert_eq!(w.cores.leased_count(), 1, "the other client's lease only");
    let noroute = w.cores.drops().get(Drop::NoRoute);
    assert!(
        w.cores
            .handle_tun_packet(w.now, &icmp6(lan_host6, addr6, 10))
            .is_none()
    );
    assert_eq!(w.cores.drops().get(Drop::NoRoute), noroute + 1);
    // The other client's IPv6 still routes.
    let down6 = icmp6(lan_host6, other6, 11);
    w.down_from_tun(&down6)
        .expect("the other client keeps its IPv6");
    assert_eq!(w.clients[b].received.last(), Some(&down6));

    // Connecting again, the client gets the same pair of addresses back.
    let c = w.add_client(20, "203.0.113.42:50000");
    w.run_for(Duration::from_millis(300));
    assert!(w.clients[c].ready());
    assert_eq!(w.clients[c].address(), Some(addr));
    assert_eq!(w.clients[c].address6(), Some((addr6, 128)));
}

#[test]
fn quic_full_tunnel_advertises_all_of_ipv6_and_a_pool_less_gateway_none() {
    use std::net::{IpAddr, Ipv6Addr};

    let mut w = dual_stack_world(1, true);
    let c = w.add_client(22, "203.0.113.43:50000");
    w.run_for(Duration::from_millis(200));
    assert!(w.clients[c].ready());
    assert!(w.clients[c].address6().is_some());
    assert_eq!(
        w.clients[c].routes6(),
        vec![(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::from(u128::MAX))
        )]
    );

    // Without `client_pool_v6`: IPv4 only, no IPv6 range, IPv6 from the client dropped as
    // `ipv6` (not carried), not as spoofed.
    let (mut w, c) = connected_world(1, 23, "203.0.113.44:50000");
    assert_eq!(w.clients[c].address6(), None);
    assert!(w.clients[c].routes6().is_empty());
    w.clients[c].send(&super::ipv6::icmp6(
        "fd00:6a7e:51::2".parse().unwrap(),
        "fd00:1::7".parse().unwrap(),
        1,
    ));
    w.settle();
    assert!(w.tun.is_empty());
    assert_eq!(w.cores.drops().get(Drop::Ipv6), 1);
    assert_eq!(w.cores.drops().get(Drop::Spoofed), 0);
}

#[test]
fn quic_reload_of_the_ipv6_address_space_advertises_the_new_ranges() {
    use std::net::IpAddr;

    let mut w = dual_stack_world(1, false);
    let c = w.add_client(24, "203.0.113.45:50000");
    w.run_for(Duration::from_millis(200));
    let addr6 = w.clients[c].address6().unwrap();
    let before = w.clients[c].capsules.len();
    let start = w.start;
    let n = w
        .cores
        .reconfigure(w.now, move || CoreConfig {
            client_pool_v6: Some(POOL_V6.parse().unwrap()),
            address_space_v6: vec!["fd00:2::/48".parse().unwrap()],
            ..core_config(start)
        })
        .unwrap();
    assert_eq!(n, 0, "nothing ended");
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.clients[c].capsules.len(), before + 5);
    // The same IPv6 address again, and the new prefix instead of the old one.
    assert_eq!(w.clients[c].address6(), Some(addr6));
    let v6 = |s: &str| IpAddr::V6(s.parse().unwrap());
    assert_eq!(
        w.clients[c].routes6(),
        vec![
            (
                v6("fd00:6a7e:51::"),
                v6("fd00:6a7e:51::ffff:ffff:ffff:ffff")
            ),
            (v6("fd00:2::"), v6("fd00:2:0:ffff:ffff:ffff:ffff:ffff")),
        ]
    );
    assert!(w.clients[c].lost.is_none());
}
