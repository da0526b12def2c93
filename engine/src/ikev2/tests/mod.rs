//! In-memory tests of the IKEv2 initiator against the gateway's responder: both state
//! machines on a virtual clock, joined by a seeded lossy/reordering link ([`pair::Pair`]).
//! Each file tests one thing a user would notice.

mod builtin_clients;
mod child_limits;
mod gateway_rekey;
mod handshake;
mod ipv6;
mod lifecycle;
mod link;
mod malformed;
mod mobike;
mod offload;
mod pair;
mod refusals;
mod rekey;
mod site;
mod site_guard;
