//! Site-to-site and VNet-to-VNet connections in the gateway core: IKE SAs with other
//! gateways on the same sockets, timers and ESP data path as remote-access clients.
//!
//! Either end may start an IKE SA; a connection with `initiate = true` starts one whenever
//! it has none (at start-up, and after the SA went away), with a backoff. The router sends
//! the connection's prefixes to its *active* SA. When both gateways start an SA at the same
//! time, both ends keep the one started by the gateway whose identity sorts first, and the
//! other is deleted by its starter. An SA that arrives with INITIAL_CONTACT (the peer
//! restarted) replaces the older ones.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::tunnel::{IkeSa, IkeTunnel, Tunnel};
use super::{Event, GatewayCore, Protocol, SiteConfig, TunnelId};
use crate::esp::EspCipher;
use crate::ikev2::initiator::{IkeInitiator, InitiatorConfig, InitiatorEvent};
use crate::ikev2::responder::ResponderConfig;

/// Longest wait between attempts to bring a connection up.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What operators see of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SiteState {
    Connecting,
    Connected { since: Instant },
    Down { reason: String },
}

/// One `[[connection]]` and its SAs.
pub(super) struct SiteConn {
    pub(super) cfg: SiteConfig,
    /// Every IKE SA of this connection, in any state.
    pub(super) sas: Vec<TunnelId>,
    /// The SA its prefixes are routed to.
    pub(super) active: Option<TunnelId>,
    /// SAs that lost to another one and wait for the peer's Delete.
    pub(super) retiring: Vec<TunnelId>,
    pub(super) state: SiteState,
    /// When to start the next SA (initiating connections without one); None: now.
    pub(super) retry_at: Option<Instant>,
    pub(super) failures: u32,
    pub(super) rx_done: u64,
    pub(super) tx_done: u64,
    /// Removed or replaced by a reload: its SAs are going, it starts and admits no more.
    pub(super) retired: bool,
}

pub(super) fn site_conns(cfgs: &[SiteConfig]) -> Vec<SiteConn> {
    cfgs.iter()
        .map(|cfg| SiteConn {
            cfg: cfg.clone(),
            sas: Vec::new(),
            active: None,
            retiring: Vec::new(),
            state: SiteState::Connecting,
            retry_at: None,
            failures: 0,
            rx_done: 0,
            tx_done: 0,
            retired: false,
        })
        .collect()
}

/// Our side of an SA with the connection, as the initiator.
pub(super) fn initiator_config(rc: &ResponderConfig, s: &SiteConfig) -> Arc<InitiatorConfig> {
    Arc::new(InitiatorConfig {
        policy: s.peer.policy.clone(),
        trust: rc.trust.clone(),
        time: rc.time.clone(),
        cert_chain: rc.cert_chain.clone(),
        key: rc.key.clone(),
        rng: rc.rng.clone(),
        remote_id: None,
        dpd_interval: s.dpd,
        fragment_size: rc.fragment_size,
        ike_lifetime: s.ike_lifetime,
        child_lifetime: s.child_lifetime,
        request_ipv6: false,
        site: Some(s.peer.clone()),
    })
}

impl GatewayCore {
    /// Anti-spoofing for sites: a site SA may send from its connection's remote prefixes.
    pub(super) fn site_may_send(&self, id: TunnelId, src: IpAddr) -> bool {
        self.ike(id)
            .and_then(|t| t.site)
            .and_then(|i| self.sites.get(i))
            .is_some_and(|s| match src {
                IpAddr::V4(src) => {
                    s.cfg.remote_address_space.iter().any(|n| n.contains(&src))
                        || (s.cfg.own_interface && self.interface_may_send(src))
                }
                IpAddr::V6(src) => s
                    .cfg
                    .remote_address_space_v6
                    .iter()
                    .any(|n| n.contains(&src)),
            })
    }

