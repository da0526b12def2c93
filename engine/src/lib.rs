//! Gatehouse engine: the sans-IO core shared by the gateway and the client.
//!
//! Nothing in this crate touches a socket, a TUN device, a clock or the OS random number
//! generator. Every protocol is a state machine that is fed bytes and `now: Instant` and
//! returns bytes, events and its next deadline; the tokio drivers in `gatehouse-server` and
//! `gatehouse-client` own the I/O. That keeps every protocol testable in memory on a virtual
//! clock (see the tests next to each module).

#[cfg(test)]
mod alloc_count;
#[cfg(test)]
mod cert_matrix;
pub mod cert_policy;
pub mod deadlines;
pub mod entropy;
pub mod esp;
/// Fuzz entry points (feature `fuzzing`: the fuzz crate and the corpus replay tests). Only
/// they read a clock origin and the OS RNG; the engine proper never does.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod idhash;
pub mod ikev2;
pub mod openvpn;
pub mod pool;
pub mod pool6;
pub mod quic;
pub mod router;
pub mod wire;
pub mod wireguard;
