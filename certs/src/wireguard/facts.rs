//! What a WireGuard export needs of `gateway.toml`, read as plain TOML (the PKI tool does
//! not depend on the gateway): the pools, the networks a client reaches and the port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{Context, Result};
use gatehouse_engine::pool6::Ipv6Pool;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::DEFAULT_PORT;

/// Default client pool when `gateway.toml` sets none.
const DEFAULT_POOL: &str = "172.16.201.0/24";

/// The parts of `gateway.toml` an export reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayFacts {
    /// `client_pool`.
    pub pool: Ipv4Net,
    /// `client_pool_v6` (None: clients get IPv4 only).
    pub pool_v6: Option<Ipv6Net>,
    /// `address_space`.
    pub address_space: Vec<Ipv4Net>,
    /// `address_space_v6`.
    pub address_space_v6: Vec<Ipv6Net>,
    /// Every `[[connection]]`'s `remote_address_space` (clients reach the sites too).
    pub site_prefixes: Vec<IpNet>,
    /// `full_tunnel`.
    pub full_tunnel: bool,
    /// `dns`.
    pub dns: Vec<IpAddr>,
    /// `[wireguard] port`.
    pub port: u16,
}

impl GatewayFacts {
    /// The IPv6 address a client at `v4` has, when the gateway has an IPv6 pool (it follows
    /// the IPv4 address, as for every client of the gateway).
    pub fn ipv6_of(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        let pool = Ipv6Pool::new(self.pool, self.pool_v6?).ok()?;
        Some(pool.address_of(v4))
    }

    /// A client's `AllowedIPs`: everything with `full_tunnel` (IPv6 too, so an IPv4-only
    /// tunnel does not leak IPv6 around it: the gateway drops what has no address of ours);
    /// otherwise the networks behind the gateway, the pool and the sites' prefixes, the
    /// IPv6 ones only when the client has an IPv6 address.
    pub fn allowed_ips(&self) -> Vec<IpNet> {
        if self.full_tunnel {
            return vec![IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())];
        }
        let v6 = self.pool_v6.is_some();
        let mut out: Vec<IpNet> = Vec::new();
        let candidates = self
            .address_space
            .iter()
            .map(|n| IpNet::V4(*n))
            .chain(std::iter::once(IpNet::V4(self.pool)))
            .chain(self.site_prefixes.iter().copied())
            .chain(self.address_space_v6.iter().map(|n| IpNet::V6(*n)))
            .chain(self.pool_v6.map(IpNet::V6));
        for n in candidates {
            if (v6 || matches!(n, IpNet::V4(_))) && !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }
}

/// Reads `data_dir/gateway.toml` (defaults when it is missing). Entries that do not parse
/// are left out: `gatehoused check` names them.
pub fn gateway_facts(data_dir: &Path) -> Result<GatewayFacts> {
    let path = data_dir.join("gateway.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let v: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let pool = v
        .get("client_pool")
        .and_then(|x| x.as_str())
        .unwrap_or(DEFAULT_POOL)
        .parse::<Ipv4Net>()
        .with_context(|| format!("{}: `client_pool`", path.display()))?
        .trunc();
    let pool_v6 = match v.get("client_pool_v6").and_then(|x| x.as_str()) {
        None => None,
        Some(t) => Some(
            t.trim()
                .parse::<Ipv6Net>()
                .with_context(|| format!("{}: `client_pool_v6`", path.display()))?
                .trunc(),
        ),
    };
    let port = v
        .get("wireguard")
        .and_then(|w| w.get("port"))
        .and_then(|p| p.as_integer())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(DEFAULT_PORT);
    let site_prefixes = v
        .get("connection")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .flat_map(|c| parsed(c.get("remote_address_space")))
        .collect();
    Ok(GatewayFacts {
        pool,
        pool_v6,
        address_space: parsed(v.get("address_space")),
        address_space_v6: parsed(v.get("address_space_v6")),
        site_prefixes,
        full_tunnel: v
            .get("full_tunnel")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
        dns: parsed(v.get("dns")),
        port,
    })
}

/// The entries of a string array that parse as `T`.
fn parsed<T: std::str::FromStr>(value: Option<&toml::Value>) -> Vec<T> {
    value
        .and_then(|x| x.as_array())
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str()?.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(toml: &str) -> GatewayFacts {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gateway.toml"), toml).unwrap();
        gateway_facts(dir.path()).unwrap()
    }

    fn shown(f: &GatewayFacts) -> String {
        let v: Vec<String> = f.allowed_ips().iter().map(|n| n.to_string()).collect();
        v.join(", ")
    }

    #[test]
    fn a_dual_stack_gateway_gives_both_families() {
        let f = facts(
            "client_pool = \"10.9.0.0/24\"\nclient_pool_v6 = \"fd00:9::/64\"\naddress_space = [\"10.1.0.0/24\"]\naddress_space_v6 = [\"fd00:1::/64\"]\n[[connection]]\nname = \"b\"\nremote_address_space = [\"192.168.10.0/24\", \"fd00:10::/64\"]\n",
        );
        assert_eq!(
            f.ipv6_of(Ipv4Addr::new(10, 9, 0, 200)),
            Some("fd00:9::c8".parse().unwrap())
        );
        assert_eq!(
            shown(&f),
            "10.1.0.0/24, 10.9.0.0/24, 192.168.10.0/24, fd00:10::/64, fd00:1::/64, fd00:9::/64"
        );
    }

    #[test]
    fn without_an_ipv6_pool_no_ipv6_network_is_listed() {
        let f = facts(
            "client_pool = \"10.9.0.0/24\"\naddress_space = [\"10.1.0.0/24\"]\naddress_space_v6 = [\"fd00:1::/64\"]\n[[connection]]\nname = \"b\"\nremote_address_space = [\"192.168.10.0/24\", \"fd00:10::/64\"]\n",
        );
        assert_eq!(f.ipv6_of(Ipv4Addr::new(10, 9, 0, 200)), None);
        assert_eq!(shown(&f), "10.1.0.0/24, 10.9.0.0/24, 192.168.10.0/24");
    }

    #[test]
    fn a_full_tunnel_takes_everything_ipv6_too() {
        let f = facts("full_tunnel = true\naddress_space = [\"10.1.0.0/24\"]\n");
        assert_eq!(shown(&f), "0.0.0.0/0, ::/0");
    }
}
