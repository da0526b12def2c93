//! QUIC point-to-site tunnels (docs/quic.md), sans-IO on `quinn-proto`.
//!
//! The gateway core keeps one [`QuicEndpoint`] per worker for its QUIC listener and one
//! [`QuicSession`] per client connection. TLS 1.3 with mandatory client certificates is
//! checked by the same verifier as the OpenVPN path
//! ([`crate::openvpn::tls::server_config_min_version`]); IP packets travel in DATAGRAM frames,
//! the configuration as capsules ([`crate::wire::capsule`]) on the client's control stream.
//!
//! Everything quinn-proto would take from the system is handed in: its RNG seed, the
//! stateless-reset and token keys and the connection-id generator come from the core's
//! entropy, its wall clock from the `now` the core is given ([`clock::CoreClock`]).

pub mod cid;
pub mod clock;
pub mod config;
pub mod endpoint;
pub mod session;

pub use cid::{CID_LEN, ShardCids, worker_of_datagram};
pub use config::{QuicConfig, QuicConfigError};
pub use endpoint::QuicEndpoint;
pub use session::{QuicSession, SessionEvent};

/// The ALPN protocol name of Gatehouse's QUIC tunnels.
pub const ALPN: &[u8] = b"gatehouse-ip/1";

/// Application error codes in CONNECTION_CLOSE (docs/quic.md, "Closing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// Normal close (user disconnect, gateway shutdown).
    Normal = 0x0,
    /// The certificate was revoked (final: the client does not reconnect).
    Revoked = 0x1,
    /// No address left in the pool.
    PoolExhausted = 0x2,
    /// The same certificate connected again elsewhere.
    Replaced = 0x3,
    /// Disconnected by the operator.
    Operator = 0x4,
    /// Protocol error on the control stream.
    Protocol = 0x5,
}

impl CloseCode {
    /// The code as a QUIC varint.
    pub fn varint(self) -> quinn_proto::VarInt {
        quinn_proto::VarInt::from_u32(self as u32)
    }
}
