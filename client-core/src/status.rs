//! What the connection manager reports: the state machine users see and the counters. These
//! values travel over the client-service IPC as JSON, so the CLI and the desktop app render
//! the same thing.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::profile::ProtocolKind;

/// The connection state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConnectionState {
    /// No tunnel and none wanted.
    Disconnected,
    /// Dialling the gateway.
    Connecting {
        /// Profile being connected.
        profile: String,
        /// Protocol being tried.
        protocol: ProtocolKind,
    },
    /// The tunnel is up.
    Connected {
        /// Profile in use.
        profile: String,
        /// When it came up (seconds since the Unix epoch).
        since: u64,
        /// Our virtual address.
        address: Ipv4Addr,
        /// The gateway we are connected to (host:port).
        gateway: String,
        /// Protocol in use.
        protocol: ProtocolKind,
    },
    /// The tunnel went away; trying again without user action.
    Reconnecting {
        /// Profile being reconnected.
        profile: String,
        /// How many attempts so far.
        attempt: u32,
        /// Why the last attempt ended.
        reason: String,
    },
    /// Gave up; the reason says what to do.
    Error {
        /// Profile that failed, if any.
        profile: Option<String>,
        /// What went wrong and what to do.
        reason: String,
    },
}

impl ConnectionState {
    /// A one-word name of the state.
    pub fn name(&self) -> &'static str {
        match self {
            ConnectionState::Disconnected => "Disconnected",
            ConnectionState::Connecting { .. } => "Connecting",
            ConnectionState::Connected { .. } => "Connected",
            ConnectionState::Reconnecting { .. } => "Reconnecting",
            ConnectionState::Error { .. } => "Error",
        }
    }
}

/// Byte and packet counters of the current connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Bytes received through the tunnel (inner IP bytes).
    pub rx_bytes: u64,
    /// Bytes sent through the tunnel.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

/// A status snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The state.
    #[serde(flatten)]
    pub state: ConnectionState,
    /// Counters of the current (or last) connection.
    pub counters: Counters,
    /// Connect requests the manager has taken so far. The answer to a Connect carries the
    /// number of that request: a front end knows a status is about its own request when it
    /// carries that number or a later one, even when the status went from Connecting to
    /// Error faster than the front end could see (status updates keep only the latest).
    #[serde(default)]
    pub request: u64,
    /// How often the current connection moved to a new local address without reconnecting
    /// (QUIC connection migration: Wi-Fi to cellular, a new DHCP lease). Starts at 0 with
    /// every connection.
    #[serde(default)]
    pub path_changes: u32,
    /// The kill switch is on: nothing but the tunnel gets out (also while reconnecting, and
    /// after a crash until the user disconnects).
    #[serde(default)]
    pub kill_switch: bool,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            state: ConnectionState::Disconnected,
            counters: Counters::default(),
            request: 0,
            path_changes: 0,
            kill_switch: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_flat_and_tagged() {
        let s = Status {
            state: ConnectionState::Connected {
                profile: "work".into(),
                since: 1,
                address: Ipv4Addr::new(172, 16, 201, 2),
                gateway: "vpn:1194".into(),
                protocol: ProtocolKind::OpenvpnUdp,
            },
            counters: Counters::default(),
            request: 3,
            path_changes: 2,
            kill_switch: false,
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["state"], "connected");
        assert_eq!(j["address"], "172.16.201.2");
        assert_eq!(j["protocol"], "openvpn-udp");
        assert_eq!(j["counters"]["rx_bytes"], 0);
        assert_eq!(j["path_changes"], 2);
        let back: Status = serde_json::from_value(j).unwrap();
        assert_eq!(back, s);
    }
}
