//! Site-to-site and VNet-to-VNet connections in the gateway core: IKE SAs with other
//! gateways on the same sockets, timers and ESP data path as remote-access clients.
//!
//! Each `[[connection]]` is a [`SiteConn`]. Either end may start an IKE SA; a connection
//! with `initiate = true` starts one whenever it has none (at start-up, and after the SA
//! went away: the peer restarted, DPD found it dead, authentication failed), with a backoff.
//! The router sends the connection's prefixes to its *active* SA. When both gateways start
//! an SA at the same time, both SAs come up; both ends then keep the one started by the
//! gateway whose identity sorts first, and the other is deleted by the gateway that started
//! it. An SA that arrives with INITIAL_CONTACT (the peer restarted) replaces the older ones.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use gatehouse_engine::esp::EspCipher;
use gatehouse_engine::ikev2::initiator::{IkeInitiator, InitiatorConfig, InitiatorEvent};
use gatehouse_engine::ikev2::responder::ResponderConfig;
use gatehouse_engine::ikev2::site::{SiteAuth, SitePeer};
use gatehouse_engine::router::TunnelId;
use ipnet::Ipv4Net;
use tracing::{debug, info, warn};

use super::ike::{IkeEntry, IkeSa};
use super::{Gateway, OsEntropy};
use crate::config::{Connection, ConnectionAuth, GatewayConfig};
use crate::status::{ConnectionStatus, GatewayStatus};

/// Longest wait between attempts to bring a connection up.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What operators see of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SiteState {
    /// No SA yet; one is being negotiated or will be.
    Connecting,
    /// An SA carries the connection's traffic.
    Connected {
        /// Since when.
        since: Instant,
    },
    /// The last SA went away or the last attempt failed.
    Down {
        /// Why.
        reason: String,
    },
}

/// One `[[connection]]`.
pub(super) struct SiteConn {
    pub(super) conn: Connection,
    pub(super) peer: Arc<SitePeer>,
    /// Every IKE SA of this connection, in any state.
    pub(super) sas: Vec<TunnelId>,
    /// The SA its prefixes are routed to.
    pub(super) active: Option<TunnelId>,
    /// SAs that lost to another one and wait for the peer's Delete.
    pub(super) retiring: Vec<TunnelId>,
    pub(super) state: SiteState,
    /// When to start the next SA (initiating connections without one).
    pub(super) retry_at: Option<Instant>,
    /// Failed attempts in a row (backoff).
    pub(super) failures: u32,
    /// Bytes of SAs that are gone.
    pub(super) rx_done: u64,
    pub(super) tx_done: u64,
}

impl SiteConn {
    /// Anti-spoofing: the connection may send packets from its remote prefixes only.
    pub(super) fn may_send(&self, src: Ipv4Addr) -> bool {
        self.conn
            .remote_address_space
            .iter()
            .any(|n| n.contains(&src))
    }
}

/// The engine's view of the connections: selectors, identities, keys.
pub(crate) fn site_peers(cfg: &GatewayConfig, conns: &[Connection]) -> Vec<Arc<SitePeer>> {
    let any = vec![Ipv4Net::default()];
    let mut local: Vec<Ipv4Net> = cfg.address_space.clone();
    local.push(cfg.client_pool.trunc());
    conns
        .iter()
        .map(|c| {
            Arc::new(SitePeer {
                name: c.name.clone(),
                remote_addr: IpAddr::V4(c.remote_gateway),
                remote_id: c.remote_id.clone(),
                local_id: c
                    .local_id
                    .clone()
                    .unwrap_or_else(|| cfg.public_addr.clone()),
                auth: match &c.auth {
                    ConnectionAuth::Psk(k) => SiteAuth::Psk(k.clone()),
                    ConnectionAuth::Certificate => SiteAuth::Certificate,
                },
                local_ts: if c.policy_based {
                    local.clone()
                } else {
                    any.clone()
                },
                remote_ts: if c.policy_based {
                    c.remote_address_space.clone()
                } else {
                    any.clone()
                },
                policy: c.ike_policy.clone(),
            })
        })
        .collect()
}

/// The connections' state for the gateway, before any SA exists.
pub(super) fn site_conns(conns: Vec<Connection>, peers: &[Arc<SitePeer>]) -> Vec<SiteConn> {
    conns
        .into_iter()
        .zip(peers.iter().cloned())
        .map(|(conn, peer)| SiteConn {
            conn,
            peer,
            sas: Vec::new(),
            active: None,
            retiring: Vec::new(),
            state: SiteState::Connecting,
            retry_at: None,
            failures: 0,
            rx_done: 0,
            tx_done: 0,
        })
        .collect()
}

