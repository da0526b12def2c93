//! Batched packet I/O shared by the gateway (`gatehoused`) and the client (`gatehouse`).
//!
//! - [`udp`]: `recvmmsg` with UDP GRO in, `sendmsg` with UDP GSO out (quinn-udp), so one
//!   system call moves tens of datagrams.
//! - [`tun`] (Linux): a TUN device with virtio-net headers, so the kernel hands over TCP
//!   segments up to 64 KiB (TSO) that are split here, and takes back coalesced ones (GRO).
//!
//! Nothing here decides anything about a packet: the engine's state machines do.

#[cfg(target_os = "linux")]
mod few;
pub mod logging;
#[cfg(unix)]
pub mod notify;
#[cfg(target_os = "linux")]
mod sockopt;
#[cfg(target_os = "linux")]
pub mod tun;
pub mod udp;
