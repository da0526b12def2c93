//! ESP (RFC 4303) in tunnel mode for ESP-in-UDP (RFC 3948) with AEAD ciphers (AES-GCM-16,
//! RFC 4106; ChaCha20-Poly1305, RFC 7634) and AES-CBC (RFC 3602) with HMAC-SHA1-96 (RFC 2404)
//! or HMAC-SHA2 (RFC 4868), which the operating systems' built-in IKEv2 clients propose.
//!
//! An [`EspOutbound`] turns inner IP packets into ESP packets and an [`EspInbound`] does the
//! reverse, both writing into caller-provided buffers (no allocation per packet). The UDP
//! header and the port-4500 demultiplexing of IKE vs ESP are the caller's (see
//! [`crate::wire::ikev2::strip_non_esp_marker`]). Keys come from
//! [`ChildSaKeys`](crate::ikev2::crypto::ChildSaKeys); [`EspSa::from_child_keys`] picks
//! the right half for each direction.

mod cbc;
pub mod export;
pub mod sa;
pub mod spis;
pub mod table;

pub use export::{EspInboundState, EspOutboundState, KeyMaterial};
pub use sa::{EspCipher, EspError, EspInbound, EspOutbound, EspPayload, EspSa};
pub use spis::SpiTable;
pub use table::{EspTable, TableError};
