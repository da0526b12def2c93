//! Turns `gateway.toml`, its `[[connection]]`s and the PKI files into the engine core's
//! configuration. Files are read here; the core never touches them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use gatehouse_engine::gateway::{CoreConfig, SiteConfig};
use gatehouse_engine::ikev2::site::{SiteAuth, SitePeer};
use gatehouse_engine::openvpn::server::ServerConfig;
use gatehouse_engine::openvpn::tls::crls_from_pem;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::{Connection, ConnectionAuth, GatewayConfig};
use crate::tls::{PkiPaths, ike_responder_config, openvpn_server_config};

/// OpenVPN sessions still handshaking beyond which new hard resets are dropped.
pub const MAX_HANDSHAKING: usize = 4096;

/// Refuses to run connections without IKEv2.
pub fn check_enabled(cfg: &GatewayConfig, conns: &[Connection]) -> Result<()> {
    if !conns.is_empty() && !cfg.ikev2.enabled {
        bail!(
            "gateway.toml has [[connection]] entries but `[ikev2] enabled = false`; site-to-site tunnels run on IKEv2: enable it or remove the connections"
        );
    }
    Ok(())
}

/// The engine's view of the connections: selectors, identities, keys.
pub fn site_peers(cfg: &GatewayConfig, conns: &[Connection]) -> Vec<Arc<SitePeer>> {
    let mut local: Vec<IpNet> = cfg.address_space.iter().map(|n| IpNet::V4(*n)).collect();
    local.push(IpNet::V4(cfg.client_pool.trunc()));
    // Our IPv6 networks: offered to dual-stack sites only.
    let mut local6: Vec<IpNet> = cfg
        .address_space_v6()
        .unwrap_or_default()
        .into_iter()
        .map(IpNet::V6)
        .collect();
    local6.extend(cfg.client_pool_v6().ok().flatten().map(IpNet::V6));
    conns
        .iter()
        .map(|c| {
            let dual = !c.remote_address_space_v6.is_empty();
            let mut any = vec![IpNet::V4(Ipv4Net::default())];
            if dual {
                any.push(IpNet::V6(Ipv6Net::default()));
            }
            let mut local = local.clone();
            if dual {
                local.extend(local6.iter().copied());
            }
            let remote: Vec<IpNet> = c
                .remote_address_space
                .iter()
                .map(|n| IpNet::V4(*n))
                .chain(c.remote_address_space_v6.iter().map(|n| IpNet::V6(*n)))
                .collect();
            Arc::new(SitePeer {
                name: c.name.clone(),
                remote_addr: c.remote_gateway,
                remote_id: c.remote_id.clone(),
                local_id: c
                    .local_id
                    .clone()
                    .unwrap_or_else(|| cfg.public_addr.clone()),
                auth: match &c.auth {
                    ConnectionAuth::Psk(k) => SiteAuth::Psk(k.clone()),
                    ConnectionAuth::Certificate => SiteAuth::Certificate,
                },
                local_ts: if c.policy_based { local } else { any.clone() },
                remote_ts: if c.policy_based { remote } else { any },
                policy: c.ike_policy.clone(),
                any_remote_addr: c.remote_gateway_any,
            })
        })
        .collect()
}

fn site_configs(conns: &[Connection], peers: &[Arc<SitePeer>]) -> Vec<SiteConfig> {
    conns
        .iter()
        .zip(peers.iter().cloned())
        .map(|(c, peer)| SiteConfig {
            kind: c.kind.as_str(),
            initiate: c.initiate,
            remote: SocketAddr::new(c.remote_gateway, c.remote_port),
            local_address: c.local_address,
            remote_address_space: c.remote_address_space.clone(),
            remote_address_space_v6: c.remote_address_space_v6.clone(),
            dpd: c.dpd,
            ike_lifetime: c.ike_lifetime,
            child_lifetime: c.child_lifetime,
            peer,
            own_interface: c.interface.is_some(),
        })
        .collect()
}

/// The configured source address of each site peer (`local_address`), for the driver's IKE
/// and NAT-T sockets.
pub fn source_pins(cfg: &CoreConfig) -> HashMap<IpAddr, IpAddr> {
    cfg.sites
        .iter()
        .filter_map(|s| Some((s.remote.ip(), s.local_address?)))
        .collect()
}

/// Warns of each `local_address` this host does not have now (a typo, or an HA standby
/// before the floating address moves to it): packets from it would not leave.
pub fn warn_absent_local_addresses(conns: &[Connection]) {
    for c in conns {
        let Some(a) = c.local_address else { continue };
        if let Err(e) = std::net::UdpSocket::bind(SocketAddr::new(a, 0)) {
            tracing::warn!(
                connection = %c.name,
                local_address = %a,
                error = %e,
                "`local_address` is not an address of this host now: its packets cannot leave until it is (fine on an HA standby that has not taken the floating address)"
            );
        }
    }
}

/// Everything the core needs, read from the configuration and the PKI folder.
pub fn build(
    cfg: &GatewayConfig,
    config_dir: &Path,
    pki: &PkiPaths,
    conns: &[Connection],
    now: Instant,
) -> Result<CoreConfig> {
    check_enabled(cfg, conns)?;
    let peers = site_peers(cfg, conns);
    let mut ovpn = openvpn_server_config(pki, cfg)?;
    Arc::make_mut(&mut ovpn).wrap = super::wrap::load(cfg, config_dir, true)?;
    let openvpn = (cfg.openvpn.udp_port != 0 || cfg.openvpn.tcp_port != 0).then_some(ovpn);
    let ikev2 = if cfg.ikev2.enabled {
        Some(ike_responder_config(pki, cfg, &peers)?)
    } else {
        None
    };
    Ok(CoreConfig {
        client_pool: cfg.client_pool,
        address_space: cfg.address_space.clone(),
        client_pool_v6: cfg.client_pool_v6()?,
        address_space_v6: cfg.address_space_v6()?,
        dns: cfg.dns.clone(),
        dns_domains: cfg.pushed_dns_domains(),
        full_tunnel: cfg.full_tunnel,
        openvpn,
        ikev2,
        cookie_threshold: cfg.ikev2.cookie_threshold,
        max_half_open: gatehouse_engine::gateway::DEFAULT_MAX_HALF_OPEN,
        max_half_open_per_ip: gatehouse_engine::gateway::DEFAULT_MAX_HALF_OPEN_PER_IP,
        max_handshaking: MAX_HANDSHAKING,
        sites: site_configs(conns, &peers),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        start: now,
    })
}

/// A reloaded OpenVPN configuration (new CRL) that keeps the running wrapper.
pub fn reload_openvpn(
    pki: &PkiPaths,
    cfg: &GatewayConfig,
    wrap: &ServerConfig,
) -> Result<Arc<ServerConfig>> {
    let mut c = openvpn_server_config(pki, cfg)?;
    Arc::make_mut(&mut c).wrap = wrap.wrap.clone();
    Ok(c)
}

/// The CRLs in the PKI's `crl.pem` (DER); none when the file is missing.
pub fn read_crls(pki: &PkiPaths) -> Result<Vec<Vec<u8>>> {
    match crate::tls::read_crl(&pki.crl)? {
        Some(pem) => Ok(crls_from_pem(&pem)
            .with_context(|| format!("{}", pki.crl.display()))?
            .into_iter()
            .map(|c| c.as_ref().to_vec())
            .collect()),
        None => Ok(Vec::new()),
    }
}
