//! The OpenVPN protocol: control-channel reliability, data-channel keys and crypto,
//! anti-replay. Packet codecs live in [`crate::wire::openvpn`].

pub mod client;
pub mod cookie;
pub mod data;
mod datapath;
pub mod export;
mod key_state;
pub mod keymethod;
pub mod keys;
pub mod push;
pub mod reliable;
pub mod replay;
pub mod server;
pub mod tls;
pub mod tls_job;
pub mod wrap;

pub use datapath::{DataOutcome, DataPathError};
pub use export::DataChannelState;
pub use key_state::ControlError;
#[cfg(test)]
mod tests;
