//! IKEv2 (RFC 7296).

mod collision;
pub mod crypto;
pub mod initiator;
pub mod message;
pub mod peer_cert;
pub mod proposal;
pub mod proposal_names;
pub mod psk_throttle;
pub mod responder;
pub mod site;

#[cfg(test)]
mod tests;