/// Our side of an SA with the connection, as the initiator.
fn initiator_config(rc: &ResponderConfig, s: &SiteConn) -> Arc<InitiatorConfig> {
    Arc::new(InitiatorConfig {
        policy: s.conn.ike_policy.clone(),
        trust: rc.trust.clone(),
        time: rc.time.clone(),
        cert_chain: rc.cert_chain.clone(),
        key: rc.key.clone(),
        rng: rc.rng.clone(),
        remote_id: None,
        dpd_interval: s.conn.dpd,
        fragment_size: rc.fragment_size,
        ike_lifetime: s.conn.ike_lifetime,
        child_lifetime: s.conn.child_lifetime,
        site: Some(s.peer.clone()),
    })
}

/// Refuses to run connections without IKEv2.
pub(crate) fn check_enabled(cfg: &GatewayConfig, conns: &[Connection]) -> Result<()> {
    if !conns.is_empty() && !cfg.ikev2.enabled {
        bail!(
            "gateway.toml has [[connection]] entries but `[ikev2] enabled = false`; site-to-site tunnels run on IKEv2: enable it or remove the connections"
        );
    }
    Ok(())
}

impl Gateway {
    /// Routes pushed to remote-access clients: the address space and every site's prefixes
    /// (clients reach the sites through the gateway).
    pub(super) fn client_routes(&self) -> Vec<Ipv4Net> {
        let mut routes = self.cfg.address_space.clone();
        if let Some(ike) = self.ike.as_ref() {
            for s in &ike.sites {
                for n in &s.conn.remote_address_space {
                    if !routes.contains(n) {
                        routes.push(*n);
                    }
                }
            }
        }
        routes
    }

    pub(super) fn is_site_sa(&self, id: TunnelId) -> bool {
        self.ike
            .as_ref()
            .and_then(|i| i.entries.get(&id))
            .is_some_and(|e| e.site.is_some())
    }

    /// Starts SAs for initiating connections that have none and whose backoff elapsed.
    pub(super) async fn site_tick(&mut self, now: Instant) {
        let Some(ike) = self.ike.as_mut() else {
            return;
        };
        let mut started = Vec::new();
        for idx in 0..ike.sites.len() {
            let s = &ike.sites[idx];
            if !s.conn.initiate || !s.sas.is_empty() || s.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            let ic = initiator_config(&ike.cfg, s);
            let target = SocketAddr::new(IpAddr::V4(s.conn.remote_gateway), s.conn.remote_port);
            let entropy = Box::new(OsEntropy(ring::rand::SystemRandom::new()));
            let init = IkeInitiator::new(ic, entropy, now, target);
            let id = self.next_id;
            self.next_id += 1;
            ike.by_local_spi.insert(init.spis().0, id);
            let name = s.conn.name.clone();
            ike.entries.insert(
                id,
                IkeEntry::new(
                    IkeSa::Initiator(Box::new(init)),
                    Some(idx),
                    Some(name.clone()),
                ),
            );
            let s = &mut ike.sites[idx];
            s.sas.push(id);
            s.retry_at = None;
            info!(connection = %name, remote = %target, "connection initiating");
            started.push(id);
        }
        for id in started {
            self.drain_ike(now, id).await;
        }
        self.drain_pending(now).await;
    }

    /// A peer authenticated as connection `name` on responder SA `id`.
    pub(super) fn admit_site(
        &mut self,
        now: Instant,
        id: TunnelId,
        name: &str,
        ike_id: &str,
        initial_contact: bool,
    ) {
        let Some(ike) = self.ike.as_mut() else {
            return;
        };
        let Some(idx) = ike.sites.iter().position(|s| s.conn.name == name) else {
            return;
        };
        let stale: Vec<TunnelId> = if initial_contact {
            ike.sites[idx]
                .sas
                .iter()
                .copied()
                .filter(|o| *o != id)
                .filter(|o| ike.entries.get(o).is_some_and(|e| e.established.is_some()))
                .collect()
        } else {
            Vec::new()
        };
        for o in &stale {
            if let Some(e) = ike.entries.get_mut(o) {
                info!(connection = %name, remote = %e.session.peer(), "the peer restarted (INITIAL_CONTACT): its old SA goes");
                e.session
                    .delete(now, "the peer restarted (INITIAL_CONTACT)");
            }
            ike.sites[idx].retiring.push(*o);
            self.pending_drain.push(*o);
        }
        let Some(e) = ike.entries.get_mut(&id) else {
            return;
        };
        debug!(connection = %name, ike_id = %ike_id, remote = %e.session.peer(), "site authenticated");
        e.site = Some(idx);
        e.client = Some(name.to_owned());
        if let IkeSa::Responder(r) = &mut e.session {
            r.accept_site(now);
        }
        let s = &mut ike.sites[idx];
        if !s.sas.contains(&id) {
            s.sas.push(id);
        }
    }

