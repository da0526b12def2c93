//! TCP transport: one task per connection turns the byte stream into OpenVPN packets (2-byte
//! length framing) for the gateway core, and writes the core's packets back framed.
//!
//! Both directions move in batches: a read hands the core every complete packet it brought
//! in one event, and the writer frames every packet waiting in its queue into one write.
//!
//! A port anyone can reach must not be exhaustible, so every connection is bounded:
//! - at accept, by a gateway-wide cap (`openvpn.tcp_max_connections`) and a cap per source
//!   address (`openvpn.tcp_max_per_ip`; IPv6 by /64), held as a [`Permit`] until the socket is
//!   closed; refused connections are reset at once and counted (`tcplimit`, `tcpperip`);
//! - in time: the OpenVPN handshake must complete within `openvpn.tcp_handshake_timeout`
//!   (`tcphandshake`), a connection that sends nothing for [`TcpTimeouts::idle`] or does not
//!   take what the gateway writes for as long is closed (`tcpidle`), and the kernel's TCP
//!   keepalive notices peers that vanished;
//! - when the session ends (disconnect, refusal, revocation, replacement, timeout: the core's
//!   `Event::StreamEnded`), the worker drops the connection's queue: the writer sends what is
//!   queued, shuts the connection down and the socket is closed;
//! - out of file descriptors (EMFILE/ENFILE), the accept loop sheds the waiting connection
//!   with a reserve descriptor, backs off briefly and keeps serving (`tcpaccept`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gatehouse_engine::gateway::{Drop as DropReason, Drops};
use gatehouse_engine::wire::openvpn::{WireError, tcp_complete_frames, tcp_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::worker::Msg;

/// Bytes a connection's outgoing queue holds (framed) before further packets are dropped, as
/// UDP would drop them: the client is not reading.
const OUT_LIMIT: usize = 1024 * 1024;
/// Capacity a queue keeps after a burst; beyond it the buffer is given back to the allocator.
const OUT_KEEP: usize = 256 * 1024;
/// How long a connection the gateway ends gets for its FIN once what was queued is written.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the accept loop pauses after the process ran out of file descriptors.
const FD_BACKOFF: Duration = Duration::from_millis(50);
/// TCP keepalive on accepted connections: first probe after this much silence...
const KEEPALIVE_TIME: Duration = Duration::from_secs(30);
/// ...then one probe this often...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and the connection is dropped by the kernel after this many unanswered.
const KEEPALIVE_RETRIES: u32 = 3;

/// How long connections may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct TcpTimeouts {
    /// From accept until the OpenVPN session is established.
    pub handshake: Duration,
    /// Without a byte from the client, or with a write the client does not take.
    pub idle: Duration,
}

impl TcpTimeouts {
    /// From `gateway.toml`: the handshake timeout as configured; idle 1.5 x `ping_restart`
    /// (90 s by default): a client pings every `ping` and gives up itself after
    /// `ping_restart` without traffic, so a connection silent for longer is dead. (The core
    /// ends a silent session after 2 x `ping_restart`, and then the connection with it.)
    pub fn from_config(o: &crate::config::OpenVpnConfig) -> Self {
        let parse = |s: &str, d: u64| {
            crate::config::parse_duration(s)
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(d))
        };
        let restart = parse(&o.ping_restart, 60);
        TcpTimeouts {
            handshake: parse(&o.tcp_handshake_timeout, 30),
            idle: restart + restart / 2,
        }
    }
}

/// What ended a connection.
#[derive(Debug)]
pub enum Ended {
    /// The client closed it.
    ByClient,
    /// The client broke the 2-byte length framing.
    Framing(String),
    /// Nothing from the client for [`TcpTimeouts::idle`].
    Idle,
    /// The client did not take what the gateway wrote for [`TcpTimeouts::idle`].
    Stalled,
    /// A read or write failed (reset, keepalive timeout).
    Error(String),
    /// The gateway closed it (the worker dropped its queue).
    ByGateway,
}

impl Ended {
    /// For the core and the log (`client disconnected reason=TCP ...`).
    pub fn reason(&self) -> String {
        match self {
            Ended::ByClient => "connection closed by client".into(),
            Ended::Framing(e) => format!("bad framing: {e}"),
            Ended::Idle => "idle timeout".into(),
            Ended::Stalled => "client not reading".into(),
            Ended::Error(e) => e.clone(),
            Ended::ByGateway => "closed by the gateway".into(),
        }
    }

