//! `gatehoused status`: the running gateway's status as operators have read it (a table,
//! or JSON with these keys), now fetched from the admin API (`crate::ctl::status`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What the gateway reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// When written (seconds since the Unix epoch).
    pub updated: u64,
    /// Point-to-site clients connected (OpenVPN and IKEv2).
    pub clients: usize,
    /// OpenVPN TCP connections open (handshaking, established or closing).
    #[serde(default)]
    pub tcp_connections: usize,
    /// Drop counters by reason, as in the log (`tcpperip=4 tcphandshake=12`, or `none`).
    #[serde(default)]
    pub drops: String,
    /// One entry per `[[connection]]`.
    pub connections: Vec<ConnectionStatus>,
}

/// One site-to-site / VNet-to-VNet connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// Its name.
    pub name: String,
    /// `site-to-site` or `vnet-to-vnet`.
    pub kind: String,
    /// The peer gateway.
    pub remote: String,
    /// `connecting`, `connected` or `down`.
    pub state: String,
    /// Seconds connected, or why it is down.
    pub detail: String,
    /// Bytes received through the tunnel (inner packets).
    pub rx_bytes: u64,
    /// Bytes sent through the tunnel.
    pub tx_bytes: u64,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The table `gatehoused status` prints.
pub fn render(s: &GatewayStatus) -> String {
    let mut out = format!("point-to-site clients: {}\n", s.clients);
    out.push_str(&format!("openvpn tcp connections: {}\n", s.tcp_connections));
    if !s.drops.is_empty() {
        out.push_str(&format!("dropped: {}\n", s.drops));
    }
    if s.connections.is_empty() {
        out.push_str("no site-to-site connections configured\n");
        return out;
    }
    let rows: Vec<[String; 7]> = s
        .connections
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                c.kind.clone(),
                c.remote.clone(),
                c.state.clone(),
                c.detail.clone(),
                bytes(c.rx_bytes),
                bytes(c.tx_bytes),
            ]
        })
        .collect();
    let head = [
        "CONNECTION",
        "TYPE",
        "REMOTE",
        "STATE",
        "DETAIL",
        "IN",
        "OUT",
    ];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(&format!("{c:<w$}  ", w = widths[i]));
        }
        l.trim_end().to_owned() + "\n"
    };
    out.push_str(&line(head.to_vec()));
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_counts_and_connections() {
        let s = GatewayStatus {
            updated: now_secs(),
            clients: 2,
            tcp_connections: 3,
            drops: "tcpperip=4".into(),
            connections: vec![ConnectionStatus {
                name: "onprem-east".into(),
                kind: "site-to-site".into(),
                remote: "198.51.100.7:4500".into(),
                state: "connected".into(),
                detail: "for 12s".into(),
                rx_bytes: 1536,
                tx_bytes: 10,
            }],
        };
        let table = render(&s);
        assert!(table.contains("onprem-east"), "{table}");
        assert!(table.contains("1.5 KiB"), "{table}");
        assert!(table.contains("openvpn tcp connections: 3"), "{table}");
        assert!(table.contains("dropped: tcpperip=4"), "{table}");
    }
}
