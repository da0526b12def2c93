//! UDP in batches: one `recvmmsg` fills up to [`quinn_udp::BATCH_SIZE`] buffers, each of which
//! may hold many datagrams of one sender (UDP GRO); [`SendQueue`] packs consecutive datagrams
//! to the same peer into one `sendmsg` (UDP GSO).

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;

/// The largest datagram packed into a GSO batch on an IPv6 socket: each segment must fit the
/// path MTU unfragmented (1500-byte Ethernet). Larger datagrams (an IKE_AUTH with a
/// certificate chain) go out alone and the kernel fragments them, as before.
pub const GSO_MAX_SEGMENT: usize = 1452;
/// The same on an IPv4 socket (20-byte IP header instead of 40).
pub const GSO_MAX_SEGMENT_V4: usize = 1472;
/// Bytes one GSO send may carry (the kernel's limit is 64 KiB including headers).
const GSO_MAX_BYTES: usize = 60_000;
/// Size of one receive buffer: a GRO batch of up to 64 KiB.
const RECV_BUF: usize = 65536;
/// Peers whose reply source a wildcard-bound socket remembers; past this the table starts
/// over (a flood of spoofed sources costs a table, and replies then leave as before, from the
/// address the routing table picks, until each peer is heard from again).
const REPLY_FROM_MAX: usize = 16_384;

/// What a listener binds: every address of both families (one dual-stack `[::]` socket, or
/// `0.0.0.0` where the kernel has no IPv6), or exactly one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// IPv4 and IPv6, every address: `[::]` with `IPV6_V6ONLY` off. IPv4 peers appear as
    /// plain IPv4 addresses (see [`canonical`]).
    Any(u16),
    /// Exactly this address: `0.0.0.0` is IPv4 only, `::` IPv6 only.
    Exactly(SocketAddr),
}

impl Bind {
    /// `Exactly(ip:port)` when an address is given, else `Any(port)`.
    pub fn new(listen: Option<IpAddr>, port: u16) -> Self {
        match listen {
            Some(ip) => Self::Exactly(SocketAddr::new(ip, port)),
            None => Self::Any(port),
        }
    }

    /// The IPv4-only address a dual-stack bind falls back to.
    pub fn fallback(self) -> Option<SocketAddr> {
        match self {
            Self::Any(port) => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
            Self::Exactly(_) => None,
        }
    }

    /// The address bound first: `[::]:port` for [`Bind::Any`].
    pub fn first(self) -> SocketAddr {
        match self {
            Self::Any(port) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            Self::Exactly(a) => a,
        }
    }
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any(port) => write!(f, "[::]:{port} (IPv4+IPv6)"),
            Self::Exactly(a) => write!(f, "{a}"),
        }
    }
}

/// Whether a failed dual-stack bind means the kernel has no IPv6 (then IPv4 alone is bound).
pub fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::EAFNOSUPPORT | libc_errno::EADDRNOTAVAIL | libc_errno::EPROTONOSUPPORT)
    )
}

/// errno values (Linux numbering; only compared, never produced).
mod libc_errno {
    pub const EPROTONOSUPPORT: i32 = 93;
    pub const EAFNOSUPPORT: i32 = 97;
    pub const EADDRNOTAVAIL: i32 = 99;
}

/// A peer address as the engine sees it: an IPv4 peer of a dual-stack socket
/// (`::ffff:a.b.c.d`) as plain IPv4.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// `to` in the family of a socket bound to `local`: IPv4 peers of an IPv6 socket as
/// IPv4-mapped addresses.
fn in_family(local_v6: bool, to: SocketAddr) -> SocketAddr {
    match to {
        SocketAddr::V4(a) if local_v6 => {
            SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
        }
        a => a,
    }
}

/// Creates one socket for `addr`: `IPV6_V6ONLY` off for `[::]` when `dual`, on for every
/// other IPv6 address.
pub fn socket_for(
    addr: SocketAddr,
    dual: bool,
    ty: socket2::Type,
    proto: socket2::Protocol,
) -> io::Result<socket2::Socket> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        sock.set_only_v6(!dual)?;
    }
    Ok(sock)
}