    /// The drop counter this end counts in, if any.
    pub fn drop_reason(&self) -> Option<DropReason> {
        match self {
            Ended::Framing(_) => Some(DropReason::TcpFraming),
            Ended::Idle | Ended::Stalled => Some(DropReason::TcpIdle),
            _ => None,
        }
    }
}

/// What TCP connections tell the gateway core.
#[derive(Debug)]
pub enum TcpEvent {
    /// A new connection; the core sends packets for it through `tx`.
    Opened {
        /// Connection id.
        conn: u64,
        /// The client's address.
        remote: SocketAddr,
        /// Where the core's packets for it go.
        tx: OutSender,
    },
    /// Complete OpenVPN packets from the connection, still framed (2-byte length each).
    Packets {
        /// Connection id.
        conn: u64,
        /// One or more framed packets (a view into the reader's buffer).
        frames: Bytes,
    },
    /// `openvpn.tcp_handshake_timeout` passed since the connection was accepted: the worker
    /// closes it unless its session is established.
    HandshakeDeadline {
        /// Connection id.
        conn: u64,
    },
    /// The connection is closed.
    Closed {
        /// Connection id.
        conn: u64,
        /// Why.
        ended: Ended,
    },
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `tcp_max_connections` are open.
    Total,
    /// `tcp_max_per_ip` are open from its address.
    PerIp,
}

