//! Gatehouse gateway (`gatehoused`): configuration, data-directory bootstrap, and the
//! gateway core that drives the engine's sans-IO OpenVPN sessions over UDP, TCP and a TUN
//! device.

pub mod config;
pub mod datadir;
pub mod gateway;
pub mod stats;
pub mod status;
pub mod tls;
pub mod tun;
