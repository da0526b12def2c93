//! The client's packet I/O, batched as the gateway's is (`gatehouse-netio`): UDP reads take
//! many datagrams per system call (`recvmmsg`, UDP GRO) and sends to the gateway leave packed
//! into one GSO `sendmsg`; on Linux the TUN device runs with virtio-net offload, so one read
//! brings a whole TSO segment train (split into MTU packets) and decrypted packets reach the
//! kernel coalesced (GRO). Elsewhere TUN moves one packet per call, as before.
//!
//! The drivers (tunnel.rs, ikev2.rs) queue everything a loop turn produces and write it out
//! before they wait again, so batching never holds a packet back at low load.

use std::io;
use std::net::SocketAddr;

use gatehouse_netio::udp::{BatchSocket, RecvBatch, SendQueue};

/// Reads (each a batch) one source may take per loop turn before the others get theirs.
pub(crate) const BURST: usize = 8;
/// Socket buffer size asked of the kernel: bursts at Gbit/s overflow the 208 KiB default.
const SOCKET_BUFFER: usize = 4 << 20;

/// One UDP socket to the gateway: batched reads, GSO-packed sends.
pub(crate) struct UdpLink {
    pub(crate) sock: BatchSocket,
    pub(crate) batch: RecvBatch,
    queue: SendQueue,
}

impl UdpLink {
    /// Binds a socket on the wildcard address of `peer`'s family, any port.
    pub(crate) fn bind_for(peer: SocketAddr) -> io::Result<Self> {
        use socket2::{Domain, Protocol, Socket, Type};
        let bind: SocketAddr = if peer.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        sock.set_nonblocking(true)?;
        sock.bind(&bind.into())?;
        Ok(Self {
            sock: BatchSocket::new(sock.into())?,
            batch: RecvBatch::new(),
            queue: SendQueue::new(),
        })
    }

    /// Waits for datagrams and reads what is waiting into `self.batch`. ICMP errors (a gateway
    /// that is down) are waited out: keepalives and timeouts decide when to give up.
    pub(crate) async fn recv(&mut self) -> io::Result<()> {
        loop {
            match self.sock.recv(&mut self.batch).await {
                Err(e) if is_unreachable(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                r => return r,
            }
        }
    }

    /// Reads what is waiting without blocking; false when nothing was, or when the last read
    /// did not fill the batch (the socket was drained then; the next wait reads again after
    /// what this turn produced is out).
    pub(crate) fn try_recv(&mut self) -> bool {
        self.batch.is_full() && self.sock.try_recv(&mut self.batch).is_ok()
    }

    /// Queues one datagram for `to` (sent by [`flush`](Self::flush) at the latest).
    pub(crate) fn push(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.queue.push(&self.sock, to, bytes);
    }

    /// Sends what is queued; returns how many datagrams a full socket dropped since the last
    /// call (UDP is best effort: the tunnelled connections retransmit).
    pub(crate) fn flush(&mut self) -> usize {
        self.queue.flush(&self.sock);
        self.queue.take_drops()
    }
}

/// ICMP port/host unreachable surfacing on a socket read.
fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

/// The TUN device with its read and write batches.
pub(crate) struct Tun {
    dev: tun_rs::AsyncDevice,
    #[cfg(target_os = "linux")]
    rd: gatehouse_netio::tun::TunReader,
    #[cfg(target_os = "linux")]
    wr: gatehouse_netio::tun::TunWriter,
    /// One packet per read without offload.
    #[cfg(not(target_os = "linux"))]
    buf: Vec<u8>,
    #[cfg(not(target_os = "linux"))]
    len: usize,
    /// Packets a write error lost.
    dropped: u64,
}

impl Tun {
    /// Creates TUN `name` with `addr/prefix` and `mtu` (with offload where the kernel has it).
    pub(crate) fn create(
        name: &str,
        addr: std::net::Ipv4Addr,
        prefix: u8,
        mtu: u16,
    ) -> Result<Self, String> {
        let make = || {
            tun_rs::DeviceBuilder::new()
                .name(name)
                .ipv4(addr, prefix, None)
                .mtu(mtu)
        };
        let failed = |e: io::Error| {
            format!(
                "cannot create TUN device {name}: {e}; the client service must run as root (or with CAP_NET_ADMIN)"
            )
        };
        #[cfg(target_os = "linux")]
        {
            let (dev, offload) = gatehouse_netio::tun::build(make).map_err(failed)?;
            if !offload {
                tracing::debug!(
                    tun = name,
                    "the kernel refused TUN offload; one packet per read"
                );
            }
            Ok(Self {
                dev,
                rd: gatehouse_netio::tun::TunReader::new(usize::from(mtu)),
                wr: gatehouse_netio::tun::TunWriter::new(),
                dropped: 0,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let dev = make().build_async().map_err(failed)?;
            Ok(Self {
                dev,
                buf: vec![0; 65536],
                len: 0,
                dropped: 0,
            })
        }
    }

    /// Waits for and reads the next packet (or TSO batch).
    pub(crate) async fn recv(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            self.rd.recv(&self.dev).await
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.len = 0;
            self.len = self.dev.recv(&mut self.buf).await?;
            Ok(())
        }
    }

    /// Reads the next packet (or TSO batch) if one is waiting; false when none was.
    pub(crate) fn try_recv(&mut self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.rd.try_recv(&self.dev).is_ok()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// The packets of the last read.
    pub(crate) fn packets(&self) -> impl Iterator<Item = &[u8]> {
        #[cfg(target_os = "linux")]
        {
            self.rd.iter()
        }
        #[cfg(not(target_os = "linux"))]
        {
            std::iter::once(&self.buf[..self.len]).filter(|p| !p.is_empty())
        }
    }

    /// Queues a decrypted packet for the kernel (written by [`flush`](Self::flush) at the
    /// latest; without offload written at once).
    pub(crate) async fn push(&mut self, packet: &[u8]) {
        #[cfg(target_os = "linux")]
        {
            if self.wr.is_full() {
                self.flush().await;
            }
            self.wr.push(packet);
        }
        #[cfg(not(target_os = "linux"))]
        {
            if self.dev.send(packet).await.is_err() {
                self.dropped += 1;
            }
        }
    }

    /// Writes what is queued.
    pub(crate) async fn flush(&mut self) {
        #[cfg(target_os = "linux")]
        {
            self.wr.flush(&self.dev).await;
            self.dropped += self.wr.take_drops() as u64;
        }
    }

    /// Packets lost to TUN write errors since the last call.
    pub(crate) fn take_drops(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}
