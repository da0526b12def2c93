//! The gateway's driver: I/O only. The engine's sans-IO [`GatewayCore`] takes every protocol
//! decision; this module feeds it.
//!
//! The data plane runs on `workers` threads (default: one per core; `workers` in
//! gateway.toml). Each worker (`worker.rs`) has its own socket in each port's `SO_REUSEPORT`
//! group, its own queue of the multi-queue TUN device and its own core over the tunnels
//! steered to it: datagrams by their source address (a reuseport program computes the same
//! function as the engine's `worker_of_ip`), so a client's tunnel lives on one worker and its
//! packets are never reordered; TUN packets by the kernel's flow steering, which follows the
//! queue a flow was last written from. A packet that reaches the wrong worker anyway (a
//! roaming client, a new flow) is handed to its owner through the owner's inbox. The workers
//! share only admission state (pool, logins, SPIs) and take no lock per packet.
//!
//! Packets move in batches (`gatehouse-netio`): a UDP read takes up to 32 datagrams
//! (`recvmmsg`, UDP GRO), a TUN read a whole TSO segment train; the core's output for one
//! peer leaves in one GSO `sendmsg`, and decrypted packets reach TUN coalesced (GRO). Every
//! batch is written out before a worker waits again, so batching adds no delay at low load.
//!
//! This thread is the control plane: it binds everything, accepts TCP connections (each is
//! handed to the worker its client's address steers to, which then runs it), reloads the CRL and hands it to every worker, writes the status
//! file from what the workers publish, and stops them on SIGINT/SIGTERM.

mod active_active;
mod capture;
mod coalesce;
mod control;
mod core_config;
mod crl_upkeep;
mod ha;
mod handle;
mod handoff;
mod handshakes;
mod interfaces;
mod learned;
mod listen;
mod reresolve;
mod tcp;
mod wake;
pub mod wireguard;
mod worker;
pub mod wrap;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gatehouse_engine::entropy::Entropy;
use gatehouse_engine::gateway::{CoreStatus, Drops, GatewayCore, STEER_MULTIPLIER, Shard};
use gatehouse_engine::openvpn::server::ServerConfig;
use ipnet::Ipv4Net;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::GatewayConfig;
use crate::tls::{FileStamp, PkiPaths};
use gatehouse_netio::udp::Bind;
use tcp::{Limits, TcpTimeouts};
use worker::{Msg, Published, Reload, WorkerSetup, WorkerSockets};

pub use active_active::ClusterView;
pub use capture::{Capture, CaptureTap, Captured};
pub use core_config::{check_enabled, site_peers};
pub use crl_upkeep::{CrlFacts, crl_facts};
use handle::Control;
pub use handle::{Facts, GatewayHandle, Snapshot};

/// Starts a handoff to the binary on disk: the control loop takes it as SIGUSR2 (a little
/// later, so that an admin API answer goes out first). Fails, changing nothing, when there is
/// no binary to run.
#[allow(unsafe_code)]
pub fn start_handoff() -> Result<PathBuf> {
    let binary = handoff::next_binary()?;
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: kill(2) with our own PID and a signal number; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGUSR2);
        }
    });
    Ok(binary)
}

/// Socket buffer size asked of the kernel: bursts at Gbit/s overflow the 208 KiB default.
const SOCKET_BUFFER: usize = 4 << 20;

/// File descriptors kept free of TCP connections: the CRL reload, the PKI files it reads
/// with it, the status file, the workers' runtimes (epoll, eventfd) and the accept loop's
/// reserve.
const FD_HEADROOM: usize = 64;

/// Raises the soft open-files limit (RLIMIT_NOFILE) to the hard limit, as servers that hold
/// many sockets do; returns the soft limit now in force (None when unknown).
#[allow(unsafe_code)]
fn raise_nofile_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the one `rlimit` struct passed, which lives
    // for the whole call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return Some(want.rlim_cur);
        }
    }
    Some(r.rlim_cur)
}

/// Descriptors this process has open now.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// The TCP connection cap in force: `configured`, or less when the open-files limit `limit`
/// leaves room for fewer beside the `open` descriptors and [`FD_HEADROOM`] (at least 1).
fn tcp_cap(configured: usize, limit: Option<u64>, open: usize) -> usize {
    match limit {
        Some(l) => {
            let room = usize::try_from(l)
                .unwrap_or(usize::MAX)
                .saturating_sub(open + FD_HEADROOM);
            configured.min(room).max(1)
        }
        None => configured,
    }
}

/// OS randomness for the engine (the engine itself never reaches for it).
struct OsEntropy(ring::rand::SystemRandom);

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        use ring::rand::SecureRandom;
        if self.0.fill(buf).is_err() {
            // ring's OS RNG does not fail on Linux; if it ever did, refusing to continue is
            // the only safe answer.
            panic!("OS random number generator failed");
        }
    }
}

