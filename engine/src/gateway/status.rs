//! What the core tells operators: clients, site connections, drops.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::sites::SiteState;
use super::tunnel::{IkeSa, Tunnel};
use super::{Counters, GatewayCore, PerProtocol, Protocol, Traffic, TunnelId};

/// One IKE SA of a site connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaStatus {
    /// Its tunnel.
    pub tunnel: TunnelId,
    /// The IKE SPIs (initiator's, responder's), hex.
    pub ike_spis: String,
    /// `initiator` (we started it) or `responder`.
    pub role: &'static str,
    /// Whether its prefixes are routed to it.
    pub active: bool,
    /// Seconds since its first CHILD SA came up (None: not up).
    pub established_secs: Option<u64>,
    /// Seconds since its keys were last negotiated.
    pub last_handshake_secs: Option<u64>,
    /// The CHILD SA's cipher.
    pub cipher: Option<String>,
    /// Inner traffic through it.
    pub traffic: Traffic,
}

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
    /// Its IKE SAs.
    pub sas: Vec<SaStatus>,
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
    /// Seconds since it came up.
    pub connected_secs: u64,
    /// Seconds since its keys were last negotiated.
    pub last_handshake_secs: Option<u64>,
    /// The data cipher.
    pub cipher: String,
    /// Inner traffic so far.
    pub traffic: Traffic,
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
    /// Running totals; `ended_traffic` here includes the live tunnels' traffic.
    pub counters: Counters,
}

impl CoreStatus {
    /// A status with nothing in it (to merge workers' into).
    pub fn empty() -> Self {
        CoreStatus {
            clients: Vec::new(),
            sites: Vec::new(),
            tunnels: 0,
            counters: Counters::default(),
        }
    }

    /// Adds another core's status (a gateway's workers): lists joined, counts added.
    pub fn merge(&mut self, o: &CoreStatus) {
        self.clients.extend(o.clients.iter().cloned());
        self.sites.extend(o.sites.iter().cloned());
        self.tunnels += o.tunnels;
        self.counters.add(&o.counters);
    }
}

fn secs_since(now: Instant, t: Option<Instant>) -> Option<u64> {
    t.map(|t| now.saturating_duration_since(t).as_secs())
}

impl GatewayCore {
    /// The current status.
    pub fn status(&self, now: Instant) -> CoreStatus {
        let mut clients: Vec<TunnelSummary> = self
            .tunnels
            .iter()
            .filter(|(_, t)| !t.is_site())
            .filter(|(_, t)| t.common().connected_at.is_some())
            .map(|(id, t)| {
                let c = t.common();
                TunnelSummary {
                    tunnel: *id,
                    client: c.client.clone().unwrap_or_default(),
                    address: c.address,
                    remote: t.remote(),
                    protocol: t.protocol(),
                    connected_secs: secs_since(now, c.connected_at).unwrap_or(0),
                    last_handshake_secs: secs_since(now, c.last_handshake),
                    cipher: c.cipher.clone().unwrap_or_default(),
                    traffic: t.traffic(),
                }
            })
            .collect();
        clients.sort_by_key(|c| c.tunnel);
        let sites = self
            .sites
            .iter()
            .filter(|s| !s.retired)
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
                    sas: s
                        .sas
                        .iter()
                        .filter_map(|o| self.sa_status(now, *o, s.active))
                        .collect(),
                }
            })
            .chain(self.wg_site_status(now))
            .collect();
        let mut counters = self.counters.clone();
        let mut live: PerProtocol<Traffic> = PerProtocol::default();
        for t in self.tunnels.values() {
            live.get_mut(t.protocol()).add(&t.traffic());
        }
        for p in Protocol::ALL {
            counters.ended_traffic.get_mut(p).add(live.get(p));
        }
        CoreStatus {
            clients,
            sites,
            tunnels: self.tunnels.len(),
            counters,
        }
    }

    fn sa_status(&self, now: Instant, id: TunnelId, active: Option<TunnelId>) -> Option<SaStatus> {
        let Some(Tunnel::Ike(e)) = self.tunnels.get(&id) else {
            return None;
        };
        let (i, r) = e.sa.spis();
        Some(SaStatus {
            tunnel: id,
            ike_spis: format!("{i:016x}_i {r:016x}_r"),
            role: match e.sa {
                IkeSa::Initiator(_) => "initiator",
                IkeSa::Responder(_) => "responder",
            },
            active: active == Some(id),
            established_secs: secs_since(now, e.established),
            last_handshake_secs: secs_since(now, e.common.last_handshake),
            cipher: e.common.cipher.clone(),
            traffic: Traffic {
                rx_bytes: e.rx_bytes,
                tx_bytes: e.tx_bytes,
                rx_packets: e.rx_packets,
                tx_packets: e.tx_packets,
            },
        })
    }
}
