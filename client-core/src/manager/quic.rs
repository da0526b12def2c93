//! One connection attempt over QUIC (docs/quic.md): quinn with TLS 1.3 and the profile's
//! client certificate, the gateway's configuration as capsules on the control stream, IP
//! packets in DATAGRAM frames.
//!
//! Roaming needs nothing from the gateway's side of this file: the UDP socket is bound to
//! the wildcard address and never connected, and quinn sends without a source address, so
//! when the underlay address changes the kernel sends from the new one and the gateway
//! migrates the connection (RFC 9000 section 9). The driver watches the source address the
//! kernel would pick (at once when the OS announces a network change, see `path.rs`; and by
//! asking every 250 ms where nothing is announced) and, when it changes, moves the endpoint
//! to a fresh socket: quinn then switches to a new connection ID and sends a PING at once, so
//! the gateway learns the new path even when the tunnel is idle. None of this is a
//! reconnect; the state stays Connected.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_engine::openvpn::tls::client_config;
use gatehouse_engine::pool6::Ipv6Assignment;
use gatehouse_engine::wire::capsule::{Capsule, CapsuleDecoder};
use ipnet::{Ipv4Net, Ipv6Net};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{
    ConnectionError, Endpoint, EndpointConfig, IdleTimeout, SendDatagramError, TransportConfig,
    VarInt,
};
use tokio::sync::mpsc;

use super::io::{BURST, Tun};
use super::path::{PathChange, PathWatch, wildcard_socket};
use super::verify::Refusal;
use super::{
    Command, ConnectRequest, Logger, ManagerOptions, Outcome, StatusSink, Target, credentials,
};
use crate::platform::{NetConfig, NetPlan};
use crate::profile::{ProtocolKind, Source, StoredProfile};
use crate::routing::{Pushed, RoutePlan};
use crate::status::{ConnectionState, Counters};

/// ALPN of the Gatehouse QUIC tunnel.
pub(crate) const ALPN: &[u8] = b"gatehouse-ip/1";
/// QUIC PING interval (docs/quic.md: keepalive).
const KEEPALIVE: Duration = Duration::from_secs(10);
/// QUIC idle timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the QUIC handshake may take before the next protocol is tried: a network that
/// drops UDP 443 shows no answer at all, and the user should not wait the full connect
/// timeout for the fallback.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the driver asks the kernel which source address reaches the gateway.
const PATH_CHECK: Duration = Duration::from_millis(250);
/// MTU when the gateway sends no TUNNEL_MTU capsule.
const DEFAULT_MTU: u16 = 1280;

/// Application close codes of docs/quic.md.
pub(crate) mod close {
    /// Normal close (user disconnect, gateway shutdown).
    pub(crate) const NORMAL: u32 = 0x0;
    /// The certificate was revoked.
    pub(crate) const REVOKED: u32 = 0x1;
    /// No address left in the pool.
    pub(crate) const POOL_EXHAUSTED: u32 = 0x2;
    /// The same certificate connected again elsewhere.
    pub(crate) const REPLACED: u32 = 0x3;
    /// Disconnected by the operator.
    pub(crate) const OPERATOR: u32 = 0x4;
    /// Protocol error on the control stream.
    pub(crate) const PROTOCOL: u32 = 0x5;
}

/// The configuration one READY capsule completes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TunnelConfig {
    /// Our address inside the tunnel.
    pub(crate) address: Option<Ipv4Addr>,
    /// Our IPv6 address inside the tunnel and its prefix length, when the gateway has an
    /// IPv6 pool.
    pub(crate) address6: Option<(Ipv6Addr, u8)>,
    /// Prefixes routed into the tunnel (split tunnel).
    pub(crate) routes: Vec<Ipv4Net>,
    /// IPv6 prefixes routed into the tunnel (a full range `::`-`ffff:..` is not one: with an
    /// IPv6 address, a full tunnel carries all IPv6, as [`crate::routing::plan`] decides).
    pub(crate) routes_v6: Vec<Ipv6Net>,
    /// Everything goes into the tunnel (a 0.0.0.0-255.255.255.255 range).
    pub(crate) full: bool,
    /// DNS servers.
    pub(crate) dns: Vec<IpAddr>,
    /// DNS search domains.
    pub(crate) search: Vec<String>,
    /// Tunnel MTU.
    pub(crate) mtu: u16,
}

