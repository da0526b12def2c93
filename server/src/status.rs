//! The running gateway's status for operators: `status.json` next to `gateway.toml`,
//! rewritten every two seconds by `gatehoused run` and shown by `gatehoused status`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The file name, in the configuration's directory.
pub const STATUS_FILE: &str = "status.json";

/// A status older than this means the gateway is not running (it writes every 2 s).
pub const STALE_AFTER: Duration = Duration::from_secs(10);

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

/// Where the status of the gateway configured by `config_dir/gateway.toml` lives.
pub fn path(config_dir: &Path) -> PathBuf {
    config_dir.join(STATUS_FILE)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes `status` atomically (a temporary file renamed over the old one).
pub fn write(config_dir: &Path, status: &GatewayStatus) -> Result<()> {
    let target = path(config_dir);
    let tmp = config_dir.join(format!(".{STATUS_FILE}.tmp"));
    let text = serde_json::to_string_pretty(status)?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &target).with_context(|| format!("renaming to {}", target.display()))
}

/// Reads the status; fails when there is none or it is stale (the gateway is not running).
pub fn read(config_dir: &Path) -> Result<GatewayStatus> {
    let p = path(config_dir);
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "no status at {}: is gatehoused running with this configuration? (`gatehoused run --config ...`)",
            p.display()
        )
    })?;
    let s: GatewayStatus =
        serde_json::from_str(&text).with_context(|| format!("{} is not a status", p.display()))?;
    let age = now_secs().saturating_sub(s.updated);
    if age > STALE_AFTER.as_secs() {
        bail!(
            "the status in {} is {age} s old: gatehoused is not running (it rewrites the file every 2 s)",
            p.display()
        );
    }
    Ok(s)
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
    fn round_trip_and_staleness() {
        let dir = tempfile::tempdir().expect("tempdir");
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
        write(dir.path(), &s).expect("write");
        assert_eq!(read(dir.path()).expect("read"), s);
        let table = render(&s);
        assert!(table.contains("onprem-east"), "{table}");
        assert!(table.contains("1.5 KiB"), "{table}");
        assert!(table.contains("openvpn tcp connections: 3"), "{table}");
        assert!(table.contains("dropped: tcpperip=4"), "{table}");
        // A status written before these fields still reads.
        let legacy: GatewayStatus =
            serde_json::from_str(r#"{"updated":1,"clients":0,"connections":[]}"#).expect("old");
        assert_eq!(legacy.tcp_connections, 0);
        let old = GatewayStatus {
            updated: s.updated - 60,
            ..s
        };
        write(dir.path(), &old).expect("write");
        let e = read(dir.path()).expect_err("stale").to_string();
        assert!(e.contains("not running"), "{e}");
    }

    #[test]
    fn missing_status_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read(dir.path()).expect_err("missing").to_string();
        assert!(e.contains("is gatehoused running"), "{e}");
    }
}
