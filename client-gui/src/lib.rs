//! `gatehouse-gui`: the desktop app remote workers launch - import the profile the admin
//! sent, press Connect, see that it works.
//!
//! It is a front end to the client service of `gatehouse-client` (the same JSON-lines socket
//! the `gatehouse` CLI uses); no protocol code lives here. The UI thread never waits: a
//! [`worker`] thread owns the socket, the profile store and the keyring, takes
//! [`worker::Command`]s and reports [`worker::Event`]s, and wakes the UI when one arrives.
//!
//! ```text
//! GatehouseApp (UI thread)  --Command-->  Worker (thread + tokio)  --JSON lines-->  client service
//!        ^                                    |   ProfileStore, keyring, gui.toml
//!        +------------Event + request_repaint-+
//! ```
//!
//! [`GatehouseApp::new`] takes an [`AppConfig`] so tests run the real app against a fake
//! service, a temporary home and a hand-driven clock; `main` builds it from the environment.

pub mod app;
pub mod clock;
pub mod format;
pub mod graph;
pub mod logbook;
pub mod profile_settings;
pub mod settings;
mod theme;
mod views;
pub mod worker;

pub use app::{AppConfig, GatehouseApp, ServiceState, TITLE};