/// Gathers capsules from the control stream into [`TunnelConfig`]s, one per READY.
#[derive(Debug, Default)]
pub(crate) struct ConfigReader {
    decoder: CapsuleDecoder,
    pending: TunnelConfig,
}

impl ConfigReader {
    /// Takes stream bytes; returns the configuration a READY in them completed (the last
    /// one if several did).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Option<TunnelConfig>, String> {
        self.decoder.push(bytes);
        let mut done = None;
        while let Some(c) = self
            .decoder
            .pop()
            .map_err(|e| format!("the gateway sent a malformed capsule: {e}"))?
        {
            match c {
                Capsule::AddressAssign(list) => {
                    self.pending.address = list.iter().find_map(|a| match a.address {
                        IpAddr::V4(v4) => Some(v4),
                        IpAddr::V6(_) => None,
                    });
                    self.pending.address6 = list.iter().find_map(|a| match a.address {
                        IpAddr::V6(v6) => Some((v6, a.prefix_len)),
                        IpAddr::V4(_) => None,
                    });
                }
                Capsule::RouteAdvertisement(ranges) => {
                    self.pending.routes.clear();
                    self.pending.routes_v6.clear();
                    self.pending.full = false;
                    for r in ranges {
                        // Routes cannot select a protocol; such a range is not ours to route.
                        if r.protocol != 0 {
                            continue;
                        }
                        match (r.start, r.end) {
                            (IpAddr::V4(start), IpAddr::V4(end)) => {
                                if start == Ipv4Addr::UNSPECIFIED && end == Ipv4Addr::BROADCAST {
                                    self.pending.full = true;
                                } else {
                                    self.pending.routes.extend(range_to_nets(start, end));
                                }
                            }
                            (IpAddr::V6(start), IpAddr::V6(end)) => {
                                // All of IPv6 comes as ::/0, which the route plan leaves to
                                // the full tunnel.
                                self.pending.routes_v6.extend(range_to_nets6(start, end));
                            }
                            _ => {}
                        }
                    }
                }
                Capsule::DnsConfig(dns) => {
                    self.pending.dns = dns.servers.into_iter().map(IpAddr::V4).collect();
                    self.pending.search = dns.search;
                }
                Capsule::TunnelMtu(mtu) => self.pending.mtu = mtu,
                Capsule::Hello => {}
                Capsule::Ready => {
                    let mut cfg = self.pending.clone();
                    if cfg.mtu == 0 {
                        cfg.mtu = DEFAULT_MTU;
                    }
                    done = Some(cfg);
                }
            }
        }
        Ok(done)
    }
}

/// The fewest prefixes covering `start..=end`.
pub(crate) fn range_to_nets(start: Ipv4Addr, end: Ipv4Addr) -> Vec<Ipv4Net> {
    blocks(u32::from(start).into(), u32::from(end).into(), 32)
        .filter_map(|(lo, len)| Ipv4Net::new(Ipv4Addr::from(lo as u32), len).ok())
        .collect()
}

/// The fewest IPv6 prefixes covering `start..=end`.
pub(crate) fn range_to_nets6(start: Ipv6Addr, end: Ipv6Addr) -> Vec<Ipv6Net> {
    blocks(start.into(), end.into(), 128)
        .filter_map(|(lo, len)| Ipv6Net::new(Ipv6Addr::from(lo), len).ok())
        .collect()
}

/// The aligned blocks (start, prefix length) covering `lo..=hi` in a `bits`-bit space,
/// largest first at each step.
fn blocks(mut lo: u128, hi: u128, bits: u32) -> impl Iterator<Item = (u128, u8)> {
    let mut done = lo > hi;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        // The largest block aligned at `lo` that stays inside the range (2^k addresses).
        let mut k = if lo == 0 {
            bits
        } else {
            lo.trailing_zeros().min(bits)
        };
        let last = |k: u32| {
            lo | if k >= 128 {
                u128::MAX
            } else {
                (1u128 << k) - 1
            }
        };
        while k > 0 && last(k) > hi {
            k -= 1;
        }
        let block = (lo, (bits - k) as u8);
        let end = last(k);
        match end.checked_add(1) {
            Some(next) if end < hi => lo = next,
            _ => done = true,
        }
        Some(block)
    })
}

