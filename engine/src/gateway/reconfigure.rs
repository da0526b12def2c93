//! A reloaded configuration applied to a running core (`gatehoused` on SIGHUP or `ctl
//! reload`): what it pushes to new clients (routes, DNS, full tunnel), the OpenVPN and IKEv2
//! configurations (ciphers, proposals, site peers), limits, and the site connections (added,
//! changed, removed). Tunnels the change does not touch keep running; the client pool cannot
//! change under leased addresses and is refused.

use std::time::Instant;

use super::{CoreConfig, GatewayCore, worker_of_ip};

/// Why a configuration cannot be applied to a running core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    /// The client pool changed.
    #[error(
        "`client_pool` changed ({old} -> {new}): leased addresses and the TUN address depend on it; restart gatehoused to apply it"
    )]
    PoolChanged {
        /// The running pool.
        old: ipnet::Ipv4Net,
        /// The new one.
        new: ipnet::Ipv4Net,
    },
    /// OpenVPN or IKEv2 was turned on or off.
    #[error(
        "{0} was turned on or off: its listeners are bound at start; restart gatehoused to apply it"
    )]
    ListenerChanged(&'static str),
}

impl GatewayCore {
    /// Checks that `cfg` can replace the running configuration (see [`Self::reconfigure`]).
    pub fn can_reconfigure(&self, cfg: &CoreConfig) -> Result<(), ReconfigureError> {
        if cfg.client_pool != self.cfg.client_pool {
            return Err(ReconfigureError::PoolChanged {
                old: self.cfg.client_pool,
                new: cfg.client_pool,
            });
        }
        if cfg.openvpn.is_some() != self.cfg.openvpn.is_some() {
            return Err(ReconfigureError::ListenerChanged("OpenVPN"));
        }
        if cfg.ikev2.is_some() != self.cfg.ikev2.is_some() {
            return Err(ReconfigureError::ListenerChanged("IKEv2"));
        }
        Ok(())
    }

    /// Applies `cfg`; returns the tunnels it ended (SAs of removed or changed connections).
    /// New sessions get the new routes, DNS and ciphers; open ones keep what they
    /// negotiated (their renegotiations use the new OpenVPN configuration).
    pub fn reconfigure(
        &mut self,
        now: Instant,
        cfg: CoreConfig,
    ) -> Result<usize, ReconfigureError> {
        self.can_reconfigure(&cfg)?;
        let CoreConfig {
            client_pool: _,
            address_space,
            dns,
            full_tunnel,
            openvpn,
            ikev2,
            cookie_threshold,
            max_half_open,
            max_half_open_per_ip,
            max_handshaking,
            sites,
            unix_time: _,
            start: _,
        } = cfg;
        self.cfg.address_space = address_space;
        self.cfg.dns = dns;
        self.cfg.full_tunnel = full_tunnel;
        self.cfg.cookie_threshold = cookie_threshold;
        self.cfg.max_half_open = max_half_open;
        self.cfg.max_half_open_per_ip = max_half_open_per_ip;
        self.cfg.max_handshaking = max_handshaking;
        if let Some(o) = openvpn {
            self.set_openvpn_config(o);
        }
        if let Some(i) = ikev2 {
            self.set_ikev2_config(i);
        }
        let count = self.shard.count();
        let index = self.shard.index();
        let mine: Vec<_> = sites
            .iter()
            .filter(|s| worker_of_ip(s.remote.ip(), count) == index)
            .cloned()
            .collect();
        let ended = self.set_sites(now, &mine);
        self.cfg.sites = sites;
        self.flush(now);
        Ok(ended)
    }
}
