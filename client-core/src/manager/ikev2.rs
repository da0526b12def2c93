//! One connection attempt over IKEv2: the engine's initiator over one UDP socket (port 500,
//! then 4500 with ESP in UDP), TUN, routes and DNS from the configuration payload.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_engine::esp::EspTable;
use gatehouse_engine::ikev2::crypto::SigningKey;
use gatehouse_engine::ikev2::initiator::{IkeInitiator, InitiatorConfig, InitiatorEvent};
use gatehouse_engine::ikev2::peer_cert::PeerTrust;
use gatehouse_engine::ikev2::proposal::Policy;
use gatehouse_engine::pool6::Ipv6Assignment;
use gatehouse_engine::wire::ikev2::{Classified, strip_non_esp_marker};
use ipnet::{Ipv4Net, Ipv6Net};
use tokio::sync::mpsc;

use super::io::{BURST, Tun, UdpLink};
use super::path::PathWatch;
use super::{
    Command, ConnectRequest, Logger, ManagerOptions, OsEntropy, Outcome, StatusSink, credentials,
};
use crate::platform::NetConfig;
use crate::profile::{ProtocolKind, StoredProfile};
use crate::routing::{Pushed, RoutePlan};
use crate::status::{ConnectionState, Counters};

fn config(req: &ConnectRequest) -> Result<Arc<InitiatorConfig>, String> {
    let p = &req.profile;
    let (ca, chain, key) = credentials(req)?;
    let rng: Arc<dyn ring::rand::SecureRandom + Send + Sync> =
        Arc::new(ring::rand::SystemRandom::new());
    let key = SigningKey::from_pkcs8(key.secret_der(), &*rng)
        .map_err(|e| format!("profile {}: private key: {e}", p.name))?;
    Ok(Arc::new(InitiatorConfig {
        policy: Policy::default(),
        trust: PeerTrust {
            roots: ca,
            crls: Vec::new(),
        },
        time: Arc::new(rustls::time_provider::DefaultTimeProvider),
        cert_chain: chain,
        key: Arc::new(key),
        rng,
        remote_id: Some(p.gateway.clone()),
        dpd_interval: Duration::from_secs(30),
        fragment_size: 1280,
        ike_lifetime: Duration::from_secs(4 * 3600),
        child_lifetime: Duration::from_secs(3600),
        // An IPv6 address inside the tunnel when the gateway has an IPv6 pool (it narrows
        // the ::/0 we propose to our /128 === its IPv6 prefixes); IPv4 only otherwise.
        request_ipv6: true,
        site: None,
    }))
}

