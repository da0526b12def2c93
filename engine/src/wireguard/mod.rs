//! WireGuard tunnels: an adapter over boringtun's [`Tunn`](boringtun::noise::Tunn) (the Noise
//! IK handshake, the data path, cookies), so the gateway core can hold WireGuard peers beside
//! its OpenVPN and IKEv2 tunnels.
//!
//! What the core gets from here:
//! - [`WgKey`] / [`WgPublicKey`]: keys as `wg genkey` / `wg pubkey` write them (base64 of 32
//!   bytes), never shown by `Debug`;
//! - [`WgPeerConfig`] / [`WireGuardConfig`]: the peers a gateway knows (sites and VNets from
//!   `[[connection]] type = "wireguard"`, point-to-site clients from the PKI's WireGuard
//!   identities);
//! - [`WgSession`]: one peer's `Tunn` with its endpoint and traffic counters, fed datagrams,
//!   inner packets and timer ticks, returning datagrams to send and decrypted packets.
//!
//! Time and randomness: this is the one part of the engine that does not take them from the
//! driver. boringtun keeps its own timers (REKEY_AFTER_TIME, keepalives, handshake retries)
//! on its own monotonic clock and draws handshake ephemerals from the OS RNG inside `Tunn`;
//! the engine code itself calls neither `Instant::now` nor an OS RNG. The core drives those
//! timers by calling [`WgSession::update_timers`] from its `handle_timeout`: while any
//! WireGuard tunnel exists, `poll_timeout` asks to be woken every [`TIMER_TICK`]. The
//! `now` the core passes in is used only for what the core reports (connected since, last
//! handshake).

mod keys;
mod session;

pub use boringtun::x25519;
pub use keys::{KeyError, WgKey, WgPublicKey};
pub use session::{WgInput, WgSession};

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// How often the core runs boringtun's timers while a WireGuard tunnel exists (WireGuard's
/// own timers have a resolution of about a second; retransmits are due after 5 s).
pub const TIMER_TICK: Duration = Duration::from_millis(250);

/// Handshake messages one core answers per second before it asks for cookies (mac2) under
/// load (boringtun's rate limiter).
pub const HANDSHAKES_PER_SECOND: u64 = 200;

/// What a WireGuard peer is to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WgRole {
    /// A site or VNet (`[[connection]] type = "wireguard"`): it may send from, and receives
    /// the traffic for, its prefixes.
    Site {
        /// `site-to-site` or `vnet-to-vnet` (logs and status).
        kind: &'static str,
    },
    /// A point-to-site client (a stock WireGuard app) with its reserved pool address.
    Client {
        /// Its address in the client pool (reserved for it).
        address: Ipv4Addr,
    },
}

/// One WireGuard peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeerConfig {
    /// The connection's or the client identity's name.
    pub name: String,
    /// Site or client.
    pub role: WgRole,
    /// The peer's public key.
    pub public_key: WgPublicKey,
    /// Where to send handshakes before the peer has sent anything (None: it dials in).
    pub endpoint: Option<SocketAddr>,
    /// What the peer may send from and what is routed to it, both families (a client: its
    /// /32, and its /128 when the gateway has an IPv6 pool).
    pub allowed: Vec<IpNet>,
    /// Send a keepalive after this many idle seconds (NAT mappings).
    pub persistent_keepalive: Option<u16>,
}

impl WgPeerConfig {
    /// Whether any of the peer's prefixes is IPv6.
    pub fn has_ipv6(&self) -> bool {
        self.allowed.iter().any(|n| matches!(n, IpNet::V6(_)))
    }

    /// True for sites and VNets.
    pub fn is_site(&self) -> bool {
        matches!(self.role, WgRole::Site { .. })
    }
}

/// The gateway's WireGuard identity and peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGuardConfig {
    /// The gateway's private key (`DATA_DIR/wireguard.key`).
    pub private_key: WgKey,
    /// Every peer, sites and clients.
    pub peers: Vec<WgPeerConfig>,
}
