//! Split DNS without systemd-resolved: a small forwarder on a loopback address that
//! resolv.conf points at while connected. A query whose name is at or under a pushed domain
//! goes to the tunnel's DNS servers, every other one to the nameservers the host had before;
//! answers are relayed unchanged but for the query id. UDP and TCP (one upstream connection
//! per query). Malformed queries are dropped and counted; the table of queries waiting for
//! an answer is bounded.
//!
//! It lives as long as the process: after a crash the journal's resolv.conf backup brings
//! the previous DNS back (see [`super::Change::ResolvConf`]).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_engine::wire::dns::{is_within, message_id, query_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::NetError;

/// Where the forwarder listens (port 53: resolv.conf takes no port). Not 127.0.0.53/54,
/// which systemd-resolved uses.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 83, 53)), 53);
/// Queries waiting for an answer at most; more are dropped (and counted).
const MAX_PENDING: usize = 1024;
/// A query unanswered this long is forgotten (stub resolvers retry after 5 s).
const PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connections served at once.
const MAX_TCP: usize = 64;
/// An upstream TCP exchange, or an idle client connection, ends after this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest DNS message (a TCP length prefix is 16 bits).
const MAX_MESSAGE: usize = 65535;

/// Which servers answer which names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitRoutes {
    /// Pushed domains (normalized): names at or under them go to `tunnel`.
    pub domains: Vec<String>,
    /// The tunnel's DNS servers.
    pub tunnel: Vec<IpAddr>,
    /// The host's previous nameservers: everything else.
    pub local: Vec<IpAddr>,
}

impl SplitRoutes {
    /// The server for `name` (lower case, no trailing dot); None when there is none.
    pub fn server_for(&self, name: &str) -> Option<IpAddr> {
        let ours = self.domains.iter().any(|d| is_within(name, d));
        let list = if ours || self.local.is_empty() {
            &self.tunnel
        } else {
            &self.local
        };
        list.first().copied()
    }

    /// Whether `name` goes through the tunnel.
    pub fn is_tunnel(&self, name: &str) -> bool {
        self.domains.iter().any(|d| is_within(name, d))
    }
}

/// The nameservers of a resolv.conf text, but `skip` (our own forwarder).
pub fn nameservers(resolv_conf: &str, skip: IpAddr) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        // `fe80::1%eth0`: the zone is dropped (link-local servers are rare; they fail).
        .filter_map(|a| a.split('%').next()?.parse().ok())
        .filter(|a| *a != skip)
        .collect()
}

/// What the forwarder did, for the log and tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Queries sent to the tunnel's servers.
    pub to_tunnel: AtomicU64,
    /// Queries sent to the previous nameservers.
    pub to_local: AtomicU64,
    /// Answers relayed to the asker.
    pub answers: AtomicU64,
    /// Datagrams or TCP messages that were no query with one question (dropped).
    pub malformed: AtomicU64,
    /// Queries dropped because the pending table was full or no server was known.
    pub dropped: AtomicU64,
}

/// The running forwarder; dropping it stops it.
#[derive(Debug)]
pub struct SplitDns {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    counters: Arc<Counters>,
    routes: SplitRoutes,
}

impl Drop for SplitDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SplitDns {
    /// Binds `listen` (UDP and TCP) and serves until dropped. Needs a tokio runtime.
    pub fn start(listen: SocketAddr, routes: SplitRoutes) -> Result<Self, NetError> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| NetError("split DNS needs the client's runtime".into()))?;
        let bind_err =
            |e: std::io::Error| NetError(format!("split DNS: cannot listen on {listen}: {e}"));
        let udp = bind_retrying(|| std::net::UdpSocket::bind(listen)).map_err(bind_err)?;
        udp.set_nonblocking(true).map_err(bind_err)?;
        let upstream = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(bind_err)?;
        upstream.set_nonblocking(true).map_err(bind_err)?;
        let tcp = bind_retrying(|| std::net::TcpListener::bind(listen)).map_err(bind_err)?;
        tcp.set_nonblocking(true).map_err(bind_err)?;
        let counters = Arc::new(Counters::default());
        let _guard = rt.enter();
        let udp = UdpSocket::from_std(udp).map_err(bind_err)?;
        let upstream = UdpSocket::from_std(upstream).map_err(bind_err)?;
        let tcp = TcpListener::from_std(tcp).map_err(bind_err)?;
        let tasks = vec![
            rt.spawn(serve_udp(udp, upstream, routes.clone(), counters.clone())),
            rt.spawn(serve_tcp(tcp, routes.clone(), counters.clone())),
        ];
        Ok(Self {
            tasks,
            counters,
            routes,
        })
    }

    /// What it did so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Which servers answer which names.
    pub fn routes(&self) -> &SplitRoutes {
        &self.routes
    }
}

