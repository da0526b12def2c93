//! What the core tells operators: clients, site connections, drops.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::sites::SiteState;
use super::{GatewayCore, Protocol, TunnelId};

/// One site connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteStatus {
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
    /// Inner bytes received.
    pub rx_bytes: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
}

/// One connected remote-access client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSummary {
    /// Its tunnel.
    pub tunnel: TunnelId,
    /// Its certificate's name.
    pub client: String,
    /// Its virtual address.
    pub address: Option<Ipv4Addr>,
    /// Where it is.
    pub remote: SocketAddr,
    /// How it connected.
    pub protocol: Protocol,
}

/// A snapshot of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreStatus {
    /// Connected remote-access clients.
    pub clients: Vec<TunnelSummary>,
    /// Site connections.
    pub sites: Vec<SiteStatus>,
    /// Tunnels in any state (handshakes included).
    pub tunnels: usize,
}

impl GatewayCore {
    /// The current status.
    pub fn status(&self, now: Instant) -> CoreStatus {
        let mut clients: Vec<TunnelSummary> = self
            .tunnels
            .iter()
            .filter(|(_, t)| t.protocol() != Protocol::Site)
            .filter(|(_, t)| t.common().connected_at.is_some())
            .map(|(id, t)| TunnelSummary {
                tunnel: *id,
                client: t.common().client.clone().unwrap_or_default(),
                address: t.common().address,
                remote: t.remote(),
                protocol: t.protocol(),
            })
            .collect();
        clients.sort_by_key(|c| c.tunnel);
        let sites = self
            .sites
            .iter()
            .map(|s| {
                let (rx, tx) = s
                    .sas
                    .iter()
                    .filter_map(|o| self.ike(*o))
                    .fold((s.rx_done, s.tx_done), |(r, t), e| {
                        (r + e.rx_bytes, t + e.tx_bytes)
                    });
                let (state, detail) = match &s.state {
                    SiteState::Connecting => ("connecting", String::new()),
                    SiteState::Connected { since } => (
                        "connected",
                        format!("for {}s", now.saturating_duration_since(*since).as_secs()),
                    ),
                    SiteState::Down { reason } => ("down", reason.clone()),
                };
                let remote = s
                    .active
                    .and_then(|a| self.ike(a))
                    .map(|e| e.sa.peer().to_string())
                    .unwrap_or_else(|| s.cfg.remote.to_string());
                SiteStatus {
                    name: s.cfg.peer.name.clone(),
                    kind: s.cfg.kind.to_owned(),
                    remote,
                    state: state.into(),
                    detail,
                    rx_bytes: rx,
                    tx_bytes: tx,
                }
            })
            .collect();
        CoreStatus {
            clients,
            sites,
            tunnels: self.tunnels.len(),
        }
    }
}
