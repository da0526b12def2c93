//! One connection attempt over the OpenVPN protocol: dial UDP or TCP, drive the engine's
//! client session, bring up TUN, routes and DNS when the gateway pushes them, and return how
//! it ended. The session itself is sans-IO; this is its thin tokio driver.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_engine::openvpn::DataOutcome;
use gatehouse_engine::openvpn::client::{ClientConfig, ClientEvent, ClientSession};
use gatehouse_engine::openvpn::data::Cipher;
use gatehouse_engine::openvpn::push::PushReply;
use gatehouse_engine::openvpn::tls::client_config;
use gatehouse_engine::openvpn::wrap::{
    ClientWrap, KeyDirection, StaticKey, TlsAuthDigest, TlsCryptV2ClientKey,
};
use gatehouse_engine::wire::openvpn::{Packet, TcpDeframer, tcp_frame};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::io::{BURST, Tun, UdpLink};
use super::path::PathWatch;
use super::verify::{OpenvpnServerVerifier, Refusal};
use super::{
    Command, ConnectRequest, Logger, ManagerOptions, OsEntropy, Outcome, StatusSink, Target,
    credentials,
};
use crate::platform::NetConfig;
use crate::profile::{ProtocolKind, Source, StoredProfile, WrapKind};
use crate::routing::{Pushed, RoutePlan};
use crate::status::{ConnectionState, Counters};

/// The connection to the gateway.
enum Link {
    Udp {
        udp: Box<UdpLink>,
        peer: SocketAddr,
    },
    Tcp {
        rd: tokio::net::tcp::OwnedReadHalf,
        wr: tokio::net::tcp::OwnedWriteHalf,
        deframer: TcpDeframer,
        /// Read buffer.
        buf: Vec<u8>,
        /// Frames gathered for the next write.
        framed: Vec<u8>,
    },
}

/// Bytes of framed packets gathered before a TCP write is forced.
const TCP_WRITE_BATCH: usize = 64 * 1024;

impl Link {
    /// Queues one packet for the gateway; it leaves with [`flush`](Self::flush) at the latest.
    async fn push(&mut self, packet: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Udp { udp, peer } => {
                udp.push(*peer, packet);
                Ok(())
            }
            Link::Tcp { wr, framed, .. } => {
                tcp_frame(packet, framed);
                if framed.len() >= TCP_WRITE_BATCH {
                    wr.write_all(framed).await?;
                    framed.clear();
                }
                Ok(())
            }
        }
    }

    /// Sends what is queued: one GSO send per run of datagrams, one TCP write for all frames.
    /// Returns datagrams a full socket dropped.
    async fn flush(&mut self) -> std::io::Result<usize> {
        match self {
            Link::Udp { udp, .. } => Ok(udp.flush()),
            Link::Tcp { wr, framed, .. } => {
                if !framed.is_empty() {
                    wr.write_all(framed).await?;
                    framed.clear();
                }
                Ok(0)
            }
        }
    }

    /// Waits for the gateway's next datagrams (UDP: in the link's batch) or bytes (TCP: pushed
    /// into the deframer).
    async fn recv(&mut self) -> std::io::Result<()> {
        match self {
            Link::Udp { udp, .. } => udp.recv().await,
            Link::Tcp {
                rd, deframer, buf, ..
            } => {
                let n = rd.read(buf).await?;
                if n == 0 {
                    return Err(closed_by_gateway());
                }
                deframer.push(&buf[..n]);
                Ok(())
            }
        }
    }

    /// Reads more if it is waiting, without blocking; false when nothing was.
    fn try_recv(&mut self) -> std::io::Result<bool> {
        match self {
            Link::Udp { udp, .. } => Ok(udp.try_recv()),
            Link::Tcp {
                rd, deframer, buf, ..
            } => match rd.try_read(buf) {
                Ok(0) => Err(closed_by_gateway()),
                Ok(n) => {
                    deframer.push(&buf[..n]);
                    Ok(true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
                Err(e) => Err(e),
            },
        }
    }
}

fn closed_by_gateway() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the gateway closed the TCP connection",
    )
}

