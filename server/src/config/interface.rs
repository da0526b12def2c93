//! A route-based connection's own interface and BGP peering (`interface`,
//! `interface_address`, `bgp_peer`, `bgp_peer_asn` in a `[[connection]]` table): the
//! connection gets its own TUN device, so a routing daemon (FRR) can peer over it and
//! install the site's prefixes as kernel routes through it (docs/bgp.md).

use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use ipnet::Ipv4Net;

use super::GatewayConfig;
use super::connection::{ConnectionConfig, Keys, overlaps};

/// Longest Linux interface name (IFNAMSIZ less the NUL).
const MAX_IFNAME: usize = 15;

/// A connection's own interface, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInterface {
    /// The TUN device's name, e.g. `gh-site1`.
    pub name: String,
    /// Our address on it and the link prefix, e.g. 169.254.31.1/30.
    pub address: Ipv4Net,
    /// The peer's BGP speaker on the link (inside the prefix), if it speaks BGP.
    pub bgp_peer: Option<Ipv4Addr>,
    /// The peer's autonomous system number (with `bgp_peer`).
    pub bgp_peer_asn: Option<u32>,
}

impl ConnectionConfig {
    /// Checks `interface` and the keys that go with it.
    pub(super) fn interface(&self, k: &Keys, gw: &GatewayConfig) -> Result<Option<ConnInterface>> {
        let Some(name) = &self.interface else {
            for (key, set) in [
                ("interface_address", self.interface_address.is_some()),
                ("bgp_peer", self.bgp_peer.is_some()),
                ("bgp_peer_asn", self.bgp_peer_asn.is_some()),
            ] {
                if set {
                    bail!(
                        "{} needs `interface`: give the connection its own interface, e.g. `interface = \"gh-{}\"`, or remove the key",
                        k.key(key),
                        self.name.chars().take(12).collect::<String>()
                    );
                }
            }
            return Ok(None);
        };
        let key = k.key("interface");
        if name.is_empty()
            || name.len() > MAX_IFNAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            bail!(
                "{key} = {name:?} is not a valid interface name: use 1-{MAX_IFNAME} letters, digits, '-', '_' or '.'"
            );
        }
        if *name == gw.tun_name {
            bail!(
                "{key} = {name:?} is the gateway's own TUN (`tun_name`): give the connection an interface of its own"
            );
        }
        if self.policy_based {
            bail!(
                "{key} needs a route-based connection: remove `policy_based = true` (the interface carries whatever the kernel routes into it)"
            );
        }
        let akey = k.key("interface_address");
        let Some(text) = &self.interface_address else {
            bail!(
                "{akey} is missing: `interface` needs our address on the link with its prefix, e.g. \"169.254.31.1/30\""
            );
        };
        let address: Ipv4Net = text.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "{akey} = {text:?} is not an IPv4 address with a prefix length: write e.g. \"169.254.31.1/30\""
            )
        })?;
        if address.prefix_len() > 30 || address.addr() == address.network() {
            bail!(
                "{akey} = {address} must be a host address in a link prefix of /30 or wider: write e.g. \"169.254.31.1/30\""
            );
        }
        if address.prefix_len() < 31 && address.addr() == address.broadcast() {
            bail!("{akey} = {address} is the link's broadcast address: pick a host address");
        }
        for (what, net) in gw
            .address_space
            .iter()
            .map(|n| ("address_space", n))
            .chain(std::iter::once(("client_pool", &gw.client_pool)))
        {
            if overlaps(net, &address.trunc()) {
                bail!(
                    "{akey} = {address} overlaps `{what}` {net}: use a link prefix of its own (169.254.x.y/30 is usual)"
                );
            }
        }
        let bgp_peer = match &self.bgp_peer {
            None => None,
            Some(text) => {
                let pkey = k.key("bgp_peer");
                let peer: Ipv4Addr = text.trim().parse().map_err(|_| {
                    anyhow::anyhow!(
                        "{pkey} = {text:?} is not an IPv4 address: write e.g. \"169.254.31.2\""
                    )
                })?;
                if !address.contains(&peer)
                    || peer == address.addr()
                    || peer == address.network()
                    || peer == address.broadcast()
                {
                    bail!(
                        "{pkey} = {peer} must be another host address in `interface_address` {} (the site's end of the link)",
                        address.trunc()
                    );
                }
                Some(peer)
            }
        };
        let bgp_peer_asn = match (bgp_peer, self.bgp_peer_asn) {
            (Some(_), None) => bail!(
                "{} is missing: `bgp_peer` needs the site's autonomous system number, e.g. 65020",
                k.key("bgp_peer_asn")
            ),
            (None, Some(_)) => bail!(
                "{} needs `bgp_peer`: give the site's BGP address on the link",
                k.key("bgp_peer_asn")
            ),
            (_, Some(0)) => bail!(
                "{} = 0 is not an AS number: use 1-4294967295 (64512-65534 and 4200000000-4294967294 are private)",
                k.key("bgp_peer_asn")
            ),
            (_, asn) => asn,
        };
        Ok(Some(ConnInterface {
            name: name.clone(),
            address,
            bgp_peer,
            bgp_peer_asn,
        }))
    }
}

/// Refuses two connections with the same interface name or overlapping link prefixes.
pub(super) fn check_distinct(
    k: &Keys,
    mine: &ConnInterface,
    others: &[(String, &ConnInterface)],
) -> Result<()> {
    for (other, o) in others {
        if o.name == mine.name {
            bail!(
                "{} = {:?} is also the interface of connection {other:?}: give every connection its own",
                k.key("interface"),
                mine.name
            );
        }
        if overlaps(&o.address.trunc(), &mine.address.trunc()) {
            bail!(
                "{} = {} overlaps the link of connection {other:?} ({}): give every link its own prefix",
                k.key("interface_address"),
                mine.address,
                o.address
            );
        }
    }
    Ok(())
}
