//! A reloaded configuration applied to a running core (`gatehoused` on SIGHUP or `ctl
//! reload`): what it pushes to new clients (routes, DNS, full tunnel), the OpenVPN and IKEv2
//! configurations (ciphers, proposals, site peers), limits, and the site connections (added,
//! changed, removed), and the client pool. Tunnels the change does not touch keep running; a
//! new client pool touches every remote-access session: they are told to reconnect, and
//! lease from the new pool.

use std::time::Instant;

use super::{CoreConfig, GatewayCore, worker_of_ip};

/// Why remote-access sessions end when the pool changes.
const POOL_CHANGED: &str = "the client pool changed (reload)";

/// Why a configuration cannot be applied to a running core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    /// The new client pool is unusable.
    #[error("`client_pool` {0}: {1}")]
    Pool(ipnet::Ipv4Net, String),
    /// The new IPv6 client pool is unusable.
    #[error("`client_pool_v6`: {0}")]
    Pool6(String),
    /// OpenVPN or IKEv2 was turned on or off.
    #[error(
        "{0} was turned on or off: its listeners are bound at start; restart gatehoused to apply it"
    )]
    ListenerChanged(&'static str),
}

impl GatewayCore {
    /// Checks that `cfg` can replace the running configuration (see [`Self::reconfigure`]).
    pub fn can_reconfigure(&self, cfg: &CoreConfig) -> Result<(), ReconfigureError> {
        if let Err(e) = crate::pool::AddressPool::new(cfg.client_pool) {
            return Err(ReconfigureError::Pool(cfg.client_pool, e.to_string()));
        }
        if let Some(v6) = cfg.client_pool_v6
            && let Err(e) = crate::pool6::Ipv6Pool::new(cfg.client_pool, v6)
        {
            return Err(ReconfigureError::Pool6(e.to_string()));
        }
        if cfg.openvpn.is_some() != self.cfg.openvpn.is_some() {
            return Err(ReconfigureError::ListenerChanged("OpenVPN"));
        }
        if cfg.ikev2.is_some() != self.cfg.ikev2.is_some() {
            return Err(ReconfigureError::ListenerChanged("IKEv2"));
        }
        Ok(())
    }

    /// Applies `cfg`; returns the tunnels it ended (SAs of removed or changed connections;
    /// with a new client pool, every remote-access session).
    /// New sessions get the new routes, DNS and ciphers; open ones keep what they
    /// negotiated (their renegotiations use the new OpenVPN configuration).
    pub fn reconfigure(
        &mut self,
        now: Instant,
        cfg: CoreConfig,
    ) -> Result<usize, ReconfigureError> {
        self.can_reconfigure(&cfg)?;
        // A new IPv6 pool changes every client's IPv6 address: they reconnect too.
        let pool_changed = cfg.client_pool.trunc() != self.cfg.client_pool.trunc()
            || cfg.client_pool_v6.map(|n| n.trunc()) != self.cfg.client_pool_v6.map(|n| n.trunc());
        let mut ended = 0;
        if pool_changed {
            ended += self.end_all_clients(now, POOL_CHANGED);
            self.shard
                .replace_pool(cfg.client_pool)
                .map_err(|e| ReconfigureError::Pool(cfg.client_pool, e.to_string()))?;
            self.cfg.client_pool = cfg.client_pool;
            self.cfg.client_pool_v6 = cfg.client_pool_v6;
        }
        let CoreConfig {
            client_pool: _,
            client_pool_v6: _,
            address_space,
            address_space_v6,
            dns,
            dns_domains,
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
        let pushed_changed = self.cfg.address_space != address_space
            || self.cfg.dns != dns
            || self.cfg.dns_domains != dns_domains
            || self.cfg.full_tunnel != full_tunnel
            || self.cfg.address_space_v6 != address_space_v6;
        self.cfg.address_space = address_space;
        self.cfg.address_space_v6 = address_space_v6;
        self.cfg.dns = dns;
        self.cfg.dns_domains = dns_domains;
        self.cfg.full_tunnel = full_tunnel;
        if pushed_changed && !pool_changed {
            self.quic_resend_config();
        }
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
        ended += self.set_sites(now, &mine);
        self.cfg.sites = sites;
        self.flush(now);
        Ok(ended)
    }
}
