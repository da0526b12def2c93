//! The control loop's answers to the admin API and SIGHUP: revoking a certificate and
//! reloading gateway.toml.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::handle::{Control, GatewayHandle};
use super::worker::Msg;
use super::{Gateway, core_config};
use crate::admin::model::{Reloaded, Revoked};
use crate::config::GatewayConfig;

/// The keys a reload cannot change (sockets, the TUN device and threads are set up at
/// start), each with how to read it.
fn restart_only(cfg: &GatewayConfig) -> Vec<(&'static str, String)> {
    let o = &cfg.openvpn;
    let i = &cfg.ikev2;
    vec![
        ("tun_name", cfg.tun_name.clone()),
        ("tun_mtu", cfg.tun_mtu.to_string()),
        ("workers", cfg.workers.to_string()),
        ("handshake_threads", cfg.handshake_threads.to_string()),
        ("pki_dir", cfg.pki_dir.display().to_string()),
        ("server_cert", cfg.server_cert.clone()),
        ("admin", format!("{:?}", cfg.admin)),
        ("ha", format!("{:?}", cfg.ha)),
        ("openvpn.listen", format!("{:?}", o.listen)),
        ("openvpn.udp_port", o.udp_port.to_string()),
        ("openvpn.tcp_port", o.tcp_port.to_string()),
        (
            "openvpn.tcp_max_connections",
            o.tcp_max_connections.to_string(),
        ),
        ("openvpn.tcp_max_per_ip", o.tcp_max_per_ip.to_string()),
        (
            "openvpn.tcp_handshake_timeout",
            o.tcp_handshake_timeout.clone(),
        ),
        ("ikev2.enabled", i.enabled.to_string()),
        ("ikev2.listen", format!("{:?}", i.listen)),
        ("ikev2.ike_port", i.ike_port.to_string()),
        ("ikev2.natt_port", i.natt_port.to_string()),
        ("wireguard.listen", format!("{:?}", cfg.wireguard.listen)),
        ("wireguard.port", cfg.wireguard.port.to_string()),
        ("wireguard.enabled", format!("{:?}", cfg.wireguard.enabled)),
        ("quic.enabled", cfg.quic.enabled.to_string()),
        ("quic.listen", format!("{:?}", cfg.quic.listen)),
        ("quic.port", cfg.quic.port.to_string()),
    ]
}

/// What changed between `old` and `new`, one line each, for the log and the API.
fn changes(old: &GatewayConfig, new: &GatewayConfig) -> Vec<String> {
    let mut out = Vec::new();
    let list = |v: &[String]| format!("[{}]", v.join(", "));
    let nets = |v: &[ipnet::Ipv4Net]| list(&v.iter().map(ToString::to_string).collect::<Vec<_>>());
    if old.address_space != new.address_space {
        out.push(format!(
            "address_space: {} -> {}",
            nets(&old.address_space),
            nets(&new.address_space)
        ));
    }
    if old.dns != new.dns {
        let ips =
            |v: &[std::net::IpAddr]| list(&v.iter().map(ToString::to_string).collect::<Vec<_>>());
        out.push(format!("dns: {} -> {}", ips(&old.dns), ips(&new.dns)));
    }
    if old.dns_domains != new.dns_domains {
        out.push(format!(
            "dns_domains: {} -> {}",
            list(&old.dns_domains),
            list(&new.dns_domains)
        ));
    }
    if old.full_tunnel != new.full_tunnel {
        out.push(format!(
            "full_tunnel: {} -> {}",
            old.full_tunnel, new.full_tunnel
        ));
    }
    if old.client_pool != new.client_pool {
        out.push(format!(
            "client_pool: {} -> {} (every remote-access session was told to reconnect)",
            old.client_pool, new.client_pool
        ));
    }
    if old.client_pool_v6 != new.client_pool_v6 {
        let show = |p: &Option<String>| p.clone().unwrap_or_else(|| "(none)".into());
        out.push(format!(
            "client_pool_v6: {} -> {} (every remote-access session was told to reconnect)",
            show(&old.client_pool_v6),
            show(&new.client_pool_v6)
        ));
    }
    if old.address_space_v6 != new.address_space_v6 {
        out.push(format!(
            "address_space_v6: [{}] -> [{}]",
            old.address_space_v6.join(", "),
            new.address_space_v6.join(", ")
        ));
    }
    if old.public_addr != new.public_addr {
        out.push(format!(
            "public_addr: {} -> {}",
            old.public_addr, new.public_addr
        ));
    }
    if old.openvpn != new.openvpn {
        out.push("[openvpn] settings changed (ciphers, timers or wrapper)".to_owned());
    }
    if old.ikev2 != new.ikev2 {
        out.push("[ikev2] settings changed".to_owned());
    }
    for c in &new.connections {
        match old.connections.iter().find(|o| o.name == c.name) {
            None => out.push(format!("connection added: {}", c.name)),
            Some(o) if o != c => out.push(format!("connection changed: {}", c.name)),
            Some(_) => {}
        }
    }
    for o in &old.connections {
        if !new.connections.iter().any(|c| c.name == o.name) {
            out.push(format!("connection removed: {}", o.name));
        }
    }
    out
}

