//! What the admin API says, as JSON (docs/admin-api.json describes the same shapes; a test
//! checks the live API against it). `gatehoused ctl` reads these types back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /v1/status`: the gateway at a glance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// gatehoused's version.
    pub version: String,
    /// Seconds since the gateway started.
    pub uptime_secs: u64,
    /// Data-plane workers.
    pub workers: usize,
    /// Remote-access sessions up.
    pub sessions: usize,
    /// Tunnels in any state, handshakes included.
    pub tunnels: usize,
    /// OpenVPN TCP connections open.
    pub tcp_connections: usize,
    /// Every listener, as in the start-up log line.
    pub listeners: String,
    /// The client address pool.
    pub pool: Pool,
    /// Packets dropped, by reason.
    pub drops: BTreeMap<String, u64>,
    /// The CRL in force.
    pub crl: CrlStatus,
    /// Site connections, one line each.
    pub connections: Vec<Connection>,
}

/// The client address pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pool {
    /// Its prefix.
    pub cidr: String,
    /// Addresses clients can lease.
    pub size: u64,
    /// Addresses leased now.
    pub leased: usize,
}

/// The CRL the gateway enforces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CrlStatus {
    /// Where it is read from.
    pub path: String,
    /// Seconds since its (first) `thisUpdate`; null when unreadable.
    pub age_secs: Option<u64>,
    /// Seconds until its (earliest) `nextUpdate`, negative when past; null when none.
    pub next_update_secs: Option<i64>,
    /// Certificates it lists.
    pub revoked: usize,
}

/// `GET /v1/sessions`: one connected remote-access client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// Its tunnel's number (unique on this gateway while it runs).
    pub id: u64,
    /// The certificate's name.
    pub client: String,
    /// `openvpn-udp`, `openvpn-tcp`, `ikev2`, `wireguard` or `quic`.
    pub protocol: String,
    /// Its virtual address.
    pub virtual_address: Option<String>,
    /// Its real (underlay) address and port.
    pub real_address: String,
    /// When it connected (Unix seconds).
    pub since: u64,
    /// Seconds connected.
    pub connected_secs: u64,
    /// Seconds since its keys were last negotiated.
    pub last_handshake_secs: Option<u64>,
    /// The data cipher.
    pub cipher: String,
    /// Inner bytes from the client.
    pub rx_bytes: u64,
    /// Inner bytes to the client.
    pub tx_bytes: u64,
    /// Inner packets from the client.
    pub rx_packets: u64,
    /// Inner packets to the client.
    pub tx_packets: u64,
    /// The data-plane worker that carries it.
    pub worker: usize,
    /// The node of an active-active cluster that holds it (`GET /v1/sessions?cluster=true`
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `GET /v1/connections`: one site-to-site or VNet-to-VNet connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connection {
    /// Its name.
    pub name: String,
    /// `site-to-site`, `vnet-to-vnet` or `wireguard`.
    pub kind: String,
    /// The peer gateway.
    pub remote: String,
    /// `connecting`, `connected` or `down`.
    pub state: String,
    /// Time connected, or why it is down.
    pub detail: String,
    /// Inner bytes received.
    pub rx_bytes: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    /// Its IKE SAs (none for WireGuard connections).
    pub sas: Vec<SecurityAssociation>,
}

/// One IKE SA of a connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecurityAssociation {
    /// Its tunnel's number.
    pub id: u64,
    /// IKE SPIs (initiator's, responder's).
    pub ike_spis: String,
    /// `initiator` (this gateway started it) or `responder`.
    pub role: String,
    /// Whether the connection's prefixes are routed to it.
    pub active: bool,
    /// Seconds since its first CHILD SA came up.
    pub established_secs: Option<u64>,
    /// Seconds since its keys were last negotiated.
    pub last_handshake_secs: Option<u64>,
    /// The CHILD SA's cipher.
    pub cipher: Option<String>,
    /// Inner bytes received.
    pub rx_bytes: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
}

/// `POST /v1/sessions/{client}/disconnect`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disconnected {
    /// The certificate name.
    pub client: String,
    /// Sessions ended.
    pub sessions_ended: usize,
}

/// `POST /v1/certificates/{name}/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revoked {
    /// The certificate's name.
    pub name: String,
    /// Its serial (hex).
    pub serial: String,
    /// Sessions ended.
    pub sessions_ended: usize,
}

/// `POST /v1/reload`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reloaded {
    /// What changed, one line per change (empty: nothing did).
    pub changes: Vec<String>,
    /// Tunnels ended because the change touched them.
    pub tunnels_ended: usize,
}

/// `POST /v1/handoff`: the handoff started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandoffStarted {
    /// The binary the gateway executes (the one now on disk at the path it was started from).
    pub binary: String,
}

/// `POST /v1/takeover`: this gateway is the active one of its pair now (docs/ha.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TakenOver {
    /// This gateway's node name.
    pub node: String,
    /// Sessions taken over from the state in etcd.
    pub sessions: usize,
    /// The node that wrote that state (none when etcd held none).
    pub from: Option<String>,
    /// How old the state was, in milliseconds.
    pub state_age_ms: Option<u64>,
    /// It was the active one already (nothing was done).
    pub already_active: bool,
}

/// Any failed request: the reason, for a person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// What went wrong and what to do.
    pub error: String,
}