    /// When an initiating connection without an SA tries next.
    pub(super) fn next_site_attempt(&self) -> Option<Instant> {
        self.cfg.ikev2.as_ref()?;
        if !self.initiating {
            return None;
        }
        self.sites
            .iter()
            .filter(|s| s.cfg.initiate && !s.retired && s.sas.is_empty())
            .map(|s| s.retry_at.unwrap_or(self.cfg.start))
            .min()
    }

    /// Starts SAs for initiating connections that have none and whose backoff elapsed.
    pub(super) fn start_site_sas(&mut self, now: Instant) {
        let Some(rc) = self.cfg.ikev2.clone() else {
            return;
        };
        if !self.initiating {
            return;
        }
        for idx in 0..self.sites.len() {
            let s = &self.sites[idx];
            if !s.cfg.initiate
                || s.retired
                || !s.sas.is_empty()
                || s.retry_at.is_some_and(|t| t > now)
            {
                continue;
            }
            let ic = initiator_config(&rc, &s.cfg);
            let target = s.cfg.remote;
            let name = s.cfg.peer.name.clone();
            let entropy = (self.entropy)();
            let mut init = IkeInitiator::new(ic, entropy, now, target);
            init.set_spi_table(self.shard.spis().clone());
            let id = self.new_tunnel_id();
            let mut t = IkeTunnel::new(
                IkeSa::Initiator(Box::new(init)),
                Some(idx),
                Some(name.clone()),
            );
            for spi in t.local_spis() {
                self.by_local_spi.insert(spi, id);
            }
            self.tunnels.insert(id, Tunnel::Ike(Box::new(t)));
            let s = &mut self.sites[idx];
            s.sas.push(id);
            s.retry_at = None;
            info!(connection = %name, remote = %target, "connection initiating");
            self.dirty.push(id);
        }
    }

    /// Whether connections with `initiate = true` start SAs (the default). An HA standby
    /// turns it off until it takes over: an SA it started would compete with the active
    /// gateway's, which it takes over with the copy instead.
    pub fn set_site_initiation(&mut self, on: bool) {
        self.initiating = on;
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
        let Some(idx) = self
            .sites
            .iter()
            .position(|s| !s.retired && s.cfg.peer.name == name)
        else {
            return;
        };
        let serial = self
            .tunnels
            .get(&id)
            .and_then(|t| t.peer_certificate())
            .and_then(super::cert_serial);
        if serial.as_deref().is_some_and(|s| self.revoked.contains(s)) {
            warn!(connection = %name, "connection refused: certificate revoked (listed in the CRL)");
            if let Some(t) = self.ike_mut(id) {
                t.sa.delete(now, "certificate revoked");
            }
            self.dirty.push(id);
            return;
        }
        let stale: Vec<TunnelId> = if initial_contact {
            self.sites[idx]
                .sas
                .iter()
                .copied()
                .filter(|o| *o != id)
                .filter(|o| self.ike(*o).is_some_and(|e| e.established.is_some()))
                .collect()
        } else {
            Vec::new()
        };
        for o in &stale {
            if let Some(e) = self.ike_mut(*o) {
                info!(connection = %name, remote = %e.sa.peer(), "the peer restarted (INITIAL_CONTACT): its old SA goes");
                e.sa.delete(now, "the peer restarted (INITIAL_CONTACT)");
            }
            self.sites[idx].retiring.push(*o);
            self.dirty.push(*o);
        }
        let Some(e) = self.ike_mut(id) else {
            return;
        };
        debug!(connection = %name, ike_id = %ike_id, remote = %e.sa.peer(), "site authenticated");
        e.site = Some(idx);
        e.common.client = Some(name.to_owned());
        e.common.serial = serial;
        if let IkeSa::Responder(r) = &mut e.sa {
            r.accept_site(now);
        }
        let s = &mut self.sites[idx];
        if !s.sas.contains(&id) {
            s.sas.push(id);
        }
        self.dirty.push(id);
    }

