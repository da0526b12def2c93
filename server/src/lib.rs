//! Gatehouse gateway (`gatehoused`): configuration, data-directory bootstrap, and the
//! driver that feeds the engine's sans-IO gateway core from sockets, TCP, a TUN device,
//! one timer and the CRL file.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod datadir;
pub mod etcd;
pub mod frr;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod status;
pub mod tls;
pub mod tun;
