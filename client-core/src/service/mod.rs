//! The client service: the privileged half of the client (TUN, routes, DNS) behind a local
//! socket. The CLI and the desktop app are unprivileged front ends that send it commands.
//!
//! # Protocol
//!
//! One JSON object per line, both ways, over a Unix stream socket; on Windows the same lines
//! travel over a named pipe, `\\.\pipe\gatehouse`, whose DACL grants the interactive user
//! read and write (see `windows.rs`). A front end sends a [`Request`]; the service answers
//! with one [`Reply`] per request, except `subscribe`, after which the service streams a
//! `status` reply on every change and a `log` reply per log line until the front end hangs up.
//!
//! ```text
//! -> {"cmd":"connect","request":{"profile":{...},"key_pem":"-----BEGIN PRIVATE KEY-----...","protocol":"openvpn-udp"}}
//! <- {"type":"ok","status":{"state":"connecting","profile":"work","protocol":"openvpn-udp","counters":{...}}}
//! -> {"cmd":"status"}
//! <- {"type":"status","status":{"state":"connected","profile":"work","since":1795000000,"address":"172.16.201.2","gateway":"vpn.example.com:1194","protocol":"openvpn-udp","counters":{"rx_bytes":0,...}}}
//! -> {"cmd":"disconnect"}
//! <- {"type":"ok","status":{"state":"disconnected","counters":{...}}}
//! -> {"cmd":"auto_connect","request":{"profile":{...,"auto_connect":"untrusted","trusted_networks":[...]},"key_pem":"..."}}
//! <- {"type":"ok","status":{...}}
//! -> {"cmd":"subscribe"}
//! <- {"type":"status",...}  {"type":"log","line":{"time":...,"level":"info","message":"..."}} ...
//! ```
//!
//! The private key travels from the user's keyring to the service only over this socket and
//! is never written to disk by the service. Who may connect: on Unix the service checks the
//! peer's credentials (SO_PEERCRED) and admits root, its own user, and members of the
//! `gatehouse` group; on Windows the pipe's DACL admits SYSTEM, Administrators, the service's
//! own account and interactive users, and refuses remote clients.

mod auto_connect;
pub mod client;
mod server;
#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::manager::{ConnectRequest, LogLine};
use crate::status::Status;

#[cfg(unix)]
pub use unix::serve;
#[cfg(windows)]
pub use windows::serve;

/// A command from a front end.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Connect (replacing any current connection).
    Connect {
        /// Profile, key and protocol.
        request: Box<ConnectRequest>,
    },
    /// Disconnect and undo every host change. With auto-connect set, the service does not
    /// connect again by itself until the network changes.
    Disconnect,
    /// Set the auto-connect profile: the request's profile says `auto_connect =
    /// "untrusted"` (connect it whenever the network is not one of its trusted networks and
    /// nothing is connected) or `"off"` (stop, if it was that profile). The service keeps it
    /// in memory only; front ends send it again when they start.
    AutoConnect {
        /// Profile (with its trusted networks), key and options, as for `connect`.
        request: Box<ConnectRequest>,
    },
    /// The current status.
    Status,
    /// Stream status changes and log lines.
    Subscribe,
}

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The command was carried out; the status after it.
    Ok {
        /// Status.
        status: Status,
    },
    /// The command failed.
    Error {
        /// What went wrong and what to do.
        message: String,
    },
    /// A status snapshot.
    Status {
        /// Status.
        status: Status,
    },
    /// A log line.
    Log {
        /// The line.
        line: LogLine,
    },
}

/// Where the service listens: `GATEHOUSE_SOCKET`, else the system location
/// (`/run/gatehouse/client.sock`; on Windows the pipe `\\.\pipe\gatehouse`).
pub fn socket_path() -> PathBuf {
    std::env::var_os("GATEHOUSE_SOCKET")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_socket)
}

#[cfg(not(windows))]
fn default_socket() -> PathBuf {
    PathBuf::from("/run/gatehouse/client.sock")
}

#[cfg(windows)]
fn default_socket() -> PathBuf {
    PathBuf::from(r"\\.\pipe\gatehouse")
}

/// The service's own state directory (network journal): `GATEHOUSE_HOME`, else
/// `/var/lib/gatehouse` (on Windows `%ProgramData%\Gatehouse`).
pub fn state_dir() -> PathBuf {
    std::env::var_os("GATEHOUSE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_state_dir)
}

#[cfg(not(windows))]
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/gatehouse")
}

#[cfg(windows)]
fn default_state_dir() -> PathBuf {
    std::env::var_os("ProgramData")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
        .join("Gatehouse")
}