/// How a QUIC attempt ends, before it is an [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// Retrying will not help.
    Fatal(String),
    /// Try again (or the next protocol).
    Lost(String),
}

impl End {
    fn outcome(self) -> Outcome {
        match self {
            End::Fatal(r) => Outcome::Fatal(r),
            End::Lost(r) => Outcome::Lost(r),
        }
    }
}

/// TLS alerts (RFC 8446 section 6.2) that mean the gateway refused our certificate.
fn certificate_alert(alert: u8) -> Option<&'static str> {
    Some(match alert {
        42 => "bad certificate",
        43 => "unsupported certificate",
        44 => "certificate revoked",
        45 => "certificate expired",
        46 => "certificate unknown",
        48 => "unknown CA",
        49 => "access denied",
        116 => "certificate required",
        _ => return None,
    })
}

/// What a closed connection means to the user.
pub(crate) fn explain(err: &ConnectionError, refusal: &Refusal) -> End {
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    let with = |what: &str, reason: &str| {
        // The gateway's phrase often says what the code already does.
        if reason.is_empty() || reason.eq_ignore_ascii_case(what) {
            what.to_owned()
        } else {
            format!("{what} ({reason})")
        }
    };
    match err {
        ConnectionError::ApplicationClosed(c) => {
            let reason = text(&c.reason);
            let code = c.error_code.into_inner();
            match u32::try_from(code).unwrap_or(u32::MAX) {
                close::REVOKED => End::Fatal(format!(
                    "the gateway refused this client: {}; ask your administrator for a new profile",
                    with("certificate revoked", &reason)
                )),
                close::NORMAL => End::Lost(with("the gateway closed the connection", &reason)),
                close::POOL_EXHAUSTED => End::Lost(with(
                    "the gateway has no address left for this client",
                    &reason,
                )),
                close::REPLACED => End::Lost(with(
                    "the same certificate connected again elsewhere",
                    &reason,
                )),
                close::OPERATOR => End::Lost(with("disconnected by the operator", &reason)),
                close::PROTOCOL => End::Lost(with("protocol error on the control stream", &reason)),
                _ => End::Lost(with(
                    &format!("the gateway closed with code {code}"),
                    &reason,
                )),
            }
        }
        ConnectionError::ConnectionClosed(c) => {
            let reason = text(&c.reason);
            let code = u64::from(c.error_code);
            // Crypto errors are 0x100 + the TLS alert (RFC 9001 section 4.8).
            if (0x100..0x200).contains(&code)
                && let Some(what) = certificate_alert((code - 0x100) as u8)
            {
                return End::Fatal(format!(
                    "the gateway refused this client: {}; ask your administrator for a new profile",
                    with(what, &reason)
                ));
            }
            End::Lost(with(
                &format!("the gateway closed the connection ({})", c.error_code),
                &reason,
            ))
        }
        ConnectionError::TransportError(e) => {
            // Our side failed the handshake: our verifier refused the gateway's certificate.
            if let Some(why) = refusal.take() {
                return End::Fatal(format!(
                    "{why}; not retrying until the profile or the server is fixed"
                ));
            }
            if u64::from(e.code) >= 0x100 && u64::from(e.code) < 0x200 {
                return End::Fatal(format!(
                    "the gateway's certificate was refused: {e}; not retrying until the profile or the server is fixed"
                ));
            }
            End::Lost(format!("QUIC error: {e}"))
        }
        ConnectionError::TimedOut => {
            End::Lost("no answer from the gateway (QUIC idle timeout)".into())
        }
        ConnectionError::Reset => {
            End::Lost("the gateway reset the connection (it restarted?)".into())
        }
        ConnectionError::VersionMismatch => {
            End::Lost("the gateway speaks no QUIC version this client does".into())
        }
        ConnectionError::LocallyClosed => End::Lost("connection closed".into()),
        ConnectionError::CidsExhausted => End::Lost("out of QUIC connection IDs".into()),
    }
}

