//! One gateway on many workers: each worker runs its own [`GatewayCore`](super::GatewayCore)
//! over a share of the tunnels ("one tunnel, one worker", so a tunnel's packets are never
//! reordered and its data path takes no lock), and the cores share only what admission
//! needs: the address pool, the one-session-per-certificate rule, the ESP SPI set, the
//! wrapped-reset replay cache and a directory of where control traffic went after a peer moved.
//! None of these is touched per data packet.
//!
//! Where a packet belongs is computed, not looked up:
//! - the gateway steers datagrams to the worker of their source address ([`worker_of_ip`]; the
//!   driver installs the same function as the sockets' reuseport program), so a client's
//!   OpenVPN or IKE (500 and 4500) traffic and its ESP reach the worker that holds its tunnel;
//! - an OpenVPN peer-id, an inbound ESP SPI and a leased client address name their worker
//!   ([`Shard::owns_id`], [`Shard::owner_of_addr`]): a data packet that arrives elsewhere (the
//!   peer moved to a new address, the kernel's TUN queue choice) is handed over
//!   ([`Forward`]) instead of dropped;
//! - control packets of a moved peer, and client addresses leased outside their worker's
//!   share (a returning client keeps its address; a worker whose share ran out borrows), are
//!   found in the shared directory.
//!
//! With one worker everything stays local and nothing is ever forwarded.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::Ipv4Net;

use super::{Listener, TunnelId};
use crate::esp::SpiTable;
use crate::ikev2::psk_throttle::PskThrottle;
use crate::openvpn::wrap::FirstPacketReplays;
use crate::pool::{AddressPool, PoolError};

/// Multiplier of the source-address hash (Fibonacci hashing). The driver's reuseport program
/// uses the same constant and shift: `((ip * M) >> 16) % workers`.
pub const STEER_MULTIPLIER: u32 = 0x9E37_79B1;

/// The worker that holds the tunnels of a peer at `ip`: a hash of the IPv4 address (of the
/// last 32 bits of an IPv6 one), as the driver's socket steering computes it.
pub fn worker_of_ip(ip: IpAddr, workers: usize) -> usize {
    let v = match ip {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            u32::from_be_bytes([o[12], o[13], o[14], o[15]])
        }
    };
    (v.wrapping_mul(STEER_MULTIPLIER) >> 16) as usize % workers.max(1)
}

/// A client's login, gateway-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Login {
    pub worker: usize,
    pub tunnel: TunnelId,
    pub addr: Ipv4Addr,
}

/// What the directory finds: who holds a moved peer's control traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum DirKey {
    /// An OpenVPN UDP client's current address.
    OpenVpn(SocketAddr),
    /// One of our IKE SPIs.
    IkeSpi(u64),
    /// A client address leased outside its worker's share (a client kept its address on
    /// another worker, or the worker's share ran out).
    Addr(Ipv4Addr),
}

/// State the workers share (control plane only).
pub struct Shared {
    pool: Mutex<AddressPool>,
    logins: Mutex<HashMap<String, Login>>,
    directory: Mutex<HashMap<DirKey, usize>>,
    first_replays: Mutex<FirstPacketReplays>,
    spis: Arc<SpiTable>,
    /// Failed site PSK authentications, gateway-wide.
    psk_throttle: Arc<PskThrottle>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One worker's place among `count`.
#[derive(Clone)]
pub struct Shard {
    index: usize,
    count: usize,
    shared: Arc<Shared>,
    /// This worker's view of the SPI set (draws SPIs it owns).
    spis: Arc<SpiTable>,
}

impl Shard {
    /// `count` workers sharing one pool over `client_pool`.
    pub fn split(client_pool: Ipv4Net, count: usize) -> Result<Vec<Shard>, PoolError> {
        let count = count.max(1);
        let spis = Arc::new(SpiTable::new());
        let shared = Arc::new(Shared {
            pool: Mutex::new(AddressPool::new(client_pool)?),
            logins: Mutex::new(HashMap::new()),
            directory: Mutex::new(HashMap::new()),
            first_replays: Mutex::new(FirstPacketReplays::new(Duration::from_secs(120), 16384)),
            spis: spis.clone(),
            psk_throttle: Arc::new(PskThrottle::new()),
        });
        Ok((0..count)
            .map(|index| Shard {
                index,
                count,
                shared: shared.clone(),
                spis: Arc::new(spis.shard_view(index as u32, count as u32)),
            })
            .collect())
    }