/// Binds `count` sockets as `bind` says (see [`bind_group`]); a dual-stack bind on a host
/// without IPv6 binds `0.0.0.0` instead, and says so in the returned flag.
/// Returns (sockets, steered, fell back to IPv4).
pub fn bind_group_as(
    bind: Bind,
    count: usize,
    buffer: usize,
    multiplier: u32,
) -> io::Result<(Vec<std::net::UdpSocket>, bool, bool)> {
    let dual = matches!(bind, Bind::Any(_));
    match bind_group_on(bind.first(), dual, count, buffer, multiplier) {
        Ok((s, st)) => Ok((s, st, false)),
        Err(e) if dual && no_ipv6(&e) => {
            let v4 = bind.fallback().unwrap_or_else(|| bind.first());
            let (s, st) = bind_group_on(v4, false, count, buffer, multiplier)?;
            Ok((s, st, true))
        }
        Err(e) => Err(e),
    }
}

/// Binds `count` sockets to `addr`, one per worker, in one `SO_REUSEPORT` group with
/// `buffer`-byte kernel buffers (best effort: the kernel caps them). With more than one
/// socket the group steers every datagram by its source address to socket
/// `((ip * multiplier) >> 16) % count` (`ip`: an IPv4 source, or the last 32 bits of an IPv6
/// one), the worker holding that peer's tunnels; returns whether that steering is on (else
/// the kernel's flow hash spreads them). An IPv6 `addr` is bound IPv6-only.
pub fn bind_group(
    addr: SocketAddr,
    count: usize,
    buffer: usize,
    multiplier: u32,
) -> io::Result<(Vec<std::net::UdpSocket>, bool)> {
    bind_group_on(addr, false, count, buffer, multiplier)
}

fn bind_group_on(
    addr: SocketAddr,
    dual: bool,
    count: usize,
    buffer: usize,
    multiplier: u32,
) -> io::Result<(Vec<std::net::UdpSocket>, bool)> {
    use socket2::{Protocol, Type};
    let count = count.max(1);
    let mut socks = Vec::with_capacity(count);
    for _ in 0..count {
        let sock = socket_for(addr, dual, Type::DGRAM, Protocol::UDP)?;
        let _ = sock.set_recv_buffer_size(buffer);
        let _ = sock.set_send_buffer_size(buffer);
        if count > 1 {
            #[cfg(unix)]
            sock.set_reuse_port(true)?;
        }
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        socks.push(std::net::UdpSocket::from(sock));
    }
    #[cfg(target_os = "linux")]
    let steered =
        count > 1 && crate::sockopt::steer_by_source(&socks[0], multiplier, count as u32).is_ok();
    #[cfg(not(target_os = "linux"))]
    let steered = {
        let _ = multiplier;
        false
    };
    Ok((socks, steered))
}

/// A UDP socket read and written in batches.
///
/// Registered with the runtime for reading only: sends never wait (a full buffer drops the
/// datagram and counts it), so the thread is not woken each time the kernel frees send
/// buffer space, which for a socket registered for writing too means once per send.
pub struct BatchSocket {
    sock: Registered,
    state: UdpSocketState,
    /// Bound to a wildcard address: replies must name their source.
    wildcard: bool,
    /// An IPv6 socket: IPv4 peers (of a dual-stack one) are addressed IPv4-mapped.
    v6: bool,
    /// For a wildcard-bound socket on a host with several addresses (a floating address, a
    /// secondary one): the local address each peer last sent to, so that replies leave from
    /// the address the client dialled and not from the one the routing table would pick,
    /// which the client's connected socket (or NAT) would drop.
    ///
    /// Most hosts are reached at one address only: the first local address seen is kept in
    /// `usual`, and until a datagram arrives at another one (`mixed`), no peer is recorded
    /// and no lock is taken per datagram.
    reply_from: Mutex<HashMap<SocketAddr, IpAddr>>,
    usual: OnceLock<IpAddr>,
    mixed: AtomicBool,
    /// Configured sources by peer address (a site connection's `local_address`): used for a
    /// peer not heard from yet, so that our first IKE_SA_INIT to it leaves from the address
    /// it expects. Once it has sent to us, the address it dialled wins (`reply_from`).
    pins: RwLock<HashMap<IpAddr, IpAddr>>,
    pinned: AtomicBool,
}

impl BatchSocket {
    /// Wraps a bound socket (made non-blocking here). Turns on GRO where the kernel has it and
    /// keeps the kernel's default path-MTU behaviour (large datagrams are fragmented locally).
    pub fn new(sock: std::net::UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new((&sock).into())?;
        // quinn-udp forbids fragmentation (QUIC sizes its own packets); OpenVPN and IKE rely
        // on it for datagrams above the MTU, so go back to the kernel default.
        #[cfg(target_os = "linux")]
        crate::sockopt::allow_fragmentation(&sock)?;
        #[cfg(target_os = "linux")]
        crate::sockopt::no_tos_cmsg(&sock)?;
        let local = sock.local_addr()?;
        let sock = Registered::new(sock)?;
        Ok(Self {
            sock,
            state,
            wildcard: local.ip().is_unspecified(),
            v6: local.is_ipv6(),
            reply_from: Mutex::new(HashMap::new()),
            usual: OnceLock::new(),
            mixed: AtomicBool::new(false),
            pins: RwLock::new(HashMap::new()),
            pinned: AtomicBool::new(false),
        })
    }