    /// Events of an SA we started (site connections only).
    pub(super) fn handle_initiator_event(
        &mut self,
        now: Instant,
        id: TunnelId,
        ev: InitiatorEvent,
    ) {
        let Some(ike) = self.ike.as_mut() else {
            return;
        };
        match ev {
            InitiatorEvent::Connected {
                our_spi,
                cipher,
                sa,
                subnets,
                ..
            } => {
                let sa = *sa;
                ike.esp_in.insert(our_spi, (id, sa.inbound));
                if let Some(e) = ike.entries.get_mut(&id) {
                    e.esp_out = Some(sa.outbound);
                    e.our_spis.push(our_spi);
                    debug!(connection = %e.client.as_deref().unwrap_or("?"), remote_selectors = ?subnets, "site CHILD SA up");
                }
                self.site_sa_up(now, id, cipher);
            }
            InitiatorEvent::ChildRekeyed { our_spi, sa, .. } => {
                let sa = *sa;
                ike.esp_in.insert(our_spi, (id, sa.inbound));
                if let Some(e) = ike.entries.get_mut(&id) {
                    e.esp_out = Some(sa.outbound);
                    e.our_spis.push(our_spi);
                    debug!(connection = %e.client.as_deref().unwrap_or("?"), our_spi, "CHILD SA rekeyed");
                }
            }
            InitiatorEvent::ChildDeleted { our_spi } => {
                ike.esp_in.remove(&our_spi);
                if let Some(e) = ike.entries.get_mut(&id) {
                    e.our_spis.retain(|s| *s != our_spi);
                }
            }
            InitiatorEvent::AuthFailed(reason) => {
                if let Some(e) = ike.entries.get(&id) {
                    warn!(connection = %e.client.as_deref().unwrap_or("?"), remote = %e.session.peer(), reason = %reason, "connection refused");
                }
                // Retrying at once will fail the same way; wait the longest backoff.
                if let Some(s) = ike
                    .entries
                    .get(&id)
                    .and_then(|e| e.site)
                    .and_then(|i| ike.sites.get_mut(i))
                {
                    s.failures = s.failures.max(8);
                }
                self.site_sa_gone(now, id, &reason);
            }
            InitiatorEvent::Closed(reason) => self.site_sa_gone(now, id, &reason),
        }
    }

    /// A site SA's first CHILD SA is up: pick the connection's active SA and route to it.
    pub(super) fn site_sa_up(&mut self, now: Instant, id: TunnelId, cipher: EspCipher) {
        let Some(ike) = self.ike.as_mut() else {
            return;
        };
        let Some(e) = ike.entries.get_mut(&id) else {
            return;
        };
        e.established = Some(now);
        e.connected = true;
        let Some(idx) = e.site else {
            return;
        };
        let remote = e.session.peer();
        let role = match e.session {
            IkeSa::Initiator(_) => "initiator",
            IkeSa::Responder(_) => "responder",
        };
        // The gateway whose identity sorts first keeps the SAs it started when both ends
        // started one.
        let we_win = ike.sites[idx].peer.local_id < ike.sites[idx].peer.remote_id;
        let s = &ike.sites[idx];
        let mut live: Vec<(TunnelId, bool, Instant)> = s
            .sas
            .iter()
            .filter(|o| !s.retiring.contains(o))
            .filter_map(|o| {
                let e = ike.entries.get(o)?;
                let ours = matches!(e.session, IkeSa::Initiator(_));
                Some((*o, ours, e.established?))
            })
            .collect();
        // Best first: started by the winning side, then newest.
        live.sort_by(|a, b| {
            let rank = |x: &(TunnelId, bool, Instant)| x.1 == we_win;
            rank(b).cmp(&rank(a)).then(b.2.cmp(&a.2))
        });
        let Some(&(winner, winner_ours, _)) = live.first() else {
            return;
        };
        let mut deletes = Vec::new();
        let mut retire = Vec::new();
        for &(o, ours, _) in live.iter().skip(1) {
            // Its starter deletes a redundant SA: ours we delete; the peer's we delete too
            // when the peer has a newer one (it replaced it), else we wait for its Delete.
            if ours || !winner_ours {
                deletes.push(o);
            } else {
                retire.push(o);
            }
        }
        let name = ike.sites[idx].conn.name.clone();
        for o in &deletes {
            if let Some(e) = ike.entries.get_mut(o) {
                info!(connection = %name, "duplicate SA with the peer: deleting the redundant one");
                e.session
                    .delete(now, "redundant SA (both gateways started one)");
            }
            self.pending_drain.push(*o);
        }
        let s = &mut ike.sites[idx];
        s.retiring.extend(deletes.iter().chain(retire.iter()));
        let previous = s.active.replace(winner);
        let was_connected = matches!(s.state, SiteState::Connected { .. });
        s.failures = 0;
        if !was_connected {
            s.state = SiteState::Connected { since: now };
        }
        let prefixes = s.conn.remote_address_space.clone();
        let kind = s.conn.kind;
        if previous != Some(winner) {
            for p in &prefixes {
                self.router.insert(*p, winner);
            }
        }
        if !was_connected || winner == id {
            info!(
                connection = %name,
                kind = ?kind,
                remote = %remote,
                role,
                cipher = %super::ike::esp_name(cipher),
                prefixes = ?prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "connection up"
            );
        }
    }