/// Every socket the gateway serves, for the start-up log line: operators open these in their
/// firewall, so none may be missing (`openvpn/udp [::]:1194 (IPv4+IPv6), openvpn/tcp
/// [::]:443 (IPv4+IPv6), ikev2/udp [::]:500 (IPv4+IPv6), ikev2-natt/udp [::]:4500
/// (IPv4+IPv6)`; `0.0.0.0:1194` with `listen = "0.0.0.0"`).
fn listeners(cfg: &GatewayConfig, wg: bool) -> String {
    let o = &cfg.openvpn;
    let mut l = Vec::new();
    let mut add = |what: &str, bind: Bind| l.push(format!("{what} {}", listen::describe(bind)));
    if o.udp_port != 0 {
        add("openvpn/udp", Bind::new(o.listen, o.udp_port));
    }
    if o.tcp_port != 0 {
        add("openvpn/tcp", Bind::new(o.listen, o.tcp_port));
    }
    if cfg.ikev2.enabled {
        let i = &cfg.ikev2;
        add("ikev2/udp", Bind::new(i.listen, i.ike_port));
        add("ikev2-natt/udp", Bind::new(i.listen, i.natt_port));
    }
    if wg {
        add("wireguard/udp", wireguard::listen_addr(cfg));
    }
    if cfg.quic.enabled {
        add("quic/udp", Bind::new(cfg.quic.listen, cfg.quic.port));
    }
    l.join(", ")
}

/// Everything the running gateway needs, built by [`Gateway::bind`].
pub struct Gateway {
    cfg: GatewayConfig,
    pki: PkiPaths,
    /// The PKI folder (its registry signs the CRL again when it is lost or near expiry).
    pki_dir: PathBuf,
    /// The OpenVPN configuration in force (reloaded with the CRL).
    ovpn: Arc<ServerConfig>,
    crl_stamp: FileStamp,
    tcp: Option<TcpListener>,
    workers: Vec<WorkerSetup>,
    inboxes: Arc<Vec<mpsc::Sender<Msg>>>,
    /// Poked by the workers when their tunnels changed in a way the HA standby must see
    /// (`GatewayCore::state_changes`): the replication task copies the state at once.
    replicate: Arc<tokio::sync::Notify>,
    published: Vec<Arc<Mutex<Published>>>,
    gateway_addr: std::net::Ipv4Addr,
    /// Whether datagrams are steered to workers by source address (else by the kernel's
    /// hash, and the workers hand packets over more often).
    steered: bool,
    offload: bool,
    /// Where `gateway.toml` lives.
    config_dir: PathBuf,
    /// The configuration file (re-read by a reload).
    config_path: PathBuf,
    /// Open TCP connections against their caps, and the accept loop's drop counters.
    tcp_limits: Arc<Limits>,
    /// Packet captures (the workers offer packets to it).
    tap: Arc<CaptureTap>,
    /// What the admin API reports of the gateway.
    facts: Arc<Mutex<Facts>>,
    /// WireGuard serves (its socket is bound).
    wg_on: bool,
    /// The registry of WireGuard client identities, as last read.
    wg_stamp: FileStamp,
    /// Duplicates of the sockets and the TUN queue, for a handoff to the next process.
    kept: handoff::Kept,
    /// Sessions taken over from the previous process (started by a handoff).
    taken_over: Option<usize>,
    /// This node's place in an active-active cluster (`ha.mode`).
    membership: Option<active_active::Membership>,
    /// The cluster's shared configuration in force (active-active), applied on top of
    /// gateway.toml by every reload.
    shared: Option<crate::cluster::shared_config::SharedConfig>,
    /// The site connections in force, as resolved when the configuration was last applied.
    conns: Vec<crate::config::Connection>,
    /// Looks up again the names of site connections that are down.
    reresolver: reresolve::Reresolver,
}