/// Runs one IKEv2 attempt to completion.
pub(crate) async fn run(
    options: &ManagerOptions,
    req: &ConnectRequest,
    net: &mut NetConfig,
    commands: &mut mpsc::Receiver<Command>,
    status: &StatusSink,
    log: &Logger,
) -> Outcome {
    let profile = &req.profile;
    status.connecting(&profile.name, ProtocolKind::Ikev2);
    let cfg = match config(req) {
        Ok(c) => c,
        Err(reason) => return Outcome::Fatal(reason),
    };
    let port = profile
        .protocols
        .iter()
        .find(|p| p.kind == ProtocolKind::Ikev2)
        .map_or(500, |p| p.port);
    let addr = match super::tunnel::resolve(&profile.gateway, port).await {
        Ok(a) => a,
        Err(e) => return Outcome::Lost(format!("cannot resolve {}: {e}", profile.gateway)),
    };
    let mut udp = match UdpLink::bind_for(addr) {
        Ok(s) => s,
        Err(e) => return Outcome::Lost(format!("cannot open a UDP socket: {e}")),
    };
    let mut path = PathWatch::new(&options.tun_name, addr);
    log.info(format!("{}: connecting to {addr} over ikev2", profile.name));
    let start = Instant::now();
    let mut ike = IkeInitiator::new(
        cfg,
        Box::new(OsEntropy(ring::rand::SystemRandom::new())),
        start,
        addr,
    );
    let mut tun: Option<Tun> = None;
    // One owner (this SA): the engine's ESP table, as the gateway uses it.
    let mut esp: EspTable<()> = EspTable::new();
    let mut counters = Counters::default();
    // ESP from TUN leaves for the gateway's NAT-T port.
    let gw = SocketAddr::new(addr.ip(), 4500);
    // IKE messages with their non-ESP marker; ESP packets; decrypted packets.
    let mut ike_out = Vec::with_capacity(2048);
    let mut out = vec![0u8; 65536];
    let mut dec = vec![0u8; 65536];
    // Datagrams a full socket or a TUN write error lost (logged at debug level).
    let mut lost: u64 = 0;
    let mut lost_logged: u64 = 0;
    let mut stop: Option<Outcome> = None;
    let mut closed: Option<String> = None;
    let mut counter_tick = tokio::time::interval(Duration::from_secs(1));
    // NAT keepalives (RFC 3948 2.3): one 0xFF byte to 4500 when we sent nothing for 20 s,
    // so a NAT in front of us keeps our mapping.
    let mut keepalive_tick = tokio::time::interval(Duration::from_secs(20));
    let mut sent_since_keepalive = false;
    let target = format!("{}:{port}", profile.gateway);
    loop {
        let now = Instant::now();
        while let Some(t) = ike.poll_transmit() {
            ike_out.clear();
            if t.nat_t {
                ike_out.extend_from_slice(&[0, 0, 0, 0]);
            }
            ike_out.extend_from_slice(&t.data);
            sent_since_keepalive = true;
            udp.push(t.to, &ike_out);
        }
        // Whatever the last turn produced leaves now: batching never holds a packet back.
        if let Some(t) = &mut tun {
            t.flush().await;
            lost += t.take_drops();
        }
        lost += udp.flush() as u64;
        while let Some(ev) = ike.poll_event() {
            match ev {
                InitiatorEvent::Connected {
                    address,
                    dns,
                    dns_domains,
                    subnets,
                    address6,
                    subnets6,
                    our_spi,
                    sa,
                    ..
                } => {
                    let Some(address) = address else {
                        return Outcome::Lost("the gateway assigned no virtual address".into());
                    };
                    let sa = *sa;
                    esp.install((), our_spi, sa.inbound, sa.outbound, false);
                    let routes = match bring_up(
                        options,
                        profile,
                        (address, address6),
                        (&subnets, &subnets6),
                        (&dns, &dns_domains),
                        addr,
                        net,
                    ) {
                        Ok((dev, routes)) => {
                            tun = Some(dev);
                            path.rearm();
                            routes
                        }
                        Err(reason) => {
                            ike.disconnect(now);
                            return Outcome::Fatal(reason);
                        }
                    };
                    let v6 = address6
                        .map(|(a, _)| format!(", IPv6 {a}"))
                        .unwrap_or_default();
                    log.info(format!(
                        "{}: connected to {target} over ikev2; address {address}{v6}, {}, DNS {:?}",
                        profile.name,
                        super::routes::describe(&routes),
                        dns
                    ));
                    let since = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    status.set(ConnectionState::Connected {
                        profile: profile.name.clone(),
                        since,
                        address,
                        gateway: target.clone(),
                        protocol: ProtocolKind::Ikev2,
                    });
                }
                InitiatorEvent::ChildRekeyed { our_spi, sa, .. } => {
                    // We started the rekey and the gateway answered: it has the new SA.
                    let sa = *sa;
                    esp.install((), our_spi, sa.inbound, sa.outbound, false);
                }
                InitiatorEvent::ChildDeleted { our_spi } => {
                    esp.remove((), our_spi);
                }
                InitiatorEvent::AuthFailed(reason) => {
                    return Outcome::Fatal(format!(
                        "the gateway refused this client: {reason}; ask your administrator for a new profile"
                    ));
                }
                InitiatorEvent::Closed(reason) => closed = Some(reason),
            }
        }
        if ike.is_closed() {
            if let Some(o) = stop.take() {
                return o;
            }
            return Outcome::Lost(closed.unwrap_or_else(|| "IKE SA closed".into()));
        }
        if tun.is_none() && stop.is_none() && now >= start + options.connect_timeout {
            return Outcome::Lost(format!(
                "no answer from the gateway at {addr} within {}s",
                options.connect_timeout.as_secs()
            ));
        }
        let deadline = ike.poll_timeout().unwrap_or(now + Duration::from_secs(1));
        tokio::select! {
            r = udp.recv() => {
                if r.is_err() {
                    continue;
                }
                // This read and up to BURST more that are already waiting.
                for i in 0..=BURST {
                    if i > 0 && !udp.try_recv() {
                        break;
                    }
                    let now = Instant::now();
                    let mut active = false;
                    for (from, bytes) in udp.batch.iter() {
                        if from.ip() != addr.ip() {
                            continue;
                        }
                        if from.port() == addr.port() && addr.port() != 4500 {
                            ike.handle_message(now, bytes);
                            continue;
                        }
                        match strip_non_esp_marker(bytes) {
                            Classified::Ike(m) => ike.handle_message(now, m),
                            Classified::Keepalive => {}
                            Classified::Esp(p) => {
                                let Ok(((), payload)) = esp.decrypt(p, &mut dec) else {
                                    continue;
                                };
                                if payload.next_header == 59 {
                                    continue;
                                }
                                let len = payload.packet.len();
                                active = true;
                                if let Some(t) = &mut tun {
                                    counters.rx_bytes += len as u64;
                                    counters.rx_packets += 1;
                                    t.push(&dec[..len]).await;
                                }
                            }
                        }
                    }
                    if active {
                        ike.note_activity(now);
                    }
                }
            }
            r = async { match &mut tun { Some(t) => t.recv().await, None => std::future::pending().await } } => {
                let Some(t) = &mut tun else { continue };
                if r.is_err() {
                    // A device going away shows on the next read too; do not spin on it.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                for i in 0..=BURST {
                    if i > 0 && !t.try_recv() {
                        break;
                    }
                    for p in t.packets() {
                        if let Ok(len) = esp.encrypt((), p, &mut out) {
                            counters.tx_bytes += p.len() as u64;
                            counters.tx_packets += 1;
                            sent_since_keepalive = true;
                            udp.push(gw, &out[..len]);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                ike.handle_timeout(Instant::now());
            }
            // A new IKE SA from the new address, now rather than when DPD gives up.
            change = path.moved(), if stop.is_none() => {
                return Outcome::NetworkChanged(format!("network changed: {change}"));
            }
            cmd = commands.recv(), if stop.is_none() => {
                let now = Instant::now();
                ike.disconnect(now);
                stop = Some(match cmd {
                    Some(Command::Disconnect(ack)) => Outcome::UserDisconnect(ack),
                    Some(Command::Connect(next, ack)) => Outcome::Replaced(next, ack),
                    None => Outcome::Lost("manager stopped".into()),
                });
            }
            _ = counter_tick.tick() => {
                status.counters(counters);
                if lost > lost_logged {
                    tracing::debug!(lost, "packets dropped on a full socket or a failed TUN write");
                    lost_logged = lost;
                }
            }
            _ = keepalive_tick.tick() => {
                if tun.is_some() && !sent_since_keepalive {
                    udp.push(gw, &[0xff]);
                }
                sent_since_keepalive = false;
            }
        }
    }
}

/// Brings the tunnel up: TUN with our addresses (IPv6 too when the gateway gave one), the
/// routes the profile's choice keeps of what the gateway's selectors offer, DNS.
fn bring_up(
    options: &ManagerOptions,
    profile: &StoredProfile,
    (address, address6): (Ipv4Addr, Option<(Ipv6Addr, u8)>),
    (subnets, subnets6): (&[Ipv4Net], &[Ipv6Net]),
    (dns, dns_domains): (&[std::net::IpAddr], &[String]),
    server: SocketAddr,
    net: &mut NetConfig,
) -> Result<(Tun, RoutePlan), String> {
    let dev = Tun::create(&options.tun_name, address, 32, 1400)?;
    // A 0.0.0.0/0 selector from the gateway means "everything" (full tunnel); with an IPv6
    // address, ::/0 is the full tunnel's IPv6 half (the route plan decides).
    let pushed = Pushed {
        routes: subnets.to_vec(),
        routes_v6: subnets6.to_vec(),
        full: subnets.iter().any(|s| s.prefix_len() == 0),
        ipv6: false,
    };
    // The selectors name no IPv6 gateway: every IPv6 route is a device route.
    let v6 = address6.and_then(|(a, len)| {
        Some(Ipv6Assignment {
            address: a,
            subnet: Ipv6Net::new(a, len).ok()?,
            gateway: a,
            routes: subnets6.to_vec(),
        })
    });
    let tun = &options.tun_name;
    let routes = super::routes::plan_dual_stack(profile, net, tun, pushed, v6.as_ref())?;
    let plan = super::routes::net_plan(tun, &routes, server.ip(), address, dns, dns_domains);
    net.apply(&plan)
        .map_err(|e| format!("configuring routes/DNS failed: {e}"))?;
    Ok((dev, routes))
}