/// Binds, waiting a little while the address is in use: a forwarder stopped a moment ago
/// (a reconnect undoes and applies again at once) closes its sockets when the runtime gets
/// round to dropping its aborted tasks.
fn bind_retrying<T>(bind: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut tries = 0;
    loop {
        match bind() {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// A query sent upstream, waiting for its answer.
struct Pending {
    client: SocketAddr,
    client_id: u16,
    server: SocketAddr,
    sent: Instant,
}

/// Query ids upstream: random, so an off-path host cannot guess them.
fn random_id(rng: &ring::rand::SystemRandom) -> u16 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(rng, &mut b);
    u16::from_be_bytes(b)
}

/// Routes one query: the upstream server and whether it is the tunnel's.
fn route(
    msg: &[u8],
    routes: &SplitRoutes,
    counters: &Counters,
) -> Option<(SocketAddr, &'static str)> {
    let Ok(name) = query_name(msg) else {
        counters.malformed.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let Some(server) = routes.server_for(&name) else {
        counters.dropped.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let via = if routes.is_tunnel(&name) || routes.local.is_empty() {
        counters.to_tunnel.fetch_add(1, Ordering::Relaxed);
        "tunnel"
    } else {
        counters.to_local.fetch_add(1, Ordering::Relaxed);
        "local"
    };
    tracing::debug!(name, %server, via, "split DNS query");
    Some((SocketAddr::new(server, 53), via))
}

async fn serve_udp(
    listen: UdpSocket,
    upstream: UdpSocket,
    routes: SplitRoutes,
    counters: Arc<Counters>,
) {
    let rng = ring::rand::SystemRandom::new();
    let mut pending: HashMap<u16, Pending> = HashMap::new();
    let mut order: VecDeque<(u16, Instant)> = VecDeque::new();
    let mut qbuf = vec![0u8; MAX_MESSAGE];
    let mut abuf = vec![0u8; MAX_MESSAGE];
    loop {
        tokio::select! {
            r = listen.recv_from(&mut qbuf) => {
                let Ok((n, client)) = r else { continue };
                let msg = &mut qbuf[..n];
                let Some((server, _)) = route(msg, &routes, &counters) else { continue };
                let now = Instant::now();
                // Forget what timed out; when full, the oldest query gives way (counted).
                while let Some(&(id, at)) = order.front() {
                    let full = pending.len() >= MAX_PENDING || order.len() > 2 * MAX_PENDING;
                    if now.duration_since(at) < PENDING_TIMEOUT && !full {
                        break;
                    }
                    order.pop_front();
                    if pending.get(&id).is_some_and(|p| p.sent == at) {
                        pending.remove(&id);
                        if full {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let Some(client_id) = message_id(msg) else { continue };
                let mut id = random_id(&rng);
                while pending.contains_key(&id) {
                    id = id.wrapping_add(1);
                }
                msg[..2].copy_from_slice(&id.to_be_bytes());
                pending.insert(id, Pending { client, client_id, server, sent: now });
                order.push_back((id, now));
                if upstream.send_to(msg, server).await.is_err() {
                    pending.remove(&id);
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            r = upstream.recv_from(&mut abuf) => {
                let Ok((n, from)) = r else { continue };
                let answer = &mut abuf[..n];
                let Some(id) = message_id(answer) else { continue };
                // Only the server the query went to may answer it.
                if pending.get(&id).is_none_or(|p| p.server != from) {
                    continue;
                }
                let Some(p) = pending.remove(&id) else { continue };
                answer[..2].copy_from_slice(&p.client_id.to_be_bytes());
                if listen.send_to(answer, p.client).await.is_ok() {
                    counters.answers.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn serve_tcp(listen: TcpListener, routes: SplitRoutes, counters: Arc<Counters>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    loop {
        let Ok((stream, _)) = listen.accept().await else {
            continue;
        };
        // Full: the connection is closed at once and the stub falls back to UDP.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (routes, counters) = (routes.clone(), counters.clone());
        tokio::spawn(async move {
            let _ = serve_tcp_client(stream, &routes, &counters).await;
            drop(slot);
        });
    }
}

/// Reads one length-prefixed DNS message.
async fn read_message(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = tokio::time::timeout(TCP_TIMEOUT, s.read_u16())
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    let mut msg = vec![0u8; usize::from(len)];
    tokio::time::timeout(TCP_TIMEOUT, s.read_exact(&mut msg))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    Ok(msg)
}

async fn write_message(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await
}

/// Each query of a client connection is routed on its own (one connection may ask for a
/// corporate name and then a public one) over a fresh upstream connection.
async fn serve_tcp_client(
    mut client: TcpStream,
    routes: &SplitRoutes,
    counters: &Counters,
) -> std::io::Result<()> {
    loop {
        let query = read_message(&mut client).await?;
        let Some((server, _)) = route(&query, routes, counters) else {
            // Malformed: the connection ends (a stub that sent it has nothing to wait for).
            return Ok(());
        };
        let answer = tokio::time::timeout(TCP_TIMEOUT, async {
            let mut up = TcpStream::connect(server).await?;
            write_message(&mut up, &query).await?;
            read_message(&mut up).await
        })
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
        write_message(&mut client, &answer).await?;
        counters.answers.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> SplitRoutes {
        SplitRoutes {
            domains: vec!["corp.example".into()],
            tunnel: vec!["10.1.0.53".parse().unwrap()],
            local: vec!["192.168.1.1".parse().unwrap()],
        }
    }

    #[test]
    fn names_under_the_pushed_domains_go_to_the_tunnel() {
        let r = routes();
        assert_eq!(r.server_for("host.corp.example"), r.tunnel.first().copied());
        assert_eq!(r.server_for("corp.example"), r.tunnel.first().copied());
        assert_eq!(r.server_for("evilcorp.example"), r.local.first().copied());
        assert_eq!(r.server_for("www.other.test"), r.local.first().copied());
        // No previous nameserver: everything through the tunnel rather than nowhere.
        let r = SplitRoutes {
            local: vec![],
            ..routes()
        };
        assert_eq!(r.server_for("www.other.test"), r.tunnel.first().copied());
    }

    #[test]
    fn previous_nameservers_are_read_from_resolv_conf() {
        let text = "# comment\nsearch lan\nnameserver 192.168.1.1\nnameserver 127.0.83.53\n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions edns0\n";
        assert_eq!(
            nameservers(text, LISTEN.ip()),
            [
                "192.168.1.1".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }

    /// A query for `name` with id 0x4242.
    fn query(name: &str) -> Vec<u8> {
        let mut q = b"\x42\x42\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00".to_vec();
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(b"\x00\x00\x01\x00\x01");
        q
    }

    /// Two fake upstream servers on loopback (port 53 needs root: the test uses a forwarder
    /// whose upstreams are on 127.0.0.x and checks which one saw the query).
    #[tokio::test]
    async fn udp_queries_are_relayed_to_the_right_server_and_junk_is_counted() {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        // Upstreams must listen on port 53; without root the test has nothing to check.
        let (Ok(tun), Ok(local)) = (
            UdpSocket::bind("127.0.0.2:53").await,
            UdpSocket::bind("127.0.0.3:53").await,
        ) else {
            eprintln!("skipped: binding port 53 needs root");
            return;
        };
        let routes = SplitRoutes {
            domains: vec!["corp.example".into()],
            tunnel: vec!["127.0.0.2".parse().unwrap()],
            local: vec!["127.0.0.3".parse().unwrap()],
        };
        let udp = std::net::UdpSocket::bind(listen).unwrap();
        let at = udp.local_addr().unwrap();
        drop(udp);
        let fwd = SplitDns::start(at, routes).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for (name, server) in [("host.corp.example", &tun), ("www.other.test", &local)] {
            client.send_to(&query(name), at).await.unwrap();
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(query_name(&buf[..n]).unwrap(), name);
            // Answer: the query with QR set, its id as the server saw it.
            buf[2] |= 0x80;
            server.send_to(&buf[..n], from).await.unwrap();
            let (m, _) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(m, n);
            assert_eq!(message_id(&buf[..m]), Some(0x4242));
        }
        client.send_to(b"\x00\x01junk", at).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let c = fwd.counters();
        assert_eq!(c.to_tunnel.load(Ordering::Relaxed), 1);
        assert_eq!(c.to_local.load(Ordering::Relaxed), 1);
        assert_eq!(c.answers.load(Ordering::Relaxed), 2);
        assert_eq!(c.malformed.load(Ordering::Relaxed), 1);
    }
}