    /// Replaces the configured sources: datagrams to a peer of `pins` (any port) that has not
    /// sent to this socket leave from its local address. Only for wildcard-bound sockets (a
    /// socket bound to one address sends from it). Peers that send to us are recorded from
    /// now on, so a peer that dialled another address of ours is answered from that one.
    pub fn set_source_pins(&self, pins: HashMap<IpAddr, IpAddr>) {
        let pins: HashMap<IpAddr, IpAddr> = pins
            .into_iter()
            .map(|(peer, local)| (peer.to_canonical(), local.to_canonical()))
            .collect();
        let any = !pins.is_empty();
        *self.pins.write().unwrap_or_else(|e| e.into_inner()) = pins;
        if any {
            self.mixed.store(true, Ordering::Release);
        }
        self.pinned.store(any, Ordering::Release);
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Datagrams one GSO send may carry on this host (1 without GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Waits until a datagram is waiting.
    pub async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await
    }

    /// Ready when a datagram may be waiting (the read that follows tells); until then the
    /// waker of `cx` is kept, the last one given (one reader per socket).
    pub fn poll_readable(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.sock.poll_readable(cx)
    }

    /// Receives what is waiting into `batch` without blocking (WouldBlock when nothing is).
    pub fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<()> {
        self.recv_into(batch, quinn_udp::BATCH_SIZE, false)
    }

    /// [`try_recv`](Self::try_recv) of at most `max` datagrams; a read that brings fewer
    /// clears the readiness, as [`recv_up_to`](Self::recv_up_to) does.
    pub fn try_recv_up_to(&self, batch: &mut RecvBatch, max: usize) -> io::Result<()> {
        self.recv_into(batch, max, true)
    }

    /// One `recvmmsg` of up to `max` datagrams into `batch`; `drained`: a read that brings
    /// fewer clears the socket's readiness.
    fn recv_into(&self, batch: &mut RecvBatch, max: usize, drained: bool) -> io::Result<()> {
        let max = max.clamp(1, quinn_udp::BATCH_SIZE);
        batch.filled = 0;
        batch.asked = max;
        let RecvBatch { bufs, metas, .. } = batch;
        let mut read = |s: quinn_udp::UdpSockRef<'_>| {
            // A low-rate read of one or two: headers for those only (few.rs).
            #[cfg(target_os = "linux")]
            if max <= crate::few::FEW {
                let mut slices = io_slices::<{ crate::few::FEW }>(bufs, max);
                return crate::few::recv_few(
                    self.sock.std(),
                    &mut slices[..max],
                    &mut metas[..max],
                );
            }
            let mut slices = io_slices::<{ quinn_udp::BATCH_SIZE }>(bufs, max);
            self.state.recv(s, &mut slices[..max], &mut metas[..max])
        };
        let n = if drained {
            self.sock.try_read_drained(&mut read, max)?
        } else {
            self.sock.try_read(read)?
        };
        batch.filled = n;
        if self.wildcard {
            self.note_destinations(&metas[..n]);
        }
        Ok(())
    }

    /// Remembers the local address each sender of `metas` reached.
    fn note_destinations(&self, metas: &[RecvMeta]) {
        if !self.mixed.load(Ordering::Acquire) {
            let mut dsts = metas.iter().filter_map(|m| m.dst_ip);
            let Some(first) = dsts.next() else { return };
            let usual = *self.usual.get_or_init(|| first);
            if first == usual && dsts.all(|d| d == usual) {
                // Every peer so far dialled the same address: nothing to record.
                return;
            }
        }
        let mut map = self.reply_from.lock().unwrap_or_else(|e| e.into_inner());
        for m in metas {
            let Some(dst) = m.dst_ip else { continue };
            if map.get(&m.addr) != Some(&dst) {
                if map.len() >= REPLY_FROM_MAX {
                    map.clear();
                }
                map.insert(m.addr, dst);
            }
        }
        // Peers that dialled the usual address before this are not in the map; replies to
        // them fall back to `usual` (see `source_for`).
        self.mixed.store(true, Ordering::Release);
    }

