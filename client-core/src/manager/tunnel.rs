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
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::verify::{OpenvpnServerVerifier, Refusal};
use super::{
    Command, ConnectRequest, Logger, ManagerOptions, OsEntropy, Outcome, StatusSink, Target,
    credentials,
};
use crate::platform::{NetConfig, NetPlan};
use crate::profile::{ProtocolKind, Source, WrapKind};
use crate::status::{ConnectionState, Counters};

enum Link {
    Udp(UdpSocket),
    Tcp {
        rd: tokio::net::tcp::OwnedReadHalf,
        wr: tokio::net::tcp::OwnedWriteHalf,
        deframer: TcpDeframer,
        framed: Vec<u8>,
    },
}

impl Link {
    async fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Udp(s) => match s.send(packet).await {
                Ok(_) => Ok(()),
                // ICMP unreachable from a gateway that is down: keepalive decides.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
                Err(e) => Err(e),
            },
            Link::Tcp { wr, framed, .. } => {
                framed.clear();
                tcp_frame(packet, framed);
                wr.write_all(framed).await
            }
        }
    }
}

/// Default port of each protocol when a profile names none.
pub(crate) fn default_port(proto: ProtocolKind) -> u16 {
    match proto {
        ProtocolKind::OpenvpnTcp => 443,
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
        // IKEv2 has its own driver (manager/ikev2.rs); QUIC is not built yet.
        return Outcome::Lost(format!("{proto} is not supported by this client yet"));
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
    let mut net_buf = vec![0u8; 65536];
    let mut tun_buf = vec![0u8; 65536];
    let mut tun: Option<tun_rs::AsyncDevice> = None;
    let mut counters = Counters::default();
    let mut drops = ControlDrops { log, count: 0 };
    let mut closed_reason: Option<String> = None;
    let mut stop: Option<Outcome> = None;
    let mut counter_tick = tokio::time::interval(Duration::from_secs(1));
    let connect_deadline = start + options.connect_timeout;

    loop {
        let now = Instant::now();
        while session.poll_transmit(now, &mut out) {
            if let Err(e) = link.send(&out).await {
                return Outcome::Lost(format!("sending to the gateway failed: {e}"));
            }
        }
        while let Some(ev) = session.poll_event() {
            match ev {
                ClientEvent::Connected(push) => {
                    let full = push.redirect_gateway || profile.redirect_gateway;
                    match bring_up(options, &push, full, addr.ip(), net) {
                        Ok(dev) => tun = Some(dev),
                        Err(reason) => {
                            session.disconnect(now);
                            return Outcome::Fatal(reason);
                        }
                    }
                    let since = unix_now();
                    log.info(format!(
                        "{}: connected to {target} over {proto}; address {}, routes {:?}{}, DNS {:?}, cipher {}",
                        profile.name,
                        push.address,
                        push.routes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                        if full { " + all traffic (redirect-gateway)" } else { "" },
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
            r = recv(&mut link, &mut net_buf) => {
                let frames = match r {
                    Ok(f) => f,
                    Err(e) => return Outcome::Lost(format!("connection to the gateway broke: {e}")),
                };
                let now = Instant::now();
                for frame in frames.iter(&link, &net_buf) {
                    handle_packet(&mut session, now, frame, &mut dec, tun.as_ref(), &mut counters, &mut drops).await;
                }
                if let Link::Tcp { deframer, .. } = &mut link {
                    loop {
                        match deframer.pop() {
                            Ok(Some(frame)) => {
                                let f = frame.to_vec();
                                handle_packet(&mut session, now, &f, &mut dec, tun.as_ref(), &mut counters, &mut drops).await;
                            }
                            Ok(None) => break,
                            Err(e) => return Outcome::Lost(format!("bad framing from the gateway: {e}")),
                        }
                    }
                }
            }
            r = async { match &tun { Some(t) => t.recv(&mut tun_buf).await, None => std::future::pending().await } } => {
                if let Ok(n) = r {
                    let now = Instant::now();
                    if session.encrypt(now, &tun_buf[..n], &mut out).is_ok() {
                        counters.tx_bytes += n as u64;
                        counters.tx_packets += 1;
                        if let Err(e) = link.send(&out).await {
                            return Outcome::Lost(format!("sending to the gateway failed: {e}"));
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                session.handle_timeout(Instant::now());
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
            _ = counter_tick.tick() => status.counters(counters),
        }
    }
}

/// What one read produced: for UDP one datagram in the buffer; for TCP the bytes went into the
/// deframer (popped by the caller).
enum Frames {
    Udp(usize),
    Tcp,
}

impl Frames {
    fn iter<'a>(&self, _link: &Link, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        match self {
            Frames::Udp(n) => Some(&buf[..*n]).into_iter(),
            Frames::Tcp => None.into_iter(),
        }
    }
}

async fn recv(link: &mut Link, buf: &mut [u8]) -> std::io::Result<Frames> {
    match link {
        Link::Udp(s) => loop {
            match s.recv(buf).await {
                Ok(n) => return Ok(Frames::Udp(n)),
                // ICMP errors from a gateway that is down; keepalive decides when to give up.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        },
        Link::Tcp { rd, deframer, .. } => {
            let n = rd.read(buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the gateway closed the TCP connection",
                ));
            }
            deframer.push(&buf[..n]);
            Ok(Frames::Tcp)
        }
    }
}

async fn handle_packet(
    session: &mut ClientSession,
    now: Instant,
    bytes: &[u8],
    dec: &mut Vec<u8>,
    tun: Option<&tun_rs::AsyncDevice>,
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
                let _ = t.send(p).await;
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

async fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    // The gateway serves IPv4 first.
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
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
                framed: Vec::with_capacity(2048),
            })
        }
        _ => {
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().map_err(std::io::Error::other)?
            } else {
                "[::]:0".parse().map_err(std::io::Error::other)?
            };
            let s = UdpSocket::bind(bind).await?;
            s.connect(addr).await?;
            Ok(Link::Udp(s))
        }
    }
}

fn bring_up(
    options: &ManagerOptions,
    push: &PushReply,
    redirect_gateway: bool,
    server: IpAddr,
    net: &mut NetConfig,
) -> Result<tun_rs::AsyncDevice, String> {
    let prefix = ipnet::ipv4_mask_to_prefix(push.netmask).unwrap_or(32);
    let dev = tun_rs::DeviceBuilder::new()
        .name(&options.tun_name)
        .ipv4(push.address, prefix, None)
        .mtu(push.tun_mtu)
        .build_async()
        .map_err(|e| {
            format!(
                "cannot create TUN device {}: {e}; the client service must run as root (or with CAP_NET_ADMIN)",
                options.tun_name
            )
        })?;
    let plan = NetPlan {
        tun: options.tun_name.clone(),
        routes: push.routes.clone(),
        redirect_gateway,
        server,
        tunnel_gateway: push.gateway,
        dns: push.dns.clone(),
    };
    net.apply(&plan)
        .map_err(|e| format!("configuring routes/DNS failed: {e}"))?;
    Ok(dev)
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
fn openvpn_tls_config(
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