/// The TLS configuration: the profile's CA check (as on the OpenVPN path), our certificate,
/// ALPN `gatehouse-ip/1`, no early data.
pub(crate) fn tls_config(
    req: &ConnectRequest,
    refusal: &Refusal,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let p = &req.profile;
    let (ca, chain, key) = credentials(req)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let time = Arc::new(rustls::time_provider::DefaultTimeProvider);
    let base = match p.source {
        Source::Gatehouse => client_config(provider, time, &ca, chain, key)
            .map_err(|e| format!("profile {}: {e}", p.name))?,
        Source::Ovpn => {
            super::tunnel::openvpn_tls_config(req, provider, time, &ca, chain, key, refusal)?
        }
    };
    let mut tls = (*base).clone();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    Ok(Arc::new(tls))
}

/// quinn's client configuration: keepalive, idle timeout, datagrams, no streams from the
/// gateway.
pub(crate) fn quic_config(tls: Arc<rustls::ClientConfig>) -> Result<quinn::ClientConfig, String> {
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|e| format!("TLS setup for QUIC failed: {e}"))?;
    let mut transport = TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEPALIVE))
        .max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok())
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(Some(4 << 20))
        .datagram_send_buffer_size(4 << 20);
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// The QUIC connection to the gateway and its control stream.
pub(crate) struct QuicLink {
    pub(crate) endpoint: Endpoint,
    pub(crate) conn: quinn::Connection,
    /// Kept open: finishing it would tell the gateway we are leaving.
    _control_send: quinn::SendStream,
    control: quinn::RecvStream,
    reader: ConfigReader,
    buf: Vec<u8>,
}

impl QuicLink {
    /// Dials `addr`, completes the handshake within `timeout` and opens the control stream.
    pub(crate) async fn connect(
        config: quinn::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
        timeout: Duration,
        refusal: &Refusal,
    ) -> Result<Self, End> {
        let socket = wildcard_socket(addr)
            .map_err(|e| End::Lost(format!("cannot open a UDP socket: {e}")))?;
        let endpoint = Endpoint::new(
            EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| End::Lost(format!("cannot open a UDP socket: {e}")))?;
        let connecting = endpoint
            .connect_with(config, addr, server_name)
            .map_err(|e| End::Fatal(format!("cannot connect to {server_name}: {e}")))?;
        let conn = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(explain(&e, refusal)),
            Err(_) => {
                endpoint.close(VarInt::from_u32(close::NORMAL), b"");
                return Err(End::Lost(format!(
                    "no QUIC answer from the gateway at {addr} within {}s (UDP blocked?)",
                    timeout.as_secs()
                )));
            }
        };
        let (mut send, control) = conn.open_bi().await.map_err(|e| explain(&e, refusal))?;
        // QUIC opens a stream only with its first bytes: HELLO tells the gateway where to
        // send the configuration.
        send.write_all(&Capsule::Hello.to_bytes())
            .await
            .map_err(|e| End::Lost(format!("cannot open the control stream: {e}")))?;
        Ok(Self {
            endpoint,
            conn,
            _control_send: send,
            control,
            reader: ConfigReader::default(),
            buf: vec![0; 16 * 1024],
        })
    }

    /// Waits for the next complete configuration on the control stream (cancel-safe: bytes
    /// read stay in the reader).
    pub(crate) async fn next_config(&mut self, refusal: &Refusal) -> Result<TunnelConfig, End> {
        loop {
            match self.control.read(&mut self.buf).await {
                Ok(Some(n)) => {
                    if let Some(cfg) = self.reader.push(&self.buf[..n]).map_err(End::Lost)? {
                        return Ok(cfg);
                    }
                }
                Ok(None) => {
                    return Err(self.ended(refusal, "the gateway closed the control stream"));
                }
                Err(quinn::ReadError::ConnectionLost(e)) => return Err(explain(&e, refusal)),
                Err(e) => return Err(self.ended(refusal, &format!("control stream: {e}"))),
            }
        }
    }

    /// Why the connection ended, or `fallback` if it did not (yet).
    fn ended(&self, refusal: &Refusal, fallback: &str) -> End {
        match self.conn.close_reason() {
            Some(e) => explain(&e, refusal),
            None => End::Lost(fallback.to_owned()),
        }
    }

    /// Closes with `code` and gives the close a moment to leave.
    pub(crate) async fn close(&self, code: u32, reason: &str) {
        self.conn.close(VarInt::from_u32(code), reason.as_bytes());
        let _ = tokio::time::timeout(Duration::from_millis(500), self.endpoint.wait_idle()).await;
    }
}

