//! UDP in batches: one `recvmmsg` fills up to [`quinn_udp::BATCH_SIZE`] buffers, each of which
//! may hold many datagrams of one sender (UDP GRO); [`SendQueue`] packs consecutive datagrams
//! to the same peer into one `sendmsg` (UDP GSO).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

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

/// Binds `count` sockets to `addr`, one per worker, in one `SO_REUSEPORT` group with
/// `buffer`-byte kernel buffers (best effort: the kernel caps them). With more than one
/// socket on an IPv4 address the group steers every datagram by its source address to
/// socket `((ip * multiplier) >> 16) % count`, the worker holding that peer's tunnels;
/// returns whether that steering is on (else the kernel's flow hash spreads them).
pub fn bind_group(
    addr: SocketAddr,
    count: usize,
    buffer: usize,
    multiplier: u32,
) -> io::Result<(Vec<std::net::UdpSocket>, bool)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let count = count.max(1);
    let mut socks = Vec::with_capacity(count);
    for _ in 0..count {
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
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
    let steered = count > 1
        && addr.is_ipv4()
        && crate::sockopt::steer_by_source(&socks[0], multiplier, count as u32).is_ok();
    #[cfg(not(target_os = "linux"))]
    let steered = {
        let _ = multiplier;
        false
    };
    Ok((socks, steered))
}

/// A UDP socket read and written in batches.
pub struct BatchSocket {
    sock: UdpSocket,
    state: UdpSocketState,
    /// [`GSO_MAX_SEGMENT_V4`] or [`GSO_MAX_SEGMENT`].
    max_segment: usize,
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
        let max_segment = if sock.local_addr()?.is_ipv4() {
            GSO_MAX_SEGMENT_V4
        } else {
            GSO_MAX_SEGMENT
        };
        let sock = UdpSocket::from_std(sock)?;
        Ok(Self {
            sock,
            state,
            max_segment,
        })
    }

    /// The tokio socket (local address, plain sends).
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// Datagrams one GSO send may carry on this host (1 without GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Waits until a datagram is waiting.
    pub async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await
    }

    /// Receives what is waiting into `batch` without blocking (WouldBlock when nothing is).
    pub fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<()> {
        batch.filled = 0;
        let RecvBatch { bufs, metas, .. } = batch;
        let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] = std::array::from_fn(|_| {
            // Replaced below; an empty slice until then.
            IoSliceMut::new(&mut [])
        });
        for (s, b) in slices.iter_mut().zip(bufs.iter_mut()) {
            *s = IoSliceMut::new(&mut b[..]);
        }
        let n = self.sock.try_io(Interest::READABLE, || {
            self.state.recv((&self.sock).into(), &mut slices, metas)
        })?;
        batch.filled = n;
        Ok(())
    }

    /// Receives what is waiting, waiting for the first datagram.
    pub async fn recv(&self, batch: &mut RecvBatch) -> io::Result<()> {
        loop {
            self.readable().await?;
            match self.try_recv(batch) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    fn try_send(&self, t: &Transmit<'_>) -> io::Result<()> {
        self.sock.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.sock).into(), t)
        })
    }
}

/// Buffers for one batched receive.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    metas: [RecvMeta; quinn_udp::BATCH_SIZE],
    filled: usize,
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
        }
    }

    /// Number of datagrams in the last receive.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True when the last receive brought nothing.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// The datagram at `i` of the last receive, in arrival order: (sender, bytes).
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
                data.chunks(stride).map(move |d| (m.addr, d))
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

    /// Queues `bytes` for `to`, sending what was queued first when it cannot join the batch.
    pub fn push(&mut self, sock: &BatchSocket, to: SocketAddr, bytes: &[u8]) {
        let max = sock.max_gso_segments();
        if bytes.len() > sock.max_segment || max <= 1 {
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
        let t = Transmit {
            destination: to,
            ecn: None,
            contents: &self.buf,
            segment_size: (self.count > 1).then_some(self.segment),
            src_ip: None,
        };
        match sock.try_send(&t) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.dropped += self.count,
            Err(_) if self.count > 1 => {
                // GSO refused (an MTU below the segment size, a device without it): send the
                // datagrams one by one instead.
                let (seg, buf) = (self.segment, std::mem::take(&mut self.buf));
                for d in buf.chunks(seg) {
                    self.send_one(sock, to, d);
                }
                self.buf = buf;
            }
            Err(_) => {}
        }
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }

    fn send_one(&mut self, sock: &BatchSocket, to: SocketAddr, bytes: &[u8]) {
        match sock.sock.try_send_to(bytes, to) {
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