    /// Events of an SA we started (site connections only).
    pub(super) fn initiator_event(&mut self, now: Instant, id: TunnelId, ev: InitiatorEvent) {
        match ev {
            InitiatorEvent::Connected {
                our_spi,
                cipher,
                sa,
                subnets,
                ..
            } => {
                self.esp_install(id, our_spi, *sa, false);
                if let Some(e) = self.ike(id) {
                    debug!(connection = %e.common.client.as_deref().unwrap_or("?"), remote_selectors = ?subnets, "site CHILD SA up");
                }
                self.site_sa_up(now, id, cipher);
            }
            InitiatorEvent::ChildRekeyed { our_spi, sa, .. } => {
                // We started the rekey and the peer answered: it has the new SA.
                self.esp_install(id, our_spi, *sa, false);
                *self.counters.rekeys.get_mut(Protocol::Site) += 1;
                if let Some(e) = self.ike_mut(id) {
                    e.common.last_handshake = Some(now);
                    debug!(connection = %e.common.client.as_deref().unwrap_or("?"), our_spi, "CHILD SA rekeyed");
                }
            }
            InitiatorEvent::ChildDeleted { our_spi } => self.esp_remove(id, our_spi),
            InitiatorEvent::AuthFailed(reason) => {
                self.counters.refused(&reason);
                if let Some(e) = self.ike(id) {
                    warn!(connection = %e.common.client.as_deref().unwrap_or("?"), remote = %e.sa.peer(), reason = %reason, "connection refused");
                }
                // Retrying at once will fail the same way; wait the longest backoff.
                if let Some(s) = self
                    .ike(id)
                    .and_then(|e| e.site)
                    .and_then(|i| self.sites.get_mut(i))
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
        let Some(e) = self.ike_mut(id) else {
            return;
        };
        e.established = Some(now);
        e.connected = true;
        e.common.connected_at = Some(now);
        e.common.last_handshake = Some(now);
        e.common.cipher = Some(crate::ikev2::proposal_names::esp_display_name(cipher));
        let Some(idx) = e.site else {
            return;
        };
        let remote = e.sa.peer();
        let role = match e.sa {
            IkeSa::Initiator(_) => "initiator",
            IkeSa::Responder(_) => "responder",
        };
        *self.counters.handshakes_ok.get_mut(Protocol::Site) += 1;
        // The gateway whose identity sorts first keeps the SAs it started.
        let peer = self.sites[idx].cfg.peer.clone();
        let we_win = peer.local_id < peer.remote_id;
        let s = &self.sites[idx];
        let mut live: Vec<(TunnelId, bool, Instant)> = s
            .sas
            .iter()
            .filter(|o| !s.retiring.contains(o))
            .filter_map(|o| {
                let e = self.ike(*o)?;
                let ours = matches!(e.sa, IkeSa::Initiator(_));
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
        let name = peer.name.clone();
        for o in &deletes {
            if let Some(e) = self.ike_mut(*o) {
                info!(connection = %name, "duplicate SA with the peer: deleting the redundant one");
                e.sa.delete(now, "redundant SA (both gateways started one)");
            }
            self.dirty.push(*o);
        }
        let s = &mut self.sites[idx];
        s.retiring.extend(deletes.iter().chain(retire.iter()));
        let previous = s.active.replace(winner);
        let was_connected = matches!(s.state, SiteState::Connected { .. });
        s.failures = 0;
        if !was_connected {
            s.state = SiteState::Connected { since: now };
        }
        let prefixes = s.cfg.prefixes();
        let kind = s.cfg.kind;
        if previous != Some(winner) {
            for p in &prefixes {
                self.router.insert_net(*p, winner);
            }
        }
        if !was_connected || winner == id {
            info!(
                connection = %name,
                kind = %kind,
                remote = %remote,
                role,
                cipher = %crate::ikev2::proposal_names::esp_display_name(cipher),
                prefixes = ?prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "connection up"
            );
        }
        if !was_connected {
            self.events.push_back(Event::SiteUp { name });
        }
    }

    /// A site SA is over: route to another one, or mark the connection down and plan the
    /// next attempt.
    pub(super) fn site_sa_gone(&mut self, now: Instant, id: TunnelId, reason: &str) {
        self.drop_esp(id);
        let Some(e) = self.ike_mut(id) else {
            return;
        };
        let Some(idx) = e.site.take() else {
            return;
        };
        let (rx, tx) = (e.rx_bytes, e.tx_bytes);
        let established = e.established.is_some();
        let next: Option<TunnelId> = {
            let s = &self.sites[idx];
            s.sas
                .iter()
                .copied()
                .filter(|o| *o != id && !s.retiring.contains(o))
                .filter(|o| self.ike(*o).is_some_and(|e| e.established.is_some()))
                .max_by_key(|o| self.ike(*o).and_then(|e| e.established))
        };
        let s = &mut self.sites[idx];
        s.sas.retain(|o| *o != id);
        s.retiring.retain(|o| *o != id);
        s.rx_done += rx;
        s.tx_done += tx;
        let name = s.cfg.peer.name.clone();
        let prefixes = s.cfg.prefixes();
        let mut down = false;
        if s.active == Some(id) {
            s.active = next;
            if next.is_none() {
                s.state = SiteState::Down {
                    reason: reason.to_owned(),
                };
                down = true;
                info!(
                    connection = %name,
                    reason = %reason,
                    rx_bytes = s.rx_done,
                    tx_bytes = s.tx_done,
                    "connection down"
                );
            }
            for p in &prefixes {
                match next {
                    Some(n) => self.router.insert_net(*p, n),
                    None => self.router.remove_net(*p, id),
                }
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
        let s = &mut self.sites[idx];
        if s.sas.is_empty() && s.cfg.initiate && !s.retired {
            s.failures = s.failures.saturating_add(1);
            let backoff = Duration::from_secs(1u64 << s.failures.min(5)).min(MAX_BACKOFF);
            s.retry_at = Some(now + backoff);
        }
        if down {
            self.events.push_back(Event::SiteDown {
                name,
                reason: reason.to_owned(),
            });
        }
    }

    /// Applies a reloaded list of this worker's connections: a connection removed or
    /// changed is retired (its SAs are deleted, its routes go), a new or changed one starts
    /// afresh; untouched ones keep their SAs. Returns the SAs deleted.
    pub(super) fn set_sites(&mut self, now: Instant, new: &[SiteConfig]) -> usize {
        let mut ended = 0;
        for idx in 0..self.sites.len() {
            let s = &self.sites[idx];
            if s.retired || new.contains(&s.cfg) {
                continue;
            }
            let name = s.cfg.peer.name.clone();
            let sas = s.sas.clone();
            info!(connection = %name, "connection removed or changed by a reload: its SAs end");
            self.sites[idx].retired = true;
            for id in sas {
                if let Some(e) = self.ike_mut(id) {
                    e.sa.delete(now, "the connection was removed or changed by a reload");
                    ended += 1;
                }
                self.dirty.push(id);
            }
        }
        for cfg in new {
            if !self.sites.iter().any(|s| !s.retired && s.cfg == *cfg) {
                info!(connection = %cfg.peer.name, remote = %cfg.remote, "connection added by a reload");
                self.sites.extend(site_conns(std::slice::from_ref(cfg)));
            }
        }
        ended
    }

    /// A removed tunnel leaves its connection's lists (if `site_sa_gone` did not run).
    pub(super) fn forget_site_sa(&mut self, idx: usize, id: TunnelId) {
        let Some(s) = self.sites.get_mut(idx) else {
            return;
        };
        s.sas.retain(|o| *o != id);
        s.retiring.retain(|o| *o != id);
        if s.active == Some(id) {
            s.active = None;
            for p in s.cfg.prefixes() {
                self.router.remove_net(p, id);
            }
        }
    }
}