/// Runs one QUIC attempt to completion.
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
    status.connecting(&profile.name, ProtocolKind::Quic);
    let refusal = Refusal::default();
    let config = match tls_config(req, &refusal).and_then(quic_config) {
        Ok(c) => c,
        Err(reason) => return Outcome::Fatal(reason),
    };
    let gateway = format!("{}:{}", target.host, target.port);
    let addr = match super::tunnel::resolve(&target.host, target.port).await {
        Ok(a) => a,
        Err(e) => return Outcome::Lost(format!("cannot resolve {gateway}: {e}")),
    };
    log.info(format!("{}: connecting to {addr} over quic", profile.name));
    let start = Instant::now();
    let handshake = options.connect_timeout.min(HANDSHAKE_TIMEOUT);
    let link = tokio::select! {
        r = QuicLink::connect(config, addr, &target.host, handshake, &refusal) => r,
        cmd = commands.recv() => return stopped(cmd),
    };
    let mut link = match link {
        Ok(l) => l,
        Err(end) => return end.outcome(),
    };
    log.info(format!(
        "{}: QUIC handshake with {addr} done in {} ms; waiting for the configuration",
        profile.name,
        start.elapsed().as_millis()
    ));
    let connect_deadline = tokio::time::Instant::from_std(start + options.connect_timeout);
    let first = tokio::select! {
        r = link.next_config(&refusal) => r,
        _ = tokio::time::sleep_until(connect_deadline) => Err(End::Lost(format!(
            "the gateway at {addr} sent no configuration within {}s",
            options.connect_timeout.as_secs()
        ))),
        cmd = commands.recv() => {
            let outcome = stopped(cmd);
            link.close(close::NORMAL, "user disconnected").await;
            return outcome;
        }
    };
    let mut current = match first {
        Ok(c) => c,
        Err(end) => {
            link.close(close::NORMAL, "").await;
            return end.outcome();
        }
    };
    let Some(address) = current.address else {
        link.close(close::PROTOCOL, "no ADDRESS_ASSIGN before READY")
            .await;
        return Outcome::Lost("the gateway assigned no virtual address".into());
    };
    let (mut tun, routes) = match bring_up(options, &current, profile, addr.ip(), net) {
        Ok(t) => t,
        Err(reason) => {
            link.close(close::NORMAL, "client could not configure its network")
                .await;
            return Outcome::Fatal(reason);
        }
    };
    let address6 = current
        .address6
        .map(|(a, _)| format!(", IPv6 {a}"))
        .unwrap_or_default();
    log.info(format!(
        "{}: connected to {gateway} over quic; address {address}{address6}, {}, DNS {:?}, MTU {}",
        profile.name,
        super::routes::describe(&routes),
        current.dns,
        current.mtu
    ));
    status.set(ConnectionState::Connected {
        profile: profile.name.clone(),
        since: unix_now(),
        address,
        gateway: gateway.clone(),
        protocol: ProtocolKind::Quic,
    });

    let conn = link.conn.clone();
    // The OS announces a new network at once (Linux); the poll below finds it elsewhere.
    let mut path = PathWatch::new(&options.tun_name, addr);
    let mut path_tick = tokio::time::interval(PATH_CHECK);
    let mut counter_tick = tokio::time::interval(Duration::from_secs(1));
    let mut counters = Counters::default();
    // Packets too large for the path, a full send buffer or a failed TUN write lost.
    let mut lost: u64 = 0;
    let mut lost_logged: u64 = 0;
    loop {
        tun.flush().await;
        lost += tun.take_drops();
        tokio::select! {
            r = conn.read_datagram() => {
                // This datagram and those already waiting go to TUN in one batch.
                let mut next = Some(r);
                let mut taken = 0;
                while let Some(r) = next {
                    let d = match r {
                        Ok(d) => d,
                        Err(e) => return explain(&e, &refusal).outcome(),
                    };
                    counters.rx_bytes += d.len() as u64;
                    counters.rx_packets += 1;
                    tun.push(&d).await;
                    taken += 1;
                    next = if taken < RX_BATCH { waiting_datagram(&conn) } else { None };
                }
            }
            r = tun.recv() => {
                if r.is_err() {
                    // A device going away shows on the next read too; do not spin on it.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                for i in 0..=BURST {
                    if i > 0 && !tun.try_recv() {
                        break;
                    }
                    for p in tun.packets() {
                        match conn.send_datagram(p.to_vec().into()) {
                            Ok(()) => {
                                counters.tx_bytes += p.len() as u64;
                                counters.tx_packets += 1;
                            }
                            Err(SendDatagramError::TooLarge) => lost += 1,
                            Err(SendDatagramError::ConnectionLost(e)) => {
                                return explain(&e, &refusal).outcome();
                            }
                            Err(e) => {
                                link.close(close::NORMAL, "").await;
                                return Outcome::Lost(format!("the gateway takes no datagrams: {e}"));
                            }
                        }
                    }
                }
            }
            r = link.next_config(&refusal) => {
                let next = match r {
                    Ok(c) => c,
                    Err(end) => return end.outcome(),
                };
                if next.address != current.address || next.address6 != current.address6 {
                    link.close(close::NORMAL, "address changed").await;
                    return Outcome::Lost("the gateway assigned a new address".into());
                }
                net.undo();
                // IPv6 routes live on the TUN device, outside the journal: new ones are
                // added, ones the gateway no longer advertises stay until the tunnel ends
                // (the gateway drops what it no longer routes).
                let applied = plan(options, &next, profile, addr.ip(), address, net).and_then(|(p, routes)| {
                    net.apply(&p).map_err(|e| format!("configuring routes/DNS failed: {e}"))?;
                    Ok(routes)
                });
                let routes = match applied {
                    Ok(r) => r,
                    Err(e) => {
                        link.close(close::NORMAL, "client could not configure its network").await;
                        return Outcome::Fatal(e);
                    }
                };
                log.info(format!(
                    "{}: the gateway changed the configuration: {}, DNS {:?}",
                    profile.name,
                    super::routes::describe(&routes),
                    next.dns
                ));
                current = next;
            }
            change = path.moved() => migrate(&link, addr, &change, profile, status, log),
            _ = path_tick.tick() => {
                if let Some(change) = path.check(Vec::new()) {
                    migrate(&link, addr, &change, profile, status, log);
                }
            }
            cmd = commands.recv() => {
                let outcome = stopped(cmd);
                link.close(close::NORMAL, "user disconnected").await;
                return outcome;
            }
            _ = counter_tick.tick() => {
                status.counters(counters);
                if lost > lost_logged {
                    tracing::debug!(lost, "packets dropped: too large for the path, or a failed TUN write");
                    lost_logged = lost;
                }
            }
        }
    }
}

