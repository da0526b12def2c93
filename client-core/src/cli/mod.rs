//! The `gatehouse` subcommands. Each prints for a person on stdout (warnings and notes on
//! stderr) and returns an error whose message says what to do.

pub mod connection;
pub mod network;
pub mod profiles;
