//! The OpenVPN protocol: control-channel reliability, data-channel keys and crypto,
//! anti-replay. Packet codecs live in [`crate::wire::openvpn`].

pub mod data;
pub mod keys;
pub mod reliable;
pub mod replay;