    /// A site SA is over: route to another one, or mark the connection down and plan the
    /// next attempt.
    pub(super) fn site_sa_gone(&mut self, now: Instant, id: TunnelId, reason: &str) {
        let Some(ike) = self.ike.as_mut() else {
            return;
        };
        let Some(e) = ike.entries.get_mut(&id) else {
            return;
        };
        let Some(idx) = e.site.take() else {
            return;
        };
        let (rx, tx) = (e.rx_bytes, e.tx_bytes);
        let established = e.established.is_some();
        let next: Option<TunnelId> = {
            let s = &ike.sites[idx];
            s.sas
                .iter()
                .copied()
                .filter(|o| *o != id && !s.retiring.contains(o))
                .filter(|o| ike.entries.get(o).is_some_and(|e| e.established.is_some()))
                .max_by_key(|o| ike.entries.get(o).and_then(|e| e.established))
        };
        let s = &mut ike.sites[idx];
        s.sas.retain(|o| *o != id);
        s.retiring.retain(|o| *o != id);
        s.rx_done += rx;
        s.tx_done += tx;
        let name = s.conn.name.clone();
        let prefixes = s.conn.remote_address_space.clone();
        if s.active == Some(id) {
            s.active = next;
            for p in &prefixes {
                match next {
                    Some(n) => self.router.insert(*p, n),
                    None => self.router.remove(*p, id),
                }
            }
            if next.is_none() {
                s.state = SiteState::Down {
                    reason: reason.to_owned(),
                };
                info!(
                    connection = %name,
                    reason = %reason,
                    rx_bytes = s.rx_done,
                    tx_bytes = s.tx_done,
                    "connection down"
                );
            }
        } else if !established {
            if !matches!(s.state, SiteState::Connected { .. }) {
                s.state = SiteState::Down {
                    reason: reason.to_owned(),
                };
            }
            info!(connection = %name, reason = %reason, "connection attempt failed");
        } else {
            debug!(connection = %name, reason = %reason, "redundant SA gone");
        }
        if s.sas.is_empty() && s.conn.initiate {
            s.failures = s.failures.saturating_add(1);
            let backoff = Duration::from_secs(1u64 << s.failures.min(5)).min(MAX_BACKOFF);
            s.retry_at = Some(now + backoff);
        }
    }

    /// Each connection's state, peer and byte counts.
    pub(super) fn site_statuses(&self, now: Instant) -> Vec<ConnectionStatus> {
        let Some(ike) = self.ike.as_ref() else {
            return Vec::new();
        };
        ike.sites
            .iter()
            .map(|s| {
                let (rx, tx) = s
                    .sas
                    .iter()
                    .filter_map(|o| ike.entries.get(o))
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
                    .and_then(|a| ike.entries.get(&a))
                    .map(|e| e.session.peer().to_string())
                    .unwrap_or_else(|| format!("{}:{}", s.conn.remote_gateway, s.conn.remote_port));
                ConnectionStatus {
                    name: s.conn.name.clone(),
                    kind: s.conn.kind.to_string(),
                    remote,
                    state: state.into(),
                    detail,
                    rx_bytes: rx,
                    tx_bytes: tx,
                }
            })
            .collect()
    }

    /// One status line per connection (the periodic status log).
    pub(super) fn log_site_status(&self, now: Instant) {
        for c in self.site_statuses(now) {
            info!(connection = %c.name, state = %c.state, detail = %c.detail, rx_bytes = c.rx_bytes, tx_bytes = c.tx_bytes, "connection status");
        }
    }

    /// Rewrites `status.json` for `gatehoused status`.
    pub(super) fn write_status(&self, now: Instant) {
        let ike_clients = self.ike.as_ref().map_or(0, |i| {
            i.entries
                .values()
                .filter(|e| e.site.is_none() && e.connected)
                .count()
        });
        let clients = self
            .sessions
            .values()
            .filter(|e| e.connected_at.is_some())
            .count()
            + ike_clients;
        let status = GatewayStatus {
            updated: crate::status::now_secs(),
            clients,
            connections: self.site_statuses(now),
        };
        if let Err(e) = crate::status::write(&self.config_dir, &status) {
            debug!(error = %format!("{e:#}"), "cannot write the status file");
        }
    }
}