/// The path to the gateway moved: the endpoint moves to a fresh socket. quinn then takes a
/// new connection ID and PINGs at once, so the gateway validates the new path before any data
/// needs it. No new handshake; the state stays Connected.
fn migrate(
    link: &QuicLink,
    addr: SocketAddr,
    change: &PathChange,
    profile: &crate::profile::StoredProfile,
    status: &StatusSink,
    log: &Logger,
) {
    log.info(format!(
        "{}: path changed: {change}; the QUIC connection migrates (no new handshake)",
        profile.name
    ));
    status.path_changed();
    if let Err(e) = wildcard_socket(addr).and_then(|s| link.endpoint.rebind(s)) {
        log.warn(format!(
            "{}: cannot move to a new UDP socket: {e}",
            profile.name
        ));
    }
}

/// Datagrams moved to TUN per loop turn before the other sources get theirs.
const RX_BATCH: usize = 64;

/// A datagram the connection already holds, without waiting.
fn waiting_datagram(
    conn: &quinn::Connection,
) -> Option<<quinn::ReadDatagram<'_> as Future>::Output> {
    let read = std::pin::pin!(conn.read_datagram());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match read.poll(&mut cx) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}

/// The outcome of a command that arrived while connected or connecting.
fn stopped(cmd: Option<Command>) -> Outcome {
    match cmd {
        Some(Command::Disconnect(ack)) => Outcome::UserDisconnect(ack),
        Some(Command::Connect(next, ack)) => Outcome::Replaced(next, ack),
        None => Outcome::Lost("manager stopped".into()),
    }
}