/// Default port of each protocol when a profile names none.
pub(crate) fn default_port(proto: ProtocolKind) -> u16 {
    match proto {
        ProtocolKind::OpenvpnTcp | ProtocolKind::Quic => 443,
        ProtocolKind::Ikev2 => 500,
        _ => 1194,
    }
}

/// Runs one attempt to completion.
pub(crate) async fn run(
    options: &ManagerOptions,
    req: &ConnectRequest,
    target: &Target,
    net: &mut NetConfig,
    commands: &mut mpsc::Receiver<Command>,
    status: &StatusSink,
    log: &Logger,
) -> Outcome {
    let profile = &req.profile;
    let proto = target.kind;
    if !matches!(proto, ProtocolKind::OpenvpnUdp | ProtocolKind::OpenvpnTcp) {
        // IKEv2 and QUIC have their own drivers (manager/ikev2.rs, manager/quic.rs).
        return Outcome::Lost(format!("{proto} is not an OpenVPN protocol"));
    }
    status.connecting(&profile.name, proto);
    // Where an .ovpn profile's certificate check leaves why it refused the server.
    let refusal = Refusal::default();
    let config = match session_config(req, &target.host, options, &refusal) {
        Ok(c) => c,
        Err(reason) => return Outcome::Fatal(reason),
    };
    let port = target.port;
    let host = target.host.as_str();
    let target = format!("{host}:{port}");
    let addr = match resolve(host, port).await {
        Ok(a) => a,
        Err(e) => return Outcome::Lost(format!("cannot resolve {target}: {e}")),
    };
    log.info(format!(
        "{}: connecting to {addr} over {proto}",
        profile.name
    ));
    // Watching from before the dial: a network that changes while we connect counts too.
    let mut path = PathWatch::new(&options.tun_name, addr);
    let mut link = match dial(proto, addr, options.connect_timeout).await {
        Ok(l) => l,
        Err(e) => return Outcome::Lost(format!("cannot reach {addr}: {e}")),
    };
    let start = Instant::now();
    let mut session = match ClientSession::new(
        config,
        Box::new(OsEntropy(ring::rand::SystemRandom::new())),
        start,
    ) {
        Ok(s) => s,
        Err(e) => return Outcome::Fatal(format!("TLS setup failed: {e}")),
    };
    // tls-crypt packet ids carry the time the session started, as OpenVPN's do.
    session.set_unix_time(unix_now());

    let mut out = Vec::with_capacity(2048);
    let mut dec = Vec::with_capacity(2048);
    let mut tun: Option<Tun> = None;
    let mut counters = Counters::default();
    let mut drops = ControlDrops { log, count: 0 };
    // Datagrams a full socket or a TUN write error lost (logged at debug level).
    let mut lost: u64 = 0;
    let mut lost_logged: u64 = 0;
    let mut closed_reason: Option<String> = None;
    let mut stop: Option<Outcome> = None;
    let mut counter_tick = tokio::time::interval(Duration::from_secs(1));
    let connect_deadline = start + options.connect_timeout;

    loop {
        let now = Instant::now();
        while session.poll_transmit(now, &mut out) {
            if let Err(e) = link.push(&out).await {
                return link_failed(&mut stop, format!("sending to the gateway failed: {e}"));
            }
        }
        // Whatever the last turn produced leaves now: batching never holds a packet back.
        if let Some(t) = &mut tun {
            t.flush().await;
            lost += t.take_drops();
        }
        match link.flush().await {
            Ok(n) => lost += n as u64,
            Err(e) => return link_failed(&mut stop, format!("sending to the gateway failed: {e}")),
        }
        while let Some(ev) = session.poll_event() {
            match ev {
                ClientEvent::Connected(push) => {
                    let routes = match bring_up(options, profile, &push, addr.ip(), net) {
                        Ok((dev, routes)) => {
                            tun = Some(dev);
                            path.rearm();
                            routes
                        }
                        Err(reason) => {
                            session.disconnect(now);
                            return Outcome::Fatal(reason);
                        }
                    };
                    let since = unix_now();
                    log.info(format!(
                        "{}: connected to {target} over {proto}; address {}, {}, DNS {:?}, cipher {}",
                        profile.name,
                        push.address,
                        super::routes::describe(&routes),
                        push.dns,
                        push.cipher.openvpn_name()
                    ));
                    status.set(ConnectionState::Connected {
                        profile: profile.name.clone(),
                        since,
                        address: push.address,
                        gateway: target.clone(),
                        protocol: proto,
                    });
                }
                ClientEvent::Rekeyed { key_id } => {
                    tracing::debug!(key_id, "data keys renegotiated");
                }
                ClientEvent::AuthFailed(reason) => {
                    return Outcome::Fatal(format!(
                        "the gateway refused this client: {reason}; ask your administrator for a new profile"
                    ));
                }
                ClientEvent::Closed(reason) => {
                    // The server is not the one the profile names: trying again will not
                    // change that.
                    if let Some(why) = refusal.take() {
                        return Outcome::Fatal(format!(
                            "{why}; not retrying until the profile or the server is fixed"
                        ));
                    }
                    if closed_reason.is_none() {
                        closed_reason = Some(reason);
                    }
                }
            }
        }
        if session.is_closed() {
            if let Some(o) = stop.take() {
                return o;
            }
            return Outcome::Lost(closed_reason.unwrap_or_else(|| "connection closed".into()));
        }
        if tun.is_none() && now >= connect_deadline && stop.is_none() {
            return Outcome::Lost(format!(
                "no answer from the gateway at {addr} within {}s",
                options.connect_timeout.as_secs()
            ));
        }
        let deadline = session
            .poll_timeout(now)
            .unwrap_or(now + Duration::from_secs(1));
        tokio::select! {
            r = link.recv() => {
                if let Err(e) = r {
                    return link_failed(&mut stop, format!("connection to the gateway broke: {e}"));
                }
                // This read and up to BURST more that are already waiting.
                for i in 0..=BURST {
                    if i > 0 {
                        match link.try_recv() {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(e) => return link_failed(&mut stop, format!("connection to the gateway broke: {e}")),
                        }
                    }
                    let now = Instant::now();
                    let mut rx = Rx { session: &mut session, dec: &mut dec, tun: tun.as_mut(), counters: &mut counters, drops: &mut drops };
                    match &mut link {
                        Link::Udp { udp, peer } => {
                            for (from, d) in udp.batch.iter() {
                                // Only the gateway talks to this socket.
                                if from == *peer {
                                    rx.packet(now, d).await;
                                }
                            }
                        }
                        Link::Tcp { deframer, .. } => loop {
                            match deframer.pop() {
                                Ok(Some(frame)) => rx.packet(now, frame).await,
                                Ok(None) => break,
                                Err(e) => return link_failed(&mut stop, format!("bad framing from the gateway: {e}")),
                            }
                        },
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
                let now = Instant::now();
                for i in 0..=BURST {
                    if i > 0 && !t.try_recv() {
                        break;
                    }
                    for p in t.packets() {
                        if session.encrypt(now, p, &mut out).is_ok() {
                            counters.tx_bytes += p.len() as u64;
                            counters.tx_packets += 1;
                            if let Err(e) = link.push(&out).await {
                                return link_failed(&mut stop, format!("sending to the gateway failed: {e}"));
                            }
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                session.handle_timeout(Instant::now());
            }
            // The socket (UDP: its source address; TCP: the connection) belongs to the old
            // network: a new one and a new handshake, now rather than at the keepalive
            // timeout.
            change = path.moved(), if stop.is_none() => {
                return Outcome::NetworkChanged(format!("network changed: {change}"));
            }
            cmd = commands.recv(), if stop.is_none() => {
                let now = Instant::now();
                match cmd {
                    Some(Command::Disconnect(ack)) => {
                        session.disconnect(now);
                        stop = Some(Outcome::UserDisconnect(ack));
                    }
                    Some(Command::Connect(next, ack)) => {
                        session.disconnect(now);
                        stop = Some(Outcome::Replaced(next, ack));
                    }
                    None => {
                        session.disconnect(now);
                        stop = Some(Outcome::Lost("manager stopped".into()));
                    }
                }
            }
            _ = counter_tick.tick() => {
                status.counters(counters);
                if lost > lost_logged {
                    tracing::debug!(lost, "packets dropped on a full socket or a failed TUN write");
                    lost_logged = lost;
                }
            }
        }
    }
}

/// How the loop ends when the link to the gateway fails: with what the user asked for
/// (disconnect, another connection) if they did - over TCP the gateway closes the connection
/// once our EXIT ended the session, which may come before the session here saw the end -
/// else as a lost connection.
fn link_failed(stop: &mut Option<Outcome>, reason: String) -> Outcome {
    stop.take().unwrap_or(Outcome::Lost(reason))
}

/// Where the gateway's packets go: the session, then TUN.
struct Rx<'a, 'l> {
    session: &'a mut ClientSession,
    dec: &'a mut Vec<u8>,
    tun: Option<&'a mut Tun>,
    counters: &'a mut Counters,
    drops: &'a mut ControlDrops<'l>,
}

impl Rx<'_, '_> {
    async fn packet(&mut self, now: Instant, bytes: &[u8]) {
        handle_packet(
            self.session,
            now,
            bytes,
            self.dec,
            self.tun.as_deref_mut(),
            self.counters,
            self.drops,
        )
        .await;
    }
}

async fn handle_packet(
    session: &mut ClientSession,
    now: Instant,
    bytes: &[u8],
    dec: &mut Vec<u8>,
    tun: Option<&mut Tun>,
    counters: &mut Counters,
    drops: &mut ControlDrops<'_>,
) {
    // Control packets go to the session as they came: with tls-auth / tls-crypt they must be
    // authenticated (and decrypted) before anything parses them.
    let is_data = bytes
        .first()
        .is_some_and(|b| matches!(b >> 3, OPCODE_DATA_V1 | OPCODE_DATA_V2));
    if !is_data {
        if let Err(e) = session.handle_control_datagram(now, bytes) {
            drops.count += 1;
            // The first drop says why (a wrong key shows here); the rest are only counted.
            if drops.count == 1 {
                drops.log.warn(format!(
                    "dropped a control packet from the server: {e} (wrong tls-auth/tls-crypt key or key-direction?)"
                ));
            }
        }
        return;
    }
    let Ok(pkt) = Packet::parse(bytes) else {
        return;
    };
    match pkt {
        Packet::Control(_) => {}
        Packet::Data(d) => {
            if let Ok(DataOutcome::Packet(r)) = session.handle_data(now, bytes, d.key_id, dec)
                && let Some(t) = tun
            {
                let p = &dec[r];
                counters.rx_bytes += p.len() as u64;
                counters.rx_packets += 1;
                t.push(p).await;
            }
        }
    }
}

fn session_config(
    req: &ConnectRequest,
    host: &str,
    options: &ManagerOptions,
    refusal: &Refusal,
) -> Result<Arc<ClientConfig>, String> {
    let p = &req.profile;
    let (ca, chain, key) = credentials(req)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let time = Arc::new(rustls::time_provider::DefaultTimeProvider);
    let tls = match p.source {
        Source::Gatehouse => client_config(provider, time, &ca, chain, key)
            .map_err(|e| format!("profile {}: {e}", p.name))?,
        Source::Ovpn => openvpn_tls_config(req, provider, time, &ca, chain, key, refusal)?,
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("profile {}: {host:?} is not a host name or IP", p.name))?;
    let mut cfg = ClientConfig::new(tls, name);
    cfg.wrap = client_wrap(req)?;
    let ciphers: Vec<Cipher> = p
        .ciphers
        .iter()
        .filter_map(|c| Cipher::from_openvpn_name(c))
        .collect();
    if !ciphers.is_empty() {
        cfg.ciphers = ciphers;
    }
    cfg.handshake_timeout = options.connect_timeout;
    cfg.version = format!("gatehouse-{}", env!("CARGO_PKG_VERSION"));
    Ok(Arc::new(cfg))
}

/// The gateway's address: a host name (its IPv4 addresses first, then IPv6 ones: a name with
/// both is dialled over IPv4), or an IPv4 or IPv6 literal, also written `[2001:db8::1]`.
pub(super) async fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    let host = unbracket(host);
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
}

/// `[2001:db8::1]` as `2001:db8::1` (the resolver takes no brackets).
pub(super) fn unbracket(host: &str) -> &str {
    let h = host.trim();
    h.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(h)
}

async fn dial(proto: ProtocolKind, addr: SocketAddr, timeout: Duration) -> std::io::Result<Link> {
    match proto {
        ProtocolKind::OpenvpnTcp => {
            let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TCP connect timed out")
                })??;
            stream.set_nodelay(true)?;
            let (rd, wr) = stream.into_split();
            Ok(Link::Tcp {
                rd,
                wr,
                deframer: TcpDeframer::new(),
                buf: vec![0; 65536],
                framed: Vec::with_capacity(TCP_WRITE_BATCH + 2048),
            })
        }
        _ => Ok(Link::Udp {
            udp: Box::new(UdpLink::bind_for(addr)?),
            peer: addr,
        }),
    }
}

fn bring_up(
    options: &ManagerOptions,
    profile: &StoredProfile,
    push: &PushReply,
    server: IpAddr,
    net: &mut NetConfig,
) -> Result<(Tun, RoutePlan), String> {
    let prefix = ipnet::ipv4_mask_to_prefix(push.netmask).unwrap_or(32);
    let dev = Tun::create(&options.tun_name, push.address, prefix, push.tun_mtu)?;
    let pushed = Pushed {
        routes: push.routes.clone(),
        routes_v6: push
            .ipv6
            .as_ref()
            .map(|v6| v6.routes.clone())
            .unwrap_or_default(),
        full: push.redirect_gateway,
        ipv6: false,
    };
    let routes = super::routes::plan_dual_stack(
        profile,
        net,
        &options.tun_name,
        pushed,
        push.ipv6.as_ref(),
    )?;
    let plan = super::routes::net_plan(
        &options.tun_name,
        &routes,
        server,
        push.gateway,
        &push.dns,
        &push.dns_domains,
    );
    net.apply(&plan)
        .map_err(|e| format!("configuring routes/DNS failed: {e}"))?;
    Ok((dev, routes))
}

/// Control packets the wrapper refused during one attempt.
struct ControlDrops<'a> {
    log: &'a Logger,
    count: u64,
}

/// P_DATA_V1 and P_DATA_V2 opcodes (the top five bits of the first byte).
const OPCODE_DATA_V1: u8 = 6;
const OPCODE_DATA_V2: u8 = 9;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The TLS configuration of a profile imported from an `.ovpn` file: TLS 1.3, our
/// certificate, and the server's certificate checked as OpenVPN checks it
/// ([`OpenvpnServerVerifier`]).
pub(super) fn openvpn_tls_config(
    req: &ConnectRequest,
    provider: Arc<rustls::crypto::CryptoProvider>,
    time: Arc<dyn rustls::time_provider::TimeProvider>,
    ca: &[rustls::pki_types::CertificateDer<'static>],
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    refusal: &Refusal,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let p = &req.profile;
    let broken =
        |e: &dyn std::fmt::Display| format!("profile {}: {e}; re-import the profile", p.name);
    let inner = if ca.is_empty() {
        None
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in ca {
            roots.add(c.clone()).map_err(|e| broken(&e))?;
        }
        Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| broken(&e))?,
        )
    };
    let mut fingerprints = Vec::new();
    for hex in &p.peer_fingerprints {
        let mut fp = [0u8; 32];
        let ok = hex.len() == 64
            && fp.iter_mut().enumerate().all(|(i, b)| {
                hex.get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .map(|v| *b = v)
                    .is_some()
            });
        if !ok {
            return Err(broken(&format!("peer-fingerprint {hex:?} is damaged")));
        }
        fingerprints.push(fp);
    }
    if inner.is_none() && fingerprints.is_empty() {
        return Err(broken(
            &"no CA and no peer-fingerprint to check the server against",
        ));
    }
    let verifier = OpenvpnServerVerifier {
        inner,
        algorithms: provider.signature_verification_algorithms,
        name: p.verify_x509_name.clone(),
        fingerprints,
        refusal: refusal.clone(),
    };
    // TLS 1.3 preferred, 1.2 accepted (stock servers may run with `tls-version-max 1.2`) -
    // unless the .ovpn file narrowed it with tls-version-min / tls-version-max.
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        match (p.tls_version_min.as_deref(), p.tls_version_max.as_deref()) {
            (Some("1.3"), _) => &[&rustls::version::TLS13],
            (_, Some("1.2")) => &[&rustls::version::TLS12],
            _ => rustls::ALL_VERSIONS,
        };
    let mut config = rustls::ClientConfig::builder_with_details(provider, time)
        .with_protocol_versions(versions)
        .map_err(|e| broken(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(|e| broken(&e))?;
    // OpenVPN sends no SNI.
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The engine's control-channel wrapper for the profile, with the key that came with the
/// private key in the request.
fn client_wrap(req: &ConnectRequest) -> Result<ClientWrap, String> {
    let p = &req.profile;
    let Some(wrap) = &p.control_wrap else {
        return Ok(ClientWrap::None);
    };
    let (_, key_text) = crate::secrets::split(&req.key_pem);
    let reimport = |what: String| {
        format!(
            "profile {}: {what}; import the profile again (`gatehouse remove {}`, then `gatehouse import FILE.ovpn`)",
            p.name, p.name
        )
    };
    let Some(key_text) = key_text else {
        return Err(reimport(format!(
            "its {} key is missing",
            wrap.kind.as_str()
        )));
    };
    let bad_key =
        |e: &dyn std::fmt::Display| reimport(format!("its {} key: {e}", wrap.kind.as_str()));
    Ok(match wrap.kind {
        WrapKind::TlsAuth => {
            let digest = match &wrap.digest {
                None => TlsAuthDigest::Sha1,
                Some(d) => TlsAuthDigest::from_openvpn_name(d)
                    .ok_or_else(|| reimport(format!("tls-auth digest {d:?} is not supported")))?,
            };
            ClientWrap::TlsAuth {
                key: StaticKey::from_pem(key_text).map_err(|e| bad_key(&e))?,
                direction: wrap.direction.map(|d| {
                    if d == 0 {
                        KeyDirection::Normal
                    } else {
                        KeyDirection::Inverse
                    }
                }),
                digest,
            }
        }
        WrapKind::TlsCrypt => ClientWrap::TlsCrypt {
            key: StaticKey::from_pem(key_text).map_err(|e| bad_key(&e))?,
        },
        WrapKind::TlsCryptV2 => ClientWrap::TlsCryptV2 {
            key: TlsCryptV2ClientKey::from_pem(key_text).map_err(|e| bad_key(&e))?,
        },
    })
}
