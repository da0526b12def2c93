//! Gatehouse client core: profiles and keys, the connection manager that drives the engine's
//! client state machines over UDP/TCP and a TUN device, and the privileged client service the
//! CLI and desktop app talk to.
//!
//! A [`ProfileStore`] keeps profiles (servers, protocols, CA, client certificate, ciphers,
//! control-channel wrapper settings) in `GATEHOUSE_HOME/profiles/` and their secrets - the
//! private key and, for `.ovpn` profiles with `tls-auth`/`tls-crypt`/`tls-crypt-v2`, the
//! wrapper key ([`secrets`]) - in the OS keyring, or where none is reachable in owner-only key
//! files ([`KeyStore`]). Profiles come from Gatehouse profile files (`gatehouse-certs export
//! --format gatehouse`) or stock `.ovpn` files as install scripts and appliances write them
//! ([`ovpn`]: what cannot be honoured is refused at import, by name).
//!
//! ```no_run
//! use gatehouse_client::ProfileStore;
//! # fn main() -> Result<(), gatehouse_client::ProfileError> {
//! let store = ProfileStore::open_default()?;
//! let imported = store.import("alice.ovpn".as_ref(), None)?;
//! for warning in &imported.warnings {
//!     eprintln!("warning: {warning}");
//! }
//! let key_pem = store.key_pem(&imported.profile.name)?; // for the client service
//! # let _ = key_pem;
//! # Ok(())
//! # }
//! ```
//!
//! The connection manager ([`manager`]) drives the engine's client sessions (trying an
//! `.ovpn` profile's servers in order), the client service ([`service`]) serves front ends,
//! and [`platform`] applies routes (full tunnel included) and DNS, journaled so a disconnect,
//! Ctrl-C or the next start after a crash restores the host exactly.

mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod manager;
pub mod ovpn;
pub mod platform;
pub mod profile;
pub mod profile_settings;
pub mod routing;
pub mod secrets;
pub mod service;
pub mod status;
mod store;
pub mod trusted;

pub use error::{ProfileError, Result};
pub use keys::{KeyStore, Keyring};
pub use profile::{
    ControlWrap, KeyLocation, Protocol, ProtocolKind, Remote, Source, StoredProfile, WrapKind,
    X509NameCheck, X509NameKind, check_name,
};
pub use store::{Imported, ProfileStore, home_dir};