    /// This worker's number.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of workers.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The worker an id (peer-id, inbound ESP SPI) belongs to.
    pub fn owner_of_id(&self, id: u32) -> usize {
        id as usize % self.count
    }

    /// True when this worker hands out `id`.
    pub fn owns_id(&self, id: u32) -> bool {
        self.owner_of_id(id) == self.index
    }

    /// The worker that leases `addr` of the pool (by its offset in the pool), or None when
    /// `addr` is not a client address of the pool.
    pub fn owner_of_addr(&self, addr: Ipv4Addr) -> Option<usize> {
        let net = lock(&self.shared.pool).network();
        if !net.contains(&addr) {
            return None;
        }
        let off = u32::from(addr) - u32::from(net.network());
        Some(off as usize % self.count)
    }

    /// Replaces the shared pool with one over `net` (a reload changed `client_pool`),
    /// unless another worker did already; leases of the old pool are forgotten (their
    /// sessions end).
    pub(super) fn replace_pool(&self, net: Ipv4Net) -> Result<(), PoolError> {
        let mut p = lock(&self.shared.pool);
        if p.network() != net.trunc() {
            *p = AddressPool::new(net)?;
        }
        Ok(())
    }

    pub(super) fn pool(&self) -> MutexGuard<'_, AddressPool> {
        lock(&self.shared.pool)
    }

    pub(super) fn logins(&self) -> MutexGuard<'_, HashMap<String, Login>> {
        lock(&self.shared.logins)
    }

    pub(super) fn directory(&self) -> MutexGuard<'_, HashMap<DirKey, usize>> {
        lock(&self.shared.directory)
    }

    pub(super) fn first_replays(&self) -> MutexGuard<'_, FirstPacketReplays> {
        lock(&self.shared.first_replays)
    }

    pub(super) fn spis(&self) -> &Arc<SpiTable> {
        &self.spis
    }

    pub(super) fn psk_throttle(&self) -> &Arc<PskThrottle> {
        &self.shared.psk_throttle
    }

    /// True when this worker may lease `addr`.
    pub(super) fn may_lease(&self, net: Ipv4Net, addr: Ipv4Addr) -> bool {
        // Wrapping: during a pool change `net` may be the old pool for a moment.
        let off = u32::from(addr).wrapping_sub(u32::from(net.network()));
        off as usize % self.count == self.index
    }

    /// Every SPI held gateway-wide (tests and status).
    pub fn spis_held(&self) -> usize {
        self.shared.spis.len()
    }
}

/// Work for another worker: a packet that arrived here but belongs to a tunnel there, or an
/// order to end a session there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// A datagram for the worker's core (`handle_forwarded_datagram`).
    Datagram {
        /// The worker.
        worker: usize,
        /// The socket it arrived on.
        listener: Listener,
        /// Its sender.
        remote: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// A TUN packet for one of the worker's tunnels (`handle_forwarded_tun`).
    Tun {
        /// The worker.
        worker: usize,
        /// The IP packet.
        packet: Vec<u8>,
    },
    /// A newer login of `client` on another worker replaces tunnel `tunnel` (`end_login`).
    EndLogin {
        /// The worker.
        worker: usize,
        /// The old tunnel.
        tunnel: TunnelId,
        /// Its client.
        client: String,
    },
}

impl Forward {
    /// The worker this is for.
    pub fn worker(&self) -> usize {
        match self {
            Forward::Datagram { worker, .. }
            | Forward::Tun { worker, .. }
            | Forward::EndLogin { worker, .. } => *worker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_spreads_addresses_and_is_stable() {
        let mut seen = [0usize; 4];
        for i in 2..202u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0afa_0000 + i * 4));
            let w = worker_of_ip(ip, 4);
            assert_eq!(w, worker_of_ip(ip, 4));
            seen[w] += 1;
        }
        assert!(seen.iter().all(|&n| n > 20), "{seen:?}");
        assert_eq!(worker_of_ip("10.0.0.1".parse().unwrap(), 1), 0);
    }

    #[test]
    fn ids_and_addresses_name_their_worker() {
        let shards = Shard::split("10.8.0.0/24".parse().unwrap(), 2).unwrap();
        assert!(shards[0].owns_id(4) && shards[1].owns_id(5));
        assert_eq!(
            shards[0].owner_of_addr("10.8.0.3".parse().unwrap()),
            Some(1)
        );
        assert_eq!(
            shards[1].owner_of_addr("10.8.0.4".parse().unwrap()),
            Some(0)
        );
        assert_eq!(shards[0].owner_of_addr("10.9.0.4".parse().unwrap()), None);
    }
}