    /// The source address replies to `to` must carry (wildcard-bound sockets only).
    fn source_for(&self, to: SocketAddr) -> Option<IpAddr> {
        if !self.wildcard {
            return None;
        }
        let usual = self.usual.get().copied();
        if !self.mixed.load(Ordering::Acquire) {
            return usual;
        }
        let heard = {
            let map = self.reply_from.lock().unwrap_or_else(|e| e.into_inner());
            map.get(&to).copied()
        };
        if heard.is_some() {
            return heard;
        }
        if self.pinned.load(Ordering::Acquire) {
            let pins = self.pins.read().unwrap_or_else(|e| e.into_inner());
            if let Some(local) = pins.get(&to.ip().to_canonical()) {
                return Some(*local);
            }
        }
        usual
    }

    /// Receives what is waiting, waiting for the first datagram.
    pub async fn recv(&self, batch: &mut RecvBatch) -> io::Result<()> {
        self.recv_up_to(batch, quinn_udp::BATCH_SIZE).await
    }

    /// [`recv`](Self::recv) of at most `max` datagrams (1 to a full batch). A worker at a low
    /// packet rate asks for two: a lone datagram's read then prepares two message headers
    /// instead of 32, and one datagram back still shows that the socket was drained.
    ///
    /// A read that brings fewer than it asked for emptied the socket: its readiness is cleared
    /// then (where the runtime allows it), so the next wait does not begin with a `recvmmsg`
    /// that finds nothing - at low load that read would stand between a datagram's answer and
    /// its way out.
    pub async fn recv_up_to(&self, batch: &mut RecvBatch, max: usize) -> io::Result<()> {
        loop {
            self.readable().await?;
            match self.recv_into(batch, max, true) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    fn try_send(&self, t: &Transmit<'_>) -> io::Result<()> {
        self.sock.try_write(|s| self.state.try_send(s, t))
    }
}

/// `N` slices over the first `max` of `bufs` (the rest empty).
fn io_slices<const N: usize>(bufs: &mut [Box<[u8]>], max: usize) -> [IoSliceMut<'_>; N] {
    let mut it = bufs.iter_mut().take(max);
    std::array::from_fn(|_| match it.next() {
        Some(b) => IoSliceMut::new(&mut b[..]),
        None => IoSliceMut::new(&mut []),
    })
}

/// The socket as registered with the runtime. On Unix for reading only: sends never wait, and
/// a socket registered for writing too wakes its thread each time the kernel frees send
/// buffer space - once per datagram sent at low load.
#[cfg(unix)]
struct Registered(tokio::io::unix::AsyncFd<std::net::UdpSocket>);

#[cfg(unix)]
impl Registered {
    #[allow(unsafe_code)]
    fn new(sock: std::net::UdpSocket) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        // SAFETY: the AsyncFd owns the socket, whose descriptor stays open and the same until
        // the AsyncFd (and with it the socket) is dropped.
        let fd =
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(sock, Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        Ok(Self(fd))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    async fn readable(&self) -> io::Result<()> {
        // The guard is dropped without clearing readiness: `try_read` clears it on WouldBlock.
        self.0.readable().await.map(|_| ())
    }

    fn poll_readable(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        // As `readable`: the guard goes without clearing readiness.
        self.0.poll_read_ready(cx).map_ok(|_| ())
    }

    fn try_read<R>(
        &self,
        f: impl FnOnce(quinn_udp::UdpSockRef<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        self.0.try_io(Interest::READABLE, |s| f(s.into()))
    }

    /// [`try_read`](Self::try_read) of a batch of datagrams: when fewer than a full batch
    /// came, the socket was drained and its readiness is cleared (as tokio's `read_buf` does
    /// after a short read). A datagram that arrived after the read raised a new event, which
    /// clearing does not lose: the runtime clears only the readiness this read observed.
    fn try_read_drained(
        &self,
        f: &mut dyn FnMut(quinn_udp::UdpSockRef<'_>) -> io::Result<usize>,
        asked: usize,
    ) -> io::Result<usize> {
        let mut ready = std::pin::pin!(self.0.readable());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut guard = match ready.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(g) => g?,
            std::task::Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
        };
        match guard.try_io(|s| f(s.get_ref().into())) {
            Ok(Ok(n)) => {
                if n < asked {
                    guard.clear_ready();
                }
                Ok(n)
            }
            Ok(Err(e)) => Err(e),
            Err(_would_block) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn try_write<R>(
        &self,
        f: impl FnOnce(quinn_udp::UdpSockRef<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        f(self.0.get_ref().into())
    }

    fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.get_ref().send_to(bytes, to)
    }

    /// The socket itself (for sends, which never wait for readiness).
    #[cfg(target_os = "linux")]
    fn std(&self) -> &std::net::UdpSocket {
        self.0.get_ref()
    }
}

/// Elsewhere: tokio's socket, registered for both.
#[cfg(not(unix))]
struct Registered(tokio::net::UdpSocket);

#[cfg(not(unix))]
impl Registered {
    fn new(sock: std::net::UdpSocket) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(Self(tokio::net::UdpSocket::from_std(sock)?))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    async fn readable(&self) -> io::Result<()> {
        self.0.readable().await
    }

    fn poll_readable(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        self.0.poll_recv_ready(cx)
    }

    fn try_read<R>(
        &self,
        f: impl FnOnce(quinn_udp::UdpSockRef<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        self.0.try_io(Interest::READABLE, || f((&self.0).into()))
    }

    /// Here a plain [`try_read`](Self::try_read): the readiness clears on the next read.
    fn try_read_drained(
        &self,
        f: &mut dyn FnMut(quinn_udp::UdpSockRef<'_>) -> io::Result<usize>,
        _asked: usize,
    ) -> io::Result<usize> {
        self.try_read(f)
    }

    fn try_write<R>(
        &self,
        f: impl FnOnce(quinn_udp::UdpSockRef<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        self.0.try_io(Interest::WRITABLE, || f((&self.0).into()))
    }

    fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.try_send_to(bytes, to)
    }
}

/// Buffers for one batched receive.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    metas: [RecvMeta; quinn_udp::BATCH_SIZE],
    filled: usize,
    /// Datagrams the last receive asked for (1..=BATCH_SIZE).
    asked: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// [`quinn_udp::BATCH_SIZE`] buffers of 64 KiB.
    pub fn new() -> Self {
        Self {
            bufs: (0..quinn_udp::BATCH_SIZE)
                .map(|_| vec![0u8; RECV_BUF].into_boxed_slice())
                .collect(),
            metas: [RecvMeta::default(); quinn_udp::BATCH_SIZE],
            filled: 0,
            asked: quinn_udp::BATCH_SIZE,
        }
    }

    /// Number of datagrams in the last receive.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True when the last receive brought all it asked for (more may be waiting); false
    /// means the socket was drained when it was read.
    pub fn is_full(&self) -> bool {
        self.filled == self.asked
    }

    /// True when the last receive brought nothing.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// The datagrams of the last receive, in arrival order: (sender, bytes). An IPv4 sender
    /// of a dual-stack socket is a plain IPv4 address.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.metas[..self.filled]
            .iter()
            .zip(self.bufs.iter())
            .flat_map(|(m, b)| {
                let data = &b[..m.len.min(b.len())];
                let stride = if m.stride == 0 {
                    data.len().max(1)
                } else {
                    m.stride
                };
                let from = canonical(m.addr);
                data.chunks(stride).map(move |d| (from, d))
            })
    }
}

/// Why a queued datagram was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendDrop {
    /// The socket's send buffer was full.
    Full,
}

/// Datagrams waiting to go out on one socket, packed for GSO: consecutive datagrams to the
/// same peer with the same size (the last may be shorter) travel in one `sendmsg`.
pub struct SendQueue {
    buf: Vec<u8>,
    dest: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// The last datagram was shorter than `segment`: the batch takes no more.
    closed: bool,
    /// Datagrams not sent since the last [`take_drops`](Self::take_drops).
    dropped: usize,
}

impl Default for SendQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl SendQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(GSO_MAX_BYTES + GSO_MAX_SEGMENT_V4),
            dest: None,
            segment: 0,
            count: 0,
            closed: false,
            dropped: 0,
        }
    }

    /// Queues `bytes` for `to` (as [`RecvBatch::iter`] named it), sending what was queued
    /// first when it cannot join the batch.
    pub fn push(&mut self, sock: &BatchSocket, to: SocketAddr, bytes: &[u8]) {
        // By the peer's family: an IPv4 peer of a dual-stack socket has a 20-byte header.
        let max_segment = if to.is_ipv4() {
            GSO_MAX_SEGMENT_V4
        } else {
            GSO_MAX_SEGMENT
        };
        let to = in_family(sock.v6, to);
        let max = sock.max_gso_segments();
        if bytes.len() > max_segment || max <= 1 {
            self.flush(sock);
            self.send_one(sock, to, bytes);
            return;
        }
        let joins = self.dest == Some(to)
            && !self.closed
            && bytes.len() <= self.segment
            && self.count < max
            && self.buf.len() + bytes.len() <= GSO_MAX_BYTES;
        if !joins {
            self.flush(sock);
            self.dest = Some(to);
            self.segment = bytes.len();
        }
        self.buf.extend_from_slice(bytes);
        self.count += 1;
        if bytes.len() < self.segment {
            self.closed = true;
        }
    }

    /// Sends what is queued.
    pub fn flush(&mut self, sock: &BatchSocket) {
        let Some(to) = self.dest.take() else {
            return;
        };
        if self.count == 1 {
            // One datagram: no GSO, and (Linux) the lighter `sendmsg` of `send_one`.
            let buf = std::mem::take(&mut self.buf);
            self.send_one(sock, to, &buf);
            self.buf = buf;
        } else {
            let t = Transmit {
                destination: to,
                ecn: None,
                contents: &self.buf,
                segment_size: Some(self.segment),
                src_ip: sock.source_for(to),
            };
            match sock.try_send(&t) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.dropped += self.count,
                Err(_) => {
                    // GSO refused (an MTU below the segment size, a device without it): send
                    // the datagrams one by one instead.
                    let (seg, buf) = (self.segment, std::mem::take(&mut self.buf));
                    for d in buf.chunks(seg) {
                        self.send_one(sock, to, d);
                    }
                    self.buf = buf;
                }
            }
        }
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }

    fn send_one(&mut self, sock: &BatchSocket, to: SocketAddr, bytes: &[u8]) {
        let r = match sock.source_for(to) {
            // From the address the peer dialled (see `BatchSocket::reply_from`), with that
            // one control message only (few.rs).
            #[cfg(target_os = "linux")]
            Some(src) => crate::few::send_from(sock.sock.std(), bytes, to, src),
            #[cfg(not(target_os = "linux"))]
            Some(src) => sock
                .try_send(&Transmit {
                    destination: to,
                    ecn: None,
                    contents: bytes,
                    segment_size: None,
                    src_ip: Some(src),
                })
                .map(|()| bytes.len()),
            None => sock.sock.send_to(bytes, to),
        };
        match r {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.dropped += 1,
            // Unreachable peers and the like: UDP is best effort; the protocols retransmit.
            Err(_) => {}
        }
    }

    /// Datagrams dropped because the socket was full, since the last call.
    pub fn take_drops(&mut self) -> usize {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `recv_up_to(max)` within 5 s; the number of datagrams it brought.
    async fn recv_within(gw: &BatchSocket, batch: &mut RecvBatch, max: usize, what: &str) -> usize {
        tokio::time::timeout(Duration::from_secs(5), gw.recv_up_to(batch, max))
            .await
            .unwrap_or_else(|_| panic!("not woken: {what}"))
            .expect("received");
        batch.iter().count()
    }

    /// The first datagram the gateway's next read brings (within 2 s): sender and bytes.
    async fn heard(gw: &BatchSocket, what: &str) -> (SocketAddr, Vec<u8>) {
        let mut batch = RecvBatch::new();
        tokio::time::timeout(Duration::from_secs(2), gw.recv(&mut batch))
            .await
            .unwrap_or_else(|_| panic!("the gateway hears {what}"))
            .expect("recv");
        let (from, data) = batch.iter().next().expect("one datagram");
        (from, data.to_vec())
    }

    /// The client (connected to the gateway) says hello; the gateway hears it: from whom.
    async fn hello(client: &std::net::UdpSocket, gw: &BatchSocket) -> SocketAddr {
        client.send(b"hello").expect("send");
        let (from, data) = heard(gw, "the client").await;
        assert_eq!(data, b"hello");
        from
    }

    /// One datagram alone and a GSO batch of two go back to `from`; the connected `client`
    /// gets all three (it takes only datagrams from the address it dialled).
    fn answer_lone_and_pair(
        gw: &BatchSocket,
        from: SocketAddr,
        client: &std::net::UdpSocket,
        dialled: &str,
    ) {
        let mut q = SendQueue::new();
        q.push(gw, from, b"one");
        q.flush(gw);
        q.push(gw, from, b"two");
        q.push(gw, from, b"tw2");
        q.flush(gw);
        assert_eq!(q.take_drops(), 0);
        let mut buf = [0u8; 64];
        for want in [&b"one"[..], b"two", b"tw2"] {
            let n = client
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no reply from {dialled}: {e}"));
            assert_eq!(&buf[..n], want, "dialled {dialled}");
        }
    }

    /// A short read clears the socket's readiness; what arrives afterwards (between reads,
    /// or while nobody waits) still wakes the next `recv`, and a full batch leaves the rest
    /// for the next read.
    #[tokio::test(flavor = "current_thread")]
    async fn a_drained_read_loses_no_later_datagram() {
        let gw = BatchSocket::new(std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .expect("wrap it");
        let to = gw.local_addr().expect("its address");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the peer");
        let mut batch = RecvBatch::new();
        let full = quinn_udp::BATCH_SIZE;
        for round in 0..50u8 {
            peer.send_to(&[round; 40], to).expect("send");
            recv_within(&gw, &mut batch, full, "the datagram").await;
            let got: Vec<_> = batch.iter().map(|(_, d)| d.to_vec()).collect();
            assert_eq!(got, vec![vec![round; 40]], "round {round}");
            assert!(!batch.is_full());
        }
        // More than a batch at once: the first read is full, the rest follows.
        let n = full + 5;
        for i in 0..n {
            peer.send_to(&[i as u8; 40], to).expect("send");
        }
        let mut seen = 0;
        while seen < n {
            seen += recv_within(&gw, &mut batch, full, "the rest").await;
        }
        assert_eq!(seen, n);
        // Two slots (a worker at a low rate): one datagram back drained the socket, two
        // may not have, and the next read takes the rest.
        peer.send_to(&[1; 40], to).expect("send");
        assert_eq!(recv_within(&gw, &mut batch, 2, "one").await, 1);
        assert!(!batch.is_full());
        for i in 0..5u8 {
            peer.send_to(&[i; 40], to).expect("send");
        }
        let mut seen = recv_within(&gw, &mut batch, 2, "five").await;
        assert!(batch.is_full(), "two of five taken");
        while seen < 5 {
            seen += recv_within(&gw, &mut batch, full, "the rest is readable").await;
        }
        assert_eq!(seen, 5);
    }

    /// A gateway socket bound to 0.0.0.0 answers a client that dialled 127.0.0.2 from
    /// 127.0.0.2 (not from 127.0.0.1, which the routing table picks): the client's connected
    /// socket takes only datagrams from the address it dialled. The first peer dialled the
    /// usual address (no lock on its path); after the second made the socket's peers mixed,
    /// the first is still answered from its address.
    #[tokio::test(flavor = "current_thread")]
    async fn replies_leave_from_the_address_the_peer_dialled() {
        let gw = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind the gateway socket");
        let port = gw.local_addr().expect("its port").port();
        let gw = BatchSocket::new(gw).expect("wrap it");
        let mut peers = Vec::new();
        for dialled in ["127.0.0.2", "127.0.0.1"] {
            let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the client");
            client
                .connect((dialled, port))
                .expect("connect to the gateway");
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let from = hello(&client, &gw).await;
            answer_lone_and_pair(&gw, from, &client, dialled);
            assert_eq!(
                gw.mixed.load(Ordering::Acquire),
                dialled == "127.0.0.1",
                "peers recorded only once an address other than the usual one is dialled"
            );
            peers.push((client, from));
        }
        let (first, from) = &peers[0];
        let mut q = SendQueue::new();
        q.push(&gw, *from, b"again");
        q.flush(&gw);
        let mut buf = [0u8; 64];
        let n = first
            .recv(&mut buf)
            .expect("the first peer is answered from 127.0.0.2");
        assert_eq!(&buf[..n], b"again");
    }

    /// A configured source (`local_address`) is used for a peer not heard from yet - the
    /// first IKE_SA_INIT of a connection we initiate - on an IPv4 socket and on a dual-stack
    /// one; once the peer sends to another of our addresses, replies leave from that one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_pinned_source_is_used_until_the_peer_dials_another_address() {
        let mut binds = vec![std::net::UdpSocket::bind("0.0.0.0:0").expect("bind 0.0.0.0")];
        let dual = socket_for(
            "[::]:0".parse().expect("addr"),
            true,
            socket2::Type::DGRAM,
            socket2::Protocol::UDP,
        )
        .and_then(|s| {
            s.bind(&"[::]:0".parse::<SocketAddr>().expect("addr").into())?;
            Ok(std::net::UdpSocket::from(s))
        });
        // Hosts without IPv6 test the IPv4 socket only.
        binds.extend(dual.ok());
        for gw in binds {
            let port = gw.local_addr().expect("its port").port();
            let gw = BatchSocket::new(gw).expect("wrap it");
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the peer");
            peer.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let to = peer.local_addr().expect("peer addr");
            let pinned: IpAddr = "127.0.0.3".parse().expect("ip");
            gw.set_source_pins(HashMap::from([(to.ip(), pinned)]));
            let mut q = SendQueue::new();
            let mut buf = [0u8; 64];
            q.push(&gw, to, b"init");
            q.flush(&gw);
            let (n, from) = peer.recv_from(&mut buf).expect("the first datagram");
            assert_eq!(&buf[..n], b"init");
            assert_eq!(
                from,
                SocketAddr::new(pinned, port),
                "from the pinned address"
            );
            // The peer answers at another address of ours: that one wins.
            peer.send_to(b"hi", ("127.0.0.2", port)).expect("send");
            let (from_peer, _) = heard(&gw, "the peer").await;
            q.push(&gw, from_peer, b"reply");
            q.flush(&gw);
            let (n, from) = peer.recv_from(&mut buf).expect("the reply");
            assert_eq!(&buf[..n], b"reply");
            assert_eq!(from.ip(), "127.0.0.2".parse::<IpAddr>().expect("ip"));
            // Pins removed: a peer never heard from gets the routing table's choice.
            gw.set_source_pins(HashMap::new());
            let other = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            other
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            q.push(&gw, other.local_addr().expect("addr"), b"x");
            q.flush(&gw);
            let (_, from) = other.recv_from(&mut buf).expect("datagram");
            assert_ne!(from.ip(), pinned);
        }
    }

    /// The low-rate read of one or two datagrams (few.rs) describes them as the batch read
    /// does: the sender, the local address it dialled, and a GSO train the kernel handed over
    /// as one buffer, split at its stride - on an IPv4 socket and on a dual-stack one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_read_of_two_names_sender_destination_and_stride() {
        let mut binds = vec![std::net::UdpSocket::bind("0.0.0.0:0").expect("bind 0.0.0.0")];
        binds.extend(std::net::UdpSocket::bind("[::]:0").ok());
        for gw in binds {
            let port = gw.local_addr().expect("its port").port();
            let gw = BatchSocket::new(gw).expect("wrap it");
            let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the client");
            client.send_to(b"hello", ("127.0.0.2", port)).expect("send");
            let mut batch = RecvBatch::new();
            assert_eq!(recv_within(&gw, &mut batch, 2, "hello").await, 1);
            let (from, data) = batch.iter().next().expect("one");
            assert_eq!(
                (from, data),
                (client.local_addr().expect("addr"), &b"hello"[..])
            );
            assert_eq!(
                batch.metas[0].dst_ip.map(|ip| ip.to_canonical()),
                Some("127.0.0.2".parse().expect("ip")),
                "the address dialled"
            );
            // Three datagrams in one GSO send (where the host has GSO): the kernel keeps them
            // in one buffer for a GRO socket, and the read splits them at the stride.
            let tx = BatchSocket::new(std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
                .expect("wrap");
            let to: SocketAddr = ("127.0.0.1".parse::<IpAddr>().expect("ip"), port).into();
            let sent: Vec<Vec<u8>> = vec![vec![1; 100], vec![2; 100], vec![3; 40]];
            let mut q = SendQueue::new();
            for d in &sent {
                q.push(&tx, to, d);
            }
            q.flush(&tx);
            let mut got: Vec<Vec<u8>> = Vec::new();
            while got.len() < sent.len() {
                recv_within(&gw, &mut batch, 2, "the train").await;
                assert!(batch.metas[..batch.filled].iter().all(|m| m.len > 0));
                got.extend(batch.iter().map(|(_, d)| d.to_vec()));
            }
            assert_eq!(got, sent);
        }
    }

    /// A wildcard IPv6 socket names its source in an `IPV6_PKTINFO` message: a lone reply
    /// and a GSO pair reach an IPv6 peer from the address it dialled (hosts without IPv6
    /// skip this).
    #[tokio::test(flavor = "current_thread")]
    async fn an_ipv6_peer_is_answered_from_the_address_it_dialled() {
        let Ok(gw) = std::net::UdpSocket::bind("[::]:0") else {
            return;
        };
        let Ok(client) = std::net::UdpSocket::bind("[::1]:0") else {
            return;
        };
        let port = gw.local_addr().expect("its port").port();
        let gw = BatchSocket::new(gw).expect("wrap it");
        client.connect(("::1", port)).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let from = hello(&client, &gw).await;
        assert_eq!(gw.source_for(from), Some("::1".parse().expect("ip")));
        answer_lone_and_pair(&gw, from, &client, "::1");
    }
}
