//! Packet views and codecs. Every parser here takes untrusted bytes and returns an error
//! value on malformed input; none panics and none allocates without bound.

pub mod capsule;
pub mod dns;
pub mod ikev2;
pub mod ip;
pub mod mss;
pub mod openvpn;
