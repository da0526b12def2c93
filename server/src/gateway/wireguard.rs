//! WireGuard for the driver: the gateway's key (`wireguard.key` next to `gateway.toml`), the
//! peers the core gets (`type = "wireguard"` connections and the PKI's WireGuard client
//! identities), and whether the listener runs.

use std::path::{Path, PathBuf};

use anyhow::Result;
use gatehouse_engine::wireguard::{WgKey, WgPeerConfig, WgRole, WireGuardConfig};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracing::warn;

use crate::config::{GatewayConfig, WgConnection};

/// The gateway's WireGuard key, created (0600) on first use.
pub fn gateway_key(config_dir: &Path) -> Result<WgKey> {
    gatehouse_certs::wireguard::gateway_key(config_dir)
}

/// The registry of WireGuard client identities the gateway watches.
pub fn identities_path(pki_dir: &Path) -> PathBuf {
    gatehouse_certs::wireguard::registry_path(pki_dir)
}

/// The client peers: every identity not revoked whose address is a client address of the
/// pool (others are skipped with a warning). With `client_pool_v6` each also has the IPv6
/// address its IPv4 address maps to (as every client of the pool does).
fn client_peers(cfg: &GatewayConfig, pki_dir: &Path) -> Result<Vec<WgPeerConfig>> {
    let pool6 = cfg
        .client_pool_v6()?
        .and_then(|v6| gatehouse_engine::pool6::Ipv6Pool::new(cfg.client_pool, v6).ok());
    let mut out = Vec::new();
    for id in gatehouse_certs::wireguard::identities(pki_dir)? {
        if id.revoked.is_some() {
            continue;
        }
        if !cfg.client_pool.contains(&id.address) {
            warn!(client = %id.name, address = %id.address, client_pool = %cfg.client_pool, "WireGuard identity skipped: its address is outside `client_pool` (revoke it and issue it again)");
            continue;
        }
        let public_key = match id.key() {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "WireGuard identity skipped");
                continue;
            }
        };
        out.push(WgPeerConfig {
            name: id.name,
            role: WgRole::Client {
                address: id.address,
            },
            public_key,
            endpoint: None,
            allowed: std::iter::once(IpNet::from(Ipv4Net::from(id.address)))
                .chain(pool6.map(|p| IpNet::from(Ipv6Net::from(p.address_of(id.address)))))
                .collect(),
            persistent_keepalive: None,
        });
    }
    Ok(out)
}

fn site_peer(c: &WgConnection) -> WgPeerConfig {
    WgPeerConfig {
        name: c.name.clone(),
        role: WgRole::Site { kind: "wireguard" },
        public_key: c.public_key,
        endpoint: c.endpoint,
        allowed: c
            .remote_address_space
            .iter()
            .map(|n| IpNet::from(*n))
            .chain(c.remote_address_space_v6.iter().map(|n| IpNet::from(*n)))
            .collect(),
        persistent_keepalive: c.persistent_keepalive,
    }
}

/// The core's WireGuard configuration, or None when WireGuard is off (`[wireguard] enabled
/// = false`, or by default when there is no WireGuard connection or identity).
pub fn build(
    cfg: &GatewayConfig,
    config_dir: &Path,
    pki_dir: &Path,
) -> Result<Option<WireGuardConfig>> {
    let conns = cfg.wireguard_connections()?;
    let clients = client_peers(cfg, pki_dir)?;
    let on = cfg
        .wireguard
        .enabled
        .unwrap_or(!conns.is_empty() || !clients.is_empty());
    if !on {
        return Ok(None);
    }
    let mut peers: Vec<WgPeerConfig> = conns.iter().map(site_peer).collect();
    for c in clients {
        if let Some(s) = peers.iter().find(|p| p.public_key == c.public_key) {
            warn!(client = %c.name, connection = %s.name, "WireGuard identity skipped: connection has the same public key");
            continue;
        }
        peers.push(c);
    }
    Ok(Some(WireGuardConfig {
        private_key: gateway_key(config_dir)?,
        peers,
    }))
}

/// What the listener binds, for the socket, the log and the firewall.
pub fn listen_addr(cfg: &GatewayConfig) -> gatehouse_netio::udp::Bind {
    gatehouse_netio::udp::Bind::new(cfg.wireguard.listen, cfg.wireguard.port)
}

/// IPv4 prefixes behind WireGuard sites (routed to the TUN device).
pub fn site_prefixes(cfg: &GatewayConfig) -> Vec<Ipv4Net> {
    cfg.wireguard_connections()
        .unwrap_or_default()
        .into_iter()
        .flat_map(|c| c.remote_address_space)
        .collect()
}

/// IPv6 prefixes behind WireGuard sites (routed to the TUN device).
pub fn site_prefixes_v6(cfg: &GatewayConfig) -> Vec<Ipv6Net> {
    cfg.wireguard_connections()
        .unwrap_or_default()
        .into_iter()
        .flat_map(|c| c.remote_address_space_v6)
        .collect()
}
