//! The configuration every node of an active-active cluster applies on top of its own
//! gateway.toml (`/gatehouse/<cluster>/config`): the client-facing settings a reload can
//! change without touching sockets - the routes and DNS servers pushed to clients and
//! whether they send everything through the gateway. Set on any node
//! (`gatehoused ctl cluster-config`, `PUT /v1/cluster/config`); each node checks it against
//! its own file and applies it through the reload path.

use std::net::IpAddr;

use anyhow::{Context, Result, ensure};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::GatewayConfig;

/// The largest shared configuration read from etcd, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 << 10;

/// The shared settings; each replaces the key of the same name in gateway.toml.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SharedConfig {
    /// `address_space`: the networks behind the gateways, pushed to clients as routes.
    #[serde(default)]
    pub address_space: Vec<Ipv4Net>,
    /// `dns`: DNS servers pushed to clients.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// `full_tunnel`: send all client traffic through the gateway.
    #[serde(default)]
    pub full_tunnel: bool,
}

/// What `config` holds in etcd.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Published {
    /// The node it was set on.
    pub node: String,
    /// The settings.
    pub config: SharedConfig,
}

impl SharedConfig {
    /// `cfg` with these settings in place of its own, checked as a whole.
    pub fn apply_to(&self, cfg: &GatewayConfig) -> Result<GatewayConfig> {
        let mut new = cfg.clone();
        new.address_space = self.address_space.clone();
        new.dns = self.dns.clone();
        new.full_tunnel = self.full_tunnel;
        new.validate()
            .context("the cluster configuration does not fit this gateway")?;
        Ok(new)
    }
}

/// Parses a value of `config` from etcd (size-capped, unknown keys refused).
pub fn parse_published(value: &[u8]) -> Result<Published> {
    ensure!(
        value.len() <= MAX_CONFIG_BYTES,
        "{} bytes, more than the {MAX_CONFIG_BYTES} allowed",
        value.len()
    );
    serde_json::from_slice(value).context("not a cluster configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_settings_replace_the_files_and_are_checked_against_it() {
        let cfg: GatewayConfig =
            toml::from_str("public_addr = \"vpn.example.com\"\ndns = [\"10.0.0.53\"]\n").unwrap();
        let shared = SharedConfig {
            address_space: vec!["10.1.0.0/16".parse().unwrap()],
            dns: vec!["10.0.0.54".parse().unwrap()],
            full_tunnel: false,
        };
        let new = shared.apply_to(&cfg).unwrap();
        assert_eq!(new.dns, shared.dns);
        assert_eq!(new.address_space, shared.address_space);
        // A route over the client pool is refused, naming the key.
        let bad = SharedConfig {
            address_space: vec![cfg.client_pool],
            ..shared.clone()
        };
        let e = format!("{:#}", bad.apply_to(&cfg).unwrap_err());
        assert!(e.contains("`address_space`"), "{e}");
        let text = serde_json::to_vec(&Published {
            node: "a".into(),
            config: shared.clone(),
        })
        .unwrap();
        assert_eq!(parse_published(&text).unwrap().config, shared);
        assert!(parse_published(b"{\"node\":\"a\",\"config\":{\"tun_name\":\"x\"}}").is_err());
        assert!(parse_published(&vec![b' '; MAX_CONFIG_BYTES + 1]).is_err());
    }
}