/// The routes for `cfg` and what the host needs for them. With an IPv6 address from the
/// gateway, the TUN device gets it (and the IPv6 prefixes the plan keeps) first.
fn plan(
    options: &ManagerOptions,
    cfg: &TunnelConfig,
    profile: &StoredProfile,
    server: IpAddr,
    address: Ipv4Addr,
    net: &mut NetConfig,
) -> Result<(NetPlan, RoutePlan), String> {
    let pushed = Pushed {
        routes: cfg.routes.clone(),
        routes_v6: cfg.routes_v6.clone(),
        full: cfg.full,
        ipv6: false,
    };
    // The capsules name no IPv6 gateway: every IPv6 route is a device route.
    let v6 = cfg.address6.and_then(|(a, len)| {
        Some(Ipv6Assignment {
            address: a,
            subnet: Ipv6Net::new(a, len).ok()?,
            gateway: a,
            routes: cfg.routes_v6.clone(),
        })
    });
    let tun = &options.tun_name;
    let routes = super::routes::plan_dual_stack(profile, net, tun, pushed, v6.as_ref())?;
    let plan = super::routes::net_plan(tun, &routes, server, address, &cfg.dns, &[]);
    Ok((plan, routes))
}

fn bring_up(
    options: &ManagerOptions,
    cfg: &TunnelConfig,
    profile: &StoredProfile,
    server: IpAddr,
    net: &mut NetConfig,
) -> Result<(Tun, RoutePlan), String> {
    let address = cfg
        .address
        .ok_or_else(|| "the gateway assigned no virtual address".to_owned())?;
    let dev = Tun::create(&options.tun_name, address, 32, cfg.mtu)?;
    let (plan, routes) = plan(options, cfg, profile, server, address, net)?;
    net.apply(&plan)
        .map_err(|e| format!("configuring routes/DNS failed: {e}"))?;
    Ok((dev, routes))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_engine::wire::capsule::{AssignedAddress, DnsConfig, IpRange};

    #[test]
    fn ranges_become_prefixes() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let nets = |a, b| {
            range_to_nets(v4(a), v4(b))
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(nets("192.168.10.0", "192.168.10.255"), ["192.168.10.0/24"]);
        assert_eq!(nets("10.0.0.1", "10.0.0.1"), ["10.0.0.1/32"]);
        assert_eq!(
            nets("10.0.0.1", "10.0.0.6"),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(nets("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(
            nets("255.255.255.255", "255.255.255.255"),
            ["255.255.255.255/32"]
        );
        assert!(range_to_nets(v4("10.0.0.2"), v4("10.0.0.1")).is_empty());
    }

    #[test]
    fn ipv6_ranges_become_prefixes() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let nets = |a, b| {
            range_to_nets6(v6(a), v6(b))
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            nets("fd00:6a7e:1::", "fd00:6a7e:1:0:ffff:ffff:ffff:ffff"),
            ["fd00:6a7e:1::/64"]
        );
        assert_eq!(
            nets("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ["::/0"]
        );
        assert_eq!(
            nets(
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
            ),
            ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]
        );
        assert_eq!(
            nets("fd00::1", "fd00::6"),
            ["fd00::1/128", "fd00::2/127", "fd00::4/127", "fd00::6/128"]
        );
        assert_eq!(
            nets("8000::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ["8000::/1"]
        );
    }

    #[test]
    fn a_configuration_completes_on_ready_only() {
        let mut bytes = Vec::new();
        Capsule::AddressAssign(vec![
            AssignedAddress {
                request_id: 0,
                address: IpAddr::V4(Ipv4Addr::new(10, 8, 0, 6)),
                prefix_len: 32,
            },
            AssignedAddress {
                request_id: 0,
                address: IpAddr::V6("fd00:6a7e:1::6".parse().unwrap()),
                prefix_len: 128,
            },
        ])
        .encode(&mut bytes);
        Capsule::RouteAdvertisement(vec![
            IpRange {
                start: IpAddr::V4(Ipv4Addr::new(192, 168, 10, 0)),
                end: IpAddr::V4(Ipv4Addr::new(192, 168, 10, 255)),
                protocol: 0,
            },
            IpRange {
                start: IpAddr::V6("fd00:6a7e:1::".parse().unwrap()),
                end: IpAddr::V6("fd00:6a7e:1:0:ffff:ffff:ffff:ffff".parse().unwrap()),
                protocol: 0,
            },
            IpRange {
                start: IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)),
                end: IpAddr::V4(Ipv4Addr::new(172, 16, 0, 255)),
                protocol: 6,
            },
        ])
        .encode(&mut bytes);
        Capsule::DnsConfig(DnsConfig {
            servers: vec![Ipv4Addr::new(10, 8, 0, 1)],
            search: vec!["corp".into()],
        })
        .encode(&mut bytes);
        let mut r = ConfigReader::default();
        assert_eq!(r.push(&bytes), Ok(None));
        assert_eq!(
            r.push(&Capsule::Ready.to_bytes()).unwrap().unwrap(),
            TunnelConfig {
                address: Some(Ipv4Addr::new(10, 8, 0, 6)),
                address6: Some(("fd00:6a7e:1::6".parse().unwrap(), 128)),
                routes: vec!["192.168.10.0/24".parse().unwrap()],
                routes_v6: vec!["fd00:6a7e:1::/64".parse().unwrap()],
                full: false,
                dns: vec![IpAddr::V4(Ipv4Addr::new(10, 8, 0, 1))],
                search: vec!["corp".into()],
                mtu: DEFAULT_MTU,
            }
        );
        // A full tunnel and an MTU in a later configuration.
        let mut again = Vec::new();
        Capsule::RouteAdvertisement(vec![
            IpRange {
                start: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                end: IpAddr::V4(Ipv4Addr::BROADCAST),
                protocol: 0,
            },
            IpRange {
                start: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                end: IpAddr::V6(Ipv6Addr::from(u128::MAX)),
                protocol: 0,
            },
        ])
        .encode(&mut again);
        Capsule::TunnelMtu(1350).encode(&mut again);
        Capsule::Ready.encode(&mut again);
        let cfg = r.push(&again).unwrap().unwrap();
        assert!(cfg.full && cfg.routes.is_empty());
        // All of IPv6 is ::/0, which the route plan turns into the full tunnel's IPv6 half.
        assert_eq!(cfg.routes_v6, vec!["::/0".parse::<Ipv6Net>().unwrap()]);
        assert_eq!(
            cfg.address6.map(|(a, _)| a.to_string()).as_deref(),
            Some("fd00:6a7e:1::6")
        );
        // A configuration with no IPv6 address forgets the old one.
        let mut v4_only = Vec::new();
        Capsule::AddressAssign(vec![AssignedAddress {
            request_id: 0,
            address: IpAddr::V4(Ipv4Addr::new(10, 8, 0, 6)),
            prefix_len: 32,
        }])
        .encode(&mut v4_only);
        Capsule::Ready.encode(&mut v4_only);
        assert_eq!(r.push(&v4_only).unwrap().unwrap().address6, None);
        assert_eq!(cfg.mtu, 1350);
        // Garbage ends the stream.
        assert!(r.push(&[0x01, 0x01, 0x09]).is_err());
    }

    #[test]
    fn close_codes_follow_the_wire_format() {
        use quinn::ApplicationClose;
        let app = |code: u32, reason: &str| {
            ConnectionError::ApplicationClosed(ApplicationClose {
                error_code: VarInt::from_u32(code),
                reason: reason.as_bytes().to_vec().into(),
            })
        };
        let refusal = Refusal::default();
        match explain(
            &app(close::REVOKED, "certificate of alice revoked"),
            &refusal,
        ) {
            End::Fatal(r) => assert!(r.contains("revoked") && r.contains("alice"), "{r}"),
            other => panic!("{other:?}"),
        }
        match explain(&app(close::REVOKED, "Certificate revoked"), &refusal) {
            End::Fatal(r) => assert!(!r.contains("(Certificate revoked)"), "said twice: {r}"),
            other => panic!("{other:?}"),
        }
        for code in [
            close::NORMAL,
            close::POOL_EXHAUSTED,
            close::REPLACED,
            close::OPERATOR,
            close::PROTOCOL,
            0x77,
        ] {
            assert!(
                matches!(explain(&app(code, ""), &refusal), End::Lost(_)),
                "{code}"
            );
        }
        assert!(matches!(
            explain(&ConnectionError::TimedOut, &refusal),
            End::Lost(_)
        ));
    }
}

#[cfg(test)]
#[path = "quic_loopback.rs"]
mod loopback;