/// The kernel's count of packets TUN device `name` dropped on the way to the gateway (its
/// queues were full); 0 when unknown.
fn tun_tx_dropped(name: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/tx_dropped"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The number of workers: `workers` from the configuration, 0 meaning one per core.
/// The sites' IPv6 prefixes routed into the gateway's TUN (connections with their own
/// interface have theirs routed there: [`own_interface_routes`]).
pub(super) fn site_prefixes_v6(conns: &[crate::config::Connection]) -> Vec<ipnet::Ipv6Net> {
    conns
        .iter()
        .filter(|c| c.interface.is_none())
        .flat_map(|c| c.remote_address_space_v6.iter().copied())
        .collect()
}

/// The static prefixes of both families routed into each own interface (docs/bgp.md), by
/// interface name.
pub(super) fn own_interface_routes(
    conns: &[crate::config::Connection],
) -> Vec<(String, Vec<ipnet::IpNet>)> {
    conns
        .iter()
        .filter_map(|c| {
            let i = c.interface.as_ref()?;
            let nets = c
                .remote_address_space
                .iter()
                .map(|n| ipnet::IpNet::V4(*n))
                .chain(
                    c.remote_address_space_v6
                        .iter()
                        .map(|n| ipnet::IpNet::V6(*n)),
                )
                .collect();
            Some((i.name.clone(), nets))
        })
        .collect()
}

fn worker_count(cfg: &GatewayConfig) -> usize {
    match cfg.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// A worker's socket per port, none where the port is off.
type Group = Vec<Option<std::net::UdpSocket>>;

impl Gateway {
    /// Loads TLS material, creates the TUN device and binds the listeners.
    pub async fn bind(mut cfg: GatewayConfig, config_path: PathBuf) -> Result<Self> {
        // Active-active: this node leases only from the block of `client_pool` it claims.
        let membership = if cfg.ha.active_active() {
            let m = active_active::join(&cfg).await?;
            cfg.client_pool = m.view.block;
            Some(m)
        } else {
            None
        };
        let config_dir = match config_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let nofile = raise_nofile_limit();
        let mut inherited = handoff::Inherited::from_env()?;
        let pki_dir = cfg.pki_path(&config_dir);
        let pki = PkiPaths::new(&pki_dir, &cfg.server_cert);
        let conns = cfg.connections(&config_dir)?;
        // Revocations live in the registry: a lost crl.pem is signed again, never read as
        // "nothing revoked".
        crl_upkeep::ensure_present(&pki_dir, &pki.crl);
        let crl_stamp = FileStamp::of(&pki.crl);
        let now = Instant::now();
        let n = worker_count(&cfg);
        let shards = Shard::split(cfg.client_pool, n)
            .map_err(|e| anyhow::anyhow!("`client_pool` {}: {e}", cfg.client_pool))?;
        let crls = core_config::read_crls(&pki)?;
        let wg_stamp = FileStamp::of(&wireguard::identities_path(&pki_dir));
        let wg_cfg = wireguard::build(&cfg, &config_dir, &pki_dir)?;
        let wg_on = wg_cfg.is_some();
        let quic = if cfg.quic.enabled {
            Some(crate::tls::quic_server_config(&pki, &cfg)?)
        } else {
            None
        };
        core_config::warn_absent_local_addresses(&conns);
        let mut cores = Vec::with_capacity(n);
        let mut ovpn = None;
        let mut pins = Default::default();
        for shard in shards {
            let core_cfg = core_config::build(&cfg, &config_dir, &pki, &conns, now)?;
            pins = core_config::source_pins(&core_cfg);
            if ovpn.is_none() {
                ovpn = Some(match &core_cfg.openvpn {
                    Some(o) => o.clone(),
                    None => crate::tls::openvpn_server_config(&pki, &cfg)?,
                });
            }
            let mut core = GatewayCore::new_shard(
                core_cfg,
                Box::new(|| {
                    Box::new(OsEntropy(ring::rand::SystemRandom::new())) as Box<dyn Entropy>
                }),
                shard,
            );
            core.set_crls(now, &crls)
                .map_err(|e| anyhow::anyhow!("{}: {e}", pki.crl.display()))?;
            core.set_wireguard(now, wg_cfg.clone());
            if let Some(q) = &quic {
                core.set_quic_config(q.clone());
            }
            // Active-standby: sites are started by the active node only (ha.rs turns it on
            // when this one becomes active), so a standby never competes with its SAs.
            if cfg.ha.enabled && !cfg.ha.active_active() {
                core.set_site_initiation(false);
            }
            cores.push(core);
        }
        let ovpn = ovpn.context("no worker")?;
        let gateway_addr = cores[0].gateway_addr();
        let (tun, offload) = crate::tun::create(
            &cfg.tun_name,
            gateway_addr,
            cfg.client_pool,
            cfg.tun_mtu,
            n > 1,
        )?;
        if inherited.is_some() {
            // The previous process left the device persistent so that it outlived its
            // queues; from now on it goes with this process again.
            use std::os::fd::AsRawFd;
            if let Err(e) = handoff::set_tun_persist(tun.as_raw_fd(), false) {
                warn!(error = %e, tun = %cfg.tun_name, "cannot clear the TUN device's persistence after a handoff; it will outlive the gateway");
            }
        }
        let mut queues = Vec::with_capacity(n);
        for _ in 1..n {
            queues.push(tun.try_clone().with_context(|| {
                format!("cannot open another queue of TUN device {}", cfg.tun_name)
            })?);
        }
        queues.insert(0, tun);
        let mut own_ifaces = interfaces::create(&conns, n, cfg.tun_mtu)?.into_iter();
        let mut site_prefixes: Vec<Ipv4Net> = conns
            .iter()
            .filter(|c| c.interface.is_none())
            .flat_map(|c| c.remote_address_space.iter().copied())
            .collect();
        for (name, nets) in own_interface_routes(&conns) {
            crate::tun::add_routes(&name, &nets)?;
        }
        site_prefixes.extend(wireguard::site_prefixes(&cfg));
        crate::tun::add_routes(&cfg.tun_name, &site_prefixes)?;
        let mut site_v6 = site_prefixes_v6(&conns);
        site_v6.extend(wireguard::site_prefixes_v6(&cfg));
        crate::tun::add_routes(&cfg.tun_name, &site_v6)?;
        crate::tun::set_ipv6(&cfg.tun_name, None, cfg.client_pool_v6()?)?;
        let o = &cfg.openvpn;
        let mut steered = true;
        let mut group = |addr: Bind, what: &str, port: &str| -> Result<Group> {
            if let Some(inh) = inherited.as_mut()
                && let Some(socks) = inh.take_group(port, n)?
            {
                steered &= inh.steered || n == 1;
                return Ok(socks.into_iter().map(Some).collect());
            }
            let (socks, s) = listen::udp_group(addr, n, SOCKET_BUFFER, STEER_MULTIPLIER)
                .with_context(|| format!("cannot bind UDP {} ({what})", listen::describe(addr)))?;
            steered &= s || n == 1;
            Ok(socks.into_iter().map(Some).collect())
        };
        let none = || -> Group { (0..n).map(|_| None).collect() };
        let mut ovpn_socks = if o.udp_port != 0 {
            group(
                Bind::new(o.listen, o.udp_port),
                "`openvpn.udp_port`; is another VPN server running?",
                "ovpn",
            )?
        } else {
            none()
        };
        let (mut ike_socks, mut natt_socks) = if cfg.ikev2.enabled {
            let i = &cfg.ikev2;
            let what = "`ikev2.ike_port`/`ikev2.natt_port`; is strongSwan running? set `ikev2.enabled = false` to run without IKEv2";
            (
                group(Bind::new(i.listen, i.ike_port), what, "ike")?,
                group(Bind::new(i.listen, i.natt_port), what, "natt")?,
            )
        } else {
            (none(), none())
        };
        let mut wg_socks = if wg_on {
            group(
                wireguard::listen_addr(&cfg),
                "`wireguard.port`; is another WireGuard (wg-quick, wireguard-go) using it?",
                "wg",
            )?
        } else {
            none()
        };
        let mut quic_socks = if cfg.quic.enabled {
            group(
                Bind::new(cfg.quic.listen, cfg.quic.port),
                "`quic.port`; is a web server serving HTTP/3 on it? set `quic.port` or `quic.enabled = false`",
                "quic",
            )?
        } else {
            none()
        };
        let adopted_tcp = match inherited.as_mut() {
            Some(inh) => inh.take_tcp()?,
            None => None,
        };
        let tcp = if o.tcp_port != 0 {
            Some(match adopted_tcp {
                Some(l) => TcpListener::from_std(l)?,
                None => listen::tcp(Bind::new(o.listen, o.tcp_port))?,
            })
        } else {
            drop(adopted_tcp);
            None
        };
        let mut kept = handoff::Kept {
            steered,
            ..Default::default()
        };
        {
            use std::os::fd::AsFd;
            for (port, socks) in handoff::PORTS.into_iter().zip([
                &ovpn_socks,
                &ike_socks,
                &natt_socks,
                &wg_socks,
                &quic_socks,
            ]) {
                kept.keep_group(port, socks.iter().map(Option::as_ref))?;
            }
            if let Some(t) = &tcp {
                kept.tcp = Some(handoff::keep(t.as_fd())?);
            }
            kept.tun = Some(handoff::keep(queues[0].as_fd())?);
        }
        let mut taken_over = None;
        let stale = config_dir.join(handoff::STATE_FILE);
        if inherited.is_none() && stale.exists() {
            // A handoff that never completed (the new binary failed to start): its keys must
            // not stay on disk, and no session is waiting for them any more.
            warn!(state = %stale.display(), "removing the state of a handoff that did not complete");
            let _ = std::fs::remove_file(&stale);
        }
        if let Some(inh) = inherited.take() {
            inh.close_rest();
            let path = config_dir.join(handoff::STATE_FILE);
            match handoff::read_state(&path) {
                Ok(states) => {
                    let now = Instant::now();
                    let mut taken = 0;
                    for (core, state) in cores.iter_mut().zip(states) {
                        match core.import_handoff(now, state) {
                            Ok(k) => taken += k,
                            Err(e) => {
                                warn!(error = %e, "handoff: a worker's tunnels were not taken over; their clients reconnect")
                            }
                        }
                    }
                    info!(sessions = taken, state = %path.display(), "handoff: took over the previous process's sessions and sockets");
                    taken_over = Some(taken);
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "handoff: sockets inherited but no sessions to take over; clients reconnect")
                }
            }
        }
        let mut senders = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::channel(worker::INBOX);
            senders.push(tx);
            receivers.push(rx);
        }
        let inboxes = Arc::new(senders);
        let o = &cfg.openvpn;
        let cap = tcp_cap(o.tcp_max_connections, nofile, open_fds() + 4 * n);
        if o.tcp_port != 0 && cap < o.tcp_max_connections {
            warn!(
                open_files_limit = nofile.unwrap_or(0),
                tcp_max_connections = cap,
                "the open-files limit (RLIMIT_NOFILE) leaves room for only {cap} TCP connections: `openvpn.tcp_max_connections` = {} is lowered to {cap} (raise the limit, e.g. LimitNOFILE= in the systemd unit)",
                o.tcp_max_connections
            );
        }
        let tcp_limits = Limits::new(cap, o.tcp_max_per_ip.min(cap));
        let tcp_timeouts = TcpTimeouts::from_config(o);
        let published: Vec<Arc<Mutex<Published>>> = (0..n)
            .map(|_| Arc::new(Mutex::new(Published::default())))
            .collect();
        let tap = Arc::new(CaptureTap::default());
        let replicate = Arc::new(tokio::sync::Notify::new());
        let mut workers = Vec::with_capacity(n);
        for (index, ((core, tun), inbox)) in
            cores.into_iter().zip(queues).zip(receivers).enumerate()
        {
            workers.push(WorkerSetup {
                index,
                core,
                sockets: WorkerSockets {
                    ovpn: ovpn_socks[index].take(),
                    ike: ike_socks[index].take(),
                    natt: natt_socks[index].take(),
                    wg: wg_socks[index].take(),
                    quic: quic_socks[index].take(),
                },
                tun,
                tun_mtu: usize::from(cfg.tun_mtu),
                inbox,
                peers: inboxes.clone(),
                published: published[index].clone(),
                tcp_timeouts,
                handshakes: None,
                tap: tap.clone(),
                coalesce: Duration::from_micros(u64::from(cfg.coalesce_us)),
                interfaces: own_ifaces.next().unwrap_or_default(),
                source_pins: pins.clone(),
                replicate: replicate.clone(),
            });
        }
        let facts = Arc::new(Mutex::new(Facts {
            listeners: listeners(&cfg, wg_on),
            pool: cfg.client_pool,
            workers: n,
            crl: pki.crl.clone(),
            started_at: Instant::now(),
            sites: conns
                .iter()
                .map(|c| (c.name.clone(), c.remote_address_space.clone()))
                .chain(
                    cfg.wireguard_connections()?
                        .into_iter()
                        .map(|c| (c.name, c.remote_address_space)),
                )
                .collect(),
        }));
        Ok(Self {
            tap,
            facts,
            cfg,
            pki,
            pki_dir,
            ovpn,
            crl_stamp,
            tcp,
            workers,
            inboxes,
            replicate,
            published,
            gateway_addr,
            steered,
            offload,
            config_dir,
            config_path,
            tcp_limits,
            wg_on,
            wg_stamp,
            kept,
            taken_over,
            membership,
            shared: None,
            reresolver: reresolve::Reresolver::new(&conns, Instant::now()),
            conns,
        })
    }

    /// Serves until SIGINT/SIGTERM.
    pub async fn run(mut self) -> Result<()> {
        if let Some(listener) = self.tcp.take() {
            tokio::spawn(tcp::accept_loop(
                listener,
                self.inboxes.clone(),
                self.tcp_limits.clone(),
            ));
        }
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing SIGTERM handler")?;
        let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing SIGHUP handler")?;
        let mut sigusr2 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
                .context("installing SIGUSR2 handler")?;
        let mut hand_off = false;
        let (control_tx, mut control_rx) = mpsc::channel::<Control>(16);
        let ha = if self.cfg.ha.enabled && !self.cfg.ha.active_active() {
            let (tx, rx) = mpsc::channel(4);
            let task = ha::Ha::new(&self.cfg.ha, self.inboxes.clone(), self.replicate.clone());
            tokio::spawn(task.run(self.cfg.ha.role == "active", self.taken_over.is_some(), rx));
            Some(tx)
        } else {
            None
        };
        let handle = GatewayHandle {
            ha,
            inboxes: self.inboxes.clone(),
            published: Arc::new(self.published.clone()),
            control: control_tx,
            tcp_limits: self.tcp_limits.clone(),
            facts: self.facts.clone(),
            capture: self.tap.clone(),
            cluster: self.membership.as_ref().map(|m| m.view.clone()),
        };
        if let Some(m) = &self.membership {
            let task = active_active::Member::new(
                m,
                &self.cfg,
                self.pki_dir.clone(),
                self.pki.crl.clone(),
                handle.clone(),
                handle.control.clone(),
            );
            tokio::spawn(task.run());
        }
        // Prefixes a routing daemon learned through the connections' own interfaces go to
        // new clients too.
        let own_ifaces: Vec<String> = self
            .cfg
            .connections(&self.config_dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| Some(c.interface?.name))
            .collect();
        if !own_ifaces.is_empty() {
            tokio::spawn(learned::watch(own_ifaces, self.inboxes.clone()));
        }
        let admin =
            crate::admin::start(&self.cfg, &self.config_dir, &self.pki, handle.clone()).await?;
        let n = self.workers.len();
        if !self.offload {
            warn!(tun = %self.cfg.tun_name, "the kernel refused TUN offload (virtio-net headers); packets move one per read");
        }
        let mut threads = Vec::with_capacity(n);
        let hs_threads = self.cfg.handshake_threads;
        let handshakes = if hs_threads > 0 {
            let (h, t) = handshakes::Handshakes::start(hs_threads)?;
            threads.extend(t);
            Some(h)
        } else {
            None
        };
        for mut setup in std::mem::take(&mut self.workers) {
            setup.handshakes = handshakes.clone();
            let name = format!("gatehoused-w{}", setup.index);
            threads.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || {
                        if let Err(e) = worker::run(setup) {
                            tracing::error!(error = %format!("{e:#}"), "worker failed");
                        }
                    })
                    .context("starting a worker thread")?,
            );
        }
        // The workers hold the handshake threads' queue now; they end when it closes.
        drop(handshakes);
        info!(
            listening = %listeners(&self.cfg, self.wg_on),
            tun = %self.cfg.tun_name,
            tun_addr = %self.gateway_addr,
            client_pool = %self.cfg.client_pool,
            address_space = ?self.cfg.address_space.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            tls_ekm = self.cfg.openvpn.tls_ekm,
            openvpn_wrapper = self.ovpn.wrap.name(),
            workers = n,
            handshake_threads = hs_threads,
            steering = if self.steered { "source-address" } else { "kernel-hash" },
            tun_offload = self.offload,
            tcp_max_connections = self.tcp_limits.max_total(),
            tcp_max_per_ip = self.tcp_limits.max_per_ip(),
            admin = %admin.summary,
            taken_over = ?self.taken_over,
            "gateway ready"
        );
        let (notifier, problem) = gatehouse_netio::notify::Notifier::from_env();
        if let Some(p) = problem {
            warn!("{p}");
        }
        let notified = |what: &str, r: std::io::Result<()>| {
            if let Err(e) = r {
                warn!(error = %e, what, "could not notify the service manager");
            }
        };
        notified(
            "READY",
            notifier.ready(&format!(
                "serving {} with {n} workers",
                listeners(&self.cfg, self.wg_on)
            )),
        );
        let mut watchdog = notifier.watchdog_timer();
        let mut crl_tick = tokio::time::interval(Duration::from_secs(2));
        crl_tick.tick().await;
        let mut stats_tick = tokio::time::interval(Duration::from_secs(60));
        stats_tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
                _ = sigusr2.recv() => match handoff::next_binary() {
                    Ok(_) => {
                        hand_off = true;
                        break;
                    }
                    Err(e) => warn!(error = %format!("{e:#}"), "SIGUSR2: no handoff; the gateway keeps running"),
                },
                _ = watchdog.due() => notified("WATCHDOG", notifier.watchdog()),
                _ = crl_tick.tick() => {
                    self.check_crl().await;
                    self.check_wireguard().await;
                    if self.conns.iter().any(|c| c.remote_host.is_some()) {
                        let (s, _, _) = self.merged();
                        self.reresolver.tick(&self.conns, &s.sites, Instant::now(), &handle.control);
                    }
                }
                _ = sighup.recv() => match self.reload_config().await {
                    Ok(r) => info!(changes = ?r.changes, tunnels_ended = r.tunnels_ended, "SIGHUP: configuration reloaded"),
                    Err(e) => warn!(error = %e, "SIGHUP: configuration not reloaded; the running one stays"),
                },
                Some(c) = control_rx.recv() => self.control(c, &handle).await,
                _ = stats_tick.tick() => {
                    crl_upkeep::refresh_if_due(&self.pki_dir, &self.pki.crl, time::OffsetDateTime::now_utc());
                    let (s, drops, leased) = self.merged();
                    if drops.total() > 0 || s.tunnels > 0 {
                        // Packets the kernel dropped because the TUN queues were full (the
                        // workers did not read them in time): not in the core's counters.
                        let tun_dropped = tun_tx_dropped(&self.cfg.tun_name);
                        info!(sessions = s.tunnels, clients = s.clients.len(), leased, tcp_connections = self.tcp_limits.open(), drops = %drops, tun_tx_dropped = tun_dropped, "status");
                    }
                }
            }
        }
        if hand_off {
            drop(admin);
            let e = self.hand_off().await;
            tracing::error!(error = %format!("{e:#}"), "handoff failed; the gateway stops (its clients reconnect when it is started again)");
            return Err(e);
        }
        notified(
            "STOPPING",
            notifier.stopping("stopping: telling clients to reconnect"),
        );
        for tx in self.inboxes.iter() {
            let _ = tx.send(Msg::Stop).await;
        }
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let _ = joined.await;
        drop(admin);
        let (_, drops, _) = self.merged();
        info!(drops = %drops, "gateway stopped");
        Ok(())
    }

    /// Stops the workers, writes their tunnels to the state file and execs the binary on
    /// disk with the sockets (see `handoff.rs`). Returns only on failure.
    async fn hand_off(&mut self) -> anyhow::Error {
        let started = Instant::now();
        let binary = match handoff::next_binary() {
            Ok(b) => b,
            Err(e) => return e,
        };
        let mut replies = Vec::new();
        for tx in self.inboxes.iter() {
            let (reply, rx) = tokio::sync::oneshot::channel();
            if tx.send(Msg::Handoff(reply)).await.is_err() {
                return anyhow::anyhow!("a worker had stopped");
            }
            replies.push(rx);
        }
        let mut states = Vec::new();
        let mut ended = 0;
        for rx in replies {
            match rx.await {
                Ok((s, e)) => {
                    states.push(s);
                    ended += e;
                }
                Err(_) => return anyhow::anyhow!("a worker stopped without its tunnels"),
            }
        }
        let moved: usize = states.iter().map(|s| s.openvpn.len() + s.ike.len()).sum();
        let path = self.config_dir.join(handoff::STATE_FILE);
        if let Err(e) = handoff::write_state(&path, &states) {
            return e;
        }
        if let Some(t) = &self.kept.tun {
            use std::os::fd::AsRawFd;
            if let Err(e) = handoff::set_tun_persist(t.as_raw_fd(), true) {
                let _ = std::fs::remove_file(&path);
                return anyhow::Error::new(e).context("cannot keep the TUN device across the exec");
            }
        }
        info!(sessions = moved, ended, binary = %binary.display(), state = %path.display(), stopped_in_ms = started.elapsed().as_millis() as u64, "handoff: workers stopped, executing the binary on disk with the sockets");
        let e = handoff::exec(&binary, &self.kept);
        // Still here: nothing takes the keys over; they must not stay on disk.
        let _ = std::fs::remove_file(&path);
        if let Some(t) = &self.kept.tun {
            use std::os::fd::AsRawFd;
            let _ = handoff::set_tun_persist(t.as_raw_fd(), false);
        }
        e
    }

    /// Reloads the CRL when `gatehouse-certs revoke` rewrote it: every worker checks new
    /// sessions against it and ends open ones with a revoked certificate at once.
    async fn check_crl(&mut self) {
        let stamp = FileStamp::of(&self.pki.crl);
        if stamp == self.crl_stamp {
            return;
        }
        if !self.pki.crl.exists() {
            // Deleted: sign it again (the next tick loads it); never reload "nothing revoked".
            crl_upkeep::ensure_present(&self.pki_dir, &self.pki.crl);
            return;
        }
        let ike = if self.cfg.ikev2.enabled {
            let peers = site_peers(&self.cfg, &self.conns);
            match crate::tls::ike_responder_config(&self.pki, &self.cfg, &peers) {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "CRL changed but IKEv2 could not reload it; keeping the previous one");
                    return;
                }
            }
        } else {
            None
        };
        let crls = match core_config::read_crls(&self.pki) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "CRL changed but could not be read; keeping the previous one");
                return;
            }
        };
        if let Err(e) = gatehouse_engine::gateway::RevokedSerials::from_crls(&crls) {
            warn!(error = %e, "CRL changed but could not be parsed; keeping the previous one");
            return;
        }
        let ovpn = match core_config::reload_openvpn(&self.pki, &self.cfg, &self.ovpn) {
            Ok(c) => c,
            Err(e) => {
                // Keep the previous configuration; try again on the next tick.
                warn!(error = %format!("{e:#}"), "CRL changed but could not be loaded; keeping the previous one");
                return;
            }
        };
        let quic = if self.cfg.quic.enabled {
            match crate::tls::quic_server_config(&self.pki, &self.cfg) {
                Ok(q) => Some(q),
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "CRL changed but QUIC could not reload it; keeping the previous one");
                    return;
                }
            }
        } else {
            None
        };
        self.ovpn = ovpn.clone();
        self.crl_stamp = stamp;
        let reload = Arc::new(Reload {
            ovpn,
            ike,
            quic,
            crls,
        });
        for tx in self.inboxes.iter() {
            let _ = tx.send(Msg::Reload(reload.clone())).await;
        }
        info!(crl = %self.pki.crl.display(), "CRL reloaded; open sessions and new connections are checked against it");
        if let Some(m) = &self.membership {
            // Publish a revocation made here at once rather than at the next round.
            m.view.wake.notify_one();
        }
    }

    /// Re-reads the WireGuard client identities when `gatehouse-certs` changed them (an
    /// identity issued or revoked): every worker gets the new peer list, and a revoked
    /// client's tunnel ends at once.
    async fn check_wireguard(&mut self) {
        let path = wireguard::identities_path(&self.pki_dir);
        let stamp = FileStamp::of(&path);
        if stamp == self.wg_stamp {
            return;
        }
        self.wg_stamp = stamp;
        self.send_wireguard("WireGuard identities changed").await;
    }

    /// Builds the WireGuard configuration again and hands it to every worker.
    pub(super) async fn send_wireguard(&mut self, why: &str) {
        let cfg = match wireguard::build(&self.cfg, &self.config_dir, &self.pki_dir) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "{why}, but the WireGuard configuration could not be built; keeping the previous one");
                return;
            }
        };
        if cfg.is_some()
            && !self.wg_on
            && let Err(e) = self.bind_wireguard().await
        {
            warn!(error = %format!("{e:#}"), "{why}: WireGuard peers exist now, but the WireGuard port cannot be bound; fix it and restart");
            return;
        }
        let peers = cfg.as_ref().map_or(0, |c| c.peers.len());
        let cfg = Arc::new(cfg);
        for tx in self.inboxes.iter() {
            let _ = tx.send(Msg::WireGuard(cfg.clone())).await;
        }
        info!(peers, "{why}: WireGuard peers reloaded");
    }

    /// Binds the WireGuard port now (the gateway started without WireGuard) and hands each
    /// worker its socket of the group.
    async fn bind_wireguard(&mut self) -> Result<()> {
        let addr = wireguard::listen_addr(&self.cfg);
        let n = self.inboxes.len();
        let (socks, _) =
            listen::udp_group(addr, n, SOCKET_BUFFER, STEER_MULTIPLIER).with_context(|| {
                format!(
                    "cannot bind UDP {} (`wireguard.port`; is another WireGuard using it?)",
                    listen::describe(addr)
                )
            })?;
        self.kept.keep_group("wg", socks.iter().map(Some))?;
        for (tx, s) in self.inboxes.iter().zip(socks) {
            tx.send(Msg::WireGuardSocket(s))
                .await
                .map_err(|_| anyhow::anyhow!("a worker stopped"))?;
        }
        self.wg_on = true;
        let listening = listeners(&self.cfg, true);
        self.facts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .listeners = listening.clone();
        info!(listening = %listening, "WireGuard started: the first WireGuard peer was configured");
        Ok(())
    }

    /// The workers' last published status, drop counters and leases, added up.
    fn merged(&self) -> (CoreStatus, Drops, usize) {
        let mut merged = CoreStatus::empty();
        let mut drops = Drops::default();
        let mut leased = 0;
        for p in &self.published {
            let p = p.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = &p.status {
                merged.merge(s);
            }
            drops.add(&p.drops);
            // One pool: every worker sees the same count.
            leased = p.leased;
        }
        // Connections refused or shed at accept (counted on this thread).
        drops.add(&self.tcp_limits.drops());
        (merged, drops, leased)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tcp_cap_leaves_descriptors_free() {
        // Room enough: the configured cap.
        assert_eq!(tcp_cap(10_000, Some(65_536), 40), 10_000);
        assert_eq!(tcp_cap(10_000, None, 40), 10_000);
        // A low limit: what is left after the open descriptors and the headroom.
        assert_eq!(tcp_cap(10_000, Some(1024), 40), 1024 - 40 - FD_HEADROOM);
        // Never 0 (the listener still answers, refusing).
        assert_eq!(tcp_cap(10_000, Some(50), 40), 1);
        assert_eq!(tcp_cap(10_000, Some(u64::MAX), 40), 10_000);
    }
}