impl Gateway {
    /// Carries out an order from the admin API.
    pub(super) async fn control(&mut self, c: Control, handle: &GatewayHandle) {
        match c {
            Control::Revoke { name, reply } => {
                let r = self
                    .revoke(&name, handle)
                    .await
                    .map_err(|e| format!("{e:#}"));
                let _ = reply.send(r);
            }
            Control::Reload { reply } => {
                let r = self.reload_config().await;
                match &r {
                    Ok(r) => {
                        info!(changes = ?r.changes, tunnels_ended = r.tunnels_ended, "configuration reloaded (admin API)")
                    }
                    Err(e) => {
                        warn!(error = %e, "configuration not reloaded (admin API); the running one stays")
                    }
                }
                let _ = reply.send(r);
            }
            Control::CrlChanged => self.check_crl().await,
            Control::Reresolved(moved) => {
                for m in &moved {
                    info!(connection = %m.name, host = %m.host, from = %m.from, to = %m.to, "the connection's name points to another address now: re-dialling it there");
                }
                let cfg = self.cfg.clone();
                match self.apply(cfg).await {
                    Ok(r) => {
                        info!(changes = ?r.changes, tunnels_ended = r.tunnels_ended, "site connections re-resolved")
                    }
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "site connections not re-resolved; the running ones stay")
                    }
                }
            }
            Control::Shared {
                config,
                from,
                revision,
            } => {
                if self.shared.as_ref() == Some(&config) {
                    return;
                }
                let before = self.shared.replace(config);
                match self.reload_config().await {
                    Ok(r) => {
                        info!(from = %from, revision, changes = ?r.changes, tunnels_ended = r.tunnels_ended, "cluster: applied the cluster's configuration")
                    }
                    Err(e) => {
                        self.shared = before;
                        warn!(from = %from, revision, error = %e, "cluster: the cluster's configuration was not applied here; the running one stays")
                    }
                }
            }
            Control::SetShared { config, reply } => {
                let r = self.set_shared(config).await.map_err(|e| format!("{e:#}"));
                let _ = reply.send(r);
            }
        }
    }

    /// Checks `config` against gateway.toml and puts it into etcd; every node (this one
    /// too) applies it at its next round.
    async fn set_shared(
        &mut self,
        config: crate::cluster::shared_config::SharedConfig,
    ) -> Result<()> {
        let Some(m) = &self.membership else {
            bail!(
                "this gateway is not in an active-active cluster: set `ha.mode = \"active-active\"` (docs/ha.md)"
            );
        };
        let file = GatewayConfig::load(&self.config_path)?;
        super::active_active::publish_config(&m.view, config, &file).await?;
        info!("cluster: configuration put into etcd; every node applies it within seconds");
        Ok(())
    }

    /// Revokes `name` in the PKI's registry, rewrites the CRL and applies it now.
    async fn revoke(&mut self, name: &str, handle: &GatewayHandle) -> Result<Revoked> {
        let dir = self.pki_dir.clone();
        let who = name.to_owned();
        let record = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut pki = gatehouse_certs::Pki::open(&dir)
                .with_context(|| format!("opening the PKI {}", dir.display()))?;
            Ok(pki.revoke(&who, gatehouse_certs::Reason::Unspecified)?)
        })
        .await
        .context("the revocation task failed")??;
        let open = handle
            .snapshot()
            .await
            .status
            .clients
            .iter()
            .filter(|c| c.client == record.name)
            .count();
        info!(name = %record.name, serial = %record.serial, "certificate revoked (admin API)");
        // The CRL file changed: load it now rather than on the next tick.
        self.check_crl().await;
        Ok(Revoked {
            name: record.name,
            serial: record.serial,
            sessions_ended: open,
        })
    }

    /// Re-reads gateway.toml and applies what changed; an invalid file, or a change that
    /// needs a restart, is refused whole and the running configuration stays.
    pub(super) async fn reload_config(&mut self) -> Result<Reloaded, String> {
        self.try_reload().await.map_err(|e| format!("{e:#}"))
    }

    async fn try_reload(&mut self) -> Result<Reloaded> {
        let path = self.config_path.clone();
        let mut new = GatewayConfig::load(&path)?;
        if let Some(s) = &self.shared {
            new = s.apply_to(&new)?;
        }
        if let Some(m) = &self.membership {
            if new.client_pool != m.view.pool {
                bail!(
                    "`client_pool` changed ({} -> {}): in an active-active cluster it takes a restart of every node; nothing was applied",
                    m.view.pool,
                    new.client_pool
                );
            }
            // This node's block of `client_pool`, as at start.
            new.client_pool = m.view.block;
        }
        self.apply(new).await
    }

    /// Applies `new` (checked against what needs a restart): connections, routes, pools.
    async fn apply(&mut self, new: GatewayConfig) -> Result<Reloaded> {
        let path = self.config_path.clone();
        for ((key, old), (_, now)) in restart_only(&self.cfg).into_iter().zip(restart_only(&new)) {
            if old != now {
                bail!(
                    "`{key}` changed ({old} -> {now}): it takes a restart of gatehoused; nothing was applied"
                );
            }
        }
        let conns = new
            .connections(&self.config_dir)
            .with_context(|| format!("invalid config {}", path.display()))?;
        let changes = changes(&self.cfg, &new);
        let now = Instant::now();
        let mut cfgs = Vec::with_capacity(self.inboxes.len());
        for _ in 0..self.inboxes.len() {
            cfgs.push(core_config::build(
                &new,
                &self.config_dir,
                &self.pki,
                &conns,
                now,
            )?);
        }
        // Own interfaces (docs/bgp.md) are made at start only.
        let old_conns = self.conns.clone();
        let ifaces = |list: &[crate::config::Connection]| {
            let mut v: Vec<(String, crate::config::ConnInterface)> = list
                .iter()
                .filter_map(|c| Some((c.name.clone(), c.interface.clone()?)))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        if ifaces(&old_conns) != ifaces(&conns) {
            bail!(
                "a connection's `interface`, `interface_address`, `bgp_peer` or `bgp_peer_asn` changed (or a connection with an interface came or went): that takes a restart of gatehoused; nothing was applied"
            );
        }
        // Routes into TUN for the sites' prefixes: new ones now, old ones once unused.
        let old_prefixes: Vec<ipnet::Ipv4Net> = old_conns
            .iter()
            .filter(|c| c.interface.is_none())
            .flat_map(|c| c.remote_address_space.clone())
            .chain(super::wireguard::site_prefixes(&self.cfg))
            .collect();
        let new_prefixes: Vec<ipnet::Ipv4Net> = conns
            .iter()
            .filter(|c| c.interface.is_none())
            .flat_map(|c| c.remote_address_space.clone())
            .chain(super::wireguard::site_prefixes(&new))
            .collect();
        crate::tun::add_routes(&self.cfg.tun_name, &new_prefixes)?;
        let old_v6: Vec<ipnet::Ipv6Net> = super::site_prefixes_v6(&old_conns)
            .into_iter()
            .chain(super::wireguard::site_prefixes_v6(&self.cfg))
            .collect();
        let new_v6: Vec<ipnet::Ipv6Net> = super::site_prefixes_v6(&conns)
            .into_iter()
            .chain(super::wireguard::site_prefixes_v6(&new))
            .collect();
        crate::tun::add_routes(&self.cfg.tun_name, &new_v6)?;
        // The own interfaces' static prefixes (the interfaces themselves stay, checked above).
        let old_own = super::own_interface_routes(&old_conns);
        let new_own = super::own_interface_routes(&conns);
        for (name, nets) in &new_own {
            crate::tun::add_routes(name, nets)?;
        }
        let mut waits = Vec::new();
        for (tx, c) in self.inboxes.iter().zip(cfgs) {
            let (reply, rx) = oneshot::channel();
            tx.send(Msg::Reconfigure(Box::new(c), reply))
                .await
                .map_err(|_| anyhow::anyhow!("a worker stopped"))?;
            waits.push(rx);
        }
        let mut ended = 0;
        let mut failed = None;
        for rx in waits {
            match rx.await {
                Ok(Ok(n)) => ended += n,
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some("a worker stopped".to_owned()),
            }
        }
        if let Some(e) = failed {
            bail!("{e}");
        }
        let gone: Vec<ipnet::Ipv4Net> = old_prefixes
            .into_iter()
            .filter(|p| !new_prefixes.contains(p))
            .collect();
        crate::tun::del_routes(&self.cfg.tun_name, &gone);
        let gone_v6: Vec<ipnet::Ipv6Net> =
            old_v6.into_iter().filter(|p| !new_v6.contains(p)).collect();
        crate::tun::del_routes(&self.cfg.tun_name, &gone_v6);
        for (name, nets) in old_own {
            let kept = new_own.iter().find(|(n, _)| *n == name).map(|(_, k)| k);
            let gone: Vec<ipnet::IpNet> = nets
                .into_iter()
                .filter(|p| !kept.is_some_and(|k| k.contains(p)))
                .collect();
            crate::tun::del_routes(&name, &gone);
        }
        if new.client_pool != self.cfg.client_pool {
            crate::tun::readdress(&self.cfg.tun_name, self.cfg.client_pool, new.client_pool)?;
        }
        if new.client_pool_v6 != self.cfg.client_pool_v6 {
            crate::tun::set_ipv6(
                &self.cfg.tun_name,
                self.cfg.client_pool_v6()?,
                new.client_pool_v6()?,
            )?;
        }
        {
            let mut f = self.facts.lock().unwrap_or_else(|e| e.into_inner());
            f.listeners = super::listeners(&new, self.wg_on);
            f.pool = new.client_pool;
            f.sites = conns
                .iter()
                .map(|c| (c.name.clone(), c.remote_address_space.clone()))
                .chain(
                    new.wireguard_connections()?
                        .into_iter()
                        .map(|c| (c.name, c.remote_address_space)),
                )
                .collect();
        }
        self.ovpn = match &self.ovpn_of(&new) {
            Some(o) => o.clone(),
            None => self.ovpn.clone(),
        };
        self.cfg = new;
        self.reresolver.loaded(&conns, now);
        self.conns = conns;
        self.send_wireguard("configuration reloaded").await;
        Ok(Reloaded {
            changes,
            tunnels_ended: ended,
        })
    }

    /// The OpenVPN configuration `cfg` gives (for later CRL reloads), if it builds.
    fn ovpn_of(
        &self,
        cfg: &GatewayConfig,
    ) -> Option<Arc<gatehouse_engine::openvpn::server::ServerConfig>> {
        let mut o = crate::tls::openvpn_server_config(&self.pki, cfg).ok()?;
        Arc::make_mut(&mut o).wrap = super::wrap::load(cfg, &self.config_dir, true).ok()?;
        Some(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> GatewayConfig {
        toml::from_str(&format!("public_addr = \"vpn.example.com\"\n{extra}")).unwrap()
    }

    #[test]
    fn changes_name_what_a_reload_applies() {
        let old = cfg("dns = [\"10.0.0.53\"]\naddress_space = [\"10.1.0.0/16\"]\n");
        let new =
            cfg("dns = [\"10.0.0.54\"]\naddress_space = [\"10.1.0.0/16\"]\nfull_tunnel = true\n");
        let c = changes(&old, &new);
        assert_eq!(
            c,
            vec![
                "dns: [10.0.0.53] -> [10.0.0.54]".to_owned(),
                "full_tunnel: false -> true".to_owned()
            ]
        );
        assert!(changes(&old, &old).is_empty());
    }

    #[test]
    fn restart_only_keys_are_the_ones_bound_at_start() {
        let a = cfg("");
        let b = cfg(
            "tun_mtu = 1400\n[openvpn]\nudp_port = 1195\n[quic]\nenabled = true\nport = 8443\n",
        );
        let differ: Vec<&str> = restart_only(&a)
            .into_iter()
            .zip(restart_only(&b))
            .filter(|(x, y)| x.1 != y.1)
            .map(|(x, _)| x.0)
            .collect();
        assert_eq!(
            differ,
            vec!["tun_mtu", "openvpn.udp_port", "quic.enabled", "quic.port"]
        );
        // What a reload applies is not among them.
        let c = cfg("dns = [\"10.0.0.53\"]\nfull_tunnel = true\n");
        assert!(
            restart_only(&a)
                .into_iter()
                .zip(restart_only(&c))
                .all(|(x, y)| x.1 == y.1)
        );
    }
}
