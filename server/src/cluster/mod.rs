//! Active-active (issue 17, docs/ha.md): every node of a cluster serves its own clients and
//! shares, through etcd under `/gatehouse/<cluster>/`:
//!
//! - `pool/<block>`: which node holds each block of `client_pool` ([`blocks`]), under that
//!   node's lease, so a dead node's blocks come back after the lease's TTL;
//! - `crl`: the CRLs in force ([`crl`]), written by the node where a certificate was
//!   revoked and installed by every other one;
//! - `config`: the settings every node applies on top of its gateway.toml ([`shared_config`]);
//! - `sessions/<node>`: each node's session list ([`NodeSessions`]), under its lease.
//!
//! Everything read from etcd is untrusted input: sizes are capped, and what does not parse
//! or check is logged and left out, never applied.

pub mod blocks;
pub mod crl;
pub mod shared_config;

use serde::{Deserialize, Serialize};

use crate::admin::model::Session;

/// The TTL of a node's lease, in seconds: its blocks and session list outlive a dead node
/// by at most this long.
pub const LEASE_TTL_SECS: u64 = 10;

/// The largest session list read from etcd, in bytes.
pub const MAX_SESSIONS_BYTES: usize = 4 << 20;

/// The most nodes whose session lists are read.
pub const MAX_NODES: usize = 64;

/// A key of cluster `cluster`: `/gatehouse/<cluster>/<what>`.
pub fn key(cluster: &str, what: &str) -> String {
    format!("/gatehouse/{cluster}/{what}")
}

/// What a node writes to `sessions/<node>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSessions {
    /// The node.
    pub node: String,
    /// The blocks of `client_pool` it holds.
    pub blocks: Vec<String>,
    /// Its sessions, as its `GET /v1/sessions` lists them.
    pub sessions: Vec<Session>,
}

/// The session lists of `raw` (key, value) entries read from `sessions/`: one per node,
/// each session marked with its node; entries too large or unparsable are logged and left
/// out.
pub fn cluster_sessions(raw: Vec<(String, Vec<u8>)>) -> Vec<Session> {
    let mut out = Vec::new();
    for (key, value) in raw {
        if value.len() > MAX_SESSIONS_BYTES {
            tracing::warn!(key = %key, bytes = value.len(), "cluster: a session list in etcd is too large; left out");
            continue;
        }
        match serde_json::from_slice::<NodeSessions>(&value) {
            Ok(n) => out.extend(n.sessions.into_iter().map(|mut s| {
                s.node = Some(n.node.clone());
                s
            })),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "cluster: a session list in etcd does not parse; left out")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_lists_from_etcd_are_marked_with_their_node_and_bad_ones_left_out() {
        let good = serde_json::json!({
            "node": "gw1",
            "blocks": ["10.8.0.64/26"],
            "sessions": [{
                "id": 7, "client": "bob", "protocol": "openvpn-udp",
                "virtual_address": "10.8.0.66", "real_address": "192.0.2.1:1194",
                "since": 1, "connected_secs": 2, "last_handshake_secs": null,
                "cipher": "AES-256-GCM", "rx_bytes": 0, "tx_bytes": 0,
                "rx_packets": 0, "tx_packets": 0, "worker": 0,
                "node": "somebody else"
            }]
        });
        let raw = vec![
            (
                "/g/sessions/gw1".to_owned(),
                serde_json::to_vec(&good).unwrap(),
            ),
            ("/g/sessions/bad".to_owned(), b"{\"node\":".to_vec()),
            (
                "/g/sessions/big".to_owned(),
                vec![b' '; MAX_SESSIONS_BYTES + 1],
            ),
        ];
        let all = cluster_sessions(raw);
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].client.as_str(), all[0].node.as_deref()),
            ("bob", Some("gw1"))
        );
    }
}