/// The key connections are counted under: an IPv4 address (also written as IPv4-mapped
/// IPv6), or an IPv6 /64 (one subscriber's prefix: counting single IPv6 addresses would
/// let one host open a cap's worth from each of its 2^64 addresses).
pub(super) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => IpAddr::V4(a),
        IpAddr::V6(a) => {
            let prefix = u128::from(a) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

/// The caps on open TCP connections, shared by the accept loop (which takes permits) and the
/// workers (whose connections give them back when their socket closes).
#[derive(Debug)]
pub(super) struct Limits {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<LimitState>,
}

#[derive(Debug, Default)]
struct LimitState {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Refused and shed connections (the accept loop's drop counters).
    drops: Drops,
}

impl Limits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Limits {
            max_total,
            max_per_ip,
            state: Mutex::new(LimitState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit for one more connection from `ip`, or why not (the refusal is counted).
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let key = ip_key(ip);
        let mut s = self.state();
        let refusal = if s.total >= self.max_total {
            Some((Refusal::Total, DropReason::TcpLimit))
        } else if s.per_ip.get(&key).copied().unwrap_or(0) >= self.max_per_ip {
            Some((Refusal::PerIp, DropReason::TcpPerIp))
        } else {
            None
        };
        if let Some((r, d)) = refusal {
            s.drops.count(d);
            return Err(r);
        }
        s.total += 1;
        *s.per_ip.entry(key).or_default() += 1;
        Ok(Permit {
            limits: self.clone(),
            key,
        })
    }

    fn release(&self, key: IpAddr) {
        let mut s = self.state();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_ip.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&key);
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state().total
    }

    /// Addresses (IPv6 /64s) with connections open now.
    #[cfg(test)]
    pub fn addresses(&self) -> usize {
        self.state().per_ip.len()
    }

    /// Counts `why`; returns the count so far (to log the 1st, 2nd, 4th, 8th...).
    pub fn count(&self, why: DropReason) -> u64 {
        let mut s = self.state();
        s.drops.count(why);
        s.drops.get(why)
    }

    /// How many were counted as `why`.
    pub fn count_of(&self, why: DropReason) -> u64 {
        self.state().drops.get(why)
    }

    /// The accept loop's drop counters.
    pub fn drops(&self) -> Drops {
        self.state().drops.clone()
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    pub fn max_per_ip(&self) -> usize {
        self.max_per_ip
    }
}

/// One open connection's place under the caps, given back when dropped (when both halves of
/// the connection are gone, i.e. its socket is closed).
#[derive(Debug)]
pub struct Permit {
    limits: Arc<Limits>,
    key: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.release(self.key);
    }
}

/// Whether an accept error means the process or system is out of file descriptors (or socket
/// memory): the waiting connection stays queued and the listener stays readable.
fn out_of_fds(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A descriptor held in reserve: freed when accept runs out of descriptors, so the waiting
/// connection can be accepted and closed instead of filling the backlog.
fn reserve_fd() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Closes a refused connection with a reset: nothing is left in the kernel for it.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Accepts connections forever and hands each to the worker its client's address steers to
/// (as its UDP traffic would be), which runs the connection's tasks on its own thread.
pub async fn accept_loop(
    listener: TcpListener,
    workers: Arc<Vec<mpsc::Sender<Msg>>>,
    limits: Arc<Limits>,
) {
    let mut next_conn = 1u64;
    let mut reserve = reserve_fd();
    loop {
        let (stream, remote) = match listener.accept().await {
            // An IPv4 client of the dual-stack listener as plain IPv4 (caps, logs, engine).
            Ok((s, r)) => (s, gatehouse_netio::udp::canonical(r)),
            Err(e) if out_of_fds(&e) => {
                let shed = limits.count(DropReason::TcpAccept);
                if shed.is_power_of_two() {
                    warn!(error = %e, shed, open = limits.open(), "out of file descriptors: TCP connections are shed (raise the open-files limit, e.g. LimitNOFILE=, or lower `openvpn.tcp_max_connections`)");
                }
                // Free the reserve, take the waiting connection and close it, take the
                // reserve back: the client is refused instead of waiting in the backlog.
                drop(reserve.take());
                if let Ok(Ok((s, _))) =
                    tokio::time::timeout(Duration::from_millis(1), listener.accept()).await
                {
                    reset(s);
                }
                reserve = reserve_fd();
                tokio::time::sleep(FD_BACKOFF).await;
                continue;
            }
            Err(e) => {
                // The client went away before we took it (ECONNABORTED) and the like.
                debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        if reserve.is_none() {
            reserve = reserve_fd();
        }
        let permit = match limits.try_acquire(remote.ip()) {
            Ok(p) => p,
            Err(r) => {
                let (why, key, max, n) = match r {
                    Refusal::Total => (
                        "too many TCP connections",
                        "openvpn.tcp_max_connections",
                        limits.max_total(),
                        limits.count_of(DropReason::TcpLimit),
                    ),
                    Refusal::PerIp => (
                        "too many TCP connections from this address",
                        "openvpn.tcp_max_per_ip",
                        limits.max_per_ip(),
                        limits.count_of(DropReason::TcpPerIp),
                    ),
                };
                // The 1st, 2nd, 4th, 8th... of each reason: visible, bounded under a flood.
                if n.is_power_of_two() {
                    info!(remote = %remote, reason = why, limit = %format!("{key} = {max}"), refused = n, "TCP connection refused");
                }
                reset(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_TIME)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let conn = next_conn;
        next_conn += 1;
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot hand a TCP connection to a worker");
                continue;
            }
        };
        let w = super::worker::conn_worker(remote, workers.len());
        let msg = Msg::TcpConn {
            conn,
            remote,
            stream,
            permit,
        };
        if workers[w].send(msg).await.is_err() {
            return;
        }
    }
}

/// A connection's outgoing bytes: the worker frames each packet straight into `framed` (no
/// allocation per packet) and, at the end of its turn, writes them itself when the writer task
/// is idle (the socket's write half is parked here then): a lone reply leaves without a task
/// hop. What the socket does not take at once, the writer task takes over (swapping in its own
/// emptied buffer) and writes in one call, waiting for the client as long as it may.
#[derive(Debug, Default)]
struct OutQueue {
    state: Mutex<OutState>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct OutState {
    framed: Vec<u8>,
    /// No more packets: the worker let go of the connection, or the writer stopped.
    closed: bool,
    /// The write half while the writer task waits for work: the worker may write with it
    /// (nothing of the writer's is in flight then, so the bytes stay in order).
    idle_writer: Option<OwnedWriteHalf>,
}

impl OutQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`OutSender::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Dropped: the client has not taken [`OUT_LIMIT`] bytes, or the connection is closing.
    Dropped,
    /// Queued behind others.
    Behind,
    /// Queued first: the queue needs a [`OutSender::send_now`] at the end of the turn.
    First,
}

/// The worker's end of a connection's outgoing queue; dropping it closes the connection once
/// what is queued is written.
#[derive(Debug)]
pub struct OutSender(Arc<OutQueue>);

impl OutSender {
    /// Queues `packet` (framed); it goes out at the next [`OutSender::send_now`].
    pub fn push(&self, packet: &[u8]) -> Queued {
        let mut s = self.0.state();
        if s.closed || s.framed.len() + 2 + packet.len() > OUT_LIMIT {
            return Queued::Dropped;
        }
        let first = s.framed.is_empty();
        tcp_frame(packet, &mut s.framed);
        if first { Queued::First } else { Queued::Behind }
    }

    /// Writes what is queued: on the worker's thread, without waiting, while the writer task
    /// is idle; what the socket does not take (or everything, while the writer is busy) is
    /// left to the writer task.
    pub fn send_now(&self) {
        let mut s = self.0.state();
        let s = &mut *s;
        if s.framed.is_empty() {
            return;
        }
        if let Some(wr) = &s.idle_writer {
            let mut done = 0;
            while done < s.framed.len() {
                match wr.try_write(&s.framed[done..]) {
                    Ok(n) if n > 0 => done += n,
                    // WouldBlock, or an error the writer will meet and report.
                    _ => break,
                }
            }
            if done == s.framed.len() {
                empty(&mut s.framed);
                return;
            }
            s.framed.drain(..done);
        }
        self.0.ready.notify_one();
    }
}

/// Empties a written buffer, giving back what a burst made it grow beyond [`OUT_KEEP`].
fn empty(buf: &mut Vec<u8>) {
    buf.clear();
    if buf.capacity() > OUT_KEEP {
        buf.shrink_to(OUT_KEEP);
    }
}

impl Drop for OutSender {
    fn drop(&mut self) {
        self.0.state().closed = true;
        self.0.ready.notify_one();
    }
}

/// Runs connection `conn` on the calling worker's runtime: one reader and one writer task,
/// reporting to the worker through `events`. The connection holds `permit` until its socket
/// is closed.
pub(super) fn spawn_conn(
    stream: TcpStream,
    conn: u64,
    remote: SocketAddr,
    events: mpsc::Sender<TcpEvent>,
    permit: Permit,
    timeouts: TcpTimeouts,
) {
    let queue = Arc::new(OutQueue::default());
    let tx = OutSender(queue.clone());
    if events
        .try_send(TcpEvent::Opened { conn, remote, tx })
        .is_err()
    {
        // The worker is overwhelmed: refuse the connection (dropping it closes it).
        return;
    }
    let permit = Arc::new(permit);
    let (rd, wr) = stream.into_split();
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(write_loop(
        wr,
        queue,
        stop_tx,
        timeouts.idle,
        permit.clone(),
    ));
    tokio::spawn(read_loop(rd, conn, events, stop_rx, timeouts, permit));
}

/// Writes what the worker could not write itself until the worker lets go of the queue (then
/// sends the FIN) or the client stops taking it; tells the reader why it stopped. While it
/// waits, the write half is parked in the queue for the worker.
async fn write_loop(
    wr: OwnedWriteHalf,
    queue: Arc<OutQueue>,
    stop: oneshot::Sender<Ended>,
    stall: Duration,
    _permit: Arc<Permit>,
) {
    let mut out = Vec::new();
    let mut held = Some(wr);
    let ended = loop {
        // Everything queued goes out in one write; the worker frames on into `out`'s
        // (emptied) buffer meanwhile.
        let closed = {
            let mut s = queue.state();
            if held.is_none() {
                held = s.idle_writer.take();
            }
            std::mem::swap(&mut s.framed, &mut out);
            if out.is_empty() && !s.closed {
                s.idle_writer = held.take();
            }
            s.closed
        };
        let Some(wr) = held.as_mut().filter(|_| !out.is_empty()) else {
            if closed {
                break Ended::ByGateway;
            }
            queue.ready.notified().await;
            continue;
        };
        match tokio::time::timeout(stall, wr.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Ended::Error(format!("write error: {e}")),
            Err(_) => break Ended::Stalled,
        }
        empty(&mut out);
    };
    if matches!(ended, Ended::ByGateway) {
        if let Some(mut wr) = held {
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, wr.shutdown()).await;
        }
    } else {
        // Nothing more is taken: what the worker queues from now on is dropped.
        let mut s = queue.state();
        s.closed = true;
        s.framed = Vec::new();
        s.idle_writer = None;
    }
    let _ = stop.send(ended);
}

/// Bytes one read may bring in (a full window of frames).
const READ_CHUNK: usize = 64 * 1024;
/// The read buffer: reads land in it one after another; the complete frames of each are split
/// off and handed on without a copy, so while the worker holds them the next reads go on into
/// the rest of the buffer, and once it has let go of them all the buffer is used again from
/// its start (no allocation per read in the steady state).
const READ_BUFFER: usize = 4 * READ_CHUNK;

/// Reads until the client closes, breaks framing, goes idle, or the writer stopped, handing
/// the worker every complete frame of a read at once (still framed, in the read buffer itself);
/// asks the worker to check the handshake once its time is up; reports the end.
async fn read_loop(
    mut rd: OwnedReadHalf,
    conn: u64,
    events: mpsc::Sender<TcpEvent>,
    mut stop: oneshot::Receiver<Ended>,
    timeouts: TcpTimeouts,
    _permit: Arc<Permit>,
) {
    use bytes::BufMut;
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let handshake = tokio::time::sleep(timeouts.handshake);
    tokio::pin!(handshake);
    let mut handshake_checked = false;
    // The idle timer is not reset per read: a read notes the time, and when the timer fires
    // early it is set again from the last read.
    let mut last_read = tokio::time::Instant::now();
    let idle = tokio::time::sleep(timeouts.idle);
    tokio::pin!(idle);
    let ended = loop {
        // Room for a whole chunk: reuses the buffer once the worker dropped what it was given
        // (only the partial frame left over moves), or takes a new one while it holds it.
        buf.reserve(READ_CHUNK);
        let mut room = (&mut buf).limit(READ_CHUNK);
        tokio::select! {
            // `read_buf` (cancel-safe) rather than `readable` and `try_read`: after a short
            // read it knows the socket is drained and waits for the next wakeup, where
            // `try_read` would read again to find nothing (a system call on every packet's
            // way to TUN at low load).
            r = rd.read_buf(&mut room) => {
                match r {
                    Ok(0) => break Ended::ByClient,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => break Ended::Error(format!("read error: {e}")),
                }
                last_read = tokio::time::Instant::now();
                let (complete, broken) = tcp_complete_frames(&buf);
                if complete > 0 {
                    let frames = buf.split_to(complete).freeze();
                    if events.send(TcpEvent::Packets { conn, frames }).await.is_err() {
                        return;
                    }
                }
                if broken {
                    break Ended::Framing(WireError::EmptyTcpFrame.to_string());
                }
            }
            _ = &mut handshake, if !handshake_checked => {
                handshake_checked = true;
                if events.send(TcpEvent::HandshakeDeadline { conn }).await.is_err() {
                    return;
                }
            }
            _ = &mut idle => {
                let due = last_read + timeouts.idle;
                if tokio::time::Instant::now() >= due {
                    break Ended::Idle;
                }
                idle.as_mut().reset(due);
            }
            e = &mut stop => break e.unwrap_or(Ended::ByGateway),
        }
    };
    let _ = events.send(TcpEvent::Closed { conn, ended }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn per_address_cap() {
        let l = Limits::new(100, 3);
        let mut a: Vec<Permit> = (0..3)
            .map(|_| l.try_acquire(ip("10.0.0.1")).expect("under the cap"))
            .collect();
        assert_eq!(l.try_acquire(ip("10.0.0.1")).err(), Some(Refusal::PerIp));
        // Another address is not affected.
        let b = l.try_acquire(ip("10.0.0.2")).expect("another address");
        assert_eq!(l.open(), 4);
        assert_eq!(l.addresses(), 2);
        // A closed connection frees its place.
        drop(a.pop());
        let again = l.try_acquire(ip("10.0.0.1")).expect("a place was freed");
        assert_eq!(l.try_acquire(ip("10.0.0.1")).err(), Some(Refusal::PerIp));
        assert_eq!(l.drops().get(DropReason::TcpPerIp), 2);
        assert_eq!(l.drops().get(DropReason::TcpLimit), 0);
        drop((a, b, again));
        assert_eq!(l.open(), 0);
    }

    #[test]
    fn global_cap() {
        let l = Limits::new(4, 3);
        let mut held = Vec::new();
        for a in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.3"] {
            held.push(l.try_acquire(ip(a)).expect("under the caps"));
        }
        // Full: every address is refused, whatever its own count.
        assert_eq!(l.try_acquire(ip("10.0.0.9")).err(), Some(Refusal::Total));
        assert_eq!(l.try_acquire(ip("10.0.0.3")).err(), Some(Refusal::Total));
        assert_eq!(l.drops().get(DropReason::TcpLimit), 2);
        held.pop();
        assert!(l.try_acquire(ip("10.0.0.9")).is_ok());
    }

    #[test]
    fn everything_is_given_back() {
        let l = Limits::new(1000, 10);
        let held: Vec<Permit> = (0..500u32)
            .filter_map(|i| l.try_acquire(IpAddr::from([10, 0, (i % 60) as u8, 1])).ok())
            .collect();
        assert_eq!(l.open(), 500);
        assert_eq!(l.addresses(), 60);
        drop(held);
        assert_eq!(l.open(), 0);
        // No entry left behind per address (memory stays flat under churn).
        assert_eq!(l.addresses(), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = Limits::new(100, 2);
        let _a = l.try_acquire(ip("2001:db8:1:2::1")).expect("first");
        let _b = l.try_acquire(ip("2001:db8:1:2:ffff::9")).expect("second");
        // A third address of the same /64 is the same subscriber.
        assert_eq!(
            l.try_acquire(ip("2001:db8:1:2:abcd::1")).err(),
            Some(Refusal::PerIp)
        );
        assert!(l.try_acquire(ip("2001:db8:1:3::1")).is_ok());
        let _c = l.try_acquire(ip("192.0.2.7")).expect("ipv4");
        let _d = l
            .try_acquire(ip("::ffff:192.0.2.7"))
            .expect("mapped, same address");
        assert_eq!(l.try_acquire(ip("192.0.2.7")).err(), Some(Refusal::PerIp));
    }

    #[test]
    fn timeouts_follow_the_configuration() {
        let mut o = crate::config::OpenVpnConfig::default();
        let t = TcpTimeouts::from_config(&o);
        assert_eq!(t.handshake, Duration::from_secs(30));
        assert_eq!(t.idle, Duration::from_secs(90));
        o.tcp_handshake_timeout = "3s".into();
        o.ping_restart = "4s".into();
        let t = TcpTimeouts::from_config(&o);
        assert_eq!(t.handshake, Duration::from_secs(3));
        assert_eq!(t.idle, Duration::from_secs(6));
    }

    /// A loopback connection with small socket buffers run as connection `conn` (reader and
    /// writer tasks), reporting
    /// to the returned receiver (of `depth` events); the client's end.
    async fn open(conn: u64, depth: usize) -> (TcpStream, mpsc::Receiver<TcpEvent>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        // Small buffers: a client that reads slowly fills them soon.
        socket2::SockRef::from(&server)
            .set_send_buffer_size(16 * 1024)
            .expect("SO_SNDBUF");
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(16 * 1024)
            .expect("SO_RCVBUF");
        let permit = Limits::new(10, 10)
            .try_acquire(ip("127.0.0.1"))
            .expect("permit");
        let (events, ev) = mpsc::channel(depth);
        let remote = "127.0.0.1:1".parse().unwrap();
        spawn_conn(server, conn, remote, events, permit, timeouts());
        (client, ev)
    }

    fn timeouts() -> TcpTimeouts {
        TcpTimeouts {
            handshake: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_writer_frames_everything_queued_and_closes_when_let_go() {
        use tokio::io::AsyncReadExt;
        let (mut client, mut ev) = open(7, 16).await;
        let Some(TcpEvent::Opened { conn: 7, tx, .. }) = ev.recv().await else {
            panic!("no Opened event");
        };
        let mut expected = Vec::new();
        for i in 0..500u16 {
            let p = vec![i as u8; usize::from(i % 1400) + 1];
            assert_eq!(
                tx.push(&p),
                if i == 0 {
                    Queued::First
                } else {
                    Queued::Behind
                }
            );
            tcp_frame(&p, &mut expected);
        }
        // Letting go closes the connection once everything queued is written.
        drop(tx);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        delivered_then_closed(&got, &expected, &mut ev, 7).await;
    }

    /// The worker writes itself while the writer is idle and hands over when the socket is
    /// full (a slow client): every byte arrives once and in order either way.
    #[tokio::test(flavor = "current_thread")]
    async fn direct_writes_and_the_writer_keep_the_order() {
        use tokio::io::AsyncReadExt;
        let (mut client, mut ev) = open(8, 16).await;
        let Some(TcpEvent::Opened { conn: 8, tx, .. }) = ev.recv().await else {
            panic!("no Opened event");
        };
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = vec![0u8; 7000];
            loop {
                match client.read(&mut chunk).await.expect("read") {
                    0 => return got,
                    n => got.extend_from_slice(&chunk[..n]),
                }
                // A slow client (7 MB/s): the socket fills, the writer task takes over.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let mut expected = Vec::new();
        let (mut first, mut waits) = (0, 0);
        for i in 0..3000u32 {
            let p = vec![i as u8; (i * 13 % 1400) as usize + 1];
            loop {
                match tx.push(&p) {
                    Queued::Dropped => {
                        // Full: let the writer and the client move.
                        waits += 1;
                        tx.send_now();
                        tokio::task::yield_now().await;
                    }
                    q => {
                        first += usize::from(q == Queued::First);
                        break;
                    }
                }
            }
            tcp_frame(&p, &mut expected);
            if i % 10 == 9 {
                tx.send_now();
            }
            if i % 50 == 49 {
                tokio::task::yield_now().await;
            }
        }
        tx.send_now();
        drop(tx);
        let got = reader.await.expect("reader");
        assert!(first > 10, "the queue was emptied only {first} times");
        assert!(
            waits > 0,
            "the socket never filled: the writer task was not used"
        );
        delivered_then_closed(&got, &expected, &mut ev, 8).await;
    }

    /// The client got exactly `expected`, and connection `conn` reported its end as closed
    /// by the gateway.
    async fn delivered_then_closed(
        got: &[u8],
        expected: &[u8],
        ev: &mut mpsc::Receiver<TcpEvent>,
        conn: u64,
    ) {
        assert_eq!(got.len(), expected.len());
        assert!(
            got == expected,
            "the stream differs from the framed packets"
        );
        let Some(TcpEvent::Closed { conn: c, ended }) = ev.recv().await else {
            panic!("no Closed event");
        };
        assert_eq!(c, conn);
        assert!(matches!(ended, Ended::ByGateway), "{ended:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_queue_the_client_does_not_take_is_capped() {
        let (_client, mut ev) = open(1, 16).await;
        let Some(TcpEvent::Opened { tx, .. }) = ev.recv().await else {
            panic!("no Opened event");
        };
        // Without a write, the queue fills to its limit.
        let p = [0u8; 1000];
        let taken = (0..2000)
            .take_while(|_| tx.push(&p) != Queued::Dropped)
            .count();
        assert_eq!(taken, OUT_LIMIT / 1002);
        assert_eq!(tx.push(&p), Queued::Dropped);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_reader_hands_on_whole_frames_however_the_bytes_arrive() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut ev) = open(3, 1024).await;
        let mut stream = Vec::new();
        for i in 0..3000u16 {
            tcp_frame(&vec![i as u8; usize::from(i * 7 % 1500) + 1], &mut stream);
        }
        let writer = tokio::spawn(async move {
            // Cuts at odd places: inside length prefixes and bodies.
            for chunk in stream.chunks(1777) {
                client.write_all(chunk).await.expect("write");
                tokio::task::yield_now().await;
            }
            client.write_all(&[0, 1, 42, 0, 0]).await.expect("write");
            (stream, client)
        });
        let mut got = Vec::new();
        // Held: letting go of it would close the connection from the gateway's side.
        let mut _tx = None;
        let ended = loop {
            match ev.recv().await.expect("events end with Closed") {
                TcpEvent::Opened { tx, .. } => _tx = Some(tx),
                TcpEvent::Packets { conn: 3, frames } => {
                    assert_eq!(tcp_complete_frames(&frames), (frames.len(), false));
                    got.extend_from_slice(&frames);
                }
                TcpEvent::Closed { conn: 3, ended } => break ended,
                other => panic!("unexpected {other:?}"),
            }
        };
        let (mut stream, _client) = writer.await.expect("writer");
        // The frame before the zero-length one still arrives; the stream then ends.
        stream.extend_from_slice(&[0, 1, 42]);
        assert_eq!(got.len(), stream.len());
        assert!(got == stream, "frames differ from what was sent");
        assert!(matches!(ended, Ended::Framing(_)), "{ended:?}");
    }
}
