//! In-memory tests of the OpenVPN sessions: a gateway [`ServerSession`] and a
//! [`ClientSession`] on a virtual clock, joined by a seeded lossy/reordering link
//! ([`pair::Pair`]). Each file tests one thing a user would notice.
//!
//! [`ServerSession`]: super::server::ServerSession
//! [`ClientSession`]: super::client::ClientSession

mod basics;
mod certs;
mod compat;
mod limits;
mod link;
mod malformed;
mod negotiation;
mod pair;
mod rekey;
mod timeouts;
mod wrappers;
